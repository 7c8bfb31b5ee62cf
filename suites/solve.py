"""Forward solves: wall time, peak memory, and the deterministic work and accuracy figures.

Parameters: ``case`` (``backend:method``), ``problem``, ``device`` (``cpu``, ``cuda``); the
grid comes from the registries (see :mod:`suites._common`). Every solve uses the same fixed
options on every commit: output times ``t_eval = linspace(t0, t1, 5)``, rtol = atol = 1e-6
for adaptive methods (1e-6 / 1e-10 on stiff problems), 100 steps for fixed-step-only
methods, at most 100 000 steps.

- ``time_solve``: the CPU time (``time.process_time``) of one solve, compilation and
  first-call costs done in ``setup``; 5-20 samples per round, 2 rounds (``_common.CpuTimed``).
  On a GPU the row is timed by the wall clock and the timed region waits for the device
  (``block_until_ready`` / ``torch.cuda.synchronize``): see ``_common.WALL_TIME_DEVICES``.
- ``peakmem_solve`` (large grid only): the process's peak resident memory over one solve
  (asv measures the whole process, so imports dominate: a regression shows only when a solve
  allocates more than the libraries' baseline). The small grid leaves it out: it cost a
  process with its warm-up per row and commit for a figure that did not move.
- ``track_nfev``, ``track_error``, ``track_scd_deficit``: computed once per commit in
  ``setup_cache`` (deterministic: the same value on every run), all lower-is-better.
- the work counters beside the timing (same parameters as ``time_solve``, deterministic, from
  ``Solution.stats``): ``track_steps_accepted``, ``track_steps_rejected``,
  ``track_newton_iters``, ``track_lu_factorisations``, ``track_jacobian_evaluations`` (0 for
  explicit methods, and where a backend does not report them).
"""
from __future__ import annotations

import itertools

from ._common import CpuTimed, choose_timer, lookup, values_table, warmed_case
from ._grid import LARGE, load

#: warmed-up cases of this process (asv re-runs ``setup`` before every timing sample)
_WARM: dict = {}

FORWARD = (load()["forward"], load()["nonstiff_problems"], load()["devices"])
STIFF = (load()["stiff"], load()["stiff_problems"], load()["devices"])
PARAM_NAMES = ("case", "problem", "device")


class _Timed(CpuTimed):
    """CPU time (wall time on a GPU) and peak memory of one forward solve; the matching work
    counters are the ``track_*`` of the Track class of the same name."""

    params = FORWARD
    param_names = PARAM_NAMES
    stiff = False
    timeout = 300

    def setup(self, case: str, problem: str, device: str) -> None:
        choose_timer(self, device)
        self.case = warmed_case(case, problem, device, _WARM, stiff=self.stiff)

    def time_solve(self, case: str, problem: str, device: str) -> None:
        self.case.solve_synchronized()

    if LARGE:  # a process per row, round and commit for a figure the imports dominate: large grid only
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

    # --- work counters (Solution.stats): what the timing should be proportional to ----------
    def track_steps_accepted(self, table: dict, case: str, problem: str, device: str) -> float:
        """Accepted steps."""
        return lookup(table, (case, problem, device), "accepted")

    track_steps_accepted.unit = "steps"

    def track_steps_rejected(self, table: dict, case: str, problem: str, device: str) -> float:
        """Rejected steps (0 for fixed-step solves)."""
        return lookup(table, (case, problem, device), "rejected")

    track_steps_rejected.unit = "steps"

    def track_newton_iters(self, table: dict, case: str, problem: str, device: str) -> float:
        """Newton iterations of the stage equations, summed over steps (0 for explicit methods)."""
        return lookup(table, (case, problem, device), "newton_iters")

    track_newton_iters.unit = "iterations"

    def track_lu_factorisations(self, table: dict, case: str, problem: str, device: str) -> float:
        """LU factorisations of the Newton matrix (0 for explicit methods)."""
        return lookup(table, (case, problem, device), "nlu")

    track_lu_factorisations.unit = "factorisations"

    def track_jacobian_evaluations(self, table: dict, case: str, problem: str, device: str) -> float:
        """Jacobian evaluations (0 for explicit methods)."""
        return lookup(table, (case, problem, device), "njev")

    track_jacobian_evaluations.unit = "evaluations"


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
