"""A diagnosis (the ``odeverify.diagnose/1`` JSON document) as one self-contained HTML page,
in the report's style: its CSS, its verdict colours, inline SVG figures, no script, no network.

Rendering reads only the document, so a page rebuilt from a saved ``--json`` output is the
same page. Figures: the norm of the trajectories over time, the spectrum of df/dz along
them, the evaluations per sample (histogram) and against the tolerance, the output's
difference from the reference against the tolerance, the flow map's singular values and the
running Lyapunov exponent (when the dynamics measurements ran).
"""
from __future__ import annotations

import html
import re
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from . import plots
from .output import atomic_write_text, check_out_dir
from .render import fmt, verdict_cell

PALETTE = plots.PALETTE


def check_html_path(out: str) -> Path:
    """The page's path, its directory created and proven writable now (before any work); a
    directory given as OUT gets ``diagnosis.html`` inside it."""
    path = Path(out)
    if path.is_dir() or str(out).endswith(("/", "\\")):
        path = path / "diagnosis.html"
    try:
        check_out_dir(path.parent if str(path.parent) else ".")
    except ValueError as exc:
        raise ValueError(str(exc).replace("--out", "--html")) from None
    return path


def write_diagnosis(doc: dict[str, Any], path: str | Path) -> Path:
    """Render ``doc`` and write it to ``path`` atomically."""
    path = Path(path)
    atomic_write_text(path, render_diagnosis(doc))
    return path


def _report_css() -> str:
    """The report page's own CSS (one style for both pages)."""
    text = resources.files("odeverify.report").joinpath("templates/report.html.j2").read_text(encoding="utf-8")
    m = re.search(r"<style>(.*?)</style>", text, re.S)
    return m.group(1) if m else ""


def _cell(c: Any) -> str:
    if isinstance(c, (tuple, list)):
        return f'<td class="{html.escape(c[1])}">{html.escape(str(c[0]))}</td>'
    return f"<td>{html.escape(str(c))}</td>"


def _table(caption: str, header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(_cell(c) for c in row) + "</tr>" for row in rows)
    return (f'<div class="scroll"><table><caption>{html.escape(caption)}</caption><thead><tr>{head}</tr></thead>'
            f"<tbody>{body}</tbody></table></div>")


def _series(x: Any, y: Any, label: str, i: int, marker: str = "o", linestyle: str = "-") -> dict[str, Any]:
    return {"x": list(x), "y": list(y), "label": label, "colour": PALETTE[i % len(PALETTE)], "marker": marker,
            "linestyle": linestyle}


def _spans_decades(*columns: Any) -> bool:
    """Whether positive data span more than a decade (a log axis then reads well; on less, its
    only labels would be the minor ticks the report leaves unlabelled)."""
    v = np.concatenate([_finite(c) for c in columns]) if columns else np.zeros(0)
    v = v[np.isfinite(v)]
    return bool(v.size and np.all(v > 0) and v.max() / v.min() > 10)


def _finite(values: Any) -> np.ndarray:
    return plots.floats([np.nan if v is None else v for v in values])


def _histogram(values: Any, *, xlabel: str, title: str, figure_id: str, marks: dict[str, float]) -> str:
    fig, (ax,) = plots._figure(plots.SIZE)
    v = _finite(values)
    v = v[np.isfinite(v)]
    if v.size:
        lo, hi = float(v.min()), float(v.max())
        if hi / max(lo, 1e-300) > 20:
            bins = np.geomspace(max(lo, 1.0), hi * 1.0001, 30)
            ax.set_xscale("log")
        else:
            bins = 30
        ax.hist(v, bins=bins, color=PALETTE[0], alpha=0.85)
        for i, (name, x) in enumerate(marks.items()):
            ax.axvline(x, color=PALETTE[(i + 1) % len(PALETTE)], linestyle="--", linewidth=1.2, label=f"{name} {x:.3g}")
        plots._legend(ax, len(marks))
    else:
        plots._legend(ax, 0)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("samples")
    ax.set_title(title, fontsize=10.5)
    return plots.to_svg(fig, figure_id)


def _figures(rec: dict[str, Any], fid: list[int]) -> list[tuple[str, str]]:
    """(svg, caption) pairs for one record, from its details."""
    d = rec.get("details") or {}
    prop = rec["property"]
    out: list[tuple[str, str]] = []

    def nid() -> str:
        fid[0] += 1
        return f"dfig{fid[0]}"

    if prop == "diagnose_instability" and "norm_quantiles" in d:
        q = d["norm_quantiles"]
        re_t = d.get("max_real_eigenvalue_t", {})
        svg = plots.series_figure([_series(q["t"], q["median"], "median |z(t)|", 0),
                                   _series(q["t"], q["max"], "max |z(t)|", 1, "s", "--")],
                                  xlabel="t", ylabel="|z(t)| (2-norm)", title="trajectories: the state's norm",
                                  figure_id=nid(), xlog=False, ylog=_spans_decades(q["median"], q["max"]))
        out.append((svg, "The norm of the batch's states over time (median and largest)."))
        if re_t.get("max_re"):
            svg = plots.series_figure([_series(re_t["t"], re_t["max_re"], "max Re lambda(df/dz)", 2)], xlabel="t",
                                      ylabel="largest real part", title="spectrum of df/dz along the trajectories",
                                      figure_id=nid(), xlog=False, ylog=False)
            out.append((svg, "The largest real part of df/dz's eigenvalues over the subsample, at each time."))
    if prop == "diagnose_stiffness" and "eigenvalues_t" in d:
        e = d["eigenvalues_t"]
        svg = plots.series_figure([_series(e["t"], e["max_abs"], "spectral radius", 0),
                                   _series(e["t"], [None if v is None else -v for v in e["min_re"]],
                                           "-min Re lambda", 1, "s", "--")],
                                  xlabel="t", ylabel="|lambda|", title="spectrum along the trajectories",
                                  figure_id=nid(), xlog=False, ylog=_spans_decades(e["max_abs"]))
        out.append((svg, "Spectral radius and fastest decay rate of df/dz over the subsample."))
    if prop == "diagnose_work" and d.get("nfe_per_sample"):
        svg = _histogram(d["nfe_per_sample"], xlabel="vector-field evaluations per sample",
                         title="work per input", figure_id=nid(),
                         marks={"median": d["median"], "p90": d["p90"], "max": d["max"]})
        out.append((svg, f"Evaluations per sample ({d.get('how', '')}); costliest samples:"
                         f" {d.get('worst_samples', [])}."))
        rows = (d.get("tolerance_sweep") or {}).get("rows") or []
        if rows:
            svg = plots.series_figure([_series([r["rtol"] for r in rows], [r["nfev"] for r in rows],
                                               rec["method"], 0)], xlabel="rtol", ylabel="evaluations",
                                      title="work against the tolerance", figure_id=nid(), invert_x=True,
                                      ylog=_spans_decades([r["nfev"] for r in rows]))
            out.append((svg, "Evaluations of the user's method on the subsample against rtol."))
    if prop == "diagnose_solver_dependence" and d.get("tolerance_sweep"):
        sw = d["tolerance_sweep"]
        svg = plots.series_figure([_series([r["rtol"] for r in sw], [r["max_abs_diff"] for r in sw],
                                           rec["method"], 0)], xlabel="rtol", ylabel="max |z(T) - z_ref(T)|",
                                  title="output against the tolerance", figure_id=nid(), invert_x=True)
        out.append((svg, f"The output's largest difference from the reference ({d.get('reference', '')})."))
    if prop == "diagnose_sensitivity" and d.get("sigma_max"):
        ts = d["times"]
        smax = np.asarray(d["sigma_max"], dtype=float)
        smin = np.asarray(d["sigma_min"], dtype=float)
        series = []
        for j in range(min(smax.shape[1] if smax.ndim == 2 else 1, 4)):
            series.append(_series(ts, smax[:, j] if smax.ndim == 2 else smax, f"sigma_max, sample {j}", j))
            series.append(_series(ts, smin[:, j] if smin.ndim == 2 else smin, f"sigma_min, sample {j}", j, "s",
                                  "--"))
        svg = plots.series_figure(series, xlabel="t", ylabel="singular value of dz(t)/dz(t0)",
                                  title="flow-map singular values", figure_id=nid(), xlog=False,
                                  ylog=_spans_decades(smax.ravel(), smin.ravel()))
        out.append((svg, "Largest and smallest singular values of the flow map's Jacobian against t."))
    if prop == "diagnose_lyapunov" and d.get("running_lambda1"):
        r = d["running_lambda1"]
        svg = plots.series_figure([_series(d["times"], r["median"], "median", 0),
                                   _series(d["times"], r["min"], "min", 1, "", ":"),
                                   _series(d["times"], r["max"], "max", 1, "", ":")],
                                  xlabel="t", ylabel="running lambda_1", title="Lyapunov exponent: convergence",
                                  figure_id=nid(), xlog=False, ylog=False)
        out.append((svg, "The running estimate of the largest Lyapunov exponent over the samples."))
    return out


def render_diagnosis(doc: dict[str, Any]) -> str:
    """The HTML page of a diagnosis document (:meth:`odeverify.diagnose.Diagnosis.to_dict`)."""
    model = doc.get("model", {})
    records = doc.get("records", [])
    esc = html.escape
    rows = []
    for r in records:
        d = r.get("details") or {}
        rec_text = d.get("recommendation") or ("none needed" if r["verdict"] == "pass" else r.get("message", ""))
        rows.append([r["property"].removeprefix("diagnose_"), fmt(r.get("measured")), fmt(r.get("expected")),
                     verdict_cell(r["verdict"]), rec_text, r.get("message", "")])
    summary = _table("One line per failure mode: the measured figure, the threshold it is judged against, the"
                     " verdict and what to do", ["failure mode", "measured", "threshold", "verdict",
                                                 "recommendation", "what was measured"], rows)
    fid = [0]
    sections = []
    for r in records:
        figs = _figures(r, fid) if r["verdict"] not in ("error",) else []
        name = r["property"].removeprefix("diagnose_")
        label, cls = verdict_cell(r["verdict"])
        body = [f'<section id="{esc(name)}"><h2>{esc(name.replace("_", " "))} '
                f'<span class="{cls}" style="font-size:0.7em;padding:1px 6px">{esc(label)}</span></h2>',
                f'<p class="intro">{esc(r.get("message", ""))}</p>']
        rec_text = (r.get("details") or {}).get("recommendation")
        if rec_text:
            body.append(f'<p class="note"><b>Recommendation:</b> {esc(rec_text)}</p>')
        for svg, caption in figs:
            body.append(f'<figure><div class="figwrap">{svg}</div><figcaption>{esc(caption)}</figcaption></figure>')
        body.append("</section>")
        sections.append("".join(body))
    counts = doc.get("counts", {})
    state = "complete" if doc.get("complete", True) else "INCOMPLETE: the diagnosis ended early"
    head = ", ".join(f"{k}: {esc(str(v))}" for k, v in model.items() if k not in ("t_eval",))
    nav = "".join(f'<li><a href="#{esc(r["property"].removeprefix("diagnose_"))}">'
                  f'{esc(r["property"].removeprefix("diagnose_").replace("_", " "))}</a></li>' for r in records)
    elapsed = doc.get("elapsed_s")
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f'<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; style-src \'unsafe-inline\';'
            f' img-src data:">\n<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f'<meta name="generator" content="odeverify {esc(str(doc.get("version", "")))} ({esc(str(doc.get("schema", "")))})">\n'
            f"<title>odeverify diagnosis: {esc(str(model.get('name', '')))}</title>\n<style>{_report_css()}</style>\n"
            f"</head>\n<body>\n<header>\n<h1>odeverify diagnosis: {esc(str(model.get('name', '')))}</h1>\n"
            f'<p class="lead">{"quick" if doc.get("quick") else "full"} diagnosis, {state}'
            f'{"" if elapsed is None else f", {float(elapsed):.1f} s"}: {counts.get("fail", 0)} failure mode(s)'
            f' flagged, {counts.get("error", 0)} error(s), {counts.get("skip", 0)} skipped, {counts.get("pass", 0)}'
            f" healthy.</p>\n<p class=\"note\">{head}</p>\n</header>\n<nav><ol>{nav}</ol></nav>\n{summary}\n"
            + "\n".join(sections) + "\n</body>\n</html>\n")
