"""Earthquakes JP: a time-varying and a history-conditioned spatial density, with figures.

Trains, on the Neural STPP split (coordinates standardised with training-event statistics):

* ``rho(x | t)`` — :class:`probflux.FactorizedMixture` of the location given the time in the 30-day window;
* ``rho(x | t, history)`` — the same family conditioned on the newest 16 earlier events of the window
  (:func:`probflux.stpp.history_context` → :class:`probflux.stpp.HistoryEncoder` in :class:`probflux.Conditioned`),

prints the test spatial NLL per event of both (Neural STPP's Table 1 quantity), and writes

* ``events_earthquakes_density.png`` — the time-varying density over the window with its probability-flow
  velocity (streamlines), training events of each period on top, in longitude/latitude;
* ``events_earthquakes_history.png`` — the history-conditioned density just before and just after the largest
  test-set earthquake (magnitude from the USGS catalog that the windows were cut from), with the earlier events
  of its window;
* ``metrics.json`` — the NLLs, steps and seconds.

    .venv/bin/python examples/earthquakes_history.py --seconds 60 --out docs/images
"""
from __future__ import annotations

import argparse
import datetime as dt
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

import probflux as pf  # noqa: E402
from probflux import plot  # noqa: E402
from probflux.data import earthquakes_jp  # noqa: E402
from probflux.data.snapshots import _data_file  # noqa: E402
from probflux.io import write_json  # noqa: E402
from probflux.normalize import Normalizer  # noqa: E402
from probflux.objectives import NegativeLogLikelihood  # noqa: E402
from probflux.stpp import HistoryEncoder, history_at, model_points, spatial_log_likelihood  # noqa: E402
from probflux.train import (
    TrainConfig,  # noqa: E402
    fit,  # noqa: E402
)

HISTORY = 16


def train(density: pf.TimeDensity, points, seconds: float, steps: int, seed: int):
    # the schedule (2% warm-up, cosine) runs over the wall-clock budget; `steps` only caps the step count
    cfg = TrainConfig(steps=steps, batch_size=1024, lr=3e-3, warmup=steps // 50, ema=0.999, device="cpu", eval_every=10**9,
                      checkpoint_every=10**9)
    start = time.perf_counter()
    res = fit(pf.Dynamics(density), NegativeLogLikelihood(), points, config=cfg, seed=seed, progress=None, max_seconds=seconds,
              time_schedule=True)
    return res.model, res.step, time.perf_counter() - start


def largest_test_event(test) -> tuple[str, int, float]:
    """(sequence key, event index, magnitude) of the largest test earthquake, matched in the USGS catalog."""
    path = _data_file("stpp/earthquakes_jp/japan_usgs_catalog_1990_2019.csv", "")
    cat = np.genfromtxt(path, delimiter=",", names=True, dtype=None, encoding="utf-8")
    epoch = np.array([dt.datetime.fromisoformat(s).timestamp() for s in cat["time"]]) / 86400.0
    best = ("", -1, -np.inf)
    for key in test.keys:
        start = dt.datetime.strptime(key, "%Y%m%d").replace(tzinfo=None).timestamp() / 86400.0
        s = test[key].numpy()
        for i, (t, lon, _lat) in enumerate(s):
            j = int(np.argmin(np.abs(epoch - (start + t))))
            if abs(epoch[j] - (start + t)) < 1e-3 and abs(cat["longitude"][j] - lon) < 1e-3 and cat["magnitude"][j] > best[2]:
                best = (key, i, float(cat["magnitude"][j]))
    return best


def before_after(model, test_raw, stats, key: str, i: int, mag: float, path: Path) -> None:
    seq = test_raw[key]
    t_event = float(seq[i, 0])
    times = torch.tensor([t_event - 1e-3, min(t_event + 0.05, 30.0)], dtype=torch.float64)  # 1.4 min before, 1.2 h after
    std = test_raw.standardize(stats)
    ctx = history_at(std, key, times, HISTORY).float()
    lo, hi = seq[:, 1:].min(0).values.numpy() - 2.0, seq[:, 1:].max(0).values.numpy() + 2.0
    gx, gy = np.linspace(lo[0], hi[0], 200), np.linspace(lo[1], hi[1], 200)
    X, Y = np.meshgrid(gx, gy)
    pts = torch.tensor(np.stack([X.ravel(), Y.ravel()], 1))
    z = stats.apply(pts).float()
    fig, axes = plt.subplots(1, 3, figsize=(16, 5), constrained_layout=True)
    log_det = float(stats.scale.log().sum())
    lps = []
    for ax, k, label in zip(axes, range(2), ("just before", "1.2 hours after")):
        with torch.no_grad():
            lp = model.density.log_prob(float(times[k]) / 30.0, z, ctx[k].expand(z.shape[0], -1)).double() - log_det
        lps.append(lp.reshape(X.shape).numpy())
        im = ax.pcolormesh(gx, gy, lps[-1], shading="auto", cmap="magma", vmin=float(lp.max()) - 12, vmax=float(lp.max()))
        past = seq[seq[:, 0] < times[k]]
        ax.scatter(past[:, 1], past[:, 2], s=6, c="cyan", label="earlier events in the window")
        ax.scatter([seq[i, 1]], [seq[i, 2]], marker="*", s=220, c="lime", edgecolors="k", label=f"M{mag:.1f} (day {t_event:.2f})")
        ax.set_title(f"log rho(x | t, history), {label}")
        fig.colorbar(im, ax=ax, shrink=0.8)
    diff = lps[1] - lps[0]
    lim = float(np.abs(diff).max())
    im = axes[2].pcolormesh(gx, gy, diff, shading="auto", cmap="RdBu_r", vmin=-lim, vmax=lim)
    axes[2].scatter([seq[i, 1]], [seq[i, 2]], marker="*", s=220, c="lime", edgecolors="k")
    axes[2].set_title("change: log rho after - log rho before")
    fig.colorbar(im, ax=axes[2], shrink=0.8)
    for ax in axes:
        ax.set_xlabel("longitude")
        ax.set_ylabel("latitude")
    axes[0].legend(loc="lower right", fontsize=8)
    fig.suptitle(f"history-conditioned density, window {key}: the largest test-set earthquake moves the mass")
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=60.0, help="training wall time per model")
    p.add_argument("--steps", type=int, default=100_000, help="cap on the number of steps (training stops at --seconds)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="runs/earthquakes_history")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    raw = {s: earthquakes_jp(s) for s in ("train", "val", "test")}
    stats = raw["train"].spatial_stats()
    std = {s: v.standardize(stats) for s, v in raw.items()}
    metrics = {}

    torch.manual_seed(args.seed)
    plain, steps, secs = train(pf.FactorizedMixture(2, components=64, hidden=256), model_points(std["train"]), args.seconds, args.steps,
                               args.seed)
    metrics["time_varying"] = {"test_nll": -spatial_log_likelihood(plain.density, model_points(std["test"])), "steps": steps,
                               "seconds": secs}
    torch.manual_seed(args.seed)
    hist_density = pf.Conditioned(pf.FactorizedMixture(2, components=64, hidden=256, context_dim=64),
                                  HistoryEncoder(2, events=HISTORY, hidden=64, out_features=64))
    hist, steps, secs = train(hist_density, model_points(std["train"], HISTORY), args.seconds, args.steps, args.seed)
    metrics["history"] = {"test_nll": -spatial_log_likelihood(hist.density, model_points(std["test"], HISTORY)), "steps": steps,
                          "seconds": secs}
    for k, v in metrics.items():
        print(f"{k:13s} test spatial NLL per event {v['test_nll']:.3f} ({v['steps']} steps, {v['seconds']:.0f} s)")

    norm = Normalizer(0.0, 30.0, stats.shift, stats.scale)
    ev = std["train"].events()
    plot.density_snapshots(plain, (0.05, 0.3, 0.55, 0.8, 1.0), path=out / "events_earthquakes_density.png", normalizer=norm,
                           data=(ev.t / 30.0, ev.x), title="Earthquakes JP: rho(x | t) over the 30-day window, with its velocity")
    key, i, mag = largest_test_event(raw["test"])
    metrics["largest_test_event"] = {"key": key, "index": i, "magnitude": mag}
    before_after(hist, raw["test"], stats, key, i, mag, out / "events_earthquakes_history.png")
    write_json(out / "metrics.json", metrics)
    print(f"figures and metrics in {out}/")


if __name__ == "__main__":
    main()
