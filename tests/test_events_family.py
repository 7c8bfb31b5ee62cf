"""The events check family (issue 12): registered, a run on the reference, explore's cases."""
from __future__ import annotations

import json

import pytest

from odeverify import explore
from odeverify.families import FAMILIES
from odeverify.families.events import run_event_conformance, validate_event_method
from odeverify.problems.events import event_from_spec
from odeverify.properties.events import aligned_horizon


def test_family_is_registered_with_its_properties():
    fam = FAMILIES.get("events")
    assert {"event_count", "event_time_order", "event_gradient"} <= set(fam.properties)
    assert fam.default_units("reference", True) == ["dopri5", "(event gradients)"]
    with pytest.raises(ValueError, match="dopri"):
        validate_event_method("reference", "dopri")


@pytest.mark.slow
def test_reference_run_of_one_method_passes():
    # bosh3 at its count tolerance doubled the first restart's event while the IFT correction's
    # value (an ulp of t*) shifted the restart state back across the line; the correction now
    # carries only the derivative
    records = run_event_conformance(backend="reference", methods="bosh3", shared=False, quick=True)
    props = {r.property for r in records}
    assert {"event_count", "event_time_order"} <= props
    bad = [r.describe() for r in records if r.verdict not in ("pass", "skip")]
    assert not bad, bad
    assert sum(r.verdict == "pass" for r in records) >= 10


def test_explore_builds_event_specs_and_replays_them():
    spec = {"kind": "event_plane", "params": {"angle": -3.0, "decay": 0.0, "direction": -1, "horizon": 5.0,
                                              "offset": 0.0, "omega": 1.0, "radius": 1.0, "restart": False,
                                              "terminal": False}}
    ep = explore.problem_of(json.dumps(spec))
    assert ep.spec == event_from_spec(spec).spec
    # the case explore found: the only crossing at 0.99 of the span left no room for the aligned
    # horizon before it (T < t_1 and an IndexError); T must lie past t_1
    t1 = ep.exact_events().times[0]
    assert aligned_horizon(ep, 16) > t1
    for name in ("event_count", "event_time_order", "event_gradient"):
        assert explore.EXPLORATIONS.get(name).family == "events"
