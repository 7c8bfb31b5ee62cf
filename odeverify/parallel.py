"""Independent units of work run in parallel: in local processes, or on a Dask cluster.

A run (``check``, ``report``, ``explore``) is cut into :class:`Unit` s: a method's
conformance cases, a report task, one property's search. A unit is data, not a closure: the
import path of a function and its keyword arguments (plain values), so that a fresh process
or a remote Dask worker rebuilds the same work from the installed package. The function
returns a dict with ``records`` (its :class:`~odeverify.records.Record` s, in the order a
serial run makes them), optionally ``cases`` (``(key, record)`` of every finished case, for
the journal) and ``value`` (anything else, such as an exploration's findings).

Three ways to run the same units (:func:`run_units`), with the same records:

- ``jobs=1`` and no time limit: in this process, one after the other;
- ``jobs=N`` or a time limit: a pool of ``N`` worker processes (pebble_, started with
  ``spawn``: PyTorch's and JAX's thread pools do not survive ``fork``). A unit that runs past
  its time limit has its process stopped; one whose process dies (a segfault in a library,
  the kernel's OOM killer) or raises becomes an :class:`Outcome` with ``error`` set, which
  the caller turns into an ``error`` record. The run goes on with a fresh process;
- ``scheduler=ADDRESS`` or ``workers=N``: a Dask_ cluster (``distributed``; a
  ``LocalCluster`` of ``N`` single-threaded worker processes when no address is given). The
  records are gathered here. Dask cannot stop a running task, so there the time limit is a
  stall limit: when no unit has finished for ``timeout`` seconds, the units still running are
  recorded as errors and the run ends.

Outcomes are handed to ``on_outcome`` as they finish (the journal, the progress bar), and
returned in the order of the units, so that the records do not depend on the schedule.

.. _pebble: https://pypi.org/project/Pebble/
.. _Dask: https://distributed.dask.org/
"""
from __future__ import annotations

import importlib
import os
import sys
import time
import traceback
import uuid
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .records import Record

#: environment of a worker process: one thread per library, so that N workers use N cores
SINGLE_THREAD_ENV = {
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "NUMEXPR_NUM_THREADS": "1",
    "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1",
}
#: time limit of one unit in a process pool unless the run says (seconds): a full diffrax
#: implicit method's conformance took 160-200 s on 2 shared cores
DEFAULT_TIMEOUT = 1800.0
#: how long a Dask client waits for the scheduler at ``scheduler=ADDRESS``
CONNECT_TIMEOUT = "20s"


def default_jobs() -> int:
    """The cores this process may use (its CPU affinity where the system tells it)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def validate_jobs(jobs: Any, name: str = "jobs") -> int:
    """``jobs`` as an int >= 1, or a ``ValueError`` naming ``name`` and the value."""
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"{name}={jobs!r}, but it must be a whole number of processes >= 1")
    return jobs


def validate_timeout(timeout: Any, name: str = "timeout") -> float | None:
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0 \
            or timeout == float("inf"):
        raise ValueError(f"{name}={timeout!r}, but it must be a finite number of seconds > 0 (or None)")
    return float(timeout)


@dataclass(frozen=True)
class Unit:
    """One independent piece of a run: ``target`` ("package.module:function") called with
    ``kwargs``. ``backend``, ``method`` and ``property`` name it in an error record."""

    label: str
    target: str
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    backend: str = "-"
    method: str = "*"
    property: str = "conformance"


@dataclass
class Outcome:
    """What a unit gave: its records and finished cases, or why it did not finish."""

    index: int
    label: str
    records: list[Record] = field(default_factory=list)
    cases: list[tuple[str, Record]] = field(default_factory=list)
    value: Any = None
    warnings: list[str] = field(default_factory=list)
    wall_s: float = 0.0
    cpu_s: float = 0.0
    streamed: list[tuple[str, Record]] = field(default_factory=list)  #: cases handed to on_case already
    error: str | None = None  #: set when the unit raised, ran past its limit or its process died
    worker: str = ""  #: where it ran (process id, or the Dask worker's address)

    def error_record(self, unit: Unit) -> Record:
        """The ``error`` record of a unit that did not finish."""
        return Record(property=unit.property, method=unit.method, problem="-", measured=None, expected=None,
                      verdict="error", status="failed", backend=unit.backend,
                      message=f"{unit.label}: {self.error}")


def warning_lines(label: str, caught: Sequence[warnings.WarningMessage]) -> list[str]:
    """Warnings caught while ``label`` ran, once each, as "label: Category: first line"."""
    return list(dict.fromkeys(f"{label}: {w.category.__name__}: {str(w.message).splitlines()[0][:300]}"
                              for w in caught))


def _resolve(target: str) -> Callable[..., Any]:
    module, sep, name = target.partition(":")
    if not sep or not module or not name:
        raise ValueError(f"target={target!r}; expected 'package.module:function'")
    return getattr(importlib.import_module(module), name)


#: in a pool worker: where finished cases are streamed to the parent (a queue the worker
#: inherits), and the index of the unit running
_STREAM: Any = None
_CURRENT: int | None = None


def stream_case(key: str, record: Record) -> bool:
    """Hand one finished case of the running unit to the parent as soon as it is finished.
    The parent journals it and shows it at once, and keeps it if the unit is later stopped.
    True when it was handed on (a pool worker streaming cases); otherwise the unit returns
    the case with its outcome (``cases``)."""
    if _STREAM is None or _CURRENT is None:
        return False
    try:
        _STREAM.put((_CURRENT, key, record.to_dict()))
    except Exception:  # noqa: BLE001 - the parent is gone or the queue closed: the outcome carries it
        return False
    return True


def execute(unit: Unit, index: int = 0) -> Outcome:
    """Run one unit here (in a worker process or in this one): any exception becomes the
    outcome's ``error``; warnings are collected, once each, as "label: Category: message"."""
    global _CURRENT
    _CURRENT = index
    wall, cpu = time.perf_counter(), time.process_time()
    out = Outcome(index=index, label=unit.label, worker=_where())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            got = _resolve(unit.target)(**dict(unit.kwargs))
            out.records = list(got.get("records", ()))
            out.cases = list(got.get("cases", ()))
            out.value = got.get("value")
        except Exception as exc:  # noqa: BLE001 - a failing unit is a recorded status
            out.error = f"raised {type(exc).__name__}: {exc}"
            out.value = traceback.format_exc(limit=8)
    out.warnings = warning_lines(unit.label, caught)
    out.wall_s = round(time.perf_counter() - wall, 3)
    out.cpu_s = round(time.process_time() - cpu, 3)
    return out


def _where() -> str:
    if "distributed" in sys.modules:  # a Dask worker has it imported; a pool worker need not look
        from distributed import get_worker

        try:
            return get_worker().address
        except ValueError:  # not inside a Dask worker
            pass
    return f"pid {os.getpid()}"


def _init_worker(stream: Any = None) -> None:
    """A fresh pool worker: its finished cases go to ``stream``. (Its single-threaded
    environment is inherited: numpy reads it on import, before any initializer runs.)"""
    global _STREAM
    _STREAM = stream


def run_units(units: Sequence[Unit], *, jobs: int = 1, timeout: float | None = None,
              scheduler: str | None = None, workers: int | None = None,
              on_start: Callable[[int, Unit], None] | None = None,
              on_outcome: Callable[[Outcome, Unit], None] | None = None,
              on_case: Callable[[int, str, Record], None] | None = None,
              priority: Sequence[float] | None = None) -> list[Outcome]:
    """Run ``units`` and return their outcomes in the order of ``units``.

    ``priority`` (one number per unit: its expected cost) hands the costliest units out first,
    so that a long unit does not start last and keep one worker busy while the others idle
    (longest-processing-time-first); the order of the outcomes does not change.

    ``jobs`` worker processes (1 and no ``timeout``: in this process); ``scheduler`` (a Dask
    scheduler address) or ``workers`` (a local Dask cluster of that many processes) instead
    run them on Dask. ``on_outcome(outcome, unit)`` is called as each unit finishes (in the
    order they finish), ``on_start(index, unit)`` as each is handed out, and, in a process
    pool, ``on_case(index, key, record)`` as each case a unit streams (:func:`stream_case`) is
    finished; those cases are then left out of ``outcome.cases``. An exception raised by
    a callback (Ctrl-C) stops the run: running units are abandoned, their processes stopped."""
    jobs = validate_jobs(jobs)
    timeout = validate_timeout(timeout)
    if workers is not None:
        workers = validate_jobs(workers, "workers")
    if scheduler is not None and workers is not None:
        raise ValueError(f"scheduler={scheduler!r} and workers={workers!r}: give one (an existing cluster's"
                         " address, or the number of workers of a local cluster)")
    if priority is not None and len(priority) != len(units):
        raise ValueError(f"priority has {len(priority)} entries; expected one per unit ({len(units)})")
    order = sorted(range(len(units)), key=lambda i: -priority[i]) if priority is not None else list(range(len(units)))
    if scheduler is not None or workers is not None:
        return _run_dask(units, scheduler, workers, timeout, on_start, on_outcome, order)
    if jobs == 1 and timeout is None:
        outs = []
        for i, unit in enumerate(units):  # one at a time: the order of the units
            if on_start is not None:
                on_start(i, unit)
            out = execute(unit, i)
            if on_outcome is not None:
                on_outcome(out, unit)
            outs.append(out)
        return outs
    return _run_pool(units, min(jobs, max(len(units), 1)), timeout if timeout is not None else DEFAULT_TIMEOUT,
                     on_start, on_outcome, on_case, order)


def _run_pool(units: Sequence[Unit], jobs: int, timeout: float,
              on_start: Callable[[int, Unit], None] | None,
              on_outcome: Callable[[Outcome, Unit], None] | None,
              on_case: Callable[[int, str, Record], None] | None, order: Sequence[int]) -> list[Outcome]:
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, TimeoutError as FutureTimeout, wait

    from pebble import ProcessExpired, ProcessPool

    outs: dict[int, Outcome] = {}
    ctx = multiprocessing.get_context("spawn")
    # finished cases stream through a queue the workers inherit; a case streamed is the
    # parent's from then on, even if its unit is stopped later
    stream = ctx.SimpleQueue() if on_case is not None else None
    streamed: dict[int, list[tuple[str, Record]]] = {}

    def drain() -> None:
        while stream is not None and not stream.empty():
            i, key, data = stream.get()
            rec = Record.from_dict(data)
            streamed.setdefault(i, []).append((key, rec))
            on_case(i, key, rec)

    # spawned workers inherit the environment: one thread each (what the user set is kept)
    saved = {k: os.environ.get(k) for k in SINGLE_THREAD_ENV}
    for k, v in SINGLE_THREAD_ENV.items():
        os.environ.setdefault(k, v)
    pool = ProcessPool(max_workers=jobs, context=ctx, initializer=_init_worker, initargs=(stream,))
    try:
        pending = {}
        rank = {i: n for n, i in enumerate(order)}
        for i in order:  # pebble hands tasks out in the order they were scheduled
            pending[pool.schedule(execute, args=(units[i], i), timeout=timeout)] = i
        started: set[int] = set()
        while pending:
            if on_start is not None:
                for fut, i in pending.items():
                    if i not in started and fut.running():
                        started.add(i)
                        on_start(i, units[i])
            done, _ = wait(list(pending), timeout=0.5, return_when=FIRST_COMPLETED)
            drain()
            for fut in sorted(done, key=lambda f: rank[pending[f]]):  # several at once: as handed out
                i = pending.pop(fut)
                unit = units[i]
                if on_start is not None and i not in started:
                    started.add(i)
                    on_start(i, unit)
                try:
                    out = fut.result()
                except FutureTimeout:
                    out = Outcome(index=i, label=unit.label, wall_s=timeout,
                                  error=f"ran past its time limit of {timeout:g} s; its process was stopped")
                except ProcessExpired as exc:
                    out = Outcome(index=i, label=unit.label,
                                  error=f"its worker process died (exit code {exc.exitcode})")
                except Exception as exc:  # noqa: BLE001 - e.g. a result that could not be sent back
                    out = Outcome(index=i, label=unit.label, error=f"failed in its worker: {type(exc).__name__}: {exc}")
                drain()  # every case the unit streamed was put before its outcome was sent
                out.streamed = streamed.get(i, [])
                outs[i] = out
                if on_outcome is not None:
                    on_outcome(out, unit)
    except BaseException:
        pool.stop()  # Ctrl-C or a failing callback: stop the workers, do not wait for them
        pool.join(timeout=10)
        raise
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    pool.close()
    pool.join()
    return [outs[i] for i in range(len(units))]


def _run_dask(units: Sequence[Unit], scheduler: str | None, workers: int | None, timeout: float | None,
              on_start: Callable[[int, Unit], None] | None,
              on_outcome: Callable[[Outcome, Unit], None] | None, order: Sequence[int]) -> list[Outcome]:
    try:
        from distributed import Client, LocalCluster, as_completed
    except ImportError as exc:
        raise ValueError("a Dask run (--scheduler or --workers) needs the distributed package: pip install"
                         f" 'odeverify[dask]' ({exc})") from exc
    cluster = None
    if scheduler is None:
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                               env=dict(SINGLE_THREAD_ENV))
        client = Client(cluster)
    else:
        try:
            client = Client(scheduler, timeout=CONNECT_TIMEOUT)
        except OSError as exc:
            raise ValueError(f"scheduler={scheduler!r}: no Dask scheduler answered there ({exc}); expected the"
                             " address a `dask scheduler` printed, such as tcp://10.0.0.5:8786") from exc
    token = uuid.uuid4().hex[:8]
    outs: dict[int, Outcome] = {}
    try:
        rank = {i: len(order) - n for n, i in enumerate(order)}  # Dask runs higher priorities first
        futures = {client.submit(execute, units[i], i, key=f"odeverify-{token}-{i}", pure=False, priority=rank[i]): i
                   for i in order}
        if on_start is not None:
            for i, unit in enumerate(units):
                on_start(i, unit)
        stream = as_completed(list(futures))
        remaining = set(futures)
        last = time.monotonic()
        while remaining:
            batch = stream.next_batch(block=False) if timeout is not None else [next(stream)]
            if not batch:
                if timeout is not None and time.monotonic() - last > timeout:
                    for fut in list(remaining):
                        i = futures[fut]
                        fut.cancel()
                        out = Outcome(index=i, label=units[i].label,
                                      error=f"no unit of the run finished for {timeout:g} s (the time limit on a"
                                            " Dask cluster); cancelled")
                        outs[i] = out
                        remaining.discard(fut)
                        if on_outcome is not None:
                            on_outcome(out, units[i])
                    break
                time.sleep(0.2)
                continue
            last = time.monotonic()
            for fut in batch:
                remaining.discard(fut)
                i = futures[fut]
                try:
                    out = fut.result()
                except Exception as exc:  # noqa: BLE001 - a worker that died (KilledWorker) or a lost result
                    out = Outcome(index=i, label=units[i].label,
                                  error=f"failed on the cluster: {type(exc).__name__}: {exc}")
                outs[i] = out
                if on_outcome is not None:
                    on_outcome(out, units[i])
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    return [outs[i] for i in range(len(units))]


def records_of(outcomes: Sequence[Outcome], units: Sequence[Unit]) -> list[Record]:
    """Every outcome's records in the order of the units; a unit that did not finish gives
    its error record (with the records of the cases it had finished, where it sent them)."""
    out: list[Record] = []
    for o, u in zip(outcomes, units):
        if o.error is None:
            out += o.records
        else:
            out += [r for _, r in o.streamed + o.cases] + [o.error_record(u)]
    return out


__all__ = ["DEFAULT_TIMEOUT", "Outcome", "Unit", "default_jobs", "execute", "records_of", "run_units",
           "validate_jobs", "validate_timeout"]
