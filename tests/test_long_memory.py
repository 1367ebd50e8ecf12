"""The long-memory self-exciting density (probflux.stpp.long_memory) and the catalog mixture it is scored in.

The density contract (float64 continuity residual, normalisation, sampling, ...) runs over it as ``aged-kernel`` in
tests/test_contract.py; here: its closed form, the protocol's causality, the mixture and the tuner."""
import math

import pytest
import torch

from probflux.data.events import EventCatalog
from probflux.stpp.continuous import History, SpatialMixture, spatial_scores
from probflux.stpp.long_memory import AgedKernelDensity, AgedKernelSpatial, tune_long_memory


def _normal2(x, mu, h):
    return math.exp(-((x[0] - mu[0]) ** 2 + (x[1] - mu[1]) ** 2) / (2 * h * h)) / (2 * math.pi * h * h)


def test_two_events_closed_form():
    """rho = sum_j (t - t_j + c)^-p N(x; x_j, h^2) / sum_j (t - t_j + c)^-p, by hand; a cut between the events hides
    the second."""
    times, locs = torch.tensor([0.1, 0.4], dtype=torch.float64), torch.tensor([[0.0, 0.0], [1.0, -0.5]], dtype=torch.float64)
    h, c, p = 0.7, 0.05, 1.3
    rho = AgedKernelDensity(times, locs, bandwidth=h, offset=c, power=p).double()
    t, x = 0.9, (0.3, 0.2)
    w = [(t - 0.1 + c) ** -p, (t - 0.4 + c) ** -p]
    want = (w[0] * _normal2(x, (0, 0), h) + w[1] * _normal2(x, (1, -0.5), h)) / sum(w)
    got = rho.log_prob(torch.tensor([t], dtype=torch.float64), torch.tensor([x], dtype=torch.float64),
                       torch.tensor([[t]], dtype=torch.float64))
    assert float(got.detach()) == pytest.approx(math.log(want), rel=1e-12)
    got1 = rho.log_prob(torch.tensor([t], dtype=torch.float64), torch.tensor([x], dtype=torch.float64),
                        torch.tensor([[0.3]], dtype=torch.float64))
    assert float(got1.detach()) == pytest.approx(math.log(_normal2(x, (0, 0), h)), rel=1e-12)


def test_errors_name_the_argument():
    with pytest.raises(ValueError, match="bandwidth"):
        AgedKernelDensity(torch.zeros(2), torch.zeros(2, 2), bandwidth=0.0, offset=0.1, power=1.0)
    with pytest.raises(ValueError, match="power"):
        AgedKernelDensity(torch.zeros(2), torch.zeros(2, 2), bandwidth=1.0, offset=0.1, power=-1.0)
    with pytest.raises(ValueError, match="sorted"):
        AgedKernelDensity(torch.tensor([0.5, 0.1]), torch.zeros(2, 2), bandwidth=1.0, offset=0.1, power=1.0)
    rho = AgedKernelDensity(torch.tensor([0.5]), torch.zeros(1, 2), bandwidth=1.0, offset=0.1, power=1.0)
    with pytest.raises(ValueError, match="visible"):
        rho.log_prob(torch.tensor([0.6]), torch.zeros(1, 2), torch.tensor([[0.4]]))
    with pytest.raises(ValueError, match="weights"):
        SpatialMixture([AgedKernelSpatial(1.0, 0.1, 1.0)], [-1.0])


def _catalog(seed=0, n=300):
    """Events that recur at 5 sites, each site active in bursts: a long memory of where events were helps."""
    g = torch.Generator().manual_seed(seed)
    t = torch.sort(torch.rand(n, generator=g, dtype=torch.float64) * 100).values
    sites = 20 * torch.randn(5, 2, generator=g, dtype=torch.float64)
    x = sites[torch.randint(0, 5, (n,), generator=g)] + torch.randn(n, 2, generator=g, dtype=torch.float64)
    t[50] = t[49]  # a tie: neither event sees the other
    return EventCatalog(t, x, (0.0, 50.0, 70.0, 100.0))


def test_protocol_gives_each_event_exactly_its_strictly_earlier_events():
    cat = _catalog()
    model = AgedKernelSpatial(1.5, 0.5, 1.0)
    lp = spatial_scores(cat, model, period="val", chunk=17)
    sl = cat.indices("val")
    for i in (sl.start, sl.start + 5, sl.stop - 1):
        prior = cat.t < cat.t[i]
        w = (cat.t[i] - cat.t[prior] + 0.5) ** -1.0
        dens = (w * torch.exp(-((cat.x[prior] - cat.x[i]) ** 2).sum(1) / (2 * 1.5**2)) / (2 * math.pi * 1.5**2)).sum() / w.sum()
        assert float(lp[i - sl.start]) == pytest.approx(float(torch.log(dens)), rel=1e-10)
    # causal: moving a later event changes no earlier score
    x2 = cat.x.clone()
    x2[sl.stop - 1] += 50.0
    lp2 = spatial_scores(EventCatalog(cat.t, x2, cat.boundaries), model, period="val", chunk=17)
    assert torch.equal(lp[:-1], lp2[:-1]) and not torch.equal(lp[-1:], lp2[-1:])
    # the tie at rows 49/50 (training period): both see rows [0, 49) only
    h = History(cat.t[:51], cat.x[:51], torch.tensor([49, 49]))
    a = model.spatial_log_prob(cat.t[49:51], cat.x[49:51], h)
    b = model.spatial_log_prob(cat.t[49:51], cat.x[49:51], History(cat.t[:49], cat.x[:49], torch.tensor([49, 49])))
    assert torch.allclose(a, b, rtol=0, atol=1e-12)


def test_rows_and_mixture():
    cat = _catalog()
    a, b = AgedKernelSpatial(1.5, 0.5, 1.0), AgedKernelSpatial(6.0, 5.0, 0.3)
    full = spatial_scores(cat, a, period="test")
    rows = torch.tensor([75, 80, 200, 299])
    sl = cat.indices("test")
    sub = spatial_scores(cat, a, rows=rows[rows >= sl.start])
    assert torch.allclose(sub, full[rows[rows >= sl.start] - sl.start], rtol=0, atol=1e-12)
    mix = spatial_scores(cat, SpatialMixture([a, b], [3.0, 1.0]), period="test")
    want = torch.log(0.75 * full.exp() + 0.25 * spatial_scores(cat, b, period="test").exp())
    assert torch.allclose(mix, want, rtol=0, atol=1e-10)
    with pytest.raises(ValueError, match="rows"):
        spatial_scores(cat, a, rows=torch.tensor([5, 3]))


def test_tuner_puts_weight_on_the_long_memory_when_the_base_misses_the_sites():
    cat = _catalog(seed=1)

    def broad(t, x, history):  # one wide Gaussian: knows nothing of the sites
        return -(x**2).sum(1) / (2 * 30.0**2) - math.log(2 * math.pi * 30.0**2)

    tu = tune_long_memory(cat, broad, period="val", queries=40,
                          grid={"bandwidth": (1.0, 8.0), "offset": (1.0,), "power": (0.0, 1.0)})
    assert tu.grid_points == 4 and tu.queries == 40
    assert tu.bandwidth == 1.0 and tu.lam > 0.3
    assert tu.val_ll > tu.base_val_ll + 1.0
    lp = spatial_scores(cat, tu.model(broad), period="test")
    assert float(lp.mean()) > float(spatial_scores(cat, broad, period="test").mean()) + 1.0
