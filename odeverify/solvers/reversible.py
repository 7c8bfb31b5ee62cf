"""Algebraically reversible step functions: each step has an exact inverse, so a backward pass
can reconstruct every forward state from the final one (up to floating-point round-off)
instead of storing it.

A scheme carries an augmented state (a tuple of arrays of the user's state shape):

- :class:`ReversibleHeun` — ``(y, y_hat, f(t, y_hat))``. P. Kidger, J. Foster, X. Li,
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

``step(f, tc, t, t_next, state)`` steps from ``t`` to ``t_next`` (h = t_next - t) and
``inverse(f, tc, t, t_next, state1)`` undoes it, evaluating f at the same times. Every
method is functional (new arrays only) and takes a
:class:`~odeverify.solvers.base.TimeContext` for the times, so the same code differentiates
on PyTorch and JAX.
"""
from __future__ import annotations

import math
from typing import Any

from .base import TimeContext


class ReversibleHeun:
    """Reversible Heun (Kidger et al. 2021): order 2, 1 evaluation per step, exact inverse."""

    name = "reversible_heun"
    order = 2
    state_size = 3

    def init(self, f: Any, tc: TimeContext, t0: float, y0: Any) -> tuple[Any, ...]:
        return (y0, y0, f(tc.time(t0), y0))

    def step(self, f: Any, tc: TimeContext, t: float, t_next: float, state: tuple[Any, ...]) -> tuple[Any, ...]:
        h = t_next - t
        y, yh, fy = state
        yh1 = 2.0 * y - yh + h * fy
        f1 = f(tc.time(t_next), yh1)
        y1 = y + (0.5 * h) * (fy + f1)
        return (y1, yh1, f1)

    def inverse(self, f: Any, tc: TimeContext, t: float, t_next: float, state1: tuple[Any, ...]) -> tuple[Any, ...]:
        """The state at ``t`` from the state at ``t_next`` (the step undone)."""
        h = t_next - t
        y1, yh1, f1 = state1
        yh = 2.0 * y1 - yh1 - h * f1
        fy = f(tc.time(t), yh)
        y = y1 - (0.5 * h) * (fy + f1)
        return (y, yh, fy)

    @staticmethod
    def output(state: tuple[Any, ...]) -> Any:
        return state[0]


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
