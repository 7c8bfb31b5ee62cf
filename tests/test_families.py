"""The check-family registry (``odeverify.families``): a family registered once gets its CLI
flag, validation, journal and resume, units and pytest items, the same way as ``--sde`` and
``--flows``."""
from __future__ import annotations

import json

import pytest

from odeverify import families
from odeverify.cli import main
from odeverify.conformance import _safe, _Sink, _streaming
from odeverify.families import FAMILIES, Family, register_family
from odeverify.records import Record

SHARED = "(toy shared)"


def _toy_case(method: str, n: int) -> Record:
    return Record(property="toy_property", method=method, problem=f"p{n}", measured=float(n), expected=0.0,
                  verdict="pass" if method != "bad" else "fail", backend="reference", message="toy")


@_streaming
def run_toy(*, backend="reference", quick=False, methods=None, shared=None, progress=None):
    records = _Sink()
    for m in (["euler", "rk4"] if methods is None else methods):
        if progress:
            progress(m)
        for n in range(2 if quick else 3):
            records.append(_safe(_toy_case, m, n, label=backend))
    if shared if shared is not None else methods is None:
        records.append(_safe(_toy_case, "*", 99, label=backend))
    return list(records)


def _validate(backend: str, method: str) -> None:
    if method not in ("euler", "rk4", "bad"):
        raise ValueError(f"--methods={method!r}, but the toy family has no such method")


@pytest.fixture
def toy(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    fam = Family(name="toy", title="Toy", help="a toy family", run=run_toy,
                 methods=lambda backend, quick: ["euler", "rk4"], validate=_validate, shared_unit=SHARED,
                 properties=("toy_property",))
    register_family(fam)
    yield fam
    FAMILIES._items.pop("toy")


def test_the_builtin_families_are_registered():
    names = families.family_names()
    assert names[:2] == ["sde", "flows"]
    for name in names:
        fam = FAMILIES.get(name)
        assert fam.help and fam.title and callable(fam.run)


def test_a_family_is_refused_with_a_bad_name_or_twice(toy):
    with pytest.raises(ValueError, match="name='Bad Name'"):
        Family(name="Bad Name", title="t", help="h", run=run_toy, methods=lambda b, q: [], validate=_validate)
    with pytest.raises(TypeError, match="validate=.*callable"):
        Family(name="x", title="t", help="h", run=run_toy, methods=lambda b, q: [], validate=None)
    with pytest.raises(ValueError, match="already registered"):
        register_family(toy)


def test_a_registered_family_is_a_check_flag_with_units_validation_and_resume(toy, capsys):
    assert main(["check", "--toy", "--json", "-j", "1"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [(r["method"], r["problem"]) for r in doc["records"]] == [
        ("euler", "p0"), ("euler", "p1"), ("euler", "p2"), ("rk4", "p0"), ("rk4", "p1"), ("rk4", "p2"), ("*", "p99")]
    assert main(["check", "--toy", "--quick", "--methods", "rk4", "--json", "-j", "1"]) == 0
    assert len(json.loads(capsys.readouterr().out)["records"]) == 2  # a named method: no shared unit
    assert main(["check", "--toy", "--methods", "bad", "--json", "-j", "1"]) == 1  # a failing record
    capsys.readouterr()
    assert main(["check", "--toy", "--methods", "nope"]) == 2
    assert "no such method" in capsys.readouterr().err
    assert main(["check", "--toy", "--flows"]) == 2
    assert "--flows and --toy, but a check grades one family at a time" in capsys.readouterr().err


def test_a_family_unit_runs_one_method_or_the_shared_records(toy):
    one = families.run_unit(family="toy", backend="reference", unit="rk4")["records"]
    assert {r.method for r in one} == {"rk4"}
    shared = families.run_unit(family="toy", backend="reference", unit=SHARED)["records"]
    assert [r.problem for r in shared] == ["p99"]
    (u,) = families.units(family="toy", backend="reference", names=["euler"])
    assert u.target == "odeverify.families:run_unit" and u.kwargs["family"] == "toy" and u.property == "toy"
