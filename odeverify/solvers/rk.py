"""Explicit Runge–Kutta steps driven by a Butcher tableau (one code path for every method)."""
from __future__ import annotations

import math
import os
import weakref
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import _xp
from ..tableaus import ButcherTableau
from .base import StepResult, TimeContext, lincomb, step_combination

#: ``ODEVERIFY_COMPILED=0`` makes ``solve(compiled=None)`` run the eager step (see :func:`compiled_default`)
COMPILED_ENV = "ODEVERIFY_COMPILED"


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

    def coefficient_key(self) -> tuple:
        """Every coefficient the step uses (c, A, b, b_err, b_err_aux, FSAL): part of the
        compiled-step cache key, so a tableau with one perturbed weight never reuses another's
        compiled step."""
        v = self._v
        return (v.stages, v.fsal, tuple(v.c), tuple(tuple(r) for r in v.A), tuple(v.b),
                None if v.b_err is None else tuple(v.b_err),
                None if v.b_err_aux is None else tuple(v.b_err_aux))

    def fast_stepper(self, f: Any, tc: TimeContext, y0: Any, *, estimate: bool, rtol: Any, atol: Any,
                     compiled: bool | None) -> "FusedTorchStep | CompiledJaxStep | None":
        """The step as one compiled function (JAX) or with fused stage combinations (PyTorch)
        for one solve, or None where the eager :meth:`step` runs.

        ``compiled=True``: JAX compiles now (or reuses the cached step), PyTorch fuses.
        ``compiled=None`` (auto): JAX uses the compiled step for a field it has solved
        before (a fresh closure per solve would compile every time, 0.3-2 s, more than most
        eager solves cost); PyTorch stays eager (fusing was measured not to pay on CPU:
        ``benchmarks/overhead.py``). NumPy, array-api-strict, traced JAX values and
        per-sample JAX steps are always eager; the caller also drops a fast step whose
        first stage records a gradient (:meth:`FusedTorchStep.usable`).

        ``f`` is the user's field (uncounted): the fast step reports its evaluations in
        ``nfev``. Its results carry the error estimate's RMS norms, already scaled by
        ``atol + rtol * max(|y|, |y1|)`` (:class:`FastStepResult`).
        """
        library = _xp.library_name(tc.xp)
        if library == "torch" and compiled:
            return FusedTorchStep(self, tc, y0, estimate=estimate)
        if library == "jax" and not tc.per_sample and not _xp.is_traced(y0):
            if compiled or CompiledJaxStep.seen(f):
                return CompiledJaxStep.get(self, f, y0, estimate=estimate, rtol=rtol, atol=atol)
        return None

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
            out = lincomb([hf * c for c in coeffs], ks)
            # every h * c underflowed (a span of a few subnormals): the combination is zero
            return out if out is not None else ks[0] * 0.0
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


def rms(xp: Any, x: Any, per_sample: bool) -> Any:
    """Root mean square over the state (per sample, a NumPy array) or over everything (shared,
    a float): the error norm of the time loop and of the fused step."""
    x = _xp.stop_gradient(x)
    if per_sample:
        axes = tuple(range(1, x.ndim))
        norm = xp.linalg.vector_norm(x, axis=axes) if axes else xp.abs(x)
        return np.asarray(_xp.to_numpy(norm), dtype=np.float64) / math.sqrt(math.prod(x.shape[1:]))
    return float(_xp.to_numpy(xp.linalg.vector_norm(x))) / math.sqrt(math.prod(x.shape))


def compiled_default() -> bool:
    """``solve(compiled=None)``: the fast step unless ``ODEVERIFY_COMPILED`` is ``0``, ``false``,
    ``no`` or ``off``."""
    return os.environ.get(COMPILED_ENV, "1").strip().lower() not in ("0", "false", "no", "off")


@dataclass
class FastStepResult(StepResult):
    """A :class:`StepResult` of a fused or compiled step: the error estimate comes as its RMS
    norms (``err_rms``: the main one, and DOP853's second one or None), scaled by
    ``atol + rtol * max(|y|, |y1|)``, instead of the arrays ``err``/``err_aux``."""

    err_rms: Any = None  #: (e5, e3 or None): host floats
    k1: Any = None  #: f(t, y), the first stage (computed by the step when it was not given)
    abs_y1: Any = None  #: |y1|, the next step's error scale
    finite: bool | None = None  #: whether y1 is finite (fixed-step mode)


class FusedTorchStep:
    """The explicit RK step on PyTorch with each stage combination fused: the stage derivatives
    go into one ``(stages, size)`` buffer (allocated once per solve) and every combination
    ``y + h sum_j a_ij k_j``, and each error estimate, is one ``addmm`` instead of ``i``
    multiply-adds. The sums run in BLAS's order, so results may differ from the eager step in
    the last bits, and a zero coefficient times a non-finite stage gives NaN where the eager
    step skips the term; the loop, the controller and the counts are the eager ones. Not for
    autograd (the buffer is written in place): :meth:`ExplicitRK.fast_stepper` refuses when
    autograd records."""

    def __init__(self, solver: ExplicitRK, tc: TimeContext, y0: Any, *, estimate: bool) -> None:
        v = solver._v
        xp, s = tc.xp, v.stages
        self.v, self.xp = v, xp
        self.estimate = estimate and v.b_err is not None
        rows = [list(v.A[i][:i]) for i in range(s)] + [list(v.b)]
        if self.estimate:
            rows += [list(v.b_err)] + ([list(v.b_err_aux)] if v.b_err_aux is not None else [])
        coeffs = _xp.coefficient_matrix(rows, y0)
        buf = _xp.stage_buffer(y0, s)
        #: per stage i: (its coefficient row (1, i), the stages it combines (i, size))
        self.combos = [(coeffs[i:i + 1, :i], buf[:i]) for i in range(s)]
        self.out_row = (coeffs[s:s + 1, :s], buf)
        self.err_rows = [coeffs[r:r + 1, :s] for r in range(s + 1, len(rows))]
        self.slots = [xp.reshape(buf[i], y0.shape) for i in range(s)]  # views of the buffer's rows
        self.buf = buf
        # the last stage enters a combination only through y1 (non-FSAL) or the error estimates
        self.store_last = self.estimate or not v.fsal
        self.per_sample = tc.per_sample
        self._addmm, self._mm = _xp.stage_matmuls(y0)

    @staticmethod
    def usable(k1: Any) -> bool:
        """False when autograd records the first stage (the buffer is written in place)."""
        return not _xp.records_gradient(k1)

    def _rms(self, x: Any) -> Any:
        return rms(self.xp, x, self.per_sample)

    def __call__(self, f: Any, tc: TimeContext, y: Any, h: Any, k1: Any, abs_y: Any, rtol: Any,
                 atol: Any) -> FastStepResult:
        v, xp, s = self.v, self.xp, self.v.stages
        nfev = s - 1
        if k1 is None:
            k1 = f(tc.time(tc.t), y)
            nfev += 1
        shape, slots, addmm = y.shape, self.slots, self._addmm
        shared = not self.per_sample
        hs = float(h) if shared else 1.0
        scale = None if shared else tc.scale(h)
        y_row = y.reshape(1, -1)  # a view: addmm's bias row
        slots[0].copy_(k1)
        ks = [k1]
        yi = y
        for i in range(1, s):
            row, rows = self.combos[i]
            if shared:
                yi = addmm(y_row, row, rows, alpha=hs).view(shape)
            else:
                yi = y + scale * self._mm(row, rows).view(shape)
            k = f(tc.time(tc.t + v.c[i] * h), yi)
            ks.append(k)
            if i < s - 1 or self.store_last:
                slots[i].copy_(k)
        if v.fsal:
            y1, fsal = yi, ks[-1]
        else:
            row, rows = self.out_row
            y1 = addmm(y_row, row, rows, alpha=hs).view(shape) if shared else y + scale * self._mm(row, rows).view(shape)
            fsal = None
        res = FastStepResult(y1=y1, err=None, err_aux=None, ks=ks, nfev=nfev, fsal=fsal, k1=k1)
        if not self.estimate:
            return res
        abs_y1 = xp.abs(y1)
        sc = atol + rtol * xp.maximum(abs_y, abs_y1)
        rms = []
        for row in self.err_rows:
            e = self._mm(row, self.buf).view(shape)
            e = e.mul_(hs) if shared else scale * e
            rms.append(self._rms(e / sc))
        res.err_rms = (rms[0], rms[1] if len(rms) > 1 else None)
        res.abs_y1 = abs_y1
        return res


class _StageRows(Sequence):
    """The stage derivatives of a compiled step as a read-only list, sliced from the stacked
    ``(stages, ...)`` array only when the dense output asks (a slice is a dispatch)."""

    def __init__(self, stacked: Any, count: int) -> None:
        self._stacked, self._count = stacked, count
        self._rows: list[Any] = [None] * count

    def __len__(self) -> int:
        return self._count

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(self._count))]
        if i < 0:
            i += self._count
        if not 0 <= i < self._count:
            raise IndexError(i)
        if self._rows[i] is None:
            self._rows[i] = self._stacked[i]
        return self._rows[i]


class CompiledJaxStep:
    """The explicit RK step on JAX as ONE jitted function: the stages, their combinations, the
    solution, the embedded estimates and their scaled RMS norms; a step is one dispatch and one
    transfer of the norms to the host. The loop (control, output, counts) stays in
    ``integrate.solve``, which also takes the first stage and the norms of the automatic
    initial step from here (:meth:`start`, :meth:`probe`: one dispatch each, instead of a
    dozen eager operations).

    Compiled once per (vector field, coefficients, state shape and dtype, tolerance shapes,
    estimate): an LRU of :data:`CACHE_SIZE` entries holds them (and with them the vector
    fields, which are part of the key). Host values (step, stage times, scalar tolerances) go
    in as one float64 vector, the stage times computed on the host exactly as the eager step
    computes them; each combination adds its terms in the eager step's order (zero
    coefficients skipped). XLA may still contract a multiply and an add, so results can differ
    from the eager step in the last bits.
    """

    CACHE_SIZE = 64
    _cache: "OrderedDict[tuple, CompiledJaxStep | None]" = OrderedDict()
    _seen: "weakref.WeakSet[Any]" = weakref.WeakSet()
    #: counts, for tests and benchmarks: traces (one per compiled function), cache hits and
    #: misses, fields that could not be traced
    stats = {"traces": 0, "hits": 0, "misses": 0, "failures": 0}

    @classmethod
    def seen(cls, f: Any) -> bool:
        """Whether ``f`` was solved before (auto mode compiles from its second solve on); marks it."""
        try:
            if f in cls._seen:
                return True
            cls._seen.add(f)
        except TypeError:  # not weakly referenceable
            pass
        return False

    @classmethod
    def get(cls, solver: ExplicitRK, f: Any, y0: Any, *, estimate: bool, rtol: Any, atol: Any) -> "CompiledJaxStep | None":
        estimate = estimate and solver._v.b_err is not None
        tol_shape = tuple(None if isinstance(x, float) else tuple(x.shape) for x in (rtol, atol))
        key = (f, solver.coefficient_key(), tuple(y0.shape), str(y0.dtype), tol_shape, estimate)
        try:
            hash(key)
        except TypeError:  # an unhashable callable object: no cache entry, so the eager step
            return None
        if key in cls._cache:
            cls.stats["hits"] += 1
            cls._cache.move_to_end(key)
            return cls._cache[key]
        cls.stats["misses"] += 1
        entry = cls(solver, f, estimate, scalar_tols=tol_shape == (None, None))
        entry.key = key
        cls._cache[key] = entry
        while len(cls._cache) > cls.CACHE_SIZE:
            cls._cache.popitem(last=False)
        return entry

    @classmethod
    def clear(cls) -> None:
        cls._cache.clear()
        cls._seen = weakref.WeakSet()

    def __init__(self, solver: ExplicitRK, f: Any, estimate: bool, scalar_tols: bool) -> None:
        v = solver._v
        self.v, self.estimate, self.scalar_tols, self.key = v, estimate, scalar_tols, None
        A = [list(r) for r in v.A]
        b, b_err, b_err_aux, fsal, s = list(v.b), v.b_err, v.b_err_aux, v.fsal, v.stages
        stats = self.stats
        jnp = _xp.get_namespace("jax")  # jax.numpy (the import stays in _xp)

        def lincomb(h: Any, row: list[float], ks: list[Any], base: Any) -> Any:
            # the eager step's sum: base + k_0 * (h a_0) + k_1 * (h a_1) + ..., zeros skipped
            acc = base
            for a, k in zip(row, ks):
                if a == 0.0:
                    continue
                term = k * (h * a).astype(k.dtype)  # as the eager step's Python float
                acc = term if acc is None else acc + term
            return acc

        def tolerances(host: Any, tols: Any, dtype: Any) -> tuple[Any, Any]:
            # scalar tolerances ride at the end of the host vector; arrays come in tols
            if tols is None:
                return host[-2].astype(dtype), host[-1].astype(dtype)
            return tols

        def norm(x: Any) -> Any:
            return jnp.linalg.vector_norm(x).astype(jnp.float64)

        def step(host: Any, y: Any, k1: Any, tols: Any) -> Any:
            # host: float64 [h, t_0, ..., t_{s-1}(, rtol, atol)]
            stats["traces"] += 1  # runs only while tracing: one per compilation
            h = host[0]
            ks = [f(host[1].astype(y.dtype), y) if k1 is None else k1]
            y_last = None
            for i in range(1, s):
                yi = lincomb(h, A[i][:i], ks, y)
                ks.append(f(host[1 + i].astype(y.dtype), yi))
                y_last = yi
            y1 = y_last if fsal else lincomb(h, b, ks, y)
            norms = [jnp.all(jnp.isfinite(y1)).astype(jnp.float64)]
            if estimate:
                rtol, atol = tolerances(host, tols, y.dtype)
                sc = atol + rtol * jnp.maximum(jnp.abs(y), jnp.abs(y1))
                norms += [norm(lincomb(h, row, ks, None) / sc) for row in (b_err, b_err_aux) if row is not None]
            return y1, ks[0], ks[-1], jnp.stack(ks), jnp.stack(norms)

        def start(host: Any, y0: Any, tols: Any) -> Any:
            # host: [t0(, rtol, atol)] -> f(t0, y0) and the norms of y0 and f0 scaled by
            # atol + |y0| rtol (the initial step's d0, d1)
            stats["traces"] += 1
            f0 = f(host[0].astype(y0.dtype), y0)
            rtol, atol = tolerances(host, tols, y0.dtype)
            sc = atol + jnp.abs(y0) * rtol
            return f0, jnp.stack([norm(y0 / sc), norm(f0 / sc)])

        def probe(host: Any, y0: Any, f0: Any, tols: Any) -> Any:
            # host: [t0 + h0, h0(, rtol, atol)] -> the norm of (f(t0 + h0, y0 + h0 f0) - f0) scaled
            stats["traces"] += 1
            rtol, atol = tolerances(host, tols, y0.dtype)
            sc = atol + jnp.abs(y0) * rtol
            f1 = f(host[0].astype(y0.dtype), y0 + host[1].astype(y0.dtype) * f0)
            return norm((f1 - f0) / sc)

        self._fn = _xp.jit(step)
        self._start = _xp.jit(start)
        self._probe = _xp.jit(probe)

    def fail(self) -> None:
        """The field could not be traced (or closes over traced values): later solves of this
        key run the eager step."""
        self.stats["failures"] += 1
        if self.key is not None and self.key in self._cache:
            self._cache[self.key] = None

    def _host(self, values: list[float], rtol: Any, atol: Any) -> tuple[np.ndarray, Any]:
        if self.scalar_tols:
            return np.asarray(values + [rtol, atol], dtype=np.float64), None
        return np.asarray(values, dtype=np.float64), (rtol, atol)

    def start(self, t0: float, y0: Any, rtol: Any, atol: Any) -> tuple[Any, tuple[float, float]]:
        """``f(t0, y0)`` and the RMS norms of ``y0`` and ``f0`` over ``atol + |y0| rtol``
        (host floats); one evaluation."""
        host, tols = self._host([t0], rtol, atol)
        f0, d = self._start(host, y0, tols)
        if _xp.is_traced(f0):  # f closes over traced values: nothing of this may be cached
            raise TypeError("the vector field closes over traced JAX values")
        d = np.asarray(d)
        size = math.sqrt(math.prod(y0.shape))
        return f0, (float(d[0]) / size, float(d[1]) / size)

    def probe(self, t: float, h: float, y0: Any, f0: Any, rtol: Any, atol: Any) -> float:
        """The RMS norm of ``f(t, y0 + h f0) - f0`` over ``atol + |y0| rtol``; one evaluation."""
        host, tols = self._host([t, h], rtol, atol)
        return float(np.asarray(self._probe(host, y0, f0, tols))) / math.sqrt(math.prod(y0.shape))

    def __call__(self, f: Any, tc: TimeContext, y: Any, h: Any, k1: Any, abs_y: Any, rtol: Any,
                 atol: Any) -> FastStepResult:
        v = self.v
        hf = float(h)
        t = float(tc.t)
        host, tols = self._host([hf, t] + [t + v.c[i] * hf for i in range(1, v.stages)], rtol, atol)
        y1, k_first, k_last, stacked, info = self._fn(host, y, k1, tols)
        info = np.asarray(info)
        size = math.sqrt(math.prod(y.shape))
        res = FastStepResult(y1=y1, err=None, err_aux=None, ks=_StageRows(stacked, v.stages),  # type: ignore[arg-type]
                             nfev=v.stages - 1 + (k1 is None), fsal=k_last if v.fsal else None, finite=bool(info[0]),
                             k1=k_first if k1 is None else k1)
        if self.estimate:
            res.err_rms = (float(info[1]) / size, float(info[2]) / size if info.shape[0] > 2 else None)
        return res


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
        self.tc = TimeContext(tc.xp, tc.dtype, tc.device, tc.per_sample, t, tc.window)
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
