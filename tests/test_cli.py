"""The console script: list, solve (with its stable JSON) and check."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from odeverify.cli import main


@pytest.fixture(autouse=True)
def _journals_in_tmp(tmp_path, monkeypatch):
    """check's default journals go to the user's cache directory: keep them in tmp here."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


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
    (["solve", "harmonic", "--t-eval", "0,x"], "--t-eval='0,x', but expected comma-separated numbers"),
    (["solve", "harmonic", "--backend", "scipy", "--library", "torch"], "--library='torch', but the array library"),
    (["check", "--backend", "scipy", "--library", "jax"], "--library='jax', but the array library"),
    (["check", "--methods", "dorpi5"], "did you mean 'dopri5'"),
    (["check", "--modes", "adjoint"], "--modes='adjoint', but gradient modes are graded only with --gradients"),
    (["check", "--gradients", "--backend", "torchdiffeq", "--methods", "dopri5"], "expected --modes"),
    (["check", "--gradients", "--backend", "torchdiffeq", "--modes", "backprob"], "did you mean 'backprop'"),
    (["check", "--methods", ","], "--methods=',', but it names nothing"),
    (["report", "--methods", "dorpi5"], "--methods='dorpi5', but no backend of this report has that method"),
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


def test_solve_says_where_a_failed_solve_stopped(capsys):
    code, out, _ = run_cli(capsys, "solve", "kepler", "--method", "dopri5", "--max-steps", "5", "--json")
    data = json.loads(out)
    assert code == 3 and data["status"] == "max_steps" and "max_steps" in data["message"]
    assert 0.0 < data["t_final"] < data["t_span"][1]
    code, out, _ = run_cli(capsys, "solve", "kepler", "--method", "dopri5", "--max-steps", "5")
    assert f"stopped at t = {data['t_final']:.10g} of [0, 6.28319]" in out
    code, out, _ = run_cli(capsys, "solve", "harmonic", "--json")
    data = json.loads(out)
    assert data["status"] == "success" and data["t_final"] == data["t_span"][1]


def test_help_documents_the_exit_statuses(capsys):
    for args in (["--help"], ["check", "--help"]):
        with pytest.raises(SystemExit):
            main(args)
        out = capsys.readouterr().out
        assert "exit status:" in out and "4    check: nothing could be checked" in out and "130" in out


@pytest.fixture
def diffrax_not_installed(monkeypatch):
    from odeverify import backends

    monkeypatch.setattr(type(backends.get("diffrax")), "available", lambda self: False)


def test_a_backend_that_is_not_installed_is_unavailable_with_its_own_exit_status(capsys, diffrax_not_installed):
    code, out, err = run_cli(capsys, "check", "--backend", "diffrax", "--json")
    data = json.loads(out)
    assert code == 4  # neither a failure (1) nor a usage error (2)
    assert data["summary"]["unavailable"] == 1 and data["summary"]["fail"] == data["summary"]["error"] == 0
    (rec,) = data["records"]
    assert rec["verdict"] == "unavailable" and "pip install 'odeverify[jax]'" in rec["details"]["install_hint"]
    assert "nothing could be checked: diffrax is not installed; install with: pip install 'odeverify[jax]'" in err
    code, out, _ = run_cli(capsys, "check", "--backend", "diffrax", "--matrix")
    assert code == 4 and "n/a" in out and "1 unavailable" in out and "0 failed" in out
    assert "unavailable: diffrax is not installed; install with:" in out
    code, out, _ = run_cli(capsys, "check", "--backend", "diffrax", "--gradients")
    assert code == 4 and "1 unavailable" in out


def test_check_streams_records_on_a_terminal(capsys, monkeypatch):
    import sys

    monkeypatch.setattr(sys.stdout, "isatty", lambda: True, raising=False)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    monkeypatch.setenv("COLUMNS", "160")  # the bar is cut to the terminal's width
    code, out, err = run_cli(capsys, "check", "--quick", "--methods", "euler")
    assert code == 0
    lines = out.splitlines()
    # one line per record as it completes, then the summary; not the whole table at the end
    assert lines[0].split()[:2] == ["pass", "algebraic_order"]
    assert any(line.split()[:3] == ["pass", "convergence_order", "euler"] for line in lines)
    assert "property  method" not in out and "passed, 0 failed" in out
    # the bar is redrawn in place on stderr with the case running and the verdicts so far
    assert "\r[" in err and "convergence_order euler on warped_oscillatory" in err and "pass" in err
    assert "100% (1 methods)" in err


def test_check_without_a_terminal_prints_the_table_and_plain_progress_lines(capsys):
    code, out, err = run_cli(capsys, "check", "--quick", "--methods", "euler")
    assert code == 0 and out.splitlines()[1].split()[:2] == ["property", "method"]
    assert "\r" not in err and "odeverify check: 100% (1 methods)" in err


def test_an_interrupted_check_keeps_its_records_and_resumes(capsys, monkeypatch, tmp_path):
    from odeverify.journal import Journal

    args = ["check", "--quick", "--methods", "euler,rk4", "--json"]
    code, whole, _ = run_cli(capsys, *args)
    assert code == 0
    case = Journal.case

    def interrupted_after_3(self, key, record):
        case(self, key, record)
        if self.written == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(Journal, "case", interrupted_after_3)
    code, out, err = run_cli(capsys, *args)
    assert code == 130 and out == "" and "Traceback" not in err
    (line,) = [x for x in err.splitlines() if "interrupted" in x]
    assert "3 finished records are kept in" in line
    assert line.endswith("resume with: odeverify check --quick --methods euler,rk4 --json --resume")
    journal = line.split("kept in ")[1].split(";")[0]
    assert journal.startswith(str(tmp_path / "cache" / "odeverify"))
    monkeypatch.setattr(Journal, "case", case)
    code, out, err = run_cli(capsys, *args, "--resume")
    assert code == 0 and "resuming from" in err and "3 records already done" in err
    assert json.loads(out)["records"] == json.loads(whole)["records"]
    import os

    assert not os.path.exists(journal)  # a finished run leaves no journal behind


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs /proc")
def test_report_out_is_proven_writable_before_any_check(tmp_path, capsys, monkeypatch):
    ran = []
    monkeypatch.setattr("odeverify.report.output.collect", lambda **kw: ran.append(kw))
    # an existing directory where no file can be created (root ignores permission bits)
    code, _, err = run_cli(capsys, "report", "--out", "/proc/self", "--quick")
    assert code == 2 and "--out='/proc/self', but a test file could not be written there" in err
    if os.geteuid() != 0:
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        code, _, err = run_cli(capsys, "report", "--out", str(ro), "--quick")
        assert code == 2 and "a test file could not be written" in err
    assert not ran


def test_an_interrupted_report_keeps_its_work_and_resumes(capsys, monkeypatch, tmp_path):
    import functools

    from odeverify.journal import Journal
    from odeverify.report import collect, output

    small = functools.partial(collect, kinds=["conformance", "stability"])
    monkeypatch.setattr(output, "collect", small)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    (out_dir / "report.html").write_text("the previous report")
    args = ["report", "--out", str(out_dir), "--backends", "reference", "--methods", "euler"]
    task = Journal.task

    def interrupted_after_one_task(self, key, records, info=None):
        task(self, key, records, info)
        raise KeyboardInterrupt

    monkeypatch.setattr(Journal, "task", interrupted_after_one_task)
    code, _, err = run_cli(capsys, *args)
    assert code == 130 and "Traceback" not in err
    (line,) = [x for x in err.splitlines() if "interrupted" in x]
    assert f"kept in {out_dir / 'records.journal.jsonl'}" in line and "previous report" in line
    assert f"resume with: odeverify report --out {out_dir} --backends reference --methods euler --resume" in line
    assert (out_dir / "report.html").read_text() == "the previous report"
    monkeypatch.setattr(Journal, "task", task)
    code, out, err = run_cli(capsys, *args, "--resume")
    assert code == 0 and "resuming from" in err
    got = json.loads((out_dir / "records.json").read_text())["records"]
    # every record once (tests/test_journal.py compares a resumed report with an uninterrupted one)
    keys = [(r["backend"], r["property"], r["method"], r["problem"]) for r in got]
    assert len(keys) == len(set(keys))
    assert {"algebraic_order", "convergence_order", "stability_region"} <= {k[1] for k in keys}
    assert not (out_dir / "records.journal.jsonl").exists()


def test_check_runs_without_a_journal_where_the_cache_cannot_be_written(capsys, monkeypatch, tmp_path):
    blocked = tmp_path / "a-file"
    blocked.write_text("in the way of the cache directory")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocked))
    code, out, err = run_cli(capsys, "check", "--quick", "--methods", "euler")
    assert code == 0 and "passed, 0 failed" in out
    assert "no journal (" in err and "will not be resumable" in err
    code, _, err = run_cli(capsys, "check", "--quick", "--methods", "euler", "--journal", str(blocked / "j.jsonl"))
    assert code == 2 and "but the journal cannot be written there" in err
