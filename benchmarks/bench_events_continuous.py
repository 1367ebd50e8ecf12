"""EarthquakeNPP continuous protocol: spatial and temporal test log-likelihood per event on ONE catalog, each test event
conditioned on every strictly earlier event of the catalog (training and validation periods included;
:mod:`probflux.stpp.continuous`). x, y in km (spatial LL per km^2), time in days.

Rows (``method`` in ``benchmarks/results/events.json``, datasets ``earthquakenpp_<catalog>_continuous``):

* ``kernel-baseline`` (spatial) — ``benchmarks/peers/kernel_stpp.py``: KDE background + Gaussian kernels at the newest k
  earlier events; ``h_b, h_l, w, k`` by grid search on the validation period (background = training-period events,
  history = the catalog before each validation event), then the test period scored once with the background refitted
  on training + validation events (the chosen bandwidths kept);
* ``probflux-selfexciting`` (spatial) — :meth:`probflux.stpp.SelfExciting.from_events` (as in ``bench_events.py``) in
  coordinates standardised by the training period, model time = the whole catalog span, each event's context = its
  newest ``--events`` (default 16; the recorded runs use 256) strictly earlier events of the catalog, ``--scales``
  Gaussian kernels per past event (a scale mixture; recorded: 3), with ``--count-radius r`` one mark per slot,
  ``log(1 +`` the later history events within ``r`` km of the event``)`` (a causal magnitude proxy read by the kernel
  MLP; recorded on ComCat_25: 15 km); fitted under ``--budget`` CPU seconds either on the training period (minus the
  background centres; ``--fit-period train``, the EMA weights with the best validation-period NLL) or on every event
  before the test period (``--fit-period before-test``, as EarthquakeNPP's ETAS is fitted; the final EMA weights,
  no validation selection), then scored on the test period through
  :class:`~probflux.stpp.selfexciting.CatalogSpatial` and ``StandardizedSpatial`` (CPU seconds = training);
* ``probflux-etas-temporal`` (temporal) — :class:`probflux.stpp.ETASTemporal` (exponential-mixture kernel, 15 scales
  from 1.4 min to 27 years), maximum likelihood on every event before the test period;
* ``probflux-count-etas-temporal`` (temporal) — :class:`probflux.stpp.temporal.CountETASTemporal`: the same kernel
  grid, each event's productivity after a delay set by the binned number of events that followed it within
  ``radius`` km (a causal magnitude proxy); delays and radius (:data:`COUNT_GRID`) by validation LL with the fit on
  the training period, then refitted on every event before the test period (CPU seconds include the search);
* ``probflux-poisson-temporal`` (temporal) — :class:`probflux.stpp.ConstantRate` fitted on the same events;
* ``etas-published`` / ``poisson-published`` — EarthquakeNPP's ETAS (with magnitudes) and homogeneous Poisson scores,
  ``Experiments/ETAS/output_data_ComCat_25/ll_scores.json`` of ss15859/EarthquakeNPP (ComCat_25 only).

Temporal LL per event = (sum_i log lambda*(t_i) - int_{test start}^{last test event} lambda*) / n, EarthquakeNPP's
convention (their ETAS sums int_{t_(i-1)}^{t_i} lambda* over the test events).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_events_continuous.py          # both catalogs, writes events.json
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_events_continuous.py --catalogs ComCat_25 \\
        --methods probflux-selfexciting --budget 600 --events 256 --scales 3 --fit-period before-test \
        --count-radius 15 --seed0 1 --out seed1.json                                                # one seed
    .venv/bin/python benchmarks/bench_events_continuous.py --merge seed0.json seed1.json seed2.json     # -> mean ± std
    .venv/bin/python benchmarks/bench_events_continuous.py --path my_catalog.npz      # any file in that layout
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Optional

import numpy as np
import torch

import probflux as pf
from probflux.data.events import earthquakenpp_catalog
from probflux.data.points import TemporalPoints
from probflux.io import write_json
from probflux.objectives import NegativeLogLikelihood
from probflux.stpp import ConstantRate, ETASTemporal, SelfExciting
from probflux.stpp.continuous import History, StandardizedSpatial, history_counts, mixture_log_prob, spatial_scores, temporal_scores
from probflux.stpp.long_memory import AgedKernelSpatial, tune_long_memory
from probflux.stpp.selfexciting import CatalogSpatial, catalog_context
from probflux.stpp.temporal import CountETASTemporal
from probflux.train import fit

sys.path.insert(0, str(Path(__file__).resolve().parent / "peers"))
from kernel_stpp import DEFAULT_K, KernelSTPP, log_kde, tune_refined  # noqa: E402,F401

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_events import SE_EVENTS, SE_KERNELS, fit_best, selfexciting_config  # noqa: E402

CLOCK = time.process_time
PUBLISHED_SOURCE = "ss15859/EarthquakeNPP Experiments/ETAS/output_data_ComCat_25/ll_scores.json (ETAS with magnitudes)"
PUBLISHED = {"earthquakenpp_comcat_25_continuous": {"etas-published": (-8.689770387238827, 1.4343428344882627),
                                                    "poisson-published": (-13.774504128914366, 0.5126406686259881)}}


def val_slots(cat, k: int) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
    """Validation events and their newest-first history slots over the whole catalog (continuous protocol)."""
    tv, xv = cat.events("val")
    n = history_counts(cat, tv)
    idx, valid = History(cat.t, cat.x, n).last(k)
    return xv, (cat.x[idx], valid)


FIT_PERIODS = ("train", "before-test")
"""``--fit-period``: ``train`` fits on the training period and keeps the EMA weights with the best validation-period
NLL; ``before-test`` fits on every event before the test period (training + validation, as EarthquakeNPP's ETAS and our
temporal models are fitted) and keeps the final EMA weights of the budget (no validation selection)."""


def fit_rows(cat, fit_period: str) -> slice:
    """Catalog rows ``[0, i1)`` that ``probflux-selfexciting`` is fitted on (background centres drawn from them too):
    the training period, or every event strictly before the test period (``fit_period``, one of :data:`FIT_PERIODS`)."""
    if fit_period not in FIT_PERIODS:
        raise ValueError(f"fit_period must be one of {FIT_PERIODS}; got {fit_period!r}")
    tr = cat.indices("train")
    return tr if fit_period == "train" else slice(tr.start, cat.indices("test").start)


def run_selfexciting(cat, budget: float, seed: int, events: int = SE_EVENTS, scales: int = 1,
                     kernels: int = SE_KERNELS, fit_period: str = "train",
                     count_radius: Optional[float] = None, save: Optional[str] = None) -> tuple[float, float]:
    """Test spatial LL per event (per km^2) of ``probflux-selfexciting`` on one catalog, and its training CPU seconds.
    Coordinates are standardised by the events it is fitted on (:func:`fit_rows`). ``count_radius`` (km): each history
    slot also carries ``log(1 +`` its later history events within that radius ``)`` (``SelfExciting(marks=1)``)."""
    (t0, t1), k = (cat.boundaries[0], cat.boundaries[-1]), events
    tr, va = fit_rows(cat, fit_period), cat.indices("val")
    mean, std = cat.x[tr].mean(0), cat.x[tr].std(0)
    z = (cat.x - mean) / std
    s = (cat.t - t0) / (t1 - t0)
    torch.manual_seed(seed)
    model, rest = SelfExciting.from_events(z[tr], kernels=kernels, events=k, age_eps=0.01 / (t1 - t0), seed=seed,
                                           scales=scales, marks=0 if count_radius is None else 1)  # eps: 1/4 h
    rows, vrows = torch.arange(tr.start, tr.stop)[rest], torch.arange(va.start, va.stop)
    marks = {"count_radius": count_radius, "count_scale": std}

    def context(tq: torch.Tensor) -> torch.Tensor:
        return catalog_context(cat.t, z, tq, (t0, t1), k, **marks).float()

    fitP = TemporalPoints._unchecked(s[rows].float(), z[rows].float(), context(cat.t[rows]), "fit")
    if fit_period == "train":
        Vf = TemporalPoints._unchecked(s[va].float(), z[va].float(), context(cat.t[vrows]), "val")
        model, res, train_s = fit_best(model, fitP, Vf, budget, seed, selfexciting_config())
        del Vf
    else:
        start = CLOCK()
        res = fit(pf.Dynamics(model), NegativeLogLikelihood(), fitP, config=selfexciting_config(), seed=seed, progress=False,
                  max_seconds=budget, time_schedule=True, clock=CLOCK)
        train_s = CLOCK() - start
        model = res.model.density.eval()  # the EMA weights at the end of the budget
    del fitP
    if save:  # the fitted model and its standardisation, to score again (e.g. under a long-memory mixture) unrefitted
        torch.save({"model": model, "mean": mean, "std": std, "window": (t0, t1), "events": k, "count_radius": count_radius,
                    "fit_period": fit_period, "seed": seed, "train_cpu_seconds": train_s}, save)
    ll = spatial_scores(cat, StandardizedSpatial(CatalogSpatial(model, (t0, t1), k, **marks), mean, std), period="test", chunk=256)
    print(f"  probflux-selfexciting (k={k}, scales={scales}, fit on {fit_period}, count radius {count_radius}) seed {seed}: "
          f"test spatial LL "
          f"{float(ll.mean()):.3f} /km^2 ({res.step} steps, best {res.best_step}, {train_s:.0f} CPU s training)", flush=True)
    return float(ll.mean()), train_s


def load_spatial(path: str, cat) -> tuple[StandardizedSpatial, dict]:
    """A ``--save-model`` file of :func:`run_selfexciting` as the catalog-unit SpatialModel it was scored as."""
    d = torch.load(path, weights_only=False)
    if not isinstance(d, dict) or "model" not in d:
        raise ValueError(f"{path} is not a --save-model file of bench_events_continuous.py")
    marks = {"count_radius": d["count_radius"], "count_scale": d["std"]}
    return StandardizedSpatial(CatalogSpatial(d["model"].eval(), d["window"], d["events"], **marks), d["mean"], d["std"]), d


def run_long_memory(cat, tune_from: str, score: list[str], queries: int = 1500) -> tuple[list[float], float, object]:
    """``probflux-selfexciting-longmemory``: ``(1 - lam) selfexciting + lam AgedKernelSpatial(h, c, p)``
    (:mod:`probflux.stpp.long_memory`). ``h, c, p, lam`` by :func:`~probflux.stpp.long_memory.tune_long_memory` on
    ``queries`` validation events, the base being the model of ``tune_from`` (fitted on the training period); then each
    model of ``score`` (fitted before the test period, one per seed) is scored on the test period under that mixture.
    Returns the per-model test spatial LL per event, the mean CPU seconds (its training + the tuning) and the tuning."""
    base, d = load_spatial(tune_from, cat)
    if d["fit_period"] != "train":
        raise ValueError(f"{tune_from}: the long-memory weights are tuned on validation with a model fitted on the "
                         f"training period; this one was fitted on {d['fit_period']!r}")
    a = CLOCK()
    tu = tune_long_memory(cat, base, period="val", queries=queries)
    tune_s = CLOCK() - a
    print(f"  long memory: h {tu.bandwidth:g} km, c {tu.offset:g} d, p {tu.power:g}, lam {tu.lam:.2f}: val LL "
          f"{tu.val_ll:.4f} vs base {tu.base_val_ll:.4f} ({tu.queries} events, {tu.grid_points} settings, {tune_s:.0f} CPU s)",
          flush=True)
    vals, cpus = [], []
    # the long-memory part does not depend on the fitted model: score it once, mix per model (SpatialMixture's formula)
    lp_lm = spatial_scores(cat, AgedKernelSpatial(tu.bandwidth, tu.offset, tu.power), period="test", chunk=256)
    for path in score:
        m, dm = load_spatial(path, cat)
        if dm["fit_period"] != "before-test":
            raise ValueError(f"{path}: the scored models are fitted before the test period; got {dm['fit_period']!r}")
        lp_base = spatial_scores(cat, m, period="test", chunk=256)
        lp = mixture_log_prob(torch.stack([lp_base, lp_lm]), [1 - tu.lam, tu.lam])
        vals.append(float(lp.mean()))
        cpus.append(dm["train_cpu_seconds"] + tune_s)
        print(f"  {path} (seed {dm['seed']}): test spatial LL {float(lp_base.mean()):.4f} alone, "
              f"{float(lp.mean()):.4f} with the long memory", flush=True)
    return vals, float(np.mean(cpus)), tu


def run_catalog(name: str, cat, command: str, methods: list[str], budget: float = 60.0, seeds: int = 1,
                se: Optional[dict] = None, seed0: int = 0) -> list[dict]:
    ds = f"{name}_continuous"
    recs = []

    def rec(method: str, metric: str, value: float, cpu: float, cmd: str = command, std: float = 0.0, n: int = 1) -> None:
        recs.append({"benchmark": "events", "dataset": ds, "method": method, "metric": metric, "value": float(value), "std": std,
                     "seeds": n, "cpu_seconds": cpu, "command": cmd})

    print(f"\n== {ds}: {cat}", flush=True)
    if "probflux-selfexciting" in methods:
        runs = [run_selfexciting(cat, budget, seed, **(se or {})) for seed in range(seed0, seed0 + seeds)]
        v = [r[0] for r in runs]
        rec("probflux-selfexciting", "test_spatial_ll_per_event_km2", float(np.mean(v)), float(np.mean([r[1] for r in runs])),
            std=float(np.std(v)) if len(v) > 1 else 0.0, n=len(v))
    if "kernel-baseline" in methods:
        _kernel(cat, rec)
    if "temporal" in methods:
        _temporal(cat, rec)
    for method, (sll, tll) in PUBLISHED.get(ds, {}).items():
        rec(method, "test_spatial_ll_per_event_km2", sll, 0.0, PUBLISHED_SOURCE)
        rec(method, "test_temporal_ll_per_event", tll, 0.0, PUBLISHED_SOURCE)
    return recs


def _kernel(cat, rec) -> None:
    a = CLOCK()
    bg_train = cat.events("train")[1]
    xv, slots = val_slots(cat, max(DEFAULT_K))
    tu = tune_refined(bg_train, xv, slots)
    bg = cat.before("test")[1]
    model = KernelSTPP(bg, tu.h_b, tu.h_l, tu.w, tu.k)
    sp = spatial_scores(cat, model, chunk=512)
    cpu = CLOCK() - a
    print(f"  kernel-baseline: h_b {tu.h_b:.3g} km, h_l {tu.h_l:.3g} km, w {tu.w}, k {tu.k} (val LL {tu.val_ll:.3f}, "
          f"{tu.grid_points} grid points); test spatial LL {float(sp.mean()):.3f} /km^2  ({cpu:.0f} CPU s)", flush=True)
    rec("kernel-baseline", "test_spatial_ll_per_event_km2", float(sp.mean()), cpu)


COUNT_GRID = {"delays": [(0.005,), (0.0025, 0.1), (0.005, 0.1)], "radius": [15.0, 30.0]}
"""``CountETASTemporal``'s settings searched on the validation period: delays in days (0.0025 d = 3.6 min), radii in km."""


def _count_etas(cat, rec) -> None:
    """``probflux-count-etas-temporal``: delays and radius by validation LL (fitted on the training period, scored on
    the validation period with the training events as history), then refitted on every event before the test period."""
    a = CLOCK()
    val_start, test_start = cat.span("val")[0], cat.span("test")[0]
    best = None
    for delays in COUNT_GRID["delays"]:
        for radius in COUNT_GRID["radius"]:
            m = CountETASTemporal(delays=delays, radius=radius).fit(cat.t, 0.0, val_start, x=cat.x)
            v = temporal_scores(cat, m, period="val").ll_per_event
            print(f"    count-etas delays {delays} radius {radius:g} km: val temporal LL {v:.4f}", flush=True)
            if best is None or v > best[0]:
                best = (v, delays, radius)
    v, delays, radius = best
    m = CountETASTemporal(delays=delays, radius=radius).fit(cat.t, 0.0, test_start, x=cat.x)
    sc = temporal_scores(cat, m)
    cpu = CLOCK() - a
    print(f"  probflux-count-etas-temporal (delays {delays} d, radius {radius:g} km; val LL {v:.4f}): test temporal LL "
          f"{sc.ll_per_event:.4f} per event ({cpu:.1f} CPU s incl. the search)", flush=True)
    rec("probflux-count-etas-temporal", "test_temporal_ll_per_event", sc.ll_per_event, cpu)


def _temporal(cat, rec) -> None:
    test_start = cat.span("test")[0]
    for method, m in (("probflux-etas-temporal", ETASTemporal()), ("probflux-poisson-temporal", ConstantRate())):
        a = CLOCK()
        m.fit(cat.t, 0.0, test_start)
        sc = temporal_scores(cat, m)
        cpu = CLOCK() - a
        extra = f", branching ratio {m.branching_ratio:.3f}, mu {m.mu:.3g}/day" if isinstance(m, ETASTemporal) else ""
        print(f"  {method}: test temporal LL {sc.ll_per_event:.4f} per event{extra} ({cpu:.1f} CPU s)", flush=True)
        rec(method, "test_temporal_ll_per_event", sc.ll_per_event, cpu)
    _count_etas(cat, rec)


def _config(command: str) -> str:
    """A run's command without its ``--seed0``, ``--out`` and ``--save-model`` arguments."""
    words, keep, skip = command.split(), [], False
    for w in words:
        if skip:
            skip = False
        elif w in ("--seed0", "--out", "--save-model"):
            skip = True
        else:
            keep.append(w)
    return " ".join(keep)


def replace_records(out: Path, recs: list[dict]) -> None:
    """Write ``recs`` into the record file ``out``, replacing its records of the same (dataset, method, metric) and
    keeping the others."""
    old = json.loads(out.read_text()) if out.exists() and out.stat().st_size else []
    keys = {(r["dataset"], r["method"], r["metric"]) for r in recs}
    write_json(out, [r for r in old if (r["dataset"], r["method"], r["metric"]) not in keys] + recs)


def merge_seeds(files: list[Path], out: Path) -> None:
    """Single-seed records of the same (dataset, method, metric) from several files -> one record each: the mean over
    the seeds, their (population) std, the mean CPU seconds, the commands joined by ``;`` (identical records, e.g. the
    published anchors, count once). Other records of ``out`` are kept; records with the same key are replaced."""
    groups: dict[tuple, list[dict]] = {}
    seen = set()
    for f in files:
        for r in json.loads(f.read_text()):
            once = (r["dataset"], r["method"], r["metric"], r["value"], r["command"])
            if once in seen:  # the published anchors every run of a catalog writes: one record, not one per file
                continue
            seen.add(once)
            groups.setdefault((r["dataset"], r["method"], r["metric"]), []).append(r)
    recs = []
    for (ds, method, metric), rs in groups.items():
        if any(r["seeds"] != 1 for r in rs) or len({_config(r["command"]) for r in rs}) > 1:
            raise ValueError(f"merge needs single-seed runs of one configuration (commands equal up to --seed0 and "
                             f"--out) for {ds}/{method}/{metric}; got {[r['command'] for r in rs]}")
        v = [r["value"] for r in rs]
        recs.append({"benchmark": "events", "dataset": ds, "method": method, "metric": metric, "value": float(np.mean(v)),
                     "std": float(np.std(v)) if len(v) > 1 else 0.0, "seeds": len(v),
                     "cpu_seconds": float(np.mean([r["cpu_seconds"] for r in rs])),
                     "command": " ; ".join(dict.fromkeys(r["command"] for r in rs))})
    replace_records(out, recs)
    for r in recs:
        print(f"  {r['dataset']} {r['method']} {r['metric']}: {r['value']:.4f} ± {r['std']:.4f} ({r['seeds']} seeds)")


def main(argv: Optional[list[str]] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--catalogs", nargs="+", default=["Japan_25", "ComCat_25"])
    p.add_argument("--path", default=None, help="an .npz in the EarthquakeNPP layout instead of the built-in catalogs")
    p.add_argument("--methods", nargs="+", default=["kernel-baseline", "temporal", "probflux-selfexciting"],
                   choices=["kernel-baseline", "temporal", "probflux-selfexciting"],
                   help="rows to run (temporal: probflux-etas-temporal and probflux-poisson-temporal)")
    p.add_argument("--budget", type=float, default=60.0, help="CPU seconds of training per probflux-selfexciting run")
    p.add_argument("--seeds", type=int, default=1, help="seeds of probflux-selfexciting")
    p.add_argument("--seed0", type=int, default=0, help="first seed (runs seeds seed0 .. seed0 + seeds - 1)")
    p.add_argument("--merge", nargs="+", default=None,
                   help="record files of single-seed runs (one process per seed) to merge into mean ± std records in --out")
    p.add_argument("--events", type=int, default=SE_EVENTS, help="history slots k of probflux-selfexciting")
    p.add_argument("--scales", type=int, default=1, help="Gaussian kernels per past event of probflux-selfexciting")
    p.add_argument("--kernels", type=int, default=SE_KERNELS, help="background kernels of probflux-selfexciting")
    p.add_argument("--fit-period", default="train", choices=FIT_PERIODS,
                   help="events probflux-selfexciting is fitted on (before-test: training + validation, final weights)")
    p.add_argument("--count-radius", type=float, default=None,
                   help="km: give each history slot of probflux-selfexciting the mark log(1 + later events within it)")
    p.add_argument("--save-model", default=None,
                   help="torch.save the fitted probflux-selfexciting (one seed) and its standardisation to this path")
    p.add_argument("--long-memory", nargs="+", default=None, metavar="MODEL",
                   help="TUNE_MODEL SCORE_MODEL...: --save-model files; tune the long-memory mixture on validation with the "
                        "first (--fit-period train), score the test period with each of the others (--fit-period before-test)")
    p.add_argument("--long-memory-models", default=None,
                   help="the commands that wrote the --long-memory model files (stored in the record's command)")
    p.add_argument("--out", default="benchmarks/results/events.json")
    args = p.parse_args(argv)
    if args.merge:
        merge_seeds([Path(f) for f in args.merge], Path(args.out))
        return
    torch.set_num_threads(1)
    command = "python benchmarks/bench_events_continuous.py " + " ".join(argv if argv is not None else sys.argv[1:])
    jobs = ([(Path(args.path).stem.lower(), earthquakenpp_catalog(Path(args.path).stem, path=args.path))] if args.path
            else [(f"earthquakenpp_{c.lower()}", earthquakenpp_catalog(c)) for c in args.catalogs])
    out = Path(args.out)
    if args.long_memory:
        if len(jobs) != 1:
            raise SystemExit("--long-memory scores one catalog: give --catalogs NAME or --path FILE")
        (name, cat), = jobs
        vals, cpu, tu = run_long_memory(cat, args.long_memory[0], args.long_memory[1:])
        rec = {"benchmark": "events", "dataset": f"{name}_continuous", "method": "probflux-selfexciting-longmemory",
               "metric": "test_spatial_ll_per_event_km2", "value": float(np.mean(vals)),
               "std": float(np.std(vals)) if len(vals) > 1 else 0.0, "seeds": len(vals), "cpu_seconds": cpu,
               "command": command + (f" (models: {args.long_memory_models})" if args.long_memory_models else ""),
               "tuning": {"bandwidth_km": tu.bandwidth, "offset_days": tu.offset, "power": tu.power, "lam": tu.lam,
                          "val_ll": tu.val_ll, "base_val_ll": tu.base_val_ll, "queries": tu.queries},
               "per_seed": vals}
        replace_records(out, [rec])
        print(f"  probflux-selfexciting-longmemory: {rec['value']:.4f} ± {rec['std']:.4f} ({len(vals)} seeds)")
        return
    for name, cat in jobs:
        recs = run_catalog(name, cat, command, args.methods, args.budget, args.seeds,
                           {"events": args.events, "scales": args.scales, "kernels": args.kernels,
                            "fit_period": args.fit_period, "count_radius": args.count_radius, "save": args.save_model},
                           args.seed0)
        replace_records(out, recs)


if __name__ == "__main__":
    main()
