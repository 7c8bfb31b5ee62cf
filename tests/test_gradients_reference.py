"""Reference gradient modes (odeverify.gradients): every mode against independent oracles.

Oracles: central finite differences of the forward solve (NumPy), the closed form of a
linear problem (scipy.linalg.expm and its Fréchet derivative), and the exact-discrete modes
against each other (discrete, checkpoint, AD through the same reversible steps), which must
agree to round-off.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import scipy.linalg

from odeverify import _xp
from odeverify.gradients import GRADIENT_MODES, GradientResult, Loss, value_and_grad
from odeverify.gradients._common import prepare
from odeverify.gradients.reversible import forward_outputs, make_scheme, step_grid
from odeverify.integrate import solve
from odeverify.problems import Problem, get
from odeverify.problems.neural import mlp_field
from odeverify.solvers import SOLVERS
from odeverify.solvers.reversible import ReversibleHeun

from .conftest import namespace_or_skip

EPS = np.finfo(np.float64).eps


def _rhs_tanh(xp, t, y, p):
    return xp.tanh(y @ xp.matrix_transpose(p["W"]) + p["b"]) - 0.1 * y


def _rhs_linear(xp, t, y, p):
    return y @ xp.matrix_transpose(p["A"])


_RNG = np.random.default_rng(42)
#: a small nonlinear problem with a parameter matrix: y' = tanh(W y + b) - y/10, n = 2, P = 6
TANH = Problem(name="tanh2", rhs=_rhs_tanh, y0=(0.5, -0.3), t_span=(0.0, 1.0),
               params={"W": _RNG.standard_normal((2, 2)), "b": 0.1 * _RNG.standard_normal(2), "scale": 1.0})
LOSS = Loss.seeded([0.3, 0.7, 1.0], 2, seed=1, quadratic=0.5)
#: y' = A y, with dL/dy0 and dL/dA in closed form
A_LIN = np.array([[-0.6, 1.0, 0.2], [-1.0, -0.3, 0.1], [0.3, -0.2, -0.8]])
LINEAR = Problem(name="lin3", rhs=_rhs_linear, y0=(1.0, 0.5, -0.4), t_span=(0.0, 1.5), params={"A": A_LIN})
LIN_LOSS = Loss(t_eval=(1.5,), weights=np.array([[0.7, -1.2, 0.4]]))


def rel_err(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.max(np.abs(got - want)) / max(np.max(np.abs(want)), 1e-300))


def fd_gradient(problem: Problem, loss: Loss, *, eps: float = 1e-6, **solve_kw) -> np.ndarray:
    """Central differences of the NumPy forward solve, in GradientResult.flat() order."""
    names = sorted(k for k, v in problem.params.items() if isinstance(v, np.ndarray))
    y0 = np.asarray(problem.y0)

    def L(y0v, pv):
        p = {**problem.params, **pv}
        f = lambda t, y: problem.rhs(np, t, y, p)  # noqa: E731
        sol = solve(f, y0v, problem.t_span, t_eval=loss.t_eval, **solve_kw)
        assert sol.success, sol.message
        return loss.value_numpy(sol.ys)

    base_p = {k: np.array(problem.params[k], dtype=np.float64) for k in names}
    out = []
    for i in range(y0.size):
        e = np.zeros_like(y0)
        e[i] = eps
        out.append((L(y0 + e, base_p) - L(y0 - e, base_p)) / (2 * eps))
    for k in names:
        for j in range(base_p[k].size):
            dp = np.zeros(base_p[k].size)
            dp[j] = eps
            up = {**base_p, k: base_p[k] + dp.reshape(base_p[k].shape)}
            dn = {**base_p, k: base_p[k] - dp.reshape(base_p[k].shape)}
            out.append((L(y0, up) - L(y0, dn)) / (2 * eps))
    return np.asarray(out)


@pytest.fixture(scope="module")
def fd_tanh() -> np.ndarray:
    return fd_gradient(TANH, LOSS, method="dop853", rtol=1e-13, atol=1e-13)


def linear_exact() -> np.ndarray:
    """dL/dy0 = expm(A T)^T w and dL/dA_ij = w . D expm(A T)[T e_i e_j^T] y0 (Fréchet derivative)."""
    T = LINEAR.t_span[1]
    w = LIN_LOSS.weights[0]
    y0 = np.asarray(LINEAR.y0)
    g_y0 = scipy.linalg.expm(A_LIN * T).T @ w
    g_A = np.zeros_like(A_LIN)
    for i in range(3):
        for j in range(3):
            E = np.zeros_like(A_LIN)
            E[i, j] = T
            g_A[i, j] = w @ scipy.linalg.expm_frechet(A_LIN * T, E, compute_expm=False) @ y0
    return np.concatenate([g_y0, g_A.ravel()])


# ----------------------------------------------------------------------------- the registry
def test_registry_declares_every_mode():
    expected = {"discrete", "backsolve", "checkpoint", "interpolated", "quadrature", "forward", "reversible_heun",
                "mali"}
    assert set(GRADIENT_MODES.names()) == expected
    for name, mode in GRADIENT_MODES.items():
        assert mode.name == name and mode.description and mode.citation
        assert set(mode.libraries) <= {"torch", "jax"} and mode.libraries
    exact = {n for n, m in GRADIENT_MODES.items() if m.exact_discrete}
    assert exact == {"discrete", "checkpoint", "reversible_heun", "mali"}


# ----------------------------------------------------------------------------- vs finite differences
@pytest.mark.parametrize("mode", ["discrete", "backsolve", "checkpoint", "interpolated", "quadrature", "forward"])
def test_mode_matches_finite_differences(mode, fd_tanh):
    res = value_and_grad(TANH, LOSS, mode=mode, rtol=1e-9, atol=1e-11)
    assert res.success, res.message
    assert set(res.grad_params) == {"W", "b"}  # the scalar "scale" is a constant
    err = rel_err(res.flat(), fd_tanh)
    # FD of a tolerance-1e-13 solve with step 1e-6: truncation ~1e-12, round-off ~1e-10;
    # the modes at rtol 1e-9 measured 3e-10 .. 7e-10
    assert err < 1e-8, f"{mode}: relative error vs finite differences={err:.2e}, but should be < 1e-8"
    assert res.nfev_forward > 0 and res.nfev_backward > 0
    assert res.timing["forward_s"] >= 0 and res.timing["backward_s"] >= 0


def test_loss_value_matches_numpy_forward():
    res = value_and_grad(TANH, LOSS, mode="backsolve", rtol=1e-10, atol=1e-12)
    f = TANH.vector_field(np)
    sol = solve(f, np.asarray(TANH.y0), TANH.t_span, t_eval=LOSS.t_eval, rtol=1e-10, atol=1e-12)
    assert abs(res.loss - LOSS.value_numpy(sol.ys)) < 1e-13


@pytest.mark.parametrize("mode", ["reversible_heun", "mali"])
def test_reversible_converges_to_fd_at_second_order(mode, fd_tanh):
    errs = [rel_err(value_and_grad(TANH, LOSS, mode=mode, n_steps=n).flat(), fd_tanh) for n in (40, 80, 160)]
    rates = [math.log2(errs[i] / errs[i + 1]) for i in range(2)]
    assert all(1.8 < r < 2.2 for r in rates), f"{mode}: observed orders {rates}, but should be 2 (errors {errs})"


# ----------------------------------------------------------------------------- continuous modes converge
@pytest.mark.parametrize("mode", ["backsolve", "interpolated", "quadrature",
                                  pytest.param("forward", marks=pytest.mark.slow)])
def test_continuous_modes_converge_to_exact_linear_gradient(mode):
    exact = linear_exact()
    errs = [rel_err(value_and_grad(LINEAR, LIN_LOSS, mode=mode, rtol=r, atol=r * 1e-2).flat(), exact)
            for r in (1e-4, 1e-7, 1e-10)]
    assert errs[2] < 1e-8, f"{mode}: relative error {errs[2]:.2e} at rtol=1e-10, but should be < 1e-8"
    assert errs[2] < errs[1] < errs[0], f"{mode}: errors {errs} should decrease as rtol tightens"


# ----------------------------------------------------------------------------- exact-discrete modes agree
@pytest.fixture(scope="module")
def discrete_torch() -> GradientResult:
    return value_and_grad(TANH, LOSS, mode="discrete", rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("checkpoints", [1, 2, 3, None])
def test_checkpoint_equals_discrete_within_budget(checkpoints, discrete_torch):
    res = value_and_grad(TANH, LOSS, mode="checkpoint", rtol=1e-6, atol=1e-9, checkpoints=checkpoints)
    err = rel_err(res.flat(), discrete_torch.flat())
    assert err < 1e-13, f"checkpoint (budget {checkpoints}) vs discrete: {err:.2e}, but should be round-off"
    budget = res.details["checkpoints"]
    assert 1 <= res.details["peak_stored_states"] <= budget
    if checkpoints is not None:
        assert budget == checkpoints
    assert res.steps_backward > discrete_torch.steps_backward or checkpoints is None


EXPLICIT = [n for n, m in SOLVERS.items() if hasattr(m, "dense_weights") and not hasattr(m, "init_state")]


@pytest.mark.parametrize("method", EXPLICIT)
def test_checkpoint_equals_discrete_for_every_explicit_method(method):
    kw = {"rtol": 1e-6, "atol": 1e-9} if SOLVERS.get(method).adaptive else {"n_steps": 12}
    d = value_and_grad(TANH, LOSS, mode="discrete", method=method, **kw)
    c = value_and_grad(TANH, LOSS, mode="checkpoint", method=method, checkpoints=2, **kw)
    err = rel_err(c.flat(), d.flat())
    assert err < 1e-13, f"{method}: checkpoint vs discrete {err:.2e}, but should be round-off"


def test_checkpoint_budget_trades_recomputation():
    few = value_and_grad(TANH, LOSS, mode="checkpoint", rtol=1e-6, atol=1e-9, checkpoints=1)
    many = value_and_grad(TANH, LOSS, mode="checkpoint", rtol=1e-6, atol=1e-9, checkpoints=64)
    n = few.steps_forward
    # budget 1: every step recomputed from y0 -> n(n-1)/2 recomputed steps
    assert few.details["recomputed_steps"] == n * (n - 1) // 2
    assert many.details["recomputed_steps"] < few.details["recomputed_steps"]
    assert few.details["peak_stored_states"] == 1


def test_discrete_torch_and_jax_agree():
    namespace_or_skip("jax")
    # a loose tolerance keeps JAX's eager, op-by-op VJP short (about 10 steps)
    torch_res = value_and_grad(TANH, LOSS, mode="discrete", rtol=1e-4, atol=1e-6)
    res = value_and_grad(TANH, LOSS, mode="discrete", library="jax", rtol=1e-4, atol=1e-6)
    assert res.steps_forward == torch_res.steps_forward
    # JAX counts every evaluation of the accepted steps, PyTorch the traversed ones
    assert 0 <= res.nfev_backward - torch_res.nfev_backward <= 1
    err = rel_err(res.flat(), torch_res.flat())
    assert err < 1e-13, f"discrete jax vs torch: {err:.2e}, but should be round-off"


def test_discrete_differs_from_continuous_at_loose_tolerance(discrete_torch, fd_tanh):
    # the discrete gradient is exact for the computed solution, not for the ODE: at rtol 1e-6
    # it differs from the exact gradient by about the solution error, far above round-off
    err = rel_err(discrete_torch.flat(), fd_tanh)
    assert 1e-12 < err < 1e-4


def test_mali_is_ad_through_the_same_steps():
    res = value_and_grad(TANH, LOSS, mode="mali", n_steps=50)
    s = prepare(TANH, LOSS, method="dopri5", library="torch", dtype="float64", y0=None, params=None, rtol=1e-6,
                atol=1e-9, dt=None, n_steps=50, max_steps=1000)
    grid, index = step_grid(s)
    scheme = make_scheme("mali", 1.0)
    ys, _ = forward_outputs(s, scheme, grid, index, s.y0, s.params)
    cot = s.cotangents(ys)
    _, (gy0, gp) = _xp.vjp(lambda y0, p: forward_outputs(s, scheme, grid, index, y0, p)[0], (s.y0, s.params), cot)
    ad = np.concatenate([_xp.to_numpy(gy0).ravel()] + [_xp.to_numpy(gp[k]).ravel() for k in sorted(gp)])
    err = rel_err(res.flat(), ad)
    assert err < 1e-12, f"mali: reversible backward vs AD through the same steps: {err:.2e}"
    assert res.adjoint_mismatch < 100 * EPS, f"mali: reconstruction error {res.adjoint_mismatch:.2e}"
    assert res.details["stored_arrays"] == scheme.state_size + len(LOSS.t_eval)


# ----------------------------------------------------------------------------- adaptive reversible Heun
@pytest.mark.parametrize("kw", [{"n_steps": 50}, {"rtol": 1e-3, "atol": 1e-6}, {"rtol": 1e-6, "atol": 1e-9}],
                         ids=["fixed", "adaptive-1e-3", "adaptive-1e-6"])
def test_reversible_heun_is_ad_through_the_same_steps(kw):
    # the reference: autograd through odeverify.solve with the same stateful solver (the
    # discrete mode), i.e. the same accepted steps, rejected tries included in the solve
    res = value_and_grad(TANH, LOSS, mode="reversible_heun", **kw)
    ad = value_and_grad(TANH, LOSS, mode="discrete", method=ReversibleHeun(), **kw)
    assert res.success and ad.success
    assert np.array_equal(res.details["t_steps"], ad.details["t_steps"])
    err = rel_err(res.flat(), ad.flat())
    assert err < 1e-12, f"reversible_heun {kw}: algebraic backward vs AD through the same steps: {err:.2e}"
    assert res.adjoint_mismatch < 100 * EPS, f"reconstruction error {res.adjoint_mismatch:.2e}, not round-off"
    assert res.details["stored_arrays"] == 3 + len(LOSS.t_eval)
    assert res.memory["step_record_bytes"] == 16 * res.details["grid_steps"]


def test_adaptive_reversible_heun_rejects_replays_and_converges():
    # a loose tolerance on a fast problem forces rejected steps; the backward pass replays
    # only the accepted ones (the rejected tries leave y_hat unchanged)
    prob = dataclasses.replace(TANH, params={**TANH.params, "W": 6.0 * TANH.params["W"]})
    res = value_and_grad(prob, LOSS, mode="reversible_heun", rtol=1e-2, atol=1e-4)
    assert res.details["rejected_steps"] > 0, "the case should exercise rejected steps"
    assert res.steps_forward == res.details["grid_steps"] + res.details["rejected_steps"]
    ad = value_and_grad(prob, LOSS, mode="discrete", method=ReversibleHeun(), rtol=1e-2, atol=1e-4)
    assert rel_err(res.flat(), ad.flat()) < 1e-12
    assert res.adjoint_mismatch < 100 * EPS


def test_adaptive_reversible_heun_converges_to_the_exact_gradient(fd_tanh):
    errs = [rel_err(value_and_grad(TANH, LOSS, mode="reversible_heun", rtol=r, atol=r * 1e-3).flat(), fd_tanh)
            for r in (1e-3, 1e-5, 1e-7)]
    # order 2 with a first-order error estimate: the global error ~ rtol^(1/2)... rtol^1
    assert errs[2] < errs[1] < errs[0] and errs[2] < 1e-5, errs


# ----------------------------------------------------------------------------- memory accounting
def _memory(mode: str, n: int, **kw) -> dict:
    return value_and_grad(TANH, LOSS, mode=mode, method="rk4", n_steps=n, **kw).memory


def test_memory_accounting_scales_as_each_mode_promises():
    state = 2 * 8  # TANH: n = 2, float64
    T = len(LOSS.t_eval)
    d = {n: _memory("discrete", n) for n in (10, 55, 100)}
    saved = {n: d[n]["saved_for_backward_bytes"] for n in d}
    # the autograd graph holds every step: affine in the steps (exactly), ~10x for 10x steps
    assert saved[100] - saved[55] == saved[55] - saved[10] > 0
    assert 9.0 < saved[100] / saved[10] <= 10.0, saved
    assert d[100]["saved_for_backward_peak_bytes"] > 9 * d[10]["saved_for_backward_peak_bytes"]
    for mode, kw in [("backsolve", {}), ("reversible_heun", {}), ("checkpoint", {"checkpoints": 3})]:
        lo, hi = _memory(mode, 10, **kw), _memory(mode, 100, **kw)
        # one VJP at a time: the peak of what autograd holds does not grow with the steps
        assert lo["saved_for_backward_peak_bytes"] == hi["saved_for_backward_peak_bytes"] > 0, (mode, lo, hi)
        if mode == "checkpoint":
            assert lo["stored_bytes"] <= hi["stored_bytes"] <= (3 + T) * state, (lo, hi)
        else:
            assert lo["stored_bytes"] == hi["stored_bytes"] == ((3 if mode == "reversible_heun" else 0) + T) * state
    # reversible_heun and checkpoint keep (t_k, h_k) per step: O(steps) floats, reported apart
    assert _memory("reversible_heun", 100)["step_record_bytes"] == 16 * 100
    # interpolated stores the dense forward solution: start state + 4 stages per rk4 step, + y(t1)
    assert _memory("interpolated", 100)["stored_bytes"] == (T + 100 * 5 + 1) * state


def test_saved_tensor_meter_says_why_without_hooks():
    for lib in ("numpy", "jax"):
        with _xp.saved_tensor_bytes(lib) as meter:
            pass
        assert meter.total_bytes is None and meter.peak_bytes is None and "JAX" in meter.reason


def test_memory_accounting_can_be_switched_off_for_timing_runs():
    on = value_and_grad(TANH, LOSS, mode="discrete", method="rk4", n_steps=5)
    off = value_and_grad(TANH, LOSS, mode="discrete", method="rk4", n_steps=5, memory_accounting=False)
    assert on.memory["saved_for_backward_bytes"] > 0 and off.memory["saved_for_backward_bytes"] is None
    assert "memory_accounting=False" in off.details["saved_for_backward_reason"]
    assert np.array_equal(on.flat(), off.flat())  # the same operations either way


@pytest.mark.slow
def test_memory_accounting_without_saved_tensor_hooks_says_why():
    namespace_or_skip("jax")
    res = value_and_grad(TANH, LOSS, mode="backsolve", library="jax", method="rk4", n_steps=4)
    assert res.memory["saved_for_backward_bytes"] is None and res.memory["stored_bytes"] == 3 * 16
    assert "JAX" in res.details["saved_for_backward_reason"]


@pytest.mark.slow
def test_reversible_jax_matches_torch():
    namespace_or_skip("jax")
    a = value_and_grad(TANH, LOSS, mode="reversible_heun", n_steps=10)
    b = value_and_grad(TANH, LOSS, mode="reversible_heun", n_steps=10, library="jax")
    assert rel_err(b.flat(), a.flat()) < 1e-13


def test_mali_damping_changes_the_scheme_and_stays_reversible():
    a = value_and_grad(TANH, LOSS, mode="mali", n_steps=40)
    b = value_and_grad(TANH, LOSS, mode="mali", n_steps=40, eta=0.9)
    assert rel_err(b.flat(), a.flat()) > 1e-6
    assert b.adjoint_mismatch < 1e3 * EPS


def test_forward_sensitivities_of_fixed_steps_equal_the_discrete_gradient():
    # explicit RK commutes with linearisation: with fixed steps, the forward sensitivity
    # solve computes the exact derivative of the computed solution (internal differentiation)
    d = value_and_grad(TANH, LOSS, mode="discrete", method="rk4", n_steps=20)
    f = value_and_grad(TANH, LOSS, mode="forward", method="rk4", n_steps=20)
    err = rel_err(f.flat(), d.flat())
    assert err < 1e-13, f"forward (rk4, 20 steps) vs discrete: {err:.2e}, but should be round-off"


@pytest.mark.parametrize("mode", ["backsolve", "quadrature", "checkpoint"])
def test_backward_in_time_problem(mode):
    prob = dataclasses.replace(TANH, t_span=(1.0, 0.0))
    loss = Loss.seeded([0.7, 0.3, 0.0], 2, seed=1)
    d = value_and_grad(prob, loss, mode="discrete", rtol=1e-10, atol=1e-12)
    r = value_and_grad(prob, loss, mode=mode, rtol=1e-10, atol=1e-12)
    assert rel_err(r.flat(), d.flat()) < 1e-8


def test_stored_array_counts():
    T = len(LOSS.t_eval)
    b = value_and_grad(TANH, LOSS, mode="backsolve", rtol=1e-6, atol=1e-9)
    i = value_and_grad(TANH, LOSS, mode="interpolated", rtol=1e-6, atol=1e-9)
    assert b.details["stored_arrays"] == T
    # dopri5: each accepted step keeps its start state and 7 stages, plus the final state
    assert i.details["stored_arrays"] == T + (len(i.details["t_steps"]) - 1) * 8 + 1
    c = value_and_grad(TANH, LOSS, mode="checkpoint", rtol=1e-6, atol=1e-9, checkpoints=2)
    assert c.details["stored_arrays"] == c.details["peak_stored_states"] + T == 2 + T


# ----------------------------------------------------------------------------- backsolve specifics
def test_backsolve_reconstruction_mismatch_is_reported():
    res = value_and_grad(TANH, LOSS, mode="backsolve", rtol=1e-8, atol=1e-10)
    assert 0 < res.adjoint_mismatch < 1e-6


@pytest.mark.slow
def test_backsolve_jax_matches_torch():
    namespace_or_skip("jax")
    a = value_and_grad(TANH, LOSS, mode="backsolve", rtol=1e-6, atol=1e-9)
    b = value_and_grad(TANH, LOSS, mode="backsolve", library="jax", rtol=1e-6, atol=1e-9)
    assert rel_err(b.flat(), a.flat()) < 1e-12 and b.nfev_backward == a.nfev_backward


def test_seminorm_reduces_backward_work_on_a_neural_field():
    prob = mlp_field(4, 32, 2, "tanh", seed=3)
    loss = Loss.seeded([1.0], 4, seed=0)
    ref = value_and_grad(prob, loss, mode="interpolated", rtol=1e-10, atol=1e-12).flat()
    plain = value_and_grad(prob, loss, mode="backsolve", rtol=1e-6, atol=1e-9)
    semi = value_and_grad(prob, loss, mode="backsolve", rtol=1e-6, atol=1e-9, seminorm=True)
    assert semi.nfev_backward < plain.nfev_backward, (semi.nfev_backward, plain.nfev_backward)
    assert semi.details["adjoint_tolerance"] == "seminorm"
    e_plain, e_semi = rel_err(plain.flat(), ref), rel_err(semi.flat(), ref)
    assert e_semi < 1e-4 and e_plain < 1e-4, (e_plain, e_semi)


def test_batch_initial_state():
    y0 = np.array([[0.5, -0.3], [0.1, 0.9], [-0.7, 0.2]])
    d = value_and_grad(TANH, LOSS, mode="discrete", y0=y0, rtol=1e-8, atol=1e-10)
    c = value_and_grad(TANH, LOSS, mode="checkpoint", y0=y0, rtol=1e-8, atol=1e-10, checkpoints=2)
    b = value_and_grad(TANH, LOSS, mode="backsolve", y0=y0, rtol=1e-8, atol=1e-10)
    assert d.grad_y0.shape == (3, 2)
    assert rel_err(c.flat(), d.flat()) < 1e-13
    assert rel_err(b.flat(), d.flat()) < 1e-5


@pytest.mark.parametrize("mode", ["discrete", "backsolve", "forward", "mali"])
def test_explicit_device_gives_the_same_gradient(mode):
    kw = {"n_steps": 10} if mode == "mali" else {"rtol": 1e-6, "atol": 1e-9}
    a = value_and_grad(TANH, LOSS, mode=mode, **kw)
    b = value_and_grad(TANH, LOSS, mode=mode, device="cpu", **kw)
    assert np.array_equal(a.flat(), b.flat())


def test_params_override_is_used():
    W = np.array([[0.2, -1.0], [1.0, 0.1]])
    a = value_and_grad(TANH, LOSS, mode="discrete", params={"W": W})
    b = value_and_grad(TANH, LOSS, mode="discrete")
    assert rel_err(a.flat(), b.flat()) > 1e-3


def test_problem_without_array_parameters_gives_dl_dy0():
    lv = get("lotka_volterra")
    loss = Loss.seeded([1.0, 2.0], 2, seed=0, quadratic=0.0)
    res = value_and_grad(lv, loss, mode="backsolve", rtol=1e-10, atol=1e-12)
    assert res.success and res.grad_params == {}
    fd = fd_gradient(lv, loss, method="dop853", rtol=1e-12, atol=1e-12)
    assert rel_err(res.flat(), fd) < 1e-6


def test_loss_at_the_initial_time():
    loss = Loss(t_eval=(0.0, 1.0), weights=np.array([[1.0, 2.0], [0.5, -0.5]]))
    d = value_and_grad(TANH, loss, mode="discrete", rtol=1e-10, atol=1e-12)
    for mode in ("checkpoint", "backsolve", "interpolated", "quadrature", "reversible_heun"):
        kw = {"n_steps": 400} if mode == "reversible_heun" else {"rtol": 1e-10, "atol": 1e-12}
        r = value_and_grad(TANH, loss, mode=mode, **kw)
        assert rel_err(r.flat(), d.flat()) < (1e-5 if mode == "reversible_heun" else 1e-8), mode


# ----------------------------------------------------------------------------- failures and bad input
def _rhs_sqrt(xp, t, y, p):
    return xp.sqrt(xp.abs(y)) * p["c"]


def test_non_differentiable_field_gives_a_nonfinite_status():
    prob = Problem(name="sqrt", rhs=_rhs_sqrt, y0=(0.0, 1.0), t_span=(0.0, 1.0), params={"c": np.ones(2)})
    res = value_and_grad(prob, Loss.seeded([1.0], 2, seed=0), mode="discrete", n_steps=10, method="rk4")
    assert res.status.code == "nonfinite" and "differentiable" in res.message
    assert not np.all(np.isfinite(res.grad_y0))


def test_failed_forward_solve_keeps_nan_gradients():
    res = value_and_grad(TANH, LOSS, mode="backsolve", max_steps=3)
    assert res.status.code == "max_steps" and np.all(np.isnan(res.flat()))


@pytest.mark.parametrize("kwargs, match", [
    (dict(mode="nope"), "Choices"),
    (dict(mode="discrete", library="numpy"), "library='numpy' has no automatic differentiation"),
    (dict(mode="discrete", dtype="float16"), "dtype="),
    (dict(mode="mali"), "fixed-step"),
    (dict(mode="checkpoint", checkpoints=0), "checkpoints=0"),
    (dict(mode="mali", n_steps=4, eta=0.5), "eta=0.5"),
    (dict(mode="discrete", y0=np.zeros(3)), "y0 has shape"),
    (dict(mode="discrete", params={"V": np.eye(2)}), "params has key 'V'"),
    (dict(mode="discrete", params={"W": np.eye(3)}), r"params\['W'\] has shape"),
    (dict(mode="backsolve", adjoint_rtol=-1.0), "adjoint_rtol=-1.0"),
])
def test_bad_input_names_the_parameter(kwargs, match):
    with pytest.raises(ValueError, match=match):
        value_and_grad(TANH, LOSS, **kwargs)


def test_bad_loss_names_the_parameter():
    with pytest.raises(ValueError, match="loss.t_eval"):
        value_and_grad(TANH, Loss.seeded([0.5, 2.0], 2), mode="discrete")
    with pytest.raises(ValueError, match="loss.weights"):
        value_and_grad(TANH, Loss.seeded([0.5], 3), mode="discrete")


def test_ignored_option_warns():
    with pytest.warns(UserWarning, match="ignores the option"):
        value_and_grad(TANH, LOSS, mode="discrete", seminorm=True)


def test_discrete_backward_count_is_the_evaluations_autograd_traverses():
    torch = pytest.importorskip("torch")
    hits = []

    def rhs(xp, t, y, p):
        out = _rhs_tanh(xp, t, y, p)
        if isinstance(out, torch.Tensor) and out.requires_grad:
            out.register_hook(lambda g: hits.append(1))
        return out

    prob = dataclasses.replace(TANH, rhs=rhs)
    res = value_and_grad(prob, LOSS, mode="discrete", rtol=1e-7, atol=1e-9)
    assert res.nfev_backward == len(hits), (res.nfev_backward, len(hits))
