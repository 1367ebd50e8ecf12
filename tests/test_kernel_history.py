"""KernelHistory (stpp/kernel_history.py): at construction it is the kernel baseline of benchmarks/peers/kernel_stpp.py,
its time-weighted background and decayed history weights are closed forms, the extended grid contains the baseline's
point, it is causal and normalised with thousands of kernels, and refine never keeps anything worse on validation.
The generic contract runs through conftest.FAMILIES."""
from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import torch

from probflux.data.events import EventSequences
from probflux.stpp import history_at, model_points
from probflux.stpp.kernel_history import (
    KernelHistory,
    cross_fit_background,
    log_kde,
    log_kde_t,
    log_local_decay,
    refine,
    slot_ages,
    slots_from_context,
    tune_extended,
    tune_refined,
)

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "peers" / "kernel_stpp.py"
_spec = importlib.util.spec_from_file_location("kernel_stpp", _PATH)
ks = importlib.util.module_from_spec(_spec)
sys.modules["kernel_stpp"] = ks
_spec.loader.exec_module(ks)

F64 = torch.float64


def _seqs(n: int = 4, m: int = 15, seed: int = 0) -> EventSequences:
    g = torch.Generator().manual_seed(seed)
    return EventSequences([torch.cat([torch.sort(torch.rand(m, generator=g, dtype=F64))[0][:, None] * 10,
                                      torch.randn(m, 2, generator=g, dtype=F64)], 1) for _ in range(n)], window=(0.0, 10.0))


def _f64(fn):
    old = torch.get_default_dtype()
    torch.set_default_dtype(F64)
    try:
        return fn()
    finally:
        torch.set_default_dtype(old)


def test_at_construction_it_is_the_kernel_baseline() -> None:
    bg = torch.randn(40, 2, dtype=F64)
    bg = torch.cat([bg, bg[:7]])  # repeated locations weigh more, as in the baseline
    P = model_points(_seqs(), 4)
    for k in (1, 4):
        ref = ks.KernelSTPP(bg, 0.4, 0.2, 0.3, k).log_prob(P.t, P.x, P.context)
        rho = _f64(lambda k=k: KernelHistory(bg, 0.4, 0.2, 0.3, k))
        ours = rho.log_prob(P.t, P.x, model_points(_seqs(), k).context)
        assert torch.allclose(ours, ref, rtol=0, atol=1e-12)


def test_time_weighted_background_and_decayed_history_closed_forms() -> None:
    centres = torch.tensor([[0.0, 0.0], [1.0, 0.5]], dtype=F64)
    times, lw = torch.tensor([0.2, 0.7], dtype=F64), torch.log(torch.tensor([0.25, 0.75], dtype=F64))
    t, x, h, ht = torch.tensor([0.4], dtype=F64), torch.tensor([[0.3, -0.1]], dtype=F64), 0.5, 0.3
    n = lambda x, c, h: math.exp(-0.5 * sum((a - b) ** 2 for a, b in zip(x, c)) / h**2) / (2 * math.pi * h**2)  # noqa: E731
    a = [0.25 * math.exp(-0.5 * (0.2 / ht) ** 2), 0.75 * math.exp(-0.5 * (0.3 / ht) ** 2)]
    want = (a[0] * n((0.3, -0.1), (0, 0), h) + a[1] * n((0.3, -0.1), (1, 0.5), h)) / sum(a)
    assert abs(float(log_kde_t(t, x, times, centres, lw, h, ht)) - math.log(want)) < 1e-12
    # history weights proportional to exp(-decay * age) over the valid slots among the first k
    xs = torch.tensor([[[0.0, 0.0], [1.0, 1.0], [5.0, 5.0]]], dtype=F64)
    valid, ages = torch.tensor([[True, True, True]]), torch.tensor([[0.1, 0.4, 0.0]], dtype=F64)
    pi = [math.exp(-2.0 * 0.1), math.exp(-2.0 * 0.4)]
    want = (pi[0] * n((0.3, -0.1), (0, 0), h) + pi[1] * n((0.3, -0.1), (1, 1), h)) / sum(pi)
    assert abs(float(log_local_decay(x, xs, valid, ages, h, 2, 2.0)) - math.log(want)) < 1e-12
    # decay 0 is the baseline's uniform 1/k' (and the multi-bandwidth KDE equals one bandwidth at a time)
    assert torch.allclose(log_local_decay(x, xs, valid, ages, h, 2, 0.0), ks.log_local(x, xs, valid, h, 2), atol=1e-14, rtol=0)
    multi = log_kde(x, centres, lw, [0.2, 0.5])
    assert torch.allclose(multi[1], log_kde(x, centres, lw, 0.5), atol=1e-14, rtol=0)


def test_extended_grid_contains_the_baseline_and_the_model_scores_what_it_tuned() -> None:
    tr, va = _seqs(6, 20, seed=1), _seqs(3, 20, seed=2)
    E = tr.events()
    V = model_points(va, 8)
    base = tune_refined(E.x, V.x, slots_from_context(V.context, 2), coarse=5, ks=(1, 2, 8))
    ext = tune_extended(E.x, E.t / 10.0, V.t, V.x, V.context, base, ks=(1, 2, 8), decays=(0.0, 5.0), h_ts=(0.2,))
    assert ext.val_ll >= base.val_ll - 1e-12
    rho = _f64(lambda: KernelHistory.from_tuned(E.x, ext, times=E.t / 10.0))
    Vk = model_points(va, rho.events)
    with torch.no_grad():
        assert abs(float(rho.log_prob(Vk.t, Vk.x, Vk.context).mean()) - ext.val_ll) < 1e-10
    ages = slot_ages(V.t, V.context, 2)
    assert bool((ages[slots_from_context(V.context, 2)[1]] > 0).all())


def test_a_future_event_changes_no_earlier_density() -> None:
    rho = _f64(lambda: KernelHistory(torch.randn(30, 2, dtype=F64), 0.4, 0.2, 0.3, 3, decay=1.0, times=torch.rand(30, dtype=F64),
                                     h_t=0.2))
    rows = [[1.0, 0.0, 0.0], [2.5, 1.0, -0.5], [4.0, -1.0, 1.0]]
    before = EventSequences([torch.tensor(rows, dtype=F64)], window=(0.0, 10.0))
    after = EventSequences([torch.tensor(rows + [[6.0, 2.0, 2.0]], dtype=F64)], window=(0.0, 10.0))
    tq = torch.tensor([0.5, 2.5, 4.0, 5.9], dtype=F64)
    x = torch.randn(4, 2, dtype=F64)
    lp0 = rho.log_prob(tq / 10, x, history_at(before, before.keys[0], tq, events=3))
    lp1 = rho.log_prob(tq / 10, x, history_at(after, after.keys[0], tq, events=3))
    assert torch.equal(lp0, lp1)


def test_normalised_with_thousands_of_kernels() -> None:
    g = torch.Generator().manual_seed(0)
    rho = _f64(lambda: KernelHistory(torch.randn(2000, 2, generator=g, dtype=F64), 0.3, 0.15, 0.4, 2, decay=2.0,
                                     times=torch.rand(2000, generator=g, dtype=F64), h_t=0.1))
    ctx = torch.tensor([[0.3, 1.1, 1.0, 0.0, 0.5, 0.5, 1.0, 0.1, -1.0, 0.0]], dtype=F64)
    u = torch.linspace(-6, 6, 161, dtype=F64)
    grid = torch.cartesian_prod(u, u)
    with torch.no_grad():  # a quadrature needs no graph (and takes the chunked path)
        lp = rho.log_prob(torch.full((grid.shape[0],), 0.4, dtype=F64), grid, ctx.expand(grid.shape[0], -1))
    assert abs(float(lp.exp().sum()) * float(u[1] - u[0]) ** 2 - 1.0) < 1e-4


def test_cross_fit_leaves_the_own_fold_out_and_refine_never_keeps_worse() -> None:
    x = torch.tensor([[0.0, 0.0], [0.0, 0.0], [1.0, 0.0], [3.0, 0.0]], dtype=F64)
    groups = torch.tensor([0, 0, 1, 2])  # folds 0, 0, 1, 0 (block 1, two folds)
    lb = cross_fit_background(x, groups, 0.5, folds=2)
    assert abs(float(lb[0]) - float(log_kde(x[:1], x[2:3], torch.zeros(1, dtype=F64), 0.5))) < 1e-12
    tr, va = _seqs(6, 20, seed=3), _seqs(2, 20, seed=4)
    E = tr.events()
    rho = _f64(lambda: KernelHistory(E.x, 0.5, 0.3, 0.3, 4, hidden=8))
    P, V = model_points(tr, 4), model_points(va, 4)
    g = torch.repeat_interleave(torch.arange(len(tr)), torch.tensor(tr.lengths))
    fit = (P.t, P.x, P.context, cross_fit_background(E.x, g, 0.5))
    val = (V.t, V.x, V.context, rho.log_background(V.t, V.x))
    res = refine(rho, fit, val, seconds=60.0, max_steps=20, eval_every=5, lr=3e-2)
    assert res.val_ll >= res.start_val_ll and res.steps == 20
    with torch.no_grad():
        assert abs(float(rho.log_prob(V.t, V.x, V.context).mean()) - res.val_ll) < 1e-10


def test_adaptive_background_closed_form_and_exact_flux() -> None:
    import probflux as pf
    from probflux.stpp.kernel_history import ComponentMixture, abramson_log_bandwidths

    c, lw = torch.tensor([[0.0, 0.0], [0.1, 0.0], [2.0, 0.0]], dtype=F64), torch.log(torch.full((3,), 1 / 3, dtype=F64))
    f = [math.exp(float(log_kde(c[i:i + 1], c, lw, 0.5))) for i in range(3)]
    g = math.exp(sum(math.log(v) for v in f) / 3)
    want = torch.tensor([math.log(0.5 * (v / g) ** -0.5) for v in f], dtype=F64)  # Abramson: h_m = h (f_m / g)^(-1/2)
    assert torch.allclose(abramson_log_bandwidths(c, lw, 0.5, 0.5), want, atol=1e-12, rtol=0)
    rho = _f64(lambda: KernelHistory(torch.randn(60, 2, dtype=F64), 0.4, 0.2, 0.3, 4, alpha=0.5, decay=1.0, size_slope=0.3,
                                     gap_slope=-0.2))
    P = model_points(_seqs(), 4)
    with torch.no_grad():
        assert torch.allclose(rho.log_prob(P.t, P.x, P.context), ComponentMixture._log_prob(rho, P.t, P.x, P.context),
                              atol=1e-12, rtol=0)
    assert float(pf.continuity_residual(rho, P.t, P.x, P.context).relative.max()) < 1e-9
