"""EarthquakeNPP continuous protocol: spatial and temporal test log-likelihood per event on ONE catalog, each test event
conditioned on every strictly earlier event of the catalog (training and validation periods included;
:mod:`probflux.stpp.continuous`). x, y in km (spatial LL per km^2), time in days.

Rows (``method`` in ``benchmarks/results/events.json``, datasets ``earthquakenpp_<catalog>_continuous``):

* ``kernel-baseline`` (spatial) — ``benchmarks/peers/kernel_stpp.py``: KDE background + Gaussian kernels at the newest k
  earlier events; ``h_b, h_l, w, k`` by grid search on the validation period (background = training-period events,
  history = the catalog before each validation event), then the test period scored once with the background refitted
  on training + validation events (the chosen bandwidths kept);
* ``probflux-etas-temporal`` (temporal) — :class:`probflux.stpp.ETASTemporal` (exponential-mixture kernel, 15 scales
  from 1.4 min to 27 years), maximum likelihood on every event before the test period;
* ``probflux-poisson-temporal`` (temporal) — :class:`probflux.stpp.ConstantRate` fitted on the same events;
* ``etas-published`` / ``poisson-published`` — EarthquakeNPP's ETAS (with magnitudes) and homogeneous Poisson scores,
  ``Experiments/ETAS/output_data_ComCat_25/ll_scores.json`` of ss15859/EarthquakeNPP (ComCat_25 only).

Temporal LL per event = (sum_i log lambda*(t_i) - int_{test start}^{last test event} lambda*) / n, EarthquakeNPP's
convention (their ETAS sums int_{t_(i-1)}^{t_i} lambda* over the test events).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_events_continuous.py          # both catalogs, writes events.json
    .venv/bin/python benchmarks/bench_events_continuous.py --path my_catalog.npz      # any file in that layout
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Optional

import torch

from probflux.data.events import earthquakenpp_catalog
from probflux.io import write_json
from probflux.stpp import ConstantRate, ETASTemporal
from probflux.stpp.continuous import History, history_counts, spatial_scores, temporal_scores

sys.path.insert(0, str(Path(__file__).resolve().parent / "peers"))
from kernel_stpp import DEFAULT_K, KernelSTPP, log_kde, tune_refined  # noqa: E402,F401

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


def run_catalog(name: str, cat, command: str) -> list[dict]:
    ds = f"{name}_continuous"
    recs = []

    def rec(method: str, metric: str, value: float, cpu: float, cmd: str = command) -> None:
        recs.append({"benchmark": "events", "dataset": ds, "method": method, "metric": metric, "value": float(value), "std": 0.0,
                     "seeds": 1, "cpu_seconds": cpu, "command": cmd})

    print(f"\n== {ds}: {cat}", flush=True)
    a = CLOCK()
    bg_train, _ = cat.events("train")[1], None
    xv, slots = val_slots(cat, max(DEFAULT_K))
    tu = tune_refined(bg_train, xv, slots)
    bg = cat.before("test")[1]
    model = KernelSTPP(bg, tu.h_b, tu.h_l, tu.w, tu.k)
    sp = spatial_scores(cat, model, chunk=512)
    cpu = CLOCK() - a
    print(f"  kernel-baseline: h_b {tu.h_b:.3g} km, h_l {tu.h_l:.3g} km, w {tu.w}, k {tu.k} (val LL {tu.val_ll:.3f}, "
          f"{tu.grid_points} grid points); test spatial LL {float(sp.mean()):.3f} /km^2  ({cpu:.0f} CPU s)", flush=True)
    rec("kernel-baseline", "test_spatial_ll_per_event_km2", float(sp.mean()), cpu)
    test_start = cat.span("test")[0]
    for method, m in (("probflux-etas-temporal", ETASTemporal()), ("probflux-poisson-temporal", ConstantRate())):
        a = CLOCK()
        m.fit(cat.t, 0.0, test_start)
        sc = temporal_scores(cat, m)
        cpu = CLOCK() - a
        extra = f", branching ratio {m.branching_ratio:.3f}, mu {m.mu:.3g}/day" if isinstance(m, ETASTemporal) else ""
        print(f"  {method}: test temporal LL {sc.ll_per_event:.3f} per event{extra} ({cpu:.1f} CPU s)", flush=True)
        rec(method, "test_temporal_ll_per_event", sc.ll_per_event, cpu)
    for method, (sll, tll) in PUBLISHED.get(ds, {}).items():
        rec(method, "test_spatial_ll_per_event_km2", sll, 0.0, PUBLISHED_SOURCE)
        rec(method, "test_temporal_ll_per_event", tll, 0.0, PUBLISHED_SOURCE)
    return recs


def main(argv: Optional[list[str]] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--catalogs", nargs="+", default=["Japan_25", "ComCat_25"])
    p.add_argument("--path", default=None, help="an .npz in the EarthquakeNPP layout instead of the built-in catalogs")
    p.add_argument("--out", default="benchmarks/results/events.json")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    command = "python benchmarks/bench_events_continuous.py " + " ".join(argv if argv is not None else sys.argv[1:])
    jobs = ([(Path(args.path).stem.lower(), earthquakenpp_catalog(Path(args.path).stem, path=args.path))] if args.path
            else [(f"earthquakenpp_{c.lower()}", earthquakenpp_catalog(c)) for c in args.catalogs])
    out = Path(args.out)
    for name, cat in jobs:
        recs = run_catalog(name, cat, command)
        old = json.loads(out.read_text()) if out.exists() and out.stat().st_size else []
        keys = {(r["dataset"], r["method"], r["metric"]) for r in recs}
        write_json(out, [r for r in old if (r["dataset"], r["method"], r["metric"]) not in keys] + recs)


if __name__ == "__main__":
    main()
