"""Gradients of SDE solves on a fixed Brownian path (issue 10, "Neural SDEs", Gradients).

``sde_value_and_grad(problem, loss, mode=..., method=..., bm=..., n_steps=...)`` returns
dL/dy0 and dL/dθ of the loss ``L = sum_i sum_paths [w_i . y(t_i) + q/2 |y(t_i)|^2]``
(:class:`~odeverify.gradients.Loss`, summed over the batch of paths) of the solution of an
:class:`~odeverify.problems.sde.SDEProblem` on the Brownian path ``bm``: the *pathwise*
gradient, one realisation of the noise held fixed. Modes (``SDE_GRADIENT_MODES``):

- ``discrete``: reverse-mode AD through :func:`odeverify.integrate.solve_sde` on PyTorch
  and JAX: the exact derivative of the computed solution, for the steps taken.
- ``adjoint``: the stochastic adjoint of Li, Wong, Chen & Duvenaud (AISTATS 2020). For a
  Stratonovich SDE ``dy = f dt + sum_j g_j o dW_j`` the augmented state ``[y, a, a_θ]``
  solves, backward from the last loss time on the *same* path,

      dy   =  f dt              + sum_j g_j                o dW_j
      da   = -a^T df/dy dt      - sum_j a^T dg_j/dy        o dW_j
      da_θ = -a^T df/dθ dt      - sum_j a^T dg_j/dθ        o dW_j

  Stratonovich calculus obeys the ordinary chain rule pathwise, so the backward solve is a
  plain time reversal: in ``s = -t`` the state solves ``dZ = -F(-s, Z) ds + G(-s, Z) o dW~``
  with ``W~(s) = W(-s)``, and a backward step consumes exactly the increment of the forward
  step it undoes (query times are snapped to the forward grid). It is solved by
  :func:`~odeverify.integrate.solve_sde` with a Stratonovich method on the augmented state
  (``adjoint_method``: ``euler_heun`` or ``heun``; general noise, since the augmented
  diffusion couples the noise components), restarting at each earlier loss time with the
  loss cotangent added to ``a`` and ``y`` reset to the stored forward value (as torchsde
  does). ``adjoint_mismatch`` is the worst ``|y_rec - y| / max(1, |y|)`` where each backward
  segment ends (:func:`~odeverify.gradients._spec.reconstruction_mismatch`), as for the ODE
  backsolve. Itô problems are converted to Stratonovich first (drift minus
  ``½ sum_j (dg_j/dy) g_j``, :meth:`SDEProblem.as_calculus`); the forward method must be
  a Stratonovich one. The adjoint's gradient differs from the discrete one by a
  discretisation error that vanishes as the step shrinks (not by round-off).
- ``reversible_heun``: Kidger, Foster, Li & Lyons (NeurIPS 2021): the forward pass keeps
  only the final augmented state ``(y, ŷ, f(ŷ), g(ŷ))``; the backward pass reconstructs each
  earlier state with the exact algebraic inverse (:meth:`SDEStepper.inverse`, the same
  increment) and pulls the cotangent back through one step (one VJP). It equals the
  ``discrete`` gradient of the reversible Heun solve to round-off; ``adjoint_mismatch`` is
  the reconstruction error of y0.

Parameters: every floating entry of ``problem.params`` is differentiable — NumPy float
arrays *and* Python float scalars. SDE problems keep their scalar coefficients (GBM's mu and
sigma, K&P's a) as floats, so here a float scalar becomes a 0-d array of the library (its
gradient a 0-d array); this differs from the ODE modes (:mod:`._common`), where scalars are
constants. The problems' fields are plain arithmetic in their parameters, so a 0-d array
passes through them unchanged. Non-float entries stay constants.

The diffusion part of ``a_θ`` is kept per path (the state is ``(M, 2n + P)``; row ``r``
is driven by path ``r``'s noise, so its ``a^T dg_j/dθ`` must be that path's alone); the
drift part is the batch sum, placed in row 0 (it feeds nothing, so only the sum of the rows
matters). The per-path ``a^T dg_j/dθ`` comes from ``P`` forward-mode products (one per
parameter entry) or from ``M m`` reverse-mode products (one per path and noise column),
whichever is fewer.

Oracles, which share no code with the modes above (only the forward solver and the loss
value): :func:`sde_fd_gradient`, central differences of the NumPy solve on the same path;
:func:`gbm_closed_form_gradient`, the derivatives of GBM's exact solution (Itô and
Stratonovich), which the numerical gradients approach as the step shrinks.

Work: ``nfev_*`` count the drift's evaluations and VJPs/JVPs, ``details["ngev_*"]`` the
diffusion's.
"""
from __future__ import annotations

import dataclasses
import math
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import _xp
from .._registry import Registry
from ..integrate import fixed_grid, solve_sde
from ..problems.sde import SDEProblem
from ..solution import Status
from ..solvers.base import TimeContext
from ..solvers.sde import SDE_METHODS, SDEMethod
from ._common import AUTODIFF_LIBRARIES, DTYPES, Clock, Counter, Setup, array_bytes, stored_memory, to_float64
from ._modes import GradientMode
from ._spec import GradientResult, Loss, mismatch_message, reconstruction_mismatch
from .discrete import _differentiate

#: the gradient modes of SDE solves (a registry of its own: their inputs are an SDEProblem
#: and a Brownian path, not an ODE Problem)
SDE_GRADIENT_MODES: Registry[GradientMode] = Registry("SDE gradient mode")
#: Stratonovich methods the stochastic adjoint's backward solve may use
ADJOINT_METHODS = ("euler_heun", "heun")
#: a loss time this close (relative to the span) to a step boundary is that boundary
_GRID_SNAP = 1e-9


# ----------------------------------------------------------------------------- the Brownian path
class _PathView:
    """A Brownian path as the solves of this module query it: always batched ``(M, m)`` (a
    one-path ``bm`` of shape ``(m,)`` is seen as ``(1, m)``), and for the backward adjoint
    solve time-reversed (``s = -t``, ``W~(s) = W(-s)``). Query times are snapped to the
    forward step grid, so a backward step consumes exactly its forward step's increment."""

    def __init__(self, bm: Any, shape: tuple[int, int], grid: np.ndarray, reverse: bool = False) -> None:
        self.bm, self.shape, self.grid, self.reverse = bm, shape, grid, reverse
        self.t0, self.t1 = (-float(bm.t1), -float(bm.t0)) if reverse else (float(bm.t0), float(bm.t1))
        self._tol = _GRID_SNAP * float(grid[-1] - grid[0])

    def forward_time(self, t: float) -> float:
        u = -float(t) if self.reverse else float(t)
        j = int(np.clip(np.searchsorted(self.grid, u), 1, self.grid.size - 1))
        j = j if abs(self.grid[j] - u) <= abs(self.grid[j - 1] - u) else j - 1
        return float(self.grid[j]) if abs(self.grid[j] - u) <= self._tol else u

    def increment(self, s: float, t: float, like: Any = None) -> Any:
        out = np.reshape(np.asarray(self.bm.increment(self.forward_time(s), self.forward_time(t))), self.shape)
        if like is None:
            return out
        return _xp.namespace(like).asarray(out, dtype=like.dtype, device=_xp.device(like))

    def prefetch(self, ts: Any) -> None:
        if hasattr(self.bm, "prefetch"):
            self.bm.prefetch([self.forward_time(t) for t in np.asarray(ts).reshape(-1)])

    def spec(self) -> dict[str, Any]:
        inner = self.bm.spec() if hasattr(self.bm, "spec") else {}
        return {**inner, "view": "time-reversed" if self.reverse else "forward"}


# ----------------------------------------------------------------------------- setup
@dataclass
class SDESetup:
    """Validated inputs of one SDE gradient computation, in one array library. The batch is
    always ``(M, n)`` inside; ``single`` says the caller gave one path (``y0`` of shape ``(n,)``)."""

    problem: SDEProblem  #: in the calculus of ``method`` (converted if needed)
    converted: bool
    loss: Loss
    library: str
    xp: Any
    dtype: Any
    device: Any
    y0: Any  #: (M, n)
    single: bool
    names: tuple[str, ...]  #: the differentiated parameters (wrt), sorted
    params: dict[str, Any]  #: name -> xp array (0-d for a float scalar)
    const: dict[str, Any]  #: every other parameter (floats not in wrt as xp arrays)
    want_y0: bool
    sde_method: SDEMethod
    method: str
    path: _PathView
    grid: np.ndarray
    n_steps: int
    ts: np.ndarray  #: loss times on the grid
    idx: list[int]  #: grid index of each loss time
    fcount: Counter = dataclasses.field(default_factory=Counter)
    gcount: Counter = dataclasses.field(default_factory=Counter)

    @property
    def counter(self) -> Counter:
        return self.fcount

    @property
    def M(self) -> int:
        return int(self.y0.shape[0])

    @property
    def n(self) -> int:
        return int(self.y0.shape[1])

    @property
    def m(self) -> int:
        return int(self.path.shape[1])

    @property
    def P(self) -> int:
        return int(sum(math.prod(tuple(self.params[k].shape)) for k in self.names))

    def phase(self, name: str) -> None:
        self.fcount.phase = self.gcount.phase = name

    def _bound(self, fun: Any, counter: Counter, p: dict[str, Any] | None) -> Any:
        """``fun(xp, t, y, params)`` as ``(t, y) -> array`` with parameters ``p`` (default: the
        setup's), each call counted."""
        q = {**self.const, **(self.params if p is None else p)}

        def bound(t: Any, y: Any) -> Any:
            counter.add()
            return fun(self.xp, t, y, q)

        return bound

    def drift(self, p: dict[str, Any] | None = None) -> Any:
        return self._bound(self.problem.drift, self.fcount, p)

    def diffusion(self, p: dict[str, Any] | None = None) -> Any:
        return self._bound(self.problem.diffusion, self.gcount, p)

    def solve(self, y0: Any, p: dict[str, Any] | None = None, method: Any = None) -> Any:
        return solve_sde(self.drift(p), self.diffusion(p), y0, self.problem.t_span, bm=self.path,
                         method=self.sde_method if method is None else method, noise=self.problem.noise,
                         calculus=self.problem.calculus, commutative=self.problem.commutative, t_eval=self.ts,
                         n_steps=self.n_steps)

    def stepper(self, p: dict[str, Any] | None = None) -> Any:
        """The bound step rule of ``method`` with the parameters ``p`` (for one-step maps)."""
        return self.sde_method.bind(self.diffusion(p), self.path, noise=self.problem.noise, noise_dim=self.m,
                                    commutative=self.problem.commutative, grid=self.grid)

    def tc(self, t: float) -> TimeContext:
        return TimeContext(xp=self.xp, dtype=self.dtype, device=self.device, per_sample=False, t=t)

    # θ as one flat vector (sorted names), as the ODE modes flatten it
    flat_params = Setup.flat_params
    unflat_params = Setup.unflat_params


def _float_param(value: Any) -> bool:
    if isinstance(value, (bool, np.bool_)):
        return False
    if isinstance(value, (float, np.floating)):
        return True
    return isinstance(value, np.ndarray) and np.issubdtype(value.dtype, np.floating)


def _wrt(wrt: Any, problem: SDEProblem, floats: list[str]) -> tuple[bool, tuple[str, ...]]:
    """(differentiate y0?, parameter names) from ``wrt``."""
    if isinstance(wrt, str):
        if wrt == "all":
            return True, tuple(sorted(floats))
        if wrt == "y0":
            return True, ()
        items: list[str] = ["params"] if wrt == "params" else [wrt]
    elif isinstance(wrt, (list, tuple)) and wrt and all(isinstance(w, str) for w in wrt):
        items = list(wrt)
    else:
        raise ValueError(f"wrt={wrt!r}, but it must be 'all', 'y0', 'params', a parameter name or a non-empty list"
                         " of them")
    want_y0 = "y0" in items
    names: set[str] = set()
    for item in items:
        if item == "y0":
            continue
        if item == "params":
            if not floats:
                raise ValueError(f"wrt={wrt!r}, but SDE problem {problem.name!r} has no float parameters"
                                 f" (params: {sorted(problem.params) or 'none'}); use wrt='y0'")
            names.update(floats)
        elif item in floats:
            names.add(item)
        else:
            raise ValueError(f"wrt names {item!r}, but SDE problem {problem.name!r} has the float parameters"
                             f" {sorted(floats) or 'none'} (and 'y0')")
    return want_y0, tuple(sorted(names))


def _in_calculus(problem: SDEProblem, calculus: str, who: str) -> tuple[SDEProblem, bool]:
    if problem.calculus == calculus:
        return problem, False
    if problem.correction is None:
        raise ValueError(f"{who} solves the {calculus} form, but SDE problem {problem.name!r} is written in the"
                         f" {problem.calculus} sense and has no Itô-Stratonovich correction to convert it")
    return problem.as_calculus(calculus), True


def _y0_batch(problem: SDEProblem, bm: Any, y0: Any, paths: Any) -> tuple[np.ndarray, bool, tuple[int, int]]:
    """(y0 as (M, n), one path given?, the batched Brownian shape (M, m))."""
    for attr in ("t0", "t1", "shape", "increment"):
        if not hasattr(bm, attr):
            raise TypeError(f"bm={bm!r} is not a Brownian path: it has no {attr!r}"
                            " (use odeverify.brownian.BrownianTree)")
    bshape = tuple(int(v) for v in bm.shape)
    if len(bshape) not in (1, 2) or bshape[-1] != problem.noise_dim:
        raise ValueError(f"bm has shape {bshape}, but SDE problem {problem.name!r} has noise dimension"
                         f" m={problem.noise_dim}: the path must have shape ({problem.noise_dim},) or"
                         f" (M, {problem.noise_dim})")
    if paths is not None and (isinstance(paths, bool) or not isinstance(paths, (int, np.integer)) or paths < 1):
        raise ValueError(f"paths={paths!r}, but it must be a positive int (the batch of Brownian paths)")
    single = len(bshape) == 1
    M = 1 if single else bshape[0]
    if paths is not None and int(paths) != M:
        raise ValueError(f"paths={paths!r}, but bm has shape {bshape}: {M} path(s)")
    if y0 is None:
        arr = problem.y0_batch(M)
    else:
        arr = np.asarray(y0, dtype=np.float64)
        want = (problem.n,) if single else (M, problem.n)
        if arr.shape != want:
            raise ValueError(f"y0 has shape {arr.shape}, but it must be {want} for SDE problem {problem.name!r}"
                             f" on a Brownian path of shape {bshape} (one row per path)")
        arr = arr.reshape(M, problem.n)
    if not np.all(np.isfinite(arr)):
        raise ValueError("y0 contains non-finite values; it must be finite")
    return arr, single, (M, problem.noise_dim)


def _loss_times(loss: Loss, grid: np.ndarray, t_span: tuple[float, float]) -> tuple[np.ndarray, list[int]]:
    ts = np.asarray(loss.t_eval, dtype=np.float64)
    if ts.min() < t_span[0] or ts.max() > t_span[1]:
        raise ValueError(f"loss.t_eval={ts.tolist()} has times outside the problem's t_span={t_span}")
    if np.any(np.diff(ts) <= 0):
        raise ValueError(f"loss.t_eval={ts.tolist()}, but it must be strictly increasing")
    idx = [int(np.argmin(np.abs(grid - t))) for t in ts]
    off = [float(t) for t, j in zip(ts, idx) if abs(grid[j] - t) > _GRID_SNAP * (t_span[1] - t_span[0])]
    if off:
        raise ValueError(f"loss.t_eval has times {off[:4]} between steps of the grid of n_steps={grid.size - 1};"
                         " SDE solutions have no dense output: every loss time must be a step boundary")
    return grid[idx], idx


def prepare_sde(problem: Any, loss: Any, *, mode: str, method: Any, bm: Any, n_steps: Any, library: str,
                dtype: str, y0: Any, paths: Any, wrt: Any, device: Any = None) -> SDESetup:
    """Validate every input (errors name the parameter) and convert it to ``library``."""
    if not isinstance(problem, SDEProblem):
        raise TypeError(f"problem={problem!r}, but it must be an odeverify SDEProblem"
                        " (odeverify.problems.sde.get(name))")
    if not isinstance(loss, Loss):
        raise TypeError(f"loss={loss!r}, but it must be an odeverify.gradients.Loss")
    if library not in AUTODIFF_LIBRARIES:
        if library in _xp.ARRAY_LIBRARIES:
            raise ValueError(f"library={library!r} has no automatic differentiation; SDE gradient modes need one of"
                             f" {', '.join(AUTODIFF_LIBRARIES)} (the NumPy gradient is the finite-difference oracle"
                             " sde_fd_gradient)")
        raise ValueError(f"library={library!r} is not supported; expected one of {', '.join(AUTODIFF_LIBRARIES)}")
    if dtype not in DTYPES:
        raise ValueError(f"dtype={dtype!r}, but it must be one of {', '.join(DTYPES)}")
    if isinstance(n_steps, bool) or not isinstance(n_steps, (int, np.integer)) or n_steps < 1:
        raise ValueError(f"n_steps={n_steps!r}, but it must be a positive int (SDE solves take fixed steps)")
    if not isinstance(method, (str, SDEMethod)):
        raise TypeError(f"method={method!r}, but it must be an SDE method name ({', '.join(SDE_METHODS.names())})")
    sde_method = SDE_METHODS.get(method) if isinstance(method, str) else method
    if mode == "reversible_heun" and not sde_method.reversible:
        raise ValueError(f"method={sde_method.name!r}, but mode 'reversible_heun' inverts the steps of the"
                         " algebraically reversible method: pass method='reversible_heun'")
    if mode == "adjoint" and sde_method.calculus != "stratonovich":
        raise ValueError(f"method={sde_method.name!r} is an {sde_method.calculus} method, but the stochastic adjoint"
                         " is a Stratonovich SDE solved on the same path backward: pass a Stratonovich method"
                         f" ({', '.join(n for n, m in SDE_METHODS.items() if m.calculus == 'stratonovich')});"
                         " Itô problems are converted")
    prob, converted = _in_calculus(problem, sde_method.calculus, f"method {sde_method.name!r}")
    if loss.n != problem.n:
        raise ValueError(f"loss.weights has n={loss.n} columns, but the state of SDE problem {problem.name!r} has"
                         f" n={problem.n}")
    y0_np, single, bshape = _y0_batch(problem, bm, y0, paths)
    t0, t1 = prob.t_span
    if t0 < bm.t0 or t1 > bm.t1:
        raise ValueError(f"the problem's t_span={prob.t_span} is outside the Brownian path's interval"
                         f" [{bm.t0}, {bm.t1}]")
    grid = fixed_grid(t0, t1, None, int(n_steps))
    ts, idx = _loss_times(loss, grid, prob.t_span)
    floats = [k for k, v in prob.params.items() if _float_param(v)]
    want_y0, names = _wrt(wrt, problem, floats)
    xp = _xp.get_namespace(library)
    xdtype = getattr(xp, dtype)

    def conv(v: Any) -> Any:
        return xp.asarray(np.array(v, dtype=np.float64), dtype=xdtype, device=device)

    params = {k: conv(prob.params[k]) for k in names}
    const = {k: (conv(v) if k in floats else v) for k, v in prob.params.items() if k not in names}
    return SDESetup(problem=prob, converted=converted, loss=loss, library=library, xp=xp, dtype=xdtype,
                    device=device, y0=conv(y0_np), single=single, names=names, params=params, const=const,
                    want_y0=want_y0, sde_method=sde_method, method=sde_method.name,
                    path=_PathView(bm, bshape, grid), grid=grid, n_steps=int(n_steps), ts=ts, idx=idx)


# ----------------------------------------------------------------------------- results
def _result(s: SDESetup, mode: str, *, loss: Any, grad_y0: Any, grad_params: dict[str, Any], clock: Clock,
            status: Status = Status.SUCCESS, message: str = "", adjoint_mismatch: float | None = None,
            steps_backward: int = 0, memory: dict[str, Any] | None = None,
            details: dict[str, Any] | None = None, options: dict[str, Any] | None = None) -> GradientResult:
    """The :class:`GradientResult` (NumPy float64 copies; dL/dy0 in the caller's y0 shape, None
    unless asked for); a non-finite gradient of a successful solve becomes NONFINITE."""
    shape = (s.n,) if s.single else (s.M, s.n)
    gy0 = to_float64(grad_y0).reshape(shape) if s.want_y0 and grad_y0 is not None else None
    gp = {k: to_float64(grad_params[k]).reshape(tuple(s.params[k].shape)) for k in s.names}
    if status.ok:
        bad = [f"dL/d{k}" for k, v in ({"y0": gy0} if gy0 is not None else {}).items() if not np.all(np.isfinite(v))]
        bad += [f"dL/d{k}" for k, v in gp.items() if not np.all(np.isfinite(v))]
        if bad:
            status = Status.NONFINITE
            message = (f"the gradient contains NaN or inf in {', '.join(bad)} although the forward solve succeeded:"
                       " the drift or diffusion may not be differentiable along the path")
    info = {"ngev_forward": s.gcount.forward, "ngev_backward": s.gcount.backward, "paths": s.M,
            "calculus": s.problem.calculus,
            "converted": ("the problem was converted to the Stratonovich form (drift - ½ Σ_j (∂g_j/∂y) g_j)"
                          if s.problem.calculus == "stratonovich" else
                          "the problem was converted to the Itô form (drift + ½ Σ_j (∂g_j/∂y) g_j)")
            if s.converted else "", **(details or {})}
    return GradientResult(
        mode=mode, method=s.method, backend="reference", library=s.library, status=status,
        loss=float(to_float64(loss)) if loss is not None else math.nan, grad_y0=gy0, grad_params=gp,
        nfev_forward=s.fcount.forward, nfev_backward=s.fcount.backward, steps_forward=s.n_steps,
        steps_backward=steps_backward, timing=dict(clock.marks), memory=dict(memory or {}),
        adjoint_mismatch=adjoint_mismatch, message=message or status.value, options=dict(options or {}),
        details=info)


def _failed(s: SDESetup, mode: str, status: Status, message: str, clock: Clock, loss: Any = None) -> GradientResult:
    """A failed computation keeps NaN gradients (never zeros) and says why."""
    nan_y0 = np.full((s.M, s.n), np.nan)
    nan_p = {k: np.full(tuple(s.params[k].shape), np.nan) for k in s.names}
    return _result(s, mode, loss=loss, grad_y0=nan_y0, grad_params=nan_p, clock=clock, status=status,
                   message=message)


# ----------------------------------------------------------------------------- discrete
def run_discrete(s: SDESetup, **_: Any) -> GradientResult:
    clock = Clock()
    box: dict[str, Any] = {}

    def loss_of(y0: Any, p: Any) -> Any:
        box["sol"] = solved = s.solve(y0, p)
        clock.mark("forward_s")  # the forward solve (the loss is part of the backward's time)
        return s.loss.value(s.xp, solved.ys)

    L, gy0, gp = _differentiate(s, loss_of)  # through the solve, as the ODE discrete mode
    clock.mark("backward_s")
    sol = box["sol"]
    if not sol.success:
        return _failed(s, "discrete", sol.status, f"forward solve failed: {sol.message}", clock)
    # autodiff traverses every evaluation of the fixed steps: as many as the forward pass made
    s.fcount.backward, s.gcount.backward = s.fcount.forward, s.gcount.forward
    return _result(s, "discrete", loss=L, grad_y0=gy0, grad_params=gp, clock=clock, steps_backward=s.n_steps,
                   memory=stored_memory(s, len(s.ts)),
                   details={"states_in_graph": s.n_steps + 1,
                            "memory_note": "the autodiff graph holds every state and evaluation of every step:"
                                           " measured (PyTorch) in memory['saved_for_backward_bytes']"})


# ----------------------------------------------------------------------------- reversible Heun
class _KeepLastStep:
    """A bound stepper that remembers its last step's result (after a solve: the final
    augmented state); everything else is the stepper's."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.last: Any = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def step(self, *args: Any, **kw: Any) -> Any:
        self.last = self._inner.step(*args, **kw)
        return self.last


class _KeepLast(SDEMethod):
    """``method`` whose bound stepper keeps its last step (``.stepper`` after a solve)."""

    def bind(self, *args: Any, **kw: Any) -> Any:
        stepper = _KeepLastStep(SDEMethod.bind(self, *args, **kw))
        object.__setattr__(self, "stepper", stepper)
        return stepper


def _pack(xp: Any, parts: Any) -> Any:
    return xp.concat([xp.reshape(x, (-1,)) for x in parts])


def _unpack(xp: Any, flat: Any, shapes: list[tuple[int, ...]]) -> list[Any]:
    out, i = [], 0
    for shape in shapes:
        size = math.prod(shape)
        out.append(xp.reshape(flat[i:i + size], shape))
        i += size
    return out


def run_reversible_heun(s: SDESetup, **_: Any) -> GradientResult:
    xp = s.xp
    clock = Clock()
    keep = _KeepLast(**{f.name: getattr(s.sde_method, f.name) for f in dataclasses.fields(SDEMethod)})
    sol = s.solve(s.y0, method=keep)
    clock.mark("forward_s")
    if not sol.success:
        return _failed(s, "reversible_heun", sol.status, f"forward solve failed: {sol.message}", clock)
    last = keep.stepper.last
    state = (last.y1, last.state["pending"][0], last.fsal, last.state["pending"][1])  # (y, ŷ, f(ŷ), g(ŷ)) at t1
    shapes = [tuple(x.shape) for x in state]
    L = s.loss.value(xp, sol.ys)
    cot = s.loss.cotangent(xp, sol.ys)
    cot_at: dict[int, Any] = {}
    for i, k in enumerate(s.idx):
        cot_at[k] = cot[i] if k not in cot_at else cot_at[k] + cot[i]
    s.phase("backward")
    f, inv = s.drift(), s.stepper()
    g = [xp.zeros_like(x) for x in state]
    grads = {k: xp.zeros_like(v) for k, v in s.params.items()}
    for k in range(s.n_steps, 0, -1):
        if k in cot_at:
            g[0] = g[0] + cot_at[k]
        t, t1 = float(s.grid[k - 1]), float(s.grid[k])
        dw = s.path.increment(t, t1, like=s.y0)
        prev = inv.inverse(f, s.tc(t), t, t1, state, dw)  # the augmented state at t_{k-1}, reconstructed

        def step_map(st: Any, pp: Any, t: float = t, t1: float = t1, dw: Any = dw) -> Any:
            parts = _unpack(xp, st, shapes)
            return _pack(xp, s.stepper(pp).advance(s.drift(pp), s.tc(t), t, t1, tuple(parts), dw))

        _, (gs, gp) = _xp.metered_vjp(step_map, (_pack(xp, prev), s.params), _pack(xp, g))
        g = _unpack(xp, gs, shapes)
        for key in grads:
            grads[key] = grads[key] + gp[key]
        state = prev
    if 0 in cot_at:
        g[0] = g[0] + cot_at[0]
    y0_rec = state[0]
    t0 = float(s.grid[0])

    def init_map(yy: Any, pp: Any) -> Any:  # y0 -> (y0, ŷ0 = y0, f(t0, y0), g(t0, y0))
        return _pack(xp, (yy, yy, s.drift(pp)(s.tc(t0).time(t0), yy), s.diffusion(pp)(s.tc(t0).time(t0), yy)))

    _, (gy0, gp) = _xp.metered_vjp(init_map, (y0_rec, s.params), _pack(xp, g))
    for key in grads:
        grads[key] = grads[key] + gp[key]
    clock.mark("backward_s")
    mismatch = reconstruction_mismatch([(_xp.to_numpy(y0_rec), _xp.to_numpy(s.y0))])
    return _result(s, "reversible_heun", loss=L, grad_y0=gy0, grad_params=grads, clock=clock,
                   steps_backward=s.n_steps, adjoint_mismatch=mismatch, message=mismatch_message(mismatch),
                   memory=stored_memory(s, len(state) - 1 + len(s.ts), step_floats=s.grid.size,
                                        extra_bytes=array_bytes(state[-1])),
                   details={"stored_arrays": len(state) + len(s.ts), "reconstruction_error": mismatch,
                            "memory_note": "the final (y, ŷ, f(ŷ), g(ŷ)) and the loss outputs; the step grid is"
                                           " replayed backward (step_record_bytes)"})


# ----------------------------------------------------------------------------- stochastic adjoint
class _AdjointSystem:
    """The augmented Stratonovich SDE ``Z = [y, a, a_θ]`` (shape ``(M, 2n + P)``) in reversed
    time ``s = -t``: drift ``[-f, a f_y, a f_θ]``, diffusion columns ``[g_j, -a ∂g_j/∂y,
    -a ∂g_j/∂θ]`` (general noise, ``(M, 2n + P, m)``)."""

    #: "jvp" or "vjp" forces how the per-path a^T dg_j/dθ is computed (tests compare the two);
    #: None: whichever takes fewer products
    theta_products: str | None = None

    def __init__(self, s: SDESetup) -> None:
        self.s, self.xp = s, s.xp
        self.n, self.P, self.M, self.m = s.n, s.P, s.M, s.m
        self.diagonal = s.problem.noise == "diagonal"
        xp = s.xp
        self.eye = xp.asarray(np.eye(self.m), dtype=s.dtype, device=s.device)
        # forward mode over θ (P products), else reverse mode per path and column (M m products)
        self.use_jvp = self.P <= self.M * self.m if self.theta_products is None else self.theta_products == "jvp"
        self.basis = [self._basis(e) for e in range(self.P)] if self.use_jvp else []

    def _basis(self, e: int) -> dict[str, Any]:
        s = self.s
        flat = np.zeros(self.P)
        flat[e] = 1.0
        return s.unflat_params(s.xp.asarray(flat, dtype=s.dtype, device=s.device))

    def split(self, z: Any) -> tuple[Any, Any]:
        return z[..., :self.n], z[..., self.n:2 * self.n]

    def drift(self, sr: Any, z: Any) -> Any:
        s, xp = self.s, self.xp
        y, a = self.split(z)
        t = -sr
        s.fcount.add()
        f, (fy, fp) = _xp.metered_vjp(lambda yy, pp: s.problem.drift(xp, t, yy, {**s.const, **pp}), (y, s.params), a)
        parts = [-f, fy]
        if self.P:
            # the batch sum of a^T f_θ, in row 0 (only the rows' sum is read)
            row0 = xp.reshape(s.flat_params(fp), (1, self.P))
            parts.append(xp.concat([row0, xp.zeros((self.M - 1, self.P), dtype=s.dtype, device=s.device)], axis=0))
        return xp.concat(parts, axis=-1)

    def _column(self, a: Any, j: int) -> Any:
        """The cotangent on g's output that picks noise column j, weighted by a."""
        return a * self.eye[j] if self.diagonal else a[..., None] * self.eye[j]

    def _contract(self, a: Any, dg: Any) -> Any:
        """``sum_i a_i dg_ij`` for every column j: (M, m)."""
        return a * dg if self.diagonal else self.xp.sum(a[..., None] * dg, axis=-2)

    def diffusion(self, sr: Any, z: Any) -> Any:
        s, xp = self.s, self.xp
        y, a = self.split(z)
        t = -sr

        def gfun(yy: Any, pp: Any) -> Any:
            s.gcount.add()
            return s.problem.diffusion(xp, t, yy, {**s.const, **pp})

        g = gfun(y, s.params)
        gy_block = g[..., :, None] * self.eye if self.diagonal else g  # (M, n, m)
        if self.use_jvp:
            ga = [_xp.metered_vjp(lambda yy: gfun(yy, s.params), (y,), self._column(a, j))[1][0]
                  for j in range(self.m)]
            a_block = -xp.stack(ga, axis=-1)  # (M, n, m)
            th = [self._contract(a, _xp.jvp(lambda pp: gfun(y, pp), (s.params,), (b,))[1]) for b in self.basis]
            parts = [gy_block, a_block] + ([-xp.stack(th, axis=-2)] if th else [])  # (M, P, m)
        else:
            rows_a, rows_th = [], []
            for r in range(self.M):
                cols_a, cols_th = [], []
                for j in range(self.m):
                    _, (gya, gpa) = _xp.metered_vjp(gfun, (y[r:r + 1], s.params), self._column(a[r:r + 1], j))
                    cols_a.append(gya[0])
                    cols_th.append(s.flat_params(gpa))
                rows_a.append(xp.stack(cols_a, axis=-1))
                rows_th.append(xp.stack(cols_th, axis=-1))
            parts = [gy_block, -xp.stack(rows_a, axis=0), -xp.stack(rows_th, axis=0)]
        return xp.concat(parts, axis=-2)


def run_adjoint(s: SDESetup, *, adjoint_method: Any = None, **_: Any) -> GradientResult:
    xp = s.xp
    name = adjoint_method if adjoint_method is not None else (s.method if s.method in ADJOINT_METHODS else "heun")
    if name not in ADJOINT_METHODS:
        raise ValueError(f"adjoint_method={adjoint_method!r}, but the backward Stratonovich solve of the augmented"
                         f" system takes one of {', '.join(ADJOINT_METHODS)}")
    clock = Clock()
    sol = s.solve(s.y0)
    clock.mark("forward_s")
    if not sol.success:
        return _failed(s, "adjoint", sol.status, f"forward solve failed: {sol.message}", clock)
    L = s.loss.value(xp, sol.ys)
    cot = s.loss.cotangent(xp, sol.ys)
    s.phase("backward")
    system = _AdjointSystem(s)
    backward = _PathView(s.path.bm, s.path.shape, s.grid, reverse=True)
    a = xp.zeros_like(s.y0)
    ath = xp.zeros((s.M, s.P), dtype=s.dtype, device=s.device)
    pairs, steps_b = [], 0
    for i in range(len(s.ts) - 1, -1, -1):
        a = a + cot[i]
        k_from, k_to = s.idx[i], (s.idx[i - 1] if i > 0 else 0)
        if k_from == k_to:
            continue
        z = xp.concat([sol.ys[i], a, ath], axis=-1)
        bsol = solve_sde(system.drift, system.diffusion, z, (-float(s.grid[k_from]), -float(s.grid[k_to])),
                         bm=backward, method=name, noise="general", calculus="stratonovich", commutative=False,
                         n_steps=k_from - k_to)
        steps_b += k_from - k_to
        if not bsol.success:
            return _failed(s, "adjoint", bsol.status, f"backward (adjoint) solve from t={s.grid[k_from]} to"
                           f" t={s.grid[k_to]} failed: {bsol.message}", clock, loss=L)
        end = bsol.ys[-1]
        target = sol.ys[i - 1] if i > 0 else s.y0
        pairs.append((_xp.to_numpy(end[..., :s.n]), _xp.to_numpy(target)))
        a, ath = end[..., s.n:2 * s.n], end[..., 2 * s.n:]
    clock.mark("backward_s")
    mismatch = reconstruction_mismatch(pairs)
    gp = s.unflat_params(xp.sum(ath, axis=0)) if s.P else {}
    aug = 2 * s.n + s.P
    return _result(s, "adjoint", loss=L, grad_y0=a, grad_params=gp, clock=clock, steps_backward=steps_b,
                   adjoint_mismatch=mismatch, message=mismatch_message(mismatch),
                   memory=stored_memory(s, len(s.ts), step_floats=s.grid.size,
                                        extra_bytes=array_bytes(a) * aug // s.n),  # the augmented state
                   options={"adjoint_method": name},
                   details={"theta_products": "jvp" if system.use_jvp else "vjp per path", "segments": len(pairs)})


# ----------------------------------------------------------------------------- registry and entry point
for _mode in (
    GradientMode(name="discrete", run=run_discrete, libraries=AUTODIFF_LIBRARIES, exact_discrete=True,
                 description="reverse-mode AD through solve_sde on the fixed Brownian path (discretise-then-optimise)",
                 citation="Griewank & Walther, Evaluating Derivatives, 2nd ed., SIAM 2008; pathwise derivatives:"
                          " Glasserman, Monte Carlo Methods in Financial Engineering, Springer 2003, section 7.2",
                 fixed_step=True),
    GradientMode(name="adjoint", run=run_adjoint, libraries=AUTODIFF_LIBRARIES, exact_discrete=False,
                 description="stochastic adjoint: the augmented Stratonovich SDE [y, a, a_theta] solved backward on"
                             " the same Brownian path",
                 citation="X. Li, T.-K. L. Wong, R. T. Q. Chen, D. Duvenaud, Scalable Gradients for Stochastic"
                          " Differential Equations, AISTATS 2020", fixed_step=True, options=("adjoint_method",)),
    GradientMode(name="reversible_heun", run=run_reversible_heun, libraries=AUTODIFF_LIBRARIES,
                 exact_discrete=True,
                 description="reversible Heun: states reconstructed by the exact algebraic inverse on the same"
                             " increments, one VJP per step (discrete gradient, O(1) memory in the state)",
                 citation="P. Kidger, J. Foster, X. Li, T. Lyons, Efficient and Accurate Gradients for Neural SDEs,"
                          " NeurIPS 2021", fixed_step=True),
):
    SDE_GRADIENT_MODES.register(_mode.name, _mode)


def sde_value_and_grad(problem: SDEProblem, loss: Loss, *, mode: str, method: Any, bm: Any, n_steps: int,
                       library: str = "torch", dtype: str = "float64", y0: Any = None, paths: Any = None,
                       wrt: Any = "all", adjoint_method: Any = None, device: Any = None) -> GradientResult:
    """The loss of an SDE solve on the Brownian path ``bm`` and its pathwise gradient.

    Parameters
    ----------
    problem : SDEProblem
    loss : Loss
        ``L = sum_i sum_paths [w_i . y(t_i) + q/2 |y(t_i)|^2]``; every loss time must be a
        step boundary of the grid of ``n_steps`` equal steps over ``problem.t_span``.
    mode : str
        A name in ``SDE_GRADIENT_MODES``: discrete, adjoint, reversible_heun.
    method : str or SDEMethod
        The forward solve's method (``SDE_METHODS``). A problem written in the other calculus
        is converted to the method's (``SDEProblem.as_calculus``). ``adjoint`` needs a
        Stratonovich method, ``reversible_heun`` the method of that name.
    bm : BrownianTree
        Shape ``(M, m)`` for a batch of ``M`` paths (``y0`` of shape ``(M, n)``) or ``(m,)``
        for one (``y0`` of shape ``(n,)``).
    n_steps : int
        Fixed steps over ``problem.t_span``.
    library : {"torch", "jax"}; dtype : {"float64", "float32"}
        ("numpy" has no automatic differentiation: use :func:`sde_fd_gradient`.)
    y0 : array, optional
        Default: ``problem.y0`` on every path. ``paths``: the batch size, checked against ``bm``.
    wrt : "all", "y0", "params", a parameter name, or a list of them
        What to differentiate (the float parameters, scalars included, and/or y0).
    adjoint_method : {"euler_heun", "heun"}, optional
        ``adjoint`` mode: the backward solve's method (default: the forward method if it is
        one of these, else heun).

    Returns
    -------
    GradientResult
        ``grad_y0`` of y0's shape (None unless asked for), ``grad_params`` for each name in
        ``wrt`` (a 0-d array for a scalar), ``adjoint_mismatch`` for adjoint and
        reversible_heun; a failed solve keeps NaN gradients and its status.
    """
    if not isinstance(mode, str):
        raise TypeError(f"mode={mode!r}, but it must be an SDE gradient mode name (str)")
    gm = SDE_GRADIENT_MODES.get(mode)
    s = prepare_sde(problem, loss, mode=gm.name, method=method, bm=bm, n_steps=n_steps, library=library,
                    dtype=dtype, y0=y0, paths=paths, wrt=wrt, device=device)
    options = {}
    if adjoint_method is not None:
        if "adjoint_method" in gm.options:
            options["adjoint_method"] = adjoint_method
        else:
            warnings.warn(f"mode {mode!r} ignores the option adjoint_method", stacklevel=2)
    # bad input raises ValueError/TypeError (naming the parameter); a library's failure is a status
    with _xp.saved_tensor_bytes(library) as meter:
        try:
            res = gm.run(s, **options)
        except (ArithmeticError, RuntimeError, np.linalg.LinAlgError) as exc:
            res = _failed(s, gm.name, Status.FAILED, f"{type(exc).__name__}: {exc}", Clock())
    res.memory.update(saved_for_backward_bytes=meter.total_bytes, saved_for_backward_peak_bytes=meter.peak_bytes)
    if meter.reason:
        res.details["saved_for_backward_reason"] = meter.reason
    return res


# ----------------------------------------------------------------------------- oracles
# They share no code with the modes above: only the forward solver (solve_sde, in NumPy) and
# the loss value, which define what is being differentiated.
def _oracle_inputs(problem: Any, loss: Any, bm: Any, y0: Any) -> tuple[np.ndarray, dict[str, Any]]:
    if not isinstance(problem, SDEProblem):
        raise TypeError(f"problem={problem!r}, but it must be an odeverify SDEProblem")
    if not isinstance(loss, Loss) or loss.n != problem.n:
        raise ValueError(f"loss={loss!r}, but it must be an odeverify.gradients.Loss with n={problem.n} columns")
    shape = tuple(int(v) for v in bm.shape)
    y = (np.asarray(problem.y0, dtype=np.float64) if len(shape) == 1 else problem.y0_batch(shape[0])) \
        if y0 is None else np.array(y0, dtype=np.float64)
    want = (problem.n,) if len(shape) == 1 else (shape[0], problem.n)
    if y.shape != want:
        raise ValueError(f"y0 has shape {y.shape}, but it must be {want} for a Brownian path of shape {shape}")
    floats = {k: np.array(v, dtype=np.float64) for k, v in problem.params.items()
              if not isinstance(v, (bool, np.bool_)) and (isinstance(v, (float, np.floating)) or (
                  isinstance(v, np.ndarray) and np.issubdtype(v.dtype, np.floating)))}
    return y, floats


def sde_fd_gradient(problem: SDEProblem, loss: Loss, *, method: Any, bm: Any, n_steps: int, y0: Any = None,
                    eps: float = 1e-6) -> GradientResult:
    """The pathwise gradient by central finite differences of the NumPy solve on the same path.

    Every entry ``x`` of y0 and of each float parameter (scalars as 0-d arrays) is moved by
    ``± eps max(1, |x|)`` and the solve repeated on ``bm``: the derivative of the computed
    solution to ``O(eps^2)`` plus the round-off ``~1e-16 |L| / eps``. A problem in the other
    calculus than ``method``'s is converted (``SDEProblem.as_calculus``), as the modes do.
    """
    y, floats = _oracle_inputs(problem, loss, bm, y0)
    sde_method = SDE_METHODS.get(method) if isinstance(method, str) else method
    prob = problem if problem.calculus == sde_method.calculus else problem.as_calculus(sde_method.calculus)
    if not (isinstance(eps, float) and 0 < eps < 1):
        raise ValueError(f"eps={eps!r}, but it must be a float in (0, 1)")
    base = {**prob.params, **floats}

    def value(yy: np.ndarray, pp: dict[str, Any]) -> float:
        q = {**base, **pp}
        sol = solve_sde(lambda t, z: prob.drift(np, t, z, q), lambda t, z: prob.diffusion(np, t, z, q), yy,
                        prob.t_span, bm=bm, method=sde_method, noise=prob.noise, calculus=prob.calculus,
                        commutative=prob.commutative, t_eval=loss.t_eval, n_steps=n_steps)
        if not sol.success:
            raise ArithmeticError(f"the finite-difference solve failed: {sol.message}")
        return loss.value_numpy(sol.ys)

    def central(x: np.ndarray, at: Any) -> np.ndarray:
        out = np.zeros(x.shape)
        for e in np.ndindex(x.shape):
            step = eps * max(1.0, abs(float(x[e])))
            hi, lo = x.copy(), x.copy()
            hi[e] += step
            lo[e] -= step
            out[e] = (at(hi) - at(lo)) / (2 * step)
        return out

    gy0 = central(y, lambda yy: value(yy, {}))
    gp = {k: central(v, lambda vv, k=k: value(y, {k: vv})) for k, v in sorted(floats.items())}
    return GradientResult(mode="finite_difference", method=sde_method.name, backend="oracle", library="numpy",
                          status=Status.SUCCESS, loss=value(y, {}), grad_y0=gy0, grad_params=gp,
                          steps_forward=int(n_steps), options={"eps": eps})


#: problems with a closed-form pathwise gradient (the base name: a problem converted to the
#: other calculus, "gbm_ito[stratonovich]", is the same process)
CLOSED_FORM_PROBLEMS = ("gbm_ito", "gbm_stratonovich", "kp_cubic")


def sde_closed_form_gradient(problem: SDEProblem, loss: Loss, *, bm: Any, y0: Any = None) -> GradientResult:
    """The exact pathwise gradient where the solution is a closed form in ``W = W_t - W_t0``:

    - geometric Brownian motion, ``X_t = X0 exp(r (t - t0) + sigma W)`` with ``r = mu -
      sigma^2/2`` (``gbm_ito``) or ``mu`` (``gbm_stratonovich``): ``dX_t/dX0 = X_t / X0``,
      ``dX_t/dmu = (t - t0) X_t``, ``dX_t/dsigma = (W - sigma (t - t0)) X_t`` (Itô) or
      ``W X_t`` (Stratonovich);
    - ``kp_cubic``, ``X_t = tanh(a W + artanh X0)``: ``dX_t/dX0 = (1 - X_t^2) / (1 - X0^2)``,
      ``dX_t/da = (1 - X_t^2) W``;

    chained with ``dL/dX(t_i) = w_i + q X(t_i)``, path by path. These are the exact
    solution's derivatives, which the numerical gradients approach as the step shrinks (at
    the strong order of the method, the loss being smooth)."""
    base = problem.name.split("[")[0]
    if base not in CLOSED_FORM_PROBLEMS:
        raise ValueError(f"problem={problem.name!r}, but closed-form gradients are known for"
                         f" {', '.join(CLOSED_FORM_PROBLEMS)}")
    y, _ = _oracle_inputs(problem, loss, bm, y0)
    p = {k: float(v) for k, v in problem.params.items()}
    t0 = problem.t_span[0]
    ts = np.asarray(loss.t_eval, dtype=np.float64)
    w = (np.asarray(bm.values(ts)) - np.asarray(bm(t0))[None]).reshape((ts.size,) + y.shape)
    dt = (ts - t0).reshape((-1,) + (1,) * y.ndim)
    if base == "kp_cubic":
        x = np.tanh(p["a"] * w + np.arctanh(y)[None])
        dx_dy0 = (1.0 - x * x) / (1.0 - y * y)[None]
        dx_dp = {"a": (1.0 - x * x) * w}
    else:
        ito = base == "gbm_ito"
        x = y[None] * np.exp((p["mu"] - (0.5 * p["sigma"] ** 2 if ito else 0.0)) * dt + p["sigma"] * w)
        dx_dy0 = x / y[None]
        dx_dp = {"mu": dt * x, "sigma": ((w - p["sigma"] * dt) if ito else w) * x}
    cot = loss.weights.reshape((ts.size,) + (1,) * (y.ndim - 1) + (problem.n,)) + loss.quadratic * x
    return GradientResult(
        mode="closed_form", method="exact", backend="oracle", library="numpy", status=Status.SUCCESS,
        loss=loss.value_numpy(x), grad_y0=np.sum(cot * dx_dy0, axis=0),
        grad_params={k: np.asarray(np.sum(cot * v)) for k, v in sorted(dx_dp.items())})
