"""The SDE properties find what they claim to find: each passes on the reference and fails on a
planted fault (a wrong claim, a wrong step rule, a wrong Itô-Stratonovich correction, a broken
inverse), and the interval logic is checked on synthetic data with a known slope."""
from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest

from odeverify.brownian import BrownianTree
from odeverify.integrate import solve_sde
from odeverify.problems.sde import SDE_PROBLEMS
from odeverify.problems.sde_specs import sde_from_spec
from odeverify.properties.sde import (brownian_consistency, ito_stratonovich_consistency, judge_interval, rate,
                                      sde_reversibility, sde_strong_order, sde_weak_order, slope_interval,
                                      step_ladder)
from odeverify.solvers.sde import SDE_METHODS, SDEStepper

HS = np.array([1 / 16, 1 / 32, 1 / 64, 1 / 128, 1 / 256])


def _synthetic(order: float, paths: int, spread: float, seed: int = 0) -> np.ndarray:
    """Per-path errors C_i h^order with C_i log-normal: the mean's slope is exactly ``order``."""
    c = np.exp(spread * np.random.default_rng(seed).standard_normal(paths))
    return c[None, :] * HS[:, None] ** order


def test_slope_interval_recovers_a_known_slope():
    fit = slope_interval(HS, _synthetic(0.5, 400, 0.5))
    assert fit["slope"] == pytest.approx(0.5, abs=1e-12)
    lo, hi = fit["ci"]
    assert lo <= 0.5 <= hi


def test_judge_passes_fails_and_says_inconclusive_with_paths_needed():
    good = slope_interval(HS, _synthetic(1.0, 400, 0.3))
    assert judge_interval(good, 1.0, 400, "x")[0] == "pass"
    # half an order off: the interval lies below claim - band
    assert judge_interval(good, 1.5, 400, "x")[0] == "fail"
    # noisy per-path errors whose mean's slope wobbles: few paths give a wide interval
    rng = np.random.default_rng(1)
    noisy = HS[:, None] ** 1.0 * np.exp(1.5 * rng.standard_normal((HS.size, 8)))
    fit = slope_interval(HS, noisy)
    verdict, message = judge_interval(fit, 1.0, 8, "x")
    assert verdict == "skip" and "paths would settle it" in message, message
    need = int(message.split("about ")[1].split(" paths")[0])
    assert need > 8


def test_strong_order_passes_on_the_reference():
    r = sde_strong_order(SDE_PROBLEMS.get("gbm_ito"), "milstein_ito")
    assert r.verdict == "pass", r.message
    assert r.details["at_t1"]["ci"][0] <= 1.15 and r.details["at_t1"]["ci"][1] >= 0.85


@pytest.fixture
def planted(monkeypatch):
    """Replace a registered SDE method for one test (the reference backend reads the registry)."""
    def plant(name: str, **changes):
        fake = dataclasses.replace(SDE_METHODS.get(name), **changes)
        monkeypatch.setitem(SDE_METHODS._items, name, fake)
        return fake
    return plant


def test_strong_order_fails_a_wrong_claim(planted):
    planted("euler", strong={"general": 0.5, "commutative": 1.0, "additive": 1.0})
    r = sde_strong_order(SDE_PROBLEMS.get("gbm_ito"), "euler")
    assert r.verdict == "fail" and "below the claim" in r.message


def test_strong_order_fails_a_wrong_step_rule(planted):
    # Heun's claims with Euler-Heun's predictor dropped (the Euler-Maruyama rule on a
    # Stratonovich problem): wrong limit, so no convergence at order 1
    planted("heun", rule="euler")
    r = sde_strong_order(SDE_PROBLEMS.get("gbm_stratonovich"), "heun")
    assert r.verdict == "fail", r.message


def test_weak_order_passes_and_fails_a_wrong_claim(planted):
    p = SDE_PROBLEMS.get("gbm_ito")
    assert sde_weak_order(p, "euler", paths=2000).verdict == "pass"
    planted("euler", weak={"general": 2.0, "commutative": 2.0, "additive": 2.0})
    r = sde_weak_order(p, "euler", paths=2000)
    assert r.verdict == "fail", r.message


def test_weak_order_is_inconclusive_inside_the_noise():
    r = sde_weak_order(SDE_PROBLEMS.get("kp_cubic"), "euler", paths=200)
    assert r.verdict == "skip" and "paths would resolve" in r.message


def test_ito_stratonovich_consistency_catches_a_wrong_correction():
    p = SDE_PROBLEMS.get("kp_wave")
    assert ito_stratonovich_consistency(p).verdict == "pass"
    wrong = dataclasses.replace(p, correction=lambda xp, t, y, q: 0.5 * p.correction(xp, t, y, q))
    r = ito_stratonovich_consistency(wrong)
    assert r.verdict == "fail", r.message


def test_ito_stratonovich_identical_methods_pass_without_a_fit():
    r = ito_stratonovich_consistency(SDE_PROBLEMS.get("kp_additive"), "euler_heun", "euler")
    assert r.verdict == "pass" and "identical to round-off" in r.message


def test_reversibility_and_a_broken_inverse(monkeypatch):
    p = SDE_PROBLEMS.get("gbm_stratonovich")
    ok = sde_reversibility(p, n_steps=64, paths=16)
    assert ok.verdict == "pass" and ok.measured < 1e-12
    original = SDEStepper.inverse

    def no_noise(self, f, tc, t, t1, state1, dw):  # forgets the noise of the step it undoes
        return original(self, f, tc, t, t1, state1, 0.0 * dw)

    monkeypatch.setattr(SDEStepper, "inverse", no_noise)
    assert sde_reversibility(p, n_steps=64, paths=16).verdict == "fail"


def test_brownian_consistency_record():
    r = brownian_consistency(paths=64, levels=6)
    assert r.verdict == "pass", r.message
    assert r.details["query_order_difference"] == 0.0


def test_exact_problem_passes_without_a_fit():
    p = sde_from_spec({"kind": "sde_linear", "params": {"a": [0.0], "b": [[0.0]], "seed": 0, "x0": [0.0]}})
    r = sde_strong_order(p, "euler", paths=16)
    assert r.verdict == "pass" and "exact to round-off" in r.message


def test_step_ladder_follows_the_problem_time_scale():
    slow = sde_from_spec({"kind": "sde_gbm", "params": {"mu": [0.2], "sigma": [0.3], "x0": [1.0]}})
    fast = sde_from_spec({"kind": "sde_gbm", "params": {"mu": [1.0], "sigma": [1.0], "x0": [1.0], "t1": 2.0}})
    assert rate(slow) == pytest.approx(0.2 + 0.09, rel=1e-6)
    assert step_ladder(slow, (8, 16), 8.0) == [8, 16]
    assert step_ladder(fast, (8, 16), 8.0) == [32, 64]  # 8 * 2 * 2 = 32 steps for h L <= 1/8


# ----------------------------------------------------------------------------- bad input
def _fields(problem):
    import array_api_compat

    xp = array_api_compat.array_namespace(np.empty(0))
    return problem.drift_field(xp), problem.diffusion_field(xp)


def test_bad_input_is_named():
    p = SDE_PROBLEMS.get("gbm_ito")
    f, g = _fields(p)
    bm = BrownianTree(0, 1, (4, 1), seed=0)
    y0 = p.y0_batch(4)
    with pytest.raises(ValueError, match="diffusion g returned shape"):
        solve_sde(f, lambda t, y: g(t, y)[..., None], y0, (0, 1), bm=bm, noise="diagonal", n_steps=4)
    with pytest.raises(ValueError, match="drift returned non-finite"):
        solve_sde(lambda t, y: y * math.inf, g, y0, (0, 1), bm=bm, n_steps=4)
    with pytest.raises(ValueError, match="outside the Brownian path's interval"):
        solve_sde(f, g, y0, (0, 2), bm=bm, n_steps=4)
    with pytest.raises(ValueError, match="noise='colored'"):
        solve_sde(f, g, y0, (0, 1), bm=bm, noise="colored", n_steps=4)
    with pytest.raises(ValueError, match="needs a fixed step"):
        solve_sde(f, g, y0, (0, 1), bm=bm)
    with pytest.raises(ValueError, match="between steps"):
        solve_sde(f, g, y0, (0, 1), bm=bm, n_steps=4, t_eval=[0.0, 0.3, 1.0])
    with pytest.raises(ValueError, match="converges to the stratonovich solution"):
        solve_sde(f, g, y0, (0, 1), bm=bm, n_steps=4, method="heun", calculus="ito")
    nc = SDE_PROBLEMS.get("noncommutative")
    fn, gn = _fields(nc)
    with pytest.raises(ValueError, match="not valid for general noise"):
        solve_sde(fn, gn, nc.y0_batch(4), (0, 1), bm=BrownianTree(0, 1, (4, 2)), noise="general", n_steps=4,
                  method="milstein_ito")
    with pytest.raises(ValueError, match="outside the path's interval"):
        bm.increment(0.5, 1.5)


def test_a_blow_up_is_a_status_not_a_crash():
    p = SDE_PROBLEMS.get("gbm_ito")
    f, g = _fields(p)
    sol = solve_sde(lambda t, y: y * y * y * 1e3, g, np.full((4, 1), 2.0), (0, 1), bm=BrownianTree(0, 1, (4, 1)),
                    n_steps=8)
    assert sol.status.code == "nonfinite"


# ----------------------------------------------------------------------------- generated problems
def test_generated_specs_rebuild_exactly_and_refuse_bad_ones():
    spec = {"kind": "sde_reducible", "params": {"family": "sinh", "a": 0.7, "alpha": 0.2, "x0": 0.4}}
    a, b = sde_from_spec(spec), sde_from_spec(json.dumps(spec))
    assert a.name == b.name and a.name.startswith("gen_sde_reducible_sinh_")
    with pytest.raises(ValueError, match="family="):
        sde_from_spec({"kind": "sde_reducible", "params": {"family": "cosh", "a": 1.0, "alpha": 0.0, "x0": 0.0}})
    with pytest.raises(ValueError, match="unknown SDE problem generator"):
        sde_from_spec({"kind": "sde_nope"})
    with pytest.raises(ValueError, match="unknown keys"):
        sde_from_spec({"kind": "sde_gbm", "params": {}, "span": [0, 1]})
    with pytest.raises(ValueError, match="not valid JSON"):
        sde_from_spec("{kind")


def test_drawn_problems_have_closed_forms_that_match_a_fine_solve():
    """Every family with a closed form: the reference's Milstein (Itô) at 512 steps is within
    its strong error of the closed form on the same path (a wrong closed form is off by O(1))."""
    from hypothesis import given, seed, settings

    from odeverify.strategies import SDE_EXACT_KINDS, sde_problem_specs

    @seed(7)
    @settings(max_examples=12, deadline=None, database=None)
    @given(sde_problem_specs(SDE_EXACT_KINDS))
    def check(spec):
        p = sde_from_spec(spec).as_calculus("ito")
        if "superlinear" in p.tags:
            return  # explicit schemes may diverge there (expected_failures.toml)
        f, g = _fields(p)
        bm = BrownianTree(*p.t_span, p.brownian_shape(32), seed=1)
        y0 = p.y0_batch(32)
        meth = "euler" if p.noise_class == "general" else "milstein_ito"
        errs = []
        for n in (128, 512):
            sol = solve_sde(f, g, y0, p.t_span, bm=bm, method=meth, noise=p.noise, commutative=p.commutative,
                            n_steps=n)
            exact = p.exact(np.asarray(p.t_span), y0, bm, p.params)[-1]
            errs.append(float(np.mean(np.abs(sol.ys[-1] - exact))))
        scale = max(1.0, float(np.mean(np.abs(exact))))
        assert errs[1] <= 0.05 * scale, (spec, errs)
        assert errs[1] <= errs[0] * 0.7 or errs[1] <= 1e-9 * scale, (spec, errs)  # it converges

    check()


# ----------------------------------------------------------------------------- check --sde, explore
@pytest.fixture
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def test_check_sde_json_grades_the_named_methods(capsys, _cache):
    from odeverify import cli

    code = cli.main(["check", "--sde", "--quick", "--json", "--methods", "euler", "-j", "1"])
    doc = json.loads(capsys.readouterr().out)
    assert code == 0
    props = {(r["property"], r["method"]) for r in doc["records"]}
    assert ("sde_strong_order", "euler") in props and ("sde_weak_order", "euler") in props
    assert {r["verdict"] for r in doc["records"]} <= {"pass", "skip"}


def test_check_sde_usage_errors(capsys, _cache):
    from odeverify import cli

    assert cli.main(["check", "--sde", "--methods", "eulr"]) == cli.EXIT_USAGE
    assert "did you mean 'euler'" in capsys.readouterr().err
    assert cli.main(["check", "--sde", "--gradients"]) == cli.EXIT_USAGE
    assert "one family at a time" in capsys.readouterr().err


@pytest.mark.slow
def test_check_sde_parallel_equals_serial(capsys, _cache):
    from odeverify import cli
    from odeverify.records import without_timings

    docs = []
    for jobs in ("1", "2"):
        assert cli.main(["check", "--sde", "--quick", "--json", "-j", jobs]) == 0
        docs.append(json.loads(capsys.readouterr().out))
    assert len(docs[0]["records"]) > 40
    assert without_timings(docs[0]["records"]) == without_timings(docs[1]["records"])


def test_explore_sde_case_replays_and_known_deviation_is_matched():
    from odeverify.explore import make_case, run_case

    spec = {"kind": "sde_reducible", "params": {"a": 1.5, "alpha": 0.0, "calculus": "ito", "family": "tanh",
                                                 "t1": 1.0, "x0": 0.0}}
    rec = run_case(make_case("sde_strong_order", "reference", "euler", spec, {"seed": 0}))
    assert rec.verdict == "deviation" and "Hutzenthaler" in rec.message and "nonfinite" in rec.message
    ok = run_case(make_case("sde_strong_order", "reference", "heun",
                            {"kind": "sde_gbm", "params": {"mu": [0.5], "sigma": [0.4], "x0": [1.0]}}, {"seed": 1}))
    assert ok.verdict == "pass", ok.message


def test_explore_searches_sde_properties_on_any_backend_with_sde_methods(tmp_path):
    from odeverify.explore import explore

    res = explore("reference", properties=["sde_strong_order"], methods=["euler_heun"], examples=4, seed=0,
                  directory=None, log=lambda s: None)
    assert res.examples.get("sde_strong_order", 0) >= 1
    assert not res.findings, [f.describe() for f in res.findings]
    # an ODE-only backend has nothing to draw from
    res = explore("scipy", properties=["sde_strong_order"], examples=2, seed=0, directory=None, log=lambda s: None)
    assert "sde_strong_order" in res.not_applicable
