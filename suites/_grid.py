"""The benchmark grid of the asv suites, read from odeverify's registries.

A *case* is ``"backend:method"`` (forward solves) or ``"backend:method:mode"`` (gradients).
The grid is built from the registries, so a method, backend, problem or gradient mode
registered in odeverify appears in the suites without touching them:

- ``small`` (default): every reference method (``odeverify.SOLVERS``) on the NumPy
  reference, plus one representative method (the Dormand-Prince 5(4) pair where the
  backend has it) of every other *installed* backend; two non-stiff problems, one stiff.
- ``large`` (``ODEVERIFY_ASV_GRID=large`` in the environment of ``asv``, read at import):
  every method of every installed backend, every registered problem of the kind.

Building the grid asks every backend for its capabilities, which starts JAX (and its thread
pool). asv forks one process per benchmark from a server that has imported the suites, and
a process forked after JAX started its threads can deadlock (seen here: a forked benchmark
hung on a futex while its parent held XLA's threads). So under asv (``ASV=true``, which asv
sets for its benchmark processes) :func:`load` builds the grid in a short-lived subprocess
and reads it back as JSON: the server never starts JAX; each forked benchmark imports what
it needs itself.
"""
from __future__ import annotations

import functools
import hashlib
import importlib
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import odeverify
from odeverify import backends
from odeverify.problems import KNOWN_TAGS, PROBLEMS, Problem, select

#: environment variable that selects the grid, and its values
GRID_VAR = "ODEVERIFY_ASV_GRID"
GRIDS = ("small", "large")


def grid_name(environ: Any = None) -> str:
    """The grid selected by ``ODEVERIFY_ASV_GRID`` (``small`` when unset)."""
    value = (os.environ if environ is None else environ).get(GRID_VAR, "small") or "small"
    if value not in GRIDS:
        raise ValueError(f"{GRID_VAR}={value!r}, but it must be one of {', '.join(GRIDS)} (unset means small)")
    return value


GRID = grid_name()
LARGE = GRID == "large"

#: the devices a suite can run on; ``cuda`` rows are in the grid only where an installed backend
#: has a GPU here (:func:`grid_devices`), and skipped where their backend has none
DEVICES = ("cpu", "cuda")
#: the placeholder parameter of a grid that is empty today (a registry without entries yet)
NONE = "(none)"

#: the representative method of a backend other than the NumPy reference (see representative)
REPRESENTATIVE_TABLEAU = "dopri5"
REPRESENTATIVE_STIFF = ("radau_iia5", "radau", "kvaerno5")

# --- problems ---------------------------------------------------------------------------------
#: small grid: a Neural-ODE field (cached reference) and a nonlinear, time-dependent problem with
#: a closed form (linear autonomous problems cannot tell RK methods of one order apart)
SMALL_PROBLEMS = ("mlp_tanh_2x16", "warped_fast")
#: problems of the order-deficit benchmark: each method's order is confirmed on one of these
CURATED = ("warped_oscillatory", "warped_fast")
#: the order deficit is rounded to this many decimals: a refactor that only changes round-off
#: moves a fitted slope by ~1e-4, which must not read as a 10 % regression of a 0.0005 deficit
ORDER_DECIMALS = 2
#: finest step count of the order sweeps (the property's default is 4096): slopes agree with the
#: full sweep to ~0.02 on the curated problems and the implicit methods' sweeps cost 3-5x less
ORDER_N_MAX = 1024
#: the order-deficit parameter meaning "the best of CURATED"
CURATED_SET = "curated"
SMALL_GRADIENT_PROBLEMS = ("mlp_tanh_2x16",)
#: the gradient mode of a backend other than the reference in the small grid: the first of these
#: it declares, else its first mode. diffrax's compile and trace took 9-31 s per mode and per
#: process (asv makes one process per row, round and commit): its five modes cost the small
#: grid's asv continuous 7 minutes per commit and round; the large grid keeps every mode
REPRESENTATIVE_GRADIENT_MODES = ("adjoint", "backsolve")


def _names(problems: Iterable[Problem]) -> list[str]:
    return [p.name for p in problems]


def nonstiff_problems() -> list[str]:
    if not LARGE:
        return [p for p in SMALL_PROBLEMS if p in PROBLEMS]
    return _names(select(exclude=("stiff",)) if "stiff" in KNOWN_TAGS else select())


def stiff_problems() -> list[str]:
    """Problems tagged ``stiff`` (the first one in the small grid), or the placeholder."""
    found = _names(select("stiff")) if "stiff" in KNOWN_TAGS else []
    found = found if LARGE else found[:1]
    return found or [NONE]


def gradient_problems() -> list[str]:
    if LARGE:
        return _names(select("neural"))
    return [p for p in SMALL_GRADIENT_PROBLEMS if p in PROBLEMS]


def order_problem_sets() -> list[str]:
    return [CURATED_SET] + (list(CURATED) if LARGE else [])


# --- backends and methods -----------------------------------------------------------------------
def installed_backends() -> list[str]:
    """Every registered backend whose library is installed here."""
    return [name for name in backends.names() if backends.get(name).available()]


def _methods(backend: str) -> dict[str, Any]:
    return dict(backends.get(backend).capabilities().methods)


def is_implicit(backend: str, info: Any) -> bool:
    """Whether a method solves (non)linear systems: the backend's claim, or for the reference
    backends the solver's own flag (``odeverify.SOLVERS``)."""
    if getattr(info, "implicit", False):
        return True
    if backend.startswith("reference") and info.name in odeverify.SOLVERS:
        return bool(getattr(odeverify.SOLVERS.get(info.name), "implicit", False))
    return False


def representative(backend: str, *, implicit: bool = False) -> str | None:
    """One method of ``backend`` for the small grid (None when it has none of the kind): the one
    named or sharing the tableau of :data:`REPRESENTATIVE_TABLEAU` (non-stiff) or one of
    :data:`REPRESENTATIVE_STIFF` (stiff), else the first adaptive method of the kind."""
    kind = [m for m in _methods(backend).values() if is_implicit(backend, m) == implicit]
    prefer = REPRESENTATIVE_STIFF if implicit else (REPRESENTATIVE_TABLEAU,)
    for name in prefer:
        for m in kind:
            if name in (m.tableau, m.name.lower()):
                return m.name
    pick = [m for m in kind if m.adaptive] or kind
    return pick[0].name if pick else None


def forward_cases(*, stiff: bool = False, fixed_only: bool = False) -> list[str]:
    """``backend:method`` cases.

    Non-stiff: every method of the NumPy reference, one representative of each other
    installed backend. Stiff: the adaptive implicit methods of the NumPy reference and one of
    each backend other than the reference (the reference on PyTorch, JAX and array-api-strict
    computes the same numbers 2-40x slower in eager mode: the library-agreement property
    covers it). The large grid takes every method (of the kind) of every installed backend.
    ``fixed_only``: only methods with a fixed-step mode.
    """
    out: list[str] = []
    for backend in installed_backends():
        methods = _methods(backend)
        kind = {n: m for n, m in methods.items()
                if not stiff or (is_implicit(backend, m) and m.adaptive)}
        if backend == "reference" or LARGE:
            names = list(kind)
        elif stiff and backend.startswith("reference"):
            names = []
        else:
            rep = representative(backend, implicit=stiff)
            names = [rep] if rep in kind else []
        out += [f"{backend}:{n}" for n in names if methods[n].fixed or not fixed_only]
    return out or [NONE]


def order_cases() -> list[str]:
    """Fixed-step cases whose order can be swept: the NumPy reference (every backend: large)."""
    if LARGE:
        return forward_cases(fixed_only=True)
    return [f"reference:{n}" for n, m in _methods("reference").items() if m.fixed]


# --- gradients --------------------------------------------------------------------------------
def gradient_api() -> tuple[Any, Callable | None]:
    """(GRADIENT_MODES registry or None, value_and_grad or None) from odeverify.gradients."""
    try:
        mod = importlib.import_module("odeverify.gradients")
    except ImportError:
        return None, None
    return getattr(mod, "GRADIENT_MODES", None), getattr(mod, "value_and_grad", None)


def gradient_cases() -> list[str]:
    """``backend:method:mode``: every registered gradient mode (``GRADIENT_MODES``) on the
    PyTorch reference with dopri5 (JAX too, and every explicit method, in the large grid), and
    one mode a backend declares in ``Capabilities.gradient_modes`` (see
    :data:`REPRESENTATIVE_GRADIENT_MODES`) with its representative method (the large grid: every
    declared mode with every explicit method)."""
    modes, value_and_grad = gradient_api()
    installed = installed_backends()
    out: list[str] = []
    if modes is not None and value_and_grad is not None:
        for backend in ("reference-torch", "reference-jax") if LARGE else ("reference-torch",):
            if backend not in installed:
                continue
            library = getattr(backends.get(backend), "library", "numpy")
            methods = ([n for n, m in _methods(backend).items() if not is_implicit(backend, m)] if LARGE
                       else [REPRESENTATIVE_TABLEAU])
            for name, mode in modes.items():
                if library in tuple(getattr(mode, "libraries", (library,))):
                    out += [f"{backend}:{m}:{name}" for m in methods]
    for backend in installed:
        if backend.startswith("reference"):
            continue
        b = backends.get(backend)
        declared = tuple(getattr(b.capabilities(), "gradient_modes", ()))
        if not declared or not callable(getattr(b, "gradient", None)):
            continue
        rep = representative(backend)
        methods = ([n for n, m in _methods(backend).items() if not is_implicit(backend, m)] if LARGE
                   else [rep] if rep else [])
        if not LARGE:
            declared = representative_gradient_modes(declared)
        out += [f"{backend}:{m}:{mode}" for m in methods for mode in declared]
    return out or [NONE]


def representative_gradient_modes(declared: Iterable[str]) -> tuple[str, ...]:
    """The one mode of ``declared`` that the small grid benchmarks (empty when none is declared)."""
    declared = tuple(declared)
    for mode in REPRESENTATIVE_GRADIENT_MODES:
        if mode in declared:
            return (mode,)
    return declared[:1]


def grid_devices() -> list[str]:
    """The ``device`` parameter: ``cpu``, and ``cuda`` where an installed backend has a GPU here.
    Without a GPU the cuda rows could only be skipped, and each skipped row still costs asv a
    process per benchmark, round and commit (about half of the small grid's processes)."""
    gpu = any(dev in ("cuda", "gpu") for name in installed_backends()
              for dev in backends.get(name).capabilities().devices)
    return ["cpu", "cuda"] if gpu else ["cpu"]


#: the SDE step rules of the small grid (report --quick grades the same)
SDE_RULES = ("euler", "heun")


def sde_cases() -> list[str]:
    """``backend:method`` of every installed backend with SDE methods (not the reference's other
    array libraries, which run the same code): the methods of :data:`SDE_RULES`, or all (large)."""
    from odeverify import backends

    out = []
    for name in installed_backends():
        if name.startswith("reference-"):
            continue
        for m, info in backends.get(name).capabilities().sde_methods.items():
            if LARGE or str(info.reference or m) in SDE_RULES:
                out.append(f"{name}:{m}")
    return out or [NONE]


#: the CNF trace estimators of the small grid, per backend (``hutchinson{k}``: k probes); the
#: large grid takes every estimator of odeverify.problems.flows.TRACE_ESTIMATORS on every
#: reference backend, with 1 and 4 probes
CNF_SMALL = {"reference": ("jacobian", "jvp", "hutchinson1", "hutchinson4"),
             "reference-torch": ("jacobian", "autodiff", "hutchinson1")}
CNF_PROBES = (1, 4)


def cnf_cases() -> list[str]:
    """``backend:dopri5:estimator`` CNF density solves on the reference backends (autodiff needs
    PyTorch or JAX): :data:`CNF_SMALL`, or every estimator of every reference backend (large)."""
    from odeverify.problems.flows import TRACE_ESTIMATORS

    out = []
    for name in installed_backends():
        if not name.startswith("reference"):
            continue
        library = getattr(backends.get(name), "library", "numpy")
        every = [f"hutchinson{k}" if t == "hutchinson" else t for t in TRACE_ESTIMATORS
                 for k in (CNF_PROBES if t == "hutchinson" else (0,))]
        chosen = every if LARGE else list(CNF_SMALL.get(name, ()))
        out += [f"{name}:dopri5:{e}" for e in chosen if e != "autodiff" or library in ("torch", "jax")]
    return out or [NONE]


# === issue 12 families: events, latent ODEs at many observation times, CDEs ====================
# (suites/events.py, suites/irregular.py, suites/cde.py; kept apart from the grid above)

#: event location, small grid: these methods of each backend with an event adapter
#: (``Backend._event_adapter``); a backend not listed gets its adapter's first DEFAULT_METHODS
#: entry. The large grid adds every DEFAULT_METHODS entry. The reference's other array
#: libraries are left out: their event location is the same NumPy loop (``reference_events``).
EVENT_SMALL = {"reference": ("dopri5", "tsit5"), "scipy": ("RK45", "DOP853"), "torchdiffeq": ("dopri5",),
               "diffrax": ("Tsit5",)}


def event_cases() -> list[str]:
    """``backend:method`` of event location (``Backend.solve_event``): :data:`EVENT_SMALL`, or
    every default event method of every installed backend with an event adapter (large)."""
    from odeverify.backends._event_driver import adapter_of

    out: list[str] = []
    for name in installed_backends():
        if name.startswith("reference-"):
            continue
        ad = adapter_of(backends.get(name))
        if ad is None:
            continue
        small = [m for m in EVENT_SMALL.get(name, tuple(ad.DEFAULT_METHODS)[:1]) if m in ad.METHODS]
        chosen = list(dict.fromkeys(small + list(ad.DEFAULT_METHODS))) if LARGE else small
        out += [f"{name}:{m}" for m in chosen]
    return out or [NONE]


#: latent-ODE gradients, small grid: these modes per backend (the others: the representative
#: mode, :func:`representative_gradient_modes`); the large grid takes every declared mode that
#: works at a tolerance (not the fixed-step modes of ``GRADIENT_MODES``), on PyTorch and JAX
LATENT_SMALL_MODES = {"reference-torch": ("discrete", "backsolve", "checkpoint"),
                      "torchdiffeq": ("backprop", "adjoint"), "diffrax": ("recursive_checkpoint", "backsolve")}


def latent_cases() -> list[str]:
    """``backend:method:mode`` of the latent-ODE gradient (``latent_ode_value_and_grad``): each
    backend's representative method (the Dormand-Prince pair) with :data:`LATENT_SMALL_MODES`."""
    modes, _ = gradient_api()
    out: list[str] = []
    for name in installed_backends():
        b = backends.get(name)
        declared = tuple(getattr(b.capabilities(), "gradient_modes", ()))
        if not declared or (name.startswith("reference-") and name != "reference-torch" and not LARGE):
            continue
        rep = representative(name)
        if rep is None:
            continue
        if LARGE:
            chosen = [m for m in declared if not (name.startswith("reference") and modes is not None and m in modes
                                                  and getattr(modes.get(m), "fixed_step", False))]
        else:
            chosen = [m for m in LATENT_SMALL_MODES.get(name, representative_gradient_modes(declared)) if m in declared]
        out += [f"{name}:{rep}:{m}" for m in chosen]
    return out or [NONE]


def union_cases() -> list[str]:
    """``backend:method`` of the union-of-times batch against per-sample solves: the
    representative explicit method of every installed backend with ODE methods (not the
    reference's other array libraries); large: every adaptive explicit method of each."""
    out: list[str] = []
    for name in installed_backends():
        if name.startswith("reference-"):
            continue
        methods = _methods(name)
        if LARGE:
            names = [n for n, m in methods.items() if m.adaptive and not is_implicit(name, m)]
        else:
            rep = representative(name)
            names = [rep] if rep is not None else []
        out += [f"{name}:{n}" for n in names]
    return out or [NONE]


def cde_cases() -> list[str]:
    """``backend:method:mode`` of CDE solves and gradients: every installed backend with a CDE
    adapter (not the reference's other array libraries), its Dormand-Prince pair (the first
    quick CDE method otherwise) and its representative gradient mode; large: every adaptive
    default CDE method of each (the suite solves at a tolerance)."""
    from odeverify.backends._cde_driver import cde_capabilities, cde_methods

    out: list[str] = []
    for name in installed_backends():
        if name.startswith("reference-"):
            continue
        b = backends.get(name)
        caps = cde_capabilities(b)
        if caps is None or not caps.methods:
            continue
        modes = representative_gradient_modes(caps.gradient_modes)
        if not modes:
            continue
        quick = cde_methods(b, quick=True)
        pick = [m for m in caps.methods if REPRESENTATIVE_TABLEAU in (m.lower(), getattr(caps.methods[m], "tableau", ""))]
        every = [m for m in dict.fromkeys(quick + cde_methods(b)) if m in caps.methods and caps.methods[m].adaptive]
        methods = every if LARGE else (pick[:1] or quick[:1])
        out += [f"{name}:{m}:{modes[0]}" for m in methods]
    return out or [NONE]


def family_grid() -> dict[str, list[str]]:
    """The parameter lists of the issue-12 suites (merged into :func:`compute`)."""
    return {"events": event_cases(), "latent": latent_cases(), "union": union_cases(), "cde": cde_cases()}


def compute() -> dict[str, list[str]]:
    """Every parameter list of the suites, built in this process."""
    return {
        "devices": grid_devices(),
        "forward": forward_cases(),
        "stiff": forward_cases(stiff=True),
        "order": order_cases(),
        "gradient": gradient_cases(),
        "nonstiff_problems": nonstiff_problems(),
        "stiff_problems": stiff_problems(),
        "gradient_problems": gradient_problems() or [NONE],
        "order_problems": order_problem_sets(),
        "sde": sde_cases(),
        "cnf": cnf_cases(),
        **family_grid(),
    }


#: seconds the grid subprocess may take (it imports torch and JAX once)
SUBPROCESS_TIMEOUT = 300


def compute_in_subprocess() -> dict[str, list[str]]:
    """:func:`compute` in a fresh interpreter (this Python, this environment), read back as JSON."""
    root = str(Path(__file__).resolve().parents[1])
    code = ("import json, sys; sys.path.insert(0, sys.argv[1]); from suites import _grid;"
            " print(json.dumps(_grid.compute()))")
    out = subprocess.run([sys.executable, "-c", code, root], capture_output=True, text=True,
                         timeout=SUBPROCESS_TIMEOUT, env={**os.environ, GRID_VAR: GRID})
    if out.returncode != 0:
        raise RuntimeError(f"building the asv grid in a subprocess failed (exit {out.returncode}):\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


#: modules imported ahead in asv's fork server, so that each forked benchmark does not import
#: them again (1-4 s each here); importing them starts no thread (measured: 1 thread before and
#: after; JAX starts its pool only when it first creates an array)
PREIMPORT = ("torch", "torchdiffeq", "jax", "jax.numpy", "equinox", "diffrax", "array_api_strict")


def _threads() -> int | None:
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:  # not Linux: cannot tell, import nothing ahead
        return None


def preimport() -> list[str]:
    """Import :data:`PREIMPORT` (those installed) while the process stays single-threaded;
    stop at the first import that starts a thread. Returns the modules imported."""
    done: list[str] = []
    for name in PREIMPORT:
        before = _threads()
        if before is None or before > 1:
            break
        try:
            importlib.import_module(name)
        except ImportError:
            continue
        done.append(name)
    return done


def cache_path() -> Path | None:
    """Where the grid of this asv commit and environment is kept between asv's processes
    (discovery, fork server, each ``setup_cache`` imports the suites anew), or None outside a
    commit's run. The key covers the commit, the interpreter, the grid, and the newest
    modification time of odeverify's and the suites' sources (an edited registry rebuilds it)."""
    commit = os.environ.get("ASV_COMMIT")
    if not commit:
        return None
    sources = [Path(odeverify.__file__).parent, Path(__file__).resolve().parent]
    stamp = max(f.stat().st_mtime_ns for d in sources for f in d.rglob("*.py"))
    key = json.dumps([commit, sys.executable, GRID, [str(d) for d in sources], stamp])
    return Path(tempfile.gettempdir()) / f"odeverify-asv-grid-{hashlib.sha256(key.encode()).hexdigest()[:16]}.json"


def _cached_in_subprocess() -> dict[str, list[str]]:
    path = cache_path()
    if path is not None and path.exists():
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            pass  # a broken cache is rebuilt
    out = compute_in_subprocess()
    if path is not None:
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(out))
        os.replace(tmp, path)  # atomic: a concurrent reader sees the old file or the new one
    return out


@functools.lru_cache(maxsize=1)
def load() -> dict[str, list[str]]:
    """The grid (once per process). Under asv it is built in a subprocess (see the module
    docstring) and kept in a file per commit (:func:`cache_path`); in asv's fork server the
    array libraries are imported ahead (:func:`preimport`). Elsewhere it is built here."""
    server = "run_server" in sys.argv  # asv's fork server (asv_runner's ``benchmark.py run_server``)
    # the fork server is asv even where ASV=true is not set (`asv run --python=same` hung in the
    # first forked benchmark on JAX's threads, started by a grid built in the server itself)
    if os.environ.get("ASV") != "true" and not server:
        return compute()
    out = _cached_in_subprocess()
    if server:
        preimport()
    return out
