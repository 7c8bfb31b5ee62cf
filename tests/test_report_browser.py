"""The report in a real browser (headless Chromium): every figure present and visible, no
console error, no request leaves the page, and a screenshot.

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
        "return {id:s.getAttribute('data-figure'),w:r.width,h:r.height,"
        "visible:st.display!=='none'&&st.visibility!=='hidden'&&st.opacity!=='0'}});"
        "var out={figures:figs,sections:[].slice.call(document.querySelectorAll('section')).map(function(s){"
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


def _chromium(browser: str, *args: str) -> subprocess.CompletedProcess:
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
           "--disable-extensions", "--disable-background-networking", "--enable-logging=stderr", "--v=0", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> tuple[Path, str]:
    browser = _browser()
    out = tmp_path_factory.mktemp("report")
    shutil.copy(small_report_dir() / "report.html", out / "report.html")
    return out / "report.html", browser


def test_figures_visible_no_errors_no_requests(rendered):
    report, browser = rendered
    html = report.read_text(encoding="utf-8")
    # no network: no absolute or protocol-relative URL in any src/href
    assert not re.findall(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", html)
    probe = _probe_copy(report)
    proc = _chromium(browser, "--window-size=1200,2200", "--virtual-time-budget=5000", "--dump-dom",
                     probe.as_uri())
    m = re.search(r'<pre id="odv-probe">(.*?)</pre>', proc.stdout, re.S)
    assert m, f"the probe did not run (CSP or a script error?); stderr: {proc.stderr[-2000:]}"
    data = json.loads(html_lib.unescape(m.group(1)))
    n_svg = html.count('<svg class="figure"')
    assert n_svg >= 5
    assert len(data["figures"]) == n_svg
    for f in data["figures"]:
        assert f["visible"] and f["w"] > 300 and f["h"] > 200, f
    assert data["errors"] == []
    assert data["csp"] == [], "the page tried to load something its policy forbids"
    assert data["resources"] == [], "the page requested resources"
    assert data["width"] <= 1200, "the page scrolls sideways at 1200 px"
    for sid in ("summary", "work-precision", "convergence", "stability", "stiffness"):
        assert sid in data["sections"]
    console = [line for line in proc.stderr.splitlines() if "CONSOLE" in line]
    assert console == [], console


def test_screenshot(rendered):
    report, browser = rendered
    keep = os.environ.get("ODEVERIFY_SCREENSHOT_DIR")
    shot = (Path(keep) if keep else report.parent) / "report-screenshot.png"
    shot.parent.mkdir(parents=True, exist_ok=True)
    proc = _chromium(browser, "--window-size=1200,2200", f"--screenshot={shot}", report.as_uri())
    assert shot.exists(), proc.stderr[-2000:]
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 20_000, "a near-empty screenshot: did the page render?"
