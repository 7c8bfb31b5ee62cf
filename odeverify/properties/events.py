"""Properties of event location and jumps (issue 12), graded against closed forms that share
no code with the solver (``problems/events.py``: the bouncing ball's impacts in closed form,
a decaying rotation's plane crossings found in mpmath, the grazing cases in exact arithmetic):

- :func:`event_time_order`: the first event time's error over a fixed-step sweep converges at the
  order of the method's dense output: ``min(p, q + 1)`` for a method of order ``p`` whose
  interpolant's one-step error is ``O(h^(q+1))`` (odeverify's dense order ``q``): the root is
  located on that interpolant, so its error is the interpolated solution's error divided by
  ``|dg/dt|``;
- :func:`event_count`: the number and the times of the events over the whole horizon match
  the closed form (no missed, no doubled events; each grazing case has its expected count);
- :func:`event_gradient`: ``dL/dtheta`` through the events, ``L = sum_k c_k t_k + w . y(T)``,
  by each gradient mode against the closed form's derivatives.

Signatures follow the other families: ``(event_problem, method, *, backend="reference", ...)``.
The reference runs :func:`odeverify.integrate.solve_with_jumps`; any other backend its
``Backend.solve_event`` / ``Backend.event_gradient`` (``backends/_event_driver.py``).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from .. import backends
from ..gradients.events import EVENT_GRADIENT_MODES, event_value_and_grad, exact_value_and_grad
from ..integrate import resolve_solver, solve_with_jumps
from ..problems.events import EventProblem
from ..records import Record
from ..solution import Status
from ..metrics import loglog_slope
from ._common import method_info
from .convergence import ORDER_BAND, RESOLVED
from .gradients import ACCURACY_FACTOR

#: fixed-step sweep of event_time_order: n0 * REFINE^i steps, i < SWEEP_COUNT
SWEEP_COUNT = 4
#: the tightest tolerance of event_count (rtol; atol = rtol / 100) and of the reference gradient modes
COUNT_RTOL = 1e-8
GRADIENT_RTOL = 1e-10
#: event times closer than this (relative to 1 + |t|) match in the exact-arithmetic (grazing) cases
EXACT_MATCH = 1e-12
#: the same for a library's event location (its root finder's time tolerance: torchdiffeq bisects
#: to its atol, 1e-10 under the event driver; measured 2.9e-11 off on the grazing cases)
LIBRARY_MATCH = 1e-9
#: event times within this many rtol's (times 1 + |t|) of the closed form match in a tolerance solve
#: (an adaptive solve's global error can reach 100 rtol, as the tolerance checks measure; the event
#: time divides it by |dg/dt|)
TIME_FACTOR = 1e3


def _label(backend: str) -> str:
    return backends.get(backend).name if backend != "reference" else "reference"


def event_solve(ep: EventProblem, method: Any, *, backend: str = "reference", **options: Any) -> dict[str, Any]:
    """One solve with events on ``backend`` as plain data: ``t_events``, ``which``, ``status``,
    ``message``, ``nfev``, ``steps``. On the reference, ``n_steps`` becomes the step
    ``dt = span / n_steps`` of every segment (the restarts keep the grid's step)."""
    if backend == "reference":
        opts = dict(options)
        if "n_steps" in opts:
            t0, t1 = ep.problem.t_span
            opts["dt"] = abs(t1 - t0) / opts.pop("n_steps")
        sol = solve_with_jumps(ep, method, **opts)
        return {"t_events": np.asarray(sol.t_events, dtype=np.float64), "which": np.asarray(sol.event_index),
                "status": sol.status, "message": sol.message, "nfev": int(sol.stats.nfev),
                "steps": int(sol.stats.accepted), "dropped": []}
    es = backends.get(backend).solve_event(ep, method, **options)
    return {"t_events": np.asarray(es.t_events, dtype=np.float64), "which": np.asarray(es.which),
            "status": es.status, "message": es.message, "nfev": int(es.stats.nfev), "steps": int(es.stats.accepted),
            "dropped": [float(t) for t in getattr(es, "dropped", [])]}


def _common(prop: str, ep: EventProblem, method: Any, backend: str, **kw: Any) -> dict[str, Any]:
    return dict(property=prop, method=str(getattr(method, "name", method)), problem=ep.name,
                backend=_label(backend), **kw)


# ----------------------------------------------------------------------------- order
#: the sweep's refinement: 4x per point keeps the event at the same phase theta = 1/3 of its step
#: (4 (k + 1/3) = (4k + 1) + 1/3); halving would alternate 1/3 and 2/3 and the interpolation
#: error's h^3 term (odd in theta - 1/2) would make the local slopes oscillate (measured: a
#: chord's 1.51, 2.19, 1.89, 2.05 with halving)
REFINE = 4
#: local slopes of a settled deficit agree within this
SETTLED = 0.3


def aligned_horizon(ep: EventProblem, n0: int) -> float | None:
    """A horizon ``T`` past the first event ``t_1`` (and before the second) with ``n0 t_1 / T =
    k + 1/3``: on grids of ``n0 4^i`` steps over ``[t0, T]`` the event sits at the phase 1/3 of
    its step, so the interpolation error's leading terms are the same at every sweep point. None
    when the problem cannot be rebuilt (no factory) or has no event."""
    ex = ep.exact_events()
    if ep.factory is None or ex is None or not len(ex.times):
        return None
    t0, t1 = ep.problem.t_span
    first = ex.times[0] - t0
    target = (ex.times[1] - t0 + first) / 2 if len(ex.times) > 1 else min(1.5 * first, t1 - t0)
    # k <= n0 - 1 keeps T past t_1 (a first event near the original horizon leaves no room before
    # it: explore found T < t_1 on a crossing at 0.99 of the span); a second event inside T is
    # harmless: the sweep compares the rebuilt problem's own closed form
    k = min(math.ceil(n0 * first / target - 1.0 / 3.0), n0 - 1)
    return t0 + n0 * first / (k + 1.0 / 3.0)


def _judge(h: np.ndarray, e: np.ndarray, floor: float, expected: float, band: float, findings: list[str],
           details: dict[str, Any]) -> tuple[float | None, str, str]:
    usable = np.isfinite(e) & (e > floor) & (e < RESOLVED)
    idx = np.flatnonzero(usable)
    local = [float(np.log(e[i] / e[i + 1]) / np.log(h[i] / h[i + 1])) if usable[i] and usable[i + 1] else None
             for i in range(len(e) - 1)]
    details["local_slopes"] = local
    details["findings"] = findings
    if findings:
        return None, "fail", "; ".join(findings)
    if idx.size < 2:
        return None, "skip", (f"inconclusive: fewer than 2 errors between the round-off floor {floor:.2g} and"
                              f" {RESOLVED}: no asymptotic window")
    win = idx[-3:] if idx.size >= 3 else idx
    slope = loglog_slope(h[win], e[win])
    lead = [v for v in local[win[0]:win[-1]] if v is not None]
    details["window"] = {"h_max": float(h[win[0]]), "h_min": float(h[win[-1]]), "slopes": lead}
    if abs(slope - expected) <= band:
        return slope, "pass", ""
    settled = len(lead) >= 1 and max(lead) - min(lead) <= SETTLED and idx.size >= 3
    if slope > expected:
        return slope, "skip", f"inconclusive: slope {slope:.3f} above the claimed {expected:g} (higher-order terms)"
    if not settled:
        return slope, "skip", f"inconclusive: local slopes {[round(v, 2) for v in lead]} still drift"
    return slope, "fail", (f"slope={slope:.3f}, but should be {expected:g} +- {band} over h={h[win[0]]:.3g}.."
                           f"{h[win[-1]]:.3g} (local slopes {[round(v, 2) for v in lead]})")


def event_time_order(ep: EventProblem, method: Any, *, backend: str = "reference", n0: int | None = None,
                     count: int = SWEEP_COUNT, band: float = ORDER_BAND) -> Record:
    """The first event time's error over a fixed-step sweep (``n0 * 4^i`` steps over a horizon
    placed by :func:`aligned_horizon`) converges at ``min(p, q + 1)`` (order ``p``, dense order
    ``q``): the root is found on the dense output, so its error is the interpolated solution's
    divided by ``|dg/dt|``. ``measured``: the slope of ``|t_1 - t_1*|`` against ``h`` over the
    finest three points above round-off. A sweep point that does not find exactly the closed
    form's events is left out of the fit; one at the finest step fails. Default ``n0``: 16 for
    orders up to 4, 4 above (they reach round-off within three refinements)."""
    # the reference's claims from its solver object (its capabilities would import every library)
    info = method_info(resolve_solver(method) if backend == "reference" else method, backend=backend)
    common = _common("event_time_order", ep, method, backend)
    if n0 is None:
        n0 = 16 if info.order <= 4 else 4
    horizon = aligned_horizon(ep, n0)
    if horizon is None:
        return Record(measured=None, expected=None, verdict="skip",
                      message=f"{ep.name} has no closed-form event time or cannot be rebuilt on another horizon",
                      **common)
    if info.dense_order is None:
        return Record(measured=None, expected=None, verdict="skip",
                      message=f"{info.name} declares no dense-output order", **common)
    expected = float(min(info.order, info.dense_order + 1))
    ep_h = ep.factory(**ep.theta, horizon=horizon)
    ex = ep_h.exact_events()
    t0 = ep.problem.t_span[0]
    ns = [n0 * REFINE ** i for i in range(count)]
    hs, errs, found, statuses = [], [], [], []
    findings: list[str] = []
    for i, n in enumerate(ns):
        r = event_solve(ep_h, method, backend=backend, n_steps=n)
        hs.append(abs(horizon - t0) / n)
        statuses.append(r["status"].code)
        found.append(len(r["t_events"]))
        if not r["status"].ok or len(r["t_events"]) != len(ex.times):
            errs.append(math.nan)
            if i == count - 1:
                findings.append(f"{n} steps: {len(r['t_events'])} events (status {r['status'].code}), but the"
                                f" closed form has {len(ex.times)}")
            continue
        errs.append(float(abs(r["t_events"][0] - ex.times[0])))
    floor = 1e3 * np.finfo(np.float64).eps * max(1.0, abs(float(ex.times[0])))
    details: dict[str, Any] = {"h": hs, "n_steps": ns, "error": errs, "found": found, "expected_count": len(ex.times),
                               "status": statuses, "floor": floor, "band": band, "order": info.order,
                               "dense_order": info.dense_order, "horizon": horizon, "t_event": float(ex.times[0]),
                               "note": "expected = min(order, dense_order + 1): the root is found on the dense"
                                       " output; the event sits at theta = 1/3 of its step on every grid"}
    slope, verdict, msg = _judge(np.asarray(hs), np.asarray(errs), floor, expected, band, findings, details)
    if verdict == "fail" and not findings:
        msg = f"event time error {msg}; expected min(order {info.order}, dense order {info.dense_order} + 1)"
    return Record(measured=slope, expected=expected, verdict=verdict, message=msg, details=details, **common)


# ----------------------------------------------------------------------------- count
def count_rtol(order: int | None) -> float:
    """The tolerance of event_count for a method of ``order``: 10^-(2 + 1.5 p), at most
    :data:`COUNT_RTOL` (a second-order pair at 1e-8 took 10^5 steps on the ball)."""
    return max(COUNT_RTOL, 10.0 ** -(2 + 1.5 * (order or 4)))


def event_count(ep: EventProblem, method: Any, *, backend: str = "reference", rtol: float | None = None,
                atol: float | None = None) -> Record:
    """The number and the times of the events over the horizon match the closed form.

    A grazing case (``ep.options`` fixes its step grid; exact arithmetic) must match to
    :data:`EXACT_MATCH` on the reference (:data:`LIBRARY_MATCH` for a library's root finder);
    a tolerance solve to ``TIME_FACTOR * rtol * (1 + |t|)`` and never
    farther than a quarter of the gap to the neighbouring event (so a doubled or a missed
    event cannot hide behind a neighbour). ``measured``: the events found, ``expected``: the
    closed form's count."""
    ex = ep.exact_events()
    common = _common("event_count", ep, method, backend)
    if ex is None:
        return Record(measured=None, expected=None, verdict="skip", message=f"{ep.name} has no closed form", **common)
    exact_case = bool(ep.options)
    info = method_info(resolve_solver(method) if backend == "reference" else method, backend=backend)
    if not exact_case and not info.adaptive:
        return Record(measured=None, expected=None, verdict="skip", details={"convention": ep.convention},
                      message=f"{info.name} is fixed-step: the count at a tolerance grades adaptive methods"
                              " (event_time_order and the grazing cases grade its events)", **common)
    if rtol is None:
        rtol = count_rtol(info.order)
    opts = dict(ep.options) if exact_case else {"rtol": rtol, "atol": rtol / 100 if atol is None else atol}
    r = event_solve(ep, method, backend=backend, **opts)
    got, want = r["t_events"], ex.times
    details: dict[str, Any] = {"found": got.tolist(), "exact": want.tolist(), "options": opts, "nfev": r["nfev"],
                               "status": r["status"].code, "dropped": r["dropped"], "convention": ep.convention}
    if not r["status"].ok:
        return Record(measured=float(len(got)), expected=float(len(want)), verdict="fail", status=r["status"].code,
                      message=f"the solve failed: {r['message']}", details=details, **common)
    if len(got) != len(want):
        near = 1e-6 * (1 + np.abs(want))
        hits = [int(np.sum(np.abs(got - t) <= near[i])) for i, t in enumerate(want)]
        missing = [float(t) for t, c in zip(want, hits) if c == 0]
        doubled = [float(t) for t, c in zip(want, hits) if c > 1]
        extra = [float(t) for t in got if not np.any(np.abs(want - t) <= 1e-6 * (1 + abs(t)))]
        details.update(missing=missing, extra=extra, doubled=doubled)
        what = "doubled or spurious" if len(got) > len(want) else "missed"
        return Record(measured=float(len(got)), expected=float(len(want)), verdict="fail",
                      message=(f"{len(got)} events, but the closed form has {len(want)} ({what}; missing"
                               f" {missing[:4]}, found more than once {doubled[:4]}, extra {extra[:4]});"
                               f" {ep.convention}"), details=details, **common)
    if not len(want):
        return Record(measured=0.0, expected=0.0, verdict="pass", details=details, **common)
    gaps = np.diff(np.concatenate([[ep.problem.t_span[0]], want, [ep.problem.t_span[1]]]))
    near = np.minimum(gaps[:-1], gaps[1:])
    if exact_case:
        # the reference brackets a root to adjacent floats; a library's root finder stops at its own
        # tolerance in time (torchdiffeq bisects to atol): the grazing cases grade the count
        exact = EXACT_MATCH if backend == "reference" else LIBRARY_MATCH
        allow = exact * (1 + np.abs(want))
    else:
        allow = TIME_FACTOR * rtol * (1 + np.abs(want))
    allow = np.minimum(allow, np.where(near > 0, near / 4, allow))
    err = np.abs(got - want)
    wrong = np.flatnonzero(err > allow)
    which_ok = bool(np.all(r["which"] == ex.which)) if len(r["which"]) == len(ex.which) else False
    details.update(error=err.tolist(), allowance=allow.tolist(), max_error=float(np.max(err)))
    if len(wrong) or not which_ok:
        k = int(wrong[0]) if len(wrong) else 0
        msg = (f"event {k} at t={got[k]!r}, but the closed form has t={want[k]!r} (error {err[k]:.3g} >"
               f" allowance {allow[k]:.3g})") if len(wrong) else "the events found are other event functions'"
        return Record(measured=float(len(got)), expected=float(len(want)), verdict="fail", message=msg,
                      details=details, **common)
    return Record(measured=float(len(got)), expected=float(len(want)), verdict="pass", details=details, **common)


# ----------------------------------------------------------------------------- gradients
def _theta_jacobian(ep: EventProblem) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """d y0 / d theta (n, P) and d p / d theta (name -> (P,)) of ``ep.parametrize`` by complex steps."""
    keys = list(ep.theta)
    eps = 1e-30
    dy0 = np.zeros((ep.problem.n, len(keys)))
    dp: dict[str, np.ndarray] = {}
    for j, key in enumerate(keys):
        th = {k: complex(v) + (1j * eps if k == key else 0) for k, v in ep.theta.items()}
        y0, params = ep.parametrize(np, th)
        dy0[:, j] = np.imag(np.asarray(y0)) / eps
        for name, v in params.items():
            dp.setdefault(name, np.zeros(len(keys)))[j] = float(np.imag(v)) / eps
    return dy0, dp


def event_gradient(ep: EventProblem, method: Any, mode: str = "discrete", *, backend: str = "reference",
                   rtol: float = GRADIENT_RTOL, atol: float | None = None, **options: Any) -> Record:
    """``dL/dtheta`` through the events by gradient ``mode`` against the closed form.

    Reference: ``L = sum_k t_k + sum_i y_i(T)`` (every event time and the final state), modes
    ``discrete`` (AD through the loop with the implicit-function-theorem correction) and
    ``adjoint`` (with the jump condition). Other backends: ``Backend.event_gradient`` grades
    the first event time ``t_1`` (its gradient with respect to ``y0`` and the parameters,
    chained to theta by complex steps of ``parametrize``). ``measured``: the largest error
    relative to ``max(1, |dL/dtheta|)``; bound ``ACCURACY_FACTOR * (rtol + atol)`` plus the
    oracle's own error estimate."""
    atol = rtol / 100 if atol is None else atol
    common = _common("event_gradient", ep, method, backend)
    common["problem"] = f"{ep.name}[{mode}]"
    if ep.parametrize is None or not ep.theta or ep.time_gradient is None:
        return Record(measured=None, expected=None, verdict="skip",
                      message=f"{ep.name} has no differentiable parameters with a closed-form gradient", **common)
    keys = list(ep.theta)
    if backend == "reference":
        if mode not in EVENT_GRADIENT_MODES:
            raise ValueError(f"mode={mode!r}, but the reference's event gradient modes are {EVENT_GRADIENT_MODES}")
        L, g_exact, oracle_err = exact_value_and_grad(ep)
        res = event_value_and_grad(ep, method, mode, rtol=rtol, atol=atol, **options)
        got, status, message = np.asarray(res["grad"], dtype=np.float64), res["status"], res["message"]
        what = "L = sum_k t_k + sum_i y_i(T)"
        if status.ok and not math.isfinite(res["value"]):
            # a loss read off an unreached output is NaN without a graph: never a silent zero
            got = np.full(len(keys), np.nan)
    else:
        ex = ep.exact_events()
        g_exact = ep.time_gradient(ep.theta)[0]
        oracle_err = 1e-13 * max(1.0, float(np.max(np.abs(g_exact))))
        eg = backends.get(backend).event_gradient(ep, method, mode, rtol=rtol, atol=atol, **options)
        status, message = eg.status, eg.message
        dy0, dp = _theta_jacobian(ep)
        got = np.asarray(eg.dt_dy0, dtype=np.float64) @ dy0
        for name, d in dp.items():
            got = got + float(eg.dt_dparams.get(name, 0.0)) * d
        what = f"L = t_1 (= {ex.times[0]:.6g})"
    scale = max(1.0, float(np.max(np.abs(g_exact))))
    err = np.abs(got - g_exact)
    measured = float(np.max(err)) / scale if np.all(np.isfinite(got)) else math.inf
    bound = ACCURACY_FACTOR * (rtol + atol) + oracle_err / scale
    details = {"theta": dict(ep.theta), "keys": keys, "gradient": got.tolist(), "exact": g_exact.tolist(),
               "error": err.tolist(), "oracle_error": oracle_err, "bound": bound, "loss": what, "rtol": rtol,
               "atol": atol, "mode": mode}
    if not status.ok:
        return Record(measured=None, expected=bound, verdict="fail", status=status.code,
                      message=f"{mode}: the solve failed: {message}", details=details, **common)
    ok = measured <= bound
    worst = int(np.argmax(err))
    msg = "" if ok else (f"{mode}: dL/d{keys[worst]} = {got[worst]:.10g}, but the closed form gives"
                         f" {g_exact[worst]:.10g} (relative error {measured:.3g} > bound {bound:.3g}; {what})")
    return Record(measured=measured, expected=bound, verdict="pass" if ok else "fail", message=msg, details=details,
                  **common)


__all__ = ["event_time_order", "event_count", "event_gradient", "event_solve"]
