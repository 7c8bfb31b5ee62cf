"""Gradient modes (L4): every way a Neural ODE is differentiated, written once on the array
shim and run on PyTorch and JAX.

``value_and_grad(problem, loss, mode=...)`` is the entry point; ``GRADIENT_MODES`` lists the
modes (each declares its libraries, whether it is exact-discrete or continuous, and its
citation). The contract (a loss as data, one result type) is in :mod:`._spec`.
"""
from ._modes import GRADIENT_MODES, GradientMode
from ._spec import GradientResult, Loss
from . import discrete as _discrete  # noqa: E402,F401  (each module registers its modes)
from . import adjoint as _adjoint  # noqa: E402,F401
from . import checkpoint as _checkpoint  # noqa: E402,F401
from . import forward as _forward  # noqa: E402,F401
from . import reversible as _reversible  # noqa: E402,F401
from .api import value_and_grad
from .sde import SDE_GRADIENT_MODES, sde_value_and_grad  # SDE solves: discrete, adjoint, reversible_heun

__all__ = ["GRADIENT_MODES", "GradientMode", "GradientResult", "Loss", "SDE_GRADIENT_MODES", "sde_value_and_grad",
           "value_and_grad"]
