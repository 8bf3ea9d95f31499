#!/usr/bin/env python3
"""Compares two bitloom-run training runs of the same data on two targets.

  compare_runs.py RUN_A RUN_B [--loss-rtol 1e-3] [--param-rtol 1e-3]

RUN_B is the reference (the denominator). Each RUN is an output directory of
`bitloom-run train`: its metrics.jsonl (every train and validation loss, in
order) and its PEFT adapter (adapter_model.safetensors). Losses are compared
elementwise (|a - b| / |b|), adapter tensors normwise (||a - b|| / ||b||). A
NaN or Inf anywhere fails. Prints the worst errors; exits 1 when over.
"""

import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_io as st  # noqa: E402


def losses(run):
    rows = [json.loads(line) for line in open(os.path.join(run, "metrics.jsonl"))]
    return [(r["type"], float(r["loss"])) for r in rows if "loss" in r]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("a")
    parser.add_argument("b")
    parser.add_argument("--loss-rtol", type=float, default=1e-3)
    parser.add_argument("--param-rtol", type=float, default=1e-3)
    args = parser.parse_args()

    failures = []
    la, lb = losses(args.a), losses(args.b)
    if [t for t, _ in la] != [t for t, _ in lb] or not la:
        failures.append("the runs logged different losses: %d vs %d" % (len(la), len(lb)))
    worst = 0.0
    for (_, a), (_, b) in zip(la, lb):
        if not (np.isfinite(a) and np.isfinite(b)):
            failures.append("a loss is not finite")
            continue
        worst = max(worst, abs(a - b) / max(abs(b), 1e-30))
    if worst > args.loss_rtol:
        failures.append("loss rel. error %.3g > %g" % (worst, args.loss_rtol))
    print("%d losses, worst relative error %.3g" % (len(la), worst))

    ta = st.load(os.path.join(args.a, "adapter_model.safetensors"))
    tb = st.load(os.path.join(args.b, "adapter_model.safetensors"))
    if sorted(ta) != sorted(tb):
        failures.append("the adapters hold different tensors")
    worst, name = 0.0, ""
    for key in sorted(set(ta) & set(tb)):
        a, b = ta[key].astype(np.float64), tb[key].astype(np.float64)
        if a.shape != b.shape or not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
            failures.append("%s: shape or non-finite values" % key)
            continue
        err = np.linalg.norm((a - b).ravel()) / max(np.linalg.norm(b.ravel()), 1e-30)
        if err > worst:
            worst, name = err, key
    if worst > args.param_rtol:
        failures.append("%s: rel. error %.3g > %g" % (name, worst, args.param_rtol))
    print("%d adapter tensors, worst relative error %.3g (%s)" % (len(ta), worst, name))
    for f in failures:
        print("FAIL: " + f)
    if failures:
        sys.exit(1)
    print("runs agree")


if __name__ == "__main__":
    main()
