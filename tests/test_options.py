"""Options that change a method (max_order, max_order_stiff): passable through Backend.solve,
declared in Capabilities.options and MethodInfo.option_ranges, refused by name where they do not
apply, and swept for the order they give (odeverify.properties.options)."""
from __future__ import annotations

import numpy as np
import pytest

from odeverify import backends, expectations
from odeverify.backends import UnsupportedOption
from odeverify.backends.base import METHOD_OPTIONS, OPTIONS
from odeverify.problems import PROBLEMS
from odeverify.properties import PROPERTIES, max_order_sweep

from .conftest import backend_or_skip


WARPED = PROBLEMS.get("warped_real")


def test_method_options_are_solver_options_declared_by_everybackend_or_skip():
    assert set(METHOD_OPTIONS) <= set(OPTIONS)
    assert PROPERTIES.get("max_order_sweep") is max_order_sweep
    for name in backends.names():
        b = backends.get(name)
        if not b.available():
            continue
        caps = b.capabilities()
        for info in caps.methods.values():
            for key, lo, hi in info.option_ranges:
                assert key in METHOD_OPTIONS and 1 <= lo <= hi, (name, info.name)
                assert caps.options.get(key) is True, (name, key)


def test_reference_bdf_max_order_changes_the_method_and_bad_values_are_named():
    b = backends.get("reference")
    nfev = {k: b.solve(WARPED, "bdf", rtol=1e-7, atol=1e-9, max_order=k).stats.nfev for k in (2, 5)}
    assert nfev[2] > 1.5 * nfev[5]  # a lower order needs more steps
    default = b.solve(WARPED, "bdf", rtol=1e-7, atol=1e-9)
    assert default.stats.nfev == nfev[5] and default.method == "bdf"
    for bad in (0, 6, 2.0, True, "3"):
        with pytest.raises(ValueError, match=rf"max_order={bad!r}, but reference method 'bdf' takes an int in 1 .. 5"):
            b.solve(WARPED, "bdf", max_order=bad)
    with pytest.raises(UnsupportedOption, match="'dopri5' has no option max_order=3 .methods that take it: bdf"):
        b.solve(WARPED, "dopri5", max_order=3)
    with pytest.raises(UnsupportedOption, match="max_order_stiff"):
        b.solve(WARPED, "bdf", max_order_stiff=3)


def test_scipy_lsoda_orders_reach_odepack():
    b = backend_or_skip("scipy")
    runs = {k: b.solve(WARPED, "LSODA", rtol=1e-8, atol=1e-10, max_order=k) for k in (1, 12)}
    assert runs[1].stats.accepted > 3 * runs[12].stats.accepted  # Adams order 1 against up to 12
    stiff = PROBLEMS.get("stiff_linear_1e4")
    s1 = b.solve(stiff, "LSODA", rtol=1e-6, atol=1e-8, max_order_stiff=1, jac=True)
    s5 = b.solve(stiff, "LSODA", rtol=1e-6, atol=1e-8, jac=True)
    assert s1.success and s1.stats.accepted > 2 * s5.stats.accepted  # BDF order 1 against up to 5
    with pytest.raises(ValueError, match="max_order=13, but scipy method 'LSODA' takes an int in 1 .. 12"):
        b.solve(WARPED, "LSODA", max_order=13)
    with pytest.raises(ValueError, match="max_order_stiff=6, but scipy method 'LSODA' takes an int in 1 .. 5"):
        b.solve(WARPED, "LSODA", max_order_stiff=6)
    with pytest.raises(UnsupportedOption, match="'BDF' has no option max_order=3 .methods that take it: LSODA"):
        b.solve(WARPED, "BDF", max_order=3)


def test_torchdiffeq_adams_max_order_and_the_others_refuse_it():
    b = backend_or_skip("torchdiffeq")
    ref = WARPED.final_reference()
    err = {k: float(np.max(np.abs(np.asarray(b.solve(WARPED, "explicit_adams", n_steps=128, max_order=k).ys[-1])
                                  - ref))) for k in (4, 5)}
    assert err[4] > 30 * err[5]  # order 3 (Adams-Bashforth 3) against 4
    with pytest.raises(ValueError, match="max_order=13, but torchdiffeq method 'explicit_adams'"):
        b.solve(WARPED, "explicit_adams", n_steps=8, max_order=13)
    with pytest.raises(UnsupportedOption, match="'dopri5' has no option max_order"):
        b.solve(WARPED, "dopri5", max_order=3)


def test_diffrax_refuses_with_the_reason():
    b = backend_or_skip("diffrax")
    with pytest.raises(UnsupportedOption, match="one-step methods of a fixed order"):
        b.solve(WARPED, "Kvaerno5", max_order=3)


def test_sweep_confirms_each_bdf_order_and_catches_an_ignored_option(monkeypatch):
    rec = max_order_sweep(None, "bdf")
    assert rec.verdict == "pass", rec.message
    assert [r["value"] for r in rec.details["rows"]] == [1, 2, 3, 4, 5]
    for row in rec.details["rows"]:
        assert abs(row["slope"] - row["value"]) < 0.5, row
    # planted: the reference backend drops max_order silently (bdf then runs at orders up to 5)
    from odeverify.backends.reference import ReferenceBackend

    solve = ReferenceBackend._solve

    def dropping(self, problem, method, y0, options, dtype, device):
        options.pop("max_order", None)
        return solve(self, problem, method, y0, options, dtype, device)

    monkeypatch.setattr(ReferenceBackend, "_solve", dropping)
    rec = max_order_sweep(None, "bdf", values=(1, 2))
    assert rec.verdict == "fail" and "wrong for 1, 2" in rec.message, rec.message


def test_sweep_bad_input_and_not_applicable():
    with pytest.raises(ValueError, match=r"values=\(0, 6\), but reference method 'bdf' takes max_order in 1 .. 5"):
        max_order_sweep(None, "bdf", values=(0, 6))
    assert max_order_sweep(None, "dopri5").verdict == "skip"


def test_torchdiffeq_adams_max_order_1_fails_in_the_library():
    """A documented deviation (expected_failures.toml): torchdiffeq accepts max_order=1 and then
    indexes an empty history deque."""
    backend_or_skip("torchdiffeq")
    rec = max_order_sweep(None, "explicit_adams", backend="torchdiffeq", values=(1, 4))
    assert rec.verdict == "fail" and "IndexError" in rec.message, rec.message
    assert rec.details["rows"][1]["verdict"] == "pass"  # max_order 4: Adams-Bashforth 3, order 3
    assert expectations.apply(rec).verdict == "deviation"  # the entry is not stale
