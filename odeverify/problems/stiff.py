"""Stiff test problems with analytic Jacobians and published (or computed) references.

The chemical-kinetics and relaxation problems (ROBER, HIRES, VDPOL, VDPOLM, OREGO, POLLU, E5)
follow the problem files of the Bari test set (F. Mazzia, C. Magherini et al., *Test Set for Initial
Value Problem Solvers*, release 2.4, University of Bari, 2008): right-hand side (``feval``),
Jacobian (``jeval``), initial value (``init``), end time (``prob``) and the reference solution
at the end time (``solut``, 16 printed digits), each transcribed from the problem's Fortran
file, ``$Id: <name>.F,v 1.2 2006/10/02`` (``orego.F`` v1.4, ``e5.F`` v1.3), and its PDF
section. Every transcription is checked in ``tests/test_problems_stiff.py`` by solving it
with scipy's Radau at tight tolerance and comparing with the published value;
:data:`PUBLISHED_AGREEMENT` records the digits reached. Two published values are less
accurate than their 16 printed digits (measured, see :data:`ROBER_MASS_DEFECT` and
:data:`E5_AGREEMENT`): ROBER's y3 to ~1e-14, and E5's y2, y3 at t = 1e13, which double
precision determines only to ~1e-3 each.

Two factories add stiff problems with a prescribed stiffness ratio: :func:`stiff_linear_problem`
(linear, closed form) and :func:`stiff_neural_problem` (a seeded MLP coupled to a fast
relaxation; computed reference). Problems without a published value at their end time carry a
computed reference, cached in ``data/stiff_references.json`` by
``python -m odeverify.problems.stiff --make-references`` (scipy Radau with the analytic
Jacobian at rtol = 1e-12, checked by a second solve; the method and tolerances are recorded in
each :class:`~odeverify.problems.Reference`).

Every right-hand side and Jacobian is written against the Array API (leading batch axes
allowed); the Jacobian ``jac(xp, t, y, p)`` returns ``(..., n, n)`` with
``J[..., i, j] = d f_i / d y_j``.
"""
from __future__ import annotations

import datetime as _dt
import json
import math
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from .. import _xp
from . import register
from ._reference_data import f0, fingerprint
from ._spec import Problem, Reference
from .classic import linear_problem
from .make_references import write_atomically
from .neural import mlp_field

BARI = (
    "F. Mazzia, C. Magherini et al., Test Set for Initial Value Problem Solvers, release 2.4,"
    " Department of Mathematics, University of Bari, 2008 (https://archimede.uniba.it/~testset/)"
)
HNW2 = (
    "E. Hairer, G. Wanner, Solving Ordinary Differential Equations II: Stiff and"
    " Differential-Algebraic Problems, 2nd ed., Springer Series in Computational Mathematics 14,"
    " Springer, 1996"
)

#: the data file of computed references (written by ``--make-references``)
DATA_PATH = Path(__file__).with_name("data") / "stiff_references.json"

#: the tight solve behind a computed reference, and the check solve that bounds its error
REF_METHOD, REF_RTOL = "Radau", 1e-12
CHECK_METHOD, CHECK_RTOL = "BDF", 1e-11
#: never claim more digits than a Radau solve at rtol = 1e-12 can deliver
MAX_COMPUTED_DIGITS = 11


def _register(problem: Problem) -> Problem:
    """Register ``problem``, except when this file runs as ``python -m`` (the package has
    registered the imported copy already)."""
    return register(problem) if __name__ != "__main__" else problem


def _bari_source(problem: str, how: str) -> str:
    return (f"{BARI}, problem {problem.upper()}: reference solution at the end time"
            f" ({problem}.f, subroutine solut: {how})")


# --------------------------------------------------------------------------- Array API helpers


def _full(xp: Any, value: float, like: Any) -> Any:
    return xp.full(like.shape, value, dtype=like.dtype, device=_xp.device(like))


def _matrix(xp: Any, rows: list[list[Any]], like: Any) -> Any:
    """Stack a dense table of entries (arrays shaped like ``like``, or Python numbers) into an
    array of shape ``like.shape + (n, n)``."""
    filled = [[e if _xp.is_array(e) else _full(xp, float(e), like) for e in row] for row in rows]
    return xp.stack([xp.stack(row, axis=-1) for row in filled], axis=-2)


def _sparse_matrix(xp: Any, n: int, entries: dict[tuple[int, int], Any], like: Any) -> Any:
    """``_matrix`` from the nonzero entries ``{(i, j): value}`` (0-based), zeros elsewhere."""
    zero = _full(xp, 0.0, like)
    return _matrix(xp, [[entries.get((i, j), zero) for j in range(n)] for i in range(n)], like)


def _published(name: str, t: float, y: tuple[float, ...], how: str, digits: int = 16) -> Reference:
    return Reference(t=t, y=y, kind="published", source=_bari_source(name, how), digits=digits)


# --------------------------------------------------------------------------- ROBER


def _rhs_rober(xp, t, y, p):
    k1, k2, k3 = p["k1"], p["k2"], p["k3"]
    y1, y2, y3 = y[..., 0], y[..., 1], y[..., 2]
    r1, r2, r3 = k1 * y1, k2 * y2 * y3, k3 * y2 * y2
    return xp.stack([-r1 + r2, r1 - r2 - r3, r3], axis=-1)


def _jac_rober(xp, t, y, p):
    k1, k2, k3 = p["k1"], p["k2"], p["k3"]
    y2, y3 = y[..., 1], y[..., 2]
    return _matrix(xp, [
        [-k1, k2 * y3, k2 * y2],
        [k1, -k2 * y3 - 2.0 * k3 * y2, -k2 * y2],
        [0.0, 2.0 * k3 * y2, 0.0],
    ], y2)


#: rober.f, subroutine solut (RADAU on an Alphaserver DS20E, uround = 1.01e-19,
#: rtol = atol = h0 = 1.1e-18)
ROBER_REF_1E11 = (0.2083340149701255e-07, 0.8333360770334713e-13, 0.9999999791665050e+00)

_ROBER = dict(
    rhs=_rhs_rober,
    jac=_jac_rober,
    y0=(1.0, 0.0, 0.0),
    params={"k1": 0.04, "k2": 1.0e4, "k3": 3.0e7},
    invariants={"mass": lambda y: np.sum(y, axis=-1)},
    citation=BARI + ", problem ROBER (rober.f, rober.pdf); H. H. Robertson, The solution of a"
    " set of reaction rate equations, in: J. Walsh (ed.), Numerical Analysis: an Introduction,"
    " Academic Press, 1966, 178-182; " + HNW2 + ", Section IV.1 (ROBER)",
)

rober = _register(Problem(
    name="rober",
    t_span=(0.0, 1.0e11),
    references=(_published("rober", 1.0e11, ROBER_REF_1E11,
                           "RADAU, uround = 1.01e-19, rtol = atol = h0 = 1.1e-18"),),
    tags={"stiff", "nonlinear", "autonomous", "has_reference"},
    description="Robertson's autocatalytic reaction: y1' = -0.04 y1 + 1e4 y2 y3,"
    " y2' = 0.04 y1 - 1e4 y2 y3 - 3e7 y2^2, y3' = 3e7 y2^2, y(0) = (1, 0, 0), t in [0, 1e11]"
    " (mass y1 + y2 + y3 = 1 is conserved; y2 is of order 1e-5 .. 1e-13).",
    **_ROBER,
))


# --------------------------------------------------------------------------- HIRES


def _rhs_hires(xp, t, y, p):
    y1, y2, y3, y4, y5, y6, y7, y8 = (y[..., i] for i in range(8))
    r = 280.0 * y6 * y8
    f7 = r - 1.81 * y7
    return xp.stack([
        -1.71 * y1 + 0.43 * y2 + 8.32 * y3 + 0.0007,
        1.71 * y1 - 8.75 * y2,
        -10.03 * y3 + 0.43 * y4 + 0.035 * y5,
        8.32 * y2 + 1.71 * y3 - 1.12 * y4,
        -1.745 * y5 + 0.43 * (y6 + y7),
        -r + 0.69 * y4 + 1.71 * y5 - 0.43 * y6 + 0.69 * y7,
        f7,
        -f7,
    ], axis=-1)


def _jac_hires(xp, t, y, p):
    y6, y8 = y[..., 5], y[..., 7]
    a, b = 280.0 * y8, 280.0 * y6
    return _sparse_matrix(xp, 8, {
        (0, 0): -1.71, (0, 1): 0.43, (0, 2): 8.32,
        (1, 0): 1.71, (1, 1): -8.75,
        (2, 2): -10.03, (2, 3): 0.43, (2, 4): 0.035,
        (3, 1): 8.32, (3, 2): 1.71, (3, 3): -1.12,
        (4, 4): -1.745, (4, 5): 0.43, (4, 6): 0.43,
        (5, 3): 0.69, (5, 4): 1.71, (5, 5): -a - 0.43, (5, 6): 0.69, (5, 7): -b,
        (6, 5): a, (6, 6): -1.81, (6, 7): b,
        (7, 5): -a, (7, 6): 1.81, (7, 7): -b,
    }, y6)


#: hires.f, subroutine solut (RADAU5 on a Cray C90, uround = 1.01e-19, rtol = atol = h0 = 1.1e-18)
HIRES_REF = (
    0.7371312573325668e-3, 0.1442485726316185e-3, 0.5888729740967575e-4, 0.1175651343283149e-2,
    0.2386356198831331e-2, 0.6238968252742796e-2, 0.2849998395185769e-2, 0.2850001604814231e-2,
)

hires = _register(Problem(
    name="hires",
    rhs=_rhs_hires,
    jac=_jac_hires,
    y0=(1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0057),
    t_span=(0.0, 321.8122),
    references=(_published("hires", 321.8122, HIRES_REF,
                           "RADAU5 on a Cray C90, uround = 1.01e-19, rtol = atol = h0 = 1.1e-18"),),
    invariants={"y7_plus_y8": lambda y: y[..., 6] + y[..., 7]},
    tags={"stiff", "nonlinear", "autonomous", "has_reference"},
    citation=BARI + ", problem HIRES (hires.f, hires.pdf); E. Schaefer, A new approach to"
    " explain the 'high irradiance responses' of photomorphogenesis on the basis of phytochrome,"
    " J. Math. Biology 2 (1975) 41-56; " + HNW2 + ", Section IV.10 (HIRES)",
    description="High Irradiance RESponse of photomorphogenesis: 8 species, linear except the"
    " reaction 280 y6 y8, y(0) = (1, 0, 0, 0, 0, 0, 0, 0.0057), t in [0, 321.8122]"
    " (y7 + y8 = 0.0057 is conserved).",
))


# --------------------------------------------------------------------------- OREGO


def _rhs_orego(xp, t, y, p):
    s, q, w = p["s"], p["q"], p["w"]
    y1, y2, y3 = y[..., 0], y[..., 1], y[..., 2]
    return xp.stack([
        s * (y2 + y1 * (1.0 - q * y1 - y2)),
        (y3 - (1.0 + y1) * y2) / s,
        w * (y1 - y3),
    ], axis=-1)


def _jac_orego(xp, t, y, p):
    s, q, w = p["s"], p["q"], p["w"]
    y1, y2 = y[..., 0], y[..., 1]
    return _matrix(xp, [
        [s * (1.0 - 2.0 * q * y1 - y2), s * (1.0 - y1), 0.0],
        [-y2 / s, -(1.0 + y1) / s, 1.0 / s],
        [w, 0.0, -w],
    ], y1)


#: orego.f, subroutine solut (RADAU on an Alphaserver DS20E, uround = 1.01e-19,
#: rtol = h0 = 1.1e-18, atol = 1.1e-40)
OREGO_REF = (0.1000814870318523e+1, 0.1228178521549917e+4, 0.1320554942846706e+3)

orego = _register(Problem(
    name="orego",
    rhs=_rhs_orego,
    jac=_jac_orego,
    y0=(1.0, 2.0, 3.0),
    t_span=(0.0, 360.0),
    params={"s": 77.27, "q": 8.375e-6, "w": 0.161},
    references=(_published("orego", 360.0, OREGO_REF,
                           "RADAU, uround = 1.01e-19, rtol = h0 = 1.1e-18, atol = 1.1e-40"),),
    tags={"stiff", "nonlinear", "autonomous", "oscillatory", "has_reference"},
    citation=BARI + ", problem OREGO (orego.f, orego.pdf); R. J. Field, R. M. Noyes,"
    " Oscillations in chemical systems IV, J. Chem. Phys. 60 (1974) 1877-1884; " + HNW2
    + ", Section IV.1 (OREG)",
    description="Oregonator (Belousov-Zhabotinskii reaction), s = 77.27, q = 8.375e-6,"
    " w = 0.161: y1' = s (y2 + y1 (1 - q y1 - y2)), y2' = (y3 - (1 + y1) y2)/s,"
    " y3' = w (y1 - y3), y(0) = (1, 2, 3), t in [0, 360] (periodic with sharp spikes).",
))


# --------------------------------------------------------------------------- VDPOL


def _rhs_vdpol_scaled(xp, t, y, p):
    y1, y2 = y[..., 0], y[..., 1]
    return xp.stack([y2, ((1.0 - y1 * y1) * y2 - y1) / p["eps"]], axis=-1)


def _jac_vdpol_scaled(xp, t, y, p):
    eps = p["eps"]
    y1, y2 = y[..., 0], y[..., 1]
    return _matrix(xp, [
        [0.0, 1.0],
        [(-2.0 * y1 * y2 - 1.0) / eps, (1.0 - y1 * y1) / eps],
    ], y1)


#: vdpol.f, subroutine solut (RADAU on an Alphaserver DS20E, uround = 1.01e-19,
#: rtol = atol = h0 = 1.1e-18)
VDPOL_REF = (0.1706167732170483e+1, -0.8928097010247975e+0)

vdpol = _register(Problem(
    name="vdpol",
    rhs=_rhs_vdpol_scaled,
    jac=_jac_vdpol_scaled,
    y0=(2.0, 0.0),
    t_span=(0.0, 2.0),
    params={"eps": 1.0e-6},
    references=(_published("vdpol", 2.0, VDPOL_REF,
                           "RADAU, uround = 1.01e-19, rtol = atol = h0 = 1.1e-18"),),
    tags={"stiff", "nonlinear", "autonomous", "oscillatory", "has_reference"},
    citation=BARI + ", problem VDPOL (vdpol.f, vdpol.pdf); B. van der Pol, On relaxation"
    " oscillations, Phil. Mag. 2 (1926) 978-992; " + HNW2 + ", Section IV.1 (VDPOL, scaled"
    " form (1.5'))",
    description="Van der Pol in Bari's scaled form, eps = 1e-6: y1' = y2,"
    " y2' = ((1 - y1^2) y2 - y1)/eps, y(0) = (2, 0), t in [0, 2] (the t-scaled equation with"
    " mu = 1000, mu^2 = 1/eps, over one slow branch and one fast jump).",
))


def _rhs_vdpol_mu(xp, t, y, p):
    y1, y2 = y[..., 0], y[..., 1]
    return xp.stack([y2, p["mu"] * (1.0 - y1 * y1) * y2 - y1], axis=-1)


def _jac_vdpol_mu(xp, t, y, p):
    mu = p["mu"]
    y1, y2 = y[..., 0], y[..., 1]
    return _matrix(xp, [
        [0.0, 1.0],
        [-2.0 * mu * y1 * y2 - 1.0, mu * (1.0 - y1 * y1)],
    ], y1)


#: vdpolm.f ("VAN DER POL modified": the unscaled equation, mu = 1000, t in [0, 2000]),
#: subroutine solut (RADAU on an Alphaserver DS20E, uround = 1.01e-19, rtol = atol = h0 =
#: 1.1e-18). The same trajectory as VDPOL under t = mu tau, y2 = y2_vdpol / mu: the two
#: published values agree to 8e-15 (y1) and 1.7e-14 (y2) relative.
VDPOLM_REF = (0.1706167732170469e+1, -0.8928097010248125e-3)

vdpol_mu1000 = _register(Problem(
    name="vdpol_mu1000",
    rhs=_rhs_vdpol_mu,
    jac=_jac_vdpol_mu,
    y0=(2.0, 0.0),
    t_span=(0.0, 2000.0),
    params={"mu": 1000.0},
    references=(_published("vdpolm", 2000.0, VDPOLM_REF,
                           "RADAU, uround = 1.01e-19, rtol = atol = h0 = 1.1e-18"),),
    tags={"stiff", "nonlinear", "autonomous", "oscillatory", "has_reference"},
    citation=BARI + ", problem VDPOLM (Van der Pol modified; vdpolm.f); " + HNW2
    + ", Section IV.1 (Van der Pol, mu = 1000); B. van der Pol, Phil. Mag. 2 (1926) 978-992",
    description="Van der Pol y1'' = mu (1 - y1^2) y1' - y1 as y1' = y2,"
    " y2' = mu (1 - y1^2) y2 - y1, mu = 1000, y(0) = (2, 0), t in [0, 2000] (period about"
    " (3 - 2 ln 2) mu = 1614; t = 2000 lies on a slow branch of the second period). The same"
    " trajectory as 'vdpol' with t = 1000 t_vdpol and y2 = y2_vdpol / 1000.",
))


# --------------------------------------------------------------------------- POLLU

#: rate constants k1 .. k25 of pollu.f (units min^-1 and ppm^-1 min^-1)
POLLU_K = (
    0.35, 0.266e2, 0.123e5, 0.86e-3, 0.82e-3, 0.15e5, 0.13e-3, 0.24e5, 0.165e5, 0.9e4,
    0.22e-1, 0.12e5, 0.188e1, 0.163e5, 0.48e7, 0.35e-3, 0.175e-1, 0.1e9, 0.444e12, 0.124e4,
    0.21e1, 0.578e1, 0.474e-1, 0.178e4, 0.312e1,
)

#: the 25 reactions: rate index -> the 0-based species indices multiplied into r_j = k_j prod y
POLLU_REACTANTS = (
    (0,), (1, 3), (4, 1), (6,), (6,), (6, 5), (8,), (8, 5), (10, 1), (10, 0),
    (12,), (9, 1), (13,), (0, 5), (2,), (3,), (3,), (15,), (15,), (16, 5),
    (18,), (18,), (0, 3), (18, 0), (19,),
)

#: species i: (reactions consuming it, reactions producing it), 1-based as in pollu.f;
#: a reaction listed twice counts twice (r4 makes two y5, r18 two y6)
POLLU_BALANCE = (
    ((1, 10, 14, 23, 24), (2, 3, 9, 11, 12, 22, 25)),
    ((2, 3, 9, 12), (1, 21)),
    ((15,), (1, 17, 19, 22)),
    ((2, 16, 17, 23), (15,)),
    ((3,), (4, 4, 6, 7, 13, 20)),
    ((6, 8, 14, 20), (3, 18, 18)),
    ((4, 5, 6), (13,)),
    ((), (4, 5, 6, 7)),
    ((7, 8), ()),
    ((12,), (7, 9)),
    ((9, 10), (8, 11)),
    ((), (9,)),
    ((11,), (10,)),
    ((13,), (12,)),
    ((), (14,)),
    ((18, 19), (16,)),
    ((20,), ()),
    ((), (20,)),
    ((21, 22, 24), (23, 25)),
    ((25,), (24,)),
)


def _pollu_rates(y, k):
    rates = []
    for kj, species in zip(k, POLLU_REACTANTS):
        r = kj * y[..., species[0]]
        for s in species[1:]:
            r = r * y[..., s]
        rates.append(r)
    return rates


def _rhs_pollu(xp, t, y, p):
    r = _pollu_rates(y, p["k"])
    out = []
    for consumed, produced in POLLU_BALANCE:
        terms = [r[j - 1] for j in produced] + [-r[j - 1] for j in consumed]
        total = terms[0]
        for term in terms[1:]:
            total = total + term
        out.append(total)
    return xp.stack(out, axis=-1)


def _jac_pollu(xp, t, y, p):
    """d f_i / d y_m = sum over reactions j of (production - consumption count of i in j)
    times d r_j / d y_m (r_j is a monomial of degree 1 or 2)."""
    k = p["k"]
    like = y[..., 0]
    entries: dict[tuple[int, int], Any] = {}
    for i, (consumed, produced) in enumerate(POLLU_BALANCE):
        counts: dict[int, int] = {}
        for j in produced:
            counts[j - 1] = counts.get(j - 1, 0) + 1
        for j in consumed:
            counts[j - 1] = counts.get(j - 1, 0) - 1
        for j, c in counts.items():
            species = POLLU_REACTANTS[j]
            for a, m in enumerate(species):
                others = species[:a] + species[a + 1:]
                d = c * k[j] * (y[..., others[0]] if others else 1.0)
                entries[(i, m)] = entries[(i, m)] + d if (i, m) in entries else d
    return _sparse_matrix(xp, 20, entries, like)


#: pollu.f, subroutine solut (RADAU5 on a Cray C90, uround = 1.01e-19, rtol = atol = h0 = 1.1e-18)
POLLU_REF = (
    0.5646255480022769e-01, 0.1342484130422339e+00, 0.4139734331099427e-08,
    0.5523140207484359e-02, 0.2018977262302196e-06, 0.1464541863493966e-06,
    0.7784249118997964e-01, 0.3245075353396018e+00, 0.7494013383880406e-02,
    0.1622293157301561e-07, 0.1135863833257075e-07, 0.2230505975721359e-02,
    0.2087162882798630e-03, 0.1396921016840158e-04, 0.8964884856898295e-02,
    0.4352846369330103e-17, 0.6899219696263405e-02, 0.1007803037365946e-03,
    0.1772146513969984e-05, 0.5682943292316392e-04,
)

_POLLU_Y0 = tuple(
    {1: 0.2, 3: 0.04, 6: 0.1, 7: 0.3, 8: 0.01, 16: 0.007}.get(i, 0.0) for i in range(20)
)

pollution = _register(Problem(
    name="pollution",
    rhs=_rhs_pollu,
    jac=_jac_pollu,
    y0=_POLLU_Y0,
    t_span=(0.0, 60.0),
    params={"k": POLLU_K},
    references=(_published("pollu", 60.0, POLLU_REF,
                           "RADAU5 on a Cray C90, uround = 1.01e-19, rtol = atol = h0 = 1.1e-18"),),
    tags={"stiff", "nonlinear", "autonomous", "dissipative", "has_reference"},
    citation=BARI + ", problem POLLU (pollu.f, pollu.pdf); J. G. Verwer, Gauss-Seidel"
    " iteration for stiff ODEs from chemical kinetics, SIAM J. Sci. Comput. 15 (1994)"
    " 1243-1250 (the chemistry of the Dutch National Institute of Public Health air-pollution"
    " model)",
    description="Air-pollution chemistry: 20 species, 25 reactions with rate constants from"
    " 1.3e-4 to 4.44e11, y(0) nonzero for species 2, 4, 7, 8, 9, 17; t in [0, 60] minutes.",
))


# --------------------------------------------------------------------------- E5


def _rhs_e5(xp, t, y, p):
    A, B, CM, C = p["A"], p["B"], p["CM"], p["C"]
    y1, y2, y3, y4 = (y[..., i] for i in range(4))
    prod1, prod2, prod3, prod4 = A * y1, B * y1 * y3, CM * y2 * y3, C * y4
    f2 = prod1 - prod3
    f4 = prod2 - prod4
    return xp.stack([-prod1 - prod2, f2, f2 - f4, f4], axis=-1)


def _jac_e5(xp, t, y, p):
    A, B, CM, C = p["A"], p["B"], p["CM"], p["C"]
    y1, y2, y3 = y[..., 0], y[..., 1], y[..., 2]
    return _matrix(xp, [
        [-A - B * y3, 0.0, -B * y1, 0.0],
        [A, -CM * y3, -CM * y2, 0.0],
        [A - B * y3, -CM * y3, -B * y1 - CM * y2, C],
        [B * y3, 0.0, B * y1, -C],
    ], y1)


#: e5.f, subroutine solut (RADAU on an Alphaserver DS20E, uround = 1.01e-19,
#: rtol = h0 = 1.1e-18, atol = 1.1e-40)
E5_REF = (0.1152903278711829e-290, 0.8867655517642120e-22, 0.8854814626268838e-22, 0.0)

e5 = _register(Problem(
    name="e5",
    rhs=_rhs_e5,
    jac=_jac_e5,
    y0=(1.76e-3, 0.0, 0.0, 0.0),
    t_span=(0.0, 1.0e13),
    params={"A": 7.89e-10, "B": 1.1e7, "CM": 1.13e9, "C": 1.13e3},
    references=(_published("e5", 1.0e13, E5_REF,
                           "RADAU, uround = 1.01e-19, rtol = h0 = 1.1e-18, atol = 1.1e-40"),),
    invariants={"y2_minus_y3_minus_y4": lambda y: y[..., 1] - y[..., 2] - y[..., 3]},
    tags={"stiff", "nonlinear", "autonomous", "has_reference"},
    citation=BARI + ", problem E5 (e5.f, e5.pdf); W. H. Enright, T. E. Hull, B. Lindberg,"
    " Comparing numerical methods for stiff systems of ODEs, BIT 15 (1975) 10-48 (stiff DETEST"
    " E5); " + HNW2 + ", Section IV.10 (E5)",
    description="Stiff DETEST E5 (chemical pyrolysis), A = 7.89e-10, B = 1.1e7, CM = 1.13e9,"
    " C = 1.13e3, y(0) = (1.76e-3, 0, 0, 0), t in [0, 1e13]. The solution spans 290 orders of"
    " magnitude: y1(1e13) ~ 1e-290 and y2, y3 ~ 1e-22 need absolute tolerances of ~1e-20 or"
    " less (the test set used atol = 1.1e-40); y2 - y3 - y4 = 0 is conserved. At t = 1e13"
    " y2 and y3 are determined only to ~1e-3 relative each (their mean to ~1e-6) in double"
    " precision, the published ones included (see E5_AGREEMENT).",
))


# --------------------------------------------------------------------------- measured agreement

#: significant correct digits (:func:`odeverify.metrics.scd`) that a float64 scipy Radau
#: solve with the analytic Jacobian reaches against the published value, and the
#: (rtol, atol) it takes (measured; ``tests/test_problems_stiff.py`` enforces them under
#: ``-m slow``). ROBER is limited to ~11.5 digits by round-off: its y1 ~ 2e-8 and
#: y2 ~ 8e-14 are fed by differences of O(1) quantities (the test set used uround ~1e-19).
PUBLISHED_AGREEMENT = {
    "rober": (11.0, 1e-12, 1e-18),
    "hires": (12.5, 1e-12, 1e-16),
    "orego": (12.5, 1e-12, 1e-14),
    "vdpol": (13.0, 1e-12, 1e-14),
    "vdpol_mu1000": (13.0, 1e-12, 1e-14),
    "pollution": (12.0, 1e-12, 1e-16),
}

#: E5 at t = 1e13 is ill-conditioned in y2 and y3 separately: y2 - y3 - y4 = 0 is conserved
#: and y4 ~ 0 there, but the published y2 - y3 = 1.28e-25 (relative 1.4e-3), and float64
#: solves give y2 - y3 anywhere from -2e-25 to 4e-25 depending on the tolerance: round-off
#: left from the early phase where y1 ~ 1e-3. Their mean is determined (y2 y3 = mean^2 -
#: (y2 - y3)^2 / 4 drives it). Measured relative agreement with the published values (scipy
#: Radau/BDF, rtol 1e-6 .. 1e-12, atol 1e-26 .. 1e-34): y2, y3 within 1.1e-3, their mean
#: within 1.7e-6 (Radau at rtol 1e-8: 2.2e-4 and 1.2e-7).
E5_AGREEMENT = {"y2_y3": 2e-3, "mean_y2_y3": 2e-6}

#: the published ROBER value sums to 1 - 1.02e-14, not to 1 (mass y1 + y2 + y3 is conserved
#: exactly): its y3 = 0.9999999791665050 is good to ~1e-14, not to the 16 digits printed
ROBER_MASS_DEFECT = 1.1e-14


# --------------------------------------------------------------------------- stiff_linear_problem


def _rhs_stiff_linear(xp, t, y, p):
    return y @ xp.matrix_transpose(p["A"])


def _jac_constant(xp, t, y, p):
    A = p["A"]
    return xp.broadcast_to(A, tuple(y.shape[:-1]) + tuple(A.shape))


def _check_ratio(ratio: Any) -> float:
    try:
        value = float(ratio)
    except (TypeError, ValueError):
        raise ValueError(f"ratio={ratio!r} must be a number > 1") from None
    if not (math.isfinite(value) and value > 1.0):
        raise ValueError(f"ratio={ratio!r} must be a finite number > 1 (a stiffness ratio)")
    return value


def _ratio_label(ratio: float) -> str:
    exponent = math.log10(ratio)
    return f"1e{round(exponent)}" if abs(exponent - round(exponent)) < 1e-12 else f"{ratio:g}"


def stiff_linear_problem(
    ratio: float,
    *,
    n: int = 4,
    seed: int = 0,
    t_span: tuple[float, float] = (0.0, 10.0),
    name: str | None = None,
) -> Problem:
    """A linear system y' = A y with stiffness ratio ``ratio`` and a closed form.

    The spectrum is real and log-spaced, ``lambda_k = -ratio^(k/(n-1))``, k = 0 .. n-1, from
    -1 to -ratio, so ``max|lambda| / min|lambda| = ratio`` exactly (the classical stiffness
    ratio, Lambert, *Numerical Methods for Ordinary Differential Systems*, Wiley 1991,
    Section 6.2). ``A = V diag(lambda) V^-1`` with a well-conditioned, non-normal ``V``
    (``cond(V) <= 2``, seeded; see :func:`~odeverify.problems.classic.linear_problem`, which
    builds it and the closed form ``V exp(diag(lambda) t) V^-1 y0``). The analytic Jacobian is
    ``A``. The default span [0, 10] lets the slow mode decay by e^-10 while the fast mode
    is a transient of width 1/ratio. Tagged ``stiff`` when ``ratio * (t1 - t0) >= 1000``.
    The returned problem is not registered.
    """
    ratio = _check_ratio(ratio)
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 2:
        raise ValueError(f"n={n!r} must be an int >= 2 (a slow and a fast mode at least)")
    eigenvalues = -np.logspace(0.0, math.log10(ratio), int(n))
    label = _ratio_label(ratio)
    base = linear_problem(eigenvalues, seed=seed, t_span=t_span,
                          name=name if name is not None else f"stiff_linear_{label}_n{int(n)}_s{seed}")
    t0, t1 = base.t_span
    stiff = ratio * abs(t1 - t0) >= 1000.0
    tags = (base.tags - {"stiff", "nonstiff"}) | {"stiff" if stiff else "nonstiff"}
    return replace(
        base,
        rhs=_rhs_stiff_linear,
        jac=_jac_constant,
        tags=tags,
        citation=base.citation + "; stiffness ratio max|lambda|/min|lambda| = "
        + f"{ratio:g} (J. D. Lambert, Numerical Methods for Ordinary Differential Systems,"
        " Wiley, 1991, Section 6.2)",
        description=f"Stiff linear system y' = A y, n = {int(n)}, real spectrum log-spaced"
        f" from -1 to -{ratio:g} (stiffness ratio {ratio:g}), cond(V) <= 2, seed {seed},"
        f" t in [{t0:g}, {t1:g}]; closed form.",
    )


for _ratio in (1e2, 1e4, 1e6):
    _register(stiff_linear_problem(_ratio, name=f"stiff_linear_{_ratio_label(_ratio)}"))


# --------------------------------------------------------------------------- stiff_neural_problem


def _act(xp, activation: str, z):
    if activation == "tanh":
        return xp.tanh(z)
    return xp.logaddexp(z, xp.zeros_like(z))  # softplus, overflow-free


def _act_prime(xp, activation: str, z, h):
    """The derivative of the activation at ``z`` (``h = act(z)``): 1 - tanh^2, or the
    logistic sigmoid exp(z - softplus(z)) for softplus."""
    if activation == "tanh":
        return 1.0 - h * h
    return xp.exp(z - h)


def _mlp_forward(xp, x, p, depth: int, activation: str, want_jac: bool):
    """``W_out a(... a(W0 x + b0) ...) + b_out`` and, if asked, its Jacobian d out / d x
    (shape ``(..., out, in)``), by the chain rule layer by layer."""
    z = x @ xp.matrix_transpose(p["W0"]) + p["b0"]
    h = _act(xp, activation, z)
    M = xp.expand_dims(_act_prime(xp, activation, z, h), axis=-1) * p["W0"] if want_jac else None
    for k in range(1, depth):
        z = h @ xp.matrix_transpose(p[f"W{k}"]) + p[f"b{k}"]
        h = _act(xp, activation, z)
        if want_jac:
            M = xp.expand_dims(_act_prime(xp, activation, z, h), axis=-1) * (p[f"W{k}"] @ M)
    out = h @ xp.matrix_transpose(p["W_out"]) + p["b_out"]
    return out, (p["W_out"] @ M if want_jac else None)


def _make_neural(depth: int, activation: str, m: int):
    def rhs(xp, t, y, p):
        slow = y[..., :m]
        fast = y[..., m:]
        out, _ = _mlp_forward(xp, y, p, depth, activation, want_jac=False)
        return xp.concat([out, -p["lam"] * (fast - xp.tanh(slow))], axis=-1)

    def jac(xp, t, y, p):
        lam = p["lam"]
        slow = y[..., :m]
        _, J_mlp = _mlp_forward(xp, y, p, depth, activation, want_jac=True)  # (..., m, 2m)
        sech2 = 1.0 - xp.tanh(slow) ** 2
        eye = p["eye"]
        fast_rows = xp.concat([lam * xp.expand_dims(sech2, axis=-1) * eye,
                               xp.broadcast_to(-lam * eye, tuple(sech2.shape[:-1]) + (m, m))],
                              axis=-1)
        return xp.concat([J_mlp, fast_rows], axis=-2)

    return rhs, jac


def stiff_neural_problem(
    ratio: float,
    *,
    state: int = 2,
    hidden: int = 16,
    depth: int = 2,
    activation: str = "tanh",
    seed: int = 0,
    t_span: tuple[float, float] = (0.0, 1.0),
    name: str | None = None,
) -> Problem:
    """A Neural-ODE vector field made stiff by a fast relaxation, with stiffness ratio ``ratio``.

    The state is ``(u, v)``, both of size ``state``: ``u' = MLP(u, v)`` (a seeded MLP as in
    :func:`~odeverify.problems.neural.mlp_field`, input ``2 state``, the first ``state``
    outputs kept) and ``v' = -lambda (v - tanh(u))``, a fast linear decay onto the slow
    manifold ``v = tanh(u)`` that the MLP reads back (a singularly perturbed system in the
    sense of Hairer & Wanner II, Section VI.1). ``y0`` is drawn from the seed, off the
    manifold, so the solution opens with an initial layer of width 1/lambda.

    ``lambda = ratio * rho``, where ``rho`` is the spectral radius at ``y0`` of the reduced
    (slow) Jacobian ``d/du MLP(u, tanh(u))`` (computed in float64 at construction, stored as
    parameter ``slow_rate``): ``ratio`` is the ratio of the fast to the slow time scale.
    The analytic Jacobian is exact (chain rule through the MLP). No closed form: the
    registered instances carry a computed reference. The returned problem is not registered.
    """
    ratio = _check_ratio(ratio)
    if activation not in ("tanh", "softplus"):
        raise ValueError(f"activation={activation!r} must be 'tanh' or 'softplus'")
    base = mlp_field(2 * state, hidden, depth, activation, seed=seed, t_span=t_span)
    m = int(state)
    params: dict[str, Any] = {k: v for k, v in base.params.items()
                              if k not in ("state_dim", "batch", "W_out", "b_out")}
    params["W_out"] = np.ascontiguousarray(base.params["W_out"][:m])
    params["b_out"] = np.ascontiguousarray(base.params["b_out"][:m])
    params["eye"] = np.eye(m)
    rhs, jac = _make_neural(depth, activation, m)

    # the slow rate: spectral radius of d/du MLP(u, tanh(u)) at u0
    import array_api_compat.numpy as xnp

    y0 = np.asarray(base.y0, dtype=np.float64)
    probe = dict(params, lam=1.0)
    J = np.asarray(jac(xnp, 0.0, y0, probe))
    reduced = J[:m, :m] + J[:m, m:] * (1.0 - np.tanh(y0[:m]) ** 2)
    # rounded to 12 digits so that LAPACK's last bits do not change lambda (nor the
    # fingerprint of the cached reference) from one machine to the next
    rho = float(f"{float(np.max(np.abs(np.linalg.eigvals(reduced)))):.12g}")
    if not rho > 0.0:
        raise ValueError(f"seed={seed}: the slow Jacobian vanishes at y0; choose another seed")
    params["slow_rate"] = rho
    params["lam"] = ratio * rho
    label = _ratio_label(ratio)
    t0, t1 = base.t_span
    return Problem(
        name=name if name is not None else f"stiff_neural_{label}_{activation}_{m}x{hidden}_s{seed}",
        rhs=rhs,
        jac=jac,
        y0=tuple(y0),
        t_span=base.t_span,
        params=params,
        tags={"stiff", "neural", "nonlinear", "autonomous"},
        citation=base.citation + "; made stiff by a fast relaxation v' = -lambda (v - tanh u)"
        " (singular perturbation, " + HNW2 + ", Section VI.1)",
        description=f"MLP u' = MLP(u, v) ({depth} hidden {activation} layer(s) of width"
        f" {hidden}, state {m} + {m}, default_rng({seed})) with fast relaxation"
        f" v' = -lambda (v - tanh u), lambda = {ratio:g} x slow rate {rho:.4g}"
        f" = {ratio * rho:.4g}; t in [{t0:g}, {t1:g}].",
    )


# --------------------------------------------------------------------------- computed references


def _rober_1e5() -> Problem:
    return Problem(
        name="rober_1e5",
        t_span=(0.0, 1.0e5),
        tags={"stiff", "nonlinear", "autonomous"},
        description="Robertson's reaction (as problem 'rober') on the shorter span [0, 1e5];"
        " the Bari test set publishes a reference at t = 1e11 only, so this one is computed.",
        **_ROBER,
    )


#: problems whose reference is computed (``--make-references``), as built before attaching it;
#: ``REF_ATOL`` is the absolute tolerance of their tight solve (relative accuracy on every
#: component: rober's y2 is ~1e-10 at t = 1e5)
COMPUTED_TARGETS: list[Problem] = [
    _rober_1e5(),
    stiff_neural_problem(1e3, seed=0, name="stiff_neural_1e3"),
    stiff_neural_problem(1e5, seed=1, name="stiff_neural_1e5"),
]
REF_ATOL = {"rober_1e5": 1e-22, "stiff_neural_1e3": 1e-14, "stiff_neural_1e5": 1e-14}


def _solve_scipy(problem: Problem, method: str, rtol: float, atol: float) -> tuple[np.ndarray, int]:
    """Final value of a scipy solve with the analytic Jacobian, and its nfev."""
    import array_api_compat.numpy as xnp
    from scipy.integrate import solve_ivp

    f = problem.vector_field(xnp, dtype=xnp.float64)
    J = problem.jacobian_field(xnp, dtype=xnp.float64)
    sol = solve_ivp(lambda t, y: np.asarray(f(np.asarray(t), y)), problem.t_span,
                    np.asarray(problem.y0, dtype=np.float64), method=method, rtol=rtol, atol=atol,
                    jac=lambda t, y: np.asarray(J(np.asarray(t), y)))
    if sol.status != 0:
        raise RuntimeError(f"{problem.name}: solve_ivp({method}) failed: {sol.message}")
    return sol.y[:, -1], int(sol.nfev)


def compute_entry(problem: Problem) -> dict[str, Any]:
    """The data-file entry of one computed reference: the tight Radau solve, a BDF check
    solve, and the digits claimed: floor(-log10(max_i |y_i - check_i| / |y_i|)), at most
    :data:`MAX_COMPUTED_DIGITS`."""
    atol = REF_ATOL[problem.name]
    y, nfev = _solve_scipy(problem, REF_METHOD, REF_RTOL, atol)
    y_check, check_nfev = _solve_scipy(problem, CHECK_METHOD, CHECK_RTOL, atol * 100.0)
    rel = float(np.max(np.abs(y - y_check) / np.abs(y)))
    return {
        "fingerprint": fingerprint(problem),
        "f0": [float(v) for v in f0(problem)],
        "t": problem.t_span[1],
        "y": [float(v) for v in y],
        "method": REF_METHOD, "rtol": REF_RTOL, "atol": atol, "nfev": nfev,
        "check_method": CHECK_METHOD, "check_rtol": CHECK_RTOL, "check_atol": atol * 100.0,
        "check_y": [float(v) for v in y_check], "check_nfev": check_nfev,
        "check_max_rel_diff": rel,
        "digits": int(min(MAX_COMPUTED_DIGITS, math.floor(-math.log10(max(rel, 1e-16))))),
    }


def load_references(path: Path = DATA_PATH) -> dict[str, Any]:
    if not path.exists():
        return {"meta": {}, "problems": {}}
    with path.open(encoding="utf-8") as fh:
        return json.load(fh)


def entry_status(problem: Problem, data: dict[str, Any] | None = None) -> str:
    """``"ok"``, ``"missing"``, ``"stale-fingerprint"`` or ``"stale-rhs"``."""
    entry = (data if data is not None else load_references())["problems"].get(problem.name)
    if entry is None:
        return "missing"
    if entry["fingerprint"] != fingerprint(problem):
        return "stale-fingerprint"
    if not np.allclose(entry["f0"], f0(problem), rtol=1e-12, atol=0.0):
        return "stale-rhs"
    return "ok"


def with_computed_reference(problem: Problem, data: dict[str, Any] | None = None) -> Problem:
    """``problem`` with its cached reference attached (and tag ``has_reference``), or as it
    is (with a warning when the cache is stale)."""
    data = data if data is not None else load_references()
    status = entry_status(problem, data)
    if status != "ok":
        if status != "missing":
            import warnings

            warnings.warn(f"problem {problem.name!r}: cached reference is {status}; regenerate"
                          " with `python -m odeverify.problems.stiff --make-references`",
                          UserWarning, stacklevel=2)
        return problem
    e = data["problems"][problem.name]
    meta = data.get("meta", {})
    ref = Reference(
        t=float(e["t"]), y=tuple(float(v) for v in e["y"]), kind="computed", digits=int(e["digits"]),
        source=f"scipy {meta.get('scipy', '?')} solve_ivp(method={e['method']!r}, rtol={e['rtol']:g},"
        f" atol={e['atol']:g}, analytic Jacobian); checked by {e['check_method']} at"
        f" rtol={e['check_rtol']:g}, atol={e['check_atol']:g} (max relative difference"
        f" {e['check_max_rel_diff']:.1e}); computed {meta.get('date', '?')} by"
        " python -m odeverify.problems.stiff --make-references",
    )
    return replace(problem, references=problem.references + (ref,),
                   tags=problem.tags | {"has_reference"})


def make_references(path: Path = DATA_PATH, only: tuple[str, ...] = ()) -> dict[str, Any]:
    import scipy

    old = load_references(path)
    known = {p.name for p in COMPUTED_TARGETS}
    entries = {k: v for k, v in old.get("problems", {}).items() if k in known}
    for p in COMPUTED_TARGETS:
        if not only or p.name in only:
            entries[p.name] = compute_entry(p)
            print(f"{p.name}: digits={entries[p.name]['digits']}"
                  f" (Radau vs BDF {entries[p.name]['check_max_rel_diff']:.1e})", flush=True)
    data = {
        "meta": {
            "generator": "python -m odeverify.problems.stiff --make-references",
            "scipy": scipy.__version__, "numpy": np.__version__,
            "python": sys.version.split()[0],
            "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d"),
        },
        "problems": dict(sorted(entries.items())),
    }
    write_atomically(data, path)
    return data


if __name__ != "__main__":  # under ``python -m`` the package has registered them already
    _DATA = load_references()
    for _p in COMPUTED_TARGETS:
        _register(with_computed_reference(_p, _DATA))
    del _p, _DATA


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m odeverify.problems.stiff")
    parser.add_argument("--make-references", action="store_true",
                        help=f"recompute {DATA_PATH.name} (scipy Radau, rtol={REF_RTOL:g})")
    parser.add_argument("--only", action="append", default=[], metavar="NAME",
                        help="recompute only this target (repeatable)")
    args = parser.parse_args(argv)
    if not args.make_references:
        parser.print_help()
        return 0
    unknown = sorted(set(args.only) - {p.name for p in COMPUTED_TARGETS})
    if unknown:
        parser.error(f"--only {unknown}: choose from {[p.name for p in COMPUTED_TARGETS]}")
    make_references(only=tuple(args.only))
    print(f"wrote {DATA_PATH}")
    return 0


if __name__ == "__main__":
    from odeverify.problems import stiff as _stiff

    raise SystemExit(_stiff.main())
