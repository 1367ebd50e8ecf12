"""CountETASTemporal (stpp/temporal.py): productivity by the number of nearby events that followed each event within a
delay. Checked against brute force (counts, intensity, compensator by quadrature), causality, and nesting ETASTemporal."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from probflux.data.events import EventCatalog
from probflux.stpp import ETASTemporal
from probflux.stpp.continuous import temporal_scores
from probflux.stpp.temporal import CountETASTemporal, _following_counts

TIMES = [0.5, 1.0, 1.02, 1.05, 1.05, 3.0, 4.0, 4.5, 4.5, 5.0, 6.0, 6.0, 6.05, 7.5, 8.0, 8.0, 8.1, 9.0]


def _catalog(seed: int = 0) -> EventCatalog:
    t = torch.tensor(TIMES, dtype=torch.float64)
    x = 3 * torch.randn(len(TIMES), 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return EventCatalog(t, x, (0.0, 4.0, 6.0, 10.0))


def _model(seed: int = 1) -> CountETASTemporal:
    m = CountETASTemporal(scales=(0.05, 0.7, 20.0), delays=(0.04, 0.3), radius=4.0, bins=3)
    rng = np.random.default_rng(seed)
    m.mu = 0.4
    m.weights = [rng.uniform(0.05, 0.4, w.shape) for w in m.weights]
    return m


def _brute(m: CountETASTemporal, t: np.ndarray, x: np.ndarray):
    """lambda(s) from the definition: each earlier event's stage by its age, its bin by its following count."""
    edges = [0.0, *m.delays.tolist(), math.inf]

    def count(j: int, d: float) -> int:
        return sum(1 for i in range(len(t)) if t[j] < t[i] <= t[j] + d and np.sum((x[i] - x[j]) ** 2) < m.radius ** 2)

    def lam(s: float) -> float:
        out = m.mu
        for j in np.nonzero(t < s)[0]:
            a = s - t[j]
            st = max(k for k in range(len(edges) - 1) if a >= edges[k])
            f = 0 if st == 0 else min(int(math.floor(math.log2(1 + count(j, edges[st])))), m.bins - 1)
            out += float((m.weights[st][f] * m.beta * np.exp(-m.beta * a)).sum())
        return out
    return lam


def test_following_counts_match_brute_force() -> None:
    cat = _catalog()
    t, x = cat.t.numpy(), cat.x.numpy()
    for d, r in ((0.04, 4.0), (0.3, 2.0), (2.0, 100.0)):
        want = [sum(1 for i in range(len(t)) if t[j] < t[i] <= t[j] + d and np.sum((x[i] - x[j]) ** 2) < r * r)
                for j in range(len(t))]
        assert _following_counts(t, x, d, r).tolist() == want


def test_intensity_and_compensator_match_the_definition() -> None:
    from scipy.integrate import quad

    cat, m = _catalog(), _model()
    t, x = cat.t.numpy(), cat.x.numpy()
    lam = _brute(m, t, x)
    sc = temporal_scores(cat, m)
    sl = cat.indices("test")
    assert np.allclose(sc.log_intensity.numpy(), [math.log(lam(t[i])) for i in range(sl.start, sl.stop)], rtol=1e-12)
    a, b = sc.a, sc.b
    # lambda is smooth between events and between the stage switches t_j + d_s
    cuts = sorted({a, b, *[v for v in t if a < v < b], *[v + d for v in t for d in m.delays if a < v + d < b]})
    want = sum(quad(lam, u, v, epsabs=1e-13, epsrel=1e-12)[0] for u, v in zip(cuts[:-1], cuts[1:]))
    assert sc.integral == pytest.approx(want, rel=1e-9)
    with pytest.raises(ValueError, match="x_events"):
        m.integral(a, b, cat.t)


def test_a_future_event_changes_no_earlier_intensity() -> None:
    """Moving the later events (in space and in time) leaves every earlier log-intensity unchanged."""
    cat, m = _catalog(), _model()
    base = temporal_scores(cat, m).log_intensity
    sl = cat.indices("test")
    for k in range(sl.start, len(TIMES) - 1):
        t2, x2 = cat.t.clone(), cat.x.clone()
        x2[k + 1:] = x2[k] + 0.1  # every later event right next to event k: its count would jump if it leaked
        t2[k + 1:] = torch.linspace(float(t2[k]) + 1e-3, 9.95, len(TIMES) - k - 1, dtype=torch.float64)
        got = temporal_scores(EventCatalog(t2, x2, cat.boundaries), m).log_intensity
        keep = k + 1 - sl.start
        assert torch.allclose(got[:keep], base[:keep], rtol=0, atol=1e-12)


def test_no_delays_is_etas_and_the_fit_nests_it() -> None:
    rng = np.random.default_rng(0)
    n = 3000
    t = np.sort(rng.uniform(0, 1500.0, n))
    t = np.sort(np.concatenate([t, t[::7] + rng.exponential(0.01, t[::7].size)]))  # clustered pairs
    x = rng.normal(size=(t.size, 2)) * 20
    cat = EventCatalog(torch.from_numpy(t), torch.from_numpy(x), (0.0, 800.0, 1200.0, float(t[-1]) + 1.0))
    sc = (0.01, 1.0, 100.0)
    e = ETASTemporal(scales=sc).fit(cat.t, 0.0, 1200.0)
    c0 = CountETASTemporal(scales=sc, delays=()).fit(cat.t, 0.0, 1200.0, x=cat.x)
    assert c0.fit_info["converged"]
    assert c0.fit_info["train_ll_per_event"] == pytest.approx(e.fit_info["train_ll_per_event"], abs=1e-7)
    assert temporal_scores(cat, c0).ll_per_event == pytest.approx(temporal_scores(cat, e).ll_per_event, abs=1e-5)
    c1 = CountETASTemporal(scales=sc, delays=(0.05,), radius=10.0, bins=3).fit(cat.t, 0.0, 1200.0, x=cat.x)
    assert c1.fit_info["converged"] and c1.fit_info["train_ll_per_event"] >= e.fit_info["train_ll_per_event"] - 1e-7
    assert all((w >= 0).all() for w in c1.weights)


def test_bad_input() -> None:
    for kw, match in (({"delays": (0.1, 0.05)}, "delays"), ({"delays": (-1.0,)}, "delays"), ({"radius": 0.0}, "radius"),
                      ({"bins": 0}, "bins"), ({"scales": ()}, "scales")):
        with pytest.raises(ValueError, match=match):
            CountETASTemporal(**kw)
    with pytest.raises(ValueError, match="x must have shape"):
        CountETASTemporal().fit(torch.arange(5.0), 0.0, 4.0, x=torch.zeros(4, 2))


def test_weights_are_monotone_and_an_unseen_bin_takes_the_highest_seen_weight() -> None:
    """Fit where no event has more than 3 followers: bins 2+ (4 or more followers) get bin 1's weight, never a free one."""
    rng = np.random.default_rng(1)
    t = np.sort(rng.uniform(0, 1000.0, 2000))
    t = np.sort(np.concatenate([t, t[::5] + rng.uniform(1e-4, 0.01, t[::5].size)]))
    x = rng.normal(size=(t.size, 2)) * 50
    m = CountETASTemporal(scales=(0.01, 1.0, 100.0), delays=(0.02,), radius=5.0, bins=4)
    cnt = _following_counts(t, x, 0.02, 5.0)
    assert cnt.max() <= 2  # bins 0 and 1 only (floor(log2(1 + n)) <= 1)
    m.fit(torch.from_numpy(t), 0.0, 1000.0, x=torch.from_numpy(x))
    w = m.weights[1]
    assert m.fit_info["converged"] and (np.diff(w, axis=0) >= -1e-12).all()
    assert np.array_equal(w[2], w[1]) and np.array_equal(w[3], w[1])
