"""Algebraically reversible step functions: each step has an exact inverse, so a backward pass
can reconstruct every forward state from the final one (up to floating-point round-off)
instead of storing it.

A scheme carries an augmented state (a tuple of arrays of the user's state shape):

- :class:`ReversibleHeun` — ``(y, y_hat, f(t, y_hat))``; a stateful solver of the one
  time loop (:func:`odeverify.solve`), fixed or adaptive steps. P. Kidger, J. Foster, X. Li,
  T. Lyons, "Efficient and Accurate Gradients for Neural SDEs", NeurIPS 2021, Algorithm 1
  with the noise term removed (order 2 for ODEs, one evaluation of f per step)::

      y_hat1 = 2 y - y_hat + h f(t, y_hat)
      f1     = f(t + h, y_hat1)
      y1     = y + h/2 (f(t, y_hat) + f1)

  inverse: ``y_hat = 2 y1 - y_hat1 - h f1``, ``f0 = f(t, y_hat)``, ``y = y1 - h/2 (f0 + f1)``.

- :class:`MALI` — ``(z, v)``, the (damped) asynchronous leapfrog of J. Zhuang, N. C.
  Dvornek, S. Tatikonda, J. S. Duncan, "MALI: A memory efficient and reverse accurate
  integrator for Neural ODEs", ICLR 2021, Algorithm 1 (order 2, one evaluation per step)::

      k = z + v h/2,   u = f(t + h/2, k),   v1 = v + 2 eta (u - v),   z1 = k + v1 h/2

  inverse: ``k = z1 - v1 h/2``, ``u = f(t + h/2, k)``, ``v = (v1 - 2 eta u) / (1 - 2 eta)``,
  ``z = k - v h/2``. ``eta = 1`` (no damping, the default) gives ``v = 2u - v1``;
  ``eta = 1/2`` has no inverse and is refused.

``ReversibleHeun.advance(f, tc, t, h, state)`` / ``inverse(f, tc, t, h, state1)`` step and
undo with the recorded signed step ``h``; MALI's ``step(f, tc, t, t_next, state)`` /
``inverse(f, tc, t, t_next, state1)`` step from ``t`` to ``t_next`` (h = t_next - t) on a
fixed grid. Both evaluate f at the same times forward and backward. Every
method is functional (new arrays only) and takes a
:class:`~odeverify.solvers.base.TimeContext` for the times, so the same code differentiates
on PyTorch and JAX.
"""
from __future__ import annotations

import math
from typing import Any

from .base import StepResult, TimeContext


class ReversibleHeun:
    """Reversible Heun (Kidger et al. 2021) as a stateful step function of the one time loop
    (:func:`odeverify.solve`): order 2, one evaluation of f per step, exact inverse, and an
    embedded first-order error estimate, so it runs with fixed or adaptive steps.

    The augmented state is ``(y, y_hat, f(t, y_hat))``. ``y`` is the integrator's state;
    ``y_hat`` is the solver state (``init_state``/``after_step``, the contract of
    :mod:`odeverify.solvers.base`); ``f(t, y_hat)`` travels as the integrator's first-stage
    slot ``k1``: the step returns ``fsal = f(t + h, y_hat1)``, which the loop hands to the next
    step (at ``t0``, ``y_hat = y0`` so the loop's ``k1 = f(t0, y0)`` is already right).

    Error estimate ``h/2 (f(t + h, y_hat1) - f(t, y_hat))``: the difference between the
    step and the explicit Euler step ``h f(t, y_hat)`` on the same evaluations (first order), the
    semantics of diffrax's ``ReversibleHeun.step`` (``y1_error = 0.5 (vf1 - vf0) dt``;
    patrick-kidger/diffrax, diffrax/_solver/reversible_heun.py). With ``min(2, 1) + 1 = 2``
    as the controller's order (``error_order``).

    Dense output (``has_dense = False``): the integrator's cubic Hermite interpolant with end
    slopes ``k1 = f(t, y_hat)`` and ``fsal = f(t + h, y_hat1)`` (slopes at ``y_hat``, which
    differs from ``y`` by O(h^2): the interpolant stays consistent with the order-2 method),
    a differentiable function of the augmented states at both ends of the step.

    A rejected step leaves ``y_hat`` unchanged (``after_step``), so the accepted steps are
    exactly the map the reverse pass inverts; :meth:`inverse` undoes one step given the
    step's start time ``t`` and its signed step ``h`` *as the integrator took them* (recorded
    floats, so ``t + h`` is the same time in both directions).
    """

    name = "reversible_heun"
    order = 2
    embedded_order = 1
    error_order = 2
    adaptive = True
    has_dense = False
    state_size = 3

    # --- the stateful-solver contract of odeverify.solvers.base
    def init_state(self, f: Any, tc: TimeContext, y0: Any, **_: Any) -> dict[str, Any]:
        return {"y_hat": y0, "pending": None}

    def step(self, f: Any, tc: TimeContext, y: Any, h: Any, k1: Any, *, estimate: bool,
             state: dict[str, Any] | None = None) -> StepResult:
        if state is None:
            raise ValueError("reversible_heun is stateful: the integrator passes state=init_state(...)")
        if tc.per_sample:
            raise ValueError("reversible_heun takes one step size for a batch (batch='shared'); got batch='per-sample'")
        y1, yh1, f1 = self.advance(f, tc, float(tc.t), float(h), (y, state["y_hat"], k1))
        err = (0.5 * float(h)) * (f1 - k1) if estimate else None
        return StepResult(y1=y1, err=err, err_aux=None, ks=[k1, f1], nfev=1, fsal=f1,
                          state={"y_hat": state["y_hat"], "pending": yh1})

    def after_step(self, state: dict[str, Any], accepted: Any) -> dict[str, Any]:
        if bool(accepted) and state["pending"] is not None:
            return {"y_hat": state["pending"], "pending": None}
        return {"y_hat": state["y_hat"], "pending": None}

    # --- the algebra, on the augmented state
    @staticmethod
    def init(f: Any, tc: TimeContext, t0: float, y0: Any) -> tuple[Any, ...]:
        """The augmented state at ``t0``: ``(y0, y0, f(t0, y0))``."""
        return (y0, y0, f(tc.time(t0), y0))

    @staticmethod
    def advance(f: Any, tc: TimeContext, t: float, h: float, state: tuple[Any, ...]) -> tuple[Any, ...]:
        """One step from ``t`` with signed step ``h``: ``(y, y_hat, f(t, y_hat)) -> (y1, y_hat1, f1)``."""
        y, yh, fy = state
        yh1 = 2.0 * y - yh + h * fy
        f1 = f(tc.time(t + h), yh1)
        y1 = y + (0.5 * h) * (fy + f1)
        return (y1, yh1, f1)

    @staticmethod
    def inverse(f: Any, tc: TimeContext, t: float, h: float, state1: tuple[Any, ...]) -> tuple[Any, ...]:
        """The augmented state at ``t`` from the one at ``t + h`` (the step undone, one evaluation)."""
        y1, yh1, f1 = state1
        yh = 2.0 * y1 - yh1 - h * f1
        fy = f(tc.time(t), yh)
        y = y1 - (0.5 * h) * (fy + f1)
        return (y, yh, fy)


class MALI:
    """MALI's damped asynchronous leapfrog (Zhuang et al. 2021): order 2, 1 evaluation per
    step, exact inverse for ``eta != 1/2``."""

    name = "mali"
    order = 2
    state_size = 2

    def __init__(self, eta: float = 1.0) -> None:
        eta = float(eta)
        if not math.isfinite(eta) or not 0.0 < eta <= 1.0 or eta == 0.5:
            raise ValueError(f"eta={eta!r}, but MALI's damping must be in (0, 1] and != 0.5 (no inverse at 0.5)")
        self.eta = eta

    def init(self, f: Any, tc: TimeContext, t0: float, y0: Any) -> tuple[Any, ...]:
        return (y0, f(tc.time(t0), y0))

    def step(self, f: Any, tc: TimeContext, t: float, t_next: float, state: tuple[Any, ...]) -> tuple[Any, ...]:
        h = t_next - t
        z, v = state
        k = z + (0.5 * h) * v
        u = f(tc.time(t + 0.5 * h), k)
        v1 = v + (2.0 * self.eta) * (u - v)
        return (k + (0.5 * h) * v1, v1)

    def inverse(self, f: Any, tc: TimeContext, t: float, t_next: float, state1: tuple[Any, ...]) -> tuple[Any, ...]:
        h = t_next - t
        z1, v1 = state1
        k = z1 - (0.5 * h) * v1
        u = f(tc.time(t + 0.5 * h), k)
        if self.eta == 1.0:
            v = 2.0 * u - v1
        else:
            v = (v1 - (2.0 * self.eta) * u) / (1.0 - 2.0 * self.eta)
        return (k - (0.5 * h) * v, v)

    @staticmethod
    def output(state: tuple[Any, ...]) -> Any:
        return state[0]
