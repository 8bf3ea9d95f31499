#!/usr/bin/env bash
# The main job on the embedded default: make the tiny BitNet model, compile
# its training step for this CPU into a .blm, fine-tune a LoRA adapter on the
# bundled dataset with the device runtime (bitloom-run), save it (PEFT and
# GGUF), reload it and use it: evaluation and generation before and after.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh bitloom bitloom-run
bitloom=build/tools/bitloom/bitloom
run=build/tools/bitloom-run/bitloom-run
out=build/demo
rm -rf "$out" && mkdir -p "$out"

echo "== make the tiny model and compile its training step for this CPU"
$bitloom make-model --preset tiny --out "$out/tiny"
$bitloom compile "$out/tiny" --target cpu-x86_64 --cpu native --seq-len 64 \
  --batch 4 --lora-rank 8 --lora-alpha 16 --lora-targets all -o "$out/tiny.blm"
$bitloom inspect "$out/tiny.blm" | grep -E '^(model|lora|compiled for):'
$bitloom inspect --memory "$out/tiny.blm" | head -n 6   # planned at compile time

prompt="Question: What is the capital of France? Answer:"
echo "== before training"
$run eval "$out/tiny.blm" --data data/tiny-qa.txt
$run generate "$out/tiny.blm" --prompt "$prompt" --max-new-tokens 12

echo "== fine-tune a LoRA adapter (40 epochs of data/tiny-qa.txt, 10% held out)"
$run train "$out/tiny.blm" --data data/tiny-qa.txt --epochs 40 --lr 1e-2 \
  --lr-schedule cosine --warmup 10 --val-split 0.1 --seed 1 --save-every 200 \
  --export-gguf --progress plain --out "$out/adapter" |
  awk '/^step/ && ++n % 16 != 1 {next} /^validation/ && ++v % 10 != 0 {next} {print}'

echo "== after training: the adapter reloaded from $out/adapter (PEFT) and adapter.gguf"
$run eval "$out/tiny.blm" --data data/tiny-qa.txt --adapter "$out/adapter"
$run generate "$out/tiny.blm" --adapter "$out/adapter" --prompt "$prompt" \
  --max-new-tokens 12
$run generate "$out/tiny.blm" --adapter "$out/adapter/adapter.gguf" \
  --prompt "$prompt" --max-new-tokens 12
echo "loss curve: $out/adapter/metrics.svg (every step in metrics.jsonl)"
