"""Stochastic step functions for the one time loop (registry ``SDE_METHODS``).

An SDE method is data (:class:`SDEMethod`: its calculus, the noise types it is valid for, its
claimed strong and weak orders per noise class, its citation) plus a step rule. ``bind``
ties it to a diffusion ``g``, a Brownian path and the step grid, and returns a
:class:`SDEStepper`: a solver of :func:`odeverify.integrate.solve`'s contract
(:mod:`odeverify.solvers.base`) whose step consumes the Brownian increment of its interval.
The drift goes through the loop as its vector field (counted in ``nfev``); the stepper counts
the diffusion's evaluations (``ngev``).

Noise is applied as in torchsde: ``g * dW`` for diagonal noise (``g`` of shape ``(..., n)``),
``g @ dW`` otherwise (``g`` of shape ``(..., n, m)``).

Claimed orders (strong / weak), by noise class, with the reasoning behind each:

- ``euler`` (Euler-Maruyama, Itô): strong 0.5, 1.0 for additive noise (the Itô-Taylor terms it
  drops, ``L^j g_k I_(j,k)``, vanish when ``g`` does not depend on ``X``); weak 1.
  Kloeden & Platen (1992) §10.2, §14.1.
- ``milstein_ito`` / ``milstein_strat``: strong 1.0 where the noise commutes (its double
  integrals reduce to ``(ΔW_j ΔW_k - δ_jk h) / 2``, Itô, or ``ΔW_j ΔW_k / 2``, Stratonovich);
  weak 1. Derivative-free (Runge-Kutta) form: ``L^j g_k`` is the difference quotient
  ``(g_k(y + f h + g_j sqrt h) - g_k(y)) / sqrt h``, K&P §11.1 (eq. 11.1.5 for one noise).
  Refused on non-commutative noise, which needs Lévy areas.
- ``euler_heun`` (Stratonovich): ``y1 = y + f h + ½ (g(y) + g(y + g ΔW)) ΔW``: the second
  term expands to ``g ΔW + ½ Σ L^j g_k ΔW_j ΔW_k``, Stratonovich Milstein's, when the noise
  commutes: strong 1.0 there, 0.5 in general; weak 1.
- ``heun`` (stochastic Heun, Stratonovich; Rümelin 1982): predictor ``ŷ = y + f h + g ΔW``,
  ``y1 = y + ½ (f + f(ŷ)) h + ½ (g + g(ŷ)) ΔW``: strong 1.0 for commuting noise, 0.5 in
  general; weak 1, and 2 for additive noise (its ``½ f' g ΔW h`` and ``¼ f'' g² ΔW² h`` terms
  match the weak order-2 Itô-Taylor scheme's first two moments); order 2 without noise.
- ``reversible_heun`` (Stratonovich; Kidger, Foster, Li & Lyons, NeurIPS 2021, Algorithm 1):
  strong 0.5 in general and 1.0 for additive noise (as proved there); 1.0 for commuting noise
  is odeverify's expectation, not a published claim: its steps agree with Heun's to the order
  that matters there, and ``check --sde`` measures it (1.00 on gbm, 0.98 on linear_commuting);
  weak 1; algebraically reversible (:meth:`SDEStepper.inverse`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Callable, Mapping

import numpy as np

from .. import _xp
from .._registry import Registry
from .base import StepResult, TimeContext

NOISE_CLASSES = ("additive", "commutative", "general")


@dataclass(frozen=True)
class SDEMethod:
    """One stochastic method: what it solves and what it claims."""

    name: str
    calculus: str  #: "ito" or "stratonovich": the calculus whose solution it converges to
    strong: Mapping[str, float]  #: noise class -> claimed strong order
    weak: Mapping[str, float]  #: noise class -> claimed weak order
    rule: str  #: the step rule (see SDEStepper)
    order: int = 1  #: the order without noise (an ODE method)
    citation: str = ""
    notes: str = ""
    reversible: bool = False
    #: for a library's method: the odeverify reference method with the same step rule (pathwise
    #: agreement on the same Brownian path), or None
    reference: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "strong", MappingProxyType(dict(self.strong)))
        object.__setattr__(self, "weak", MappingProxyType(dict(self.weak)))

    def valid_for(self, noise_class: str) -> bool:
        return noise_class in self.strong

    def strong_order(self, noise_class: str) -> float:
        return self.strong[noise_class]

    def weak_order(self, noise_class: str) -> float:
        return self.weak[noise_class]

    def bind(self, diffusion: Callable[[Any, Any], Any], bm: Any, *, noise: str, noise_dim: int,
             commutative: bool = True, grid: np.ndarray | None = None) -> SDEStepper:
        """The stepper of one solve: this rule with ``diffusion``, the Brownian path ``bm`` and
        the step grid (step ends are snapped to it, so every query is a grid time)."""
        noise_class = "additive" if noise == "additive" else (
            "commutative" if noise == "scalar" or commutative else "general")
        if not self.valid_for(noise_class):
            raise ValueError(f"SDE method {self.name!r} is not valid for {noise_class} noise ({noise!r},"
                             f" commutative={commutative}); it is valid for: {', '.join(self.strong)}."
                             " Non-commuting noise needs Lévy areas: use euler, euler_heun or heun")
        return SDEStepper(self, diffusion, bm, noise, noise_dim, grid)


class SDEStepper:
    """A bound SDE method: a fixed-step solver of the one time loop."""

    embedded_order = None
    adaptive = False
    has_dense = False
    dense_order = 1

    def __init__(self, method: SDEMethod, diffusion: Callable[[Any, Any], Any], bm: Any, noise: str, noise_dim: int,
                 grid: np.ndarray | None) -> None:
        self.method = method
        self.name = method.name
        self.order = method.order
        self.g = diffusion
        self.bm = bm
        self.noise = noise
        self.noise_dim = noise_dim
        self.grid = None if grid is None else np.asarray(grid, dtype=np.float64)
        self.ngev = 0
        self._checked = False
        if method.reversible:
            # stateful: the loop calls init_state/after_step (solvers/base.py)
            self.init_state = self._init_state
            self.after_step = self._after_step

    # --- helpers
    def _snap(self, t: float) -> float:
        """The grid point nearest ``t`` (the loop's ``t + h`` may miss it by an ulp)."""
        if self.grid is None:
            return t
        j = int(np.clip(np.searchsorted(self.grid, t), 1, self.grid.size - 1))
        best = j if abs(self.grid[j] - t) <= abs(self.grid[j - 1] - t) else j - 1
        return float(self.grid[best])

    def diffusion(self, tc: TimeContext, t: float, y: Any) -> Any:
        self.ngev += 1
        out = self.g(tc.time(t), y)
        if not self._checked:
            self._check(out, y)
        return out

    def _check(self, out: Any, y: Any) -> None:
        if not _xp.is_array(out):
            raise TypeError(f"the diffusion g returned {type(out).__name__}, expected an array of the state's library")
        n = y.shape[-1]
        want = tuple(y.shape) if self.noise == "diagonal" else tuple(y.shape) + (self.noise_dim,)
        if tuple(out.shape) != want:
            kind = "(..., n)" if self.noise == "diagonal" else "(..., n, m)"
            raise ValueError(f"the diffusion g returned shape {tuple(out.shape)}, but {self.noise} noise with n={n},"
                             f" m={self.noise_dim} needs shape {want} {kind}")
        self._checked = True

    def increment(self, t: float, t1: float, like: Any) -> Any:
        dw = self.bm.increment(t, t1, like=like)
        return dw

    def apply(self, g: Any, dw: Any) -> Any:
        """The noise term ``g dW``."""
        if self.noise == "diagonal":
            return g * dw
        xp = _xp.namespace(g)
        return xp.sum(g * dw[..., None, :], axis=-1)

    def _levy_free_correction(self, tc: TimeContext, t: float, y: Any, g: Any, h: float, dw: Any,
                              ito: bool) -> Any:
        """½ Σ_jk L^j g_k (ΔW_j ΔW_k - [ito] δ_jk h), with ``L^j g_k`` the central difference
        ``(g_k(y + g_j sqrt h) - g_k(y - g_j sqrt h)) / (2 sqrt h)``, accurate to O(h). (Kloeden &
        Platen's one-sided quotient from ``y + f h + g sqrt h`` is off by O(sqrt h): harmless
        for the Itô form, whose ``ΔW² - h`` has mean zero, but it costs the Stratonovich form,
        whose ``ΔW²`` does not, half an order, as measured.)"""
        sq = math.sqrt(abs(h))
        if self.noise == "diagonal":
            lg = (self.diffusion(tc, t, y + sq * g) - self.diffusion(tc, t, y - sq * g)) / (2.0 * sq)
            return (0.5 * lg) * (dw * dw - (abs(h) if ito else 0.0))
        xp = _xp.namespace(y)
        out = None
        m = self.noise_dim
        for j in range(m):
            gj = g[..., :, j]
            lj = (self.diffusion(tc, t, y + sq * gj) - self.diffusion(tc, t, y - sq * gj)) / (2.0 * sq)
            coef = dw[..., j:j + 1] * dw  # (..., m): ΔW_j ΔW_k
            if ito:
                coef = coef - xp.asarray(np.eye(m)[j] * abs(h), dtype=dw.dtype, device=_xp.device(dw))
            term = 0.5 * xp.sum(lj * coef[..., None, :], axis=-1)
            out = term if out is None else out + term
        return out

    # --- the solver contract
    def step(self, f: Any, tc: TimeContext, y: Any, h: Any, k1: Any, *, estimate: bool = False,
             state: dict[str, Any] | None = None) -> StepResult:
        if tc.per_sample:
            raise ValueError(f"SDE method {self.name!r} takes one step grid for all paths (batch='shared')")
        t = float(tc.t)
        t1 = self._snap(t + float(h))
        hf = t1 - t
        dw = self.increment(t, t1, like=y)
        rule = self.method.rule
        nfev = 0
        fsal = None
        new_state = None
        if rule == "euler":
            g = self.diffusion(tc, t, y)
            y1 = y + hf * k1 + self.apply(g, dw)
        elif rule in ("milstein_ito", "milstein_strat"):
            g = self.diffusion(tc, t, y)
            corr = self._levy_free_correction(tc, t, y, g, hf, dw, ito=rule == "milstein_ito")
            y1 = y + hf * k1 + self.apply(g, dw) + corr
        elif rule == "euler_heun":
            g = self.diffusion(tc, t, y)
            gbar = self.diffusion(tc, t, y + self.apply(g, dw))
            y1 = y + hf * k1 + self.apply(0.5 * (g + gbar), dw)
        elif rule == "heun":
            g = self.diffusion(tc, t, y)
            ybar = y + hf * k1 + self.apply(g, dw)
            fbar = f(tc.time(t1), ybar)
            nfev += 1
            gbar = self.diffusion(tc, t1, ybar)
            y1 = y + (0.5 * hf) * (k1 + fbar) + self.apply(0.5 * (g + gbar), dw)
        elif rule == "reversible_heun":
            if state is None:
                raise ValueError("reversible_heun is stateful: the integrator passes state=init_state(...)")
            yh, gh = state["y_hat"], state["g_hat"]
            if gh is None:
                gh = self.diffusion(tc, t, yh)
            y1, yh1, f1, g1 = self.advance(f, tc, t, t1, (y, yh, k1, gh), dw)
            nfev += 1
            fsal = f1
            new_state = {"y_hat": yh, "g_hat": gh, "pending": (yh1, g1)}
        else:  # pragma: no cover - registry entries use the rules above
            raise ValueError(f"unknown SDE step rule {rule!r}")
        return StepResult(y1=y1, err=None, err_aux=None, ks=[], nfev=nfev, fsal=fsal, state=new_state)

    # --- reversible Heun: the augmented state (y, y_hat, f(t, y_hat), g(t, y_hat))
    def _init_state(self, f: Any, tc: TimeContext, y0: Any, **_: Any) -> dict[str, Any]:
        return {"y_hat": y0, "g_hat": None, "pending": None}

    def _after_step(self, state: dict[str, Any], accepted: Any) -> dict[str, Any]:
        if bool(accepted) and state["pending"] is not None:
            yh1, g1 = state["pending"]
            return {"y_hat": yh1, "g_hat": g1, "pending": None}
        return {"y_hat": state["y_hat"], "g_hat": state["g_hat"], "pending": None}

    def advance(self, f: Any, tc: TimeContext, t: float, t1: float, state: tuple[Any, ...], dw: Any) -> tuple[Any, ...]:
        """One reversible Heun step from ``t`` to ``t1`` on the increment ``dw``:
        ``(y, ŷ, f(t, ŷ), g(t, ŷ)) -> (y1, ŷ1, f1, g1)``."""
        y, yh, fh, gh = state
        h = t1 - t
        yh1 = 2.0 * y - yh + h * fh + self.apply(gh, dw)
        f1 = f(tc.time(t1), yh1)
        g1 = self.diffusion(tc, t1, yh1)
        y1 = y + (0.5 * h) * (fh + f1) + self.apply(0.5 * (gh + g1), dw)
        return (y1, yh1, f1, g1)

    def inverse(self, f: Any, tc: TimeContext, t: float, t1: float, state1: tuple[Any, ...], dw: Any) -> tuple[Any, ...]:
        """The augmented state at ``t`` from the one at ``t1`` on the same increment (one
        evaluation of f and of g): the step undone."""
        y1, yh1, f1, g1 = state1
        h = t1 - t
        yh = 2.0 * y1 - yh1 - h * f1 - self.apply(g1, dw)
        fh = f(tc.time(t), yh)
        gh = self.diffusion(tc, t, yh)
        y = y1 - (0.5 * h) * (fh + f1) - self.apply(0.5 * (gh + g1), dw)
        return (y, yh, fh, gh)


SDE_METHODS: Registry[SDEMethod] = Registry("SDE method")

_KP = "Kloeden & Platen, Numerical Solution of SDEs (1992)"
for _m in (
    SDEMethod("euler", "ito", strong={"general": 0.5, "commutative": 0.5, "additive": 1.0},
              weak={"general": 1.0, "commutative": 1.0, "additive": 1.0}, rule="euler",
              citation=f"Euler-Maruyama; {_KP} §10.2, §14.1"),
    SDEMethod("milstein_ito", "ito", strong={"commutative": 1.0, "additive": 1.0},
              weak={"commutative": 1.0, "additive": 1.0}, rule="milstein_ito",
              citation=f"derivative-free Milstein; {_KP} §10.3, §11.1"),
    SDEMethod("milstein_strat", "stratonovich", strong={"commutative": 1.0, "additive": 1.0},
              weak={"commutative": 1.0, "additive": 1.0}, rule="milstein_strat",
              citation=f"derivative-free Milstein, Stratonovich form; {_KP} §10.3, §11.1"),
    SDEMethod("euler_heun", "stratonovich", strong={"general": 0.5, "commutative": 1.0, "additive": 1.0},
              weak={"general": 1.0, "commutative": 1.0, "additive": 1.0}, rule="euler_heun",
              citation="Euler-Heun (torchsde's euler_heun, diffrax's EulerHeun)"),
    SDEMethod("heun", "stratonovich", strong={"general": 0.5, "commutative": 1.0, "additive": 1.0},
              weak={"general": 1.0, "commutative": 1.0, "additive": 2.0}, rule="heun", order=2,
              citation="stochastic Heun; Rümelin, SIAM J. Numer. Anal. 19 (1982)"),
    SDEMethod("reversible_heun", "stratonovich", strong={"general": 0.5, "commutative": 1.0, "additive": 1.0},
              weak={"general": 1.0, "commutative": 1.0, "additive": 1.0}, rule="reversible_heun", order=2,
              reversible=True,
              citation="Kidger, Foster, Li & Lyons, Efficient and Accurate Gradients for Neural SDEs, NeurIPS 2021"),
):
    SDE_METHODS.register(_m.name, _m)

__all__ = ["NOISE_CLASSES", "SDEMethod", "SDEStepper", "SDE_METHODS"]
