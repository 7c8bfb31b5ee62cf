"""Implicit reference solvers (DIRK/ESDIRK, Radau IIA): orders, stiffness, Newton bookkeeping,
failures as statuses, and one code path on NumPy, PyTorch and JAX."""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from odeverify import _xp, backends, solve
from odeverify.metrics import scd
from odeverify.problems import PROBLEMS
from odeverify.problems.stiff import stiff_linear_problem
from odeverify.properties import convergence_order
from odeverify.solution import Status
from odeverify.solvers import SOLVERS, PredictiveController, RadauIIA
from odeverify.solvers.implicit import DIRK, radau_error_weights

# the variable-order BDF is tested in tests/test_bdf.py (no tableau, no fixed-step order)
IMPLICIT = sorted(n for n in SOLVERS.names() if getattr(SOLVERS.get(n), "implicit", False)
                  and not getattr(SOLVERS.get(n), "variable_order", False))
A_STABLE = ("backward_euler", "sdirk2", "kvaerno3", "kvaerno4", "kvaerno5", "radau_iia5")


def test_every_implicit_tableau_has_a_solver():
    assert set(IMPLICIT) >= {"backward_euler", "trapezoid", "sdirk2", "kvaerno3", "kvaerno4", "kvaerno5",
                             "radau_iia5"}
    assert isinstance(SOLVERS.get("radau_iia5"), RadauIIA)
    assert all(isinstance(SOLVERS.get(n), DIRK) for n in IMPLICIT if n != "radau_iia5")


@pytest.mark.parametrize("method", IMPLICIT)
def test_convergence_order_on_a_nonlinear_time_dependent_problem(method):
    """Fixed steps, the Newton iteration driven to round-off: the claimed order is measured
    (finite-difference Jacobians: warped_oscillatory has no analytic one)."""
    rec = convergence_order(PROBLEMS.get("warped_oscillatory"), method, n_max=512)
    assert rec.verdict == "pass", rec.message
    assert abs(rec.measured - SOLVERS.get(method).order) <= 0.15


def test_radau_error_weights_match_hairer_wanner():
    """e = gamma0 (-13 - 7 sqrt6, -13 + 7 sqrt6, -1) / 3 and 1/gamma0 = 3 + 3^(2/3) - 3^(1/3)
    (H&W II, Sec. IV.8, (8.20)); computed here from the tableau."""
    s = SOLVERS.get("radau_iia5")
    g0, e = radau_error_weights(s._A, s._c)
    r6 = math.sqrt(6.0)
    assert 1 / g0 == pytest.approx(3 + 3 ** (2 / 3) - 3 ** (1 / 3), rel=1e-13)
    np.testing.assert_allclose(e, g0 * np.asarray([-13 - 7 * r6, -13 + 7 * r6, -1.0]) / 3, rtol=1e-12)


def _steps(problem, method, **kw):
    b = backends.get("reference")
    sol = b.solve(problem, method, rtol=1e-6, atol=1e-8, max_steps=20_000, **kw)
    return sol


def test_a_stable_methods_take_a_bounded_number_of_steps_as_stiffness_grows():
    """stiff_linear_problem(ratio): the implicit steps stay bounded from ratio 1e2 to 1e6,
    while dopri5's grow with the ratio (its step is bounded by the stability region)."""
    ratios = (1e2, 1e4, 1e6)
    for method in ("kvaerno5", "radau_iia5"):
        steps = []
        for r in ratios:
            sol = _steps(stiff_linear_problem(r), method)
            assert sol.success, (method, r, sol.message)
            steps.append(sol.stats.accepted + sol.stats.rejected)
        assert max(steps) <= 2 * min(steps) + 10, (method, steps)
    with pytest.warns(Warning, match="stiff"):
        dp = [_steps(stiff_linear_problem(r), "dopri5").stats.accepted for r in (1e2, 1e3)]
    assert dp[1] > 5 * dp[0], dp


@pytest.mark.parametrize("name,method,rtol,atol,digits", [
    ("hires", "radau_iia5", 1e-8, 1e-12, 7.0), ("rober", "radau_iia5", 1e-8, 1e-12, 7.0),
    ("hires", "kvaerno5", 1e-8, 1e-12, 6.0), ("hires", "kvaerno4", 1e-7, 1e-11, 6.0),
    ("rober", "kvaerno5", 1e-6, 1e-14, 4.5),
])
def test_stiff_references_are_reached(name, method, rtol, atol, digits):
    """Correct digits (scd, the largest relative error over the components) at the end of
    HIRES and ROBER (t = 1e11) against the Bari test set's published values, with the
    analytic Jacobian. ROBER's y1 ~ 2e-8 at t = 1e11 needs atol well below it."""
    p = PROBLEMS.get(name)
    sol = backends.get("reference").solve(p, method, rtol=rtol, atol=atol, max_steps=50_000)
    assert sol.success, sol.message
    got = scd(sol.ys[-1], p.final_reference())
    assert got >= digits, (name, method, got)
    assert sol.stats.njev >= 1 and sol.stats.nlu >= sol.stats.njev and sol.stats.newton_iters >= sol.stats.accepted


def _small(xp, dtype=None):
    """Van der Pol (mu = 10): nonlinear, mildly stiff, with its Jacobian."""
    mu = 10.0

    def f(t, y):
        return xp.stack([y[..., 1], mu * ((1 - y[..., 0] ** 2) * y[..., 1]) - y[..., 0]], axis=-1)

    def jac(t, y):
        a, b = y[..., 0], y[..., 1]
        zero = xp.zeros_like(a)
        return xp.stack([xp.stack([zero, zero + 1.0], axis=-1),
                         xp.stack([-2 * mu * a * b - 1.0, mu * (1 - a**2)], axis=-1)], axis=-2)

    return f, jac


@pytest.mark.parametrize("method", ["radau_iia5", "kvaerno4"])
def test_work_counters_and_jacobian_sources(method):
    """njev/nlu/newton_iters are counted; a finite-difference Jacobian costs n evaluations of f
    each (counted in nfev), the analytic one none; the steps are the same either way."""
    xp = _xp.get_namespace("numpy")
    f, jac = _small(xp)
    y0 = np.asarray([2.0, 0.0])
    a = solve(f, y0, (0.0, 2.0), method=method, rtol=1e-7, atol=1e-9, jac=jac)
    b = solve(f, y0, (0.0, 2.0), method=method, rtol=1e-7, atol=1e-9)
    assert a.success and b.success
    for s in (a, b):
        assert s.stats.njev >= 1 and s.stats.nlu >= 1 and s.stats.newton_iters >= s.stats.accepted
        assert s.stats.njev < s.stats.accepted  # the Jacobian is reused across steps
        assert s.stats.to_dict()["newton_iters"] == s.stats.newton_iters
    np.testing.assert_allclose(b.ys[-1], a.ys[-1], rtol=1e-5)
    # forward differences: 2 evaluations (n = 2) per Jacobian, on top of the same kind of work
    assert b.stats.nfev >= 2 * b.stats.njev + 0.8 * a.stats.nfev


def test_autodiff_jacobian_on_torch_costs_no_evaluations():
    """PyTorch: the Jacobian comes from torch.func (njev counted, no extra nfev): the solve
    does exactly the work of one given the analytic Jacobian, and agrees with it."""
    if not _xp.available("torch"):
        pytest.skip("torch is not installed")
    xp = _xp.get_namespace("torch")
    import torch

    f, jac = _small(xp)
    y0 = torch.asarray([2.0, 0.0], dtype=torch.float64)
    ad = solve(f, y0, (0.0, 0.5), method="radau_iia5", rtol=1e-7, atol=1e-9)
    an = solve(f, y0, (0.0, 0.5), method="radau_iia5", rtol=1e-7, atol=1e-9, jac=jac)
    assert ad.success and an.success and ad.stats.njev >= 1
    assert ad.stats.to_dict() == an.stats.to_dict()
    np.testing.assert_allclose(_xp.to_numpy(ad.ys), _xp.to_numpy(an.ys), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("library,method", [
    ("torch", "radau_iia5"), ("torch", "kvaerno3"), ("array_api_strict", "radau_iia5"),
    ("array_api_strict", "kvaerno3"), ("jax", "kvaerno3"),
    pytest.param("jax", "radau_iia5", marks=pytest.mark.slow),  # eager JAX: ~10 s
])
def test_same_code_in_every_array_library(library, method):
    """Given the same analytic Jacobian, PyTorch, JAX and array-api-strict take NumPy's steps
    and agree with it to round-off."""
    if not _xp.available(library):
        pytest.skip(f"{library} is not installed")
    p = PROBLEMS.get("rober")
    kw = dict(rtol=1e-5, atol=1e-10, t_eval=[0.0, 0.1, 1.0])
    p = dataclasses.replace(p, t_span=(0.0, 1.0), references=())
    ref = backends.get("reference").solve(p, method, **kw)
    other = backends.get(f"reference-{library}").solve(p, method, **kw)
    assert ref.success and other.success, (ref.message, other.message)
    assert ref.stats.to_dict() == other.stats.to_dict()
    np.testing.assert_allclose(_xp.to_numpy(other.ys), _xp.to_numpy(ref.ys), rtol=1e-12, atol=1e-20)


def test_dense_output_between_steps():
    """Output times inside steps come from the collocation polynomial (Radau) or Hermite (DIRK)."""
    xp = _xp.get_namespace("numpy")
    f, jac = _small(xp)
    te = np.linspace(0.0, 1.0, 11)
    for method in ("radau_iia5", "kvaerno5"):
        a = solve(f, np.asarray([2.0, 0.0]), (0.0, 1.0), method=method, rtol=1e-9, atol=1e-11, t_eval=te, jac=jac)
        b = solve(f, np.asarray([2.0, 0.0]), (0.0, 1.0), method="dop853", rtol=1e-12, atol=1e-14, t_eval=te)
        assert a.success
        assert not set(np.round(a.t_steps, 12)) >= set(np.round(te, 12))  # outputs fall inside steps
        np.testing.assert_allclose(a.ys, b.ys, rtol=1e-6, atol=1e-8)


def test_newton_failure_is_a_status_not_an_exception():
    """A field that is NaN beyond t = 0.5 makes every Newton iteration there fail: the steps
    shrink to underflow and the solve ends with NEWTON_FAILED, saying where and why."""
    xp = _xp.get_namespace("numpy")
    g, jac = _small(xp)

    def f(t, y):
        return g(t, y) * (np.nan if float(t) > 0.5 else 1.0)

    for method in ("radau_iia5", "kvaerno4"):
        sol = solve(f, np.asarray([2.0, 0.0]), (0.0, 1.0), method=method, jac=jac, max_steps=5000)
        assert sol.status is Status.NEWTON_FAILED, (method, sol.status, sol.message)
        assert "t=0.4" in sol.message and "non-finite" in sol.message, sol.message
        assert np.isnan(sol.ys[-1]).all() and sol.stats.rejected > 0 and 0.49 < sol.t_final <= 0.5


def test_singular_iteration_matrix_is_reported():
    xp = _xp.get_namespace("numpy")
    f, _ = _small(xp)
    sol = solve(f, np.asarray([2.0, 0.0]), (0.0, 1.0), method="radau_iia5", n_steps=10,
                jac=lambda t, y: np.full((2, 2), np.nan))
    assert sol.status is Status.NEWTON_FAILED and "singular" in sol.message, sol.message


@pytest.mark.parametrize("shape", [(3, 3), (2,), (2, 2, 2)])
def test_bad_jacobian_shape_is_a_clear_error(shape):
    xp = _xp.get_namespace("numpy")
    f, _ = _small(xp)
    with pytest.raises(ValueError, match=r"jac returned shape .* must return .*\(2, 2\)"):
        solve(f, np.asarray([2.0, 0.0]), (0.0, 1.0), method="radau_iia5", jac=lambda t, y: np.zeros(shape))
    with pytest.raises(TypeError, match="jac="):
        solve(f, np.asarray([2.0, 0.0]), (0.0, 1.0), method="radau_iia5", jac=3)


def test_batch_uses_block_jacobians():
    """A shared-step batch (B, n) is B independent systems: block Jacobians (B, n, n), and
    each sample matches its own solve to the tolerance."""
    xp = _xp.get_namespace("numpy")
    f, jac = _small(xp)
    y0 = np.asarray([[2.0, 0.0], [1.0, 0.5]])
    whole = solve(f, y0, (0.0, 1.0), method="radau_iia5", rtol=1e-9, atol=1e-11, jac=jac)
    fd = solve(f, y0, (0.0, 1.0), method="radau_iia5", rtol=1e-9, atol=1e-11)
    for i in range(2):
        one = solve(f, y0[i], (0.0, 1.0), method="radau_iia5", rtol=1e-9, atol=1e-11, jac=jac)
        np.testing.assert_allclose(whole.ys[-1, i], one.ys[-1], rtol=1e-7)
        np.testing.assert_allclose(fd.ys[-1, i], one.ys[-1], rtol=1e-7)
    per = solve(f, y0, (0.0, 1.0), method="radau_iia5", rtol=1e-9, atol=1e-11, jac=jac, batch="per-sample")
    assert per.success
    np.testing.assert_allclose(per.ys[-1], whole.ys[-1], rtol=1e-7)


def test_predictive_controller_scalar_and_array_agree():
    c = PredictiveController()
    rng = np.random.default_rng(0)
    errs = np.concatenate([[0.0, 1.0, 1.5, math.inf, math.nan], 10.0 ** rng.uniform(-6, 2, 40)])
    hs = 10.0 ** rng.uniform(-4, 0, errs.size)
    st_a = c.init((errs.size,))
    st_s = [c.init(()) for _ in errs]
    for _ in range(3):
        acc, fac, st_a = c(errs, 4, st_a, h=hs, newton_iters=3)
        for i, e in enumerate(errs):
            a, fi, st_s[i] = c(float(e), 4, st_s[i], h=float(hs[i]), newton_iters=3)
            assert a == bool(acc[i]) and fi == float(fac[i])
        assert np.all((fac >= c.factor_min) & (fac <= c.factor_max) | (fac == 0.1))
        assert np.all(fac[~acc] < 1)


@pytest.mark.parametrize("method", ["radau_iia5", "kvaerno4"])
def test_per_sample_batches_do_not_couple_samples(method):
    """batch='per-sample': each sample has its own Newton iteration (convergence, rate
    history, Jacobian schedule, failures), so it takes its solo steps and matches its solo
    solution to round-off."""
    from odeverify.properties import batch_behaviour

    rec = batch_behaviour(PROBLEMS.get("warped_oscillatory"), method)
    assert rec.verdict == "pass", rec.message


@pytest.mark.parametrize("method", ["backward_euler", "bdf"])
@pytest.mark.parametrize("batch", ["shared", "per-sample"])
def test_fixed_step_newton_retries_with_the_jacobian_at_the_step_end(method, batch):
    """y' = -2 t y^2 over [0, 2] in 4 fixed steps: J = -4 t y is zero at t = 0, so the first
    step's simplified Newton iteration (M = I) crawled at rate 0.73 and the solve ended with
    NEWTON_FAILED; every step has a unique root, so the solve must succeed."""
    if method == "bdf" and batch == "per-sample":
        pytest.skip("BDF takes a shared step only")

    def f(t, y):
        return -2.0 * np.reshape(t, (-1, 1)) * y ** 2 if y.ndim == 2 else -2.0 * t * y ** 2

    def jac(t, y):
        return (-4.0 * np.reshape(t, (-1, 1)) * y)[:, :, None] if y.ndim == 2 else np.reshape(-4.0 * t * y, (1, 1))

    y0 = np.array([[1.0], [0.5]]) if batch == "per-sample" else np.array([1.0])
    sol = solve(f, y0, (0.0, 2.0), method=method, n_steps=4, jac=jac, batch=batch)
    assert sol.status is Status.SUCCESS, sol.message
    if method == "backward_euler":  # its first step's root: Y = 1 - 0.5 Y^2, so Y = sqrt(3) - 1
        first = solve(f, y0, (0.0, 0.5), method=method, n_steps=1, jac=jac, batch=batch)
        np.testing.assert_allclose(np.ravel(first.ys[-1])[0], math.sqrt(3.0) - 1.0, rtol=1e-12)
    # y(t) = 1 / (1 + t^2) for y0 = 1, so y(2) = 0.2; a first-order method at h = 0.5
    assert abs(np.ravel(sol.ys[-1])[0] - 0.2) < 0.05
    if batch == "per-sample":  # each sample does what it would do alone
        solo = solve(f, np.array([0.5]), (0.0, 2.0), method=method, n_steps=4, jac=jac)
        np.testing.assert_allclose(np.ravel(sol.ys[-1])[1], solo.ys[-1][0], rtol=1e-13)
