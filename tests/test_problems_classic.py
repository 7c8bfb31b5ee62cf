"""The classic problems: closed forms, published and computed references, and the
Array-API right-hand sides on every array library."""
from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
from scipy.integrate import solve_ivp

import odeverify.problems as P
from odeverify import _xp
from odeverify.problems import _reference_data, classic, make_references
from odeverify.problems.classic import eccentric_anomaly, kepler_problem, linear_problem

MINE = [p for _, p in P.PROBLEMS.items() if p.rhs.__module__ == classic.__name__]
EXACT = [p for p in MINE if p.exact is not None]
COMPUTED = [p for p in MINE if any(r.kind == "computed" for r in p.references)]
LIBS = ("numpy", "array_api_strict", "torch", "jax")


def ids(problems):
    return [p.name for p in problems]


# --------------------------------------------------------------------------- helpers


def rhs_numpy(problem, t, y):
    xp = _xp.get_namespace("numpy")
    p = problem.converted_params(xp, dtype=xp.float64)
    return np.asarray(problem.rhs(xp, np.asarray(t, dtype=np.float64), np.asarray(y, dtype=np.float64), p))


def scipy_solve(problem, t1, method="DOP853", rtol=1e-12, atol=1e-14):
    def fun(t, y):
        return rhs_numpy(problem, t, y)

    sol = solve_ivp(fun, (problem.t_span[0], t1), np.asarray(problem.y0), method=method,
                    rtol=rtol, atol=atol)
    assert sol.status == 0, sol.message
    return sol.y[:, -1]


def fd_residual(problem, exact, times, h=1e-3):
    """max |central 4th-order difference of exact - rhs(exact)| / max(1, |rhs|)."""
    worst = 0.0
    for t in times:
        ys = exact(np.array([t - 2 * h, t - h, t + h, t + 2 * h]))
        fd = (ys[0] - 8 * ys[1] + 8 * ys[2] - ys[3]) / (12 * h)
        f = rhs_numpy(problem, t, exact(np.array([t]))[0])
        worst = max(worst, float(np.max(np.abs(fd - f)) / max(1.0, np.max(np.abs(f)))))
    return worst


def interior_times(problem, fractions=(0.13, 0.37, 0.61, 0.89)):
    t0, t1 = problem.t_span
    return [t0 + a * (t1 - t0) for a in fractions]


def eval_on(lib, problem, t, y):
    xp = _xp.get_namespace(lib)
    p = problem.converted_params(xp, dtype=xp.float64)
    yy = xp.asarray(y, dtype=xp.float64)
    out = problem.rhs(xp, xp.asarray(t, dtype=xp.float64), yy, p)
    assert tuple(out.shape) == tuple(yy.shape)
    assert out.dtype == xp.float64
    return np.asarray(_xp.to_numpy(out), dtype=np.float64)


def sample_states(problem, batch=3, seed=0):
    rng = np.random.default_rng(seed)
    y0 = np.asarray(problem.y0)
    ys = y0 + 0.05 * (1.0 + np.abs(y0)) * rng.standard_normal((batch, problem.n))
    t = np.asarray(interior_times(problem, np.linspace(0.1, 0.9, batch)))
    return t, ys


# --------------------------------------------------------------------------- registry


def test_my_problems_are_registered_with_tags_and_citations():
    names = {p.name for p in MINE}
    expected = {"exp_decay", "exp_growth", "harmonic", "logistic", "nonlinear_scalar_t",
                "limit_cycle_t", "linear_real", "linear_imag", "linear_mixed", "kepler",
                "kepler_e09", "arenstorf", "pleiades", "lotka_volterra", "lorenz", "brusselator"}
    assert expected <= names
    for p in MINE:
        assert p.citation and p.description, p.name
        assert ("has_exact" in p.tags) == (p.exact is not None), p.name
        assert ("has_reference" in p.tags) == bool(p.references), p.name
        assert p.name == p.name.lower()
        assert len({"stiff", "nonstiff"} & p.tags) == 1, p.name
    # a nonlinear, time-dependent closed form exists (linear autonomous problems cannot
    # separate RK methods of the same order)
    assert any({"nonlinear", "time_dependent", "has_exact"} <= p.tags for p in MINE)
    assert P.select("chaotic") and P.get("lorenz") in P.select("chaotic")


# --------------------------------------------------------------------------- closed forms


@pytest.mark.parametrize("problem", EXACT, ids=ids(EXACT))
def test_exact_solution_satisfies_the_ode(problem):
    y_t0 = problem.exact(np.array([problem.t_span[0]]))
    assert y_t0.shape == (1, problem.n)
    np.testing.assert_allclose(y_t0[0], problem.y0, rtol=1e-14, atol=1e-14)
    assert fd_residual(problem, problem.exact, interior_times(problem)) < 1e-8


def test_fd_check_detects_a_wrong_closed_form():
    p = P.get("nonlinear_scalar_t")

    def wrong(t):  # the solution of y' = -2 t y^2 with a slightly wrong coefficient
        return (1.0 / (1.0 + 1.001 * np.asarray(t) ** 2))[..., None]

    assert fd_residual(p, wrong, interior_times(p)) > 1e-5


@pytest.mark.parametrize("name", ["linear_real", "linear_imag", "linear_mixed"])
def test_linear_exact_matches_expm(name):
    p = P.get(name)
    A = p.params["A"]
    for t in interior_times(p) + [p.t_span[1]]:
        ref = scipy.linalg.expm(A * (t - p.t_span[0])) @ np.asarray(p.y0)
        np.testing.assert_allclose(p.exact(np.array([t]))[0], ref, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("name", ["kepler", "kepler_e09"])
def test_kepler_exact_conserves_invariants(name):
    p = P.get(name)
    e = p.params["e"]
    Y = p.exact(np.linspace(-3.0, 4 * math.pi + 1.0, 2001))
    np.testing.assert_allclose(p.invariants["energy"](Y), -0.5, rtol=0, atol=1e-13)
    np.testing.assert_allclose(p.invariants["angular_momentum"](Y), math.sqrt(1 - e * e),
                               rtol=0, atol=1e-13)
    # periodic with period 2 pi
    np.testing.assert_allclose(p.exact(np.array([2 * math.pi]))[0], p.y0, atol=1e-13)


def test_kepler_equation_solved_to_roundoff():
    M = np.linspace(-20.0, 20.0, 4001)
    for e in (0.0, 0.3, 0.9, 0.99):
        E = eccentric_anomaly(M, e)
        assert np.max(np.abs(E - e * np.sin(E) - M)) < 8 * np.finfo(float).eps * 20


def test_kepler_factory_and_its_errors():
    p = kepler_problem(0.3, periods=2)
    assert p.t_span == (0.0, 4 * math.pi) and p.y0[0] == pytest.approx(0.7)
    with pytest.raises(ValueError, match="e="):
        kepler_problem(1.0)
    with pytest.raises(ValueError, match="periods"):
        kepler_problem(0.5, periods=0)


# --------------------------------------------------------------------------- published references


def test_arenstorf_orbit_closes_after_one_published_period():
    p = P.get("arenstorf")
    (ref,) = p.references
    assert ref.kind == "published" and ref.t == p.t_span[1]
    y = scipy_solve(p, ref.t, rtol=1e-13, atol=1e-15)  # closes to ~2e-10 here
    assert np.max(np.abs(y - np.asarray(ref.y))) < 1e-8
    # and the Jacobi integral is conserved along the way
    assert abs(p.invariants["jacobi"](y) - p.invariants["jacobi"](np.asarray(p.y0))) < 1e-8


def test_pleiades_matches_the_published_reference():
    p = P.get("pleiades")
    (ref,) = p.references
    assert ref.kind == "published" and ref.t == 3.0 == p.t_span[1]
    y = scipy_solve(p, ref.t, rtol=1e-13, atol=1e-15)  # agrees to ~1.5e-11 here
    assert np.max(np.abs(y - np.asarray(ref.y))) < 1e-9


def test_pleiades_published_digits_conserve_the_invariants():
    # independent of any solver: the printed reference has the energy, momentum and
    # angular momentum of y0 (a mistyped digit would break this)
    p = P.get("pleiades")
    y0, y3 = np.asarray(p.y0), np.asarray(p.references[0].y)
    for name, f in p.invariants.items():
        a, b = f(y0), f(y3)
        assert abs(a - b) <= 1e-12 * max(1.0, abs(a)), name


# --------------------------------------------------------------------------- computed references


def test_every_computed_target_has_a_fresh_reference():
    for problem in classic.COMPUTED_TARGETS:
        assert _reference_data.entry_status(problem) == "ok", problem.name
        registered = P.get(problem.name)
        assert [r.kind for r in registered.references] == ["computed", "computed"]
        assert registered.references[-1].t == registered.t_span[1]
        assert "DOP853" in registered.references[0].source


@pytest.mark.parametrize("problem", COMPUTED, ids=ids(COMPUTED))
def test_computed_references_agree_with_fresh_solves(problem):
    for ref in problem.references:
        y_ref = np.asarray(ref.y)
        scale = float(np.max(np.abs(y_ref)))
        # the same method at a different tolerance: within the claimed digits
        y = scipy_solve(problem, ref.t, "DOP853", rtol=1e-12, atol=1e-14)
        assert np.max(np.abs(y - y_ref)) <= 2 * 10.0 ** (-ref.digits) * scale
    # an independent (implicit) method, at the final time
    y = scipy_solve(problem, problem.t_span[1], "Radau", rtol=1e-10, atol=1e-12)
    assert np.max(np.abs(y - y_ref)) <= 1e-7 * max(1.0, scale)


def test_stale_reference_is_detected():
    from dataclasses import replace

    p = classic.COMPUTED_TARGETS[0]
    moved = replace(p, y0=tuple(v + 1e-9 for v in p.y0))
    with pytest.warns(UserWarning, match="stale"):
        assert _reference_data.computed_references(moved) == ()


def test_make_references_entry_is_reproducible_and_written_atomically(tmp_path):
    p = P.get("brusselator")
    target = next(q for q in classic.COMPUTED_TARGETS if q.name == "brusselator")
    entry = make_references.compute_entry(target)
    for new, ref in zip(entry["references"], p.references):
        assert new["t"] == ref.t
        np.testing.assert_allclose(new["y"], ref.y, rtol=0,
                                   atol=10.0 ** (-ref.digits) * max(map(abs, ref.y)))
    path = tmp_path / "refs.json"
    make_references.write_atomically({"problems": {"x": entry}}, path)
    assert path.exists() and [q.name for q in tmp_path.iterdir()] == ["refs.json"]


# --------------------------------------------------------------------------- Array API rhs


@pytest.mark.parametrize("lib", LIBS)
@pytest.mark.parametrize("problem", MINE, ids=ids(MINE))
def test_rhs_agrees_across_array_libraries(problem, lib):
    if lib in ("torch", "jax"):
        pytest.importorskip(lib)
    t, ys = sample_states(problem)
    ref_batched = eval_on("numpy", problem, t, ys)
    # per-sample times broadcast like one component: row i equals the unbatched call
    for i in range(len(t)):
        np.testing.assert_allclose(eval_on("numpy", problem, t[i], ys[i]), ref_batched[i],
                                   rtol=1e-15, atol=0)
    scale = np.max(np.abs(ref_batched))
    out = eval_on(lib, problem, t, ys)
    np.testing.assert_allclose(out, ref_batched, rtol=1e-14, atol=1e-14 * scale)
    out1 = eval_on(lib, problem, t[0], ys[0])
    np.testing.assert_allclose(out1, ref_batched[0], rtol=1e-14, atol=1e-14 * scale)
    # a shared 0-d time with a batch of states
    np.testing.assert_allclose(eval_on(lib, problem, t[1], ys),
                               np.stack([eval_on("numpy", problem, t[1], y) for y in ys]),
                               rtol=1e-14, atol=1e-14 * scale)


@pytest.mark.parametrize("lib", ["numpy", "torch"])
@pytest.mark.parametrize("problem", MINE, ids=ids(MINE))
def test_rhs_keeps_float32(problem, lib):
    if lib == "torch":
        pytest.importorskip("torch")
    xp = _xp.get_namespace(lib)
    f = problem.vector_field(xp, dtype=xp.float32)
    _, ys = sample_states(problem, batch=2)
    out = f(xp.asarray(0.5, dtype=xp.float64), xp.asarray(ys, dtype=xp.float32))
    assert out.dtype == xp.float32 and tuple(out.shape) == ys.shape


# --------------------------------------------------------------------------- linear_problem


def _match_spectrum(got, want):
    got = list(got)
    for w in want:
        k = int(np.argmin([abs(g - w) for g in got]))
        assert abs(got[k] - w) <= 1e-9 * max(1.0, np.max(np.abs(want))), (got, want)
        got.pop(k)


@pytest.mark.parametrize(
    "eigenvalues",
    [
        [-1.0, -2.0, -3.0, -10.0],
        [2j, -2j, 0.5j, -0.5j],
        [-1.0, -0.1 + 3j, -0.1 - 3j, -5.0 + 1j, -5.0 - 1j],
        [-1.0, -10.0, -100.0, -1e4],  # stiffness ratio 1e4
        [0.3],
    ],
)
def test_linear_problem_has_the_prescribed_spectrum(eigenvalues):
    p = linear_problem(eigenvalues, seed=7)
    A = p.params["A"]
    assert A.shape == (len(eigenvalues),) * 2 and np.isrealobj(A)
    _match_spectrum(np.linalg.eigvals(A), np.asarray(eigenvalues, dtype=complex))
    assert ("stiff" in p.tags) == (max(-np.real(eigenvalues)) >= 1e3)
    assert ("oscillatory" in p.tags) == bool(np.any(np.imag(eigenvalues)))
    # deterministic in the seed, different across seeds
    np.testing.assert_array_equal(linear_problem(eigenvalues, seed=7).params["A"], A)
    if len(eigenvalues) > 1:
        assert not np.allclose(linear_problem(eigenvalues, seed=8).params["A"], A)


def test_registered_linear_spectra():
    _match_spectrum(np.linalg.eigvals(P.get("linear_real").params["A"]), [-0.5, -1, -2, -4, -8])
    _match_spectrum(np.linalg.eigvals(P.get("linear_imag").params["A"]), [1j, -1j, 3j, -3j])
    _match_spectrum(np.linalg.eigvals(P.get("linear_mixed").params["A"]),
                    [-1, -0.1 + 2j, -0.1 - 2j, -3 + 0.5j, -3 - 0.5j, 0.2])


@pytest.mark.parametrize(
    "kwargs, word",
    [
        ({"eigenvalues": [], "seed": 0}, "eigenvalues"),
        ({"eigenvalues": [-1.0, 1j], "seed": 0}, "eigenvalues"),
        ({"eigenvalues": [1 + 1j, 1 + 1j], "seed": 0}, "eigenvalues"),
        ({"eigenvalues": [float("nan")], "seed": 0}, "eigenvalues"),
        ({"eigenvalues": ["a"], "seed": 0}, "eigenvalues"),
        ({"eigenvalues": [-1.0], "seed": 1.5}, "seed"),
        ({"eigenvalues": [-1.0], "seed": 0, "t_span": (1.0, 1.0)}, "t_span"),
        ({"eigenvalues": [-1.0], "seed": 0, "t_span": 3.0}, "t_span"),
        ({"eigenvalues": [-1.0, -2.0], "seed": 0, "y0": [1.0]}, "y0"),
        ({"eigenvalues": [-1.0], "seed": 0, "name": ""}, "name"),
    ],
)
def test_linear_problem_rejects_bad_arguments(kwargs, word):
    with pytest.raises(ValueError, match=word):
        linear_problem(kwargs.pop("eigenvalues"), **kwargs)
