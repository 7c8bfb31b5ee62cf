"""The shared-step fast path: host values as Python floats, run by the same loop and the same
controller formula as the per-sample NumPy path (``control.SCALAR`` / ``control.ARRAY``)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from odeverify import _xp, solve
from odeverify import integrate as integrate_mod
from odeverify.control import ARRAY, SCALAR, ControllerState, PIController
from odeverify.integrate import error_norm
from odeverify.solvers import SOLVERS
from odeverify.solvers.base import TimeContext

SPECIAL = [0.0, -0.0, 1e-300, 1e-10, 0.5, 1.0, 1.0 + 2**-52, 2.0, 1e300, math.inf, -math.inf, math.nan, -3.5]


def _values(rng: np.random.Generator, n: int = 400) -> np.ndarray:
    x = np.concatenate([SPECIAL, rng.standard_normal(n) * 10.0 ** rng.uniform(-12, 12, n)])
    return x.astype(np.float64)


def _same(a, b) -> bool:
    """Exact equality of floats (NaN equals NaN; the sign of a zero, which np.minimum leaves
    unspecified, is not compared) or of bools."""
    a, b = np.asarray(a), np.asarray(b)
    if a.dtype == bool or b.dtype == bool:
        return a.dtype == b.dtype and np.array_equal(a, b)
    return bool(np.array_equal(a, b, equal_nan=True))


@pytest.mark.parametrize("name", ["minimum", "maximum", "nextafter"])
def test_binary_host_ops_agree(name):
    rng = np.random.default_rng(1)
    x, y = _values(rng), _values(rng)[::-1].copy()
    pairs = [(a, b) for a in SPECIAL for b in SPECIAL] + list(zip(x, y))
    a = np.asarray([p[0] for p in pairs])
    b = np.asarray([p[1] for p in pairs])
    vec = getattr(ARRAY, name)(a, b)
    for i, (u, v) in enumerate(pairs):
        got = getattr(SCALAR, name)(float(u), float(v))
        assert type(got) is float
        assert _same(got, vec[i]), (name, u, v, got, vec[i])


def test_unary_host_ops_and_power_agree():
    rng = np.random.default_rng(2)
    x = _values(rng)
    for name in ("abs", "isfinite", "logical_not"):
        vec = getattr(ARRAY, name)(x if name != "logical_not" else x > 0)
        for i, v in enumerate(x):
            arg = float(v) if name != "logical_not" else bool(v > 0)
            assert _same(getattr(SCALAR, name)(arg), vec[i]), (name, v)
    pos = np.abs(x[np.isfinite(x)]) + 1e-10
    with np.errstate(invalid="ignore"):
        assert all(_same(SCALAR.sqrt(float(v)), np.sqrt(v)) for v in pos)
    for e in (-0.2, -1 / 3, -1 / 8, 0.08, -0.14, 0.0, 0.5, 2.0, -60.0):
        vec = ARRAY.power(pos, e)
        for i, v in enumerate(pos):
            assert _same(SCALAR.power(float(v), e), vec[i]), (v, e)
    assert SCALAR.where(True, 1.0, 2.0) == 1.0 and SCALAR.where(False, 1.0, 2.0) == 2.0
    assert SCALAR.count(True) == 1 and SCALAR.count(False) == 0 and ARRAY.count(np.asarray([True, False, True])) == 2


@pytest.mark.parametrize("seed", range(6))
def test_controller_scalar_and_array_paths_agree(seed):
    """The same formula on Python floats (shared step) and on NumPy arrays (per sample)."""
    rng = np.random.default_rng(seed)
    ctrl = PIController(pcoeff=float(rng.choice([0.0, 0.4, rng.uniform(0, 1)])), icoeff=float(rng.uniform(0.2, 1.5)),
                        safety=float(rng.uniform(0.5, 1.0)), factor_min=float(rng.uniform(0.05, 0.9)),
                        factor_max=float(rng.uniform(1.5, 20)))
    k = int(rng.integers(2, 9))
    n = 300
    arr_state = ctrl.init((n,))
    scal_states = [ctrl.init(()) for _ in range(n)]
    for _ in range(8):
        err = np.concatenate([[0.0, 1.0, 1.0 + 1e-15, math.nan, math.inf, 1e-12, 1e12],
                              10.0 ** rng.uniform(-12, 4, n - 7)])
        rng.shuffle(err)
        acc, fac, arr_state = ctrl(err, k, arr_state)
        for i in range(n):
            a, f, scal_states[i] = ctrl(float(err[i]), k, scal_states[i])
            assert type(a) is bool and type(f) is float
            assert a == bool(acc[i]) and _same(f, fac[i]), (err[i], a, acc[i], f, fac[i])
            assert _same(scal_states[i].prev_err, arr_state.prev_err[i])
            assert scal_states[i].rejected_last == bool(arr_state.rejected_last[i])


def test_controller_accepts_0d_arrays_and_scalars_alike():
    c = PIController.gustafsson()
    st_a = ControllerState(np.ones(()), np.zeros((), dtype=bool))
    st_s = c.init(())
    for e in (0.3, 2.0, 0.9, 1e-7, math.nan, 0.5):
        acc_a, fac_a, st_a = c(np.asarray(e), 5, st_a)
        acc_s, fac_s, st_s = c(e, 5, st_s)
        assert bool(acc_a) == acc_s and _same(fac_s, fac_a)


def _problem():
    A = np.asarray([[-0.3, 1.2, 0.0], [-1.0, -0.1, 0.4], [0.2, -0.5, -0.7]])

    def f(t, y):
        return np.tanh(y @ A.T) * (1.0 + 0.5 * np.sin(t)[..., None]) - 0.1 * y**3

    return f


# bdf refuses batch='per-sample' (tests/test_bdf.py checks the error)
@pytest.mark.parametrize("method", sorted(n for n in SOLVERS.names() if not getattr(SOLVERS.get(n), "variable_order", False)))
def test_shared_and_per_sample_take_the_same_steps(method):
    """A batch of one in per-sample mode runs the ARRAY path of the loop, the shared step the
    SCALAR path: the same steps and counts, and the same values up to round-off (a shared
    step folds h into the stage weights, a per-sample step multiplies by it afterwards)."""
    f = _problem()
    y0 = np.asarray([[0.7, -0.2, 1.1]])
    te = np.linspace(0.0, 4.0, 9)
    adaptive = SOLVERS.get(method).adaptive
    kw = dict(rtol=1e-7, atol=1e-9) if adaptive else dict(n_steps=37)
    a = solve(f, y0, (0.0, 4.0), method=method, t_eval=te, **kw)
    b = solve(f, y0, (0.0, 4.0), method=method, t_eval=te, batch="per-sample", **kw)
    assert a.success and b.success
    assert (a.stats.nfev, a.stats.accepted, a.stats.rejected) == (b.stats.nfev, b.stats.accepted, b.stats.rejected)
    assert a.stats.accepted == int(b.stats.sample_accepted[0]) and a.stats.rejected == int(b.stats.sample_rejected[0])
    assert type(a.t_final) is float and a.t_final == float(b.t_final[0])
    np.testing.assert_allclose(np.asarray(a.ys), np.asarray(b.ys), rtol=1e-10, atol=1e-13)


def test_failures_are_the_same_in_both_paths():
    f = _problem()
    y0 = np.asarray([[0.7, -0.2, 1.1]])
    for kw, status in ((dict(max_steps=4), "max_steps"), (dict(dtmin=0.5, rtol=1e-12, atol=1e-12), "dt_underflow")):
        a = solve(f, y0, (0.0, 4.0), **kw)
        b = solve(f, y0, (0.0, 4.0), batch="per-sample", **kw)
        assert a.status == b.status and a.status.name.lower() == status
        assert a.stats.nfev == b.stats.nfev and a.t_final == pytest.approx(float(b.t_final[0]), rel=1e-9)


def test_interpolant_only_for_steps_with_an_output_time(monkeypatch):
    made = []
    real = integrate_mod.StepInterpolant

    def counting(*args, **kwargs):
        made.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(integrate_mod, "StepInterpolant", counting)
    f = _problem()
    sol = solve(f, np.asarray([0.7, -0.2, 1.1]), (0.0, 4.0), rtol=1e-8, atol=1e-10)
    assert sol.success and sol.stats.accepted > 5
    assert len(made) == 1  # the last step, which ends on t1
    made.clear()
    sol = solve(f, np.asarray([0.7, -0.2, 1.1]), (0.0, 4.0), rtol=1e-8, atol=1e-10, t_eval=[0.0, 1.0, 1.01, 4.0])
    assert 2 <= len(made) <= 3


def test_error_norm_shared_is_a_float_per_sample_an_array():
    rng = np.random.default_rng(3)
    y, y1, err, aux = (rng.standard_normal((4, 3)) for _ in range(4))
    xp = _xp.namespace(y)
    for e_aux in (None, aux):
        s = error_norm(xp, err, e_aux, y, y1, 1e-3, 1e-6, False)
        p = error_norm(xp, err, e_aux, y, y1, 1e-3, 1e-6, True)
        assert type(s) is float and p.shape == (4,)
        assert s == pytest.approx(float(error_norm(xp, err.reshape(1, -1), None if e_aux is None else aux.reshape(1, -1),
                                                   y.reshape(1, -1), y1.reshape(1, -1), 1e-3, 1e-6, True)[0]), rel=1e-14)


@pytest.mark.parametrize("library", ["numpy", "torch", "array_api_strict"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_time_context_time_is_asarray(library, dtype):
    if not _xp.available(library if library != "numpy" else "numpy"):
        pytest.skip(f"{library} is not installed")
    xp = _xp.get_namespace(library)
    dt = getattr(xp, dtype)
    y = xp.asarray([1.0, 2.0], dtype=dt)
    tc = TimeContext(xp=xp, dtype=dt, device=_xp.device(y), per_sample=False, t=0.1)
    for t in (0.1, np.asarray(0.1), np.float64(1 / 3)):
        got = tc.time(t)
        want = xp.asarray(float(t), dtype=dt, device=_xp.device(y))
        assert got.dtype == want.dtype and tuple(got.shape) == ()
        assert float(_xp.to_numpy(got)) == float(_xp.to_numpy(want))
