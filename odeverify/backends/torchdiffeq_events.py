"""torchdiffeq's event location (``odeint_event``) under the event driver.

What torchdiffeq 0.2.5 does (``torchdiffeq/_impl/odeint.py``, ``rk_common.py``,
``event_handling.py``): ``odeint_event(func, y0, t0, event_fn=...)`` integrates until the
first sign change of ``event_fn`` between two step ends (several event functions are
combined as ``min(sign(g(t0)) * g)``), then BISECTS on the step's interpolant down to a time
bracket of ``atol`` (the solver's absolute tolerance, used as a time tolerance) and returns
the bracket's midpoint and the interpolant there. Every event is terminal and there is no
direction, so this adapter

- appends ``t_end - t`` to the event functions (odeint_event has no end time);
- reads which function fired as the one closest to zero (relative to its start value) and
  its crossing as minus its sign at the segment's start;
- drops a crossing against the event's ``direction`` and restarts torchdiffeq from it
  (``direction_filter=False``: the planted fault of the tests keeps it);
- forces a fixed grid (``n_steps``) with ``first_step`` and ``step_t`` at the grid points.

Gradients (``gradient``): ``backprop`` (autograd through ``odeint``) and ``adjoint``
(``odeint_adjoint``); in both, ``odeint_event`` reroutes the gradient of the event time
through the implicit function theorem (``ImplicitFnGradientRerouting``: ``dt*/d. =
-(dg/dy . dy/d.) / (dg/dt + dg/dy . f)``), where ``dg/dy`` and ``dg/dt`` are the event
function's derivatives with respect to its INPUTS only: a parameter of the event function
itself (a plane's offset) gets no gradient (torchdiffeq issue #208: "the parameters of the
event function currently need to be part of the state").
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .. import _xp
from ..solution import Status
from ._event_driver import (EventGradient, Segment, autograd_gradient, failed_gradient, fixed_grid, float_params,
                            flow_slope, passes_direction)

METHODS = ("dopri5", "bosh3", "dopri8", "fehlberg2", "adaptive_heun")
DEFAULT_METHODS = ("dopri5", "bosh3", "dopri8")
GRADIENT_MODES = ("backprop", "adjoint")
UNSUPPORTED_GRADIENT = ""
#: wrong-direction crossings dropped in a row before the segment gives up
_MAX_INNER = 50


class _Ctx:
    def __init__(self, event_problem: Any, method: str, options: dict[str, Any], direction_filter: bool) -> None:
        import torch

        prob = event_problem.problem
        self.torch = torch
        self.ep = event_problem
        self.method = method
        self.options = options
        self.direction_filter = direction_filter
        self.xp = _xp.get_namespace("torch")
        self.p = prob.converted_params(self.xp, torch.float64)
        self.p_np = prob.converted_params(np)
        self.rhs_np = prob.vector_field(np, np.float64)
        self.nfev = 0
        self.steps = 0
        n_steps = options.get("n_steps")
        self.grid = None if n_steps is None else fixed_grid(*prob.t_span, int(n_steps))
        ctx = self
        rhs = prob.rhs

        class Field(torch.nn.Module):
            def forward(self, t: Any, y: Any) -> Any:
                ctx.nfev += 1
                return rhs(ctx.xp, t, y, ctx.p)

            def callback_accept_step(self, t0: Any, y0: Any, dt: Any) -> None:
                ctx.steps += 1

        self.func = Field()

    def solver_options(self, t0: float) -> dict[str, Any]:
        if self.grid is None:
            return {}
        ahead = self.grid[self.grid > t0 + 1e-14 * (1.0 + abs(t0))]
        if ahead.size == 0:
            return {}
        # a first step a little PAST the next grid point: torchdiffeq clips a step to a step_t
        # point only when it would cross it (t0 + dt > step_t), and a step landing on it exactly
        # leaves its index behind, so no later step would be clipped
        return {"first_step": float(ahead[0] - t0) * (1.0 + 1e-9),
                "step_t": self.torch.as_tensor(ahead, dtype=self.torch.float64)}

    def tolerances(self) -> dict[str, float]:
        if self.grid is not None:  # a fixed grid: loose tolerances (the grazing problems are exact)
            return {"rtol": 1e-3, "atol": float(self.options["atol"])}
        return {"rtol": float(self.options["rtol"]), "atol": float(self.options["atol"])}


def prepare(event_problem: Any, method: str, options: dict[str, Any], *, direction_filter: bool = True) -> _Ctx:
    """``direction_filter=False`` keeps crossings against an event's direction (a planted fault)."""
    return _Ctx(event_problem, method, options, direction_filter)


def time_tolerance(ctx: _Ctx, t: float) -> float:
    """torchdiffeq's bisection stops at a bracket of ``atol`` (in time)."""
    return float(ctx.options["atol"]) + 4.0 * np.finfo(np.float64).eps * (1.0 + abs(t))


def _end_margin(ctx: _Ctx) -> float:
    t0, t1 = ctx.ep.problem.t_span
    return 0.01 * abs(t1 - t0)


def _event_values(ctx: _Ctx, t: Any, y: Any, t_end: float, indices: list[int], skip: Any = None) -> Any:
    torch = ctx.torch
    vals = [ctx.ep.events[i].g(ctx.xp, t, y, ctx.p) for i in indices]
    if skip is not None:  # the restart guard: the event's sign after the restart, until skip[2]
        i, sign, until = skip
        g = torch.as_tensor(vals[i], dtype=torch.float64)
        vals[i] = torch.where(torch.as_tensor(t) < until, sign * (torch.abs(g) + 1e-300), g)
    # the end of the span, a margin past it: a component that reaches zero exactly at the last
    # step's end would make torchdiffeq bisect that whole step and find roots its own sign test
    # at the step ends missed (events past t_end are not reported)
    vals.append(torch.as_tensor(t_end + _end_margin(ctx), dtype=torch.float64) - t)
    return torch.stack([torch.as_tensor(v, dtype=torch.float64).reshape(()) for v in vals])


def segment(ctx: _Ctx, t0: float, y0: np.ndarray, t_end: float, stops: list[bool], skip: Any = None) -> Segment:
    from torchdiffeq import odeint_event

    torch = ctx.torch
    indices = list(range(len(ctx.ep.events)))
    before_f, before_s = ctx.nfev, ctx.steps
    t, y = float(t0), np.asarray(y0, dtype=np.float64)
    for _ in range(_MAX_INNER):
        start = _event_values(ctx, torch.as_tensor(t, dtype=torch.float64), torch.as_tensor(y), t_end,
                              indices, skip).numpy()
        with torch.no_grad():
            et, sol = odeint_event(ctx.func, torch.as_tensor(y, dtype=torch.float64),
                                   torch.as_tensor(t, dtype=torch.float64),
                                   event_fn=lambda tt, yy: _event_values(ctx, tt, yy, t_end, indices, skip),
                                   method=ctx.method, options=ctx.solver_options(t), **ctx.tolerances())
        te = float(et)
        ye = sol[-1].detach().numpy().astype(np.float64)
        at = _event_values(ctx, torch.as_tensor(te, dtype=torch.float64), torch.as_tensor(ye), t_end,
                           indices, skip).numpy()
        # the function that fired: torchdiffeq's own choice, the minimum of sign(g(t0)) * g
        signs = np.where(start != 0, np.sign(start), 1.0)
        k = int(np.argmin(at * signs))
        done = dict(nfev=ctx.nfev - before_f, steps=ctx.steps - before_s)
        if k == len(indices) or te > t_end:
            return Segment([], [], [], [], t_stop=t_end, y_stop=ye, stopped=None, **done)  # y near t_end
        crossing = -int(np.sign(start[k])) if start[k] != 0 else flow_slope(ctx.ep.events[k], ctx.rhs_np, ctx.p_np,
                                                                             te, ye)
        ev = ctx.ep.events[k]
        if not ctx.direction_filter or passes_direction(ev.direction, crossing):
            return Segment([te], [ye], [k], [crossing], t_stop=te, y_stop=ye, stopped=k, **done)
        t, y = te, ye  # a crossing against the event's direction: not an event, go on from there
    return Segment([], [], [], [], t_stop=t, y_stop=y, stopped=None, status=Status.FAILED,
                   message=f"{_MAX_INNER} crossings against the events' directions in a row from t = {t0:.17g}",
                   nfev=ctx.nfev - before_f, steps=ctx.steps - before_s)


def gradient(event_problem: Any, method: str, mode: str, options: dict[str, Any]) -> EventGradient:
    """d t*/d (y0, params) and d y(t*)/d (y0, params) of the first event, by ``mode``."""
    import torch
    from torchdiffeq import odeint, odeint_adjoint, odeint_event

    prob = event_problem.problem
    xp = _xp.get_namespace("torch")
    leaves = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in float_params(prob).items()}
    fixed = {k: v for k, v in prob.converted_params(xp, torch.float64).items() if k not in leaves}
    p = {**fixed, **leaves}
    rhs = prob.rhs
    t_end = float(prob.t_span[1])
    ev = event_problem.events[0]

    class Field(torch.nn.Module):
        def forward(self, t: Any, y: Any) -> Any:
            return rhs(xp, t, y, p)

    func = Field()
    y0 = torch.tensor(prob.y0, dtype=torch.float64, requires_grad=True)

    def event_fn(t: Any, y: Any) -> Any:
        return torch.stack([torch.as_tensor(ev.g(xp, t, y, p), dtype=torch.float64).reshape(()),
                            torch.as_tensor(t_end, dtype=torch.float64) - t])

    kwargs: dict[str, Any] = {"rtol": float(options["rtol"]), "atol": float(options["atol"]), "method": method}
    if mode == "adjoint":
        kwargs.update(odeint_interface=odeint_adjoint, adjoint_params=tuple(leaves.values()))
    else:
        kwargs.update(odeint_interface=odeint)
    et, sol = odeint_event(func, y0, torch.tensor(float(prob.t_span[0]), dtype=torch.float64), event_fn=event_fn,
                           **kwargs)
    te = float(et.detach())
    ye = sol[-1]
    with torch.no_grad():
        g0 = float(ev.g(xp, torch.tensor(prob.t_span[0], dtype=torch.float64), y0, p))
    if te >= t_end - float(options["atol"]):
        return failed_gradient(event_problem, mode, method, "torchdiffeq", Status.FAILED,
                               f"no event {ev.name!r} before t_end = {t_end}")
    crossing = -int(np.sign(g0))
    if not passes_direction(ev.direction, crossing):
        return failed_gradient(event_problem, mode, method, "torchdiffeq", Status.FAILED,
                               f"the first crossing of {ev.name!r} (t = {te:.6g}) is against its direction"
                               f" {ev.direction}: torchdiffeq has no direction filter, so its gradient is that of"
                               " another event")
    return autograd_gradient(et, ye, y0, leaves, mode, method, "torchdiffeq")
