"""SDE properties: strong and weak order with bootstrap confidence intervals, Itô-Stratonovich
consistency, reversibility on the same Brownian path, and the Brownian path's own properties.

Every order here is a least-squares slope of ``log error`` against ``log h`` over step counts
``n_steps``, with every step size run on *the same* Brownian paths (common random numbers), and
a 95% confidence interval from a paired bootstrap over paths (the paths are the independent
units; one resample draws paths with replacement and refits every step size on them, so the
correlation between step sizes is kept). The verdict reads the interval, never the point:

- ``pass``: the interval meets ``[claim - band, claim + band]`` and is narrow enough to refute a
  method half an order off (it excludes ``claim - 0.5`` and ``claim + 0.5``); or the whole
  interval lies above the claim (a strong or weak order is a bound on the error: a problem
  whose structure cancels the leading term, like stochastic Heun on an additive-noise problem
  whose solution depends on ``W(t)`` alone, beats it; the message says so);
- ``fail``: the whole interval lies below ``claim - band``;
- ``skip`` (inconclusive): the claim is in the interval but the interval is too wide; the
  message says about how many paths would settle it (the width shrinks like ``1/sqrt(paths)``).

``band`` is :data:`~odeverify.properties.convergence.ORDER_BAND` (0.15), the ODE order
property's allowance for higher-order terms at finite step sizes: the bootstrap interval
measures only the sampling error, and it shrinks with the number of paths, while a fit over
``h = 1/16 .. 1/256`` still carries the next error term (Milstein on GBM: 0.979, interval
[0.974, 0.986], with 400 paths). A method half an order off still fails: its interval lies
about 0.5 below the claim.

The bootstrap is seeded: a record is a deterministic function of its arguments.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..brownian import BrownianTree
from ..problems.sde import SDEProblem
from ..records import Record
from ._common import backend_for
from .convergence import ORDER_BAND, approaching

#: the half-width an interval must stay inside to refute a method half an order off
RESOLUTION = 0.5
CONFIDENCE = 0.95
BOOTSTRAP = 400
STRONG_STEPS = (16, 32, 64, 128, 256)
#: weak errors start pre-asymptotic later than strong ones: Heun's bias of E X on kp_wave
#: (Stratonovich) falls by only 0.0023 -> 0.0019 from 8 to 16 steps (fitted 0.70 over 8..128),
#: then at order 1 (0.96 over 32..512)
WEAK_STEPS = (16, 32, 64, 128, 256)
#: the coarsest step keeps h L below 1/STRONG_SCALE (strong) or 1/WEAK_SCALE (weak), L the
#: problem's rate at y0 (:func:`rate`): Euler's weak error on GBM with mu = sigma = 1 over
#: t = 2 fitted 0.48 from 8 steps (h L = 0.5), the pre-asymptotic curvature of exp((2 mu +
#: sigma^2) t) (found by odeverify explore)
STRONG_SCALE = 4.0
WEAK_SCALE = 8.0


def rate(problem: SDEProblem) -> float:
    """``||∂f/∂y||_2 + Σ_j ||∂g_j/∂y||_2^2`` at ``(t0, y0)`` by central differences: the rate at
    which the mean (drift) and the second moment (diffusion) of the solution change."""
    from .. import _xp

    xp = _xp.get_namespace("numpy")
    f, g = problem.drift_field(xp), problem.diffusion_field(xp)
    t = np.asarray(problem.t_span[0])
    y0 = np.asarray(problem.y0, dtype=np.float64)
    n = y0.size
    eps = 1e-6 * max(1.0, float(np.max(np.abs(y0))))

    def column(fun: Any, i: int) -> np.ndarray:
        e = np.zeros(n)
        e[i] = eps
        return (np.asarray(fun(t, y0 + e)) - np.asarray(fun(t, y0 - e))) / (2 * eps)

    jf = np.stack([column(f, i) for i in range(n)], axis=-1)  # (n, n)
    jg = np.stack([column(g, i) for i in range(n)], axis=-1)  # (n, n) diagonal noise, else (n, m, n)
    if problem.noise == "diagonal":
        diff = float(np.sum(np.abs(np.diag(jg)) ** 2)) if jg.ndim == 2 else 0.0
    else:
        diff = float(sum(np.linalg.norm(jg[:, j, :], 2) ** 2 for j in range(jg.shape[1])))
    out = float(np.linalg.norm(jf, 2)) + diff
    return out if math.isfinite(out) else 0.0


def step_ladder(problem: SDEProblem, base: Sequence[int], scale: float) -> list[int]:
    """``base`` (a doubling sequence of step counts), moved up by powers of two until the
    coarsest step has ``h * rate(problem) <= 1 / scale``."""
    span = problem.t_span[1] - problem.t_span[0]
    need = scale * span * rate(problem)
    shift = 0
    while base[0] * 2**shift < need and shift < 8:
        shift += 1
    return [int(n) * 2**shift for n in base]


class _PathValues:
    """W of a library's own path, known at some times (``Solution.brownian``), with the
    :class:`~odeverify.brownian.BrownianTree` query a closed form uses."""

    def __init__(self, ts: np.ndarray, w: np.ndarray, t_span: tuple[float, float]) -> None:
        self.ts = np.asarray(ts, dtype=np.float64)
        self.w = np.asarray(w, dtype=np.float64)
        self.t0, self.t1 = t_span
        self.shape = self.w.shape[1:]

    def values(self, ts: Sequence[float]) -> np.ndarray:
        out = []
        for t in np.asarray(ts, dtype=np.float64).reshape(-1):
            hit = np.flatnonzero(np.abs(self.ts - t) <= 1e-12 * max(1.0, abs(t)))
            if hit.size == 0:
                raise ValueError(f"the library's own Brownian path is known at {self.ts.tolist()}, not at t={t}")
            out.append(self.w[hit[0]])
        return np.stack(out)


def slope_interval(hs: np.ndarray, errors: np.ndarray, *, seed: int = 0, resamples: int = BOOTSTRAP,
                   confidence: float = CONFIDENCE) -> dict[str, Any]:
    """The least-squares slope of ``log mean_paths(errors)`` on ``log h`` and its paired
    bootstrap interval. ``errors``: shape ``(len(hs), paths)``, non-negative."""
    e = np.asarray(errors, dtype=np.float64)
    x = np.log(np.asarray(hs, dtype=np.float64))
    xc = x - x.mean()
    means = e.mean(axis=1)
    if not np.all(np.isfinite(means)) or np.any(means <= 0):
        return {"slope": None, "ci": [None, None], "mean_error": means.tolist()}
    slope = float(np.dot(xc, np.log(means) - np.log(means).mean()) / np.dot(xc, xc))
    paths = e.shape[1]
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, paths, size=(resamples, paths))
    boot = e[:, idx].mean(axis=2)  # (K, B)
    with np.errstate(divide="ignore"):
        lb = np.log(boot)
    slopes = (xc @ (lb - lb.mean(axis=0))) / np.dot(xc, xc)
    slopes = slopes[np.isfinite(slopes)]
    alpha = (1.0 - confidence) / 2.0
    lo, hi = (np.quantile(slopes, [alpha, 1.0 - alpha]).tolist() if slopes.size else [None, None])
    return {"slope": slope, "ci": [lo, hi], "mean_error": means.tolist(),
            "standard_error": (e.std(axis=1, ddof=1) / math.sqrt(paths)).tolist() if paths > 1 else None,
            "resamples": resamples, "confidence": confidence, "local_slopes": local_slopes(hs, means)}


def local_slopes(hs: Sequence[float], errors: Sequence[float]) -> list[float]:
    """The slope between consecutive step sizes: ``log(e_i / e_{i+1}) / log(h_i / h_{i+1})``."""
    h, e = np.asarray(hs, dtype=np.float64), np.asarray(errors, dtype=np.float64)
    return [float(math.log(e[i] / e[i + 1]) / math.log(h[i] / h[i + 1])) for i in range(len(e) - 1)]


def judge_interval(fit: dict[str, Any], claim: float, paths: int, what: str) -> tuple[str, str]:
    """(verdict, message) of a fitted interval against a claimed order (module docstring)."""
    lo, hi = fit["ci"]
    if fit.get("unresolved"):
        need = fit.get("paths_needed")
        return "skip", (f"inconclusive: {what}: fewer than 3 step sizes with a bias above {RESOLVED_Z:g} standard"
                        f" errors of the Monte-Carlo mean" + (f"; about {need} paths would resolve the finest" if need
                                                              else ""))
    if fit["slope"] is None or lo is None:
        return "fail", f"{what}: no finite positive errors to fit (a failed or exact solve)"
    shown = f"{what} {fit['slope']:.3f}, {int(CONFIDENCE * 100)}% CI [{lo:.3f}, {hi:.3f}], claim {claim:g}"
    if hi < claim - ORDER_BAND:
        local = fit.get("local_slopes") or []
        if len(local) >= 3 and approaching(local, claim) and local[-1] >= claim - ORDER_BAND:
            # the ODE order property's rule: slopes still moving towards the claim, and there at
            # the finest steps, are a pre-asymptotic approach, not a deficit
            return "skip", (f"inconclusive: {shown}: local slopes {[round(v, 2) for v in local]} still rise to the"
                            " claim (pre-asymptotic; finer steps would settle it)")
        return "fail", f"{shown}: the interval lies below the claim - {ORDER_BAND}"
    if lo > claim + ORDER_BAND:
        return "pass", f"{shown}: above the claim (the claim is a bound; this problem does not excite the leading term)"
    if lo > claim - RESOLUTION and hi < claim + RESOLUTION:
        return "pass", shown
    width = hi - lo
    # the interval must fit inside (claim - 0.5, claim + 0.5) around the claim: width <= 2 * margin
    margin = min(claim + RESOLUTION - fit["slope"], fit["slope"] - claim + RESOLUTION)
    need = int(math.ceil(paths * (width / max(2.0 * margin, 1e-3)) ** 2 * 1.2)) if margin > 0 else None
    more = f"; about {need} paths would settle it" if need else ""
    return "skip", f"inconclusive: {shown} is too wide to refute a method half an order off{more}"


def _combine(results: list[tuple[str, str]]) -> tuple[str, str]:
    verdicts = [v for v, _ in results]
    verdict = "fail" if "fail" in verdicts else ("skip" if "skip" in verdicts else "pass")
    return verdict, "; ".join(m for _, m in results if m)


def _start(prop: str, problem: SDEProblem, method: str, backend: str, dtype: str,
           kind: str) -> tuple[Any, dict[str, Any], float | None, Record | None]:
    """(backend, the record's common fields, the claimed order, a ``skip`` record when the
    method claims nothing for this noise class)."""
    b = backend_for(backend)
    common = dict(property=prop, method=method, problem=problem.name, backend=b.name, library="numpy", dtype=dtype)
    info = b.capabilities().sde_methods.get(method)
    if info is None:
        raise ValueError(f"{b.name} has no SDE method {method!r}; choices: {', '.join(b.capabilities().sde_methods)}")
    table = info.strong if kind == "strong" else info.weak
    if problem.noise_class not in table:
        return b, common, None, Record(measured=None, expected=None, verdict="skip", message=f"{method} is not valid"
                                       f" for {problem.noise_class} noise", **common)
    return b, common, float(table[problem.noise_class]), None


def _reference_paths(problem: SDEProblem, bm: BrownianTree, ts: np.ndarray, y0: np.ndarray, n_fine: int) -> np.ndarray:
    """The reference solution at ``ts`` on ``bm``: the closed form, else a fine solve of
    odeverify's reference (a strong order-1 method where the noise commutes, else stochastic
    Heun at 0.5: ``n_fine`` steps, 16 times the finest step count, so its error is a quarter of
    the finest graded error at order 0.5 and adds about 3% to it). Cached per (problem, path,
    times): every method of a conformance run is graded against the same reference."""
    # keyed by the problem object (held in the entry, so its id is not reused), never by its
    # name: a problem changed with dataclasses.replace keeps the name
    key = (id(problem), bm.seed, bm.shape, tuple(ts.tolist()), n_fine, y0.tobytes())
    if key in _REFERENCE_CACHE:
        return _REFERENCE_CACHE[key][1]
    out = _reference_uncached(problem, bm, ts, y0, n_fine)
    if len(_REFERENCE_CACHE) >= 16:
        _REFERENCE_CACHE.pop(next(iter(_REFERENCE_CACHE)))
    _REFERENCE_CACHE[key] = (problem, out)
    return out


_REFERENCE_CACHE: dict[Any, tuple[SDEProblem, np.ndarray]] = {}


def _reference_uncached(problem: SDEProblem, bm: BrownianTree, ts: np.ndarray, y0: np.ndarray,
                        n_fine: int) -> np.ndarray:
    if problem.exact is not None:
        return problem.exact(ts, y0, bm, problem.params)
    ref = backend_for("reference")
    if problem.noise_class == "general":
        meth = "heun" if problem.calculus == "stratonovich" else "euler"
    else:
        meth = "heun" if problem.calculus == "stratonovich" else "milstein_ito"
    sol = ref.solve_sde(problem, meth, bm=bm, y0=y0, n_steps=n_fine, t_eval=ts)
    if not sol.success:
        raise RuntimeError(f"the fine reference solve ({meth}, {n_fine} steps) failed: {sol.status.code}")
    return np.asarray(sol.ys, dtype=np.float64)


def _sweep(problem: SDEProblem, method: str, b: Any, n_steps: Sequence[int], paths: int, seed: int,
           dtype: str) -> dict[str, Any]:
    """Solve at every step count on the same paths; the per-path errors at T and over the
    coarse grid. Returns the sweep's data."""
    t0, t1 = problem.t_span
    coarse = min(n_steps)
    if any(n % coarse for n in n_steps):
        raise ValueError(f"n_steps={list(n_steps)}: every step count must be a multiple of the smallest")
    ts = t0 + (t1 - t0) * np.arange(coarse + 1) / coarse
    bm = BrownianTree(t0, t1, problem.brownian_shape(paths), seed=seed)
    y0 = problem.y0_batch(paths)
    n_fine = max(n_steps) * 16
    own_ref = None
    scale = 1.0
    err_t, err_max, statuses, work = [], [], [], []
    for n in n_steps:
        sol = b.solve_sde(problem, method, bm=bm, y0=y0, n_steps=int(n), t_eval=ts, dtype=dtype)
        statuses.append(sol.status.code)
        work.append({"n_steps": int(n), "nfev": sol.stats.nfev, "ngev": sol.stats.ngev})
        if not sol.success:
            err_t.append(np.full(paths, np.inf))
            err_max.append(np.full(paths, np.inf))
            continue
        if sol.brownian is not None:
            if problem.exact is None or problem.exact_accuracy:
                raise LookupError("the library drove its own Brownian path (known at the output times only), and the"
                                  " problem has no closed form in W(t) (none, or a path functional)")
            ref = problem.exact(ts, y0, _PathValues(ts, sol.brownian, problem.t_span), problem.params)
        else:
            if own_ref is None:
                own_ref = _reference_paths(problem, bm, ts, y0, n_fine)
            ref = own_ref
        scale = max(scale, float(np.max(np.abs(ref))))
        diff = np.linalg.norm(np.asarray(sol.ys, dtype=np.float64) - ref, axis=-1)  # (T, M)
        err_t.append(diff[-1])
        err_max.append(diff.max(axis=0))
    return {"ts": ts, "err_t": np.asarray(err_t), "err_max": np.asarray(err_max), "statuses": statuses, "scale": scale,
            "work": work, "reference": "exact" if problem.exact is not None else f"fine solve, {n_fine} steps"}


def sde_strong_order(problem: SDEProblem, method: str, *, backend: str = "reference", paths: int = 400,
                     n_steps: Sequence[int] | None = None, seed: int = 0, dtype: str = "float64") -> Record:
    """Strong order: ``E|X_h(T) - X(T)|`` and ``E max_k |X_h(t_k) - X(t_k)|`` (over the coarsest
    grid) on the same ``paths`` Brownian paths at every step count, against the closed form on
    the path (or a fine reference solve on it); slopes with paired bootstrap 95% intervals,
    judged as in the module docstring (both must pass). ``n_steps`` defaults to
    :data:`STRONG_STEPS` moved to the problem's time scale (:func:`step_ladder`)."""
    b, common, claim, invalid = _start("sde_strong_order", problem, method, backend, dtype, "strong")
    if invalid is not None:
        return invalid
    n_steps = step_ladder(problem, STRONG_STEPS, STRONG_SCALE) if n_steps is None else list(n_steps)
    try:
        sw = _sweep(problem, method, b, n_steps, paths, seed, dtype)
    except LookupError as exc:
        return Record(measured=None, expected=claim, verdict="skip", message=str(exc), **common)
    span = problem.t_span[1] - problem.t_span[0]
    hs = np.asarray([span / n for n in n_steps])
    details: dict[str, Any] = {"n_steps": list(n_steps), "h": hs.tolist(), "paths": paths, "seed": seed,
                               "statuses": sw["statuses"], "work": sw["work"], "reference": sw["reference"],
                               "noise_class": problem.noise_class}
    if any(s != "success" for s in sw["statuses"]):
        return Record(measured=None, expected=claim, verdict="fail", details=details,
                      message=f"a solve failed: statuses {sw['statuses']}", **common)
    floor = 64 * np.finfo(np.float64).eps * max(n_steps) * sw["scale"]
    if float(np.max(sw["err_max"])) <= floor:
        details["max_error"] = float(np.max(sw["err_max"]))
        return Record(measured=None, expected=claim, verdict="pass", details=details,
                      message=f"exact to round-off at every step count (max error {float(np.max(sw['err_max'])):.3g}):"
                              " no error to fit", **common)
    fit_t = slope_interval(hs, sw["err_t"], seed=seed)
    fit_max = slope_interval(hs, sw["err_max"], seed=seed + 1)
    details.update({"at_t1": fit_t, "max_over_grid": fit_max})
    verdict, msg = _combine([judge_interval(fit_t, claim, paths, "E|error(T)| slope"),
                             judge_interval(fit_max, claim, paths, "E max|error| slope")])
    return Record(measured=fit_t["slope"], expected=claim, verdict=verdict, message=msg, details=details, **common)


def sde_weak_order(problem: SDEProblem, method: str, *, backend: str = "reference", paths: int = 4000,
                   n_steps: Sequence[int] | None = None, seed: int = 0, dtype: str = "float64") -> Record:
    """Weak order: ``|E φ(X_h(T)) - E φ(X(T))|`` for ``φ(x) = x`` and ``x²`` (summed over
    components), with antithetic path pairs (``W`` and ``-W``) and common random numbers. Where
    the closed form on the path is known the estimator is the mean of ``φ(X_h) - φ(X)`` on each
    path (the exact solution as a control variate, whose mean is exactly ``E φ(X)``: an unbiased
    estimator with the variance of the *strong* error); otherwise the exact moments
    (``problem.moments``). Slopes and intervals as for the strong order (bootstrap over
    antithetic pairs)."""
    b, common, claim, invalid = _start("sde_weak_order", problem, method, backend, dtype, "weak")
    if invalid is not None:
        return invalid
    n_steps = step_ladder(problem, WEAK_STEPS, WEAK_SCALE) if n_steps is None else list(n_steps)
    if (problem.exact is None or problem.exact_accuracy) and problem.moments is None:
        return Record(measured=None, expected=claim, verdict="skip", message="no closed form and no exact moments",
                      **common)
    half = max(paths // 2, 1)
    t0, t1 = problem.t_span
    bm = _Antithetic(BrownianTree(t0, t1, problem.brownian_shape(half), seed=seed))
    y0 = problem.y0_batch(2 * half)
    ts = np.asarray([t0, t1])
    exact_t = None
    # the control variate needs a cheap closed form in W(t); a path functional (OU's integral on
    # a fine grid, for thousands of paths) costs more than it saves: exact moments instead
    pathwise = problem.exact is not None and problem.exact_accuracy == 0.0
    if pathwise:
        exact_t = problem.exact(ts, y0, bm, problem.params)[-1]
    span = t1 - t0
    hs = np.asarray([span / n for n in n_steps])
    rows, statuses = [], []
    for n in n_steps:
        sol = b.solve_sde(problem, method, bm=bm, y0=y0, n_steps=int(n), dtype=dtype)
        statuses.append(sol.status.code)
        if not sol.success:
            rows.append(np.full(half, np.inf))
            continue
        x = np.asarray(sol.ys, dtype=np.float64)[-1]  # (2 half, n)
        if sol.brownian is not None and pathwise:
            ref = problem.exact(ts, y0, _PathValues(ts, sol.brownian, problem.t_span), problem.params)[-1]
        else:
            ref = exact_t
        if ref is not None:
            d1, d2 = x - ref, x * x - ref * ref
        else:
            mom = problem.moments(t1 - t0, np.asarray(problem.y0), problem.params)
            d1, d2 = x - mom["mean"], x * x - mom["second"]
        # per antithetic pair: the mean of the pair's differences; the bias is the mean over pairs
        pair = lambda d: 0.5 * (d[:half] + d[half:])  # noqa: E731
        rows.append(np.stack([pair(d1), pair(d2)]))  # (2, half, n)
    common_details = {"n_steps": list(n_steps), "h": hs.tolist(), "paths": 2 * half, "seed": seed,
                      "statuses": statuses, "estimator": "control variate" if pathwise else "exact moments",
                      "noise_class": problem.noise_class}
    if any(s != "success" for s in statuses):
        return Record(measured=None, expected=claim, verdict="fail", details=common_details,
                      message=f"a solve failed: statuses {statuses}", **common)
    data = np.stack(rows)  # (K, 2, half, n)
    fits, judged = {}, []
    rng_seed = seed
    for k, name in enumerate(("mean", "second_moment")):
        per_pair = data[:, k]  # (K, half, n)
        fit = _bias_interval(hs, per_pair, seed=rng_seed + k)
        fits[name] = fit
        judged.append(judge_interval(fit, claim, 2 * half, f"weak slope of E {name}"))
    verdict, msg = _combine(judged)
    common_details.update(fits)
    return Record(measured=fits["second_moment"]["slope"], expected=claim, verdict=verdict, message=msg,
                  details=common_details, **common)


def _bias_interval(hs: np.ndarray, per_pair: np.ndarray, *, seed: int) -> dict[str, Any]:
    """Slope and bootstrap interval of ``log Σ_components |mean over pairs|`` on ``log h``, over
    the step sizes whose bias is resolved: more than :data:`RESOLVED_Z` standard errors from
    zero (a bias inside the Monte-Carlo noise has no slope to fit; with fewer than three
    resolved step sizes the fit is ``unresolved``, and the record says how many paths would
    resolve the finest step)."""
    pairs = per_pair.shape[1]
    bias = np.abs(per_pair.mean(axis=1)).sum(axis=-1)  # (K,)
    se = (per_pair.std(axis=1, ddof=1) / math.sqrt(pairs)).sum(axis=-1)
    out: dict[str, Any] = {"bias": bias.tolist(), "standard_error": se.tolist(), "resamples": BOOTSTRAP,
                           "confidence": CONFIDENCE}
    with np.errstate(divide="ignore", invalid="ignore"):
        resolved = np.isfinite(bias) & (bias > RESOLVED_Z * se)
    out["resolved"] = resolved.tolist()
    if int(resolved.sum()) < 3:
        finest = bias[-1]
        need = int(math.ceil(pairs * 2 * (RESOLVED_Z * se[-1] / finest) ** 2)) if finest > 0 else None
        out.update({"slope": None, "ci": [None, None], "unresolved": True, "paths_needed": need})
        return out
    x = np.log(hs[resolved])
    xc = x - x.mean()
    sub = per_pair[resolved]
    b = bias[resolved]
    slope = float(np.dot(xc, np.log(b) - np.log(b).mean()) / np.dot(xc, xc))
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, pairs, size=(BOOTSTRAP, pairs))
    boot = np.abs(sub[:, idx].mean(axis=2)).sum(axis=-1)  # (K', B)
    with np.errstate(divide="ignore"):
        lb = np.log(boot)
    slopes = (xc @ (lb - lb.mean(axis=0))) / np.dot(xc, xc)
    slopes = slopes[np.isfinite(slopes)]
    alpha = (1.0 - CONFIDENCE) / 2.0
    lo, hi = np.quantile(slopes, [alpha, 1.0 - alpha]).tolist() if slopes.size else [None, None]
    out.update({"slope": slope, "ci": [lo, hi], "local_slopes": local_slopes(hs[resolved], b)})
    return out


#: a weak error counts as measured when it lies this many standard errors from zero
RESOLVED_Z = 3.0


class _Antithetic:
    """``[W; -W]``: the paths of a tree followed by their mirror images (shape ``(2M, m)``)."""

    def __init__(self, tree: BrownianTree) -> None:
        self.tree = tree
        self.t0, self.t1 = tree.t0, tree.t1
        self.shape = (2 * tree.shape[0], tree.shape[1])

    def values(self, ts: Sequence[float]) -> np.ndarray:
        w = self.tree.values(ts)
        return np.concatenate([w, -w], axis=1)

    def prefetch(self, ts: Sequence[float]) -> None:
        self.tree.prefetch(ts)

    def increment(self, s: float, t: float, like: Any = None) -> Any:
        d = self.tree.increment(s, t)
        out = np.concatenate([d, -d], axis=0)
        if like is None:
            return out
        from .. import _xp

        xp = _xp.namespace(like)
        return xp.asarray(out, dtype=like.dtype, device=_xp.device(like))

    def spec(self) -> dict[str, Any]:
        return {**self.tree.spec(), "antithetic": True}


def ito_stratonovich_consistency(problem: SDEProblem, strat_method: str = "heun", ito_method: str = "milstein_ito", *,
                                 backend: str = "reference", paths: int = 400,
                                 n_steps: Sequence[int] | None = None, seed: int = 0) -> Record:
    """A Stratonovich method on the Stratonovich form and an Itô method on the Itô form (the
    drift converted by ``problem.correction``) converge to the same solution on the same path:
    the mean pathwise difference at ``T`` must vanish at the smaller of the two strong orders
    (judged like the strong order). A wrong correction leaves a difference that does not
    vanish (slope ~ 0)."""
    b = backend_for(backend)
    name = f"{strat_method}|{ito_method}"
    common = dict(property="ito_stratonovich_consistency", method=name, problem=problem.name, backend=b.name)
    if problem.correction is None:
        return Record(measured=None, expected=None, verdict="skip", message="no analytic Itô-Stratonovich correction",
                      **common)
    strat, ito = problem.as_calculus("stratonovich"), problem.as_calculus("ito")
    caps = b.capabilities().sde_methods
    try:
        claim = min(caps[strat_method].strong[problem.noise_class], caps[ito_method].strong[problem.noise_class])
    except KeyError:
        return Record(measured=None, expected=None, verdict="skip", message=f"{name} not valid for"
                      f" {problem.noise_class} noise", **common)
    n_steps = step_ladder(problem, STRONG_STEPS, STRONG_SCALE) if n_steps is None else list(n_steps)
    t0, t1 = problem.t_span
    bm = BrownianTree(t0, t1, problem.brownian_shape(paths), seed=seed)
    y0 = problem.y0_batch(paths)
    span = t1 - t0
    hs = np.asarray([span / n for n in n_steps])
    diffs, statuses = [], []
    for n in n_steps:
        a = b.solve_sde(strat, strat_method, bm=bm, y0=y0, n_steps=int(n))
        c = b.solve_sde(ito, ito_method, bm=bm, y0=y0, n_steps=int(n))
        statuses.append([a.status.code, c.status.code])
        if not (a.success and c.success):
            diffs.append(np.full(paths, np.inf))
            continue
        diffs.append(np.linalg.norm(np.asarray(a.ys)[-1] - np.asarray(c.ys)[-1], axis=-1))
    details = {"n_steps": list(n_steps), "h": hs.tolist(), "paths": paths, "seed": seed, "statuses": statuses}
    if any(s != "success" for pair in statuses for s in pair):
        return Record(measured=None, expected=claim, verdict="fail", details=details,
                      message=f"a solve failed: {statuses}", **common)
    diffs_a = np.asarray(diffs)
    scale = max(1.0, float(np.max(np.abs(np.asarray(problem.y0)))))
    if float(np.max(diffs_a)) <= 64 * np.finfo(np.float64).eps * scale * max(n_steps):
        details["max_difference"] = float(np.max(diffs_a))
        return Record(measured=None, expected=claim, verdict="pass", details=details,
                      message=f"identical to round-off (max difference {float(np.max(diffs_a)):.3g}): the correction"
                              " vanishes and the two methods take the same steps", **common)
    fit = slope_interval(hs, diffs_a, seed=seed)
    details["fit"] = fit
    verdict, msg = judge_interval(fit, claim, paths, "slope of E|X_strat - X_ito|")
    return Record(measured=fit["slope"], expected=claim, verdict=verdict, message=msg, details=details, **common)


def sde_reversibility(problem: SDEProblem, method: str = "reversible_heun", *, paths: int = 64, n_steps: int = 256,
                      seed: int = 0) -> Record:
    """Reversible Heun reconstructs its forward states from the final one by its inverse step
    on the same Brownian increments: the largest ``|y_rec(t_k) - y(t_k)| / max(1, |y|)`` over
    the steps must be round-off (below ``sqrt(eps)``, the threshold of the ODE property)."""
    from .. import _xp
    from ..solvers.base import TimeContext
    from ..solvers.sde import SDE_METHODS
    from .gradients import RECONSTRUCTION_THRESHOLD

    common = dict(property="sde_reversibility", method=method, problem=problem.name, backend="reference")
    info = SDE_METHODS.get(method)
    if not info.reversible:
        return Record(measured=None, expected=None, verdict="skip", message=f"{method} claims no inverse", **common)
    prob = problem.as_calculus(info.calculus) if problem.calculus != info.calculus else problem
    t0, t1 = problem.t_span
    grid = t0 + (t1 - t0) * np.arange(n_steps + 1) / n_steps
    bm = BrownianTree(t0, t1, problem.brownian_shape(paths), seed=seed)
    xp = _xp.get_namespace("numpy")
    f, g = prob.drift_field(xp), prob.diffusion_field(xp)
    stepper = info.bind(g, bm, noise=problem.noise, noise_dim=problem.noise_dim, commutative=problem.commutative,
                        grid=grid)
    tc = TimeContext(xp=xp, dtype=xp.float64, device=None, per_sample=False, t=t0)
    y0 = problem.y0_batch(paths)
    state = (y0, y0, f(tc.time(t0), y0), stepper.diffusion(tc, t0, y0))
    forward = [state]
    with np.errstate(all="ignore"):
        for k in range(n_steps):
            state = stepper.advance(f, tc, grid[k], grid[k + 1], state, bm.increment(grid[k], grid[k + 1]))
            forward.append(state)
        worst = 0.0
        back = state
        for k in range(n_steps - 1, -1, -1):
            back = stepper.inverse(f, tc, grid[k], grid[k + 1], back, bm.increment(grid[k], grid[k + 1]))
            ref = forward[k][0]
            worst = max(worst, float(np.max(np.abs(back[0] - ref) / np.maximum(1.0, np.abs(ref)))))
    ok = math.isfinite(worst) and worst <= RECONSTRUCTION_THRESHOLD
    return Record(measured=worst, expected=RECONSTRUCTION_THRESHOLD, verdict="pass" if ok else "fail",
                  details={"n_steps": n_steps, "paths": paths, "seed": seed},
                  message="" if ok else f"the inverse steps drifted by {worst:.3g} from the forward states", **common)


#: the pathwise agreement of a library method with odeverify's method of the same step rule, on
#: the same Brownian increments: round-off only, a few ulps per step (as ODE agreement), times
#: the state's scale; a different rule differs by the strong error (~1e-2 at 64 steps)
SDE_AGREEMENT_ULPS = 64.0
SDE_AGREEMENT_STEPS = 64


def sde_pathwise_agreement(problem: Any, method: str, *, backend: str, reference: str, paths: int = 32,
                           n_steps: int = SDE_AGREEMENT_STEPS, seed: int = 0) -> Record:
    """A library's SDE method against odeverify's reference method of the same step rule, on
    the same Brownian path: equal to round-off (at most :data:`SDE_AGREEMENT_ULPS` ulps per
    step of the state's scale). Milstein pairs (the library takes ``L^j g_k`` by automatic
    differentiation, the reference by central differences, exact for a diffusion at most
    quadratic in y) differ by O(h) elsewhere, the order of the error itself: there the
    difference must stay below the reference's own mean error against the closed form (or
    the fine solve), which a wrong correction term (off by O(sqrt h)) does not."""
    b = backend_for(backend)
    ref = backend_for("reference")
    common = dict(property="sde_pathwise_agreement", method=method, problem=problem.name, backend=b.name)
    ref_info = ref.capabilities().sde_methods[reference]
    if not ref_info.valid_for(problem.noise_class):
        return Record(measured=None, expected=None, verdict="skip", message=f"the reference's {reference} is not"
                      f" valid for {problem.noise_class} noise: nothing to compare with", **common)
    bm = BrownianTree(*problem.t_span, problem.brownian_shape(paths), seed=seed)
    y0 = problem.y0_batch(paths)
    sol = b.solve_sde(problem, method, bm=bm, y0=y0, n_steps=n_steps)
    if sol.brownian is not None:
        return Record(measured=None, expected=None, verdict="skip", message=f"{method} drives the library's own"
                      " Brownian path: no pathwise comparison", **common)
    base = ref.solve_sde(problem, reference, bm=bm, y0=y0, n_steps=n_steps)
    if not (sol.success and base.success):
        if sol.status == base.status:
            return Record(measured=None, expected=None, verdict="skip", message=f"both solves end with status"
                          f" {sol.status.code}: nothing to compare pathwise", **common)
        return Record(measured=None, expected=None, verdict="fail", message=f"statuses {sol.status.code} (library),"
                      f" {base.status.code} (reference)", **common)
    a, c = np.asarray(sol.ys, dtype=np.float64), np.asarray(base.ys, dtype=np.float64)
    scale = max(1.0, float(np.max(np.abs(c))))
    ulps = float(np.max(np.abs(a - c)) / (scale * np.finfo(np.float64).eps) / n_steps)
    ok = ulps <= SDE_AGREEMENT_ULPS
    if not ok and reference.startswith("milstein"):
        ts = np.asarray(problem.t_span)
        exact = _reference_paths(problem, bm, ts, y0, n_steps * 16)
        own = float(np.mean(np.linalg.norm(c[-1] - exact[-1], axis=-1)))
        gap = float(np.mean(np.linalg.norm(a[-1] - c[-1], axis=-1)))
        ok = gap <= own
        return Record(measured=gap, expected=own, verdict="pass" if ok else "fail",
                      details={"reference_method": reference, "n_steps": n_steps, "paths": paths, "seed": seed,
                               "ulps_per_step": ulps, "reference_error": own},
                      message=(f"derivatives differ (automatic against central differences): mean gap {gap:.3g}"
                               f" {'within' if ok else 'above'} the reference's own mean error {own:.3g}"),
                      **common)
    return Record(measured=ulps, expected=SDE_AGREEMENT_ULPS, verdict="pass" if ok else "fail",
                  details={"reference_method": reference, "n_steps": n_steps, "paths": paths, "seed": seed,
                           "max_abs_difference": float(np.max(np.abs(a - c)))},
                  message="" if ok else (f"{method} differs from the reference {reference} by {ulps:.3g} ulps per"
                                         f" step on the same Brownian path (max |difference| "
                                         f"{float(np.max(np.abs(a - c))):.3g})"), **common)


def brownian_consistency(*, paths: int = 256, levels: int = 8, seed: int = 0) -> Record:
    """odeverify's Brownian tree: increments over a fine dyadic grid sum to the coarse increment
    (to round-off, queried in a shuffled order in a fresh tree), and the standardized
    increments have mean 0 and variance 1 (z-tests at 99.9%: a record fails by chance with
    probability below 0.2%, and with the fixed seed it is deterministic)."""
    t0, t1 = 0.0, 1.0
    fine = t0 + (t1 - t0) * np.arange((1 << levels) + 1) / float(1 << levels)
    tree = BrownianTree(t0, t1, (paths, 1), seed=seed)
    shuffled = np.random.default_rng(seed).permutation(fine)
    fresh = BrownianTree(t0, t1, (paths, 1), seed=seed)
    fresh.values(shuffled)
    w = tree.values(fine)
    w2 = fresh.values(fine)
    telescoping = float(np.max(np.abs(np.diff(w, axis=0).sum(axis=0) - (w[-1] - w[0]))))
    order_free = float(np.max(np.abs(w - w2)))
    z = (np.diff(w, axis=0) / math.sqrt(fine[1] - fine[0])).reshape(-1)
    count = z.size
    mean_z = float(z.mean() * math.sqrt(count))
    var_z = float((z.var(ddof=1) - 1.0) / math.sqrt(2.0 / (count - 1)))
    crit = 3.29  # two-sided 99.9%
    ok = telescoping <= 64 * np.finfo(float).eps * (1 << levels) and order_free == 0.0 and abs(mean_z) < crit \
        and abs(var_z) < crit
    return Record(property="brownian_consistency", method="brownian_tree", problem="-", backend="reference",
                  measured=telescoping, expected=0.0, verdict="pass" if ok else "fail",
                  details={"telescoping": telescoping, "query_order_difference": order_free, "mean_z": mean_z,
                           "variance_z": var_z, "increments": count, "critical_z": crit},
                  message="" if ok else (f"telescoping {telescoping:.3g}, query-order difference {order_free:.3g},"
                                         f" z(mean) {mean_z:.2f}, z(variance) {var_z:.2f}"))


__all__ = ["brownian_consistency", "ito_stratonovich_consistency", "judge_interval", "rate", "sde_pathwise_agreement",
           "sde_reversibility",
           "sde_strong_order", "sde_weak_order", "slope_interval", "step_ladder"]
