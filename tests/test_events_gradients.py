"""Gradients through events (issue 12): the discrete mode (AD through the loop with the
implicit-function-theorem correction) and the continuous adjoint with its jump condition,
against the closed form; each with the planted fault that must fail."""
from __future__ import annotations

import math

import numpy as np
import pytest

import odeverify.integrate as integrate
from odeverify import _xp
from odeverify.problems.events import bouncing_ball, plane_crossing
from odeverify.properties.events import event_gradient

pytestmark = pytest.mark.skipif(not _xp.available("torch"), reason="event gradients run on PyTorch")

BALL = bouncing_ball(bounces=2, name="ball2")
PLANE = plane_crossing(horizon=3.0, name="plane3")


@pytest.mark.parametrize("mode", ["discrete", "adjoint"])
def test_gradient_through_bounces_matches_the_closed_form(mode):
    rec = event_gradient(BALL, "dopri5", mode)
    assert rec.verdict == "pass", rec.describe()
    # the flights are parabolas, integrated exactly: the gradient is exact to round-off
    assert rec.measured < 1e-11


def test_gradient_through_plane_crossings_matches_the_closed_form():
    rec = event_gradient(PLANE, "dopri5", "discrete")
    assert rec.verdict == "pass", rec.describe()


@pytest.mark.slow
def test_adjoint_through_plane_crossings_matches_the_closed_form():
    rec = event_gradient(PLANE, "dopri5", "adjoint")
    assert rec.verdict == "pass", rec.describe()


def test_dropping_the_implicit_function_term_fails(monkeypatch):
    # planted fault: no Newton correction, so the event times carry no derivative at all
    monkeypatch.setattr(integrate, "_trajectory_slope", lambda *a, **k: math.inf)
    rec = event_gradient(BALL, "dopri5", "discrete")
    assert rec.verdict == "fail", rec.describe()


def test_dropping_the_adjoint_jump_condition_fails():
    # planted fault: a- = J_y^T a+ only, without the event time's shift (f+ - J_y f-) g_y / gdot
    rec = event_gradient(BALL, "dopri5", "adjoint", jump_condition=False)
    assert rec.verdict == "fail", rec.describe()
    assert "restitution" in rec.message or "height" in rec.message or "gravity" in rec.message


def test_unknown_mode_is_named():
    with pytest.raises(ValueError, match="mode='adjont'"):
        event_gradient(BALL, "dopri5", "adjont")


def test_problem_without_parameters_is_skipped():
    from odeverify.problems.events import grazing_problems

    rec = event_gradient(grazing_problems()["two_roots_one_step"], "rk4", "discrete")
    assert rec.verdict == "skip" and rec.measured is None


def test_discrete_gradient_against_differences_of_the_same_computation(monkeypatch):
    """On a fixed step the discrete computation is smooth in theta: AD through it agrees with its
    own central differences; the IFT slope is the field's, not the interpolant's derivative, so on
    the plane the two differ by the dense output's error, which falls with the step."""
    from odeverify.gradients.events import discrete_value_and_grad, fd_value_and_grad

    ad = discrete_value_and_grad(BALL, "rk4", dt=0.05)["grad"]
    fd = fd_value_and_grad(BALL, "rk4", dt=0.05)["grad"]
    assert np.max(np.abs(ad - fd)) < 1e-7 * max(1.0, np.max(np.abs(fd)))
    gaps = []
    for dt in (0.05, 0.0125):
        gaps.append(np.max(np.abs(discrete_value_and_grad(PLANE, "rk4", dt=dt)["grad"]
                                  - fd_value_and_grad(PLANE, "rk4", dt=dt)["grad"])))
    assert gaps[0] / gaps[1] > 32, gaps  # order >= 2.5 in the step (measured 131x for 4x: ~3.5)
    monkeypatch.setattr(integrate, "_trajectory_slope", lambda *a, **k: math.inf)
    bad = discrete_value_and_grad(BALL, "rk4", dt=0.05)["grad"]
    assert np.max(np.abs(bad - fd)) > 1e-2


@pytest.mark.parametrize("mode", ["discrete", "adjoint"])
def test_a_terminal_event_ends_the_loss_there(mode):
    """explore's case: a terminal crossing without a jump ends the solve, so the loss's final state
    is the state at the event, which moves with the event time (the discrete mode had read the
    unreached horizon's NaN row, which carries no graph, and dropped the term)."""
    from odeverify.problems.events import event_from_spec

    ep = event_from_spec({"kind": "event_plane", "params": {
        "angle": 2.0, "decay": 0.0, "direction": 0, "horizon": 1.0, "offset": 0.0, "omega": 1.0, "radius": 1.0,
        "restart": False, "terminal": True}})
    rec = event_gradient(ep, "dopri5", mode)
    assert rec.verdict == "pass", rec.describe()


def test_the_oracle_differentiates_short_flights():
    """explore's case: restitution 0.3 leaves flights shorter than a difference step of the state
    would need (the impact count before the horizon changed inside the stencil, oracle error 0.95
    and a correct discrete gradient, 17.98, graded wrong); complex steps keep the branch."""
    from odeverify.problems.events import event_from_spec

    ep = event_from_spec({"kind": "event_ball", "params": {"bounces": 4, "gravity": 1.0, "height": 0.102,
                                                           "restitution": 0.305, "velocity": 0.0}})
    rec = event_gradient(ep, "dopri5", "discrete")
    assert rec.verdict == "pass" and rec.expected < 1e-7, rec.describe()
