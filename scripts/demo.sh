#!/usr/bin/env bash
# The main job on the embedded default: make the tiny BitNet model, import
# it into loom IR, fine-tune a LoRA adapter on the bundled dataset with the
# reference executor, and save it in PEFT format.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh bitloom
bitloom=build/tools/bitloom/bitloom
out=build/demo
rm -rf "$out" && mkdir -p "$out"

$bitloom make-model --preset tiny --out "$out/tiny"
$bitloom import "$out/tiny" --lora-rank 8 --lora-targets all \
  -o "$out/tiny.mlir" --summary
prompt="Question: What is the capital of France? Answer:"
echo "before training:"
$bitloom generate "$out/tiny" --prompt "$prompt" --max-new-tokens 12
$bitloom train "$out/tiny" --target reference --data data/tiny-qa.txt \
  --seq-len 64 --batch 4 --steps 100 --lr 1e-2 --lr-schedule cosine \
  --warmup 5 --lora-rank 8 --lora-alpha 16 --lora-targets all \
  --out "$out/adapter"
echo "after training (adapter reloaded from $out/adapter):"
$bitloom generate "$out/tiny" --adapter "$out/adapter" --prompt "$prompt" \
  --max-new-tokens 12
