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
also proves that an order-8 claim is not exceeded.
"""
from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from functools import lru_cache
from typing import Any

import numpy as np

from ._tableau import ButcherTableau, DenseOutput, coefficient_tolerance, parse_coefficient

__all__ = [
    "MAX_TREE_ORDER",
    "ConditionFailure",
    "OrderConditionError",
    "RootedTree",
    "VerificationReport",
    "WeightsReport",
    "check_dense_order",
    "check_order",
    "elementary_weight",
    "measured_dense_order",
    "measured_order",
    "stability_function",
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

