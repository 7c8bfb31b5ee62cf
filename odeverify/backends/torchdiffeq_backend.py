"""torchdiffeq (``odeint``'s solvers) as a backend.

The adapter builds torchdiffeq's own solver object the way ``torchdiffeq.odeint`` does
(``_check_inputs`` then ``SOLVERS[method](...)``) and runs ``odeint``'s loop over the output
times itself, so that a stop (``max_steps``, ``dtmin``, an underflow or a blow-up) still
returns the outputs reached so far. The numbers are torchdiffeq's.

Counting, all exact (nothing is derived):

- ``nfev``: every call of the wrapped vector field (one call evaluates the whole batch);
- ``accepted`` / ``rejected``: torchdiffeq's step callbacks (``callback_accept_step`` and
  ``callback_reject_step``, which its adaptive Runge--Kutta solvers call on the function
  object); fixed-grid steps are counted by ``callback_step`` and never rejected;
- ``max_steps``: attempted steps (accepted + rejected) over the whole solve, checked in
  ``callback_step`` before each attempt. (torchdiffeq's own ``max_num_steps`` counts per
  output interval, so it is not used.)

Fixed-grid methods step on odeverify's grid (``n_steps`` equal steps ``t0 + (t1 - t0) i / n``,
or steps ``dt`` with the last one shortened to end on ``t1``) passed as a
``grid_constructor``; their output times come from torchdiffeq's default ``interp="linear"``.
"""
from __future__ import annotations

import math
import time
from typing import Any

import numpy as np

from .. import _xp
from ..problems import Problem
from ..solution import Solution, Stats, Status
from .base import Backend, Capabilities, MethodInfo, UnsupportedOption, classify_exception

#: torchdiffeq method -> (order, embedded order, dense order, reference tableau, notes).
#: Tableau matches were checked coefficient by coefficient (tests/test_backend_torchdiffeq.py).
_KNOWN: dict[str, tuple[int, int | None, int | None, str | None, str]] = {
    "dopri5": (5, 4, 4, None,
               "Dormand-Prince 5(4): A, b, c equal odeverify's dopri5, but the embedded (error) weights are"
               " Shampine's alternative 4th-order formula (b_hat_1 = 1951/21600, ..., b_hat_7 = 1/60), not"
               " Dormand-Prince's (5179/57600, ..., 1/40): error estimates and step sequences differ, so no"
               " tableau is shared. Dense: quartic through y0, y(1/2), y1, f0, f1."),
    "bosh3": (3, 2, 2, "bosh3",
              "Bogacki-Shampine 3(2), FSAL; coefficients equal odeverify's bosh3. Dense: quartic fit with a"
              " second-order midpoint value y0 + h/2 k2 (dense order 2 from the construction, not measured)."),
    "fehlberg2": (2, 1, 2, "fehlberg2",
                  "Fehlberg 2(1); coefficients equal odeverify's fehlberg2, but torchdiffeq reuses the last stage"
                  " f(t1, y0 + h(k1 + 255 k2)/256) as the next step's first stage although it propagates the"
                  " second-order solution (2 evaluations per step instead of 3): its steps differ from the"
                  " reference's."),
    "adaptive_heun": (2, 1, 1, "heun",
                      "Heun 2(1) with Euler embedded; coefficients equal odeverify's heun (error weights up to"
                      " sign), but torchdiffeq reuses f at the Euler predictor as the next step's first stage"
                      " (1 evaluation per step instead of 2): its steps differ from the reference's."),
    "dopri8": (8, 7, 4, None,
               "Prince-Dormand RK8(7)13M (c2 = 1/18), not Hairer's DOP853 (c2 = 0.0526...): no shared tableau."
               " Dense: quartic fit (dense order at most 4)."),
    "euler": (1, None, 1, "euler", "fixed grid, linear interpolation between grid points"),
    "midpoint": (2, None, 1, "midpoint", "explicit midpoint; fixed grid, linear interpolation"),
    "heun2": (2, None, 1, "heun", "Heun's trapezoidal method; fixed grid, linear interpolation"),
    "heun3": (3, None, 1, None, "Heun's third-order method (c = 0, 1/3, 2/3; b = 1/4, 0, 3/4): no odeverify"
              " tableau; fixed grid, linear interpolation"),
    "rk4": (4, None, 1, "rk4_38", "Kutta's 3/8 rule (not the classic RK4); fixed grid, linear interpolation"),
    "explicit_adams": (4, None, 1, None,
                       "Adams-Bashforth multistep (order ramps up to max_order - 1 = 11 after an RK4 start;"
                       " torchdiffeq claims order 4); fixed grid, linear interpolation"),
    "implicit_adams": (4, None, 1, None,
                       "Adams-Bashforth-Moulton predictor-corrector (functional iteration, rtol/atol for"
                       " convergence; torchdiffeq claims order 4); fixed grid, linear interpolation"),
    "fixed_adams": (4, None, 1, None, "alias of implicit_adams"),
}

#: options that only the adaptive solvers take
_ADAPTIVE_ONLY = ("first_step", "safety", "factor_min", "factor_max", "dtmin", "dtmax")

_OPTIONS: dict[str, bool | str] = {k: True for k in
                                   ("rtol", "atol", "t_eval", "first_step", "max_steps", "safety", "factor_min",
                                    "factor_max", "dtmin", "dtmax", "dt", "n_steps", "max_order")}
#: methods that take ``max_order`` (torchdiffeq's AdamsBashforthMoulton: at most 12; below 4 it
#: warns and runs rk4), with the range declared in their MethodInfo.option_ranges
_MAX_ORDER = {"explicit_adams": (1, 12), "implicit_adams": (1, 12), "fixed_adams": (1, 12)}


class _StepLimit(Exception):
    pass


class _StepTooSmall(Exception):
    pass


class _Field:
    """The vector field, counting calls; step callbacks count steps and enforce limits."""

    def __init__(self, f: Any, max_steps: int | None, dtmin: float | None) -> None:
        self.f = f
        self.max_steps = max_steps
        self.dtmin = dtmin
        self.nfev = 0
        self.attempts = 0
        self.accepted = 0
        self.rejected = 0
        self.t_last = math.nan
        self.direction = 1.0  #: torchdiffeq passes the callbacks t0 in the caller's time, dt > 0

    def __call__(self, t: Any, y: Any) -> Any:
        self.nfev += 1
        return self.f(t, y)

    def callback_step(self, t0: Any, y0: Any, dt: Any) -> None:
        if self.max_steps is not None and self.attempts >= self.max_steps:
            raise _StepLimit
        if self.dtmin is not None and abs(float(dt)) < self.dtmin:
            raise _StepTooSmall(f"step {abs(float(dt)):.3g} < dtmin={self.dtmin:g}")
        self.attempts += 1


class _AdaptiveField(_Field):
    def callback_accept_step(self, t0: Any, y0: Any, dt: Any) -> None:
        self.accepted += 1
        self.t_last = float(t0) + self.direction * float(dt)

    def callback_reject_step(self, t0: Any, y0: Any, dt: Any) -> None:
        self.rejected += 1


class _FixedField(_Field):
    def callback_step(self, t0: Any, y0: Any, dt: Any) -> None:
        super().callback_step(t0, y0, dt)
        self.accepted += 1
        self.t_last = float(t0) + self.direction * float(dt)


def _solvers() -> dict[str, Any]:
    from torchdiffeq._impl.odeint import SOLVERS

    return SOLVERS


class TorchdiffeqBackend(Backend):
    """torchdiffeq's explicit solvers, float64 or float32, CPU (and CUDA when available)."""

    name = "torchdiffeq"
    install_hint = "pip install 'odeverify[torch]' (installs torchdiffeq)"

    def _import(self) -> Any:
        _xp.require("torch")
        return _xp.require("torchdiffeq")

    def _event_adapter(self) -> Any:  # events (issue 12): backends/torchdiffeq_events.py
        from . import torchdiffeq_events

        return torchdiffeq_events

    def capabilities(self) -> Capabilities:
        torch = _xp.require("torch")
        solvers = _solvers()
        from torchdiffeq._impl.solvers import FixedGridODESolver

        methods: dict[str, MethodInfo] = {}
        for name, cls in solvers.items():
            if name == "scipy_solver":
                continue  # wraps scipy.integrate: use the scipy backend
            fixed = isinstance(cls, type) and issubclass(cls, FixedGridODESolver)
            order_attr = getattr(cls, "order", None)
            if name in _KNOWN:
                order, emb, dense_order, tab, notes = _KNOWN[name]
                if order_attr is not None and int(order_attr) != order:
                    notes += f" (torchdiffeq's class claims order {order_attr})"
            else:  # a method this adapter does not know yet (another torchdiffeq version)
                order, emb, dense_order, tab = int(order_attr or 1), None, None, None
                notes = "not reviewed by this adapter: order is torchdiffeq's class attribute, no tableau claimed"
            ranges = (("max_order", *_MAX_ORDER[name]),) if name in _MAX_ORDER else ()
            methods[name] = MethodInfo(name=name, order=order, adaptive=not fixed, fixed=fixed, dense=True,
                                       dense_order=dense_order, embedded_order=None if fixed else emb,
                                       tableau=tab, notes=notes, option_ranges=ranges)
        devices = ("cpu", "cuda") if torch.cuda.is_available() else ("cpu",)
        return Capabilities(
            methods=methods, dtypes=("float64", "float32"), devices=devices, options=_OPTIONS, per_sample=False,
            gradient_modes=("backprop", "adjoint", "adjoint_seminorm"), discrete_gradient_modes=("backprop",),
            notes="One step size for a whole batch (torchdiffeq's RMS norm is over all elements). Time is float64"
            " in the adaptive solvers (option dtype), the state keeps its dtype. Adaptive solvers step past the"
            " last output time and read it off their interpolant (t_final is where the last step ended)."
            " nfev, accepted and rejected are counted exactly (vector-field wrapper and torchdiffeq's step"
            " callbacks). Option mapping: factor_min -> dfactor, factor_max -> ifactor, dtmax -> max_step,"
            " dt/n_steps -> grid_constructor on odeverify's grid; max_steps (attempted steps over the whole"
            " solve) and dtmin (an attempted step below it ends with DT_UNDERFLOW) are enforced by this adapter"
            " in callback_step: torchdiffeq's max_num_steps counts per output interval and its min_step clamps"
            " the step and force-accepts it instead of stopping. Fixed-grid output between grid points is"
            " linear interpolation (dense order 1).",
        )

    def _gradient(self, problem: Problem, method: MethodInfo, mode: str, loss: Any, y0: np.ndarray | None,
                  options: dict[str, Any], dtype: str, device: str) -> Any:
        from .torchdiffeq_gradients import gradient  # odeint backprop / odeint_adjoint (seminorm)

        return gradient(problem, method, mode, loss, y0, options, dtype, device)

    def _solve(self, problem: Problem, method: MethodInfo, y0: np.ndarray | None, options: dict[str, Any],
               dtype: str, device: str) -> Solution:
        torch = _xp.require("torch")
        from torchdiffeq._impl.odeint import _check_inputs

        solvers = _solvers()
        xp = _xp.get_namespace("torch")
        tdtype = getattr(torch, dtype)
        dev = torch.device(device)
        t0, t1 = problem.t_span
        direction = 1.0 if t1 > t0 else -1.0
        # y0, t_eval and the numeric options were validated by Backend.solve
        ts = np.asarray(options["t_eval"] if options.get("t_eval") is not None else (t0, t1), dtype=np.float64)
        fixed = options.get("dt") is not None or options.get("n_steps") is not None
        if fixed:
            for key in _ADAPTIVE_ONLY:
                if options.get(key) is not None:
                    raise UnsupportedOption(f"{self.name} cannot honour {key}={options[key]!r} with the fixed-grid"
                                            f" method {method.name!r}: it is an adaptive-step option")
        max_steps = options.get("max_steps")

        y_init = torch.as_tensor(np.asarray(problem.y0 if y0 is None else y0, dtype=np.float64), dtype=tdtype,
                                 device=dev)
        f = problem.vector_field(xp, tdtype, dev)

        solver_opts: dict[str, Any] = {}
        status = Status.SUCCESS
        message = ""
        t_end = t1
        if fixed:
            if options.get("n_steps") is not None:
                n = options["n_steps"]
                if not isinstance(n, (int, np.integer)) or n <= 0:
                    raise ValueError(f"n_steps={n!r}, but it must be a positive int")
                grid = t0 + (t1 - t0) * np.arange(n + 1) / n
            else:
                dt = float(options["dt"])
                if not (math.isfinite(dt) and dt > 0):
                    raise ValueError(f"dt={options['dt']!r}, but it must be finite and > 0")
                count = math.ceil(abs(t1 - t0) / dt * (1 - 1e-12))
                grid = t0 + direction * dt * np.arange(count + 1, dtype=np.float64)
            grid[-1] = t1
            if max_steps is not None and len(grid) - 1 > max_steps:
                grid = grid[: max_steps + 1]  # the same steps as the full solve, up to the limit
                t_end = float(grid[-1])
                status = Status.MAX_STEPS
            if options.get("max_order") is not None:  # check_options: the Adams methods only
                solver_opts["max_order"] = int(options["max_order"])
            grid_t = torch.as_tensor(grid, dtype=torch.float64, device=dev)
            solver_opts["grid_constructor"] = lambda func, y, t: grid_t.to(dtype=t.dtype, device=t.device)
            field: _Field = _FixedField(f, None, None)
        else:
            for ours, theirs in (("first_step", "first_step"), ("safety", "safety"), ("factor_min", "dfactor"),
                                 ("factor_max", "ifactor"), ("dtmax", "max_step")):
                if options.get(ours) is not None:
                    solver_opts[theirs] = float(options[ours])
            solver_opts["dtype"] = torch.float64
            field = _AdaptiveField(f, None if max_steps is None else int(max_steps),
                                   None if options.get("dtmin") is None else float(options["dtmin"]))

        # odeint's t: t0, the output times reached, and the end of the interval (work as in the reference)
        inside = ts[(direction * (ts - t0) > 0) & (direction * (ts - t_end) <= 0)]
        t_call = np.concatenate([[t0], inside, [] if inside.size and inside[-1] == t_end else [t_end]])
        t_tensor = torch.as_tensor(t_call, dtype=torch.float64, device=dev)
        rtol = options.get("rtol")
        atol = options.get("atol")
        rtol = 1e-7 if rtol is None else _tol(torch, rtol, tdtype, dev)
        atol = 1e-9 if atol is None else _tol(torch, atol, tdtype, dev)

        field.direction = direction
        rows = torch.full((len(t_call),) + tuple(y_init.shape), math.nan, dtype=tdtype, device=dev)
        start = time.perf_counter()
        with torch.no_grad():
            shapes, func, y_in, t_in, rtol, atol, mname, opts, _, _ = _check_inputs(
                field, y_init, t_tensor, rtol, atol, method.name, solver_opts, None, solvers)
            solver = solvers[mname](func=func, y0=y_in, rtol=rtol, atol=atol, **opts)
            try:
                if fixed:
                    rows = solver.integrate(t_in)
                else:
                    # torchdiffeq's AdaptiveStepsizeODESolver.integrate, keeping the rows reached on a stop
                    rows[0] = y_in
                    t_solver = t_in.to(solver.dtype)
                    solver._before_integrate(t_solver)
                    for i in range(1, len(t_solver)):
                        rows[i] = solver._advance(t_solver[i])
            except _StepLimit:
                status = Status.MAX_STEPS
            except _StepTooSmall as exc:
                status, message = Status.DT_UNDERFLOW, str(exc)
            except AssertionError as exc:  # torchdiffeq reports its failures by assert
                message = str(exc)
                if message.startswith("underflow in dt"):
                    status = Status.DT_UNDERFLOW
                elif message.startswith("non-finite values"):
                    status = Status.NONFINITE
                elif message.startswith("max_num_steps"):
                    status = Status.MAX_STEPS
                else:
                    status = classify_exception(exc)
                    if status is Status.FAILED:
                        raise
                message = message[:300]
        if device == "cuda":
            torch.cuda.synchronize()
        wall = time.perf_counter() - start

        # map odeint's rows back to the requested output times (rows not reached stay NaN)
        ys = torch.full((len(ts),) + tuple(y_init.shape), math.nan, dtype=tdtype, device=dev)
        row_of = {float(t): i for i, t in enumerate(t_call)}
        for j, t in enumerate(ts):
            i = row_of.get(float(t))
            if i is not None:
                ys[j] = rows[i]
        if status is Status.SUCCESS and not bool(torch.isfinite(ys).all()):
            status = Status.NONFINITE
        if fixed:
            t_final = float(t_end) if status is not Status.NONFINITE else float("nan")
        else:
            t_final = field.t_last if field.accepted else t0
        stats = Stats(nfev=field.nfev, accepted=field.accepted, rejected=field.rejected)
        text = status.value if not message else f"{status.value}: torchdiffeq: {message}"
        opts_out = {k: v for k, v in options.items() if v is not None}
        opts_out["torchdiffeq_options"] = {k: v for k, v in solver_opts.items() if k != "grid_constructor"}
        return Solution(ts=ts, ys=ys, status=status, stats=stats, method=method.name, t_final=t_final,
                        message=text, options=opts_out, timing={"wall_s": wall, "compile_s": 0.0})


def _tol(torch: Any, value: Any, dtype: Any, device: Any) -> Any:
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim == 0:
        return float(arr)
    return torch.as_tensor(arr, dtype=torch.float64, device=device)
