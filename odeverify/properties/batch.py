"""Batch behaviour: per-sample backends must not couple samples; shared-step backends pay
for their hardest member (and may dilute its accuracy) — measured and reported."""
from __future__ import annotations

from typing import Any

import numpy as np

from ..metrics import as_numpy
from ..problems import Problem
from ..records import Record
from ._common import backend_for, backend_label, run

AMPLITUDES = (0.2, 1.0, 2.5, 0.6)


def batch_y0(problem: Problem, batch: int = 4, seed: int = 0) -> np.ndarray:
    """A deterministic batch of initial states around y0 at different amplitudes (so the
    members differ in difficulty)."""
    rng = np.random.default_rng(seed)
    y0 = np.asarray(problem.y0)
    scale = np.asarray([AMPLITUDES[i % len(AMPLITUDES)] for i in range(batch)])[:, None]
    return y0[None, :] * scale + 0.05 * rng.standard_normal((batch, y0.size))


def batch_behaviour(problem: Problem, method: str, *, backend: str = "reference", library: str = "numpy",
                    batch: int = 4, rtol: float = 1e-6, atol: float = 1e-9, **extra: Any) -> Record:
    """Solve a batch and each member alone.

    Per-sample backends (``Capabilities.per_sample``): sample i's solution and accepted
    step count must equal its solo solve (verdict). Shared-step backends: ``measured`` is
    the batch's step count over its hardest member's solo count (reported, verdict pass
    unless a solve fails), with each member's deviation from its solo solve in details.
    """
    b = backend_for(backend, library)
    per_sample = b.capabilities().per_sample
    opts: dict[str, Any] = dict(rtol=rtol, atol=atol, **extra)
    if b.name.startswith("reference") and per_sample:
        opts["batch"] = "per-sample"
    y0 = batch_y0(problem, batch)
    whole = run(problem, method, backend=backend, library=library, y0=y0, **opts)
    solo_opts = {k: v for k, v in opts.items() if k != "batch"}
    alone = [run(problem, method, backend=backend, library=library, y0=y0[i], **solo_opts) for i in range(batch)]
    details: dict[str, Any] = {"per_sample": per_sample, "batch": batch, "status": whole.status.code,
                               "solo_accepted": [a.stats.accepted for a in alone],
                               "batch_accepted": whole.stats.accepted}
    common = dict(property="batch_behaviour", method=method, problem=problem.name,
                  backend=backend_label(backend, library), library=library, details=details)
    if not whole.success or not all(a.success for a in alone):
        return Record(measured=None, expected=None, verdict="error", status=whole.status.code,
                      message="a solve failed", **common)
    yw = as_numpy(whole.ys)
    dev = [float(np.max(np.abs(yw[:, i] - as_numpy(a.ys)) / np.maximum(1.0, np.abs(as_numpy(a.ys)))))
           for i, a in enumerate(alone)]
    details["member_deviation_from_solo"] = dev
    if per_sample:
        sample_acc = whole.stats.sample_accepted
        details["sample_accepted"] = None if sample_acc is None else [int(v) for v in sample_acc]
        same_steps = sample_acc is not None and [int(v) for v in sample_acc] == details["solo_accepted"]
        worst = max(dev)
        ok = same_steps and worst <= 1e-12
        msg = "" if ok else (f"sample steps {details['sample_accepted']} vs solo {details['solo_accepted']},"
                             f" max deviation {worst:.3g}: samples are coupled")
        return Record(measured=worst, expected=0.0, verdict="pass" if ok else "fail", message=msg, **common)
    ratio = whole.stats.accepted / max(details["solo_accepted"])
    return Record(measured=ratio, expected=None, verdict="pass",
                  message=f"shared step: {whole.stats.accepted} steps for the batch vs {max(details['solo_accepted'])}"
                          f" for its hardest member alone; members deviate from their solo solves by up to"
                          f" {max(dev):.2g}", **common)
