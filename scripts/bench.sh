#!/usr/bin/env bash
# Training throughput and peak memory of the small preset (12 layers, hidden
# 768, ffn 2048, vocab 32000; LoRA rank 16 on all seven projections, batch 1)
# at sequence lengths 128 and 512: the compiled CPU artifact under
# `bitloom-run bench` with 1 and 2 threads, and the reference executor
# (`bitloom train --target reference`, 1 step, wall time including start-up).
# Not a test: it prints a table. Usage: scripts/bench.sh [--no-reference]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh bitloom bitloom-run
bitloom=build/tools/bitloom/bitloom
run=build/tools/bitloom-run/bitloom-run
out=build/bench
reference=1
[[ "${1:-}" == "--no-reference" ]] && reference=0
mkdir -p "$out"
[[ -d "$out/small" ]] || $bitloom make-model --preset small --out "$out/small" >/dev/null
results="$out/results.jsonl"
: > "$results"
for seq in 128 512; do
  blm="$out/small-$seq.blm"
  echo "compiling the small preset for seq $seq ..." >&2
  $bitloom compile "$out/small" --target cpu-x86_64 --cpu native \
    --seq-len "$seq" --batch 1 --lora-rank 16 --lora-targets all -o "$blm" >&2
  for threads in 1 2; do
    $run bench "$blm" --steps 5 --warmup 1 --threads "$threads" --json |
      sed "s/^{/{\"executor\":\"bitloom-run\",/" >> "$results"
  done
  if [[ $reference == 1 ]]; then
    echo "reference executor, seq $seq (slow) ..." >&2
    start=$(date +%s.%N)
    /usr/bin/time -f "%M" -o "$out/ref-$seq.rss" $bitloom train "$out/small" \
      --target reference --data data/tiny-qa.txt --seq-len "$seq" --batch 1 \
      --steps 1 --lora-rank 16 --lora-targets all --out "$out/ref-$seq" >/dev/null
    end=$(date +%s.%N)
    kb=$(tail -n 1 "$out/ref-$seq.rss")
    python3 -c "import json,sys; s=float(sys.argv[2])-float(sys.argv[1]); print(json.dumps({'executor':'reference','seq_len':$seq,'entry':'train_step','threads':1,'step_ms_median':s*1000,'tokens_per_s':$seq/s,'peak_rss_bytes':int(sys.argv[3])*1024,'planned_bytes':0}))" \
      "$start" "$end" "$kb" >> "$results"
  fi
done
python3 - "$results" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
print(f"{'executor':<12} {'seq':>5} {'threads':>7} {'ms/step':>10} {'tokens/s':>10} {'peak RSS MiB':>13} {'planned MiB':>12}")
for r in rows:
    planned = f"{r['planned_bytes']/2**20:12.1f}" if r.get('planned_bytes') else f"{'-':>12}"
    print(f"{r['executor']:<12} {r['seq_len']:>5} {r['threads']:>7} {r['step_ms_median']:>10.1f} "
          f"{r['tokens_per_s']:>10.1f} {r['peak_rss_bytes']/2**20:>13.1f} {planned}")
print("(reference: one step, wall time including model load and compile of the IR)")
PY
