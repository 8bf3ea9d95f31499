#!/usr/bin/env bash
# Planned memory of a LoRA training step on the 2b4t preset (the shape of
# microsoft/bitnet-b1.58-2B-4T: 30 layers, hidden 2560, ffn 6912, vocab
# 128256, 20 heads / 5 KV heads; random weights) at sequence lengths 128, 512
# and 2048, LoRA rank 16 on all seven projections, batch 1, CPU target:
# weights, trainable state, transients (the arena), with no recompute and
# with every decoder layer recomputed (`bitloom compile --plan-only`, no code
# generation). Then the real thing at sequence 128: the artifact compiled
# (default budget) and one training step under `bitloom-run bench`, whose
# peak RSS is compared with the plan.
# Not a test: it prints a table. Usage: scripts/bench-memory.sh [MODEL_DIR]
# (default build/bench/2b4t, made with `bitloom make-model --preset 2b4t
# --packed`, ~1.2 GB on disk).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh bitloom bitloom-run
bitloom=build/tools/bitloom/bitloom
run=build/tools/bitloom-run/bitloom-run
out=build/bench
model="${1:-$out/2b4t}"
mkdir -p "$out"
[[ -d "$model" ]] || $bitloom make-model --preset 2b4t --packed --out "$model" >&2
lora=(--lora-rank 16 --lora-alpha 32 --lora-targets all)
plans="$out/2b4t-plans.txt"
: > "$plans"
for seq in 128 512 2048; do
  for layers in 0 -1; do
    echo "planning seq $seq, recompute layers $layers ..." >&2
    $bitloom compile "$model" --target cpu-x86_64 --seq-len "$seq" --batch 1 \
      "${lora[@]}" --plan-only --recompute-layers "$layers" |
      grep '^planned peak total' | sed "s/^/seq $seq: /" >> "$plans"
  done
done
blm="$out/2b4t-128.blm"
echo "compiling 2b4t for seq 128 (minutes) ..." >&2
$bitloom compile "$model" --target cpu-x86_64 --cpu native --seq-len 128 \
  --batch 1 "${lora[@]}" -o "$blm" >&2
$bitloom inspect --memory "$blm" > "$out/2b4t-128-memory.txt"
$run bench "$blm" --steps 2 --warmup 1 --json > "$out/2b4t-128-bench.jsonl"
python3 - "$plans" "$out/2b4t-128-memory.txt" "$out/2b4t-128-bench.jsonl" <<'PY'
import json, re, sys
GiB = 2**30
print("2b4t preset, LoRA rank 16 on q,k,v,o,gate,up,down, batch 1, CPU target (planned)")
print(f"{'seq':>5} {'recompute':>18} {'weights GiB':>12} {'state GiB':>10} {'transients GiB':>15} {'total GiB':>10}")
for line in open(sys.argv[1]):
    m = re.match(r"seq (\d+): planned peak total: (\d+) bytes .* with (\d+) of (\d+) layers recomputed: "
                 r"weights (\d+), trainable state (\d+), step inputs/outputs (\d+), arena (\d+)", line)
    seq, total, k, n, w, st, io, arena = m.groups()
    rec = "none" if k == "0" else f"{k} of {n} layers"
    print(f"{seq:>5} {rec:>18} {int(w)/GiB:>12.3f} {int(st)/GiB:>10.3f} "
          f"{(int(io)+int(arena))/GiB:>15.3f} {int(total)/GiB:>10.3f}")
memory = open(sys.argv[2]).read()
planned = int(re.search(r"peak total: (\d+) bytes", memory).group(1))
recompute = re.search(r"recompute: (\w+)", memory)
bench = [json.loads(l) for l in open(sys.argv[3]) if l.strip()]
train = next(b for b in bench if b["entry"] == "train_step")
rss = train["peak_rss_bytes"]
print()
print("seq 128, compiled with the default budget "
      f"(recompute: {recompute.group(1) if recompute else 'no'}), one real training step:")
print(f"  planned peak total {planned/GiB:.3f} GiB; measured peak RSS {rss/GiB:.3f} GiB "
      f"({(rss-planned)/planned*100:+.1f}% of the plan); "
      f"{train['step_ms_median']:.0f} ms/step, {train['tokens_per_s']:.1f} tokens/s, {train['threads']} threads")
PY
