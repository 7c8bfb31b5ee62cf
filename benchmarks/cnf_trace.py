"""The trace of a continuous normalizing flow: exact (Jacobian, n JVPs, n autodiff JVPs) vs
Hutchinson, as the dimension grows. NFE, field-equivalent evaluations and wall time.

Run:  OMP_NUM_THREADS=1 python benchmarks/cnf_trace.py [--dims 2,4,8,16,32,64,128,256]
          [--batch 64] [--steps 8] [--rtol 1e-5] [--repeats 5] [--budget 60]
          [--libraries numpy,torch] [--probes 1,4] [--json cnf_trace.json] [--quick]

The field is ``mlp_field(n, max(64, n), 2, "tanh", seed=0)`` (FFJORD's concat-squash MLP), the
CNF ``CNFProblem`` on it with a standard normal base and a batch of ``--batch`` data points
(``default_rng(n)``, N(0, 1.5^2)); each row is one density solve of the whole batch
(``density_problem(trace, batch=B, ...)``, ``[z, l]`` from t=1 back to t=0) through
``odeverify.integrate.solve``, float64, one thread. Estimators: ``jacobian`` (the full analytic
Jacobian), ``jvp`` (n analytic JVPs with the unit vectors, vectorised), ``autodiff`` (n JVPs by
PyTorch's forward mode, a Python loop; torch only), ``hutchinson{k}`` (k Rademacher probes, fixed
per solve, analytic JVP). Two step rules:

- ``fixed``: rk4 with ``--steps`` steps, so every estimator does the same 4 * steps evaluations;
- ``adaptive``: dopri5 at rtol ``--rtol`` (atol = rtol * 1e-3): the estimators' NFE may differ
  (a Hutchinson estimate is a different ODE for the error controller).

Per row: NFE (calls of the augmented field); field-equivalents ``NFE * (1 + c)`` where one JVP
costs about one forward pass of the field and ``c`` is n for an exact trace (n JVPs, or a
Jacobian built from n columns) and k for Hutchinson; wall time, the median of ``--repeats``
solves interleaved between the estimators of one (n, library, step rule) after one warm-up
solve each (a group whose slowest warm-up exceeds ``--budget / repeats`` seconds takes fewer
repeats, at least one); and the ratio of each estimator's median to Hutchinson-1's in the same
run (the machine is shared: ratios from one run, not across runs).

The script's result is the crossover dimension per (library, step rule, exact estimator,
Hutchinson k): the smallest n of the grid from which Hutchinson's median time is below the exact
estimator's at that n and at every larger n of the grid ("none" when it never is, "< min" when
it is already at the smallest n).

Then the Hutchinson log-density error vs the number of probes (``--error-dim``, default 16;
probes 1, 2, 4, 8, 16, 32; ``--seeds`` probe seeds, default 32): every solve is rk4 with the same
steps, so z's trajectory and the RK stages are the same in every solve, and the error of
log p(x) against the exact (jvp) trace is the estimator's alone:
``(1/k) sum_j (v_j^T A v_j - tr A)`` with ``A`` the RK-weighted sum of the stage Jacobians.
``A`` comes from a solve of ``[z, vec J]`` with the same rk4 steps (so the same ``A``), and the
predicted RMS error is ``sqrt(mean_x 2 (|A_sym|_F^2 - sum_i A_ii^2) / k)`` (Rademacher probes:
Hutchinson 1989). The measured RMS is over seeds and data points.
``--quick``: dims 2, 8, 32; numpy and torch; 3 repeats; 8 seeds.
"""
from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from odeverify import _xp  # noqa: E402
from odeverify.integrate import solve  # noqa: E402
from odeverify.problems.flows import CNFProblem, DiagonalGaussian, mlp_field  # noqa: E402
from sde import write_json  # noqa: E402  (benchmarks/ is sys.path[0] when this runs as a script)

EXACT = ("jacobian", "jvp", "autodiff")
ERROR_PROBES = (1, 2, 4, 8, 16, 32)


def cnf_for(n: int, batch: int) -> CNFProblem:
    fld = mlp_field(n, max(64, n), 2, "tanh", seed=0)
    data = 1.5 * np.random.default_rng(n).standard_normal((batch, n))
    return CNFProblem(name=f"bench_mlp{n}", field=fld, base=DiagonalGaussian.standard(n), data=data)


def estimators(library: str, probes: list[int]) -> list[tuple[str, str, int]]:
    """(label, trace, k): the exact ones (autodiff on torch only) and Hutchinson with k probes."""
    exact = [(t, t, 0) for t in EXACT if t != "autodiff" or library == "torch"]
    return exact + [(f"hutchinson{k}", "hutchinson", k) for k in probes]


def solve_options(rule: str, args: argparse.Namespace) -> dict:
    if rule == "fixed":
        return {"method": "rk4", "n_steps": args.steps}
    return {"method": "dopri5", "rtol": args.rtol, "atol": args.rtol * 1e-3}


def field_equivalents(nfev: int, n: int, trace: str, k: int) -> int:
    """One forward pass plus the trace: n JVP-equivalents exact, k for Hutchinson."""
    return nfev * (1 + (k if trace == "hutchinson" else n))


def run_group(cnf: CNFProblem, library: str, rule: str, probes: list[int], args: argparse.Namespace) -> list[dict]:
    """Every estimator of one (n, library, step rule): warm-up, interleaved repeats, rows."""
    xp = _xp.get_namespace(library)
    y0 = xp.asarray(cnf.density_y0(), dtype=xp.float64)
    opts = solve_options(rule, args)
    cases = []
    for label, trace, k in estimators(library, probes):
        P = cnf.density_problem(trace, batch=y0.shape[0], n_probes=max(k, 1), seed=0)
        f = P.vector_field(xp, xp.float64)
        t = time.perf_counter()
        sol = solve(f, y0, P.t_span, **opts)
        first = time.perf_counter() - t
        cases.append({"label": label, "trace": trace, "k": k, "f": f, "span": P.t_span, "sol": sol,
                      "first_s": first, "times": []})
    repeats = max(1, min(args.repeats, int(args.budget / max(c["first_s"] for c in cases))))
    for _ in range(repeats):  # interleaved: a change of the machine's load hits every estimator alike
        for c in cases:
            t = time.perf_counter()
            solve(c["f"], y0, c["span"], **opts)
            c["times"].append(time.perf_counter() - t)
    ref = statistics.median(next(c for c in cases if c["label"] == "hutchinson1")["times"]) \
        if "hutchinson1" in [c["label"] for c in cases] else None
    exact_l = cnf.log_likelihood(_xp.to_numpy(cases[0]["sol"].ys)[-1])
    rows = []
    for c in cases:
        med = statistics.median(c["times"])
        sol = c["sol"]
        ll = cnf.log_likelihood(_xp.to_numpy(sol.ys)[-1]) if sol.success else None
        rows.append({"n": cnf.dim, "library": library, "rule": rule, "estimator": c["label"], "trace": c["trace"],
                     "probes": c["k"] or None, "status": sol.status.code, "nfev": sol.stats.nfev,
                     "steps": sol.stats.accepted, "field_equivalents": field_equivalents(sol.stats.nfev, cnf.dim,
                                                                                          c["trace"], c["k"]),
                     "median_s": med, "times_s": c["times"], "first_call_s": c["first_s"], "repeats": repeats,
                     "ratio_to_hutchinson1": med / ref if ref else None,
                     "rms_logp_diff_to_jacobian": None if ll is None else float(np.sqrt(np.mean((ll - exact_l) ** 2)))})
    return rows


def crossovers(rows: list[dict], probes: list[int]) -> list[dict]:
    """Per (library, rule, exact estimator, k): the smallest n from which Hutchinson-k is faster
    than the exact estimator at that n and every larger n of the grid."""
    out = []
    keys = sorted({(r["library"], r["rule"]) for r in rows})
    for library, rule in keys:
        group = [r for r in rows if r["library"] == library and r["rule"] == rule]
        dims = sorted({r["n"] for r in group})
        t = {(r["n"], r["estimator"]): r["median_s"] for r in group}
        for exact in EXACT:
            if not any(r["estimator"] == exact for r in group):
                continue
            for k in probes:
                faster = [t[(n, f"hutchinson{k}")] < t[(n, exact)] for n in dims]
                at = None
                for i in range(len(dims)):
                    if all(faster[i:]):
                        at = dims[i]
                        break
                ratio = {n: t[(n, exact)] / t[(n, f"hutchinson{k}")] for n in dims}
                out.append({"library": library, "rule": rule, "exact": exact, "probes": k, "crossover_n": at,
                            "below_grid": at == dims[0], "exact_over_hutchinson": ratio})
    return out


def hutchinson_error(n: int, args: argparse.Namespace) -> list[dict]:
    """Measured RMS log-density error of Hutchinson-k against the exact trace (same rk4 steps),
    over ``args.seeds`` probe seeds and the batch, and the predicted RMS from A (module docstring)."""
    xp = _xp.get_namespace("numpy")
    cnf = cnf_for(n, args.batch)
    y0 = cnf.density_y0()
    opts = {"method": "rk4", "n_steps": args.steps}
    P = cnf.density_problem("jvp")
    exact = cnf.log_likelihood(solve(P.vector_field(xp, np.float64), y0, P.t_span, **opts).ys[-1])
    f, _, jac = cnf.field.bound(xp, np.float64)

    def zA(t, y):  # [z, vec J]: with the same rk4 steps its A is the RK-weighted sum of stage Jacobians
        z = y[..., :n]
        return np.concatenate([f(t, z), jac(t, z).reshape(z.shape[:-1] + (n * n,))], axis=-1)

    yA = np.concatenate([y0[:, :n], np.zeros((y0.shape[0], n * n))], axis=1)
    A = solve(zA, yA, P.t_span, **opts).ys[-1][:, n:].reshape(-1, n, n)
    S = 0.5 * (A + np.swapaxes(A, 1, 2))
    var1 = 2.0 * (np.sum(S * S, axis=(1, 2)) - np.sum(np.diagonal(S, axis1=1, axis2=2) ** 2, axis=1))
    rows = []
    for k in ERROR_PROBES:
        errs = []
        for seed in range(args.seeds):
            Q = cnf.density_problem("hutchinson", batch=y0.shape[0], n_probes=k, seed=seed)
            errs.append(cnf.log_likelihood(solve(Q.vector_field(xp, np.float64), y0, Q.t_span, **opts).ys[-1]) - exact)
        e = np.asarray(errs)
        rms = float(np.sqrt(np.mean(e**2)))
        pred = float(np.sqrt(np.mean(var1) / k))
        rows.append({"n": n, "probes": k, "seeds": args.seeds, "batch": int(y0.shape[0]), "rms_error": rms,
                     "predicted_rms": pred, "mean_error": float(np.mean(e)),
                     "mean_error_se": float(np.std(e) / math.sqrt(e.size))})
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dims", default="2,4,8,16,32,64,128,256")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--rtol", type=float, default=1e-5)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--budget", type=float, default=60.0, help="seconds of repeats per group, about")
    ap.add_argument("--libraries", default="numpy,torch")
    ap.add_argument("--probes", default="1,4")
    ap.add_argument("--rules", default="fixed,adaptive")
    ap.add_argument("--error-dim", type=int, default=16)
    ap.add_argument("--seeds", type=int, default=32)
    ap.add_argument("--json", default=None)
    ap.add_argument("--quick", action="store_true", help="dims 2, 8, 32; 3 repeats; 8 seeds")
    args = ap.parse_args(argv)
    if args.quick:
        args.dims, args.repeats, args.seeds = "2,8,32", 3, 8

    def ints(text: str, name: str) -> list[int]:
        try:
            vals = [int(v) for v in text.split(",") if v.strip()]
        except ValueError:
            vals = []
        if not vals or min(vals) < 1:
            ap.error(f"--{name}={text!r}: expected comma-separated positive integers")
        return vals

    dims, probes = ints(args.dims, "dims"), ints(args.probes, "probes")
    if 1 not in probes:
        ap.error(f"--probes={args.probes!r}: must include 1 (the ratios are to Hutchinson-1)")
    libraries = [v.strip() for v in args.libraries.split(",") if v.strip()]
    for lib in libraries:
        if lib not in ("numpy", "torch") or not _xp.available(lib):
            ap.error(f"--libraries: {lib!r} is not numpy or torch, or is not installed")
    rules = [v.strip() for v in args.rules.split(",") if v.strip()]
    if not rules or set(rules) - {"fixed", "adaptive"}:
        ap.error(f"--rules={args.rules!r}: expected some of fixed, adaptive")
    if args.batch < 1 or args.steps < 1 or args.repeats < 1 or args.seeds < 2 or not args.rtol > 0:
        ap.error("--batch, --steps, --repeats must be >= 1, --seeds >= 2 and --rtol > 0")
    if "torch" in libraries:
        import torch

        torch.set_num_threads(1)
    print(f"mlp_field(n, max(64, n), 2, tanh), batch {args.batch}, float64, one thread; fixed: rk4 {args.steps}"
          f" steps; adaptive: dopri5 rtol {args.rtol:g}; wall: median of <= {args.repeats} interleaved repeats")
    print("| n | library | rule | estimator | NFE | field-equivalents | wall [ms] | x hutchinson1 | repeats |")
    print("|---|---|---|---|---|---|---|---|---|")
    rows: list[dict] = []
    for n in dims:
        cnf = cnf_for(n, args.batch)
        for library in libraries:
            for rule in rules:
                for r in run_group(cnf, library, rule, probes, args):
                    rows.append(r)
                    print(f"| {n} | {library} | {rule} | {r['estimator']} | {r['nfev']} | {r['field_equivalents']} |"
                          f" {1e3 * r['median_s']:.2f} | {r['ratio_to_hutchinson1']:.2f} | {r['repeats']} |",
                          flush=True)
    cross = crossovers(rows, probes)
    print("\nCrossover: the smallest n of the grid from which Hutchinson-k is faster than the exact estimator"
          " (at that n and every larger one)")
    print("| library | rule | exact | k | crossover n | exact / hutchinson at each n |")
    print("|---|---|---|---|---|---|")
    for c in cross:
        at = "none" if c["crossover_n"] is None else (f"<= {c['crossover_n']}" if c["below_grid"]
                                                       else str(c["crossover_n"]))
        ratios = ", ".join(f"{n}: {v:.2g}" for n, v in c["exact_over_hutchinson"].items())
        print(f"| {c['library']} | {c['rule']} | {c['exact']} | {c['probes']} | {at} | {ratios} |")
    errors = hutchinson_error(args.error_dim, args)
    print(f"\nHutchinson log-density error vs probes, n = {args.error_dim}, rk4 {args.steps} steps (same stages as"
          f" the exact solve), RMS over {args.seeds} seeds x {args.batch} points; predicted from A = sum of stage"
          " Jacobians")
    print("| probes | RMS error | predicted RMS | measured / predicted | mean error (SE) |")
    print("|---|---|---|---|---|")
    for e in errors:
        print(f"| {e['probes']} | {e['rms_error']:.3e} | {e['predicted_rms']:.3e} |"
              f" {e['rms_error'] / e['predicted_rms']:.3f} | {e['mean_error']:.1e} ({e['mean_error_se']:.1e}) |")
    if args.json:
        write_json(args.json, {"dims": dims, "batch": args.batch, "steps": args.steps, "rtol": args.rtol,
                               "repeats": args.repeats, "probes": probes, "libraries": libraries,
                               "load_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
                               "cpu_count": os.cpu_count(), "rows": rows, "crossovers": cross,
                               "hutchinson_error": errors})
    return 0


if __name__ == "__main__":
    sys.exit(main())
