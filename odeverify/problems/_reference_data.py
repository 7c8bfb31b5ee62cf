"""Cached high-precision reference solutions (``data/references.json``).

The data file is written by :mod:`odeverify.problems.make_references` (run
``python -m odeverify.problems.make_references``) and read here when the problem modules are
imported. Each entry carries a *fingerprint* of the problem it was computed for (its y0,
t_span and parameters, bit for bit) and the value of ``f(t0, y0)``, so a problem edited
after its reference was computed gets no stale reference: :func:`computed_references`
returns nothing for it, and the tests (which require every target to have its reference)
fail until the data file is regenerated.
"""
from __future__ import annotations

import functools
import hashlib
import json
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from ._spec import Problem, Reference

#: the data file written by make_references
DATA_PATH = Path(__file__).with_name("data") / "references.json"

#: relative agreement required between the stored f(t0, y0) and the current one
F0_RTOL = 1e-12


def fingerprint(problem: Problem) -> str:
    """SHA-256 of the problem's name, y0, t_span and parameters (exact bits, little-endian)."""
    h = hashlib.sha256()
    h.update(problem.name.encode())
    h.update(np.asarray(problem.y0, dtype="<f8").tobytes())
    h.update(np.asarray(problem.t_span, dtype="<f8").tobytes())
    for key in sorted(problem.params):
        value = problem.params[key]
        h.update(key.encode())
        if isinstance(value, np.ndarray):
            h.update(str(value.shape).encode())
            h.update(np.ascontiguousarray(value, dtype="<f8").tobytes())
        elif isinstance(value, float):
            h.update(np.asarray(value, dtype="<f8").tobytes())
        else:
            h.update(repr(value).encode())
    return h.hexdigest()


def f0(problem: Problem) -> np.ndarray:
    """``f(t0, y0)`` in NumPy float64 (stored beside each reference to detect rhs edits)."""
    import array_api_compat.numpy as xnp

    f = problem.vector_field(xnp, dtype=xnp.float64)
    y0 = np.asarray(problem.y0, dtype=np.float64)
    return np.asarray(f(np.asarray(problem.t_span[0], dtype=np.float64), y0), dtype=np.float64)


@functools.lru_cache(maxsize=1)
def load() -> dict[str, Any]:
    """The parsed data file (an empty table if it does not exist yet)."""
    if not DATA_PATH.exists():
        return {"meta": {}, "problems": {}}
    with DATA_PATH.open(encoding="utf-8") as fh:
        return json.load(fh)


def entry_status(problem: Problem) -> str:
    """``"ok"``, ``"missing"``, ``"stale-fingerprint"`` or ``"stale-rhs"`` for ``problem``."""
    entry = load()["problems"].get(problem.name)
    if entry is None:
        return "missing"
    if entry.get("fingerprint") != fingerprint(problem):
        return "stale-fingerprint"
    stored = np.asarray(entry.get("f0", []), dtype=np.float64)
    current = f0(problem)
    if stored.shape != current.shape or not np.allclose(
        stored, current, rtol=F0_RTOL, atol=F0_RTOL * max(1.0, float(np.max(np.abs(current))))
    ):
        return "stale-rhs"
    return "ok"


def computed_references(problem: Problem) -> tuple[Reference, ...]:
    """The cached references of ``problem`` (empty if missing or stale)."""
    status = entry_status(problem)
    if status != "ok":
        if status != "missing":
            warnings.warn(
                f"problem {problem.name!r}: cached reference is {status}; regenerate with"
                " `python -m odeverify.problems.make_references`",
                UserWarning,
                stacklevel=2,
            )
        return ()
    entry = load()["problems"][problem.name]
    meta = load()["meta"]
    source = (
        f"scipy {meta.get('scipy', '?')} solve_ivp(method={entry['method']!r},"
        f" rtol={entry['rtol']:g}, atol={entry['atol']:g}), one solve per output time;"
        f" check solve rtol={entry['check_rtol']:g}; computed {meta.get('date', '?')}"
        f" by odeverify.problems.make_references"
    )
    return tuple(
        Reference(t=float(r["t"]), y=tuple(float(v) for v in r["y"]), kind="computed",
                  source=source, digits=int(r["digits"]))
        for r in entry["references"]
    )


def with_computed_references(problem: Problem) -> Problem:
    """``problem`` with its cached references attached (and tag ``has_reference``)."""
    refs = computed_references(problem)
    if not refs:
        return problem
    return replace(problem, references=problem.references + refs,
                   tags=problem.tags | {"has_reference"})
