"""Population snapshots: validation, leave-one-out without leaks, normalisation, loaders, generators, load_data."""
from __future__ import annotations

import importlib
import math
from pathlib import Path

import numpy as np
import pytest
import torch

import probflux.data as pdata
from probflux.app.builders import load_data
from probflux.app.config import ConfigError, DataConfig, load_config
from probflux.data import (
    SNAPSHOTS,
    Snapshots,
    Standardization,
    TemporalPoints,
    Whitening,
    branching_tree,
    gaussian_to_8gaussians,
    gaussian_to_gaussian,
    load_snapshots,
    moons,
    registry,
    snapshot_set,
)

# the submodule itself, for its private helpers
snapmod = importlib.import_module("probflux.data.snapshots")
SYNTHETIC = ("gaussians", "8gaussians", "moons", "tree")


def rows(x: torch.Tensor) -> set[bytes]:
    """Each row's float64 bytes: set membership = exact row equality."""
    return {r.tobytes() for r in x.detach().to(torch.float64).contiguous().numpy()}


def small(k: int = 3, n: int = 4, d: int = 2, seed: int = 0) -> Snapshots:
    rng = np.random.default_rng(seed)
    return Snapshots(np.arange(float(k)), [rng.normal(size=(n + i, d)) for i in range(k)], name="toy")


def real(loader, *args, **kwargs) -> Snapshots:
    try:
        return loader(*args, **kwargs)
    except FileNotFoundError as e:
        pytest.skip(f"../shared/data not found: {e}")


# ----------------------------------------------------------------------------------- package


def test_package_keeps_old_imports_and_registry_matches_config() -> None:
    from probflux.data import BUILTIN, branching, builtin, load_points, pinwheel, split  # noqa: F401
    from probflux.data import TemporalPoints as TP
    from probflux.data.points import TemporalPoints as TP2

    assert TP is TP2 is TemporalPoints
    assert set(pdata.__all__) >= {"TemporalPoints", "Snapshots", "SNAPSHOTS", "load_snapshots", "snapshot_set"}
    assert all(hasattr(pdata, n) for n in pdata.__all__)
    assert registry.names("snapshots") == tuple(SNAPSHOTS)


# --------------------------------------------------------------------------------- Snapshots


def test_snapshots_basics_and_to_points() -> None:
    s = small(3, 4, 2)
    assert len(s) == 3 and s.dim == 2 and s.sizes == (4, 5, 6) and s.n_cells == 15
    assert s.times.dtype == torch.float64 and all(x.dtype == torch.float64 for x in s.samples)
    assert s.time_map() == (0.0, 2.0)
    p = s.to_points()
    assert isinstance(p, TemporalPoints) and len(p) == 15 and p.dim == 2 and p.source == "toy"
    assert torch.equal(p.t, torch.tensor([0.0] * 4 + [1.0] * 5 + [2.0] * 6, dtype=torch.float64))
    assert torch.equal(p.x, torch.cat(s.samples))
    assert "K=3" in repr(s) and "sizes=[4, 5, 6]" in repr(s)
    f = s.to(torch.float32)
    assert f.samples[0].dtype == torch.float32 and f.to_points().t.dtype == torch.float32


def test_from_labels_groups_sorted_labels_keeping_row_order() -> None:
    x = np.arange(12.0).reshape(6, 2)
    s = Snapshots.from_labels(x, [2, 0, 2, 1, 0, 2], times=[0.0, 0.5, 3.0], name="lab")
    assert s.times.tolist() == [0.0, 0.5, 3.0] and s.sizes == (2, 1, 3)
    assert s.samples[0][:, 0].tolist() == [2.0, 8.0] and s.samples[2][:, 0].tolist() == [0.0, 4.0, 10.0]
    with pytest.raises(ValueError, match=r"one time per distinct label \(3"):
        Snapshots.from_labels(x, [2, 0, 2, 1, 0, 2], times=[0.0, 1.0])


def _nan_at(k: int, r: int, c: int, value: float = float("nan")) -> list[np.ndarray]:
    xs = [np.zeros((5, 3)) for _ in range(3)]
    xs[k][r, c] = value
    return xs


@pytest.mark.parametrize(
    "times, samples, message",
    [
        ([0.0], [np.zeros((3, 2))], r"need at least 2 snapshots \(K >= 2\), got K = 1 \(toy\)"),
        ([0.0, 1.0], [np.zeros((3, 2))], r"samples has 1 snapshots but times has 2"),
        ([0.0, 1.0, 2.0], [np.zeros((3, 2)), np.zeros((0, 2)), np.zeros((3, 2))], r"^snapshot 1 \(t=1\) is empty \(0 cells\) in toy$"),
        ([0.0, 1.0, 2.5], [np.zeros((3, 2)), np.zeros((3, 2)), np.zeros((3, 4))],
         r"^snapshot 2 \(t=2\.5\) has D = 4 but snapshot 0 has D = 2"),
        ([0.0, 1.0], [np.zeros((3, 2)), np.zeros(3)], r"snapshot 1 \(t=1\) must have shape \(n, D\) with D >= 1; got \(3,\)"),
        ([0.0, 1.0, 2.0], _nan_at(1, 3, 2), r"^snapshot 1 \(t=1\) contains NaN at row 3 \(column 2\) of toy$"),
        ([0.0, 1.0, 2.0], _nan_at(2, 4, 0, float("-inf")), r"^snapshot 2 \(t=2\) contains inf at row 4 \(column 0\) of toy$"),
        ([0.0, 2.0, 1.0], [np.zeros((3, 2))] * 3, r"times must be strictly increasing, but times\[2\] = 1 < times\[1\] = 2"),
        ([0.0, 1.0, 1.0], [np.zeros((3, 2))] * 3, r"duplicate time 1 at indices 1 and 2"),
        ([1.0, 0.0, 1.0], [np.zeros((3, 2))] * 3, r"duplicate time 1 at indices 0 and 2"),
        ([0.0, float("nan")], [np.zeros((3, 2))] * 2, r"times contains NaN at index 1"),
        ([[0.0, 1.0]], [np.zeros((3, 2))] * 2, r"times must have shape \(K,\); got \(1, 2\)"),
    ],
)
def test_snapshots_validation_errors(times, samples, message) -> None:
    with pytest.raises(ValueError, match=message):
        Snapshots(times, samples, name="toy")


def test_snapshots_type_errors() -> None:
    with pytest.raises(TypeError, match="samples must be a list"):
        Snapshots([0.0, 1.0], np.zeros((2, 3, 2)))
    with pytest.raises(TypeError, match=r"snapshot 1 \(t=1\) must hold real numbers"):
        Snapshots([0.0, 1.0], [np.zeros((2, 1)), np.array([["a"], ["b"]])])


# ------------------------------------------------------------------------------- leave_out


def test_leave_out_never_leaks_and_keeps_time_map() -> None:
    s = branching_tree(n=300, seed=1)
    for k in (1, 2):
        rest, t_out, held = s.leave_out(k)
        assert t_out == float(s.times[k]) and torch.equal(held, s.samples[k])
        assert len(rest) == 3 and t_out not in rest.times.tolist()
        assert rows(held).isdisjoint(rows(rest.pooled()))
        assert rest.time_map() == s.time_map() == (0.0, 1.0)
        held.zero_()  # a copy: the source is untouched
        assert not torch.equal(s.samples[k], held)


@pytest.mark.parametrize("k", [0, 3, -1, 4])
def test_leave_out_rejects_endpoints_and_out_of_range(k: int) -> None:
    with pytest.raises(ValueError, match=rf"cannot leave out snapshot {k}: must be an interior snapshot index .* in 1\.\.2; toy has K = 4"):
        small(4).leave_out(k)


def test_leave_out_endpoints_on_request() -> None:
    s = small(4)
    rest, t_out, held = s.leave_out(3, allow_endpoints=True)
    assert t_out == 3.0 and rest.times.tolist() == [0.0, 1.0, 2.0] and rest.time_map() == (0.0, 3.0)
    one, t0, _ = small(2).leave_out(0, allow_endpoints=True)  # K = 1 is allowed here
    assert len(one) == 1 and t0 == 0.0
    with pytest.raises(ValueError, match="toy has K = 2 snapshots, so none is interior"):
        small(2).leave_out(1)
    with pytest.raises(TypeError, match="k must be an int"):
        s.leave_out(1.0)  # type: ignore[arg-type]


# --------------------------------------------------------------------- standardise, whiten


def test_standardize_pooled_and_given_stats() -> None:
    s = small(3, 50, 3, seed=2)
    z, st = s.standardize()
    pooled = s.pooled()
    assert isinstance(st, Standardization)
    shift, scale = st  # unpacks as a tuple
    torch.testing.assert_close(shift, pooled.mean(0))
    torch.testing.assert_close(scale, pooled.std(0))
    zp = z.pooled()
    torch.testing.assert_close(zp.mean(0), torch.zeros(3, dtype=torch.float64), atol=1e-12, rtol=0)
    torch.testing.assert_close(zp.std(0), torch.ones(3, dtype=torch.float64))
    torch.testing.assert_close(st.invert(zp), pooled)
    other = small(3, 10, 3, seed=3)
    z2, st2 = other.standardize(st)
    assert st2.shift is not None and torch.equal(st2.shift, st.shift)
    torch.testing.assert_close(z2.samples[1], (other.samples[1] - shift) / scale)
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        other.standardize((torch.zeros(2), torch.ones(2)))
    with pytest.raises(ValueError, match="scale finite and > 0"):
        other.standardize((torch.zeros(3), torch.zeros(3)))


def test_whiten_identity_covariance_round_trip_and_given_stats() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(size=(3, 3))
    s = Snapshots([0.0, 1.0], [rng.normal(size=(400, 3)) @ a + 5, rng.normal(size=(300, 3)) @ a], name="w")
    z, w = s.whiten()
    assert isinstance(w, Whitening) and w.matrix.shape == (3, 3) and w.dim == 3
    zp = z.pooled()
    torch.testing.assert_close(zp.mean(0), torch.zeros(3, dtype=torch.float64), atol=1e-10, rtol=0)
    torch.testing.assert_close(torch.cov(zp.T), torch.eye(3, dtype=torch.float64), atol=1e-10, rtol=0)
    torch.testing.assert_close(w.invert(zp), s.pooled())
    assert (w.eigenvalues[:-1] >= w.eigenvalues[1:]).all()
    assert math.isclose(w.log_abs_det, float(torch.linalg.det(w.matrix).abs().log()), rel_tol=1e-9)
    z2, w2 = small(2, 5, 3).whiten(w)
    assert w2 is w and torch.allclose(z2.samples[0], w.apply(small(2, 5, 3).samples[0]))
    with pytest.raises(ValueError, match="fitted in D = 3"):
        small(2, 5, 2).whiten(w)
    flat = Snapshots([0.0, 1.0], [np.c_[np.arange(5.0), np.arange(5.0)], np.c_[np.arange(4.0), np.arange(4.0)]], name="flat")
    with pytest.raises(ValueError, match="cannot whiten flat: the covariance of its 9 cells is singular"):
        flat.whiten()


# ------------------------------------------------------------------------------- generators


@pytest.mark.parametrize("name", SYNTHETIC)
def test_generators_deterministic_per_seed(name: str) -> None:
    a, b, c = (snapshot_set(name, n=64, seed=s) for s in (3, 3, 4))
    assert a.sizes == (64,) * len(a) and a.name == name
    assert all(torch.equal(x, y) for x, y in zip(a.samples, b.samples))
    assert not torch.equal(a.samples[-1], c.samples[-1])
    assert a.times[0] == 0.0 and a.times[-1] == 1.0


def test_generator_shapes_and_distributions() -> None:
    g = gaussian_to_gaussian(n=4000, seed=0, dim=3)
    assert len(g) == 2 and g.dim == 3
    torch.testing.assert_close(g.samples[0].mean(0), torch.tensor([-2.0, 0, 0], dtype=torch.float64), atol=0.05, rtol=0)
    torch.testing.assert_close(g.samples[1].mean(0), torch.tensor([2.0, 0, 0], dtype=torch.float64), atol=0.1, rtol=0)
    assert (g.samples[0].std(0) - 0.5).abs().max() < 0.03 and (g.samples[1].std(0) - 1.0).abs().max() < 0.05
    g2 = gaussian_to_gaussian(n=10, m0=[0, 1], m1=[3, 3], s0=1.0, s1=0.1, times=(2.0, 5.0))
    assert g2.times.tolist() == [2.0, 5.0]
    with pytest.raises(ValueError, match="m0 must be 2 finite numbers"):
        gaussian_to_gaussian(n=10, m0=[1, 2, 3])
    e = gaussian_to_8gaussians(n=4000, seed=0)
    r = e.samples[1].norm(dim=1)
    assert abs(float(r.mean()) - 5.0) < 0.1 and abs(float(e.samples[0].std()) - 1.0) < 0.05
    m = moons(n=2000, seed=0)
    assert len(m) == 2 and m.dim == 2 and float(m.samples[1][:, 0].min()) > -5 and float(m.samples[1][:, 0].max()) < 6
    t = branching_tree(n=4000, seed=0)
    assert len(t) == 4 and t.times.tolist() == pytest.approx([0, 1 / 3, 2 / 3, 1])
    # 1, 2, 4 and 4 branches: every cell lies near one of the documented centres, each equally populated
    centres_y = ([0.0], [-1.5, 1.5], [-2.9, -1.1, 1.1, 2.9], [-4.3, -0.7, 0.7, 4.3])
    for k, cy in enumerate(centres_y):
        x = t.samples[k]
        assert abs(float(x[:, 0].mean()) - (-3 + 6 * float(t.times[k]))) < 0.05
        dist = (x[:, 1:2] - torch.tensor(cy, dtype=torch.float64)).abs()
        assert float(dist.min(1).values.max()) < 5 * 0.3
        share = torch.bincount(dist.argmin(1), minlength=len(cy)).double() / len(x)
        assert torch.allclose(share, torch.full_like(share, 1 / len(cy)), atol=0.04)
    with pytest.raises(ValueError, match="n must be a positive int"):
        branching_tree(n=0)


def test_registry_errors() -> None:
    with pytest.raises(ValueError, match=r"unknown snapshot data set 'mnist'; "
                                         r"valid names: cite, emt, emt10, weinreb, gaussians, 8gaussians, moons, tree"):
        snapshot_set("mnist")


# ------------------------------------------------------------------------------ data root


def test_data_root_env_var_first_and_errors_name_every_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "single_cell" / "tigon"
    folder.mkdir(parents=True)
    x = np.arange(12.0).reshape(6, 2)
    np.savez(folder / "lineage_weinreb_2d.npz", X=x, time_index=np.array([0, 1, 2, 0, 1, 2]))
    monkeypatch.setenv("PROBFLUX_DATA", str(tmp_path))
    assert snapmod.data_root_candidates()[0] == tmp_path and snapmod.data_root() == tmp_path
    w = pdata.weinreb_2d()
    assert w.times.tolist() == [2.0, 4.0, 6.0] and w.sizes == (2, 2, 2) and str(tmp_path) in w.source
    assert snapmod.data_root_candidates()[1].parts[-2:] == ("shared", "data")
    monkeypatch.setattr(snapmod, "data_root_candidates", lambda: [tmp_path / "a", tmp_path / "b"])
    with pytest.raises(FileNotFoundError,
                       match=r"single_cell/tigon/emt_a549_3d\.npz not found; tried .*[/\\]a[/\\]single_cell.*[/\\]b[/\\]single_cell"):
        pdata.emt_3d()
    with pytest.raises(FileNotFoundError, match=r"no data folder found; tried .*[/\\]a'.*[/\\]b'"):
        snapmod.data_root()


# -------------------------------------------------------------------------------- real data


def test_cite_sizes_times_and_pcs() -> None:
    c = real(pdata.cite)
    assert c.name == "cite" and c.times.tolist() == [2.0, 3.0, 4.0, 7.0]
    assert c.sizes == (6071, 7643, 8485, 7195) and c.dim == 5
    c2 = pdata.cite(pcs=2, days=(2, 7))
    assert c2.dim == 2 and c2.sizes == (6071, 7195) and torch.equal(c2.samples[1], c.samples[3][:, :2])
    with pytest.raises(ValueError, match=r"pcs must be an int in 1\.\.50, got 51"):
        pdata.cite(pcs=51)
    with pytest.raises(ValueError, match=r"no data for day\(s\) \[5\]"):
        pdata.cite(days=(2, 5))


@pytest.mark.parametrize(
    "loader, name, dim, times, sizes",
    [
        (pdata.emt_3d, "emt", 3, [0, 1 / 3, 1, 3, 7], (577, 885, 788, 754, 129)),
        (pdata.weinreb_2d, "weinreb", 2, [2, 4, 6], (1429, 3781, 5788)),
        (pdata.emt_10d, "emt10", 10, [0, 1, 2, 3], (577, 885, 788, 883)),
    ],
)
def test_real_loaders_match_readme(loader, name: str, dim: int, times: list[float], sizes: tuple[int, ...]) -> None:
    s = real(loader)
    assert s.name == name and s.dim == dim and s.sizes == sizes
    assert s.times.tolist() == pytest.approx(times, abs=1e-15)
    assert s.source.endswith((".npz", ".csv"))
    if name == "emt10":
        assert float(s.pooled().min()) >= 0 and float(s.pooled().max()) <= 1


# ------------------------------------------------------------------------- config, load_data


def test_config_fields_and_checks() -> None:
    d = DataConfig()
    assert d.pcs == 5 and d.leave_out is None and d.whiten is False
    cfg = load_config(None, ["data.name=cite", "data.pcs=10", "data.leave_out=2", "data.whiten=true"])
    assert (cfg.data.name, cfg.data.pcs, cfg.data.leave_out, cfg.data.whiten) == ("cite", 10, 2, True)
    for name in registry.names("snapshots"):
        assert load_config(None, [f"data.name={name}"]).data.name == name
    for overrides, message in [
        (["data.name=mnist"],
         "data.name: must be one of 'pinwheel', 'branching', 'file', got 'mnist', or a population-snapshot data set: 'cite', 'emt'"),
        (["data.pcs=0"], "data.pcs: must lie in [1, 50], got 0"),
        (["data.name=cite", "data.leave_out=0"], "data.leave_out: must be an interior snapshot index >= 1"),
        (["data.leave_out=1"], "data.leave_out: only available for population-snapshot data sets"),
        (["data.whiten=true"], "data.whiten: only available for population-snapshot data sets"),
        (["data.name=tree", "data.path=x.npz"], "data.path: is set but data.name is 'tree'"),
    ]:
        with pytest.raises(ConfigError, match=__import__("re").escape(message)):
            load_config(None, overrides)
    with pytest.raises(ValueError, match="data.leave_out is only available for population-snapshot data sets"):
        load_data(DataConfig(name="pinwheel", n=50, leave_out=1), 0)


def _data(name: str = "tree", **kw) -> DataConfig:
    return DataConfig(name=name, **{"n": 200, **kw})


def test_load_data_leave_out_test_is_exactly_the_held_out_snapshot() -> None:
    cfg = _data(leave_out=2, val_fraction=0.2, test_fraction=0.3)
    full = branching_tree(n=200, seed=7)
    train, val, test, norm = load_data(cfg, 7)
    assert torch.equal(test.x, full.samples[2]) and (test.t == full.times[2]).all()
    others = rows(torch.cat([full.samples[k] for k in (0, 1, 3)]))
    assert rows(train.x) | rows(val.x) == others and rows(train.x).isdisjoint(rows(val.x))
    assert rows(test.x).isdisjoint(rows(train.x) | rows(val.x))
    assert len(val) == 3 * 40 and len(train) == 3 * 160  # test_fraction is ignored with leave_out
    assert (norm.t0, norm.t1) == (0.0, 1.0)
    for p in (train, val, test):
        s = norm.t_to_model(p.t)
        assert bool(((s >= 0) & (s <= 1)).all())
    assert 0 < float(norm.t_to_model(test.t[0])) < 1
    # standardisation statistics come from the training cells only
    torch.testing.assert_close(norm.shift, train.x.mean(0))
    torch.testing.assert_close(norm.scale, train.x.std(0))
    assert not torch.allclose(norm.shift, torch.cat(full.samples).mean(0))
    # the same seed gives the same split; load_snapshots returns the same data
    tr_s, t_out, cells, norm2 = load_snapshots(cfg, 7)
    assert torch.equal(tr_s.to_points().x, train.x) and torch.equal(tr_s.to_points().t, train.t)
    assert t_out == pytest.approx(2 / 3) and torch.equal(cells, test.x)
    assert norm2.state_dict() == norm.state_dict() and tr_s.time_map() == (0.0, 1.0)
    assert torch.equal(load_data(cfg, 7)[0].x, train.x)


def test_load_data_without_leave_out_splits_every_snapshot() -> None:
    cfg = _data(val_fraction=0.1, test_fraction=0.25)
    train, val, test, norm = load_data(cfg, 0)
    full = branching_tree(n=200, seed=0)
    for tk in full.times.tolist():
        assert int((val.t == tk).sum()) == 20 and int((test.t == tk).sum()) == 50 and int((train.t == tk).sum()) == 130
    assert rows(train.x) | rows(val.x) | rows(test.x) == rows(full.pooled())
    assert len(rows(train.x)) + len(rows(val.x)) + len(rows(test.x)) == 800
    tr_s, t_out, cells, _ = load_snapshots(cfg, 0)
    assert t_out is None and cells is None and tr_s.sizes == (130,) * 4
    with pytest.raises(ValueError, match=r"data.leave_out: gaussians has K = 2 snapshots at t = 0, 1; allowed: none"):
        load_data(_data("gaussians", leave_out=1), 0)
    with pytest.raises(ValueError,
                       match=r"data.leave_out: tree has K = 4 snapshots .* allowed: an interior snapshot index in 1\.\.2; got 3"):
        load_data(_data(leave_out=3), 0)
    with pytest.raises(ValueError, match=r"snapshot 0 of tree at t = 0 is outside the data interval \[0\.5, 1\]"):
        load_data(_data(t0=0.5), 0)
    unscaled = load_data(_data(standardize=False), 0)[3]
    assert torch.equal(unscaled.scale, torch.ones(2, dtype=torch.float64))


def test_load_data_whiten_uses_training_cells() -> None:
    cfg = _data("8gaussians", whiten=True, val_fraction=0.2)
    train, val, test, norm = load_data(cfg, 1)
    assert torch.equal(norm.shift, torch.zeros(2, dtype=torch.float64)) and torch.equal(norm.scale, torch.ones(2, dtype=torch.float64))
    torch.testing.assert_close(torch.cov(train.x.T), torch.eye(2, dtype=torch.float64), atol=1e-10, rtol=0)
    tr_s, _, _, _ = load_snapshots(cfg, 1)
    assert torch.equal(tr_s.to_points().x, train.x) and "whitened" in tr_s.source
    raw = load_data(_data("8gaussians", val_fraction=0.2), 1)
    _, w = Snapshots([0.0], [raw[0].x], _min_snapshots=1).whiten()
    torch.testing.assert_close(val.x, w.apply(raw[1].x))
    torch.testing.assert_close(test.x, w.apply(raw[2].x))


def test_load_data_cite_leave_out() -> None:
    full = real(pdata.cite, pcs=5)
    cfg = DataConfig(name="cite", pcs=5, leave_out=2, val_fraction=0.1)
    train, val, test, norm = load_data(cfg, 0)
    assert (norm.t0, norm.t1) == (2.0, 7.0) and (test.t == 4.0).all() and torch.equal(test.x, full.samples[2])
    assert len(train) + len(val) == 6071 + 7643 + 7195 and train.dim == 5
    assert rows(test.x).isdisjoint(rows(train.x) | rows(val.x))
    assert float(norm.t_to_model(test.t[0])) == pytest.approx(0.4)


# ------------------------------------------------------------------------------------- user files


def test_snapshot_npz_trains_and_evaluates_from_the_cli(tmp_path: Path) -> None:
    """A single-cell time course as ``.npz`` with ``X`` and ``time_index`` (plus ``times``): data.path with
    data.leave_out holds out exactly that snapshot, and ``probflux fit`` / ``evaluate`` run on it."""
    import json

    from probflux.app.cli import main

    rng = np.random.default_rng(0)
    idx = np.repeat([0, 1, 2], [60, 50, 40])
    x = rng.normal(size=(150, 2)) + idx[:, None]
    np.savez(tmp_path / "course.npz", X=x, time_index=idx, times=np.array([0.0, 0.5, 2.0]))
    s = pdata.read_snapshots(tmp_path / "course.npz")
    assert s.times.tolist() == [0.0, 0.5, 2.0] and s.sizes == (60, 50, 40)
    np.testing.assert_array_equal(s.samples[1].numpy(), x[idx == 1])
    cfg = DataConfig(name="file", path=str(tmp_path / "course.npz"), leave_out=1, val_fraction=0.1)
    tr, va, te, norm = load_data(cfg, seed=0)
    assert torch.equal(te.x, torch.from_numpy(x[idx == 1])) and bool((te.t == 0.5).all()) and (norm.t0, norm.t1) == (0.0, 2.0)
    assert sorted(set(tr.t.tolist())) == [0.0, 2.0] and len(tr) + len(va) == 100
    out = tmp_path / "run"
    rc = main(["fit", "configs/tiny.yaml", "data.name=file", f"data.path={tmp_path / 'course.npz'}", "data.leave_out=1", "data.t0=null",
               "data.t1=null", "objective.likelihood=snapshots", "model.components=2", "model.hidden=8", "train.steps=5",
               "evaluate.particles=20", "evaluate.steps=5", "evaluate.heldout_cells=30", f"out={out}", "--no-plots"])
    assert rc == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["heldout_time"] == 0.5 and metrics["heldout_cells"] == 50 and np.isfinite(metrics["heldout_w1_transport"])
    assert main(["evaluate", str(out)]) == 0


def test_snapshot_csv_with_a_day_column_and_errors(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    day = np.repeat([2.0, 4.0, 7.0], 5)
    x = rng.normal(size=(15, 3))
    rows = (f"{d:g},{a:.17g},{b:.17g},{c:.17g}" for d, (a, b, c) in zip(day, x))
    (tmp_path / "cells.csv").write_text("day,x1,x2,x3\n" + "\n".join(rows) + "\n")
    s = pdata.read_snapshots(tmp_path / "cells.csv")
    assert s.times.tolist() == [2.0, 4.0, 7.0] and s.dim == 3
    np.testing.assert_array_equal(s.samples[2].numpy(), x[10:])
    with pytest.raises(ValueError, match=r"cells\.csv: population snapshots .* cannot be read as data\.kind='points'"):
        load_data(DataConfig(name="file", path=str(tmp_path / "cells.csv"), kind="points"), seed=0)
    np.savez(tmp_path / "nox.npz", cells=x, time_index=np.arange(15) % 3)
    with pytest.raises(ValueError, match=r"nox\.npz: has 'time_index' \(snapshot labels\) but no 'X'"):
        pdata.read_snapshots(tmp_path / "nox.npz")
    with pytest.raises(ValueError, match=r"data\.leave_out: only available for population-snapshot data sets .* with data\.kind='events'"):
        load_config(None, ["data.name=file", "data.path=a.csv", "data.kind=events", "data.leave_out=1"])
