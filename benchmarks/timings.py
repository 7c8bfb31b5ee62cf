"""Wall and CPU time of the commands the README and the documentation tell a user to run.

Every timing quoted in the documentation comes from this script. It runs each command in a
fresh subprocess, exactly as a user would type it, and records with it what the timing
depends on: which extras were installed (probed without importing), the CPU, how many cores
the process may use, the load average before and after, the thread settings, and the Python
and package versions. It writes ``docs/timings.md`` (generated: do not edit it by hand) and
the same data as JSON (``docs/timings.json``); the verdict matrices that the ``check
--backend`` runs print go to ``docs/verdict_matrices.md``, with the same provenance.

Run:
    OMP_NUM_THREADS=1 python benchmarks/timings.py                  # every case below
    python benchmarks/timings.py --only check-quick                   # one case (or a,b,...)
    python benchmarks/timings.py --with-tests                         # add the default test run
    python benchmarks/timings.py --list                               # the cases, without running

Cases:
    check-quick          odeverify check --quick (as many worker processes as cores)
    check-quick-serial   odeverify check --quick -j 1
    check-<backend>      odeverify check --backend <backend> --matrix, for each installed backend of
                         --backends (default: reference, scipy, torchdiffeq, diffrax,
                         reference-torch; the eager reference-jax and
                         reference-array_api_strict only when named); its verdict matrix
                         goes to docs/verdict_matrices.md
    check-sde-quick      odeverify check --sde --quick (the SDE methods of the reference)
    check-flows-quick    odeverify check --flows --quick (continuous normalizing flows, the reference)
    check-cde-quick      odeverify check --cde --quick (neural CDEs, the reference)
    check-events-quick   odeverify check --events --quick (events and jumps, the reference)
    check-irregular-quick  odeverify check --irregular --quick (irregular times, latent ODE, ODE-RNN)
    diagnose-quick       odeverify diagnose --quick on the example MLP field (examples/diagnose_fields.py)
    report-quick         odeverify report --quick --out <a temporary directory>
    tests                python -m pytest -q -n auto (with --with-tests; as .ci/run runs it)

A case run again replaces its previous entry; the other entries are kept with the machine
and extras they were measured on (``--fresh`` drops them). A command that fails or times out
is recorded with its exit status, never dropped.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import importlib.metadata
import importlib.util
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = "odeverify.timings/1"
DEFAULT_BACKENDS = ("reference", "scipy", "torchdiffeq", "diffrax", "reference-torch")

#: extra -> the modules that must be importable for it (pyproject.toml's optional dependencies)
EXTRAS = {
    "torch": ("torch", "torchdiffeq"),
    "jax": ("jax", "diffrax", "equinox"),
    "report": ("jinja2", "matplotlib"),
    "bench": ("asv",),
    "test": ("pytest", "hypothesis", "array_api_strict", "importlinter"),
    "docs": ("sphinx", "myst_parser", "furo"),
}
#: distributions whose versions the timings depend on
PACKAGES = ("odeverify", "numpy", "scipy", "torch", "torchdiffeq", "jax", "jaxlib", "diffrax", "equinox",
            "jinja2", "matplotlib", "pytest", "hypothesis")
#: environment variables that change how many threads the numerics use
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "XLA_FLAGS", "CI")


# ----------------------------------------------------------------------------- environment
def installed_extras() -> dict[str, dict[str, bool]]:
    """Which modules of each extra can be imported (found on the path; nothing is imported)."""
    return {extra: {m: importlib.util.find_spec(m) is not None for m in modules}
            for extra, modules in EXTRAS.items()}


def package_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except (OSError, ValueError, IndexError):
        pass
    return None


def git_commit() -> str | None:
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                             timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, timeout=30, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return sha + (" (uncommitted changes)" if dirty else "")


def environment() -> dict[str, Any]:
    extras = installed_extras()
    return {
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "memory_gib": memory_gib(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "extras": sorted(e for e, mods in extras.items() if all(mods.values())),
        "extras_detail": extras,
        "packages": package_versions(),
        "threads": {k: os.environ.get(k) for k in THREAD_VARS},
        "git_commit": git_commit(),
    }


# ----------------------------------------------------------------------------- cases
def odeverify_command() -> list[str]:
    """The ``odeverify`` console script of this interpreter's environment, as a user runs it."""
    script = Path(sys.executable).parent / "odeverify"
    if script.exists():
        return [str(script)]
    found = shutil.which("odeverify")
    return [found] if found else [sys.executable, "-m", "odeverify.cli"]


def available_backends(names: list[str]) -> tuple[list[str], dict[str, str]]:
    """The backends of ``names`` whose libraries are installed, and the hint of each that is not."""
    from odeverify import backends

    ok, missing = [], {}
    for name in names:
        b = backends.get(name)  # an unknown name raises, naming the choices
        if b.available():
            ok.append(name)
        else:
            missing[name] = b.install_hint
    return ok, missing


def cases(backend_names: list[str], with_tests: bool, out_dir: str) -> dict[str, list[str]]:
    cli = odeverify_command()
    # the commands as a user types them use every core (-j defaults to the cores); the serial
    # run beside it shows what the worker processes bring
    out = {"check-quick": cli + ["check", "--quick"], "check-quick-serial": cli + ["check", "--quick", "-j", "1"]}
    for name in backend_names:
        out[f"check-{name}"] = cli + ["check", "--backend", name, "--matrix"]
    out["check-sde-quick"] = cli + ["check", "--sde", "--quick"]
    out["check-flows-quick"] = cli + ["check", "--flows", "--quick"]
    for family in ("cde", "events", "irregular"):
        out[f"check-{family}-quick"] = cli + ["check", f"--{family}", "--quick"]
    out["diagnose-quick"] = cli + ["diagnose", "examples.diagnose_fields:make_mlp", "--z0", "normal:256",
                                   "--t-span", "0,1", "--quick"]
    out["report-quick"] = cli + ["report", "--quick", "--out", out_dir]
    if with_tests:
        out["tests"] = [sys.executable, "-m", "pytest", "-q", "-n", "auto"]
    return out


def summary_line(text: str) -> str:
    """The line that says how a command ended: check's and pytest's "N passed, ..." count,
    report's "wrote ...", else the last line."""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    for pattern in (r"^=*\s*\d+ (passed|failed)\b", r"^wrote "):
        for line in reversed(lines):
            if re.search(pattern, line):
                return line.strip("= ")[:200]
    return lines[-1][:200] if lines else ""


def extract_matrix(text: str) -> str | None:
    """The methods x properties matrix that ``check --matrix`` prints, with its summary line."""
    lines = text.splitlines()
    start = next((i for i, ln in enumerate(lines) if ln.startswith("method ")), None)
    if start is None:
        return None
    end = next((i for i in range(start, len(lines)) if re.match(r"\d+ passed", lines[i])), None)
    return "\n".join(ln.rstrip() for ln in lines[start:end + 1 if end is not None else len(lines)]).rstrip() or None


def run_case(name: str, argv: list[str], timeout: float) -> dict[str, Any]:
    """One command in a fresh process: wall time, CPU time of the process and every child it
    waited for (os.wait4), exit status, the load average around it."""
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")  # as .ci/run and the README's commands
    load_before = os.getloadavg()
    started = _dt.datetime.now(_dt.timezone.utc)
    t0 = time.perf_counter()
    with tempfile.TemporaryFile() as out:
        proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
        status, rusage, timed_out = None, None, False
        deadline = t0 + timeout
        while status is None:
            pid, st, ru = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                status, rusage = st, ru
                break
            if time.perf_counter() > deadline:
                timed_out = True
                proc.kill()
                _, status, rusage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.05)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        text = out.read().decode("utf-8", "replace")
    return {
        "case": name,
        "command": " ".join(Path(argv[0]).name if i == 0 else a for i, a in enumerate(argv)),
        "exit": proc.returncode,
        "timed_out": timed_out,
        "wall_s": round(wall, 2),
        "cpu_s": round(rusage.ru_utime + rusage.ru_stime, 2),
        "peak_rss_mib": round(rusage.ru_maxrss / 1024, 1),
        "load_before": [round(v, 2) for v in load_before],
        "load_after": [round(v, 2) for v in os.getloadavg()],
        "started": started.isoformat(timespec="seconds"),
        "summary": "timed out" if timed_out else summary_line(text),
        "matrix": extract_matrix(text) if "--matrix" in argv else None,
        "output_tail": text[-2000:],
    }


# ----------------------------------------------------------------------------- output
def _minutes(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{int(seconds // 60)} min {seconds % 60:02.0f} s"


def render_markdown(doc: dict[str, Any]) -> str:
    lines = [
        "<!-- generated by benchmarks/timings.py from docs/timings.json: do not edit by hand;",
        "     regenerate with: OMP_NUM_THREADS=1 python benchmarks/timings.py [--with-tests] -->",
        "",
        "# Timings",
        "",
        "How long the commands of the README and of these pages take. Every figure here is measured",
        "by `benchmarks/timings.py`, which runs each command in a fresh process as a user types it",
        "and records the machine, its load and the extras that were installed. Timings depend on",
        "all three: with the `torch` and `jax` extras installed, `report --quick` also grades",
        "torchdiffeq, diffrax and the reference on PyTorch (and compiles diffrax's solves), and a",
        "machine shared with other jobs is slower than an idle one. CPU time is user + system time",
        "of the command and every process it started; a CPU time above the wall time means it used",
        "more than one core. A load average above the number of usable cores means other jobs",
        "shared the machine: the wall time is then an upper bound, and the CPU time is the better",
        "measure of the work a command does.",
        "",
        "Regenerate this page (about as long as the sum of the wall times below):",
        "",
        "```bash",
        "OMP_NUM_THREADS=1 python benchmarks/timings.py --with-tests",
        "```",
        "",
    ]
    envs = doc["environments"]
    rows = sorted(doc["results"].values(), key=lambda r: (r["environment"], list(doc["order"]).index(r["case"])
                                                           if r["case"] in doc["order"] else 99))
    if not rows:
        lines += ["No command has been timed yet.", ""]
    for idx, env in enumerate(envs):
        mine = [r for r in rows if r["environment"] == idx]
        if not mine:
            continue
        extras = ", ".join(f"`{e}`" for e in env["extras"]) or "none (the core only)"
        pk = env["packages"]
        versions = ", ".join(f"{k} {v}" for k, v in pk.items() if v)
        lines += [
            f"## Measured {mine[0]['started'][:10]} on {env['usable_cpus']} of {env['cpu_count']} cores",
            "",
            f"- **Machine**: {env['cpu']}, {env['usable_cpus']} usable cores, "
            f"{env['memory_gib']} GiB memory; {env['platform']}.",
            f"- **Extras installed**: {extras}.",
            f"- **Threads**: " + ", ".join(f"`{k}={v}`" for k, v in env["threads"].items() if v is not None) + ".",
            f"- **Versions**: Python {env['python']}, {versions}; commit {env['git_commit']}.",
            "",
            "| command | wall time | CPU time | load average before → after (1 min) | exit | how it ended |",
            "|---|---|---|---|---|---|",
        ]
        for r in mine:
            end = r["summary"].replace("|", "\\|")
            lines.append(f"| `{r['command']}` | {_minutes(r['wall_s'])} | {_minutes(r['cpu_s'])} |"
                         f" {r['load_before'][0]:.1f} → {r['load_after'][0]:.1f} |"
                         f" {'timeout' if r['timed_out'] else r['exit']} | {end} |")
        lines.append("")
    if doc.get("missing"):
        lines += ["Backends not timed because their library was not installed: "
                  + ", ".join(f"`{k}` ({v})" for k, v in sorted(doc["missing"].items())) + ".", ""]
    return "\n".join(lines)


def render_matrices(doc: dict[str, Any]) -> str:
    """The verdict matrices of the ``check --backend NAME --matrix`` runs, each with where,
    when and with which versions it was measured."""
    lines = [
        "<!-- generated by benchmarks/timings.py from docs/timings.json: do not edit by hand;",
        "     regenerate with: OMP_NUM_THREADS=1 python benchmarks/timings.py -->",
        "",
        "# Verdict matrices",
        "",
        "The verdicts of every method of each backend, as `odeverify check --backend NAME --matrix`",
        "prints them for the full run (not `--quick`). [What the verdicts mean](verdicts.md#the-verdict-matrix)",
        "explains the cells; `odeverify check --backend NAME` prints every record with its measurement",
        "and reason. Each matrix was measured by `benchmarks/timings.py`, with the versions named",
        "above it; [timings](timings.md) has the machine and the extras.",
        "",
    ]
    shown = 0
    for name in doc.get("order", []):
        r = doc["results"].get(name)
        if not name.startswith("check-") or name == "check-quick" or not r or not r.get("matrix"):
            continue
        env = doc["environments"][r["environment"]]
        backend = name[len("check-"):]
        pk = env["packages"]
        version = pk.get(backend) if backend in ("scipy", "torchdiffeq", "diffrax") else None
        lines += [f"## {backend}" + (f" {version}" if version else ""), "",
                  f"`{r['command']}` (exit {r['exit']}), measured {r['started'][:10]} with odeverify"
                  f" {pk.get('odeverify')} at commit {env['git_commit']}:", "",
                  "```text", r["matrix"], "```", ""]
        shown += 1
    if not shown:
        lines += ["No matrix has been measured yet: run `python benchmarks/timings.py`.", ""]
    return "\n".join(lines)


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def load(path: Path) -> dict[str, Any]:
    if path.exists():
        doc = json.loads(path.read_text(encoding="utf-8"))
        if doc.get("schema") == SCHEMA:
            return doc
    return {"schema": SCHEMA, "environments": [], "results": {}, "order": [], "missing": {}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default=None, help="comma-separated cases to run (default: all; see --list)")
    ap.add_argument("--backends", default=",".join(DEFAULT_BACKENDS),
                    help="backends for the check-<backend> cases (comma-separated; those not installed are noted)")
    ap.add_argument("--with-tests", action="store_true", help="also time the default test run (python -m pytest -q)")
    ap.add_argument("--timeout", type=float, default=3600.0, help="seconds allowed per command (default 3600)")
    ap.add_argument("--fresh", action="store_true", help="drop the entries of earlier runs")
    ap.add_argument("--list", action="store_true", help="print the cases and their commands, run nothing")
    ap.add_argument("--json", default=str(ROOT / "docs" / "timings.json"), help="data file (default docs/timings.json)")
    ap.add_argument("--markdown", default=str(ROOT / "docs" / "timings.md"), help="page (default docs/timings.md)")
    ap.add_argument("--matrices", default=str(ROOT / "docs" / "verdict_matrices.md"),
                    help="page of the verdict matrices (default docs/verdict_matrices.md)")
    args = ap.parse_args(argv)
    if args.timeout <= 0:
        ap.error(f"--timeout={args.timeout}, but it must be > 0 seconds")

    names = [b.strip() for b in args.backends.split(",") if b.strip()]
    try:
        backends_ok, missing = available_backends(names)
    except ValueError as exc:
        ap.error(f"--backends={args.backends!r}: {exc}")
    with tempfile.TemporaryDirectory(prefix="odeverify-timings-") as out_dir:
        todo = cases(backends_ok, args.with_tests or (args.only is not None and "tests" in args.only.split(",")),
                     out_dir)
        if args.only:
            wanted = [c.strip() for c in args.only.split(",") if c.strip()]
            unknown = [c for c in wanted if c not in todo]
            if unknown:
                ap.error(f"--only={args.only!r}: unknown case(s) {', '.join(unknown)}; choices: {', '.join(todo)}")
            todo = {k: v for k, v in todo.items() if k in wanted}
        if args.list:
            for name, cmd in todo.items():
                print(f"{name:24s} {' '.join(cmd)}")
            return 0

        json_path, md_path, matrices_path = Path(args.json), Path(args.markdown), Path(args.matrices)
        doc = load(json_path) if not args.fresh else load(Path("/nonexistent"))
        env = environment()
        comparable = {k: v for k, v in env.items() if k != "git_commit"}
        idx = next((i for i, e in enumerate(doc["environments"])
                    if {k: v for k, v in e.items() if k != "git_commit"} == comparable), None)
        if idx is None:
            doc["environments"].append(env)
            idx = len(doc["environments"]) - 1
        else:
            doc["environments"][idx] = env
        doc["order"] = list(dict.fromkeys(list(cases(names, True, "-")) + doc.get("order", [])))
        doc["missing"] = {**doc.get("missing", {}), **missing}
        for name in missing:
            doc["results"].pop(f"check-{name}", None)
        print(f"extras installed: {', '.join(env['extras']) or 'none'}; {env['usable_cpus']} usable cores;"
              f" load {os.getloadavg()[0]:.1f}", file=sys.stderr)
        for name, cmd in todo.items():
            print(f"[{name}] {' '.join(cmd)}", file=sys.stderr, flush=True)
            result = run_case(name, cmd, args.timeout)
            result["command"] = result["command"].replace(out_dir, "<a temporary directory>")
            result["environment"] = idx
            doc["results"][name] = result
            print(f"[{name}] exit {result['exit']}, wall {result['wall_s']:.1f} s, CPU {result['cpu_s']:.1f} s:"
                  f" {result['summary']}", file=sys.stderr, flush=True)
            # after every case, so an interrupted run keeps what it measured
            write_atomic(json_path, json.dumps(doc, indent=2, sort_keys=True) + "\n")
            write_atomic(md_path, render_markdown(doc))
            write_atomic(matrices_path, render_matrices(doc))
    print(f"wrote {md_path}, {matrices_path} and {json_path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
