"""The shipped implicit Runge--Kutta tableaus (DIRK, SDIRK, ESDIRK and Radau IIA).

Each entry is data plus a citation; its claimed orders (main, embedded, dense) are proven
by :func:`odeverify.tableaus.theory.verify_tableau` and its linear stability (A-/L-stability)
by :func:`odeverify.tableaus.theory.stability_properties` in the tests
(``tests/test_tableaus_implicit.py``). Registered into :data:`odeverify.tableaus.TABLEAUS`
on import, after the explicit ones.

Irrational coefficients are 40-significant-digit decimal strings (the tableau is then
inexact with ``digits == 40`` and every order condition is checked to that precision):

- ``sdirk2`` and ``radau_iia5`` are closed forms in √2 and √6, evaluated to 40 digits.
- ``kvaerno3`` and ``kvaerno4`` are Kværnø's closed forms in γ (BIT 44 (2004), methods
  3/2 and 4/3), with γ the root of the L-stability condition R(∞) = 0:
  6γ³ - 18γ² + 9γ - 1 = 0 (γ ≈ 0.4358665215) and 24γ⁴ - 96γ³ + 72γ² - 16γ + 1 = 0
  (γ ≈ 0.5728160625). The tests check that γ solves its polynomial to 40 digits.
- ``kvaerno5``: the paper prints 17 decimals (γ = 0.26 and a31 = 0.13 chosen). The
  40-digit values are the unique nearby solution (Gauss--Newton in 80-digit arithmetic,
  Jacobian of full rank 17, residual 1e-81) of: order 5 of the last row, order 4 of the
  sixth row (the embedded method), stage order 2 (Σ_j a_ij c_j = c_i²/2) and R(∞) = 0,
  with a62 = a72 = 0 as published. Every published 17-decimal value is these values
  truncated (not rounded) toward zero; the tests check |published - ours| < 1e-17.

Conventions as in :mod:`.explicit`: ``b`` propagates, ``b_hat`` is the embedded solution
(``b - b_hat`` the error estimate), ``dense.P[i][j-1]`` the θ^j coefficient of ``b_i(θ)``.
Kværnø's embedded methods are the penultimate stage (both it and the last stage have
c = 1), so ``b_hat`` is the penultimate row of A padded with a zero.
"""
from __future__ import annotations

from ._tableau import ButcherTableau, DenseOutput

__all__ = [
    "BACKWARD_EULER",
    "KVAERNO3",
    "KVAERNO4",
    "KVAERNO5",
    "RADAU_IIA5",
    "SDIRK2",
    "SHIPPED",
    "TRAPEZOID",
]

_KVAERNO_CITATION = (
    "A. Kværnø, Singly diagonally implicit Runge-Kutta methods with an explicit first stage,"
    " BIT Numer. Math. 44 (2004) 489-502"
)

BACKWARD_EULER = ButcherTableau(
    name="backward_euler",
    c=[1],
    A=[[1]],
    b=[1],
    order=1,
    citation=(
        "E. Hairer and G. Wanner, Solving Ordinary Differential Equations II, 2nd ed. (1996),"
        " Sec. IV.3 (implicit Euler: R(z) = 1/(1 - z))."
    ),
    description="Backward (implicit) Euler: order 1, 1 stage, SDIRK (γ = 1), stiffly accurate, L-stable, not FSAL.",
)

TRAPEZOID = ButcherTableau(
    name="trapezoid",
    c=[0, 1],
    A=[[0, 0], ["1/2", "1/2"]],
    b=["1/2", "1/2"],
    order=2,
    citation=(
        "J. Crank and P. Nicolson, A practical method for numerical evaluation of solutions of"
        " partial differential equations of the heat-conduction type, Proc. Camb. Phil. Soc. 43"
        " (1947) 50-67; Hairer & Wanner, Solving ODEs II (1996), Sec. IV.3 (trapezoidal rule,"
        " R(z) = (1 + z/2)/(1 - z/2): A-stable, |R(∞)| = 1)."
    ),
    description=(
        "Trapezoidal rule (Crank-Nicolson): order 2, 2 stages, ESDIRK (γ = 1/2), FSAL, stiffly"
        " accurate, A-stable but not L-stable."
    ),
)

# γ = 1 - √2/2 and 1 - γ = √2/2 (40 digits)
_SDIRK2_G = "0.2928932188134524755991556378951509607152"
_SDIRK2_1MG = "0.7071067811865475244008443621048490392848"
SDIRK2 = ButcherTableau(
    name="sdirk2",
    c=[_SDIRK2_G, 1],
    A=[[_SDIRK2_G, 0], [_SDIRK2_1MG, _SDIRK2_G]],
    b=[_SDIRK2_1MG, _SDIRK2_G],
    order=2,
    citation=(
        "R. Alexander, Diagonally implicit Runge-Kutta methods for stiff O.D.E.'s, SIAM J. Numer."
        " Anal. 14 (1977) 1006-1021 (2-stage, γ = 1 - √2/2); Hairer & Wanner, Solving ODEs II"
        " (1996), Sec. IV.6."
    ),
    description=(
        "2-stage SDIRK (Alexander): order 2, SDIRK γ = 1 - √2/2, stiffly accurate, L-stable, not"
        " FSAL, no embedded estimate (none is standard)."
    ),
)

# Kværnø 3(2): γ is the root near 0.436 of 6γ³ - 18γ² + 9γ - 1 = 0; a_ij from the paper's
# closed forms (a31 = (-4γ² + 6γ - 1)/(4γ), a32 = (1 - 2γ)/(4γ), a41 = (6γ - 1)/(12γ),
# a42 = -1/((24γ - 12)γ), a43 = (-6γ² + 6γ - 1)/(6γ - 3)); c = (0, 2γ, 1, 1).
_K3_G = "0.4358665215084589994160194511935568425293"
_K3_ROW3 = ["0.4905633884217805706284679584665446902307", "0.07357009006976042995551259033989846723997", _K3_G]
_K3_B = [
    "0.3088099699767465233481624698867005109200",
    "1.490563388421780570628467958466544690231",
    "-1.235239879906986093392649879546802043680",
    _K3_G,
]
KVAERNO3 = ButcherTableau(
    name="kvaerno3",
    c=[0, "0.8717330430169179988320389023871136850586", 1, 1],
    A=[[0, 0, 0, 0], [_K3_G, _K3_G, 0, 0], _K3_ROW3 + [0], _K3_B],
    b=_K3_B,
    b_hat=_K3_ROW3 + [0],
    order=3,
    embedded_order=2,
    citation=_KVAERNO_CITATION + " (method 3/2; γ from R(∞) = 0, 40-digit values of the closed forms).",
    description=(
        "Kværnø ESDIRK 3(2): order 3(2), 4 stages, ESDIRK γ ≈ 0.43587, FSAL, stiffly accurate,"
        " L-stable, no interpolant."
    ),
)

# Kværnø 4(3): γ is the root near 0.573 of 24γ⁴ - 96γ³ + 72γ² - 16γ + 1 = 0 (the "4/3"
# method that advances with the last stage); c = (0, 2γ, c3, 1, 1).
_K4_G = "0.5728160624821348554080013849767683409315"
_K4_ROW4 = [
    "0.2626032902526958180813003558337580500634",
    "-0.3119043274205631530234673448865229892953",
    "0.4764849746857324795341656040759965983003",
    _K4_G,
]
_K4_B = [
    "0.1972165483128349958375502869990879570070",
    "0.1768437839063721860318241625991435512418",
    "0.8154421813508384473981825452096801315900",
    "-0.7623185760521804846755583797846799807703",
    _K4_G,
]
KVAERNO4 = ButcherTableau(
    name="kvaerno4",
    c=[0, "1.145632124964269710816002769953536681863", "0.5971049876523114929233002620979718110872", 1, 1],
    A=[
        [0, 0, 0, 0, 0],
        [_K4_G, _K4_G, 0, 0, 0],
        ["0.1672354620272107507511591133648429602705", "-0.1429465368570341132358602362436394901147", _K4_G, 0, 0],
        _K4_ROW4 + [0],
        _K4_B,
    ],
    b=_K4_B,
    b_hat=_K4_ROW4 + [0],
    order=4,
    embedded_order=3,
    citation=_KVAERNO_CITATION + " (method 4/3; γ from R(∞) = 0, 40-digit values of the closed forms).",
    description=(
        "Kværnø ESDIRK 4(3): order 4(3), 5 stages, ESDIRK γ ≈ 0.57282, FSAL, stiffly accurate,"
        " L-stable, no interpolant."
    ),
)

# Kværnø 5(4): γ = 0.26, a31 = 0.13 exact; the rest refined to 40 digits (module docstring).
_K5_G = "13/50"
_K5_ROW6 = [
    "0.1385564023126822495054973091161581456582",
    0,
    "-0.04245337201752043098884399725982168512523",
    "0.02446657898003141965963581513879101305561",
    "0.6194303907248067618237108730048725264114",
    _K5_G,
]
_K5_B = [
    "0.1365975117764029144062783844146127033921",
    0,
    "-0.05496908796538376712487773114648630009105",
    "-0.04118626728321046868299776958296295741592",
    "0.6299330489901640319161060392667246534806",
    "0.06962479448202728948549107704811190063421",
    _K5_G,
]
KVAERNO5 = ButcherTableau(
    name="kvaerno5",
    c=[
        0,
        "13/25",
        "1.230333209967908096317136048791526815405",
        "0.8957659843500759029060455717495554776153",
        "0.4363936098586475852779768695817865330279",
        1,
        1,
    ],
    A=[
        [0, 0, 0, 0, 0, 0, 0],
        [_K5_G, _K5_G, 0, 0, 0, 0, 0],
        ["13/100", "0.8403332099679080963171360487915268154051", _K5_G, 0, 0, 0, 0],
        [
            "0.2237196147832050559163143898290529441991",
            "0.4767553231979969983278927937270874162429",
            "-0.06470895363112615133816161180658488282681",
            _K5_G,
            0,
            0,
            0,
        ],
        [
            "0.1664856432324832152535151725360430044452",
            "0.1045001884159172041151167240328967362455",
            "0.03631482272098715161651993758285203251909",
            "-0.1309070445107399857071749645700052401819",
            _K5_G,
            0,
            0,
        ],
        _K5_ROW6 + [0],
        _K5_B,
    ],
    b=_K5_B,
    b_hat=_K5_ROW6 + [0],
    order=5,
    embedded_order=4,
    citation=_KVAERNO_CITATION + (
        " (method 5/4, published to 17 decimals; refined here to 40 digits as the unique"
        " solution of the paper's defining conditions near them)."
    ),
    description=(
        "Kværnø ESDIRK 5(4): order 5(4), 7 stages, ESDIRK γ = 0.26, FSAL, stiffly accurate,"
        " L-stable, no interpolant."
    ),
)

# Radau IIA, 3 stages: c = ((4 - √6)/10, (4 + √6)/10, 1), collocation; b = last row of A.
_RADAU_B = ["0.3764030627004672750500754423692807946676", "0.5124858261884216138388134465196080942213", "1/9"]
RADAU_IIA5 = ButcherTableau(
    name="radau_iia5",
    c=["0.1550510257216821901802715925294108608034", "0.6449489742783178098197284074705891391966", 1],
    A=[
        # (88 - 7√6)/360, (296 - 169√6)/1800, (-2 + 3√6)/225
        ["0.1968154772236604258683861429918298896007", "-0.06553542585019838810852278256960869180125",
         "0.02377097434822015242040823210718966300399"],
        # (296 + 169√6)/1800, (88 + 7√6)/360, (-2 - 3√6)/225
        ["0.3944243147390872769974116714584975806901", "0.2920734116652284630205027458970589992882",
         "-0.04154875212599793019818600988496744078177"],
        # (16 - √6)/36, (16 + √6)/36, 1/9
        _RADAU_B,
    ],
    b=_RADAU_B,
    order=5,
    # The collocation polynomial u(t0 + θh) = y0 + h Σ_j k_j ∫_0^θ l_j(τ) dτ (l_j the Lagrange
    # basis on c): b_1(θ) = (1/3 + √6/2)θ + (2/3 - 13√6/12)θ² + (5√6/9 - 5/9)θ³,
    # b_2(θ) = (1/3 - √6/2)θ + (2/3 + 13√6/12)θ² - (5√6/9 + 5/9)θ³, b_3(θ) = θ/3 - 4θ²/3 + 10θ³/9.
    # Stage order 3 makes it an interpolant of order 3 (error O(h⁴), HNW II, Sec. IV.5).
    dense=DenseOutput(
        P=[
            ["1.558078204724922382431975370686279029316", "-1.986947221348442939713724414264715674630",
             "0.8052720793239878323318244859477174399811"],
            ["-0.8914115380582557157653087040196123626496", "3.320280554681776273047057747598049007963",
             "-1.916383190435098943442935597058828551092"],
            ["1/3", "-4/3", "10/9"],
        ],
        order=3,
    ),
    citation=(
        "B. L. Ehle, On Padé approximations to the exponential function and A-stable methods for"
        " the numerical solution of initial value problems, Report CSRR 2010, Univ. Waterloo"
        " (1969); Hairer & Wanner, Solving ODEs II (1996), Sec. IV.5, Table 5.6 (Radau IIA of"
        " order 5) and Sec. IV.8 (RADAU5, collocation dense output)."
    ),
    description=(
        "Radau IIA (3 stages): order 5, stage order 3, fully implicit, stiffly accurate, L-stable,"
        " not FSAL, collocation interpolant of order 3."
    ),
)

SHIPPED: tuple[ButcherTableau, ...] = (
    BACKWARD_EULER,
    TRAPEZOID,
    SDIRK2,
    KVAERNO3,
    KVAERNO4,
    KVAERNO5,
    RADAU_IIA5,
)


def _register() -> None:
    from . import TABLEAUS

    for t in SHIPPED:
        if t.name not in TABLEAUS:
            TABLEAUS.register(t.name, t)


_register()
