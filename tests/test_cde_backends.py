"""The CDE backend contract (backends/_cde_driver.py) and the library records of
properties/cde_agreement.py: torchcde and diffrax against odeverify on the same data.

Default tests are the cheap ones (validation, one interpolant record per library with its planted
fault, the unavailable paths); solves, knot handling and gradients of the libraries are slow."""
from __future__ import annotations

import numpy as np
import pytest

from odeverify.backends import UnsupportedOption, get
from odeverify.backends import _cde_driver as driver
from odeverify.gradients._spec import Loss
from odeverify.problems import cde
from odeverify.properties import cde_agreement as ca
from odeverify.solution import Status


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


needs_torchcde = pytest.mark.skipif(not _has("torchcde"), reason="torchcde is not installed")
needs_diffrax = pytest.mark.skipif(not _has("diffrax"), reason="diffrax is not installed")


@pytest.fixture
def linear_problem() -> cde.CDEProblem:
    return cde.get("cde_linear_pl")


# ----------------------------------------------------------------------------- the contract
def test_validation_is_the_same_for_every_backend(linear_problem):
    ref = get("reference")
    with pytest.raises(ValueError, match="unknown CDE option 'rtoll'.*did you mean 'rtol'"):
        ref.solve_cde(linear_problem, "dopri5", rtoll=1e-6)
    with pytest.raises(ValueError, match="knots='jmp'.*jump"):
        ref.solve_cde(linear_problem, "dopri5", knots="jmp")
    with pytest.raises(ValueError, match="no CDE method 'dopri6'.*did you mean"):
        ref.solve_cde(linear_problem, "dopri6")
    with pytest.raises(TypeError, match="CDEProblem"):
        ref.solve_cde(object(), "dopri5")
    with pytest.raises(UnsupportedOption, match="knots='step'"):
        ref.solve_cde(linear_problem, "dopri5", knots="step")
    with pytest.raises(UnsupportedOption, match="control='increment'"):
        ref.solve_cde(linear_problem, "dopri5", control="increment")
    with pytest.raises(ValueError, match="scipy solves no CDEs"):
        get("scipy").solve_cde(linear_problem, "RK45")
    with pytest.raises(ValueError, match="needs time as a channel"):
        ref.solve_cde(linear_problem, "dopri5", interpolation="rectilinear")
    loss = Loss.seeded([1.0], 3)
    with pytest.raises(ValueError, match="hidden dimension 2"):
        ref.cde_gradient(linear_problem, "dopri5", "discrete", loss)
    with pytest.raises(ValueError, match="wrt='z0'"):
        ref.cde_gradient(linear_problem, "dopri5", "discrete", Loss.seeded([1.0], 2), wrt="z0")


def test_reference_steps_on_knots_to_the_closed_form():
    p = cde.get("cde_commuting_natural_cubic")
    ts = ca.output_times(p)
    sol = get("reference").solve_cde(p, "dopri5", rtol=1e-10, atol=1e-12, t_eval=ts)
    assert sol.status.ok
    err = float(np.max(np.abs(sol.ys - ca.exact(p, ts))))
    assert err <= 100 * (1e-10 * float(np.max(np.abs(sol.ys))) + 1e-12)


def test_a_failed_gradient_is_nan_with_its_status_never_zeros(linear_problem):
    loss = Loss.seeded([1.0, 3.0], 2)
    res = get("reference").cde_gradient(linear_problem, "dopri5", "discrete", loss, rtol=1e-8, max_steps=3)
    assert res.status is Status.MAX_STEPS
    assert np.all(np.isnan(res.grad_y0)) and all(np.all(np.isnan(g)) for g in res.grad_params.values())
    assert set(res.grad_params) == {"values", "A", "B"}
    data = driver.failed_cde_gradient(linear_problem, "discrete", "dopri5", "reference", Status.FAILED, "x", "data")
    assert data.grad_y0 is None and set(data.grad_params) == {"values"}


def test_with_interpolation_rebuilds_the_same_data(linear_problem):
    other = driver.with_interpolation(linear_problem, "hermite_cubic_bd")
    assert other.interpolation == "hermite_cubic_bd"
    np.testing.assert_array_equal(other.control.values, linear_problem.control.values)
    assert driver.with_interpolation(linear_problem, None) is linear_problem


def test_fixed_grid_holds_the_knots_unless_none(linear_problem):
    grid = driver.fixed_grid_with_knots(linear_problem, {"n_steps": 4}, "jump")
    assert set(np.round(linear_problem.knots, 12)) <= set(np.round(grid, 12))
    plain = driver.fixed_grid_with_knots(linear_problem, {"n_steps": 4}, "none")
    assert plain.size == 5


# ----------------------------------------------------------------------------- unavailable libraries
@pytest.mark.parametrize("name", ["torchcde", "diffrax"])
def test_a_missing_library_is_unavailable_not_a_crash(name, linear_problem, monkeypatch):
    b = get(name)
    monkeypatch.setattr(type(b), "available", lambda self: False)
    sol = b.solve_cde(linear_problem, "dopri5")
    assert sol.status is Status.UNAVAILABLE and np.all(np.isnan(sol.ys))
    res = b.cde_gradient(linear_problem, "dopri5", "backprop", Loss.seeded([1.0], 2))
    assert res.status is Status.UNAVAILABLE and np.all(np.isnan(res.grad_params["values"]))
    rec = ca.cde_library_interpolant(linear_problem, backend=name)
    assert rec.verdict == "unavailable" and "install" in rec.message
    assert ca.cde_library_records(name, quick=True)[0].verdict == "unavailable"


# ----------------------------------------------------------------------------- interpolants (cheap)
def _drop_channel(mod):
    """A planted fault: the library's interpolant with channel 1 of the data replaced by zeros."""
    def fn(problem, ts, *, values=None, kind=None):
        v = np.array(problem.control.values if values is None else values)
        v[:, 1] = 0.0
        return mod.interpolant(problem, ts, values=v, kind=kind)
    return fn


def _shifted_knots(mod):
    """A planted fault: the interpolant evaluated at times shifted by a tenth of the smallest gap
    (as if built on the wrong knots)."""
    def fn(problem, ts, *, values=None, kind=None):
        shift = 0.1 * float(np.min(np.diff(problem.control.breaks)))
        return mod.interpolant(problem, np.asarray(ts) + shift, values=values, kind=kind)
    return fn


@needs_torchcde
def test_torchcde_interpolant_is_odeverifys_and_planted_faults_fail(linear_problem):
    from odeverify.backends import torchcde_backend as mod

    rec = ca.cde_library_interpolant(linear_problem, backend="torchcde")
    assert rec.verdict == "pass", rec.message
    assert rec.details["knot_side"] == "left"  # torchcde's bucketize: the piece ending at the knot
    for fault in (_drop_channel(mod), _shifted_knots(mod)):
        bad = ca.cde_library_interpolant(linear_problem, backend="torchcde", interpolant=fault)
        assert bad.verdict == "fail", bad.message


@needs_diffrax
def test_diffrax_refuses_what_it_has_not_before_compiling(linear_problem):
    b = get("diffrax")
    caps = driver.cde_capabilities(b)
    assert "natural_cubic" not in caps.interpolations and "increment" in caps.controls
    with pytest.raises(UnsupportedOption, match="natural_cubic"):
        b.solve_cde(linear_problem, "Dopri5", interpolation="natural_cubic")
    with pytest.raises(UnsupportedOption, match="StepTo"):
        b.solve_cde(linear_problem, "Tsit5", n_steps=16)
    with pytest.raises(ValueError, match="no CDE method 'dopri5'.*Dopri5"):
        b.solve_cde(linear_problem, "dopri5")


@pytest.mark.slow
@needs_diffrax
def test_diffrax_interpolant_is_odeverifys_and_planted_faults_fail(linear_problem):
    from odeverify.backends import diffrax_cde as mod

    rec = ca.cde_library_interpolant(linear_problem, backend="diffrax")
    assert rec.verdict == "pass", rec.message
    assert rec.details["knot_side"] == "left"  # diffrax's derivative(t, left=True)
    bad = ca.cde_library_interpolant(linear_problem, backend="diffrax", interpolant=_drop_channel(mod))
    assert bad.verdict == "fail", bad.message


# ----------------------------------------------------------------------------- slow: solves and gradients
@pytest.mark.slow
@needs_torchcde
def test_torchcde_cubic_interpolants_and_missing_values(linear_problem):
    for kind in ("natural_cubic", "hermite_cubic_bd"):
        assert ca.cde_library_interpolant(linear_problem, kind, backend="torchcde").verdict == "pass"
    assert ca.cde_library_interpolant(cde.get("cde_rectilinear"), backend="torchcde").verdict == "pass"
    # torchcde fills NaN linearly for linear and Hermite coefficients (odeverify's fill='linear')
    for kind in ("linear", "hermite_cubic_bd"):
        rec = ca.cde_library_missing(linear_problem, kind, backend="torchcde")
        assert rec.verdict == "pass" and "'linear'" in rec.message, rec.message
    # natural_cubic_coeffs splines each channel through its observed points: its own rule
    rec = ca.cde_library_missing(linear_problem, "natural_cubic", backend="torchcde")
    assert rec.verdict == "deviation" and rec.measured > 1e-3, rec.message


@pytest.mark.slow
@needs_torchcde
def test_torchcde_solution_knots_and_gradients(linear_problem, monkeypatch):
    from odeverify.backends import torchcde_backend as mod

    assert ca.cde_library_solution(linear_problem, backend="torchcde").verdict == "pass"
    knots = ca.cde_library_knots(linear_problem, backend="torchcde")
    assert knots.verdict == "deviation" and knots.details["rules"]["step"]["error"] > knots.details["bound"]
    assert ca.cde_library_fixed_order(linear_problem, backend="torchcde", knots="jump").verdict == "pass"
    assert ca.cde_library_fixed_order(linear_problem, backend="torchcde", knots="step").verdict == "deviation"
    for mode in ("backprop", "adjoint"):
        rec = ca.cde_library_gradient(linear_problem, backend="torchcde", mode=mode)
        assert rec.verdict == "pass", rec.message

    # planted: the adapter hands cdeint the coefficients of data with a channel dropped
    real = mod.control_path

    def dropped(problem, values=None, dtype="float64"):
        import torch

        v = torch.tensor(problem.control.values) if values is None else values
        return real(problem, values=v * torch.tensor([1.0, 0.0]), dtype=dtype)

    monkeypatch.setattr(mod, "control_path", dropped)
    assert ca.cde_library_solution(linear_problem, backend="torchcde").verdict == "fail"
    assert ca.cde_library_gradient(linear_problem, backend="torchcde").verdict == "fail"
    monkeypatch.setattr(mod, "control_path", real)

    # planted: jump times off the knots by a fifth of the smallest gap
    real_kwargs = mod._kwargs

    def wrong_knots(problem, info, options, dtype):
        kw, steps = real_kwargs(problem, info, options, dtype)
        if "jump_t" in kw["options"]:
            kw["options"]["jump_t"] = kw["options"]["jump_t"] + 0.2 * float(np.min(np.diff(problem.knots)))
        return kw, steps

    monkeypatch.setattr(mod, "_kwargs", wrong_knots)
    rec = ca.cde_library_knots(linear_problem, backend="torchcde")
    assert rec.verdict == "fail", rec.message


@pytest.mark.slow
@needs_torchcde
def test_torchdiffeq_ignores_every_jump_after_one_a_step_lands_on():
    """torchdiffeq's strict jump test (t0 < jump < t0 + dt) on rectilinear's integer knots: the
    documented deviation must still fail before its entry applies (the entry is not stale)."""
    from odeverify import expectations

    rec = ca.cde_library_knots(cde.get("cde_rectilinear"), backend="torchcde")
    assert rec.verdict == "fail", rec.message
    assert rec.details["rules"]["jump"]["error"] > rec.details["bound"]
    assert expectations.apply(rec).verdict == "deviation"


@pytest.mark.slow
@needs_torchcde
def test_torchcde_gradient_on_a_neural_field_against_differences():
    rec = ca.cde_library_gradient(cde.get("cde_neural"), backend="torchcde", mode="adjoint")
    assert rec.verdict == "pass", rec.message
    assert rec.details["oracle"].startswith("Richardson")
    # the commuting closed form holds for the data and z0 only: A and B are graded by differences
    rec = ca.cde_library_gradient(cde.get("cde_commuting_hermite_cubic_bd"), backend="torchcde")
    assert rec.verdict == "pass", rec.message
    assert "(values, y0)" in rec.details["oracle"] and "Richardson" in rec.details["oracle"]


@pytest.mark.slow
@needs_diffrax
def test_diffrax_solution_knots_gradients_and_the_missing_natural_spline(linear_problem, monkeypatch):
    from odeverify.backends import diffrax_cde as mod

    nat = ca.cde_library_interpolant(linear_problem, "natural_cubic", backend="diffrax")
    assert nat.verdict == "deviation" and nat.measured > 1e-3, nat.message
    assert ca.cde_library_solution(linear_problem, backend="diffrax").verdict == "pass"
    assert ca.cde_library_knots(linear_problem, backend="diffrax").verdict == "deviation"
    step = ca.cde_library_fixed_order(linear_problem, backend="diffrax", knots="step", control="derivative")
    inc = ca.cde_library_fixed_order(linear_problem, backend="diffrax", knots="step", control="increment")
    # increments are exact over a step inside one piece: the order is kept (a fit of 3.5-5 over
    # n = 32..128, the union grid's steps not halving evenly), where dX/dt at a knot loses it
    assert step.verdict == "deviation" and inc.verdict != "deviation", (step.message, inc.message)
    assert inc.measured > step.measured + 2
    for mode in ("recursive_checkpoint", "backsolve"):
        rec = ca.cde_library_gradient(linear_problem, backend="diffrax", mode=mode)
        assert rec.verdict == "pass", rec.message

    # planted: the compiled solve builds X from data with channel 1 dropped
    real = mod._path

    def dropped(diffrax, jnp, kind, times, values):
        return real(diffrax, jnp, kind, times, values * jnp.asarray([1.0, 0.0]))

    monkeypatch.setattr(mod, "_path", dropped)
    mod._CACHE.clear()
    try:
        assert ca.cde_library_solution(linear_problem, backend="diffrax").verdict == "fail"
        assert ca.cde_library_gradient(linear_problem, backend="diffrax").verdict == "fail"
    finally:
        mod._CACHE.clear()
