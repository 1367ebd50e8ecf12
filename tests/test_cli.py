"""The ``probflux`` command end to end on a seconds-long config, and its error paths."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from probflux.app.cli import demo_config_path, main
from probflux.app.config import load_config

ROOT = Path(__file__).resolve().parents[1]
TINY = str(ROOT / "configs" / "tiny.yaml")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "run"
    assert main(["fit", TINY, f"out={out}"]) == 0
    return out


def test_fit_writes_the_run_directory(run_dir):
    for name in ("config.yaml", "metrics.jsonl", "metrics.json", "density.png", "trajectories.png", "loss.png", "density.gif",
                 "checkpoints/best.pt", "checkpoints/latest.pt"):
        assert (run_dir / name).is_file() and (run_dir / name).stat().st_size > 0, name
    m = json.loads((run_dir / "metrics.json").read_text())
    assert m["steps"] == 20 and np.isfinite(m["test_nll"])
    assert m["continuity_residual_max"] < 1e-8
    assert m["w1_sde_vs_model"] > 0 and m["w1_model_vs_model"] > 0
    assert load_config(str(run_dir / "config.yaml")).train.steps == 20


def test_sample_and_simulate_in_data_coordinates(run_dir, tmp_path, capsys):
    assert main(["sample", str(run_dir), "--t", "0.5", "-n", "300", "-o", str(tmp_path / "s.npy")]) == 0
    s = np.load(tmp_path / "s.npy")
    assert s.shape == (300, 2) and np.isfinite(s).all()
    assert main(["simulate", str(run_dir), "-n", "50", "--steps", "10", "--diffusion", "0.5", "-o", str(tmp_path / "p.npz")]) == 0
    p = np.load(tmp_path / "p.npz")
    assert p["paths"].shape == (11, 50, 2) and p["times"].shape == (11,)
    assert p["times"][0] == pytest.approx(0.0) and p["times"][-1] == pytest.approx(1.0)
    assert "euler_maruyama" in capsys.readouterr().out


def test_evaluate_and_plot(run_dir, capsys):
    assert main(["evaluate", str(run_dir), "--split", "val", "--particles", "100", "--steps", "20"]) == 0
    m = json.loads(capsys.readouterr().out)
    assert m["split"] == "val" and (run_dir / "metrics_val.json").is_file()
    assert main(["plot", str(run_dir), "--no-gif"]) == 0


def test_resume_extends_a_finished_run(run_dir, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    assert main(["resume", str(copy), "train.steps=30", "--no-plots"]) == 0
    lines = [json.loads(x) for x in (copy / "metrics.jsonl").read_text().splitlines()]
    assert lines[-1]["step"] == 30 and [r["step"] for r in lines if "loss" in r] == [5, 10, 15, 20, 25, 30]
    assert main(["resume", str(copy), "model.components=5"]) == 2


def test_demo_config_file_matches_the_demo_command():
    assert (ROOT / "configs" / "demo.yaml").resolve() == demo_config_path().resolve()


def test_demo_end_to_end_tiny(tmp_path, capsys):
    out = tmp_path / "demo"
    args = ["demo", "--out", str(out), "data.n=800", "model.type=factorized", "model.components=3", "model.hidden=16", "train.steps=10",
            "train.batch_size=64", "train.eval_every=5", "objective.kinetic_samples=32", "objective.kinetic_start=5",
            "objective.kinetic_ramp=0", "evaluate.particles=50", "evaluate.steps=10"]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert str(out) in text and "probflux sample" in text
    m = json.loads((out / "metrics.json").read_text())
    assert {"test_nll", "continuity_residual_max", "w1_sde_vs_model", "demo_wall_seconds"} <= set(m)
    assert (out / "density.gif").read_bytes()[:6] in (b"GIF89a", b"GIF87a")


@pytest.mark.parametrize(
    "args, match",
    [
        (["fit", "no/such/config.yaml"], "no/such/config.yaml"),
        (["fit", TINY, "model.componets=4"], "did you mean 'model.components'"),
        (["fit", TINY, "train.steps"], "key=value"),
        (["sample", "no/such/run", "--t", "0.5", "-o", "x.npy"], "no/such/run"),
    ],
)
def test_errors_are_precise_and_exit_nonzero(args, match, capsys):
    assert main(args) == 2
    assert match in capsys.readouterr().err


def test_run_specific_errors(run_dir, tmp_path, capsys):
    assert main(["sample", str(run_dir), "--t", "5", "-o", str(tmp_path / "s.npy")]) == 2
    assert "--t 5 is outside the model's time interval [0, 1]" in capsys.readouterr().err
    assert main(["simulate", str(run_dir), "--diffusion", "-1", "-o", str(tmp_path / "p.npz")]) == 2
    assert "--diffusion must be >= 0" in capsys.readouterr().err
    assert main(["sample", str(run_dir), "--t", "0.5", "-o", str(tmp_path / "s.txt")]) == 2
    assert "unsupported extension" in capsys.readouterr().err


def test_nan_in_data_file_names_the_row(tmp_path, capsys):
    a = np.random.default_rng(0).normal(size=(300, 3))
    a[:, 0] = np.linspace(0, 1, 300)
    a[123, 2] = np.nan
    np.save(tmp_path / "d.npy", a)
    assert main(["fit", TINY, "data.name=file", f"data.path={tmp_path / 'd.npy'}", f"out={tmp_path / 'r'}"]) == 2
    err = capsys.readouterr().err
    assert "row 123" in err and "d.npy" in err


def test_corrupt_checkpoint(run_dir, tmp_path, capsys):
    import shutil

    copy = tmp_path / "bad"
    shutil.copytree(run_dir, copy)
    (copy / "checkpoints" / "best.pt").write_bytes(b"not a checkpoint")
    assert main(["sample", str(copy), "--t", "0.5", "-o", str(tmp_path / "s.npy")]) == 2
    assert "corrupt" in capsys.readouterr().err


def test_console_entry_point_unknown_command():
    proc = subprocess.run([sys.executable, "-m", "probflux", "frobnicate"], capture_output=True, text=True)
    assert proc.returncode == 2 and "invalid choice: 'frobnicate'" in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "probflux", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and "simulate" in proc.stdout


def test_build_objective_from_config():
    from probflux.app.builders import build_objective
    from probflux.app.config import ObjectiveConfig
    from probflux.objectives import DriftEnergy, EndpointLikelihood, JacobianSymmetry, KineticEnergy, Staged, Sum

    obj = build_objective(ObjectiveConfig(likelihood="snapshots", kinetic=0.1, jacobian_symmetry=0.01, kinetic_start=5), [0.0, 0.5, 1.0])
    assert isinstance(obj, Sum) and isinstance(obj.parts[0], EndpointLikelihood) and isinstance(obj.parts[1], Staged)
    inner = obj.parts[1].objective
    assert [type(p) for p in inner.parts] == [KineticEnergy, JacobianSymmetry]
    assert isinstance(build_objective(ObjectiveConfig(drift_energy=0.1)).parts[1], DriftEnergy)
    with pytest.raises(ValueError, match="needs the snapshot times"):
        build_objective(ObjectiveConfig(likelihood="snapshots"))
    with pytest.raises(Exception, match="objective.drift_energy: needs model.diffusion > 0"):
        load_config(None, ["objective.drift_energy=0.1"])


def test_leave_one_time_out_run_scores_the_heldout_snapshot(tmp_path):
    from probflux.data.snapshots import data_root_candidates

    if not any((p / "single_cell" / "deepruot" / "emt_10d.csv").is_file() for p in map(Path, data_root_candidates())):
        pytest.skip("../shared/data not found: EMT 10-D snapshots unavailable")
    out = tmp_path / "emt"
    assert main(["fit", str(ROOT / "configs" / "emt_loo.yaml"), f"out={out}", "train.steps=20", "train.eval_every=10",
                 "model.hidden=32", "model.components=4", "objective.kinetic_samples=32", "--no-plots"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["heldout_time"] == 1.0 and m["heldout_cells"] == 885
    for k in ("heldout_w1_density", "heldout_w1_transport", "heldout_w2_transport"):
        assert 0 < m[k] < 10, (k, m[k])
