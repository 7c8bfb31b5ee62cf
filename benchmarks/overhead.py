"""Integrator overhead of the reference (eager, fused, compiled) against torchdiffeq, diffrax and scipy.

Run:  OMP_NUM_THREADS=1 python benchmarks/overhead.py [--repeats 7] [--json out.json]

Measures (float64, one thread, medians of interleaved repeats: one run of each runner in turn):
1. per-evaluation cost of a Dopri5 solve divided by the cost of one bare evaluation of the
   field (state 32, hidden 128, two tanh layers, batch 256, rtol = atol = 1e-6, t in [0, 10]);
2. per-step overhead on a tiny field (state 2, hidden 16, batch 1):
   (solve time - nfev x bare evaluation time) / attempted steps;
3. NFE needed for a given error on mlp_tanh_2x16: reference dopri5 vs scipy RK45 vs
   torchdiffeq dopri5 over a tolerance sweep.

Runners: the reference on PyTorch eager (``compiled=False``) and fused (``compiled=True``: one
``addmm`` per stage combination), on JAX eager and compiled (``compiled=True``: one jitted
function per step), torchdiffeq, diffrax (the whole solve jitted). The bare evaluation of the
PyTorch rows is one eager call; that of the JAX rows is one evaluation inside a compiled loop
(a jitted call's dispatch, printed too, is overhead of the caller, not of the field). JAX's
CPU client dispatches asynchronously unless ``JAX_CPU_ENABLE_ASYNC_DISPATCH=false``: its value
is printed and changes the JAX rows (docs/results.md).
Prints Markdown tables and the targets of issue 14 (docs/results.md says what they measure).
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


#: the clock every timing reads: wall time (default) or the process's CPU time (--clock cpu:
#: on a shared, oversubscribed machine it leaves out the time other processes held the core)
CLOCK = time.perf_counter


def median_time(fn, repeats: int, inner: int = 1) -> float:
    out = []
    for _ in range(repeats):
        t0 = CLOCK()
        for _ in range(inner):
            fn()
        out.append((CLOCK() - t0) / inner)
    return statistics.median(out)


def torch_setup():
    torch = _xp.require("torch")
    torch.set_num_threads(1)
    return torch


def _jax_setup():
    jax = _xp.require("jax")
    jax.config.update("jax_enable_x64", True)
    return jax


def _jax_step_breakdown(fj, y0j, repeats: int) -> dict:
    """Where a compiled reference step's time goes: the cached jitted step (the one the solves
    above use) called once from Python (dispatch, run, the norms back to the host), against
    the same traced step run 100 times inside one compiled loop (what the step costs once
    the loop is compiled too, as in diffrax)."""
    jax = _jax_setup()
    from odeverify.solvers.rk import CompiledJaxStep

    entry = next(v for k, v in CompiledJaxStep._cache.items() if k[0] is fj and v is not None and k[-1])
    v = entry.v
    host = np.asarray([1e-3, 0.0] + [v.c[i] * 1e-3 for i in range(1, v.stages)] + [1e-6, 1e-6])
    k1 = fj(jax.numpy.asarray(0.0), y0j)
    raw = entry._fn.__wrapped__  # the traced Python step of the cached jitted function

    def one_call():
        out = entry._fn(host, y0j, k1, None)
        np.asarray(out[-1])

    loop = jax.jit(lambda y, k: jax.lax.fori_loop(0, 100, lambda i, c: raw(host, c[0], c[2], None)[:3], (y, k, k)))
    jax.block_until_ready(loop(y0j, k1))
    one_call()
    calls, loops = [], []
    for _ in range(repeats):
        calls.append(median_time(one_call, 1, 200))
        loops.append(median_time(lambda: jax.block_until_ready(loop(y0j, k1)), 1, 3) / 100)
    return {"step_call_s": statistics.median(calls), "step_in_compiled_loop_s": statistics.median(loops)}


def overhead_case(state: int, hidden: int, batch: int, repeats: int, libs: list[str], t1: float) -> dict:
    """One field, every runner interleaved: one repeat of each in turn, medians reported."""
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
    #: name -> (run, nfev, steps, library of its bare evaluation)
    runners: dict[str, tuple] = {}

    def reference(field, y, compiled):
        def run():
            return odeverify.solve(field, y, (0.0, t1), method="dopri5", rtol=tol, atol=tol, compiled=compiled)
        return run

    for label, compiled in (("eager", False), ("fused", True)):
        run = reference(f, y0, compiled)
        sol = run()
        runners[f"reference {label} (torch)"] = (run, sol.stats.nfev, sol.stats.accepted + sol.stats.rejected, "torch")

    if "torchdiffeq" in libs and _xp.available("torchdiffeq"):
        import torchdiffeq

        count = {"n": 0}

        def fc(t, y):
            count["n"] += 1
            return f(t, y)

        ts = torch.asarray([0.0, t1], dtype=torch.float64)
        torchdiffeq.odeint(fc, y0, ts, rtol=tol, atol=tol, method="dopri5")
        nfe = count["n"]
        # torchdiffeq makes 6 evaluations per step (FSAL) + 2 at start-up
        runners["torchdiffeq"] = (lambda: torchdiffeq.odeint(f, y0, ts, rtol=tol, atol=tol, method="dopri5"), nfe,
                                  (nfe - 2) / 6, "torch")

    jax_bare = jax_loop_bare = None
    if "jax" in libs and _xp.available("jax"):
        jax = _jax_setup()
        jxp = _xp.get_namespace("jax")
        fj = prob.vector_field(jxp, jax.numpy.float64)
        y0j = jax.numpy.asarray(y0_np)
        for label, compiled in (("eager", False), ("compiled", True)):
            run = reference(fj, y0j, compiled)
            sol = run()  # compiles the step (once per field) outside the timed region
            runners[f"reference {label} (jax)"] = (run, sol.stats.nfev, sol.stats.accepted + sol.stats.rejected, "jax")
        res["jax_step_breakdown"] = _jax_step_breakdown(fj, y0j, repeats)

        if "diffrax" in libs and _xp.available("diffrax"):
            import diffrax

            term = diffrax.ODETerm(lambda t, y, args: fj(t, y))

            @jax.jit
            def dsolve(y):
                return diffrax.diffeqsolve(term, diffrax.Dopri5(), 0.0, t1, None, y,
                                           stepsize_controller=diffrax.PIDController(rtol=tol, atol=tol),
                                           max_steps=100000)

            out = dsolve(y0j)
            jax.block_until_ready(out.ys)
            steps = int(out.stats["num_steps"])  # attempted steps (rejected ones included)
            nfe = 6 * steps + 1  # FSAL dopri5: 6 new stages per attempted step + 1
            runners["diffrax (jit)"] = (lambda: jax.block_until_ready(dsolve(y0j).ys), nfe, steps, "jax")

        # a bare evaluation two ways: one jitted call (dispatch included), and one evaluation
        # inside a compiled loop (what it costs inside a compiled solver: the bare of the jax rows)
        fjit = jax.jit(lambda y: fj(jax.numpy.asarray(0.0), y))
        jax.block_until_ready(fjit(y0j))
        n_loop = 1000 if batch == 1 else 20
        floop = jax.jit(lambda y: jax.lax.fori_loop(0, n_loop, lambda i, z: fj(jax.numpy.asarray(0.0), z), y))
        jax.block_until_ready(floop(y0j))
        jax_bare = lambda: jax.block_until_ready(fjit(y0j))  # noqa: E731
        jax_loop_bare = lambda: jax.block_until_ready(floop(y0j))  # noqa: E731

    # interleave: one repeat of each runner in turn
    times: dict[str, list[float]] = {k: [] for k in runners}
    bare_t: list[float] = []
    jbare_t: list[float] = []
    jloop_t: list[float] = []
    inner_bare = 50 if batch > 1 else 500
    # each timed repeat of a runner calls it often enough to last ~20 ms (one call of the
    # slowest runners; ~80 of diffrax on the tiny field), so the clock's granularity and one
    # scheduler hiccup do not decide a median
    inner = {k: max(1, int(0.02 / max(median_time(fn, 1, 1), 1e-6))) for k, (fn, _, _, _) in runners.items()}
    for _ in range(repeats):
        bare_t.append(median_time(bare, 1, inner_bare))
        if jax_bare:
            jbare_t.append(median_time(jax_bare, 1, inner_bare))
            jloop_t.append(median_time(jax_loop_bare, 1, 1) / n_loop)
        for k, (fn, _, _, _) in runners.items():
            times[k].append(median_time(fn, 1, inner[k]))
    b = statistics.median(bare_t)
    jb = statistics.median(jbare_t) if jbare_t else None
    jl = statistics.median(jloop_t) if jloop_t else None
    for k, (fn, nfe, steps, lib) in runners.items():
        t = statistics.median(times[k])
        base = jl if lib == "jax" else b
        rows[k] = {"time_s": t, "nfev": nfe, "steps": steps, "bare_eval_s": base,
                   "cost_per_eval_over_bare": t / nfe / base,
                   "overhead_per_step_ms": (t - nfe * base) / steps * 1e3}
    # where a PyTorch reference solve's time goes: the field's own evaluations (timed inside
    # the solve by a wrapper, against the bare loop's) and everything else (combinations,
    # error norm, control, Python), per attempted step
    acc = [0.0]

    def timed_f(t, y):
        t0 = CLOCK()
        out = f(t, y)
        acc[0] += CLOCK() - t0
        return out

    for label, compiled in (("eager", False), ("fused", True)):
        key = f"reference {label} (torch)"
        inside, total = [], []
        for _ in range(repeats):
            acc[0] = 0.0
            t0 = CLOCK()
            sol = odeverify.solve(timed_f, y0, (0.0, t1), method="dopri5", rtol=tol, atol=tol, compiled=compiled)
            total.append(CLOCK() - t0)
            inside.append(acc[0])
        n, steps = sol.stats.nfev, sol.stats.accepted + sol.stats.rejected
        rows[key]["eval_inside_solve_over_bare"] = statistics.median(inside) / n / b
        rows[key]["outside_f_per_step_ms"] = (statistics.median(total) - statistics.median(inside)) / steps * 1e3
    res["bare_eval_torch_s"] = b
    res["bare_eval_jax_s"] = jb
    res["bare_eval_jax_in_loop_s"] = jl
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


def torch_compile_combination(repeats: int) -> dict:
    """A Dopri5-sized stage combination y + h sum_j a_j k_j (six terms) as the eager chain of
    ``add(acc, k, alpha)`` the reference runs, as one ``addmm`` over a stage buffer (what
    ``compiled=True`` runs, buffer copy included), and under ``torch.compile`` (inductor,
    CPU): is a compiled kernel worth its guards and dispatch at these sizes?"""
    torch = torch_setup()
    coeffs = (0.1, 0.2, 0.3, 0.15, 0.05, 0.2)

    def chain(y, ks, h):
        acc = y
        for c, k in zip(coeffs, ks):
            acc = torch.add(acc, k, alpha=h * c)
        return acc

    def combo(y, k0, k1, k2, k3, k4, k5, h: float):
        return y + h * (0.1 * k0 + 0.2 * k1 + 0.3 * k2 + 0.15 * k3 + 0.05 * k4 + 0.2 * k5)

    out: dict = {}
    compiled = torch.compile(combo, dynamic=False)
    row = torch.asarray([coeffs], dtype=torch.float64)
    for size in (2, 8192):
        y = torch.randn(size, dtype=torch.float64)
        ks = [torch.randn(size, dtype=torch.float64) for _ in range(6)]
        buf = torch.empty((6, size), dtype=torch.float64)

        def fused():
            buf[5].copy_(ks[5])  # the step copies each new stage into the buffer
            return torch.addmm(y.reshape(1, -1), row, buf, alpha=0.01)

        t0 = time.perf_counter()
        compiled(y, *ks, 0.01)
        first = time.perf_counter() - t0
        runs = {"eager chain": lambda: chain(y, ks, 0.01), "addmm over a buffer": fused,
                "torch.compile": lambda: compiled(y, *ks, 0.01)}
        times: dict[str, list[float]] = {k: [] for k in runs}
        for _ in range(repeats):
            for k, fn in runs.items():
                times[k].append(median_time(fn, 1, 300))
        out[str(size)] = {"first_call_s": first, **{k: statistics.median(v) for k, v in times.items()}}
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--json", default=None, help="write the results to this file too")
    ap.add_argument("--libs", default="torchdiffeq,jax,diffrax")
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                    help="wall time, or the process's CPU time (all its threads; for shared machines)")
    ap.add_argument("--torch-compile", action="store_true",
                    help="also time one stage combination under torch.compile (its first compilation takes ~1 min)")
    ap.add_argument("--t1", type=float, default=10.0,
                    help="end time; the default 10 gives ~20 steps so start-up costs do not dominate")
    args = ap.parse_args()
    global CLOCK
    CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter
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
    result["machine"]["jax_cpu_async_dispatch"] = os.environ.get("JAX_CPU_ENABLE_ASYNC_DISPATCH", "true (default)")
    result["machine"]["clock"] = args.clock
    print(f"OMP_NUM_THREADS={result['machine']['threads']}, JAX_CPU_ENABLE_ASYNC_DISPATCH="
          f"{result['machine']['jax_cpu_async_dispatch']}, repeats={args.repeats}, clock={args.clock},"
          f" load average {os.getloadavg()[0]:.1f}")
    for key in ("neural_32x128_batch256", "tiny_2x16_batch1"):
        case = result[key]
        jl = case["bare_eval_jax_in_loop_s"]
        print(f"\n### {key} (t in [0, {case['t_span'][1]:g}]): bare evaluation {case['bare_eval_torch_s'] * 1e3:.4f} ms (torch)"
              + (f", {jl * 1e3:.4f} ms (jax, inside a compiled loop; {case['bare_eval_jax_s'] * 1e3:.4f} ms as one"
                 " jitted call)" if jl else ""))
        print("| runner | time (ms) | NFE | steps | cost per evaluation / bare | overhead per step (ms) |")
        print("|---|---|---|---|---|---|")
        for k, r in case["rows"].items():
            print(f"| {k} | {r['time_s'] * 1e3:.2f} | {r['nfev']} | {r['steps']:g} | {r['cost_per_eval_over_bare']:.3f} |"
                  f" {r['overhead_per_step_ms']:.4f} |")
        for k, r in case["rows"].items():
            if "eval_inside_solve_over_bare" in r:
                print(f"\n{k}: an evaluation inside the solve costs {r['eval_inside_solve_over_bare']:.3f} bare"
                      f" evaluations; the rest of the solve (combinations, error norm, control, Python) costs"
                      f" {r['outside_f_per_step_ms']:.4f} ms per step")
        bd, comp = case.get("jax_step_breakdown"), case["rows"].get("reference compiled (jax)")
        if bd and comp:
            rest = (comp["time_s"] - comp["steps"] * bd["step_call_s"]) / comp["steps"]
            print(f"\nreference compiled (jax), per step: {bd['step_call_s'] * 1e3:.4f} ms in the jitted step called from"
                  f" Python (dispatch, run, norms to the host; {bd['step_in_compiled_loop_s'] * 1e3:.4f} ms when the same"
                  f" step runs inside a compiled loop), {rest * 1e3:.4f} ms in the rest (the Python loop and the solve's"
                  " start-up, per step)")
    targets = []
    big = result["neural_32x128_batch256"]["rows"]
    tiny = result["tiny_2x16_batch1"]["rows"]
    for name in ("reference eager (torch)", "reference fused (torch)"):
        if name in big:
            r = big[name]["cost_per_eval_over_bare"]
            targets.append(f"32x128 batch 256, {name}: {r:.3f} bare evaluations per evaluation (target <= 1.1:"
                           f" {'met' if r <= 1.1 else 'MISSED'})")
    if "reference compiled (jax)" in tiny and "diffrax (jit)" in tiny:
        ours, theirs = tiny["reference compiled (jax)"]["overhead_per_step_ms"], tiny["diffrax (jit)"]["overhead_per_step_ms"]
        ratio = ours / theirs if theirs > 0 else float("inf")
        targets.append(f"2x16, per-step overhead reference compiled (jax) / diffrax (jit): {ours:.4f} / {theirs:.4f} ms"
                       f" = {ratio:.2f} (target <= 3: {'met' if ratio <= 3 else 'MISSED'})")
        if "reference eager (jax)" in tiny:
            eager = tiny["reference eager (jax)"]["time_s"] / tiny["reference compiled (jax)"]["time_s"]
            targets.append(f"2x16, reference on JAX: compiled solve {eager:.1f}x faster than eager")
    result["targets"] = targets
    print("\n### Targets (issue 14)")
    for line in targets:
        print(f"- {line}")
    print("\n### NFE for a given error (mlp_tanh_2x16, error at t1 scaled by max|y|)")
    wa = result["work_for_accuracy"]["rows"]
    libs_w = [k for k in wa[0] if k != "tol"]
    print("| tol | " + " | ".join(f"{k}: NFE / error" for k in libs_w) + " |")
    print("|---|" + "---|" * len(libs_w))
    for row in wa:
        print(f"| {row['tol']:.0e} | " + " | ".join(f"{row[k]['nfev']} / {row[k]['error']:.2e}" for k in libs_w) + " |")
    if args.torch_compile:
        tc = result["torch_compile"] = torch_compile_combination(args.repeats)
        print("\n### One six-term stage combination, PyTorch (us per call)")
        print("| state size | eager chain | addmm over a buffer | torch.compile | torch.compile first call (s) |")
        print("|---|---|---|---|---|")
        for size, r in tc.items():
            print(f"| {size} | {r['eager chain'] * 1e6:.1f} | {r['addmm over a buffer'] * 1e6:.1f} |"
                  f" {r['torch.compile'] * 1e6:.1f} | {r['first_call_s']:.1f} |")
    if args.json:
        tmp = args.json + ".tmp"
        with open(tmp, "w") as fh:
            json.dump(result, fh, indent=2)
        os.replace(tmp, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
