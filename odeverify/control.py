"""Step-size controllers: pure functions ``(err_norm, state) -> (accept, factor, state)``.

Vectorised over samples: ``err_norm`` is a NumPy float64 array (shape ``()`` for a shared
step, ``(B,)`` for per-sample control), and so are ``accept`` and ``factor``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


def _check_positive(name: str, value: float, owner: str) -> float:
    if not isinstance(value, (int, float)) or not np.isfinite(value) or value <= 0:
        raise ValueError(f"{owner}: {name}={value!r}, but it must be a finite number > 0")
    return float(value)


@dataclass(frozen=True)
class ControllerState:
    prev_err: np.ndarray  #: error norm of the last accepted step (1 before the first)
    rejected_last: np.ndarray  #: whether the last attempt was rejected


@dataclass(frozen=True)
class PIController:
    """Proportional–integral step-size controller (Gustafsson; Hairer & Wanner II §IV.2).

    The new step is ``h * factor`` with

        factor = safety * err**(-(pcoeff + icoeff)/k) * prev_err**(pcoeff/k)

    clipped to ``[factor_min, factor_max]``, where ``k = min(order, embedded_order) + 1``
    and ``prev_err`` is the error norm of the previous accepted step. A step is accepted
    when ``err <= 1``. After a rejection the step may not grow (factor <= 1).

    ``pcoeff=0, icoeff=1`` (the default) is the classic I controller of scipy, torchdiffeq
    and diffrax's default ``PIDController``, so work counts are comparable across
    libraries; ``PIController.gustafsson()`` gives ``pcoeff=0.4, icoeff=0.3`` (Hairer's
    DOPRI5 ``beta = 0.04`` family of settings differs slightly).
    """

    pcoeff: float = 0.0
    icoeff: float = 1.0
    safety: float = 0.9
    factor_min: float = 0.2
    factor_max: float = 10.0

    def __post_init__(self) -> None:
        name = type(self).__name__
        _check_positive("safety", self.safety, name)
        _check_positive("factor_min", self.factor_min, name)
        _check_positive("factor_max", self.factor_max, name)
        _check_positive("icoeff", self.icoeff, name)
        if not isinstance(self.pcoeff, (int, float)) or self.pcoeff < 0:
            raise ValueError(f"{name}: pcoeff={self.pcoeff!r}, but it must be >= 0")
        if self.safety > 1:
            raise ValueError(f"{name}: safety={self.safety!r}, but it must be in (0, 1]")
        if self.factor_min >= 1:
            raise ValueError(f"{name}: factor_min={self.factor_min!r}, but it must be < 1")
        if self.factor_max <= 1:
            raise ValueError(f"{name}: factor_max={self.factor_max!r}, but it must be > 1")

    @classmethod
    def gustafsson(cls, **kwargs: Any) -> "PIController":
        return cls(pcoeff=0.4, icoeff=0.3, **kwargs)

    def init(self, shape: tuple[int, ...]) -> ControllerState:
        return ControllerState(np.ones(shape), np.zeros(shape, dtype=bool))

    def __call__(
        self, err: np.ndarray, k: int, state: ControllerState
    ) -> tuple[np.ndarray, np.ndarray, ControllerState]:
        err = np.asarray(err, dtype=np.float64)
        finite = np.isfinite(err)
        accept = finite & (err <= 1.0)
        # error 0 (e.g. a polynomial solution) -> the largest growth
        safe_err = np.where(finite, np.maximum(err, 1e-10), 1.0)
        safe_prev = np.maximum(state.prev_err, 1e-10)
        with np.errstate(over="ignore"):
            factor = (
                self.safety
                * safe_err ** (-(self.pcoeff + self.icoeff) / k)
                * safe_prev ** (self.pcoeff / k)
            )
        factor = np.clip(factor, self.factor_min, self.factor_max)
        factor = np.where(finite, factor, self.factor_min)
        # no growth straight after a rejection, and a rejected step always shrinks
        factor = np.where(state.rejected_last | ~accept, np.minimum(factor, 1.0), factor)
        factor = np.where(~accept, np.minimum(factor, self.safety), factor)
        new = ControllerState(
            prev_err=np.where(accept, safe_err, state.prev_err),
            rejected_last=~accept,
        )
        return accept, factor, new


def I_controller(**kwargs: Any) -> PIController:
    """The integral (I) controller, the special case ``pcoeff=0, icoeff=1``."""
    return PIController(pcoeff=0.0, icoeff=1.0, **kwargs)
