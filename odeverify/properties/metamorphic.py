"""Differential and metamorphic properties: what must hold for *any* problem, so that generated
problems (:mod:`odeverify.strategies`) can grade any backend without a curated answer.

Each function solves a problem (usually several times, transformed) with one backend and
returns a :class:`~odeverify.records.Record`. ``measured`` is the headline figure,
``expected`` the bound it must stay under. A property that does not apply to the problem
(a dissipative spectrum for time reversal, a nonlinear field for superposition) returns
verdict ``skip`` with ``not applicable: ...``; a solve that fails where the untransformed one
succeeded is a ``fail``.

The transformations and what they must preserve:

- **differential**: the backend's solution against the closed form (or recorded reference)
  at a tolerance, within ``DIFFERENTIAL_FACTOR`` times the error of the reference solver
  running the same tableau (:func:`default_baseline` for methods that share none), plus
  the tolerance itself;
- **time reversal**: solving t0 -> t1 and back returns y0 within a few times the forward
  error (non-dissipative spectra only: a decaying mode grows back as exp(|lam| T));
- **time rescaling** t -> c t, f -> f / c, and **change of units** y -> s y, f -> s f(y / s),
  atol -> s atol: with c, s powers of two every operation of a correct solver scales
  exactly, so the steps are the same (scaled) and the solution the same to the bit (within
  ``ULPS_PER_STEP``: a compiler may contract the transformed field differently); for
  other factors, and for implicit methods (whose Newton iteration stops at a tolerance), the
  solution must agree within the tolerance;
- **time shift** (autonomous fields): [t0, t1] -> [t0 + s, t1 + s] gives the same solution
  within the tolerance;
- **linear superposition** (linear fields, fixed steps): y(a + b) = y(a) + y(b) to round-off;
- **permutation** of the batch: the permuted batch gives the permuted solution (to the bit in
  per-sample mode, within the tolerance with a shared step).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from ..metrics import as_numpy, eps_of, scaled_error
from ..problems import Problem
from ..records import Record
from ..backends.base import is_implicit
from ._common import backend_for, backend_label, method_info, run

#: differential bound: the backend's error may exceed the reference's on the same tableau by this
DIFFERENTIAL_FACTOR = 10.0
#: a transformed solve must agree with the original within this many tolerances (scaled error)
TOLERANCE_FACTOR = 10.0
#: round-off bound of a fixed-step linear identity, in ulps of the solution's scale per step
ULPS_PER_STEP = 64.0


def _common(prop: str, problem: Problem, method: str, backend: str, library: str, dtype: str) -> dict[str, Any]:
    return dict(property=prop, method=method, problem=problem.name, backend=backend_label(backend, library),
                library=library, dtype=dtype)


def _spec_details(problem: Problem, **extra: Any) -> dict[str, Any]:
    return {"spec": problem.spec, "t_span": list(problem.t_span), **extra}


def _exact_at(problem: Problem, times: np.ndarray) -> np.ndarray | None:
    if problem.exact is not None:
        return np.asarray(problem.exact(times), dtype=np.float64)
    ref = problem.final_reference()
    if ref is not None and times.size == 1 and times[0] == problem.t_span[1]:
        return ref[None, :]
    return None


def _max_error(problem: Problem, sol: Any, times: np.ndarray) -> float:
    """Largest scaled error over the output times (inf for a failed solve)."""
    if not sol.success:
        return math.inf
    refs = _exact_at(problem, times)
    ys = as_numpy(sol.ys)
    if times.size == 1:
        ys = ys[-1:]
    return max(scaled_error(ys[i], refs[i]) for i in range(len(times)))


def _failed(common: dict, expected: float | None, why: str, details: dict) -> Record:
    return Record(measured=math.inf, expected=expected, verdict="fail", status="failed", message=why,
                  details=details, **common)


def default_baseline(info: Any) -> str:
    """The reference method a backend's adaptive method is compared with: the tableau it
    shares when the reference runs that tableau adaptively; the reference BDF for a
    variable-order multistep method (no embedded pair: BDF, LSODA); else the reference's
    adaptive method of the same order (and embedded order, where one matches); else dopri5."""
    from ..solvers import SOLVERS

    if info.tableau and info.tableau in SOLVERS and SOLVERS.get(info.tableau).adaptive:
        return info.tableau
    if info.adaptive and info.embedded_order is None and info.error_order is None:
        return "bdf"
    same = [n for n, s in SOLVERS.items() if s.adaptive and s.order == info.order
            and not getattr(s, "implicit", False) and not getattr(s, "variable_order", False)]
    exact = [n for n in same if SOLVERS.get(n).embedded_order == info.embedded_order]
    return (exact or same or ["dopri5"])[0]


def differential_agreement(problem: Problem, method: str, *, backend: str, library: str = "numpy",
                           dtype: str = "float64", rtol: float = 1e-8, atol: float = 1e-10,
                           t_eval: Any = None, baseline_method: str | None = None) -> Record:
    """The backend's solution against the closed form (or reference), bounded by the error of
    the reference solver on the same tableau: ``err <= DIFFERENTIAL_FACTOR * err_ref + rtol + atol``.

    ``measured`` is err / (err_ref + rtol + atol), ``expected`` the factor. Output times are
    ``t_eval`` (checked against the closed form at each) or t1 alone."""
    common = _common("differential_agreement", problem, method, backend, library, dtype)
    times = np.asarray(t_eval if t_eval is not None else [problem.t_span[1]], dtype=np.float64)
    if _exact_at(problem, times) is None:
        return Record(measured=None, expected=DIFFERENTIAL_FACTOR, verdict="skip",
                      message="not applicable: no closed form at the output times", **common)
    if baseline_method is None:
        baseline_method = default_baseline(method_info(method, backend=backend, library=library))
    kw: dict[str, Any] = {"rtol": rtol, "atol": atol}
    if t_eval is not None:
        kw["t_eval"] = list(times)
    ref = run(problem, baseline_method, backend="reference", dtype=dtype, **kw)
    sol = run(problem, method, backend=backend, library=library, dtype=dtype, **kw)
    err_ref, err = _max_error(problem, ref, times), _max_error(problem, sol, times)
    details = _spec_details(problem, rtol=rtol, atol=atol, t_eval=times.tolist(), error=err,
                            reference_error=err_ref, baseline=f"reference/{baseline_method}",
                            stats=sol.stats.to_dict(), reference_stats=ref.stats.to_dict(), status=sol.status.code)
    if not ref.success:
        return Record(measured=None, expected=DIFFERENTIAL_FACTOR, verdict="skip", details=details,
                      message=f"inconclusive: the reference solve failed ({ref.status.code})", **common)
    if not sol.success:
        return _failed(common, DIFFERENTIAL_FACTOR, f"the solve failed ({sol.status.code}: {sol.message}) where"
                       f" the reference {baseline_method} succeeded", details)
    allowed = err_ref + rtol + atol
    ratio = err / allowed
    ok = ratio <= DIFFERENTIAL_FACTOR
    msg = "" if ok else (f"error={err:.3e}, but should be <= {DIFFERENTIAL_FACTOR:g} x (reference error"
                         f" {err_ref:.3e} + rtol + atol) at rtol={rtol:g}")
    return Record(measured=ratio, expected=DIFFERENTIAL_FACTOR, verdict="pass" if ok else "fail", message=msg,
                  details=details, **common)


def time_reversal(problem: Problem, method: str, *, backend: str, library: str = "numpy", dtype: str = "float64",
                  rtol: float = 1e-8, atol: float = 1e-10) -> Record:
    """Solve t0 -> t1, then t1 -> t0 from the computed y(t1): the return error must stay within
    ``TOLERANCE_FACTOR`` x (forward error + rtol + atol). Not applicable to dissipative spectra."""
    common = _common("time_reversal", problem, method, backend, library, dtype)
    if "dissipative" in problem.tags or "stiff" in problem.tags:
        return Record(measured=None, expected=TOLERANCE_FACTOR, verdict="skip",
                      message="not applicable: a dissipative spectrum amplifies the backward solve's error"
                              " like exp(|lam| T)", **common)
    t0, t1 = problem.t_span
    fwd = run(problem, method, backend=backend, library=library, dtype=dtype, rtol=rtol, atol=atol)
    if not fwd.success:
        return _failed(common, TOLERANCE_FACTOR, f"the forward solve failed ({fwd.status.code})",
                       _spec_details(problem))
    y1 = as_numpy(fwd.ys)[-1]
    back = dataclasses.replace(problem, y0=tuple(float(v) for v in y1), t_span=(t1, t0), references=(),
                               exact=None)
    bwd = run(back, method, backend=backend, library=library, dtype=dtype, rtol=rtol, atol=atol)
    ref1 = _exact_at(problem, np.asarray([t1]))
    err_fwd = scaled_error(y1, ref1[0]) if ref1 is not None else 0.0
    details = _spec_details(problem, rtol=rtol, atol=atol, forward_error=err_fwd,
                            forward_stats=fwd.stats.to_dict())
    if not bwd.success:
        return _failed(common, TOLERANCE_FACTOR, f"the backward solve failed ({bwd.status.code}) after a"
                       " successful forward solve", details)
    y0 = np.asarray(problem.y0)
    ret = scaled_error(as_numpy(bwd.ys)[-1], y0)
    allowed = err_fwd + rtol + atol
    ratio = ret / allowed
    details.update({"return_error": ret, "backward_stats": bwd.stats.to_dict()})
    ok = ratio <= TOLERANCE_FACTOR
    msg = "" if ok else (f"return error={ret:.3e}, but should be <= {TOLERANCE_FACTOR:g} x (forward error"
                         f" {err_fwd:.3e} + rtol + atol)")
    return Record(measured=ratio, expected=TOLERANCE_FACTOR, verdict="pass" if ok else "fail", message=msg,
                  details=details, **common)


def _rescaled(problem: Problem, c: float) -> Problem:
    """t -> c t, f -> f / c (the same trajectory on a stretched clock)."""
    base_rhs, base_exact = problem.rhs, problem.exact

    def rhs(xp, t, y, p):
        return base_rhs(xp, t / p["_time_scale"], y, p) / p["_time_scale"]

    exact = None if base_exact is None else (lambda t: base_exact(np.asarray(t, dtype=np.float64) / c))
    refs = tuple(dataclasses.replace(r, t=r.t * c) for r in problem.references)
    return dataclasses.replace(problem, rhs=rhs, exact=exact, references=refs, jac=None,
                               t_span=(problem.t_span[0] * c, problem.t_span[1] * c),
                               params={**problem.params, "_time_scale": float(c)})


def _units(problem: Problem, s: float) -> Problem:
    """y -> s y, f -> s f(t, y / s)."""
    base_rhs, base_exact = problem.rhs, problem.exact

    def rhs(xp, t, y, p):
        return base_rhs(xp, t, y / p["_unit_scale"], p) * p["_unit_scale"]

    exact = None if base_exact is None else (lambda t: s * base_exact(t))
    refs = tuple(dataclasses.replace(r, y=tuple(s * v for v in r.y)) for r in problem.references)
    return dataclasses.replace(problem, rhs=rhs, exact=exact, references=refs, jac=None,
                               y0=tuple(s * v for v in problem.y0), params={**problem.params, "_unit_scale": float(s)})


def _power_of_two(x: float) -> bool:
    m, _ = math.frexp(abs(x))
    return x > 0 and m == 0.5


def _scaling(prop: str, problem: Problem, transformed: Problem, factor: float, method: str, *, backend: str,
             library: str, dtype: str, rtol: float, atol: float, atol_t: float, unscale_y: float,
             first_step: tuple[float, float] | None = None) -> Record:
    common = _common(prop, problem, method, backend, library, dtype)
    fa, fb = ({"first_step": first_step[0]}, {"first_step": first_step[1]}) if first_step else ({}, {})
    a = run(problem, method, backend=backend, library=library, dtype=dtype, rtol=rtol, atol=atol, **fa)
    b = run(transformed, method, backend=backend, library=library, dtype=dtype, rtol=rtol, atol=atol_t, **fb)
    # an implicit method stops its Newton iteration at a tolerance and perturbs y by absolute
    # amounts for finite-difference Jacobians: it scales exactly only up to that tolerance
    implicit = is_implicit(method_info(method, backend=backend, library=library))
    exact = _power_of_two(factor) and not implicit
    details = _spec_details(problem, factor=factor, exact_scaling=exact, rtol=rtol, atol=atol,
                            stats=a.stats.to_dict(), transformed_stats=b.stats.to_dict(),
                            status=[a.status.code, b.status.code])
    if not a.success:
        return Record(measured=None, expected=None, verdict="skip", details=details,
                      message=f"inconclusive: the untransformed solve failed ({a.status.code})", **common)
    if not b.success:
        return _failed(common, 0.0 if exact else TOLERANCE_FACTOR, f"the transformed solve failed"
                       f" ({b.status.code}: {b.message}) where the original succeeded", details)
    ya, yb = as_numpy(a.ys)[-1], as_numpy(b.ys)[-1] / unscale_y
    same_steps = (a.stats.accepted, a.stats.rejected) == (b.stats.accepted, b.stats.rejected)
    if exact:
        diff = float(np.max(np.abs(ya - yb)))
        steps = max(1, a.stats.accepted + a.stats.rejected)
        ulps = diff / (max(1.0, float(np.max(np.abs(ya)))) * eps_of(dtype) * steps)
        details.update({"max_abs_diff": diff, "same_steps": same_steps, "ulps_per_step": ulps})
        # the same operations on scaled numbers give scaled results to the bit, but a compiler
        # may contract or reorder the transformed field differently (diffrax's Heun: 0.75 ulps
        # in all after 55 steps, the same steps): a few ulps per step, never a tolerance
        ok = ulps <= ULPS_PER_STEP and same_steps
        msg = "" if ok else (f"factor {factor:g} is a power of two, so every operation scales exactly, but the"
                             f" solutions differ by {ulps:.3g} ulps per step (bound {ULPS_PER_STEP:g}) and the"
                             f" steps (accepted, rejected) are {(a.stats.accepted, a.stats.rejected)} vs"
                             f" {(b.stats.accepted, b.stats.rejected)}")
        return Record(measured=ulps, expected=ULPS_PER_STEP, verdict="pass" if ok else "fail", message=msg,
                      details=details, **common)
    err = scaled_error(yb, ya) / (rtol + atol)
    details.update({"scaled_difference": err * (rtol + atol), "same_steps": same_steps})
    ok = err <= TOLERANCE_FACTOR
    msg = "" if ok else (f"the transformed solution differs by {err:.3g} tolerances, but should be <="
                         f" {TOLERANCE_FACTOR:g}")
    return Record(measured=err, expected=TOLERANCE_FACTOR, verdict="pass" if ok else "fail", message=msg,
                  details=details, **common)


def time_rescaling(problem: Problem, method: str, *, backend: str, c: float = 4.0, library: str = "numpy",
                   dtype: str = "float64", rtol: float = 1e-6, atol: float = 1e-9) -> Record:
    """Solve on the clock t -> c t with f -> f / c: a power-of-two ``c`` must give the same steps
    and the same solution to round-off (ULPS_PER_STEP); any other ``c`` the same solution within the tolerance.

    The first step is given (span / 64, and c times it): Hairer's starting-step heuristic
    compares |f| with |f'| (units 1/time and 1/time^2), so it is not covariant under a change
    of the clock, in any library; every later decision is."""
    if not (math.isfinite(c) and c > 0):
        raise ValueError(f"c={c!r}, but it must be a finite time scale > 0")
    h0 = abs(problem.t_span[1] - problem.t_span[0]) / 64
    return _scaling("time_rescaling", problem, _rescaled(problem, c), c, method, backend=backend, library=library,
                    dtype=dtype, rtol=rtol, atol=atol, atol_t=atol, unscale_y=1.0, first_step=(h0, c * h0))


def unit_invariance(problem: Problem, method: str, *, backend: str, s: float = 8.0, library: str = "numpy",
                    dtype: str = "float64", rtol: float = 1e-6, atol: float = 1e-9) -> Record:
    """Change the units of y by ``s`` (atol with it): a power-of-two ``s`` must give the same
    steps and the same solution to round-off (ULPS_PER_STEP); any other ``s`` the same solution within the tolerance."""
    if not (math.isfinite(s) and s > 0):
        raise ValueError(f"s={s!r}, but it must be a finite unit scale > 0")
    return _scaling("unit_invariance", problem, _units(problem, s), s, method, backend=backend, library=library,
                    dtype=dtype, rtol=rtol, atol=atol, atol_t=atol * s, unscale_y=s)


def time_shift(problem: Problem, method: str, *, backend: str, shift: float = 1.0, library: str = "numpy",
               dtype: str = "float64", rtol: float = 1e-6, atol: float = 1e-9) -> Record:
    """An autonomous field solved on [t0 + shift, t1 + shift] gives the same solution within
    ``TOLERANCE_FACTOR`` tolerances."""
    common = _common("time_shift", problem, method, backend, library, dtype)
    if "autonomous" not in problem.tags:
        return Record(measured=None, expected=TOLERANCE_FACTOR, verdict="skip",
                      message="not applicable: the field depends on time", **common)
    t0, t1 = problem.t_span
    shifted = dataclasses.replace(problem, t_span=(t0 + shift, t1 + shift), exact=None, references=())
    return _pair("time_shift", problem, shifted, method, common, backend=backend, library=library, dtype=dtype,
                 rtol=rtol, atol=atol, extra={"shift": shift})


def _pair(prop: str, problem: Problem, other: Problem, method: str, common: dict, *, backend: str, library: str,
          dtype: str, rtol: float, atol: float, extra: dict) -> Record:
    a = run(problem, method, backend=backend, library=library, dtype=dtype, rtol=rtol, atol=atol)
    b = run(other, method, backend=backend, library=library, dtype=dtype, rtol=rtol, atol=atol)
    details = _spec_details(problem, rtol=rtol, atol=atol, status=[a.status.code, b.status.code],
                            stats=a.stats.to_dict(), transformed_stats=b.stats.to_dict(), **extra)
    if not a.success:
        return Record(measured=None, expected=TOLERANCE_FACTOR, verdict="skip", details=details,
                      message=f"inconclusive: the untransformed solve failed ({a.status.code})", **common)
    if not b.success:
        return _failed(common, TOLERANCE_FACTOR, f"the transformed solve failed ({b.status.code}: {b.message})"
                       " where the original succeeded", details)
    err = scaled_error(as_numpy(b.ys)[-1], as_numpy(a.ys)[-1]) / (rtol + atol)
    ok = err <= TOLERANCE_FACTOR
    details["scaled_difference"] = err * (rtol + atol)
    msg = "" if ok else f"the solutions differ by {err:.3g} tolerances, but should be <= {TOLERANCE_FACTOR:g}"
    return Record(measured=err, expected=TOLERANCE_FACTOR, verdict="pass" if ok else "fail", message=msg,
                  details=details, **common)


def linear_superposition(problem: Problem, method: str, *, backend: str, n_steps: int = 16, seed: int = 0,
                         library: str = "numpy", dtype: str = "float64") -> Record:
    """For a linear field and fixed steps, y(a + b) = y(a) + y(b) to round-off
    (``ULPS_PER_STEP`` per step of the solution's scale); a and b are seeded random states."""
    common = _common("linear_superposition", problem, method, backend, library, dtype)
    if "linear" not in problem.tags:
        return Record(measured=None, expected=ULPS_PER_STEP, verdict="skip",
                      message="not applicable: the field is not linear", **common)
    if not method_info(method, backend=backend, library=library).fixed:
        return Record(measured=None, expected=ULPS_PER_STEP, verdict="skip",
                      message="not applicable: the method has no fixed-step mode", **common)
    rng = np.random.default_rng(seed)
    a, b = rng.standard_normal(problem.n), rng.standard_normal(problem.n)
    sols = [run(problem, method, backend=backend, library=library, dtype=dtype, y0=y, n_steps=n_steps)
            for y in (a, b, a + b)]
    details = _spec_details(problem, n_steps=n_steps, seed=seed, status=[s.status.code for s in sols])
    if not all(s.success for s in sols):
        return _failed(common, ULPS_PER_STEP, "a fixed-step solve of a linear problem failed", details)
    ya, yb, yab = (as_numpy(s.ys)[-1] for s in sols)
    scale = max(1.0, float(np.max(np.abs(ya))), float(np.max(np.abs(yb))))
    ulps = float(np.max(np.abs(yab - (ya + yb)))) / (scale * eps_of(dtype) * n_steps)
    ok = ulps <= ULPS_PER_STEP
    msg = "" if ok else f"y(a + b) - y(a) - y(b) = {ulps:.3g} ulps per step, but should be <= {ULPS_PER_STEP:g}"
    return Record(measured=ulps, expected=ULPS_PER_STEP, verdict="pass" if ok else "fail", message=msg,
                  details=details, **common)


def batch_permutation(problem: Problem, method: str, *, backend: str, batch: int = 4, seed: int = 0,
                      library: str = "numpy", dtype: str = "float64", rtol: float = 1e-6,
                      atol: float = 1e-9) -> Record:
    """A batch of initial values of different scales, permuted: the permuted batch gives the
    permuted solution, to the bit in per-sample mode (when the backend has it), else within
    ``TOLERANCE_FACTOR`` tolerances (the shared step's norm sums in another order)."""
    common = _common("batch_permutation", problem, method, backend, library, dtype)
    rng = np.random.default_rng(seed)
    scales = 10.0 ** rng.uniform(-1, 1, batch)
    y0 = np.asarray(problem.y0)[None, :] * scales[:, None] * (1 + 0.1 * rng.standard_normal((batch, problem.n)))
    perm = rng.permutation(batch)
    per_sample = backend_for(backend, library).capabilities().per_sample
    opts: dict[str, Any] = {"rtol": rtol, "atol": atol}
    if per_sample:
        opts["batch"] = "per-sample"
    a = run(problem, method, backend=backend, library=library, dtype=dtype, y0=y0, **opts)
    b = run(problem, method, backend=backend, library=library, dtype=dtype, y0=y0[perm], **opts)
    details = _spec_details(problem, batch=batch, seed=seed, per_sample=per_sample, permutation=perm.tolist(),
                            status=[a.status.code, b.status.code])
    if not a.success:
        return Record(measured=None, expected=None, verdict="skip", details=details,
                      message=f"inconclusive: the batch solve failed ({a.status.code})", **common)
    if not b.success:
        return _failed(common, None, f"the permuted batch failed ({b.status.code}) where the batch succeeded",
                       details)
    ya, yb = as_numpy(a.ys)[-1][perm], as_numpy(b.ys)[-1]
    if per_sample:
        diff = float(np.max(np.abs(ya - yb)))
        ok = diff == 0.0
        details["max_abs_diff"] = diff
        msg = "" if ok else f"per-sample steps, yet the permuted batch differs by {diff:.3e} (should be 0)"
        return Record(measured=diff, expected=0.0, verdict="pass" if ok else "fail", message=msg, details=details,
                      **common)
    err = scaled_error(yb, ya) / (rtol + atol)
    ok = err <= TOLERANCE_FACTOR
    details["scaled_difference"] = err * (rtol + atol)
    msg = "" if ok else f"the permuted batch differs by {err:.3g} tolerances, but should be <= {TOLERANCE_FACTOR:g}"
    return Record(measured=err, expected=TOLERANCE_FACTOR, verdict="pass" if ok else "fail", message=msg,
                  details=details, **common)


__all__ = ["batch_permutation", "default_baseline", "differential_agreement", "linear_superposition", "time_reversal",
           "time_rescaling", "time_shift", "unit_invariance"]
