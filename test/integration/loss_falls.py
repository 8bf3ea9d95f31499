"""LoRA training on the tiny preset with the reference executor: the loss on
a small repetitive text falls steadily over 100 steps.

Usage: loss_falls.py BITLOOM DATA WORKDIR
"""
import json
import os
import shutil
import subprocess
import sys


def main():
    bitloom, data, work = sys.argv[1:4]
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    model = os.path.join(work, "tiny")
    subprocess.run([bitloom, "make-model", "--preset", "tiny", "--out", model],
                   check=True)
    out = os.path.join(work, "adapter")
    subprocess.run([bitloom, "train", model, "--target", "reference",
                    "--data", data, "--seq-len", "64", "--batch", "4",
                    "--steps", "100", "--lr", "1e-2", "--lora-rank", "8",
                    "--lora-alpha", "16", "--out", out], check=True)
    losses = [json.loads(line)["loss"]
              for line in open(os.path.join(out, "metrics.jsonl"))]
    assert len(losses) == 100, len(losses)
    # Steadily: every block of 20 steps has a lower mean than the one before.
    blocks = [sum(losses[i:i + 20]) / 20 for i in range(0, 100, 20)]
    print("block means:", " ".join(f"{b:.4f}" for b in blocks))
    for a, b in zip(blocks, blocks[1:]):
        if not b < a:
            sys.exit(f"loss did not fall steadily: block means {blocks}")
    if not blocks[-1] < blocks[0] - 0.5:
        sys.exit(f"loss fell too little: {blocks[0]:.4f} -> {blocks[-1]:.4f}")
    for name in ("adapter_model.safetensors", "adapter_config.json"):
        if not os.path.exists(os.path.join(out, name)):
            sys.exit(f"missing {name} in {out}")
    print("ok")


if __name__ == "__main__":
    main()
