"""Work and accuracy of the reference BDF (odeverify "bdf") against scipy's BDF on HIRES and ROBER.

Both solvers get the same problem, tolerances (rtol, atol = ``default_atol(problem, rtol)``:
rtol * min(1, min_i |y_ref_i|), see odeverify.properties.work_precision) and the analytic
Jacobian; the table gives the significant correct digits against the published reference
(odeverify.metrics.scd) and the work counters (nfev excludes Jacobian evaluations for both).

    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/stiff_bdf.py [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

import numpy as np

from odeverify import integrate
from odeverify.metrics import scd
from odeverify.problems import PROBLEMS
from odeverify.properties.work_precision import default_atol

PROBLEM_NAMES = ("hires", "rober")
RTOLS = (1e-6, 1e-8, 1e-10)


def measure(name: str, rtol: float) -> list[dict]:
    from scipy.integrate import solve_ivp

    p = PROBLEMS.get(name)
    f = p.vector_field(np, np.float64)
    jac = p.jacobian_field(np, np.float64)
    y0 = np.asarray(p.y0, dtype=np.float64)
    y_ref = np.asarray(p.references[0].y, dtype=np.float64)
    atol = default_atol(p, rtol)
    ours = integrate.solve(f, y0, p.t_span, method="bdf", rtol=rtol, atol=atol, jac=jac, max_steps=100_000)
    s = solve_ivp(lambda t, y: f(np.asarray(t), y), p.t_span, y0, method="BDF", rtol=rtol, atol=atol,
                  jac=lambda t, y: jac(np.asarray(t), y))
    return [
        dict(problem=name, solver="odeverify bdf", rtol=rtol, atol=atol, status=ours.status.value,
             scd=float(np.min(scd(np.asarray(ours.ys[-1]), y_ref))), nfev=ours.stats.nfev, njev=ours.stats.njev,
             nlu=ours.stats.nlu, steps=ours.stats.accepted, rejected=ours.stats.rejected),
        dict(problem=name, solver="scipy BDF", rtol=rtol, atol=atol, status="success" if s.success else s.message,
             scd=float(np.min(scd(s.y[:, -1], y_ref))), nfev=int(s.nfev), njev=int(s.njev), nlu=int(s.nlu),
             steps=len(s.t) - 1, rejected=None),
    ]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", help="also write the rows to this file (atomically)")
    args = ap.parse_args(argv)
    rows = [r for name in PROBLEM_NAMES for rtol in RTOLS for r in measure(name, rtol)]
    print(f"{'problem':7} {'solver':14} {'rtol':>7} {'atol':>9} {'scd':>6} {'nfev':>6} {'njev':>5} {'nlu':>5} {'steps':>6}")
    for r in rows:
        print(f"{r['problem']:7} {r['solver']:14} {r['rtol']:7.0e} {r['atol']:9.2e} {r['scd']:6.2f} {r['nfev']:6d}"
              f" {r['njev']:5d} {r['nlu']:5d} {r['steps']:6d}")
    if args.json:
        d = os.path.dirname(os.path.abspath(args.json))
        with tempfile.NamedTemporaryFile("w", dir=d, delete=False, suffix=".tmp") as fh:
            json.dump(rows, fh, indent=1)
        os.replace(fh.name, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
