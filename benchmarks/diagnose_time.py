"""Wall and CPU time of ``odeverify diagnose`` on the worked example's 32-dimensional MLP field
(examples/diagnose_fields.py: ``make_mlp``, 2 tanh layers of width 64) with a batch of 256 standard
normal states over t in [0, 1], dopri5 at rtol 1e-6: the default diagnosis and ``--quick``.

Targets (issue 13): default < 2 min, quick < 20 s on 2 cores. One thread (OMP_NUM_THREADS=1,
torch.set_num_threads(1)) as everywhere in odeverify's timings; the machine's load is printed
because a shared machine's wall time varies by ~30 %.

    python benchmarks/diagnose_time.py [--quick-only] [--field make_mlp]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick-only", action="store_true")
    parser.add_argument("--field", default="make_mlp", help="a field of examples/diagnose_fields.py")
    parser.add_argument("--batch", type=int, default=256)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    from odeverify.diagnose import diagnose

    path = f"examples.diagnose_fields:{args.field}"
    runs = [True] if args.quick_only else [True, False]
    for quick in runs:
        w, c = time.perf_counter(), time.process_time()
        d = diagnose(path, f"normal:{args.batch}x32", (0.0, 1.0), mode="backsolve", quick=quick)
        wall, cpu = time.perf_counter() - w, time.process_time() - c
        per = ", ".join(f"{r.property.removeprefix('diagnose_')} {r.details.get('wall_s', 0):.1f}" for r in d.records)
        print(f"{'quick' if quick else 'default'}: wall {wall:.1f} s, CPU {cpu:.1f} s, load {os.getloadavg()[0]:.2f};"
              f" {sum(r.verdict == 'fail' for r in d.records)} flagged; per measurement [s]: {per}", flush=True)


if __name__ == "__main__":
    main()
