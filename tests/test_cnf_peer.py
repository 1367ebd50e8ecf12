"""The time-varying CNF baseline of the events benchmark (``benchmarks/peers/cnf_stpp.py``): a correct density."""
from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest
import torch

pytest.importorskip("torchdiffeq")

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "peers" / "cnf_stpp.py"
_spec = importlib.util.spec_from_file_location("cnf_stpp", _PATH)
cnf = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cnf)


def test_zero_initialised_field_gives_the_base_gaussian() -> None:
    torch.manual_seed(0)
    m = cnf.TimeVaryingCNF(2).double()
    with torch.no_grad():
        m.z_mean.copy_(torch.tensor([0.5, -1.0]))
        m.z_logstd.copy_(torch.tensor([0.2, -0.3]))
    x = torch.randn(50, 2, dtype=torch.float64)
    t = torch.rand(50, dtype=torch.float64) * 30
    base = torch.distributions.Normal(m.z_mean, m.z_logstd.exp())
    assert torch.allclose(m.log_prob(t, x), base.log_prob(x).sum(-1), atol=1e-12)


def test_perturbed_cnf_density_is_normalised() -> None:
    """Exact trace + tight dopri5 tolerance: rho integrates to 1 (measured 1 + 4e-8 on this grid)."""
    torch.manual_seed(1)
    m = cnf.TimeVaryingCNF(2, hidden=(16, 16), tol=1e-7).double().eval()
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.1 * torch.randn_like(p))
    g = torch.linspace(-8, 8, 161, dtype=torch.float64)
    X, Y = torch.meshgrid(g, g, indexing="ij")
    pts = torch.stack([X.reshape(-1), Y.reshape(-1)], 1)
    with torch.no_grad():
        mass = m.log_prob(torch.full((pts.shape[0],), 3.0, dtype=torch.float64), pts).exp().sum() * (g[1] - g[0]) ** 2
    assert float(mass) == pytest.approx(1.0, abs=1e-4)


def test_fit_cnf_lowers_the_nll_and_respects_the_budget() -> None:
    torch.manual_seed(2)
    x = torch.randn(512, 2) * torch.tensor([2.0, 0.5]) + torch.tensor([1.0, 0.0])
    t = torch.rand(512) * 5
    before = -cnf.cnf_mean_log_likelihood(cnf.TimeVaryingCNF(2), t, x)
    model, info = cnf.fit_cnf(t, x, seconds=60.0, steps=25, batch=256, lr=1e-2, seed=0)
    after = -cnf.cnf_mean_log_likelihood(model, t, x)
    assert info["steps"] == 25 and info["seconds"] > 0
    assert after < before - 0.2, (before, after)
    # the true data entropy (independent Gaussians): 0.5 log(2 pi e)*2 + log 2 + log 0.5
    assert after > 2 * 0.5 * math.log(2 * math.pi * math.e) - 0.2
