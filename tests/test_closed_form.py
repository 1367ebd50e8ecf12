"""Closed forms: Gaussian paths, constant-weight mixtures, 1-D fluxes, 2-D divergence-free flux,
and velocities that stay finite where rho underflows."""
from __future__ import annotations

import math

import pytest
import torch

import probflux as pf
from conftest import KINDS, make_density

f64 = torch.float64


class KnownPath(pf.FactorizedMixture):
    """A mixture whose parameters are given functions of time (no network): exact rates by jvp."""

    def __init__(self, dim, family, logits_fn, loc_fn, log_scale_fn, flux="kr"):
        super().__init__(dim, components=logits_fn(torch.zeros(1, dtype=f64)).shape[-1], hidden=4, family=family, flux=flux, layers=1)
        self.double()
        self.fns = (logits_fn, loc_fn, log_scale_fn)

    def _params(self, t, ctx):
        return tuple(f(t) for f in self.fns)

    def _params_and_rates(self, t, ctx):
        outs = [torch.func.jvp(f, (t,), (torch.ones_like(t),)) for f in self.fns]
        return tuple(o[0] for o in outs), tuple(o[1] for o in outs)


def gaussian_path(dim: int, family: str = "gaussian", flux: str = "kr") -> KnownPath:
    a = torch.linspace(0.5, 1.5, dim, dtype=f64)

    def loc(t):  # m(t) = (sin(a t) + t^2) per coordinate, shape (N, 1, D)
        return (torch.sin(a * t[:, None]) + t[:, None] ** 2)[:, None, :]

    def log_scale(t):  # log s(t) = 0.3 a t - 0.1
        return (0.3 * a * t[:, None] - 0.1)[:, None, :]

    return KnownPath(dim, family, lambda t: torch.zeros(t.shape[0], 1, dtype=f64), loc, log_scale, flux)


@pytest.mark.parametrize("family", ["gaussian", "logistic"])
@pytest.mark.parametrize("flux", ["kr", "mixture"])
@pytest.mark.parametrize("dim", [1, 3])
def test_one_component_velocity_is_affine(family, flux, dim):
    """One component: ``u = m' + (s'/s)(x - m)`` per coordinate (each coordinate's quantile map)."""
    model = gaussian_path(dim, family, flux)
    a = torch.linspace(0.5, 1.5, dim, dtype=f64)
    g = torch.Generator().manual_seed(0)
    t = torch.rand(200, generator=g, dtype=f64)
    x = 3 * torch.randn(200, dim, generator=g, dtype=f64)
    m = torch.sin(a * t[:, None]) + t[:, None] ** 2
    dm = a * torch.cos(a * t[:, None]) + 2 * t[:, None]
    dlog_s = 0.3 * a
    expected = dm + dlog_s * (x - m)
    torch.testing.assert_close(model.velocity(t, x), expected, rtol=1e-12, atol=1e-12)
    # and the drift adds (g^2/2) times the closed-form score
    if family == "gaussian":
        s2 = torch.exp(2 * (0.3 * a * t[:, None] - 0.1))
        dyn = pf.Dynamics(model, diffusion=0.7)
        torch.testing.assert_close(dyn.drift(t, x), expected - 0.5 * 0.49 * (x - m) / s2, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("flux", ["kr", "mixture"])
def test_one_component_velocity_far_out_float32(flux):
    """Affine in x even where rho underflows (float32, |x| = 1e4): no NaN, no inf."""
    model = gaussian_path(2, "gaussian", flux).float()
    model.fns = tuple((lambda t, fn=fn: fn(t.double()).float()) for fn in model.fns)
    x = torch.tensor([[1e4, 0.0], [0.0, -1e4], [1e4, -1e4]], dtype=torch.float32)
    assert torch.isneginf(model.log_prob(0.5, x)).all() or (model.log_prob(0.5, x) < -1e6).all()
    u = model.velocity(0.5, x)
    assert torch.isfinite(u).all()


def test_constant_weights_mixture_velocity_is_posterior_average():
    """docs/mathematics.md §3: constant weights ``gamma_k`` give ``u = sum_k (gamma_k rho_k / rho) u_k`` with the
    component velocities ``u_k`` — that is the ``mixture`` flux; the KR flux differs but is also exact."""
    K, D = 3, 2
    locs0 = torch.tensor([[-2.0, 0.0], [1.0, 1.0], [0.0, -2.0]], dtype=f64)
    vel = torch.tensor([[1.0, 0.5], [-0.5, 1.0], [0.3, -0.7]], dtype=f64)
    logits = torch.tensor([0.2, -0.1, 0.4], dtype=f64)
    model = KnownPath(
        D, "logistic",
        lambda t: logits.expand(t.shape[0], K),
        lambda t: locs0 + vel * t[:, None, None],
        lambda t: torch.full((t.shape[0], K, D), -0.3, dtype=f64) + 0.2 * t[:, None, None],
        flux="mixture",
    )
    g = torch.Generator().manual_seed(1)
    t = torch.rand(100, generator=g, dtype=f64)
    x = 2 * torch.randn(100, D, generator=g, dtype=f64)
    mu = locs0 + vel * t[:, None, None]
    z = (x[:, None] - mu) / math.exp(1) ** (-0.3 + 0.2 * t[:, None, None])
    post = torch.softmax(torch.log_softmax(logits, -1) + pf.densities.mixture1d.Logistic.log_pdf(z).sum(-1), -1)
    u_k = vel + 0.2 * (x[:, None] - mu)  # each component translates and dilates
    torch.testing.assert_close(model.velocity(t, x), (post[..., None] * u_k).sum(1), rtol=1e-10, atol=1e-12)
    model.flux_name = "kr"
    assert pf.continuity_residual(model, t, x).relative.max() < 1e-8


@pytest.mark.parametrize("flux", ["kr", "sigmoid"])
def test_autoregressive_1d_flux_is_minus_dF_dt(flux):
    model = make_density(f"ar-{flux}", 1, components=4, seed=2)
    g = torch.Generator().manual_seed(0)
    t = torch.rand(64, generator=g, dtype=f64).requires_grad_(True)
    x = 3 * torch.randn(64, 1, generator=g, dtype=f64)
    (dF,) = torch.autograd.grad(model.cdf(t, x).sum(), t)
    torch.testing.assert_close(model.flux(t.detach(), x)[:, 0], -dF, rtol=1e-10, atol=1e-14)


def test_kr_and_sigmoid_share_the_density_but_not_the_velocity():
    kr = make_density("ar-kr", 2, seed=4)
    sig = make_density("ar-sigmoid", 2, seed=4)
    t = torch.rand(50, dtype=f64)
    x = kr.sample(t)
    torch.testing.assert_close(kr.log_prob(t, x), sig.log_prob(t, x))
    assert (kr.velocity(t, x) - sig.velocity(t, x)).abs().max() > 1e-3


def test_divergence_free_2d_is_perp_grad():
    """In 2-D, ``S = [[0, s], [-s, 0]]`` and the added flux is ``(d_2 (rho s), -d_1 (rho s))``."""
    from conftest import make_divfree

    model = make_density("ar-kr", 2, seed=1)
    df = make_divfree(2)
    dyn = pf.Dynamics(model, divergence_free=df)
    g = torch.Generator().manual_seed(0)
    t = torch.rand(40, generator=g, dtype=f64)
    x = model.sample(t).requires_grad_(True)
    rho_s = model.log_prob(t, x).exp() * df.matrix(t, x)[:, 0, 1]
    (grad,) = torch.autograd.grad(rho_s.sum(), x)
    extra = dyn.flux(t, x) - model.flux(t, x)
    torch.testing.assert_close(extra, torch.stack([grad[:, 1], -grad[:, 0]], -1), rtol=1e-9, atol=1e-13)
    # antisymmetry, and a fresh module adds nothing
    S = df.matrix(t, x.detach())
    torch.testing.assert_close(S, -S.transpose(1, 2))
    fresh = pf.Dynamics(model, divergence_free=pf.DivergenceFree(2).double())
    torch.testing.assert_close(fresh.velocity(t, x.detach()), model.velocity(t, x.detach()))


@pytest.mark.parametrize("kind", KINDS)
def test_score_matches_autograd(kind):
    model = make_density(kind, 3, seed=7)
    t = torch.rand(30, dtype=f64)
    x = (model.sample(t) + 0.5 * torch.randn(30, 3, dtype=f64)).requires_grad_(True)
    (g,) = torch.autograd.grad(model.log_prob(t, x).sum(), x)
    torch.testing.assert_close(model.score(t, x.detach()), g, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kind", [k for k in KINDS if "mixture" not in k])
def test_velocity_finite_where_rho_underflows(kind):
    """float64 with log rho < -745 (rho == 0): the velocity is still a finite number."""
    model = make_density(kind, 3, seed=9)
    torch.manual_seed(0)
    t = torch.rand(16, dtype=f64)
    x = model.sample(t)
    x[:8, 0] = 2000.0
    x[8:, 2] = -2000.0
    assert (model.log_prob(t, x).exp() == 0).all()
    u = model.velocity(t, x)
    assert torch.isfinite(u).all(), u


@pytest.mark.parametrize("kind", KINDS)
def test_gradients_of_velocity_are_finite_in_training(kind):
    """Kinetic energy E|u|^2 through rsample backpropagates to finite parameter gradients (float32)."""
    model = make_density(kind, 3, seed=10).float()
    t = torch.rand(256)
    x = model.rsample(t)
    loss = model.velocity(t, x).pow(2).sum(-1).mean() - model.log_prob(t, x.detach()).mean()
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
