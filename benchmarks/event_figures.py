"""The figures of docs/events.md: the reference's event-time order per method (healthy, and
with the root located on the chord between the step's ends: the planted fault of
tests/test_events.py), and the event gradients by each mode (healthy, with the IFT correction
dropped, with the adjoint's jump condition dropped), against the closed forms.

Run:  OMP_NUM_THREADS=1 python benchmarks/event_figures.py [--methods euler,heun,...] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import math
import time

import odeverify.integrate as integrate
from odeverify import _xp
from odeverify.problems.events import bouncing_ball, plane_crossing
from odeverify.properties.events import event_gradient, event_time_order

METHODS = ("euler", "heun", "midpoint", "bosh3", "rk4", "dopri5", "tsit5", "dop853")


class Chord:
    """The planted fault: the root on the chord between the step's ends."""

    def __init__(self, solver, f, tc, y0, y1, h, res, k1):
        self.y0, self.y1, self.k_end = y0, y1, res.fsal

    def __call__(self, theta):
        return self.y0 + float(theta) * (self.y1 - self.y0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    out: dict = {"order": [], "gradient": []}
    ep = plane_crossing()
    print(f"event_time_order on {ep.name} (first crossing at phase 1/3 of its step, n0 * 4^i steps)")
    print(f"{'method':10s} {'expected':>8s} {'slope':>8s} {'verdict':>12s} {'chord slope':>12s} {'chord':>8s}")
    original = integrate.StepInterpolant
    for m in args.methods.split(","):
        rec = event_time_order(ep, m)
        integrate.StepInterpolant = Chord
        try:
            bad = event_time_order(ep, m)
        finally:
            integrate.StepInterpolant = original
        fmt = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731
        print(f"{m:10s} {rec.expected:8.0f} {fmt(rec.measured):>8s} {rec.verdict:>12s} {fmt(bad.measured):>12s}"
              f" {bad.verdict:>8s}")
        out["order"].append({"method": m, "expected": rec.expected, "slope": rec.measured, "verdict": rec.verdict,
                             "errors": rec.details.get("error"), "chord_slope": bad.measured,
                             "chord_verdict": bad.verdict})
    if not _xp.available("torch"):
        print("event gradients: PyTorch is not installed")
    else:
        print("\nevent_gradient (L = sum_k t_k + sum_i y_i(T)), dopri5 at rtol 1e-10: relative error (bound)")
        for prob in (bouncing_ball(bounces=2, name="ball2"), plane_crossing(horizon=3.0, name="plane3")):
            cases = [("discrete", {}, None), ("adjoint", {}, None),
                     ("adjoint", {"jump_condition": False}, "jump condition dropped"),
                     ("discrete", {}, "IFT correction dropped")]
            for mode, kw, fault in cases:
                saved = integrate._trajectory_slope
                if fault == "IFT correction dropped":
                    integrate._trajectory_slope = lambda *a, **k: math.inf
                try:
                    t0 = time.perf_counter()
                    rec = event_gradient(prob, "dopri5", mode, **kw)
                    wall = time.perf_counter() - t0
                finally:
                    integrate._trajectory_slope = saved
                label = mode + (f" ({fault})" if fault else "")
                print(f"  {prob.name:8s} {label:40s} {rec.measured:10.3g} ({rec.expected:.3g}) {rec.verdict:5s}"
                      f" {wall:5.1f} s")
                out["gradient"].append({"problem": prob.name, "mode": mode, "fault": fault, "error": rec.measured,
                                        "bound": rec.expected, "verdict": rec.verdict})
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=1)


if __name__ == "__main__":
    main()
