"""The journal of a run: records appended as they complete, a torn last line ignored, and an
interrupted conformance run or report resumed to the records of an uninterrupted one without
redoing a finished case."""
from __future__ import annotations

import functools
import json

import pytest

from odeverify.conformance import run_conformance
from odeverify.journal import SCHEMA, Journal, case_key, read
from odeverify.records import Record

RUN = {"command": "check", "backend": "reference", "quick": True}
#: a fixed-step method (no sink-only records beside algebraic order) and a cheap one (~1 s both)
METHODS = "euler,rk4"


def _record(i: int, measured: float = 1.0) -> Record:
    return Record(property="convergence_order", method="rk4", problem=f"p{i}", measured=measured, expected=4.0,
                  verdict="pass", details={"errors": [1e-3, float("nan")]})


@pytest.fixture(scope="module")
def uninterrupted():
    return [r.to_dict() for r in run_conformance(quick=True, methods=METHODS)]


def test_records_round_trip_and_a_torn_last_line_is_ignored(tmp_path):
    path = tmp_path / "j.jsonl"
    with Journal(path, RUN) as j:
        j.case(case_key(i=0), _record(0, float("inf")))
        j.case(case_key(i=1), _record(1))
        j.task("a task", [_record(2), _record(3)])
    with open(path, "ab") as fh:  # a crash inside the write of the next line
        fh.write(b'{"kind": "case", "key": "x", "rec')
    contents = read(path)
    assert contents.torn and contents.run == RUN
    assert [r.to_dict() for r in contents.cases.values()] == [_record(0, float("inf")).to_dict(), _record(1).to_dict()]
    assert contents.cases[case_key(i=0)].measured == float("inf")
    assert [r.problem for r in contents.tasks["a task"]] == ["p2", "p3"]
    assert contents.n_records == 2  # the task's; no case was written after it
    # resuming cuts the torn line off before appending, so the next record is whole
    j, again = Journal.resume(path, RUN)
    j.case(case_key(i=4), _record(4))
    j.close()
    after = read(path)
    assert not after.torn and len(after.cases) == 3 and after.n_records == 3
    assert path.read_bytes().endswith(b"\n")


def test_a_journal_of_another_run_or_not_a_journal_is_refused(tmp_path):
    path = tmp_path / "j.jsonl"
    Journal(path, RUN).close()
    with pytest.raises(ValueError, match=r"written by another run: quick=True there, but quick=False now"):
        Journal.resume(path, {**RUN, "quick": False})
    other = tmp_path / "other.jsonl"
    other.write_text('{"something": "else"}\n')
    with pytest.raises(ValueError, match=rf"journal='.*other.jsonl': header .*expected .*{SCHEMA}"):
        read(other)
    damaged = tmp_path / "damaged.jsonl"
    damaged.write_text(json.dumps({"journal": SCHEMA, "run": RUN}) + "\nnot json\n{}\n")
    with pytest.raises(ValueError, match="line 2 is damaged"):
        read(damaged)


def test_a_run_interrupted_after_k_cases_resumes_to_the_same_records(tmp_path, uninterrupted):
    path = tmp_path / "j.jsonl"
    journal = Journal(path, RUN)
    k = 4

    def interrupt_after_k(record, key):  # the progress callback; Ctrl-C arrives after k cases
        journal.case(key, record)
        if journal.written == k:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_conformance(quick=True, methods=METHODS, on_record=interrupt_after_k)
    journal.close()
    journal, done = Journal.resume(path, RUN)
    assert len(done.cases) == k
    new, started = [], []
    resumed = run_conformance(quick=True, methods=METHODS, resume=done.cases,
                              on_record=lambda r, key: (journal.case(key, r), new.append(key)),
                              on_case=lambda *case: started.append(case))
    journal.close()
    assert [r.to_dict() for r in resumed] == uninterrupted
    # no finished case ran again: only the others were computed, and all of them were
    assert not set(new) & set(done.cases)
    assert len(new) + k == len(uninterrupted)
    assert len(started) <= len(new)
    assert len(read(path).cases) == len(uninterrupted)


def test_an_interrupted_report_resumes_to_the_records_of_an_uninterrupted_one(tmp_path):
    from odeverify.report import collect

    options = dict(backends=["reference"], methods=["euler"], quick=False, progress=False,
                   kinds=["conformance", "stability"])
    whole_doc = collect(**options)
    whole = whole_doc["records"]
    path = tmp_path / "j.jsonl"
    journal = Journal(path, RUN)
    task = journal.task

    def interrupt_after_first_task(key, records, info=None):
        task(key, records, info)
        raise KeyboardInterrupt

    journal.task = interrupt_after_first_task
    with pytest.raises(KeyboardInterrupt):
        collect(**options, journal=journal)
    journal.close()
    journal, done = Journal.resume(path, RUN)
    assert len(done.tasks) == 1 and done.n_records > 0
    ran = []
    task = journal.task
    journal.task = lambda key, records, info=None: (ran.append(key), task(key, records, info))
    doc = collect(**options, journal=journal, resume=done)
    journal.close()
    assert doc["records"] == whole
    assert not set(ran) & set(done.tasks)
    # the resumed task's timing comes from the journal, marked; the document says what was resumed
    assert [t["task"] for t in doc["timings"]] == [t["task"] for t in whole_doc["timings"]]
    assert [t.get("resumed", False) for t in doc["timings"]].count(True) == 1
    assert doc["resumed"] == {"tasks": 1, "records": done.n_records} and whole_doc["resumed"] is None


def test_record_from_dict_refuses_unknown_fields():
    with pytest.raises(ValueError, match=r"record fields \['colour'\]"):
        Record.from_dict({**_record(0).to_dict(), "colour": "red"})
    assert functools.reduce(lambda r, _: Record.from_dict(r.to_dict()), range(3), _record(0)).to_dict() \
        == _record(0).to_dict()
