"""Memory accounting, adaptive reversible Heun, and gradients through stiff solves.

Run:  OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/gradients_stiff_memory.py [--section all|memory|reversible|stiff]

Sections (PyTorch, float64, one thread; every figure is printed, none is typed in):

- memory: ``GradientResult.memory`` of every reference mode on a small MLP field
  (``mlp_field(4, 32, 2, "tanh", seed=3)``, rk4, ``n_steps`` = 10, 100, 1000; mali/reversible
  on the same grid): bytes autograd saved for backward (total, peak), bytes of state-sized
  arrays the mode stores (peak), bytes of per-step float records.
- reversible: adaptive ``reversible_heun`` on the same field at rtol 1e-3 .. 1e-7 (atol =
  rtol * 1e-3): accepted/rejected steps, the relative difference from autograd through the
  same solve (``discrete`` with the same solver object), the reconstruction error, and the
  error against a tight reference (``discrete`` dopri5 at rtol 1e-11).
- stiff: stiff_linear_1e4 on [0, 0.1]: ``discrete`` dL/dA along a unit direction against
  central differences of the same fixed-step solve (10 steps), with and without
  ``NewtonSettledSolver``; the continuous modes with implicit methods against the closed
  form; an explicit method's step count.
"""
from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")


from odeverify.gradients import Loss, value_and_grad  # noqa: E402
from odeverify.gradients import _common, discrete  # noqa: E402
from odeverify.problems.neural import mlp_field  # noqa: E402
from odeverify.solvers.reversible import ReversibleHeun  # noqa: E402
from tests.test_gradients_stiff import LIN, LIN_LOSS, directional, fd_directional, linear_exact, rel_err  # noqa: E402

MLP = mlp_field(4, 32, 2, "tanh", seed=3)
MLP_LOSS = Loss.seeded([0.5, 1.0], 4, seed=0)


def memory() -> None:
    print("| mode | n_steps | saved_for_backward_bytes | saved_peak_bytes | stored_bytes | step_record_bytes |")
    print("|---|---|---|---|---|---|")
    for mode in ("discrete", "backsolve", "interpolated", "quadrature", "checkpoint", "forward", "reversible_heun",
                 "mali"):
        for n in (10, 100, 1000):
            if mode == "forward" and n == 1000:
                continue
            kw = {} if mode in ("reversible_heun", "mali") else {"method": "rk4"}
            m = value_and_grad(MLP, MLP_LOSS, mode=mode, n_steps=n, **kw).memory
            print(f"| {mode} | {n} | {m['saved_for_backward_bytes']} | {m['saved_for_backward_peak_bytes']} |"
                  f" {m['stored_bytes']} | {m['step_record_bytes']} |")


def reversible() -> None:
    ref = value_and_grad(MLP, MLP_LOSS, mode="discrete", rtol=1e-11, atol=1e-14).flat()
    print("| rtol | accepted | rejected | vs AD same steps | reconstruction | vs reference |")
    print("|---|---|---|---|---|---|")
    for r in (1e-3, 1e-5, 1e-7):
        res = value_and_grad(MLP, MLP_LOSS, mode="reversible_heun", rtol=r, atol=r * 1e-3)
        ad = value_and_grad(MLP, MLP_LOSS, mode="discrete", method=ReversibleHeun(), rtol=r, atol=r * 1e-3)
        print(f"| {r:g} | {res.details['grid_steps']} | {res.details['rejected_steps']} |"
              f" {rel_err(res.flat(), ad.flat()):.1e} | {res.adjoint_mismatch:.1e} | {rel_err(res.flat(), ref):.1e} |")


def stiff() -> None:
    print("discrete dL/dA.V vs central differences of the same solve (stiff_linear_1e4, [0, 0.1], 10 steps):")
    print("| method | plain Newton | >= 2 Newton iterations (NewtonSettledSolver) |")
    print("|---|---|---|")
    for method in ("backward_euler", "trapezoid", "sdirk2", "kvaerno3", "kvaerno5", "radau_iia5"):
        _, g, V = fd_directional(LIN, LIN_LOSS, method, 10, eps_y0=1e-2, eps_p=1e-4, y0=False)
        errs = []
        for wrapper in (_common.RecordingSolver, discrete.NewtonSettledSolver):
            saved = discrete.NewtonSettledSolver
            discrete.NewtonSettledSolver = wrapper
            try:
                d = directional(value_and_grad(LIN, LIN_LOSS, mode="discrete", method=method, n_steps=10), V)
            finally:
                discrete.NewtonSettledSolver = saved
            errs.append(abs(d - g) / abs(g))
        print(f"| {method} | {errs[0]:.1e} | {errs[1]:.1e} |")
    exact = linear_exact(LIN, LIN_LOSS)
    print("\ncontinuous modes vs closed form (rtol 1e-7, atol 1e-9, max_steps 5000):")
    print("| mode | method | status | rel. error | forward steps | backward steps | wall s |")
    print("|---|---|---|---|---|---|---|")
    for mode, method in (("forward", "radau_iia5"), ("interpolated", "radau_iia5"), ("quadrature", "kvaerno3"),
                         ("interpolated", "kvaerno5"), ("discrete", "radau_iia5"), ("backsolve", "radau_iia5"),
                         ("backsolve", "kvaerno3"), ("discrete", "dopri5"), ("backsolve", "dopri5")):
        t0 = time.perf_counter()
        res = value_and_grad(LIN, LIN_LOSS, mode=mode, method=method, rtol=1e-7, atol=1e-9, max_steps=5000)
        wall = time.perf_counter() - t0
        err = rel_err(res.flat(), exact) if res.success else float("nan")
        print(f"| {mode} | {method} | {res.status.code} | {err:.1e} | {res.steps_forward} | {res.steps_backward} |"
              f" {wall:.2f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--section", choices=("all", "memory", "reversible", "stiff"), default="all")
    sec = ap.parse_args().section
    for name, fn in (("memory", memory), ("reversible", reversible), ("stiff", stiff)):
        if sec in ("all", name):
            print(f"\n## {name}\n")
            fn()


if __name__ == "__main__":
    main()
