"""Events and jumps (issue 12): the event specification, the reference's event location in the
one loop, the restart driver, and the event properties, each with a healthy case that passes
and a planted fault that must fail."""
from __future__ import annotations

import math

import numpy as np
import pytest

import odeverify.integrate as integrate
from odeverify.integrate import solve, solve_with_jumps
from odeverify.problems.events import (Event, EventProblem, Jump, ball_times, ball_zeno_time, bouncing_ball,
                                       event_from_spec, grazing_problems, plane_crossing, plane_crossing_times)
from odeverify.properties.events import event_count, event_time_order
from odeverify.solution import Status

GRAZING = grazing_problems()


def _g_height(xp, t, y, p):
    return y[..., 0]


# ----------------------------------------------------------------------------- the specification
def test_event_rejects_bad_direction_terminal_and_g():
    with pytest.raises(ValueError, match="direction=2"):
        Event(_g_height, direction=2, name="h")
    with pytest.raises(ValueError, match="terminal=0"):
        Event(_g_height, terminal=0, name="h")
    with pytest.raises(TypeError, match="terminal='yes'"):
        Event(_g_height, terminal="yes", name="h")
    with pytest.raises(TypeError, match="event g=3"):
        Event(3)
    with pytest.raises(TypeError, match="jump map=None"):
        Jump(None)


def test_event_function_of_the_wrong_shape_is_named():
    ball = bouncing_ball(bounces=2)
    whole_state = Event(lambda xp, t, y, p: y, name="whole_state")
    with pytest.raises(ValueError, match=r"event function 'whole_state' returned shape \(2,\).*must return \(\)"):
        EventProblem(ball.problem, (whole_state,))
    with pytest.raises(ValueError, match="needs at least one Event"):
        EventProblem(ball.problem, ())
    with pytest.raises(ValueError, match="jump 'j' names events \\['nope'\\]"):
        EventProblem(ball.problem, ball.events, jump=Jump(lambda xp, t, y, p: y, name="j", events=("nope",)))


def test_solve_refuses_bad_events_by_name():
    f = bouncing_ball().problem.vector_field(np)
    with pytest.raises(ValueError, match="single state y0 of shape"):
        solve(f, np.ones((3, 2)), (0.0, 1.0), events=[("h", lambda t, y: y[..., 0], -1, True)])
    with pytest.raises(ValueError, match=r"direction=5"):
        solve(f, np.ones(2), (0.0, 1.0), events=[("h", lambda t, y: y[0], 5, True)])
    with pytest.raises(ValueError, match="returned shape \\(2,\\)"):
        solve(f, np.ones(2), (0.0, 1.0), events=[("whole", lambda t, y: y, 0, False)])


def test_ball_closed_form_is_the_textbook_one():
    # dropped from h0 = g/2: first impact at t = 1, then flights 2 e^k u / g with u = g
    ts = ball_times(4.905, 9.81, 0.5, 0.0, 3)
    assert ts == pytest.approx([1.0, 2.0, 2.5], rel=1e-15)
    assert ball_zeno_time(4.905, 9.81, 0.5) == pytest.approx(3.0, rel=1e-15)
    with pytest.raises(ValueError, match="Zeno time"):
        bouncing_ball(height=4.905, restitution=0.5, horizon=3.5)
    with pytest.raises(ValueError, match="restitution=1.0"):
        bouncing_ball(restitution=1.0)


def test_closed_form_gradients_agree_with_differences_of_the_closed_form():
    # the last: explore's case where a secant restarted from the float root diverged in mpmath
    spec = {"kind": "event_plane", "params": {"angle": 2.0, "decay": 0.258, "direction": 0, "horizon": 1.0,
                                              "offset": 0.0, "omega": 2.5, "radius": 1.0}}
    for ep in (bouncing_ball(bounces=3), plane_crossing(horizon=4.0), event_from_spec(spec)):
        grad = ep.time_gradient(ep.theta)
        for j, key in enumerate(ep.theta):
            h = 1e-6 * max(1.0, abs(ep.theta[key]))
            up = ep.exact({**ep.theta, key: ep.theta[key] + h}).times
            dn = ep.exact({**ep.theta, key: ep.theta[key] - h}).times
            assert np.allclose((up - dn) / (2 * h), grad[:, j], rtol=1e-6, atol=1e-8), key


def test_plane_roots_are_zeros_of_the_closed_form():
    ep = plane_crossing()
    times = np.asarray([float(r) for r in plane_crossing_times(ep.theta, 12.0)])
    c = np.array([math.cos(0.3), math.sin(0.3)])
    assert np.max(np.abs(ep.problem.exact(times) @ c - 0.2)) < 1e-15
    assert len(times) == 7


def test_spec_round_trip():
    ep = event_from_spec('{"kind": "event_ball", "params": {"height": 2.0, "restitution": 0.5, "bounces": 3}}')
    again = event_from_spec(ep.spec)
    assert again.spec == ep.spec and np.array_equal(again.exact_events().times, ep.exact_events().times)
    with pytest.raises(ValueError, match="kind='event_nope'"):
        event_from_spec({"kind": "event_nope"})


# ----------------------------------------------------------------------------- location, grazing
@pytest.mark.parametrize("case", sorted(GRAZING))
@pytest.mark.parametrize("method", ["rk4", "dopri5", "dop853", "tsit5"])
def test_grazing_cases_follow_the_convention(case, method):
    rec = event_count(GRAZING[case], method)
    assert rec.verdict == "pass", rec.describe()


def test_missing_interior_samples_miss_two_roots_in_one_step(monkeypatch):
    # planted fault: a detector that compares only the step's ends (EVENT_SAMPLES = 1)
    monkeypatch.setattr(integrate, "EVENT_SAMPLES", 1)
    rec = event_count(GRAZING["two_roots_one_step"], "rk4")
    assert rec.verdict == "fail" and rec.measured == 0.0, rec.describe()


def test_bouncing_ball_every_impact(monkeypatch):
    ep = bouncing_ball()
    rec = event_count(ep, "dopri5")
    assert rec.verdict == "pass" and rec.measured == 12, rec.describe()
    # the impacts are exact to round-off: the flight is a parabola every RK method of order >= 2 integrates
    assert rec.details["max_error"] < 1e-12


def test_restart_on_the_near_side_doubles_events(monkeypatch):
    ep = plane_crossing(restart=True, name="plane_restart")
    assert event_count(ep, "dopri5").verdict == "pass"
    original = integrate.bracket_root

    def near_side(fun, a, b, fa, fb):
        # planted fault: the root finder hands back the bracket's end BEFORE the crossing
        t, g = original(fun, a, b, fa, fb)
        tn = np.nextafter(np.nextafter(t, a), a)
        return (tn if (tn - a) * (b - a) >= 0 else a), g

    monkeypatch.setattr(integrate, "bracket_root", near_side)
    rec = event_count(ep, "dopri5")
    assert rec.verdict == "fail", rec.describe()


def test_restarts_keep_every_crossing_once_at_a_loose_tolerance():
    # bosh3 at 10^-6.5 doubled the first restart's event while the IFT correction's value (an ulp
    # of t*) moved the restart state back across the line; the correction now carries only the
    # derivative, and the values are the located root's
    rec = event_count(plane_crossing(restart=True, name="plane_restart"), "bosh3")
    assert rec.verdict == "pass" and rec.measured == 7, rec.describe()


def test_terminal_event_ends_the_solve_and_outputs_stop_there():
    ep = plane_crossing(terminal=True, direction=-1, name="plane_terminal")
    sol = solve_with_jumps(ep, "dopri5", t_eval=np.linspace(0.0, 12.0, 25), rtol=1e-10, atol=1e-12)
    t1 = ep.exact_events().times[0]
    assert sol.status is Status.EVENT and sol.success
    assert abs(sol.t_final - t1) < 1e-9 and len(sol.t_events) == 1
    past = sol.ts > sol.t_final
    assert np.all(np.isnan(sol.ys[past])) and np.all(np.isfinite(sol.ys[~past]))


def test_nonfinite_jump_is_a_status_naming_jump_and_time():
    ball = bouncing_ball(bounces=3)
    bad = EventProblem(ball.problem, ball.events, jump=Jump(lambda xp, t, y, p: y / 0.0 * 0.0, name="broken"),
                       max_events=5)
    sol = solve_with_jumps(bad, "dopri5")
    assert sol.status is Status.NONFINITE
    assert "'broken'" in sol.message and "'impact'" in sol.message and f"{ball.exact_events().times[0]:.6f}"[:6] \
        in sol.message


def test_max_events_stops_the_driver():
    sol = solve_with_jumps(bouncing_ball(), "dopri5", max_events=3)
    assert len(sol.t_events) == 3 and sol.status is Status.EVENT and "max_events=3" in sol.message


# ----------------------------------------------------------------------------- order
class _LinearInterpolant:
    """Planted fault: the root located on the chord between the step's ends."""

    def __init__(self, solver, f, tc, y0, y1, h, res, k1):
        self.y0, self.y1, self.k_end = y0, y1, res.fsal

    def __call__(self, theta):
        return self.y0 + float(theta) * (self.y1 - self.y0)


def test_event_time_converges_at_the_dense_order_and_not_on_a_chord(monkeypatch):
    ep = plane_crossing()
    rec = event_time_order(ep, "heun")
    assert rec.verdict == "pass" and rec.expected == 2.0, rec.describe()
    monkeypatch.setattr(integrate, "StepInterpolant", _LinearInterpolant)
    bad = event_time_order(ep, "dopri5")
    assert bad.verdict == "fail" and bad.measured < 2.5, bad.describe()
