"""Population dynamics from snapshots, leave-one-time-out: probflux vs TorchCFM's OT-CFM and SF2M.

Protocol (TorchCFM's single-cell protocol, run here side by side in one process on the same data):
for every data set and every interior snapshot ``k``, all methods train on the other snapshots for the
same CPU budget (``--budget`` seconds of ``time.process_time``, one torch thread each), then are scored at
the held-out time ``t_k`` against the held-out cells by

* ``w1_transport`` / ``w2_transport``: cells of snapshot ``k-1`` pushed to ``t_k`` by the learned ODE
  (probability flow; for g > 0 models and SF2M: the SDE, Euler–Maruyama) — the TorchCFM metric;
* ``w1_density`` / ``w2_density`` (probflux only): exact samples of ``rho_{t_k}``, no simulation at all;
* ``no-motion``: the cells of snapshot ``k-1`` scored as they are (what the transport has to beat).

Everything that is data handling or scoring is the library's, so these figures and ``probflux fit``'s agree:
the split and standardisation are :func:`probflux.data.snapshots.split_snapshots` (``data.leave_out = k``,
no validation cells: the training snapshots are all the other cells; ``x`` standardised by the training
cells' mean and std, times mapped to ``[0, 1]`` over the full set — every method trains in these
coordinates); probflux models are scored by :func:`probflux.evaluation.heldout_snapshot_scores`; the
peers' transported cells and the no-motion baseline by :func:`probflux.evaluation.sample_distances` on the
same :func:`probflux.evaluation.snapshot_pair` (at most ``--eval-cells`` cells per side, fixed subsample,
exact EMD in the data's own coordinates: PC units for CITE). For probflux models the table also gives
``kinetic / OT`` (:func:`probflux.evaluation.kinetic_over_ot`): the kinetic energy ``int E|u|^2 dt`` of the
learned path (Monte Carlo, 8192 draws) over its lower bound ``sum_k W_2^2(rho_k, rho_{k+1}) / (t_{k+1} - t_k)``
from exact discrete OT between consecutive training snapshots (standardised coordinates, at most
``--eval-cells`` cells each). The discrete cost between finite samples overestimates ``W_2^2`` (its sampling
bias grows with D), so the ratio can fall below 1.

Budgets (the same for every method): ``--budget`` seconds of this process's CPU time
(``probflux.train.fit(clock=time.process_time)``, ``CFMPeer.fit(clock=time.process_time)``), counting the
optimiser steps only. No method runs validation passes (probflux: no ``val`` points; the peers have none),
so none is charged for them. probflux runs the warm-up + cosine schedule over the budget
(``time_schedule=True``) and stops when it is spent; its schedule length and warm-up come from a 10-step
probe run before the budgeted run (not counted, a fraction of a second). Set-up (network construction)
and the scoring afterwards count for no one. ``train_seconds`` in the records is that CPU time.

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
from probflux.app.config import DataConfig
from probflux.data import TemporalPoints
from probflux.data import snapshots as snap
from probflux.evaluation import (
    SnapshotPair,
    heldout_snapshot_scores,
    kinetic_over_ot,
    sample_distances,
    snapshot_pair,
    to_model_coordinates,
)
from probflux.io import write_json
from probflux.objectives import DriftEnergy, EndpointLikelihood, KineticEnergy
from probflux.train import TrainConfig, fit

# name -> (loader, the DataConfig that names it): loaded once, split once per held-out snapshot
DATASETS: dict[str, tuple[Callable[[], snap.Snapshots], dict]] = {
    "cite5": (lambda: snap.cite(pcs=5), {"name": "cite", "pcs": 5}),
    "emt10": (snap.emt_10d, {"name": "emt10"}),
}
EVAL_SEED = 1234  # the fixed subsample of scored cells (and the scoring's own draws), the same for every method and seed
CLOCK = time.process_time  # every method's budget: this process's CPU time


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


@dataclass
class Holdout:
    """One leave-one-time-out problem, split and normalised by the library (the same for every method)."""

    dataset: str  # record name, e.g. "cite5-holdout-t3"
    split: snap.SnapshotSplit  # split.test: the held-out cells (data units); split.normalizer
    train_data: TemporalPoints  # training snapshots, data units
    train_model: TemporalPoints  # the same in model coordinates: what every method trains on
    times: list[float]  # model times of the training snapshots
    cells: list[Tensor]  # float32 model-coordinate training cells per snapshot (the peers' input)
    pair: SnapshotPair  # the scored cells: start (snapshot before t_k) and target (held out), data units
    s_prev: float
    s_held: float


def holdout(prefix: str, full: snap.Snapshots, data_cfg: dict, k: int, eval_cells: int) -> Holdout:
    """Hold out snapshot ``k`` of ``full`` (:func:`probflux.data.snapshots.split_snapshots` with
    ``data.leave_out = k`` and no validation cells) and fix the scored cells (:func:`probflux.evaluation.snapshot_pair`)."""
    split = snap.split_snapshots(DataConfig(**data_cfg, leave_out=k, val_fraction=0.0), seed=0, data=full)
    norm = split.normalizer
    train_data = split.train.to_points()
    pair = snapshot_pair(train_data, split.test, cells=eval_cells, seed=EVAL_SEED)
    return Holdout(f"{prefix}-holdout-t{pair.t_held:g}", split, train_data, to_model_coordinates(train_data, norm),
                   [float(norm.t_to_model(float(t))) for t in split.train.times], [norm.x_to_model(c).float() for c in split.train.samples],
                   pair, float(norm.t_to_model(pair.t_prev)), float(norm.t_to_model(pair.t_held)))


def peer_transport_scores(peer, h: Holdout, *, sde: bool, steps: int) -> dict[str, float]:
    """``{"w1", "w2"}`` of a fitted peer: the start cells pushed from ``t_prev`` to ``t_k`` in model coordinates,
    mapped back to data units and scored by :func:`probflux.evaluation.sample_distances`."""
    norm = h.split.normalizer
    moved = peer.transport(norm.x_to_model(h.pair.start).float(), h.s_prev, h.s_held, sde=sde, steps=steps)
    return sample_distances(norm.x_to_data(moved.double()), h.pair.target)


def build(spec: Ours, dim: int) -> pf.Dynamics:
    if spec.family == "factorized":
        density = pf.FactorizedMixture(dim, components=16, hidden=128, layers=3, max_frequency=spec.max_frequency)
    else:
        density = pf.AutoregressiveMixture(dim, components=8, hidden=128, layers=3, max_frequency=spec.max_frequency)
    divfree = pf.DivergenceFree(dim, hidden=64, max_frequency=spec.max_frequency) if spec.divergence_free else None
    return pf.Dynamics(density, diffusion=spec.diffusion, divergence_free=divfree)


def train_ours(spec: Ours, train: TemporalPoints, budget: float, seed: int) -> tuple[pf.Dynamics, dict]:
    """Endpoint NLL at the training times + kinetic (g = 0) or drift (g > 0) energy for ``budget`` CPU seconds.

    ``train``: the training snapshots in model coordinates (``t`` in ``[0, 1]``, standardised ``x``).
    """
    dim = train.x.shape[1]
    energy = DriftEnergy if spec.diffusion > 0 else KineticEnergy
    objective = EndpointLikelihood(torch.unique(train.t).tolist()) + energy(spec.kinetic, samples=128)

    def run(steps: int, warmup: int, seconds: Optional[float]):
        torch.manual_seed(seed)
        dyn = build(spec, dim)
        cfg = TrainConfig(steps=steps, batch_size=512, lr=5e-3, warmup=warmup, ema=0.999, device="cpu",
                          eval_every=10**9, log_every=10**9, checkpoint_every=10**9)
        return fit(dyn, objective, train, config=cfg, seed=seed, progress=False, max_seconds=seconds,
                   time_schedule=seconds is not None, clock=CLOCK)

    probe = run(10, 1, None)  # step time on this machine (includes first-call overheads: conservative)
    planned = max(20, int(budget / (probe.wall_seconds / 10)))
    # The schedule runs over the budget's CPU time; the step cap (twice the plan) never binds first, so the whole
    # budget is used; the warm-up is min(100, planned / 10) steps of the planned run, as a fraction of the budget.
    res = run(2 * planned, 2 * min(100, planned // 10), budget)
    return res.model, {"steps": res.step, "train_seconds": res.wall_seconds}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    p.add_argument("--methods", nargs="+", default=[*OURS, *PEERS, *BASELINES], choices=[*OURS, *PEERS, *BASELINES])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--budget", type=float, default=20.0, help="training CPU seconds (time.process_time) per run")
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
        load, data_cfg = DATASETS[name]
        full = load()
        for k in range(1, len(full) - 1):
            h = holdout(name, full, data_cfg, k, args.eval_cells)
            ds = h.dataset
            for seed in range(args.seeds):
                for method in args.methods:
                    tic = time.perf_counter()
                    if method in OURS:
                        dyn, info = train_ours(OURS[method], h.train_model, args.budget, seed)
                        sc = heldout_snapshot_scores(dyn, h.split.normalizer, h.train_data, h.split.test, cells=args.eval_cells,
                                                     steps=args.steps, seed=EVAL_SEED)
                        transport = {"w1": sc["heldout_w1_transport"], "w2": sc["heldout_w2_transport"]}
                        put(ds, method, "w1_density", sc["heldout_w1_density"])
                        put(ds, method, "w2_density", sc["heldout_w2_density"])
                        ratio = kinetic_over_ot(dyn, h.train_model, cells=args.eval_cells, seed=EVAL_SEED)["kinetic_over_ot"]
                        put(ds, method, "kinetic_over_ot", ratio)
                    elif method in BASELINES:
                        if seed:
                            continue
                        transport, info = sample_distances(h.pair.start, h.pair.target), {"steps": 0, "train_seconds": 0.0}
                    else:
                        from peers.torchcfm_peer import CFMPeer

                        peer = CFMPeer(method, full.dim, seed=seed)
                        fitted = peer.fit(h.times, h.cells, wall_seconds=args.budget, clock=CLOCK)
                        info = {"steps": fitted["steps"], "train_seconds": fitted["wall_seconds"]}
                        transport = peer_transport_scores(peer, h, sde=method == "sf2m", steps=args.steps)
                    put(ds, method, "w1_transport", transport["w1"])
                    put(ds, method, "w2_transport", transport["w2"])
                    put(ds, method, "train_seconds", float(info["train_seconds"]))
                    put(ds, method, "steps", float(info["steps"]))
                    print(f"  {ds} seed {seed} {method}: W1 transport {transport['w1']:.3f} "
                          f"({time.perf_counter() - tic:.0f} s)", file=sys.stderr, flush=True)
    wall = time.perf_counter() - start

    def cell(ds: str, m: str, metric: str, fmt: str = "{:.3f}") -> str:
        v = results.get((ds, m, metric))
        if not v:
            return "–"
        return fmt.format(statistics.mean(v)) + ("" if len(v) < 2 else " ± " + fmt.format(statistics.stdev(v)))

    datasets = sorted({k[0] for k in results}, key=lambda d: (d.split("-")[0], float(d.split("-t")[-1])))
    print(f"# {command}\n# torch {torch.__version__}, {args.threads} thread(s), budget {args.budget:g} CPU s per run, "
          f"{args.seeds} seeds, mean ± std over seeds; W_p in data units; wall {wall:.0f} s\n")
    head = ["data (held-out time)", "method", "W1 transport", "W2 transport", "W1 density", "W2 density", "kinetic / OT", "steps"]
    print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for ds in datasets:
        for m in args.methods:
            metrics = ("w1_transport", "w2_transport", "w1_density", "w2_density", "kinetic_over_ot")
            print(f"| {ds} | {m} | " + " | ".join(cell(ds, m, x) for x in metrics) + f" | {cell(ds, m, 'steps', '{:.0f}')} |")
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
        label = m if m.startswith("probflux") or m in BASELINES else f"torchcfm-{m}"
        records.append({"benchmark": "populations", "dataset": ds, "method": label,
                        "metric": metric, "value": statistics.mean(v), "std": statistics.stdev(v) if len(v) > 1 else None,
                        "seeds": len(v), "wall_seconds": wall, "command": command})
    for ds, ours, peer, metric, r in ratios:
        records.append({"benchmark": "populations", "dataset": ds, "method": f"{ours}/torchcfm-{peer}", "metric": f"{metric}_ratio",
                        "value": r, "std": None, "seeds": args.seeds, "wall_seconds": wall, "command": command})
    write_json(args.out, records)
    print(f"\n# wrote {len(records)} records to {args.out}")


if __name__ == "__main__":
    main()
