"""``diagnose(field, z0, t_span, ...) -> Diagnosis``: every measurement on one model.

Bad input raises before any work (:meth:`UserModel.build`). Then each measurement runs on
its own: one that raises becomes an ``error`` record naming the exception (the others still
run), and a diagnosis interrupted (Ctrl-C) keeps the records it has, with ``complete=False``.
"""
from __future__ import annotations

import importlib
import inspect
import math
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..records import Record, count_verdicts
from .measures import MEASUREMENTS, Context
from .model import UserModel

#: the JSON schema of a diagnosis (``odeverify diagnose --json``); fields are only added within a version
DIAGNOSE_SCHEMA = "odeverify.diagnose/1"

#: the dynamics measurements (odeverify.diagnose.dynamics), by the property names their records use
DYNAMICS_PROPERTIES = ("diagnose_lyapunov", "diagnose_sensitivity", "diagnose_gradient_spread")


@dataclass
class Diagnosis:
    """The records of one diagnosis, with the model they describe.

    ``records``: one per failure mode (``diagnose_<mode>``), in the order they ran;
    ``complete``: False when the run ended early (interrupted: the records it has are kept);
    ``elapsed_s``: wall time. :meth:`summary` is the terminal table's rows, :meth:`to_dict`
    the ``odeverify.diagnose/1`` JSON document.
    """

    model: dict[str, Any]
    records: list[Record] = field(default_factory=list)
    complete: bool = True
    elapsed_s: float = 0.0
    quick: bool = False

    @property
    def failed(self) -> list[Record]:
        """The records that flag a failure mode or could not be measured (fail, error)."""
        return [r for r in self.records if r.verdict in ("fail", "error")]

    @property
    def healthy(self) -> bool:
        return self.complete and not self.failed

    def record(self, prop: str) -> Record | None:
        """The record of a property (``"diagnose_work"``, or just ``"work"``), or None."""
        name = prop if prop.startswith("diagnose_") else f"diagnose_{prop}"
        return next((r for r in self.records if r.property == name), None)

    def summary(self) -> list[dict[str, Any]]:
        """One row per failure mode: mode, measured, threshold, verdict, recommendation, message."""
        return [{"mode": r.property.removeprefix("diagnose_"), "measured": r.measured, "threshold": r.expected,
                 "verdict": r.verdict, "recommendation": r.details.get("recommendation") or r.message,
                 "message": r.message}
                for r in self.records]

    def to_dict(self) -> dict[str, Any]:
        from .. import __version__

        return {"schema": DIAGNOSE_SCHEMA, "version": __version__, "model": self.model, "quick": self.quick,
                "complete": self.complete, "elapsed_s": self.elapsed_s, "counts": count_verdicts(self.records),
                "summary": [{k: _json_float(v) for k, v in row.items()} for row in self.summary()],
                "records": [r.to_dict() for r in self.records]}

    def table(self, width: int = 100) -> str:
        """The terminal table: one line per failure mode (measured, threshold, verdict,
        recommendation), the recommendation wrapped under it."""
        head = f"{'failure mode':<20} {'measured':>10} {'threshold':>10}  {'verdict':<8} recommendation"
        lines = [head, "-" * min(width, len(head) + 40)]
        for row in self.summary():
            m = "-" if row["measured"] is None else f"{row['measured']:.3g}"
            t = "-" if row["threshold"] is None else f"{row['threshold']:.3g}"
            rec = row["recommendation"] if row["verdict"] in ("fail", "error") else row["message"]
            first, rest = _wrap(rec, max(30, width - 54))
            lines.append(f"{row['mode']:<20} {m:>10} {t:>10}  {row['verdict'].upper():<8} {first}")
            lines += [" " * 54 + part for part in rest]
        state = "complete" if self.complete else "INCOMPLETE (ended early)"
        counts = count_verdicts(self.records)
        lines.append(f"{len(self.records)} measurements ({state}, {self.elapsed_s:.1f} s): {counts['fail']} failure"
                     f" mode(s) flagged, {counts['error']} error(s), {counts['skip']} skipped")
        return "\n".join(lines)


def _wrap(text: str, width: int) -> tuple[str, list[str]]:
    import textwrap

    parts = textwrap.wrap(text, width) or [""]
    return parts[0], parts[1:]


def _json_float(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return v


#: the dynamics measurements: (name, function in odeverify.diagnose.dynamics)
DYNAMICS = (("lyapunov", "diagnose_lyapunov"), ("sensitivity", "diagnose_sensitivity"),
            ("gradient_spread", "diagnose_gradient_spread"))
#: samples the dynamics measurements take in a quick run (their own default otherwise)
QUICK_DYNAMICS_SAMPLES = 2


def dynamics_measurements() -> tuple[tuple[str, Callable[[Context], Any]], ...] | str:
    """The dynamics measurements of :mod:`odeverify.diagnose.dynamics` as (name, function of
    the :class:`Context`) pairs, or the reason they are not available (a str)."""
    try:
        mod = importlib.import_module(".dynamics", __package__)
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.endswith("diagnose.dynamics"):
            return "the dynamics measurements (odeverify.diagnose.dynamics) are not installed in this version"
        return f"the dynamics measurements could not be imported: {exc}"
    except Exception as exc:  # noqa: BLE001 - a broken module is reported, not fatal
        return f"the dynamics measurements could not be imported: {type(exc).__name__}: {exc}"
    pairs = []
    for name, attr in DYNAMICS:
        fn = getattr(mod, attr, None)
        if callable(fn):
            pairs.append((name, _dynamics_adapter(fn)))
    return tuple(pairs) or "odeverify.diagnose.dynamics defines none of " + ", ".join(a for _, a in DYNAMICS)


def _dynamics_adapter(fn: Callable[..., Any]) -> Callable[[Context], Any]:
    """``fn(model)`` (``max_samples`` lowered in a quick run) as a measurement of the context."""
    takes_samples = "max_samples" in inspect.signature(fn).parameters

    def run(ctx: Context) -> Any:
        kw = {"max_samples": QUICK_DYNAMICS_SAMPLES} if ctx.quick and takes_samples else {}
        return fn(ctx.model, **kw)

    run.__name__ = fn.__name__
    return run


def _error_record(model: UserModel, name: str, exc: BaseException) -> Record:
    tb = traceback.extract_tb(exc.__traceback__)
    where = f" at {tb[-1].filename.rsplit('/', 1)[-1]}:{tb[-1].lineno}" if tb else ""
    return Record(property=f"diagnose_{name}", method=model.method, problem=model.name, measured=None,
                  expected=None, verdict="error", library=model.library, status="failed",
                  message=f"the measurement raised {type(exc).__name__}{where}: {exc}",
                  details={"recommendation": "report this (the other measurements are unaffected)",
                           "exception": type(exc).__name__})


def _as_records(out: Any) -> list[Record]:
    if isinstance(out, Record):
        return [out]
    return [r for r in out if isinstance(r, Record)]


def diagnose(field_obj: Any, z0: Any, t_span: Any, *, t_eval: Any = None, method: str | None = None,
             mode: str | None = None, rtol: float | None = None, atol: float | None = None, quick: bool = False,
             only: Any = None, library: str | None = None, name: str | None = None,
             progress: Callable[[Record], None] | None = None,
             on_start: Callable[[str, int, int], None] | None = None) -> Diagnosis:
    """Diagnose a Neural ODE: each failure mode measured on the user's field, with a verdict.

    Parameters
    ----------
    field_obj : callable, module or str
        ``f(t, z)`` with ``z`` of shape ``(B, n)``: a PyTorch ``nn.Module`` or callable, an
        Equinox module or JAX callable, a NumPy callable, or an import path ``"pkg.mod:attr"``.
    z0 : array, ``.npy`` path or spec
        The initial-state batch ``(B, n)``, a file, or ``"normal:256"``-style spec
        (:func:`odeverify.diagnose.model.parse_z0`).
    t_span : (t0, t1) or "t0,t1"; t_eval : output times (default t_span)
    method, mode, rtol, atol
        The solver, gradient mode and tolerances you train with (default dopri5, none,
        1e-6, 1e-9).
    quick : bool
        Fewer samples, solvers and tolerances (4-sample subsample instead of 16).
    only : sequence of str, optional
        Run only these measurements (names without ``diagnose_``).
    progress : callable(Record), optional
        Called with each record as it is made. ``on_start(name, i, total)`` before each.

    Returns
    -------
    Diagnosis
        Bad input raises ValueError (TypeError for a wrong type) naming what is wrong,
        before any measurement runs.
    """
    model = field_obj if isinstance(field_obj, UserModel) else UserModel.build(
        field_obj, z0, t_span, t_eval=t_eval, method=method, mode=mode, rtol=rtol, atol=atol, library=library,
        name=name)
    plan = list(MEASUREMENTS)
    dyn = dynamics_measurements()
    if isinstance(dyn, str):
        dyn_reason = dyn
    else:
        dyn_reason = None
        plan += list(dyn)
    if only is not None:
        wanted = [str(w).removeprefix("diagnose_") for w in ([only] if isinstance(only, str) else only)]
        known = [n for n, _ in plan]
        unknown = [w for w in wanted if w not in known]
        if unknown:
            raise ValueError(f"only={unknown!r}: unknown measurement(s); expected some of {', '.join(known)}")
        plan = [(n, f) for n, f in plan if n in wanted]
    ctx = Context(model=model, quick=quick)
    diag = Diagnosis(model=model.describe(), quick=quick)
    start = time.perf_counter()
    try:
        if dyn_reason is not None and (only is None):
            rec = Record(property="diagnose_dynamics", method=model.method, problem=model.name, measured=None,
                         expected=None, verdict="skip", library=model.library, message=dyn_reason,
                         details={"recommendation": "upgrade odeverify for the Lyapunov and sensitivity measurements"})
            diag.records.append(rec)
            if progress is not None:
                progress(rec)
        for i, (name_, fn) in enumerate(plan):
            if on_start is not None:
                on_start(name_, i, len(plan))
            t = time.perf_counter()
            try:
                with np.errstate(all="ignore"), warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)  # NaN rows of a blown-up batch: reported
                    recs = _as_records(fn(ctx))
            except (KeyboardInterrupt, SystemExit):
                raise
            except Exception as exc:  # noqa: BLE001 - one measurement's failure is its record
                recs = [_error_record(model, name_, exc)]
            for rec in recs:
                rec.details.setdefault("wall_s", time.perf_counter() - t)
                diag.records.append(rec)
                if progress is not None:
                    progress(rec)
    except KeyboardInterrupt:
        diag.complete = False
        diag.elapsed_s = time.perf_counter() - start
        diag.interrupted = True  # type: ignore[attr-defined]
        return diag
    diag.elapsed_s = time.perf_counter() - start
    return diag
