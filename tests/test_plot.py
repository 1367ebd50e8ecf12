"""probflux.plot: every function writes a real file, has the expected panels, converts coordinates, validates."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from PIL import Image

import probflux as pf
from probflux import plot
from probflux.normalize import Normalizer

PNG = b"\x89PNG\r\n\x1a\n"


def _perturbed(model: torch.nn.Module, seed: int, scale: float = 0.15) -> torch.nn.Module:
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn_like(p))
    return model


@pytest.fixture(scope="module")
def f2() -> pf.TimeDensity:
    torch.manual_seed(0)
    return _perturbed(pf.FactorizedMixture(2, components=3, hidden=16), 1)


@pytest.fixture(scope="module")
def f1() -> pf.TimeDensity:
    torch.manual_seed(0)
    return _perturbed(pf.FactorizedMixture(1, components=3, hidden=16), 2)


@pytest.fixture(scope="module")
def ar3() -> pf.TimeDensity:
    torch.manual_seed(0)
    return _perturbed(pf.AutoregressiveMixture(3, components=3, hidden=16, layers=2), 3)


@pytest.fixture(scope="module")
def dyn2(f2: pf.TimeDensity) -> pf.Dynamics:
    return pf.Dynamics(f2, diffusion=0.3)


def _is_png(path: Path) -> bool:
    return path.is_file() and path.stat().st_size > 1000 and path.read_bytes()[:8] == PNG


# ------------------------------------------------------------------------------------ density_snapshots
def test_snapshots_2d_stream_writes_png(dyn2: pf.Dynamics, tmp_path: Path) -> None:
    out = tmp_path / "nested" / "dir" / "snap.png"
    fig = plot.density_snapshots(dyn2, path=out, title="demo")
    assert isinstance(fig, Figure)
    assert _is_png(out)
    assert len(fig.axes) == 5
    assert [ax.get_title() for ax in fig.axes] == ["t = 0", "t = 0.25", "t = 0.5", "t = 0.75", "t = 1"]
    for ax in fig.axes:
        assert len(ax.images) == 1  # the heat map
        assert ax.collections  # streamlines (LineCollection) and arrows


def test_snapshots_quiver_data_and_bounds(f2: pf.TimeDensity, tmp_path: Path) -> None:
    torch.manual_seed(5)
    t = torch.cat([torch.zeros(50), torch.ones(70)])
    x = torch.randn(120, 2)
    bounds = ((-3.0, 4.0), (-2.0, 5.0))
    fig = plot.density_snapshots(f2, times=(0.0, 1.0), velocity="quiver", data=(t, x), bounds=bounds, grid=40, path=tmp_path / "q.png")
    assert _is_png(tmp_path / "q.png")
    assert len(fig.axes) == 2
    for ax, n_data in zip(fig.axes, (50, 70)):
        assert ax.get_xlim() == pytest.approx(bounds[0])
        assert ax.get_ylim() == pytest.approx(bounds[1])
        dots = [c for c in ax.collections if c.get_label() == "data"]
        assert len(dots) == 1 and len(dots[0].get_offsets()) == n_data
        assert any(type(c).__name__ == "Quiver" for c in ax.collections)


def test_snapshots_heat_map_is_a_density(f2: pf.TimeDensity) -> None:
    bounds = ((-25.0, 25.0), (-25.0, 25.0))
    fig = plot.density_snapshots(f2, times=(0.5,), velocity=None, bounds=bounds, grid=200)
    img = np.asarray(fig.axes[0].images[0].get_array())
    cell = (50.0 / 199) ** 2
    assert 0.95 < img.sum() * cell < 1.05


def test_snapshots_projected_3d(ar3: pf.TimeDensity, tmp_path: Path) -> None:
    data = (torch.rand(200), ar3.sample(0.5, 200))
    fig = plot.density_snapshots(ar3, times=(0.0, 0.5, 1.0), data=data, path=tmp_path / "p.png")
    assert _is_png(tmp_path / "p.png")
    assert len(fig.axes) == 3
    assert fig.axes[0].get_xlabel().startswith("PC1") and fig.axes[0].get_ylabel().startswith("PC2")
    assert all(any(type(c).__name__ == "Quiver" for c in ax.collections) for ax in fig.axes)


def test_snapshots_1d(f1: pf.TimeDensity, tmp_path: Path) -> None:
    fig = plot.density_snapshots(f1, times=(0.0, 0.3, 0.6, 1.0), data=(torch.rand(40), torch.randn(40, 1)), path=tmp_path / "d1.png")
    assert _is_png(tmp_path / "d1.png")
    assert len(fig.axes) == 4
    xs, ys = fig.axes[0].lines[0].get_data()
    assert (np.asarray(ys) >= 0).all() and np.trapezoid(ys, xs) > 0.9


def test_snapshots_many_times_wrap_rows(f2: pf.TimeDensity) -> None:
    fig = plot.density_snapshots(f2, times=[i / 6 for i in range(7)], velocity=None, grid=20)
    assert len(fig.axes) == 7


def test_snapshots_normalizer_shows_data_coordinates(dyn2: pf.Dynamics, tmp_path: Path) -> None:
    norm = Normalizer(10.0, 20.0, torch.tensor([5.0, -3.0]), torch.tensor([2.0, 0.5]))
    bounds = ((-20.0, 30.0), (-9.0, 3.0))  # data coordinates
    data = (torch.tensor([10.0, 15.0, 15.1, 20.0]), torch.tensor([[5.0, -3.0], [6.0, -2.0], [4.0, -4.0], [0.0, 0.0]]))
    fig = plot.density_snapshots(dyn2, times=(0.0, 0.5, 1.0), normalizer=norm, bounds=bounds, data=data, grid=120, path=tmp_path / "n.png")
    assert _is_png(tmp_path / "n.png")
    assert [ax.get_title() for ax in fig.axes] == ["t = 10", "t = 15", "t = 20"]
    for ax in fig.axes:
        assert ax.get_xlim() == pytest.approx(bounds[0])
        assert ax.get_ylim() == pytest.approx(bounds[1])
    assert [len(c.get_offsets()) for ax in fig.axes for c in ax.collections if c.get_label() == "data"] == [1, 2, 1]
    # the heat map is the data-coordinate density: it integrates to ~1 over the data-coordinate grid
    img = np.asarray(fig.axes[1].images[0].get_array())
    cell = (50.0 / 119) * (12.0 / 119)
    assert 0.9 < img.sum() * cell < 1.05
    # default bounds are found in data coordinates too (around the shift, scaled)
    fig2 = plot.density_snapshots(dyn2, times=(0.5,), normalizer=norm, velocity=None, grid=20)
    lo, hi = fig2.axes[0].get_xlim()
    lo_y, hi_y = fig2.axes[0].get_ylim()
    assert lo < 5.0 < hi and lo_y < -3.0 < hi_y
    assert (hi_y - lo_y) < (hi - lo) / 2  # x stretched by 2, y shrunk by 0.5


def test_snapshots_validation(f2: pf.TimeDensity) -> None:
    with pytest.raises(ValueError, match="times"):
        plot.density_snapshots(f2, times=(0.0, 1.5))
    with pytest.raises(ValueError, match="times"):
        plot.density_snapshots(f2, times=())
    with pytest.raises(ValueError, match="velocity"):
        plot.density_snapshots(f2, velocity="arrows")
    with pytest.raises(ValueError, match="bounds"):
        plot.density_snapshots(f2, bounds=((0.0, 1.0),))
    with pytest.raises(ValueError, match="bounds"):
        plot.density_snapshots(f2, bounds=((1.0, 0.0), (0.0, 1.0)))
    with pytest.raises(ValueError, match="grid"):
        plot.density_snapshots(f2, grid=1)
    with pytest.raises(ValueError, match="data"):
        plot.density_snapshots(f2, data=(torch.zeros(3), torch.zeros(3, 5)))
    with pytest.raises(ValueError, match="normalizer"):
        plot.density_snapshots(f2, normalizer=Normalizer.identity(3))


def test_snapshots_keep_global_rng(f2: pf.TimeDensity) -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    plot.density_snapshots(f2, times=(0.5,), velocity=None, grid=10)
    assert torch.equal(torch.rand(3), expected)


def test_snapshots_in_a_thread(f2: pf.TimeDensity, tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        fig = pool.submit(plot.density_snapshots, f2, (0.2,), path=tmp_path / "th.png", grid=30).result()
    assert _is_png(tmp_path / "th.png") and len(fig.axes) == 1


# ------------------------------------------------------------------------------------ trajectories
def test_trajectories_2d(dyn2: pf.Dynamics, tmp_path: Path) -> None:
    out = tmp_path / "t" / "traj.png"
    fig = plot.trajectories(dyn2, n=40, steps=20, path=out)
    assert _is_png(out)
    assert len(fig.axes) == 3  # ODE, SDE, time colour bar
    ode, sde = fig.axes[:2]
    assert "ODE" in ode.get_title() and "Euler–Maruyama" in sde.get_title()
    segs = [c for c in ode.collections if type(c).__name__ == "LineCollection"]
    assert len(segs) == 1 and len(segs[0].get_segments()) == 40 * 20


def test_trajectories_zero_diffusion_says_so(f2: pf.TimeDensity) -> None:
    fig = plot.trajectories(f2, n=20, steps=10, methods=("sde",))
    assert len(fig.axes) == 2
    assert "g = 0" in fig.axes[0].get_title()


def test_trajectories_projected_and_1d(ar3: pf.TimeDensity, f1: pf.TimeDensity, tmp_path: Path) -> None:
    fig = plot.trajectories(ar3, n=30, steps=10, methods=("ode",), path=tmp_path / "a.png")
    assert _is_png(tmp_path / "a.png") and len(fig.axes) == 2
    assert fig.axes[0].get_xlabel().startswith("PC1")
    fig = plot.trajectories(pf.Dynamics(f1, diffusion=0.5), n=30, steps=10, t0=0.2, t1=0.8, path=tmp_path / "b.png")
    assert _is_png(tmp_path / "b.png") and len(fig.axes) == 3
    assert fig.axes[0].get_xlim() == pytest.approx((0.2, 0.8))


def test_trajectories_normalizer_bounds(dyn2: pf.Dynamics) -> None:
    norm = Normalizer(0.0, 5.0, torch.tensor([100.0, 0.0]), torch.tensor([10.0, 1.0]))
    bounds = ((50.0, 150.0), (-6.0, 6.0))
    fig = plot.trajectories(dyn2, n=20, steps=10, normalizer=norm, bounds=bounds)
    for ax in fig.axes[:2]:
        assert ax.get_xlim() == pytest.approx(bounds[0])
        (start,) = [c for c in ax.collections if c.get_label().startswith("start")]
        assert 60.0 < float(np.median(np.asarray(start.get_offsets())[:, 0])) < 140.0  # drawn in data coordinates


def test_trajectories_validation(dyn2: pf.Dynamics) -> None:
    with pytest.raises(ValueError, match="methods"):
        plot.trajectories(dyn2, methods=("ode", "bogus"))
    with pytest.raises(ValueError, match="methods"):
        plot.trajectories(dyn2, methods=())
    with pytest.raises(ValueError, match="t1"):
        plot.trajectories(dyn2, t1=2.0)
    with pytest.raises(ValueError, match="bounds"):
        plot.trajectories(dyn2, bounds=(0.0, 1.0, 2.0))
    with pytest.raises(ValueError, match="steps"):
        plot.trajectories(dyn2, steps=0)


# ------------------------------------------------------------------------------------ animate
def test_animate_2d_gif(dyn2: pf.Dynamics, tmp_path: Path) -> None:
    out = plot.animate(dyn2, tmp_path / "g" / "anim.gif", frames=6, n_particles=50)
    assert out == tmp_path / "g" / "anim.gif"
    assert out.read_bytes()[:4] == b"GIF8"
    with Image.open(out) as im:
        assert im.n_frames > 1


def test_animate_3d_and_1d(ar3: pf.TimeDensity, f1: pf.TimeDensity, tmp_path: Path) -> None:
    for model, name in ((ar3, "a3.gif"), (f1, "a1.gif")):
        out = plot.animate(model, tmp_path / name, frames=4, n_particles=30)
        assert out.read_bytes()[:4] == b"GIF8"
        with Image.open(out) as im:
            assert im.n_frames > 1


def test_animate_validation(dyn2: pf.Dynamics, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="frames"):
        plot.animate(dyn2, tmp_path / "x.gif", frames=1)
    with pytest.raises(ValueError, match="path"):
        plot.animate(dyn2, tmp_path / "x.png")
    with pytest.raises(ValueError, match="bounds"):
        plot.animate(dyn2, tmp_path / "x.gif", bounds=((0, 1), (0, 1), (0, 1)))


# ------------------------------------------------------------------------------------ loss_curves
def _records() -> list[dict]:
    recs = []
    for i in range(60):
        r = {"step": i * 10, "loss": 1.0 / (i + 1) + 0.1, "nll": 2.0 / (i + 1) + 0.2, "kinetic": 0.5 + 0.01 * i,
             "time": 0.1 * i, "tag": "x"}
        if i % 10 == 0:
            r["val_nll"] = 2.2 / (i + 1) + 0.2
        recs.append(r)
    return recs


def test_loss_curves(tmp_path: Path) -> None:
    out = tmp_path / "l" / "loss.png"
    fig = plot.loss_curves(_records(), out)
    assert _is_png(out)
    (ax,) = fig.axes
    assert sorted(line.get_label() for line in ax.lines) == ["kinetic", "loss", "nll", "val_nll"]
    assert ax.get_yscale() == "log"
    val = next(line for line in ax.lines if line.get_label() == "val_nll")
    nll = next(line for line in ax.lines if line.get_label() == "nll")
    assert len(val.get_xdata()) == 6 and val.get_color() == nll.get_color()


def test_loss_curves_linear_and_jsonl(tmp_path: Path) -> None:
    recs = [{"step": i, "nll": -1.0 - 0.1 * i, "loss": float("nan") if i == 3 else 0.5} for i in range(10)]
    f = tmp_path / "metrics.jsonl"
    f.write_text("\n".join(json.dumps(r) for r in recs) + "\n")
    fig = plot.loss_curves(f)
    (ax,) = fig.axes
    assert ax.get_yscale() == "linear"
    loss = next(line for line in ax.lines if line.get_label() == "loss")
    assert len(loss.get_xdata()) == 9  # the NaN is skipped


def test_loss_curves_validation() -> None:
    with pytest.raises(ValueError, match="records"):
        plot.loss_curves([])
    with pytest.raises(ValueError, match="records"):
        plot.loss_curves([{"step": 1, "tag": "a"}])
    with pytest.raises(ValueError, match="records"):
        plot.loss_curves([1, 2])


def test_snapshot_paths_with_heldout_time(tmp_path):
    torch.manual_seed(0)
    dyn = pf.Dynamics(_perturbed(pf.FactorizedMixture(3, components=2, hidden=16, layers=2).double(), seed=4))
    times = [0.0, 0.5, 1.0]
    cells = [dyn.density.sample(t, 200) for t in times]
    fig = plot.snapshot_paths(dyn, [0.0, 1.0], [cells[0], cells[2]], heldout=(0.5, cells[1]), n=20, steps=10,
                              path=tmp_path / "snap.png")
    assert len(fig.axes) == 2 and fig.axes[0].get_xlabel().startswith("PC1")
    assert (tmp_path / "snap.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    labels = [t.get_text() for t in fig.axes[1].get_legend().get_texts()]
    assert any("transported" in s for s in labels) and any("exact" in s for s in labels)
    with pytest.raises(ValueError, match="same non-zero length"):
        plot.snapshot_paths(dyn, [0.0], cells[:2])
    with pytest.raises(ValueError, match=r"cells\[1\] must have shape \(n, 3\)"):
        plot.snapshot_paths(dyn, [0.0, 1.0], [cells[0], cells[1][:, :2]])
