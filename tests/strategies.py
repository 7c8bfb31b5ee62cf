"""Hypothesis strategies: problems with closed forms and chosen spectra."""
from __future__ import annotations

import math

from hypothesis import strategies as st

from odeverify.problems.generated import warped_linear_problem

SPECTRA = ("real", "imaginary", "mixed")


@st.composite
def spectra(draw, kinds=SPECTRA, max_magnitude: float = 3.0):
    kind = draw(st.sampled_from(kinds))
    mag = st.floats(0.3, max_magnitude, allow_nan=False)
    if kind == "real":
        k = draw(st.integers(1, 3))
        return kind, [-draw(mag) for _ in range(k)]
    if kind == "imaginary":
        b = draw(mag)
        return kind, [complex(0, b), complex(0, -b)]
    a, b, r = draw(st.floats(0.05, 1.0)), draw(mag), draw(mag)
    return kind, [complex(-a, b), complex(-a, -b), -r]


@st.composite
def warped_problems(draw, kinds=SPECTRA, order: int = 1):
    """Nonlinear (or linear) time-dependent problems with exact solutions and a drawn spectrum.

    For methods of order >= 5 the span is longer (rho * t1 larger): on short spans their
    asymptotic range lies below round-off and the order check can only be inconclusive.
    """
    kind, eigs = draw(spectra(kinds))
    eps = draw(st.floats(0.0, 0.5))
    omega = draw(st.floats(0.5, 3.0))
    t1 = draw(st.floats(3.0, 6.0) if order >= 5 else st.floats(1.0, 3.0))
    nonlinear = draw(st.booleans())
    seed = draw(st.integers(0, 2**16))
    amplitude = draw(st.floats(0.3, 1.2))
    prob = warped_linear_problem(eigs, seed=seed, eps=eps, omega=omega, nonlinear=nonlinear, t1=t1,
                                 amplitude=amplitude, name=f"warped_{kind}_{seed}")
    rho = max(abs(complex(v)) for v in eigs) * (1 + eps)
    return prob, rho


def coarsest_stable_n(rho: float, t1: float) -> int:
    """Fewest power-of-two steps with h * rho <= 1: where the sweep starts (inside every
    explicit method's stability region on the real axis, near it on the imaginary axis)."""
    return 2 ** max(0, math.ceil(math.log2(max(rho * t1, 1.0))))
