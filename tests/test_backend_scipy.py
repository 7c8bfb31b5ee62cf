"""The scipy backend: registration, options, counting, agreement with solve_ivp, failures."""
from __future__ import annotations

import numpy as np
import pytest

scipy_integrate = pytest.importorskip("scipy.integrate")

import odeverify  # noqa: E402
from odeverify import backends  # noqa: E402
from odeverify.backends import UnsupportedOption  # noqa: E402
from odeverify.problems import Problem  # noqa: E402
from odeverify.solution import Status  # noqa: E402

METHODS = ("RK23", "RK45", "DOP853", "Radau", "BDF", "LSODA")
EXPLICIT = ("RK23", "RK45", "DOP853")
HARMONIC = odeverify.PROBLEMS.get("harmonic")
BLOWUP = Problem(name="blowup_y2", rhs=lambda xp, t, y, p: y * y, y0=(1.0,), t_span=(0.0, 2.0),
                 description="y' = y^2, y(0) = 1: y = 1/(1 - t) blows up at t = 1")


@pytest.fixture(scope="module")
def backend():
    return backends.get("scipy")


def _field(problem):
    return problem.vector_field(odeverify._xp.get_namespace("numpy"), np.float64)


def test_registered_and_available(backend):
    from odeverify.backends.scipy_backend import ScipyBackend

    assert isinstance(backend, ScipyBackend)
    assert backend.name == "scipy"
    assert "scipy" in backends.names()
    assert backend.available()


def test_capabilities(backend):
    caps = backend.capabilities()
    assert set(caps.methods) == set(METHODS)
    assert caps.dtypes == ("float64",)
    assert caps.per_sample is False
    for name in METHODS:
        info = caps.methods[name]
        assert info.adaptive and not info.fixed
    assert {m: caps.methods[m].tableau for m in EXPLICIT} == {"RK23": "bosh3", "RK45": "dopri5",
                                                             "DOP853": "dop853"}
    assert (caps.methods["RK23"].order, caps.methods["RK45"].order, caps.methods["DOP853"].order) == (3, 5, 8)
    for opt in ("safety", "factor_min", "factor_max", "dt", "n_steps", "dtmin"):
        assert isinstance(caps.options[opt], str) and caps.options[opt]
    for opt in ("rtol", "atol", "first_step", "dtmax", "t_eval", "max_steps"):
        assert caps.options[opt] is True


@pytest.mark.parametrize("option, value", [("safety", 0.8), ("factor_min", 0.1), ("factor_max", 5.0),
                                           ("dtmin", 1e-6), ("dt", 0.1), ("n_steps", 10)])
def test_unsupported_option_raises_naming_it(backend, option, value):
    with pytest.raises(UnsupportedOption, match=option):
        backend.solve(HARMONIC, "RK45", **{option: value})


def test_unknown_method_lists_choices(backend):
    with pytest.raises(ValueError, match="Choices: RK23, RK45, DOP853") as info:
        backend.solve(HARMONIC, "RK54")
    assert "did you mean 'RK45'" in str(info.value)


def test_float32_refused(backend):
    with pytest.raises(ValueError, match="float32"):
        backend.solve(HARMONIC, "RK45", dtype="float32")


@pytest.mark.parametrize("cls_name, tableau", [("RK23", "bosh3"), ("RK45", "dopri5"), ("DOP853", "dop853")])
def test_tableau_coefficients_match(cls_name, tableau):
    """The declared reference tableau has scipy's coefficients (A, b, c, error weights)."""
    cls = getattr(scipy_integrate, cls_name)
    fv = odeverify.TABLEAUS.get(tableau).float_view()
    s = cls.n_stages
    assert np.array_equal(cls.C, np.asarray(fv.c[:s]))
    for i in range(s):
        assert np.array_equal(np.asarray(cls.A[i, :i], dtype=float), np.asarray(fv.A[i][:i]))
    assert np.array_equal(cls.B, np.asarray(fv.b[:s]))
    assert all(v == 0 for v in fv.b[s:])  # the FSAL stage carries no weight
    if cls_name == "DOP853":
        np.testing.assert_allclose(cls.E5[:s], fv.b_err, rtol=0, atol=1e-15)
        np.testing.assert_allclose(cls.E3[:s], fv.b_err_aux, rtol=0, atol=1e-15)
    else:  # scipy stores b_hat - b
        np.testing.assert_allclose(cls.E, -np.asarray(fv.b_err), rtol=0, atol=1e-15)


@pytest.mark.parametrize("method", METHODS)
def test_harmonic_within_tolerance(backend, method):
    exact = HARMONIC.exact(np.asarray([HARMONIC.t_span[1]]))[0]
    errors = []
    for rtol in (1e-5, 1e-8):
        sol = backend.solve(HARMONIC, method, rtol=rtol, atol=rtol * 1e-2)
        assert sol.status is Status.SUCCESS, sol.message
        assert sol.ys.shape == (2, 2) and sol.ts.tolist() == list(HARMONIC.t_span)
        np.testing.assert_array_equal(sol.ys[0], HARMONIC.y0)
        errors.append(np.abs(sol.ys[-1] - exact).max())
        assert errors[-1] < 100 * rtol, (method, rtol, errors[-1])
        assert sol.stats.nfev > 0 and sol.stats.accepted > 0
        assert sol.timing["wall_s"] > 0 and sol.timing["compile_s"] == 0.0
    assert errors[1] < errors[0] / 10  # the error follows the tolerance


@pytest.mark.parametrize("method", METHODS)
def test_same_numbers_as_solve_ivp(backend, method):
    """Driving scipy's solver here gives solve_ivp's final state and (explicit/LSODA) its nfev."""
    kw = dict(rtol=1e-7, atol=1e-9)
    ref = scipy_integrate.solve_ivp(_field(HARMONIC), HARMONIC.t_span, HARMONIC.y0, method=method, **kw)
    sol = backend.solve(HARMONIC, method, **kw)
    np.testing.assert_array_equal(sol.ys[-1], ref.y[:, -1])
    assert sol.stats.accepted == ref.t.size - 1
    assert sol.stats.njev == ref.njev and sol.stats.nlu == ref.nlu
    if method in ("Radau", "BDF"):
        # scipy's nfev leaves out its finite-difference Jacobian columns; ours counts them
        assert sol.stats.nfev >= ref.nfev + ref.njev * HARMONIC.n
        assert sol.stats.rejected == -1
    else:
        assert sol.stats.nfev == ref.nfev


def test_rejected_count_matches_attempts(backend, monkeypatch):
    """rejected (derived from n_stages evaluations per attempt) equals a direct count of rk_step calls."""
    from scipy.integrate._ivp import rk

    calls = []
    original = rk.rk_step

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(rk, "rk_step", counting)
    for method in EXPLICIT:
        calls.clear()
        sol = backend.solve(HARMONIC, method, rtol=1e-9, atol=1e-11, first_step=1.0)
        assert sol.status is Status.SUCCESS
        assert sol.stats.rejected > 0, method  # a large first step forces rejections
        assert sol.stats.accepted + sol.stats.rejected == len(calls), method


def test_max_steps_partial_results(backend):
    ts = np.linspace(0.0, 2 * np.pi, 9)
    full = backend.solve(HARMONIC, "RK45", rtol=1e-9, atol=1e-11, t_eval=ts, first_step=1.0)
    assert full.status is Status.SUCCESS and np.all(np.isfinite(full.ys))
    for k in (3, 12, 25):
        sol = backend.solve(HARMONIC, "RK45", rtol=1e-9, atol=1e-11, t_eval=ts, first_step=1.0, max_steps=k)
        assert sol.status is Status.MAX_STEPS
        assert sol.stats.accepted + sol.stats.rejected == k  # attempted steps, as in the reference
        assert sol.t_final < ts[-1]
        reached = ts <= sol.t_final
        np.testing.assert_array_equal(sol.ys[reached], full.ys[reached])  # the same steps as the full solve
        assert np.all(np.isnan(sol.ys[~reached]))
    sol = backend.solve(HARMONIC, "Radau", t_eval=ts, max_steps=4)
    assert sol.status is Status.MAX_STEPS and sol.stats.accepted == 4
    assert np.all(np.isnan(sol.ys[-1])) and np.array_equal(sol.ys[0], HARMONIC.y0)


@pytest.mark.parametrize("method", METHODS)
def test_blowup_is_a_status_not_an_exception(backend, method):
    sol = backend.solve(BLOWUP, method)
    assert sol.status in (Status.DT_UNDERFLOW, Status.NONFINITE), (sol.status, sol.message)
    assert 0.9 < sol.t_final < 1.01
    assert np.all(np.isnan(sol.ys[-1])) and sol.ys[0, 0] == 1.0
    assert sol.message


def test_batch_shape_and_shared_step(backend):
    y0 = np.array([[1.0, 0.0], [0.5, -0.5], [0.0, 2.0]])
    ts = np.linspace(0.0, 2 * np.pi, 7)
    sol = backend.solve(HARMONIC, "DOP853", y0=y0, t_eval=ts, rtol=1e-10, atol=1e-12)
    assert sol.status is Status.SUCCESS
    assert sol.ys.shape == (7, 3, 2)
    c, s = np.cos(ts)[:, None], np.sin(ts)[:, None]
    exact = np.stack([c * y0[:, 0] + s * y0[:, 1], -s * y0[:, 0] + c * y0[:, 1]], axis=-1)
    np.testing.assert_allclose(sol.ys, exact, atol=1e-8)
    # one call per batch evaluation: the same count as a single system of size 6 would cost
    single = backend.solve(HARMONIC, "DOP853", y0=y0[0], t_eval=ts, rtol=1e-10, atol=1e-12)
    assert sol.stats.nfev < 3 * single.stats.nfev


def test_t_eval_dense_output(backend):
    ts = np.linspace(0.0, 2 * np.pi, 33)
    for method in METHODS:
        sol = backend.solve(HARMONIC, method, t_eval=ts, rtol=1e-9, atol=1e-11)
        assert sol.status is Status.SUCCESS
        np.testing.assert_allclose(sol.ys, HARMONIC.exact(ts), atol=2e-6, err_msg=method)
