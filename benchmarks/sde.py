"""SDE solves in odeverify's reference, torchsde and diffrax: work and wall time per path.

Run:  OMP_NUM_THREADS=1 python benchmarks/sde.py [--paths 1,64,1024] [--steps 128] [--repeats 5]
          [--problem gbm_ito] [--backends reference,torchsde,diffrax] [--json sde.json] [--quick]

Every library solves the same problem (``--problem``; a Stratonovich method solves its
Stratonovich form, ``SDEProblem.as_calculus``) on the same Brownian paths (odeverify's
seeded tree, seed 0, which torchsde and diffrax are driven with), ``--steps`` fixed steps,
float64, one thread, output at t0 and t1. Methods, by step rule (odeverify's name):
euler (Euler-Maruyama), heun (stochastic Heun), euler_heun, reversible_heun; in each library
the method whose ``SDEMethod.reference`` is that rule (diffrax ``Euler``, ``Heun``,
``EulerHeun``, ``ReversibleHeun``).

For each (rule, paths, backend): NFE (drift evaluations) and NGEV (diffusion evaluations) from
``Solution.stats``; the median wall time of ``--repeats`` solves after one warm-up solve
(diffrax compiles in it: its compile time is printed apart) divided by the paths; the ratio
to the reference in the same run; and the largest difference of X(T) from the reference's
(the libraries run the same rule on the same path: round-off). Repeats are interleaved
between backends, so a change of the machine's load hits all of them alike.
``--quick``: paths 1 and 64, 3 repeats.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")

import numpy as np  # noqa: E402

from odeverify import backends  # noqa: E402
from odeverify.brownian import BrownianTree  # noqa: E402
from odeverify.problems.sde import SDE_PROBLEMS  # noqa: E402

RULES = ("euler", "heun", "euler_heun", "reversible_heun")


def method_for(backend: str, rule: str) -> str | None:
    """The backend's SDE method of step rule ``rule`` (its own name on the reference)."""
    for name, info in backends.get(backend).capabilities().sde_methods.items():
        if (info.reference or (name if backend.startswith("reference") else None)) == rule:
            return name
    return None


def write_json(path: str, data: object) -> None:
    """Atomically: a reader never sees a half-written file."""
    tmp = path + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(data, fh, indent=2, default=str)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--paths", default="1,64,1024")
    ap.add_argument("--steps", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--problem", default="gbm_ito")
    ap.add_argument("--backends", default="reference,torchsde,diffrax")
    ap.add_argument("--json", default=None)
    ap.add_argument("--quick", action="store_true", help="paths 1 and 64, 3 repeats")
    args = ap.parse_args(argv)
    if args.quick:
        args.paths, args.repeats = "1,64", 3
    try:
        paths = [int(p) for p in args.paths.split(",") if p.strip()]
    except ValueError:
        ap.error(f"--paths={args.paths!r}: expected comma-separated positive integers")
    if not paths or min(paths) < 1:
        ap.error(f"--paths={args.paths!r}: expected comma-separated positive integers")
    if args.steps < 1 or args.repeats < 1:
        ap.error(f"--steps={args.steps}, --repeats={args.repeats}: both must be >= 1")
    names = [b.strip() for b in args.backends.split(",") if b.strip()]
    for b in names:
        if b not in backends.names():
            ap.error(f"--backends: unknown backend {b!r}; expected some of {', '.join(backends.names())}")
    names = [b for b in names if backends.get(b).available() and backends.get(b).capabilities().sde_methods]
    if "torch" in sys.modules or "torchsde" in names:
        import torch

        torch.set_num_threads(1)
    base = SDE_PROBLEMS.get(args.problem)
    rows = []
    print(f"{args.problem}, {args.steps} steps, float64, median of {args.repeats} (wall per path, after a warm-up"
          " solve); ratios to the reference in this run")
    print("| rule | paths | backend | method | NFE | NGEV | time/path [us] | x reference | compile [s] |"
          " max|X(T) - ref| |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for rule in RULES:
        for m in paths:
            cases = []
            for b in names:
                meth = method_for(b, rule)
                if meth is None:
                    continue
                info = backends.get(b).capabilities().sde_methods[meth]
                p = base if base.calculus == info.calculus else base.as_calculus(info.calculus)
                bm = BrownianTree(*p.t_span, p.brownian_shape(m), seed=0)
                kw = dict(bm=bm, y0=p.y0_batch(m), n_steps=args.steps, t_eval=np.asarray(p.t_span))
                t = time.perf_counter()
                sol = backends.get(b).solve_sde(p, meth, **kw)  # warm-up (diffrax compiles)
                first = time.perf_counter() - t
                cases.append({"backend": b, "method": meth, "problem": p, "kw": kw, "sol": sol, "times": [],
                              "compile_s": float(sol.timing.get("compile_s") or 0.0), "first_s": first})
            for _ in range(args.repeats):  # interleaved between backends
                for c in cases:
                    t = time.perf_counter()
                    sol = backends.get(c["backend"]).solve_sde(c["problem"], c["method"], **c["kw"])
                    c["times"].append(time.perf_counter() - t)
                    c["sol"] = sol
            ref = next((c for c in cases if c["backend"] == "reference"), None)
            ref_t = statistics.median(ref["times"]) if ref else None
            ref_y = np.asarray(ref["sol"].ys, dtype=np.float64)[-1] if ref and ref["sol"].success else None
            for c in cases:
                sol = c["sol"]
                med = statistics.median(c["times"])
                y = np.asarray(sol.ys if not hasattr(sol.ys, "cpu") else sol.ys.cpu(), dtype=np.float64)[-1]
                diff = float(np.max(np.abs(y - ref_y))) if ref_y is not None and sol.success else None
                row = {"rule": rule, "paths": m, "steps": args.steps, "backend": c["backend"], "method": c["method"],
                       "status": sol.status.code, "nfev": sol.stats.nfev, "ngev": sol.stats.ngev,
                       "median_s": med, "per_path_us": 1e6 * med / m, "times_s": c["times"],
                       "ratio_to_reference": (med / ref_t) if ref_t else None, "compile_s": c["compile_s"],
                       "first_call_s": c["first_s"], "max_diff_to_reference": diff}
                rows.append(row)
                ratio = "-" if row["ratio_to_reference"] is None else f"{row['ratio_to_reference']:.2f}"
                print(f"| {rule} | {m} | {c['backend']} | {c['method']} | {sol.stats.nfev} | {sol.stats.ngev} |"
                      f" {row['per_path_us']:.1f} | {ratio} | {c['compile_s']:.2f} |"
                      f" {'-' if diff is None else f'{diff:.1e}'} |", flush=True)
    if args.json:
        write_json(args.json, {"problem": args.problem, "steps": args.steps, "repeats": args.repeats,
                               "load_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
                               "cpu_count": os.cpu_count(), "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
