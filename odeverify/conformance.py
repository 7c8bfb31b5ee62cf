"""The conformance run behind ``odeverify check``: every applicable property for every method
of one backend, as records (failures inside a property become ``error`` records)."""
from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import _xp, backends, expectations
from .backends import Backend, MethodInfo, UnsupportedOption
from .backends.base import is_implicit
from .problems import PROBLEMS, Problem
from .properties.stiffness import TIGHT_PROBLEMS
from .properties import (
    backend_agreement,
    batch_behaviour,
    precision_agreement,
    reference_accuracy,
    stiff_order,
    stiff_precision,
    stiffness_handling,
    convergence_order,
    dense_output_order,
    embedded_estimate_bound,
    tolerance_proportionality,
)
from .journal import case_key
from .records import Record, unavailable_record
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
#: two implementations of an implicit method agree only up to where each stops its Newton
#: iteration (diffrax's fixed-step root tolerance is 1e-10, backends/diffrax_backend.py
#: FIXED_ROOT_TOL), not to round-off: the ulps-per-step bound of backend_agreement for them.
#: A wrong coefficient differs by the truncation error, ~1e-3 at 32 steps (~1e11 ulps/step).
IMPLICIT_AGREEMENT_ULPS = 1e-10 / 2.220446049250313e-16
#: jitted backends whose implicit methods get only the stiff checks in a quick run
QUICK_STIFF_ONLY = ("diffrax",)


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


def _run_case(fn: Callable[..., Record], *args, label: str = "reference", **kwargs) -> Record:
    """A property that raises becomes an ``error`` record, never a crash of the run. A
    method that cannot take the problem (``UnsupportedOption``) is retried on
    :data:`FALLBACK_PROBLEMS`, and recorded as not applicable if none fits."""
    try:
        try:
            return fn(*args, **kwargs)
        except UnsupportedOption as exc:
            # an SDE method its library refuses for this noise type: not applicable (the
            # fallbacks are ODE problems)
            for name in FALLBACK_PROBLEMS if isinstance(args[0] if args else None, Problem) else ():
                try:
                    return fn(PROBLEMS.get(name), *args[1:], **kwargs)
                except (UnsupportedOption, ValueError):
                    # the fallback does not fit either (e.g. it has no published reference for
                    # reference_accuracy): the method is not applicable to this property
                    continue
            refused = exc
    except Exception as exc:  # noqa: BLE001 - the point is to record any failure
        return _error_record(fn, args, kwargs, label, exc)
    return Record(property=getattr(fn, "__name__", "property"), method=str(args[1]),
                  problem=getattr(args[0], "name", "-"), measured=None, expected=None, verdict="skip",
                  message=f"not applicable: {refused}", backend=label)


def _error_record(fn: Callable[..., Record], args: tuple, kwargs: dict, label: str, exc: Exception) -> Record:
    name = getattr(fn, "__name__", "property")
    method = args[1] if len(args) > 1 else kwargs.get("method", "?")
    problem = getattr(args[0], "name", "-") if args else "-"
    return Record(property=name, method=str(method), problem=str(problem), measured=None, expected=None,
                  verdict="error", status="failed", message=f"{type(exc).__name__}: {exc}", backend=label,
                  library=kwargs.get("library", "numpy"))


# ----------------------------------------------------------------------------- streaming, resumption
@dataclass
class CaseHooks:
    """What a run does around each case (one property on one method and problem).

    ``on_case(property, method, problem)`` is called before a case runs, ``on_record(record,
    key)`` when it is finished (expected deviations applied), in order; an exception raised
    there (Ctrl-C) stops the run. Cases whose key is in ``resume`` are not run again: their
    record is used as it is."""

    on_record: Callable[[Record, str], None] | None = None
    on_case: Callable[[str, str, str], None] | None = None
    resume: Mapping[str, Record] = field(default_factory=dict)
    #: the records already handed on, by id (held, so that no id is reused while the run lasts)
    emitted: dict[int, Record] = field(default_factory=dict)

    def emit(self, record: Record, key: str) -> Record:
        record = expectations.apply(record)
        self.emitted[id(record)] = record
        if self.on_record is not None:
            self.on_record(record, key)
        return record


_HOOKS: ContextVar[CaseHooks | None] = ContextVar("odeverify_case_hooks", default=None)


@contextmanager
def case_hooks(on_record: Callable[[Record, str], None] | None = None, *,
               on_case: Callable[[str, str, str], None] | None = None,
               resume: Mapping[str, Record] | None = None) -> Iterator[CaseHooks]:
    """Every conformance case run inside (by :func:`run_conformance` and
    :func:`run_gradient_conformance`, however nested) goes through these :class:`CaseHooks`."""
    hooks = CaseHooks(on_record, on_case, dict(resume or {}))
    token = _HOOKS.set(hooks)
    try:
        yield hooks
    finally:
        _HOOKS.reset(token)


def _streaming(run: Callable[..., list[Record]]) -> Callable[..., list[Record]]:
    """Gives a run the keywords ``on_record``, ``on_case`` and ``resume`` of :func:`case_hooks`
    (without them, a run inherits the hooks of its caller)."""

    @functools.wraps(run)
    def wrapper(*args: Any, on_record: Callable[[Record, str], None] | None = None,
                on_case: Callable[[str, str, str], None] | None = None,
                resume: Mapping[str, Record] | None = None, **kwargs: Any) -> list[Record]:
        if on_record is None and on_case is None and resume is None:
            return run(*args, **kwargs)
        with case_hooks(on_record, on_case=on_case, resume=resume):
            return run(*args, **kwargs)

    return wrapper


def _case_key(fn: Callable[..., Record], args: tuple, kwargs: dict, label: str) -> str:
    """What a case computes: backend, property, method, problem, further arguments and options
    (an option that is not a plain value by its type: a loss or oracle follows from the problem)."""
    method = args[1] if len(args) > 1 else kwargs.get("method", "?")
    plain = (str, int, float, bool, type(None))
    return case_key(backend=label, property=getattr(fn, "__name__", "property"),
                    method=str(getattr(method, "name", method)),
                    problem=str(getattr(args[0], "name", "-") if args else "-"), args=[str(a) for a in args[2:]],
                    options={k: v if isinstance(v, plain) else type(v).__name__ for k, v in kwargs.items()})


def _record_key(r: Record) -> str:
    """The key of a record made outside :func:`_safe` (cheap and deterministic: recomputed)."""
    return case_key(backend=r.backend, property=r.property, method=r.method, problem=r.problem, library=r.library,
                    dtype=r.dtype, made="outside a case")


def _safe(fn: Callable[..., Record], *args, label: str = "reference", **kwargs) -> Record:
    """:func:`_run_case` under the run's :class:`CaseHooks`: a finished case is not run again."""
    hooks = _HOOKS.get()
    if hooks is None:
        return _run_case(fn, *args, label=label, **kwargs)
    key = _case_key(fn, args, kwargs, label)
    done = hooks.resume.get(key)
    if done is not None:
        hooks.emitted[id(done)] = done
        return done
    if hooks.on_case is not None:
        method = args[1] if len(args) > 1 else kwargs.get("method", "?")
        hooks.on_case(getattr(fn, "__name__", "property"), str(method),
                      str(getattr(args[0], "name", "-") if args else "-"))
    return hooks.emit(_run_case(fn, *args, label=label, **kwargs), key)


class _Sink(list):
    """A run's record list: a record appended that did not come through :func:`_safe` goes
    through the hooks here."""

    def append(self, r: Record) -> None:
        hooks = _HOOKS.get()
        if hooks is not None and id(r) not in hooks.emitted:
            key = _record_key(r)
            done = hooks.resume.get(key)
            if done is not None:
                hooks.emitted[id(done)] = done
                r = done
            else:
                r = hooks.emit(r, key)
        super().append(r)

    def extend(self, rs: Iterable[Record]) -> None:
        for r in rs:
            self.append(r)


def unit_names(names: str | Iterable[str] | None, default: Callable[[], Iterable[str]]) -> list[str]:
    """The methods (or modes) a run names: a comma-separated string or an iterable of names, or
    ``default()`` when it names none (None)."""
    if names is None:
        return list(default())
    if isinstance(names, str):
        return [m.strip() for m in names.split(",") if m.strip()]
    return list(names)


def _methods(b: Backend, methods: str | Iterable[str] | None) -> list[MethodInfo]:
    caps = b.capabilities()
    if methods is None:
        return list(caps.methods.values())
    return [caps.method(m, b.name) for m in unit_names(methods, list)]


@_streaming
def run_conformance(*, backend: str = "reference", library: str = "numpy", quick: bool = False,
                    methods: str | Iterable[str] | None = None,
                    progress: Callable[[str], None] | None = None) -> list[Record]:
    """Records of every applicable property for every method (or ``methods``) of ``backend``.

    ``on_record(record, key)`` streams each record as it is finished, ``on_case(property,
    method, problem)`` names each case as it starts, and cases in ``resume`` (key -> record,
    from a journal) are not run again (:func:`case_hooks`)."""
    if backend == "reference" and library != "numpy":
        backend = f"reference-{library}"
    b = backends.get(backend)
    infos = _methods(b, methods)  # unknown names fail early with the list of choices
    if not b.available():
        return [unavailable_record(b.name, b.install_hint)]
    caps = b.capabilities()
    is_reference = b.name.startswith("reference")
    lib = b.library if is_reference else "numpy"
    kw = dict(backend="reference", library=lib) if is_reference else dict(backend=b.name)
    records: list[Record] = _Sink()
    order_problems = QUICK_ORDER_PROBLEMS if quick else ORDER_PROBLEMS
    for info in infos:
        m = info.name
        if progress:
            progress(m)
        if quick and b.name in QUICK_STIFF_ONLY and is_implicit(info):
            records.extend(_quick_implicit_records(b, info, kw))
            continue
        if info.tableau is not None:
            records.append(algebraic_order(info, b.name))
        if info.fixed:
            for pname in order_problems:
                records.append(_safe(convergence_order, PROBLEMS.get(pname), m, label=b.name, **kw))
            if info.dense and info.dense_order is not None:
                records.append(_safe(dense_output_order, PROBLEMS.get(DENSE_PROBLEM), m, label=b.name, **kw))
            if info.tableau is not None and not is_reference:
                records.append(_safe(backend_agreement, PROBLEMS.get(AGREEMENT_PROBLEM), m, label=b.name,
                                     backend=b.name, **({"bound": IMPLICIT_AGREEMENT_ULPS} if is_implicit(info)
                                                        else {})))
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
        records.extend(_stiff_records(b, info, kw, quick))
        if is_reference:
            records.extend(_work_records(info, lib, b.name))
        if not quick:
            records.extend(_option_records(b, info, kw))
    return [expectations.apply(r) for r in records]


def _option_records(b: Backend, info: MethodInfo, kw: dict) -> list[Record]:
    """A method whose order an option changes (``max_order`` in ``MethodInfo.option_ranges``):
    the order for each value (``properties/options.py``). A fixed-step predictor-corrector
    (torchdiffeq's implicit Adams) iterates its corrector to rtol 1e-13, atol 1e-15, so that the
    order measured is the formula's, not the iteration's."""
    from .properties.options import max_order_sweep

    if not any(name == "max_order" for name, _, _ in info.option_ranges):
        return []
    extra = {"rtol": 1e-13, "atol": 1e-15} if info.fixed and not info.adaptive else {}
    return [_safe(max_order_sweep, None, info.name, label=b.name, **kw, **extra)]


def _work_records(info: MethodInfo, library: str, label: str) -> list[Record]:
    """The reference method's exact work counters against the loop's identities and the recorded
    baseline (``properties/work.py``), one record per case; on another array library than NumPy
    one ``skip`` (the baseline is NumPy's)."""
    from .properties.work import cases, work

    todo = cases(info.name)
    if library != "numpy":
        todo = todo[:1]
    return [_safe(work, c.problem, info.name, n_steps=c.n_steps, rtol=c.rtol, atol=c.atol, jac=c.jac,
                  library=library, label=label) for c in todo]


def _quick_implicit_records(b: Backend, info: MethodInfo, kw: dict) -> list[Record]:
    """A quick run of a jitted backend's implicit method: its tableau's order and the stiff order
    (one compilation); the full set costs 160-200 s per diffrax implicit method (measured,
    ``run_conformance(backend="diffrax", methods="Kvaerno3")`` on 2 shared cores)."""
    out = [algebraic_order(info, b.name)] if info.tableau is not None else []
    out.extend(_stiff_records(b, info, kw, quick=True))
    out.append(Record(property="conformance", method=info.name, problem="-", measured=None, expected=None,
                      verdict="skip", backend=b.name,
                      message="quick run: only the stiff order and HIRES at a tight tolerance of this implicit"
                              " method (each further property compiles again); run without quick for the full set"))
    return out


def _stiff_records(b: Backend, info: MethodInfo, kw: dict, quick: bool) -> list[Record]:
    """Stiffness checks: the order on Prothero-Robinson (implicit methods with fixed steps), the
    digits reached on the Bari problems at a tight tolerance (adaptive implicit methods: HIRES and
    ROBER, HIRES alone in a quick run) and the work against the stiffness ratio (adaptive
    methods; not in a quick run; diffrax compiles once per method for it: the stiffness ratio's
    matrix is a traced argument)."""
    out: list[Record] = []
    if is_implicit(info) and info.fixed:
        out.append(_safe(stiff_order, method=info.name, label=b.name, **kw))
    if is_implicit(info) and info.adaptive:
        for pname in TIGHT_PROBLEMS[:1] if quick else TIGHT_PROBLEMS:
            out.append(_safe(stiff_precision, PROBLEMS.get(pname), info.name, label=b.name, **kw))
    if info.adaptive and not quick:
        out.append(_safe(stiffness_handling, method=info.name, label=b.name, **kw))
    return out


# ----------------------------------------------------------------------------- gradients
#: per backend: (adaptive method, fixed-step method sharing a reference tableau)
GRADIENT_METHODS = {"torchdiffeq": ("dopri5", "rk4"), "diffrax": ("Dopri5", "Heun")}
DEFAULT_GRADIENT_METHODS = ("dopri5", "rk4")
#: a closed form (linear, dissipative: the exact oracle), a nonlinear, time-dependent,
#: oscillatory problem (finite differences of a fine fixed-step DOP853 solve), and the
#: problems where a backsolve adjoint loses the state (:data:`HARD_GRADIENT_PROBLEMS`)
GRADIENT_PROBLEMS = ("linear_real", "warped_oscillatory", "linear_dissipative", "linear_long", "lorenz_short")
QUICK_GRADIENT_PROBLEMS = ("linear_real", "linear_dissipative")
ADJOINT_CONVERGENCE_PROBLEM = "linear_real"
ADJOINT_GAP_PROBLEM = "warped_oscillatory"
GRADIENT_FIXED_STEPS = 16


def _hard_gradient_problems() -> dict:
    """Problems on which solving z backward (backsolve adjoints) amplifies its error like
    exp(|Re λ| T): a gradient built on that reconstruction can be wrong by orders of magnitude,
    and the checks must say so. The linear ones have five components, like linear_real, so a
    jitted backend reuses linear_real's compiled gradients (only the matrix, y0 and times differ).

    - ``linear_dissipative``: z' = A z, spectrum -50, -40, -30, -20, -1 over [0, 1] (closed
      form; the -1 mode keeps the state resolved at t1);
    - ``linear_long``: spectrum -2, -1, -0.5, -0.1 ± 1.5i over a long horizon [0, 20];
    - ``lorenz_short``: the chaotic Lorenz system over [0, 1] (its contracting direction,
      Lyapunov exponent about -14.6, expands backward; finite-difference oracle, reliable on
      this span).

    The last two are graded with a loss at t1 alone (:data:`GRADIENT_LOSS_TIMES`): nothing
    resets the reconstruction on the way back.
    """
    import dataclasses

    from .problems.classic import linear_problem

    lorenz = PROBLEMS.get("lorenz")
    return {
        "linear_dissipative": linear_problem([-50.0, -40.0, -30.0, -20.0, -1.0], seed=0, t_span=(0.0, 1.0),
                                             name="linear_dissipative"),
        "linear_long": linear_problem([-2.0, -1.0, -0.5, complex(-0.1, 1.5), complex(-0.1, -1.5)], seed=0,
                                      t_span=(0.0, 20.0), name="linear_long"),
        "lorenz_short": dataclasses.replace(lorenz, name="lorenz_short", t_span=(0.0, 1.0), references=()),
    }


#: the problems of :func:`_hard_gradient_problems`: graded for accuracy only (an explicit
#: method at 16 fixed steps is outside its stability region there: h |λ| = 3.1 on
#: linear_dissipative, so a fixed-step exactness check would measure the instability)
HARD_GRADIENT_PROBLEMS = ("linear_dissipative", "linear_long", "lorenz_short")
#: loss output times per problem (default_loss(times=...)); 2 unless named here.
#: linear_dissipative keeps 2, as linear_real, so that a jitted backend reuses its compilations
GRADIENT_LOSS_TIMES = {"linear_long": 1, "lorenz_short": 1}
#: algebraically reversible modes: stable only for h λ on a segment of the imaginary axis
#: (Kidger et al. 2021; reversible_stability_region, reversible_use), so on a dissipative
#: problem they are outside it by construction (reversible_heun's adaptive solve of
#: linear_dissipative ran into max_steps); the hard problems are not run for them
REVERSIBLE_GRADIENT_MODES = ("reversible_heun", "mali")


def gradient_problem(name: str):
    """A gradient-conformance problem: a registered one, or one of :func:`_hard_gradient_problems`."""
    hard = _hard_gradient_problems()
    return hard[name] if name in hard else PROBLEMS.get(name)


def _fixed_step_only(b: Backend, mode: str) -> bool:
    if not b.name.startswith("reference"):
        return False
    from .gradients import GRADIENT_MODES

    return mode in GRADIENT_MODES and GRADIENT_MODES.get(mode).fixed_step


@_streaming
def run_gradient_conformance(backend: str = "torchdiffeq", quick: bool = False, *, library: str = "numpy",
                             modes: str | Iterable[str] | None = None,
                             progress: Callable[[str], None] | None = None) -> list[Record]:
    """Every gradient mode of ``backend`` graded against one oracle (``properties.gradients``):
    accuracy of adaptive gradients, round-off exactness of the discrete modes at fixed steps
    and, unless ``quick``, the continuous adjoints' convergence over a tolerance sweep and
    their O(h^p) gap to the discrete gradient. ``backend="reference"`` means the reference
    on PyTorch (NumPy has no automatic differentiation)."""
    from .properties.gradients import (adjoint_convergence, default_loss, discrete_gradient_exactness,
                                       fixed_step_adjoint_gap, gradient_accuracy, gradient_oracle)

    if backend == "reference":
        backend = "reference-torch" if library == "numpy" else f"reference-{library}"
    b = backends.get(backend)
    if not b.available():
        return [unavailable_record(b.name, b.install_hint)]
    caps = b.capabilities()
    if not caps.gradient_modes:
        return [Record(property="gradient_modes", method="*", problem="-", measured=None, expected=None,
                       verdict="skip", backend=b.name, message=f"{b.name} declares no gradient modes")]
    names = unit_names(modes, lambda: caps.gradient_modes)
    for m in names:
        if m not in caps.gradient_modes:
            raise ValueError(f"{b.name} has no gradient mode {m!r}; choices: {', '.join(caps.gradient_modes)}")
    adaptive, fixed = GRADIENT_METHODS.get(b.name, DEFAULT_GRADIENT_METHODS)
    discrete_ref = caps.discrete_gradient_modes[0] if caps.discrete_gradient_modes else None
    opts = {"count_nfev": False}  # work counts are not graded here; diffrax would compile twice
    problems = [gradient_problem(p) for p in (QUICK_GRADIENT_PROBLEMS if quick else GRADIENT_PROBLEMS)]
    cases = {}
    for p in problems:
        loss = default_loss(p, times=GRADIENT_LOSS_TIMES.get(p.name, 2))
        cases[p.name] = (p, loss, gradient_oracle(p, loss))
    records: list[Record] = _Sink()
    for mode in names:
        if progress:
            progress(mode)
        fixed_only = _fixed_step_only(b, mode)
        for p, loss, oracle in cases.values():
            hard = p.name in HARD_GRADIENT_PROBLEMS
            if hard and mode in REVERSIBLE_GRADIENT_MODES:
                continue
            if not fixed_only:
                records.append(_safe(gradient_accuracy, p, adaptive, mode, backend=b.name, loss=loss, oracle=oracle,
                                     label=b.name, **opts))
            if mode in caps.discrete_gradient_modes and not hard:
                records.append(_safe(discrete_gradient_exactness, p, fixed, mode, backend=b.name, loss=loss,
                                     n_steps=GRADIENT_FIXED_STEPS, label=b.name, **opts))
        if quick or mode in caps.discrete_gradient_modes or fixed_only or discrete_ref is None:
            continue
        p, loss, oracle = cases.get(ADJOINT_CONVERGENCE_PROBLEM) or (None, None, None)
        if p is not None:
            records.append(_safe(adjoint_convergence, p, adaptive, mode, backend=b.name, loss=loss, oracle=oracle,
                                 discrete_mode=discrete_ref, label=b.name, **opts))
        gp = PROBLEMS.get(ADJOINT_GAP_PROBLEM)
        records.append(_safe(fixed_step_adjoint_gap, gp, fixed, mode, discrete_ref, backend=b.name,
                             loss=default_loss(gp, times=2), label=b.name, **opts))
    return [expectations.apply(r) for r in records]


# ----------------------------------------------------------------------------- SDEs
#: every registered SDE problem is graded unless a run names fewer; quick runs take these
QUICK_SDE_PROBLEMS = ("gbm_ito", "kp_cubic", "kp_additive", "linear_commuting", "noncommutative")
def _sde_problems(quick: bool) -> list[Any]:
    from .problems.sde import SDE_PROBLEMS

    return [SDE_PROBLEMS.get(n) for n in (QUICK_SDE_PROBLEMS if quick else SDE_PROBLEMS.names())]


#: the unit of a parallel ``check --sde`` that runs the records made once per run
SDE_SHARED_UNIT = "(brownian tree, Itô-Stratonovich)"


@_streaming
def run_sde_conformance(*, backend: str = "reference", quick: bool = False,
                        methods: str | Iterable[str] | None = None, shared: bool | None = None,
                        progress: Callable[[str], None] | None = None) -> list[Record]:
    """Every SDE method of ``backend`` (``Capabilities.sde_methods``) on every SDE problem its
    noise class admits (the problem converted to the method's calculus where it has the
    analytic correction): strong order, weak order, pathwise agreement with odeverify's method
    of the same rule (libraries), reversibility (reversible methods of the reference); and,
    once (``shared``, default: when no methods are named, on the reference), the Brownian
    tree's consistency and the Itô-Stratonovich consistency; and the SDE gradient records of
    each method (:func:`_sde_gradient_records`)."""
    from .properties.sde import (brownian_consistency, ito_stratonovich_consistency, sde_pathwise_agreement,
                                 sde_reversibility, sde_strong_order, sde_weak_order)

    b = backends.get(backend)
    if not b.available():
        return [unavailable_record(b.name, b.install_hint)]
    caps = b.capabilities()
    names = unit_names(methods, lambda: caps.sde_methods)
    for m in names:
        if m not in caps.sde_methods:
            raise ValueError(f"{b.name} has no SDE method {m!r}; choices: {', '.join(caps.sde_methods) or 'none'}")
    records: list[Record] = _Sink()
    if not caps.sde_methods:
        records.append(Record(property="sde_methods", method="*", problem="-", measured=None, expected=None,
                              verdict="skip", backend=b.name, message=f"{b.name} declares no SDE methods"))
        return list(records)
    is_reference = b.name.startswith("reference")
    problems = _sde_problems(quick)
    for m in names:
        info = caps.sde_methods[m]
        if progress:
            progress(m)
        for p in problems:
            if not info.valid_for(p.noise_class):
                continue
            if p.calculus != info.calculus and p.noise_class != "additive":  # additive: one solution
                if p.correction is None:
                    continue
                p = p.as_calculus(info.calculus)
            records.append(_safe(sde_strong_order, p, m, backend=b.name, label=b.name))
            if p.moments is not None or (p.exact is not None and not p.exact_accuracy):
                records.append(_safe(sde_weak_order, p, m, backend=b.name, label=b.name))
            if not is_reference and info.reference:
                records.append(_safe(sde_pathwise_agreement, p, m, backend=b.name, reference=info.reference,
                                     label=b.name))
        if is_reference and info.reversible:
            for p in problems[:2] if quick else problems:
                q = p if p.calculus == info.calculus or p.correction is None else p.as_calculus(info.calculus)
                if q.calculus == info.calculus:
                    records.append(_safe(sde_reversibility, q, m, label=b.name))
    records.extend(_sde_gradient_records(b, names, problems, quick))
    if shared is None:
        shared = methods is None
    if is_reference and shared:
        records.append(_safe(brownian_consistency, label=b.name))
        for p in problems:
            if p.correction is not None:
                pair = ("heun", "milstein_ito") if p.noise_class != "general" else ("heun", "euler")
                records.append(_safe(ito_stratonovich_consistency, p, *pair, label=b.name))
    return [expectations.apply(r) for r in records]


#: the SDE problems of the gradient records (those of the run, in this order; quick: the first two)
SDE_GRADIENT_PROBLEMS = ("gbm_ito", "kp_cubic", "kp_additive", "noncommutative", "kubo_oscillator")


def _sde_gradient_records(b: Backend, names: list[str], problems: list[Any], quick: bool) -> list[Record]:
    """The SDE gradient records of ``b``'s methods ``names`` where ``b`` declares
    ``Capabilities.sde_gradient_modes`` (``properties/sde_gradients.py``), on the run's problems
    among :data:`SDE_GRADIENT_PROBLEMS` in the method's calculus: each discrete mode against
    pathwise finite differences, reversible Heun's exact backward pass, and each continuous
    adjoint's convergence to the discrete gradient (quick: two problems, 32 paths)."""
    from .properties.sde_gradients import sde_adjoint_convergence, sde_gradient_accuracy, sde_reversible_exactness

    caps = b.capabilities()
    if not caps.sde_gradient_modes:
        return []
    chosen = [p for p in problems if p.name in SDE_GRADIENT_PROBLEMS][:2 if quick else None]
    sweep = {"paths": 32} if quick else {}
    out = []
    for m in names:
        info = caps.sde_methods[m]
        for p in chosen:
            if not info.valid_for(p.noise_class) or (p.calculus != info.calculus and p.correction is None):
                continue
            p = p.as_calculus(info.calculus)
            if info.reversible:
                out.append(_safe(sde_reversible_exactness, p, m, backend=b.name, label=b.name))
            for mode in caps.sde_gradient_modes:
                if mode == "reversible_heun" and not info.reversible:
                    continue  # the reference's mode of that name inverts reversible Heun's steps only
                if mode in caps.sde_discrete_gradient_modes:
                    out.append(_safe(sde_gradient_accuracy, p, m, mode, backend=b.name, label=b.name))
                else:
                    out.append(_safe(sde_adjoint_convergence, p, m, mode, backend=b.name, label=b.name, **sweep))
    return out


# ----------------------------------------------------------------------------- flows (check --flows)
#: the unit of a parallel ``check --flows`` that runs the records made once per run: the backend's
#: log-likelihood gradients and, on the reference, the trace estimators, Hutchinson and the geometry
FLOW_SHARED_UNIT = "(gradients, trace estimators, Hutchinson, geometry)"
#: the methods of a quick ``check --flows``, per backend (an adaptive and a fixed-step one)
QUICK_FLOW_METHODS = {"reference": ("dopri5", "rk4"), "torchdiffeq": ("dopri5", "rk4"), "diffrax": ("Dopri5", "Heun"),
                      "scipy": ("RK45",)}
#: the CNF problems of the log-density sweeps (quick: the first two)
FLOW_PROBLEMS = ("cnf_linear2", "cnf_mlp2", "cnf_sine1", "cnf_mlp1", "cnf_linear8", "cnf_mlp6_softplus")


def flow_methods(backend: str, quick: bool) -> list[str]:
    """The methods ``check --flows`` runs on ``backend`` by default: a quick run's pair, or every
    method the backend declares."""
    b = backends.get(backend)
    caps = b.capabilities()
    if quick:
        base = b.name.split("-")[0]
        return [m for m in QUICK_FLOW_METHODS.get(base, ()) if m in caps.methods] or list(caps.methods)[:1]
    return list(caps.methods)


@_streaming
def run_flow_conformance(*, backend: str = "reference", quick: bool = False,
                         methods: str | Iterable[str] | None = None, shared: bool | None = None,
                         progress: Callable[[str], None] | None = None) -> list[Record]:
    """Continuous normalizing flows on ``backend`` (``properties/flows.py``): per method, the
    log-density's error against the closed form or Liouville's oracle over a tolerance (or
    step) sweep on the CNF problems; for the adaptive methods also Liouville's formula,
    sample/density invertibility and the normalisation of the pushed-forward density (1-D and
    2-D problems), and for the first (every, in a full run) orientation, injectivity and the
    negation bound; and, once (``shared``, default: when no methods are named), the
    log-likelihood gradient records of the backend's modes (``properties/flow_gradients``) and,
    on the reference, the trace estimators' agreement, Hutchinson's mean and variance against
    theory, and the flow-map geometry (``properties/flow_geometry``)."""
    from .problems.flows import CNF_PROBLEMS
    from .properties.flow_gradients import cnf_gradient_records
    from .properties.flows import (cnf_invertibility, cnf_liouville, cnf_log_density, cnf_normalisation,
                                   hutchinson_unbiased, hutchinson_variance, trace_agreement)

    b = backends.get(backend)
    if not b.available():
        return [unavailable_record(b.name, b.install_hint)]
    caps = b.capabilities()
    names = unit_names(methods, lambda: flow_methods(b.name, quick))
    for m in names:
        caps.method(m, b.name)  # raises naming the method, with the closest match
    records: list[Record] = _Sink()
    problems = [CNF_PROBLEMS.get(n) for n in (FLOW_PROBLEMS[:2] if quick else FLOW_PROBLEMS)]
    for m in names:
        if progress:
            progress(m)
        info = caps.methods[m]
        for p in problems:
            records.append(_safe(cnf_log_density, p, m, backend=b.name, label=b.name))
        if not info.adaptive or is_implicit(info):
            continue
        for p in problems:
            if not p.has_exact:
                records.append(_safe(cnf_liouville, p, m, backend=b.name, label=b.name))
            records.append(_safe(cnf_invertibility, p, m, backend=b.name, label=b.name))
        for p in problems if not quick else [CNF_PROBLEMS.get("cnf_sine1")]:
            if p.dim <= 2:
                records.append(_safe(cnf_normalisation, p, m, backend=b.name, label=b.name))
        if not quick or m == names[0]:
            records.extend(_flow_map_records(b.name, m))
    if shared is None:
        shared = methods is None
    if shared:
        records.extend(cnf_gradient_records(b.name, quick=quick))
    if b.name.startswith("reference") and shared:
        if progress:
            progress(FLOW_SHARED_UNIT)
        for p in problems:
            for library in ("numpy", "torch", "jax"):
                if library == "numpy" or _xp.available(library):
                    records.append(_safe(trace_agreement, p, library=library, label=b.name))
        for p in problems if quick else [CNF_PROBLEMS.get(n) for n in FLOW_PROBLEMS if n != "cnf_linear8"]:
            for probe in ("rademacher", "gaussian"):
                records.append(_safe(hutchinson_unbiased, p, probe, label=b.name))
                records.append(_safe(hutchinson_variance, p, probe, label=b.name))
        records.extend(_flow_geometry_records(quick))
    return [expectations.apply(r) for r in records]


def _flow_map_records(backend: str, method: str) -> list[Record]:
    """A backend's adaptive method keeps what a flow map must: order in 1-D, a positive Jacobian
    determinant and injectivity in 2-D, and no 1-D flow comes within ``a`` of ``x -> -x``."""
    from .problems.flows import CNF_PROBLEMS
    from .properties.flow_geometry import flow_injectivity, flow_orientation, flow_unreachable_negation

    mlp1, mlp2 = CNF_PROBLEMS.get("cnf_mlp1").field, CNF_PROBLEMS.get("cnf_mlp2").field
    return [_safe(flow_orientation, mlp1, method, backend=backend, label=backend),
            _safe(flow_injectivity, mlp2, method, backend=backend, label=backend),
            _safe(flow_unreachable_negation, mlp1, method, backend=backend, label=backend)]


def _flow_geometry_records(quick: bool) -> list[Record]:
    """The flow map's geometry (``properties/flow_geometry.py``), on the reference: the fold step
    of the explicit methods (quick: euler, kutta3, rk4) on a linear field with theory and on the
    1-D and 2-D MLP fields; the unreachable negation with a random search aimed at it (full
    run); the augmented rotation; ResNet = Euler. (Orientation, injectivity and the negation
    bound of each backend's adaptive methods: :func:`_flow_map_records`.)"""
    from .problems.flows import CNF_PROBLEMS, linear_field
    from .properties.flow_geometry import (augmented_negation, explicit_methods, flow_fold_step,
                                           flow_unreachable_negation, resnet_euler)

    lin = linear_field(np.array([[-1.0, 0.5], [0.0, -3.0]]), name="lin2")
    mlp1, mlp2 = CNF_PROBLEMS.get("cnf_mlp1").field, CNF_PROBLEMS.get("cnf_mlp2").field
    out: list[Record] = []
    for m in ("euler", "kutta3", "rk4") if quick else explicit_methods():
        for fld in (lin, mlp1) if quick else (lin, mlp1, mlp2):
            out.append(_safe(flow_fold_step, fld, m))
    if not quick:
        out.append(_safe(flow_unreachable_negation, mlp1, "dopri5", search_steps=200))
    out.append(_safe(augmented_negation, "dopri5"))
    out.append(_safe(resnet_euler, mlp2))
    return out


# ----------------------------------------------------------------------------- parallel units
def run_unit(*, gradients: bool = False, backend: str, quick: bool = False, unit: str,
             resume: Mapping[str, Record] | None = None) -> dict[str, Any]:
    """One method's conformance cases (or, with ``gradients``, one gradient mode's), as a
    unit of :mod:`odeverify.parallel`: ``{"records": [...], "cases": [(key, record), ...]}``.
    Cases in ``resume`` are not run again. (The units of ``check --sde``, ``--flows`` and the
    other families: :func:`odeverify.families.run_unit`.)"""
    from .parallel import stream_case

    cases: list[tuple[str, Record]] = []  # those not streamed to the parent already

    def finished(r: Record, key: str) -> None:
        if not stream_case(key, r):  # to the parent at once, in a process pool
            cases.append((key, r))

    hooks = dict(on_record=finished, resume=dict(resume or {}))
    if gradients:
        records = run_gradient_conformance(backend, quick, modes=[unit], **hooks)
    else:
        records = run_conformance(backend=backend, quick=quick, methods=[unit], **hooks)
    return {"records": records, "cases": cases}


def unit_cost(backend: str, name: str, gradients: bool = False) -> float:
    """A unit's expected cost, for handing the costliest out first: an implicit method runs
    the stiff checks (and compiles more on a jitted backend), several times an explicit one."""
    if gradients:
        return 1.0
    info = backends.get(backend).capabilities().method(name, backend)
    return (4.0 if info.adaptive else 2.0) if is_implicit(info) else 1.0


def units(*, gradients: bool = False, backend: str, quick: bool = False, names: Iterable[str],
          resume: Mapping[str, Record] | None = None):
    """The :class:`odeverify.parallel.Unit` s of ``check``: one per method (or gradient mode)."""
    from .parallel import Unit

    prop = "gradients" if gradients else "conformance"
    return [Unit(label=f"{backend}: {n} {prop}",
                 target="odeverify.conformance:run_unit",
                 kwargs=dict(gradients=gradients, backend=backend, quick=quick, unit=n, resume=dict(resume or {})),
                 backend=backend, method=n, property=prop) for n in names]
