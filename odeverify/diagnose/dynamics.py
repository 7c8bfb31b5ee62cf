"""The dynamics of a user's vector field: chaos, vanishing and exploding sensitivity.

Three measurements, each a :class:`~odeverify.records.Record` with a verdict, a threshold and a
recommendation, computed through odeverify's own loop (:func:`odeverify.integrate.solve`) on
NumPy callables ``f(t, z)`` (``z`` of shape ``(B, n)``), with the Jacobian ``J = df/dz`` from
``jac(t, z) -> (B, n, n)`` when the model supplies one (autodiff) and central differences of
``f`` otherwise:

- ``diagnose_lyapunov``: the finite-time Lyapunov spectrum by the tangent-space method with
  periodic re-orthonormalisation (Benettin, Galgani, Giorgilli & Strelcyn, *Meccanica* 15,
  1980; Shimada & Nagashima, *Prog. Theor. Phys.* 61, 1979): the state and ``k`` tangent
  vectors ``Q' = J Q`` are solved over an interval, ``Q = Q' R`` by QR, ``log|R_ii|`` summed;
  the exponents are the sums over the elapsed time. The interval adapts so that the tangent
  vectors' growth ratio stays below :data:`MAX_LOG_RATIO` (well inside float64). Self-check:
  with the full spectrum, ``sum lambda_i = (1/T) int tr J dt`` exactly (Liouville), the trace
  integrated as a separate component of the same solve, not through the tangent vectors.
- ``diagnose_sensitivity``: the singular values of the flow map's Jacobian ``dz(t)/dz(t0)``
  (the variational equation ``Phi' = J Phi``, ``Phi(t0) = I``) at a sweep of horizons, their
  exponential rates (least-squares slopes of ``log sigma`` against ``t``), and the norm of the
  loss gradient ``dL/dz(t0) = Phi^T dL/dz(t)`` through time.
- ``diagnose_gradient_spread``: the spread of ``dL/dz0`` when ``z0`` is perturbed at the
  scale of the solver's tolerance (what chaos does to a gradient).

Reference values used by the tests: Lorenz (sigma 10, rho 28, beta 8/3) has largest exponent
0.9056 (Sprott, *Chaos and Time-Series Analysis*, Oxford 2003, Table A.1) and spectrum sum
``-(sigma + 1 + beta) = -13.667``; a linear field ``A z`` has exponents ``Re eig(A)`` and flow
map ``expm(A t)``.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..integrate import solve
from ..records import Record

#: a flow-map singular value above this at the horizon: exploding sensitivity
EXPLODE = 1e3
#: every singular value below this at the horizon: vanishing sensitivity (dL/dz0 <= sigma_max |dL/dz(T)|)
VANISH = 1e-3
#: the gradient's relative change under a perturbation of z0 of relative size rtol above this
#: multiple of rtol is flagged (the same factor the gradient properties allow a gradient's error)
SPREAD_FACTOR = 100.0
#: a positive largest exponent counts when perturbations grow by more than this factor over the horizon
GROWTH_FLAG = 10.0
#: the re-orthonormalisation interval halves when the ratio of two tangent vectors' growth over
#: one interval exceeds exp(MAX_LOG_RATIO) (the weakest direction then keeps ~eps e^16 ~ 2e-9 of
#: relative accuracy) and doubles below exp(MIN_LOG_RATIO)
MAX_LOG_RATIO, MIN_LOG_RATIO = 16.0, 4.0
#: ... or when one vector's growth over an interval exceeds exp(MAX_LOG_GROWTH) (far from overflow)
MAX_LOG_GROWTH = 100.0
#: the running estimate is re-orthonormalised at least this many times over the horizon
MIN_INTERVALS = 16
#: at most this many samples of the batch are used (the tangent state is n*k per sample)
MAX_SAMPLES = 8
#: the tolerances of the solves that measure the field itself (exponents, flow-map Jacobians)
FIELD_RTOL, FIELD_ATOL = 1e-8, 1e-10
#: the step limit of one solve of the tangent state (a stiff field ends there: see its stiffness record)
MAX_STEPS = 20_000
#: a diagnosis's budget: the steps of one variational solve (sensitivity, gradient spread) and the
#: evaluations of the whole Lyapunov run. An explicit tangent solve of a stiff field (the stiff
#: example: ~180 000 evaluations and 210 s of CPU for two samples over (0, 1)) stops there and
#: reports what it measured up to that time
DIAGNOSE_MAX_STEPS, DIAGNOSE_MAX_NFEV = 1_000, 10_000

Field = Callable[[Any, np.ndarray], np.ndarray]


# ----------------------------------------------------------------------------- inputs
def _is_model(f: Any) -> bool:
    return hasattr(f, "numpy_field") and hasattr(f, "jacobian") and hasattr(f, "z0")


def _as_field(f: Any, jac: Any) -> tuple[Field, Callable[[float, np.ndarray], np.ndarray], str]:
    """``(f, J, how)`` as NumPy float64 callables of a batch ``(B, n)``; a
    :class:`~odeverify.diagnose.model.UserModel` gives its NumPy field. Without ``jac`` the
    Jacobian is :func:`central_jacobian` of the field (for a model too: 2n batched evaluations
    of a 32-d torch MLP measured 4x cheaper here than ``UserModel.jacobian``'s n forward-mode
    products, at ~1e-10 relative error)."""
    how, model = "the given jac(t, z)", None
    if _is_model(f):
        model = f
        f = model.numpy_field()
    if not callable(f):
        raise TypeError(f"f={f!r}, but it must be a callable f(t, z) or a model with numpy_field()")
    if jac is not None and not callable(jac):
        raise TypeError(f"jac={jac!r}, but it must be None or a callable jac(t, z) -> (B, n, n)")

    if model is None:
        field_ = _per_time(f, jacobian=False)
    else:  # the model takes one time per sample itself
        def field_(t: Any, z: np.ndarray) -> np.ndarray:
            return np.asarray(f(t, z), dtype=np.float64)

    if jac is not None:
        return field_, _per_time(jac), how
    return field_, None, "central differences of f along the tangent vectors (one batched call)"


def _per_time(fun: Callable[[Any, np.ndarray], np.ndarray], jacobian: bool = True
              ) -> Callable[[Any, np.ndarray], np.ndarray]:
    """``fun(t, z)`` of one time (a field, or a Jacobian returning ``(B, n, n)`` or one ``(n, n)``
    for every sample) made to take the integrator's times: a 0-d array, or one time per sample
    (per-sample step control), grouped by distinct time. A Jacobian gets ``t`` as a float."""
    def one(t: float, z: np.ndarray) -> np.ndarray:
        if not jacobian:
            return np.asarray(fun(np.float64(t), z), dtype=np.float64)
        out = np.asarray(fun(t, z), dtype=np.float64)
        return np.broadcast_to(out, z.shape + (z.shape[-1],)) if out.ndim == 2 else out

    def J(t: Any, z: np.ndarray) -> np.ndarray:
        t = np.asarray(t, dtype=np.float64)
        if t.ndim == 0 or np.all(t == t.flat[0]):
            return one(float(t.flat[0]), z)
        out = np.empty(z.shape + ((z.shape[-1],) if jacobian else ()))
        for tv in np.unique(t):
            rows = t == tv
            out[rows] = one(float(tv), z[rows])
        return out
    return J


#: the central differences' step relative to max(1, max_j |z_j|): eps^(1/3) balances the
#: truncation error (~h^2 |f^(3)| / 6) against round-off (~eps |f| / h)
FD_STEP = np.finfo(np.float64).eps ** (1 / 3)


def directional(f: Field, t: Any, z: np.ndarray, V: np.ndarray) -> np.ndarray:
    """``J V`` (``(B, n, m)``) for the Jacobian ``J = df/dz`` at each sample of ``z`` (``(B, n)``)
    and ``m`` directions per sample ``V`` (``(B, n, m)``), by second-order central differences
    along the unit directions, step ``FD_STEP max(1, max_j |z_j|)``, scaled back by each
    direction's norm: ONE call of ``f`` on a batch of ``2 m B`` states (error ~1e-10 relative;
    exact up to round-off for a quadratic field such as Lorenz's)."""
    B, n, m = V.shape
    norms = np.linalg.norm(V, axis=1)  # (B, m)
    U = np.divide(V, norms[:, None, :], out=np.zeros_like(V), where=norms[:, None, :] > 0)
    h = FD_STEP * np.maximum(1.0, np.max(np.abs(z), axis=1))  # (B,)
    step = np.swapaxes(U, 1, 2) * h[:, None, None]  # (B, m, n)
    rows = np.concatenate([(z[:, None, :] + step).reshape(B * m, n), (z[:, None, :] - step).reshape(B * m, n)])
    t = np.asarray(t, dtype=np.float64)
    tt = t if t.ndim == 0 else np.tile(np.repeat(t, m), 2)
    out = f(tt, rows)
    d = (out[:B * m] - out[B * m:]).reshape(B, m, n) / (2 * h[:, None, None])
    return np.swapaxes(d, 1, 2) * norms[:, None, :]


def central_jacobian(f: Field, t: Any, z: np.ndarray) -> np.ndarray:
    """``df/dz`` of a batched NumPy field at ``z`` (``(B, n)``): :func:`directional` along the unit
    vectors (one call of ``f`` on ``2 n B`` states)."""
    z = np.asarray(z, dtype=np.float64)
    B, n = z.shape
    return directional(f, t, z, np.broadcast_to(np.eye(n), (B, n, n)).copy())


def _batch(z0: Any, max_samples: int | None) -> np.ndarray:
    z0 = np.asarray(z0, dtype=np.float64)
    if z0.ndim == 1:
        z0 = z0[None, :]
    if z0.ndim != 2 or z0.shape[1] == 0:
        raise ValueError(f"z0 has shape {z0.shape}, but it must be (n,) or (batch, n) with n >= 1")
    if not np.all(np.isfinite(z0)):
        raise ValueError("z0 contains non-finite values; every initial state must be finite")
    if max_samples is not None:
        if not isinstance(max_samples, (int, np.integer)) or max_samples < 1:
            raise ValueError(f"max_samples={max_samples!r}, but it must be a positive int or None")
        z0 = z0[:max_samples]
    return z0


def _defaults(f: Any, z0: Any, t_span: Any, **kw: Any) -> tuple[Any, Any, dict[str, Any]]:
    """``z0``, ``t_span`` and the keyword arguments left as None from a UserModel ``f`` (its batch,
    span, tolerances, solver and name); for a plain callable, ``z0`` and ``t_span`` are required."""
    if _is_model(f):
        z0 = f.z0 if z0 is None else z0
        t_span = f.t_span if t_span is None else t_span
        for key, attr in (("rtol", "rtol"), ("atol", "atol"), ("method", "method"), ("name", "name")):
            if key in kw and kw[key] is None:
                kw[key] = getattr(f, attr)
    elif z0 is None or t_span is None:
        raise ValueError("z0 and t_span are required with a plain callable f(t, z) (a UserModel carries its own)")
    return z0, t_span, kw


def _span(t_span: Any) -> tuple[float, float]:
    try:
        t0, t1 = (float(t) for t in t_span)
    except (TypeError, ValueError):
        raise ValueError(f"t_span={t_span!r}, but it must be a pair of numbers (t0, t1)") from None
    if not (math.isfinite(t0) and math.isfinite(t1)) or t1 <= t0:
        raise ValueError(f"t_span={t_span!r}, but it must be finite with t1 > t0")
    return t0, t1


# ----------------------------------------------------------------------------- tangent space
def tangent_rhs(jvp: Callable[[np.ndarray], np.ndarray], Q: np.ndarray) -> np.ndarray:
    """The variational equation's right-hand side ``dQ/dt = J Q`` (``(B, n, k)``), with
    ``jvp(Q) = J Q`` (a product with the model's Jacobian, or :func:`directional` differences)."""
    return jvp(Q)


def reorthonormalise(Q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(Q', log|diag R|)`` of the QR factorisation ``Q = Q' R`` per sample (``(B, n, k)``),
    ``Q'`` with the signs that make ``diag R`` positive."""
    q, r = np.linalg.qr(Q)
    d = np.diagonal(r, axis1=-2, axis2=-1)
    sign = np.where(d < 0, -1.0, 1.0)
    with np.errstate(divide="ignore"):
        return q * sign[:, None, :], np.log(np.abs(d))


def _augmented(f: Field, J: Callable | None, n: int, k: int, trace: bool = True
               ) -> Callable[[Any, np.ndarray], np.ndarray]:
    """``y = [z, Q (n k), s]`` with ``z' = f``, ``Q' = J Q``, ``s' = tr J``: with ``J`` a Jacobian
    function, or (``J`` None) by :func:`directional` differences of ``f``, the trace then from a
    separate difference along the unit vectors (only for the full spectrum, ``k = n``: its
    self-check; else ``s`` stays 0)."""
    def rhs(t: Any, y: np.ndarray) -> np.ndarray:
        B = y.shape[0]
        z = y[:, :n]
        Q = y[:, n:n + n * k].reshape(B, n, k)
        if J is not None:
            Jz = J(t, z)
            dQ = tangent_rhs(lambda V: Jz @ V, Q)
            tr = np.trace(Jz, axis1=-2, axis2=-1)
        else:
            dQ = tangent_rhs(lambda V: directional(f, t, z, V), Q)
            tr = np.trace(central_jacobian(f, t, z), axis1=-2, axis2=-1) if k == n and trace else np.zeros(B)
        return np.concatenate([f(t, z), dQ.reshape(B, n * k), tr[:, None]], axis=1)
    return rhs


@dataclass
class LyapunovResult:
    """The tangent-space run: ``exponents`` ``(B, k)`` in the order of the tangent vectors
    (descending for generic initial vectors), the running estimate ``running`` ``(m, B, k)`` at
    ``times`` ``(m,)`` (the end of each re-orthonormalisation interval), ``trace_mean`` ``(B,)``
    (``(1/T) int tr J dt``, integrated apart from the tangent vectors), ``norms`` ``(m, B)``
    (``|z|`` at ``times``), the evaluations and the solver's status."""

    exponents: np.ndarray
    times: np.ndarray
    running: np.ndarray
    trace_mean: np.ndarray
    norms: np.ndarray
    z0_norms: np.ndarray
    horizon: float
    t_start: float
    dim: int
    nfev: int
    intervals: int
    status: str = "success"
    message: str = ""
    jacobian: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def success(self) -> bool:
        return self.status == "success"


def lyapunov_spectrum(f: Any, z0: Any, t_span: Sequence[float], *, jac: Any = None, k: int | None = None,
                      transient: float = 0.0, method: str = "dop853", rtol: float = 1e-8, atol: float = 1e-10,
                      interval: float | None = None, seed: int = 0, max_samples: int | None = MAX_SAMPLES,
                      max_steps: int = MAX_STEPS, max_nfev: int | None = None) -> LyapunovResult:
    """The finite-time Lyapunov exponents of ``z' = f(t, z)`` over ``t_span`` (after solving
    ``transient`` time units first and discarding them) for every sample of ``z0``.

    ``k`` tangent vectors (default: all ``n``) start as a seeded random orthonormal set, the
    same for every sample; ``interval`` fixes the re-orthonormalisation interval (default:
    adaptive, starting at ``min(T / 16, 1 / max |J(z0)|_2)``). With ``max_nfev`` the run stops
    after the interval that exceeds that many evaluations: the exponents are then those of the
    horizon reached (``horizon``), and ``extra["stopped"]`` says so."""
    t0, t1 = _span(t_span)
    if not (isinstance(transient, (int, float)) and math.isfinite(transient) and transient >= 0):
        raise ValueError(f"transient={transient!r}, but it must be a finite number >= 0")
    fn, J, how = _as_field(f, jac)
    z = _batch(z0, max_samples)
    B, n = z.shape
    k = n if k is None else k
    if not isinstance(k, (int, np.integer)) or not 1 <= k <= n:
        raise ValueError(f"k={k!r}, but it must be an int in [1, n={n}]")
    if interval is not None and not (math.isfinite(interval) and interval > 0):
        raise ValueError(f"interval={interval!r}, but it must be None or a finite number > 0")
    nfev = 0
    if transient > 0:
        sol = solve(fn, z, (t0, t0 + transient), method=method, rtol=rtol, atol=atol, max_steps=max_steps)
        nfev += sol.stats.nfev
        if not sol.success:
            return _failed(B, n, k, t1 - t0, nfev, sol.status.code, f"the transient solve failed: {sol.message}",
                           how)
        z = np.asarray(sol.ys[-1])
        t0, t1 = t0 + transient, t1 + transient
    T = t1 - t0
    rng = np.random.default_rng(seed)
    q0, _ = np.linalg.qr(rng.standard_normal((n, k)))
    y = np.concatenate([z, np.tile(q0.reshape(1, -1), (B, 1)), np.zeros((B, 1))], axis=1)
    rhs = _augmented(fn, J, n, k)
    if interval is None:
        Jz0 = J(np.float64(t0), z) if J is not None else central_jacobian(fn, np.float64(t0), z)
        jn = float(np.max(np.linalg.norm(Jz0, ord=2, axis=(-2, -1))))
        dt = min(T / MIN_INTERVALS, 1.0 / jn if jn > 0 else math.inf)
    else:
        dt = min(interval, T)
    logsum = np.zeros((B, k))
    times, running, norms = [], [], []
    stopped = ""
    t, status, message = t0, "success", ""
    z0_norms = np.linalg.norm(z, axis=1)
    while t < t1 and status == "success":
        t_next = t1 if t + dt >= t1 - 1e-12 * T else t + dt
        sol = solve(rhs, y, (t, t_next), method=method, rtol=rtol, atol=atol, max_steps=max_steps)
        nfev += sol.stats.nfev
        if not sol.success:
            status, message = sol.status.code, f"the tangent solve failed at t = {t:.6g}: {sol.message}"
            break
        y = np.array(sol.ys[-1])
        if not np.all(np.isfinite(y)):
            status, message = "nonfinite", f"the state or the tangent vectors overflowed by t = {t_next:.6g}"
            break
        Q, logr = reorthonormalise(y[:, n:n + n * k].reshape(B, n, k))
        if not (np.all(np.isfinite(logr)) and np.all(np.isfinite(Q))):
            status, message = "nonfinite", f"the tangent vectors became non-finite or degenerate at t = {t_next:.6g}"
            break
        y[:, n:n + n * k] = Q.reshape(B, n * k)
        logsum += logr
        t = t_next
        times.append(t)
        running.append(logsum / (t - t0))
        norms.append(np.linalg.norm(y[:, :n], axis=1))
        if max_nfev is not None and nfev > max_nfev and t < t1:
            stopped = (f"stopped at t - t0 = {t - t0:.4g} of {T:.4g} after {nfev} evaluations (budget {max_nfev}):"
                       " the tangent solve is stiff for an explicit method")
            break
        if interval is None:
            spread = float(np.max(logr.max(axis=1) - logr.min(axis=1)))
            growth = float(np.max(np.abs(logr)))
            if spread > MAX_LOG_RATIO or growth > MAX_LOG_GROWTH:
                dt /= 2
            elif spread < MIN_LOG_RATIO and growth < MAX_LOG_GROWTH / 4:
                dt = min(2 * dt, T / MIN_INTERVALS)
    if not times:
        return _failed(B, n, k, T, nfev, status, message, how)
    traced = k == n or J is not None  # the difference path integrates tr J only for the full spectrum
    return LyapunovResult(exponents=running[-1] if status == "success" else np.full((B, k), np.nan),
                          times=np.asarray(times), running=np.asarray(running),
                          trace_mean=y[:, -1] / (t - t0) if traced else np.full(B, np.nan), norms=np.asarray(norms), z0_norms=z0_norms,
                          horizon=(t - t0) if stopped else T, t_start=t0, dim=n, nfev=nfev, intervals=len(times),
                          status=status, message=message, jacobian=how, extra={"stopped": stopped} if stopped else {})


def _failed(B: int, n: int, k: int, T: float, nfev: int, status: str, message: str, how: str) -> LyapunovResult:
    return LyapunovResult(exponents=np.full((B, k), np.nan), times=np.zeros(0), running=np.zeros((0, B, k)),
                          trace_mean=np.full(B, np.nan), norms=np.zeros((0, B)), z0_norms=np.zeros(B), horizon=T,
                          t_start=math.nan, dim=n, nfev=nfev, intervals=0, status=status, message=message, jacobian=how)


def spectrum_sum_error(res: LyapunovResult) -> float:
    """The largest ``|sum_i lambda_i - (1/T) int tr J|`` over the samples (full spectrum only):
    zero up to the solver's error when the tangent vectors are propagated and re-orthonormalised
    correctly, since ``sum log R_ii = log|det Phi(T)| = int tr J`` (Liouville)."""
    if res.exponents.shape[1] != res.dim:
        return math.nan
    return float(np.max(np.abs(res.exponents.sum(axis=1) - res.trace_mean)))


def late_exponent(res: LyapunovResult) -> tuple[np.ndarray, float]:
    """``(lambda_1 over the second half of the horizon per sample, that half's length)``:
    ``(S(T) - S(t_m)) / (T - t_m)`` with ``S`` the summed ``log R_11`` and ``t_m`` the first
    re-orthonormalisation at or past the middle. A transient amplification (non-normal growth,
    the approach to a neutral direction) is spent by then; chaos keeps growing."""
    elapsed = res.times - res.t_start
    mid = min(int(np.searchsorted(elapsed, res.horizon / 2)), len(res.times) - 2)
    if mid < 0:
        return res.running[-1, :, 0], float(elapsed[-1])
    sums = res.running[:, :, 0] * elapsed[:, None]
    length = float(elapsed[-1] - elapsed[mid])
    return (sums[-1] - sums[mid]) / length, length


def _norm_growth(res: LyapunovResult) -> float:
    """The largest ratio over the samples of ``max |z|`` over the second half of the horizon to
    ``max |z|`` over the first (with ``z0``): about 1 on an attractor, large for a blow-up."""
    elapsed = res.times - res.t_start
    late = elapsed > res.horizon / 2
    early = np.vstack([res.z0_norms[None, :], res.norms[~late]])
    if not late.any():
        return 1.0
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(np.max(res.norms[late].max(axis=0) / np.maximum(early.max(axis=0), 1e-300)))


def _decimate(n: int, most: int = 200) -> np.ndarray:
    return np.unique(np.linspace(0, n - 1, min(n, most)).round().astype(int)) if n else np.zeros(0, int)


# ----------------------------------------------------------------------------- records
def diagnose_lyapunov(f: Any, z0: Any = None, t_span: Sequence[float] | None = None, *, jac: Any = None,
                      rtol: float = FIELD_RTOL, atol: float = FIELD_ATOL, method: str = "dop853",
                      horizon: float | None = None, transient: float = 0.0, k: int | None = None,
                      max_samples: int | None = MAX_SAMPLES, seed: int = 0, name: str | None = None,
                      max_steps: int = MAX_STEPS, max_nfev: int | None = DIAGNOSE_MAX_NFEV) -> Record:
    """Chaotic dynamics: the largest finite-time Lyapunov exponent ``lambda_1`` over the span
    (or ``horizon`` time units from ``t_span[0]``), per sample.

    Flagged (``fail``) when, over the second half of the horizon alone (:func:`late_exponent`:
    a transient amplification is spent by then), the tangent vectors of the median sample
    still grow by more than :data:`GROWTH_FLAG` (``lambda_1 > ln 10 / (T/2)``). ``error`` when the
    full spectrum's sum disagrees with the averaged trace of ``J`` by more than
    ``100 rtol (1 + |tr J|)``: then the exponents are not to be trusted.

    ``f``: a UserModel (its batch, span and name by default) or a NumPy callable ``f(t, z)``
    with ``jac``. The exponents describe the field, so the solve is DOP853 at ``rtol`` 1e-8
    whatever the user trains with."""
    z0, t_span, kw = _defaults(f, z0, t_span, name=name)
    name = kw["name"] or "field"
    t0, t1 = _span(t_span)
    if horizon is not None and not (isinstance(horizon, (int, float)) and math.isfinite(horizon) and horizon > 0):
        raise ValueError(f"horizon={horizon!r}, but it must be None (the span) or a finite number > 0")
    T = (t1 - t0) if horizon is None else float(horizon)
    res = lyapunov_spectrum(f, z0, (t0, t0 + T), jac=jac, k=k, transient=transient, method=method, rtol=rtol,
                            atol=atol, max_samples=max_samples, seed=seed, max_steps=max_steps, max_nfev=max_nfev)
    base = dict(property="diagnose_lyapunov", method=method, problem=name, library="numpy")
    if not res.success:
        return Record(**base, measured=None, expected=None, verdict="error", status=res.status,
                      message=f"the Lyapunov estimate could not be computed: {res.message}",
                      details={"nfev": res.nfev, "horizon": T})
    T = res.horizon
    lam1 = res.exponents[:, 0]
    med = float(np.median(lam1))
    late, length = late_exponent(res)
    late_med = float(np.median(late))
    threshold = math.log(GROWTH_FLAG) / length
    full = res.exponents.shape[1] == res.dim
    sum_err = spectrum_sum_error(res) if full else None
    sum_tol = 100 * rtol * (1 + float(np.max(np.abs(res.trace_mean)))) if full else None
    growth = _norm_growth(res)
    idx = _decimate(len(res.times))
    details = {
        "exponents": res.exponents.tolist(), "lambda1": lam1.tolist(), "lambda1_median": med,
        "lambda1_late": late.tolist(), "late_length": length, "threshold": threshold, "horizon": T,
        "transient": transient, "times": res.times[idx].tolist(),
        "running_lambda1": {"median": np.median(res.running[idx, :, 0], axis=1).tolist(),
                            "min": res.running[idx, :, 0].min(axis=1).tolist(),
                            "max": res.running[idx, :, 0].max(axis=1).tolist()},
        "running_sample0": res.running[idx, 0, :].tolist(),
        "trace_mean": res.trace_mean.tolist(), "spectrum_sum_error": sum_err, "spectrum_sum_tolerance": sum_tol,
        "norm_growth": growth, "nfev": res.nfev, "intervals": res.intervals, "samples": len(lam1),
        "jacobian": res.jacobian, "rtol": rtol, "atol": atol,
        "predictability_time": (math.log(1 / (float(f.rtol) if _is_model(f) else rtol)) / late_med
                                if late_med > 0 else None),
        "stopped": res.extra.get("stopped", ""),
    }
    note = f" ({res.extra['stopped']})" if res.extra.get("stopped") else ""
    if full and not sum_err <= sum_tol:
        details["recommendation"] = "rerun with a tighter rtol (the tangent solve's error broke Liouville's identity)"
        return Record(**base, measured=late_med, expected=threshold, verdict="error", details=details,
                      message=f"the exponents' sum differs from the averaged trace of df/dz by {sum_err:.3g}"
                              f" (allowed {sum_tol:.3g}): the tangent-space estimate is not to be trusted;"
                              " tighten rtol or shorten the re-orthonormalisation interval")
    flagged = late_med > threshold
    user_rtol = float(f.rtol) if _is_model(f) else rtol
    what = (f"lambda_1 = {late_med:.4g} per time unit over the second half of T = {T:.4g} (median of {len(lam1)}"
            f" samples, {late.min():.3g} to {late.max():.3g}; {med:.4g} over all of T)")
    if flagged:
        kind = ("bounded trajectories: chaotic" if growth < GROWTH_FLAG
                else f"|z| grew {growth:.3g}x: unstable (see diagnose_sensitivity)")
        tstar = math.log(1 / user_rtol) / late_med
        msg = (f"{what}, {kind}: a perturbation at rtol = {user_rtol:g} grows as exp({late_med:.3g} t), so past"
               f" t - t0 = ln(1/rtol)/lambda_1 = {tstar:.3g} the solution and its gradient are set by the"
               " solver's errors; shorten the span below that, regularise the field's Jacobian, or do not rely"
               f" on pointwise gradients (flagged above {threshold:.3g}: growth by {GROWTH_FLAG:g}x over that half)")
        details["recommendation"] = (f"chaotic: keep the span below ln(1/rtol)/lambda_1 = {tstar:.3g} time units or"
                                     " regularise the field's Jacobian; do not trust pointwise gradients")
    else:
        details["recommendation"] = "none needed: no sustained divergence of nearby trajectories"
        msg = (f"{what}: no sustained exponential divergence (flagged above {threshold:.3g}: growth by"
               f" {GROWTH_FLAG:g}x over the second half)")
    return Record(**base, measured=late_med, expected=threshold, verdict="fail" if flagged else "pass",
                  message=msg + note, details=details)


def flow_jacobians(f: Any, z0: Any, ts: Sequence[float], *, jac: Any = None, method: str = "dop853",
                   rtol: float = 1e-8, atol: float = 1e-10, max_samples: int | None = MAX_SAMPLES,
                   batch: str = "shared", max_steps: int = MAX_STEPS) -> tuple[np.ndarray, np.ndarray, Any]:
    """``(z(ts), dz(ts)/dz(ts[0]), solution)``: shapes ``(m, B, n)`` and ``(m, B, n, n)``, from the
    variational equation ``Phi' = J Phi``, ``Phi(ts[0]) = I``, solved with ``z`` in one solve."""
    fn, J, _ = _as_field(f, jac)
    z = _batch(z0, max_samples)
    B, n = z.shape
    ts = np.asarray(ts, dtype=np.float64)
    rhs = _augmented(fn, J, n, n, trace=False)
    y0 = np.concatenate([z, np.tile(np.eye(n).reshape(1, -1), (B, 1)), np.zeros((B, 1))], axis=1)
    sol = solve(rhs, y0, (float(ts[0]), float(ts[-1])), t_eval=ts, method=method, rtol=rtol, atol=atol,
                batch=batch, max_steps=max_steps)
    ys = np.asarray(sol.ys)
    return ys[:, :, :n], ys[:, :, n:n + n * n].reshape(len(ys), B, n, n), sol


def _rate(ts: np.ndarray, logs: np.ndarray) -> float:
    """Least-squares slope of ``logs`` against ``ts``."""
    ok = np.isfinite(logs)
    if ok.sum() < 2:
        return math.nan
    return float(np.polyfit(ts[ok], logs[ok], 1)[0])


def diagnose_sensitivity(f: Any, z0: Any = None, t_span: Sequence[float] | None = None, *, jac: Any = None,
                         rtol: float = FIELD_RTOL, atol: float = FIELD_ATOL, method: str = "dop853", times: int = 16,
                         max_samples: int | None = MAX_SAMPLES, loss_grad: Callable | None = None,
                         name: str | None = None, max_steps: int = DIAGNOSE_MAX_STEPS) -> Record:
    """Vanishing and exploding sensitivity: the singular values of ``dz(t)/dz(t0)`` at
    ``times`` equally spaced horizons, per sample, with the rates of ``sigma_max`` and
    ``sigma_min`` (slopes of ``log sigma`` against ``t``), and ``|dL/dz0| = |Phi(t)^T g(t)|``
    through time for the loss gradient ``g = loss_grad(z(t))`` (default ``L = |z|^2 / 2``).

    Flagged (``fail``) when some sample's ``sigma_max`` at the end of the span exceeds
    :data:`EXPLODE` (a perturbation of ``z0``, and the gradient through ``z0``, is amplified
    that much) or falls below :data:`VANISH` (every direction of ``z0`` is forgotten: the
    gradient from ``t0`` vanishes)."""
    z0, t_span, kw = _defaults(f, z0, t_span, name=name)
    name = kw["name"] or "field"
    t0, t1 = _span(t_span)
    if not isinstance(times, (int, np.integer)) or times < 2:
        raise ValueError(f"times={times!r}, but it must be an int >= 2")
    ts = np.linspace(t0, t1, times + 1)
    base = dict(property="diagnose_sensitivity", method=method, problem=name, library="numpy")
    zs, Phi, sol = flow_jacobians(f, z0, ts, jac=jac, method=method, rtol=rtol, atol=atol,
                                  max_samples=max_samples, max_steps=max_steps)
    note = ""
    if not sol.success:
        reached = int(np.argmin(np.all(np.isfinite(Phi.reshape(len(ts), -1)), axis=1))) \
            if not np.all(np.isfinite(Phi)) else len(ts)
        if reached < 2:
            verdict = "skip" if sol.status.code == "max_steps" else "error"
            return Record(**base, measured=None, expected=None, verdict=verdict, status=sol.status.code,
                          message=f"the variational solve stopped before the first output time: {sol.message}",
                          details={"nfev": sol.stats.nfev, "recommendation": "see the stiffness and instability"
                                   " records: the field could not be integrated explicitly within the budget"})
        note = (f" (the variational solve stopped after t = {ts[reached - 1]:.4g} ({sol.status.code}):"
                " measured up to there)")
        ts, zs, Phi = ts[:reached], zs[:reached], Phi[:reached]
        t1 = float(ts[-1])
    sv = np.linalg.svd(Phi, compute_uv=False)  # (m, B, n), descending
    with np.errstate(divide="ignore"):
        log_max, log_min = np.log(sv[..., 0]), np.log(sv[..., -1])
    B = sv.shape[1]
    rate_max = np.array([_rate(ts, log_max[:, b]) for b in range(B)])
    rate_min = np.array([_rate(ts, log_min[:, b]) for b in range(B)])
    g = zs if loss_grad is None else np.asarray(loss_grad(zs), dtype=np.float64)
    grad_norm = np.linalg.norm(np.einsum("mbij,mbi->mbj", Phi, g), axis=-1)  # |Phi^T g|
    end_max = sv[-1, :, 0]
    worst_up, worst_down = int(np.argmax(end_max)), int(np.argmin(end_max))
    exploding, vanishing = bool(end_max[worst_up] > EXPLODE), bool(end_max[worst_down] < VANISH)
    details = {
        "times": ts.tolist(), "sigma_max": sv[..., 0].tolist(), "sigma_min": sv[..., -1].tolist(),
        "singular_values_end": sv[-1].tolist(), "rate_max": rate_max.tolist(), "rate_min": rate_min.tolist(),
        "grad_z0_norm": grad_norm.tolist(), "explode": EXPLODE, "vanish": VANISH,
        "condition_end": (sv[-1, :, 0] / sv[-1, :, -1]).tolist(), "nfev": sol.stats.nfev, "samples": B,
        "worst_exploding": worst_up, "worst_vanishing": worst_down, "rtol": rtol, "atol": atol,
    }
    T = t1 - t0
    if not note and _is_model(f) and getattr(f, "differentiable", False) and getattr(f, "n_params", 0) > 0:
        details.update(parameter_gradient_through_time(f, _batch(z0, max_samples), ts))

    def crossing(rate: float, level: float) -> str:
        if not math.isfinite(rate) or rate == 0 or math.log(level) / rate < 0:
            return ""
        return f" past t - t0 = {math.log(level) / rate:.3g}"

    if exploding:
        r = rate_max[worst_up]
        frac = float(np.mean(end_max > EXPLODE))
        msg = (f"exploding sensitivity: |dz(T)/dz(t0)| reaches {end_max[worst_up]:.3g} at T - t0 = {T:.4g}"
               f" (sample {worst_up}; {frac:.0%} of {B} samples above {EXPLODE:g}); it grows as exp({r:.3g} t),"
               f" crossing {EXPLODE:g}{crossing(r, EXPLODE)}: gradients through z0 are amplified that much;"
               " shorten the span, regularise the Jacobian (kinetic or Jacobian-norm penalty), clip gradients")
        measured, expected = float(end_max[worst_up]), EXPLODE
        rec_text = (f"exploding: sensitivities grow as exp({r:.3g} t); shorten the span or penalise the Jacobian"
                    " (kinetic / Jacobian-norm regularisation), clip gradients")
    elif vanishing:
        r = rate_max[worst_down]
        frac = float(np.mean(end_max < VANISH))
        msg = (f"vanishing sensitivity: every singular value of dz(T)/dz(t0) is below {end_max[worst_down]:.3g}"
               f" at T - t0 = {T:.4g} (sample {worst_down}; {frac:.0%} of {B} samples below {VANISH:g}); the"
               f" largest decays as exp({r:.3g} t), so gradients from t0 vanish{crossing(r, VANISH)};"
               " shorten the span or weaken the field's contraction")
        measured, expected = float(end_max[worst_down]), VANISH
        rec_text = (f"vanishing: sensitivities decay as exp({r:.3g} t), gradients from t0 vanish"
                    f"{crossing(r, VANISH)}; shorten the span or weaken the contraction")
    else:
        msg = (f"sensitivity within [{VANISH:g}, {EXPLODE:g}]: sigma_max of dz(T)/dz(t0) from"
               f" {end_max.min():.3g} to {end_max.max():.3g} over {B} samples (rates {np.nanmin(rate_max):.3g}"
               f" to {np.nanmax(rate_max):.3g} per time unit); the smallest singular value"
               f" {float(sv[-1, :, -1].min()):.3g}")
        measured, expected = float(end_max.max()), EXPLODE
        rec_text = "none needed: sensitivities stay within three decades over the span"
    gn = details.get("grad_theta_norm")
    if gn and gn[0] is not None and gn[-1] is not None:
        msg += (f"; |dL/dtheta| of L = |z(t)|^2/2 ({details['grad_theta_mode']} mode) is {gn[0]:.3g} at t ="
                f" {details['grad_theta_times'][0]:.3g} and {gn[-1]:.3g} at t = {details['grad_theta_times'][-1]:.3g}")
    details["recommendation"] = rec_text
    msg += note
    return Record(**base, measured=measured, expected=expected, verdict="fail" if exploding or vanishing else "pass",
                  message=msg, details=details)


#: horizons (fractions of the span) of the parameter gradient's norm through time
THETA_HORIZONS = (0.25, 0.5, 0.75, 1.0)


def parameter_gradient_through_time(model: Any, z0: np.ndarray, ts: np.ndarray) -> dict[str, Any]:
    """``|dL/dtheta|`` for ``L = |z(t)|^2 / 2`` (summed over the samples ``z0``) at the horizons
    :data:`THETA_HORIZONS` of the span: the user's gradient mode (discrete when none is given),
    solver and tolerances, through :meth:`UserModel.value_and_grad`. A gradient that fails is
    recorded as ``None`` with its status, not raised."""
    from ..gradients import Loss

    t0, t1 = float(ts[0]), float(ts[-1])
    mode = model.mode or "discrete"
    times, norms, statuses = [], [], []
    for frac in THETA_HORIZONS:
        t = t0 + frac * (t1 - t0)
        loss = Loss(t_eval=(t,), weights=np.zeros((1, model.n)), quadratic=1.0)  # 1/2 q |z|^2
        try:
            g = model.value_and_grad(mode, z0=z0, loss=loss)
            ok = g.success
            norm = math.sqrt(sum(float(np.sum(np.square(v))) for v in g.grad_params.values())) if ok else None
            statuses.append(getattr(g.status, "name", str(g.status)).lower())
        except Exception as exc:  # noqa: BLE001 - a failing gradient is a recorded status
            norm = None
            statuses.append(f"{type(exc).__name__}: {exc}")
        times.append(t)
        norms.append(norm)
    return {"grad_theta_times": times, "grad_theta_norm": norms, "grad_theta_status": statuses,
            "grad_theta_mode": mode}


def diagnose_gradient_spread(f: Any, z0: Any = None, t_span: Sequence[float] | None = None, *, jac: Any = None,
                             rtol: float | None = None, atol: float | None = None, method: str | None = None,
                             perturbations: int = 4, max_samples: int | None = 8, loss_grad: Callable | None = None,
                             seed: int = 0, name: str | None = None, max_steps: int = DIAGNOSE_MAX_STEPS) -> Record:
    """The gradient's sensitivity: ``dL/dz0 = Phi(T)^T g(z(T))`` (default ``L = |z(T)|^2 / 2``)
    at each sample and at ``perturbations`` seeded perturbations of relative size ``rtol``
    (``|dz0| = rtol max(1, |z0|)``), solved together (one step sequence, so the spread is the
    dynamics' and not the step controller's) at the user's tolerance and method. Measured: the largest relative change
    ``|grad' - grad| / |grad|``; flagged (``fail``) above :data:`SPREAD_FACTOR` ``rtol``.
    A UserModel gives its batch, span, tolerances, solver and name by default (1e-6, 1e-9 and
    dopri5 for a plain callable)."""
    z0, t_span, kw = _defaults(f, z0, t_span, rtol=rtol, atol=atol, method=method, name=name)
    rtol, atol = kw["rtol"] or 1e-6, kw["atol"] or 1e-9
    method, name = kw["method"] or "dopri5", kw["name"] or "field"
    t0, t1 = _span(t_span)
    if not isinstance(perturbations, (int, np.integer)) or perturbations < 1:
        raise ValueError(f"perturbations={perturbations!r}, but it must be a positive int")
    z = _batch(z0, max_samples)
    B, n = z.shape
    rng = np.random.default_rng(seed)
    u = rng.standard_normal((B, perturbations, n))
    u /= np.linalg.norm(u, axis=-1, keepdims=True)
    scale = rtol * np.maximum(1.0, np.linalg.norm(z, axis=-1))[:, None, None]
    zz = np.concatenate([z[:, None, :], z[:, None, :] + scale * u], axis=1).reshape(B * (perturbations + 1), n)
    base = dict(property="diagnose_gradient_spread", method=method, problem=name, library="numpy")
    zs, Phi, sol = flow_jacobians(f, zz, (t0, t1), jac=jac, method=method, rtol=rtol, atol=atol,
                                  max_samples=None, max_steps=max_steps)
    if not sol.success:
        budget = sol.status.code == "max_steps"
        return Record(**base, measured=None, expected=None, verdict="skip" if budget else "error",
                      status=sol.status.code, message=f"the variational solve failed: {sol.message}"
                      + (f" ({max_steps} steps of {method} at rtol {rtol:g}: a stiff field for this method)"
                         if budget else ""),
                      details={"nfev": sol.stats.nfev, "recommendation": "see the stiffness record"
                               if budget else "see the instability record: the solve did not reach the end"})
    zT = zs[-1]
    g = zT if loss_grad is None else np.asarray(loss_grad(zT), dtype=np.float64)
    grads = np.einsum("bij,bi->bj", Phi[-1], g).reshape(B, perturbations + 1, n)
    ref = grads[:, :1, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.linalg.norm(grads[:, 1:, :] - ref, axis=-1) / np.linalg.norm(ref, axis=-1)
    per_sample = rel.max(axis=1)
    worst = int(np.nanargmax(per_sample)) if np.any(np.isfinite(per_sample)) else 0
    measured = float(per_sample[worst])
    threshold = SPREAD_FACTOR * rtol
    details = {"relative_change": rel.tolist(), "per_sample": per_sample.tolist(), "threshold": threshold,
               "grad_norm": np.linalg.norm(ref[:, 0], axis=-1).tolist(), "perturbation": rtol,
               "perturbations": perturbations, "samples": B, "worst": worst, "nfev": sol.stats.nfev,
               "rtol": rtol, "atol": atol}
    if not math.isfinite(measured) or measured > threshold:
        msg = (f"dL/dz0 changes by {measured:.3g} (relative; sample {worst}) when z0 moves by rtol = {rtol:g}:"
               f" {measured / rtol:.3g}x the perturbation, above {SPREAD_FACTOR:g}x; the gradient is an"
               " ill-conditioned function of the input at this span (chaos or a sharp fold): gradients of"
               " nearby inputs disagree, so shorten the span, average gradients over nearby inputs,"
               " or regularise the field")
        verdict = "fail"
        details["recommendation"] = ("gradients are ill-conditioned in z0: shorten the span, average gradients over"
                                     " nearby inputs, or regularise the field")
    else:
        details["recommendation"] = "none needed: the gradient is stable under perturbations at the tolerance"
        msg = (f"dL/dz0 changes by at most {measured:.3g} (relative) when z0 moves by rtol = {rtol:g}"
               f" ({measured / rtol:.3g}x; flagged above {SPREAD_FACTOR:g}x)")
        verdict = "pass"
    return Record(**base, measured=measured, expected=threshold, verdict=verdict, message=msg, details=details)
