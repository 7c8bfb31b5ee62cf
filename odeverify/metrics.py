"""Error measures, in NumPy float64 (inputs of any array library are converted first)."""
from __future__ import annotations

from typing import Any

import numpy as np

from . import _xp

EPS64 = float(np.finfo(np.float64).eps)
EPS32 = float(np.finfo(np.float32).eps)


def as_numpy(x: Any) -> np.ndarray:
    return np.asarray(_xp.to_numpy(_xp.stop_gradient(x)) if _xp.is_array(x) else x, dtype=np.float64)


def eps_of(dtype: Any) -> float:
    """Machine epsilon of a dtype of any array library (by its name)."""
    return EPS32 if "32" in str(dtype) else EPS64


def scaled_error(y: Any, y_ref: Any, *, floor: float = 1.0) -> float:
    """max |y - y_ref| / max(floor, max |y_ref|): relative to the solution's size, absolute near 0."""
    a, r = as_numpy(y), as_numpy(y_ref)
    if a.shape != r.shape:
        raise ValueError(f"y has shape {a.shape}, but y_ref has shape {r.shape}; they must match")
    if not np.all(np.isfinite(a)):
        return float("inf")
    return float(np.max(np.abs(a - r)) / max(floor, float(np.max(np.abs(r)))))


def max_relative_error(y: Any, y_ref: Any, *, atol_floor: float = 1e-300) -> float:
    """max_i |y_i - r_i| / max(|r_i|, atol_floor)."""
    a, r = as_numpy(y), as_numpy(y_ref)
    if not np.all(np.isfinite(a)):
        return float("inf")
    return float(np.max(np.abs(a - r) / np.maximum(np.abs(r), atol_floor)))


def scd(y: Any, y_ref: Any, *, atol_floor: float = 1e-300) -> float:
    """Significant correct digits: -log10 of the max relative error (Bari test-set convention)."""
    e = max_relative_error(y, y_ref, atol_floor=atol_floor)
    if e == 0:
        return float("inf")
    return float(-np.log10(e))


def roundoff_floor(y_ref: Any, dtype: Any = np.float64, factor: float = 1e3) -> float:
    """Errors below ``factor * eps * max(1, |y|)`` are round-off, not truncation (PITFALLS)."""
    r = as_numpy(y_ref)
    return factor * eps_of(dtype) * max(1.0, float(np.max(np.abs(r))))


def loglog_slope(x: np.ndarray, y: np.ndarray) -> float:
    """Least-squares slope of log(y) against log(x)."""
    lx, ly = np.log(np.asarray(x, dtype=np.float64)), np.log(np.asarray(y, dtype=np.float64))
    A = np.stack([lx, np.ones_like(lx)], axis=1)
    slope, _ = np.linalg.lstsq(A, ly, rcond=None)[0]
    return float(slope)
