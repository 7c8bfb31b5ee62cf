"""Variable-order, variable-step BDF / NDF (orders 1-5) in backward-difference form.

The method
    The numerical differentiation formulas (NDF) of Shampine & Reichelt, "The MATLAB ODE
    suite", SIAM J. Sci. Comput. 18 (1997) 1-22, §2, in the quasi-constant step-size form
    of the paper's §2.3: the solution is carried as the backward differences
    ``D_0 = y_n, D_j = nabla^j y_n`` (j = 1 .. k+2) of an equally spaced history with step
    ``h``. With ``gamma_k = sum_(j<=k) 1/j``, ``alpha_k = (1 - kappa_k) gamma_k`` and the
    NDF constants ``kappa = (-0.1850, -1/9, -0.0823, -0.0415, 0)`` (the paper's Table 1;
    ``ndf=False`` gives the classical BDF, kappa = 0), a step of order ``k`` predicts
    ``y_pred = sum_(j<=k) D_j`` and solves the corrector

        (y - y_pred) + psi - (h / alpha_k) f(t + h, y) = 0,
        psi = sum_(1<=j<=k) gamma_j D_j / alpha_k

    by simplified Newton iterations with the matrix ``I - (h / alpha_k) J``. The local error
    estimate is ``(kappa_k gamma_k + 1/(k+1)) d`` with ``d = y - y_pred = nabla^(k+1) y_(n+1)``
    (Shampine & Reichelt (2.5)-(2.6)). When ``h`` changes by ``rho``, the differences are
    re-expressed on the new grid as ``D <- (R U)^T D`` with ``R_ij = prod_(m=1..i) (m - 1 -
    rho j) / m`` and ``U`` = R at rho = 1 (the interpolating polynomial is unchanged;
    Shampine & Reichelt §2.3, after the step-change matrices of Byrne & Hindmarsh, "A
    polyalgorithm for the numerical solution of ordinary differential equations", ACM TOMS
    1 (1975) 71-96). This is the method of scipy's ``BDF``, whose semantics were matched
    (order selection, Newton limits, factor limits), not its code.

Newton iteration
    Reused from :mod:`odeverify.solvers.implicit` (``JacobianSource``, ``NewtonState``, the
    Jacobian/LU caches, the retry with a fresh Jacobian, the convergence tests of H&W II
    (8.10)-(8.13)), with at most ``NEWTON_MAXITER = 4`` iterations in adaptive mode (scipy
    BDF's limit) and the starting value ``y_pred``. The LU of ``I - (h/alpha_k) J`` is reused
    while ``h / alpha_k`` is unchanged, which the quasi-constant step strategy makes common.
    ``J`` is refreshed only when the iteration fails with a stale one (``jac_refresh=
    "failure"``, scipy BDF's rule; measured on HIRES/ROBER: 2-4x fewer Jacobians, ~25 % more
    evaluations than ``"slow"``, implicit.py's Radau rule of also refreshing after a slowly
    converging iteration).

How the loop drives it (the design choice)
    The one time loop (:func:`odeverify.integrate.solve`) proposes ``h`` and accepts or
    rejects; this solver keeps everything else in its per-solve state (:class:`BDFState`):
    the differences, the step size they are expressed for, the order, the count of equal
    steps. ``step`` re-expresses the history for the ``h`` it is given when that differs,
    solves the corrector, returns ``err`` (the loop's scaled RMS norm of it decides
    acceptance) and, for the dense output, the interpolating polynomial through the new
    history. Order and step selection happen in ``step`` too, from the estimates at orders
    k-1, k, k+1 (Shampine & Reichelt §2.4; scipy's rule: only after k+1 steps of equal size,
    otherwise h is kept), and are stored as a *proposal* in the state; ``after_step`` commits
    the new history and order when the step is accepted. The proposal reaches the loop
    through :class:`BDFController` (``BDF.default_controller()``): a controller that declares
    ``uses_step_result = True`` receives the step's :class:`StepResult` (one keyword added to
    the loop's controller call) and returns the solver's proposed factor for an accepted step,
    ``max(0.2, safety err^(-1/(k+1)))`` for a rejected one. A Newton failure halves h (the
    loop's ``failure_shrink``), as in scipy.

    The norms of the k-1 and k+1 estimates use the loop's scale ``atol + rtol max(|y|,
    |y1|)`` (scipy uses ``atol + rtol |y1|``), so the three norms compared are consistent with
    the one that decided acceptance.

Modes and limits
    * Shared step only: ``batch="per-sample"`` is refused with a clear error (each sample
      would need its own history, order and step-change matrices; the loop's per-sample mode
      does not carry them). A batch ``(B, n)`` with a shared step works (block Jacobians).
    * Fixed-step mode (``dt`` / ``n_steps``) runs the formulas with the order raised by one
      per step up to ``max_order`` (the history must be built from one point), Newton driven
      to round-off. Its global order is therefore that of the start-up steps, not
      ``max_order``: the reference backend lists ``bdf`` as adaptive only
      (``variable_order = True``). With ``max_order=1, ndf=False`` it is backward Euler.
    * ``order`` is 5, the highest order; ``embedded_order`` is None (the estimate's order
      follows the current order), so tolerance proportionality has no single expected
      exponent. ``dense_order`` is 1: the interpolant has the current order, which is 1 in
      the start-up steps.
    * A stand-alone ``step`` call without a state (one-step properties) is a first step:
      order 1 from ``y``, Newton to round-off.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import numpy as np

from .. import _xp
from .base import StepResult, TimeContext, lincomb
from .implicit import DIRK, ImplicitBase, NewtonState, make_state

#: the highest order (the NDFs are not A(alpha)-stable enough beyond 5; Shampine & Reichelt §2.2)
MAX_ORDER = 5
#: Newton iterations per step in adaptive mode (scipy BDF's NEWTON_MAXITER)
NEWTON_MAXITER = 4
#: the NDF constants kappa_1 .. kappa_5 (Shampine & Reichelt 1997, Table 1; kappa_5 = 0)
NDF_KAPPA = (-0.1850, -1.0 / 9.0, -0.0823, -0.0415, 0.0)
#: step-size change limits of an accepted step and of a rejected one (scipy BDF's)
MAX_FACTOR = 10.0
MIN_FACTOR = 0.2
SAFETY = 0.9
#: when the Jacobian is refreshed: "failure" (scipy BDF: only when the iteration fails with a
#: stale one) or "slow" (also after a slowly converging iteration: implicit.py's Radau rule)
JAC_POLICIES = ("failure", "slow")


def step_change_matrix(order: int, rho: float) -> np.ndarray:
    """``R`` with ``R_0j = 1``, ``R_ij = prod_(m=1..i) (m - 1 - rho j) / m`` (i, j = 0 .. order):
    Shampine & Reichelt (1997) §2.3, the step-change matrix of the backward differences."""
    j = np.arange(order + 1, dtype=np.float64)
    rows = [np.ones(order + 1)]
    for i in range(1, order + 1):
        rows.append(rows[-1] * (i - 1 - rho * j) / i)
    return np.stack(rows)


def rescale_differences(D: list[Any], order: int, rho: float) -> list[Any]:
    """The differences D_0 .. D_order re-expressed for the step ``rho h`` (same polynomial):
    ``D <- (R(rho) U)^T D`` with ``U = R(1)``; higher differences are kept as they are."""
    RU = step_change_matrix(order, rho) @ step_change_matrix(order, 1.0)
    new = [lincomb(list(RU[:, j]), D[: order + 1]) for j in range(order + 1)]
    new = [D[0] * 0.0 if v is None else v for v in new]  # an all-zero column of RU
    return new + list(D[order + 1:])


@dataclass
class BDFState(NewtonState):
    """The Newton state of :mod:`implicit` plus the BDF history (see the module docstring)."""

    D: Any = None  #: backward differences D_0 .. D_(MAX_ORDER+2), a list of arrays
    h_D: float = 0.0  #: the step size the differences are expressed for
    order: int = 1
    n_equal: int = 0  #: accepted steps taken with the present h and order
    proposal: Any = None  #: what the last attempted step proposes (see BDF.step)


class BDF(ImplicitBase):
    """Variable-order (1 .. ``max_order``) NDF/BDF in backward-difference form; see the module docstring."""

    variable_order = True  #: the reference backend lists it adaptive-only, without an error order
    #: its history (backward differences of past steps) does not hold across a discontinuity of
    #: the field: the loop starts it afresh (order 1) after a step that lands on a ``tstops`` time
    restarts_at_stops = True
    adaptive = True
    has_dense = True
    fsal = False
    embedded_order = None
    dense_order = 1
    stages = 1
    stiffly_accurate = True
    #: the loop reads ``error_order`` for its initial step (exponent 1/(error_order + 1)): 1,
    #: the start-up order, which gives scipy's initial step for BDF
    error_order = 1

    def __init__(self, max_order: int = MAX_ORDER, ndf: bool = True, name: str | None = None,
                 jac_refresh: str = "failure") -> None:
        if jac_refresh not in JAC_POLICIES:
            raise ValueError(f"jac_refresh={jac_refresh!r}; expected one of {JAC_POLICIES}")
        self.jac_refresh = jac_refresh
        if not isinstance(max_order, (int, np.integer)) or not 1 <= max_order <= MAX_ORDER:
            raise ValueError(f"max_order={max_order!r}, but it must be an int in 1 .. {MAX_ORDER}")
        self.max_order = int(max_order)
        self.order = self.max_order
        self.ndf = bool(ndf)
        self.name = name or ("bdf" if (ndf and max_order == MAX_ORDER) else f"{'ndf' if ndf else 'bdf'}{max_order}")
        kappa = np.asarray((0.0,) + (NDF_KAPPA if ndf else (0.0,) * MAX_ORDER))
        self._gamma = np.concatenate([[0.0], np.cumsum(1.0 / np.arange(1, MAX_ORDER + 1))])
        self._alpha = (1.0 - kappa) * self._gamma
        self._error_const = kappa * self._gamma + 1.0 / np.arange(1, MAX_ORDER + 2)
        # StepInterpolant looks for the extra dense stages of a tableau: there are none
        self._v = SimpleNamespace(dense_extra_c=(), dense_P=True)
        self._extra_is_fsal = []
        self.tableau = None

    def __repr__(self) -> str:
        return f"BDF(max_order={self.max_order}, ndf={self.ndf})"

    def default_controller(self) -> "BDFController":
        return BDFController()

    # --- hooks of the integrator
    def init_state(self, f: Callable, tc: TimeContext, y0: Any, *, jac: Callable | None = None, rtol: Any = 1e-6,
                   atol: Any = 1e-9, fixed: bool = False) -> BDFState:
        if tc.per_sample:
            raise ValueError(
                f"method {self.name!r} does not support batch='per-sample': each sample would need its own"
                " backward-difference history, order and step-change matrices, which the loop's per-sample mode"
                " does not carry; use batch='shared' (one step for the batch) or solve the samples one by one"
            )
        st = make_state(f, tc, y0, jac=jac, rtol=rtol, atol=atol, fixed=fixed)
        st = BDFState(**{fl.name: getattr(st, fl.name) for fl in dataclasses.fields(NewtonState)})
        if not fixed:
            st.max_iter = NEWTON_MAXITER
        return st

    def after_step(self, state: BDFState, accepted: Any) -> BDFState:
        prop = state.proposal
        if bool(accepted) and prop is not None:
            state.D, state.h_D, state.n_equal = prop["D"], prop["h"], prop["n_equal"]
            if prop["order"] != state.order:
                state.n_equal = 0
            state.order = prop["order"]
        state.proposal = None
        return super().after_step(state, accepted)

    def _stateless(self, f: Callable, tc: TimeContext, y: Any) -> BDFState:
        return self.init_state(f, tc, y, fixed=True)

    # --- dense output: y0 + h sum_j b_j(theta) k_j with k_j = D_j / h (see dense_weights)
    def dense_weights(self, theta: np.ndarray) -> np.ndarray:
        """b_j(theta) = w_j(theta) - w_j(0), w_j(theta) = prod_(m<j) (theta - 1 + m) / (m + 1):
        the interpolating polynomial through the new history, sum_j D_j w_j(theta) + D_0, with
        the identity D_0 - D_1 = y0 taken out (columns j = 1 .. MAX_ORDER)."""
        th = np.asarray(theta, dtype=np.float64)
        cols, w, w0 = [], np.ones_like(th), 1.0
        for m in range(MAX_ORDER):
            w = w * (th - 1.0 + m) / (m + 1)
            w0 = w0 * (m - 1.0) / (m + 1)
            cols.append(w - w0)
        return np.stack(cols, axis=-1)

    def extra_stages(self, f: Any, tc: TimeContext, y0: Any, h: Any, ks: list[Any], k_end: Any) -> tuple[list, int]:
        return list(ks), 0

    # --- one step
    def step(self, f: Any, tc: TimeContext, y: Any, h: Any, k1: Any, *, estimate: bool,
             state: BDFState | None = None) -> StepResult:
        st = state if state is not None else self._stateless(f, tc, y)
        if tc.per_sample:
            raise ValueError(f"method {self.name!r} does not support batch='per-sample' (see BDF.init_state)")
        st.begin_step()
        st.proposal = None
        xp = tc.xp
        h = float(h)
        n = y.shape[-1]
        if st.D is None:  # the first step: D_0 = y0, D_1 = h f(t0, y0) (order 1)
            zero = xp.zeros_like(y)
            D = [y, k1 * h] + [zero] * (MAX_ORDER + 1)
            h_D, n_equal = h, 0
        else:
            D, h_D, n_equal = st.D, st.h_D, st.n_equal
        k = st.order
        if h != h_D:
            D = rescale_differences(D, k, h / h_D)
            n_equal = 0
        y_pred = lincomb([1.0] * (k + 1), D[: k + 1])
        psi = lincomb(list(self._gamma[1: k + 1] / self._alpha[k]), D[1: k + 1])
        c = float(h / self._alpha[k])
        scale = self._scale(st, tc, y_pred)
        t_new = tc.time(tc.t + h)
        if self.jac_refresh == "failure":
            st.want_jac = False  # scipy BDF: J is refreshed only when the iteration fails with a stale J
        self._ensure_jacobian(st, f, tc, y, k1)

        def residual(x: Any) -> Any:
            return (x - y_pred) + psi - f(t_new, x) * c

        def run() -> tuple:
            lu, why = self._factor(st, "bdf", c, lambda: DIRK._matrix(tc, st.J, c, n))
            if lu is None:
                return None, True, why, 0
            x, why = self._newton(st, tc, y_pred, residual, lu, scale)
            if x is None:
                return None, True, f"{why} (order {k}, t={float(tc.t):.17g}, h={h:.3g})", 0
            return [x], False, None, 0

        stages, failed, why, _ = self._attempts(st, f, tc, y, k1, run, h, y_pred)
        if stages is None:
            return self._fail(st, y, why)
        y1 = stages[0]
        d = y1 - y_pred
        # the new history: D_(k+2) = d - D_(k+1), D_(k+1) = d, D_j += D_(j+1) for j = k .. 0
        new = list(D)
        new[k + 2] = d - D[k + 1]
        new[k + 1] = d
        for j in range(k, -1, -1):
            new[j] = D[j] + new[j + 1]
        new[0] = y1  # = D_0 + ... + D_(k+1) up to round-off; keep the Newton solution itself
        err = d * float(self._error_const[k]) if estimate else None
        order_next = k
        factor = 1.0
        reject_factor = None
        if estimate:
            factor, order_next, reject_factor = self._select(st, tc, y, y1, d, new, k, n_equal)
        else:
            order_next = min(k + 1, self.max_order)  # fixed step: raise the order as the history grows
        st.proposal = {"D": new, "h": h, "order": order_next, "n_equal": n_equal + 1,
                       "factor": factor, "reject_factor": reject_factor}
        inv_h = 1.0 / h
        ks = [new[j] * inv_h for j in range(1, k + 1)]
        # the derivative of the BDF solution at t + h, from the corrector: f ~ (d + psi) / c;
        # offered as the next step's k1 so that the loop does not evaluate f(t + h, y1) (the
        # step only needs k1 on the first step and for a Jacobian, which evaluates f itself)
        fsal = (d + psi) * (1.0 / c)
        return self._result(st, y1, err, ks, fsal)

    def _select(self, st: BDFState, tc: TimeContext, y: Any, y1: Any, d: Any, new: list[Any], k: int,
                n_equal: int) -> tuple[float, int, float]:
        """(factor if accepted, next order, factor if rejected): Shampine & Reichelt §2.4, with
        scipy BDF's rules (keep h for k+1 equal steps; factors in [0.2, 10])."""
        xp = tc.xp
        iters = st.iters
        safety = SAFETY * (2 * NEWTON_MAXITER + 1) / (2 * NEWTON_MAXITER + iters)
        sc = st.atol + st.rtol * xp.maximum(xp.abs(_xp.stop_gradient(y)), xp.abs(_xp.stop_gradient(y1)))

        def norm(x: Any) -> float:
            v = np.asarray(_xp.to_numpy(_xp.stop_gradient(x / sc)), dtype=np.float64).ravel()
            return math.sqrt(float(np.dot(v, v)) / v.size)

        e_k = norm(d * float(self._error_const[k]))
        with np.errstate(divide="ignore", over="ignore"):
            reject = max(MIN_FACTOR, safety * (e_k ** (-1.0 / (k + 1)) if e_k > 0 else MAX_FACTOR))
        if not math.isfinite(e_k):
            reject = MIN_FACTOR
        if n_equal + 1 < k + 1:
            return 1.0, k, reject
        e_m = norm(new[k] * float(self._error_const[k - 1])) if k > 1 else math.inf
        e_p = norm(new[k + 2] * float(self._error_const[k + 1])) if k < self.max_order else math.inf
        errs = [e_m, e_k, e_p]
        with np.errstate(divide="ignore", over="ignore"):
            facs = [(e ** (-1.0 / (k + i)) if e > 0 else math.inf) if math.isfinite(e) else 0.0
                    for i, e in enumerate(errs)]
        best = int(np.argmax(facs))
        return min(MAX_FACTOR, safety * facs[best]), k + best - 1, reject


@dataclass(frozen=True)
class BDFController:
    """Accept when the scaled error norm is <= 1; the step-size factor is the one the BDF step
    proposed (order selection included): see :mod:`odeverify.solvers.bdf`'s docstring.

    Declares ``uses_step_info`` (so the loop passes ``h`` and the Newton iterations) and
    ``uses_step_result`` (so it also passes the :class:`StepResult`, whose state holds the
    proposal). Shared step only (floats)."""

    uses_step_info = True
    uses_step_result = True

    def init(self, shape: tuple[int, ...]) -> None:
        if shape != ():
            raise ValueError("BDFController works with a shared step only (batch='shared')")
        return None

    def __call__(self, err: Any, k: int, state: Any, *, h: Any = None, newton_iters: Any = 0,
                 result: StepResult | None = None) -> tuple[bool, float, Any]:
        e = float(err)
        accept = math.isfinite(e) and e <= 1.0
        prop = None if result is None or result.state is None else result.state.proposal
        if prop is None:  # not driven by a BDF step: the I controller at the start-up order
            fac = SAFETY * e ** (-0.5) if (math.isfinite(e) and e > 0) else (MAX_FACTOR if e == 0 else MIN_FACTOR)
            return accept, min(MAX_FACTOR, max(MIN_FACTOR, fac)), state
        if accept:
            return True, float(prop["factor"]), state
        rf = prop["reject_factor"]
        return False, float(rf if rf is not None and math.isfinite(e) else MIN_FACTOR), state
