"""rho_t integrates to 1 in 1-D (adaptive quadrature) at several times, and why the far-field test matters.

2-D quadrature and the far-field flux of every family are in tests/test_contract.py."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import integrate

import probflux as pf
from conftest import KINDS, make_density

TIMES = [0.0, 0.37, 1.0]


@pytest.mark.parametrize("kind", KINDS)
def test_normalised_1d(kind):
    model = make_density(kind, 1, components=4, seed=2)
    for t in TIMES:
        def pdf(x: float, t: float = t) -> float:
            return float(model.log_prob(t, torch.tensor([[x]], dtype=torch.float64)).detach().exp())

        mass, err = integrate.quad(pdf, -np.inf, np.inf, limit=400, epsabs=1e-12, epsrel=1e-12)
        assert abs(mass - 1) < 1e-8, (t, mass, err)


def _far_points(model: pf.TimeDensity, coord: int, value: float, n: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    t = torch.rand(n, dtype=torch.float64)
    x = model.sample(t)
    x[:, coord] = value
    return t, x


def test_naive_last_coordinate_flux_would_leak():
    """The uncorrected flux ``j_D = -d/dt[rho_<D F_D]`` tends to ``-d/dt rho_<D`` as ``x_D -> +inf``:
    the far-field test above detects exactly this, and the sigmoid correction removes it."""
    model = make_density("ar-sigmoid", 2, components=3, seed=6)
    t, x = _far_points(model, 1, 50.0)
    t = t.requires_grad_(True)

    Fc, logp = model._cdf(t, x, None)
    naive = Fc[:, 1] * logp[:, 0].exp()  # rho_<2 F_2
    (dnaive,) = torch.autograd.grad(naive.sum(), t)
    assert (-dnaive).abs().max() > 1e-3  # leaks at x_2 = +50
    assert model.flux(t.detach(), x).abs().max() < 1e-15
