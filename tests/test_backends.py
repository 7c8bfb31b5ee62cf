"""The backend interface: registry, plug-ins through entry points, failures as statuses."""
from __future__ import annotations

import importlib.metadata
import sys
from pathlib import Path

import numpy as np
import pytest

from odeverify import Status, backends
from odeverify.backends import Backend, UnsupportedOption
from odeverify.conformance import run_conformance
from odeverify.problems import PROBLEMS, Problem

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture()
def tiny_euler(monkeypatch):
    """The README's worked example, plugged in through a (faked) entry point."""
    monkeypatch.syspath_prepend(str(EXAMPLES))
    ep = importlib.metadata.EntryPoint(name="tiny-euler", value="tiny_euler_backend:TinyEuler",
                                       group=backends.ENTRY_POINT_GROUP)
    real = importlib.metadata.entry_points

    def fake(**kw):
        if kw.get("group") == backends.ENTRY_POINT_GROUP:
            return [ep]
        return real(**kw)

    monkeypatch.setattr(backends, "entry_points", fake)
    monkeypatch.setattr(backends, "_loaded_plugins", False)
    yield backends.get("tiny-euler")
    backends.BACKENDS._items.pop("tiny-euler", None)
    sys.modules.pop("tiny_euler_backend", None)


def test_plugin_backend_runs_the_conformance_properties(tiny_euler):
    assert "tiny-euler" in backends.names()
    records = run_conformance(backend="tiny-euler", quick=True)
    by = {(r.property, r.problem): r for r in records}
    assert by[("algebraic_order", "-")].verdict == "pass"
    assert by[("convergence_order", "warped_oscillatory")].verdict == "pass", by[("convergence_order", "warped_oscillatory")].describe()
    agree = by[("backend_agreement", "warped_oscillatory")]
    assert agree.verdict == "pass", agree.describe()


def test_plugin_refuses_an_option_it_cannot_honour(tiny_euler):
    with pytest.raises(UnsupportedOption, match="tiny-euler cannot honour rtol=0.001: fixed-step only"):
        tiny_euler.solve(PROBLEMS.get("harmonic"), "euler", rtol=1e-3, n_steps=4)
    with pytest.raises(ValueError, match="fixed-step only: pass dt or n_steps"):
        tiny_euler.solve(PROBLEMS.get("harmonic"), "euler")


def test_unknown_backend_and_method():
    with pytest.raises(ValueError, match="unknown backend 'scipi'.*did you mean 'scipy'"):
        backends.get("scipi")
    with pytest.raises(ValueError, match="reference has no method 'dopri'; did you mean 'dopri5'"):
        backends.get("reference").solve(PROBLEMS.get("harmonic"), "dopri")


def test_bad_arguments_raise_before_any_library_runs():
    b = backends.get("reference")
    with pytest.raises(ValueError, match="rtol=-1, but it must be finite and > 0"):
        b.solve(PROBLEMS.get("harmonic"), "dopri5", rtol=-1)
    with pytest.raises(ValueError, match="outside t_span"):
        b.solve(PROBLEMS.get("harmonic"), "dopri5", t_eval=[0.0, 100.0])
    with pytest.raises(ValueError, match="unknown solver option 'tol'"):
        b.solve(PROBLEMS.get("harmonic"), "dopri5", tol=1e-3)


class Exploding(Backend):
    name = "exploding"

    def capabilities(self):
        return backends.Capabilities(methods={"m": backends.MethodInfo("m", 1, adaptive=True, fixed=False)})

    def _solve(self, problem, method, y0, options, dtype, device):
        raise AssertionError("underflow in dt 1e-20")


def test_a_library_exception_becomes_a_status():
    sol = Exploding().solve(PROBLEMS.get("harmonic"), "m", rtol=1e-3)
    assert sol.status is Status.DT_UNDERFLOW
    assert "underflow in dt" in sol.message
    assert np.isnan(sol.ys).all() and sol.ys.shape == (2, 2)


class Missing(Backend):
    name = "missing"
    install_hint = "pip install nothing-here"

    def _import(self):
        import nothing_here_at_all  # noqa: F401

    def capabilities(self):
        return backends.Capabilities(methods={"m": backends.MethodInfo("m", 1, adaptive=True, fixed=False)})

    def _solve(self, *a):  # pragma: no cover
        raise AssertionError


def test_a_missing_library_is_unavailable_with_hint():
    sol = Missing().solve(PROBLEMS.get("harmonic"), "m")
    assert sol.status is Status.UNAVAILABLE and "pip install nothing-here" in sol.message


def test_reference_backend_honours_controller_options():
    b = backends.get("reference")
    p = PROBLEMS.get("harmonic")
    a = b.solve(p, "dopri5", rtol=1e-8, atol=1e-10)
    c = b.solve(p, "dopri5", rtol=1e-8, atol=1e-10, safety=0.5, factor_max=2.0)
    assert c.stats.accepted > a.stats.accepted  # a timid controller takes more steps
    assert a.timing["wall_s"] > 0


@pytest.mark.parametrize("name", ["reference", "scipy"])
def test_bad_y0_is_refused_once_for_every_backend(name):
    b = backends.get(name)
    with pytest.raises(ValueError, match=r"y0 has shape \(3,\), but it must be \(2,\) or \(B, 2\)"):
        b.solve(PROBLEMS.get("harmonic"), "RK45" if name == "scipy" else "dopri5", y0=[1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="y0 contains non-finite"):
        b.solve(PROBLEMS.get("harmonic"), "RK45" if name == "scipy" else "dopri5", y0=[np.nan, 0.0])
