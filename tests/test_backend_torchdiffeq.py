"""The torchdiffeq backend: registration, options, tableaus, agreement with the reference, counting."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchdiffeq")

import odeverify  # noqa: E402
from odeverify import backends  # noqa: E402
from odeverify.backends import UnsupportedOption  # noqa: E402
from odeverify.problems import Problem  # noqa: E402
from odeverify.solution import Status  # noqa: E402

EPS = np.finfo(np.float64).eps
HARMONIC = odeverify.PROBLEMS.get("harmonic")
WARPED = odeverify.PROBLEMS.get("warped_oscillatory")
BLOWUP = Problem(name="blowup_y2", rhs=lambda xp, t, y, p: y * y, y0=(1.0,), t_span=(0.0, 2.0),
                 description="y' = y^2, y(0) = 1: y = 1/(1 - t) blows up at t = 1")
ADAPTIVE = ("dopri5", "bosh3", "fehlberg2", "adaptive_heun", "dopri8")
FIXED_WITH_TABLEAU = {"euler": "euler", "midpoint": "midpoint", "heun2": "heun", "rk4": "rk4_38"}
#: evaluations per attempted step of torchdiffeq's adaptive RK solvers (after 2 start-up calls)
EVALS_PER_ATTEMPT = {"dopri5": 6, "bosh3": 3, "fehlberg2": 2, "adaptive_heun": 1, "dopri8": 13}


@pytest.fixture(scope="module")
def backend():
    return backends.get("torchdiffeq")


@pytest.fixture(scope="module")
def reference():
    return backends.get("reference")


def _np(x):
    return x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)


def test_registered_and_available(backend):
    from odeverify.backends.torchdiffeq_backend import TorchdiffeqBackend

    assert isinstance(backend, TorchdiffeqBackend)
    assert "torchdiffeq" in backends.names()
    assert backend.available()


def test_capabilities_follow_installed_solvers(backend):
    from torchdiffeq._impl.odeint import SOLVERS

    caps = backend.capabilities()
    assert set(caps.methods) == set(SOLVERS) - {"scipy_solver"}
    for name in ADAPTIVE:
        assert caps.methods[name].adaptive and not caps.methods[name].fixed
    for name in ("euler", "midpoint", "heun2", "heun3", "rk4", "explicit_adams", "implicit_adams"):
        assert caps.methods[name].fixed and not caps.methods[name].adaptive
    assert caps.dtypes == ("float64", "float32")
    assert "cpu" in caps.devices and caps.per_sample is False
    assert all(v is True for v in caps.options.values())
    tabs = {m: i.tableau for m, i in caps.methods.items()}
    assert tabs["rk4"] == "rk4_38" and tabs["heun2"] == "heun" and tabs["dopri8"] is None
    assert tabs["dopri5"] is None  # same A, b, c but different embedded weights (see below)
    assert {m: caps.methods[m].order for m in ADAPTIVE} == {"dopri5": 5, "bosh3": 3, "fehlberg2": 2,
                                                             "adaptive_heun": 2, "dopri8": 8}


def test_unknown_method_lists_choices(backend):
    with pytest.raises(ValueError, match="Choices: .*dopri5") as info:
        backend.solve(HARMONIC, "dopri4")
    assert "did you mean" in str(info.value)


def test_unsupported_option_combinations(backend):
    with pytest.raises(UnsupportedOption, match="no fixed-step mode"):
        backend.solve(HARMONIC, "dopri5", n_steps=10)
    with pytest.raises(UnsupportedOption, match="safety"):
        backend.solve(HARMONIC, "rk4", n_steps=10, safety=0.8)
    with pytest.raises(UnsupportedOption, match="dtmax"):
        backend.solve(HARMONIC, "euler", dt=0.1, dtmax=0.2)
    with pytest.raises(ValueError, match="fixed-step only"):
        backend.solve(HARMONIC, "rk4")
    with pytest.raises(ValueError, match="unknown solver option"):
        backend.solve(HARMONIC, "dopri5", step_size=0.1)


def _torchdiffeq_tableau(method):
    from torchdiffeq._impl.odeint import SOLVERS

    tab = SOLVERS[method].tableau
    c = np.concatenate([[0.0], tab.alpha.numpy()])
    A = [np.zeros(0)] + [b.numpy() for b in tab.beta]
    return c, A, tab.c_sol.numpy(), tab.c_error.numpy()


@pytest.mark.parametrize("method", ["bosh3", "fehlberg2", "adaptive_heun", "dopri5", "dopri8"])
def test_adaptive_tableaus_checked_coefficient_by_coefficient(backend, method):
    """A declared tableau has every coefficient of torchdiffeq's; the undeclared ones really differ."""
    declared = backend.capabilities().methods[method].tableau
    c, A, b, e = _torchdiffeq_tableau(method)
    candidate = declared or {"dopri5": "dopri5", "dopri8": "dop853"}[method]
    fv = odeverify.TABLEAUS.get(candidate).float_view()

    def close(x, y):
        return len(x) == len(y) and np.allclose(x, y, rtol=0, atol=1e-15)

    same_method = (len(c) == fv.stages and close(c, fv.c)
                   and all(close(A[i], fv.A[i][:i]) for i in range(len(c))) and close(b, fv.b))
    same_error = fv.b_err is not None and len(e) == len(fv.b_err) and (close(e, fv.b_err) or close(e, [-x for x in fv.b_err]))
    if declared:
        assert same_method and same_error
    elif method == "dopri5":
        assert same_method and not same_error  # Shampine's embedded weights, not Dormand-Prince's
        assert e[-1] == pytest.approx(-1 / 60) and fv.b_err[-1] == pytest.approx(-1 / 40)
    else:
        assert not same_method  # RK8(7)13M is not DOP853


@pytest.mark.parametrize("method", ADAPTIVE)
def test_harmonic_within_tolerance(backend, method):
    # error factors measured on this problem: dopri5 ~1 x rtol, bosh3 ~15, adaptive_heun ~5, fehlberg2 ~500
    # (the reference's fehlberg2 too); dopri8 ~100 because torchdiffeq steps past t1 and reads y(t1) off a
    # quartic interpolant, which caps the accuracy of its 8th-order steps
    factor = {"dopri5": 5, "bosh3": 100, "adaptive_heun": 50, "fehlberg2": 2000, "dopri8": 1000}[method]
    exact = HARMONIC.exact(np.asarray([HARMONIC.t_span[1]]))[0]
    errors = []
    for rtol in (1e-4, 1e-6):
        sol = backend.solve(HARMONIC, method, rtol=rtol, atol=rtol * 1e-2)
        assert sol.status is Status.SUCCESS, sol.message
        assert isinstance(sol.ys, torch.Tensor) and tuple(sol.ys.shape) == (2, 2)
        errors.append(np.abs(_np(sol.ys[-1]) - exact).max())
        assert errors[-1] < factor * rtol, (method, rtol, errors[-1])
        # accepted/rejected (from torchdiffeq's step callbacks) account for every evaluation
        assert sol.stats.nfev == 2 + EVALS_PER_ATTEMPT[method] * (sol.stats.accepted + sol.stats.rejected)
    assert errors[1] < errors[0] / 10


@pytest.mark.parametrize("method", sorted(FIXED_WITH_TABLEAU))
def test_fixed_grid_agrees_with_reference(backend, reference, method):
    """Same tableau, same grid: torchdiffeq and the reference agree to round-off (measured <= 0.1 ulp/step)."""
    tableau = FIXED_WITH_TABLEAU[method]
    assert backend.capabilities().methods[method].tableau == tableau
    ts = np.linspace(*WARPED.t_span, 7)
    for n in (12, 48, 192):
        ours = backend.solve(WARPED, method, n_steps=n)
        ref = reference.solve(WARPED, tableau, n_steps=n)
        assert ours.status is Status.SUCCESS and ref.status is Status.SUCCESS
        a, r = _np(ours.ys), np.asarray(ref.ys)
        scale = np.abs(r).max()
        assert np.abs(a - r).max() <= n * EPS * scale, (method, n, np.abs(a - r).max() / (EPS * scale) / n)
        assert ours.stats.nfev == ref.stats.nfev and ours.stats.accepted == n and ours.stats.rejected == 0
        # step dt on the same grid: the same numbers
        by_dt = backend.solve(WARPED, method, dt=(WARPED.t_span[1] - WARPED.t_span[0]) / n)
        assert np.abs(_np(by_dt.ys) - r).max() <= n * EPS * scale
    # output times between grid points: linear interpolation (declared dense order 1)
    sol = backend.solve(WARPED, method, n_steps=48, t_eval=ts)
    assert tuple(sol.ys.shape) == (7, WARPED.n) and sol.stats.nfev == backend.solve(WARPED, method, n_steps=48).stats.nfev


def test_agreement_check_can_fail(backend, reference):
    """torchdiffeq's rk4 is the 3/8 rule: against the classic RK4 the difference is far above round-off."""
    ours = backend.solve(WARPED, "rk4", n_steps=48)
    classic = reference.solve(WARPED, "rk4", n_steps=48)
    assert np.abs(_np(ours.ys) - np.asarray(classic.ys)).max() > 1e6 * 48 * EPS


def test_max_steps_partial_results(backend):
    ts = np.linspace(0.0, 2 * np.pi, 9)
    full = backend.solve(HARMONIC, "dopri5", rtol=1e-9, atol=1e-11, t_eval=ts, first_step=1.0)
    assert full.status is Status.SUCCESS and full.stats.rejected > 0
    for k in (3, 20, 40):
        sol = backend.solve(HARMONIC, "dopri5", rtol=1e-9, atol=1e-11, t_eval=ts, first_step=1.0, max_steps=k)
        assert sol.status is Status.MAX_STEPS
        assert sol.stats.accepted + sol.stats.rejected == k
        ys = _np(sol.ys)
        reached = ~np.isnan(ys).any(axis=1)
        assert reached[0] and not reached[-1]
        np.testing.assert_array_equal(ys[reached], _np(full.ys)[reached])
        assert np.all(ts[reached] <= sol.t_final)
    fixed = backend.solve(HARMONIC, "rk4", n_steps=100, max_steps=30, t_eval=ts)
    assert fixed.status is Status.MAX_STEPS and fixed.stats.accepted == 30
    ys = _np(fixed.ys)
    assert np.isfinite(ys[:3]).all() and np.isnan(ys[3:]).all()  # t_final = 30 * 2pi/100 = 1.88 < ts[3]


def test_dtmin_and_dtmax(backend):
    sol = backend.solve(HARMONIC, "dopri5", dtmin=0.5)
    assert sol.status is Status.DT_UNDERFLOW and "dtmin" in sol.message
    capped = backend.solve(HARMONIC, "dopri5", rtol=1e-4, atol=1e-6, dtmax=0.05)
    assert capped.status is Status.SUCCESS and capped.stats.accepted >= 2 * np.pi / 0.05


@pytest.mark.parametrize("method", ["dopri5", "bosh3", "dopri8", "euler", "rk4"])
def test_blowup_is_a_status_not_an_exception(backend, method):
    kw = {"n_steps": 50} if method in ("euler", "rk4") else {}
    sol = backend.solve(BLOWUP, method, **kw)
    assert sol.status in (Status.DT_UNDERFLOW, Status.NONFINITE), (sol.status, sol.message)
    assert not np.isfinite(_np(sol.ys[-1])).all()


@pytest.mark.parametrize("method, kw", [("dopri5", {}), ("bosh3", {"rtol": 1e-6}), ("rk4", {"n_steps": 64})])
def test_batch_shape(backend, method, kw):
    y0 = np.array([[1.0, 0.0], [0.5, -0.5], [0.0, 2.0]])
    ts = np.linspace(0.0, 2 * np.pi, 5)
    sol = backend.solve(HARMONIC, method, y0=y0, t_eval=ts, **kw)
    assert sol.status is Status.SUCCESS
    assert tuple(sol.ys.shape) == (5, 3, 2)
    c, s = np.cos(ts)[:, None], np.sin(ts)[:, None]
    exact = np.stack([c * y0[:, 0] + s * y0[:, 1], -s * y0[:, 0] + c * y0[:, 1]], axis=-1)
    np.testing.assert_allclose(_np(sol.ys), exact, atol=1e-3)


def test_float32(backend):
    sol = backend.solve(HARMONIC, "dopri5", dtype="float32", rtol=1e-5, atol=1e-7)
    assert sol.status is Status.SUCCESS and sol.ys.dtype == torch.float32
    exact = HARMONIC.exact(np.asarray([HARMONIC.t_span[1]]))[0]
    assert np.abs(_np(sol.ys[-1]) - exact).max() < 1e-4


@pytest.mark.parametrize("method, plain_max, forced_min", [("bosh3", 0.8, 0.85), ("dopri8", 0.85, 0.9)])
def test_interpolated_end_point(method, plain_max, forced_min):
    """Evidence for the expected deviations: torchdiffeq reads y(t1) off its interpolant after
    stepping past t1; forcing a step end at t1 (step_t) restores tolerance proportionality."""
    import numpy as np
    import torch
    import torchdiffeq

    from odeverify import _xp
    from odeverify.problems import PROBLEMS

    p = PROBLEMS.get("warped_oscillatory")
    f = p.vector_field(_xp.get_namespace("torch"), torch.float64)
    y0 = torch.asarray(p.y0, dtype=torch.float64)
    T = p.t_span[1]
    exact = p.exact(np.asarray([T]))[0]
    tols = [1e-4, 1e-5, 1e-6, 1e-7, 1e-8]

    def exponent(options):
        errs = []
        for tol in tols:
            ys = torchdiffeq.odeint(f, y0, torch.asarray([0.0, T], dtype=torch.float64), rtol=tol, atol=tol,
                                    method=method, options=dict(options))
            errs.append(np.max(np.abs(ys[-1].numpy() - exact)))
        return np.polyfit(np.log(tols), np.log(errs), 1)[0]

    plain = exponent({})
    forced = exponent({"step_t": torch.asarray([T], dtype=torch.float64)})
    assert plain < plain_max, f"plain exponent={plain:.3f}"
    assert forced > forced_min, f"step_t exponent={forced:.3f}"
