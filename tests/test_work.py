"""Work as a property (odeverify.properties.work): identities, the recorded baseline, and faults
that change only the work (planted by monkeypatching), which every answer check misses."""
from __future__ import annotations

import functools
import importlib
import json
import math

import numpy as np
import pytest

from odeverify import control, integrate
from odeverify.problems import PROBLEMS
from odeverify.properties import PROPERTIES, tolerance_proportionality, work, work_precision
from odeverify.solvers.bdf import BDF

#: the module (the package attribute of the same name is the property function)
W = importlib.import_module("odeverify.properties.work")


def _verdicts(method: str) -> dict[str, str]:
    return {r.details["case"]: r.verdict for r in W.work_records(method)}


def test_registered_and_every_case_matches_the_baseline():
    assert PROPERTIES.get("work") is work
    doc = W.load_baseline()
    assert doc["generated_by"] == W.UPDATE_COMMAND
    for m in W.methods():
        recs = W.work_records(m)
        assert recs, m
        for r in recs:
            assert r.verdict == "pass", (m, r.details["case"], r.message)
            assert r.details["identities"], (m, r.details["case"])
    # every case in the file is one the property runs (no stale entries)
    keys = {W._key(m, c) for m in W.methods() for c in W.cases(m)}
    assert set(doc["cases"]) == keys


@pytest.mark.parametrize("method,stages,fsal", [("dopri5", 7, True), ("dop853", 12, False), ("heun", 2, False)])
def test_explicit_nfev_identities_are_the_loops(method, stages, fsal):
    fixed = W.WorkCase("warped_oscillatory", n_steps=10)
    c = W.count_work(method, fixed)
    assert c["nfev"] == (1 + (stages - 1) * 10 if fsal else stages * 10)
    assert all(chk["holds"] for chk in W.identities(method, fixed, c))
    # a miscount by one evaluation breaks the identity
    wrong = {**c, "nfev": c["nfev"] + 1}
    assert not all(chk["holds"] for chk in W.identities(method, fixed, wrong))


def test_a_changed_counter_fails_naming_counter_baseline_and_value():
    doc = json.loads(json.dumps(W.load_baseline()))
    key = "dopri5|warped_oscillatory|rtol=1e-06,atol=1e-09"
    doc["cases"][key]["rejected"] += 1
    r = work("warped_oscillatory", "dopri5", rtol=1e-6, atol=1e-9, baseline=doc)
    assert r.verdict == "fail"
    assert f"rejected = {doc['cases'][key]['rejected'] - 1}, baseline {doc['cases'][key]['rejected']}" in r.message
    assert W.UPDATE_COMMAND in r.message


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="n_steps=None, rtol=None"):
        work("warped_oscillatory", "dopri5")
    with pytest.raises(ValueError, match="method='nope'"):
        work("warped_oscillatory", "nope", n_steps=16)
    with pytest.raises(ValueError, match="jac='exact'"):
        work("hires", "bdf", rtol=1e-6, atol=1e-6, jac="exact")
    r = work("warped_oscillatory", "dopri5", n_steps=7)
    assert r.verdict == "error" and "no baseline" in r.message
    with pytest.raises(FileNotFoundError, match="--update"):
        W.load_baseline("/nonexistent/work_baseline.json")
    assert work("warped_oscillatory", "dopri5", n_steps=16, library="torch").verdict == "skip"


def test_update_writes_the_same_baseline(tmp_path):
    path = tmp_path / "b.json"
    doc = W.write_baseline(path, method_names=["bosh3", "backward_euler"])
    stored = W.load_baseline()["cases"]
    for key, value in doc["cases"].items():
        assert value == stored[key], key


# ---------------------------------------------------------------------------- planted faults
def test_safety_factor_088_passes_the_answer_checks_but_not_work(monkeypatch):
    problem = PROBLEMS.get("warped_oscillatory")
    assert _verdicts("dopri5")["rtol=1e-06,atol=1e-09"] == "pass"
    monkeypatch.setattr(integrate, "PIController", functools.partial(control.PIController, safety=0.88))
    # the answers are still right: tolerance proportionality passes, the error stays at the tolerance
    assert tolerance_proportionality(problem, "dopri5").verdict == "pass"
    sol = integrate.solve(problem.vector_field(np, np.float64), np.asarray(problem.y0), problem.t_span,
                          method="dopri5", rtol=1e-6, atol=1e-9)
    assert np.max(np.abs(sol.ys[-1] - problem.final_reference())) < 1e-5
    # the work is not
    for m, case in (("dopri5", "rtol=1e-06,atol=1e-09"), ("kvaerno5", "rtol=1e-06,atol=1e-06,jac=analytic"),
                    ("heun", "rtol=0.0001,atol=1e-07")):
        assert _verdicts(m)[case] == "fail", m


def test_bdf_order_selection_off_by_one_passes_the_answer_checks_but_not_work(monkeypatch):
    hires = PROBLEMS.get("hires")
    clean = work_precision(hires, "bdf", tolerances=(1e-6,), repeats=1).measured
    select = BDF._select

    def late(self, st, tc, y, y1, d, new, k, n_equal):  # one equal step too few counted
        return select(self, st, tc, y, y1, d, new, k, n_equal - 1)

    monkeypatch.setattr(BDF, "_select", late)
    planted = work_precision(hires, "bdf", tolerances=(1e-6,), repeats=1)
    assert planted.verdict == "pass" and planted.measured > clean - 0.3  # same digits
    assert set(_verdicts("bdf").values()) == {"fail"}


def test_error_norm_with_one_extra_component_passes_the_answer_checks_but_not_work(monkeypatch):
    def rms(xp, x, per_sample):  # counts one component too many in the mean
        x = integrate._xp.stop_gradient(x)
        if per_sample:
            raise AssertionError("the cases are shared-step solves")
        return float(integrate._xp.to_numpy(xp.linalg.vector_norm(x))) / math.sqrt(math.prod(x.shape) + 1)

    monkeypatch.setattr(integrate, "_rms", rms)
    assert tolerance_proportionality(PROBLEMS.get("warped_oscillatory"), "dopri5").verdict == "pass"
    assert _verdicts("dopri5")["rtol=1e-06,atol=1e-09"] == "fail"
    assert _verdicts("kvaerno5")["rtol=1e-06,atol=1e-06,jac=analytic"] == "fail"
