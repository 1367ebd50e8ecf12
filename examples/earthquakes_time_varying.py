"""Time-varying spatial density of Japanese earthquakes (Neural STPP "Earthquakes JP" split), simulation-free.

Fits ``rho(x | t)`` (t = time in the 30-day window, mapped to [0, 1]) by maximum likelihood on the pooled
training events, with coordinates standardised by the training-event mean/std as in Neural STPP, and prints
the test spatial NLL per event in that standardised space — the quantity of Neural STPP's Table 1 (whose
time-varying CNF has 1.459, Attentive CNF 1.237, Jump CNF 1.007; docs/mathematics.md §9). This is the plain
time-varying model (no history conditioning yet), a preliminary for issue #4.

    .venv/bin/python examples/earthquakes_time_varying.py --model factorized --steps 3000
"""
from __future__ import annotations

import argparse
import time
from types import SimpleNamespace

import torch

import probflux as pf
from probflux.data import earthquakes_jp
from probflux.objectives import NegativeLogLikelihood
from probflux.train import TrainConfig, fit, mean_nll

WINDOW = 30.0  # days


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", choices=["factorized", "autoregressive"], default="factorized")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    train, val, test = (earthquakes_jp(s) for s in ("train", "val", "test"))
    stats = train.spatial_stats()

    def points(seqs):
        e = seqs.standardize(stats).events()
        return SimpleNamespace(t=e.t / WINDOW, x=e.x, context=None)

    P, V, T = points(train), points(val), points(test)
    torch.manual_seed(args.seed)
    if args.model == "factorized":
        density = pf.FactorizedMixture(2, components=64, hidden=256)
    else:
        density = pf.AutoregressiveMixture(2, components=32, hidden=256, layers=3)
    cfg = TrainConfig(steps=args.steps, batch_size=1024, lr=3e-3, warmup=100, ema=0.999, device="cpu", eval_every=500)
    start = time.perf_counter()
    result = fit(pf.Dynamics(density), NegativeLogLikelihood(), P, val=V, config=cfg, seed=args.seed, progress=None)
    nll = mean_nll(result.model, T.t.float(), T.x.float(), None, len(T.t))
    print(f"{args.model}: {args.steps} steps in {time.perf_counter() - start:.0f} s; validation NLL {result.best_val_nll:.3f}; "
          f"test spatial NLL per event (standardised space) {nll:.3f} over {len(T.t)} events")


if __name__ == "__main__":
    main()
