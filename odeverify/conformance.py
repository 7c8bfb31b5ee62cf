"""The conformance run behind ``odeverify check``: every applicable property for every method
of one backend, as records (failures inside a property become ``error`` records)."""
from __future__ import annotations

from collections.abc import Callable, Iterable

from . import backends, expectations
from .backends import Backend, MethodInfo, UnsupportedOption
from .problems import PROBLEMS
from .properties import (
    backend_agreement,
    batch_behaviour,
    precision_agreement,
    reference_accuracy,
    convergence_order,
    dense_output_order,
    embedded_estimate_bound,
    tolerance_proportionality,
)
from .records import Record
from .tableaus import TABLEAUS, theory

#: default problems: nonlinear, time-dependent, with closed forms (see problems/generated.py)
ORDER_PROBLEMS = ("warped_oscillatory", "warped_fast", "harmonic", "warped_real")
QUICK_ORDER_PROBLEMS = ("warped_oscillatory", "warped_fast")
#: tried, in order, when a method cannot take the problem above (a split-state symplectic
#: method needs a separable field of even dimension)
FALLBACK_PROBLEMS = ("harmonic", "kepler")
DENSE_PROBLEM = "warped_oscillatory"
TOLERANCE_PROBLEM = "warped_oscillatory"
AGREEMENT_PROBLEM = "warped_oscillatory"
#: problems with published reference values (Bari test set, Hairer et al., DETEST)
PUBLISHED_PROBLEMS = ("pleiades", "arenstorf", "detest_d3")
QUICK_PUBLISHED_PROBLEMS = ("pleiades",)


def algebraic_order(info: MethodInfo, backend: str = "reference") -> Record:
    """The shared tableau's orders proven by the rooted-tree conditions, and the backend's
    claimed order equal to the proven one."""
    common = dict(property="algebraic_order", method=info.name, problem="-", backend=backend,
                  expected=float(info.order))
    if info.tableau is None:
        return Record(measured=None, verdict="skip", message="no reference tableau shares this method's"
                      " coefficients", **common)
    tab = TABLEAUS.get(info.tableau)
    try:
        report = theory.verify_tableau(tab)
    except theory.OrderConditionError as exc:
        return Record(measured=None, verdict="fail", message=str(exc), **common)
    if tab.order != info.order:
        return Record(measured=float(tab.order), verdict="fail",
                      message=f"{backend} claims order {info.order}, but its tableau {tab.name!r} has order"
                              f" {tab.order}", **common)
    return Record(measured=float(tab.order), verdict="pass", details={"tableau": tab.name, "report": str(report)},
                  **common)


def _safe(fn: Callable[..., Record], *args, label: str = "reference", **kwargs) -> Record:
    """A property that raises becomes an ``error`` record, never a crash of the run. A
    method that cannot take the problem (``UnsupportedOption``) is retried on
    :data:`FALLBACK_PROBLEMS`, and recorded as not applicable if none fits."""
    try:
        return fn(*args, **kwargs)
    except UnsupportedOption as exc:
        for name in FALLBACK_PROBLEMS:
            try:
                return fn(PROBLEMS.get(name), *args[1:], **kwargs)
            except UnsupportedOption:
                continue
        return Record(property=getattr(fn, "__name__", "property"), method=str(args[1]),
                      problem=getattr(args[0], "name", "-"), measured=None, expected=None, verdict="skip",
                      message=f"not applicable: {exc}", backend=label)
    except Exception as exc:  # noqa: BLE001 - the point is to record any failure
        name = getattr(fn, "__name__", "property")
        method = args[1] if len(args) > 1 else kwargs.get("method", "?")
        problem = getattr(args[0], "name", "-") if args else "-"
        return Record(property=name, method=str(method), problem=str(problem), measured=None, expected=None,
                      verdict="error", status="failed", message=f"{type(exc).__name__}: {exc}", backend=label,
                      library=kwargs.get("library", "numpy"))


def _methods(b: Backend, methods: str | Iterable[str] | None) -> list[MethodInfo]:
    caps = b.capabilities()
    if methods is None:
        return list(caps.methods.values())
    names = [m.strip() for m in methods.split(",") if m.strip()] if isinstance(methods, str) else list(methods)
    return [caps.method(m, b.name) for m in names]


def run_conformance(*, backend: str = "reference", library: str = "numpy", quick: bool = False,
                    methods: str | Iterable[str] | None = None,
                    progress: Callable[[str], None] | None = None) -> list[Record]:
    """Records of every applicable property for every method (or ``methods``) of ``backend``."""
    if backend == "reference" and library != "numpy":
        backend = f"reference-{library}"
    b = backends.get(backend)
    infos = _methods(b, methods)  # unknown names fail early with the list of choices
    if not b.available():
        return [Record(property="available", method="*", problem="-", measured=None, expected=None,
                       verdict="error", status="unavailable", backend=b.name,
                       message=f"{b.name} is not installed: {b.install_hint}")]
    caps = b.capabilities()
    is_reference = b.name.startswith("reference")
    lib = b.library if is_reference else "numpy"
    kw = dict(backend="reference", library=lib) if is_reference else dict(backend=b.name)
    records: list[Record] = []
    order_problems = QUICK_ORDER_PROBLEMS if quick else ORDER_PROBLEMS
    for info in infos:
        m = info.name
        if progress:
            progress(m)
        if info.tableau is not None:
            records.append(algebraic_order(info, b.name))
        if info.fixed:
            for pname in order_problems:
                records.append(_safe(convergence_order, PROBLEMS.get(pname), m, label=b.name, **kw))
            if info.dense and info.dense_order is not None:
                records.append(_safe(dense_output_order, PROBLEMS.get(DENSE_PROBLEM), m, label=b.name, **kw))
            if info.tableau is not None and not is_reference:
                records.append(_safe(backend_agreement, PROBLEMS.get(AGREEMENT_PROBLEM), m, label=b.name,
                                     backend=b.name))
        if info.adaptive:
            if is_reference:
                records.append(_safe(embedded_estimate_bound, PROBLEMS.get(DENSE_PROBLEM), m, label=b.name,
                                     library=lib))
            records.append(_safe(tolerance_proportionality, PROBLEMS.get(TOLERANCE_PROBLEM), m, label=b.name,
                                 **kw))
            records.append(_safe(batch_behaviour, PROBLEMS.get(TOLERANCE_PROBLEM), m, label=b.name, **kw))
            if not is_reference:
                for pname in QUICK_PUBLISHED_PROBLEMS if quick else PUBLISHED_PROBLEMS:
                    records.append(_safe(reference_accuracy, PROBLEMS.get(pname), m, label=b.name, **kw))
        if "float32" in caps.dtypes:
            fixed_kw = {} if info.adaptive else {"n_steps": 64}
            records.append(_safe(precision_agreement, PROBLEMS.get(TOLERANCE_PROBLEM), m, label=b.name, **kw,
                                 **fixed_kw))
    return [expectations.apply(r) for r in records]
