"""scipy.integrate (``solve_ivp``'s solver classes) as a backend.

The adapter drives scipy's own ``OdeSolver`` objects (``RK23``, ``RK45``, ``DOP853``,
``Radau``, ``BDF``, ``LSODA``) one ``step()`` at a time, exactly as ``solve_ivp`` does
internally, so the numbers are scipy's; driving the loop here is what lets it stop at
``max_steps`` with the partial solution and count steps.

Counting (see :class:`ScipyBackend.capabilities` notes):

- ``nfev``: every call of the wrapped vector field, including the finite-difference
  Jacobian columns of Radau/BDF (which scipy's own ``nfev`` leaves out) and DOP853's three
  dense-output stages; ``njev``/``nlu`` are scipy's.
- ``accepted``: successful ``step()`` calls (each is one accepted step).
- ``rejected``: for the explicit Runge--Kutta methods, every attempt costs exactly
  ``n_stages`` evaluations (scipy's ``rk_step`` evaluates ``f(t+h, y_new)`` even when the
  step is rejected), so the attempts inside one ``step()`` are its evaluations divided by
  ``n_stages``; for Radau, BDF and LSODA scipy exposes no count: ``rejected = -1``.
- ``max_steps``: attempted steps (accepted + rejected) for the explicit methods, stopped
  before the attempt that would exceed it; accepted steps for Radau, BDF and LSODA.

A batch ``y0`` of shape (B, n) is flattened into one system of size B*n (one step size for
the whole batch; each vector-field call evaluates the whole batch).
"""
from __future__ import annotations

import time
from typing import Any

import numpy as np

from .. import _xp
from ..problems import Problem
from ..solution import Solution, Stats, Status
from .base import Backend, Capabilities, MethodInfo

#: explicit Runge--Kutta methods whose attempts can be counted from the evaluations
_EXPLICIT = ("RK23", "RK45", "DOP853")

_METHODS = (
    MethodInfo(name="RK23", order=3, adaptive=True, fixed=False, dense=True, dense_order=3, embedded_order=2,
               tableau="bosh3", notes="Bogacki-Shampine 3(2), FSAL, cubic Hermite dense output"),
    MethodInfo(name="RK45", order=5, adaptive=True, fixed=False, dense=True, dense_order=4, embedded_order=4,
               tableau="dopri5", notes="Dormand-Prince 5(4), FSAL, quartic dense output"),
    MethodInfo(name="DOP853", order=8, adaptive=True, fixed=False, dense=True, dense_order=7, embedded_order=5,
               error_order=8,
               tableau="dop853", notes="Hairer's DOP853, 8(5,3) error estimate; dense output costs 3 extra"
               " evaluations per step that contains an output time"),
    MethodInfo(name="Radau", order=5, adaptive=True, fixed=False, dense=True, dense_order=3, embedded_order=3,
               implicit=True, tableau=None,
               notes="implicit Radau IIA, 3 stages, order 5 (stage order 3); third-order error estimator; cubic"
               " collocation dense output; simplified Newton on the transformed (real + complex pair) system."
               " jac=True passes the problem's analytic Jacobian; otherwise finite differences, whose"
               " evaluations this adapter counts in nfev although scipy's own nfev leaves them out"
               " (options['scipy_nfev'] keeps scipy's count)"),
    MethodInfo(name="BDF", order=5, adaptive=True, fixed=False, dense=True, dense_order=None, embedded_order=None,
               implicit=True,
               notes="variable order 1-5 (NDF by default, quasi-constant step); order=5 is the maximum;"
               " dense output is the current interpolating polynomial. jac as for Radau (finite-difference"
               " Jacobian evaluations counted in nfev, not in scipy's nfev)"),
    MethodInfo(name="LSODA", order=12, adaptive=True, fixed=False, dense=True, dense_order=None,
               embedded_order=None, implicit=True, option_ranges=(("max_order", 1, 12), ("max_order_stiff", 1, 5)),
               notes="ODEPACK LSODA: Adams 1-12 (non-stiff) / BDF 1-5 (stiff), automatic switching; order=12"
               " is the maximum; Nordsieck-array dense output; step counting is per internal step."
               " jac=True passes the analytic Jacobian (used in its BDF phase); otherwise LSODA's internal"
               " finite differences, which call the wrapped field and are counted in nfev. max_order (1-12) and"
               " max_order_stiff (1-5) are ODEPACK's MXORDN and MXORDS, the highest Adams and BDF orders"
               " (scipy.integrate.ode's max_order_ns and max_order_s; solve_ivp's LSODA drops them, so this"
               " adapter sets them in the integrator's iwork before the first step)"),
)

_OPTIONS: dict[str, bool | str] = {
    "rtol": True,
    "atol": True,
    "first_step": True,
    "dtmax": True,  # scipy's max_step
    "t_eval": True,
    "max_steps": True,  # enforced by this adapter (scipy has no step limit)
    "jac": True,  # Radau, BDF, LSODA: the problem's analytic Jacobian (explicit methods refuse jac=True)
    "dt": "scipy.integrate has no fixed-step mode",
    "n_steps": "scipy.integrate has no fixed-step mode",
    "safety": "scipy's step-size controller has a fixed safety factor (SAFETY = 0.9 in scipy.integrate._ivp.rk)",
    "factor_min": "scipy's step-size controller has a fixed minimum factor (MIN_FACTOR = 0.2)",
    "factor_max": "scipy's step-size controller has a fixed maximum factor (MAX_FACTOR = 10)",
    "dtmin": "scipy has no minimum step option: its only floor is 10 ulps of t"
             " ('Required step size is less than spacing between numbers.')",
    "max_order": True,  # LSODA only (MethodInfo.option_ranges): the highest Adams order, MXORDN
    "max_order_stiff": True,  # LSODA only: the highest BDF order, MXORDS
}
#: LSODA's iwork slots of MXORDN and MXORDS (ODEPACK's lsoda.f; scipy.integrate._ode.lsoda.reset)
_LSODA_IWORK = {"max_order": 7, "max_order_stiff": 8}


class _StepBudget(Exception):
    """Raised from the vector field before an attempt that would exceed max_steps."""


class _Field:
    """The problem's vector field on scipy's flat float64 state, counting every call."""

    def __init__(self, f: Any, shape: tuple[int, ...]) -> None:
        self.f = f
        self.shape = shape
        self.nfev = 0
        # attempt budget of the explicit RK methods (None: no check)
        self.n_stages: int | None = None
        self.step_evals = 0
        self.attempts_before = 0
        self.max_attempts: int | None = None
        self.in_step = True  #: False while scipy evaluates dense-output stages

    def __call__(self, t: float, y: np.ndarray) -> np.ndarray:
        if self.in_step and self.n_stages is not None:
            if self.max_attempts is not None and self.step_evals % self.n_stages == 0:
                attempt = self.attempts_before + self.step_evals // self.n_stages + 1
                if attempt > self.max_attempts:
                    raise _StepBudget
            self.step_evals += 1
        self.nfev += 1
        out = self.f(np.float64(t), np.reshape(y, self.shape))
        return np.reshape(np.asarray(out, dtype=np.float64), -1)


def _jacobian(problem: Problem, xp: Any, shape: tuple[int, ...]) -> Any:
    """The problem's analytic Jacobian on scipy's flat state: (n, n), or block diagonal
    (B*n, B*n) for a batch flattened into one system (the samples do not interact)."""
    J = problem.jacobian_field(xp, np.float64)

    def jac(t: float, y: np.ndarray) -> np.ndarray:
        blocks = np.asarray(J(np.float64(t), np.reshape(y, shape)), dtype=np.float64)
        if blocks.ndim == 2:
            return blocks
        n = shape[-1]
        out = np.zeros((blocks.shape[0] * n, blocks.shape[0] * n))
        for i, block in enumerate(blocks):  # a NumPy array owned here, not a differentiated one
            out[i * n:(i + 1) * n, i * n:(i + 1) * n] = block
        return out

    return jac


def _set_lsoda_orders(solver: Any, options: dict[str, Any]) -> None:
    """LSODA's highest Adams (``max_order``) and BDF (``max_order_stiff``) orders: written into
    the integrator's iwork, which scipy allocated for the defaults 12 and 5 (lower orders need
    less work space) and passes to every call (check_options allowed them for LSODA only)."""
    for key, slot in _LSODA_IWORK.items():
        if options.get(key) is not None:
            integrator = solver._lsoda_solver._integrator
            integrator.iwork[slot] = int(options[key])
            setattr(integrator, "max_order_ns" if key == "max_order" else "max_order_s", int(options[key]))


class ScipyBackend(Backend):
    """``scipy.integrate`` explicit and implicit solvers, float64 on the CPU."""

    name = "scipy"
    install_hint = "pip install scipy"

    def _import(self) -> Any:
        return _xp.require("scipy.integrate")

    def _event_adapter(self) -> Any:  # events (issue 12): backends/scipy_events.py
        from . import scipy_events

        return scipy_events

    def capabilities(self) -> Capabilities:
        return Capabilities(
            methods={m.name: m for m in _METHODS},
            dtypes=("float64",),
            devices=("cpu",),
            options=_OPTIONS,
            per_sample=False,
            gradient_modes=(),
            notes="scipy computes in float64 only. Batches (B, n) are flattened into one system (shared step,"
            " RMS error norm over the whole batch). nfev counts every call of the vector field, including"
            " Radau/BDF finite-difference Jacobian columns (not in scipy's own nfev) and DOP853 dense-output"
            " stages. rejected is derived exactly for RK23/RK45/DOP853 (n_stages evaluations per attempt) and"
            " is -1 (unknown) for Radau, BDF and LSODA. max_steps counts attempted steps for the explicit"
            " methods and accepted (internal) steps for Radau, BDF and LSODA. jac=True passes the problem's"
            " analytic Jacobian to Radau, BDF and LSODA (block diagonal for a flattened batch); jac=False or None"
            " leaves scipy's finite differences.",
        )

    def _solve(self, problem: Problem, method: MethodInfo, y0: np.ndarray | None, options: dict[str, Any],
               dtype: str, device: str) -> Solution:
        integrate = _xp.require("scipy.integrate")
        xp = _xp.get_namespace("numpy")
        # y0, t_eval and the numeric options were validated by Backend.solve
        y_init = np.asarray(problem.y0 if y0 is None else y0, dtype=np.float64)
        shape = y_init.shape
        n = problem.n
        batch = 1 if y_init.ndim == 1 else shape[0]
        t0, t1 = problem.t_span
        direction = 1.0 if t1 > t0 else -1.0
        ts = np.asarray(options["t_eval"] if options.get("t_eval") is not None else (t0, t1), dtype=np.float64)

        kwargs: dict[str, Any] = {}
        for key in ("rtol", "atol"):
            if options.get(key) is not None:
                tol = np.asarray(options[key], dtype=np.float64)
                if tol.ndim == 1 and tol.shape[0] == n and batch > 1:
                    tol = np.tile(tol, batch)  # per-component tolerances, repeated for every sample
                kwargs[key] = tol if tol.ndim else float(tol)
        if options.get("first_step") is not None:
            kwargs["first_step"] = float(options["first_step"])
        if options.get("dtmax") is not None:
            kwargs["max_step"] = float(options["dtmax"])
        max_steps = options.get("max_steps")
        if max_steps is not None and (not isinstance(max_steps, (int, np.integer)) or max_steps <= 0):
            raise ValueError(f"max_steps={max_steps!r}, but it must be a positive int")

        field = _Field(problem.vector_field(xp, np.float64), shape)
        if options.get("jac"):
            kwargs["jac"] = _jacobian(problem, xp, shape)
        explicit = method.name in _EXPLICIT
        cls = getattr(integrate, method.name)
        start = time.perf_counter()
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            solver = cls(field, t0, y_init.reshape(-1), t1, **kwargs)
            init_nfev = field.nfev
            _set_lsoda_orders(solver, options)
            if explicit:
                field.n_stages = int(cls.n_stages)
                field.max_attempts = None if max_steps is None else int(max_steps)

            outs = np.full((len(ts), batch * n), np.nan)
            at_start = ts == t0
            outs[at_start] = y_init.reshape(-1)
            next_out = int(np.sum(at_start))
            accepted = 0
            rejected = 0
            rejected_known = explicit
            status = Status.SUCCESS
            message = ""
            while solver.status == "running":
                if not explicit and max_steps is not None and accepted >= max_steps:
                    status = Status.MAX_STEPS
                    break
                field.step_evals = 0
                t_before = solver.t
                field.attempts_before = accepted + rejected
                try:
                    msg = solver.step()
                except _StepBudget:
                    # the solver's t, y are those of the last accepted step
                    rejected += field.step_evals // field.n_stages  # attempts of this step, all rejected
                    status = Status.MAX_STEPS
                    break
                if explicit:
                    attempts, rest = divmod(field.step_evals, field.n_stages)
                    if rest:
                        rejected_known = False  # the closed form does not hold: do not invent a count
                    succeeded = solver.status != "failed"
                    rejected += attempts - (1 if succeeded else 0)
                if solver.status == "failed":
                    message = str(msg)
                    status = Status.DT_UNDERFLOW if "less than spacing" in message else Status.FAILED
                    if method.name == "LSODA":
                        istate = getattr(getattr(getattr(solver, "_lsoda_solver", None), "_integrator", None),
                                         "istate", None)
                        if istate is not None:
                            message += f" (LSODA istate={istate})"
                    break
                accepted += 1
                if solver.t == t_before or not np.all(np.isfinite(solver.y)):
                    # LSODA (scipy 1.17) reports success for steps of size 0 near a singularity and would
                    # loop forever (solve_ivp hangs on y' = y^2): a step that does not advance t is a
                    # step-size underflow; a non-finite state is a blow-up
                    finite = bool(np.all(np.isfinite(solver.y)))
                    status = Status.DT_UNDERFLOW if finite else Status.NONFINITE
                    message = ("the step did not advance t (step size 0)" if finite
                               else "the state became non-finite")
                    break
                # output times inside this step: the step's end exactly, else scipy's dense output
                t_new = solver.t
                lo = next_out
                while next_out < len(ts) and direction * (ts[next_out] - t_new) <= 0:
                    next_out += 1
                if next_out > lo:
                    idx = np.arange(lo, next_out)
                    exact = ts[idx] == t_new
                    if np.any(~exact):
                        field.in_step = False  # DOP853's dense stages are not step attempts
                        vals = solver.dense_output()(ts[idx[~exact]])
                        field.in_step = True
                        outs[idx[~exact]] = np.asarray(vals).T
                    outs[idx[exact]] = solver.y
                if max_steps is not None and explicit and accepted + rejected >= max_steps and solver.status == "running":
                    status = Status.MAX_STEPS
                    break
        wall = time.perf_counter() - start

        if status is Status.SUCCESS and not np.all(np.isfinite(outs)):
            status = Status.NONFINITE
        stats = Stats(nfev=field.nfev, njev=int(getattr(solver, "njev", 0) or 0),
                      nlu=int(getattr(solver, "nlu", 0) or 0), accepted=accepted,
                      rejected=rejected if rejected_known else -1)
        ys = outs.reshape((len(ts),) + shape)
        text = status.value if not message else f"{status.value}: scipy: {message}"
        return Solution(ts=ts, ys=ys, status=status, stats=stats, method=method.name, t_final=float(solver.t),
                        message=text,
                        options={**{k: v for k, v in options.items() if v is not None},
                                 "scipy_kwargs": {k: ("analytic" if k == "jac" else v) for k, v in kwargs.items()},
                                 "scipy_nfev": int(solver.nfev),
                                 "init_nfev": int(init_nfev)},
                        timing={"wall_s": wall, "compile_s": 0.0})
