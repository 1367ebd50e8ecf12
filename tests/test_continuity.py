"""The continuity equation d rho/dt + div j = 0 to round-off (float64): what tests/test_contract.py does not cover."""
from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import probflux as pf
from conftest import KINDS, make_density, make_divfree

TOL = 1e-8


def _points(model: pf.TimeDensity, n: int = 48, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Half the points from the model (where the flux matters), half from a broad Gaussian."""
    g = torch.Generator().manual_seed(seed)
    t = torch.rand(n, generator=g, dtype=torch.float64)
    torch.manual_seed(seed)
    x_model = model.sample(t[: n // 2])
    x_broad = 2.0 * torch.randn(n - n // 2, model.dim, generator=g, dtype=torch.float64)
    return t, torch.cat([x_model, x_broad])


@pytest.mark.parametrize("kind", KINDS)
def test_residual_density_3d(kind):
    """Dimensions 1, 2, 5 (and 3 with a context) of every family are in tests/test_contract.py."""
    model = make_density(kind, 3, seed=3)
    t, x = _points(model)
    r = pf.continuity_residual(model, t, x)
    assert torch.isfinite(r.residual).all()
    assert (r.scale > 0).all()
    assert r.relative.max() < TOL, r.relative.max()


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dim", [2, 5])
def test_residual_with_divergence_free(kind, dim):
    """(dim 3, with a context, for every family: tests/test_contract.py)"""
    model = make_density(kind, dim, seed=10 + dim)
    dyn = pf.Dynamics(model, diffusion=0.7, divergence_free=make_divfree(dim))
    t, x = _points(model, seed=1)
    r = pf.continuity_residual(dyn, t, x)
    assert r.relative.max() < TOL, r.relative.max()
    assert (dyn.flux(t, x) - model.flux(t, x)).abs().max() > 1e-3 * model.flux(t, x).abs().max()


def test_residual_at_time_endpoints():
    model = make_density("ar-kr", 2)
    x = model.sample(0.0, 16)
    for t in (0.0, 1.0):
        assert pf.continuity_residual(model, t, x).relative.max() < TOL


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    kind=st.sampled_from(KINDS),
    dim=st.integers(1, 4),
    components=st.integers(1, 5),
    hidden=st.sampled_from([4, 16, 33]),
    seed=st.integers(0, 10_000),
)
def test_residual_property(kind, dim, components, hidden, seed):
    model = make_density(kind, dim, components=components, hidden=hidden, seed=seed)
    t, x = _points(model, n=16, seed=seed)
    r = pf.continuity_residual(model, t, x)
    assert r.relative.max() < TOL


def test_residual_reports_a_broken_flux():
    """A model whose velocity is wrong gives a large residual: the check can fail."""

    class Broken(pf.FactorizedMixture):
        def _velocity(self, t, x, ctx):
            return super()._velocity(t, x, ctx) * 1.1

    torch.manual_seed(0)
    model = Broken(2, components=3, hidden=16).double()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    t, x = _points(model, n=16)
    assert pf.continuity_residual(model, t, x).relative.median() > 1e-3
