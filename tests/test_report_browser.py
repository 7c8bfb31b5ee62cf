"""The report in a real browser (headless Chromium): every figure present and visible, no
console error, no request leaves the page; at a phone's width (375 px) and a desktop's (1200
px): no sideways scroll of the page (wide tables and figures scroll inside their own boxes),
tick labels at least 9 px high, a contents list whose entries do not overlap; and screenshots
at both widths.

Skipped when no Chromium is installed, unless ODEVERIFY_REQUIRE_BROWSER=1 (set in .ci/run),
which turns the skip into a failure. Set ODEVERIFY_SCREENSHOT_DIR to keep the screenshot.
"""
from __future__ import annotations

import base64
import hashlib
import html as html_lib
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

pytest.importorskip("matplotlib", reason="the report needs the 'report' extra (matplotlib)")
pytest.importorskip("jinja2", reason="the report needs the 'report' extra (jinja2)")

from .test_report import small_report_dir  # noqa: E402

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
TIMEOUT_S = 60

#: runs first (in <head>): records CSP violations and script errors
EARLY = ("window.__odv={errors:[],csp:[]};"
         "window.addEventListener('error',function(e){window.__odv.errors.push(String(e.message))});"
         "document.addEventListener('securitypolicyviolation',function(e){"
         "window.__odv.csp.push(e.violatedDirective+' '+e.blockedURI)});")
#: runs last: writes what the page looks like into the DOM, which --dump-dom prints
LATE = ("(function(){var figs=[].slice.call(document.querySelectorAll('svg.figure')).map(function(s){"
        "var r=s.getBoundingClientRect();var st=getComputedStyle(s);"
        "return {id:s.getAttribute('data-figure'),w:r.width,h:r.height,natural:s.getAttribute('width'),"
        "visible:st.display!=='none'&&st.visibility!=='hidden'&&st.opacity!=='0'}});"
        "var nav=[].slice.call(document.querySelectorAll('nav li')).map(function(l){"
        "var r=l.getBoundingClientRect();return [r.left,r.top,r.right,r.bottom]});"
        "var out={nav:nav,viewport:window.innerWidth,figures:figs,sections:[].slice.call(document.querySelectorAll('section')).map(function(s){"
        "return s.id}),resources:performance.getEntriesByType('resource').map(function(e){return e.name}),"
        "errors:window.__odv.errors,csp:window.__odv.csp,width:document.documentElement.scrollWidth};"
        "var pre=document.createElement('pre');pre.id='odv-probe';pre.textContent=JSON.stringify(out);"
        "document.body.appendChild(pre);})();")


def _browser() -> str:
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    reason = f"no headless browser found (looked for {', '.join(BROWSERS)}); on Debian: apt-get install chromium"
    if os.environ.get("ODEVERIFY_REQUIRE_BROWSER") == "1":
        pytest.fail(reason + " (ODEVERIFY_REQUIRE_BROWSER=1)")
    pytest.skip(reason)


def _sha256(script: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(script.encode()).digest()).decode() + "'"


def _probe_copy(report: Path) -> Path:
    """The report with the two probe scripts; the page's own CSP stays in force for
    everything else, the probes are allowed by their hashes only."""
    text = report.read_text(encoding="utf-8")
    csp = re.search(r'<meta http-equiv="Content-Security-Policy" content="([^"]+)">', text)
    assert csp, "the report must carry a Content-Security-Policy meta tag"
    policy = csp.group(1) + f"; script-src {_sha256(EARLY)} {_sha256(LATE)}"
    text = text.replace(csp.group(0), f'<meta http-equiv="Content-Security-Policy" content="{policy}">'
                                      f"<script>{EARLY}</script>", 1)
    text = text.replace("</body>", f"<script>{LATE}</script></body>", 1)
    probe = report.with_name("probe.html")
    probe.write_text(text, encoding="utf-8")
    return probe


#: headless Chromium lays a window out at least this wide (measured: innerWidth 500 for any smaller
#: --window-size); narrower widths are checked in an iframe of that width, which has its own viewport
MIN_WINDOW = 500
#: copies the framed page's probe output into the top document, which --dump-dom prints (reading a
#: file:// frame needs --allow-file-access-from-files)
FRAME_COPY = ("document.getElementById('page').addEventListener('load',function(){"
              "var src=document.getElementById('page').contentDocument.getElementById('odv-probe');"
              "var pre=document.createElement('pre');pre.id='odv-probe';"
              "pre.textContent=src?src.textContent:'';document.body.appendChild(pre);});")


def _at_width(page: Path, width: int) -> tuple[Path, int]:
    """(the file to open, the window width): the page itself, or below :data:`MIN_WINDOW` a
    wrapper whose iframe is ``width`` px wide at the top left (the screenshot is cut to it)."""
    if width >= MIN_WINDOW:
        return page, width
    wrapper = page.with_name(f"frame-{width}-{page.name}")
    wrapper.write_text(f'<!DOCTYPE html><html><body style="margin:0"><iframe id="page" src="{page.name}"'
                       f' style="border:0;display:block;width:{width}px;height:2200px"></iframe>'
                       f"<script>{FRAME_COPY}</script></body></html>", encoding="utf-8")
    return wrapper, width


def _chromium(browser: str, *args: str) -> subprocess.CompletedProcess:
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
           "--allow-file-access-from-files",
           "--disable-extensions", "--disable-background-networking", "--enable-logging=stderr", "--v=0", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> tuple[Path, str]:
    browser = _browser()
    out = tmp_path_factory.mktemp("report")
    shutil.copy(small_report_dir() / "report.html", out / "report.html")
    return out / "report.html", browser


#: the widths checked: a phone (the issue's 390 px class; 375 px is the common CSS width) and a desktop
WIDTHS = (375, 1200)
#: tick labels of the figures, in CSS px at their natural size (plots.TICK_PT points)
TICK_PX = 10.0 * 4 / 3


def _probe(rendered, width: int) -> tuple[dict, str]:
    report, browser = rendered
    page, window = _at_width(_probe_copy(report), width)
    proc = _chromium(browser, f"--window-size={window},2200", "--virtual-time-budget=5000", "--dump-dom",
                     page.as_uri())
    m = re.search(r'<pre id="odv-probe">(.*?)</pre>', proc.stdout, re.S)
    assert m, f"the probe did not run (CSP or a script error?); stderr: {proc.stderr[-2000:]}"
    return json.loads(html_lib.unescape(m.group(1))), proc.stderr


@pytest.mark.parametrize("width", WIDTHS)
def test_figures_visible_no_errors_no_requests(rendered, width):
    report, browser = rendered
    html = report.read_text(encoding="utf-8")
    # no network: no absolute or protocol-relative URL in any src/href
    assert not re.findall(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", html)
    data, stderr = _probe(rendered, width)
    assert data["viewport"] == width, "the browser did not take the requested width"
    n_svg = html.count('<svg class="figure"')
    assert n_svg >= 5
    assert len(data["figures"]) == n_svg
    for f in data["figures"]:
        assert f["visible"] and f["w"] > 200 and f["h"] > 100, f
        natural_px = float(f["natural"].removesuffix("pt")) * 4 / 3
        tick = TICK_PX * f["w"] / natural_px
        assert tick >= 9.0, f"figure {f['id']}: tick labels {tick:.1f} px high at {width} px"
    assert data["errors"] == []
    assert data["csp"] == [], "the page tried to load something its policy forbids"
    assert data["resources"] == [], "the page requested resources"
    assert data["width"] <= width, f"the page scrolls sideways at {width} px ({data['width']} px wide)"
    nav = data["nav"]
    assert len(nav) >= 10
    for i, a in enumerate(nav):
        assert a[2] <= width, f"contents entry {i} sticks out of the page"
        for b in nav[i + 1:]:
            overlap = min(a[2], b[2]) - max(a[0], b[0]) > 0.5 and min(a[3], b[3]) - max(a[1], b[1]) > 0.5
            assert not overlap, f"contents entries overlap: {a} {b}"
    for sid in ("summary", "work-precision", "convergence", "stability", "stiffness", "problems"):
        assert sid in data["sections"]
    console = [line for line in stderr.splitlines() if "CONSOLE" in line]
    assert console == [], console


@pytest.mark.parametrize("width", WIDTHS)
def test_screenshot(rendered, width):
    report, browser = rendered
    keep = os.environ.get("ODEVERIFY_SCREENSHOT_DIR")
    shot = (Path(keep) if keep else report.parent) / f"report-screenshot-{width}.png"
    shot.parent.mkdir(parents=True, exist_ok=True)
    page, window = _at_width(report, width)
    proc = _chromium(browser, f"--window-size={window},2200", "--virtual-time-budget=5000", f"--screenshot={shot}",
                     page.as_uri())
    assert shot.exists(), proc.stderr[-2000:]
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert int.from_bytes(data[16:20], "big") == width, "the screenshot is not as wide as asked"
    assert len(data) > 20_000, "a near-empty screenshot: did the page render?"
