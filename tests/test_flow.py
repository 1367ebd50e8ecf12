"""FlowDensity: exact quadrature, inverse accuracy, closed forms, kinetic energy, training.

Continuity, far-field flux, SDE marginals and rsample gradients of the flows are in tests/test_contract.py."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import probflux as pf
from probflux.app.builders import build_dynamics
from probflux.app.config import load_config
from probflux.densities.flow import FlowDensity
from probflux.objectives import Batch, KineticEnergy, NegativeLogLikelihood
from probflux.train import fit
from test_train import moving_points, tiny_config

COUPLINGS = ["spline", "affine"]


def make_flow(dim: int, coupling: str = "spline", *, transforms: int = 3, context_dim: int = 0, seed: int = 0,
              perturb: float = 0.2, move: float = 0.0) -> FlowDensity:
    """A float64 flow with perturbed parameters; ``move`` adds extra time dependence to the affine layer."""
    torch.manual_seed(seed)
    model = FlowDensity(dim, transforms=transforms, hidden=16, context_dim=context_dim, coupling=coupling).double()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(perturb * torch.randn_like(p))
        w = model.affine.net.linears[-1].weight
        w.add_(move * torch.randn_like(w))
    return model


def _points(model: FlowDensity, n: int = 40, seed: int = 0, context=None) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    t = torch.rand(n, generator=g, dtype=torch.float64)
    torch.manual_seed(seed)
    x_model = model.sample(t[: n // 2], context=None if context is None else context[: n // 2])
    x_broad = 2.0 * torch.randn(n - n // 2, model.dim, generator=g, dtype=torch.float64)
    return t, torch.cat([x_model, x_broad])


# ------------------------------------------------------------------ exactness beyond tests/test_contract.py
_GL_NODES, _GL_WEIGHTS = (torch.tensor(a) for a in np.polynomial.legendre.leggauss(32))


def _gauss_legendre(edges: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Nodes and weights of 32-point Gauss–Legendre on every piece ``[edges_k, edges_k+1]``, rows independent.

    ``edges: (R, P+1)`` sorted → nodes, weights ``(R, P*32)``; exact to round-off where the integrand is smooth
    on each piece (the spline's density has kinks in its derivative at the knots, so pieces end there).
    """
    a, b = edges[:, :-1, None], edges[:, 1:, None]
    nodes = 0.5 * (a + b) + 0.5 * (b - a) * _GL_NODES
    return nodes.flatten(1), (0.5 * (b - a) * _GL_WEIGHTS).flatten(1)


def _x_knots_1d(model: FlowDensity, h: torch.Tensor) -> torch.Tensor:
    """Where the 1-D flow's density has kinks: every layer's spline knots pushed through the later layers."""
    if model.coupling_name != "spline":
        return torch.empty(0, dtype=torch.float64)
    blocks = [b(h) for b in model.couplings]
    m, a = model.affine(h)
    out = []
    for i, f in enumerate(blocks):
        y = f.base.horizontal.reshape(-1, 1)
        for g in blocks[i:]:
            y = g(y)
        out.append((m + a.exp() * y).reshape(-1))
    return torch.cat(out)


@pytest.mark.parametrize("coupling", COUPLINGS)
def test_normalised_1d(coupling):
    model = make_flow(1, coupling, seed=2)
    for t in (0.0, 0.41, 1.0):
        with torch.no_grad():
            knots = _x_knots_1d(model, model._condition(torch.tensor([t], dtype=torch.float64), None))
            edges = torch.cat([torch.linspace(-60, 60, 241, dtype=torch.float64), knots]).sort().values
            x, w = _gauss_legendre(edges[None])
            mass = float((model.log_prob(t, x.reshape(-1, 1)).exp() * w.reshape(-1)).sum())
        assert abs(mass - 1) < 1e-10, (t, mass)


def test_normalised_2d_spline_coupling():
    """One spline coupling then the time-affine layer ``x = m + e^a y``: for fixed ``x_0`` the knots in ``x_1``
    are known, so iterated Gauss–Legendre with pieces ending at the knots is exact to round-off. The nodes
    are placed in ``y`` (a linear change of variables, ``dx = e^a dy``) so that they follow the mass."""
    model = make_flow(2, "spline", transforms=1, seed=4, perturb=0.2)
    assert model.couplings[0].mask.tolist() == [True, False]  # x_0 conditions the spline of x_1
    with torch.no_grad():
        cond = model._condition(torch.zeros(1, dtype=torch.float64), None)
        spline = model.couplings[0](cond).meta(torch.zeros(1, 1, dtype=torch.float64)).base
        assert (spline.vertical - spline.horizontal).abs().max() > 0.3  # far from the identity map
    y0, w0 = (v[0] for v in _gauss_legendre(torch.linspace(-12, 12, 13, dtype=torch.float64)[None]))
    edges = torch.linspace(-12, 12, 97, dtype=torch.float64)  # rho is steep near some knots: short pieces
    for t in (0.0, 0.37, 1.0):
        mass = 0.0
        for rows in torch.arange(len(y0)).split(64):
            with torch.no_grad():
                tt = torch.full((len(rows),), t, dtype=torch.float64)
                h = model._condition(tt, None)
                m, a = model.affine(h)
                knots = model.couplings[0](h).meta(y0[rows, None]).base.vertical.reshape(len(rows), -1)
                y1, w1 = _gauss_legendre(torch.cat([edges.expand(len(rows), -1), knots], 1).sort(1).values)
                R, P = y1.shape
                x = torch.stack([(m[:, :1] + a[:, :1].exp() * y0[rows, None]).expand(R, P), m[:, 1:] + a[:, 1:].exp() * y1], -1)
                rho = model.log_prob(tt[:, None].expand(R, P).reshape(-1), x.reshape(-1, 2)).exp().reshape(R, P)
                jac = a.sum(-1, keepdim=True).exp()  # dx_0 dx_1 = e^{a_0 + a_1} dy_0 dy_1
                mass += float(((rho * jac * w1).sum(1) * w0[rows]).sum())
        assert abs(mass - 1) < 1e-9, (t, mass)


# ------------------------------------------------------------------ the map and closed forms
@pytest.mark.parametrize("coupling", COUPLINGS)
@pytest.mark.parametrize("dim", [1, 4])
def test_inverse_accuracy(coupling, dim):
    model = make_flow(dim, coupling, transforms=4, seed=3)
    g = torch.Generator().manual_seed(0)
    t = torch.rand(500, generator=g, dtype=torch.float64)
    z = 3.0 * torch.randn(500, dim, generator=g, dtype=torch.float64)  # also outside the spline's box
    x = model.from_base(t, z)
    assert (model.to_base(t, x) - z).abs().max() < 1e-9
    assert (model.from_base(t, model.to_base(t, z)) - z).abs().max() < 1e-9
    # log-determinant: log rho from the inverse pass equals the forward pass's change of variables
    xf, ladj = model._push(t, z, None)
    base = -0.5 * (z * z).sum(-1) - 0.5 * dim * np.log(2 * np.pi)
    assert torch.allclose(model.log_prob(t, xf), base - ladj, atol=1e-10, rtol=0)
    if dim > 1:  # and both equal the autograd Jacobian determinant
        J = torch.func.vmap(torch.func.jacrev(lambda zz, tt: model._map(tt[None], zz[None], None)[0]))(z[:5], t[:5])
        assert torch.allclose(torch.linalg.slogdet(J)[1], ladj[:5], atol=1e-10)


@pytest.mark.parametrize("dim", [1, 3])
def test_single_time_affine_layer_velocity_is_closed_form(dim):
    """``x = m_t + e^{a_t} z`` has ``u = m' + a' (x - m)``; ``m', a'`` here by reverse-mode autograd."""
    model = make_flow(dim, transforms=0, seed=5, perturb=0.5)
    g = torch.Generator().manual_seed(1)
    t = torch.rand(64, generator=g, dtype=torch.float64).requires_grad_(True)
    m, a = model.affine(model._condition(t, None))
    dm = torch.stack([torch.autograd.grad(m[:, d].sum(), t, retain_graph=True)[0] for d in range(dim)], -1)
    da = torch.stack([torch.autograd.grad(a[:, d].sum(), t, retain_graph=True)[0] for d in range(dim)], -1)
    x = 3 * torch.randn(64, dim, generator=g, dtype=torch.float64)
    expected = dm + da * (x - m)
    u = model.velocity(t.detach(), x)
    assert expected.abs().max() > 1e-2
    assert torch.allclose(u, expected.detach(), atol=1e-12, rtol=1e-12)
    # and the density is the Gaussian N(m, e^{2a})
    gauss = torch.distributions.Normal(m, a.exp()).log_prob(x).sum(-1)
    assert torch.allclose(model.log_prob(t.detach(), x), gauss.detach(), atol=1e-12)


def test_kinetic_energy_is_speed_along_the_map():
    model = make_flow(3, seed=8)
    g = torch.Generator().manual_seed(4)
    t = torch.rand(50, generator=g, dtype=torch.float64)
    z = torch.randn(50, 3, generator=g, dtype=torch.float64)
    u = model.velocity(t, model.from_base(t, z))
    assert torch.allclose(model.kinetic_energy(t, z=z), u.pow(2).sum(-1), atol=1e-10, rtol=1e-10)
    assert torch.allclose(model.path_velocity(t, z), u, atol=1e-10, rtol=1e-10)
    # d/dt T_t(z) by central differences
    eps = 1e-6
    fd = (model.from_base(t + eps, z) - model.from_base(t - eps, z)) / (2 * eps)
    assert torch.allclose(model.path_velocity(t, z), fd, atol=1e-7)


def test_kinetic_objective_uses_the_flow_shortcut_and_agrees_in_mean():
    model = make_flow(2, seed=9, move=0.3)
    dyn = pf.Dynamics(model)
    batch = Batch(t=torch.rand(8, dtype=torch.float64), x=torch.randn(8, 2, dtype=torch.float64),
                  generator=torch.Generator().manual_seed(0))
    fast = KineticEnergy(samples=4000)(dyn, batch)["kinetic"]
    t, x, _ = KineticEnergy(samples=4000)._draw(dyn, Batch(batch.t, batch.x, generator=torch.Generator().manual_seed(1)))
    slow = dyn.velocity(t, x).pow(2).sum(-1).detach()
    assert abs(float(fast) - float(slow.mean())) < 4 * float(slow.std()) / 4000 ** 0.5 + 1e-12


def test_rosenblatt_transforms_are_not_available():
    model = make_flow(2)
    x = torch.zeros(3, 2, dtype=torch.float64)
    with pytest.raises(NotImplementedError, match="to_base"):
        model.cdf(0.5, x)
    with pytest.raises(NotImplementedError, match="from_base"):
        model.icdf(0.5, torch.full((3, 2), 0.5, dtype=torch.float64))


def test_validation_messages():
    with pytest.raises(ValueError, match="transforms"):
        FlowDensity(2, transforms=-1)
    with pytest.raises(ValueError, match="coupling"):
        FlowDensity(2, coupling="cubic")
    with pytest.raises(ValueError, match="bins"):
        FlowDensity(2, bins=1)
    with pytest.raises(ValueError, match="z"):
        make_flow(2).from_base(0.5, torch.zeros(3, 3, dtype=torch.float64))


# ------------------------------------------------------------------ integration
def test_trains_with_existing_objectives_and_config():
    data = moving_points(512)
    torch.manual_seed(0)
    dyn = pf.Dynamics(FlowDensity(2, transforms=2, hidden=16), diffusion=0.1)
    objective = NegativeLogLikelihood() + KineticEnergy(0.01, samples=16)
    records: list[dict] = []
    fit(dyn, objective, data, config=tiny_config(steps=40, lr=1e-2, log_every=1), progress=False,
        callback=lambda step, rec: records.append(rec))
    nll = [r["nll"] for r in records if "nll" in r]
    assert "kinetic" in records[-1]
    first, last = np.mean(nll[:3]), np.mean(nll[-3:])
    assert np.isfinite(last) and last < first - 0.3, (first, last)
    cfg = load_config(None, ["model.type=flow", "model.transforms=2", "model.coupling=affine", "model.hidden=8"])
    built = build_dynamics(cfg.model, 3, context_dim=1)
    assert isinstance(built.density, FlowDensity) and built.density.coupling_name == "affine"
    assert built.density.transforms == 2 and built.context_dim == 1
