"""The kernel baseline of the events benchmarks (``benchmarks/peers/kernel_stpp.py``) against closed forms."""
from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import torch

from probflux.data.events import EventCatalog, EventSequences
from probflux.stpp import model_points, spatial_log_likelihood
from probflux.stpp.continuous import spatial_scores

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "peers" / "kernel_stpp.py"
_spec = importlib.util.spec_from_file_location("kernel_stpp", _PATH)
ks = importlib.util.module_from_spec(_spec)
sys.modules["kernel_stpp"] = ks  # dataclasses look their module up there
_spec.loader.exec_module(ks)


def _n(x, c, h) -> float:
    d2 = sum((a - b) ** 2 for a, b in zip(x, c))
    return math.exp(-0.5 * d2 / h**2) / (2 * math.pi * h**2)


BG = torch.tensor([[0.0, 0.0], [1.0, 0.0], [1.0, 0.0]], dtype=torch.float64)  # a repeated location counts twice
X1, X2 = (0.3, -0.2), (0.8, 0.4)
HB, HL, W = 0.7, 0.25, 0.4


def _closed_form() -> tuple[float, float]:
    b = lambda x: (_n(x, (0, 0), HB) + 2 * _n(x, (1, 0), HB)) / 3  # noqa: E731
    first = math.log(b(X1))  # no history: the background alone
    second = math.log((1 - W) * b(X2) + W * _n(X2, X1, HL))
    return first, second


def test_two_events_closed_form_in_both_protocols() -> None:
    first, second = _closed_form()
    model = ks.KernelSTPP(BG, HB, HL, W, k=1)
    seqs = EventSequences([[[0.0, *X1], [1.0, *X2]]], window=(0.0, 2.0))
    pts = model_points(seqs, history=4)
    lp = model.log_prob(pts.t, pts.x, pts.context)
    assert torch.allclose(lp, torch.tensor([first, second], dtype=torch.float64), rtol=1e-12, atol=0)
    assert abs(spatial_log_likelihood(model, pts) - (first + second) / 2) < 1e-12  # the library's scorer, as for our models
    cat = EventCatalog(torch.tensor([0.0, 1.0]), torch.tensor([X1, X2], dtype=torch.float64), (0.0, 0.5, 1.0), periods=("train", "test"))
    cont = spatial_scores(cat, model, period="test")
    assert abs(float(cont[0]) - second) < 1e-12


def test_newest_k_kernels_and_a_future_event_changes_nothing() -> None:
    torch.manual_seed(0)
    x = torch.randn(6, 2, dtype=torch.float64)
    model = ks.KernelSTPP(BG, HB, HL, W, k=2)
    seqs = EventSequences([torch.cat([torch.arange(6.0)[:, None], x], 1)], window=(0.0, 6.0))
    lp = model.log_prob(*(lambda p: (p.t, p.x, p.context))(model_points(seqs, history=4)))
    b = torch.logsumexp(torch.stack([ks.log_kde(x, BG[:1], torch.zeros(1), HB), ks.log_kde(x, BG[1:2], torch.zeros(1), HB)])
                        + torch.log(torch.tensor([1 / 3, 2 / 3], dtype=torch.float64))[:, None], 0)
    i = 4  # kernels at events 3 and 2 (the newest two)
    loc = 0.5 * (_n(x[i].tolist(), x[3].tolist(), HL) + _n(x[i].tolist(), x[2].tolist(), HL))
    assert abs(float(lp[i]) - math.log((1 - W) * math.exp(float(b[i])) + W * loc)) < 1e-12
    x2 = x.clone()
    x2[5] += 10.0
    seqs2 = EventSequences([torch.cat([torch.arange(6.0)[:, None], x2], 1)], window=(0.0, 6.0))
    lp2 = model.log_prob(*(lambda p: (p.t, p.x, p.context))(model_points(seqs2, history=4)))
    assert torch.equal(lp2[:5], lp[:5])


def test_density_integrates_to_one_and_chunking_is_exact() -> None:
    model = ks.KernelSTPP(BG, HB, HL, W, k=1)
    g = torch.linspace(-6, 7, 521, dtype=torch.float64)
    xx, yy = torch.meshgrid(g, g, indexing="ij")
    pts = torch.stack([xx.reshape(-1), yy.reshape(-1)], 1)
    xs = torch.tensor([[X1]], dtype=torch.float64).expand(pts.shape[0], 1, 2)
    lp = model._score(pts, xs, torch.ones(pts.shape[0], 1, dtype=torch.bool))
    mass = float(lp.exp().sum()) * float(g[1] - g[0]) ** 2
    assert abs(mass - 1.0) < 1e-6
    old = ks.BLOCK
    try:
        ks.BLOCK = 7  # tiny blocks: chunking over queries and kernels must not change a bit of the log-density
        small = ks.log_kde(pts[:50], model.centres, model.log_weights, HB)
    finally:
        ks.BLOCK = old
    assert torch.allclose(small, ks.log_kde(pts[:50], model.centres, model.log_weights, HB), rtol=1e-13, atol=1e-13)


def test_tuning_uses_validation_only_and_finds_the_grid_optimum() -> None:
    torch.manual_seed(1)
    bg = torch.randn(200, 2, dtype=torch.float64)
    val = torch.randn(50, 2, dtype=torch.float64)
    xs = val[:, None, :] + 0.05 * torch.randn(50, 4, 2, dtype=torch.float64)  # history right next to each event
    valid = torch.ones(50, 4, dtype=torch.bool)
    tu = ks.tune(bg, val, (xs, valid), h_b=[0.3, 1.0], h_l=[0.05, 0.5], ks=(1, 4), ws=(0.0, 0.5, 0.9))
    best = max((float(ks.mix(ks.log_kde(val, *(lambda c: (c[0], torch.log(c[1] / c[1].sum())))(ks.dedupe(bg)), hb),
                                 ks.log_local(val, xs, valid, hl, k), w).mean()) if w else
                float(ks.log_kde(val, *(lambda c: (c[0], torch.log(c[1] / c[1].sum())))(ks.dedupe(bg)), hb).mean()), hb, hl, k, w)
               for hb in (0.3, 1.0) for hl in (0.05, 0.5) for k in (1, 4) for w in (0.0, 0.5, 0.9))
    assert abs(tu.val_ll - best[0]) < 1e-12 and tu.w == 0.9 and tu.h_l == 0.05
