"""diffrax (JAX) as a backend: jitted solves, compiled once per problem, method and shape.

Facts this adapter relies on (diffrax 0.7.2, read from its source and measured here):

- Adaptive mode uses ``PIDController(rtol, atol, pcoeff=0, icoeff=1)`` (an I controller:
  ``factor = safety * err**(-1/p)``, ``p`` the method's order, clipped to
  ``[factormin, factormax]``), the same controller as odeverify's reference. ``dtmin`` is
  passed with ``force_dtmin=False`` so that a step below it ends the solve with
  ``dt_min_reached`` (our ``DT_UNDERFLOW``) instead of being forced through.
- Fixed mode uses ``ConstantStepSize()``: diffrax 0.7.2 places step ``k`` of ``N`` at
  ``t0 + (t1 - t0) * (k / N)`` with ``N = ceil((t1 - t0) / nextafter(dt0))`` and lands on
  ``t1`` exactly. With ``n_steps`` (or a ``dt`` that divides the span) that is the
  reference grid up to one ulp in t; a ``dt`` that does not divide the span would be
  spread over ``N`` equal steps, so that case uses ``StepTo`` with the reference grid
  (equal steps of ``dt``, last one shortened), compiled per grid length.
- Statistics: ``sol.stats`` has ``num_accepted_steps`` and ``num_rejected_steps`` but no
  evaluation count. ``nfev`` is a closed form per method (see ``_NFE``), checked against a
  host-callback counter (:meth:`DiffraxBackend.count_nfev`) in
  ``tests/test_backend_diffrax.py``: FSAL explicit RK ``(stages - 1) * steps + 1``, other
  RK ``stages * steps``, ReversibleHeun ``steps + 1`` (rejected steps included). One
  exception, measured: an FSAL method evaluates f(t0, y0) again after each rejection that
  comes before the first accepted step (Bosh3 on harmonic at rtol 1e-6 from diffrax's
  first step 0.01: 929 counted, 928 by the closed form), so in adaptive mode ``nfev`` of an
  FSAL method is a lower bound, exact when the first step is accepted and at most
  ``rejected`` too low; :meth:`DiffraxBackend.count_nfev` gives the exact count.
- ``first_step=None`` passes ``dt0=None``: diffrax 0.7.2's ``PIDController.init`` then calls
  ``_select_initial_step``, which returns a hard-coded 0.01 unless the terms are an
  ``ODETerm``; ``diffeqsolve`` wraps them in ``WrapTerm`` first, so the first step is 0.01
  (clipped to the span) and costs no evaluation. Measured: identical step sequences for
  ``dt0=None`` and ``dt0=0.01``.
- A batch ``y0`` of shape ``(B, n)`` is solved with ``jax.vmap``: each sample has its own
  step sizes. The vmapped loop runs until the slowest sample finishes and evaluates the
  field on the whole batch each iteration, so ``nfev`` (calls, each on the whole batch)
  follows the closed form with the largest per-sample step count.
- Compilation: one program per (vector field and its constant parameters, method, mode,
  shapes, dtype, max_steps, output-time slots); y0, the span, tolerances, step sizes and the
  float-array parameters are traced arguments. The output times are padded with repeats of the
  last one to at least :data:`MIN_OUTPUT_SLOTS` (then a power of two), so the 2, 5 and 16 output
  times of the conformance properties share one program. Compiled programs are also kept on
  disk across runs by JAX's persistent compilation cache (``_jax_cache``, ``docs/jax-cache.md``),
  except those with host callbacks (the implicit methods' evaluation counter, ``count_nfev``).
"""
from __future__ import annotations

import hashlib
import math
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import _xp
from ..problems import Problem
from ..solution import Solution, Stats, Status
from . import _jax_cache, diffrax_sde
from .base import Backend, Capabilities, MethodInfo, UnsupportedOption


@dataclass(frozen=True)
class _Spec:
    order: int
    adaptive: bool
    embedded: int | None
    dense_order: int
    tableau: str | None
    #: (evaluations per step, evaluations at start-up) for the NFE closed form; None for the
    #: implicit methods, whose Newton iterations vary: their calls are counted by a host callback
    nfe: tuple[int, int] | None
    notes: str = ""
    #: solves a nonlinear system each step with df/dy (one Jacobian and LU per attempted step)
    implicit: bool = False
    #: k in err_estimate ~ h^k when it is not embedded + 1
    error_order: int | None = None


#: what each diffrax solver is; tableau matches were checked coefficient by coefficient
#: (``tests/test_backend_diffrax.py::test_tableau_matches``). Dense orders follow odeverify's
#: convention (the order q of the continuous extension: one-step interpolation error
#: O(h^(q+1))), as diffrax's interpolation classes imply: linear interpolation 1; cubic
#: Hermite min(p, 3); Tsit5/Dopri5 quartic 4; Dopri8 5 (measured, below its docs' 8).
_SPECS: dict[str, _Spec] = {
    "Euler": _Spec(1, False, None, 1, "euler", (1, 0),
                   "no tableau attribute in diffrax; identity with 'euler' checked by agreement; linear dense output"),
    "Heun": _Spec(2, True, 1, 2, "heun", (2, 0),
                  "A, b, c identical to 'heun'; diffrax's error weights are the negated ones (same norm);"
                  " not FSAL; cubic Hermite dense output from k[0], k[-1]"),
    "Midpoint": _Spec(2, True, 1, 2, "midpoint", (2, 0),
                      "A, b, c identical to 'midpoint' (which has no embedded pair); diffrax adds an embedded"
                      " Euler estimate; its Hermite dense output takes the c=1/2 stage as the end slope"
                      " (an O(h) slope error: measured first order, an expected deviation)"),
    "Ralston": _Spec(2, True, 1, 2, "ralston", (2, 0),
                     "A, b, c identical to 'ralston' (which has no embedded pair); diffrax adds an embedded"
                     " Euler estimate; Hermite dense output uses the c=2/3 stage as the end slope"
                     " (measured first order, an expected deviation)"),
    "Bosh3": _Spec(3, True, 2, 3, "bosh3", (3, 1), "identical to 'bosh3' including the error weights; FSAL"),
    "Tsit5": _Spec(5, True, 4, 4, "tsit5", (6, 1),
                   "identical to 'tsit5' including the error weights; FSAL; diffrax's docs call its dense"
                   " output 5th order, the interpolant is a quartic (declared 4)"),
    "Dopri5": _Spec(5, True, 4, 4, "dopri5", (6, 1),
                    "A, b, c identical to 'dopri5'; diffrax's error weights are exactly 2/3 of Hairer's"
                    " (embedded weights 1951/21600, ..., 1/60 instead of 5179/57600, ..., 1/40), so its"
                    " adaptive steps differ from the reference's; FSAL; quartic dense output (declared 4)"),
    "Dopri8": _Spec(8, True, 7, 5, None, (13, 1),
                    "Prince-Dormand 8(7) with 14 stages (FSAL), not DOP853 (12 stages, 8(5,3)): no"
                    " reference tableau; diffrax's docs call its dense output 8th order, but its local"
                    " interpolation error measured O(h^6) on warped_oscillatory (slopes 6.21, 6.19, 6.12"
                    " for h = 3/32 ... 3/256): declared 5"),
    "ReversibleHeun": _Spec(2, True, 1, 1, None, (1, 1),
                            "Kidger et al. 2021 reversible Heun: one evaluation per step plus one at start;"
                            " not a Runge-Kutta method; linear dense output"),
    "LeapfrogMidpoint": _Spec(2, False, None, 1, None, (1, 0),
                              "two-step leapfrog/midpoint; fixed steps only; linear dense output"),
    "SemiImplicitEuler": _Spec(1, False, None, 1, None, (2, 0),
                               "symplectic Euler on a split state (q, p) = first and second halves of y:"
                               " q' = f(t, p), p' = g(t, q_new). Only for an even state dimension and a"
                               " separable field (dq'/dq = 0 and dp'/dp = 0, checked on a few states);"
                               " other problems raise UnsupportedOption. Two half-field evaluations a step,"
                               " each counted as one call"),
}

#: diffrax's implicit methods. ESDIRK (Kvaerno) and ImplicitEuler solve their stages with a
#: simplified Newton iteration (VeryChord / optimistix Chord) on a Jacobian computed by
#: forward-mode autodiff once per attempted step (diffrax's CalculateJacobian.second_stage /
#: Chord.init), factorised once per step by lineax: njev = nlu = attempted steps.
#: Root finders: adaptive mode keeps diffrax's default, VeryChord (Chord for ImplicitEuler)
#: with the step-size controller's rtol/atol (``with_stepsize_controller_tols``); a step
#: whose iteration fails is rejected and retried smaller. Fixed-step mode has no controller
#: tolerances, so the root finder is ``optimistix.Chord(rtol=atol=FIXED_ROOT_TOL)`` with
#: :data:`FIXED_ROOT_MAX_STEPS` iterations, not VeryChord: measured, diffrax's
#: ``VeryChord(rtol=atol=tol)`` reports "Nonlinear solve diverged" on the first step of
#: Kvaerno3 on warped_fast with 32 and 256 steps for every tol in 1e-6 ... 1e-12, where
#: ``optimistix.Chord`` and ``optimistix.Newton`` converge (same errors to 1e-10). A fixed
#: step whose iteration fails ends the solve with a FAILED status. The tolerance 1e-10
#: (not 1e-12) leaves room for round-off in h f: on Prothero-Robinson with lam = -1e6,
#: ImplicitEuler's Chord at 1e-12 never converged (|h lam| eps |y| ~ 1e-11).
_IMPLICIT_NOTES = (" nfev counts every call of the vector field with a host callback (stages, Newton iterations"
                   " and the primal call of each forward-mode Jacobian), so wall_s includes one callback per"
                   " evaluation; njev = nlu = attempted steps (one Jacobian and one LU per step).")
_SPECS.update({
    "ImplicitEuler": _Spec(1, True, 2, 1, None, None,
                           "backward Euler (A-, B-, L-stable, stiffly accurate); error estimate (k1 - k0)/2, the"
                           " difference with the trapezoidal rule, ~h^2; Chord (Newton with the Jacobian at"
                           " the predictor); linear dense output." + _IMPLICIT_NOTES, implicit=True, error_order=2),
    "Kvaerno3": _Spec(3, True, 2, 3, None, None,
                      "Kvaerno (2004) ESDIRK 3(2), 4 stages, explicit first stage, stiffly accurate, L-stable;"
                      " diffrax writes gamma = 0.43586652150 (11 digits: its coefficients agree with the exact"
                      " tableau to ~1e-11 only); cubic Hermite dense output." + _IMPLICIT_NOTES, implicit=True),
    "Kvaerno4": _Spec(4, True, 3, 3, None, None,
                      "Kvaerno (2004) ESDIRK 4(3), 5 stages, explicit first stage, stiffly accurate, L-stable;"
                      " cubic Hermite dense output." + _IMPLICIT_NOTES, implicit=True),
    "Kvaerno5": _Spec(5, True, 4, 3, None, None,
                      "Kvaerno (2004) ESDIRK 5(4), 7 stages, explicit first stage, stiffly accurate, L-stable;"
                      " cubic Hermite dense output (declared 3)." + _IMPLICIT_NOTES, implicit=True),
    "KenCarp3": _Spec(3, True, 2, 3, None, None,
                      "Kennedy-Carpenter ARK3(2)4L[2]SA IMEX: needs an explicit/implicit split of the field"
                      " (Problem attribute 'imex'); no problem supplies one yet, so every solve raises"
                      " UnsupportedOption." + _IMPLICIT_NOTES, implicit=True),
    "KenCarp4": _Spec(4, True, 3, 3, None, None,
                      "Kennedy-Carpenter ARK4(3)6L[2]SA IMEX; needs a split, as KenCarp3." + _IMPLICIT_NOTES,
                      implicit=True),
    "KenCarp5": _Spec(5, True, 4, 3, None, None,
                      "Kennedy-Carpenter ARK5(4)8L[2]SA IMEX; needs a split, as KenCarp3." + _IMPLICIT_NOTES,
                      implicit=True),
})
#: diffrax methods that need an explicit/implicit split (MultiTerm of two ODETerms)
_IMEX = ("KenCarp3", "KenCarp4", "KenCarp5")
#: root-finder tolerance (rtol = atol) and iteration limit of the implicit methods in fixed-step mode
FIXED_ROOT_TOL = {"float64": 1e-10, "float32": 1e-4}
FIXED_ROOT_MAX_STEPS = 20
#: reference tableaus with the same coefficients, declared when the reference has them
_TABLEAU_OF = {"Kvaerno3": "kvaerno3", "Kvaerno4": "kvaerno4", "Kvaerno5": "kvaerno5",
               "ImplicitEuler": "backward_euler"}


def _tableau_name(method: str, spec: _Spec) -> str | None:
    if spec.tableau is not None or method not in _TABLEAU_OF:
        return spec.tableau
    from ..tableaus import TABLEAUS

    name = _TABLEAU_OF[method]
    return name if name in TABLEAUS.names() else None


_STATUS_OF = {"successful": Status.SUCCESS, "max_steps_reached": Status.MAX_STEPS,
              "dt_min_reached": Status.DT_UNDERFLOW}


#: compiled solves kept in memory, least recently used dropped first: each holds ~18 MB (a
#: 2-4-D MLP CNF's Dopri5 solve), and `odeverify explore` draws a new field per example (40
#: drawn CNFs grew a process to 1.8 GB; a 10-minute flows search died in LLVM's allocator)
MAX_COMPILED = 128


class DiffraxBackend(Backend):
    """diffrax's solvers, jitted once per (problem, method, mode, shapes, dtype)."""

    name = "diffrax"
    install_hint = "pip install 'odeverify[jax]' (diffrax, equinox, jax)"

    def __init__(self) -> None:
        self._cache: OrderedDict[tuple, tuple[Any, Problem, Any]] = OrderedDict()
        self.compiles = 0  #: number of compilations so far (for tests and reports)

    # ------------------------------------------------------------------ contract
    def _import(self) -> Any:
        _xp.get_namespace("jax")  # enables float64 before any array exists
        return _xp.require("diffrax")

    def _event_adapter(self) -> Any:  # events (issue 12): backends/diffrax_events.py
        from . import diffrax_events

        return diffrax_events

    def capabilities(self) -> Capabilities:
        methods = {
            name: MethodInfo(name=name, order=s.order, adaptive=s.adaptive, fixed=True, dense=True,
                             dense_order=s.dense_order, embedded_order=s.embedded,
                             tableau=_tableau_name(name, s), notes=s.notes, implicit=s.implicit,
                             error_order=s.error_order)
            for name, s in _SPECS.items()
        }
        devices: tuple[str, ...] = ("cpu",)
        try:
            import jax

            if jax.devices("gpu"):
                devices = ("cpu", "gpu")
        except Exception:  # noqa: BLE001 - no GPU platform (or no jax): CPU only
            pass
        options: dict[str, bool | str] = {k: True for k in ("rtol", "atol", "dt", "n_steps", "first_step",
                                                              "max_steps", "safety", "factor_min", "factor_max",
                                                              "dtmin", "dtmax", "t_eval")}
        options["jac"] = ("diffrax's implicit solvers build df/dy by forward-mode autodiff of the vector field"
                          " (exact to round-off) and take no user Jacobian")
        for key in ("max_order", "max_order_stiff"):
            options[key] = "diffrax's solvers are one-step methods of a fixed order: none has a maximum-order option"
        return Capabilities(
            methods=methods, dtypes=("float64", "float32"), devices=devices, options=options, per_sample=True,
            gradient_modes=("recursive_checkpoint", "direct", "backsolve", "backsolve_seminorm", "forward"),
            discrete_gradient_modes=("recursive_checkpoint", "direct", "forward"),
            sde_methods=diffrax_sde.sde_methods(),
            notes="jitted; compile time reported in timing['compile_s'] (0 on a cache hit); adaptive FSAL"
                  " nfev is a closed-form lower bound, low by the rejections before the first accepted"
                  " step (count_nfev counts exactly); max_steps is"
                  " static (a new value compiles again); nfev by per-method closed form checked against a"
                  " host-callback count; a dt that does not divide the span compiles per grid length",
        )

    # ------------------------------------------------------------------ solve
    def _solve_sde(self, problem: Any, method: Any, bm: Any, y0: np.ndarray, options: dict[str, Any], dtype: str,
                   device: str) -> Solution:
        return diffrax_sde.solve_sde(self, problem, method, bm, y0, options, dtype, device)

    def _cde_adapter(self) -> Any:
        """CDEs with ControlTerm over diffrax's interpolations (``backends/diffrax_cde.py``)."""
        from . import diffrax_cde

        return diffrax_cde

    def _gradient(self, problem: Problem, method: MethodInfo, mode: str, loss: Any, y0: np.ndarray | None,
                  options: dict[str, Any], dtype: str, device: str) -> Any:
        from .diffrax_gradients import gradient  # diffrax's adjoints, jitted once per key

        return gradient(problem, method, mode, loss, y0, options, dtype, device, _SPECS[method.name].nfe)

    def _solve(self, problem: Problem, method: MethodInfo, y0: np.ndarray | None, options: dict[str, Any],
               dtype: str, device: str) -> Solution:
        run = self._prepare(problem, method, y0, options, dtype, device, count=False)
        return run()

    def count_nfev(self, problem: Problem, method: str, *, y0: Any = None, dtype: str = "float64",
                   **options: Any) -> int:
        """Solve once with a vector field that increments a host counter (jax.debug.callback).

        Slow (a separate compilation); used to check the closed form in ``nfev``. With a batch
        ``y0`` it returns calls of the batched field (each call evaluates the whole batch).
        """
        info = self.capabilities().method(method, self.name)
        self.check_options(info, options)
        y0a = None if y0 is None else np.asarray(y0, dtype=np.float64)
        counter = [0]
        run = self._prepare(problem, info, y0a, dict(options), dtype, "cpu", count=counter)
        run()
        return counter[0]

    def _prepare(self, problem: Problem, method: MethodInfo, y0: np.ndarray | None, options: dict[str, Any],
                 dtype: str, device: str, count: Any):
        import jax
        import jax.numpy as jnp

        self._import()
        _jax_cache.enable()  # compiled solves kept on disk across runs (before the first compilation)
        spec = _SPECS[method.name]
        jdt = jnp.float64 if dtype == "float64" else jnp.float32
        # y0, t_eval and the numeric options were validated by Backend.solve
        y0n = np.asarray(problem.y0 if y0 is None else y0, dtype=np.float64)
        n = problem.n
        t0, t1 = problem.t_span
        span = t1 - t0
        ts = np.asarray(options["t_eval"] if options.get("t_eval") is not None else problem.t_span, dtype=np.float64)
        if method.name == "SemiImplicitEuler":
            _check_separable(problem, jdt)

        # --- mode and static structure
        dt, n_steps = options.get("dt"), options.get("n_steps")
        if dt is not None and n_steps is not None:
            raise ValueError("give either dt or n_steps, not both")
        fixed = dt is not None or n_steps is not None
        max_steps = options.get("max_steps")
        max_steps = 100_000 if max_steps is None else max_steps
        if not isinstance(max_steps, (int, np.integer)) or max_steps <= 0:
            raise ValueError(f"max_steps={max_steps!r}, but it must be a positive int")
        max_steps = int(max_steps)
        grid = None
        if fixed:
            if n_steps is not None:
                if not isinstance(n_steps, (int, np.integer)) or n_steps <= 0:
                    raise ValueError(f"n_steps={n_steps!r}, but it must be a positive int")
                nsteps = int(n_steps)
            else:
                dt = _positive("dt", dt)
                ratio = abs(span) / dt
                nsteps = round(ratio)
                if nsteps == 0 or abs(ratio - nsteps) > 1e-12 * max(1.0, ratio):
                    count_ = math.ceil(ratio * (1 - 1e-12))
                    grid = t0 + math.copysign(dt, span) * np.arange(count_ + 1, dtype=np.float64)
                    grid[-1] = t1
                    nsteps = count_
            mode = "fixed-grid" if grid is not None else "fixed"
            struct: tuple = (grid is None or len(grid),)
        else:
            mode = "adaptive"
            struct = tuple(options.get(k) is None for k in ("first_step", "dtmin", "dtmax"))

        batch = y0n.shape[:-1]
        if method.name in _IMEX and getattr(problem, "imex", None) is None:
            raise UnsupportedOption(f"diffrax method {method.name!r} is an IMEX method: it needs an explicit/implicit"
                                    f" split of the vector field, and problem {problem.name!r} supplies none")
        # output times padded to a bucket (repeats of the last one), so that properties asking
        # for 2, 5 or 16 output times share one compilation (_padded_times)
        ts_run = _padded_times(ts)
        key = (_field_key(problem), method.name, mode, struct, len(ts_run), batch, n, dtype, max_steps,
               device, count is not False)
        entry = self._cache.get(key)
        if entry is not None:
            self._cache.move_to_end(key)
        # implicit methods: evaluations counted by a host callback kept with the compiled solve
        counter = None
        if count is False and spec.nfe is None:
            counter = entry[2] if entry is not None else [0]

        # --- traced arguments
        def arr(v: Any, shape: tuple = ()) -> Any:
            return jnp.broadcast_to(jnp.asarray(np.asarray(v, dtype=np.float64), dtype=jdt), shape)

        args: dict[str, Any] = {"y0": arr(y0n, y0n.shape), "ts": arr(ts_run, ts_run.shape), "t0": arr(t0), "t1": arr(t1),
                                "params": {k: arr(v, v.shape) for k, v in _traced_params(problem).items()}}
        if mode == "fixed":
            args["dt0"] = arr(span / nsteps)
        elif mode == "fixed-grid":
            args["grid"] = arr(grid, grid.shape)
        else:
            args["rtol"] = arr(_tol("rtol", options.get("rtol"), 1e-6, n), (n,))
            args["atol"] = arr(_tol("atol", options.get("atol"), 1e-9, n), (n,))
            args["safety"] = arr(_positive("safety", options.get("safety", None) or 0.9))
            args["factormin"] = arr(_positive("factor_min", options.get("factor_min", None) or 0.2))
            args["factormax"] = arr(_positive("factor_max", options.get("factor_max", None) or 10.0))
            for k in ("first_step", "dtmin", "dtmax"):
                if options.get(k) is not None:
                    args[k] = arr(_positive(k, options[k]) if k != "dtmin" else _nonneg(k, options[k]))
        jdev = jax.devices("gpu" if device == "gpu" else "cpu")[0]
        args = jax.device_put(args, jdev)

        compile_s = 0.0
        if entry is None:
            fn = _build(problem, method.name, mode, max_steps, jdt, batch, count if counter is None else counter,
                        dtype)
            start = time.perf_counter()
            with _jax_cache.cacheable_checks():
                compiled = jax.jit(fn).lower(args).compile()
            compile_s = time.perf_counter() - start
            self.compiles += 1
            if count is False:
                self._cache[key] = (compiled, problem, counter)  # keeps problem.rhs alive: its id stays unique
                while len(self._cache) > MAX_COMPILED:  # an evicted key's id may be reused: its entry is gone
                    self._cache.popitem(last=False)
        else:
            compiled = entry[0]

        def run() -> Solution:
            if counter is not None:
                counter[0] = 0
            start = time.perf_counter()
            out = compiled(args)
            out = jax.block_until_ready(out)
            wall = time.perf_counter() - start
            if len(ts_run) > len(ts):  # drop the padding rows (on the host: no compilation per length)
                out["ys"] = jax.device_put(np.asarray(out["ys"])[:len(ts)], jdev)
            if counter is not None:
                jax.effects_barrier()  # every callback has run
            return _to_solution(out, ts, method.name, spec, batch, fixed, options, wall, compile_s, mode,
                                nsteps if fixed else None, None if counter is None else counter[0])

        return run


#: the fewest output times a solve is compiled for: the conformance properties ask for 2 (the
#: span), 5 (dense output) and 16 (the convergence sweep's check times) per problem, and these
#: share one compilation; beyond it the count is rounded up to a power of two
MIN_OUTPUT_SLOTS = 16


def _padded_times(ts: np.ndarray) -> np.ndarray:
    """``ts`` followed by repeats of its last time, up to :data:`MIN_OUTPUT_SLOTS` or the next
    power of two. diffrax takes non-decreasing (or, backward, non-increasing) save times and
    does not step to them (they are read off its interpolant inside each step), so the steps
    and the values at the requested times are the same as without the padding (checked bit for
    bit in ``tests/test_backend_diffrax.py``); the padded rows are dropped after the solve."""
    n = len(ts)
    slots = max(MIN_OUTPUT_SLOTS, 1 << max(n - 1, 0).bit_length())
    if slots == n:
        return ts
    return np.concatenate([ts, np.full(slots - n, ts[-1], dtype=ts.dtype)])


def _traced_params(problem: Problem) -> dict[str, np.ndarray]:
    """The parameters passed to a compiled solve as traced arguments: the float arrays of
    ``problem.params`` (their values are not compiled in, so a family of problems that differ
    only in them, such as ``stiff_linear_problem(ratio)``, shares one compilation); Python
    scalars and other values are constants of the compiled field."""
    return {k: np.asarray(v, dtype=np.float64) for k, v in problem.params.items()
            if isinstance(v, np.ndarray) and np.issubdtype(v.dtype, np.floating)}


def _field_key(problem: Problem) -> tuple:
    """What a compiled solve depends on: the vector field's function and its constant
    parameters, and the shapes of its traced ones (:func:`_traced_params`); not y0, the time
    span or the traced parameter values, which are arguments. Problems re-based at another start
    (one-step properties) and problems that differ only in array parameters (the stiffness
    ratios of ``stiffness_handling``) therefore share one compilation."""
    def fp(v: Any) -> Any:
        if isinstance(v, np.ndarray):
            if np.issubdtype(v.dtype, np.floating):
                return ("traced", v.shape)
            return (v.shape, str(v.dtype), hashlib.sha1(np.ascontiguousarray(v).tobytes()).hexdigest())
        return repr(v)

    return (id(problem.rhs), tuple((k, fp(v)) for k, v in sorted(problem.params.items())))


# ---------------------------------------------------------------------------- building
def _build(problem: Problem, method: str, mode: str, max_steps: int, jdt: Any, batch: tuple, count: Any,
           dtype: str = "float64"):
    """The function to jit: args dict -> outputs; vmapped over a batch ``y0``."""
    import diffrax
    import jax
    import jax.numpy as jnp

    xp = _xp.get_namespace("jax")
    traced = set(_traced_params(problem))
    constants = {k: v for k, v in problem.converted_params(xp, jdt).items() if k not in traced}
    rhs = problem.rhs

    def f(t: Any, y: Any, params: Any) -> Any:  # params: the traced arrays (args["params"])
        return rhs(xp, t, y, {**constants, **params})

    if count is not False:
        def bump(*_: Any) -> None:
            count[0] += 1

        def field(t: Any, y: Any, params: Any) -> Any:
            jax.debug.callback(bump, ordered=False)
            return f(t, y, params)
    else:
        field = f

    solver = _make_solver(diffrax, method, mode, dtype)
    if method == "SemiImplicitEuler":
        m = problem.n // 2

        def vq(t: Any, p: Any, args: Any) -> Any:
            return field(t, jnp.concatenate([jnp.zeros_like(p), p], axis=-1), args)[..., :m]

        def vp(t: Any, q: Any, args: Any) -> Any:
            return field(t, jnp.concatenate([q, jnp.zeros_like(q)], axis=-1), args)[..., m:]

        terms: Any = (diffrax.ODETerm(vq), diffrax.ODETerm(vp))
    else:
        terms = diffrax.ODETerm(lambda t, y, args: field(t, y, args))

    def one(a: dict[str, Any], y0: Any) -> dict[str, Any]:
        kwargs: dict[str, Any] = {}
        if mode == "fixed":
            controller: Any = diffrax.ConstantStepSize()
            dt0 = a["dt0"]
        elif mode == "fixed-grid":
            controller = diffrax.StepTo(ts=a["grid"])
            dt0 = None
        else:
            kwargs = {k: a[k] for k in ("dtmin", "dtmax") if k in a}
            controller = diffrax.PIDController(rtol=a["rtol"], atol=a["atol"], pcoeff=0, icoeff=1,
                                               safety=a["safety"], factormin=a["factormin"],
                                               factormax=a["factormax"], force_dtmin=False, **kwargs)
            dt0 = a.get("first_step")
            if dt0 is not None:
                dt0 = jnp.minimum(dt0, jnp.abs(a["t1"] - a["t0"])) * jnp.sign(a["t1"] - a["t0"])
        if method == "SemiImplicitEuler":
            m = problem.n // 2
            y_init: Any = (y0[..., :m], y0[..., m:])
        else:
            y_init = y0
        sol = diffrax.diffeqsolve(terms, solver, a["t0"], a["t1"], dt0, y_init, args=a["params"],
                                  saveat=diffrax.SaveAt(ts=a["ts"], t1=True), stepsize_controller=controller,
                                  max_steps=max_steps, throw=False)
        ys = sol.ys
        if method == "SemiImplicitEuler":
            ys = jnp.concatenate(ys, axis=-1)
        reached = jnp.isfinite(sol.ts[:-1])
        out_ys = jnp.where(reached[:, None], ys[:-1], jnp.nan)
        return {"ys": out_ys, "t_final": sol.ts[-1], "y_final": ys[-1], "result": sol.result._value,
                "accepted": sol.stats["num_accepted_steps"], "rejected": sol.stats["num_rejected_steps"]}

    if batch:
        def fn(a: dict[str, Any]) -> dict[str, Any]:
            rest = {k: v for k, v in a.items() if k != "y0"}
            out = jax.vmap(lambda y: one(rest, y))(a["y0"])
            out["ys"] = jnp.moveaxis(out["ys"], 0, 1)  # (B, T, n) -> (T, B, n)
            return out
    else:
        def fn(a: dict[str, Any]) -> dict[str, Any]:
            return one(a, a["y0"])
    return fn


def _make_solver(diffrax: Any, method: str, mode: str, dtype: str) -> Any:
    """diffrax's solver object; implicit methods in fixed-step mode get explicit root-finder
    tolerances (see FIXED_ROOT_TOL), in adaptive mode diffrax's default (the controller's)."""
    cls = getattr(diffrax, method)
    if not _SPECS[method].implicit or mode == "adaptive":
        return cls()
    import optimistix as optx

    tol = FIXED_ROOT_TOL[dtype]
    return cls(root_finder=optx.Chord(rtol=tol, atol=tol), root_find_max_steps=FIXED_ROOT_MAX_STEPS)


def _to_solution(out: dict[str, Any], ts: np.ndarray, method: str, spec: _Spec, batch: tuple, fixed: bool,
                 options: dict[str, Any], wall: float, compile_s: float, mode: str, nsteps: int | None,
                 counted: int | None = None) -> Solution:
    import diffrax

    acc = np.asarray(out["accepted"], dtype=np.int64)
    rej = np.asarray(out["rejected"], dtype=np.int64)
    codes = np.atleast_1d(np.asarray(out["result"]))
    # diffrax leaves unreached saves (and the t1 save of a failed solve) at inf, turned into
    # NaN rows above: a non-finite state is one that is non-finite in a reached row or at t1
    ys_np = np.asarray(out["ys"])
    t_fin = np.asarray(out["t_final"], dtype=np.float64)
    reached_ok = np.isfinite(t_fin)
    y_fin = np.asarray(out["y_final"])
    fin_final = np.all(np.isfinite(y_fin), axis=-1) | ~reached_ok
    rows = ys_np if not batch else np.moveaxis(ys_np, 1, 0)  # (B, T, n) or (T, n)
    rows_bad = np.any(np.isinf(rows), axis=(-1, -2))  # NaN rows mean "not reached"
    rows_nan_partial = np.any(np.isnan(rows) & ~np.all(np.isnan(rows), axis=-1, keepdims=True), axis=(-1, -2))
    finite = np.atleast_1d(fin_final & ~rows_bad & ~rows_nan_partial)
    statuses, messages = [], []
    for code, fin in zip(codes, finite):
        item = diffrax.RESULTS._index_to_message[int(code)] if hasattr(diffrax.RESULTS, "_index_to_message") else None
        name = _result_name(int(code))
        status = _STATUS_OF.get(name, Status.FAILED)
        if not fin and status in (Status.SUCCESS, Status.MAX_STEPS, Status.FAILED):
            status = Status.NONFINITE
        statuses.append(status)
        messages.append("" if name == "successful" else (name if item is None else (item or name)))
    # the worst status of the batch (any failure is the batch's status)
    status = next((s for s in statuses if not s.ok), Status.SUCCESS)
    message = "" if status.ok else "; ".join(sorted({f"diffrax: {m}" for s, m in zip(statuses, messages)
                                                      if not s.ok and m}))
    if status is Status.NONFINITE:
        message = (message + "; " if message else "") + "final state non-finite"
    steps = acc + rej
    if spec.nfe is None:  # implicit: counted calls; one Jacobian and one LU per attempted step
        nfev = int(counted) if counted is not None else -1
        njev = nlu = int(np.max(steps))
    else:
        per_call, start_up = spec.nfe
        nfev = per_call * int(np.max(steps)) + start_up
        njev = nlu = 0
    stats = Stats(nfev=nfev, njev=njev, nlu=nlu, accepted=int(acc.sum()), rejected=int(rej.sum()))
    if batch:
        stats.sample_accepted = acc.reshape(-1)
        stats.sample_rejected = rej.reshape(-1)
    sol_options = {k: v for k, v in options.items() if v is not None}
    sol_options["mode"] = mode
    ys_out = out["ys"]
    t_final: Any = _t_final(t_fin, ts, rows)
    if not status.ok:
        # diffrax (throw=False) does not say where a failed solve stopped, and may return
        # finite but meaningless values at unreached output times (Tsit5 stopped by
        # max_steps on arenstorf fills t = 5, 10, T): keep only the initial row
        import jax.numpy as jnp

        keep = jnp.asarray(ts == ts[0])
        shape = (len(ts),) + (1,) * (ys_out.ndim - 1)
        ys_out = jnp.where(jnp.reshape(keep, shape), ys_out, jnp.nan)
        t_final = float("nan")
        message += "; diffrax does not report where a failed solve stopped: rows after t0 are NaN"
    return Solution(ts=ts, ys=ys_out, status=status, stats=stats, method=method,
                    t_final=t_final, message=message, options=sol_options,
                    timing={"wall_s": wall, "compile_s": compile_s})


def _t_final(t_fin: np.ndarray, ts: np.ndarray, rows: np.ndarray) -> Any:
    """The time reached (successful solves; a failed one reports NaN, see _to_solution)."""
    reached = ~np.all(np.isnan(rows), axis=-1)  # (T,) or (B, T)
    idx = np.where(reached.any(axis=-1), reached.shape[-1] - 1 - np.argmax(reached[..., ::-1], axis=-1), -1)
    last = np.where(idx >= 0, ts[np.maximum(idx, 0)], np.nan)
    out = np.where(np.isfinite(t_fin), t_fin, last)
    return float(out) if out.ndim == 0 else out


def _result_name(code: int) -> str:
    import diffrax

    for name in ("successful", "max_steps_reached", "dt_min_reached", "event_occurred", "max_steps_rejected",
                 "internal_error"):
        if int(getattr(diffrax.RESULTS, name)._value) == code:
            return name
    return f"result code {code}"


# ---------------------------------------------------------------------------- checks
def _positive(name: str, value: Any) -> float:
    v = float(value)
    if not (math.isfinite(v) and v > 0):
        raise ValueError(f"{name}={value!r}, but it must be finite and > 0")
    return v


def _nonneg(name: str, value: Any) -> float:
    v = float(value)
    if not (math.isfinite(v) and v >= 0):
        raise ValueError(f"{name}={value!r}, but it must be finite and >= 0")
    return v


def _tol(name: str, value: Any, default: float, n: int) -> np.ndarray:
    arr = np.asarray(default if value is None else value, dtype=np.float64)
    if arr.ndim > 1 or (arr.ndim == 1 and arr.shape[0] != n):
        raise ValueError(f"{name} has shape {arr.shape}, but it must be a scalar or have shape ({n},)")
    if not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        raise ValueError(f"{name}={value!r}, but it must be finite and > 0 (every entry)")
    return np.broadcast_to(arr, (n,))


def _check_separable(problem: Problem, jdt: Any) -> None:
    """SemiImplicitEuler needs q' = f(t, p), p' = g(t, q) on y = (q, p); refuse anything else."""
    import jax
    import jax.numpy as jnp

    n = problem.n
    if n % 2:
        raise UnsupportedOption(f"diffrax method 'SemiImplicitEuler' needs a split state (q, p) of even"
                                f" dimension; problem {problem.name!r} has n={n}")
    m = n // 2
    f = problem.vector_field(_xp.get_namespace("jax"), jnp.float64)
    rng = np.random.default_rng(0)
    y0 = np.asarray(problem.y0)
    t0, t1 = problem.t_span
    for y, t in [(y0, t0), (y0 + 0.1 * rng.standard_normal(n), 0.5 * (t0 + t1)),
                 (y0 + 0.3 * rng.standard_normal(n), t1)]:
        J = np.asarray(jax.jacfwd(lambda z: f(jnp.asarray(t, jnp.float64), z))(jnp.asarray(y, jnp.float64)))
        if np.any(J[:m, :m] != 0) or np.any(J[m:, m:] != 0):
            raise UnsupportedOption(
                f"diffrax method 'SemiImplicitEuler' needs a separable field q' = f(t, p), p' = g(t, q) on"
                f" y = (q, p); problem {problem.name!r} has dq'/dq or dp'/dp nonzero")
