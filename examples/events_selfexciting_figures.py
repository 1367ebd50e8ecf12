"""Figures of the self-exciting density on Earthquakes JP (Neural STPP protocol, standardised coordinates):

* docs/images/events_selfexciting_jump.png — the density just before and just after the event of the test set that
  starts the largest burst (most events within the next day), and log(after / before), on the map (top) and in a
  square of half-width ``ZOOM`` around the event (bottom, a fine grid): the change is localised at the event;
* docs/images/events_anchored_background.png — the learned data-anchored background (KernelMixture) on the map,
  alone and with its kernel centres.

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

ZOOM = 0.15  # half-width of the zoom square (standardised units)


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
    # the zoom: a fine grid of +-ZOOM around the event, where the new kernel sits
    zx, zy = (torch.linspace(float(c) - ZOOM, float(c) + ZOOM, g, dtype=torch.float64) for c in xe)
    zxy = torch.stack(torch.meshgrid(zx, zy, indexing="ij"), -1).reshape(-1, 2)
    with torch.no_grad():
        zb = model.log_prob(sm, zxy, ctx[0]).reshape(g, g)
        za = model.log_prob(sm, zxy, ctx[1]).reshape(g, g)
    zext = [float(zx[0]), float(zx[-1]), float(zy[0]), float(zy[-1])]
    cell = float(zx[1] - zx[0]) * float(zy[1] - zy[0])
    mass_b, mass_a = float(zb.exp().sum()) * cell, float(za.exp().sum()) * cell
    fig, axes = plt.subplots(2, 3, figsize=(16, 9.4))
    for row, (b, a_, e, label) in enumerate(((before, after, ext, "map"), (zb, za, zext, f"zoom ±{ZOOM}"))):
        hi = float(torch.maximum(b.max(), a_.max()))
        for axis, img, title in ((axes[row, 0], b, "log density just before"), (axes[row, 1], a_, "just after")):
            im = axis.imshow(img.T.clamp_min(hi - 12), origin="lower", extent=e, cmap="magma", vmin=hi - 12, vmax=hi)
            axis.set_title(f"{title} the event ({label})", fontsize=10)
            fig.colorbar(im, ax=axis, shrink=0.8)
        d = (a_ - b).T
        lim_d = float(d.abs().max())
        im = axes[row, 2].imshow(d, origin="lower", extent=e, cmap="coolwarm", vmin=-lim_d, vmax=lim_d)
        axes[row, 2].set_title(f"log(after / before) ({label})", fontsize=10)
        fig.colorbar(im, ax=axes[row, 2], shrink=0.8)
        for axis in axes[row]:
            axis.plot(float(xe[0]), float(xe[1]), "x", color="lime", ms=9, mew=1.5)
            axis.set_xlabel("x (standardised)")
            axis.set_ylabel("y (standardised)")
            if row == 0:  # where the zoom is
                axis.add_patch(plt.Rectangle((float(xe[0]) - ZOOM, float(xe[1]) - ZOOM), 2 * ZOOM, 2 * ZOOM, fill=False,
                                             ec="cyan", lw=1.2))
    far = (xy - xe).norm(dim=-1).reshape(g, g) > 0.5
    ratio = after - before
    fig.suptitle(f"Earthquakes JP test window {key}, event at t={te:.2f} d ({n} events in the next day): self-exciting density "
                 f"(16 kernels at past events + 2,000-kernel background).\nProbability within the zoom square: "
                 f"{mass_b:.3f} before, {mass_a:.3f} after; farther than 0.5 from the event the log ratio lies in "
                 f"[{float(ratio[far].min()):.2f}, {float(ratio[far].max()):.2f}] (mass moves to the event)")
    fig.tight_layout()
    out = Path(a.out)
    fig.savefig(out / "events_selfexciting_jump.png", dpi=100)
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.6))
    centres = model.background.centres.detach().double()
    hi = float(bg.max())
    for axis, dots in zip(axes, (False, True)):
        im = axis.imshow(bg.T.clamp_min(hi - 12), origin="lower", extent=ext, cmap="magma", vmin=hi - 12, vmax=hi)
        fig.colorbar(im, ax=axis, shrink=0.8, label="log density")
        if dots:
            axis.scatter(centres[:, 0], centres[:, 1], s=1.5, c="cyan", alpha=0.5, lw=0)
            axis.set_xlim(ext[0], ext[1])
            axis.set_ylim(ext[2], ext[3])
        axis.set_xlabel("x (standardised)")
        axis.set_ylabel("y (standardised)")
    axes[0].set_title("data-anchored background: log density")
    axes[1].set_title("the same with its 2,000 kernel centres (started at training epicentres)")
    fig.suptitle("Earthquakes JP: the learned data-anchored background (KernelMixture inside SelfExciting)")
    fig.tight_layout()
    fig.savefig(out / "events_anchored_background.png", dpi=100)
    print(f"log(after/before): max {float(ratio.max()):.2f} at the event; beyond 0.5 of it in "
          f"[{float(ratio[far].min()):.3f}, {float(ratio[far].max()):.3f}]; probability within +-{ZOOM} of the event "
          f"{mass_b:.4f} before, {mass_a:.4f} after")


if __name__ == "__main__":
    main()
