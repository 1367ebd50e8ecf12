"""Figures of the self-exciting density on Earthquakes JP (Neural STPP protocol, standardised coordinates):

* docs/images/events_selfexciting_jump.png — the density just before and just after the event of the test set that
  starts the largest burst (most events within the next day), and log(after / before): the change is localised at
  the event;
* docs/images/events_anchored_background.png — the learned data-anchored background (KernelMixture) on the map.

    OMP_NUM_THREADS=1 .venv/bin/python examples/events_selfexciting_figures.py --budget 30
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from events_selfexciting import load, run  # noqa: E402
from probflux.stpp import history_at  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--budget", type=float, default=30.0)
    p.add_argument("--out", default="docs/images")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    args = argparse.Namespace(dataset="earthquakes_jp", model="selfexciting", budget=a.budget, kernels=2000, events=16, rank=0,
                              knn=8, min_scale=1e-3, init_scale=0.05, hidden=32, batch=512, lr=1e-2, eval_every=50)
    data = load("earthquakes_jp")
    r = run(data, args, 0)
    model = r["model"].double()
    print(f"trained: test spatial NLL/event {r['nll']:.3f}")
    # the test event that starts the largest burst (most events of its window within the next day)
    best = (-1, None, None)
    for key, s in zip(data.test.keys, data.test.sequences):
        t = s[:, 0]
        burst = torch.searchsorted(t, t + 1.0) - torch.arange(len(t))
        i = int(burst.argmax())
        if int(burst[i]) > best[0]:
            best = (int(burst[i]), key, i)
    n, key, i = best
    s = data.test[key]
    te, xe = float(s[i, 0]), s[i, 1:]
    t0, t1 = data.test.window
    g = 241
    lim = torch.tensor([[-2.5, 2.5], [-2.5, 2.5]], dtype=torch.float64)
    ax0, ax1 = (torch.linspace(float(lo), float(hi), g, dtype=torch.float64) for lo, hi in lim)
    xy = torch.stack(torch.meshgrid(ax0, ax1, indexing="ij"), -1).reshape(-1, 2)
    tt = torch.tensor([te, te + 1e-9], dtype=torch.float64)
    ctx = history_at(data.test, key, tt, events=16)
    sm = (te - t0) / (t1 - t0)
    with torch.no_grad():
        before = model.log_prob(sm, xy, ctx[0]).reshape(g, g)
        after = model.log_prob(sm, xy, ctx[1]).reshape(g, g)
        bg = model.background.log_prob(sm, xy).reshape(g, g)
    ext = [float(ax0[0]), float(ax0[-1]), float(ax1[0]), float(ax1[-1])]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.6))
    vmin = float(after.max()) - 12
    for axis, img, title in ((axes[0], before, "log density just before"), (axes[1], after, "log density just after")):
        im = axis.imshow(img.T.clamp_min(vmin), origin="lower", extent=ext, cmap="magma")
        axis.set_title(f"{title} the event at t={te:.2f} d")
        fig.colorbar(im, ax=axis, shrink=0.8)
    d = (after - before).T
    im = axes[2].imshow(d, origin="lower", extent=ext, cmap="coolwarm", vmin=-float(d.abs().max()), vmax=float(d.abs().max()))
    axes[2].set_title("log(after / before)")
    fig.colorbar(im, ax=axes[2], shrink=0.8)
    for axis in axes:
        axis.plot(float(xe[0]), float(xe[1]), "x", color="lime", ms=9)
        axis.set_xlabel("x (standardised)")
    fig.suptitle(f"Earthquakes JP test window {key}: self-exciting density (16 kernels at past events + 2,000-kernel background); "
                 f"{n} events in the next day")
    fig.tight_layout()
    out = Path(a.out)
    fig.savefig(out / "events_selfexciting_jump.png", dpi=110)
    fig, axis = plt.subplots(figsize=(6.5, 5.5))
    im = axis.imshow(bg.T.clamp_min(float(bg.max()) - 12), origin="lower", extent=ext, cmap="magma")
    fig.colorbar(im, ax=axis, shrink=0.8, label="log density")
    axis.set_title("data-anchored background (2,000 learned kernels), Earthquakes JP")
    fig.tight_layout()
    fig.savefig(out / "events_anchored_background.png", dpi=110)
    far = (xy - xe).norm(dim=-1).reshape(g, g) > 0.5
    ratio = after - before
    print(f"log(after/before): max {float(ratio.max()):.2f} at the event; beyond 0.5 of it in "
          f"[{float(ratio[far].min()):.3f}, {float(ratio[far].max()):.3f}]")


if __name__ == "__main__":
    main()
