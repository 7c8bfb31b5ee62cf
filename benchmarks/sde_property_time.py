"""How long one strong-order (and weak-order) check of one SDE method on one problem takes.

Run:  OMP_NUM_THREADS=1 python benchmarks/sde_property_time.py [--backend reference]
          [--problems gbm_ito,kp_cubic,ou,noncommutative,neural_sde] [--methods euler,heun]
          [--repeats 3] [--json out.json]

For each (method, problem) the method's noise classes admit: the CPU time (``process_time``:
this process only, so another job on a shared machine does not inflate it) of
``sde_strong_order`` (400 paths, five step counts, the paired bootstrap) and of
``sde_weak_order`` (4000 paths), median of ``--repeats`` runs, the first run apart (it
builds the fine reference or the closed form on the path; later runs hit the cache for a
fine reference). Prints a table and the largest median; issue 10's target is a strong-order
check under 10 s on 2 cores.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

from odeverify import backends  # noqa: E402
from odeverify.problems.sde import SDE_PROBLEMS  # noqa: E402
from odeverify.properties.sde import sde_strong_order, sde_weak_order  # noqa: E402


def timed(fn, *args, **kwargs) -> tuple[float, object]:
    start = time.process_time()
    out = fn(*args, **kwargs)
    return time.process_time() - start, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", default="reference")
    ap.add_argument("--problems", default="gbm_ito,kp_cubic,ou,linear_commuting,noncommutative,neural_sde")
    ap.add_argument("--methods", default=None, help="comma-separated (default: every SDE method of the backend)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    b = backends.get(args.backend)
    caps = b.capabilities().sde_methods
    methods = args.methods.split(",") if args.methods else list(caps)
    rows = []
    for pname in args.problems.split(","):
        p0 = SDE_PROBLEMS.get(pname)
        for m in methods:
            info = caps[m]
            if not info.valid_for(p0.noise_class):
                continue
            p = p0 if p0.calculus == info.calculus or p0.noise_class == "additive" else p0.as_calculus(info.calculus)
            row = {"problem": pname, "method": m}
            for name, fn in (("strong", sde_strong_order), ("weak", sde_weak_order)):
                first, rec = timed(fn, p, m, backend=b.name)
                again = [timed(fn, p, m, backend=b.name)[0] for _ in range(max(args.repeats - 1, 1))]
                row[f"{name}_first_s"] = round(first, 3)
                row[f"{name}_median_s"] = round(statistics.median([first, *again]), 3)
                row[f"{name}_verdict"] = rec.verdict
            rows.append(row)
            print(f"{pname:18s} {m:16s} strong {row['strong_first_s']:6.2f} s first, {row['strong_median_s']:6.2f} s"
                  f" median ({row['strong_verdict']}); weak {row['weak_first_s']:6.2f} s first,"
                  f" {row['weak_median_s']:6.2f} s median ({row['weak_verdict']})", flush=True)
    worst = max(rows, key=lambda r: r["strong_first_s"])
    print(f"\nslowest strong-order check: {worst['strong_first_s']:.2f} s CPU ({worst['method']} on {worst['problem']},"
          f" first run); median of medians {statistics.median(r['strong_median_s'] for r in rows):.2f} s")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump({"backend": b.name, "rows": rows}, fh, indent=2)


if __name__ == "__main__":
    main()
