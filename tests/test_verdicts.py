"""Verdicts never hide an instability or an order deficit (issue: an outside check found a
blow-up graded "inconclusive" and a planted order-5 -> 2 fault graded "inconclusive")."""
from __future__ import annotations

import dataclasses
import math
from fractions import Fraction

import numpy as np
import pytest

from odeverify import TABLEAUS, ExplicitRK
from odeverify.problems import PROBLEMS
from odeverify.problems.specs import from_spec
from odeverify.properties import convergence_order, tolerance_proportionality
from odeverify.properties.convergence import (BLOWUP, growth_findings, judge_slope, linear_amplification,
                                              stability_function, stable_n_min)


def _planted_dopri5(eps: Fraction) -> ExplicitRK:
    """Dopri5 with its weights moved by eps * d, d orthogonal to 1 and c on stages 0, 2, 3:
    the order conditions up to order 2 still hold, so the error gains an eps * h^2 term that
    takes over only at fine steps (local slopes fall from 5 towards 2)."""
    tab = TABLEAUS.get("dopri5")
    c = [Fraction(x) for x in tab.c]
    d = {0: -1 + c[3] / c[2], 2: -c[3] / c[2], 3: Fraction(1)}
    assert sum(d.values()) == 0 and sum(c[i] * v for i, v in d.items()) == 0
    b = [bi + eps * d.get(i, 0) for i, bi in enumerate(tab.b)]
    solver = ExplicitRK(dataclasses.replace(tab, name="dopri5_planted", b=tuple(b), order=2, dense=None))
    solver.order = 5  # it claims the original order
    return solver


def test_falling_local_slopes_are_a_failure_not_inconclusive():
    """eps = 1e-7: local slopes [5.64, 4.96, 4.76, 3.27, 2.16, 2.02] on warped_oscillatory. The
    rule before this change called it inconclusive ("still drift"); they fall *away* from 5."""
    rec = convergence_order(PROBLEMS.get("warped_oscillatory"), _planted_dopri5(Fraction(1, 10**7)))
    assert rec.verdict == "fail", rec.describe()
    assert "deficit" in rec.message


def test_stable_deficit_at_the_finest_steps_is_a_failure():
    rec = convergence_order(PROBLEMS.get("harmonic"), _planted_dopri5(Fraction(1, 10**5)))
    assert rec.verdict == "fail", rec.describe()
    assert abs(rec.measured - 2.0) < 0.1


def test_the_correct_method_still_passes_where_the_planted_one_fails():
    rec = convergence_order(PROBLEMS.get("warped_oscillatory"), "dopri5")
    assert rec.verdict == "pass", rec.describe()


def test_a_blow_up_at_the_coarsest_steps_is_a_failure_naming_where():
    """The shape the outside check saw: 1e14 at the coarsest steps, then a converging tail
    with fewer than 3 points above round-off. Before: 'inconclusive'. Now: fail."""
    ns = [16, 32, 64, 128, 256]
    errs = [1e14, 3e6, 2e-3, 1e-13, 1e-15]
    floors = np.full(len(ns), 1e-12)
    findings = growth_findings(ns, errs, floors)
    assert findings and "unstable" in findings[0] and "n=16, 32" in findings[0], findings
    hs = np.asarray([1.0 / n for n in ns])
    slope, verdict, msg = judge_slope(hs, np.asarray(errs), floors, 5.0, band=0.15, window=3, details={},
                                      findings=findings)
    assert verdict == "fail" and "unstable" in msg
    # a failed solve (non-finite error) is named with its status
    f2 = growth_findings(ns, [math.inf, 1e-2, 1e-4, 1e-6, 1e-8], floors,
                         statuses=["max_steps", "success", "success", "success", "success"])
    assert "max_steps" in f2[0] and "resolved again from n=32" in f2[0]
    # errors above the solution's scale but below BLOWUP are unresolved, not unstable
    assert not growth_findings(ns, [BLOWUP / 2, 1e-1, 1e-3, 1e-5, 1e-7], floors)


def test_the_sweep_starts_inside_the_stability_region():
    """Euler on a lightly damped fast rotation: h*rho <= 1 is outside its stability region
    (|1 + i h w| > 1), so the sweep starts finer, where the linearised spurious amplification
    over the span is at most 10; RK4 starts at h*rho <= 1."""
    p = PROBLEMS.get("warped_fast")
    info = {}
    n_euler = stable_n_min(p, "euler", info=info)
    assert n_euler > info["h_rho_n"] and info["amplification"] <= 10
    assert stable_n_min(p, "rk4") == info["h_rho_n"]
    R, source = stability_function("euler")
    assert source == "tableau euler"
    assert linear_amplification(R, np.asarray([1j]), 1.0, 1) == pytest.approx(math.sqrt(2))


def test_tolerance_proportionality_is_inconclusive_with_too_few_steps():
    """Found by `odeverify explore --backend scipy`: a slow rotation over half a unit is
    solved in 1-3 steps at every tolerance of the sweep; its error follows the first step, so
    it was graded 'fail' (exponent 0.63). Too few steps is inconclusive, never a verdict."""
    p = from_spec('{"kind":"linear","params":{"eigenvalues":[[0.0,0.25],[0.0,-0.25]],"seed":0,"t1":0.5}}')
    rec = tolerance_proportionality(p, "RK23", backend="scipy")
    assert rec.verdict == "skip" and "accepted steps" in rec.message, rec.describe()


def test_check_times_end_exactly_at_t1_on_a_backward_span():
    """Found by explore on torchdiffeq and diffrax: t0 + (t1 - t0) * 16/16 on the span
    (1.44, 0.44) is 0.43999999999999995, outside the span, and every solve was refused."""
    from odeverify.properties.convergence import check_times

    p = from_spec('{"kind":"linear","params":{"eigenvalues":[[0.0,1.0],[0.0,-1.0]],"seed":0,"t1":1.0},'
                  '"span":[1.44,0.44]}')
    assert check_times(p, 16)[-1] == 0.44
    assert convergence_order(p, "euler").verdict == "pass"
