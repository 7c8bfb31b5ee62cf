"""odeverify diagnose on the command line: the table, --json (odeverify.diagnose/1), --html,
the exit statuses, and bad input refused before any work with a message naming it."""
from __future__ import annotations

import json
import textwrap

import numpy as np
import pytest

from odeverify.cli import EXIT_FAILED, EXIT_OK, EXIT_USAGE, main
from odeverify.diagnose import DIAGNOSE_SCHEMA, diagnose
from odeverify.report.diagnose import check_html_path, render_diagnosis

FIELDS = textwrap.dedent('''
    import numpy as np

    A = np.diag([-1.0, -2.0])
    STIFF = np.diag([-1.0, -1000.0])

    def healthy(t, z):
        return z @ A.T

    def stiff(t, z):
        return z @ STIFF.T

    def wrong_shape(t, z):
        return z[:, :1]
''')


@pytest.fixture
def fields(tmp_path, monkeypatch):
    path = tmp_path / "user_fields.py"
    path.write_text(FIELDS)
    monkeypatch.syspath_prepend(str(tmp_path))
    return path


def test_table_and_exit_ok_on_a_healthy_field(fields, capsys):
    rc = main(["diagnose", "user_fields:healthy", "--z0", "normal:4x2", "--t-span", "0,1", "--quick",
               "--only", "instability,stiffness"])
    out = capsys.readouterr().out
    assert rc == EXIT_OK, out
    assert "instability" in out and "stiffness" in out and "PASS" in out


def test_exit_failed_and_json_on_a_stiff_field(fields, capsys, tmp_path):
    html = tmp_path / "out" / "page.html"
    rc = main(["diagnose", f"{fields}:stiff", "--z0", "normal:4x2", "--t-span", "0,1", "--quick",
               "--only", "stiffness", "--json", "--html", str(html)])
    doc = json.loads(capsys.readouterr().out)
    assert rc == EXIT_FAILED
    assert doc["schema"] == DIAGNOSE_SCHEMA and doc["complete"] is True
    assert doc["summary"][0]["mode"] == "stiffness" and doc["summary"][0]["verdict"] == "fail"
    assert "kvaerno5" in doc["summary"][0]["recommendation"]
    page = html.read_text()
    assert page.startswith("<!DOCTYPE html>") and "stiffness" in page and "<svg" in page
    assert "v-fail" in page  # the report's verdict colours


@pytest.mark.parametrize("argv, match", [
    (["diagnose", "user_fields:nope", "--z0", "normal:2x2", "--t-span", "0,1"], "has no attribute 'nope'"),
    (["diagnose", "user_fields:wrong_shape", "--z0", "normal:2x2", "--t-span", "0,1"], "returned shape"),
    (["diagnose", "user_fields:healthy", "--z0", "normal:2x3", "--t-span", "0,1"], "z0 of shape"),
    (["diagnose", "user_fields:healthy", "--z0", "normal:2x2", "--t-span", "0"], "t_span"),
    (["diagnose", "user_fields:healthy", "--z0", "normal:2x2", "--t-span", "0,1", "--only", "nothing"], "only="),
    (["diagnose", "user_fields:healthy", "--z0", "normal:2x2", "--t-span", "0,1", "--method", "rk5"], "rk4"),
])
def test_bad_input_is_a_usage_error_naming_it(fields, capsys, argv, match):
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == EXIT_USAGE
    assert "odeverify diagnose: error:" in err
    import re

    assert re.search(match, err), err


def test_html_path_is_checked_before_any_work(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ValueError, match="--html"):
        check_html_path(str(blocker / "page.html"))
    assert check_html_path(str(tmp_path) + "/").name == "diagnosis.html"


def test_page_renders_from_the_json_document_alone():
    d = diagnose(lambda t, z: -z, "normal:8x2", (0, 1), quick=True, only=["instability", "work"])
    doc = json.loads(json.dumps(d.to_dict()))
    page = render_diagnosis(doc)
    assert page == render_diagnosis(doc)  # same document, same page
    assert page.count("<svg") == 4  # |z|, max Re lambda, NFE histogram, NFE vs rtol
    assert "work per input" in page and "PASS" not in page.split("<body>")[0]
