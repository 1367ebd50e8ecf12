"""Train a self-exciting density (kernels at the past events over a data-anchored kernel-mixture background) on an
event set of the events benchmark and score it as benchmarks/bench_events.py does (Neural STPP protocol: locations
standardised by the training events' mean/std, test spatial NLL per event = ``-spatial_log_likelihood``).

    OMP_NUM_THREADS=1 .venv/bin/python examples/events_selfexciting.py --dataset earthquakes_jp --budget 60 --seeds 3
    OMP_NUM_THREADS=1 .venv/bin/python examples/events_selfexciting.py --dataset pinwheel --budget 60 --seeds 3
    OMP_NUM_THREADS=1 .venv/bin/python examples/events_selfexciting.py --continuous ComCat_25 --budget 60 --seeds 1

``--continuous CATALOG``: the EarthquakeNPP continuous protocol (:mod:`probflux.stpp.continuous`): one catalog, model
time = the whole catalog span, every event's history = its newest ``--events`` strictly earlier events of the whole
catalog; trained on the training period, validated on the validation period, test spatial LL per km^2 by
``continuous.spatial_scores`` (through ``CatalogSpatial`` and ``StandardizedSpatial``).

The background's ``--kernels`` centres are training events drawn at random (``split_anchors``); the model is fitted
on the other training events (their histories still hold every earlier event), so no kernel sits on a fitted point.
Training is :func:`probflux.train.fit` with ``NegativeLogLikelihood`` on (t, x, history) triples, a CPU-time budget
(``time.process_time``) and the weights with the best validation NLL (EMA) tested.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

import probflux as pf
from probflux.checkpoint import load_checkpoint, model_weights
from probflux.data import events as ev
from probflux.data.points import TemporalPoints
from probflux.objectives import NegativeLogLikelihood
from probflux.stpp import SelfExciting, history_context, model_points, spatial_log_likelihood
from probflux.stpp.continuous import StandardizedSpatial, spatial_scores
from probflux.stpp.selfexciting import CatalogSpatial, kernel_background
from probflux.train import TrainConfig, fit

ALIASES = {"pinwheel": "pinwheel_stpp"}


def load(name: str) -> SimpleNamespace:
    tr, va, te, note = ev.event_splits(ALIASES.get(name, name))
    st = tr.spatial_stats()
    return SimpleNamespace(name=name, train=tr.standardize(st), val=va.standardize(st), test=te.standardize(st), note=note)


def build(train_x: torch.Tensor, args: argparse.Namespace, seed: int, age_eps: float = 1e-4) -> tuple[pf.TimeDensity, torch.Tensor]:
    """The model and the indices of the training events it is fitted on (those not used as centres): the library's
    :meth:`SelfExciting.from_events` (the same model as ``benchmarks/bench_events.py``'s ``probflux-selfexciting``)."""
    torch.manual_seed(seed)
    if args.model == "anchored":
        return kernel_background(train_x, args.kernels, knn=args.knn, min_scale=args.min_scale, rank=args.rank, seed=seed)
    return SelfExciting.from_events(train_x, kernels=args.kernels, events=args.events, knn=args.knn, rank=args.rank,
                                    min_scale=args.min_scale, init_scale=args.init_scale, hidden=args.hidden,
                                    age_eps=age_eps, seed=seed)


def _train(model: pf.TimeDensity, fitP: TemporalPoints, Vf: TemporalPoints, args: argparse.Namespace, seed: int):
    cfg = TrainConfig(steps=100_000, batch_size=args.batch, lr=args.lr, warmup=50, ema=0.99, device="cpu",
                      eval_every=args.eval_every, log_every=25, checkpoint_every=10**9, eval_points=2048)
    dyn = pf.Dynamics(model)
    start = time.process_time()
    with tempfile.TemporaryDirectory() as tmp:
        res = fit(dyn, NegativeLogLikelihood(), fitP, val=Vf, config=cfg, seed=seed, progress=False, max_seconds=args.budget,
                  time_schedule=True, run_dir=tmp, clock=time.process_time)
        train_s = time.process_time() - start
        best = load_checkpoint(Path(tmp) / "checkpoints" / "best.pt")
    dyn.load_state_dict(model_weights(best, ema=True))
    dyn.eval()
    return dyn.density, res, train_s


def run_continuous(catalog: str, args: argparse.Namespace, seed: int) -> dict:
    cat = ev.earthquakenpp_catalog(catalog)
    (t0, t1), k = (cat.boundaries[0], cat.boundaries[-1]), args.events
    tr, va = cat.indices("train"), cat.indices("val")
    mean, std = cat.x[tr].mean(0), cat.x[tr].std(0)
    z = (cat.x - mean) / std
    ctx = history_context(ev.EventSequences([torch.cat([cat.t[:, None], z], 1)], window=(t0, t1), name=catalog), k)
    s = (cat.t - t0) / (t1 - t0)
    model, rest = build(z[tr], args, seed, age_eps=0.01 / (t1 - t0))  # eps: a quarter of an hour
    rows = torch.arange(tr.start, tr.stop)[rest]
    fitP = TemporalPoints._unchecked(s[rows].float(), z[rows].float(), ctx[rows].float(), "fit")
    Vf = TemporalPoints._unchecked(s[va].float(), z[va].float(), ctx[va].float(), "val")
    model, res, train_s = _train(model, fitP, Vf, args, seed)
    a = time.process_time()
    ll = spatial_scores(cat, StandardizedSpatial(CatalogSpatial(model, (t0, t1), k), mean, std), period="test")
    return {"nll": -float(ll.mean()), "val_nll": float("nan"), "steps": res.step, "best_step": res.best_step,
            "train_seconds": train_s, "score_seconds": time.process_time() - a, "test_events": int(ll.shape[0]), "model": model}


def run(data: SimpleNamespace, args: argparse.Namespace, seed: int) -> dict:
    hist = None if args.model == "anchored" else args.events
    P, V, T = (model_points(s, hist) for s in (data.train, data.val, data.test))
    model, rest = build(P.x, args, seed)
    fitP = TemporalPoints._unchecked(P.t[rest].float(), P.x[rest].float(), None if P.context is None else P.context[rest].float(), "fit")
    Vf = TemporalPoints._unchecked(V.t.float(), V.x.float(), None if V.context is None else V.context.float(), "val")
    model, res, train_s = _train(model, fitP, Vf, args, seed)
    a = time.process_time()
    nll = -spatial_log_likelihood(model, T)
    score_s = time.process_time() - a
    return {"nll": nll, "val_nll": -spatial_log_likelihood(model, V), "steps": res.step, "best_step": res.best_step,
            "train_seconds": train_s, "score_seconds": score_s, "test_events": int(T.t.shape[0]), "model": model}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="earthquakes_jp")
    p.add_argument("--continuous", default=None, metavar="CATALOG", help="EarthquakeNPP catalog (Japan_25, ComCat_25): continuous protocol")
    p.add_argument("--model", choices=["selfexciting", "anchored"], default="selfexciting")
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument("--budget", type=float, default=60.0, help="CPU seconds of training per run (fit's max_seconds, process_time)")
    p.add_argument("--kernels", type=int, default=2000, help="background kernels (centres at training events)")
    p.add_argument("--events", type=int, default=16, help="history slots of the self-exciting part")
    p.add_argument("--rank", type=int, default=0, help="time modulation of the background's weights and bandwidths")
    p.add_argument("--knn", type=int, default=8)
    p.add_argument("--min-scale", type=float, default=1e-3)
    p.add_argument("--init-scale", type=float, default=0.05)
    p.add_argument("--hidden", type=int, default=32)
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--lr", type=float, default=1e-2)
    p.add_argument("--eval-every", type=int, default=50)
    p.add_argument("--save", default=None, help="save the last seed's model state_dict here (for the figures)")
    p.add_argument("--json", default=None, help="append a summary record here")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    if args.continuous:
        args.dataset = f"earthquakenpp_{args.continuous.lower()}_continuous"
        print(f"{args.continuous}: continuous protocol (test NLL below = minus spatial LL per km^2)")
    else:
        data = load(args.dataset)
        print(f"{args.dataset}: {data.train.n_events} train / {data.val.n_events} val / {data.test.n_events} test events; {data.note}")
    out = []
    for seed in range(args.seeds):
        r = run_continuous(args.continuous, args, seed) if args.continuous else run(data, args, seed)
        out.append(r)
        print(f"  seed {seed}: test spatial NLL/event {r['nll']:.3f} (val {r['val_nll']:.3f}; {r['steps']} steps, best {r['best_step']}, "
              f"{r['train_seconds']:.1f} CPU s training, {r['score_seconds']:.1f} CPU s scoring {r['test_events']} events)", flush=True)
    v = np.array([r["nll"] for r in out])
    print(f"test spatial NLL/event: {v.mean():.3f} ± {v.std():.3f} over {len(v)} seeds")
    if args.save:
        torch.save(out[-1]["model"].state_dict(), args.save)
    if args.json:
        path = Path(args.json)
        recs = json.loads(path.read_text()) if path.exists() else []
        recs.append({"dataset": args.dataset, "model": args.model, "args": vars(args), "nll": v.tolist(),
                     "steps": [r["steps"] for r in out], "train_seconds": [r["train_seconds"] for r in out]})
        path.write_text(json.dumps(recs, indent=1))


if __name__ == "__main__":
    main()
