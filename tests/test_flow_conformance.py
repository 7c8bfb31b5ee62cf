"""`odeverify check --flows`: per backend it passes or lists documented deviations; the CLI's
family options; the pytest plugin's --odeverify-flows items."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from odeverify import backends
from odeverify.conformance import FLOW_SHARED_UNIT, flow_methods, run_flow_conformance

#: the default run grades one cheap method per backend (the rest is slow-marked)
DEFAULT_METHODS = {"reference": ["rk4"], "torchdiffeq": ["rk4"], "scipy": ["RK45"]}


def _params():
    out = []
    for name in backends.names():
        if name.startswith("reference-"):
            continue  # the reference's code in another array library: the shared records cover it
        out.append(pytest.param(name, False, id=f"{name}-default"))
        out.append(pytest.param(name, True, marks=pytest.mark.slow, id=f"{name}-quick-profile"))
    return out


@pytest.mark.parametrize("name, every", _params())
def test_check_flows_passes_or_lists_documented_deviations(name, every):
    b = backends.get(name)
    if not b.available():
        pytest.skip(f"{name} is not installed: {b.install_hint}")
    if not b.capabilities().methods:
        pytest.skip(f"{name} has no ODE methods")
    if not every and name not in DEFAULT_METHODS:
        pytest.skip(f"{name}'s flow conformance is slow-marked (compilation per method)")
    records = run_flow_conformance(backend=name, quick=True, methods=None if every else DEFAULT_METHODS[name],
                                   shared=every)
    assert records
    bad = [r for r in records if r.verdict in ("fail", "error")]
    assert not bad, "\n".join(r.describe() for r in bad)
    assert "cnf_log_density" in {r.property for r in records}


@pytest.fixture
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def test_check_flows_json_grades_the_named_method(capsys, _cache):
    from odeverify import cli

    code = cli.main(["check", "--flows", "--quick", "--json", "--methods", "rk4", "-j", "1"])
    doc = json.loads(capsys.readouterr().out)
    assert code == 0
    props = {(r["property"], r["method"], r["problem"]) for r in doc["records"]}
    assert ("cnf_log_density", "rk4", "cnf_linear2[jacobian]") in props
    assert ("cnf_log_density", "rk4", "cnf_mlp2[jacobian]") in props
    assert {r["verdict"] for r in doc["records"]} == {"pass"}


def test_check_flows_usage_errors(capsys, _cache):
    from odeverify import cli

    assert cli.main(["check", "--flows", "--sde"]) == cli.EXIT_USAGE
    assert "one family at a time" in capsys.readouterr().err
    assert cli.main(["check", "--flows", "--methods", "dopri"]) == cli.EXIT_USAGE
    assert "dopri" in capsys.readouterr().err
    assert cli.main(["check", "--flows", "--modes", "discrete"]) == cli.EXIT_USAGE
    assert "--methods" in capsys.readouterr().err


def test_the_quick_methods_are_the_backends_own():
    for name in ("reference", "torchdiffeq", "diffrax", "scipy"):
        b = backends.get(name)
        if b.available():
            assert set(flow_methods(name, True)) <= set(b.capabilities().methods)


@pytest.mark.slow
def test_plugin_gives_one_item_per_method_and_the_shared_unit(tmp_path):
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--collect-only",
                          "--odeverify-backend", "reference", "--odeverify-flows", "--odeverify-quick"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert "odeverify[reference-dopri5]" in out.stdout and "odeverify[reference-rk4]" in out.stdout
    assert f"odeverify[reference-{FLOW_SHARED_UNIT}]" in out.stdout


@pytest.mark.slow
def test_check_flows_parallel_equals_serial(capsys, _cache):
    from odeverify import cli
    from odeverify.records import without_timings

    docs = []
    for jobs in ("1", "2"):
        assert cli.main(["check", "--flows", "--quick", "--json", "-j", jobs, "--methods", "dopri5,rk4"]) == 0
        docs.append(json.loads(capsys.readouterr().out))
    assert without_timings(docs[0]["records"]) == without_timings(docs[1]["records"])
