"""Sphinx configuration of the odeverify documentation site.

Build it (the ``docs`` extra installs Sphinx, MyST and the theme)::

    pip install -e ".[docs]"
    sphinx-build -W --keep-going -b html docs docs/_build/html

then open ``docs/_build/html/index.html``: the site is plain files with every script, style
and font inside it (no network access), so it reads offline.

Tables that describe the code (the problem library, the tableaus with their proven
stability, the backends and the command-line help) are generated from the registries and the
argument parser at build time into ``docs/_generated/`` (git-ignored), so they cannot go
stale.
"""
from __future__ import annotations

import os
import re
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(DOCS))
os.environ.setdefault("OMP_NUM_THREADS", "1")

import odeverify  # noqa: E402

import _generate  # noqa: E402

project = "odeverify"
author = "the odeverify authors"
copyright = "the odeverify authors"  # noqa: A001 (Sphinx's name)
release = odeverify.__version__
version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
]

source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
# the generated tables are included into the pages, not pages of their own
exclude_patterns = ["_build", "_generated", "Thumbs.db", ".DS_Store"]

# MyST: tables, definition lists, heading anchors for cross-page links such as
# [text](verdicts.md#inconclusive)
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3

# API reference from the docstrings; the public namespace is what each package's __all__ says
autodoc_default_options = {"members": True, "undoc-members": False, "show-inheritance": True}
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_format = "short"
autosummary_generate = False
napoleon_google_docstring = True
napoleon_numpy_docstring = True

# no math rendering: MathJax would be loaded from a CDN, and the site must read offline
html_theme = "furo"
html_title = f"odeverify {release}"
html_static_path: list[str] = []
html_show_sourcelink = False
html_last_updated_fmt = None
html_copy_source = False

# The docstrings cross-reference with Python's roles; a dangling one is a warning only in
# nitpicky mode, which is not set: the build fails on broken markup and on missing pages.
nitpicky = False


# Ambiguous cross-references: the flat namespace re-exports classes (odeverify.Problem is
# odeverify.problems.Problem), so a short name in a type hint has several equal targets.
suppress_warnings = ["ref.python"]

_LITERAL = re.compile(r"(``.*?``)")


def _plain_docstring_markup(app, what, name, obj, options, lines):
    """The docstrings write norms as |x| and lists in plain-text style; keep docutils from
    reading them as reST (|x| is a substitution reference there, and a line indented less
    than the one before it must follow a blank line). Literals (``...``) are left alone."""
    out: list[str] = []
    prev_indent = None
    for line in lines:
        stripped = line.lstrip()
        indent = len(line) - len(stripped)
        if stripped and not stripped.startswith(("|", "+-", "+=")):
            parts = _LITERAL.split(line)
            line = "".join(p if p.startswith("``") else p.replace("|", "\\|") for p in parts)
        if stripped and prev_indent is not None and indent < prev_indent and out and out[-1].strip():
            out.append("")
        out.append(line)
        prev_indent = indent if stripped else prev_indent
    lines[:] = out


def setup(app):  # noqa: D401 (Sphinx's hook)
    """Write the generated tables before Sphinx reads the sources."""
    _generate.write_all(DOCS / "_generated")
    app.connect("autodoc-process-docstring", _plain_docstring_markup)
