"""kernel_sums / kernel_search (stpp/): the truncated kernel sums are exact to their bound (the dense sums of
kernel_history are the reference), the fast search returns what the model then scores, and its trail only improves."""
from __future__ import annotations

import math

import torch

from probflux.data.events import EventSequences
from probflux.stpp import model_points
from probflux.stpp.kernel_history import KernelHistory, abramson_log_bandwidths
from probflux.stpp.kernel_search import tune_fast
from probflux.stpp.kernel_sums import dedupe, log_kde, log_kde_near, log_kde_var, near_abramson_log_bandwidths

F64 = torch.float64


def test_truncated_sums_are_exact_to_the_bound() -> None:
    g = torch.Generator().manual_seed(0)
    c = torch.cat([torch.randn(300, 2, generator=g, dtype=F64) * 0.05, torch.randn(300, 2, generator=g, dtype=F64) + 2])
    c, counts = dedupe(torch.cat([c, c[:50]]))
    lw = torch.log(counts / counts.sum())
    # queries in the clusters, between them, and far from every kernel (these rows take the dense fallback)
    x = torch.cat([torch.randn(200, 2, generator=g, dtype=F64), torch.tensor([[30.0, -30.0], [1.0, 1.0]], dtype=F64)])
    for tol in (1e-9, 1e-6):
        for h in (0.003, 0.05, 0.7):
            exact, near = log_kde(x, c, lw, h), log_kde_near(x, c, lw, h, tol=tol, radius=6.0)
            assert bool((near <= exact + 1e-12).all()) and float((exact - near).max()) <= math.log1p(tol) + 1e-12
        multi = log_kde_near(x, c, lw, [0.01, 0.2], tol=tol)
        assert torch.allclose(multi[1], log_kde(x, c, lw, 0.2), atol=math.log1p(tol), rtol=0)
        lh = abramson_log_bandwidths(c, lw, 0.1, 0.5)
        exact, near = log_kde_var(x, c, lw, lh), log_kde_near(x, c, lw, log_h=lh, tol=tol, radius=6.0)
        assert float((exact - near).abs().max()) <= math.log1p(tol) + 1e-12
    assert torch.allclose(near_abramson_log_bandwidths(c, lw, 0.1, 0.5), lh, atol=1e-8, rtol=0)


def test_dedupe_matches_torch_unique() -> None:
    x = torch.tensor([[1.0, 2.0], [0.0, 5.0], [1.0, 2.0], [1.0, -1.0], [0.0, 5.0], [0.0, 5.0]], dtype=F64)
    u, c = torch.unique(x, dim=0, return_counts=True)
    ours, oc = dedupe(x)
    assert torch.equal(ours, u) and torch.equal(oc, c.double())


def _clustered(n: int, m: int, seed: int) -> EventSequences:
    """Sequences whose events mostly repeat a recent event's location (with a small jitter): history matters."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        t = torch.sort(torch.rand(m, generator=g, dtype=F64))[0] * 10
        x = torch.randn(m, 2, generator=g, dtype=F64)
        for i in range(1, m):
            if float(torch.rand(1, generator=g)) < 0.7:
                x[i] = x[int(torch.randint(max(0, i - 3), i, (1,), generator=g))] + 0.02 * torch.randn(2, generator=g, dtype=F64)
        out.append(torch.cat([t[:, None], x], 1))
    return EventSequences(out, window=(0.0, 10.0))


def test_fast_search_scores_what_the_model_scores_and_only_improves() -> None:
    tr, va = _clustered(20, 25, seed=1), _clustered(6, 25, seed=2)
    E = tr.events()
    V = model_points(va, 8)
    best, trail = tune_fast(E.x, V.t, V.x, V.context, ks=(1, 2, 8), decays=(0.0, 3.0), size_slopes=(0.0, 0.5),
                            gap_slopes=(0.0, -0.2), coarse_points=60)
    assert best.w > 0.2 and best.h_l < 0.2  # the history kernels carry the repeats
    old = torch.get_default_dtype()
    torch.set_default_dtype(F64)
    try:
        rho = KernelHistory.from_tuned(E.x, best)
    finally:
        torch.set_default_dtype(old)
    Vk = model_points(va, rho.events)
    with torch.no_grad():
        assert abs(float(rho.log_prob(Vk.t, Vk.x, Vk.context).mean()) - best.val_ll) < 1e-6
    full = [tu.val_ll for stage, _, tu in trail if not stage.startswith(("kde", "coarse"))]  # all validation events
    assert full == sorted(full) and abs(full[-1] - best.val_ll) < 1e-12
    secs = [s for _, s, _ in trail]
    assert secs == sorted(secs)
