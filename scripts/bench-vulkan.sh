#!/usr/bin/env bash
# Vulkan training speed: the small and 2b4t presets (random weights, every
# 65536-value block repeated so the artifacts compress for shipping) compiled
# for a device profile at sequence 512, batch 1, LoRA rank 16 on all seven
# projections, then `bitloom-run bench --profile-kernels 5` on Vulkan device
# 0: median ms/step, training tokens/s, device memory by purpose, and the
# five most expensive op kinds and single dispatches with their share of
# the step's GPU time. Not a test: it prints tables.
# Usage: scripts/bench-vulkan.sh [PROFILE (default nvidia)] [PRESET...]
# (default: small 2b4t). With BENCH_COMPILE_ONLY=1 it stops after writing
# build/bench/<preset>-<profile>.blm.xz (to run the bench on another machine:
# `bitloom-run bench <artifact> --steps 10 --warmup 2 --profile-kernels 5`).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh bitloom bitloom-run
bitloom=build/tools/bitloom/bitloom
run=build/tools/bitloom-run/bitloom-run
out=build/bench
profile="${1:-nvidia}"
shift || true
presets=("$@")
[[ ${#presets[@]} -gt 0 ]] || presets=(small 2b4t)
mkdir -p "$out"
for preset in "${presets[@]}"; do
  model="$out/$preset-repeat"
  [[ -d "$model" ]] ||
    $bitloom make-model --preset "$preset" --packed --repeat-blocks --out "$model" >&2
  artifact="$out/$preset-$profile.blm"
  $bitloom compile "$model" --target "vulkan-$profile" --seq-len 512 --batch 1 \
    --lora-rank 16 --lora-alpha 32 --lora-targets all -o "$artifact" >&2
  if [[ "${BENCH_COMPILE_ONLY:-0}" == 1 ]]; then
    xz -T0 -3 -f -k "$artifact"
    echo "wrote $artifact.xz"
    continue
  fi
  echo "== $preset, vulkan-$profile, sequence 512"
  $run bench "$artifact" --steps 10 --warmup 2 --profile-kernels 5
done
