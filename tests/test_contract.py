"""The density contract, run over every TimeDensity the package ships (conftest.FAMILIES: one line per family).

Each family is built small, in float64, with perturbed parameters, and must pass: the continuity equation to
round-off (autograd), normalisation by quadrature in 2-D, a flux that vanishes with one coordinate far out,
SDE simulation reproducing rho_1, exact rsample gradients (finite differences), its declared capabilities
(Rosenblatt transforms, kinetic energy), a state_dict round trip, and dtype/device moves.
"""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from scipy import integrate

import probflux as pf
from conftest import FAMILIES, make_density, make_divfree, random_context
from test_rsample import _directional_fd, phi

NAMES = list(FAMILIES)
TOL = 1e-8


def _points(model: pf.TimeDensity, n: int = 32, seed: int = 0):
    """Times, points (half from the model, half from a broad Gaussian) and contexts."""
    g = torch.Generator().manual_seed(seed)
    t = torch.rand(n, generator=g, dtype=torch.float64)
    ctx = random_context(model, n, seed)
    torch.manual_seed(seed)
    x_model = model.sample(t[: n // 2], context=None if ctx is None else ctx[: n // 2])
    x_broad = 2.0 * torch.randn(n - n // 2, model.dim, generator=g, dtype=torch.float64)
    return t, torch.cat([x_model, x_broad]), ctx


def energy_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """Squared energy distance ``2E|X-Y| - E|X-X'| - E|Y-Y'|`` (V-statistic)."""
    return float(2 * torch.cdist(a, b).mean() - torch.cdist(a, a).mean() - torch.cdist(b, b).mean())


# ------------------------------------------------------------------ exactness
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dim", [1, 2, 5])
def test_continuity_residual(name, dim):
    model = make_density(name, dim, seed=dim)
    t, x, ctx = _points(model)
    r = pf.continuity_residual(model, t, x, ctx)
    assert torch.isfinite(r.residual).all() and (r.scale > 0).all()
    assert r.relative.max() < TOL, r.relative.max()


@pytest.mark.parametrize("name", NAMES)
def test_continuity_with_context_diffusion_and_divergence_free(name):
    model = make_density(name, 3, context_dim=4, seed=5)
    t, x, ctx = _points(model, seed=1)
    assert pf.continuity_residual(model, t, x, ctx).relative.max() < TOL
    assert not torch.allclose(model.log_prob(t, x, ctx), model.log_prob(t, x, ctx.flip(0)))  # the context matters
    dyn = pf.Dynamics(model, diffusion=0.7, divergence_free=make_divfree(3, context_dim=model.context_dim))
    assert pf.continuity_residual(dyn, t, x, ctx).relative.max() < TOL
    # the divergence-free part really changes the flux (so the check above is not vacuous)
    j = model.flux(t, x, ctx)
    assert (dyn.flux(t, x, ctx) - j).abs().max() > 1e-3 * j.abs().max()


@pytest.mark.parametrize("name", NAMES)
def test_normalised_in_2d(name):
    """Composite Simpson on a 401^2 grid spanning +-12 sample standard deviations around the sample mean.

    Smooth densities integrate to 1 within 1e-6 (measured <= 1e-9; logistic tails beyond 12 sd ~ 1e-10).
    Spline couplings have kinks in the density's derivative, where Simpson is only O(h^2) (measured 1.6e-4):
    1e-3 here; tests/test_flow.py integrates a spline flow exactly (pieces ending at the knots) to 1e-9."""
    model = make_density(name, 2, seed=4)
    tol = 1e-3 if name == "flow-spline" else 1e-6
    ctx = random_context(model, 1, seed=3)
    c = None if ctx is None else ctx[0]
    for t in (0.0, 0.5, 1.0):
        torch.manual_seed(0)
        s = model.sample(t, 2000, c)
        axes = [(m + sd * torch.linspace(-12, 12, 401, dtype=torch.float64)).numpy() for m, sd in zip(s.mean(0), s.std(0))]
        xx, yy = np.meshgrid(*axes, indexing="ij")
        with torch.no_grad():
            rho = model.log_prob(t, torch.tensor(np.stack([xx.ravel(), yy.ravel()], -1)), c).exp().numpy().reshape(xx.shape)
        mass = integrate.simpson(integrate.simpson(rho, x=axes[1], axis=1), x=axes[0])
        assert abs(mass - 1) < tol, (t, mass)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("side", [-50.0, 50.0])
def test_flux_vanishes_with_one_coordinate_far_out(name, side):
    dim = 3
    model = make_density(name, dim, seed=6)
    torch.manual_seed(1)
    t_in = torch.rand(128, dtype=torch.float64)
    ctx = random_context(model, 128, seed=2)
    j_in = model.flux(t_in, model.sample(t_in, context=ctx), ctx).abs().max()
    assert j_in > 1e-3  # the flux is not trivially zero inside the mass
    for coord in range(dim):
        torch.manual_seed(0)
        x = model.sample(t_in, context=ctx)
        x[:, coord] = side
        j = model.flux(t_in, x, ctx)
        assert torch.isfinite(j).all() and torch.isfinite(model.velocity(t_in, x, ctx)).all()
        assert j.abs().max() < 1e-12 * j_in, (coord, j.abs().max())


@pytest.mark.parametrize("name", NAMES)
def test_sde_reproduces_rho_1(name):
    """Euler–Maruyama (g = 0.8, 80 steps) from rho_0 lands on rho_1: its energy distance to 500 exact samples of
    rho_1 is within 2.5x that of a second exact sample (the sampling floor; measured <= 1.3x for every family),
    and the start is farther (measured 2x to 90x the floor). tests/test_sde_marginals.py checks faster-moving
    mixtures with more steps, the ODE, backward time and the torchsde adapter."""
    n = 500
    model = make_density(name, 2, seed=11, perturb=0.15)
    ctx = random_context(model, 1, seed=3)
    c = None if ctx is None else ctx[0]
    torch.manual_seed(0)
    x0 = model.sample(0.0, n, c)
    path = pf.simulate(pf.Dynamics(model, diffusion=0.8), x0, steps=80, context=c, generator=torch.Generator().manual_seed(1))
    assert path.shape == (81, n, 2) and torch.isfinite(path).all()
    torch.manual_seed(123)
    ref1, ref2 = model.sample(1.0, n, c), model.sample(1.0, n, c)
    floor, got, moved = energy_distance(ref1, ref2), energy_distance(path[-1], ref1), energy_distance(x0, ref1)
    assert got < 2.5 * floor, (got, floor)
    assert moved > 1.5 * got, (moved, got)


# ------------------------------------------------------------------ gradients through samples
@pytest.mark.parametrize("name", NAMES)
def test_rsample_gradient_equals_finite_difference(name):
    """With the randomness held fixed, samples are a smooth map of the parameters and their gradient is exact:
    the uniforms ``u`` of ``icdf`` for a Rosenblatt family (implicit reparameterisation), the seed otherwise."""
    model = make_density(name, 3, seed=21)
    g = torch.Generator().manual_seed(0)
    t = torch.rand(48, generator=g, dtype=torch.float64)
    ctx = random_context(model, 48, seed=1)
    if model.has_rosenblatt:
        u = torch.rand(48, 3, generator=g, dtype=torch.float64)

        def draw() -> torch.Tensor:
            return model.icdf(t, u, ctx)

        x = model.reparameterize(t, draw(), ctx)
    else:
        def draw() -> torch.Tensor:
            torch.manual_seed(7)
            return model.sample(t, context=ctx)

        torch.manual_seed(7)
        x = model.rsample(t, context=ctx)
    assert x.shape == (48, 3) and x.requires_grad
    assert torch.allclose(x, draw())
    model.zero_grad()
    phi(x).mean().backward()
    grads = [torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in model.parameters()]
    assert all(torch.isfinite(gr).all() for gr in grads) and sum(float(gr.abs().sum()) for gr in grads) > 0
    # reparameterize(t, x_hat) attaches the same gradient to the same samples
    model.zero_grad()
    phi(model.reparameterize(t, x.detach(), ctx)).mean().backward()
    for a, p in zip(grads, model.parameters()):
        assert torch.allclose(a, torch.zeros_like(p) if p.grad is None else p.grad, atol=1e-9)
    torch.manual_seed(5)
    for _ in range(2):
        v = [torch.randn_like(p) for p in model.parameters()]
        analytic = sum(float((gr * vv).sum()) for gr, vv in zip(grads, v))
        fd = _directional_fd(model, lambda: phi(draw()).mean(), v)
        assert abs(analytic - fd) < 1e-6 * (1 + abs(fd)), (analytic, fd)


# ------------------------------------------------------------------ declared capabilities
@pytest.mark.parametrize("name", NAMES)
def test_declared_capabilities(name):
    model = make_density(name, 2, seed=3)
    t, x, ctx = _points(model, 8)
    if model.has_rosenblatt:
        u = model.cdf(t, x, ctx)
        assert u.shape == (8, 2) and ((u > 0) & (u < 1)).all()
        assert torch.allclose(model.icdf(t, u, ctx), x, atol=1e-8)
    else:
        for call in (lambda: model.cdf(t, x, ctx), lambda: model.icdf(t, torch.full_like(x, 0.5), ctx)):
            with pytest.raises(NotImplementedError, match=f"{type(model).__name__} has no Rosenblatt transform"):
                call()


@pytest.mark.parametrize("name", NAMES)
def test_kinetic_energy_estimates_the_mean_squared_velocity(name):
    """``kinetic_energy(t, n)`` per draw, differentiable, with the mean of ``|u_t|^2`` at independent exact samples
    (within 4 standard errors of the difference)."""
    model = make_density(name, 2, seed=9)
    c = random_context(model, 1, seed=4)
    c = None if c is None else c[0]
    torch.manual_seed(0)
    k = model.kinetic_energy(0.4, 3000, c)
    assert k.shape == (3000,) and k.requires_grad and (k >= 0).all()
    x = model.sample(0.4, 3000, c)
    v = model.velocity(0.4, x, c).pow(2).sum(-1).detach()
    kd = k.detach()
    se = float((kd.var() / 3000 + v.var() / 3000) ** 0.5)
    assert abs(float(kd.mean() - v.mean())) < 4 * se + 1e-12, (float(kd.mean()), float(v.mean()), se)


def test_conditioned_forwards_the_flow_fast_path():
    """A conditioned flow's kinetic energy is the inner flow's |d/dt T_t(z)|^2 at the encoded context (same draws)."""
    model = make_density("conditioned-flow", 2, seed=2)
    t = torch.rand(16, dtype=torch.float64)
    ctx = random_context(model, 16)
    torch.manual_seed(3)
    k = model.kinetic_energy(t, context=ctx)
    torch.manual_seed(3)
    inner = model.density.kinetic_energy(t, context=model.encoder(ctx))
    assert torch.equal(k, inner)
    assert not model.has_rosenblatt and make_density("conditioned-mixture", 2).has_rosenblatt


# ------------------------------------------------------------------ state, dtype, device
@pytest.mark.parametrize("name", NAMES)
def test_state_dict_round_trip(name):
    model, other = make_density(name, 2, seed=1), make_density(name, 2, seed=2)
    t, x, ctx = _points(model, 8)
    assert not torch.allclose(model.log_prob(t, x, ctx), other.log_prob(t, x, ctx))
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    other.load_state_dict(torch.load(buffer, weights_only=True))
    assert torch.equal(model.log_prob(t, x, ctx), other.log_prob(t, x, ctx))
    assert torch.equal(model.velocity(t, x, ctx), other.velocity(t, x, ctx))


@pytest.mark.parametrize("name", NAMES)
def test_dtype_and_device_moves(name):
    model = make_density(name, 2, seed=1)
    t, x, ctx = _points(model, 8)
    ref = model.log_prob(t, x, ctx)
    assert model.dtype == torch.float64 and ref.dtype == torch.float64
    f32 = make_density(name, 2, seed=1).float()
    assert f32.dtype == torch.float32
    out = f32.log_prob(t.float(), x.float(), None if ctx is None else ctx.float())
    assert out.dtype == torch.float32 and torch.allclose(out.double(), ref, rtol=1e-4, atol=1e-4)
    with pytest.raises(TypeError, match="x has dtype torch.float64"):
        f32.log_prob(t, x, ctx)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for device in devices:
        moved = make_density(name, 2, seed=1).to(device)
        assert moved.device.type == device
        got = moved.log_prob(t.to(device), x.to(device), None if ctx is None else ctx.to(device))
        assert got.device.type == device and torch.allclose(got.cpu(), ref, atol=1e-10)
        assert moved.sample(0.5, 4, None if ctx is None else ctx[0].to(device)).device.type == device
