"""Spatio-temporal events: history features (causality), the conditioned density (exactness), temporal models
(closed forms and parameter recovery), and learning on small synthetic problems."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import probflux as pf
from probflux.data import EventSequences, pinwheel_hawkes
from probflux.objectives import NegativeLogLikelihood
from probflux.stpp import HawkesProcess, HistoryEncoder, PoissonProcess, history_at, history_context, model_points, spatial_log_likelihood
from probflux.train import TrainConfig, fit


def _seqs() -> EventSequences:
    a = torch.tensor([[0.5, 1.0, 2.0], [1.0, -1.0, 0.0], [1.0, 3.0, 3.0], [2.5, 0.0, 1.0]], dtype=torch.float64)
    b = torch.tensor([[4.0, 5.0, 5.0]], dtype=torch.float64)
    return EventSequences([a, b], window=(0.0, 5.0))


def test_history_context_layout_and_strict_history() -> None:
    c = history_context(_seqs(), events=2)
    assert c.shape == (5, 2 + 2 * 4)
    # event 0: empty history
    assert torch.all(c[0] == 0)
    # event 1 (t=1.0): history {t=0.5}
    assert c[1, 0] == pytest.approx(0.1) and c[1, 1] == pytest.approx(math.log(2))
    assert c[1, 2:6].tolist() == pytest.approx([1.0, 0.0, 1.0, 2.0]) and torch.all(c[1, 6:] == 0)
    # event 2 shares t=1.0 with event 1: same (strict) history — a tie never sees its twin
    assert torch.equal(c[2], c[1])
    # event 3 (t=2.5): newest first: the two events at t=1.0 (order within a tie: later index first), dt = 0;
    # its history holds 3 events but the count is capped at events=2
    assert c[3, 0] == pytest.approx(0.2) and c[3, 1] == pytest.approx(math.log(3))
    assert c[3, 2:6].tolist() == pytest.approx([1.0, 0.0, 3.0, 3.0]) and c[3, 6:10].tolist() == pytest.approx([1.0, 0.0, -1.0, 0.0])
    # second sequence starts with an empty history (no leak across sequences)
    assert torch.all(c[4] == 0)


def test_history_at_query_times() -> None:
    seqs = _seqs()
    c = history_context(seqs, events=2)
    key = seqs.keys[0]
    at_events = history_at(seqs, key, seqs[key][:, 0], events=2)
    assert torch.equal(at_events, c[:4])  # a query at an event's time sees that event's (strict) history
    after = history_at(seqs, key, torch.tensor([2.6]), events=2)
    assert after[0, 0] == pytest.approx(0.5) and after[0, 2:6].tolist() == pytest.approx([1.0, 0.0, 0.0, 1.0])  # newest: t=2.5
    with pytest.raises(ValueError, match=r"window \[0.0, 5.0\]"):
        history_at(seqs, key, torch.tensor([6.0]))


def test_history_context_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="events must be a positive integer"):
        history_context(_seqs(), events=0)
    with pytest.raises(TypeError, match="EventSequences"):
        history_context(torch.zeros(3, 3), events=2)
    enc = HistoryEncoder(2, events=4, hidden=8, out_features=5)
    with pytest.raises(ValueError, match=r"shape \(N, 18\)"):
        enc(torch.zeros(3, 10))


def _history_model(seed: int = 0, inner: str = "factorized") -> pf.Conditioned:
    torch.manual_seed(seed)
    if inner == "factorized":
        d = pf.FactorizedMixture(2, components=3, hidden=16, layers=2, context_dim=6)
    else:
        d = pf.AutoregressiveMixture(2, components=3, hidden=16, layers=2, context_dim=6)
    model = pf.Conditioned(d, HistoryEncoder(2, events=3, hidden=8, out_features=6)).double()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return model


def test_history_conditioning_is_causal() -> None:
    """Changing a future event changes no earlier density; it does change later ones."""
    seqs = pinwheel_hawkes(3, seed=1)
    model = _history_model()
    P = model_points(seqs, history=3)
    base = model.log_prob(P.t, P.x, P.context)
    k = 1  # edit an event in the middle of sequence 1
    s = seqs.sequences[k].clone()
    i = len(s) // 2
    s[i, 1:] += torch.tensor([3.0, -2.0], dtype=s.dtype)  # move it (time unchanged, order kept)
    edited = EventSequences([seqs.sequences[0], s, seqs.sequences[2]], window=seqs.window)
    Q = model_points(edited, history=3)
    new = model.log_prob(Q.t, Q.x, Q.context)
    off = int(seqs.offsets()[k])
    first_after_tie = i + int((s[i + 1:, 0] == s[i, 0]).sum()) + 1
    assert torch.equal(new[: off + i], base[: off + i])  # every earlier event (and the other sequences before)
    assert not torch.equal(new[off + first_after_tie], base[off + first_after_tie])  # the next event sees it
    rest = off + len(s)
    assert torch.equal(new[rest:], base[rest:])  # other sequences untouched


@pytest.mark.parametrize("inner", ["factorized", "autoregressive"])
def test_conditioned_density_is_exact(inner: str) -> None:
    """For a fixed history the continuity equation holds (float64 autograd residual), and rho integrates to 1."""
    model = _history_model(inner=inner)
    seqs = pinwheel_hawkes(2, seed=3)
    P = model_points(seqs, history=3)
    n = min(40, P.t.shape[0])
    res = pf.continuity_residual(model, P.t[:n], P.x[:n] * 0.5, P.context[:n])
    assert float(res.relative.max()) < 1e-10
    # normalisation on a grid for one history row at one time
    g = torch.linspace(-12, 12, 241, dtype=torch.float64)
    X, Y = torch.meshgrid(g, g, indexing="ij")
    pts = torch.stack([X.reshape(-1), Y.reshape(-1)], 1)
    ctx = P.context[5].expand(pts.shape[0], -1)
    mass = model.log_prob(0.4, pts, ctx).exp().sum() * (g[1] - g[0]) ** 2
    assert float(mass.detach()) == pytest.approx(1.0, abs=2e-3)


def test_autoregressive_flux_choice_does_not_change_the_likelihood() -> None:
    """bench_events.py trains one autoregressive model for both fluxes: the density is the same function."""
    x = torch.randn(64, 2, dtype=torch.float64)
    t = torch.rand(64, dtype=torch.float64)
    out = []
    for flux in ("kr", "sigmoid"):
        torch.manual_seed(0)
        m = pf.AutoregressiveMixture(2, components=4, hidden=16, layers=2, flux=flux).double()
        lp = m.log_prob(t, x)
        (g,) = torch.autograd.grad(lp.sum(), next(m.parameters()))
        out.append((lp.detach(), g))
    assert torch.equal(out[0][0], out[1][0]) and torch.equal(out[0][1], out[1][1])


def test_poisson_mle_closed_form() -> None:
    seqs = _seqs()
    p = PoissonProcess().fit(seqs)
    assert p.rate == pytest.approx(5 / (2 * 5.0))
    ll = p.log_likelihood(seqs)
    assert ll.tolist() == pytest.approx([4 * math.log(0.5) - 2.5, math.log(0.5) - 2.5])


def test_hawkes_log_likelihood_matches_direct_sum() -> None:
    seqs = pinwheel_hawkes(4, seed=2)
    h = HawkesProcess(mu=0.3, alpha=0.4, beta=2.0)
    ll = h.log_likelihood(seqs).detach()
    for k, s in enumerate(seqs.sequences):
        t = s[:, 0].numpy()
        lam = [0.3 + 0.4 * 2.0 * np.exp(-2.0 * (t[i] - t[:i])).sum() for i in range(len(t))]
        comp = 0.3 * 30.0 + 0.4 * (1 - np.exp(-2.0 * (30.0 - t))).sum()
        assert float(ll[k]) == pytest.approx(np.log(lam).sum() - comp, rel=1e-12)


def test_hawkes_fit_recovers_the_pinwheel_ground_process() -> None:
    """Summed over its 10 classes, Pinwheel-Hawkes is a Hawkes process with mu = 10 * 0.05, alpha = 0.6, beta = 10."""
    seqs = pinwheel_hawkes(300, seed=5)
    h = HawkesProcess().fit(seqs, steps=300, lr=0.05)
    p = h.params
    assert p["mu"] == pytest.approx(0.5, rel=0.15)
    assert p["alpha"] == pytest.approx(0.6, rel=0.15)
    assert p["beta"] == pytest.approx(10.0, rel=0.25)
    # and it beats the Poisson process on fresh sequences
    test = pinwheel_hawkes(100, seed=6)
    with torch.no_grad():
        assert float(h.log_likelihood(test).sum()) > float(PoissonProcess().fit(seqs).log_likelihood(test).sum()) + 50


def test_temporal_models_reject_bad_arguments() -> None:
    with pytest.raises(ValueError, match="beta must be a finite number > 0"):
        HawkesProcess(beta=-1.0)
    with pytest.raises(ValueError, match="rate must be"):
        PoissonProcess(rate=0.0)
    with pytest.raises(TypeError, match="EventSequences"):
        PoissonProcess().fit([1, 2])


def _gaussian_nll(train: torch.Tensor, test: torch.Tensor) -> float:
    mean, cov = train.mean(0), torch.cov(train.T)
    return -float(torch.distributions.MultivariateNormal(mean, cov).log_prob(test).mean())


def _train(density, P, steps: int, seed: int = 0, lr: float = 5e-3, batch: int = 256):
    cfg = TrainConfig(steps=steps, batch_size=batch, lr=lr, warmup=20, ema=None, device="cpu", dtype="float64",
                      eval_every=10**9, checkpoint_every=10**9)
    return fit(pf.Dynamics(density), NegativeLogLikelihood(), P, config=cfg, seed=seed, progress=False).model.density


def test_time_varying_density_learns_pinwheel_and_beats_a_static_gaussian() -> None:
    train, test = pinwheel_hawkes(400, seed=10), pinwheel_hawkes(100, seed=11)
    P, T = model_points(train), model_points(test)
    torch.manual_seed(0)
    d = pf.FactorizedMixture(2, components=16, hidden=32, layers=2).double()
    before = -spatial_log_likelihood(d, T)
    d = _train(d, P, 400, lr=1e-2, batch=512)
    after = -spatial_log_likelihood(d, T)
    gauss = _gaussian_nll(P.x, T.x)  # 3.62 nats; measured: 3.79 before, 3.26 after training
    assert after < before - 0.4
    assert after < gauss - 0.25, (after, gauss)


def test_history_conditioning_learns_what_time_alone_cannot() -> None:
    """Each event lands near the previous one (a random walk in space): the history model must beat the
    time-only model by a wide margin; the time-only model cannot beat the marginal."""
    rng = np.random.default_rng(0)

    def walks(n: int) -> EventSequences:
        seqs = []
        for _ in range(n):
            m = int(rng.integers(10, 30))
            t = np.sort(rng.uniform(0, 1, m))
            x = np.cumsum(np.concatenate([rng.normal(0, 2.0, (1, 2)), rng.normal(0, 0.1, (m - 1, 2))]), 0)
            seqs.append(np.column_stack([t, x]))
        return EventSequences(seqs, window=(0.0, 1.0))

    train, test = walks(150), walks(50)
    torch.manual_seed(0)
    plain = _train(pf.FactorizedMixture(2, components=8, hidden=32, layers=2).double(), model_points(train), 250)
    hist = pf.Conditioned(pf.FactorizedMixture(2, components=8, hidden=32, layers=2, context_dim=16),
                          HistoryEncoder(2, events=4, hidden=32, out_features=16)).double()
    hist = _train(hist, model_points(train, history=4), 250)
    nll_plain = -spatial_log_likelihood(plain, model_points(test))
    nll_hist = -spatial_log_likelihood(hist, model_points(test, history=4))
    # step-size entropy: N(0, 0.1^2 I) has 2 * (0.5 log(2 pi e) + log 0.1) = -1.77 nats
    assert nll_hist < nll_plain - 1.5, (nll_hist, nll_plain)


def test_event_data_through_configs(tmp_path) -> None:
    """data.name = an event set with data.history builds the Conditioned model the benchmark uses; bad combinations
    are rejected with the offending keys named."""
    from probflux.app.builders import build_dynamics
    from probflux.app.config import load_config
    from probflux.data import EVENT_DATASETS, registry

    assert set(registry.names("events")) == set(EVENT_DATASETS)
    cfg = load_config("configs/events_earthquakes.yaml")
    assert cfg.data.name == "earthquakes_jp" and cfg.data.history == 16
    dyn = build_dynamics(cfg.model, 2, 2 + 16 * 4, history=16)
    assert isinstance(dyn.density, pf.Conditioned) and dyn.context_dim == 66 and dyn.density.density.context_dim == 64
    with pytest.raises(ValueError, match="history=16 needs context_dim=66"):
        build_dynamics(cfg.model, 2, 3, history=16)
    with pytest.raises(ValueError, match="data.history: only available for event data sets"):
        load_config("configs/tiny.yaml", ["data.history=4"])
    with pytest.raises(ValueError, match="data.history"):
        load_config("configs/events_earthquakes.yaml", ["data.history=0"])


def test_event_data_loader_for_configs() -> None:
    from probflux.app.builders import load_data
    from probflux.app.config import DataConfig

    try:
        train, val, test, norm = load_data(DataConfig(name="covid_nj", history=4), seed=0)
    except FileNotFoundError as e:
        pytest.skip(f"../shared/data (stpp/) not found: {e}")
    assert (len(train), len(val), len(test)) == (3925, 4346 - 3925, 13656)
    assert train.context.shape == (3925, 2 + 4 * 4) and (norm.t0, norm.t1) == (0.0, 7.0)
    # history features are in the normaliser's standardised coordinates: the newest past event of row i is a
    # standardised copy of an earlier training point
    z = norm.x_to_model(train.x)
    i = int(torch.nonzero(train.context[:, 2] == 1)[0, 0])  # first row with a history
    assert torch.allclose(train.context[i, 4:6], z[i - 1])


def test_conditioned_flux_vanishes_far_away_and_sde_reproduces_marginals() -> None:
    """docs/mathematics.md §8 for the conditioned density at a fixed history: j -> 0 far out, and Euler–Maruyama particles started
    from rho_0 follow rho_1."""
    from test_sde_marginals import energy_distance

    model = _history_model(seed=4)
    with torch.no_grad():
        w = model.density.net.linears[-1].weight
        w.add_(0.25 * torch.randn(w.shape, generator=torch.Generator().manual_seed(12), dtype=w.dtype))
    P = model_points(pinwheel_hawkes(2, seed=3), history=3)
    ctx1 = P.context[7]
    far = torch.tensor([[50.0, 0.0], [0.0, -50.0], [-50.0, 50.0]], dtype=torch.float64)
    j = model.flux(torch.full((3,), 0.5, dtype=torch.float64), far, ctx1.expand(3, -1))
    assert float(j.detach().abs().max()) < 1e-12
    n = 1500
    ctx = ctx1.expand(n, -1)
    torch.manual_seed(0)
    x0 = model.sample(0.0, n, context=ctx)
    path = pf.simulate(pf.Dynamics(model, diffusion=0.8), x0, steps=200, context=ctx, generator=torch.Generator().manual_seed(1))
    ref1, ref2 = model.sample(1.0, n, context=ctx), model.sample(1.0, n, context=ctx)
    noise, moved, got = energy_distance(ref1, ref2), energy_distance(x0, ref1), energy_distance(path[-1], ref1)
    assert moved > 10 * noise, "the model hardly moves: the test would be vacuous"
    assert got < 2.5 * noise, (got, noise, moved)


def test_event_config_on_an_x_y_t_csv_reads_t_as_time(tmp_path) -> None:
    """Issue 14's silent misread: ``configs/events_earthquakes.yaml data.name=file data.path=events.csv`` on a CSV with
    header ``X,Y,T`` (lon, lat, day) made the longitude the time. Now T is the time: without history the events are
    points on the T range, with data.kind=events (or data.history) the catalog is split in time."""
    from probflux.app.builders import load_data
    from probflux.app.config import load_config

    rng = np.random.default_rng(0)
    day = np.sort(rng.uniform(0, 365, 300))
    lon, lat = rng.uniform(-87.80, -87.53, 300), rng.uniform(41.65, 42.0, 300)
    path = tmp_path / "events.csv"
    path.write_text("X,Y,T\n" + "\n".join(f"{a:.17g},{b:.17g},{c:.17g}" for a, b, c in zip(lon, lat, day)) + "\n")
    cfg = load_config("configs/events_earthquakes.yaml", ["data.name=file", f"data.path={path}", "data.history=null"])
    train, val, test, norm = load_data(cfg.data, cfg.seed)
    assert (norm.t0, norm.t1) == (day.min(), day.max()) and len(train) + len(val) + len(test) == 300
    assert float(train.x[:, 0].min()) >= -87.80 and float(train.x[:, 1].min()) >= 41.65
    cfg = load_config("configs/events_earthquakes.yaml", ["data.name=file", f"data.path={path}", "data.history=4"])
    train, val, test, norm = load_data(cfg.data, cfg.seed)
    cut = day.min() + 0.8 * (day.max() - day.min())
    assert (norm.t0, norm.t1) == (day.min(), day.max()) and bool((train.t < cut).all()) and bool((test.t >= cut).all())
    assert train.context.shape[1] == 2 + 4 * 4 and len(train) == int((day < cut).sum())
