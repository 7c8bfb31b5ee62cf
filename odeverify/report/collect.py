"""Running the checks behind ``odeverify report`` into one JSON-ready document of records.

Each unit of work is a :class:`Task` (one backend x method conformance run, one work-precision
sweep, ...). A task that raises becomes an ``error`` record naming the task, so a failing
library or property is a recorded status in the report, never a crash of the run.

Sources of records (optional ones are used when their modules exist, and the report says
"not available" with the reason otherwise):

- :func:`odeverify.conformance.run_conformance`, per backend and method: convergence order,
  dense output, tolerance proportionality, published accuracy, ...;
- work-precision, on non-stiff problems (error versus work) and the Bari stiff problems (scd
  versus work; --quick: HIRES and ROBER with every implicit adaptive method of order >= 3;
  one explicit method included to show its failure), with the error over output times and
  of the dense output, down to the tightest tolerance each reference supports in a full run:
  :func:`odeverify.properties.work_precision.work_precision`;
- stiffness handling and stiff order: part of the conformance run;
- gradients and reversibility drift: ``conformance.run_gradient_conformance`` (optional);
- SDE solvers, per backend with SDE methods (``Capabilities.sde_methods``) and per SDE
  method: :func:`odeverify.conformance.run_sde_conformance` (strong and weak order with their
  bootstrap intervals, pathwise agreement with odeverify's method of the same rule,
  reversibility), and once on the reference the Brownian tree's and the Itô-Stratonovich
  consistency; --quick: Euler-Maruyama and stochastic Heun of each library
  (:data:`QUICK_SDE_RULES`) on the quick SDE problems;
- continuous normalizing flows, per backend: :func:`odeverify.conformance.run_flow_conformance`
  (log-likelihood error over a tolerance or step sweep, Liouville's formula, normalisation,
  invertibility, gradients; on the reference the trace estimators' agreement, Hutchinson's
  mean and variance against theory, and the flow geometry's fold step);
- stability regions: the exact stability function of every registered tableau
  (:func:`odeverify.tableaus.theory.stability_function`), and the A(α) angles of BDF1-5
  computed from their root locus (:func:`bdf_stability_angle`);
- the document also carries each problem's definition and reference provenance
  (:func:`problem_definitions`), which the report prints beside the figures.
"""
from __future__ import annotations

import datetime as _dt
import importlib
import math
import os
import platform
import shutil
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from .. import __version__, conformance
from .. import families as _families
from .. import backends as _backends
from ..backends import MethodInfo
from ..backends.base import UnsupportedOption, is_implicit
from ..problems import PROBLEMS
from ..properties.tolerance import default_tols
from ..parallel import warning_lines
from ..records import Record
from ..tableaus import TABLEAUS, theory
from .progress import Progress

SCHEMA = "odeverify.report/1"

#: problems of the work-precision diagrams: nonlinear, with published or closed-form
#: solutions (Hairer et al. I, II.10 use Arenstorf and Pleiades for the same purpose)
WORK_PRECISION_PROBLEMS = ("warped_oscillatory", "arenstorf", "pleiades")
QUICK_WORK_PRECISION_PROBLEMS = ("warped_oscillatory", "arenstorf")
#: tightest tolerance of a quick sweep (the full sweep goes to 1e-10, see default_tols)
QUICK_TIGHTEST_TOL = 1e-8
#: stiff problems of the scd-versus-work diagrams: the Bari test set (published references);
#: a full sweep goes down to the tightest tolerance its reference supports
#: (``work_precision.tightest_tolerance``: 1e-10 .. 1e-12, E5 1e-6)
STIFF_PROBLEMS = ("hires", "rober", "orego", "vdpol", "vdpol_mu1000", "pollution", "e5")
QUICK_STIFF_PROBLEMS = ("hires", "rober")
QUICK_STIFF_TOLERANCES = (1e-4, 1e-6, 1e-8)
#: the tightest tolerance of a full non-stiff sweep (where the reference allows it)
FULL_TIGHTEST_TOL = 1e-13
#: output intervals of the trajectory error measures (max over output times, dense output)
OUTPUT_TIMES = 10
#: fixed steps of an algebraically reversible method's reconstruction (diffrax ReversibleHeun
#: reconstructs through its inverse step, which needs a fixed step count)
DRIFT_N_STEPS = 64
#: reversibility drift: a conservative and a dissipative problem
DRIFT_PROBLEMS = ("harmonic", "warped_real")
#: the kinds of task a report runs (``collect(kinds=...)`` selects some)
#: (then one kind per check family of ``odeverify.families`` without a task builder of its own:
#: ``cde``, ``events``, ``irregular``, plug-ins)
_BASE_KINDS = ("conformance", "work_precision", "gradients", "drift", "sde", "flows", "stability")
KINDS = _BASE_KINDS + tuple(n for n in _families.FAMILIES.names() if n not in _BASE_KINDS)
#: the families whose records the report groups by ``Family.properties`` under their own section
REPORT_FAMILIES = tuple(n for n in KINDS if n not in _BASE_KINDS)
#: --quick grades the SDE methods of these step rules (odeverify's method of the same rule,
#: ``SDEMethod.reference``, or the reference's own name): Euler-Maruyama and stochastic Heun,
#: one Itô and one Stratonovich scheme per library. diffrax compiles every method for every
#: step count: a quick run of all its 14 methods took ~4 min of CPU here, 14 s per method
QUICK_SDE_RULES = ("euler", "heun")
#: step limit of an explicit method on a stiff problem: enough to show it fails (max_steps)
#: without spending minutes on it (it would take 10^6-10^8 steps otherwise)
STIFF_EXPLICIT_MAX_STEPS = 2_000
#: --quick checks only these methods: explicit adaptive methods of at least this order (the
#: methods of work-precision diagrams; fixed-step-only methods come with the full run)
QUICK_MIN_ORDER = 3


@dataclass
class Task:
    """One unit of work: ``run()`` returns records; ``weight`` is its expected cost for the ETA."""

    label: str
    weight: float
    run: Callable[[], list[Record]]
    backend: str = "-"
    method: str = "*"
    kind: str = "task"


# ----------------------------------------------------------------------------- inputs
def default_backends() -> list[str]:
    """Every registered backend except the reference's extra array libraries
    (``reference-torch`` etc. run the same code as ``reference``)."""
    return [n for n in _backends.names() if not n.startswith("reference-")]


def resolve_backends(names: Sequence[str] | str | None) -> list[str]:
    """Validated backend names; an unknown name raises ``ValueError`` naming ``--backends``."""
    if names is None:
        return default_backends()
    if isinstance(names, str):
        names = [names]
    out: list[str] = []
    for item in names:
        for name in str(item).split(","):
            name = name.strip()
            if not name:
                continue
            known = _backends.names()
            if name not in known:
                import difflib

                close = difflib.get_close_matches(name, known, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise ValueError(f"--backends: unknown backend {name!r}{hint}; expected one of: {', '.join(known)}")
            if name not in out:
                out.append(name)
    if not out:
        raise ValueError(f"--backends={names!r}: no backend named; expected one of: {', '.join(_backends.names())}")
    return out


def select_methods(infos: Iterable[MethodInfo], *, quick: bool, methods: Sequence[str] | None) -> list[MethodInfo]:
    """The methods a report checks: all, or those named in ``methods`` (names a backend
    lacks are ignored, so one list can serve several backends), and with ``quick`` only
    explicit adaptive methods of order >= :data:`QUICK_MIN_ORDER`."""
    infos = list(infos)
    if methods is not None:
        wanted = {m.lower() for m in methods}
        infos = [i for i in infos if i.name.lower() in wanted]
    if quick:
        infos = [i for i in infos if i.adaptive and not is_implicit(i) and i.order >= QUICK_MIN_ORDER]
    return infos


# ----------------------------------------------------------------------------- work-precision
def _work_precision_function() -> tuple[Callable[..., Any] | None, str | None]:
    """``odeverify.properties.work_precision.work_precision`` (None and the reason when absent)."""
    try:
        mod = importlib.import_module("odeverify.properties.work_precision")
    except ImportError as exc:
        return None, f"no work-precision records: odeverify.properties.work_precision not available ({exc})"
    fn = getattr(mod, "work_precision", None)
    if fn is None:
        return None, "no work-precision records: odeverify.properties.work_precision has no work_precision()"
    return fn, None


def _as_records(out: Any) -> list[Record]:
    if isinstance(out, Record):
        return [out]
    return [r for r in out if isinstance(r, Record)]


def _wp_task(fn: Callable[..., Any], backend: str, info: MethodInfo, problem: str, tolerances: Sequence[float],
             weight: float, **options: Any) -> Task:
    def go() -> list[Record]:
        try:
            return _as_records(fn(PROBLEMS.get(problem), info.name, backend=backend, tolerances=tuple(tolerances),
                                  **options))
        except UnsupportedOption as exc:  # e.g. diffrax's KenCarp needs a split no problem supplies
            return [Record(property="work_precision", method=info.name, problem=problem, backend=backend,
                           measured=None, expected=None, verdict="skip", status="unsupported",
                           message=f"not applicable: {exc}")]

    return Task(f"{backend}: {info.name} work-precision on {problem}", weight, go, backend, info.name,
                "work_precision")


def nonstiff_tolerances(info: MethodInfo, problem: str, quick: bool) -> tuple[float, ...]:
    """The tolerances of a non-stiff sweep: ``default_tols`` of the method's order (1e-3 down
    to 1e-10 at most), with --quick not below :data:`QUICK_TIGHTEST_TOL`; a full sweep of a
    method of order >= 5 continues to 1e-12 and 1e-13 where the problem's reference allows it
    (``work_precision.tightest_tolerance``), as in Hairer & Wanner's diagrams."""
    tols = [t for t in default_tols(info.order) if not quick or t >= QUICK_TIGHTEST_TOL]
    if not quick and info.order >= 5:
        floor = max(FULL_TIGHTEST_TOL, _tightest(problem))
        t = min(tols)
        while t / 10 >= floor * (1 - 1e-9):
            t /= 10
            tols.append(float(f"{t:.0e}"))
    return tuple(tols)


def stiff_tolerances(problem: str, quick: bool, order: int = 5) -> tuple[float, ...]:
    """--quick: :data:`QUICK_STIFF_TOLERANCES` down to 10^-(2p) for a method of order p (an
    order-3 method stops at 1e-6: Kvaerno3 at 1e-8 on ROBER took 10 s in each of the reference
    and diffrax, a third of the quick stiff diagrams); full: every decade from 1e-4 down to the
    tightest tolerance the problem's reference supports (``work_precision.sweep_tolerances``),
    and for a method of order p not below 10^-(2 + 2p) (at least three points), as
    ``default_tols`` does: an order-3 method at 1e-12 takes ~500x its steps at 1e-4."""
    if quick:
        return tuple(t for t in QUICK_STIFF_TOLERANCES if t >= 10.0 ** -(2 * max(int(order), 2)) * (1 - 1e-9))
    tols = importlib.import_module("odeverify.properties.work_precision").sweep_tolerances(PROBLEMS.get(problem))
    lowest = 10.0 ** -(2 + 2 * max(int(order), 1))
    return tuple(t for i, t in enumerate(tols) if i < 3 or t >= lowest * (1 - 1e-9))


def _tightest(problem: str) -> float:
    return importlib.import_module("odeverify.properties.work_precision").tightest_tolerance(PROBLEMS.get(problem))


def _stiff_methods(infos: Sequence[MethodInfo], selected: Sequence[MethodInfo], quick: bool) -> list[MethodInfo]:
    """Implicit adaptive methods (with --quick those of order >= 3: radau_iia5, BDF, the
    Kvaerno methods, scipy's Radau/BDF/LSODA, diffrax's Kvaerno3/4/5), and one explicit
    method of the selection, to show how an explicit method fails on a stiff problem."""
    implicit = [i for i in infos if i.adaptive and is_implicit(i)]
    if quick:
        implicit = [i for i in implicit if i.order >= QUICK_MIN_ORDER]
    explicit = [i for i in selected if i.adaptive and not is_implicit(i)][:1]
    return implicit + explicit


def _gradient_tasks(backend: str, quick: bool, weight: float) -> tuple[list[Task], str | None]:
    fn = getattr(conformance, "run_gradient_conformance", None)
    if fn is None:
        try:
            importlib.import_module("odeverify.properties.gradients")
        except ImportError as exc:
            return [], f"no gradient records: odeverify.properties.gradients not available ({exc})"
        return [], "no gradient records: odeverify.conformance.run_gradient_conformance not available"
    modes = _quick_gradient_modes(backend) if quick else None
    kwargs = {"backend": backend, "quick": quick, **({"modes": modes} if modes else {})}
    tasks = [Task(f"{backend}: gradients", weight, lambda: _as_records(fn(**kwargs)), backend, "*", "gradients")]
    if quick and modes and len(modes) == 2:
        # the figures of gradient error and adjoint mismatch against the tolerance need a
        # sweep, which the quick conformance run leaves out: one adjoint mode per backend
        tasks.append(Task(f"{backend}: gradient tolerance sweep", weight / 2,
                          lambda: _gradient_sweep(backend, modes[1], modes[0]), backend, modes[1], "gradients"))
    return tasks, None


def _gradient_sweep(backend: str, mode: str, discrete: str) -> list[Record]:
    """``adjoint_convergence`` of one continuous-adjoint ``mode`` (errors and the gap to the
    ``discrete`` mode per tolerance) on the conformance run's convergence problem."""
    grads = importlib.import_module("odeverify.properties.gradients")
    name = "reference-torch" if backend == "reference" else backend
    method = conformance.GRADIENT_METHODS.get(name, conformance.DEFAULT_GRADIENT_METHODS)[0]
    problem = PROBLEMS.get(conformance.ADJOINT_CONVERGENCE_PROBLEM)
    loss = grads.default_loss(problem, times=2)
    return [grads.adjoint_convergence(problem, method, mode, backend=name, loss=loss,
                                      oracle=grads.gradient_oracle(problem, loss), discrete_mode=discrete,
                                      tols=QUICK_GRADIENT_TOLS, count_nfev=False)]


#: the tolerances of the quick gradient sweep
QUICK_GRADIENT_TOLS = (1e-3, 1e-5, 1e-7, 1e-9)


def _quick_gradient_modes(backend: str) -> list[str] | None:
    """With --quick, two gradient modes per backend: its first discrete mode (differentiating the
    solver) and its first other mode (an adjoint); diffrax compiles once per mode, and all its
    modes took a third of a quick run."""
    b = _backends.get(backend if backend != "reference" else "reference-torch")
    if not b.available():
        return None
    caps = b.capabilities()
    modes = list(getattr(caps, "gradient_modes", ()) or ())
    discrete = [m for m in getattr(caps, "discrete_gradient_modes", ()) or () if m in modes]
    other = [m for m in modes if m not in discrete]
    chosen = discrete[:1] + other[:1]
    return chosen or None


def _drift_tasks(backend: str, infos: Sequence[MethodInfo], quick: bool, weight: float
                 ) -> tuple[list[Task], str | None]:
    """Reversibility drift (``properties.gradients.reversibility_drift``) of the reversible
    methods and of the first explicit adaptive method, on a conservative and a dissipative
    problem (the backsolve's pitfall)."""
    try:
        fn = importlib.import_module("odeverify.properties.gradients").reversibility_drift
    except (ImportError, AttributeError) as exc:
        return [], f"no reversibility records: odeverify.properties.gradients.reversibility_drift not available ({exc})"
    chosen = [i for i in infos if "revers" in i.name.lower()]
    chosen += [i for i in infos if i.adaptive and not is_implicit(i) and i not in chosen][:1]
    tasks = []
    for info in chosen:
        # a reversible method is measured at fixed steps: diffrax's ReversibleHeun reconstructs
        # through its inverse step, which the property refuses without a step count
        kw = {"n_steps": DRIFT_N_STEPS} if "revers" in info.name.lower() else {}
        for pname in DRIFT_PROBLEMS[:1] if quick else DRIFT_PROBLEMS:
            tasks.append(Task(f"{backend}: {info.name} reversibility on {pname}", weight,
                              lambda m=info.name, pname=pname, kw=kw: _as_records(fn(PROBLEMS.get(pname), m,
                                                                                     backend=backend, **kw)),
                              backend, info.name, "drift"))
    return tasks, None


def sde_rule(info: Any) -> str:
    """The step rule of an SDE method: odeverify's method of the same rule
    (``SDEMethod.reference``) for a library's method, the method's own name on the reference
    backends, else the method's name (a rule odeverify does not have, such as diffrax's SEA)."""
    return str(getattr(info, "reference", None) or info.name)


def select_sde_methods(infos: Iterable[Any], *, quick: bool, methods: Sequence[str] | None) -> list[Any]:
    """The SDE methods a report checks: all, or those named in ``methods`` (names a backend
    lacks are ignored, as for :func:`select_methods`), and with ``quick`` only those of the
    rules in :data:`QUICK_SDE_RULES`."""
    infos = list(infos)
    if methods is not None:
        wanted = {m.lower() for m in methods}
        infos = [i for i in infos if i.name.lower() in wanted]
    if quick:
        infos = [i for i in infos if sde_rule(i) in QUICK_SDE_RULES]
    return infos


def _sde_tasks(backend: str, infos: Sequence[Any], quick: bool, weight: float, shared: bool) -> list[Task]:
    """One task per SDE method (``run_sde_conformance(methods=[m], shared=False)``: strong and
    weak order, pathwise agreement, reversibility), and with ``shared`` (the reference) one task
    for the records made once per run (the Brownian tree, Itô-Stratonovich consistency)."""
    tasks = [Task(f"{backend}: {info.name} SDE", weight,
                  lambda m=info.name: conformance.run_sde_conformance(backend=backend, quick=quick, methods=[m],
                                                                    shared=False),
                  backend, info.name, "sde") for info in infos]
    if shared and infos:
        tasks.append(Task(f"{backend}: SDE {conformance.SDE_SHARED_UNIT}", weight,
                          lambda: conformance.run_sde_conformance(backend=backend, quick=quick, methods=[],
                                                                  shared=True),
                          backend, "*", "sde"))
    return tasks


def _flow_tasks(backend: str, quick: bool, methods: Sequence[str] | None, weight: float) -> list[Task]:
    """One task per backend: :func:`odeverify.conformance.run_flow_conformance` (the
    log-likelihood sweeps of its flow methods, Liouville, normalisation, invertibility, its
    gradient modes, and on the reference the trace estimators, Hutchinson's mean and variance
    and the flow geometry). With ``methods``, only those the backend has (none: no task)."""
    run_flows = getattr(conformance, "run_flow_conformance", None)
    if run_flows is None:
        return []
    chosen = None
    if methods is not None:
        wanted = {m.lower() for m in methods}
        chosen = [m for m in _backends.get(backend).capabilities().methods if m.lower() in wanted]
        if not chosen:
            return []
    return [Task(f"{backend}: flows", weight,
                 lambda: run_flows(backend=backend, quick=quick, **({} if chosen is None else {"methods": chosen})),
                 backend, "*", "flows")]


def _family_tasks(backend: str, quick: bool, methods: Sequence[str] | None, weight: float) -> list[Task]:
    """One task per (check family of :data:`REPORT_FAMILIES`, backend): the family's whole run
    (``Family.run``: its methods on the backend and its once-per-run records). With ``methods``,
    only those of the family's default methods (none left: no task). A backend without the
    family's kind of method (no default methods there) gets no task."""
    tasks = []
    for name in REPORT_FAMILIES:
        fam = _families.FAMILIES.get(name)
        try:
            chosen = list(fam.methods(backend, quick))
        except Exception:  # noqa: BLE001 - a backend the family cannot list methods of: no task
            chosen = []
        if not chosen:  # a backend without the family's kind of method (torchsde for CDEs): nothing to grade
            continue
        kwargs: dict[str, Any] = {}
        if methods is not None:
            wanted = {m.lower() for m in methods}
            chosen = [m for m in chosen if m.lower() in wanted]
            if not chosen:
                continue
            kwargs["methods"] = chosen
        tasks.append(Task(f"{backend}: {name}", weight,
                          lambda fam=fam, kwargs=kwargs: fam.run(backend=backend, quick=quick, **kwargs),
                          backend, "*", name))
    return tasks


def family_descriptions() -> dict[str, dict[str, Any]]:
    """What the report shows of each family of :data:`REPORT_FAMILIES` (its section's title and
    text, the properties its records carry, its documentation page): written into the records
    document, so rendering needs no registry."""
    out = {}
    for name in REPORT_FAMILIES:
        fam = _families.FAMILIES.get(name)
        out[name] = {"title": fam.title, "help": fam.help, "properties": list(fam.properties), "doc": fam.doc}
    return out


def stability_records() -> list[Record]:
    """One record per registered tableau: the exact stability function R(z) = P(z)/Q(z)
    (coefficients, lowest power first; the figure evaluates them) and, as ``measured``, the
    left end x0 of the real stability interval [x0, 0] (``-inf``: the whole negative real
    axis), from :func:`odeverify.tableaus.theory.real_stability_interval`."""
    interval = getattr(theory, "real_stability_interval", None)
    out = []
    for name, tab in TABLEAUS.items():
        try:
            num, den = theory.stability_function(tab)
            left = float(interval(tab)[0]) if interval is not None else None
            out.append(Record(property="stability_region", method=name, problem="-", backend="reference",
                              measured=left, expected=None, verdict="pass",
                              message="" if interval is not None else "theory.real_stability_interval not available",
                              details={"numerator": [float(c) for c in num], "denominator": [float(c) for c in den],
                                       "order": tab.order, "explicit": tab.explicit,
                                       "source": "odeverify.tableaus.theory (exact)"}))
        except Exception as exc:  # noqa: BLE001 - one tableau's failure is a status
            out.append(Record(property="stability_region", method=name, problem="-", backend="reference",
                              measured=None, expected=None, verdict="error", status="failed",
                              message=f"{type(exc).__name__}: {exc}"))
    return out


#: A(alpha) angles of BDF1..5 in degrees as printed in Hairer & Wanner II, Sect. V.2 (Table
#: 2.3, to two decimals): the check for :func:`bdf_stability_angle`, which computes them
BDF_ALPHA_LITERATURE = {1: 90.0, 2: 90.0, 3: 86.03, 4: 73.35, 5: 51.84}


def bdf_boundary(k: int, theta: Any) -> Any:
    """The root-locus curve of BDFk: the z = h*lambda where a root of the characteristic
    polynomial has modulus one, z(θ) = Σ_{j=1..k} (1 - e^{-iθ})^j / j."""
    import numpy as np

    w = 1.0 - np.exp(-1j * np.asarray(theta, dtype=np.float64))
    return sum(w ** j / j for j in range(1, int(k) + 1))


def bdf_stability_angle(k: int, samples: int = 20_001) -> float:
    """A(α) of BDFk in degrees: the largest α such that the sector |arg(-z)| < α lies in the
    stability region. The region is the outside of the root locus (:func:`bdf_boundary`) and
    contains small negative z, so the sector is stable up to the first locus point it meets:
    α = min over θ of |arg(-z(θ))|. Sampled on θ in (0, π] (the locus is symmetric), then the
    minimum refined by a bounded scalar search between the neighbours of the best sample."""
    import numpy as np
    from scipy.optimize import minimize_scalar

    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= 6:
        raise ValueError(f"k={k!r}, but BDF is zero-stable for orders 1..6 only")

    def angle(theta: float) -> float:
        return float(np.abs(np.angle(-bdf_boundary(k, theta))))

    theta = np.linspace(0.0, np.pi, samples)[1:]
    values = np.abs(np.angle(-bdf_boundary(k, theta)))
    i = int(np.argmin(values))
    lo, hi = theta[max(i - 1, 0)], theta[min(i + 1, theta.size - 1)]
    best = min(float(values[i]), minimize_scalar(angle, bounds=(lo, hi), method="bounded",
                                                 options={"xatol": 1e-12}).fun)
    # the locus leaves the origin tangent to the imaginary axis (z = iθ + O(θ^2)), so the
    # infimum over θ -> 0 is 90 degrees, which no sample reaches exactly
    return min(math.degrees(best), 90.0)


def stability_angle_records() -> list[Record]:
    """One record per BDF order 1..5: the computed A(α) angle, with the printed value as
    ``expected`` (pass within 0.01 degree, the printed precision)."""
    out = []
    for k, printed in BDF_ALPHA_LITERATURE.items():
        alpha = bdf_stability_angle(k)
        ok = abs(alpha - printed) <= 0.01
        out.append(Record(property="stability_angle", method=f"bdf{k}", problem="-", backend="reference",
                          measured=alpha, expected=printed, verdict="pass" if ok else "fail",
                          message="" if ok else f"A(alpha) {alpha:.4f} deg differs from the printed {printed}",
                          details={"order": k, "source": "Hairer & Wanner II, Sect. V.2 (printed value)",
                                   "locus": "z(θ) = Σ_j (1 - e^{-iθ})^j / j"}))
    return out


def problem_definitions(names: Iterable[str]) -> dict[str, dict[str, Any]]:
    """Each named registered problem as data for the report: its description (equation),
    span, dimension, scalar parameters (arrays by shape), citation, and the provenance of its
    reference solution (closed form, or each reference's kind, time, digits and source)."""
    import numpy as np

    out: dict[str, dict[str, Any]] = {}
    for name in sorted(set(names)):
        if name not in PROBLEMS.names():
            continue
        p = PROBLEMS.get(name)
        params = {}
        for key, value in p.params.items():
            if isinstance(value, np.ndarray):
                params[key] = f"array of shape {tuple(value.shape)}"
            elif isinstance(value, (int, float)):
                params[key] = f"{value:.10g}"
            else:
                params[key] = type(value).__name__
        refs = [{"kind": r.kind, "t": r.t, "digits": r.digits, "source": r.source} for r in p.references]
        out[name] = {"description": p.description, "t_span": list(p.t_span), "n": p.n, "params": params,
                     "tags": sorted(p.tags), "citation": p.citation, "closed_form": p.exact is not None,
                     "references": refs, "jacobian": p.jac is not None}
    return out


# ----------------------------------------------------------------------------- environment
def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _run(cmd: list[str], cwd: Path | None = None) -> str | None:
    try:
        out = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def environment() -> dict[str, Any]:
    """Versions, CPU/GPU, threads, date and git commit of this run (no framework is imported)."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = None
    if shutil.which("nvidia-smi"):
        gpu = _run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"])
    root = Path(__file__).resolve().parents[2]
    commit = _run(["git", "rev-parse", "HEAD"], cwd=root) if shutil.which("git") else None
    dirty = _run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root) if commit else None
    versions = {name: _version(name) for name in ("numpy", "scipy", "torch", "torchdiffeq", "jax", "jaxlib",
                                                  "diffrax", "equinox", "matplotlib", "jinja2")}
    return {
        "odeverify": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "gpu": gpu or "none detected (no nvidia-smi)",
        "threads": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "XLA_FLAGS")},
        "versions": {k: v for k, v in versions.items() if v is not None},
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
        # wall times on a shared machine are only as good as its load (1, 5, 15 min averages)
        "load_average": [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None,
        "git_commit": commit or "unknown (not a git checkout)",
        "git_dirty": bool(dirty) if commit else None,
        "command": " ".join(["odeverify", *sys.argv[1:]]) if sys.argv and "odeverify" in sys.argv[0] else None,
    }


# ----------------------------------------------------------------------------- plan and run
#: rough seconds per conformance method on a 2-core machine (ETA weights only)
#: rough CPU seconds per task of a --quick run (measured on a shared 2-core machine; ETA only):
#: conformance per method, one work-precision sweep, the gradient run, one drift task
_WEIGHT = {"reference": (0.6, 0.3, 6.0, 0.3), "scipy": (0.2, 0.2, 0.1, 0.2),
           "torchdiffeq": (1.5, 1.5, 1.5, 0.2), "diffrax": (14.0, 2.5, 25.0, 0.8)}
_DEFAULT_WEIGHT = (3.0, 1.0, 5.0, 0.5)
#: rough CPU seconds of one SDE method's quick run (ETA only; diffrax compiles per step count)
_SDE_WEIGHT = {"reference": 3.5, "torchsde": 3.0, "diffrax": 14.0}
_DEFAULT_SDE_WEIGHT = 5.0
#: rough CPU seconds of one backend's quick flow run (ETA only), measured on a shared 2-core machine by
#: run_flow_conformance(backend=..., quick=True): reference 30 s (its shared checks included), scipy 2.7 s,
#: torchdiffeq 10.6 s, diffrax 151 s (compilations)
_FLOW_WEIGHT = {"reference": 30.0, "scipy": 3.0, "torchdiffeq": 11.0, "diffrax": 150.0}
_DEFAULT_FLOW_WEIGHT = 10.0


def plan(backend_names: Sequence[str], *, quick: bool = False, methods: Sequence[str] | None = None,
         kinds: Iterable[str] | None = None) -> tuple[list[Task], list[dict[str, Any]], dict[str, str]]:
    """The tasks of a report run, the backends' availability rows, and the reasons why
    optional sections have no source."""
    tasks: list[Task] = []
    rows: list[dict[str, Any]] = []
    missing: dict[str, str] = {}
    wp_fn, why = _work_precision_function()
    if why:
        missing["work_precision"] = why
        missing["stiffness"] = why.replace("work-precision", "stiffness work-precision")
    wp_problems = QUICK_WORK_PRECISION_PROBLEMS if quick else WORK_PRECISION_PROBLEMS
    stiff_problems = QUICK_STIFF_PROBLEMS if quick else STIFF_PROBLEMS
    repeats = 3  # the median of 3 while a solve is cheap (work_precision.CHEAP_S), else 1
    for name in backend_names:
        b = _backends.get(name)
        ok = b.available()
        row: dict[str, Any] = {"name": b.name, "available": ok, "install_hint": b.install_hint, "methods": []}
        rows.append(row)
        if not ok:
            tasks.append(Task(f"{name}: unavailable", 0.01, lambda name=name: conformance.run_conformance(backend=name),
                              name, "*", "conformance"))
            continue
        caps = b.capabilities()
        all_infos = list(caps.methods.values())
        infos = select_methods(all_infos, quick=quick, methods=methods)
        stiff_infos = _stiff_methods(select_methods(all_infos, quick=False, methods=methods), infos, quick)
        row["methods"] = [i.name for i in infos]
        # what the backend claims, so the report can colour one tableau alike in every library
        row["method_info"] = {i.name: {"order": i.order, "tableau": i.tableau, "adaptive": i.adaptive,
                                       "fixed": i.fixed, "implicit": is_implicit(i)} for i in [*infos, *stiff_infos]}
        sde_infos = select_sde_methods(caps.sde_methods.values(), quick=quick, methods=methods)
        if sde_infos:
            row["sde_methods"] = [i.name for i in sde_infos]
            # the step rule colours a method alike in every library, as the tableau does for ODEs
            row["sde_method_info"] = {i.name: {"rule": sde_rule(i), "calculus": i.calculus, "strong": dict(i.strong),
                                               "weak": dict(i.weak)} for i in sde_infos}
        sde = _sde_tasks(name, sde_infos, quick, _SDE_WEIGHT.get(name, _DEFAULT_SDE_WEIGHT),
                         shared=name == "reference")
        family_tasks = _family_tasks(name, quick, methods, 1.0 if quick else 4.0)
        if not all_infos:  # an SDE- or CDE-only library (torchsde, torchcde): no ODE conformance, sweeps, ...
            tasks += sde + family_tasks
            continue
        w_conf, w_wp, w_grad, w_drift = _WEIGHT.get(name, _DEFAULT_WEIGHT)
        if not quick:  # the full conformance run sweeps more problems and tolerances
            w_conf, w_grad = 3 * w_conf, 4 * w_grad
        for info in infos:
            tasks.append(Task(f"{name}: {info.name} conformance", w_conf,
                              lambda name=name, m=info.name: conformance.run_conformance(backend=name, quick=quick,
                                                                                       methods=[m]),
                              name, info.name, "conformance"))
        if wp_fn is not None:
            for info in infos:
                if info.adaptive and not is_implicit(info):
                    for pname in wp_problems:
                        tols = nonstiff_tolerances(info, pname, quick)
                        tasks.append(_wp_task(wp_fn, name, info, pname, tols, w_wp, repeats=repeats,
                                              output_times=OUTPUT_TIMES))
            jac = b.capabilities().options.get("jac")
            for info in stiff_infos:
                # an explicit method fails at every tolerance: its loosest one shows it, with why
                implicit = is_implicit(info)
                extra: dict[str, Any] = {"output_times": OUTPUT_TIMES}
                if not implicit:
                    extra["max_steps"] = STIFF_EXPLICIT_MAX_STEPS
                elif not isinstance(jac, str):  # the analytic Jacobian where the library takes one
                    extra["jac"] = True
                for pname in stiff_problems:
                    tols = stiff_tolerances(pname, quick, info.order)
                    tasks.append(_wp_task(wp_fn, name, info, pname, tols if implicit else tols[:1],
                                          2 * w_wp * (1 if quick else len(tols) / 3), repeats=repeats, **extra))
        grad, why = _gradient_tasks(name, quick, w_grad)
        tasks += grad
        if why:
            missing["gradients"] = why
        drift, why = _drift_tasks(name, infos, quick, w_drift)
        tasks += drift
        if why:
            missing["drift"] = why
        tasks += sde
        tasks += _flow_tasks(name, quick, methods, _FLOW_WEIGHT.get(name, _DEFAULT_FLOW_WEIGHT) * (1 if quick else 4))
        tasks += family_tasks
    tasks.append(Task("stability regions", 0.5, lambda: stability_records() + stability_angle_records(),
                      "reference", "*", "stability"))
    if kinds is not None:
        wanted = set(kinds)
        unknown = wanted - set(KINDS)
        if unknown:
            raise ValueError(f"kinds={sorted(unknown)!r}; expected some of {KINDS}")
        for kind in sorted(set(KINDS) - wanted):
            key = {"work_precision": "work_precision"}.get(kind, kind)
            missing[key] = f"no {kind.replace('_', '-')} records: not part of this run (kinds={sorted(wanted)})"
            if kind == "work_precision":
                missing["stiffness"] = f"no stiffness work-precision records: not part of this run" \
                                       f" (kinds={sorted(wanted)})"
        tasks = [t for t in tasks if t.kind in wanted]
    return tasks, rows, missing


def _task_property(task: Task) -> str:
    """The property named by the error record of a task that failed."""
    return {"stability": "stability_region"}.get(task.kind, task.kind)


def _failed(task: Task, exc: BaseException) -> Record:
    return Record(property=_task_property(task), method=task.method, problem="-", backend=task.backend,
                  measured=None, expected=None, verdict="error", status="failed",
                  message=f"{task.label} raised {type(exc).__name__}: {exc}")


def _resumed(task: Task, resume: Any) -> tuple[list[Record], dict[str, Any] | None, list[str]]:
    """A task finished before an interruption: its records, its timing (marked ``resumed``)
    and its warnings, from the journal."""
    info = resume.task_info.get(task.label, {})
    timing = {**info["timing"], "resumed": True} if info.get("timing") else None
    return resume.tasks[task.label], timing, list(info.get("warnings", []))


def run_tasks(tasks: Sequence[Task], progress: Progress | None = None,
              warned: list[str] | None = None, timings: list[dict[str, Any]] | None = None, *,
              journal: Any = None, resume: Any = None) -> list[Record]:
    """Run every task; one that raises becomes an ``error`` record (never a crash).

    ``journal`` (:class:`odeverify.journal.Journal`) gets every finished task, with its timing
    and warnings; the tasks of ``resume`` (a journal's contents) are not run again, and their
    timings (marked ``resumed``) and warnings come from the journal.

    Warnings raised inside a task (a stiffness warning for an explicit method on a stiff
    problem, a library's own) are collected into ``warned`` as "task: category: message",
    once each, instead of interleaving with the progress bar."""
    records: list[Record] = []
    for task in tasks:
        if resume is not None and task.label in resume.tasks:  # finished before an interruption
            recs, timing, mine = _resumed(task, resume)
            records += recs
            if timings is not None and timing:
                timings.append(timing)
            if warned is not None:
                warned += [w for w in mine if w not in warned]
            if progress is not None:
                progress.update(task.label, weight=task.weight)
            continue
        first = len(records)
        if progress is not None:
            progress.update(task.label)
        wall, cpu = time.perf_counter(), time.process_time()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                records += task.run()
            except Exception as exc:  # noqa: BLE001 - a failing backend/property is a recorded status
                records.append(_failed(task, exc))
        if timings is not None:
            # CPU time of this process tells the cost apart from the load of a shared machine
            timings.append({"task": task.label, "wall_s": round(time.perf_counter() - wall, 3),
                            "cpu_s": round(time.process_time() - cpu, 3)})
        mine = warning_lines(task.label, caught)
        if warned is not None:
            warned += [text for text in mine if text not in warned]
        if journal is not None:
            journal.task(task.label, records[first:],
                         {"timing": timings[-1] if timings else None, "warnings": mine})
        if progress is not None:
            progress.update(task.label, weight=task.weight)
    return records


# ----------------------------------------------------------------------------- parallel runs
_PLANS: dict[str, list[Task]] = {}


def run_unit(*, backends: Sequence[str], quick: bool, methods: Sequence[str] | None, kinds: Sequence[str] | None,
             label: str) -> dict[str, Any]:
    """One task of a report run, as a unit of :mod:`odeverify.parallel`: the worker plans the
    same run (once per process) and runs the task called ``label``."""
    key = repr((list(backends), bool(quick), None if methods is None else list(methods),
                None if kinds is None else sorted(kinds)))
    if key not in _PLANS:
        _PLANS[key] = plan(list(backends), quick=quick, methods=methods, kinds=kinds)[0]
    task = next((t for t in _PLANS[key] if t.label == label), None)
    if task is None:
        raise ValueError(f"label={label!r}: no such task in this report run (a worker with another version of"
                         " odeverify?)")
    return {"records": task.run()}


def run_tasks_parallel(tasks: Sequence[Task], plan_args: dict[str, Any], parallel: dict[str, Any],
                       progress: Progress | None = None, warned: list[str] | None = None,
                       timings: list[dict[str, Any]] | None = None, *, journal: Any = None,
                       resume: Any = None) -> list[Record]:
    """:func:`run_tasks` with the tasks as units of :mod:`odeverify.parallel` (``parallel``:
    its ``jobs``, ``timeout``, ``scheduler``, ``workers``). The records, their order and the
    journal are those of a serial run; the timings are each task's in its worker."""
    from ..parallel import Unit, run_units

    todo = [t for t in tasks if resume is None or t.label not in resume.tasks]
    units = [Unit(label=t.label, target="odeverify.report.collect:run_unit", kwargs={**plan_args, "label": t.label},
                  backend=t.backend, method=t.method, property=_task_property(t)) for t in todo]
    by_label: dict[str, tuple[list[Record], dict[str, Any], list[str]]] = {}
    running: dict[int, str] = {}

    def on_start(i: int, unit: Unit) -> None:
        running[i] = unit.label
        if progress is not None:
            progress.update(f"{len(running)} running: " + "; ".join(running.values()))

    def on_outcome(out: Any, unit: Unit) -> None:
        running.pop(out.index, None)
        task = todo[out.index]
        records = out.records if out.error is None else [out.error_record(unit)]
        timing = {"task": task.label, "wall_s": out.wall_s, "cpu_s": out.cpu_s, "worker": out.worker}
        by_label[task.label] = (records, timing, out.warnings)
        if journal is not None:
            journal.task(task.label, records, {"timing": timing, "warnings": out.warnings})
        if progress is not None:
            progress.update(f"{len(running)} running: " + "; ".join(running.values()) if running else task.label,
                            weight=task.weight)

    run_units(units, on_start=on_start, on_outcome=on_outcome, priority=[t.weight for t in todo], **parallel)
    records: list[Record] = []
    for task in tasks:  # the order of the plan, whatever order the tasks finished in
        if task.label in by_label:
            recs, timing, mine = by_label[task.label]
        else:
            recs, timing, mine = _resumed(task, resume)
            if progress is not None:
                progress.update(task.label, weight=task.weight)
        records += recs
        if timings is not None and timing:
            timings.append(timing)
        if warned is not None:
            warned += [w for w in mine if w not in warned]
    return records


def collect(*, backends: Sequence[str] | str | None = None, quick: bool = False,
            methods: Sequence[str] | None = None, progress: bool | Progress | None = None,
            stream: Any = None, kinds: Iterable[str] | None = None, journal: Any = None,
            resume: Any = None, parallel: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run the report's checks and return the document (schema :data:`SCHEMA`) that
    :func:`odeverify.report.render.render_html` turns into HTML.

    ``journal`` gets every finished task and conformance case as it completes, and the tasks
    and cases of ``resume`` (the contents of an interrupted run's journal) are not run again.

    ``progress=True`` shows a bar on ``stream`` (stderr by default). ``kinds`` runs only
    some of :data:`KINDS`; the others' sections then say they were not part of the run.
    ``parallel`` (``jobs``, ``timeout``, ``scheduler``, ``workers`` of
    :func:`odeverify.parallel.run_units`) runs the tasks in worker processes or on a Dask
    cluster, with the same records.
    """
    names = resolve_backends(backends)
    start = time.perf_counter()
    tasks, rows, missing = plan(names, quick=quick, methods=methods, kinds=kinds)
    bar = progress if isinstance(progress, Progress) else (
        Progress(sum(t.weight for t in tasks), stream=stream) if progress else None)
    if bar is not None:
        bar.heartbeat()
    warned: list[str] = []
    timings: list[dict[str, Any]] = []
    cpu = time.process_time()
    try:
        with conformance.case_hooks(None if journal is None else (lambda r, key: journal.case(key, r)),
                                    resume=resume.cases if resume is not None else None):
            if parallel is not None:
                plan_args = {"backends": list(names), "quick": bool(quick),
                             "methods": None if methods is None else list(methods),
                             "kinds": None if kinds is None else sorted(kinds)}
                records = run_tasks_parallel(tasks, plan_args, parallel, bar, warned, timings, journal=journal,
                                             resume=resume)
            else:
                records = run_tasks(tasks, bar, warned, timings, journal=journal, resume=resume)
    except BaseException:
        if bar is not None:
            bar.close()
        raise
    elapsed = time.perf_counter() - start
    if bar is not None:
        bar.close(f"odeverify report: {len(records)} records from {len(tasks)} tasks in {elapsed:.1f} s")
    return {
        "schema": SCHEMA,
        "version": __version__,
        "quick": bool(quick),
        "backends": rows,
        "methods_filter": list(methods) if methods is not None else None,
        "unavailable": missing,
        "families": family_descriptions(),
        "stiff_problems": list(QUICK_STIFF_PROBLEMS if quick else STIFF_PROBLEMS),
        "environment": environment(),
        "elapsed_s": elapsed,
        "cpu_s": time.process_time() - cpu,
        "timings": timings,
        # an interrupted run resumed from its journal: these tasks' records (and timings, marked
        # "resumed") come from the earlier run; elapsed_s and cpu_s count this run only
        "resumed": None if resume is None else {"tasks": len(resume.tasks), "records": resume.n_records},
        "warnings": warned,
        "problems": problem_definitions(r.problem for r in records),
        "records": [r.to_dict() for r in records],
    }
