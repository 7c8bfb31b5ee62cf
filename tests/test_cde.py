"""Neural CDEs (issue 12): problems/cde.py (interpolations, closed forms, specs, bad input) and
properties/cde.py (healthy cases pass, planted faults fail)."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from odeverify.problems import cde as C
from odeverify.properties import cde as P

T = np.array([0.0, 0.3, 0.5, 1.1, 1.4, 2.0])
X = np.stack([np.sin(T), np.cos(2 * T)], axis=1)


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("times, values, match", [
    ([0.0, 0.5, 0.4, 1.0], np.zeros((4, 1)), "unsorted: times\\[1\\]=0.5, times\\[2\\]=0.4"),
    ([0.0, 0.5, 0.5, 1.0], np.zeros((4, 1)), "duplicated"),
    ([0.0, 0.5, 1.0], np.zeros((4, 1)), "values has 4 rows, but times has 3"),
    ([0.0], np.zeros((1, 1)), "times has 1 point\\(s\\), but an interpolation needs at least 2"),
    ([[0.0, 1.0]], np.zeros((2, 1)), "times has shape \\(1, 2\\), but it must be 1-d"),
    ([0.0, 1.0], np.zeros((2, 1, 1)), "values has shape \\(2, 1, 1\\)"),
    ([0.0, 1.0], [[0.0], [np.nan]], "values has 1 missing \\(NaN\\) entries, the first values\\[1, 0\\]; pass fill="),
    ([0.0, np.inf], np.zeros((2, 1)), "non-finite"),
])
def test_bad_data_raises_naming_the_parameter(times, values, match):
    with pytest.raises(ValueError, match=match):
        C.make_control(times, values, "linear")


def test_bad_options_raise():
    with pytest.raises(ValueError, match="interpolation='natural_cubc' is unknown; did you mean 'natural_cubic'"):
        C.make_control(T, X, "natural_cubc")
    with pytest.raises(ValueError, match="rectilinear' needs time as a channel: pass include_time=True"):
        C.make_control(T, X, "rectilinear")
    with pytest.raises(ValueError, match="fill='backward' is unknown"):
        C.make_control(T, [[np.nan], [1], [2], [3], [4], [5]], "linear", fill="backward")
    with pytest.raises(ValueError, match="values\\[0, 0\\] is missing: fill='forward'"):
        C.make_control(T, [[np.nan], [1], [2], [3], [4], [5]], "linear", fill="forward")
    with pytest.raises(TypeError, match="include_time=1"):
        C.make_control(T, X, "linear", include_time=1)
    with pytest.raises(ValueError, match="spec has no 'field'"):
        C.cde_from_spec({"kind": "cde", "interp": "linear", "path": {"amp": [[1]], "freq": [[1]]}, "times": {}})
    with pytest.raises(ValueError, match="unknown keys \\['colour'\\]"):
        C.cde_from_spec({"kind": "cde", "colour": 1})


# ----------------------------------------------------------------------------- interpolations
@pytest.mark.parametrize("kind", ["linear", "natural_cubic", "hermite_cubic_bd"])
def test_linear_data_are_reproduced_and_knots_interpolated(kind):
    lin = 0.5 + 2.0 * T[:, None] * np.array([[1.0, -0.5]])
    c = C.make_control(T, lin, kind)
    s = np.linspace(0, 2, 97)
    assert np.allclose(c.evaluate(s), 0.5 + 2.0 * s[:, None] * np.array([[1.0, -0.5]]), atol=1e-13)
    assert np.allclose(c.derivative(s), 2.0 * np.array([1.0, -0.5]), atol=1e-12)
    c = C.make_control(T, X, kind)
    assert np.allclose(c.evaluate(T), X, atol=1e-14)
    assert c.continuity == C.CONTINUITY[kind] and np.array_equal(c.knots, T[1:-1])


def test_rectilinear_is_the_lead_lag_path():
    c = C.make_control(T, X[:, :1], "rectilinear", include_time=True)
    assert c.domain == (0.0, 10.0) and c.order is None
    # s = 2k: observation k; s = 2k + 1: time moved to t_(k+1), the data still x_k
    assert np.allclose(c.evaluate(np.arange(0, 11, 2.0)), np.stack([T, X[:, 0]], axis=1))
    assert np.allclose(c.evaluate(np.arange(1, 10, 2.0)), np.stack([T[1:], X[:-1, 0]], axis=1))
    d = c.derivative(np.array([0.5, 1.5]))
    assert d[0, 1] == 0.0 and d[1, 0] == 0.0  # time moves alone, then the data alone


def test_fill_rules_and_time_channel():
    v = X.copy()
    v[[2, 3], 1] = np.nan
    fwd = C.make_control(T, v, "linear", fill="forward", include_time=True)
    assert np.array_equal(fwd.values[:, 0], T)
    assert fwd.values[2, 2] == X[1, 1] and fwd.values[3, 2] == X[1, 1]
    lin = C.make_control(T, v, "linear", fill="linear")
    expect = X[1, 1] + (T[2] - T[1]) / (T[4] - T[1]) * (X[4, 1] - X[1, 1])
    assert lin.values[2, 1] == pytest.approx(expect, abs=1e-15)


def test_dX_matches_the_derivative_on_numpy_and_torch():
    torch = pytest.importorskip("torch")
    from odeverify import _xp

    c = C.make_control(T, X, "natural_cubic")
    for t in (0.0, 0.3, 0.77, 2.0):
        for lib in ("numpy", "torch"):
            xp = _xp.get_namespace(lib)
            got = c.dX(xp, xp.asarray(t, dtype=xp.float64), xp.asarray(c.values, dtype=xp.float64))
            assert np.allclose(_xp.to_numpy(got), c.derivative(t), atol=1e-14)
    batch = c.dX(_xp.get_namespace("torch"), torch.tensor([0.1, 1.5]), torch.tensor(c.values))
    assert np.allclose(batch.numpy(), c.derivative(np.array([0.1, 1.5])))


# ----------------------------------------------------------------------------- closed forms
def test_the_two_closed_forms_agree_and_match_a_tight_solve():
    field = C.random_linear_field(2, 2, seed=4, scale=0.8, commuting=True)
    p = C.cde_problem("t", C.make_control(T, X, "linear"), field)
    assert p.exact_kind == "piecewise_linear"
    ts = np.array([0.2, 1.0, 2.0])
    a = p.exact(ts)
    b = C.commuting_flow(field.params["A"], p.control.evaluate(np.concatenate([[0.0], ts])), p.y0)[1:]
    assert np.allclose(a, b, rtol=1e-12, atol=1e-13)
    for name in ("cde_linear_pl", "cde_rectilinear", "cde_commuting_natural_cubic", "cde_partial"):
        q = C.get(name)
        sol = P.solve_cde(q, "dop853", rtol=1e-12, atol=1e-14)
        assert np.max(np.abs(np.asarray(sol.ys)[-1] - q.exact([q.t_span[1]])[0])) < 1e-10, name


def test_spec_round_trip_and_named_registry():
    p = C.cde_from_spec({"kind": "cde", "interp": "hermite_cubic_bd", "path": {"amp": [[1.0]], "freq": [[2.0]]},
                         "times": {"rule": "poisson", "n": 9, "seed": 3}, "field": {"type": "mlp", "hidden": 2},
                         "include_time": True, "missing": {"frac": 0.3, "seed": 1, "fill": "linear"}})
    assert C.cde_from_spec(p.spec).name == p.name and p.name.startswith("cde_hermite_cubic_bd_")
    assert json.loads(p.spec)["kind"] == "cde" and p.control.channels == 2
    assert {"cde_linear_pl", "cde_rectilinear", "cde_neural", "cde_partial"} <= set(C.CDE_PROBLEMS.names())


def test_initial_gradient_completes_the_data_gradient():
    """dL/d(values) with z0 = zeta(X(t0)) moving too: the partial (z0 fixed, complex steps) plus
    initial_gradient(dL/dz0) equals complex steps of the whole map."""
    p = C.get("cde_linear_pl")
    loss = P.default_loss(p)
    partial, _ = P.gradient_oracle(p, loss)

    def total(v):
        z = p.exact([p.t_span[1]], values=v)[0]
        return loss.weights[-1] @ z + 0.25 * np.sum(z * z)

    def dz0(i):
        z0 = p.y0.astype(complex)
        z0[i] += 1e-20j
        z = p.exact([p.t_span[1]], z0=z0)[0]
        return float(np.imag(loss.weights[-1] @ z + 0.25 * np.sum(z * z)) / 1e-20)

    g0 = np.array([dz0(i) for i in range(2)])
    full = partial["values"] + p.initial_gradient(g0)["values"]
    for idx in [(0, 0), (0, 1), (3, 1)]:
        v = p.control.values.astype(complex)
        v[idx] += 1e-20j
        assert full[idx] == pytest.approx(np.imag(total(v)) / 1e-20, rel=1e-10)


# ----------------------------------------------------------------------------- properties, healthy
@pytest.mark.parametrize("kind", ["linear", "natural_cubic", "hermite_cubic_bd"])
def test_interpolation_order_healthy(kind):
    r = P.cde_interpolation_order(C.get("cde_linear_pl"), kind)
    assert r.verdict == "pass", r.describe()
    assert r.expected == C.ORDER[kind]


@pytest.mark.slow
def test_natural_spline_order_two_where_x2_is_not_zero_at_an_end():
    from odeverify.families.cde import _ends_problem

    r = P.cde_interpolation_order(_ends_problem(), "natural_cubic")
    assert r.verdict == "pass" and r.expected == 2 and 1.6 < r.measured < 2.4, r.describe()


@pytest.mark.parametrize("name", ["cde_linear_pl", "cde_rectilinear", "cde_commuting_natural_cubic",
                                  "cde_commuting_hermite_cubic_bd", "cde_partial", "cde_neural"])
def test_knot_conditions_healthy(name):
    r = P.cde_knot_conditions(C.get(name))
    assert r.verdict == "pass" and r.measured == r.expected, r.describe()


def test_convergence_with_and_without_stops():
    p = C.get("cde_linear_pl")
    on = P.cde_convergence(p, "rk4", knots="jump", steps=(8, 16, 32, 64, 128, 256))
    off = P.cde_convergence(p, "rk4", knots="none", steps=P.kink_steps(p, 4))
    assert on.verdict == "pass" and on.expected == 4, on.describe()
    assert off.verdict == "pass" and off.expected == 1 and off.measured < 1.4, off.describe()


def test_reparametrisation_and_gradient_healthy():
    p = C.get("cde_linear_pl")
    r = P.cde_reparametrisation(p, "dopri5", tols=(1e-5, 1e-8))
    assert r.verdict == "pass", r.describe()
    pytest.importorskip("torch")
    g = P.cde_gradient_accuracy(p, "discrete")
    assert g.verdict == "pass" and g.measured < 1e-7, g.describe()


# ----------------------------------------------------------------------------- planted faults
def _clamped(t: np.ndarray, v: np.ndarray) -> C.Control:
    """A cubic spline with the wrong end condition: X' = 0 at both ends (clamped flat)."""
    dt = np.diff(t)
    n = t.size
    M = np.zeros((n, n))
    R = np.zeros((n, n))
    M[0, 0] = M[-1, -1] = 1.0
    for k in range(1, n - 1):
        M[k, k - 1], M[k, k], M[k, k + 1] = 1 / dt[k - 1], 2 * (1 / dt[k - 1] + 1 / dt[k]), 1 / dt[k]
        R[k, k - 1] = -3 / dt[k - 1] ** 2
        R[k, k] = 3 / dt[k - 1] ** 2 - 3 / dt[k] ** 2
        R[k, k + 1] = 3 / dt[k] ** 2
    m = np.linalg.solve(M, R)
    W = C._hermite_weights(dt, m[:-1], m[1:])[..., None]
    return C.Control(kind="natural_cubic", times=t, values=v, breaks=t.copy(), weights=W)


def test_planted_wrong_end_condition_fails():
    p = C.get("cde_linear_pl")
    r = P.cde_interpolation_order(p, "natural_cubic", build=_clamped)
    assert r.verdict == "fail", r.describe()
    k = P.cde_knot_conditions(p, "natural_cubic", control=_clamped(p.control.times, p.control.values))
    assert k.verdict == "fail" and "X'' =" in k.message, k.describe()


class _ScaledDerivative(C.Control):
    def derivative(self, t, nu=1):
        return 1.1 * super().derivative(t, nu)


def test_planted_derivative_off_by_a_factor_fails():
    def build(t, v):
        c = C.make_control(t, v, "linear")
        return _ScaledDerivative(kind=c.kind, times=c.times, values=c.values, breaks=c.breaks, weights=c.weights)

    r = P.cde_interpolation_order(C.get("cde_linear_pl"), "linear", build=build)
    assert r.verdict == "fail" and "derivative slope" in r.message, r.describe()


def test_planted_solver_ignoring_the_knots_shows_the_order_reduction(monkeypatch):
    monkeypatch.setattr(C.CDEProblem, "knots", property(lambda self: np.array([])))
    r = P.cde_convergence(C.get("cde_linear_pl"), "rk4", knots="jump")
    assert r.verdict == "fail" and r.measured < 2, r.describe()


def test_planted_reparametrisation_without_dpsi_fails():
    p = C.get("cde_linear_pl")
    good = P.default_warp(p)
    bad = C.Warp("no-dpsi", good.phi, good.psi, lambda s: np.ones_like(np.asarray(s, dtype=float)))
    r = P.cde_reparametrisation(p, "dopri5", warp=bad, tols=(1e-4, 1e-6))
    assert r.verdict == "fail", r.describe()


def test_planted_flipped_gradient_sign_fails(monkeypatch):
    pytest.importorskip("torch")
    real = P.compute_cde_gradient

    def flipped(*args, **kwargs):
        res = real(*args, **kwargs)
        return dataclasses.replace(res, grad_params={**res.grad_params, "A": -res.grad_params["A"]})

    monkeypatch.setattr(P, "compute_cde_gradient", flipped)
    r = P.cde_gradient_accuracy(C.get("cde_linear_pl"), "discrete")
    assert r.verdict == "fail" and "A:" in r.message, r.describe()


# ----------------------------------------------------------------------------- the family
def test_family_registered_and_validates_methods():
    from odeverify.families import FAMILIES
    from odeverify.families.cde import validate_cde_method

    fam = FAMILIES.get("cde")
    assert set(P.PROPERTIES) <= set(fam.properties) and fam.doc == "docs/cde.md"
    assert fam.methods("reference", True) == ["rk4", "dopri5"]
    with pytest.raises(ValueError, match="did you mean 'dopri5'"):
        validate_cde_method("reference", "dopri55")


# ----------------------------------------------------------------------------- explore's findings
#: cases explore drew that failed our own bounds (the commits that fixed the bounds say how); each
#: must now pass or be inconclusive, never fail
FOUND = [
    ("cde_convergence", {}, '{"field":{"bias":false,"commuting":true,"hidden":1,"scale":1.0,"seed":0,"type":"linear"},'
     '"include_time":false,"interp":"hermite_cubic_bd","kind":"cde","missing":{"fill":"forward","frac":0.25,"seed":0},'
     '"path":{"amp":[[1.0,1.0],[1.0,1.0]],"freq":[[1.0,1.0],[1.0,1.0]],"phase":[[0.0,0.0],[0.0,0.0]],'
     '"poly":[[0.0,0.0],[0.0,0.0]]},"times":{"n":5,"rule":"poisson","seed":0,"span":[0.0,1.0],"spread":0.0}}'),
    ("cde_interpolation_order", {}, '{"field":{"hidden":1,"scale":1.0,"seed":0,"type":"mlp","width":2},'
     '"include_time":false,"interp":"linear","kind":"cde","missing":null,"path":{"amp":[[1.0,1.0],[1.0,1.0]],'
     '"freq":[[3.0,1.0],[1.0,1.0]],"phase":[[1.0,0.0],[0.0,0.0]],"poly":[[0.0,0.0],[0.0,0.0]]},"times":{"n":5,'
     '"rule":"poisson","seed":0,"span":[0.5,1.0],"spread":0.0}}'),
    ("cde_reparametrisation", {"rate": -2.0}, '{"field":{"hidden":1,"scale":0.25,"seed":0,"type":"mlp","width":2},'
     '"include_time":false,"interp":"linear","kind":"cde","missing":null,"path":{"amp":[[1.0]],"freq":[[1.0]],'
     '"phase":[[0.0]],"poly":[[0.0,0.0]]},"times":{"n":5,"rule":"jitter","seed":0,"span":[0.0,0.5],"spread":0.0}}'),
    ("cde_reparametrisation", {"rate": -2.0}, '{"field":{"hidden":1,"scale":1.0,"seed":0,"type":"mlp","width":2},'
     '"include_time":false,"interp":"linear","kind":"cde","missing":null,"path":{"amp":[[1.0]],"freq":[[0.5]],'
     '"phase":[[0.0]],"poly":[[0.0,0.0]]},"times":{"n":17,"rule":"poisson","seed":69,"span":[1.0,4.5],'
     '"spread":0.0}}'),
]


@pytest.mark.parametrize("prop, kwargs, spec", FOUND)
def test_explore_findings_replay(prop, kwargs, spec):
    import odeverify.families.cde  # noqa: F401  (registers the CDE explorations)
    from odeverify.explore import EXPLORATIONS

    method = "heun" if prop == "cde_convergence" else "dopri5"
    r = EXPLORATIONS.get(prop).run(C.cde_from_spec(spec), method, backend="reference", **kwargs)
    assert r.verdict in ("pass", "skip"), r.describe()
