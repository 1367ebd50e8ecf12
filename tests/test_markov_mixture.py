"""MarkovMixture (stpp/markov_mixture.py): the Hawkes-weighted mixture in closed form on a toy history, causal, and
k-means initial components. The generic contract (exact flux, normalisation, SDE, rsample) runs through
conftest.FAMILIES."""
from __future__ import annotations

import math

import torch

from probflux.data.events import EventSequences
from probflux.stpp import history_at, model_points
from probflux.stpp.markov_mixture import MarkovMixture, kmeans_components

F64 = torch.float64


def _model() -> MarkovMixture:
    loc = torch.tensor([[0.0, 0.0], [2.0, 1.0]], dtype=F64)
    rho = MarkovMixture(loc, torch.log(torch.tensor([[0.5, 0.7], [0.3, 0.4]], dtype=F64)), torch.log(torch.tensor([0.4, 0.6])),
                        events=2, decays=(2.0,)).double()
    with torch.no_grad():  # float64 values (the constructor rounds to the default float32)
        rho.log_scale.copy_(torch.log(torch.tensor([[0.5, 0.7], [0.3, 0.4]], dtype=F64)))
        rho.base.copy_(torch.log(torch.tensor([0.4, 0.6], dtype=F64)))
        rho.log_decay.fill_(math.log(2.0))
        rho.gamma.fill_(0.5)
        rho.W.copy_(torch.tensor([[[-1.0, 1.0], [0.5, -2.0]]], dtype=F64))
    return rho


def _normal(x, mu, sd) -> float:
    return math.prod(math.exp(-0.5 * ((a - m) / s) ** 2) / (s * math.sqrt(2 * math.pi)) for a, m, s in zip(x, mu, sd))


def test_hawkes_weights_closed_form() -> None:
    rho = _model()
    mu, sd, base = [(0.0, 0.0), (2.0, 1.0)], [(0.5, 0.7), (0.3, 0.4)], [0.4, 0.6]
    W = [[-1.0, 1.0], [0.5, -2.0]]
    seqs = EventSequences([torch.tensor([[1.0, 0.1, 0.2], [4.0, 1.8, 0.9]], dtype=F64)], window=(0.0, 10.0))
    tq, x = 6.0, (1.0, 0.5)
    ctx = history_at(seqs, seqs.keys[0], torch.tensor([tq], dtype=F64), events=2)
    lam = list(base)
    for tj, xj in ((1.0, (0.1, 0.2)), (4.0, (1.8, 0.9))):
        r = [base[c] * _normal(xj, mu[c], sd[c]) for c in range(2)]
        r = [v / sum(r) for v in r]
        kappa = math.exp(0.5 - 2.0 * (tq - tj) / 10.0)
        lam = [lam[m] + kappa * sum(r[c] * math.exp(W[c][m]) for c in range(2)) for m in range(2)]
    want = sum(lam[m] * _normal(x, mu[m], sd[m]) for m in range(2)) / sum(lam)
    with torch.no_grad():
        got = rho.log_prob(torch.tensor([tq / 10.0], dtype=F64), torch.tensor([x], dtype=F64), ctx)
    assert abs(float(got) - math.log(want)) < 1e-12


def test_a_future_event_changes_no_earlier_density() -> None:
    rho = _model()
    rows = [[1.0, 0.1, 0.2], [4.0, 1.8, 0.9]]
    before = EventSequences([torch.tensor(rows, dtype=F64)], window=(0.0, 10.0))
    after = EventSequences([torch.tensor(rows + [[7.0, -1.0, 0.0]], dtype=F64)], window=(0.0, 10.0))
    tq, x = torch.tensor([0.5, 1.0, 4.0, 6.9], dtype=F64), torch.randn(4, 2, dtype=F64)
    lp0 = rho.log_prob(tq / 10, x, history_at(before, before.keys[0], tq, events=2))
    lp1 = rho.log_prob(tq / 10, x, history_at(after, after.keys[0], tq, events=2))
    assert torch.equal(lp0, lp1)
    P = model_points(after, 2)
    assert torch.isfinite(rho.log_prob(P.t, P.x, P.context)).all()


def test_kmeans_components() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.cat([torch.randn(200, 2, generator=g, dtype=F64) * 0.1 + c for c in (torch.tensor([-3.0, 0.0]), torch.tensor([3.0, 1.0]))])
    loc, log_scale, log_w = kmeans_components(x, 2, seed=0)
    order = loc[:, 0].argsort()
    assert torch.allclose(loc[order], torch.tensor([[-3.0, 0.0], [3.0, 1.0]], dtype=F64), atol=0.05)
    assert torch.allclose(log_scale.exp(), torch.full((2, 2), 0.1, dtype=F64), atol=0.03)
    assert torch.allclose(log_w.exp(), torch.full((2,), 0.5, dtype=F64))
