"""Gradients of a continuous normalizing flow's log-likelihood (issue 11, "Flows", gradients):
dNLL/dθ (the field's parameters) and dNLL/dx (the data) of every gradient mode of a backend,
graded against an oracle.

The loss is the negative log-likelihood of a batch of data points
(:func:`odeverify.properties.flows.nll_loss`, a :class:`~odeverify.gradients.Loss` at ``t0`` of
the density solve, up to the constant :meth:`~odeverify.problems.flows.CNFProblem.nll_constant`),
so every backend and gradient mode takes it unchanged. θ are the field's float-array
parameters (:func:`~odeverify.backends.base.gradient_params`; Python-scalar parameters such as
the linear field's ``alpha`` and the sine field's ``a`` are constants); x is the batch
(the first ``dim`` columns of dL/dy0; dL/dl(t1) is 1 identically and not graded).

The oracle (:func:`cnf_gradient_oracle`) is

- for a CNF with a closed-form flow (an affine field ``(1 + alpha t)(A z + b)``, the sine
  field ``a sin z``) and an exact trace (jacobian, jvp, autodiff): **complex-step
  differentiation** (Squire & Trapp, SIAM Review 40 (1998) 110-112; Martins, Sturdza & Alonso,
  ACM TOMS 29 (2003) 245-262) of the exact NLL, written here again from the closed form
  (``scipy.linalg.expm`` of the affine generator; the sine field's ``tan(z/2)`` law and its
  derivative at ``x``), so it shares no code with the trace path nor with the problem's own
  ``flow``/``log_det``. ``dF/dp = Im F(p + i h e) / h`` has no subtractive cancellation, so at
  ``h = 1e-30`` its truncation ``O(h^2)`` is nil and its error is the round-off of evaluating
  F: bounded here by ``(B + dim + 1) eps |g| max(1, Lip |t1 - t0|)`` (the batch sum, and
  ``expm``'s backward error ``~ n eps |M S|`` as in
  :func:`~odeverify.properties.gradients.linear_closed_form`). Every evaluation is analytic in
  its inputs (Padé approximants of ``expm``, ``tan``, ``arctan``, ``log`` of a positive real
  part; the branch choices of ``expm`` and of the sine field's cell index read only real parts
  or norms that a ``1e-30`` imaginary part does not move); ``tests/test_flow_gradients.py``
  checks complex-step against Richardson central differences
  (:func:`~odeverify.properties.gradients.finite_difference_gradient`) on every closed form;
- for the MLP CNFs (any exact trace without a closed form): the reference **forward mode**
  (:func:`~odeverify.properties.gradients.forward_mode_oracle`: forward sensitivities at rtol
  1e-12, error estimated by the change from rtol 1e-10) on the density problem with the
  analytic-Jacobian trace, whatever exact trace is graded (jvp and autodiff have the same NLL,
  so a slip in a hand-written product or in the autodiff trace shows against it);
- for the Hutchinson trace: the gradient of the *same* estimator with the *same* fixed probes,
  by the reference ``discrete`` mode (torch, DOP853) at rtol 1e-12, error estimated by the
  change from rtol 1e-10. The estimator's expectation is not the target: a gradient check
  grades the derivative of the computation, and the estimator is that computation.

:func:`cnf_gradient_accuracy` grades a backend's mode at ``rtol``: the relative errors of
dNLL/dθ and dNLL/dx (each block against the oracle's; ``measured`` is the larger), passing
within ``ACCURACY_FACTOR * (rtol + atol / |y|) + oracle error``, the rule of
:func:`~odeverify.properties.gradients.gradient_accuracy` (``|y|``: the smallest RMS state at
t0 over the batch). A failed gradient is an ``error`` record with the backend's status and
message; for the ``autodiff`` trace (forward-mode autodiff inside the field, so a reverse or
adjoint gradient differentiates twice) the message names that.
:func:`cnf_gradient_records` runs a backend's modes over the CNF problems (for conformance).

diffrax maps a batch's solve over the samples (``jax.vmap``) with the parameters shared, so
per-sample Hutchinson probes cannot reach their sample: there the batch's gradient is the sum
of one gradient per data point with its own probes (the NLL is a sum over the batch). The
oracle's fixed-step-only modes (``mali``) have no accuracy at a tolerance: ``skip``.

Measured (``python benchmarks/flow_gradient_errors.py``, rtol 1e-6, atol 1e-9): every mode of
the reference (PyTorch and JAX), torchdiffeq and diffrax on cnf_linear2, cnf_linear8,
cnf_sine1, cnf_mlp2 (exact traces, and the Hutchinson and autodiff traces) is within 5e-6
of the oracle in dNLL/dθ and in dNLL/dx, against a bound of 1e-4.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from .. import expectations
from ..backends.base import gradient_params
from ..gradients import GRADIENT_MODES, GradientResult
from ..gradients._spec import mismatch_message
from ..problems import Problem
from ..problems.flows import CNF_PROBLEMS, CNFProblem
from ..records import Record, unavailable_record
from ..solution import Status
from ._common import backend_for
from .flows import nll_loss
from .gradients import (ACCURACY_FACTOR, EPS, ORACLE_CHECK_RTOL, ORACLE_RTOL, _relative, _state_scale,
                        forward_mode_oracle)

#: the complex step (any h with h^2 |F'''| far below eps |F'| and h |F'| above the smallest
#: normal number works; the result does not depend on it)
COMPLEX_STEP = 1e-30
#: the adaptive method each backend's gradients are graded with
FLOW_GRADIENT_METHODS = {"torchdiffeq": "dopri5", "diffrax": "Dopri5"}
DEFAULT_FLOW_GRADIENT_METHOD = "dopri5"
#: the CNF problems of cnf_gradient_records: (problem, trace, data rows or None for all);
#: quick keeps a closed form and an MLP on two data points
FLOW_GRADIENT_CASES = (("cnf_linear2", "jacobian", None), ("cnf_linear8", "jacobian", None),
                       ("cnf_sine1", "jacobian", None), ("cnf_mlp2", "jacobian", None),
                       ("cnf_linear2", "hutchinson", None), ("cnf_linear2", "autodiff", None),
                       ("cnf_mlp2", "hutchinson", 2), ("cnf_mlp2", "autodiff", 2))
#: backends whose gradient maps the solve over a batch (``jax.vmap``) with the parameters
#: shared, so that per-sample Hutchinson probes (shape ``(k, B, dim)``) cannot reach their
#: sample inside the field: their Hutchinson gradients are taken one data point at a time
#: (:func:`_gradient_by_sample`) with the same probes
VMAPPED_BATCH_BACKENDS = ("diffrax",)
#: the oracles of :func:`cnf_gradient_oracle`
ORACLE_KINDS = ("complex_step", "forward_mode", "discrete_tight")
QUICK_FLOW_GRADIENT_CASES = (("cnf_linear2", "jacobian", None), ("cnf_mlp2", "jacobian", 2))


# ============================================================================ closed forms
def _logpdf(cnf: CNFProblem, z: np.ndarray) -> np.ndarray:
    """log N(z; mean, diag std^2), complex-safe (``u * u``, not ``|u|^2``)."""
    m, s = np.asarray(cnf.base.mean), np.asarray(cnf.base.std)
    u = (z - m) / s
    return -0.5 * np.sum(u * u, axis=-1) - np.sum(np.log(s)) - 0.5 * cnf.dim * math.log(2 * math.pi)


def _affine_log_density(cnf: CNFProblem, theta: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """log p1(x) of ``f = (1 + alpha t)(A z + b)``: ``z0 = expm(S M) [x; 1]`` with ``M = [[A, b],
    [0, 0]]`` and ``S = int_{t1}^{t0} (1 + alpha t) dt``, ``log|dz0/dx| = S tr A``."""
    from scipy.linalg import expm

    A, b = theta["A"], theta["b"]
    alpha = float(cnf.field.params["alpha"])
    t0, t1 = cnf.t_span
    n = cnf.dim
    S = (t0 - t1) + alpha * (t0 * t0 - t1 * t1) / 2
    M = np.zeros((n + 1, n + 1), dtype=np.result_type(A, b, complex))
    M[:n, :n], M[:n, n] = A, b
    E = expm(S * M)
    z0 = x @ E[:n, :n].T + E[:n, n]
    return _logpdf(cnf, z0) + S * np.trace(A)


def _sine_log_density(cnf: CNFProblem, theta: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """log p1(x) of ``f = a sin z``: on the cell of x, ``tan(z/2)`` scales by ``e^{a s}`` over a
    time ``s``, so with ``s = t0 - t1`` and ``w = x - 2 pi k``: ``z0 = 2 pi k + 2 arctan(tan(w/2)
    e^{a s})`` and ``dz0/dx = e^{a s} / (cos^2(w/2) + sin^2(w/2) e^{2 a s})`` (at x, not z0)."""
    a = float(cnf.field.params["a"])
    t0, t1 = cnf.t_span
    s = t0 - t1
    k = np.round(np.real(x) / (2 * np.pi))
    w = x - 2 * np.pi * k
    z0 = 2 * np.pi * k + 2 * np.arctan(np.tan(w / 2) * np.exp(a * s))
    log_jac = a * s - np.log(np.cos(w / 2) ** 2 + np.sin(w / 2) ** 2 * np.exp(2 * a * s))
    return _logpdf(cnf, z0) + log_jac[..., 0]


def _closed_form(cnf: CNFProblem) -> Any:
    """The log-density function of this module for ``cnf``'s field, or None. A field is
    recognised by its parameters, and the function is checked against the problem's own
    ``exact_log_density`` at the data (so a field that merely shares parameter names is refused)."""
    if not cnf.has_exact:
        return None
    keys = set(cnf.field.params)
    fn = _affine_log_density if keys == {"A", "b", "alpha"} else _sine_log_density if keys == {"a"} else None
    if fn is None:
        return None
    theta = {k: np.asarray(v, dtype=np.float64) for k, v in gradient_params(_field_problem(cnf)).items()}
    mine, theirs = fn(cnf, theta, cnf.data), cnf.exact_log_density(cnf.data)
    if not np.allclose(mine, theirs, rtol=1e-10, atol=1e-10):
        return None
    return fn


def _field_problem(cnf: CNFProblem) -> Problem:
    return cnf.density_problem("jvp")


def _theta_names(problem: Problem, cnf: CNFProblem) -> list[str]:
    """The field's float-array parameters (a Hutchinson problem's ``_probes`` are not θ)."""
    return sorted(k for k in gradient_params(problem) if k in cnf.field.params)


def complex_step_gradient(cnf: CNFProblem, x: Any = None, *, h: float = COMPLEX_STEP) -> dict[str, Any]:
    """dNLL/dθ and dNLL/dx of ``cnf``'s exact NLL (``-sum log p1(x)``) by complex steps:
    ``{"nll", "theta": {name: array}, "x": (B, dim), "error_estimate"}``."""
    fn = _closed_form(cnf)
    if fn is None:
        raise ValueError(f"CNF problem {cnf.name!r} has no closed form here (affine or sine fields only)")
    if not (isinstance(h, float) and 0 < h < 1e-8):
        raise ValueError(f"h={h!r}, but a complex step must be a float in (0, 1e-8)")
    x = np.asarray(cnf.data if x is None else x, dtype=np.float64)
    theta = {k: np.asarray(v, dtype=np.float64) for k, v in gradient_params(_field_problem(cnf)).items()}

    def nll(th: dict[str, np.ndarray], xx: np.ndarray) -> Any:
        return -np.sum(fn(cnf, th, xx))

    value = float(np.real(nll(theta, x)))
    g_theta = {}
    for name, v in theta.items():
        g = np.empty(v.shape)
        for idx in np.ndindex(v.shape):
            vc = v.astype(complex)
            vc[idx] += 1j * h
            g[idx] = np.imag(nll({**theta, name: vc}, x)) / h
        g_theta[name] = g
    g_x = np.empty(x.shape)
    for idx in np.ndindex(x.shape):
        xc = x.astype(complex)
        xc[idx] += 1j * h
        g_x[idx] = np.imag(nll(theta, xc)) / h
    flat = np.concatenate([np.ravel(g_x)] + [np.ravel(g_theta[k]) for k in sorted(g_theta)])
    lip = cnf.field.lipschitz or 1.0
    span = abs(cnf.t_span[1] - cnf.t_span[0])
    err = (x.shape[0] + cnf.dim + 1) * EPS * float(np.linalg.norm(flat)) * max(1.0, lip * span)
    return {"nll": value, "theta": g_theta, "x": g_x, "error_estimate": err}


# ============================================================================ the oracle
def _discrete_oracle(problem: Problem, cnf: CNFProblem, y0: np.ndarray) -> GradientResult | None:
    """The reference discrete mode (torch, DOP853) at rtol 1e-12, error from rtol 1e-10."""
    b = backend_for("reference-torch")
    if not b.available():
        return None
    loss = nll_loss(cnf)
    runs = [b.gradient(problem, "dop853", "discrete", loss, y0=y0, rtol=r, atol=r * 1e-2)
            for r in (ORACLE_RTOL, ORACLE_CHECK_RTOL)]
    if not all(r.success for r in runs):
        raise RuntimeError(f"the discrete oracle's solve failed ({runs[0].status.code}: {runs[0].message})")
    best, check = runs
    best.details.update(kind="discrete_tight", error_estimate=float(np.linalg.norm(best.flat() - check.flat())),
                        reliable=True, rtol=ORACLE_RTOL)
    return best


def cnf_gradient_oracle(cnf: CNFProblem, trace: str = "jacobian", *, x: Any = None, kind: str | None = None,
                        **estimator: Any) -> dict[str, Any]:
    """The oracle of dNLL/dθ and dNLL/dx (module docstring) for a density solve of ``cnf`` with
    ``trace`` (``estimator``: Hutchinson's ``probe``, ``n_probes``, ``seed``) at the data ``x``
    (default ``cnf.data``): ``{"kind", "theta": {name: array}, "x": (B, dim), "loss",
    "error_estimate" (absolute, 2-norm of both blocks), "reliable"}``. ``loss`` is the NLL as
    the density solve's :func:`nll_loss` counts it (without ``B * nll_constant``).

    ``kind`` forces one of :data:`ORACLE_KINDS` (default: the module docstring's choice).
    ``discrete_tight`` on an exact trace is the reference discrete mode at rtol 1e-12 on the
    analytic-Jacobian trace: ~5x cheaper than the forward mode on cnf_mlp2 (whose ~450
    parameters the forward sensitivities carry), but the same algorithm as the discrete
    modes it would grade, so the default keeps the forward mode."""
    if kind is not None and kind not in ORACLE_KINDS:
        raise ValueError(f"kind={kind!r}, but it must be one of {', '.join(ORACLE_KINDS)} (or None)")
    if trace == "hutchinson" and kind not in (None, "discrete_tight"):
        raise ValueError(f"kind={kind!r}, but the Hutchinson estimator's oracle is the discrete mode"
                         " ('discrete_tight'): it has no closed form")
    x = np.asarray(cnf.data if x is None else x, dtype=np.float64)
    y0 = cnf.density_y0(x)
    if kind == "complex_step" and _closed_form(cnf) is None:
        raise ValueError(f"kind='complex_step', but CNF problem {cnf.name!r} has no closed form here")
    if trace != "hutchinson" and kind in (None, "complex_step") and _closed_form(cnf) is not None:
        cs = complex_step_gradient(cnf, x)
        return {"kind": "complex_step", "theta": cs["theta"], "x": cs["x"], "error_estimate": cs["error_estimate"],
                "loss": cs["nll"] - x.shape[0] * cnf.nll_constant(), "reliable": True}
    if trace == "hutchinson":
        problem = cnf.density_problem(trace, batch=x.shape[0], **estimator)
        res = _discrete_oracle(problem, cnf, y0)
    else:  # every exact trace has the same NLL: differentiate the one with the analytic Jacobian
        problem = cnf.density_problem("jacobian" if cnf.field.jac is not None else "jvp")
        res = (_discrete_oracle(problem, cnf, y0) if kind == "discrete_tight"
               else forward_mode_oracle(problem, nll_loss(cnf), y0=y0))
    if res is None:
        raise ValueError(f"no oracle for {cnf.name!r} with trace={trace!r}: the reference gradient modes (PyTorch)"
                         " are not installed")
    names = _theta_names(problem, cnf)
    return {"kind": res.details["kind"], "theta": {k: np.asarray(res.grad_params[k]) for k in names},
            "x": np.asarray(res.grad_y0)[:, :cnf.dim], "error_estimate": float(res.details["error_estimate"]),
            "loss": float(res.loss), "reliable": bool(res.details["reliable"])}


# ============================================================================ the property
def _blocks(theta: dict[str, np.ndarray], gx: np.ndarray, names: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    t = np.concatenate([np.ravel(theta[k]) for k in names]) if names else np.zeros(0)
    return t.astype(np.float64), np.ravel(gx).astype(np.float64)


def _batch_state_scale(cnf: CNFProblem, x: np.ndarray) -> float:
    """The smallest RMS state at t0 over the batch (each point's exact-trace density solve)."""
    loss = nll_loss(cnf)
    return min(_state_scale(cnf.density_problem("jvp", x=row), loss) for row in x)


def _gradient_by_sample(b: Any, problem: Problem, method: str, mode: str, loss: Any, y0: np.ndarray,
                        **options: Any) -> GradientResult:
    """The batch's gradient as the sum of one gradient per data point, each with its own
    Hutchinson probes (``_probes[:, i]``): for a backend that maps its solve over the batch
    with the parameters shared (:data:`VMAPPED_BATCH_BACKENDS`), where probes of shape
    ``(k, B, dim)`` cannot reach their sample. The NLL is a sum over the batch, so the sum of
    the per-point gradients is the batch's gradient, exactly."""
    probes = np.asarray(problem.params["_probes"])
    parts = []
    for i, row in enumerate(y0):
        one = dataclasses.replace(problem, params={**problem.params, "_probes": probes[:, i]}, references=())
        r = b.gradient(one, method, mode, loss, y0=row, **options)
        if not r.success:
            return r
        parts.append(r)
    first = parts[0]
    mismatches = [r.adjoint_mismatch for r in parts if r.adjoint_mismatch is not None]
    return dataclasses.replace(
        first, loss=float(sum(r.loss for r in parts)), grad_y0=np.stack([np.asarray(r.grad_y0) for r in parts]),
        grad_params={k: sum(np.asarray(r.grad_params[k]) for r in parts) for k in first.grad_params if k != "_probes"},
        nfev_forward=sum(r.nfev_forward for r in parts), nfev_backward=sum(r.nfev_backward for r in parts),
        adjoint_mismatch=max(mismatches) if mismatches else None)


def cnf_gradient_accuracy(cnf: CNFProblem | str, method: str, mode: str, *, backend: str = "torchdiffeq",
                          trace: str = "jacobian", rtol: float = 1e-6, atol: float | None = None, x: Any = None,
                          oracle: dict[str, Any] | None = None, estimator: dict[str, Any] | None = None,
                          **options: Any) -> Record:
    """dNLL/dθ and dNLL/dx of ``backend``'s gradient ``mode`` (its own mode names) on a density
    solve of ``cnf`` (``trace``; ``x`` default the problem's data) against
    :func:`cnf_gradient_oracle`: pass when both relative errors are within
    ``ACCURACY_FACTOR * (rtol + atol / |y|) + oracle error`` (module docstring). ``options``
    go to ``Backend.gradient`` (e.g. ``count_nfev``)."""
    cnf = CNF_PROBLEMS.get(cnf) if isinstance(cnf, str) else cnf
    if not isinstance(rtol, float) or not 0 < rtol < 1:
        raise ValueError(f"rtol={rtol!r}, but it must be a float in (0, 1)")
    estimator = dict(estimator or {})
    x = np.asarray(cnf.data if x is None else x, dtype=np.float64)
    y0 = cnf.density_y0(x)
    problem = cnf.density_problem(trace, batch=x.shape[0], **estimator)
    atol = rtol * 1e-3 if atol is None else atol
    b = backend_for(backend)
    library = {"torchdiffeq": "torch", "diffrax": "jax"}.get(b.name, getattr(b, "library", "numpy"))
    common: dict[str, Any] = dict(property="cnf_gradient_accuracy", method=f"{method}/{mode}", problem=problem.name,
                                  backend=b.name, library=library)
    if not b.available():
        return Record(measured=None, expected=None, verdict="unavailable", status="unavailable",
                      message=f"{b.name} is not installed: {b.install_hint}", **common)
    if b.name.startswith("reference") and mode in GRADIENT_MODES and GRADIENT_MODES.get(mode).fixed_step:
        return Record(measured=None, expected=None, verdict="skip", message=f"{mode!r} runs at fixed steps only:"
                      " an accuracy at a tolerance does not apply", **common)
    oracle = oracle or cnf_gradient_oracle(cnf, trace, x=x, **estimator)
    names = _theta_names(problem, cnf)
    ref_t, ref_x = _blocks(oracle["theta"], oracle["x"], names)
    ref_norm = math.hypot(float(np.linalg.norm(ref_t)), float(np.linalg.norm(ref_x)))
    oracle_rel = oracle["error_estimate"] / max(min(float(np.linalg.norm(ref_t)) if names else math.inf,
                                                    float(np.linalg.norm(ref_x))), 1e-300)
    y_scale = _batch_state_scale(cnf, x)
    expected = ACCURACY_FACTOR * (rtol + atol / y_scale) + oracle_rel
    by_sample = trace == "hutchinson" and b.name in VMAPPED_BATCH_BACKENDS
    if by_sample:
        res = _gradient_by_sample(b, problem, method, mode, nll_loss(cnf), y0, rtol=rtol, atol=atol, **options)
    else:
        res = b.gradient(problem, method, mode, nll_loss(cnf), y0=y0, rtol=rtol, atol=atol, **options)
    details: dict[str, Any] = {"rtol": rtol, "atol": atol, "trace": trace, "estimator": estimator,
                               "batch": int(x.shape[0]), "oracle": oracle["kind"], "oracle_rel_error": oracle_rel,
                               "oracle_reliable": oracle["reliable"], "state_scale": y_scale,
                               "oracle_norm": ref_norm, "adjoint_mismatch": res.adjoint_mismatch,
                               "nfev_forward": res.nfev_forward, "nfev_backward": res.nfev_backward,
                               "by_sample": by_sample}
    common.update(expected=expected, details=details)
    if not res.success:
        msg = res.message
        if trace == "autodiff":
            msg = (f"the autodiff trace (forward-mode autodiff inside the field, differentiated again by {mode!r})"
                   f" does not run on {b.name}: {res.message}")
        return Record(measured=None, verdict="error", status=res.status.code, message=msg, **common)
    g_t, g_x = _blocks(res.grad_params, np.asarray(res.grad_y0)[:, :cnf.dim], names)
    err_t = _relative(g_t, ref_t) if names else 0.0
    err_x = _relative(g_x, ref_x)
    details.update(theta_rel_error=err_t, x_rel_error=err_x, loss=float(res.loss), oracle_loss=oracle["loss"],
                   loss_rel_error=abs(float(res.loss) - oracle["loss"]) / max(abs(oracle["loss"]), 1e-300),
                   param_rel_errors={k: _relative(np.ravel(res.grad_params[k]), np.ravel(oracle["theta"][k]))
                                     for k in names})
    err = max(err_t, err_x)
    unreliable = mismatch_message(res.adjoint_mismatch)
    if not oracle["reliable"]:
        return Record(measured=err, verdict="skip", message="; ".join(filter(None, (
            "the oracle is unreliable", unreliable))), **common)
    ok = err <= expected
    which = "dNLL/dtheta" if err_t >= err_x else "dNLL/dx"
    return Record(measured=err, verdict="pass" if ok else "fail", message="; ".join(filter(None, (
        "" if ok else f"{which} error {err:.3g} > {expected:.3g} ({ACCURACY_FACTOR:g} (rtol + atol/|y|) + oracle"
        " error)", unreliable))), **common)


def cnf_gradient_records(backend: str, *, quick: bool) -> list[Record]:
    """``backend``'s every gradient mode on the CNF problems (``quick``:
    :data:`QUICK_FLOW_GRADIENT_CASES`, else :data:`FLOW_GRADIENT_CASES`) at rtol 1e-6, one
    oracle per case; ``backend="reference"`` runs the reference on PyTorch and, unless
    ``quick``, on JAX (the same algorithm: the same errors to 3 digits on every case measured,
    at ~4x the time). A case that raises becomes an ``error`` record."""
    names = ([backend] if backend != "reference" else
             ["reference-torch"] if quick else ["reference-torch", "reference-jax"])
    cases = QUICK_FLOW_GRADIENT_CASES if quick else FLOW_GRADIENT_CASES
    out: list[Record] = []
    oracles: dict[tuple, Any] = {}
    for name in names:
        b = backend_for(name)
        if not b.available():
            out.append(unavailable_record(b.name, b.install_hint))
            continue
        method = FLOW_GRADIENT_METHODS.get(b.name, DEFAULT_FLOW_GRADIENT_METHOD)
        for pname, trace, rows in cases:
            cnf = CNF_PROBLEMS.get(pname)
            x = cnf.data if rows is None else cnf.data[:rows]
            for mode in b.capabilities().gradient_modes:
                try:
                    key = (pname, trace if trace == "hutchinson" else "exact", rows)
                    if key not in oracles:
                        oracles[key] = cnf_gradient_oracle(cnf, trace, x=x)
                    out.append(cnf_gradient_accuracy(cnf, method, mode, backend=b.name, trace=trace, x=x,
                                                     oracle=oracles[key], count_nfev=False))
                except Exception as exc:  # noqa: BLE001 - one case's failure is a record, not a crash
                    out.append(Record(property="cnf_gradient_accuracy", method=f"{method}/{mode}",
                                      problem=f"{pname}_density_{trace}", measured=None, expected=None,
                                      verdict="error", status=Status.FAILED.code, backend=b.name,
                                      message=f"{type(exc).__name__}: {exc}"[:500]))
    return [expectations.apply(r) for r in out]


__all__ = ["complex_step_gradient", "cnf_gradient_oracle", "cnf_gradient_accuracy", "cnf_gradient_records",
           "FLOW_GRADIENT_CASES", "QUICK_FLOW_GRADIENT_CASES"]
