"""What every gradient mode shares: validated inputs, the vector field with explicit
parameters, flat views for the adjoint systems, a solver wrapper that records the accepted
steps, and the assembly of a :class:`GradientResult`.

Conventions
-----------
- The state is flattened for the augmented systems: ``z`` has ``N = y0.size`` entries (a batch
  ``(B, n)`` shares one step size, exactly as the shared-step solve of the batch does: the
  RMS error norm over ``(B, n)`` equals the one over its ``B * n`` entries).
- The parameters are every floating NumPy array in ``problem.params`` (after overrides),
  flattened in sorted-name order into ``theta`` (``P`` entries). Scalars (Python floats) are
  constants: the Array API ``rhs`` receives them unchanged.
- Work: ``nfev_forward`` counts evaluations of f in the forward pass; ``nfev_backward``
  counts every evaluation of f, VJP of f (which also evaluates f) or JVP of f in the backward
  pass, each as one.
"""
from __future__ import annotations

import bisect
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import _xp
from ..integrate import _stop_window, resolve_solver
from ..integrate import solve as integrate_solve
from ..problems import Problem
from ..solution import Status
from ..solvers.base import TimeContext
from ..solvers.rk import StepInterpolant
from ._spec import GradientResult, Loss

#: libraries with automatic differentiation (the reference gradient modes need VJPs/JVPs)
AUTODIFF_LIBRARIES = ("torch", "jax")
DTYPES = ("float32", "float64")


# ----------------------------------------------------------------------------- counting
@dataclass
class Counter:
    """Evaluations of f (forward) and of f/VJP/JVP (backward), counted where they happen."""

    forward: int = 0
    backward: int = 0
    phase: str = "forward"

    def add(self, k: int = 1) -> None:
        if self.phase == "forward":
            self.forward += k
        else:
            self.backward += k


# ----------------------------------------------------------------------------- setup
@dataclass
class Setup:
    """Validated inputs of one gradient computation, in one array library."""

    problem: Problem
    loss: Loss
    library: str
    xp: Any
    dtype: Any
    y0: Any  #: the initial state, shape (n,) or (B, n), in xp
    device: Any  #: the library's device (None: its default)
    names: tuple[str, ...]  #: differentiable parameters, sorted
    params: dict[str, Any]  #: name -> xp array
    const: dict[str, Any]  #: non-array parameters, passed through unchanged
    ts: np.ndarray  #: loss output times (float64)
    t_span: tuple[float, float]
    solver: Any
    method: str
    rtol: Any
    atol: Any
    dt: float | None
    n_steps: int | None
    max_steps: int
    counter: Counter = field(default_factory=Counter)
    #: times where the field may be discontinuous (``integrate.solve``'s ``tstops``): every
    #: forward, backward and replayed step lands on them and evaluates f on its own side
    tstops: np.ndarray | None = None

    def window(self, t: float, t_next: float) -> tuple[Any, Any] | None:
        """The ``TimeContext.window`` of a replayed step from ``t`` to ``t_next``: one ulp inside
        the step at an end that is one of :attr:`tstops`, as the forward solve evaluated it."""
        if self.tstops is None or self.tstops.size == 0:
            return None
        starts, ends = bool(np.any(self.tstops == t)), bool(np.any(self.tstops == t_next))
        return _stop_window(t, t_next, starts, ends, 1.0 if t_next >= t else -1.0)

    # --- the field
    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.y0.shape)

    @property
    def N(self) -> int:
        return int(math.prod(self.shape))

    @property
    def P(self) -> int:
        return int(sum(math.prod(tuple(self.params[k].shape)) for k in self.names))

    @property
    def fixed(self) -> bool:
        return self.dt is not None or self.n_steps is not None

    def rhs(self, t: Any, y: Any, p: Mapping[str, Any]) -> Any:
        """f(t, y; p), uncounted; ``p`` holds the differentiable parameters."""
        return self.problem.rhs(self.xp, t, y, {**self.const, **p})

    def field(self, p: Mapping[str, Any] | None = None, counted: bool = True) -> Callable[[Any, Any], Any]:
        """f(t, y) with parameters ``p`` (default: the setup's), counting each call."""
        p = self.params if p is None else p

        def f(t: Any, y: Any) -> Any:
            if counted:
                self.counter.add()
            return self.rhs(t, y, p)

        return f

    # --- flat views
    def flat_params(self, p: Mapping[str, Any]) -> Any:
        xp = self.xp
        if not self.names:
            return xp.zeros((0,), dtype=self.dtype, device=self.device)
        return xp.concat([xp.reshape(p[k], (-1,)) for k in self.names])

    def unflat_params(self, theta: Any) -> dict[str, Any]:
        out, i = {}, 0
        for k in self.names:
            shape = tuple(self.params[k].shape)
            size = math.prod(shape)
            out[k] = self.xp.reshape(theta[i:i + size], shape)
            i += size
        return out

    def flat_field(self, t: Any, z: Any, p: Mapping[str, Any]) -> Any:
        """f on the flat state z (N,), uncounted."""
        return self.xp.reshape(self.rhs(t, self.xp.reshape(z, self.shape), p), (-1,))

    def field_vjp(self, t: Any, z: Any, a: Any, with_params: bool = True) -> tuple[Any, Any, Any]:
        """(f(t, z), a^T df/dz, a^T df/dtheta (flat, or None)): one VJP, counted once."""
        self.counter.add()
        if with_params and self.names:
            fz, (gz, gp) = _xp.metered_vjp(lambda zz, pp: self.flat_field(t, zz, pp), (z, self.params), a)
            return fz, gz, self.flat_params(gp)
        fz, (gz,) = _xp.metered_vjp(lambda zz: self.flat_field(t, zz, self.params), (z,), a)
        return fz, gz, None

    def solve(self, f: Callable, y0: Any, t_span: tuple[float, float], *, t_eval: Any = None, solver: Any = None,
              rtol: Any = None, atol: Any = None, backward: bool = False) -> Any:
        """The one integrator, with this setup's method, steps and limits. ``backward``: a
        solve over part of the span (adjoint segments) takes the forward step size ``dt``
        (``(t1 - t0) / n_steps`` for ``n_steps``), not ``n_steps`` steps per segment."""
        dt, n_steps = self.dt, self.n_steps
        if backward and n_steps is not None:
            dt, n_steps = abs(self.t_span[1] - self.t_span[0]) / n_steps, None
        return integrate_solve(
            f, y0, t_span, method=self.solver if solver is None else solver, t_eval=t_eval,
            rtol=self.rtol if rtol is None else rtol, atol=self.atol if atol is None else atol,
            dt=dt, n_steps=n_steps, max_steps=self.max_steps, tstops=self.tstops)

    def time(self, t: float) -> Any:
        return self.xp.full((), float(t), dtype=self.dtype, device=self.device)

    def cotangents(self, ys: Any) -> Any:
        """dL/dy(t_i), shape (T,) + y0.shape."""
        return self.loss.cotangent(self.xp, ys)


def _floating_array(value: Any) -> bool:
    return isinstance(value, np.ndarray) and np.issubdtype(value.dtype, np.floating)


def prepare(problem: Any, loss: Any, *, method: Any, library: str, dtype: str, y0: Any, params: Any,
            rtol: Any, atol: Any, dt: Any, n_steps: Any, max_steps: Any, device: Any = None,
            tstops: Any = None) -> Setup:
    """Validate every input (errors name the parameter) and convert it to ``library``."""
    if not isinstance(problem, Problem):
        raise TypeError(f"problem={problem!r}, but it must be an odeverify Problem (e.g. odeverify.problems.get(name))")
    if not isinstance(loss, Loss):
        raise TypeError(f"loss={loss!r}, but it must be an odeverify.gradients.Loss")
    if library not in AUTODIFF_LIBRARIES:
        if library in _xp.ARRAY_LIBRARIES:
            raise ValueError(f"library={library!r} has no automatic differentiation; gradient modes need one of"
                             f" {', '.join(AUTODIFF_LIBRARIES)}")
        raise ValueError(f"library={library!r} is not supported; expected one of {', '.join(AUTODIFF_LIBRARIES)}")
    if dtype not in DTYPES:
        raise ValueError(f"dtype={dtype!r}, but it must be one of {', '.join(DTYPES)}")
    xp = _xp.get_namespace(library)
    xdtype = getattr(xp, dtype)

    # initial state
    y0_np = np.asarray(problem.y0, dtype=np.float64) if y0 is None else np.asarray(y0, dtype=np.float64)
    if y0_np.ndim not in (1, 2) or y0_np.shape[-1] != problem.n:
        raise ValueError(f"y0 has shape {y0_np.shape}, but it must be ({problem.n},) or (B, {problem.n})"
                         f" for problem {problem.name!r}")
    if not np.all(np.isfinite(y0_np)):
        raise ValueError("y0 contains non-finite values; it must be finite")
    if loss.n != y0_np.shape[-1]:
        raise ValueError(f"loss.weights has n={loss.n} columns, but the state of problem {problem.name!r}"
                         f" has n={y0_np.shape[-1]}")

    # parameters
    merged = dict(problem.params)
    for key, value in (params or {}).items():
        if key not in merged:
            raise ValueError(f"params has key {key!r}, but problem {problem.name!r} has parameters"
                             f" {sorted(merged)}")
        old = merged[key]
        if isinstance(old, np.ndarray):
            new = np.asarray(value, dtype=np.float64)
            if new.shape != old.shape:
                raise ValueError(f"params[{key!r}] has shape {new.shape}, but it must be {old.shape}")
            merged[key] = new
        else:
            merged[key] = value
    names = tuple(sorted(k for k, v in merged.items() if _floating_array(v)))
    p_arrays = {k: xp.asarray(np.array(merged[k]), dtype=xdtype, device=device) for k in names}
    const = {k: v for k, v in merged.items() if k not in names}

    # times
    t0, t1 = problem.t_span
    ts = np.asarray(loss.t_eval, dtype=np.float64)
    lo, hi = min(t0, t1), max(t0, t1)
    if ts.min() < lo or ts.max() > hi:
        raise ValueError(f"loss.t_eval={ts.tolist()} has times outside the problem's t_span={problem.t_span}")
    direction = 1.0 if t1 > t0 else -1.0
    if np.any(direction * np.diff(ts) <= 0):
        raise ValueError(f"loss.t_eval={ts.tolist()}, but it must be strictly monotone in the direction of"
                         f" t_span={problem.t_span}")

    if not isinstance(max_steps, (int, np.integer)) or isinstance(max_steps, bool) or max_steps <= 0:
        raise ValueError(f"max_steps={max_steps!r}, but it must be a positive int")
    solver = resolve_solver(method)
    stops = None
    if tstops is not None:
        from ..integrate import stop_times

        stop_times(tstops, t0, t1)  # validates (names the parameter)
        stops = np.unique(np.asarray(tstops, dtype=np.float64))
    return Setup(problem=problem, loss=loss, library=library, xp=xp, dtype=xdtype,
                 y0=xp.asarray(y0_np, dtype=xdtype, device=device), device=device, names=names, params=p_arrays, const=const, ts=ts,
                 t_span=(t0, t1), solver=solver, method=solver.name, rtol=rtol, atol=atol, dt=dt,
                 n_steps=n_steps, max_steps=int(max_steps), tstops=stops)


# ----------------------------------------------------------------------------- recorded steps
@dataclass
class Step:
    """One accepted step: start time, signed step, and (when kept) start state and stages."""

    t: float
    h: float
    y: Any = None
    res: Any = None
    nfev: int = 0  #: evaluations of f inside the step
    k1: Any = None  #: the first-stage slot the integrator handed the step (when kept)


class RecordingSolver:
    """Wraps a step function and records every attempted step (t, h), keeping the last attempt
    from each start time: the accepted one, since the integrator retries from the same t until
    it accepts. With ``keep=True`` the start state and the stages are kept too (a dense
    interpolant of the whole forward solution). Everything else is delegated to the solver."""

    def __init__(self, inner: Any, keep: bool = False) -> None:
        self._inner = inner
        self._keep = keep
        self.attempts: list[Step] = []
        self.rejected_nfev = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def step(self, f: Any, tc: TimeContext, y: Any, h: Any, k1: Any, *, estimate: bool, **kw: Any) -> Any:
        res = self._inner.step(f, tc, y, h, k1, estimate=estimate, **kw)
        t = float(tc.t)
        if self.attempts and self.attempts[-1].t == t:
            self.rejected_nfev += self.attempts[-1].nfev  # the previous try was rejected
            self.attempts.pop()
        self.attempts.append(Step(t=t, h=float(h), y=y if self._keep else None, res=res if self._keep else None,
                                  nfev=res.nfev, k1=k1 if self._keep else None))
        return res

    def accepted(self, t_steps: np.ndarray) -> list[Step]:
        """The accepted steps of a finished solve, given its recorded boundaries."""
        n_acc = len(t_steps) - 1
        steps = self.attempts[:n_acc]
        if len(steps) != n_acc or any(s.t != t for s, t in zip(steps, t_steps[:-1])):
            raise RuntimeError("the recorded steps do not match the solve's accepted steps")
        return steps


def require_explicit(s: Setup, mode: str) -> None:
    """Modes that replay single steps need a stateless explicit RK method. An implicit step is
    not a function of (t_k, y_k, h_k) alone: it depends on solver state carried across steps
    (the Jacobian and LU factors reused from an earlier step, Radau's starting values from the
    previous collocation polynomial, the Newton rate), and its Newton iteration stops at a
    tolerance, so a replay from y_k would not reproduce the forward step to round-off."""
    if hasattr(s.solver, "init_state") or not hasattr(s.solver, "dense_weights"):
        raise ValueError(f"method={s.method!r}, but mode {mode!r} replays the steps of an explicit Runge-Kutta"
                         " method (one of odeverify.SOLVERS' explicit tableaus)")


def require_dense(method: Any, name: str, mode: str) -> None:
    """Modes that interpolate the stored steps need a Runge-Kutta method of the registry
    (explicit or implicit: the stored stages feed its continuous extension, or cubic Hermite)."""
    if not hasattr(method, "dense_weights"):
        raise ValueError(f"{name}={method.name!r}, but mode {mode!r} interpolates the stored steps of a Runge-Kutta"
                         " method of odeverify.SOLVERS (explicit or implicit)")


def replay_step(setup: Setup, f: Callable, y: Any, t: float, h: float, t_out: list[float], t_next: float
                ) -> tuple[Any, list[Any], Any]:
    """One step of the solver from (t, y) with step h, as the integrator took it, and its dense
    output at the times ``t_out`` (in (t, t_next]): ``(y1, outputs, StepResult)``."""
    tc = TimeContext(xp=setup.xp, dtype=setup.dtype, device=setup.device, per_sample=False, t=t,
                     window=setup.window(t, t_next))
    k1 = f(tc.time(t), y)
    res = setup.solver.step(f, tc, y, h, k1, estimate=False)
    outs: list[Any] = []
    interp = None
    for to in t_out:
        if to == t_next:
            outs.append(res.y1)
            continue
        if interp is None:
            interp = StepInterpolant(setup.solver, f, tc, y, res.y1, h, res, k1)
        outs.append(interp(np.asarray((to - t) / h)))
    return res.y1, outs, res


def outputs_by_step(ts: np.ndarray, t_steps: np.ndarray) -> tuple[list[int], list[list[int]]]:
    """Which loss times are served by which step: indices at t0 (served by y0) and, for step
    k (from t_steps[k] to t_steps[k+1]), the loss indices inside (t_k, t_{k+1}] — the step that
    contains an output time serves it, as in the integrator."""
    direction = 1.0 if t_steps[-1] >= t_steps[0] else -1.0
    at_start = [i for i, t in enumerate(ts) if t == t_steps[0]]
    per_step: list[list[int]] = [[] for _ in range(len(t_steps) - 1)]
    keys = direction * np.asarray(t_steps)
    for i, t in enumerate(ts):
        if t == t_steps[0]:
            continue
        k = bisect.bisect_left(keys.tolist(), direction * t) - 1
        per_step[max(0, min(k, len(per_step) - 1))].append(i)
    return at_start, per_step


class DenseSolution:
    """z(t) from the stored forward steps (start state and stages of each accepted step):
    the method's continuous extension (cubic Hermite where it has none), as in the forward solve."""

    def __init__(self, setup: Setup, steps: list[Step], t_steps: np.ndarray, f: Callable, solver: Any = None) -> None:
        self.setup, self.steps, self.t_steps, self.f = setup, steps, np.asarray(t_steps), f
        self.solver = setup.solver if solver is None else solver
        self.direction = 1.0 if t_steps[-1] >= t_steps[0] else -1.0
        self._keys = (self.direction * self.t_steps).tolist()
        self._interps: dict[int, StepInterpolant] = {}

    def __call__(self, t: float) -> Any:
        k = bisect.bisect_right(self._keys, self.direction * t) - 1
        k = max(0, min(k, len(self.steps) - 1))
        s = self.steps[k]
        if k not in self._interps:
            tc = TimeContext(xp=self.setup.xp, dtype=self.setup.dtype, device=self.setup.device, per_sample=False,
                             t=s.t, window=self.setup.window(s.t, float(self.t_steps[k + 1])))
            k1 = s.res.ks[0] if s.k1 is None else s.k1
            self._interps[k] = StepInterpolant(self.solver, self.f, tc, s.y, s.res.y1, s.h, s.res, k1)
        theta = (t - s.t) / s.h
        if theta == 0.0:
            return s.y
        if theta == 1.0:
            return self._interps[k].y1
        return self._interps[k](np.asarray(theta))

    def stored_arrays(self) -> int:
        """Arrays held: each step's start state and stages (plus the final state)."""
        return sum(1 + len(s.res.ks) for s in self.steps) + 1


# ----------------------------------------------------------------------------- results
def to_float64(x: Any) -> np.ndarray:
    return np.array(_xp.to_numpy(_xp.stop_gradient(x)), dtype=np.float64)


def nan_result(setup: Setup, mode: str, status: Status, message: str, **kw: Any) -> GradientResult:
    """A failed computation keeps NaN gradients (never zeros) and says why."""
    gp = {k: np.full(tuple(setup.params[k].shape), np.nan) for k in setup.names}
    return GradientResult(mode=mode, method=setup.method, backend="reference", library=setup.library, status=status,
                          loss=kw.pop("loss", math.nan), grad_y0=np.full(setup.shape, np.nan), grad_params=gp,
                          message=message, **kw)


def finish(setup: Setup, mode: str, *, loss: Any, grad_y0: Any, grad_params: Mapping[str, Any],
           status: Status = Status.SUCCESS, message: str = "", timing: dict[str, float] | None = None,
           steps_forward: int = 0, steps_backward: int = 0, adjoint_mismatch: float | None = None,
           options: dict[str, Any] | None = None, details: dict[str, Any] | None = None,
           memory: dict[str, Any] | None = None) -> GradientResult:
    """Assemble the result (NumPy float64 copies); a non-finite gradient of a successful solve
    becomes status NONFINITE with a message naming the parts (e.g. a non-differentiable field)."""
    gy0 = to_float64(grad_y0)
    gp = {k: to_float64(grad_params[k]) for k in setup.names}
    loss_v = float(to_float64(loss))
    if status.ok:
        bad = ([] if np.all(np.isfinite(gy0)) else ["dL/dy0"]) + [f"dL/d{k}" for k, v in gp.items()
                                                                  if not np.all(np.isfinite(v))]
        if bad:
            status = Status.NONFINITE
            message = (f"the gradient contains NaN or inf in {', '.join(bad)} although the forward solve"
                       " succeeded: the vector field may not be differentiable along the solution")
    return GradientResult(
        mode=mode, method=setup.method, backend="reference", library=setup.library, status=status, loss=loss_v,
        grad_y0=gy0, grad_params=gp, nfev_forward=setup.counter.forward, nfev_backward=setup.counter.backward,
        steps_forward=steps_forward, steps_backward=steps_backward, timing=dict(timing or {}),
        adjoint_mismatch=adjoint_mismatch, message=message or status.value, options=dict(options or {}),
        details=dict(details or {}), memory=dict(memory or {}))


class Clock:
    """Wall time of the forward and backward phases (perf_counter)."""

    def __init__(self) -> None:
        self.t0 = time.perf_counter()
        self.marks: dict[str, float] = {}

    def mark(self, name: str) -> None:
        now = time.perf_counter()
        self.marks[name] = now - self.t0
        self.t0 = now


def array_bytes(x: Any) -> int:
    return int(math.prod(tuple(x.shape))) * (8 if "64" in str(x.dtype) else 4)


#: bytes of one float64 step record (a time or a step size kept on the host)
STEP_FLOAT_BYTES = 8


def stored_memory(s: Setup, n_states: int, step_floats: int = 0, extra_bytes: int = 0) -> dict[str, int]:
    """``GradientResult.memory`` entries for what a mode stores itself: ``stored_bytes`` =
    ``n_states`` state-sized arrays (``y0``'s shape and dtype) + ``extra_bytes`` (arrays of other
    sizes) at the mode's peak, and ``step_record_bytes`` = the float64 host scalars it keeps per
    step (times, step sizes): O(steps), reported apart from the state-sized storage."""
    return {"stored_bytes": int(n_states) * array_bytes(s.y0) + int(extra_bytes),
            "step_record_bytes": STEP_FLOAT_BYTES * int(step_floats)}
