"""Work as a property: the exact work counters of the reference solvers, against theory and a baseline.

A fault that changes only the work (a step-size safety factor slightly off, an order-selection
rule off by one, an error norm that counts one component too many) leaves every answer within
its tolerance, so no accuracy or order check sees it. The counters see it. For each reference
method, on a small fixed set of problems and tolerances (:data:`CASES`), :func:`work` solves in
NumPy float64 and compares ``nfev``, ``accepted``, ``rejected``, ``njev``, ``nlu`` and
``newton_iters``

(a) with the identities the loop makes exact (``integrate.solve``: f(t0, y0) and the initial
    step cost 2 evaluations in adaptive mode, 1 in fixed mode; s stages, FSAL or not):

    =====================  =========================================================
    explicit RK, fixed      nfev = s n (FSAL: 1 + (s - 1) n), accepted = n, rejected = 0
    explicit RK, adaptive   nfev = 2 + (s - 1)(accepted + rejected) (+ accepted - 1 when
                            not FSAL: f(t1, y1) of each accepted step but the last)
    reversible Heun         nfev = 1 + n (fixed), 2 + accepted + rejected (adaptive)
    DIRK, BDF               nfev = start-up + newton_iters + (n + 1) njev for a NumPy
                            finite-difference Jacobian (one evaluation per Newton
                            iteration; stiffly accurate: the last stage is y1)
    Radau IIA               nfev - (s newton_iters + start-up + accepted - 1 + (n + 1) njev_fd)
                            in [0, rejected + 1] (the error estimate is filtered with one
                            more evaluation on the first step and after a rejection)
    implicit                njev <= nlu (a new Jacobian always needs a new LU)
    =====================  =========================================================

(b) with a recorded baseline, ``odeverify/data/work_baseline.json``, written by
    ``python -m odeverify.properties.work --update``: any change is a ``fail`` naming the
    counter, the baseline and the measured value. A change of the work is then made on purpose,
    with the baseline regenerated and the change explained in the same commit.

Determinism across machines: the counts are decisions (accept or reject, the next order, when to
refresh a Jacobian) taken on float64 values computed in one thread (states of at most 8
components: no threaded BLAS path), so they are exact unless a decision sits within a few ulps of
its threshold, where another libm or LAPACK build could tip it. The generator checks this for
every case: it solves again with y0 and rtol moved up and down by :data:`PERTURB_ULPS` ulps and records the
largest relative change of any counter as the case's ``spread``. A case with spread 0 is compared
exactly; otherwise the comparison allows twice the recorded spread (a measured tolerance, named in
the record). The planted faults of ``tests/test_work.py`` move the counters by 2-40 %, far above
any recorded spread.
"""
from __future__ import annotations

import json
import os
import platform
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from .. import _xp
from ..integrate import solve
from ..problems import PROBLEMS, Problem
from ..problems.make_references import write_atomically
from ..records import Record

#: the counters compared, in the order they are reported
COUNTERS = ("nfev", "accepted", "rejected", "njev", "nlu", "newton_iters")
#: how far y0 and rtol are moved (in ulps) when the generator measures a case's sensitivity
PERTURB_ULPS = 8
#: the command that writes the baseline (named in messages)
UPDATE_COMMAND = "python -m odeverify.properties.work --update"
BASELINE_FILE = "work_baseline.json"
#: fixed-step cases: this many equal steps
FIXED_STEPS = 16
#: the stiff problem of the implicit fixed-step cases: Prothero-Robinson with this lambda
PR_LAMBDA = -1e6


@dataclass(frozen=True)
class WorkCase:
    """One solve whose counters are checked: a problem, and either ``n_steps`` (fixed) or
    ``rtol`` (adaptive; ``atol`` beside it), with the analytic (``jac="analytic"``) or a
    finite-difference (``"fd"``) Jacobian for implicit methods."""

    problem: str
    n_steps: int | None = None
    rtol: float | None = None
    atol: float | None = None
    jac: str | None = None

    @property
    def label(self) -> str:
        mode = f"n_steps={self.n_steps}" if self.n_steps is not None else f"rtol={self.rtol:g},atol={self.atol:g}"
        return mode + (f",jac={self.jac}" if self.jac else "")


def _solver(method: str) -> Any:
    if method == "reversible_heun":
        from ..solvers.reversible import ReversibleHeun

        return ReversibleHeun()
    from ..solvers import SOLVERS

    return SOLVERS.get(method)


def methods() -> list[str]:
    """Every reference method with a work baseline: the registered solvers and reversible Heun."""
    from ..solvers import SOLVERS

    return [*SOLVERS.names(), "reversible_heun"]


def cases(method: str) -> list[WorkCase]:
    """The fixed cases of ``method``: explicit methods on warped_oscillatory (16 fixed steps, and
    adaptive at rtol 1e-4 for order <= 2, else 1e-6, atol = 1e-3 rtol); implicit ones with 16
    fixed steps on Prothero-Robinson (lambda = -1e6) and adaptive on HIRES at rtol = atol = 1e-6
    with the analytic and with a finite-difference Jacobian; BDF also on ROBER."""
    s = _solver(method)
    variable = getattr(s, "variable_order", False)
    out: list[WorkCase] = []
    if getattr(s, "implicit", False):
        if not variable:
            out.append(WorkCase("prothero_robinson", n_steps=FIXED_STEPS, jac="analytic"))
        if s.adaptive:
            out += [WorkCase("hires", rtol=1e-6, atol=1e-6, jac=j) for j in ("analytic", "fd")]
        if variable:
            out.append(WorkCase("rober", rtol=1e-6, atol=1e-10, jac="analytic"))
        return out
    out.append(WorkCase("warped_oscillatory", n_steps=FIXED_STEPS))
    if s.adaptive:
        rtol = 1e-4 if s.order <= 2 else 1e-6
        out.append(WorkCase("warped_oscillatory", rtol=rtol, atol=rtol * 1e-3))
    return out


def _problem(name: str) -> Problem:
    if name == "prothero_robinson":
        from .stiffness import prothero_robinson

        return prothero_robinson(PR_LAMBDA)
    return PROBLEMS.get(name)


def count_work(method: str, case: WorkCase, *, y0_scale: float = 1.0, rtol_scale: float = 1.0) -> dict[str, Any]:
    """The counters of one solve of ``case`` (NumPy, float64), with its status. ``y0_scale`` and
    ``rtol_scale`` move the inputs (the generator's sensitivity check)."""
    problem = _problem(case.problem)
    xp = _xp.get_namespace("numpy")
    f = problem.vector_field(xp, np.float64)
    y0 = np.asarray(problem.y0, dtype=np.float64) * y0_scale
    kwargs: dict[str, Any] = {}
    if case.n_steps is not None:
        kwargs["n_steps"] = case.n_steps
    else:
        kwargs.update(rtol=case.rtol * rtol_scale, atol=case.atol)
    if case.jac == "analytic":
        kwargs["jac"] = problem.jacobian_field(xp, np.float64)
    with np.errstate(all="ignore"):
        sol = solve(f, y0, problem.t_span, method=_solver(method), **kwargs)
    out = {k: int(v) for k, v in sol.stats.to_dict().items() if k in COUNTERS}
    out["status"] = sol.status.code
    return out


def identities(method: str, case: WorkCase, counts: dict[str, Any]) -> list[dict[str, Any]]:
    """The theoretical identities (and bounds) that hold for ``counts`` (see the module
    docstring): one dict per check, with the formula, the expected value or range and whether
    it holds."""
    s = _solver(method)
    c = counts
    steps = c["accepted"] + c["rejected"]
    fixed = case.n_steps is not None
    startup = 1 if fixed else 2
    n = _problem(case.problem).n
    fd = (n + 1) * c["njev"] if case.jac == "fd" else 0
    checks: list[dict[str, Any]] = []

    def equal(name: str, formula: str, expected: int, measured: int) -> None:
        checks.append({"check": name, "formula": formula, "expected": int(expected), "measured": int(measured),
                       "holds": int(expected) == int(measured)})

    def within(name: str, formula: str, lo: int, hi: int, measured: int) -> None:
        checks.append({"check": name, "formula": formula, "expected": [int(lo), int(hi)], "measured": int(measured),
                       "holds": lo <= measured <= hi})

    if fixed:
        equal("accepted", "accepted = n_steps", case.n_steps, c["accepted"])
        equal("rejected", "rejected = 0 (fixed steps)", 0, c["rejected"])
    kind = type(s).__name__
    if kind == "ExplicitRK":
        st, fsal = int(s.stages), bool(s.fsal)
        if fixed:
            expect = 1 + (st - 1) * case.n_steps if fsal else st * case.n_steps
            equal("nfev", f"{'1 + (s - 1) n' if fsal else 's n'} with s = {st}", expect, c["nfev"])
        else:
            expect = 2 + (st - 1) * steps + (0 if fsal else c["accepted"] - 1)
            equal("nfev", f"2 + (s - 1)(accepted + rejected){'' if fsal else ' + accepted - 1'} with s = {st}",
                  expect, c["nfev"])
    elif method == "reversible_heun":
        equal("nfev", "1 + n" if fixed else "2 + accepted + rejected",
              1 + case.n_steps if fixed else 2 + steps, c["nfev"])
    elif kind in ("DIRK", "BDF"):
        equal("nfev", f"{startup} + newton_iters" + (" + (n + 1) njev" if fd else ""),
              startup + c["newton_iters"] + fd, c["nfev"])
    elif kind == "RadauIIA":
        st = int(s.stages)
        base = st * c["newton_iters"] + startup + c["accepted"] - 1 + fd
        within("nfev", f"s newton_iters + {startup} + accepted - 1{' + (n + 1) njev' if fd else ''}"
               " + [0, rejected + 1] with s = " + str(st), base, base + c["rejected"] + 1, c["nfev"])
    if getattr(s, "implicit", False):
        within("njev <= nlu", "a new Jacobian needs a new LU", 0, c["nlu"], c["njev"])
    return checks


# ---------------------------------------------------------------------------- baseline
def _key(method: str, case: WorkCase) -> str:
    return f"{method}|{case.problem}|{case.label}"


def baseline_path() -> Path:
    return Path(str(resources.files("odeverify.data").joinpath(BASELINE_FILE)))


@lru_cache(maxsize=4)
def _load(path: str) -> dict[str, Any]:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def load_baseline(path: str | os.PathLike | None = None) -> dict[str, Any]:
    """The recorded baseline (``{"cases": {key: counters}, ...}``); a missing file raises,
    naming the command that writes it."""
    p = Path(path) if path is not None else baseline_path()
    if not p.exists():
        raise FileNotFoundError(f"work baseline {str(p)!r} does not exist; write it with {UPDATE_COMMAND}")
    return _load(str(p))


def measure_case(method: str, case: WorkCase) -> dict[str, Any]:
    """The counters of ``case`` and their spread under input moves of PERTURB_ULPS ulps (see the
    module docstring): what the baseline records."""
    base = count_work(method, case)
    move = 1.0 + PERTURB_ULPS * np.finfo(np.float64).eps
    again = [count_work(method, case, y0_scale=m) for m in (move, 2.0 - move)]
    if case.rtol is not None:
        again += [count_work(method, case, rtol_scale=m) for m in (move, 2.0 - move)]
    spread = 0.0
    for other in again:
        for k in COUNTERS:
            if other[k] != base[k]:
                spread = max(spread, abs(other[k] - base[k]) / max(1, abs(base[k])))
    return {**base, "spread": spread}


def write_baseline(path: str | os.PathLike | None = None, method_names: Iterable[str] | None = None) -> dict[str, Any]:
    """Measure every case and write the baseline atomically; returns the document."""
    names = list(method_names) if method_names is not None else methods()
    doc = {"generated_by": UPDATE_COMMAND, "numpy": np.__version__, "python": platform.python_version(),
           "perturb_ulps": PERTURB_ULPS, "counters": list(COUNTERS), "cases": {}}
    for m in names:
        for case in cases(m):
            doc["cases"][_key(m, case)] = measure_case(m, case)
    write_atomically(doc, Path(path) if path is not None else baseline_path())
    _load.cache_clear()
    return doc


# ---------------------------------------------------------------------------- property
def _as_case(problem: Problem | str, n_steps: int | None, rtol: float | None, atol: float | None,
             jac: str | None) -> WorkCase:
    name = problem if isinstance(problem, str) else problem.name
    if name.startswith("prothero_robinson"):
        name = "prothero_robinson"
    if (n_steps is None) == (rtol is None):
        raise ValueError(f"n_steps={n_steps!r}, rtol={rtol!r}: give exactly one of them (a fixed-step or an"
                         " adaptive case)")
    if jac not in (None, "analytic", "fd"):
        raise ValueError(f"jac={jac!r}, but it must be None, 'analytic' or 'fd'")
    if rtol is not None and atol is None:
        raise ValueError(f"atol=None with rtol={rtol!r}: an adaptive case names its atol")
    return WorkCase(name, n_steps=n_steps, rtol=rtol, atol=atol, jac=jac)


def work(problem: Problem | str, method: str, *, n_steps: int | None = None, rtol: float | None = None,
         atol: float | None = None, jac: str | None = None, library: str = "numpy",
         baseline: str | os.PathLike | dict[str, Any] | None = None) -> Record:
    """The work counters of one case of a reference method, against the identities of the module
    docstring and the recorded baseline.

    ``problem`` and one of ``n_steps`` / ``rtol`` (with ``atol``) and ``jac`` name the case,
    which must be one of :func:`cases` (the baseline holds no other). ``baseline``: a path or a
    loaded document (default: the package's ``work_baseline.json``). Verdict ``fail`` when an
    identity does not hold or a counter differs from the baseline (beyond twice the case's
    recorded spread, 0 for most cases), naming the counter, the baseline and the measured value;
    ``skip`` on a library other than NumPy (the baseline is NumPy's); ``error`` when the case has
    no baseline or its solve failed. ``measured`` is nfev, ``expected`` the baseline's nfev."""
    case = _as_case(problem, n_steps, rtol, atol, jac)
    common = dict(property="work", method=method, problem=case.problem, backend="reference", library=library)
    if library != "numpy":
        return Record(measured=None, expected=None, verdict="skip", message="not applicable: the work baseline is"
                      " recorded in NumPy float64 (other array libraries round differently)", **common)
    if method not in methods():
        raise ValueError(f"method={method!r} is not a reference method; choices: {', '.join(methods())}")
    doc = baseline if isinstance(baseline, dict) else load_baseline(baseline)
    key = _key(method, case)
    ref = doc.get("cases", {}).get(key)
    counts = count_work(method, case)
    checks = identities(method, case, counts)
    details: dict[str, Any] = {"case": case.label, "key": key, "counts": counts, "baseline": ref,
                               "identities": checks, "update_command": UPDATE_COMMAND}
    if ref is None:
        return Record(measured=float(counts["nfev"]), expected=None, verdict="error", status="failed",
                      message=f"no baseline for {key}; the cases are work.cases({method!r}); write the baseline"
                              f" with {UPDATE_COMMAND}", details=details, **common)
    problems: list[str] = []
    if counts["status"] != "success":
        problems.append(f"the solve ended with status {counts['status']}")
    for chk in checks:
        if not chk["holds"]:
            problems.append(f"identity {chk['formula']} does not hold for {chk['check']}: expected"
                            f" {chk['expected']}, measured {chk['measured']}")
    spread = float(ref.get("spread", 0.0))
    allowed = 2.0 * spread
    details["allowed_relative_change"] = allowed
    for k in COUNTERS:
        b, m = int(ref[k]), int(counts[k])
        if b != m and abs(m - b) > allowed * max(1, abs(b)):
            problems.append(f"{k} = {m}, baseline {b} ({'+' if m > b else ''}{(m - b) / max(1, abs(b)):.1%})")
    how = "exactly" if allowed == 0 else f"within {allowed:.2%} (twice the spread measured at generation)"
    if problems:
        return Record(measured=float(counts["nfev"]), expected=float(ref["nfev"]), verdict="fail",
                      status=counts["status"] if counts["status"] != "success" else "success",
                      message=f"{method} on {case.problem} ({case.label}): " + "; ".join(problems)
                              + f". If the change is intended, rerun {UPDATE_COMMAND} and explain it in the commit",
                      details=details, **common)
    return Record(measured=float(counts["nfev"]), expected=float(ref["nfev"]), verdict="pass",
                  message=f"{len(checks)} identities hold; {', '.join(COUNTERS)} equal the baseline {how}",
                  details=details, **common)


def work_records(method: str, *, library: str = "numpy", baseline: Any = None) -> list[Record]:
    """:func:`work` for every case of ``method``."""
    return [work(c.problem, method, n_steps=c.n_steps, rtol=c.rtol, atol=c.atol, jac=c.jac, library=library,
                 baseline=baseline) for c in cases(method)]


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m odeverify.properties.work",
                                 description="Check (default) or rewrite (--update) the work baseline of the"
                                             " reference solvers.")
    ap.add_argument("--update", action="store_true", help="measure every case and rewrite the baseline")
    ap.add_argument("--path", default=None, help="baseline file (default: the package's)")
    args = ap.parse_args(argv)
    if args.update:
        doc = write_baseline(args.path)
        unstable = {k: v["spread"] for k, v in doc["cases"].items() if v["spread"]}
        print(f"wrote {len(doc['cases'])} cases to {args.path or baseline_path()}")
        for k, v in unstable.items():
            print(f"  {k}: counters move by up to {v:.2%} when the inputs move by {PERTURB_ULPS} ulps")
        return 0
    failed = 0
    for m in methods():
        for r in work_records(m, baseline=args.path):
            print(f"{r.verdict:5s} {m:16s} {r.problem:20s} {r.details['case']:32s} {r.message[:150]}")
            failed += r.verdict != "pass"
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
