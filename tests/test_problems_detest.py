"""The DETEST problem library: definitions, closed forms, references, Array API portability."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from odeverify import _xp
from odeverify.problems import PROBLEMS, get, select
from odeverify.problems import detest

NAMES = [f"detest_{c}{i}" for c in "abcde" for i in range(1, 6)]
EXACT = [n for n in NAMES if get(n).exact is not None]
LIBS = ["numpy", "array_api_strict", "torch", "jax"]


def _namespace(lib):
    pytest.importorskip(lib)
    if lib == "jax":
        import jax

        jax.config.update("jax_enable_x64", True)
    return _xp.get_namespace(lib)


def _states(prob, batch, seed=0):
    """Times in [0, 20) and states near y0 (away from the rhs's singularities)."""
    rng = np.random.default_rng(seed)
    y0 = np.asarray(prob.y0)
    y = y0 * (1.0 + 0.05 * rng.uniform(-1, 1, (batch, prob.n))) + 0.05 * rng.uniform(-1, 1, (batch, prob.n))
    t = rng.uniform(0.0, 19.9, batch)
    return t, y


def _f_numpy(prob):
    return detest.numpy_f(prob)


def _scaled_err(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(a - b) / np.maximum(1.0, np.abs(b))))


# ---------------------------------------------------------------------------------------------
# registry
# ---------------------------------------------------------------------------------------------


def test_all_25_registered_with_tags_and_citation():
    detest_names = sorted(n for n, p in PROBLEMS.items() if "detest" in p.tags)
    assert detest_names == sorted(NAMES)
    assert sorted(p.name for p in select("detest")) == sorted(NAMES)
    for name in NAMES:
        p = get(name)
        assert {"detest", "nonstiff"} <= p.tags
        assert p.t_span == (0.0, 20.0)
        assert ("autonomous" in p.tags) != ("time_dependent" in p.tags)
        assert ("linear" in p.tags) != ("nonlinear" in p.tags)
        assert ("has_exact" in p.tags) == (p.exact is not None)
        assert "Hull" in p.citation and "1972" in p.citation and "Enright" in p.citation
        assert p.final_reference() is not None
    assert {p.n for p in select("detest", "scalar")} == {1}
    assert sorted(EXACT) == sorted(set(NAMES) - {"detest_b1", "detest_c5", "detest_e2", "detest_e3"})


def test_dimensions_and_initial_values():
    dims = {"a": 1, "b1": 2, "b": 3, "c": 10, "c4": 51, "c5": 30, "d": 4, "e": 2}
    for name in NAMES:
        key = name[-2:]
        assert get(name).n == dims.get(key, dims[key[0]]), name
    assert get("detest_a5").y0 == (4.0,)
    assert get("detest_b1").y0 == (1.0, 3.0)
    assert get("detest_e4").y0 == (30.0, 0.0)
    for i, e in enumerate((0.1, 0.3, 0.5, 0.7, 0.9), start=1):
        assert get(f"detest_d{i}").y0 == (1 - e, 0.0, 0.0, math.sqrt((1 + e) / (1 - e)))
    # E1 starts on J_{1/2}(1), J_{1/2}'(1)
    c = math.sqrt(2 / math.pi)
    assert np.allclose(get("detest_e1").y0, (c * math.sin(1), c * (math.cos(1) - 0.5 * math.sin(1))), rtol=1e-15)


# ---------------------------------------------------------------------------------------------
# rhs: shapes, dtypes, Array API portability
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("lib", LIBS)
@pytest.mark.parametrize("name", NAMES)
def test_rhs_batched_and_unbatched_match_numpy_float64(name, lib):
    xp = _namespace(lib)
    prob = get(name)
    t, y = _states(prob, 4)
    ref = np.stack([_f_numpy(prob)(ti, yi) for ti, yi in zip(t, y)])
    assert np.all(np.isfinite(ref))
    f = prob.vector_field(xp, dtype=xp.float64)

    out = f(xp.asarray(t, dtype=xp.float64), xp.asarray(y, dtype=xp.float64))  # per-sample t
    assert tuple(out.shape) == (4, prob.n)
    assert out.dtype == xp.float64
    got = _xp.to_numpy(out)
    np.testing.assert_allclose(got, ref, rtol=1e-14, atol=1e-14 * np.max(np.abs(ref)))

    out1 = f(xp.asarray(t[1], dtype=xp.float64), xp.asarray(y[1], dtype=xp.float64))  # unbatched
    assert tuple(out1.shape) == (prob.n,)
    assert out1.dtype == xp.float64
    np.testing.assert_allclose(_xp.to_numpy(out1), ref[1], rtol=1e-14, atol=1e-14 * np.max(np.abs(ref)))

    # shared 0-d time with a batch of states
    out2 = f(xp.asarray(t[2], dtype=xp.float64), xp.asarray(y, dtype=xp.float64))
    assert tuple(out2.shape) == (4, prob.n)
    np.testing.assert_allclose(_xp.to_numpy(out2)[2], ref[2], rtol=1e-14, atol=1e-14 * np.max(np.abs(ref)))


@pytest.mark.parametrize("lib", ["numpy", "torch", "array_api_strict"])
@pytest.mark.parametrize("name", NAMES)
def test_rhs_keeps_float32(name, lib):
    xp = _namespace(lib)
    prob = get(name)
    t, y = _states(prob, 3, seed=1)
    f = prob.vector_field(xp, dtype=xp.float32)
    out = f(xp.asarray(t, dtype=xp.float32), xp.asarray(y, dtype=xp.float32))
    assert out.dtype == xp.float32 and tuple(out.shape) == (3, prob.n)
    # 2-d batch axes
    out2 = f(xp.asarray(t[:2][None, :], dtype=xp.float32), xp.asarray(y[:2][None, :, :], dtype=xp.float32))
    assert tuple(out2.shape) == (1, 2, prob.n)
    ref = np.stack([_f_numpy(prob)(ti, yi) for ti, yi in zip(t, y)])
    np.testing.assert_allclose(_xp.to_numpy(out), ref, rtol=2e-5, atol=2e-5 * np.max(np.abs(ref)))


def test_rhs_spot_values():
    """Hand-computed f at chosen points (catches wrong coefficients the self-consistency misses)."""
    cases = {
        "detest_a4": (0.0, [10.0], [1.25]),
        "detest_a5": (1.0, [3.0], [0.5]),
        "detest_b1": (0.0, [2.0, 0.5], [2.0, 0.5]),
        "detest_b5": (0.0, [1.0, 2.0, 3.0], [6.0, -3.0, -1.02]),
        "detest_c2": (0.0, [1.0] * 10, [-1.0] + [-1.0] * 8 + [9.0]),
        "detest_c3": (0.0, [1.0] * 10, [-1.0] + [0.0] * 8 + [-1.0]),
        "detest_d1": (0.0, [3.0, 4.0, 1.0, 2.0], [1.0, 2.0, -3 / 125, -4 / 125]),
        "detest_e1": (1.0, [1.0, 2.0], [2.0, -(1.0 + 1.0 - 0.25 / 4)]),
        "detest_e2": (0.0, [2.0, 1.0], [1.0, -5.0]),
        "detest_e3": (0.5, [6.0, 1.0], [1.0, 30.0 + 2 * math.sin(2.78535 * 0.5)]),
        "detest_e4": (0.0, [30.0, 0.1], [0.1, 0.032 - 0.004]),
        "detest_e5": (5.0, [0.0, 1.0], [1.0, math.sqrt(2.0) / 20.0]),
    }
    for name, (t, y, expected) in cases.items():
        np.testing.assert_allclose(_f_numpy(get(name))(t, np.asarray(y)), expected, rtol=1e-15, atol=1e-15)


def test_c5_rhs_against_direct_sum():
    """The vectorized planet acceleration equals a plain double loop over the definition."""
    prob = get("detest_c5")
    y = np.asarray(prob.y0)
    k2, m0, m = 2.95912208286, 1.00000597682, detest._C5_M
    q = y[:15].reshape(5, 3)
    acc = np.zeros((5, 3))
    for i in range(5):
        ri = np.linalg.norm(q[i])
        acc[i] = -(m0 + m[i]) * q[i] / ri**3
        for j in range(5):
            if j != i:
                dij = np.linalg.norm(q[j] - q[i])
                acc[i] += m[j] * ((q[j] - q[i]) / dij**3 - q[j] / np.linalg.norm(q[j]) ** 3)
    expected = np.concatenate([y[15:], k2 * acc.ravel()])
    np.testing.assert_allclose(_f_numpy(prob)(0.0, y), expected, rtol=1e-13, atol=1e-16)


# ---------------------------------------------------------------------------------------------
# closed forms
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", EXACT)
def test_exact_starts_at_y0_and_satisfies_the_ode(name):
    prob = get(name)
    np.testing.assert_allclose(prob.exact(np.array([0.0]))[0], prob.y0, rtol=0, atol=2e-15 * max(1, max(map(abs, prob.y0))))
    f = _f_numpy(prob)
    h = 2e-4  # truncation ~h**4 |y^(5)| (large near D5's pericentre), round-off ~eps |y| / h
    for t in (0.37, 3.1, 7.7, 12.5, 19.5):
        tt = np.array([t - 2 * h, t - h, t + h, t + 2 * h])
        ym2, ym1, yp1, yp2 = prob.exact(tt)
        deriv = (ym2 - 8 * ym1 + 8 * yp1 - yp2) / (12 * h)  # 4th-order central difference
        ft = f(t, prob.exact(np.array([t]))[0])
        scale = 1.0 + np.max(np.abs(ft))
        assert np.max(np.abs(deriv - ft)) < 1e-8 * scale, (name, t, deriv - ft)


@pytest.mark.parametrize("name", EXACT)
def test_exact_agrees_with_a_numerical_solve(name):
    from scipy.integrate import solve_ivp

    prob = get(name)
    ts = np.array([1.0, 5.5, 20.0])
    sol = solve_ivp(_f_numpy(prob), prob.t_span, np.asarray(prob.y0), method="DOP853", rtol=1e-11, atol=1e-13, t_eval=ts)
    assert sol.success
    assert _scaled_err(sol.y.T, prob.exact(ts)) < 1e-8


@pytest.mark.parametrize("name,n", [("detest_c3", 10), ("detest_c4", 51)])
def test_tridiagonal_images_match_matrix_exponential(name, n):
    from scipy.linalg import expm

    prob = get(name)
    a = np.asarray(prob.params["AT"]).T
    ts = np.array([0.0, 1e-3, 0.5, 2.0, 20.0, 55.0])
    ex = prob.exact(ts)
    for k, t in enumerate(ts):
        np.testing.assert_allclose(ex[k], expm(t * a)[:, 0], rtol=0, atol=2e-15)
    if n == 51:
        # the tiny last component keeps its relative accuracy: 1.8913306910279896891e-14 is the
        # eigen-expansion summed in 50-digit arithmetic (mpmath). The published (Algorithm 648)
        # value 1.891330702629865e-14 is off by a relative 6e-9 (absolute 1e-22).
        assert abs(ex[4, -1] / 1.8913306910279896891e-14 - 1) < 1e-13


def test_a5_implicit_solution():
    t = np.linspace(0.0, 29.0, 300)
    y = get("detest_a5").exact(t)[:, 0]
    # ln r + phi is constant along the spiral (phi the polar angle of (t, y))
    invariant = 0.5 * np.log(t**2 + y**2) + np.arctan2(y, t)
    np.testing.assert_allclose(invariant, math.log(4.0) + math.pi / 2, rtol=0, atol=4e-15)
    with pytest.raises(ValueError):
        get("detest_a5").exact(np.array([30.0]))


@pytest.mark.parametrize("i,e", list(enumerate((0.1, 0.3, 0.5, 0.7, 0.9), start=1)))
def test_kepler_conserves_energy_and_angular_momentum(i, e):
    prob = get(f"detest_d{i}")
    ts = np.linspace(0.0, 40.0, 801)
    ys = prob.exact(ts)
    np.testing.assert_allclose(prob.invariants["energy"](ys), -0.5, rtol=0, atol=1e-14 / (1 - e))
    np.testing.assert_allclose(prob.invariants["angular_momentum"](ys), math.sqrt(1 - e * e), rtol=0, atol=1e-14 / (1 - e))
    np.testing.assert_allclose(prob.exact(np.array([2 * math.pi, 6 * math.pi]))[:, :], [prob.y0] * 2, atol=1e-13 / (1 - e))
    # published end values lie on the same orbit
    pub = np.asarray(detest.PUBLISHED[prob.name])
    assert abs(prob.invariants["energy"](pub) + 0.5) < 1e-13
    assert abs(prob.invariants["angular_momentum"](pub) - math.sqrt(1 - e * e)) < 1e-13


@pytest.mark.parametrize("name", [n for n in NAMES if get(n).invariants])
def test_invariants_hold_between_y0_and_final_reference(name):
    prob = get(name)
    y0, y1 = np.asarray(prob.y0), prob.final_reference()
    for key, inv in prob.invariants.items():
        a, b = float(inv(y0)), float(inv(y1))
        assert abs(a - b) <= 1e-11 * max(1.0, abs(a)), (name, key, a, b)


def test_b5_invariants_and_c_sums():
    t = np.linspace(0, 20, 101)
    prob = get("detest_b5")
    ys = prob.exact(t)
    for inv in prob.invariants.values():
        np.testing.assert_allclose(inv(ys), 1.0, atol=1e-14)
    for name in ("detest_b2", "detest_b3", "detest_c1", "detest_c2"):
        p = get(name)
        np.testing.assert_allclose(p.invariants["sum"](p.exact(t)), sum(p.y0), atol=1e-14)


# ---------------------------------------------------------------------------------------------
# published and computed references
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_published_end_values_agree(name):
    prob = get(name)
    pubs = [r for r in prob.references if r.kind == "published"]
    assert len(pubs) == 1
    pub = pubs[0]
    assert pub.t == 20.0 and pub.digits == 16 and "Enright" in pub.source and "648" in pub.source
    if prob.exact is not None:
        ours, tol = prob.exact(np.array([20.0]))[0], detest.PUBLISHED_AGREEMENT["closed_form"]
    else:
        (comp,) = [r for r in prob.references if r.kind == "computed"]
        ours, tol = comp.y, detest.PUBLISHED_AGREEMENT["computed"]
    assert _scaled_err(pub.y, ours) < tol


def test_reference_data_file_metadata():
    data = json.loads(detest.DATA_PATH.read_text())
    for key in ("solver", "method", "rtol", "atol", "check", "scipy_version", "created", "generator"):
        assert key in data
    assert data["method"] == "DOP853" and data["rtol"] <= 1e-13 and data["atol"] <= 1e-14
    assert data["check"]["method"] == "Radau"
    assert sorted(data["problems"]) == sorted(detest.COMPUTED)
    for name, entry in data["problems"].items():
        prob = get(name)
        assert entry["fingerprint"] == detest.fingerprint(prob), f"{name}: stale reference, rerun --make-references"
        np.testing.assert_allclose(entry["f0"], _f_numpy(prob)(0.0, np.asarray(prob.y0)), rtol=1e-14, atol=1e-15)
        assert entry["check_max_scaled_diff"] <= entry["claimed_accuracy"] / 10


@pytest.mark.parametrize("name", detest.COMPUTED)
def test_computed_reference_agrees_with_a_fresh_solve(name):
    from scipy.integrate import solve_ivp

    prob = get(name)
    (ref,) = [r for r in prob.references if r.kind == "computed"]
    assert prob.references[0] is ref  # the computed value is the problem's best-known solution
    entry = detest.load_references()["problems"][name]
    assert "DOP853" in ref.source and "Radau" in ref.source and "scipy" in ref.source
    sol = solve_ivp(_f_numpy(prob), prob.t_span, np.asarray(prob.y0), method="DOP853", rtol=1e-12, atol=1e-14, t_eval=[20.0])
    assert sol.success
    assert _scaled_err(sol.y[:, -1], ref.y) < entry["claimed_accuracy"]


def test_stale_reference_is_dropped():
    from dataclasses import replace

    prob = get("detest_e2")
    data = detest.load_references()
    edited = replace(prob, y0=(2.0, 1e-3), references=())
    assert detest._computed_reference(edited, data) is None
    assert detest._computed_reference(replace(prob, references=()), data) is not None


def test_make_references_writes_atomically(tmp_path):
    path = tmp_path / "refs.json"
    payload = detest.make_references(
        path, names=("detest_e2",),
        solve_opts={"method": "DOP853", "rtol": 1e-9, "atol": 1e-12},
        check_opts={"method": "DOP853", "rtol": 1e-10, "atol": 1e-12},
    )  # fmt: skip
    assert [p.name for p in tmp_path.iterdir()] == ["refs.json"]  # no temp file left behind
    data = json.loads(path.read_text())
    assert data == json.loads(json.dumps(payload))
    entry = data["problems"]["detest_e2"]
    assert data["rtol"] == 1e-9 and data["check"]["rtol"] == 1e-10
    assert _scaled_err(entry["y"], detest.PUBLISHED["detest_e2"]) < 1e-6
