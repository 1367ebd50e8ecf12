"""Shared builders: small float64 models with random, perturbed parameters (so time dependence is real)."""
from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

import probflux as pf

KINDS = (
    "factorized-logistic-kr",
    "factorized-logistic-mixture",
    "factorized-gaussian-kr",
    "factorized-gaussian-mixture",
    "ar-kr",
    "ar-sigmoid",
)


def make_density(kind: str, dim: int, *, context_dim: int = 0, components: int = 3, hidden: int = 32, seed: int = 0,
                 perturb: float = 0.1) -> pf.TimeDensity:
    """A float64 density of the given kind with every parameter perturbed by ``perturb * N(0, 1)``."""
    torch.manual_seed(seed)
    if kind.startswith("factorized"):
        _, family, flux = kind.split("-")
        model = pf.FactorizedMixture(dim, components=components, hidden=hidden, family=family, flux=flux, context_dim=context_dim, layers=2)
    elif kind.startswith("ar"):
        model = pf.AutoregressiveMixture(dim, components=components, hidden=hidden, layers=2, flux=kind.split("-")[1],
                                         context_dim=context_dim)
    else:
        raise ValueError(kind)
    model = model.double()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(perturb * torch.randn_like(p))
    return model


def make_divfree(dim: int, *, context_dim: int = 0, seed: int = 1, perturb: float = 0.3) -> pf.DivergenceFree:
    torch.manual_seed(seed)
    df = pf.DivergenceFree(dim, hidden=32, context_dim=context_dim).double()
    with torch.no_grad():
        for p in df.parameters():
            p.add_(perturb * torch.randn_like(p))
    return df


@pytest.fixture
def density_factory() -> Callable[..., pf.TimeDensity]:
    return make_density


def pytest_configure(config: pytest.Config) -> None:
    # The tests use small tensors: on a 2-core machine, intra-op threads cost more than they save.
    torch.set_num_threads(1)
