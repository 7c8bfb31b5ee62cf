"""Gradients: wall time, peak memory, gradient error and backward work of every gradient mode.

Parameters: ``case`` (``backend:method:mode``: every mode of ``odeverify.gradients.
GRADIENT_MODES`` on the PyTorch reference, and every mode a backend declares in
``Capabilities.gradient_modes``), ``problem`` (Neural-ODE fields), ``device``. The loss is
``Loss.seeded`` on the five fixed output times; forward options as in :mod:`suites.solve`.
A mode or backend gradient that is not there yet is skipped (NotImplementedError in setup).

- ``time_gradient``: forward and backward pass, first (compiling) call done in ``setup``.
- ``peakmem_gradient``: peak resident memory of the process over one gradient.
- ``track_gradient_error``: scaled max error of dL/dy0 and dL/dθ against an oracle
  independent of the gradient modes (PyTorch autograd through a fixed-step DOP853 solve,
  128 steps per unit time); ``track_nfev_backward``: vector-field evaluations (or their
  VJPs/JVPs) of the backward pass. Both deterministic, lower is better.
"""
from __future__ import annotations

import itertools

from ._common import DEVICES, gradient_values, lookup, warmed_gradient
from ._grid import load

_WARM: dict = {}

GRADIENT = (load()["gradient"], load()["gradient_problems"], list(DEVICES))
PARAM_NAMES = ("case", "problem", "device")


class TimeGradient:
    params = GRADIENT
    param_names = PARAM_NAMES
    repeat = (3, 10, 4.0)
    warmup_time = 0.0
    timeout = 300

    def setup(self, case: str, problem: str, device: str) -> None:
        self.case = warmed_gradient(case, problem, device, _WARM)

    def time_gradient(self, case: str, problem: str, device: str) -> None:
        self.case.run_synchronized()

    def peakmem_gradient(self, case: str, problem: str, device: str) -> None:
        self.case.run_synchronized()


class TrackGradient:
    params = GRADIENT
    param_names = PARAM_NAMES
    timeout = 1800

    def setup_cache(self) -> dict:
        oracles: dict = {}
        return {key: gradient_values(*key, oracles) for key in itertools.product(*self.params)}

    setup_cache.timeout = 1800

    def setup(self, table: dict, case: str, problem: str, device: str) -> None:
        lookup(table, (case, problem, device), "grad_error")

    def track_gradient_error(self, table: dict, case: str, problem: str, device: str) -> float:
        """max |g - g_oracle| / max(1, max |g_oracle|) over dL/dy0 and dL/dθ; inf if it failed."""
        return lookup(table, (case, problem, device), "grad_error")

    track_gradient_error.unit = "scaled error"

    def track_nfev_backward(self, table: dict, case: str, problem: str, device: str) -> float:
        """Evaluations of the vector field (or of its VJP/JVP) in the backward pass."""
        return lookup(table, (case, problem, device), "nfev_backward")

    track_nfev_backward.unit = "evaluations"
