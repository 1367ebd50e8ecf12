"""The held-out snapshot scoring parts of ``probflux.evaluation`` that benchmarks and ``probflux fit`` share.

Closed forms: identical point sets are at distance 0; a set shifted by a constant vector ``c`` is at
``W_1 = W_2 = |c|`` from the original (the identity coupling is optimal: no coupling moves mass less than
``|c|`` on average, and the translation attains it); a path translating at constant velocity ``c`` has kinetic
energy ``|c|^2``, exactly the Benamou–Brenier bound between its snapshots.
"""
from __future__ import annotations

import pytest
import torch

import probflux as pf
from probflux.data import TemporalPoints
from probflux.evaluation import (
    heldout_snapshot_scores,
    kinetic_over_ot,
    sample_distances,
    sampling_floor,
    snapshot_pair,
    subsample,
)
from probflux.normalize import Normalizer


def _cells(n: int = 200, d: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _points(times: list[float], cells: list[torch.Tensor]) -> TemporalPoints:
    t = torch.cat([torch.full((len(c),), tk, dtype=torch.float64) for tk, c in zip(times, cells)])
    return TemporalPoints(t, torch.cat(cells))


def test_sample_distances_closed_forms():
    x = _cells()
    same = sample_distances(x, x.clone())
    assert same["w1"] == pytest.approx(0.0, abs=1e-9) and same["w2"] == pytest.approx(0.0, abs=1e-9)
    shift = torch.tensor([3.0, -4.0], dtype=torch.float64)  # |c| = 5
    moved = sample_distances(x + shift, x)
    assert moved["w1"] == pytest.approx(5.0, rel=1e-9) and moved["w2"] == pytest.approx(5.0, rel=1e-9)
    # a permutation of the same cells is the same measure; float32 input is scored in float64
    perm = x[torch.randperm(len(x), generator=torch.Generator().manual_seed(1))].float()
    assert sample_distances(perm, x)["w1"] == pytest.approx(0.0, abs=1e-5)


def test_subsample_is_seeded_and_keeps_small_sets_whole():
    x = _cells(50)
    assert subsample(x, 50) is x and subsample(x, 80) is x
    a, b = subsample(x, 20, seed=3), subsample(x, 20, seed=3)
    assert a.shape == (20, 2) and torch.equal(a, b)
    assert not torch.equal(a, subsample(x, 20, seed=4))
    assert len({tuple(r.tolist()) for r in a}) == 20  # distinct rows: drawn without replacement
    with pytest.raises(ValueError, match="cells must be a positive integer"):
        subsample(x, 0)


def test_snapshot_pair_takes_the_last_earlier_snapshot():
    c0, c1, c3, held = _cells(30, seed=0), _cells(40, seed=1), _cells(30, seed=2), _cells(25, seed=3)
    train = _points([0.0, 1.0, 3.0], [c0, c1, c3])
    pair = snapshot_pair(train, _points([2.0], [held]), cells=100)
    assert (pair.t_prev, pair.t_held) == (1.0, 2.0)
    assert torch.equal(pair.start, c1) and torch.equal(pair.target, held)
    small = snapshot_pair(train, _points([2.0], [held]), cells=10, seed=5)
    assert torch.equal(small.start, subsample(c1, 10, 5)) and torch.equal(small.target, subsample(held, 10, 5))
    with pytest.raises(ValueError, match="share one time"):
        snapshot_pair(train, _points([2.0, 2.5], [held, held]))
    with pytest.raises(ValueError, match="no training snapshot before t = 0"):
        snapshot_pair(train, _points([0.0], [held]))


def test_sampling_floor():
    same = torch.ones(10, 3, dtype=torch.float64)  # every half is the same measure
    assert sampling_floor(same)["w1"] == pytest.approx(0.0, abs=1e-12)
    x = _cells(400)
    a = sampling_floor(x, size=100, seed=0)
    assert a == sampling_floor(x, size=100, seed=0) and 0 < a["w1"] <= a["w2"]
    with pytest.raises(ValueError, match="at least 2 cells"):
        sampling_floor(x[:1])


def test_heldout_snapshot_scores_are_sample_distances_of_the_pair():
    """The scores ``probflux fit`` writes and what a benchmark computes from :func:`snapshot_pair` and
    :func:`sample_distances` for the same transported cells are the same numbers."""
    torch.manual_seed(0)
    dyn = pf.Dynamics(pf.FactorizedMixture(2, components=2, hidden=8, layers=1)).double()
    norm = Normalizer(0.0, 2.0, torch.tensor([1.0, -1.0], dtype=torch.float64), torch.tensor([2.0, 0.5], dtype=torch.float64))
    train = _points([0.0, 2.0], [_cells(60, seed=0), _cells(60, seed=1)])
    held = _points([1.0], [_cells(50, seed=2)])
    scores = heldout_snapshot_scores(dyn, norm, train, held, cells=40, steps=5, seed=7)
    pair = snapshot_pair(train, held, cells=40, seed=7)
    moved = pf.simulate(dyn, norm.x_to_model(pair.start), 0.0, 0.5, steps=5, method="euler")[-1]
    expect = sample_distances(norm.x_to_data(moved), pair.target)
    assert scores["heldout_w1_transport"] == pytest.approx(expect["w1"], rel=1e-9)
    assert scores["heldout_w2_transport"] == pytest.approx(expect["w2"], rel=1e-9)
    assert scores["heldout_time"] == 1.0 and scores["heldout_cells"] == 50


class _Translating(torch.nn.Module):
    """Stand-in dynamics: ``rho_t`` = a fixed point cloud translated by ``t c``, velocity ``c`` everywhere."""

    def __init__(self, base: torch.Tensor, c: torch.Tensor) -> None:
        super().__init__()
        self.c = torch.nn.Parameter(c)
        self.base = base
        self.density = self

    def sample(self, t: torch.Tensor) -> torch.Tensor:
        return self.base[torch.arange(len(t)) % len(self.base)] + t[:, None] * self.c

    def velocity(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.c.expand_as(x)


def test_kinetic_over_ot_is_one_for_a_translation():
    base, c = _cells(64), torch.tensor([0.6, -0.8], dtype=torch.float64)  # |c|^2 = 1
    times = [0.0, 0.25, 1.0]
    train = _points(times, [base + tk * c for tk in times])
    out = kinetic_over_ot(_Translating(base, c), train, samples=512, cells=64)
    assert out["kinetic_energy"] == pytest.approx(1.0, rel=1e-9)
    assert out["ot_bound"] == pytest.approx(1.0, rel=1e-7)  # |c dt|^2 / dt summed over the gaps
    assert out["kinetic_over_ot"] == pytest.approx(1.0, rel=1e-7)
    with pytest.raises(ValueError, match="at least 2 training snapshot times"):
        kinetic_over_ot(_Translating(base, c), _points([0.0], [base]))
