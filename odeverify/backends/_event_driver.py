"""The library side of events: one restart driver over every backend's event adapter.

A backend that locates events names its adapter module in ``Backend._event_adapter()``
(``scipy_events``, ``torchdiffeq_events``, ``diffrax_events``, ``reference_events``). An
adapter offers

- ``METHODS``: the method names whose event location it drives, ``DEFAULT_METHODS`` those of
  a conformance run, ``GRADIENT_MODES`` (its library's names, possibly empty) and
  ``UNSUPPORTED_GRADIENT`` (why there are none, when empty);
- ``prepare(event_problem, method, options) -> ctx``: the library objects of one solve, built
  once (compiled programs, wrapped fields);
- ``segment(ctx, t0, y0, t_end, stops, skip) -> Segment``: the library solves from ``(t0, y0)``
  towards ``t_end``, reporting the events it locates (time, state, which, crossing
  direction), each filtered by its event's ``direction``, and stops at the first occurrence
  of an event whose ``stops[i]`` is set (or at ``t_end``): ``stops[i]`` is 0 (never), 1 (at
  its first occurrence), or ``k`` (at its ``k``-th: a terminal count, where the library counts
  itself (scipy); the others stop at every occurrence of a nonzero one). A library without non-terminal
  events (torchdiffeq, diffrax) stops at every event: the driver restarts it. ``skip``
  (None, or ``(i, sign, until)``) asks the adapter to read event ``i`` as ``sign * |g|``
  before ``until`` (the restart guard below, where the library cannot be told otherwise);
- ``time_tolerance(ctx, t)``: how closely the library locates an event time (the root
  finder's tolerance in time), used by the restart guard below;
- ``gradient(event_problem, method, mode, options) -> EventGradient`` where it has modes.

The driver (:func:`solve_event`) restarts the library after each event that stopped it:
with the jump applied (an event that a :class:`~odeverify.problems.events.Jump` applies to:
the bouncing ball's impacts), without one for a non-terminal event or a terminal event whose
count is not reached, and it ends the solve at a terminal event's ``k``-th occurrence. It
keeps the problem's conventions (``problems/events.py``): an event at the start of a solve
or of a restart is never reported. A restart starts on the event's root, where ``g`` is
zero only up to the root finder's tolerance: if the library's located root lies on the
near side of the zero, the restarted solve sees the same sign change again (diffrax then
finds the very same root at every restart). The RESTART GUARD (``redetect_guard=False``
turns it off: the planted fault of ``tests/test_event_backends.py``) has two parts: the
adapter reads the event's function with the sign it takes along the flow after the restart
(``sign(dg/dt)`` at the restart state, a central difference along the field) for ``2 *
time_tolerance`` (``skip``), and the driver drops an event of that function found within
twice that window all the same (where ``skip`` ends, a function that only touched zero
changes sign: the library may locate that within its tolerance past the window); every
dropped time is kept in ``EventSolution.dropped``.

Sources for the libraries' semantics: ``scipy.integrate._ivp.ivp`` (``find_active_events``
compares the signs of g at consecutive step ends; ``solve_event_equation`` runs brentq on
the step's dense output with xtol = rtol = 4 eps), torchdiffeq 0.2.5
``_impl/event_handling.py`` (bisection on the step's interpolant down to ``atol`` in time;
the event functions are combined as ``min(sign(g(t0)) * g)``: terminal, no direction) and
diffrax 0.7.2 ``_integrate.py`` (sign changes at step ends, ``Event.direction``, the
root finder on the step's interpolation; always terminal).
"""
from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..solution import Stats, Status

#: options of ``Backend.solve_event``: tolerances; ``n_steps`` (a fixed grid of that many
#: steps over the span: each adapter forces its library onto it); ``max_events`` (default: the
#: problem's); ``redetect_guard`` (True: drop a re-detection at a restart, see the module)
EVENT_OPTIONS = ("rtol", "atol", "n_steps", "max_events", "redetect_guard")
#: gradient options
EVENT_GRADIENT_OPTIONS = ("rtol", "atol", "n_steps")
#: default tolerances of an event solve (every library gets the same)
RTOL, ATOL = 1e-8, 1e-10


@dataclass
class Segment:
    """One library run from a start (or restart) to the event that stopped it, or to ``t_end``."""

    times: list[float]
    states: list[np.ndarray]
    which: list[int]
    crossing: list[int]
    t_stop: float
    y_stop: np.ndarray
    stopped: int | None  #: index of the event that ended the segment (its last entry), None at t_end
    nfev: int = 0
    steps: int = 0
    status: Status = Status.SUCCESS
    message: str = ""


@dataclass
class EventSolution:
    """Every event of a solve with events: ``t_events`` (k,), ``y_events`` (k, n) (the state
    before the jump), ``which`` (k,) (index into ``EventProblem.events``), ``crossing`` (k,)
    (+1 where g increased, -1 where it decreased); the end of the solve ``t_final`` /
    ``y_final``; ``stats`` summed over the library runs; ``segments`` (library runs);
    ``dropped``: times of re-detections at a restart that the guard dropped."""

    t_events: np.ndarray
    y_events: np.ndarray
    which: np.ndarray
    crossing: np.ndarray
    t_final: float
    y_final: np.ndarray
    status: Status
    stats: Stats
    method: str
    backend: str
    message: str = ""
    segments: int = 0
    dropped: list[float] = field(default_factory=list)
    timing: dict[str, float] = field(default_factory=dict)

    @property
    def success(self) -> bool:
        return self.status.ok

    def summary(self) -> dict[str, Any]:
        """JSON-ready data for a record's details."""
        return {"t_events": [float(t) for t in self.t_events], "which": [int(i) for i in self.which],
                "crossing": [int(c) for c in self.crossing], "t_final": float(self.t_final),
                "status": self.status.code, "nfev": int(self.stats.nfev), "steps": int(self.stats.accepted),
                "segments": int(self.segments), "dropped": [float(t) for t in self.dropped]}


@dataclass
class EventGradient:
    """d t*/d inputs of the first event that stops a library run (and of ``y(t*)``): with
    respect to ``y0`` (n,) and to each float parameter of the problem (``params``, the
    field's and the event function's); ``dy_dy0`` (n, n) and ``dy_dparams`` (name -> (n,)):
    of the state at the event. NaN with a status on failure."""

    mode: str
    method: str
    backend: str
    status: Status
    t_event: float
    y_event: np.ndarray
    dt_dy0: np.ndarray
    dt_dparams: dict[str, float]
    dy_dy0: np.ndarray
    dy_dparams: dict[str, np.ndarray]
    message: str = ""
    timing: dict[str, float] = field(default_factory=dict)


def float_params(problem: Any) -> dict[str, float]:
    """The problem's float parameters (Python or NumPy float scalars): what an event gradient
    differentiates, besides y0 (the event problems keep their coefficients as scalars)."""
    return {k: float(v) for k, v in problem.params.items()
            if isinstance(v, (float, np.floating)) and not isinstance(v, bool)}


def failed_gradient(event_problem: Any, mode: str, method: str, backend: str, status: Status,
                    message: str) -> EventGradient:
    n = event_problem.problem.n
    names = float_params(event_problem.problem)
    return EventGradient(mode=mode, method=method, backend=backend, status=status, t_event=math.nan,
                         y_event=np.full(n, np.nan), dt_dy0=np.full(n, np.nan),
                         dt_dparams=dict.fromkeys(names, math.nan), dy_dy0=np.full((n, n), np.nan),
                         dy_dparams={k: np.full(n, np.nan) for k in names}, message=message)


def autograd_gradient(t_k: Any, y_k: Any, y0: Any, leaves: Mapping[str, Any], mode: str, method: str,
                      backend: str) -> EventGradient:
    """An :class:`EventGradient` from a PyTorch event time ``t_k`` and state ``y_k`` that
    depend on the leaves ``y0`` and ``leaves`` (name -> 0-d tensor): 1 + n backward passes."""
    import torch

    names = list(leaves)
    inputs = [y0] + [leaves[k] for k in names]

    def grads(out: Any) -> list[np.ndarray]:
        gs = torch.autograd.grad(out, inputs, retain_graph=True, allow_unused=True)
        return [np.zeros(tuple(x.shape)) if g is None else g.detach().numpy().astype(np.float64)
                for x, g in zip(inputs, gs)]

    gt = grads(t_k)
    n = int(y0.shape[-1])
    dy_dy0 = np.zeros((n, n))
    dy_dp = {k: np.zeros(n) for k in names}
    for i in range(n):
        gi = grads(y_k[i])
        dy_dy0[i] = gi[0]
        for k, gk in zip(names, gi[1:]):
            dy_dp[k][i] = float(gk)
    return EventGradient(mode=mode, method=method, backend=backend, status=Status.SUCCESS,
                         t_event=float(t_k.detach()), y_event=y_k.detach().numpy().astype(np.float64), dt_dy0=gt[0],
                         dt_dparams={k: float(g) for k, g in zip(names, gt[1:])}, dy_dy0=dy_dy0, dy_dparams=dy_dp)


def adapter_of(backend: Any) -> Any:
    """The backend's event adapter module, or None."""
    return backend._event_adapter()


def event_methods(backend: Any, quick: bool = False) -> list[str]:
    """The methods of a conformance run of ``backend`` (none where it locates no events)."""
    ad = adapter_of(backend)
    if ad is None:
        return []
    return list(ad.DEFAULT_METHODS[:1] if quick else ad.DEFAULT_METHODS)


def check_method(backend: Any, method: Any) -> None:
    """``method`` one of the adapter's methods, else a ValueError naming the closest."""
    ad = adapter_of(backend)
    if ad is None:
        raise ValueError(f"{backend.name} locates no events (method={method!r})")
    if method not in ad.METHODS:
        import difflib

        close = difflib.get_close_matches(str(method), list(ad.METHODS), n=1)
        raise ValueError(f"method={method!r}: {backend.name} locates events with no such method"
                         f"{f'; did you mean {close[0]!r}?' if close else ''} Choices: {', '.join(ad.METHODS)}")


def validate_event_options(event_problem: Any, options: Mapping[str, Any], allowed: Sequence[str]) -> None:
    """Bad options of an event solve raise here, the same way for every backend."""
    from ..problems.events import EventProblem

    if not isinstance(event_problem, EventProblem):
        raise TypeError(f"event_problem={event_problem!r}, but it must be an odeverify.problems.events.EventProblem")
    for key, value in options.items():
        if key not in allowed:
            raise ValueError(f"unknown event option {key!r}; expected one of {', '.join(allowed)}")
        if value is None:
            continue
        if key in ("rtol", "atol"):
            v = float(value)
            if not (math.isfinite(v) and v > 0):
                raise ValueError(f"{key}={value!r}, but it must be finite and > 0")
        if key in ("n_steps", "max_events") and (isinstance(value, bool) or not isinstance(value, (int, np.integer))
                                                 or value < 1):
            raise ValueError(f"{key}={value!r}, but it must be a positive int")
        if key == "redetect_guard" and not isinstance(value, bool):
            raise ValueError(f"redetect_guard={value!r}, but it must be True or False")


def merged_options(event_problem: Any, options: Mapping[str, Any]) -> dict[str, Any]:
    """The problem's own options (a grazing case's step grid) under the caller's."""
    out = {k: v for k, v in event_problem.options.items() if k in EVENT_OPTIONS}
    out.update({k: v for k, v in options.items() if v is not None})
    out.setdefault("rtol", RTOL)
    out.setdefault("atol", ATOL)
    return out


def jump_applies(event_problem: Any, index: int) -> bool:
    """Whether the problem's jump maps the state at event ``index``: a terminal event it
    names (or every terminal event), as ``integrate.solve_with_jumps``."""
    jump, ev = event_problem.jump, event_problem.events[index]
    return jump is not None and ev.terminal_count is not None and jump.applies(ev.name)


def stops_library(event_problem: Any, index: int, seen: int) -> int:
    """Which occurrence of event ``index`` from here stops the library run: 1 where a jump
    applies to it, the remaining count of a terminal event (``seen`` occurrences so far),
    else 0 (never)."""
    if jump_applies(event_problem, index):
        return 1
    count = event_problem.events[index].terminal_count
    return 0 if count is None else max(count - seen, 1)


def _failed(event_problem: Any, method: str, backend: str, status: Status, message: str) -> EventSolution:
    n = event_problem.problem.n
    return EventSolution(t_events=np.zeros(0), y_events=np.zeros((0, n)), which=np.zeros(0, dtype=np.int64),
                         crossing=np.zeros(0, dtype=np.int64), t_final=math.nan, y_final=np.full(n, np.nan),
                         status=status, stats=Stats(), method=method, backend=backend, message=message)


def solve_event(backend: Any, event_problem: Any, method: str, options: Mapping[str, Any]) -> EventSolution:
    """``Backend.solve_event``: validate, then drive the adapter through restarts."""
    from .base import classify_exception

    validate_event_options(event_problem, options, EVENT_OPTIONS)
    if not backend.available():
        return _failed(event_problem, method, backend.name, Status.UNAVAILABLE,
                       f"{backend.name} is not installed: {backend.install_hint}")
    check_method(backend, method)
    ad = adapter_of(backend)
    opts = merged_options(event_problem, options)
    start = time.perf_counter()
    try:
        ctx = ad.prepare(event_problem, method, opts)
        sol = drive(ad, ctx, event_problem, method, backend.name, opts)
    except Exception as exc:  # noqa: BLE001 - a library's failure becomes a status
        sol = _failed(event_problem, method, backend.name, classify_exception(exc),
                      f"{type(exc).__name__}: {exc}"[:500])
    sol.timing.setdefault("wall_s", time.perf_counter() - start)
    return sol


def drive(ad: Any, ctx: Any, event_problem: Any, method: str, backend: str, opts: Mapping[str, Any]) -> EventSolution:
    """The restart loop (see the module docstring)."""
    prob = event_problem.problem
    p = prob.converted_params(np)
    rhs = prob.vector_field(np, np.float64)
    t0, t_end = prob.t_span
    y = np.asarray(prob.y0, dtype=np.float64)
    t = float(t0)
    m = len(event_problem.events)
    max_events = int(opts.get("max_events") or event_problem.max_events)
    guard_on = opts.get("redetect_guard", True)
    times: list[float] = []
    states: list[np.ndarray] = []
    which: list[int] = []
    crossing: list[int] = []
    dropped: list[float] = []
    counts = [0] * m
    stats = Stats()
    status, message, segments = Status.SUCCESS, "", 0
    restart_from: tuple[int, float] | None = None  # (event index, time) of the restart
    stalls = 0
    while True:
        skip = None
        if guard_on and restart_from is not None:
            sign = flow_slope(event_problem.events[restart_from[0]], rhs, p, t, y)
            if sign:
                skip = (restart_from[0], sign, restart_from[1] + 2.0 * ad.time_tolerance(ctx, restart_from[1]))
        stops = [stops_library(event_problem, i, counts[i]) for i in range(m)]
        seg = ad.segment(ctx, t, y, float(t_end), stops, skip)
        segments += 1
        stats.nfev += seg.nfev
        stats.accepted += seg.steps
        stop_dropped = False
        for k, (te, ye, i, c) in enumerate(zip(seg.times, seg.states, seg.which, seg.crossing)):
            if (guard_on and k == 0 and restart_from is not None and i == restart_from[0]
                    and abs(te - restart_from[1]) <= 4.0 * ad.time_tolerance(ctx, te)):
                dropped.append(float(te))
                stop_dropped = seg.stopped is not None and len(seg.times) == 1
                continue
            times.append(float(te))
            states.append(np.asarray(ye, dtype=np.float64))
            which.append(int(i))
            crossing.append(int(c))
            counts[i] += 1
        if not seg.status.ok:
            status, message = seg.status, seg.message
            break
        if len(times) > max_events:
            status = Status.MAX_STEPS
            message = (f"more than max_events={max_events} events by t = {times[-1]:.17g}: an accumulation of"
                       " events (Zeno) or events found again and again")
            break
        if seg.stopped is None:
            t, y = seg.t_stop, seg.y_stop
            break
        i = seg.stopped
        progress = seg.t_stop - t
        t, y = float(seg.t_stop), np.asarray(seg.y_stop, dtype=np.float64)
        if stop_dropped:
            stalls = stalls + 1 if progress <= 2.0 * ad.time_tolerance(ctx, t) else 0
            if stalls > 8:
                status = Status.FAILED
                message = (f"the library finds event {event_problem.events[i].name!r} again at each restart near"
                           f" t = {t:.17g} without progress ({len(dropped)} re-detections dropped)")
                break
            restart_from = (i, restart_from[1] if restart_from is not None else t)
            continue
        stalls = 0
        if jump_applies(event_problem, i):
            y = np.asarray(event_problem.jump.map(np, np.float64(t), y, p), dtype=np.float64)
            if y.shape != (prob.n,) or not np.all(np.isfinite(y)):
                status = Status.NONFINITE
                message = (f"jump {event_problem.jump.name!r} at t = {t:.17g} returned {y.tolist()}: a"
                           f" non-finite state (or shape {y.shape}, not ({prob.n},))")
                break
        else:
            count = event_problem.events[i].terminal_count
            if count is not None and counts[i] >= count:
                break  # the terminal event's k-th occurrence ends the solve
        restart_from = (i, t)
        if abs(t - t_end) <= 2.0 * ad.time_tolerance(ctx, t):
            break  # an event at the end of the span: nothing left to solve
    n = prob.n
    return EventSolution(t_events=np.asarray(times, dtype=np.float64),
                         y_events=np.asarray(states, dtype=np.float64).reshape(-1, n),
                         which=np.asarray(which, dtype=np.int64), crossing=np.asarray(crossing, dtype=np.int64),
                         t_final=float(t), y_final=np.asarray(y, dtype=np.float64), status=status, stats=stats,
                         method=method, backend=backend, message=message, segments=segments, dropped=dropped)


def event_gradient(backend: Any, event_problem: Any, method: str, mode: str,
                   options: Mapping[str, Any]) -> EventGradient:
    """``Backend.event_gradient``: validate, then the adapter's ``gradient``."""
    from .base import check_mode, classify_exception

    validate_event_options(event_problem, options, EVENT_GRADIENT_OPTIONS)
    if not backend.available():
        return failed_gradient(event_problem, mode, method, backend.name, Status.UNAVAILABLE,
                               f"{backend.name} is not installed: {backend.install_hint}")
    check_method(backend, method)
    ad = adapter_of(backend)
    if not ad.GRADIENT_MODES:
        raise ValueError(f"{backend.name} has no event gradient modes: {ad.UNSUPPORTED_GRADIENT}")
    check_mode(mode, ad.GRADIENT_MODES, backend.name, "event gradient")
    opts = merged_options(event_problem, options)
    start = time.perf_counter()
    try:
        res = ad.gradient(event_problem, method, mode, opts)
    except Exception as exc:  # noqa: BLE001 - a library's failure becomes a status
        res = failed_gradient(event_problem, mode, method, backend.name, classify_exception(exc),
                              f"{type(exc).__name__}: {exc}"[:500])
    res.backend = backend.name
    res.timing.setdefault("wall_s", time.perf_counter() - start)
    if res.status.ok and not (np.all(np.isfinite(res.dt_dy0)) and all(map(math.isfinite, res.dt_dparams.values()))):
        res.status = Status.NONFINITE
        res.message = "non-finite event-time gradient from a solve that located the event"
    return res


class NumpyContext:
    """What a NumPy adapter (scipy, the reference) keeps of one solve: the problem, method,
    options, the parameters and the field ``f`` on NumPy float64."""

    def __init__(self, event_problem: Any, method: str, options: Mapping[str, Any]) -> None:
        prob = event_problem.problem
        self.ep = event_problem
        self.method = method
        self.options = options
        self.p = prob.converted_params(np)
        self.f = prob.vector_field(np, np.float64)

    def event_fn(self, i: int, skip: Any) -> Any:
        """Event ``i`` as ``g(t, y) -> float`` on NumPy, read as ``sign * |g|`` before
        ``until`` where ``skip = (i, sign, until)`` names it (the restart guard)."""
        g = self.ep.events[i].g
        sign, until = (skip[1], skip[2]) if skip is not None and skip[0] == i else (0, -math.inf)

        def fn(t: Any, y: Any) -> float:
            val = float(g(np, np.float64(t), np.asarray(y), self.p))
            return sign * (abs(val) + 1e-300) if sign and float(t) < until else val

        return fn


def flow_slope(event: Any, rhs: Any, p: Mapping[str, Any], t: float, y: np.ndarray) -> int:
    """The sign of dg/dt along the solution through ``(t, y)``: a central difference of ``g``
    along the field ``rhs`` (NumPy) with step 1e-7 (1 + |t|) (0: g is stationary there)."""
    f = np.asarray(rhs(np.float64(t), y), dtype=np.float64)
    h = 1e-7 * (1.0 + abs(t))
    up = float(event.g(np, np.float64(t + h), y + h * f, p))
    down = float(event.g(np, np.float64(t - h), y - h * f, p))
    return int(np.sign(up - down))


def passes_direction(direction: int, crossing: int) -> bool:
    return direction == 0 or direction * crossing > 0


def fixed_grid(t0: float, t1: float, n_steps: int) -> np.ndarray:
    """The ``n_steps`` equal steps over ``[t0, t1]`` (ends exact)."""
    grid = t0 + (t1 - t0) * np.arange(n_steps + 1, dtype=np.float64) / n_steps
    grid[-1] = t1
    return grid
