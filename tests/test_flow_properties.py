"""The CNF properties pass on correct flows and catch planted faults: a wrong analytic
Jacobian, biased Hutchinson probes, a density off by a constant, a round trip through a
different field."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from odeverify.problems import flows as flows_mod
from odeverify.problems.flows import CNF_PROBLEMS, FlowField
from odeverify.properties import flows as F


def _planted_trace(cnf, factor=1.0, shift=0.0):
    """``cnf`` whose analytic Jacobian (and JVP) is off: ``factor * J + shift * I``."""
    fld = cnf.field

    def jac(xp, t, z, p):
        J = fld.jac(xp, t, z, p)
        return factor * J + shift * xp.eye(fld.dim, dtype=z.dtype)

    def jvp(xp, t, z, v, p):
        return factor * fld.jvp(xp, t, z, v, p) + shift * v

    bad = dataclasses.replace(fld, jac=jac, jvp=jvp)
    return dataclasses.replace(cnf, field=bad)


@pytest.mark.parametrize("name", ["cnf_linear2", "cnf_mlp2", "cnf_sine1"])
def test_log_density_converges_at_the_method_order(name):
    r = F.cnf_log_density(CNF_PROBLEMS.get(name), "rk4")
    assert r.verdict == "pass", r.message
    assert abs(r.measured - 4) < 0.25


def test_log_density_tolerance_exponent_of_an_adaptive_method():
    r = F.cnf_log_density(CNF_PROBLEMS.get("cnf_mlp2"), "dopri5")
    assert r.verdict == "pass", r.message


def test_a_wrong_jacobian_fails_the_closed_form_and_liouville():
    cnf = CNF_PROBLEMS.get("cnf_mlp2")
    assert F.cnf_liouville(cnf).verdict == "pass"
    bad = _planted_trace(cnf, factor=1.001)
    assert F.cnf_liouville(bad).verdict == "fail"
    assert F.trace_agreement(bad).verdict == "fail"
    lin = _planted_trace(CNF_PROBLEMS.get("cnf_linear2"), factor=1.001)
    r = F.cnf_log_density(lin, "rk4")
    assert r.verdict in ("fail", "skip") and min(r.details["errors"]) > 1e-4


def test_trace_agreement_holds_with_autodiff():
    pytest.importorskip("torch")
    r = F.trace_agreement(CNF_PROBLEMS.get("cnf_mlp2"), library="torch")
    assert r.verdict == "pass", r.message
    assert "autodiff_vs_jacobian" in r.details["differences"]


def test_the_density_integrates_to_one_and_a_shifted_one_does_not():
    cnf = CNF_PROBLEMS.get("cnf_sine1")
    r = F.cnf_normalisation(cnf, points=801)
    assert r.verdict == "pass", r.message
    assert abs(r.details["integral"] - 1) < 1e-6
    # tr + 0.05 everywhere on [0, 1]: the density is off by exp(-0.05)
    bad = F.cnf_normalisation(_planted_trace(cnf, shift=0.05), points=801)
    assert bad.verdict == "fail"
    assert abs(bad.details["integral"] - np.exp(-0.05)) < 1e-6


def test_normalisation_refuses_high_dimensions_and_bad_grids():
    with pytest.raises(ValueError, match="dim=6"):
        F.cnf_normalisation(CNF_PROBLEMS.get("cnf_mlp6_softplus"))
    with pytest.raises(ValueError, match="points=10"):
        F.cnf_normalisation(CNF_PROBLEMS.get("cnf_sine1"), points=10)


def test_invertibility_and_a_round_trip_through_another_field(monkeypatch):
    cnf = CNF_PROBLEMS.get("cnf_mlp2")
    assert F.cnf_invertibility(cnf).verdict == "pass"
    other = flows_mod.mlp_field(2, 16, 2, "tanh", seed=0, scale=2.001)
    real = type(cnf).sample_problem

    def planted(self, *args, **kwargs):  # sampling with a slightly different field
        return real(dataclasses.replace(self, field=other), *args, **kwargs)

    monkeypatch.setattr(type(cnf), "sample_problem", planted)
    assert F.cnf_invertibility(cnf).verdict == "fail"


@pytest.mark.parametrize("probe", ["rademacher", "gaussian"])
def test_hutchinson_mean_and_variance_match_theory(probe):
    cnf = CNF_PROBLEMS.get("cnf_mlp2")
    assert F.hutchinson_unbiased(cnf, probe, draws=2048).verdict == "pass"
    r = F.hutchinson_variance(cnf, probe, draws=2048)
    assert r.verdict == "pass", r.message
    # the k-probe RMS error follows sqrt(var / k) within 25% (groups of >= 32 draws)
    for rms, pred in zip(r.details["rms_error"], r.details["predicted_rms"]):
        assert abs(rms / pred - 1) < 0.25


def test_biased_probes_are_caught(monkeypatch):
    real = flows_mod.draw_probes
    monkeypatch.setattr(flows_mod, "draw_probes", lambda *a, **k: 1.1 * real(*a, **k))
    r = F.hutchinson_unbiased(CNF_PROBLEMS.get("cnf_mlp2"), "gaussian", draws=2048)
    assert r.verdict == "fail"
    r = F.hutchinson_unbiased(CNF_PROBLEMS.get("cnf_sine1"), "rademacher", draws=256)
    assert r.verdict == "fail"


def test_rademacher_variance_formula_against_a_direct_enumeration():
    rng = np.random.default_rng(0)
    M = rng.standard_normal((3, 3))
    signs = np.array(np.meshgrid(*[[-1.0, 1.0]] * 3)).reshape(3, -1).T
    vals = -np.einsum("ki,ij,kj->k", signs, M, signs)
    mean, var = F.hutchinson_theory(M, "rademacher")
    assert abs(vals.mean() - mean) < 1e-12 and abs(vals.var() - var) < 1e-12


def test_liouville_oracle_agrees_with_the_closed_form():
    cnf = CNF_PROBLEMS.get("cnf_sine1")
    z0, logdet = F._variational(cnf, cnf.data, F.ORACLE_RTOL)
    exact = cnf.exact_log_density(cnf.data)
    assert np.max(np.abs(cnf.base.logpdf(z0) + logdet - exact)) < 1e-9


def test_nll_loss_is_the_negative_log_likelihood():
    cnf = CNF_PROBLEMS.get("cnf_linear2")
    loss = F.nll_loss(cnf)
    end = np.concatenate([cnf.data, np.arange(len(cnf.data))[:, None] * 0.1], axis=1)
    expected = -np.sum(cnf.log_likelihood(end))
    assert abs(loss.value_numpy(end[None]) + len(end) * cnf.nll_constant() - expected) < 1e-10


def test_a_wrong_variance_is_caught(monkeypatch):
    """Probes of the right mean but the wrong spread: Gaussian probes scaled by a random sign
    and 1.2 or 0.8 keep E[v v^T] = 1.04 I close to I but change the fourth moment."""
    real = flows_mod.draw_probes

    def planted(probe, n, shape, seed):
        v = real(probe, n, shape, seed)
        scale = np.where(np.random.default_rng(seed + 99).random(v.shape[:-1] + (1,)) < 0.5, 1.4, 0.2)
        return v * scale

    monkeypatch.setattr(flows_mod, "draw_probes", planted)
    r = F.hutchinson_variance(CNF_PROBLEMS.get("cnf_mlp2"), "gaussian", draws=2048)
    assert r.verdict == "fail", r.message
