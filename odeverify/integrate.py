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
    events: Sequence[Any] | None = None,
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

    events : sequence of ``(name, g, direction, terminal)``, optional
        Event functions ``g(t, y) -> scalar`` (shape ``()``) whose sign changes are located
        after each accepted step on the method's own dense output (the interpolant ``t_eval``
        uses; sampled at the step's ends and :data:`EVENT_SAMPLES` - 1 interior points) by a
        bracketing root finder to adjacent floats. ``direction`` +1/-1 keeps only increasing/
        decreasing crossings (0 both); ``terminal`` True ends the solve at the first
        occurrence, an int ``k`` at the ``k``-th, False never. A zero at ``t0`` is never an
        event; an exact zero at a step's end counts once. The solve ends at a terminal event
        with ``Status.EVENT`` (output times past it stay NaN); ``Solution.t_events``,
        ``y_events`` (``y0``'s library: differentiable through the interpolant) and
        ``event_index`` hold every located event. Only a single state ``y0`` of shape
        ``(n,)`` (solve the samples of a batch one by one). Each step with events builds the
        dense output (DOP853: 3 more evaluations a step).

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
                      dtmin, dtmax, batch, jac, compiled, tstops, events=events)


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


def stop_edges(tstops: Any, t0: float, t1: float) -> tuple[bool, bool]:
    """Whether ``t0`` and ``t1`` are themselves among ``tstops`` (a solve that starts or ends
    on a discontinuity of the field)."""
    if tstops is None:
        return False, False
    given = np.asarray(_xp.to_numpy(tstops) if _xp.is_array(tstops) else tstops, dtype=np.float64).ravel()
    return bool(np.any(given == t0)), bool(np.any(given == t1))


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
           dtmax, batch, jac=None, compiled=None, tstops=None, events=None) -> Solution:
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
    # a solve that starts or ends on a stop (an adjoint segment between knots) evaluates f on
    # its inside there too
    edge_start, edge_end = stop_edges(tstops, t0, t1)
    use_stops = bool(stops.size) or edge_start or edge_end
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
    tracker = None
    if events is not None:
        tracker = EventTracker(check_events(events, y0), xp, dtype, device)

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
    if ((compiled is not False) and (compiled or compiled_default()) and not stateful and not use_stops
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
        if edge_start:  # the first evaluation on the solve's side of a stop at t0
            tc.window = _stop_window(t0, t1, True, False, direction)
        k1 = f(tc.time(t), y)
        tc.window = None
    stats.nfev += 1
    _check_output("f", k1, y)
    if tracker is not None:
        tracker.start(t0, y0)
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
    at_stop = ops.full(bshape, edge_start)  #: the current time is one of ``stops``
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
            ends_on_stop = ops.full(bshape, bool(grid_stops[step_index + 1])
                                    or (edge_end and step_index + 2 == len(grid)))
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
            if edge_end:
                ends_on_stop = ends_on_stop | (active & overshoot)
        tc.t = t
        if use_stops:
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
            # made for the steps that contain one, and for every step of a solve with events)
            interp = None
            event_end = None
            if tracker is not None:
                interp = StepInterpolant(solver, fun, tc, y, y1, h, res, k1)
                event_end = tracker.after_step(float(t), float(t_new), y, y1, interp, float(h))
                if event_end is not None:
                    # a terminal event: the step ends at t* (outputs up to it from the interpolant)
                    t_new, y1 = event_end
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
            if use_stops:
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
            if tracker is not None and event_end is not None:
                status = Status.EVENT
                message = (f"{status.value}: {tracker.events[tracker.terminated][0]!r} at"
                           f" t={tracker.t_events[-1]!r}")
                break

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
        **({} if tracker is None else tracker.solution_fields()),
        message=message or status.value,
        options=options,
    )


# ----------------------------------------------------------------------------- events
#: interior points of each accepted step where the event functions are sampled on the dense
#: output, besides the step's ends: two roots of g closer than h / EVENT_SAMPLES inside one
#: step (a sign change and back between samples) are not seen
EVENT_SAMPLES = 4
#: iteration limit of the bracketing root finder (it halves the bracket at least every third
#: iteration, so ~3 * 64 iterations reach any float64 bracket's resolution)
ROOT_MAX_ITER = 200


def bracket_root(fun: Callable[[float], float], a: float, b: float, fa: float, fb: float) -> tuple[float, float]:
    """A zero of ``fun`` in the bracket ``[a, b]`` (``fa``, ``fb`` of opposite signs, or ``fb = 0``)
    by the Illinois variant of regula falsi (Dowell & Jarratt 1971) with a bisection whenever
    two iterations in a row failed to halve the bracket, down to adjacent floats.

    Returns ``(t, g)``: the end of the final bracket on ``b``'s side (where ``fun`` has
    the sign it crosses to, or is zero), so that a restart at ``t`` does not see the same
    crossing again."""
    if fb == 0:
        return b, fb
    if fa == 0:
        # the zero is at a: the smallest step past it in b's direction keeps fb's sign or 0
        return a, fa
    side = 0
    width = abs(b - a)
    slow = 0
    for _ in range(ROOT_MAX_ITER):
        tol = 2 * np.finfo(np.float64).eps * max(abs(a), abs(b))
        if abs(b - a) <= tol or np.nextafter(a, b) == b:
            break
        if slow >= 2:
            c = 0.5 * (a + b)
            slow = 0
        else:
            c = (a * fb - b * fa) / (fb - fa)
            if not (min(a, b) < c < max(a, b)):
                c = 0.5 * (a + b)
        fc = fun(c)
        if fc == 0:
            return c, fc
        if (fc > 0) == (fb > 0):
            b, fb = c, fc
            if side == 1:
                fa *= 0.5
            side = 1
        else:
            a, fa = c, fc
            if side == -1:
                fb *= 0.5
            side = -1
        new_width = abs(b - a)
        slow = slow + 1 if new_width > 0.5 * width else 0
        width = new_width
    return b, fb


class EventTracker:
    """The events of one solve: after each accepted step, each event function is evaluated on
    the step's dense output at its ends and :data:`EVENT_SAMPLES` - 1 interior points; each
    sign change in an event's direction is located by :func:`bracket_root` on that same
    interpolant. ``events``: ``(name, g(t, y), direction, terminal_count)`` tuples."""

    def __init__(self, events: Sequence[tuple[str, Callable[[Any, Any], Any], int, int | None]], xp: Any,
                 dtype: Any, device: Any) -> None:
        self.events = list(events)
        self.xp, self.dtype, self.device = xp, dtype, device
        self.g_prev: list[float] = []
        self.counts = [0] * len(self.events)
        self.t_events: list[float] = []
        self.y_events: list[Any] = []
        self.which: list[int] = []
        self.terminated: int | None = None  # index of the event that ended the solve

    def _value(self, k: int, t: float, y: Any) -> float:
        name, g, _, _ = self.events[k]
        out = g(self.xp.asarray(t, dtype=self.dtype, device=self.device), y)
        if tuple(getattr(out, "shape", ())) != ():
            raise ValueError(f"event function {name!r} returned shape {tuple(out.shape)} for a state of shape"
                             f" {tuple(y.shape)}, but it must return a scalar (shape ()) per state")
        return float(np.asarray(_xp.to_numpy(_xp.stop_gradient(out))))

    def start(self, t0: float, y0: Any) -> None:
        self.g_prev = [self._value(k, t0, y0) for k in range(len(self.events))]

    @staticmethod
    def _crosses(ga: float, gb: float, direction: int) -> bool:
        # a zero at the left end is the previous interval's (or the start): never counted here
        up = ga < 0 <= gb
        down = ga > 0 >= gb
        return (up and direction >= 0) or (down and direction <= 0)

    def after_step(self, t: float, t_new: float, y: Any, y1: Any, interp: Callable[[Any], Any], h: float,
                   samples: int | None = None) -> tuple[float, Any] | None:
        """Record the events inside the accepted step ``[t, t_new]``; returns ``(t*, y(t*))``
        when a terminal event ended the solve there, else None."""
        m = EVENT_SAMPLES if samples is None else samples
        thetas = [j / m for j in range(1, m)]
        ts = [t + th * h for th in thetas]
        ys = [interp(th) for th in thetas]
        ts_all = [t] + ts + [t_new]
        found: list[tuple[float, int, Any]] = []
        ends = []
        for k, (name, g, direction, _) in enumerate(self.events):
            vals = [self.g_prev[k]] + [self._value(k, s, ys[i]) for i, s in enumerate(ts)] \
                + [self._value(k, t_new, y1)]
            ends.append(vals[-1])
            for i in range(len(vals) - 1):
                ga, gb = vals[i], vals[i + 1]
                if not self._crosses(ga, gb, direction):
                    continue
                if gb == 0 and i + 1 == len(vals) - 1:
                    found.append((t_new, k, y1))
                    continue

                def state(s: float) -> Any:
                    # the step's own ends exactly; the dense output inside
                    return y1 if s == t_new else (y if s == t else interp((s - t) / h))

                def phi(s: float, k: int = k) -> float:
                    return self._value(k, s, state(s))

                ts_root, _ = bracket_root(phi, ts_all[i], ts_all[i + 1], ga, gb)
                found.append((ts_root, k, state(ts_root)))
        self.g_prev = ends
        found.sort(key=lambda item: item[0] * (1.0 if h > 0 else -1.0))
        for t_star, k, y_star in found:
            self.t_events.append(float(t_star))
            self.y_events.append(y_star)
            self.which.append(k)
            self.counts[k] += 1
            limit = self.events[k][3]
            if limit is not None and self.counts[k] >= limit:
                self.terminated = k
                return float(t_star), y_star
        return None

    def solution_fields(self) -> dict[str, Any]:
        xp = self.xp
        n_ev = len(self.t_events)
        return {
            "t_events": np.asarray(self.t_events, dtype=np.float64),
            "y_events": xp.stack(self.y_events, axis=0) if n_ev else None,
            "event_index": np.asarray(self.which, dtype=np.int64),
            "event_names": tuple(e[0] for e in self.events),
        }


def check_events(events: Any, y0: Any) -> list[tuple[str, Callable[[Any, Any], Any], int, int | None]]:
    """``solve``'s ``events`` validated: ``(name, g, direction, terminal count or None)``."""
    if y0.ndim != 1:
        raise ValueError(f"events need a single state y0 of shape (n,), but y0 has shape {tuple(y0.shape)}:"
                         " solve the samples of a batch one by one")
    if isinstance(events, (str, bytes)) or not isinstance(events, Sequence):
        raise TypeError(f"events={events!r}, but it must be a sequence of (name, g, direction, terminal)")
    out = []
    for i, ev in enumerate(events):
        if not isinstance(ev, (tuple, list)) or len(ev) != 4:
            raise TypeError(f"events[{i}]={ev!r}, but it must be a tuple (name, g, direction, terminal)")
        name, g, direction, terminal = ev
        if not callable(g):
            raise TypeError(f"events[{i}] ({name!r}): g={g!r}, but it must be a callable g(t, y) -> scalar")
        if isinstance(direction, bool) or direction not in (-1, 0, 1):
            raise ValueError(f"events[{i}] ({name!r}): direction={direction!r}, but it must be -1, 0 or +1")
        if isinstance(terminal, bool):
            count = 1 if terminal else None
        elif isinstance(terminal, (int, np.integer)) and terminal >= 1:
            count = int(terminal)
        else:
            raise ValueError(f"events[{i}] ({name!r}): terminal={terminal!r}, but it must be a bool or an int >= 1")
        out.append((str(name), g, int(direction), count))
    return out


def _trajectory_slope(g: Callable[[Any, Any], Any], dg_dy: Callable[[Any, Any], Any] | None, f: Callable, xp: Any,
                      t: float, y: Any, like: Any, dg_dt: Callable[[Any, Any], Any] | None = None) -> float:
    """``dg/dt`` along the solution at ``(t, y)`` (no graph): ``dg/dy . f + dg/dt`` at fixed y,
    from the event's analytic ``dg_dy`` and ``dg_dt`` where given, each else by a central
    difference (relative error ~1e-11: enough for the derivative of the one Newton correction,
    whose value is zero)."""
    y = _xp.stop_gradient(y)
    tt = lambda s: xp.asarray(s, dtype=like.dtype, device=_xp.device(like))  # noqa: E731
    fy = f(tt(t), y)
    eps = 1e-6 * max(1.0, abs(t))
    if dg_dt is not None:
        g_t = float(_xp.to_numpy(dg_dt(tt(t), y)))
    else:
        g_t = (float(_xp.to_numpy(g(tt(t + eps), y))) - float(_xp.to_numpy(g(tt(t - eps), y)))) / (2 * eps)
    if dg_dy is not None:
        return float(_xp.to_numpy(xp.sum(dg_dy(tt(t), y) * fy))) + g_t
    scale = float(np.max(np.abs(_xp.to_numpy(y)))) + 1.0
    fnorm = float(np.max(np.abs(_xp.to_numpy(fy)))) + 1e-300
    e = 1e-6 * scale / fnorm
    g_y = (float(_xp.to_numpy(g(tt(t), y + e * fy))) - float(_xp.to_numpy(g(tt(t), y - e * fy)))) / (2 * e)
    return g_y + g_t


def solve_with_jumps(event_problem: Any, method: Any = "dopri5", *, y0: Any = None, params: Any = None,
                     t_eval: Sequence[float] | np.ndarray | None = None, max_events: int | None = None,
                     max_steps: int = 100_000, implicit_gradient: bool = True, **options: Any) -> Solution:
    """Solve an :class:`~odeverify.problems.events.EventProblem` through its events and jumps.

    Each segment is one :func:`solve` with the problem's events; at a terminal event the
    problem's jump maps the state and the solve restarts there (the restart point is a zero
    of ``g`` on the crossed side, so it is never detected again), until ``t_span[1]``,
    ``max_events`` events (default the problem's) or ``max_steps`` steps in all. A terminal
    event that no jump applies to ends the solve (``Status.EVENT``); a terminal count ``k``
    counts within one segment (between restarts).

    ``y0`` and ``params`` (optional) replace the problem's initial state and parameters (of
    any Array API library: PyTorch tensors that require gradients make the solve
    differentiable). With ``implicit_gradient`` each located event gets the one Newton
    correction with the graph attached (the root itself was found without it):
    ``t_k = t* + (d - stop_gradient(d))`` with ``d = -g(t*, y(t*)) / (dg/dt)`` and
    ``y_k = y(t*) + f (t_k - t*)``, whose values are exactly ``t*`` and ``y(t*)`` and whose
    derivative is the implicit function theorem's
    ``dt*/dtheta = -(dg/dtheta) / (dg/dt)``; the restart state after a jump is shifted by
    ``-f (t_k - t*)`` so that the later flow depends on the event time too. The Solution's
    ``event_times`` holds these ``t_k`` (y0's library), ``y_events`` the ``y_k``.

    A jump that returns a non-finite state ends the solve with ``Status.NONFINITE`` and a
    message naming the jump and the event time; events that stop advancing (accumulation,
    Zeno) end it with ``Status.DT_UNDERFLOW``.
    """
    from .problems.events import EventProblem
    from .problems._spec import bind_field

    if not isinstance(event_problem, EventProblem):
        raise TypeError(f"event_problem={event_problem!r}, but it must be an EventProblem")
    ep = event_problem
    prob = ep.problem
    if max_events is None:
        max_events = ep.max_events
    if isinstance(max_events, bool) or not isinstance(max_events, (int, np.integer)) or max_events < 1:
        raise ValueError(f"max_events={max_events!r}, but it must be a positive int")
    if not isinstance(max_steps, (int, np.integer)) or max_steps <= 0:
        raise ValueError(f"max_steps={max_steps!r}, but it must be a positive int")
    if y0 is None:
        y0 = np.asarray(prob.y0, dtype=np.float64)
    elif not _xp.is_array(y0):
        y0 = np.asarray(y0, dtype=np.float64)
    xp = _xp.namespace(y0)
    p = dict(prob.converted_params(xp, y0.dtype, _xp.device(y0)))
    if params is not None:
        p.update(params)
    f = bind_field(f"{prob.name}_rhs", prob.rhs, xp, p)

    def bound(fun: Callable[..., Any] | None) -> Callable[[Any, Any], Any] | None:
        return None if fun is None else (lambda t, y: fun(xp, t, y, p))

    gs = [bound(ev.g) for ev in ep.events]
    dgs = [bound(ev.dg_dy) for ev in ep.events]
    dts = [bound(ev.dg_dt) for ev in ep.events]
    specs = [(ev.name, gs[i], ev.direction, ev.terminal) for i, ev in enumerate(ep.events)]
    t0, t1 = prob.t_span
    ts = np.asarray([t0, t1] if t_eval is None else t_eval, dtype=np.float64)
    dtype, device = y0.dtype, _xp.device(y0)
    outs: list[Any] = [xp.full(y0.shape, math.nan, dtype=dtype, device=device)] * len(ts)
    stats = Stats()
    t_ev: list[float] = []
    t_graph: list[Any] = []
    y_graph: list[Any] = []
    which: list[int] = []
    t, y = float(t0), y0
    status, message = Status.SUCCESS, ""
    stalls = 0
    t_steps: list[float] = [float(t0)]
    direction = 1.0 if t1 > t0 else -1.0
    while True:
        ahead = direction * (ts - t) > 0
        seg_ts = np.concatenate([[t], ts[ahead]])
        left = max_steps - stats.accepted - stats.rejected
        if left <= 0:
            status = Status.MAX_STEPS
            message = status.value
            break
        sol = _solve(f, y, (t, t1), method, seg_ts, options.get("rtol", 1e-6), options.get("atol", 1e-9),
                     options.get("dt"), options.get("n_steps"), options.get("controller"),
                     options.get("first_step"), left, options.get("dtmin"), options.get("dtmax"), "shared",
                     options.get("jac"), options.get("compiled"), options.get("tstops"), events=specs)
        for key in ("nfev", "njev", "nlu", "newton_iters", "accepted", "rejected"):
            setattr(stats, key, getattr(stats, key) + getattr(sol.stats, key))
        if sol.t_steps is not None:
            t_steps.extend(float(s) for s in sol.t_steps[1:])
        for r, j in enumerate(np.flatnonzero(ahead), start=1):
            outs[j] = sol.ys[r]
        if not t_ev:
            for j in np.flatnonzero(ts == t):
                outs[j] = sol.ys[0]
        k_hit = None
        for i, (ts_k, k) in enumerate(zip(sol.t_events, sol.event_index)):
            y_k = sol.y_events[i]
            if len(t_ev) >= max_events:
                break
            t_k: Any = xp.asarray(float(ts_k), dtype=dtype, device=device)
            if implicit_gradient:
                slope = _trajectory_slope(gs[k], dgs[k], f, xp, float(ts_k), y_k, y0, dts[k])
                if slope != 0 and math.isfinite(slope):
                    delta = -gs[k](t_k, y_k) / slope
                    # value zero, derivative the IFT's: the located root and state keep their values
                    # (a Newton step's value, ~1e-17, rounds t* by an ulp, and a restart shifted by
                    # that ulp lands on the near side and finds the same event again)
                    delta = delta - _xp.stop_gradient(delta)
                    y_k = y_k + f(t_k, y_k) * delta
                    t_k = t_k + delta
            t_ev.append(float(ts_k))
            t_graph.append(t_k)
            y_graph.append(y_k)
            which.append(int(k))
            if i == len(sol.t_events) - 1 and sol.status is Status.EVENT:
                k_hit = int(k)
        if sol.status is not Status.EVENT or k_hit is None:
            t = float(sol.t_final)
            status, message = sol.status, sol.message
            if len(t_ev) >= max_events and sol.status is Status.EVENT:
                message = f"{Status.EVENT.value}: max_events={max_events} events reached before t1={t1!r}"
            break
        t_star = float(sol.t_final)
        if len(t_ev) >= max_events:
            t, status = t_star, Status.EVENT
            message = f"{Status.EVENT.value}: max_events={max_events} events reached before t1={t1!r}"
            break
        y_minus, t_k = y_graph[-1], t_graph[-1]
        name = ep.events[k_hit].name
        if ep.jump is not None and ep.jump.applies(name):
            y_plus = ep.jump.map(xp, t_k, y_minus, p)
            if not bool(np.all(np.isfinite(_xp.to_numpy(_xp.stop_gradient(y_plus))))):
                status = Status.NONFINITE
                message = (f"the jump {ep.jump.name!r} at the event {name!r} at t={t_star!r} returned a non-finite"
                           f" state {_xp.to_numpy(_xp.stop_gradient(y_plus)).tolist()}")
                break
        else:
            # a terminal event without a jump ends the solve there
            t, status, message = t_star, Status.EVENT, sol.message
            break
        if implicit_gradient:
            # the later flow starts at t_k: to first order, the state at the float t* moves by -f dt_k
            y_plus = y_plus - f(t_k, y_plus) * (t_k - _xp.stop_gradient(t_k))
        if t_star == t1:
            t = t_star
            break
        stalls = stalls + 1 if t_star == t else 0
        if stalls >= 2:
            status = Status.DT_UNDERFLOW
            message = (f"events at t={t_star!r} do not advance the solve (an accumulation point of events: a Zeno"
                       " time); shorten t_span")
            break
        t, y = t_star, y_plus
    return Solution(
        ts=ts, ys=xp.stack(outs, axis=0), status=status, stats=stats,
        method=getattr(resolve_solver(method), "name", str(method)), t_final=t,
        message=message or status.value, options={"max_events": int(max_events), **options},
        t_steps=np.asarray(t_steps, dtype=np.float64), t_events=np.asarray(t_ev, dtype=np.float64),
        y_events=xp.stack(y_graph, axis=0) if y_graph else None, event_index=np.asarray(which, dtype=np.int64),
        event_names=tuple(ev.name for ev in ep.events),
        event_times=xp.stack(t_graph, axis=0) if t_graph else None)


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
