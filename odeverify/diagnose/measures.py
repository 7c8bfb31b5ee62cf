"""The solver, work and gradient measurements of a diagnosis, each one :class:`Record`.

Every measurement takes a :class:`Context` (the model, the run's size, and the solves and
Jacobians that several measurements share, computed once) and returns a Record named
``diagnose_<failure mode>``: ``measured`` the headline figure, ``expected`` the threshold it is
judged against (``details["threshold"]`` says in which direction), ``verdict`` ``fail`` when the
failure mode is present, ``pass`` when it is not, ``skip`` when it cannot be measured for this
field (the message says why), and ``details["recommendation"]`` what to do. The oracles share
no code with what they grade: the discrete-mode gradient (autodiff through the very steps) for
the continuous adjoints, a tight DOP853 solve (Radau IIA 5 on a stiff field) for the solver dependence, the stiffness estimate's
eigenvalues and the tableau's exact stability function for the step-stability check.

Thresholds (module constants, stated in each record):

- instability: ``GROWTH_LIMIT`` (|z| growing past 1e3 x max(1, |z0|)) or a failed solve; and
  ``STABILITY_FRACTION`` of the steps taken with some decaying mode's h*lambda outside the
  method's stability region (|R(h lambda)| > 1);
- stiffness: an implicit method doing less work than the explicit one at the user's tolerance;
- work: ``WORK_TAIL`` (the costliest sample needs 10x the median's evaluations) or
  ``REJECT_LIMIT`` rejected steps;
- adjoint and gradient: a relative gradient error above ``gradient_threshold(rtol)``, or a
  reconstruction of z(t0) off by more than it;
- solver dependence: an output differing from the tight reference by more than
  ``DEPENDENCE_LIMIT`` times the tolerance's error scale (atol + rtol |z|).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..backends.base import stiffness_ratio
from ..gradients import GRADIENT_MODES
from ..gradients._spec import GradientResult
from ..properties.stiffness import stiffness_estimate
from ..records import Record
from ..solvers import SOLVERS
from ..tableaus import theory
from .model import UserModel

#: |z(t)| beyond this multiple of max(1, |z0|) counts as a blow-up
GROWTH_LIMIT = 1e3
#: more than this fraction of steps with a decaying mode outside the stability region: unstable
STABILITY_FRACTION = 0.05
#: |R(h lambda)| above 1 + this counts as outside the stability region (round-off of R)
STABILITY_SLACK = 1e-9
#: the costliest sample's evaluations over the median's: a region of inputs that costs this much more
WORK_TAIL = 10.0
#: rejected steps over attempted steps above this: the controller keeps overshooting
REJECT_LIMIT = 0.3
#: the output's difference from a tight reference, in units of the tolerance's error scale
DEPENDENCE_LIMIT = 100.0
#: a quick diagnosis counts the work of at most this many samples (the first ones)
QUICK_WORK_SAMPLES = 64
#: spectral radius x span above this: the solver dependence's reference is the implicit REFERENCE_STIFF
STIFF_REFERENCE_RHO_T = 1e3
REFERENCE_STIFF = "radau_iia5"
#: a gradient's solves may take this many times the forward solve's steps (see Context.gradient_step_limit)
GRADIENT_STEP_FACTOR = 4
#: implicit and explicit defaults of the work comparison
IMPLICIT_DEFAULT = "kvaerno5"
EXPLICIT_DEFAULT = "dopri5"
#: the reference of the solver dependence: DOP853 at this tolerance
REFERENCE_RTOL, REFERENCE_ATOL = 1e-11, 1e-13
#: the solvers compared by the solver dependence (the user's own is added)
DEPENDENCE_SOLVERS = ("dopri5", "tsit5", "bosh3")


def gradient_threshold(rtol: float) -> float:
    """The relative gradient error a gradient mode may have at tolerance ``rtol`` before the
    diagnosis flags it: max(1e-3, 1000 rtol). A continuous adjoint converges to the exact
    gradient as rtol -> 0 and differs from the discrete one by a multiple of the forward error,
    which on an expanding field can be 100x rtol; 1e-3 is where a gradient step's direction
    starts to change measurably."""
    return max(1e-3, 1e3 * rtol)


def is_explicit(method: str) -> bool:
    tab = getattr(SOLVERS.get(method), "tableau", None)
    return bool(tab is not None and tab.explicit)


def evals_per_step(method: str) -> int:
    """Vector-field evaluations of one attempted step of an explicit method (FSAL reuses one)."""
    s = SOLVERS.get(method)
    return int(s.stages) - (1 if getattr(s, "fsal", False) else 0)


# ----------------------------------------------------------------------------- the shared context
@dataclass
class Context:
    """What several measurements share: the run's sizes and the solves and Jacobians, once.

    ``quick``: a smaller run (fewer samples for Jacobians and gradients, fewer solvers and
    tolerances). ``grid``: the times of the trajectories (``GRID`` points over the span).
    """

    model: UserModel
    quick: bool = False
    cache: dict[str, Any] = field(default_factory=dict)

    @property
    def sub_size(self) -> int:
        return 4 if self.quick else 16

    @property
    def grid(self) -> np.ndarray:
        t0, t1 = self.model.t_span
        return np.linspace(t0, t1, 9 if self.quick else 17)

    def sub(self) -> np.ndarray:
        """The subsample (indices) for Jacobians, gradients and solver comparisons."""
        return self.model.subsample(self.sub_size)

    def trajectory(self) -> Any:
        """The user's solver on the whole batch, shared steps, at :attr:`grid` (a Solution)."""
        if "trajectory" not in self.cache:
            t = time.perf_counter()
            sol = self.model.solve(t_eval=self.grid)
            self.cache["trajectory_s"] = time.perf_counter() - t
            self.cache["trajectory"] = sol
        return self.cache["trajectory"]

    def ys(self) -> np.ndarray:
        """(T, B, n) float64 of :meth:`trajectory`."""
        from .. import _xp

        return np.asarray(_xp.to_numpy(self.trajectory().ys), dtype=np.float64)

    def jacobians(self) -> tuple[np.ndarray, np.ndarray]:
        """(J, eigenvalues): df/dz along the subsample's trajectories, shapes (T, S, n, n) and
        (T, S, n); rows past a failed solve are NaN."""
        if "jacobians" not in self.cache:
            ys = self.ys()[:, self.sub()]
            T, S, n = ys.shape
            jac = np.full((T, S, n, n), np.nan)
            eig = np.full((T, S, n), np.nan, dtype=np.complex128)
            for k, t in enumerate(self.grid):
                ok = np.all(np.isfinite(ys[k]), axis=1)
                if not np.any(ok):
                    continue
                jac[k, ok] = self.model.jacobian(float(t), ys[k, ok])
                with np.errstate(all="ignore"):
                    eig[k, ok] = np.linalg.eigvals(jac[k, ok])
            self.cache["jacobians"] = (jac, eig)
        return self.cache["jacobians"]

    def gradient(self, mode: str, method: str | None = None, **options: Any) -> GradientResult:
        """A gradient of the model's loss on the subsample, cached by (mode, method, options)."""
        key = f"grad:{mode}:{method}:{sorted(options.items())}"
        if key not in self.cache:
            self.cache[key] = self.model.value_and_grad(mode, method=method, z0=self.model.z0[self.sub()],
                                                        max_steps=self.gradient_step_limit(method), **options)
        return self.cache[key]

    def gradient_step_limit(self, method: str | None = None) -> int:
        """The step limit of a gradient computation (each solve in it, the backward one
        included): ``GRADIENT_STEP_FACTOR`` x the steps the forward solve of the subsample takes,
        plus 200, at most 50 000. A backward solve that needs more is reported as failed
        (max_steps) instead of crawling: backsolve on a chaotic field took 50 000 steps and
        270 s of CPU before this limit, for a forward solve of 591."""
        key = f"steps:{method}"
        if key not in self.cache:
            sol = self.model.solve(method=method, z0=self.model.z0[self.sub()], max_steps=50_000)
            self.cache[key] = min(50_000, GRADIENT_STEP_FACTOR * (sol.stats.accepted + sol.stats.rejected) + 200)
        return self.cache[key]


def _record(ctx: Context, prop: str, measured: float | None, threshold: float | None, verdict: str, message: str,
            recommendation: str, details: dict[str, Any], status: str = "success") -> Record:
    m = ctx.model
    details = {"threshold": threshold, "recommendation": recommendation, **details}
    return Record(property=prop, method=m.method, problem=m.name,
                  measured=None if measured is None else float(measured),
                  expected=None if threshold is None else float(threshold), verdict=verdict, backend="reference",
                  library=m.library, status=status, message=message, details=details)


def _fmt(x: float | None) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3g}"


# ----------------------------------------------------------------------------- instability
def measure_instability(ctx: Context) -> Record:
    """Blow-up or growth of |z| along the batch, the largest real part of df/dz's spectrum along
    the trajectories, and whether the method's stability region covers h*lambda at its steps."""
    m = ctx.model
    sol = ctx.trajectory()
    ys = ctx.ys()
    norms = np.linalg.norm(ys, axis=2)  # (T, B)
    base = np.maximum(1.0, norms[0])
    with np.errstate(invalid="ignore"):  # rows past the end of a stopped solve are NaN (not reached): left out
        ratio = np.where(np.isnan(norms), -np.inf, np.where(np.isfinite(norms), norms / base, np.inf))
        growth = ratio.max(axis=0)
    worst = np.argsort(-growth)[:5]
    max_growth = float(np.max(growth))
    _, eig = ctx.jacobians()
    re = np.real(eig)
    max_re = float(np.nanmax(re)) if np.any(np.isfinite(re)) else math.nan
    max_re_t = np.nanmax(re, axis=(1, 2)) if np.any(np.isfinite(re)) else np.full(len(ctx.grid), np.nan)
    coverage = _stability_coverage(ctx, sol)
    limited = sol.status.code == "max_steps"
    blew_up = (not sol.success and not limited) or not math.isfinite(max_growth) or max_growth > GROWTH_LIMIT
    outside = coverage.get("outside_fraction")
    unstable_steps = outside is not None and outside > STABILITY_FRACTION
    details = {"growth": growth.tolist(), "worst_samples": worst.tolist(), "max_growth": max_growth,
               "norm_quantiles": {"t": ctx.grid.tolist(),
                                  "median": np.nanmedian(np.where(np.isfinite(norms), norms, np.nan), axis=1).tolist(),
                                  "max": np.nanmax(np.where(np.isfinite(norms), norms, np.nan), axis=1).tolist()},
               "max_real_eigenvalue": max_re, "max_real_eigenvalue_t": {"t": ctx.grid.tolist(),
                                                                          "max_re": max_re_t.tolist()},
               "solve_status": sol.status.code, "stability": coverage, "growth_limit": GROWTH_LIMIT,
               "stability_fraction": STABILITY_FRACTION}
    T = abs(m.t_span[1] - m.t_span[0])
    if blew_up:
        what = (f"the solve ended with {sol.status.code} at t={_fmt(float(np.max(np.atleast_1d(sol.t_final))))}"
                if not sol.success else f"|z| grew {_fmt(max_growth)}x (samples {worst[:3].tolist()})")
        msg = (f"blow-up: {what}; the largest real part of df/dz along the trajectories is {_fmt(max_re)}"
               f" (growth like exp({_fmt(max_re * T)}) over the span)")
        rec = ("the dynamics themselves diverge: bound the field (weight decay or spectral normalisation of the"
               " last layer, a tanh output, or a damping term -a z), or shorten the span")
        return _record(ctx, "diagnose_instability", max_growth, GROWTH_LIMIT, "fail", msg, rec, details)
    if limited:
        t_end = float(np.max(np.atleast_1d(sol.t_final)))
        msg = (f"{m.method} used up its {sol.stats.accepted + sol.stats.rejected} steps by t={_fmt(t_end)} of"
               f" [{m.t_span[0]:g}, {m.t_span[1]:g}] without blowing up (|z| grew at most {_fmt(max_growth)}x): its steps"
               f" are limited by stability or the field's speed, not by the tolerance")
        rec = "see diagnose_stiffness and diagnose_work: an implicit method, or a cheaper field (regularise it)"
        return _record(ctx, "diagnose_instability", max_growth, GROWTH_LIMIT, "fail", msg, rec, details)
    if unstable_steps:
        msg = (f"{100 * outside:.0f}% of {m.method}'s steps put a decaying mode's h*lambda outside its stability"
               f" region (|R(h lambda)| up to {_fmt(coverage['max_abs_R'])}): the step size is limited by"
               f" stability, not accuracy; |z| grew at most {_fmt(max_growth)}x")
        rec = (f"the field is stiff for {m.method}: use an implicit method (see diagnose_stiffness), or"
               " regularise the Jacobian's spectral radius")
        return _record(ctx, "diagnose_instability", outside, STABILITY_FRACTION, "fail", msg, rec, details)
    msg = (f"stable: |z| grew at most {_fmt(max_growth)}x (limit {GROWTH_LIMIT:g}); the largest real part of df/dz"
           f" is {_fmt(max_re)}; "
           + (f"{m.method}'s steps kept h*lambda inside its stability region"
              f" ({100 * (outside or 0):.1f}% outside)" if outside is not None else coverage.get("reason", "")))
    return _record(ctx, "diagnose_instability", max_growth, GROWTH_LIMIT, "pass", msg, "none needed", details)


#: at most this many of the steps are checked against the stability region (evenly spaced)
MAX_STEPS_CHECKED = 60


def _stability_coverage(ctx: Context, sol: Any) -> dict[str, Any]:
    """For the steps the user's solver took on the batch: |R(h lambda)| of every eigenvalue with
    Re lambda < 0 of df/dz at the step's start, on the subsample (R the tableau's exact stability
    function). ``outside_fraction``: the fraction of steps where one exceeds 1."""
    m = ctx.model
    tab = getattr(SOLVERS.get(m.method), "tableau", None)
    if tab is None:
        return {"reason": f"{m.method} has no Runge-Kutta stability function (multistep): step stability not checked"}
    steps = sol.t_steps
    if steps is None or len(steps) < 2:
        return {"reason": "the solve recorded no steps"}
    steps = np.asarray(steps, dtype=np.float64)
    idx = np.unique(np.linspace(0, len(steps) - 2, min(MAX_STEPS_CHECKED, len(steps) - 1)).astype(int))
    starts, hs = steps[idx], np.diff(steps)[idx]
    z = m.z0[ctx.sub()]
    dense = m.solve(z0=z, t_eval=np.unique(np.concatenate([[m.t_span[0]], starts, [m.t_span[1]]])))
    from .. import _xp

    zs = np.asarray(_xp.to_numpy(dense.ys), dtype=np.float64)
    times = dense.ts
    worst_r, outside, rows = 0.0, 0, []
    for t, h in zip(starts, hs):
        k = int(np.argmin(np.abs(times - t)))
        ok = np.all(np.isfinite(zs[k]), axis=1)
        if not np.any(ok):
            continue
        with np.errstate(all="ignore"):
            eig = np.linalg.eigvals(m.jacobian(float(t), zs[k, ok]))
        dec = eig[np.real(eig) < 0]
        r = np.abs(theory.stability_value(tab, h * dec)) if dec.size else np.zeros(0)
        rmax = float(np.max(r, initial=0.0))
        worst_r = max(worst_r, rmax)
        outside += int(rmax > 1 + STABILITY_SLACK)
        rows.append({"t": float(t), "h": float(h), "max_abs_R": rmax,
                     "h_rho": float(h * np.max(np.abs(eig))) if eig.size else 0.0})
    if not rows:
        return {"reason": "no finite state to check"}
    return {"outside_fraction": outside / len(rows), "max_abs_R": worst_r, "steps_checked": len(rows),
            "steps_taken": int(len(steps) - 1), "steps": rows}


# ----------------------------------------------------------------------------- stiffness
def measure_stiffness(ctx: Context) -> Record:
    """Stiffness ratio and spectral radius along the subsample's trajectories (the existing
    estimator, :func:`odeverify.properties.stiffness.stiffness_estimate`, on the model's
    Jacobians), and the work of an explicit and an implicit method at the user's tolerance."""
    m = ctx.model
    jac, eig = ctx.jacobians()
    grid = ctx.grid
    ys = ctx.ys()[:, ctx.sub()]
    ratios, rho_t, per = [], [], []
    for i in range(ys.shape[1]):
        ok = np.all(np.isfinite(ys[:, i]), axis=1) & np.all(np.isfinite(jac[:, i]), axis=(1, 2))
        if np.sum(ok) < 1:
            continue
        blocks = iter(jac[ok, i])
        est = stiffness_estimate(m.numpy_field(), ys[ok, i], grid[ok], jac=lambda t, y, _b=blocks: next(_b))
        d = est.details
        ratios.append(d["max_stiffness_ratio"])
        rho_t.append(d["rho_T"])
        per.append({"sample": int(ctx.sub()[i]), "ratio": d["max_stiffness_ratio"], "rho_T": d["rho_T"],
                    "stiff": d["stiff"], "spectral_radius": [p["spectral_radius"] for p in d["points"]],
                    "t": [p["t"] for p in d["points"]]})
    ratio = max(ratios) if ratios else math.nan
    rhot = max(rho_t) if rho_t else math.nan
    explicit = m.method if is_explicit(m.method) else EXPLICIT_DEFAULT
    implicit = IMPLICIT_DEFAULT if is_explicit(m.method) else m.method
    work = {name: _work(ctx, name) for name in (explicit, implicit)}
    e, i = work[explicit]["work"], work[implicit]["work"]
    ratio_work = e / i if i > 0 else math.inf
    details = {"max_stiffness_ratio": ratio, "rho_T": rhot, "samples": per, "work": work,
               "explicit": explicit, "implicit": implicit,
               "eigenvalues_t": {"t": grid.tolist(),
                                 "max_abs": np.nanmax(np.abs(eig), axis=(1, 2)).tolist(),
                                 "min_re": np.nanmin(np.real(eig), axis=(1, 2)).tolist()}}
    spec = f"stiffness ratio up to {_fmt(ratio)}, spectral radius x span up to {_fmt(rhot)}"
    wtxt = (f"{explicit} {work[explicit]['work']:.0f} evaluations{' (hit the step limit)' if work[explicit]['limited'] else ''},"
            f" {implicit} {work[implicit]['work']:.0f} (f calls + n per Jacobian)")
    if not work[implicit]["ok"] and not work[explicit]["ok"]:
        return _record(ctx, "diagnose_stiffness", None, 1.0, "error", f"both solves failed ({wtxt}): {spec}",
                       "see diagnose_instability", details, status="failed")
    if ratio_work > 1.0:
        msg = f"stiff: {spec}; at rtol {m.rtol:g}: {wtxt}"
        rec = (f"{implicit}: {ratio_work:.3g}x fewer evaluations than {explicit} here" if is_explicit(m.method)
               else f"keep {implicit}: {ratio_work:.3g}x fewer evaluations than {explicit} here")
        return _record(ctx, "diagnose_stiffness", ratio_work, 1.0, "fail" if is_explicit(m.method) else "pass",
                       msg, rec, details)
    msg = f"not stiff: {spec}; at rtol {m.rtol:g}: {wtxt}"
    rec = (f"keep {explicit}: {1 / ratio_work:.3g}x fewer evaluations than {implicit}" if is_explicit(m.method)
           else f"{explicit}: {1 / ratio_work:.3g}x fewer evaluations than {implicit} here")
    return _record(ctx, "diagnose_stiffness", ratio_work, 1.0, "pass" if is_explicit(m.method) else "fail",
                   msg, rec, details)


def _work(ctx: Context, method: str) -> dict[str, Any]:
    """One shared-step solve of the subsample: evaluations (f calls, plus n per Jacobian for an
    implicit method: a Jacobian by autodiff is n JVPs), steps, wall time."""
    m = ctx.model
    limit = 2_000 if ctx.quick else 10_000
    t = time.perf_counter()
    sol = m.solve(method=method, z0=m.z0[ctx.sub()], max_steps=limit)
    wall = time.perf_counter() - t
    st = sol.stats
    work = _evaluations(m, st)
    return {"work": float(work), "nfev": st.nfev, "njev": st.njev, "accepted": st.accepted, "rejected": st.rejected,
            "ok": sol.success, "status": sol.status.code, "limited": sol.status.code == "max_steps", "wall_s": wall}


def _evaluations(m: UserModel, stats: Any) -> float:
    """Evaluations of f a solve cost: its calls of f, plus n per Jacobian when the Jacobian is
    taken by autodiff (n JVPs; a NumPy field's finite-difference Jacobians are already in nfev)."""
    return float(stats.nfev + (m.n * stats.njev if m.differentiable else 0))


# ----------------------------------------------------------------------------- work
def measure_work(ctx: Context) -> Record:
    """Evaluations per sample across the batch (each sample its own steps: per-sample mode),
    their distribution, tail and the costliest inputs; evaluations against the tolerance; the
    rejected-step fraction of the shared-step solve."""
    m = ctx.model
    t = time.perf_counter()
    if is_explicit(m.method):
        zw = m.z0[:QUICK_WORK_SAMPLES] if ctx.quick else m.z0
        sol = m.solve(z0=zw, batch="per-sample", t_eval=(m.t_span[0], m.t_span[1]), max_steps=50_000)
        acc = np.asarray(sol.stats.sample_accepted, dtype=np.float64)
        rej = np.asarray(sol.stats.sample_rejected, dtype=np.float64)
        nfe = 2 + evals_per_step(m.method) * (acc + rej)  # f(t0) and the initial-step probe, then the steps
        how = "per-sample steps" + (f", the first {len(zw)} samples (quick)" if len(zw) < m.batch else "")
    else:  # implicit methods: one solve per sample (per-sample mode is explicit-only)
        idx = ctx.sub()
        nfe, acc, rej = (np.full(m.batch, np.nan) for _ in range(3))
        for i in idx:
            s = m.solve(z0=m.z0[i:i + 1], t_eval=(m.t_span[0], m.t_span[1]))
            nfe[i], acc[i], rej[i] = _evaluations(m, s.stats), s.stats.accepted, s.stats.rejected
        sol = None
        how = "one solve per sample of the subsample"
    per_sample_s = time.perf_counter() - t
    valid = np.isfinite(nfe)
    med = float(np.median(nfe[valid]))
    tail = float(np.max(nfe[valid]) / med) if med > 0 else math.nan
    order = np.argsort(-np.where(valid, nfe, -1))
    worst = [int(i) for i in order[:5] if valid[i]]
    shared = ctx.trajectory()
    attempted = shared.stats.accepted + shared.stats.rejected
    rej_frac = shared.stats.rejected / attempted if attempted else 0.0
    sweep = _tolerance_sweep(ctx)
    details = {"nfe_per_sample": [None if not np.isfinite(v) else float(v) for v in nfe],
               "how": how, "median": med, "p90": float(np.percentile(nfe[valid], 90)),
               "p99": float(np.percentile(nfe[valid], 99)), "max": float(np.max(nfe[valid])),
               "worst_samples": worst, "worst_nfe": [float(nfe[i]) for i in worst],
               "worst_inputs": [m.z0[i].tolist() for i in worst[:3]],
               "rejected_fraction": rej_frac, "shared_nfev": shared.stats.nfev, "shared_accepted": shared.stats.accepted,
               "shared_rejected": shared.stats.rejected, "tolerance_sweep": sweep, "per_sample_s": per_sample_s,
               "work_tail": WORK_TAIL, "reject_limit": REJECT_LIMIT}
    if sol is not None and not sol.success:
        details["per_sample_status"] = sol.status.code
    dist = (f"evaluations per sample: median {med:.0f}, p90 {details['p90']:.0f}, max {details['max']:.0f}"
            f" (sample {worst[0] if worst else '-'})")
    if tail > WORK_TAIL or rej_frac > REJECT_LIMIT:
        why = []
        if tail > WORK_TAIL:
            why.append(f"the costliest inputs need {tail:.3g}x the median's evaluations (samples {worst[:5]})")
        if rej_frac > REJECT_LIMIT:
            why.append(f"{100 * rej_frac:.0f}% of the shared solve's steps are rejected")
        rec = ("look at the costliest inputs (details.worst_samples): a region of state space where the field is"
               " fast or stiff; per-sample step sizes (batch='per-sample') keep them from slowing the whole batch,"
               " a kinetic-energy or Jacobian-norm regulariser makes the field cheaper to integrate")
        return _record(ctx, "diagnose_work", tail, WORK_TAIL, "fail", f"excessive work: {'; '.join(why)}; {dist}",
                       rec, details)
    return _record(ctx, "diagnose_work", tail, WORK_TAIL, "pass",
                   f"even work: {dist}; the costliest is {tail:.3g}x the median; {100 * rej_frac:.0f}% rejected steps",
                   "none needed", details)


def _tolerance_sweep(ctx: Context) -> dict[str, Any]:
    """Evaluations of the user's method on the subsample at tolerances around the user's, and
    the fitted slope of log(nfev) against log(1/rtol) (1/(p+1) for an order-p method in its
    asymptotic range)."""
    m = ctx.model
    factors = (100.0, 1.0) if ctx.quick else (100.0, 10.0, 1.0, 0.1, 0.01)
    rows = []
    for f in factors:
        rtol = min(0.1, m.rtol * f)
        s = m.solve(z0=m.z0[ctx.sub()], rtol=rtol, atol=m.atol * rtol / m.rtol, t_eval=(m.t_span[0], m.t_span[1]),
                    max_steps=20_000)
        rows.append({"rtol": rtol, "nfev": _evaluations(m, s.stats), "status": s.status.code})
    ok = [r for r in rows if r["status"] == "success" and r["nfev"] > 0]
    slope = None
    if len(ok) >= 2 and len({r["rtol"] for r in ok}) >= 2:
        slope = float(np.polyfit(np.log([1 / r["rtol"] for r in ok]), np.log([r["nfev"] for r in ok]), 1)[0])
    order = getattr(SOLVERS.get(m.method), "order", None)
    return {"rows": rows, "slope": slope, "expected_slope": None if order is None else 1.0 / (order + 1)}


# ----------------------------------------------------------------------------- adjoint
def measure_adjoint(ctx: Context) -> Record:
    """Backsolve's reconstruction error of z(t0) and its gradient's error against the discrete
    gradient at the user's tolerance (subsample), with the memory and time of the alternatives."""
    m = ctx.model
    if not m.differentiable:
        return _record(ctx, "diagnose_adjoint", None, None, "skip",
                       f"the field computes in {m.library}, which has no automatic differentiation: no gradient modes"
                       " to compare", "write the field in PyTorch or JAX to diagnose its gradients", {})
    oracle = ctx.gradient("discrete")
    bs = ctx.gradient("backsolve")
    thr = gradient_threshold(m.rtol)
    err = _grad_error(bs, oracle)
    mismatch = bs.adjoint_mismatch if bs.adjoint_mismatch is not None else math.nan
    alternatives = ["discrete", "backsolve"] + ([] if ctx.quick else ["checkpoint", "interpolated"])
    modes = {}
    for mode in alternatives:
        g = ctx.gradient(mode)
        modes[mode] = {"error": 0.0 if mode == "discrete" else _grad_error(g, oracle), "status": g.status.code,
                       "time_s": float(sum(v for k, v in g.timing.items() if k in ("forward_s", "backward_s"))),
                       "memory_bytes": _memory(g), "nfev_forward": g.nfev_forward, "nfev_backward": g.nfev_backward,
                       "adjoint_mismatch": g.adjoint_mismatch}
    details = {"gradient_error": err, "reconstruction_error": mismatch, "modes": modes, "threshold_kind": "upper",
               "samples": ctx.sub().tolist(), "rtol": m.rtol}
    bad = not (err <= thr) or not (mismatch <= thr)
    if bad:
        good = [k for k, v in modes.items() if k != "backsolve" and v["status"] == "success" and v["error"] <= thr]
        best = min(good, key=lambda k: (modes[k]["memory_bytes"] or math.inf, modes[k]["time_s"])) if good else None
        rec = ("do not train with backsolve (odeint_adjoint) on this model; "
               + (f"use {best}: gradient error {_fmt(modes[best]['error'])}, {_mem(modes[best]['memory_bytes'])},"
                  f" {modes[best]['time_s']:.3g} s on {len(ctx.sub())} samples" if best else
                  "no measured mode was accurate: tighten the tolerance"))
        recon = (f"its backward solve failed ({bs.status.code}"
                 + (f": more than {ctx.gradient_step_limit()} steps, {GRADIENT_STEP_FACTOR}x the forward solve's"
                    if bs.status.code == "max_steps" else "") + ")" if not bs.success else
                 f"it reconstructs z(t0) with relative error {_fmt(mismatch)}")
        msg = (f"backsolve cannot be trusted: {recon} and its gradient is off the discrete gradient by {_fmt(err)}"
               f" (threshold {thr:.3g} at rtol {m.rtol:g}): the backward solve of z is unstable (a dissipative or"
               " stiff field, or a chaotic one?)")
        return _record(ctx, "diagnose_adjoint", max(err, mismatch) if math.isfinite(mismatch) else err, thr, "fail",
                       msg, rec, details)
    cheapest = min(modes, key=lambda k: (modes[k]["memory_bytes"] or math.inf))
    msg = (f"backsolve is accurate here: reconstruction error {_fmt(mismatch)}, gradient error {_fmt(err)}"
           f" (threshold {thr:.3g})")
    return _record(ctx, "diagnose_adjoint", max(err, mismatch), thr, "pass", msg,
                   f"backsolve is safe; least memory measured: {cheapest} ({_mem(modes[cheapest]['memory_bytes'])})",
                   details)


def _grad_error(g: GradientResult, oracle: GradientResult) -> float:
    """|g - oracle| / |oracle| over dL/dz0 and every dL/dtheta (inf for a failed gradient)."""
    if not g.success or not oracle.success:
        return math.inf
    a, b = g.flat(), oracle.flat()
    den = float(np.linalg.norm(b))
    err = float(np.linalg.norm(a - b)) / (den if den > 0 else 1.0)
    return err if math.isfinite(err) else math.inf


def _memory(g: GradientResult) -> float | None:
    vals = [g.memory.get("saved_for_backward_peak_bytes"), g.memory.get("stored_bytes")]
    vals = [v for v in vals if v is not None]
    return float(sum(vals)) if vals else None


def _mem(b: float | None) -> str:
    if b is None:
        return "memory not measured"
    return f"{b / 1e6:.3g} MB" if b >= 1e5 else f"{b / 1e3:.3g} kB"


# ----------------------------------------------------------------------------- gradient correctness
def measure_gradient(ctx: Context) -> Record:
    """The user's training gradient mode against the discrete-mode oracle on the subsample."""
    m = ctx.model
    if not m.differentiable:
        return _record(ctx, "diagnose_gradient", None, None, "skip",
                       f"the field computes in {m.library}, which has no automatic differentiation",
                       "write the field in PyTorch or JAX to diagnose its gradients", {})
    if m.mode is None:
        return _record(ctx, "diagnose_gradient", None, None, "skip",
                       "no training gradient mode given (--mode): nothing to grade against the discrete oracle"
                       " (diagnose_adjoint grades backsolve)",
                       f"pass --mode with the mode you train with ({', '.join(GRADIENT_MODES.names())})", {})
    if m.mode == "discrete":
        return _record(ctx, "diagnose_gradient", 0.0, gradient_threshold(m.rtol), "pass",
                       "the discrete mode differentiates the computed solution itself: it is the oracle",
                       "none needed", {"mode": "discrete"})
    thr = gradient_threshold(m.rtol)
    options = {"n_steps": 64} if GRADIENT_MODES.get(m.mode).fixed_step else {}
    oracle = ctx.gradient("discrete", **options)
    g = ctx.gradient(m.mode, **options)
    err = _grad_error(g, oracle)
    details = {"mode": m.mode, "gradient_error": err, "status": g.status.code, "samples": ctx.sub().tolist(),
               "adjoint_mismatch": g.adjoint_mismatch, "time_s": g.timing, "memory_bytes": _memory(g),
               "oracle_time_s": oracle.timing, "oracle_memory_bytes": _memory(oracle), **options}
    if not (err <= thr):
        msg = (f"{m.mode}'s gradient is off the discrete gradient by {_fmt(err)} (threshold {thr:.3g} at rtol"
               f" {m.rtol:g}; {g.status.code}){': ' + g.message if g.message else ''}")
        return _record(ctx, "diagnose_gradient", err, thr, "fail", msg,
                       f"train with discrete or checkpoint, or tighten the adjoint tolerance of {m.mode}", details)
    return _record(ctx, "diagnose_gradient", err, thr, "pass",
                   f"{m.mode}'s gradient agrees with the discrete gradient to {_fmt(err)} (threshold {thr:.3g})",
                   "none needed", details)


# ----------------------------------------------------------------------------- solver dependence
def measure_solver_dependence(ctx: Context) -> Record:
    """The output z(T) of the subsample under several solvers at the user's tolerance and the
    user's solver at several tolerances, against a tight DOP853 reference: the largest
    difference, in units of the tolerance's error scale atol + rtol |z|."""
    m = ctx.model
    z = m.z0[ctx.sub()]
    span_ends = (m.t_span[0], m.t_span[1])
    _, eig = ctx.jacobians()
    rho_t = float(np.nanmax(np.abs(eig))) * abs(m.t_span[1] - m.t_span[0]) if np.any(np.isfinite(eig)) else 0.0
    ref_method = REFERENCE_STIFF if rho_t > STIFF_REFERENCE_RHO_T else "dop853"
    ref = m.solve(method=ref_method, z0=z, rtol=REFERENCE_RTOL, atol=REFERENCE_ATOL, t_eval=span_ends,
                  max_steps=100_000)
    from .. import _xp

    if not ref.success:
        return _record(ctx, "diagnose_solver_dependence", None, DEPENDENCE_LIMIT, "error",
                       f"the reference solve ({ref_method}, rtol {REFERENCE_RTOL:g}) ended with {ref.status.code}",
                       "see diagnose_instability", {}, status=ref.status.code)
    zref = np.asarray(_xp.to_numpy(ref.ys[-1]), dtype=np.float64)
    scale = m.atol + m.rtol * np.abs(zref)
    solvers = [m.method] + [s for s in (DEPENDENCE_SOLVERS[:2] if ctx.quick else DEPENDENCE_SOLVERS) if s != m.method]
    rows = []
    for name in solvers:
        s = m.solve(method=name, z0=z, t_eval=span_ends, max_steps=50_000)
        diff = np.abs(np.asarray(_xp.to_numpy(s.ys[-1]), dtype=np.float64) - zref)
        rows.append({"method": name, "rtol": m.rtol, "status": s.status.code, "nfev": s.stats.nfev,
                     "max_abs_diff": float(np.nanmax(diff)) if s.success else math.inf,
                     "in_tolerance_units": float(np.nanmax(diff / scale)) if s.success else math.inf})
    sweep = []
    for f in ((100.0, 1.0) if ctx.quick else (1000.0, 100.0, 10.0, 1.0, 0.1, 0.01)):
        rtol = min(0.1, m.rtol * f)
        s = m.solve(z0=z, rtol=rtol, atol=m.atol * rtol / m.rtol, t_eval=span_ends, max_steps=50_000)
        diff = np.abs(np.asarray(_xp.to_numpy(s.ys[-1]), dtype=np.float64) - zref)
        sweep.append({"rtol": rtol, "max_abs_diff": float(np.nanmax(diff)) if s.success else math.inf,
                      "status": s.status.code})
    details = {"solvers": rows, "tolerance_sweep": sweep, "reference": f"{ref_method} rtol {REFERENCE_RTOL:g}"
               f" atol {REFERENCE_ATOL:g}", "samples": ctx.sub().tolist(), "threshold_kind": "upper"}
    if m.differentiable and not ctx.quick and ref_method == "dop853":  # not through Newton iterations
        g_user = ctx.gradient("discrete")
        g_ref = ctx.gradient("discrete", method=ref_method, rtol=REFERENCE_RTOL, atol=REFERENCE_ATOL)
        details["gradient_difference"] = _grad_error(g_user, g_ref)
    worst = max(rows, key=lambda r: r["in_tolerance_units"])
    measured = worst["in_tolerance_units"]
    gtxt = (f"; the gradient differs from the reference's by {_fmt(details['gradient_difference'])} (relative)"
            if "gradient_difference" in details else "")
    if not (measured <= DEPENDENCE_LIMIT):
        msg = (f"the output depends on the solver: {worst['method']} at rtol {m.rtol:g} differs from the tight"
               f" reference by {_fmt(measured)}x the tolerance's error scale (max |dz(T)| {_fmt(worst['max_abs_diff'])})"
               f"{gtxt}: the numerical method is part of the trained model")
        rec = ("tighten the tolerance until the difference stops shrinking (details.tolerance_sweep), or train and"
               " evaluate with the same solver and tolerance; if it never converges the dynamics are chaotic"
               " (see diagnose_lyapunov)")
        return _record(ctx, "diagnose_solver_dependence", measured, DEPENDENCE_LIMIT, "fail", msg, rec, details)
    return _record(ctx, "diagnose_solver_dependence", measured, DEPENDENCE_LIMIT, "pass",
                   f"solver-independent: every solver at rtol {m.rtol:g} is within {_fmt(measured)}x the tolerance's"
                   f" error scale of the reference{gtxt}", "none needed", details)


#: the measurements of this module, in the order a diagnosis runs them
MEASUREMENTS = (
    ("instability", measure_instability),
    ("stiffness", measure_stiffness),
    ("work", measure_work),
    ("adjoint", measure_adjoint),
    ("gradient", measure_gradient),
    ("solver_dependence", measure_solver_dependence),
)
