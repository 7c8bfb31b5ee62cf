"""The contract every step function implements.

A solver is immutable configuration (a tableau, say). The integrator owns the time loop and
calls ``solver.step`` once per attempted step; the solver never decides acceptance.

``step(f, tc, y, h, k1)`` takes

- ``f``: the vector field ``f(t, y)`` (``t`` an array broadcasting like one component of ``y``);
- ``tc``: a :class:`TimeContext` that turns float64 NumPy times into arrays for ``f``;
- ``y``: the state, shape ``(..., n)``;
- ``h``: the signed step: a float for a shared step, a NumPy float64 array of the batch
  shape per sample (a 0-d array works too);
- ``k1``: ``f(t, y)`` at the start of the step (the integrator caches it: FSAL methods get
  it for free, the others pay it once per accepted step);

and returns a :class:`StepResult` (new state, error estimate or None, the stages the dense
output needs, and the number of evaluations of ``f`` it made).

Solvers that carry work across steps (the implicit ones: Jacobian, LU factors, the last
Newton rate) add three methods, which the integrator calls only for solvers that define
``init_state`` (explicit solvers pay nothing):

- ``init_state(f, tc, y0, *, jac, rtol, atol, fixed) -> state``: once per solve (``f`` is
  the user's field, uncounted, for automatic differentiation; ``jac`` a user Jacobian or None);
- ``step(..., state=state)`` returns the updated state in ``StepResult.state`` with the work
  it did in ``njev``, ``nlu`` and ``newton_iters``; a Newton iteration that failed sets
  ``failure`` (a message saying why) and the step is rejected and shrunk by
  ``solver.failure_shrink``;
- ``after_step(state, accepted) -> state``: told whether the step was accepted (a bool, or a
  per-sample bool array).

Such a solver may also offer ``default_controller()`` (used when ``solve`` gets no
controller); a controller with ``uses_step_info = True`` is called as
``ctrl(err, k, state, h=h, newton_iters=n)``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from .. import _xp


@dataclass
class TimeContext:
    """How times and step sizes become arrays of the state's library, dtype and device."""

    xp: Any
    dtype: Any
    device: Any
    per_sample: bool
    t: Any  #: current time(s), float64: a float (or 0-d array) shared, shape (B,) per sample
    #: (lo, hi): the times ``f`` sees in this step are clipped into [lo, hi] (floats, or arrays of
    #: shape (B,) per sample); the loop sets it for a step that starts or ends on a ``tstops``
    #: time, one ulp inside the step, so a field discontinuous there is evaluated on the step's side
    window: tuple[Any, Any] | None = None

    def time(self, t: Any) -> Any:
        """A time as passed to ``f``: 0-d (shared) or shape (B,) (per sample)."""
        if self.window is not None:
            t = np.clip(t, self.window[0], self.window[1])
        if self.per_sample:
            return self.xp.asarray(t, dtype=self.dtype, device=self.device)
        # full() is the cheapest standard way from a float to a 0-d array (asarray goes
        # through array-api-compat's general conversion: ~2x the cost, 6-7 times a step)
        return self.xp.full((), float(t), dtype=self.dtype, device=self.device)

    def scale(self, h: np.ndarray) -> Any:
        """A step size to multiply a state with: a Python float, or a (B, 1) array."""
        if not self.per_sample:
            return float(h)
        return self.xp.asarray(h[:, None], dtype=self.dtype, device=self.device)


@dataclass
class StepResult:
    y1: Any
    err: Any | None  #: local error estimate (same shape as y), None for fixed-step methods
    err_aux: Any | None  #: a second estimate where the method combines two (DOP853)
    ks: list[Any]  #: stage derivatives, for the dense output
    nfev: int
    fsal: Any | None = None  #: f(t + h, y1) when the method computed it (FSAL)
    # stateful (implicit) solvers only; see the module docstring
    state: Any = None  #: the solver's per-solve state after this step
    njev: int = 0  #: Jacobian evaluations made in this step
    nlu: int = 0  #: LU factorisations made in this step
    newton_iters: int = 0  #: Newton iterations made in this step
    failure: str | None = None  #: why the Newton iteration failed (the step is then rejected)
    #: per-sample mode: the samples whose Newton iteration failed (None: all, when failure is set)
    failed: Any = None
    sample_newton_iters: Any = None  #: per-sample mode: each sample's own Newton iteration count


class Solver(Protocol):
    name: str
    order: int
    embedded_order: int | None
    has_dense: bool

    def step(self, f: Any, tc: TimeContext, y: Any, h: np.ndarray, k1: Any, *, estimate: bool) -> StepResult: ...

    def dense(self, tc: TimeContext, y0: Any, y1: Any, h: np.ndarray, ks: list[Any], theta: np.ndarray,
              f: Any, k_end: Any) -> tuple[Any, int]: ...


def lincomb(coeffs: list[float], ks: list[Any]) -> Any | None:
    """sum_j coeffs[j] * ks[j], skipping zero coefficients; None when all are zero."""
    return _xp.lincomb(coeffs, ks)


def step_combination(tc: TimeContext, y: Any, h: np.ndarray, coeffs: list[float], ks: list[Any]) -> Any:
    """y + h * sum_j coeffs[j] * ks[j]: with a shared step, h is folded into the coefficients."""
    if not tc.per_sample:
        hf = float(h)
        out = _xp.lincomb([hf * c for c in coeffs], ks, base=y)
        return y if out is None else out
    inc = _xp.lincomb(coeffs, ks)
    return y if inc is None else y + tc.scale(h) * inc
