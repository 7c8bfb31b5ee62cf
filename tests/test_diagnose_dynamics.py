"""odeverify.diagnose.dynamics: the Lyapunov spectrum, the flow map's singular values and the
gradient spread, against oracles that share no code with them (Lorenz's published exponent and
closed-form trace, the real parts of a linear field's eigenvalues, scipy.linalg.expm, finite
differences of the solution), with planted faults (no re-orthonormalisation, no renormalisation,
the wrong sign in the variational equation) that must fail."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
from hypothesis import given
from hypothesis import strategies as st

from odeverify.diagnose import dynamics
from odeverify.diagnose.dynamics import (
    EXPLODE,
    VANISH,
    diagnose_gradient_spread,
    diagnose_lyapunov,
    diagnose_sensitivity,
    flow_jacobians,
    lyapunov_spectrum,
    spectrum_sum_error,
)
from odeverify.integrate import solve

SIGMA, RHO, BETA = 10.0, 28.0, 8.0 / 3.0
#: Sprott, Chaos and Time-Series Analysis (Oxford 2003), Table A.1
LORENZ_LARGEST = 0.9056
LORENZ_TRACE = -(SIGMA + 1.0 + BETA)
LORENZ_Z0 = np.array([[1.0, 1.0, 1.0], [2.0, 1.0, 3.0], [-3.0, 2.0, 20.0], [5.0, 5.0, 25.0]])


def lorenz(t, z):
    x, y, w = z[:, 0], z[:, 1], z[:, 2]
    return np.stack([SIGMA * (y - x), x * (RHO - w) - y, x * y - BETA * w], axis=1)


def lorenz_jac(t, z):
    x, y, w = z[:, 0], z[:, 1], z[:, 2]
    J = np.zeros((z.shape[0], 3, 3))
    J[:, 0, 0], J[:, 0, 1] = -SIGMA, SIGMA
    J[:, 1, 0], J[:, 1, 1], J[:, 1, 2] = RHO - w, -1.0, -x
    J[:, 2, 0], J[:, 2, 1], J[:, 2, 2] = y, x, -BETA
    return J


def linear_normal(seed: int = 7) -> tuple[np.ndarray, np.ndarray]:
    """A = V D V^T (V orthogonal): a rotation-decay pair -0.5 +- 2i and -1.5, -3, -4.5; the
    exponents, descending, are the real parts."""
    V = np.linalg.qr(np.random.default_rng(seed).standard_normal((5, 5)))[0]
    D = np.diag([-0.5, -0.5, -1.5, -3.0, -4.5])
    D[0, 1], D[1, 0] = 2.0, -2.0
    return V @ D @ V.T, np.array([-0.5, -0.5, -1.5, -3.0, -4.5])


def linear(A):
    return (lambda t, z: z @ A.T), (lambda t, z: A)


def columns_only(Q):
    """Planted fault: normalise each tangent vector, never orthogonalise (all align with the
    most expanding direction)."""
    norms = np.linalg.norm(Q, axis=1)
    return Q / norms[:, None, :], np.log(norms)


def no_renormalisation(Q):
    """Planted fault: the tangent vectors are never rescaled (they grow until they overflow; the
    accumulated growth stays zero)."""
    return Q, np.zeros(Q.shape[::2])


def wrong_sign(jvp, Q):
    """Planted fault: the variational equation with the wrong sign."""
    return -jvp(Q)


# ----------------------------------------------------------------------------- Lyapunov
def test_lorenz_spectrum_sum_is_the_trace_and_the_run_is_flagged_chaotic():
    """Liouville: sum lambda_i = -(sigma + 1 + beta) over any horizon (the closed form; the
    tolerance 1e-6 is 100x the rtol 1e-8 of the tangent solve)."""
    res = lyapunov_spectrum(lorenz, LORENZ_Z0[:1], (0.0, 10.0), jac=lorenz_jac, transient=5.0)
    assert res.success
    assert abs(res.exponents.sum() - LORENZ_TRACE) < 1e-6
    assert np.allclose(res.trace_mean, LORENZ_TRACE, atol=1e-9)
    assert res.exponents[0, 0] > 0 and res.exponents[0, 2] < -13
    rec = diagnose_lyapunov(lorenz, LORENZ_Z0[2:3], (0.0, 12.0), jac=lorenz_jac, name="lorenz")
    assert rec.verdict == "fail", rec.message
    assert "chaotic" in rec.message and rec.measured > rec.expected
    assert len(rec.details["times"]) == len(rec.details["running_lambda1"]["median"]) > 10


@pytest.mark.slow
def test_lorenz_largest_exponent_is_sprotts():
    """lambda_1 = 0.9056 (Sprott 2003, Table A.1): the mean finite-time exponent of four initial
    states over T = 1000 after a transient of 50, DOP853 at rtol 1e-9, within 0.01 (the four
    exponents spread 0.898-0.907 here: the finite-time estimate's own spread ~ 1/sqrt(T);
    ~35 s of CPU)."""
    res = lyapunov_spectrum(lorenz, LORENZ_Z0, (0.0, 1000.0), jac=lorenz_jac, transient=50.0, rtol=1e-9,
                            atol=1e-11)
    assert res.success
    assert abs(res.exponents[:, 0].mean() - LORENZ_LARGEST) < 0.01
    assert np.all(np.abs(res.exponents[:, 1]) < 0.01)
    assert spectrum_sum_error(res) < 1e-6


def test_linear_field_exponents_are_the_real_parts_and_not_chaotic():
    """For a normal linear field the finite-time error is exactly c / T (c from the initial
    tangent vectors' overlap with the eigenvectors), so 2 lambda(2T) - lambda(T) is the real
    part of the spectrum up to the solver (1e-6 at rtol 1e-8)."""
    A, re = linear_normal()
    f, jac = linear(A)
    z0 = np.random.default_rng(1).standard_normal((2, 5))
    lam = [lyapunov_spectrum(f, z0, (0.0, T), jac=jac).exponents for T in (10.0, 20.0)]
    assert np.max(np.abs(2 * lam[1] - lam[0] - re)) < 1e-6
    assert np.max(np.abs(lam[1] - re)) < 0.1  # the c/T error itself, stated for the figure's reader
    rec = diagnose_lyapunov(f, z0, (0.0, 10.0), jac=jac)
    assert rec.verdict == "pass", rec.message
    assert rec.measured < 0


def test_directional_differences_are_exact_on_lorenz():
    """Lorenz's field is quadratic, so central differences are exact up to round-off."""
    z = LORENZ_Z0 + 0.3
    J = dynamics.central_jacobian(lorenz, 0.0, z)
    assert np.max(np.abs(J - lorenz_jac(0.0, z))) < 1e-8
    V = np.random.default_rng(2).standard_normal((4, 3, 2)) * np.array([1e-3, 1e3])
    assert np.allclose(dynamics.directional(lorenz, 0.0, z, V), lorenz_jac(0.0, z) @ V, rtol=1e-8, atol=1e-8)


@st.composite
def normal_spectra(draw):
    """A normal matrix V D V^T (V a seeded random orthogonal 2..4-d matrix) with real eigenvalues
    1.5 apart or more in [-8, 1], or a rotation-decay pair in front: its exponents, descending."""
    n = draw(st.integers(2, 4))
    top = draw(st.floats(-2.0, 1.0))
    gaps = draw(st.lists(st.floats(1.5, 2.0), min_size=n - 1, max_size=n - 1))
    re = top - np.concatenate([[0.0], np.cumsum(gaps)])
    D = np.diag(re)
    if draw(st.booleans()):
        re[1] = re[0]
        D[1, 1] = re[0]
        D[0, 1] = draw(st.floats(0.5, 3.0))
        D[1, 0] = -D[0, 1]
    V = np.linalg.qr(np.random.default_rng(draw(st.integers(0, 2**16))).standard_normal((n, n)))[0]
    return V @ D @ V.T, re


@given(normal_spectra())
def test_generated_normal_fields_exponents_are_the_real_parts(case):
    """Generated normal linear fields: 2 lambda(20) - lambda(10) equals the real parts to 1e-6
    (the eigenvalue gaps >= 1.5 make the tangent vectors' misalignment decay as exp(-15))."""
    A, re = case
    f, jac = linear(A)
    z0 = np.ones((1, A.shape[0]))
    lam = [lyapunov_spectrum(f, z0, (0.0, T), jac=jac).exponents[0] for T in (10.0, 20.0)]
    assert np.max(np.abs(2 * lam[1] - lam[0] - re)) < 1e-6


@given(st.integers(0, 2**16), st.integers(2, 5), st.floats(0.1, 3.0))
def test_generated_flow_maps_are_expms(seed, n, t):
    """Generated non-normal A (N(0, 1) entries shifted by -1.5 I): the flow map's singular values
    at t equal scipy.linalg.expm(A t)'s, relative 1e-7 at rtol 1e-11."""
    A = np.random.default_rng(seed).standard_normal((n, n)) - 1.5 * np.eye(n)
    f, jac = linear(A)
    _, Phi, sol = flow_jacobians(f, np.ones((1, n)), (0.0, t), jac=jac, rtol=1e-11, atol=1e-13)
    assert sol.success
    want = np.linalg.svd(scipy.linalg.expm(A * t), compute_uv=False)
    assert np.max(np.abs(np.linalg.svd(Phi[-1, 0], compute_uv=False) / want - 1)) < 1e-7


def test_finite_difference_jacobian_gives_the_same_exponents():
    A, re = linear_normal()
    f, jac = linear(A)
    z0 = np.random.default_rng(1).standard_normal((1, 5))
    a = lyapunov_spectrum(f, z0, (0.0, 10.0), jac=jac).exponents
    b = lyapunov_spectrum(f, z0, (0.0, 10.0)).exponents
    assert np.max(np.abs(a - b)) < 1e-7


@pytest.mark.parametrize("fault", [columns_only, no_renormalisation], ids=["no-orthogonalisation", "no-rescaling"])
def test_planted_reorthonormalisation_fault_fails(monkeypatch, fault):
    monkeypatch.setattr(dynamics, "reorthonormalise", fault)
    A, re = linear_normal()
    f, jac = linear(A)
    z0 = np.random.default_rng(1).standard_normal((2, 5))
    lam = [lyapunov_spectrum(f, z0, (0.0, T), jac=jac).exponents for T in (10.0, 20.0)]
    assert np.max(np.abs(2 * lam[1] - lam[0] - re)) > 0.5
    rec = diagnose_lyapunov(lorenz, LORENZ_Z0[:1], (0.0, 4.0), jac=lorenz_jac)
    assert rec.verdict == "error", rec.message
    assert "sum differs" in rec.message


def test_planted_fault_no_rescaling_overflows():
    """At the unstable fixed point 0 of z' = diag(40, -1) z (the state stays 0), without any
    renormalisation the tangent vectors grow as exp(40 t) and overflow float64 near t = 17.7:
    the run ends as a status (or with exponents far from 40)."""
    f, jac = linear(np.array([[40.0, 0.0], [0.0, -1.0]]))
    healthy = lyapunov_spectrum(f, np.zeros((1, 2)), (0.0, 20.0), jac=jac, rtol=1e-6, atol=1e-8)
    assert healthy.success and abs(healthy.exponents[0, 0] - 40.0) < 0.1
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(dynamics, "reorthonormalise", no_renormalisation)
        res = lyapunov_spectrum(f, np.zeros((1, 2)), (0.0, 20.0), jac=jac, rtol=1e-6, atol=1e-8)
    assert not res.success or abs(res.exponents[0, 0] - 40.0) > 1.0


def test_planted_wrong_sign_fails(monkeypatch):
    monkeypatch.setattr(dynamics, "tangent_rhs", wrong_sign)
    A, re = linear_normal()
    f, jac = linear(A)
    z0 = np.random.default_rng(1).standard_normal((1, 5))
    lam = [lyapunov_spectrum(f, z0, (0.0, T), jac=jac).exponents for T in (10.0, 20.0)]
    assert np.max(np.abs(2 * lam[1] - lam[0] - re)) > 0.5
    rec = diagnose_lyapunov(lorenz, LORENZ_Z0[:1], (0.0, 4.0), jac=lorenz_jac)
    assert rec.verdict == "error"
    rec = diagnose_lyapunov(lorenz, LORENZ_Z0[:1], (0.0, 4.0))  # the difference path too
    assert rec.verdict == "error"
    ts = (0.0, 0.5)
    _, Phi, _ = flow_jacobians(f, z0, ts, jac=jac, rtol=1e-10, atol=1e-12)
    assert np.max(np.abs(Phi[-1, 0] - scipy.linalg.expm(A * 0.5))) > 0.1


# ----------------------------------------------------------------------------- sensitivity
def nonnormal(seed: int = 3, shift: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((4, 4)) - 2.0 * np.eye(4) + shift * np.eye(4)


def test_flow_map_singular_values_are_expms():
    """The singular values of dz(t)/dz(0) of z' = A z at every output time equal those of
    scipy.linalg.expm(A t) (a Padé approximant: no code shared), relative 1e-8 at rtol 1e-11."""
    A = nonnormal()
    f, jac = linear(A)
    ts = np.linspace(0.0, 2.0, 5)
    _, Phi, sol = flow_jacobians(f, np.ones((2, 4)), ts, jac=jac, rtol=1e-11, atol=1e-13)
    assert sol.success
    for i, t in enumerate(ts):
        want = np.linalg.svd(scipy.linalg.expm(A * t), compute_uv=False)
        got = np.linalg.svd(Phi[i], compute_uv=False)
        assert np.max(np.abs(got / want - 1)) < 1e-8


def test_sensitivity_rates_and_verdicts_on_symmetric_linear_fields():
    """A symmetric A: sigma_max(t) = exp(lambda_max t) exactly, so the fitted rate is lambda_max;
    eigenvalues <= -7 make every direction vanish below 1e-3 by t = 1 (flagged), one of +8
    explodes past 1e3 (flagged), and -1..-0.2 stays inside (not flagged)."""
    V = np.linalg.qr(np.random.default_rng(5).standard_normal((3, 3)))[0]
    z0 = np.random.default_rng(6).standard_normal((2, 3))
    cases = {"vanish": ([-7.0, -8.0, -9.0], "fail"), "explode": ([8.0, -1.0, -2.0], "fail"),
             "healthy": ([-0.2, -0.5, -1.0], "pass")}
    for label, (eig, verdict) in cases.items():
        A = V @ np.diag(eig) @ V.T
        rec = diagnose_sensitivity(*linear(A)[:1], z0, (0.0, 1.0), jac=linear(A)[1], times=8, name=label)
        assert rec.verdict == verdict, (label, rec.message)
        assert np.allclose(rec.details["rate_max"], max(eig), atol=1e-6), label
        assert np.allclose(rec.details["rate_min"], min(eig), atol=1e-6), label
        if label == "vanish":
            assert rec.measured < VANISH and "vanishing" in rec.message and "past t - t0" in rec.message
        if label == "explode":
            assert rec.measured > EXPLODE and "exploding" in rec.message
        # |dL/dz0| = |Phi^T z(t)| = |expm(2 A t) z0| for L = |z(t)|^2 / 2
        ts = np.asarray(rec.details["times"])
        want = np.linalg.norm(np.stack([z0 @ scipy.linalg.expm(2 * A * t) for t in ts]), axis=-1)
        assert np.allclose(rec.details["grad_z0_norm"], want, rtol=1e-6)


def test_planted_wrong_sign_fails_the_sensitivity_oracle(monkeypatch):
    monkeypatch.setattr(dynamics, "tangent_rhs", wrong_sign)
    A = nonnormal()
    f, jac = linear(A)
    _, Phi, _ = flow_jacobians(f, np.ones((1, 4)), (0.0, 1.0), jac=jac, rtol=1e-10, atol=1e-12)
    want = np.linalg.svd(scipy.linalg.expm(A), compute_uv=False)
    assert np.max(np.abs(np.linalg.svd(Phi[-1, 0], compute_uv=False) / want - 1)) > 0.1


# ----------------------------------------------------------------------------- gradient spread
def lorenz_loss_fd(z0: np.ndarray, T: float, h: float = 1e-6) -> np.ndarray:
    """d(|z(T)|^2 / 2)/dz0 by central differences of tight solves (the oracle)."""
    def L(z):
        sol = solve(lorenz, z[None, :], (0.0, T), method="dop853", rtol=1e-12, atol=1e-12)
        return 0.5 * float(np.sum(np.asarray(sol.ys[-1]) ** 2))
    return np.array([(L(z0 + h * e) - L(z0 - h * e)) / (2 * h) for e in np.eye(3)])


def test_variational_gradient_matches_finite_differences_and_the_wrong_sign_does_not(monkeypatch):
    z0 = LORENZ_Z0[1]
    want = lorenz_loss_fd(z0, 0.5)
    for planted in (False, True):
        if planted:
            monkeypatch.setattr(dynamics, "tangent_rhs", wrong_sign)
        zs, Phi, _ = flow_jacobians(lorenz, z0[None, :], (0.0, 0.5), jac=lorenz_jac, rtol=1e-11, atol=1e-12)
        got = Phi[-1, 0].T @ zs[-1, 0]
        err = np.max(np.abs(got - want)) / np.max(np.abs(want))
        assert (err > 0.1) if planted else (err < 1e-6), (planted, err)


def test_gradient_spread_flags_lorenz_and_passes_a_dissipative_field():
    """From two states near Lorenz's attractor over T = 10, a perturbation of z0 of 1e-6 changes
    the gradient by ~exp(0.9 * 10) 1e-6 ~ 1e-2 (measured 0.079 for the worse one): above 100
    rtol. A contracting linear field changes the gradient by ~rtol."""
    rec = diagnose_gradient_spread(lorenz, LORENZ_Z0[2:], (0.0, 10.0), jac=lorenz_jac, perturbations=3,
                                   name="lorenz")
    assert rec.verdict == "fail", rec.message
    assert rec.measured > rec.expected == 100 * 1e-6
    A, _ = linear_normal()
    rec = diagnose_gradient_spread(*linear(A)[:1], np.ones((2, 5)), (0.0, 2.0), jac=linear(A)[1], perturbations=3)
    assert rec.verdict == "pass", rec.message
    assert rec.measured < 10 * 1e-6


# ----------------------------------------------------------------------------- inputs
@pytest.mark.parametrize("kwargs, match", [
    ({"t_span": (1.0, 0.0)}, "t_span"), ({"t_span": (0.0, float("nan"))}, "t_span"),
    ({"z0": np.ones((2, 2, 2))}, "z0"), ({"z0": np.array([[np.nan, 1.0, 1.0]])}, "z0"),
    ({"k": 4}, "k="), ({"transient": -1.0}, "transient"), ({"interval": 0.0}, "interval"),
])
def test_bad_input_raises_naming_the_parameter(kwargs, match):
    args = {"z0": LORENZ_Z0[:1], "t_span": (0.0, 1.0)} | kwargs
    z0, span = args.pop("z0"), args.pop("t_span")
    with pytest.raises(ValueError, match=match):
        lyapunov_spectrum(lorenz, z0, span, jac=lorenz_jac, **args)


def test_non_callable_field_raises_type_error():
    with pytest.raises(TypeError, match="f="):
        lyapunov_spectrum(3.0, LORENZ_Z0[:1], (0.0, 1.0))
    with pytest.raises(ValueError, match="z0 and t_span"):
        diagnose_lyapunov(lorenz)


def test_a_failed_solve_is_an_error_record_not_a_crash():
    """A field that blows up in finite time (z' = z^2 from 1 at t = 1) ends as a status; the
    sensitivity is measured up to the last output time reached (and explodes there: dz(t)/dz0 =
    1/(1-t)^2), with the stop in the message; with no output time reached it is an error."""
    rec = diagnose_lyapunov(lambda t, z: z ** 2, np.ones((1, 1)), (0.0, 2.0), jac=lambda t, z: 2 * z[:, :, None])
    assert rec.verdict == "error" and rec.status != "success"
    rec = diagnose_sensitivity(lambda t, z: z ** 2, np.ones((1, 1)), (0.0, 2.0), jac=lambda t, z: 2 * z[:, :, None],
                               times=200)
    assert rec.verdict == "fail" and "stopped after t = " in rec.message and rec.measured > EXPLODE
    rec = diagnose_sensitivity(lambda t, z: z ** 2, np.full((1, 1), 4.0), (0.5, 2.0),  # blows up at t = 0.75
                               jac=lambda t, z: 2 * z[:, :, None], times=2)
    assert rec.verdict in ("error", "skip") and rec.status != "success"


def test_user_model_numpy_field():
    """A UserModel (NumPy field: the model's forward-difference Jacobian) gives its batch, span and
    name; a rotation-free decaying field is not chaotic and its exponent is its decay rate."""
    from odeverify.diagnose import UserModel

    def field(t, z):
        return -0.7 * z

    model = UserModel.build(field, np.ones((3, 2)), (0.0, 2.0), name="decay")
    rec = diagnose_lyapunov(model)
    assert rec.verdict == "pass" and rec.problem == "decay"
    assert abs(rec.measured + 0.7) < 1e-5
    rec = diagnose_gradient_spread(model, perturbations=2)
    assert rec.verdict == "pass" and rec.details["rtol"] == model.rtol


# ----------------------------------------------------------------------------- the example fields
def example(name: str):
    pytest.importorskip("torch")
    import importlib.util
    import pathlib

    path = pathlib.Path(__file__).resolve().parents[1] / "examples" / "diagnose_fields.py"
    spec = importlib.util.spec_from_file_location("diagnose_fields", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    f, jac = mod.numpy_pair(mod.FIELDS[name]())
    return mod, f, jac, mod.initial_states(name, 4).numpy()


def test_example_dissipative_field_contracts_as_its_construction_bounds():
    """-z + 0.5 MLP with unit spectral norms has logarithmic norm <= -0.5: every exponent and
    every rate of sigma_max is <= -0.5, and sigma_max(t) <= exp(-0.5 t)."""
    _, f, _, z0 = example("dissipative")  # the directional-difference path (no jac)
    rec = diagnose_sensitivity(f, z0[:1], (0.0, 1.0), times=4, rtol=1e-7, name="dissipative")
    assert rec.verdict == "pass", rec.message
    ts = np.asarray(rec.details["times"])
    assert np.all(np.asarray(rec.details["sigma_max"]) <= np.exp(-0.5 * ts)[:, None] * (1 + 1e-7))
    res = lyapunov_spectrum(f, z0[:1], (0.0, 1.0), rtol=1e-6, atol=1e-9)
    assert np.all(res.exponents <= -0.5 + 1e-6)
    assert spectrum_sum_error(res) < 1e-4


def test_example_chaotic_field_has_the_skew_products_trace():
    """The chaotic example's trace is speed * (-(sigma + 1 + beta) - 29) everywhere (Lorenz's
    constant trace plus 29 rates -1; the rotation keeps it): the spectrum's sum over any horizon."""
    mod, f, jac, z0 = example("chaotic")
    want = mod.SPEED * (LORENZ_TRACE - (mod.DIM - 3))
    assert np.allclose(np.trace(jac(0.0, z0), axis1=1, axis2=2), want, rtol=1e-12)


@pytest.mark.slow
def test_example_chaotic_field_is_flagged_and_the_stiff_one_is_stiff():
    """The chaotic example over its span (0, 1) is flagged by diagnose_lyapunov (exponent 9.056
    per time unit by construction); the stiff example's Jacobian has eigenvalues from about -1
    to -1e4."""
    _, f, jac, z0 = example("chaotic")
    rec = diagnose_lyapunov(f, z0[:2], (0.0, 1.0), jac=jac, rtol=1e-6, atol=1e-9, name="chaotic")
    assert rec.verdict == "fail", rec.message
    want = 10.0 * (LORENZ_TRACE - 29)
    assert abs(np.median(np.sum(rec.details["exponents"], axis=1)) - want) < 1e-3 * abs(want)
    _, f, jac, z0 = example("stiff")
    eig = np.linalg.eigvals(jac(0.0, z0[:1])[0]).real
    assert eig.max() < 0 and 5e3 < eig.min() / eig.max() < 2e4


def test_parameter_gradient_through_time_matches_the_closed_form():
    """z' = theta * z (a torch module, theta per component): z(t) = exp(theta t) z0, so for
    L = |z(t)|^2 / 2 summed over the batch dL/dtheta_i = t sum_b z0_bi^2 exp(2 theta_i t); the
    diagnosis reports its norm at t = T/4 .. T, within 100 rtol (the gradient properties'
    allowance) at the model's default rtol 1e-6."""
    torch = pytest.importorskip("torch")
    from odeverify.diagnose import UserModel

    class Diagonal(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.theta = torch.nn.Parameter(torch.tensor([-1.0, 0.3, -2.0], dtype=torch.float64))

        def forward(self, t, z):
            return self.theta * z

    z0 = np.array([[1.0, -0.5, 2.0], [0.3, 1.0, -1.0]])
    model = UserModel.build(Diagonal(), z0, (0.0, 2.0), name="diagonal")
    rec = diagnose_sensitivity(model, times=4)
    assert rec.verdict == "pass", rec.message
    theta = np.array([-1.0, 0.3, -2.0])
    for t, got in zip(rec.details["grad_theta_times"], rec.details["grad_theta_norm"]):
        want = np.linalg.norm(t * np.sum(z0 ** 2, axis=0) * np.exp(2 * theta * t))
        assert abs(got / want - 1) < 100 * model.rtol, (t, got, want)
    assert "dL/dtheta" in rec.message
    assert np.allclose(rec.details["rate_max"], 0.3, atol=1e-6)
