"""Classic test problems: scalar and linear problems with closed forms, Kepler, Arenstorf,
Pleiades, Lotka-Volterra, Lorenz and the Brusselator.

Every right-hand side is written once against the Array API namespace ``xp`` (see
:class:`~odeverify.problems.Problem` for the contract). Closed forms are NumPy float64;
problems without one carry a published reference (with its source) or a cached
high-precision solve (``data/references.json``, written by ``make_references``).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from .. import _xp
from . import register
from ._reference_data import with_computed_references
from ._spec import Problem, Reference

HNW1 = (
    "E. Hairer, S. P. Norsett, G. Wanner, Solving Ordinary Differential Equations I: Nonstiff"
    " Problems, 2nd ed., Springer Series in Computational Mathematics 8, Springer, 1993"
)
GNI = (
    "E. Hairer, C. Lubich, G. Wanner, Geometric Numerical Integration, 2nd ed., Springer"
    " Series in Computational Mathematics 31, Springer, 2006"
)
BARI = (
    "F. Mazzia, C. Magherini, Test Set for Initial Value Problem Solvers, release 2.4,"
    " Department of Mathematics, University of Bari, 2008 (https://archimede.uniba.it/~testset/)"
)

#: problems whose references come from make_references (base problems, no computed refs)
COMPUTED_TARGETS: list[Problem] = []


# --------------------------------------------------------------------------- helpers


def _time(xp: Any, t: Any, y: Any) -> Any:
    """``t`` as an array of ``y``'s dtype (time is float64; the state keeps its dtype)."""
    if isinstance(t, (int, float)):
        return xp.asarray(float(t), dtype=y.dtype, device=_xp.device(y))
    return xp.astype(t, y.dtype)


def _register(problem: Problem, *, computed: bool = False) -> Problem:
    if computed:
        COMPUTED_TARGETS.append(problem)
        problem = with_computed_references(problem)
    return register(problem)


def _times(t: Any) -> np.ndarray:
    return np.asarray(t, dtype=np.float64)


# --------------------------------------------------------------------------- scalar problems


def _rhs_linear_scalar(xp, t, y, p):
    return p["lam"] * y


def _scalar_exp(lam: float, y0: float):
    def exact(t):
        return (y0 * np.exp(lam * _times(t)))[..., None]

    return exact


_register(Problem(
    name="exp_decay",
    rhs=_rhs_linear_scalar,
    y0=(1.0,),
    t_span=(0.0, 1.0),
    params={"lam": -1.0},
    exact=_scalar_exp(-1.0, 1.0),
    tags={"scalar", "linear", "autonomous", "nonstiff", "dissipative", "has_exact"},
    citation="G. Dahlquist, Convergence and stability in the numerical integration of ordinary"
    " differential equations, Math. Scand. 4 (1956) 33-53 (the test equation y' = lambda y)",
    description="Dahlquist test equation y' = -y, y(0) = 1, t in [0, 1]; y = exp(-t).",
))

_register(Problem(
    name="exp_growth",
    rhs=_rhs_linear_scalar,
    y0=(1.0,),
    t_span=(0.0, 1.0),
    params={"lam": 1.0},
    exact=_scalar_exp(1.0, 1.0),
    tags={"scalar", "linear", "autonomous", "nonstiff", "has_exact"},
    citation="G. Dahlquist, Math. Scand. 4 (1956) 33-53 (the test equation y' = lambda y)",
    description="y' = y, y(0) = 1, t in [0, 1]; y = exp(t) (errors grow with the solution).",
))


def _rhs_logistic(xp, t, y, p):
    return p["r"] * y * (1.0 - y / p["K"])


def _exact_logistic(t):
    t = _times(t)
    r, k, y0 = 1.0, 1.0, 0.1
    e = np.exp(r * t)
    return (k * y0 * e / (k + y0 * (e - 1.0)))[..., None]


_register(Problem(
    name="logistic",
    rhs=_rhs_logistic,
    y0=(0.1,),
    t_span=(0.0, 5.0),
    params={"r": 1.0, "K": 1.0},
    exact=_exact_logistic,
    tags={"scalar", "nonlinear", "autonomous", "nonstiff", "has_exact"},
    citation="P.-F. Verhulst, Notice sur la loi que la population suit dans son accroissement,"
    " Corresp. Math. Phys. 10 (1838) 113-121",
    description="Logistic growth y' = r y (1 - y/K), r = K = 1, y(0) = 0.1, t in [0, 5];"
    " y = K y0 e^{rt} / (K + y0 (e^{rt} - 1)).",
))


def _rhs_rational(xp, t, y, p):
    return -2.0 * xp.expand_dims(_time(xp, t, y), axis=-1) * y * y


def _exact_rational(t):
    t = _times(t)
    return (1.0 / (1.0 + t * t))[..., None]


_register(Problem(
    name="nonlinear_scalar_t",
    rhs=_rhs_rational,
    y0=(1.0,),
    t_span=(0.0, 2.0),
    exact=_exact_rational,
    tags={"scalar", "nonlinear", "time_dependent", "nonstiff", "has_exact"},
    citation="Bernoulli/Riccati equation y' = -2 t y^2 (separable); closed form y = 1/(1 + t^2)",
    description="y' = -2 t y^2, y(0) = 1, t in [0, 2]; y = 1/(1 + t^2). Nonlinear and"
    " time-dependent, so it separates Runge-Kutta methods of the same linear order.",
))


def _rhs_spiral(xp, t, y, p):
    tt = _time(xp, t, y)
    y1 = y[..., 0]
    y2 = y[..., 1]
    g = 1.0 - (y1 * y1 + y2 * y2)
    w = 1.0 + tt
    return xp.stack([g * y1 - w * y2, g * y2 + w * y1], axis=-1)


def _exact_spiral(t):
    t = _times(t)
    r0 = 0.5
    r = 1.0 / np.sqrt(1.0 + (1.0 / r0**2 - 1.0) * np.exp(-2.0 * t))
    theta = t + 0.5 * t * t
    return np.stack([r * np.cos(theta), r * np.sin(theta)], axis=-1)


_register(Problem(
    name="limit_cycle_t",
    rhs=_rhs_spiral,
    y0=(0.5, 0.0),
    t_span=(0.0, 3.0),
    exact=_exact_spiral,
    tags={"nonlinear", "time_dependent", "nonstiff", "oscillatory", "has_exact"},
    citation="Constructed in polar coordinates: r' = r (1 - r^2) (a Bernoulli equation),"
    " theta' = 1 + t",
    description="y1' = (1 - |y|^2) y1 - (1 + t) y2, y2' = (1 - |y|^2) y2 + (1 + t) y1,"
    " y(0) = (0.5, 0), t in [0, 3]; r = (1 + (1/r0^2 - 1) e^{-2t})^{-1/2},"
    " theta = t + t^2/2. A nonlinear, non-autonomous system with a closed form.",
))


# --------------------------------------------------------------------------- harmonic oscillator


def _rhs_harmonic(xp, t, y, p):
    w2 = p["omega"] ** 2
    return xp.stack([y[..., 1], -w2 * y[..., 0]], axis=-1)


def _exact_harmonic(t):
    t = _times(t)
    w = 1.0
    return np.stack([np.cos(w * t), -w * np.sin(w * t)], axis=-1)


_register(Problem(
    name="harmonic",
    rhs=_rhs_harmonic,
    y0=(1.0, 0.0),
    t_span=(0.0, 2.0 * math.pi),
    params={"omega": 1.0},
    exact=_exact_harmonic,
    invariants={"energy": lambda y: 0.5 * (y[..., 1] ** 2 + y[..., 0] ** 2)},
    tags={"linear", "autonomous", "nonstiff", "hamiltonian", "oscillatory", "periodic",
          "has_exact"},
    citation=GNI + ", Section I.1 (harmonic oscillator)",
    description="q' = p, p' = -omega^2 q, omega = 1, (q, p)(0) = (1, 0), one period"
    " t in [0, 2 pi]; q = cos t, p = -sin t.",
))


# --------------------------------------------------------------------------- linear systems


def _rhs_matrix(xp, t, y, p):
    return y @ xp.matrix_transpose(p["A"])


def _random_orthogonal(rng: np.random.Generator, n: int) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((n, n)))
    return q * np.sign(np.diag(r))


def linear_problem(
    eigenvalues: Sequence[complex],
    *,
    seed: int,
    name: str | None = None,
    t_span: tuple[float, float] = (0.0, 1.0),
    y0: Sequence[float] | None = None,
    stiff: bool | None = None,
) -> Problem:
    """A linear system y' = A y whose matrix has exactly the prescribed spectrum.

    ``A = V B V^{-1}`` with ``B`` block diagonal: a 1x1 block ``lambda`` for each real
    eigenvalue and a real 2x2 rotation-scaling block ``[[a, b], [-b, a]]`` for each complex
    pair ``a +- ib`` (complex eigenvalues must come in conjugate pairs). ``V = Q1 diag(s) Q2``
    with random orthogonal ``Q1, Q2`` and ``s`` in [1, 2], so ``cond(V) <= 2`` (``A`` is
    non-normal but well conditioned). ``V``, ``y0`` (unit norm, unless given) come from
    ``numpy.random.default_rng(seed)``. The closed form is ``V exp(B t) V^{-1} y0``.

    ``stiff`` sets the tag (default: stiff when ``max(-Re lambda) * (t1 - t0) >= 1000``).
    The returned problem is not registered.
    """
    try:
        lam = np.asarray(list(eigenvalues), dtype=np.complex128)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"eigenvalues={eigenvalues!r} must be a sequence of numbers ({exc})") from None
    if lam.ndim != 1 or lam.size == 0:
        raise ValueError(f"eigenvalues={eigenvalues!r} must be a non-empty 1-d sequence of numbers")
    if not np.all(np.isfinite(lam)):
        raise ValueError(f"eigenvalues={eigenvalues!r} must be finite")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"seed={seed!r} must be an int")
    if name is not None and (not isinstance(name, str) or not name):
        raise ValueError(f"name={name!r} must be a non-empty str or None")
    try:
        t0, t1 = (float(v) for v in t_span)
    except (TypeError, ValueError):
        raise ValueError(f"t_span={t_span!r} must be a pair of numbers (t0, t1)") from None
    if not (math.isfinite(t0) and math.isfinite(t1)) or t0 == t1:
        raise ValueError(f"t_span={t_span!r} must be two distinct finite numbers")

    # pair the spectrum: real eigenvalues, and a + ib (b > 0) with a matching a - ib
    scale = max(1.0, float(np.max(np.abs(lam))))
    is_real = np.abs(lam.imag) <= 1e-14 * scale
    reals = [float(v.real) for v in lam[is_real]]
    upper = sorted((v for v in lam[~is_real] if v.imag > 0), key=lambda v: (v.real, v.imag))
    lower = sorted((np.conj(v) for v in lam[~is_real] if v.imag < 0), key=lambda v: (v.real, v.imag))
    if len(upper) != len(lower) or not all(
        abs(u - w) <= 1e-12 * scale for u, w in zip(upper, lower)
    ):
        raise ValueError(
            f"eigenvalues={eigenvalues!r}: complex eigenvalues must come in conjugate pairs"
            " (a real matrix has a real characteristic polynomial)"
        )
    pairs = [(float(u.real), float(u.imag)) for u in upper]
    n = len(reals) + 2 * len(pairs)

    B = np.zeros((n, n))
    k = 0
    for v in reals:
        B[k, k] = v
        k += 1
    for a, b in pairs:
        B[k : k + 2, k : k + 2] = [[a, b], [-b, a]]
        k += 2

    rng = np.random.default_rng(int(seed))
    s = rng.uniform(1.0, 2.0, size=n)
    V = _random_orthogonal(rng, n) @ np.diag(s) @ _random_orthogonal(rng, n)
    Vinv = np.linalg.inv(V)
    A = V @ B @ Vinv
    if y0 is None:
        y0v = rng.standard_normal(n)
        y0v /= np.linalg.norm(y0v)
    else:
        y0v = np.asarray(y0, dtype=np.float64)
        if y0v.shape != (n,):
            raise ValueError(f"y0 has shape {y0v.shape}; the spectrum needs shape ({n},)")
    c = Vinv @ y0v
    n_real = len(reals)
    real_arr = np.asarray(reals)
    pair_arr = np.asarray(pairs).reshape(-1, 2)

    def exact(t):
        t = _times(t)
        z = np.empty(t.shape + (n,))
        z[..., :n_real] = np.exp(t[..., None] * real_arr) * c[:n_real]
        for j, (a, b) in enumerate(pair_arr):
            i = n_real + 2 * j
            ea = np.exp(a * t)
            cs, sn = np.cos(b * t), np.sin(b * t)
            z[..., i] = ea * (cs * c[i] + sn * c[i + 1])
            z[..., i + 1] = ea * (-sn * c[i] + cs * c[i + 1])
        return z @ V.T

    if stiff is None:
        stiff = float(np.max(-lam.real)) * abs(t1 - t0) >= 1000.0
    tags = {"linear", "autonomous", "has_exact", "stiff" if stiff else "nonstiff"}
    if pairs:
        tags.add("oscillatory")
    if np.all(lam.real < 0):
        tags.add("dissipative")
    spectrum = ", ".join(f"{v:g}" for v in lam)
    return Problem(
        name=name if name is not None else f"linear_n{n}_seed{int(seed)}",
        rhs=_rhs_matrix,
        y0=tuple(y0v),
        t_span=(t0, t1),
        params={"A": A},
        exact=exact,
        tags=tags,
        citation="Constructed: A = V B V^-1 with prescribed spectrum (odeverify"
        f" linear_problem, seed={int(seed)}); closed form via the real Jordan form",
        description=f"y' = A y, n = {n}, spectrum {{{spectrum}}}, cond(V) <= 2,"
        f" t in [{t0:g}, {t1:g}]",
    )


_register(linear_problem([-0.5, -1.0, -2.0, -4.0, -8.0], seed=1, name="linear_real"))
_register(linear_problem([1j, -1j, 3j, -3j], seed=2, name="linear_imag", t_span=(0.0, 2.0 * math.pi)))
_register(linear_problem([-1.0, -0.1 + 2j, -0.1 - 2j, -3.0 + 0.5j, -3.0 - 0.5j, 0.2],
                         seed=3, name="linear_mixed"))


# --------------------------------------------------------------------------- Kepler


def _rhs_kepler(xp, t, y, p):
    q1 = y[..., 0]
    q2 = y[..., 1]
    r2 = q1 * q1 + q2 * q2
    r3 = r2 * xp.sqrt(r2)
    return xp.stack([y[..., 2], y[..., 3], -q1 / r3, -q2 / r3], axis=-1)


def eccentric_anomaly(mean_anomaly: np.ndarray, e: float) -> np.ndarray:
    """Solve Kepler's equation ``M = E - e sin E`` for ``E`` by Newton's method (float64,
    to round-off; 0 <= e < 1)."""
    M = np.asarray(mean_anomaly, dtype=np.float64)
    # reduce to [-pi, pi): E - M is 2 pi periodic in M
    k = np.floor((M + np.pi) / (2.0 * np.pi))
    m = M - 2.0 * np.pi * k
    E = np.where(e > 0.8, np.pi * np.sign(m), m + 0.85 * e * np.sign(m))
    E = np.where(m == 0.0, 0.0, E)
    for _ in range(60):
        dE = (E - e * np.sin(E) - m) / (1.0 - e * np.cos(E))
        E = E - dE
        if np.all(np.abs(dE) <= 4.0 * np.finfo(np.float64).eps * np.maximum(1.0, np.abs(E))):
            break
    # one more Newton step polishes the last bit
    E = E - (E - e * np.sin(E) - m) / (1.0 - e * np.cos(E))
    return E + 2.0 * np.pi * k


def _kepler_energy(y):
    return 0.5 * (y[..., 2] ** 2 + y[..., 3] ** 2) - 1.0 / np.hypot(y[..., 0], y[..., 1])


def _kepler_angular_momentum(y):
    return y[..., 0] * y[..., 3] - y[..., 1] * y[..., 2]


def kepler_problem(
    e: float,
    *,
    periods: int = 1,
    t_span: tuple[float, float] | None = None,
    name: str | None = None,
) -> Problem:
    """The Kepler two-body problem with eccentricity ``e`` (0 <= e < 1), started at the
    pericentre: ``q = (1 - e, 0)``, ``p = (0, sqrt((1 + e)/(1 - e)))`` (GNI, eq. I.(2.12)).

    Semi-major axis 1, period 2 pi; ``t_span`` defaults to ``(0, 2 pi periods)``. The closed
    form goes through the eccentric anomaly E (``t = E - e sin E``): ``q = (cos E - e,
    sqrt(1-e^2) sin E)``, ``p = (-sin E, sqrt(1-e^2) cos E) / (1 - e cos E)``. Invariants:
    energy H = -1/2 and angular momentum L = sqrt(1 - e^2).
    """
    try:
        e = float(e)
    except (TypeError, ValueError):
        raise ValueError(f"e={e!r} must be a number in [0, 1)") from None
    if not 0.0 <= e < 1.0:
        raise ValueError(f"e={e!r} must be in [0, 1) (an elliptic orbit)")
    if isinstance(periods, bool) or not isinstance(periods, int) or periods < 1:
        raise ValueError(f"periods={periods!r} must be a positive int")
    if t_span is None:
        t_span = (0.0, 2.0 * math.pi * periods)
    beta = math.sqrt(1.0 - e * e)

    def exact(t):
        E = eccentric_anomaly(_times(t), e)
        c, s = np.cos(E), np.sin(E)
        d = 1.0 - e * c
        return np.stack([c - e, beta * s, -s / d, beta * c / d], axis=-1)

    return Problem(
        name=name if name is not None else f"kepler_e{e:g}".replace(".", ""),
        rhs=_rhs_kepler,
        y0=(1.0 - e, 0.0, 0.0, math.sqrt((1.0 + e) / (1.0 - e))),
        t_span=t_span,
        params={"e": e},
        exact=exact,
        invariants={"energy": _kepler_energy, "angular_momentum": _kepler_angular_momentum},
        tags={"nonlinear", "autonomous", "nonstiff", "hamiltonian", "oscillatory", "periodic",
              "has_exact"},
        citation=GNI + ", Section I.2.3 (Kepler problem, initial values (2.12));"
        " closed form via Kepler's equation",
        description=f"Kepler problem q'' = -q/|q|^3, eccentricity e = {e:g}, t in"
        f" [{t_span[0]:g}, {t_span[1]:g}]; exact solution through Kepler's equation"
        " (Newton, float64).",
    )


_register(kepler_problem(0.5, name="kepler"))
_register(kepler_problem(0.9, name="kepler_e09"))


# --------------------------------------------------------------------------- Arenstorf

ARENSTORF_MU = 0.012277471
ARENSTORF_Y0 = (0.994, 0.0, 0.0, -2.00158510637908252240537862224)
ARENSTORF_PERIOD = 17.0652165601579625588917206249


def _rhs_arenstorf(xp, t, y, p):
    mu = p["mu"]
    mup = 1.0 - mu
    y1 = y[..., 0]
    y2 = y[..., 1]
    v1 = y[..., 2]
    v2 = y[..., 3]
    a = (y1 + mu) ** 2 + y2 * y2
    b = (y1 - mup) ** 2 + y2 * y2
    d1 = a * xp.sqrt(a)
    d2 = b * xp.sqrt(b)
    f3 = y1 + 2.0 * v2 - mup * (y1 + mu) / d1 - mu * (y1 - mup) / d2
    f4 = y2 - 2.0 * v1 - mup * y2 / d1 - mu * y2 / d2
    return xp.stack([v1, v2, f3, f4], axis=-1)


def _arenstorf_jacobi(y):
    mu = ARENSTORF_MU
    mup = 1.0 - mu
    r1 = np.hypot(y[..., 0] + mu, y[..., 1])
    r2 = np.hypot(y[..., 0] - mup, y[..., 1])
    omega = 0.5 * (y[..., 0] ** 2 + y[..., 1] ** 2) + mup / r1 + mu / r2
    return 2.0 * omega - (y[..., 2] ** 2 + y[..., 3] ** 2)


_register(Problem(
    name="arenstorf",
    rhs=_rhs_arenstorf,
    y0=ARENSTORF_Y0,
    t_span=(0.0, ARENSTORF_PERIOD),
    params={"mu": ARENSTORF_MU},
    references=(
        Reference(
            t=ARENSTORF_PERIOD,
            y=ARENSTORF_Y0,
            kind="published",
            source=HNW1 + ", Section II.0, eq. (0.1)-(0.2): the orbit is periodic with period"
            " x_end = 17.0652165601579625588917206249, so y(x_end) = y(0)",
            digits=30,
        ),
    ),
    invariants={"jacobi": _arenstorf_jacobi},
    tags={"nonlinear", "autonomous", "nonstiff", "periodic", "oscillatory", "has_reference"},
    citation=HNW1 + ", Section II.0 (Arenstorf orbit, restricted three-body problem);"
    " R. F. Arenstorf, Amer. J. Math. 85 (1963) 27-35",
    description="Restricted three-body problem (earth-moon), mu = 0.012277471, state"
    " (y1, y2, y1', y2'), y(0) = (0.994, 0, 0, -2.00158510637908252240537862224), one period"
    " T = 17.0652165601579625588917206249; y(T) = y(0). Close approaches make it a"
    " step-size-control test.",
))


# --------------------------------------------------------------------------- Pleiades

PLEIADES_Y0 = (
    3.0, 3.0, -1.0, -3.0, 2.0, -2.0, 2.0,      # x_i
    3.0, -3.0, 2.0, 0.0, 0.0, -4.0, 4.0,       # y_i
    0.0, 0.0, 0.0, 0.0, 0.0, 1.75, -1.5,       # x_i'
    0.0, 0.0, 0.0, -1.25, 1.0, 0.0, 0.0,       # y_i'
)

#: Reference solution at t = 3 of the Bari test set (plei.f, subroutine solut; computed by
#: the test set authors with PSIDE, rtol = atol = 1e-16, Cray C90 double precision)
PLEIADES_REF_T3 = (
    0.3706139143970502, 0.3237284092057233e1, -0.3222559032418324e1, 0.6597091455775310,
    0.3425581707156584, 0.1562172101400631e1, -0.7003092922212495, -0.3943437585517392e1,
    -0.3271380973972550e1, 0.5225081843456543e1, -0.2590612434977470e1, 0.1198213693392275e1,
    -0.2429682344935824, 0.1091449240428980e1, 0.3417003806314313e1, 0.1354584501625501e1,
    -0.2590065597810775e1, 0.2025053734714242e1, -0.1155815100160448e1, -0.8072988170223021,
    0.5952396354208710, -0.3741244961234010e1, 0.3773459685750630, 0.9386858869551073,
    0.3667922227200571, -0.3474046353808490, 0.2344915448180937e1, -0.1947020434263292e1,
)


def _rhs_pleiades(xp, t, y, p):
    x = y[..., 0:7]
    z = y[..., 7:14]
    dx = xp.expand_dims(x, axis=-2) - xp.expand_dims(x, axis=-1)  # [..., i, j] = x_j - x_i
    dz = xp.expand_dims(z, axis=-2) - xp.expand_dims(z, axis=-1)
    r2 = dx * dx + dz * dz + p["eye"]  # the diagonal (i = j, dx = dz = 0) becomes 1
    w = p["m"] / (r2 * xp.sqrt(r2))
    ax = xp.sum(w * dx, axis=-1)
    az = xp.sum(w * dz, axis=-1)
    return xp.concat([y[..., 14:28], ax, az], axis=-1)


_PLEIADES_M = np.arange(1.0, 8.0)


def _pleiades_energy(y):
    m = _PLEIADES_M
    x, z, u, v = y[..., 0:7], y[..., 7:14], y[..., 14:21], y[..., 21:28]
    kinetic = 0.5 * np.sum(m * (u * u + v * v), axis=-1)
    r = np.hypot(x[..., None, :] - x[..., :, None], z[..., None, :] - z[..., :, None])
    iu = np.triu_indices(7, 1)
    potential = -np.sum((m[:, None] * m[None, :])[iu] / r[..., iu[0], iu[1]], axis=-1)
    return kinetic + potential


def _pleiades_angular_momentum(y):
    m = _PLEIADES_M
    x, z, u, v = y[..., 0:7], y[..., 7:14], y[..., 14:21], y[..., 21:28]
    return np.sum(m * (x * v - z * u), axis=-1)


def _pleiades_momentum_x(y):
    return np.sum(_PLEIADES_M * y[..., 14:21], axis=-1)


def _pleiades_momentum_y(y):
    return np.sum(_PLEIADES_M * y[..., 21:28], axis=-1)


_register(Problem(
    name="pleiades",
    rhs=_rhs_pleiades,
    y0=PLEIADES_Y0,
    t_span=(0.0, 3.0),
    params={"m": _PLEIADES_M.copy(), "eye": np.eye(7)},
    references=(
        Reference(
            t=3.0,
            y=PLEIADES_REF_T3,
            kind="published",
            source=BARI + ", problem PLEI (Pleiades), reference solution at t = 3 (plei.f,"
            " subroutine solut, revision plei.F,v 1.2 2006/10/02: PSIDE with"
            " rtol = atol = 1e-16 on a Cray C90)",
            digits=16,
        ),
    ),
    invariants={
        "energy": _pleiades_energy,
        "angular_momentum": _pleiades_angular_momentum,
        "momentum_x": _pleiades_momentum_x,
        "momentum_y": _pleiades_momentum_y,
    },
    tags={"nonlinear", "autonomous", "nonstiff", "hamiltonian", "has_reference"},
    citation=BARI + ", problem PLEI; " + HNW1 + ", Section II.10 (PLEI)",
    description="Seven stars in the plane, masses m_i = i, x_i'' = sum_j m_j (x_j - x_i)"
    " / r_ij^3; 14 second-order ODEs as 28 first-order (x, y, x', y'), t in [0, 3].",
))


# --------------------------------------------------------------------------- computed references


def _rhs_lotka_volterra(xp, t, y, p):
    u = y[..., 0]
    v = y[..., 1]
    return xp.stack([p["alpha"] * u - p["beta"] * u * v,
                     p["delta"] * u * v - p["gamma"] * v], axis=-1)


def _lv_invariant(y):
    a, b, g, d = 1.5, 1.0, 3.0, 1.0
    u, v = y[..., 0], y[..., 1]
    return d * u - g * np.log(u) + b * v - a * np.log(v)


_register(Problem(
    name="lotka_volterra",
    rhs=_rhs_lotka_volterra,
    y0=(1.0, 1.0),
    t_span=(0.0, 10.0),
    params={"alpha": 1.5, "beta": 1.0, "gamma": 3.0, "delta": 1.0},
    invariants={"first_integral": _lv_invariant},
    tags={"nonlinear", "autonomous", "nonstiff", "oscillatory", "periodic"},
    citation="A. J. Lotka, Elements of Physical Biology, Williams & Wilkins, 1925;"
    " V. Volterra, Mem. R. Accad. Naz. dei Lincei 2 (1926) 31-113; " + HNW1 + ", Section I.16",
    description="u' = 1.5 u - u v, v' = u v - 3 v, (u, v)(0) = (1, 1), t in [0, 10];"
    " first integral d u - g ln u + b v - a ln v.",
), computed=True)


def _rhs_lorenz(xp, t, y, p):
    a = y[..., 0]
    b = y[..., 1]
    c = y[..., 2]
    return xp.stack([p["sigma"] * (b - a), a * (p["rho"] - c) - b, a * b - p["beta"] * c], axis=-1)


_register(Problem(
    name="lorenz",
    rhs=_rhs_lorenz,
    y0=(-8.0, 8.0, 27.0),
    t_span=(0.0, 2.0),
    params={"sigma": 10.0, "rho": 28.0, "beta": 8.0 / 3.0},
    tags={"nonlinear", "autonomous", "nonstiff", "chaotic", "dissipative"},
    citation="E. N. Lorenz, Deterministic nonperiodic flow, J. Atmos. Sci. 20 (1963) 130-141;"
    " initial value of " + HNW1 + ", Section II.10 (LRNZ), on a short horizon",
    description="Lorenz system, sigma = 10, rho = 28, beta = 8/3, y(0) = (-8, 8, 27),"
    " t in [0, 2] (short, so a float64 reference stays meaningful).",
), computed=True)


def _rhs_brusselator(xp, t, y, p):
    u = y[..., 0]
    v = y[..., 1]
    uuv = u * u * v
    return xp.stack([p["A"] + uuv - (p["B"] + 1.0) * u, p["B"] * u - uuv], axis=-1)


_register(Problem(
    name="brusselator",
    rhs=_rhs_brusselator,
    y0=(1.5, 3.0),
    t_span=(0.0, 20.0),
    params={"A": 1.0, "B": 3.0},
    tags={"nonlinear", "autonomous", "nonstiff", "oscillatory"},
    citation="I. Prigogine, R. Lefever, J. Chem. Phys. 48 (1968) 1695-1700; " + HNW1
    + ", Section I.16 (the Brusselator; A = 1, B = 3)",
    description="y1' = A + y1^2 y2 - (B + 1) y1, y2' = B y1 - y1^2 y2, A = 1, B = 3,"
    " y(0) = (1.5, 3), t in [0, 20] (approaches a limit cycle).",
), computed=True)
