"""Shared plumbing of the properties: solve a problem with a backend, look up what it claims."""
from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from .. import _xp, backends
from ..backends import Backend, MethodInfo
from ..integrate import solve
from ..problems import Problem
from ..solution import Solution

DTYPES = ("float64", "float32")


def namespace_and_dtype(library: str, dtype: str) -> tuple[Any, Any]:
    if dtype not in DTYPES:
        raise ValueError(f"dtype={dtype!r}; expected one of {DTYPES}")
    xp = _xp.get_namespace(library)
    return xp, getattr(xp, dtype)


def backend_for(backend: str, library: str = "numpy") -> Backend:
    """The backend object; ``backend="reference"`` with ``library="torch"`` is ``reference-torch``."""
    if backend == "reference" and library != "numpy":
        backend = f"reference-{library}"
    return backends.get(backend)


def backend_label(backend: str, library: str = "numpy") -> str:
    """The backend name recorded in a Record."""
    return backend_for(backend, library).name


def method_info(method: Any, *, backend: str = "reference", library: str = "numpy") -> MethodInfo:
    """What a backend claims for a method (a solver object stands for itself, on the reference)."""
    if not isinstance(method, str):
        return MethodInfo(name=method.name, order=method.order, adaptive=bool(getattr(method, "adaptive", False)),
                          fixed=True, dense_order=getattr(method, "dense_order", None),
                          embedded_order=getattr(method, "embedded_order", None))
    b = backend_for(backend, library)
    return b.capabilities().method(method, b.name)


def run(problem: Problem, method: Any, *, backend: str = "reference", library: str = "numpy",
        dtype: str = "float64", **kwargs: Any) -> Solution:
    """Solve ``problem`` with ``backend`` (the reference in ``library`` by default)."""
    if not isinstance(method, str):  # a solver object: the reference integrator itself
        xp, dt = namespace_and_dtype(library, dtype)
        return solve(problem.vector_field(xp, dt), problem.y0_array(xp, dt), problem.t_span, method=method, **kwargs)
    return backend_for(backend, library).solve(problem, method, dtype=dtype, **kwargs)


def rebased(problem: Problem, t: float, t1: float) -> Problem:
    """The same trajectory started at ``t`` from the exact solution (for one-step properties)."""
    if problem.exact is None:
        raise ValueError(f"problem {problem.name!r} has no closed form; one-step properties need one")
    y = problem.exact(np.asarray([t]))[0]
    return dataclasses.replace(problem, y0=tuple(float(v) for v in y), t_span=(t, t1), references=())


def reference_final(problem: Problem) -> np.ndarray:
    ref = problem.final_reference()
    if ref is None:
        raise ValueError(
            f"problem {problem.name!r} has neither a closed form nor a reference at t1={problem.t_span[1]};"
            " properties that measure error need one"
        )
    return ref


def solver_order(method: Any, *, backend: str = "reference", library: str = "numpy") -> int:
    return int(method_info(method, backend=backend, library=library).order)


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


def jacobian_eigenvalues(problem: Problem, count: int = 16) -> np.ndarray:
    """Eigenvalues of df/dy (central differences) at ``count`` states along the solution,
    concatenated: the linearised spectrum the step sweeps must resolve and stay stable on."""
    f = problem.vector_field(_xp.get_namespace("numpy"), np.float64)
    ys, ts = trajectory_samples(problem, count)
    out = []
    for t, y in zip(ts, ys):
        n = y.size
        J = np.empty((n, n))
        for j in range(n):
            d = 1e-6 * max(1.0, abs(y[j]))
            e = np.zeros(n)
            e[j] = d
            J[:, j] = (np.asarray(f(np.asarray(t), y + e)) - np.asarray(f(np.asarray(t), y - e))) / (2 * d)
        out.append(np.linalg.eigvals(J))
    return np.concatenate(out)


def spectral_radius_bound(problem: Problem, count: int = 16) -> float:
    """max over samples of the trajectory of the spectral radius of df/dy (central differences).

    Used to start step sweeps where h * rho <= 1, i.e. where the step resolves the fastest
    local time scale; growth of the error at coarser steps is instability, not a finding.
    """
    return float(np.max(np.abs(jacobian_eigenvalues(problem, count))))
