"""Implicit reparameterisation (docs/mathematics.md §6): gradients of E[phi(x)] through samples are exact."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import integrate

import probflux as pf
from conftest import KINDS, make_density


def phi(x: torch.Tensor) -> torch.Tensor:
    return (torch.sin(1.3 * x) + 0.2 * x**2).sum(-1) + x[:, 0] * x[:, -1]


def _directional_fd(model: pf.TimeDensity, f, direction: list[torch.Tensor], eps: float = 1e-6) -> float:
    params = list(model.parameters())
    with torch.no_grad():
        for p, v in zip(params, direction):
            p.add_(eps * v)
        up = float(f())
        for p, v in zip(params, direction):
            p.sub_(2 * eps * v)
        down = float(f())
        for p, v in zip(params, direction):
            p.add_(eps * v)
    return (up - down) / (2 * eps)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dim", [1])
def test_reparameterised_gradient_equals_finite_difference(kind, dim):
    """With the uniforms ``u`` held fixed, ``x = icdf_theta(u)`` is a smooth map of the parameters and
    ``reparameterize`` must give exactly its derivative. (D = 3 for every family: tests/test_contract.py.)"""
    model = make_density(kind, dim, components=3, seed=21)
    g = torch.Generator().manual_seed(0)
    u = torch.rand(64, dim, generator=g, dtype=torch.float64)
    t = torch.rand(64, generator=g, dtype=torch.float64)

    def objective() -> torch.Tensor:
        return phi(model.icdf(t, u)).mean()

    x = model.reparameterize(t, model.icdf(t, u))
    assert torch.allclose(x, model.icdf(t, u))
    model.zero_grad()
    phi(x).mean().backward()
    torch.manual_seed(5)
    for _ in range(2):
        v = [torch.randn_like(p) for p in model.parameters()]
        analytic = sum(float((p.grad * vv).sum()) for p, vv in zip(model.parameters(), v) if p.grad is not None)
        fd = _directional_fd(model, objective, v)
        assert abs(analytic - fd) < 1e-6 * (1 + abs(fd)), (analytic, fd)


@pytest.mark.parametrize("kind", ["factorized-logistic-kr", "ar-kr"])
def test_rsample_gradient_matches_quadrature(kind):
    """Monte Carlo ``rsample`` gradient of ``E_rho_t[phi]`` vs finite differences of the 1-D integral."""
    model = make_density(kind, 1, components=3, seed=3)
    t = 0.4
    grid = np.linspace(-40, 40, 8001)
    pts = torch.tensor(grid).unsqueeze(-1)

    @torch.no_grad()
    def expectation() -> torch.Tensor:
        rho = model.log_prob(t, pts).exp().numpy()
        return torch.tensor(integrate.simpson(rho * phi(pts).numpy(), x=grid))

    torch.manual_seed(0)
    x = model.rsample(t, 100_000)
    model.zero_grad()
    vals = phi(x)
    vals.mean().backward()
    v = [torch.randn_like(p) for p in model.parameters()]
    analytic = sum(float((p.grad * vv).sum()) for p, vv in zip(model.parameters(), v) if p.grad is not None)
    fd = _directional_fd(model, expectation, v, eps=1e-5)
    # Monte Carlo standard error of the directional gradient, from per-sample gradients of a few chunks
    chunks = []
    for chunk in torch.split(torch.arange(100_000), 2_000):
        model.zero_grad()
        xs = model.reparameterize(t, x.detach()[chunk])
        phi(xs).mean().backward()
        chunks.append(sum(float((p.grad * vv).sum()) for p, vv in zip(model.parameters(), v) if p.grad is not None))
    se = float(np.std(chunks) / np.sqrt(len(chunks)))
    assert abs(analytic - fd) < 5 * se + 1e-8, (analytic, fd, se)
    assert abs(fd) > 4 * se  # the gradient is resolved, not noise


@pytest.mark.parametrize("kind", KINDS)
def test_sample_shapes_times_and_gradient_flow(kind):
    model = make_density(kind, 2, components=3)
    t = torch.rand(32, dtype=torch.float64)
    x = model.sample(t)
    assert x.shape == (32, 2) and not x.requires_grad
    assert model.sample(0.5, 7).shape == (7, 2)
    xr = model.rsample(t)
    assert xr.shape == (32, 2) and xr.requires_grad
    xr.pow(2).sum().backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(gr).all() for gr in grads)
    assert sum(float(gr.abs().sum()) for gr in grads) > 0


@pytest.mark.parametrize("kind", KINDS)
def test_rosenblatt_roundtrip_and_uniformity(kind):
    model = make_density(kind, 3, components=3, seed=8)
    torch.manual_seed(0)
    t = torch.rand(4000, dtype=torch.float64)
    x = model.sample(t)
    u = model.cdf(t, x).detach()
    assert ((u > 0) & (u < 1)).all()
    # the Rosenblatt transform of exact samples is uniform on the cube: KS per coordinate
    from scipy.stats import kstest

    for d in range(3):
        assert kstest(u[:, d].numpy(), "uniform").pvalue > 1e-3
    x_back = model.icdf(t, u)
    assert torch.allclose(x_back, x, atol=1e-8, rtol=1e-8)
