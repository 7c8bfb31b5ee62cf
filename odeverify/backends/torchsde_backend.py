"""torchsde (``sdeint``'s fixed-step solvers) as a backend for SDEs (``Backend.solve_sde``).

torchsde solves SDEs only: ``Capabilities.methods`` is empty (``solve`` names no choices) and
every method is an :class:`~odeverify.solvers.sde.SDEMethod` of ``Capabilities.sde_methods``,
with the strong and weak orders torchsde claims for it (the ``strong_order`` / ``weak_order``
attributes of its solver classes, ``torchsde/_core/methods/*.py``, torchsde 0.2.6).

The problem's drift and diffusion (written against the Array API) are wrapped into a torchsde
SDE object (``noise_type`` and ``sde_type`` from the problem; the shapes of ``g`` are already
torchsde's) and solved by ``torchsde.sdeint(..., dt=h, adaptive=False)`` at the output times
(``t_eval``, else ``t_span``; ``t0`` is prepended when ``t_eval`` starts later, because
torchsde starts at ``ts[0]``). Output times must be step boundaries, as for the reference
(torchsde would otherwise interpolate linearly between steps).

**The Brownian path.** Where the method needs only increments, torchsde is driven by
odeverify's path (``bm``, a :class:`~odeverify.brownian.BrownianTree`) through a subclass of
torchsde's ``BaseBrownian``, so its solutions compare pathwise with the reference's. torchsde
advances time as ``t + dt`` in floating point, so its step ends can be an ulp away from
odeverify's grid ``t0 + k (t1 - t0) / N``; every query time within ``1e-9 (t1 - t0)`` of a grid
point is snapped to it (else the tree would answer an off-grid time: a different draw). When
the accumulated time falls an ulp short of ``t1``, torchsde takes one more step of an ulp
(``base_solver.py``: ``min(curr_t + dt, ts[-1])``); its increment snaps to zero, and it counts
in ``accepted``.

``srk`` (Rößler's SRA1 / SRID2) needs the space-time Lévy area of each step, which odeverify's
path does not carry: it runs on ``torchsde.BrownianInterval(levy_area_approximation=
"space-time", halfway_tree=True)`` with ``entropy`` = the path's seed. The halfway tree makes
the path a function of the entropy alone (torchsde's docstring: otherwise it depends on the
query points), so every step count sees one path. ``Solution.brownian`` then holds W of that
path at the output times (shape ``(T, M, m)``), so closed forms can be evaluated on it.

Counting: ``nfev`` and ``ngev`` are every call of the drift and of the diffusion that torchsde
makes, including the one call of each at ``t0`` with which ``sdeint`` checks shapes
(``_core/sdeint.py``: ``check_contract``) and the diffusion calls of Milstein's autograd term;
``accepted`` is the number of steps (each torchsde step queries the path once).

**Gradients** (:meth:`Backend.sde_gradient`, modes :data:`SDE_GRADIENT_MODES`), pathwise on
odeverify's Brownian path, wrt y0 (every path's row) and the problem's float parameters
(scalars included, as ``odeverify.gradients.sde``), which become ``nn.Parameter`` s of the SDE
module (``torch.nn.ParameterDict``; sdeint_adjoint takes them as ``adjoint_params``); the loss
is :class:`~odeverify.gradients.Loss` on the solution at its times (step boundaries):

- ``backprop``: autograd through ``torchsde.sdeint`` (discrete: the derivative of the computed
  solution, on the same path);
- ``adjoint``: ``torchsde.sdeint_adjoint`` (the stochastic adjoint of Li et al. 2020) with
  torchsde's default adjoint method for the forward method (``adjoint.py``,
  ``_select_default_adjoint_method``: ``midpoint`` for Stratonovich SDEs, ``milstein`` for Itô
  diagonal noise, else ``euler``; ``adjoint_reversible_heun`` for ``reversible_heun``, whose
  backward pass is the exact algebraic inverse), or the ``adjoint_method`` option. torchsde
  queries the same path backward (``ReverseBrownian`` calls ``bm(-tb, -ta)``), so the
  backward steps consume exactly the forward increments (query times snapped to the grid, as
  above). ``adjoint_mismatch``: torchsde resets the reconstructed state to the forward value
  at each output time; the value before the reset is observed (torchsde's ``flat_to_shape`` in
  ``adjoint.py``'s backward, for the duration of the gradient) and compared with the forward
  state (``gradients._spec.reconstruction_mismatch``), as for ODE backsolves.

``srk`` has no gradient here: it runs on torchsde's own Brownian path (Lévy area), not on the
path the oracles use. Counting: ``nfev_*``/``details["ngev_*"]`` are the drift's/diffusion's
calls by phase (backprop's backward traverses every forward evaluation, as the reference's
discrete mode counts); ``steps_*`` the path's queries.
"""
from __future__ import annotations

import time
from typing import Any

import numpy as np

from .. import _xp
from ..gradients._spec import GradientResult, mismatch_message, reconstruction_mismatch
from ..integrate import GRID_SNAP, fixed_grid, snap_to_grid
from ..problems import Problem
from ..problems.sde import SDEProblem
from ..solution import Solution, Stats, Status
from ..solvers.sde import SDEMethod
from .base import Backend, Capabilities, MethodInfo, UnsupportedOption, sde_gradient_params

_SRC = "torchsde 0.2.6, torchsde/_core/methods/"
_ALL = ("additive", "commutative", "general")

#: odeverify method name -> (torchsde method, noise types torchsde accepts for it (the solver
#: class's ``noise_types``), the SDEMethod with torchsde's claims)
_METHODS: dict[str, tuple[str, tuple[str, ...], SDEMethod]] = {
    "euler": ("euler", ("diagonal", "scalar", "additive", "general"), SDEMethod(
        "euler", "ito", strong={"general": 0.5, "commutative": 0.5, "additive": 1.0},
        weak=dict.fromkeys(_ALL, 1.0), rule="euler", reference="euler",
        citation=f"Euler-Maruyama; {_SRC}euler.py (strong_order 1.0 additive else 0.5, weak_order 1.0)",
        notes="the reference's euler step to round-off on the same path")),
    "milstein": ("milstein", ("diagonal", "scalar", "additive"), SDEMethod(
        "milstein", "ito", strong={"commutative": 1.0, "additive": 1.0}, weak={"commutative": 1.0, "additive": 1.0},
        rule="milstein_ito", reference="milstein_ito",
        citation=f"Milstein (Itô); {_SRC}milstein.py (MilsteinIto: strong_order 1.0, weak_order 1.0)",
        notes=("y + f h + g dW + ½ g g' (dW² - h): the reference's milstein_ito up to the derivative: torchsde"
               " (default grad_free=False) takes g' by autograd, the reference a central difference (exact for"
               " g linear or quadratic in y). torchsde refuses general noise even when it commutes. For scalar"
               " noise with n > 1 torchsde's vector-Jacobian product gives (dg/dy)^T g, not (dg/dy) g"
               " (base_sde.py, g_prod_and_gdg_prod_default): equal only for a symmetric dg/dy; on"
               " dX = B X dW with B not symmetric it converges at order ~0.5, not its claimed 1.0"
               " (tests/test_torchsde_backend.py)"))),
    "milstein_strat": ("milstein", ("diagonal", "scalar", "additive"), SDEMethod(
        "milstein_strat", "stratonovich", strong={"commutative": 1.0, "additive": 1.0},
        weak={"commutative": 1.0, "additive": 1.0}, rule="milstein_strat", reference="milstein_strat",
        citation=f"Milstein (Stratonovich); {_SRC}milstein.py (MilsteinStratonovich: strong_order 1.0)",
        notes=("torchsde's method 'milstein' on a Stratonovich SDE: y + f h + g dW + ½ g g' dW², the"
               " reference's milstein_strat up to the derivative (autograd against a central difference); the"
               " same transposed Jacobian as milstein's on scalar noise with n > 1"))),
    "srk": ("srk", ("diagonal", "scalar", "additive"), SDEMethod(
        "srk", "ito", strong={"commutative": 1.5, "additive": 1.5}, weak={"commutative": 1.5, "additive": 1.5},
        rule="srk", order=2,
        citation=("Rößler, SIAM J. Numer. Anal. 48 (2010): SRID2 (diagonal/scalar) and SRA1 (additive); "
                  f"{_SRC}srk.py (strong_order 1.5, weak_order 1.5), tableaus/srid2.py, tableaus/sra1.py"),
        notes=("needs space-time Lévy area: runs on torchsde's BrownianInterval, not on odeverify's path"
               " (Solution.brownian holds W of that path). Without noise: SRID2's drift part is SSPRK3"
               " (order 3), SRA1's is Ralston's (order 2)"))),
    "euler_heun": ("euler_heun", ("diagonal", "scalar", "additive", "general"), SDEMethod(
        "euler_heun", "stratonovich", strong={"general": 0.5, "commutative": 1.0, "additive": 1.0},
        weak=dict.fromkeys(_ALL, 1.0), rule="euler_heun", reference="euler_heun",
        citation=f"{_SRC}euler_heun.py (strong_order 0.5 general else 1.0, weak_order 1.0)",
        notes=("the reference's euler_heun, except that torchsde evaluates the second diffusion at t1"
               " (g(t1, y + g dW)), the reference at t: equal to round-off for a diffusion that does not depend"
               " on t. torchsde's 1.0 is claimed by noise type (diagonal, scalar, additive); for general"
               " noise it claims 0.5 even where the noise commutes"))),
    "heun": ("heun", ("diagonal", "scalar", "additive", "general"), SDEMethod(
        "heun", "stratonovich", strong={"general": 0.5, "commutative": 1.0, "additive": 1.0},
        weak=dict.fromkeys(_ALL, 1.0), rule="heun", order=2, reference="heun",
        citation=("Burrage, Burrage & Tian, Proc. R. Soc. A 460 (2004); "
                  f"{_SRC}heun.py (strong_order 0.5 general else 1.0, weak_order 1.0)"),
        notes=("the reference's heun step to round-off. torchsde's 1.0 is claimed by noise type; for general"
               " noise it claims 0.5 even where the noise commutes"))),
    "midpoint": ("midpoint", ("diagonal", "scalar", "additive", "general"), SDEMethod(
        "midpoint", "stratonovich", strong={"general": 0.5, "commutative": 1.0, "additive": 1.0},
        weak=dict.fromkeys(_ALL, 1.0), rule="midpoint", order=2,
        citation=f"stochastic midpoint; {_SRC}midpoint.py (strong_order 0.5 general else 1.0, weak_order 1.0)",
        notes="no reference rule: y' = y + f h/2 + g dW/2, y1 = y + f(t + h/2, y') h + g(t + h/2, y') dW")),
    "reversible_heun": ("reversible_heun", ("diagonal", "scalar", "additive", "general"), SDEMethod(
        "reversible_heun", "stratonovich", strong={"general": 0.5, "commutative": 0.5, "additive": 1.0},
        weak=dict.fromkeys(_ALL, 1.0), rule="reversible_heun", order=2, reversible=True,
        reference="reversible_heun",
        citation=("Kidger, Foster, Li & Lyons, NeurIPS 2021; "
                  f"{_SRC}reversible_heun.py (strong_order 1.0 additive else 0.5, weak_order 1.0)"),
        notes=("the reference's reversible_heun step to round-off. torchsde's docstring: strong 0.5 in general"
               " and 1.0 for additive noise; strong orders for diagonal/scalar noise and the weak order"
               " 'for the time being unknown' (the reference expects 1.0 for commuting noise)"))),
}

#: SDE gradient modes (``Capabilities.sde_gradient_modes``) and the discrete ones
SDE_GRADIENT_MODES = ("backprop", "adjoint")
SDE_DISCRETE_GRADIENT_MODES = ("backprop",)
#: torchsde methods the ``adjoint_method`` option may name (torchsde 0.2.6 ``settings.METHODS``
#: less ``srk``, which needs a Lévy area; torchsde refuses one that does not fit the adjoint SDE)
ADJOINT_METHODS = ("euler", "milstein", "euler_heun", "heun", "midpoint", "reversible_heun", "adjoint_reversible_heun")

#: relative distance (of the span) within which a query time is snapped to the step grid
_SNAP = GRID_SNAP

_classes: dict[str, Any] = {}


def _torch() -> Any:
    return _xp.require("torch")


def _torchsde() -> Any:
    return _xp.require("torchsde")


def _snapper(grid: np.ndarray) -> Any:
    span = float(grid[-1] - grid[0])

    def snap(t: float) -> float:
        j = int(np.clip(np.searchsorted(grid, t), 1, grid.size - 1))
        best = j if abs(grid[j] - t) <= abs(grid[j - 1] - t) else j - 1
        return float(grid[best]) if abs(grid[best] - t) <= _SNAP * span else t

    return snap


def _brownian_class() -> type:
    """A subclass of torchsde's ``BaseBrownian`` (``torchsde/_brownian/brownian_base.py``) that
    answers ``W(tb) - W(ta)`` from an odeverify path, or delegates to a torchsde path (for the
    Lévy area), with every query time snapped to the step grid; it counts the queries."""
    if "brownian" in _classes:
        return _classes["brownian"]
    torch = _torch()
    base = _torchsde().BaseBrownian

    class SnappedBrownian(base):
        def __init__(self, path: Any, grid: np.ndarray, shape: tuple[int, ...], dtype: Any, device: Any,
                     levy: str) -> None:
            self.path = path
            self.snap = _snapper(grid)
            self.t0 = float(grid[0])
            self._shape = torch.Size(shape)
            self._dtype = dtype
            self._device = device
            self._levy = levy
            self.queries = 0
            self.native = levy != "none"  # a torchsde path (with Lévy area), not odeverify's

        def __call__(self, ta: Any, tb: Any = None, return_U: bool = False, return_A: bool = False) -> Any:
            if tb is None:
                ta, tb = self.t0, ta
            a, b = self.snap(float(ta)), self.snap(float(tb))
            self.queries += 1
            if self.native:
                return self.path(a, b, return_U=return_U, return_A=return_A)
            if return_U or return_A:
                raise ValueError("odeverify's Brownian path carries no Lévy area (return_U/return_A)")
            return torch.as_tensor(self.path.increment(a, b), dtype=self._dtype, device=self._device)

        def __repr__(self) -> str:
            return f"SnappedBrownian({self.path!r})"

        @property
        def dtype(self) -> Any:
            return self._dtype

        @property
        def device(self) -> Any:
            return self._device

        @property
        def shape(self) -> Any:
            return self._shape

        @property
        def levy_area_approximation(self) -> str:
            return self._levy

    _classes["brownian"] = SnappedBrownian
    return SnappedBrownian


class _CountingSDE:
    """The SDE object torchsde takes: ``f``, ``g``, ``noise_type`` and ``sde_type``, with the
    problem's fields called on a 0-d time of the state's dtype, and every call counted."""

    def __init__(self, problem: SDEProblem, xp: Any, dtype: Any, device: Any) -> None:
        self.noise_type = problem.noise
        self.sde_type = problem.calculus
        self._f = problem.drift_field(xp, dtype, device)
        self._g = problem.diffusion_field(xp, dtype, device)
        self._torch = _torch()
        self._dtype = dtype
        self._device = device
        self.nfev = 0
        self.ngev = 0

    def _time(self, t: Any) -> Any:
        return self._torch.full((), float(t), dtype=self._dtype, device=self._device)

    def f(self, t: Any, y: Any) -> Any:
        self.nfev += 1
        return self._f(self._time(t), y)

    def g(self, t: Any, y: Any) -> Any:
        self.ngev += 1
        return self._g(self._time(t), y)


def _module_class() -> type:
    """The SDE as an ``nn.Module`` (``sdeint_adjoint``'s contract): the differentiated float
    parameters are ``nn.Parameter`` s in ``theta``, every other parameter a constant; the drift's
    and the diffusion's calls are counted per phase ("forward", "backward")."""
    if "module" in _classes:
        return _classes["module"]
    torch = _torch()

    class GradientSDE(torch.nn.Module):
        def __init__(self, problem: SDEProblem, names: list[str], dtype: Any, device: Any) -> None:
            super().__init__()
            self.noise_type, self.sde_type = problem.noise, problem.calculus
            self._problem, self._xp, self._dtype, self._device = problem, _xp.get_namespace("torch"), dtype, device
            self.names = list(names)
            self.theta = torch.nn.ParameterDict({k: torch.nn.Parameter(torch.as_tensor(
                np.asarray(problem.params[k], dtype=np.float64), dtype=dtype, device=device)) for k in names})
            self._const = {k: v for k, v in problem.converted_params(self._xp, dtype, device).items()
                           if k not in self.names}
            self.phase = "forward"
            self.calls = {"forward": [0, 0], "backward": [0, 0]}  # [drift, diffusion]

        def _args(self, t: Any) -> tuple[Any, dict[str, Any]]:
            time = torch.full((), float(t), dtype=self._dtype, device=self._device)
            return time, {**self._const, **{k: self.theta[k] for k in self.names}}

        def f(self, t: Any, y: Any) -> Any:
            self.calls[self.phase][0] += 1
            time, params = self._args(t)
            return self._problem.drift(self._xp, time, y, params)

        def g(self, t: Any, y: Any) -> Any:
            self.calls[self.phase][1] += 1
            time, params = self._args(t)
            return self._problem.diffusion(self._xp, time, y, params)

    _classes["module"] = GradientSDE
    return GradientSDE


class _ObservedBackward:
    """For the duration of a ``sdeint_adjoint`` gradient, the state each backward segment
    reconstructs before torchsde resets it to the forward value (``adjoint.py``'s backward
    unpacks the augmented state with ``misc.flat_to_shape`` right before the reset; only that
    module's name is swapped, torchsde's ``misc`` itself is untouched)."""

    def __init__(self) -> None:
        import importlib

        self.module = importlib.import_module("torchsde._core.adjoint")
        self.real = self.module.misc
        self.states: list[Any] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    def flat_to_shape(self, flat: Any, shapes: Any) -> Any:
        out = self.real.flat_to_shape(flat, shapes)
        self.states.append(out[0].detach().to("cpu", _torch().float64).numpy())
        return out

    def __enter__(self) -> _ObservedBackward:
        self.module.misc = self
        return self

    def __exit__(self, *exc: Any) -> None:
        self.module.misc = self.real


def _default_adjoint_method(sde: Any, ts_method: str) -> str:
    """torchsde's own choice (``_select_default_adjoint_method`` of ``torchsde/_core/adjoint.py``)."""
    from torchsde._core.adjoint import _select_default_adjoint_method

    return str(_select_default_adjoint_method(sde, ts_method, None))


def _sde_gradient(problem: SDEProblem, method: SDEMethod, ts_method: str, mode: str, loss: Any, bm: Any,
                  y0: np.ndarray, n_steps: int, options: dict[str, Any], dtype: str, device: str) -> GradientResult:
    torch, torchsde = _torch(), _torchsde()
    t0, t1 = problem.t_span
    grid = fixed_grid(t0, t1, None, n_steps)
    h = (t1 - t0) / n_steps
    ts = snap_to_grid(grid, loss.t_eval)
    run_ts = ts if ts[0] == t0 else np.concatenate([[t0], ts])
    tdtype = getattr(torch, dtype)
    wrt = options.get("wrt") or "all"
    floats = sde_gradient_params(problem)
    names = [] if wrt == "y0" else sorted(floats)
    shape = (y0.shape[0], problem.noise_dim)
    if hasattr(bm, "prefetch"):
        bm.prefetch(grid)
    path = _brownian_class()(bm, grid, shape, tdtype, device, "none")
    sde = _module_class()(problem, names, tdtype, device)
    y = torch.tensor(y0, dtype=tdtype, device=device, requires_grad=wrt != "params")
    params = [sde.theta[k] for k in names]
    leaves = ([y] if wrt != "params" else []) + params
    tts = torch.as_tensor(run_ts, dtype=tdtype, device=device)
    adjoint_method = None
    start = time.perf_counter()
    with _xp.saved_tensor_bytes("torch") as meter:
        with torch.enable_grad():
            if mode == "backprop":
                out = torchsde.sdeint(sde, y, tts, bm=path, method=ts_method, dt=h, adaptive=False)
            else:
                adjoint_method = options.get("adjoint_method") or _default_adjoint_method(sde, ts_method)
                out = torchsde.sdeint_adjoint(sde, y, tts, bm=path, method=ts_method, adjoint_method=adjoint_method,
                                              dt=h, adaptive=False, adjoint_params=params)
            steps_forward = path.queries
            ys = out[1:] if run_ts.size != ts.size else out
            value = loss.value(_xp.get_namespace("torch"), ys)
            forward_s = time.perf_counter() - start
            sde.phase = "backward"
            if mode == "backprop":
                grads = torch.autograd.grad(value, leaves, allow_unused=True)
            else:
                with _ObservedBackward() as seen:
                    grads = torch.autograd.grad(value, leaves, allow_unused=True)
    backward_s = time.perf_counter() - start - forward_s
    grads = [torch.zeros_like(leaf) if g is None else g for g, leaf in zip(grads, leaves)]  # no path: zero
    as_np = [g.detach().to("cpu", torch.float64).numpy() for g in grads]
    grad_y0 = None if wrt == "params" else as_np.pop(0)
    grad_params = {k: g.reshape(floats[k].shape) for k, g in zip(names, as_np)}
    mismatch, steps_backward = None, n_steps
    if mode == "adjoint":
        steps_backward = path.queries - steps_forward
        forward_states = out.detach().to("cpu", torch.float64).numpy()
        # segment i (from run_ts[i] back to run_ts[i-1]), i = T-1 .. 1, ends where the forward state is row i-1
        mismatch = reconstruction_mismatch([(rec, forward_states[len(seen.states) - 1 - k])
                                            for k, rec in enumerate(seen.states)])
    nf, ng = sde.calls["forward"], sde.calls["backward"]
    if mode == "backprop":
        nb = list(nf)  # autograd traverses every forward evaluation
    else:
        nb = list(ng)
    memory = {"saved_for_backward_bytes": meter.total_bytes, "saved_for_backward_peak_bytes": meter.peak_bytes}
    return GradientResult(
        mode=mode, method=method.name, backend="torchsde", library="torch", status=Status.SUCCESS,
        loss=float(value.detach().to("cpu", torch.float64)), grad_y0=grad_y0, grad_params=grad_params,
        nfev_forward=nf[0], nfev_backward=nb[0], steps_forward=steps_forward, steps_backward=steps_backward,
        timing={"forward_s": forward_s, "backward_s": backward_s}, memory=memory, adjoint_mismatch=mismatch,
        message=mismatch_message(mismatch) or "success",
        options={"torchsde_method": ts_method, "dt": h, **({"adjoint_method": adjoint_method} if adjoint_method
                                                           else {})},
        details={"ngev_forward": nf[1], "ngev_backward": nb[1], "paths": int(y0.shape[0]),
                 "calculus": problem.calculus, "brownian": getattr(bm, "spec", dict)()})


def _torchsde_method(problem: SDEProblem, method: SDEMethod) -> str:
    """torchsde's name of ``method``; ``UnsupportedOption`` when torchsde refuses the problem's
    noise type for it."""
    ts_method, noise_types, _ = _METHODS[method.name]
    if problem.noise not in noise_types:
        raise UnsupportedOption(f"torchsde method {ts_method!r} ({method.name}) takes {', '.join(noise_types)}"
                                f" noise, but problem {problem.name!r} has {problem.noise} noise (torchsde"
                                " decides by noise type, not by commutativity)")
    return ts_method


def _output_times(problem: SDEProblem, grid: np.ndarray, t_eval: Any) -> np.ndarray:
    """The output times, each snapped to the step grid (a time between steps raises)."""
    if t_eval is None:
        return np.array(problem.t_span)
    return snap_to_grid(grid, t_eval)


class TorchsdeBackend(Backend):
    """torchsde's fixed-step SDE solvers (``sdeint``), float64 or float32, CPU (and CUDA when
    available); SDEs only (:meth:`solve_sde`)."""

    name = "torchsde"
    install_hint = "pip install 'odeverify[torch]' (installs torchsde)"

    def _import(self) -> Any:
        _torch()
        return _torchsde()

    def capabilities(self) -> Capabilities:
        torch = _torch()
        devices = ("cpu", "cuda") if torch.cuda.is_available() else ("cpu",)
        return Capabilities(methods={}, dtypes=("float64", "float32"), devices=devices,
                            sde_methods={name: entry[2] for name, entry in _METHODS.items()},
                            sde_gradient_modes=SDE_GRADIENT_MODES,
                            sde_discrete_gradient_modes=SDE_DISCRETE_GRADIENT_MODES,
                            notes="SDEs only (solve_sde, fixed step); no ODE methods")

    def _solve(self, problem: Problem, method: MethodInfo, y0: np.ndarray | None, options: dict[str, Any],
               dtype: str, device: str) -> Solution:  # pragma: no cover - capabilities() lists no ODE method
        raise NotImplementedError("torchsde solves SDEs only: use solve_sde")

    def _solve_sde(self, problem: SDEProblem, method: SDEMethod, bm: Any, y0: np.ndarray, options: dict[str, Any],
                   dtype: str, device: str) -> Solution:
        torch, torchsde = _torch(), _torchsde()
        ts_method = _torchsde_method(problem, method)
        t0, t1 = problem.t_span
        n_steps, dt_opt = options.get("n_steps"), options.get("dt")
        grid = fixed_grid(t0, t1, float(dt_opt) if dt_opt is not None else None, n_steps)
        h = (t1 - t0) / n_steps if n_steps is not None else float(dt_opt)
        ts = _output_times(problem, grid, options.get("t_eval"))
        run_ts = ts if ts[0] == t0 else np.concatenate([[t0], ts])
        tdtype = getattr(torch, dtype)
        xp = _xp.get_namespace("torch")
        sde = _CountingSDE(problem, xp, tdtype, device)
        shape = (y0.shape[0], problem.noise_dim)
        levy = "space-time" if ts_method == "srk" else "none"
        seed = int(getattr(bm, "seed", 0))
        if levy == "none":
            path, brownian_info = bm, getattr(bm, "spec", dict)()
            if hasattr(bm, "prefetch"):
                bm.prefetch(grid)  # one vectorised descent for every step end
        else:
            # tol: the halfway tree's resolution (its times are rounded to -log10(tol) decimals)
            path = torchsde.BrownianInterval(t0=t0, t1=t1, size=shape, dtype=tdtype, device=device, entropy=seed,
                                             levy_area_approximation=levy, halfway_tree=True,
                                             tol=1e-12 * max(1.0, abs(t0), abs(t1)))
            brownian_info = {"library": "torchsde.BrownianInterval", "entropy": seed, "halfway_tree": True,
                             "levy_area_approximation": levy, "shape": list(shape)}
        wrapped = _brownian_class()(path, grid, shape, tdtype, device, levy)
        y = torch.as_tensor(y0, dtype=tdtype, device=device)
        with torch.no_grad():
            out = torchsde.sdeint(sde, y, torch.as_tensor(run_ts, dtype=torch.float64, device=device), bm=wrapped,
                                  method=ts_method, dt=h, adaptive=False)
        steps = wrapped.queries
        ys = out.detach().to("cpu", torch.float64).numpy()
        if run_ts.size != ts.size:
            ys = ys[1:]
        brownian = None
        if wrapped.native:
            with torch.no_grad():
                rows = [np.zeros(shape) if t == t0 else path(t0, float(t)).to("cpu", torch.float64).numpy()
                        for t in ts]
            brownian = np.stack(rows)
        status, message, t_final = Status.SUCCESS, "", float(ts[-1])
        finite = np.all(np.isfinite(ys.reshape(ys.shape[0], -1)), axis=1)
        if not np.all(finite):
            first = int(np.argmin(finite))
            ys[first:] = np.nan
            status = Status.NONFINITE
            t_final = float(ts[first - 1]) if first > 0 else float(t0)
            message = (f"the state became non-finite by t={ts[first]} (torchsde steps on: the rows from there are"
                       " NaN)")
        opts = {k: v for k, v in options.items() if v is not None}
        opts.update({"noise": problem.noise, "calculus": method.calculus, "torchsde_method": ts_method, "dt": h,
                     "brownian": brownian_info})
        return Solution(ts=np.asarray(ts, dtype=np.float64), ys=ys, status=status,
                        stats=Stats(nfev=sde.nfev, ngev=sde.ngev, accepted=steps), method=method.name,
                        t_final=t_final, message=message, options=opts, brownian=brownian)

    def _sde_gradient(self, problem: SDEProblem, method: SDEMethod, mode: str, loss: Any, bm: Any, y0: np.ndarray,
                      n_steps: int, options: dict[str, Any], dtype: str, device: str) -> GradientResult:
        ts_method = _torchsde_method(problem, method)
        if ts_method == "srk":
            raise UnsupportedOption("torchsde method 'srk' runs on torchsde's own Brownian path (it needs the"
                                    " space-time Lévy area), so its gradient has no pathwise oracle here")
        chosen = options.get("adjoint_method")
        if chosen is not None and (mode != "adjoint" or chosen not in ADJOINT_METHODS):
            raise UnsupportedOption(f"torchsde cannot honour adjoint_method={chosen!r}: only mode 'adjoint' takes it,"
                                    f" one of {', '.join(ADJOINT_METHODS)}")
        return _sde_gradient(problem, method, ts_method, mode, loss, bm, y0, n_steps, options, dtype, device)


__all__ = ["TorchsdeBackend"]
