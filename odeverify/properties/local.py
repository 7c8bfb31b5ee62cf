"""One-step properties from the exact solution: local error order, dense-output order (any
backend with a fixed-step mode, through its public solve), and whether the embedded error
estimate bounds the true local error (the reference, which exposes its estimate)."""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from .. import _xp
from ..integrate import error_norm, resolve_solver
from ..metrics import as_numpy, roundoff_floor, scaled_error
from ..problems import Problem
from ..records import Record
from ..solvers.base import TimeContext
from ._common import backend_label, method_info, namespace_and_dtype, rebased, run
from .convergence import ORDER_BAND, judge_slope, stable_n_min


def _exact(problem: Problem) -> Any:
    if problem.exact is None:
        raise ValueError(f"problem {problem.name!r} has no closed form; one-step properties need one")
    return problem.exact


def start_times(problem: Problem, count: int = 4) -> list[float]:
    """One-step properties start from several points of the exact solution and keep the
    worst error: a single start can sit on a zero of the principal error term."""
    t0, t1 = problem.t_span
    return [t0 + (t1 - t0) * k / (2 * count) for k in range(count)]


def _hs(problem: Problem, n_min: int | None, count: int) -> list[float]:
    """Step sizes from span / n_min down, halving; n_min defaults to where h * rho <= 1."""
    span = abs(problem.t_span[1] - problem.t_span[0])
    if n_min is None:
        n_min = stable_n_min(problem)
    return [span / (n_min * 2**i) for i in range(count)]


def one_step_errors(problem: Problem, method: Any, h: float, thetas: tuple[float, ...], *, backend: str,
                    library: str, dtype: str) -> tuple[float, float]:
    """Worst one-step errors (at the step end, at t + theta h) over :func:`start_times`,
    from a public fixed-step solve with one step started on the exact solution."""
    end_err = dense_err = 0.0
    exact = _exact(problem)
    for t in start_times(problem):
        inner = sorted({t + th * h for th in thetas if 0 < th < 1})
        sol = run(rebased(problem, t, t + h), method, backend=backend, library=library, dtype=dtype, n_steps=1,
                  t_eval=[t, *inner, t + h])
        if not sol.success:
            return math.inf, math.inf
        ys = as_numpy(sol.ys)
        ref = exact(np.asarray([t, *inner, t + h]))
        end_err = max(end_err, scaled_error(ys[-1], ref[-1]))
        for i in range(1, len(inner) + 1):
            dense_err = max(dense_err, scaled_error(ys[i], ref[i]))
    return end_err, dense_err


def local_error_order(problem: Problem, method: Any, *, backend: str = "reference", library: str = "numpy",
                      dtype: str = "float64", n_min: int | None = None, count: int = 12,
                      band: float = ORDER_BAND) -> Record:
    """Order of the one-step error from the exact solution: slope p + 1 expected."""
    p = method_info(method, backend=backend, library=library).order
    hs = _hs(problem, n_min, count)
    errs = [one_step_errors(problem, method, h, (), backend=backend, library=library, dtype=dtype)[0] for h in hs]
    return _fit("local_error_order", problem, method, backend, library, dtype, hs, errs, p + 1, band)


def dense_output_order(problem: Problem, method: Any, *, backend: str = "reference", library: str = "numpy",
                       dtype: str = "float64", thetas: tuple[float, ...] = (0.3, 0.5, 0.8),
                       n_min: int | None = None, count: int = 12, band: float = ORDER_BAND) -> Record:
    """Order q of the interpolant: its one-step error at t + theta h is O(h^(q+1))."""
    info = method_info(method, backend=backend, library=library)
    if info.dense_order is None:
        raise ValueError(f"{backend} method {info.name!r} declares no dense-output order")
    q = int(info.dense_order)
    hs = _hs(problem, n_min, count)
    errs = [one_step_errors(problem, method, h, thetas, backend=backend, library=library, dtype=dtype)[1] for h in hs]
    rec = _fit("dense_output_order", problem, method, backend, library, dtype, hs, errs, q + 1, band)
    if rec.measured is not None:
        rec.measured -= 1.0
    rec.expected = float(q)
    rec.details["note"] = "measured = local slope - 1 (the one-step interpolation error is O(h^(q+1)))"
    return rec


def _fit(name: str, problem: Problem, method: Any, backend: str, library: str, dtype: str, hs: list[float],
         errs: list[float], expected: float, band: float) -> Record:
    # one step: round-off does not accumulate over steps; a step's own rounding is a few eps
    # per stage, so errors 100x above eps |y| are truncation
    floor = roundoff_floor(_exact(problem)(np.asarray([problem.t_span[0]]))[0], dtype, factor=100.0)
    h, e = np.asarray(hs), np.asarray(errs)
    details: dict[str, Any] = {"h": hs, "error": errs, "floor": floor, "band": band}
    slope, verdict, msg = judge_slope(h, e, np.full(h.shape, floor), expected, band=band, window=3, details=details)
    return Record(property=name, method=method, problem=problem.name, backend=backend_label(backend, library),
                  library=library, dtype=dtype, expected=float(expected), details=details, measured=slope,
                  verdict=verdict, message=msg)


def embedded_estimate_bound(problem: Problem, method: str, *, library: str = "numpy", dtype: str = "float64",
                            n_min: int = 8, count: int = 6, rtol: float = 1e-6, atol: float = 1e-6) -> Record:
    """The embedded estimate bounds the true local error: true/estimate <= 1 for small steps.

    Both are measured in the integrator's own scaled RMS norm, one step from the exact
    solution at t0, over steps where the true error is above round-off. Reference backend
    only: the other libraries do not expose their estimate.
    """
    solver = resolve_solver(method)
    if not getattr(solver, "adaptive", False):
        raise ValueError(f"method {method!r} has no embedded error estimate")
    xp, dt = namespace_and_dtype(library, dtype)
    f = problem.vector_field(xp, dt)
    t0 = problem.t_span[0]
    hs, ratios, true_e, est_e = [], [], [], []
    span = abs(problem.t_span[1] - t0)
    for h in [span / (n_min * 2**i) for i in range(count)]:
        y = xp.asarray(_exact(problem)(np.asarray([t0]))[0], dtype=dt)
        tc = TimeContext(xp=xp, dtype=dt, device=_xp.device(y), per_sample=False, t=np.asarray(t0))
        res = solver.step(f, tc, y, np.asarray(h), f(tc.time(tc.t), y), estimate=True)
        ex = xp.asarray(_exact(problem)(np.asarray([t0 + h]))[0], dtype=dt)
        est = float(error_norm(xp, res.err, res.err_aux, y, res.y1, rtol, atol, False))
        true = float(error_norm(xp, res.y1 - ex, None, y, res.y1, rtol, atol, False))
        if true <= roundoff_floor(ex, dtype) / atol:
            continue
        hs.append(h)
        true_e.append(true)
        est_e.append(est)
        ratios.append(true / est if est > 0 else math.inf)
    details = {"h": hs, "true": true_e, "estimate": est_e, "ratio": ratios, "rtol": rtol, "atol": atol}
    common = dict(property="embedded_estimate_bound", method=method, problem=problem.name,
                  backend=backend_label("reference", library), library=library, dtype=dtype, expected=1.0,
                  details=details)
    if not ratios:
        return Record(measured=None, verdict="skip", message="inconclusive: every true error was at round-off"
                      " (the problem is too smooth for this method's steps to show an error)", **common)
    worst = max(ratios)
    ok = worst <= 1.0
    msg = "" if ok else f"true/estimate={worst:.3g} at h={hs[int(np.argmax(ratios))]:.3g}, but should be <= 1"
    return Record(measured=worst, verdict="pass" if ok else "fail", message=msg, **common)
