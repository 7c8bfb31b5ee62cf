"""Every gradient mode of every backend on a Neural ODE field: error, work, time, memory.

Run:  OMP_NUM_THREADS=1 python benchmarks/gradients.py [--state 32 --hidden 128 --batch 256]
          [--rtols 1e-3,1e-6,1e-9] [--backends reference-torch,torchdiffeq,diffrax]
          [--repeats 3] [--no-memory] [--json out.json]
      OMP_NUM_THREADS=1 python benchmarks/gradients.py --gap [--json gap.json]
      OMP_NUM_THREADS=1 python benchmarks/gradients.py --scaling [--json scaling.json]

The field is ``mlp_field(state, hidden, 2, "tanh", seed=2, batch=B)``: the batch of B copies
as one system, so every library takes one shared step size (as torchdiffeq does for a batch).
The loss is ``Loss.seeded([1.0], n, seed=0)`` (weights and q = 0.5 at t = 1), Dopri5 in every
library (reference ``dopri5``, torchdiffeq ``dopri5``, diffrax ``Dopri5``), float64, one thread.

For each (backend, mode, rtol), with atol = rtol * 1e-3 and the adjoint tolerances equal:

- ``error``: |g - g*| / |g*| of the flat gradient (dL/dy0 and every weight) against the oracle
  g*: the reference ``checkpoint`` mode (exact derivative of the computed solution, bounded
  memory) with DOP853 at rtol 1e-12; its own error is estimated by the distance to the same
  at rtol 1e-10 and printed;
- ``nfe fwd / bwd``: vector-field evaluations forward, VJPs backward (diffrax: plus the primal
  evaluations of its backward phase, in brackets: checkpoint recomputation, backsolve's VJPs);
- ``fwd s / bwd s``: medians over ``--repeats`` (interleaved); diffrax compile time apart;
- ``peak MiB``: peak RSS above the subprocess's baseline (one subprocess per backend and mode,
  at the middle tolerance), see ``odeverify.properties.gradients.peak_memory``; for diffrax,
  XLA's buffer plan of the compiled gradient (``memory["xla_temp_bytes"]``): its process RSS
  shows the compiler (hundreds of MiB), and a second call reuses the first call's buffers.

Forward-mode rows are left out: with P ~ 2e4 parameters, forward mode pushes P tangents.
The fixed-step-only reversible modes (reference reversible_heun, mali) are left out of this
adaptive table.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")

import numpy as np  # noqa: E402

from odeverify import _xp, backends  # noqa: E402
from odeverify.gradients import Loss  # noqa: E402
from odeverify.problems.neural import mlp_field  # noqa: E402
from odeverify.properties.gradients import peak_memory  # noqa: E402

MODES = {
    "reference-torch": ("dopri5", ("discrete", "checkpoint", "backsolve", "backsolve_seminorm", "interpolated",
                                   "quadrature")),
    "torchdiffeq": ("dopri5", ("backprop", "adjoint", "adjoint_seminorm")),
    "diffrax": ("Dopri5", ("recursive_checkpoint", "direct", "backsolve", "backsolve_seminorm")),
}


def relative(g: np.ndarray, ref: np.ndarray) -> float:
    return float(np.linalg.norm(g - ref) / np.linalg.norm(ref)) if np.all(np.isfinite(g)) else float("inf")


def write_json(path: str, data: object) -> None:
    """Atomically: a reader never sees a half-written file."""
    tmp = path + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(data, fh, indent=2, default=str)
    os.replace(tmp, path)


def gap_table(args: argparse.Namespace) -> int:
    """adjoint_convergence and fixed_step_adjoint_gap over problem classes (torchdiffeq's
    odeint_adjoint and the reference backsolve; the discrete mode of the same backend as the
    gap's other end). Lorenz is differentiated with respect to y0 only (no array parameters)."""
    from odeverify.problems import PROBLEMS
    from odeverify.problems.classic import linear_problem
    from odeverify.properties.gradients import (adjoint_convergence, default_loss, fixed_step_adjoint_gap,
                                                gradient_oracle)

    cases = [("dissipative", PROBLEMS.get("linear_real")),
             ("stiff-ish", linear_problem([-20.0, -1.0, -0.5], seed=3, t_span=(0.0, 2.0), name="linear_stiffish")),
             ("oscillatory", PROBLEMS.get("warped_oscillatory")),
             ("chaotic", PROBLEMS.get("lorenz"))]
    tols = (1e-3, 1e-5, 1e-7, 1e-9)
    rows = []
    print("| class | problem | backend/mode | oracle | error at rtol " + " / ".join(f"{t:.0e}" for t in tols)
          + " | gap to discrete | exponent (expected) | fixed-step gap order (expected) |")
    print("|---|---|---|---|---|---|---|---|")
    for cls, p in cases:
        loss = default_loss(p, times=2)
        wrt = "y0" if p.name == "lorenz" else "all"
        oracle = gradient_oracle(p, loss, wrt=wrt)
        for backend, mode, discrete in (("torchdiffeq", "adjoint", "backprop"),
                                        ("reference-torch", "backsolve", "discrete")):
            r = adjoint_convergence(p, "dopri5", mode, backend=backend, loss=loss, tols=tols, discrete_mode=discrete,
                                    oracle=oracle, wrt=wrt)
            g = fixed_step_adjoint_gap(p, "rk4", mode, discrete, backend=backend, loss=loss, wrt=wrt,
                                       n_steps=(32, 64, 128, 256))
            rows.append({"class": cls, "problem": p.name, "backend": backend, "mode": mode,
                         "convergence": r.to_dict(), "fixed_gap": g.to_dict()})
            e = " / ".join(f"{v:.1e}" for v in r.details["errors"])
            gap = " / ".join(f"{v:.1e}" for v in r.details["gap_to_discrete"])
            meas = "-" if r.measured is None else f"{r.measured:.2f}"
            gm = "-" if g.measured is None else f"{g.measured:.2f}"
            print(f"| {cls} | {p.name} | {backend}/{mode} | {oracle.details['kind']} | {e} | {gap} |"
                  f" {meas} ({r.expected}) {r.verdict} | {gm} ({g.expected:g}) {g.verdict} |", flush=True)
    if args.json:
        write_json(args.json, rows)
    return 0


def scaling_table(args: argparse.Namespace) -> int:
    """Peak RSS above baseline as the number of fixed RK4 steps grows tenfold, per mode
    (``odeverify.properties.gradients.memory_scaling``: one subprocess per mode and count)."""
    from odeverify.properties import gradients as G

    plan = [("torchdiffeq", ["backprop", "adjoint"], ["adjoint"]),
            ("reference-torch", ["discrete", "backsolve", "checkpoint", "reversible_heun", "mali", "interpolated",
                                 "quadrature"], ["backsolve", "checkpoint", "reversible_heun", "mali"])]
    print("| backend / mode | MiB above baseline, 40 steps | 400 steps | verdict |")
    print("|---|---|---|---|")
    rows = []
    for backend, modes, bounded in plan:
        for r in G.memory_scaling(backend, "rk4", modes, n_steps=(40, 400), bounded_modes=bounded, state=8,
                                  hidden=64, batch=64):
            mib = [v / 2**20 for v in r.details["rss_above_baseline_bytes"]]
            rows.append(r.to_dict())
            print(f"| {backend} {r.method} | {mib[0]:.1f} | {mib[-1]:.1f} | {r.verdict} |", flush=True)
    if args.json:
        write_json(args.json, rows)
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--state", type=int, default=32)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--rtols", default="1e-3,1e-6,1e-9")
    ap.add_argument("--backends", default="reference-torch,torchdiffeq,diffrax")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-memory", action="store_true")
    ap.add_argument("--json", default=None, help="write the rows here (atomically)")
    ap.add_argument("--gap", action="store_true",
                    help="instead: continuous-adjoint error and its gap to the discrete gradient against the"
                         " tolerance, per problem class (dissipative, stiff-ish, oscillatory, chaotic), and the"
                         " fixed-step gap's order")
    ap.add_argument("--scaling", action="store_true",
                    help="instead: peak memory of each mode as the number of fixed steps grows 40 -> 400")
    args = ap.parse_args(argv)
    torch = _xp.require("torch")
    torch.set_num_threads(1)
    if args.gap:
        return gap_table(args)
    if args.scaling:
        return scaling_table(args)
    rtols = [float(v) for v in args.rtols.split(",")]
    names = [b.strip() for b in args.backends.split(",") if b.strip()]

    problem = mlp_field(args.state, args.hidden, 2, "tanh", seed=2, batch=args.batch)
    loss = Loss.seeded([1.0], problem.n, seed=0)
    print(f"# field: state {args.state}, hidden {args.hidden}, batch {args.batch} (one system, n = {problem.n});"
          f" t in [0, 1]; float64; one thread", flush=True)

    ref = backends.get("reference-torch")
    t = time.perf_counter()
    oracle = ref.gradient(problem, "dop853", "checkpoint", loss, rtol=1e-12, atol=1e-15)
    check = ref.gradient(problem, "dop853", "checkpoint", loss, rtol=1e-10, atol=1e-13)
    g_star = oracle.flat()
    oracle_err = relative(check.flat(), g_star)
    print(f"# oracle: reference checkpoint, dop853, rtol 1e-12 ({oracle.nfev_forward} fwd NFE,"
          f" {time.perf_counter() - t:.1f} s); distance to rtol 1e-10: {oracle_err:.2e}", flush=True)

    rows = []
    for rtol in rtols:
        for name in names:
            method, modes = MODES[name]
            b = backends.get(name)
            if not b.available():
                continue
            for mode in modes:
                runs = [b.gradient(problem, method, mode, loss, rtol=rtol, atol=rtol * 1e-3)
                        for _ in range(args.repeats)]
                r = runs[-1]
                row = {"backend": name, "mode": mode, "rtol": rtol, "status": r.status.code,
                       "error": relative(r.flat(), g_star), "nfev_forward": r.nfev_forward,
                       "nfev_backward": r.nfev_backward,
                       "backward_primal": r.details.get("backward_primal_evaluations"),
                       "forward_s": statistics.median(x.timing.get("forward_s", float("nan")) for x in runs),
                       "backward_s": statistics.median(x.timing.get("backward_s", float("nan")) for x in runs),
                       "compile_s": sum(x.timing.get("compile_s", 0.0) for x in runs),
                       "adjoint_mismatch": r.adjoint_mismatch}
                rows.append(row)
                primal = "" if row["backward_primal"] is None else f" [+{row['backward_primal']} primal]"
                print(f"  {name:16s} {mode:20s} rtol {rtol:.0e}: err {row['error']:.2e}  nfe"
                      f" {row['nfev_forward']}/{row['nfev_backward']}{primal}"
                      f"  {row['forward_s']:.3f}/{row['backward_s']:.3f} s", flush=True)
    mem: dict[tuple[str, str], float] = {}
    if not args.no_memory:
        mid = rtols[len(rtols) // 2]
        for name in names:
            method, modes = MODES[name]
            for mode in modes:
                if name == "diffrax":  # XLA's buffer plan: RSS would show the compiler, not the gradient
                    r = backends.get(name).gradient(problem, method, mode, loss, rtol=mid, atol=mid * 1e-3,
                                                    count_nfev=False)
                    mem[(name, mode)] = r.memory.get("xla_temp_bytes", float("nan")) / 2 ** 20
                    print(f"  memory {name} {mode}: {mem[(name, mode)]:.1f} MiB (XLA temp buffers)", flush=True)
                    continue
                try:
                    out = peak_memory(name, method, [mode], None, state=args.state, hidden=args.hidden,
                                      batch=args.batch, as_system=True, rtol=mid, atol=mid * 1e-3)
                except (RuntimeError, OSError) as exc:  # a failed measurement is reported, not fatal
                    print(f"  memory {name} {mode}: failed ({str(exc)[-200:]})", flush=True)
                    continue
                mem[(name, mode)] = (out["peak_rss_bytes"][0] - out["baseline_bytes"]) / 2 ** 20
                print(f"  memory {name} {mode}: {mem[(name, mode)]:.1f} MiB above baseline", flush=True)
    for row in rows:
        row["peak_mib"] = mem.get((row["backend"], row["mode"]))

    print()
    print(f"| backend | mode | rtol | gradient error | NFE fwd / bwd | fwd s | bwd s | peak MiB (rtol"
          f" {rtols[len(rtols) // 2]:.0e}) |")
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        extra = "" if row["backward_primal"] is None else f" (+{row['backward_primal']} primal)"
        peak = "-" if row["peak_mib"] is None or row["rtol"] != rtols[len(rtols) // 2] else f"{row['peak_mib']:.0f}"
        print(f"| {row['backend']} | {row['mode']} | {row['rtol']:.0e} | {row['error']:.1e} |"
              f" {row['nfev_forward']} / {row['nfev_backward']}{extra} | {row['forward_s']:.3f} |"
              f" {row['backward_s']:.3f} | {peak} |")
    print(f"\noracle: reference checkpoint mode, dop853 at rtol 1e-12 (distance to rtol 1e-10: {oracle_err:.1e})")
    if args.json:
        write_json(args.json, {"args": vars(args), "oracle_error": oracle_err, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
