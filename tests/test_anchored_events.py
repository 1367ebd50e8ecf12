"""KernelMixture (densities/anchored_events.py): thousands of kernels normalised, the constant-weight flux in closed
form, chunking that changes no number, and the helpers. The generic contract runs through conftest.FAMILIES."""
from __future__ import annotations

import math

import pytest
import torch

import probflux as pf
from probflux.densities import KernelMixture
from probflux.densities.anchored_events import knn_bandwidth, split_anchors


def _perturbed(model: KernelMixture, scale: float = 0.3, seed: int = 0) -> KernelMixture:
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn_like(p))
    return model


def test_thousands_of_kernels_integrate_to_one():
    """2,000 kernels (bandwidths 0.2-0.3): the trapezoid rule on a grid of step 0.07 over +-6 is exact for Gaussians
    to ~exp(-2 pi^2 s^2 / h^2) (far below 1e-9), so the mass must be 1 to round-off, at two times.
    Also: the isotropic fast path of log_prob equals the generic product form."""
    torch.manual_seed(0)
    c = torch.randn(2000, 2, dtype=torch.float64)
    bw = 0.2 + 0.1 * torch.rand(2000, dtype=torch.float64)
    rho = _perturbed(KernelMixture(c, bandwidth=bw, rank=3, hidden=8, chunk_elements=2**18).double(), 0.2)
    g = torch.linspace(-6.3, 6.3, 181, dtype=torch.float64)
    h = float(g[1] - g[0])
    xy = torch.stack(torch.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)
    for t in (0.0, 0.7):
        with torch.no_grad():
            mass = float(rho.log_prob(t, xy).exp().sum()) * h * h
        assert abs(mass - 1) < 1e-9, (t, mass)
    rho.isotropic = False
    with torch.no_grad():
        generic = rho.log_prob(0.7, xy[::97])
    rho.isotropic = True
    assert torch.allclose(rho.log_prob(0.7, xy[::97]), generic, rtol=1e-12, atol=1e-12)


def test_constant_weight_flux_is_the_dilation_field():
    """With constant weights (A = 0) and time-varying bandwidths, both exact fluxes' mixture form reduces to
    ``j = sum_m pi_m N_m (s_m'/s_m)(x - mu_m)``; the "mixture" flux must equal it, and "kr" must satisfy continuity."""
    torch.manual_seed(1)
    rho = _perturbed(KernelMixture(torch.randn(40, 2), bandwidth=0.4, rank=2, hidden=8).double())
    with torch.no_grad():
        rho.A.zero_()
    t = torch.rand(30, dtype=torch.float64)
    x = rho.sample(t)
    (logits, loc, log_scale), (dlogits, _, dlog_scale) = rho._params_and_rates(t, None)
    assert float(dlogits.detach().abs().max()) == 0.0 and float(dlog_scale.detach().abs().max()) > 1e-3
    logits, loc, log_scale = rho._full((logits, loc, log_scale), 30)
    s = log_scale[..., 0].exp()
    d2 = ((x[:, None, :] - loc) ** 2).sum(-1)
    N = torch.exp(-d2 / (2 * s**2)) / (2 * math.pi * s**2)
    pi = torch.softmax(logits, -1)
    j = ((pi * N * dlog_scale[..., 0])[..., None] * (x[:, None, :] - loc)).sum(1)
    assert torch.allclose(rho.flux(t, x), j, rtol=1e-10, atol=1e-14)
    kr = KernelMixture(torch.randn(40, 2), bandwidth=0.4, rank=2, hidden=8, flux="kr").double()
    kr.load_state_dict(rho.state_dict())
    assert pf.continuity_residual(kr, t, x).relative.max() < 1e-10


@pytest.mark.parametrize("flux", ["mixture", "kr"])
def test_chunking_changes_no_number(flux):
    torch.manual_seed(2)
    big = _perturbed(KernelMixture(torch.randn(300, 2), bandwidth=0.3, rank=2, hidden=8, context_dim=2, flux=flux).double())
    small = KernelMixture(torch.randn(300, 2), bandwidth=0.3, rank=2, hidden=8, context_dim=2, flux=flux,
                          chunk_elements=1000).double()  # 1 row per chunk
    small.load_state_dict(big.state_dict())
    assert small._rows() == 1 and big._rows() > 50
    t, x, c = torch.rand(50, dtype=torch.float64), torch.randn(50, 2, dtype=torch.float64), torch.rand(50, 2, dtype=torch.float64)
    for f in ("log_prob", "velocity", "score", "cdf"):
        assert torch.allclose(getattr(small, f)(t, x, c), getattr(big, f)(t, x, c), rtol=1e-12, atol=1e-14), f
    u = big.cdf(t, x, c)
    assert torch.allclose(small.icdf(t, u, c), x, atol=1e-8)


def test_time_and_context_modulate_weights_and_bandwidths():
    torch.manual_seed(3)
    rho = _perturbed(KernelMixture(torch.randn(20, 2), bandwidth=0.3, rank=2, hidden=8, context_dim=1).double())
    x = torch.randn(5, 2, dtype=torch.float64)
    c0, c1 = torch.zeros(1, dtype=torch.float64), torch.ones(1, dtype=torch.float64)
    assert not torch.allclose(rho.log_prob(0.1, x, c0), rho.log_prob(0.9, x, c0))
    assert not torch.allclose(rho.log_prob(0.5, x, c0), rho.log_prob(0.5, x, c1))
    static = KernelMixture(torch.randn(20, 2), bandwidth=0.3, rank=0).double()
    assert torch.equal(static.log_prob(0.1, x), static.log_prob(0.9, x))
    assert float(static.velocity(0.3, x).detach().abs().max()) == 0.0  # nothing moves


def test_initial_density_is_the_kernel_density_estimate():
    c = torch.tensor([[0.0, 0.0], [1.0, 2.0]], dtype=torch.float64)
    rho = KernelMixture(c, bandwidth=torch.tensor([0.5, 0.25]), rank=3, hidden=4).double()
    x = torch.tensor([[0.3, -0.2]], dtype=torch.float64)
    want = 0.5 * sum(math.exp(-float(((x[0] - ci) ** 2).sum()) / (2 * s * s)) / (2 * math.pi * s * s)
                     for ci, s in zip(c, (0.5, 0.25)))
    assert abs(float(rho.log_prob(0.7, x).exp().detach()) - want) < 1e-6 * want


def test_helpers_and_bad_input():
    x = torch.randn(100, 2)
    ci, rest = split_anchors(x, 30, seed=1)
    assert len(ci) == 30 and len(rest) == 70 and not set(ci.tolist()) & set(rest.tolist())
    with pytest.raises(ValueError, match="kernels=100"):
        split_anchors(x, 100)
    bw = knn_bandwidth(torch.tensor([[0.0, 0.0], [1.0, 0.0], [3.0, 0.0]]), k=1)
    assert torch.allclose(bw, torch.tensor([1.0, 1.0, 2.0]))
    with pytest.raises(ValueError, match="centres"):
        KernelMixture(torch.randn(5))
    with pytest.raises(ValueError, match="bandwidth"):
        KernelMixture(torch.randn(5, 2), bandwidth=1e-4)
    with pytest.raises(ValueError, match="rank"):
        KernelMixture(torch.randn(5, 2), rank=-1)
    with pytest.raises(ValueError, match="flux"):
        KernelMixture(torch.randn(5, 2), flux="nope")
