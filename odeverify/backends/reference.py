"""The reference integrator as a backend (NumPy, PyTorch or JAX arrays)."""
from __future__ import annotations

from typing import Any

import numpy as np

from .. import _xp
from ..control import PIController
from ..integrate import solve, solve_sde
from ..problems import Problem
from ..solution import Solution
from ..solvers import SOLVERS
from ..solvers.sde import SDE_METHODS
from .base import Backend, Capabilities, MethodInfo, UnsupportedOption


class ReferenceBackend(Backend):
    """odeverify's own integrator; every option is honoured."""

    def __init__(self, library: str = "numpy") -> None:
        if library not in _xp.ARRAY_LIBRARIES:
            raise ValueError(f"library={library!r}; expected one of {', '.join(_xp.ARRAY_LIBRARIES)}")
        self.library = library
        self.name = "reference" if library == "numpy" else f"reference-{library}"
        self.install_hint = {"numpy": "", "torch": "pip install 'odeverify[torch]'",
                             "jax": "pip install 'odeverify[jax]'",
                             "array_api_strict": "pip install 'odeverify[test]'"}[library]

    def _import(self) -> Any:
        return _xp.get_namespace(self.library)

    def _event_adapter(self) -> Any:  # events (issue 12): backends/reference_events.py
        from . import reference_events

        return reference_events

    def capabilities(self) -> Capabilities:
        methods = {}
        for name, s in SOLVERS.items():
            # a variable-order method (BDF) is adaptive only: no fixed-step order, no single error order
            variable = getattr(s, "variable_order", False)
            methods[name] = MethodInfo(name=name, order=s.order, adaptive=bool(s.adaptive), fixed=not variable,
                                       dense=True, dense_order=s.dense_order, embedded_order=s.embedded_order,
                                       tableau=None if variable else name,
                                       error_order=s.error_order if s.adaptive and not variable else None,
                                       implicit=bool(getattr(s, "implicit", False)),
                                       option_ranges=(("max_order", 1, s.max_order),) if variable else ())
        modes, discrete = _gradient_modes(self.library)
        sde_modes, sde_discrete = _sde_gradient_modes(self._sde_gradient_library())
        return Capabilities(methods=methods, dtypes=("float64", "float32"), devices=("cpu",),
                            options={"max_order": True,
                                     "max_order_stiff": "no reference method switches between a non-stiff and"
                                                        " a stiff formula (bdf takes max_order)"},
                            per_sample=True, gradient_modes=modes, discrete_gradient_modes=discrete,
                            sde_methods=dict(SDE_METHODS.items()), sde_gradient_modes=sde_modes,
                            sde_discrete_gradient_modes=sde_discrete,
                            notes="batch='shared' (default) or 'per-sample'; per_sample refers to the latter;"
                                  " gradient modes (odeverify.gradients) on the PyTorch and JAX libraries")

    def _solve_sde(self, problem: Any, method: Any, bm: Any, y0: np.ndarray, options: dict[str, Any], dtype: str,
                   device: str) -> Solution:
        xp = _xp.get_namespace(self.library)
        if self.library == "jax":
            self._jax_cache()
        dt_ = getattr(xp, dtype)
        sol = solve_sde(problem.drift_field(xp, dt_), problem.diffusion_field(xp, dt_), xp.asarray(y0, dtype=dt_),
                        problem.t_span, bm=bm, method=SDE_METHODS.get(method.name), noise=problem.noise,
                        calculus=problem.calculus, commutative=problem.commutative, t_eval=options.get("t_eval"),
                        dt=options.get("dt"), n_steps=options.get("n_steps"))
        sol.ys = np.asarray(_xp.to_numpy(sol.ys), dtype=np.float64) if self.library != "numpy" else sol.ys
        return sol

    def _sde_gradient_library(self) -> str | None:
        """The library of the SDE gradient modes: this backend's where it differentiates (torch,
        jax), PyTorch for the NumPy reference (when installed), else None."""
        from ..gradients._common import AUTODIFF_LIBRARIES

        if self.library in AUTODIFF_LIBRARIES:
            return self.library
        return "torch" if self.library == "numpy" and _xp.available("torch") else None

    def _sde_gradient(self, problem: Any, method: Any, mode: str, loss: Any, bm: Any, y0: np.ndarray, n_steps: int,
                      options: dict[str, Any], dtype: str, device: str) -> Any:
        """``odeverify.gradients.sde.sde_value_and_grad`` on this backend's library (PyTorch for
        the NumPy reference)."""
        from ..gradients.sde import ADJOINT_METHODS, sde_value_and_grad

        if mode == "reversible_heun" and not method.reversible:
            raise UnsupportedOption(f"{self.name} SDE gradient mode 'reversible_heun' inverts the steps of an"
                                    f" algebraically reversible method; {method.name!r} is not one (use"
                                    " method 'reversible_heun')")
        if mode == "adjoint" and method.calculus != "stratonovich":
            raise UnsupportedOption(f"{self.name} SDE gradient mode 'adjoint' solves the Stratonovich adjoint on the"
                                    f" same path; {method.name!r} is an {method.calculus} method (use a Stratonovich"
                                    " method on the problem's Stratonovich form)")
        chosen = options.get("adjoint_method")
        if chosen is not None and (mode != "adjoint" or chosen not in ADJOINT_METHODS):
            raise UnsupportedOption(f"{self.name} cannot honour adjoint_method={chosen!r}: only mode 'adjoint' takes"
                                    f" it, one of {', '.join(ADJOINT_METHODS)}")
        library = self._sde_gradient_library()
        self._jax_cache()
        res = sde_value_and_grad(problem, loss, mode=mode, method=method.name, bm=bm, n_steps=n_steps,
                                 library=library, dtype=dtype, y0=y0, wrt=options.get("wrt") or "all",
                                 adjoint_method=options.get("adjoint_method"))
        res.backend = self.name
        return res

    def _gradient(self, problem: Problem, method: MethodInfo, mode: str, loss: Any, y0: np.ndarray | None,
                  options: dict[str, Any], dtype: str, device: str) -> Any:
        self._jax_cache()
        return _reference_gradient(self.library, problem, method, mode, loss, y0, options, dtype)

    def _cde_adapter(self) -> Any:
        """CDEs through the one loop on the knots (``backends/reference_cde.py``)."""
        from . import reference_cde

        return reference_cde

    def _jax_cache(self) -> None:
        """On JAX, compiled steps persist across runs in odeverify's JAX compilation cache
        (``backends/_jax_cache.py``)."""
        if self.library == "jax":
            from ._jax_cache import enable

            enable()

    def _solve(self, problem: Problem, method: MethodInfo, y0: np.ndarray | None, options: dict[str, Any],
               dtype: str, device: str) -> Solution:
        self._jax_cache()
        xp = _xp.get_namespace(self.library)
        dt = getattr(xp, dtype)
        f = problem.vector_field(xp, dt)
        y = problem.y0_array(xp, dt) if y0 is None else xp.asarray(y0, dtype=dt)
        ctrl_keys = {"safety": "safety", "factor_min": "factor_min", "factor_max": "factor_max"}
        ctrl_kwargs = {v: options.pop(k) for k, v in ctrl_keys.items() if options.get(k) is not None}
        for k in ctrl_keys:
            options.pop(k, None)
        controller = PIController(**ctrl_kwargs) if ctrl_kwargs else None
        # jac: True or None -> the problem's analytic Jacobian where it has one; False -> the
        # integrator's own (automatic differentiation on PyTorch/JAX, finite differences on NumPy)
        use_jac = options.pop("jac", None)
        max_order = options.pop("max_order", None)
        options.pop("max_order_stiff", None)  # refused by check_options: no reference method takes it
        kwargs = {k: v for k, v in options.items() if v is not None}
        solver: Any = method.name
        if max_order is not None:  # a variable-order method limited to max_order (check_options: bdf only)
            base = SOLVERS.get(method.name)
            solver = type(base)(max_order=int(max_order), ndf=base.ndf, name=method.name)
        if (use_jac is not False and getattr(SOLVERS.get(method.name), "implicit", False)
                and getattr(problem, "jac", None) is not None):
            kwargs["jac"] = problem.jacobian_field(xp, dt)
        return solve(f, y, problem.t_span, method=solver, controller=controller, **kwargs)


def _gradient_modes(library: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The reference gradient modes of ``library`` (and which are discrete), plus
    ``backsolve_seminorm`` (backsolve with the seminorm), named as the peers name theirs."""
    from ..gradients import GRADIENT_MODES

    modes = [name for name, gm in GRADIENT_MODES.items() if library in gm.libraries]
    discrete = tuple(name for name in modes if GRADIENT_MODES.get(name).exact_discrete)
    if "backsolve" in modes:
        modes.append("backsolve_seminorm")
    return tuple(modes), discrete


def _sde_gradient_modes(library: str | None) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The SDE gradient modes (``odeverify.gradients.sde``) on ``library``, and the discrete ones."""
    if library is None:
        return (), ()
    from ..gradients.sde import SDE_GRADIENT_MODES

    modes = tuple(name for name, gm in SDE_GRADIENT_MODES.items() if library in gm.libraries)
    return modes, tuple(name for name in modes if SDE_GRADIENT_MODES.get(name).exact_discrete)


def _reference_gradient(library: str, problem: Problem, method: MethodInfo, mode: str, loss: Any,
                        y0: np.ndarray | None, options: dict[str, Any], dtype: str) -> Any:
    """``odeverify.gradients.value_and_grad``, keeping the part of the gradient ``wrt`` asks for."""
    from ..gradients import value_and_grad

    seminorm = mode == "backsolve_seminorm"
    kwargs = {k: options[k] for k in ("rtol", "atol", "dt", "n_steps", "max_steps", "adjoint_rtol", "adjoint_atol")
              if options.get(k) is not None}
    res = value_and_grad(problem, loss, mode="backsolve" if seminorm else mode, method=method.name, library=library,
                         dtype=dtype, y0=y0, seminorm=seminorm, **kwargs)
    res.mode, res.backend = mode, f"reference-{library}"
    wrt = options.get("wrt") or "all"
    if wrt == "y0":
        res.grad_params = {}
    elif wrt == "params":
        res.grad_y0 = None
    return res
