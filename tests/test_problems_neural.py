"""The neural (MLP) vector fields: identical on every array library, seeded, batched,
O(1) dynamics, and cached references that agree with fresh solves."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.integrate import solve_ivp

import odeverify.problems as P
from odeverify import _xp
from odeverify.problems import _reference_data, neural
from odeverify.problems.neural import mlp_batch_y0, mlp_field

MINE = [p for _, p in P.PROBLEMS.items() if p.rhs.__module__ == neural.__name__]
LIBS = ("numpy", "array_api_strict", "torch", "jax")


def ids(problems):
    return [p.name for p in problems]


def eval_on(lib, problem, t, y, dtype="float64"):
    xp = _xp.get_namespace(lib)
    dt = getattr(xp, dtype)
    p = problem.converted_params(xp, dtype=dt)
    yy = xp.asarray(y, dtype=dt)
    out = problem.rhs(xp, xp.asarray(t, dtype=xp.float64), yy, p)
    assert tuple(out.shape) == tuple(yy.shape) and out.dtype == dt
    return np.asarray(_xp.to_numpy(out), dtype=np.float64)


def solve(problem, t1, method="DOP853", rtol=1e-12, atol=1e-14, y0=None):
    y0 = np.asarray(problem.y0 if y0 is None else y0, dtype=np.float64)
    sol = solve_ivp(lambda t, y: eval_on("numpy", problem, t, y), (problem.t_span[0], t1), y0,
                    method=method, rtol=rtol, atol=atol)
    assert sol.status == 0, sol.message
    return sol.y[:, -1]


def test_registered_fields():
    names = {p.name for p in MINE}
    assert {"mlp_tanh_2x16", "mlp_softplus_4x32_t", "mlp_tanh_32x128"} <= names
    big = P.get("mlp_tanh_32x128")
    assert big.n == 32 and big.params["W0"].shape == (128, 32)
    assert big.params["W1"].shape == (128, 128) and big.params["W_out"].shape == (32, 128)
    assert "W2" not in big.params
    for p in MINE:
        assert {"neural", "nonstiff", "has_reference"} <= p.tags and p.citation
    assert "time_dependent" in P.get("mlp_softplus_4x32_t").tags
    assert "autonomous" in P.get("mlp_tanh_2x16").tags


@pytest.mark.parametrize("lib", LIBS)
@pytest.mark.parametrize("problem", MINE, ids=ids(MINE))
def test_rhs_agrees_across_array_libraries(problem, lib):
    if lib in ("torch", "jax"):
        pytest.importorskip(lib)
    rng = np.random.default_rng(3)
    ys = rng.standard_normal((4, problem.n))
    t = np.array([0.0, 0.25, 0.5, 1.0])
    ref = eval_on("numpy", problem, t, ys)
    scale = np.max(np.abs(ref))
    for i in range(len(t)):  # per-sample t: row i is the unbatched call at t[i]
        # (gemm and gemv round differently: agreement to a few ulps, not bits)
        np.testing.assert_allclose(eval_on("numpy", problem, t[i], ys[i]), ref[i], rtol=1e-14,
                                   atol=1e-14 * scale)
    np.testing.assert_allclose(eval_on(lib, problem, t, ys), ref, rtol=1e-14, atol=1e-14 * scale)
    np.testing.assert_allclose(eval_on(lib, problem, t[2], ys[2]), ref[2], rtol=1e-14,
                               atol=1e-14 * scale)
    # float32 keeps float32 and is close to the float64 field
    out32 = eval_on(lib, problem, t, ys, dtype="float32")
    np.testing.assert_allclose(out32, ref, rtol=1e-4, atol=1e-5 * scale)


def test_time_dependence():
    p = P.get("mlp_softplus_4x32_t")
    y = np.asarray(p.y0)
    assert np.max(np.abs(eval_on("numpy", p, 0.0, y) - eval_on("numpy", p, 1.0, y))) > 1e-3
    q = P.get("mlp_tanh_2x16")
    y = np.asarray(q.y0)
    np.testing.assert_array_equal(eval_on("numpy", q, 0.0, y), eval_on("numpy", q, 1.0, y))


def test_time_feature_is_the_last_input_column():
    # f(t, y) = W_out a(W1 a([W0 | w_t] [y; t] + b0) + b1) + b_out, written out in NumPy
    p = P.get("mlp_softplus_4x32_t")
    w = p.params
    y, t = np.asarray(p.y0) + 0.3, 0.7
    z = np.concatenate([w["W0"], w["w_t"][:, None]], axis=1) @ np.append(y, t) + w["b0"]
    h = np.logaddexp(z, 0.0)
    h = np.logaddexp(w["W1"] @ h + w["b1"], 0.0)
    np.testing.assert_allclose(eval_on("numpy", p, t, y), w["W_out"] @ h + w["b_out"],
                               rtol=1e-13, atol=1e-15)


def test_seeded_and_reproducible():
    a = mlp_field(3, 8, 3, "tanh", seed=5)
    b = mlp_field(3, 8, 3, "tanh", seed=5)
    c = mlp_field(3, 8, 3, "tanh", seed=6)
    assert a.y0 == b.y0 and a.name == b.name != c.name
    for key, value in a.params.items():
        if isinstance(value, np.ndarray):
            np.testing.assert_array_equal(value, b.params[key])
    assert not np.allclose(a.params["W0"], c.params["W0"])
    assert {"W0", "b0", "W1", "b1", "W2", "b2", "W_out", "b_out"} <= set(a.params)
    assert _reference_data.fingerprint(a) == _reference_data.fingerprint(b)


@pytest.mark.parametrize("problem", MINE, ids=ids(MINE))
def test_dynamics_stay_order_one(problem):
    f0 = eval_on("numpy", problem, 0.0, np.asarray(problem.y0))
    assert 0.05 < np.sqrt(np.mean(f0 * f0)) < 5.0
    y1 = solve(problem, problem.t_span[1], rtol=1e-8, atol=1e-10)
    assert np.max(np.abs(y1 - np.asarray(problem.y0))) < 5.0


def test_batch_helper_and_batched_field():
    p = P.get("mlp_tanh_2x16")
    y0s = mlp_batch_y0(p, 5, seed=1)
    assert y0s.shape == (5, 2) and y0s.dtype == np.float64
    np.testing.assert_array_equal(y0s, mlp_batch_y0(p, 5, seed=1))
    assert not np.allclose(y0s, mlp_batch_y0(p, 5, seed=2))
    # the batched problem: B copies of the same field solved as one system
    single = mlp_field(2, 16, 2, "softplus", time_dependent=True, seed=4)
    batched = mlp_field(2, 16, 2, "softplus", time_dependent=True, seed=4, batch=3)
    assert batched.n == 6
    np.testing.assert_array_equal(np.asarray(batched.y0).reshape(3, 2), mlp_batch_y0(single, 3, seed=4))
    t = np.array([0.2, 0.9])
    Y = np.random.default_rng(0).standard_normal((2, 6))
    out = eval_on("numpy", batched, t, Y).reshape(2, 3, 2)
    for i in range(2):
        for j in range(3):
            np.testing.assert_allclose(out[i, j], eval_on("numpy", single, t[i], Y[i].reshape(3, 2)[j]),
                                       rtol=1e-14, atol=1e-15)
    for lib in ("array_api_strict", "torch", "jax"):
        if lib != "array_api_strict":
            pytest.importorskip(lib)
        np.testing.assert_allclose(eval_on(lib, batched, t, Y).reshape(2, 3, 2), out,
                                   rtol=1e-14, atol=1e-14)


@pytest.mark.parametrize(
    "kwargs, word",
    [
        ({"state": 0}, "state"),
        ({"hidden": 2.5}, "hidden"),
        ({"depth": 0}, "depth"),
        ({"activation": "relu"}, "activation"),
        ({"time_dependent": 1}, "time_dependent"),
        ({"seed": -1}, "seed"),
        ({"batch": 0}, "batch"),
    ],
)
def test_mlp_field_rejects_bad_arguments(kwargs, word):
    with pytest.raises(ValueError, match=word):
        mlp_field(**kwargs)


def test_mlp_batch_y0_rejects_bad_arguments():
    with pytest.raises(ValueError, match="batch"):
        mlp_batch_y0(P.get("mlp_tanh_2x16"), 0, seed=0)
    with pytest.raises(ValueError, match="problem"):
        mlp_batch_y0(P.get("harmonic"), 2, seed=0)


@pytest.mark.parametrize("problem", MINE, ids=ids(MINE))
def test_computed_references_agree_with_fresh_solves(problem):
    base = next(q for q in neural.COMPUTED_TARGETS if q.name == problem.name)
    assert _reference_data.entry_status(base) == "ok"
    assert [r.kind for r in problem.references] == ["computed", "computed"]
    for ref in problem.references:
        y_ref = np.asarray(ref.y)
        scale = float(np.max(np.abs(y_ref)))
        y = solve(problem, ref.t, "DOP853", rtol=1e-12, atol=1e-14)
        assert np.max(np.abs(y - y_ref)) <= 2 * 10.0 ** (-ref.digits) * scale
        y = solve(problem, ref.t, "Radau", rtol=1e-11, atol=1e-13)
        assert np.max(np.abs(y - y_ref)) <= 1e-9 * max(1.0, scale)
