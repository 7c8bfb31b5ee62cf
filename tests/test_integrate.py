"""The time loop: adaptive and fixed stepping, dense output, batches, errors and failure statuses."""
from __future__ import annotations

import math

import numpy as np
import pytest

import odeverify
from odeverify import PIController, Status, solve
from odeverify.problems import PROBLEMS
from odeverify.metrics import as_numpy


def decay(t, y):
    return -y


def test_adaptive_solution_is_accurate_and_shaped(xp):
    y0 = xp.asarray([1.0, 2.0], dtype=xp.float64)
    sol = solve(decay, y0, (0.0, 2.0), method="dopri5", rtol=1e-8, atol=1e-10)
    assert sol.status is Status.SUCCESS
    assert tuple(sol.ys.shape) == (2, 2)
    assert sol.ts.tolist() == [0.0, 2.0]
    got = as_numpy(sol.ys[-1, ...])
    np.testing.assert_allclose(got, np.array([1.0, 2.0]) * math.exp(-2.0), rtol=1e-7)
    # FSAL dopri5: 1 initial + 1 for the initial-step heuristic + 6 per attempted step
    assert sol.stats.nfev == 2 + 6 * (sol.stats.accepted + sol.stats.rejected)


def test_dense_output_serves_many_times_from_one_solve():
    p = PROBLEMS.get("warped_oscillatory")
    f = p.vector_field(np)
    y0 = np.asarray(p.y0)
    t_eval = [0.0, 0.2, 0.5, 0.93, 1.7, 3.0]
    sol = solve(f, y0, p.t_span, method="dopri5", t_eval=t_eval, rtol=1e-9, atol=1e-12)
    plain = solve(f, y0, p.t_span, method="dopri5", rtol=1e-9, atol=1e-12)
    # the interpolant is free for dopri5: same work with or without output times
    assert sol.stats.nfev == plain.stats.nfev
    exact = p.exact(np.asarray(t_eval))
    err = np.max(np.abs(sol.ys - exact)) / np.max(np.abs(exact))
    assert err < 1e-7, f"dense-output error={err:.2e}, but should be < 1e-7 at rtol 1e-9"
    np.testing.assert_array_equal(sol.ys[-1], plain.ys[-1])


def test_dop853_dense_output_costs_three_extra_evaluations_per_step_with_output():
    p = PROBLEMS.get("warped_oscillatory")
    f = p.vector_field(np)
    y0 = np.asarray(p.y0)
    plain = solve(f, y0, p.t_span, method="dop853", rtol=1e-9, atol=1e-12)
    one = solve(f, y0, p.t_span, method="dop853", t_eval=[0.0, 1.2345, 3.0], rtol=1e-9, atol=1e-12)
    assert one.stats.nfev == plain.stats.nfev + 3
    exact = p.exact(np.asarray([1.2345]))[0]
    assert np.max(np.abs(one.ys[1] - exact)) < 1e-8


@pytest.mark.parametrize("method", ["rk4", "euler", "bosh3"])
def test_hermite_or_dense_output_is_consistent_with_fixed_grid(method):
    p = PROBLEMS.get("warped_real")
    f = p.vector_field(np)
    # output times on the grid are the grid values themselves
    grid = np.linspace(0.0, 2.0, 9)
    a = solve(f, np.asarray(p.y0), p.t_span, method=method, n_steps=8, t_eval=grid)
    b = solve(f, np.asarray(p.y0), p.t_span, method=method, n_steps=8)
    np.testing.assert_array_equal(a.ys[-1], b.ys[-1])
    assert a.stats.accepted == 8


def test_backward_integration_returns_to_start():
    p = PROBLEMS.get("warped_oscillatory")
    f = p.vector_field(np)
    y1 = p.exact(np.asarray([3.0]))[0]
    sol = solve(f, y1, (3.0, 0.0), method="tsit5", t_eval=[3.0, 1.5, 0.0], rtol=1e-10, atol=1e-12)
    assert sol.success
    exact = p.exact(np.asarray([3.0, 1.5, 0.0]))
    np.testing.assert_allclose(sol.ys, exact, atol=1e-8)


def test_fixed_step_dt_lands_on_t1():
    sol = solve(decay, np.asarray([1.0]), (0.0, 1.0), method="rk4", dt=0.3)
    assert sol.stats.accepted == 4  # 0.3, 0.6, 0.9, 1.0
    assert sol.t_final == 1.0
    np.testing.assert_allclose(sol.ys[-1], [math.exp(-1.0)], rtol=1e-4)


def test_per_sample_batch_matches_individual_solves():
    p = PROBLEMS.get("mlp_tanh_2x16")
    f = p.vector_field(np)
    rng = np.random.default_rng(0)
    y0 = rng.standard_normal((5, 2)) * np.array([[0.1], [1.0], [3.0], [0.5], [2.0]])
    sol = solve(f, y0, (0.0, 1.0), method="dopri5", rtol=1e-7, atol=1e-9, batch="per-sample", t_eval=[0, 0.37, 1])
    for i in range(5):
        one = solve(f, y0[i], (0.0, 1.0), method="dopri5", rtol=1e-7, atol=1e-9, t_eval=[0, 0.37, 1])
        assert sol.stats.sample_accepted[i] == one.stats.accepted, f"sample {i}"
        assert sol.stats.sample_rejected[i] == one.stats.rejected, f"sample {i}"
        np.testing.assert_allclose(sol.ys[:, i], one.ys, rtol=1e-12, atol=1e-14)


def test_shared_batch_takes_at_least_the_hardest_members_steps():
    p = PROBLEMS.get("mlp_tanh_2x16")
    f = p.vector_field(np)
    y0 = np.asarray([[0.1, 0.2], [3.0, -2.0]])
    shared = solve(f, y0, (0.0, 1.0), method="dopri5", rtol=1e-7, atol=1e-9)
    alone = [solve(f, y0[i], (0.0, 1.0), method="dopri5", rtol=1e-7, atol=1e-9).stats.accepted for i in range(2)]
    assert shared.success
    assert shared.stats.accepted >= max(alone) - 1


def test_float32_keeps_dtype(xp):
    y0 = xp.asarray([1.0, 2.0], dtype=xp.float32)
    sol = solve(decay, y0, (0.0, 1.0), method="dopri5", rtol=1e-5, atol=1e-6)
    assert sol.ys.dtype == xp.float32
    np.testing.assert_allclose(as_numpy(sol.ys[-1, ...]), np.array([1.0, 2.0]) * math.exp(-1.0), rtol=1e-4)


# --------------------------------------------------------------------------- failures become statuses
def blowup(t, y):
    with np.errstate(over="ignore", invalid="ignore"):
        return y * y


def test_blow_up_returns_status_and_partial_solution():
    sol = solve(blowup, np.asarray([1.0]), (0.0, 2.0), method="dopri5", t_eval=[0.0, 0.5, 2.0])
    assert sol.status in (Status.DT_UNDERFLOW, Status.NONFINITE)
    assert not sol.success
    np.testing.assert_allclose(sol.ys[1], [2.0], rtol=1e-5)  # y = 1/(1-t)
    assert np.isnan(sol.ys[2]).all()
    # the discrete solution's singularity sits near the true one at t = 1
    assert 0.99 < sol.t_final < 1.01
    assert sol.stats.nfev > 0


def test_max_steps_stops_the_solve():
    sol = solve(decay, np.asarray([1.0]), (0.0, 100.0), method="rk4", dt=0.01, max_steps=50)
    assert sol.status is Status.MAX_STEPS
    assert sol.stats.accepted == 50
    assert sol.t_final == pytest.approx(0.5)


def test_dtmin_gives_underflow_status():
    sol = solve(blowup, np.asarray([1.0]), (0.0, 2.0), method="bosh3", dtmin=1e-3)
    assert sol.status is Status.DT_UNDERFLOW


def test_nonfinite_fixed_step_status():
    sol = solve(blowup, np.asarray([1.0]), (0.0, 2.0), method="euler", n_steps=2000)
    assert sol.status is Status.NONFINITE


# --------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(y0=np.asarray([np.nan])), ValueError, "y0 contains non-finite"),
        (dict(y0=np.asarray([1, 2])), TypeError, "y0 has dtype"),
        (dict(y0=np.ones((2, 2, 2))), ValueError, r"y0 has shape \(2, 2, 2\)"),
        (dict(t_span=(0.0, np.inf)), ValueError, r"t_span\[1\]=inf"),
        (dict(t_span=(1.0, 1.0)), ValueError, "zero length"),
        (dict(t_eval=[0.0, 0.5, 0.2, 1.0]), ValueError, "strictly increasing"),
        (dict(t_eval=[0.0, 1.5]), ValueError, "outside t_span"),
        (dict(rtol=0.0), ValueError, "rtol=0.0, but it must be finite and > 0"),
        (dict(atol=np.asarray([1e-6, -1.0])), ValueError, "atol="),
        (dict(method="dopri"), ValueError, "did you mean 'dopri5'"),
        (dict(method="rk4"), ValueError, "needs a fixed step: pass dt"),
        (dict(dt=-0.1), ValueError, r"dt=-0.1, but it must be > 0"),
        (dict(n_steps=0), ValueError, "n_steps=0"),
        (dict(batch="each"), ValueError, "batch='each'"),
        (dict(max_steps=0), ValueError, "max_steps=0"),
        (dict(first_step=-1.0), ValueError, "first_step=-1.0"),
    ],
)
def test_bad_input_names_the_parameter(kwargs, exc, match):
    args = dict(y0=np.asarray([1.0, 2.0]), t_span=(0.0, 1.0))
    args.update(kwargs)
    y0, t_span = args.pop("y0"), args.pop("t_span")
    with pytest.raises(exc, match=match):
        solve(decay, y0, t_span, **args)


def test_unknown_method_lists_the_choices():
    with pytest.raises(ValueError, match="Choices: .*dopri5.*rk4"):
        solve(decay, np.asarray([1.0]), (0.0, 1.0), method="no-such-method")


def test_vector_field_with_wrong_shape_or_dtype():
    with pytest.raises(ValueError, match=r"returned shape \(3,\), but the state has shape \(2,\)"):
        solve(lambda t, y: np.zeros(3), np.asarray([1.0, 2.0]), (0.0, 1.0))
    with pytest.raises(TypeError, match="returned dtype float32"):
        solve(lambda t, y: np.zeros(2, dtype=np.float32), np.asarray([1.0, 2.0]), (0.0, 1.0))


def test_controller_validation_and_behaviour():
    with pytest.raises(ValueError, match="safety=1.5"):
        PIController(safety=1.5)
    with pytest.raises(ValueError, match="factor_min=2"):
        PIController(factor_min=2)
    c = PIController()
    st = c.init(())
    acc, fac, st = c(np.asarray(0.5), 5, st)
    assert bool(acc) and float(fac) == pytest.approx(0.9 * 0.5 ** (-1 / 5))
    acc, fac, st = c(np.asarray(4.0), 5, st)
    assert not bool(acc) and float(fac) < 1
    acc, fac, st = c(np.asarray(1e-6), 5, st)
    assert bool(acc) and float(fac) <= 1.0, "no growth straight after a rejection"
    acc, fac, st = c(np.asarray(np.nan), 5, st)
    assert not bool(acc) and float(fac) == c.factor_min


def test_pi_controller_uses_previous_error():
    c = PIController.gustafsson()
    st = c.init(())
    _, f1, st = c(np.asarray(0.5), 5, st)
    _, f2, _ = c(np.asarray(0.5), 5, st)
    assert float(f2) != float(f1)  # the P term sees the previous error
    sol = solve(decay, np.asarray([1.0]), (0.0, 5.0), controller=c, rtol=1e-8, atol=1e-10)
    assert sol.success and abs(sol.ys[-1][0] - math.exp(-5.0)) < 1e-8


def test_public_namespace():
    for name in ("solve", "Solution", "Status", "Stats", "SOLVERS", "TABLEAUS", "PROBLEMS", "PIController"):
        assert hasattr(odeverify, name), name


@pytest.mark.parametrize("returned", [[1.0, 2.0], 1.0], ids=["list", "float"])
def test_vector_field_returning_a_non_array_is_a_named_type_error(returned):
    # not an AttributeError ('list' object has no attribute 'shape') from inside the loop
    with pytest.raises(TypeError, match=rf"the vector field f returned {type(returned).__name__}, expected an array"
                                        r" of the state's library \(numpy\.ndarray\) of shape \(2,\)"):
        solve(lambda t, y: returned, np.zeros(2), (0.0, 1.0))
