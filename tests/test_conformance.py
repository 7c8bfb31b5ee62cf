"""`odeverify check` for every backend: passes, or lists documented deviations."""
from __future__ import annotations

import pytest

from odeverify import backends, conformance
from odeverify.conformance import run_conformance

#: eager JAX costs one dispatch per array operation: its full run is behind the slow marker
SLOW = {"reference-jax", "reference-array_api_strict"}


def _params():
    out = []
    for name in backends.names():
        marks = [pytest.mark.slow] if name in SLOW else []
        out.append(pytest.param(name, marks=marks, id=name))
    return out


#: the reference on PyTorch runs its implicit methods with a Newton solve per stage and an
#: autodiff Jacobian (~100 s of the quick run): by default they are covered by
#: test_order.py::test_order_on_torch and test_implicit.py's cross-library agreement, and
#: their full conformance run here is behind the slow marker
TORCH_IMPLICIT_SLOW = {"reference-torch"}


def _implicit(b) -> set[str]:
    return {m for m, info in b.capabilities().methods.items() if info.implicit}


@pytest.mark.parametrize("name", _params())
def test_check_passes_or_lists_documented_deviations(name):
    b = backends.get(name)
    if not b.available():
        pytest.skip(f"{name} is not installed: {b.install_hint}")
    if not b.capabilities().methods:
        pytest.skip(f"{name} has no ODE methods (its SDE methods: tests/test_sde_conformance.py)")
    skip = _implicit(b) if name in TORCH_IMPLICIT_SLOW else set()
    _passes_or_lists_deviations(b, [m for m in b.capabilities().methods if m not in skip])


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(TORCH_IMPLICIT_SLOW))
def test_implicit_methods_pass_or_list_documented_deviations(name):
    b = backends.get(name)
    if not b.available():
        pytest.skip(f"{name} is not installed: {b.install_hint}")
    _passes_or_lists_deviations(b, sorted(_implicit(b)))


def _passes_or_lists_deviations(b, methods_run: list[str]) -> None:
    # the Bari problems at a tight tolerance (stiff_precision: ~30 s of a quick run, mostly diffrax
    # compilations) are left to tests/test_conformance_stiff.py (its full runs behind -m slow)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(conformance, "TIGHT_PROBLEMS", ())
        records = run_conformance(backend=b.name, quick=True, methods=methods_run)
    assert records, "the run produced no records"
    bad = [r.describe() for r in records if r.verdict in ("fail", "error")]
    assert not bad, "\n".join(bad)
    # every method run was exercised by at least one conclusive property
    methods = set(methods_run)
    confirmed = {r.method for r in records if r.verdict in ("pass", "deviation") and r.property != "algebraic_order"}
    assert methods <= confirmed | {r.method for r in records if r.verdict == "skip"}, methods - confirmed


def test_a_fallback_problem_that_does_not_fit_is_not_applicable_never_a_crash():
    """A method refusing the problem is retried on the fallback problems; a fallback that the
    property cannot take either (here: no published reference) makes it 'not applicable',
    and any other exception becomes an error record — the run goes on."""
    from odeverify import conformance
    from odeverify.backends import UnsupportedOption
    from odeverify.problems import PROBLEMS

    def needs_split(problem, method, **kw):
        if problem.name not in conformance.FALLBACK_PROBLEMS:
            raise UnsupportedOption("method m needs an explicit/implicit split")
        raise ValueError(f"problem {problem.name!r} has no published reference value")

    rec = conformance._safe(needs_split, PROBLEMS.get("pleiades"), "m", label="x")
    assert rec.verdict == "skip" and "needs an explicit/implicit split" in rec.message

    def broken(problem, method, **kw):
        raise RuntimeError("boom")

    rec = conformance._safe(broken, PROBLEMS.get("pleiades"), "m", label="x")
    assert rec.verdict == "error" and "RuntimeError: boom" in rec.message
