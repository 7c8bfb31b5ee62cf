"""The only time loop: ``solve(f, y0, t_span, ...) -> Solution``.

Written once against the Array API: ``y0`` may be a NumPy, PyTorch, JAX or
array-api-strict array and every state operation stays in that library (so PyTorch and
JAX can differentiate through it). Times, step sizes and control decisions are float64
values on the host: Python floats for a shared step, NumPy arrays per sample, both run by the
same code through :data:`odeverify.control.SCALAR` / :data:`~odeverify.control.ARRAY`. Every
decision goes through :func:`odeverify._xp.to_numpy`, which drops gradients, before it
becomes a float.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from . import _xp
from .control import ARRAY, SCALAR, PIController
from .solution import Solution, Stats, Status
from .solvers import SOLVERS
from .solvers.base import TimeContext
from .solvers.rk import CompiledJaxStep, ExplicitRK, FastStepResult, FusedTorchStep, StepInterpolant, compiled_default
from .solvers.rk import rms as _rms

BATCH_MODES = ("shared", "per-sample")


# ----------------------------------------------------------------------------- validation
def _finite_float(name: str, value: Any) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name}={value!r}, but it must be a real number") from None
    if not math.isfinite(out):
        raise ValueError(f"{name}={value!r}, but it must be finite")
    return out


def _tolerance(name: str, value: Any, n: int, xp: Any, dtype: Any, device: Any) -> Any:
    arr = np.asarray(_xp.to_numpy(value) if _xp.is_array(value) else value, dtype=np.float64)
    if arr.ndim > 1 or (arr.ndim == 1 and arr.shape[0] != n):
        raise ValueError(f"{name} has shape {arr.shape}, but it must be a scalar or have shape ({n},)")
    if not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        raise ValueError(f"{name}={value!r}, but it must be finite and > 0 (every entry)")
    if arr.ndim == 0:
        return float(arr)
    return xp.asarray(arr, dtype=dtype, device=device)


def _check_output(name: str, out: Any, y: Any) -> None:
    if not _xp.is_array(out):
        kind = f"{_xp.library_name(_xp.namespace(y))}.{type(y).__name__}"
        raise TypeError(
            f"the vector field f returned {type(out).__name__}, expected an array of the state's library"
            f" ({kind}) of shape {tuple(y.shape)}"
        )
    if tuple(out.shape) != tuple(y.shape):
        raise ValueError(
            f"the vector field f returned shape {tuple(out.shape)}, but the state has shape"
            f" {tuple(y.shape)}; f(t, y) must return an array of y's shape"
        )
    if out.dtype != y.dtype:
        raise TypeError(
            f"the vector field f returned dtype {out.dtype}, but the state has dtype {y.dtype};"
            " f(t, y) must keep y's dtype"
        )


def resolve_solver(method: Any) -> ExplicitRK:
    if isinstance(method, str):
        return SOLVERS.get(method)
    if hasattr(method, "step") and hasattr(method, "order"):
        return method
    raise TypeError(f"method={method!r}, but it must be a solver name (str) or a solver object")


# ----------------------------------------------------------------------------- helpers
def error_scale(xp: Any, abs_y: Any, abs_y1: Any, rtol: Any, atol: Any) -> Any:
    """atol + rtol * max(|y|, |y1|), from |y| and |y1| (the loop keeps |y1| for the next step)."""
    return atol + rtol * xp.maximum(abs_y, abs_y1)


def scaled_error_norm(xp: Any, err: Any, err_aux: Any, scale: Any, per_sample: bool) -> Any:
    """RMS norm of err / scale: a float (shared) or a NumPy array (per sample). DOP853 combines
    its two estimates as e5^2 / sqrt(e5^2 + 0.01 e3^2)."""
    e5 = _rms(xp, err / scale, per_sample)
    e3 = None if err_aux is None else _rms(xp, err_aux / scale, per_sample)
    return combine_error_norms(e5, e3, per_sample)


def combine_error_norms(e5: Any, e3: Any, per_sample: bool) -> Any:
    """The error norm from the RMS norms of the scaled estimates: e5 alone, or DOP853's
    e5^2 / sqrt(e5^2 + 0.01 e3^2) (host arithmetic, shared by the eager and the fast steps)."""
    if e3 is None:
        return e5
    ops = ARRAY if per_sample else SCALAR
    sq5 = e5 * e5
    denom = ops.sqrt(sq5 + 0.01 * (e3 * e3))
    with np.errstate(invalid="ignore", divide="ignore"):
        return ops.where(denom > 0, sq5 / ops.where(denom > 0, denom, 1.0), 0.0)


def error_norm(xp: Any, err: Any, err_aux: Any, y: Any, y1: Any, rtol: Any, atol: Any, per_sample: bool) -> Any:
    """RMS norm of the scaled error estimate (Hairer's; DOP853 combines its two estimates)."""
    return scaled_error_norm(xp, err, err_aux, error_scale(xp, xp.abs(y), xp.abs(y1), rtol, atol), per_sample)


def _merge_state(mask: np.ndarray, old: Any, new: Any) -> Any:
    """A controller state (a dataclass of per-sample arrays) with ``old`` where ``mask`` holds."""
    fields = {f.name: np.where(mask, getattr(old, f.name), getattr(new, f.name)) for f in dataclasses.fields(new)}
    return dataclasses.replace(new, **fields)


def _min_step(ops: Any, t: Any, direction: float) -> Any:
    return 10 * ops.abs(ops.nextafter(t, direction * math.inf) - t)


def _all_finite(xp: Any, x: Any, per_sample: bool) -> np.ndarray:
    fin = xp.isfinite(x)
    if per_sample:
        axes = tuple(range(1, x.ndim))
        fin = xp.all(fin, axis=axes) if axes else fin
    else:
        fin = xp.all(fin)
    return np.asarray(_xp.to_numpy(fin), dtype=bool)


def initial_step(f: Callable, tc: TimeContext, y0: Any, f0: Any, t0: float, t1: float, order: int,
                 rtol: Any, atol: Any, per_sample: bool, dtmax: float, norms: Any = None) -> tuple[np.ndarray, int]:
    """Hairer, Nørsett & Wanner I (1993) §II.4 automatic initial step; costs one evaluation.

    ``norms``: ``((d0, d1), probe)`` from a compiled step (shared mode), where
    ``probe(t, h)`` is the RMS norm of ``f(t, y0 + h f0) - f0`` over ``atol + |y0| rtol``
    and counts its evaluation; the arithmetic on them is this function's."""
    xp = tc.xp
    direction = math.copysign(1.0, t1 - t0)
    span = abs(t1 - t0)
    if norms is not None:
        (d0, d1), probe = norms
    else:
        sc = atol + xp.abs(y0) * rtol
        d0 = _rms(xp, y0 / sc, per_sample)
        d1 = _rms(xp, f0 / sc, per_sample)
    with np.errstate(divide="ignore", invalid="ignore"):
        h0 = np.where((d0 < 1e-5) | (d1 < 1e-5), 1e-6, 0.01 * d0 / np.where(d1 > 0, d1, 1.0))
    h0 = np.minimum(h0, span)
    if norms is not None:
        d2 = probe(float(t0 + direction * h0), float(direction * h0)) / h0
    else:
        y1 = y0 + tc.scale(direction * h0) * f0
        f1 = f(tc.time(t0 + direction * h0), y1)
        d2 = _rms(xp, (f1 - f0) / sc, per_sample) / h0
    dmax = np.maximum(d1, d2)
    with np.errstate(divide="ignore", invalid="ignore"):
        h1 = np.where(dmax <= 1e-15, np.maximum(1e-6, h0 * 1e-3), (0.01 / np.where(dmax > 0, dmax, 1.0)) ** (1.0 / (order + 1)))
    h = np.minimum(np.minimum(100 * h0, h1), min(span, dtmax))
    h = np.where(np.isfinite(h), h, span * 1e-3)
    return direction * h, 1


def fixed_grid(t0: float, t1: float, dt: float | None, n_steps: int | None) -> np.ndarray:
    """The step boundaries of fixed-step mode: ``n_steps`` equal steps, or steps of ``dt`` with
    the last one shortened to end on ``t1``."""
    direction = 1.0 if t1 > t0 else -1.0
    if n_steps is not None:
        grid = t0 + (t1 - t0) * np.arange(n_steps + 1) / n_steps
    else:
        count = math.ceil(abs(t1 - t0) / dt * (1 - 1e-12))
        grid = t0 + direction * dt * np.arange(count + 1, dtype=np.float64)
    grid[-1] = t1
    return grid


# ----------------------------------------------------------------------------- solve
def solve(
    f: Callable[[Any, Any], Any],
    y0: Any,
    t_span: Sequence[float],
    *,
    method: Any = "dopri5",
    t_eval: Sequence[float] | np.ndarray | None = None,
    rtol: Any = 1e-6,
    atol: Any = 1e-9,
    dt: float | None = None,
    n_steps: int | None = None,
    controller: PIController | None = None,
    first_step: float | None = None,
    max_steps: int = 100_000,
    dtmin: float | None = None,
    dtmax: float | None = None,
    batch: str = "shared",
    jac: Callable[[Any, Any], Any] | None = None,
    compiled: bool | None = None,
    tstops: Sequence[float] | np.ndarray | None = None,
) -> Solution:
    """Solve ``y' = f(t, y)``, ``y(t0) = y0`` from ``t_span[0]`` to ``t_span[1]``.

    Parameters
    ----------
    f : callable ``f(t, y) -> array``
        The vector field. ``y`` has ``y0``'s shape, library, dtype and device; ``t`` is an
        array of ``y0``'s dtype that broadcasts like one component ``y[..., i]``: 0-d in
        shared-step mode, shape ``(B,)`` in per-sample mode. Must return ``y``'s shape and dtype.
    y0 : array, shape ``(n,)`` or ``(B, n)``
        Initial state (a batch of ``B`` independent states if 2-d), float32 or float64, in
        any Array API library (NumPy, PyTorch, JAX, array-api-strict). Lists become NumPy.
    t_span : (t0, t1)
        Integration interval; ``t1 < t0`` integrates backward in time.
    method : str or solver
        A name from ``odeverify.SOLVERS`` (``odeverify list``) or a solver object.
    t_eval : 1-d sequence, optional
        Output times, monotone in the direction of integration, inside ``t_span``
        (default ``(t0, t1)``). Values between steps come from the method's dense output
        (cubic Hermite when it has none): one solve serves every output time.
    rtol, atol : float or array of shape (n,)
        Tolerances (> 0) of the adaptive mode; the error norm is the RMS of
        ``err / (atol + rtol * max(|y|, |y1|))`` over the state (and over the batch in
        shared mode).
    dt, n_steps : optional
        Fixed-step mode: step ``dt`` (> 0; the last step is shortened to end on ``t1``) or
        ``n_steps`` equal steps. Required for methods without an error estimate.
    controller : PIController, optional
        Step-size controller of the adaptive mode (default: the I controller
        ``PIController()``, safety 0.9, factors in [0.2, 10]).
    first_step : float, optional
        Initial step magnitude; default Hairer's automatic choice (one extra evaluation).
    max_steps : int
        Limit on attempted steps (accepted + rejected); reaching it ends with
        ``Status.MAX_STEPS`` and the partial solution.
    dtmin, dtmax : float, optional
        Smallest and largest step magnitude. A step below ``dtmin`` (or below round-off
        relative to ``t``) ends with ``Status.DT_UNDERFLOW``.
    batch : {"shared", "per-sample"}
        For a batch ``y0`` of shape ``(B, n)``: ``"shared"`` (default) takes one step size
        for the whole batch (error norm over all samples, as torchdiffeq does);
        ``"per-sample"`` gives each sample its own step size and accept/reject decision
        (as torchode does), so a sample's steps do not depend on the rest of the batch.
    jac : callable ``jac(t, y) -> array``, optional
        The Jacobian ``df/dy`` for the implicit methods: shape ``(n, n)`` for ``y`` of shape
        ``(n,)``, ``(B, n, n)`` (or one ``(n, n)`` for every sample) for a batch. Without it
        they differentiate ``f`` automatically (PyTorch, JAX) or by forward differences
        (NumPy, array-api-strict; counted in ``nfev`` and ``njev``). Explicit methods ignore it.
    compiled : bool, optional
        The fast explicit Runge–Kutta step. On JAX the whole step (stages, combinations,
        error estimate and its norm) is one jitted function, compiled once per (vector field
        object, tableau coefficients, shapes, dtype) and cached, so a step is one dispatch;
        the first stage and the initial-step probe are compiled the same way. On PyTorch the
        stage combinations are fused (one ``addmm`` each over a stage buffer). ``None``
        (default): JAX compiles a field from its second solve on (a fresh closure per solve
        would pay 0.3–2 s of compilation every time; a field solved once runs eagerly) and
        PyTorch stays eager (fusing measured no faster on CPU, ``benchmarks/overhead.py``);
        ``True``: both fast paths now; ``False``, or the environment variable
        ``ODEVERIFY_COMPILED=0`` with ``None``: the eager step. Results agree with the eager
        step to round-off (sums may be taken in another order: a few ulps per step) with the
        same steps and counts. Python side effects in a compiled ``f`` run only while it is
        traced; a field JAX cannot trace runs eagerly. Traced inputs (inside ``jax.grad``),
        autograd-recording PyTorch states, ``batch="per-sample"`` on JAX, NumPy,
        array-api-strict and the implicit, BDF and reversible solvers always run eagerly.
    tstops : 1-d sequence, optional
        Times that steps land on exactly and never cross, for a field that is discontinuous
        (or has a discontinuous derivative) there: the knots of a piecewise interpolated
        control, the times of a jump (Hairer, Nørsett & Wanner I, §II.6: restart at a
        discontinuity instead of letting the error control find it). Times outside the open
        interval ``t_span`` are ignored. Adaptive steps are shortened to end on the next one
        (the controller continues from the shortened step); fixed-step grids take them as
        extra step boundaries. A step that starts or ends on one evaluates ``f`` at times one
        ulp inside the step, so the field is evaluated on the step's own side of the
        discontinuity, and the step after one evaluates ``f`` afresh there (no
        first-same-as-last reuse across it: one more evaluation per stop). The fast compiled
        step is not used with ``tstops``.

    Returns
    -------
    Solution
        ``ts`` (float64 NumPy, shape ``(T,)``), ``ys`` (``(T,) + y0.shape``, ``y0``'s
        library), ``status``, ``stats`` (nfev, accepted, rejected, njev, nlu, newton_iters).
        An implicit method whose Newton iteration keeps failing ends with
        ``Status.NEWTON_FAILED`` and a ``message`` saying where and why.
    """
    # a blow-up is detected and reported as a status: NumPy's overflow warnings inside the
    # user's vector field would only repeat it
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        return _solve(f, y0, t_span, method, t_eval, rtol, atol, dt, n_steps, controller, first_step, max_steps,
                      dtmin, dtmax, batch, jac, compiled, tstops)


def stop_times(tstops: Any, t0: float, t1: float) -> np.ndarray:
    """``tstops`` validated: the distinct finite times strictly inside ``(t0, t1)``, in the
    direction of integration (float64)."""
    if tstops is None:
        return np.zeros(0)
    stops = np.asarray(_xp.to_numpy(tstops) if _xp.is_array(tstops) else tstops, dtype=np.float64)
    if stops.ndim != 1:
        raise ValueError(f"tstops has shape {stops.shape}, but it must be a 1-d sequence of times")
    if not np.all(np.isfinite(stops)):
        raise ValueError(f"tstops={stops.tolist()[:8]} contains non-finite values; every time must be finite")
    lo, hi = min(t0, t1), max(t0, t1)
    stops = np.unique(stops[(stops > lo) & (stops < hi)])
    return stops if t1 > t0 else stops[::-1].copy()


def _next_stops(stops: np.ndarray, t: Any, direction: float) -> Any:
    """The first time of ``stops`` (in the direction of integration) strictly ahead of ``t``
    (a float, or an array per sample); +-inf where none is left."""
    key = direction * stops  # increasing
    idx = np.searchsorted(key, direction * np.asarray(t, dtype=np.float64), side="right")
    ahead = np.where(idx < key.size, direction * key[np.minimum(idx, key.size - 1)], direction * math.inf)
    return ahead if isinstance(t, np.ndarray) else float(ahead)


def _stop_window(t: Any, t_new: Any, starts: Any, ends: Any, direction: float) -> tuple[Any, Any] | None:
    """The window of times ``f`` sees in a step from ``t`` to ``t_new`` that starts (``starts``)
    or ends (``ends``) on a stop: one ulp inside the step at that end, unbounded elsewhere."""
    if not (np.any(starts) or np.any(ends)):
        return None
    inner_start = np.where(starts, np.nextafter(t, t_new), -direction * math.inf)
    inner_end = np.where(ends, np.nextafter(t_new, t), direction * math.inf)
    lo, hi = (inner_start, inner_end) if direction > 0 else (inner_end, inner_start)
    if not isinstance(t, np.ndarray):
        lo, hi = float(lo), float(hi)
    return lo, hi


def _merge_stops(grid: np.ndarray, stops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A fixed-step grid with the stops as extra boundaries (a grid point within 1e-10 of the
    span from a stop gives way to it), and which boundaries are stops."""
    if stops.size == 0:
        return grid, np.zeros(grid.size, dtype=bool)
    span = abs(grid[-1] - grid[0])
    keep = np.ones(grid.size, dtype=bool)
    near = np.abs(grid[1:-1, None] - stops[None, :]).min(axis=1) <= 1e-10 * span
    keep[1:-1] = ~near
    merged = np.concatenate([grid[keep], stops])
    merged = np.sort(merged) if grid[-1] > grid[0] else np.sort(merged)[::-1]
    return merged, np.isin(merged, stops)


def _solve(f, y0, t_span, method, t_eval, rtol, atol, dt, n_steps, controller, first_step, max_steps, dtmin,
           dtmax, batch, jac=None, compiled=None, tstops=None) -> Solution:
    solver = resolve_solver(method)

    # --- state
    if not _xp.is_array(y0):
        try:
            y0 = np.asarray(y0, dtype=np.float64)
        except (TypeError, ValueError):
            raise TypeError(f"y0={y0!r}, but it must be an array (or a nested list) of real numbers") from None
    xp = _xp.namespace(y0)
    dtype = y0.dtype
    if dtype not in (xp.float32, xp.float64):
        raise TypeError(f"y0 has dtype {dtype}, but it must be float32 or float64")
    if y0.ndim not in (1, 2) or y0.shape[-1] == 0:
        raise ValueError(f"y0 has shape {tuple(y0.shape)}, but it must be (n,) or (batch, n) with n >= 1")
    if not bool(np.all(np.isfinite(_xp.to_numpy(_xp.stop_gradient(y0))))):
        raise ValueError("y0 contains non-finite values (NaN or inf); it must be finite")
    device = _xp.device(y0)
    n = y0.shape[-1]

    # --- times
    if not isinstance(t_span, (tuple, list, np.ndarray)) or len(t_span) != 2:
        raise ValueError(f"t_span={t_span!r}, but it must be a pair (t0, t1)")
    t0 = _finite_float("t_span[0]", t_span[0])
    t1 = _finite_float("t_span[1]", t_span[1])
    if t0 == t1:
        raise ValueError(f"t_span={t_span!r} has zero length; t0 and t1 must differ")
    direction = 1.0 if t1 > t0 else -1.0
    if t_eval is None:
        ts = np.asarray([t0, t1], dtype=np.float64)
    else:
        ts = np.asarray(_xp.to_numpy(t_eval) if _xp.is_array(t_eval) else t_eval, dtype=np.float64)
        if ts.ndim != 1 or ts.size == 0:
            raise ValueError(f"t_eval has shape {ts.shape}, but it must be a non-empty 1-d sequence of times")
        if not np.all(np.isfinite(ts)):
            raise ValueError(f"t_eval={ts.tolist()} contains non-finite values; every time must be finite")
        if np.any(direction * np.diff(ts) <= 0):
            order_word = "increasing" if direction > 0 else "decreasing"
            raise ValueError(f"t_eval={ts.tolist()}, but it must be strictly {order_word} (the direction of t_span)")
        lo, hi = min(t0, t1), max(t0, t1)
        if ts.min() < lo or ts.max() > hi:
            raise ValueError(f"t_eval={ts.tolist()} has times outside t_span={tuple(t_span)}")

    # --- options
    if batch not in BATCH_MODES:
        raise ValueError(f"batch={batch!r}; expected one of {BATCH_MODES}")
    per_sample = batch == "per-sample" and y0.ndim == 2
    bshape: tuple[int, ...] = (y0.shape[0],) if per_sample else ()
    if not isinstance(max_steps, (int, np.integer)) or max_steps <= 0:
        raise ValueError(f"max_steps={max_steps!r}, but it must be a positive int")
    rtol_x = _tolerance("rtol", rtol, n, xp, dtype, device)
    atol_x = _tolerance("atol", atol, n, xp, dtype, device)
    dtmax_v = math.inf if dtmax is None else _finite_float("dtmax", dtmax)
    dtmin_v = 0.0 if dtmin is None else _finite_float("dtmin", dtmin)
    if dtmax_v <= 0:
        raise ValueError(f"dtmax={dtmax!r}, but it must be > 0")
    if dtmin_v < 0 or dtmin_v > dtmax_v:
        raise ValueError(f"dtmin={dtmin!r}, but it must be >= 0 and <= dtmax")
    fixed = dt is not None or n_steps is not None
    if dt is not None and n_steps is not None:
        raise ValueError("give either dt or n_steps, not both")
    if dt is not None:
        dt_v = _finite_float("dt", dt)
        if dt_v <= 0:
            raise ValueError(f"dt={dt!r}, but it must be > 0 (the direction comes from t_span)")
    if n_steps is not None and (not isinstance(n_steps, (int, np.integer)) or n_steps <= 0):
        raise ValueError(f"n_steps={n_steps!r}, but it must be a positive int")
    if not fixed and not getattr(solver, "adaptive", False):
        raise ValueError(
            f"method {solver.name!r} has no embedded error estimate, so it needs a fixed step:"
            " pass dt=... or n_steps=..."
        )
    if first_step is not None:
        fs = _finite_float("first_step", first_step)
        if fs <= 0:
            raise ValueError(f"first_step={first_step!r}, but it must be > 0")
    stops = stop_times(tstops, t0, t1)
    if compiled is not None and not isinstance(compiled, bool):
        raise TypeError(f"compiled={compiled!r}, but it must be True, False or None (None: the environment"
                        f" variable ODEVERIFY_COMPILED decides, on by default)")
    if jac is not None and not callable(jac):
        raise TypeError(f"jac={jac!r}, but it must be a callable jac(t, y) -> array (the Jacobian df/dy) or None")
    # solvers that carry work across steps (implicit: Jacobian, LU factors, Newton rate) say so
    # by defining init_state; the explicit fast path below never touches any of this
    stateful = hasattr(solver, "init_state")
    if controller is not None:
        ctrl = controller
    elif hasattr(solver, "default_controller"):
        ctrl = solver.default_controller()
    else:
        ctrl = PIController()
    step_info = stateful and getattr(ctrl, "uses_step_info", False)
    options = {"rtol": rtol, "atol": atol, "dt": dt, "n_steps": n_steps, "batch": batch, "max_steps": max_steps}

    # --- the loop
    # host values: Python floats and bools for a shared step, NumPy arrays of shape (B,) per
    # sample; `ops` holds the few operations that differ between the two
    ops = ARRAY if per_sample else SCALAR
    stats = Stats()
    if per_sample:
        stats.sample_accepted = np.zeros(bshape, dtype=np.int64)
        stats.sample_rejected = np.zeros(bshape, dtype=np.int64)
    t = ops.full(bshape, t0)
    tc = TimeContext(xp=xp, dtype=dtype, device=device, per_sample=per_sample, t=t)

    nan_state = xp.full(y0.shape, math.nan, dtype=dtype, device=device)
    outs: list[Any] = [nan_state] * len(ts)
    at_start = ts == t0
    for j in np.flatnonzero(at_start):
        outs[j] = y0
    next_out = ops.full(bshape, int(np.sum(at_start)))

    def fun(t_arr: Any, y: Any) -> Any:
        stats.nfev += 1
        return f(t_arr, y)

    y = y0
    # the fast explicit step (JAX: one compiled function; PyTorch: fused stage combinations);
    # a solver whose step is wrapped or overridden (gradient recording) keeps the eager one
    fast = None
    if ((compiled is not False) and (compiled or compiled_default()) and not stateful and stops.size == 0
            and isinstance(solver, ExplicitRK) and type(solver).step is ExplicitRK.step):
        fast = solver.fast_stepper(f, tc, y0, estimate=not fixed, rtol=rtol_x, atol=atol_x, compiled=compiled)
    k1 = None
    start_norms = None  # the initial step's d0, d1 from the compiled start
    if isinstance(fast, CompiledJaxStep):
        try:
            k1, start_norms = fast.start(t0, y0, rtol_x, atol_x)
        except Exception:
            # a field JAX cannot trace (Python control flow on values, NumPy calls), or one
            # closing over traced values: the eager step, now and for later solves of this field
            # (a real error in f is raised again by the eager evaluation below)
            fast.fail()
            fast = None
    if k1 is None:
        k1 = f(tc.time(t), y)
    stats.nfev += 1
    _check_output("f", k1, y)
    if isinstance(fast, FusedTorchStep) and not fast.usable(k1):
        fast = None
    status = Status.SUCCESS
    message = ""
    sstate = solver.init_state(f, tc, y0, jac=jac, rtol=rtol_x, atol=atol_x, fixed=fixed) if stateful else None
    newton_failure: str | None = None  #: why the last rejected step's Newton iteration failed
    failed_samples = None  #: per sample: which samples' Newton iteration failed in the last step
    done = ops.full(bshape, False)
    fail_mask = ops.full(bshape, False)

    if fixed:
        grid_arr, grid_stops = _merge_stops(fixed_grid(t0, t1, dt_v if dt is not None else None, n_steps), stops)
        grid = grid_arr.tolist()
        h = None
        cstate = None
        abs_y = None
    else:
        if first_step is not None:
            h = ops.full(bshape, direction * min(fs, abs(t1 - t0), dtmax_v))
        else:
            norms = None
            if isinstance(fast, CompiledJaxStep):
                def probe(t_probe: float, h_probe: float) -> float:
                    stats.nfev += 1
                    return fast.probe(t_probe, h_probe, y0, k1, rtol_x, atol_x)

                norms = (start_norms, probe)
            h, nf = initial_step(fun, tc, y, k1, t0, t1, solver.error_order if hasattr(solver, "error_order") else solver.order,
                                 rtol_x, atol_x, per_sample, dtmax_v, norms=norms)
            h = np.broadcast_to(h, bshape).copy() if per_sample else float(h)
        cstate = ctrl.init(bshape)
        # |y| of the error scale; each accepted step hands on its |y1| (the compiled step takes it itself)
        abs_y = None if isinstance(fast, CompiledJaxStep) else xp.abs(y)
    last_nonfinite = ops.full(bshape, False)
    step_index = 0
    t_steps: list[float] = [t0]  #: accepted step boundaries (shared mode), for gradient modes
    at_stop = ops.full(bshape, False)  #: the current time is one of ``stops``
    ends_on_stop = ops.full(bshape, False)

    while True:
        active = ops.logical_not(done | fail_mask)
        if not ops.any(active):
            break
        if step_index >= max_steps:
            status = Status.MAX_STEPS
            break
        if fixed:
            if step_index >= len(grid) - 1:
                break
            t_new = ops.full(bshape, grid[step_index + 1])
            h = t_new - t
            ends_on_stop = ops.full(bshape, bool(grid_stops[step_index + 1]))
        else:
            # never step past t1; land on it exactly
            overshoot = direction * (t + h - t1) >= 0
            h = ops.where(overshoot, t1 - t, h)
            h = ops.where(active, h, 0.0)
            t_new = ops.where(overshoot, t1, t + h)
            if stops.size:  # nor past a stop
                nxt = _next_stops(stops, t, direction)
                ends_on_stop = active & (direction * (t_new - nxt) >= 0)
                h = ops.where(ends_on_stop, nxt - t, h)
                t_new = ops.where(ends_on_stop, nxt, t_new)
        tc.t = t
        if stops.size:
            tc.window = _stop_window(t, t_new, at_stop, ends_on_stop, direction)
        if fast is not None:
            res = fast(f, tc, y, h, k1, abs_y, rtol_x, atol_x)
            stats.nfev += res.nfev
            k1 = res.k1  # computed by the step when it was None: kept for a retry after a rejection
        else:
            if k1 is None:
                k1 = fun(tc.time(t), y)
            if stateful:
                res = solver.step(fun, tc, y, h, k1, estimate=not fixed, state=sstate)
                sstate = res.state
                stats.njev += res.njev
                stats.nlu += res.nlu
                stats.newton_iters += res.newton_iters
                newton_failure = res.failure
                failed_samples = res.failed  # per sample: only these failed (None: every sample)
            else:
                res = solver.step(fun, tc, y, h, k1, estimate=not fixed)
        step_index += 1
        y1 = res.y1

        if fixed:
            if newton_failure is not None:
                status = Status.NEWTON_FAILED
                message = f"{status.value}: {newton_failure}"
                break
            finite = getattr(res, "finite", None)
            if not (finite if finite is not None else bool(_all_finite(xp, y1, False))):
                status = Status.NONFINITE
                break
            accept = ops.full(bshape, True)
        elif newton_failure is not None and failed_samples is None:
            # reject every active sample and shrink (H&W II §IV.8); the controller is not told
            accept = ops.full(bshape, False)
            factor = ops.full(bshape, solver.failure_shrink)
            last_nonfinite = ops.where(active, False, last_nonfinite)
        else:
            if isinstance(res, FastStepResult):
                abs_y1 = res.abs_y1
                err = combine_error_norms(res.err_rms[0], res.err_rms[1], per_sample)
            else:
                abs_y1 = xp.abs(y1)
                err = scaled_error_norm(xp, res.err, res.err_aux, error_scale(xp, abs_y, abs_y1, rtol_x, atol_x),
                                        per_sample)
            if step_info:
                iters = res.newton_iters if res.sample_newton_iters is None else res.sample_newton_iters
                # a controller paired with a solver that chooses its own next step (BDF's order
                # selection) also reads the step's result, where the solver put its proposal
                more = {"result": res} if getattr(ctrl, "uses_step_result", False) else {}
                accept, factor, new_cstate = ctrl(err, solver.error_order, cstate, h=h, newton_iters=iters, **more)
            else:
                accept, factor, new_cstate = ctrl(err, solver.error_order, cstate)
            if stateful and failed_samples is not None:
                # per sample: the samples whose Newton iteration failed are rejected and shrunk,
                # and their controller state is left as it was (as in a solo solve)
                accept = accept & ~failed_samples
                factor = np.where(failed_samples, solver.failure_shrink, factor)
                new_cstate = _merge_state(failed_samples, cstate, new_cstate)
                err = np.where(failed_samples, 0.0, err)
            cstate = new_cstate
            accept = accept & active
            last_nonfinite = ops.where(active, ops.logical_not(ops.isfinite(err)), last_nonfinite)
        if stateful:
            sstate = solver.after_step(sstate, accept)

        rejected = active & ops.logical_not(accept)
        stats.accepted += ops.count(accept)
        stats.rejected += ops.count(rejected)
        if per_sample:
            stats.sample_accepted += accept
            stats.sample_rejected += rejected

        if ops.any(accept):
            # dense output for every output time inside an accepted step (the interpolant is
            # made for the steps that contain one)
            interp = None
            while True:
                idx = ops.minimum(next_out, len(ts) - 1)
                t_out = ops.take(ts, idx)
                crosses = accept & (next_out < len(ts)) & (direction * (t_out - t_new) <= 0)
                if not ops.any(crosses):
                    break
                if interp is None:
                    interp = StepInterpolant(solver, fun, tc, y, y1, h, res, k1)
                at_end = t_out == t_new
                if np.all(at_end[crosses]) if per_sample else at_end:
                    val = y1
                else:
                    with np.errstate(divide="ignore", invalid="ignore"):
                        theta = ops.where(h != 0, (t_out - t) / ops.where(h != 0, h, 1.0), 0.0)
                    val = interp(theta)
                    if per_sample:
                        val = xp.where(xp.asarray(at_end[:, None], device=device), y1, val)
                if per_sample:
                    for j in np.unique(idx[crosses]):
                        m = crosses & (idx == j)
                        outs[j] = xp.where(xp.asarray(m[:, None], device=device), val, outs[j])
                else:
                    outs[idx] = val
                next_out = ops.where(crosses, next_out + 1, next_out)
            k_end = res.fsal if interp is None else interp.k_end

            # advance
            if per_sample:
                mask = xp.asarray(accept[:, None], device=device)
                y = xp.where(mask, y1, y)
                if not fixed:
                    abs_y = xp.where(mask, abs_y1, abs_y)
                if res.fsal is not None:
                    k1 = xp.where(mask, res.fsal, k1)
                elif k_end is not None and np.all(accept | ~active):
                    k1 = xp.where(mask, k_end, k1)
                else:
                    k1 = None  # recomputed for the whole batch at the next step
            else:
                y = y1
                if not fixed:
                    abs_y = abs_y1
                k1 = k_end if k_end is not None else res.fsal
            landed = False
            if stops.size:
                landed = ops.any(accept & ends_on_stop)
                at_stop = ops.where(accept, ends_on_stop, at_stop)
                if landed:
                    k1 = None  # the field may jump here: the next step evaluates it afresh, on its side
            t = ops.where(accept, t_new, t)
            if landed and getattr(solver, "restarts_at_stops", False):
                # a multistep history from before a discontinuity does not hold after it: the
                # solver starts afresh there (BDF at order 1); one-step implicit methods keep their
                # Jacobian, which only the Newton iteration's speed depends on
                tc.t, tc.window = t, None
                sstate = solver.init_state(f, tc, y, jac=jac, rtol=rtol_x, atol=atol_x, fixed=fixed)
            if not per_sample:
                t_steps.append(float(t))
            done = done | (accept & (t == t1))

        if fixed:
            continue
        # next step size
        h_new = h * factor
        h_new = direction * ops.minimum(ops.abs(h_new), dtmax_v)
        too_small = (active & ops.logical_not(done)
                     & (ops.abs(h_new) < ops.maximum(dtmin_v, _min_step(ops, t, direction))))
        if ops.any(too_small):
            fail_mask = fail_mask | too_small
            status = Status.NONFINITE if ops.any(last_nonfinite & too_small) else Status.DT_UNDERFLOW
            if newton_failure is not None and (failed_samples is None or np.any(failed_samples & too_small)):
                status = Status.NEWTON_FAILED
                message = f"{status.value}: {newton_failure}"

            if not per_sample:
                break
        # keep h for samples that are done (unused)
        h = ops.where(active, h_new, h)

    t_final = t.copy() if per_sample else float(t)
    if status is Status.SUCCESS and np.any(fail_mask):
        status = Status.DT_UNDERFLOW
    ys = xp.stack(outs, axis=0)
    return Solution(
        ts=ts,
        ys=ys,
        status=status,
        stats=stats,
        method=solver.name,
        t_final=t_final,
        t_steps=None if per_sample else np.asarray(t_steps, dtype=np.float64),
        message=message or status.value,
        options=options,
    )


# ----------------------------------------------------------------------------- SDEs
#: how close (relative to the span) a time must be to a step boundary to be that boundary
GRID_SNAP = 1e-9


def snap_to_grid(grid: np.ndarray, times: Sequence[float] | np.ndarray) -> np.ndarray:
    """Each time replaced by the step boundary of ``grid`` (increasing) it lies within
    :data:`GRID_SNAP` of (a library's accumulated ``t + dt`` misses a boundary by ulps, and
    a Brownian path queried off its grid answers a different draw); a time between steps
    raises: SDE solutions have no dense output."""
    grid = np.asarray(grid, dtype=np.float64)
    req = np.asarray(times, dtype=np.float64).reshape(-1)
    idx = np.clip(np.searchsorted(grid, req), 0, grid.size - 1)
    lower = np.clip(idx - 1, 0, grid.size - 1)
    near = np.where(np.abs(grid[idx] - req) <= np.abs(grid[lower] - req), idx, lower)
    off = np.abs(grid[near] - req) > GRID_SNAP * abs(grid[-1] - grid[0])
    if np.any(off):
        raise ValueError(f"t_eval has times {req[off].tolist()[:4]} between steps; SDE solutions have no dense"
                         " output, so every output time must be a step boundary (choose n_steps accordingly)")
    return grid[near]


def solve_sde(
    drift: Callable[[Any, Any], Any],
    diffusion: Callable[[Any, Any], Any],
    y0: Any,
    t_span: Sequence[float],
    *,
    bm: Any,
    method: Any = "euler",
    noise: str = "diagonal",
    calculus: str | None = None,
    commutative: bool | None = None,
    t_eval: Sequence[float] | np.ndarray | None = None,
    dt: float | None = None,
    n_steps: int | None = None,
    max_steps: int = 1_000_000,
) -> Solution:
    """Solve ``dX = drift(t, X) dt + diffusion(t, X) dW`` on the Brownian path ``bm`` with a
    fixed step, through the one time loop (:func:`solve`).

    Parameters
    ----------
    drift, diffusion : callables ``(t, y) -> array``
        ``diffusion`` returns shape ``y.shape`` for ``noise="diagonal"`` and
        ``y.shape + (m,)`` otherwise (torchsde's conventions).
    y0 : array, shape ``(n,)`` or ``(M, n)``
        ``M`` paths are a batch: path ``i`` is driven by row ``i`` of ``bm``.
    bm : :class:`odeverify.brownian.BrownianTree` (or any object with ``t0``, ``t1``,
        ``shape`` and ``increment(s, t, like=)``), of shape ``(m,)`` or ``(M, m)``, covering
        ``t_span``.
    method : str or SDEMethod
        A name of ``odeverify.solvers.sde.SDE_METHODS``.
    noise : {"diagonal", "scalar", "additive", "general"}
    calculus : {"ito", "stratonovich"}, optional
        The calculus the equation is written in; a method of the other calculus is refused
        (convert with :meth:`odeverify.problems.sde.SDEProblem.as_calculus`).
    commutative : bool, optional
        Whether general noise commutes (decides Milstein's validity); default: diagonal,
        scalar and additive noise commute, general noise does not.
    t_eval : times on the step grid
        SDE solutions have no dense output: every output time must be a step boundary.
    dt, n_steps : the fixed step (one of them is required).

    Returns
    -------
    Solution
        As :func:`solve`; ``stats.ngev`` counts the diffusion's evaluations.
    """
    from .problems.sde import CALCULI, NOISE_TYPES
    from .solvers.sde import SDE_METHODS, SDEMethod

    sde_method = SDE_METHODS.get(method) if isinstance(method, str) else method
    if not isinstance(sde_method, SDEMethod):
        raise TypeError(f"method={method!r}, but it must be an SDE method name ({', '.join(SDE_METHODS.names())})"
                        " or an SDEMethod")
    if noise not in NOISE_TYPES:
        raise ValueError(f"noise={noise!r}, but it must be one of {NOISE_TYPES}")
    if calculus is not None and calculus not in CALCULI:
        raise ValueError(f"calculus={calculus!r}, but it must be one of {CALCULI}")
    if calculus is not None and calculus != sde_method.calculus and noise != "additive":
        raise ValueError(f"SDE method {sde_method.name!r} converges to the {sde_method.calculus} solution, but the"
                         f" equation is written in the {calculus} sense; convert it (SDEProblem.as_calculus) or"
                         f" pick a method of that calculus")
    if not callable(drift) or not callable(diffusion):
        raise TypeError("drift and diffusion must be callables (t, y) -> array")
    if dt is None and n_steps is None:
        raise ValueError(f"SDE method {sde_method.name!r} needs a fixed step: pass dt=... or n_steps=...")
    for attr in ("t0", "t1", "shape", "increment"):
        if not hasattr(bm, attr):
            raise TypeError(f"bm={bm!r} is not a Brownian path: it has no {attr!r} (use odeverify.brownian.BrownianTree)")
    if not isinstance(t_span, (tuple, list, np.ndarray)) or len(t_span) != 2:
        raise ValueError(f"t_span={t_span!r}, but it must be a pair (t0, t1)")
    t0 = _finite_float("t_span[0]", t_span[0])
    t1 = _finite_float("t_span[1]", t_span[1])
    if not t0 < t1:
        raise ValueError(f"t_span={tuple(t_span)}, but an SDE is solved forward: t0 < t1")
    if t0 < bm.t0 or t1 > bm.t1:
        raise ValueError(f"t_span={(t0, t1)} is outside the Brownian path's interval [{bm.t0}, {bm.t1}]")
    y_shape = tuple(np.shape(y0))
    m = int(bm.shape[-1])
    want_bm = (m,) if len(y_shape) == 1 else (y_shape[0], m)
    if tuple(bm.shape) != want_bm:
        raise ValueError(f"the Brownian path has shape {tuple(bm.shape)}, but y0 of shape {y_shape} needs"
                         f" {'(m,)' if len(y_shape) == 1 else f'({y_shape[0]}, m)'}: one path per row of y0")
    if noise == "diagonal" and len(y_shape) >= 1 and m != y_shape[-1]:
        raise ValueError(f"diagonal noise needs a Brownian motion of the state's dimension {y_shape[-1]}, got m={m}")
    if noise == "scalar" and m != 1:
        raise ValueError(f"scalar noise needs a one-dimensional Brownian motion, got m={m}")
    if dt is not None:
        dt_v = _finite_float("dt", dt)
        if dt_v <= 0:
            raise ValueError(f"dt={dt!r}, but it must be > 0")
    if n_steps is not None and (isinstance(n_steps, bool) or not isinstance(n_steps, (int, np.integer)) or n_steps <= 0):
        raise ValueError(f"n_steps={n_steps!r}, but it must be a positive int")
    if dt is not None and n_steps is not None:
        raise ValueError("give either dt or n_steps, not both")
    grid = fixed_grid(t0, t1, dt_v if dt is not None else None, n_steps)
    ts = None
    if t_eval is not None:
        ts = snap_to_grid(grid, _xp.to_numpy(t_eval) if _xp.is_array(t_eval) else t_eval)
    bm.prefetch(grid) if hasattr(bm, "prefetch") else None
    stepper = sde_method.bind(diffusion, bm, noise=noise, noise_dim=m,
                              commutative=(noise != "general") if commutative is None else bool(commutative),
                              grid=grid)
    first = [True]

    def checked_drift(t: Any, y: Any) -> Any:
        out = drift(t, y)
        if first[0]:
            first[0] = False
            if _xp.is_array(out) and not bool(np.all(np.isfinite(_xp.to_numpy(_xp.stop_gradient(out))))):
                raise ValueError(f"the drift returned non-finite values at t={t0} (the initial state); it must be"
                                 " finite where the solve starts")
        return out

    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        sol = _solve(checked_drift, y0, (t0, t1), stepper, ts, 1e-6, 1e-9, dt_v if dt is not None else None,
                     n_steps, None, None, max_steps, None, None, "shared", None, False)
    sol.stats.ngev = stepper.ngev
    sol.options.update({"noise": noise, "calculus": sde_method.calculus, "brownian": getattr(bm, "spec", dict)()})
    sol.method = sde_method.name
    return sol
