"""Neural CDEs on irregular data (issue 12): CPU time of a CDE solve and of its gradient, the
solution's error, and the work, per backend and interpolation.

Parameters: ``case`` (``backend:method:mode``: each installed backend with a CDE adapter
(``Backend._cde_adapter``: the reference, torchcde, diffrax) with its Dormand-Prince pair and its
representative gradient mode (``_grid.representative_gradient_modes``; the large grid: every
quick and default CDE method of each, same mode), ``problem`` (:data:`PROBLEMS`:
``cde_linear_pl``, a linear field on the linear interpolation of two channels at 10 irregular
times; ``cde_commuting_hermite_cubic_bd``, a commuting linear field on the Hermite cubic with
backward differences; ``cde_neural``, a tanh-MLP field on the Hermite interpolation of a damped
spiral at 24 Poisson times with time as a channel; the large grid adds every
``CDE_PROBLEMS`` entry), ``device``. Every solve is the same on every commit:
``Backend.solve_cde`` at :data:`RTOL`, :data:`ATOL` with steps ending on every knot
(``knots="jump"``, the default), outputs at the data's knots and both ends, float64; the
gradient is ``Backend.cde_gradient`` of ``Loss.seeded`` (seed 0) on the same outputs. A
backend that lacks the interpolation or mode is skipped (``n/a``: diffrax has no natural cubic).

- ``time_solve`` / ``time_gradient``: CPU time of one solve / one forward-and-backward pass
  (wall time on a GPU, ``_common.WALL_TIME_DEVICES``); the first (compiling) calls in ``setup``.
- ``track_solution_error``: scaled max error ``max |z - z*| / max(1, max |z*|)`` over the outputs
  against the closed form where the problem has one (``CDEProblem.exact``: a product of matrix
  exponentials, or expm of the path increment), else against SciPy's DOP853 at rtol 1e-12,
  atol 1e-14 run piece by piece between the knots (``scipy.integrate.solve_ivp``, no odeverify
  solver code; the control's derivative is the problem's own interpolation); inf if it failed.
- the work counters beside the timings: ``track_nfev`` and ``track_steps`` of the solve,
  ``track_nfev_backward`` of the gradient; n/a where the backend does not count them (diffrax
  reports no NFE, torchcde no steps, the reference's and diffrax's CDE gradients no backward
  evaluations: ``GradientResult.nfev_backward`` stays at its default 0, read here as n/a).
"""
from __future__ import annotations

import functools
import itertools
import math
from typing import Any

import numpy as np

from ._common import CpuTimed, choose_timer, count, library_device, lookup, single_thread, split_case, synchronize
from ._common import use_jax_cache
from ._grid import LARGE, cde_cases, load

RTOL, ATOL = 1e-6, 1e-8
PROBLEMS = ("cde_linear_pl", "cde_commuting_hermite_cubic_bd", "cde_neural")
ORACLE_RTOL, ORACLE_ATOL = 1e-12, 1e-14
SEED = 0


def problems() -> list[str]:
    from odeverify.problems.cde import CDE_PROBLEMS

    return list(CDE_PROBLEMS.names()) if LARGE else [p for p in PROBLEMS if p in CDE_PROBLEMS]


def output_times(problem: Any) -> np.ndarray:
    """Both ends of the span and every knot inside it (the data's observation times)."""
    t0, t1 = problem.t_span
    return np.unique(np.concatenate([[t0], np.asarray(problem.knots, dtype=np.float64), [t1]]))


@functools.lru_cache(maxsize=None)
def reference_solution(name: str) -> tuple[tuple[float, ...], ...]:
    """z at :func:`output_times`: the closed form, else SciPy DOP853 piecewise between the knots."""
    from scipy.integrate import solve_ivp

    from odeverify.problems.cde import CDE_PROBLEMS

    cde = CDE_PROBLEMS.get(name)
    ts = output_times(cde)
    exact = cde.exact(ts)
    if exact is not None:
        return tuple(map(tuple, np.asarray(exact, dtype=np.float64)))
    prob = cde.to_problem()
    f = prob.vector_field(np, np.float64)
    out, y = [np.asarray(prob.y0, dtype=np.float64)], np.asarray(prob.y0, dtype=np.float64)
    for a, b in zip(ts[:-1], ts[1:]):
        sol = solve_ivp(f, (a, b), y, method="DOP853", rtol=ORACLE_RTOL, atol=ORACLE_ATOL)
        if not sol.success:
            raise RuntimeError(f"the SciPy oracle of {name} failed on [{a}, {b}]: {sol.message}")
        y = sol.y[:, -1]
        out.append(y)
    return tuple(map(tuple, np.stack(out)))


class CDECase:
    """One CDE solve and gradient, ready to run (NotImplementedError where it cannot run here)."""

    def __init__(self, case: str, problem: str, device: str) -> None:
        from odeverify import backends
        from odeverify.backends._cde_driver import cde_capabilities
        from odeverify.gradients import Loss
        from odeverify.problems.cde import CDE_PROBLEMS

        backend_name, method, mode = split_case(case)
        self.backend = backends.get(backend_name)
        if not self.backend.available():
            raise NotImplementedError(f"{backend_name} is not installed: {self.backend.install_hint}")
        caps = cde_capabilities(self.backend)
        if caps is None:
            raise NotImplementedError(f"{backend_name} solves no CDEs")
        self.lib_device = library_device(self.backend, device)
        self.device, self.method, self.mode = device, method, mode
        self.problem = CDE_PROBLEMS.get(problem)
        if self.problem.interpolation not in caps.interpolations:
            raise NotImplementedError(f"{backend_name} has no {self.problem.interpolation} interpolation")
        self.ts = output_times(self.problem)
        self.loss = Loss.seeded(self.ts, self.problem.hidden, seed=SEED)
        single_thread()

    def solve(self) -> Any:
        from odeverify import backends

        try:
            sol = self.backend.solve_cde(self.problem, self.method, t_eval=self.ts, rtol=RTOL, atol=ATOL,
                                         device=self.lib_device)
        except backends.UnsupportedOption as exc:
            raise NotImplementedError(str(exc)) from exc
        synchronize(sol.ys, self.device)
        return sol

    def gradient(self) -> Any:
        from odeverify import backends

        try:
            res = self.backend.cde_gradient(self.problem, self.method, self.mode, self.loss, rtol=RTOL, atol=ATOL,
                                            device=self.lib_device)
        except backends.UnsupportedOption as exc:
            raise NotImplementedError(str(exc)) from exc
        synchronize(None, self.device)
        return res


_WARM: dict = {}


def warmed(case: str, problem: str, device: str) -> CDECase:
    from odeverify import Status

    key = (case, problem, device)
    if key not in _WARM:
        use_jax_cache()
        cc = CDECase(case, problem, device)
        for out in (cc.solve(), cc.gradient()):
            if out.status is Status.UNAVAILABLE:
                raise NotImplementedError(out.message)
        _WARM[key] = cc
    return _WARM[key]


def cde_values(case: str, problem: str, device: str) -> dict[str, float] | str:
    """The solution error and work of one row, or the reason it is skipped."""
    from odeverify import Status, _xp, metrics

    try:
        use_jax_cache()
        cc = CDECase(case, problem, device)
        sol = cc.solve()
        res = cc.gradient()
    except NotImplementedError as exc:
        return str(exc) or "not available"
    if sol.status is Status.UNAVAILABLE:
        return sol.message
    # 0 backward evaluations is GradientResult's default, never a real count (a backward pass
    # evaluates the field or its VJP): the reference's and diffrax's CDE adapters leave it unset
    backward = count(res.nfev_backward) if res.success and res.nfev_backward else math.nan
    work = {"nfev": count(sol.stats.nfev), "steps": count(sol.stats.accepted), "nfev_backward": backward}
    if not sol.success:
        return {"solution_error": math.inf, **work}
    ys = np.asarray(_xp.to_numpy(sol.ys), dtype=np.float64)
    err = metrics.scaled_error(ys, np.asarray(reference_solution(problem)))
    return {"solution_error": float(err), **work}


CDE = (load().get("cde") or cde_cases(), problems(), load()["devices"])
PARAM_NAMES = ("case", "problem", "device")


class TimeCDE(CpuTimed):
    """CPU time of one CDE solve and of one gradient."""

    params = CDE
    param_names = PARAM_NAMES
    timeout = 300

    def setup(self, case: str, problem: str, device: str) -> None:
        choose_timer(self, device)
        self.case = warmed(case, problem, device)

    def time_solve(self, case: str, problem: str, device: str) -> None:
        self.case.solve()

    def time_gradient(self, case: str, problem: str, device: str) -> None:
        self.case.gradient()


class TrackCDE:
    """Solution error and work of the same solve and gradient (deterministic)."""

    params = CDE
    param_names = PARAM_NAMES
    timeout = 1800

    def setup_cache(self) -> dict:
        return {key: cde_values(*key) for key in itertools.product(*CDE)}

    setup_cache.timeout = 1800

    def setup(self, table: dict, case: str, problem: str, device: str) -> None:
        lookup(table, (case, problem, device), "nfev")

    def track_solution_error(self, table: dict, case: str, problem: str, device: str) -> float:
        """Scaled max error at the knots against the closed form (or SciPy DOP853 at 1e-12)."""
        return lookup(table, (case, problem, device), "solution_error")

    track_solution_error.unit = "scaled error"

    def track_nfev(self, table: dict, case: str, problem: str, device: str) -> float:
        """Evaluations of the vector field in the solve."""
        return lookup(table, (case, problem, device), "nfev")

    track_nfev.unit = "evaluations"

    def track_steps(self, table: dict, case: str, problem: str, device: str) -> float:
        """Accepted steps of the solve."""
        return lookup(table, (case, problem, device), "steps")

    track_steps.unit = "steps"

    def track_nfev_backward(self, table: dict, case: str, problem: str, device: str) -> float:
        """Evaluations of the field (or its VJP) in the gradient's backward pass."""
        return lookup(table, (case, problem, device), "nfev_backward")

    track_nfev_backward.unit = "evaluations"
