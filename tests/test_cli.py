"""The console script: list, solve (with its stable JSON) and check."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from odeverify.cli import main


def run_cli(capsys, *args):
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_list_shows_tableaus_solvers_problems(capsys):
    code, out, _ = run_cli(capsys, "list")
    assert code == 0
    for word in ("dopri5", "dop853", "tsit5", "pleiades", "detest_d5", "mlp_tanh_2x16", "Tableaus", "Problems"):
        assert word in out


def test_list_json_schema(capsys):
    code, out, _ = run_cli(capsys, "list", "--json")
    data = json.loads(out)
    assert data["schema"] == "odeverify.list/1"
    dop = next(t for t in data["tableaus"] if t["name"] == "dop853")
    assert (dop["order"], dop["embedded_order"], dop["dense_order"]) == (8, 5, 7)
    assert {"name", "n", "t_span", "tags", "solution", "citation"} <= set(data["problems"][0])
    # stability comes from the proofs in tableaus.theory, never declared
    stab = {t["name"]: t["stability"] for t in data["tableaus"]}
    assert stab["radau_iia5"]["l_stable"] and stab["trapezoid"]["a_stable"] and not stab["trapezoid"]["l_stable"]
    assert not stab["rk4"]["a_stable"] and stab["rk4"]["real_interval"][0] == pytest.approx(-2.785293563, abs=1e-8)


def test_solve_json_is_stable(capsys):
    code, out, _ = run_cli(capsys, "solve", "harmonic", "--method", "tsit5", "--rtol", "1e-8", "--atol", "1e-10",
                           "--t-eval", "0,1,2,6.283185307179586", "--json")
    assert code == 0
    data = json.loads(out)
    assert data["schema"] == "odeverify.solve/1"
    assert set(data) >= {"problem", "method", "backend", "library", "dtype", "t_span", "status", "message", "ts",
                         "ys", "stats", "options", "error"}
    assert data["status"] == "success" and len(data["ys"]) == 4
    assert data["error"]["against"] == "exact" and data["error"]["scaled_max_error"] < 1e-6
    assert set(data["stats"]) >= {"nfev", "accepted", "rejected", "njev", "nlu"}


def test_solve_fixed_step_and_failure_exit_code(capsys):
    code, out, _ = run_cli(capsys, "solve", "exp_decay", "--method", "rk4", "--n-steps", "10")
    assert code == 0 and "accepted=10" in out
    code, out, _ = run_cli(capsys, "solve", "kepler", "--method", "dopri5", "--max-steps", "5")
    assert code == 3 and "max_steps" in out


@pytest.mark.parametrize("args, message", [
    (["solve", "no_such_problem"], "unknown problem 'no_such_problem'"),
    (["solve", "harmonic", "--method", "dopr5"], "did you mean 'dopri5'"),
    (["solve", "harmonic", "--rtol", "-1"], "rtol=-1.0"),
    (["solve", "harmonic", "--backend", "nosuch"], "unknown backend 'nosuch'"),
    (["check", "--methods", "rk5"], "reference has no method 'rk5'"),
])
def test_bad_input_exit_code_2(capsys, args, message):
    code, _, err = run_cli(capsys, *args)
    assert code == 2
    assert message in err


def test_check_quick_subset_table_and_json(capsys):
    code, out, _ = run_cli(capsys, "check", "--quick", "--methods", "rk4,dopri5")
    assert code == 0, out
    assert "algebraic_order" in out and "tolerance_proportionality" in out and "0 failed" in out
    code, out, _ = run_cli(capsys, "check", "--quick", "--methods", "bosh3", "--json")
    data = json.loads(out)
    assert data["schema"] == "odeverify.check/1" and data["summary"]["fail"] == 0
    assert all(r["method"] == "bosh3" for r in data["records"])


def test_console_script_entry_point():
    out = subprocess.run([sys.executable, "-m", "odeverify.cli", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and "odeverify" in out.stdout
