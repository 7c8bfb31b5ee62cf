"""Irregular observation times: what docs/irregular.md reports.

Run:  OMP_NUM_THREADS=1 python benchmarks/irregular_times.py [--quick] [--backends reference,torchdiffeq,diffrax]
          [--json out.json]

Three tables, every number from a property of ``odeverify/properties/irregular.py``:

1. **union vs per sample** (``union_times_cost``, dopri5 / diffrax Dopri5, rtol 1e-6): for
   batches of N samples x K irregular times (the named batches, plus 32 x 200 unless
   ``--quick``), the union solve's work in sample-evaluations (nfev x N) over the per-sample
   solves' total, reading the dense output; on the reference also with a step landing on every
   time (``tstops``); the worst error of each way in mixed tolerances (closed form).
2. **dense vs stepped** (``dense_vs_stepped_output``, reference dopri5, bosh3, dop853 on
   rotation_4x50's first sample, 50 times): output errors, evaluations and the gradient's
   relative error of each way per tolerance.
3. **gradient agreement** (``irregular_gradient_accuracy`` at 200 irregular times, rtol 1e-7,
   and ``latent_ode_gradient``, rtol 1e-8): the relative error of every gradient mode of each
   backend against the closed form / central differences.

Wall time on 2 shared cores under a load of 8-12: tables 1 and 2 about 6 minutes, the gradient
table's reference and torchdiffeq rows 4 minutes, diffrax about 5 minutes a mode (it compiles
each mode for each series length).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")

from odeverify import backends  # noqa: E402
from odeverify.gradients import GRADIENT_MODES  # noqa: E402
from odeverify.problems.irregular import IRREGULAR_BATCHES, irregular_batch, named_batch  # noqa: E402
from odeverify.properties import irregular as P  # noqa: E402

METHOD = {"reference": "dopri5", "reference-torch": "dopri5", "reference-jax": "dopri5", "torchdiffeq": "dopri5",
          "diffrax": "Dopri5", "scipy": "RK45"}


def _e(v: object) -> str:
    return f"{v:.2e}" if isinstance(v, (int, float)) else "-"


def union_table(names: list[str], quick: bool) -> list:
    batches = [named_batch(n) for n in IRREGULAR_BATCHES]
    if not quick:
        batches.append(irregular_batch(samples=32, counts=200, seed=4, name="rotation_32x200"))
    print("\n1. union of times vs per-sample solves (rtol 1e-6): sample-evaluations union / per sample")
    print(f"{'backend':14s} {'batch':18s} {'N x K':>10s} {'union':>6s} {'dense':>7s} {'stepped':>8s}"
          f" {'err union':>10s} {'err each':>10s} verdict")
    out = []
    for name in names:
        if name.startswith("reference-"):
            continue
        for b in batches:
            r = P.union_times_cost(b, METHOD[name], backend=name)
            d = r.details
            st = d.get("stepped") or {}
            print(f"{r.backend:14s} {b.name:18s} {b.samples:>4d} x {max(b.counts):<4d}"
                  f"{d.get('union_times', 0):>6d} {r.measured or 0:7.3f} {st.get('overhead', float('nan')):8.3f}"
                  f" {_e(max(d.get('union_error', [0])))} {_e(max(d.get('per_sample_error', [0])))} {r.verdict}")
            out.append(r)
    return out


def dense_table(quick: bool) -> list:
    print("\n2. dense output vs a step on every time (reference, rotation_4x50[0], 50 times): errors in mixed"
          " tolerances, nfev, gradient relative error")
    print(f"{'method':8s} {'rtol':>7s} {'dense err':>10s} {'stepped':>10s} {'nfev d':>7s} {'nfev s':>7s}"
          f" {'grad d':>9s} {'grad s':>9s}")
    out = []
    for m in ("dopri5",) if quick else ("dopri5", "bosh3", "dop853"):
        r = P.dense_vs_stepped_output(named_batch("rotation_4x50"), m, rtols=(1e-3, 1e-5, 1e-7, 1e-9))
        for row in r.details.get("sweep", []):
            d, s = row["dense"], row["stepped"]
            print(f"{m:8s} {row['rtol']:7.0e} {_e(d['error'])} {_e(s['error'])} {d['nfev']:7d} {s['nfev']:7d}"
                  f" {_e(d['gradient_error'])} {_e(s['gradient_error'])}")
        out.append(r)
    return out


def gradient_table(names: list[str], quick: bool) -> list:
    print("\n3. gradients: relative error against the oracle (200 irregular times: closed form, rtol 1e-7;"
          " latent ODE on 2 spiral series: central differences, rtol 1e-8)")
    print(f"{'backend':16s} {'mode':22s} {'200 times':>10s} {'bound':>9s} {'latent':>9s} {'bound':>9s}")
    out = []
    batch = irregular_batch(name="irregular_200", samples=1, counts=200, seed=7, t_span=(0.0, 5.0))
    for name in names:
        if name == "reference":
            continue
        b = backends.get(name)
        if not b.available():
            print(f"{name:16s} not installed")
            continue
        for mode in b.capabilities().gradient_modes:
            if mode in GRADIENT_MODES and GRADIENT_MODES.get(mode).fixed_step:
                continue
            if quick and mode in ("reversible_heun",):
                continue
            r1 = P.irregular_gradient_accuracy(batch, METHOD[name], mode, backend=name)
            r2 = P.latent_ode_gradient(METHOD[name], mode, backend=name)
            print(f"{name:16s} {mode:22s} {_e(r1.measured)} {_e(r1.expected)} {_e(r2.measured)} {_e(r2.expected)}"
                  f" {r1.verdict}/{r2.verdict}")
            out += [r1, r2]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backends", default="reference,torchdiffeq,diffrax")
    ap.add_argument("--quick", action="store_true", help="smaller batches, dopri5 only, fewer modes")
    ap.add_argument("--json", default=None, help="write the records here")
    args = ap.parse_args(argv)
    warnings.simplefilter("ignore")
    names = [n.strip() for n in args.backends.split(",") if n.strip()]
    grad_names = [("reference-torch" if n == "reference" else n) for n in names]
    start = time.perf_counter()
    records = union_table(names, args.quick)
    if "reference" in names:
        records += dense_table(args.quick)
    records += gradient_table(grad_names, args.quick)
    print(f"\n{len(records)} records in {time.perf_counter() - start:.0f} s", file=sys.stderr)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump([r.to_dict() for r in records], fh, indent=1)
    return 0 if all(r.verdict in ("pass", "skip") for r in records) else 1


if __name__ == "__main__":
    sys.exit(main())
