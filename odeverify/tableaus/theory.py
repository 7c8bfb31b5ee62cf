"""Order conditions and linear stability of Runge--Kutta tableaus, in exact arithmetic.

Butcher's theory: a method ``(A, b)`` has order ``p`` iff for every rooted tree ``t`` with
``|t| <= p`` the elementary weight ``Φ(t) = bᵀ g(t)`` equals ``1/γ(t)``, where
``g(τ) = 1`` and ``g([t_1, ..., t_m])_i = Π_k (A g(t_k))_i`` (Hairer, Nørsett & Wanner,
*Solving ODEs I*, 2nd ed. 1993, Sec. II.2; Butcher, *Numerical Methods for ODEs*, 2016).
A continuous extension ``b_i(θ)`` has order ``q`` iff ``Σ_i b_i(θ) g_i(t) = θ^{|t|}/γ(t)``
as polynomials in θ for every ``|t| <= q`` (HNW I, Sec. II.6).

Everything is computed with :class:`fractions.Fraction`; for tableaus built from decimal
strings the allowed residual comes from :func:`._tableau.coefficient_tolerance` (exact zero
for exact tableaus). Trees are generated canonically up to :data:`MAX_TREE_ORDER` (9), which
also proves that an order-8 claim is not exceeded. Implicit (full) A works the same way.

Linear stability: :func:`stability_function` gives R(z) = P(z)/Q(z) exactly;
:func:`is_a_stable` / :func:`is_l_stable` prove or refute A- and L-stability exactly
(Routh--Hurwitz for the poles, a Sturm sequence for the E-polynomial, HNW II Sec. IV.3) and
say why in a :class:`StabilityVerdict`; :func:`stability_properties` summarises them with
:func:`real_stability_interval` and :func:`imaginary_stability_interval` (measurements,
bracketed by exact sign evaluation); :func:`stability_region` and
:func:`stability_boundary` give |R| on a grid and the |R| = 1 curve for plots.
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import replace as dataclasses_replace
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from functools import lru_cache
from typing import Any

import numpy as np

from ._tableau import ButcherTableau, DenseOutput, _poly_mul, coefficient_tolerance, parse_coefficient

__all__ = [
    "MAX_TREE_ORDER",
    "ConditionFailure",
    "StabilityGrid",
    "StabilityProperties",
    "StabilityVerdict",
    "OrderConditionError",
    "RootedTree",
    "VerificationReport",
    "WeightsReport",
    "check_dense_order",
    "check_order",
    "e_polynomial",
    "elementary_weight",
    "imaginary_stability_interval",
    "is_a_stable",
    "is_l_stable",
    "measured_dense_order",
    "measured_order",
    "real_stability_interval",
    "stability_boundary",
    "stability_function",
    "stability_properties",
    "stage_order",
    "stability_region",
    "stability_value",
    "trees",
    "trees_up_to",
    "verify_tableau",
]

#: highest tree order generated (1, 1, 2, 4, 9, 20, 48, 115, 286 trees of orders 1..9)
MAX_TREE_ORDER = 9

# --------------------------------------------------------------------------------------------
# rooted trees


@dataclass(frozen=True, eq=False)
class RootedTree:
    """A rooted tree in canonical form: ``children`` sorted by canonical ``index``
    (descending), so two trees are equal iff they are the same object.

    ``order`` = number of nodes |t|; ``density`` = γ(t) = |t| Π γ(t_k);
    ``symmetry`` = σ(t) = Π σ(u)^m m! over distinct children u of multiplicity m;
    ``alpha`` = |t|! / (σ(t) γ(t)) (number of monotonic labellings); ``name`` like
    ``"[[τ],τ]"``.
    """

    index: int
    children: tuple[RootedTree, ...]
    order: int
    density: int
    symmetry: int
    name: str

    @property
    def alpha(self) -> int:
        return math.factorial(self.order) // (self.symmetry * self.density)

    def __repr__(self) -> str:
        return f"RootedTree({self.name}, order={self.order})"


@lru_cache(maxsize=1)
def _all_trees() -> tuple[tuple[RootedTree, ...], ...]:
    """Trees grouped by order (index 0 unused), generated canonically.

    The trees of order n are the multisets of trees whose orders sum to n-1; listing each
    multiset once as a non-increasing sequence of canonical indices generates every tree
    exactly once.
    """
    by_order: list[tuple[RootedTree, ...]] = [()]
    flat: list[RootedTree] = []
    tau = RootedTree(index=0, children=(), order=1, density=1, symmetry=1, name="τ")
    flat.append(tau)
    by_order.append((tau,))

    def multisets(remaining: int, max_index: int):
        if remaining == 0:
            yield ()
            return
        for idx in range(max_index, -1, -1):
            t = flat[idx]
            if t.order <= remaining:
                for rest in multisets(remaining - t.order, idx):
                    yield (t,) + rest

    for n in range(2, MAX_TREE_ORDER + 1):
        new = []
        last_index = len(flat) - 1
        for kids in multisets(n - 1, last_index):
            density = n
            for k in kids:
                density *= k.density
            symmetry = 1
            for k, m in Counter(kids).items():
                symmetry *= k.symmetry**m * math.factorial(m)
            # children already in descending canonical order: bigger subtrees first
            name = "[" + ",".join(k.name for k in kids) + "]"
            new.append((kids, density, symmetry, name))
        for kids, density, symmetry, name in new:
            t = RootedTree(index=len(flat), children=kids, order=n, density=density, symmetry=symmetry, name=name)
            flat.append(t)
        by_order.append(tuple(flat[last_index + 1 :]))
    return tuple(by_order)


def trees(order: int) -> tuple[RootedTree, ...]:
    """All rooted trees with exactly ``order`` nodes (1 <= order <= MAX_TREE_ORDER)."""
    if not 1 <= order <= MAX_TREE_ORDER:
        raise ValueError(f"trees: order={order}; expected 1..{MAX_TREE_ORDER}")
    return _all_trees()[order]


def trees_up_to(order: int) -> tuple[RootedTree, ...]:
    """All rooted trees with at most ``order`` nodes, by increasing order."""
    order = min(order, MAX_TREE_ORDER)
    return tuple(t for n in range(1, order + 1) for t in trees(n))


# --------------------------------------------------------------------------------------------
# elementary weights


def _as_fraction_matrix(A: Sequence[Sequence[Any]]) -> tuple[tuple[Fraction, ...], ...]:
    rows = []
    s = len(A)
    for i, row in enumerate(A):
        r = [_as_fraction(x, f"A[{i}][{j}]") for j, x in enumerate(row)]
        rows.append(tuple(r + [Fraction(0)] * (s - len(r))))
    return tuple(rows)


def _as_fraction(x: Any, where: str) -> Fraction:
    if isinstance(x, float):  # theory helpers accept floats (exactly), tableaus do not
        return Fraction(x)
    return parse_coefficient(x, where)[0]


def _as_fraction_vector(v: Sequence[Any], where: str) -> tuple[Fraction, ...]:
    return tuple(_as_fraction(x, f"{where}[{i}]") for i, x in enumerate(v))


class _Stages:
    """Per-tableau cache of the stage vectors g(t) and |g|(t) (absolute coefficients),
    computed recursively: ``g([t1..tm]) = Π_k A g(t_k)`` elementwise."""

    def __init__(self, A: Sequence[Sequence[Fraction]]) -> None:
        self.A = A
        self.s = len(A)
        self.absA = tuple(tuple(abs(x) for x in row) for row in A)
        # sparse rows: (j, a_ij) with a_ij != 0, much faster for explicit tableaus
        self._rows = [[(j, a) for j, a in enumerate(row) if a] for row in A]
        self._abs_rows = [[(j, abs(a)) for j, a in row] for row in self._rows]
        self._g: dict[int, tuple[Fraction, ...]] = {}
        self._ga: dict[int, tuple[Fraction, ...]] = {}
        self._Ag: dict[int, tuple[Fraction, ...]] = {}
        self._Aga: dict[int, tuple[Fraction, ...]] = {}

    def _matvec(self, rows, v):
        zero = Fraction(0)
        return tuple(sum((a * v[j] for j, a in row), zero) for row in rows)

    def g(self, t: RootedTree) -> tuple[Fraction, ...]:
        got = self._g.get(t.index)
        if got is None:
            out = [Fraction(1)] * self.s
            for k in t.children:
                Ak = self.Ag(k)
                out = [x * y for x, y in zip(out, Ak)]
            got = self._g[t.index] = tuple(out)
        return got

    def Ag(self, t: RootedTree) -> tuple[Fraction, ...]:
        got = self._Ag.get(t.index)
        if got is None:
            got = self._Ag[t.index] = self._matvec(self._rows, self.g(t))
        return got

    def g_abs(self, t: RootedTree) -> tuple[Fraction, ...]:
        got = self._ga.get(t.index)
        if got is None:
            out = [Fraction(1)] * self.s
            for k in t.children:
                Ak = self._Aga.get(k.index)
                if Ak is None:
                    Ak = self._Aga[k.index] = self._matvec(self._abs_rows, self.g_abs(k))
                out = [x * y for x, y in zip(out, Ak)]
            got = self._ga[t.index] = tuple(out)
        return got


def elementary_weight(b: Sequence[Any], A: Sequence[Sequence[Any]], tree: RootedTree) -> Fraction:
    """Φ(t) = bᵀ g(t) in exact arithmetic (A full or ragged-explicit)."""
    bb = _as_fraction_vector(b, "b")
    st = _Stages(_as_fraction_matrix(A))
    return sum((x * y for x, y in zip(bb, st.g(tree))), Fraction(0))


# --------------------------------------------------------------------------------------------
# conditions


@dataclass(frozen=True)
class ConditionFailure:
    """One violated condition: ``got`` should be ``expected`` (``power`` is the θ power for
    dense-output conditions, None for ordinary weights)."""

    tree: RootedTree
    got: Fraction
    expected: Fraction
    tolerance: Fraction
    power: int | None = None

    @property
    def residual(self) -> Fraction:
        return self.got - self.expected

    def describe(self) -> str:
        t = self.tree
        where = "" if self.power is None else f" at θ^{self.power}"
        what = "Σ b_i g_i(t)" if self.power is None else f"coefficient of θ^{self.power} in Σ b_i(θ) g_i(t)"
        return (
            f"tree {t.name} (order {t.order}){where}: {what} = {_fmt(self.got)}, but should be"
            f" {_fmt(self.expected)}; residual {float(self.residual):.3g}"
            + (f" (tolerance {float(self.tolerance):.2g})" if self.tolerance else "")
        )


def _fmt(x: Fraction) -> str:
    if x.denominator == 1:
        return str(x.numerator)
    if x.denominator <= 10**6 and abs(x.numerator) <= 10**9:
        return f"{x.numerator}/{x.denominator}"
    return f"{float(x):.10g}"


def _tolerance(tol: Any, digits: int | None, tree: RootedTree, abs_terms: Fraction) -> Fraction:
    """Allowed residual for one condition: the explicit ``tol`` plus, for inexact
    coefficients, :func:`coefficient_tolerance` of the absolute terms (a product of
    ``|t|`` coefficients per term: b and |t|-1 entries of A)."""
    base = Fraction(tol) if not isinstance(tol, Fraction) else tol
    return base + coefficient_tolerance(digits, abs_terms, factors=tree.order + 1)


def _weight_failures(
    b: Sequence[Fraction],
    st: _Stages,
    order: int,
    tol: Any,
    digits: int | None,
    only_order: int | None = None,
    first: bool = False,
) -> list[ConditionFailure]:
    out = []
    n = len(b)
    bab = [abs(x) for x in b]
    orders = [only_order] if only_order is not None else range(1, order + 1)
    for p in orders:
        for t in trees(p):
            g = st.g(t)
            phi = sum((b[i] * g[i] for i in range(n) if b[i]), Fraction(0))
            expected = Fraction(1, t.density)
            res = phi - expected
            if res:
                scale = sum((bab[i] * st.g_abs(t)[i] for i in range(n) if b[i]), Fraction(0))
                tl = _tolerance(tol, digits, t, scale + expected)
                if abs(res) > tl:
                    out.append(ConditionFailure(t, phi, expected, tl))
                    if first:
                        return out
    return out


def check_order(
    b: Sequence[Any], A: Sequence[Sequence[Any]], p: int, *, tol: Any = 0, digits: int | None = None
) -> list[ConditionFailure]:
    """All violated order conditions of trees with ``|t| <= p`` (empty iff order >= p).

    ``tol`` is an absolute allowance on each residual; ``digits`` adds the allowance for
    coefficients rounded to that many significant digits.
    """
    if not 1 <= p <= MAX_TREE_ORDER:
        raise ValueError(f"check_order: p={p}; expected 1..{MAX_TREE_ORDER}")
    bb = _as_fraction_vector(b, "b")
    st = _Stages(_as_fraction_matrix(A))
    return _weight_failures(bb, st, p, tol, digits)


def measured_order(
    b: Sequence[Any], A: Sequence[Sequence[Any]], max_order: int = 8, tol: Any = 0, *, digits: int | None = None
) -> int:
    """Largest ``p <= max_order`` such that all conditions up to order p hold (0 if none)."""
    bb = _as_fraction_vector(b, "b")
    st = _Stages(_as_fraction_matrix(A))
    return _measured(bb, st, min(max_order, MAX_TREE_ORDER), tol, digits)


def _measured(b, st, max_order, tol, digits) -> int:
    for p in range(1, max_order + 1):
        if _weight_failures(b, st, p, tol, digits, only_order=p, first=True):
            return p - 1
    return max_order


def _dense_failures(
    P: Sequence[Sequence[Fraction]],
    st: _Stages,
    order: int,
    tol: Any,
    digits: int | None,
    only_order: int | None = None,
    first: bool = False,
) -> list[ConditionFailure]:
    out = []
    n = len(P)
    deg = len(P[0])
    orders = [only_order] if only_order is not None else range(1, order + 1)
    for p in orders:
        for t in trees(p):
            g = st.g(t)
            for j in range(1, max(deg, p) + 1):
                coef = (
                    sum((P[i][j - 1] * g[i] for i in range(n) if P[i][j - 1]), Fraction(0))
                    if j <= deg
                    else Fraction(0)
                )
                expected = Fraction(1, t.density) if j == p else Fraction(0)
                res = coef - expected
                if res:
                    scale = (
                        sum((abs(P[i][j - 1]) * st.g_abs(t)[i] for i in range(n)), Fraction(0))
                        if j <= deg
                        else Fraction(0)
                    )
                    tl = _tolerance(tol, digits, t, scale + expected)
                    if abs(res) > tl:
                        out.append(ConditionFailure(t, coef, expected, tl, power=j))
                        if first:
                            return out
    return out


def check_dense_order(
    P: Sequence[Sequence[Any]], A_ext: Sequence[Sequence[Any]], q: int, *, tol: Any = 0, digits: int | None = None
) -> list[ConditionFailure]:
    """Violated dense-output conditions ``Σ_i b_i(θ) g_i(t) = θ^{|t|}/γ(t)`` for ``|t| <= q``.

    ``P[i][j-1]`` is the θ^j coefficient of ``b_i(θ)``; ``A_ext`` is the square matrix
    over main and extra stages.
    """
    PP = tuple(_as_fraction_vector(r, f"P[{i}]") for i, r in enumerate(P))
    st = _Stages(_as_fraction_matrix(A_ext))
    if len(PP) != st.s:
        raise ValueError(f"check_dense_order: P has {len(PP)} rows but A_ext has {st.s}")
    return _dense_failures(PP, st, q, tol, digits)


def measured_dense_order(
    P: Sequence[Sequence[Any]], A_ext: Sequence[Sequence[Any]], max_order: int = 8, tol: Any = 0, *, digits: int | None = None
) -> int:
    """Largest ``q <= max_order`` for which the dense-output conditions hold."""
    PP = tuple(_as_fraction_vector(r, f"P[{i}]") for i, r in enumerate(P))
    st = _Stages(_as_fraction_matrix(A_ext))
    for q in range(1, min(max_order, MAX_TREE_ORDER) + 1):
        if _dense_failures(PP, st, q, tol, digits, only_order=q, first=True):
            return q - 1
    return min(max_order, MAX_TREE_ORDER)


# --------------------------------------------------------------------------------------------
# verification of a tableau


class OrderConditionError(ValueError):
    """A claimed order is not satisfied. Attributes: ``tableau`` (name), ``weights``
    ("main", "embedded", "aux" or "dense"), ``claimed``, ``failure`` (the first
    :class:`ConditionFailure`: ``.tree``, ``.residual``)."""

    def __init__(self, tableau: str, weights: str, claimed: int, failure: ConditionFailure, n_failed: int) -> None:
        self.tableau = tableau
        self.weights = weights
        self.claimed = claimed
        self.failure = failure
        self.tree = failure.tree
        self.residual = failure.residual
        label = {
            "main": "main weights b",
            "embedded": "embedded weights b_hat",
            "aux": "auxiliary weights b_hat_aux",
            "dense": "dense output b_i(θ)",
        }[weights]
        more = f" ({n_failed - 1} more condition(s) fail)" if n_failed > 1 else ""
        super().__init__(
            f"tableau {tableau!r}: {label} claim order {claimed} but fail the order"
            f" {failure.tree.order} condition for {failure.describe()}{more}"
        )


@dataclass(frozen=True)
class WeightsReport:
    """Order proof for one set of weights: ``proven`` = largest order whose conditions all
    hold (checked up to ``claimed + 1`` where trees exist); ``sharp`` is True when a tree
    of order ``claimed + 1`` fails (``witness`` names it), None when no trees of that order
    are generated."""

    weights: str
    claimed: int
    proven: int
    sharp: bool | None
    witness: str | None = None

    @property
    def ok(self) -> bool:
        return self.proven >= self.claimed


@dataclass(frozen=True)
class VerificationReport:
    """Result of :func:`verify_tableau`: one :class:`WeightsReport` per set of weights."""

    name: str
    exact: bool
    digits: int | None
    main: WeightsReport
    embedded: WeightsReport | None = None
    aux: WeightsReport | None = None
    dense: WeightsReport | None = None
    reports: tuple[WeightsReport, ...] = field(default=(), repr=False)

    def __str__(self) -> str:
        return self.summary()

    def summary(self) -> str:
        parts = []
        for r in (self.main, self.embedded, self.aux, self.dense):
            if r is not None:
                sharp = {True: "sharp", False: "NOT sharp", None: "sharpness unchecked"}[r.sharp]
                parts.append(f"{r.weights} {r.proven} ({sharp})")
        return f"{self.name}: " + ", ".join(parts)


def _check_weights(name, label, b, st, claimed, digits, failures_fn) -> WeightsReport:
    if claimed > MAX_TREE_ORDER:
        raise ValueError(f"tableau {name!r}: {label} order {claimed} exceeds MAX_TREE_ORDER={MAX_TREE_ORDER}")
    fails = failures_fn(b, st, claimed, 0, digits)
    if fails:
        raise OrderConditionError(name, label, claimed, fails[0], len(fails))
    if claimed + 1 <= MAX_TREE_ORDER:
        higher = failures_fn(b, st, claimed + 1, 0, digits, only_order=claimed + 1, first=True)
        if higher:
            return WeightsReport(label, claimed, claimed, True, higher[0].tree.name)
        return WeightsReport(label, claimed, claimed + 1, False, None)
    return WeightsReport(label, claimed, claimed, None, None)


def verify_tableau(tableau: ButcherTableau) -> VerificationReport:
    """Prove the claimed orders of ``tableau`` (main, embedded, aux, dense).

    Raises
    ------
    OrderConditionError
        naming the tableau, the weights, the failing tree and the residual, when a claimed
        order fails. An order higher than claimed is reported (``sharp=False``), not raised.
    """
    if not isinstance(tableau, ButcherTableau):
        raise TypeError(f"verify_tableau: expected a ButcherTableau, got {type(tableau).__name__}")
    A_ext = tableau.extended_A
    st = _Stages(A_ext)
    s = tableau.stages

    # weights padded with zeros over the extra stages share the extended stage vectors
    def pad(v):
        return tuple(v) + (Fraction(0),) * (st.s - s)

    name = tableau.name
    dig = tableau.digits_of
    main = _check_weights(name, "main", pad(tableau.b), st, tableau.order, dig("main"), _weight_failures)
    emb = aux = dense = None
    if tableau.b_hat is not None:
        emb = _check_weights(
            name, "embedded", pad(tableau.b_hat), st, tableau.embedded_order, dig("embedded"), _weight_failures
        )
    if tableau.b_hat_aux is not None:
        aux = _check_weights(name, "aux", pad(tableau.b_hat_aux), st, tableau.aux_order, dig("aux"), _weight_failures)
    if tableau.dense is not None:
        dense = _check_weights(name, "dense", tableau.dense.P, st, tableau.dense.order, dig("dense"), _dense_failures)
    reports = tuple(r for r in (main, emb, aux, dense) if r is not None)
    return VerificationReport(name, tableau.exact, tableau.digits, main, emb, aux, dense, reports)


# --------------------------------------------------------------------------------------------
# linear stability


def _det(M: list[list[Fraction]]) -> Fraction:
    """Exact determinant by Gaussian elimination with Fractions."""
    M = [row[:] for row in M]
    n = len(M)
    det = Fraction(1)
    for k in range(n):
        piv = next((i for i in range(k, n) if M[i][k] != 0), None)
        if piv is None:
            return Fraction(0)
        if piv != k:
            M[k], M[piv] = M[piv], M[k]
            det = -det
        det *= M[k][k]
        for i in range(k + 1, n):
            if M[i][k]:
                f = M[i][k] / M[k][k]
                M[i] = [x - f * y for x, y in zip(M[i], M[k])]
    return det


def _interpolate(xs: list[Fraction], ys: list[Fraction]) -> list[Fraction]:
    """Coefficients (lowest power first) of the polynomial through (xs, ys), exactly."""
    n = len(xs)
    coef = [Fraction(0)] * n
    for i in range(n):
        # Lagrange basis polynomial l_i
        basis = [Fraction(1)]
        denom = Fraction(1)
        for j in range(n):
            if j != i:
                basis = [Fraction(0)] + basis  # multiply by z
                for k in range(len(basis) - 1):
                    basis[k] -= xs[j] * basis[k + 1]
                denom *= xs[i] - xs[j]
        for k in range(n):
            coef[k] += ys[i] * basis[k] / denom
    return coef


def _trim(p: list[Fraction]) -> tuple[Fraction, ...]:
    p = list(p)
    while len(p) > 1 and p[-1] == 0:
        p.pop()
    return tuple(p)


def stability_function(tableau: ButcherTableau) -> tuple[tuple[Fraction, ...], tuple[Fraction, ...]]:
    """Exact R(z) = det(I - zA + z 1bᵀ) / det(I - zA) as (numerator, denominator)
    coefficient tuples, lowest power first, normalised so that ``denominator[0] == 1``.

    Explicit tableaus: denominator ``(1,)`` and numerator ``1 + Σ_k bᵀA^{k-1}1 z^k``.
    Otherwise both determinants (polynomials of degree <= s) are evaluated exactly at
    s+1 integer points and interpolated.
    """
    A, b, s = tableau.A, tableau.b, tableau.stages
    if tableau.explicit:
        num = [Fraction(1)]
        v = [Fraction(1)] * s  # A^{k-1} 1
        for _ in range(s):
            num.append(sum((x * y for x, y in zip(b, v)), Fraction(0)))
            v = [sum((A[i][j] * v[j] for j in range(i)), Fraction(0)) for i in range(s)]
        return _trim(num), (Fraction(1),)
    xs = [Fraction(k) for k in range(s + 1)]
    num_vals, den_vals = [], []
    for z in xs:
        I_zA = [[Fraction(int(i == j)) - z * A[i][j] for j in range(s)] for i in range(s)]
        den_vals.append(_det(I_zA))
        num_vals.append(_det([[I_zA[i][j] + z * b[j] for j in range(s)] for i in range(s)]))
    num = _interpolate(xs, num_vals)
    den = _interpolate(xs, den_vals)
    return _trim(num), _trim(den)  # den[0] = det(I) = 1


def stability_value(tableau: ButcherTableau, z: Any) -> np.ndarray:
    """Evaluate R(z) in complex128 for an array (or scalar) ``z``."""
    num, den = _stability_float(tableau)
    zz = np.asarray(z, dtype=np.complex128)
    return np.polyval(num, zz) / np.polyval(den, zz)


@lru_cache(maxsize=None)
def _stability_float(tableau: ButcherTableau) -> tuple[np.ndarray, np.ndarray]:
    num, den = stability_function(tableau)
    # np.polyval wants the highest power first
    return (np.array([float(x) for x in reversed(num)]), np.array([float(x) for x in reversed(den)]))



# --------------------------------------------------------------------------------------------
# A- and L-stability, proven in exact arithmetic
#
# R(z) = P(z)/Q(z) is A-stable iff (Hairer & Wanner, Solving ODEs II, 2nd ed. 1996,
# Sec. IV.3, Prop. 3.4 and the maximum principle):
#   (i)   R is bounded at infinity: deg P <= deg Q;
#   (ii)  R is analytic in Re z <= 0: every root of Q has Re z > 0, i.e. Q(-w) is a Hurwitz
#         polynomial (Routh-Hurwitz criterion, exact in Fractions);
#   (iii) |R(iy)| <= 1 for all real y: the E-polynomial E(y) = |Q(iy)|² - |P(iy)|² is >= 0
#         (HNW II, Sec. IV.3, eq. (3.8)). E is even, E(y) = F(y²), and F >= 0 on [0, ∞) is
#         proven with a Sturm sequence of the odd-multiplicity part of F (Yun's square-free
#         decomposition), all in Fractions.
# L-stable = A-stable and R(∞) = 0 (HNW II, Def. IV.3.7).
#
# Tableaus given by decimal strings are exact rationals too, but they satisfy identities
# such as "R(∞) = 0" or "F has no y² term" (which follows from the order) only to their
# digits. Exactly those identities are decided with coefficient_tolerance, as the order
# conditions are: a leading coefficient of P within the tolerance counts as zero (R(∞) = 0
# to the tableau's precision), and so does a coefficient f_m of F with 2m <= p (zero for
# every method of order p, since |R(iy)|² = 1 + O(y^{p+1})). For exact tableaus the
# tolerance is zero and every decision is exact.


Poly = tuple[Fraction, ...]  # coefficients, lowest power first


def _p_trim(p: Sequence[Fraction]) -> Poly:
    p = list(p)
    while p and p[-1] == 0:
        p.pop()
    return tuple(p)


def _p_deg(p: Poly) -> int:
    return len(p) - 1  # -1 for the zero polynomial ()


def _p_eval(p: Sequence[Fraction], x: Fraction) -> Fraction:
    acc = Fraction(0)
    for a in reversed(p):
        acc = acc * x + a
    return acc


def _p_deriv(p: Poly) -> Poly:
    return _p_trim([k * p[k] for k in range(1, len(p))])


def _p_sub(p: Poly, q: Poly) -> Poly:
    n = max(len(p), len(q))
    return _p_trim([(p[i] if i < len(p) else 0) - (q[i] if i < len(q) else 0) for i in range(n)])


def _p_divmod(p: Poly, q: Poly) -> tuple[Poly, Poly]:
    """Exact polynomial division p = d q + r (q nonzero)."""
    r = list(p)
    dq = _p_deg(q)
    if len(r) - 1 < dq:
        return (), _p_trim(r)
    d = [Fraction(0)] * (len(r) - dq)
    for k in range(len(r) - 1 - dq, -1, -1):
        coef = r[k + dq] / q[-1]
        d[k] = coef
        if coef:
            for j in range(dq + 1):
                r[k + j] -= coef * q[j]
    return _p_trim(d), _p_trim(r[:dq])


def _p_monic(p: Poly) -> Poly:
    return tuple(x / p[-1] for x in p) if p else p


def _p_gcd(p: Poly, q: Poly) -> Poly:
    while q:
        p, q = q, _p_divmod(p, q)[1]
    return _p_monic(p)


def _odd_part(p: Poly) -> Poly:
    """The product of the factors of odd multiplicity of ``p`` (monic; Yun's square-free
    decomposition): exactly the real roots where ``p`` changes sign."""
    if _p_deg(p) < 1:
        return (Fraction(1),)
    a = _p_gcd(p, _p_deriv(p))
    b = _p_divmod(p, a)[0]
    c = _p_divmod(_p_deriv(p), a)[0]
    d = _p_sub(c, _p_deriv(b))
    odd: Poly = (Fraction(1),)
    i = 1
    while _p_deg(b) >= 1:
        ai = _p_gcd(b, d)
        if i % 2 == 1 and _p_deg(ai) >= 1:
            odd = _p_trim(_poly_mul(list(odd), list(ai)))
        b = _p_divmod(b, ai)[0]
        c = _p_divmod(d, ai)[0]
        d = _p_sub(c, _p_deriv(b))
        i += 1
    return _p_monic(odd)


def _sturm_sequence(p: Poly) -> list[Poly]:
    seq = [p, _p_deriv(p)]
    while _p_deg(seq[-1]) >= 1:
        r = _p_divmod(seq[-2], seq[-1])[1]
        if not r:
            break
        seq.append(tuple(-x for x in r))
    return seq


def _sign_changes(values: Sequence[Fraction]) -> int:
    s = [x for x in values if x != 0]
    return sum(1 for u, v in zip(s, s[1:]) if (u > 0) != (v > 0))


def _sturm_roots_above(p: Poly, a: Fraction, seq: list[Poly] | None = None) -> int:
    """Number of distinct real roots of ``p`` in (a, ∞), by Sturm's theorem (exact)."""
    if _p_deg(p) < 1:
        return 0
    seq = seq if seq is not None else _sturm_sequence(p)
    # the sign at +∞ is the sign of the leading coefficient
    return _sign_changes([_p_eval(q, a) for q in seq]) - _sign_changes([q[-1] for q in seq])


def _routh_hurwitz(h: Poly) -> tuple[bool, str]:
    """Whether every root of ``h`` has negative real part (exact Routh array).

    Returns ``(ok, why)``; a zero in the first column (a root on the imaginary axis, or
    roots symmetric about it) counts as not Hurwitz."""
    n = _p_deg(h)
    if n < 1:
        return True, "no roots"
    coeffs = list(reversed(h))  # highest power first
    rows = [coeffs[0::2], coeffs[1::2]]
    width = len(rows[0])
    rows = [r + [Fraction(0)] * (width - len(r)) for r in rows]
    first = [rows[0][0], rows[1][0]]
    for _ in range(n - 1):
        r1, r2 = rows[-2], rows[-1]
        if r2[0] == 0:
            return False, "a zero in the first column of the Routh array (a root with Re = 0)"
        new = [(r2[0] * r1[j + 1] - r1[0] * r2[j + 1]) / r2[0] for j in range(width - 1)] + [Fraction(0)]
        rows.append(new)
        first.append(new[0])
    if any(x == 0 for x in first):
        return False, "a zero in the first column of the Routh array (a root with Re = 0)"
    flips = sum(1 for u, v in zip(first, first[1:]) if (u > 0) != (v > 0))
    if flips:
        return False, f"{flips} sign change(s) in the first column of the Routh array ({flips} root(s) with Re > 0)"
    return True, "all first-column entries of the Routh array have one sign"


def _abs_scale(tableau: ButcherTableau) -> Fraction:
    """A bound on the sum of the absolute terms of every coefficient of P and Q:
    det(I - zA + z1bᵀ) has coefficients bounded by those of Π_i (1 + z Σ_j (|a_ij| + |b_j|))
    (the permanent of a nonnegative matrix is at most the product of its row sums)."""
    bsum = sum((abs(x) for x in tableau.b), Fraction(0))
    out = Fraction(1)
    for row in tableau.A:
        out *= 1 + sum((abs(x) for x in row), Fraction(0)) + bsum
    return out


@dataclass(frozen=True)
class _Rational:
    """R = P/Q after common factors are cancelled and the precision rule above is applied;
    ``raw_r_inf`` is R(∞) before the rule (None if unbounded), ``trimmed`` whether the rule
    removed P's leading coefficient."""

    P: Poly
    Q: Poly
    raw_r_inf: Fraction | None
    trimmed: bool


@lru_cache(maxsize=None)
def _effective_rational(tableau: ButcherTableau) -> _Rational:
    num, den = stability_function(tableau)
    P, Q = _p_trim(num), _p_trim(den)
    g = _p_gcd(P, Q)
    if _p_deg(g) >= 1:  # cancel common factors (removable singularities)
        P, Q = _p_divmod(P, g)[0], _p_divmod(Q, g)[0]
    raw = None if _p_deg(P) > _p_deg(Q) else (P[-1] / Q[-1] if _p_deg(P) == _p_deg(Q) else Fraction(0))
    tol = coefficient_tolerance(tableau.digits_of("main"), _abs_scale(tableau), factors=tableau.stages)
    trimmed = False
    # only R(∞) = p_n/q_n itself (deg P = deg Q) is subject to the precision rule; an
    # explicit method's top coefficient b'A^(s-1)1 is genuine however small
    if _p_deg(P) == _p_deg(Q) >= 1 and abs(P[-1]) <= tol * abs(Q[-1]):
        P, trimmed = _p_trim(P[:-1]), True
    return _Rational(P, Q, raw, trimmed)


def _square_modulus_on_axis(p: Poly) -> list[Fraction]:
    """Coefficients (in x = y²) of |p(iy)|² for real coefficients p."""
    n = len(p)
    out = [Fraction(0)] * max(n, 1)
    for j in range(n):
        for k in range(n):
            if (j + k) % 2 == 0 and p[j] and p[k]:
                m = (j + k) // 2
                out[m] += p[j] * p[k] * (-1 if (k + m) % 2 else 1)
    return out


def e_polynomial(tableau: ButcherTableau) -> Poly:
    """F with E(y) = |Q(iy)|² - |P(iy)|² = F(y²), coefficients in x = y², lowest first
    (after the precision rule: f_m with 2m <= order and |f_m| within the tolerance is 0)."""
    r = _effective_rational(tableau)
    q2, p2 = _square_modulus_on_axis(r.Q), _square_modulus_on_axis(r.P)
    n = max(len(q2), len(p2))
    F = [(q2[m] if m < len(q2) else 0) - (p2[m] if m < len(p2) else 0) for m in range(n)]
    digits = tableau.digits_of("main")
    if digits is not None:
        S = _abs_scale(tableau)
        for m in range(n):
            if 2 * m > tableau.order:
                break
            terms = sum((abs(c) for c in (*r.P, *r.Q)), Fraction(0))
            if abs(F[m]) <= coefficient_tolerance(digits, 4 * S * terms, factors=tableau.stages):
                F[m] = Fraction(0)
    return _p_trim(F)


def _abs_r_float(tableau: ButcherTableau, z: complex) -> float:
    r = _effective_rational(tableau)
    p = complex(sum(float(c) * z**k for k, c in enumerate(r.P)))
    q = complex(sum(float(c) * z**k for k, c in enumerate(r.Q)))
    return abs(p / q) if q != 0 else math.inf


def _negative_point(F: Poly) -> Fraction | None:
    """Some x > 0 with F(x) < 0, searched deterministically (exact evaluation) at x = 2^k
    and between the float roots of F; None if none is found."""
    candidates = [Fraction(2) ** k for k in range(-60, 61)]
    if _p_deg(F) >= 1:
        roots = np.roots([float(c) for c in reversed(F)])
        pos = sorted(float(r.real) for r in roots if abs(r.imag) <= 1e-9 * max(1.0, abs(r)) and r.real > 0)
        for a, b in zip([0.0] + pos, pos + [2 * pos[-1] + 1 if pos else 1.0]):
            candidates.append(Fraction((a + b) / 2))
    # nearest to x = 1 first, so that the witness is a moderate y
    for x in sorted(candidates, key=lambda v: (abs(math.log2(v)), v)):
        if x > 0 and _p_eval(F, x) < 0:
            return x
    return None


@dataclass(frozen=True)
class StabilityVerdict:
    """Whether a stability property holds, and why.

    ``holds`` (also the truth value); ``condition`` names the first failing condition
    (``"bounded"``, ``"poles"``, ``"imaginary_axis"``, ``"r_inf"``) or is None;
    ``reason`` says why in words; ``witness_y`` is a real y with |R(iy)| > 1 (and
    ``witness_abs_r`` that |R(iy)|) when the imaginary-axis condition fails;
    ``r_inf`` is R(∞) (None when R is unbounded)."""

    tableau: str
    property: str
    holds: bool
    condition: str | None
    reason: str
    witness_y: float | None = None
    witness_abs_r: float | None = None
    r_inf: Fraction | None = None

    def __bool__(self) -> bool:
        return self.holds

    def __str__(self) -> str:
        return f"{self.tableau}: {self.property} {'holds' if self.holds else 'fails'}: {self.reason}"


def is_a_stable(tableau: ButcherTableau) -> StabilityVerdict:
    """Prove or refute A-stability of ``tableau`` exactly (see the comment above).

    >>> from odeverify.tableaus import get
    >>> bool(is_a_stable(get("trapezoid"))), bool(is_a_stable(get("rk4")))
    (True, False)
    """
    if not isinstance(tableau, ButcherTableau):
        raise TypeError(f"is_a_stable: expected a ButcherTableau, got {type(tableau).__name__}")
    name = tableau.name
    r = _effective_rational(tableau)
    r_inf = None if _p_deg(r.P) > _p_deg(r.Q) else (r.P[-1] / r.Q[-1] if _p_deg(r.P) == _p_deg(r.Q) else Fraction(0))
    F = e_polynomial(tableau)

    def witness() -> tuple[float | None, float | None]:
        x = _negative_point(F)
        if x is None:
            return None, None
        y = math.sqrt(float(x))
        return y, _abs_r_float(tableau, 1j * y)

    common = dict(tableau=name, property="A-stable", r_inf=r_inf)
    if _p_deg(r.P) > _p_deg(r.Q):
        y, a = witness()
        return StabilityVerdict(holds=False, condition="bounded", witness_y=y, witness_abs_r=a,
                                reason=f"R(z) is unbounded as z -> ∞: deg P = {_p_deg(r.P)} > deg Q = {_p_deg(r.Q)}"
                                + (f"; |R(iy)| = {a:.12g} (|R| - 1 = {a - 1:.3g}) at y = {y:.6g}" if y is not None else ""), **common)
    ok, why = _routh_hurwitz(tuple(c * (-1) ** k for k, c in enumerate(r.Q)))
    if not ok:
        poles = np.roots([float(c) for c in reversed(r.Q)])
        bad = sorted((p for p in poles if p.real <= 1e-12), key=lambda p: p.real)
        where = f"; pole at z ≈ {bad[0].real:.6g}{bad[0].imag:+.6g}i" if bad else ""
        return StabilityVerdict(holds=False, condition="poles",
                                reason=f"R has a pole with Re z <= 0 (Routh-Hurwitz on Q(-z): {why}){where}",
                                **common)
    if not F:
        return StabilityVerdict(holds=True, condition=None,
                                reason="E(y) ≡ 0: |R(iy)| = 1 on the whole imaginary axis; no poles with Re z <= 0",
                                **common)
    k = next(i for i, c in enumerate(F) if c != 0)
    G = F[k:]
    odd = _odd_part(G)
    n_roots = _sturm_roots_above(odd, Fraction(0))
    if G[0] < 0 or n_roots:
        y, a = witness()
        why = (f"E(y) = |Q(iy)|² - |P(iy)|² < 0 for small y (lowest term {_fmt(G[0])} y^{2 * k})" if G[0] < 0
               else f"E(y) changes sign at {n_roots} point(s) y > 0 (Sturm count)")
        return StabilityVerdict(holds=False, condition="imaginary_axis", witness_y=y, witness_abs_r=a,
                                reason=why + (f"; |R(iy)| = {a:.12g} (|R| - 1 = {a - 1:.3g}) at y = {y:.6g}" if y is not None else ""),
                                **common)
    return StabilityVerdict(holds=True, condition=None,
                            reason=("E(y) >= 0 for all real y (Sturm: no sign change on y > 0), all poles of R"
                                    f" in Re z > 0 (Routh-Hurwitz), deg P = {_p_deg(r.P)} <= deg Q = {_p_deg(r.Q)}"),
                            **common)


def is_l_stable(tableau: ButcherTableau) -> StabilityVerdict:
    """A-stable and R(∞) = 0 (to the tableau's precision for decimal coefficients)."""
    a = is_a_stable(tableau)
    if not a.holds:
        return dataclasses_replace(a, property="L-stable", reason=f"not A-stable: {a.reason}")
    r = _effective_rational(tableau)
    if a.r_inf != 0:
        return dataclasses_replace(a, property="L-stable", holds=False, condition="r_inf",
                                   reason=f"A-stable but R(∞) = {_fmt(a.r_inf)} != 0")
    note = ""
    if r.trimmed and r.raw_r_inf is not None:
        note = f" (|R(∞)| = {float(abs(r.raw_r_inf)):.2g} for the rounded coefficients, within their precision)"
    return dataclasses_replace(a, property="L-stable", reason=f"A-stable and R(∞) = 0{note}")


def _first_sign_change(D: Poly) -> float:
    """The smallest u > 0 where the polynomial D turns negative (0 if it is negative just
    right of 0, ∞ if never): a measurement. Candidates are the float roots of D; the sign
    of D is evaluated exactly at the bracket ends, and the bracket [last point with D > 0,
    first point with D < 0] is bisected exactly to 1e-15 (relative). (Yun + Sturm would
    prove there is no earlier root, but takes minutes on DOP853's 30-digit decimals.)"""
    if not D:
        return math.inf
    k = next(i for i, c in enumerate(D) if c != 0)
    G = D[k:]
    if G[0] < 0:
        return 0.0
    if _p_deg(G) < 1:
        return math.inf

    def bisect(a: Fraction, b: Fraction) -> float:  # G(a) > 0 > G(b)
        for _ in range(200):
            if b - a <= Fraction(1, 10**15) * b:
                break
            mid = Fraction(float((a + b) / 2))
            if not a < mid < b:
                break
            if _p_eval(G, mid) > 0:
                a = mid
            else:
                b = mid
        return float((a + b) / 2)

    roots = np.roots([float(c) for c in reversed(G)])
    cands = sorted(float(r.real) for r in roots if abs(r.imag) <= 1e-6 * max(1.0, abs(r)) and r.real > 0)
    positive = Fraction(min(cands) * 1e-3) if cands else Fraction(1)
    while _p_eval(G, positive) <= 0:  # G(0) > 0, so some small point is positive
        positive /= 2
    for r in cands:
        right = Fraction(r * (1 + 1e-7))
        if _p_eval(G, right) < 0:
            return bisect(positive, right)
        positive = max(positive, right)
    if G[-1] < 0:  # negative at infinity, the root missed by np.roots: double until negative
        right = 2 * positive
        while _p_eval(G, right) >= 0:
            positive, right = right, 2 * right
        return bisect(positive, right)
    return math.inf


def real_stability_interval(tableau: ButcherTableau) -> tuple[float, float]:
    """The interval [x0, 0] of the negative real axis, containing 0, on which |R(x)| <= 1
    (``x0 = -inf`` when it is the whole half-line): x0 is the first root of
    Q(x)² - P(x)² with a sign change, bracketed by exact evaluation. RK4 gives
    x0 ≈ -2.7853 (HNW I, Sec. IV.2, Fig. 2.1)."""
    r = _effective_rational(tableau)
    Pm = tuple(c * (-1) ** k for k, c in enumerate(r.P))  # P(-u)
    Qm = tuple(c * (-1) ** k for k, c in enumerate(r.Q))
    D = _p_sub(tuple(_poly_mul(list(Qm), list(Qm))), tuple(_poly_mul(list(Pm), list(Pm))))
    return (-_first_sign_change(D), 0.0)


def imaginary_stability_interval(tableau: ButcherTableau) -> tuple[float, float]:
    """The interval [-y0, y0] of the imaginary axis (as y) on which |R(iy)| <= 1
    (``y0 = inf`` for the whole axis, 0 when |R(iy)| > 1 for small y != 0). RK4 gives
    y0 = 2√2."""
    x0 = _first_sign_change(e_polynomial(tableau))
    y0 = math.sqrt(x0) if math.isfinite(x0) else math.inf
    return (-y0, y0)


@dataclass(frozen=True)
class StabilityProperties:
    """Linear-stability summary of one tableau (see :func:`stability_properties`)."""

    name: str
    a_stable: bool
    l_stable: bool
    stiffly_accurate: bool
    r_inf: float | None
    real_interval: tuple[float, float]
    imaginary_interval: tuple[float, float]
    a_stability: StabilityVerdict = field(repr=False)
    l_stability: StabilityVerdict = field(repr=False)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "a_stable": self.a_stable,
            "l_stable": self.l_stable,
            "stiffly_accurate": self.stiffly_accurate,
            "r_inf": self.r_inf,
            "real_interval": list(self.real_interval),
            "imaginary_interval": list(self.imaginary_interval),
            "a_stability_reason": self.a_stability.reason,
            "l_stability_reason": self.l_stability.reason,
        }


def stability_properties(tableau: ButcherTableau) -> StabilityProperties:
    """A-/L-stability (proven), stiff accuracy, R(∞) and the real and imaginary stability
    intervals of ``tableau``."""
    a = is_a_stable(tableau)
    l_ = is_l_stable(tableau)
    return StabilityProperties(
        name=tableau.name,
        a_stable=a.holds,
        l_stable=l_.holds,
        stiffly_accurate=tableau.stiffly_accurate,
        r_inf=None if a.r_inf is None else float(a.r_inf),
        real_interval=real_stability_interval(tableau),
        imaginary_interval=imaginary_stability_interval(tableau),
        a_stability=a,
        l_stability=l_,
    )


# --------------------------------------------------------------------------------------------
# stability regions for plots


@dataclass(frozen=True)
class StabilityGrid:
    """|R(z)| on a grid: ``abs_r[i, j] = |R(re[j] + i·im[i])|`` (rows over the imaginary
    part, as an image); ``inf`` at poles."""

    name: str
    re: np.ndarray
    im: np.ndarray
    abs_r: np.ndarray


def _grid_size(n: Any) -> tuple[int, int]:
    given = n
    if isinstance(n, (int, np.integer)) and not isinstance(n, bool):
        n = (int(n), int(n))
    if (not isinstance(n, tuple) or len(n) != 2
            or not all(isinstance(k, (int, np.integer)) and not isinstance(k, bool) and k >= 2 for k in n)):
        raise ValueError(f"n={given!r}; expected an int >= 2 or a pair (n_re, n_im) of ints >= 2")
    return int(n[0]), int(n[1])


def _interval(v: Any, label: str) -> tuple[float, float]:
    try:
        a, b = (float(x) for x in v)
    except (TypeError, ValueError):
        raise ValueError(f"{label}={v!r}; expected a pair (low, high) of finite floats") from None
    if not (math.isfinite(a) and math.isfinite(b) and a < b):
        raise ValueError(f"{label}={v!r}; expected finite low < high")
    return a, b


def stability_region(tableau: ButcherTableau, re: Any = (-6.0, 2.0), im: Any = (-4.0, 4.0),
                     n: Any = 201) -> StabilityGrid:
    """|R(z)| on an ``n`` (or ``(n_re, n_im)``) grid over ``re`` x ``im`` (float64),
    explicit and implicit methods alike: the stability region is ``abs_r <= 1``."""
    if not isinstance(tableau, ButcherTableau):
        raise TypeError(f"stability_region: expected a ButcherTableau, got {type(tableau).__name__}")
    (r0, r1), (i0, i1) = _interval(re, "re"), _interval(im, "im")
    n_re, n_im = _grid_size(n)
    x = np.linspace(r0, r1, n_re)
    y = np.linspace(i0, i1, n_im)
    z = x[None, :] + 1j * y[:, None]
    num, den = _stability_float(tableau)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        pz, qz = np.polyval(num, z), np.polyval(den, z)
        a = np.where(qz == 0, np.inf, np.abs(pz) / np.abs(np.where(qz == 0, 1, qz)))
    return StabilityGrid(tableau.name, x, y, a)


# marching squares: for each of the 16 corner-sign cases, the pairs of cell edges the
# contour crosses (edges: 0 bottom, 1 right, 2 top, 3 left; corners 0 (x0,y0), 1 (x1,y0),
# 2 (x1,y1), 3 (x0,y1), bit k set when corner k is inside |R| <= 1). Cases 5 and 10 are
# saddles, split by the value at the cell centre.
_MS_CASES: dict[int, tuple[tuple[int, int], ...]] = {
    0: (), 15: (),
    1: ((3, 0),), 14: ((3, 0),), 2: ((0, 1),), 13: ((0, 1),), 4: ((1, 2),), 11: ((1, 2),),
    8: ((2, 3),), 7: ((2, 3),), 3: ((3, 1),), 12: ((3, 1),), 6: ((0, 2),), 9: ((0, 2),),
}


def stability_boundary(tableau: ButcherTableau, re: Any = (-6.0, 2.0), im: Any = (-4.0, 4.0),
                       n: Any = 201) -> list[np.ndarray]:
    """The curve |R(z)| = 1 inside the window, as a list of polylines (arrays of shape
    (k, 2) of (Re z, Im z) points), by marching squares on the :func:`stability_region`
    grid of log|R| (linear interpolation along cell edges), each point then moved onto the
    curve by Newton steps (:func:`_polish_boundary`); deterministic (cells in row-major
    order). A closed curve has equal first and last points."""
    g = stability_region(tableau, re, im, n)
    with np.errstate(divide="ignore"):
        f = np.log(np.where(np.isfinite(g.abs_r), g.abs_r, 1e300))  # < 0 inside
    ny, nx = f.shape
    inside = f <= 0

    def point(i: int, j: int, edge: int) -> tuple[tuple[int, int, int], tuple[float, float]]:
        # the shared edge key: horizontal edges (row, col, 0), vertical edges (row, col, 1)
        (ia, ja), (ib, jb), key = {
            0: ((i, j), (i, j + 1), (i, j, 0)),
            2: ((i + 1, j), (i + 1, j + 1), (i + 1, j, 0)),
            3: ((i, j), (i + 1, j), (i, j, 1)),
            1: ((i, j + 1), (i + 1, j + 1), (i, j + 1, 1)),
        }[edge]
        fa, fb = f[ia, ja], f[ib, jb]
        t = 0.5 if fa == fb else min(max(fa / (fa - fb), 0.0), 1.0)
        xa, ya, xb, yb = g.re[ja], g.im[ia], g.re[jb], g.im[ib]
        return key, (float(xa + t * (xb - xa)), float(ya + t * (yb - ya)))

    segments: list[tuple[tuple, tuple, tuple, tuple]] = []
    for i in range(ny - 1):
        for j in range(nx - 1):
            case = (int(inside[i, j]) | int(inside[i, j + 1]) << 1 | int(inside[i + 1, j + 1]) << 2
                    | int(inside[i + 1, j]) << 3)
            if case in (5, 10):
                centre_inside = (f[i, j] + f[i, j + 1] + f[i + 1, j] + f[i + 1, j + 1]) <= 0
                pairs = ((3, 0), (1, 2)) if (case == 5) != centre_inside else ((0, 1), (2, 3))
            else:
                pairs = _MS_CASES[case]
            for e1, e2 in pairs:
                k1, p1 = point(i, j, e1)
                k2, p2 = point(i, j, e2)
                segments.append((k1, p1, k2, p2))
    # link segments sharing an edge key into polylines
    by_key: dict[tuple, list[int]] = {}
    for idx, (k1, _, k2, _) in enumerate(segments):
        by_key.setdefault(k1, []).append(idx)
        by_key.setdefault(k2, []).append(idx)
    used = [False] * len(segments)
    lines: list[np.ndarray] = []
    for start in range(len(segments)):
        if used[start]:
            continue
        used[start] = True
        k1, p1, k2, p2 = segments[start]
        keys, pts = [k1, k2], [p1, p2]
        for direction in (1, 0):  # extend at the tail, then at the head
            while True:
                end = keys[-1] if direction else keys[0]
                nxt = next((s for s in by_key.get(end, ()) if not used[s]), None)
                if nxt is None:
                    break
                used[nxt] = True
                a, pa, b, pb = segments[nxt]
                new_key, new_pt = (b, pb) if a == end else (a, pa)
                if direction:
                    keys.append(new_key)
                    pts.append(new_pt)
                else:
                    keys.insert(0, new_key)
                    pts.insert(0, new_pt)
        lines.append(_polish_boundary(tableau, np.array(pts)))
    return lines


def _polish_boundary(tableau: ButcherTableau, pts: np.ndarray, steps: int = 4) -> np.ndarray:
    """Newton steps onto log|R(z)| = 0 along its gradient: log|R| is harmonic with gradient
    conj(R'/R) (as a complex number), so z <- z - log|R(z)| conj(w)/|w|², w = R'(z)/R(z).
    A point whose step is not finite, or moves it more than 0.1, stays where it was."""
    num, den = _stability_float(tableau)
    dnum, dden = np.polyder(num) if len(num) > 1 else np.zeros(1), np.polyder(den) if len(den) > 1 else np.zeros(1)
    z0 = pts[:, 0] + 1j * pts[:, 1]
    z = z0.copy()
    with np.errstate(all="ignore"):
        for _ in range(steps):
            p, q = np.polyval(num, z), np.polyval(den, z)
            w = np.polyval(dnum, z) / p - np.polyval(dden, z) / q
            step = np.log(np.abs(p / q)) * np.conj(w) / np.abs(w) ** 2
            z = np.where(np.isfinite(step), z - step, z)
        ok = np.isfinite(z) & (np.abs(z - z0) < 0.1)
    z = np.where(ok, z, z0)
    return np.column_stack([z.real, z.imag])


# --------------------------------------------------------------------------- stage order
#: a simplifying condition holds when its residual is below this (tableaus with irrational
#: coefficients are stored as 30+ digit decimals, so exact equality would fail)
STAGE_ORDER_TOL = Fraction(1, 10**20)


def stage_order(tableau: ButcherTableau) -> int:
    """Largest q with the simplifying conditions C(k): sum_j a_ij c_j^(k-1) = c_i^k / k for all
    i and k <= q (Butcher 2008, Sect. 32), in exact arithmetic up to STAGE_ORDER_TOL. On stiff
    problems (Prothero-Robinson) an implicit method's order drops to min(p, stage order)."""
    A = [[Fraction(v) for v in row] for row in tableau.A]
    c = [Fraction(v) for v in tableau.c]
    q = 0
    for k in range(1, len(c) + 2):
        if any(abs(sum(a * cj ** (k - 1) for a, cj in zip(row, c)) - ci ** k / k) > STAGE_ORDER_TOL
               for row, ci in zip(A, c)):
            break
        q = k
    return q
