"""Population dynamics from snapshots: probflux vs OT-CFM, SF2M, Metric Flow Matching, McCann interpolation, no motion.

Two protocols, every method in one process on the same data with the same CPU budget (``--budget`` seconds of
``time.process_time`` per training run, one torch thread; set-up and scoring count for no one):

**Leave one time out** (``<set>-holdout-t<time>``) on every interior snapshot of every set we hold — CITE 5 and
50 PCs, EMT 10-D (DeepRUOT), EMT A549 3-D and Weinreb 2-D (TIGON) — and of any file given by ``--path FILE
--holdout 1,2`` (snapshot indices). Split and standardisation are the library's
(:func:`probflux.data.snapshots.split_snapshots` with ``data.leave_out = k``, no validation cells; ``x``
standardised by the training cells, times mapped to ``[0, 1]``; every method trains in these coordinates).
Scores (data units, exact EMD on at most ``--eval-cells`` cells per side, fixed subsample
:func:`probflux.evaluation.snapshot_pair`):

* ``w1_transport`` / ``w2_transport``: the cells of the snapshot before ``t_k`` pushed to ``t_k`` (probflux:
  probability-flow ODE, or the SDE when g > 0, :func:`probflux.evaluation.heldout_snapshot_scores`; OT-CFM and
  MFM: their ODE; SF2M: its SDE) — TorchCFM's metric;
* ``w1_density`` / ``w2_density`` (probflux only): exact samples of ``rho_{t_k}``, no simulation;
* ``mccann-interpolation`` (no training): the exact discrete OT plan (:func:`probflux.transport.ot_plan`)
  between the two neighbouring training snapshots (model coordinates, at most ``--eval-cells`` cells each),
  displacement interpolation at ``s = (t_k - t_prev) / (t_next - t_prev)``, as many points as target cells
  drawn from the plan (:func:`probflux.transport.mccann_interpolation`, seeded) — recorded as transport;
* ``no-motion``: the start cells as they are.

**LightSB protocol** (``cite50-lightsb-day3``, ``cite50-lightsb-day4``), replicating ngushchin/LightSB
``notebooks/LightSB_MSCI.ipynb``: train on two days only (2 and 4 for day 3; 3 and 7 for day 4), every cell
divided by one constant (:func:`probflux.metrics.lightsb_constant_scale` of the start, end and evaluation
days, as the notebook), times mapped so the start day is 0 and the end day 1; predict the evaluation day and
score :func:`probflux.metrics.energy_distance_lightsb` (half the unbiased energy distance) in PC units against
ALL cells of that day. Predictions: probflux's exact density samples (as many as evaluation cells); every
method's transport of at most ``--eval-cells`` start-day cells (fixed subsample; the notebook pushes as many
cells as the start day has, drawn with replacement — the energy distance's U-statistics are unbiased for any
sample size, so this changes the variance, not the expectation); McCann from a plan between at most
``--eval-cells`` cells of each end day. Published anchors are records too (``lightsb-published`` 2.31 ± 0.27, ``sinkhorn-published`` 2.34;
LightSB paper, Table "MSCI", 50 PCs; their ``command`` names the source). The published numbers are the mean
over both evaluation days, so our ``cite50-lightsb-mean`` row is the comparable one.

**Settings chosen without the evaluation snapshot** (``probflux-anchored-loo``, ``probflux-anchored-sb``):
:meth:`probflux.AnchoredMixture.from_snapshots` with ``select="loo"`` — in the leave-one-time-out protocol on
the training snapshots (each interior one held out in turn, W1); in the LightSB protocol on every observed day
except the evaluation day (energy distance; for day 3 the days 2, 4, 7, scored on day 4 from days 2 and 7; for
day 4 the days 2, 3, 7, scored on day 3 from days 2 and 7). The evaluation day's prediction comes from the
kernels between the two training days; the third day enters only the choice of the time map (one speed curve
over the observed days), the bridge spread and the bandwidth factor. ``-sb`` then couples the snapshots by the
entropic plan of ``eps = bridge^2`` (the Schrödinger bridge; :func:`probflux.transport.entropic_plan`).
``sampling-floor``: W1/W2 between two disjoint halves of the held-out cells (``w1_floor``).

Records (``benchmarks/results/populations.json``, merged by key into the existing file, so runs of separate
sets or methods add up): ``{"benchmark", "dataset", "method", "metric", "value", "std", "seeds",
"cpu_seconds", "command"}``, mean and std over seeds, ``cpu_seconds`` the mean training CPU seconds of the
method's runs. Ratio records (metric ``best_w1_density_ratio`` / ``best_w1_transport_ratio``, method
``probflux-best/best-peer``): probflux's best mean over the best peer's (OT-CFM, SF2M, MFM, McCann).
``--tables`` re-renders the RESULTS.md section from the JSON without running anything.
"""
from __future__ import annotations

import argparse
import fcntl
import json
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch
from torch import Tensor

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import probflux as pf  # noqa: E402
from probflux._random import seeded  # noqa: E402
from probflux.app.config import DataConfig  # noqa: E402
from probflux.data import TemporalPoints  # noqa: E402
from probflux.data import snapshots as snap  # noqa: E402
from probflux.evaluation import (  # noqa: E402
    heldout_snapshot_scores,
    sample_distances,
    sampling_floor,
    snapshot_pair,
    subsample,
    to_model_coordinates,
)
from probflux.io import write_json  # noqa: E402
from probflux.metrics import energy_distance_lightsb, lightsb_constant_scale  # noqa: E402
from probflux.normalize import Normalizer  # noqa: E402
from probflux.objectives import DriftEnergy, EndpointLikelihood, KineticEnergy  # noqa: E402
from probflux.simulate import KERNEL_METHODS  # noqa: E402
from probflux.train import TrainConfig, fit  # noqa: E402
from probflux.transport import mccann_interpolation, ot_plan  # noqa: E402

DATASETS: dict[str, tuple[Callable[[], snap.Snapshots], dict]] = {
    "cite5": (lambda: snap.cite(pcs=5), {"name": "cite", "pcs": 5}),
    "cite50": (lambda: snap.cite(pcs=50), {"name": "cite", "pcs": 50}),
    "emt10": (snap.emt_10d, {"name": "emt10"}),
    "emt3": (snap.emt_3d, {"name": "emt"}),
    "weinreb2": (snap.weinreb_2d, {"name": "weinreb"}),
}
LIGHTSB = {"cite50-lightsb-day3": (2, 4, 3), "cite50-lightsb-day4": (3, 7, 4)}  # (start day, end day, evaluation day)
PUBLISHED = [  # (method, value, std, source)
    ("lightsb-published", 2.31, 0.27, "published: Korotin et al. 2024, LightSB (ICLR), Table 'MSCI' DIM 50; ngushchin/LightSB"),
    ("sinkhorn-published", 2.34, None, "published: Korotin et al. 2024, LightSB (ICLR), Table 'MSCI' DIM 50 (Sinkhorn row)"),
]
EVAL_SEED = 1234  # the fixed subsample of scored cells (and the scoring's own draws), the same for every method and seed
CLOCK = time.process_time  # every method's budget: this process's CPU time
RESULTS = HERE / "results" / "populations.json"


@dataclass
class Ours:
    family: str = "factorized"
    divergence_free: bool = False
    diffusion: float = 0.0
    kinetic: float = 0.05
    max_frequency: float = 32.0


OURS = {
    "probflux-factorized": Ours(),
    "probflux-autoregressive": Ours(family="autoregressive"),
    "probflux-factorized-divfree": Ours(divergence_free=True),
    "probflux-factorized-sb": Ours(diffusion=0.5),
}
# the data-anchored kernel mixture (probflux.AnchoredMixture.from_snapshots: kernels on chained exact OT couplings of
# the training snapshots); value: whether the rest of the budget refines it by snapshot likelihood + kinetic energy
ANCHORED = {"probflux-anchored": False, "probflux-anchored-fit": True}
ANCHOR_COMPONENTS = 2000
# settings chosen by leave-one-out (AnchoredMixture.from_snapshots(select="loo")): on the training snapshots in the
# leave-one-time-out protocol; in the LightSB protocol on every observed day except the evaluation day (for day 3:
# days 2, 4, 7, scored on day 4 predicted from days 2 and 7; for day 4: days 2, 3, 7, scored on day 3), by the
# protocol's energy distance. The kernels between the two training days then predict the evaluation day; the other
# day enters only the choice of the time map (one global speed curve over the observed days), bridge and bandwidth.
# "-sb": the same selection, then kernels on entropic couplings with eps = (chosen bridge)^2 (Schrödinger bridge).
LOO = ("probflux-anchored-loo", "probflux-anchored-sb")
LIGHTSB_GRID = {"time_map": ("clock", "w2", "exp:-3", "exp:-1.5", "exp:1.5"), "bridge": (0.0, 0.5, 1.0, 1.5, 2.0),
                "bandwidth_factor": (0.1, 0.25, 0.5, 1.0, 2.0)}
# "-sb": POT's log-domain Sinkhorn on 2000 x 2000 CITE-50 cells at eps = 0.25 needs ~620 iterations (37 CPU s) for
# a 3e-3 marginal error (tol 1e-4); 1000 kernels make each plan ~4x cheaper, so the chain of two plans fits the budget
SB_COMPONENTS, SB_SINKHORN_TOL = 1000, 1e-4
LIGHTSB_LOO_CELLS = 3000  # cells (and samples) per energy distance in the selection: its noise is ~0.05 at 2000
DEFAULT_OURS = ("probflux-factorized", *ANCHORED)
PEERS = {"otcfm": "torchcfm-otcfm", "sf2m": "torchcfm-sf2m", "mfm": "mfm"}
BASELINES = ("mccann-interpolation", "no-motion", "sampling-floor")
PEER_LABELS = ("torchcfm-otcfm", "torchcfm-sf2m", "mfm", "mccann-interpolation")  # "the best peer" is among these


@dataclass
class Problem:
    """One prediction problem, the same for every method: train on ``cells``, predict ``target`` at ``s_held``."""

    dataset: str
    kind: str  # "holdout" or "lightsb"
    normalizer: Normalizer
    train_data: TemporalPoints  # training snapshots, data units
    train_model: TemporalPoints  # the same in model coordinates
    times: list[float]  # model times of the training snapshots
    cells: list[Tensor]  # float32 model-coordinate training cells per snapshot
    start: Tensor  # data units: the cells pushed forwards (snapshot before the target)
    target: Tensor  # data units: the held-out cells scored against
    s_prev: float
    s_held: float
    held: Optional[TemporalPoints] = None  # holdout: the held-out points (for heldout_snapshot_scores)
    # LightSB: every observed day except the evaluation day (model coordinates), for settings chosen by leave-one-out
    select_times: Optional[list[float]] = None
    select_cells: Optional[list[Tensor]] = None


def holdout(prefix: str, full: snap.Snapshots, data_cfg: dict, k: int, eval_cells: int) -> Problem:
    """Hold out snapshot ``k`` (:func:`split_snapshots`, ``leave_out = k``, no validation cells)."""
    split = snap.split_snapshots(DataConfig(**data_cfg, leave_out=k, val_fraction=0.0), seed=0, data=full)
    norm = split.normalizer
    train_data = split.train.to_points()
    pair = snapshot_pair(train_data, split.test, cells=eval_cells, seed=EVAL_SEED)
    return Problem(f"{prefix}-holdout-t{pair.t_held:g}", "holdout", norm, train_data, to_model_coordinates(train_data, norm),
                   [float(norm.t_to_model(float(t))) for t in split.train.times], [norm.x_to_model(c).float() for c in split.train.samples],
                   pair.start, pair.target, float(norm.t_to_model(pair.t_prev)), float(norm.t_to_model(pair.t_held)), split.test)


def lightsb_problem(name: str, eval_cells: int) -> Problem:
    """The notebook's set-up: two training days, one scaling constant, start day = model time 0, end day = 1."""
    d0, d1, de = LIGHTSB[name]
    days = snap.cite(pcs=50)
    by_day = dict(zip([int(t) for t in days.times.tolist()], days.samples))
    x0, x1, xe = by_day[d0], by_day[d1], by_day[de]
    c = lightsb_constant_scale(x0, x1, xe)
    dim = x0.shape[1]
    norm = Normalizer(float(d0), float(d1), torch.zeros(dim), torch.full((dim,), c))
    train_data = snap.Snapshots([float(d0), float(d1)], [x0, x1], name="cite50").to_points()
    others = sorted(d for d in by_day if d != de)
    return Problem(name, "lightsb", norm, train_data, to_model_coordinates(train_data, norm), [0.0, 1.0],
                   [norm.x_to_model(x0).float(), norm.x_to_model(x1).float()], subsample(x0, eval_cells, EVAL_SEED), xe, 0.0,
                   float(norm.t_to_model(float(de))),
                   select_times=[float(norm.t_to_model(float(d))) for d in others],
                   select_cells=[norm.x_to_model(by_day[d]).float() for d in others])


# ------------------------------------------------------------------------------------------- probflux
def build(spec: Ours, dim: int) -> pf.Dynamics:
    if spec.family == "factorized":
        density = pf.FactorizedMixture(dim, components=16, hidden=128, layers=3, max_frequency=spec.max_frequency)
    else:
        density = pf.AutoregressiveMixture(dim, components=8, hidden=128, layers=3, max_frequency=spec.max_frequency)
    divfree = pf.DivergenceFree(dim, hidden=64, max_frequency=spec.max_frequency) if spec.divergence_free else None
    return pf.Dynamics(density, diffusion=spec.diffusion, divergence_free=divfree)


def train_ours(spec: Ours, train: TemporalPoints, budget: float, seed: int) -> tuple[pf.Dynamics, dict]:
    """Endpoint NLL at the training times + kinetic (g = 0) or drift (g > 0) energy for ``budget`` CPU seconds;
    the warm-up + cosine schedule runs over the budget (its length from a 10-step probe, not counted)."""
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

    probe = run(10, 1, None)
    planned = max(20, int(budget / (probe.wall_seconds / 10)))
    res = run(2 * planned, 2 * min(100, planned // 10), budget)
    return res.model, {"steps": res.step, "cpu_seconds": res.wall_seconds}


def train_anchored(refine: bool, p: Problem, budget: float, seed: int) -> tuple[pf.Dynamics, dict]:
    """Build the anchored mixture on the training snapshots (model coordinates); with ``refine`` spend the rest of
    ``budget`` CPU seconds on likelihood + kinetic training (as ``examples/anchored_populations.py``). The
    construction counts in ``cpu_seconds``."""
    from probflux.densities.anchored import AnchoredMixture

    tic = CLOCK()
    rho = AnchoredMixture.from_snapshots(p.times, [c.double() for c in p.cells], components=ANCHOR_COMPONENTS, seed=seed).float()
    dyn, steps = pf.Dynamics(rho), 0
    left = budget - (CLOCK() - tic)
    if refine and left > 0:
        # the weights stay at the construction's (uniform over kernels): rsample's pathwise gradient is then O(N M D);
        # the Rosenblatt sweeps that trained weights need took one step 180 CPU s on CITE 50 PCs (2000 kernels, 50-D)
        rho.logits.requires_grad_(False)
        objective = EndpointLikelihood(p.times) + KineticEnergy(0.05, samples=128)
        cfg = TrainConfig(steps=10**6, batch_size=512, lr=1e-3, warmup=0, ema=0.0, device="cpu",
                          eval_every=10**9, log_every=10**9, checkpoint_every=10**9)
        res = fit(dyn, objective, p.train_model, config=cfg, seed=seed, progress=False, max_seconds=left, clock=CLOCK)
        dyn, steps = res.model, res.step
    return dyn, {"steps": steps, "cpu_seconds": CLOCK() - tic}


def train_anchored_loo(method: str, p: Problem, seed: int) -> tuple[pf.Dynamics, dict]:
    """:data:`LOO`: settings by leave-one-out (see there); construction and selection count in ``cpu_seconds``."""
    from probflux.densities.anchored import AnchoredMixture

    tic = CLOCK()
    if p.kind == "lightsb":
        times, cells = p.select_times, p.select_cells
        extra = {"loo_metric": "energy", "loo_grid": LIGHTSB_GRID, "loo_cells": LIGHTSB_LOO_CELLS}
    else:
        times, cells, extra = p.times, p.cells, {}
    cells = [c.double() for c in cells]
    rho = AnchoredMixture.from_snapshots(times, cells, components=ANCHOR_COMPONENTS, seed=seed, select="loo", **extra)
    chosen = rho.selection["settings"]
    if method == "probflux-anchored-sb":
        eps = chosen["bridge"] ** 2
        if eps > 0:
            rho = AnchoredMixture.from_snapshots(times, cells, components=SB_COMPONENTS, seed=seed, entropy=eps,
                                                 sinkhorn_tol=SB_SINKHORN_TOL, time_map=chosen["time_map"],
                                                 bandwidth_factor=chosen["bandwidth_factor"])
    print(f"    {p.dataset} seed {seed} {method}: chosen {chosen}", file=sys.stderr, flush=True)
    return pf.Dynamics(rho.float()), {"steps": 0, "cpu_seconds": CLOCK() - tic}


def ours_predictions(dyn: pf.Dynamics, p: Problem, steps: int, method: Optional[str] = None) -> tuple[Tensor, Tensor]:
    """(exact density samples at ``s_held``, start cells pushed there by ``method``, default Euler(-Maruyama)), data
    units — the LightSB protocol's predictions, drawn as :func:`probflux.evaluation.heldout_snapshot_scores` draws them."""
    if method is None:
        g = dyn.diffusion(torch.tensor([p.s_prev, p.s_held], dtype=torch.float32))
        method = "euler_maruyama" if bool((g > 0).any()) else "euler"
    with seeded(EVAL_SEED, torch.device("cpu")):
        with torch.no_grad():
            direct = dyn.density.sample(torch.full((len(p.target),), p.s_held))
        moved = pf.simulate(dyn, p.normalizer.x_to_model(p.start).float(), p.s_prev, p.s_held, steps=steps, method=method)[-1]
    return p.normalizer.x_to_data(direct.double()), p.normalizer.x_to_data(moved.double())


# ------------------------------------------------------------------------------------------- baselines
def mccann(p: Problem, eval_cells: int) -> Tensor:
    """Displacement interpolation between the training snapshots either side of ``s_held`` (model coordinates)."""
    k = max(i for i, s in enumerate(p.times) if s < p.s_held)
    x0, x1 = subsample(p.cells[k].double(), eval_cells, EVAL_SEED), subsample(p.cells[k + 1].double(), eval_cells, EVAL_SEED)
    s = (p.s_held - p.times[k]) / (p.times[k + 1] - p.times[k])
    return p.normalizer.x_to_data(mccann_interpolation(x0, x1, s, n=len(p.target), seed=EVAL_SEED))


def score(p: Problem, pred: Tensor, prefix: str) -> dict[str, float]:
    if p.kind == "lightsb":
        return {"energy_distance_lightsb" if prefix == "transport" else "energy_distance_lightsb_density":
                energy_distance_lightsb(pred, p.target)}
    d = sample_distances(pred, p.target)
    return {f"w1_{prefix}": d["w1"], f"w2_{prefix}": d["w2"]}


def run_method(method: str, p: Problem, seed: int, args: argparse.Namespace) -> tuple[dict[str, float], float]:
    """``({metric: value}, training CPU seconds)`` of one method on one problem."""
    if method in OURS or method in ANCHORED or method in LOO:
        if method in OURS:
            dyn, info = train_ours(OURS[method], p.train_model, args.budget, seed)
        elif method in LOO:
            dyn, info = train_anchored_loo(method, p, seed)
        else:
            dyn, info = train_anchored(ANCHORED[method], p, args.budget, seed)
        if p.kind == "holdout":
            transport = args.anchored_transport if method in ANCHORED or method in LOO else None
            sc = heldout_snapshot_scores(dyn, p.normalizer, p.train_data, p.held, cells=args.eval_cells, steps=args.steps,
                                         seed=EVAL_SEED, method=transport)
            out = {m: sc[f"heldout_{m}"] for m in ("w1_density", "w2_density", "w1_transport", "w2_transport")}
        else:
            direct, moved = ours_predictions(dyn, p, args.steps, args.anchored_transport if method in ANCHORED or method in LOO else None)
            out = {"energy_distance_lightsb_density": energy_distance_lightsb(direct, p.target),
                   "energy_distance_lightsb": energy_distance_lightsb(moved, p.target)}
        return out, info["cpu_seconds"]
    if method == "mccann-interpolation":
        return score(p, mccann(p, args.eval_cells), "transport"), 0.0
    if method == "no-motion":
        return score(p, p.start, "transport"), 0.0
    if method == "sampling-floor":  # what a perfect model scores: two disjoint halves of the held-out cells
        if p.kind != "holdout":
            return {}, 0.0
        d = sampling_floor(p.held.x, size=args.eval_cells, seed=EVAL_SEED)
        return {"w1_floor": d["w1"], "w2_floor": d["w2"]}, 0.0
    if method == "mfm":
        from peers.mfm import MFMPeer

        peer = MFMPeer(p.cells[0].shape[1], seed=seed)
    else:
        from peers.torchcfm_peer import CFMPeer

        peer = CFMPeer(method, p.cells[0].shape[1], seed=seed)
    fitted = peer.fit(p.times, p.cells, wall_seconds=args.budget, clock=CLOCK)
    moved = peer.transport(p.normalizer.x_to_model(p.start).float(), p.s_prev, p.s_held, sde=method == "sf2m", steps=args.steps)
    return score(p, p.normalizer.x_to_data(moved.double()), "transport"), float(fitted["wall_seconds"])


# --------------------------------------------------------------------------------------------- records
def label(method: str) -> str:
    return PEERS.get(method, method)


def summarise(results: dict, cpu: dict, command: str, seeds: int) -> list[dict[str, Any]]:
    recs = []
    for (ds, m, metric), v in results.items():
        recs.append({"benchmark": "populations", "dataset": ds, "method": label(m), "metric": metric,
                     "value": statistics.mean(v), "std": statistics.stdev(v) if len(v) > 1 else None, "seeds": len(v),
                     "cpu_seconds": statistics.mean(cpu[(ds, m)]), "command": command})
    return recs


def derived(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Ratio records (best probflux / best peer) and the LightSB mean over both evaluation days, from ``records``."""
    out = []
    by = {(r["dataset"], r["method"], r["metric"]): r for r in records}
    datasets = list(dict.fromkeys(r["dataset"] for r in records if "-holdout-" in r["dataset"]))
    for ds in datasets:
        peers = [by[(ds, m, "w1_transport")] for m in PEER_LABELS if (ds, m, "w1_transport") in by]
        if not peers:
            continue
        best_peer = min(peers, key=lambda r: r["value"])
        floor = by.get((ds, "sampling-floor", "w1_floor"))
        if floor is not None:
            out.append({"benchmark": "populations", "dataset": ds, "method": "probflux-best/best-peer",
                        "metric": "floor_w1_ratio", "value": floor["value"] / best_peer["value"], "std": None,
                        "seeds": floor["seeds"], "cpu_seconds": 0.0,
                        "command": f"derived: sampling-floor w1_floor / {best_peer['method']} w1_transport"})
        for metric in ("w1_density", "w1_transport"):
            ours = [r for r in records if r["dataset"] == ds and r["method"].startswith("probflux-") and r["metric"] == metric
                    and "/" not in r["method"]]
            if ours:
                best = min(ours, key=lambda r: r["value"])
                out.append({"benchmark": "populations", "dataset": ds, "method": "probflux-best/best-peer",
                            "metric": f"best_{metric}_ratio", "value": best["value"] / best_peer["value"], "std": None,
                            "seeds": best["seeds"], "cpu_seconds": best["cpu_seconds"],
                            "command": f"derived: {best['method']} {metric} / {best_peer['method']} w1_transport"})
    days = list(LIGHTSB)
    methods = {r["method"] for r in records if r["dataset"] in days}
    for m in sorted(methods):
        for metric in ("energy_distance_lightsb", "energy_distance_lightsb_density"):
            rs = [by.get((d, m, metric)) for d in days]
            if all(rs):
                out.append({"benchmark": "populations", "dataset": "cite50-lightsb-mean", "method": m, "metric": metric,
                            "value": statistics.mean(r["value"] for r in rs), "std": None, "seeds": rs[0]["seeds"],
                            "cpu_seconds": statistics.mean(r["cpu_seconds"] for r in rs),
                            "command": "derived: mean of cite50-lightsb-day3 and cite50-lightsb-day4"})
    return out


def merge_write(path: Path, new: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Merge ``new`` into the records at ``path`` (same dataset/method/metric replaced), recompute the derived
    records, write atomically; a lock file serialises concurrent runs."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(Path(tempfile.gettempdir()) / f"probflux-{path.name}.lock", "w") as lock:  # not beside the records
        fcntl.flock(lock, fcntl.LOCK_EX)
        old = json.loads(path.read_text()) if path.exists() else []
        key = lambda r: (r["dataset"], r["method"], r["metric"])  # noqa: E731
        fresh = {key(r) for r in new}
        base = [r for r in old if key(r) not in fresh and not str(r.get("command", "")).startswith("derived:")]
        records = base + new
        records = records + derived(records)
        write_json(path, records)
    return records


# ---------------------------------------------------------------------------------------------- tables
def render_tables(records: list[dict[str, Any]]) -> str:
    """The populations section of RESULTS.md, from the records alone."""
    from tables import commands, pivot

    order = [*OURS, *ANCHORED, *LOO, *PEERS.values(), *BASELINES, "sampling-floor"]

    def sort_key(r: dict[str, Any]) -> tuple:
        ds = r["dataset"]
        name, _, when = ds.partition("-holdout-t")
        try:
            t = float(when)
        except ValueError:
            t = 0.0
        m = r["method"]
        return (name, t, ds, order.index(m) if m in order else len(order), m)

    records = sorted(records, key=sort_key)

    measured = [r for r in records if r.get("cpu_seconds") is not None and "/" not in r["method"]
                and not str(r.get("command", "")).startswith("derived")]
    per_method: dict[str, list[float]] = {}
    for r in measured:
        per_method.setdefault(r["method"], []).append(float(r["cpu_seconds"]))
    seeds = sorted({int(r["seeds"]) for r in measured if r.get("seeds")})
    cpu_line = "; ".join(f"{m} {statistics.mean(v):.1f}" for m, v in per_method.items())
    parts = [
        "Generated by `benchmarks/bench_populations.py --tables` from `benchmarks/results/populations.json`. "
        f"Mean training CPU seconds per run (time.process_time; construction included for the anchored mixture; "
        f"McCann and no-motion train nothing): {cpu_line}. Seeds per row: {seeds} (mean ± std when > 1). "
        "W_p in data units (exact EMD, at most 2000 cells per side). Values far above no-motion are transport "
        "blow-ups (the Euler integration of a learned velocity diverged), recorded as measured. Transport of the "
        "anchored mixtures: `--anchored-transport` (default `kernel_paths`: every start cell follows a kernel "
        "drawn by responsibility, `probflux.simulate(method='kernel_paths')`, unless a command names another; "
        "every anchored row was rerun with it). Commands with `--budget 20` give every trained method 20 CPU s "
        "(the anchored mixtures' construction and selection take 3-24 CPU s and are not capped; "
        "`probflux-anchored-fit` refines with its weights held fixed and stays within the budget). `sampling-floor` "
        "(`w1_floor`): W1 between two disjoint halves of the held-out cells (`probflux.evaluation.sampling_floor`, "
        "min(2000, N/2) cells each) — what a perfect model would score at that sample size (at fewer cells than the "
        "rows above when the held-out snapshot has under 4000 cells, so then a little above their floor). "
        "`probflux-anchored-loo`: time map, bridge and bandwidth chosen by leave-one-out on the training snapshots "
        "(LightSB protocol: on the observed days other than the evaluation day, by energy distance; see the "
        "benchmark's `LOO`).",
        "",
        "### Leave one time out: W1 / W2 at the held-out time",
        "",
        pivot(records, where=lambda r: "-holdout-" in r["dataset"] and "/" not in r["method"],
              columns=["w1_density", "w1_transport", "w1_floor", "w2_density", "w2_transport"]),
        "",
        "### Ratio: probflux's best over the best peer (OT-CFM, SF2M, MFM, McCann); goal ≤ 0.9 "
    "(floor_w1_ratio: the sampling floor over the best peer)",
        "",
        pivot(records, where=lambda r: r["method"] == "probflux-best/best-peer", rows=("dataset",),
              columns=["best_w1_density_ratio", "best_w1_transport_ratio", "floor_w1_ratio"]),
        "",
        "### LightSB protocol, CITE 50 PCs: energy distance (LightSB convention; goal ≤ 2.2)",
        "",
        pivot(records, where=lambda r: "lightsb" in r["dataset"],
              columns=["energy_distance_lightsb_density", "energy_distance_lightsb"]),
        "",
        "Commands:",
        "",
        commands(r for r in records if not str(r.get("command", "")).startswith(("derived", "published"))),
    ]
    return "\n".join(parts)


def diagnose_lightsb(noise: Sequence[float] = (0.0, 0.25, 0.5, 0.85)) -> None:
    """PEEKS at the evaluation days, to understand the protocol, never to choose anything: the total variance of
    every day (in the scaled units of each problem) and the energy distance of McCann interpolation (exact OT
    between 2000 cells of the two neighbouring days, clock fraction) plus isotropic Gaussian noise of standard
    deviation ``sigma`` (scaled units), on each problem's evaluation task and on its leave-one-out selection task."""
    days = snap.cite(pcs=50)
    by_day = {int(t): x.double() for t, x in zip(days.times.tolist(), days.samples)}
    for name, (d0, d1, de) in LIGHTSB.items():
        c = lightsb_constant_scale(by_day[d0], by_day[d1], by_day[de])
        print(f"{name}: scale {c:.4f}; total variance per day (scaled): "
              + ", ".join(f"day {d} {float((x / c).var(0).sum()):.1f}" for d, x in sorted(by_day.items())))
        others = sorted(d for d in by_day if d != de)
        tasks = [(d0, d1, de, "evaluation")] + [(others[i - 1], others[i + 1], others[i], "selection")
                                                 for i in range(1, len(others) - 1)]
        for a, b, e, kind in tasks:
            x0, x1 = (subsample(by_day[d] / c, 2000, EVAL_SEED) for d in (a, b))
            plan = ot_plan(x0, x1)
            frac = (e - a) / (b - a)
            mid = (1 - frac) * x0[plan.i] + frac * x1[plan.j]
            z = torch.randn(mid.shape, generator=torch.Generator().manual_seed(EVAL_SEED), dtype=mid.dtype)
            scores = [energy_distance_lightsb((mid + sig * z) * c, by_day[e]) for sig in noise]
            print(f"  {kind}: day {e} from days {a}, {b} (fraction {frac:.3f}): "
                  + ", ".join(f"sigma {sig:g}: {v:.3f}" for sig, v in zip(noise, scores)), flush=True)


# ------------------------------------------------------------------------------------------------ main
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    every = [*OURS, *ANCHORED, *LOO, *PEERS, *BASELINES, "sampling-floor"]
    p.add_argument("--datasets", nargs="*", default=[*DATASETS, "lightsb"], choices=[*DATASETS, "lightsb"])
    p.add_argument("--path", help="a snapshot file of your own (probflux.data.snapshots.read_snapshots)")
    p.add_argument("--holdout", help="with --path: comma-separated interior snapshot indices to hold out (default: all)")
    p.add_argument("--methods", nargs="+", default=[*DEFAULT_OURS, *PEERS, *BASELINES], choices=every)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--budget", type=float, default=5.0, help="training CPU seconds (time.process_time) per run")
    p.add_argument("--eval-cells", type=int, default=2000)
    p.add_argument("--steps", type=int, default=100, help="integration steps for transport")
    p.add_argument("--anchored-transport", default="kernel_paths", choices=["euler", *KERNEL_METHODS],
                   help="how the anchored mixtures push the start cells (probflux.simulate method): kernel_paths "
                        "(each cell follows a kernel drawn by responsibility; exact in law), kernel_flow (the ODE by "
                        "steps exact per kernel) or euler (the ODE by Euler steps)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=str(RESULTS))
    p.add_argument("--fresh", action="store_true", help="discard the records already in --out instead of merging")
    p.add_argument("--tables", action="store_true", help="re-render the RESULTS.md section from --out and exit")
    p.add_argument("--diagnose-lightsb", action="store_true",
                   help="print what McCann interpolation + noise scores on the LightSB days (peeks; no records) and exit")
    args = p.parse_args()
    if args.diagnose_lightsb:
        torch.set_num_threads(args.threads)
        diagnose_lightsb()
        return
    if args.tables:
        from tables import RESULTS_MD, replace_section

        replace_section(RESULTS_MD, "populations", render_tables(json.loads(Path(args.out).read_text())))
        print(f"regenerated the populations section of {RESULTS_MD}")
        return
    torch.set_num_threads(args.threads)
    command = shlex.join(sys.orig_argv)
    if args.fresh and Path(args.out).exists():
        Path(args.out).unlink()
    problems: list[Callable[[], list[Problem]]] = []
    for name in args.datasets:
        if name == "lightsb":
            problems.append(lambda: [lightsb_problem(n, args.eval_cells) for n in LIGHTSB])
            continue
        load, data_cfg = DATASETS[name]
        problems.append(lambda load=load, cfg=data_cfg, name=name: [
            holdout(name, full, cfg, k, args.eval_cells) for full in [load()] for k in range(1, len(full) - 1)])
    if args.path:
        full = snap.read_snapshots(args.path)
        ks = [int(v) for v in args.holdout.split(",")] if args.holdout else list(range(1, len(full) - 1))
        stem = Path(args.path).stem
        problems.append(lambda: [holdout(stem, full, {"name": "file", "path": args.path}, k, args.eval_cells) for k in ks])
    if "lightsb" in args.datasets:
        merge_write(Path(args.out), [{"benchmark": "populations", "dataset": "cite50-lightsb-mean", "method": m,
                                      "metric": "energy_distance_lightsb", "value": v, "std": s, "seeds": None,
                                      "cpu_seconds": None, "command": src} for m, v, s, src in PUBLISHED])
    # seeds in the outer loop: after every round each problem's records hold all seeds so far (an interrupted run
    # leaves fewer seeds, never a missing set); the merge after each run keeps the file current
    built = [prob for make in problems for prob in make()]
    results: dict[tuple[str, str, str], list[float]] = {}
    cpu: dict[tuple[str, str], list[float]] = {}
    for seed in range(args.seeds):
        for prob in built:
            for method in args.methods:
                if method in BASELINES and seed:
                    continue
                tic = time.perf_counter()
                out, secs = run_method(method, prob, seed, args)
                for metric, v in out.items():
                    results.setdefault((prob.dataset, method, metric), []).append(float(v))
                cpu.setdefault((prob.dataset, method), []).append(secs)
                print(f"  {prob.dataset} seed {seed} {method}: " + ", ".join(f"{k} {v:.3f}" for k, v in out.items())
                      + f" ({secs:.1f} CPU s training, {time.perf_counter() - tic:.0f} s wall)", file=sys.stderr, flush=True)
                mine = {k: v for k, v in results.items() if k[:2] == (prob.dataset, method)}
                merge_write(Path(args.out), summarise(mine, {(prob.dataset, method): cpu[(prob.dataset, method)]}, command, args.seeds))
    records = json.loads(Path(args.out).read_text())
    print(render_tables(records))


if __name__ == "__main__":
    main()
