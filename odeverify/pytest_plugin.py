"""pytest plugin (entry point ``pytest11``): odeverify's conformance and explore runs as test
items in any test suite, against an installed odeverify, with no clone of its repository.

- ``pytest --odeverify-backend NAME`` (repeatable or comma-separated): one test per method of
  the backend, failing with the records that failed (``--odeverify-quick`` for the quick
  profile, ``--odeverify-gradients`` for the gradient modes instead, ``--odeverify-sde`` for
  its SDE methods, ``check --sde``; ``--odeverify-family NAME`` for any check family
  (``check --NAME``: ``sde``, ``flows``, ``cde``, ``events``, ``irregular``, plug-ins; one test
  per method plus one for the records a run makes once), ``--odeverify-flows`` meaning
  ``--odeverify-family flows``);
- ``pytest --odeverify-explore NAME``: one test per explore property that applies to the
  backend, failing with the shrunk counterexample and its one-line reproduction
  (``--odeverify-examples N``, ``--odeverify-budget SECONDS``, ``--odeverify-seed S``; the
  example database lives in ``.odeverify/explore`` under the working directory).

A known deviation (an entry of ``expected_failures.toml``) never fails a test. Nothing is
imported from odeverify until one of these options is given, so the plugin costs nothing in
other test runs.
"""
from __future__ import annotations

from typing import Any

import pytest


def pytest_addoption(parser: Any) -> None:
    group = parser.getgroup("odeverify", "odeverify conformance and property search")
    group.addoption("--odeverify-backend", action="append", default=[], metavar="NAME",
                    help="run odeverify's conformance checks on this backend as tests (repeatable)")
    group.addoption("--odeverify-quick", action="store_true", help="with --odeverify-backend: the quick profile")
    group.addoption("--odeverify-gradients", action="store_true",
                    help="with --odeverify-backend: grade the gradient modes instead of the solvers")
    group.addoption("--odeverify-sde", action="store_true",
                    help="with --odeverify-backend: grade the SDE methods instead of the ODE solvers")
    group.addoption("--odeverify-flows", action="store_true",
                    help="with --odeverify-backend: grade continuous normalizing flows (check --flows) instead")
    group.addoption("--odeverify-family", default=None, metavar="NAME",
                    help="with --odeverify-backend: grade this check family (check --NAME: sde, flows, cde, events,"
                         " irregular) instead")
    group.addoption("--odeverify-explore", action="append", default=[], metavar="NAME",
                    help="search generated problems for counterexamples against this backend (repeatable)")
    group.addoption("--odeverify-examples", type=int, default=10, help="explore: examples per property (default 10)")
    group.addoption("--odeverify-budget", type=float, default=None, help="explore: seconds per property")
    group.addoption("--odeverify-seed", type=int, default=None, help="explore: hypothesis seed")


def _names(values: list[str]) -> list[str]:
    return [n.strip() for v in values for n in v.split(",") if n.strip()]


class ConformanceItem(pytest.Item):
    def __init__(self, *, backend: str, method: str, quick: bool, gradients: bool, family: str | None = None,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.backend, self.method, self.quick, self.gradients = backend, method, quick, gradients
        self.family = family

    def runtest(self) -> None:
        from .conformance import run_conformance, run_gradient_conformance

        if self.family is not None:
            from .families import FAMILIES

            fam = FAMILIES.get(self.family)
            if self.method == "*":
                records = fam.run(backend=self.backend, quick=self.quick)
            else:
                records = fam.run_units(backend=self.backend, quick=self.quick, units=[self.method])
        elif self.gradients:
            records = run_gradient_conformance(self.backend, self.quick,
                                               modes=None if self.method == "*" else [self.method])
        else:
            records = run_conformance(backend=self.backend, quick=self.quick,
                                      methods=None if self.method == "*" else [self.method])
        unavailable = [r for r in records if r.verdict == "unavailable" or r.status == "unavailable"]
        if unavailable:
            pytest.skip(unavailable[0].message)
        bad = [r for r in records if r.verdict in ("fail", "error")]
        if bad:
            raise AssertionError("\n".join(r.describe() for r in bad))

    def reportinfo(self) -> tuple[str, int, str]:
        return f"odeverify:{self.backend}", 0, self.name


class ExploreItem(pytest.Item):
    def __init__(self, *, backend: str, prop: str, examples: int, budget: float | None, seed: int | None,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.backend, self.prop, self.examples, self.budget, self.seed = backend, prop, examples, budget, seed

    def runtest(self) -> None:
        from .explore import explore

        result = explore(self.backend, properties=[self.prop], examples=self.examples, budget=self.budget,
                         seed=self.seed, log=lambda s: None)
        if result.findings:
            raise AssertionError("\n\n".join(f.describe() for f in result.findings))
        if self.prop in result.not_applicable:
            pytest.skip(result.not_applicable[self.prop])

    def reportinfo(self) -> tuple[str, int, str]:
        return f"odeverify-explore:{self.backend}", 0, self.name


def pytest_collection_modifyitems(session: Any, config: Any, items: list) -> None:
    backends_ = _names(config.getoption("odeverify_backend"))
    explores = _names(config.getoption("odeverify_explore"))
    if not (backends_ or explores):
        return
    from . import backends
    from .explore import EXPLORATIONS
    from .families import FAMILIES

    quick, gradients = config.getoption("odeverify_quick"), config.getoption("odeverify_gradients")
    chosen = [n for n, on in (("sde", config.getoption("odeverify_sde")), ("flows", config.getoption("odeverify_flows")),
                              (config.getoption("odeverify_family"), True)) if n and on]
    if len(set(chosen)) > 1 or (chosen and gradients):
        raise pytest.UsageError(f"odeverify: families {sorted(set(chosen))}{' and --odeverify-gradients' if gradients else ''}"
                                "; a run grades one family at a time")
    family = FAMILIES.get(chosen[0]) if chosen else None  # an unknown name raises, naming the choices
    for name in backends_:
        b = backends.get(name)
        fam = None if family is None else family.name
        if not b.available():
            items.append(ConformanceItem.from_parent(session, name=f"odeverify[{name}]", backend=name, method="*",
                                                     quick=quick, gradients=gradients, family=fam))
            continue
        caps = b.capabilities()
        if family is not None:
            what = family.default_units(b.name, quick)
        else:
            what = caps.gradient_modes if gradients else [m.name for m in caps.methods.values()]
        for m in what:
            items.append(ConformanceItem.from_parent(session, name=f"odeverify[{name}-{m}]", backend=name, method=m,
                                                     quick=quick, gradients=gradients, family=fam))
    for name in explores:
        b = backends.get(name)
        caps = b.capabilities() if b.available() else None
        for prop, expl in EXPLORATIONS.items():  # the families' explorations are registered on import
            infos = [] if caps is None else list(expl.method_table(b).values())
            if b.available() and not any(expl.applies(i, b.name) for i in infos):
                continue
            items.append(ExploreItem.from_parent(session, name=f"odeverify-explore[{name}-{prop}]", backend=name,
                                                 prop=prop, examples=config.getoption("odeverify_examples"),
                                                 budget=config.getoption("odeverify_budget"),
                                                 seed=config.getoption("odeverify_seed")))
