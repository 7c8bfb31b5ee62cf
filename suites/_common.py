"""Shared parts of the asv suites: one solve (or gradient) per case, device handling, the
deterministic track values and the skips. The grid itself is in :mod:`suites._grid`.

Nothing here has a benchmark prefix (``time_``, ``peakmem_``, ``track_``...), so asv finds no
benchmark in this module.

Unavailable combinations raise ``NotImplementedError`` in ``setup`` (asv reports them as
skipped, ``n/a``): a device the backend does not have here (``cuda`` without a GPU), a
method that cannot take the options, a gradient mode or stiff problem not registered yet.
"""
from __future__ import annotations

import importlib
import inspect
import math
import os
import sys
import tempfile
import time
import timeit
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

import odeverify
from odeverify import backends, metrics
from odeverify.problems import PROBLEMS, Problem

from ._grid import CURATED, CURATED_SET, DEVICES, NONE, ORDER_DECIMALS, ORDER_N_MAX, gradient_api

# --- solve settings: fixed, so that every commit solves the same thing -----------------------
#: tolerances of adaptive solves of non-stiff and stiff problems
RTOL, ATOL = 1e-6, 1e-6
STIFF_RTOL, STIFF_ATOL = 1e-6, 1e-10
#: steps of a solve with a fixed-step-only method
N_FIXED = 100
#: number of equally spaced output times (t0 and t1 included): the fixed t_eval of every solve
N_OUTPUT = 5
#: a run never hangs: at most this many steps per solve
MAX_STEPS = 100_000
#: significant digits of float64 (-log10 eps): the scd deficit is this minus the measured scd
FLOAT64_DIGITS = -math.log10(metrics.EPS64)


def split_case(case: str) -> tuple[str, ...]:
    if case == NONE:
        raise NotImplementedError("nothing of this kind is registered yet")
    return tuple(case.split(":"))


# --- timers and sampling of the time_* benchmarks -------------------------------------------
#: the timer of every time_* benchmark on the CPU: the CPU time of the benchmark's process (all its
#: threads), ``clock_gettime(CLOCK_PROCESS_CPUTIME_ID)`` on Linux, 1 ns resolution (one reading
#: costs ~0.8 us here). Wall time counts whatever else the machine runs: on this 2-core shared
#: machine a wall-clock gate flagged unchanged scipy rows 1.2-2.7x slower or faster and showed
#: a doubled-NFE Euler as 0.64x the time. CPU time of single-threaded work does not count other
#: processes (their cache and memory-bandwidth pressure still does, much less).
CPU_TIMER = time.process_time
#: wall clock (asv's default ``timeit.default_timer``), for the devices in WALL_TIME_DEVICES only
WALL_TIMER = timeit.default_timer
#: devices whose rows are timed by the wall clock, with the reason (the configuration test reads it)
WALL_TIME_DEVICES = {
    "cuda": "the GPU does the work: while the process waits in torch.cuda.synchronize or"
            " block_until_ready its CPU time stands still (a sleeping wait) or runs (a spinning wait),"
            " so only elapsed time measures the device",
}
#: samples per round (at least 5, at most 20, no new sample after 1 s of the round: asv's
#: ``repeat`` = (min, max, max seconds)), 2 rounds, interleaved between the commits compared.
#: Every small-grid solve takes 0.6-540 ms of CPU, far above the timer's resolution, so one call
#: per sample (asv's ``number`` resolves to 1 with a setup) measures it.
REPEAT = (5, 20, 1.0)
ROUNDS = 2
#: the smallest number of samples per round any time_* benchmark may take (tests/test_suites.py)
MIN_SAMPLES = 5


class CpuTimed:
    """asv settings of a time_* benchmark class: CPU time, REPEAT samples per round, ROUNDS
    rounds, no warm-up (``setup`` makes the first, compiling, call). A row on a device of
    :data:`WALL_TIME_DEVICES` switches to the wall clock in ``setup`` (:func:`choose_timer`):
    asv reads the timer again after ``setup``."""

    timer = CPU_TIMER
    repeat = REPEAT
    rounds = ROUNDS
    warmup_time = 0.0


def choose_timer(bench: Any, device: str) -> None:
    """The timer of one row: wall time on a device of WALL_TIME_DEVICES, CPU time otherwise."""
    bench.timer = WALL_TIMER if device in WALL_TIME_DEVICES else CPU_TIMER


#: where compiled XLA programs are kept between asv's processes (each row runs in its own forked
#: process, once per round and per commit): a diffrax gradient's first call took 26 s without it
#: and 15 s with it (tracing remains), a diffrax forward solve 3.8 s and 1.6 s (load ~1)
JAX_CACHE_DIR = os.path.join(tempfile.gettempdir(), "odeverify-asv-jax-cache")


def use_jax_cache() -> None:
    """Turn on JAX's persistent compilation cache when JAX is imported (under asv the fork server
    has imported it). Its key covers the compiled program, JAX's version and flags: a commit that
    changes the computation compiles anew."""
    jax = sys.modules.get("jax")
    if jax is None:
        return
    if jax.config.jax_compilation_cache_dir != JAX_CACHE_DIR:
        jax.config.update("jax_compilation_cache_dir", JAX_CACHE_DIR)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


# --- devices ----------------------------------------------------------------------------------
def library_device(backend: Any, device: str) -> str:
    """The backend's own name for ``device`` (``cuda`` is ``gpu`` for the JAX backends), or
    NotImplementedError when the backend does not have it here."""
    have = tuple(backend.capabilities().devices)
    names = {"cpu": ("cpu",), "cuda": ("cuda", "gpu")}.get(device)
    if names is None:
        raise ValueError(f"device={device!r}, but it must be one of {DEVICES}")
    for name in names:
        if name in have:
            return name
    raise NotImplementedError(f"{backend.name} has no {device} device here (it has {', '.join(have)})")


def single_thread() -> None:
    """One thread (2-thread torch timings were measured to spread 0.6-40 ms on shared machines)."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.get_num_threads() != 1:
        torch.set_num_threads(1)


def synchronize(ys: Any, device: str) -> None:
    """Wait for asynchronous device work (inside the timed region): JAX's ``block_until_ready``,
    ``torch.cuda.synchronize`` on CUDA."""
    block = getattr(ys, "block_until_ready", None)
    if block is not None:
        block()
    if device == "cuda" and "torch" in sys.modules:
        torch = sys.modules["torch"]
        if torch.cuda.is_available():
            torch.cuda.synchronize()


# --- one forward solve ------------------------------------------------------------------------
def output_times(problem: Problem) -> np.ndarray:
    t0, t1 = problem.t_span
    return np.linspace(t0, t1, N_OUTPUT)


class SolveCase:
    """One forward case, ready to run: the backend, method, problem, device and options.

    Building it raises NotImplementedError for a combination that cannot run here.
    """

    def __init__(self, case: str, problem: str, device: str, *, stiff: bool = False) -> None:
        if problem == NONE:
            raise NotImplementedError("no problem tagged 'stiff' is registered yet")
        backend_name, method = split_case(case)
        self.backend = backends.get(backend_name)
        if not self.backend.available():
            raise NotImplementedError(f"{backend_name} is not installed: {self.backend.install_hint}")
        self.method = method
        self.problem = PROBLEMS.get(problem)
        self.device = device
        self.lib_device = library_device(self.backend, device)
        info = self.backend.capabilities().method(method, backend_name)
        opts: dict[str, Any] = {"t_eval": output_times(self.problem), "max_steps": MAX_STEPS}
        if info.adaptive:
            opts.update(rtol=STIFF_RTOL if stiff else RTOL, atol=STIFF_ATOL if stiff else ATOL)
        else:
            opts["n_steps"] = N_FIXED
        self.options = opts
        single_thread()

    def solve(self) -> odeverify.Solution:
        try:
            return self.backend.solve(self.problem, self.method, device=self.lib_device, **self.options)
        except backends.UnsupportedOption as exc:
            raise NotImplementedError(str(exc)) from exc

    def solve_synchronized(self) -> odeverify.Solution:
        sol = self.solve()
        synchronize(sol.ys, self.device)
        return sol


def warmed_case(case: str, problem: str, device: str, cache: dict, *, stiff: bool = False) -> SolveCase:
    """A SolveCase whose first solve (compilation, lazy imports, caches) has been done; kept in
    ``cache`` so that asv's per-sample re-runs of ``setup`` cost nothing."""
    key = (case, problem, device, stiff)
    if key not in cache:
        use_jax_cache()
        sc = SolveCase(case, problem, device, stiff=stiff)
        sol = sc.solve_synchronized()
        if sol.status is odeverify.Status.UNAVAILABLE:
            raise NotImplementedError(sol.message)
        cache[key] = sc
    return cache[key]


def final_error(problem: Problem, sol: odeverify.Solution) -> tuple[float, float]:
    """(scaled error at t1, scd deficit) of a solve; NaN where the problem has no reference at t1.

    The scaled error is ``max |y - y_ref| / max(1, max |y_ref|)``; the scd deficit is
    ``FLOAT64_DIGITS - scd`` (scd: significant correct digits, the Bari test-set measure,
    ``odeverify.metrics.scd``), clipped at 0: both are lower-is-better, as asv assumes.
    A failed solve (status other than success) counts as an infinite error (no digits).
    """
    ref = problem.final_reference()
    if ref is None:
        return math.nan, math.nan
    if not sol.success:
        return math.inf, FLOAT64_DIGITS
    y = metrics.as_numpy(sol.ys)[-1]
    err = metrics.scaled_error(y, ref)
    scd = getattr(metrics, "scd", None)
    if scd is None:
        return err, math.nan
    return err, max(0.0, FLOAT64_DIGITS - scd(y, ref))  # scd = inf (exact) gives 0


def forward_values(case: str, problem: str, device: str, *, stiff: bool = False) -> dict[str, float] | str:
    """The deterministic accuracy and work figures of one case, or the reason it is skipped."""
    try:
        use_jax_cache()
        sc = SolveCase(case, problem, device, stiff=stiff)
        sol = sc.solve()
    except NotImplementedError as exc:
        return str(exc) or "not available"
    if sol.status is odeverify.Status.UNAVAILABLE:
        return sol.message
    err, deficit = final_error(sc.problem, sol)
    st = sol.stats
    return {"nfev": count(st.nfev), "steps": count(st.steps), "accepted": count(st.accepted),
            "rejected": count(st.rejected), "newton_iters": count(st.newton_iters), "nlu": count(st.nlu),
            "njev": count(st.njev), "error": err, "scd_deficit": deficit}


def count(value: Any) -> float:
    """A work counter as a float; NaN (asv: n/a) where the backend has no count: None, or the -1
    scipy reports for Radau's rejected steps. asv compares negative values wrongly: it flagged
    scipy Radau's -1 rejected steps against the same -1 as 'better'."""
    return math.nan if value is None or value < 0 else float(value)


def values_table(cases: Iterable[tuple[str, str, str]], *, stiff: bool = False) -> dict:
    """``forward_values`` for every (case, problem, device)."""
    return {key: forward_values(*key, stiff=stiff) for key in cases}


def lookup(table: dict, key: tuple, field: str) -> float:
    """``table[key][field]``; NotImplementedError (skip) where the entry is a skip reason."""
    if key not in table:
        raise KeyError(f"{key} is not in the setup_cache table (of {len(table)} entries): the table was built"
                       " for another benchmark's parameters")
    entry = table[key]
    if isinstance(entry, str):
        raise NotImplementedError(entry)
    return entry[field]


# --- order deficit ----------------------------------------------------------------------------
def order_deficit(case: str, problem_set: str) -> float:
    """Expected minus measured convergence order (``odeverify.properties.convergence_order``),
    clipped at 0 and rounded to :data:`ORDER_DECIMALS` decimals: lower is better. ``problem_set`` is a problem name or ``curated`` (the best of
    :data:`CURATED`: each method's order is confirmed on at least one of them). A sweep with no
    asymptotic window (inconclusive, measured None) confirms nothing: its deficit is the whole
    order."""
    from odeverify.properties import convergence_order

    backend, method = split_case(case)
    problems = CURATED if problem_set == CURATED_SET else (problem_set,)
    best = math.inf
    for name in problems:
        try:
            rec = convergence_order(PROBLEMS.get(name), method, backend=backend, n_max=ORDER_N_MAX)
        except backends.UnsupportedOption as exc:
            raise NotImplementedError(str(exc)) from exc
        expected = float(rec.expected)
        deficit = expected if rec.measured is None else max(0.0, expected - float(rec.measured))
        best = min(best, round(deficit, ORDER_DECIMALS))
        if best == 0.0:
            break  # the minimum of deficits >= 0: the other problems cannot change it
    return best


def gradient_loss(problem: Problem) -> Any:
    """The loss of every gradient benchmark: seeded N(0, 1) weights on the fixed output times
    plus half the squared norm (``Loss.seeded``, seed 0)."""
    from odeverify.gradients import Loss

    return Loss.seeded(output_times(problem), problem.n, seed=0)


class GradientCase:
    """One gradient case, ready to run (NotImplementedError where it cannot run here): the
    reference through ``odeverify.gradients.value_and_grad``, another backend through
    ``Backend.gradient``; the forward solve takes the options of the forward suites."""

    def __init__(self, case: str, problem: str, device: str) -> None:
        if problem == NONE:
            raise NotImplementedError("no problem for gradients is registered")
        backend_name, method, mode = split_case(case)
        self.backend = backends.get(backend_name)
        if not self.backend.available():
            raise NotImplementedError(f"{backend_name} is not installed: {self.backend.install_hint}")
        self.lib_device = library_device(self.backend, device)
        self.device = device
        self.problem = PROBLEMS.get(problem)
        self.method, self.mode = method, mode
        self.loss = gradient_loss(self.problem)
        info = self.backend.capabilities().method(method, backend_name)
        reference = backend_name.startswith("reference")
        modes, value_and_grad = gradient_api()
        fixed_mode = reference and modes is not None and bool(getattr(modes.get(mode), "fixed_step", False))
        opts: dict[str, Any] = {"max_steps": MAX_STEPS}
        if info.adaptive and not fixed_mode:
            opts.update(rtol=RTOL, atol=ATOL)
        else:
            opts["n_steps"] = N_FIXED
        self.options = opts
        if reference:
            if value_and_grad is None:
                raise NotImplementedError("odeverify.gradients.value_and_grad is not there yet")
            if device != "cpu" and not _accepts(value_and_grad, "device"):
                raise NotImplementedError(f"value_and_grad takes no device: the reference's {device} gradients"
                                          " are not possible yet")
            library = getattr(self.backend, "library", "numpy")
            extra = {} if device == "cpu" else {"device": self.lib_device}
            self._call = lambda: value_and_grad(self.problem, self.loss, mode=mode, method=method, library=library,
                                                **extra, **opts)
        else:
            self._call = lambda: self.backend.gradient(self.problem, method, mode, self.loss,
                                                       device=self.lib_device, **opts)
        single_thread()

    def run(self) -> Any:
        try:
            result = self._call()
        except (backends.UnsupportedOption, NotImplementedError) as exc:
            raise NotImplementedError(str(exc)) from exc
        if result.status is odeverify.Status.UNAVAILABLE:
            raise NotImplementedError(result.message)
        return result

    def run_synchronized(self) -> Any:
        result = self.run()
        if self.device == "cuda":
            synchronize(None, self.device)
        return result


def warmed_gradient(case: str, problem: str, device: str, cache: dict) -> GradientCase:
    """A GradientCase after its first (compiling) run, kept in ``cache`` (see warmed_case)."""
    key = ("gradient", case, problem, device)
    if key not in cache:
        use_jax_cache()
        gc = GradientCase(case, problem, device)
        gc.run_synchronized()
        cache[key] = gc
    return cache[key]


def _accepts(fn: Callable, name: str) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return True
    return name in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


#: steps of the fixed-step DOP853 solve differentiated by the gradient oracle, per unit of time
ORACLE_STEPS_PER_UNIT = 128


def oracle_gradient(problem: Problem, loss: Any) -> dict[str, np.ndarray] | None:
    """dL/dy0 and dL/dθ by PyTorch autograd through a fixed-step DOP853 reference solve
    (128 steps per unit of time: its truncation error is far below the gradient errors of
    adaptive solves at rtol 1e-6). Independent of odeverify.gradients; None without PyTorch.
    Keys: ``"y0"`` and each parameter name."""
    try:
        torch = importlib.import_module("torch")
    except ImportError:
        return None
    import array_api_compat

    single_thread()
    xp = array_api_compat.array_namespace(torch.empty(0))
    p = {k: (v.detach().clone().requires_grad_(True) if hasattr(v, "requires_grad_") else v)
         for k, v in problem.converted_params(xp, torch.float64).items()}
    y0 = torch.tensor(problem.y0, dtype=torch.float64, requires_grad=True)
    rhs = problem.rhs

    def f(t: Any, y: Any) -> Any:
        return rhs(xp, t, y, p)

    span = abs(problem.t_span[1] - problem.t_span[0])
    n = int(ORACLE_STEPS_PER_UNIT * max(1, math.ceil(span)))
    sol = odeverify.solve(f, y0, problem.t_span, method="dop853", n_steps=n, t_eval=np.asarray(loss.t_eval))
    leaves = {"y0": y0, **{k: v for k, v in p.items() if hasattr(v, "requires_grad_")}}
    grads = torch.autograd.grad(loss.value(xp, sol.ys), list(leaves.values()))
    return {k: g.detach().numpy().astype(np.float64) for k, g in zip(leaves, grads)}


def gradient_error(result: Any, oracle: dict[str, np.ndarray] | None) -> float:
    """Scaled max error of the gradient parts the result has, against the oracle (NaN without one)."""
    if oracle is None:
        return math.nan
    got, ref = [], []
    if result.grad_y0 is not None:
        got.append(np.ravel(result.grad_y0))
        ref.append(np.ravel(oracle["y0"]))
    for k in sorted(result.grad_params):
        if k in oracle:
            got.append(np.ravel(result.grad_params[k]))
            ref.append(np.ravel(oracle[k]))
    if not got:
        return math.nan
    return metrics.scaled_error(np.concatenate(got), np.concatenate(ref))


def gradient_values(case: str, problem: str, device: str, oracles: dict) -> dict[str, float] | str:
    """Gradient error and work of one case, or the reason it is skipped."""
    try:
        use_jax_cache()
        gc = GradientCase(case, problem, device)
        result = gc.run()
    except NotImplementedError as exc:
        return str(exc) or "not available"
    if problem not in oracles:
        oracles[problem] = oracle_gradient(gc.problem, gc.loss)
    err = gradient_error(result, oracles[problem]) if result.success else math.inf
    return {"grad_error": err, "nfev_backward": count(result.nfev_backward),
            "nfev_forward": count(result.nfev_forward), "steps_forward": count(result.steps_forward),
            "steps_backward": count(result.steps_backward),
            "saved_bytes": count(result.memory.get("saved_for_backward_bytes")),
            "saved_peak_bytes": count(result.memory.get("saved_for_backward_peak_bytes"))}
