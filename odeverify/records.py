"""Records are the currency: every property returns one; tests, benchmarks and reports read them."""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any

VERDICTS = ("pass", "fail", "deviation", "error", "skip")


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
