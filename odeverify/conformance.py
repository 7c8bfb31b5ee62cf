"""The conformance run behind ``odeverify check``: every property for every solver."""
from __future__ import annotations

from collections.abc import Callable, Iterable

from . import expectations
from .problems import PROBLEMS
from .properties import (
    convergence_order,
    dense_output_order,
    embedded_estimate_bound,
    tolerance_proportionality,
)
from .records import Record
from .solvers import SOLVERS
from .tableaus import TABLEAUS, theory

#: default problems: nonlinear, time-dependent, with closed forms (see problems/generated.py)
ORDER_PROBLEMS = ("warped_oscillatory", "warped_fast", "harmonic", "warped_real")
QUICK_ORDER_PROBLEMS = ("warped_oscillatory", "warped_fast")
DENSE_PROBLEM = "warped_oscillatory"
TOLERANCE_PROBLEM = "warped_oscillatory"


def algebraic_order(method: str) -> Record:
    """The tableau's claimed orders proven by the rooted-tree order conditions."""
    tab = TABLEAUS.get(method)
    try:
        report = theory.verify_tableau(tab)
    except theory.OrderConditionError as exc:
        return Record(property="algebraic_order", method=method, problem="-", measured=None,
                      expected=float(tab.order), verdict="fail", message=str(exc))
    return Record(property="algebraic_order", method=method, problem="-", measured=float(tab.order),
                  expected=float(tab.order), verdict="pass", details={"report": str(report)})


def _safe(fn: Callable[..., Record], *args, **kwargs) -> Record:
    """A property that raises becomes an ``error`` record, never a crash of the run."""
    try:
        return fn(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001 - the point is to record any failure
        name = getattr(fn, "__name__", "property")
        method = args[1] if len(args) > 1 else kwargs.get("method", "?")
        problem = getattr(args[0], "name", "-") if args else "-"
        return Record(property=name, method=str(method), problem=str(problem), measured=None, expected=None,
                      verdict="error", status="failed", message=f"{type(exc).__name__}: {exc}",
                      library=kwargs.get("library", "numpy"))


def run_conformance(*, library: str = "numpy", quick: bool = False, methods: str | Iterable[str] | None = None,
                    progress: Callable[[str], None] | None = None) -> list[Record]:
    if methods is None:
        names = SOLVERS.names()
    elif isinstance(methods, str):
        names = [m.strip() for m in methods.split(",") if m.strip()]
    else:
        names = list(methods)
    for m in names:
        SOLVERS.get(m)  # unknown names fail early with the list of choices
    records: list[Record] = []
    order_problems = QUICK_ORDER_PROBLEMS if quick else ORDER_PROBLEMS
    for m in names:
        if progress:
            progress(m)
        solver = SOLVERS.get(m)
        if m in TABLEAUS:
            records.append(algebraic_order(m))
        for pname in order_problems:
            records.append(_safe(convergence_order, PROBLEMS.get(pname), m, library=library))
        records.append(_safe(dense_output_order, PROBLEMS.get(DENSE_PROBLEM), m, library=library))
        if solver.adaptive:
            records.append(_safe(embedded_estimate_bound, PROBLEMS.get(DENSE_PROBLEM), m, library=library))
            records.append(_safe(tolerance_proportionality, PROBLEMS.get(TOLERANCE_PROBLEM), m, library=library))
    return [expectations.apply(r) for r in records]
