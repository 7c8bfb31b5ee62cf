"""Gradients through diffrax: its adjoints, jitted once per (field, method, mode, shapes).

Modes (:data:`MODES`) and the diffrax adjoint each selects:

- ``recursive_checkpoint``: ``RecursiveCheckpointAdjoint()`` (discrete: reverse mode through
  the solver's steps, with checkpointed recomputation, Stumm & Walther's treeverse);
- ``direct``: ``DirectAdjoint()`` (discrete: reverse mode through the unrolled loop);
- ``backsolve``: ``BacksolveAdjoint(stepsize_controller=PIDController(adjoint_rtol, adjoint_atol))``
  (continuous adjoint, state reconstructed backward);
- ``backsolve_seminorm``: the same with ``norm=diffrax.adjoint_rms_seminorm`` (Kidger, Chen,
  Lyons, ICML 2021);
- ``forward``: ``ForwardMode()`` with ``jax.jacfwd`` (discrete, forward mode).

The problem's float parameters are the ``args`` pytree (BacksolveAdjoint differentiates
``y0``, ``args`` and ``terms`` only). y0, the parameters, the output times, the loss weights
and the tolerances are traced arguments: perturbing any of them (finite differences,
sweeps) reuses the compiled function. Compilations are cached per (vector field, structure
parameters, method, mode, shapes, dtype, max_steps) in :data:`_CACHE` (a fresh
closure per call recompiles every time).

Three compiled functions per key: the gradient (timed), the primal loss alone (timed: the
forward time; ``backward_s`` is the gradient's time minus it) and, unless ``count_nfev=False``,
a counting twin of the gradient whose field reports each evaluation to the host
(``jax.debug.callback``, ordered) and, in the reverse modes, each pullback (a ``custom_vjp``
field). ``nfev_forward`` is the number of evaluations before the loss is formed (a host
marker ordered after the forward solve);
``nfev_backward`` the number of pullbacks (VJPs), with the primal evaluations made during the
backward phase (checkpoint recomputation, the primal inside each backsolve VJP) in
``details["backward_primal_evaluations"]``.

``adjoint_mismatch`` (backsolve modes): diffrax does not return the state its backward solve
reconstructs, so the compiled gradient's ``BacksolveAdjoint`` is a subclass whose backward
solves (the library's own, per interval between output times, unchanged) report where z
ends to the host (:func:`_watched_backsolve`); it is compared with the forward state there
as for the reference and torchdiffeq (``gradients._spec.reconstruction_mismatch``). In forward mode every evaluation carries one
JVP (batched over all tangents): ``nfev_backward`` is that count. ``memory`` holds XLA's
buffer plan of the compiled gradient (:func:`_planned_memory`).
"""
from __future__ import annotations

import time
from typing import Any

import numpy as np

from .. import _xp
from ..gradients._spec import GradientResult, Loss, mismatch_message, reconstruction_mismatch
from ..problems import Problem
from ..solution import Status
from . import _jax_cache
from .base import MethodInfo, UnsupportedOption, failed_gradient, gradient_params, gradient_times

MODES = ("recursive_checkpoint", "direct", "backsolve", "backsolve_seminorm", "forward")
DISCRETE_MODES = ("recursive_checkpoint", "direct", "forward")
BACKSOLVE_MODES = ("backsolve", "backsolve_seminorm")
RTOL, ATOL = 1e-6, 1e-9
_STATUS = {"successful": Status.SUCCESS, "max_steps_reached": Status.MAX_STEPS, "dt_min_reached": Status.DT_UNDERFLOW}

#: key -> {"grad": compiled, "primal": compiled, "count": compiled or None, "keep": rhs,
#: "reconstructed": list filled by the backsolve modes' backward solves or None}
_CACHE: dict[tuple, dict[str, Any]] = {}


def can_watch(diffrax: Any) -> bool:
    """Whether this diffrax's backsolve calls its solves through ``self._diffeqsolve`` (0.7),
    so that :func:`_watched_backsolve` sees them."""
    return isinstance(getattr(diffrax.BacksolveAdjoint, "_diffeqsolve", None), property)


def _key(problem: Problem, method: str, mode: str, fixed: bool, ts_len: int, rows: tuple, y_shape: tuple,
         dtype: str, max_steps: int, wrt: str, leaves: dict[str, np.ndarray]) -> tuple:
    structure = tuple((k, repr(v) if not isinstance(v, np.ndarray) else (v.shape, v.tobytes()))
                      for k, v in sorted(problem.params.items()) if k not in leaves)
    shapes = tuple((k, v.shape) for k, v in sorted(leaves.items()))
    return (id(problem.rhs), structure, shapes, method, mode, fixed, ts_len, rows, y_shape, dtype, max_steps, wrt)


def _watched_backsolve(diffrax: Any, jax: Any, reconstructed: list) -> Any:
    """``BacksolveAdjoint`` whose backward solves report where z ends: diffrax's backward pass
    (``_loop_backsolve_bwd``) calls ``self._diffeqsolve`` once per interval between output
    times, on the augmented state (z, a_z, a_args, a_terms), and keeps only the adjoint parts of
    the end state (z is reset to the forward value). The wrapper passes every call through
    unchanged and sends (t_end, z at t_end) to the host (ordered: under ``vmap`` one call per
    sample, in sample order), so the mismatch is that of diffrax's own backward solve."""

    def note(t: Any, z: Any) -> None:
        reconstructed.append((float(np.asarray(t)), np.array(z, dtype=np.float64)))

    class WatchedBacksolveAdjoint(diffrax.BacksolveAdjoint):
        @property
        def _diffeqsolve(self) -> Any:
            solve = super()._diffeqsolve

            def watched(**kwargs: Any) -> Any:
                sol = solve(**kwargs)
                jax.debug.callback(note, kwargs["t1"], sol.ys[0][-1], ordered=True)
                return sol

            return watched

    return WatchedBacksolveAdjoint


def _build(problem: Problem, method: str, mode: str, fixed: bool, rows: tuple, batched: bool, max_steps: int,
           wrt: str, leaves: dict[str, Any], jdt: Any, counter: list | None,
           reconstructed: list | None = None) -> tuple[Any, Any]:
    """(gradient function, primal loss function) of (y0, params, a) -> ..., to be jitted; with
    ``reconstructed`` (backsolve modes) the backward solves report where z ends."""
    import diffrax
    import jax
    import jax.numpy as jnp

    xp = _xp.get_namespace("jax")
    rhs = problem.rhs
    structure = {k: v for k, v in problem.converted_params(xp, jdt).items() if k not in leaves}

    def plain(t: Any, y: Any, p: Any) -> Any:
        return rhs(xp, t, y, {**structure, **p})

    def note(token: str) -> Any:
        def cb(*_: Any) -> None:
            counter.append(token)
        return cb

    vf = plain
    if counter is not None:

        if mode == "forward":
            def vf(t: Any, y: Any, p: Any) -> Any:
                jax.debug.callback(note("F"), ordered=True)
                return plain(t, y, p)
        else:
            @jax.custom_vjp
            def vf(t: Any, y: Any, p: Any) -> Any:
                jax.debug.callback(note("F"), ordered=True)
                return plain(t, y, p)

            def vf_fwd(t: Any, y: Any, p: Any) -> Any:
                jax.debug.callback(note("F"), ordered=True)
                out, pullback = jax.vjp(plain, t, y, p)
                return out, pullback

            def vf_bwd(pullback: Any, ct: Any) -> Any:
                jax.debug.callback(note("B"), ordered=True)
                return pullback(ct)

            vf.defvjp(vf_fwd, vf_bwd)

    solver = getattr(diffrax, method)()
    term = diffrax.ODETerm(vf)

    def solve_one(y0: Any, p: Any, a: dict[str, Any]) -> Any:
        if fixed:
            controller: Any = diffrax.ConstantStepSize()
            dt0 = a["dt0"]
        else:
            controller = diffrax.PIDController(rtol=a["rtol"], atol=a["atol"], pcoeff=0, icoeff=1)
            dt0 = None
        if mode == "recursive_checkpoint":
            adjoint: Any = diffrax.RecursiveCheckpointAdjoint()
        elif mode == "direct":
            adjoint = diffrax.DirectAdjoint()
        elif mode == "forward":
            adjoint = diffrax.ForwardMode()
        else:
            kw: dict[str, Any] = {}
            if not fixed:
                norm = {"norm": diffrax.adjoint_rms_seminorm} if mode == "backsolve_seminorm" else {}
                kw["stepsize_controller"] = diffrax.PIDController(rtol=a["adjoint_rtol"], atol=a["adjoint_atol"],
                                                                  pcoeff=0, icoeff=1, **norm)
            backsolve = (_watched_backsolve(diffrax, jax, reconstructed)
                         if reconstructed is not None and can_watch(diffrax) else diffrax.BacksolveAdjoint)
            adjoint = backsolve(**kw)
        sol = diffrax.diffeqsolve(term, solver, a["t0"], a["t1"], dt0, y0, args=p, saveat=diffrax.SaveAt(ts=a["ts"]),
                                  stepsize_controller=controller, adjoint=adjoint, max_steps=max_steps, throw=False)
        return sol.ys, sol.result._value, sol.stats["num_accepted_steps"], sol.stats["num_rejected_steps"]

    idx = jnp.asarray(np.asarray(rows, dtype=np.int64))

    def loss_fn(y0: Any, p: Any, a: dict[str, Any]) -> Any:
        if batched:
            ys, code, acc, rej = jax.vmap(lambda y: solve_one(y, p, a))(y0)
            every = jnp.moveaxis(ys, 0, 1)  # (T, B, n): the state at every forward output time
            ys = every[idx]
            w = a["w"][:, None, :]
        else:
            every, code, acc, rej = solve_one(y0, p, a)
            ys = every[idx]
            w = a["w"]
        # q: one float, or per component (shape (n,), broadcast over the last axis); both are 1/2 sum q y^2
        value = jnp.sum(w * ys) + 0.5 * jnp.sum(a["q"] * ys * ys)
        if counter is not None:  # "|": the forward solve is done (ordered after its evaluations)
            jax.debug.callback(note("|"), value, ordered=True)
        return value, (value, jnp.max(code), jnp.sum(acc), jnp.sum(rej), jax.lax.stop_gradient(every))

    argnums = {"all": (0, 1), "y0": (0,), "params": (1,)}[wrt]
    if mode == "forward":
        grad_fn = jax.jacfwd(loss_fn, argnums=argnums, has_aux=True)
    else:
        grad_fn = jax.grad(loss_fn, argnums=argnums, has_aux=True)
    return grad_fn, (lambda y0, p, a: loss_fn(y0, p, a)[1])


def _result_name(code: int) -> str:
    import diffrax

    for name in ("successful", "max_steps_reached", "dt_min_reached"):
        if int(getattr(diffrax.RESULTS, name)._value) == code:
            return name
    return f"result code {code}"


def gradient(problem: Problem, method: MethodInfo, mode: str, loss: Loss, y0: np.ndarray | None,
             options: dict[str, Any], dtype: str, device: str, spec_nfe: tuple[int, int]) -> GradientResult:
    """One gradient (module docstring); arguments were validated by Backend.gradient.
    ``spec_nfe``: (evaluations per step, at start-up), for nfev_forward when not counting."""
    import jax
    import jax.numpy as jnp

    _xp.get_namespace("jax")  # float64 on
    _jax_cache.enable()  # compiled gradients kept on disk across runs
    jdt = jnp.float64 if dtype == "float64" else jnp.float32
    wrt = options.get("wrt") or "all"
    max_steps = int(options.get("max_steps") or 100_000)
    t0, t1 = problem.t_span
    span = t1 - t0
    fixed = options.get("n_steps") is not None or options.get("dt") is not None
    if options.get("n_steps") is not None:
        n_steps = int(options["n_steps"])
    elif options.get("dt") is not None:
        ratio = abs(span) / float(options["dt"])
        n_steps = round(ratio)
        if n_steps == 0 or abs(ratio - n_steps) > 1e-12 * max(1.0, ratio):
            raise UnsupportedOption(f"diffrax gradients take a dt that divides the span (got dt={options['dt']!r}"
                                    f" for t_span={problem.t_span}); pass n_steps")
    y0n = np.asarray(problem.y0 if y0 is None else y0, dtype=np.float64)
    batched = y0n.ndim == 2
    leaves_np = gradient_params(problem) if wrt != "y0" else {}
    if wrt == "y0":
        leaves_np = {}
    ts, rows = gradient_times(problem, loss)
    rows_t = tuple(int(r) for r in rows)
    key = _key(problem, method.name, mode, fixed, len(ts), rows_t, y0n.shape, dtype, max_steps, wrt, leaves_np
               ) + (np.shape(loss.quadratic),)  # a program is traced for one shape of q
    count = options.get("count_nfev") is not False

    def arr(v: Any) -> Any:
        return jnp.asarray(np.asarray(v, dtype=np.float64), dtype=jdt)

    a: dict[str, Any] = {"ts": arr(ts), "t0": arr(t0), "t1": arr(t1), "w": arr(loss.weights), "q": arr(loss.quadratic)}
    if fixed:
        a["dt0"] = arr(span / n_steps)
    else:
        rtol = float(options.get("rtol") or RTOL)
        atol = float(options.get("atol") or ATOL)
        a.update(rtol=arr(rtol), atol=arr(atol), adjoint_rtol=arr(options.get("adjoint_rtol") or rtol),
                 adjoint_atol=arr(options.get("adjoint_atol") or atol))
    p = {k: arr(v) for k, v in leaves_np.items()}
    y_init = arr(y0n)

    entry = _CACHE.get(key)
    compile_s = 0.0
    if entry is None:
        start = time.perf_counter()
        reconstructed: list | None = [] if mode in BACKSOLVE_MODES else None
        grad_fn, primal_fn = _build(problem, method.name, mode, fixed, rows_t, batched, max_steps, wrt, leaves_np,
                                    jdt, None, reconstructed)
        with _jax_cache.cacheable_checks():
            entry = {"grad": jax.jit(grad_fn).lower(y_init, p, a).compile(),
                     "primal": jax.jit(primal_fn).lower(y_init, p, a).compile(), "count": None, "counter": None,
                     "keep": problem.rhs, "reconstructed": reconstructed}
        for fn in (entry["primal"], entry["grad"]):  # warm-up: a first call pays one-off costs
            jax.block_until_ready(fn(y_init, p, a))
        compile_s = time.perf_counter() - start
        _CACHE[key] = entry
    if count and entry["count"] is None:
        counter: list = []
        start = time.perf_counter()
        count_fn, _ = _build(problem, method.name, mode, fixed, rows_t, batched, max_steps, wrt, leaves_np, jdt,
                             counter)
        with _jax_cache.cacheable_checks():  # not stored (host callbacks), but traced alike
            entry["count"] = jax.jit(count_fn).lower(y_init, p, a).compile()
        entry["counter"] = counter
        compile_s += time.perf_counter() - start

    start = time.perf_counter()
    primal = jax.block_until_ready(entry["primal"](y_init, p, a))
    forward_s = time.perf_counter() - start
    if entry["reconstructed"] is not None:
        entry["reconstructed"].clear()
    start = time.perf_counter()
    grads, aux = jax.block_until_ready(entry["grad"](y_init, p, a))
    jax.effects_barrier()  # the backward solves' reports are on the host
    total_s = time.perf_counter() - start
    value, code, acc, rej, ys_all = (np.asarray(v) for v in aux)
    name = _result_name(int(code))
    status = _STATUS.get(name, Status.FAILED)
    steps = int(acc) + int(rej)
    if not status.ok:
        res = failed_gradient(problem, mode, method.name, "diffrax", "jax", y0, status, f"diffrax: {name}", wrt)
        res.timing = {"forward_s": forward_s, "backward_s": total_s - forward_s, "compile_s": compile_s}
        return res

    per_step, start_up = spec_nfe
    nfev_forward, nfev_backward, recompute = per_step * steps + start_up, -1, None
    if count:
        tokens = entry["counter"]
        tokens.clear()
        jax.block_until_ready(entry["count"](y_init, p, a))
        jax.effects_barrier()
        end = tokens.index("|") if "|" in tokens else len(tokens)
        nfev_forward = tokens[:end].count("F")
        if mode == "forward":
            nfev_backward = nfev_forward  # one (tangent-batched) JVP per evaluation
        else:
            nfev_backward = tokens.count("B")
            recompute = tokens[end:].count("F")
        tokens.clear()

    grads = list(grads)
    grad_y0 = None
    if wrt != "params":
        grad_y0 = np.asarray(grads.pop(0), dtype=np.float64)
    grad_params = {}
    if wrt != "y0":
        g = grads.pop(0)
        grad_params = {k: np.asarray(g[k], dtype=np.float64).reshape(leaves_np[k].shape) for k in leaves_np}
    mismatch, mismatch_note = _mismatch(entry["reconstructed"], ts, ys_all, mode)
    return GradientResult(
        mode=mode, method=method.name, backend="diffrax", library="jax", status=Status.SUCCESS,
        loss=float(value), grad_y0=grad_y0, grad_params=grad_params, adjoint_mismatch=mismatch,
        message=mismatch_message(mismatch),
        nfev_forward=int(nfev_forward), nfev_backward=int(nfev_backward), steps_forward=steps,
        timing={"forward_s": forward_s, "backward_s": max(total_s - forward_s, 0.0), "total_s": total_s,
                "compile_s": compile_s},
        memory=_planned_memory(entry["grad"]),
        options={k: v for k, v in options.items() if v is not None},
        details={"discrete": mode in DISCRETE_MODES, "backward_primal_evaluations": recompute,
                 "primal_loss": float(np.asarray(primal[0])), "nfev_counted": count,
                 **({"adjoint_mismatch": mismatch_note} if mismatch_note else {})},
    )


def _mismatch(reconstructed: list | None, ts: np.ndarray, ys_all: np.ndarray, mode: str
              ) -> tuple[float | None, str]:
    """(adjoint_mismatch, why it is missing) from the backward solves' reports (t_end, z): each
    is compared with the forward state at t_end (``gradients._spec.reconstruction_mismatch``,
    as the reference's backsolve). ``ys_all``: (T, n) or (T, B, n) at ``ts``; with a batch the
    reports come one per sample, in sample order (ordered callbacks), B per segment."""
    if mode not in BACKSOLVE_MODES:
        return None, ""
    if reconstructed is None or not reconstructed:
        return None, ("not measured: this diffrax's BacksolveAdjoint does not call its backward solves through"
                      " _diffeqsolve (written for diffrax 0.7)")
    batch = ys_all.shape[1] if ys_all.ndim == 3 else 1
    # diffrax solves a span with t1 < t0 in the reversed time -t, and its backward solves
    # report that time (a density solve of a CNF, t1 -> t0, reported -1.0 for t = 1.0)
    sign = -1.0 if ts.size > 1 and ts[-1] < ts[0] else 1.0
    pairs = []
    for i in range(0, len(reconstructed) - batch + 1, batch):  # one segment's reports: the whole batch
        t = sign * reconstructed[i][0]
        z = np.stack([z for _, z in reconstructed[i:i + batch]]).reshape(ys_all.shape[1:])
        pairs.append((z, ys_all[int(np.argmin(np.abs(ts - t)))]))
    return reconstruction_mismatch(pairs), ""


def _planned_memory(compiled: Any) -> dict[str, float]:
    """XLA's static buffer plan of the compiled gradient: ``xla_temp_bytes`` is its working
    memory (the tape, checkpoints, stages), ``xla_argument_bytes`` its inputs. Peak RSS of a
    process cannot show it: the first call also compiles (hundreds of MiB), and later calls
    reuse the allocator's buffers."""
    try:
        m = compiled.memory_analysis()
        return {"xla_temp_bytes": float(m.temp_size_in_bytes), "xla_argument_bytes": float(m.argument_size_in_bytes)}
    except Exception:  # noqa: BLE001 - not every platform reports it
        return {}


def reversible_reconstruction(problem: Problem, n_steps: int, *, y0: Any = None, method: str = "ReversibleHeun"
                              ) -> float:
    """Integrate ``n_steps`` fixed steps forward, then backward from the final *solver state*
    (diffrax's ``SaveAt(solver_state=True)`` and ``diffeqsolve(solver_state=...)``): an
    algebraically reversible method returns to y0 up to round-off. Returns
    ``max |y_rec - y0| / max(1, |y0|)``. Compiled once per (field, method, n_steps, shape)."""
    import diffrax
    import jax
    import jax.numpy as jnp

    _xp.get_namespace("jax")
    _jax_cache.enable()
    y0n = np.asarray(problem.y0 if y0 is None else y0, dtype=np.float64)
    t0, t1 = problem.t_span
    h = (t1 - t0) / int(n_steps)
    key = ("reconstruct", id(problem.rhs), tuple(sorted((k, repr(v)) for k, v in problem.params.items())), method,
           int(n_steps), y0n.shape, t0, t1)
    entry = _CACHE.get(key)
    if entry is None:
        xp = _xp.get_namespace("jax")
        f = problem.vector_field(xp, jnp.float64)
        term = diffrax.ODETerm(lambda t, y, args: f(t, y))
        solver = getattr(diffrax, method)()
        step = diffrax.ConstantStepSize()

        def run(y: Any) -> Any:
            fwd = diffrax.diffeqsolve(term, solver, t0, t1, h, y, saveat=diffrax.SaveAt(t1=True, solver_state=True),
                                      stepsize_controller=step, max_steps=int(n_steps) + 1)
            back = diffrax.diffeqsolve(term, solver, t1, t0, -h, fwd.ys[-1], solver_state=fwd.solver_state,
                                       saveat=diffrax.SaveAt(t1=True), stepsize_controller=step,
                                       max_steps=int(n_steps) + 1)
            return back.ys[-1]

        y_in = jnp.asarray(y0n)
        with _jax_cache.cacheable_checks():
            entry = {"run": jax.jit(run).lower(y_in).compile(), "keep": problem.rhs}
        _CACHE[key] = entry
    y_rec = np.asarray(entry["run"](jnp.asarray(y0n)), dtype=np.float64)
    return float(np.max(np.abs(y_rec - y0n)) / max(1.0, float(np.max(np.abs(y0n)))))


def clear_cache() -> None:
    """Drop every compiled gradient (tests; a long session)."""
    _CACHE.clear()


__all__ = ["MODES", "DISCRETE_MODES", "gradient", "reversible_reconstruction", "clear_cache"]
