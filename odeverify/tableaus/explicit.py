"""The shipped explicit Runge--Kutta tableaus.

Each entry is data plus a citation; its claimed orders (main, embedded, auxiliary, dense)
are proven by :func:`odeverify.tableaus.theory.verify_tableau` in the tests. Registered
into :data:`odeverify.tableaus.TABLEAUS` on import.

Conventions: ``b`` are the weights of the propagated solution, ``b_hat`` those of the
embedded solution (``b - b_hat`` is the error estimate), ``dense.P[i][j-1]`` the θ^j
coefficient of ``b_i(θ)``.
"""
from __future__ import annotations

from fractions import Fraction as F

from . import _dop853_data as _d853
from ._tableau import ButcherTableau, DenseOutput, hairer_dense_output

__all__ = [
    "BOSH3",
    "DOP853",
    "DOPRI5",
    "EULER",
    "FEHLBERG2",
    "HEUN",
    "KUTTA3",
    "MIDPOINT",
    "RALSTON",
    "RK4",
    "RK4_38",
    "TSIT5",
    "SHIPPED",
]

EULER = ButcherTableau(
    name="euler",
    c=[0],
    A=[[]],
    b=[1],
    order=1,
    citation="L. Euler, Institutiones calculi integralis, vol. 1, 1768.",
    description="Explicit (forward) Euler: order 1, 1 stage, not FSAL, no interpolant.",
)

MIDPOINT = ButcherTableau(
    name="midpoint",
    c=[0, "1/2"],
    A=[[], ["1/2"]],
    b=[0, 1],
    order=2,
    citation="C. Runge, Über die numerische Auflösung von Differentialgleichungen, Math. Ann. 46 (1895) 167-178.",
    description="Explicit midpoint rule: order 2, 2 stages, not FSAL, no interpolant.",
)

HEUN = ButcherTableau(
    name="heun",
    c=[0, 1],
    A=[[], [1]],
    b=["1/2", "1/2"],
    b_hat=[1, 0],
    order=2,
    embedded_order=1,
    citation=(
        "K. Heun, Neue Methode zur approximativen Integration der Differentialgleichungen einer"
        " unabhängigen Veränderlichen, Z. Math. Phys. 45 (1900) 23-38; embedded Euler as in"
        " diffrax Heun / torchdiffeq adaptive_heun."
    ),
    description="Heun's method (explicit trapezoidal) with embedded Euler: order 2(1), 2 stages, not FSAL, no interpolant.",
)

RALSTON = ButcherTableau(
    name="ralston",
    c=[0, "2/3"],
    A=[[], ["2/3"]],
    b=["1/4", "3/4"],
    order=2,
    citation="A. Ralston, Runge-Kutta methods with minimum error bounds, Math. Comp. 16 (1962) 431-437.",
    description="Ralston's second-order method (minimum error bound): order 2, 2 stages, not FSAL, no interpolant.",
)

KUTTA3 = ButcherTableau(
    name="kutta3",
    c=[0, "1/2", 1],
    A=[[], ["1/2"], [-1, 2]],
    b=["1/6", "2/3", "1/6"],
    order=3,
    citation=(
        "W. Kutta, Beitrag zur näherungsweisen Integration totaler Differentialgleichungen,"
        " Z. Math. Phys. 46 (1901) 435-453."
    ),
    description="Kutta's third-order method: order 3, 3 stages, not FSAL, no interpolant.",
)

RK4 = ButcherTableau(
    name="rk4",
    c=[0, "1/2", "1/2", 1],
    A=[[], ["1/2"], [0, "1/2"], [0, 0, 1]],
    b=["1/6", "1/3", "1/3", "1/6"],
    order=4,
    citation="W. Kutta, Z. Math. Phys. 46 (1901) 435-453 (the classical Runge-Kutta method).",
    description="Classical Runge-Kutta: order 4, 4 stages, not FSAL, no interpolant.",
)

RK4_38 = ButcherTableau(
    name="rk4_38",
    c=[0, "1/3", "2/3", 1],
    A=[[], ["1/3"], ["-1/3", 1], [1, -1, 1]],
    b=["1/8", "3/8", "3/8", "1/8"],
    order=4,
    citation="W. Kutta, Z. Math. Phys. 46 (1901) 435-453 (the 3/8 rule; torchdiffeq's 'rk4').",
    description="Kutta's 3/8 rule: order 4, 4 stages, not FSAL, no interpolant.",
)

_BOSH3_B = ["2/9", "1/3", "4/9", 0]
BOSH3 = ButcherTableau(
    name="bosh3",
    c=[0, "1/2", "3/4", 1],
    A=[[], ["1/2"], [0, "3/4"], _BOSH3_B[:3]],
    b=_BOSH3_B,
    b_hat=["7/24", "1/4", "1/3", "1/8"],
    order=3,
    embedded_order=2,
    # cubic Hermite interpolation through (y0, f0) and (y1, f1): Hairer's nested form with
    # no d rows; f1 is the FSAL stage 3.
    dense=hairer_dense_output(_BOSH3_B, [], fsal_stage=3, order=3),
    citation=(
        "P. Bogacki and L. F. Shampine, A 3(2) pair of Runge-Kutta formulas, Appl. Math."
        " Lett. 2(4) (1989) 321-325. Dense output: cubic Hermite interpolation."
    ),
    description="Bogacki-Shampine: order 3(2), 4 stages, FSAL, cubic Hermite interpolant of order 3.",
)

FEHLBERG2 = ButcherTableau(
    name="fehlberg2",
    c=[0, "1/2", 1],
    A=[[], ["1/2"], ["1/256", "255/256"]],
    # torchdiffeq/diffrax propagate the 2nd-order weights (local extrapolation); Fehlberg's
    # own RKF1(2) propagates the 1st-order ones, which are FSAL (= last row of A).
    b=["1/512", "255/256", "1/512"],
    b_hat=["1/256", "255/256", 0],
    order=2,
    embedded_order=1,
    citation=(
        "E. Fehlberg, Low-order classical Runge-Kutta formulas with stepsize control and their"
        " application to some heat transfer problems, NASA TR R-315 (1969): the RKF1(2) pair,"
        " with the weights propagated as in torchdiffeq/diffrax 'fehlberg2' (c_sol, c_error)."
    ),
    description=(
        "Fehlberg 2(1) (RKF1(2) with local extrapolation): order 2(1), 3 stages, not FSAL"
        " (the order-1 weights are), no interpolant."
    ),
)

_DOPRI5_B = ["35/384", 0, "500/1113", "125/192", "-2187/6784", "11/84", 0]
DOPRI5 = ButcherTableau(
    name="dopri5",
    c=[0, "1/5", "3/10", "4/5", "8/9", 1, 1],
    A=[
        [],
        ["1/5"],
        ["3/40", "9/40"],
        ["44/45", "-56/15", "32/9"],
        ["19372/6561", "-25360/2187", "64448/6561", "-212/729"],
        ["9017/3168", "-355/33", "46732/5247", "49/176", "-5103/18656"],
        _DOPRI5_B[:6],
    ],
    b=_DOPRI5_B,
    b_hat=["5179/57600", 0, "7571/16695", "393/640", "-92097/339200", "187/2100", "1/40"],
    order=5,
    embedded_order=4,
    dense=hairer_dense_output(
        _DOPRI5_B,
        [
            [
                "-12715105075/11282082432",
                0,
                "87487479700/32700410799",
                "-10690763975/1880347072",
                "701980252875/199316789632",
                "-1453857185/822651844",
                "69997945/29380423",
            ]
        ],
        fsal_stage=6,
        order=4,
    ),
    citation=(
        "J. R. Dormand and P. J. Prince, A family of embedded Runge-Kutta formulae, J. Comput."
        " Appl. Math. 6(1) (1980) 19-26. Dense output: L. F. Shampine, Some practical"
        " Runge-Kutta formulas, Math. Comp. 46 (1986) 135-150, in the form of E. Hairer's"
        " DOPRI5 code (d1..d7; Hairer, Nørsett & Wanner, Solving ODEs I, 1993, Sec. II.6)."
    ),
    description="Dormand-Prince: order 5(4), 7 stages, FSAL, quartic interpolant of order 4 (Shampine/Hairer).",
)

# Tsitouras 5(4). Coefficients: Ch. Tsitouras (2011); the high-precision decimals are those
# of OrdinaryDiffEq.jl (lib/OrdinaryDiffEqTsit5/src/tsit_tableaus.jl, BigFloat branch).
_TSIT5_B = [
    ".9646076681806522951816731316512876333711995238157997181903319145764851595234062815396e-1",
    "1/100",
    ".4798896504144995747752495322905965199130404621990332488332634944254542060153074523509",
    "1.379008574103741893192274821856872770756462643091360525934940067397245698027561293331",
    "-3.290069515436080679901047585711363850115683290894936158531296799594813811049925401677",
    "2.324710524099773982415355918398765796109060233222962411944060046314465391054716027841",
    0,
]
TSIT5 = ButcherTableau(
    name="tsit5",
    c=[
        0,
        "161/1000",
        "327/1000",
        "9/10",
        ".9800255409045096857298102862870245954942137979563024768854764293221195950761080302604",
        1,
        1,
    ],
    A=[
        [],
        ["161/1000"],
        [
            "-.8480655492356988544426874250230774675121177393430391537369234245294192976164141156943e-2",
            ".3354806554923569885444268742502307746751211773934303915373692342452941929761641411569",
        ],
        [
            "2.897153057105493432130432594192938764924887287701866490314866693455023795137503079289",
            "-6.359448489975074843148159912383825625952700647415626703305928850207288721235210244366",
            "4.362295432869581411017727318190886861027813359713760212991062156752264926097707165077",
        ],
        [
            "5.325864828439256604428877920840511317836476253097040101202360397727981648835607691791",
            "-11.74888356406282787774717033978577296188744178259862899288666928009020615663593781589",
            "7.495539342889836208304604784564358155658679161518186721010132816213648793440552049753",
            "-.9249506636175524925650207933207191611349983406029535244034750452930469056411389539635e-1",
        ],
        [
            "5.861455442946420028659251486982647890394337666164814434818157239052507339770711679748",
            "-12.92096931784710929170611868178335939541780751955743459166312250439928519268343184452",
            "8.159367898576158643180400794539253485181918321135053305748355423955009222648673734986",
            "-.7158497328140099722453054252582973869127213147363544882721139659546372402303777878835e-1",
            "-.2826905039406838290900305721271224146717633626879770007617876201276764571291579142206e-1",
        ],
        _TSIT5_B[:6],
    ],
    b=_TSIT5_B,
    b_hat=[
        ".9468075576583945807478876255758922856117527357724631226139574065785592789071067303271e-1",
        ".9183565540343253096776363936645313759813746240984095238905939532922955247253608687270e-2",
        ".4877705284247615707855642599631228241516691959761363774365216240304071651579571959813",
        "1.234297566930478985655109673884237654035539930748192848315425833500484878378061439761",
        "-2.707712349983525454881109975059321670689605166938197378763992255714444407154902012702",
        "1.866628418170587035753719399566211498666255505244122593996591602841258328965767580089",
        "1/66",
    ],
    order=5,
    embedded_order=4,
    # b_i(θ) = Σ_j P[i][j-1] θ^j: Tsitouras (2011) publishes the b_i(θ) in factored form
    # (e.g. b_7(θ) = 2.5 θ²(θ - 1)(θ - 0.6)); expanded as in OrdinaryDiffEq.jl's Tsit5Interp.
    # Exact by construction: the θ coefficient of b_1 is 1 (consistency; the expansion of the
    # rounded factors gives 0.99999999999999997...), b_2(θ) = 0.1017 θ²(θ² - 2.19665...θ
    # + 1.29498...) = 0.1317θ² - 0.2234θ³ + 0.1017θ⁴ and b_7(θ) = 1.5θ² - 4θ³ + 2.5θ⁴.
    dense=DenseOutput(
        P=[
            [1, "-2.763706197274825911336735930481400260916070804192", "2.91325546182191274375068099306808", "-1.0530884977290216"],
            [0, "1317/10000", "-2234/10000", "1017/10000"],
            [0, "3.93029623689475152850687446709813398", "-5.94103387213150473470249202589458001", "2.490627285651252793"],
            [0, "-12.411077166933676983734381540685453484102414134010752", "30.3381886302823215981729903691836576", "-16.54810288924490272"],
            [0, "37.50931341651103919496903965334519631242339792120440212", "-88.1789048947664011014276693541209817", "47.37952196281928122"],
            [0, "-27.896526289197287805948263144598643896", "65.09189467479367152629021928716553658", "-34.87065786149660974"],
            [0, "3/2", -4, "5/2"],
        ],
        order=4,
    ),
    citation=(
        "Ch. Tsitouras, Runge-Kutta pairs of order 5(4) satisfying only the first column"
        " simplifying assumption, Comput. Math. Appl. 62(2) (2011) 770-775 (coefficients and"
        " interpolant); high-precision decimals from OrdinaryDiffEq.jl tsit_tableaus.jl."
    ),
    description="Tsitouras 5(4): order 5(4), 7 stages, FSAL, quartic interpolant of order 4 (Tsitouras 2011).",
)


def _dop853() -> ButcherTableau:
    s = 12
    b = _d853.dense_row(_d853.B, s)
    A = [_d853.dense_row(row, s) for row in _d853.A_ROWS]
    extra_A = [b] + [_d853.dense_row(row, s + 1 + m) for m, row in enumerate(_d853.EXTRA_A_ROWS)]
    dense = hairer_dense_output(
        b,
        [_d853.dense_row(row, s + 4) for row in _d853.D_ROWS],
        fsal_stage=s,  # stage 12 = f(t0 + h, y1)
        order=7,
        extra_c=_d853.C[s:],
        extra_A=extra_A,
    )
    return ButcherTableau(
        name="dop853",
        c=_d853.C[:s],
        A=A,
        b=b,
        b_err=_d853.dense_row(_d853.ER5, s),
        embedded_order=5,
        b_hat_aux=_d853.dense_row(_d853.BHH, s),
        aux_order=3,
        order=8,
        dense=dense,
        citation=(
            "J. R. Dormand and P. J. Prince, High order embedded Runge-Kutta formulae, J. Comput."
            " Appl. Math. 7 (1981) 67-75; E. Hairer, S. P. Nørsett and G. Wanner, Solving ODEs I,"
            " 2nd ed. (1993), Sec. II.10 (DOP853 with error estimators of orders 5 and 3 and a"
            " dense output of order 7). 30-digit constants from Hairer's dop853.f (also in scipy's"
            " dop853_coefficients.py)."
        ),
        description=(
            "Dormand-Prince 8(5,3): order 8 with embedded orders 5 and 3, 12 stages (not FSAL in"
            " the tableau: f(t0+h, y1) is the next step's first stage), degree-7 interpolant of"
            " order 7 with 4 extra stages (f(t0+h, y1) and 3 more)."
        ),
    )


#: Dormand-Prince 8(5,3). ``b_hat`` = b - er (Hairer's ``er1..er12``: err5 = h Σ er_i k_i,
#: so ``b - b_hat`` is exactly Hairer's 5th-order error estimate); ``b_hat_aux`` = Hairer's
#: ``bhh1..bhh3`` (err3 = y1 - h Σ bhh_i k_i). Both orders are proven by theory.verify_tableau.
DOP853 = _dop853()

SHIPPED: tuple[ButcherTableau, ...] = (
    EULER,
    MIDPOINT,
    HEUN,
    RALSTON,
    KUTTA3,
    RK4,
    RK4_38,
    BOSH3,
    FEHLBERG2,
    DOPRI5,
    TSIT5,
    DOP853,
)


def _register() -> None:
    from . import TABLEAUS

    for t in SHIPPED:
        if t.name not in TABLEAUS:
            TABLEAUS.register(t.name, t)


_register()
