"""`odeverify check` for every backend: passes, or lists documented deviations."""
from __future__ import annotations

import pytest

from odeverify import backends
from odeverify.conformance import run_conformance

#: eager JAX costs one dispatch per array operation: its full run is behind the slow marker
SLOW = {"reference-jax", "reference-array_api_strict"}


def _params():
    out = []
    for name in backends.names():
        marks = [pytest.mark.slow] if name in SLOW else []
        out.append(pytest.param(name, marks=marks, id=name))
    return out


@pytest.mark.parametrize("name", _params())
def test_check_passes_or_lists_documented_deviations(name):
    b = backends.get(name)
    if not b.available():
        pytest.skip(f"{name} is not installed: {b.install_hint}")
    records = run_conformance(backend=name, quick=True)
    assert records, "the run produced no records"
    bad = [r.describe() for r in records if r.verdict in ("fail", "error")]
    assert not bad, "\n".join(bad)
    # every method of the backend was exercised by at least one conclusive property
    methods = {m for m in b.capabilities().methods}
    confirmed = {r.method for r in records if r.verdict in ("pass", "deviation") and r.property != "algebraic_order"}
    assert methods <= confirmed | {r.method for r in records if r.verdict == "skip"}, methods - confirmed
