"""The fold step of every explicit Runge-Kutta method of ``odeverify.SOLVERS``: the fixed step h* at
which one step stops being an orientation-preserving diffeomorphism (det D Phi_h <= 0 somewhere on
the sample, or in 1-D the order of the sample broken), measured by
``odeverify.properties.flow_geometry.flow_fold_step`` (grid, then bisection to rel_tol 1e-6).

Run:  OMP_NUM_THREADS=1 python benchmarks/fold_steps.py [--json fold_steps.json]

Fields (all from ``odeverify.problems.flows``):

- ``linear_lambda-2``: ``f = -2 z`` on the line; theory h* = x*/2, x* the first negative real root
  of the stability polynomial R (inf when R > 0 on the whole real line);
- ``lin2``: ``A = [[-1, 0.5], [0, -3]]`` on the plane (eigenvalues -1, -3): theory h* = x*/3;
- ``cnf_mlp_tanh_1x16_d2_s1`` (``mlp_field(1, 16, 2, "tanh", seed=1, scale=2)``) on 33 points of
  [-2, 2], and ``cnf_mlp_tanh_2x16_d2_s0`` (``mlp_field(2, 16, 2, "tanh", seed=0, scale=2)``) on 32
  seeded points of [-2, 2]^2: one step from t0 = 0; theory only for Euler
  (h* = min_z 1/|mu(Df(0, z))| over the real negative eigenvalues mu).

Prints a Markdown table: x* per method, then per field the measured h* and, in parentheses, h* L
for the MLP fields (L = the largest |Df|_2 over the sample: the ResNet regime h L ~ 1), and the
verdict of the comparison with theory where there is one. ``docs/flow_geometry.md`` quotes it.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time

import numpy as np

from odeverify.problems.flows import linear_field, mlp_field
from odeverify.properties.flow_geometry import explicit_methods, flow_fold_step, fold_root


def fields() -> list:
    return [linear_field(np.array([[-2.0]]), name="linear_lambda-2"),
            linear_field(np.array([[-1.0, 0.5], [0.0, -3.0]]), name="lin2"),
            mlp_field(1, 16, 2, "tanh", seed=1, scale=2.0),
            mlp_field(2, 16, 2, "tanh", seed=0, scale=2.0)]


def _fmt(x: float, never: str = "none") -> str:
    return never if x == math.inf else f"{x:.6g}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", help="write the records here")
    args = ap.parse_args(argv)
    t = time.perf_counter()
    flds, methods = fields(), explicit_methods()
    records = {(f.name, m): flow_fold_step(f, m) for f in flds for m in methods}
    header = "| method | x* | " + " | ".join(f"`{f.name}`" for f in flds) + " |"
    print(header)
    print("|" + "---|" * (2 + len(flds)))
    failed = 0
    for m in methods:
        cells = [m, _fmt(fold_root(m), "∞")]
        for f in flds:
            r = records[(f.name, m)]
            cell = _fmt(r.measured)
            if "neural" in f.tags and math.isfinite(r.measured):
                cell += f" ({r.details['h_times_lipschitz']:.3g})"
            if r.expected is not None:
                cell += " ✓" if r.verdict == "pass" else f" ✗ (theory {_fmt(r.expected, '∞')})"
            failed += r.verdict != "pass"
            cells.append(cell)
        print("| " + " | ".join(cells) + " |")
    lips = {f.name: records[(f.name, methods[0])].details["lipschitz_sample"] for f in flds}
    print(f"\nL (largest |Df|_2 on the sample): " + ", ".join(f"{k} {v:.4g}" for k, v in lips.items()))
    print(f"none: no fold up to h L = 2048; ✓: equals theory to the bisection's rel_tol 1e-6 (or both none);"
          f" {failed} record(s) not passing;"
          f" {time.perf_counter() - t:.1f} s")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump([r.to_dict() for r in records.values()], fh, indent=1)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
