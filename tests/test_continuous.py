"""The continuous protocol (probflux.stpp.continuous), the continuous catalog view and the ETAS-style temporal model."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from probflux.data.events import EventCatalog, earthquakenpp_catalog
from probflux.stpp import ConstantRate, ETASTemporal
from probflux.stpp.continuous import History, StandardizedSpatial, evaluate, spatial_scores, temporal_scores


def _catalog(times, seed: int = 0) -> EventCatalog:
    t = torch.tensor(times, dtype=torch.float64)
    x = torch.randn(len(times), 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return EventCatalog(t, x, (0.0, 4.0, 6.0, 10.0))


class Probe:
    """Records which catalog rows each query could use; scores log N(x; mean of the visible history, I)."""

    def __init__(self) -> None:
        self.seen: list[tuple[float, list[int]]] = []

    def spatial_log_prob(self, t, x, history: History):
        m = history.mask()
        for q in range(t.shape[0]):
            self.seen.append((float(t[q]), torch.nonzero(m[q]).reshape(-1).tolist()))
        cnt = m.sum(1, keepdim=True).clamp_min(1)
        centre = (m.double() @ history.x) / cnt
        return -0.5 * ((x - centre) ** 2).sum(1) - math.log(2 * math.pi)


TIMES = [0.5, 1.0, 3.0, 4.0, 4.5, 4.5, 5.0, 6.0, 6.0, 6.0, 7.5, 8.0, 8.0, 9.0]


@pytest.mark.parametrize("chunk", [1, 2, 5, 1024])
def test_each_event_sees_exactly_the_strictly_earlier_events(chunk: int) -> None:
    cat = _catalog(TIMES)
    probe = Probe()
    spatial_scores(cat, probe, period="test", chunk=chunk)
    sl = cat.indices("test")
    assert (sl.start, sl.stop) == (7, 14)  # test = [6, 10]: the three events at t = 6 belong to it
    assert len(probe.seen) == 7
    for i, (tq, rows) in zip(range(sl.start, sl.stop), probe.seen):
        assert tq == TIMES[i]
        assert rows == [j for j, tj in enumerate(TIMES) if tj < TIMES[i]]  # ties (6, 6, 6 and 8, 8) see none of each other


def test_a_future_event_changes_no_earlier_score() -> None:
    cat = _catalog(TIMES)
    base_s = spatial_scores(cat, Probe(), chunk=3)
    etas = ETASTemporal(scales=(0.1, 1.0, 10.0))
    etas.mu, etas.weights = 0.3, np.array([0.2, 0.1, 0.3])
    base_t = temporal_scores(cat, etas).log_intensity
    for k in range(8, 14):  # move every event after row k far away (and later in time): rows <= k keep their scores
        t2, x2 = cat.t.clone(), cat.x.clone()
        x2[k + 1:] += 50.0
        t2[k + 1:] = torch.linspace(float(t2[k]) + 0.01, 9.9, len(TIMES) - k - 1, dtype=torch.float64) if k < 13 else t2[k + 1:]
        cat2 = EventCatalog(t2, x2, cat.boundaries)
        keep = k + 1 - 7
        # a tie group at row k may extend beyond k; only rows whose time is strictly below the first moved time qualify
        assert torch.equal(spatial_scores(cat2, Probe(), chunk=3)[:keep], base_s[:keep])
        assert torch.allclose(temporal_scores(cat2, etas).log_intensity[:keep], base_t[:keep], rtol=0, atol=1e-12)


def test_etas_intensity_and_integral_match_brute_force() -> None:
    cat = _catalog(TIMES)
    m = ETASTemporal(scales=(0.05, 0.7, 20.0))
    m.mu, m.weights = 0.4, np.array([0.3, 0.2, 0.25])

    def lam(s: float) -> float:
        past = np.array([tj for tj in TIMES if tj < s])
        return m.mu + float((m.weights[None, :] * m.beta[None, :] * np.exp(-(s - past)[:, None] * m.beta[None, :])).sum())

    sc = temporal_scores(cat, m)
    sl = cat.indices("test")
    want = [math.log(lam(TIMES[i])) for i in range(sl.start, sl.stop)]
    assert np.allclose(sc.log_intensity.numpy(), want, rtol=1e-12)
    a, b = 6.0, 9.0  # until the last test event (EarthquakeNPP's convention)
    assert (sc.a, sc.b) == (a, b)
    from scipy.integrate import quad

    cuts = sorted({a, b, *[tj for tj in TIMES if a < tj < b]})  # lambda is smooth between events
    want_int = sum(quad(lam, u, v, epsabs=1e-13, epsrel=1e-12)[0] for u, v in zip(cuts[:-1], cuts[1:]))
    assert sc.integral == pytest.approx(want_int, rel=1e-9)
    assert temporal_scores(cat, m, until="end").b == 10.0


def test_constant_rate_closed_form_and_etas_fit_recovers_a_poisson_catalog() -> None:
    rng = np.random.default_rng(0)
    t = np.sort(rng.uniform(0, 2000.0, 4000))
    cat = EventCatalog(torch.from_numpy(t), torch.zeros(4000, 2, dtype=torch.float64), (0.0, 1000.0, 1500.0, 2000.0))
    p = ConstantRate().fit(cat.t, 0.0, 1500.0)
    n_fit = int((t <= 1500.0).sum())
    assert p.rate == pytest.approx(n_fit / 1500.0)
    sl = cat.indices("test")
    n, last = sl.stop - sl.start, t[-1]
    assert evaluate(cat, temporal=p).temporal_ll_per_event == pytest.approx(math.log(p.rate) - p.rate * (last - 1500.0) / n)
    e = ETASTemporal(scales=(0.1, 1.0, 10.0)).fit(cat.t, 0.0, 1500.0)
    assert e.fit_info["converged"] and e.fit_info["train_ll_per_event"] >= math.log(p.rate) - 1.0 - 1e-9  # nests Poisson


def _hawkes_cluster(mu: float, alpha: float, scale: float, t1: float, seed: int) -> np.ndarray:
    """Exponential Hawkes by its branching structure: Poisson(mu) immigrants, Poisson(alpha) children at Exp(scale) lags."""
    rng = np.random.default_rng(seed)
    gen = rng.uniform(0, t1, rng.poisson(mu * t1))
    out = [gen]
    while gen.size:
        k = rng.poisson(alpha, gen.size)
        gen = np.repeat(gen, k) + rng.exponential(scale, k.sum())
        gen = gen[gen < t1]
        out.append(gen)
    return np.sort(np.concatenate(out))


def test_etas_fit_recovers_a_simulated_hawkes_process() -> None:
    t = _hawkes_cluster(mu=0.5, alpha=0.6, scale=1.0, t1=8000.0, seed=3)
    e = ETASTemporal(scales=(0.03, 0.3, 1.0, 3.0, 30.0)).fit(torch.from_numpy(t), 0.0, 8000.0)
    assert e.branching_ratio == pytest.approx(0.6, abs=0.05)
    assert e.mu == pytest.approx(0.5, rel=0.12)


def test_standardized_adapter_adds_the_jacobian() -> None:
    cat = _catalog(TIMES)
    mean, std = torch.tensor([1.0, -2.0]), torch.tensor([2.0, 0.5])
    raw = spatial_scores(cat, Probe())
    cat_x = EventCatalog(cat.t, cat.x * std + mean, cat.boundaries)
    adapted = spatial_scores(cat_x, StandardizedSpatial(Probe(), mean, std))
    assert torch.allclose(adapted, raw - math.log(2.0 * 0.5), atol=1e-12)


def test_catalog_from_a_file_in_the_earthquakenpp_layout(tmp_path) -> None:
    rng = np.random.default_rng(1)
    parts = {}
    for name, n, span in (("train", 50, 100.0), ("val", 20, 40.0), ("test", 30, 60.0)):
        t = np.sort(rng.uniform(0, span, n))
        t -= t[0]
        parts[name] = np.concatenate([t[:, None], rng.normal(size=(n, 2))], 1)[None]
    np.savez(tmp_path / "cat.npz", **parts)
    cat = earthquakenpp_catalog("mine", path=tmp_path / "cat.npz")
    assert cat.counts() == {"train": 50, "val": 20, "test": 30}
    assert cat.boundaries[1] == pytest.approx(parts["train"][0, -1, 0])
    assert bool((cat.t[1:] >= cat.t[:-1]).all())
    cat2 = earthquakenpp_catalog("mine", path=tmp_path / "cat.npz", starts=(120.0, 170.0))
    assert cat2.boundaries[:3] == (0.0, 120.0, 170.0) and float(cat2.events("test")[0][0]) == 170.0
    with pytest.raises(ValueError, match="starts"):
        earthquakenpp_catalog("mine", path=tmp_path / "cat.npz", starts=(10.0, 170.0))  # train spans more than 10 days
    with pytest.raises(ValueError, match="non-decreasing"):
        EventCatalog(torch.tensor([1.0, 0.5]), torch.zeros(2, 2), (0.0, 1.0, 2.0, 3.0))
    with pytest.raises(ValueError, match="unknown period"):
        cat.span("holdout")


def test_real_catalogs_keep_every_event_in_time_order() -> None:
    try:
        cat = earthquakenpp_catalog("ComCat_25")
    except FileNotFoundError:
        pytest.skip("EarthquakeNPP data not available")
    assert cat.counts() == {"train": 40701, "val": 14740, "test": 21881}
    assert cat.boundaries == (0.0, 6209.0, 9496.0, 14260.0)
    assert bool((cat.t[1:] >= cat.t[:-1]).all())


def test_windows_keep_the_trailing_partial_window_on_request() -> None:
    from probflux.data.events import windows

    seq = np.stack([np.arange(0.5, 10.0, 1.0), np.zeros(10), np.zeros(10)], 1)  # events at 0.5, ..., 9.5 on [0, 10]
    full = windows(seq, 3.0, 3.0, window=(0.0, 10.0))
    assert full.keys == ["seq@0", "seq@3", "seq@6"] and full.n_events == 9  # the event at 9.5 is dropped
    part = windows(seq, 3.0, 3.0, window=(0.0, 10.0), partial=True)
    assert part.keys == ["seq@0", "seq@3", "seq@6", "seq@9"] and part.n_events == 10
    assert part.sequences[-1][:, 0].tolist() == [0.5]
    exact = windows(seq, 5.0, 5.0, window=(0.0, 10.0), partial=True)  # windows end exactly at t1: nothing to add
    assert exact.keys == ["seq@0", "seq@5"] and exact.n_events == 10
    over = windows(seq, 4.0, 2.5, window=(0.0, 10.0), partial=True)  # overlapping: one more window, starting at 7.5
    assert over.keys == ["seq@0", "seq@2.5", "seq@5", "seq@7.5"] and over.sequences[-1][:, 0].tolist() == [0.0, 1.0, 2.0]
