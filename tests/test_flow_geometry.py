"""The geometry of flow maps (odeverify.properties.flow_geometry): orientation, injectivity, the
fold step of each explicit method, the unreachable negation, augmented Neural ODEs, ResNet = Euler."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

from odeverify import strategies as ods
from odeverify.problems.flows import linear_field, mlp_field, sine_field
from odeverify.properties import PROPERTIES
from odeverify.properties import flow_geometry as FG

from .conftest import backend_or_skip

SETTINGS = settings(max_examples=6, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow])
MLP2 = mlp_field(2, 16, 2, "tanh", seed=0, scale=2.0)


def test_registered():
    for f in FG.FLOW_GEOMETRY:
        assert PROPERTIES.get(f.__name__) is f


# ----------------------------------------------------------------------------- orientation
@SETTINGS
@given(ods.flow_fields_1d())
def test_adaptive_flows_keep_the_order(fld):
    r = FG.flow_orientation(fld, "dopri5", rtol=1e-8, atol=1e-10)
    assert r.verdict == "pass", r.describe()
    if r.expected is not None:  # the closed form's smallest ratio, to the solve's accuracy
        assert r.measured == pytest.approx(r.expected, rel=1e-4, abs=1e-6)


def test_orientation_fails_on_an_overshooting_euler_step():
    # f = -3 z, one step of h = 1: z -> -2 z reverses the line
    r = FG.flow_orientation(linear_field([[-3.0]]), "euler", n_steps=1)
    assert r.verdict == "fail" and r.measured == -2.0
    assert FG.flow_orientation(linear_field([[-3.0]]), "euler", n_steps=4).verdict == "pass"


# ----------------------------------------------------------------------------- injectivity
def test_injectivity_of_adaptive_flows_and_liouville():
    assert FG.flow_injectivity(MLP2, "dopri5").verdict == "pass"
    A = np.array([[-0.5, 1.0], [0.3, -1.2]])
    r = FG.flow_injectivity(linear_field(A, [0.1, 0.2]), "dopri5", rtol=1e-10, atol=1e-12)
    assert r.verdict == "pass"
    # the central-difference det of the numerical map is Liouville's exp(T tr A)
    assert r.details["det_max_rel_error_vs_exact"] < 1e-7
    assert r.measured == pytest.approx(math.exp(np.trace(A)), rel=1e-7)


def test_injectivity_detects_a_fold():
    # Euler with h = 1 on an MLP scaled up: I + Df has negative det on an open set
    fld = mlp_field(2, 16, 2, "tanh", seed=0, scale=6.0)
    r = FG.flow_injectivity(fld, "euler", n_steps=1)
    assert r.verdict == "fail" and r.measured < 0
    # det is the robust detector: 8 segments miss the crease, 256 cross it
    assert r.details["segment_reversals"] == 0
    assert FG.flow_injectivity(fld, "euler", n_steps=1, segments=256).details["segment_reversals"] > 0


def test_variational_jacobian_is_the_numerical_maps_jacobian():
    # fixed steps: RK commutes with differentiation, so Z equals D(numerical map); central
    # differences agree to their O(eps^(2/3)) error
    pts = np.random.default_rng(1).uniform(-2, 2, (6, 2))
    phi_v, J_v = FG.variational_jacobian(MLP2, pts, "rk4", n_steps=8)
    phi_d, J_d = FG.map_jacobian(lambda z: FG.flow_map(MLP2, z, "rk4", n_steps=8)[0], pts)
    np.testing.assert_array_equal(phi_v, phi_d)  # the z part is the same computation
    assert np.max(np.abs(J_v - J_d)) < 1e-8 * np.max(np.abs(J_v))
    r = FG.flow_injectivity(mlp_field(2, 16, 2, "tanh", seed=0, scale=6.0), "euler", n_steps=1,
                            jacobian="variational")
    assert r.verdict == "fail" and r.measured < 0


def test_injectivity_on_other_backends():
    backend_or_skip("scipy")
    assert FG.flow_injectivity(MLP2, "RK45", backend="scipy").verdict == "pass"
    assert FG.flow_orientation(sine_field(1.5), "RK45", backend="scipy").verdict == "pass"


# ----------------------------------------------------------------------------- fold step
def test_fold_roots_of_the_stability_polynomials():
    assert FG.fold_root("euler") == pytest.approx(1.0, rel=1e-14)
    # 1 + x + x^2/2 + x^3/6 = 0 at x = -1.5960716379833215 (its only real root)
    assert FG.fold_root("kutta3") == pytest.approx(1.5960716379833215, rel=1e-12)
    for m in ("midpoint", "heun", "rk4", "rk4_38", "dopri5"):  # R > 0 on the whole real line
        assert FG.fold_root(m) == math.inf
    assert FG.fold_root("backward_euler") is None


@pytest.mark.parametrize("method", FG.explicit_methods())
def test_fold_step_on_a_linear_field_matches_theory(method):
    lam = -2.0
    r = FG.flow_fold_step(linear_field([[lam]]), method)
    assert r.verdict == "pass", r.describe()
    x_star = FG.fold_root(method)
    assert r.expected == pytest.approx(x_star / abs(lam), rel=1e-14)
    if math.isfinite(x_star):
        assert r.measured == pytest.approx(x_star / abs(lam), rel=1e-6)
    else:
        assert r.measured == math.inf


def test_fold_step_euler_on_an_mlp_field_matches_its_spectrum():
    r = FG.flow_fold_step(MLP2, "euler")
    assert r.verdict == "pass" and math.isfinite(r.expected)
    assert r.measured == pytest.approx(r.expected, rel=1e-6)


def test_fold_step_euler_in_1d_sees_the_fold_between_sample_points():
    # the order check breaks at 1/|secant slope| of f between neighbours, before det at a sample
    fld = mlp_field(1, 16, 2, "tanh", seed=1, scale=2.0)
    r = FG.flow_fold_step(fld, "euler")
    assert r.verdict == "pass" and r.measured == pytest.approx(r.expected, rel=1e-6)
    assert r.measured * r.details["lipschitz_sample"] < 1.0  # h L ~ 1: the ResNet regime


def test_fold_step_can_fail():
    # the theory says h* = 1/2 for lambda = -2; a wrong claim (a shifted x*) must be caught
    fld = linear_field([[-2.0]])
    r = FG.flow_fold_step(fld, "euler")
    assert r.verdict == "pass"
    orig = FG.fold_root
    try:
        FG.fold_root = lambda m: 1.01 * orig(m)
        assert FG.flow_fold_step(fld, "euler").verdict == "fail"
    finally:
        FG.fold_root = orig


@pytest.mark.slow
@pytest.mark.parametrize("method", FG.explicit_methods())
def test_fold_step_on_mlp_fields(method):
    for fld in (MLP2, mlp_field(1, 16, 2, "tanh", seed=1, scale=2.0)):
        r = FG.flow_fold_step(fld, method)
        assert r.verdict == "pass" and r.measured > 0, r.describe()


# ----------------------------------------------------------------------------- negation
@SETTINGS
@given(ods.flow_fields_1d())
def test_no_flow_negates_the_line(fld):
    r = FG.flow_unreachable_negation(fld, "dopri5", a=1.0, rtol=1e-8, atol=1e-10)
    assert r.verdict == "pass", r.describe()
    assert r.measured >= r.details["lower_bound_order_preserving"] - 1e-7  # E >= a + (phi(a)-phi(-a))/2


def test_negation_search_and_the_euler_contrast():
    r = FG.flow_unreachable_negation(mlp_field(1, 8, 1, seed=3), "dopri5", search_steps=25)
    assert r.verdict == "pass" and r.measured >= 1.0 - (1e-6 + 1e-9)
    assert r.details["euler_contrast"]["error"] == 0.0  # the ResNet step h lambda = -2 is x -> -x exactly
    # the same check on that map fails: a fixed-step Euler map is no flow
    bad = FG.flow_unreachable_negation(linear_field([[-2.0]]), "euler", n_steps=1)
    assert bad.verdict == "fail" and bad.measured == 0.0


@pytest.mark.slow
def test_negation_search_long():
    for seed in range(3):
        r = FG.flow_unreachable_negation(mlp_field(1, 8, 1, seed=seed), "dopri5", search_steps=300, seed=seed)
        assert r.verdict == "pass", r.describe()


# ----------------------------------------------------------------------------- augmented negation
def test_augmented_negation_adaptive_with_gradients():
    pytest.importorskip("torch")
    r = FG.augmented_negation("dopri5", modes=("discrete", "backsolve"))
    assert r.verdict == "pass", r.message
    assert r.details["closed_form_error"] <= r.details["closed_form_bound"]
    # the oracle: complex step against a central difference of the closed form
    d = r.details["oracle"]
    loss = FG.projected_loss(1, 1, 1.0)
    A = np.array([[0.0, -math.pi], [math.pi, 0.0]])
    h = 1e-6
    fd = (FG.closed_form_loss(A, np.zeros(2), 0.0, np.array([0.7 + h, 0.0]), 1.0, loss)
          - FG.closed_form_loss(A, np.zeros(2), 0.0, np.array([0.7 - h, 0.0]), 1.0, loss)) / (2 * h)
    assert d["grad_x"][0] == pytest.approx(float(np.real(fd)), rel=1e-8)
    # L = 0.8 x(1) + x(1)^2/2 with x(1) = -x: dL/dx = -(0.8 - x) = -0.1 at x = 0.7
    assert d["grad_x"][0] == pytest.approx(-0.1, rel=1e-12)


def test_augmented_negation_fixed_steps_converge_at_the_order():
    r = FG.augmented_negation("rk4", n_steps=(8, 16, 32, 64), modes=())
    assert r.verdict == "pass", r.message
    assert abs(r.details["state_slope"] - 4) <= 0.15
    assert r.details["slope"] >= 4 - 0.15  # projected: at least the order (stationary phase at pi)


def test_augmented_negation_catches_a_wrong_gradient(monkeypatch):
    pytest.importorskip("torch")
    real = FG.value_and_grad

    def skewed(*args, **kwargs):
        res = real(*args, **kwargs)
        res.grad_params["b"] = res.grad_params["b"] * 1.001
        return res

    monkeypatch.setattr(FG, "value_and_grad", skewed)
    r = FG.augmented_negation("dopri5", modes=("discrete",))
    assert r.verdict == "fail" and "discrete" in r.message


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["discrete", "backsolve", "checkpoint", "forward", "interpolated", "quadrature"])
def test_augmented_negation_every_mode(mode):
    pytest.importorskip("torch")
    r = FG.augmented_negation("dopri5", modes=(mode,))
    assert r.verdict == "pass", r.message


# ----------------------------------------------------------------------------- ResNet = Euler
@pytest.mark.parametrize("library", ["numpy", "torch"])
@pytest.mark.parametrize("fld", [MLP2, linear_field([[-1.0, 2.0], [-2.0, -0.5]]), sine_field(1.5)],
                         ids=lambda f: f.name)
def test_resnet_is_euler_bit_for_bit(library, fld):
    if library == "torch":
        pytest.importorskip("torch")
    r = FG.resnet_euler(fld, library=library)
    assert r.verdict == "pass", r.message
    assert r.measured == 0.0
    assert abs(r.details["slope"] - 1.0) <= 0.15


def test_resnet_euler_can_fail(monkeypatch):
    real = FG.solve
    monkeypatch.setattr(FG, "solve", lambda *a, **k: real(*a, **{**k, "method": "midpoint"}))
    r = FG.resnet_euler(MLP2)
    assert r.verdict == "fail" and r.measured > 0


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("call, name", [
    (lambda: FG.flow_orientation(MLP2), "field"),
    (lambda: FG.flow_orientation(sine_field(1.0), points=[1.0, 0.5]), "points"),
    (lambda: FG.flow_orientation(sine_field(1.0), rtol=-1.0), "rtol"),
    (lambda: FG.flow_injectivity(MLP2, n_points=0), "n_points"),
    (lambda: FG.flow_injectivity("mlp"), "field"),
    (lambda: FG.flow_injectivity(MLP2, jacobian="exact"), "jacobian"),
    (lambda: FG.flow_fold_step(MLP2, rel_tol=0.5), "rel_tol"),
    (lambda: FG.flow_fold_step(MLP2, h_max=0.0), "h_max"),
    (lambda: FG.flow_fold_step(sine_field(1.0), radius=-1.0), "radius"),
    (lambda: FG.flow_unreachable_negation(sine_field(1.0), a=0.0), "a"),
    (lambda: FG.flow_unreachable_negation(sine_field(1.0), search_steps=-1), "search_steps"),
    (lambda: FG.augmented_negation(x=(0.0,)), "x"),
    (lambda: FG.augmented_negation(n_steps=(8, 16)), "n_steps"),
    (lambda: FG.resnet_euler(MLP2, n_layers=0), "n_layers"),
    (lambda: FG.resnet_euler(MLP2, t_span=(1.0, 1.0)), "t_span"),
])
def test_bad_input_names_the_parameter(call, name):
    with pytest.raises(ValueError, match=name):
        call()
