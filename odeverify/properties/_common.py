"""Shared plumbing of the properties: run a reference solve of a problem in a chosen library."""
from __future__ import annotations

from typing import Any

import numpy as np

from .. import _xp
from ..integrate import resolve_solver, solve
from ..problems import Problem
from ..solution import Solution

DTYPES = ("float64", "float32")


def namespace_and_dtype(library: str, dtype: str) -> tuple[Any, Any]:
    if dtype not in DTYPES:
        raise ValueError(f"dtype={dtype!r}; expected one of {DTYPES}")
    xp = _xp.get_namespace(library)
    return xp, getattr(xp, dtype)


def run(problem: Problem, method: str, *, library: str = "numpy", dtype: str = "float64",
        t_span: tuple[float, float] | None = None, **kwargs: Any) -> Solution:
    """Solve ``problem`` with the reference integrator in ``library``/``dtype``."""
    xp, dt = namespace_and_dtype(library, dtype)
    f = problem.vector_field(xp, dt)
    y0 = problem.y0_array(xp, dt)
    return solve(f, y0, t_span or problem.t_span, method=method, **kwargs)


def reference_final(problem: Problem) -> np.ndarray:
    ref = problem.final_reference()
    if ref is None:
        raise ValueError(
            f"problem {problem.name!r} has neither a closed form nor a reference at t1={problem.t_span[1]};"
            " properties that measure error need one"
        )
    return ref


def solver_order(method: str) -> int:
    return int(resolve_solver(method).order)


def trajectory_samples(problem: Problem, count: int = 16) -> np.ndarray:
    """States along the solution (closed form, else a scipy DOP853 solve at rtol 1e-8)."""
    t0, t1 = problem.t_span
    ts = np.linspace(t0, t1, count)
    if problem.exact is not None:
        return np.asarray(problem.exact(ts), dtype=np.float64), ts
    from scipy.integrate import solve_ivp

    f = problem.vector_field(_xp.get_namespace("numpy"), np.float64)
    sol = solve_ivp(lambda t, y: np.asarray(f(np.asarray(t), np.asarray(y))), (t0, t1), np.asarray(problem.y0),
                    method="DOP853", rtol=1e-8, atol=1e-10, t_eval=ts)
    return sol.y.T, sol.t


def spectral_radius_bound(problem: Problem, count: int = 16) -> float:
    """max over samples of the trajectory of the spectral radius of df/dy (central differences).

    Used to start step sweeps where h * rho <= 1, i.e. where the step resolves the fastest
    local time scale; growth of the error at coarser steps is instability, not a finding.
    """
    f = problem.vector_field(_xp.get_namespace("numpy"), np.float64)
    ys, ts = trajectory_samples(problem, count)
    rho = 0.0
    for t, y in zip(ts, ys):
        n = y.size
        J = np.empty((n, n))
        for j in range(n):
            d = 1e-6 * max(1.0, abs(y[j]))
            e = np.zeros(n)
            e[j] = d
            J[:, j] = (np.asarray(f(np.asarray(t), y + e)) - np.asarray(f(np.asarray(t), y - e))) / (2 * d)
        rho = max(rho, float(np.max(np.abs(np.linalg.eigvals(J)))))
    return rho
