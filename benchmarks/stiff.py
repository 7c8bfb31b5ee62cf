"""Work-precision data of the stiff solvers on the Bari test-set problems.

Run:  OMP_NUM_THREADS=1 python benchmarks/stiff.py [--problems hires,rober] [--tolerances 1e-4,1e-7,1e-10]
                                                  [--methods scipy:Radau,diffrax:Kvaerno5] [--json out.json]

For each problem (HIRES, ROBER to t = 1e11, OREGO, Pollution, E5, VDPOL by default) and
each tolerance rtol (1e-4 ... 1e-10 by default), every method solves once per point with
``odeverify.properties.work_precision`` (atol = rtol * min(1, min_i |y_ref_i(t1)|),
``default_atol``; at most 50 000 steps; wall time the median of up to 3 solves while a
solve takes < 0.2 s, compile time excluded): scipy Radau, BDF, LSODA with the analytic
Jacobian (``jac=True``) and with scipy's finite differences (``jac=False``), diffrax
Kvaerno3/4/5 (forward-mode autodiff Jacobian) and the reference's adaptive implicit methods
(analytic Jacobian). Every failure is a row with its status. Prints a Markdown table:
scd (significant correct digits at t1, Bari convention), mescd, nfev, njev, nlu, steps,
wall time, status.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import warnings

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")

from odeverify import backends  # noqa: E402
from odeverify.backends.base import StiffnessWarning, is_implicit  # noqa: E402
from odeverify.problems import PROBLEMS  # noqa: E402
from odeverify.properties.work_precision import work_precision  # noqa: E402

PROBLEM_NAMES = ("hires", "rober", "orego", "pollution", "e5", "vdpol")
TOLERANCES = (1e-4, 1e-5, 1e-6, 1e-7, 1e-8, 1e-9, 1e-10)
#: (backend, method, options): scipy with and without the analytic Jacobian
METHODS: tuple[tuple[str, str, dict], ...] = (
    *[("scipy", m, {"jac": jac}) for m in ("Radau", "BDF", "LSODA") for jac in (True, False)],
    ("diffrax", "Kvaerno3", {}), ("diffrax", "Kvaerno4", {}), ("diffrax", "Kvaerno5", {}),
)


def reference_methods() -> list[tuple[str, str, dict]]:
    """The reference's adaptive implicit methods (they use the problem's analytic Jacobian)."""
    caps = backends.get("reference").capabilities()
    return [("reference", name, {}) for name, info in caps.methods.items()
            if info.adaptive and is_implicit(info)]


def all_methods() -> list[tuple[str, str, dict]]:
    return [*METHODS, *reference_methods()]


def label(backend: str, method: str, options: dict) -> str:
    jac = options.get("jac")
    suffix = "" if jac is None else (" +jac" if jac else " fd-jac")
    return f"{backend}:{method}{suffix}"


def fmt(v, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--problems", default=",".join(PROBLEM_NAMES))
    ap.add_argument("--tolerances", default=",".join(f"{t:g}" for t in TOLERANCES))
    ap.add_argument("--methods", default="", help="comma-separated backend:method (default: all)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--max-steps", type=int, default=50_000)
    ap.add_argument("--json", default="", help="write the records here (atomically)")
    args = ap.parse_args(argv)

    names = [p.strip() for p in args.problems.split(",") if p.strip()]
    tols = [float(t) for t in args.tolerances.split(",") if t.strip()]
    methods = all_methods()
    if args.methods:
        wanted = {m.strip() for m in args.methods.split(",") if m.strip()}
        methods = [m for m in methods if f"{m[0]}:{m[1]}" in wanted]
    print(f"# stiff work-precision ({platform.machine()}, python {sys.version.split()[0]},"
          f" {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})\n")
    print("| problem | method | rtol | status | scd | mescd | nfev | njev | nlu | steps | wall ms |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    records = []
    for pname in names:
        problem = PROBLEMS.get(pname)
        for backend, method, opts in methods:
            if not backends.get(backend).available():
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", StiffnessWarning)
                rec = work_precision(problem, method, backend=backend, tolerances=tols, repeats=args.repeats,
                                     max_steps=args.max_steps, **opts)
            records.append(rec.to_dict())
            for p in rec.details["points"]:
                steps = p["accepted"] + max(p["rejected"], 0)
                print(f"| {pname} | {label(backend, method, opts)} | {p['rtol']:.0e} | {p['status']} |"
                      f" {fmt(p['scd'], '.2f')} | {fmt(p['mescd'], '.2f')} | {p['nfev']} | {p['njev']} | {p['nlu']} |"
                      f" {steps} | {1e3 * p['wall_s']:.1f} |", flush=True)
    if args.json:
        tmp = args.json + ".tmp"
        with open(tmp, "w") as fh:
            json.dump(records, fh, indent=1, sort_keys=True)
        os.replace(tmp, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
