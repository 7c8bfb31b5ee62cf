"""What stepping on the discontinuities of a field buys (``integrate.solve(tstops=...)``).

y' = -2 y + X'(t), X the piecewise-linear interpolant of six irregular knots (a kinked forcing,
as a linear-interpolation CDE control has), y(0) = 0.3, on [0, 1]; each method at rtol 1e-7,
atol 1e-9 with and without the knots as stops, against DOP853 with the stops at rtol 1e-13.
Prints the error at t = 1, the evaluations and the rejected steps.

    OMP_NUM_THREADS=1 python benchmarks/tstops.py
"""
from __future__ import annotations

import numpy as np

from odeverify.integrate import solve

KNOTS = np.array([0.0, 0.13, 0.4, 0.41, 0.77, 1.0])
VALUES = np.array([0.0, 1.0, -2.0, 0.5, 3.0, 1.0])
SLOPES = np.diff(VALUES) / np.diff(KNOTS)
METHODS = ("dopri5", "tsit5", "bosh3", "kvaerno5", "radau_iia5", "bdf")


def field(t, y):
    i = np.clip(np.searchsorted(KNOTS, np.asarray(t), side="right") - 1, 0, SLOPES.size - 1)
    return -2 * y + np.asarray(SLOPES[i])


def main() -> None:
    y0 = np.array([0.3])
    ref = solve(field, y0, (0.0, 1.0), method="dop853", rtol=1e-13, atol=1e-14, tstops=KNOTS)
    print(f"{'method':<11} {'stops':<6} {'error':>9} {'nfev':>6} {'rejected':>8}")
    for m in METHODS:
        for stops in (None, KNOTS):
            s = solve(field, y0, (0.0, 1.0), method=m, rtol=1e-7, atol=1e-9, tstops=stops)
            err = abs(float(s.ys[-1, 0] - ref.ys[-1, 0]))
            print(f"{m:<11} {'yes' if stops is not None else 'no':<6} {err:9.2e} {s.stats.nfev:6d} {s.stats.rejected:8d}")


if __name__ == "__main__":
    main()
