"""``solve(tstops=...)``: steps land on the stops, never cross them, and a field discontinuous
there is evaluated on each step's own side (a piecewise-linear control's derivative)."""
from __future__ import annotations

import numpy as np
import pytest

from odeverify.integrate import solve, stop_times

KNOTS = np.array([0.0, 0.13, 0.4, 0.41, 0.77, 1.0])
VALUES = np.array([0.0, 1.0, -2.0, 0.5, 3.0, 1.0])
SLOPES = np.diff(VALUES) / np.diff(KNOTS)


def slope_field(calls: list | None = None):
    """y' = X'(t) for the piecewise-linear X through (KNOTS, VALUES): y(t) - y(0) = X(t) exactly,
    for any Runge-Kutta method whose steps do not straddle a knot."""
    def f(t, y):
        tt = np.asarray(t, dtype=np.float64)
        if calls is not None:
            calls.append(tt.copy())
        i = np.clip(np.searchsorted(KNOTS, tt, side="right") - 1, 0, SLOPES.size - 1)
        return np.broadcast_to(np.asarray(SLOPES[i])[..., None], y.shape).copy()
    return f


@pytest.mark.parametrize("kw", [dict(method="dopri5", rtol=1e-8, atol=1e-10), dict(method="rk4", n_steps=3),
                                dict(method="bosh3", rtol=1e-6, atol=1e-9)])
def test_piecewise_control_is_integrated_exactly_with_stops(kw):
    t_eval = np.linspace(0.0, 1.0, 9)
    with_stops = solve(slope_field(), np.array([0.0]), (0.0, 1.0), t_eval=t_eval, tstops=KNOTS, **kw)
    assert np.max(np.abs(with_stops.ys[:, 0] - np.interp(t_eval, KNOTS, VALUES))) < 1e-13
    assert set(KNOTS[1:-1]) <= set(with_stops.t_steps.tolist())
    without = solve(slope_field(), np.array([0.0]), (0.0, 1.0), **kw)  # steps straddle the kinks
    assert abs(float(without.ys[-1, 0]) - VALUES[-1]) > 1e3 * abs(float(with_stops.ys[-1, 0]) - VALUES[-1]) + 1e-12


def test_backward_and_per_sample():
    back = solve(slope_field(), np.array([1.0]), (1.0, 0.0), tstops=KNOTS, method="dopri5")
    assert abs(float(back.ys[-1, 0]) - 0.0) < 1e-13
    y0 = np.array([[0.0], [0.5], [1.0]])
    ps = solve(slope_field(), y0, (0.0, 1.0), tstops=KNOTS, method="tsit5", batch="per-sample")
    assert np.max(np.abs(ps.ys[-1, :, 0] - (y0[:, 0] + VALUES[-1]))) < 1e-13


def test_the_field_never_sees_a_stop_from_the_wrong_side():
    """Every evaluation at a time within one ulp of a knot is on a step's own side: the field
    is never called at a knot itself (where its piece would be ambiguous)."""
    calls: list = []
    solve(slope_field(calls), np.array([0.0]), (0.0, 1.0), tstops=KNOTS, method="dopri5", rtol=1e-6)
    times = np.concatenate([np.atleast_1d(c) for c in calls])
    assert not np.any(np.isin(times, KNOTS[1:-1]))
    assert np.any(np.abs(times[:, None] - KNOTS[None, 1:-1]) < 1e-15)  # it does go right up to them


def test_fixed_grid_takes_the_stops_as_boundaries():
    sol = solve(slope_field(), np.array([0.0]), (0.0, 1.0), tstops=[0.4, 0.5001, 2.0], method="euler", n_steps=4)
    # 0.5 gives way to the stop 0.5001 next to it (within 1e-10 of the span it would be dropped;
    # here it is kept), the stop outside the span is ignored
    assert sol.t_steps.tolist() == [0.0, 0.25, 0.4, 0.5, 0.5001, 0.75, 1.0]


def test_stop_times_validation():
    assert stop_times(None, 0.0, 1.0).size == 0
    assert stop_times([1.0, 0.5, 0.5, 0.0, 3.0], 0.0, 1.0).tolist() == [0.5]
    assert stop_times([0.2, 0.7], 1.0, 0.0).tolist() == [0.7, 0.2]
    with pytest.raises(ValueError, match="tstops has shape"):
        stop_times([[0.5]], 0.0, 1.0)
    with pytest.raises(ValueError, match="tstops=.*non-finite"):
        stop_times([0.5, np.nan], 0.0, 1.0)


@pytest.mark.parametrize("method", ["dopri5", "dop853", "bosh3", "radau_iia5", "bdf"])
def test_a_span_of_a_few_subnormals_is_solved(method):
    """Every h * b_j underflows to 0 on a span of 2e-323: the error estimate is zero, not a
    crash (explore's drawn observation times just after t0 found a TypeError)."""
    sol = solve(lambda t, y: -y, np.array([1.0]), (0.0, 2e-323), method=method)
    assert sol.success and float(sol.ys[-1, 0]) == 1.0


def test_a_subnormal_span_is_a_status_for_a_dirk():
    """kvaerno5 recovers its stage derivatives as (Y - base) / (h gamma), which overflows for a
    subnormal h: a NEWTON_FAILED status that says so, never an exception."""
    sol = solve(lambda t, y: -y, np.array([1.0]), (0.0, 2e-323), method="kvaerno5")
    assert sol.success or "non-finite" in sol.message


def test_gradient_modes_stop_at_the_knots(monkeypatch):
    """value_and_grad(tstops=...): the continuous adjoints' backward solves and the replays of
    checkpointing land on the knots of a piecewise-linear control, so their gradient (with
    respect to the data and the field) is that of the exact flow to the tolerance; the planted
    fault, the same modes with the stops dropped, misses the 100 rtol bound (the error control
    alone finds the kinks)."""
    pytest.importorskip("torch")
    import odeverify.gradients as G
    from odeverify.problems import cde
    from odeverify.properties.cde import cde_gradient_accuracy

    p = cde.get("cde_linear_pl")
    for mode in ("backsolve", "checkpoint"):
        rec = cde_gradient_accuracy(p, f"ode:{mode}")
        assert rec.verdict == "pass" and rec.measured < 1e-8, rec.describe()
    real = G.value_and_grad

    def without_stops(*args, tstops=None, **kwargs):
        return real(*args, **kwargs)

    monkeypatch.setattr(G, "value_and_grad", without_stops)
    assert cde_gradient_accuracy(p, "ode:backsolve").verdict == "fail"
    monkeypatch.undo()
    with pytest.raises(ValueError, match="tstops=.*reversible_heun"):
        G.value_and_grad(p.to_problem(), G.Loss.seeded([1.0], p.to_problem().n), mode="reversible_heun",
                         n_steps=8, tstops=p.knots)
