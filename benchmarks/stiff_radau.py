"""Reference Radau IIA (order 5) against scipy's Radau on stiff Bari test-set problems.

Run:  OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/stiff_radau.py [--rtol 1e-10] [--json out.json]

Both solvers get the problem's analytic Jacobian (scipy's nfev leaves out finite-difference
Jacobian evaluations, so this is the fair comparison) and the same rtol and atol:
atol = 1e-14 for HIRES, 1e-10 for OREGO (components of size 1 to 1e5), 1e-16 for ROBER (whose y1 ~ 2e-8 and y2 ~ 8e-14 at
t = 1e11 need an atol far below them for relative digits). Correct digits are
``odeverify.metrics.scd`` (-log10 of the largest relative error over the components) at the
end time against the Bari test set's published reference. Prints a Markdown table.
"""
from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
from scipy.integrate import solve_ivp  # noqa: E402

from odeverify import _xp, solve  # noqa: E402
from odeverify.metrics import scd  # noqa: E402
from odeverify.problems import PROBLEMS  # noqa: E402

#: problem -> atol used for both solvers (see the module docstring)
ATOL = {"hires": 1e-14, "rober": 1e-16, "orego": 1e-10}


def run(name: str, rtol: float) -> list[dict]:
    p = PROBLEMS.get(name)
    xp = _xp.get_namespace("numpy")
    f = p.vector_field(xp, xp.float64)
    J = p.jacobian_field(xp, xp.float64)
    ref = p.final_reference()
    atol = ATOL[name]
    rows = []
    t0 = time.perf_counter()
    s = solve_ivp(lambda t, y: f(np.asarray(t), y), p.t_span, np.asarray(p.y0), method="Radau", rtol=rtol,
                  atol=atol, jac=lambda t, y: J(np.asarray(t), y))
    rows.append(dict(problem=name, solver="scipy Radau", rtol=rtol, atol=atol, ok=bool(s.success),
                     scd=scd(s.y[:, -1], ref), nfev=int(s.nfev), njev=int(s.njev), nlu=int(s.nlu),
                     steps=len(s.t) - 1, wall_s=time.perf_counter() - t0))
    t0 = time.perf_counter()
    sol = solve(f, p.y0_array(xp), p.t_span, method="radau_iia5", rtol=rtol, atol=atol, jac=J, max_steps=10**6)
    st = sol.stats
    rows.append(dict(problem=name, solver="reference radau_iia5", rtol=rtol, atol=atol, ok=sol.success,
                     scd=scd(sol.ys[-1], ref), nfev=st.nfev, njev=st.njev, nlu=st.nlu, steps=st.accepted,
                     rejected=st.rejected, newton_iters=st.newton_iters, wall_s=time.perf_counter() - t0))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rtol", type=float, default=1e-10)
    ap.add_argument("--problems", default="hires,rober,orego")
    ap.add_argument("--json", help="write the rows to this file too")
    args = ap.parse_args()
    rows = [r for name in args.problems.split(",") for r in run(name, args.rtol)]
    print("| problem | solver | rtol | atol | digits (scd) | nfev | njev | nlu | accepted steps | wall s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['problem']} | {r['solver']} | {r['rtol']:.2g} | {r['atol']:.0e} | {r['scd']:.2f} | {r['nfev']} |"
              f" {r['njev']} | {r['nlu']} | {r['steps']} | {r['wall_s']:.2f} |")
    if args.json:
        tmp = args.json + ".tmp"
        with open(tmp, "w") as fh:
            json.dump(rows, fh, indent=1)
        os.replace(tmp, args.json)


if __name__ == "__main__":
    main()
