"""The CNF foundation: augmented problems, trace estimators, closed forms and bad input."""
from __future__ import annotations

import math

import numpy as np
import pytest

from odeverify import _xp
from odeverify.integrate import solve
from odeverify.problems.flows import (CNF_PROBLEMS, CNFProblem, DiagonalGaussian, draw_probes, linear_field,
                                      mlp_field, sine_field)

XP = _xp.get_namespace("numpy")


def _end(problem, y0=None):
    y0 = problem.y0_array(XP) if y0 is None else XP.asarray(y0)
    sol = solve(problem.vector_field(XP), y0, problem.t_span, rtol=1e-11, atol=1e-13)
    assert sol.status.ok, sol.status
    return np.asarray(sol.ys[-1])


@pytest.mark.parametrize("name", ["cnf_linear2", "cnf_linear8", "cnf_sine1"])
def test_density_solve_matches_the_closed_form(name):
    cnf = CNF_PROBLEMS.get(name)
    end = _end(cnf.density_problem("jacobian"), cnf.density_y0())
    err = np.max(np.abs(cnf.log_likelihood(end) - cnf.exact_log_density(cnf.data)))
    assert err < 1e-8, err


@pytest.mark.parametrize("name", ["cnf_mlp2", "cnf_mlp6_softplus", "cnf_linear2"])
def test_exact_trace_estimators_agree(name):
    cnf = CNF_PROBLEMS.get(name)
    z = cnf.data
    f = {}
    for trace in ("jacobian", "jvp"):
        p = cnf.density_problem(trace)
        f[trace] = np.asarray(p.vector_field(XP)(XP.asarray(0.3), XP.asarray(cnf.density_y0())))
    np.testing.assert_allclose(f["jacobian"], f["jvp"], rtol=1e-12, atol=1e-12)
    # the trace against a central difference of f alone
    fld = cnf.field
    rhs = fld.bound(XP)[0]
    h = 1e-6
    tr = np.zeros(len(z))
    for i in range(cnf.dim):
        e = np.zeros(cnf.dim)
        e[i] = h
        tr += (np.asarray(rhs(XP.asarray(0.3), XP.asarray(z + e))) - np.asarray(rhs(XP.asarray(0.3), XP.asarray(z - e))))[:, i] / (2 * h)
    np.testing.assert_allclose(-f["jacobian"][:, -1], tr, rtol=1e-7, atol=1e-7)


def test_autodiff_trace_matches_the_analytic_one():
    torch = pytest.importorskip("torch")
    xpt = _xp.get_namespace("torch")
    cnf = CNF_PROBLEMS.get("cnf_mlp2")
    y = xpt.asarray(cnf.density_y0(), dtype=torch.float64)
    a = cnf.density_problem("autodiff").vector_field(xpt, dtype=torch.float64)(xpt.asarray(0.3, dtype=torch.float64), y)
    b = cnf.density_problem("jacobian").vector_field(xpt, dtype=torch.float64)(xpt.asarray(0.3, dtype=torch.float64), y)
    np.testing.assert_allclose(_xp.to_numpy(a), _xp.to_numpy(b), rtol=1e-12, atol=1e-13)


def test_one_rademacher_probe_is_exact_in_one_dimension():
    cnf = CNF_PROBLEMS.get("cnf_sine1")
    a = _end(cnf.density_problem("hutchinson", n_probes=1, probe="rademacher"))
    b = _end(cnf.density_problem("jacobian"))
    assert abs(a[-1] - b[-1]) < 1e-13


def test_sample_then_density_is_consistent_with_the_closed_form():
    cnf = CNF_PROBLEMS.get("cnf_linear2")
    end = _end(cnf.sample_problem("jvp"))
    assert abs(end[-1] - cnf.exact_log_density(end[None, :2])[0]) < 1e-8


def test_sine_closed_form_is_a_flow():
    fld = sine_field(1.5)
    z0 = np.linspace(-7, 7, 15)[:, None]
    mid = fld.flow(z0, 0.0, 0.4)
    np.testing.assert_allclose(fld.flow(mid, 0.4, 1.0), fld.flow(z0, 0.0, 1.0), atol=1e-12)
    np.testing.assert_allclose(fld.flow(fld.flow(z0, 0.0, 1.0), 1.0, 0.0), z0, atol=1e-12)
    # log det by a central difference of the closed form
    h = 1e-6
    fd = np.log((fld.flow(z0 + h, 0.0, 1.0) - fld.flow(z0 - h, 0.0, 1.0)) / (2 * h))[:, 0]
    np.testing.assert_allclose(fld.log_det(z0, 0.0, 1.0), fd, atol=1e-7)


def test_probes_have_their_distribution():
    r = draw_probes("rademacher", 4000, (3,), seed=0)
    assert set(np.unique(r)) == {-1.0, 1.0}
    g = draw_probes("gaussian", 4000, (3,), seed=0)
    # mean of 12000 N(0,1) draws: |mean| < 4 sigma = 4/sqrt(12000) (false alarm 6e-5)
    assert abs(g.mean()) < 4 / math.sqrt(g.size)


@pytest.mark.parametrize("kwargs, match", [
    ({"trace": "exact"}, "trace='exact'"),
    ({"trace": "hutchinson", "n_probes": 0}, "n_probes=0"),
    ({"trace": "hutchinson", "probe": "uniform"}, "probe='uniform'"),
    ({"x": np.zeros(3)}, "x has 3 components"),
])
def test_bad_density_requests_name_the_parameter(kwargs, match):
    cnf = CNF_PROBLEMS.get("cnf_mlp2")
    with pytest.raises(ValueError, match=match):
        cnf.density_problem(**kwargs)


def test_bad_construction_names_the_parameter():
    with pytest.raises(ValueError, match="base has dim=3"):
        CNFProblem(name="x", field=mlp_field(2), base=DiagonalGaussian.standard(3), data=np.zeros((2, 2)))
    with pytest.raises(ValueError, match="data has shape"):
        CNFProblem(name="x", field=mlp_field(2), base=DiagonalGaussian.standard(2), data=np.zeros((2, 3)))
    with pytest.raises(ValueError, match="must be square"):
        linear_field(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="std="):
        DiagonalGaussian((0.0,), (0.0,))
    with pytest.raises(ValueError, match="non-finite"):
        CNF_PROBLEMS.get("cnf_mlp2").log_likelihood(np.array([np.nan, 0.0, 0.0]))


def test_a_field_of_the_wrong_shape_is_refused_before_any_solve():
    good = mlp_field(2)

    def wide(xp, t, z, p):  # R^2 -> R^3
        return xp.concat([good.rhs(xp, t, z, p), z[..., :1]], axis=-1)

    def rect(xp, t, z, p):  # a 2 x 3 "Jacobian"
        return xp.concat([good.jac(xp, t, z, p), good.jac(xp, t, z, p)[..., :1]], axis=-1)

    import dataclasses
    base = DiagonalGaussian.standard(2)
    with pytest.raises(ValueError, match=r"rhs returned shape \(2, 3\)"):
        CNFProblem(name="x", field=dataclasses.replace(good, rhs=wide), base=base, data=np.zeros((1, 2)))
    with pytest.raises(ValueError, match="square Jacobian"):
        CNFProblem(name="x", field=dataclasses.replace(good, jac=rect), base=base, data=np.zeros((1, 2)))
    with pytest.raises(ValueError, match="non-finite"):
        CNFProblem(name="x", field=good, base=base, data=np.array([[np.inf, 0.0]]))
