"""Step-size controllers: pure functions ``(err_norm, state) -> (accept, factor, state)``.

Vectorised over samples: ``err_norm`` is a Python float for a shared step, or a NumPy
float64 array of shape ``(B,)`` for per-sample control (a 0-d array works too), and
``accept`` and ``factor`` come back in the same form. Both forms run the one formula in
:meth:`PIController.__call__`, through the host operations of :data:`SCALAR` or
:data:`ARRAY`, which the time loop in ``integrate`` uses as well.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np


# ----------------------------------------------------------------------------- host operations
class ScalarOps:
    """Host operations on Python floats and bools: a shared step's time, step size and error.

    Each one matches its :class:`ArrayOps` counterpart on every input, NaN and inf included
    (``tests/test_integrate_fastpath.py``); a NumPy call on a 0-d array costs ~1 us, the
    Python operation ~50 ns.
    """

    @staticmethod
    def full(shape: tuple[int, ...], value: Any) -> Any:
        return value

    @staticmethod
    def where(cond: Any, a: Any, b: Any) -> Any:
        return a if cond else b

    @staticmethod
    def minimum(a: float, b: float) -> float:  # NaN-propagating, as np.minimum
        return a if (a <= b or a != a) else b

    @staticmethod
    def maximum(a: float, b: float) -> float:  # NaN-propagating, as np.maximum
        return a if (a >= b or a != a) else b

    @staticmethod
    def logical_not(a: bool) -> bool:
        return not a

    @staticmethod
    def power(a: float, b: float) -> float:
        # NumPy's pow, not Python's: the two differ in the last bit for ~5% of inputs (NumPy
        # has its own SIMD pow), and a shared step must be the same in both paths
        with np.errstate(over="ignore"):
            return float(np.power(a, b))

    abs = staticmethod(abs)
    isfinite = staticmethod(math.isfinite)
    sqrt = staticmethod(math.sqrt)
    nextafter = staticmethod(math.nextafter)
    any = staticmethod(bool)
    count = staticmethod(int)  #: how many are true, as an int

    @staticmethod
    def take(values: np.ndarray, index: int) -> float:
        return float(values[index])


class ArrayOps:
    """The same operations on NumPy arrays (per-sample steps, shape ``(B,)``)."""

    @staticmethod
    def full(shape: tuple[int, ...], value: Any) -> np.ndarray:
        return np.full(shape, value)

    @staticmethod
    def take(values: np.ndarray, index: np.ndarray) -> np.ndarray:
        return values[index]

    @staticmethod
    def count(a: np.ndarray) -> int:
        return int(np.sum(a))

    where = staticmethod(np.where)
    minimum = staticmethod(np.minimum)
    maximum = staticmethod(np.maximum)
    logical_not = staticmethod(np.logical_not)
    @staticmethod
    def power(a: np.ndarray, b: float) -> np.ndarray:
        with np.errstate(over="ignore"):  # overflow -> inf, as ScalarOps.power
            return a**b
    abs = staticmethod(np.abs)
    isfinite = staticmethod(np.isfinite)
    sqrt = staticmethod(np.sqrt)
    nextafter = staticmethod(np.nextafter)
    any = staticmethod(np.any)


SCALAR = ScalarOps()
ARRAY = ArrayOps()


def host_ops(x: Any) -> ScalarOps | ArrayOps:
    """:data:`ARRAY` for a NumPy array (0-d included), else :data:`SCALAR`."""
    return ARRAY if isinstance(x, np.ndarray) else SCALAR


# ----------------------------------------------------------------------------- controllers
def _check_positive(name: str, value: float, owner: str) -> float:
    if not isinstance(value, (int, float)) or not np.isfinite(value) or value <= 0:
        raise ValueError(f"{owner}: {name}={value!r}, but it must be a finite number > 0")
    return float(value)


@dataclass(frozen=True)
class ControllerState:
    prev_err: Any  #: error norm of the last accepted step (1 before the first): float or array
    rejected_last: Any  #: whether the last attempt was rejected: bool or bool array


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
        """The state before the first step: Python scalars for shape ``()``, else arrays."""
        if shape == ():
            return ControllerState(1.0, False)
        return ControllerState(np.ones(shape), np.zeros(shape, dtype=bool))

    def __call__(self, err: Any, k: int, state: ControllerState) -> tuple[Any, Any, ControllerState]:
        """One decision: a Python float ``err`` runs on floats, an array on NumPy (same formula)."""
        if isinstance(err, np.ndarray) or not isinstance(err, (int, float)):
            err = np.asarray(err, dtype=np.float64)
        else:
            err = float(err)
        ops = host_ops(err)
        finite = ops.isfinite(err)
        accept = finite & (err <= 1.0)
        # error 0 (e.g. a polynomial solution) -> the largest growth
        safe_err = ops.where(finite, ops.maximum(err, 1e-10), 1.0)
        safe_prev = ops.maximum(state.prev_err, 1e-10)
        factor = (
            self.safety
            * ops.power(safe_err, -(self.pcoeff + self.icoeff) / k)
            * ops.power(safe_prev, self.pcoeff / k)
        )
        # clipped to [factor_min, factor_max] (np.clip costs ~10 us on a 0-d array)
        factor = ops.minimum(ops.maximum(factor, self.factor_min), self.factor_max)
        factor = ops.where(finite, factor, self.factor_min)
        # no growth straight after a rejection, and a rejected step always shrinks
        rejected = ops.logical_not(accept)
        factor = ops.where(state.rejected_last | rejected, ops.minimum(factor, 1.0), factor)
        factor = ops.where(rejected, ops.minimum(factor, self.safety), factor)
        new = ControllerState(prev_err=ops.where(accept, safe_err, state.prev_err), rejected_last=rejected)
        return accept, factor, new


def I_controller(**kwargs: Any) -> PIController:
    """The integral (I) controller, the special case ``pcoeff=0, icoeff=1``."""
    return PIController(pcoeff=0.0, icoeff=1.0, **kwargs)
