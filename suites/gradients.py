"""Gradients: wall time, peak memory, gradient error and backward work of every gradient mode.

Parameters: ``case`` (``backend:method:mode``: every mode of ``odeverify.gradients.
GRADIENT_MODES`` on the PyTorch reference, and every mode a backend declares in
``Capabilities.gradient_modes``), ``problem`` (Neural-ODE fields), ``device``. The loss is
``Loss.seeded`` on the five fixed output times; forward options as in :mod:`suites.solve`.
A mode or backend gradient that is not there yet is skipped (NotImplementedError in setup).

- ``time_gradient``: CPU time of the forward and backward pass (wall time on a GPU, see
  ``_common.WALL_TIME_DEVICES``), first (compiling) call done in ``setup``.
- ``peakmem_gradient`` (large grid only): peak resident memory of the process over one
  gradient; ``track_saved_bytes`` below is the exact, deterministic memory figure.
- ``track_gradient_error``: scaled max error of dL/dy0 and dL/dθ against an oracle
  independent of the gradient modes (PyTorch autograd through a fixed-step DOP853 solve,
  128 steps per unit time); ``track_nfev_backward``: vector-field evaluations (or their
  VJPs/JVPs) of the backward pass. Both deterministic, lower is better.
- the work counters beside the timing (``GradientResult``): ``track_nfev_forward``,
  ``track_steps_forward``, ``track_steps_backward``, ``track_saved_bytes`` (every distinct
  tensor PyTorch autograd saved for backward) and ``track_saved_peak_bytes`` (the most held at
  once); the byte counts are n/a where the backend does not measure them (JAX).

The small grid takes every mode of the PyTorch reference and one mode of each other backend
(its adjoint: diffrax's compile and trace of each mode took 9-31 s per process, and asv makes
one process per row, round and commit); the large grid takes every declared mode.
"""
from __future__ import annotations

import itertools

from ._common import CpuTimed, choose_timer, gradient_values, lookup, warmed_gradient
from ._grid import LARGE, load

_WARM: dict = {}

GRADIENT = (load()["gradient"], load()["gradient_problems"], load()["devices"])
PARAM_NAMES = ("case", "problem", "device")


class TimeGradient(CpuTimed):
    params = GRADIENT
    param_names = PARAM_NAMES
    timeout = 300

    def setup(self, case: str, problem: str, device: str) -> None:
        choose_timer(self, device)
        self.case = warmed_gradient(case, problem, device, _WARM)

    def time_gradient(self, case: str, problem: str, device: str) -> None:
        self.case.run_synchronized()

    if LARGE:  # whole-process memory, imports dominate; track_saved_bytes is the exact figure
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

    # --- work counters (GradientResult): what the timing should be proportional to ----------
    def track_nfev_forward(self, table: dict, case: str, problem: str, device: str) -> float:
        """Evaluations of the vector field in the forward pass."""
        return lookup(table, (case, problem, device), "nfev_forward")

    track_nfev_forward.unit = "evaluations"

    def track_steps_forward(self, table: dict, case: str, problem: str, device: str) -> float:
        """Steps of the forward solve."""
        return lookup(table, (case, problem, device), "steps_forward")

    track_steps_forward.unit = "steps"

    def track_steps_backward(self, table: dict, case: str, problem: str, device: str) -> float:
        """Steps of the backward (adjoint) solve; 0 for modes that replay the forward graph."""
        return lookup(table, (case, problem, device), "steps_backward")

    track_steps_backward.unit = "steps"

    def track_saved_bytes(self, table: dict, case: str, problem: str, device: str) -> float:
        """Bytes of every distinct tensor PyTorch autograd saved for backward; n/a on JAX."""
        return lookup(table, (case, problem, device), "saved_bytes")

    track_saved_bytes.unit = "bytes"

    def track_saved_peak_bytes(self, table: dict, case: str, problem: str, device: str) -> float:
        """The most bytes saved for backward held at one time; n/a on JAX."""
        return lookup(table, (case, problem, device), "saved_peak_bytes")

    track_saved_peak_bytes.unit = "bytes"
