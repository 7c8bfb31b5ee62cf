"""Stochastic differential equations as frozen data (registry ``SDE_PROBLEMS``).

``dX = f(t, X) dt + g(t, X) dW`` in the Itô or the Stratonovich sense, with the noise type
declared (the shapes of ``g`` follow torchsde's conventions, so that adapters pass fields
through unchanged):

=============  ======================  ==================  =================================
noise          ``g(t, y)`` returns     noise dimension m   ``g dW``
=============  ======================  ==================  =================================
``diagonal``   ``(..., n)``            ``n``               ``g * dW`` (component-wise)
``scalar``     ``(..., n, 1)``         1                   ``g[..., 0] * dW``
``additive``   ``(..., n, m)``, no y   any                 ``g @ dW``
``general``    ``(..., n, m)``         any                 ``g @ dW``
=============  ======================  ==================  =================================

A problem knows what is known about its solution:

- ``exact(ts, y0, bm, p)``: the solution on the Brownian path ``bm``
  (:class:`odeverify.brownian.BrownianTree`) at times ``ts``, NumPy float64, shape
  ``(len(ts), M, n)`` for ``y0`` of shape ``(M, n)``. Most closed forms are functions of
  ``W(t)`` alone; Ornstein-Uhlenbeck's needs ``∫ e^{θs} dW_s``, which it takes from the path
  on a fine dyadic grid (``exact_accuracy`` states how close that is).
- ``moments(t, y0, p)``: exact ``E[X_t]`` and ``E[X_t^2]`` (component-wise), for the weak order.
- ``correction(xp, t, y, p)``: ``c = ½ Σ_j (∂g_j/∂x) g_j``, the drift that converts between the
  calculi (Itô drift = Stratonovich drift + c), for the Itô-Stratonovich consistency property.

The closed-form problems are transcribed from P. E. Kloeden & E. Platen, *Numerical Solution
of Stochastic Differential Equations* (Springer 1992), section 4.4 (equation numbers as
cited there and in SciML's DiffEqProblemLibrary, whose ``prob_sde_cubic``, ``prob_sde_wave``
and ``prob_sde_additive`` are the same equations); each closed form is checked against a
fine Euler-Maruyama solve on the same path in ``tests/test_sde_problems.py``.

Also registered: reducible equations of K&P section 4.4 (``sinh_reducible``, with an added
drift as in Karatzas & Shreve's exercise 5.2.27), linear equations with time-dependent
coefficients (``linear_time_dependent``, ``gbm_time_dependent``), SciML's
``prob_sde_stiffquadito``/``_stiffquadstrat`` (``stiff_quadratic_*``), ``prob_sde_2Dlinear``
(``sciml_2dlinear_*``, a 4x2 matrix flattened to n = 8), ``prob_sde_additivesystem`` and
``prob_sde_nltest``; the Kubo oscillator (scalar noise driving n = 2); and ``neural_sde``, a
seeded MLP drift and bounded diagonal diffusion with no closed form (tag ``neural``). Each
closed form's derivation by Itô's formula is written next to it.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

import numpy as np

from .._registry import Registry
from ._spec import bind_field, convert_params

NOISE_TYPES = ("diagonal", "scalar", "additive", "general")
CALCULI = ("ito", "stratonovich")


@dataclass(frozen=True)
class SDEProblem:
    """``dX = drift(t, X) dt + diffusion(t, X) dW`` from ``y0`` on ``t_span``, as frozen data.

    ``drift(xp, t, y, p)`` and ``diffusion(xp, t, y, p)`` are written against the Array API
    like :class:`~odeverify.problems.Problem`'s ``rhs``: ``y`` has shape ``(..., n)`` (a batch
    of paths first), ``t`` is 0-d. ``commutative`` declares that the noise commutes
    (``L^j g_k = L^k g_j``; scalar and additive noise always do; diagonal noise does when each
    ``g_i`` depends on ``y_i`` alone, torchsde's "diagonal" does not promise it), which decides
    the strong order a method can reach and whether Milstein applies.
    """

    name: str
    drift: Callable[..., Any]
    diffusion: Callable[..., Any]
    y0: tuple[float, ...]
    t_span: tuple[float, float]
    noise: str
    noise_dim: int
    calculus: str = "ito"
    params: Mapping[str, Any] = field(default_factory=dict)
    exact: Callable[..., np.ndarray] | None = None
    moments: Callable[..., dict[str, np.ndarray]] | None = None
    correction: Callable[..., Any] | None = None
    commutative: bool = True
    exact_accuracy: float = 0.0  #: absolute accuracy of ``exact`` where it is a path functional
    citation: str = ""
    description: str = ""
    tags: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        object.__setattr__(self, "y0", tuple(float(v) for v in self.y0))
        object.__setattr__(self, "t_span", (float(self.t_span[0]), float(self.t_span[1])))
        object.__setattr__(self, "params", MappingProxyType(dict(self.params)))
        object.__setattr__(self, "tags", frozenset(self.tags))
        if self.noise not in NOISE_TYPES:
            raise ValueError(f"SDE problem {self.name!r}: noise={self.noise!r}; expected one of {NOISE_TYPES}")
        if self.calculus not in CALCULI:
            raise ValueError(f"SDE problem {self.name!r}: calculus={self.calculus!r}; expected one of {CALCULI}")
        if not isinstance(self.noise_dim, int) or self.noise_dim < 1:
            raise ValueError(f"SDE problem {self.name!r}: noise_dim={self.noise_dim!r}, but it must be an int >= 1")
        if self.noise == "diagonal" and self.noise_dim != self.n:
            raise ValueError(f"SDE problem {self.name!r}: diagonal noise needs noise_dim = n = {self.n},"
                             f" got noise_dim={self.noise_dim}")
        if self.noise == "scalar" and self.noise_dim != 1:
            raise ValueError(f"SDE problem {self.name!r}: scalar noise needs noise_dim=1, got {self.noise_dim}")
        if not self.t_span[0] < self.t_span[1]:
            raise ValueError(f"SDE problem {self.name!r}: t_span={self.t_span}, but it must have t0 < t1")
        if not np.all(np.isfinite(self.y0)):
            raise ValueError(f"SDE problem {self.name!r}: y0={self.y0} must be finite")

    @property
    def n(self) -> int:
        return len(self.y0)

    @property
    def noise_class(self) -> str:
        """``additive``, ``commutative`` (scalar, or declared) or ``general``: what decides a
        method's strong order."""
        if self.noise == "additive":
            return "additive"
        if self.noise == "scalar" or self.commutative:
            return "commutative"
        return "general"

    def brownian_shape(self, paths: int | None = None) -> tuple[int, ...]:
        return (self.noise_dim,) if paths is None else (int(paths), self.noise_dim)

    def converted_params(self, xp: Any, dtype: Any = None, device: Any = None) -> dict[str, Any]:
        return convert_params(self.params, xp, dtype, device)

    def _bind(self, fun: Callable[..., Any], suffix: str, xp: Any, dtype: Any, device: Any) -> Callable[[Any, Any], Any]:
        return bind_field(f"{self.name}_{suffix}", fun, xp, self.converted_params(xp, dtype, device))

    def drift_field(self, xp: Any, dtype: Any = None, device: Any = None) -> Callable[[Any, Any], Any]:
        return self._bind(self.drift, "drift", xp, dtype, device)

    def diffusion_field(self, xp: Any, dtype: Any = None, device: Any = None) -> Callable[[Any, Any], Any]:
        return self._bind(self.diffusion, "diffusion", xp, dtype, device)

    def y0_batch(self, paths: int, xp: Any = None, dtype: Any = None, device: Any = None) -> Any:
        """``y0`` repeated for ``paths`` paths: shape ``(paths, n)``."""
        arr = np.broadcast_to(np.asarray(self.y0, dtype=np.float64), (int(paths), self.n)).copy()
        if xp is None:
            return arr
        kwargs: dict[str, Any] = {"dtype": dtype if dtype is not None else xp.float64}
        if device is not None:
            kwargs["device"] = device
        return xp.asarray(arr, **kwargs)

    def as_calculus(self, calculus: str) -> SDEProblem:
        """The same process written in the other calculus (drift ∓ the correction)."""
        if calculus not in CALCULI:
            raise ValueError(f"calculus={calculus!r}; expected one of {CALCULI}")
        if calculus == self.calculus:
            return self
        if self.correction is None:
            raise ValueError(f"SDE problem {self.name!r} has no analytic Itô-Stratonovich correction")
        sign = -1.0 if calculus == "stratonovich" else 1.0
        drift, corr = self.drift, self.correction

        def converted(xp: Any, t: Any, y: Any, p: Any) -> Any:
            return drift(xp, t, y, p) + sign * corr(xp, t, y, p)

        return replace(self, name=f"{self.name}[{calculus}]", drift=converted, calculus=calculus)


SDE_PROBLEMS: Registry[SDEProblem] = Registry("SDE problem")


def register(problem: SDEProblem) -> SDEProblem:
    SDE_PROBLEMS.register(problem.name, problem)
    return problem


def _w(bm: Any, ts: np.ndarray) -> np.ndarray:
    """W at ``ts`` with a path axis: shape (T, M, m)."""
    w = bm.values(ts)
    return w if w.ndim == 3 else w[:, None, :]


def _y0(y0: np.ndarray) -> np.ndarray:
    y = np.asarray(y0, dtype=np.float64)
    return y if y.ndim == 2 else y[None, :]


def _shape_back(out: np.ndarray, y0: np.ndarray) -> np.ndarray:
    return out if np.ndim(y0) == 2 else out[:, 0, :]


# ----------------------------------------------------------------------------- GBM
def _gbm_drift(xp: Any, t: Any, y: Any, p: Any) -> Any:
    return p["mu"] * y


def _gbm_diffusion(xp: Any, t: Any, y: Any, p: Any) -> Any:
    return p["sigma"] * y


def _gbm_correction(xp: Any, t: Any, y: Any, p: Any) -> Any:
    return (0.5 * p["sigma"] ** 2) * y


def _gbm_exact(ito: bool) -> Callable[..., np.ndarray]:
    def exact(ts: np.ndarray, y0: np.ndarray, bm: Any, p: Mapping[str, Any]) -> np.ndarray:
        t0 = bm.t0
        w = _w(bm, ts)
        rate = p["mu"] - (0.5 * p["sigma"] ** 2 if ito else 0.0)
        tt = (np.asarray(ts) - t0)[:, None, None]
        return _shape_back(_y0(y0)[None] * np.exp(rate * tt + p["sigma"] * w), y0)

    return exact


def _gbm_moments(ito: bool) -> Callable[..., dict[str, np.ndarray]]:
    def moments(t: float, y0: np.ndarray, p: Mapping[str, Any]) -> dict[str, np.ndarray]:
        mu = p["mu"] + (0.0 if ito else 0.5 * p["sigma"] ** 2)  # the Itô drift rate
        y = np.asarray(y0, dtype=np.float64)
        return {"mean": y * math.exp(mu * t), "second": y * y * math.exp((2 * mu + p["sigma"] ** 2) * t)}

    return moments


for _calc in CALCULI:
    _ito = _calc == "ito"
    register(SDEProblem(
        name=f"gbm_{_calc}", drift=_gbm_drift, diffusion=_gbm_diffusion, y0=(1.0,), t_span=(0.0, 1.0),
        noise="diagonal", noise_dim=1, calculus=_calc, params={"mu": 1.0, "sigma": 0.5},
        exact=_gbm_exact(_ito), moments=_gbm_moments(_ito), correction=_gbm_correction,
        citation="Kloeden & Platen (1992), eq. (4.4.6)-(4.4.7)",
        description=("geometric Brownian motion dX = mu X dt + sigma X " + ("dW (Itô): X = X0 exp((mu - sigma^2/2) t"
                     " + sigma W)" if _ito else "o dW (Stratonovich): X = X0 exp(mu t + sigma W)")),
        tags={"linear"}))


# ----------------------------------------------------------------------------- reducible nonlinear (K&P 4.4)
def _cubic_drift(xp: Any, t: Any, y: Any, p: Any) -> Any:
    return -(p["a"] ** 2) * y * (1.0 - y * y)


def _cubic_diffusion(xp: Any, t: Any, y: Any, p: Any) -> Any:
    return p["a"] * (1.0 - y * y)


def _cubic_exact(ts: np.ndarray, y0: np.ndarray, bm: Any, p: Mapping[str, Any]) -> np.ndarray:
    w = _w(bm, ts)[..., :1]
    return _shape_back(np.tanh(p["a"] * w + np.arctanh(_y0(y0))[None]), y0)


def _wave_drift(xp: Any, t: Any, y: Any, p: Any) -> Any:
    c = xp.cos(y)
    return -(p["a"] ** 2) * xp.sin(y) * c * c * c


def _wave_diffusion(xp: Any, t: Any, y: Any, p: Any) -> Any:
    c = xp.cos(y)
    return p["a"] * c * c


def _wave_exact(ts: np.ndarray, y0: np.ndarray, bm: Any, p: Mapping[str, Any]) -> np.ndarray:
    w = _w(bm, ts)[..., :1]
    return _shape_back(np.arctan(p["a"] * w + np.tan(_y0(y0))[None]), y0)


register(SDEProblem(
    name="kp_cubic", drift=_cubic_drift, diffusion=_cubic_diffusion, y0=(0.5,), t_span=(0.0, 1.0),
    noise="diagonal", noise_dim=1, params={"a": 0.5}, exact=_cubic_exact, correction=_cubic_drift,
    citation="Kloeden & Platen (1992), eq. (4.4.46); SciML prob_sde_cubic",
    description="dX = -a^2 X (1 - X^2) dt + a (1 - X^2) dW (Itô): X = tanh(a W + artanh X0)",
    tags={"nonlinear"}))

register(SDEProblem(
    name="kp_wave", drift=_wave_drift, diffusion=_wave_diffusion, y0=(0.5,), t_span=(0.0, 1.0),
    noise="diagonal", noise_dim=1, params={"a": 1.0}, exact=_wave_exact, correction=_wave_drift,
    citation="Kloeden & Platen (1992), eq. (4.4.47); SciML prob_sde_wave (there a = 0.1)",
    description="dX = -a^2 sin X cos^3 X dt + a cos^2 X dW (Itô): X = arctan(a W + tan X0)",
    tags={"nonlinear"}))


# additive noise with a closed form in W(t)
def _kp_additive_drift(xp: Any, t: Any, y: Any, p: Any) -> Any:
    s = 1.0 + t
    return p["beta"] / xp.sqrt(s) - y / (2.0 * s)


def _kp_additive_diffusion(xp: Any, t: Any, y: Any, p: Any) -> Any:
    s = 1.0 + t
    col = (p["alpha"] * p["beta"]) / xp.sqrt(s) + 0.0 * y  # (..., 1): independent of y
    return col[..., None]


def _kp_additive_exact(ts: np.ndarray, y0: np.ndarray, bm: Any, p: Mapping[str, Any]) -> np.ndarray:
    w = _w(bm, ts)[..., :1]
    s = np.sqrt(1.0 + np.asarray(ts, dtype=np.float64))[:, None, None]
    tt = np.asarray(ts, dtype=np.float64)[:, None, None]
    return _shape_back(_y0(y0)[None] / s + p["beta"] * (tt + p["alpha"] * w) / s, y0)


def _kp_additive_moments(t: float, y0: np.ndarray, p: Mapping[str, Any]) -> dict[str, np.ndarray]:
    y = np.asarray(y0, dtype=np.float64)
    s = math.sqrt(1.0 + t)
    mean = y / s + p["beta"] * t / s
    var = (p["beta"] * p["alpha"]) ** 2 * t / (1.0 + t)
    return {"mean": mean, "second": mean * mean + var}


register(SDEProblem(
    name="kp_additive", drift=_kp_additive_drift, diffusion=_kp_additive_diffusion, y0=(1.0,), t_span=(0.0, 1.0),
    noise="additive", noise_dim=1, params={"alpha": 1.0, "beta": 0.5}, exact=_kp_additive_exact,
    moments=_kp_additive_moments, correction=lambda xp, t, y, p: 0.0 * y,
    citation="Kloeden & Platen (1992), eq. (4.4.49); SciML prob_sde_additive (there alpha = 0.1, beta = 0.05)",
    description=("dX = (beta / sqrt(1+t) - X / (2 (1+t))) dt + alpha beta / sqrt(1+t) dW:"
                 " X = X0 / sqrt(1+t) + beta (t + alpha W) / sqrt(1+t)"),
    tags={"linear", "time_dependent"}))


# ----------------------------------------------------------------------------- Ornstein-Uhlenbeck
_OU_LEVEL = 14  #: the dyadic level of the path integral in OU's exact solution


def _ou_drift(xp: Any, t: Any, y: Any, p: Any) -> Any:
    return p["theta"] * (p["mu"] - y)


def _ou_diffusion(xp: Any, t: Any, y: Any, p: Any) -> Any:
    return p["sigma"] + 0.0 * y[..., None]


def _ou_exact(ts: np.ndarray, y0: np.ndarray, bm: Any, p: Mapping[str, Any]) -> np.ndarray:
    """X_t = mu + (X0 - mu) e^{-θ(t-t0)} + σ (W_t - θ ∫ e^{-θ(t-s)} W_s ds) (by parts), the
    integral by the trapezoidal rule on the dyadic grid of level 14 (exact W there): the
    error is σθ times a sum of independent bridge integrals, standard deviation
    σθ h sqrt((t - t0)/12) with h = (t1 - t0)/2^14 (2e-5 σθ on a unit span)."""
    theta, mu, sigma = p["theta"], p["mu"], p["sigma"]
    t0, t1 = bm.t0, bm.t1
    grid = t0 + (t1 - t0) * np.arange((1 << _OU_LEVEL) + 1) / float(1 << _OU_LEVEL)
    ts = np.asarray(ts, dtype=np.float64)
    wg = _w(bm, grid)[..., 0]  # (G, M)
    y = _y0(y0)[:, 0]
    out = np.empty((ts.size, y.size))
    for k, t in enumerate(ts):
        j = int(round((t - t0) / (t1 - t0) * (1 << _OU_LEVEL)))
        if not math.isclose(grid[j], t, rel_tol=0, abs_tol=1e-12 * (t1 - t0)):
            raise ValueError(f"ou's exact solution is computed at dyadic times of level {_OU_LEVEL}; t={t} is not one")
        if j == 0:
            integral = np.zeros(y.size)
        else:
            wts = np.exp(-theta * (t - grid[: j + 1]))[:, None] * wg[: j + 1]
            hstep = grid[1] - grid[0]
            integral = hstep * (wts.sum(axis=0) - 0.5 * (wts[0] + wts[-1]))
        out[k] = mu + (y - mu) * math.exp(-theta * (t - t0)) + sigma * (wg[j] - theta * integral)
    return _shape_back(out[..., None], y0)


def _ou_moments(t: float, y0: np.ndarray, p: Mapping[str, Any]) -> dict[str, np.ndarray]:
    theta, mu, sigma = p["theta"], p["mu"], p["sigma"]
    y = np.asarray(y0, dtype=np.float64)
    mean = mu + (y - mu) * math.exp(-theta * t)
    var = sigma**2 / (2 * theta) * (1 - math.exp(-2 * theta * t))
    return {"mean": mean, "second": mean * mean + var}


register(SDEProblem(
    name="ou", drift=_ou_drift, diffusion=_ou_diffusion, y0=(2.0,), t_span=(0.0, 1.0), noise="additive",
    noise_dim=1, params={"theta": 2.0, "mu": 0.5, "sigma": 0.8}, exact=_ou_exact, moments=_ou_moments,
    correction=lambda xp, t, y, p: 0.0 * y, exact_accuracy=2e-5 * 2.0 * 0.8 * 5,
    citation="Uhlenbeck & Ornstein (1930); Kloeden & Platen (1992), eq. (4.4.13)",
    description="dX = theta (mu - X) dt + sigma dW; exact via the path integral (dyadic level 14)",
    tags={"linear"}))


# ----------------------------------------------------------------------------- linear, commuting noise
def _rotation(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, -s], [s, c]])


_Q = _rotation(0.6)
_A_DIAG = np.array([-0.5, 0.3])
_B_DIAG = np.array([[0.4, 0.2], [-0.3, 0.5]])  #: row j: the eigenvalues of B_j


def _lin_drift(xp: Any, t: Any, y: Any, p: Any) -> Any:
    return y @ p["A"].T  # (M, n) @ (n, n)^T


def _lin_diffusion(xp: Any, t: Any, y: Any, p: Any) -> Any:
    # column j is B_j y: (M, n, m)
    cols = [y @ p["B"][j, ...].T for j in range(p["B"].shape[0])]
    return xp.stack(cols, axis=-1)


def _lin_correction(xp: Any, t: Any, y: Any, p: Any) -> Any:
    # ½ Σ_j B_j B_j y
    return 0.5 * (y @ p["BB"].T)


def _lin_exact(ts: np.ndarray, y0: np.ndarray, bm: Any, p: Mapping[str, Any]) -> np.ndarray:
    """In the common eigenbasis Q: z_i = exp((a_i - ½ Σ_j b_ji^2) t + Σ_j b_ji W_j) z0_i."""
    w = _w(bm, ts)  # (T, M, m)
    tt = (np.asarray(ts, dtype=np.float64) - bm.t0)[:, None, None]
    z0 = _y0(y0) @ _Q  # rows: Q^T y0
    rate = _A_DIAG - 0.5 * np.sum(_B_DIAG**2, axis=0)
    z = z0[None] * np.exp(rate * tt + np.einsum("tmj,ji->tmi", w, _B_DIAG))
    return _shape_back(z @ _Q.T, y0)


def _lin_moments(t: float, y0: np.ndarray, p: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """E z_i = e^{a_i t} z0_i; E z_i z_k = z0_i z0_k exp((a_i + a_k + Σ_j b_ji b_jk) t)."""
    z0 = np.asarray(y0, dtype=np.float64) @ _Q
    mean_z = z0 * np.exp(_A_DIAG * t)
    cov = np.outer(z0, z0) * np.exp((_A_DIAG[:, None] + _A_DIAG[None, :] + _B_DIAG.T @ _B_DIAG) * t)
    second = np.einsum("ik,ik->i", _Q @ cov, _Q)  # E (Q z)_i^2 = Σ_kl Q_ik Q_il E z_k z_l
    return {"mean": _Q @ mean_z, "second": second}


_A = _Q @ np.diag(_A_DIAG) @ _Q.T
_B = np.stack([_Q @ np.diag(b) @ _Q.T for b in _B_DIAG])
register(SDEProblem(
    name="linear_commuting", drift=_lin_drift, diffusion=_lin_diffusion, y0=(1.0, 0.5), t_span=(0.0, 1.0),
    noise="general", noise_dim=2, params={"A": _A, "B": _B, "BB": _B[0] @ _B[0] + _B[1] @ _B[1]},
    exact=_lin_exact, moments=_lin_moments, correction=_lin_correction, commutative=True,
    citation="Kloeden & Platen (1992), section 4.8 (linear SDEs with commuting matrices)",
    description=("dX = A X dt + B_1 X dW_1 + B_2 X dW_2 (Itô) with A, B_1, B_2 diagonal in one rotated basis:"
                 " X = exp((A - ½ Σ B_j^2) t + Σ B_j W_j) X0"),
    tags={"linear"}))


# non-commutative noise: no closed form; graded against a fine solve on the same path
def _nc_drift(xp: Any, t: Any, y: Any, p: Any) -> Any:
    return -0.5 * y


def _nc_diffusion(xp: Any, t: Any, y: Any, p: Any) -> Any:
    # g_1 = (s, 0) const, g_2 = (0, s y_1): L^1 g_2 = (0, s^2) but L^2 g_1 = 0 -> not commutative
    s = p["s"]
    z = 0.0 * y[..., 0]
    col1 = xp.stack([z + s, z], axis=-1)
    col2 = xp.stack([z, s * y[..., 0]], axis=-1)
    return xp.stack([col1, col2], axis=-1)


register(SDEProblem(
    name="noncommutative", drift=_nc_drift, diffusion=_nc_diffusion, y0=(0.5, 1.0), t_span=(0.0, 1.0),
    noise="general", noise_dim=2, params={"s": 0.8}, commutative=False,
    correction=lambda xp, t, y, p: 0.0 * y,
    citation="a two-noise system whose Lévy area matters (L^1 g_2 != L^2 g_1), after Kloeden & Platen (1992), section 10.3",
    description=("dX_1 = -X_1/2 dt + s dW_1, dX_2 = -X_2/2 dt + s X_1 dW_2: non-commutative noise; no"
                 " closed form, so strong errors are measured against a fine solve on the same path"),
    tags={"linear"}))


# ----------------------------------------------------------------------------- more closed forms
def _tarr(xp: Any, t: Any, y: Any) -> Any:
    """``t`` as a 0-d array of ``y``'s dtype (the loop passes time as float64)."""
    if isinstance(t, (int, float)):
        return xp.asarray(float(t), dtype=y.dtype)
    return xp.astype(t, y.dtype)


def _elapsed(ts: np.ndarray, bm: Any) -> np.ndarray:
    """``t - t0`` with axes (T, 1, 1) for broadcasting against (T, M, n)."""
    return (np.asarray(ts, dtype=np.float64) - bm.t0)[:, None, None]


# sinh: dX = (b sqrt(1+X^2) + a^2 X / 2) dt + a sqrt(1+X^2) dW (Itô). With Z = asinh X,
# Itô's formula gives dZ = dX / sqrt(1+X^2) - X / (2 (1+X^2)^{3/2}) (dX)^2 = b dt + a dW, so
# X = sinh(a W + b t + asinh X0). b = 0 is K&P's reducible example; b = a = 1 is Karatzas &
# Shreve's exercise. Correction: ½ g g' = ½ a sqrt(1+X^2) a X / sqrt(1+X^2) = a^2 X / 2.
def _sinh_drift(xp: Any, t: Any, y: Any, p: Any) -> Any:
    return p["b"] * xp.sqrt(1.0 + y * y) + (0.5 * p["a"] ** 2) * y


def _sinh_diffusion(xp: Any, t: Any, y: Any, p: Any) -> Any:
    return p["a"] * xp.sqrt(1.0 + y * y)


def _sinh_correction(xp: Any, t: Any, y: Any, p: Any) -> Any:
    return (0.5 * p["a"] ** 2) * y


def _sinh_exact(ts: np.ndarray, y0: np.ndarray, bm: Any, p: Mapping[str, Any]) -> np.ndarray:
    w = _w(bm, ts)[..., :1]
    return _shape_back(np.sinh(p["a"] * w + p["b"] * _elapsed(ts, bm) + np.arcsinh(_y0(y0))[None]), y0)


register(SDEProblem(
    name="sinh_reducible", drift=_sinh_drift, diffusion=_sinh_diffusion, y0=(0.5,), t_span=(0.0, 1.0),
    noise="diagonal", noise_dim=1, params={"a": 0.8, "b": 0.5}, exact=_sinh_exact, correction=_sinh_correction,
    citation=("Kloeden & Platen (1992), section 4.4 (reducible equation X = sinh(a W + asinh X0), here with"
              " an added drift b sqrt(1+X^2)); Karatzas & Shreve (1991), exercise 5.2.27 (a = b = 1)"),
    description="dX = (b sqrt(1+X^2) + a^2 X / 2) dt + a sqrt(1+X^2) dW (Itô): X = sinh(a W + b t + asinh X0)",
    tags={"nonlinear"}))


# tanh with drift (SciML prob_sde_stiffquadito / _stiffquadstrat, after Burrage & Tian and
# Abdulle & Cirilli): X = tanh(Z), Z = -alpha t + beta W + atanh X0. Stratonovich chain rule:
# dX = (1 - X^2) o dZ, so the Stratonovich drift is -alpha (1 - X^2) and g = beta (1 - X^2);
# the correction ½ g g' = ½ beta (1-X^2) (-2 beta X) = -beta^2 X (1 - X^2) gives the Itô drift
# -(alpha + beta^2 X)(1 - X^2), as in SciML's stiff_quad_f_ito.
def _quad_drift(xp: Any, t: Any, y: Any, p: Any) -> Any:
    return -p["alpha"] * (1.0 - y * y)


def _quad_diffusion(xp: Any, t: Any, y: Any, p: Any) -> Any:
    return p["beta"] * (1.0 - y * y)


def _quad_correction(xp: Any, t: Any, y: Any, p: Any) -> Any:
    return -(p["beta"] ** 2) * y * (1.0 - y * y)


def _quad_drift_ito(xp: Any, t: Any, y: Any, p: Any) -> Any:
    return _quad_drift(xp, t, y, p) + _quad_correction(xp, t, y, p)


def _quad_exact(ts: np.ndarray, y0: np.ndarray, bm: Any, p: Mapping[str, Any]) -> np.ndarray:
    w = _w(bm, ts)[..., :1]
    z = -p["alpha"] * _elapsed(ts, bm) + p["beta"] * w + np.arctanh(_y0(y0))[None]
    return _shape_back(np.tanh(z), y0)


for _calc in CALCULI:
    register(SDEProblem(
        name=f"stiff_quadratic_{_calc}", drift=_quad_drift_ito if _calc == "ito" else _quad_drift,
        diffusion=_quad_diffusion, y0=(0.5,), t_span=(0.0, 1.0), noise="diagonal", noise_dim=1, calculus=_calc,
        params={"alpha": 1.0, "beta": 0.5}, exact=_quad_exact, correction=_quad_correction,
        citation=("SciML DiffEqProblemLibrary prob_sde_stiffquad" + ("ito" if _calc == "ito" else "strat")
                  + " (there alpha = beta = 1 on [0, 3], stiff for explicit schemes: Euler-Maruyama at the"
                  " coarsest steps of check --sde leaves (-1, 1) and overflows; here alpha = 1, beta = 1/2 on"
                  " [0, 1], X0 = 1/2); Burrage & Tian, the composite Euler method; Abdulle & Cirilli, S-ROCK"),
        description=("dX = " + ("-(alpha + beta^2 X)(1 - X^2) dt + beta (1 - X^2) dW (Itô)" if _calc == "ito" else
                                "-alpha (1 - X^2) dt + beta (1 - X^2) o dW (Stratonovich)")
                     + ": X = tanh(-alpha t + beta W + atanh X0)"),
        tags={"nonlinear", "superlinear"}))  # coefficients grow like X^3 outside (-1, 1)
    # SciML's own setting, kept as the stiff test it was made to be: the solution settles on the
    # attracting state X = -1 (linearised rate -2 alpha), where explicit schemes leave (-1, 1) at
    # coarse steps and reversible Heun's parasitic mode grows (expected_failures.toml)
    register(SDEProblem(
        name=f"stiff_quadratic_sciml_{_calc}", drift=_quad_drift_ito if _calc == "ito" else _quad_drift,
        diffusion=_quad_diffusion, y0=(0.5,), t_span=(0.0, 3.0), noise="diagonal", noise_dim=1, calculus=_calc,
        params={"alpha": 1.0, "beta": 1.0}, exact=_quad_exact, correction=_quad_correction,
        citation=("SciML DiffEqProblemLibrary prob_sde_stiffquad" + ("ito" if _calc == "ito" else "strat")
                  + " (alpha = beta = 1, X0 = 1/2 on [0, 3])"),
        description=("stiff_quadratic with SciML's parameters: alpha = beta = 1 on [0, 3], settling on X = -1"),
        tags={"nonlinear", "superlinear", "stiff"}))


# linear with time-dependent coefficients (narrow sense): dX = (2 X / (1+t) + b (1+t)^2) dt
# + b (1+t)^2 dW. Y = X / (1+t)^2 has dY = dX / (1+t)^2 - 2 X / (1+t)^3 dt = b dt + b dW, so
# X = (1+t)^2 (X0 + b (t + W)) (on a span starting at t = 0).
def _lt_drift(xp: Any, t: Any, y: Any, p: Any) -> Any:
    s = 1.0 + _tarr(xp, t, y)
    return 2.0 * y / s + p["b"] * s * s


def _lt_diffusion(xp: Any, t: Any, y: Any, p: Any) -> Any:
    s = 1.0 + _tarr(xp, t, y)
    return (p["b"] * s * s + 0.0 * y)[..., None]


def _lt_exact(ts: np.ndarray, y0: np.ndarray, bm: Any, p: Mapping[str, Any]) -> np.ndarray:
    w = _w(bm, ts)[..., :1]
    tt = np.asarray(ts, dtype=np.float64)[:, None, None]
    return _shape_back((1.0 + tt) ** 2 * (_y0(y0)[None] + p["b"] * (tt + w)), y0)


def _lt_moments(t: float, y0: np.ndarray, p: Mapping[str, Any]) -> dict[str, np.ndarray]:
    y = np.asarray(y0, dtype=np.float64)
    s2 = (1.0 + t) ** 2
    mean = s2 * (y + p["b"] * t)
    return {"mean": mean, "second": mean * mean + (s2 * p["b"]) ** 2 * t}


register(SDEProblem(
    name="linear_time_dependent", drift=_lt_drift, diffusion=_lt_diffusion, y0=(0.2,), t_span=(0.0, 1.0),
    noise="additive", noise_dim=1, params={"b": 0.5}, exact=_lt_exact, moments=_lt_moments,
    correction=lambda xp, t, y, p: 0.0 * y,
    citation="Kloeden & Platen (1992), section 4.4 (linear SDE in the narrow sense with time-dependent coefficients)",
    description="dX = (2 X / (1+t) + b (1+t)^2) dt + b (1+t)^2 dW: X = (1+t)^2 (X0 + b (t + W))",
    tags={"linear", "time_dependent"}))


# multiplicative noise with a time-dependent drift rate: dX = c X / (1+t) dt + b X dW (Itô);
# d ln X = dX / X - b^2 / 2 dt = (c / (1+t) - b^2 / 2) dt + b dW, so
# X = X0 (1+t)^c exp(-b^2 t / 2 + b W).
def _gt_drift(xp: Any, t: Any, y: Any, p: Any) -> Any:
    return p["c"] * y / (1.0 + _tarr(xp, t, y))


def _gt_diffusion(xp: Any, t: Any, y: Any, p: Any) -> Any:
    return p["b"] * y


def _gt_correction(xp: Any, t: Any, y: Any, p: Any) -> Any:
    return (0.5 * p["b"] ** 2) * y


def _gt_exact(ts: np.ndarray, y0: np.ndarray, bm: Any, p: Mapping[str, Any]) -> np.ndarray:
    w = _w(bm, ts)[..., :1]
    tt = np.asarray(ts, dtype=np.float64)[:, None, None]
    return _shape_back(_y0(y0)[None] * (1.0 + tt) ** p["c"] * np.exp(-0.5 * p["b"] ** 2 * tt + p["b"] * w), y0)


def _gt_moments(t: float, y0: np.ndarray, p: Mapping[str, Any]) -> dict[str, np.ndarray]:
    y = np.asarray(y0, dtype=np.float64)
    mean = y * (1.0 + t) ** p["c"]
    return {"mean": mean, "second": mean * mean * math.exp(p["b"] ** 2 * t)}


register(SDEProblem(
    name="gbm_time_dependent", drift=_gt_drift, diffusion=_gt_diffusion, y0=(1.0,), t_span=(0.0, 1.0),
    noise="diagonal", noise_dim=1, params={"c": 1.5, "b": 0.6}, exact=_gt_exact, moments=_gt_moments,
    correction=_gt_correction,
    citation="Kloeden & Platen (1992), section 4.4 (homogeneous linear SDE, time-dependent drift rate)",
    description="dX = c X / (1+t) dt + b X dW (Itô): X = X0 (1+t)^c exp(-b^2 t / 2 + b W)",
    tags={"linear", "time_dependent"}))


# polynomial growth (SciML prob_sde_nltest, from Tocino & Ardanuy): X = Z^3 with
# Z = 2 t + 1 + W / 3; Itô: dX = 3 Z^2 dZ + 3 Z (dZ)^2 = (6 Z^2 + Z / 3) dt + Z^2 dW, so with
# Z = cbrt(X) (the real cube root, which keeps the formulas right for X < 0):
# f = 6 X^{2/3} + X^{1/3} / 3, g = X^{2/3}; correction ½ g g' = ½ X^{2/3} (2/3) X^{-1/3} = X^{1/3} / 3.
def _cbrt(xp: Any, y: Any) -> Any:
    return xp.sign(y) * xp.abs(y) ** (1.0 / 3.0)


def _nl_drift(xp: Any, t: Any, y: Any, p: Any) -> Any:
    z = _cbrt(xp, y)
    return 6.0 * z * z + z / 3.0


def _nl_diffusion(xp: Any, t: Any, y: Any, p: Any) -> Any:
    z = _cbrt(xp, y)
    return z * z


def _nl_correction(xp: Any, t: Any, y: Any, p: Any) -> Any:
    return _cbrt(xp, y) / 3.0


def _nl_exact(ts: np.ndarray, y0: np.ndarray, bm: Any, p: Mapping[str, Any]) -> np.ndarray:
    w = _w(bm, ts)[..., :1]
    z = np.cbrt(_y0(y0))[None] + 2.0 * _elapsed(ts, bm) + w / 3.0
    return _shape_back(z**3, y0)


register(SDEProblem(
    name="sciml_nltest", drift=_nl_drift, diffusion=_nl_diffusion, y0=(1.0,), t_span=(0.0, 1.0),
    noise="diagonal", noise_dim=1, exact=_nl_exact, correction=_nl_correction,
    citation=("SciML DiffEqProblemLibrary prob_sde_nltest (there on [0, 10]); J. Tocino & R. Ardanuy,"
              " Runge-Kutta methods for numerical solution of stochastic differential equations, J. Comput."
              " Appl. Math. 138 (2002)"),
    description="dX = (X^{1/3} / 3 + 6 X^{2/3}) dt + X^{2/3} dW (Itô): X = (2 t + cbrt(X0) + W / 3)^3",
    tags={"nonlinear"}))


# SciML's prob_sde_2Dlinear: 8 independent GBMs as a 4x2 matrix (flattened row-major here),
# each driven by its own Brownian component (diagonal noise); alpha = 1.01, beta = 0.87,
# u0 = 1/2. The Stratonovich version (prob_sde_2Dlinear_stratonovich) keeps f and g and has
# X = u0 exp(alpha t + beta W).
for _calc in CALCULI:
    _ito = _calc == "ito"
    register(SDEProblem(
        name=f"sciml_2dlinear_{_calc}", drift=_gbm_drift, diffusion=_gbm_diffusion, y0=(0.5,) * 8,
        t_span=(0.0, 1.0), noise="diagonal", noise_dim=8, calculus=_calc, params={"mu": 1.01, "sigma": 0.87},
        exact=_gbm_exact(_ito), moments=_gbm_moments(_ito), correction=_gbm_correction,
        citation=f"SciML DiffEqProblemLibrary prob_sde_2Dlinear{'' if _ito else '_stratonovich'} (a 4x2 matrix of"
                 " linear SDEs, alpha = 1.01, beta = 0.87, u0 = 1/2; flattened to n = 8)",
        description=("8 independent geometric Brownian motions (a 4x2 matrix), diagonal noise, "
                     + ("Itô" if _ito else "Stratonovich")),
        tags={"linear"}))


# SciML's prob_sde_additivesystem: the additive problem (K&P) per component, alpha_i = 0.1,
# beta = (0.5, 0.25, 0.125, 0.1115), X0 = 1, each component with its own Brownian motion.
def _adds_drift(xp: Any, t: Any, y: Any, p: Any) -> Any:
    s = 1.0 + _tarr(xp, t, y)
    return p["beta"] / xp.sqrt(s) - y / (2.0 * s)


def _adds_diffusion(xp: Any, t: Any, y: Any, p: Any) -> Any:
    s = 1.0 + _tarr(xp, t, y)
    diag = (p["alpha"] * p["beta"]) / xp.sqrt(s) + 0.0 * y  # (..., n)
    return diag[..., None] * p["eye"]  # (..., n, n): diagonal


def _adds_exact(ts: np.ndarray, y0: np.ndarray, bm: Any, p: Mapping[str, Any]) -> np.ndarray:
    w = _w(bm, ts)
    tt = np.asarray(ts, dtype=np.float64)[:, None, None]
    s = np.sqrt(1.0 + tt)
    return _shape_back(_y0(y0)[None] / s + p["beta"] * (tt + p["alpha"] * w) / s, y0)


def _adds_moments(t: float, y0: np.ndarray, p: Mapping[str, Any]) -> dict[str, np.ndarray]:
    y = np.asarray(y0, dtype=np.float64)
    s = math.sqrt(1.0 + t)
    mean = y / s + p["beta"] * t / s
    return {"mean": mean, "second": mean * mean + (p["alpha"] * p["beta"]) ** 2 * t / (1.0 + t)}


register(SDEProblem(
    name="sciml_additive_system", drift=_adds_drift, diffusion=_adds_diffusion, y0=(1.0, 1.0, 1.0, 1.0),
    t_span=(0.0, 1.0), noise="additive", noise_dim=4,
    params={"alpha": np.full(4, 0.1), "beta": np.array([0.5, 0.25, 0.125, 0.1115]), "eye": np.eye(4)},
    exact=_adds_exact, moments=_adds_moments, correction=lambda xp, t, y, p: 0.0 * y,
    citation="SciML DiffEqProblemLibrary prob_sde_additivesystem (Kloeden & Platen's additive problem per component)",
    description="4 uncoupled additive-noise problems dX_i = (beta_i/sqrt(1+t) - X_i/(2(1+t))) dt + alpha_i beta_i/sqrt(1+t) dW_i",
    tags={"linear", "time_dependent"}))


# Kubo oscillator: one Brownian motion drives a two-dimensional system (scalar noise,
# g of shape (..., 2, 1)). Stratonovich: dX = a J X dt + b J X o dW with J the rotation
# generator [[0, -1], [1, 0]]; X = R(a t + b W) X0 (the chain rule: dR(θ)/dθ = J R(θ)), so
# |X| is conserved. Correction ½ (∂g/∂x) g = ½ b^2 J J X = -b^2 X / 2: the Itô drift is
# a J X - b^2 X / 2. E X = e^{-b^2 t / 2} R(a t) X0 (θ ~ N(a t, b^2 t)); E X_i^2 from
# E cos 2θ = cos(2 a t) e^{-2 b^2 t}, E sin 2θ = sin(2 a t) e^{-2 b^2 t}.
def _kubo_rot(xp: Any, y: Any) -> Any:
    return xp.stack([-y[..., 1], y[..., 0]], axis=-1)  # J y


def _kubo_drift(xp: Any, t: Any, y: Any, p: Any) -> Any:
    return p["a"] * _kubo_rot(xp, y)


def _kubo_diffusion(xp: Any, t: Any, y: Any, p: Any) -> Any:
    return (p["b"] * _kubo_rot(xp, y))[..., None]


def _kubo_correction(xp: Any, t: Any, y: Any, p: Any) -> Any:
    return (-0.5 * p["b"] ** 2) * y


def _kubo_exact(ts: np.ndarray, y0: np.ndarray, bm: Any, p: Mapping[str, Any]) -> np.ndarray:
    theta = p["a"] * _elapsed(ts, bm)[..., 0] + p["b"] * _w(bm, ts)[..., 0]  # (T, M)
    c, s = np.cos(theta), np.sin(theta)
    y = _y0(y0)[None]
    out = np.stack([c * y[..., 0] - s * y[..., 1], s * y[..., 0] + c * y[..., 1]], axis=-1)
    return _shape_back(out, y0)


def _kubo_moments(t: float, y0: np.ndarray, p: Mapping[str, Any]) -> dict[str, np.ndarray]:
    a, b = p["a"], p["b"]
    x1, x2 = (float(v) for v in np.asarray(y0, dtype=np.float64))
    damp = math.exp(-0.5 * b * b * t)
    c, s = math.cos(a * t), math.sin(a * t)
    e2 = math.exp(-2.0 * b * b * t)
    ec2, es2 = math.cos(2 * a * t) * e2, math.sin(2 * a * t) * e2
    mean = damp * np.array([c * x1 - s * x2, s * x1 + c * x2])
    # X_1 = cos θ x1 - sin θ x2, X_2 = sin θ x1 + cos θ x2, expanded with double angles
    second = np.array([0.5 * (x1 * x1 + x2 * x2) + 0.5 * (x1 * x1 - x2 * x2) * ec2 - x1 * x2 * es2,
                       0.5 * (x1 * x1 + x2 * x2) - 0.5 * (x1 * x1 - x2 * x2) * ec2 + x1 * x2 * es2])
    return {"mean": mean, "second": second}


register(SDEProblem(
    name="kubo_oscillator", drift=_kubo_drift, diffusion=_kubo_diffusion, y0=(1.0, 0.0), t_span=(0.0, 1.0),
    noise="scalar", noise_dim=1, calculus="stratonovich", params={"a": 2.0, "b": 0.7}, exact=_kubo_exact,
    moments=_kubo_moments, correction=_kubo_correction,
    citation=("the Kubo oscillator (R. Kubo 1962); a test problem of G. N. Milstein, Yu. M. Repin &"
              " M. V. Tretyakov, SIAM J. Numer. Anal. 40 (2002), numerical methods for stochastic systems"
              " preserving symplectic structure"),
    description="dX = a J X dt + b J X o dW (Stratonovich, scalar noise, n = 2): X = R(a t + b W) X0, |X| conserved",
    tags={"linear", "scalar_noise"}))


# ----------------------------------------------------------------------------- neural SDE
_NEURAL_STATE, _NEURAL_WIDTH, _NEURAL_SEED, _NEURAL_SCALE = 3, 16, 20261207, 0.5


def _neural_params(seed: int = _NEURAL_SEED, n: int = _NEURAL_STATE, width: int = _NEURAL_WIDTH) -> dict[str, np.ndarray]:
    """Seeded float64 weights: N(0, 1/fan_in) (fan_in counts the time input), biases N(0, 0.1^2).
    Drift: two tanh layers of ``width`` on [y, t]. Diffusion: for each component ``i`` its own
    tanh layer of ``width`` on [y_i, t], then ``scale * sigmoid``, so 0 < g_i < scale and g_i
    depends on y_i alone -- what makes diagonal noise commutative (L^j g_k = g_j ∂_j g_k e_k
    vanishes for j != k only then; as in torchsde's latent SDE example, one net per dimension)."""
    rng = np.random.default_rng(seed)

    def weight(rows: int, cols: int, fan_in: int) -> np.ndarray:
        return rng.normal(0.0, 1.0 / math.sqrt(fan_in), size=(rows, cols))

    return {
        "F0": weight(width, n, n + 1), "f_t": weight(width, 1, n + 1)[:, 0], "f0": rng.normal(0, 0.1, width),
        "F1": weight(width, width, width), "f1": rng.normal(0, 0.1, width),
        "F2": weight(n, width, width), "f2": rng.normal(0, 0.1, n),
        # per component i: row i of each (n, width) array
        "G0": weight(n, width, 2), "g_t": weight(n, width, 2), "g0": rng.normal(0, 0.1, (n, width)),
        "G1": weight(n, width, width), "g1": rng.normal(0, 0.1, n),
    }


def _neural_drift(xp: Any, t: Any, y: Any, p: Any) -> Any:
    tt = _tarr(xp, t, y)
    h = xp.tanh(y @ p["F0"].T + tt * p["f_t"] + p["f0"])
    h = xp.tanh(h @ p["F1"].T + p["f1"])
    return h @ p["F2"].T + p["f2"]


def _neural_hidden(xp: Any, t: Any, y: Any, p: Any) -> tuple[Any, Any]:
    """The diffusion's hidden layers h (..., n, width) and the sigmoid outputs σ(u) (..., n)
    (σ via tanh: no overflow)."""
    h = xp.tanh(y[..., None] * p["G0"] + _tarr(xp, t, y) * p["g_t"] + p["g0"])
    u = xp.sum(h * p["G1"], axis=-1) + p["g1"]
    return h, 0.5 * (1.0 + xp.tanh(0.5 * u))


def _neural_diffusion(xp: Any, t: Any, y: Any, p: Any) -> Any:
    return p["scale"] * _neural_hidden(xp, t, y, p)[1]


def _neural_correction(xp: Any, t: Any, y: Any, p: Any) -> Any:
    # diagonal noise: c_i = ½ g_i ∂g_i/∂y_i, ∂g_i/∂y_i = scale σ_i (1 - σ_i) Σ_k G1_ik (1 - h_ik^2) G0_ik
    h, sig = _neural_hidden(xp, t, y, p)
    g = p["scale"] * sig
    du = xp.sum(p["G1"] * (1.0 - h * h) * p["G0"], axis=-1)
    return 0.5 * g * (g * (1.0 - sig)) * du


register(SDEProblem(
    name="neural_sde", drift=_neural_drift, diffusion=_neural_diffusion, y0=(0.5, -0.3, 0.2), t_span=(0.0, 1.0),
    noise="diagonal", noise_dim=_NEURAL_STATE, params={**_neural_params(), "scale": _NEURAL_SCALE},
    exact=None, correction=_neural_correction,
    citation=("a neural SDE (Li, Wong, Chen & Duvenaud 2020; Kidger et al. 2021): seeded MLP drift (tanh, 2"
              " layers of width 16, time input) and a bounded diagonal diffusion (0.5 sigmoid of a tanh layer"
              " of width 16 per component, on [y_i, t]);"
              f" weights from numpy.random.default_rng({_NEURAL_SEED}), odeverify"),
    description=("dX = MLP_f([X, t]) dt + 0.5 sigmoid(MLP_g,i([X_i, t])) dW_i, n = 3, diagonal noise (Itô); no closed"
                 " form: graded against a fine solve on the same path"),
    tags={"neural", "nonlinear", "time_dependent"}))


def get(name: str) -> SDEProblem:
    return SDE_PROBLEMS.get(name)


__all__ = ["CALCULI", "NOISE_TYPES", "SDEProblem", "SDE_PROBLEMS", "get", "register"]
