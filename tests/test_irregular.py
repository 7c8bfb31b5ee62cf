"""Irregularly sampled series (issue 12): validation, the shipped data, and each property of
properties/irregular.py with a healthy case that passes and a planted fault that fails."""
from __future__ import annotations

import copy

import numpy as np
import pytest

from odeverify import _xp
from odeverify.problems.irregular import (IrregularBatch, check_series, check_times, from_irregular_spec,
                                          irregular_batch, named_batch, read_own_times, spiral_dataset, union_times)
from odeverify.properties import irregular as P
from odeverify.solvers import SOLVERS

torch_only = pytest.mark.skipif(not _xp.available("torch"), reason="needs PyTorch")


def small_batch(seed: int = 5) -> IrregularBatch:
    return irregular_batch(samples=3, counts=(12, 5, 8), seed=seed, t_span=(0.0, 4.0))


# ---------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("times, word", [([0.0, 2.0, 1.0], "not sorted"), ([0.0, 1.0, 1.0], "duplicated"),
                                          ([0.0, np.nan], "non-finite"), ([], "non-empty")])
def test_bad_times_name_the_parameter(times, word):
    with pytest.raises(ValueError, match=word) as info:
        check_times(times, name="obs_times")
    assert "obs_times" in str(info.value)


def test_data_and_times_of_different_lengths():
    with pytest.raises(ValueError, match=r"values has shape \(2, 2\), but times has 3 times"):
        check_series([0.1, 0.2, 0.3], np.zeros((2, 2)))


def test_times_outside_the_span_and_batch_shape():
    b = small_batch()
    with pytest.raises(ValueError, match="outside t_span"):
        IrregularBatch(name="x", problem=b.problem, y0s=b.y0s, times=(b.times[0], b.times[1], np.array([5.0])))
    with pytest.raises(ValueError, match="y0s has shape"):
        IrregularBatch(name="x", problem=b.problem, y0s=b.y0s[:2], times=b.times)


# ---------------------------------------------------------------------------- data
def test_spiral_dataset_is_the_shipped_data():
    """The generator is the shipped data set: its first values are pinned (a change to the
    generator changes the data every figure in docs/irregular.md was measured on)."""
    d = spiral_dataset()
    assert [s.times.size for s in d] == [20, 11, 23, 18, 22, 15, 15, 13]
    assert np.all(np.diff(d[0].times) > 0) and d[0].values.shape == (20, 2)
    assert spiral_dataset()[3].values.tobytes() == d[3].values.tobytes()
    np.testing.assert_allclose(d[0].times[:2], spiral_dataset()[0].times[:2], rtol=0, atol=0)


def test_batch_spec_rebuilds_exactly_and_union_reads_back():
    b = named_batch("decay_8x30")
    again = from_irregular_spec(b.spec)
    assert all(np.array_equal(x, y) for x, y in zip(b.times, again.times)) and np.array_equal(b.y0s, again.y0s)
    assert b.counts == [30, 5, 12, 30, 2, 18, 25, 9]
    union, pos = union_times(b.times)
    assert all(np.array_equal(union[p], t) for p, t in zip(pos, b.times))
    assert min(np.min(np.diff(t)) for t in b.times) < 1e-4  # near-duplicates are drawn


def test_closed_form_matches_the_problems_own():
    """The batch's closed form (SciPy's expm on each y0) against the problem's own (V exp(B t)
    V^-1 y0) from the problem's y0, and a sample's problem carries its sample's closed form."""
    b = small_batch()
    p = b.problem
    single = IrregularBatch(name="one", problem=p, y0s=np.asarray([p.y0]), times=(b.times[0],))
    np.testing.assert_allclose(single.exact(0), p.exact(b.times[0]), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(b.sample_problem(1).exact(b.times[1]), b.exact(1), rtol=0, atol=0)


# ---------------------------------------------------------------------------- union vs per sample
def test_union_times_cost_healthy():
    r = P.union_times_cost(small_batch(), "dopri5")
    assert r.verdict == "pass", r.message
    assert r.measured >= 1.0 - 1e-12  # the shared step never costs less in sample-evaluations here
    assert r.details["union_times"] == 25


def test_union_reading_the_wrong_samples_times_fails():
    def wrong(ys, positions):  # sample b reads sample (b + 1)'s column at its own times
        return [ys[np.asarray(p), (b + 1) % ys.shape[1]] for b, p in enumerate(positions)]

    r = P.union_times_cost(small_batch(), "dopri5", reader=wrong)
    assert r.verdict == "fail" and "union solve's sample" in r.message
    assert read_own_times(np.zeros((3, 2, 1)), [np.array([0]), np.array([1, 2])])[1].shape == (2, 1)


# ---------------------------------------------------------------------------- dense vs stepped
needs_tstops = pytest.mark.skipif(not P._has_tstops(), reason="integrate.solve has no tstops=")


@torch_only
@needs_tstops
def test_dense_vs_stepped_healthy():
    r = P.dense_vs_stepped_output(small_batch(), "dopri5", rtols=(1e-3, 1e-6))
    assert r.verdict == "pass", r.message
    loose = r.details["sweep"][0]
    assert loose["stepped"]["nfev"] > loose["dense"]["nfev"]  # landing on every time costs steps


def linear_dense(name: str = "dopri5"):
    """A planted fault: dopri5 whose dense output is linear interpolation (order 1, not 4)."""
    s = copy.copy(SOLVERS.get(name))
    b = np.asarray([float(x) for x in s.tableau.b])
    width = len(s.dense_weights(np.asarray(0.5)))
    s.dense_weights = lambda theta: np.multiply.outer(np.asarray(theta), np.pad(b, (0, width - b.size)))
    return s


@torch_only
@needs_tstops
def test_dense_output_of_the_wrong_order_fails():
    r = P.dense_vs_stepped_output(small_batch(), linear_dense(), rtols=(1e-3, 1e-6))
    assert r.verdict == "fail" and "dense output off" in r.message
    assert not any("stepped output off" in m for m in r.message.split(";"))


# ---------------------------------------------------------------------------- gradients at many times
@torch_only
def test_gradient_at_many_irregular_times_reference():
    b = irregular_batch(samples=1, counts=200, seed=7, t_span=(0.0, 5.0))
    r = P.irregular_gradient_accuracy(b, "dopri5", "backsolve", backend="reference-torch", rtol=1e-7)
    assert r.verdict == "pass", r.message
    assert r.details["times"] == 200


# ---------------------------------------------------------------------------- ODE-RNN
@torch_only
def test_odernn_backsolve_with_the_jump_passes():
    r = P.odernn_adjoint_jumps("backsolve", dt=0.1, hidden=2)
    assert r.verdict == "pass", r.message


@torch_only
def test_odernn_adjoint_without_the_jump_fails():
    r = P.odernn_adjoint_jumps("backsolve", dt=0.1, hidden=2, jump=False)
    assert r.verdict == "fail" and r.measured > 1e-2


@torch_only
@pytest.mark.slow
def test_odernn_discrete_matches_central_differences():
    r = P.odernn_adjoint_jumps("discrete", dt=0.1)
    assert r.verdict == "pass", r.message
    assert r.measured < 1e-8


# ---------------------------------------------------------------------------- latent ODE
@torch_only
@pytest.mark.slow
@pytest.mark.parametrize("backend, modes", [("reference-torch", ("discrete", "backsolve", "interpolated")),
                                            ("torchdiffeq", ("backprop", "adjoint")),
                                            ("diffrax", ("recursive_checkpoint", "backsolve"))])
def test_latent_ode_gradient_agrees_across_modes_and_libraries(backend, modes):
    from odeverify import backends
    if not backends.get(backend).available():
        pytest.skip(f"{backend} is not installed")
    method = "Dopri5" if backend == "diffrax" else "dopri5"
    for mode in modes:
        r = P.latent_ode_gradient(method, mode, backend=backend)
        assert r.verdict == "pass", r.message


@torch_only
@pytest.mark.slow
def test_latent_ode_a_few_steps_decrease_the_loss():
    params, setup = P.default_latent_setup(3)
    losses = []
    for _ in range(4):
        value, g, _ = P.latent_ode_value_and_grad(params, setup, rtol=1e-6, atol=1e-8)
        losses.append(value)
        norm = np.sqrt(sum(float(np.sum(v * v)) for v in g.values()))
        params = {k: v - 0.05 * g[k] / norm for k, v in params.items()}
    assert all(b < a for a, b in zip(losses, losses[1:])), losses


@torch_only
def test_latent_ode_planted_gradient_fault_fails():
    """The chain rule through the decoder dropped (dL/dD from u(0) = [z0, D z0 + e] left out):
    the directional derivatives no longer match the oracle."""
    params, setup = P.default_latent_setup(1)
    _, g, _ = P.latent_ode_value_and_grad(params, setup, rtol=1e-8, atol=1e-10)
    names = list(params)
    V = np.eye(sum(v.size for v in params.values()))[[_offset(params, "D")]]
    fd, err = P.latent_directional_oracle(params, setup, V)
    good = V @ np.concatenate([g[k].ravel() for k in names])
    assert abs(good[0] - fd[0]) <= 1e-6 * abs(fd[0]) + 10 * err[0]
    z0_part = _decoder_initial_term(params, setup)
    bad = good - z0_part
    assert abs(bad[0] - fd[0]) > 1e-3 * abs(fd[0])


def _offset(params, name):
    off = 0
    for k, v in params.items():
        if k == name:
            return off
        off += v.size
    raise KeyError(name)


def _decoder_initial_term(params, setup):
    """The first entry of dL/dD's part that flows through u(0) = [z0, D z0 + e]: (dL/dx(0)) z0^T."""
    from odeverify.backends import get
    from odeverify.gradients import Loss
    from odeverify.problems.irregular import encode, latent_loss_spec, latent_problem
    xp = _xp.get_namespace("numpy")
    s = setup.data[0]
    mu, lv = encode(xp, params, s.times, s.values)
    z0 = mu + np.exp(lv / 2) * setup.eps[0, :2]
    prob = latent_problem(params, z0, s.times[-1])
    w, q = latent_loss_spec(s, setup.sigma, 2)
    res = get("reference-torch").gradient(prob, "dopri5", "discrete", Loss(t_eval=tuple(s.times), weights=w,
                                                                               quadratic=q), rtol=1e-8, atol=1e-10)
    return np.outer(res.grad_y0[2:], z0).ravel()[:1]


# ---------------------------------------------------------------------------- strategies
from hypothesis import given  # noqa: E402

from odeverify.strategies import irregular_problem_specs, irregular_times  # noqa: E402


@given(irregular_times((0.0, 2.0)))
def test_drawn_times_are_valid_observation_times(times):
    t = check_times(times, t_span=(0.0, 2.0))  # strictly increasing, inside the span: or it raises
    assert t[0] > 0.0 and t[-1] <= 2.0


@given(irregular_problem_specs(max_samples=3, max_count=10))
def test_drawn_specs_rebuild_their_times(spec):
    b = from_irregular_spec(spec)
    assert b.counts == spec["counts"] and [t.tolist() for t in b.times] == spec["times"]
