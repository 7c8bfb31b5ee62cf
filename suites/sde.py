"""SDE solves: CPU time per path, strong error and work of fixed-step SDE methods.

Parameters: ``case`` (``backend:method``: Euler-Maruyama and stochastic Heun of every
installed backend with SDE methods, the rules of ``odeverify.report.collect.QUICK_SDE_RULES``;
the large grid takes every SDE method), ``problem`` (``gbm_ito``, ``kp_cubic``; a method of the
other calculus solves the problem's form in its own, ``SDEProblem.as_calculus``), ``device``.
Every solve is the same on every commit: :data:`PATHS` paths of the seeded Brownian tree
(seed 0), :data:`N_STEPS` fixed steps, output at t0 and t1.

- ``time_solve``: CPU time of one solve of all :data:`PATHS` paths (wall time on a GPU, see
  ``_common.WALL_TIME_DEVICES``; the time per path is this over :data:`PATHS`); the first
  (compiling) call in ``setup``.
- ``track_strong_error``: mean over paths of |X_h(T) - X(T)|, X(T) the problem's closed form on
  the same Brownian path (deterministic: a fixed seed);
- the work counters beside the timing: ``track_nfev`` (drift evaluations) and ``track_ngev``
  (diffusion evaluations) of the solve, from ``Solution.stats``.
"""
from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np

from ._common import CpuTimed, choose_timer, count, library_device, lookup, single_thread, split_case, synchronize
from ._grid import NONE, SDE_RULES as RULES, load, sde_cases

#: the fixed SDE solve of every row
PATHS = 256
N_STEPS = 128
SEED = 0
PROBLEMS = ("gbm_ito", "kp_cubic")


_WARM: dict = {}


class SDECase:
    """One SDE solve, ready to run (NotImplementedError where it cannot run here)."""

    def __init__(self, case: str, problem: str, device: str) -> None:
        from odeverify import backends
        from odeverify.brownian import BrownianTree
        from odeverify.problems.sde import SDE_PROBLEMS

        backend_name, method = split_case(case)
        self.backend = backends.get(backend_name)
        if not self.backend.available():
            raise NotImplementedError(f"{backend_name} is not installed: {self.backend.install_hint}")
        self.lib_device = library_device(self.backend, device)
        self.device, self.method = device, method
        info = self.backend.capabilities().sde_methods[method]
        p = SDE_PROBLEMS.get(problem)
        if p.calculus != info.calculus:
            if p.correction is None:
                raise NotImplementedError(f"{problem} has no {info.calculus} form for {method}")
            p = p.as_calculus(info.calculus)
        if not info.valid_for(p.noise_class):
            raise NotImplementedError(f"{method} is not valid for {p.noise_class} noise")
        self.problem = p
        t0, t1 = p.t_span
        self.bm = BrownianTree(t0, t1, p.brownian_shape(PATHS), seed=SEED)
        self.y0 = p.y0_batch(PATHS)
        self.ts = np.asarray([t0, t1])
        single_thread()

    def solve(self) -> Any:
        sol = self.backend.solve_sde(self.problem, self.method, bm=self.bm, y0=self.y0, n_steps=N_STEPS,
                                     t_eval=self.ts, device=self.lib_device)
        synchronize(sol.ys, self.device)
        return sol


def warmed(case: str, problem: str, device: str) -> SDECase:
    key = (case, problem, device)
    if key not in _WARM:
        sc = SDECase(case, problem, device)
        sol = sc.solve()
        if not sol.success:
            raise NotImplementedError(f"{case} on {problem}: {sol.status.code}: {sol.message}")
        _WARM[key] = sc
    return _WARM[key]


def sde_values(case: str, problem: str, device: str) -> dict[str, float] | str:
    """The strong error and work of one row, or the reason it is skipped."""
    try:
        sc = SDECase(case, problem, device)
    except NotImplementedError as exc:
        return str(exc) or "not available"
    sol = sc.solve()
    if not sol.success:
        return {"strong_error": math.inf, "nfev": count(sol.stats.nfev), "ngev": count(sol.stats.ngev)}
    p = sc.problem
    if p.exact is None:
        err = math.nan
    else:
        ref = np.asarray(p.exact(sc.ts, sc.y0, sc.bm, p.params), dtype=np.float64)[-1]
        y = np.asarray(sol.ys if not hasattr(sol.ys, "cpu") else sol.ys.cpu(), dtype=np.float64)[-1]
        err = float(np.mean(np.linalg.norm(y - ref, axis=-1)))
    return {"strong_error": err, "nfev": count(sol.stats.nfev), "ngev": count(sol.stats.ngev)}


SDE = (load().get("sde") or sde_cases(), list(PROBLEMS), load()["devices"])
PARAM_NAMES = ("case", "problem", "device")


class TimeSDE(CpuTimed):
    """CPU time of one fixed-step SDE solve of PATHS paths (divide by PATHS for per path)."""

    params = SDE
    param_names = PARAM_NAMES
    timeout = 300

    def setup(self, case: str, problem: str, device: str) -> None:
        choose_timer(self, device)
        self.case = warmed(case, problem, device)

    def time_solve(self, case: str, problem: str, device: str) -> None:
        self.case.solve()


class TrackSDE:
    """Strong error and drift/diffusion evaluations of the same solve (deterministic)."""

    params = SDE
    param_names = PARAM_NAMES
    timeout = 1800

    def setup_cache(self) -> dict:
        return {key: sde_values(*key) for key in itertools.product(*SDE)}

    setup_cache.timeout = 1800

    def setup(self, table: dict, case: str, problem: str, device: str) -> None:
        lookup(table, (case, problem, device), "nfev")

    def track_strong_error(self, table: dict, case: str, problem: str, device: str) -> float:
        """Mean over paths of |X_h(T) - X(T)| on the same Brownian path; inf for a failed solve."""
        return lookup(table, (case, problem, device), "strong_error")

    track_strong_error.unit = "error"

    def track_nfev(self, table: dict, case: str, problem: str, device: str) -> float:
        """Drift evaluations of the solve."""
        return lookup(table, (case, problem, device), "nfev")

    track_nfev.unit = "evaluations"

    def track_ngev(self, table: dict, case: str, problem: str, device: str) -> float:
        """Diffusion evaluations of the solve."""
        return lookup(table, (case, problem, device), "ngev")

    track_ngev.unit = "evaluations"
