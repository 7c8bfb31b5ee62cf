"""Tests of odeverify.tableaus: exact data, validation, order proofs, stability functions.

Parametrized over the registry (``TABLEAUS.names()``), so a newly registered tableau is
checked here without editing this file.
"""
from __future__ import annotations

import dataclasses
import math
import time
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from odeverify.tableaus import (
    TABLEAUS,
    ButcherTableau,
    DenseOutput,
    OrderConditionError,
    get,
    hairer_dense_output,
    parse_coefficient,
    theory,
)

NAMES = TABLEAUS.names()
DENSE = [n for n in NAMES if get(n).dense is not None]
ADAPTIVE = [n for n in NAMES if get(n).adaptive]
AUX = [n for n in NAMES if get(n).b_hat_aux is not None]
DELTA = Fraction(1, 1000)


def _perturbed(vec, order):
    """vec with entry 1 raised by 1/1000; for a claimed order >= 2 entry 0 is lowered by as
    much, so that Σ stays 1 and the failure must come from a higher tree."""
    v = list(vec)
    if len(v) == 1 or order == 1:
        v[-1] += DELTA
        return v
    v[1] += DELTA
    v[0] -= DELTA
    return v


# ------------------------------------------------------------------------------- registry


def test_required_tableaus_are_registered():
    required = {"euler", "midpoint", "heun", "ralston", "kutta3", "rk4", "rk4_38", "bosh3",
                "fehlberg2", "dopri5", "tsit5", "dop853"}
    missing = required - set(NAMES)
    assert not missing, f"missing={sorted(missing)}, but should be empty"


def test_get_is_case_insensitive_and_unknown_names_list_choices():
    assert get("DOPRI5") is get("dopri5")
    with pytest.raises(ValueError, match=r"unknown tableau 'dopri'.*did you mean 'dopri5'.*Choices:.*rk4"):
        get("dopri")


@pytest.mark.parametrize("name", NAMES)
def test_metadata(name):
    t = get(name)
    assert t.name == name
    assert t.citation and any(ch.isdigit() for ch in t.citation), f"citation={t.citation!r} should name a year"
    assert "order" in t.description, f"description={t.description!r} should state the order"
    fsal_word = "not FSAL" if not t.fsal else "FSAL"
    assert fsal_word in t.description, f"description={t.description!r}, but fsal={t.fsal}"
    assert t.explicit or any(w in t.description for w in ("DIRK", "implicit")), (
        f"description={t.description!r} should say how an implicit method is implicit [{name}]")
    assert t.adaptive == (t.b_hat is not None)
    assert t.exact == (t.digits is None)
    assert len(t.A) == t.stages and all(len(r) == t.stages for r in t.A)
    assert all(isinstance(x, Fraction) for x in (*t.c, *t.b, *(x for r in t.A for x in r)))


def test_derived_flags():
    assert get("dopri5").fsal and get("tsit5").fsal and get("bosh3").fsal
    assert not get("rk4").fsal and not get("dop853").fsal and not get("fehlberg2").fsal
    assert get("dopri5").stiffly_accurate and not get("rk4").stiffly_accurate
    assert get("rk4").exact and get("dopri5").exact
    assert not get("dop853").exact and get("dop853").digits >= 28
    assert not get("tsit5").exact and get("tsit5").digits >= 16
    assert get("dop853").stages == 12 and get("dopri5").stages == 7


# ------------------------------------------------------------------------------- orders


@pytest.mark.parametrize("name", NAMES)
def test_claimed_orders_are_proven_and_sharp(name):
    t = get(name)
    report = theory.verify_tableau(t)
    claims = [("main", report.main, t.order), ("embedded", report.embedded, t.embedded_order),
              ("aux", report.aux, t.aux_order),
              ("dense", report.dense, None if t.dense is None else t.dense.order)]
    for label, r, claimed in claims:
        if claimed is None:
            assert r is None, f"{label} report={r}, but should be None [{name}]"
            continue
        assert r.proven == claimed, f"{label} proven={r.proven}, but should be {claimed} [{name}]"
        if claimed < theory.MAX_TREE_ORDER:
            assert r.sharp, f"{label} sharp={r.sharp}: order {claimed + 1} holds too [{name}]"
            assert r.witness is not None


@pytest.mark.parametrize("name", NAMES)
def test_perturbed_b_fails_with_named_tree(name):
    t = get(name)
    bad = dataclasses.replace(t, b=_perturbed(t.b, t.order), dense=None)
    with pytest.raises(OrderConditionError, match=rf"tableau '{name}': main weights b claim order {t.order}"
                       r" but fail the order \d condition for tree (τ|\[.*\]) \(order \d\).*residual") as info:
        theory.verify_tableau(bad)
    assert info.value.weights == "main" and info.value.tree.order <= t.order
    assert info.value.residual != 0


@pytest.mark.parametrize("name", ADAPTIVE)
def test_perturbed_b_hat_fails(name):
    t = get(name)
    bad = dataclasses.replace(t, b_hat=_perturbed(t.b_hat, t.embedded_order))
    with pytest.raises(OrderConditionError, match=rf"'{name}': embedded weights b_hat .* tree "):
        theory.verify_tableau(bad)


@pytest.mark.parametrize("name", AUX)
def test_perturbed_b_hat_aux_fails(name):
    t = get(name)
    bad = dataclasses.replace(t, b_hat_aux=_perturbed(t.b_hat_aux, t.aux_order))
    with pytest.raises(OrderConditionError, match=rf"'{name}': auxiliary weights b_hat_aux .* tree "):
        theory.verify_tableau(bad)


@pytest.mark.parametrize("name", DENSE)
def test_perturbed_dense_output_fails(name):
    """Adding δ(θ² - θ) to b_0(θ) keeps b_0(1) = b_0 but breaks Σ b_i(θ) = θ."""
    t = get(name)
    P = [list(r) for r in t.dense.P]
    P[0][0] -= DELTA
    P[0][1] += DELTA
    dense = dataclasses.replace(t.dense, P=P)
    bad = dataclasses.replace(t, dense=dense)
    with pytest.raises(OrderConditionError, match=rf"'{name}': dense output b_i\(θ\) .* tree τ \(order 1\) at θ\^1"):
        theory.verify_tableau(bad)


@pytest.mark.parametrize("name", [n for n in NAMES if get(n).order >= 3])
def test_perturbed_A_fails(name):
    """Moving δ between A[i][0] and A[i][1] keeps the row sum but changes Σ b_i a_ij c_j
    by -b_i δ c_1 (nonzero for a row i >= 2 with b_i != 0)."""
    t = get(name)
    i = next(i for i in range(2, t.stages) if t.b[i] != 0)
    A = [list(r) for r in t.A]
    A[i][0] += DELTA
    A[i][1] -= DELTA
    bad = dataclasses.replace(t, A=A)
    with pytest.raises(OrderConditionError, match=rf"'{name}': main weights b .* tree "):
        theory.verify_tableau(bad)


@pytest.mark.parametrize("name", NAMES)
def test_bad_row_sum_names_the_row(name):
    t = get(name)
    s = t.stages
    c = list(t.c)
    c[-1] += DELTA
    with pytest.raises(ValueError, match=rf"tableau '{name}': row {s - 1} of A sums to .*, but c\[{s - 1}\] = "):
        dataclasses.replace(t, c=c)


def test_verification_of_all_shipped_tableaus_is_fast():
    t0 = time.perf_counter()
    for _, t in TABLEAUS.items():
        theory.verify_tableau(t)
    elapsed = time.perf_counter() - t0
    assert elapsed < 10, f"elapsed={elapsed:.1f}s, but should be < 10 s"


def test_implicit_tableau_orders_and_stability():
    """The theory works with full A: Radau IIA (2 stages) has order 3, R = (1 + z/3)/(1 - 2z/3 + z²/6)."""
    radau = ButcherTableau(name="radau_iia3_test", c=["1/3", 1], A=[["5/12", "-1/12"], ["3/4", "1/4"]],
                           b=["3/4", "1/4"], order=3, citation="test", description="test")
    assert not radau.explicit and radau.stiffly_accurate and not radau.fsal
    rep = theory.verify_tableau(radau)
    assert rep.main.proven == 3 and rep.main.sharp
    num, den = theory.stability_function(radau)
    assert num == (1, Fraction(1, 3)) and den == (1, Fraction(-2, 3), Fraction(1, 6))
    imid = ButcherTableau(name="implicit_midpoint_test", c=["1/2"], A=[["1/2"]], b=[1], order=2)
    assert theory.stability_function(imid) == ((1, Fraction(1, 2)), (1, Fraction(-1, 2)))
    assert theory.measured_order(imid.b, imid.A) == 2


# ------------------------------------------------------------------------------- trees


def test_tree_counts():
    counts = [len(theory.trees(n)) for n in range(1, theory.MAX_TREE_ORDER + 1)]
    assert counts[:8] == [1, 1, 2, 4, 9, 20, 48, 115], f"counts={counts}"
    assert counts[8] == 286
    names = [t.name for t in theory.trees_up_to(theory.MAX_TREE_ORDER)]
    assert len(set(names)) == len(names), "tree names should be unique"


@pytest.mark.parametrize("n", range(1, theory.MAX_TREE_ORDER + 1))
def test_tree_alpha_sums_to_factorial(n):
    """Σ_{|t|=n} n!/(σ(t)γ(t)) = (n-1)! (monotonically labelled trees)."""
    total = sum(t.alpha for t in theory.trees(n))
    assert total == math.factorial(n - 1), f"Σα={total}, but should be {math.factorial(n - 1)}"


def test_known_densities_and_symmetries():
    by_name = {t.name: t for t in theory.trees_up_to(5)}
    expected = {  # name: (order, γ, σ)
        "τ": (1, 1, 1), "[τ]": (2, 2, 1), "[τ,τ]": (3, 3, 2), "[[τ]]": (3, 6, 1),
        "[τ,τ,τ]": (4, 4, 6), "[[τ],τ]": (4, 8, 1), "[[τ,τ]]": (4, 12, 2), "[[[τ]]]": (4, 24, 1),
        "[[[[τ]]]]": (5, 120, 1), "[τ,τ,τ,τ]": (5, 5, 24), "[[τ],[τ]]": (5, 20, 2),
    }
    for name, (order, gamma, sigma) in expected.items():
        t = by_name[name]
        assert (t.order, t.density, t.symmetry) == (order, gamma, sigma), (
            f"{name}: (order, γ, σ)={(t.order, t.density, t.symmetry)}, but should be {(order, gamma, sigma)}")


def test_elementary_weights_and_check_order():
    rk4 = get("rk4")
    tall = next(t for t in theory.trees(3) if t.name == "[[τ]]")
    assert theory.elementary_weight(rk4.b, rk4.A, tall) == Fraction(1, 6)
    assert theory.check_order(rk4.b, rk4.A, 4) == []
    fails = theory.check_order(rk4.b, rk4.A, 5)
    assert fails and all(f.tree.order == 5 for f in fails)
    assert theory.measured_order(rk4.b, rk4.A) == 4
    # ragged input and "p/q" strings are accepted
    assert theory.measured_order(["1/2", "1/2"], [[], [1]]) == 2
    # floats are taken exactly; a tolerance absorbs their rounding
    assert theory.measured_order([1 / 6, 1 / 3, 1 / 3, 1 / 6], [[], [0.5], [0, 0.5], [0, 0, 1]]) < 4
    assert theory.measured_order([1 / 6, 1 / 3, 1 / 3, 1 / 6], [[], [0.5], [0, 0.5], [0, 0, 1]], tol=1e-15) == 4


@settings(deadline=None, max_examples=25)
@given(st.fractions(min_value=Fraction(1, 10), max_value=3, max_denominator=50))
def test_two_stage_family_has_order_exactly_two(b2):
    """Every explicit 2-stage method with c2 = 1/(2 b2), b1 = 1 - b2 has order exactly 2."""
    b = [1 - b2, b2]
    A = [[0, 0], [1 / (2 * b2), 0]]
    assert theory.measured_order(b, A) == 2


# ------------------------------------------------------------------------------- stability


def _poly(coefs):
    return [Fraction(x) for x in coefs]


def test_stability_polynomials():
    assert theory.stability_function(get("euler")) == ((1, 1), (1,))
    rk4 = _poly([1, 1, "1/2", "1/6", "1/24"])
    assert list(theory.stability_function(get("rk4"))[0]) == rk4
    assert list(theory.stability_function(get("rk4_38"))[0]) == rk4
    # Dormand-Prince 5(4): R(z) = Σ_{k<=5} z^k/k! + z^6/600 (Hairer & Wanner, Solving ODEs II, IV.2)
    num, den = theory.stability_function(get("dopri5"))
    assert list(num) == _poly([1, 1, "1/2", "1/6", "1/24", "1/120", "1/600"]) and den == (1,)


@pytest.mark.parametrize("name", NAMES)
def test_stability_value_matches_linear_algebra(name):
    """R(z) = 1 + z bᵀ(I - zA)^{-1} 1, computed independently in floats."""
    t = get(name)
    fv = t.float_view()
    A, b = np.array(fv.A), np.array(fv.b)
    z = np.array([-0.5 + 0.3j, -2.0, 1j, -3.0 + 1.0j, 0.25])
    got = theory.stability_value(t, z)
    s = t.stages
    want = np.array([1 + zz * b @ np.linalg.solve(np.eye(s) - zz * A, np.ones(s)) for zz in z])
    np.testing.assert_allclose(got, want, rtol=1e-12, err_msg=f"R(z) [{name}]")


@pytest.mark.parametrize("name", NAMES)
def test_stability_polynomial_starts_with_exponential_series(name):
    """R(z) - e^z = O(z^{p+1}): P(z) - Q(z) e^z has no terms below z^{p+1} (for explicit
    methods Q = 1, so the first p+1 coefficients of P are 1/k!)."""
    t = get(name)
    num, den = theory.stability_function(t)
    assert (den == (1,)) == t.explicit, f"denominator={den}, but explicit={t.explicit} [{name}]"
    tol = 0 if t.exact else 1e-20
    for k in range(t.order + 1):
        q_exp = sum((den[j] * Fraction(1, math.factorial(k - j)) for j in range(min(k, len(den) - 1) + 1)), Fraction(0))
        p_k = num[k] if k < len(num) else Fraction(0)
        assert abs(p_k - q_exp) <= tol, f"z^{k}: P coefficient={p_k}, but (Q e^z) coefficient={q_exp} [{name}]"


# ------------------------------------------------------------------------------- views, dense


@pytest.mark.parametrize("name", NAMES)
def test_float_view_matches_fractions(name):
    t = get(name)
    fv = t.float_view()
    assert fv is t.float_view(), "float_view() should be cached"
    assert fv.c == tuple(float(x) for x in t.c)
    assert fv.b == tuple(float(x) for x in t.b)
    assert fv.A == tuple(tuple(float(x) for x in r) for r in t.A)
    assert (fv.order, fv.embedded_order, fv.fsal, fv.stages) == (t.order, t.embedded_order, t.fsal, t.stages)
    if t.b_hat is None:
        assert fv.b_err is None
    else:
        assert fv.b_err == tuple(float(x - y) for x, y in zip(t.b, t.b_hat))
    if t.b_hat_aux is None:
        assert fv.b_err_aux is None
    else:
        assert fv.b_err_aux == tuple(float(x - y) for x, y in zip(t.b, t.b_hat_aux))
    if t.dense is None:
        assert fv.dense_P is None and fv.dense_extra_c == () and fv.dense_extra_A == ()
    else:
        assert fv.dense_P == tuple(tuple(float(x) for x in r) for r in t.dense.P)
        assert fv.dense_extra_c == tuple(float(x) for x in t.dense.extra_c)
        for m, row in enumerate(fv.dense_extra_A):
            assert len(row) == t.stages + m
            assert row == tuple(float(x) for x in t.dense.extra_A[m])


@pytest.mark.parametrize("name", DENSE)
def test_dense_output_hits_y1(name):
    t = get(name)
    at_one = t.dense.weights_at(1)
    want = list(t.b) + [0] * len(t.dense.extra_c)
    tol = 0 if t.exact else Fraction(1, 10**14)
    for i, (got, w) in enumerate(zip(at_one, want)):
        assert abs(got - w) <= tol, f"b_{i}(1)={float(got)}, but should be {float(w)} [{name}]"
    assert all(x == 0 for x in t.dense.weights_at(0))


def test_hermite_dense_output_of_bosh3():
    """With no d rows, Hairer's nested form is cubic Hermite interpolation (scipy RK23.P)."""
    P = get("bosh3").dense.P
    F = Fraction
    assert P == ((1, F(-4, 3), F(5, 9)), (0, 1, F(-2, 3)), (0, F(4, 3), F(-8, 9)), (0, -1, 1))


def test_dop853_dense_stage_layout():
    t = get("dop853")
    d = t.dense
    assert d.extra_c == (1, Fraction(1, 10), Fraction(1, 5), Fraction(7, 9))
    assert d.extra_A[0] == t.b, "extra stage 12 should be f(t0 + h, y1)"
    assert d.stages == 16 and d.degree == 7


# ------------------------------------------------------------------------------- validation


def test_row_sum_message():
    with pytest.raises(ValueError, match=r"tableau 'bad': row 1 of A sums to 1/3, but c\[1\] = 1/2"):
        ButcherTableau(name="bad", c=[0, "1/2"], A=[[], ["1/3"]], b=[0, 1], order=2)


def test_inexact_row_sum_tolerance_follows_digits():
    ok = ButcherTableau(name="dec", c=[0, "0.3333333333333333"], A=[[], ["1/3"]], b=[0, 1], order=1)
    assert ok.digits == 16 and not ok.exact
    # a 10-digit node agrees with 1/3 to its own precision ...
    ButcherTableau(name="dec", c=[0, "0.3333333333"], A=[[], ["1/3"]], b=[0, 1], order=1)
    # ... but a 16-digit node that is off in the 10th digit does not
    with pytest.raises(ValueError, match=r"row 1 of A sums to 1/3, but c\[1\] = 0.333333334333 \(difference -1e-09;.* of 16 digits"):
        ButcherTableau(name="dec", c=[0, "0.3333333343333333"], A=[[], ["1/3"]], b=[0, 1], order=1)


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        (dict(b=[1]), r"b has 1 entries but c has 2"),
        (dict(A=[[]]), r"A has 1 rows but c has 2"),
        (dict(A=[[], [1, 2, 3]]), r"row 1 of A has 3 entries; expected at most 2"),
        (dict(order=0), r"order=0; expected a positive int"),
        (dict(b_hat=[1, 0]), r"embedded_order=None; expected a positive int"),
        (dict(embedded_order=1), r"embedded_order=1 given without b_hat"),
        (dict(b_hat=[1, 0], b_err=[0, 0], embedded_order=1), r"give b_hat or b_err, not both"),
        (dict(dense=DenseOutput(P=[[1]], order=1)), r"dense.P has 1 rows; expected 2"),
        (dict(dense=DenseOutput(P=[[1], [0]], order=1)), r"dense output row 0: b_0\(1\) = 1, but should equal b\[0\] = 1/2"),
    ],
)
def test_validation_errors_name_the_field(kwargs, pattern):
    base = dict(name="heunx", c=[0, 1], A=[[], [1]], b=["1/2", "1/2"], order=2)
    base.update(kwargs)
    with pytest.raises(ValueError, match=pattern):
        ButcherTableau(**base)


def test_dense_extra_stage_row_sum_is_checked():
    dense = DenseOutput(P=[["1/2"], ["1/2"], [0]], order=1, extra_c=["1/2"], extra_A=[["1/3", 0]])
    with pytest.raises(ValueError, match=r"dense extra stage 0 \(stage 2\): row of extra_A sums to 1/3, but extra_c\[0\] = 1/2"):
        ButcherTableau(name="heunx", c=[0, 1], A=[[], [1]], b=["1/2", "1/2"], order=2, dense=dense)


def test_b_err_converts_to_b_hat():
    t = ButcherTableau(name="heunx", c=[0, 1], A=[[], [1]], b=["1/2", "1/2"], b_err=["-1/2", "1/2"],
                       order=2, embedded_order=1)
    assert t.b_hat == (1, 0)


def test_parse_coefficient():
    assert parse_coefficient("1/3") == (Fraction(1, 3), None)
    assert parse_coefficient(-2) == (Fraction(-2), None)
    assert parse_coefficient("0.1234e-2") == (Fraction(1234, 10**6), 4)
    assert parse_coefficient("-0.84289382761090128651353491142D1")[1] == 29
    assert parse_coefficient(".5") == (Fraction(1, 2), 1)
    with pytest.raises(TypeError, match="float"):
        parse_coefficient(0.5)
    with pytest.raises(ValueError, match="cannot parse"):
        parse_coefficient("one half")


def test_replace_keeps_inexactness():
    t = get("dop853")
    again = dataclasses.replace(t, description="copy")
    assert again.digits == t.digits and not again.exact


def test_hairer_dense_output_requires_valid_fsal_stage():
    with pytest.raises(ValueError, match="fsal_stage=5 outside 0..1"):
        hairer_dense_output(["1/2", "1/2"], [], fsal_stage=5, order=2)


# ------------------------------------------------------------------------------- cross-checks


def test_dopri5_and_bosh3_dense_match_scipy():
    """scipy stores E = b_hat - b (the opposite sign of our b_err = b - b_hat)."""
    rk = pytest.importorskip("scipy.integrate._ivp.rk")
    np.testing.assert_allclose(np.array(get("dopri5").float_view().dense_P), rk.RK45.P, rtol=1e-15, atol=0)
    np.testing.assert_allclose(np.array(get("bosh3").float_view().dense_P), rk.RK23.P, rtol=1e-15, atol=0)
    np.testing.assert_allclose(np.array(get("dopri5").float_view().b_err), -rk.RK45.E, rtol=1e-15, atol=1e-17)
    np.testing.assert_allclose(np.array(get("bosh3").float_view().b_err), -rk.RK23.E, rtol=1e-15, atol=1e-17)


def test_dop853_matches_scipy_transcription():
    dc = pytest.importorskip("scipy.integrate._ivp.dop853_coefficients")
    t = get("dop853")
    fv = t.float_view()
    s = t.stages
    np.testing.assert_allclose(fv.c, dc.C[:s], rtol=1e-15)
    np.testing.assert_allclose(fv.A, dc.A[:s, :s], rtol=1e-15)
    np.testing.assert_allclose(fv.b, dc.B, rtol=1e-15)
    np.testing.assert_allclose(fv.b_err, dc.E5[:s], rtol=1e-15)
    np.testing.assert_allclose(fv.b_err_aux, dc.E3[:s], rtol=1e-14, atol=1e-16)
    np.testing.assert_allclose(fv.dense_extra_c, dc.C[s:], rtol=1e-15)
    for m, row in enumerate(fv.dense_extra_A):
        np.testing.assert_allclose(row, dc.A[s + m, : s + m], rtol=1e-15)


def test_dop853_dense_polynomials_reproduce_hairers_nested_form():
    """Evaluate Hairer's nested rcont form with scipy's D at random stage values and compare
    with y0 + h Σ b_i(θ) k_i from our expanded P."""
    dc = pytest.importorskip("scipy.integrate._ivp.dop853_coefficients")
    t = get("dop853")
    fv = t.float_view()
    rng = np.random.default_rng(0)
    K = rng.standard_normal(16)  # stage derivatives, h = 1, y0 = 0
    y1 = np.dot(fv.b, K[:12])
    r = [y1, K[0] - y1, 2 * y1 - K[0] - K[12]] + list(dc.D @ K)
    P = np.array(fv.dense_P)
    for theta in (0.1, 0.37, 0.5, 0.9, 1.0):
        nested = 0.0
        for j, rj in enumerate(reversed(r)):
            k = len(r) - 1 - j  # r[k] is Hairer's r_{k+2}: multiplied by θ if k+2 even
            nested = (nested + rj) * (theta if k % 2 == 0 else 1 - theta)
        ours = sum(P[i] @ theta ** np.arange(1, P.shape[1] + 1) * K[i] for i in range(16))
        assert ours == pytest.approx(nested, rel=1e-12, abs=1e-12), f"θ={theta}"
