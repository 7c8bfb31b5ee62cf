"""Implicit tableaus (odeverify.tableaus.implicit) and the linear-stability theory
(A-/L-stability proofs, stability intervals, regions, boundaries) of odeverify.tableaus.theory.

The generic checks every registered tableau gets (orders proven and sharp, perturbations
failing, float views, R(z) against linear algebra) live in tests/test_tableaus.py; this file
checks what is particular to the implicit methods and to stability.
"""
from __future__ import annotations

import dataclasses
import math
import time
from fractions import Fraction as F

import numpy as np
import pytest

from odeverify.tableaus import TABLEAUS, ButcherTableau, OrderConditionError, get, theory

IMPLICIT = ["backward_euler", "trapezoid", "sdirk2", "kvaerno3", "kvaerno4", "kvaerno5", "radau_iia5"]
L_STABLE = ["backward_euler", "sdirk2", "kvaerno3", "kvaerno4", "kvaerno5", "radau_iia5"]
EXPLICIT = [n for n in TABLEAUS.names() if get(n).explicit]
#: identities of 40-digit decimal coefficients hold to this (products of a few coefficients)
TOL40 = F(1, 10**37)


def _poly(coefs, x):
    return sum((F(c) * x**k for k, c in enumerate(coefs)), F(0))


# ------------------------------------------------------------------------------- data


def test_implicit_tableaus_are_registered_after_the_explicit_ones():
    names = TABLEAUS.names()
    assert set(IMPLICIT) <= set(names), f"missing={sorted(set(IMPLICIT) - set(names))}"
    first_implicit = min(names.index(n) for n in IMPLICIT)
    assert all(get(n).explicit for n in names[:first_implicit]), f"order={names}"
    assert not any(get(n).explicit for n in IMPLICIT)


@pytest.mark.parametrize(
    ("name", "stages", "dirk", "sdirk", "esdirk", "fsal"),
    [
        ("backward_euler", 1, True, True, False, False),
        ("trapezoid", 2, True, False, True, True),
        ("sdirk2", 2, True, True, False, False),
        ("kvaerno3", 4, True, False, True, True),
        ("kvaerno4", 5, True, False, True, True),
        ("kvaerno5", 7, True, False, True, True),
        ("radau_iia5", 3, False, False, False, False),
    ],
)
def test_derived_structure_flags(name, stages, dirk, sdirk, esdirk, fsal):
    t = get(name)
    got = (t.stages, t.dirk, t.sdirk, t.esdirk, t.fsal, t.stiffly_accurate)
    assert got == (stages, dirk, sdirk, esdirk, fsal, True), f"(s, dirk, sdirk, esdirk, fsal, SA)={got} [{name}]"
    assert t.explicit_first_stage == esdirk
    if dirk:
        diag = [t.A[i][i] for i in range(t.stages)]
        assert set(diag[1:] if esdirk else diag) == {t.sdirk_gamma}, f"diag={diag}, γ={t.sdirk_gamma}"
    else:
        assert t.sdirk_gamma is None


def test_explicit_methods_have_no_implicit_flags():
    for name in EXPLICIT:
        t = get(name)
        assert not (t.dirk or t.sdirk or t.esdirk) and t.sdirk_gamma is None, name
        assert t.explicit_first_stage


def test_flags_follow_the_numbers():
    """A DIRK with unequal diagonal is neither SDIRK nor ESDIRK; FSAL needs c_s = 1."""
    dirk = ButcherTableau(name="dirk_test", c=["1/4", 1], A=[["1/4", 0], ["1/4", "3/4"]], b=["1/4", "3/4"], order=1)
    assert dirk.dirk and not dirk.sdirk and not dirk.esdirk and dirk.sdirk_gamma is None
    assert dirk.stiffly_accurate and not dirk.fsal


def test_gammas_solve_their_defining_equations():
    """sdirk2: (1 - γ)² = 1/2; Kværnø 3(2): 6γ³ - 18γ² + 9γ - 1 = 0; Kværnø 4(3):
    24γ⁴ - 96γ³ + 72γ² - 16γ + 1 = 0 (R(∞) = 0); Kværnø 5(4): γ = 0.26 exactly."""
    g = get("sdirk2").sdirk_gamma
    assert abs((1 - g) ** 2 - F(1, 2)) < TOL40 and abs(g - (1 - math.sqrt(2) / 2)) < 1e-15
    g3 = get("kvaerno3").sdirk_gamma
    assert abs(_poly([-1, 9, -18, 6], g3)) < TOL40 and abs(g3 - F("0.43586652150")) < F(1, 10**10)
    g4 = get("kvaerno4").sdirk_gamma
    assert abs(_poly([1, -16, 72, -96, 24], g4)) < TOL40 and abs(g4 - F("0.5728160625")) < F(1, 10**10)
    assert get("kvaerno5").sdirk_gamma == F(13, 50)


def _kvaerno3(g):
    """Kværnø (2004), method 3/2: the closed forms in γ (stiffly accurate, c = (0, 2γ, 1, 1))."""
    a31, a32 = (-4 * g**2 + 6 * g - 1) / (4 * g), (1 - 2 * g) / (4 * g)
    a41, a42, a43 = (6 * g - 1) / (12 * g), -1 / ((24 * g - 12) * g), (-6 * g**2 + 6 * g - 1) / (6 * g - 3)
    return [[0, 0, 0, 0], [g, g, 0, 0], [a31, a32, g, 0], [a41, a42, a43, g]]


def _kvaerno4(g):
    """Kværnø (2004), method 4/3: the closed forms in γ (c = (0, 2γ, c3, 1, 1))."""
    def p(*a):
        return sum((F(c) * g ** (len(a) - 1 - i) for i, c in enumerate(a)), F(0))

    r = [
        [0, 0, 0, 0, 0],
        [g, g, 0, 0, 0],
        [p(144, -180, 81, -15, 1) * g / p(12, -6, 1) ** 2, p(-36, 39, -15, 2) * g / p(12, -6, 1) ** 2, g, 0, 0],
        [p(-144, 396, -330, 117, -18, 1) / (12 * g**2 * p(12, -9, 2)), p(72, -126, 69, -15, 1) / (12 * g**2 * p(3, -1)),
         p(-6, 6, -1) * p(12, -6, 1) ** 2 / (12 * g**2 * p(12, -9, 2) * p(3, -1)), g, 0],
        [p(288, -312, 120, -18, 1) / (48 * g**2 * p(12, -9, 2)), p(24, -12, 1) / (48 * g**2 * p(3, -1)),
         -p(12, -6, 1) ** 3 / (48 * g**2 * p(3, -1) * p(12, -9, 2) * p(6, -6, 1)), p(-24, 36, -12, 1) / p(24, -24, 4), g],
    ]
    return r


@pytest.mark.parametrize(("name", "formulas"), [("kvaerno3", _kvaerno3), ("kvaerno4", _kvaerno4)])
def test_kvaerno_coefficients_match_the_closed_forms(name, formulas):
    t = get(name)
    want = formulas(t.sdirk_gamma)
    for i, (row, wrow) in enumerate(zip(t.A, want)):
        for j, (x, w) in enumerate(zip(row, wrow)):
            assert abs(x - w) < TOL40, f"A[{i}][{j}]={float(x)}, but the closed form gives {float(w)} [{name}]"
    assert t.b == t.A[-1] and t.b_hat == t.A[-2][:-1] + (0,)


#: Kværnø (2004), method 5/4, as published (17 decimals; also in SUNDIALS ARKODE
#: KVAERNO_7_4_5 and diffrax Kvaerno5)
KVAERNO5_PUBLISHED = {
    (2, 1): "0.84033320996790809", (3, 0): "0.22371961478320505", (3, 1): "0.47675532319799699",
    (3, 2): "-0.06470895363112615", (4, 0): "0.16648564323248321", (4, 1): "0.10450018841591720",
    (4, 2): "0.03631482272098715", (4, 3): "-0.13090704451073998", (5, 0): "0.13855640231268224",
    (5, 2): "-0.04245337201752043", (5, 3): "0.02446657898003141", (5, 4): "0.61943039072480676",
    (6, 0): "0.13659751177640291", (6, 2): "-0.05496908796538376", (6, 3): "-0.04118626728321046",
    (6, 4): "0.62993304899016403", (6, 5): "0.06962479448202728",
}


def test_kvaerno5_refines_the_published_values():
    """Our 40-digit values truncated to 17 decimals are exactly the published ones."""
    t = get("kvaerno5")
    for (i, j), text in KVAERNO5_PUBLISHED.items():
        ours, pub = t.A[i][j], F(text)
        assert abs(ours - pub) < F(1, 10**17), f"A[{i}][{j}]={float(ours)!r}, published {text}"
        truncated = F(int(ours * 10**17), 10**17)  # int() truncates toward zero
        assert truncated == pub, f"A[{i}][{j}] truncated to 17 decimals = {float(truncated)!r}, published {text}"
    assert (t.A[1][0], t.A[2][0], t.A[5][1], t.A[6][1]) == (F(13, 50), F(13, 100), 0, 0)


def test_kvaerno5_defining_conditions():
    """Stage order 2 (Σ_j a_ij c_j = c_i²/2) for every stage: the condition that, with the
    order conditions and R(∞) = 0, pins the refined coefficients."""
    t = get("kvaerno5")
    for i in range(t.stages):
        lhs = sum((a * c for a, c in zip(t.A[i], t.c)), F(0))
        assert abs(lhs - t.c[i] ** 2 / 2) < TOL40, f"stage {i}: Σ a_ij c_j - c_i²/2 = {float(lhs - t.c[i] ** 2 / 2)}"


def test_radau_iia5_is_the_collocation_method():
    """c_1, c_2 are the roots of 10c² - 8c + 1 (c = (4 ∓ √6)/10), c_3 = 1; B(5): Σ b_i
    c_i^(k-1) = 1/k (k <= 5); C(3): Σ_j a_ij c_j^(k-1) = c_i^k/k (k <= 3, stage order 3)."""
    t = get("radau_iia5")
    assert t.c[2] == 1 and all(abs(10 * c**2 - 8 * c + 1) < TOL40 for c in t.c[:2])
    for k in range(1, 6):
        got = sum((b * c ** (k - 1) for b, c in zip(t.b, t.c)), F(0))
        assert abs(got - F(1, k)) < TOL40, f"B({k}): {float(got)}"
    for i in range(3):
        for k in range(1, 4):
            got = sum((a * c ** (k - 1) for a, c in zip(t.A[i], t.c)), F(0))
            assert abs(got - t.c[i] ** k / k) < TOL40, f"C({k}) row {i}: {float(got)}"
    assert t.A[2][2] == F(1, 9)


def test_radau_dense_output_is_the_collocation_polynomial():
    """The interpolant passes through every stage: b_j(c_i) = a_ij (u(t0 + c_i h) = Y_i)."""
    t = get("radau_iia5")
    assert t.dense.order == 3 and t.dense.degree == 3
    for i, ci in enumerate(t.c):
        got = t.dense.weights_at(ci)
        for j in range(3):
            assert abs(got[j] - t.A[i][j]) < TOL40, f"b_{j}(c_{i})={float(got[j])}, but a_{i}{j}={float(t.A[i][j])}"
    rep = theory.verify_tableau(t)
    assert rep.dense.proven == 3 and rep.dense.sharp


@pytest.mark.parametrize(
    ("name", "main", "embedded"),
    [("backward_euler", 1, None), ("trapezoid", 2, None), ("sdirk2", 2, None), ("kvaerno3", 3, 2),
     ("kvaerno4", 4, 3), ("kvaerno5", 5, 4), ("radau_iia5", 5, None)],
)
def test_orders_are_the_published_ones(name, main, embedded):
    """The literature's orders, proven by the rooted-tree conditions and sharp."""
    t = get(name)
    rep = theory.verify_tableau(t)
    assert (rep.main.proven, rep.main.sharp) == (main, True), f"main={rep.main} [{name}]"
    assert (rep.embedded and (rep.embedded.proven, rep.embedded.sharp)) == (embedded and (embedded, True))


@pytest.mark.parametrize("name", ["kvaerno3", "kvaerno5", "radau_iia5"])
def test_planted_weight_rounding_names_the_tree(name):
    """The last irrational weight rounded to 10 digits (b_1 adjusted so that Σ b = 1 still
    holds) is far outside the 40-digit tolerance: the proof fails and names a tree of order
    2 or more."""
    t = get(name)
    b = list(t.b)
    k = max(i for i, x in enumerate(b) if x * 10**10 != round(x * 10**10))
    cut = F(round(b[k] * 10**10), 10**10)
    b[0] += b[k] - cut
    b[k] = cut
    bad = dataclasses.replace(t, b=b, dense=None)
    with pytest.raises(OrderConditionError, match=rf"'{name}': main weights b claim order {t.order} but fail the"
                       r" order \d condition for tree \[.*\] \(order \d\).*residual") as info:
        theory.verify_tableau(bad)
    assert 2 <= info.value.tree.order <= t.order


# ------------------------------------------------------------------------------- R(z)


def _close(p, q, tol=TOL40):
    p, q = list(p), list(q)
    n = max(len(p), len(q))
    p += [0] * (n - len(p))
    q += [0] * (n - len(q))
    return all(abs(F(a) - F(b)) < tol for a, b in zip(p, q))


@pytest.mark.parametrize(
    ("name", "num", "den"),
    [
        ("backward_euler", [1], [1, -1]),
        ("trapezoid", [1, F(1, 2)], [1, F(-1, 2)]),
        # the (2,3) Padé approximant of e^z (Ehle 1969; HNW II, Sec. IV.5)
        ("radau_iia5", [1, F(2, 5), F(1, 20)], [1, F(-3, 5), F(3, 20), F(-1, 60)]),
    ],
)
def test_known_stability_functions(name, num, den):
    got_num, got_den = theory.stability_function(get(name))
    assert _close(got_num, num) and _close(got_den, den), f"R={got_num}/{got_den} [{name}]"


def test_sdirk2_stability_function():
    """2-stage SDIRK with b = (1-γ, γ): R(z) = (1 + (1-2γ)z)/(1 - γz)² (HNW II, IV.6)."""
    t = get("sdirk2")
    g = t.sdirk_gamma
    num, den = theory.stability_function(t)
    assert _close(num, [1, 1 - 2 * g, 0]) and _close(den, [1, -2 * g, g * g])


# ------------------------------------------------------------------------------- A/L stability


@pytest.mark.parametrize("name", L_STABLE)
def test_l_stable_methods(name):
    t = get(name)
    a, l_ = theory.is_a_stable(t), theory.is_l_stable(t)
    assert a and a.condition is None and "Routh-Hurwitz" in a.reason, str(a)
    assert l_ and l_.r_inf == 0, str(l_)


@pytest.mark.parametrize("name", TABLEAUS.names())
def test_stability_words_in_descriptions_are_proven(name):
    """A description that says "L-stable" (or "A-stable") makes a claim the proof must back;
    "not L-stable" must be refuted."""
    import re

    t = get(name)
    says_l = re.search(r"(?<!not )\bL-stable", t.description) is not None
    says_a = re.search(r"(?<!not )\bA-stable", t.description) is not None
    if says_l:
        assert theory.is_l_stable(t), f"description={t.description!r}: {theory.is_l_stable(t)}"
    if says_a:
        assert theory.is_a_stable(t), f"description={t.description!r}: {theory.is_a_stable(t)}"
    if "not L-stable" in t.description:
        assert not theory.is_l_stable(t)
    assert says_l or says_a or t.explicit, f"implicit method without a stability claim [{name}]"


def test_trapezoid_is_a_stable_but_not_l_stable():
    t = get("trapezoid")
    a, l_ = theory.is_a_stable(t), theory.is_l_stable(t)
    assert a and "E(y) ≡ 0" in a.reason, str(a)
    assert not l_ and l_.condition == "r_inf" and l_.r_inf == -1, str(l_)


@pytest.mark.parametrize("name", EXPLICIT)
def test_explicit_methods_are_not_a_stable(name):
    t = get(name)
    a = theory.is_a_stable(t)
    assert not a and a.condition == "bounded" and a.r_inf is None, str(a)
    # the witness is real: |R(iy)| > 1 there, checked independently
    assert a.witness_y is not None and a.witness_abs_r > 1
    assert abs(theory.stability_value(t, 1j * a.witness_y)) > 1
    assert not theory.is_l_stable(t)


def _one_stage(name, a):
    return ButcherTableau(name=name, c=[a], A=[[a]], b=[1], order=1)


def test_theta_method_below_one_half_fails_on_the_imaginary_axis():
    """θ-method y1 = y0 + h f(y0 + θ(y1 - y0)): A-stable iff θ >= 1/2 (HNW II, IV.3)."""
    assert theory.is_a_stable(_one_stage("theta_half", F(1, 2)))
    bad = theory.is_a_stable(_one_stage("theta_2_5", F(2, 5)))
    assert not bad and bad.condition == "imaginary_axis", str(bad)
    y = bad.witness_y
    assert abs((1 + 0.6j * y) / (1 - 0.4j * y)) > 1 and bad.witness_abs_r > 1


def test_pole_in_left_half_plane_is_found():
    """A = [[-1]]: R(z) = 1/(1 + z), a pole at z = -1."""
    bad = theory.is_a_stable(_one_stage("neg", -1))
    assert not bad and bad.condition == "poles" and "pole at z ≈ -1+0i" in bad.reason, str(bad)


def test_planted_gamma_breaks_l_stability():
    """Kværnø's 4/3 formulas with the γ of her 3/4 variant (the mix-up diffrax's source notes
    in another library): still order 4 and A-stable, but R(∞) ≈ 0.72, so not L-stable."""
    A = _kvaerno4(get("kvaerno3").sdirk_gamma)
    t = ButcherTableau(name="kvaerno4_wrong_gamma", c=[sum(r, F(0)) for r in A], A=A, b=A[4], order=4)
    assert theory.verify_tableau(t).main.proven == 4
    assert theory.is_a_stable(t)
    l_ = theory.is_l_stable(t)
    assert not l_ and l_.condition == "r_inf" and abs(float(l_.r_inf) - 0.7175246511) < 1e-9, str(l_)


def test_rounded_kvaerno_r_inf_is_zero_only_to_precision():
    """The 40-digit Kværnø tableaus have |R(∞)| ~ 1e-40 as exact rationals: L-stable to
    their precision, and the verdict says so. The same closed forms with γ cut to 8 digits,
    given as exact Fractions, keep order 3 and A-stability but are not L-stable."""
    l_ = theory.is_l_stable(get("kvaerno3"))
    assert l_ and "within their precision" in l_.reason, str(l_)
    A = _kvaerno3(F(round(get("kvaerno3").sdirk_gamma * 10**8), 10**8))
    rough = ButcherTableau(name="kvaerno3_8_digits", c=[sum(r, F(0)) for r in A], A=A, b=A[-1], order=3)
    assert theory.verify_tableau(rough).main.proven == 3
    assert theory.is_a_stable(rough)
    bad = theory.is_l_stable(rough)
    assert not bad and bad.condition == "r_inf" and 0 < abs(bad.r_inf) < 1e-6, str(bad)


# ------------------------------------------------------------------------------- intervals


def test_rk4_intervals_against_closed_forms():
    """RK4: R(x) = 1 at the real root of x³ + 4x² + 12x + 24 (≈ -2.7853, HNW I, Sec. IV.2);
    |R(iy)|² = 1 - y⁶/72 + y⁸/576, so the imaginary interval is |y| <= 2√2."""
    roots = np.roots([1, 4, 12, 24])
    x0 = float(next(r.real for r in roots if abs(r.imag) < 1e-12))
    lo, hi = theory.real_stability_interval(get("rk4"))
    assert hi == 0 and abs(lo - x0) < 1e-12, f"real interval=({lo}, {hi}), but should be ({x0}, 0)"
    assert abs(lo + 2.785293563) < 1e-9
    assert theory.imaginary_stability_interval(get("rk4")) == pytest.approx((-2 * math.sqrt(2), 2 * math.sqrt(2)), abs=1e-12)


def test_low_order_intervals():
    """Euler and every 2-stage order-2 method: [-2, 0] on the real axis and nothing of the
    imaginary axis (|1 + iy| > 1); Kutta 3: |R(iy)|² = 1 - y⁴/12 + y⁶/36, so |y| <= √3."""
    for name in ("euler", "midpoint", "heun", "ralston"):
        assert theory.real_stability_interval(get(name)) == pytest.approx((-2, 0), abs=1e-14), name
        assert theory.imaginary_stability_interval(get(name)) == (0.0, 0.0), name
    assert theory.imaginary_stability_interval(get("kutta3"))[1] == pytest.approx(math.sqrt(3), abs=1e-12)


@pytest.mark.parametrize("name", ["dopri5", "tsit5", "dop853"])
def test_high_order_real_interval_against_sampling(name):
    """Independent float check: the first sign change of |R(x)| - 1 on a fine grid."""
    t = get(name)
    lo, _ = theory.real_stability_interval(t)
    x = np.linspace(-8, -1e-3, 800001)
    bad = x[np.abs(theory.stability_value(t, x)) > 1]
    assert abs(lo - bad.max()) < 2e-5, f"interval starts at {lo}, sampling at {bad.max()} [{name}]"


def test_dopri5_real_interval():
    """About -3.3 in the literature (HNW I, Sec. IV.2, stability domain of DOPRI5)."""
    lo, _ = theory.real_stability_interval(get("dopri5"))
    assert -3.31 < lo < -3.30, f"lo={lo}"


@pytest.mark.parametrize("name", IMPLICIT)
def test_a_stable_methods_have_unbounded_intervals(name):
    t = get(name)
    assert theory.real_stability_interval(t) == (-math.inf, 0.0)
    assert theory.imaginary_stability_interval(t) == (-math.inf, math.inf)


def test_stability_properties_summary_and_speed():
    t0 = time.perf_counter()
    props = {n: theory.stability_properties(t) for n, t in TABLEAUS.items()}
    elapsed = time.perf_counter() - t0
    assert elapsed < 5, f"stability_properties of all tableaus took {elapsed:.1f}s, but should take < 5 s"
    for n, p in props.items():
        want_l = n in L_STABLE
        want_a = want_l or n == "trapezoid"
        assert (p.a_stable, p.l_stable) == (want_a, want_l), f"{n}: A={p.a_stable}, L={p.l_stable}"
        assert p.stiffly_accurate == get(n).stiffly_accurate
        d = p.as_dict()
        assert d["name"] == n and d["a_stable"] == want_a and len(d["real_interval"]) == 2
    assert props["trapezoid"].r_inf == -1 and props["rk4"].r_inf is None and props["radau_iia5"].r_inf == 0


# ------------------------------------------------------------------------------- regions


def test_stability_region_grid():
    g = theory.stability_region(get("rk4"), re=(-4, 1), im=(-3, 3), n=(51, 31))
    assert g.abs_r.shape == (31, 51) and g.re[0] == -4 and g.im[-1] == 3
    z = g.re[7] + 1j * g.im[11]
    assert g.abs_r[11, 7] == pytest.approx(abs(1 + z + z**2 / 2 + z**3 / 6 + z**4 / 24), rel=1e-13)
    # backward Euler: |R| <= 1 outside the disc |z - 1| < 1
    be = theory.stability_region(get("backward_euler"), n=41)
    zz = be.re[None, :] + 1j * be.im[:, None]
    np.testing.assert_array_equal(be.abs_r <= 1 + 1e-15, np.abs(zz - 1) >= 1 - 1e-15)


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [(dict(n=1), r"n=1; expected an int >= 2"), (dict(re=(2, -6)), r"re=\(2, -6\); expected finite low < high"),
     (dict(im="wide"), r"im='wide'; expected a pair")],
)
def test_stability_region_rejects_bad_input(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        theory.stability_region(get("rk4"), **kwargs)


def test_stability_boundary():
    """RK4: one closed curve on which |R| = 1 (to rounding, after the Newton polish), leftmost
    at the real interval's end; deterministic."""
    t = get("rk4")
    lines = theory.stability_boundary(t, n=301)
    assert len(lines) == 1 and np.allclose(lines[0][0], lines[0][-1]), f"{len(lines)} curves"
    pts = lines[0]
    err = np.abs(np.abs(theory.stability_value(t, pts[:, 0] + 1j * pts[:, 1])) - 1)
    assert err.max() < 1e-12, f"max ||R| - 1| = {err.max()}"
    assert pts[:, 0].min() == pytest.approx(theory.real_stability_interval(t)[0], abs=1e-3)
    again = theory.stability_boundary(t, n=301)
    assert all(np.array_equal(a, b) for a, b in zip(lines, again))


def test_trapezoid_boundary_is_the_imaginary_axis():
    lines = theory.stability_boundary(get("trapezoid"), n=101)
    pts = np.concatenate(lines)
    assert np.abs(pts[:, 0]).max() < 1e-9 and pts[:, 1].min() == -4 and pts[:, 1].max() == 4
