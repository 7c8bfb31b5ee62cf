"""The diffrax backend: registration, tableaus, accuracy, NFE closed form, compile cache, statuses, batches.

Compilation (~1-2 s per new function) is the cost here: one backend instance is shared and
problems/methods/options are reused so that most solves hit the cache.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("diffrax")

import odeverify  # noqa: E402
from odeverify.backends import UnsupportedOption, get  # noqa: E402
from odeverify.problems import Problem  # noqa: E402
from odeverify.solution import Status  # noqa: E402

ADAPTIVE = ("Heun", "Midpoint", "Ralston", "Bosh3", "Tsit5", "Dopri5", "Dopri8", "ReversibleHeun")
SHARED_TABLEAU = ("Euler", "Heun", "Midpoint", "Ralston", "Bosh3", "Tsit5", "Dopri5")
IMPLICIT = ("ImplicitEuler", "Kvaerno3", "Kvaerno4", "Kvaerno5", "KenCarp3", "KenCarp4", "KenCarp5")
#: diffrax writes Kvaerno3's and Kvaerno4's gamma with 11 and 10 significant digits
#: (0.43586652150, 0.5728160625): their coefficients agree with the exact ones to ~2e-10 only
TABLEAU_ATOL = {"Kvaerno3": 3e-10, "Kvaerno4": 2e-10}
EPS = np.finfo(np.float64).eps


@pytest.fixture(scope="module")
def backend():
    return get("diffrax")


@pytest.fixture(scope="module")
def harmonic():
    return odeverify.PROBLEMS.get("harmonic")


def _blowup_rhs(xp, t, y, p):
    return y * y


BLOWUP = Problem(name="test_blowup_y2", rhs=_blowup_rhs, y0=(1.0,), t_span=(0.0, 2.0))


def test_registered_with_capabilities(backend):
    from odeverify.backends.diffrax_backend import DiffraxBackend

    assert isinstance(backend, DiffraxBackend) and backend.name == "diffrax"
    caps = backend.capabilities()
    assert set(caps.methods) == {"Euler", "Heun", "Midpoint", "Ralston", "Bosh3", "Tsit5", "Dopri5", "Dopri8",
                                 "ReversibleHeun", "LeapfrogMidpoint", "SemiImplicitEuler", *IMPLICIT}
    assert all(caps.methods[m].implicit for m in IMPLICIT)
    assert not any(caps.methods[m].implicit for m in caps.methods if m not in IMPLICIT)
    assert caps.per_sample and set(caps.dtypes) == {"float64", "float32"} and "cpu" in caps.devices
    for name in ADAPTIVE:
        m = caps.methods[name]
        assert m.adaptive and m.embedded_order is not None and m.embedded_order < m.order
    for name in ("Euler", "LeapfrogMidpoint", "SemiImplicitEuler"):
        assert not caps.methods[name].adaptive and caps.methods[name].fixed
    assert caps.methods["Dopri8"].tableau is None


def test_unknown_method_lists_choices(backend, harmonic):
    with pytest.raises(ValueError, match="Choices: .*Tsit5"):
        backend.solve(harmonic, "Tsit6")


def test_unsupported_options_raise(backend, harmonic):
    with pytest.raises(ValueError, match="unknown solver option"):
        backend.solve(harmonic, "Tsit5", norm="max")
    with pytest.raises(ValueError, match="fixed-step only"):
        backend.solve(harmonic, "Euler")
    warped = odeverify.PROBLEMS.get("warped_oscillatory")  # n = 3: no (q, p) split
    with pytest.raises(UnsupportedOption, match="SemiImplicitEuler"):
        backend.solve(warped, "SemiImplicitEuler", n_steps=10)


def test_tableau_matches():
    """Declared reference tableaus have the same A, b, c (read from diffrax's ``tableau``)."""
    import diffrax

    caps = get("diffrax").capabilities()
    for name, info in caps.methods.items():
        tab = getattr(getattr(diffrax, name)(), "tableau", None)
        if info.tableau is None or tab is None:
            continue
        ref = odeverify.TABLEAUS.get(info.tableau).float_view()
        s = len(tab.b_sol)
        A = np.zeros((s, s))
        for i, row in enumerate(tab.a_lower):
            A[i + 1, : len(row)] = row
        if getattr(tab, "a_diagonal", None) is not None:  # diagonally implicit (ESDIRK)
            A += np.diag(tab.a_diagonal)
        atol = TABLEAU_ATOL.get(name, 1e-15)
        np.testing.assert_allclose(A, np.asarray(ref.A), rtol=0, atol=atol, err_msg=name)
        np.testing.assert_allclose(tab.b_sol, ref.b, rtol=0, atol=atol, err_msg=name)
        np.testing.assert_allclose(np.r_[0.0, tab.c], ref.c, rtol=0, atol=atol, err_msg=name)
        if info.implicit:  # diffrax's b_error is b - b_hat, as odeverify's b_err
            np.testing.assert_allclose(tab.b_error, ref.b_err, rtol=0, atol=atol, err_msg=name)
    # the error weights: identical for Bosh3/Tsit5, negated for Heun, 2/3 of Hairer's for Dopri5
    for name, factor in (("Bosh3", 1.0), ("Tsit5", 1.0), ("Heun", -1.0), ("Dopri5", 2.0 / 3.0)):
        ref = odeverify.TABLEAUS.get(caps.methods[name].tableau).float_view()
        np.testing.assert_allclose(getattr(diffrax, name)().tableau.b_error, factor * np.asarray(ref.b_err),
                                   rtol=1e-13, atol=1e-16, err_msg=name)
    # Dopri8 is the 14-stage 8(7) pair, not DOP853 (12 stages)
    assert len(diffrax.Dopri8().tableau.b_sol) == 14 != odeverify.TABLEAUS.get("dop853").float_view().stages


@pytest.mark.parametrize("method", ADAPTIVE)
def test_adaptive_accuracy_and_nfev_closed_form(backend, harmonic, method):
    # second-order methods at a looser tolerance (thousands of steps otherwise); first_step
    # small enough to be accepted, so the NFE closed form is exact (see
    # test_nfev_after_rejected_first_step for the exception)
    rtol = 1e-4 if backend.capabilities().methods[method].order <= 2 else 1e-6
    opts = dict(rtol=rtol, atol=rtol * 1e-3, first_step=1e-4)
    sol = backend.solve(harmonic, method, **opts)
    assert sol.status is Status.SUCCESS, sol.message
    err = np.abs(np.asarray(sol.ys[-1]) - harmonic.final_reference()).max()
    # global error over one period: within a small multiple of the tolerance
    assert err < 100 * rtol, (method, err)
    assert sol.stats.accepted > 0
    counted = backend.count_nfev(harmonic, method, **opts)
    assert counted == sol.stats.nfev, (method, counted, sol.stats.nfev)


def test_nfev_after_rejected_first_step(backend, harmonic):
    """diffrax's default first step (0.01) is rejected by Bosh3 at rtol 1e-6: f(t0, y0) again."""
    sol = backend.solve(harmonic, "Bosh3", rtol=1e-6, atol=1e-9)
    counted = backend.count_nfev(harmonic, "Bosh3", rtol=1e-6, atol=1e-9)
    assert sol.stats.nfev <= counted <= sol.stats.nfev + sol.stats.rejected
    assert counted - sol.stats.nfev == 1


def test_tolerance_sweep_compiles_once(harmonic):
    from odeverify.backends.diffrax_backend import DiffraxBackend

    fresh = DiffraxBackend()
    sols = [fresh.solve(harmonic, "Tsit5", rtol=tol, atol=tol * 1e-3) for tol in (1e-4, 1e-6, 1e-8)]
    assert fresh.compiles == 1
    assert sols[0].timing["compile_s"] > 0
    assert [s.timing["compile_s"] for s in sols[1:]] == [0.0, 0.0]
    assert all(s.timing["wall_s"] < sols[0].timing["compile_s"] for s in sols)
    steps = [s.stats.accepted for s in sols]
    assert steps[0] < steps[1] < steps[2]
    errs = [np.abs(np.asarray(s.ys[-1]) - harmonic.final_reference()).max() for s in sols]
    assert errs[0] > errs[1] > errs[2]


@pytest.mark.parametrize("method", SHARED_TABLEAU)
def test_fixed_step_agrees_with_reference(backend, method):
    """Same tableau, same grid (drift <= 1 ulp in t): the same numbers up to round-off."""
    problem = odeverify.PROBLEMS.get("warped_oscillatory")
    n = 50
    info = backend.capabilities().methods[method]
    ours = backend.solve(problem, method, n_steps=n)
    ref = get("reference").solve(problem, info.tableau, n_steps=n)
    assert ours.status is Status.SUCCESS and ours.stats.accepted == n
    y, yr = np.asarray(ours.ys[-1]), np.asarray(ref.ys[-1])
    ulps_per_step = np.abs(y - yr).max() / (EPS * max(1.0, np.abs(yr).max())) / n
    assert ulps_per_step < 1.0, (method, ulps_per_step)
    assert ours.stats.nfev == ref.stats.nfev
    t0, t1 = problem.t_span
    k = np.arange(n + 1)
    drift = np.abs((t0 + (t1 - t0) * (k / n)) - (t0 + (t1 - t0) * k / n)).max()
    assert drift <= 2 * EPS * abs(t1)


def test_dt_not_dividing_span_uses_reference_grid(backend, harmonic):
    sol = backend.solve(harmonic, "Euler", dt=1.0)  # span 2 pi: 7 steps, the last shortened
    ref = get("reference").solve(harmonic, "euler", dt=1.0)
    assert sol.stats.accepted == ref.stats.accepted == 7
    np.testing.assert_allclose(np.asarray(sol.ys[-1]), np.asarray(ref.ys[-1]), rtol=1e-14)


def test_max_steps_is_a_status(backend, harmonic):
    t_eval = np.linspace(*harmonic.t_span, 5)
    sol = backend.solve(harmonic, "Tsit5", rtol=1e-8, atol=1e-10, max_steps=5, t_eval=t_eval)
    assert sol.status is Status.MAX_STEPS
    ys = np.asarray(sol.ys)
    assert ys.shape == (5, 2) and np.all(np.isfinite(ys[0])) and np.all(np.isnan(ys[-1]))
    assert sol.stats.accepted + sol.stats.rejected == 5


def test_blowup_is_a_failure_status(backend):
    adaptive = backend.solve(BLOWUP, "Tsit5", rtol=1e-6, atol=1e-9, dtmin=1e-8)
    assert adaptive.status is Status.DT_UNDERFLOW, adaptive.message
    fixed = backend.solve(BLOWUP, "Euler", n_steps=100)
    assert fixed.status is Status.NONFINITE


def test_batch_per_sample_steps(backend, harmonic):
    Y = np.array([[1.0, 0.0], [0.5, 0.5], [2.0, -1.0]])
    t_eval = np.linspace(*harmonic.t_span, 4)
    sol = backend.solve(harmonic, "Dopri5", y0=Y, rtol=1e-7, atol=1e-9, t_eval=t_eval)
    assert sol.status is Status.SUCCESS
    assert tuple(sol.ys.shape) == (4, 3, 2)
    assert sol.stats.sample_accepted.shape == (3,)
    assert sol.stats.accepted == sol.stats.sample_accepted.sum()
    for i in range(3):
        solo = backend.solve(harmonic, "Dopri5", y0=Y[i], rtol=1e-7, atol=1e-9, t_eval=t_eval)
        assert solo.stats.accepted == sol.stats.sample_accepted[i]
        assert solo.stats.rejected == sol.stats.sample_rejected[i]
        np.testing.assert_allclose(np.asarray(solo.ys), np.asarray(sol.ys)[:, i], rtol=0, atol=1e-13)


def test_float32(backend, harmonic):
    sol = backend.solve(harmonic, "Tsit5", rtol=1e-4, atol=1e-6, dtype="float32")
    assert sol.status is Status.SUCCESS and str(sol.ys.dtype) == "float32"
    assert np.abs(np.asarray(sol.ys[-1], dtype=np.float64) - harmonic.final_reference()).max() < 1e-2


def test_a_failed_solve_keeps_no_unreached_rows(backend):
    """diffrax may fill unreached output times of a solve stopped by max_steps with finite
    values; the adapter must not pass them off as a partial solution."""
    from odeverify.problems import PROBLEMS

    p = PROBLEMS.get("arenstorf")
    sol = backend.solve(p, "Tsit5", rtol=1e-4, atol=1e-4, t_eval=[0.0, 5.0, 10.0, p.t_span[1]], max_steps=50)
    assert sol.status is Status.MAX_STEPS
    ys = np.asarray(sol.ys)
    assert np.all(np.isfinite(ys[0])) and np.all(np.isnan(ys[1:]))
    assert np.isnan(sol.t_final) and "rows after t0 are NaN" in sol.message


# ---------------------------------------------------------------------------- compilation paid once
def _jax_cache_settings():
    import jax

    return {k: getattr(jax.config, k) for k in ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs",
                                                 "jax_persistent_cache_min_entry_size_bytes",
                                                 "jax_enable_compilation_cache")}


@pytest.fixture
def jax_cache(monkeypatch):
    """enable() from scratch: JAX without a cache directory, odeverify's answer forgotten; both
    restored afterwards (nothing is compiled in between, so JAX never opens the directories)."""
    import jax
    from odeverify.backends import _jax_cache

    saved, saved_choice = _jax_cache_settings(), dict(_jax_cache._enabled)
    _jax_cache._reset_for_tests()
    jax.config.update("jax_compilation_cache_dir", None)
    monkeypatch.delenv(_jax_cache.ENV, raising=False)
    yield _jax_cache
    for k, v in saved.items():
        jax.config.update(k, v)
    _jax_cache._enabled.clear()
    _jax_cache._enabled.update(saved_choice)


def test_jax_cache_directory_resolution(tmp_path):
    from odeverify.backends._jax_cache import ENV, resolve

    home = {"HOME": str(tmp_path)}
    assert resolve({"XDG_CACHE_HOME": "/x/cache"}).path == Path("/x/cache/odeverify/jax")
    default = resolve({})
    assert default.source == "default" and default.path == Path.home() / ".cache" / "odeverify" / "jax"
    assert resolve({**home, ENV: str(tmp_path / "mine")}) == resolve({ENV: str(tmp_path / "mine")})
    assert resolve({ENV: str(tmp_path / "mine")}).path == tmp_path / "mine"
    assert resolve({ENV: "~/c"}).path == Path("~/c").expanduser()
    for off in ("", "off", " OFF ", "0", "false", "no", "None"):
        assert resolve({ENV: off}).path is None and resolve({ENV: off}).source == "env-off", off
    # a directory the user gave JAX wins over ours; a cache switched off in JAX stays off
    assert resolve({ENV: str(tmp_path)}, jax_dir="/their/dir").path == Path("/their/dir")
    assert resolve({ENV: str(tmp_path)}, jax_dir="/their/dir").source == "jax"
    assert resolve({ENV: str(tmp_path)}, jax_enabled=False).path is None


def test_jax_cache_enable_sets_jax_once(jax_cache, monkeypatch, tmp_path):
    import jax

    target = tmp_path / "a" / "jax"
    monkeypatch.setenv(jax_cache.ENV, str(target))
    assert jax_cache.enable() == target and target.is_dir() and not list(target.iterdir())  # probe removed
    assert jax.config.jax_compilation_cache_dir == str(target)
    assert jax.config.jax_persistent_cache_min_compile_time_secs == jax_cache.MIN_COMPILE_TIME_S < 1.0
    assert jax.config.jax_persistent_cache_min_entry_size_bytes == -1
    monkeypatch.setenv(jax_cache.ENV, str(tmp_path / "other"))
    assert jax_cache.enable() == target  # once per process
    assert jax.config.jax_compilation_cache_dir == str(target)


def test_jax_cache_off_switch(jax_cache, monkeypatch):
    import jax

    monkeypatch.setenv(jax_cache.ENV, "off")
    assert jax_cache.enable() is None and jax_cache.choice().source == "env-off"
    assert jax.config.jax_compilation_cache_dir is None


def test_jax_cache_respects_the_users_jax_setting(jax_cache, monkeypatch, tmp_path):
    import jax

    jax.config.update("jax_compilation_cache_dir", str(tmp_path / "theirs"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 2.5)
    monkeypatch.setenv(jax_cache.ENV, str(tmp_path / "ours"))
    assert jax_cache.enable() == tmp_path / "theirs" and jax_cache.choice().source == "jax"
    assert jax.config.jax_compilation_cache_dir == str(tmp_path / "theirs")
    assert jax.config.jax_persistent_cache_min_compile_time_secs == 2.5  # their thresholds untouched
    assert not (tmp_path / "ours").exists()


def test_jax_cache_unwritable_directory_warns_once(jax_cache, monkeypatch, tmp_path):
    import warnings

    import jax

    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    monkeypatch.setenv(jax_cache.ENV, str(blocker / "jax"))  # cannot be created, even by root
    with pytest.warns(jax_cache.JaxCacheWarning, match=r"cannot be written.*ODEVERIFY_JAX_CACHE") as caught:
        assert jax_cache.enable() is None
    assert str(blocker / "jax") in str(caught[0].message)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert jax_cache.enable() is None  # no second warning
    assert jax_cache.choice().source == "unwritable" and jax.config.jax_compilation_cache_dir is None


def test_problems_of_one_shape_share_one_compilation():
    """warped_oscillatory and warped_real share their field and shapes (n = 3; the matrix A is a
    traced argument); the convergence sweep's 16 output times and the span's 2 share one padded
    slot count. One XLA compilation serves both (JAX's own compile events); another shape
    (warped_fast, n = 2) compiles again."""
    from odeverify.backends._jax_cache import counting
    from odeverify.backends.diffrax_backend import DiffraxBackend

    fresh = DiffraxBackend()
    osc, real, fast = (odeverify.PROBLEMS.get(n) for n in ("warped_oscillatory", "warped_real", "warped_fast"))
    with counting() as c:
        a = fresh.solve(osc, "Heun", n_steps=32, t_eval=np.linspace(*osc.t_span, 16))
        b = fresh.solve(real, "Heun", n_steps=16)
    assert (a.status, b.status) == (Status.SUCCESS, Status.SUCCESS)
    assert fresh.compiles == 1 and c.by_name["jit(fn)"] == 1, c.by_name
    assert np.asarray(a.ys).shape == (16, 3) and np.asarray(b.ys).shape == (2, 3)
    assert b.timing["compile_s"] == 0.0
    # the shared program ran warped_real's own matrix and span: the reference's numbers, same tableau
    ref = get("reference").solve(real, "heun", n_steps=16)
    np.testing.assert_allclose(np.asarray(b.ys), np.asarray(ref.ys), rtol=1e-13, atol=1e-15)
    with counting() as c:
        fresh.solve(fast, "Heun", n_steps=16)
    assert fresh.compiles == 2 and c.by_name["jit(fn)"] == 1


def test_padded_output_times_change_nothing(monkeypatch):
    """The padding of the output times (repeats of the last one) leaves the steps and the values
    at the requested times unchanged, bit for bit: compiled without it, the same solves give the
    same numbers (adaptive Tsit5 with 5 output times, forward and backward in time)."""
    import dataclasses

    from odeverify.backends import diffrax_backend
    from odeverify.backends.diffrax_backend import DiffraxBackend

    p = odeverify.PROBLEMS.get("warped_oscillatory")
    t0, t1 = p.t_span
    back = dataclasses.replace(p, name="warped_oscillatory_backward", t_span=(t1, t0),
                               y0=tuple(p.solution_at(t1)))
    assert len(diffrax_backend._padded_times(np.linspace(t0, t1, 5))) == diffrax_backend.MIN_OUTPUT_SLOTS
    assert len(diffrax_backend._padded_times(np.linspace(t0, t1, 17))) == 32
    runs = {}
    for padded in (True, False):
        if not padded:
            monkeypatch.setattr(diffrax_backend, "_padded_times", lambda ts: ts)
        b = DiffraxBackend()
        runs[padded] = [b.solve(q, "Tsit5", rtol=1e-6, atol=1e-9, t_eval=np.linspace(*q.t_span, 5))
                        for q in (p, back)]
        assert b.compiles == 1  # the backward span is a traced argument too
    for a, b in zip(runs[True], runs[False]):
        assert a.status is b.status is Status.SUCCESS
        assert np.asarray(a.ys).shape == (5, 3)
        np.testing.assert_array_equal(np.asarray(a.ys), np.asarray(b.ys))
        assert (a.stats.accepted, a.stats.rejected, a.stats.nfev) == (b.stats.accepted, b.stats.rejected, b.stats.nfev)
