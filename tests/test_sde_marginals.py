"""docs/mathematics.md §8: simulating the ODE/SDE from rho_0 reproduces rho_1 (and back), for every family."""
from __future__ import annotations

import pytest
import torch
import torchsde

import probflux as pf
from conftest import KINDS, make_density, make_divfree

N = 1500


def energy_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """Squared energy distance ``2E|X-Y| - E|X-X'| - E|Y-Y'|`` (V-statistic)."""
    return float(2 * torch.cdist(a, b).mean() - torch.cdist(a, a).mean() - torch.cdist(b, b).mean())


def _moving_model(kind: str) -> pf.TimeDensity:
    """A random 2-D model whose marginals change a lot between t = 0 and t = 1."""
    model = make_density(kind, 2, components=3, hidden=32, seed=11, perturb=0.15)
    g = torch.Generator().manual_seed(12)
    with torch.no_grad():
        w = model.net.linears[-1].weight
        w.add_(0.25 * torch.randn(w.shape, generator=g, dtype=w.dtype))
    return model


def _check(x_end: torch.Tensor, model: pf.TimeDensity, t_end: float, x_start: torch.Tensor) -> None:
    torch.manual_seed(123)
    ref1, ref2 = model.sample(t_end, N), model.sample(t_end, N)
    noise = energy_distance(ref1, ref2)
    moved = energy_distance(x_start, ref1)
    got = energy_distance(x_end, ref1)
    assert moved > 10 * noise, "the model hardly moves: the test would be vacuous"
    assert got < 2.5 * noise, (got, noise, moved)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("g", [0.0, 0.8])
def test_sde_reproduces_marginal(kind, g):
    """Fast-moving mixtures, 200 steps (every family, slower-moving, 80 steps: tests/test_contract.py)."""
    model = _moving_model(kind)
    dyn = pf.Dynamics(model, diffusion=g)
    torch.manual_seed(0)
    x0 = model.sample(0.0, N)
    path = pf.simulate(dyn, x0, steps=200, generator=torch.Generator().manual_seed(1))
    assert path.shape == (201, N, 2) and torch.isfinite(path).all()
    _check(path[-1], model, 1.0, x0)


@pytest.mark.parametrize("kind", ["factorized-logistic-mixture", "ar-kr"])
def test_ode_dopri5_and_divergence_free(kind):
    model = _moving_model(kind)
    dyn = pf.Dynamics(model, divergence_free=make_divfree(2, perturb=0.3))
    torch.manual_seed(0)
    x0 = model.sample(0.0, N)
    path = pf.simulate(dyn, x0, steps=4, method="dopri5", rtol=1e-5, atol=1e-5)
    _check(path[-1], model, 1.0, x0)
    # the divergence-free term changes the trajectories but not the marginals
    plain = pf.simulate(model, x0, steps=4, method="dopri5", rtol=1e-5, atol=1e-5)
    assert (plain[-1] - path[-1]).norm(dim=-1).mean() > 0.05


def test_backward_in_time_sde():
    model = _moving_model("ar-kr")
    dyn = pf.Dynamics(model, diffusion=lambda t: 0.5 + 0.5 * t)
    torch.manual_seed(0)
    x1 = model.sample(1.0, N)
    path = pf.simulate(dyn, x1, t0=1.0, t1=0.0, steps=100, generator=torch.Generator().manual_seed(2))
    _check(path[-1], model, 0.0, x1)


def test_torchsde_adapter():
    model = _moving_model("factorized-gaussian-kr")
    dyn = pf.Dynamics(model, diffusion=0.6)
    torch.manual_seed(0)
    x0 = model.sample(0.0, N)
    ts = torch.linspace(0, 1, 3, dtype=torch.float64)
    with torch.no_grad():
        ys = torchsde.sdeint(dyn.as_sde(), x0, ts, method="euler", dt=0.005)
    assert ys.shape == (3, N, 2)
    _check(ys[-1], model, 1.0, x0)
