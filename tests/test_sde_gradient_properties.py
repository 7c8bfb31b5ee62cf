"""The SDE gradient properties (odeverify.properties.sde_gradients) and the SDE gradients of the
backends (Backend.sde_gradient: the reference's gradients.sde modes, torchsde's backprop and
sdeint_adjoint), graded pathwise on fixed Brownian paths (seeded: every record here is a
deterministic function of its arguments).

Each property is shown to pass on correct code and to fail on a planted fault (a wrong sign in
a vector-Jacobian product, a noise term dropped from the stochastic adjoint, a gradient off by
1e-7), so that no test passes vacuously. What torchsde does differently from odeverify's step
rules is pinned as a finding."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from odeverify import backends
from odeverify.brownian import BrownianTree
from odeverify.gradients import Loss
from odeverify.problems import sde as sde_problems
from odeverify.properties import sde_gradients as S
from odeverify.solution import Status

pytest.importorskip("torch")
G = pytest.importorskip("odeverify.gradients.sde")

EPS = float(np.finfo(np.float64).eps)


def _strat(name: str) -> sde_problems.SDEProblem:
    p = sde_problems.get(name)
    return p if p.calculus == "stratonovich" else p.as_calculus("stratonovich")


def _torchsde() -> None:
    pytest.importorskip("torchsde")


# ============================================================================ Backend.sde_gradient
def test_reference_delegates_to_gradients_sde() -> None:
    """The reference backend's SDE gradient is gradients.sde's, on PyTorch, bit for bit."""
    p = _strat("kp_cubic")
    bm = BrownianTree(0.0, 1.0, (3, 1), seed=2)
    loss = S.default_sde_loss(p)
    got = backends.get("reference").sde_gradient(p, "heun", "adjoint", loss, bm=bm, n_steps=8)
    want = G.sde_value_and_grad(p, loss, mode="adjoint", method="heun", bm=bm, n_steps=8)
    assert got.backend == "reference" and got.library == "torch"
    assert np.array_equal(got.flat(), want.flat()) and got.adjoint_mismatch == want.adjoint_mismatch


def test_sde_gradient_bad_input_and_failures() -> None:
    ref = backends.get("reference")
    p = sde_problems.get("gbm_stratonovich")
    loss = S.default_sde_loss(p)
    assert ref.capabilities().sde_gradient_modes == ("discrete", "adjoint", "reversible_heun")
    assert ref.capabilities().sde_discrete_gradient_modes == ("discrete", "reversible_heun")
    with pytest.raises(ValueError, match=r"mode='adjont': reference has no such SDE gradient mode; did you mean"
                                         r" 'adjoint'\? Choices: discrete, adjoint, reversible_heun"):
        ref.sde_gradient(p, "heun", "adjont", loss, n_steps=8)
    with pytest.raises(ValueError, match=r"loss has weights of shape \(2, 2\) \(n=2\), but SDE problem"
                                         r" 'gbm_stratonovich' has state dimension n=1"):
        ref.sde_gradient(p, "heun", "discrete", S.default_sde_loss(sde_problems.get("noncommutative")), n_steps=8)
    with pytest.raises(ValueError, match=r"n_steps=0, but it must be a positive int"):
        ref.sde_gradient(p, "heun", "discrete", loss, n_steps=0)
    with pytest.raises(ValueError, match=r"t_eval has times \[0.5\] between steps"):
        ref.sde_gradient(p, "heun", "discrete", loss, n_steps=3)
    with pytest.raises(ValueError, match=r"unknown SDE gradient option 'rtol'"):
        ref.sde_gradient(p, "heun", "discrete", loss, n_steps=8, rtol=1e-3)
    with pytest.raises(ValueError, match=r"wrt='theta', but it must be"):
        ref.sde_gradient(p, "heun", "discrete", loss, n_steps=8, wrt="theta")
    with pytest.raises(ValueError, match=r"written in the ito sense"):
        ref.sde_gradient(sde_problems.get("gbm_ito"), "heun", "discrete", loss, n_steps=8)
    with pytest.raises(ValueError, match=r"reference has no SDE method 'hune'; did you mean 'heun'"):
        ref.sde_gradient(p, "hune", "discrete", loss, n_steps=8)
    with pytest.raises(backends.base.UnsupportedOption, match=r"'heun' is not one"):
        ref.sde_gradient(p, "heun", "reversible_heun", loss, n_steps=8)
    with pytest.raises(backends.base.UnsupportedOption, match=r"adjoint_method='euler'"):
        ref.sde_gradient(p, "heun", "adjoint", loss, n_steps=8, adjoint_method="euler")
    # a failure inside becomes a status with NaN gradients of the right shapes, never a crash
    def broken(xp, t, y, q):
        raise KeyError("a drift that fails")

    res = ref.sde_gradient(dataclasses.replace(p, drift=broken), "heun", "discrete", loss, paths=2, n_steps=8)
    assert res.status == Status.FAILED and "a drift that fails" in res.message
    assert res.grad_y0.shape == (2, 1) and sorted(res.grad_params) == ["mu", "sigma"]
    assert np.all(np.isnan(res.flat()))
    only = ref.sde_gradient(p, "heun", "discrete", loss, paths=3, n_steps=8, wrt="params")
    assert only.grad_y0 is None and sorted(only.grad_params) == ["mu", "sigma"]


def test_torchsde_sde_gradient_modes_and_refusals() -> None:
    _torchsde()
    ts = backends.get("torchsde")
    caps = ts.capabilities()
    assert caps.sde_gradient_modes == ("backprop", "adjoint") and caps.sde_discrete_gradient_modes == ("backprop",)
    p = sde_problems.get("gbm_ito")
    loss = S.default_sde_loss(p)
    with pytest.raises(backends.base.UnsupportedOption, match=r"'srk' runs on torchsde's own Brownian path"):
        ts.sde_gradient(p, "srk", "backprop", loss, n_steps=8)
    with pytest.raises(backends.base.UnsupportedOption, match=r"adjoint_method='srk'"):
        ts.sde_gradient(p, "euler", "adjoint", loss, n_steps=8, adjoint_method="srk")
    res = ts.sde_gradient(p, "euler", "adjoint", loss, paths=2, n_steps=8, wrt="y0")
    assert res.success and res.grad_params == {} and res.grad_y0.shape == (2, 1)
    assert res.options["adjoint_method"] == "milstein"  # torchsde's default for Itô diagonal noise
    assert res.steps_forward >= 8 and res.steps_backward >= 8 and res.nfev_backward > 0


# ============================================================================ sde_gradient_accuracy
@pytest.mark.parametrize("backend, name, method, mode", [
    ("reference", "gbm_stratonovich", "heun", "discrete"),
    ("reference", "kp_cubic", "euler", "discrete"),
    ("reference", "kp_cubic", "reversible_heun", "reversible_heun"),
    ("reference", "noncommutative", "heun", "discrete"),
    ("torchsde", "gbm_ito", "euler", "backprop"),
    ("torchsde", "kp_cubic", "milstein", "backprop"),
    ("torchsde", "kp_cubic", "heun", "backprop"),
    ("torchsde", "gbm_stratonovich", "euler_heun", "backprop"),
    ("torchsde", "gbm_stratonovich", "milstein_strat", "backprop"),
    ("torchsde", "noncommutative", "reversible_heun", "backprop"),
])
def test_discrete_gradients_pass_against_finite_differences(backend: str, name: str, method: str, mode: str) -> None:
    """A discrete gradient is the derivative of the computed solution: within the FD oracle's
    bound plus N eps, and equal to the other discrete gradients of the same solve (torchsde's
    backprop against odeverify's discrete mode: measured <= 3e-16 relative) to round-off."""
    if backend == "torchsde":
        _torchsde()
    b = backends.get(backend)
    p = sde_problems.get(name)
    if p.calculus != b.capabilities().sde_methods[method].calculus:
        p = p.as_calculus(b.capabilities().sde_methods[method].calculus)
    r = S.sde_gradient_accuracy(p, method, mode, backend=backend)
    assert r.verdict == "pass", r.message
    assert r.measured <= r.expected < 1e-8  # the bound is tight enough to catch a relative error of 1e-7
    assert all(v <= r.details["peer_bound"] for v in r.details["peers"].values())
    # peers: odeverify's discrete mode for a library; the other discrete mode of reversible Heun
    assert bool(r.details["peers"]) == (backend == "torchsde" or method == "reversible_heun")


def test_accuracy_fails_a_planted_relative_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """A discrete gradient off by 1e-7 (relative, in dL/dθ) fails: the oracle's bound is derived
    (step halving plus round-off), not a loose constant."""
    p = sde_problems.get("gbm_stratonovich")
    real = G._differentiate

    def off(s, loss_of):
        L, gy0, gp = real(s, loss_of)
        return L, gy0, {k: v * (1 + 1e-7) for k, v in gp.items()}

    monkeypatch.setattr(G, "_differentiate", off)
    r = S.sde_gradient_accuracy(p, "heun", "discrete")
    assert r.verdict == "fail" and "differs from finite differences" in r.message, r.message


def test_accuracy_measures_a_continuous_adjoint() -> None:
    """The stochastic adjoint is not the derivative of the computed solution: its distance is
    recorded (with the adjoint mismatch), and graded by sde_adjoint_convergence."""
    r = S.sde_gradient_accuracy(sde_problems.get("gbm_stratonovich"), "heun", "adjoint")
    assert r.verdict == "skip" and "sde_adjoint_convergence" in r.message
    assert 1e-4 < r.measured < 0.1 and 0 < r.details["adjoint_mismatch"] < 1


def test_fd_oracle_bound_covers_the_exact_discrete_gradient() -> None:
    """The oracle's error estimate bounds its distance to the discrete gradient (exact to
    round-off), and the two step sizes agree (reliable)."""
    p = _strat("kp_cubic")
    bm = BrownianTree(0.0, 1.0, (3, 1), seed=5)
    loss = S.default_sde_loss(p)
    oracle = S.sde_fd_oracle(p, loss, method="heun", bm=bm, n_steps=16)
    exact = G.sde_value_and_grad(p, loss, mode="discrete", method="heun", bm=bm, n_steps=16).flat()
    assert oracle.details["reliable"]
    assert np.linalg.norm(oracle.flat() - exact) <= oracle.details["error_estimate"]
    assert oracle.details["error_estimate"] < 1e-8 * np.linalg.norm(exact)


# ============================================================================ sde_reversible_exactness
@pytest.mark.parametrize("backend", ["reference", "torchsde"])
@pytest.mark.parametrize("name", ["kp_cubic", "noncommutative"])
def test_reversible_heun_backward_is_exact(backend: str, name: str) -> None:
    """Reversible Heun's algebraic backward pass (the reference's mode, torchsde's
    adjoint_reversible_heun) equals the discrete gradient to round-off (measured <= 0.5 N eps
    on every registered problem, both backends) and reconstructs y0 to round-off."""
    if backend == "torchsde":
        _torchsde()
    r = S.sde_reversible_exactness(_strat(name), backend=backend)
    assert r.verdict == "pass", r.message
    assert r.measured <= r.expected == 2 * 32 * EPS and r.details["adjoint_mismatch"] < 1e-14


def test_reversible_exactness_fails_a_wrong_sign_in_a_vjp(monkeypatch: pytest.MonkeyPatch) -> None:
    """The step's VJP with the parameter cotangent's sign flipped: the backward pass no longer
    equals the discrete gradient, and the property fails."""
    real = G._xp.metered_vjp

    def flipped(fun, primals, cotangent):
        out, (gs, gp) = real(fun, primals, cotangent)
        return out, (gs, {k: -v for k, v in gp.items()})

    monkeypatch.setattr(G._xp, "metered_vjp", flipped)
    r = S.sde_reversible_exactness(_strat("kp_cubic"))
    assert r.verdict == "fail" and "differs from the discrete gradient" in r.message, r.message


# ============================================================================ sde_adjoint_convergence
CHEAP = dict(paths=8, n_steps=(8, 16, 32, 64))


def test_adjoint_convergence_passes_on_correct_code() -> None:
    """The reference's stochastic adjoint on GBM: dL/dy0 is exact at every step (the adjoint of
    a linear SDE commutes with Heun), and the dL/dθ gap vanishes at order ~1 (measured 1.26)."""
    r = S.sde_adjoint_convergence(sde_problems.get("gbm_stratonovich"), "heun", **CHEAP)
    assert r.verdict == "pass", r.message
    assert r.details["theta_slope"] > 0.5 and all(m < 1 for m in r.details["adjoint_mismatch"])


@pytest.mark.parametrize("fault", ["wrong sign of a^T df/dy", "dropped a^T dg/dy o dW", "dropped a^T dg/dθ o dW"])
def test_adjoint_convergence_fails_a_planted_fault(monkeypatch: pytest.MonkeyPatch, fault: str) -> None:
    """A wrong sign in the adjoint's vjp term or a noise term dropped from the augmented SDE
    leaves an O(1) gap that does not vanish with the step: the property fails."""
    import torch

    p = sde_problems.get("gbm_stratonovich")  # a drift with df/dy != 0 (Stratonovich kp_cubic has none)
    n = p.n
    if fault.startswith("wrong sign"):
        real = G._AdjointSystem.drift

        def drift(self, sr, z):
            out = real(self, sr, z).clone()
            out[..., n:2 * n] = -out[..., n:2 * n]
            return out

        monkeypatch.setattr(G._AdjointSystem, "drift", drift)
    else:
        real = G._AdjointSystem.diffusion
        rows = slice(n, 2 * n) if "dg/dy" in fault else slice(2 * n, None)

        def diffusion(self, sr, z):
            out = real(self, sr, z).clone()
            out[..., rows, :] = torch.zeros_like(out[..., rows, :])
            return out

        monkeypatch.setattr(G._AdjointSystem, "diffusion", diffusion)
    r = S.sde_adjoint_convergence(p, "heun", **CHEAP)
    assert r.verdict == "fail", (fault, r.message)


def test_torchsde_adjoint_converges_to_backprop() -> None:
    """torchsde's sdeint_adjoint (default adjoint method midpoint) on odeverify's path: the gap
    to backprop through heun vanishes at order 1 (measured 1.08, 95% CI [0.86, 1.27], 64
    paths), and its adjoint mismatch falls with it."""
    _torchsde()
    r = S.sde_adjoint_convergence(_strat("kp_cubic"), "heun", backend="torchsde")
    assert r.verdict == "pass", r.message
    assert r.details["adjoint_method"] == "midpoint"
    mm = r.details["adjoint_mismatch"]
    assert mm[-1] < mm[0] / 4


def test_adjoint_convergence_reports_an_exact_backward_pass() -> None:
    """torchsde's adjoint of reversible Heun is exact: the gap is round-off at every step."""
    _torchsde()
    r = S.sde_adjoint_convergence(_strat("kp_cubic"), "reversible_heun", backend="torchsde", **CHEAP)
    assert r.verdict == "pass" and r.message.startswith("exact"), r.message
    assert r.details["adjoint_method"] == "adjoint_reversible_heun"


# ============================================================================ torchsde findings
@pytest.mark.parametrize("name, method, why", [
    ("linear_time_dependent", "euler_heun", "torchsde's euler_heun evaluates g at the step's end"),
    ("kubo_oscillator", "milstein_strat", "torchsde's Milstein takes (dg/dy)^T g for scalar noise with n > 1"),
])
def test_torchsde_backprop_differs_from_the_reference_rule(name: str, method: str, why: str) -> None:
    """Where torchsde's step differs from odeverify's rule of the same name (the solve's known
    deviations, tests/test_torchsde_backend.py), so does its gradient: the record fails against
    finite differences of odeverify's rule and names the peer ({why})."""
    _torchsde()
    r = S.sde_gradient_accuracy(_strat(name), method, "backprop", backend="torchsde")
    assert r.verdict == "fail", r.message
    assert r.measured > 1e-3 and f"reference {method}/discrete" in r.message, why


def test_torchsde_milstein_gradient_on_scalar_noise_converges_slowly() -> None:
    """torchsde's Milstein on scalar noise with n > 1 (kubo_oscillator, dg/dy not symmetric)
    takes (dg/dy)^T g: its backprop gradient differentiates a solution of strong order ~0.5, so
    the stochastic adjoint (midpoint backward, order 1) and backprop do not meet at the claimed
    order 1: measured slope 0.16, 95% CI [0.07, 0.24] (64 paths, 16..128 steps)."""
    _torchsde()
    r = S.sde_adjoint_convergence(sde_problems.get("kubo_oscillator"), "milstein_strat", backend="torchsde")
    assert r.verdict == "fail" and r.details["fit"]["ci"][1] < r.expected - 0.5, r.message


@pytest.mark.slow
def test_figures_torchsde_adjoint_against_finite_differences() -> None:
    """The report's table (run with -s): torchsde's adjoint against the pathwise FD oracle and
    against backprop as n_steps grows (4 paths, seed 3); every distance falls at least at the
    method's claimed strong order minus the band of properties.sde (point slopes on one path
    set: deterministic)."""
    _torchsde()
    ts = backends.get("torchsde")
    cases = [("gbm_stratonovich", "heun"), ("kp_cubic", "heun"), ("gbm_ito", "milstein"), ("kp_cubic", "milstein"),
             ("kp_additive", "euler"), ("noncommutative", "heun")]
    ns = [16, 64, 256]
    for name, method in cases:
        info = ts.capabilities().sde_methods[method]
        p = sde_problems.get(name)
        p = p if p.calculus == info.calculus else p.as_calculus(info.calculus)
        bm = BrownianTree(*p.t_span, (4, p.noise_dim), seed=3)
        loss = S.default_sde_loss(p)
        to_fd, to_bp = [], []
        for n in ns:
            adj = ts.sde_gradient(p, method, "adjoint", loss, bm=bm, n_steps=n)
            bp = ts.sde_gradient(p, method, "backprop", loss, bm=bm, n_steps=n)
            fd = G.sde_fd_gradient(p, loss, method=info.reference, bm=bm, n_steps=n)
            to_fd.append(np.linalg.norm(adj.flat() - fd.flat()) / np.linalg.norm(fd.flat()))
            to_bp.append(np.linalg.norm(adj.flat() - bp.flat()) / np.linalg.norm(bp.flat()))
        slope = float(-np.polyfit(np.log(ns), np.log(to_fd), 1)[0])
        print(f"{name:18s} {method:9s} adjoint={adj.options['adjoint_method']:9s} adjoint-FD "
              + " ".join(f"{e:.2e}" for e in to_fd) + f" slope {slope:.2f}; adjoint-backprop "
              + " ".join(f"{e:.2e}" for e in to_bp))
        claim = info.strong[p.noise_class]
        assert slope >= claim - 0.5, (name, method, to_fd)
        assert np.allclose(to_fd, to_bp, rtol=1e-4)  # backprop is the FD oracle's derivative to ~1e-10


# ============================================================================ conformance
def test_conformance_adds_the_sde_gradient_records() -> None:
    """check --sde's records of a backend with SDE gradient modes include, per method, each
    discrete mode's accuracy, the continuous adjoint's convergence and (reversible Heun) the
    exact backward pass; a backend without SDE gradient modes adds none."""
    _torchsde()
    from odeverify.conformance import _sde_gradient_records, _sde_problems

    problems = _sde_problems(True)
    recs = _sde_gradient_records(backends.get("torchsde"), ["heun", "reversible_heun"], problems, True)
    got = {(r.property, r.method, r.problem): r.verdict for r in recs}
    for problem in ("gbm_ito[stratonovich]", "kp_cubic[stratonovich]"):
        assert got[("sde_gradient_accuracy", "heun/backprop", problem)] == "pass"
        assert got[("sde_adjoint_convergence", "heun/adjoint", problem)] in ("pass", "skip")
        assert got[("sde_reversible_exactness", "reversible_heun/adjoint", problem)] == "pass"
    assert not [r for r in recs if r.verdict in ("fail", "error")], [r.message for r in recs]
    assert _sde_gradient_records(backends.get("reference-array_api_strict"), ["heun"], problems, True) == []


@pytest.mark.slow
def test_check_sde_includes_the_gradient_records() -> None:
    """run_sde_conformance (check --sde) of torchsde and of the reference, one method each."""
    _torchsde()
    from odeverify.conformance import run_sde_conformance

    for backend, method, mode in (("torchsde", "heun", "backprop"), ("reference", "heun", "discrete")):
        recs = run_sde_conformance(backend=backend, quick=True, methods=[method])
        props = {r.property for r in recs}
        assert {"sde_gradient_accuracy", "sde_adjoint_convergence", "sde_strong_order"} <= props, props
        acc = [r for r in recs if r.property == "sde_gradient_accuracy" and r.method == f"{method}/{mode}"]
        assert acc and all(r.verdict == "pass" for r in acc), [r.message for r in acc]
