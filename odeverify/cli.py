"""The ``odeverify`` command: ``list``, ``solve``, ``check`` and ``report``.

``--json`` output is stable (``docs/schemas.md``): every document carries
``"schema": "odeverify.<command>/<version>"``; fields are only ever added within a version.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import numpy as np

from . import __version__
from ._xp import ARRAY_LIBRARIES, MissingDependencyError

SOLVE_SCHEMA = "odeverify.solve/1"
LIST_SCHEMA = "odeverify.list/1"
CHECK_SCHEMA = "odeverify.check/1"


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = "  ".join(h.ljust(w) for h, w in zip(header, widths))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)) for r in rows]
    return "\n".join(out)


def _frac(x: Any) -> str:
    return "-" if x is None else str(x)


# ----------------------------------------------------------------------------- list
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
            caps = b.capabilities()
            row["methods"] = [m.name for m in caps.methods.values()]
            row["per_sample"] = caps.per_sample
            row["refused_options"] = {k: v for k, v in caps.options.items() if v is not True}
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
        print(_table([[b["name"], "yes" if b["available"] else f"no ({b['install_hint']})",
                       ", ".join(b["methods"][:8]) + (" ..." if len(b["methods"]) > 8 else "")]
                      for b in data["backends"]], ["name", "available", "methods"]))
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

    problem = PROBLEMS.get(args.problem)
    t_span = problem.t_span
    kwargs: dict[str, Any] = {"rtol": args.rtol, "atol": args.atol, "max_steps": args.max_steps}
    if args.dt is not None:
        kwargs["dt"] = args.dt
    if args.n_steps is not None:
        kwargs["n_steps"] = args.n_steps
    if args.t_eval:
        kwargs["t_eval"] = [float(v) for v in args.t_eval.split(",")]
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


def cmd_solve(args: argparse.Namespace) -> int:
    data = solve_data(args)
    if args.json:
        print(json.dumps(data, indent=2, sort_keys=True, default=str))
    else:
        print(f"{data['problem']} with {data['method']} ({data['backend']}/{data['library']}/{data['dtype']}):"
              f" {data['status']} - {data['message']}")
        st = data["stats"]
        print(f"  nfev={st['nfev']} accepted={st['accepted']} rejected={st['rejected']}")
        for t, y in zip(data["ts"], data["ys"]):
            print(f"  t={t:<12.6g} y=" + " ".join(f"{v: .10e}" for v in y[:6]) + (" ..." if len(y) > 6 else ""))
        if data["error"]:
            e = data["error"]
            print(f"  error at t1 against the {e['against']} solution: {e['scaled_max_error']:.3e}"
                  f" (max |y - y_ref| / max(1, max |y_ref|); {e['digits']:.1f} digits)")
    return 0 if data["status"] == "success" else 3


# ----------------------------------------------------------------------------- check
def cmd_check(args: argparse.Namespace) -> int:
    from .conformance import run_conformance, run_gradient_conformance

    if getattr(args, "gradients", False):
        records = run_gradient_conformance(args.backend, args.quick, library=args.library, modes=args.modes)
    else:
        records = run_conformance(backend=args.backend, library=args.library, quick=args.quick, methods=args.methods)
    failures = [r for r in records if r.verdict in ("fail", "error")]
    if args.json:
        print(json.dumps({"schema": CHECK_SCHEMA, "version": __version__, "backend": args.backend,
                          "records": [r.to_dict() for r in records],
                          "summary": {v: sum(r.verdict == v for r in records)
                                      for v in ("pass", "fail", "deviation", "error", "skip")}},
                         indent=2, sort_keys=True))
    elif args.matrix:
        print(verdict_matrix(records))
        print(f"\n{sum(r.verdict == 'pass' for r in records)} passed, {len(failures)} failed,"
              f" {sum(r.verdict == 'skip' for r in records)} inconclusive,"
              f" {sum(r.verdict == 'deviation' for r in records)} expected deviations")
    else:
        rows = []
        for r in records:
            m = "-" if r.measured is None else f"{r.measured:.3g}" if abs(r.measured) < 1e-2 else f"{r.measured:.3f}"
            e = "-" if r.expected is None else f"{r.expected:.3g}"
            rows.append([r.property, r.method, r.problem, m, e, r.verdict])
        backend = records[0].backend if records else args.backend
        print(f"odeverify {__version__} conformance of the {backend} backend")
        print(_table(rows, ["property", "method", "problem", "measured", "expected", "verdict"]))
        print(f"\n{sum(r.verdict == 'pass' for r in records)} passed, {len(failures)} failed,"
              f" {sum(r.verdict == 'skip' for r in records)} inconclusive,"
              f" {sum(r.verdict == 'deviation' for r in records)} expected deviations")
        for r in failures:
            print(f"  FAIL {r.describe()}")
        for r in records:
            if r.verdict in ("deviation", "skip"):
                print(f"  {'deviation' if r.verdict == 'deviation' else 'inconclusive'}: {r.describe()}")
    return 1 if failures else 0


#: a cell: FAIL/ERROR if any problem failed, else dev if any deviation, else ok if any
#: problem confirmed the property, else ~ (inconclusive everywhere)
_RANK = {"fail": 0, "error": 0, "deviation": 1, "pass": 2, "skip": 3}
_SYMBOL = {"fail": "FAIL", "error": "ERROR", "deviation": "dev", "skip": "~", "pass": "ok"}
_SHORT = {"algebraic_order": "algebraic", "convergence_order": "order", "dense_output_order": "dense",
          "backend_agreement": "agreement", "embedded_estimate_bound": "estimate",
          "tolerance_proportionality": "tolerance", "batch_behaviour": "batch",
          "precision_agreement": "float32", "reference_accuracy": "published",
          "gradient_accuracy": "grad-accuracy", "discrete_gradient_exactness": "grad-exact",
          "adjoint_convergence": "adjoint-conv", "fixed_step_adjoint_gap": "adjoint-gap",
          "reversibility_drift": "reversibility", "memory_scaling": "memory",
          "stiff_order": "stiff-order", "stiffness_handling": "stiffness"}


def verdict_matrix(records: list) -> str:
    """Methods x properties. A cell is FAIL/ERROR if any of the property's problems failed,
    else dev (a documented deviation), else ok (confirmed on at least one problem, refuted on
    none), else ~ (inconclusive on every problem)."""
    props = [p for p in _SHORT if any(r.property == p for r in records)]
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
    return _table(rows, ["method"] + [_SHORT[p] for p in props])


# ----------------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="odeverify", description="Verify and benchmark ODE solvers and their gradients.")
    p.add_argument("--version", action="version", version=f"odeverify {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    pl = sub.add_parser("list", help="tableaus, solvers and problems with their properties")
    pl.add_argument("what", nargs="?", default="all", choices=["all", "tableaus", "solvers", "backends", "problems"])
    pl.add_argument("--json", action="store_true", help="machine-readable output (schema odeverify.list/1)")
    pl.set_defaults(func=cmd_list)

    ps = sub.add_parser("solve", help="solve one problem of the library and print the solution")
    ps.add_argument("problem", help="a problem name (odeverify list problems)")
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

    pc = sub.add_parser("check", help="conformance run: orders, dense output, estimates, tolerance proportionality")
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
    pc.add_argument("--json", action="store_true", help="machine-readable output (schema odeverify.check/1)")
    pc.set_defaults(func=cmd_check)

    pr = sub.add_parser("report", help="run the checks and write a self-contained HTML accuracy report")
    pr.add_argument("--out", default="reports", help="output directory (default reports/): report.html, records.json")
    pr.add_argument("--backends", nargs="+", default=None,
                    help="backends to check (space or comma separated; default: every installed one)")
    pr.add_argument("--methods", default=None, help="comma-separated method names (default: all)")
    pr.add_argument("--quick", action="store_true",
                    help="explicit adaptive methods of order >= 3, fewer problems and tolerances (minutes)")
    pr.add_argument("--from-records", default=None, metavar="JSON",
                    help="render an existing records.json instead of running the checks")
    pr.set_defaults(func=cmd_report)
    return p


# ----------------------------------------------------------------------------- report
def cmd_report(args: argparse.Namespace) -> int:
    from .report import build_report, load_document, write_report

    if args.from_records:
        paths = write_report(load_document(args.from_records), args.out)
    else:
        methods = [m.strip() for m in args.methods.split(",") if m.strip()] if args.methods else None
        paths = build_report(args.out, backends=args.backends, quick=args.quick, methods=methods)
    print(f"wrote {paths.html} and {paths.records} ({paths.n_records} records)")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except (ValueError, TypeError, MissingDependencyError) as exc:
        print(f"odeverify {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
