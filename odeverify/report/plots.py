"""Figures of the report as inline SVG strings (matplotlib, no pyplot, no global state).

Byte-determinism: every figure is saved inside ``rc_context({"svg.hashsalt": ...})`` with
``metadata={"Date": None}``, so the same records give the same bytes. Element
ids are prefixed per figure, so several SVGs can share one HTML document without clashing
ids (matplotlib derives clip-path ids from content, and two figures can produce the same).

Reading conventions used throughout: log-log axes wherever the data span decades; colour
encodes the method (the shared tableau, so one method in several libraries has one colour),
marker and line style encode the backend; every axis names its quantity and unit.
"""
from __future__ import annotations

import functools
import io
import math
import re
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from .._xp import MissingDependencyError

#: the salt that makes matplotlib's SVG ids reproducible
HASHSALT = "odeverify-report"
#: Okabe & Ito (2008), "Color Universal Design": distinguishable with colour-vision deficiency
#: (their yellow, unreadable as a thin line on white, replaced by Tol's wine), followed by
#: tab10 shades for the 9th colour onwards
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#D55E00", "#56B4E9", "#000000", "#882255",
           "#8c564b", "#7f7f7f", "#bcbd22", "#17becf", "#9467bd", "#1f77b4", "#ff7f0e", "#2ca02c")
BACKEND_STYLE = {"reference": ("o", "-"), "scipy": ("s", "--"), "torchdiffeq": ("^", "-."),
                 "diffrax": ("D", ":"), "torchsde": ("v", "--")}
_EXTRA_STYLES = (("v", "-"), ("P", "--"), ("X", "-."), ("*", ":"))
#: single-panel and two-panel figure sizes in inches (about 770 and 1150 px wide at 96 dpi)
SIZE = (8.0, 4.3)
WIDE = (12.0, 4.6)
#: tick-label size in points (13.3 px at the figure's natural size)
TICK_PT = 10.0
#: the smallest scale a figure is shown at (CSS min-width): tick labels stay >= 9 px on a
#: 360 px phone, where a wider figure scrolls inside its own box instead of shrinking
MIN_SCALE = 0.7


def floats(values: Iterable[Any]) -> np.ndarray:
    """Record values as float64: JSON's ``"inf"``/``"nan"`` strings parsed, None -> NaN."""
    out = []
    for v in values:
        try:
            out.append(float(v) if v is not None else math.nan)
        except (TypeError, ValueError):
            out.append(math.nan)
    return np.asarray(out, dtype=np.float64)


def backend_style(backend: str, index: int = 0) -> tuple[str, str]:
    return BACKEND_STYLE.get(backend, _EXTRA_STYLES[index % len(_EXTRA_STYLES)])


class Colours:
    """A stable colour per key, in order of first request."""

    def __init__(self, keys: Iterable[str] = ()) -> None:
        self._map: dict[str, str] = {}
        for k in keys:
            self(k)

    def __call__(self, key: str) -> str:
        if key not in self._map:
            self._map[key] = PALETTE[len(self._map) % len(PALETTE)]
        return self._map[key]


def require_report_extra(module: str) -> Any:
    """Import ``module`` (matplotlib, jinja2), or raise naming the ``report`` extra."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(f"{module!r} is not installed; the report needs it: pip install"
                                     f" 'odeverify[report]' ({exc})") from exc


def _figure(size: tuple[float, float], ncols: int = 1) -> tuple[Any, list[Any]]:
    require_report_extra("matplotlib")
    from matplotlib.figure import Figure

    # fixed margins (the legend sits in the right one): a layout engine measures every tick
    # label of every draw and made rendering several times slower
    fig = Figure(figsize=size)
    right = 0.64 if ncols == 1 else 0.77
    fig.subplots_adjust(left=0.6 / size[0] + 0.02, right=right, bottom=0.6 / size[1], top=1 - 0.45 / size[1],
                        wspace=0.3)
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    for ax in axes:
        ax.tick_params(labelsize=TICK_PT)
        ax.grid(True, which="major", color="#d0d0d0", linewidth=0.6)
        ax.grid(True, which="minor", color="#ececec", linewidth=0.4)
        ax.set_axisbelow(True)
    return fig, list(axes)


def to_svg(fig: Any, figure_id: str) -> str:
    """The figure as an ``<svg>`` element (no XML prolog), ids prefixed with ``figure_id``."""
    import matplotlib

    buf = io.StringIO()
    with matplotlib.rc_context({"svg.hashsalt": HASHSALT, "svg.fonttype": "path"}):
        fig.savefig(buf, format="svg", metadata={"Date": None})
    text = buf.getvalue()
    text = text[text.index("<svg"):]
    prefix = f"{figure_id}-"
    text = re.sub(r'\bid="([^"]+)"', lambda m: f'id="{prefix}{m.group(1)}"', text)
    text = re.sub(r'href="#([^"]+)"', lambda m: f'href="#{prefix}{m.group(1)}"', text)
    text = re.sub(r"url\(#([^)]+)\)", lambda m: f"url(#{prefix}{m.group(1)})", text)
    # a readable size that shrinks with the page down to MIN_SCALE of its natural width (below
    # that it scrolls in its box); role/aria make it an image for assistive tech
    width_pt = float(fig.get_figwidth()) * 72.0
    min_px = round(width_pt * 4.0 / 3.0 * MIN_SCALE)
    return text.replace("<svg ", f'<svg class="figure" role="img" data-figure="{figure_id}"'
                                 f' data-min-scale="{MIN_SCALE}" style="min-width: {min_px}px" ', 1)


def _legend(ax: Any, n: int) -> None:
    if n == 0:
        ax.text(0.5, 0.5, "no data", transform=ax.transAxes, ha="center", va="center", color="#777")
        return
    ax.legend(fontsize=7 if n > 10 else 8.5, loc="center left", bbox_to_anchor=(1.02, 0.5),
              frameon=False, handlelength=2.6)


# ----------------------------------------------------------------------------- figures
def _note(fig: Any, note: str | None) -> None:
    """A caption line inside the figure (bottom left): it stays with the figure when the
    figure is copied out of the page (the machine's load, the repeat count)."""
    if note:
        fig.text(0.01, 0.012, note, fontsize=8.5, color="#444", ha="left", va="bottom")


def series_figure(series: Sequence[dict[str, Any]], *, xlabel: str, ylabel: str, title: str, figure_id: str,
                  xlog: bool = True, ylog: bool = True, invert_x: bool = False, note: str | None = None) -> str:
    """One panel of lines; each series is ``{"x", "y", "label", "colour", "marker", "linestyle"}``
    with optional ``"window": (xmin, xmax)`` (drawn thick) and ``"fit": (slope, intercept)``
    (a dotted fitted line log10 y = slope log10 x + intercept over the window)."""
    fig, (ax,) = _figure(SIZE)
    n = _draw(ax, series, xlog=xlog, ylog=ylog)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10.5)
    if invert_x:
        ax.invert_xaxis()
    _legend(ax, n)
    _note(fig, note)
    return to_svg(fig, figure_id)


def _draw(ax: Any, series: Sequence[dict[str, Any]], *, xlog: bool, ylog: bool) -> int:
    n = 0
    for s in series:
        x, y = floats(s["x"]), floats(s["y"])
        keep = np.isfinite(x) & np.isfinite(y) & ((x > 0) if xlog else True) & ((y > 0) if ylog else True)
        x, y = x[keep], y[keep]
        if x.size == 0:
            continue
        ax.plot(x, y, marker=s.get("marker", "o"), linestyle=s.get("linestyle", "-"), color=s["colour"],
                markersize=4, linewidth=1.3, label=s["label"], alpha=0.95)
        if s.get("x_lo") is not None and s.get("x_hi") is not None:
            # whiskers: the spread (min..max) of repeated timings around the median
            lo, hi = floats(s["x_lo"])[keep], floats(s["x_hi"])[keep]
            ok = np.isfinite(lo) & np.isfinite(hi) & (hi > lo)
            if ok.any():
                ax.errorbar(x[ok], y[ok], xerr=np.vstack([x[ok] - lo[ok], hi[ok] - x[ok]]), fmt="none",
                            ecolor=s["colour"], elinewidth=1.0, capsize=2.5, alpha=0.8)
        win = s.get("window")
        if win is not None:
            lo, hi = min(win), max(win)
            inside = (x >= lo * (1 - 1e-9)) & (x <= hi * (1 + 1e-9))
            if inside.sum() >= 2:
                ax.plot(x[inside], y[inside], color=s["colour"], linewidth=4.5, alpha=0.35,
                        solid_capstyle="round")
        fit = s.get("fit")
        if fit is not None and win is not None:
            slope, intercept = fit
            xs = np.geomspace(min(win), max(win), 8)
            ax.plot(xs, 10.0 ** (slope * np.log10(xs) + intercept), color=s["colour"], linestyle=(0, (1, 1.5)),
                    linewidth=1.0)
        n += 1
    from matplotlib.ticker import NullFormatter

    for on, axis, setter in ((xlog, ax.xaxis, ax.set_xscale), (ylog, ax.yaxis, ax.set_yscale)):
        if on:
            setter("log")
            axis.set_minor_formatter(NullFormatter())  # labelled minor ticks overlap on short ranges
    return n


def work_precision_figure(series: Sequence[dict[str, Any]], *, title: str, figure_id: str,
                          ylabel: str = "max relative error at t1", ylog: bool = True, note: str | None = None,
                          panels: tuple[str, str] = ("accuracy vs work", "accuracy vs time"),
                          xkeys: tuple[str, str] = ("nfev", "time"),
                          xlabels: tuple[str, str] = ("function evaluations (NFE)", "wall time [s]"),
                          ylabels: tuple[str, str] | None = None) -> str:
    """Two panels: accuracy versus NFE and versus wall time (x log) by default. Each series is
    ``{"nfev", "time", "y", "label", "colour", "marker", "linestyle"}`` with optional
    ``"time_lo"``/``"time_hi"`` (the spread of repeated timings, drawn as whiskers); ``y`` is
    an error (log axis) or significant digits (``ylog=False``). ``xkeys``/``ylabels`` and a
    series' ``"y2"`` draw other quantities (the right panel then plots ``y2``); ``note`` is a
    line of text inside the figure."""
    fig, (a1, a2) = _figure((WIDE[0], WIDE[1] + (0.25 if note else 0.0)), ncols=2)
    if note:
        fig.subplots_adjust(bottom=0.85 / fig.get_figheight())
    k1, k2 = xkeys
    n = _draw(a1, [dict(s, x=s[k1], x_lo=s.get(f"{k1}_lo"), x_hi=s.get(f"{k1}_hi")) for s in series],
              xlog=True, ylog=ylog)
    _draw(a2, [dict(s, x=s[k2], y=s.get("y2", s["y"]), x_lo=s.get(f"{k2}_lo"), x_hi=s.get(f"{k2}_hi"))
               for s in series], xlog=True, ylog=ylog)
    a1.set_xlabel(xlabels[0])
    a2.set_xlabel(xlabels[1])
    for ax, lab in zip((a1, a2), ylabels or (ylabel, ylabel)):
        ax.set_ylabel(lab)
    a1.set_title(panels[0], fontsize=10)
    a2.set_title(panels[1], fontsize=10)
    fig.suptitle(title, fontsize=11, y=0.995)
    _legend(a2, n)
    _note(fig, note)
    return to_svg(fig, figure_id)


def bdf_amplification(k: int, Z: np.ndarray) -> np.ndarray:
    """max |ζ| over the roots of BDFk's characteristic equation Σ_{j=1..k} (1 - 1/ζ)^j / j = z
    at every z of ``Z``: the step is stable where it is <= 1. With w = 1 - 1/ζ the equation is
    a polynomial in w; its roots are the eigenvalues of the companion matrix (batched)."""
    z = np.asarray(Z, dtype=np.complex128).ravel()
    # monic in w: w^k + sum_{j<k} (k/j) w^j - k z = 0
    comp = np.zeros((z.size, k, k), dtype=np.complex128)
    if k > 1:
        comp[:, 1:, :-1] = np.eye(k - 1)
    coeffs = [(-k * z) if j == 0 else np.full(z.size, k / j, dtype=np.complex128) for j in range(k)]
    for j, c in enumerate(coeffs):
        comp[:, j, -1] = -c
    w = np.linalg.eigvals(comp)
    with np.errstate(all="ignore"):
        zeta = np.abs(1.0 / (1.0 - w))
    amp = np.max(np.where(np.isfinite(zeta), zeta, 1e6), axis=-1)
    return amp.reshape(np.shape(Z))


@functools.lru_cache(maxsize=16)
def _bdf_grid(k: int, x0: float, x1: float, y0: float, y1: float, n: int = 161
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`bdf_amplification` on an n x n grid, cached: batched eigenvalues cost ~10 us a
    point, so the grid is coarser than the rational functions' and computed once a process."""
    gx, gy = np.linspace(x0, x1, n), np.linspace(y0, y1, n)
    amp = bdf_amplification(k, gx[None, :] + 1j * gy[:, None])
    for a in (gx, gy, amp):
        a.flags.writeable = False
    return gx, gy, amp


def stability_figure(regions: Sequence[dict[str, Any]], *, title: str, figure_id: str,
                     extent: tuple[float, float, float, float] = (-7.0, 1.5, -5.0, 5.0)) -> str:
    """Boundaries |R(z)| = 1 in the complex plane z = h*lambda, one contour per method, for
    ``{"label", "numerator", "denominator", "colour", "linestyle"}`` (coefficients lowest
    power first), or ``{"label", "bdf_order", ...}`` for a BDF method (its roots' largest
    modulus, :func:`bdf_amplification`). The stable side (|R| <= 1) is shaded."""
    from matplotlib.lines import Line2D

    fig, (ax,) = _figure((7.2, 4.9))
    x0, x1, y0, y1 = extent
    xs = np.linspace(x0, x1, 401)
    ys = np.linspace(y0, y1, 401)
    Z = xs[None, :] + 1j * ys[:, None]
    handles = []
    for r in regions:
        gx, gy = xs, ys
        if r.get("bdf_order"):
            gx, gy, amp = _bdf_grid(int(r["bdf_order"]), x0, x1, y0, y1)
        else:
            p, q = floats(r["numerator"])[::-1], floats(r["denominator"])[::-1]
            with np.errstate(all="ignore"):
                amp = np.abs(np.polyval(p, Z) / np.polyval(q, Z))
        amp = np.where(np.isfinite(amp), amp, 1e6)
        if not (amp.min() < 1.0 < amp.max()):
            continue
        # the stable side |R| <= 1, lightly shaded; overlaps darken (stable for several methods),
        # so the shade per region shrinks with their number (eight exteriors would turn it grey)
        ax.contourf(gx, gy, amp, levels=[0.0, 1.0], colors=[r["colour"]], alpha=min(0.12, 0.4 / len(regions)))
        alpha = r.get("alpha_deg")
        if alpha is not None and float(alpha) < 89.99:
            # the A(alpha) sector's edges: rays from 0 at angle alpha from the negative real axis
            a = math.radians(float(alpha))
            reach = max(abs(x0), abs(y0), abs(y1))
            ax.plot([0.0, -reach * math.cos(a)], [0.0, reach * math.sin(a)], color=r["colour"], linewidth=0.9,
                    linestyle=(0, (4, 3)))
            ax.plot([0.0, -reach * math.cos(a)], [0.0, -reach * math.sin(a)], color=r["colour"], linewidth=0.9,
                    linestyle=(0, (4, 3)))
        ax.contour(gx, gy, amp, levels=[1.0], colors=[r["colour"]], linewidths=1.4,
                   linestyles=[r.get("linestyle", "-")])
        handles.append(Line2D([], [], color=r["colour"], linestyle=r.get("linestyle", "-"), label=r["label"]))
    ax.axhline(0, color="#888", linewidth=0.7)
    ax.axvline(0, color="#888", linewidth=0.7)
    ax.set_aspect("equal")
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    ax.set_xlabel("Re(h λ)")
    ax.set_ylabel("Im(h λ)")
    ax.set_title(title, fontsize=10.5)
    if handles:
        ax.legend(handles=handles, fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    else:
        _legend(ax, 0)
    return to_svg(fig, figure_id)


def order_panels_figure(panels: Sequence[dict[str, Any]], *, title: str, figure_id: str) -> str:
    """Side-by-side log-log panels of a measured order, each ``{"title", "xlabel", "ylabel",
    "series"}``. A series is ``{"x", "y", "label", "colour", "marker", "linestyle"}`` with
    optional ``"yerr"`` (half-widths drawn as error bars, clipped at the axis), ``"hollow"``
    (per point: drawn as an open marker, e.g. a bias inside the Monte-Carlo noise), and
    ``"fit": {"slope", "lo", "hi", "x0", "y0", "x_min", "x_max"}``: the fitted line of slope
    ``slope`` through (x0, y0) over [x_min, x_max] (dotted), with the lines of slopes ``lo``
    and ``hi`` through the same point bounding a shaded band (the slope's interval)."""
    fig, axes = _figure((WIDE[0], WIDE[1]), ncols=len(panels))
    n = 0
    for ax, panel in zip(axes, panels):
        n = 0
        lows: list[float] = []
        tops: list[float] = []
        for s in panel["series"]:
            x, y = floats(s["x"]), floats(s["y"])
            keep = np.isfinite(x) & np.isfinite(y) & (x > 0) & (y > 0)
            if not keep.any():
                continue
            hollow = np.asarray(s.get("hollow") or [False] * x.size, dtype=bool)
            ax.plot(x[keep], y[keep], color=s["colour"], linestyle=s.get("linestyle", "-"), linewidth=1.2,
                    alpha=0.9, marker="", label=s["label"])
            solid, empty = keep & ~hollow, keep & hollow
            marker = s.get("marker", "o")
            ax.plot(x[solid], y[solid], linestyle="", marker=marker, markersize=4.5, color=s["colour"])
            ax.plot(x[empty], y[empty], linestyle="", marker=marker, markersize=4.5, markerfacecolor="white",
                    markeredgecolor=s["colour"])
            if s.get("yerr") is not None:
                err = floats(s["yerr"])
                ok = keep & np.isfinite(err) & (err > 0)
                if ok.any():
                    low = np.minimum(err[ok], y[ok] * (1 - 1e-3))  # a log axis cannot show y - err <= 0
                    ax.errorbar(x[ok], y[ok], yerr=np.vstack([low, err[ok]]), fmt="none", ecolor=s["colour"],
                                elinewidth=0.9, capsize=2.5, alpha=0.8)
                    tops.append(float(np.max(y[ok] + err[ok])))
            lows.append(float(np.min(y[keep])))
            tops.append(float(np.max(y[keep])))
            fit = s.get("fit")
            if fit and all(fit.get(k) is not None for k in ("slope", "x0", "y0", "x_min", "x_max")):
                xs = np.geomspace(float(fit["x_min"]), float(fit["x_max"]), 16)

                def line(slope: float) -> np.ndarray:
                    return float(fit["y0"]) * (xs / float(fit["x0"])) ** float(slope)

                ax.plot(xs, line(fit["slope"]), color=s["colour"], linestyle=(0, (1, 1.5)), linewidth=1.0)
                if fit.get("lo") is not None and fit.get("hi") is not None:
                    a, b = line(fit["lo"]), line(fit["hi"])
                    ax.fill_between(xs, np.minimum(a, b), np.maximum(a, b), color=s["colour"], alpha=0.15,
                                    linewidth=0)
            n += 1
        ax.set_xscale("log")
        ax.set_yscale("log")
        if lows:
            # the points set the range: an error bar reaching zero (a bias within its noise)
            # runs off the bottom instead of stretching the axis over decades
            ax.set_ylim(min(lows) / 2.5, max(tops) * 1.6)
        from matplotlib.ticker import NullFormatter

        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel(panel["xlabel"])
        ax.set_ylabel(panel["ylabel"])
        ax.set_title(panel["title"], fontsize=10)
        if n == 0:
            _legend(ax, 0)
    fig.suptitle(title, fontsize=11, y=0.995)
    handles = [h for ax in axes for h in ax.get_legend_handles_labels()[0]]
    labels = [lab for ax in axes for lab in ax.get_legend_handles_labels()[1]]
    seen: dict[str, Any] = {}
    for h, lab in zip(handles, labels):
        seen.setdefault(lab, h)
    if seen:
        axes[-1].legend(list(seen.values()), list(seen), fontsize=7 if len(seen) > 10 else 8.5, loc="center left",
                        bbox_to_anchor=(1.02, 0.5), frameon=False, handlelength=2.6)
    return to_svg(fig, figure_id)


def fold_step_figure(groups: Sequence[dict[str, Any]], *, title: str, figure_id: str) -> str:
    """The fold step per method: one row per method (categories on the y axis, in order of
    first appearance), the step ``h`` on a log x axis. Each group (a field) is
    ``{"label", "colour", "marker", "methods", "measured", "theory"}``: the measured step as a
    filled marker, theory's as a larger open one; a step that is infinite (no fold up to the
    search's end) is drawn at the right edge as a triangle pointing right."""
    fig, (ax,) = _figure((SIZE[0], max(SIZE[1], 1.2 + 0.32 * len({m for g in groups for m in g["methods"]}))))
    methods = list(dict.fromkeys(m for g in groups for m in g["methods"]))
    finite = [float(v) for g in groups for v in (*floats(g["measured"]), *floats(g["theory"]))
              if math.isfinite(v) and v > 0]
    if not methods or not finite:
        _legend(ax, 0)
        return to_svg(fig, figure_id)
    lo, hi = min(finite) / 2.0, max(finite) * 2.0
    edge = hi / 1.25
    offsets = np.linspace(-0.18, 0.18, len(groups)) if len(groups) > 1 else [0.0]
    for g, dy in zip(groups, offsets):
        y = np.asarray([methods.index(m) for m in g["methods"]], dtype=float) + dy
        meas, theo = floats(g["measured"]), floats(g["theory"])
        ok = np.isfinite(meas) & (meas > 0)
        ax.plot(meas[ok], y[ok], linestyle="", marker=g.get("marker", "o"), markersize=6, color=g["colour"],
                label=f"{g['label']}: measured")
        none = np.isinf(meas) & (meas > 0)
        if none.any():
            ax.plot(np.full(int(none.sum()), edge), y[none], linestyle="", marker=">", markersize=7,
                    color=g["colour"], label=f"{g['label']}: no fold found")
        ok = np.isfinite(theo) & (theo > 0)
        if ok.any():
            ax.plot(theo[ok], y[ok], linestyle="", marker="o", markersize=11, markerfacecolor="none",
                    markeredgecolor=g["colour"], label=f"{g['label']}: theory")
    from matplotlib.ticker import FormatStrFormatter, LogLocator, NullFormatter

    ax.set_xscale("log")
    ax.set_xlim(lo, hi)
    if math.log10(hi / lo) <= 3:  # a short range: ticks at 1, 2 and 5 per decade, plain numbers
        ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(FormatStrFormatter("%g"))
    ax.xaxis.set_minor_formatter(NullFormatter())  # labelled minor ticks overlap on short ranges
    ax.set_yticks(range(len(methods)))
    ax.set_yticklabels(methods)
    ax.set_ylim(len(methods) - 0.5, -0.5)
    ax.set_xlabel("fold step h* (one step stops being orientation preserving)")
    ax.set_title(title, fontsize=10.5)
    _legend(ax, len(groups))
    return to_svg(fig, figure_id)
