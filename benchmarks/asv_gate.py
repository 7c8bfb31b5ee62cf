"""Does ``asv continuous`` catch a real slowdown, and only a real one? A reproducible check.

In a throw-away clone of this repository (under a temporary directory) the script makes three
commits on top of ``HEAD``:

- ``gate-noop``: a comment added to a Markdown file; the installed package is the same;
- ``gate-planted``: the reference integrator's counted vector field (``fun`` in
  ``odeverify/integrate.py``) evaluates the field twice per call and counts both: every
  evaluation of the reference backends is doubled, the numbers they compute are not changed,
  and the other backends (scipy, torchdiffeq, diffrax) are not touched;

then runs, with this repository's ``asv.conf.json`` and suites (the working tree's ``suites/``):

(a) ``asv continuous --factor F gate-base gate-planted``: must exit 1 and flag every forward
    ``track_nfev`` row of a reference backend (ratio near 2), and no ``track_*`` row of another
    backend (the reference's gradient rows that double are listed, not required);
(b) ``asv continuous --factor F gate-base gate-noop``, ``--unchanged-runs`` times (3): each
    must exit 0 (nothing flagged).

The time_* rows flagged in (a) and (b) are listed too (they use CPU time: see suites/_common.py).
Summary: ``asv_gate.json`` and ``asv_gate.md`` in ``--out``; the script exits 0 when (a) and
(b) hold, 1 otherwise.

The environment is asv's virtualenv of this repository (``--env-dir``, default ``.asv/env``:
built once, ~3 min here, then reused); results go to the temporary directory. Run it with
nothing else using that environment (a lock file guards against a second asv_gate.py)::

    nice -n 10 python benchmarks/asv_gate.py                       # the gate: -b Track
    nice -n 10 python benchmarks/asv_gate.py --bench . --unchanged-runs 1   # timings too

``--bench`` is asv's regular expression on benchmark names (default ``Track``: the work
counters and accuracy, deterministic; with the ``time_*`` rows, a shared machine flags
unchanged timings at factor 1.1, see docs/asv.md); ``ODEVERIFY_ASV_GRID`` (small by default)
chooses the grid.
"""
from __future__ import annotations

import argparse
import fcntl
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: the line of odeverify/integrate.py that is planted, and what it becomes
PLANT_FILE = "odeverify/integrate.py"
PLANT_PATTERN = re.compile(r"(?P<indent>[ \t]*)def fun\(t_arr: Any, y: Any\) -> Any:\n"
                           r"(?P<body>[ \t]*)stats\.nfev \+= 1\n[ \t]*return f\(t_arr, y\)\n")
PLANT_REPLACEMENT = ("{indent}def fun(t_arr: Any, y: Any) -> Any:\n"
                     "{body}stats.nfev += 2  # planted by benchmarks/asv_gate.py: every evaluation done twice\n"
                     "{body}f(t_arr, y)\n"
                     "{body}return f(t_arr, y)\n")
#: the tracks that must double under the plant: the forward solves' NFE on a reference backend
#: (every one runs the planted loop). Gradient rows of the reference are reported but not required:
#: most modes run their forward solve on the loop (their track_nfev_forward doubles), but mali
#: steps its own fixed grid, untouched by the plant
NFE_TRACKS = ("track_nfev",)
#: a flagged NFE row's ratio must be at least this (2 per step, the first evaluation once)
MIN_NFE_RATIO = 1.5
#: asv continuous's table: | Change | Before | After | Ratio | Benchmark (Parameter) |
ROW = re.compile(r"^\|\s*(?P<mark>[+\-~x!*]?)\s*\|\s*(?P<before>[^|]*)\|\s*(?P<after>[^|]*)\|"
                 r"\s*(?P<ratio>[^|]*)\|\s*(?P<name>[\w.]+)(?P<params>\(.*\))?\s*\|\s*$")
#: rows asv reports as changed (worse, better)
FLAGGED = ("+", "-")


def children_cpu() -> float:
    """CPU seconds (user + system) of every finished child process and its waited-for descendants."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def run(cmd: list[str], cwd: Path, log: Path | None = None) -> tuple[int, str, float, float]:
    """(exit status, output, wall seconds, CPU seconds of the command's process tree). The CPU
    seconds do not depend on what else the machine runs; asv runs one benchmark at a time, so on
    an idle machine the wall time is about the CPU time."""
    start, cpu = time.monotonic(), children_cpu()
    out = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    wall, cpu = time.monotonic() - start, children_cpu() - cpu
    text = out.stdout + out.stderr
    if log is not None:
        log.write_text(f"$ {' '.join(cmd)}\n(exit {out.returncode}, {wall:.0f} s wall, {cpu:.0f} s CPU)\n{text}")
    return out.returncode, text, wall, cpu


def git(repo: Path, *args: str) -> str:
    out = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed in {repo}: {out.stderr.strip()}")
    return out.stdout.strip()


def read_conf(path: Path) -> dict:
    """asv.conf.json without its // comment lines (asv's own format)."""
    return json.loads("\n".join(line for line in path.read_text().splitlines() if not line.strip().startswith("//")))


def plant(source: str) -> str:
    """``source`` of integrate.py with every evaluation of the counted field done twice."""
    new, n = PLANT_PATTERN.subn(lambda m: PLANT_REPLACEMENT.format(**m.groupdict()), source)
    if n != 1:
        raise RuntimeError(f"{PLANT_FILE}: found the counted field 'def fun(t_arr, y): stats.nfev += 1; return"
                           f" f(t_arr, y)' {n} times, but expected exactly once; update PLANT_PATTERN")
    return new


def make_clone(work: Path) -> Path:
    """A clone of this repository's HEAD with the branches gate-base, gate-noop, gate-planted."""
    repo = work / "repo"
    git(ROOT, "rev-parse", "HEAD")
    subprocess.run(["git", "clone", "-q", "--no-hardlinks", str(ROOT), str(repo)], check=True)
    ident = ["-c", "user.name=asv_gate", "-c", "user.email=asv_gate@localhost"]
    git(repo, "checkout", "-q", "-b", "gate-base")
    git(repo, "checkout", "-q", "-b", "gate-noop")
    note = repo / "docs" / "asv.md"
    note.write_text(note.read_text() + "\n<!-- asv_gate.py: an unchanged commit -->\n")
    git(repo, "add", "docs/asv.md")
    git(repo, *ident, "commit", "-q", "-m", "asv_gate: unchanged code (a comment in the docs)")
    git(repo, "checkout", "-q", "gate-base")
    git(repo, "checkout", "-q", "-b", "gate-planted")
    target = repo / PLANT_FILE
    target.write_text(plant(target.read_text()))
    git(repo, "add", PLANT_FILE)
    git(repo, *ident, "commit", "-q", "-m", "asv_gate: every vector-field evaluation of the reference loop done twice")
    git(repo, "checkout", "-q", "gate-base")
    return repo


def write_conf(work: Path, repo: Path, env_dir: Path) -> Path:
    conf = read_conf(ROOT / "asv.conf.json")
    conf.update(repo=str(repo), branches=["gate-base"], benchmark_dir=str(ROOT / "suites"), env_dir=str(env_dir),
                results_dir=str(work / "results"), html_dir=str(work / "html"))
    path = work / "asv.conf.json"
    path.write_text(json.dumps(conf, indent=2))
    return path


def parse_rows(text: str) -> list[dict]:
    """The rows of asv continuous's comparison table (only the changed ones are printed)."""
    rows = []
    for line in text.splitlines():
        m = ROW.match(line.strip())
        if not m or m["name"] in ("Benchmark",) or set(m["name"]) <= {"-"}:
            continue
        ratio = m["ratio"].strip()
        try:
            value = float(ratio)
        except ValueError:
            value = None
        params = m["params"] or ""
        rows.append({"mark": m["mark"], "benchmark": m["name"], "params": params, "before": m["before"].strip(),
                     "after": m["after"].strip(), "ratio": value, "case": _case(params)})
    return rows


def _case(params: str) -> str:
    m = re.match(r"\('([^']*)'", params)
    return m.group(1) if m else ""


def is_reference(case: str) -> bool:
    return case.split(":")[0].startswith("reference")


def expected_nfe_rows(work: Path, commit: str) -> set[tuple[str, str]]:
    """(benchmark, params) of every NFE track row of a reference backend that has a value in the
    base commit's results (skipped rows, e.g. cuda without a GPU, have none)."""
    out = set()
    for path in (work / "results").rglob(f"{commit[:8]}-*.json"):
        data = json.loads(path.read_text())
        columns = data.get("result_columns", [])
        for name, entry in data.get("results", {}).items():
            if name.rsplit(".", 1)[-1] not in NFE_TRACKS:
                continue
            row = dict(zip(columns, entry))
            values, params = row.get("result"), row.get("params") or []
            combos = _product(params)
            for combo, value in zip(combos, values or []):
                if value is not None and is_reference(combo[0].strip("'")):
                    out.add((name, "(" + ", ".join(combo) + ")"))
    return out


def _product(params: list[list[str]]) -> list[tuple[str, ...]]:
    import itertools

    return list(itertools.product(*params)) if params else [()]


def judge_planted(rc: int, rows: list[dict], expected: set[tuple[str, str]]) -> list[str]:
    """What is wrong with (a); empty when the plant was caught as it should be."""
    problems = []
    if rc != 1:
        problems.append(f"asv continuous exited {rc}, but should exit 1 (a regression)")
    if not expected:
        problems.append("no NFE track row of a reference backend has a value: nothing could be flagged")
    flagged = {(r["benchmark"], r["params"]): r for r in rows if r["mark"] in FLAGGED}
    for key in sorted(expected):
        r = flagged.get(key)
        if r is None or r["mark"] != "+":
            problems.append(f"{key[0]}{key[1]} was not flagged '+', but its evaluations doubled")
        elif r["ratio"] is not None and r["ratio"] < MIN_NFE_RATIO:
            problems.append(f"{key[0]}{key[1]} ratio={r['ratio']}, but should be >= {MIN_NFE_RATIO}")
    for r in rows:
        if r["mark"] in FLAGGED and ".track_" in r["benchmark"] and not is_reference(r["case"]):
            problems.append(f"{r['benchmark']}{r['params']} ({r['mark']}) was flagged, but its backend is untouched")
    return problems


def summarise(rows: list[dict]) -> dict:
    flagged = [r for r in rows if r["mark"] in FLAGGED]
    kinds: dict[str, dict[str, int]] = {}
    for r in flagged:
        kind = r["benchmark"].rsplit(".", 1)[-1].split("_", 1)[0]  # time, track, peakmem
        origin = "reference" if is_reference(r["case"]) else "other backends"
        key = f"{kind} ({origin})"
        kinds.setdefault(key, {"+": 0, "-": 0})[r["mark"]] += 1
    return {"flagged": len(flagged), "by_kind": kinds, "rows": flagged}


def continuous(conf: Path, repo: Path, work: Path, base: str, head: str, args: argparse.Namespace, tag: str) -> dict:
    cmd = ["asv", "--config", str(conf), "continuous", "--factor", str(args.factor), "--show-stderr"]
    if args.bench:
        cmd += ["--bench", args.bench]
    cmd += [base, head]
    log = work / f"{tag}.log"
    print(f"[asv_gate] {tag}: {' '.join(cmd)}", flush=True)
    load = os.getloadavg()[0]
    rc, text, wall, cpu = run(cmd, cwd=repo, log=log)
    rows = parse_rows(text)
    print(f"[asv_gate] {tag}: exit {rc}, {wall:.0f} s wall, {cpu:.0f} s CPU,"
          f" {sum(r['mark'] in FLAGGED for r in rows)} rows flagged", flush=True)
    return {"command": " ".join(cmd[:1] + cmd[3:]), "exit": rc, "wall_s": round(wall, 1), "cpu_s": round(cpu, 1),
            "load_before": round(load, 2), "load_after": round(os.getloadavg()[0], 2), "log": str(log),
            "rows": rows, **{k: v for k, v in summarise(rows).items() if k != "rows"}}


def markdown(summary: dict) -> str:
    lines = [f"# asv_gate.py: {'PASS' if summary['pass'] else 'FAIL'}", "",
             f"- source commit `{summary['source_commit']}`, grid `{summary['grid']}`, factor {summary['factor']},"
             f" bench `{summary['bench'] or '(all)'}`, {summary['total_wall_s']:.0f} s in all",
             f"- timer: `time.process_time` ({summary['clock']})", ""]
    lines += ["| run | exit | wall | CPU | load (1 min) | flagged (+ worse / - better) |", "|---|---|---|---|---|---|"]
    for run_ in [summary["planted"], *summary["unchanged"]]:
        kinds = "; ".join(f"{k}: +{v['+']} / -{v['-']}" for k, v in sorted(run_["by_kind"].items())) or "none"
        lines.append(f"| {run_['name']} | {run_['exit']} | {run_['wall_s']:.0f} s | {run_['cpu_s']:.0f} s |"
                     f" {run_['load_before']}-{run_['load_after']} | {kinds} |")
    lines += ["", f"NFE rows required to be flagged in the planted run: {summary['expected_nfe_rows']}"
              " (every forward `track_nfev` row of a reference backend with a value).", ""]
    if summary["problems"]:
        lines += ["Problems:", ""] + [f"- {p}" for p in summary["problems"]] + [""]
    lines += ["Flagged rows of the planted run:", "", "| | benchmark | before | after | ratio |", "|---|---|---|---|---|"]
    lines += [f"| {r['mark']} | `{r['benchmark'].split('.', 1)[-1]}{r['params']}` | {r['before']} | {r['after']} |"
              f" {r['ratio']} |" for r in summary["planted"]["rows"] if r["mark"] in FLAGGED]
    for run_ in summary["unchanged"]:
        bad = [r for r in run_["rows"] if r["mark"] in FLAGGED]
        if bad:
            lines += ["", f"Flagged rows of {run_['name']}:", ""]
            lines += [f"- {r['mark']} `{r['benchmark']}{r['params']}` ratio {r['ratio']}" for r in bad]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bench", default="Track",
                    help="asv --bench regular expression (default Track: the deterministic rows; '.' for all)")
    ap.add_argument("--factor", type=float, default=1.1, help="asv continuous --factor (default 1.1)")
    ap.add_argument("--unchanged-runs", type=int, default=3, help="comparisons of the unchanged commit (default 3)")
    ap.add_argument("--env-dir", type=Path, default=None, help="asv environments to reuse (default .asv/env)")
    ap.add_argument("--out", type=Path, default=None, help="folder for asv_gate.json and .md (default: the work dir)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary clone and asv results")
    ap.add_argument("--rejudge", type=Path, default=None,
                    help="judge the logs and results of an earlier run's work dir again (runs no asv)")
    args = ap.parse_args(argv)
    if args.rejudge is not None:
        return rejudge(args.rejudge, args.out)
    if args.factor <= 1:
        ap.error(f"--factor={args.factor}, but it must be > 1 (asv's ratio threshold)")
    if args.unchanged_runs < 0:
        ap.error(f"--unchanged-runs={args.unchanged_runs}, but it must be >= 0")
    if shutil.which("asv") is None:
        print("asv_gate: asv is not installed (pip install -e '.[bench]')", file=sys.stderr)
        return 2
    env_dir = (args.env_dir or ROOT / ".asv" / "env").resolve()
    env_dir.parent.mkdir(parents=True, exist_ok=True)
    lock = open(env_dir.parent / "asv_gate.lock", "w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print(f"asv_gate: another asv_gate.py is using {env_dir}; wait for it", file=sys.stderr)
        return 2

    start = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="odeverify-asv-gate-"))
    out_dir = args.out or work
    out_dir.mkdir(parents=True, exist_ok=True)
    print(f"[asv_gate] work dir {work}", flush=True)
    repo = make_clone(work)
    conf = write_conf(work, repo, env_dir)
    run(["asv", "--config", str(conf), "machine", "--yes"], cwd=repo, log=work / "machine.log")

    planted = continuous(conf, repo, work, "gate-base", "gate-planted", args, "planted")
    unchanged = [continuous(conf, repo, work, "gate-base", "gate-noop", args, f"unchanged-{i + 1}")
                 for i in range(args.unchanged_runs)]
    info = time.get_clock_info("process_time")
    summary = {"source_commit": git(ROOT, "rev-parse", "--short", "HEAD"),
               "base_commit": git(repo, "rev-parse", "gate-base"),
               "grid": os.environ.get("ODEVERIFY_ASV_GRID", "small") or "small", "factor": args.factor,
               "bench": args.bench, "planted": planted, "unchanged": unchanged,
               "clock": f"{info.implementation}, resolution {info.resolution:g} s",
               "total_wall_s": round(time.monotonic() - start, 1), "work_dir": str(work)}
    judge(summary, work)
    write_summary(summary, out_dir)
    if not args.keep and args.out is not None:
        shutil.rmtree(work / "repo", ignore_errors=True)
    return 0 if summary["pass"] else 1


def judge(summary: dict, work: Path) -> None:
    """Sets summary's pass, problems, expected_nfe_rows from its runs' rows and the base results."""
    planted, unchanged = summary["planted"], summary["unchanged"]
    planted["name"] = "(a) planted: base vs doubled evaluations"
    expected = expected_nfe_rows(work, summary["base_commit"])
    problems = [f"(a) {p}" for p in judge_planted(planted["exit"], planted["rows"], expected)]
    for i, r in enumerate(unchanged):
        r["name"] = f"(b) unchanged {i + 1}: base vs a docs-only commit"
        if r["exit"] != 0 or r["flagged"]:
            problems.append(f"(b) run {i + 1}: exit {r['exit']}, {r['flagged']} rows flagged, but should be 0 and 0")
    summary.update({"pass": not problems, "problems": problems, "expected_nfe_rows": len(expected)})


def write_summary(summary: dict, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "asv_gate.json").write_text(json.dumps(summary, indent=2))
    md = markdown(summary)
    (out_dir / "asv_gate.md").write_text(md)
    print(md)


def rejudge(work: Path, out_dir: Path | None) -> int:
    """Judge an earlier run again from its asv_gate.json (or, without one, its logs) in ``work``."""
    path = work / "asv_gate.json"
    if not path.exists() and out_dir is not None and (out_dir / "asv_gate.json").exists():
        path = out_dir / "asv_gate.json"
    if not path.exists():
        print(f"asv_gate: --rejudge {work}: no asv_gate.json there", file=sys.stderr)
        return 2
    summary = json.loads(path.read_text())
    summary.setdefault("base_commit", git(Path(summary["work_dir"]) / "repo", "rev-parse", "gate-base"))
    for r in [summary["planted"], *summary["unchanged"]]:
        r["rows"] = parse_rows(Path(r["log"]).read_text())
        r.update({k: v for k, v in summarise(r["rows"]).items() if k != "rows"})
    judge(summary, Path(summary["work_dir"]))
    write_summary(summary, out_dir or work)
    return 0 if summary["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
