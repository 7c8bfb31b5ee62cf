"""The HTML accuracy report (L7): records in, one self-contained HTML file out.

- :func:`collect` runs the checks (conformance per backend and method, work-precision sweeps,
  optional gradient and stiffness sources, stability functions) into a JSON-ready document;
- :func:`render_html` turns a document into the page (inline SVG, no script, no network);
- :func:`write_report` writes ``report.html`` and ``records.json`` atomically;
- :func:`build_report` does all three (``odeverify report``).

matplotlib and jinja2 come with the ``report`` extra; they are imported only when rendering.
"""
from .collect import SCHEMA, collect, default_backends, resolve_backends, stability_records
from .output import ReportPaths, build_report, check_out_dir, dumps_document, load_document, write_report
from .progress import Progress
from .render import render_html, sections

__all__ = ["SCHEMA", "Progress", "ReportPaths", "build_report", "check_out_dir", "collect", "default_backends",
           "dumps_document", "load_document", "render_html", "resolve_backends", "sections", "stability_records",
           "write_report"]
