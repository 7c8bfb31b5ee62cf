"""Events in the libraries (issue 12): Backend.solve_event / event_gradient on scipy, torchdiffeq,
diffrax and the reference against the closed forms, the restart driver, and planted faults
that the event records must catch (an adapter that drops the direction filter, one that
reports the step end instead of the root, a restart that re-detects the event)."""
from __future__ import annotations

import functools

import numpy as np
import pytest

from odeverify import backends
from odeverify.backends import _event_driver, scipy_events
from odeverify.backends.base import Backend
from odeverify.problems.events import bouncing_ball, grazing_problems, plane_crossing
from odeverify.properties.event_agreement import (QUICK_TOLERANCES, event_grazing, event_library_records,
                                                  event_location, event_time_gradient, match_events)
from odeverify.solution import Status


def _have(name: str) -> bool:
    return backends.get(name).available()


needs_torchdiffeq = pytest.mark.skipif(not _have("torchdiffeq"), reason="torchdiffeq is not installed")
needs_diffrax = pytest.mark.skipif(not _have("diffrax"), reason="diffrax is not installed")


def _ball_errors(backend: str, method: str, bounces: int = 3, **options) -> tuple[object, np.ndarray]:
    ep = bouncing_ball(bounces=bounces)
    sol = backends.get(backend).solve_event(ep, method, **options)
    exact = ep.exact_events().times
    assert sol.status is Status.SUCCESS, sol.message
    assert len(sol.t_events) == len(exact), (sol.t_events, exact)
    return sol, np.abs(sol.t_events - exact)


# ----------------------------------------------------------------------------- one smoke test per library
def test_scipy_ball_impacts_match_the_closed_form():
    sol, err = _ball_errors("scipy", "RK45", rtol=1e-8, atol=1e-10)
    assert err.max() < 1e-12  # a parabola: RK45's quartic dense output is exact
    assert list(sol.crossing) == [-1, -1, -1] and list(sol.which) == [0, 0, 0]
    assert sol.segments == 4  # three restarts after the jumps, then to the horizon
    assert sol.y_events[:, 1].max() < 0  # the state before the jump: falling


@needs_torchdiffeq
def test_torchdiffeq_ball_impacts_within_its_time_tolerance():
    # odeint_event bisects down to atol in time: the error is below atol, not at round-off
    _, err = _ball_errors("torchdiffeq", "dopri5", rtol=1e-8, atol=1e-10)
    assert err.max() < 1e-9


@needs_diffrax
def test_diffrax_ball_impacts_match_the_closed_form():
    _, err = _ball_errors("diffrax", "Tsit5", rtol=1e-8, atol=1e-10)
    assert err.max() < 1e-12


def test_reference_ball_impacts_match_the_closed_form():
    _, err = _ball_errors("reference", "dopri5", rtol=1e-8, atol=1e-10)
    assert err.max() < 1e-12


# ----------------------------------------------------------------------------- records that must pass
def test_event_location_passes_on_scipy_plane_crossing():
    r = event_location(plane_crossing(), "RK45", backend="scipy", tolerances=QUICK_TOLERANCES)
    assert r.verdict == "pass", r.message
    assert 0.7 < r.measured < 1.5  # the event time's error follows the tolerance
    assert [row["count"] for row in r.details["sweep"]] == [7, 7, 7]


def test_terminal_count_ends_the_solve_at_the_kth_event():
    ep = plane_crossing(direction=-1, terminal=2, name="plane_terminal2")
    sol = backends.get("scipy").solve_event(ep, "DOP853", rtol=1e-10, atol=1e-12)
    exact = ep.exact_events().times
    assert len(sol.t_events) == 2 and np.abs(sol.t_events - exact).max() < 1e-8
    assert sol.t_final == sol.t_events[-1]
    assert list(sol.crossing) == [-1, -1]


def test_grazing_crossing_exactly_at_step_ends_is_reported_once_each():
    r = event_grazing(grazing_problems()["crossing_at_step_ends"], "RK45", backend="scipy")
    assert r.verdict == "pass", r.message


# ----------------------------------------------------------------------------- findings (fail, with the times)
def test_scipy_misses_two_roots_inside_one_step():
    # scipy compares the signs of g at the step ends only (find_active_events): both roots missed
    r = event_grazing(grazing_problems()["two_roots_one_step"], "RK45", backend="scipy")
    assert r.verdict == "fail"
    assert r.details["missed"] == [0.5, 1.5] and "missed 2 event(s)" in r.message


def test_scipy_reports_a_zero_at_t0():
    # find_active_events counts g_old <= 0 <= g_new as an up-crossing, so g(t0) = 0 is an event
    r = event_grazing(grazing_problems()["event_at_t0"], "RK45", backend="scipy")
    assert r.verdict == "fail" and 0.0 in r.details["extra"]


@needs_torchdiffeq
def test_torchdiffeq_bosh3_misplaces_impacts_at_any_tolerance():
    # bosh3's dense output in torchdiffeq 0.2.5 takes its midpoint value as y0 + h/2 k2 (bosh3.py
    # _BS_C_MID = [0, 1/2, 0, 0]), an O(h^2) estimate; on the free fall the steps are exact, so the
    # error control lets them grow and the event is located on a wrong interpolant: the first
    # impact at 0.3756 at rtol 1e-8 (0.3146 at 1e-3) instead of 0.4515
    ep = bouncing_ball(bounces=2)
    sol = backends.get("torchdiffeq").solve_event(ep, "bosh3", rtol=1e-8, atol=1e-10)
    assert abs(sol.t_events[0] - ep.exact_events().times[0]) > 0.05
    r = event_location(ep, "bosh3", backend="torchdiffeq", tolerances=(1e-3, 1e-8))
    assert r.verdict == "fail" and "missed" in r.message


# ----------------------------------------------------------------------------- planted faults
def test_planted_no_direction_filter_fails(monkeypatch):
    monkeypatch.setattr(scipy_events, "prepare", functools.partial(scipy_events.prepare, direction_filter=False))
    r = event_location(plane_crossing(direction=1, name="plane_up"), "RK45", backend="scipy",
                       tolerances=(1e-6,))
    assert r.verdict == "fail"
    assert "extra" in r.message and len(r.details["sweep"][0]["extra"]) == 4  # the 4 downward crossings


def test_planted_step_end_instead_of_root_fails(monkeypatch):
    import scipy.integrate

    real = scipy.integrate.solve_ivp

    def step_end(*args, **kwargs):
        sol = real(*args, **kwargs)
        for i, ts in enumerate(sol.t_events):  # each event moved to the end of its step
            idx = np.searchsorted(sol.t, ts)
            sol.t_events[i] = sol.t[np.minimum(idx, len(sol.t) - 1)]
            sol.y_events[i] = sol.y[:, np.minimum(idx, len(sol.t) - 1)].T
        return sol

    monkeypatch.setattr(scipy.integrate, "solve_ivp", step_end)
    r = event_location(plane_crossing(), "RK45", backend="scipy", tolerances=QUICK_TOLERANCES)
    assert r.verdict == "fail"
    assert "above the bound" in r.message or "does not converge" in r.message


def test_planted_restart_without_guard_redetects_the_event():
    # every crossing terminal with an identity jump: the driver restarts scipy at each root,
    # where g is zero to round-off; without the guard scipy (g_old <= 0 <= g_new) finds the
    # same root again at once, at every restart, until max_events
    import dataclasses

    from odeverify.problems.events import Jump

    ep = dataclasses.replace(plane_crossing(terminal=True), jump=Jump(lambda xp, t, y, p: y, name="identity"))
    exact = plane_crossing().exact_events().times
    b = backends.get("scipy")
    good = b.solve_event(ep, "RK45", rtol=1e-8, atol=1e-10, max_events=20)
    bad = b.solve_event(ep, "RK45", rtol=1e-8, atol=1e-10, max_events=20, redetect_guard=False)
    assert good.status is Status.SUCCESS and np.abs(good.t_events - exact).max() < 1e-7
    assert good.segments == len(exact) + 1
    assert bad.status is Status.MAX_STEPS and len(bad.t_events) > len(exact)
    assert np.count_nonzero(np.abs(bad.t_events - exact[0]) < 1e-9) > 1  # the first root found again


# ----------------------------------------------------------------------------- statuses and bad input
def test_missing_library_is_unavailable(monkeypatch):
    b = backends.get("scipy")
    monkeypatch.setattr(type(b), "available", lambda self: False)
    sol = b.solve_event(bouncing_ball(bounces=2), "RK45")
    assert sol.status is Status.UNAVAILABLE and "pip install" in sol.message
    recs = event_library_records("scipy", quick=True)
    assert [r.verdict for r in recs] == ["unavailable"]


def test_backend_without_events_is_refused_by_name():
    class NoEvents(Backend):
        name = "noevents"

        def capabilities(self):  # pragma: no cover - not reached
            raise AssertionError

        def _solve(self, *a):  # pragma: no cover - not reached
            raise AssertionError

    assert _event_driver.event_methods(NoEvents()) == []
    with pytest.raises(ValueError, match="noevents locates no events"):
        NoEvents().solve_event(bouncing_ball(bounces=2), "RK45")


def test_bad_arguments_raise_naming_them():
    b = backends.get("scipy")
    ep = bouncing_ball(bounces=2)
    with pytest.raises(ValueError, match="did you mean 'RK45'"):
        b.solve_event(ep, "RK54")
    with pytest.raises(ValueError, match="rtol=-1"):
        b.solve_event(ep, "RK45", rtol=-1)
    with pytest.raises(ValueError, match="unknown event option 'dt'"):
        b.solve_event(ep, "RK45", dt=0.1)
    with pytest.raises(TypeError, match="EventProblem"):
        b.solve_event(ep.problem, "RK45")
    with pytest.raises(ValueError, match="no event gradient modes"):
        b.event_gradient(ep, "RK45", "backprop")


def test_a_non_finite_jump_is_a_status():
    import dataclasses

    from odeverify.problems.events import Jump

    ep = bouncing_ball(bounces=2)
    bad = dataclasses.replace(ep, jump=Jump(lambda xp, t, y, p: y * float("nan"), name="broken"))
    sol = backends.get("scipy").solve_event(bad, "RK45")
    assert sol.status is Status.NONFINITE and "broken" in sol.message and len(sol.t_events) == 1


def test_match_events_pairs_nearest_within_window():
    m = match_events(np.array([0.1, 0.52, 0.9]), np.array([0.5, 1.0]), 0.05)
    assert m == {"missed": [1.0], "extra": [0.1, 0.9], "errors": [pytest.approx(0.02)]}


# ----------------------------------------------------------------------------- gradients
@needs_torchdiffeq
@pytest.mark.slow
def test_torchdiffeq_event_gradient_ball_passes_and_event_parameters_get_none():
    from odeverify.problems.events import plane_crossing as pc

    ok = event_time_gradient(bouncing_ball(bounces=2), "dopri5", "backprop", backend="torchdiffeq")
    assert ok.verdict == "pass", ok.message
    # the plane's offset and angle live in the event function: torchdiffeq 0.2.5 gives them no
    # gradient (issue #208), so dt*/d offset is 0 against -0.55
    bad = event_time_gradient(pc(terminal=True, direction=-1, name="plane_crossing_terminal"), "dopri5", "adjoint",
                              backend="torchdiffeq")
    assert bad.verdict == "fail" and "offset: 0 vs" in bad.message


@needs_diffrax
@pytest.mark.slow
def test_diffrax_event_gradient_through_the_root_finder():
    r = event_time_gradient(plane_crossing(terminal=True, direction=-1, name="plane_crossing_terminal"), "Tsit5",
                            "recursive_checkpoint", backend="diffrax")
    assert r.verdict == "pass", r.message


@needs_diffrax
@pytest.mark.slow
def test_diffrax_newton_walks_off_a_non_monotone_step():
    # Dopri8 at rtol 1e-3 takes steps of ~1.3 on the rotation (w = 2): on the step [2.40, 3.69]
    # g rises through zero and falls to 0.28 at its end, where diffrax starts optx.Newton (y0 =
    # the step's end); Newton walks away from the root and stops at its max_steps
    r = event_location(plane_crossing(direction=1, name="plane_crossing_up"), "Dopri8", backend="diffrax",
                       tolerances=(1e-3,))
    assert r.verdict == "fail" and "maximum number of steps was reached in the nonlinear solver" in r.message


@pytest.mark.slow
def test_reference_event_gradient_discrete():
    r = event_time_gradient(plane_crossing(terminal=True, direction=-1, name="plane_crossing_terminal"), "dopri5",
                            "discrete", backend="reference")
    assert r.verdict == "pass", r.message


# ----------------------------------------------------------------------------- whole runs (slow)
@pytest.mark.slow
@pytest.mark.parametrize("backend", ["reference", "scipy", "torchdiffeq", "diffrax"])
def test_library_records_quick_run(backend):
    if not _have(backend):
        pytest.skip(f"{backend} is not installed")
    recs = event_library_records(backend, quick=True)
    assert recs and all(r.backend == backends.get(backend).name for r in recs)
    by = {(r.property, r.problem): r for r in recs}
    assert by[("event_location", "bouncing_ball")].verdict == "pass"
    # two roots inside one step: only the reference samples the dense output inside the step
    two = by[("event_grazing", "graze_two_roots_one_step")]
    assert two.verdict == ("pass" if backend == "reference" else "fail"), two.message


@needs_torchdiffeq
@pytest.mark.slow
def test_torchdiffeq_restarts_need_the_guard():
    # non-terminal crossings: torchdiffeq stops at each and is restarted; its bisection leaves
    # the root on the near side in some of them, and without the guard that root is found again
    ep = plane_crossing()
    bad = backends.get("torchdiffeq").solve_event(ep, "dopri5", rtol=1e-4, atol=1e-6, redetect_guard=False)
    good = backends.get("torchdiffeq").solve_event(ep, "dopri5", rtol=1e-4, atol=1e-6)
    assert len(good.t_events) == 7 and not good.dropped
    assert len(bad.t_events) > 7


# ----------------------------------------------------------------------------- expected deviations
def _event_entries(backend: str) -> list:
    from odeverify import expectations

    # the event_count entries of problems/events' conventions are tests/test_events*.py's to check
    return [e for e in expectations.load() if e.property.startswith("event_") and e.property != "event_count"
            and e.backend == backend]


def _records_for(backend: str, method: str) -> list:
    """The event records an entry can excuse: event_grazing on every grazing case, the family's
    event_count on them, and the gradients (first method)."""
    from odeverify import expectations
    from odeverify.properties import events as P

    recs = event_library_records(backend, methods=[method], parts=("grazing", "gradient"))
    recs += [P.event_count(ep, method, backend=backend) for ep in grazing_problems().values()]
    return [expectations.apply(r) for r in recs]


def _assert_entries_excuse(backend: str, method: str) -> None:
    records = _records_for(backend, method)
    for e in _event_entries(backend):
        hits = [r for r in records if e.matches(r) and r.verdict == "deviation"]
        if e.property.endswith("gradient") and not any(r.property == "event_gradient" for r in records):
            hits = hits or [r for r in records if r.property == "event_time_gradient" and e.matches(r)]
        assert hits, f"expected failure {e} excuses no failing record: remove it or fix the pattern"


def test_scipy_event_entries_still_excuse_a_failure():
    _assert_entries_excuse("scipy", "RK45")


@needs_torchdiffeq
@pytest.mark.slow
def test_torchdiffeq_event_entries_still_excuse_a_failure():
    _assert_entries_excuse("torchdiffeq", "dopri5")


@needs_diffrax
@pytest.mark.slow
def test_diffrax_event_entries_still_excuse_a_failure():
    _assert_entries_excuse("diffrax", "Tsit5")
