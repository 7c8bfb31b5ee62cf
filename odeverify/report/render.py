"""Records (the JSON document of :func:`odeverify.report.collect.collect`) to one
self-contained HTML page: inline CSS, inline SVG figures, no script, no network.

Rendering reads only the document, in its JSON form, so a report rebuilt from the saved
``records.json`` is byte-identical to the one written with it. Every section is always
present: one without records says so in one line, with the reason when it is known.
"""
from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import numpy as np

from . import plots
from .plots import Colours, backend_style, floats

#: the checks of the summary matrix, in column order, with their short names
CHECK_COLUMNS = {"algebraic_order": "algebraic", "convergence_order": "order", "dense_output_order": "dense",
                 "embedded_estimate_bound": "estimate", "tolerance_proportionality": "tolerance",
                 "backend_agreement": "agreement", "batch_behaviour": "batch", "precision_agreement": "float32",
                 "reference_accuracy": "published"}
VERDICT_ORDER = ("pass", "deviation", "fail", "error", "skip", "unavailable")
VERDICT_LABEL = {"pass": "pass", "deviation": "deviation", "fail": "FAIL", "error": "ERROR", "skip": "inconclusive",
                 "unavailable": "unavailable"}
#: a matrix cell shows the worst verdict of its records, in this order: "ok" only when every
#: record passed, "~" when one is inconclusive and none failed or deviated (MATRIX_RULE)
_RANK = {"fail": 0, "error": 0, "deviation": 1, "skip": 2, "pass": 3, "unavailable": 4}
MATRIX_RULE = ("A cell sums up the check's records over its problems: <b>ok</b> every problem passed;"
               " <b>~</b> at least one was inconclusive (the data could not decide) and none failed or"
               " deviated; <b>dev</b> a documented deviation and no failure; <b>FAIL</b>/<b>ERROR</b> at least"
               " one failed or crashed; <b>n/a</b> the library is not installed; empty: not applicable.")
_SYMBOL = {"fail": "FAIL", "error": "ERROR", "deviation": "dev", "skip": "~", "pass": "ok", "unavailable": "n/a"}
#: measurements for figures rather than pass/fail checks: left out of the verdict counts
MEASUREMENTS = ("work_precision", "stability_region", "reversibility_drift", "stability_angle")
#: the errors of the "cost to reach an error" tables
COST_TARGETS = (1e-3, 1e-6, 1e-9)


@dataclass
class Table:
    caption: str
    header: list[str]
    rows: list[list[Any]]  #: cells: text, or (text, css class)
    collapsed: bool = False


@dataclass
class Section:
    id: str
    title: str
    intro: str = ""
    figures: list[dict[str, str]] = field(default_factory=list)  #: {"svg", "caption"}
    tables: list[Table] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    empty: str | None = None  #: the one line shown when there are no records


# ----------------------------------------------------------------------------- helpers
def fmt(x: Any, digits: int = 3) -> str:
    """A number for a table cell: ``-`` for missing, ``inf``/``nan`` spelled out."""
    if x is None:
        return "-"
    try:
        v = float(x)
    except (TypeError, ValueError):
        return str(x)
    if math.isnan(v):
        return "nan"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return f"{v:.{digits}g}"


def verdict_cell(v: str) -> tuple[str, str]:
    return VERDICT_LABEL.get(v, v), f"v-{v}"


class Style:
    """Colour per method (its shared tableau when the backend names one), marker and line
    style per backend, fixed for the whole document."""

    def __init__(self, doc: dict[str, Any]) -> None:
        self.backends = [row["name"] for row in doc.get("backends", [])]
        self.info = {row["name"]: row.get("method_info", {}) for row in doc.get("backends", [])}
        self.sde_info = {row["name"]: row.get("sde_method_info", {}) for row in doc.get("backends", [])}
        self.colours = Colours()

    def key(self, backend: str, method: str) -> str:
        info = self.info.get(backend, {}).get(method) or {}
        return str(info.get("tableau") or method).lower()

    def colour(self, backend: str, method: str) -> str:
        return self.colours(self.key(backend, method))

    def sde_line(self, backend: str, method: str) -> dict[str, str]:
        """As :meth:`line` for an SDE method: its colour is its step rule's (one rule, one colour
        in every library)."""
        info = self.sde_info.get(backend, {}).get(method) or {}
        idx = self.backends.index(backend) if backend in self.backends else 0
        marker, _ = backend_style(backend, idx)
        # a solid line: an SDE figure shows one library, and its fit is the dotted line
        return {"colour": self.colours("sde:" + str(info.get("rule") or method).lower()), "marker": marker,
                "linestyle": "-"}

    def line(self, backend: str, method: str) -> dict[str, str]:
        idx = self.backends.index(backend) if backend in self.backends else 0
        marker, ls = backend_style(backend, idx)
        return {"colour": self.colour(backend, method), "marker": marker, "linestyle": ls}


def by(records: Sequence[dict], *keys: str) -> dict[tuple, list[dict]]:
    """Group records by ``keys``, groups in order of first appearance."""
    out: dict[tuple, list[dict]] = {}
    for r in records:
        out.setdefault(tuple(r.get(k) for k in keys), []).append(r)
    return out


def fit_line(h: np.ndarray, e: np.ndarray, window: dict | None, slope: float | None) -> tuple | None:
    """(slope, intercept) of log10 e = slope log10 h + intercept through the window's points."""
    if not window or slope is None:
        return None
    lo, hi = float(window["h_min"]), float(window["h_max"])
    inside = (h >= lo * (1 - 1e-9)) & (h <= hi * (1 + 1e-9)) & (e > 0) & np.isfinite(e)
    if inside.sum() < 2:
        return None
    intercept = float(np.mean(np.log10(e[inside]) - float(slope) * np.log10(h[inside])))
    return float(slope), intercept


def empty_line(doc: dict, what: str, key: str, default: str) -> str:
    reason = doc.get("unavailable", {}).get(key)
    return reason if reason else f"no {what} records: {default}"


def _figure_id(counter: list[int]) -> str:
    counter[0] += 1
    return f"fig{counter[0]}"


def message_rows(records: Sequence[dict], *, with_status: bool = False) -> list[list[Any]]:
    rows = []
    for r in records:
        row = [r["backend"], r["property"], r["method"], r["problem"]]
        if with_status:
            row += [verdict_cell(r["verdict"]), r.get("status", "")]
        rows.append(row + [r.get("message") or "-"])
    return rows


# ----------------------------------------------------------------------------- sections
def backend_rows(doc: dict, records: list[dict]) -> list[dict[str, Any]]:
    """One row per backend of the summary, from the records themselves (the header counts the
    same rows): the backends the run listed, then any other a record names (gradients of
    "reference" run on reference-torch). A backend is unavailable when a record says so
    (verdict ``unavailable``) or the run found it missing; the install hint comes along."""
    checks = [r for r in records if r["property"] not in MEASUREMENTS]
    declared = {b["name"]: b for b in doc.get("backends", [])}
    names = list(dict.fromkeys([*declared, *(r["backend"] for r in checks)]))
    rows = []
    for name in names:
        b = declared.get(name, {})
        mine = [r for r in checks if r["backend"] == name]
        missing = [r for r in mine if r["verdict"] == "unavailable"]
        available = bool(b.get("available", True)) and not missing
        hint = b.get("install_hint") or next(((r.get("details") or {}).get("install_hint") for r in missing), "") or ""
        methods = b.get("methods") or sorted({r["method"] for r in mine if r["method"] != "*"})
        rows.append({"name": name, "available": available, "install_hint": hint, "methods": methods,
                     "records": mine})
    return rows


def summary_section(doc: dict, records: list[dict]) -> Section:
    sec = Section("summary", "Summary verdicts",
                  "Each check compares a measurement with what theory says. <b>pass</b>: confirmed;"
                  " <b>deviation</b>: a known, documented departure (reason below, from"
                  " odeverify/data/expected_failures.toml); <b>FAIL</b>/<b>ERROR</b>: a finding or a crash;"
                  " <b>inconclusive</b> (<b>~</b> in the matrices): the data could not decide (e.g. no"
                  " asymptotic window above round-off); <b>unavailable</b>: the library is not installed, so"
                  " nothing was checked and nothing failed (the install hint is beside it).")
    if not records:
        sec.empty = "no records: no backend, method or check ran"
    checks = [r for r in records if r["property"] not in MEASUREMENTS]
    rows = []
    for b in backend_rows(doc, records):
        mine = b["records"]
        counts = [str(sum(r["verdict"] == v for r in mine)) for v in VERDICT_ORDER]
        avail = "yes" if b["available"] else (f"no: {b['install_hint']}" if b["install_hint"] else "no")
        worst = min((r["verdict"] for r in mine), key=lambda v: _RANK.get(v, 0), default="skip")
        rows.append([b["name"], (avail, "" if b["available"] else "v-unavailable"), str(len(b["methods"])),
                     *counts, verdict_cell(worst)])
    sec.tables.append(Table("Verdicts per backend (checks; measurements such as work-precision excluded)",
                            ["backend", "available", "methods", *[VERDICT_LABEL[v] for v in VERDICT_ORDER],
                             "worst"], rows))
    sec.notes.append(MATRIX_RULE)
    for (backend,), recs in by(checks, "backend").items():
        fams = {r["property"]: family_of(doc, r) for r in recs}
        ode = [r for r in recs if not is_sde(r) and not is_flow(r) and fams[r["property"]] is None]
        sde = [r for r in recs if is_sde(r)]
        flow = [r for r in recs if is_flow(r)]
        if ode:
            sec.tables.append(_matrix(ode, CHECK_COLUMNS, f"{backend}: methods x checks (ok: every problem passed;"
                                                          " ~: some inconclusive, none failed)"))
        if sde:
            sec.tables.append(_matrix(sde, SDE_COLUMNS, f"{backend}: SDE methods x SDE checks (section"
                                                        " 'Stochastic differential equations')"))
        if flow:
            sec.tables.append(_matrix(flow, FLOW_COLUMNS, f"{backend}: methods x flow checks (section"
                                                          " 'Continuous normalizing flows')"))
        for name, desc in (doc.get("families") or {}).items():
            mine = [r for r in recs if fams[r["property"]] == name]
            if mine:
                sec.tables.append(_matrix(mine, {}, f"{backend}: methods x {name} checks (section"
                                                    f" '{desc.get('title', name)}')"))
    devs = [r for r in records if r["verdict"] == "deviation"]
    sec.tables.append(Table(f"Expected deviations ({len(devs)}), with their reasons",
                            ["backend", "property", "method", "problem", "reason"], message_rows(devs)))
    bad = [r for r in checks if r["verdict"] in ("fail", "error")]
    sec.tables.append(Table(f"Failures and errors of checks ({len(bad)}; failed solves of the measurements"
                            " are listed in their sections)",
                            ["backend", "property", "method", "problem", "verdict", "status", "message"],
                            message_rows(bad, with_status=True)))
    if not bad:
        sec.notes.append("No failures and no errors.")
    return sec


def _matrix(recs: list[dict], columns: dict[str, str], caption: str) -> Table:
    """One backend's methods x checks matrix: a column per property (those of ``columns`` in
    its order, with its short name, then any other), a cell per :func:`matrix_verdict`."""
    props = [p for p in columns if any(r["property"] == p for r in recs)]
    props += sorted({r["property"] for r in recs} - set(columns))
    rows = []
    for m in dict.fromkeys(r["method"] for r in recs):
        row: list[Any] = [m]
        for p in props:
            vs = [r["verdict"] for r in recs if r["method"] == m and r["property"] == p]
            worst = matrix_verdict(vs) if vs else None
            row.append((_SYMBOL.get(worst, worst), f"v-{worst}") if worst else "")
        rows.append(row)
    return Table(caption, ["method", *[columns.get(p, p) for p in props]], rows)


def matrix_verdict(verdicts: Sequence[str]) -> str:
    """The verdict a methods x checks cell shows for its records (:data:`MATRIX_RULE`)."""
    return min(verdicts, key=lambda v: _RANK.get(v, 0))


def wp_points(record: dict) -> dict[str, list]:
    """The points of a work-precision record as columns: rtol, nfev, time (median), its spread
    (time_lo, time_hi), repeats, load, abs_error, scd, the trajectory measures, status, message
    (``details["points"]``, odeverify.properties.work_precision)."""
    pts = (record.get("details") or {}).get("points") or []
    col = {"rtol": "rtol", "nfev": "nfev", "time": "wall_s", "time_lo": "wall_min", "time_hi": "wall_max",
           "repeats": "wall_repeats", "load": "load_1min", "abs_error": "abs_error", "scd": "scd",
           "max_abs_error": "max_abs_error", "dense_abs_error": "dense_abs_error", "max_mescd": "max_mescd",
           "dense_mescd": "dense_mescd", "status": "status", "message": "message"}
    return {k: [p.get(v) for p in pts] for k, v in col.items()}


def cost_to_reach(work: Sequence[Any], errors: Sequence[Any], target: float) -> tuple[float | None, str]:
    """The work at which a work-precision line reaches the error ``target``.

    The points come in sweep order (loosest tolerance first); failed or non-finite ones are
    dropped. Between the first pair of consecutive points whose errors bracket the target,
    log10 work is interpolated linearly in log10 error (the log-log line between measured
    points). Returns ``(work, "interpolated")``; ``(w0, "bound")`` when the loosest point is
    already at or below the target (the cost is at most w0); ``(None, "not reached")`` when no
    measured point reaches it. Never extrapolated."""
    w, e = floats(work), floats(errors)
    keep = np.isfinite(w) & np.isfinite(e) & (w > 0) & (e > 0)
    w, e = w[keep], e[keep]
    if w.size == 0:
        return None, "not reached"
    if e[0] <= target:
        return float(w[0]), "bound"
    lt, lw, le = math.log10(target), np.log10(w), np.log10(e)
    for i in range(w.size - 1):
        if e[i] > target >= e[i + 1]:
            frac = (le[i] - lt) / (le[i] - le[i + 1])
            return float(10.0 ** (lw[i] + frac * (lw[i + 1] - lw[i]))), "interpolated"
    return None, "not reached"


def _cost_cells(values: list[tuple[float | None, str]], digits: int) -> list[Any]:
    """Cells of one column; the fastest is marked when it is certain: no other entry is a mere
    upper bound (whose true cost could be anything below it)."""
    known = [(v, how) for v, how in values if v is not None]
    best = None
    if known:
        i = min(range(len(values)), key=lambda j: math.inf if values[j][0] is None else values[j][0])
        others_bounded = any(how == "bound" for j, (v, how) in enumerate(values) if j != i and v is not None)
        if not others_bounded and sum(v is not None for v, _ in values) > 1:
            best = i
    cells: list[Any] = []
    for j, (v, how) in enumerate(values):
        text = "not reached" if v is None else (f"<= {fmt(v, digits)}" if how == "bound" else fmt(v, digits))
        cells.append((text + (" (fastest)" if j == best else ""), "best" if j == best else
                      ("na" if v is None else "")))
    return cells


def cost_table(problem: str, recs: list[dict], *, scd: bool) -> Table:
    """NFE and median time to reach each of :data:`COST_TARGETS`, per backend x method."""
    rows, columns = [], []
    for r in recs:
        pts = wp_points(r)
        err = [None if v is None else 10.0 ** -float(v) for v in floats(pts["scd"])] if scd else pts["abs_error"]
        columns.append([cost_to_reach(pts[key], err, t) for key in ("nfev", "time") for t in COST_TARGETS])
        rows.append([r["backend"], r["method"]])
    if columns:
        for c in range(len(columns[0])):
            cells = _cost_cells([col[c] for col in columns], 3 if c < len(COST_TARGETS) else 2)
            for row, cell in zip(rows, cells):
                row.append(cell)
    what = "relative error 10^-scd" if scd else "max abs error at t1"
    head = [f"NFE to {t:.0e}" for t in COST_TARGETS] + [f"time [s] to {t:.0e}" for t in COST_TARGETS]
    return Table(f"{problem}: cost to reach a {what} of {', '.join(f'{t:.0e}' for t in COST_TARGETS)}"
                 " (interpolated on the log-log line between measured points; '<=': reached at the loosest"
                 " tolerance already; never extrapolated)", ["backend", "method", *head], rows)


def timing_note(doc: dict, recs: list[dict]) -> str:
    """What the wall-time panel's numbers are: the repeat counts, and the machine's load."""
    reps = sorted({int(v) for r in recs for v in floats(wp_points(r)["repeats"]) if np.isfinite(v)})
    loads = [v for r in recs for v in floats(wp_points(r)["load"]) if np.isfinite(v)]
    env = doc.get("environment") or {}
    rep = "-".join(str(v) for v in (reps[0], reps[-1])) if len(reps) > 1 else (str(reps[0]) if reps else "?")
    load = (f"1-min load average {min(loads):.1f}-{max(loads):.1f}" if loads else "load not recorded")
    cores = env.get("cpu_count")
    return (f"time: median of {rep} repeat(s) per point, whiskers min-max (1 repeat where a solve"
            f" takes > 0.2 s); {load} during these sweeps{f' on {cores} cores' if cores else ''}")


def _wp_figures(sec: Section, recs: list[dict], style: Style, ids: list[int], doc: dict, *, what: str,
                scd: bool) -> None:
    for (problem,), group in by(recs, "problem").items():
        group = [r for r in group if (r.get("details") or {}).get("points")]
        if not group:
            continue
        series, traj = [], []
        for r in group:
            pts = wp_points(r)
            line = style.line(r["backend"], r["method"])
            label = f"{r['method']} ({r['backend']})"
            series.append(dict(line, nfev=pts["nfev"], time=pts["time"], time_lo=pts["time_lo"],
                               time_hi=pts["time_hi"], y=pts["scd"] if scd else pts["abs_error"], label=label))
            key = "mescd" if scd else "abs_error"
            if any(v is not None for v in pts[f"max_{key}"]):
                traj.append(dict(line, nfev=pts["nfev"], y=pts[f"max_{key}"], y2=pts[f"dense_{key}"], label=label))
        note = timing_note(doc, group)
        sec.figures.append({"svg": plots.work_precision_figure(
            series, title=f"{problem}: {what}", figure_id=_figure_id(ids),
            ylabel="significant correct digits (scd)" if scd else "max abs error at t1",
            ylog=not scd, note=note), "caption": f"{what} on {problem}; {note}"})
        if traj:
            tinfo = next(((r.get("details") or {}).get("trajectory") for r in group
                          if (r.get("details") or {}).get("trajectory")), {}) or {}
            n_out = len(tinfo.get("output_times") or [])
            ylabels = (("digits over the output times (mixed error)", "digits between the output times")
                       if scd else ("max abs error over the output times", "max abs error between output times"))
            sec.figures.append({"svg": plots.work_precision_figure(
                traj, title=f"{problem}: error along the solution", figure_id=_figure_id(ids), ylog=not scd,
                panels=(f"max over {n_out} output times", "dense output (points between them)"),
                xkeys=("nfev", "nfev"), xlabels=("function evaluations (NFE)", "function evaluations (NFE)"),
                ylabels=ylabels),
                "caption": f"error along the solution on {problem}: the maximum over {n_out} output times and at"
                           f" the points between them ({', '.join(fmt(f) for f in tinfo.get('dense_fractions', []))}"
                           f" of each interval, served by the solver's dense output); reference: {tinfo.get('source', '-')},"
                           f" its own error at t1 {fmt(tinfo.get('error_at_t1'))} (errors near it measure the"
                           " reference)"})
        sec.tables.append(cost_table(problem, group, scd=scd))


def _failed_points(recs: list[dict]) -> list[list[Any]]:
    """Failed solves, one row per (backend, method, problem, status) with the tolerances."""
    rows: dict[tuple, list] = {}
    for r in recs:
        pts = wp_points(r)
        for tol, st, msg in zip(pts["rtol"], pts["status"], pts["message"]):
            if st != "success":
                key = (r["backend"], r["method"], r["problem"], st)
                rows.setdefault(key, [[], msg or r.get("message") or ""])[0].append(fmt(tol, 2))
    return [[*key[:3], ", ".join(tols), key[3], msg] for key, (tols, msg) in rows.items()]


def work_precision_section(doc: dict, records: list[dict], style: Style, ids: list[int]) -> Section:
    sec = Section("work-precision", "Work-precision diagrams",
                  "Error at the final time against the work spent, over a tolerance sweep (rtol; atol ="
                  " rtol scaled to the smallest reference component). Lower and further left is better."
                  " Colour: method (one tableau has one colour in every library); marker and line style:"
                  " backend. The left panel counts function evaluations (hardware-independent); the right"
                  " panel is wall time on this machine (median of repeats with min-max whiskers, JIT"
                  " compilation excluded; the repeat count and the machine's load are printed in the figure)."
                  " The second figure of a problem shows the error along the solution: the maximum over the"
                  " output times, and at points between them (the dense output). The table under them reads"
                  " off the cost to reach a given error: the fastest method at equal accuracy is marked.")
    stiff = set(doc.get("stiff_problems", []))
    wp = [r for r in records if r["property"] == "work_precision" and r["problem"] not in stiff
          and (r.get("details") or {}).get("points")]
    if not wp:
        sec.empty = empty_line(doc, "work-precision", "work_precision", "no explicit adaptive method was selected")
        return sec
    _wp_figures(sec, wp, style, ids, doc, what="error vs work", scd=False)
    failed = _failed_points(wp)
    if failed:
        sec.tables.append(Table("Failed solves of the sweeps", ["backend", "method", "problem", "rtols", "status",
                                                                 "message"], failed))
    return sec


def _slope_rows(recs: list[dict], window_key: str = "window") -> list[list[Any]]:
    rows = []
    for r in recs:
        d = r.get("details") or {}
        w = d.get(window_key) or {}
        win = f"{fmt(w.get('h_max'))} .. {fmt(w.get('h_min'))}" if w else "-"
        lead = w.get("leading_slopes") if w else None
        rows.append([r["backend"], r["method"], r["problem"], fmt(r.get("measured"), 4), fmt(r.get("expected")), win,
                     ", ".join(fmt(v) for v in lead) if lead else "-", verdict_cell(r["verdict"]),
                     r.get("message") or ""])
    return rows


def _order_figures(sec: Section, recs: list[dict], style: Style, ids: list[int], *, ylabel: str, what: str) -> None:
    for (backend, problem), group in by(recs, "backend", "problem").items():
        series = []
        for r in group:
            d = r.get("details") or {}
            h, e = floats(d.get("h", [])), floats(d.get("error", []))
            if h.size == 0:
                continue
            win = d.get("window")
            fit = fit_line(h, e, win, _local_slope(r) if what == "dense" else r.get("measured"))
            label = (f"{r['method']}: dense order {fmt(r.get('measured'), 3)} (q={fmt(r.get('expected'))})"
                     if what == "dense" else
                     f"{r['method']}: slope {fmt(r.get('measured'), 3)} (expected {fmt(r.get('expected'))})")
            series.append(dict(style.line(backend, r["method"]), x=h, y=e, label=label,
                               window=(float(win["h_min"]), float(win["h_max"])) if win else None, fit=fit))
        if series:
            sec.figures.append({"svg": plots.series_figure(
                series, xlabel="step size h", ylabel=ylabel, title=f"{backend} on {problem}",
                figure_id=_figure_id(ids)), "caption": f"{what}: {backend} on {problem}"})


def _local_slope(r: dict) -> float | None:
    """Dense output records measure (one-step slope - 1); the plotted error follows the slope."""
    m = r.get("measured")
    return None if m is None else float(m) + 1.0


_SLOPE_HEADER = ["backend", "method", "problem", "fitted order", "expected", "window h (max .. min)",
                 "local slopes into the window", "verdict", "message"]


def _order_section(doc: dict, records: list[dict], style: Style, ids: list[int], *, sid: str, title: str,
                   intro: str, prop: str, key: str, empty: str, ylabel: str, what: str, caption: str) -> Section:
    """A section of slope measurements (``prop`` records with h, error and the window)."""
    sec = Section(sid, title, intro)
    recs = [r for r in records if r["property"] == prop]
    if not recs:
        sec.empty = empty_line(doc, title.lower(), key, empty)
        return sec
    _order_figures(sec, recs, style, ids, ylabel=ylabel, what=what)
    sec.tables.append(Table(caption, _SLOPE_HEADER, _slope_rows(recs)))
    return sec


def convergence_section(doc: dict, records: list[dict], style: Style, ids: list[int]) -> Section:
    return _order_section(
        doc, records, style, ids, sid="convergence", title="Convergence order",
        intro="Global error of fixed-step solves against the step size h, log-log. The slope is the order. The"
              " thick segment marks the fitting window (finest resolved points above the round-off floor); the"
              " dotted line is the least-squares fit through it.",
        prop="convergence_order", key="convergence",
        empty="no fixed-step method was selected (--quick checks adaptive methods only)",
        ylabel="max scaled error over the check times", what="order", caption="Fitted orders and the window used")


def dense_section(doc: dict, records: list[dict], style: Style, ids: list[int]) -> Section:
    return _order_section(
        doc, records, style, ids, sid="dense-output", title="Dense-output order",
        intro="Worst interpolation error inside one step against the step size h. The one-step error of an"
              " interpolant of order q is O(h^(q+1)); the fitted order reported is the slope minus 1.",
        prop="dense_output_order", key="dense", empty="no fixed-step method with dense output was selected",
        ylabel="max interpolation error in one step", what="dense",
        caption="Dense-output orders (slope - 1) and the window used")


def tolerance_section(doc: dict, records: list[dict], style: Style, ids: list[int]) -> Section:
    sec = Section("tolerance", "Tolerance proportionality",
                  "Error at t1 against the tolerance (rtol = atol), log-log. A well-behaved controller gives a"
                  " straight line of slope p/k (p: order, k: the error estimate's order); the grey dashed"
                  " line is error = tol.")
    recs = [r for r in records if r["property"] == "tolerance_proportionality"]
    if not recs:
        sec.empty = empty_line(doc, "tolerance-proportionality", "tolerance", "no adaptive method was selected")
        return sec
    for (backend, problem), group in by(recs, "backend", "problem").items():
        series = [dict(style.line(backend, r["method"]), x=(r.get("details") or {}).get("tol", []),
                       y=(r.get("details") or {}).get("error", []),
                       label=f"{r['method']}: exponent {fmt(r.get('measured'))} (expected {fmt(r.get('expected'))})")
                  for r in group]
        tols = sorted({float(t) for r in group for t in (r.get("details") or {}).get("tol", [])})
        if tols:
            series.append({"x": tols, "y": tols, "label": "error = tol", "colour": "#999999", "marker": "",
                           "linestyle": "--"})
        sec.figures.append({"svg": plots.series_figure(
            series, xlabel="tolerance (rtol = atol)", ylabel="max scaled error at t1",
            title=f"{backend} on {problem}", figure_id=_figure_id(ids), invert_x=True),
            "caption": f"tolerance: {backend} on {problem}"})
    rows = [[r["backend"], r["method"], r["problem"], fmt(r.get("measured"), 4), fmt(r.get("expected"), 4),
             ", ".join(fmt(t, 1) for t in (r.get("details") or {}).get("fitted_tols", [])) or "-",
             verdict_cell(r["verdict"]), r.get("message") or ""] for r in recs]
    sec.tables.append(Table("Fitted exponents", ["backend", "method", "problem", "exponent", "expected",
                                                 "tolerances fitted", "verdict", "message"], rows))
    return sec


def _records_table(title: str, recs: list[dict]) -> Table:
    rows = [[r["backend"], r["property"], r["method"], r["problem"], fmt(r.get("measured"), 4),
             fmt(r.get("expected"), 4), verdict_cell(r["verdict"]), r.get("message") or ""] for r in recs]
    return Table(title, ["backend", "property", "method", "problem", "measured", "expected", "verdict", "message"],
                 rows)


def _sweep_figures(sec: Section, recs: list[dict], style: Style, ids: list[int], *, x: str, y: str, xlabel: str,
                   ylabel: str, what: str, invert_x: bool = False, across_backends: bool = False) -> None:
    """One figure per (backend, problem), or per problem ``across_backends`` (then each line
    is labelled with its library): ``details[y]`` against ``details[x]``, a line per record."""
    keys = ("problem",) if across_backends else ("backend", "problem")
    for key, group in by(recs, *keys).items():
        series = []
        for r in group:
            d = r.get("details") or {}
            xs, ys = d.get(x) or [], d.get(y) or []
            if xs and len(xs) == len(ys):
                base = r["method"].split("/")[0]
                label = f"{r['backend']}: {r['method']}" if across_backends else r["method"]
                series.append(dict(style.line(r["backend"], base), x=xs, y=ys, label=label))
        if series:
            if not across_backends:
                # several modes share a method's colour: tell them apart by line style
                for i, srs in enumerate(series):
                    srs["linestyle"] = ("-", "--", "-.", ":")[i % 4]
            where = f"{key[0]} on {key[1]}" if len(key) == 2 else f"{key[0]} (every library)"
            sec.figures.append({"svg": plots.series_figure(series, xlabel=xlabel, ylabel=ylabel,
                                                           title=f"{what}: {where}",
                                                           figure_id=_figure_id(ids), invert_x=invert_x),
                                "caption": f"{what}: {where}"})


def gradient_section(doc: dict, records: list[dict], style: Style, ids: list[int]) -> Section:
    sec = Section("gradients", "Gradient agreement",
                  "Relative error of each gradient mode (method/mode) against an independent oracle, versus"
                  " the tolerance (rtol = adjoint rtol), log-log; and the adjoint mismatch: the relative"
                  " gap between a continuous adjoint and differentiating the discrete solve.")
    recs = [r for r in records if _is_gradient(r)]
    if not recs:
        sec.empty = empty_line(doc, "gradient", "gradients", "no gradient source ran")
        return sec
    conv = [r for r in recs if r["property"] == "adjoint_convergence"]
    _sweep_figures(sec, conv, style, ids, x="tols", y="errors", xlabel="tolerance (rtol)",
                   ylabel="relative gradient error", what="gradient error vs tolerance", invert_x=True,
                   across_backends=True)
    _sweep_figures(sec, conv, style, ids, x="tols", y="gap_to_discrete", xlabel="tolerance (rtol)",
                   ylabel="|g_adjoint - g_discrete| / |g_discrete|", what="adjoint mismatch", invert_x=True,
                   across_backends=True)
    if not conv:
        sec.notes.append("no gradient tolerance sweep in this run (adjoint_convergence records), so no figure of"
                         " gradient error or adjoint mismatch against the tolerance")
    gap = [r for r in recs if r["property"] == "fixed_step_adjoint_gap"]
    _sweep_figures(sec, gap, style, ids, x="n_steps", y="gap", xlabel="fixed steps n",
                   ylabel="|g_adjoint - g_discrete| / |g_discrete|", what="adjoint mismatch, fixed steps")
    sec.tables.append(_records_table("Gradient records", recs))
    return sec


def drift_section(doc: dict, records: list[dict], style: Style, ids: list[int]) -> Section:
    sec = Section("reversibility", "Reversibility drift",
                  "Solve forward to t0 + T, then backward to t0: the reconstruction error"
                  " max|y_rec - y0| / max(1, max|y0|) versus the horizon T (in multiples of the problem's"
                  " span), one line per method and tolerance. A backsolve adjoint relies on this"
                  " reconstruction; on dissipative problems it grows like exp(|λ| T).")
    recs = [r for r in records if _is_drift(r)]
    if not recs:
        sec.empty = empty_line(doc, "reversibility", "drift", "no reversibility source ran")
        return sec
    for (backend, problem), group in by(recs, "backend", "problem").items():
        series = []
        for r in group:
            rows = (r.get("details") or {}).get("rows") or []
            settings = list(dict.fromkeys(
                tuple((k, row[k]) for k in ("rtol", "n_steps") if k in row) for row in rows))
            for i, key in enumerate(settings):
                pts = [row for row in rows if tuple((k, row[k]) for k in ("rtol", "n_steps") if k in row) == key]
                label = f"{r['method']} " + ", ".join(f"{k}={fmt(v, 2)}" for k, v in key)
                series.append(dict(style.line(backend, r["method"]), x=[p.get("T") for p in pts],
                                   y=[p.get("drift") for p in pts], label=label,
                                   linestyle=("-", "--", "-.", ":")[i % 4]))
        if series:
            sec.figures.append({"svg": plots.series_figure(series, xlabel="horizon T (multiples of the span)",
                                                           ylabel="reconstruction error", xlog=False,
                                                           title=f"drift: {backend} on {problem}",
                                                           figure_id=_figure_id(ids)),
                                "caption": f"reversibility drift: {backend} on {problem}"})
    sec.tables.append(_records_table("Reversibility records (measured: the worst drift)", recs))
    return sec


def _is_gradient(r: dict) -> bool:
    p = r["property"]
    return ("gradient" in p or "adjoint" in p) and not _is_drift(r) and not is_sde(r) and not is_flow(r)


def _is_drift(r: dict) -> bool:
    p = r["property"]
    return ("revers" in p or "drift" in p) and not is_sde(r) and not is_flow(r)


#: SDE properties besides the ``sde_*`` ones (odeverify.properties.sde)
SDE_PROPERTIES = ("brownian_consistency", "ito_stratonovich_consistency")
#: short names of the SDE checks in the summary's methods x checks matrix, in column order
SDE_COLUMNS = {"sde_strong_order": "strong", "sde_weak_order": "weak", "sde_pathwise_agreement": "pathwise",
               "sde_reversibility": "reversible", "sde_gradient_accuracy": "gradient",
               "sde_adjoint_convergence": "adjoint", "brownian_consistency": "Brownian tree",
               "ito_stratonovich_consistency": "Itô-Stratonovich"}


def is_sde(r: dict) -> bool:
    """A record of an SDE check (its own section, and its own matrix in the summary)."""
    return r["property"].startswith("sde_") or r["property"] in SDE_PROPERTIES


def stiffness_section(doc: dict, records: list[dict], style: Style, ids: list[int]) -> Section:
    sec = Section("stiffness", "Stiffness",
                  "Significant correct digits (scd = -log10 of the max relative error at t1) against the"
                  " work on stiff problems of the Bari test set: higher and further left is better; then"
                  " the digits along the solution (mixed error |e|/(s + |y|) over the output times and"
                  " between them) and the cost to reach 3, 6 and 9 digits. An explicit method is"
                  " run with a small step limit to show that it fails; every failure is listed with why."
                  " Then the work (NFE) against the stiffness ratio of a linear problem, and the order of"
                  " implicit methods on Prothero-Robinson (order reduction to the stage order).")
    stiff = set(doc.get("stiff_problems", []))
    wp = [r for r in records if r["property"] == "work_precision" and r["problem"] in stiff]
    not_applicable = [r for r in wp if not (r.get("details") or {}).get("points")]
    wp = [r for r in wp if (r.get("details") or {}).get("points")]
    handling = [r for r in records if r["property"] == "stiffness_handling"]
    order = [r for r in records if r["property"] == "stiff_order"]
    if not (wp or handling or order):
        sec.empty = empty_line(doc, "stiffness", "stiffness", "no stiffness records in this run")
        return sec
    if wp:
        _wp_figures(sec, wp, style, ids, doc, what="scd vs work", scd=True)
    else:
        sec.notes.append(empty_line(doc, "stiff work-precision", "stiffness", "none in this run"))
    if not_applicable:
        sec.tables.append(Table("Methods that cannot take these problems", ["backend", "property", "method",
                                                                            "problem", "message"],
                                message_rows(not_applicable)))
    failed = _failed_points(wp)
    if failed:
        sec.tables.append(Table("Failed solves on stiff problems, and why", ["backend", "method", "problem", "rtols",
                                                                             "status", "message"], failed))
    for (backend,), group in by(handling, "backend").items():
        series = []
        for r in group:
            pts = (r.get("details") or {}).get("points") or []
            if pts:
                series.append(dict(style.line(backend, r["method"]), x=[p.get("ratio") for p in pts],
                                   y=[p.get("nfev") for p in pts], label=r["method"]))
        if series:
            sec.figures.append({"svg": plots.series_figure(
                series, xlabel="stiffness ratio max|Re λ| / min|Re λ|", ylabel="function evaluations (NFE)",
                title=f"work vs stiffness: {backend}", figure_id=_figure_id(ids)),
                "caption": f"stiffness handling: {backend}"})
    if not handling:
        sec.notes.append("no stiffness-handling records (the conformance run skips them with --quick)")
    if handling:
        sec.tables.append(_records_table("Stiffness handling (measured: the ratio where the work exploded)",
                                         handling))
    if order:
        _order_figures(sec, order, style, ids, ylabel="max error over the check times", what="stiff order")
        sec.tables.append(Table("Order on Prothero-Robinson (lambda = -1e6) and the window used", _SLOPE_HEADER,
                                _slope_rows(order)))
    return sec


# ----------------------------------------------------------------------------- SDEs
#: the z of a two-sided 95% normal interval: the weak panel's error bars are +- this many
#: standard errors of the Monte-Carlo bias
Z95 = 1.959963984540054
_PATHS_RE = re.compile(r"about (\d+) paths")


def paths_to_settle(record: dict) -> int | None:
    """How many paths would settle an inconclusive SDE order: the largest of the counts the
    record gives (a weak fit's ``paths_needed``, or "about N paths" in its message)."""
    d = record.get("details") or {}
    found = [int(f["paths_needed"]) for f in (d.get("mean"), d.get("second_moment"))
             if isinstance(f, dict) and f.get("paths_needed")]
    found += [int(n) for n in _PATHS_RE.findall(record.get("message") or "")]
    return max(found) if found else None


def slope_text(fit: dict | None) -> str:
    """``slope [lo, hi]`` of a fit in the details of an SDE order record; ``unresolved`` for a
    weak fit with fewer than three resolved step sizes."""
    if not isinstance(fit, dict):
        return "-"
    if fit.get("unresolved"):
        need = fit.get("paths_needed")
        return "unresolved" + (f" (~{need:,} paths)" if need else "")
    lo, hi = (fit.get("ci") or [None, None])[:2]
    if fit.get("slope") is None:
        return "-"
    return f"{fmt(fit['slope'], 3)} [{fmt(lo, 3)}, {fmt(hi, 3)}]"


def _num(text: str) -> tuple[str, str]:
    """A cell kept on one line (a slope and its interval)."""
    return text, "num"


def sde_verdict_cell(record: dict) -> tuple[str, str]:
    """The verdict, an inconclusive one with the number of paths that would settle it."""
    text, cls = verdict_cell(record["verdict"])
    need = paths_to_settle(record) if record["verdict"] == "skip" else None
    return (f"{text}: ~{need:,} paths would settle it" if need else text), cls


def _sde_fit_band(h: np.ndarray, y: np.ndarray, fit: dict | None, use: np.ndarray | None = None) -> dict | None:
    """The fitted line of an SDE order and its interval's band, through the centroid of the
    fitted points in log-log (a least-squares line passes through it): ``plots.order_panels_figure``'s fit."""
    if not isinstance(fit, dict) or fit.get("slope") is None:
        return None
    keep = np.isfinite(h) & np.isfinite(y) & (h > 0) & (y > 0)
    if use is not None:
        keep &= use
    if keep.sum() < 2:
        return None
    lo, hi = (fit.get("ci") or [None, None])[:2]
    return {"slope": float(fit["slope"]), "lo": lo, "hi": hi, "x0": float(np.exp(np.mean(np.log(h[keep])))),
            "y0": float(np.exp(np.mean(np.log(y[keep])))), "x_min": float(h[keep].min()),
            "x_max": float(h[keep].max())}


def _sde_series(r: dict, style: Style, weak: bool) -> dict | None:
    d = r.get("details") or {}
    h = floats(d.get("h") or [])
    line = style.sde_line(r["backend"], r["method"])
    form = r["problem"][len(r["problem"].split("[")[0]):]
    label = f"{r['method']} ({r['backend']}){' on ' + form if form else ''}"
    if not weak:
        fit = d.get("at_t1")
        if not isinstance(fit, dict) or not fit.get("mean_error"):
            return None
        y = floats(fit["mean_error"])
        se = fit.get("standard_error")  # per step size, where the property records it
        return dict(line, x=h, y=y, label=label, fit=_sde_fit_band(h, y, fit),
                    yerr=None if se is None else Z95 * floats(se))
    fit = d.get("second_moment")
    if not isinstance(fit, dict) or not fit.get("bias"):
        return None
    y, se = floats(fit["bias"]), floats(fit.get("standard_error") or [])
    resolved = np.asarray(fit.get("resolved") or [True] * y.size, dtype=bool)
    return dict(line, x=h, y=y, label=label, hollow=list(~resolved), fit=_sde_fit_band(h, y, fit, resolved),
                yerr=Z95 * se if se.size == y.size else None)


def _sde_message(r: dict) -> str:
    """The message of an order record where it adds to the slope columns: a passing record's
    repeats them (except that its interval lies above the claim), others say why."""
    msg = r.get("message") or ""
    if r["verdict"] == "skip" and paths_to_settle(r):
        return ""  # the slope cells say which fit is unresolved or too wide, the verdict how many paths
    if r["verdict"] != "pass":
        return msg
    return "above the claim (the claim is a bound)" if "above the claim" in msg else ""


def sde_section(doc: dict, records: list[dict], style: Style, ids: list[int]) -> Section:
    sec = Section("sde", "Stochastic differential equations",
                  "Strong and weak order of each library's SDE methods, every step size on the same Brownian"
                  " paths. <b>Strong</b>: the slope of log E|X_h(T) - X(T)| (and of the mean maximum over a"
                  " grid) against log h, X(T) the closed form on the path or a fine reference solve."
                  " <b>Weak</b>: the slope of log |E X_h(T)² - E X(T)²| (and of the mean), with antithetic"
                  " paths. Each slope comes with a 95% paired-bootstrap interval over paths; the verdict reads"
                  " the interval: <b>pass</b> when it meets the claim ± 0.15 and is narrow enough to refute a"
                  " method half an order off (or lies wholly above the claim, which is a bound); <b>FAIL</b>"
                  " when it lies below; <b>inconclusive</b> when it is too wide, with about how many paths"
                  " would settle it. In the figures, dotted: the fitted line; shaded: the lines of the"
                  " interval's end slopes through the same point; weak error bars: ± 1.96 standard errors"
                  " of the Monte-Carlo bias, open markers: a bias within 3 standard errors of zero (left out"
                  " of the fit).")
    recs = [r for r in records if is_sde(r)]
    if not recs:
        sec.empty = empty_line(doc, "SDE", "sde", "no backend with SDE methods ran")
        return sec
    orders = [r for r in recs if r["property"] in ("sde_strong_order", "sde_weak_order")]
    # a problem and its form in the other calculus (gbm_ito[stratonovich], for a Stratonovich
    # method) share one figure
    for (backend, problem), group in by([dict(r, base=r["problem"].split("[")[0]) for r in orders],
                                        "backend", "base").items():
        strong = [x for x in (_sde_series(r, style, False) for r in group if r["property"] == "sde_strong_order") if x]
        weak = [x for x in (_sde_series(r, style, True) for r in group if r["property"] == "sde_weak_order") if x]
        if not (strong or weak):
            continue
        sec.figures.append({"svg": plots.order_panels_figure(
            [{"title": "strong: E|X_h(T) - X(T)|", "xlabel": "step size h", "ylabel": "mean error at T",
              "series": strong},
             {"title": "weak: |E X_h(T)² - E X(T)²|", "xlabel": "step size h", "ylabel": "bias of the second moment",
              "series": weak}],
            title=f"SDE order: {backend} on {problem}", figure_id=_figure_id(ids)),
            "caption": f"strong and weak order: {backend} on {problem} (dotted: fit; shaded: its 95% interval)"})
    for (backend,), group in by(orders, "backend").items():
        strong = [r for r in group if r["property"] == "sde_strong_order"]
        weak = [r for r in group if r["property"] == "sde_weak_order"]
        if strong:
            sec.tables.append(Table(
                f"{backend}: strong order (slope [95% CI])",
                ["method", "problem", "noise", "paths", "E|error(T)| slope", "E max|error| slope", "claim",
                 "verdict", "message"],
                [[r["method"], r["problem"], (r.get("details") or {}).get("noise_class", "-"),
                  str((r.get("details") or {}).get("paths", "-")), _num(slope_text((r.get("details") or {}).get("at_t1"))),
                  _num(slope_text((r.get("details") or {}).get("max_over_grid"))), fmt(r.get("expected")),
                  sde_verdict_cell(r), _sde_message(r)] for r in strong]))
        if weak:
            sec.tables.append(Table(
                f"{backend}: weak order (slope [95% CI])",
                ["method", "problem", "noise", "paths", "estimator", "E X slope", "E X² slope", "claim", "verdict",
                 "message"],
                [[r["method"], r["problem"], (r.get("details") or {}).get("noise_class", "-"),
                  str((r.get("details") or {}).get("paths", "-")), (r.get("details") or {}).get("estimator", "-"),
                  _num(slope_text((r.get("details") or {}).get("mean"))),
                  _num(slope_text((r.get("details") or {}).get("second_moment"))), fmt(r.get("expected")),
                  sde_verdict_cell(r), _sde_message(r)] for r in weak]))
    rest = [r for r in recs if r not in orders]
    if rest:
        sec.tables.append(_records_table("Other SDE checks: pathwise agreement with odeverify's method of the same"
                                         " rule, reversibility, gradients, the Brownian tree, Itô-Stratonovich"
                                         " consistency", rest))
    return sec


# ----------------------------------------------------------------------------- flows
#: properties of continuous normalizing flows besides the ``cnf_*``, ``hutchinson_*`` and
#: ``flow_*`` ones (odeverify.properties.flows, flow_gradients, flow_geometry)
FLOW_PROPERTIES = ("trace_agreement", "augmented_negation", "resnet_euler",
                   "flows")  # "flows": the error record of a flow task that crashed
#: short names of the flow checks in the summary's methods x checks matrix, in column order
FLOW_COLUMNS = {"cnf_log_density": "log-density", "cnf_liouville": "Liouville", "cnf_normalisation": "normalised",
                "cnf_invertibility": "invertible", "cnf_gradient_accuracy": "gradient",
                "trace_agreement": "traces", "hutchinson_unbiased": "Hutchinson mean",
                "hutchinson_variance": "Hutchinson variance", "flow_fold_step": "fold step",
                "flow_orientation": "orientation", "flow_injectivity": "injective",
                "flow_unreachable_negation": "negation", "augmented_negation": "augmented negation",
                "resnet_euler": "ResNet = Euler"}


def is_flow(r: dict) -> bool:
    """A record of a flow check (its own section, and its own matrix in the summary)."""
    p = r["property"]
    return p.startswith(("cnf_", "hutchinson_", "flow_")) or p in FLOW_PROPERTIES


def _trace_of(problem: str) -> str:
    """The trace estimator a CNF record names in its problem (``cnf_linear2[jacobian]``)."""
    return problem.split("[", 1)[1].rstrip("]") if "[" in problem else "-"


def _log_density_series(r: dict, style: Style) -> tuple[str, dict] | None:
    """``("adaptive" | "fixed", series)`` of a cnf_log_density record: the error against rtol,
    or against the number of fixed steps n, with the fitted exponent through its fitted points."""
    d = r.get("details") or {}
    adaptive = d.get("rtols") is not None
    x = floats(d.get("rtols") if adaptive else d.get("n_steps") or [])
    y = floats(d.get("errors") or [])
    if x.size == 0 or x.size != y.size:
        return None
    fitted = floats(d.get("fitted") or [])
    fit = None
    if r.get("measured") is not None and fitted.size >= 2:
        use = np.isin(x, fitted) & np.isfinite(y) & (y > 0)
        if use.sum() >= 2:  # error ~ tol^exponent, or ~ n^-order for n fixed steps
            slope = float(r["measured"]) if adaptive else -float(r["measured"])
            fit = {"slope": slope, "x0": float(np.exp(np.mean(np.log(x[use])))),
                   "y0": float(np.exp(np.mean(np.log(y[use])))), "x_min": float(x[use].min()),
                   "x_max": float(x[use].max())}
    label = f"{r['method']} ({r['backend']}, {_trace_of(r['problem'])})"
    return ("adaptive" if adaptive else "fixed"), dict(style.line(r["backend"], r["method"]), x=x, y=y, label=label,
                                                       fit=fit)


def _hutchinson_series(r: dict, colour: str, marker: str) -> list[dict]:
    """The measured RMS error of the k-probe mean against k, and theory's sqrt(var / k) with the
    95% range of an RMS over m = draws // k groups (normal approximation: sd of the RMS
    ~ sqrt(var / k) / sqrt(2 m))."""
    d = r.get("details") or {}
    ks, rms = floats(d.get("n_probes") or []), floats(d.get("rms_error") or [])
    pred = floats(d.get("predicted_rms") or [])
    if ks.size == 0 or not (ks.size == rms.size == pred.size):
        return []
    groups = np.floor(float(d.get("draws") or 0) / ks)
    bar = np.where(groups > 0, Z95 * pred / np.sqrt(2 * np.maximum(groups, 1)), np.nan)
    name = r["problem"].split("[")[0]
    return [dict(colour=colour, marker=marker, linestyle="-", x=ks, y=rms, label=f"{name}: measured"),
            dict(colour=colour, marker="", linestyle="--", x=ks, y=pred, yerr=bar, label=f"{name}: theory")]


def _fold_step(r: dict) -> tuple[Any, Any, str]:
    """(measured h*, theory's h* or None, method) of a flow_fold_step record (its measured and
    expected; ``inf``: no fold up to the search's end)."""
    return r.get("measured"), r.get("expected"), r["method"]


def _fold_step_rows(recs: list[dict]) -> list[list[Any]]:
    rows = []
    for r in recs:
        m, t, name = _fold_step(r)
        mt, tt = floats([m, t])
        ratio = fmt(mt / tt, 3) if np.isfinite(mt) and np.isfinite(tt) and tt > 0 else "-"
        d = r.get("details") or {}
        rows.append([r["backend"], name, r["problem"], fmt(m, 6), fmt(t, 6), ratio,
                     fmt(d.get("h_times_lipschitz"), 4), str(d.get("theory") or "-"), verdict_cell(r["verdict"]),
                     r.get("message") or ""])
    return rows


def flows_section(doc: dict, records: list[dict], style: Style, ids: list[int]) -> Section:
    sec = Section("flows", "Continuous normalizing flows",
                  "A CNF's log-likelihood log p(x) = log p0(z(t0)) - l(t0) comes from a density solve of [z, l]"
                  " with l' = -tr(df/dz). <b>Log-likelihood error</b>: the largest error over the data against"
                  " the closed form (or Liouville's formula by the variational equation) over a tolerance"
                  " sweep of each adaptive method (a step sweep of a fixed-step one); dotted: the fitted"
                  " exponent, which the verdict compares with the method's. <b>Hutchinson</b>: the RMS error"
                  " of a k-probe trace estimate (probes fixed for the solve, as FFJORD draws them) against"
                  " theory, sqrt(var/k) with var = 2(|sym M|_F² - Σ M_ii²) for Rademacher probes and"
                  " 2|sym M|_F² for Gaussian ones (M: the integral of the Jacobian along the trajectory),"
                  " with the 95% range of an RMS over the draws' groups. <b>Fold step</b>: the step size at"
                  " which each method's discrete flow stops being invertible, measured against theory.")
    recs = [r for r in records if is_flow(r)]
    if not recs:
        sec.empty = empty_line(doc, "flow", "flows", "no CNF checks ran")
        return sec
    logd = [r for r in recs if r["property"] == "cnf_log_density"]
    for (problem,), group in by([dict(r, base=r["problem"].split("[")[0]) for r in logd], "base").items():
        panels: dict[str, list[dict]] = {"adaptive": [], "fixed": []}
        for r in group:
            got = _log_density_series(r, style)
            if got:
                panels[got[0]].append(got[1])
        chosen = [p for p in ({"title": "adaptive: error vs tolerance", "xlabel": "rtol (atol = rtol / 100)",
                               "ylabel": "max |log p_h(x) - log p(x)| [nats]", "series": panels["adaptive"]},
                              {"title": "fixed step: error vs steps", "xlabel": "fixed steps n",
                               "ylabel": "max |log p_h(x) - log p(x)| [nats]", "series": panels["fixed"]})
                  if p["series"]]
        if chosen:
            sec.figures.append({"svg": plots.order_panels_figure(chosen, title=f"log-likelihood error: {problem}",
                                                                 figure_id=_figure_id(ids)),
                                "caption": f"log-likelihood error against tolerance: {problem} (dotted: the fitted"
                                           " exponent)"})
    if logd:
        rows = []
        for r in logd:
            d = r.get("details") or {}
            errs = floats(d.get("errors") or [])
            finite = errs[np.isfinite(errs)]
            rows.append([r["backend"], r["method"], r["problem"].split("[")[0], _trace_of(r["problem"]),
                         "tolerance" if d.get("rtols") is not None else "step", _num(fmt(r.get("measured"), 3)),
                         fmt(r.get("expected"), 3), fmt(finite[-1] if finite.size else None, 3),
                         str(d.get("oracle") or "-"), verdict_cell(r["verdict"]), r.get("message") or ""])
        sec.tables.append(Table("Log-likelihood error: the fitted exponent (error ~ tol^exponent; fixed step: the order"
                                " in h) against the method's",
                                ["backend", "method", "problem", "trace", "sweep", "exponent", "expected",
                                 "error at the tightest [nats]", "oracle", "verdict", "message"], rows))
    hv = [r for r in recs if r["property"] == "hutchinson_variance"]
    if hv:
        colours = Colours()
        panels = []
        for (probe,), group in by([dict(r, probe=(r.get("details") or {}).get("probe") or _trace_of(r["problem"]))
                                   for r in hv], "probe").items():
            series = []
            for i, r in enumerate(group):
                marker, _ = backend_style(r["problem"], i)
                series += _hutchinson_series(r, colours(r["problem"].split("[")[0]), marker)
            if series:
                panels.append({"title": f"{str(probe).replace('hutchinson_', '')} probes", "xlabel": "probes k",
                               "ylabel": "RMS error of log p [nats]", "series": series})
        if panels:
            sec.figures.append({"svg": plots.order_panels_figure(panels, title="Hutchinson: RMS error vs number of"
                                                                 " probes", figure_id=_figure_id(ids)),
                                "caption": "Hutchinson's RMS log-density error against the number of probes (solid:"
                                           " measured; dashed with bars: theory and its 95% range)"})
    hutch = [r for r in recs if r["property"].startswith("hutchinson_")]
    if hutch:
        sec.tables.append(Table(
            "Hutchinson's estimator against theory (hutchinson_unbiased: the sample mean's distance from -tr M in"
            " standard errors, and the limit; hutchinson_variance: the sample variance of one-probe estimates, and"
            " theory's)",
            ["problem", "property", "probe", "draws", "measured", "expected", "verdict", "message"],
            [[r["problem"].split("[")[0], r["property"], (r.get("details") or {}).get("probe", "-"),
              str((r.get("details") or {}).get("draws", "-")), fmt(r.get("measured"), 4), fmt(r.get("expected"), 4),
              verdict_cell(r["verdict"]), r.get("message") or ""] for r in hutch]))
    fold = [r for r in recs if r["property"] == "flow_fold_step"]
    if fold:
        colours = Colours()
        groups = []
        for i, ((field_name,), group) in enumerate(by(fold, "problem").items()):
            values = [_fold_step(r) for r in group]
            marker, _ = backend_style(field_name, i)
            groups.append({"label": field_name, "colour": colours(field_name), "marker": marker,
                           "methods": [v[2] for v in values], "measured": [v[0] for v in values],
                           "theory": [v[1] for v in values]})
        sec.figures.append({"svg": plots.fold_step_figure(groups, title="fold step per method",
                                                          figure_id=_figure_id(ids)),
                            "caption": "the fixed step at which one step of each method stops being an"
                                       " orientation-preserving map (filled: measured; open: theory where there"
                                       " is one; a triangle at the right edge: no fold found)"})
        sec.tables.append(Table("Fold step per method (h* L: the step in units of the field's Lipschitz"
                                " constant on the sample)",
                                ["backend", "method", "field", "measured h*", "theory h*", "measured / theory",
                                 "h* L", "theory's basis", "verdict", "message"], _fold_step_rows(fold)))
    grads = [r for r in recs if r["property"] == "cnf_gradient_accuracy"]
    if grads:
        table = _records_table(f"CNF gradients: each gradient mode of the negative log-likelihood against the"
                               f" oracle ({len(grads)} records)", grads)
        table.collapsed = len(grads) > 12
        sec.tables.append(table)
    shown = {"cnf_log_density", "hutchinson_variance", "hutchinson_unbiased", "flow_fold_step",
             "cnf_gradient_accuracy"}
    rest = [r for r in recs if r["property"] not in shown]
    if rest:
        sec.tables.append(_records_table("Other flow checks: Liouville's formula, normalisation of the pushed-forward"
                                         " density, sample/density invertibility, trace estimators' agreement,"
                                         " flow geometry", rest))
    return sec


# ----------------------------------------------------------------------------- other check families
#: at most this many records of a family are shown expanded; more are folded
FAMILY_TABLE_OPEN = 30


def family_of(doc: dict, r: dict) -> str | None:
    """The check family (``doc["families"]``: CDEs, events, irregular times, ...) a record
    belongs to: one of the family's properties, or the error record of its crashed task."""
    for name, desc in (doc.get("families") or {}).items():
        if r["property"] in desc.get("properties", ()) or r["property"] == name:
            return name
    return None


def _plot_figures(sec: Section, recs: list[dict], style: Style, ids: list[int]) -> None:
    """A figure per record that carries ``details["plot"]``: ``{"title", "xlabel", "ylabel",
    "series": [{"label", "x", "y"}], "xlog", "ylog"}`` (the family's own sweep: an event time's
    error against the step, an interpolant's error against the spacing, ...)."""
    for r in recs:
        plot = (r.get("details") or {}).get("plot") or _sweep_plot(r)
        if not isinstance(plot, dict) or not plot.get("series"):
            continue
        series = []
        for i, srs in enumerate(plot["series"]):
            xs, ys = srs.get("x") or [], srs.get("y") or []
            if xs and len(xs) == len(ys):
                line = dict(style.line(r["backend"], str(srs.get("label", r["method"]))))
                line.update(x=xs, y=ys, label=str(srs.get("label", r["method"])), linestyle=("-", "--", "-.", ":")[i % 4])
                series.append(line)
        if not series:
            continue
        title = str(plot.get("title") or f"{r['property']}: {r['method']} on {r['problem']}")
        caption = f"{r['backend']}: {title} ({verdict_cell(r['verdict'])[0]})"
        sec.figures.append({"svg": plots.series_figure(series, xlabel=str(plot.get("xlabel", "")),
                                                       ylabel=str(plot.get("ylabel", "")), title=title,
                                                       figure_id=_figure_id(ids), xlog=bool(plot.get("xlog", True)),
                                                       ylog=bool(plot.get("ylog", True))),
                            "caption": caption})


def _sweep_plot(r: dict) -> dict | None:
    """The figure of a record without ``details["plot"]`` that carries a step sweep, ``h``
    with ``error`` or ``errors`` (an event time's or a CDE solve's error against the step):
    error against step size on log axes, NaN points (failed solves) left out."""
    d = r.get("details") or {}
    hs, errs = d.get("h"), d.get("error", d.get("errors"))
    if not (isinstance(hs, list) and isinstance(errs, list) and len(hs) == len(errs) and len(hs) > 1):
        return None
    pts = [(float(h), float(e)) for h, e in zip(hs, errs)
           if isinstance(h, (int, float)) and isinstance(e, (int, float)) and h > 0 and e > 0 and math.isfinite(e)]
    if len(pts) < 2:
        return None
    return {"title": f"{r['property']}: {r['method']} on {r['problem']}", "xlabel": "step size h",
            "ylabel": "error", "series": [{"label": r["method"], "x": [p[0] for p in pts], "y": [p[1] for p in pts]}]}


def family_sections(doc: dict, records: list[dict], style: Style, ids: list[int]) -> list[Section]:
    """A section per check family of ``doc["families"]`` (those without a section of their own):
    the family's description, a methods x checks matrix per backend, the figures its records
    carry and every record with its message."""
    out = []
    for name, desc in (doc.get("families") or {}).items():
        sec = Section(f"family-{name}", desc.get("title", name),
                      f"<code>odeverify check --{name}</code>: {desc.get('help', '')}."
                      + (f" Documentation: <code>{desc['doc']}</code>." if desc.get("doc") else ""))
        recs = [r for r in records if family_of(doc, r) == name]
        if not recs:
            sec.empty = empty_line(doc, name, name, f"no {name} checks ran")
            out.append(sec)
            continue
        for (backend,), group in by(recs, "backend").items():
            sec.tables.append(_matrix(group, {}, f"{backend}: methods x {name} checks"))
        _plot_figures(sec, recs, style, ids)
        table = _records_table(f"{len(recs)} records", recs)
        table.collapsed = len(recs) > FAMILY_TABLE_OPEN
        sec.tables.append(table)
        out.append(sec)
    return out


def stability_section(doc: dict, records: list[dict], style: Style, ids: list[int]) -> Section:
    sec = Section("stability", "Stability regions",
                  "Boundaries |R(hλ)| = 1 of the exact stability functions R(z) = P(z)/Q(z): a step is"
                  " stable for the test equation y' = λy where |R(hλ)| <= 1, the side containing small"
                  " negative real hλ (shaded). Explicit methods have bounded regions; A-stable implicit"
                  " methods contain the whole left half-plane; BDF3-5 are A(α)-stable only (table).")
    recs = [r for r in records if r["property"] == "stability_region" and r["verdict"] == "pass"]
    if not recs:
        sec.empty = empty_line(doc, "stability-region", "stability", "no tableau records")
        return sec
    groups = [("explicit, order <= 3", lambda d: d.get("explicit") and d.get("order", 0) <= 3),
              ("explicit, order >= 4", lambda d: d.get("explicit") and d.get("order", 0) >= 4),
              ("implicit (stable side may be the outside)", lambda d: not d.get("explicit"))]
    colours = Colours()
    for title, pick in groups:
        chosen = [r for r in recs if pick(r.get("details") or {})]
        # methods with one stability polynomial (every s-stage explicit method of order s <= 4)
        # draw one curve, labelled with all their names
        same: dict[tuple, list[dict]] = {}
        for r in chosen:
            d = r["details"]
            key = (tuple(round(float(c), 12) for c in d["numerator"]), tuple(round(float(c), 12) for c in d["denominator"]))
            same.setdefault(key, []).append(r)
        regions = []
        for i, group in enumerate(same.values()):
            d = group[0]["details"]
            label = ", ".join(r["method"] for r in group) + f" (p={d.get('order')})"
            regions.append({"label": label, "numerator": d["numerator"], "denominator": d["denominator"],
                            "colour": colours(group[0]["method"]), "linestyle": ("-", "--", "-.", ":")[i // 8 % 4]})
        if not regions:
            continue
        extent = (-7.0, 1.5, -5.0, 5.0) if title.startswith("explicit") else (-10.0, 30.0, -20.0, 20.0)
        sec.figures.append({"svg": plots.stability_figure(regions, title=f"|R(hλ)| = 1: {title}",
                                                          figure_id=_figure_id(ids), extent=extent),
                            "caption": f"stability regions: {title}"})
    rows = [[r["method"], str((r.get("details") or {}).get("order", "-")),
             "yes" if (r.get("details") or {}).get("explicit") else "no",
             "unbounded (A-stable on the real axis)" if fmt(r.get("measured")) == "-inf"
             else f"[{fmt(r.get('measured'), 4)}, 0]"] for r in recs]
    sec.tables.append(Table("Real stability interval (largest [-r, 0] with |R(x)| <= 1)",
                            ["method", "order", "explicit", "real interval"], rows))
    angles = [r for r in records if r["property"] == "stability_angle"]
    if angles:
        bdf_colours = Colours()  # five distinct colours, not the tail of the palette used above
        regions = [{"label": f"{r['method'].upper()} (A({fmt(r.get('measured'), 4)}°))",
                    "bdf_order": (r.get("details") or {}).get("order"), "colour": bdf_colours(r["method"]),
                    "linestyle": "-", "alpha_deg": r.get("measured")} for r in angles
                   if (r.get("details") or {}).get("order")]
        if regions:
            sec.figures.append({"svg": plots.stability_figure(regions, title="BDF1-5: stable outside each curve",
                                                              figure_id=_figure_id(ids),
                                                              extent=(-10.0, 30.0, -20.0, 20.0)),
                                "caption": "stability regions of BDF1-5 (the root locus; stable where every root"
                                           " of the characteristic equation has modulus <= 1, shaded; dashed"
                                           " rays: the edges of each A(α) sector)"})
        sec.tables.append(Table(
            "A(α) stability of BDF: the largest α such that the sector |arg(-z)| < α is stable (computed from"
            " the root locus; the printed values of Hairer & Wanner II, Sect. V.2 as the check)",
            ["method", "A(α) computed [deg]", "printed [deg]", "verdict", "message"],
            [[r["method"], fmt(r.get("measured"), 6), fmt(r.get("expected"), 4), verdict_cell(r["verdict"]),
              r.get("message") or ""] for r in angles]))
    bad = [r for r in records if r["property"] == "stability_region" and r["verdict"] != "pass"]
    if bad:
        sec.tables.append(Table("Tableaus whose stability function failed",
                                ["backend", "property", "method", "problem", "message"], message_rows(bad)))
    return sec


def problems_section(doc: dict, records: list[dict]) -> Section:
    """Each problem of the report's records: its definition and where its reference comes from."""
    sec = Section("problems", "Problems and reference solutions",
                  "The definition of every problem used above (equation, span, parameters) and the provenance"
                  " of the reference solution each error is measured against: a closed form, or published"
                  " values (source and printed digits), or a computed solve (its solver and tolerances).")
    probs = doc.get("problems") or {}
    if not probs:
        sec.empty = "no problem definitions in this document (records from an older run, or no problem ran)"
        return sec
    rows = []
    for name, p in probs.items():
        span = p.get("t_span") or ["-", "-"]
        params = ", ".join(f"{k} = {v}" for k, v in (p.get("params") or {}).items()) or "-"
        if p.get("closed_form"):
            ref = "closed form"
        else:
            ref = "; ".join(f"{r.get('kind')} at t = {fmt(r.get('t'), 8)}"
                            + (f" ({r.get('digits')} digits)" if r.get("digits") else "") + f": {r.get('source')}"
                            for r in p.get("references") or []) or "none"
        acc = next(((r.get("details") or {}).get("reference") for r in records
                    if r["problem"] == name and (r.get("details") or {}).get("reference")), None)
        accuracy = (f"{fmt(acc.get('relative_accuracy'), 2)} ({acc.get('source')}); sweeps stop at"
                    f" {fmt(acc.get('tightest_tolerance'), 2)}") if acc else "-"
        rows.append([name, p.get("description") or "-", f"[{fmt(span[0], 8)}, {fmt(span[1], 8)}]", str(p.get("n")),
                     params, ("yes" if p.get("jacobian") else "no"), ref, accuracy, p.get("citation") or "-"])
    sec.tables.append(Table(f"{len(rows)} problems", ["problem", "definition", "span", "n", "parameters",
                                                      "analytic Jacobian", "reference solution",
                                                      "relative accuracy of the reference", "citation"], rows))
    return sec


def other_checks_section(records: list[dict], shown: set[str]) -> Section:
    sec = Section("other-checks", "All other checks",
                  "Checks without a figure of their own: proven algebraic order, embedded-estimate bound,"
                  " batch behaviour, float32 agreement, accuracy against published values, agreement with"
                  " the reference on the same tableau.")
    recs = [r for r in records if r["property"] not in shown]
    if not recs:
        sec.empty = "no other check records in this run"
        return sec
    rows = [[r["backend"], r["property"], r["method"], r["problem"], fmt(r.get("measured"), 4),
             fmt(r.get("expected"), 4), verdict_cell(r["verdict"]), r.get("message") or ""] for r in recs]
    sec.tables.append(Table(f"{len(recs)} records", ["backend", "property", "method", "problem", "measured",
                                                     "expected", "verdict", "message"], rows, collapsed=True))
    return sec


# ----------------------------------------------------------------------------- document
def sections(doc: dict) -> list[Section]:
    """Every section of the report, in order (all present; empty ones carry one line)."""
    records = list(doc.get("records", []))
    style = Style(doc)
    ids = [0]
    out = [
        summary_section(doc, records),
        work_precision_section(doc, records, style, ids),
        convergence_section(doc, records, style, ids),
        tolerance_section(doc, records, style, ids),
        dense_section(doc, records, style, ids),
        gradient_section(doc, records, style, ids),
        drift_section(doc, records, style, ids),
        stiffness_section(doc, records, style, ids),
        sde_section(doc, records, style, ids),
        flows_section(doc, records, style, ids),
        *family_sections(doc, records, style, ids),
        stability_section(doc, records, style, ids),
    ]
    out.append(problems_section(doc, records))
    shown = {"work_precision", "convergence_order", "dense_output_order", "tolerance_proportionality",
             "stability_region", "stability_angle", "stiffness_handling", "stiff_order"} | {
        r["property"] for r in records if _is_gradient(r) or _is_drift(r) or is_sde(r) or is_flow(r)
        or family_of(doc, r) is not None}
    out.append(other_checks_section(records, shown))
    return out


def render_html(doc: dict) -> str:
    """The report page for ``doc`` (a JSON-loaded document); same document, same bytes."""
    jinja2 = plots.require_report_extra("jinja2")
    text = resources.files("odeverify.report").joinpath("templates/report.html.j2").read_text(encoding="utf-8")
    env = jinja2.Environment(autoescape=True, trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True,
                             undefined=jinja2.Undefined)
    env.filters["cell_text"] = lambda c: c[0] if isinstance(c, (tuple, list)) else c
    env.filters["cell_class"] = lambda c: c[1] if isinstance(c, (tuple, list)) else ""
    template = env.from_string(text)
    secs = sections(doc)
    for s in secs:
        for f in s.figures:
            f["svg"] = _markup(f["svg"])  # produced by matplotlib from our own labels
        s.intro = _markup(s.intro)
        s.notes = [_markup(n) if n is MATRIX_RULE else n for n in s.notes]
    records = list(doc.get("records", []))
    # the header counts what the summary's backend table lists, from the same records
    rows = backend_rows(doc, records)
    counts = {v: sum(r["verdict"] == v for b in rows for r in b["records"]) for v in VERDICT_ORDER}
    return template.render(doc=doc, sections=secs, env=doc.get("environment", {}), counts=counts,
                           verdict_label=VERDICT_LABEL, verdict_order=VERDICT_ORDER, backends=rows,
                           n_figures=sum(len(s.figures) for s in secs))


def _markup(text: str) -> Any:
    from markupsafe import Markup  # a dependency of jinja2

    return Markup(text)
