"""The 25 non-stiff DETEST problems, classes A-E, on t in [0, 20].

Problem definitions, initial values and the end-point values at t = 20 follow

* T. E. Hull, W. H. Enright, B. M. Fellen, A. E. Sedgwick, "Comparing numerical methods for
  ordinary differential equations", SIAM J. Numer. Anal. 9(4) (1972) 603-637 (the problems);
* W. H. Enright, J. D. Pryce, "Two FORTRAN packages for assessing initial value methods",
  ACM Trans. Math. Software 13(1) (1987) 1-27, Algorithm 648 (the "Toronto non-stiff test
  set": a restatement of the problems with routine EVALU giving the "true" solution at the
  end point to 16 printed digits). We read the problem data and EVALU values in the public
  DVODE_F90 demonstration program "Toronto Nonstiff Test Set" (routines FCN, IVALU, EVALU of
  module NONSTIFFSET), which states that it reproduces Algorithm 648, and cross-checked the
  definitions against the public re-implementations in diffrax (test/test_detest.py) and
  torchdiffeq (tests/DETEST/detest.py), and the end-point values against a second public copy.

Disagreements found between the sources (we follow Hull et al. / Algorithm 648; each choice is
confirmed by the published end-point values, which the closed forms below reproduce):

* C3, C4: diffrax omits the diagonal -2 of the last row (y10' = y9 instead of
  y10' = y9 - 2 y10, likewise y51'); Algorithm 648 and torchdiffeq have -2.
* E4: torchdiffeq uses y2' = 0.32 - 0.4 y2**2; Algorithm 648 and diffrax use 0.032.
* C5: torchdiffeq's initial positions have 165699966404 for 1.65699966404 and 15.388265967
  for 15.3882659679, and its acceleration adds (instead of subtracting) the indirect term
  m_j y_j / r_j**3 and leaves k2 off the planet-planet terms; diffrax and Algorithm 648 agree.

The published values were themselves computed numerically (by Enright and Pryce): they agree
with the closed forms to about 1e-14 absolute, not to all 16 printed digits (A1's published
2.061153353012535e-09 differs from exp(-20) = 2.061153622438558e-09 by 2.7e-16, a relative
1.3e-7). ``PUBLISHED_AGREEMENT`` records the agreement we measured and the tests enforce.

Closed forms: A1-A5 (A5 through its implicit solution, a logarithmic spiral, solved to
round-off), B2-B5 (B3 through modified Bessel functions, B5 through Jacobi elliptic functions),
C1-C4 (C3/C4 by the method of images with exponentially scaled Bessel functions), D1-D5
(Kepler's equation solved by Newton's method), E1 (Bessel J_{1/2}), E4, E5. B1, C5, E2 and E3
have no closed form: they carry a computed reference (``--make-references``, data file
``data/detest_references.json``) as well as the published value.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from . import PROBLEMS, register  # noqa: F401  (PROBLEMS is defined before this import)
from ._spec import Problem, Reference
from .classic import eccentric_anomaly

T_END = 20.0
T_SPAN = (0.0, T_END)

CITATION_HULL = (
    "T. E. Hull, W. H. Enright, B. M. Fellen, A. E. Sedgwick, Comparing numerical methods for "
    "ordinary differential equations, SIAM J. Numer. Anal. 9(4) (1972) 603-637"
)
CITATION_EP = (
    "W. H. Enright, J. D. Pryce, Two FORTRAN packages for assessing initial value methods, "
    "ACM Trans. Math. Software 13(1) (1987) 1-27 (Algorithm 648)"
)
CITATION = f"{CITATION_HULL}; problem data and end-point values checked against {CITATION_EP}"
PUBLISHED_SOURCE = (
    f"{CITATION_EP}: routine EVALU, 'true' solution at t = 20 (16 printed digits), as restated "
    "in the public DVODE_F90 demonstration program 'Toronto Nonstiff Test Set'"
)

DATA_PATH = Path(__file__).with_name("data") / "detest_references.json"

# ---------------------------------------------------------------------------------------------
# small helpers (Array API only)
# ---------------------------------------------------------------------------------------------


def _fn(xp: Any, name: str, t: Any) -> Any:
    """``xp.<name>(t)`` for an array ``t``; ``math.<name>(t)`` for a Python number."""
    if isinstance(t, (int, float)):
        return getattr(math, name)(t)
    return getattr(xp, name)(t)


def _time(xp: Any, t: Any, y: Any) -> Any:
    """``t`` with ``y``'s dtype (a Python number is left as is), so outputs keep y's dtype."""
    if isinstance(t, (int, float)) or t.dtype == y.dtype:
        return t
    return xp.astype(t, y.dtype)


def _out(xp: Any, *components: Any) -> Any:
    return xp.stack(list(components), axis=-1)


def _ivp_time(t: np.ndarray) -> np.ndarray:
    t = np.asarray(t, dtype=np.float64)
    if t.ndim != 1:
        raise ValueError(f"exact(t) takes a 1-d array of times, got shape {t.shape}")
    return t


# ---------------------------------------------------------------------------------------------
# Class A: single equations
# ---------------------------------------------------------------------------------------------


def _rhs_a1(xp, t, y, p):
    return -y


def _rhs_a2(xp, t, y, p):
    y1 = y[..., 0]
    return _out(xp, -0.5 * y1 * y1 * y1)


def _rhs_a3(xp, t, y, p):
    t = _time(xp, t, y)
    y1 = y[..., 0]
    return _out(xp, y1 * _fn(xp, "cos", t))


def _rhs_a4(xp, t, y, p):
    y1 = y[..., 0]
    return _out(xp, 0.25 * y1 * (1.0 - y1 / 20.0))


def _rhs_a5(xp, t, y, p):
    t = _time(xp, t, y)
    y1 = y[..., 0]
    return _out(xp, (y1 - t) / (y1 + t))


def _exact_a1(t):
    t = _ivp_time(t)
    return np.exp(-t)[:, None]


def _exact_a2(t):
    t = _ivp_time(t)
    return (1.0 / np.sqrt(1.0 + t))[:, None]


def _exact_a3(t):
    t = _ivp_time(t)
    return np.exp(np.sin(t))[:, None]


def _exact_a4(t):
    t = _ivp_time(t)
    return (20.0 / (1.0 + 19.0 * np.exp(-t / 4.0)))[:, None]


def _a5_angle(t: np.ndarray) -> np.ndarray:
    """Polar angle phi of the A5 solution point (t, y) at time t.

    With t = r cos(phi), y = r sin(phi), y' = (y - t)/(y + t) gives d(ln r + phi) = 0, so the
    solution through (0, 4) is the logarithmic spiral r = 4 exp(pi/2 - phi). Along it
    t(phi) = 4 exp(pi/2 - phi) cos(phi) decreases strictly in phi on (-pi/4, pi/2] (from
    4 exp(3 pi/4)/sqrt(2) ~ 29.8 to 0), so phi(t) is found by bisection (to the last bit) and
    polished by Newton steps on ln(4 cos phi) + pi/2 - phi = ln t.
    """
    t_max = 4.0 * math.exp(0.75 * math.pi) * math.cos(0.25 * math.pi)
    if np.any(t < 0.0) or np.any(t >= t_max):
        raise ValueError(f"A5's closed form is defined for 0 <= t < {t_max:.6g}")
    lo = np.full_like(t, -0.25 * math.pi)
    hi = np.full_like(t, 0.5 * math.pi)
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if np.all((mid == lo) | (mid == hi)):
            break
        tm = 4.0 * np.exp(0.5 * math.pi - mid) * np.cos(mid)
        above = tm > t  # t(phi) too large -> phi must increase
        lo = np.where(above, mid, lo)
        hi = np.where(above, hi, mid)
    phi = 0.5 * (lo + hi)
    pos = t > 0.0
    with np.errstate(divide="ignore", invalid="ignore"):
        for _ in range(3):
            g = np.log(4.0 * np.cos(phi)) + 0.5 * math.pi - phi - np.log(t)
            dg = -np.tan(phi) - 1.0
            step = np.where(pos & np.isfinite(g) & (dg != 0.0), g / dg, 0.0)
            phi = phi - step
    return np.where(pos, phi, 0.5 * math.pi)


def _exact_a5(t):
    t = _ivp_time(t)
    phi = _a5_angle(t)
    r = 4.0 * np.exp(0.5 * math.pi - phi)
    return (r * np.sin(phi))[:, None]


# ---------------------------------------------------------------------------------------------
# Class B: small systems
# ---------------------------------------------------------------------------------------------


def _rhs_b1(xp, t, y, p):
    y1, y2 = y[..., 0], y[..., 1]
    return _out(xp, 2.0 * (y1 - y1 * y2), -(y2 - y1 * y2))


def _invariant_b1(y):
    # d/dt [y1 - ln y1 + 2 (y2 - ln y2)] = 2 (y1 - 1)(1 - y2) + 2 (y2 - 1)(y1 - 1) = 0
    y = np.asarray(y, dtype=np.float64)
    return y[..., 0] - np.log(y[..., 0]) + 2.0 * (y[..., 1] - np.log(y[..., 1]))


def _rhs_b2(xp, t, y, p):
    y1, y2, y3 = y[..., 0], y[..., 1], y[..., 2]
    return _out(xp, -y1 + y2, y1 - 2.0 * y2 + y3, y2 - y3)


def _exact_b2(t):
    # symmetric matrix, eigenvalues 0, -1, -3 with eigenvectors (1,1,1), (1,0,-1), (1,-2,1)
    t = _ivp_time(t)
    e1, e3 = np.exp(-t), np.exp(-3.0 * t)
    return np.stack([1.0 + 0.5 * e1 + 0.5 * e3, 1.0 - e3, 1.0 - 0.5 * e1 + 0.5 * e3], axis=-1)


def _rhs_b3(xp, t, y, p):
    y1, y2 = y[..., 0], y[..., 1]
    d = y2 * y2
    return _out(xp, -y1, y1 - d, d)


def _exact_b3(t):
    """y1 = exp(-t); y2 = u'/u with u'' = exp(-t) u (Riccati), u'(0) = 0; y3 = 1 - y1 - y2.

    With s = 2 exp(-t/2), u = A I0(s) + B K0(s); u'(0) = 0 gives A = K1(2), B = I1(2), and
    y2 = -(s/2) (A I1(s) - B K1(s)) / (A I0(s) + B K0(s)).
    """
    from scipy import special

    t = _ivp_time(t)
    s = 2.0 * np.exp(-0.5 * t)
    a, b = special.k1(2.0), special.i1(2.0)
    y1 = np.exp(-t)
    y2 = -0.5 * s * (a * special.i1(s) - b * special.k1(s)) / (a * special.i0(s) + b * special.k0(s))
    y3 = -np.expm1(-t) - y2
    return np.stack([y1, y2, y3], axis=-1)


def _rhs_b4(xp, t, y, p):
    y1, y2, y3 = y[..., 0], y[..., 1], y[..., 2]
    r = xp.sqrt(y1 * y1 + y2 * y2)
    return _out(xp, -y2 - y1 * y3 / r, y1 - y2 * y3 / r, y1 / r)


def _exact_b4(t):
    # polar form: theta' = 1, r' = -y3, y3' = cos(theta)  =>  y3 = sin t, r = 2 + cos t
    t = _ivp_time(t)
    r = 2.0 + np.cos(t)
    return np.stack([r * np.cos(t), r * np.sin(t), np.sin(t)], axis=-1)


_B5_M = 0.51  # parameter m = k**2 of the Jacobi elliptic functions


def _rhs_b5(xp, t, y, p):
    y1, y2, y3 = y[..., 0], y[..., 1], y[..., 2]
    return _out(xp, y2 * y3, -y1 * y3, -0.51 * y1 * y2)


def _exact_b5(t):
    # Euler's rigid body: (sn, cn, dn)(t | m = 0.51)
    from scipy import special

    t = _ivp_time(t)
    sn, cn, dn, _ = special.ellipj(t, _B5_M)
    return np.stack([sn, cn, dn], axis=-1)


# ---------------------------------------------------------------------------------------------
# Class C: moderate systems
# ---------------------------------------------------------------------------------------------


def _rhs_linear(xp, t, y, p):
    return xp.matmul(y, p["AT"])


def _bidiagonal(diag: np.ndarray, sub: np.ndarray) -> np.ndarray:
    n = diag.size
    a = np.diag(diag)
    a[np.arange(1, n), np.arange(n - 1)] = sub
    return a


_A_C1 = _bidiagonal(np.r_[-np.ones(9), 0.0], np.ones(9))
_A_C2 = _bidiagonal(np.r_[-np.arange(1.0, 10.0), 0.0], np.arange(1.0, 10.0))


def _tridiagonal(n: int) -> np.ndarray:
    a = -2.0 * np.eye(n)
    a[np.arange(1, n), np.arange(n - 1)] = 1.0
    a[np.arange(n - 1), np.arange(1, n)] = 1.0
    return a


_A_C3 = _tridiagonal(10)
_A_C4 = _tridiagonal(51)


def _e1(n: int) -> tuple[float, ...]:
    return (1.0,) + (0.0,) * (n - 1)


def _exact_c1(t):
    # y_i = t**(i-1) exp(-t) / (i-1)!  (i = 1..9),  y10 = P(9, t) (regularized lower gamma)
    from scipy import special

    t = _ivp_time(t)
    k = np.arange(9.0)
    terms = t[:, None] ** k * np.exp(-t)[:, None] / special.factorial(k)
    return np.concatenate([terms, special.gammainc(9.0, t)[:, None]], axis=1)


def _exact_c2(t):
    # y_i = exp(-t) (1 - exp(-t))**(i-1)  (i = 1..9),  y10 = (1 - exp(-t))**9
    t = _ivp_time(t)
    q = -np.expm1(-t)[:, None]
    k = np.arange(9.0)
    return np.concatenate([np.exp(-t)[:, None] * q**k, q**9], axis=1)


def _exact_tridiagonal(t: np.ndarray, n: int) -> np.ndarray:
    """exp(tA) e1 for A = tridiag(1, -2, 1) of size n (zero Dirichlet ends), by images.

    On the infinite chain the solution from a unit mass at site 1 is exp(-2t) I_{j-1}(2t).
    The ends 0 and n+1 are enforced by alternating images with period N = 2(n+1):
    y_j = sum_m exp(-2t) [I_{j-1+mN}(2t) - I_{j+1+mN}(2t)] = sum_m (nu/t) ive(nu, 2t) with
    nu = j + mN (recurrence I_{nu-1} - I_{nu+1} = (2 nu / x) I_nu, and I_{-nu} = I_nu). All
    terms are computed without cancellation between exponentials, so small components keep
    their relative accuracy (unlike an eigen-expansion).
    """
    from scipy import special

    t = _ivp_time(t)
    out = np.zeros((t.size, n))
    pos = t > 0.0
    out[~pos, 0] = 1.0
    if np.any(pos):
        tp = t[pos][:, None]
        period = 2 * (n + 1)
        # exp(-2t) I_nu(2t) ~ exp(-nu**2 / (4t)): images beyond nu ~ sqrt(200 t) are below 1e-40
        m_max = int(math.ceil(math.sqrt(200.0 * float(np.max(tp)) + 1.0) / period)) + 1
        j = np.arange(1, n + 1, dtype=np.float64)[None, :]
        acc = np.zeros((tp.shape[0], n))
        for m in sorted(range(-m_max, m_max + 1), key=abs, reverse=True):
            nu = j + m * period
            acc += (nu / tp) * special.ive(np.abs(nu), 2.0 * tp)
        out[pos] = acc
    return out


def _exact_c3(t):
    return _exact_tridiagonal(t, 10)


def _exact_c4(t):
    return _exact_tridiagonal(t, 51)


# C5: the five outer planets in heliocentric coordinates (Jupiter, Saturn, Uranus, Neptune,
# Pluto); masses in solar units, k2 the gravitational constant in the problem's units.
_C5_K2 = 2.95912208286
_C5_M0 = 1.00000597682
_C5_M = np.array([0.954786104043e-3, 0.285583733151e-3, 0.437273164546e-4, 0.517759138449e-4, 0.277777777778e-5])
# state: positions (x, y, z) of planet 1..5, then velocities in the same order
_C5_Y0 = (
    3.42947415189, 3.35386959711, 1.35494901715,
    6.64145542550, 5.97156957878, 2.18231499728,
    11.2630437207, 14.6952576794, 6.27960525067,
    -30.1552268759, 1.65699966404, 1.43785752721,
    -21.1238353380, 28.4465098142, 15.3882659679,
    -0.557160570446, 0.505696783289, 0.230578543901,
    -0.415570776342, 0.365682722812, 0.169143213293,
    -0.325325669158, 0.189706021964, 0.0877265322780,
    -0.0240476254170, -0.287659532608, -0.117219543175,
    -0.176860753121, -0.216393453025, -0.0148647893090,
)  # fmt: skip


def _rhs_c5(xp, t, y, p):
    """y_i'' = k2 (-(m0 + m_i) y_i / r_i**3 + sum_{j != i} m_j ((y_j - y_i)/d_ij**3 - y_j/r_j**3))."""
    k2, m0 = p["k2"], p["m0"]
    m, eye = p["m"], p["eye"]  # (5,), (5, 5)
    batch = tuple(y.shape[:-1])
    q = xp.reshape(y[..., :15], batch + (5, 3))
    v = y[..., 15:]
    r2 = xp.sum(q * q, axis=-1)  # (..., 5)
    ir3 = 1.0 / (r2 * xp.sqrt(r2))  # 1 / r_j**3
    dq = q[..., None, :, :] - q[..., :, None, :]  # [i, j] = y_j - y_i
    d2 = xp.sum(dq * dq, axis=-1) + eye  # diagonal (0) replaced by 1
    id3 = (1.0 - eye) / (d2 * xp.sqrt(d2))  # 1 / d_ij**3 off the diagonal, 0 on it
    w = m * id3  # w_ij = m_j / d_ij**3 (0 for j = i), (..., 5, 5)
    mask = (1.0 - eye) * m  # m_j for j != i, 0 for j = i
    qr = q * ir3[..., :, None]  # y_j / r_j**3
    acc = (
        -(m0 + m)[:, None] * qr  # -(m0 + m_i) y_i / r_i**3
        + xp.matmul(w, q)
        - xp.sum(w, axis=-1)[..., :, None] * q  # sum_j m_j (y_j - y_i) / d_ij**3
        - xp.matmul(mask, qr)  # sum_{j != i} m_j y_j / r_j**3
    )
    return xp.concat([v, xp.reshape(k2 * acc, batch + (15,))], axis=-1)


def _c5_energy(y):
    """Total energy in barycentric velocities (conserved): sum m v**2 / 2 - k2 sum m_i m_j / d."""
    y = np.asarray(y, dtype=np.float64)
    q = y[..., :15].reshape(y.shape[:-1] + (5, 3))
    v = y[..., 15:].reshape(y.shape[:-1] + (5, 3))
    mtot = _C5_M0 + _C5_M.sum()
    vsun = -np.einsum("j,...jk->...k", _C5_M, v) / mtot  # barycentric velocity of the sun
    vb = v + vsun[..., None, :]
    kin = 0.5 * _C5_M0 * np.sum(vsun**2, axis=-1) + 0.5 * np.einsum("j,...j->...", _C5_M, np.sum(vb**2, -1))
    r = np.sqrt(np.sum(q**2, axis=-1))
    pot = -_C5_K2 * _C5_M0 * np.einsum("j,...j->...", _C5_M, 1.0 / r)
    for i in range(5):
        for j in range(i + 1, 5):
            dij = np.sqrt(np.sum((q[..., i, :] - q[..., j, :]) ** 2, axis=-1))
            pot = pot - _C5_K2 * _C5_M[i] * _C5_M[j] / dij
    return kin + pot


# ---------------------------------------------------------------------------------------------
# Class D: Kepler orbits, eccentricities 0.1, 0.3, 0.5, 0.7, 0.9
# ---------------------------------------------------------------------------------------------


def _rhs_d(xp, t, y, p):
    y1, y2, y3, y4 = y[..., 0], y[..., 1], y[..., 2], y[..., 3]
    d = y1 * y1 + y2 * y2
    d3 = d * xp.sqrt(d)
    return _out(xp, y3, y4, -y1 / d3, -y2 / d3)


def _make_exact_d(e: float):
    b = math.sqrt(1.0 - e * e)

    def exact(t):
        # a = 1, mu = 1, period 2 pi, pericentre at t = 0: mean anomaly M = t
        t = _ivp_time(t)
        ecc = eccentric_anomaly(t, e)
        c, s = np.cos(ecc), np.sin(ecc)
        den = 1.0 - e * c
        return np.stack([c - e, b * s, -s / den, b * c / den], axis=-1)

    return exact


def _d_energy(y):
    y = np.asarray(y, dtype=np.float64)
    return 0.5 * (y[..., 2] ** 2 + y[..., 3] ** 2) - 1.0 / np.hypot(y[..., 0], y[..., 1])


def _d_angular_momentum(y):
    y = np.asarray(y, dtype=np.float64)
    return y[..., 0] * y[..., 3] - y[..., 1] * y[..., 2]


# ---------------------------------------------------------------------------------------------
# Class E: higher-order equations written as first-order systems
# ---------------------------------------------------------------------------------------------


def _rhs_e1(xp, t, y, p):
    t = _time(xp, t, y)
    y1, y2 = y[..., 0], y[..., 1]
    tp1 = t + 1.0
    return _out(xp, y2, -(y2 / tp1 + (1.0 - 0.25 / (tp1 * tp1)) * y1))


def _exact_e1(t):
    # Bessel's equation of order 1/2 in x = t + 1: y = J_{1/2}(x) = sqrt(2/(pi x)) sin x
    t = _ivp_time(t)
    x = t + 1.0
    c = math.sqrt(2.0 / math.pi)
    y1 = c * np.sin(x) / np.sqrt(x)
    y2 = c * (np.cos(x) / np.sqrt(x) - 0.5 * np.sin(x) / x**1.5)
    return np.stack([y1, y2], axis=-1)


# Algorithm 648 (IVALU): y(0) = sqrt(2/pi) (sin 1, cos 1 - sin(1)/2) with these printed digits
_E1_Y0 = (0.79788456080286536 * 0.84147098480789651, 0.79788456080286536 * 0.11956681346419146)


def _rhs_e2(xp, t, y, p):
    y1, y2 = y[..., 0], y[..., 1]
    return _out(xp, y2, (1.0 - y1 * y1) * y2 - y1)


def _rhs_e3(xp, t, y, p):
    t = _time(xp, t, y)
    y1, y2 = y[..., 0], y[..., 1]
    return _out(xp, y2, y1 * y1 * y1 / 6.0 - y1 + 2.0 * _fn(xp, "sin", 2.78535 * t))


def _rhs_e4(xp, t, y, p):
    y2 = y[..., 1]
    return _out(xp, y2, 0.032 - 0.4 * y2 * y2)


def _exact_e4(t):
    # y2' = a - b y2**2: y2 = sqrt(a/b) tanh(sqrt(ab) t), y1 = 30 + ln cosh(sqrt(ab) t) / b
    t = _ivp_time(t)
    a, b = 0.032, 0.4
    w = math.sqrt(a * b)
    x = w * np.abs(t)
    logcosh = x + np.log1p(np.exp(-2.0 * x)) - math.log(2.0)
    return np.stack([30.0 + logcosh / b, math.sqrt(a / b) * np.tanh(w * t)], axis=-1)


def _rhs_e5(xp, t, y, p):
    t = _time(xp, t, y)
    y2 = y[..., 1]
    return _out(xp, y2, xp.sqrt(1.0 + y2 * y2) / (25.0 - t))


def _exact_e5(t):
    # asinh(y2) = ln(25/(25 - t)) =: ln u;  y2 = (u - 1/u)/2;  y1 = (25 ln u + ((25-t)**2 - 625)/50)/2
    t = _ivp_time(t)
    if np.any(t >= 25.0):
        raise ValueError("E5's solution exists for t < 25 only")
    u = 25.0 / (25.0 - t)
    y2 = 0.5 * (u - 1.0 / u)
    y1 = 0.5 * (-25.0 * np.log1p(-t / 25.0) + ((25.0 - t) ** 2 - 625.0) / 50.0)
    return np.stack([y1, y2], axis=-1)


# ---------------------------------------------------------------------------------------------
# published end-point values (Algorithm 648, routine EVALU), t = 20, 16 printed digits
# ---------------------------------------------------------------------------------------------

PUBLISHED: dict[str, tuple[float, ...]] = {
    "detest_a1": (2.061153353012535e-09,),
    "detest_a2": (2.182178902359887e-01,),
    "detest_a3": (2.491650271850414e00,),
    "detest_a4": (1.773016648131483e01,),
    "detest_a5": (-7.887826688964196e-01,),
    "detest_b1": (6.761876008576667e-01, 1.860816099640036e-01),
    "detest_b2": (1.000000001030576e00, 1.000000000000000e00, 9.999999989694235e-01),
    "detest_b3": (2.061153488557776e-09, 5.257228022048349e-02, 9.474277177183630e-01),
    "detest_b4": (9.826950928005993e-01, 2.198447081694832e00, 9.129452507276399e-01),
    "detest_b5": (-9.396570798729192e-01, -3.421177754000779e-01, 7.414126596199957e-01),
    "detest_c1": (
        2.061153622240064e-09, 4.122307244619555e-08, 4.122307244716968e-07, 2.748204829855288e-06,
        1.374102414941961e-05, 5.496409659803266e-05, 1.832136553274552e-04, 5.234675866508716e-04,
        1.308668966628220e-03, 9.979127409508656e-01,
    ),
    "detest_c2": (
        2.061153577984930e-09, 2.061153573736588e-09, 2.061153569488245e-09, 2.061153565239902e-09,
        2.061153560991560e-09, 2.061153556743217e-09, 2.061153552494874e-09, 2.061153548246532e-09,
        2.061153543998189e-09, 9.999999814496180e-01,
    ),
    "detest_c3": (
        2.948119211022058e-03, 5.635380154844266e-03, 7.829072515926013e-03, 9.348257908594937e-03,
        1.007943610301970e-02, 9.982674171429909e-03, 9.088693332766085e-03, 7.489115195185912e-03,
        5.322964130953349e-03, 2.762434379029886e-03,
    ),
    "detest_c4": (
        3.124111453721466e-03, 6.015416842150318e-03, 8.470021834842650e-03, 1.033682931733337e-02,
        1.153249572873923e-02, 1.204549525737964e-02, 1.192957068015293e-02, 1.128883207111195e-02,
        1.025804501391024e-02, 8.982017581934167e-03, 7.597500902492453e-03, 6.219920556824985e-03,
        4.935916341009131e-03, 3.801432544256119e-03, 2.844213677587894e-03, 2.069123394222672e-03,
        1.464687282843915e-03, 1.009545263941126e-03, 6.779354330227017e-04, 4.437815269118510e-04,
        2.833264542938954e-04, 1.765005798796805e-04, 1.073342592697238e-04, 6.374497601777217e-05,
        3.698645309704183e-05, 2.097466832643746e-05, 1.162956710412555e-05, 6.306710405783322e-06,
        3.346286430868515e-06, 1.737760074184334e-06, 8.835366904275847e-07, 4.399520411127637e-07,
        2.146181897152360e-07, 1.025981211654928e-07, 4.807864068784215e-08, 2.209175152474847e-08,
        9.956251263138180e-09, 4.402193653748924e-09, 1.910149382204028e-09, 8.135892921473050e-10,
        3.402477118549235e-10, 1.397485617545782e-10, 5.638575303049199e-11, 2.235459707956947e-11,
        8.710498036398032e-12, 3.336554275346643e-12, 1.256679567784939e-12, 4.654359053128788e-13,
        1.693559145599857e-13, 5.996593816663054e-14, 1.891330702629865e-14,
    ),
    "detest_c5": (
        -4.792730224323733e00, -2.420550725448973e00, -9.212509306014886e-01,
        -4.217310404035213e00, 7.356202947498970e00, 3.223785985421212e00,
        4.035559443262270e00, 1.719865528670555e01, 7.478910794233703e00,
        -2.998759326324844e01, -4.107310937550929e00, -9.277008321754407e-01,
        -2.442125302518482e01, 2.381459045746554e01, 1.492096306951359e01,
        3.499208963063806e-01, -5.748487687912825e-01, -2.551694020879149e-01,
        -5.237040978903326e-01, -2.493000463579661e-01, -8.045341642044464e-02,
        -3.875289237334110e-01, 5.648603288767891e-02, 3.023606472143342e-02,
        4.133856546712445e-02, -2.862393029841379e-01, -1.183032405136207e-01,
        -1.511986457359206e-01, -2.460068894318766e-01, -3.189687411323877e-02,
    ),
    "detest_d1": (2.198835352008397e-01, 9.427076846341813e-01, -9.787659841058176e-01, 3.287977990962036e-01),
    "detest_d2": (-1.777027357140412e-01, 9.467784719905892e-01, -1.030294163192969e00, 1.211074890053952e-01),
    "detest_d3": (-5.780432953035361e-01, 8.633840009194193e-01, -9.595083730380727e-01, -6.504915126712089e-02),
    "detest_d4": (-9.538990293416394e-01, 6.907409024219432e-01, -8.212674270877433e-01, -1.539574259125825e-01),
    "detest_d5": (-1.295266250987574e00, 4.003938963792321e-01, -6.775390924707566e-01, -1.270838154278686e-01),
    "detest_e1": (1.456723600728308e-01, -9.883500195574063e-02),
    "detest_e2": (2.008149762174948e00, -4.250887527320057e-02),
    "detest_e3": (-1.004178858647128e-01, 2.411400132095954e-01),
    "detest_e4": (3.395091444646555e01, 2.767822659672869e-01),
    "detest_e5": (1.411797390542629e01, 2.400000000000002e00),
}  # fmt: skip

#: agreement of the published values with ours, in max_i |published_i - ours_i| / max(1, |ours_i|),
#: enforced by the tests. Measured (scipy 1.17): closed forms <= 5.4e-14 (B4; A5 1.4e-14, the
#: rest <= 6.1e-15); computed references <= 2.9e-13 (E3; C5 2.1e-13, B1 3.9e-14, E2 2.8e-14).
PUBLISHED_AGREEMENT = {"closed_form": 1e-13, "computed": 1e-12}
# ---------------------------------------------------------------------------------------------
# computed references (cached high-precision solves)
# ---------------------------------------------------------------------------------------------

#: problems without a closed form, which get a computed reference
COMPUTED = ("detest_b1", "detest_c5", "detest_e2", "detest_e3")

#: how the computed references are made: primary solve and independent cross-check
REFERENCE_SOLVE = {"method": "DOP853", "rtol": 1e-13, "atol": 1e-16}
REFERENCE_CHECK = {"method": "Radau", "rtol": 1e-13, "atol": 1e-16}


def fingerprint(problem: Problem) -> str:
    """SHA-256 of name, y0, t_span and parameters (exact bits), to detect stale references."""
    h = hashlib.sha256()
    h.update(problem.name.encode())
    h.update(np.asarray(problem.y0, dtype="<f8").tobytes())
    h.update(np.asarray(problem.t_span, dtype="<f8").tobytes())
    for key in sorted(problem.params):
        h.update(key.encode())
        h.update(np.asarray(problem.params[key], dtype="<f8").tobytes())
    return h.hexdigest()


def numpy_f(problem: Problem):
    """``f(t, y)`` on plain NumPy float64 (for scipy), via the Array API rhs."""
    from .._xp import get_namespace

    xp = get_namespace("numpy")
    f = problem.vector_field(xp, dtype=np.float64)

    def fun(t, y):
        return np.asarray(f(np.asarray(t, dtype=np.float64), np.asarray(y, dtype=np.float64)), dtype=np.float64)

    return fun


def solve(problem: Problem, method: str, rtol: float, atol: float) -> tuple[np.ndarray, int]:
    """y(t_end) by ``scipy.integrate.solve_ivp`` (and the number of f evaluations)."""
    from scipy.integrate import solve_ivp

    sol = solve_ivp(
        numpy_f(problem), problem.t_span, np.asarray(problem.y0), method=method, rtol=rtol, atol=atol,
        t_eval=[problem.t_span[1]], dense_output=False,
    )  # fmt: skip
    if not sol.success:
        raise RuntimeError(f"{problem.name}: solve_ivp({method}) failed: {sol.message}")
    return sol.y[:, -1].copy(), int(sol.nfev)


def make_references(
    path: Path | str = DATA_PATH,
    names: tuple[str, ...] = COMPUTED,
    solve_opts: dict[str, Any] | None = None,
    check_opts: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Compute the references, cross-check them, and write the data file atomically."""
    import scipy

    solve_opts = dict(REFERENCE_SOLVE if solve_opts is None else solve_opts)
    check_opts = dict(REFERENCE_CHECK if check_opts is None else check_opts)
    entries: dict[str, Any] = {}
    for name in names:
        prob = PROBLEMS.get(name)
        y, nfev = solve(prob, **solve_opts)
        yc, nfev_c = solve(prob, **check_opts)
        scale = np.maximum(1.0, np.abs(y))
        diff = float(np.max(np.abs(y - yc) / scale))
        pub = np.asarray(PUBLISHED[name])
        entries[name] = {
            "t": prob.t_span[1],
            "y": [float(v) for v in y],
            "nfev": nfev,
            "fingerprint": fingerprint(prob),
            "f0": [float(v) for v in numpy_f(prob)(prob.t_span[0], np.asarray(prob.y0))],
            "check_y": [float(v) for v in yc],
            "check_nfev": nfev_c,
            "check_max_scaled_diff": diff,
            "published_max_scaled_diff": float(np.max(np.abs(y - pub) / scale)),
            # claimed accuracy of y, in max_i |err_i| / max(1, |y_i|)
            "claimed_accuracy": float(max(1e-11, 10.0 * diff)),
        }
    payload = {
        "description": "Computed reference values of DETEST problems without a closed form",
        "generator": "python -m odeverify.problems.detest --make-references",
        "solver": "scipy.integrate.solve_ivp",
        "method": solve_opts["method"],
        "rtol": solve_opts["rtol"],
        "atol": solve_opts["atol"],
        "check": check_opts,
        "error_measure": "max_i |y_i - y_ref_i| / max(1, |y_ref_i|)",
        "scipy_version": scipy.__version__,
        "numpy_version": np.__version__,
        "python_version": sys.version.split()[0],
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "problems": entries,
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(payload, fh, indent=1)
            fh.write("\n")
        os.chmod(tmp, 0o644)  # mkstemp creates 0600
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return payload


def load_references(path: Path | str = DATA_PATH) -> dict[str, Any]:
    """The data file's content ({} if it does not exist yet)."""
    path = Path(path)
    if not path.exists():
        return {}
    with open(path) as fh:
        return json.load(fh)


def _computed_reference(prob: Problem, data: dict[str, Any]) -> Reference | None:
    entry = data.get("problems", {}).get(prob.name)
    if entry is None or entry.get("fingerprint") != fingerprint(prob):
        return None  # missing or stale: the tests require it and fail
    source = (
        f"{data['solver']}(method={data['method']!r}, rtol={data['rtol']:g}, atol={data['atol']:g}),"
        f" scipy {data['scipy_version']}, {data['created']}; cross-checked with"
        f" method={data['check']['method']!r} (rtol={data['check']['rtol']:g}):"
        f" max scaled difference {entry['check_max_scaled_diff']:.1e}; claimed accuracy"
        f" {entry['claimed_accuracy']:.0e} in max_i |err_i|/max(1,|y_i|)"
    )
    return Reference(t=float(entry["t"]), y=tuple(entry["y"]), kind="computed", source=source)


# ---------------------------------------------------------------------------------------------
# registration
# ---------------------------------------------------------------------------------------------

_ALWAYS = {"detest", "nonstiff", "has_reference"}


def _problem(name, rhs, y0, tags, description, exact=None, params=None, invariants=None) -> Problem:
    tags = set(tags) | _ALWAYS
    if exact is not None:
        tags.add("has_exact")
    tags.add("time_dependent" if "time_dependent" in tags else "autonomous")
    refs = [Reference(t=T_END, y=PUBLISHED[name], kind="published", digits=16, source=PUBLISHED_SOURCE)]
    return Problem(
        name=name, rhs=rhs, y0=y0, t_span=T_SPAN, params=params or {}, exact=exact,
        references=tuple(refs), tags=frozenset(tags), citation=CITATION, description=description,
        invariants=invariants or {},
    )  # fmt: skip


def _build() -> list[Problem]:
    probs = [
        _problem("detest_a1", _rhs_a1, (1.0,), {"scalar", "linear", "dissipative"},
                 "A1: y' = -y, y(0) = 1 (exponential decay)", _exact_a1),
        _problem("detest_a2", _rhs_a2, (1.0,), {"scalar", "nonlinear"},
                 "A2: y' = -y**3/2, y(0) = 1; y = 1/sqrt(1 + t)", _exact_a2),
        _problem("detest_a3", _rhs_a3, (1.0,), {"scalar", "linear", "time_dependent", "oscillatory", "periodic"},
                 "A3: y' = y cos t, y(0) = 1; y = exp(sin t)", _exact_a3),
        _problem("detest_a4", _rhs_a4, (1.0,), {"scalar", "nonlinear"},
                 "A4: y' = (y/4)(1 - y/20), y(0) = 1 (logistic curve)", _exact_a4),
        _problem("detest_a5", _rhs_a5, (4.0,), {"scalar", "nonlinear", "time_dependent"},
                 "A5: y' = (y - t)/(y + t), y(0) = 4 (spiral curve; implicit closed form)", _exact_a5),
        _problem("detest_b1", _rhs_b1, (1.0, 3.0), {"nonlinear", "oscillatory", "periodic"},
                 "B1: Lotka-Volterra y1' = 2(y1 - y1 y2), y2' = -(y2 - y1 y2), y(0) = (1, 3)",
                 invariants={"first_integral": _invariant_b1}),
        _problem("detest_b2", _rhs_b2, (2.0, 0.0, 1.0), {"linear", "dissipative"},
                 "B2: linear chain y1' = -y1 + y2, y2' = y1 - 2 y2 + y3, y3' = y2 - y3", _exact_b2,
                 invariants={"sum": lambda y: np.sum(np.asarray(y), axis=-1)}),
        _problem("detest_b3", _rhs_b3, (1.0, 0.0, 0.0), {"nonlinear"},
                 "B3: nonlinear chemical reaction y1' = -y1, y2' = y1 - y2**2, y3' = y2**2", _exact_b3,
                 invariants={"sum": lambda y: np.sum(np.asarray(y), axis=-1)}),
        _problem("detest_b4", _rhs_b4, (3.0, 0.0, 0.0), {"nonlinear", "oscillatory", "periodic"},
                 "B4: y1' = -y2 - y1 y3/r, y2' = y1 - y2 y3/r, y3' = y1/r, r = sqrt(y1**2 + y2**2)",
                 _exact_b4),
        _problem("detest_b5", _rhs_b5, (0.0, 1.0, 1.0), {"nonlinear", "oscillatory", "periodic"},
                 "B5: Euler's rigid body y1' = y2 y3, y2' = -y1 y3, y3' = -0.51 y1 y2 (sn, cn, dn)",
                 _exact_b5,
                 invariants={
                     "sn2_cn2": lambda y: np.asarray(y)[..., 0] ** 2 + np.asarray(y)[..., 1] ** 2,
                     "m_sn2_dn2": lambda y: _B5_M * np.asarray(y)[..., 0] ** 2 + np.asarray(y)[..., 2] ** 2,
                 }),
        _problem("detest_c1", _rhs_linear, _e1(10), {"linear"},
                 "C1: radioactive decay chain y1' = -y1, yi' = y(i-1) - yi, y10' = y9", _exact_c1,
                 params={"AT": _A_C1.T.copy()},
                 invariants={"sum": lambda y: np.sum(np.asarray(y), axis=-1)}),
        _problem("detest_c2", _rhs_linear, _e1(10), {"linear"},
                 "C2: decay chain y1' = -y1, yi' = (i-1) y(i-1) - i yi, y10' = 9 y9", _exact_c2,
                 params={"AT": _A_C2.T.copy()},
                 invariants={"sum": lambda y: np.sum(np.asarray(y), axis=-1)}),
        _problem("detest_c3", _rhs_linear, _e1(10), {"linear", "dissipative"},
                 "C3: heat equation semi-discretization, 10 equations, tridiag(1, -2, 1)", _exact_c3,
                 params={"AT": _A_C3.T.copy()}),
        _problem("detest_c4", _rhs_linear, _e1(51), {"linear", "dissipative"},
                 "C4: heat equation semi-discretization, 51 equations, tridiag(1, -2, 1)", _exact_c4,
                 params={"AT": _A_C4.T.copy()}),
        _problem("detest_c5", _rhs_c5, _C5_Y0, {"nonlinear", "hamiltonian", "oscillatory"},
                 "C5: five outer planets (Jupiter..Pluto) about the sun, heliocentric, 30 equations",
                 params={"k2": _C5_K2, "m0": _C5_M0, "m": _C5_M.copy(), "eye": np.eye(5)},
                 invariants={"energy": _c5_energy}),
    ]
    for i, e in enumerate((0.1, 0.3, 0.5, 0.7, 0.9), start=1):
        probs.append(
            _problem(f"detest_d{i}", _rhs_d, (1.0 - e, 0.0, 0.0, math.sqrt((1.0 + e) / (1.0 - e))),
                     {"nonlinear", "hamiltonian", "oscillatory", "periodic"},
                     f"D{i}: Kepler orbit with eccentricity {e} (period 2 pi, starts at pericentre)",
                     _make_exact_d(e),
                     invariants={"energy": _d_energy, "angular_momentum": _d_angular_momentum})
        )  # fmt: skip
    probs += [
        _problem("detest_e1", _rhs_e1, _E1_Y0, {"linear", "time_dependent", "oscillatory"},
                 "E1: Bessel's equation of order 1/2 in x = t + 1; y = J_{1/2}(t + 1)", _exact_e1),
        _problem("detest_e2", _rhs_e2, (2.0, 0.0), {"nonlinear", "oscillatory"},
                 "E2: Van der Pol y'' = (1 - y**2) y' - y, y(0) = 2, y'(0) = 0"),
        _problem("detest_e3", _rhs_e3, (0.0, 0.0), {"nonlinear", "time_dependent", "oscillatory"},
                 "E3: Duffing y'' = y**3/6 - y + 2 sin(2.78535 t), y(0) = y'(0) = 0"),
        _problem("detest_e4", _rhs_e4, (30.0, 0.0), {"nonlinear"},
                 "E4: y'' = 0.032 - 0.4 (y')**2, y(0) = 30, y'(0) = 0", _exact_e4),
        _problem("detest_e5", _rhs_e5, (0.0, 0.0), {"nonlinear", "time_dependent"},
                 "E5: y'' = sqrt(1 + (y')**2)/(25 - t), y(0) = y'(0) = 0", _exact_e5),
    ]  # fmt: skip
    return probs


def _with_computed(probs: list[Problem], data: dict[str, Any]) -> list[Problem]:
    from dataclasses import replace

    out = []
    for prob in probs:
        if prob.name in COMPUTED:
            ref = _computed_reference(prob, data)
            if ref is not None:
                prob = replace(prob, references=(ref,) + prob.references)
        out.append(prob)
    return out


#: the problems as defined here, before any computed reference is attached
BASE_PROBLEMS: tuple[Problem, ...] = tuple(_build())

if __name__ != "__main__":  # under ``python -m`` the package has registered them already
    for _p in _with_computed(list(BASE_PROBLEMS), load_references()):
        register(_p)
    del _p


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m odeverify.problems.detest")
    parser.add_argument("--make-references", action="store_true", help=f"recompute {DATA_PATH.name}")
    parser.add_argument("--path", default=str(DATA_PATH))
    args = parser.parse_args(argv)
    if not args.make_references:
        parser.print_help()
        return 0
    payload = make_references(args.path)
    for name, entry in payload["problems"].items():
        print(
            f"{name}: nfev={entry['nfev']}, |DOP853 - Radau| = {entry['check_max_scaled_diff']:.2e},"
            f" |DOP853 - published| = {entry['published_max_scaled_diff']:.2e}"
        )
    print(f"wrote {args.path}")
    return 0


if __name__ == "__main__":
    # run the copy imported (and registered) by the package, not this __main__ copy
    from odeverify.problems import detest as _detest

    raise SystemExit(_detest.main())
