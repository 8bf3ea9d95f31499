"""Greedy generation with the PyTorch reference and no KV cache: every new
token recomputes the whole sequence. bitloom's KV-cached @generate_step must
produce the same ids.

Usage: generate_reference.py MODEL_DIR --prompt-ids-file IDS.txt --max-new-tokens N
       [--adapter PEFT_DIR] [--eos ID]
Prints the generated ids, space-separated.
"""
import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bitnet_reference as ref  # noqa: E402


def main():
    p = argparse.ArgumentParser()
    p.add_argument("model_dir")
    p.add_argument("--prompt-ids-file", required=True,
                   help="ids as `bitloom tokenize` prints them (one line)")
    p.add_argument("--max-new-tokens", type=int, default=8)
    p.add_argument("--adapter")
    p.add_argument("--eos", type=int)
    args = p.parse_args()
    cfg, tensors = ref.load_model_dir(args.model_dir)
    model = ref.BitNetReference(cfg, tensors)
    lora = ref.LoRA.load_peft_dir(args.adapter, cfg) if args.adapter else None
    with open(args.prompt_ids_file) as f:
        ids = [int(t) for t in f.read().split()]
    out = []
    with torch.no_grad():
        for _ in range(args.max_new_tokens):
            logits = model.forward(torch.tensor([ids + out]), lora)
            nxt = int(torch.argmax(logits[0, -1]))
            out.append(nxt)
            if args.eos is not None and nxt == args.eos:
                break
    print(" ".join(str(t) for t in out))


if __name__ == "__main__":
    main()
