"""The CDE library records: torchcde and diffrax against odeverify on the same data.

Run:  OMP_NUM_THREADS=1 python benchmarks/cde_libraries.py [--backends torchcde,diffrax] [--quick]
          [--json out.json]

Each row is one record of ``odeverify.properties.cde_agreement.cde_library_records``: the
library's interpolant against odeverify's (values and dX/dt), its missing-value handling against
odeverify's fill rules, its solution against the closed form or the reference on the knots, its
knot rules (jump / step / none at rtol 1e-8), its fixed-grid order with the knots on the grid, and
its gradients along seeded directions against complex steps through the closed form or Richardson
differences. ``measured`` is the record's headline number (an error over its bound, an order, or
a relative difference), the message what was measured.
"""
from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")

from odeverify.properties.cde_agreement import cde_library_records  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backends", default="torchcde,diffrax")
    ap.add_argument("--quick", action="store_true", help="two problems, one gradient mode, no fixed-grid sweeps")
    ap.add_argument("--json", default=None, help="write the records here")
    args = ap.parse_args(argv)
    records = []
    for name in args.backends.split(","):
        start = time.perf_counter()
        recs = cde_library_records(name.strip(), quick=args.quick)
        for r in recs:
            m = "-" if r.measured is None else f"{r.measured:.3g}"
            print(f"{r.backend:9s} {r.property:24s} {r.method:26s} {r.problem:40s} {m:>9s} {r.verdict:10s}"
                  f" {r.message}")
        print(f"# {name}: {len(recs)} records in {time.perf_counter() - start:.0f} s wall")
        records += recs
    if args.json:
        with open(args.json, "w") as fh:
            json.dump([r.to_dict() for r in records], fh, indent=1)
    return 1 if any(r.verdict in ("fail", "error") for r in records) else 0


if __name__ == "__main__":
    raise SystemExit(main())
