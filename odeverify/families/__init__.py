"""Check families: the model families beyond plain ODE solves, each graded by ``odeverify check
--<family>``, resumable from the journal, split into parallel units, in the pytest plugin, in
explore and in the report, through one registry.

A :class:`Family` says how a run is made: ``run(*, backend, quick, methods, shared, progress,
on_record, on_case, resume) -> list[Record]`` (a :func:`odeverify.conformance._streaming` run),
the methods it runs on a backend by default, how a method name is validated, and the name of the
unit that makes the records a run makes once (``shared_unit``: the trace estimators of the flows,
the Brownian tree of the SDEs, ...). Everything else (the CLI flag and its help, the units, the
journal's run description, the report's section) is derived from it, so a new family is one module
that calls :func:`register_family`: ``sde`` and ``flows`` (here, over
:mod:`odeverify.conformance`), ``cde`` (:mod:`.cde`), ``events`` (:mod:`.events`) and
``irregular`` (:mod:`.irregular`).

This package sits between the report and ``conformance``/``explore`` in the import layers: it
uses both (family modules register their explorations in ``explore.EXPLORATIONS``), and the CLI,
the pytest plugin and the report import it.
"""
from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .._registry import Registry
from ..records import Record


@dataclass(frozen=True)
class Family:
    """One check family (see the module docstring)."""

    name: str  #: the CLI flag ``--<name>``, the report's kind and section id
    title: str  #: the report section's title
    help: str  #: the CLI flag's help: what a run grades
    #: ``run(*, backend, quick, methods, shared, progress, on_record, on_case, resume)``
    run: Callable[..., list[Record]]
    #: ``methods(backend_name, quick)``: the method names a run takes by default
    methods: Callable[[str, bool], list[str]]
    #: ``validate(backend_name, method)``: raises ValueError naming an unknown method
    validate: Callable[[str, str], None]
    #: the unit that makes the records made once per run, or None
    shared_unit: str | None = None
    #: ``shared_on(backend_name)``: whether a run on that backend has the shared unit (default: always)
    shared_on: Callable[[str], bool] | None = None
    properties: tuple[str, ...] = ()  #: the property names of its records (the report groups by them)
    doc: str = ""  #: the documentation page
    unit_noun: str = "methods"  #: what a unit is, for the progress bar

    def __post_init__(self) -> None:
        if not self.name.isidentifier() or self.name != self.name.lower():
            raise ValueError(f"Family name={self.name!r}, but it must be a lower-case identifier (it is a CLI flag)")
        for attr in ("run", "methods", "validate"):
            if not callable(getattr(self, attr)):
                raise TypeError(f"Family {self.name!r}: {attr}={getattr(self, attr)!r} must be callable")

    def default_units(self, backend: str, quick: bool) -> list[str]:
        """The units of a run that names no methods: every default method, then the shared unit."""
        units = list(self.methods(backend, quick))
        if self.shared_unit is not None and (self.shared_on is None or self.shared_on(backend)):
            units.append(self.shared_unit)
        return units

    def run_units(self, *, backend: str, quick: bool, units: Iterable[str], **hooks: Any) -> list[Record]:
        """A run of ``units`` (method names, and maybe the shared unit) in this process."""
        units = list(units)
        methods = [u for u in units if u != self.shared_unit]
        return self.run(backend=backend, quick=quick, methods=methods,
                        shared=self.shared_unit is not None and self.shared_unit in units, **hooks)


FAMILIES: Registry[Family] = Registry("check family")


def register_family(family: Family) -> Family:
    """Add ``family`` to :data:`FAMILIES` (a duplicate name raises)."""
    if not isinstance(family, Family):
        raise TypeError(f"register_family takes a Family, got {type(family).__name__}")
    return FAMILIES.register(family.name, family)


def family_names() -> list[str]:
    """The registered families, in registration order."""
    return FAMILIES.names()


# ----------------------------------------------------------------------------- parallel units
def run_unit(*, family: str, backend: str, quick: bool = False, unit: str,
             resume: Mapping[str, Record] | None = None) -> dict[str, Any]:
    """One unit of a family's run (a method, or the shared unit) as a unit of
    :mod:`odeverify.parallel`: ``{"records": [...], "cases": [(key, record), ...]}``; cases in
    ``resume`` are not run again."""
    from ..parallel import stream_case

    cases: list[tuple[str, Record]] = []

    def finished(r: Record, key: str) -> None:
        if not stream_case(key, r):  # to the parent at once, in a process pool
            cases.append((key, r))

    fam = FAMILIES.get(family)
    records = fam.run_units(backend=backend, quick=quick, units=[unit], on_record=finished,
                            resume=dict(resume or {}))
    return {"records": records, "cases": cases}


def units(*, family: str, backend: str, quick: bool = False, names: Iterable[str],
          resume: Mapping[str, Record] | None = None) -> list:
    """The :class:`odeverify.parallel.Unit` s of ``check --<family>``: one per name."""
    from ..parallel import Unit

    return [Unit(label=f"{backend}: {n} {family}", target="odeverify.families:run_unit",
                 kwargs=dict(family=family, backend=backend, quick=quick, unit=n, resume=dict(resume or {})),
                 backend=backend, method=n, property=family) for n in names]


# ----------------------------------------------------------------------------- the built-in families
def _sde_methods(backend: str, quick: bool) -> list[str]:
    from .. import backends

    b = backends.get(backend)
    return list(b.capabilities().sde_methods) if b.available() else []


def _sde_validate(backend: str, method: str) -> None:
    import difflib

    from .. import backends

    b = backends.get(backend)
    known = list(b.capabilities().sde_methods)
    if method not in known:
        close = difflib.get_close_matches(method, known, n=1)
        raise ValueError(f"--methods={method!r}, but {b.name} has no such SDE method; expected some of:"
                         f" {', '.join(known) or '(none)'}" + (f"; did you mean {close[0]!r}?" if close else ""))


def _method_validate(backend: str, method: str) -> None:
    from .. import backends

    b = backends.get(backend)
    b.capabilities().method(method, b.name)  # raises naming the method, with the closest match


def _register_builtin() -> None:
    from .. import conformance as C

    register_family(Family(
        name="sde", title="Stochastic differential equations",
        help="grade the backend's SDE methods instead: strong and weak order with bootstrap confidence intervals"
             " on the same Brownian paths, pathwise agreement with odeverify's reference, reversibility, the"
             " Brownian tree, Itô-Stratonovich consistency, and the SDE gradient modes against pathwise finite"
             " differences (--methods names SDE methods)",
        run=C.run_sde_conformance, methods=_sde_methods, validate=_sde_validate,
        shared_unit=C.SDE_SHARED_UNIT,
        shared_on=lambda backend: backend.startswith("reference") and bool(_sde_methods(backend, False)),
        doc="docs/sde.md"))
    register_family(Family(
        name="flows", title="Continuous normalizing flows",
        help="grade continuous normalizing flows instead: the log-density against closed forms and Liouville's"
             " formula over a tolerance sweep, invertibility, normalisation, Hutchinson's mean and variance"
             " against theory, the log-likelihood gradient of every gradient mode, and the flow map's geometry"
             " (fold step, orientation, augmented ODEs, ResNet-Euler)",
        run=C.run_flow_conformance, methods=C.flow_methods, validate=_method_validate,
        shared_unit=C.FLOW_SHARED_UNIT, doc="docs/flows.md"))


#: the family modules of this package, imported (and so registered) in this order
BUILTIN_MODULES = ("cde", "events", "irregular")

_register_builtin()
for _name in BUILTIN_MODULES:
    importlib.import_module(f"{__name__}.{_name}")
