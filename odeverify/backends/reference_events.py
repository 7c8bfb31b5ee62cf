"""The reference loop's event location (``integrate.solve(events=...)``) under the event driver.

Each segment is one :func:`odeverify.integrate.solve` with the problem's events (sign
changes sampled at the step's ends and interior points of the method's own dense output,
located by a bracketing root finder to adjacent floats on the crossed side, so a restart
cannot see the event again; terminal counts native). A fixed grid (``n_steps``) is the step
``dt = span / n_steps`` of every segment (after a restart the grid keeps its step, not its
points, as ``properties.events.event_solve`` does).

Gradient mode ``discrete`` (PyTorch, where installed): autograd through
:func:`odeverify.integrate.solve_with_jumps` up to the first event, whose event time carries
the implicit-function-theorem correction (``t* - g / (dg/dt)`` with the graph attached).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .. import _xp
from ..solution import Status
from ._event_driver import (EventGradient, NumpyContext, Segment, autograd_gradient, failed_gradient, float_params,
                            flow_slope)

DEFAULT_METHODS = ("dopri5", "dop853", "bosh3")
GRADIENT_MODES: tuple[str, ...] = ("discrete",) if _xp.available("torch") else ()
UNSUPPORTED_GRADIENT = "the reference's event gradients run on PyTorch, which is not installed"


def _methods() -> tuple[str, ...]:
    from ..solvers import SOLVERS

    return tuple(name for name, _ in SOLVERS.items())


METHODS = _methods()


class _Ctx(NumpyContext):
    def __init__(self, event_problem: Any, method: str, options: dict[str, Any]) -> None:
        super().__init__(event_problem, method, options)
        n_steps = options.get("n_steps")
        t0, t1 = event_problem.problem.t_span
        self.dt = None if n_steps is None else abs(t1 - t0) / int(n_steps)


def prepare(event_problem: Any, method: str, options: dict[str, Any]) -> _Ctx:
    return _Ctx(event_problem, method, options)


def time_tolerance(ctx: _Ctx, t: float) -> float:
    """The root finder brackets the event to adjacent floats."""
    return 4.0 * np.finfo(np.float64).eps * (1.0 + abs(t))


def segment(ctx: _Ctx, t0: float, y0: np.ndarray, t_end: float, stops: list[int], skip: Any = None) -> Segment:
    from ..integrate import solve

    specs = [(ev.name, ctx.event_fn(i, skip), ev.direction, int(stops[i]) if stops[i] else False)
             for i, ev in enumerate(ctx.ep.events)]
    kwargs: dict[str, Any] = {"rtol": float(ctx.options["rtol"]), "atol": float(ctx.options["atol"])}
    if ctx.dt is not None:
        kwargs = {"dt": ctx.dt}
    sol = solve(ctx.f, np.asarray(y0, dtype=np.float64), (t0, t_end), method=ctx.method, events=specs, **kwargs)
    times = [float(t) for t in sol.t_events]
    states = [np.asarray(sol.y_events[k], dtype=np.float64) for k in range(len(times))]
    which = [int(i) for i in sol.event_index]
    crossing = [flow_slope(ctx.ep.events[i], ctx.f, ctx.p, t, y) for t, y, i in zip(times, states, which)]
    status = Status.SUCCESS if sol.status in (Status.SUCCESS, Status.EVENT) else sol.status
    stopped = which[-1] if sol.status is Status.EVENT and which else None
    t_stop = float(sol.t_final) if stopped is not None else float(t_end)
    y_stop = states[-1] if stopped is not None else np.asarray(sol.ys[-1], dtype=np.float64)
    return Segment(times=times, states=states, which=which, crossing=crossing, t_stop=t_stop, y_stop=y_stop,
                   stopped=stopped, nfev=int(sol.stats.nfev), steps=int(sol.stats.accepted), status=status,
                   message="" if status.ok else sol.message)


def gradient(event_problem: Any, method: str, mode: str, options: dict[str, Any]) -> EventGradient:
    """Autograd (PyTorch) through ``solve_with_jumps`` to the first event."""
    import torch

    from ..integrate import solve_with_jumps

    prob = event_problem.problem
    leaves = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in float_params(prob).items()}
    y0 = torch.tensor(prob.y0, dtype=torch.float64, requires_grad=True)
    kwargs: dict[str, Any] = {"rtol": float(options["rtol"]), "atol": float(options["atol"])}
    if options.get("n_steps") is not None:
        t0, t1 = prob.t_span
        kwargs = {"dt": abs(t1 - t0) / int(options["n_steps"])}
    sol = solve_with_jumps(event_problem, method, y0=y0, params=leaves, max_events=1, **kwargs)
    if sol.event_times is None or not len(sol.t_events):
        return failed_gradient(event_problem, mode, method, "reference", Status.FAILED,
                               f"no event before t_end = {prob.t_span[1]} ({sol.message})")
    return autograd_gradient(sol.event_times[0], sol.y_events[0], y0, leaves, mode, method, "reference")
