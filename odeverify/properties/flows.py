"""Properties of continuous normalizing flows, graded against oracles that share no code with the
trace path of :mod:`odeverify.problems.flows` (the fields' analytic ``jvp``/``jac`` and the
autodiff products):

- the closed form of an affine or sine field's log-density;
- Liouville's formula: ``log|det dz(t0)/dx|``, with the flow map's Jacobian from the variational
  equation ``Phi' = J Phi`` and ``J`` a five-point central difference of the field's values
  alone, equals ``-int tr J`` (Liouville 1838; Hartman, *ODEs*, Cor. IV.1.1);
- the pushed-forward density integrates to one (a trapezoid grid on the image of the base's
  8-sigma box in 1-D and 2-D);
- invertibility: sampling (t0 -> t1) then density evaluation (t1 -> t0) returns the input and
  the log-density;
- Hutchinson's estimator: with the probe ``v`` fixed for the solve, the computed log-density
  change is exactly ``-v^T M v`` with ``M`` the method's quadrature of ``J`` along the (probe
  independent) trajectory, so its mean is ``-tr M`` and its variance ``2 |sym M|_F^2`` for
  Gaussian probes and ``2 (|sym M|_F^2 - sum M_ii^2)`` for Rademacher probes (Hutchinson 1989;
  Avron & Toledo 2011, Eqs. (1)-(2)); ``M`` comes from the same fixed-step method run on
  ``[z, M]`` with the finite-difference ``J``.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from .. import _xp
from ..gradients import Loss
from ..integrate import solve
from ..metrics import as_numpy, loglog_slope, roundoff_floor
from ..problems.flows import CNFProblem, draw_probes
from ..records import Record
from ._common import backend_label, method_info, run
from .gradients import ACCURACY_FACTOR
from .tolerance import EXPONENT_BAND, MIN_STEPS, default_tols, expected_exponent

NP = _xp.get_namespace("numpy")
#: the tolerances of the log-density sweep (rtol = tol, atol = tol / 100)
CNF_TOLS = (1e-3, 1e-4, 1e-5, 1e-6, 1e-7, 1e-8, 1e-9, 1e-10)
#: the step counts of a fixed-step method's sweep
CNF_STEPS = (8, 16, 32, 64, 128)
#: the oracle's tolerances: the solve, and the looser one whose difference is its error estimate
ORACLE_RTOL, ORACLE_CHECK_RTOL = 1e-12, 1e-11
#: the finite-difference step of the oracle's Jacobian (relative to max(1, |z|)); the check uses twice it
FD_STEP = 1e-3
#: two-sided z-value of a 0.1% false-alarm rate
Z_999 = 3.2905
#: the base density's box, in standard deviations, whose image the normalisation grid covers
BOX_SIGMAS = 8.0


def nll_loss(cnf: CNFProblem) -> Loss:
    """The negative log-likelihood of a density solve of ``cnf`` (summed over a batch), up to
    :meth:`CNFProblem.nll_constant`, as a :class:`Loss` at ``t0``."""
    w, q = cnf.nll_weights()
    return Loss(t_eval=(cnf.t_span[0],), weights=w, quadratic=q)


# ----------------------------------------------------------------------------- the oracles
def fd_jacobian(cnf: CNFProblem, t: Any, z: np.ndarray, step: float = FD_STEP) -> np.ndarray:
    """``df/dz`` at ``(t, z)`` (``z`` of shape ``(B, n)``) by a five-point central difference of
    the field's values alone, step ``step max(1, |z|)`` (truncation ~h^4 f^(5)/30, round-off
    ~eps |f| / h; the oracle's check doubles the step to measure the truncation): shape
    ``(B, n, n)``."""
    rhs = cnf.field.bound(NP)[0]
    z = np.asarray(z, dtype=np.float64)
    h = step * np.maximum(1.0, np.abs(z))
    cols = []
    for j in range(cnf.dim):
        e = np.zeros_like(z)
        e[..., j] = h[..., j]

        def f(s: float) -> np.ndarray:
            return np.asarray(rhs(t, z + s * e))

        cols.append((-f(2) + 8 * f(1) - 8 * f(-1) + f(-2)) / (12 * h[..., j:j + 1]))
    return np.stack(cols, axis=-1)


def _variational(cnf: CNFProblem, x: np.ndarray, rtol: float, step: float = FD_STEP, *,
                 jacobian: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """``(z(t0), log|det dz(t0)/dx|)`` from ``x`` at ``t1`` (``jacobian``: ``(z(t0), dz(t0)/dx)``)."""
    n, B = cnf.dim, x.shape[0]
    rhs = cnf.field.bound(NP)[0]

    def f(t: Any, y: Any) -> Any:
        z = y[:, :n]
        Phi = np.reshape(y[:, n:], (B, n, n))
        return np.concatenate([np.asarray(rhs(t, z)), np.reshape(fd_jacobian(cnf, t, z, step) @ Phi, (B, n * n))], axis=1)

    y0 = np.concatenate([x, np.tile(np.eye(n).reshape(1, -1), (B, 1))], axis=1)
    t0, t1 = cnf.t_span
    sol = solve(f, y0, (t1, t0), method="dop853", rtol=rtol, atol=rtol * 1e-2)
    if not sol.success:
        raise RuntimeError(f"the variational-equation oracle of {cnf.name!r} failed: {sol.status.value}")
    end = np.asarray(sol.ys[-1])
    z0 = end[:, :n]
    if jacobian:
        return z0, end[:, n:].reshape(B, n, n)
    sign, logdet = np.linalg.slogdet(end[:, n:].reshape(B, n, n))
    if np.any(sign <= 0):
        raise RuntimeError(f"the variational-equation oracle of {cnf.name!r} found det <= 0: not a flow map")
    return z0, logdet


def _variational_pair(cnf: CNFProblem, x: np.ndarray) -> tuple[tuple[np.ndarray, np.ndarray],
                                                                  tuple[np.ndarray, np.ndarray]]:
    """The oracle's solve (rtol 1e-12, the difference step) and its check (rtol 1e-11, twice the
    step): ``((z0, logdet), (z0, logdet))``; their difference bounds the oracle's error."""
    return _variational(cnf, x, ORACLE_RTOL), _variational(cnf, x, ORACLE_CHECK_RTOL, 2 * FD_STEP)


def liouville_oracle(cnf: CNFProblem, x: Any = None) -> tuple[np.ndarray, float, str]:
    """``(log p1(x), error estimate, kind)`` for the data points ``x`` (default ``cnf.data``):
    the closed form when the field has one, else ``log p0(z(t0)) + log|det dz(t0)/dx|`` from
    the variational equation (DOP853 at rtol 1e-12; the estimate is its difference from the
    rtol 1e-11 solve with twice the finite-difference step, which bounds both the solver's and
    the difference quotient's error)."""
    x = cnf.data if x is None else np.asarray(x, dtype=np.float64)
    if cnf.has_exact:
        return cnf.exact_log_density(x), 0.0, "closed form"
    (z0, logdet), (z0c, logdetc) = _variational_pair(cnf, x)
    ll = cnf.base.logpdf(z0) + logdet
    err = float(np.max(np.abs(cnf.base.logpdf(z0c) + logdetc - ll)))
    return ll, err, "Liouville (variational equation, finite-difference Jacobian)"


# ----------------------------------------------------------------------------- shared plumbing
def _common(prop: str, cnf: CNFProblem, method: str, backend: str, library: str, dtype: str, trace: str,
            **kw: Any) -> dict[str, Any]:
    return dict(property=prop, method=method, problem=f"{cnf.name}[{trace}]", library=library,
                backend=backend_label(backend, library), dtype=dtype, **kw)


def _density(cnf: CNFProblem, method: str, trace: str, *, backend: str, library: str, dtype: str, x: Any = None,
             **options: Any) -> tuple[np.ndarray | None, Any]:
    """The log-likelihood of ``x`` (default the data) by a density solve, and the solution."""
    x = cnf.data if x is None else x
    problem = cnf.density_problem(trace, batch=len(x))
    sol = run(problem, method, backend=backend, library=library, dtype=dtype, y0=cnf.density_y0(x), **options)
    if not sol.success:
        return None, sol
    return cnf.log_likelihood(as_numpy(sol.ys)[-1]), sol


def _tolerances(method: str, tols: Sequence[float] | None, backend: str, library: str) -> tuple[bool, list[Any]]:
    """The sweep: ``tols``, else the tolerances of :data:`CNF_TOLS` a method of order p reaches in
    reasonable work (down to ``10^-(2 + 2p)``, as ``tolerance_proportionality``'s default), or
    :data:`CNF_STEPS` for a fixed-step method."""
    info = method_info(method, backend=backend, library=library)
    if info.adaptive:
        floor = min(default_tols(info.order))
        return True, list(tols or [t for t in CNF_TOLS if t >= floor * (1 - 1e-9)])
    return False, list(tols or CNF_STEPS)


# ----------------------------------------------------------------------------- properties
def cnf_log_density(cnf: CNFProblem, method: str, *, backend: str = "reference", library: str = "numpy",
                    dtype: str = "float64", trace: str = "jacobian", tols: Sequence[float] | None = None) -> Record:
    """The log-likelihood error (nats, the largest over the data) against the oracle
    (:func:`liouville_oracle`) over a tolerance sweep (rtol = tol, atol = tol/100) of an adaptive
    method, or a step sweep of a fixed-step one; the fitted exponent must match the method's
    (``expected_exponent``: error ~ tol^(p/k); fixed step: the order p) within
    ``EXPONENT_BAND``. Errors below 1e3 eps |log p| and solves under ``max(MIN_STEPS, 2p)`` steps are
    left out of the fit."""
    adaptive, sweep = _tolerances(method, tols, backend, library)
    truth, oracle_err, kind = liouville_oracle(cnf)
    info = method_info(method, backend=backend, library=library)
    expected = expected_exponent(method, backend=backend, library=library) if adaptive else float(info.order)
    floor = max(roundoff_floor(truth, dtype), 10 * oracle_err)
    errors, nfevs, steps, statuses = [], [], [], []
    for s in sweep:
        opts = {"rtol": s, "atol": s * 1e-2} if adaptive else {"n_steps": int(s)}
        ll, sol = _density(cnf, method, trace, backend=backend, library=library, dtype=dtype, **opts)
        statuses.append(sol.status.code)
        errors.append(math.inf if ll is None else float(np.max(np.abs(ll - truth))))
        nfevs.append(int(sol.stats.nfev))
        # a batch solved sample by sample (per-sample mode, diffrax's vmap) reports the total over the
        # samples (diffrax's Dopri5 on cnf_linear2: 32 "steps" at rtol 1e-3, fitted into the exponent
        # 0.77); the hardest sample's count is what a shared-step solve of the batch would take
        per_sample = sol.stats.sample_accepted
        steps.append((int(np.max(per_sample)) if per_sample is not None else int(sol.stats.accepted))
                     if adaptive else int(s))
    details = {"rtols" if adaptive else "n_steps": sweep, "errors": errors, "nfev": nfevs, "accepted": steps,
               "oracle": kind, "oracle_error": oracle_err, "floor": floor, "band": EXPONENT_BAND,
               "log_density": truth.tolist()}
    if adaptive:
        details["tols"] = sweep
    common = _common("cnf_log_density", cnf, method, backend, library, dtype, trace, expected=expected,
                     details=details)
    if any(st != "success" for st in statuses):
        return Record(measured=None, verdict="error", status=next(st for st in statuses if st != "success"),
                      message="a density solve of the sweep failed", **common)
    e, x = np.asarray(errors), np.asarray(sweep, dtype=np.float64)
    # as tolerance_proportionality: a solve of fewer than max(MIN_STEPS, 2p) steps is not in the
    # controller's asymptotic regime (explore: DOP853 on a 4-D affine CNF fitted 8-12 steps, exponent -0.02)
    min_steps = max(MIN_STEPS, 2 * int(info.order))
    details["min_steps"] = min_steps
    keep = np.isfinite(e) & (e > floor) & (np.asarray(steps) >= min_steps)
    if keep.sum() < 3:
        return Record(measured=None, verdict="skip", message=f"inconclusive: fewer than 3 solves with an error above"
                      f" the floor {floor:.2g} (errors {[f'{v:.2g}' for v in errors]})", **common)
    # error against tol (adaptive) or against h = span / n (fixed step)
    slope = loglog_slope(x[keep], e[keep]) if adaptive else -loglog_slope(x[keep], e[keep])
    details["fitted"] = x[keep].tolist()
    if expected is None:
        return Record(measured=slope, verdict="skip", message="variable-order method: no single theoretical exponent",
                      **common)
    ok = abs(slope - expected) <= EXPONENT_BAND or (slope > expected + EXPONENT_BAND and adaptive)
    what = "tolerance exponent" if adaptive else "order"
    msg = (f"log-density error {what} {slope:.2f} (expected {expected:.2f} +- {EXPONENT_BAND}); at the tightest"
           f" setting {e[keep][-1]:.2g} nats")
    if slope > expected + EXPONENT_BAND:
        if adaptive:
            msg += "; faster than the error-per-step model, not a deficit"
        else:
            # as convergence_order: a fixed-step slope above the order is no refutation (higher-order
            # terms still dominate where round-off begins; torchdiffeq's implicit_adams, order 4,
            # measured 4.8-5.3 on the log-density and local slopes 6.0, 5.15, 4.97 on an ODE)
            return Record(measured=slope, verdict="skip", message="inconclusive: " + msg + "; above the order,"
                          " higher-order terms still dominate where round-off begins", **common)
    return Record(measured=slope, verdict="pass" if ok else "fail", message=msg, **common)


def cnf_liouville(cnf: CNFProblem, method: str = "dopri5", *, backend: str = "reference", library: str = "numpy",
                  dtype: str = "float64", trace: str = "jacobian", rtol: float = 1e-8) -> Record:
    """The integrated trace ``l(t0)`` of a density solve against ``-log|det dz(t0)/dx|`` of the
    variational equation (Liouville's formula) with a finite-difference Jacobian, for fields
    with or without a closed form: they must agree within ``ACCURACY_FACTOR (rtol + atol)``
    times the size of ``l``, plus the oracle's error estimate."""
    atol = rtol * 1e-2
    (z_or, logdet), (z_chk, logdet_chk) = _variational_pair(cnf, cnf.data)
    oracle_err = float(np.max(np.abs(logdet - logdet_chk)))
    problem = cnf.density_problem(trace, batch=len(cnf.data))
    sol = run(problem, method, backend=backend, library=library, dtype=dtype, y0=cnf.density_y0(), rtol=rtol, atol=atol)
    scale = max(1.0, float(np.max(np.abs(logdet))))
    expected = ACCURACY_FACTOR * (rtol + atol) * scale + oracle_err
    details = {"rtol": rtol, "atol": atol, "oracle_error": oracle_err, "log_det": logdet.tolist(),
               "oracle_self_check": float(np.max(np.abs(z_or - z_chk)))}
    common = _common("cnf_liouville", cnf, method, backend, library, dtype, trace, expected=expected, details=details)
    if not sol.success:
        return Record(measured=None, verdict="error", status=sol.status.code, message=sol.message or sol.status.value,
                      **common)
    end = as_numpy(sol.ys)[-1]
    err = float(np.max(np.abs(end[:, cnf.dim] + logdet)))
    details["integrated_trace"] = end[:, cnf.dim].tolist()
    ok = err <= expected
    return Record(measured=err, verdict="pass" if ok else "fail", message="" if ok else (
        f"the integrated trace misses Liouville's log|det| by {err:.3g} > {expected:.3g}"), **common)


def _box_image(cnf: CNFProblem, rtol: float) -> tuple[np.ndarray, np.ndarray]:
    """The bounding box of the image, under the exact-as-possible flow, of the boundary of the
    base's ``BOX_SIGMAS`` box: the flow is a homeomorphism, so the image of the box is bounded
    by the image of its boundary."""
    m, s = np.asarray(cnf.base.mean), np.asarray(cnf.base.std)
    lo, hi = m - BOX_SIGMAS * s, m + BOX_SIGMAS * s
    if cnf.dim == 1:
        pts = np.array([[lo[0]], [hi[0]]])
    else:
        u = np.linspace(0.0, 1.0, 129)
        edges = []
        for a in (0, 1):
            fixed = np.where(a, hi, lo)
            edges.append(np.stack([np.full_like(u, fixed[0]), lo[1] + u * (hi[1] - lo[1])], axis=1))
            edges.append(np.stack([lo[0] + u * (hi[0] - lo[0]), np.full_like(u, fixed[1])], axis=1))
        pts = np.concatenate(edges)
    fld = cnf.field.bound(NP)[0]
    sol = solve(fld, pts, cnf.t_span, method="dop853", rtol=rtol, atol=rtol * 1e-2)
    img = np.asarray(sol.ys[-1])
    return img.min(axis=0), img.max(axis=0)


def cnf_normalisation(cnf: CNFProblem, method: str = "dopri5", *, backend: str = "reference", library: str = "numpy",
                      dtype: str = "float64", trace: str = "jacobian", rtol: float = 1e-8, points: int | None = None
                      ) -> Record:
    """The pushed-forward density ``p1`` (from density solves on a grid) integrates to one.

    1-D and 2-D: the trapezoid rule on a uniform grid over the image of the base's
    ``BOX_SIGMAS``-sigma box (plus a 5% margin); the base's mass outside that box is below
    ``2 dim Phi(-8) = 1.2e-15 dim``. The quadrature's error estimate is the difference from the
    rule on every other grid point (for a smooth, fast-decaying integrand the trapezoid rule
    converges faster than any power of the spacing). Pass when ``|int p1 - 1|`` is within that
    estimate plus ``ACCURACY_FACTOR (rtol + atol)`` (a log-density error d changes the mass by
    about the mean of d)."""
    if cnf.dim > 2:
        raise ValueError(f"cnf_normalisation integrates on a grid in 1-D and 2-D; CNF problem {cnf.name!r} has"
                         f" dim={cnf.dim}")
    atol = rtol * 1e-2
    points = points or (1601 if cnf.dim == 1 else 161)
    if points % 2 == 0 or points < 5:
        raise ValueError(f"points={points!r}, but it must be odd and >= 5 (the coarse rule uses every other point)")
    lo, hi = _box_image(cnf, ORACLE_RTOL)
    pad = 0.05 * (hi - lo)
    lo, hi = lo - pad, hi + pad
    axes = [np.linspace(lo[i], hi[i], points) for i in range(cnf.dim)]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, cnf.dim)
    ll, sol = _density(cnf, method, trace, backend=backend, library=library, dtype=dtype, x=grid, rtol=rtol,
                       atol=atol)
    details = {"rtol": rtol, "points_per_axis": points, "box_low": lo.tolist(), "box_high": hi.tolist()}
    common = _common("cnf_normalisation", cnf, method, backend, library, dtype, trace, expected=None, details=details)
    if ll is None:
        return Record(measured=None, verdict="error", status=sol.status.code, message=sol.message or sol.status.value,
                      **common)
    dens = np.exp(ll).reshape((points,) * cnf.dim)

    def trap(d: np.ndarray, hs: list[float]) -> float:
        for h in hs:
            d = np.trapezoid(d, dx=h, axis=0)
        return float(d)

    hs = [(hi[i] - lo[i]) / (points - 1) for i in range(cnf.dim)]
    total = trap(dens, hs)
    coarse = trap(dens[(slice(None, None, 2),) * cnf.dim], [2 * h for h in hs])
    quad_err = abs(total - coarse)
    expected = quad_err + ACCURACY_FACTOR * (rtol + atol) + 2 * cnf.dim * 6.2e-16
    err = abs(total - 1.0)
    details.update({"integral": total, "coarse_integral": coarse, "quadrature_error": quad_err})
    common["expected"] = expected
    ok = err <= expected
    return Record(measured=err, verdict="pass" if ok else "fail", message=f"integral {total:.12f}" + (
        "" if ok else f": |1 - integral| = {err:.3g} > {expected:.3g}"), **common)


def cnf_invertibility(cnf: CNFProblem, method: str = "dopri5", *, backend: str = "reference", library: str = "numpy",
                      dtype: str = "float64", trace: str = "jacobian", rtol: float = 1e-8, samples: int = 8,
                      seed: int = 0) -> Record:
    """Sampling then density evaluation returns the input: ``z0 ~ p0`` solved ``t0 -> t1`` to
    ``[x, log p1(x)]``, then ``x`` solved ``t1 -> t0`` to ``[z0', l']``; ``|z0' - z0|`` (relative
    to ``max(1, |z0|)``) must be within ``ACCURACY_FACTOR (rtol + atol) (1 + a)`` and
    ``|log p0(z0') - l' - log p1(x)|`` (relative to ``max(1, |log p|)``) within
    ``ACCURACY_FACTOR (rtol + atol) (1 + a (1 + |score|))``, where ``a = |dz0/dx|_2`` (the
    variational equation at the sampled points) is how much the density solve amplifies the
    sampling solve's error in ``x`` (explore shrank a case on ``z' = (1 + t)(1 - 2z)``, a
    contraction by e^-3 whose inverse amplifies 20x: RK23 and the reference's bosh3 both missed
    a flat ``100 (rtol + atol)`` at 77-103 rtol). ``measured`` is the worse of the two errors
    as a fraction of its allowance (pass: at most 1)."""
    atol = rtol * 1e-2
    z0 = cnf.base.sample(samples, seed)
    lp0 = cnf.base.logpdf(z0)
    fwd = cnf.sample_problem(trace, batch=samples)
    sol = run(fwd, method, backend=backend, library=library, dtype=dtype,
              y0=np.concatenate([z0, lp0[:, None]], axis=1), rtol=rtol, atol=atol)
    expected = ACCURACY_FACTOR * (rtol + atol)
    details: dict[str, Any] = {"rtol": rtol, "atol": atol, "samples": samples, "seed": seed}
    common = _common("cnf_invertibility", cnf, method, backend, library, dtype, trace, expected=expected,
                     details=details)
    if not sol.success:
        return Record(measured=None, verdict="error", status=sol.status.code, message="sampling: " + sol.status.value,
                      **common)
    end = as_numpy(sol.ys)[-1]
    x, lp_x = end[:, :cnf.dim], end[:, cnf.dim]
    ll, back = _density(cnf, method, trace, backend=backend, library=library, dtype=dtype, x=x, rtol=rtol, atol=atol)
    if ll is None:
        return Record(measured=None, verdict="error", status=back.status.code,
                      message="density evaluation: " + back.status.value, **common)
    z_back = as_numpy(back.ys)[-1][:, :cnf.dim]
    z_err = float(np.max(np.abs(z_back - z0)) / max(1.0, float(np.max(np.abs(z0)))))
    l_err = float(np.max(np.abs(ll - lp_x)) / max(1.0, float(np.max(np.abs(lp_x)))))
    # the density solve maps the sampling solve's error in x back through dz0/dx: scale the
    # allowance by the inverse map's amplification (from the variational equation at the sampled
    # x), and the log-density's by the base's score there too
    _, Phi = _variational(cnf, x, ORACLE_CHECK_RTOL, jacobian=True)
    amp = float(np.max(np.linalg.norm(Phi, ord=2, axis=(-2, -1))))
    s = np.asarray(cnf.base.std)
    score = float(np.max(np.linalg.norm((z0 - np.asarray(cnf.base.mean)) / s**2, axis=-1)))
    expected_z = expected * (1.0 + amp)
    expected_l = expected * (1.0 + amp * (1.0 + score))
    details.update({"state_error": z_err, "log_density_error": l_err, "amplification": amp,
                    "allowed_state": expected_z, "allowed_log_density": expected_l})
    err = max(z_err / expected_z, l_err / expected_l)
    common["expected"] = 1.0
    ok = err <= 1.0
    return Record(measured=err, verdict="pass" if ok else "fail", message="" if ok else (
        f"round trip misses: state {z_err:.3g} (allowed {expected_z:.3g}), log-density {l_err:.3g} (allowed"
        f" {expected_l:.3g}; the inverse map amplifies by {amp:.3g})"), **common)


# ----------------------------------------------------------------------------- Hutchinson
def _quadrature_matrix(cnf: CNFProblem, x: np.ndarray, method: str, n_steps: int) -> np.ndarray:
    """``M = int J dt`` from t1 back to t0 along the trajectory from ``x``, by ``method`` with
    ``n_steps`` fixed steps on ``[z, M]`` (``M' = J``, ``J`` by finite differences): the same
    quadrature the method applies to ``l' = -v^T J v``, so ``l(t0) = -v^T M v``."""
    n = cnf.dim
    rhs = cnf.field.bound(NP)[0]

    def f(t: Any, y: Any) -> Any:
        z = y[None, :n]
        return np.concatenate([np.asarray(rhs(t, z))[0], fd_jacobian(cnf, t, z)[0].reshape(-1)])

    t0, t1 = cnf.t_span
    sol = solve(f, np.concatenate([x, np.zeros(n * n)]), (t1, t0), method=method, n_steps=n_steps)
    return np.asarray(sol.ys[-1])[n:].reshape(n, n)


def _hutchinson_draws(cnf: CNFProblem, probe: str, draws: int, method: str, n_steps: int, seed: int,
                      x: np.ndarray) -> np.ndarray:
    """``draws`` one-probe estimates of ``l(t0)`` at ``x``: one batched fixed-step solve of
    ``draws`` copies of ``x``, each with its own probe."""
    problem = cnf.density_problem("hutchinson", x=x, probe=probe, n_probes=1, seed=seed, batch=draws)
    y0 = np.tile(np.concatenate([x, [0.0]]), (draws, 1))
    sol = solve(problem.vector_field(NP), y0, problem.t_span, method=method, n_steps=n_steps)
    if not sol.success:
        raise RuntimeError(f"the Hutchinson solve of {cnf.name!r} failed: {sol.status.value}")
    return np.asarray(sol.ys[-1])[:, cnf.dim]


def hutchinson_theory(M: np.ndarray, probe: str) -> tuple[float, float]:
    """Mean and variance of ``-v^T M v`` for one probe ``v``."""
    S = 0.5 * (M + M.T)
    fro = float(np.sum(S * S))
    var = 2.0 * fro if probe == "gaussian" else 2.0 * (fro - float(np.sum(np.diag(M) ** 2)))
    return -float(np.trace(M)), var


def _hutchinson_sample(cnf: CNFProblem, probe: str, draws: int, method: str, n_steps: int, seed: int
                       ) -> tuple[np.ndarray, float, float, dict[str, Any]]:
    x = cnf.data[0]
    est = _hutchinson_draws(cnf, probe, draws, method, n_steps, seed, x)
    M = _quadrature_matrix(cnf, x, method, n_steps)
    mean, var = hutchinson_theory(M, probe)
    exact = cnf.density_problem("jacobian", x=x)
    sol = solve(exact.vector_field(NP), exact.y0_array(NP), exact.t_span, method=method, n_steps=n_steps)
    details = {"probe": probe, "draws": draws, "method": method, "n_steps": n_steps, "seed": seed,
               "theory_mean": mean, "theory_variance": var, "exact_trace_solve": float(np.asarray(sol.ys[-1])[-1]),
               "x": x.tolist()}
    return est, mean, var, details


def hutchinson_unbiased(cnf: CNFProblem, probe: str = "rademacher", *, draws: int = 4096, method: str = "rk4",
                        n_steps: int = 32, seed: int = 0) -> Record:
    """The mean of ``draws`` one-probe log-density changes lies within ``Z_999`` standard
    errors (theory's variance) of ``-tr M`` (0.1% false alarms); the exact-trace solve with the
    same steps must give ``-tr M`` to 1e-9 (checks the quadrature matrix itself)."""
    est, mean, var, details = _hutchinson_sample(cnf, probe, draws, method, n_steps, seed)
    se = math.sqrt(var / draws)
    z = abs(float(np.mean(est)) - mean) / se if se > 0 else (0.0 if np.allclose(est, mean) else math.inf)
    exact_gap = abs(details["exact_trace_solve"] - mean)
    details.update({"sample_mean": float(np.mean(est)), "standard_error": se, "exact_gap": exact_gap})
    common = dict(property="hutchinson_unbiased", method=method, problem=f"{cnf.name}[hutchinson_{probe}]",
                  backend="reference", library="numpy", dtype="float64", expected=Z_999, details=details)
    ok = z <= Z_999 and exact_gap <= 1e-9 * max(1.0, abs(mean))
    return Record(measured=z, verdict="pass" if ok else "fail", message=(
        f"mean {details['sample_mean']:.6g} vs -tr M {mean:.6g}: {z:.2f} standard errors"
        + ("" if exact_gap <= 1e-9 * max(1.0, abs(mean)) else f"; the exact-trace solve misses -tr M by {exact_gap:.3g}")
    ), **common)


PROBE_COUNTS = (1, 2, 4, 8, 16, 32, 64)


#: the number of groups of the variance test (a t-test on the groups' sample variances)
VARIANCE_GROUPS = 64


def hutchinson_variance(cnf: CNFProblem, probe: str = "rademacher", *, draws: int = 4096, method: str = "rk4",
                        n_steps: int = 32, seed: int = 1) -> Record:
    """The variance of one-probe estimates against theory (``2|sym M|_F^2`` Gaussian, minus
    ``2 sum M_ii^2`` Rademacher): the draws are split into ``VARIANCE_GROUPS`` groups, each
    group's unbiased sample variance is an independent unbiased estimate of the variance, and
    their mean is t-tested against theory at 0.1% false alarms (two-sided, ``G - 1`` degrees of
    freedom). Groups rather than the fourth-moment formula: a Rademacher estimate in 2-D takes
    two values, where the sample fourth moment makes that formula's standard error vanish.
    Also the RMS error of the ``k``-probe mean against ``sqrt(var / k)`` for ``k`` in
    ``PROBE_COUNTS`` (groups of the same draws: a k-probe estimate is the mean of k one-probe
    estimates), for the report's error bars."""
    from scipy.stats import t as student_t

    if draws < 8 * VARIANCE_GROUPS:
        raise ValueError(f"draws={draws!r}, but the variance test needs at least {8 * VARIANCE_GROUPS}"
                         f" ({VARIANCE_GROUPS} groups of 8)")
    est, mean, var, details = _hutchinson_sample(cnf, probe, draws, method, n_steps, seed)
    size = draws // VARIANCE_GROUPS
    group_var = est[: size * VARIANCE_GROUPS].reshape(VARIANCE_GROUPS, size).var(axis=1, ddof=1)
    s2 = float(np.mean(group_var))
    se = float(np.std(group_var, ddof=1)) / math.sqrt(VARIANCE_GROUPS)
    crit = float(student_t.ppf(0.9995, VARIANCE_GROUPS - 1))
    rms, pred = [], []
    ks = [k for k in PROBE_COUNTS if draws // k >= 16]
    for k in ks:
        groups = est[: (draws // k) * k].reshape(-1, k).mean(axis=1)
        rms.append(float(np.sqrt(np.mean((groups - mean) ** 2))))
        pred.append(math.sqrt(var / k))
    details.update({"sample_variance": s2, "variance_standard_error": se, "groups": VARIANCE_GROUPS,
                    "critical_t": crit, "n_probes": ks, "rms_error": rms, "predicted_rms": pred})
    common = dict(property="hutchinson_variance", method=method, problem=f"{cnf.name}[hutchinson_{probe}]",
                  backend="reference", library="numpy", dtype="float64", expected=var, details=details)
    if var == 0.0:
        # -tr M comes from the finite-difference Jacobian: equal to 1e-9 (as in hutchinson_unbiased)
        ok = bool(np.all(np.abs(est - mean) <= 1e-9 * max(1.0, abs(mean))))
        return Record(measured=s2, verdict="pass" if ok else "fail", message=(
            "theory says the estimator is exact here (zero variance)" + ("" if ok else f"; sample variance {s2:.3g}")),
            **common)
    t_stat = abs(s2 - var) / se if se > 0 else math.inf
    ok = t_stat <= crit
    return Record(measured=s2, verdict="pass" if ok else "fail", message=(
        f"variance {s2:.4g} vs theory {var:.4g}: t = {t_stat:.2f} (critical {crit:.2f})"), **common)


def trace_agreement(cnf: CNFProblem, *, library: str = "numpy", times: Sequence[float] = (0.0, 0.37, 1.0)
                    ) -> Record:
    """The exact estimators (``jacobian``, ``jvp`` and, on PyTorch or JAX, ``autodiff``) against
    the five-point finite difference of the field's values at the data points: analytic vs
    autodiff within 1e-12 (relative to ``max(1, |tr|)``), the finite difference within 1e-8 or
    twice its own error estimate (from the rule at twice the step), whichever is larger."""
    xp = _xp.get_namespace(library)
    traces = ["jacobian", "jvp"] + (["autodiff"] if library in ("torch", "jax") else [])
    y0 = cnf.density_y0()
    worst: dict[str, float] = {}
    fd_bound = 0.0
    for t in times:
        fd = np.trace(fd_jacobian(cnf, t, cnf.data), axis1=-2, axis2=-1)
        fd2 = np.trace(fd_jacobian(cnf, t, cnf.data, 2 * FD_STEP), axis1=-2, axis2=-1)
        vals = {}
        for trace in traces:
            f = cnf.density_problem(trace).vector_field(xp, xp.float64)
            vals[trace] = -as_numpy(f(xp.asarray(t, dtype=xp.float64), xp.asarray(y0, dtype=xp.float64)))[:, -1]
        scale = max(1.0, float(np.max(np.abs(fd))))
        # the five-point rule's error is h^4 f^(5)/30: doubling h multiplies it by 16, so
        # |fd(h) - fd(2h)| = 15 |error(h)|; twice that, relative, bounds the oracle's own error
        fd_bound = max(fd_bound, 2 * float(np.max(np.abs(fd - fd2))) / 15 / scale)
        for trace in traces:
            worst[f"{trace}_vs_fd"] = max(worst.get(f"{trace}_vs_fd", 0.0), float(np.max(np.abs(vals[trace] - fd))) / scale)
            if trace != "jacobian":
                key = f"{trace}_vs_jacobian"
                worst[key] = max(worst.get(key, 0.0), float(np.max(np.abs(vals[trace] - vals["jacobian"]))) / scale)
    fd_allowed = max(1e-8, fd_bound)
    bad = [k for k, v in worst.items() if v > (fd_allowed if k.endswith("_fd") else 1e-12)]
    common = dict(property="trace_agreement", method="-", problem=cnf.name, backend=f"reference-{library}"
                  if library != "numpy" else "reference", library=library, dtype="float64", expected=1e-12,
                  details={"differences": worst, "times": list(times), "fd_allowed": fd_allowed})
    measured = max(v for k, v in worst.items() if not k.endswith("_fd")) if len(traces) > 1 else 0.0
    return Record(measured=measured, verdict="fail" if bad else "pass", message="" if not bad else (
        "estimators disagree: " + ", ".join(f"{k} {worst[k]:.3g}" for k in bad)), **common)


__all__ = ["nll_loss", "liouville_oracle", "fd_jacobian", "cnf_log_density", "cnf_liouville", "cnf_normalisation",
           "cnf_invertibility", "hutchinson_unbiased", "hutchinson_variance", "hutchinson_theory", "trace_agreement"]
