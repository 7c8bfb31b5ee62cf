"""Irregularly sampled series (issue 12): losses at many per-sample observation times, dense
versus stepped-on outputs, gradients at hundreds of times, the ODE-RNN's jumping adjoint and a
latent ODE's log-likelihood gradient, each against an oracle that shares no code with what it
grades.

- :func:`union_times_cost`: a batch whose samples have their own times, solved torchdiffeq's
  way (one solve of the batch to the sorted union of all times, a shared step size, each sample
  reading its own times back) and sample by sample (each to its own last time: what a per-sample
  solver such as torchode, or ``batch="per-sample"`` with per-sample times, does). The oracle is
  the closed form ``expm(A t) y0`` (SciPy, not the solver). ``measured``: the union's work in
  sample-evaluations (``nfev x B``) over the per-sample work; the verdict grades both errors.
- :func:`dense_vs_stepped_output`: a sample's output at its observation times read off the
  dense output versus a step landing on each (``integrate.solve(tstops=...)``), over a tolerance
  sweep: errors against the closed form, evaluations, and the gradient of a loss at those times
  (PyTorch autograd through the loop) against the closed-form gradient (Van Loan's block
  exponential, :func:`~odeverify.properties.gradients.linear_closed_form`).
- :func:`irregular_gradient_accuracy`: every gradient mode of a backend on a loss at hundreds of
  irregular times against the same closed-form gradient
  (:func:`~odeverify.properties.gradients.gradient_accuracy`'s rule).
- :func:`odernn_adjoint_jumps`: the ODE-RNN (``problems/irregular.py``) by discrete AD through
  the loop and by the backsolve adjoint solved piecewise, jumping ``a- = (dh+/dh-)^T a+`` at
  each observation, against central differences of the same discrete computation (same steps).
- :func:`latent_ode_gradient`: a latent ODE's negative ELBO (Gaussian NLL at each series' own
  times + KL) by a backend's gradient mode (the ODE part through ``Backend.gradient``, the
  encoder and the reparametrisation by the chain rule) against directional central differences
  of the whole objective computed by a DOP853 solve at rtol 1e-12.
"""
from __future__ import annotations

import dataclasses
import functools
import inspect
import math
from typing import Any

import numpy as np

from .. import _xp
from ..gradients._spec import Loss
from ..integrate import solve
from ..problems.irregular import (LATENT_ENCODER, LATENT_FIELD, ODERNN_FIELD, ODERNN_JUMP, IrregularBatch,
                                  LatentSetup, check_series, encode, init_latent_ode, init_odernn,
                                  latent_gaussian_nll_constant, latent_loss_spec, latent_problem, odernn_field,
                                  odernn_jump, odernn_steps, read_own_times, spiral_dataset, union_times)
from ..records import Record
from ..solution import Status
from ._common import backend_for, backend_label
from .gradients import ACCURACY_FACTOR, EPS, _relative, gradient_accuracy, linear_closed_form

#: a solution error is graded in units of the mixed tolerance ``atol + rtol |y*|``; a global
#: error ``ACCURACY_FACTOR`` times that fails (as gradient_accuracy grades gradients)
OUTPUT_FACTOR = ACCURACY_FACTOR


def _scaled_error(ys: np.ndarray, exact: np.ndarray, rtol: float, atol: float) -> float:
    """max over times of ``|y - y*|_inf / (atol + rtol |y*|_inf)`` (inf for a non-finite y)."""
    ys = np.asarray(ys, dtype=np.float64)
    if not np.all(np.isfinite(ys)):
        return math.inf
    num = np.max(np.abs(ys - exact), axis=-1)
    den = atol + rtol * np.max(np.abs(exact), axis=-1)
    return float(np.max(num / den))


def _to_span(batch: IrregularBatch, t_end: float) -> Any:
    return dataclasses.replace(batch.problem, t_span=(batch.problem.t_span[0], float(t_end)))


# ============================================================================ union vs per-sample
def union_times_cost(batch: IrregularBatch, method: str, *, backend: str = "reference", rtol: float = 1e-6,
                     atol: float | None = None, reader: Any = read_own_times) -> Record:
    """The union-of-times batch solve against per-sample solves (module docstring).

    ``reader(ys, positions)`` reads each sample's outputs off the union solve (default
    :func:`~odeverify.problems.irregular.read_own_times`; a test plants one that reads the
    wrong sample's). Pass when both ways are within ``OUTPUT_FACTOR`` mixed tolerances of the
    closed form at every sample's every time."""
    atol = rtol * 1e-3 if atol is None else atol
    b = backend_for(backend)
    union, pos = union_times(batch.times)
    common = dict(property="union_times_cost", method=method, problem=batch.name, backend=b.name,
                  expected=None)
    sol = b.solve(_to_span(batch, union[-1]), method, y0=batch.y0s, t_eval=union, rtol=rtol, atol=atol)
    if not sol.success:
        return Record(measured=None, verdict="error", status=sol.status.code,
                      message=f"the union solve failed: {sol.message}", **common)
    own = reader(np.asarray(_xp.to_numpy(sol.ys), dtype=np.float64), pos)
    err_union = [_scaled_error(y, batch.exact(i), rtol, atol) for i, y in enumerate(own)]
    nfev_each, steps_each, err_each = [], [], []
    for i in range(batch.samples):
        s = b.solve(batch.sample_problem(i), method, t_eval=batch.times[i], rtol=rtol, atol=atol)
        if not s.success:
            return Record(measured=None, verdict="error", status=s.status.code,
                          message=f"the solve of sample {i} alone failed: {s.message}", **common)
        nfev_each.append(int(s.stats.nfev))
        steps_each.append(int(s.stats.accepted))
        err_each.append(_scaled_error(_xp.to_numpy(s.ys), batch.exact(i), rtol, atol))
    union_work = int(sol.stats.nfev) * batch.samples
    overhead = union_work / max(1, sum(nfev_each))
    stepped = _stepped_union_cost(batch, method, union, rtol, atol) if b.name == "reference" else None
    details = {"samples": batch.samples, "counts": batch.counts, "union_times": int(union.size), "rtol": rtol,
               "atol": atol, "union_nfev": int(sol.stats.nfev), "union_steps": int(sol.stats.accepted),
               "union_sample_evaluations": union_work, "per_sample_nfev": nfev_each,
               "per_sample_steps": steps_each, "union_error": err_union, "per_sample_error": err_each,
               "error_unit": "atol + rtol |y*| at each time", "bound": OUTPUT_FACTOR, "spec": batch.spec,
               "stepped": stepped}
    bad = [f"the union solve's sample {i} is off by {e:.3g} tolerances" for i, e in enumerate(err_union)
           if not e <= OUTPUT_FACTOR]
    bad += [f"sample {i} solved alone is off by {e:.3g} tolerances" for i, e in enumerate(err_each)
            if not e <= OUTPUT_FACTOR]
    msg = (f"union of {union.size} times: {overhead:.3g}x the per-sample evaluations ({union_work} vs"
           f" {sum(nfev_each)}), steps {int(sol.stats.accepted)} shared vs {steps_each} alone")
    if stepped:
        msg += (f"; with a step landing on every time: {stepped['overhead']:.3g}x"
                f" ({stepped['union_sample_evaluations']} vs {sum(stepped['per_sample_nfev'])})")
    if bad:
        msg = "; ".join(bad[:3]) + f" (bound {OUTPUT_FACTOR:g}; closed form expm(A t) y0); " + msg
    return Record(measured=overhead, verdict="fail" if bad else "pass", message=msg, details=details, **common)


# ============================================================================ dense vs stepped
def _has_tstops() -> bool:
    return "tstops" in inspect.signature(solve).parameters


def _stepped_union_cost(batch: IrregularBatch, method: str, union: np.ndarray, rtol: float,
                        atol: float) -> dict[str, Any] | None:
    """The same comparison with a step landing on every output time (the reference's ``tstops``):
    the union batch must step on every sample's times, a sample alone only on its own."""
    if not _has_tstops():
        return None
    xp = _xp.get_namespace("numpy")
    field = batch.problem.vector_field(xp, np.float64)
    t0 = batch.problem.t_span[0]
    sol = stepped_solve(field, batch.y0s, (t0, float(union[-1])), union, method=method, rtol=rtol, atol=atol)
    each = [stepped_solve(field, batch.y0s[i], (t0, float(t[-1])), t, method=method, rtol=rtol, atol=atol)
            for i, t in enumerate(batch.times)]
    work = int(sol.stats.nfev) * batch.samples
    return {"union_nfev": int(sol.stats.nfev), "union_steps": int(sol.stats.accepted),
            "union_sample_evaluations": work, "per_sample_nfev": [int(s.stats.nfev) for s in each],
            "per_sample_steps": [int(s.stats.accepted) for s in each],
            "overhead": work / max(1, sum(int(s.stats.nfev) for s in each)),
            "success": bool(sol.success and all(s.success for s in each))}


def stepped_solve(f: Any, y0: Any, t_span: tuple[float, float], times: np.ndarray, **options: Any) -> Any:
    """``solve`` with a step landing on every time of ``times`` (``tstops``), outputs there."""
    if not _has_tstops():
        raise NotImplementedError("odeverify.integrate.solve has no tstops= in this version")
    return solve(f, y0, t_span, t_eval=times, tstops=times, **options)


def _torch_loss_gradient(problem: Any, loss: Loss, method: Any, rtol: float, atol: float, stepped: bool
                         ) -> tuple[np.ndarray | None, int, np.ndarray | None]:
    """(outputs at the loss times, nfev, flat gradient [dL/dy0, dL/dA]) by PyTorch autograd
    through the loop (the reference's discrete gradient), dense or stepped; None on failure."""
    xp = _xp.get_namespace("torch")
    y0 = xp.asarray(np.asarray(problem.y0), dtype=xp.float64).requires_grad_(True)
    A = xp.asarray(np.asarray(problem.params["A"]), dtype=xp.float64).requires_grad_(True)

    def f(t: Any, y: Any) -> Any:
        return y @ xp.matrix_transpose(A)

    times = np.asarray(loss.t_eval)
    opts = dict(method=method, rtol=rtol, atol=atol, compiled=False)
    sol = stepped_solve(f, y0, problem.t_span, times, **opts) if stepped else solve(f, y0, problem.t_span,
                                                                                    t_eval=times, **opts)
    if not sol.success:
        return None, int(sol.stats.nfev), None
    L = loss.value(xp, sol.ys)
    L.backward()
    g = np.concatenate([_xp.to_numpy(y0.grad).ravel(), _xp.to_numpy(A.grad).ravel()])
    return _xp.to_numpy(sol.ys.detach()), int(sol.stats.nfev), g


#: the tolerances of dense_vs_stepped_output (loose to tight: the interpolant's lower order shows
#: at the loose end)
DENSE_RTOLS = (1e-3, 1e-5, 1e-7)


def dense_vs_stepped_output(batch: IrregularBatch, method: Any, *, sample: int = 0,
                            rtols: tuple[float, ...] = DENSE_RTOLS, seed: int = 0) -> Record:
    """Outputs at sample ``sample``'s observation times from the dense output versus a step
    landing on each (reference, NumPy and PyTorch), over ``rtols`` (module docstring).

    ``measured``: the largest ratio of the dense output's error to the stepped-on error over
    the sweep; pass when at every tolerance both errors are within ``OUTPUT_FACTOR`` mixed
    tolerances of the closed form and both gradients within ``ACCURACY_FACTOR (rtol + atol/|y|)``
    of the closed-form gradient (plus its own error)."""
    name = getattr(method, "name", method)
    problem = batch.sample_problem(sample)
    times = batch.times[sample]
    exact = batch.exact(sample)
    common = dict(property="dense_vs_stepped_output", method=name, problem=f"{batch.name}[{sample}]",
                  backend="reference", library="torch")
    if not _has_tstops():
        return Record(measured=None, expected=None, verdict="skip", message="integrate.solve has no tstops=",
                      **common)
    loss = Loss.seeded(times, problem.n, seed=seed, quadratic=0.5)
    oracle = linear_closed_form(problem, loss)
    g_ref = oracle.flat()
    oracle_rel = oracle.details["error_estimate"] / max(float(np.linalg.norm(g_ref)), 1e-300)
    y_scale = max(float(np.min(np.sqrt(np.mean(exact**2, axis=1)))), np.finfo(float).tiny)
    xp = _xp.get_namespace("numpy")
    field = problem.vector_field(xp, np.float64)
    sweep, bad, ratios = [], [], []
    for rtol in rtols:
        atol = rtol * 1e-3
        row: dict[str, Any] = {"rtol": rtol, "atol": atol}
        for kind in ("dense", "stepped"):
            y0 = np.asarray(problem.y0)
            sol = (stepped_solve(field, y0, problem.t_span, times, method=method, rtol=rtol, atol=atol)
                   if kind == "stepped" else solve(field, y0, problem.t_span, t_eval=times, method=method,
                                                   rtol=rtol, atol=atol))
            err = _scaled_error(sol.ys, exact, rtol, atol) if sol.success else math.inf
            _, nfev_g, g = _torch_loss_gradient(problem, loss, method, rtol, atol, kind == "stepped")
            gerr = _relative(g, g_ref) if g is not None else math.inf
            gbound = ACCURACY_FACTOR * (rtol + atol / y_scale) + oracle_rel
            row[kind] = {"error": err, "nfev": int(sol.stats.nfev), "steps": int(sol.stats.accepted),
                         "gradient_error": gerr, "gradient_bound": gbound}
            if not err <= OUTPUT_FACTOR:
                bad.append(f"{kind} output off by {err:.3g} tolerances at rtol {rtol:g}")
            if not gerr <= gbound:
                bad.append(f"{kind} gradient error {gerr:.3g} > {gbound:.3g} at rtol {rtol:g}")
        ratios.append(row["dense"]["error"] / max(row["stepped"]["error"], 1e-300))
        row["gradient_change"] = abs(row["dense"]["gradient_error"] - row["stepped"]["gradient_error"])
        sweep.append(row)
    measured = max(ratios) if ratios else None
    first = sweep[0]
    msg = (f"{len(times)} times; at rtol {first['rtol']:g} dense error {first['dense']['error']:.3g} vs stepped"
           f" {first['stepped']['error']:.3g} tolerances, nfev {first['dense']['nfev']} vs {first['stepped']['nfev']},"
           f" gradient error {first['dense']['gradient_error']:.3g} vs {first['stepped']['gradient_error']:.3g}")
    if bad:
        msg = "; ".join(bad[:3]) + "; " + msg
    return Record(measured=measured, expected=None, verdict="fail" if bad else "pass", message=msg,
                  details={"sweep": sweep, "times": int(len(times)), "bound": OUTPUT_FACTOR, "oracle": "closed_form",
                           "oracle_rel_error": oracle_rel, "state_scale": y_scale}, **common)


# ============================================================================ gradients at many times
def irregular_gradient_accuracy(batch: IrregularBatch, method: str, mode: str, *, backend: str = "reference-torch",
                                sample: int = 0, rtol: float = 1e-7, seed: int = 0, oracle: Any = None) -> Record:
    """dL/dy0 and dL/dA of a loss at sample ``sample``'s (hundreds of) irregular times by
    ``mode`` of ``backend`` against the closed-form gradient (Van Loan), by
    :func:`~odeverify.properties.gradients.gradient_accuracy`'s rule; relabelled."""
    problem = batch.sample_problem(sample)
    loss = Loss.seeded(batch.times[sample], problem.n, seed=seed, quadratic=0.5)
    oracle = oracle or linear_closed_form(problem, loss)
    rec = gradient_accuracy(problem, method, mode, backend=backend, loss=loss, rtol=rtol, oracle=oracle)
    rec.property = "irregular_gradient_accuracy"
    rec.details = {**rec.details, "times": len(loss.t_eval), "min_gap": float(np.min(np.diff(loss.t_eval))),
                   "spec": batch.spec}
    return rec


# ============================================================================ ODE-RNN
def odernn_forward(xp: Any, p: dict[str, Any], times: np.ndarray, values: Any, h0: Any, *, t0: float = 0.0,
                   dt: float = 0.05, method: Any = "rk4") -> tuple[Any, list[Any], list[Any]]:
    """The ODE-RNN's loss ``sum_k 1/2 |C h-(t_k) - x_k|^2`` and the states ``h-(t_k)``,
    ``h+(t_k)``: fixed steps (:func:`~odeverify.problems.irregular.odernn_steps`) of the one
    loop between observations, the jump at each."""
    def f(t: Any, h: Any) -> Any:
        return odernn_field(xp, h, p)

    h, loss, before, after = h0, 0.0, [], []
    edges = np.concatenate([[t0], times])
    for k, n in enumerate(odernn_steps(times, t0, dt)):
        h = solve(f, h, (float(edges[k]), float(edges[k + 1])), method=method, n_steps=n, compiled=False).ys[-1]
        before.append(h)
        r = h @ xp.matrix_transpose(p["C"]) - values[k]
        loss = loss + 0.5 * xp.sum(r * r)
        h = odernn_jump(xp, h, values[k], p)
        after.append(h)
    return loss, before, after


def _numpy_params(p: dict[str, Any]) -> dict[str, np.ndarray]:
    return {k: np.asarray(_xp.to_numpy(v), dtype=np.float64) for k, v in p.items()}


def odernn_gradient(params: dict[str, np.ndarray], times: np.ndarray, values: np.ndarray, h0: np.ndarray, *,
                    mode: str, dt: float = 0.05, method: str = "rk4", jump: bool = True,
                    t0: float = 0.0) -> tuple[float, dict[str, np.ndarray]]:
    """The ODE-RNN loss and dL/dθ on PyTorch: ``mode="discrete"`` (autograd through the loop) or
    ``"backsolve"`` (the continuous adjoint solved backward interval by interval with the same
    steps, reconstructing h from h-(t_k), and at each observation the jump ``a- = (dh+/dh-)^T a+
    + C^T r_k``; ``jump=False`` plants the fault of an adjoint that ignores the update)."""
    times, values = check_series(times, values, name="values")
    if mode not in ODERNN_MODES:
        raise ValueError(f"mode={mode!r}; expected one of {ODERNN_MODES}")
    xp = _xp.get_namespace("torch")
    tp = {k: xp.asarray(v, dtype=xp.float64) for k, v in params.items()}
    x = xp.asarray(values, dtype=xp.float64)
    h0t = xp.asarray(np.asarray(h0, dtype=np.float64), dtype=xp.float64)
    if mode == "discrete":
        for v in tp.values():
            v.requires_grad_(True)
        loss, _, _ = odernn_forward(xp, tp, times, x, h0t, t0=t0, dt=dt, method=method)
        loss.backward()
        return float(loss.detach()), {k: _xp.to_numpy(v.grad).copy() for k, v in tp.items()}
    loss, before, _ = odernn_forward(xp, tp, times, x, h0t, t0=t0, dt=dt, method=method)
    d = h0t.shape[0]
    g = {k: np.zeros(v.shape) for k, v in params.items()}
    fp = {k: tp[k] for k in ODERNN_FIELD}
    jp = {k: tp[k] for k in ODERNN_JUMP}
    sizes = [int(np.prod(params[k].shape)) for k in ODERNN_FIELD]
    steps = odernn_steps(times, t0, dt)
    edges = np.concatenate([[t0], times])
    a = xp.zeros((d,), dtype=xp.float64)

    def aug(t: Any, s: Any) -> Any:
        h, adj = s[:d], s[d:2 * d]
        fh, (vh, vq) = _xp.vjp(lambda hh, q: odernn_field(xp, hh, q), (h, fp), adj)
        return xp.concat([fh, -vh, -xp.concat([xp.reshape(vq[k], (-1,)) for k in ODERNN_FIELD])])

    for k in range(len(times) - 1, -1, -1):
        if jump:
            _, (a_h, gq) = _xp.vjp(lambda hh, q, xk=x[k]: odernn_jump(xp, hh, xk, q), (before[k], jp), a)
            for name in ODERNN_JUMP:
                g[name] += _xp.to_numpy(gq[name])
        else:
            a_h = a
        r = before[k] @ xp.matrix_transpose(tp["C"]) - x[k]
        a = a_h + r @ tp["C"]
        g["C"] += np.outer(_xp.to_numpy(r), _xp.to_numpy(before[k]))
        s0 = xp.concat([before[k], a, xp.zeros((sum(sizes),), dtype=xp.float64)])
        s1 = solve(aug, s0, (float(edges[k + 1]), float(edges[k])), method=method, n_steps=steps[k],
                   compiled=False).ys[-1]
        a = s1[d:2 * d]
        flat = _xp.to_numpy(s1[2 * d:])
        off = 0
        for name, size in zip(ODERNN_FIELD, sizes):
            g[name] += flat[off:off + size].reshape(params[name].shape)
            off += size
    return float(loss), g


#: the ODE-RNN gradient modes of the reference
ODERNN_MODES = ("discrete", "backsolve")


def odernn_loss_numpy(params: dict[str, np.ndarray], times: np.ndarray, values: np.ndarray, h0: np.ndarray, *,
                      dt: float, method: str = "rk4", t0: float = 0.0) -> float:
    xp = _xp.get_namespace("numpy")
    loss, _, _ = odernn_forward(xp, params, times, values, np.asarray(h0, dtype=np.float64), t0=t0, dt=dt,
                                method=method)
    return float(loss)


def _flat(g: dict[str, np.ndarray], names: Any) -> np.ndarray:
    return np.concatenate([np.asarray(g[k], dtype=np.float64).ravel() for k in names])


def central_differences(fun: Any, params: dict[str, np.ndarray], *, h: float = 1e-5) -> tuple[np.ndarray, float]:
    """dF/dθ by central differences with step ``h max(1, |θ_i|)`` over every entry of ``params``
    (in their order) and its error estimate ``|D(h) - D(2h)|`` (the truncation of D(2h) is 4x D(h)'s)."""
    names = list(params)
    x0 = _flat(params, names)

    def unflat(x: np.ndarray) -> dict[str, np.ndarray]:
        out, off = {}, 0
        for k in names:
            size = params[k].size
            out[k] = x[off:off + size].reshape(params[k].shape)
            off += size
        return out

    grads = []
    for step in (h, 2 * h):
        g = np.empty_like(x0)
        for i in range(x0.size):
            e = np.zeros_like(x0)
            e[i] = step * max(1.0, abs(x0[i]))
            g[i] = (fun(unflat(x0 + e)) - fun(unflat(x0 - e))) / (2 * e[i])
        grads.append(g)
    return grads[0], float(np.linalg.norm(grads[0] - grads[1]))


@functools.lru_cache(maxsize=8)
def _odernn_oracle(method: str, dt: float, hidden: int, series: int, seed: int) -> tuple[np.ndarray, float]:
    """Central differences of the NumPy ODE-RNN loss (cached: every mode of one case shares them)."""
    data = spiral_dataset()[series]
    params = init_odernn(hidden=hidden, obs=data.values.shape[1], seed=seed)
    h0 = np.full(hidden, 0.1)
    return central_differences(lambda q: odernn_loss_numpy(q, data.times, data.values, h0, dt=dt, method=method),
                               params)


def odernn_adjoint_jumps(mode: str, *, method: str = "rk4", dt: float = 0.05, hidden: int = 3, series: int = 1,
                         seed: int = 0, jump: bool = True) -> Record:
    """The ODE-RNN's gradient by ``mode`` (:data:`ODERNN_MODES`) against central differences of
    the same discrete computation (the same fixed steps, NumPy). ``discrete`` must agree to the
    differences' own error (plus ``1e3 eps``); ``backsolve`` differentiates the ODE, not the
    steps, so it is allowed ``4 (|g_bs(dt) - g_bs(dt/2)| + |g_disc(dt) - g_disc(dt/2)|)``, the
    truncation gap estimated by halving the step. ``jump=False`` plants the adjoint without the
    update's VJP (it must fail)."""
    data = spiral_dataset()[series]
    params = init_odernn(hidden=hidden, obs=data.values.shape[1], seed=seed)
    h0 = np.full(hidden, 0.1)
    names = list(params)
    common = dict(property="odernn_adjoint_jumps", method=f"{method}/{mode}" + ("" if jump else "/no-jump"),
                  problem=f"odernn_d{hidden}_K{data.times.size}_dt{dt:g}", backend="reference-torch",
                  library="torch")
    fd, fd_err = _odernn_oracle(method, dt, hidden, series, seed)
    L, g = odernn_gradient(params, data.times, data.values, h0, mode=mode, dt=dt, method=method, jump=jump)
    err = _relative(_flat(g, names), fd)
    scale = max(float(np.linalg.norm(fd)), 1e-300)
    bound = 4 * fd_err / scale + 1e3 * EPS
    details: dict[str, Any] = {"fd_error": fd_err / scale, "times": int(data.times.size), "dt": dt,
                               "steps": odernn_steps(data.times, 0.0, dt), "loss": L, "jump": jump,
                               "per_parameter_error": {k: _relative(g[k].ravel(), fd[i0:i0 + g[k].size])
                                                       for k, i0 in zip(names, np.cumsum([0] + [params[k].size
                                                                                                 for k in names]))}}
    if mode == "backsolve":
        _, g_half = odernn_gradient(params, data.times, data.values, h0, mode=mode, dt=dt / 2, method=method,
                                    jump=jump)
        _, d1 = odernn_gradient(params, data.times, data.values, h0, mode="discrete", dt=dt, method=method)
        _, d2 = odernn_gradient(params, data.times, data.values, h0, mode="discrete", dt=dt / 2, method=method)
        gap = (np.linalg.norm(_flat(g, names) - _flat(g_half, names)) + np.linalg.norm(_flat(d1, names)
                                                                                        - _flat(d2, names)))
        details["truncation_estimate"] = float(gap / scale)
        bound += 4 * float(gap / scale)
    ok = err <= bound
    msg = f"relative error {err:.3g} against central differences of the same steps (bound {bound:.3g})"
    if not ok:
        worst = max(details["per_parameter_error"], key=details["per_parameter_error"].get)
        msg += (f"; worst block {worst}" + ("; check the adjoint's jump a- = (dh+/dh-)^T a+ + C^T r at each"
                                             " observation" if mode == "backsolve" else ""))
    return Record(measured=err, expected=bound, verdict="pass" if ok else "fail", message=msg, details=details,
                  **common)


# ============================================================================ latent ODE
def _enc_params(params: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: params[k] for k in LATENT_ENCODER}


def latent_ode_value_and_grad(params: dict[str, np.ndarray], setup: LatentSetup, *, backend: str = "reference-torch",
                              method: str = "dopri5", mode: str = "discrete", rtol: float = 1e-8,
                              atol: float = 1e-10) -> tuple[float, dict[str, np.ndarray], dict[str, Any]]:
    """The negative ELBO ``sum_series [ -log N(x_k; D z(t_k) + e, s^2) + KL(q(z0|x) || N(0, I)) ]``
    and its gradient: per series, the ODE part by ``backend.gradient(mode)`` on
    :func:`~odeverify.problems.irregular.latent_problem` with the series' own times, the encoder
    by a PyTorch VJP, the decoder's ``D, e`` through ``u(0) = [z0, D z0 + e]``. Returns (value,
    gradients by parameter name, work: nfev and status per series); a failed solve raises
    RuntimeError naming the series and the status."""
    b = backend_for(backend)
    L = params["W1"].shape[1]
    xp = _xp.get_namespace("torch")
    enc_t = {k: xp.asarray(v, dtype=xp.float64) for k, v in _enc_params(params).items()}
    grads = {k: np.zeros_like(v, dtype=np.float64) for k, v in params.items()}
    value, work = 0.0, {"nfev_forward": 0, "nfev_backward": 0}
    for i, s in enumerate(setup.data):
        xs = xp.asarray(s.values, dtype=xp.float64)

        def enc(q: Any, xs: Any = xs, times: Any = s.times) -> Any:
            mu, lv = encode(xp, q, times, xs)
            return xp.concat([mu, lv])

        out = _xp.to_numpy(enc(enc_t))
        mu, lv = out[:L], out[L:]
        eps = setup.eps[i, :L]
        z0 = mu + np.exp(lv / 2) * eps
        prob = latent_problem(params, z0, s.times[-1], name=f"latent_ode[{i}]")
        w, q = latent_loss_spec(s, setup.sigma, L)
        res = b.gradient(prob, method, mode, Loss(t_eval=tuple(s.times), weights=w, quadratic=q), rtol=rtol,
                         atol=atol)
        if not res.success:
            raise RuntimeError(f"series {i}: {b.name} {mode} failed with status {res.status.value}: {res.message}")
        work["nfev_forward"] += res.nfev_forward
        work["nfev_backward"] += res.nfev_backward
        kl = 0.5 * float(np.sum(mu**2 + np.exp(lv) - lv - 1))
        value += float(res.loss) + latent_gaussian_nll_constant(s, setup.sigma) + kl
        gu = np.asarray(res.grad_y0, dtype=np.float64)
        gz, gx = gu[:L], gu[L:]
        for k in LATENT_FIELD:
            grads[k] += res.grad_params[k]
        grads["D"] += np.outer(gx, z0)
        grads["e"] += gx
        g_z0 = gz + params["D"].T @ gx
        g_mu = g_z0 + mu
        g_lv = g_z0 * eps * 0.5 * np.exp(lv / 2) + 0.5 * (np.exp(lv) - 1)
        _, (ge,) = _xp.vjp(enc, (enc_t,), xp.asarray(np.concatenate([g_mu, g_lv]), dtype=xp.float64))
        for k in LATENT_ENCODER:
            grads[k] += _xp.to_numpy(ge[k])
    return value, grads, work


def latent_ode_objective(params: dict[str, np.ndarray], setup: LatentSetup, *, rtol: float = 1e-12,
                         method: str = "dop853") -> float:
    """The negative ELBO by NumPy and one DOP853 solve per series at ``rtol`` (atol ``rtol *
    1e-2``): the oracle's function, sharing no gradient code with what it grades."""
    xp = _xp.get_namespace("numpy")
    L = params["W1"].shape[1]
    total = 0.0
    for i, s in enumerate(setup.data):
        mu, lv = encode(xp, params, s.times, s.values)
        z0 = mu + np.exp(lv / 2) * setup.eps[i, :L]
        prob = latent_problem(params, z0, s.times[-1])
        sol = solve(prob.vector_field(xp, np.float64), np.asarray(prob.y0), prob.t_span, t_eval=s.times,
                    method=method, rtol=rtol, atol=rtol * 1e-2)
        if not sol.success:
            return math.nan
        xhat = np.asarray(sol.ys)[:, L:]
        r = (xhat - s.values) / setup.sigma
        total += float(0.5 * np.sum(r * r) + 0.5 * s.values.size * math.log(2 * math.pi * setup.sigma**2))
        total += 0.5 * float(np.sum(mu**2 + np.exp(lv) - lv - 1))
    return total


def latent_directional_oracle(params: dict[str, np.ndarray], setup: LatentSetup, directions: np.ndarray, *,
                              h: float = 1e-4) -> tuple[np.ndarray, np.ndarray]:
    """Central differences of :func:`latent_ode_objective` along each unit row of ``directions``
    (over the flat parameters, in ``params``' order) with step ``h`` and, as the error estimate,
    their change from step ``2h``."""
    names = list(params)
    x0 = _flat(params, names)

    def at(x: np.ndarray) -> float:
        out, off = {}, 0
        for k in names:
            out[k] = x[off:off + params[k].size].reshape(params[k].shape)
            off += params[k].size
        return latent_ode_objective(out, setup)

    res = []
    for step in (h, 2 * h):
        res.append(np.array([(at(x0 + step * v) - at(x0 - step * v)) / (2 * step) for v in directions]))
    return res[0], np.abs(res[0] - res[1])


def default_latent_setup(n_series: int = 3) -> tuple[dict[str, np.ndarray], LatentSetup]:
    """The worked example's model and data: :func:`init_latent_ode` (seed 0) on the first
    ``n_series`` series of the shipped spiral data, sigma 0.1, eps from seed 0."""
    return init_latent_ode(), LatentSetup(data=spiral_dataset()[:n_series], sigma=0.1, seed=0)


def latent_ode_gradient(method: str, mode: str, *, backend: str = "reference-torch", rtol: float = 1e-8,
                        n_series: int = 2, directions: int = 3, seed: int = 0, oracle: Any = None) -> Record:
    """The latent ODE's negative-ELBO gradient by ``mode`` of ``backend`` (``method`` at
    ``rtol``) projected on ``directions`` seeded unit directions, against central differences of
    :func:`latent_ode_objective` (DOP853, rtol 1e-12). Pass within ``ACCURACY_FACTOR * rtol``
    plus the differences' error estimate, relative to the projected gradient's norm."""
    params, setup = default_latent_setup(n_series)
    names = list(params)
    label = backend_label(backend)
    common = dict(property="latent_ode_gradient", method=f"{method}/{mode}", problem=f"latent_ode_spiral{n_series}",
                  backend=label, library="jax" if ("jax" in label or label == "diffrax") else "torch")
    V = np.random.default_rng([seed, 3]).standard_normal((directions, sum(v.size for v in params.values())))
    V /= np.linalg.norm(V, axis=1, keepdims=True)
    fd, fd_err = oracle if oracle is not None else latent_directional_oracle(params, setup, V)
    try:
        value, g, work = latent_ode_value_and_grad(params, setup, backend=backend, method=method, mode=mode,
                                                   rtol=rtol, atol=rtol * 1e-2)
    except RuntimeError as exc:
        return Record(measured=None, expected=None, verdict="error", status=Status.FAILED.code, message=str(exc),
                      **common)
    proj = V @ _flat(g, names)
    err = _relative(proj, fd)
    scale = max(float(np.linalg.norm(fd)), 1e-300)
    bound = ACCURACY_FACTOR * rtol + float(np.linalg.norm(fd_err)) / scale
    ok = err <= bound
    return Record(measured=err, expected=bound, verdict="pass" if ok else "fail",
                  message=(f"directional derivatives off by {err:.3g} relative (bound {bound:.3g}: "
                           f"{ACCURACY_FACTOR:g} rtol + central differences' error)"),
                  details={"value": value, "projected": proj.tolist(), "oracle": fd.tolist(),
                           "oracle_error": fd_err.tolist(), "rtol": rtol, "series": n_series,
                           "times": [int(s.times.size) for s in setup.data], **work}, **common)


__all__ = ["union_times_cost", "dense_vs_stepped_output", "stepped_solve", "irregular_gradient_accuracy",
           "odernn_forward", "odernn_gradient", "odernn_loss_numpy", "central_differences", "odernn_adjoint_jumps",
           "ODERNN_MODES", "latent_ode_value_and_grad", "latent_ode_objective", "latent_directional_oracle",
           "default_latent_setup", "latent_ode_gradient", "DENSE_RTOLS", "OUTPUT_FACTOR"]
