"""Cold and warm persistent JAX compilation cache: ``odeverify check --backend diffrax``.

Runs the command twice in fresh processes with ``ODEVERIFY_JAX_CACHE`` pointing at a new,
empty directory: the first run compiles and fills the cache, the second reads it. For each run
it records the wall time, the CPU time (user + system of the process and its children), JAX's
compile events (XLA compilations, persistent-cache hits and writes, seconds spent tracing,
lowering and compiling; counted in the child through ``jax.monitoring``) and the records, and
checks that both runs gave the same verdicts and measured values. Docs: ``docs/jax-cache.md``.

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/jax_cache.py --quick
    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/jax_cache.py --full
    python benchmarks/jax_cache.py --quick --runs 1 --cache off     # compile counts, no cache

``--source DIR`` runs the odeverify found in DIR (e.g. an older commit unpacked with
``git archive``), to compare compile counts across versions. Each run is serial (``-j 1``
where the command has it): the counts are those of one process.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve()
REPO = HERE.parent.parent


def child(argv: list[str], out: str) -> int:
    """Run ``odeverify <argv>`` in this process, counting JAX's compile events into ``out``."""
    import importlib.util

    import jax.monitoring as monitoring

    counts = {"compiles": 0, "persistent_hits": 0, "persistent_writes": 0, "trace_s": 0.0, "lower_s": 0.0,
              "compile_s": 0.0, "by_name": {}}

    def on_duration(event: str, duration: float, **kw) -> None:
        if event == "/jax/core/compile/backend_compile_duration":
            counts["compiles"] += 1
            counts["compile_s"] += duration
            name = str(kw.get("fun_name", "?"))
            counts["by_name"][name] = counts["by_name"].get(name, 0) + 1
        elif event == "/jax/core/compile/jaxpr_trace_duration":
            counts["trace_s"] += duration
        elif event == "/jax/core/compile/jaxpr_to_mlir_module_duration":
            counts["lower_s"] += duration

    def on_event(event: str, **kw) -> None:
        if event == "/jax/compilation_cache/cache_hits":
            counts["persistent_hits"] += 1
        elif event == "/jax/compilation_cache/cache_misses":  # recorded when an entry is written
            counts["persistent_writes"] += 1

    monitoring.register_event_duration_secs_listener(on_duration)
    monitoring.register_event_listener(on_event)
    if importlib.util.find_spec("odeverify.parallel") is not None and "-j" not in argv and "--jobs" not in argv:
        argv = [*argv, "-j", "1"]
    from odeverify.cli import main

    try:
        rc = main(argv)
    except SystemExit as exc:
        rc = exc.code if isinstance(exc.code, int) else 1
    import odeverify

    counts["odeverify"] = str(Path(odeverify.__file__).parent)
    Path(out).write_text(json.dumps(counts, indent=1))
    return int(rc or 0)


def run_once(args: list[str], cache: str, source: str | None, workdir: Path, label: str) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", ODEVERIFY_JAX_CACHE=cache)
    if source:
        env["PYTHONPATH"] = source + os.pathsep + env.get("PYTHONPATH", "")
    counts_path = workdir / f"{label}.counts.json"
    records_path = workdir / f"{label}.records.json"
    journal = workdir / f"{label}.journal.jsonl"
    cmd = [sys.executable, str(HERE), "--child", str(counts_path), "--", *args, "--json", "--journal", str(journal)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    with open(records_path, "w") as fh:
        proc = subprocess.run(cmd, env=env, stdout=fh, stderr=subprocess.DEVNULL, cwd=workdir)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    counts = json.loads(counts_path.read_text()) if counts_path.exists() else {}
    try:
        records = json.loads(records_path.read_text()).get("records", [])
    except (OSError, ValueError):
        records = []
    return {"label": label, "exit": proc.returncode, "wall_s": wall, "cpu_s": cpu, "counts": counts,
            "records": records}


def _key(r: dict) -> tuple:
    return (r.get("property"), r.get("method"), r.get("problem"), r.get("backend"))


def compare(a: list[dict], b: list[dict]) -> list[str]:
    """Differences of verdict or measured value between two runs' records."""
    out = []
    ka, kb = {_key(r): r for r in a}, {_key(r): r for r in b}
    for k in sorted(set(ka) | set(kb), key=str):
        ra, rb = ka.get(k), kb.get(k)
        if ra is None or rb is None:
            out.append(f"{k}: only in {'the second' if ra is None else 'the first'} run")
        elif (ra.get("verdict"), ra.get("measured")) != (rb.get("verdict"), rb.get("measured")):
            out.append(f"{k}: {ra.get('verdict')} {ra.get('measured')!r} -> {rb.get('verdict')} {rb.get('measured')!r}")
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--child":
        return child(argv[3:], argv[1])
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="check --backend diffrax --quick")
    ap.add_argument("--full", action="store_true", help="check --backend diffrax (the full set)")
    ap.add_argument("--runs", type=int, default=2, help="runs on the same cache directory (default 2: cold, warm)")
    ap.add_argument("--cache", default=None,
                    help="cache directory (default: a new empty temporary one, removed afterwards); 'off' for none")
    ap.add_argument("--source", default=None, help="run the odeverify package found in this directory")
    ap.add_argument("--json", default=None, metavar="PATH", help="also write the figures (no records) here")
    ap.add_argument("--keep", action="store_true", help="keep the working directory (records, counts, cache)")
    ns = ap.parse_args(argv)
    if not (ns.quick or ns.full):
        ap.error("give --quick, --full or both")
    if ns.runs < 1:
        ap.error(f"--runs={ns.runs}, but it must be >= 1")
    results = []
    for name, extra in (("quick", ["--quick"]), ("full", [])):
        if not getattr(ns, name):
            continue
        work = Path(tempfile.mkdtemp(prefix=f"odeverify-jax-cache-{name}-"))
        cache = ns.cache or str(work / "jax-cache")
        runs = []
        for i in range(ns.runs):
            label = f"{name}-{i + 1}"
            r = run_once(["check", "--backend", "diffrax", *extra], cache, ns.source, work, label)
            c = r["counts"]
            print(f"{label}: exit {r['exit']}, wall {r['wall_s']:.1f} s, CPU {r['cpu_s']:.1f} s,"
                  f" {c.get('compiles', '?')} compilations ({c.get('by_name', {}).get('jit(fn)', '?')} jit(fn)),"
                  f" {c.get('persistent_hits', '?')} read from the cache, {c.get('persistent_writes', '?')} written;"
                  f" tracing {c.get('trace_s', 0):.1f} s, lowering {c.get('lower_s', 0):.1f} s,"
                  f" XLA compile or read {c.get('compile_s', 0):.1f} s; {len(r['records'])} records", flush=True)
            runs.append(r)
        for r in runs[1:]:
            diff = compare(runs[0]["records"], r["records"])
            print(f"{r['label']} against {runs[0]['label']}: " + ("same verdicts and measured values" if not diff
                  else f"{len(diff)} differences:\n  " + "\n  ".join(diff)))
        size = sum(f.stat().st_size for f in Path(cache).rglob("*") if f.is_file()) if Path(cache).is_dir() else 0
        print(f"{name}: cache {cache}: {size / 2**20:.1f} MiB")
        results.append({"command": name, "cache_mib": size / 2**20, "source": ns.source,
                        "runs": [{k: v for k, v in r.items() if k != "records"} for r in runs]})
        if ns.keep:
            print(f"{name}: records and counts kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    if ns.json:
        Path(ns.json).write_text(json.dumps({"load_avg": os.getloadavg(), "cpus": os.cpu_count(),
                                             "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
