"""Compute the cached reference solutions of the problems without a closed form.

Run ``python -m odeverify.problems.make_references`` (``--only NAME`` to restrict,
``--check`` to compare against the data file without writing). Each target problem is
solved with scipy ``solve_ivp(method="DOP853", rtol=1e-13, atol=1e-15)``, integrating from
t0 to each output time separately (no dense output). A second solve at rtol = 1e-11,
atol = 1e-13 estimates the error: under tolerance proportionality the tight solve's error is
well below the difference of the two, which is stored (per output time) and turned into the
claimed number of correct significant digits. The file is written atomically (temporary
file, then ``os.replace``) with the scipy and NumPy versions and the date.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import sys
import tempfile
from typing import Any

import numpy as np

from ._reference_data import DATA_PATH, f0, fingerprint
from ._spec import Problem

METHOD = "DOP853"
RTOL, ATOL = 1e-13, 1e-15
CHECK_RTOL, CHECK_ATOL = 1e-11, 1e-13
#: never claim more digits than a DOP853 solve at rtol = 1e-13 can deliver
MAX_DIGITS = 13


def targets() -> list[Problem]:
    from . import classic, neural

    return list(classic.COMPUTED_TARGETS) + list(neural.COMPUTED_TARGETS)


def output_times(problem: Problem) -> list[float]:
    t0, t1 = problem.t_span
    return [t0 + 0.5 * (t1 - t0), t1]


def _solve(problem: Problem, t: float, rtol: float, atol: float, method: str = METHOD) -> np.ndarray:
    from scipy.integrate import solve_ivp
    import array_api_compat.numpy as xnp

    f = problem.vector_field(xnp, dtype=xnp.float64)

    def fun(tt, y):
        return np.asarray(f(np.asarray(tt, dtype=np.float64), y), dtype=np.float64)

    sol = solve_ivp(fun, (problem.t_span[0], t), np.asarray(problem.y0, dtype=np.float64),
                    method=method, rtol=rtol, atol=atol)
    if sol.status != 0:
        raise RuntimeError(f"{problem.name}: solve_ivp failed to reach t={t}: {sol.message}")
    return sol.y[:, -1]


def compute_entry(problem: Problem) -> dict[str, Any]:
    refs = []
    for t in output_times(problem):
        y = _solve(problem, t, RTOL, ATOL)
        y_check = _solve(problem, t, CHECK_RTOL, CHECK_ATOL)
        diff = float(np.max(np.abs(y - y_check)))
        scale = float(np.max(np.abs(y)))
        rel = max(diff / scale, 1e-16)
        refs.append({
            "t": float(t),
            "y": [float(v) for v in y],
            "max_abs_diff_to_check": diff,
            "digits": int(min(MAX_DIGITS, math.floor(-math.log10(rel)))),
        })
    return {
        "fingerprint": fingerprint(problem),
        "f0": [float(v) for v in f0(problem)],
        "method": METHOD,
        "rtol": RTOL,
        "atol": ATOL,
        "check_rtol": CHECK_RTOL,
        "check_atol": CHECK_ATOL,
        "references": refs,
    }


def write_atomically(data: dict[str, Any], path=DATA_PATH) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=1, sort_keys=True)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def main(argv: list[str] | None = None) -> int:
    import scipy

    parser = argparse.ArgumentParser(prog="python -m odeverify.problems.make_references",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", default=[], metavar="NAME",
                        help="recompute only this problem (repeatable); others are kept")
    parser.add_argument("--check", action="store_true",
                        help="recompute and compare with the data file; write nothing")
    args = parser.parse_args(argv)

    problems = targets()
    known = {p.name for p in problems}
    unknown = sorted(set(args.only) - known)
    if unknown:
        parser.error(f"--only {unknown}: not a reference target; choose from {sorted(known)}")
    if DATA_PATH.exists():
        with DATA_PATH.open(encoding="utf-8") as fh:
            old = json.load(fh)
    else:
        old = {"meta": {}, "problems": {}}
    entries = {k: v for k, v in old.get("problems", {}).items() if k in known}
    status = 0
    for p in problems:
        if args.only and p.name not in args.only:
            continue
        entry = compute_entry(p)
        digits = min(r["digits"] for r in entry["references"])
        print(f"{p.name:24s} n={p.n:3d} t1={p.t_span[1]:<10g} digits>={digits}", flush=True)
        if args.check:
            prev = entries.get(p.name)
            if prev is None or prev["fingerprint"] != entry["fingerprint"]:
                print(f"  {p.name}: missing or stale in {DATA_PATH}", file=sys.stderr)
                status = 1
                continue
            for a, b in zip(prev["references"], entry["references"]):
                tol = 10.0 ** (-min(a["digits"], b["digits"])) * max(1.0, max(map(abs, a["y"])))
                if a["t"] != b["t"] or np.max(np.abs(np.subtract(a["y"], b["y"]))) > tol:
                    print(f"  {p.name}: differs from the stored value at t={b['t']}", file=sys.stderr)
                    status = 1
        entries[p.name] = entry
    if args.check:
        return status
    data = {
        "meta": {
            "generator": "odeverify.problems.make_references",
            "scipy": scipy.__version__,
            "numpy": np.__version__,
            "python": sys.version.split()[0],
            "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d"),
            "method": METHOD,
            "rtol": RTOL,
            "atol": ATOL,
            "check": f"second solve with rtol={CHECK_RTOL:g}, atol={CHECK_ATOL:g};"
            " digits = floor(-log10(max|difference| / max|y|))",
        },
        "problems": dict(sorted(entries.items())),
    }
    write_atomically(data)
    print(f"wrote {DATA_PATH}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
