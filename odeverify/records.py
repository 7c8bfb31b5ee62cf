"""Records are the currency: every property returns one; tests, benchmarks and reports read them."""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

#: ``unavailable``: the library under test is not installed, so nothing was checked and
#: nothing failed (its record carries the install hint); never counted as a failure
VERDICTS = ("pass", "fail", "deviation", "error", "skip", "unavailable")
#: the verdicts that make a run fail
FAILING = ("fail", "error")


def _clean(x: Any) -> Any:
    """JSON-safe: numpy scalars to Python, non-finite floats to strings."""
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if hasattr(x, "item") and not isinstance(x, (str, bytes)):
        try:
            x = x.item()
        except (ValueError, TypeError):
            x = x.tolist()
            return _clean(x)
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    return x


@dataclass
class Record:
    """One measurement of one property for one (backend, method, problem, library, dtype).

    ``measured`` is the headline number (e.g. a fitted order), ``expected`` what theory
    says, ``verdict`` one of :data:`VERDICTS` and ``details`` the raw data (sweeps, windows).
    ``status`` is the solver status code when a solve failed.
    """

    property: str
    method: str
    problem: str
    measured: float | None
    expected: float | None
    verdict: str
    backend: str = "reference"
    library: str = "numpy"
    dtype: str = "float64"
    status: str = "success"
    message: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.method = str(getattr(self.method, "name", self.method))
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict={self.verdict!r}; expected one of {VERDICTS}")

    @property
    def passed(self) -> bool:
        return self.verdict == "pass"

    def to_dict(self) -> dict[str, Any]:
        return _clean(asdict(self))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Record:
        """The record of :meth:`to_dict`'s output (``"inf"``/``"nan"`` strings of ``measured``
        and ``expected`` back to floats), so ``from_dict(r.to_dict()).to_dict() == r.to_dict()``."""
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"record fields {sorted(unknown)}; expected some of {sorted(names)}")
        d = dict(d)
        for k in ("measured", "expected"):
            if isinstance(d.get(k), str):
                d[k] = float(d[k])
        return cls(**d)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    def describe(self) -> str:
        m = "n/a" if self.measured is None else f"{self.measured:.4g}"
        e = "n/a" if self.expected is None else f"{self.expected:.4g}"
        return (
            f"{self.property}[{self.backend}/{self.library}/{self.dtype}] {self.method} on {self.problem}:"
            f" measured={m}, expected={e}, verdict={self.verdict}"
            + (f" ({self.message})" if self.message else "")
        )


def unavailable_record(backend: str, install_hint: str, *, property: str = "available") -> Record:
    """The one record of a backend that is not installed: verdict ``unavailable``, with the
    install hint in the message and in ``details["install_hint"]``."""
    hint = f"; install with: {install_hint}" if install_hint else ""
    return Record(property=property, method="*", problem="-", measured=None, expected=None, verdict="unavailable",
                  status="unavailable", backend=backend, message=f"{backend} is not installed{hint}",
                  details={"install_hint": install_hint})


#: detail keys that measure time or the machine's load, not the computation: the only parts of
#: a record allowed to differ between two runs of the same case (serial, parallel, on a cluster)
TIMING_KEYS = frozenset({"wall_s", "wall_min", "wall_max", "wall_repeats", "load_1min", "compile_s", "cpu_s",
                         "forward_s", "backward_s", "elapsed", "elapsed_s", "seconds"})


def without_timings(record: Any) -> Any:
    """A record (or its dict) as plain JSON without :data:`TIMING_KEYS` at any depth: what
    must be identical between two runs of the same cases."""
    data = record.to_dict() if isinstance(record, Record) else record
    if isinstance(data, dict):
        return {k: without_timings(v) for k, v in data.items() if k not in TIMING_KEYS}
    if isinstance(data, (list, tuple)):
        return [without_timings(v) for v in data]
    return data


def count_verdicts(records: Any) -> dict[str, int]:
    """``{verdict: count}`` over :data:`VERDICTS` (every key present) of records or their dicts."""
    out = dict.fromkeys(VERDICTS, 0)
    for r in records:
        v = r["verdict"] if isinstance(r, dict) else r.verdict
        out[v] = out.get(v, 0) + 1
    return out
