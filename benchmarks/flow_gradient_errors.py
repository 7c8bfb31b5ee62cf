"""The error table of CNF log-likelihood gradients: backend x gradient mode x problem.

Run:  OMP_NUM_THREADS=1 python benchmarks/flow_gradient_errors.py [--backends reference,torchdiffeq,diffrax]
          [--quick] [--json out.json]

Each row is one record of ``odeverify.properties.flow_gradients.cnf_gradient_records`` (rtol
1e-6, atol 1e-9, dopri5 / diffrax Dopri5, the data batch of each CNF problem): the relative
errors of dNLL/dθ and dNLL/dx against the oracle (complex steps through the closed form,
the reference forward mode at rtol 1e-12, or for the Hutchinson trace the discrete mode of
the same estimator at rtol 1e-12), the bound ``100 (rtol + atol/|y|) + oracle error`` and the
verdict. ``reference`` runs the reference on PyTorch and on JAX. Full run, wall time on 2
shared cores with two runs overlapping: torchdiffeq 1.4 min, reference on PyTorch 5, diffrax 18
(it compiles each mode and shape), reference on JAX about 40.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")

from odeverify.properties.flow_gradients import cnf_gradient_records  # noqa: E402


def _fmt(v: object) -> str:
    return f"{v:.2e}" if isinstance(v, float) else "-"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backends", default="reference,torchdiffeq,diffrax")
    ap.add_argument("--quick", action="store_true", help="linear2 and mlp2 (two data points) only")
    ap.add_argument("--json", default=None, help="write the records here")
    args = ap.parse_args(argv)
    records = []
    print(f"{'backend':16s} {'mode':22s} {'problem':46s} {'dNLL/dθ':>9s} {'dNLL/dx':>9s} {'bound':>9s}"
          f" {'oracle':15s} verdict")
    for name in [b.strip() for b in args.backends.split(",") if b.strip()]:
        for r in cnf_gradient_records(name, quick=args.quick):
            records.append(r)
            d = r.details
            print(f"{r.backend:16s} {r.method.split('/', 1)[-1]:22s} {r.problem:46s}"
                  f" {_fmt(d.get('theta_rel_error')):>9s} {_fmt(d.get('x_rel_error')):>9s} {_fmt(r.expected):>9s}"
                  f" {str(d.get('oracle', '-')):15s} {r.verdict}" + (f"  ({r.message[:120]})" if r.message else ""),
                  flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump([r.to_dict() for r in records], fh, indent=1)
    return 1 if any(r.verdict in ("fail", "error") for r in records) else 0


if __name__ == "__main__":
    sys.exit(main())
