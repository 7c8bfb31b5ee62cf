"""Events in the libraries: scipy, torchdiffeq and diffrax against the closed forms.

Every library solves the same :class:`~odeverify.problems.events.EventProblem` through
``Backend.solve_event`` (the adapters and the restart driver are in
``odeverify/backends/*_events.py``), and its events are graded against the problem's closed
form (``EventProblem.exact``: the bouncing ball's impact times, the zeros of a decaying
rotation's plane crossing located in mpmath), which shares no code with any solver:

- :func:`event_location`: over a tolerance sweep, the number of events (a missed or doubled
  event fails, with the times), their crossing directions, a terminal event ending the
  solve there, and the event time's error: its fitted rate against the tolerance
  (``measured``), and a bound at the tightest tolerance;
- :func:`event_grazing`: the grazing and boundary cases (``problems.events.grazing_problems``:
  a touch at a step end, two roots in one step, a crossing exactly at step ends, a zero at
  t0) on their fixed step grids, against the conventions stated there;
- :func:`event_time_gradient`: ``dt*/dtheta`` of the first event by every event gradient
  mode of a backend, against the closed form's derivative (complex step for the ball,
  mpmath's implicit-function theorem for the plane), with theta mapped to the library's
  inputs (y0 and the problem's float parameters) through the problem's factory; and
  ``dL/dtheta`` of ``L = t* + sum(y(t*))``, whose state part is a central difference of the
  closed-form event states.

:func:`event_library_records` is the run of one backend (``run_event_conformance`` calls it).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..records import Record, unavailable_record
from ..solution import Status
from ._common import backend_for
from .events import _theta_jacobian

#: the tolerance sweep of event_location (atol = ATOL_RATIO * rtol)
TOLERANCES = (1e-3, 1e-5, 1e-7, 1e-9, 1e-11)
QUICK_TOLERANCES = (1e-4, 1e-7, 1e-10)
ATOL_RATIO = 1e-2
#: the event time's error at the tightest tolerance may be this many times (rtol + atol) (1 + |t|)
#: (an adaptive solve's global error of 100x rtol is common, as this suite's tolerance checks measure;
#: the event adds a division by |dg/dt|)
LOCATION_BOUND = 1e3
#: a fitted rate below this says the event time does not converge with the tolerance
MIN_RATE = 0.5
#: errors below FLOOR_ULPS ulps of (1 + |t|) are round-off: a sweep at that floor is exact
FLOOR_ULPS = 1e3
#: a grazing case's event times are exact: found ones must lie within MATCH (1 + |t|)
MATCH = 1e-6
#: the tolerance of the gradient solves, and the bound on the relative gradient error
GRADIENT_RTOL = 1e-8
GRADIENT_BOUND = 1e3
EPS = float(np.finfo(np.float64).eps)


def _library(backend: Any) -> str:
    """The array library of a backend's records, as the gradient properties name it."""
    return {"torchdiffeq": "torch", "diffrax": "jax"}.get(backend.name, getattr(backend, "library", "numpy"))


def match_window(exact: np.ndarray, span: float) -> float:
    """How far a found event may lie from the exact one it is paired with: a quarter of the
    closest gap between exact events (a tenth of the span with fewer than two)."""
    gaps = np.diff(np.sort(exact))
    return float(0.25 * gaps.min()) if gaps.size else 0.1 * span


def match_events(found: np.ndarray, exact: np.ndarray, window: float) -> dict[str, Any]:
    """Pair found and exact event times (greedy, nearest, within ``window``): the missed
    exact times, the extra found ones, and the errors of the pairs."""
    used = np.zeros(len(found), dtype=bool)
    missed, errors = [], []
    for t in exact:
        d = np.abs(found - t)
        d[used] = np.inf
        k = int(np.argmin(d)) if len(found) else -1
        if k >= 0 and d[k] <= window:
            used[k] = True
            errors.append(float(found[k] - t))
        else:
            missed.append(float(t))
    extra = [float(t) for t in found[~used]]
    return {"missed": missed, "extra": extra, "errors": errors}


def _count_message(sol: Any, exact: Any, m: dict[str, Any]) -> str:
    parts = []
    if m["missed"]:
        parts.append(f"missed {len(m['missed'])} event(s) at t = {', '.join(f'{t:.12g}' for t in m['missed'][:6])}")
    if m["extra"]:
        parts.append(f"reported {len(m['extra'])} extra at t = {', '.join(f'{t:.12g}' for t in m['extra'][:6])}")
    return (f"{len(sol.t_events)} events found, {len(exact.times)} in the closed form: " + "; ".join(parts)
            + (f"; re-detections dropped at restarts: {len(sol.dropped)}" if sol.dropped else ""))


def fitted_rate(tols: Sequence[float], errors: Sequence[float], floors: Sequence[float]) -> float | None:
    """Least-squares slope of log(error) against log(rtol) over the errors above their
    round-off floor (None with fewer than two such points)."""
    pts = [(math.log(t), math.log(e)) for t, e, f in zip(tols, errors, floors) if e > f and math.isfinite(e)]
    if len(pts) < 2:
        return None
    x, y = np.array(pts).T
    return float(np.polyfit(x, y, 1)[0])


def event_location(event_problem: Any, method: str, *, backend: str = "scipy",
                   tolerances: Sequence[float] | None = None, **options: Any) -> Record:
    """The events of ``event_problem`` by ``backend``'s ``method`` over a tolerance sweep
    against the closed form: the count at every tolerance (a missed or extra event fails,
    naming the times), the crossing directions, the end of a solve at a terminal event, and
    the event times' error: ``measured`` is its fitted rate against rtol (None at round-off),
    ``expected`` 1 (tolerance proportionality); the verdict fails a rate below MIN_RATE or an
    error at the tightest tolerance above LOCATION_BOUND (rtol + atol)(1 + |t|)."""
    b = backend_for(backend)
    name = event_problem.name
    lib = _library(b)
    if not b.available():
        return unavailable_record(b.name, b.install_hint, property="event_location")
    exact = event_problem.exact_events()
    tols = list(tolerances or TOLERANCES)
    t0, t1 = event_problem.problem.t_span
    window = match_window(exact.times, abs(t1 - t0))
    sweep, failures, budget = [], [], []
    errs, floors = [], []
    for rtol in tols:
        atol = ATOL_RATIO * rtol
        if budget and rtol < min(budget):  # tighter than one that ran out of steps: not tried
            budget.append(rtol)
            sweep.append({"rtol": rtol, "atol": atol, "budget": True, "status": "not run"})
            continue
        sol = b.solve_event(event_problem, method, rtol=rtol, atol=atol, **options)
        m = match_events(sol.t_events, exact.times, window)
        err = max((abs(e) for e in m["errors"]), default=0.0)
        t_max = float(np.max(np.abs(exact.times), initial=1.0))
        row = {"rtol": rtol, "atol": atol, "error": err, "count": int(len(sol.t_events)), **sol.summary(),
               "missed": m["missed"], "extra": m["extra"]}
        sweep.append(row)
        if sol.status is Status.MAX_STEPS and "max_events" not in sol.message:
            # the method's step budget, not the event location: a low order at a tight tolerance
            row["budget"] = True
            budget.append(rtol)
            continue
        if not sol.success:
            failures.append(f"rtol {rtol:g}: {sol.status.code}: {sol.message}")
            continue
        if m["missed"] or m["extra"]:
            failures.append(f"rtol {rtol:g}: " + _count_message(sol, exact, m))
            continue
        wrong = [float(t) for t, c, i in zip(sol.t_events, sol.crossing, sol.which)
                 if c and event_problem.events[i].direction * c < 0]
        if wrong:
            failures.append(f"rtol {rtol:g}: events against their direction at t = {wrong[:6]}")
        terminal = [ev.terminal_count for ev in event_problem.events]
        if (event_problem.jump is None and any(k is not None for k in terminal) and len(sol.t_events)
                and abs(sol.t_final - sol.t_events[-1]) > 1e-12 * (1 + t_max)):
            failures.append(f"rtol {rtol:g}: the terminal event at t = {sol.t_events[-1]:.12g} did not end the solve"
                            f" (it ended at t = {sol.t_final:.12g})")
        errs.append(err)
        floors.append(FLOOR_ULPS * EPS * (1 + t_max))
    ok_tols = [r["rtol"] for r in sweep if r["status"] == "success" and not r["missed"] and not r["extra"]]
    rate = fitted_rate(ok_tols, errs, floors)
    details = {"sweep": sweep, "exact_times": [float(t) for t in exact.times], "rate": rate,
               "convention": event_problem.convention, "out_of_budget": budget}
    note = (f" (rtol {', '.join(f'{t:g}' for t in budget)}: the method ran out of max_steps, not graded)"
            if budget else "")
    if not failures and not ok_tols:
        return Record("event_location", method, name, None, 1.0, "skip", backend=b.name, library=lib,
                      message="no tolerance of the sweep could be solved within max_steps" + note, details=details)
    if failures:
        return Record("event_location", method, name, rate, 1.0, "fail", backend=b.name, library=lib,
                      message="; ".join(failures)[:900], details=details)
    tight = min(ok_tols)
    bound = LOCATION_BOUND * (tight + ATOL_RATIO * tight) * (1 + float(np.max(np.abs(exact.times), initial=1.0)))
    last = errs[int(np.argmin(ok_tols))] if errs else math.nan
    details.update(bound=bound, error_at_tightest=last)
    at_floor = all(e <= f for e, f in zip(errs, floors))
    if at_floor:
        return Record("event_location", method, name, None, 1.0, "pass", backend=b.name, library=lib,
                      message=f"every event time exact to round-off ({max(errs, default=0):.2g}) at every tolerance"
                              " (the method reproduces this solution)" + note, details=details)
    problems = []
    if rate is not None and rate < MIN_RATE:
        problems.append(f"the event time's error does not converge with the tolerance (rate {rate:.2f} <"
                        f" {MIN_RATE} over rtol {min(ok_tols):g}..{max(ok_tols):g})")
    if not last <= bound:
        problems.append(f"error {last:.3g} at rtol {tight:g}, above the bound {bound:.3g}")
    verdict = "fail" if problems else "pass"
    msg = "; ".join(problems) + note if problems else (
        f"{len(exact.times)} events at every tolerance; error {last:.2g} at rtol {tight:g}"
        + (f", rate {rate:.2f}" if rate is not None else "") + note)
    return Record("event_location", method, name, rate, 1.0, verdict, backend=b.name, library=lib, message=msg,
                  details=details)


def event_grazing(event_problem: Any, method: str, *, backend: str = "scipy", case: str = "") -> Record:
    """A grazing case on its fixed grid (``EventProblem.options``): the events found against
    the convention the case states (``measured``: events found, ``expected``: in the closed
    form); a missed, extra or misplaced event fails with the times."""
    b = backend_for(backend)
    lib = _library(b)
    if not b.available():
        return unavailable_record(b.name, b.install_hint, property="event_grazing")
    exact = event_problem.exact_events()
    sol = b.solve_event(event_problem, method)
    m = match_events(sol.t_events, exact.times, MATCH * (1 + float(np.max(np.abs(exact.times), initial=1.0))))
    details = {"case": case, "convention": event_problem.convention, "exact_times": [float(t) for t in exact.times],
               **sol.summary(), **m}
    if not sol.success:
        return Record("event_grazing", method, event_problem.name, float(len(sol.t_events)), float(len(exact.times)),
                      "fail", backend=b.name, library=lib, status=sol.status.code,
                      message=f"{sol.status.code}: {sol.message}"[:900], details=details)
    if m["missed"] or m["extra"]:
        return Record("event_grazing", method, event_problem.name, float(len(sol.t_events)), float(len(exact.times)),
                      "fail", backend=b.name, library=lib,
                      message=(_count_message(sol, exact, m) + f" (convention: {event_problem.convention})")[:900],
                      details=details)
    return Record("event_grazing", method, event_problem.name, float(len(sol.t_events)), float(len(exact.times)),
                  "pass", backend=b.name, library=lib,
                  message=f"{len(exact.times)} event(s) as the convention says", details=details)


def state_gradient_oracle(event_problem: Any) -> np.ndarray:
    """d/dtheta of sum(y(t_1*)) (the first event's state, closed form) by central differences
    of ``exact`` (no solver), step 1e-5 max(1, |theta_j|) (a 4th-order Richardson pair)."""
    keys = list(event_problem.theta)
    out = np.zeros(len(keys))

    def s(key: str, v: float) -> float:
        ex = event_problem.exact({**event_problem.theta, key: v})
        return float(np.sum(ex.states[0]))

    for j, key in enumerate(keys):
        th = event_problem.theta[key]
        h = 1e-4 * max(1.0, abs(th))
        d1 = (s(key, th + h) - s(key, th - h)) / (2 * h)
        d2 = (s(key, th + 2 * h) - s(key, th - 2 * h)) / (4 * h)
        out[j] = (4 * d1 - d2) / 3
    return out


def event_time_gradient(event_problem: Any, method: str, mode: str, *, backend: str = "torchdiffeq",
                        rtol: float = GRADIENT_RTOL) -> Record:
    """dt*/dtheta (and dL/dtheta, L = t* + sum y(t*)) of the first event by ``mode`` against
    the closed form; ``measured`` the worst relative error over theta, ``expected`` 0; fails
    above GRADIENT_BOUND (rtol + atol) per component (relative to max(1, |oracle|))."""
    b = backend_for(backend)
    lib = _library(b)
    if not b.available():
        return unavailable_record(b.name, b.install_hint, property="event_time_gradient")
    prop = "event_time_gradient"
    atol = ATOL_RATIO * rtol
    res = b.event_gradient(event_problem, method, mode, rtol=rtol, atol=atol)
    keys = list(event_problem.theta)
    jy, jp = _theta_jacobian(event_problem)  # complex steps of the problem's parametrize
    oracle_t = np.asarray(event_problem.time_gradient(event_problem.theta))[0]
    oracle_l = oracle_t + state_gradient_oracle(event_problem)
    label = f"{method}/{mode}"
    if not res.status.ok:
        return Record(prop, label, event_problem.name, None, 0.0, "fail", backend=b.name, library=lib,
                      status=res.status.code, message=f"{res.status.code}: {res.message}"[:900],
                      details={"mode": mode, "theta": keys})
    got_t = res.dt_dy0 @ jy + sum(res.dt_dparams.get(k, 0.0) * jp[k] for k in jp)
    dsum_y0 = res.dy_dy0.sum(axis=0)
    got_l = got_t + dsum_y0 @ jy + sum(float(np.sum(res.dy_dparams.get(k, 0.0))) * jp[k] for k in jp)
    scale_t = np.maximum(1.0, np.abs(oracle_t))
    scale_l = np.maximum(1.0, np.abs(oracle_l))
    err_t = np.abs(got_t - oracle_t) / scale_t
    err_l = np.abs(got_l - oracle_l) / scale_l
    worst = float(max(err_t.max(initial=0.0), err_l.max(initial=0.0)))
    bound = GRADIENT_BOUND * (rtol + atol)
    details = {"mode": mode, "theta": keys, "dt_dtheta": got_t.tolist(), "oracle_dt_dtheta": oracle_t.tolist(),
               "dL_dtheta": got_l.tolist(), "oracle_dL_dtheta": oracle_l.tolist(), "error_t": err_t.tolist(),
               "error_L": err_l.tolist(), "bound": bound, "t_event": res.t_event, "rtol": rtol, "atol": atol}
    if not worst <= bound:
        bad = [f"{k}: {g:.6g} vs {o:.6g}" for k, g, o, e in zip(keys, got_t, oracle_t, err_t) if not e <= bound]
        bad_l = [f"{k}: {g:.6g} vs {o:.6g}" for k, g, o, e in zip(keys, got_l, oracle_l, err_l) if not e <= bound]
        msg = (f"relative error {worst:.3g} > {bound:.3g}; dt*/dtheta " + ", ".join(bad or ["ok"])
               + "; dL/dtheta " + ", ".join(bad_l or ["ok"]))
        return Record(prop, label, event_problem.name, worst, 0.0, "fail", backend=b.name, library=lib,
                      message=msg[:900], details=details)
    return Record(prop, label, event_problem.name, worst, 0.0, "pass", backend=b.name, library=lib,
                  message=f"dt*/dtheta and dL/dtheta within {worst:.2g} (bound {bound:.2g}) over {', '.join(keys)}",
                  details=details)


def library_problems(quick: bool = False) -> dict[str, Any]:
    """The event problems of the library records: the ball (jumps, a long horizon), the plane
    crossing both ways (non-terminal: every library but scipy restarts at each), upward only,
    and terminal at the second downward crossing."""
    from ..problems.events import bouncing_ball, plane_crossing

    out = {"bouncing_ball": bouncing_ball(bounces=6 if quick else 12),
           "plane_crossing": plane_crossing()}
    if not quick:
        out["plane_crossing_up"] = plane_crossing(direction=1, name="plane_crossing_up")
        out["plane_crossing_terminal2"] = plane_crossing(direction=-1, terminal=2, name="plane_crossing_terminal2")
    return out


def gradient_problems() -> dict[str, Any]:
    """The problems of the event-time gradients: the ball's first impact (gravity in the
    field, height and velocity in y0) and the plane's first downward crossing (the offset and
    angle live in the event function only)."""
    from ..problems.events import bouncing_ball, plane_crossing

    return {"bouncing_ball": bouncing_ball(bounces=2),
            "plane_crossing_terminal": plane_crossing(terminal=True, direction=-1, name="plane_crossing_terminal")}


#: the parts of :func:`event_library_records`
PARTS = ("location", "grazing", "gradient")


def event_library_records(backend: str, quick: bool = False, methods: Sequence[str] | None = None,
                          parts: Sequence[str] = PARTS) -> list[Record]:
    """One backend's event records: ``location``: event_location on :func:`library_problems`
    per method; ``grazing``: event_grazing on every grazing case (first method);
    ``gradient``: event_time_gradient per gradient mode (first method). A backend without
    event support gives one ``skip`` record; a missing library ``unavailable``. Records come
    back unjudged by the expected-failures list (the family's run applies it)."""
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        raise ValueError(f"parts={list(parts)!r} has unknown parts {unknown}; expected some of {PARTS}")
    from ..backends._event_driver import adapter_of, event_methods
    from ..problems.events import grazing_problems

    b = backend_for(backend)
    if not b.available():
        return [unavailable_record(b.name, b.install_hint, property="event_location")]
    ad = adapter_of(b)
    if ad is None:
        return [Record("event_location", "*", "-", None, None, "skip", backend=b.name, library=_library(b),
                       message=f"{b.name} locates no events (no event adapter)")]
    names = list(methods) if methods else event_methods(b, quick)
    out: list[Record] = []
    tols = QUICK_TOLERANCES if quick else TOLERANCES
    for m in names if "location" in parts else []:
        for ep in library_problems(quick).values():
            out.append(event_location(ep, m, backend=b.name, tolerances=tols))
    for case, ep in grazing_problems().items() if "grazing" in parts else []:
        out.append(event_grazing(ep, names[0], backend=b.name, case=case))
    if "gradient" in parts and not ad.GRADIENT_MODES:
        out.append(Record("event_time_gradient", names[0], "-", None, None, "skip", backend=b.name,
                          library=_library(b), message=ad.UNSUPPORTED_GRADIENT))
    for mode in ad.GRADIENT_MODES if "gradient" in parts else ():
        for ep in gradient_problems().values():
            out.append(event_time_gradient(ep, names[0], mode, backend=b.name))
    return out
