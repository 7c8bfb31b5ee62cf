"""Explicit Runge–Kutta steps driven by a Butcher tableau (one code path for every method)."""
from __future__ import annotations

from typing import Any

import numpy as np

from ..tableaus import ButcherTableau
from .base import StepResult, TimeContext, lincomb, step_combination


class ExplicitRK:
    """An explicit Runge–Kutta method defined entirely by its tableau.

    Stages are collected in a list (functional updates only, so the same code
    differentiates on PyTorch and JAX). FSAL methods return the last stage as ``fsal``.
    Dense output uses the tableau's continuous extension when it has one (evaluating its
    extra stages lazily, only for steps that contain an output time), else the cubic
    Hermite interpolant through (y0, f0, y1, f1), which is third-order.
    """

    def __init__(self, tableau: ButcherTableau) -> None:
        if not tableau.explicit:
            raise ValueError(f"tableau {tableau.name!r} is implicit; ExplicitRK needs an explicit tableau")
        self.tableau = tableau
        self.name = tableau.name
        self._v = v = tableau.float_view()
        self.order = v.order
        self.embedded_order = v.embedded_order
        self.adaptive = v.b_err is not None
        self.has_dense = v.dense_P is not None
        # the cubic Hermite fallback is third order, but no better than the step it interpolates
        self.dense_order = tableau.dense.order if tableau.dense is not None else min(3, tableau.order)
        self.fsal = v.fsal
        self.stages = v.stages
        # the extra dense stage that is f(t+h, y1) (c = 1, row = b) costs nothing: it is
        # the next step's first stage
        self._extra_is_fsal = [
            c == 1.0 and list(row[: v.stages]) == list(v.b) and not any(row[v.stages:])
            for c, row in zip(v.dense_extra_c, v.dense_extra_A)
        ]

    def __repr__(self) -> str:
        return f"ExplicitRK({self.name!r}, order={self.order}, embedded_order={self.embedded_order})"

    @property
    def error_order(self) -> int:
        """How the error estimate scales, err ~ h^k; the controller uses exponents 1/k.

        k = min(order, embedded order) + 1 for one embedded estimate. DOP853 combines its
        5th- and 3rd-order estimates as e5^2 / sqrt(e5^2 + 0.01 e3^2) ~ h^(2*6 - 4) = h^8
        (scipy's DOP853 ``error_estimator_order = 7``, Hairer's exponent 1/8).
        """
        if self.embedded_order is None:
            return self.order + 1
        k = min(self.order, self.embedded_order) + 1
        aux = self.tableau.aux_order
        if self._v.b_err_aux is not None and aux is not None:
            return 2 * k - (aux + 1)
        return k

    def step(self, f: Any, tc: TimeContext, y: Any, h: np.ndarray, k1: Any, *, estimate: bool) -> StepResult:
        v = self._v
        ks = [k1]
        nfev = 0
        y_last = None
        for i in range(1, v.stages):
            yi = step_combination(tc, y, h, v.A[i][:i], ks)
            ks.append(f(tc.time(tc.t + v.c[i] * h), yi))
            nfev += 1
            y_last = yi
        if v.fsal:
            y1 = y_last  # the last stage is evaluated at y1 itself
            fsal = ks[-1]
        else:
            y1 = step_combination(tc, y, h, v.b, ks)
            fsal = None
        err = err_aux = None
        if estimate and v.b_err is not None:
            err = self._scaled(tc, h, v.b_err, ks)
            if v.b_err_aux is not None:
                err_aux = self._scaled(tc, h, v.b_err_aux, ks)
        return StepResult(y1=y1, err=err, err_aux=err_aux, ks=ks, nfev=nfev, fsal=fsal)

    @staticmethod
    def _scaled(tc: TimeContext, h: np.ndarray, coeffs: list[float], ks: list[Any]) -> Any:
        """h * sum_j coeffs[j] * ks[j]"""
        if not tc.per_sample:
            hf = float(h)
            return lincomb([hf * c for c in coeffs], ks)
        return tc.scale(h) * lincomb(coeffs, ks)

    def extra_stages(self, f: Any, tc: TimeContext, y0: Any, h: np.ndarray, ks: list[Any], k_end: Any) -> tuple[list[Any], int]:
        """The stages of the continuous extension beyond the main ones (DOP853's 14–16)."""
        v = self._v
        all_ks = list(ks)
        nfev = 0
        for c, row, is_fsal in zip(v.dense_extra_c, v.dense_extra_A, self._extra_is_fsal):
            if is_fsal:
                all_ks.append(k_end)
                continue
            yi = step_combination(tc, y0, h, list(row), all_ks)
            all_ks.append(f(tc.time(tc.t + c * h), yi))
            nfev += 1
        return all_ks, nfev

    def dense_weights(self, theta: np.ndarray) -> np.ndarray:
        """b_i(theta) for every stage (main + extra): shape theta.shape + (stages,)."""
        P = np.asarray(self._v.dense_P, dtype=np.float64)  # (stages, degree)
        powers = np.stack([theta ** (j + 1) for j in range(P.shape[1])], axis=-1)
        return powers @ P.T


class StepInterpolant:
    """Dense output inside one accepted step, evaluated at any theta in [0, 1].

    Extra stages (DOP853) and f(t + h, y1) (the Hermite fallback of methods without a
    continuous extension) are computed on first use only and cached; ``k_end`` then holds
    f(t + h, y1) so the integrator can reuse it as the next step's first stage.
    """

    def __init__(self, solver: "ExplicitRK", f: Any, tc: TimeContext, y0: Any, y1: Any, h: np.ndarray,
                 res: StepResult, k1: Any) -> None:
        self.solver, self.f, self.y0, self.y1, self.h, self.res, self.k1 = solver, f, y0, y1, h, res, k1
        t = tc.t.copy() if isinstance(tc.t, np.ndarray) else tc.t
        self.tc = TimeContext(tc.xp, tc.dtype, tc.device, tc.per_sample, t)
        self.k_end = res.fsal
        self._extra: list[Any] | None = None
        self.nfev = 0

    def _end_derivative(self) -> Any:
        if self.k_end is None:
            self.k_end = self.f(self.tc.time(self.tc.t + self.h), self.y1)
            self.nfev += 1
        return self.k_end

    def __call__(self, theta: np.ndarray) -> Any:
        s, tc = self.solver, self.tc
        if s.has_dense:
            if self._extra is None:
                k_end = self._end_derivative() if s._v.dense_extra_c else self.k_end
                self._extra, nf = s.extra_stages(self.f, tc, self.y0, self.h, self.res.ks, k_end)
                self.nfev += nf
            inc = weighted_sum(tc, s.dense_weights(np.asarray(theta, dtype=np.float64)), self._extra)
            return self.y0 + tc.scale(self.h) * inc
        return hermite(tc, self.y0, self.y1, self.k1, self._end_derivative(), self.h, np.asarray(theta, dtype=np.float64))


def hermite(tc: TimeContext, y0: Any, y1: Any, f0: Any, f1: Any, h: np.ndarray, theta: np.ndarray) -> Any:
    """Cubic Hermite interpolant at y(t0 + theta h) (third-order dense output)."""
    th = theta
    w = [2 * th**3 - 3 * th**2 + 1, h * (th**3 - 2 * th**2 + th), -2 * th**3 + 3 * th**2, h * (th**3 - th**2)]
    ws = [tc.scale(wi) for wi in w]
    return y0 * ws[0] + f0 * ws[1] + y1 * ws[2] + f1 * ws[3]


def weighted_sum(tc: TimeContext, weights: np.ndarray, ks: list[Any]) -> Any:
    """sum_i weights[..., i] * ks[i] with per-sample or shared weights."""
    if not tc.per_sample:
        return lincomb([float(w) for w in weights], ks)
    acc = None
    for i, k in enumerate(ks):
        wi = weights[..., i]
        if not np.any(wi):
            continue
        term = k * tc.scale(wi)
        acc = term if acc is None else acc + term
    return acc
