"""Controlled differential equations driven by interpolated irregular data (registry ``CDE_PROBLEMS``).

A neural CDE (Kidger et al. 2020) is ``dz = f_theta(z) dX(t)``, ``z(t0) = zeta(X(t0))``, with ``X``
an interpolation of observations ``x_k`` at irregular times ``t_0 < ... < t_K``. Wherever ``X``
is differentiable it is the ODE ``dz/dt = f_theta(z) dX/dt``: :meth:`CDEProblem.to_problem` gives
that ODE as an ordinary :class:`~odeverify.problems.Problem`, so every solver, backend and
gradient mode takes it, and :attr:`CDEProblem.knots` are the times where ``X`` is not smooth, for
``integrate.solve(..., tstops=knots)``.

Interpolations (:data:`INTERPOLATIONS`, all linear in the data, so every one is stored as a map
from the data values to piecewise-cubic coefficients, :attr:`Control.weights`):

``linear``
    Piecewise linear through the data. C0: ``X'`` jumps at every knot. Error on smooth data
    ``|x''| h^2 / 8`` (order 2); ``X'`` error O(h) (order 1).
``rectilinear``
    torchcde's lead-lag path (``linear_interpolation_coeffs(..., rectilinear=0)``): between two
    observations first the time channel moves with the others held, then the others move with
    time held; piecewise linear over 2K pieces in torchcde's index parameter ``s = 0, 1, ..., 2K``
    (observation ``k`` at ``s = 2k``). Needs time as a channel (``include_time=True``). It is not
    an approximation of the data's path in the interpolation sense (its parameter is not time and
    it deviates from the path by O(h) between observations, by design: it is causal), so it has
    no interpolation order (``order`` is None).
``natural_cubic``
    The natural cubic spline: C2, ``X'' = 0`` at both ends. Error ``O(h^4)`` away from the ends
    (and everywhere when the data's ``x''`` vanishes at both ends); near an end where ``x'' != 0``
    the wrong end condition leaves an ``O(h^2)`` error that decays geometrically (by 2 - sqrt(3)
    per knot) into the interior (de Boor, *A Practical Guide to Splines*, ch. IV and V), so the
    max-norm order on general smooth data is 2. ``order`` is 4, the interior order;
    :meth:`Control.expected_order` gives the global one for a given path.
``hermite_cubic_bd``
    Hermite cubic with backward differences (Morrill et al. 2021, "Neural CDEs for online
    prediction tasks"; torchcde's ``hermite_cubic_coefficients_with_backward_differences``): on
    ``[t_k, t_k+1]`` the cubic with the data values at both ends, slope ``s_(k-1)`` at ``t_k`` and
    ``s_k`` at ``t_(k+1)``, ``s_k = (x_(k+1) - x_k) / (t_(k+1) - t_k)`` (``s_(-1) = s_0``). C1.
    Order, derived: the end slopes are first-order estimates of ``x'``, both off by
    ``-x'' h / 2 + O(h^2)`` (for k >= 1); Hermite's derivative basis functions are
    ``h theta (1 - theta)^2`` and ``-h theta^2 (1 - theta)``, so the error is
    ``-(x'' h^2 / 2) theta (1 - theta) (1 - 2 theta) + O(h^3)``: order 2 (the h^4 Hermite remainder
    is dominated), with a peak ``sqrt(3)/36 |x''| h^2``, about 0.77 times linear's ``|x''| h^2 / 8``.
    ``X'`` error O(h): order 1.

Missing values (NaN): refused with a ValueError naming ``values``, unless ``fill=`` names a rule:
``"forward"`` carries the last observation forward (torchcde's documented suggestion for causal
models, ``torchcde.misc.forward_fill``; a channel must be observed at ``t_0``), ``"linear"``
interpolates each channel linearly between its observations and holds the first and last
observation constant outside them (what torchcde's ``linear_interpolation_coeffs`` and
``hermite_cubic_coefficients_with_backward_differences`` do with NaN). The filled values are the
data (and the ``values`` parameter that gradients are taken with respect to).

Time as a channel: ``include_time=True`` prepends ``t`` as channel 0 (as torchcde users do;
rectilinear needs it).

Closed forms (``CDEProblem.exact``): for a LINEAR field ``f(z) dX = sum_j (A_j z + b_j) dX_j`` and a
piecewise-linear ``X`` (linear, rectilinear), ``z`` solves a constant-coefficient affine ODE on
each piece: ``z(t)`` is a product of matrix exponentials (of the affine generator
``[[sum_j A_j s_j, B s], [0, 0]]``). For commuting ``A_j`` and no bias, ``z(t) = expm(sum_j A_j
(X_j(t) - X_j(t_0))) z_0`` for ANY interpolation (it depends on ``X(t)`` only).

Specs: :func:`cde_from_spec` rebuilds a generated problem from one JSON line (see
:func:`cde_spec_keys` and ``odeverify.strategies.cde_problem_specs``).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import _xp
from .._registry import Registry
from ._spec import Problem

#: the interpolation schemes, in the order neural-CDE users meet them
INTERPOLATIONS = ("linear", "rectilinear", "natural_cubic", "hermite_cubic_bd")
#: continuity class C^k of each interpolation at its knots
CONTINUITY = {"linear": 0, "rectilinear": 0, "natural_cubic": 2, "hermite_cubic_bd": 1}
#: order of the interpolation error on smooth data (max norm away from the ends); None: not an
#: approximation in that sense (see the module doc)
ORDER = {"linear": 2, "rectilinear": None, "natural_cubic": 4, "hermite_cubic_bd": 2}
#: order of the error of dX/dt on smooth data (away from the ends)
DERIVATIVE_ORDER = {"linear": 1, "rectilinear": None, "natural_cubic": 3, "hermite_cubic_bd": 1}
#: the named rules that fill missing values
FILLS = ("forward", "linear")


def _closest(name: str, choices: tuple[str, ...]) -> str:
    import difflib

    close = difflib.get_close_matches(str(name), choices, n=1, cutoff=0.4)
    return f"; did you mean {close[0]!r}?" if close else ""


def check_interpolation(kind: Any) -> str:
    """``kind`` if it names an interpolation, else a ValueError naming the closest one."""
    if not isinstance(kind, str):
        raise TypeError(f"interpolation={kind!r}, but it must be a str, one of {', '.join(INTERPOLATIONS)}")
    if kind not in INTERPOLATIONS:
        raise ValueError(f"interpolation={kind!r} is unknown{_closest(kind, INTERPOLATIONS)} Choices:"
                         f" {', '.join(INTERPOLATIONS)}")
    return kind


# ----------------------------------------------------------------------------- validation
def validate_data(times: Any, values: Any, *, fill: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(times, values)`` as float64 arrays of shapes ``(K+1,)`` and ``(K+1, c)`` (a 1-d
    ``values`` is one channel), NaNs filled by the named rule; bad input raises ValueError naming
    the parameter, the value received and what is expected."""
    t = np.asarray(times, dtype=np.float64) if not isinstance(times, np.ndarray) else times.astype(np.float64)
    if t.ndim != 1:
        raise ValueError(f"times has shape {t.shape}, but it must be 1-d (one time per observation)")
    if t.size < 2:
        raise ValueError(f"times has {t.size} point(s), but an interpolation needs at least 2")
    if not np.all(np.isfinite(t)):
        raise ValueError(f"times={t.tolist()[:8]} has non-finite entries; every time must be finite")
    gaps = np.diff(t)
    if np.any(gaps <= 0):
        k = int(np.argmax(gaps <= 0))
        what = "duplicated" if gaps[k] == 0 else "unsorted"
        raise ValueError(f"times are {what}: times[{k}]={float(t[k])!r}, times[{k + 1}]={float(t[k + 1])!r};"
                         " they must be"
                         " strictly increasing")
    v = np.asarray(values, dtype=np.float64)
    if v.ndim == 1:
        v = v[:, None]
    if v.ndim != 2:
        raise ValueError(f"values has shape {v.shape}, but it must be (len(times), channels) = ({t.size}, c)")
    if v.shape[0] != t.size:
        raise ValueError(f"values has {v.shape[0]} rows, but times has {t.size} entries; they must be the same"
                         " length (one row per observation)")
    if v.shape[1] < 1:
        raise ValueError(f"values has shape {v.shape}, but it must have at least one channel")
    if np.any(np.isinf(v)):
        raise ValueError("values has infinite entries; observations must be finite (NaN marks a missing one)")
    missing = np.isnan(v)
    if missing.any():
        if fill is None:
            k, j = (int(i) for i in np.argwhere(missing)[0])
            raise ValueError(f"values has {int(missing.sum())} missing (NaN) entries, the first values[{k}, {j}];"
                             f" pass fill= one of {', '.join(map(repr, FILLS))} to fill them by a named rule")
        v = fill_missing(t, v, fill)
    elif fill is not None and fill not in FILLS:
        raise ValueError(f"fill={fill!r} is unknown{_closest(fill, FILLS)} Choices: None, "
                         f"{', '.join(map(repr, FILLS))}")
    return t, v


def fill_missing(times: np.ndarray, values: np.ndarray, fill: str) -> np.ndarray:
    """``values`` with its NaNs replaced by the rule ``fill`` (see the module doc)."""
    if fill not in FILLS:
        raise ValueError(f"fill={fill!r} is unknown{_closest(str(fill), FILLS)} Choices: None, "
                         f"{', '.join(map(repr, FILLS))}")
    out = values.copy()
    for j in range(values.shape[1]):
        seen = ~np.isnan(values[:, j])
        if not seen.any():
            raise ValueError(f"values[:, {j}] is never observed (all NaN); fill={fill!r} needs at least one"
                             " observation per channel")
        if fill == "forward":
            if not seen[0]:
                raise ValueError(f"values[0, {j}] is missing: fill='forward' carries observations forward, so every"
                                 " channel must be observed at times[0] (fill it yourself, e.g. with the channel's"
                                 " mean, or use fill='linear')")
            idx = np.maximum.accumulate(np.where(seen, np.arange(len(seen)), 0))
            out[:, j] = values[idx, j]
        else:
            out[:, j] = np.interp(times, times[seen], values[seen, j])
    return out


# ----------------------------------------------------------------------------- coefficients
def _linear_weights(dt: np.ndarray) -> np.ndarray:
    """(P, 4, P+1) map from knot values to [a, b, c, d] of the linear interpolant."""
    P = dt.size
    W = np.zeros((P, 4, P + 1))
    for p in range(P):
        W[p, 0, p] = 1.0
        W[p, 1, p] = -1.0 / dt[p]
        W[p, 1, p + 1] = 1.0 / dt[p]
    return W


def _hermite_weights(dt: np.ndarray, m_left: np.ndarray, m_right: np.ndarray) -> np.ndarray:
    """(P, 4, K+1) Hermite cubic on each piece from value maps and end-slope maps (each slope
    map row ``m[p]`` is a (K+1,) weight vector on the knot values)."""
    P = dt.size
    W = np.zeros((P, 4, P + 1))
    for p in range(P):
        e0 = np.zeros(P + 1)
        e0[p] = 1.0
        e1 = np.zeros(P + 1)
        e1[p + 1] = 1.0
        s = (e1 - e0) / dt[p]
        W[p, 0] = e0
        W[p, 1] = m_left[p]
        W[p, 2] = (3 * s - 2 * m_left[p] - m_right[p]) / dt[p]
        W[p, 3] = (m_left[p] + m_right[p] - 2 * s) / dt[p] ** 2
    return W


def _natural_slopes(dt: np.ndarray) -> np.ndarray:
    """(K+1, K+1) map from knot values to the natural spline's knot slopes m_k.

    Continuity of the second derivative at interior knots (in slope form):
    ``m_(k-1)/h_(k-1) + 2 m_k (1/h_(k-1) + 1/h_k) + m_(k+1)/h_k = 3 (s_(k-1)/h_(k-1) + s_k/h_k)``;
    natural ends ``X''(t_0) = 0``: ``2 m_0 + m_1 = 3 s_0``, ``X''(t_K) = 0``:
    ``m_(K-1) + 2 m_K = 3 s_(K-1)``."""
    P = dt.size
    n = P + 1
    M = np.zeros((n, n))
    R = np.zeros((n, n))  # rhs as a map of the values
    S = np.zeros((P, n))  # slopes s_k
    for p in range(P):
        S[p, p], S[p, p + 1] = -1.0 / dt[p], 1.0 / dt[p]
    M[0, 0], M[0, 1] = 2.0, 1.0
    R[0] = 3 * S[0]
    M[-1, -2], M[-1, -1] = 1.0, 2.0
    R[-1] = 3 * S[-1]
    for k in range(1, P):
        M[k, k - 1] = 1.0 / dt[k - 1]
        M[k, k] = 2.0 * (1.0 / dt[k - 1] + 1.0 / dt[k])
        M[k, k + 1] = 1.0 / dt[k]
        R[k] = 3 * (S[k - 1] / dt[k - 1] + S[k] / dt[k])
    return np.linalg.solve(M, R)


def _knot_weights(kind: str, t: np.ndarray) -> np.ndarray:
    dt = np.diff(t)
    if kind == "linear":
        return _linear_weights(dt)
    if kind == "natural_cubic":
        m = _natural_slopes(dt)
        return _hermite_weights(dt, m[:-1], m[1:])
    if kind == "hermite_cubic_bd":
        P = dt.size
        S = np.zeros((P, P + 1))
        for p in range(P):
            S[p, p], S[p, p + 1] = -1.0 / dt[p], 1.0 / dt[p]
        left = np.concatenate([S[:1], S[:-1]], axis=0)  # s_(k-1), with s_(-1) = s_0
        return _hermite_weights(dt, left, S)
    raise ValueError(f"interpolation={kind!r} has no knot weights")  # pragma: no cover


# ----------------------------------------------------------------------------- warps
@dataclass(frozen=True, eq=False)
class Warp:
    """A monotone change of the time variable: ``t = psi(s)``, ``s = phi(t)``, ``dpsi(s) = dt/ds``
    (> 0). A control warped by it is ``Y(s) = X(psi(s))``, ``dY/ds = X'(psi(s)) psi'(s)``."""

    name: str
    phi: Callable[[np.ndarray], np.ndarray]
    psi: Callable[[np.ndarray], np.ndarray]
    dpsi: Callable[[np.ndarray], np.ndarray]


def exponential_warp(t0: float, t1: float, rate: float = 1.5, s_span: tuple[float, float] | None = None) -> Warp:
    """``t = t0 + L (e^(rate u) - 1) / (e^rate - 1)``, ``u = (s - s0) / (s1 - s0)``: a smooth monotone
    map of ``[s0, s1]`` (default ``[0, 1]``) onto ``[t0, t1]`` whose speed changes by ``e^rate``."""
    s0, s1 = (0.0, 1.0) if s_span is None else (float(s_span[0]), float(s_span[1]))
    if not (rate != 0 and math.isfinite(rate)):
        raise ValueError(f"rate={rate!r}, but it must be finite and nonzero")
    L, S = t1 - t0, s1 - s0
    den = math.expm1(rate)

    def psi(s: Any) -> Any:
        return t0 + L * np.expm1(rate * (np.asarray(s, dtype=np.float64) - s0) / S) / den

    def dpsi(s: Any) -> Any:
        return L * rate / S * np.exp(rate * (np.asarray(s, dtype=np.float64) - s0) / S) / den

    def phi(t: Any) -> Any:
        return s0 + S * np.log1p(den * (np.asarray(t, dtype=np.float64) - t0) / L) / rate

    return Warp(f"exp{rate:g}", phi, psi, dpsi)


# ----------------------------------------------------------------------------- Control
def _apply(weights: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Coefficients (P, 4, c) from the weights (P, 4, K+1, c or 1) and the values (K+1, c)."""
    return (weights * values[None, None]).sum(axis=2)


@dataclass(frozen=True, eq=False)
class Control:
    """An interpolated control path ``X`` over its parameter (time, or torchcde's index for
    rectilinear, or ``s`` for a warped control).

    ``coeffs[p] = [a, b, c, d]`` (shape ``(P, 4, c)``): on ``[breaks[p], breaks[p+1]]``,
    ``X = a + b u + c u^2 + d u^3`` with ``u`` the parameter minus ``breaks[p]``, and
    ``coeffs = sum_k weights[:, :, k, :] * values[k, :]`` (``weights`` shape ``(P, 4, K+1, c)`` or
    ``(P, 4, K+1, 1)``): every interpolation is linear in the data, which is how
    :meth:`dX` differentiates through the data values.
    """

    kind: str
    times: np.ndarray  #: observation times (K+1,)
    values: np.ndarray  #: observed (filled) values (K+1, c), time channel first if include_time
    breaks: np.ndarray  #: piece boundaries in the parameter (P+1,)
    weights: np.ndarray  #: (P, 4, K+1, c or 1)
    include_time: bool = False
    fill: str | None = None
    warp: Warp | None = None  #: set by :meth:`warped`: the parameter is s, t = warp.psi(s)
    support: tuple[tuple[int, int], ...] = ()  #: per piece, the contiguous rows of values it uses
    coeffs: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "coeffs", _apply(self.weights, self.values))
        if not self.support:
            sup = []
            for p in range(self.weights.shape[0]):
                rows = np.flatnonzero(np.any(self.weights[p] != 0, axis=(0, 2)))
                sup.append((int(rows[0]), int(rows[-1]) + 1) if rows.size else (0, 1))
            object.__setattr__(self, "support", tuple(sup))

    # --- description
    @property
    def channels(self) -> int:
        return int(self.values.shape[1])

    @property
    def continuity(self) -> int:
        """k of the class C^k at the knots (0: X jumps in slope, 1: in curvature, 2: in X''')."""
        return CONTINUITY[self.kind]

    @property
    def order(self) -> int | None:
        return ORDER[self.kind]

    @property
    def derivative_order(self) -> int | None:
        return DERIVATIVE_ORDER[self.kind]

    @property
    def domain(self) -> tuple[float, float]:
        return float(self.breaks[0]), float(self.breaks[-1])

    @property
    def knots(self) -> np.ndarray:
        """Every piece boundary strictly inside the domain (where X is not C-infinity)."""
        return self.breaks[1:-1].copy()

    def domain_breaks(self) -> np.ndarray:
        """The piece boundaries in the control's own parameter, ends included (P+1,)."""
        t0, t1 = self.domain
        return np.concatenate([[t0], self.knots, [t1]])

    def expected_order(self, second_derivative_at_ends: float | None = None, *, interior: bool = False) -> int | None:
        """The max-norm order on smooth data; for the natural spline 2 unless ``interior`` or the
        data's ``|x''|`` at both ends (``second_derivative_at_ends``, the larger) is zero."""
        if self.kind == "natural_cubic" and not interior and (second_derivative_at_ends or 0.0) > 0.0:
            return 2
        return self.order

    # --- evaluation (NumPy)
    def _locate(self, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        p = np.clip(np.searchsorted(self.breaks, s, side="right") - 1, 0, self.breaks.size - 2)
        return p, s - self.breaks[p]

    def _poly(self, s: Any, nu: int) -> np.ndarray:
        s = np.asarray(s, dtype=np.float64)
        p, u = self._locate(s)
        a, b, c, d = (self.coeffs[p, m] for m in range(4))
        u = u[..., None]
        if nu == 0:
            return a + u * (b + u * (c + u * d))
        if nu == 1:
            return b + u * (2 * c + 3 * u * d)
        if nu == 2:
            return 2 * c + 6 * u * d
        if nu == 3:
            return 6 * d
        raise ValueError(f"nu={nu!r}, but it must be 0, 1, 2 or 3")

    def evaluate(self, t: Any) -> np.ndarray:
        """``X(t)``: shape ``t.shape + (c,)``. A knot belongs to the piece on its right."""
        if self.warp is None:
            return self._poly(t, 0)
        return self._poly(self.warp.psi(t), 0)

    def derivative(self, t: Any, nu: int = 1) -> np.ndarray:
        """The ``nu``-th derivative of X (nu = 1, 2, 3; warped: nu = 1 only)."""
        if self.warp is None:
            return self._poly(t, nu)
        if nu != 1:
            raise ValueError(f"nu={nu!r}: a warped control gives its first derivative only")
        s = np.asarray(t, dtype=np.float64)
        return self._poly(self.warp.psi(s), 1) * np.asarray(self.warp.dpsi(s))[..., None]

    def derivative_weights(self, t: float) -> tuple[int, int, np.ndarray]:
        """``(lo, hi, w)`` with ``dX/dt (t) = sum_k w[k - lo] * values[k]`` over rows lo..hi-1
        (``w`` shape ``(hi - lo, c or 1)``)."""
        if self.warp is None:
            s, scale = float(t), 1.0
        else:
            s, scale = float(self.warp.psi(float(t))), float(self.warp.dpsi(float(t)))
        p = min(max(int(np.searchsorted(self.breaks, s, side="right")) - 1, 0), self.breaks.size - 2)
        u = s - float(self.breaks[p])
        lo, hi = self.support[p]
        W = self.weights[p, :, lo:hi]
        return lo, hi, (W[1] + u * (2.0 * W[2] + 3.0 * u * W[3])) * scale

    def dX(self, xp: Any, t: Any, values: Any) -> Any:
        """dX/dt at ``t`` as an array of ``values``' library: ``t`` a float or a 0-d array (shape
        ``(c,)`` out) or shape ``(B,)`` per-sample times (``(B, c)`` out); ``values`` the data
        (shape ``(K+1, c)``, possibly recording gradients)."""
        if not _xp.is_array(t) or len(t.shape) == 0:
            lo, hi, w = self.derivative_weights(float(t))
            wx = xp.asarray(w, dtype=values.dtype, device=_xp.device(values))
            return xp.sum(wx * values[lo:hi, ...], axis=0)
        rows = []
        for ti in np.asarray(_xp.to_numpy(t), dtype=np.float64).reshape(-1):
            lo, hi, w = self.derivative_weights(float(ti))
            full = np.zeros((self.values.shape[0], self.weights.shape[-1]))
            full[lo:hi] = w
            rows.append(full)
        wx = xp.asarray(np.stack(rows), dtype=values.dtype, device=_xp.device(values))
        return xp.sum(wx * values[None, ...], axis=1)

    # --- transformations
    def with_values(self, values: Any) -> Control:
        """The same interpolation (same times and weights) of other data values."""
        v = np.asarray(values, dtype=np.float64)
        if v.shape != self.values.shape:
            raise ValueError(f"values has shape {v.shape}, but this control's data are {self.values.shape}")
        return dataclasses.replace(self, values=v, support=self.support)

    def warped(self, warp: Warp) -> Control:
        """``Y(s) = X(psi(s))`` over ``s`` in ``phi(domain)``, knots at ``phi(knots)``."""
        if not isinstance(warp, Warp):
            raise TypeError(f"warp={warp!r}, but it must be a Warp (e.g. exponential_warp(...))")
        if self.warp is not None:
            raise ValueError("this control is already warped; warp the original control")
        breaks = np.asarray(warp.phi(self.breaks), dtype=np.float64)
        breaks[0], breaks[-1] = float(warp.phi(self.breaks[0])), float(warp.phi(self.breaks[-1]))
        if np.any(np.diff(breaks) <= 0):
            raise ValueError(f"warp {warp.name!r} is not increasing on the control's knots")
        return _WarpedControl(self, warp, breaks)

    def retimed(self, times: Any) -> Control:
        """The same data interpolated by the same rule at other observation times."""
        raw = self.values[:, 1:] if self.include_time else self.values
        return make_control(times, raw, self.kind, include_time=self.include_time)


class _WarpedControl(Control):
    """A control reparametrised by a :class:`Warp`: pieces in ``s``, polynomials in ``psi(s)``."""

    def __init__(self, base: Control, warp: Warp, breaks_s: np.ndarray) -> None:
        super().__init__(kind=base.kind, times=base.times, values=base.values, breaks=base.breaks,
                         weights=base.weights, include_time=base.include_time, fill=base.fill, warp=warp,
                         support=base.support)
        object.__setattr__(self, "_breaks_s", breaks_s)
        object.__setattr__(self, "base", base)

    @property
    def domain(self) -> tuple[float, float]:
        return float(self._breaks_s[0]), float(self._breaks_s[-1])

    @property
    def knots(self) -> np.ndarray:
        return self._breaks_s[1:-1].copy()

    def with_values(self, values: Any) -> Control:
        return self.base.with_values(values).warped(self.warp)


def make_control(times: Any, values: Any, kind: str = "linear", *, include_time: bool = False,
                 fill: str | None = None) -> Control:
    """The interpolation ``kind`` (one of :data:`INTERPOLATIONS`) of ``values`` (shape
    ``(K+1, c)`` or ``(K+1,)``) observed at ``times`` (strictly increasing, K+1 >= 2); see the
    module doc for the schemes, the fill rules and ``include_time``."""
    check_interpolation(kind)
    if not isinstance(include_time, bool):
        raise TypeError(f"include_time={include_time!r}, but it must be a bool")
    if fill is not None and not isinstance(fill, str):
        raise TypeError(f"fill={fill!r}, but it must be None or a str, one of {', '.join(FILLS)}")
    t, v = validate_data(times, values, fill=fill)
    if include_time:
        v = np.concatenate([t[:, None], v], axis=1)
    if kind == "rectilinear":
        if not include_time:
            raise ValueError("interpolation='rectilinear' needs time as a channel: pass include_time=True"
                             " (torchcde's rectilinear=0)")
        K1, c = v.shape
        n = 2 * K1 - 1
        # lead-lag: Q_(2k) = v_k; Q_(2k+1) = (t_(k+1), v_k[1:]), as a per-channel selection of rows
        sel = np.zeros((n, K1, c))
        for k in range(K1):
            sel[2 * k, k, :] = 1.0
            if k + 1 < K1:
                sel[2 * k + 1, k + 1, 0] = 1.0
                sel[2 * k + 1, k, 1:] = 1.0
        breaks = np.arange(n, dtype=np.float64)
        lin = _linear_weights(np.diff(breaks))  # (2K, 4, 2K+1)
        weights = np.einsum("pmq,qkc->pmkc", lin, sel)
    else:
        breaks = t.copy()
        weights = _knot_weights(kind, t)[..., None]
    return Control(kind=kind, times=t, values=v, breaks=breaks, weights=weights, include_time=include_time,
                   fill=fill)


# ----------------------------------------------------------------------------- smooth paths
@dataclass(frozen=True, eq=False)
class SmoothPath:
    """Closed-form data ``x_j(t) = sum_i amp_ji sin(freq_ji t + phase_ji) + poly_j(t)`` with its
    derivatives: the truth an interpolation's error is measured against."""

    amp: np.ndarray  #: (c, m)
    freq: np.ndarray  #: (c, m)
    phase: np.ndarray  #: (c, m)
    poly: np.ndarray  #: (c, d) coefficients, lowest degree first

    @property
    def channels(self) -> int:
        return int(self.amp.shape[0])

    def derivative(self, t: Any, nu: int = 0) -> np.ndarray:
        t = np.asarray(t, dtype=np.float64)[..., None, None]
        arg = self.freq * t + self.phase
        trig = self.amp * self.freq ** nu * np.sin(arg + nu * np.pi / 2)
        out = trig.sum(axis=-1)
        tt = t[..., 0]
        for i in range(nu, self.poly.shape[1]):
            fac = math.factorial(i) // math.factorial(i - nu)
            out = out + fac * self.poly[:, i] * tt ** (i - nu)
        return out

    def __call__(self, t: Any) -> np.ndarray:
        return self.derivative(t, 0)

    def to_dict(self) -> dict[str, Any]:
        return {"amp": self.amp.tolist(), "freq": self.freq.tolist(), "phase": self.phase.tolist(),
                "poly": self.poly.tolist()}


def smooth_path(amp: Any, freq: Any, phase: Any = None, poly: Any = None) -> SmoothPath:
    a = np.atleast_2d(np.asarray(amp, dtype=np.float64))
    f = np.atleast_2d(np.asarray(freq, dtype=np.float64))
    ph = np.zeros_like(a) if phase is None else np.atleast_2d(np.asarray(phase, dtype=np.float64))
    if a.shape != f.shape or a.shape != ph.shape:
        raise ValueError(f"path amp, freq and phase have shapes {a.shape}, {f.shape}, {ph.shape}; they must agree"
                         " (channels, terms)")
    pl = np.zeros((a.shape[0], 1)) if poly is None else np.atleast_2d(np.asarray(poly, dtype=np.float64))
    if pl.shape[0] != a.shape[0]:
        raise ValueError(f"path poly has {pl.shape[0]} rows, but there are {a.shape[0]} channels")
    if not all(np.all(np.isfinite(x)) for x in (a, f, ph, pl)):
        raise ValueError("path coefficients must be finite")
    return SmoothPath(a, f, ph, pl)


# ----------------------------------------------------------------------------- time rules
TIME_RULES = ("uniform", "jitter", "warped", "poisson")


def draw_times(rule: str, n: int, span: tuple[float, float] = (0.0, 1.0), *, seed: int = 0,
               spread: float = 0.5) -> np.ndarray:
    """``n`` (>= 2) observation times on ``span`` (both ends included) by ``rule``: ``uniform``;
    ``jitter`` (interior points moved by up to ``spread/2`` of a gap, uniformly, seeded);
    ``warped`` (``t0 + L g(k/K)``, ``g(u) = u + spread sin(2 pi u) / (2 pi)``, spread < 1: smooth
    non-uniform); ``poisson`` (exponential gaps, seeded: arrivals of a Poisson process scaled onto
    the span; gaps vary without bound, as in clinical series)."""
    if rule not in TIME_RULES:
        raise ValueError(f"times rule={rule!r} is unknown{_closest(str(rule), TIME_RULES)} Choices:"
                         f" {', '.join(TIME_RULES)}")
    if not isinstance(n, (int, np.integer)) or n < 2:
        raise ValueError(f"n={n!r}, but it must be an int >= 2 (observations)")
    t0, t1 = float(span[0]), float(span[1])
    if not t1 > t0:
        raise ValueError(f"span={span!r}, but it must be increasing")
    if not 0 <= spread < 1:
        raise ValueError(f"spread={spread!r}, but it must be in [0, 1)")
    K = n - 1
    u = np.arange(n, dtype=np.float64) / K
    rng = np.random.default_rng(seed)
    if rule == "jitter":
        u[1:-1] += spread * (rng.random(K - 1) - 0.5) / K
    elif rule == "warped":
        u = u + spread * np.sin(2 * np.pi * u) / (2 * np.pi)
    elif rule == "poisson":
        gaps = rng.exponential(1.0, K) + 1e-3
        u = np.concatenate([[0.0], np.cumsum(gaps)]) / gaps.sum()
    t = t0 + (t1 - t0) * u
    t[0], t[-1] = t0, t1
    return t


# ----------------------------------------------------------------------------- fields
@dataclass(frozen=True, eq=False)
class CDEField:
    """``f_theta(z)``: ``matrix(xp, z, p)`` returns shape ``(..., hidden, channels)``; ``params``
    are NumPy arrays (the ``theta`` gradients are taken with respect to)."""

    name: str
    kind: str  #: "linear" (f(z)[:, j] = A_j z + b_j) or "mlp"
    hidden: int
    channels: int
    matrix: Callable[[Any, Any, Mapping[str, Any]], Any]
    params: Mapping[str, np.ndarray]
    description: str = ""

    @property
    def commuting(self) -> bool:
        """A linear field whose A_j commute and that has no bias (z has the path-only closed form)."""
        if self.kind != "linear":
            return False
        A, B = self.params["A"], self.params["B"]
        if np.any(B != 0):
            return False
        scale = max(float(np.abs(A).max()), 1e-300) ** 2
        return all(np.abs(A[i] @ A[j] - A[j] @ A[i]).max() <= 1e-14 * scale
                   for i in range(len(A)) for j in range(i))


def _linear_matrix(xp: Any, z: Any, p: Mapping[str, Any]) -> Any:
    A, B = p["A"], p["B"]
    cols = [xp.matmul(z, xp.matrix_transpose(A[j, ...])) for j in range(A.shape[0])]
    return xp.stack(cols, axis=-1) + B


def linear_field(A: Any, B: Any = None, *, name: str = "linear") -> CDEField:
    """``f(z)[:, j] = A[j] z + B[:, j]``: ``A`` shape ``(c, n, n)``, ``B`` shape ``(n, c)`` (zero
    by default)."""
    A = np.asarray(A, dtype=np.float64)
    if A.ndim != 3 or A.shape[1] != A.shape[2]:
        raise ValueError(f"A has shape {A.shape}, but it must be (channels, hidden, hidden)")
    c, n = A.shape[0], A.shape[1]
    B = np.zeros((n, c)) if B is None else np.asarray(B, dtype=np.float64)
    if B.shape != (n, c):
        raise ValueError(f"B has shape {B.shape}, but it must be (hidden, channels) = ({n}, {c})")
    return CDEField(name, "linear", n, c, _linear_matrix, {"A": A, "B": B},
                    "f(z)[:, j] = A_j z + b_j (linear: closed forms on piecewise-linear X)")


def _mlp_matrix(xp: Any, z: Any, p: Mapping[str, Any]) -> Any:
    h = xp.tanh(xp.matmul(z, xp.matrix_transpose(p["W1"])) + p["b1"])
    out = xp.tanh(xp.matmul(h, xp.matrix_transpose(p["W2"])) + p["b2"])
    n = z.shape[-1]
    return xp.reshape(out, (*z.shape[:-1], n, out.shape[-1] // n))


def mlp_field(hidden: int, channels: int, width: int = 16, *, seed: int = 0, scale: float = 1.0,
              name: str = "mlp") -> CDEField:
    """A one-hidden-layer tanh MLP ``z -> tanh(W2 tanh(W1 z + b1) + b2)`` reshaped to
    ``(hidden, channels)``, as neural-CDE users write it (torchcde's example ends in tanh);
    Glorot-scaled seeded weights times ``scale``."""
    for nm, v in (("hidden", hidden), ("channels", channels), ("width", width)):
        if not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{nm}={v!r}, but it must be a positive int")
    rng = np.random.default_rng(seed)
    W1 = scale * rng.normal(0, 1 / math.sqrt(hidden), (width, hidden))
    b1 = scale * rng.normal(0, 0.1, width)
    W2 = scale * rng.normal(0, 1 / math.sqrt(width), (hidden * channels, width))
    b2 = scale * rng.normal(0, 0.1, hidden * channels)
    return CDEField(name, "mlp", int(hidden), int(channels), _mlp_matrix, {"W1": W1, "b1": b1, "W2": W2, "b2": b2},
                    f"tanh MLP {hidden} -> {width} -> {hidden}x{channels} (seed {seed}, scale {scale:g})")


def random_linear_field(hidden: int, channels: int, *, seed: int = 0, scale: float = 0.5, commuting: bool = False,
                        bias: bool = True) -> CDEField:
    """Seeded ``A_j`` with entries N(0, scale^2/n) (non-normal, non-commuting), or polynomials of one
    such matrix (``commuting``, then no bias); ``B`` N(0, scale^2) when ``bias``."""
    rng = np.random.default_rng(seed)
    n, c = int(hidden), int(channels)
    if commuting:
        G = rng.normal(0, scale / math.sqrt(n), (n, n))
        coef = rng.normal(0, 1, (c, 2))
        A = np.stack([coef[j, 0] * G + coef[j, 1] * 0.5 * (G @ G) / max(scale, 1e-12) for j in range(c)])
        return linear_field(A, None, name="linear_commuting")
    A = rng.normal(0, scale / math.sqrt(n), (c, n, n))
    B = rng.normal(0, scale, (n, c)) if bias else None
    return linear_field(A, B)


# ----------------------------------------------------------------------------- closed forms
def _expm(M: np.ndarray) -> np.ndarray:
    from scipy.linalg import expm

    return expm(M)


def _affine_generator(A: np.ndarray, B: np.ndarray, slope: np.ndarray) -> np.ndarray:
    n = A.shape[1]
    G = np.zeros((n + 1, n + 1), dtype=np.result_type(A, B, slope))
    G[:n, :n] = np.tensordot(slope, A, axes=(0, 0))
    G[:n, n] = B @ slope
    return G


def piecewise_linear_flow(A: np.ndarray, B: np.ndarray, breaks: np.ndarray, knot_values: np.ndarray,
                          z0: np.ndarray, ts: np.ndarray) -> np.ndarray:
    """The exact ``z(t)`` of ``dz = sum_j (A_j z + b_j) dX_j`` for X piecewise linear through
    ``knot_values`` (shape (P+1, c)) at ``breaks``: a product of exponentials of affine
    generators, one per piece. Works on complex inputs (complex-step derivatives)."""
    n = A.shape[1]
    out = []
    for t in np.asarray(ts, dtype=np.float64).reshape(-1):
        w = np.concatenate([np.asarray(z0), [1.0]]).astype(np.result_type(A, B, knot_values, z0, 1.0))
        for p in range(breaks.size - 1):
            a, b = breaks[p], breaks[p + 1]
            if t <= a:
                break
            d = b - a
            slope = (knot_values[p + 1] - knot_values[p]) / d
            tau = min(t, b) - a
            w = _expm(_affine_generator(A, B, slope) * tau) @ w
        out.append(w[:n])
    return np.array(out)


def commuting_flow(A: np.ndarray, path_values: np.ndarray, z0: np.ndarray) -> np.ndarray:
    """``z(t) = expm(sum_j A_j (X_j(t) - X_j(t0))) z0`` for commuting ``A_j`` and no bias:
    ``path_values`` shape (T, c), the first row at t0."""
    dX = path_values - path_values[0]
    return np.array([_expm(np.tensordot(d, A, axes=(0, 0))) @ z0 for d in dX])


# ----------------------------------------------------------------------------- CDEProblem
@dataclass(frozen=True, eq=False)
class CDEProblem:
    """``dz = f_theta(z) dX(t)``, ``z(t0) = zeta_W X(t0) + zeta_b``, X a :class:`Control`.

    ``path`` (optional) is the smooth closed-form data the observations were sampled from and
    ``times_rule`` = ``(rule, spread, seed)`` how their times were drawn (for interpolation-order
    sweeps); ``spec`` the one-line JSON of a generated problem.
    """

    name: str
    control: Control
    field: CDEField
    zeta_W: np.ndarray
    zeta_b: np.ndarray
    path: SmoothPath | None = None
    times_rule: tuple[str, float, int] | None = None
    spec: str = ""
    description: str = ""
    tags: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if self.field.channels != self.control.channels:
            raise ValueError(f"field {self.field.name!r} takes {self.field.channels} channels, but the control has"
                             f" {self.control.channels}")
        zW = np.asarray(self.zeta_W, dtype=np.float64)
        zb = np.asarray(self.zeta_b, dtype=np.float64)
        if zW.shape != (self.field.hidden, self.control.channels):
            raise ValueError(f"zeta_W has shape {zW.shape}, but it must be (hidden, channels) ="
                             f" ({self.field.hidden}, {self.control.channels})")
        if zb.shape != (self.field.hidden,):
            raise ValueError(f"zeta_b has shape {zb.shape}, but it must be ({self.field.hidden},)")
        object.__setattr__(self, "zeta_W", zW)
        object.__setattr__(self, "zeta_b", zb)
        object.__setattr__(self, "tags", frozenset(self.tags))

    # --- description
    @property
    def t_span(self) -> tuple[float, float]:
        return self.control.domain

    @property
    def knots(self) -> np.ndarray:
        """Where X is not smooth, strictly inside ``t_span``: pass as ``tstops``."""
        return self.control.knots

    @property
    def hidden(self) -> int:
        return self.field.hidden

    @property
    def interpolation(self) -> str:
        return self.control.kind

    @property
    def y0(self) -> np.ndarray:
        return self.zeta_W @ self.control.evaluate(self.t_span[0]) + self.zeta_b

    @property
    def exact_kind(self) -> str | None:
        """``"piecewise_linear"`` (product of exponentials), ``"commuting"`` (expm of the path
        increment) or None (no closed form)."""
        if self.field.kind != "linear":
            return None
        if self.control.kind in ("linear", "rectilinear"):
            return "piecewise_linear"
        if self.field.commuting:
            return "commuting"
        return None

    def exact(self, ts: Any, *, values: Any = None, params: Mapping[str, Any] | None = None,
              z0: Any = None) -> np.ndarray | None:
        """The closed-form ``z(t)`` (shape ``(T, hidden)``) or None; ``values``/``params``/``z0``
        override the data, the field's parameters and the initial state (complex allowed)."""
        kind = self.exact_kind
        if kind is None:
            return None
        ts = np.atleast_1d(np.asarray(ts, dtype=np.float64))
        ctrl = self.control
        v = ctrl.values if values is None else np.asarray(values)
        p = dict(self.field.params, **(params or {}))
        if z0 is None:
            z0 = self.zeta_W @ v[0] + self.zeta_b
        A, B = np.asarray(p["A"]), np.asarray(p["B"])
        if kind == "piecewise_linear":
            base = ctrl.base if ctrl.warp is not None else ctrl
            coeffs = _apply(base.weights, v)
            last = coeffs[-1, 0] + coeffs[-1, 1] * (base.breaks[-1] - base.breaks[-2])
            knot_values = np.concatenate([coeffs[:, 0], last[None]], axis=0)
            tt = ts if ctrl.warp is None else np.asarray(ctrl.warp.psi(ts), dtype=np.float64)
            return piecewise_linear_flow(A, B, base.breaks, knot_values, np.asarray(z0), tt)
        coeffs = _apply(ctrl.weights, v)
        X = _eval_coeffs(ctrl, coeffs, np.concatenate([[self.t_span[0]], ts]))
        return commuting_flow(A, X, np.asarray(z0))[1:]

    # --- as an ODE
    def rhs(self, xp: Any, t: Any, y: Any, p: Mapping[str, Any]) -> Any:
        """``f(y) @ dX/dt``: shape of ``y``."""
        F = self.field.matrix(xp, y, p)
        dX = p["control"].dX(xp, t, p["values"])
        if dX.ndim == 1:
            return xp.sum(F * dX, axis=-1)
        return xp.sum(F * dX[:, None, :], axis=-1)

    def to_problem(self, *, values: Any = None) -> Problem:
        """The ODE ``dz/dt = f(z) dX/dt`` as a :class:`Problem` with params ``values`` (the data,
        differentiable), the field's (differentiable) and ``control`` (the interpolation's
        weights, not an array: constant). ``exact`` is the closed form when there is one."""
        ctrl = self.control if values is None else self.control.with_values(values)
        prob = self if values is None else dataclasses.replace(self, control=ctrl)
        exact = None
        if prob.exact_kind is not None:
            def exact(ts: np.ndarray) -> np.ndarray:
                return prob.exact(ts)
        tags = {"nonstiff", "time_dependent"} | ({"linear", "has_exact"} if exact else {"nonlinear"})
        if self.field.kind == "mlp":
            tags.add("neural")
        return Problem(name=self.name, rhs=prob.rhs, y0=tuple(prob.y0.tolist()), t_span=self.t_span,
                       params={"values": ctrl.values.copy(), **{k: np.array(v) for k, v in self.field.params.items()},
                               "control": ctrl},
                       exact=exact, tags=frozenset(tags) & _KNOWN, spec=self.spec,
                       description=self.description or f"CDE, {ctrl.kind} interpolation, {self.field.description}")

    def initial_gradient(self, grad_y0: np.ndarray) -> dict[str, np.ndarray]:
        """The chain rule through ``z0 = zeta_W X(t0) + zeta_b``: ``{"values": ..., "zeta_W": ...,
        "zeta_b": ...}`` from dL/dz0. Add ``"values"`` to a gradient mode's ``grad_params["values"]``
        for the total dL/d(data)."""
        g = np.asarray(grad_y0, dtype=np.float64)
        x0 = self.control.evaluate(self.t_span[0])
        w0 = self.control.weights[0, 0]  # X(t0) = sum_k w0[k] values[k]
        return {"values": w0 * (self.zeta_W.T @ g)[None, :], "zeta_W": np.outer(g, x0), "zeta_b": g}

    def warped(self, warp: Warp) -> CDEProblem:
        """The same CDE in the time variable ``s = phi(t)``: z(psi(s)) solves it."""
        return dataclasses.replace(self, name=f"{self.name}@{warp.name}", control=self.control.warped(warp),
                                   spec="")

    def with_control(self, control: Control, name: str | None = None) -> CDEProblem:
        return dataclasses.replace(self, control=control, name=name or self.name, spec="")


_KNOWN = frozenset({"nonstiff", "time_dependent", "linear", "has_exact", "nonlinear", "neural"})


def _eval_coeffs(ctrl: Control, coeffs: np.ndarray, ts: np.ndarray) -> np.ndarray:
    s = ts if ctrl.warp is None else np.asarray(ctrl.warp.psi(ts), dtype=np.float64)
    base_breaks = ctrl.breaks
    p = np.clip(np.searchsorted(base_breaks, s, side="right") - 1, 0, base_breaks.size - 2)
    u = (s - base_breaks[p])[:, None]
    a, b, c, d = (coeffs[p, m] for m in range(4))
    return a + u * (b + u * (c + u * d))


def cde_problem(name: str, control: Control, field: CDEField, *, zeta_W: Any = None, zeta_b: Any = None,
                seed: int = 0, **kwargs: Any) -> CDEProblem:
    """A :class:`CDEProblem`; the initial map defaults to a seeded N(0, 1/c) ``zeta_W`` and N(0, 1)
    ``zeta_b`` (so z0 is not zero where the data start at zero)."""
    rng = np.random.default_rng(seed + 7919)
    n, c = field.hidden, control.channels
    zW = rng.normal(0, 1 / math.sqrt(c), (n, c)) if zeta_W is None else zeta_W
    zb = rng.normal(0, 1, n) if zeta_b is None else zeta_b
    return CDEProblem(name=name, control=control, field=field, zeta_W=zW, zeta_b=zb, **kwargs)


# ----------------------------------------------------------------------------- specs
SPEC_KEYS = ("kind", "interp", "path", "times", "field", "include_time", "missing")


def canonical(spec: Mapping[str, Any]) -> str:
    return json.dumps(spec, sort_keys=True, separators=(",", ":"))


def cde_spec_keys() -> dict[str, str]:
    """What each key of a CDE spec means."""
    return {
        "kind": '"cde"',
        "interp": f"one of {', '.join(INTERPOLATIONS)}",
        "path": '{"amp": [[..]], "freq": [[..]], "phase": [[..]], "poly": [[..]]}: the smooth data, (channels, terms)',
        "times": '{"rule": one of ' + ", ".join(TIME_RULES) + ', "n": int >= 2, "span": [t0, t1], "seed": int,'
                 ' "spread": [0, 1)}',
        "field": '{"type": "linear", "hidden": n, "seed": int, "scale": float, "commuting": bool, "bias": bool}'
                 ' or {"type": "mlp", "hidden": n, "width": int, "seed": int, "scale": float}',
        "include_time": "bool: time as channel 0 (required by rectilinear)",
        "missing": 'null or {"frac": fraction of entries removed (never row 0), "seed": int,'
                   ' "fill": "forward"|"linear"}',
    }


def cde_from_spec(spec: str | Mapping[str, Any]) -> CDEProblem:
    """The CDE problem of a spec (a dict or its JSON line, see :func:`cde_spec_keys`); a bad spec
    raises ValueError naming the key."""
    if isinstance(spec, str):
        try:
            spec = json.loads(spec)
        except json.JSONDecodeError as exc:
            raise ValueError(f"spec={spec!r} is not valid JSON ({exc})") from None
    if not isinstance(spec, Mapping) or spec.get("kind") != "cde":
        raise ValueError(f"spec={spec!r}, but it must be an object with kind 'cde' and keys {', '.join(SPEC_KEYS)}")
    unknown = set(spec) - set(SPEC_KEYS)
    if unknown:
        raise ValueError(f"spec has unknown keys {sorted(unknown)}; expected some of {', '.join(SPEC_KEYS)}")
    for key in ("interp", "path", "times", "field"):
        if key not in spec:
            raise ValueError(f"spec has no {key!r}; a CDE spec needs {cde_spec_keys()[key]}")
    return _build_spec(canonical(spec))


def _build_spec(text: str) -> CDEProblem:
    spec = json.loads(text)
    interp = check_interpolation(spec["interp"])
    include_time = bool(spec.get("include_time", False)) or interp == "rectilinear"
    pth = spec["path"]
    try:
        path = smooth_path(pth["amp"], pth["freq"], pth.get("phase"), pth.get("poly"))
    except KeyError as exc:
        raise ValueError(f"spec path has no {exc.args[0]!r}; expected {cde_spec_keys()['path']}") from None
    tm = spec["times"]
    rule, n = tm.get("rule", "jitter"), tm.get("n", 16)
    span = tuple(tm.get("span", (0.0, 1.0)))
    spread, tseed = float(tm.get("spread", 0.5)), int(tm.get("seed", 0))
    times = draw_times(rule, n, span, seed=tseed, spread=spread)
    values = path(times)
    miss = spec.get("missing")
    fill = None
    if miss:
        rng = np.random.default_rng(int(miss.get("seed", 0)))
        mask = rng.random(values.shape) < float(miss.get("frac", 0.2))
        mask[0] = False
        values = np.where(mask, np.nan, values)
        fill = miss.get("fill", "forward")
    control = make_control(times, values, interp, include_time=include_time, fill=fill)
    fs = spec["field"]
    c = control.channels
    hidden = int(fs.get("hidden", 2))
    ftype = fs.get("type", "linear")
    if ftype == "linear":
        fld = random_linear_field(hidden, c, seed=int(fs.get("seed", 0)), scale=float(fs.get("scale", 0.5)),
                                  commuting=bool(fs.get("commuting", False)), bias=bool(fs.get("bias", True)))
    elif ftype == "mlp":
        fld = mlp_field(hidden, c, int(fs.get("width", 8)), seed=int(fs.get("seed", 0)),
                        scale=float(fs.get("scale", 1.0)))
    else:
        raise ValueError(f"spec field type={ftype!r} is unknown; expected 'linear' or 'mlp'")
    name = f"cde_{interp}_{hashlib.sha256(text.encode()).hexdigest()[:10]}"
    return cde_problem(name, control, fld, seed=int(fs.get("seed", 0)), path=path, times_rule=(rule, spread, tseed),
                       spec=text, description=f"generated CDE: {interp} interpolation of {n} {rule} observations,"
                                              f" {fld.description}")


# ----------------------------------------------------------------------------- registry
CDE_PROBLEMS: Registry[CDEProblem] = Registry("CDE problem")


def register(problem: CDEProblem) -> CDEProblem:
    CDE_PROBLEMS.register(problem.name, problem)
    return problem


def get(name: str) -> CDEProblem:
    return CDE_PROBLEMS.get(name)


# sin data plus a linear trend, x'' = 0 at both ends (sin(k pi t / 3) terms vanish with x'' at t = 0
# and 3; the trend keeps X(3) != X(0), so the commuting closed form is not z0 again): the
# natural spline's order is 4 on it; irregular times on [0, 3] at multiples of L/12: on a grid of
# 3 * 2^j + 1 steps every knot sits at a fixed fraction of its step (properties.cde.kink_steps)
_SMOOTH = smooth_path([[1.0, 0.3], [0.5, 0.2]], [[math.pi / 3, 2 * math.pi / 3], [math.pi, 2 * math.pi / 3]],
                      poly=[[0.0, 0.4], [0.0, -0.3]])
_TIMES = np.array([0.0, 0.25, 0.75, 1.0, 1.25, 1.75, 2.25, 2.5, 2.75, 3.0])


def _named() -> None:
    t = _TIMES
    lin_field = random_linear_field(2, 2, seed=3, scale=0.8)
    register(cde_problem(
        "cde_linear_pl", make_control(t, _SMOOTH(t), "linear"), lin_field, seed=1, path=_SMOOTH,
        description="linear field (non-commuting A_j, bias) on the linear interpolation of two sine channels at 10"
                    " irregular times: closed form (product of 9 matrix exponentials)"))
    register(cde_problem(
        "cde_rectilinear", make_control(t, _SMOOTH(t)[:, :1], "rectilinear", include_time=True),
        random_linear_field(2, 2, seed=5, scale=0.6), seed=2, path=None,
        description="linear field on the rectilinear (lead-lag) path of time and one sine channel: closed form over"
                    " 18 pieces in torchcde's index parameter"))
    comm = random_linear_field(2, 2, seed=4, scale=0.8, commuting=True)
    for kind in ("natural_cubic", "hermite_cubic_bd"):
        register(cde_problem(
            f"cde_commuting_{kind}", make_control(t, _SMOOTH(t), kind), comm, seed=3, path=_SMOOTH,
            description=f"commuting linear field on the {kind} interpolation of two sine channels (x'' = 0 at both"
                        " ends): closed form expm(sum_j A_j (X_j(t) - X_j(0))) z0"))
    # partially observed channels: about a third of channel 1 missing, carried forward
    rng = np.random.default_rng(11)
    vals = _SMOOTH(t).copy()
    vals[rng.random(t.size) < 0.35, 1] = np.nan
    vals[0, 1] = _SMOOTH(t)[0, 1]
    register(cde_problem(
        "cde_partial", make_control(t, vals, "linear", fill="forward"), random_linear_field(2, 2, seed=6, scale=0.8),
        seed=4, description="linear field on partially observed data (channel 1 has gaps, filled forward), linear"
                            " interpolation: closed form on the filled data"))
    # neural: a damped spiral observed at 24 Poisson times on [0, 4], time as a channel
    ts = draw_times("poisson", 24, (0.0, 4.0), seed=12)
    spiral = np.stack([np.exp(-0.3 * ts) * np.cos(2 * ts), np.exp(-0.3 * ts) * np.sin(2 * ts)], axis=1)
    register(cde_problem(
        "cde_neural", make_control(ts, spiral, "hermite_cubic_bd", include_time=True), mlp_field(3, 3, 16, seed=2),
        seed=5, description="tanh MLP field (3 hidden, width 16) on the Hermite-bd interpolation of a damped spiral"
                            " at 24 Poisson times with time as a channel (no closed form)"))


_named()

__all__ = ["CDEField", "CDEProblem", "CDE_PROBLEMS", "CONTINUITY", "Control", "DERIVATIVE_ORDER", "FILLS",
           "INTERPOLATIONS", "ORDER", "SmoothPath", "TIME_RULES", "Warp", "canonical", "cde_from_spec", "cde_problem",
           "cde_spec_keys", "check_interpolation", "commuting_flow", "draw_times", "exponential_warp",
           "fill_missing", "get", "linear_field", "make_control", "mlp_field", "piecewise_linear_flow",
           "random_linear_field", "register", "smooth_path", "validate_data"]
