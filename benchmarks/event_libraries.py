"""The event library records: scipy, torchdiffeq, diffrax and the reference on the same event problems.

Run:  OMP_NUM_THREADS=1 python benchmarks/event_libraries.py [--backends scipy,torchdiffeq,diffrax,reference]
          [--quick] [--parts location,grazing,gradient] [--json out.json]

Each row is one record of ``odeverify.properties.event_agreement.event_library_records``:
``event_location`` (the events of the bouncing ball and the plane crossings over a tolerance
sweep against the closed form; ``measured`` the event time's fitted rate against rtol, '-' where
every time is exact to round-off), ``event_grazing`` (the grazing cases on their grids;
``measured`` the events found) and ``event_time_gradient`` (dt*/dtheta and dL/dtheta of the first
event by each gradient mode; ``measured`` the worst relative error). The expected-failures list
is applied (a documented library behaviour reads 'deviation'). Exit status 1 if any record fails.
"""
from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")

from odeverify import expectations  # noqa: E402
from odeverify.properties.event_agreement import PARTS, event_library_records  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backends", default="scipy,torchdiffeq,diffrax,reference")
    ap.add_argument("--quick", action="store_true", help="one method, two problems, three tolerances")
    ap.add_argument("--parts", default=",".join(PARTS), help=f"some of {','.join(PARTS)}")
    ap.add_argument("--json", default=None, help="write the records here")
    args = ap.parse_args(argv)
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    records = []
    for name in args.backends.split(","):
        start, cpu = time.perf_counter(), time.process_time()
        recs = [expectations.apply(r) for r in event_library_records(name.strip(), quick=args.quick, parts=parts)]
        for r in recs:
            m = "-" if r.measured is None else f"{r.measured:.3g}"
            print(f"{r.backend:11s} {r.property:20s} {r.method:28s} {r.problem:28s} {m:>9s} {r.verdict:10s}"
                  f" {r.message}")
        print(f"# {name}: {len(recs)} records in {time.perf_counter() - start:.0f} s wall,"
              f" {time.process_time() - cpu:.0f} s CPU")
        records += recs
    if args.json:
        with open(args.json, "w") as fh:
            json.dump([r.to_dict() for r in records], fh, indent=1)
    return 1 if any(r.verdict in ("fail", "error") for r in records) else 0


if __name__ == "__main__":
    raise SystemExit(main())
