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
                 "diffrax": ("D", ":")}
_EXTRA_STYLES = (("v", "-"), ("P", "--"), ("X", "-."), ("*", ":"))
#: single-panel and two-panel figure sizes in inches (about 720 and 1050 px wide at 96 dpi)
SIZE = (8.0, 4.3)
WIDE = (12.0, 4.6)


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
    # a readable size that shrinks with the page; role/aria make it an image for assistive tech
    return text.replace("<svg ", f'<svg class="figure" role="img" data-figure="{figure_id}" ', 1)


def _legend(ax: Any, n: int) -> None:
    if n == 0:
        ax.text(0.5, 0.5, "no data", transform=ax.transAxes, ha="center", va="center", color="#777")
        return
    ax.legend(fontsize=7 if n > 10 else 8.5, loc="center left", bbox_to_anchor=(1.02, 0.5),
              frameon=False, handlelength=2.6)


# ----------------------------------------------------------------------------- figures
def series_figure(series: Sequence[dict[str, Any]], *, xlabel: str, ylabel: str, title: str, figure_id: str,
                  xlog: bool = True, ylog: bool = True, invert_x: bool = False) -> str:
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
                          ylabel: str = "max relative error at t1", ylog: bool = True) -> str:
    """Two panels: accuracy versus NFE and versus wall time (x log). Each series is
    ``{"nfev", "time", "y", "label", "colour", "marker", "linestyle"}``; ``y`` is an error
    (log axis) or significant digits (``ylog=False``)."""
    fig, (a1, a2) = _figure(WIDE, ncols=2)
    n = _draw(a1, [dict(s, x=s["nfev"]) for s in series], xlog=True, ylog=ylog)
    _draw(a2, [dict(s, x=s["time"]) for s in series], xlog=True, ylog=ylog)
    a1.set_xlabel("function evaluations (NFE)")
    a2.set_xlabel("wall time [s]")
    for ax in (a1, a2):
        ax.set_ylabel(ylabel)
    a1.set_title("accuracy vs work", fontsize=10)
    a2.set_title("accuracy vs time", fontsize=10)
    fig.suptitle(title, fontsize=11, y=0.995)
    _legend(a2, n)
    return to_svg(fig, figure_id)


def stability_figure(regions: Sequence[dict[str, Any]], *, title: str, figure_id: str,
                     extent: tuple[float, float, float, float] = (-7.0, 1.5, -5.0, 5.0)) -> str:
    """Boundaries |R(z)| = 1 in the complex plane z = h*lambda, one contour per method, for
    ``{"label", "numerator", "denominator", "colour", "linestyle"}`` (coefficients lowest
    power first). The stable side is the one containing small negative real z."""
    from matplotlib.lines import Line2D

    fig, (ax,) = _figure((7.2, 4.9))
    x0, x1, y0, y1 = extent
    xs = np.linspace(x0, x1, 401)
    ys = np.linspace(y0, y1, 401)
    Z = xs[None, :] + 1j * ys[:, None]
    handles = []
    for r in regions:
        p, q = floats(r["numerator"])[::-1], floats(r["denominator"])[::-1]
        with np.errstate(all="ignore"):
            amp = np.abs(np.polyval(p, Z) / np.polyval(q, Z))
        amp = np.where(np.isfinite(amp), amp, 1e6)
        if not (amp.min() < 1.0 < amp.max()):
            continue
        ax.contour(xs, ys, amp, levels=[1.0], colors=[r["colour"]], linewidths=1.4,
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
