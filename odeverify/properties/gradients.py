"""Gradient properties: every gradient mode of every backend graded against one oracle.

The oracle (:func:`gradient_oracle`) is, in order of preference:

1. a **closed form** for linear problems ``z' = A z`` (:func:`linear_closed_form`): with
   ``g_i = dL/dz(t_i)`` and ``τ_i = t_i - t0``,
   ``dL/dz0 = Σ_i expm(A τ_i)^T g_i`` and ``dL/dA = Σ_i ∫_0^τ_i e^{A^T(τ_i - s)} g_i z0^T e^{A^T s} ds``,
   the Fréchet derivative of ``expm``, read off Van Loan's block exponential
   ``expm([[A^T τ, g z0^T τ], [0, A^T τ]])`` (upper-right block; C. F. Van Loan, "Computing
   integrals involving the matrix exponential", IEEE TAC 23 (1978) 395-404). Exact up to
   ``expm``'s round-off;
2. the reference **forward mode** (``odeverify.gradients.value_and_grad(mode="forward")``)
   at rtol 1e-12, its error estimated by the change from rtol 1e-10 (when the reference
   gradient modes are installed);
3. **central finite differences** of a fixed-step DOP853 solve fine enough to be accurate to
   about 1e-12 (:func:`finite_difference_gradient`), which is a smooth map of its inputs
   (an adaptive solve is not: its step sequence jumps).

Finite differences (:func:`finite_difference_gradient`) take the step
``h_i = eps^(1/3) max(1, |x_i|)``, the standard choice balancing the truncation error
``h^2 |L'''| / 6`` against the round-off ``δ / h`` of a central difference (Press et al.,
Numerical Recipes, 3rd ed., §5.7; Dennis & Schnabel 1983, §5.6), and repeat the difference
at ``h/2`` (Richardson): the two agree to ``O(h^2)`` when the map is smooth. The estimate
returned is the ``h/2`` one with the error bound ``|D(h) - D(h/2)| + δ/h`` (the first term
bounds the truncation error of ``D(h/2)`` three times over, the second the round-off, ``δ``
being ``n_ops`` rounding errors of the loss: error bounds of a computation grow linearly in
its number of operations, Higham, Accuracy and Stability of Numerical Algorithms, ch. 3).
It is flagged unreliable when ``D(h)`` and ``D(h/2)`` differ by more than ``sqrt(eps)`` of the
gradient beyond that round-off: ``sqrt(eps)`` is what even a one-sided difference reaches on
a smooth map, so a central difference that misses it is differentiating a non-smooth one.

Properties (each returns :class:`~odeverify.records.Record` s):

- :func:`gradient_accuracy`: a mode against the oracle;
- :func:`discrete_gradient_exactness`: a discrete mode against finite differences of the same
  fixed-step solve (round-off agreement, threshold from eps and the FD error estimate);
- :func:`adjoint_convergence`: continuous-adjoint error across a tolerance sweep (rate and the
  continuous-vs-discrete gap); :func:`fixed_step_adjoint_gap`: that gap ~ h^p at fixed steps;
- :func:`reversibility_drift`: forward to T and back, ``|z0_rec - z0|`` against T and tolerance;
- :func:`memory_scaling`: peak memory of a gradient against the number of steps (one
  subprocess per point).
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .. import _xp
from ..backends.base import gradient_params, gradient_times
from ..gradients import GradientResult, Loss
from ..gradients._spec import mismatch_message
from ..integrate import solve
from ..metrics import loglog_slope
from ..problems import Problem
from ..problems.classic import _rhs_matrix
from ..records import Record
from ..solution import Status
from ._common import backend_for, method_info
from .tolerance import EXPONENT_BAND, expected_exponent

EPS = float(np.finfo(np.float64).eps)
#: relative accuracy a central difference must reach for its estimate to be trusted (see above)
FD_AGREEMENT = math.sqrt(EPS)
#: gradient error allowed of an adaptive solve, in units of rtol. An expanding neural field
#: showed 100x rtol in the gradient and in the forward solution alike (measured):
#: adaptive control bounds local, not global, error.
ACCURACY_FACTOR = 100.0
#: oracle tolerances of the forward-mode reference, and the looser one for its error estimate
ORACLE_RTOL, ORACLE_CHECK_RTOL = 1e-12, 1e-10
DEFAULT_TOLS = (1e-3, 1e-4, 1e-5, 1e-6, 1e-7, 1e-8, 1e-9)


# ============================================================================ helpers
def _relative(g: np.ndarray, ref: np.ndarray) -> float:
    scale = float(np.linalg.norm(ref))
    if not np.all(np.isfinite(g)):
        return math.inf
    return float(np.linalg.norm(g - ref)) / (scale if scale > 0 else 1.0)


def _pack(problem: Problem, y0: np.ndarray, params: dict[str, np.ndarray], wrt: str) -> np.ndarray:
    parts = [] if wrt == "params" else [np.ravel(y0)]
    if wrt != "y0":
        parts += [np.ravel(params[k]) for k in sorted(params)]
    return np.concatenate(parts) if parts else np.zeros(0)


def _unpack(x: np.ndarray, y0: np.ndarray, params: dict[str, np.ndarray], wrt: str
            ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    i = 0
    if wrt != "params":
        y0 = x[: y0.size].reshape(y0.shape)
        i = y0.size
    out = dict(params)
    if wrt != "y0":
        for k in sorted(params):
            size = params[k].size
            out[k] = x[i: i + size].reshape(params[k].shape)
            i += size
    return y0, out


def _result(kind: str, problem: Problem, y0: np.ndarray, params: dict[str, np.ndarray], flat: np.ndarray,
            wrt: str, loss_value: float, error: float, reliable: bool, **details: Any) -> GradientResult:
    g_y0, g_p = _unpack(flat, y0, params, wrt)
    return GradientResult(mode=f"oracle:{kind}", method="-", backend="oracle", library="numpy",
                          status=Status.SUCCESS, loss=loss_value, grad_y0=None if wrt == "params" else g_y0,
                          grad_params={} if wrt == "y0" else g_p,
                          details={"kind": kind, "error_estimate": float(error), "reliable": bool(reliable),
                                   **details})


def loss_scale(loss: Loss, ys: np.ndarray) -> float:
    """Σ |w_i| |y(t_i)| + q/2 |y|^2: the size of the terms the loss sums (its round-off scale)."""
    ys = np.asarray(ys, dtype=np.float64)
    w = np.abs(loss.weights[:, None, :] if ys.ndim == 3 else loss.weights)
    return float(np.sum(w * np.abs(ys)) + loss.quadratic_numpy(ys))


def numpy_loss_function(problem: Problem, loss: Loss, method: str, *, wrt: str = "all", y0: Any = None,
                        **solve_options: Any) -> tuple[Callable[[np.ndarray], tuple[float, float]], np.ndarray, int]:
    """``x -> (L, scale)`` for the packed inputs ``x`` (y0 and/or the float parameters), by the
    reference integrator on NumPy, with the starting point and the solve's step count."""
    y0n = np.asarray(problem.y0 if y0 is None else y0, dtype=np.float64)
    params = gradient_params(problem)
    structure = {k: v for k, v in problem.params.items() if k not in params}
    ts, rows = gradient_times(problem, loss)
    xp = _xp.get_namespace("numpy")
    steps = [0]

    def fun(x: np.ndarray) -> tuple[float, float]:
        y_init, p = _unpack(x, y0n, params, wrt)
        p = {**structure, **{k: (float(v) if v.ndim == 0 else v) for k, v in p.items()}}
        sol = solve(lambda t, y: problem.rhs(xp, t, y, p), y_init, problem.t_span, method=method, t_eval=ts,
                    **solve_options)
        if not sol.success:
            raise RuntimeError(f"finite differences: a perturbed solve failed ({sol.status.code}: {sol.message})")
        steps[0] = sol.stats.accepted
        ys = np.asarray(sol.ys)[rows]
        return loss.value_numpy(ys), loss_scale(loss, ys)

    x0 = _pack(problem, y0n, params, wrt)
    fun(x0)
    return fun, x0, steps[0]


def backend_loss_function(problem: Problem, loss: Loss, method: str, backend: str, *, wrt: str = "all",
                          y0: Any = None, **solve_options: Any
                          ) -> tuple[Callable[[np.ndarray], tuple[float, float]], np.ndarray, int]:
    """As :func:`numpy_loss_function`, by a backend's own forward solve (parameters perturbed
    through a copy of the problem)."""
    b = backend_for(backend)
    y0n = np.asarray(problem.y0 if y0 is None else y0, dtype=np.float64)
    params = gradient_params(problem)
    ts, rows = gradient_times(problem, loss)
    steps = [0]

    def fun(x: np.ndarray) -> tuple[float, float]:
        y_init, p = _unpack(x, y0n, params, wrt)
        prob = problem if wrt == "y0" else dataclasses.replace(
            problem, params={**problem.params, **{k: (float(v) if v.ndim == 0 else v) for k, v in p.items()}},
            references=())
        sol = b.solve(prob, method, y0=y_init, t_eval=ts, **solve_options)
        if not sol.success:
            raise RuntimeError(f"finite differences: a perturbed solve failed ({sol.status.code}: {sol.message})")
        steps[0] = sol.stats.accepted
        ys = _xp.to_numpy(sol.ys).astype(np.float64)[rows]
        return loss.value_numpy(ys), loss_scale(loss, ys)

    x0 = _pack(problem, y0n, params, wrt)
    fun(x0)
    return fun, x0, steps[0]


def mode_loss_function(problem: Problem, loss: Loss, method: str, mode: str, backend: str, *, wrt: str = "all",
                       y0: Any = None, **options: Any
                       ) -> tuple[Callable[[np.ndarray], tuple[float, float]], np.ndarray, int]:
    """As :func:`numpy_loss_function`, by the loss that a gradient mode's own forward pass
    computes: the very discrete map whose derivative a discrete mode claims (for diffrax the
    parameters are traced, so perturbing them reuses the compiled gradient)."""
    b = backend_for(backend)
    y0n = np.asarray(problem.y0 if y0 is None else y0, dtype=np.float64)
    params = gradient_params(problem)
    steps = [0]

    def fun(x: np.ndarray) -> tuple[float, float]:
        y_init, p = _unpack(x, y0n, params, wrt)
        prob = problem if wrt == "y0" else dataclasses.replace(problem, params={**problem.params, **p},
                                                               references=())
        r = b.gradient(prob, method, mode, loss, y0=y_init, wrt=wrt, **options)
        if not r.success:
            raise RuntimeError(f"finite differences: a perturbed gradient failed ({r.status.code}: {r.message})")
        steps[0] = max(r.steps_forward, 1)
        return r.loss, abs(r.loss)

    x0 = _pack(problem, y0n, params, wrt)
    fun(x0)
    return fun, x0, steps[0]


# ============================================================================ the oracle
def finite_difference_gradient(fun: Callable[[np.ndarray], tuple[float, float]], x: np.ndarray, *,
                               n_ops: int = 1) -> tuple[np.ndarray, float, bool, dict[str, Any]]:
    """Central differences with Richardson's check (see the module docstring).

    ``fun(x) -> (L, scale)``; ``n_ops`` counts the rounding errors of one evaluation of ``L``
    (the steps of an ODE solve). Returns the gradient (from ``h/2``), its estimated absolute
    error (2-norm), whether ``h`` and ``h/2`` agree, and the raw data.
    """
    x = np.asarray(x, dtype=np.float64)
    h = EPS ** (1 / 3) * np.maximum(1.0, np.abs(x))
    L0, scale = fun(x)

    def central(step: np.ndarray) -> np.ndarray:
        d = np.empty_like(x)
        for i in range(x.size):
            e = np.zeros_like(x)
            e[i] = step[i]
            d[i] = (fun(x + e)[0] - fun(x - e)[0]) / (2 * step[i])
        return d

    d1, d2 = central(h), central(h / 2)
    delta = max(n_ops, 1) * EPS * max(scale, abs(L0))
    roundoff = float(np.linalg.norm(delta / (h / 2)))
    diff = float(np.linalg.norm(d1 - d2))
    reliable = diff <= FD_AGREEMENT * float(np.linalg.norm(d2)) + 3 * roundoff
    return d2, diff + roundoff, reliable, {"h_max": float(h.max()), "richardson_diff": diff,
                                            "roundoff_bound": roundoff, "loss": L0, "loss_scale": scale}


def is_linear_matrix_problem(problem: Problem) -> bool:
    """``z' = A z`` with the matrix as the only parameter (problems.classic.linear_problem)."""
    return problem.rhs is _rhs_matrix and set(gradient_params(problem)) == {"A"}


def linear_closed_form(problem: Problem, loss: Loss, *, y0: Any = None, wrt: str = "all") -> GradientResult:
    """The exact gradient of ``loss`` for ``z' = A z`` (module docstring; Van Loan's block
    exponential for dL/dA)."""
    from scipy.linalg import expm

    if not is_linear_matrix_problem(problem):
        raise ValueError(f"problem {problem.name!r} is not z' = A z (classic.linear_problem); no closed form")
    A = np.asarray(problem.params["A"], dtype=np.float64)
    n = A.shape[0]
    z0 = np.asarray(problem.y0 if y0 is None else y0, dtype=np.float64)
    Z0 = np.atleast_2d(z0)  # (B, n)
    t0 = problem.t_span[0]
    g_z0 = np.zeros_like(Z0)
    g_A = np.zeros((n, n))
    ys = []
    for t, w in zip(loss.t_eval, loss.weights):
        tau = t - t0
        E = expm(A * tau)
        Z = Z0 @ E.T
        ys.append(Z)
        G = w + loss.quadratic * Z  # dL/dz(t_i), one row per sample
        g_z0 = g_z0 + G @ E
        block = np.zeros((2 * n, 2 * n))
        block[:n, :n] = A.T * tau
        block[n:, n:] = A.T * tau
        block[:n, n:] = (G.T @ Z0) * tau  # Σ_b g_b z0_b^T
        g_A = g_A + expm(block)[:n, n:]
    ys_arr = np.stack(ys) if z0.ndim == 2 else np.stack(ys)[:, 0]
    value = loss.value_numpy(ys_arr)
    g_y0 = g_z0.reshape(z0.shape)
    params = {"A": A}
    flat = _pack(problem, g_y0, {"A": g_A}, wrt)
    # expm is backward stable to about n eps ||A tau|| (Higham 2005); the sum over output times adds up
    err = n * EPS * float(np.linalg.norm(flat)) * max(1.0, float(np.linalg.norm(A)) * abs(problem.t_span[1] - t0))
    return _result("closed_form", problem, z0, params, flat, wrt, value, err, True)


def forward_mode_oracle(problem: Problem, loss: Loss, *, y0: Any = None, wrt: str = "all",
                        method: str = "dop853") -> GradientResult | None:
    """The reference forward mode at rtol 1e-12 (error: the change from rtol 1e-10); None when
    the reference gradient modes are not installed."""
    try:
        from ..gradients import value_and_grad
    except ImportError:
        return None
    y0n = np.asarray(problem.y0 if y0 is None else y0, dtype=np.float64)
    results = []
    for rtol in (ORACLE_RTOL, ORACLE_CHECK_RTOL):
        r = value_and_grad(problem, loss, mode="forward", method=method, library="torch", y0=y0n, rtol=rtol,
                           atol=rtol * 1e-2)
        if not r.success:
            return None
        results.append(r)
    best, check = results
    params = gradient_params(problem)
    flat = _pack(problem, best.grad_y0, best.grad_params, wrt)
    other = _pack(problem, check.grad_y0, check.grad_params, wrt)
    err = float(np.linalg.norm(flat - other))
    return _result("forward_mode", problem, y0n, params, flat, wrt, best.loss, err, True,
                   method=method, rtol=ORACLE_RTOL, nfev=best.nfev_forward + best.nfev_backward)


def fd_oracle(problem: Problem, loss: Loss, *, y0: Any = None, wrt: str = "all") -> GradientResult:
    """Finite differences of a fixed-step DOP853 solve with twice the steps an rtol 1e-11 solve
    takes (a smooth map; its discretization error is estimated from the loss at half the steps,
    which is 2^8 times less accurate)."""
    y0n = np.asarray(problem.y0 if y0 is None else y0, dtype=np.float64)
    ts, _ = gradient_times(problem, loss)
    xp = _xp.get_namespace("numpy")
    probe = solve(problem.vector_field(xp, np.float64), y0n, problem.t_span, method="dop853", rtol=1e-11,
                  atol=1e-13, t_eval=ts)
    if not probe.success:
        raise RuntimeError(f"fd_oracle: the rtol 1e-11 solve failed ({probe.status.code})")
    n_steps = 2 * max(probe.stats.accepted, 8)
    fun, x0, steps = numpy_loss_function(problem, loss, "dop853", wrt=wrt, y0=y0n, n_steps=n_steps)
    half, _, _ = numpy_loss_function(problem, loss, "dop853", wrt=wrt, y0=y0n, n_steps=n_steps // 2)
    grad, err, reliable, info = finite_difference_gradient(fun, x0, n_ops=steps)
    disc = abs(fun(x0)[0] - half(x0)[0]) / (2 ** 8 - 1)
    rel_disc = disc / max(abs(info["loss"]), info["loss_scale"], 1e-300)
    err += rel_disc * float(np.linalg.norm(grad))
    return _result("finite_difference", problem, y0n, gradient_params(problem), grad, wrt, info["loss"], err,
                   reliable, n_steps=n_steps, **info)


def gradient_oracle(problem: Problem, loss: Loss, *, y0: Any = None, wrt: str = "all",
                    prefer: Sequence[str] = ("closed_form", "finite_difference", "forward_mode")) -> GradientResult:
    """The first oracle of ``prefer`` that applies and is reliable, as a GradientResult whose
    ``details`` hold ``kind``, ``error_estimate`` (absolute, 2-norm) and ``reliable``; the last
    one tried is returned when none is reliable.

    Finite differences come before the forward mode by default because they are ~10x cheaper
    here (warped_oscillatory: 3 s against 41 s; mlp_tanh_2x16: 11 s against 67 s, 2 cores) and
    agree with it (relative 2e-10 and 1e-9); the forward mode takes over where h and h/2
    disagree (lorenz, whose sensitivities are large).
    """
    last = None
    for kind in prefer:
        if kind == "closed_form" and is_linear_matrix_problem(problem):
            return linear_closed_form(problem, loss, y0=y0, wrt=wrt)
        if kind == "forward_mode":
            last = forward_mode_oracle(problem, loss, y0=y0, wrt=wrt) or last
        if kind == "finite_difference":
            last = fd_oracle(problem, loss, y0=y0, wrt=wrt)
        if last is not None and last.details["reliable"]:
            return last
    if last is None:
        raise ValueError(f"no oracle of kinds {list(prefer)} applies to problem {problem.name!r}")
    return last


def default_loss(problem: Problem, *, times: int = 1, seed: int = 0) -> Loss:
    """Seeded weights at ``times`` output times (t1 last) and a quadratic term (q = 0.5)."""
    t0, t1 = problem.t_span
    ts = [t0 + (t1 - t0) * (i + 1) / times for i in range(times - 1)] + [t1]  # t1 exactly, not rounded past it
    return Loss.seeded(ts, problem.n, seed=seed)


# ============================================================================ properties
def _common(prop: str, problem: Problem, method: str, mode: str, backend: str, **extra: Any) -> dict[str, Any]:
    b = backend_for(backend)
    library = {"torchdiffeq": "torch", "diffrax": "jax"}.get(b.name, getattr(b, "library", "numpy"))
    return dict(property=prop, method=f"{method}/{mode}", problem=problem.name, backend=b.name,
                library=library, **extra)


def _state_scale(problem: Problem, loss: Loss) -> float:
    """min over the loss times of the RMS state (reference DOP853, rtol 1e-10), floored at tiny."""
    ts, rows = gradient_times(problem, loss)
    sol = solve(problem.vector_field(_xp.get_namespace("numpy"), np.float64), np.asarray(problem.y0, dtype=np.float64),
                problem.t_span, method="dop853", rtol=1e-10, atol=1e-14, t_eval=ts)
    ys = np.asarray(sol.ys, dtype=np.float64)[rows]
    rms = np.sqrt(np.mean(ys.reshape(len(rows), -1) ** 2, axis=1))
    return max(float(np.min(rms)), np.finfo(np.float64).tiny)


def gradient_accuracy(problem: Problem, method: str, mode: str, *, backend: str = "torchdiffeq",
                      loss: Loss | None = None, rtol: float = 1e-6, atol: float | None = None,
                      oracle: GradientResult | None = None, wrt: str = "all", **options: Any) -> Record:
    """Relative error ``|g - g*| / |g*|`` of the flat gradient (dL/dy0, dL/dθ) of an adaptive
    solve against the oracle; pass when it is within ``ACCURACY_FACTOR * (rtol + atol / |y|)``
    plus the oracle's own error. ``rtol + atol / |y|`` is the relative accuracy the mixed error
    test ``|err| <= atol + rtol |y|`` asks of a state of size ``|y|`` (the smallest RMS state at
    the loss times, from a reference DOP853 solve at rtol 1e-10): a solution that decays far
    below ``atol / rtol`` is only resolved to ``atol``, and so is its derivative."""
    loss = loss or default_loss(problem)
    oracle = oracle or gradient_oracle(problem, loss, wrt=wrt)
    atol = rtol * 1e-3 if atol is None else atol
    res = backend_for(backend).gradient(problem, method, mode, loss, rtol=rtol, atol=atol, wrt=wrt, **options)
    ref = oracle.flat()
    oracle_rel = oracle.details["error_estimate"] / max(float(np.linalg.norm(ref)), 1e-300)
    y_scale = _state_scale(problem, loss)
    expected = ACCURACY_FACTOR * (rtol + atol / y_scale) + oracle_rel
    details = {"rtol": rtol, "atol": atol, "oracle": oracle.details["kind"], "oracle_rel_error": oracle_rel,
               "state_scale": y_scale, "result": res.to_dict(), "oracle_reliable": oracle.details["reliable"],
               "adjoint_mismatch": res.adjoint_mismatch}
    common = _common("gradient_accuracy", problem, method, mode, backend, expected=expected, details=details)
    if not res.success:
        return Record(measured=None, verdict="error", status=res.status.code, message=res.message, **common)
    err = _relative(res.flat(), ref)
    unreliable = mismatch_message(res.adjoint_mismatch)  # a lost reconstruction is named, whatever the verdict
    if not oracle.details["reliable"]:
        return Record(measured=err, verdict="skip", message="; ".join(filter(None, (
            "the finite-difference oracle is unreliable (h and h/2 disagree)", unreliable))), **common)
    ok = err <= expected
    return Record(measured=err, verdict="pass" if ok else "fail", message="; ".join(filter(None, (
        "" if ok else f"gradient error {err:.3g} > {expected:.3g} ({ACCURACY_FACTOR:g} (rtol + atol/|y|) + oracle"
        " error)", unreliable))), **common)


def discrete_gradient_exactness(problem: Problem, method: str, mode: str, *, backend: str = "torchdiffeq",
                                loss: Loss | None = None, n_steps: int = 16, wrt: str = "all",
                                **options: Any) -> Record:
    """A discrete mode on a fixed-step solve against central differences of the *same* solve
    (the loss computed by the mode's own forward pass, :func:`mode_loss_function`). Threshold: the FD error estimate plus ``N eps |g|`` (round-off of
    the ``N``-step gradient itself) — no free constant."""
    b = backend_for(backend)
    loss = loss or default_loss(problem)
    caps = b.capabilities()
    common = _common("discrete_gradient_exactness", problem, method, mode, backend, expected=None,
                     details={"n_steps": n_steps})
    if mode not in caps.discrete_gradient_modes:
        return Record(measured=None, verdict="skip", message=f"{mode!r} is not a discrete mode of {b.name}"
                      f" (discrete: {', '.join(caps.discrete_gradient_modes) or 'none'})", **common)
    res = b.gradient(problem, method, mode, loss, n_steps=n_steps, wrt=wrt, **options)
    if not res.success:
        return Record(measured=None, verdict="error", status=res.status.code, message=res.message, **common)
    fun, x0, steps = mode_loss_function(problem, loss, method, mode, backend, wrt=wrt, n_steps=n_steps, **options)
    source = f"{b.name} {method}/{mode}: the loss of its own forward pass"
    fd, fd_err, reliable, fd_info = finite_difference_gradient(fun, x0, n_ops=steps)
    g = res.flat()
    scale = max(float(np.linalg.norm(fd)), 1e-300)
    err = _relative(g, fd)
    expected = (fd_err + n_steps * EPS * scale) / scale
    common.update(expected=expected)
    common["details"].update({"fd_source": source, "fd_error": fd_err, "fd_reliable": reliable, **fd_info,
                              "nfev_forward": res.nfev_forward, "nfev_backward": res.nfev_backward})
    if not reliable:
        return Record(measured=err, verdict="skip", message="finite differences unreliable (h and h/2 disagree)",
                      **common)
    ok = err <= expected
    return Record(measured=err, verdict="pass" if ok else "fail",
                  message="" if ok else f"discrete gradient differs from FD of the same solve by {err:.3g}"
                  f" > {expected:.3g}", **common)


def adjoint_convergence(problem: Problem, method: str, mode: str, *, backend: str = "torchdiffeq",
                        loss: Loss | None = None, tols: Sequence[float] = DEFAULT_TOLS,
                        discrete_mode: str | None = None, oracle: GradientResult | None = None,
                        wrt: str = "all", band: float = EXPONENT_BAND, **options: Any) -> Record:
    """Gradient error of ``mode`` against the oracle over a sweep rtol = adjoint_rtol = tol
    (atol = tol * 1e-3): it must fall to 0 at least at the forward solve's tolerance exponent
    (``expected_exponent``, minus the band of the tolerance property). With ``discrete_mode``
    the gap ``|g_mode - g_discrete| / |g_discrete|`` is recorded per tolerance."""
    b = backend_for(backend)
    loss = loss or default_loss(problem)
    oracle = oracle or gradient_oracle(problem, loss, wrt=wrt)
    ref = oracle.flat()
    floor = oracle.details["error_estimate"] / max(float(np.linalg.norm(ref)), 1e-300)
    try:
        expected = expected_exponent(method, backend=b.name if not b.name.startswith("reference") else "reference")
    except ValueError:
        expected = None
    errs, gaps, nfe_f, nfe_b, statuses = [], [], [], [], []
    for tol in tols:
        r = b.gradient(problem, method, mode, loss, rtol=tol, atol=tol * 1e-3, wrt=wrt, **options)
        statuses.append(r.status.code)
        errs.append(_relative(r.flat(), ref) if r.success else math.inf)
        nfe_f.append(r.nfev_forward)
        nfe_b.append(r.nfev_backward)
        if discrete_mode is not None:
            d = b.gradient(problem, method, discrete_mode, loss, rtol=tol, atol=tol * 1e-3, wrt=wrt, **options)
            gaps.append(_relative(r.flat(), d.flat()) if r.success and d.success else math.inf)
    e, t = np.asarray(errs), np.asarray(tols, dtype=np.float64)
    # keep errors well above what the oracle can resolve (10x its error estimate)
    keep = np.isfinite(e) & (e > 10 * floor)
    details = {"tols": list(tols), "errors": errs, "gap_to_discrete": gaps, "discrete_mode": discrete_mode,
               "nfev_forward": nfe_f, "nfev_backward": nfe_b, "statuses": statuses, "oracle": oracle.details["kind"],
               "oracle_floor": floor, "band": band}
    common = _common("adjoint_convergence", problem, method, mode, backend, expected=expected, details=details)
    if any(s != "success" for s in statuses):
        return Record(measured=None, verdict="error", status=next(s for s in statuses if s != "success"),
                      message="a gradient of the sweep failed", **common)
    if keep.sum() < 3:
        return Record(measured=None, verdict="skip", message="fewer than 3 errors above the oracle's resolution",
                      **common)
    slope = loglog_slope(t[keep], e[keep])
    details["fitted_tols"] = t[keep].tolist()
    if expected is None:
        return Record(measured=slope, verdict="skip", message="no theoretical tolerance exponent", **common)
    ok = slope >= expected - band and e[keep][-1] < e[keep][0]
    return Record(measured=slope, verdict="pass" if ok else "fail",
                  message="" if ok else f"gradient error exponent {slope:.3f} < {expected:.3f} - {band}", **common)


def fixed_step_adjoint_gap(problem: Problem, method: str, mode: str, discrete_mode: str, *,
                           backend: str = "torchdiffeq", loss: Loss | None = None,
                           n_steps: Sequence[int] = (8, 16, 32, 64), wrt: str = "all",
                           band: float = EXPONENT_BAND, **options: Any) -> Record:
    """At fixed steps the continuous adjoint (solved on the same grid backward) and the exact
    derivative of the discrete solution differ by O(h^p): the fitted slope of the gap against
    h must be the method's order p (within the band of the tolerance property). As for the
    convergence order, only steps with h ρ <= 1 (ρ: spectral radius of df/dy along the
    trajectory) are swept: coarser ones measure the backward solve's instability, not its
    order; a slope above p + band is inconclusive (``skip``), never a pass."""
    from ._common import spectral_radius_bound

    b = backend_for(backend)
    info = b.capabilities().method(method, b.name)
    loss = loss or default_loss(problem)
    span = abs(problem.t_span[1] - problem.t_span[0])
    rho = spectral_radius_bound(problem)
    resolved = [n for n in n_steps if span / n * rho <= 1.0]
    dropped = [n for n in n_steps if n not in resolved]
    n_steps = resolved
    gaps, statuses = [], []
    for n in n_steps:
        c = b.gradient(problem, method, mode, loss, n_steps=n, wrt=wrt, **options)
        d = b.gradient(problem, method, discrete_mode, loss, n_steps=n, wrt=wrt, **options)
        statuses.append(c.status.code if not c.success else d.status.code)
        gaps.append(_relative(c.flat(), d.flat()) if c.success and d.success else math.inf)
    h = np.asarray([span / n for n in n_steps])
    g = np.asarray(gaps)
    floor = 1e3 * EPS  # a gap at round-off carries no slope
    keep = np.isfinite(g) & (g > floor)
    details = {"n_steps": list(n_steps), "gap": gaps, "statuses": statuses, "discrete_mode": discrete_mode,
               "rho": rho, "dropped_n_steps": dropped}
    common = _common("fixed_step_adjoint_gap", problem, method, mode, backend, expected=float(info.order),
                     details=details)
    if any(s != "success" for s in statuses):
        return Record(measured=None, verdict="error", status=next(s for s in statuses if s != "success"),
                      message="a gradient of the sweep failed", **common)
    if len(n_steps) < 3:
        return Record(measured=None, verdict="skip", message=f"fewer than 3 of the steps resolve the fastest scale"
                      f" (h rho <= 1, rho = {rho:.3g}): pass more n_steps", **common)
    if keep.sum() < 3:
        return Record(measured=float(np.max(g)), verdict="skip", message="the gap is at round-off: here this mode is"
                      " the exact derivative of the fixed-step solve (forward-mode differentiation through the steps,"
                      " or an adjoint that commutes with the method, as on linear autonomous problems)", **common)
    slope = loglog_slope(h[keep], g[keep])
    if slope > info.order + band:
        return Record(measured=slope, verdict="skip", message=f"gap ~ h^{slope:.2f}, above the order"
                      f" {info.order}: not yet asymptotic (inconclusive)", **common)
    ok = abs(slope - info.order) <= band
    return Record(measured=slope, verdict="pass" if ok else "fail",
                  message="" if ok else f"gap ~ h^{slope:.2f}, expected h^{info.order}", **common)


def reversibility_drift(problem: Problem, method: str, *, backend: str = "reference",
                        horizons: Sequence[float] = (0.5, 1.0, 2.0), rtols: Sequence[float] = (1e-4, 1e-8),
                        n_steps: int | None = None, mode: str | None = None) -> Record:
    """Integrate forward to ``t0 + T`` and back to ``t0``: ``|z0_rec - z0| / max(1, |z0|)`` for
    each horizon T (multiples of the problem's span) and tolerance (or at ``n_steps`` fixed
    steps). A measurement: a non-reversible method claims nothing (``skip``, data in details);
    the drift of a dissipative problem grows like exp(|λ| T) (the backsolve's pitfall).

    Algebraically reversible methods reconstruct through their inverse step and claim round-off
    (pass when every drift is below :data:`RECONSTRUCTION_THRESHOLD`): a reversible gradient
    ``mode`` of the reference (its ``adjoint_mismatch``), or diffrax's ``ReversibleHeun``
    restarted from its final solver state; both need ``n_steps``."""
    b = backend_for(backend)
    t0, t1 = problem.t_span
    y0 = np.asarray(problem.y0, dtype=np.float64)
    rows = []
    reversible = mode is not None or (b.name == "diffrax" and method == "ReversibleHeun")
    if reversible and n_steps is None:
        raise ValueError(f"n_steps=None, but the algebraic reconstruction of {method!r} needs a fixed number of steps")
    settings = [{"n_steps": n_steps}] if n_steps is not None else [{"rtol": r, "atol": r * 1e-3} for r in rtols]
    for T in horizons:
        t_end = t0 + T * (t1 - t0)
        fwd_p = dataclasses.replace(problem, t_span=(t0, t_end), references=())
        if reversible:
            if mode is not None:
                r = b.gradient(fwd_p, method, mode, Loss.seeded([t_end], problem.n, seed=0), n_steps=n_steps,
                               wrt="y0")
                drift = r.adjoint_mismatch if r.success and r.adjoint_mismatch is not None else math.inf
            else:
                from ..backends.diffrax_gradients import reversible_reconstruction

                drift = reversible_reconstruction(fwd_p, n_steps)
            rows.append({"T": T, "n_steps": n_steps, "drift": drift, "status": "success"})
            continue
        for opts in settings:
            fwd = b.solve(fwd_p, method, **opts)
            if not fwd.success:
                rows.append({"T": T, **opts, "drift": math.inf, "status": fwd.status.code})
                continue
            yT = _xp.to_numpy(fwd.ys)[-1].astype(np.float64)
            back_p = dataclasses.replace(problem, y0=tuple(yT), t_span=(t_end, t0), references=())
            back = b.solve(back_p, method, **opts)
            y_rec = _xp.to_numpy(back.ys)[-1].astype(np.float64) if back.success else np.full_like(y0, np.inf)
            drift = float(np.max(np.abs(y_rec - y0)) / max(1.0, float(np.max(np.abs(y0)))))
            rows.append({"T": T, **opts, "drift": drift, "status": back.status.code})
    worst = max(r["drift"] for r in rows)
    common = dict(property="reversibility_drift", method=method if mode is None else f"{method}/{mode}",
                  problem=problem.name, backend=b.name, details={"rows": rows, "tags": sorted(problem.tags)})
    if reversible:
        ok = worst <= RECONSTRUCTION_THRESHOLD
        return Record(measured=worst, expected=RECONSTRUCTION_THRESHOLD, verdict="pass" if ok else "fail",
                      message="" if ok else f"an algebraically reversible method drifted by {worst:.3g}", **common)
    return Record(measured=worst, expected=None, verdict="skip", message="measured: forward-backward reconstruction"
                  " is not claimed by a non-reversible method", **common)


#: reconstruction error separating "reconstructs" from "does not": round-off is ~n eps
#: (1e-14 here), an unstable reconstruction grows like |mu|^n (>= 1 within the sweep); sqrt(eps)
#: lies far from both, so the map does not depend on it
RECONSTRUCTION_THRESHOLD = math.sqrt(EPS)


def reversible_stability_region(mode: str, *, backend: str = "reference-torch", method: str = "heun",
                                re: Sequence[float] = tuple(np.linspace(-1.5, 0.5, 9)),
                                im: Sequence[float] = tuple(np.linspace(0.0, 2.0, 9)), n_steps: int = 64,
                                h: float = 0.1) -> Record:
    """Empirical stability region of an algebraically reversible method: for z = h λ on a grid
    (λ = a ± ib, ``z' = A z`` with that spectrum), integrate ``n_steps`` steps of size ``h``
    forward and reconstruct backward through the method's inverse; the cell is stable when the
    reconstruction error (``adjoint_mismatch``) stays below :data:`RECONSTRUCTION_THRESHOLD`.
    ``measured`` is the fraction of stable cells (a map; no claim, verdict ``skip``)."""
    from ..problems.classic import linear_problem

    b = backend_for(backend)
    stable, mismatch = [], []
    for a in re:
        row_s, row_m = [], []
        for bb in im:
            lam = [complex(a, bb) / h, complex(a, -bb) / h] if bb > 0 else [a / h, a / h]
            p = linear_problem(lam, seed=0, t_span=(0.0, n_steps * h))
            r = b.gradient(p, method, mode, Loss.seeded([n_steps * h], p.n, seed=0), n_steps=n_steps, wrt="y0")
            m = r.adjoint_mismatch if r.success and r.adjoint_mismatch is not None else math.inf
            row_m.append(m)
            row_s.append(bool(m <= RECONSTRUCTION_THRESHOLD))
        stable.append(row_s)
        mismatch.append(row_m)
    frac = float(np.mean(stable))
    return Record(property="reversible_stability_region", method=f"{method}/{mode}", problem="z'=lambda z",
                  measured=frac, expected=None, verdict="skip", backend=b.name,
                  message="measured map of h*lambda where the reversible reconstruction holds",
                  details={"re": list(re), "im": list(im), "stable": stable, "mismatch": mismatch,
                           "n_steps": n_steps, "h": h, "threshold": RECONSTRUCTION_THRESHOLD})


def reversible_use(problem: Problem, mode: str, n_steps: int, region: Record) -> Record:
    """Whether every h λ of the problem (eigenvalues of df/dy along the trajectory, central
    differences) lies in a stable cell of ``region`` (nearest cell); ``fail`` names those outside."""
    from ._common import trajectory_samples

    f = problem.vector_field(_xp.get_namespace("numpy"), np.float64)
    h = abs(problem.t_span[1] - problem.t_span[0]) / n_steps
    ys, ts = trajectory_samples(problem, 8)
    zs = []
    for t, y in zip(ts, ys):
        J = np.empty((y.size, y.size))
        for j in range(y.size):
            d = 1e-6 * max(1.0, abs(y[j]))
            e = np.zeros(y.size)
            e[j] = d
            J[:, j] = (np.asarray(f(np.asarray(t), y + e)) - np.asarray(f(np.asarray(t), y - e))) / (2 * d)
        zs.extend(h * np.linalg.eigvals(J))
    re, im = np.asarray(region.details["re"]), np.asarray(region.details["im"])
    stable = np.asarray(region.details["stable"])
    outside = []
    for z in zs:
        i, j = int(np.argmin(np.abs(re - z.real))), int(np.argmin(np.abs(im - abs(z.imag))))
        inside_grid = re.min() <= z.real <= re.max() and abs(z.imag) <= im.max()
        if not inside_grid or not stable[i, j]:
            outside.append(complex(z))
    ok = not outside
    return Record(property="reversible_use", method=region.method, problem=problem.name, measured=float(len(outside)),
                  expected=0.0, verdict="pass" if ok else "fail", backend=region.backend,
                  message="" if ok else f"h*lambda outside the measured stability region: "
                  f"{', '.join(f'{z:.3g}' for z in sorted(set(outside), key=abs)[:4])}",
                  details={"h": h, "n_steps": n_steps, "h_lambda": [[z.real, z.imag] for z in zs]})


# ---------------------------------------------------------------------------- memory
_MEMORY_SCRIPT = r"""
import json, sys
import numpy as np
spec = json.loads(sys.argv[1])
from odeverify import backends
from odeverify.gradients import Loss
from odeverify.problems.neural import mlp_field, mlp_batch_y0
import torch
torch.set_num_threads(1)
if spec["as_system"]:  # the batch as one system (one shared step size in every library)
    p = mlp_field(spec["state"], spec["hidden"], 2, "tanh", seed=2, t_span=(0.0, spec["T"]), batch=spec["batch"])
    y0 = None
else:
    p = mlp_field(spec["state"], spec["hidden"], 2, "tanh", seed=2, t_span=(0.0, spec["T"]))
    y0 = mlp_batch_y0(p, spec["batch"], 0)
loss = Loss.seeded([spec["T"]], p.n, seed=0)
b = backends.get(spec["backend"])
steps = {} if spec["n_steps"] is None else {"n_steps": spec["n_steps"]}
# the baseline: everything loaded, one cheap forward solve done (fixed-step or adaptive method),
# and each mode run once on a tiny field, so that one-off costs (lazy imports, autograd set-up,
# ~40 MiB for odeint_adjoint's first call) are not charged to the gradient measured
info = b.capabilities().method(spec["method"], b.name)
b.solve(p, spec["method"], y0=y0, **({"n_steps": 1} if info.fixed else {"rtol": 1e-2, "atol": 1e-2}))
tiny = mlp_field(2, 4, 2, "tanh", seed=2, t_span=(0.0, spec["T"]))
for mode in spec["modes"]:
    b.gradient(tiny, spec["method"], mode, Loss.seeded([spec["T"]], 2, seed=0), **steps, **spec.get("options", {}))
def peak_kib():
    # VmHWM: this process's own high-water mark. ru_maxrss is not: Linux carries the parent's
    # peak over fork and exec, so a child of a large process reads the parent's size.
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:"))
before = peak_kib()
peaks, codes = [], []
for mode in spec["modes"]:  # peak RSS after each, in order (it never decreases)
    r = b.gradient(p, spec["method"], mode, loss, y0=y0, **steps, **spec.get("options", {}))
    codes.append(r.status.code)
    peaks.append(peak_kib())
print(json.dumps({"maxrss_kib": peaks, "before_kib": before, "status": codes}))
"""


def peak_memory(backend: str, method: str, modes: str | Sequence[str], n_steps: int | None, *, state: int = 8,
                hidden: int = 64, batch: int = 64, T: float = 1.0, as_system: bool = False, timeout: float = 600.0,
                **options: Any) -> dict[str, Any]:
    """Peak RSS (``VmHWM`` of /proc/self/status, bytes) of gradients on an MLP field in one fresh
    subprocess:
    ``baseline_bytes`` after the imports, the problem and a one-step forward solve, then the
    peak after each mode of ``modes`` in turn (a list; a peak never decreases, so a later
    mode shows only what it needs beyond the earlier ones). ``n_steps=None``: adaptive, with
    ``options`` (rtol, atol); ``as_system``: the batch solved as one system (``mlp_field(batch=)``).

    For PyTorch backends. A jitted backend's first call also compiles (diffrax: hundreds of
    MiB), and a second reuses the first one's buffers: its gradients report XLA's buffer plan
    in ``GradientResult.memory`` instead."""
    modes = [modes] if isinstance(modes, str) else list(modes)
    spec = {"backend": backend, "method": method, "modes": modes, "n_steps": n_steps, "state": state,
            "hidden": hidden, "batch": batch, "T": T, "as_system": as_system, "options": options}
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    out = subprocess.run([sys.executable, "-c", _MEMORY_SCRIPT, json.dumps(spec)], capture_output=True, text=True,
                         timeout=timeout, env=env)
    if out.returncode != 0:
        raise RuntimeError(f"memory subprocess failed: {out.stderr[-500:]}")
    data = json.loads(out.stdout.strip().splitlines()[-1])
    return {"baseline_bytes": 1024 * data["before_kib"], "peak_rss_bytes": [1024 * v for v in data["maxrss_kib"]],
            "status": data["status"]}


#: a bounded-memory mode grows by less than this fraction of a linear-memory mode's growth over
#: a tenfold sweep of steps: an order of magnitude, i.e. not proportional to the steps at all
BOUNDED_FRACTION = 0.1


def _xla_memory(method: str, mode: str, n_steps: int, *, state: int = 8, hidden: int = 64, batch: int = 64,
                T: float = 1.0) -> float:
    from ..problems.neural import mlp_batch_y0, mlp_field

    p = mlp_field(state, hidden, 2, "tanh", seed=2, t_span=(0.0, T))
    r = backend_for("diffrax").gradient(p, method, mode, Loss.seeded([T], p.n, seed=0), y0=mlp_batch_y0(p, batch, 0),
                                        n_steps=n_steps, count_nfev=False)
    return r.memory.get("xla_temp_bytes", math.nan)


def memory_scaling(backend: str, method: str, modes: Sequence[str], *, n_steps: Sequence[int] = (20, 200),
                   bounded_modes: Sequence[str] = (), **kwargs: Any) -> list[Record]:
    """Peak RSS above its process's baseline, one subprocess per (mode, steps) (diffrax: XLA's
    buffer plan of each compiled gradient). A mode in
    ``bounded_modes`` (backsolve, checkpointing with a budget, reversible) must grow by less
    than a tenth of what the largest-growing mode grows over the same tenfold sweep (a
    discrete mode stores every stage, ~linear in steps)."""
    growth: dict[str, list[float]] = {}
    base = math.nan
    for mode in modes:
        if backend == "diffrax":  # jitted: XLA's buffer plan of each compiled gradient (see peak_memory)
            growth[mode] = [_xla_memory(method, mode, n, **kwargs) for n in n_steps]
            continue
        runs = [peak_memory(backend, method, mode, n, **kwargs) for n in n_steps]
        growth[mode] = [r["peak_rss_bytes"][0] - r["baseline_bytes"] for r in runs]
        base = runs[0]["baseline_bytes"]
    grow = {m: g[-1] - g[0] for m, g in growth.items()}
    largest = max(grow.values())
    records = []
    for mode in modes:
        details = {"n_steps": list(n_steps), "rss_above_baseline_bytes": growth[mode], "baseline_bytes": base,
                   "growth_bytes": grow[mode], "largest_growth_bytes": largest, "bounded_claim": mode in bounded_modes}
        ratio = grow[mode] / largest if largest > 0 else 0.0
        if largest <= 0:
            verdict, msg = "skip", ("no mode's memory grew over the sweep (static buffers, e.g. diffrax's sized by"
                                    " max_steps): nothing to compare")
        elif mode in bounded_modes:
            ok = ratio < BOUNDED_FRACTION
            verdict = "pass" if ok else "fail"
            msg = "" if ok else f"memory grew {grow[mode] / 2**20:.1f} MiB over the sweep ({ratio:.2f} of the largest)"
        else:
            verdict, msg = "skip", "measured (no bound claimed)"
        records.append(Record(property="memory_scaling", method=f"{method}/{mode}", problem="mlp", measured=ratio,
                              expected=BOUNDED_FRACTION if mode in bounded_modes else None, verdict=verdict,
                              message=msg,
                              backend=backend, details=details))
    return records


__all__ = ["finite_difference_gradient", "linear_closed_form", "forward_mode_oracle", "fd_oracle", "gradient_oracle",
           "default_loss", "gradient_accuracy", "discrete_gradient_exactness", "adjoint_convergence",
           "fixed_step_adjoint_gap", "reversibility_drift", "memory_scaling", "peak_memory",
           "reversible_stability_region", "reversible_use", "mode_loss_function",
           "numpy_loss_function", "backend_loss_function", "is_linear_matrix_problem", "loss_scale"]
