"""Work of the reference gradient modes on a neural vector field.

Run:  OMP_NUM_THREADS=1 python benchmarks/gradients_reference.py [--state 32 --hidden 128 --batch 256]
          [--rtol 1e-6] [--atol 1e-9] [--library torch] [--n-steps 64] [--json out.json]

For an MLP field (odeverify.problems.neural.mlp_field: two tanh layers, seed 2, t in [0, 1],
a batch of initial states from mlp_batch_y0 sharing one step size), float64, one thread, the
loss ``Loss.seeded([0.5, 1.0], state, seed=0)``: every mode's forward and backward NFE (a
VJP of f counts as one evaluation), steps, wall times (one run each, after warm-up runs at
rtol 1e-3), stored arrays, and the relative difference of its gradient (dL/dy0 and every
dL/dtheta, max-norm) from a reference: ``discrete`` at rtol = atol * 1e3 = 1e-10.
"stored" is the peak number of state-sized arrays a mode keeps for its backward pass
(``details["stored_arrays"]``; "graph" for ``discrete``, whose autodiff graph is not
counted). ``forward`` (forward sensitivities, N + P JVPs per evaluation) is left out: it is the oracle
for small problems only. Prints a Markdown table.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")

import numpy as np  # noqa: E402

from odeverify import _xp  # noqa: E402
from odeverify.gradients import Loss, value_and_grad  # noqa: E402
from odeverify.problems.neural import mlp_batch_y0, mlp_field  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--state", type=int, default=32)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--rtol", type=float, default=1e-6)
    ap.add_argument("--atol", type=float, default=1e-9)
    ap.add_argument("--library", default="torch", choices=("torch", "jax"))
    ap.add_argument("--n-steps", type=int, default=64, help="fixed steps of reversible_heun and mali")
    ap.add_argument("--json", help="write the rows here too")
    args = ap.parse_args(argv)
    if args.library == "torch":
        _xp.require("torch").set_num_threads(1)

    prob = mlp_field(args.state, args.hidden, 2, "tanh", seed=2)
    y0 = mlp_batch_y0(prob, args.batch, seed=0)
    loss = Loss.seeded([0.5, 1.0], args.state, seed=0)
    common = dict(library=args.library, y0=y0)
    tol = dict(rtol=args.rtol, atol=args.atol)
    for mode in ("discrete", "checkpoint", "backsolve"):  # warm-up (first-call costs of autograd, torch.func)
        value_and_grad(prob, loss, mode=mode, rtol=1e-3, atol=1e-6, **common)
    ref = value_and_grad(prob, loss, mode="discrete", rtol=1e-10, atol=1e-13, **common)
    runs = [
        ("discrete", dict(mode="discrete", **tol)),
        ("checkpoint (default budget)", dict(mode="checkpoint", **tol)),
        ("checkpoint (budget 2)", dict(mode="checkpoint", checkpoints=2, **tol)),
        ("backsolve", dict(mode="backsolve", **tol)),
        ("backsolve + seminorm", dict(mode="backsolve", seminorm=True, **tol)),
        ("interpolated", dict(mode="interpolated", **tol)),
        ("interpolated + seminorm", dict(mode="interpolated", seminorm=True, **tol)),
        ("quadrature", dict(mode="quadrature", **tol)),
        (f"reversible_heun (n_steps={args.n_steps})", dict(mode="reversible_heun", n_steps=args.n_steps)),
        (f"mali (n_steps={args.n_steps})", dict(mode="mali", n_steps=args.n_steps)),
    ]
    rows = []
    for label, kw in runs:
        r = value_and_grad(prob, loss, **common, **kw)
        err = float(np.max(np.abs(r.flat() - ref.flat())) / np.max(np.abs(ref.flat())))
        rows.append({"mode": label, "status": r.status.code, "nfev_forward": r.nfev_forward,
                     "nfev_backward": r.nfev_backward, "steps_forward": r.steps_forward,
                     "steps_backward": r.steps_backward, "forward_s": r.timing.get("forward_s"),
                     "backward_s": r.timing.get("backward_s"), "rel_grad_error": err,
                     "stored": r.details.get("stored_arrays", "graph"),
                     "adjoint_mismatch": r.adjoint_mismatch})
    n_par = sum(v.size for v in prob.params.values() if isinstance(v, np.ndarray))
    print(f"MLP field state {args.state}, hidden {args.hidden}, 2 tanh layers, batch {args.batch}"
          f" ({n_par} parameters), {args.library} float64, rtol {args.rtol:g}, atol {args.atol:g};"
          f" reference: discrete at rtol 1e-10 ({ref.nfev_forward} NFE); {platform.processor() or platform.machine()}")
    print()
    print("| mode | NFE fwd | NFE bwd | steps fwd | steps bwd | fwd s | bwd s | stored | rel. grad error |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['mode']} | {r['nfev_forward']} | {r['nfev_backward']} | {r['steps_forward']} |"
              f" {r['steps_backward']} | {r['forward_s']:.3f} | {r['backward_s']:.3f} | {r['stored']} |"
              f" {r['rel_grad_error']:.2e} |")
    if args.json:
        tmp = args.json + ".tmp"
        with open(tmp, "w") as fh:
            json.dump({"args": vars(args), "rows": rows}, fh, indent=1)
        os.replace(tmp, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
