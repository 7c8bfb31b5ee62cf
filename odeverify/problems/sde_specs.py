"""Generated SDE problems as one-line specs (the SDE twin of :mod:`odeverify.problems.specs`).

A spec is ``{"kind": "sde_<family>", "params": {...}}``; :func:`sde_from_spec` rebuilds the
problem exactly, named ``gen_sde_<family>_<hash>``. Every family but one has a closed form in
``W(t)``, so a drawn problem is graded against its exact solution on the path:

- ``sde_gbm``: ``n`` independent geometric Brownian motions with diagonal noise, Itô or
  Stratonovich (drawn ``mu_i``, ``sigma_i``, ``x0_i``, ``t1``);
- ``sde_reducible``: ``dX = (alpha g(X) + ½ g g'(X)) dt + g(X) dW`` (Itô), equivalently
  ``dX = alpha g dt + g o dW`` (Stratonovich), named ``gen_sde_reducible_<family>_<hash>``, for
  ``g`` of the families ``tanh``
  (``a (1 - x²)``), ``arctan`` (``a cos² x``) and ``sinh`` (``a sqrt(1 + x²)``): with
  ``H' = 1/g``, ``X = H^{-1}(alpha t + W + H(X0))`` (Kloeden & Platen 1992, §4.4, the reducible
  equations (4.4.4) with a drift term added);
- ``sde_linear``: ``dX = A X dt + Σ_j B_j X dW_j`` with ``A`` and every ``B_j`` diagonal in one
  drawn orthogonal basis (commuting noise; ``m = 1`` is declared scalar noise);
- ``sde_additive``: Kloeden & Platen's (4.4.49) with drawn ``alpha``, ``beta``;
- ``sde_noncommutative``: ``dX_1 = -c X_1 dt + s dW_1``, ``dX_2 = -c X_2 dt + s X_1 dW_2``
  (non-commuting noise, no closed form: graded against a fine solve on the same path).
"""
from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from typing import Any

import numpy as np

from .._registry import Registry
from .sde import SDEProblem
from .sde import _shape_back as _back
from .sde import _w
from .sde import _y0 as _rows
from .specs import load_spec

SDE_GENERATORS: Registry[Callable[..., SDEProblem]] = Registry("SDE problem generator")


def _orthogonal(n: int, seed: int) -> np.ndarray:
    q, r = np.linalg.qr(np.random.default_rng(seed).standard_normal((n, n)))
    return q * np.sign(np.diag(r))


# ----------------------------------------------------------------------------- gbm
def _gbm_drift(xp, t, y, p):
    return p["mu"] * y


def _gbm_diffusion(xp, t, y, p):
    return p["sigma"] * y


def _gbm_correction(xp, t, y, p):
    return 0.5 * p["sigma"] * p["sigma"] * y


def _gbm(mu: list, sigma: list, x0: list, calculus: str = "ito", t1: float = 1.0) -> SDEProblem:
    mu_a, sig_a = np.asarray(mu, dtype=np.float64), np.asarray(sigma, dtype=np.float64)
    if not (mu_a.shape == sig_a.shape == (len(x0),)):
        raise ValueError(f"mu={mu}, sigma={sigma} and x0={x0} must have the same length")
    ito = calculus == "ito"

    def exact(ts, y0, bm, p):
        w = _w(bm, ts)
        rate = p["mu"] - (0.5 * p["sigma"] ** 2 if ito else 0.0)
        tt = (np.asarray(ts) - bm.t0)[:, None, None]
        return _back(_rows(y0)[None] * np.exp(rate * tt + p["sigma"] * w), y0)

    def moments(t, y0, p):
        m = p["mu"] + (0.0 if ito else 0.5 * p["sigma"] ** 2)
        y = np.asarray(y0, dtype=np.float64)
        return {"mean": y * np.exp(m * t), "second": y * y * np.exp((2 * m + p["sigma"] ** 2) * t)}

    return SDEProblem(name="", drift=_gbm_drift, diffusion=_gbm_diffusion, y0=tuple(x0), t_span=(0.0, t1),
                      noise="diagonal", noise_dim=len(x0), calculus=calculus, params={"mu": mu_a, "sigma": sig_a},
                      exact=exact, moments=moments, correction=_gbm_correction,
                      description=f"{len(x0)} geometric Brownian motions ({calculus})", tags={"linear"})


# ----------------------------------------------------------------------------- reducible
#: family -> (g, g', H, H^{-1}) with H' = 1/g, for the scale a
_REDUCIBLE = {
    "tanh": (lambda xp, y, a: a * (1.0 - y * y), lambda xp, y, a: -2.0 * a * y,
             lambda x, a: np.arctanh(x) / a, lambda u, a: np.tanh(a * u)),
    "arctan": (lambda xp, y, a: a * xp.cos(y) ** 2, lambda xp, y, a: -2.0 * a * xp.sin(y) * xp.cos(y),
               lambda x, a: np.tan(x) / a, lambda u, a: np.arctan(a * u)),
    "sinh": (lambda xp, y, a: a * xp.sqrt(1.0 + y * y), lambda xp, y, a: a * y / xp.sqrt(1.0 + y * y),
             lambda x, a: np.arcsinh(x) / a, lambda u, a: np.sinh(a * u)),
}
_DOMAIN = {"tanh": 0.95, "arctan": 1.4, "sinh": 3.0}


def _reducible(family: str, a: float, alpha: float, x0: float, calculus: str = "ito", t1: float = 1.0) -> SDEProblem:
    if family not in _REDUCIBLE:
        raise ValueError(f"family={family!r}; expected one of {sorted(_REDUCIBLE)}")
    if not (0 < a <= 5) or abs(x0) >= _DOMAIN[family]:
        raise ValueError(f"a={a}, x0={x0}: need 0 < a <= 5 and |x0| < {_DOMAIN[family]} for the {family} family")
    g_of, dg_of, h_of, hinv_of = _REDUCIBLE[family]
    ito = calculus == "ito"

    def diffusion(xp, t, y, p):
        return g_of(xp, y, p["a"])

    def correction(xp, t, y, p):
        return 0.5 * g_of(xp, y, p["a"]) * dg_of(xp, y, p["a"])

    def drift(xp, t, y, p):
        base = p["alpha"] * g_of(xp, y, p["a"])
        return base + correction(xp, t, y, p) if ito else base

    def exact(ts, y0, bm, p):
        w = _w(bm, ts)[..., :1]
        tt = (np.asarray(ts, dtype=np.float64) - bm.t0)[:, None, None]
        with np.errstate(all="ignore"):
            return _back(hinv_of(p["alpha"] * tt + w + h_of(_rows(y0)[None], p["a"]), p["a"]), y0)

    return SDEProblem(name="", drift=drift, diffusion=diffusion, y0=(x0,), t_span=(0.0, t1), noise="diagonal",
                      noise_dim=1, calculus=calculus, params={"a": float(a), "alpha": float(alpha)}, exact=exact,
                      correction=correction,
                      citation="Kloeden & Platen (1992), §4.4, reducible equations",
                      description=f"reducible SDE, g of the {family} family ({calculus}): X = H^-1(alpha t + W + H(X0))",
                      # a(1 - x^2) grows quadratically: explicit schemes can leave (-1, 1) and diverge
                      tags={"nonlinear", "superlinear"} if family == "tanh" else {"nonlinear"})


# ----------------------------------------------------------------------------- linear, commuting
def _lin_drift(xp, t, y, p):
    return y @ p["A"].T


def _lin_diffusion(xp, t, y, p):
    return xp.stack([y @ p["B"][j].T for j in range(p["B"].shape[0])], axis=-1)


def _lin_correction(xp, t, y, p):
    return 0.5 * (y @ p["BB"].T)


def _linear(a: list, b: list, x0: list, seed: int, t1: float = 1.0) -> SDEProblem:
    """``b``: one list of eigenvalues per noise (m lists of n)."""
    n = len(x0)
    a_d = np.asarray(a, dtype=np.float64)
    b_d = np.asarray(b, dtype=np.float64)
    if a_d.shape != (n,) or b_d.ndim != 2 or b_d.shape[1] != n or b_d.shape[0] < 1:
        raise ValueError(f"a={a}, b={b}, x0={x0}: need a of length n and b of shape (m, n)")
    q = _orthogonal(n, seed)
    m = b_d.shape[0]
    A = q @ np.diag(a_d) @ q.T
    B = np.stack([q @ np.diag(row) @ q.T for row in b_d])

    def exact(ts, y0, bm, p):
        w = _w(bm, ts)
        tt = (np.asarray(ts, dtype=np.float64) - bm.t0)[:, None, None]
        z0 = _rows(y0) @ q
        rate = a_d - 0.5 * np.sum(b_d**2, axis=0)
        return _back((z0[None] * np.exp(rate * tt + np.einsum("tmj,ji->tmi", w, b_d))) @ q.T, y0)

    def moments(t, y0, p):
        z0 = np.asarray(y0, dtype=np.float64) @ q
        cov = np.outer(z0, z0) * np.exp((a_d[:, None] + a_d[None, :] + b_d.T @ b_d) * t)
        return {"mean": q @ (z0 * np.exp(a_d * t)), "second": np.einsum("ik,ik->i", q @ cov, q)}

    return SDEProblem(name="", drift=_lin_drift, diffusion=_lin_diffusion, y0=tuple(x0), t_span=(0.0, t1),
                      noise="scalar" if m == 1 else "general", noise_dim=m,
                      params={"A": A, "B": B, "BB": np.einsum("jik,jkl->il", B, B)}, exact=exact, moments=moments,
                      correction=_lin_correction, commutative=True,
                      description=f"linear SDE, n={n}, m={m}, commuting matrices in a seeded basis",
                      tags={"linear"})


# ----------------------------------------------------------------------------- additive, non-commutative
def _additive_drift(xp, t, y, p):
    s = 1.0 + t
    return p["beta"] / xp.sqrt(s) - y / (2.0 * s)


def _additive_diffusion(xp, t, y, p):
    return ((p["alpha"] * p["beta"]) / xp.sqrt(1.0 + t) + 0.0 * y)[..., None]


def _additive(alpha: float, beta: float, x0: float, t1: float = 1.0) -> SDEProblem:
    def exact(ts, y0, bm, p):
        w = _w(bm, ts)[..., :1]
        tt = np.asarray(ts, dtype=np.float64)[:, None, None]
        s = np.sqrt(1.0 + tt)
        return _back(_rows(y0)[None] / s + p["beta"] * (tt + p["alpha"] * w) / s, y0)

    def moments(t, y0, p):
        y = np.asarray(y0, dtype=np.float64)
        s = math.sqrt(1.0 + t)
        mean = y / s + p["beta"] * t / s
        return {"mean": mean, "second": mean * mean + (p["alpha"] * p["beta"]) ** 2 * t / (1.0 + t)}

    return SDEProblem(name="", drift=_additive_drift, diffusion=_additive_diffusion, y0=(x0,), t_span=(0.0, t1),
                      noise="additive", noise_dim=1, params={"alpha": float(alpha), "beta": float(beta)}, exact=exact,
                      moments=moments, correction=lambda xp, t, y, p: 0.0 * y,
                      citation="Kloeden & Platen (1992), eq. (4.4.49)",
                      description="additive noise, closed form in W(t)", tags={"linear", "time_dependent"})


def _nc_drift(xp, t, y, p):
    return -p["c"] * y


def _nc_diffusion(xp, t, y, p):
    z = 0.0 * y[..., 0]
    return xp.stack([xp.stack([z + p["s"], z], axis=-1), xp.stack([z, p["s"] * y[..., 0]], axis=-1)], axis=-1)


def _noncommutative(c: float, s: float, x0: list, t1: float = 1.0) -> SDEProblem:
    return SDEProblem(name="", drift=_nc_drift, diffusion=_nc_diffusion, y0=tuple(x0), t_span=(0.0, t1),
                      noise="general", noise_dim=2, params={"c": float(c), "s": float(s)}, commutative=False,
                      correction=lambda xp, t, y, p: 0.0 * y,
                      description="two noises that do not commute (L^1 g_2 != L^2 g_1); no closed form",
                      tags={"linear"})


for _name, _fn in (("sde_gbm", _gbm), ("sde_reducible", _reducible), ("sde_linear", _linear),
                   ("sde_additive", _additive), ("sde_noncommutative", _noncommutative)):
    SDE_GENERATORS.register(_name, _fn)


def canonical(spec: dict[str, Any]) -> str:
    return json.dumps(spec, sort_keys=True, separators=(",", ":"))


def sde_from_spec(spec: str | dict[str, Any]) -> SDEProblem:
    """The SDE problem of a spec (a dict or its JSON line); a bad spec raises naming the field."""
    spec = load_spec(spec, ("kind", "params"))
    build = SDE_GENERATORS.get(spec["kind"])
    try:
        problem = build(**spec.get("params", {}))
    except TypeError as exc:
        raise ValueError(f"SDE spec {canonical(spec)}: {exc}") from None
    digest = hashlib.sha256(canonical(spec).encode()).hexdigest()[:10]
    from dataclasses import replace

    family = spec.get("params", {}).get("family")
    label = f"{spec['kind']}_{family}" if isinstance(family, str) else spec["kind"]
    return replace(problem, name=f"gen_{label}_{digest}", description=problem.description)


def is_sde_spec(spec: Any) -> bool:
    kind = spec.get("kind") if isinstance(spec, dict) else None
    return isinstance(kind, str) and kind.startswith("sde_")


__all__ = ["SDE_GENERATORS", "is_sde_spec", "sde_from_spec"]
