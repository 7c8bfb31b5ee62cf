"""Gradient modes (L4): every way a Neural ODE is differentiated, as a reference.

The contract (a loss as data, one result type) is in :mod:`._spec`.
"""
from ._spec import GradientResult, Loss

__all__ = ["GradientResult", "Loss"]
