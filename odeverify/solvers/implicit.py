"""Implicit Runge–Kutta steps: diagonally implicit (DIRK/ESDIRK/SDIRK) and Radau IIA.

Both solve their stage equations by simplified Newton iterations (Hairer & Wanner,
*Solving ODEs II*, 2nd ed. 1996, §IV.8), written once against the Array API like the
explicit steps, and driven by the one time loop in :mod:`odeverify.integrate` through the
stateful-solver hooks of :mod:`odeverify.solvers.base` (``init_state``, ``step(...,
state=)``, ``after_step``).

Newton iteration (both families)
    The iteration matrix uses a Jacobian ``J`` of ``f`` at the start of a step: the user's
    ``jac`` when given (``solve(jac=...)``, or a problem's analytic ``Problem.jac``), else
    automatic differentiation on PyTorch and JAX (:func:`odeverify._xp.jacobian`, which
    calls the user's field directly, so it adds to ``njev`` but not ``nfev``), else forward
    differences (NumPy, array-api-strict: ``n + 1`` extra evaluations of ``f``, counted in
    ``nfev`` as well as ``njev``), with Hairer's increments ``sqrt(eps * max(1e-5, |y_j|))``.

    ``J`` is reused across steps and recomputed only after a step whose Newton iteration
    converged slowly (more than 2 iterations with rate > 1e-3, the rule of scipy's Radau), or
    when the iteration fails with a Jacobian from an earlier step (the step is then retried
    once with a fresh one before it is rejected). LU factors are reused while ``h`` is
    unchanged (Radau's controller keeps ``h`` when the proposed change is within [1, 1.2]).

    Convergence monitoring follows H&W II (8.10)–(8.13): with the rate
    ``theta_k = ||dY_k|| / ||dY_(k-1)||`` and ``eta_k = theta_k / (1 - theta_k)`` (on the
    first iteration the previous step's ``eta``, raised to 0.8), the iteration stops when
    ``eta_k ||dY_k|| <= newton_tol``; it fails when ``theta_k >= 0.99`` (divergence), when
    ``theta_k^(k_max - k) / (1 - theta_k) ||dY_k|| > newton_tol`` (it cannot converge in the
    iterations left), or after ``k_max`` iterations. Norms are RMS norms scaled by
    ``atol + rtol |y|``, so ``newton_tol`` is in units of the tolerance:
    ``max(10 eps / rtol, min(0.03, sqrt(rtol)))`` (Hairer's RADAU5 ``FNEWT`` default, also
    scipy's). In fixed-step mode there is no rejection to fall back on, so the iteration is
    driven to round-off instead: stop at ``10 eps (1 + |y|)``, ``k_max = 50``, and no early
    "too slow" exit.

Batches
    A batch ``(B, n)`` is ``B`` independent systems: block Jacobians ``(B, n, n)`` and
    batched LU factors. In ``batch="per-sample"`` mode every sample also keeps its own
    Newton history (convergence test, rates, Jacobian schedule, failures, iteration count for
    the controller): a sample that has converged is frozen while the others iterate, and a
    failure rejects only the samples that failed, so each sample takes its solo steps.

DIRK (``DIRK``)
    Stage ``i`` solves ``Y_i = y + h sum_(j<i) a_ij k_j + h a_ii f(t + c_i h, Y_i)`` with the
    matrix ``I - h a_ii J`` (one LU per distinct diagonal value); an explicit first stage
    (ESDIRK) is ``f(t, y)``. Stage derivatives are recovered from the converged stage value,
    ``k_i = (Y_i - y - h sum_(j<i) a_ij k_j) / (h a_ii)``, which costs no evaluation and does
    not amplify the Newton error by ``f``'s stiffness (H&W II §IV.8, "(8.2a)"). Stiffly
    accurate methods take ``y1 = Y_s`` and hand ``k_s`` on as the next step's first stage
    (FSAL). The error estimate is the tableau's embedded one, ``h sum (b_i - b_hat_i) k_i``
    (Kværnø's embedded methods are themselves A-stable, so no filtering is applied).

Radau IIA (``RadauIIA``)
    The ``s n`` stage system ``Z_i = h sum_j a_ij f(t + c_j h, y + Z_j)`` is solved with the
    real ``s n x s n`` matrix ``I - h (A kron J)`` (a per-sample block for a batch); Hairer's
    eigen-transformation into one real and one complex ``n x n`` system is not used (the
    problems here have n <= 20). The starting values extrapolate the previous accepted
    step's collocation polynomial (H&W II (8.5)). The error estimate is Hairer's, H&W II
    (8.19)–(8.20): ``err = (I - h gamma0 J)^-1 (h gamma0 f(t, y) + sum_i e_i Z_i)``, where
    ``1/gamma0`` is the real eigenvalue of ``A^-1`` and ``e`` comes from the embedded
    formula of order ``s`` with weight ``gamma0`` at the node 0 (computed here from the
    tableau, not typed in); on the first step and after a rejection an estimate ``>= 1`` is
    filtered once more, ``(I - h gamma0 J)^-1 (h gamma0 f(t, y + err) + sum_i e_i Z_i)``
    (one evaluation). The dense output is the collocation polynomial. Step sizes come from
    :class:`PredictiveController` (Gustafsson's predictive controller, as in RADAU5).
"""
from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import _xp
from ..tableaus import ButcherTableau
from .base import StepResult, TimeContext, lincomb, step_combination
from .rk import ExplicitRK, weighted_sum

#: rate above which the iteration counts as divergent (Hairer's RADAU5 uses 0.99)
DIVERGENCE_RATE = 0.99
#: Newton iterations allowed per step in adaptive mode (RADAU5's default NIT = 7)
MAX_NEWTON = 7
#: ... and in fixed-step mode, where the iteration must reach round-off (no rejection possible)
MAX_NEWTON_FIXED = 50
#: the Jacobian is recomputed after a step whose iteration took more than 2 iterations at a
#: rate above this (scipy's Radau rule)
JAC_RATE = 1e-3
#: a second increment within the tolerance that is at least this fraction of the first is
#: round-off, not convergence: the iteration has stalled at its floor and is accepted (an exact
#: predictor, e.g. y' = const from a state away from 0, gives increments of a few ulps whose
#: measured "rate" is ~1; kvaerno5 on y' = 3, y(0.41) = 0.5 failed with NEWTON_FAILED before)
STALL_RATE = 0.5
#: the step after a Newton failure is this fraction of the failed one (RADAU5: 0.5)
FAILURE_SHRINK = 0.5


def _eps(dtype: Any) -> float:
    return float(np.finfo(np.float32 if "32" in str(dtype) else np.float64).eps)


# ----------------------------------------------------------------------------- Jacobians
class JacobianSource:
    """``J = df/dy (t, y)``: shape ``(n, n)``, or ``(B, n, n)`` (one block per sample) for a
    batch ``(B, n)``. ``kind`` is ``"user"``, ``"autodiff"`` or ``"finite-difference"``."""

    def __init__(self, f_raw: Callable, jac: Callable | None, y0: Any) -> None:
        self.f_raw, self.jac = f_raw, jac
        if jac is not None:
            self.kind = "user"
        elif _xp.library_name(_xp.namespace(y0)) in ("torch", "jax"):
            self.kind = "autodiff"
        else:
            self.kind = "finite-difference"

    def __call__(self, fun: Callable, tc: TimeContext, t: Any, y: Any, f0: Any) -> Any:
        xp = tc.xp
        y = _xp.stop_gradient(y)
        t_arr = tc.time(t)
        if self.kind == "user":
            return self._user(xp, tc, t_arr, y)
        if self.kind == "autodiff":
            f_raw = self.f_raw
            return _xp.stop_gradient(_xp.jacobian(lambda v: f_raw(t_arr, v), y))
        # forward differences, one column (component j of every sample) per evaluation, from a
        # fresh f(t, y): the f0 handed in may be an FSAL stage derivative recovered from the
        # Newton solution, off by the Newton error / (h gamma), which the difference would amplify
        y_np = np.asarray(_xp.to_numpy(y), dtype=np.float64)
        n = y_np.shape[-1]
        # Hairer's RADAU5 increment sqrt(eps max(1e-5, |y|)), and at least sqrt(eps) |y| (so
        # that it survives rounding for large |y|)
        a = np.abs(y_np)
        delta = np.sqrt(_eps(tc.dtype) * np.maximum(1e-5, a)) * np.maximum(1.0, np.sqrt(a))
        f0 = _xp.stop_gradient(fun(t_arr, y))
        cols = []
        for j in range(n):
            pert = np.zeros_like(y_np)
            pert[..., j] = delta[..., j]
            yj = y + xp.asarray(pert, dtype=tc.dtype, device=tc.device)
            # the increment actually made, after rounding
            dj = np.asarray(_xp.to_numpy(yj), dtype=np.float64)[..., j] - y_np[..., j]
            with np.errstate(divide="ignore", invalid="ignore"):
                inv_dj = np.where(dj != 0, 1.0 / np.where(dj != 0, dj, 1.0), 0.0)  # 0: a non-finite y
            inv = xp.asarray(inv_dj[..., None] if y_np.ndim == 2 else float(inv_dj), dtype=tc.dtype,
                             device=tc.device)
            cols.append((fun(t_arr, yj) - f0) * inv)
        return xp.stack(cols, axis=-1)

    def _user(self, xp: Any, tc: TimeContext, t_arr: Any, y: Any) -> Any:
        J = self.jac(t_arr, y)
        if not _xp.is_array(J):
            J = np.asarray(J, dtype=np.float64)
        shape = tuple(J.shape)
        n = y.shape[-1]
        expected = (n, n) if y.ndim == 1 else (y.shape[0], n, n)
        if y.ndim == 2 and shape == (n, n):  # one Jacobian for every sample (a linear field)
            J = xp.broadcast_to(xp.asarray(J, dtype=tc.dtype, device=tc.device), expected)
            shape = expected
        if shape != expected:
            also = f" (or ({n}, {n}) shared by every sample)" if y.ndim == 2 else ""
            raise ValueError(
                f"jac returned shape {shape}, but the state has shape {tuple(y.shape)}: jac(t, y) must return"
                f" the Jacobian df/dy of shape {expected}{also}"
            )
        return xp.asarray(J, dtype=tc.dtype, device=tc.device)


# ----------------------------------------------------------------------------- per-solve state
@dataclass
class NewtonState:
    """Work an implicit solver carries from step to step (one per solve, mutable)."""

    jac: JacobianSource
    rtol: Any
    atol: Any
    newton_tol: float  #: convergence threshold, in units of the scale atol + rtol |y|
    max_iter: int
    fixed: bool
    J: Any = None
    J_t: Any = None  #: the time at which J was evaluated (host float or array)
    want_jac: bool = False  #: the last iteration converged slowly: recompute J at the next step
    lus: dict = dataclasses.field(default_factory=dict)  #: key -> (h, LUFactors)
    eta: float = 1.0  #: eta = theta / (1 - theta) of the last converged iteration
    theta: float = 0.0  #: the last convergence rate
    rate_known: bool = False  #: a rate has been measured (an iteration converged in >= 2 steps)
    #: never accept a stage before this many iterations (1: Hairer's rule, a known rate lets
    #: the first iteration converge; 2: what a discrete gradient needs, see ImplicitBase)
    min_iter: int = 1
    first: bool = True  #: no step accepted yet
    rejected_last: bool = False
    poly: Any = None  #: Radau: (Z stages, h) of the last accepted step, for starting values
    poly_valid: Any = None  #: per sample: which samples' `poly` comes from an accepted step
    candidate: Any = None  #: Radau: (Z stages, h) of the last attempted step
    # work in the current step
    njev: int = 0
    nlu: int = 0
    iters: int = 0

    def begin_step(self) -> None:
        self.njev = self.nlu = self.iters = 0

    _HISTORY = ("eta", "theta", "rate_known", "want_jac")

    def history(self) -> dict:
        """The per-sample Newton history (copies), to restore samples that are not retried."""
        return {k: np.array(getattr(self, k), copy=True) for k in self._HISTORY}

    def restore(self, mask: np.ndarray, saved: dict) -> None:
        """Samples outside ``mask`` get ``saved`` back."""
        for k in self._HISTORY:
            setattr(self, k, np.where(mask, getattr(self, k), saved[k]))


def make_state(f_raw: Callable, tc: TimeContext, y0: Any, *, jac: Callable | None = None, rtol: Any = 1e-6,
               atol: Any = 1e-9, fixed: bool = False, min_iter: int = 1) -> NewtonState:
    """The per-solve state of an implicit solver (see the module docstring for the tolerances)."""
    eps = _eps(tc.dtype)
    if fixed:
        rtol = atol = 100 * eps
        # 0.1 in units of 100 eps (1 + |y|): 10 eps per step, which keeps the accumulated Newton
        # error below an order sweep's round-off floor of 20 n eps (100 eps per step does not)
        tol = 0.1
        max_iter = MAX_NEWTON_FIXED
    else:
        r = float(np.min(_xp.to_numpy(rtol))) if _xp.is_array(rtol) else float(rtol)
        tol = max(10 * eps / r, min(0.03, math.sqrt(r)))
        max_iter = MAX_NEWTON
    st = NewtonState(jac=JacobianSource(f_raw, jac, y0), rtol=rtol, atol=atol, newton_tol=tol,
                     max_iter=max_iter, fixed=fixed, min_iter=min_iter)
    if tc.per_sample:
        # every sample keeps its own Newton history, so that its steps are those of a solo solve
        B = y0.shape[0]
        st.eta, st.theta = np.ones(B), np.zeros(B)
        st.rate_known, st.want_jac = np.zeros(B, dtype=bool), np.zeros(B, dtype=bool)
        st.first, st.rejected_last = np.ones(B, dtype=bool), np.zeros(B, dtype=bool)
    return st


def _host_norm(tc: TimeContext, x: Any, scale: Any) -> float:
    """RMS of x / scale: over everything (shared), or the largest per-sample RMS (per sample)."""
    v = np.asarray(_xp.to_numpy(_xp.stop_gradient(x / scale)), dtype=np.float64)
    if tc.per_sample:
        return float(np.max(np.sqrt(np.mean(v * v, axis=tuple(range(1, v.ndim))))))
    v = v.ravel()
    return math.sqrt(float(np.dot(v, v)) / v.size)


def _same_time(a: Any, b: Any) -> bool:
    return a is not None and bool(np.array_equal(np.asarray(a), np.asarray(b)))


def _h_array(tc: TimeContext, h: Any, ndim: int) -> Any:
    """h as a multiplier of a matrix stack: a float (shared) or an (B, 1, 1) array (per sample)."""
    if not tc.per_sample:
        return float(h)
    return tc.xp.asarray(np.asarray(h, dtype=np.float64).reshape((-1,) + (1,) * (ndim - 1)), dtype=tc.dtype,
                         device=tc.device)


def _safe_h(tc: TimeContext, h: Any) -> Any:
    """h with the zeros of finished samples (per-sample mode) replaced by 1, for divisions."""
    if not tc.per_sample:
        return h
    h = np.asarray(h, dtype=np.float64)
    return np.where(h != 0, h, 1.0)


class ImplicitBase:
    """What the implicit solvers share: tableau bookkeeping, the per-solve state, the
    Jacobian and LU caches, and the simplified Newton loop."""

    implicit = True
    failure_shrink = FAILURE_SHRINK
    # the collocation / continuous-extension machinery of the explicit steps applies as is:
    # dense output is y0 + h sum_i b_i(theta) k_i over the (implied) stage derivatives
    dense_weights = ExplicitRK.dense_weights
    extra_stages = ExplicitRK.extra_stages

    def __init__(self, tableau: ButcherTableau) -> None:
        if tableau.explicit:
            raise ValueError(f"tableau {tableau.name!r} is explicit; use ExplicitRK")
        self.tableau = tableau
        self.name = tableau.name
        self._v = tableau.float_view()
        self.order = tableau.order
        self.embedded_order = tableau.embedded_order
        self.stages = tableau.stages
        self.stiffly_accurate = tableau.stiffly_accurate
        self._extra_is_fsal = [False] * len(self._v.dense_extra_c)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, order={self.order}, embedded_order={self.embedded_order})"

    @property
    def has_dense(self) -> bool:
        return self._v.dense_P is not None

    # --- hooks of the integrator
    #: see :meth:`for_gradients`
    min_newton_iters = 1

    def for_gradients(self) -> ImplicitBase:
        """A copy that never accepts a Newton stage after a single iteration.

        The iteration matrix uses a Jacobian that is detached from the autodiff graph. After
        one iteration x1 = x0 - M^-1 G(x0; theta) the value depends on that Jacobian through
        M^-1 G(x0), and G(x0) is not small, so reverse-mode AD through the step misses a
        dM/dtheta term: measured on stiff_linear_1e4 (n_steps=10), dL/dA was off by 1.5e-3
        (kvaerno3), 1.1e-4 (radau_iia5) and 5.7e-6 (sdirk2) relative to central differences of
        the same solve. After a second iteration G(x1) is at the Newton tolerance and the
        detached Jacobian costs only that much (the derivative of a fixed-point iteration lags
        its value by one iteration: Griewank & Walther, Evaluating Derivatives, 2nd ed. 2008,
        ch. 15). tests/test_gradients_stiff.py checks the result against finite differences.
        """
        out = copy.copy(self)
        out.min_newton_iters = 2
        return out

    def init_state(self, f: Callable, tc: TimeContext, y0: Any, *, jac: Callable | None = None, rtol: Any = 1e-6,
                   atol: Any = 1e-9, fixed: bool = False) -> NewtonState:
        return make_state(f, tc, y0, jac=jac, rtol=rtol, atol=atol, fixed=fixed, min_iter=self.min_newton_iters)

    def after_step(self, state: NewtonState, accepted: Any) -> NewtonState:
        if isinstance(state.first, np.ndarray):  # per sample
            acc = np.asarray(accepted, dtype=bool)
            state.first = state.first & ~acc
            state.rejected_last = ~acc
            return state
        acc = bool(accepted)
        if acc:
            state.first = False
        state.rejected_last = not acc
        return state

    # --- Jacobian and LU
    def _ensure_jacobian(self, st: NewtonState, fun: Callable, tc: TimeContext, y: Any, f0: Any,
                         force: bool = False) -> None:
        t = tc.t
        if tc.per_sample:
            self._ensure_jacobian_per_sample(st, fun, tc, y, f0, force)
            return
        if st.J is None or force or (st.want_jac and not _same_time(st.J_t, t)):
            st.J = st.jac(fun, tc, t, y, f0)
            st.J_t = np.array(t, dtype=np.float64, copy=True)
            st.njev += 1
            st.want_jac = False
            st.lus.clear()

    def _ensure_jacobian_per_sample(self, st: NewtonState, fun: Callable, tc: TimeContext, y: Any, f0: Any,
                                    force: Any) -> None:
        """Per sample: refresh J where that sample's own rule asks (``force``: a mask)."""
        t = np.asarray(tc.t, dtype=np.float64)
        if st.J is None:
            need = np.ones(t.shape, dtype=bool)
        else:
            need = (st.want_jac & (st.J_t != t)) | np.asarray(force, dtype=bool)
        if not np.any(need):
            return
        J = st.jac(fun, tc, t, y, f0)
        if st.J is not None and not np.all(need):
            xp = tc.xp
            J = xp.where(xp.asarray(need[:, None, None], device=tc.device), J, st.J)
        st.J = J
        st.J_t = t.copy() if st.J_t is None else np.where(need, t, st.J_t)
        st.want_jac = st.want_jac & ~need
        st.njev += 1
        st.lus.clear()

    def _attempts(self, st: NewtonState, f: Callable, tc: TimeContext, y: Any, k1: Any,
                  run: Callable[[], tuple], h: Any = None, y_pred: Any = None) -> tuple:
        """Run the stage solve; where it fails with a Jacobian from an earlier step, refresh
        the Jacobian and run it once more. ``run() -> (stages, failed, why, iters)``: ``stages``
        a list of arrays, ``failed`` None or a per-sample mask. Per sample, only the samples
        that failed with a stale Jacobian are retried (the others keep their first result and
        Newton history), so each sample does what it would do alone.

        A fixed step cannot be rejected, and J at the step's start can be useless for its
        stages (y' = -2 t y^2: J = 0 at t = 0, and the iteration with M = I crawls at rate
        0.73). Given ``h``, a fixed step that still fails is retried once more with J at the
        step's end, at ``y_pred`` (default: the Euler predictor ``y + h k1``)."""
        if not tc.per_sample:
            out = run()
            if out[1] and not _same_time(st.J_t, tc.t):
                self._ensure_jacobian(st, f, tc, y, k1, force=True)
                out = run()
            if out[1] and st.fixed and h is not None:
                self._jacobian_at_end(st, f, tc, y, k1, h, y_pred, force=True)
                out = run()
            return out
        saved = st.history()
        stages, failed, why, iters = run()
        retries = [lambda mask: self._ensure_jacobian(st, f, tc, y, k1, force=mask)]
        if st.fixed and h is not None:
            retries.append(lambda mask: self._jacobian_at_end(st, f, tc, y, k1, h, y_pred, force=mask))
        for i, refresh in enumerate(retries):
            retry = failed & (st.J_t != np.asarray(tc.t)) if i == 0 else np.asarray(failed, dtype=bool)
            if not np.any(retry):
                continue
            st.restore(retry, saved)
            refresh(retry)
            stages2, failed2, why2, iters2 = run()
            xp = tc.xp
            m = xp.asarray(retry[:, None], device=tc.device)
            stages = [xp.where(m, a, b) for a, b in zip(stages2, stages)]
            failed = np.where(retry, failed2, failed)
            iters = np.where(retry, iters + iters2, iters)
            why = why2 if np.any(failed2 & retry) else why
        return stages, failed, why, iters

    def _jacobian_at_end(self, st: NewtonState, f: Callable, tc: TimeContext, y: Any, k1: Any, h: Any,
                         y_pred: Any, force: Any) -> None:
        """J at ``(t + h, y_pred)``, ``y_pred`` defaulting to ``y + h k1`` (fixed steps only)."""
        if y_pred is None:
            y_pred = y + tc.scale(np.asarray(h, dtype=np.float64)) * k1
        end = dataclasses.replace(tc, t=np.asarray(tc.t, dtype=np.float64) + np.asarray(h, dtype=np.float64))
        self._ensure_jacobian(st, f, end, y_pred, None, force=force)

    def _factor(self, st: NewtonState, key: Any, h: Any, build: Callable[[], Any]) -> tuple[Any, str | None]:
        cached = st.lus.get(key)
        if cached is not None and bool(np.array_equal(np.asarray(cached[0]), np.asarray(h))):
            return cached[1], None
        lu = _xp.lu_factor(build())
        st.nlu += 1
        if lu.singular:
            st.lus.pop(key, None)
            return None, (f"the iteration matrix ({key}) is singular (a zero or non-finite pivot) at"
                          f" t={_fmt_t(st)}")
        st.lus[key] = (np.array(h, dtype=np.float64, copy=True), lu)
        return lu, None

    # --- simplified Newton
    def _newton(self, st: NewtonState, tc: TimeContext, x0: Any, residual: Callable[[Any], Any], lu: Any,
                scale: Any) -> tuple[Any, str | None]:
        """Iterate ``x <- x + M^-1 (-residual(x))`` from ``x0``; returns (x, None) on
        convergence or (None, why) on failure."""
        x = x0
        eta = max(st.eta, _eps(tc.dtype)) ** 0.8
        dn_old = None
        theta = st.theta
        tol = st.newton_tol
        for k in range(1, st.max_iter + 1):
            dx = _xp.lu_solve(lu, -residual(x))
            st.iters += 1
            dn = _host_norm(tc, dx, scale)
            if not math.isfinite(dn):
                return None, "the Newton increment became non-finite"
            if dn_old is not None:
                theta = dn / dn_old if dn_old > 0 else 0.0
                if theta >= DIVERGENCE_RATE and dn > tol:
                    return None, f"the Newton iteration diverges (rate {theta:.3g} >= {DIVERGENCE_RATE})"
                eta = theta / (1.0 - theta) if theta < 1.0 else math.inf
                if (not st.fixed and theta < 1.0
                        and theta ** (st.max_iter - k) / (1.0 - theta) * dn > tol):
                    return None, (f"the Newton iteration converges too slowly (rate {theta:.3g}: it cannot"
                                  f" reach the tolerance in {st.max_iter} iterations)")
            x = x + dx
            # in fixed-step mode an increment below the threshold is round-off: the rate
            # computed from it means nothing
            # convergence on the first iteration rests on the previous rate; before any rate
            # has been measured it would accept anything a wrong Jacobian makes tiny
            stalled = k > 1 and theta >= STALL_RATE and dn <= tol
            if k >= st.min_iter and (k > 1 or st.rate_known) and (eta * dn <= tol or (st.fixed and dn <= tol)
                                                                  or stalled):
                st.eta, st.theta = (min(eta, 1.0), theta) if stalled else (eta, theta)
                st.rate_known = st.rate_known or k > 1
                st.want_jac = st.want_jac or (k > 2 and theta > JAC_RATE)
                return x, None
            dn_old = dn
        return None, f"the Newton iteration did not converge in {st.max_iter} iterations (last rate {theta:.3g})"

    def _newton_per_sample(self, st: NewtonState, tc: TimeContext, x0: Any, residual: Callable[[Any], Any],
                           lu: Any, scale: Any) -> tuple[Any, np.ndarray, str | None, np.ndarray]:
        """:meth:`_newton` with every test made per sample: a sample that has converged (or
        failed) is frozen while the others iterate. Returns (x, failed, why, iterations)."""
        xp = tc.xp
        x = x0
        B = x0.shape[0]
        tol, kmax = st.newton_tol, st.max_iter
        eta = np.maximum(st.eta, _eps(tc.dtype)) ** 0.8
        theta = np.array(st.theta, copy=True)
        dn_old = np.zeros(B)
        done = np.zeros(B, dtype=bool)
        failed = np.zeros(B, dtype=bool)
        iters = np.zeros(B, dtype=np.int64)
        why = None
        for k in range(1, kmax + 1):
            active = ~(done | failed)
            if not np.any(active):
                break
            dx = _xp.lu_solve(lu, -residual(x))
            st.iters += 1
            iters = iters + active
            v = np.asarray(_xp.to_numpy(_xp.stop_gradient(dx / scale)), dtype=np.float64).reshape(B, -1)
            # row by row, the formula of the shared path: the same norm to the last bit as a solo solve
            dn = np.asarray([math.sqrt(float(np.dot(r, r)) / r.size) for r in v])
            bad = active & ~np.isfinite(dn)
            if np.any(bad):
                why = "the Newton increment became non-finite"
            act = active & ~bad
            if k > 1:
                with np.errstate(divide="ignore", invalid="ignore"):
                    th = np.where(dn_old > 0, dn / np.where(dn_old > 0, dn_old, 1.0), 0.0)
                theta = np.where(act, th, theta)
                div = act & (theta >= DIVERGENCE_RATE) & (dn > tol)
                if np.any(div):
                    why = f"the Newton iteration diverges (rate {float(np.max(theta[div])):.3g} >= {DIVERGENCE_RATE})"
                act = act & ~div
                bad = bad | div
                with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
                    eta = np.where(act, np.where(theta < 1.0, theta / (1.0 - theta), math.inf), eta)
                    if not st.fixed:
                        slow = act & (theta < 1.0) & (theta ** (kmax - k) / (1.0 - theta) * dn > tol)
                        if np.any(slow):
                            why = (f"the Newton iteration converges too slowly (rate {float(np.max(theta[slow])):.3g}:"
                                   f" it cannot reach the tolerance in {kmax} iterations)")
                        act = act & ~slow
                        bad = bad | slow
            failed = failed | bad
            x = xp.where(xp.asarray(act[:, None], device=tc.device), x + dx, x)
            stalled = (k > 1) & (theta >= STALL_RATE) & (dn <= tol)
            conv = act & (k >= st.min_iter) & ((k > 1) | st.rate_known) & ((eta * dn <= tol) | (st.fixed & (dn <= tol))
                                                                           | stalled)
            st.eta = np.where(conv, np.where(stalled, np.minimum(eta, 1.0), eta), st.eta)
            st.theta = np.where(conv, theta, st.theta)
            st.rate_known = st.rate_known | (conv & (k > 1))
            st.want_jac = st.want_jac | (conv & (k > 2) & (theta > JAC_RATE))
            done = done | conv
            dn_old = np.where(act, dn, dn_old)
        left = ~(done | failed)
        if np.any(left):
            why = f"the Newton iteration did not converge in {kmax} iterations"
        return x, failed | left, why, iters

    def _fail(self, st: NewtonState, y: Any, why: str) -> StepResult:
        st.lus.clear()
        return StepResult(y1=y, err=None, err_aux=None, ks=[], nfev=0, state=st, njev=st.njev, nlu=st.nlu,
                          newton_iters=st.iters, failure=why)

    def _result(self, st: NewtonState, y1: Any, err: Any, ks: list[Any], fsal: Any, failed: Any = None,
                why: str | None = None, iters: Any = None) -> StepResult:
        """A step that converged (shared), or converged for some samples (per sample: the
        others are marked in ``failed`` and rejected by the integrator)."""
        per = isinstance(failed, np.ndarray)
        return StepResult(y1=y1, err=err, err_aux=None, ks=ks, nfev=0, fsal=fsal, state=st, njev=st.njev,
                          nlu=st.nlu, newton_iters=st.iters,
                          failure=why if per and np.any(failed) else None,
                          failed=failed if per and np.any(failed) else None,
                          sample_newton_iters=iters if per else None)

    def _scale(self, st: NewtonState, tc: TimeContext, y: Any) -> Any:
        return st.atol + st.rtol * tc.xp.abs(_xp.stop_gradient(y))

    def _stateless(self, f: Callable, tc: TimeContext, y: Any) -> NewtonState:
        """A fresh state for a call outside the integrator (one-step properties): Newton to round-off."""
        return make_state(f, tc, y, fixed=True)


def _fmt_t(st: NewtonState) -> str:
    t = st.J_t
    return "?" if t is None else np.array2string(np.asarray(t), precision=6)


# ----------------------------------------------------------------------------- DIRK
class DIRK(ImplicitBase):
    """A diagonally implicit Runge–Kutta method (DIRK, SDIRK, ESDIRK) from its tableau."""

    def __init__(self, tableau: ButcherTableau) -> None:
        A = tableau.A
        if any(A[i][j] != 0 for i in range(tableau.stages) for j in range(i + 1, tableau.stages)):
            raise ValueError(f"tableau {tableau.name!r} is not diagonally implicit (A has entries above the"
                             " diagonal); use RadauIIA or another fully implicit solver")
        super().__init__(tableau)
        v = self._v
        self.adaptive = v.b_err is not None
        self.has_dense_output = v.dense_P is not None
        self.dense_order = tableau.dense.order if tableau.dense is not None else min(3, tableau.order)
        last = v.stages - 1
        #: the last stage is y1 at t + h, and its derivative is the next step's first stage
        self.fsal = bool(tableau.stiffly_accurate and v.c[last] == 1.0 and v.A[last][last] != 0)

    @property
    def error_order(self) -> int:
        if self.embedded_order is None:
            return self.order + 1
        return min(self.order, self.embedded_order) + 1

    def step(self, f: Any, tc: TimeContext, y: Any, h: Any, k1: Any, *, estimate: bool,
             state: NewtonState | None = None) -> StepResult:
        st = state if state is not None else self._stateless(f, tc, y)
        st.begin_step()
        self._ensure_jacobian(st, f, tc, y, k1)
        stages, failed, why, iters = self._attempts(st, f, tc, y, k1, lambda: self._stages(st, f, tc, y, h, k1), h)
        if stages is None or (failed is not None and np.all(failed)):
            return self._fail(st, y, why)
        ks, y_last = stages[:-1], stages[-1]
        v = self._v
        y1 = y_last if self.fsal else step_combination(tc, y, h, v.b, ks)
        err = None
        if estimate and v.b_err is not None:
            err = ExplicitRK._scaled(tc, h, v.b_err, ks)
        return self._result(st, y1, err, ks, ks[-1] if self.fsal else None, failed, why, iters)

    def _stages(self, st: NewtonState, f: Any, tc: TimeContext, y: Any, h: Any, k1: Any) -> tuple:
        """(ks + [y_last], failed, why, iterations): shared, the first failure ends the step
        (stages None); per sample, failed samples are carried along and masked."""
        v = self._v
        n = y.shape[-1]
        scale = self._scale(st, tc, y)
        hs = _safe_h(tc, h)
        ks: list[Any] = []
        y_last = y
        per_sample = tc.per_sample
        failed = np.zeros(y.shape[0], dtype=bool) if per_sample else False
        iters = np.zeros(y.shape[0], dtype=np.int64) if per_sample else 0
        why = None
        for i in range(v.stages):
            gamma = v.A[i][i]
            t_i = tc.time(tc.t + v.c[i] * h)
            base = step_combination(tc, y, h, list(v.A[i][:i]), ks) if i else y
            if gamma == 0.0:
                k = k1 if (i == 0 and v.c[0] == 0.0) else f(t_i, base)
                ks.append(k)
                y_last = base
                continue
            hg = h * gamma if not per_sample else np.asarray(h) * gamma
            lu, msg = self._factor(st, ("dirk", gamma), hg, lambda: self._matrix(tc, st.J, hg, n))
            if lu is None:
                return None, True, msg, iters
            hg_x = tc.scale(hg)
            pred = base + hg_x * (ks[-1] if ks else k1)

            def residual(Y: Any, base=base, t_i=t_i, hg_x=hg_x) -> Any:
                return Y - base - hg_x * f(t_i, Y)

            where = f"(stage {i}, t={float(np.max(tc.t)):.17g}, h={_fmt_h(h)})"
            if per_sample:
                Y, bad, msg, it = self._newton_per_sample(st, tc, pred, residual, lu, scale)
                iters = iters + it
                if np.any(bad & ~failed):
                    why = f"{msg} {where}"
                failed = failed | bad
            else:
                Y, msg = self._newton(st, tc, pred, residual, lu, scale)
                if Y is None:
                    return None, True, f"{msg} {where}", iters
            ks.append((Y - base) * (tc.scale(1.0 / (hs * gamma)) if per_sample else 1.0 / (float(h) * gamma)))
            y_last = Y
        return ks + [y_last], (failed if per_sample else False), why, iters

    @staticmethod
    def _matrix(tc: TimeContext, J: Any, hg: Any, n: int) -> Any:
        xp = tc.xp
        return xp.eye(n, dtype=tc.dtype, device=tc.device) - _h_array(tc, hg, 3) * J


def _fmt_h(h: Any) -> str:
    a = np.asarray(h)
    return f"{float(a):.3g}" if a.ndim == 0 else np.array2string(a, precision=3)


# ----------------------------------------------------------------------------- Radau IIA
def _collocation_dense(c: np.ndarray) -> tuple[tuple[float, ...], ...]:
    """b_i(theta) = int_0^theta l_i(s) ds for the Lagrange basis l_i over the nodes c: the
    collocation polynomial as y0 + h sum_i b_i(theta) k_i (rows: theta^1 .. theta^s)."""
    s = len(c)
    rows = []
    for i in range(s):
        p = np.poly1d([1.0])
        for j in range(s):
            if j != i:
                p = p * np.poly1d([1.0, -c[j]]) / (c[i] - c[j])
        coeffs = np.polyint(p).coeffs[::-1]  # lowest power first; coeffs[0] = 0
        rows.append(tuple(float(x) for x in coeffs[1:]))
    return tuple(rows)


def radau_error_weights(A: np.ndarray, c: np.ndarray) -> tuple[float, np.ndarray] | None:
    """``(gamma0, e)`` of Hairer's embedded estimate for a collocation method (H&W II (8.20)).

    ``1/gamma0`` is the real eigenvalue of ``A^-1``. The embedded formula has weight
    ``gamma0`` at the node 0 and weights ``b_hat`` at the nodes ``c`` such that it integrates
    polynomials of degree < s exactly (order s); since ``h k = A^-1 Z``,
    ``y_hat - y1 = h gamma0 f(t, y) + sum_i e_i Z_i`` with ``e = A^-T (b_hat - b)``.
    None when ``A^-1`` has no real eigenvalue (an even number of stages).
    """
    s = len(c)
    Ainv = np.linalg.inv(A)
    lam = np.linalg.eigvals(Ainv)
    real = [x.real for x in lam if abs(x.imag) <= 1e-12 * abs(x)]
    if not real:
        return None
    gamma0 = 1.0 / max(real)
    V = np.vander(c, s, increasing=True).T  # V[k, i] = c_i^k
    rhs = np.asarray([1.0 / (k + 1) for k in range(s)])
    rhs[0] -= gamma0
    b_hat = np.linalg.solve(V, rhs)
    b = A[-1]  # stiffly accurate: b is the last row of A
    return gamma0, np.linalg.solve(A.T, b_hat - b)


class RadauIIA(ImplicitBase):
    """A fully implicit collocation method (Radau IIA) from its tableau; see the module docstring."""

    def __init__(self, tableau: ButcherTableau) -> None:
        if not tableau.stiffly_accurate:
            raise ValueError(f"tableau {tableau.name!r} is not stiffly accurate; RadauIIA needs b = last row of A")
        super().__init__(tableau)
        v = self._v
        self._A = np.asarray(v.A, dtype=np.float64)
        self._c = np.asarray(v.c, dtype=np.float64)
        self._Ainv = np.linalg.inv(self._A)
        if v.dense_P is None:
            self._v = dataclasses.replace(v, dense_P=_collocation_dense(self._c))
        self.dense_order = tableau.dense.order if tableau.dense is not None else self.stages
        est = radau_error_weights(self._A, self._c)
        self.adaptive = est is not None
        self.gamma0, self._e = est if est is not None else (None, None)
        if self.adaptive and self.embedded_order is None:
            self.embedded_order = self.stages  # Hairer's embedded formula has order s
        self.fsal = False

    @property
    def error_order(self) -> int:
        """err ~ h^(s+1) (RADAU5's exponent 1/4 for s = 3)."""
        return self.stages + 1

    def default_controller(self) -> "PredictiveController":
        return PredictiveController()

    def after_step(self, state: NewtonState, accepted: Any) -> NewtonState:
        cand = state.candidate
        if cand is not None:
            if isinstance(accepted, np.ndarray):
                acc = np.asarray(accepted, dtype=bool)
                if state.poly is None:
                    state.poly, state.poly_valid = cand, acc.copy()
                elif np.any(acc):
                    xp = _xp.namespace(cand[0][0])
                    mask = xp.asarray(acc[:, None], device=_xp.device(cand[0][0]))
                    zs = [xp.where(mask, a, b) for a, b in zip(cand[0], state.poly[0])]
                    state.poly = (zs, np.where(acc, cand[1], state.poly[1]))
                    state.poly_valid = state.poly_valid | acc
            elif accepted:
                state.poly = cand
        return super().after_step(state, accepted)

    def _start(self, st: NewtonState, tc: TimeContext, y: Any, h: Any) -> list[Any]:
        """Starting stage values: the last accepted collocation polynomial, extrapolated (zero on
        the first step)."""
        s = self.stages
        if st.poly is None:
            return [tc.xp.zeros_like(y) for _ in range(s)]
        zs, h_old = st.poly
        ratio = np.asarray(h, dtype=np.float64) / _safe_h(tc, h_old)
        nodes = np.concatenate([[0.0], self._c])
        # weights[..., j, i] = l_i(1 + c_j h / h_old) - [i = s]: Z0_j = sum_i w_ji Z_i
        outs = []
        for j in range(s):
            theta = 1.0 + self._c[j] * ratio
            w = []
            for i in range(1, s + 1):
                li = np.ones_like(theta)
                for m in range(s + 1):
                    if m != i:
                        li = li * (theta - nodes[m]) / (nodes[i] - nodes[m])
                w.append(li - (1.0 if i == s else 0.0))
            outs.append(weighted_sum(tc, np.stack(w, axis=-1), zs))
        if tc.per_sample and not np.all(st.poly_valid):  # samples without an accepted step start at 0
            xp = tc.xp
            m = xp.asarray(st.poly_valid[:, None], device=tc.device)
            outs = [xp.where(m, o, xp.zeros_like(o)) for o in outs]
        return outs

    def _matrix(self, tc: TimeContext, J: Any, h: Any) -> Any:
        xp = tc.xp
        s, n = self.stages, J.shape[-1]
        A = xp.asarray(self._A, dtype=tc.dtype, device=tc.device)
        if J.ndim == 2:
            K = xp.reshape(A[:, None, :, None] * J[None, :, None, :], (s * n, s * n))
        else:
            K = xp.reshape(A[None, :, None, :, None] * J[:, None, :, None, :], (J.shape[0], s * n, s * n))
        return xp.eye(s * n, dtype=tc.dtype, device=tc.device) - _h_array(tc, h, 3) * K

    def step(self, f: Any, tc: TimeContext, y: Any, h: Any, k1: Any, *, estimate: bool,
             state: NewtonState | None = None) -> StepResult:
        st = state if state is not None else self._stateless(f, tc, y)
        st.begin_step()
        xp = tc.xp
        s, n = self.stages, y.shape[-1]
        self._ensure_jacobian(st, f, tc, y, k1)
        scale = self._scale(st, tc, y)
        scale_s = xp.concat([scale] * s, axis=-1)
        A = self._A
        times = [tc.time(tc.t + self._c[i] * h) for i in range(s)]
        where = f"(t={float(np.max(tc.t)):.17g}, h={_fmt_h(h)})"

        def run() -> tuple:
            lu, why = self._factor(st, "radau", h, lambda: self._matrix(tc, st.J, h))
            if lu is None:
                return None, True, why, 0
            z0 = xp.concat(self._start(st, tc, y, h), axis=-1)

            def residual(z: Any) -> Any:
                parts = [z[..., i * n:(i + 1) * n] for i in range(s)]
                fs = [f(times[i], y + parts[i]) for i in range(s)]
                return xp.concat([parts[i] - ExplicitRK._scaled(tc, h, list(A[i]), fs) for i in range(s)], axis=-1)

            if tc.per_sample:
                z, failed, why, iters = self._newton_per_sample(st, tc, z0, residual, lu, scale_s)
                return [z], failed, (None if why is None else f"{why} {where}"), iters
            z, why = self._newton(st, tc, z0, residual, lu, scale_s)
            if z is None:
                return None, True, f"{why} {where}", 0
            return [z], False, None, 0

        stages, failed, why, iters = self._attempts(st, f, tc, y, k1, run, h)
        if stages is None or (isinstance(failed, np.ndarray) and np.all(failed)):
            return self._fail(st, y, why)
        zs = [stages[0][..., i * n:(i + 1) * n] for i in range(s)]
        st.candidate = (zs, np.array(h, dtype=np.float64, copy=True))
        y1 = y + zs[-1]
        # implied stage derivatives h k = A^-1 Z (no evaluation; for the dense output)
        hs = _safe_h(tc, h)
        inv_h = tc.scale(1.0 / hs) if tc.per_sample else 1.0 / float(h)
        ks = [lincomb(list(self._Ainv[i]), zs) * inv_h for i in range(s)]
        err = self._estimate(st, f, tc, y, y1, h, k1, zs) if estimate and self.adaptive else None
        if isinstance(err, str):
            return self._fail(st, y, err)
        return self._result(st, y1, err, ks, None, failed, why, iters)

    def _estimate(self, st: NewtonState, f: Any, tc: TimeContext, y: Any, y1: Any, h: Any, k1: Any,
                  zs: list[Any]) -> Any:
        """Hairer's filtered estimate, H&W II (8.19)-(8.20), with the second filtering on the
        first step and after a rejection."""
        xp, n = tc.xp, y.shape[-1]
        g0 = self.gamma0
        hg = h * g0 if not tc.per_sample else np.asarray(h) * g0
        lu, why = self._factor(st, "error", hg, lambda: DIRK._matrix(tc, st.J, hg, n))
        if lu is None:
            return why
        ez = lincomb(list(self._e), zs)
        hg_x = tc.scale(hg)
        err = _xp.lu_solve(lu, hg_x * k1 + ez)
        if np.any(st.first | st.rejected_last):
            sc = st.atol + st.rtol * xp.maximum(xp.abs(y), xp.abs(y1)) if not st.fixed else None
            if sc is not None:
                v = np.asarray(_xp.to_numpy(_xp.stop_gradient(err / sc)), dtype=np.float64)
                norms = np.sqrt(np.mean(v * v, axis=-1)) if tc.per_sample else np.sqrt(np.mean(v * v))
                big = (norms >= 1.0) & (st.first | st.rejected_last)
                if np.any(big):
                    err2 = _xp.lu_solve(lu, hg_x * f(tc.time(tc.t), y + err) + ez)
                    if tc.per_sample:
                        err2 = xp.where(xp.asarray(big[:, None], device=tc.device), err2, err)
                    err = err2
        return err


# ----------------------------------------------------------------------------- controller
@dataclass(frozen=True)
class PredictiveState:
    prev_err: Any  #: error of the last accepted step (>= 1e-2), float or array
    h_acc: Any  #: size of the last accepted step (0: none yet)
    first: Any  #: no step accepted yet
    rejected_last: Any


@dataclass(frozen=True)
class PredictiveController:
    """Gustafsson's predictive step-size controller as RADAU5 uses it (H&W II §IV.8, (8.25)).

    With ``k`` the error exponent (4 for Radau5) and ``safe = safety (2 k_max + 1) /
    (2 k_max + newton_iters)`` (a step whose Newton iteration needed many iterations grows
    less), the classical proposal is ``safe * err^(-1/k)``; after an accepted step that
    follows another, Gustafsson's ``safe * (h / h_acc) * (err_acc / err^2)^(1/k)`` is used
    when it is smaller. Factors are clipped to ``[factor_min, factor_max]`` (RADAU5's
    FACL = 5, FACR = 1/8); a proposed growth in ``[1, keep_max]`` keeps ``h`` unchanged, so
    that the LU factors stay valid (RADAU5's QUOT1 = 1, QUOT2 = 1.2); after a rejection the
    step does not grow; a rejected first step is cut to a tenth. ``err_acc = max(err, 1e-2)``.
    Works on Python floats (shared step) and on NumPy arrays (per sample) alike.
    """

    safety: float = 0.9
    factor_min: float = 0.2
    factor_max: float = 8.0
    keep_max: float = 1.2
    max_newton: int = MAX_NEWTON
    uses_step_info = True

    def init(self, shape: tuple[int, ...]) -> PredictiveState:
        if shape == ():
            return PredictiveState(1.0, 0.0, True, False)
        return PredictiveState(np.ones(shape), np.zeros(shape), np.ones(shape, dtype=bool),
                               np.zeros(shape, dtype=bool))

    def __call__(self, err: Any, k: int, state: PredictiveState, *, h: Any, newton_iters: int = 0) -> tuple:
        scalar = not isinstance(err, np.ndarray)
        e = np.asarray(err, dtype=np.float64)
        hh = np.abs(np.asarray(h, dtype=np.float64))
        finite = np.isfinite(e)
        accept = finite & (e <= 1.0)
        safe_e = np.where(finite, np.maximum(e, 1e-10), 1.0)
        safe = np.minimum(self.safety,
                          self.safety * (2 * self.max_newton + 1) / (2 * self.max_newton + np.asarray(newton_iters)))
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            fac = safe * safe_e ** (-1.0 / k)
            h_acc = np.asarray(state.h_acc, dtype=np.float64)
            gus = safe * (hh / np.where(h_acc > 0, h_acc, 1.0)) * (np.asarray(state.prev_err) / safe_e**2) ** (1.0 / k)
        use_gus = accept & ~np.asarray(state.first) & (h_acc > 0)
        fac = np.where(use_gus, np.minimum(fac, gus), fac)
        fac = np.clip(fac, self.factor_min, self.factor_max)
        fac = np.where(finite, fac, self.factor_min)
        rejected = ~accept
        fac = np.where(accept & np.asarray(state.rejected_last), np.minimum(fac, 1.0), fac)
        fac = np.where(accept & (fac >= 1.0) & (fac <= self.keep_max), 1.0, fac)
        fac = np.where(rejected, np.minimum(fac, self.safety), fac)
        fac = np.where(rejected & np.asarray(state.first), 0.1, fac)
        new = PredictiveState(prev_err=np.where(accept, np.maximum(safe_e, 1e-2), state.prev_err),
                              h_acc=np.where(accept, hh, h_acc), first=np.asarray(state.first) & ~accept,
                              rejected_last=rejected)
        if scalar:
            new = PredictiveState(float(new.prev_err), float(new.h_acc), bool(new.first), bool(new.rejected_last))
            return bool(accept), float(fac), new
        return accept, fac, new


def implicit_solver(tableau: ButcherTableau) -> DIRK | RadauIIA:
    """The implicit solver of a tableau: DIRK for a lower-triangular A, else RadauIIA."""
    A = tableau.A
    lower = all(A[i][j] == 0 for i in range(tableau.stages) for j in range(i + 1, tableau.stages))
    return DIRK(tableau) if lower else RadauIIA(tableau)
