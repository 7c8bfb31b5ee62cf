"""Event location (issue 12): CPU time of a solve with events over a whole horizon, the error of
the located event times against the closed form, and the work.

Parameters: ``case`` (``backend:method``: every installed backend with an event adapter,
``_grid.EVENT_SMALL``: the reference's dopri5 and tsit5, scipy's RK45 and DOP853, torchdiffeq's
dopri5, diffrax's Tsit5; the large grid adds every default event method of each backend),
``problem`` (:data:`PROBLEMS`: ``bouncing_ball``, a ball dropped from 1 m bouncing with
restitution 0.8, 10 impacts before the horizon, each a terminal event followed by the jump
``v -> -e v`` and a restart; ``plane_crossing``, a decaying rotation crossing a line 7 times,
non-terminal; the large grid adds the same crossings each terminal with a restart). Every solve
is the same on every commit: ``Backend.solve_event`` at :data:`RTOL`, :data:`ATOL` (the event
driver's defaults), float64, on the CPU (``solve_event`` takes no device).

- ``time_locate``: CPU time of one ``solve_event`` of the whole horizon (every restart
  included); the first call (compilation) in ``setup``.
- ``track_event_time_error``: max over the closed form's events of |t_found - t_exact|, the
  pairs matched nearest-first within a quarter of the closest gap between exact events
  (``properties.event_agreement.match_events``); inf when an event is missed or the solve failed.
  The oracle is the closed form (ball: ``t_1 = (v0 + u)/g``, flights ``2 e^k u / g``; plane:
  the roots of ``r0 e^{-a t} cos(w t - phi) - d`` by mpmath at 40 digits): no solver code.
- ``track_event_count_error``: missed plus extra events against the closed form (0 when the
  count is right; asv has no "must equal", so the track is the deviation, lower is better).
- the work counters beside the timing: ``track_nfev`` (vector-field evaluations summed over the
  library runs), ``track_steps`` (accepted steps) and ``track_segments`` (library runs: one
  per restart after a terminal event, plus the first).
"""
from __future__ import annotations

import functools
import itertools
import math
from typing import Any

import numpy as np

from odeverify import Status

from ._common import CpuTimed, count, lookup, single_thread, split_case, use_jax_cache
from ._grid import LARGE, event_cases, load

#: the tolerances of every event solve (``backends._event_driver.RTOL, ATOL``)
RTOL, ATOL = 1e-8, 1e-10
#: impacts of the bouncing ball before its horizon (halfway through the flight after the 10th)
BOUNCES = 10
PROBLEMS = ("bouncing_ball", "plane_crossing")
LARGE_PROBLEMS = PROBLEMS + ("plane_crossing_restart",)


@functools.lru_cache(maxsize=None)
def event_problem(name: str) -> Any:
    """The event problem of a ``problem`` parameter (built once per process: the plane's
    closed-form roots come from mpmath)."""
    from odeverify.problems.events import bouncing_ball, plane_crossing

    builders = {"bouncing_ball": lambda: bouncing_ball(bounces=BOUNCES),
                "plane_crossing": lambda: plane_crossing(),
                "plane_crossing_restart": lambda: plane_crossing(restart=True, name="plane_crossing_restart")}
    if name not in builders:
        raise ValueError(f"problem={name!r}, but it must be one of {sorted(builders)}")
    return builders[name]()


def problems() -> list[str]:
    return list(LARGE_PROBLEMS if LARGE else PROBLEMS)


class EventCase:
    """One solve with events, ready to run (NotImplementedError where it cannot run here)."""

    def __init__(self, case: str, problem: str) -> None:
        from odeverify import backends
        from odeverify.backends._event_driver import adapter_of

        backend_name, method = split_case(case)
        self.backend = backends.get(backend_name)
        if not self.backend.available():
            raise NotImplementedError(f"{backend_name} is not installed: {self.backend.install_hint}")
        ad = adapter_of(self.backend)
        if ad is None:
            raise NotImplementedError(f"{backend_name} locates no events")
        if method not in ad.METHODS:
            raise NotImplementedError(f"{backend_name} locates no events with {method!r}")
        self.method = method
        self.problem = event_problem(problem)
        single_thread()

    def solve(self) -> Any:
        return self.backend.solve_event(self.problem, self.method, rtol=RTOL, atol=ATOL)


_WARM: dict = {}


def warmed(case: str, problem: str) -> EventCase:
    key = (case, problem)
    if key not in _WARM:
        use_jax_cache()
        ec = EventCase(case, problem)
        sol = ec.solve()
        if sol.status is Status.UNAVAILABLE:
            raise NotImplementedError(sol.message)
        _WARM[key] = ec
    return _WARM[key]


def located_error(found: np.ndarray, exact: np.ndarray, span: float) -> tuple[float, float]:
    """(max |t_found - t_exact| over the exact events, missed + extra events): the pairs are
    matched nearest-first within ``match_window``; a missed event makes the time error inf."""
    from odeverify.properties.event_agreement import match_events, match_window

    m = match_events(np.asarray(found, dtype=np.float64), np.asarray(exact, dtype=np.float64),
                     match_window(np.asarray(exact, dtype=np.float64), span))
    wrong = float(len(m["missed"]) + len(m["extra"]))
    if m["missed"]:
        return math.inf, wrong
    return (max(abs(e) for e in m["errors"]) if m["errors"] else 0.0), wrong


def event_values(case: str, problem: str) -> dict[str, float] | str:
    """The event-time error, count error and work of one row, or the reason it is skipped."""
    try:
        use_jax_cache()
        ec = EventCase(case, problem)
        sol = ec.solve()
    except NotImplementedError as exc:
        return str(exc) or "not available"
    if sol.status is Status.UNAVAILABLE:
        return sol.message
    exact = ec.problem.exact_events().times
    t0, t1 = ec.problem.problem.t_span
    work = {"nfev": count(sol.stats.nfev), "steps": count(sol.stats.accepted), "segments": float(sol.segments)}
    if not sol.success:
        return {"time_error": math.inf, "count_error": float(len(exact)), **work}
    err, wrong = located_error(sol.t_events, exact, abs(t1 - t0))
    return {"time_error": float(err), "count_error": wrong, **work}


EVENTS = (load().get("events") or event_cases(), problems())
PARAM_NAMES = ("case", "problem")


class TimeEvents(CpuTimed):
    """CPU time of one solve with events over the whole horizon (restarts included)."""

    params = EVENTS
    param_names = PARAM_NAMES
    timeout = 300

    def setup(self, case: str, problem: str) -> None:
        self.case = warmed(case, problem)

    def time_locate(self, case: str, problem: str) -> None:
        self.case.solve()


class TrackEvents:
    """Event-time error, count error and work of the same solve (deterministic)."""

    params = EVENTS
    param_names = PARAM_NAMES
    timeout = 1800

    def setup_cache(self) -> dict:
        return {key: event_values(*key) for key in itertools.product(*EVENTS)}

    setup_cache.timeout = 1800

    def setup(self, table: dict, case: str, problem: str) -> None:
        lookup(table, (case, problem), "nfev")

    def track_event_time_error(self, table: dict, case: str, problem: str) -> float:
        """max |t_found - t_exact| over the closed form's events; inf if one is missed."""
        return lookup(table, (case, problem), "time_error")

    track_event_time_error.unit = "time"

    def track_event_count_error(self, table: dict, case: str, problem: str) -> float:
        """Missed plus extra events against the closed form (0: every event found once)."""
        return lookup(table, (case, problem), "count_error")

    track_event_count_error.unit = "events"

    def track_nfev(self, table: dict, case: str, problem: str) -> float:
        """Vector-field evaluations summed over the library runs."""
        return lookup(table, (case, problem), "nfev")

    track_nfev.unit = "evaluations"

    def track_steps(self, table: dict, case: str, problem: str) -> float:
        """Accepted steps summed over the library runs."""
        return lookup(table, (case, problem), "steps")

    track_steps.unit = "steps"

    def track_segments(self, table: dict, case: str, problem: str) -> float:
        """Library runs: the first plus one per restart after a terminal event."""
        return lookup(table, (case, problem), "segments")

    track_segments.unit = "runs"
