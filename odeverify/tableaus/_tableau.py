"""Butcher tableaus as exact, validated, frozen data.

A :class:`ButcherTableau` holds the coefficients ``c, A, b`` (and optionally the embedded
weights ``b_hat``, an auxiliary estimator ``b_hat_aux`` and a continuous extension
:class:`DenseOutput`) as :class:`fractions.Fraction`. Coefficients are given as ``int``,
``Fraction``, ``"p/q"`` strings or decimal strings; decimal strings mark the tableau as
*inexact* (irrational or only-decimally-published values) and the smallest number of
significant digits among them becomes :attr:`ButcherTableau.digits`, from which every
tolerance is derived by the single function :func:`coefficient_tolerance`.

Flags (``explicit``, ``fsal``, ``stiffly_accurate``, ``adaptive`` ...) are derived from the
numbers, never declared. Validation errors are ``ValueError`` naming the tableau, the field,
the row and the values.
"""
from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from dataclasses import InitVar, dataclass, field
from fractions import Fraction
from functools import cached_property
from typing import Any

__all__ = [
    "ButcherTableau",
    "DenseOutput",
    "FloatView",
    "coefficient_tolerance",
    "hairer_dense_output",
    "parse_coefficient",
]

_RATIONAL_RE = re.compile(r"^\s*[+-]?\d+\s*(/\s*\d+\s*)?$")
_DECIMAL_RE = re.compile(r"^\s*([+-]?)(\d*)\.?(\d*)(?:[eEdD]([+-]?\d+))?\s*$")

# --------------------------------------------------------------------------------------------
# coefficients and tolerances


def parse_coefficient(value: Any, where: str = "coefficient") -> tuple[Fraction, int | None]:
    """Convert one coefficient to ``(Fraction, digits)``.

    ``digits`` is None for exact input (``int``, ``Fraction``, ``"p/q"``, ``"-3"``) and the
    number of significant digits for a decimal string (``"0.1234e-2"`` -> 4; Fortran ``D``
    exponents are accepted). Floats are refused: write the value as a string so that its
    precision is explicit.
    """
    if isinstance(value, bool):
        raise TypeError(f"{where}: got bool {value!r}; expected int, Fraction or str")
    if isinstance(value, int):
        return Fraction(value), None
    if isinstance(value, Fraction):
        return value, None
    if isinstance(value, str):
        if _RATIONAL_RE.match(value):
            return Fraction(value.replace(" ", "")), None
        m = _DECIMAL_RE.match(value)
        if m and (m.group(2) or m.group(3)):
            sign, whole, frac, exp = m.groups()
            mantissa = (whole + frac).lstrip("0")
            digits = max(len(mantissa), 1)
            text = f"{sign}{whole or '0'}.{frac or '0'}e{exp or '0'}"
            return Fraction(text), digits
        raise ValueError(
            f"{where}: cannot parse {value!r}; expected an int, a Fraction, 'p/q' or a decimal"
            " string such as '0.5260015195876773e-1'"
        )
    if isinstance(value, float):
        raise TypeError(
            f"{where}: got float {value!r}; pass an exact value (int, Fraction, 'p/q') or a"
            " decimal string carrying the published digits, e.g. '0.1234567890123456'"
        )
    raise TypeError(f"{where}: got {type(value).__name__} {value!r}; expected int, Fraction or str")


def _min_digits(*values: int | None) -> int | None:
    present = [v for v in values if v is not None]
    return min(present) if present else None


def coefficient_tolerance(digits: int | None, scale: Fraction | float, factors: int = 1) -> Fraction:
    """The one tolerance rule for tableaus: how far an exact identity may miss.

    For an exact tableau (``digits is None``) the tolerance is zero. Otherwise each
    coefficient carries a relative rounding error of at most ``5 * 10**-digits``; a sum of
    products of ``factors`` coefficients whose absolute terms add up to ``scale`` is then off
    by at most about ``factors * 5e-digits * scale``. We allow ``10 *`` that (covering
    cancellation in derived quantities such as dense-output polynomials expanded from
    Hairer's nested form), which still lies many orders of magnitude below any genuine
    order-condition residual for the digits used here (>= 16).
    """
    if digits is None:
        return Fraction(0)
    scale = Fraction(scale)
    return 500 * max(factors, 1) * Fraction(1, 10**digits) * (abs(scale) + Fraction(1, 10**6))


def _fmt(x: Fraction) -> str:
    """Short readable form: exact small fractions as p/q, others as a 12-digit float."""
    if x.denominator == 1:
        return str(x.numerator)
    if x.denominator <= 10**6 and abs(x.numerator) <= 10**9:
        return f"{x.numerator}/{x.denominator}"
    return f"{float(x):.12g}"


def _parse_vector(values: Sequence[Any], where: str) -> tuple[tuple[Fraction, ...], int | None]:
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise TypeError(f"{where}: expected a sequence of coefficients, got {values!r}")
    out: list[Fraction] = []
    digits: int | None = None
    for j, v in enumerate(values):
        x, d = parse_coefficient(v, f"{where}[{j}]")
        out.append(x)
        digits = _min_digits(digits, d)
    return tuple(out), digits


# --------------------------------------------------------------------------------------------
# dense output


@dataclass(frozen=True)
class DenseOutput:
    """A continuous extension of a Runge--Kutta step.

    ``y(t0 + θh) = y0 + h Σ_i b_i(θ) k_i`` with ``b_i(θ) = Σ_{j=1..deg} P[i][j-1] θ^j``.
    The stages ``i`` run over the ``s`` main stages followed by the extra stages: extra
    stage ``m`` has node ``extra_c[m]`` and an ``A`` row ``extra_A[m]`` over *all* previous
    stages (the ``s`` main ones and extras ``0..m-1``; shorter rows are padded with zeros).

    Parameters
    ----------
    P : sequence of sequences, shape (s + len(extra_c), deg)
        Polynomial coefficients of ``b_i(θ)``, lowest power (θ^1) first.
    order : int
        Claimed order of the continuous extension (proven by :mod:`.theory`).
    extra_c, extra_A
        Nodes and rows of the extra stages (empty for FSAL methods, whose last stage is
        already ``f(t0 + h, y1)``).

    Consistency with the tableau (``b_i(1) = b_i``, row sums) is checked by the owning
    :class:`ButcherTableau`.
    """

    P: tuple[tuple[Fraction, ...], ...]
    order: int
    extra_c: tuple[Fraction, ...] = ()
    extra_A: tuple[tuple[Fraction, ...], ...] = ()
    # internal: the digits of the decimal strings this was built from, carried through
    # dataclasses.replace (whose arguments are already Fractions).
    _source_digits: int | None = field(default=None, repr=False, compare=False)
    digits: int | None = field(init=False, compare=False)

    def __post_init__(self) -> None:
        where = "DenseOutput"
        if isinstance(self.order, bool) or not isinstance(self.order, int) or self.order < 1:
            raise ValueError(f"{where}: order={self.order!r}; expected a positive int")
        rows = list(self.P)
        if not rows:
            raise ValueError(f"{where}: P is empty; expected one row of θ-coefficients per stage")
        digits = self._source_digits
        parsed_rows = []
        for i, row in enumerate(rows):
            r, d = _parse_vector(row, f"{where}: P[{i}]")
            parsed_rows.append(r)
            digits = _min_digits(digits, d)
        deg = max(len(r) for r in parsed_rows)
        if deg < 1:
            raise ValueError(f"{where}: P has no θ-coefficients (degree 0); expected degree >= 1")
        P = tuple(r + (Fraction(0),) * (deg - len(r)) for r in parsed_rows)
        extra_c, d = _parse_vector(list(self.extra_c), f"{where}: extra_c")
        digits = _min_digits(digits, d)
        if len(self.extra_A) != len(extra_c):
            raise ValueError(
                f"{where}: extra_A has {len(self.extra_A)} rows but extra_c has {len(extra_c)}"
                " nodes; expected one A row per extra stage"
            )
        n_main = len(P) - len(extra_c)
        if n_main < 1:
            raise ValueError(
                f"{where}: P has {len(P)} rows for {len(extra_c)} extra stages; expected"
                " one row per main stage followed by one per extra stage"
            )
        extra_A = []
        for m, row in enumerate(self.extra_A):
            r, d = _parse_vector(row, f"{where}: extra_A[{m}]")
            digits = _min_digits(digits, d)
            width = n_main + m
            if len(r) > width:
                extra = r[width:]
                if any(extra):
                    raise ValueError(
                        f"{where}: extra stage {m} (stage {width}) has nonzero coefficients"
                        f" on stages >= {width}: {[_fmt(x) for x in extra]}; extra stages"
                        " must be explicit"
                    )
                r = r[:width]
            extra_A.append(r + (Fraction(0),) * (width - len(r)))
        object.__setattr__(self, "P", P)
        object.__setattr__(self, "extra_c", extra_c)
        object.__setattr__(self, "extra_A", tuple(extra_A))
        object.__setattr__(self, "_source_digits", digits)
        object.__setattr__(self, "digits", digits)

    @property
    def degree(self) -> int:
        """Degree of the polynomials b_i(θ) in θ."""
        return len(self.P[0])

    @property
    def stages(self) -> int:
        """Number of stages the extension uses (main + extra)."""
        return len(self.P)

    def weights_at(self, theta: Fraction | int | str) -> tuple[Fraction, ...]:
        """Exact ``b_i(θ)`` for all stages."""
        th, _ = parse_coefficient(theta, "theta")
        return tuple(sum((p * th ** (j + 1) for j, p in enumerate(row)), Fraction(0)) for row in self.P)


def _poly_mul(p: list[Fraction], q: list[Fraction]) -> list[Fraction]:
    out = [Fraction(0)] * (len(p) + len(q) - 1)
    for i, a in enumerate(p):
        if a:
            for j, b in enumerate(q):
                out[i + j] += a * b
    return out


def _poly_add(p: list[Fraction], q: list[Fraction]) -> list[Fraction]:
    n = max(len(p), len(q))
    return [(p[i] if i < len(p) else 0) + (q[i] if i < len(q) else 0) for i in range(n)]


def hairer_dense_output(
    b: Sequence[Any],
    d: Sequence[Sequence[Any]],
    *,
    fsal_stage: int,
    order: int,
    extra_c: Sequence[Any] = (),
    extra_A: Sequence[Sequence[Any]] = (),
) -> DenseOutput:
    """Build a :class:`DenseOutput` exactly from Hairer's nested ``rcont`` form.

    Hairer's DOPRI5/DOP853 codes store ``r1 = y0``, ``r2 = y1 - y0``, ``r3 = h k_1 - r2``,
    ``r4 = r2 - h k_fsal - r3`` and ``r5, r6, ... = h Σ_i d[j][i] k_i`` and evaluate::

        y(θ) = r1 + θ (r2 + (1-θ) (r3 + θ (r4 + (1-θ) (r5 + θ (r6 + ...)))))

    Every ``r`` is a linear combination of ``h k_i`` (``r2 = h Σ b_i k_i``), so ``y(θ)``
    is ``y0 + h Σ_i b_i(θ) k_i`` with polynomial ``b_i(θ)``; this expands the nesting in
    exact Fraction arithmetic.

    Parameters
    ----------
    b : sequence, shape (s,)
        Main weights.
    d : sequence of rows, each over the s + len(extra_c) stages (shorter rows padded)
        Hairer's ``d`` coefficients of ``r5, r6, ...`` (no rows gives the cubic Hermite
        interpolant through y0, y1, f0, f1).
    fsal_stage : int
        Index (0-based, main stages first) of the stage that equals ``f(t0 + h, y1)``.
    order : int
        Claimed order of the extension.
    """
    bb, digits = _parse_vector(list(b), "hairer_dense_output: b")
    n = len(bb) + len(extra_c)
    if not 0 <= fsal_stage < n:
        raise ValueError(f"hairer_dense_output: fsal_stage={fsal_stage} outside 0..{n - 1}")
    zero = Fraction(0)
    r2 = list(bb) + [zero] * (n - len(bb))
    e1 = [Fraction(int(i == 0)) for i in range(n)]
    ef = [Fraction(int(i == fsal_stage)) for i in range(n)]
    r3 = [e1[i] - r2[i] for i in range(n)]
    r4 = [r2[i] - ef[i] - r3[i] for i in range(n)]
    rs = [r2, r3, r4]
    for j, row in enumerate(d):
        rr, dd = _parse_vector(list(row), f"hairer_dense_output: d[{j}]")
        digits = _min_digits(digits, dd)
        if len(rr) > n:
            raise ValueError(f"hairer_dense_output: d[{j}] has {len(rr)} entries; expected <= {n}")
        rs.append(list(rr) + [zero] * (n - len(rr)))
    theta = [zero, Fraction(1)]
    one_minus = [Fraction(1), Fraction(-1)]
    # polys[i] = coefficients of b_i(θ) in powers θ^0, θ^1, ...; build from the innermost r.
    polys = [[x] for x in rs[-1]]
    for k in range(len(rs) - 1, 0, -1):
        # the bracket starting with rs[k] (Hairer's r_{k+2}) is multiplied by θ if k+2 even
        factor = theta if (k + 2) % 2 == 0 else one_minus
        polys = [_poly_add([rs[k - 1][i]], _poly_mul(factor, polys[i])) for i in range(n)]
    # the outermost bracket (starting with r2) is multiplied by θ
    polys = [_poly_mul(theta, p) for p in polys]
    deg = max(len(p) for p in polys) - 1
    P = []
    for p in polys:
        if p[0] != 0:  # cannot happen: b_i(0) = 0 by construction
            raise AssertionError("internal error: b_i(0) != 0")
        P.append(tuple(p[1:]) + (zero,) * (deg - (len(p) - 1)))
    ec, de = _parse_vector(list(extra_c), "hairer_dense_output: extra_c")
    digits = _min_digits(digits, de)
    ea = []
    for m, row in enumerate(extra_A):
        r, dd = _parse_vector(list(row), f"hairer_dense_output: extra_A[{m}]")
        digits = _min_digits(digits, dd)
        ea.append(r)
    return DenseOutput(P=tuple(P), order=order, extra_c=ec, extra_A=tuple(ea), _source_digits=digits)


# --------------------------------------------------------------------------------------------
# float view


@dataclass(frozen=True)
class FloatView:
    """Python-float copy of a tableau for integrators (sequences are tuples, indexable
    like lists). ``b_err = b - b_hat`` and ``b_err_aux = b - b_hat_aux`` (or None);
    ``dense_extra_A[m]`` spans all ``stages + m`` previous stages; ``dense_P[i][j-1]`` is
    the θ^j coefficient of ``b_i(θ)`` (None without dense output)."""

    name: str
    c: tuple[float, ...]
    A: tuple[tuple[float, ...], ...]
    b: tuple[float, ...]
    b_err: tuple[float, ...] | None
    b_err_aux: tuple[float, ...] | None
    dense_extra_c: tuple[float, ...]
    dense_extra_A: tuple[tuple[float, ...], ...]
    dense_P: tuple[tuple[float, ...], ...] | None
    order: int
    embedded_order: int | None
    dense_order: int | None
    fsal: bool
    explicit: bool
    stages: int


# --------------------------------------------------------------------------------------------
# the tableau

#: the parts of a tableau whose decimal digits are tracked separately
_PARTS = ("A", "b", "b_hat", "b_hat_aux", "dense")


@dataclass(frozen=True)
class ButcherTableau:
    """An ``s``-stage Runge--Kutta method as exact data.

    Parameters
    ----------
    name : str
        Registry name (lower case), used in every message.
    c : sequence, shape (s,)
        Nodes.
    A : sequence of rows
        Full ``s x s`` matrix, or ragged for explicit methods (row ``i`` lists columns
        ``0..i-1``; missing entries are zero). Stored full.
    b : sequence, shape (s,)
        Weights of the propagated solution.
    order : int
        Claimed order of ``b`` (proven by :func:`odeverify.tableaus.theory.verify_tableau`).
    b_hat, embedded_order
        Weights of the embedded solution and its order (both or neither). A source that
        publishes error weights ``e = b - b_hat`` may pass ``b_err=e`` instead of ``b_hat``.
    b_hat_aux, aux_order
        A second embedded solution (DOP853's third-order estimator), or ``b_err_aux``.
    dense : DenseOutput or None
        Continuous extension.
    citation, description : str
        Source of the coefficients; one-line summary.

    Notes
    -----
    Coefficients are ``int``, ``Fraction``, ``"p/q"`` or decimal strings, normalised to
    ``Fraction``. Derived attributes: ``stages``, ``explicit``, ``fsal``,
    ``stiffly_accurate``, ``adaptive``, ``exact``, ``digits`` and, for implicit methods,
    ``explicit_first_stage`` (row 0 of A is zero), ``dirk`` (A lower triangular, not
    explicit), ``sdirk`` (DIRK with every a_ii = γ != 0), ``esdirk`` (DIRK with a_11 = 0 and
    every other a_ii = γ != 0) and ``sdirk_gamma`` (that γ, else None).
    ``fsal`` holds for explicit and implicit methods alike: explicit first stage, c_s = 1
    and b = the last row of A (then k_s = f(t0 + h, y1) is the next step's k_1).
    """

    name: str
    c: tuple[Fraction, ...]
    A: tuple[tuple[Fraction, ...], ...]
    b: tuple[Fraction, ...]
    order: int
    b_hat: tuple[Fraction, ...] | None = None
    embedded_order: int | None = None
    b_hat_aux: tuple[Fraction, ...] | None = None
    aux_order: int | None = None
    dense: DenseOutput | None = None
    citation: str = ""
    description: str = ""
    b_err: InitVar[Sequence[Any] | None] = None
    b_err_aux: InitVar[Sequence[Any] | None] = None
    # internal: per-part digits of decimal strings already folded into Fractions, carried
    # through dataclasses.replace (whose arguments are Fractions): {"A": d, "b": d, ...}
    _part_digits: Mapping[str, int | None] | None = field(default=None, repr=False, compare=False)

    stages: int = field(init=False, compare=False)
    explicit: bool = field(init=False, compare=False)
    fsal: bool = field(init=False, compare=False)
    stiffly_accurate: bool = field(init=False, compare=False)
    explicit_first_stage: bool = field(init=False, compare=False)
    dirk: bool = field(init=False, compare=False)
    sdirk: bool = field(init=False, compare=False)
    esdirk: bool = field(init=False, compare=False)
    sdirk_gamma: Fraction | None = field(init=False, compare=False)
    adaptive: bool = field(init=False, compare=False)
    digits: int | None = field(init=False, compare=False)
    exact: bool = field(init=False, compare=False)

    # ---------------------------------------------------------------- construction
    def _err(self, msg: str) -> ValueError:
        return ValueError(f"tableau {self.name!r}: {msg}")

    def __post_init__(self, b_err: Sequence[Any] | None, b_err_aux: Sequence[Any] | None) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"tableau name must be a non-empty str, got {self.name!r}")
        put = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731
        given = dict(self._part_digits or {})
        unknown = set(given) - set(_PARTS)
        if unknown:
            raise self._err(f"_part_digits has unknown parts {sorted(unknown)}; expected {_PARTS}")
        part = {k: given.get(k) for k in _PARTS}
        prefix = f"tableau {self.name!r}:"

        c, d = _parse_vector(self.c, f"{prefix} c")
        part["A"] = _min_digits(part["A"], d)
        s = len(c)
        if s < 1:
            raise self._err("c is empty; expected at least one stage")
        b, d = _parse_vector(self.b, f"{prefix} b")
        part["b"] = _min_digits(part["b"], d)
        if len(b) != s:
            raise self._err(f"b has {len(b)} entries but c has {s}; expected one weight per stage")

        rows = self.A
        if isinstance(rows, (str, bytes)) or not isinstance(rows, Sequence) or len(rows) != s:
            n = len(rows) if isinstance(rows, Sequence) else "?"
            raise self._err(f"A has {n} rows but c has {s} entries; expected {s} rows")
        A = []
        for i, row in enumerate(rows):
            r, d = _parse_vector(row, f"{prefix} A[{i}]")
            part["A"] = _min_digits(part["A"], d)
            if len(r) > s:
                raise self._err(f"row {i} of A has {len(r)} entries; expected at most {s}")
            if len(r) < s and len(r) > i:
                raise self._err(
                    f"row {i} of A has {len(r)} entries; expected {i} (ragged explicit form:"
                    f" columns 0..{i - 1}) or {s} (full)"
                )
            A.append(r + (Fraction(0),) * (s - len(r)))
        A_t = tuple(A)

        def weights(given, err, label, err_label):
            if given is not None and err is not None:
                raise self._err(f"give {label} or {err_label}, not both")
            if given is None and err is None:
                return None
            vec, d = _parse_vector(given if given is not None else err, f"{prefix} {label if given is not None else err_label}")
            part[label] = _min_digits(part[label], d)
            if err is not None:  # b_hat = b - e carries the digits of b too
                part[label] = _min_digits(part[label], part["b"])
            if len(vec) != s:
                raise self._err(f"{label} has {len(vec)} entries but c has {s}; expected {s}")
            if err is not None:
                vec = tuple(bi - ei for bi, ei in zip(b, vec))
            return vec

        b_hat = weights(self.b_hat, b_err, "b_hat", "b_err")
        b_hat_aux = weights(self.b_hat_aux, b_err_aux, "b_hat_aux", "b_err_aux")

        for label, val, required in (
            ("order", self.order, True),
            ("embedded_order", self.embedded_order, b_hat is not None),
            ("aux_order", self.aux_order, b_hat_aux is not None),
        ):
            if required:
                if isinstance(val, bool) or not isinstance(val, int) or val < 1:
                    raise self._err(f"{label}={val!r}; expected a positive int")
            elif val is not None:
                weights_name = "b_hat" if label == "embedded_order" else "b_hat_aux"
                raise self._err(f"{label}={val!r} given without {weights_name}; give both or neither")

        dense = self.dense
        if dense is not None:
            if not isinstance(dense, DenseOutput):
                raise self._err(f"dense must be a DenseOutput or None, got {type(dense).__name__}")
            part["dense"] = _min_digits(part["dense"], dense.digits)

        put("c", c)
        put("A", A_t)
        put("b", b)
        put("b_hat", b_hat)
        put("b_hat_aux", b_hat_aux)
        if b_hat is None:
            part["b_hat"] = None
        if b_hat_aux is None:
            part["b_hat_aux"] = None
        if dense is None:
            part["dense"] = None
        digits = _min_digits(*part.values())
        put("_part_digits", MappingProxyType(part))
        put("digits", digits)
        put("exact", digits is None)
        put("stages", s)
        explicit = all(A_t[i][j] == 0 for i in range(s) for j in range(i, s))
        lower = all(A_t[i][j] == 0 for i in range(s) for j in range(i + 1, s))
        first_explicit = all(x == 0 for x in A_t[0])
        diag = [A_t[i][i] for i in range(s)]
        dirk = lower and not explicit
        # the common diagonal entry of an SDIRK (all a_ii = γ) or ESDIRK (a_11 = 0, the
        # others = γ); None for other methods
        implicit_diag = diag[1:] if first_explicit else diag
        gamma = implicit_diag[0] if dirk and implicit_diag and len(set(implicit_diag)) == 1 else None
        put("explicit", explicit)
        put("explicit_first_stage", first_explicit)
        put("dirk", dirk)
        put("sdirk", gamma is not None and not first_explicit)
        put("esdirk", gamma is not None and first_explicit)
        put("sdirk_gamma", gamma)
        # the last stage is f(t0 + h, y1), the next step's first stage: explicit first stage
        # (k_1 = f(t0, y0)), c_s = 1 and b equal to the last row of A
        put("fsal", first_explicit and s > 1 and c[-1] == 1 and A_t[-1] == b)
        put("stiffly_accurate", A_t[-1] == b)
        put("adaptive", b_hat is not None)

        # row-sum condition c_i = Σ_j a_ij
        for i in range(s):
            total = sum(A_t[i], Fraction(0))
            tol = coefficient_tolerance(part["A"], sum(abs(x) for x in A_t[i]) + abs(c[i]))
            if abs(total - c[i]) > tol:
                raise self._err(
                    f"row {i} of A sums to {_fmt(total)}, but c[{i}] = {_fmt(c[i])}"
                    f" (difference {float(total - c[i]):.3g}; row {i} = {[_fmt(x) for x in A_t[i]]}); the row-sum condition"
                    " c_i = Σ_j a_ij must hold"
                    + ("" if not tol else f" to the tolerance {float(tol):.2g} of {part['A']} digits")
                )
        if dense is not None:
            self._validate_dense(dense, self.digits_of("dense"))

    def _validate_dense(self, dense: DenseOutput, digits: int | None) -> None:
        s = self.stages
        n_extra = len(dense.extra_c)
        if dense.stages != s + n_extra:
            raise self._err(
                f"dense.P has {dense.stages} rows; expected {s} main + {n_extra} extra ="
                f" {s + n_extra} (one per stage)"
            )
        for m, (cm, row) in enumerate(zip(dense.extra_c, dense.extra_A)):
            total = sum(row, Fraction(0))
            tol = coefficient_tolerance(digits, sum(abs(x) for x in row) + abs(cm))
            if abs(total - cm) > tol:
                raise self._err(
                    f"dense extra stage {m} (stage {s + m}): row of extra_A sums to"
                    f" {_fmt(total)}, but extra_c[{m}] = {_fmt(cm)}"
                )
        at_one = [sum(row, Fraction(0)) for row in dense.P]
        target = list(self.b) + [Fraction(0)] * n_extra
        for i, (got, want) in enumerate(zip(at_one, target)):
            tol = coefficient_tolerance(digits, sum(abs(x) for x in dense.P[i]) + abs(want))
            if abs(got - want) > tol:
                kind = f"b[{i}]" if i < s else f"0 (extra stage {i - s})"
                raise self._err(
                    f"dense output row {i}: b_{i}(1) = {_fmt(got)}, but should equal {kind} ="
                    f" {_fmt(want)}; the interpolant must reproduce y1 at θ = 1"
                )

    # ---------------------------------------------------------------- views
    def digits_of(self, weights: str) -> int | None:
        """Digits that bound the rounding in the order conditions of one set of weights:
        ``"main"`` (A and b), ``"embedded"`` (A and b_hat), ``"aux"`` (A and b_hat_aux) or
        ``"dense"`` (A, b and the dense output). None when those coefficients are exact."""
        p = self._part_digits
        try:
            own = {"main": ("b",), "embedded": ("b_hat",), "aux": ("b_hat_aux",), "dense": ("b", "dense")}[weights]
        except KeyError:
            raise ValueError(
                f"digits_of: weights={weights!r}; expected 'main', 'embedded', 'aux' or 'dense'"
            ) from None
        return _min_digits(p["A"], *(p[k] for k in own))

    @property
    def extended_A(self) -> tuple[tuple[Fraction, ...], ...]:
        """Full square A over main + dense-extra stages (equals ``A`` without extras)."""
        if self.dense is None or not self.dense.extra_c:
            return self.A
        n = self.stages + len(self.dense.extra_c)
        zero = Fraction(0)
        rows = [row + (zero,) * (n - self.stages) for row in self.A]
        for r in self.dense.extra_A:
            rows.append(r + (zero,) * (n - len(r)))
        return tuple(rows)

    @cached_property
    def _float_view(self) -> FloatView:
        f = lambda v: tuple(float(x) for x in v)  # noqa: E731
        dense = self.dense
        return FloatView(
            name=self.name,
            c=f(self.c),
            A=tuple(f(r) for r in self.A),
            b=f(self.b),
            b_err=None if self.b_hat is None else tuple(float(x - y) for x, y in zip(self.b, self.b_hat)),
            b_err_aux=None
            if self.b_hat_aux is None
            else tuple(float(x - y) for x, y in zip(self.b, self.b_hat_aux)),
            dense_extra_c=() if dense is None else f(dense.extra_c),
            dense_extra_A=() if dense is None else tuple(f(r) for r in dense.extra_A),
            dense_P=None if dense is None else tuple(f(r) for r in dense.P),
            order=self.order,
            embedded_order=self.embedded_order,
            dense_order=None if dense is None else dense.order,
            fsal=self.fsal,
            explicit=self.explicit,
            stages=self.stages,
        )

    def float_view(self) -> FloatView:
        """Cached Python-float copy for integrators (see :class:`FloatView`)."""
        return self._float_view

    def __str__(self) -> str:
        return f"{self.name}: {self.description}" if self.description else self.name
