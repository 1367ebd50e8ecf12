"""probflux.data.events: EventSequences validation, the Neural STPP loaders, windows and the Pinwheel–Hawkes generator.

Loader tests read ``../shared/data/stpp`` (or ``$PROBFLUX_DATA``) and are skipped when it is absent.
"""
from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch

import probflux.data as pdata
from probflux.data import EVENT_DATASETS, EventSequences, TemporalPoints, event_dataset, pinwheel_hawkes, split_sequences, windows
from probflux.data import events as ev


def real(loader, *args, **kwargs) -> EventSequences:
    try:
        return loader(*args, **kwargs)
    except FileNotFoundError as e:
        pytest.skip(f"../shared/data (stpp/) not found: {e}")


def toy(**kw) -> EventSequences:
    a = np.array([[0.5, 1.0, 2.0], [1.0, 3.0, 4.0], [2.5, 5.0, 6.0]])
    b = np.array([[0.1, -1.0, 0.0], [3.0, 1.0, 2.0]])
    return EventSequences([a, b], ["a", "b"], window=(0.0, 4.0), name="toy", **kw)


# ------------------------------------------------------------------------------- EventSequences


def test_package_exports() -> None:
    for n in ("EventSequences", "earthquakes_jp", "pinwheel_hawkes", "windows", "EVENT_DATASETS", "event_dataset",
              "Snapshots", "TemporalPoints"):
        assert n in pdata.__all__ and hasattr(pdata, n)


def test_basic_views() -> None:
    s = toy()
    assert len(s) == 2 and s.dim == 2 and s.n_events == 5 and s.lengths == [3, 2] and s.keys == ["a", "b"]
    assert s.window == (0.0, 4.0) and all(q.dtype == torch.float64 for q in s)
    t, x, idx = s.events()
    assert t.shape == (5,) and x.shape == (5, 2) and idx.tolist() == [0, 0, 0, 1, 1]
    assert t.tolist() == [0.5, 1.0, 2.5, 0.1, 3.0] and x[3].tolist() == [-1.0, 0.0]
    assert s.offsets().tolist() == [0, 3, 5]
    pos = s.histories()
    assert pos.tolist() == [0, 1, 2, 0, 1]
    for j in range(5):  # history of pooled event j = its predecessors in its own sequence
        seq = s.sequences[int(idx[j])]
        assert torch.equal(seq[int(pos[j])], torch.cat([t[j:j + 1], x[j]]))
    p = s.to_points()
    assert isinstance(p, TemporalPoints) and torch.equal(p.t, t) and torch.equal(p.x, x) and p.context is None
    assert torch.equal(s["b"], s.sequences[1]) and torch.equal(s[0], s.sequences[0])
    sub = s.subset(["b", "a"])
    assert sub.keys == ["b", "a"] and torch.equal(sub.sequences[0], s.sequences[1]) and sub.window == s.window
    with pytest.raises(KeyError, match="no sequence with key 'zz' in toy"):
        s.subset(["a", "zz"])
    with pytest.raises(ValueError, match="duplicate key 'a' in subset"):
        s.subset(["a", "a"])
    with pytest.raises(KeyError, match="'nope'"):
        s["nope"]
    assert "S=2" in repr(s) and "N=5" in repr(s)
    # a 3-D array is S sequences of equal length; default keys
    e = EventSequences(np.zeros((2, 3, 2)) + np.arange(3.0)[None, :, None], window=(0, 2))
    assert e.keys == ["seq_0000", "seq_0001"] and e.dim == 1
    # ties are allowed (BH_conflicts has whole-day times); t0 and t1 themselves are inside
    EventSequences([[[0.0, 1.0], [1.0, 0.0], [1.0, 2.0], [2.0, 0.0]]], window=(0.0, 2.0))


def test_standardize_and_stats() -> None:
    s = toy()
    mean, std = s.spatial_stats()
    x = s.events().x
    assert torch.allclose(mean, x.mean(0)) and torch.allclose(std, x.std(0))  # divisor N - 1, as torch.std in Neural STPP
    z = s.standardize()
    assert torch.allclose(z.events().x.mean(0), torch.zeros(2, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(z.events().x.std(0), torch.ones(2, dtype=torch.float64))
    assert torch.equal(z.events().t, s.events().t) and z.window == s.window and z.keys == s.keys
    other = s.standardize((torch.tensor([1.0, 2.0]), torch.tensor([2.0, 4.0])))
    assert torch.allclose(other.sequences[0][0], torch.tensor([0.5, 0.0, 0.0], dtype=torch.float64))
    assert torch.equal(s.sequences[0][0], torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64))  # unchanged
    with pytest.raises(ValueError, match=r"stats must be \(mean, std\) of shape \(2,\)"):
        s.standardize((torch.zeros(3), torch.ones(3)))
    with pytest.raises(ValueError, match="std finite and > 0"):
        s.standardize((torch.zeros(2), torch.tensor([1.0, 0.0])))


@pytest.mark.parametrize(
    "seqs, keys, window, err, match",
    [
        ([], None, (0, 1), ValueError, r"no sequences \(S = 0\) in toy"),
        ([np.zeros((2, 2))], ["a", "b"], (0, 1), ValueError, "keys has 2 entries but there are 1 sequences"),
        ([np.zeros((1, 2)), np.zeros((1, 2))], ["a", "a"], (0, 1), ValueError, "duplicate key 'a' at positions 0 and 1"),
        ([np.zeros((1, 2))], [3], (0, 1), TypeError, "key 0 must be a string"),
        ([np.zeros((1, 2))], ["a"], (1, 1), ValueError, r"window must be finite \(t0, t1\) with t0 < t1"),
        ([np.zeros((1, 2))], ["a"], (0, math.inf), ValueError, "window must be finite"),
        ([np.zeros(3)], ["a"], (0, 1), ValueError, r"sequence 'a' must have shape \(n, 1 \+ D\).*got \(3,\)"),
        ([np.zeros((3, 1))], ["a"], (0, 1), ValueError, r"sequence 'a' must have shape \(n, 1 \+ D\).*D >= 1; got \(3, 1\)"),
        ([np.zeros((1, 3)), np.zeros((1, 2))], ["a", "b"], (0, 1), ValueError, "sequence 'b' has D = 1 but sequence 'a' has D = 2"),
        ([np.zeros((1, 3)), np.zeros((0, 3))], ["a", "b"], (0, 1), ValueError, r"sequence 'b' is empty \(0 events\) in toy"),
        ([np.array([["x", "y"]])], ["a"], (0, 1), TypeError, "sequence 'a' must hold real numbers"),
    ],
)
def test_structural_errors(seqs, keys, window, err, match) -> None:
    with pytest.raises(err, match=match):
        EventSequences(seqs, keys, window=window, name="toy")


def test_value_errors_name_key_row_column() -> None:
    good = np.array([[0.1, 0.0, 0.0], [0.2, 1.0, 1.0], [0.3, 2.0, 2.0]])
    bad = good.copy()
    bad[2, 2] = np.nan
    with pytest.raises(ValueError, match=r"sequence 'k2' contains NaN at row 2 \(column 2\) of toy"):
        EventSequences([good, bad], ["k1", "k2"], window=(0, 1), name="toy")
    bad = good.copy()
    bad[1, 0] = -np.inf
    with pytest.raises(ValueError, match=r"sequence 'k2' contains inf at row 1 \(column 0\)"):
        EventSequences([good, bad], ["k1", "k2"], window=(0, 1), name="toy")
    bad = good.copy()
    bad[2, 0] = 0.15
    with pytest.raises(ValueError, match=r"sequence 'k2' is not sorted by time: t = 0.15 at row 2 < t = 0.2 at row 1 \(toy\)"):
        EventSequences([good, bad], ["k1", "k2"], window=(0, 1), name="toy")
    # a later sequence may start before the previous one ends
    EventSequences([good, good * [0.5, 1, 1]], ["k1", "k2"], window=(0, 1))
    with pytest.raises(ValueError, match=re.escape("sequence 'k2': t = 1.5 at row 2 is outside the observation window [0, 1] of toy")):
        EventSequences([good, good + [[0, 0, 0], [0, 0, 0], [1.2, 0, 0]]], ["k1", "k2"], window=(0, 1), name="toy")
    with pytest.raises(ValueError, match=re.escape("sequence 'k1': t = 0.1 at row 0 is outside the observation window [0.2, 1]")):
        EventSequences([good], ["k1"], window=(0.2, 1), name="toy")


# ------------------------------------------------------------------------------ split, windows


def test_split_sequences() -> None:
    s = pinwheel_hawkes(50, 3)
    tr, va, te = split_sequences(s, seed=1)
    assert (len(tr), len(va), len(te)) == (40, 5, 5)
    assert sorted(tr.keys + va.keys + te.keys) == s.keys and not set(tr.keys) & set(va.keys + te.keys)
    assert tr.keys == sorted(tr.keys) and tr.name.endswith("/train") and te.name.endswith("/test")
    assert split_sequences(s, seed=1)[1].keys == va.keys and split_sequences(s, seed=2)[1].keys != va.keys
    with pytest.raises(ValueError, match="sum to 1"):
        split_sequences(s, (0.5, 0.4))
    with pytest.raises(ValueError, match="every part needs at least one sequence"):
        split_sequences(s, (0.99, 0.01, 0.0))


def test_windows_cutting() -> None:
    seq = np.array([[0.0, 0.0], [1.0, 1.0], [4.9, 2.0], [5.0, 3.0], [9.5, 4.0], [10.0, 5.0]])
    w = windows(seq, 5.0, 2.5, window=(0.0, 10.0))
    # starts 0, 2.5, 5 (7.5 + 5 > 10): [0,5) -> t 0,1,4.9; [2.5,7.5) -> 4.9,5; [5,10] (ends at t1: closed) -> 5,9.5,10
    assert w.keys == ["seq@0", "seq@2.5", "seq@5"] and w.window == (0.0, 5.0)
    assert w.sequences[0][:, 0].tolist() == [0.0, 1.0, 4.9]
    assert torch.allclose(w.sequences[1][:, 0], torch.tensor([2.4, 2.5], dtype=torch.float64))
    assert w.sequences[2].tolist() == [[0.0, 3.0], [4.5, 4.0], [5.0, 5.0]]
    assert windows(seq, 5.0, 2.5, window=(0.0, 10.0), min_events=3).keys == ["seq@0", "seq@5"]
    # a window without events is dropped; the re-based times stay inside [0, length]
    w = windows(seq, 1.0, 1.0, window=(0.0, 10.0))
    assert w.keys == ["seq@0", "seq@1", "seq@4", "seq@5", "seq@9"]
    for q in w:
        assert float(q[:, 0].min()) >= 0.0 and float(q[:, 0].max()) <= 1.0
    with pytest.raises(ValueError, match="longer than the observation window"):
        windows(seq, 11.0, 1.0, window=(0.0, 10.0))
    with pytest.raises(ValueError, match="stride must be a finite number > 0"):
        windows(seq, 1.0, 0.0, window=(0.0, 10.0))
    with pytest.raises(ValueError, match=r"needs window=\(t0, t1\)"):
        windows(seq, 1.0, 1.0)


# ------------------------------------------------------------------------------------ generator


def test_pinwheel_hawkes_deterministic_and_valid() -> None:
    a = pinwheel_hawkes(30, 7)
    b = pinwheel_hawkes(30, 7)
    c = pinwheel_hawkes(30, 8)
    assert a.keys == b.keys and all(torch.equal(x, y) for x, y in zip(a, b))
    assert a.lengths != c.lengths
    assert a.window == (0.0, 30.0) and a.dim == 2 and len(a) == 30
    s, cls = pinwheel_hawkes(200, 1, return_classes=True)
    assert [k.shape[0] for k in cls] == s.lengths
    # excitation only from class k to class k + 1: an event within 0.05 of the previous one is mostly of
    # the successor class (measured 0.60: siblings and unrelated clusters make up the rest; a
    # generator exciting any other class gives ~0.1)
    succ = tot = 0
    for q, k in zip(s, cls):
        close = (q[1:, 0] - q[:-1, 0]) < 0.05
        succ += int(((k[1:] == (k[:-1] + 1) % 10) & close).sum())
        tot += int(close.sum())
    assert succ / tot > 0.5
    # location of class k: radius 2 * sqrt(f1^2 + f2^2), polar angle -(2 pi k / 10 + 0.25 exp(f1))
    t, x, _ = s.events()
    k = torch.cat(cls).double()
    r = x.norm(dim=1)
    f1 = r / 2  # f2 is small
    resid = torch.atan2(x[:, 1], x[:, 0]) + 2 * math.pi * k / 10 + 0.25 * torch.exp(f1)
    assert float(torch.cos(resid).mean()) > 0.99
    short = pinwheel_hawkes(5, 0, t1=2.0)
    assert short.window == (0.0, 2.0) and float(short.events().t.max()) < 2.0
    with pytest.raises(ValueError, match="n_sequences must be a positive int"):
        pinwheel_hawkes(0, 0)
    with pytest.raises(ValueError, match="seed must be an int >= 0"):
        pinwheel_hawkes(3, -1)


def test_pinwheel_hawkes_event_counts_match_theory() -> None:
    # E[n] = 10 * 0.05 * 30 / (1 - 0.6) = 37.5 (minus a tiny edge loss); sd of n ~ 15.4, so the mean of
    # 2000 sequences has standard error ~0.35: 4 standard errors = 1.4.
    c = np.array(pinwheel_hawkes(2000, 0).lengths)
    assert abs(c.mean() - 37.5) < 1.4
    assert 13.0 < c.std(ddof=1) < 18.0


def test_pinwheel_hawkes_matches_dstpp_file() -> None:
    f = real(ev.pinwheel_stpp)
    cf = np.array(f.lengths)
    g = pinwheel_hawkes(2000, 0)
    cg = np.array(g.lengths)
    # the DSTPP file: 37,373 events over 1000 sequences, sd 15.8. Standard error of the difference of
    # means = sqrt(15.8^2 / 1000 + 15.4^2 / 2000) ~ 0.61; allow 4 standard errors.
    assert abs(cf.mean() - 37.373) < 1e-12
    assert abs(cg.mean() - cf.mean()) < 4 * math.sqrt(cf.var(ddof=1) / cf.size + cg.var(ddof=1) / cg.size)
    assert abs(np.median(cg) - np.median(cf)) <= 3
    # same spatial law and orientation: clockwise curl |mean exp(10 i (theta + 0.25 e^{r/2}))| ~ 0.57
    def curl(s: EventSequences) -> tuple[float, float]:
        x = s.events().x.numpy()
        r, th = np.hypot(x[:, 0], x[:, 1]), np.arctan2(x[:, 1], x[:, 0])
        return abs(np.mean(np.exp(10j * (th + 0.25 * np.exp(r / 2))))), r.mean()

    (pf, rf), (pg, rg) = curl(f), curl(g)
    assert abs(pf - pg) < 0.03 and abs(rf - rg) < 0.05


# ------------------------------------------------------------------------------------- loaders


@pytest.mark.parametrize(
    "loader, args, n_seq, n_events, window",
    [
        (ev.earthquakes_jp, ("train",), 950, 82657, (0.0, 30.0)),
        (ev.earthquakes_jp, ("val",), 50, 4130, (0.0, 30.0)),
        (ev.earthquakes_jp, ("test",), 50, 5110, (0.0, 30.0)),
        (ev.earthquakes_jp, ("all",), 1500, 132993, (0.0, 30.0)),
        (ev.covid_nj, ("val",), 100, 4346, (0.0, 7.0)),
        (ev.covid_nj, ("test",), 100, 13656, (0.0, 7.0)),
        (ev.citibike, ("val",), 300, 46467, (0.0, 24.0)),
        (ev.citibike, ("test",), 320, 47276, (0.0, 24.0)),
        (ev.pinwheel_stpp, (), 1000, 37373, (0.0, 30.0)),
        (ev.earthquakenpp, ("Japan_25", "train"), 1, 16230, (0.0, 5479.0)),
        (ev.earthquakenpp, ("Japan_25", "val"), 1, 4976, (0.0, 1461.0)),
        (ev.earthquakenpp, ("Japan_25", "test"), 1, 15368, (0.0, 3287.0)),
        (ev.earthquakenpp, ("ComCat_25", "train"), 1, 40701, (0.0, 6209.0)),
        (ev.earthquakenpp, ("ComCat_25", "val"), 1, 14740, (0.0, 3287.0)),
        (ev.earthquakenpp, ("ComCat_25", "test"), 1, 21881, (0.0, 4764.0)),
        (ev.bh_conflicts, (), 1, 2470, (0.0, 4574.0)),
    ],
)
def test_loader_counts(loader, args, n_seq, n_events, window) -> None:
    s = real(loader, *args)
    assert (len(s), s.n_events, s.window, s.dim) == (n_seq, n_events, window, 2)
    t = s.events().t
    assert float(t.min()) >= window[0] and float(t.max()) <= window[1]
    assert all(bool((q[1:, 0] >= q[:-1, 0]).all()) for q in s)
    assert s.source.endswith((".npz", ".csv"))


def test_loader_details() -> None:
    tr = real(ev.earthquakes_jp, "train")
    va, te = ev.earthquakes_jp("val"), ev.earthquakes_jp("test")
    allk = ev.earthquakes_jp("all").keys
    assert allk[0] == "19900101" and allk[-1] == "20191125"
    assert va.keys == allk[3::30] and te.keys == allk[7::30] and not set(tr.keys) & set(va.keys + te.keys)
    assert (min(tr.lengths), max(tr.lengths), min(te.lengths), max(te.lengths)) == (22, 345, 34, 554)
    assert ev.covid_nj("val").keys[0] == "val_0000" and ev.citibike("test").keys[-1] == "test_0319"
    bh = ev.bh_conflicts()
    assert bh.keys == ["BH_conflicts"] and float(bh[0][0, 0]) == 0.0 and 3.4 < float(bh[0][:, 1].min()) < 3.41
    with pytest.raises(ValueError, match="train split of covid_nj is not available"):
        ev.covid_nj("train")
    with pytest.raises(ValueError, match="train split of citibike is not available"):
        ev.citibike("train")
    with pytest.raises(ValueError, match="unknown split 'dev' for earthquakes_jp; valid splits: train, val, test, all"):
        ev.earthquakes_jp("dev")
    with pytest.raises(ValueError, match="unknown EarthquakeNPP catalog 'SCEDC_25'"):
        ev.earthquakenpp("SCEDC_25", "train")


def test_standardize_with_train_stats() -> None:
    tr = real(ev.earthquakes_jp, "train")
    te = ev.earthquakes_jp("test")
    stats = tr.spatial_stats()
    assert stats.shift.shape == (2,) and 130 < float(stats.shift[0]) < 145 and 30 < float(stats.shift[1]) < 40  # lon, lat of Japan
    ztr, zte = tr.standardize(stats), te.standardize(stats)
    assert torch.allclose(ztr.events().x.mean(0), torch.zeros(2, dtype=torch.float64), atol=1e-10)
    assert torch.allclose(ztr.events().x.std(0), torch.ones(2, dtype=torch.float64))
    assert torch.equal(zte.events().t, te.events().t)
    assert torch.allclose(zte.events().x, (te.events().x - stats.shift) / stats.scale)
    assert not torch.allclose(zte.events().x.mean(0), torch.zeros(2, dtype=torch.float64), atol=1e-3)  # test stats differ


def test_windows_on_long_sequences() -> None:
    jp = real(ev.earthquakenpp, "Japan_25", "train")
    w = windows(jp)  # 30-day windows every 7 days
    t0, t1 = jp.window
    starts = [float(k.split("@")[1]) for k in w.keys]
    assert starts[0] == 0.0 and all(b - a >= 7.0 - 1e-9 for a, b in zip(starts, starts[1:])) and starts[-1] + 30 <= t1
    assert len(w) <= math.floor((t1 - t0 - 30) / 7) + 1 and w.window == (0.0, 30.0)
    assert float(w.events().t.min()) >= 0.0 and float(w.events().t.max()) < 30.0
    # every window holds exactly the parent's events in [s, s + 30), shifted
    t = jp[0][:, 0]
    for key, q in list(zip(w.keys, w))[::97]:
        s = float(key.split("@")[1])
        ref = jp[0][(t >= s) & (t < s + 30)]
        assert torch.allclose(q[:, 0], ref[:, 0] - s) and torch.equal(q[:, 1:], ref[:, 1:])
    # BH_conflicts: 12 yearly windows fit in [0, 4574], but the file has no event between days 2100 and
    # 2623, so the window starting at day 2190 is empty and dropped; the 23 events after day 4380 = 12 * 365
    # lie in no full window
    bh = windows(ev.bh_conflicts(), 365.0, 365.0)
    assert len(bh) == 11 and "BH_conflicts@2190" not in bh.keys and bh.n_events == 2470 - 23 and bh.window == (0.0, 365.0)


def test_registry() -> None:
    assert set(EVENT_DATASETS) >= {"earthquakes_jp", "covid_nj", "citibike", "pinwheel_stpp", "pinwheel_hawkes", "bh_conflicts"}
    with pytest.raises(ValueError, match="unknown event data set 'nope'; valid names: earthquakes_jp"):
        event_dataset("nope")
    with pytest.raises(ValueError, match="needs a split: one of val, test"):
        event_dataset("covid_nj")
    v = event_dataset("pinwheel_hawkes", "val")
    assert len(v) == 200 and v.name == "pinwheel_hawkes/val"
    tr = real(event_dataset, "pinwheel_stpp", "train")
    va, te = event_dataset("pinwheel_stpp", "val"), event_dataset("pinwheel_stpp", "test")
    assert (len(tr), len(va), len(te)) == (800, 100, 100) and tr.n_events + va.n_events + te.n_events == 37373
    assert event_dataset("earthquakes_jp", "val").n_events == 4130
    assert event_dataset("earthquakenpp_japan_25", "train").n_events == 16230
    assert event_dataset("bh_conflicts").n_events == 2470
    with pytest.raises(ValueError, match="train split of citibike is not available"):
        event_dataset("citibike", "train")


def test_missing_data_names_every_path(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("PROBFLUX_DATA", str(tmp_path / "nowhere"))
    rel = "stpp/no_such_file.npz"
    with pytest.raises(FileNotFoundError) as info:
        ev._stpp_file(rel)
    msg = str(info.value)
    roots = ev.data_root_candidates()
    assert len(roots) >= 2 and all(str(r / rel) in msg for r in roots) and "PROBFLUX_DATA" in msg
    if not any((r / "stpp/pinwheel/pinwheel_dstpp_1000.npz").is_file() for r in roots):
        with pytest.raises(FileNotFoundError, match="pinwheel_dstpp_1000.npz not found; tried"):
            ev.pinwheel_stpp()


# ------------------------------------------------------------------------------------- user files

TINY = ["model.components=2", "model.hidden=8", "model.layers=1", "train.steps=5", "train.batch_size=32", "evaluate.particles=20",
        "evaluate.steps=5", "evaluate.residual_points=16", "data.t0=null", "data.t1=null"]


def fit_cli(tmp_path, *overrides: str) -> dict:
    """``probflux fit configs/tiny.yaml data.name=file ...`` then ``probflux evaluate``; returns metrics.json."""
    import json

    from probflux.app.cli import main

    out = tmp_path / "run"
    assert main(["fit", "configs/tiny.yaml", "data.name=file", f"out={out}", *TINY, *overrides, "--no-plots"]) == 0
    assert main(["evaluate", str(out)]) == 0
    assert json.loads((out / "metrics_test.json").read_text())["particles"] == 20  # the run's evaluate section is the default
    return json.loads((out / "metrics.json").read_text())


def catalog(n: int, seed: int, t1: float = 50.0) -> np.ndarray:
    """``(n, 3)`` events ``[t, x, y]`` sorted by time, the first at ``t = 0`` (as EarthquakeNPP stores a split)."""
    rng = np.random.default_rng(seed)
    t = np.sort(rng.uniform(0, t1, n))
    return np.column_stack([t - t[0], rng.normal(size=(n, 2))])


def test_earthquakenpp_layout_file_trains_and_evaluates_from_the_cli(tmp_path) -> None:
    parts = {"train": catalog(120, 0), "val": catalog(30, 1), "test": catalog(40, 2)}
    np.savez(tmp_path / "quakes.npz", **{k: v[None] for k, v in parts.items()})
    test = ev.earthquakenpp("quakes", "test", path=tmp_path / "quakes.npz")
    assert test.n_events == 40 and test.window == (0.0, parts["test"][-1, 0]) and test.keys == ["quakes/test"]
    splits = ev.event_file_splits(tmp_path / "quakes.npz")
    assert [s.n_events for s in splits[:3]] == [120, 30, 40] and "own train/val/test" in splits.note
    metrics = fit_cli(tmp_path, f"data.path={tmp_path / 'quakes.npz'}", "data.history=4")
    assert metrics["test_points"] == 40 and np.isfinite(metrics["test_nll"]) and metrics["particles"] == 20
    windowed = ev.event_file_splits(tmp_path / "quakes.npz", window=10.0, stride=5.0)
    assert all(s.window == (0.0, 10.0) for s in windowed[:3]) and len(windowed.train) == 8  # starts 0, 5, .., 35 fit in 49.x
    # the trailing partial window: dropped by default (val: 30 events over ~49 days, one 30-day window), kept on request
    val = ev.event_file_splits(tmp_path / "quakes.npz", window=30.0).val
    kept = ev.event_file_splits(tmp_path / "quakes.npz", window=30.0, partial_windows=True)
    assert val.n_events < 30 and [s.n_events for s in kept[:3]] == [120, 30, 40] and "partial windows kept" in kept.note
    with pytest.raises(ValueError, match="data.partial_windows needs data.window"):
        ev.event_file_splits(tmp_path / "quakes.npz", partial_windows=True)
    with pytest.raises(ValueError, match=r"quakes\.npz has its own train/val/test split .*data\.cuts do\(es\) not apply"):
        ev.event_file_splits(tmp_path / "quakes.npz", cuts=(1.0, 2.0))
    with pytest.raises(ValueError, match="expected the EarthquakeNPP layout"):
        np.savez(tmp_path / "flat.npz", t=np.arange(3.0), x=np.zeros((3, 2)))
        ev.earthquakenpp("flat", "train", path=tmp_path / "flat.npz")


def test_event_csv_with_a_sequence_column_trains_and_evaluates_from_the_cli(tmp_path) -> None:
    rng = np.random.default_rng(4)
    lines = ["sequence,time,x,y,magnitude"]
    for s in range(10):
        for row in catalog(int(rng.integers(4, 12)), 10 + s, t1=7.0)[::-1]:  # newest first, as catalogs often are
            lines.append(f"week{s},{row[0]:.17g},{row[1]:.17g},{row[2]:.17g},3.1")
    path = tmp_path / "weeks.csv"
    path.write_text("\n".join(lines) + "\n")
    seqs = ev.read_events(path)
    assert len(seqs) == 10 and seqs.keys[0] == "week0" and all(bool((s[1:, 0] >= s[:-1, 0]).all()) for s in seqs)
    splits = ev.event_file_splits(path, seed=0)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (8, 1, 1)
    metrics = fit_cli(tmp_path, f"data.path={path}", "data.history=3")
    assert metrics["test_points"] == splits.test.n_events and np.isfinite(metrics["test_nll"])
    with pytest.raises(ValueError, match="data.cuts splits ONE long sequence in time; weeks.csv has 10 sequences"):
        ev.event_file_splits(path, cuts=(2.0, 3.0))


def test_one_long_sequence_splits_in_time_by_fractions_or_cuts(tmp_path) -> None:
    a = catalog(200, 5, t1=100.0)
    path = tmp_path / "one.csv"
    path.write_text("T,X,Y\n" + "\n".join(",".join(f"{v:.17g}" for v in r) for r in a) + "\n")
    lo, hi = a[0, 0], a[-1, 0]
    tr, va, te, note = ev.event_file_splits(path, val_fraction=0.2, test_fraction=0.1)
    c1, c2 = lo + 0.7 * (hi - lo), lo + 0.9 * (hi - lo)
    assert tr.window == (lo, c1) and va.window == (c1, c2) and te.window == (c2, hi) and "continuous" in note
    assert tr.n_events == int((a[:, 0] < c1).sum()) and te.n_events == int((a[:, 0] >= c2).sum())
    assert tr.n_events + va.n_events + te.n_events == 200
    tr, va, te, _ = ev.event_file_splits(path, cuts=(60.0, 80.0), window=10.0)
    assert va.window == (0.0, 10.0) and len(va) == 2 and va.n_events == int(((a[:, 0] >= 60) & (a[:, 0] < 80)).sum())
    with pytest.raises(ValueError, match=r"data\.cuts must satisfy t0 < val start < test start < t1"):
        ev.event_file_splits(path, cuts=(60.0, 200.0))
    with pytest.raises(ValueError, match=r"data\.window=50: window length 50 is longer than the observation window"):
        ev.event_file_splits(path, cuts=(60.0, 80.0), window=50.0)


def test_bh_conflicts_reads_any_x_y_t_csv(tmp_path) -> None:
    a = catalog(30, 6, t1=400.0)
    path = tmp_path / "conflicts.csv"
    path.write_text("X,Y,T\n" + "\n".join(f"{r[1]:.17g},{r[2]:.17g},{r[0]:.17g}" for r in a) + "\n")
    seqs = ev.bh_conflicts(path)
    torch.testing.assert_close(seqs.sequences[0], torch.from_numpy(a))  # T is the time, (X, Y) the location
    assert seqs.window == (0.0, float(math.ceil(a[-1, 0]))) and seqs.keys == ["BH_conflicts"]
    shared = real(ev.bh_conflicts)
    assert shared.n_events == 2470 and shared.window == (0.0, 4574.0)
