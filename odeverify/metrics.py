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


#: the Bari test set's ``min_value``: reference components below it have no relative error
BARI_MIN_VALUE = 1e-200
#: the Bari test set's ``uround``: a zero maximum error counts as this error (scd = 16)
BARI_UROUND = 1e-16


def _digits(err: np.ndarray) -> float | np.ndarray:
    """-log10 of a max error, a zero error replaced by ``BARI_UROUND``, NaN by +inf (so -inf digits)."""
    err = np.where(np.isnan(err), np.inf, err)
    err = np.where(err == 0.0, BARI_UROUND, err)
    with np.errstate(divide="ignore"):
        out = -np.log10(err)
    return float(out) if out.ndim == 0 else out


def _error_pair(y: Any, ref: Any) -> tuple[np.ndarray, np.ndarray]:
    a, r = as_numpy(y), as_numpy(ref)
    if a.ndim == 0 or r.ndim == 0:
        raise ValueError(f"y has shape {a.shape} and ref {r.shape}; both need a last axis of components")
    try:
        np.broadcast_shapes(a.shape, r.shape)
    except ValueError:
        raise ValueError(
            f"y has shape {a.shape}, ref has shape {r.shape}; they must broadcast (..., n)"
        ) from None
    err = np.abs(a - r)
    return np.where(np.isfinite(a), err, np.inf), np.abs(r)


def scd(y: Any, ref: Any, *, atol: float | None = None) -> float | np.ndarray:
    """Significant correct digits of ``y`` against ``ref``, as the Bari test set scores a run.

    ``scd = -log10(max_i e_i)`` with the relative error ``e_i = |y_i - ref_i| / |ref_i|``,
    except that a component with ``|ref_i| < atol`` (default :data:`BARI_MIN_VALUE` = 1e-200)
    uses its absolute error ``e_i = |y_i - ref_i|``. This follows the test set's drivers
    (F. Mazzia, C. Magherini et al., Test Set for Initial Value Problem Solvers, release 2.4,
    Univ. of Bari, 2008; file ``report.f``, subroutine ``getscd``, which every run prints): its
    ``scd`` is the maximum relative error over the components with ``|ref_i| >= 1e-200``;
    it reports the absolute error of the others separately (``scda``), and here it enters the
    maximum instead, so an error in a vanishing component (E5's y4 = 0) is never invisible.
    A zero maximum error counts as ``uround`` = 1e-16 (16 digits), as in ``getscd``; a
    non-finite ``y_i`` gives ``-inf``.

    The switch at ``atol`` is discontinuous by design (below ``atol`` a component is judged
    in absolute terms); :func:`mescd` is the test set's continuous mixed measure.

    ``y`` and ``ref`` broadcast with components on the last axis (a batch ``(..., n)``
    against one ``(n,)`` reference); the result is a float for one state, else an array of
    the batch shape.
    """
    threshold = BARI_MIN_VALUE if atol is None else float(atol)
    if not threshold >= 0.0:
        raise ValueError(f"atol={atol!r} must be a number >= 0 (or None for the Bari 1e-200)")
    err, mag = _error_pair(y, ref)
    small = mag < threshold
    with np.errstate(divide="ignore", invalid="ignore"):
        e = np.where(small, err, err / np.where(small, 1.0, mag))
    e = np.where(err == 0.0, 0.0, e)  # an exact zero component (atol = 0) is exact
    return _digits(np.max(e, axis=-1))


def mescd(y: Any, ref: Any, *, rtol: float, atol: float) -> float | np.ndarray:
    """Mixed-error significant correct digits of the Bari test set (``getscd``'s ``mescd``):
    ``-log10(max_i |y_i - ref_i| / (atol/rtol + |ref_i|))``, the error measure a solver run
    with tolerances ``rtol``, ``atol`` tries to keep below ``rtol``. Shapes and the zero-error
    convention as :func:`scd`."""
    if not (rtol > 0.0 and atol >= 0.0):
        raise ValueError(f"rtol={rtol!r} must be > 0 and atol={atol!r} >= 0")
    err, mag = _error_pair(y, ref)
    with np.errstate(divide="ignore", invalid="ignore"):
        e = err / (atol / rtol + mag)
    e = np.where(err == 0.0, 0.0, e)
    return _digits(np.max(e, axis=-1))


def roundoff_floor(y_ref: Any, dtype: Any = np.float64, factor: float = 1e3) -> float:
    """Errors below ``factor * eps * max(1, |y|)`` are round-off, not truncation."""
    r = as_numpy(y_ref)
    return factor * eps_of(dtype) * max(1.0, float(np.max(np.abs(r))))


def loglog_slope(x: np.ndarray, y: np.ndarray) -> float:
    """Least-squares slope of log(y) against log(x)."""
    lx, ly = np.log(np.asarray(x, dtype=np.float64)), np.log(np.asarray(y, dtype=np.float64))
    A = np.stack([lx, np.ones_like(lx)], axis=1)
    slope, _ = np.linalg.lstsq(A, ly, rcond=None)[0]
    return float(slope)
