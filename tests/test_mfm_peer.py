"""The Metric Flow Matching peer ``benchmarks/peers/mfm.py`` (skipped without torchcfm): the RBF metric is ~1/(1+eps)
on the data and ~1/eps far from it, and a short fit moves cells towards the target snapshot."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("torchcfm")
pytest.importorskip("torchdiffeq")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from peers.mfm import MFMPeer, RBFMetric  # noqa: E402
from probflux.metrics import w1  # noqa: E402


def test_rbf_metric_is_cheap_on_the_data_and_expensive_off_it():
    g = torch.Generator().manual_seed(0)
    cells = torch.cat([torch.randn(400, 2, generator=g), torch.randn(400, 2, generator=g) + torch.tensor([6.0, 0.0])])
    m = RBFMetric(cells, n_centers=20, eps=1e-2)
    h = m.h(cells)
    assert abs(float(h.mean()) - 1.0) < 0.15  # fitted so that h ~ 1 on the cells
    far = m(torch.tensor([[3.0, 8.0]]))
    assert float(far) > 20 * float(m(cells).median())  # (h + eps)^-1 -> 1/eps = 100 off the data


def test_short_fit_moves_cells_and_bad_input():
    g = torch.Generator().manual_seed(1)
    x0, x1 = torch.randn(200, 2, generator=g), torch.randn(200, 2, generator=g) + torch.tensor([4.0, 0.0])
    peer = MFMPeer(2, n_centers=20, seed=0)
    info = peer.fit([0.0, 1.0], [x0, x1], steps=25)
    assert info["steps"] == 25 and info["geo_steps"] == 25
    moved = peer.transport(x0, 0.0, 1.0)
    assert moved.shape == x0.shape and bool(torch.isfinite(moved).all())
    assert w1(moved, x1) < 0.5 * w1(x0, x1)
    with pytest.raises(ValueError, match="geo_fraction"):
        MFMPeer(2, geo_fraction=1.5)
    with pytest.raises(ValueError, match="kappa"):
        MFMPeer(2, kappa=0.0)
