"""A third-party backend in ~40 lines: a hand-written fixed-step Euler solver.

Make it visible to odeverify by declaring an entry point in your package's pyproject.toml:

    [project.entry-points."odeverify.backends"]
    tiny-euler = "tiny_euler_backend:TinyEuler"

then run ``odeverify check --backend tiny-euler``: the conformance properties (order,
dense output, agreement with the reference Euler tableau) run against it.
"""
from __future__ import annotations

import numpy as np

from odeverify.backends import Backend, Capabilities, MethodInfo
from odeverify.solution import Solution, Stats, Status


class TinyEuler(Backend):
    name = "tiny-euler"
    install_hint = "pip install tiny-euler-backend"

    def capabilities(self) -> Capabilities:
        euler = MethodInfo(name="euler", order=1, adaptive=False, fixed=True, dense=True, dense_order=1,
                           tableau="euler", notes="linear interpolation between steps")
        return Capabilities(methods={"euler": euler}, dtypes=("float64",),
                            options={"rtol": "fixed-step only", "atol": "fixed-step only",
                                     "first_step": "fixed-step only", "safety": "no controller",
                                     "factor_min": "no controller", "factor_max": "no controller",
                                     "dtmin": "no controller", "dtmax": "no controller"})

    def _solve(self, problem, method, y0, options, dtype, device) -> Solution:
        f = problem.vector_field(np)  # the Array API field, on NumPy arrays
        t0, t1 = problem.t_span
        n = options.get("n_steps") or int(np.ceil(abs(t1 - t0) / options["dt"]))
        grid = np.linspace(t0, t1, n + 1)
        y = np.asarray(problem.y0 if y0 is None else y0, dtype=np.float64)
        path, nfev = [y], 0
        for i in range(n):
            y = y + (grid[i + 1] - grid[i]) * f(np.asarray(grid[i]), y)
            nfev += 1
            path.append(y)
        ts = np.asarray(options.get("t_eval") if options.get("t_eval") is not None else [t0, t1], dtype=float)
        path = np.stack(path)
        ys = np.stack([np.interp(ts, grid, path[:, j]) for j in range(path.shape[1])], axis=1)
        status = Status.SUCCESS if np.all(np.isfinite(ys)) else Status.NONFINITE
        return Solution(ts=ts, ys=ys, status=status, stats=Stats(nfev=nfev, accepted=n), method="euler")
