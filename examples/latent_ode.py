"""A latent ODE on irregularly sampled data, verified (issue 12; docs/irregular.md).

Run:  OMP_NUM_THREADS=1 python examples/latent_ode.py

The model (Rubanova, Chen & Duvenaud 2019) on the spiral data that ships with odeverify
(``odeverify.problems.irregular.spiral_dataset``: damped oscillations at random times, a
different count per series):

- an RNN encoder run backward over each series gives q(z0 | x) = N(mu, diag e^lv);
- z0 = mu + e^(lv/2) eps with a fixed eps (the reparametrisation noise, seeded);
- z' = W2 tanh(W1 z + b1) + b2 in a 2-D latent space, a linear decoder x = D z + e;
- the loss is the negative ELBO: the Gaussian negative log-likelihood at each series' own
  times plus KL(q || N(0, I)).

The ODE part goes through ``Backend.gradient`` (the decoder is carried in the state, so the
likelihood is a ``Loss``); ``latent_ode_value_and_grad`` adds the encoder and the
reparametrisation by the chain rule. The example

1. checks the gradient of every mode of the reference (PyTorch) and of torchdiffeq (when
   installed) against central differences of the whole objective computed by a DOP853 solve
   at rtol 1e-12 (``latent_ode_gradient``), and
2. takes a few normalised gradient steps and prints the loss going down.
"""
from __future__ import annotations

import os
import sys
import time
import warnings

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from odeverify import backends  # noqa: E402
from odeverify.properties.irregular import (default_latent_setup, latent_directional_oracle,  # noqa: E402
                                            latent_ode_gradient, latent_ode_value_and_grad)

CASES = (("reference-torch", ("discrete", "backsolve", "interpolated")), ("torchdiffeq", ("backprop", "adjoint")))


def main() -> int:
    warnings.simplefilter("ignore")
    start = time.perf_counter()
    params, setup = default_latent_setup(2)
    print(f"data: {len(setup.data)} series with {[s.times.size for s in setup.data]} irregular times")
    V = np.random.default_rng([0, 3]).standard_normal((3, sum(v.size for v in params.values())))
    V /= np.linalg.norm(V, axis=1, keepdims=True)
    oracle = latent_directional_oracle(params, setup, V)
    print(f"oracle: directional derivatives {np.array2string(oracle[0], precision=6)}"
          f" (central differences, error estimate {np.max(oracle[1]):.1e})")
    ok = True
    for name, modes in CASES:
        if not backends.get(name).available():
            print(f"{name}: not installed, skipped")
            continue
        for mode in modes:
            r = latent_ode_gradient("dopri5", mode, backend=name, oracle=oracle)
            ok &= r.verdict == "pass"
            print(f"{name:16s} {mode:12s} relative error {r.measured:.2e} (bound {r.expected:.1e}) {r.verdict}")
    losses = []
    for step in range(5):
        value, grads, _ = latent_ode_value_and_grad(params, setup, rtol=1e-6, atol=1e-8)
        losses.append(value)
        norm = np.sqrt(sum(float(np.sum(g * g)) for g in grads.values()))
        print(f"step {step}: negative ELBO {value:.4f}  |grad| {norm:.3g}")
        params = {k: v - 0.05 * grads[k] / norm for k, v in params.items()}
    ok &= all(b < a for a, b in zip(losses, losses[1:]))
    print(f"loss {'decreased' if ok else 'did NOT decrease'} at every step; {time.perf_counter() - start:.1f} s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
