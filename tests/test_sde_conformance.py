"""`odeverify check --sde` for every backend with SDE methods: passes, or lists documented
deviations; and every SDE entry of expected_failures.toml still excuses a failing record."""
from __future__ import annotations

import pytest

from odeverify import backends, expectations
from odeverify.conformance import run_sde_conformance
from odeverify.problems.sde import SDE_PROBLEMS

#: the default run grades a few methods per backend (the full runs are slow: diffrax compiles
#: every method at every step count, ~10 minutes for its quick run on 2 cores)
DEFAULT_METHODS = {"reference": ["heun", "reversible_heun"], "torchsde": ["euler", "milstein"]}


def _params():
    out = []
    for name in backends.names():
        if name.startswith("reference-"):
            continue  # the same code as the reference (tests/test_sde_properties.py runs it on torch)
        out.append(pytest.param(name, False, id=f"{name}-default"))
        out.append(pytest.param(name, True, marks=pytest.mark.slow, id=f"{name}-all"))
    return out


@pytest.mark.parametrize("name, every", _params())
def test_check_sde_passes_or_lists_documented_deviations(name, every):
    b = backends.get(name)
    if not b.available():
        pytest.skip(f"{name} is not installed: {b.install_hint}")
    caps = b.capabilities()
    if not caps.sde_methods:
        pytest.skip(f"{name} has no SDE methods")
    if not every and name not in DEFAULT_METHODS:
        pytest.skip(f"{name}'s SDE conformance is slow-marked (compilation per method and step count)")
    methods = None if every else DEFAULT_METHODS[name]
    records = run_sde_conformance(backend=name, quick=True, methods=methods)
    assert records
    bad = [r for r in records if r.verdict in ("fail", "error")]
    assert not bad, "\n".join(r.describe() for r in bad)
    assert {r.property for r in records} >= {"sde_strong_order", "sde_weak_order"}


def _target(e):
    """The one record an SDE entry without a shrunk case is about (where it was measured)."""
    from odeverify.properties.sde import sde_pathwise_agreement, sde_strong_order, sde_weak_order
    from odeverify.properties.sde_gradients import sde_gradient_accuracy

    key = (e.property, e.backend, e.method, e.problem)
    if key == ("sde_pathwise_agreement", "torchsde", "euler_heun", "*"):
        return lambda: sde_pathwise_agreement(SDE_PROBLEMS.get("kp_additive"), "euler_heun", backend="torchsde",
                                              reference="euler_heun")
    if key == ("sde_*_order", "*", "euler", "stiff_quadratic_sciml_*"):
        return lambda: sde_strong_order(SDE_PROBLEMS.get("stiff_quadratic_sciml_ito"), "euler", paths=64)
    if key == ("sde_*_order", "*", "reversible_heun", "stiff_quadratic_sciml_*"):
        return lambda: sde_weak_order(SDE_PROBLEMS.get("stiff_quadratic_sciml_stratonovich"), "reversible_heun",
                                      paths=64)
    if key == ("sde_gradient_accuracy", "torchsde", "euler_heun*", "*"):
        return lambda: sde_gradient_accuracy(SDE_PROBLEMS.get("kp_additive"), "euler_heun", "backprop",
                                             backend="torchsde")
    if key == ("sde_*", "torchsde", "milstein*", "kubo_oscillator*"):
        return lambda: sde_strong_order(SDE_PROBLEMS.get("kubo_oscillator"), "milstein_strat", backend="torchsde",
                                        paths=200)
    return None


SDE_ENTRIES = [e for e in expectations.load()
               if not e.case and (e.property.startswith("sde_") or e.property == "ito_stratonovich_consistency")]


@pytest.mark.parametrize("entry", SDE_ENTRIES, ids=lambda e: f"{e.property}-{e.backend}-{e.method}-{e.problem}")
def test_sde_expected_failures_are_not_stale(entry):
    """Each SDE entry without a shrunk case (those are replayed by tests/test_explore.py) names
    the record it was measured on, and that record still fails without it."""
    target = _target(entry)
    assert target is not None, f"{entry} has no target record here: add one to _target"
    b = backends.get("reference" if entry.backend == "*" else entry.backend)
    if not b.available():
        pytest.skip(f"{b.name} is not installed")
    rec = expectations.apply(target())
    assert rec.verdict == "deviation" and entry.matches(rec), rec.describe()
