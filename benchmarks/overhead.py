"""Integrator overhead and work-for-accuracy of the reference, against torchdiffeq, diffrax and scipy.

Run:  OMP_NUM_THREADS=1 python benchmarks/overhead.py [--repeats 7] [--json out.json]

Measures (float64, one thread, medians of interleaved repeats):
1. per-evaluation cost of a Dopri5 solve divided by the cost of one bare evaluation of the
   field (state 32, hidden 128, two tanh layers, batch 256, rtol = atol = 1e-6, t in [0, 1]);
2. per-step overhead on a tiny field (state 2, hidden 16, batch 1):
   (solve time - nfev x bare evaluation time) / steps;
3. NFE needed for a given error on mlp_tanh_2x16: reference dopri5 vs scipy RK45 vs
   torchdiffeq dopri5 over a tolerance sweep.
Prints a Markdown table (docs/results.md says what it measures).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")

import numpy as np  # noqa: E402

import odeverify  # noqa: E402
from odeverify import _xp  # noqa: E402
from odeverify.metrics import scaled_error  # noqa: E402
from odeverify.problems import PROBLEMS  # noqa: E402
from odeverify.problems.neural import mlp_field  # noqa: E402


def median_time(fn, repeats: int, inner: int = 1) -> float:
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        out.append((time.perf_counter() - t0) / inner)
    return statistics.median(out)


def torch_setup():
    torch = _xp.require("torch")
    torch.set_num_threads(1)
    return torch


def overhead_case(state: int, hidden: int, batch: int, repeats: int, libs: list[str], t1: float) -> dict:
    prob = mlp_field(state, hidden, 2, "tanh", seed=2)
    rng = np.random.default_rng(0)
    y0_np = rng.standard_normal((batch, state)) * 0.5
    tol = 1e-6
    res: dict = {"state": state, "hidden": hidden, "batch": batch, "rtol": tol, "atol": tol, "t_span": [0.0, t1]}
    torch = torch_setup()
    xp = _xp.get_namespace("torch")
    f = prob.vector_field(xp, torch.float64)
    y0 = torch.asarray(y0_np, dtype=torch.float64)
    t_scalar = torch.asarray(0.0, dtype=torch.float64)

    def bare():
        f(t_scalar, y0)

    bare() 
    rows = {}
    runners = {}

    def ref():
        return odeverify.solve(f, y0, (0.0, t1), method="dopri5", rtol=tol, atol=tol)

    sol = ref()
    runners["reference (torch)"] = (ref, sol.stats.nfev, sol.stats.accepted + sol.stats.rejected)

    if "torchdiffeq" in libs and _xp.available("torchdiffeq"):
        import torchdiffeq

        count = {"n": 0}

        def fc(t, y):
            count["n"] += 1
            return f(t, y)

        ts = torch.asarray([0.0, t1], dtype=torch.float64)

        def tdq():
            return torchdiffeq.odeint(fc, y0, ts, rtol=tol, atol=tol, method="dopri5")

        count["n"] = 0
        tdq()
        nfe = count["n"]
        runners["torchdiffeq"] = (lambda: torchdiffeq.odeint(f, y0, ts, rtol=tol, atol=tol, method="dopri5"), nfe, None)

    jax_bare = None
    if "diffrax" in libs and _xp.available("diffrax"):
        import jax
        import diffrax

        jax.config.update("jax_enable_x64", True)
        jxp = _xp.get_namespace("jax")
        fj = prob.vector_field(jxp, jax.numpy.float64)
        y0j = jax.numpy.asarray(y0_np)
        term = diffrax.ODETerm(lambda t, y, args: fj(t, y))

        @jax.jit
        def dsolve(y):
            return diffrax.diffeqsolve(term, diffrax.Dopri5(), 0.0, t1, None, y,
                                       stepsize_controller=diffrax.PIDController(rtol=tol, atol=tol),
                                       max_steps=100000)

        out = dsolve(y0j)
        jax.block_until_ready(out.ys)
        steps = int(out.stats["num_steps"])
        nfe = 6 * steps + 1  # FSAL dopri5: 6 new stages per step (rejected included) + 1
        fjit = jax.jit(lambda y: fj(jax.numpy.asarray(0.0), y))
        jax.block_until_ready(fjit(y0j))
        runners["diffrax (jit)"] = (lambda: jax.block_until_ready(dsolve(y0j).ys), nfe, steps)
        jax_bare = lambda: jax.block_until_ready(fjit(y0j))  # noqa: E731

    # interleave: one repeat of each runner in turn
    times: dict[str, list[float]] = {k: [] for k in runners}
    bare_t: list[float] = []
    jbare_t: list[float] = []
    inner_bare = 50 if batch > 1 else 500
    for _ in range(repeats):
        bare_t.append(median_time(bare, 1, inner_bare))
        if jax_bare:
            jbare_t.append(median_time(jax_bare, 1, inner_bare))
        for k, (fn, _, _) in runners.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    b = statistics.median(bare_t)
    jb = statistics.median(jbare_t) if jbare_t else None
    for k, (fn, nfe, steps) in runners.items():
        t = statistics.median(times[k])
        base = jb if k.startswith("diffrax") else b
        rows[k] = {"time_s": t, "nfev": nfe, "steps": steps, "bare_eval_s": base,
                   "cost_per_eval_over_bare": t / nfe / base}
        if steps:
            rows[k]["overhead_per_step_ms"] = (t - nfe * base) / steps * 1e3
    if "torchdiffeq" in rows:
        # torchdiffeq makes 6 evaluations per step (FSAL) + 2 at start-up
        st = (rows["torchdiffeq"]["nfev"] - 2) / 6
        rows["torchdiffeq"]["steps"] = st
        rows["torchdiffeq"]["overhead_per_step_ms"] = (rows["torchdiffeq"]["time_s"] - rows["torchdiffeq"]["nfev"] * b) / st * 1e3
    res["bare_eval_torch_s"] = b
    res["bare_eval_jax_s"] = jb
    res["rows"] = rows
    return res


def work_for_accuracy(tols: list[float]) -> dict:
    prob = PROBLEMS.get("mlp_tanh_2x16")
    ref = prob.final_reference()
    out: dict = {"problem": prob.name, "rows": []}
    from scipy.integrate import solve_ivp

    f_np = prob.vector_field(_xp.get_namespace("numpy"))
    for tol in tols:
        row = {"tol": tol}
        sol = odeverify.solve(f_np, prob.y0_array(_xp.get_namespace("numpy")), prob.t_span, method="dopri5",
                              rtol=tol, atol=tol)
        row["reference"] = {"nfev": sol.stats.nfev, "error": scaled_error(sol.ys[-1], ref)}
        s = solve_ivp(lambda t, y: np.asarray(f_np(np.asarray(t), np.asarray(y))), prob.t_span, np.asarray(prob.y0),
                      method="RK45", rtol=tol, atol=tol)
        row["scipy RK45"] = {"nfev": int(s.nfev), "error": scaled_error(s.y[:, -1], ref)}
        if _xp.available("torchdiffeq"):
            import torch
            import torchdiffeq

            xp = _xp.get_namespace("torch")
            ft = prob.vector_field(xp, torch.float64)
            c = {"n": 0}

            def fc(t, y):
                c["n"] += 1
                return ft(t, y)

            ys = torchdiffeq.odeint(fc, torch.asarray(prob.y0, dtype=torch.float64),
                                    torch.asarray(prob.t_span, dtype=torch.float64), rtol=tol, atol=tol,
                                    method="dopri5")
            row["torchdiffeq dopri5"] = {"nfev": c["n"], "error": scaled_error(ys[-1].numpy(), ref)}
        out["rows"].append(row)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--json", default=None, help="write the results to this file too")
    ap.add_argument("--libs", default="torchdiffeq,diffrax")
    ap.add_argument("--t1", type=float, default=10.0,
                    help="end time; the default 10 gives ~20 steps so start-up costs do not dominate")
    args = ap.parse_args()
    libs = args.libs.split(",")
    result = {
        "machine": {"python": sys.version.split()[0], "platform": platform.platform(),
                    "processor": platform.processor(), "threads": os.environ.get("OMP_NUM_THREADS")},
        "neural_32x128_batch256": overhead_case(32, 128, 256, args.repeats, libs, args.t1),
        "tiny_2x16_batch1": overhead_case(2, 16, 1, args.repeats, libs, args.t1),
        "work_for_accuracy": work_for_accuracy([1e-4, 1e-6, 1e-8, 1e-10]),
    }
    try:
        import torch

        result["machine"]["torch"] = torch.__version__
    except ImportError:
        pass
    for key in ("neural_32x128_batch256", "tiny_2x16_batch1"):
        case = result[key]
        print(f"\n### {key} (t in [0, {case['t_span'][1]:g}]): bare evaluation {case['bare_eval_torch_s'] * 1e3:.3f} ms (torch)"
              + (f", {case['bare_eval_jax_s'] * 1e3:.3f} ms (jax jit)" if case["bare_eval_jax_s"] else ""))
        print("| library | time (ms) | NFE | cost per evaluation / bare | overhead per step (ms) |")
        print("|---|---|---|---|---|")
        for k, r in case["rows"].items():
            ops = r.get("overhead_per_step_ms")
            print(f"| {k} | {r['time_s'] * 1e3:.2f} | {r['nfev']} | {r['cost_per_eval_over_bare']:.3f} |"
                  f" {'-' if ops is None else f'{ops:.3f}'} |")
    print("\n### NFE for a given error (mlp_tanh_2x16, error at t1 scaled by max|y|)")
    wa = result["work_for_accuracy"]["rows"]
    libs_w = [k for k in wa[0] if k != "tol"]
    print("| tol | " + " | ".join(f"{k}: NFE / error" for k in libs_w) + " |")
    print("|---|" + "---|" * len(libs_w))
    for row in wa:
        print(f"| {row['tol']:.0e} | " + " | ".join(f"{row[k]['nfev']} / {row[k]['error']:.2e}" for k in libs_w) + " |")
    if args.json:
        tmp = args.json + ".tmp"
        with open(tmp, "w") as fh:
            json.dump(result, fh, indent=2)
        os.replace(tmp, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
