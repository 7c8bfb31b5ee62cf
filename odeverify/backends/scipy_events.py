"""scipy's event location (``solve_ivp(events=...)``) under the event driver.

scipy is the one library here with non-terminal events and a direction filter of its own:
each event function gets ``.direction`` (the event's) and ``.terminal`` (the occurrence
where the driver must restart or stop: 1 for a jump, a terminal event's remaining count,
else False), and ``solve_ivp`` reports every occurrence
in ``t_events`` / ``y_events``. What it does (scipy 1.17 ``scipy/integrate/_ivp/ivp.py``):
after each accepted step it compares the signs of ``g`` at the two step ends
(``find_active_events``: an up-crossing is ``g_old <= 0 <= g_new``), and for each active
event runs ``brentq`` on the step's dense output with ``xtol = rtol = 4 eps``; so the event
time's error is the dense output's error divided by ``|dg/dt|``, and two sign changes inside
one step cancel (no event). A fixed grid (``n_steps``) is forced by ``first_step =
max_step`` = the grid spacing (the grazing problems are quadratic, reproduced exactly by
every method of order >= 2, so no step is rejected).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..solution import Status
from ._event_driver import NumpyContext, Segment, flow_slope

METHODS = ("RK23", "RK45", "DOP853", "Radau", "BDF", "LSODA")
DEFAULT_METHODS = ("RK45", "DOP853", "RK23")
GRADIENT_MODES: tuple[str, ...] = ()
UNSUPPORTED_GRADIENT = "scipy.integrate differentiates nothing (no automatic differentiation through solve_ivp)"
#: brentq's tolerances in scipy's solve_event_equation
_EPS = np.finfo(np.float64).eps


class _Ctx(NumpyContext):
    def __init__(self, event_problem: Any, method: str, options: dict[str, Any], direction_filter: bool) -> None:
        super().__init__(event_problem, method, options)
        self.direction_filter = direction_filter
        self.nfev = 0
        t0, t1 = event_problem.problem.t_span
        n_steps = options.get("n_steps")
        self.h = None if n_steps is None else abs(t1 - t0) / int(n_steps)

    def counted(self, t: float, y: np.ndarray) -> np.ndarray:
        self.nfev += 1
        return np.asarray(self.f(np.float64(t), y), dtype=np.float64)


def prepare(event_problem: Any, method: str, options: dict[str, Any], *, direction_filter: bool = True) -> _Ctx:
    """``direction_filter=False`` drops the events' directions (the planted fault of the tests)."""
    return _Ctx(event_problem, method, options, direction_filter)


def time_tolerance(ctx: _Ctx, t: float) -> float:
    return 4.0 * _EPS * (1.0 + abs(t)) + 4.0 * _EPS


def segment(ctx: _Ctx, t0: float, y0: np.ndarray, t_end: float, stops: list[bool], skip: Any = None) -> Segment:
    """One ``solve_ivp`` run; terminal counts are scipy's own (``terminal=k``), and ``skip``
    (a restart after a jump or a terminal count) reads the restarted event's function with
    its sign along the flow (see ``_event_driver``)."""
    from scipy.integrate import solve_ivp

    fns = []
    for i, ev in enumerate(ctx.ep.events):
        fn = ctx.event_fn(i, skip)
        fn.terminal = int(stops[i]) if stops[i] else False
        fn.direction = float(ev.direction) if ctx.direction_filter else 0.0
        fns.append(fn)
    kwargs: dict[str, Any] = {"rtol": ctx.options["rtol"], "atol": ctx.options["atol"]}
    if ctx.h is not None:
        kwargs.update(first_step=min(ctx.h, abs(t_end - t0)), max_step=ctx.h, rtol=1e-3, atol=1e-6)
    before = ctx.nfev
    sol = solve_ivp(ctx.counted, (t0, t_end), np.asarray(y0, dtype=np.float64), method=ctx.method, events=fns, **kwargs)
    found = [(float(t), np.asarray(yv, dtype=np.float64), i)
             for i, (ts, ys) in enumerate(zip(sol.t_events, sol.y_events)) for t, yv in zip(ts, ys)]
    found.sort(key=lambda e: e[0])
    crossings = [flow_slope(ctx.ep.events[i], ctx.f, ctx.p, t, yv) for t, yv, i in found]
    status = Status.SUCCESS if sol.status >= 0 else Status.FAILED
    stopped = found[-1][2] if sol.status == 1 and found else None
    return Segment(times=[e[0] for e in found], states=[e[1] for e in found], which=[e[2] for e in found],
                   crossing=crossings, t_stop=float(sol.t[-1]), y_stop=np.asarray(sol.y[:, -1], dtype=np.float64),
                   stopped=stopped, nfev=ctx.nfev - before, steps=max(len(sol.t) - 1, 0), status=status,
                   message="" if status.ok else str(sol.message))

