"""Generated problems with closed forms: nonlinear, time-dependent fields of any spectrum.

A linear autonomous problem cannot tell apart Runge–Kutta methods of the same
order (they share a stability polynomial), so order checks need nonlinear, time-dependent
fields too. The warped linear problem gives one with an exact solution for any spectrum:

    z' = a(t) A z,  a(t) = 1 + eps sin(omega t),   so   z(t) = exp(A tau(t)) z0,
    tau(t) = t + (eps/omega)(1 - cos(omega t)),

and y = sinh(z) componentwise (a diffeomorphism) gives the nonlinear, non-autonomous

    y' = sqrt(1 + y^2) * (a(t) A asinh(y)),   y(t) = sinh(exp(A tau(t)) z0).

``A`` comes from :func:`~odeverify.problems.classic.linear_problem` (prescribed spectrum).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from . import register
from ._spec import Problem
from .classic import linear_problem


def _rhs_warped(xp: Any, t: Any, y: Any, p: dict[str, Any]) -> Any:
    a = 1.0 + p["eps"] * xp.sin(p["omega"] * t)
    if a.ndim > 0:
        a = a[..., None]
    A_T = xp.matrix_transpose(p["A"])
    if p["nonlinear"]:
        return xp.sqrt(1.0 + y * y) * (a * (xp.asinh(y) @ A_T))
    return a * (y @ A_T)


def warped_linear_problem(
    eigenvalues: Sequence[complex],
    *,
    seed: int,
    eps: float = 0.3,
    omega: float = 2.0,
    nonlinear: bool = True,
    t1: float = 1.0,
    amplitude: float = 1.0,
    name: str | None = None,
) -> Problem:
    """The warped linear problem above on t in [0, t1]; z0 has norm ``amplitude``."""
    if not (isinstance(eps, (int, float)) and 0 <= eps < 1):
        raise ValueError(f"eps={eps!r}, but it must be in [0, 1) so that a(t) > 0")
    if not (isinstance(omega, (int, float)) and omega > 0 and math.isfinite(omega)):
        raise ValueError(f"omega={omega!r}, but it must be a finite number > 0")
    if not (isinstance(t1, (int, float)) and t1 > 0 and math.isfinite(t1)):
        raise ValueError(f"t1={t1!r}, but it must be a finite number > 0")
    if not (isinstance(amplitude, (int, float)) and amplitude > 0):
        raise ValueError(f"amplitude={amplitude!r}, but it must be > 0")
    lin = linear_problem(eigenvalues, seed=seed, t_span=(0.0, t1))
    A = lin.params["A"]
    z0 = np.asarray(lin.y0) * amplitude
    lin_exact = lin.exact
    # lin.exact starts from lin.y0; the flow is linear, so scaling commutes with it
    eps_f, om = float(eps), float(omega)

    def tau(t: np.ndarray) -> np.ndarray:
        return t + (eps_f / om) * (1.0 - np.cos(om * t))

    def exact(t: np.ndarray) -> np.ndarray:
        z = lin_exact(tau(np.asarray(t, dtype=np.float64))) * amplitude
        return np.sinh(z) if nonlinear else z

    y0 = np.sinh(z0) if nonlinear else z0
    tags = {"has_exact", "time_dependent"} | ({"nonlinear"} if nonlinear else {"linear"})
    tags |= lin.tags & {"oscillatory", "dissipative", "stiff", "nonstiff"}
    spectrum = ", ".join(f"{complex(v):g}" for v in eigenvalues)
    return Problem(
        name=name or f"warped_n{lin.n}_seed{seed}",
        rhs=_rhs_warped,
        y0=tuple(y0),
        t_span=(0.0, float(t1)),
        params={"A": A, "eps": eps_f, "omega": om, "nonlinear": bool(nonlinear)},
        exact=exact,
        tags=tags,
        citation="Constructed (odeverify): sinh-warped, time-rescaled linear system with closed form",
        description=f"y' = sqrt(1+y^2) (1 + {eps_f:g} sin({om:g} t)) A asinh(y), spectrum of A {{{spectrum}}},"
        f" t in [0, {t1:g}]",
    )


register(warped_linear_problem([-1.0, -2.0, -4.0], seed=11, t1=2.0, name="warped_real"))
register(warped_linear_problem([-0.2 + 2.0j, -0.2 - 2.0j, -1.0], seed=12, t1=3.0, name="warped_oscillatory"))
# fast, lightly damped rotation over several periods: its asymptotic range lies above
# round-off for every shipped explicit method up to order 8 (see tests/test_order.py)
register(warped_linear_problem([-0.1 + 4.0j, -0.1 - 4.0j], seed=7, t1=5.0, amplitude=1.2, name="warped_fast"))
