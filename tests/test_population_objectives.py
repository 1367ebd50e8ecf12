"""Objectives for snapshots: closed-form dynamical OT and Schrödinger bridge between Gaussians,
the Jacobian-symmetry estimator, drift energy and staging."""
from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

import probflux as pf
from conftest import make_density
from probflux.objectives import Batch, DriftEnergy, EndpointLikelihood, JacobianSymmetry, KineticEnergy, Staged, sample_path_points
from probflux.train import TrainConfig, fit


def two_snapshots(m0, s0, m1, s1, n=2000, seed=0) -> SimpleNamespace:
    g = torch.Generator().manual_seed(seed)
    m0, m1 = torch.as_tensor(m0, dtype=torch.float64), torch.as_tensor(m1, dtype=torch.float64)
    x0 = m0 + s0 * torch.randn(n, m0.numel(), generator=g, dtype=torch.float64)
    x1 = m1 + s1 * torch.randn(n, m1.numel(), generator=g, dtype=torch.float64)
    return SimpleNamespace(t=torch.cat([torch.zeros(n), torch.ones(n)]).double(), x=torch.cat([x0, x1]), context=None)


def smooth_in_time(dim: int) -> pf.FactorizedMixture:
    """One Gaussian component whose time embedding stops at 4 rad per unit time (smooth between two snapshots)."""
    return pf.FactorizedMixture(dim, components=1, family="gaussian", hidden=32, layers=2, time_features=9, max_frequency=4.0)


def train(dyn, objective, data, steps, batch_size=None):
    """Adam on large batches (default: all the data): the weak path term alone fixes the interior of the path,
    and mini-batch noise in the endpoint likelihood would make that interior wander (measured: batches of 256
    need ~3x the steps)."""
    cfg = TrainConfig(steps=steps, batch_size=batch_size or len(data.t), lr=1e-2, warmup=min(50, steps // 10), ema=None, dtype="float64",
                      device="cpu", eval_every=10**6, log_every=10**6)
    return fit(dyn, objective, data, config=cfg, progress=False).model


def moments(density, t, n=100_000):
    with torch.no_grad():
        x = density.sample(t, n)
    return x.mean(0), x.std(0)


def test_gaussian_dynamical_ot_reaches_the_displacement_interpolation():
    """N((-2,0), 0.5^2 I) -> N((2,0), I): endpoint NLL + 0.01 x kinetic energy. Given the endpoints it learns,
    the optimal path is the displacement interpolation m(t) = (1-t) m0 + t m1, s(t) = (1-t) s0 + t s1, with
    kinetic energy |m1 - m0|^2 + D (s1 - s0)^2 and velocity (m1 - m0) + (s1 - s0)/s(t) (x - m(t))."""
    torch.manual_seed(0)
    data = two_snapshots([-2.0, 0.0], 0.5, [2.0, 0.0], 1.0)
    dyn = pf.Dynamics(smooth_in_time(2))
    model = train(dyn, EndpointLikelihood([0, 1]) + KineticEnergy(0.01, samples=128), data, steps=600, batch_size=2000)
    (m0, s0), (m1, s1) = moments(model.density, 0.0), moments(model.density, 1.0)
    # the endpoints fit the data (the small kinetic weight pulls them together by ~2.5%: 2.5 lambda |dm| / |dm|)
    torch.testing.assert_close(m0, torch.tensor([-2.0, 0.0], dtype=torch.float64), atol=0.08, rtol=0)
    torch.testing.assert_close(m1, torch.tensor([2.0, 0.0], dtype=torch.float64), atol=0.08, rtol=0)
    torch.testing.assert_close(s0, torch.full((2,), 0.5, dtype=torch.float64), atol=0.02, rtol=0)
    torch.testing.assert_close(s1, torch.full((2,), 1.0, dtype=torch.float64), atol=0.03, rtol=0)
    with torch.no_grad():
        t = torch.rand(50_000, dtype=torch.float64)
        kinetic = float(model.velocity(t, model.density.sample(t)).pow(2).sum(-1).mean())
    optimum = float((m1 - m0).pow(2).sum() + (s1 - s0).pow(2).sum())
    assert kinetic == pytest.approx(optimum, rel=0.02), (kinetic, optimum)  # MC error of the estimate ~0.5%
    for s in (0.25, 0.5, 0.75):
        m, sd = moments(model.density, s)
        torch.testing.assert_close(m, (1 - s) * m0 + s * m1, atol=0.05, rtol=0)
        torch.testing.assert_close(sd, (1 - s) * s0 + s * s1, atol=0.02, rtol=0)
    x = torch.randn(2000, 2, dtype=torch.float64) * 0.75
    with torch.no_grad():
        u = model.velocity(0.5, x)
    expect = (m1 - m0) + ((s1 - s0) / (0.5 * (s0 + s1))) * (x - 0.5 * (m0 + m1))
    err = (u - expect).norm(dim=-1).mean() / expect.norm(dim=-1).mean()
    assert err < 0.03, float(err)


def test_gaussian_schrodinger_bridge_marginals_match_the_closed_form():
    """1-D, N(-1, 0.5^2) -> N(1, 1), reference Brownian motion g = 1: endpoint NLL + 0.01 x E|b|^2. The
    bridge marginals (Bunne et al. 2023) have mean (1-t) m0 + t m1 and variance
    (1-t)^2 a^2 + t^2 b^2 + 2 t (1-t) c + g^2 t (1-t), c = (sqrt(4 a^2 b^2 + g^4) - g^2) / 2, with a, b the
    learned endpoint scales; the OT path (g = 0) would have std (1-t) a + t b, about 8% less at t = 0.5."""
    torch.manual_seed(0)
    g = 1.0
    data = two_snapshots([-1.0], 0.5, [1.0], 1.0, n=4000)
    dyn = pf.Dynamics(smooth_in_time(1), diffusion=g)
    model = train(dyn, EndpointLikelihood([0, 1]) + DriftEnergy(0.01, samples=128), data, steps=400)
    a, b = float(moments(model.density, 0.0)[1]), float(moments(model.density, 1.0)[1])
    assert a == pytest.approx(0.5, abs=0.02) and b == pytest.approx(1.0, abs=0.03)
    c = 0.5 * (math.sqrt(4 * a * a * b * b + g**4) - g**2)
    for s in (0.25, 0.5, 0.75):
        m, sd = moments(model.density, s)
        bridge = math.sqrt((1 - s) ** 2 * a * a + s * s * b * b + 2 * s * (1 - s) * c + g * g * s * (1 - s))
        assert float(m) == pytest.approx(-1 + 2 * s, abs=0.05)
        assert float(sd) == pytest.approx(bridge, rel=0.025), (s, float(sd), bridge)
        assert float(sd) > 1.04 * ((1 - s) * a + s * b)  # and clearly not the OT path


def test_drift_energy_is_kinetic_energy_without_diffusion():
    dyn = pf.Dynamics(make_density("ar-kr", 2, seed=3))
    batch = lambda: Batch(torch.rand(4, dtype=torch.float64), torch.randn(4, 2, dtype=torch.float64),
                          generator=torch.Generator().manual_seed(5))
    k = KineticEnergy(samples=32)(dyn, batch())["kinetic"]
    d = DriftEnergy(samples=32)(dyn, batch())["drift_energy"]
    assert torch.equal(k, d)
    noisy = pf.Dynamics(dyn.density, diffusion=0.7)
    assert not torch.equal(DriftEnergy(samples=32)(noisy, batch())["drift_energy"], k)


def test_path_samples_are_sharded_not_redrawn():
    dyn = pf.Dynamics(make_density("factorized-logistic-kr", 2, seed=1))
    def draw(rank, world):
        b = Batch(torch.rand(4, dtype=torch.float64), torch.randn(4, 2, dtype=torch.float64),
                  generator=torch.Generator().manual_seed(9), shard=(rank, world))
        return sample_path_points(dyn, b, 8)
    t1, x1, _ = draw(0, 1)
    (ta, xa, _), (tb, xb, _) = draw(0, 2), draw(1, 2)
    assert torch.equal(t1[0::2], ta) and torch.equal(t1[1::2], tb)
    torch.testing.assert_close(x1[0::2], xa, rtol=0, atol=1e-12)
    torch.testing.assert_close(x1[1::2], xb, rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="not divisible by the world size 3"):
        draw(0, 3)


def test_jacobian_symmetry_estimates_the_frobenius_norm():
    """Zero for a field with diagonal Jacobian; within 3% of the mean of ||J - J^T||_F^2 (exact, by autograd) at
    the same points for an autoregressive KR field. In 3-D ``J - J^T`` is a cross product with some ``w`` and
    ``|(J - J^T) v|^2 = |w|^2 |v_perp|^2`` is ``||J - J^T||_F^2 / 2`` times a chi^2 with 2 degrees of freedom
    (relative standard deviation 1 per probe), so the estimate over points with values ``p_i`` has relative
    standard error ``sqrt(sum p_i^2) / sum p_i / sqrt(probes)``; it is computed below and the tolerance is at
    least 3 of them (seeded: 165.1 vs 162.2, standard error 0.85%; the spread of ``p_i`` over the points, not the
    number of probes, sets the work)."""
    diag = pf.Dynamics(make_density("factorized-gaussian-kr", 3, components=1, seed=2))
    b = lambda seed=0: Batch(torch.rand(4, dtype=torch.float64), torch.randn(4, 3, dtype=torch.float64),
                             generator=torch.Generator().manual_seed(seed))
    assert float(JacobianSymmetry(samples=16)(diag, b())["jacobian_asymmetry"]) < 1e-20
    dyn = pf.Dynamics(make_density("ar-kr", 3, components=1, seed=5, perturb=0.3))
    probes = 1500
    est = float(JacobianSymmetry(samples=32, probes=probes)(dyn, b())["jacobian_asymmetry"])
    t, x, _ = sample_path_points(dyn, b(), 32)
    x = x.detach().requires_grad_(True)
    u = dyn.velocity(t, x)  # u_i depends on x_i alone: row j of every J_i is the gradient of sum_i u_ij
    J = torch.stack([torch.autograd.grad(u[:, j].sum(), x, retain_graph=True)[0] for j in range(3)], 1)
    J0 = torch.autograd.functional.jacobian(lambda y: dyn.velocity(t[:1], y[None])[0], x[0].detach())
    torch.testing.assert_close(J[0], J0, rtol=1e-10, atol=1e-12)
    per_point = (J - J.transpose(1, 2)).pow(2).sum((1, 2))
    exact = float(per_point.mean())
    standard_error = float(per_point.pow(2).sum().sqrt() / per_point.sum()) / probes**0.5
    assert exact > 1.0 and 3 * standard_error <= 0.03, (exact, standard_error)
    assert est == pytest.approx(exact, rel=0.03)


def test_staged_switches_on_and_ramps():
    dyn = pf.Dynamics(make_density("factorized-logistic-kr", 2, seed=1))
    staged = Staged(KineticEnergy(2.0, samples=8), start=10, ramp=4)
    def at(step):
        return staged(dyn, Batch(torch.rand(4, dtype=torch.float64), torch.randn(4, 2, dtype=torch.float64),
                                 generator=torch.Generator().manual_seed(0), step=step))
    assert float(at(9)["loss"]) == 0.0 and float(at(9)["kinetic"]) == 0.0
    full = at(100)
    assert float(at(10)["loss"].detach()) == pytest.approx(0.25 * float(full["loss"].detach()))
    assert float(full["loss"].detach()) == pytest.approx(2.0 * float(full["kinetic"]))
    with pytest.raises(ValueError, match="start and ramp"):
        Staged(KineticEnergy(), start=-1)
