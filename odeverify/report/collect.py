"""Running the checks behind ``odeverify report`` into one JSON-ready document of records.

Each unit of work is a :class:`Task` (one backend x method conformance run, one work-precision
sweep, ...). A task that raises becomes an ``error`` record naming the task, so a failing
library or property is a recorded status in the report, never a crash of the run.

Sources of records (optional ones are used when their modules exist, and the report says
"not available" with the reason otherwise):

- :func:`odeverify.conformance.run_conformance`, per backend and method: convergence order,
  dense output, tolerance proportionality, published accuracy, ...;
- work-precision, on non-stiff problems (error versus work) and stiff ones (scd versus
  work, explicit methods included to show their failure):
  :func:`odeverify.properties.work_precision.work_precision`;
- stiffness handling and stiff order: part of the conformance run;
- gradients and reversibility drift: ``conformance.run_gradient_conformance`` (optional);
- stability regions: the exact stability function of every registered tableau
  (:func:`odeverify.tableaus.theory.stability_function`).
"""
from __future__ import annotations

import datetime as _dt
import importlib
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
from .. import backends as _backends
from ..backends import MethodInfo
from ..backends.base import is_implicit
from ..problems import PROBLEMS
from ..properties.tolerance import default_tols
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
#: stiff problems of the scd-versus-work diagrams (published references, Bari test set)
STIFF_PROBLEMS = ("hires", "vdpol")
QUICK_STIFF_PROBLEMS = ("hires",)
STIFF_TOLERANCES = (1e-4, 1e-5, 1e-6, 1e-7, 1e-8)
QUICK_STIFF_TOLERANCES = (1e-4, 1e-6, 1e-8)
#: reversibility drift: a conservative and a dissipative problem
DRIFT_PROBLEMS = ("harmonic", "warped_real")
#: the kinds of task a report runs (``collect(kinds=...)`` selects some)
KINDS = ("conformance", "work_precision", "gradients", "drift", "stability")
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
        return _as_records(fn(PROBLEMS.get(problem), info.name, backend=backend, tolerances=tuple(tolerances),
                              **options))

    return Task(f"{backend}: {info.name} work-precision on {problem}", weight, go, backend, info.name,
                "work_precision")


def _stiff_methods(infos: Sequence[MethodInfo], selected: Sequence[MethodInfo], quick: bool) -> list[MethodInfo]:
    """Implicit adaptive methods (with --quick the highest-order one), and one explicit
    method of the selection, to show how an explicit method fails on a stiff problem."""
    implicit = [i for i in infos if i.adaptive and is_implicit(i)]
    if quick and implicit:
        implicit = [max(implicit, key=lambda i: i.order)]
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
    return [Task(f"{backend}: gradients", weight, lambda: _as_records(fn(**kwargs)), backend, "*", "gradients")], None


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
        for pname in DRIFT_PROBLEMS[:1] if quick else DRIFT_PROBLEMS:
            tasks.append(Task(f"{backend}: {info.name} reversibility on {pname}", weight,
                              lambda m=info.name, pname=pname: _as_records(fn(PROBLEMS.get(pname), m, backend=backend)),
                              backend, info.name, "drift"))
    return tasks, None


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
    stiff_tols = QUICK_STIFF_TOLERANCES if quick else STIFF_TOLERANCES
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
        all_infos = list(b.capabilities().methods.values())
        infos = select_methods(all_infos, quick=quick, methods=methods)
        stiff_infos = _stiff_methods(select_methods(all_infos, quick=False, methods=methods), infos, quick)
        row["methods"] = [i.name for i in infos]
        # what the backend claims, so the report can colour one tableau alike in every library
        row["method_info"] = {i.name: {"order": i.order, "tableau": i.tableau, "adaptive": i.adaptive,
                                       "fixed": i.fixed, "implicit": is_implicit(i)} for i in [*infos, *stiff_infos]}
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
                    tols = tuple(t for t in default_tols(info.order) if not quick or t >= QUICK_TIGHTEST_TOL)
                    for pname in wp_problems:
                        tasks.append(_wp_task(wp_fn, name, info, pname, tols, w_wp, repeats=repeats))
            for info in stiff_infos:
                # an explicit method fails at every tolerance: its loosest one shows it, with why
                implicit = is_implicit(info)
                extra = {} if implicit else {"max_steps": STIFF_EXPLICIT_MAX_STEPS}
                for pname in stiff_problems:
                    tasks.append(_wp_task(wp_fn, name, info, pname, stiff_tols if implicit else stiff_tols[:1],
                                          2 * w_wp, repeats=repeats, **extra))
        grad, why = _gradient_tasks(name, quick, w_grad)
        tasks += grad
        if why:
            missing["gradients"] = why
        drift, why = _drift_tasks(name, infos, quick, w_drift)
        tasks += drift
        if why:
            missing["drift"] = why
    tasks.append(Task("stability regions", 0.5, stability_records, "reference", "*", "stability"))
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


def _failed(task: Task, exc: BaseException) -> Record:
    prop = {"conformance": "conformance", "work_precision": "work_precision", "stiffness": "stiffness",
            "gradients": "gradients", "stability": "stability_region"}.get(task.kind, task.kind)
    return Record(property=prop, method=task.method, problem="-", backend=task.backend, measured=None,
                  expected=None, verdict="error", status="failed",
                  message=f"{task.label} raised {type(exc).__name__}: {exc}")


def run_tasks(tasks: Sequence[Task], progress: Progress | None = None,
              warned: list[str] | None = None, timings: list[dict[str, Any]] | None = None) -> list[Record]:
    """Run every task; one that raises becomes an ``error`` record (never a crash).

    Warnings raised inside a task (a stiffness warning for an explicit method on a stiff
    problem, a library's own) are collected into ``warned`` as "task: category: message",
    once each, instead of interleaving with the progress bar."""
    records: list[Record] = []
    for task in tasks:
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
        if warned is not None:
            for w in caught:
                text = f"{task.label}: {w.category.__name__}: {str(w.message).splitlines()[0][:300]}"
                if text not in warned:
                    warned.append(text)
        if progress is not None:
            progress.update(task.label, weight=task.weight)
    return records


def collect(*, backends: Sequence[str] | str | None = None, quick: bool = False,
            methods: Sequence[str] | None = None, progress: bool | Progress | None = None,
            stream: Any = None, kinds: Iterable[str] | None = None) -> dict[str, Any]:
    """Run the report's checks and return the document (schema :data:`SCHEMA`) that
    :func:`odeverify.report.render.render_html` turns into HTML.

    ``progress=True`` shows a bar on ``stream`` (stderr by default). ``kinds`` runs only
    some of :data:`KINDS`; the others' sections then say they were not part of the run.
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
    records = run_tasks(tasks, bar, warned, timings)
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
        "stiff_problems": list(QUICK_STIFF_PROBLEMS if quick else STIFF_PROBLEMS),
        "environment": environment(),
        "elapsed_s": elapsed,
        "cpu_s": time.process_time() - cpu,
        "timings": timings,
        "warnings": warned,
        "records": [r.to_dict() for r in records],
    }
