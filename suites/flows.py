"""Continuous normalizing flows: CPU time of a density solve with an exact or a Hutchinson
trace, the trace estimator's own cost, and the log-likelihood error.

Parameters: ``case`` (``backend:dopri5:estimator`` on the reference backends; estimators
``jacobian``, ``jvp``, ``autodiff`` (PyTorch or JAX forward mode, a loop of n JVPs) and
``hutchinson{k}`` (k Rademacher probes drawn from seed :data:`SEED`, fixed for the solve); the
small grid is ``_grid.CNF_SMALL``, the large grid every estimator on every reference backend),
``problem`` (:data:`PROBLEMS`: ``cnf_linear2``, whose flow and log-density are in closed form,
and the 6-D softplus MLP ``cnf_mlp6_softplus``; the large grid: every ``CNF_PROBLEMS`` entry),
``device``. Every solve is the same on every commit: the problem's own data batch (8 points),
``[z, l]`` from t1 back to t0 (``CNFProblem.density_problem``), dopri5 at :data:`RTOL`,
:data:`ATOL`, float64.

- ``time_density``: CPU time of one density solve of the batch (wall time on a GPU, see
  ``_common.WALL_TIME_DEVICES``); the first call in ``setup``.
- ``time_trace``: CPU time of one evaluation of the trace estimator alone
  (``trace_function``) on the batch at t1: the cost that grows like n for an exact trace and
  like k for Hutchinson.
- ``track_log_density_error``: RMS over the batch of log p_h(x) - log p(x), against
  ``CNFProblem.exact_log_density`` where the problem has a closed form, else against the
  NumPy reference's ``jacobian`` trace solved by dop853 at rtol 1e-12 (deterministic: the
  Hutchinson probes come from a fixed seed, so its estimator error is part of the figure);
- the work counters beside the timings: ``track_nfev`` (calls of the augmented field) and
  ``track_steps_accepted`` of the density solve, and ``track_trace_jvps``, the JVP-equivalents
  of one trace evaluation (n exact, k Hutchinson).
"""
from __future__ import annotations

import functools
import itertools
import math
from typing import Any

import numpy as np

from ._common import CpuTimed, choose_timer, count, library_device, lookup, single_thread, split_case, synchronize
from ._grid import LARGE, load, cnf_cases

#: the density solve of every row
RTOL, ATOL = 1e-6, 1e-9
METHOD = "dopri5"
SEED = 0
PROBE = "rademacher"
PROBLEMS = ("cnf_linear2", "cnf_mlp6_softplus")
#: the oracle of a problem without a closed form: the exact Jacobian trace, dop853, these tolerances
ORACLE_RTOL, ORACLE_ATOL = 1e-12, 1e-14


def estimator(name: str) -> tuple[str, int]:
    """``(trace, n_probes)`` of an estimator label: ``hutchinson4`` is ``("hutchinson", 4)``."""
    if name.startswith("hutchinson"):
        return "hutchinson", int(name[len("hutchinson"):] or 1)
    return name, 1


def problems() -> list[str]:
    from odeverify.problems.flows import CNF_PROBLEMS

    return list(CNF_PROBLEMS.names()) if LARGE else [p for p in PROBLEMS if p in CNF_PROBLEMS]


class CNFCase:
    """One CNF density solve of a problem's data batch, ready to run (NotImplementedError where
    it cannot run here)."""

    def __init__(self, case: str, problem: str, device: str) -> None:
        from odeverify import _xp, backends
        from odeverify.problems.flows import CNF_PROBLEMS, trace_function

        backend_name, method, label = split_case(case)
        self.backend = backends.get(backend_name)
        if not self.backend.available():
            raise NotImplementedError(f"{backend_name} is not installed: {self.backend.install_hint}")
        self.lib_device = library_device(self.backend, device)
        self.device, self.method = device, method
        self.cnf = CNF_PROBLEMS.get(problem)
        self.trace, self.k = estimator(label)
        if self.trace == "jacobian" and self.cnf.field.jac is None:
            raise NotImplementedError(f"{problem}'s field has no analytic Jacobian")
        self.y0 = self.cnf.density_y0()
        self.problem = self.cnf.density_problem(self.trace, batch=self.y0.shape[0], n_probes=self.k, seed=SEED,
                                                probe=PROBE)
        self.ts = np.asarray(self.problem.t_span)
        library = getattr(self.backend, "library", "numpy")
        if self.trace == "autodiff" and library not in ("torch", "jax"):
            raise NotImplementedError(f"the autodiff trace needs PyTorch or JAX, not {library}")
        xp = _xp.get_namespace(library)
        dev = None if library == "numpy" else self.lib_device
        params = self.problem.converted_params(xp, xp.float64, dev)
        z = xp.asarray(self.y0[:, :self.cnf.dim], dtype=xp.float64, **({} if dev is None else {"device": dev}))
        tr, t1 = trace_function(self.cnf.field, self.trace), self.problem.t_span[0]
        self._trace = lambda: tr(xp, t1, z, params)
        single_thread()

    def solve(self) -> Any:
        sol = self.backend.solve(self.problem, self.method, y0=self.y0, t_eval=self.ts, rtol=RTOL, atol=ATOL,
                                 device=self.lib_device)
        synchronize(sol.ys, self.device)
        return sol

    def trace_once(self) -> Any:
        out = self._trace()
        synchronize(out, self.device)
        return out


_WARM: dict = {}


def warmed(case: str, problem: str, device: str) -> CNFCase:
    key = (case, problem, device)
    if key not in _WARM:
        cc = CNFCase(case, problem, device)
        sol = cc.solve()
        if not sol.success:
            raise NotImplementedError(f"{case} on {problem}: {sol.status.code}: {sol.message}")
        cc.trace_once()
        _WARM[key] = cc
    return _WARM[key]


@functools.lru_cache(maxsize=None)
def reference_log_density(problem: str) -> tuple[float, ...]:
    """log p(x) at the problem's data: the closed form, else the exact-trace dop853 oracle."""
    from odeverify import backends
    from odeverify.problems.flows import CNF_PROBLEMS

    cnf = CNF_PROBLEMS.get(problem)
    if cnf.has_exact:
        return tuple(cnf.exact_log_density(cnf.data).tolist())
    P = cnf.density_problem("jacobian")
    sol = backends.get("reference").solve(P, "dop853", y0=cnf.density_y0(), t_eval=np.asarray(P.t_span),
                                          rtol=ORACLE_RTOL, atol=ORACLE_ATOL)
    if not sol.success:
        raise RuntimeError(f"the oracle solve of {problem} failed: {sol.status.code}: {sol.message}")
    return tuple(cnf.log_likelihood(np.asarray(sol.ys)[-1]).tolist())


def cnf_values(case: str, problem: str, device: str) -> dict[str, float] | str:
    """The log-density error and work of one row, or the reason it is skipped."""
    from odeverify import _xp

    try:
        cc = CNFCase(case, problem, device)
    except NotImplementedError as exc:
        return str(exc) or "not available"
    sol = cc.solve()
    jvps = float(cc.k if cc.trace == "hutchinson" else cc.cnf.dim)
    if not sol.success:
        return {"log_density_error": math.inf, "nfev": count(sol.stats.nfev), "accepted": count(sol.stats.accepted),
                "trace_jvps": jvps}
    got = cc.cnf.log_likelihood(_xp.to_numpy(sol.ys)[-1])
    err = float(np.sqrt(np.mean((got - np.asarray(reference_log_density(problem))) ** 2)))
    return {"log_density_error": err, "nfev": count(sol.stats.nfev), "accepted": count(sol.stats.accepted),
            "trace_jvps": jvps}


CNF = (load().get("cnf") or cnf_cases(), problems(), load()["devices"])
PARAM_NAMES = ("case", "problem", "device")


class TimeCNF(CpuTimed):
    """CPU time of one CNF density solve of the data batch, and of one trace evaluation."""

    params = CNF
    param_names = PARAM_NAMES
    timeout = 300

    def setup(self, case: str, problem: str, device: str) -> None:
        choose_timer(self, device)
        self.case = warmed(case, problem, device)

    def time_density(self, case: str, problem: str, device: str) -> None:
        self.case.solve()

    def time_trace(self, case: str, problem: str, device: str) -> None:
        self.case.trace_once()


class TrackCNF:
    """Log-likelihood error and work of the same solve (deterministic)."""

    params = CNF
    param_names = PARAM_NAMES
    timeout = 1800

    def setup_cache(self) -> dict:
        return {key: cnf_values(*key) for key in itertools.product(*CNF)}

    setup_cache.timeout = 1800

    def setup(self, table: dict, case: str, problem: str, device: str) -> None:
        lookup(table, (case, problem, device), "nfev")

    def track_log_density_error(self, table: dict, case: str, problem: str, device: str) -> float:
        """RMS over the data batch of log p_h(x) - log p(x); inf for a failed solve."""
        return lookup(table, (case, problem, device), "log_density_error")

    track_log_density_error.unit = "nats"

    def track_nfev(self, table: dict, case: str, problem: str, device: str) -> float:
        """Calls of the augmented field [f, -tr] in the density solve."""
        return lookup(table, (case, problem, device), "nfev")

    track_nfev.unit = "evaluations"

    def track_steps_accepted(self, table: dict, case: str, problem: str, device: str) -> float:
        """Accepted steps of the density solve."""
        return lookup(table, (case, problem, device), "accepted")

    track_steps_accepted.unit = "steps"

    def track_trace_jvps(self, table: dict, case: str, problem: str, device: str) -> float:
        """JVP-equivalents of one trace evaluation: n for an exact trace, k for Hutchinson."""
        return lookup(table, (case, problem, device), "trace_jvps")

    track_trace_jvps.unit = "JVPs"
