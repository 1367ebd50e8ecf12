"""SelfExciting (stpp/selfexciting.py): causal, normalised with thousands of kernels, exact between events, a closed
form when the learned functions are constant, and the jump at an event localised there. The generic contract runs
through conftest.FAMILIES."""
from __future__ import annotations

import math

import pytest
import torch

import probflux as pf
from probflux.data.events import EventSequences
from probflux.densities import KernelMixture
from probflux.stpp import SelfExciting, history_at, history_context, model_points


def _model(kernels: int = 50, events: int = 4, seed: int = 0, bw: float = 0.4, init_scale: float = 0.3) -> SelfExciting:
    torch.manual_seed(seed)
    bg = KernelMixture(torch.randn(kernels, 2), bandwidth=bw, rank=2, hidden=8)
    rho = SelfExciting(bg, events=events, hidden=8, init_scale=init_scale).double()
    with torch.no_grad():
        for p in rho.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return rho


def _seqs(rows: list[list[float]]) -> EventSequences:
    return EventSequences([torch.tensor(rows, dtype=torch.float64)], window=(0.0, 10.0), name="toy")


EVENTS = [[1.0, 0.0, 0.0], [2.5, 1.0, -0.5], [4.0, -1.0, 1.0], [6.0, 0.5, 0.5]]


def test_a_future_event_changes_no_earlier_density():
    rho = _model(events=3)
    before, after = _seqs(EVENTS), _seqs(EVENTS + [[8.0, 2.0, 2.0]])
    tq = torch.tensor([0.5, 1.0, 3.0, 6.0, 7.9], dtype=torch.float64)  # 1.0 and 6.0: at events (strictly earlier history)
    x = torch.randn(5, 2, dtype=torch.float64)
    s = tq / 10.0
    lp0 = rho.log_prob(s, x, history_at(before, before.keys[0], tq, events=3))
    lp1 = rho.log_prob(s, x, history_at(after, after.keys[0], tq, events=3))
    assert torch.equal(lp0, lp1)
    # the pooled training contexts agree too on the shared events, and the new event does change later densities
    c0, c1 = history_context(before, 3), history_context(after, 3)
    assert torch.equal(c0, c1[:4])
    late = torch.tensor([9.0], dtype=torch.float64)
    assert not torch.allclose(rho.log_prob(late / 10, x[:1], history_at(before, before.keys[0], late, events=3)),
                              rho.log_prob(late / 10, x[:1], history_at(after, after.keys[0], late, events=3)))


def test_normalised_with_thousands_of_kernels():
    """1,500 background kernels + 16 history kernels: trapezoid mass on a grid (step 0.07, every scale >= 0.2) is 1."""
    torch.manual_seed(1)
    bg = KernelMixture(torch.randn(1500, 2, dtype=torch.float64), bandwidth=0.25, rank=0, chunk_elements=2**18)
    rho = SelfExciting(bg, events=16, hidden=8, init_scale=0.3, min_scale=0.2).double()
    seq = torch.cat([torch.linspace(0.5, 5.0, 20)[:, None], torch.randn(20, 2)], 1).to(torch.float64)
    ctx = history_at(EventSequences([seq], window=(0.0, 10.0)), "seq_0000", torch.tensor([5.5]), events=16)
    g = torch.linspace(-6.3, 6.3, 181, dtype=torch.float64)
    h = float(g[1] - g[0])
    xy = torch.stack(torch.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)
    with torch.no_grad():
        mass = float(rho.log_prob(0.55, xy, ctx[0]).exp().sum()) * h * h
    assert abs(mass - 1) < 1e-9, mass


@pytest.mark.parametrize("flux", ["mixture", "kr"])
def test_exact_between_events_with_real_histories(flux):
    """Continuity to round-off at times between events with the context held fixed (the history at the query)."""
    rho = _model(events=3)
    rho.flux_name = flux
    seqs = _seqs(EVENTS)
    tq = torch.tensor([1.5, 3.0, 4.5, 5.0, 7.0, 9.5], dtype=torch.float64)
    ctx = history_at(seqs, seqs.keys[0], tq, events=3)
    x = torch.cat([rho.sample(tq / 10, context=ctx), torch.randn(6, 2, dtype=torch.float64)])
    r = pf.continuity_residual(rho, torch.cat([tq, tq]) / 10, x, torch.cat([ctx, ctx]))
    assert r.relative.max() < 1e-9, r.relative.max()


def test_constant_functions_give_the_kernel_baseline_closed_form():
    """With the MLPs' last layers zeroed the weights are constant: rho = (e^l0 b + e^l sum_j N(x_j, s^2 I)) / (e^l0 + n e^l)."""
    rho = _model(events=4)
    l0, l1, raw = 0.3, -0.7, 0.4
    with torch.no_grad():
        for net, bias in ((rho.background_net, [l0]), (rho.kernel_net, [l1, raw])):
            net.linears[-1].weight.zero_()
            net.linears[-1].bias.copy_(torch.tensor(bias))
    s = rho.min_scale * math.exp(math.log1p(math.exp(raw)))
    seqs = _seqs(EVENTS[:3])
    tq = torch.tensor([5.0], dtype=torch.float64)
    ctx = history_at(seqs, seqs.keys[0], tq, events=4)
    x = torch.tensor([[0.2, 0.1]], dtype=torch.float64)
    b = rho.background.log_prob(0.5, x).exp().detach()
    kern = sum(math.exp(-((0.2 - e[1]) ** 2 + (0.1 - e[2]) ** 2) / (2 * s * s)) / (2 * math.pi * s * s) for e in EVENTS[:3])
    want = (math.exp(l0) * float(b) + math.exp(l1) * kern) / (math.exp(l0) + 3 * math.exp(l1))
    assert abs(float(rho.log_prob(0.5, x, ctx).exp().detach()) - want) < 1e-10 * want


def test_the_jump_at_an_event_is_localised_there():
    """Just after a new event at x_e the density rises near x_e; far from it, it changes by one common factor
    (the renormalisation) up to the old kernels' tiny far-field tails."""
    rho = _model(events=8, init_scale=0.1)  # 8 slots: no old event leaves the history
    with torch.no_grad():  # ranks and the time since the newest event do not move the weights: an ETAS-like model
        rho.kernel_net.linears[0].weight[:, 2].zero_()
        rho.background_net.linears[0].weight[:, 0].zero_()
    new = EVENTS + [[7.0, 3.0, -3.0]]
    before = history_at(_seqs(new), "seq_0000", torch.tensor([7.0], dtype=torch.float64), events=8)  # strictly earlier: not the event
    after = history_at(_seqs(new), "seq_0000", torch.tensor([7.0 + 1e-9], dtype=torch.float64), events=8)
    near = torch.tensor([[3.0, -3.0]], dtype=torch.float64)
    far = torch.tensor([[-3.0, 3.0], [0.0, -2.0]], dtype=torch.float64)
    lp = lambda x, c: rho.log_prob(0.7, x, c.expand(len(x), -1)).detach()  # noqa: E731
    assert float(lp(near, after) - lp(near, before)) > 3.0
    ratio = lp(far, after) - lp(far, before)
    assert float(ratio.max() - ratio.min()) < 1e-3 and float(ratio.max()) < 0


def test_bad_input():
    bg = KernelMixture(torch.randn(5, 2), rank=0)
    with pytest.raises(TypeError, match="Gaussian mixture"):
        SelfExciting(pf.FactorizedMixture(2, 2, hidden=4))  # logistic components
    with pytest.raises(ValueError, match="context_dim"):
        SelfExciting(KernelMixture(torch.randn(5, 2), rank=1, context_dim=2))
    with pytest.raises(ValueError, match="events"):
        SelfExciting(bg, events=0)
    with pytest.raises(ValueError, match="init_scale"):
        SelfExciting(bg, init_scale=1e-4)
    rho = SelfExciting(bg, events=2)
    assert rho.context_dim == 2 + 2 * 4
    with pytest.raises(ValueError, match="context"):
        rho.log_prob(0.5, torch.zeros(1, 2))
    P = model_points(_seqs(EVENTS), 2)
    assert P.context.shape == (4, rho.context_dim)


def test_catalog_adapter_scores_each_event_with_exactly_its_earlier_events():
    """CatalogSpatial under the continuous protocol gives every test event the row history_context gives it."""
    from probflux.data.events import EventCatalog
    from probflux.stpp.continuous import spatial_scores
    from probflux.stpp.selfexciting import CatalogSpatial

    torch.manual_seed(4)
    t = torch.sort(10 * torch.rand(40, dtype=torch.float64)).values
    t[20] = t[19]  # a tie: the two share a history
    x = torch.randn(40, 2, dtype=torch.float64)
    cat = EventCatalog(t, x, (0.0, 4.0, 7.0, 10.0))
    rho = _model(events=3)
    got = spatial_scores(cat, CatalogSpatial(rho, (0.0, 10.0), 3), period="test", chunk=7)
    ctx = history_context(EventSequences([torch.cat([t[:, None], x], 1)], window=(0.0, 10.0)), 3)
    sl = cat.indices("test")
    want = rho.log_prob(t[sl] / 10, x[sl], ctx[sl]).detach()
    assert torch.allclose(got, want, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="history row"):
        CatalogSpatial(rho, (0.0, 10.0), 4)


def test_from_events_anchors_the_background_at_held_out_points() -> None:
    """The benchmarks' constructor: centres are training points, the fit rows are exactly the others, the initial
    bandwidths are the k-th nearest-centre distances (floored), and the history slots are appended."""
    from probflux.densities.anchored_events import knn_bandwidth

    x = torch.randn(300, 2)
    rho, rest = SelfExciting.from_events(x, kernels=100, events=5, knn=4, min_scale=1e-3, seed=3)
    assert rho.events == 5 and rho.components == 105 and rho.context_dim == 2 + 5 * 4
    centres = rho.background._params(torch.zeros(1), None)[1].reshape(-1, 2)
    used = (centres[:, None, :] == x[None]).all(-1).any(0)
    assert int(used.sum()) == 100 and not used[rest].any() and rest.numel() == 200
    s0 = rho.background._params(torch.zeros(1), None)[2].reshape(100, 2)[:, 0].exp()
    assert torch.allclose(s0, knn_bandwidth(centres, k=4).clamp_min(2e-3), rtol=1e-5)
    with pytest.raises(ValueError, match="kernels"):
        SelfExciting.from_events(x, kernels=300)


@pytest.mark.parametrize("flux", ["mixture", "kr"])
def test_scale_mixture_is_exact_between_events(flux):
    """scales=3: three kernels per past event (each with its own age-dependent logit and bandwidth) keep the
    density one Gaussian mixture, so continuity holds to round-off between events; the grid mass is 1."""
    torch.manual_seed(2)
    bg = KernelMixture(torch.randn(40, 2), bandwidth=0.4, rank=2, hidden=8)
    rho = SelfExciting(bg, events=3, hidden=8, init_scale=0.3, scales=3, flux=flux).double()
    with torch.no_grad():
        for p in rho.parameters():
            p.add_(0.2 * torch.randn_like(p))
    assert rho.components == 40 + 9 and rho.context_dim == 2 + 3 * 4
    seqs = _seqs(EVENTS)
    tq = torch.tensor([1.5, 3.0, 4.5, 7.0, 9.5], dtype=torch.float64)
    ctx = history_at(seqs, seqs.keys[0], tq, events=3)
    x = torch.cat([rho.sample(tq / 10, context=ctx), torch.randn(5, 2, dtype=torch.float64)])
    r = pf.continuity_residual(rho, torch.cat([tq, tq]) / 10, x, torch.cat([ctx, ctx]))
    assert r.relative.max() < 1e-9, r.relative.max()
    if flux == "kr":
        return
    # normalised: every bandwidth >= min_scale = 0.07 (initially 0.075, 0.3, 1.2), trapezoid step 0.048 on [-12, 12]^2
    wide = SelfExciting(KernelMixture(torch.randn(40, 2), bandwidth=0.4, rank=0), events=3, hidden=8, init_scale=0.3,
                        min_scale=0.07, scales=3).double()
    g = torch.linspace(-12.0, 12.0, 501, dtype=torch.float64)
    h = float(g[1] - g[0])
    xy = torch.stack(torch.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)
    with torch.no_grad():
        mass = float(wide.log_prob(0.7, xy, ctx[3:4].expand(len(xy), -1)).exp().sum()) * h * h
    assert abs(mass - 1) < 1e-9, mass


def test_scale_mixture_closed_form():
    """Constant functions: each event carries sum_s e^{l_s} N(x_j, s_s^2 I), normalised by e^l0 + n sum_s e^{l_s}."""
    torch.manual_seed(0)
    rho = SelfExciting(KernelMixture(torch.randn(30, 2), bandwidth=0.4, rank=0), events=4, hidden=8,
                       init_scale=0.3, scales=2).double()
    l0, ls, raws = 0.3, [-0.7, 0.2], [0.4, 1.5]
    with torch.no_grad():
        for net, bias in ((rho.background_net, [l0]), (rho.kernel_net, ls + raws)):
            net.linears[-1].weight.zero_()
            net.linears[-1].bias.copy_(torch.tensor(bias, dtype=torch.float64))
    sig = [rho.min_scale * math.exp(math.log1p(math.exp(r))) for r in raws]
    seqs = _seqs(EVENTS[:3])
    ctx = history_at(seqs, seqs.keys[0], torch.tensor([5.0], dtype=torch.float64), events=4)
    x = torch.tensor([[0.2, 0.1]], dtype=torch.float64)
    b = float(rho.background.log_prob(0.5, x).exp().detach())
    kern = sum(math.exp(lv) * math.exp(-((0.2 - e[1]) ** 2 + (0.1 - e[2]) ** 2) / (2 * s * s)) / (2 * math.pi * s * s)
               for e in EVENTS[:3] for lv, s in zip(ls, sig))
    want = (math.exp(l0) * b + kern) / (math.exp(l0) + 3 * sum(math.exp(v) for v in ls))
    assert abs(float(rho.log_prob(0.5, x, ctx).exp().detach()) - want) < 1e-10 * want
    logit, bw = rho.kernel_parameters(torch.tensor([0.1, 1.0]))
    assert logit.shape == (2, 2) and torch.allclose(bw[0], torch.tensor(sig, dtype=torch.float64))
    with pytest.raises(ValueError, match="scales"):
        SelfExciting(KernelMixture(torch.randn(5, 2), rank=0), scales=0)


def test_catalog_context_in_chunks_is_history_context() -> None:
    """catalog_context (the long-history rows of the continuous benchmark) equals history_context at every event,
    whatever the chunk size."""
    from probflux.stpp.selfexciting import catalog_context

    torch.manual_seed(5)
    t = torch.sort(10 * torch.rand(30, dtype=torch.float64)).values
    t[11] = t[10]
    x = torch.randn(30, 2, dtype=torch.float64)
    want = history_context(EventSequences([torch.cat([t[:, None], x], 1)], window=(0.0, 10.0)), 40)
    for chunk in (1, 7, 4096):
        assert torch.equal(catalog_context(t, x, t, (0.0, 10.0), 40, chunk=chunk), want)


def _brute_marks(t, x, tq, k, radius, scale):
    """log(1 + n_j) by loops: n_j = events i with t_j < t_i < t_q, |(x_i - x_j) * scale| <= radius, slot j newest first."""
    out = torch.zeros(len(tq), k, dtype=torch.float64)
    for q, tt in enumerate(tq.tolist()):
        hist = [i for i in range(len(t)) if t[i] < tt]
        for j, J in enumerate(reversed(hist[-k:])):
            n = sum(1 for i in hist if t[i] > t[J] and float(((x[i] - x[J]) * scale).norm()) <= radius)
            out[q, j] = math.log1p(n)
    return out


def test_count_marks_match_brute_force_and_are_causal() -> None:
    """catalog_context(count_radius=...): each slot's mark is log(1 + the strictly earlier events after t_j within the
    radius of x_j), equal to a brute-force count at events (ties: events sharing a time never see each other) and
    between them, in any chunk size; the other features are history_context's; a later event changes no row."""
    from probflux.stpp.selfexciting import catalog_context

    torch.manual_seed(6)
    t = torch.sort(10 * torch.rand(40, dtype=torch.float64)).values
    t[21] = t[20]
    x = 0.6 * torch.randn(40, 2, dtype=torch.float64)
    scale = torch.tensor([2.0, 0.5], dtype=torch.float64)
    tq = torch.cat([t, torch.tensor([0.0, 5.55, 9.99], dtype=torch.float64)])
    k = 6
    plain = catalog_context(t, x, tq, (0.0, 10.0), k)
    for chunk in (1, 5, 4096):
        rows = catalog_context(t, x, tq, (0.0, 10.0), k, chunk=chunk, count_radius=0.8, count_scale=scale)
        assert rows.shape == (len(tq), 2 + k * 5)
        slots = rows[:, 2:].reshape(len(tq), k, 5)
        ref = plain[:, 2:].reshape(len(tq), k, 4)
        assert torch.equal(rows[:, :2], plain[:, :2]) and torch.equal(slots[..., [0, 1, 3, 4]], ref)
        assert torch.allclose(slots[..., 2], _brute_marks(t, x, tq, k, 0.8, scale), atol=1e-12, rtol=0)
    assert float(slots[..., 2].max()) > 0  # some event has followers in the radius
    # causality: appending a later event (close to every earlier one) changes no row before it
    t2, x2 = torch.cat([t, torch.tensor([10.0], dtype=torch.float64)]), torch.cat([x, x[-1:]])
    assert torch.equal(catalog_context(t2, x2, tq, (0.0, 10.0), k, count_radius=0.8, count_scale=scale), rows)


@pytest.mark.parametrize("flux", ["mixture", "kr"])
def test_marks_are_exact_between_events(flux) -> None:
    """marks=1 (the count mark read by the kernel MLP): still one Gaussian mixture whose parameters vary in time only
    through the ages, so continuity holds to round-off (float64, exact flux); the mark changes the density; the
    default marks=0 keeps the history_context layout."""
    from probflux.stpp.selfexciting import CatalogSpatial, catalog_context

    torch.manual_seed(7)
    bg = KernelMixture(torch.randn(30, 2), bandwidth=0.4, rank=2, hidden=8)
    rho = SelfExciting(bg, events=4, hidden=8, init_scale=0.3, scales=2, marks=1, flux=flux).double()
    with torch.no_grad():
        for p in rho.parameters():
            p.add_(0.3 * torch.randn_like(p))
    assert rho.context_dim == 2 + 4 * 5 and SelfExciting(bg, events=4).context_dim == 2 + 4 * 4
    t = torch.sort(10 * torch.rand(12, dtype=torch.float64)).values
    x = 0.5 * torch.randn(12, 2, dtype=torch.float64)
    tq = torch.tensor([3.3, 5.1, 7.7, 9.4], dtype=torch.float64)
    ctx = catalog_context(t, x, tq, (0.0, 10.0), 4, count_radius=1.0)
    assert float(ctx[:, 2:].reshape(4, 4, 5)[..., 2].max()) > 0
    xs = torch.cat([rho.sample(tq / 10, context=ctx), torch.randn(4, 2, dtype=torch.float64)])
    r = pf.continuity_residual(rho, torch.cat([tq, tq]) / 10, xs, torch.cat([ctx, ctx]))
    assert r.relative.max() < 1e-9, r.relative.max()
    if flux == "kr":
        return
    zero = ctx.clone()
    zero[:, 2:].reshape(4, 4, 5)[..., 2] = 0.0
    with torch.no_grad():
        assert not torch.allclose(rho.log_prob(tq / 10, xs[:4], ctx), rho.log_prob(tq / 10, xs[:4], zero))
        logit, bw = rho.kernel_parameters(torch.tensor([0.1, 0.2]), torch.tensor([[0.0], [2.0]]))
    assert logit.shape == (2, 2) and bw.shape == (2, 2)
    with pytest.raises(ValueError, match="marks"):
        SelfExciting(bg, marks=-1)
    with pytest.raises(ValueError, match="count mark"):
        CatalogSpatial(SelfExciting(bg, events=4), (0.0, 10.0), 4, count_radius=1.0)
