"""Point data: validation messages, file formats, built-in data sets that move, splits, load_data."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from probflux.app.builders import load_data
from probflux.app.config import DataConfig
from probflux.data import BUILTIN, TemporalPoints, branching, builtin, load_points, pinwheel, split
from probflux.normalize import Normalizer


def table(n: int = 20, d: int = 2, c: int = 0, seed: int = 0) -> np.ndarray:
    """``(n, 1 + d + c)`` matrix with columns ``[t, x..., context...]``."""
    rng = np.random.default_rng(seed)
    return np.column_stack([np.sort(rng.uniform(0, 30, n)), rng.normal(size=(n, d + c))])


# ------------------------------------------------------------------------------ TemporalPoints


def test_temporal_points_basics() -> None:
    a = table(10, 2, 1)
    p = TemporalPoints(a[:, 0], a[:, 1:3], a[:, 3:], source="demo")
    assert len(p) == 10 and p.dim == 2 and p.context_dim == 1
    assert p.t.dtype == p.x.dtype == p.context.dtype == torch.float64
    assert p.t.shape == (10,) and p.x.shape == (10, 2) and p.context.shape == (10, 1)
    q = p.subset([1, 3])
    assert len(q) == 2 and torch.equal(q.x, p.x[[1, 3]]) and q.source == "demo"
    assert len(p.subset(p.t > 1e9)) == 0
    f = p.to(torch.float32, "cpu")
    assert f.x.dtype == f.t.dtype == f.context.dtype == torch.float32 and len(f) == 10
    assert TemporalPoints(torch.arange(3.0), torch.zeros(3, 1)).context_dim == 0
    assert "n=10" in repr(p)


@pytest.mark.parametrize(
    "t, x, context, message",
    [
        (np.zeros((3, 1)), np.zeros((3, 2)), None, r"t must have shape \(N,\); got \(3, 1\) \(data\.csv\)"),
        (np.zeros(3), np.zeros(3), None, r"x must have shape \(N, D\) with D >= 1; got \(3,\)"),
        (np.zeros(3), np.zeros((3, 0)), None, r"x must have shape \(N, D\) with D >= 1; got \(3, 0\)"),
        (np.zeros(3), np.zeros((4, 2)), None, r"x has 4 rows but t has 3"),
        (np.zeros(3), np.zeros((3, 2)), np.zeros(3), r"context must have shape \(N, C\); got \(3,\)"),
        (np.zeros(3), np.zeros((3, 2)), np.zeros((2, 1)), r"context has 2 rows but t has 3"),
        (np.zeros(0), np.zeros((0, 2)), None, r"no data points \(N = 0\) in data\.csv"),
    ],
)
def test_temporal_points_shape_errors(t, x, context, message) -> None:
    with pytest.raises(ValueError, match=message):
        TemporalPoints(t, x, context, source="data.csv")


def test_temporal_points_non_finite_names_first_row_and_column() -> None:
    x = np.zeros((30, 2))
    x[17, 1] = np.nan
    x[20, 0] = np.inf
    with pytest.raises(ValueError, match=r"^x contains NaN at row 17 \(column 1\) of data\.csv$"):
        TemporalPoints(np.zeros(30), x, source="data.csv")
    t = np.zeros(30)
    t[4] = -np.inf
    with pytest.raises(ValueError, match=r"^t contains inf at row 4 of data\.csv$"):
        TemporalPoints(t, np.zeros((30, 2)), source="data.csv")
    c = np.zeros((30, 3))
    c[2, 2] = np.nan
    with pytest.raises(ValueError, match=r"context contains NaN at row 2 \(column 2\)"):
        TemporalPoints(np.zeros(30), np.zeros((30, 2)), c, source="data.csv")
    with pytest.raises(TypeError, match="x must hold real numbers"):
        TemporalPoints(np.zeros(2), np.array([["a"], ["b"]]))


# ----------------------------------------------------------------------------------- load_points


def assert_matches(p: TemporalPoints, a: np.ndarray, d: int) -> None:
    np.testing.assert_allclose(p.t.numpy(), a[:, 0], rtol=1e-12)
    np.testing.assert_allclose(p.x.numpy(), a[:, 1:1 + d], rtol=1e-12)
    if a.shape[1] > 1 + d:
        np.testing.assert_allclose(p.context.numpy(), a[:, 1 + d:], rtol=1e-12)
    else:
        assert p.context is None


def test_round_trip_npz_npy_csv(tmp_path: Path) -> None:
    a = table(25, 3, 2)
    np.savez(tmp_path / "keys.npz", t=a[:, 0], x=a[:, 1:4], context=a[:, 4:])
    p = load_points(tmp_path / "keys.npz")
    assert_matches(p, a, 3)
    assert p.source == "keys.npz"
    np.savez(tmp_path / "keys1d.npz", t=a[:, 0], x=a[:, 1])
    assert load_points(tmp_path / "keys1d.npz").dim == 1
    np.savez(tmp_path / "single.npz", data=a[:, :4])
    assert_matches(load_points(tmp_path / "single.npz"), a[:, :4], 3)
    np.save(tmp_path / "m.npy", a)
    assert_matches(load_points(tmp_path / "m.npy", context_columns=2), a, 3)
    assert_matches(load_points(str(tmp_path / "m.npy")), a, 5)  # no context: all columns are x
    np.savetxt(tmp_path / "header.csv", a, delimiter=",", fmt="%.17g", header="t,x,y,z,c1,c2", comments="")
    assert_matches(load_points(tmp_path / "header.csv", context_columns=2), a, 3)
    assert_matches(load_points(tmp_path / "header.csv"), a, 3)  # c1, c2 are context by name
    np.savetxt(tmp_path / "tabs.tsv", a[:, :3], delimiter="\t", fmt="%.17g", header="time\tx1\tx2", comments="")
    assert_matches(load_points(tmp_path / "tabs.tsv"), a[:, :3], 2)
    (tmp_path / "one.csv").write_text('"t","x"\n# a comment\n0.5,1.5\n')
    one = load_points(tmp_path / "one.csv")
    assert len(one) == 1 and one.x.tolist() == [[1.5]]


def test_load_points_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"data file not found: '.*missing\.npz'"):
        load_points(tmp_path / "missing.npz")
    (tmp_path / "a.txt").write_text("1,2\n")
    with pytest.raises(ValueError, match=r"a\.txt: unsupported file type '\.txt'; use \.csv, \.tsv, \.npz or \.npy"):
        load_points(tmp_path / "a.txt")
    (tmp_path / "bad.csv").write_text("t,x\n1,2\n3,oops\n")
    with pytest.raises(ValueError, match=r"bad\.csv: line 3: column 'x' holds 'oops', not a number"):
        load_points(tmp_path / "bad.csv")
    for value in ("nan", "inf", "-Infinity"):  # parse as floats; rejected with the file's line and the column's header
        (tmp_path / "nan.csv").write_text(f"T,X,Y\n0,1,2\n# a comment\n1,{value},3\n")
        with pytest.raises(ValueError, match=rf"nan\.csv: line 4: column 'X' holds '{value}'; .* must be finite numbers"):
            load_points(tmp_path / "nan.csv")
    (tmp_path / "ragged.csv").write_text("t,x,y\n1,2,3\n4,5\n")
    with pytest.raises(ValueError, match=r"ragged\.csv: line 3 has 2 fields but the header has 3 \(t, x, y\)"):
        load_points(tmp_path / "ragged.csv")
    (tmp_path / "mixed.csv").write_text("1,x\n2,3\n")
    with pytest.raises(ValueError, match=r"mixed\.csv: line 1 \(1,x\) is not a header"):
        load_points(tmp_path / "mixed.csv")
    (tmp_path / "plain.csv").write_text("0.5,1,2\n0.7,3,4\n")
    with pytest.raises(ValueError, match=r"plain\.csv: line 1 \(0\.5,1,2\) is not a header; the first line must name"):
        load_points(tmp_path / "plain.csv")
    (tmp_path / "empty.csv").write_text("t,x\n")
    with pytest.raises(ValueError, match=r"empty\.csv contains no data rows"):
        load_points(tmp_path / "empty.csv")
    (tmp_path / "nan.csv").write_text("t,x,y\n0,1,2\n1,nan,2\n2,1,nan\n")  # the first non-finite entry, by file line and header
    with pytest.raises(ValueError, match=r"nan\.csv: line 3: column 'x' holds 'nan'"):
        load_points(tmp_path / "nan.csv")
    np.save(tmp_path / "nan.npy", np.array([[0.0, 1.0, 2.0], [1.0, np.nan, 2.0]]))  # arrays: by row and coordinate column
    with pytest.raises(ValueError, match=r"x contains NaN at row 1 \(column 0\) of nan\.npy"):
        load_points(tmp_path / "nan.npy")
    np.save(tmp_path / "vec.npy", np.zeros(5))
    with pytest.raises(ValueError, match=r"vec\.npy: expected an array of shape \(N, 1 \+ D\).*got shape \(5,\)"):
        load_points(tmp_path / "vec.npy")
    np.save(tmp_path / "narrow.npy", np.zeros((5, 3)))
    with pytest.raises(ValueError, match=r"narrow\.npy: expected an array of shape \(N, 1 \+ D \+ 2\)"):
        load_points(tmp_path / "narrow.npy", context_columns=2)
    np.save(tmp_path / "strings.npy", np.array([["a", "b"]]))
    with pytest.raises(ValueError, match=r"strings\.npy: expected a numeric array"):
        load_points(tmp_path / "strings.npy")
    (tmp_path / "garbage.npy").write_bytes(b"not numpy at all")
    with pytest.raises(ValueError, match=r"garbage\.npy: cannot read the file"):
        load_points(tmp_path / "garbage.npy")
    (tmp_path / "garbage.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match=r"garbage\.npz: cannot read the file"):
        load_points(tmp_path / "garbage.npz")
    np.savez(tmp_path / "two.npz", a=np.zeros((3, 2)), b=np.zeros((3, 2)))
    with pytest.raises(ValueError, match=r"two\.npz: event sequences .*Neural STPP layout.* cannot be read as points"):
        load_points(tmp_path / "two.npz")
    np.savez(tmp_path / "odd.npz", a=np.zeros((3, 2)), b=np.zeros(3))
    with pytest.raises(ValueError, match=r"odd\.npz: cannot tell what the arrays are; found a \(3, 2\), b \(3,\); expected 't' and 'x'"):
        load_points(tmp_path / "odd.npz")
    np.savez(tmp_path / "rows.npz", t=np.zeros(3), x=np.zeros((4, 2)))
    with pytest.raises(ValueError, match=r"x has 4 rows but t has 3 \(rows\.npz\)"):
        load_points(tmp_path / "rows.npz")
    np.savez(tmp_path / "noctx.npz", t=np.zeros(3), x=np.zeros((3, 2)))
    with pytest.raises(ValueError, match=r"noctx\.npz: context_columns=1 but the file has no context \(arrays t, x\)"):
        load_points(tmp_path / "noctx.npz", context_columns=1)
    with pytest.raises(ValueError, match="is a directory"):
        load_points(tmp_path)


# ------------------------------------------------------------------------------- built-in data


def window(p: TemporalPoints, lo: float, hi: float) -> np.ndarray:
    m = ((p.t >= lo) & (p.t < hi)).numpy()
    return p.x.numpy()[m]


@pytest.mark.parametrize("name", sorted(BUILTIN))
def test_builtin_data_move_and_are_deterministic(name: str) -> None:
    p = builtin(name, 8000, seed=0)
    assert len(p) == 8000 and p.dim == 2 and p.source == name
    t = p.t.numpy()
    assert t.min() >= 0 and t.max() <= 1 and abs(t.mean() - 0.5) < 0.03  # t ~ U(0, 1)
    early, late = window(p, 0.0, 0.2), window(p, 0.8, 1.0)
    r_early, r_late = np.linalg.norm(early, axis=1).mean(), np.linalg.norm(late, axis=1).mean()
    assert r_late > 2.5 * r_early, (r_early, r_late)  # grows out of a central blob
    assert late.std(0).mean() > 2.5 * early.std(0).mean()
    assert np.abs(early.mean(0)).max() < 0.1  # the blob is centred
    assert np.abs(p.x.numpy()).max() < 5.0  # roughly within [-4, 4]
    again = builtin(name, 8000, seed=0)
    assert torch.equal(p.t, again.t) and torch.equal(p.x, again.x)
    other = builtin(name, 8000, seed=1)
    assert not torch.equal(p.x, other.x) and not torch.equal(p.t, other.t)


def fifth_harmonic_phase(x: np.ndarray) -> float:
    """Phase of ``mean exp(5i phi)``: the orientation of a five-fold pattern (mod 2 pi / 5)."""
    return float(np.angle(np.exp(5j * np.arctan2(x[:, 1], x[:, 0])).mean()))


def test_pinwheel_rotates_and_has_five_arms() -> None:
    p = pinwheel(20000, seed=0)
    # Compare the same radius shell (so the radius-dependent bending cancels) at two times.
    shell = lambda x: x[(np.linalg.norm(x, axis=1) > 1.6) & (np.linalg.norm(x, axis=1) < 2.4)]  # noqa: E731
    a, b = shell(window(p, 0.6, 0.7)), shell(window(p, 0.9, 1.0))
    for x in (a, b):  # five clear arms
        assert abs(np.exp(5j * np.arctan2(x[:, 1], x[:, 0])).mean()) > 0.6
    shift = (fifth_harmonic_phase(b) - fifth_harmonic_phase(a)) % (2 * math.pi)
    expected = 5 * (math.pi / 2) * 0.3  # rotation by pi/2 per unit time, seen 5-fold
    assert abs(shift - expected) < 0.6, (shift, expected)
    # the early blob is isotropic: no five-fold structure
    early = window(p, 0.0, 0.1)
    assert abs(np.exp(5j * np.arctan2(early[:, 1], early[:, 0])).mean()) < 0.1


def test_branching_splits_into_three_branches() -> None:
    p = branching(12000, seed=0)
    late = window(p, 0.9, 1.0)
    phi = np.arctan2(late[:, 1], late[:, 0])
    assert abs(np.exp(3j * phi).mean()) > 0.8  # three well-separated angular clusters
    # the branches curve: their angular position changes between t ~ 0.6 and t ~ 1
    mid = window(p, 0.55, 0.65)
    turn = (np.angle(np.exp(3j * phi).mean()) - np.angle(np.exp(3j * np.arctan2(mid[:, 1], mid[:, 0])).mean())) % (2 * math.pi)
    assert 0.5 < turn < 2 * math.pi - 0.5


def test_builtin_errors() -> None:
    with pytest.raises(ValueError, match=r"unknown built-in data set 'spiral'; valid names: branching, pinwheel"):
        builtin("spiral", 10)
    with pytest.raises(ValueError, match="n must be a positive int"):
        pinwheel(0)
    with pytest.raises(ValueError, match="seed must be an int >= 0"):
        branching(10, seed=-1)


# -------------------------------------------------------------------------------- split, load_data


def test_split_is_seeded_disjoint_and_may_be_empty() -> None:
    p = pinwheel(1000, seed=3)
    tr, va, te = split(p, 0.1, 0.2, seed=0)
    assert (len(tr), len(va), len(te)) == (700, 100, 200)
    ts = torch.cat([tr.t, va.t, te.t])
    assert torch.equal(ts.sort().values, p.t.sort().values)  # a partition
    tr2, va2, _ = split(p, 0.1, 0.2, seed=0)
    assert torch.equal(va.x, va2.x)
    assert not torch.equal(split(p, 0.1, 0.2, seed=1)[1].x, va.x)
    tr0, va0, te0 = split(p, 0.0, 0.0, seed=0)
    assert len(tr0) == 1000 and len(va0) == 0 and len(te0) == 0 and va0.dim == 2
    with pytest.raises(ValueError, match=r"val_fraction must lie in \[0, 1\)"):
        split(p, 1.0, 0.0, seed=0)
    with pytest.raises(ValueError, match="val_fraction \\+ test_fraction must be < 1"):
        split(p, 0.5, 0.5, seed=0)
    with pytest.raises(ValueError, match="too few to keep a training point"):
        split(p.subset([0, 1]), 0.5, 0.4, seed=0)


def test_load_data_builtin_fits_normalizer_on_train() -> None:
    cfg = DataConfig(name="branching", n=2000, val_fraction=0.1, test_fraction=0.1)
    tr, va, te, norm = load_data(cfg, seed=0)
    assert (len(tr), len(va), len(te)) == (1600, 200, 200)
    assert isinstance(norm, Normalizer) and norm.dim == 2
    torch.testing.assert_close(norm.shift, tr.x.mean(0))
    torch.testing.assert_close(norm.scale, tr.x.std(0))
    all_t = torch.cat([tr.t, va.t, te.t])
    assert norm.t0 == float(all_t.min()) and norm.t1 == float(all_t.max())  # val/test map into [0, 1]
    tr2, *_ = load_data(cfg, seed=0)
    assert torch.equal(tr.x, tr2.x)
    raw = load_data(DataConfig(name="pinwheel", n=500, standardize=False, t0=0.0, t1=1.0), seed=1)[3]
    assert raw.t0 == 0.0 and raw.t1 == 1.0 and torch.all(raw.scale == 1) and torch.all(raw.shift == 0)


def test_load_data_from_file_checks_the_time_interval(tmp_path: Path) -> None:
    a = table(40, 2)
    a[5, 0] = 31.2
    np.savez(tmp_path / "quakes.npz", t=a[:, 0], x=a[:, 1:])
    cfg = DataConfig(name="file", path=str(tmp_path / "quakes.npz"), t0=0.0, t1=30.0)
    with pytest.raises(ValueError, match=r"^t = 31\.2 at row 5 of quakes\.npz is outside the data interval "
                                         r"\[0, 30\] \(data\.t0, data\.t1\)$"):
        load_data(cfg, seed=0)
    a[5, 0] = -1.0
    np.savez(tmp_path / "quakes.npz", t=a[:, 0], x=a[:, 1:])
    with pytest.raises(ValueError, match=r"t = -1 at row 5 of quakes\.npz is outside the data interval \[0, [\d.]+\] \(data\.t0\)$"):
        load_data(DataConfig(name="file", path=str(tmp_path / "quakes.npz"), t0=0.0), seed=0)
    a[5, 0] = 10.0
    np.savez(tmp_path / "quakes.npz", t=a[:, 0], x=a[:, 1:])
    tr, va, te, norm = load_data(cfg, seed=0)
    assert (norm.t0, norm.t1) == (0.0, 30.0) and len(tr) + len(va) + len(te) == 40
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        load_data(DataConfig(name="file", path=str(tmp_path / "nope.csv")), seed=0)
    with pytest.raises(ValueError, match="data.path is required"):
        load_data(DataConfig(name="file"), seed=0)


# ------------------------------------------------------------------------- columns by name


def write_csv(path: Path, header: str, rows: np.ndarray) -> Path:
    path.write_text(header + "\n" + "\n".join(",".join(f"{v:.17g}" for v in r) for r in rows) + "\n")
    return path


def test_header_x_y_t_reads_t_as_time_not_x(tmp_path: Path) -> None:
    """The misread of issue 14: a catalog with header ``X,Y,T`` (lon, lat, day) made X the time. Now T is the time, by
    name, through load_points and through a config (the normaliser's time interval is the T range)."""
    rng = np.random.default_rng(3)
    lon, lat, day = rng.uniform(-87.8, -87.5, 50), rng.uniform(41.6, 42.0, 50), np.sort(rng.uniform(0, 365, 50))
    path = write_csv(tmp_path / "shootings.csv", "X,Y,T", np.column_stack([lon, lat, day]))
    p = load_points(path)
    np.testing.assert_array_equal(p.t.numpy(), day)
    np.testing.assert_array_equal(p.x.numpy(), np.column_stack([lon, lat]))
    _, _, _, norm = load_data(DataConfig(name="file", path=str(path)), seed=0)
    assert (norm.t0, norm.t1) == (day.min(), day.max())
    # the header order does not matter: coordinates are ordered x, y by name
    path2 = write_csv(tmp_path / "yxt.csv", "t,Y,x", np.column_stack([day, lat, lon]))
    np.testing.assert_array_equal(load_points(path2).x.numpy(), np.column_stack([lon, lat]))


@pytest.mark.parametrize(
    "header, columns, message",
    [
        ("lon,lat,t", None, r"cannot tell which columns are coordinates; found columns \['lon', 'lat', 't'\] \(time 't'\); "
                            r"the other columns \['lon', 'lat'\] must be named x\[, y\[, z\]\] or x1\.\.xD, "
                            r"or list the coordinates in data\.columns\.x"),
        ("x,y,depth,t", None, r"cannot tell which columns are coordinates.*\['x', 'y', 'depth'\]"),
        ("t,time,x", None, r"ambiguous time column: columns \['t', 'time'\] could each be it; set data\.columns\.t"),
        ("day,T,x", None, r"ambiguous time column: columns \['day', 'T'\]"),
        ("lon,lat,when", None, r"no time column; found columns \['lon', 'lat', 'when'\]; expected one named t or time"),
        ("x1,x3,t", None, r"coordinate columns \['x1', 'x3'\] are not x1\.\.xD"),
        ("t,x,X", None, r"column 'x' appears twice in the header"),
        ("t,lon,lat", {"x": ["lon", "height"]}, r"data\.columns\.x = 'height' is not a column; found columns \['t', 'lon', 'lat'\]"),
        ("t,lon,lat", {"t": "lon", "x": ["lon", "lat"]}, r"data\.columns\.x lists \['lon'\], which is also the time"),
        ("t,x,id", None, r"column 'id' gives every row its own sequence"),
    ],
)
def test_unidentifiable_columns_are_rejected_with_the_columns_found(tmp_path: Path, header: str, columns, message: str) -> None:
    width = header.count(",") + 1
    path = write_csv(tmp_path / "f.csv", header, np.arange(4.0 * width).reshape(4, width))
    with pytest.raises(ValueError, match=r"^f\.csv: " + message):
        load_points(path, columns=columns)


def test_columns_name_the_time_and_coordinates(tmp_path: Path) -> None:
    from probflux.app.config import load_config

    a = table(30, 2)
    path = write_csv(tmp_path / "cat.csv", "when,lon,lat,depth", np.column_stack([a, np.ones(30)]))
    p = load_points(path, columns={"t": "when", "x": ["lat", "lon"]})  # listed order wins; depth is ignored
    np.testing.assert_array_equal(p.t.numpy(), a[:, 0])
    np.testing.assert_array_equal(p.x.numpy(), a[:, [2, 1]])
    cfg = load_config(None, ["data.name=file", f"data.path={path}", "data.columns.t=WHEN", "data.columns.x=[lon, lat]"])
    assert cfg.data.columns.x == ["lon", "lat"]
    tr, va, te, norm = load_data(cfg.data, seed=0)
    assert len(tr) + len(va) + len(te) == 30 and (norm.t0, norm.t1) == (a[:, 0].min(), a[:, 0].max())
    with pytest.raises(ValueError, match=r"data\.columns\.x\[1\]: expected str, got 3"):
        load_config(None, ["data.name=file", f"data.path={path}", "data.columns.x=[lon, 3]"])
    with pytest.raises(ValueError, match=r"data\.columns: names the columns of a file"):
        load_config(None, ["data.columns.t=when"])


def test_kind_is_inferred_only_from_the_layout_or_the_options(tmp_path: Path) -> None:
    from probflux.data.files import read_file, resolve_kind

    a = table(10, 2)
    plain = read_file(write_csv(tmp_path / "p.csv", "t,x,y", a))
    seq = read_file(write_csv(tmp_path / "s.csv", "t,x,y,sequence", np.column_stack([a, np.arange(10) % 2])))
    mag = read_file(write_csv(tmp_path / "m.csv", "t,x,y,mag", np.column_stack([a, np.ones(10)])))
    snap = read_file(write_csv(tmp_path / "d.csv", "day,x,y", np.column_stack([np.arange(10) % 3, a[:, 1:]])))
    assert resolve_kind(plain) == "points" and resolve_kind(plain, event_options=True) == "events"
    assert resolve_kind(plain, snapshot_options=True) == "snapshots" and resolve_kind(plain, "events") == "events"
    assert resolve_kind(seq) == resolve_kind(mag) == "events" and resolve_kind(snap) == "snapshots"
    with pytest.raises(ValueError, match=r"d\.csv: population snapshots .* cannot be read as data\.kind='points'"):
        resolve_kind(snap, "points")
    with pytest.raises(ValueError, match="are both set; set data.kind"):
        resolve_kind(plain, event_options=True, snapshot_options=True)
    np.savez(tmp_path / "seqs.npz", a=a[:4], b=a[4:])
    assert resolve_kind(read_file(tmp_path / "seqs.npz")) == "events"
    with pytest.raises(ValueError, match=r"seqs\.npz: event sequences .* cannot be read as points"):
        load_points(tmp_path / "seqs.npz")


def test_points_csv_through_the_cli_with_the_evaluation_sized_or_off(tmp_path: Path) -> None:
    """evaluate.* sizes what ``probflux fit`` evaluates; 0 switches a part off (here: simulation and residual)."""
    import json

    from probflux.app.cli import main
    from probflux.app.config import EvaluateConfig, load_config

    assert load_config(None).evaluate == EvaluateConfig()
    path = write_csv(tmp_path / "pts.csv", "t,x,y", table(200, 2))
    out = tmp_path / "run"
    base = ["fit", "configs/tiny.yaml", "data.name=file", f"data.path={path}", "data.t0=null", "data.t1=null", "model.components=2",
            "model.hidden=8", "train.steps=5", f"out={out}"]
    assert main([*base, "evaluate.particles=0", "evaluate.residual_points=0", "--no-plots"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert np.isfinite(metrics["test_nll"]) and metrics["test_points"] == 20
    assert not any(k.startswith(("w1_", "continuity_")) for k in metrics)
    assert main([*base, "out=" + str(tmp_path / "run2"), "evaluate.particles=30", "evaluate.steps=4", "--no-plots"]) == 0
    metrics = json.loads((tmp_path / "run2" / "metrics.json").read_text())
    assert (metrics["particles"], metrics["simulation_steps"]) == (30, 4) and "continuity_residual_max" in metrics
    assert main(["evaluate", str(tmp_path / "run2"), "--steps", "0"]) == 0
    assert "w1_sde_vs_model" not in json.loads((tmp_path / "run2" / "metrics_test.json").read_text())
    with pytest.raises(ValueError, match=r"evaluate\.particles: must be >= 0"):
        load_config(None, ["evaluate.particles=-1"])
