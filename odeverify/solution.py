"""The result of a solve: one ``Solution`` type with uniform statistics for every method and backend."""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

import numpy as np


class Status(enum.Enum):
    """How a solve ended. The value is the message a user reads."""

    SUCCESS = "the solver reached the end of the interval"
    MAX_STEPS = "the maximum number of steps (max_steps) was reached before the end of the interval"
    DT_UNDERFLOW = "the step size fell below dtmin (or below round-off relative to t): step-size underflow"
    NONFINITE = "the state became non-finite (NaN or inf): the solution blew up"
    NEWTON_FAILED = ("the Newton iteration of an implicit method did not converge (divergence or a singular"
                     " iteration matrix) and the step could not be reduced further")
    FAILED = "the backend raised an error"
    UNAVAILABLE = "the backend is not installed"
    #: a terminal event ended the solve before t1 (a success: the solve did what was asked)
    EVENT = "a terminal event ended the solve"

    @property
    def ok(self) -> bool:
        return self is Status.SUCCESS or self is Status.EVENT

    @property
    def code(self) -> str:
        return self.name.lower()


@dataclass
class Stats:
    """Work counters, counted in one place.

    ``nfev`` counts calls of the vector field (each call evaluates the whole batch),
    ``accepted``/``rejected`` count steps. In per-sample mode they are totals over the batch
    and ``sample_accepted``/``sample_rejected`` hold each sample's own counts.
    ``njev``/``nlu`` (Jacobian evaluations, LU factorisations) and ``newton_iters`` (Newton
    iterations of the stage equations, summed over steps) stay 0 for explicit methods. A
    finite-difference Jacobian's evaluations of f count in ``nfev`` too (scipy leaves them out).
    """

    nfev: int = 0
    njev: int = 0
    nlu: int = 0
    newton_iters: int = 0
    accepted: int = 0
    rejected: int = 0
    #: evaluations of an SDE's diffusion (0 for ODEs)
    ngev: int = 0
    sample_accepted: np.ndarray | None = None
    sample_rejected: np.ndarray | None = None

    @property
    def steps(self) -> int:
        return self.accepted + self.rejected

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "nfev": int(self.nfev),
            "njev": int(self.njev),
            "nlu": int(self.nlu),
            "newton_iters": int(self.newton_iters),
            "accepted": int(self.accepted),
            "rejected": int(self.rejected),
        }
        if self.ngev:
            out["ngev"] = int(self.ngev)
        if self.sample_accepted is not None:
            out["sample_accepted"] = [int(v) for v in self.sample_accepted]
            out["sample_rejected"] = [int(v) for v in self.sample_rejected]
        return out


@dataclass
class Solution:
    """Output of :func:`odeverify.solve`.

    ``ts``: NumPy float64 array of the output times, shape ``(T,)``. ``ys``: an array of the
    input's library and dtype, shape ``(T,) + y0.shape``; rows of output times that were not
    reached (a failed solve) are NaN. ``t_final``: the time the solve got to (per sample in
    per-sample mode). ``status``: a :class:`Status`; a failed solve still carries its
    partial solution and statistics.
    """

    ts: np.ndarray
    ys: Any
    status: Status
    stats: Stats
    method: str
    t_final: Any = None
    message: str = ""
    options: dict[str, Any] = field(default_factory=dict)
    #: wall time of the solve and, separately, compilation time (jitted backends), seconds
    timing: dict[str, float] = field(default_factory=dict)
    #: the accepted step boundaries t0, t1, ..., t_final (float64) of a shared-step reference
    #: solve; None where unknown (per-sample mode, other backends). Gradient modes replay them.
    t_steps: np.ndarray | None = None
    #: an SDE solved on the library's own Brownian path (not odeverify's): W at ``ts``, NumPy
    #: float64 of shape ``(T,) + path shape``, so closed forms can be evaluated on that path
    brownian: np.ndarray | None = None
    #: a solve with events: the located event times (float64, in the order they occurred),
    #: the state at each (``(k,) + y0.shape`` in y0's library, from the dense output: it keeps
    #: the autodiff graph), which event each is (an index into ``event_names``); None without events
    t_events: np.ndarray | None = None
    y_events: Any = None
    event_index: np.ndarray | None = None
    event_names: tuple[str, ...] = ()
    #: :func:`odeverify.integrate.solve_with_jumps`: the event times in y0's library, with the
    #: implicit-function-theorem derivative attached (their values are ``t_events``)
    event_times: Any = None

    @property
    def success(self) -> bool:
        return self.status.ok

    def __repr__(self) -> str:
        return (
            f"Solution(method={self.method!r}, status={self.status.code}, ts.shape={self.ts.shape},"
            f" ys.shape={tuple(self.ys.shape)}, nfev={self.stats.nfev},"
            f" accepted={self.stats.accepted}, rejected={self.stats.rejected})"
        )
