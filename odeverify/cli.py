"""The ``odeverify`` command: ``list``, ``solve``, ``check`` and ``report``.

``--json`` output is stable (``docs/schemas.md``): every document carries
``"schema": "odeverify.<command>/<version>"``; fields are only ever added within a version.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shlex
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from ._xp import ARRAY_LIBRARIES, MissingDependencyError
from .records import FAILING

SOLVE_SCHEMA = "odeverify.solve/1"
LIST_SCHEMA = "odeverify.list/1"
CHECK_SCHEMA = "odeverify.check/1"

#: exit statuses (``odeverify --help`` lists them)
EXIT_OK = 0
EXIT_FAILED = 1  #: a check failed or raised (an ``error`` record)
EXIT_USAGE = 2  #: an option was refused before any work started
EXIT_SOLVE_FAILED = 3  #: ``solve`` stopped before t1
EXIT_UNAVAILABLE = 4  #: ``check``: nothing could be checked, the backend's library is not installed
EXIT_INTERNAL = 70  #: the run stopped on an unexpected exception (finished records kept)
EXIT_INTERRUPTED = 130  #: Ctrl-C (finished records kept)
EXIT_HELP = """exit status:
  0    success: every check passed, was inconclusive or an expected deviation
  1    a check failed, or raised an error
  2    usage error: an option was refused before any work started
  3    solve: the solve stopped before the end of the interval (the status says why)
  4    check: nothing could be checked, the backend's library is not installed (the
       message says what to install)
  70   check/report stopped on an unexpected error; the finished records are kept
  130  interrupted (Ctrl-C); check/report keep the finished records in a journal and
       print the command that resumes the run (--resume)
"""


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = "  ".join(h.ljust(w) for h, w in zip(header, widths))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)) for r in rows]
    return "\n".join(out)


def _frac(x: Any) -> str:
    return "-" if x is None else str(x)


# ----------------------------------------------------------------------------- list
def _solves(row: dict[str, Any]) -> str:
    """What a backend of ``list`` solves: ODEs, SDEs, CDEs, events (``check --<family>``)."""
    kinds = [k for k, on in (("ODE", row.get("methods")), ("SDE", row.get("sde_methods")),
                             ("CDE", row.get("cde_methods")), ("events", row.get("events"))) if on]
    return ", ".join(kinds) or "-"


def list_data() -> dict[str, Any]:
    from .problems import PROBLEMS
    from .solvers import SOLVERS
    from .tableaus import TABLEAUS, theory

    tableaus = []
    for name, t in TABLEAUS.items():
        stab = theory.stability_properties(t).as_dict()
        tableaus.append({
            "name": name,
            "stages": t.stages,
            "order": t.order,
            "embedded_order": t.embedded_order,
            "dense_order": t.dense.order if t.dense is not None else None,
            "explicit": t.explicit,
            "fsal": t.fsal,
            "exact": t.exact,
            "stability": {k: stab[k] for k in ("a_stable", "l_stable", "stiffly_accurate", "r_inf",
                                               "real_interval", "imaginary_interval")},
            "citation": t.citation,
        })
    solvers = []
    for name, s in SOLVERS.items():
        solvers.append({
            "name": name,
            "family": type(s).__name__,
            "order": s.order,
            "embedded_order": s.embedded_order,
            "adaptive": bool(s.adaptive),
            "dense_output": "continuous extension" if s.has_dense else "cubic Hermite",
            "dense_order": s.dense_order,
        })
    problems = []
    for name, p in PROBLEMS.items():
        kinds = sorted({r.kind for r in p.references})
        problems.append({
            "name": name,
            "n": p.n,
            "t_span": list(p.t_span),
            "tags": sorted(p.tags),
            "solution": "exact" if p.exact is not None else ("/".join(kinds) if kinds else "none"),
            "citation": p.citation,
        })
    from . import backends

    backend_rows = []
    for name in backends.names():
        b = backends.get(name)
        ok = b.available()
        row = {"name": name, "available": ok, "install_hint": b.install_hint, "methods": [], "per_sample": None}
        if ok:
            from .backends._cde_driver import cde_capabilities

            caps = b.capabilities()
            row["methods"] = [m.name for m in caps.methods.values()]
            row["per_sample"] = caps.per_sample
            row["refused_options"] = {k: v for k, v in caps.options.items() if v is not True}
            row["sde_methods"] = list(caps.sde_methods)
            cde = cde_capabilities(b)
            row["cde_methods"] = [] if cde is None else list(cde.methods)
            row["events"] = b._event_adapter() is not None
        backend_rows.append(row)
    return {"schema": LIST_SCHEMA, "version": __version__, "tableaus": tableaus, "solvers": solvers,
            "problems": problems, "backends": backend_rows}


def _stability_word(st: dict[str, Any]) -> str:
    """L-stable / A-stable (proven), else the real stability interval (measured)."""
    if st["l_stable"]:
        return "L-stable"
    if st["a_stable"]:
        return "A-stable"
    lo = st["real_interval"][0]
    return f"[{lo:.3g}, 0] real"


def cmd_list(args: argparse.Namespace) -> int:
    data = list_data()
    what = args.what
    if args.json:
        if what != "all":
            data = {"schema": data["schema"], "version": data["version"], what: data[what]}
        print(json.dumps(data, indent=2, sort_keys=True))
        return 0
    if what in ("all", "tableaus"):
        print("Tableaus (coefficients exact; orders proven by rooted-tree order conditions)")
        print(_table([[t["name"], t["stages"], t["order"], _frac(t["embedded_order"]), _frac(t["dense_order"]),
                       "yes" if t["fsal"] else "no", _stability_word(t["stability"]), t["citation"][:60]]
                      for t in data["tableaus"]],
                     ["name", "stages", "order", "embedded", "dense", "fsal", "stability", "citation"]))
        print()
    if what in ("all", "solvers"):
        print("Solvers (reference backend)")
        print(_table([[s["name"], s["family"], s["order"], _frac(s["embedded_order"]),
                       "adaptive" if s["adaptive"] else "fixed-step only", s["dense_output"]]
                      for s in data["solvers"]],
                     ["name", "family", "order", "embedded", "stepping", "dense output"]))
        print()
    if what in ("all", "backends"):
        print("Backends")
        rows = []
        for b in data["backends"]:
            shown = b["methods"] or b.get("sde_methods") or b.get("cde_methods") or []  # an SDE- or CDE-only library
            rows.append([b["name"], "yes" if b["available"] else f"no ({b['install_hint']})", _solves(b),
                         ", ".join(shown[:8]) + (" ..." if len(shown) > 8 else "")])
        print(_table(rows, ["name", "available", "solves", "methods"]))
        print()
    if what in ("all", "problems"):
        print("Problems")
        print(_table([[p["name"], p["n"], f"[{p['t_span'][0]:g}, {p['t_span'][1]:g}]", p["solution"],
                       ",".join(p["tags"])] for p in data["problems"]],
                     ["name", "n", "t_span", "solution", "tags"]))
    return 0


# ----------------------------------------------------------------------------- solve
def solve_data(args: argparse.Namespace) -> dict[str, Any]:
    from .metrics import as_numpy, scaled_error
    from .problems import PROBLEMS
    from .properties._common import run

    if getattr(args, "spec", None):
        from .problems.specs import from_spec

        if args.problem:
            raise ValueError(f"problem={args.problem!r} and --spec were both given; give one of them")
        problem = from_spec(args.spec)
    elif args.problem:
        problem = PROBLEMS.get(args.problem)
    else:
        raise ValueError("problem=None; give a problem name (odeverify list problems) or --spec '<json>'")
    t_span = problem.t_span
    kwargs: dict[str, Any] = {"rtol": args.rtol, "atol": args.atol, "max_steps": args.max_steps}
    if args.dt is not None:
        kwargs["dt"] = args.dt
    if args.n_steps is not None:
        kwargs["n_steps"] = args.n_steps
    if args.t_eval:
        try:
            kwargs["t_eval"] = [float(v) for v in args.t_eval.split(",")]
        except ValueError:
            raise ValueError(f"--t-eval={args.t_eval!r}, but expected comma-separated numbers (e.g. 0,0.5,1)"
                             ) from None
    if args.library != "numpy" and not args.backend.startswith("reference"):
        raise ValueError(f"--library={args.library!r}, but the array library is chosen only for the reference"
                         f" backend; {args.backend} uses its own (expected --backend reference or no --library)")
    sol = run(problem, args.method, backend=args.backend, library=args.library, dtype=args.dtype, **kwargs)
    ys = as_numpy(sol.ys)
    out: dict[str, Any] = {
        "schema": SOLVE_SCHEMA,
        "problem": problem.name,
        "method": sol.method,
        "backend": args.backend,
        "library": args.library,
        "dtype": args.dtype,
        "t_span": list(t_span),
        "status": sol.status.code,
        "message": sol.message,
        # where the solve stopped: t_span[1] on success; a failed solve's rows past it are NaN
        "t_final": _t_final(sol.t_final),
        "ts": [float(t) for t in sol.ts],
        "ys": [[float(v) for v in row] for row in ys],
        "stats": sol.stats.to_dict(),
        "timing": dict(sol.timing),
        "options": {k: v for k, v in kwargs.items()},
        "error": None,
    }
    ref = problem.final_reference()
    if ref is not None and sol.success and sol.ts[-1] == t_span[1]:
        err = scaled_error(ys[-1], ref)
        out["error"] = {
            "scaled_max_error": err,
            "digits": float("inf") if err == 0 else -float(np.log10(err)),
            "against": "exact" if problem.exact is not None else problem.references[-1].kind,
        }
    return out


def _t_final(t: Any) -> float | list[float] | None:
    if t is None:
        return None
    arr = np.asarray(t, dtype=np.float64)
    return float(arr) if arr.ndim == 0 else [float(v) for v in arr.ravel()]


def cmd_solve(args: argparse.Namespace) -> int:
    data = solve_data(args)
    if args.json:
        print(json.dumps(data, indent=2, sort_keys=True, default=str))
    else:
        print(f"{data['problem']} with {data['method']} ({data['backend']}/{data['library']}/{data['dtype']}):"
              f" {data['status']} - {data['message']}")
        if data["status"] != "success":
            t0, t1 = data["t_span"]
            where = "an unknown time" if data["t_final"] is None else f"t = {data['t_final']:.10g}"
            print(f"  stopped at {where} of [{t0:g}, {t1:g}]; output times after it are NaN")
        st = data["stats"]
        print(f"  nfev={st['nfev']} accepted={st['accepted']} rejected={st['rejected']}")
        for t, y in zip(data["ts"], data["ys"]):
            print(f"  t={t:<12.6g} y=" + " ".join(f"{v: .10e}" for v in y[:6]) + (" ..." if len(y) > 6 else ""))
        if data["error"]:
            e = data["error"]
            print(f"  error at t1 against the {e['against']} solution: {e['scaled_max_error']:.3e}"
                  f" (max |y - y_ref| / max(1, max |y_ref|); {e['digits']:.1f} digits)")
    return EXIT_OK if data["status"] == "success" else EXIT_SOLVE_FAILED


# ----------------------------------------------------------------------------- check
def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "odeverify"


def chosen_family(args: argparse.Namespace) -> Any:
    """The check family (``odeverify.families``) that ``check --<family>`` names, or None; two
    families, or a family with ``--gradients``, raise."""
    from .families import FAMILIES

    chosen = [name for name in FAMILIES.names() if getattr(args, name, False)]
    flags = (["--gradients"] if getattr(args, "gradients", False) else []) + [f"--{n}" for n in chosen]
    if len(flags) > 1:
        raise ValueError(f"{' and '.join(flags)}, but a check grades one family at a time; expected one of them")
    return FAMILIES.get(chosen[0]) if chosen else None


def check_plan(args: argparse.Namespace) -> tuple[Any, list[str], dict[str, Any]]:
    """Validate ``check``'s options before any work: (backend, the methods or gradient modes it
    will run, the run's description for the journal). A bad option raises ``ValueError``
    naming it, with the closest match."""
    from . import backends

    name = args.backend
    if args.gradients and name == "reference":
        name = "reference-torch" if args.library == "numpy" else f"reference-{args.library}"
    elif name == "reference" and args.library != "numpy":
        name = f"reference-{args.library}"
    b = backends.get(name)
    if args.library != "numpy" and not b.name.startswith("reference"):
        raise ValueError(f"--library={args.library!r}, but the array library is chosen only for the reference"
                         f" backend; {b.name} uses its own (expected --backend reference or no --library)")
    family = chosen_family(args)
    if family is not None:
        if args.modes is not None:
            raise ValueError(f"--modes={args.modes!r}, but check --{family.name} grades {family.unit_noun} (and"
                             " chooses the gradient modes itself); expected --methods")
        units = _split(args.methods, "--methods")
        if b.available():
            for m in units:
                family.validate(b.name, m)  # raises naming the method, with the closest match
            if not units:
                units = family.default_units(b.name, bool(args.quick))
        run = {"command": f"check --{family.name}", "backend": b.name, "library": args.library,
               "quick": bool(args.quick), "units": units, "version": __version__}
        return b, units, run
    if args.modes is not None and not args.gradients:
        raise ValueError(f"--modes={args.modes!r}, but gradient modes are graded only with --gradients;"
                         " expected --gradients --modes ... (or --methods for solver methods)")
    if args.methods is not None and args.gradients:
        raise ValueError(f"--methods={args.methods!r}, but check --gradients grades gradient modes (with one adaptive"
                         " and one fixed-step method); expected --modes")
    if args.gradients:
        units = _split(args.modes, "--modes")
        if b.available():
            caps = b.capabilities()
            known = list(caps.gradient_modes or ())
            for m in units:
                if m not in known:
                    raise ValueError(f"--modes={m!r}, but {b.name} has no such gradient mode; expected some of:"
                                     f" {', '.join(known) or '(none)'}{_did_you_mean(m, known)}")
            units = units or known
    else:
        caps = b.capabilities()
        units = _split(args.methods, "--methods")
        for m in units:
            caps.method(m, b.name)  # raises naming the method, with the closest match
        units = units or list(caps.methods)
    run = {"command": "check --gradients" if args.gradients else "check", "backend": b.name,
           "library": args.library, "quick": bool(args.quick), "units": units, "version": __version__}
    return b, units, run


def _split(text: str | None, option: str) -> list[str]:
    if text is None:
        return []
    names = [m.strip() for m in text.split(",") if m.strip()]
    if not names:
        raise ValueError(f"{option}={text!r}, but it names nothing; expected comma-separated names")
    return names


def _did_you_mean(name: str, known: list[str]) -> str:
    import difflib

    close = difflib.get_close_matches(name, known, n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def journal_path(run: dict[str, Any]) -> Path:
    """Where a run's journal lives unless ``--journal`` says: the user's cache directory, one
    file per set of options (so ``--resume`` finds the run it continues)."""
    digest = hashlib.sha256(json.dumps(run, sort_keys=True).encode()).hexdigest()[:12]
    return _cache_dir() / f"{run['command'].replace(' --', '-')}-{run['backend']}-{digest}.jsonl"


def _open_journal(path: Path, run: dict[str, Any], resume: bool, command: str) -> tuple[Any, Any]:
    """(journal, its contents when resumed, else None)."""
    from .journal import Journal, read

    if resume:
        if path.exists():
            journal, contents = Journal.resume(path, run)
            print(f"odeverify {command}: resuming from {path}: {contents.n_records} records already done",
                  file=sys.stderr)
            return journal, contents
        print(f"odeverify {command}: --resume, but there is no journal at {path}; starting from the beginning",
              file=sys.stderr)
    elif path.exists():
        try:
            n = read(path).n_records
        except ValueError:
            n = 0
        if n:
            print(f"odeverify {command}: starting over; the {n} records of an interrupted run in {path} are"
                  " discarded (--resume continues it)", file=sys.stderr)
    try:
        return Journal(path, run), None
    except OSError as exc:
        raise ValueError(f"--journal={str(path)!r}, but the journal cannot be written there ({exc}); expected a"
                         " writable file path") from exc


def resume_command(args: argparse.Namespace) -> str:
    argv = list(getattr(args, "argv", None) or sys.argv[1:])
    return "odeverify " + shlex.join(argv if "--resume" in argv else [*argv, "--resume"])


def stopped_line(command: str, n_kept: int, path: Path, args: argparse.Namespace, exc: BaseException) -> str:
    """The one line an interrupted (or crashed) run prints."""
    why = "interrupted" if isinstance(exc, KeyboardInterrupt) else f"stopped by {type(exc).__name__}: {exc}"
    return (f"odeverify {command}: {why}; {n_kept} finished records are kept in {path};"
            f" resume with: {resume_command(args)}")


def _verdict_word(v: str) -> str:
    return {"skip": "inconclusive", "fail": "FAIL", "error": "ERROR"}.get(v, v)


def _summary(counts: dict[str, int]) -> str:
    text = (f"{counts['pass']} passed, {counts['fail'] + counts['error']} failed, {counts['skip']} inconclusive,"
            f" {counts['deviation']} expected deviations")
    return text + (f", {counts['unavailable']} unavailable" if counts.get("unavailable") else "")


def _record_row(r: Any) -> list[str]:
    m = "-" if r.measured is None else f"{r.measured:.3g}" if abs(r.measured) < 1e-2 else f"{r.measured:.3f}"
    e = "-" if r.expected is None else f"{r.expected:.3g}"
    return [r.property, r.method, r.problem, m, e, _verdict_word(r.verdict)]


def _record_line(r: Any) -> str:
    p, m, prob, meas, exp, v = _record_row(r)
    return f"{v:<12} {p:<26} {m:<14} {prob:<20} measured {meas:>8}  expected {exp:>6}"


def parallel_options(args: argparse.Namespace, n_units: int | None = None) -> dict[str, Any] | None:
    """How ``-j/--timeout/--scheduler/--workers`` run a command's units (``n_units`` of them;
    None: not known before the run plans them), or None: in this process, one after the other
    (one job, or a single unit, and no time limit or cluster)."""
    from .parallel import default_jobs, validate_jobs, validate_timeout

    jobs = default_jobs() if args.jobs is None else validate_jobs(args.jobs, "--jobs")
    timeout = validate_timeout(args.timeout, "--timeout")
    if args.workers is not None:
        validate_jobs(args.workers, "--workers")
    if args.scheduler is not None and args.workers is not None:
        raise ValueError(f"--scheduler={args.scheduler!r} and --workers={args.workers!r}; expected one of them (an"
                         " existing Dask cluster's address, or the size of a local one)")
    if args.scheduler is None and args.workers is None and timeout is None and (jobs == 1 or (n_units is not None and n_units <= 1)):
        return None
    return dict(jobs=jobs, timeout=timeout, scheduler=args.scheduler, workers=args.workers)


def add_parallel_options(parser: argparse.ArgumentParser, unit: str) -> None:
    g = parser.add_argument_group("parallel runs", f"{unit} are independent: they run in separate processes, or"
                                  " on a Dask cluster, with the same records as a serial run")
    g.add_argument("-j", "--jobs", type=int, default=None, metavar="N",
                   help="worker processes (default: this machine's cores; 1 runs in this process)")
    g.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                   help="time limit of one unit; past it its process is stopped and the unit recorded as an error"
                        " (default with more than one job: 1800)")
    g.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="run on an existing Dask cluster (e.g. tcp://10.0.0.5:8786); needs odeverify[dask] and"
                        " odeverify installed on every worker")
    g.add_argument("--workers", type=int, default=None, metavar="N",
                   help="run on a local Dask cluster of N worker processes (needs odeverify[dask])")


def _check_units(args: argparse.Namespace, backend: str, names: list[str], contents: Any, pool: dict[str, Any],
                 bar: Any, on_record: Any) -> list:
    """``check``'s methods (or gradient modes) as parallel units: each finished case goes to
    ``on_record`` (the journal, the counts) when its unit comes back."""
    from .conformance import unit_cost, units as check_units
    from .families import units as family_units
    from .parallel import records_of, run_units

    family = chosen_family(args)
    resume = contents.cases if contents else {}
    if family is not None:
        us = family_units(family=family.name, backend=backend, quick=args.quick, names=names, resume=resume)
        priority = [1.0] * len(names)
    else:
        us = check_units(gradients=args.gradients, backend=backend, quick=args.quick, names=names, resume=resume)
        priority = [unit_cost(backend, n, args.gradients) for n in names]
    running: dict[int, str] = {}

    def on_start(i: int, u: Any) -> None:
        running[i] = u.method
        if bar is not None:
            bar.update("running " + ", ".join(running.values()))

    def on_case(i: int, key: str, r: Any) -> None:  # a case streamed from a worker
        on_record(r, key)

    def on_outcome(out: Any, u: Any) -> None:
        running.pop(out.index, None)
        for key, r in out.cases:  # those not streamed
            on_record(r, key)
        if out.error is not None:
            on_record(out.error_record(u), None)
        if bar is not None:
            bar.update("running " + ", ".join(running.values()) if running else u.method, weight=1.0)

    return records_of(run_units(us, on_start=on_start, on_outcome=on_outcome, on_case=on_case,
                                priority=priority,
                                **pool), us)


def cmd_check(args: argparse.Namespace) -> int:
    from .conformance import run_conformance, run_gradient_conformance
    from .records import count_verdicts
    from .report.progress import Progress

    backend, units, run = check_plan(args)  # every option is checked before any work
    family = chosen_family(args)
    pool = parallel_options(args, len(units) if backend.available() else 0)
    live = not args.json and sys.stdout.isatty() and sys.stderr.isatty()
    journal = contents = None
    path = Path(args.journal) if args.journal else journal_path(run)
    if backend.available():
        try:
            journal, contents = _open_journal(path, run, args.resume, "check")
        except ValueError:
            if args.journal or args.resume:
                raise
            # the default place is not writable: the check runs, it just cannot be resumed
            print(f"odeverify check: no journal ({path} cannot be written); an interrupted run will not be"
                  " resumable (--journal PATH chooses another place)", file=sys.stderr)
    counts = count_verdicts(contents.cases.values() if contents else [])
    # a short bar leaves an 80-column terminal room for the counts and the case running
    bar = Progress(max(len(units), 1), tty=live, label="odeverify check", width=10) \
        if units and backend.available() else None
    if bar is not None:
        bar.unit = "modes" if args.gradients else (family.unit_noun if family is not None else "methods")
        bar.heartbeat()
    started: list[str] = []

    def on_unit(name: str) -> None:  # a method (or gradient mode) starts: the previous one is done
        if bar is not None:
            bar.update(name, weight=1.0 if started else 0.0)
        started.append(name)

    def on_case(prop: str, method: str, problem: str) -> None:
        if bar is not None:
            bar.update(f"{prop} {method} on {problem}")

    def on_record(r: Any, key: str | None) -> None:
        if journal is not None and key is not None:  # None: a unit that did not finish (run again on resume)
            journal.case(key, r)
        counts[r.verdict] += 1
        if bar is not None:
            bar.status = ", ".join(f"{n} {_verdict_word(v)}" for v, n in counts.items() if n)
            if live:
                bar.write_above(_record_line(r))

    hooks = dict(on_record=on_record, on_case=on_case, resume=contents.cases if contents else {}, progress=on_unit)
    try:
        if pool is not None:
            records = _check_units(args, backend.name, units, contents, pool, bar, on_record)
        elif args.gradients:
            records = run_gradient_conformance(backend.name, args.quick, modes=units or None, **hooks)
        elif family is not None:
            records = family.run_units(backend=backend.name, quick=args.quick, units=units, **hooks)
        else:
            records = run_conformance(backend=backend.name, quick=args.quick, methods=units, **hooks)
    except (KeyboardInterrupt, Exception) as exc:  # noqa: BLE001 - one line, the work kept, no traceback
        if bar is not None:
            bar.close()
        if journal is None or isinstance(exc, (ValueError, TypeError)) and not journal.written and not contents:
            raise
        journal.close()
        kept = journal.written + (contents.n_records if contents else 0)
        print(stopped_line("check", kept, path, args, exc), file=sys.stderr)
        return EXIT_INTERRUPTED if isinstance(exc, KeyboardInterrupt) else EXIT_INTERNAL
    if bar is not None:
        bar.update("", weight=bar.total - bar.done)
        bar.close()
    if journal is not None:
        journal.discard()  # finished: the output below is the result
    counts = count_verdicts(records)
    failures = [r for r in records if r.verdict in FAILING]
    unavailable = [r for r in records if r.verdict == "unavailable"]
    if args.json:
        print(json.dumps({"schema": CHECK_SCHEMA, "version": __version__, "backend": backend.name,
                          "records": [r.to_dict() for r in records], "summary": counts},
                         indent=2, sort_keys=True))
    else:
        if args.matrix:
            print(verdict_matrix(records))
            print()
        elif not live:
            print(f"odeverify {__version__} conformance of the {backend.name} backend")
            print(_table([_record_row(r) for r in records],
                         ["property", "method", "problem", "measured", "expected", "verdict"]))
            print()
        print(_summary(counts))
        for r in failures:
            print(f"  FAIL {r.describe()}")
        for r in records:
            if r.verdict in ("deviation", "skip"):
                print(f"  {'deviation' if r.verdict == 'deviation' else 'inconclusive'}: {r.describe()}")
            elif r.verdict == "unavailable":
                print(f"  unavailable: {r.message}")
    if failures:
        return EXIT_FAILED
    if unavailable and len(unavailable) == len(records):
        for r in unavailable:
            print(f"odeverify check: nothing could be checked: {r.message}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    return EXIT_OK


#: a cell: FAIL/ERROR if any problem failed, else dev if any deviation, else ~ if any problem
#: was inconclusive, else ok (every problem confirmed the property); n/a: not installed
_RANK = {"fail": 0, "error": 0, "deviation": 1, "skip": 2, "pass": 3, "unavailable": 4}
_SYMBOL = {"fail": "FAIL", "error": "ERROR", "deviation": "dev", "skip": "~", "pass": "ok", "unavailable": "n/a"}
_SHORT = {"algebraic_order": "algebraic", "convergence_order": "order", "dense_output_order": "dense",
          "backend_agreement": "agreement", "embedded_estimate_bound": "estimate",
          "tolerance_proportionality": "tolerance", "batch_behaviour": "batch",
          "precision_agreement": "float32", "reference_accuracy": "published",
          "gradient_accuracy": "grad-accuracy", "discrete_gradient_exactness": "grad-exact",
          "adjoint_convergence": "adjoint-conv", "fixed_step_adjoint_gap": "adjoint-gap",
          "reversibility_drift": "reversibility", "memory_scaling": "memory",
          "stiff_order": "stiff-order", "stiffness_handling": "stiffness", "stiff_precision": "bari-tight",
          "max_order_sweep": "max-order", "work": "work", "available": "installed",
          "sde_strong_order": "strong", "sde_weak_order": "weak", "sde_pathwise_agreement": "pathwise",
          "sde_reversibility": "sde-reverse", "ito_stratonovich_consistency": "ito-strat",
          "brownian_consistency": "brownian", "sde_gradient_accuracy": "sde-grad",
          "sde_reversible_exactness": "sde-grad-rev", "sde_adjoint_convergence": "sde-adjoint",
          "cnf_log_density": "logp", "cnf_liouville": "liouville", "cnf_normalisation": "normalised",
          "cnf_invertibility": "invertible", "hutchinson_unbiased": "hutch-mean", "hutchinson_variance": "hutch-var",
          "trace_agreement": "traces", "cnf_gradient_accuracy": "cnf-grad", "flow_orientation": "orientation",
          "flow_injectivity": "injective", "flow_fold_step": "fold", "flow_unreachable_negation": "no-negation",
          "augmented_negation": "augmented", "resnet_euler": "resnet"}


def verdict_matrix(records: list) -> str:
    """Methods x properties: the worst verdict over the property's problems. A cell is
    FAIL/ERROR if any problem failed, else dev (a documented deviation), else ~ (inconclusive
    on at least one problem), else ok (confirmed on every problem); n/a: the library is not
    installed. The report's matrix follows the same rule."""
    props = [p for p in _SHORT if any(r.property == p for r in records)]
    props += [p for p in dict.fromkeys(r.property for r in records) if p not in _SHORT]  # a family's own checks
    methods: list[str] = []
    for r in records:
        if r.method not in methods:
            methods.append(r.method)
    rows = []
    for m in methods:
        row = [m]
        for p in props:
            vs = [r.verdict for r in records if r.method == m and r.property == p]
            row.append(_SYMBOL[min(vs, key=_RANK.__getitem__)] if vs else "")
        rows.append(row)
    return _table(rows, ["method"] + [_SHORT.get(p, p) for p in props])


# ----------------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="odeverify", description="Verify and benchmark ODE solvers and their gradients.",
                                epilog=EXIT_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"odeverify {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    pl = sub.add_parser("list", help="tableaus, solvers and problems with their properties")
    pl.add_argument("what", nargs="?", default="all", choices=["all", "tableaus", "solvers", "backends", "problems"])
    pl.add_argument("--json", action="store_true", help="machine-readable output (schema odeverify.list/1)")
    pl.set_defaults(func=cmd_list)

    ps = sub.add_parser("solve", help="solve one problem of the library and print the solution")
    ps.add_argument("problem", nargs="?", default=None, help="a problem name (odeverify list problems)")
    ps.add_argument("--spec", default=None, metavar="JSON",
                    help="a generated problem's one-line spec instead of a name (printed by explore and by"
                         " failing property tests): rebuilds that exact problem")
    ps.add_argument("--method", default="dopri5", help="the backend's method name (default dopri5)")
    ps.add_argument("--rtol", type=float, default=1e-6)
    ps.add_argument("--atol", type=float, default=1e-9)
    ps.add_argument("--dt", type=float, default=None, help="fixed step (fixed-step mode)")
    ps.add_argument("--n-steps", type=int, default=None, help="number of equal fixed steps")
    ps.add_argument("--t-eval", default=None, help="comma-separated output times")
    ps.add_argument("--max-steps", type=int, default=100_000)
    ps.add_argument("--backend", default="reference",
                    help="reference (see --library), scipy, torchdiffeq, diffrax or a plug-in")
    ps.add_argument("--library", default="numpy", choices=list(ARRAY_LIBRARIES))
    ps.add_argument("--dtype", default="float64", choices=["float64", "float32"])
    ps.add_argument("--json", action="store_true", help="machine-readable output (schema odeverify.solve/1)")
    ps.set_defaults(func=cmd_solve)

    pc = sub.add_parser("check", help="conformance run: orders, dense output, estimates, tolerance proportionality",
                        epilog=EXIT_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    pc.add_argument("--backend", default="reference",
                    help="reference, reference-torch, reference-jax, scipy, torchdiffeq, diffrax or a plug-in")
    pc.add_argument("--library", default="numpy", choices=list(ARRAY_LIBRARIES),
                    help="array library of the reference backend")
    pc.add_argument("--methods", default=None, help="comma-separated solver names (default: all)")
    pc.add_argument("--quick", action="store_true", help="fewer problems per property")
    pc.add_argument("--matrix", action="store_true",
                    help="print a methods x properties verdict matrix instead of one row per record")
    pc.add_argument("--gradients", action="store_true",
                    help="grade the backend's gradient modes against one oracle instead (accuracy, discrete"
                         " exactness, adjoint convergence); --backend reference means reference-torch")
    pc.add_argument("--modes", default=None, help="with --gradients: comma-separated gradient modes (default: all)")
    from .families import FAMILIES

    for name, family in FAMILIES.items():  # check --sde, --flows, --cde, --events, --irregular, plug-ins
        pc.add_argument(f"--{name}", action="store_true", help=family.help + (f" ({family.doc})" if family.doc else ""))
    pc.add_argument("--json", action="store_true", help="machine-readable output (schema odeverify.check/1)")
    pc.add_argument("--resume", action="store_true",
                    help="continue an interrupted run with the same options from its journal (finished cases are"
                         " not run again)")
    pc.add_argument("--journal", default=None, metavar="PATH",
                    help="where finished records are appended as they complete (default: a file per set of"
                         " options under $XDG_CACHE_HOME/odeverify, removed when the run finishes)")
    add_parallel_options(pc, "methods (gradient modes)")
    pc.set_defaults(func=cmd_check)

    add_explore_parser(sub)
    add_diagnose_parser(sub)

    pr = sub.add_parser("report", help="run the checks and write a self-contained HTML accuracy report",
                        epilog=EXIT_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    pr.add_argument("--out", default="reports", help="output directory (default reports/): report.html, records.json")
    pr.add_argument("--backends", nargs="+", default=None,
                    help="backends to check (space or comma separated; default: every installed one)")
    pr.add_argument("--methods", default=None, help="comma-separated method names (default: all)")
    pr.add_argument("--quick", action="store_true",
                    help="explicit adaptive methods of order >= 3, fewer problems and tolerances (minutes)")
    pr.add_argument("--from-records", default=None, metavar="JSON",
                    help="render an existing records.json instead of running the checks")
    pr.add_argument("--resume", action="store_true",
                    help="continue an interrupted report with the same options from OUT/records.journal.jsonl")
    add_parallel_options(pr, "report tasks (a method's conformance, a work-precision diagram, ...)")
    pr.set_defaults(func=cmd_report)
    return p


# ----------------------------------------------------------------------------- report
def cmd_report(args: argparse.Namespace) -> int:
    from .report import load_document, write_report

    if args.from_records:
        for flag, value in (("--resume", args.resume), ("--quick", args.quick), ("--methods", args.methods),
                            ("--backends", args.backends)):
            if value:
                raise ValueError(f"{flag}={value!r} together with --from-records, but a saved document is only"
                                 " rendered; expected --from-records JSON [--out DIR] alone")
        paths = write_report(load_document(args.from_records), args.out)
    else:
        from .journal import read
        from .report.output import open_report_run

        methods = _split(args.methods, "--methods") if args.methods is not None else None
        report = open_report_run(args.out, backends=args.backends, quick=args.quick, methods=methods,
                                 resume=args.resume)  # every option checked before any work
        pool = parallel_options(args)
        try:
            paths = report.build(parallel=pool)
        except (KeyboardInterrupt, Exception) as exc:  # noqa: BLE001 - one line, the work kept, no traceback
            report.journal.close()
            try:
                kept = read(report.journal.path).n_records
            except ValueError:
                kept = 0
            print(stopped_line("report", kept, report.journal.path, args, exc) + f"; the previous report in"
                  f" {args.out} is unchanged", file=sys.stderr)
            return EXIT_INTERRUPTED if isinstance(exc, KeyboardInterrupt) else EXIT_INTERNAL
    print(f"wrote {paths.html} and {paths.records} ({paths.n_records} records)")
    return EXIT_OK


# ----------------------------------------------------------------------------- explore
EXPLORE_SCHEMA = "odeverify.explore/1"


def add_explore_parser(sub: Any) -> None:
    pe = sub.add_parser("explore", help="hunt for counterexamples on generated problems against any backend,"
                        " shrink them and keep them for the next run")
    pe.add_argument("--backend", default="reference", help="any backend, a plug-in included (odeverify list backends)")
    pe.add_argument("--property", default=None,
                    help="comma-separated properties (default: every one that applies; --list shows them)")
    pe.add_argument("--methods", default=None, help="comma-separated methods of the backend (default: all)")
    pe.add_argument("--examples", type=int, default=None, help="examples per property and round (default 10)")
    pe.add_argument("--budget", type=float, default=None, metavar="SECONDS",
                    help="keep searching in rounds with fresh seeds until this many seconds are spent")
    pe.add_argument("--seed", type=int, default=None, help="hypothesis seed (default: random)")
    pe.add_argument("--dir", default=".odeverify/explore",
                    help="where the example database and failures.jsonl live (default .odeverify/explore)")
    pe.add_argument("--no-database", action="store_true", help="neither replay nor save examples")
    pe.add_argument("--replay", default=None, metavar="CASE",
                    help="run one case (the JSON line a finding prints) and print its record")
    pe.add_argument("--list", action="store_true", help="list the properties explore searches, and exit")
    pe.add_argument("--json", action="store_true", help="machine-readable output (schema odeverify.explore/1)")
    add_parallel_options(pe, "properties")
    pe.set_defaults(func=cmd_explore)


def cmd_explore(args: argparse.Namespace) -> int:
    from .explore import EXPLORATIONS, explore, load_families, run_case

    load_families()

    if args.list:
        for name, e in EXPLORATIONS.items():
            print(f"{name:26s} {e.description}")
        return EXIT_OK
    if args.replay:
        rec = run_case(args.replay)
        if args.json:
            print(json.dumps({"schema": EXPLORE_SCHEMA, "records": [rec.to_dict()]}, indent=2, sort_keys=True))
        else:
            print(rec.describe())
        return EXIT_FAILED if rec.verdict in ("fail", "error") else EXIT_OK
    split = (lambda v: [x.strip() for x in v.split(",") if x.strip()] if v else None)
    props = split(args.property)
    n_props = len(props) if props else len(EXPLORATIONS.names())
    result = explore(args.backend, properties=props, methods=split(args.methods),
                     examples=args.examples, budget=args.budget, seed=args.seed,
                     directory=None if args.no_database else args.dir, parallel=parallel_options(args, n_props))
    if args.json:
        print(json.dumps({"schema": EXPLORE_SCHEMA, "version": __version__, "backend": result.backend,
                          "elapsed": result.elapsed, "examples": result.examples,
                          "not_applicable": result.not_applicable,
                          "findings": [{"case": f.case, "record": f.record.to_dict()} for f in result.findings],
                          "known_deviations": [{"case": f.case, "record": f.record.to_dict()}
                                               for f in result.known]}, indent=2, sort_keys=True))
    else:
        total = sum(result.examples.values())
        print(f"odeverify {__version__} explore {result.backend}: {total} examples over"
              f" {len(result.examples)} properties in {result.elapsed:.0f} s")
        for f in result.findings:
            print(f.describe())
        for f in result.known:
            print(f.describe())
        for name, why in result.not_applicable.items():
            print(f"  not applicable: {name}: {why}")
        print(f"\n{len(result.findings)} counterexamples, {len(result.known)} known deviations re-found"
              + ("" if args.no_database else f"; examples kept in {args.dir}"))
    return EXIT_FAILED if result.failed else EXIT_OK


# ----------------------------------------------------------------------------- diagnose
def add_diagnose_parser(sub: Any) -> None:
    pd = sub.add_parser("diagnose", help="measure the failure modes of your own Neural ODE (instability, stiffness,"
                        " work, adjoint mismatch, solver dependence, gradients, chaos, sensitivity) and say what"
                        " to do about each", epilog=EXIT_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    pd.add_argument("field", help="the vector field f(t, z) as an import path: package.module:attr (or file.py:attr)")
    pd.add_argument("--z0", required=True, help="initial states (B, n): a .npy file, or a seeded distribution"
                    " normal:B[xN][:seed=S][:scale=s] / uniform:...")
    pd.add_argument("--t-span", required=True, help="t0,t1")
    pd.add_argument("--t-eval", default=None, help="comma-separated output times of your loss (default t0,t1)")
    pd.add_argument("--method", default=None, help="the solver you train with (default dopri5; odeverify list solvers)")
    pd.add_argument("--mode", default=None, help="the gradient mode you train with (backsolve, discrete, checkpoint,"
                    " interpolated, ...)")
    pd.add_argument("--rtol", type=float, default=None, help="your relative tolerance (default 1e-6)")
    pd.add_argument("--atol", type=float, default=None, help="your absolute tolerance (default 1e-9)")
    pd.add_argument("--quick", action="store_true", help="a smaller diagnosis: 4 samples for Jacobians and gradients,"
                    " fewer solvers and tolerances")
    pd.add_argument("--only", default=None, help="comma-separated measurements to run (default all)")
    pd.add_argument("--json", action="store_true", help="machine-readable output (schema odeverify.diagnose/1)")
    pd.add_argument("--html", default=None, metavar="OUT", help="also write the diagnosis as an HTML page to OUT")
    pd.set_defaults(func=cmd_diagnose)


def cmd_diagnose(args: argparse.Namespace) -> int:
    from .diagnose import diagnose
    from .report.diagnose import check_html_path, write_diagnosis
    from .report.progress import Progress

    html = check_html_path(args.html) if args.html else None  # refused before any work
    live = not args.json and sys.stdout.isatty() and sys.stderr.isatty()
    state: dict[str, Any] = {}

    def on_start(name: str, i: int, total: int) -> None:
        if "bar" not in state and not args.json:
            state["bar"] = Progress(total, tty=live, label="odeverify diagnose", width=10)
            state["bar"].unit = "measurements"
            state["bar"].heartbeat()
        if "bar" in state:
            state["bar"].update(name, weight=1.0 if i else 0.0)

    def on_record(r: Any) -> None:
        if live and "bar" in state:
            state["bar"].write_above(_record_line(r))

    only = _split(args.only, "--only") if args.only else None
    result = diagnose(args.field, args.z0, args.t_span, t_eval=args.t_eval, method=args.method, mode=args.mode,
                      rtol=args.rtol, atol=args.atol, quick=args.quick, only=only, progress=on_record,
                      on_start=on_start)
    if "bar" in state:
        state["bar"].update("", weight=1.0)
        state["bar"].close()
    doc = result.to_dict()
    if html is not None:
        write_diagnosis(doc, html)
    if args.json:
        print(json.dumps(doc, indent=2, sort_keys=True))
    else:
        print(f"odeverify {__version__} diagnose {args.field}: {result.model['library']} field, state"
              f" {result.model['state_dim']}, batch {result.model['batch']}, {result.model['method']}"
              f" rtol {result.model['rtol']:g}\n")
        print(result.table(width=shutil.get_terminal_size().columns if live else 110))
        if html is not None:
            print(f"wrote {html}")
    if not result.complete:
        print("odeverify diagnose: interrupted; the measurements above are the ones that finished", file=sys.stderr)
        return EXIT_INTERRUPTED
    return EXIT_FAILED if result.failed else EXIT_OK


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv = argv  # for the command that resumes an interrupted run
    try:
        return int(args.func(args))
    except (ValueError, TypeError, MissingDependencyError) as exc:
        print(f"odeverify {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"odeverify {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `odeverify explore --list | head`: the reader left, nothing went wrong
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - stdout must stay open until exit
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
