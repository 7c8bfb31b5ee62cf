"""Parallel runs (odeverify/parallel.py): worker processes and a Dask cluster give the records of
a serial run; a unit that hangs, crashes its process or raises becomes an error, never a hung
or crashed run."""
from __future__ import annotations

import json
import os
import time

import pytest

from odeverify import cli, conformance
from odeverify.parallel import Unit, records_of, run_units, validate_jobs, validate_timeout
from odeverify.records import Record, without_timings


def _unit(target: str, label: str, **kwargs) -> Unit:
    return Unit(label=label, target=f"tests._parallel_units:{target}", kwargs=kwargs, backend="b", method=label)


def test_pool_keeps_the_order_and_turns_hangs_crashes_and_exceptions_into_errors():
    units = [_unit("unit_ok", "slow", n=0, delay=1.5), _unit("unit_hang", "hang", stream=2), _unit("unit_die", "die"),
             _unit("unit_raise", "raise"), _unit("unit_ok", "fast", n=4)]
    finished: list[str] = []
    cases: list[tuple[int, str]] = []
    outs = run_units(units, jobs=2, timeout=12.0, on_outcome=lambda o, u: finished.append(u.label),
                     on_case=lambda i, key, r: cases.append((i, key)))
    assert [o.label for o in outs] == [u.label for u in units]  # the order of the units
    assert finished.index("die") < finished.index("hang")  # handed on as they finish, not in unit order
    assert outs[0].error is None and outs[0].records[0].measured == 0.0
    assert "time limit of 12 s" in outs[1].error
    assert "worker process died (exit code 7)" in outs[2].error
    assert "RuntimeError: planted failure" in outs[3].error
    # the run went on after the crash and the hang, in fresh processes
    assert outs[4].error is None and outs[4].records[0].measured == 4.0
    # cases stream to the parent as they finish: the hung unit's two finished cases are kept
    assert cases == [(1, "case0"), (1, "case1")]
    assert [k for k, _ in outs[1].streamed] == ["case0", "case1"]
    assert [k for k, _ in outs[0].cases] == ["key0"] and outs[0].streamed == []  # returned, not streamed
    recs = records_of(outs, units)
    assert [r.verdict for r in recs] == ["pass", "pass", "pass", "error", "error", "error", "pass"]
    assert [r.problem for r in recs[1:3]] == ["c0", "c1"]
    assert recs[3].method == "hang" and "hang:" in recs[3].message


def test_a_callback_that_raises_stops_the_run_without_waiting_for_running_units():
    units = [_unit("unit_ok", "a", n=1), _unit("unit_hang", "h1"), _unit("unit_hang", "h2")]

    def stop(out, unit):
        raise KeyboardInterrupt

    start = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        run_units(units, jobs=2, on_outcome=stop)
    assert time.monotonic() - start < 60  # the hanging units were abandoned, not awaited


def test_priority_hands_the_costliest_units_out_first_and_keeps_the_order_of_outcomes():
    units = [_unit("unit_clock", f"u{n}", n=n) for n in range(4)]
    # one worker with a time limit: the units run one at a time, in the order handed out
    outs = run_units(units, jobs=1, timeout=120, priority=[1.0, 5.0, 0.5, 3.0])
    assert [o.label for o in outs] == ["u0", "u1", "u2", "u3"]
    ran_at = {o.label: o.records[0].measured for o in outs}
    assert sorted(ran_at, key=ran_at.get) == ["u1", "u3", "u0", "u2"]
    with pytest.raises(ValueError, match="priority has 2 entries; expected one per unit"):
        run_units(units, priority=[1.0, 2.0])


@pytest.mark.parametrize("bad", [0, -2, 1.5, True, "2"])
def test_jobs_must_be_a_positive_whole_number(bad):
    with pytest.raises(ValueError, match=r"jobs=.*whole number of processes >= 1"):
        validate_jobs(bad)


@pytest.mark.parametrize("bad", [0, -1.0, float("inf"), float("nan"), "10"])
def test_timeout_must_be_positive_and_finite(bad):
    with pytest.raises(ValueError, match=r"timeout=.*finite number of seconds > 0"):
        validate_timeout(bad)


def test_scheduler_and_workers_are_exclusive():
    with pytest.raises(ValueError, match="give one"):
        run_units([], scheduler="tcp://127.0.0.1:1", workers=2)


# --- the records of a real run -----------------------------------------------------------------
METHODS = ("euler", "rk4", "heun")


@pytest.fixture(scope="module")
def serial_check():
    return conformance.run_conformance(backend="reference", quick=True, methods=list(METHODS))


def test_a_unit_does_not_run_again_the_cases_of_the_journal(serial_check):
    # the first case of euler is "finished" already, with a marked record: a resumed unit
    # returns that record and does not hand its key on as newly finished
    units = conformance.units(backend="reference", quick=True, names=["euler"])
    done = run_units(units)[0]
    key, first = done.cases[1]
    marked = Record.from_dict({**first.to_dict(), "message": "from the journal"})
    again = run_units(conformance.units(backend="reference", quick=True, names=["euler"], resume={key: marked}))[0]
    assert key not in [k for k, _ in again.cases]
    assert "from the journal" in [r.message for r in again.records]
    assert len(again.records) == len(done.records)


def test_dask_local_cluster_gives_the_records_of_a_serial_run(serial_check):
    pytest.importorskip("distributed")
    units = conformance.units(backend="reference", quick=True, names=METHODS)
    outs = run_units(units, workers=2)
    assert all(o.error is None for o in outs)
    assert len({o.worker for o in outs}) >= 1 and all(o.worker.startswith("tcp://") for o in outs)
    assert without_timings(records_of(outs, units)) == without_timings(serial_check)


def test_dask_scheduler_that_does_not_answer_is_a_clear_error(monkeypatch):
    pytest.importorskip("distributed")
    monkeypatch.setattr("odeverify.parallel.CONNECT_TIMEOUT", "1s")
    with pytest.raises(ValueError, match=r"scheduler='tcp://127.0.0.1:9'.*no Dask scheduler answered"):
        run_units([_unit("unit_ok", "a", n=1)], scheduler="tcp://127.0.0.1:9", timeout=5)


# --- the command line --------------------------------------------------------------------------
def _check_json(capsys, *extra: str) -> dict:
    code = cli.main(["check", "--quick", "--json", "--methods", ",".join(METHODS), *extra])
    out = capsys.readouterr().out
    assert code == 0, out
    return json.loads(out)


def test_check_jobs_gives_the_records_of_check_jobs_1(capsys, tmp_path, serial_check):
    journal = str(tmp_path / "j.jsonl")
    doc = _check_json(capsys, "-j", "2", "--journal", journal)
    assert len(doc["records"]) == len(serial_check) > 10
    assert without_timings(doc["records"]) == without_timings([r.to_dict() for r in serial_check])
    assert not os.path.exists(journal)  # finished: the journal is discarded


@pytest.mark.parametrize("argv, match", [
    (["-j", "0"], r"--jobs=0, but it must be a whole number"),
    (["--timeout", "-5"], r"--timeout=-5.0, but it must be a finite number of seconds"),
    (["--workers", "0"], r"--workers=0, but it must be a whole number"),
    (["--scheduler", "tcp://x:1", "--workers", "2"], r"--scheduler='tcp://x:1' and --workers=2; expected one"),
])
def test_bad_parallel_options_are_usage_errors(capsys, argv, match):
    import re

    assert cli.main(["check", "--quick", "--methods", "euler", *argv]) == cli.EXIT_USAGE
    assert re.search(match, capsys.readouterr().err)


def test_explore_jobs_finds_what_a_serial_search_finds(tmp_path):
    from odeverify.explore import explore

    kw = dict(properties=["time_reversal", "fixed_step_agreement", "convergence_order"], examples=3, seed=3,
              directory=None, log=lambda s: None)
    serial = explore("reference", **kw)
    par = explore("reference", parallel={"jobs": 2, "timeout": None, "scheduler": None, "workers": None}, **kw)
    assert par.examples == serial.examples and sum(serial.examples.values()) > 0
    assert [without_timings(f.record) for f in par.findings] == [without_timings(f.record) for f in serial.findings]


@pytest.mark.slow
def test_pytest_conformance_spreads_over_xdist_workers(tmp_path):
    """`pytest -n 2 --odeverify-backend scipy`: one item per method, spread over two workers."""
    import subprocess
    import sys

    pytest.importorskip("xdist")
    out = subprocess.run([sys.executable, "-m", "pytest", "-v", "-n", "2", "--odeverify-backend", "scipy",
                          "--odeverify-quick", "-p", "no:cacheprovider"], cwd=tmp_path, capture_output=True,
                         text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stdout[-3000:]
    passed = [line for line in out.stdout.splitlines() if "PASSED" in line and "odeverify[scipy-" in line]
    assert len(passed) == 6  # RK23, RK45, DOP853, Radau, BDF, LSODA
    assert {line.split()[0] for line in passed} == {"[gw0]", "[gw1]"}  # both workers ran methods
