"""Held-out snapshot of a population time course from a data-anchored kernel mixture (probflux.AnchoredMixture).

For one data set and one interior snapshot ``k`` (left out; the model sees the others), builds the mixture on
chained exact OT couplings of the training snapshots (kernels on observed cells, spline paths through them),
optionally refines it by snapshot likelihood + kinetic energy (``--refine`` CPU seconds of probflux.train.fit),
and scores exact samples of ``rho_{t_k}`` against the held-out cells, next to the McCann interpolation between
the two neighbouring training snapshots (exact OT, no training). Everything is the library's: the split is
:func:`probflux.data.snapshots.split_snapshots` (``data.leave_out = k``, no validation cells), the scores
:func:`probflux.evaluation.heldout_snapshot_scores` / :func:`~probflux.evaluation.sample_distances` on
:func:`~probflux.evaluation.snapshot_pair` cells (at most ``--eval-cells`` per side, exact EMD, data units).

    OMP_NUM_THREADS=1 python examples/anchored_populations.py --data cite5 --leave-out 1
"""
from __future__ import annotations

import argparse
import json
import time
from typing import Optional

import torch

import probflux as pf
from probflux.app.config import DataConfig
from probflux.data import snapshots as snap
from probflux.densities.anchored import AnchoredMixture
from probflux.evaluation import heldout_snapshot_scores, sample_distances, snapshot_pair, subsample, to_model_coordinates
from probflux.transport import mccann_interpolation

DATA = {"cite5": {"name": "cite", "pcs": 5}, "emt10": {"name": "emt10"}, "emt3": {"name": "emt"}, "weinreb2": {"name": "weinreb"}}
EVAL_SEED = 1234  # the scored cells, as in benchmarks/bench_populations.py


def fit_anchored(split: snap.SnapshotSplit, *, components: int = 2000, curvature: float = 0.0, bridge: float = 0.5, warp: bool = True,
                 bandwidth: str = "w1", select: Optional[str] = None,
                 refine: float = 0.0, kinetic: float = 0.05, seed: int = 0) -> tuple[pf.Dynamics, float]:
    """Build (and with ``refine > 0`` train for that many CPU seconds) the anchored mixture of a split.
    Returns the dynamics and the CPU seconds spent (construction included)."""
    tic = time.process_time()
    norm = split.normalizer
    times = [float(norm.t_to_model(float(t))) for t in split.train.times]
    cells = [norm.x_to_model(c) for c in split.train.samples]
    rho = AnchoredMixture.from_snapshots(times, cells, components=components, seed=seed, curvature=curvature,
                                            bridge=bridge, warp=warp, bandwidth=bandwidth, select=select).float()
    selection = rho.selection
    dyn = pf.Dynamics(rho)
    if refine > 0:
        from probflux.objectives import EndpointLikelihood, KineticEnergy
        from probflux.train import TrainConfig, fit

        train = to_model_coordinates(split.train.to_points(), norm)
        objective = EndpointLikelihood(times) + KineticEnergy(kinetic, samples=128)
        cfg = TrainConfig(steps=10 ** 6, batch_size=512, lr=1e-3, warmup=0, ema=0.0, device="cpu",
                          eval_every=10 ** 9, log_every=10 ** 9, checkpoint_every=10 ** 9)
        dyn = fit(dyn, objective, train.to(torch.float32) if hasattr(train, "to") else train, config=cfg, seed=seed,
                  progress=False, max_seconds=refine, clock=time.process_time).model
    dyn.selection = selection
    return dyn, time.process_time() - tic


def mccann_baseline(split: snap.SnapshotSplit, cells: int = 2000, fraction: Optional[float] = None) -> dict[str, float]:
    """W1/W2 of the McCann interpolation between the training snapshots just before and after the held-out time
    (at most ``cells`` cells each, :func:`probflux.evaluation.subsample` with the scoring seed), exact OT in model
    coordinates, mapped back to data units and scored on the :func:`snapshot_pair` target. ``fraction``: interpolate
    there instead of at the clock fraction (a diagnostic: what the best time map could reach)."""
    norm, times = split.normalizer, split.train.times.tolist()
    t_k = float(split.test_time)
    before = max(i for i, t in enumerate(times) if t < t_k)
    x0 = norm.x_to_model(subsample(split.train.samples[before], cells, EVAL_SEED))
    x1 = norm.x_to_model(subsample(split.train.samples[before + 1], cells, EVAL_SEED))
    s = (t_k - times[before]) / (times[before + 1] - times[before]) if fraction is None else fraction
    pair = snapshot_pair(split.train.to_points(), split.test, cells=cells, seed=EVAL_SEED)
    return sample_distances(norm.x_to_data(mccann_interpolation(x0, x1, s)), pair.target)


def run(data: str, leave_out: int, *, seed: int = 0, eval_cells: int = 2000, **kw) -> dict:
    split = snap.split_snapshots(DataConfig(**DATA[data], leave_out=leave_out, val_fraction=0.0), seed=0)
    dyn, cpu = fit_anchored(split, seed=seed, **kw)
    sc = heldout_snapshot_scores(dyn, split.normalizer, split.train.to_points(), split.test, cells=eval_cells, seed=EVAL_SEED)
    mc = mccann_baseline(split, eval_cells)
    return {"data": data, "heldout_time": sc["heldout_time"], "seed": seed, "cpu_seconds": cpu,
            "w1_density": sc["heldout_w1_density"], "w1_transport": sc["heldout_w1_transport"], "w1_mccann": mc["w1"],
            "density_over_mccann": sc["heldout_w1_density"] / mc["w1"],
            "transport_over_mccann": sc["heldout_w1_transport"] / mc["w1"], "chosen": dyn.selection["settings"], **kw}


def diagnose(data: str, leave_out: int, eval_cells: int = 2000) -> dict:
    """Peeks at the held-out cells (never used to choose settings): the sampling floor
    (:func:`probflux.evaluation.sampling_floor`) and McCann interpolation at other fractions, over McCann's W1."""
    from probflux.evaluation import sampling_floor

    split = snap.split_snapshots(DataConfig(**DATA[data], leave_out=leave_out, val_fraction=0.0), seed=0)
    base = mccann_baseline(split, eval_cells)["w1"]
    times = split.train.times.tolist()
    before = max(i for i, t in enumerate(times) if t < float(split.test_time))
    s = (float(split.test_time) - times[before]) / (times[before + 1] - times[before])
    sweep = {round(f, 3): mccann_baseline(split, eval_cells, f)["w1"] / base
             for f in (s - 0.2, s - 0.1, s, s + 0.1, s + 0.2) if 0 <= f <= 1}
    return {"data": data, "heldout_time": float(split.test_time), "w1_mccann": base, "clock_fraction": s,
            "floor_over_mccann": sampling_floor(split.test.x, size=eval_cells)["w1"] / base, "mccann_at_fraction": sweep}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", choices=list(DATA), default="cite5")
    p.add_argument("--leave-out", type=int, default=1)
    p.add_argument("--components", type=int, default=2000)
    p.add_argument("--curvature", type=float, default=0.0, help="0: straight paths between snapshots ... 1: natural cubic")
    p.add_argument("--bridge", type=float, default=0.5, help="Brownian-bridge spread g between snapshots (model units)")
    p.add_argument("--no-warp", action="store_true", help="clock time instead of the W2-progress warp")
    p.add_argument("--bandwidth", choices=["w1", "likelihood"], default="w1")
    p.add_argument("--select", choices=["loo"], default=None,
                   help="choose time map, bridge and bandwidth factor by leave-one-out over the training snapshots")
    p.add_argument("--refine", type=float, default=0.0, help="CPU seconds of likelihood + kinetic training (0: none)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--diagnose", action="store_true", help="sampling floor and McCann at other fractions (peeks at the held-out cells)")
    a = p.parse_args()
    torch.set_num_threads(1)
    if a.diagnose:
        print(json.dumps(diagnose(a.data, a.leave_out)))
        return
    print(json.dumps(run(a.data, a.leave_out, seed=a.seed, components=a.components, curvature=a.curvature,
                         bridge=a.bridge, warp=not a.no_warp, bandwidth=a.bandwidth, select=a.select, refine=a.refine)))


if __name__ == "__main__":
    main()
