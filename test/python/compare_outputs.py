#!/usr/bin/env python3
"""Compares two training-step outputs (bitloom's and bitnet_reference.py's).

  compare_outputs.py A.safetensors B.safetensors
      [--loss-rtol 1e-5] [--grad-rtol 1e-4] [--param-rtol 1e-4]

B is the reference (the denominator). Both files must hold the same tensor
names with the same shapes:
  loss          [N]  elementwise  |a - b| / max(|b|, tiny)        <= loss-rtol
  *.grad             normwise     ||a - b|| / max(||b||, tiny)    <= grad-rtol
  anything else      normwise     ||a - b|| / max(||b||, tiny)    <= param-rtol
(norms are Frobenius, in float64). A NaN or Inf anywhere fails. Prints one row
per tensor and exits 1 naming every tensor over its tolerance, 0 otherwise.
"""

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_io as st  # noqa: E402

TINY = 1e-30


def kind_of(name):
    if name == "loss":
        return "loss"
    return "grad" if name.endswith(".grad") else "param"


def error(kind, a, b):
    a, b = a.astype(np.float64), b.astype(np.float64)
    if kind == "loss":
        return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), TINY))) if a.size else 0.0
    return float(np.linalg.norm((a - b).ravel()) / max(float(np.linalg.norm(b.ravel())), TINY))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("a", help="output under test (e.g. bitloom's)")
    ap.add_argument("b", help="reference output (e.g. bitnet_reference.py's)")
    ap.add_argument("--loss-rtol", type=float, default=1e-5)
    ap.add_argument("--grad-rtol", type=float, default=1e-4)
    ap.add_argument("--param-rtol", type=float, default=1e-4)
    args = ap.parse_args(argv)
    rtol = {"loss": args.loss_rtol, "grad": args.grad_rtol, "param": args.param_rtol}

    ta, tb = st.load(args.a), st.load(args.b)
    failures = []
    for name in sorted(set(ta) - set(tb)):
        failures.append(name)
        print(f"only in {args.a}: {name}")
    for name in sorted(set(tb) - set(ta)):
        failures.append(name)
        print(f"only in {args.b}: {name}")

    common = sorted(set(ta) & set(tb), key=lambda n: ({"loss": 0, "grad": 1, "param": 2}[kind_of(n)], n))
    width = max([len(n) for n in common] + [6])
    print(f"{'tensor':<{width}}  {'kind':<5}  {'shape':<12}  {'error':>10}  {'tol':>8}  ok")
    for name in common:
        a, b, kind = ta[name], tb[name], kind_of(name)
        if a.shape != b.shape:
            failures.append(name)
            print(f"{name:<{width}}  {kind:<5}  shapes differ: {a.shape} vs {b.shape}  FAIL")
            continue
        finite = bool(np.all(np.isfinite(a.astype(np.float64))) and np.all(np.isfinite(b.astype(np.float64))))
        err = error(kind, a, b) if finite else float("nan")
        ok = finite and err <= rtol[kind]
        if not ok:
            failures.append(name)
        shape = "x".join(str(d) for d in a.shape) or "scalar"
        extra = ""
        if kind == "loss":
            extra = "  a=[" + " ".join(f"{v:.7g}" for v in a.ravel()) + "] b=[" + \
                " ".join(f"{v:.7g}" for v in b.ravel()) + "]"
        print(f"{name:<{width}}  {kind:<5}  {shape:<12}  {err:>10.3e}  {rtol[kind]:>8.1e}  "
              f"{'ok' if ok else 'FAIL'}{extra}")

    if failures:
        print(f"FAILED: {len(failures)} tensor(s) over tolerance or mismatched: {', '.join(failures)}")
        return 1
    print(f"all {len(common)} tensors within tolerance")
    return 0


if __name__ == "__main__":
    sys.exit(main())
