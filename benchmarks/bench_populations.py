"""Population dynamics from snapshots, leave-one-time-out: probflux vs TorchCFM's OT-CFM and SF2M.

Protocol (TorchCFM's single-cell protocol, run here side by side in one process on the same data):
for every data set and every interior snapshot ``k``, all methods train on the other snapshots for the
same wall-clock budget (``--budget`` seconds, one torch thread each), then are scored at the held-out time
``t_k`` against the held-out cells by

* ``w1_transport`` / ``w2_transport``: cells of snapshot ``k-1`` pushed to ``t_k`` by the learned ODE
  (probability flow; for g > 0 models and SF2M: the SDE, Euler–Maruyama) — the TorchCFM metric;
* ``w1_density`` / ``w2_density`` (probflux only): exact samples of ``rho_{t_k}``, no simulation at all;
* ``no-motion``: the cells of snapshot ``k-1`` scored as they are (what the transport has to beat).

W_p are exact EMD (POT) between at most ``--eval-cells`` cells per side (fixed subsample), in the data's
own coordinates (PC units for CITE). All methods see the same standardised coordinates (train-cell mean
and std), times mapped to ``[0, 1]``. For probflux models the table also gives ``kinetic / OT``: the
kinetic energy ``int E|u|^2 dt`` of the learned path (Monte Carlo, 8192 draws) over its lower bound
``sum_k W_2^2(rho_k, rho_{k+1}) / (t_{k+1} - t_k)`` from exact discrete OT between consecutive training
snapshots (standardised coordinates, at most ``--eval-cells`` cells each). The discrete cost between finite
samples overestimates ``W_2^2`` (its sampling bias grows with D), so the ratio can fall below 1.

Writes ``benchmarks/results/populations.json`` (records: benchmark, dataset, method, metric, value, std,
seeds, wall_seconds, command) and prints markdown tables.
"""
from __future__ import annotations

import argparse
import os
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parent))

import probflux as pf
from probflux.data import snapshots as snap
from probflux.io import write_json
from probflux.metrics import ot_cost, wasserstein
from probflux.objectives import DriftEnergy, EndpointLikelihood, KineticEnergy
from probflux.simulate import simulate
from probflux.train import TrainConfig, fit

DATASETS: dict[str, Callable[[], snap.Snapshots]] = {
    "cite5": lambda: snap.cite(pcs=5),
    "emt10": snap.emt_10d,
}


@dataclass
class Ours:
    family: str = "factorized"
    divergence_free: bool = False
    diffusion: float = 0.0
    kinetic: float = 0.05
    max_frequency: float = 32.0


OURS = {
    "probflux-factorized": Ours(),
    "probflux-factorized-divfree": Ours(divergence_free=True),
    "probflux-autoregressive": Ours(family="autoregressive"),
    "probflux-factorized-sb": Ours(diffusion=0.5),
}
PEERS = ("otcfm", "sf2m")
BASELINES = ("no-motion",)  # cells of snapshot k-1 compared with snapshot k as they are


def subsample(x: Tensor, n: int, seed: int = 1234) -> Tensor:
    if len(x) <= n:
        return x
    g = torch.Generator().manual_seed(seed)
    return x[torch.randperm(len(x), generator=g)[:n]]


def build(spec: Ours, dim: int) -> pf.Dynamics:
    if spec.family == "factorized":
        density = pf.FactorizedMixture(dim, components=16, hidden=128, layers=3, max_frequency=spec.max_frequency)
    else:
        density = pf.AutoregressiveMixture(dim, components=8, hidden=128, layers=3, max_frequency=spec.max_frequency)
    divfree = pf.DivergenceFree(dim, hidden=64, max_frequency=spec.max_frequency) if spec.divergence_free else None
    return pf.Dynamics(density, diffusion=spec.diffusion, divergence_free=divfree)


def train_ours(spec: Ours, times: Tensor, cells: list[Tensor], budget: float, seed: int) -> tuple[pf.Dynamics, dict]:
    """Endpoint NLL at the training times + kinetic (g = 0) or drift (g > 0) energy, for ``budget`` seconds."""
    dim = cells[0].shape[1]
    t = torch.cat([torch.full((len(c),), float(s), dtype=torch.float64) for s, c in zip(times, cells)])
    data = type("Points", (), {"t": t, "x": torch.cat(cells), "context": None})()
    energy = DriftEnergy if spec.diffusion > 0 else KineticEnergy
    objective = EndpointLikelihood(times.tolist()) + energy(spec.kinetic, samples=128)

    def run(steps: int, seconds: Optional[float]):
        torch.manual_seed(seed)
        dyn = build(spec, dim)
        cfg = TrainConfig(steps=steps, batch_size=512, lr=5e-3, warmup=min(100, steps // 10), ema=0.999, device="cpu",
                          eval_every=10**9, log_every=10**9, checkpoint_every=10**9)
        return fit(dyn, objective, data, config=cfg, seed=seed, progress=False, max_seconds=seconds)

    probe = run(10, None)  # step time on this machine (includes first-call overheads: conservative)
    steps = max(20, int(0.95 * budget / (probe.wall_seconds / 10)))
    res = run(steps, budget)
    return res.model, {"steps": res.step, "train_seconds": res.wall_seconds}


def path_kinetic(dyn: pf.Dynamics, n: int = 8192, seed: int = 0) -> float:
    g = torch.Generator().manual_seed(seed)
    t = torch.rand(n, generator=g)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        x = dyn.density.sample(t)
    with torch.no_grad():
        return float(dyn.velocity(t, x).pow(2).sum(-1).mean())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    p.add_argument("--methods", nargs="+", default=[*OURS, *PEERS, *BASELINES], choices=[*OURS, *PEERS, *BASELINES])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--budget", type=float, default=20.0, help="training wall-clock seconds per run")
    p.add_argument("--eval-cells", type=int, default=2000)
    p.add_argument("--steps", type=int, default=100, help="integration steps for transport")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=os.path.join("benchmarks", "results", "populations.json"))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    command = shlex.join(sys.orig_argv)
    start = time.perf_counter()
    results: dict[tuple[str, str, str], list[float]] = {}

    def put(ds: str, method: str, metric: str, v: float) -> None:
        results.setdefault((ds, method, metric), []).append(v)

    for name in args.datasets:
        full = DATASETS[name]()
        K = len(full)
        for k in range(1, K - 1):
            train_snap, t_held, held = full.leave_out(k)
            pooled = torch.cat(list(train_snap.samples))
            mean, std = pooled.mean(0), pooled.std(0)
            t0, t1 = float(full.times[0]), float(full.times[-1])
            s = (train_snap.times - t0) / (t1 - t0)
            s_held = (t_held - t0) / (t1 - t0)
            z = [((c - mean) / std).float() for c in train_snap.samples]
            prev = next(i for i in range(len(s)) if float(train_snap.times[i]) > t_held) - 1
            x_prev = subsample(z[prev], args.eval_cells)
            target = subsample(held, args.eval_cells)
            ot_bound = sum(ot_cost(subsample(z[i], args.eval_cells), subsample(z[i + 1], args.eval_cells)) / float(s[i + 1] - s[i])
                           for i in range(len(z) - 1))
            ds = f"{name}-holdout-t{t_held:g}"
            to_data = lambda y: y.double() * std + mean
            for seed in range(args.seeds):
                for method in args.methods:
                    tic = time.perf_counter()
                    if method in OURS:
                        spec = OURS[method]
                        dyn, info = train_ours(spec, s.float(), z, args.budget, seed)
                        torch.manual_seed(seed)
                        with torch.no_grad():
                            mode = "euler_maruyama" if spec.diffusion > 0 else "euler"
                            moved = simulate(dyn, x_prev, float(s[prev]), s_held, steps=args.steps, method=mode)[-1]
                            direct = dyn.density.sample(torch.full((len(target),), s_held))
                        put(ds, method, "w1_density", wasserstein(to_data(direct), target, p=1))
                        put(ds, method, "w2_density", wasserstein(to_data(direct), target, p=2))
                        put(ds, method, "kinetic_over_ot", path_kinetic(dyn, seed=seed) / ot_bound)
                    elif method in BASELINES:
                        if seed:
                            continue
                        moved, info = x_prev, {"steps": 0, "train_seconds": 0.0}
                    else:
                        from peers.torchcfm_peer import CFMPeer

                        peer = CFMPeer(method, z[0].shape[1], seed=seed)
                        info = peer.fit(s.tolist(), z, wall_seconds=args.budget)
                        moved = peer.transport(x_prev, float(s[prev]), s_held, sde=method == "sf2m", steps=args.steps)
                    put(ds, method, "w1_transport", wasserstein(to_data(moved), target, p=1))
                    put(ds, method, "w2_transport", wasserstein(to_data(moved), target, p=2))
                    put(ds, method, "train_seconds", float(info["train_seconds"] if "train_seconds" in info else info["wall_seconds"]))
                    put(ds, method, "steps", float(info["steps"]))
                    print(f"  {ds} seed {seed} {method}: W1 transport {results[(ds, method, 'w1_transport')][-1]:.3f} "
                          f"({time.perf_counter() - tic:.0f} s)", file=sys.stderr, flush=True)
    wall = time.perf_counter() - start

    def cell(ds: str, m: str, metric: str, fmt: str = "{:.3f}") -> str:
        v = results.get((ds, m, metric))
        if not v:
            return "–"
        return fmt.format(statistics.mean(v)) + ("" if len(v) < 2 else " ± " + fmt.format(statistics.stdev(v)))

    datasets = sorted({k[0] for k in results}, key=lambda d: (d.split("-")[0], float(d.split("-t")[-1])))
    print(f"# {command}\n# torch {torch.__version__}, {args.threads} thread(s), budget {args.budget:g} s per run, "
          f"{args.seeds} seeds, mean ± std over seeds; W_p in data units; wall {wall:.0f} s\n")
    head = ["data (held-out time)", "method", "W1 transport", "W2 transport", "W1 density", "W2 density", "kinetic / OT", "steps"]
    print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for ds in datasets:
        for m in args.methods:
            print(f"| {ds} | {m} | " + " | ".join(cell(ds, m, x) for x in ("w1_transport", "w2_transport", "w1_density", "w2_density", "kinetic_over_ot"))
                  + f" | {cell(ds, m, 'steps', '{:.0f}')} |")
    ratios = []
    for ds in datasets:
        for peer in [m for m in args.methods if m in PEERS]:
            for ours in [m for m in args.methods if m in OURS]:
                for metric in ("w1_transport", "w1_density"):
                    a, b = results.get((ds, ours, metric)), results.get((ds, peer, "w1_transport"))
                    if a and b:
                        r = statistics.mean(a) / statistics.mean(b)
                        ratios.append((ds, ours, peer, metric, r))
    if ratios:
        print("\nRatio of mean W1 (ours / peer's transport W1; < 1 = ours better)\n")
        print("| data | ours | peer | our metric | ratio |\n|---|---|---|---|---|")
        for ds, ours, peer, metric, r in ratios:
            print(f"| {ds} | {ours} | {peer} | {metric} | {r:.3f} |")
    records = []
    for (ds, m, metric), v in results.items():
        records.append({"benchmark": "populations", "dataset": ds, "method": m if m.startswith("probflux") or m in BASELINES else f"torchcfm-{m}",
                        "metric": metric, "value": statistics.mean(v), "std": statistics.stdev(v) if len(v) > 1 else None,
                        "seeds": len(v), "wall_seconds": wall, "command": command})
    for ds, ours, peer, metric, r in ratios:
        records.append({"benchmark": "populations", "dataset": ds, "method": f"{ours}/torchcfm-{peer}", "metric": f"{metric}_ratio",
                        "value": r, "std": None, "seeds": args.seeds, "wall_seconds": wall, "command": command})
    write_json(args.out, records)
    print(f"\n# wrote {len(records)} records to {args.out}")


if __name__ == "__main__":
    main()
