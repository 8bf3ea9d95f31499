#!/usr/bin/env bash
# Phones without phones: cross-build the runtime for arm64, compile the tiny
# model for cpu-arm64 (cortex-a76), train under qemu-user, and require the
# same losses as the x86-64 build of the same step, then the same eval loss
# and the same greedy generation with the trained adapter.
# Usage: arm64_qemu.sh SRC_DIR BITLOOM BITLOOM_RUN WORKDIR
set -euo pipefail
src=$1 bitloom=$2 run_x86=$3 work=$4
rm -rf "$work/data" && mkdir -p "$work/data"
cmake -G Ninja -S "$src" -B "$work/arm64" \
  -DCMAKE_TOOLCHAIN_FILE="$src/cmake/aarch64-linux-gnu.cmake" \
  -DBITLOOM_ENABLE_COMPILER=OFF -DBITLOOM_ENABLE_TESTS=OFF \
  -DCMAKE_BUILD_TYPE=Release > "$work/data/configure.log"
ninja -C "$work/arm64" bitloom-run > "$work/data/build.log"
run_arm="$work/arm64/tools/bitloom-run/bitloom-run"
file -L "$run_arm" | grep -q "ARM aarch64"

d=$work/data
"$bitloom" make-model --preset tiny --out "$d/tiny" > /dev/null
common=(--seq-len 32 --batch 2 --lora-rank 4 --lora-alpha 8 --lora-targets all)
"$bitloom" compile "$d/tiny" --target cpu-arm64 --cpu cortex-a76 "${common[@]}" -o "$d/arm.blm"
"$bitloom" compile "$d/tiny" --target cpu-x86_64 --cpu generic "${common[@]}" -o "$d/x86.blm"
train=(--data "$src/data/tiny-qa.txt" --steps 8 --lr 1e-2 --seed 3)
qemu-aarch64 -L /usr/aarch64-linux-gnu "$run_arm" train "$d/arm.blm" "${train[@]}" --out "$d/arm-adapter"
"$run_x86" train "$d/x86.blm" "${train[@]}" --out "$d/x86-adapter"
# eval_step and generate_step too, with the trained adapter.
qemu-aarch64 -L /usr/aarch64-linux-gnu "$run_arm" eval "$d/arm.blm" --data "$src/data/tiny-qa.txt" \
  --adapter "$d/arm-adapter" --json > "$d/arm-eval.json"
"$run_x86" eval "$d/x86.blm" --data "$src/data/tiny-qa.txt" --adapter "$d/x86-adapter" --json > "$d/x86-eval.json"
prompt="Question: What color is the sun? Answer:"
qemu-aarch64 -L /usr/aarch64-linux-gnu "$run_arm" generate "$d/arm.blm" --adapter "$d/arm-adapter" \
  --prompt "$prompt" --max-new-tokens 8 --ids > "$d/arm-gen.txt" 2>/dev/null
"$run_x86" generate "$d/x86.blm" --adapter "$d/x86-adapter" --prompt "$prompt" \
  --max-new-tokens 8 --ids > "$d/x86-gen.txt" 2>/dev/null
cmp "$d/arm-gen.txt" "$d/x86-gen.txt"
/usr/bin/python3 - "$d" <<'PY'
import json, sys
d = sys.argv[1]
def losses(path):
    records = [json.loads(l) for l in open(path)]
    return [r["loss"] for r in records if r.get("type", "train") == "train"]
a = losses(f"{d}/arm-adapter/metrics.jsonl")
b = losses(f"{d}/x86-adapter/metrics.jsonl")
assert len(a) == len(b) == 8, (a, b)
err = max(abs(x - y) / abs(y) for x, y in zip(a, b))
print(f"arm64 (qemu) vs x86-64 losses: max relative difference {err:.3g}")
if err > 1e-5:
    sys.exit(f"losses differ: {a} vs {b}")
ea = json.load(open(f"{d}/arm-eval.json"))["loss"]
eb = json.load(open(f"{d}/x86-eval.json"))["loss"]
print(f"arm64 (qemu) vs x86-64 eval loss: {ea} vs {eb}")
sys.exit(0 if abs(ea - eb) <= 1e-5 * abs(eb) else "eval losses differ")
PY
