"""Gradients through torchdiffeq: ``odeint`` backpropagation and ``odeint_adjoint``.

Modes (:data:`MODES`):

- ``backprop``: autograd through ``torchdiffeq.odeint`` (discrete: the exact derivative of the
  computed solution, the step sequence being frozen: torchdiffeq chooses steps under
  ``torch.no_grad``);
- ``adjoint``: ``odeint_adjoint`` (the continuous adjoint of Chen et al. 2018, solved backward
  with the state reconstructed by backsolve; error ~ the adjoint tolerances);
- ``adjoint_seminorm``: the same with ``adjoint_options={"norm": "seminorm"}``: the step control
  of the adjoint solve ignores the parameter-gradient integrals (Kidger, Chen, Lyons, "'Hey,
  that's not an ODE': Faster ODE Adjoints via Seminorms", ICML 2021).

The problem's float parameters (:func:`~odeverify.backends.base.gradient_params`) become
tensors with ``requires_grad`` (``adjoint_params`` of ``odeint_adjoint``). Counting, exact:

- ``nfev_forward``: calls of the field in the forward solve; ``nfev_backward``: vector-Jacobian
  products of the field in the backward pass (a hook on each field output: autograd's replay
  of the tape in ``backprop``, one per augmented-dynamics evaluation in the adjoint modes);
- ``steps_*``: torchdiffeq's step callbacks (``callback_accept_step`` and its ``_adjoint``
  twin; ``steps_backward`` is 0 for ``backprop``: autograd replays, it does not step);
- ``adjoint_mismatch``: the adjoint modes reset the reconstructed state to the forward value at
  each output time; the value reached before that reset is captured (torchdiffeq's backward
  ``odeint`` calls are observed for the duration of the gradient) and compared with the
  forward state: ``max |y_rec(t_{i-1}) - y(t_{i-1})| / max(1, |y(t_{i-1})|)``, worst over the
  intervals (``gradients._spec.reconstruction_mismatch``, as the reference's backsolve); above
  1 the result's message says the gradient is not reliable.

Fixed-step mode (``n_steps`` or ``dt``) steps on odeverify's grid (as the torchdiffeq backend),
forward and, for the adjoint modes, backward (the same grid points, reversed).
"""
from __future__ import annotations

import math
import time
import warnings
from contextlib import contextmanager
from typing import Any

import numpy as np

from .. import _xp
from ..gradients._spec import GradientResult, Loss, mismatch_message, reconstruction_mismatch
from ..problems import Problem
from ..solution import Status
from .base import MethodInfo, failed_gradient, gradient_params, gradient_times

MODES = ("backprop", "adjoint", "adjoint_seminorm")
DISCRETE_MODES = ("backprop",)
#: defaults shared with the reference gradient modes (odeverify.gradients.value_and_grad)
RTOL, ATOL = 1e-6, 1e-9


class _StepLimit(Exception):
    """max_steps reached (forward or backward)."""


class _Counter:
    """Counts field calls and VJPs per phase, and steps through torchdiffeq's callbacks."""

    def __init__(self, max_steps: int) -> None:
        self.phase = "forward"
        self.calls = {"forward": 0, "backward": 0}
        self.vjps = 0
        self.steps = {"forward": 0, "backward": 0}
        self.attempts = {"forward": 0, "backward": 0}
        self.max_steps = max_steps

    def vjp_hook(self, grad: Any) -> None:
        self.vjps += 1

    def attempt(self, phase: str) -> None:
        self.attempts[phase] += 1
        if self.attempts[phase] > self.max_steps:
            raise _StepLimit(f"max_steps={self.max_steps} attempted steps reached in the {phase} solve")


def _module(torch: Any, problem: Problem, leaves: dict[str, Any], fixed: dict[str, Any], counter: _Counter) -> Any:
    """The field as an ``nn.Module`` (odeint_adjoint's contract) counting calls and VJPs."""
    xp = _xp.get_namespace("torch")
    rhs = problem.rhs

    class Field(torch.nn.Module):
        def forward(self, t: Any, y: Any) -> Any:
            counter.calls[counter.phase] += 1
            out = rhs(xp, t, y, {**fixed, **leaves})
            if out.requires_grad:
                out.register_hook(counter.vjp_hook)
            return out

        # torchdiffeq's step callbacks (forward solve, then the adjoint solve)
        def callback_step(self, t0: Any, y0: Any, dt: Any) -> None:
            counter.attempt("forward")

        def callback_accept_step(self, t0: Any, y0: Any, dt: Any) -> None:
            counter.steps["forward"] += 1

        def callback_step_adjoint(self, t0: Any, y0: Any, dt: Any) -> None:
            counter.attempt("backward")

        def callback_accept_step_adjoint(self, t0: Any, y0: Any, dt: Any) -> None:
            counter.steps["backward"] += 1

    return Field()


@contextmanager
def _observe_backward_solves(records: list) -> Any:
    """Record what torchdiffeq's adjoint computes in each backward ``odeint`` call: the
    reconstructed state at the start of the interval (before the adjoint resets it)."""
    from torchdiffeq._impl import adjoint as adjoint_module

    original = adjoint_module.odeint

    def watched(func: Any, y0: Any, t: Any, *args: Any, **kwargs: Any) -> Any:
        out = original(func, y0, t, *args, **kwargs)
        if isinstance(y0, tuple):  # the augmented (t, y, adj_y, adj_params...) state: a backward solve
            records.append(out[1][-1].detach().clone())
        return out

    adjoint_module.odeint = watched
    try:
        yield
    finally:
        adjoint_module.odeint = original


def _grid_constructor(torch: Any, grid: np.ndarray) -> Any:
    """odeverify's fixed grid, for the forward call (increasing or decreasing time) and for the
    backward calls on one output interval (torchdiffeq negates decreasing times): the grid
    points strictly inside ``[t[0], t[-1]]`` plus both ends."""
    def construct(func: Any, y0: Any, t: Any) -> Any:
        lo, hi = float(t[0]), float(t[-1])
        tol = 1e-12 * max(1.0, float(np.max(np.abs(grid))))
        g = None
        for sign in (1.0, -1.0):
            cand = sign * grid
            if cand.min() - tol <= min(lo, hi) and max(lo, hi) <= cand.max() + tol:
                g = cand
                break
        if g is None:
            raise ValueError(f"times [{lo}, {hi}] are outside the fixed grid [{grid[0]}, {grid[-1]}]")
        inside = np.sort(g[(g > min(lo, hi) + tol) & (g < max(lo, hi) - tol)])
        if hi < lo:
            inside = inside[::-1]
        pts = np.concatenate([[lo], inside, [hi]])
        return torch.as_tensor(np.ascontiguousarray(pts), dtype=t.dtype, device=t.device)

    return construct


def fixed_grid(t_span: tuple[float, float], options: dict[str, Any]) -> np.ndarray | None:
    """odeverify's fixed-step grid (``n_steps`` equal steps, or steps ``dt`` with the last one
    shortened to end on t1), or None in adaptive mode."""
    t0, t1 = t_span
    if options.get("n_steps") is not None:
        n = int(options["n_steps"])
        grid = t0 + (t1 - t0) * np.arange(n + 1) / n
    elif options.get("dt") is not None:
        dt = float(options["dt"])
        count = math.ceil(abs(t1 - t0) / dt * (1 - 1e-12))
        grid = t0 + math.copysign(dt, t1 - t0) * np.arange(count + 1, dtype=np.float64)
    else:
        return None
    grid[-1] = t1
    return grid


def gradient(problem: Problem, method: MethodInfo, mode: str, loss: Loss, y0: np.ndarray | None,
             options: dict[str, Any], dtype: str, device: str) -> GradientResult:
    """One gradient (see the module docstring); arguments were validated by Backend.gradient."""
    torch = _xp.require("torch")
    import torchdiffeq

    tdtype = getattr(torch, dtype)
    dev = torch.device(device)
    wrt = options.get("wrt") or "all"
    max_steps = int(options.get("max_steps") or 100_000)
    counter = _Counter(max_steps)

    y0n = np.asarray(problem.y0 if y0 is None else y0, dtype=np.float64)
    y_init = torch.as_tensor(y0n, dtype=tdtype, device=dev).requires_grad_(wrt != "params")
    differentiable = gradient_params(problem) if wrt != "y0" else {}
    leaves = {k: torch.as_tensor(v, dtype=tdtype, device=dev).requires_grad_(True) for k, v in differentiable.items()}
    fixed_params = {k: v for k, v in problem.converted_params(_xp.get_namespace("torch"), tdtype, dev).items()
                    if k not in leaves}
    func = _module(torch, problem, leaves, fixed_params, counter)

    ts, rows = gradient_times(problem, loss)
    t_tensor = torch.as_tensor(np.ascontiguousarray(ts), dtype=torch.float64, device=dev)
    rtol = float(options.get("rtol") or RTOL)
    atol = float(options.get("atol") or ATOL)
    grid = fixed_grid(problem.t_span, options)
    solver_opts: dict[str, Any] = {}
    if grid is not None:
        solver_opts["grid_constructor"] = _grid_constructor(torch, grid)
    else:
        solver_opts["dtype"] = torch.float64
    kwargs: dict[str, Any] = dict(rtol=rtol, atol=atol, method=method.name, options=dict(solver_opts))
    if mode != "backprop":
        adjoint_opts = dict(solver_opts)
        if mode == "adjoint_seminorm":
            adjoint_opts["norm"] = "seminorm"
        kwargs.update(adjoint_rtol=float(options.get("adjoint_rtol") or rtol),
                      adjoint_atol=float(options.get("adjoint_atol") or atol),
                      adjoint_options=adjoint_opts, adjoint_params=tuple(leaves.values()))

    inputs = ([y_init] if wrt != "params" else []) + list(leaves.values())
    reconstructed: list = []
    status, message = Status.SUCCESS, ""
    start = time.perf_counter()
    try:
        with warnings.catch_warnings():
            # the fixed-grid solvers call only callback_step; torchdiffeq warns about the others
            warnings.filterwarnings("ignore", message="Solver .* does not support callbacks")
            if mode == "backprop":
                ys = torchdiffeq.odeint(func, y_init, t_tensor, **kwargs)
            else:
                ys = torchdiffeq.odeint_adjoint(func, y_init, t_tensor, **kwargs)
            value = loss.value(_xp.get_namespace("torch"), ys[torch.as_tensor(np.ascontiguousarray(rows), device=dev)])
            if device == "cuda":
                torch.cuda.synchronize()
            forward_s = time.perf_counter() - start
            counter.phase = "backward"
            start = time.perf_counter()
            with _observe_backward_solves(reconstructed):
                grads = torch.autograd.grad(value, inputs, allow_unused=True)
            if device == "cuda":
                torch.cuda.synchronize()
            backward_s = time.perf_counter() - start
    except _StepLimit as exc:
        status, message = Status.MAX_STEPS, str(exc)
    except AssertionError as exc:  # torchdiffeq reports its failures by assert
        text = str(exc)
        status = (Status.DT_UNDERFLOW if text.startswith("underflow in dt") else
                  Status.NONFINITE if text.startswith("non-finite") else Status.FAILED)
        message = f"torchdiffeq: {text}"[:300]
    if not status.ok:
        res = failed_gradient(problem, mode, method.name, "torchdiffeq", "torch", y0, status, message, wrt)
        res.nfev_forward, res.nfev_backward = counter.calls["forward"], counter.vjps
        return res

    grads = list(grads)
    grad_y0 = None
    if wrt != "params":
        g = grads.pop(0)
        grad_y0 = np.zeros(y0n.shape) if g is None else g.detach().cpu().numpy().astype(np.float64)
    grad_params = {}
    for (k, leaf), g in zip(leaves.items(), grads):
        # None: the loss does not depend on this parameter (e.g. a constant matrix); its
        # derivative is exactly zero, which autograd reports as None
        grad_params[k] = (np.zeros(tuple(leaf.shape)) if g is None
                          else g.detach().cpu().numpy().astype(np.float64))

    mismatch = None
    if mode != "backprop" and reconstructed:  # none observed: not measured (None), never a silent 0
        ys_np = ys.detach().cpu().numpy().astype(np.float64)
        # backward interval i (from the last) reconstructs the state at ts[-1 - i - 1]
        mismatch = reconstruction_mismatch((rec.cpu().numpy(), ys_np[len(ts) - 2 - i])
                                           for i, rec in enumerate(reconstructed))
    return GradientResult(
        mode=mode, method=method.name, backend="torchdiffeq", library="torch", status=Status.SUCCESS,
        loss=float(value.detach()), grad_y0=grad_y0, grad_params=grad_params,
        nfev_forward=counter.calls["forward"], nfev_backward=counter.vjps,
        steps_forward=counter.steps["forward"] if grid is None else len(grid) - 1,
        steps_backward=0 if mode == "backprop" else (counter.steps["backward"] if grid is None
                                                     else len(grid) - 1),
        timing={"forward_s": forward_s, "backward_s": backward_s, "compile_s": 0.0},
        adjoint_mismatch=mismatch, message=mismatch_message(mismatch),
        options={"rtol": rtol, "atol": atol, **{k: v for k, v in options.items() if v is not None}},
        details={"discrete": mode in DISCRETE_MODES, "backward_calls": counter.calls["backward"]},
    )
