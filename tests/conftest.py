"""Shared builders: small float64 models with random, perturbed parameters (so time dependence is real)."""
from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

import probflux as pf

Builder = Callable[[int, int, int, int], pf.TimeDensity]

def _factorized(family: str, flux: str) -> Builder:
    return lambda dim, context_dim, components, hidden: pf.FactorizedMixture(
        dim, components, hidden=hidden, layers=2, context_dim=context_dim, family=family, flux=flux)


def _autoregressive(flux: str) -> Builder:
    return lambda dim, context_dim, components, hidden: pf.AutoregressiveMixture(
        dim, components, hidden=hidden, layers=2, context_dim=context_dim, flux=flux)


def _flow(coupling: str) -> Builder:
    return lambda dim, context_dim, components, hidden: pf.FlowDensity(
        dim, 2, hidden=16, context_dim=context_dim, coupling=coupling)


def _pinned(dim: int, context_dim: int, components: int, hidden: int) -> pf.TimeDensity:
    from probflux.control import Gaussian, PinnedMixture

    initial = Gaussian(torch.linspace(-0.5, 0.5, dim).tolist(), torch.linspace(0.5, 1.5, dim).tolist())
    return PinnedMixture(initial, components, hidden=hidden, layers=2, context_dim=context_dim)


def _bridge(flow: bool, target: bool) -> Builder:
    """Endpoint-exact bridges of probflux.control.bridge: diagonal Gaussian mixtures (mixture) or Gaussians (flow)."""
    def build(dim: int, context_dim: int, components: int, hidden: int) -> pf.TimeDensity:
        from probflux.control import Gaussian, GaussianMixture
        from probflux.control.bridge import BridgeMixture, FlowBridge

        base = torch.linspace(-0.5, 0.5, dim)
        if flow:
            q0 = Gaussian(base.tolist(), torch.linspace(0.5, 1.5, dim).tolist())
            q1 = Gaussian((1.0 - base).tolist(), torch.linspace(1.2, 0.6, dim).tolist()) if target else None
            return FlowBridge(q0, q1, 2, hidden=16, context_dim=context_dim, coupling_kind="affine")
        q0 = GaussianMixture(torch.stack([base, base + 1]), [torch.linspace(0.5, 1.5, dim).tolist(), 0.7], weights=[0.4, 0.6])
        q1 = GaussianMixture(torch.stack([1 - base, base - 1]), 0.8, weights=[0.6, 0.4])
        return BridgeMixture(q0, q1, hidden=hidden, layers=2, context_dim=context_dim)
    return build


def _anchored(dim: int, context_dim: int, components: int, hidden: int) -> pf.TimeDensity:
    """Data-anchored kernels on spline paths through 4 knots, with a Brownian-bridge spread between them."""
    return pf.AnchoredMixture(dim, 2 * components, knots=[0.0, 0.3, 0.7, 1.0], curvature=0.7, bridge=0.6,
                              per_kernel_scale=True, context_dim=context_dim)


def _conditioned_flow(dim: int, context_dim: int, components: int, hidden: int) -> pf.TimeDensity:
    """A flow conditioned on a history encoding (its context is the encoder's input, whatever ``context_dim``)."""
    from probflux.stpp.history import HistoryEncoder

    flow = pf.FlowDensity(dim, 2, hidden=16, context_dim=3, coupling="affine")
    return pf.Conditioned(flow, HistoryEncoder(dim, events=1, hidden=8, out_features=3))


def _conditioned_mixture(dim: int, context_dim: int, components: int, hidden: int) -> pf.TimeDensity:
    inner = pf.FactorizedMixture(dim, components, hidden=hidden, layers=2, context_dim=3, family="gaussian")
    return pf.Conditioned(inner, torch.nn.Linear(context_dim or 2, 3))


def _kernel_mixture(dim: int, context_dim: int, components: int, hidden: int) -> pf.TimeDensity:
    from probflux.densities import KernelMixture

    g = torch.Generator().manual_seed(dim)
    model = KernelMixture(torch.randn(4 * components, dim, generator=g), bandwidth=0.6, rank=2, hidden=hidden, layers=2,
                          context_dim=context_dim)
    with torch.no_grad():  # A = B = 0 at construction (a static KDE): make weights and bandwidths move in time
        model.A.copy_(2.0 * torch.randn(model.A.shape, generator=g))
        model.B.copy_(0.5 * torch.randn(model.B.shape, generator=g))
    return model


def _self_exciting(dim: int, context_dim: int, components: int, hidden: int) -> pf.TimeDensity:
    """Kernels at 2 history slots over a kernel-mixture background (its context is a history row, whatever ``context_dim``)."""
    from probflux.stpp import SelfExciting

    model = SelfExciting(_kernel_mixture(dim, 0, components, hidden), events=2, hidden=8, init_scale=0.5)
    with torch.no_grad():  # weights and bandwidths that depend on the age (the MLP's last layer starts near zero)
        w = model.kernel_net.linears[-1].weight
        w.copy_(torch.randn(w.shape, generator=torch.Generator().manual_seed(dim)))
    return model


def _self_exciting_scales(dim: int, context_dim: int, components: int, hidden: int) -> pf.TimeDensity:
    """Two Gaussian scales per history slot (the scale mixture); the logits depend strongly on the age, the bandwidths
    mildly (a random last layer on the log-scales gives bandwidths ~10 with real mass at the far-field points)."""
    from probflux.stpp import SelfExciting

    model = SelfExciting(_kernel_mixture(dim, 0, components, hidden), events=2, hidden=8, init_scale=0.5, scales=2)
    with torch.no_grad():
        w = model.kernel_net.linears[-1].weight  # rows: 2 logits, then 2 raw log-scales
        w.copy_(torch.randn(w.shape, generator=torch.Generator().manual_seed(dim)) * torch.tensor([[1.0], [1.0], [0.2], [0.2]]))
    return model


def _kernel_history(dim: int, context_dim: int, components: int, hidden: int) -> pf.TimeDensity:
    """The kernel baseline as a density: a time-weighted KDE of 4*components points plus 2 age-decayed history kernels."""
    from probflux.stpp.kernel_history import KernelHistory

    g = torch.Generator().manual_seed(dim)
    return KernelHistory(torch.randn(4 * components, dim, generator=g), 0.6, 0.4, 0.3, 2, decay=2.0,
                         times=torch.rand(4 * components, generator=g), h_t=0.3, hidden=hidden)


def _markov_mixture(dim: int, context_dim: int, components: int, hidden: int) -> pf.TimeDensity:
    """Fixed diagonal Gaussians whose weights are Hawkes intensities excited by 2 history slots."""
    from probflux.stpp.markov_mixture import MarkovMixture

    g = torch.Generator().manual_seed(dim)
    model = MarkovMixture(torch.randn(2 * components, dim, generator=g), torch.full((2 * components, dim), -0.5),
                          torch.zeros(2 * components), events=2, decays=(1.0, 5.0))
    with torch.no_grad():  # base rates that trend over the window, so the density moves even without history
        model.trend.copy_(3.0 * torch.randn(model.trend.shape, generator=g))
    return model


def _aged_kernel(dim: int, context_dim: int, components: int, hidden: int) -> pf.TimeDensity:
    """Kernels at 4*components events, times in [-0.5, 0.9] (the first before 0, so every cut tau in [0, 1) sees one),
    Omori-like age weights; its context is the history cut tau, which decides which events are visible."""
    from probflux.stpp.long_memory import AgedKernelDensity

    g = torch.Generator().manual_seed(dim)
    times = torch.sort(torch.cat([torch.tensor([-0.5]), -0.5 + 1.4 * torch.rand(4 * components - 1, generator=g)])).values
    return AgedKernelDensity(times, torch.randn(4 * components, dim, generator=g), bandwidth=0.6, offset=0.05, power=1.5)


# Every TimeDensity the package ships, by name: ``builder(dim, context_dim, components, hidden)``.
# tests/test_contract.py runs the whole density contract over this list: a new family is one line here.
FAMILIES: dict[str, Builder] = {
    "factorized-logistic-kr": _factorized("logistic", "kr"),
    "factorized-logistic-mixture": _factorized("logistic", "mixture"),
    "factorized-gaussian-kr": _factorized("gaussian", "kr"),
    "factorized-gaussian-mixture": _factorized("gaussian", "mixture"),
    "ar-kr": _autoregressive("kr"),
    "ar-sigmoid": _autoregressive("sigmoid"),
    "flow-spline": _flow("spline"),
    "flow-affine": _flow("affine"),
    "pinned": _pinned,
    "bridge-mixture": _bridge(flow=False, target=True),
    "bridge-flow": _bridge(flow=True, target=True),
    "pinned-flow": _bridge(flow=True, target=False),
    "anchored": _anchored,
    "conditioned-flow": _conditioned_flow,
    "conditioned-mixture": _conditioned_mixture,
    "kernel-mixture": _kernel_mixture,
    "self-exciting": _self_exciting,
    "self-exciting-scales": _self_exciting_scales,
    "kernel-history": _kernel_history,
    "markov-mixture": _markov_mixture,
    "aged-kernel": _aged_kernel,
}

# the mixture families (Rosenblatt transforms, closed forms in 1-D)
KINDS = tuple(k for k in FAMILIES if k.startswith(("factorized", "ar")))


def make_density(kind: str, dim: int, *, context_dim: int = 0, components: int = 3, hidden: int = 32, seed: int = 0,
                 perturb: float = 0.1) -> pf.TimeDensity:
    """A float64 density of the given kind (a key of FAMILIES) with every parameter perturbed by ``perturb * N(0, 1)``."""
    if kind not in FAMILIES:
        raise ValueError(f"unknown kind {kind!r}; known: {sorted(FAMILIES)}")
    torch.manual_seed(seed)
    model = FAMILIES[kind](dim, context_dim, components, hidden).double()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(perturb * torch.randn_like(p))
    return model


def random_context(model: pf.TimeDensity, n: int, seed: int = 0):
    """``(n, C)`` uniform contexts for a model with ``context_dim = C > 0`` (history-like: non-negative), else None."""
    if model.context_dim == 0:
        return None
    return torch.rand(n, model.context_dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


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
