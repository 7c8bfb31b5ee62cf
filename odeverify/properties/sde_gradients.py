"""SDE gradient properties: every SDE gradient mode of a backend (``Backend.sde_gradient``)
graded pathwise, on one Brownian path held fixed (issue 10, "Neural SDEs", Gradients).

The oracle is the **pathwise finite difference** of the NumPy solve on the same path
(:func:`odeverify.gradients.sde.sde_fd_gradient`) with odeverify's step rule of the method (the
reference backend's own method, a library method's ``SDEMethod.reference``): the derivative of
the computed solution, which a discrete mode claims to round-off. Its error bound is derived as
for the ODE oracle (``properties.gradients.finite_difference_gradient``): central differences
at the step ``h = eps^(1/3) max(1, |x|)`` and at ``h/2``; the ``h/2`` estimate is kept, with the
bound ``|D(h) - D(h/2)| + δ/(h/2)`` (the first term bounds the truncation error of ``D(h/2)``
three times over, the second its round-off, ``δ`` being ``n_steps`` rounding errors of the
loss's scale), and it is reliable when ``D(h)`` and ``D(h/2)`` agree to ``sqrt(eps)`` beyond
that round-off. A discrete gradient passes when it is within that bound plus its own
round-off, ``N eps |g|`` for ``N`` steps (no free constant).

Properties (each returns a :class:`~odeverify.records.Record`):

- :func:`sde_gradient_accuracy`: a mode's dL/dy0 and dL/dθ against the oracle; a discrete mode
  must agree within the bound above, and with the backend's other discrete modes and (for a
  library) with odeverify's discrete gradient of the same rule, to both round-offs; a
  continuous adjoint's distance is measured (its discretisation error is graded by
  :func:`sde_adjoint_convergence`);
- :func:`sde_reversible_exactness`: reversible Heun's exact backward pass (the algebraic
  inverse on the same increments) against the discrete gradient of the same solve, to the
  round-off of both (``2 N eps``), with the reconstruction mismatch of y0 (at most
  ``sqrt(eps)``, the ODE property's threshold);
- :func:`sde_adjoint_convergence`: the stochastic adjoint (Li et al. 2020) against the discrete
  gradient as the step halves: the per-path gap of dL/dy0 must shrink at the strong order
  (a slope with a paired-bootstrap 95% interval over the paths, judged like the strong order
  by :func:`~odeverify.properties.sde.judge_interval`), and the gap of dL/dθ (a sum over the
  paths, so one number per step) must not shrink half an order slower.

Every record carries the adjoint mismatch (``GradientResult.adjoint_mismatch``, the backward
reconstruction error of the state) as the ODE gradient records do, and names a lost
reconstruction in its message (:func:`~odeverify.gradients._spec.mismatch_message`).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..backends.base import UnsupportedOption, sde_gradient_params
from ..brownian import BrownianTree
from ..gradients import GradientResult, Loss
from ..gradients._spec import mismatch_message
from ..problems.sde import SDEProblem
from ..records import Record
from ._common import backend_for
from .gradients import EPS, FD_AGREEMENT, RECONSTRUCTION_THRESHOLD, loss_scale
from .sde import RESOLUTION, STRONG_SCALE, _combine, judge_interval, slope_interval, step_ladder

#: the step counts of :func:`sde_adjoint_convergence` (moved to the problem's time scale by
#: :func:`~odeverify.properties.sde.step_ladder`)
ADJOINT_STEPS = (16, 32, 64, 128)


# ============================================================================ inputs and the oracle
def default_sde_loss(problem: SDEProblem, *, times: int = 2, seed: int = 0) -> Loss:
    """Seeded weights at ``times`` equally spaced output times (t1 last, exactly) and a
    quadratic term (q = 0.5): step boundaries of any step count divisible by ``times``."""
    t0, t1 = problem.t_span
    ts = [t0 + (t1 - t0) * (i + 1) / times for i in range(times - 1)] + [t1]
    return Loss.seeded(ts, problem.n, seed=seed, quadratic=0.5)


def _path(problem: SDEProblem, paths: int, seed: int) -> BrownianTree:
    return BrownianTree(*problem.t_span, problem.brownian_shape(paths), seed=seed)


def _inputs(problem: SDEProblem, paths: int) -> np.ndarray:
    """The differentiated inputs as one vector, in :meth:`GradientResult.flat`'s order."""
    parts = [np.ravel(problem.y0_batch(paths))] + [np.ravel(v) for _, v in sorted(sde_gradient_params(problem).items())]
    return np.concatenate(parts)


def sde_fd_oracle(problem: SDEProblem, loss: Loss, *, method: str, bm: Any, n_steps: int) -> GradientResult:
    """Pathwise central differences of the NumPy solve with odeverify's ``method`` on ``bm``
    (:func:`~odeverify.gradients.sde.sde_fd_gradient`) at the steps ``h`` and ``h/2`` (module
    docstring); ``details`` hold ``error_estimate`` (absolute, 2-norm), ``reliable`` and the
    parts of the bound."""
    from ..gradients.sde import sde_fd_gradient

    step = EPS ** (1 / 3)
    coarse = sde_fd_gradient(problem, loss, method=method, bm=bm, n_steps=n_steps, eps=step)
    fine = sde_fd_gradient(problem, loss, method=method, bm=bm, n_steps=n_steps, eps=step / 2)
    x = _inputs(problem, bm.shape[0] if len(bm.shape) == 2 else 1)
    d1, d2 = coarse.flat(), fine.flat()
    # the loss's round-off scale: the terms it sums, at the solution (the quadratic part included)
    ys = _solution_scale(problem, loss, method, bm, n_steps)
    delta = max(n_steps, 1) * EPS * max(ys, abs(fine.loss))
    roundoff = float(np.linalg.norm(delta / (step / 2 * np.maximum(1.0, np.abs(x)))))
    diff = float(np.linalg.norm(d1 - d2))
    fine.details.update({"kind": "finite_difference", "error_estimate": diff + roundoff,
                         "reliable": bool(diff <= FD_AGREEMENT * float(np.linalg.norm(d2)) + 3 * roundoff),
                         "richardson_diff": diff, "roundoff_bound": roundoff, "h_max": float(step * np.max(
                             np.maximum(1.0, np.abs(x)))), "rule": method})
    return fine


def _solution_scale(problem: SDEProblem, loss: Loss, method: str, bm: Any, n_steps: int) -> float:
    """:func:`~odeverify.properties.gradients.loss_scale` of the reference solve at the loss times."""
    sol = backend_for("reference").solve_sde(problem, method, bm=bm, n_steps=n_steps, t_eval=loss.t_eval)
    return loss_scale(loss, np.asarray(sol.ys, dtype=np.float64)) if sol.success else math.inf


def _rule(b: Any, method: str) -> str | None:
    """odeverify's method with the step rule of ``b``'s ``method`` (None: none)."""
    if b.name.startswith("reference"):
        return method
    return b.capabilities().sde_methods[method].reference


def _relative(g: np.ndarray, ref: np.ndarray) -> float:
    if not np.all(np.isfinite(g)):
        return math.inf
    scale = float(np.linalg.norm(ref))
    return float(np.linalg.norm(g - ref)) / (scale if scale > 0 else 1.0)


def _common(prop: str, problem: SDEProblem, method: str, mode: str, b: Any, **extra: Any) -> dict[str, Any]:
    library = "torch" if b.name in ("reference", "torchsde") else getattr(b, "library", "numpy")
    return dict(property=prop, method=f"{method}/{mode}", problem=problem.name, backend=b.name, library=library,
                **extra)


def _failed(res: GradientResult, common: dict[str, Any], what: str) -> Record:
    return Record(measured=None, verdict="error", status=res.status.code, message=f"{what}: {res.message}", **common)


# ============================================================================ properties
def sde_gradient_accuracy(problem: SDEProblem, method: str, mode: str, *, backend: str = "reference",
                          loss: Loss | None = None, n_steps: int = 16, paths: int = 4, seed: int = 0,
                          oracle: GradientResult | None = None) -> Record:
    """A mode's pathwise gradient (dL/dy0 of every path and dL/dθ) on ``paths`` Brownian paths
    from ``seed`` at ``n_steps`` steps, against the finite-difference oracle of the same
    solve (:func:`sde_fd_oracle`). A discrete mode passes within the oracle's error bound plus
    its own round-off ``N eps |g|``, and must agree with the backend's other discrete modes of
    this method and (a library) with odeverify's discrete gradient of the same rule to their
    round-offs (``2 N eps``). A continuous adjoint is measured (``skip``): it differs by its
    discretisation error, graded by :func:`sde_adjoint_convergence`."""
    b = backend_for(backend)
    caps = b.capabilities()
    loss = loss or default_sde_loss(problem)
    bm = _path(problem, paths, seed)
    discrete = mode in caps.sde_discrete_gradient_modes
    rule = _rule(b, method)
    details: dict[str, Any] = {"n_steps": n_steps, "paths": paths, "seed": seed, "discrete": discrete, "rule": rule}
    common = _common("sde_gradient_accuracy", problem, method, mode, b, details=details)
    res = b.sde_gradient(problem, method, mode, loss, bm=bm, n_steps=n_steps)
    details.update(result=res.to_dict(), adjoint_mismatch=res.adjoint_mismatch)
    if not res.success:
        return _failed(res, {**common, "expected": None}, "the gradient failed")
    if rule is None:
        return Record(measured=None, expected=None, verdict="skip", message=f"{b.name} {method!r} has no odeverify"
                      " step rule to difference on the same path: no pathwise oracle", **common)
    oracle = oracle or sde_fd_oracle(problem, loss, method=rule, bm=bm, n_steps=n_steps)
    ref = oracle.flat()
    scale = max(float(np.linalg.norm(ref)), 1e-300)
    err = _relative(res.flat(), ref)
    expected = (oracle.details["error_estimate"] + n_steps * EPS * scale) / scale
    details.update(oracle={k: oracle.details[k] for k in ("error_estimate", "reliable", "richardson_diff",
                                                          "roundoff_bound", "h_max")})
    lost = mismatch_message(res.adjoint_mismatch)
    if not discrete:
        return Record(measured=err, expected=None, verdict="skip", message="; ".join(filter(None, (
            f"measured: a continuous adjoint differs from the derivative of the computed solution by its"
            f" discretisation error ({err:.3g} at {n_steps} steps; graded by sde_adjoint_convergence)", lost))),
            **common)
    if not oracle.details["reliable"]:
        return Record(measured=err, expected=expected, verdict="skip", message="; ".join(filter(None, (
            "the finite-difference oracle is unreliable (h and h/2 disagree)", lost))), **common)
    peers = _peers(b, problem, method, mode, res.flat(), loss, bm, n_steps, rule)
    bound = 2 * n_steps * EPS
    details.update(peers=peers, peer_bound=bound)
    off = [f"{k} ({v:.3g})" for k, v in peers.items() if not v <= bound]
    problems = []
    if not err <= expected:
        problems.append(f"differs from finite differences of the same solve by {err:.3g} > {expected:.3g} (the"
                        " oracle's bound plus N eps)")
    if off:
        problems.append(f"differs from {', '.join(off)} by more than the round-off of both ({bound:.3g})")
    return Record(measured=err, expected=expected, verdict="fail" if problems else "pass",
                  message="; ".join(problems + ([lost] if lost else [])), **common)


def _peers(b: Any, problem: SDEProblem, method: str, mode: str, mine: np.ndarray, loss: Loss, bm: Any,
           n_steps: int, rule: str) -> dict[str, float]:
    """The relative distance of ``mode``'s gradient to every other discrete gradient of the same
    solve: the backend's other discrete modes of ``method`` and, for a library, odeverify's
    discrete mode of ``rule`` (a mode that cannot take the method is left out)."""
    others = [(b, method, m) for m in b.capabilities().sde_discrete_gradient_modes if m != mode]
    if not b.name.startswith("reference"):
        others.append((backend_for("reference"), rule, "discrete"))
    out = {}
    for peer, meth, m in others:
        try:
            r = peer.sde_gradient(problem, meth, m, loss, bm=bm, n_steps=n_steps)
        except UnsupportedOption:
            continue
        out[f"{peer.name} {meth}/{m}"] = _relative(mine, r.flat()) if r.success else math.inf
    return out


def sde_reversible_exactness(problem: SDEProblem, method: str = "reversible_heun", *, backend: str = "reference",
                             mode: str | None = None, discrete_mode: str | None = None, loss: Loss | None = None,
                             n_steps: int = 32, paths: int = 4, seed: int = 0) -> Record:
    """Reversible Heun's exact backward pass (``mode``: the reference's ``reversible_heun``,
    torchsde's ``adjoint``, whose default for this method is ``adjoint_reversible_heun``)
    against the discrete gradient (``discrete_mode``) of the same solve on the same path:
    equal to the round-off of both, ``2 N eps`` relative, and y0 reconstructed to within
    :data:`~odeverify.properties.gradients.RECONSTRUCTION_THRESHOLD` (``adjoint_mismatch``)."""
    b = backend_for(backend)
    caps = b.capabilities()
    mode = mode or ("reversible_heun" if "reversible_heun" in caps.sde_gradient_modes else "adjoint")
    discrete_mode = discrete_mode or next((m for m in caps.sde_discrete_gradient_modes if m != mode), None)
    loss = loss or default_sde_loss(problem)
    bound = 2 * n_steps * EPS
    details: dict[str, Any] = {"n_steps": n_steps, "paths": paths, "seed": seed, "discrete_mode": discrete_mode,
                               "mismatch_threshold": RECONSTRUCTION_THRESHOLD}
    common = _common("sde_reversible_exactness", problem, method, mode, b, expected=bound, details=details)
    if not caps.sde_methods[method].reversible:
        return Record(measured=None, verdict="skip", message=f"{method} claims no algebraic inverse", **common)
    bm = _path(problem, paths, seed)
    r = b.sde_gradient(problem, method, mode, loss, bm=bm, n_steps=n_steps)
    d = b.sde_gradient(problem, method, discrete_mode, loss, bm=bm, n_steps=n_steps)
    details.update(adjoint_mismatch=r.adjoint_mismatch, result=r.to_dict())
    for res, what in ((r, mode), (d, discrete_mode)):
        if not res.success:
            return _failed(res, common, f"{what} failed")
    gap = _relative(r.flat(), d.flat())
    mismatch = r.adjoint_mismatch if r.adjoint_mismatch is not None else math.inf
    problems = []
    if not gap <= bound:
        problems.append(f"the exact backward pass differs from the {discrete_mode} gradient by {gap:.3g} > 2 N eps ="
                        f" {bound:.3g}")
    if not mismatch <= RECONSTRUCTION_THRESHOLD:
        problems.append(f"y0 is reconstructed with a mismatch of {mismatch:.3g} > {RECONSTRUCTION_THRESHOLD:.3g}")
    lost = mismatch_message(r.adjoint_mismatch)
    return Record(measured=gap, verdict="fail" if problems else "pass", message="; ".join(problems + (
        [lost] if lost else [])), **common)


def adjoint_claim(problem: SDEProblem, info: Any) -> float | None:
    """The strong order at which the adjoint's gap to the discrete gradient vanishes: the
    forward method's for the problem's noise class and for the augmented system's, whose
    diffusion couples the noise columns through the adjoint state (commuting only for one
    noise dimension); None where the method claims none."""
    aug = "commutative" if problem.noise_dim == 1 else "general"
    orders = [info.strong.get(problem.noise_class), info.strong.get(aug, info.strong.get(problem.noise_class))]
    return None if any(o is None for o in orders) else float(min(orders))


def sde_adjoint_convergence(problem: SDEProblem, method: str, mode: str = "adjoint", *, backend: str = "reference",
                            discrete_mode: str | None = None, loss: Loss | None = None,
                            n_steps: Sequence[int] | None = None, paths: int = 64, seed: int = 0) -> Record:
    """The continuous (stochastic) adjoint against the discrete gradient of the same solve on
    the same ``paths`` paths as the step halves (``n_steps``; default :data:`ADJOINT_STEPS` on
    the problem's time scale): the gap vanishes at the strong order :func:`adjoint_claim`.

    The units are the paths (dL/dy0 of path k depends on path k alone): the per-path gap
    ``|g_adj,y0[k] - g_disc,y0[k]|`` is fitted against h with a paired-bootstrap 95% interval
    (:func:`~odeverify.properties.sde.slope_interval`) and judged as the strong order is
    (pass, fail, or inconclusive with the paths that would settle it). dL/dθ sums the paths,
    so its gap has one value per step count: its least-squares slope must exceed ``claim -
    RESOLUTION`` (a term left out of the adjoint leaves an O(1) gap, slope ~0). The adjoint
    mismatch (the backward reconstruction of the state) is recorded per step count; a gap at
    round-off at every step (an exact backward pass) passes as such."""
    b = backend_for(backend)
    caps = b.capabilities()
    info = caps.sde_methods[method]
    discrete_mode = discrete_mode or next(iter(caps.sde_discrete_gradient_modes), None)
    loss = loss or default_sde_loss(problem)
    claim = adjoint_claim(problem, info)
    ns = step_ladder(problem, ADJOINT_STEPS, STRONG_SCALE) if n_steps is None else [int(n) for n in n_steps]
    span = problem.t_span[1] - problem.t_span[0]
    hs = np.asarray([span / n for n in ns])
    details: dict[str, Any] = {"n_steps": ns, "h": hs.tolist(), "paths": paths, "seed": seed,
                               "discrete_mode": discrete_mode, "noise_class": problem.noise_class}
    common = _common("sde_adjoint_convergence", problem, method, mode, b, expected=claim, details=details)
    if claim is None:
        return Record(measured=None, verdict="skip", message=f"{method} claims no strong order for"
                      f" {problem.noise_class} noise", **common)
    bm = _path(problem, paths, seed)
    per_path, theta, mismatch, statuses = [], [], [], []
    n = problem.n
    for k in ns:
        r = b.sde_gradient(problem, method, mode, loss, bm=bm, n_steps=k)
        d = b.sde_gradient(problem, method, discrete_mode, loss, bm=bm, n_steps=k)
        statuses.append([r.status.code, d.status.code])
        if not (r.success and d.success):
            return _failed(r if not r.success else d, common, f"at {k} steps")
        per_path.append(np.linalg.norm(np.reshape(r.grad_y0 - d.grad_y0, (paths, n)), axis=-1))
        theta.append(_relative(r.flat()[paths * n:], d.flat()[paths * n:]) if r.grad_params else None)
        mismatch.append(r.adjoint_mismatch)
        details["adjoint_method"] = r.options.get("adjoint_method")
    gaps = np.asarray(per_path)  # (K, paths)
    details.update(statuses=statuses, gap_y0_mean=gaps.mean(axis=1).tolist(), gap_theta=theta,
                   adjoint_mismatch=mismatch)
    lost = mismatch_message(max((m for m in mismatch if m is not None), default=None))
    # round-off of the two gradients: 2 N eps of their scale, at the finest step
    roundoff = 2 * max(ns) * EPS
    y0_exact = float(np.max(gaps)) <= roundoff * max(float(np.max(np.abs(d.grad_y0))), 1e-300) * math.sqrt(n)
    theta_exact = all(t is None or t <= roundoff for t in theta)
    if y0_exact and theta_exact:
        return Record(measured=None, verdict="pass", message="; ".join(filter(None, (
            f"exact: the gap is at round-off at every step (max {float(np.max(gaps)):.3g}): this backward pass is"
            " the derivative of the computed solution", lost))), **common)
    judged = []
    if y0_exact:  # e.g. a linear SDE: the adjoint of dL/dy0 commutes with the method
        judged.append(("pass", "the dL/dy0 gap is at round-off at every step"))
    else:
        fit = slope_interval(hs, gaps, seed=seed)
        details["fit"] = fit
        judged.append(judge_interval(fit, claim, paths, "slope of the adjoint's per-path dL/dy0 gap to the"
                                     " discrete gradient"))
    measured = details["fit"]["slope"] if "fit" in details else None
    if not theta_exact:
        t_arr = np.asarray(theta, dtype=np.float64)
        slope = float(np.polyfit(np.log(hs), np.log(t_arr), 1)[0]) if np.all(t_arr > 0) else math.nan
        details["theta_slope"] = slope
        measured = slope if measured is None else measured
        ok = slope > claim - RESOLUTION
        judged.append(("pass" if ok else "fail", f"dL/dθ gap slope {slope:.3f} (one value per step: the gradient"
                       f" sums the paths){'' if ok else f' <= {claim:g} - {RESOLUTION}: it does not vanish at the claim'}"
                       f" (gaps {', '.join(f'{t:.2g}' for t in theta)})"))
    verdict, message = _combine(judged)
    return Record(measured=measured, verdict=verdict, message="; ".join(filter(None, (message, lost))), **common)


__all__ = ["ADJOINT_STEPS", "adjoint_claim", "default_sde_loss", "sde_adjoint_convergence", "sde_fd_oracle",
           "sde_gradient_accuracy", "sde_reversible_exactness"]
