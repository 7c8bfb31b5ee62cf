"""Tables of the documentation generated from the code at build time (``docs/conf.py``).

Each function returns Markdown read from a registry or from the argument parser, so the site
says what the installed code does: the command-line help, the problem library, the tableaus
with their proven stability, the reference solvers, the backends with their methods, the
gradient modes and the properties. ``write_all`` writes them into ``docs/_generated/``
(git-ignored), where the pages include them.

Run it alone to look at the tables: ``python docs/_generate.py /tmp/generated``.
"""
from __future__ import annotations

import contextlib
import io
import os
import re
import sys
from pathlib import Path
from typing import Any


def _cell(value: Any) -> str:
    text = "" if value is None else str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def _table(rows: list[list[Any]], header: list[str]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _first_line(doc: str | None) -> str:
    """The first sentence of a docstring, with reST roles (:func:`x`) as Markdown code."""
    text = " ".join((doc or "").strip().split("\n\n")[0].split())
    text = re.sub(r":[a-z]+:`~?([^`]+)`", r"`\1`", text)
    text = re.sub(r"``([^`]+)``", r"`\1`", text)
    end = re.search(r"\.(\s|$)", text)
    text = text[:end.start() + 1] if end else text
    if len(text) > 220:
        text = text[:220].rsplit(" ", 1)[0] + " …"
    return text


def cli_help() -> str:
    """``odeverify --help`` and the help of every subcommand, as the parser prints them."""
    from odeverify.cli import build_parser

    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "100"  # argparse wraps at $COLUMNS: fixed, so the page is stable
    try:
        parser = build_parser()
        out = ["<!-- generated from odeverify.cli.build_parser() by docs/_generate.py -->\n"]
        out.append("# `odeverify --help`\n\n```text\n" + parser.format_help().rstrip() + "\n```\n")
        subparsers = [a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction"]
        for action in subparsers:
            for name, sub in action.choices.items():
                out.append(f"# `odeverify {name} --help`\n\n```text\n{sub.format_help().rstrip()}\n```\n")
        return "\n".join(out)
    finally:
        if old is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = old


def _interval(iv: Any) -> str:
    if not iv:
        return ""
    lo, hi = iv
    return f"[{lo:.3f}, {hi:.3f}]"


def tableaus_table(data: dict) -> str:
    rows = []
    for t in data["tableaus"]:
        s = t["stability"]
        rows.append([f"`{t['name']}`", t["stages"], t["order"], t["embedded_order"] or "",
                     "explicit" if t["explicit"] else "implicit", "yes" if s["a_stable"] else "no",
                     "yes" if s["l_stable"] else "no", _interval(s["real_interval"]), t["citation"]])
    return ("<!-- generated from odeverify.TABLEAUS by docs/_generate.py -->\n\n"
            + _table(rows, ["tableau", "stages", "order", "embedded", "kind", "A-stable", "L-stable",
                            "real stability interval", "citation"]))


def solvers_table(data: dict) -> str:
    rows = [[f"`{s['name']}`", s["family"], s["order"], s["embedded_order"] or "",
             "adaptive and fixed" if s["adaptive"] else "fixed-step only", s["dense_output"],
             s["dense_order"] or ""] for s in data["solvers"]]
    return ("<!-- generated from odeverify.SOLVERS by docs/_generate.py -->\n\n"
            + _table(rows, ["solver", "family", "order", "embedded", "stepping", "dense output", "dense order"]))


def problems_table(data: dict) -> str:
    rows = [[f"`{p['name']}`", p["n"], f"[{p['t_span'][0]:g}, {p['t_span'][1]:g}]", p["solution"],
             ", ".join(p["tags"]), p["citation"]] for p in data["problems"]]
    return (f"<!-- generated from odeverify.PROBLEMS by docs/_generate.py: {len(rows)} problems -->\n\n"
            + _table(rows, ["problem", "n", "t_span", "solution", "tags", "citation"]))


def backends_table() -> str:
    """Every registered backend with its methods, or its install hint where its library is missing."""
    from odeverify import backends

    rows = []
    for name in backends.names():
        b = backends.get(name)
        if not b.available():
            rows.append([f"`{name}`", f"not installed when these pages were built: {b.install_hint}", "", ""])
            continue
        caps = b.capabilities()
        refused = [k for k, v in caps.options.items() if v is not True]
        rows.append([f"`{name}`", ", ".join(f"`{m}`" for m in caps.methods) or "none",
                     ", ".join(f"`{m}`" for m in caps.gradient_modes) or "none",
                     ", ".join(f"`{m}`" for m in caps.sde_methods) or "none",
                     ", ".join(f"`{k}`" for k in refused) or "none"])
    return ("<!-- generated from odeverify.backends by docs/_generate.py -->\n\n"
            + _table(rows, ["backend", "ODE methods", "gradient modes", "SDE methods", "options it refuses"]))


def _orders(table: Any) -> str:
    return ", ".join(f"{cls} {order:g}" for cls, order in table.items())


def sde_methods_table() -> str:
    """Every SDE method of every installed backend with the orders its library claims, per noise class."""
    from odeverify import backends

    rows = []
    for name in backends.names():
        b = backends.get(name)
        if name.startswith("reference-") or not b.available():
            continue
        for m, info in b.capabilities().sde_methods.items():
            rows.append([f"`{name}`", f"`{m}`", info.calculus, _orders(info.strong), _orders(info.weak),
                         f"`{info.reference}`" if info.reference else "", _cell(info.citation)])
    return ("<!-- generated from Capabilities.sde_methods by docs/_generate.py -->\n\n"
            + _table(rows, ["backend", "method", "calculus", "strong order claimed", "weak order claimed",
                            "same rule as the reference's", "source"]))


def sde_problems_table() -> str:
    """The SDE problem library (``odeverify.problems.sde.SDE_PROBLEMS``)."""
    from odeverify.problems.sde import SDE_PROBLEMS

    rows = []
    for name, p in SDE_PROBLEMS.items():
        rows.append([f"`{name}`", p.n, f"{p.noise} (m={p.noise_dim})", p.noise_class, p.calculus,
                     "closed form" if p.exact is not None else "fine solve", "yes" if p.moments else "",
                     _cell(p.description), _cell(p.citation)])
    return ("<!-- generated from odeverify.problems.sde.SDE_PROBLEMS by docs/_generate.py -->\n\n"
            + _table(rows, ["problem", "n", "noise", "class", "calculus", "reference", "exact moments",
                            "description", "source"]))


def cnf_problems_table() -> str:
    """The CNF problem library (``odeverify.problems.flows.CNF_PROBLEMS``)."""
    from odeverify.problems.flows import CNF_PROBLEMS

    rows = []
    for name, p in CNF_PROBLEMS.items():
        pairs = list(zip(p.base.mean, p.base.std))
        base = (f"N({pairs[0][0]:g}, {pairs[0][1]:g}^2) in each" if len(set(pairs)) == 1
                else ", ".join(f"N({m:g}, {s:g}^2)" for m, s in pairs))
        rows.append([f"`{name}`", p.dim, f"[{p.t_span[0]:g}, {p.t_span[1]:g}]", base, len(p.data),
                     "closed form" if p.has_exact else "Liouville (variational equation)",
                     _cell(p.field.description), _cell(p.field.citation)])
    return ("<!-- generated from odeverify.problems.flows.CNF_PROBLEMS by docs/_generate.py -->\n\n"
            + _table(rows, ["problem", "dim", "span", "base density (per component)", "data points", "oracle",
                            "field", "source"]))


def sde_gradient_modes_table() -> str:
    from odeverify.gradients.sde import SDE_GRADIENT_MODES

    rows = [[f"`{name}`", _first_line(getattr(mode, "description", "")) or str(getattr(mode, "description", "")),
             _cell(getattr(mode, "citation", ""))] for name, mode in SDE_GRADIENT_MODES.items()]
    return ("<!-- generated from odeverify.gradients.sde.SDE_GRADIENT_MODES by docs/_generate.py -->\n\n"
            + _table(rows, ["mode", "what it is", "citation"]))


def gradient_modes_table() -> str:
    from odeverify.gradients import GRADIENT_MODES

    rows = []
    for name, mode in GRADIENT_MODES.items():
        rows.append([f"`{name}`", ", ".join(mode.libraries),
                     "exact (discrete)" if mode.exact_discrete else "continuous (converges with tol)",
                     "yes" if mode.fixed_step else "no", _first_line(mode.description), mode.citation])
    return ("<!-- generated from odeverify.gradients.GRADIENT_MODES by docs/_generate.py -->\n\n"
            + _table(rows, ["mode", "libraries", "derivative of", "fixed steps only", "what it is", "citation"]))


def properties_table() -> str:
    from odeverify.properties import PROPERTIES

    rows = [[f"`{name}`", _first_line(getattr(fn, "__doc__", ""))] for name, fn in PROPERTIES.items()]
    return ("<!-- generated from odeverify.properties.PROPERTIES by docs/_generate.py -->\n\n"
            + _table(rows, ["property", "what it measures (the function's docstring)"]))


def deviations_table() -> str:
    """Every expected deviation (``odeverify/data/expected_failures.toml``) with its reason."""
    from odeverify import expectations

    def pattern(value: str) -> str:
        return "any" if value == "*" else f"`{value}`"

    entries = expectations.load()
    rows = [[pattern(e.backend), pattern(e.method), f"`{e.property}`", pattern(e.problem),
             " ".join(e.reason.split())] for e in entries]
    return (f"<!-- generated from odeverify/data/expected_failures.toml by docs/_generate.py: {len(rows)}"
            " deviations -->\n\n" + _table(rows, ["backend", "method", "property", "problem", "reason (measured)"]))


def _optional(module: str) -> Any | None:
    """A module that a release may not have yet: None, and the page says so."""
    import importlib

    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.startswith("odeverify"):
            return None
        raise


def explorations_table() -> str:
    """The properties ``odeverify explore`` searches (``odeverify.explore.EXPLORATIONS``)."""
    mod = _optional("odeverify.explore")
    if mod is None:
        return "No explorations in this build (odeverify.explore is not there).\n"
    rows = [[f"`{name}`", _first_line(e.description) or e.description] for name, e in mod.EXPLORATIONS.items()]
    return ("<!-- generated from odeverify.explore.EXPLORATIONS by docs/_generate.py -->\n\n"
            + _table(rows, ["property", "what it searches for"]))


#: matrix columns that are not measurements
NOT_A_PROPERTY = {"available": "whether the backend's library is installed (`n/a` when it is not)"}


def matrix_columns_table() -> str:
    """The columns of ``odeverify check --matrix``: short name -> property (``odeverify.cli``)."""
    from odeverify import cli, conformance
    from odeverify.properties import PROPERTIES

    rows = []
    for prop, short in getattr(cli, "_SHORT", {}).items():
        fn = PROPERTIES.get(prop) if prop in PROPERTIES else getattr(conformance, prop, None)
        what = _first_line(fn.__doc__) if fn is not None else NOT_A_PROPERTY.get(prop, "")
        rows.append([f"`{short}`", f"`{prop}`", what])
    return ("<!-- generated from odeverify.cli's matrix columns by docs/_generate.py -->\n\n"
            + _table(rows, ["column", "property", "what it measures"]))


def write_all(out: Path) -> list[Path]:
    """Write every generated table into ``out``; a file is rewritten only when it changed,
    so Sphinx rebuilds only the pages whose tables did."""
    from odeverify.cli import list_data

    out.mkdir(parents=True, exist_ok=True)
    with contextlib.redirect_stderr(io.StringIO()):
        data = list_data()
    pages = {
        "cli.md": cli_help(),
        "tableaus.md": tableaus_table(data),
        "solvers.md": solvers_table(data),
        "problems.md": problems_table(data),
        "backends.md": backends_table(),
        "gradient_modes.md": gradient_modes_table(),
        "properties.md": properties_table(),
        "deviations.md": deviations_table(),
        "explorations.md": explorations_table(),
        "matrix_columns.md": matrix_columns_table(),
        "sde_methods.md": sde_methods_table(),
        "sde_problems.md": sde_problems_table(),
        "sde_gradient_modes.md": sde_gradient_modes_table(),
        "cnf_problems.md": cnf_problems_table(),
    }
    written = []
    for name, text in pages.items():
        path = out / name
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).parent / "_generated")
    for p in write_all(target):
        print(p)
