"""benchmarks/cnf_trace.py: the crossover it states, the work it counts, and a tiny run end to end."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(ROOT / "benchmarks"))  # as when it runs as a script (it imports sde.write_json)
    try:
        path = ROOT / "benchmarks" / "cnf_trace.py"
        spec = importlib.util.spec_from_file_location("odeverify_cnf_trace_script", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    return module


def _rows(times: dict[str, list[float]], dims: list[int]) -> list[dict]:
    return [{"n": n, "library": "numpy", "rule": "fixed", "estimator": est, "median_s": ts[i]}
            for est, ts in times.items() for i, n in enumerate(dims)]


def test_crossover_is_where_hutchinson_stays_faster(bench):
    dims = [2, 4, 8, 16]
    rows = _rows({"jacobian": [1.0, 1.0, 2.0, 4.0], "jvp": [0.5, 0.5, 0.5, 0.5],
                  "hutchinson1": [0.9, 1.1, 1.0, 1.0]}, dims)
    out = {c["exact"]: c for c in bench.crossovers(rows, [1])}
    # faster at 2, slower at 4, faster from 8 on: the crossover is 8, not 2
    assert out["jacobian"]["crossover_n"] == 8 and not out["jacobian"]["below_grid"]
    assert out["jacobian"]["exact_over_hutchinson"][16] == pytest.approx(4.0)
    assert out["jvp"]["crossover_n"] is None  # never faster
    rows = _rows({"jacobian": [2.0] * 4, "hutchinson1": [1.0] * 4}, dims)
    (only,) = bench.crossovers(rows, [1])
    assert only["crossover_n"] == 2 and only["below_grid"]


def test_field_equivalents_count_n_jvps_exact_and_k_for_hutchinson(bench):
    assert bench.field_equivalents(32, 16, "jacobian", 0) == 32 * 17
    assert bench.field_equivalents(32, 16, "autodiff", 0) == 32 * 17
    assert bench.field_equivalents(32, 16, "hutchinson", 4) == 32 * 5


def test_a_tiny_run_writes_its_json(bench, tmp_path):
    out = tmp_path / "cnf.json"
    assert bench.main(["--dims", "2,3", "--libraries", "numpy", "--rules", "fixed", "--batch", "4", "--steps", "4",
                       "--repeats", "1", "--seeds", "2", "--error-dim", "2", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    rows = data["rows"]
    assert {r["estimator"] for r in rows} == {"jacobian", "jvp", "hutchinson1", "hutchinson4"}
    for r in rows:
        assert r["nfev"] == 16 and r["status"] == "success"  # rk4, 4 steps: the same work for every estimator
        if r["trace"] == "hutchinson":
            assert r["rms_logp_diff_to_jacobian"] > 1e-6, r  # an estimate, not the trace
        else:
            assert r["rms_logp_diff_to_jacobian"] < 1e-12, r  # the exact traces agree
    assert len(data["crossovers"]) == 4  # (jacobian, jvp) x (1, 4 probes)
    errs = data["hutchinson_error"]
    assert [e["probes"] for e in errs] == list(bench.ERROR_PROBES)
    assert all(e["rms_error"] > 0 and e["predicted_rms"] > 0 for e in errs)
    assert not (tmp_path / "cnf.json.tmp").exists()
