"""Forward solves: wall time, peak memory, and the deterministic work and accuracy figures.

Parameters: ``case`` (``backend:method``), ``problem``, ``device`` (``cpu``, ``cuda``); the
grid comes from the registries (see :mod:`suites._common`). Every solve uses the same fixed
options on every commit: output times ``t_eval = linspace(t0, t1, 5)``, rtol = atol = 1e-6
for adaptive methods (1e-6 / 1e-10 on stiff problems), 100 steps for fixed-step-only
methods, at most 100 000 steps.

- ``time_solve``: one solve, compilation and first-call costs done in ``setup``; on a GPU
  the timed region waits for the device (``block_until_ready`` / ``torch.cuda.synchronize``).
- ``peakmem_solve``: the process's peak resident memory over one solve (asv measures the
  whole process, so imports dominate: a regression shows only when a solve allocates more
  than the libraries' baseline).
- ``track_nfev``, ``track_error``, ``track_scd_deficit``: computed once per commit in
  ``setup_cache`` (deterministic: the same value on every run), all lower-is-better.
"""
from __future__ import annotations

import itertools

from ._common import DEVICES, lookup, values_table, warmed_case
from ._grid import load

#: warmed-up cases of this process (asv re-runs ``setup`` before every timing sample)
_WARM: dict = {}

FORWARD = (load()["forward"], load()["nonstiff_problems"], list(DEVICES))
STIFF = (load()["stiff"], load()["stiff_problems"], list(DEVICES))
PARAM_NAMES = ("case", "problem", "device")


class _Timed:
    """Wall time and peak memory of one forward solve."""

    params = FORWARD
    param_names = PARAM_NAMES
    stiff = False
    #: 3 to 10 samples per round, at most 4 s; asv's default 2 rounds are interleaved
    repeat = (3, 10, 4.0)
    #: setup has already made the first (compiling) call
    warmup_time = 0.0
    timeout = 300

    def setup(self, case: str, problem: str, device: str) -> None:
        self.case = warmed_case(case, problem, device, _WARM, stiff=self.stiff)

    def time_solve(self, case: str, problem: str, device: str) -> None:
        self.case.solve_synchronized()

    def peakmem_solve(self, case: str, problem: str, device: str) -> None:
        self.case.solve_synchronized()


class _Tracked:
    """NFE, scaled error at t1 and scd deficit of one forward solve (deterministic)."""

    params = FORWARD
    param_names = PARAM_NAMES
    stiff = False
    timeout = 1800

    def setup(self, table: dict, case: str, problem: str, device: str) -> None:
        lookup(table, (case, problem, device), "nfev")

    def track_nfev(self, table: dict, case: str, problem: str, device: str) -> float:
        """Vector-field evaluations of the solve."""
        return lookup(table, (case, problem, device), "nfev")

    track_nfev.unit = "evaluations"

    def track_error(self, table: dict, case: str, problem: str, device: str) -> float:
        """max |y(t1) - y_ref(t1)| / max(1, |y_ref|); inf for a failed solve, NaN without a reference."""
        return lookup(table, (case, problem, device), "error")

    track_error.unit = "scaled error"

    def track_scd_deficit(self, table: dict, case: str, problem: str, device: str) -> float:
        """15.65 (float64's digits) minus the significant correct digits at t1, clipped at 0."""
        return lookup(table, (case, problem, device), "scd_deficit")

    track_scd_deficit.unit = "digits"


class TimeSolve(_Timed):
    """Non-stiff problems, every reference method and one method of each other backend."""


class TrackSolve(_Tracked):
    # each class defines its own setup_cache: asv shares the cached value between benchmarks
    # whose setup_cache is the same function (it keys the cache on the function's source)
    def setup_cache(self) -> dict:
        return values_table(itertools.product(*FORWARD))

    setup_cache.timeout = 1800


class TimeStiff(_Timed):
    """Implicit methods on problems tagged ``stiff`` (skipped until both are registered)."""

    params = STIFF
    stiff = True


class TrackStiff(_Tracked):
    """Implicit methods on problems tagged ``stiff`` (skipped until both are registered)."""

    params = STIFF
    stiff = True

    def setup_cache(self) -> dict:
        return values_table(itertools.product(*STIFF), stiff=True)

    setup_cache.timeout = 1800
