"""Gradients through stiff solves with the implicit methods (issue 5).

Oracles: central finite differences of the *same* fixed-step implicit solve (PyTorch, float64)
for the exact-discrete ``discrete`` mode, and the closed form of the stiff linear problem
(``scipy.linalg.expm`` and its Fréchet derivative) for the continuous modes, which converge
to it with the tolerance. Also: what the modes that cannot cope do (backsolve's backward
reconstruction of a stiff state is exponentially unstable; an explicit method needs
O(stiffness) steps) ends with a status within ``max_steps``, never a hang.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import scipy.linalg

from odeverify import _xp
from odeverify.gradients import Loss, value_and_grad
from odeverify.integrate import solve
from odeverify.problems import PROBLEMS

from .conftest import namespace_or_skip

#: stiff_linear_1e4 (y' = A y, spectrum -1 .. -1e4) over a short horizon, loss at two times
LIN = dataclasses.replace(PROBLEMS.get("stiff_linear_1e4"), t_span=(0.0, 0.1))
LIN_LOSS = Loss.seeded([0.04, 0.1], 4, seed=0, quadratic=0.5)


def rel_err(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.max(np.abs(got - want)) / max(np.max(np.abs(want)), 1e-300))


def fd_directional(problem, loss, method, n_steps, *, eps_y0: float, eps_p: float, seed: int = 0, y0: bool = True,
                   params: bool = True):
    """Central differences of the fixed-step torch solve: dL/dy0 (every component) and the
    derivative along one random unit direction V of the parameters (dL/dtheta . V), with V."""
    torch = namespace_or_skip("torch")
    names = sorted(k for k, v in problem.params.items() if isinstance(v, np.ndarray))
    rng = np.random.default_rng(seed)
    V = {k: rng.standard_normal(np.shape(problem.params[k])) for k in names}
    norm = np.sqrt(sum(np.sum(v * v) for v in V.values()))
    V = {k: v / norm for k, v in V.items()}

    def L(y0, p):
        params = {**problem.params, **p}
        pt = {k: (torch.asarray(v, dtype=torch.float64) if isinstance(v, np.ndarray) else v) for k, v in params.items()}
        f = lambda t, y: problem.rhs(torch, t, y, pt)  # noqa: E731
        sol = solve(f, torch.asarray(y0, dtype=torch.float64), problem.t_span, method=method, n_steps=n_steps,
                    t_eval=loss.t_eval)
        assert sol.success, sol.message
        return loss.value_numpy(_xp.to_numpy(sol.ys))

    want_y0 = y0
    y0 = np.asarray(problem.y0, dtype=np.float64)
    base = {k: np.asarray(problem.params[k], dtype=np.float64) for k in names}
    g_y0 = []
    for i in range(y0.size if want_y0 else 0):
        e = np.zeros_like(y0)
        e[i] = eps_y0
        g_y0.append((L(y0 + e, base) - L(y0 - e, base)) / (2 * eps_y0))
    up = {k: base[k] + eps_p * V[k] for k in names}
    dn = {k: base[k] - eps_p * V[k] for k in names}
    g_dir = (L(y0, up) - L(y0, dn)) / (2 * eps_p) if names and params else None
    return np.asarray(g_y0), g_dir, V


def directional(res, V) -> float:
    return float(sum(np.sum(res.grad_params[k] * V[k]) for k in V))


def linear_exact(problem, loss) -> np.ndarray:
    """dL/dy0 and dL/dA of L = sum_i w_i . y(t_i) + q/2 |y(t_i)|^2 for y' = A y, in closed form."""
    A = np.asarray(problem.params["A"], dtype=np.float64)
    y0 = np.asarray(problem.y0, dtype=np.float64)
    g_y0, g_A = np.zeros_like(y0), np.zeros_like(A)
    for t, w in zip(loss.t_eval, loss.weights):
        E = scipy.linalg.expm(A * t)
        c = w + loss.quadratic * (E @ y0)  # dL/dy(t_i)
        g_y0 += E.T @ c
        for i in range(A.shape[0]):
            for j in range(A.shape[1]):
                D = np.zeros_like(A)
                D[i, j] = t
                g_A[i, j] += c @ scipy.linalg.expm_frechet(A * t, D, compute_expm=False) @ y0
    return np.concatenate([g_y0, g_A.ravel()])


# ----------------------------------------------------------------------------- discrete = d(the computed solve)
# central differences: L is quadratic in y0 for a linear problem (differences exact up to
# round-off, so a large step); in the parameters the step balances truncation (eps^2) and
# round-off (1e-16 / eps) near eps = 1e-5 for these O(1)-scaled directions
@pytest.mark.parametrize("problem, loss, method, n_steps, eps_y0, tol_y0", [
    (LIN, LIN_LOSS, "kvaerno3", 10, 1e-2, 1e-11),
    (LIN, LIN_LOSS, "radau_iia5", 10, 1e-2, 1e-11),
    pytest.param(PROBLEMS.get("stiff_neural_1e3"), Loss.seeded([0.5, 1.0], 4, seed=3), "kvaerno3", 10, 1e-6, 1e-7,
                 marks=pytest.mark.slow),
], ids=["linear1e4-kvaerno3", "linear1e4-radau_iia5", "neural1e3-kvaerno3"])
def test_discrete_dl_dy0_of_an_implicit_solve_is_the_derivative_of_that_solve(problem, loss, method, n_steps,
                                                                             eps_y0, tol_y0):
    res = value_and_grad(problem, loss, mode="discrete", method=method, n_steps=n_steps)
    assert res.success, res.message
    g_y0, _, _ = fd_directional(problem, loss, method, n_steps, eps_y0=eps_y0, eps_p=1e-5, params=False)
    err = rel_err(res.grad_y0, g_y0)
    assert err < tol_y0, f"{problem.name} {method}: dL/dy0 vs central differences of the same solve {err:.2e}"


# the discrete mode makes every Newton solve take >= 2 iterations (ImplicitBase.for_gradients):
# accepted after one iteration, the value depends on the detached Jacobian and dL/dA was off
# by up to 1.5e-3 (kvaerno3); test_a_single_newton_iteration_breaks_the_discrete_gradient
# below shows that this guard is what makes the difference
@pytest.mark.parametrize("method", ["backward_euler", "trapezoid", "sdirk2", "kvaerno3", "radau_iia5"])
def test_discrete_dl_dtheta_of_an_implicit_solve_is_the_derivative_of_that_solve(method):
    res = value_and_grad(LIN, LIN_LOSS, mode="discrete", method=method, n_steps=10)
    # eps 1e-4 along a unit direction of A (entries up to ~8e3): the differences agree to 8
    # digits between eps = 1e-2 and 1e-4, so truncation and round-off are below 1e-7
    _, g_dir, V = fd_directional(LIN, LIN_LOSS, method, 10, eps_y0=1e-2, eps_p=1e-4, y0=False)
    d = directional(res, V)
    err = abs(d - g_dir) / abs(g_dir)
    assert err < 1e-6, f"{method}: dL/dA.V {d} vs central differences of the same solve {g_dir}: {err:.2e}"


# ----------------------------------------------------------------------------- continuous modes, to the tolerance
@pytest.mark.parametrize("mode, method", [("forward", "radau_iia5"), ("interpolated", "radau_iia5"),
                                          pytest.param("quadrature", "kvaerno3", marks=pytest.mark.slow),
                                          pytest.param("interpolated", "kvaerno5", marks=pytest.mark.slow)])
def test_continuous_gradients_of_stiff_solves_converge_to_the_closed_form(mode, method):
    exact = linear_exact(LIN, LIN_LOSS)
    errs = [rel_err(value_and_grad(LIN, LIN_LOSS, mode=mode, method=method, rtol=r, atol=r * 1e-2,
                                   max_steps=5000).flat(), exact) for r in (1e-4, 1e-7)]
    assert errs[1] < errs[0], f"{mode} {method}: errors {errs} should fall as rtol tightens"
    assert errs[1] < 1e-5, f"{mode} {method}: relative error {errs[1]:.2e} at rtol 1e-7"


def test_discrete_gradient_of_an_adaptive_implicit_solve_is_close_to_the_exact_one():
    # the adaptive discrete gradient treats step sizes and the Newton iteration's stopping as
    # constants: it is the derivative of the computed solution, within ~rtol of the exact one
    exact = linear_exact(LIN, LIN_LOSS)
    res = value_and_grad(LIN, LIN_LOSS, mode="discrete", method="radau_iia5", rtol=1e-7, atol=1e-9)
    assert res.success and rel_err(res.flat(), exact) < 1e-5


# ----------------------------------------------------------------------------- what fails, fails with a status
def test_backsolve_of_a_stiff_problem_ends_with_a_status():
    # backsolve solves z backward: the modes decaying like exp(-1e4 t) forward grow like
    # exp(1e4 t) backward, so the reconstruction cannot follow; the limit ends it
    res = value_and_grad(LIN, LIN_LOSS, mode="backsolve", method="radau_iia5", rtol=1e-6, atol=1e-9, max_steps=300)
    exact = linear_exact(LIN, LIN_LOSS)
    if res.success:  # a "successful" backsolve must at least not be trusted: measure it
        assert res.adjoint_mismatch > 1e-3 or rel_err(res.flat(), exact) > 1e-3, res
    else:
        assert res.status.code in {"max_steps", "newton_failed", "dt_underflow", "nonfinite"}, res.status
        assert np.all(np.isnan(res.flat()))


def test_backsolve_with_an_explicit_method_says_its_reconstruction_is_lost():
    # dopri5 solves the backward [z, a] to its tolerance, but z grows like exp(1e4 t)
    # backward: the run "succeeds" with a meaningless gradient, and the message says so
    # (measured: mismatch 2.7 at t = 0.002, gradient error 2.7e-4 against the closed form,
    # far above the 1e-6 tolerance; at t = 0.1 the error is 3e+247)
    prob = dataclasses.replace(LIN, t_span=(0.0, 0.002))
    loss = Loss.seeded([0.002], 4, seed=0)
    res = value_and_grad(prob, loss, mode="backsolve", method="dopri5", rtol=1e-6, atol=1e-9, max_steps=2000)
    assert res.adjoint_mismatch > 1.0 and "not reliable" in res.message, (res.adjoint_mismatch, res.message)
    assert rel_err(res.flat(), linear_exact(prob, loss)) > 1e-5


def test_explicit_method_on_a_stiff_problem_ends_with_max_steps():
    # dopri5's stability region bounds h |lambda| by ~3.3: ~300 steps over 0.1 at lambda = -1e4
    res = value_and_grad(LIN, LIN_LOSS, mode="discrete", method="dopri5", rtol=1e-6, atol=1e-9, max_steps=100)
    assert res.status.code == "max_steps" and np.all(np.isnan(res.flat()))


def test_replaying_modes_refuse_implicit_methods_by_name():
    with pytest.raises(ValueError, match="method='kvaerno3'"):
        value_and_grad(LIN, LIN_LOSS, mode="checkpoint", method="kvaerno3", rtol=1e-6, atol=1e-9)


ROBER = dataclasses.replace(PROBLEMS.get("rober"), t_span=(0.0, 1.0))


def test_fixed_steps_on_robertson_end_with_newton_failed():
    # Robertson's initial transient (time scale ~1e-4) defeats a uniform step of 0.05: the
    # fixed-step Newton iteration diverges and the solve says so (no rejection to fall back on)
    res = value_and_grad(ROBER, Loss.seeded([0.5, 1.0], 3, seed=2), mode="discrete", method="radau_iia5", n_steps=20)
    assert res.status.code == "newton_failed" and "Newton" in res.message


@pytest.mark.slow
def test_adaptive_robertson_discrete_and_forward_gradients_agree():
    loss = Loss.seeded([0.5, 1.0], 3, seed=2)
    d = value_and_grad(ROBER, loss, mode="discrete", method="radau_iia5", rtol=1e-8, atol=1e-12)
    f = value_and_grad(ROBER, loss, mode="forward", method="radau_iia5", rtol=1e-8, atol=1e-12)
    assert d.success and f.success
    assert rel_err(d.flat(), f.flat()) < 1e-5


def test_a_single_newton_iteration_breaks_the_discrete_gradient(monkeypatch):
    """The reason for ImplicitBase.for_gradients, measured: without it dL/dA is wrong."""
    from odeverify.gradients import discrete

    monkeypatch.setattr(discrete, "settled", lambda solver: solver)
    res = value_and_grad(LIN, LIN_LOSS, mode="discrete", method="kvaerno3", n_steps=10)
    _, g_dir, V = fd_directional(LIN, LIN_LOSS, "kvaerno3", 10, eps_y0=1e-2, eps_p=1e-4, y0=False)
    err = abs(directional(res, V) - g_dir) / abs(g_dir)
    assert err > 1e-5, f"kvaerno3 without the two-iteration rule agreed to {err:.1e}: the guard is unnecessary"
