"""Runs lose nothing and never go silently wrong: run directories, divergence, validated options, data provenance,
degenerate data, signals, file modes and checkpoint messages."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from probflux.app.cli import main
from probflux.checkpoint import load_checkpoint, model_weights, non_finite_tensors, save_checkpoint
from probflux.io import atomic_write, json_line, run_lock

ROOT = Path(__file__).resolve().parents[1]
TINY = str(ROOT / "configs" / "tiny.yaml")
FAST = ["train.steps=10", "evaluate.particles=50", "evaluate.steps=10", "evaluate.residual_points=32", "--no-plots"]


def snapshot(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def strict_json(line: str):
    def no_constant(name):
        raise ValueError(f"non-JSON token {name}")

    return json.loads(line, parse_constant=no_constant)


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("safety") / "run"
    assert main(["fit", TINY, f"out={out}", *FAST]) == 0
    return out


# ------------------------------------------------------------------------------ 1. run directories


def test_existing_run_is_refused_and_left_byte_identical(run, tmp_path, capsys):
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    (copy / "density.png").write_bytes(b"old figure")  # a figure of the old run
    before = snapshot(copy)
    assert main(["fit", TINY, f"out={copy}", "model.components=5", *FAST]) == 2
    err = capsys.readouterr().err
    assert "already holds a run" in err and "checkpoints/latest.pt" in err and "config.yaml" in err and "--overwrite" in err
    assert snapshot(copy) == before
    # a fit that fails validation changes nothing, even with --overwrite
    assert main(["fit", TINY, f"out={copy}", "train.batch_size=99999", *FAST, "--overwrite"]) == 2
    assert "exceeds the" in capsys.readouterr().err
    assert snapshot(copy) == before
    # --overwrite replaces the run: the old figure is gone, the new config is in place, a new run id
    assert main(["fit", TINY, f"out={copy}", "model.components=5", *FAST, "--overwrite"]) == 0
    assert not (copy / "density.png").exists()
    assert "components: 5" in (copy / "config.yaml").read_text()
    old, new = (json.loads(before["run.json"]), json.loads((copy / "run.json").read_text()))
    assert old["run_id"] != new["run_id"] == load_checkpoint(copy / "checkpoints" / "latest.pt")["run_id"]
    new_lines = (copy / "metrics.jsonl").read_text()
    assert [json.loads(x)["step"] for x in new_lines.splitlines()] == [5, 10] and new_lines.encode() != before["metrics.jsonl"]


def test_foreign_checkpoint_is_refused_on_resume(run, tmp_path, capsys):
    other = tmp_path / "other"
    assert main(["fit", TINY, f"out={other}", "seed=1", *FAST]) == 0
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    shutil.copy(other / "checkpoints" / "latest.pt", copy / "checkpoints" / "latest.pt")
    before = snapshot(copy)
    assert main(["resume", str(copy), "train.steps=20", "--no-plots"]) == 2
    err = capsys.readouterr().err
    assert "belongs to run" in err and "another run" in err
    assert snapshot(copy) == before
    shutil.copy(other / "checkpoints" / "best.pt", copy / "checkpoints" / "best.pt")
    assert main(["sample", str(copy), "--t", "0.5", "-o", str(tmp_path / "s.npy")]) == 2
    assert "copied from another run" in capsys.readouterr().err


def test_lock_makes_a_second_writer_fail_fast_and_sigterm_is_clean(tmp_path):
    out = tmp_path / "busy"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "probflux", "fit", TINY, f"out={out}", "train.steps=100000", "train.checkpoint_every=5",
           "train.eval_every=100000", "--no-plots"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.time() + 120
        while not (out / "checkpoints" / "latest.pt").exists():
            assert proc.poll() is None and time.time() < deadline, proc.communicate()
            time.sleep(0.2)
        start = time.perf_counter()
        second = subprocess.run([sys.executable, "-m", "probflux", "fit", TINY, f"out={out}", "--overwrite", "--no-plots"],
                                capture_output=True, text=True, env=env, timeout=120)
        assert second.returncode == 2 and "in use by another probflux process" in second.stderr, second.stderr
        assert f"pid {proc.pid}" in second.stderr
        assert time.perf_counter() - start < 60  # before any training step of its own
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143 and "terminated (SIGTERM)" in err and "checkpoint is intact" in err, (proc.returncode, err[-3000:])
    state = load_checkpoint(out / "checkpoints" / "latest.pt")
    assert state["trainer"]["step"] >= 5 and not non_finite_tensors(state["model"])
    assert "fit step" in err  # plain progress lines in a non-interactive log


def test_run_lock_is_exclusive_across_processes(tmp_path):
    code = ("import sys, time; from probflux.io import run_lock\n"
            f"with run_lock({str(tmp_path)!r}):\n    print('held', flush=True); time.sleep(30)")
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        from probflux.io import RunLocked

        with pytest.raises(RunLocked, match=f"pid {holder.pid}"):
            with run_lock(tmp_path):
                pass
    finally:
        holder.kill()
        holder.wait()
    with run_lock(tmp_path), run_lock(tmp_path):  # free again once the holder is gone; re-entrant in one process
        pass


# ------------------------------------------------------------------------------------ 2. divergence


def test_divergence_stops_cleanly_with_a_finite_latest_checkpoint(tmp_path, capsys):
    out = tmp_path / "div"
    assert main(["fit", TINY, f"out={out}", "train.lr=1e4", "train.clip=null", "train.warmup=0", "train.checkpoint_every=1",
                 "train.log_every=1", "--no-plots"]) == 2
    err = capsys.readouterr().err
    assert "training diverged" in err and "at step" in err and "last good checkpoint" in err and "was not taken" in err
    state = load_checkpoint(out / "checkpoints" / "latest.pt")
    assert not non_finite_tensors({k: state[k] for k in ("model", "ema", "optimizer")})
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert lines and all(strict_json(line)["step"] >= 1 for line in lines)
    # the checkpoint is usable: sample from it
    assert main(["sample", str(out), "--checkpoint", "latest", "--t", "0.5", "-n", "50", "-o", str(tmp_path / "s.npy")]) == 0
    assert np.isfinite(np.load(tmp_path / "s.npy")).all()


def test_non_finite_checkpoint_is_refused_and_json_lines_stay_json(tmp_path):
    path = tmp_path / "c.pt"
    save_checkpoint(path, {"model": {"w": torch.ones(2)}})
    before = path.read_bytes()
    from probflux.checkpoint import CheckpointError

    with pytest.raises(CheckpointError, match=r"1 tensors hold NaN or inf \(model.w\)"):
        save_checkpoint(path, {"model": {"w": torch.tensor([1.0, float("nan")])}})
    assert path.read_bytes() == before
    assert strict_json(json_line({"a": float("nan"), "b": [float("inf"), 1.0]})) == {"a": None, "b": [None, 1.0]}


# ------------------------------------------------------------------------------- 3. option objects


def test_option_objects_validate_themselves():
    from probflux.app import config as C
    from probflux.options import OptionError
    from probflux.train import TrainConfig

    for kw, match in [({"clip": -1}, "train.clip: must be > 0"), ({"lr": 0}, "train.lr: must be > 0"),
                      ({"warmup": -5}, "train.warmup: must be >= 0"), ({"ema": 1.5}, r"train.ema: must lie in \[0, 1\)"),
                      ({"patience": 0}, "train.patience: must be >= 1")]:
        with pytest.raises(OptionError, match=match):
            TrainConfig(**kw)
    with pytest.raises(TypeError, match="train.steps: expected int, got 'ten'"):
        TrainConfig(steps="ten")
    with pytest.raises(TypeError, match="train.steps: expected int, got True"):
        TrainConfig(steps=True)
    assert TrainConfig(lr=1).lr == 1.0 and isinstance(TrainConfig(lr=1).lr, float)
    with pytest.raises(ValueError, match="model.components: must be >= 1"):
        C.ModelConfig(components=0)
    with pytest.raises(ValueError, match="objective.kinetic: must be >= 0"):
        C.ObjectiveConfig(kinetic=-1)
    # the CLI/YAML rules for train.* are the same objects TrainConfig checks with
    assert all(C._CONSTRAINTS[f"train.{k}"] is v for k, v in TrainConfig.CHECKS.items())
    # fit checks again after an assignment
    from probflux.train import fit

    cfg = TrainConfig(steps=2, batch_size=8, device="cpu")
    cfg.clip = -1.0
    with pytest.raises(OptionError, match="train.clip"):
        fit(None, None, None, config=cfg)


def test_duplicate_yaml_key_is_an_error(tmp_path):
    from probflux.app.config import ConfigError, load_config

    path = tmp_path / "dup.yaml"
    path.write_text("train:\n  steps: 5\n  lr: 0.1\n  steps: 7\n")
    with pytest.raises(ConfigError, match=r"line 4.*duplicate key 'steps' \(first at line 2\)"):
        load_config(path)


# ---------------------------------------------------------------------------------------- best model


def test_fit_returns_the_best_validation_model():
    import probflux as pf
    from probflux.objectives import NegativeLogLikelihood
    from probflux.train import TrainConfig, fit

    g = torch.Generator().manual_seed(0)
    t = torch.rand(600, generator=g, dtype=torch.float64)
    pts = SimpleNamespace(t=t, x=torch.randn(600, 2, generator=g, dtype=torch.float64) + t[:, None], context=None)
    val = SimpleNamespace(t=pts.t[:40], x=pts.x[:40] + 3.0, context=None)  # a shifted validation set: the fit moves away from it
    torch.manual_seed(0)
    dyn = pf.Dynamics(pf.FactorizedMixture(2, components=2, hidden=8, layers=1))
    cfg = TrainConfig(steps=60, batch_size=64, lr=1e-2, warmup=0, ema=0.5, dtype="float64", device="cpu", eval_every=5, log_every=5)
    res = fit(dyn, NegativeLogLikelihood(), pts, val=val, config=cfg, progress=False)
    assert res.best_step is not None and res.best_step < res.step  # precondition: the last evaluation is not the best
    assert res.best_model is not res.model
    with torch.no_grad():
        nll = lambda m: float(-m.log_prob(val.t, val.x).mean())  # noqa: E731
        assert nll(res.best_model) == pytest.approx(res.best_val_nll, rel=1e-9)
        assert nll(res.model) > res.best_val_nll
    res2 = fit(pf.Dynamics(pf.FactorizedMixture(2, components=2, hidden=8, layers=1)), NegativeLogLikelihood(), pts,
               config=TrainConfig(steps=3, batch_size=64, device="cpu", dtype="float64"), progress=False)
    assert res2.best_model is res2.model


def test_best_model_equals_best_checkpoint(run):
    state = load_checkpoint(run / "checkpoints" / "best.pt")
    assert state["trainer"]["best_step"] == state["trainer"]["step"]  # best.pt is written at its own evaluation
    assert set(model_weights(state)) == set(state["model"])


# ---------------------------------------------------------------------------------------- 4. provenance


def test_provenance_relative_path_moved_run_and_edited_file(tmp_path, monkeypatch, capsys):
    rng = np.random.default_rng(0)
    t = np.linspace(0, 1, 400)
    x = np.stack([np.cos(3 * t), np.sin(3 * t)], 1) + 0.2 * rng.normal(size=(400, 2))
    data = tmp_path / "data"
    data.mkdir()
    csv = data / "points.csv"
    np.savetxt(csv, np.column_stack([t, x]), delimiter=",", header="t,x,y", comments="")
    monkeypatch.chdir(data)
    out = tmp_path / "runs" / "r"
    assert main(["fit", TINY, f"out={out}", "data.name=file", "data.path=points.csv", "data.t0=null", "data.t1=null", *FAST]) == 0
    capsys.readouterr()
    saved = (out / "config.yaml").read_text()
    assert f"path: {csv.resolve()}" in saved  # stored absolute
    record = json.loads((out / "run.json").read_text())["data"]
    assert record["files"] == [{"path": str(csv.resolve()), "size": csv.stat().st_size,
                                "sha256": hashlib.sha256(csv.read_bytes()).hexdigest()}]
    assert record["normalizer"]["t0"] == 0.0 and record["points"]["train"] == 320
    # from another directory, and after the run directory moved
    monkeypatch.chdir(tmp_path)
    moved = tmp_path / "elsewhere"
    shutil.move(str(out), str(moved))
    assert main(["evaluate", str(moved), "--particles", "20", "--steps", "5"]) == 0
    first = json.loads(capsys.readouterr().out)["test_nll"]
    # an edited data file is detected by evaluate and plot
    lines = csv.read_text().splitlines()
    lines[5] = "0.0125,9.0,9.0"
    csv.write_text("\n".join(lines) + "\n")
    for cmd in (["evaluate", str(moved)], ["plot", str(moved), "--no-gif"]):
        assert main(cmd) == 2
        err = capsys.readouterr().err
        assert "changed since the run was trained" in err and "points.csv" in err
    assert np.isfinite(first)
    # a missing file is named too
    csv.unlink()
    assert main(["evaluate", str(moved)]) == 2
    assert "is missing" in capsys.readouterr().err


def test_data_file_inside_the_run_directory_is_stored_relative(tmp_path, monkeypatch):
    out = tmp_path / "r"
    out.mkdir()
    t = np.linspace(0, 1, 300)
    np.save(out / "d.npy", np.column_stack([t, np.sin(t), np.cos(t) + 0.1 * np.random.default_rng(1).normal(size=300)]))
    assert main(["fit", TINY, f"out={out}", "data.name=file", f"data.path={out / 'd.npy'}", "data.t0=null", "data.t1=null", *FAST]) == 0
    rec = json.loads((out / "run.json").read_text())["data"]["files"]
    assert rec[0]["path"] == "d.npy" and rec[0]["in_run"]
    moved = tmp_path / "moved"
    shutil.move(str(out), str(moved))
    monkeypatch.chdir(tmp_path)
    from probflux.app.run import load_run

    train, val, test = load_run(moved).data()
    assert len(train) == 240


def test_builtin_data_files_are_recorded(tmp_path):
    from probflux.app.builders import load_data
    from probflux.app.config import DataConfig
    from probflux.app.provenance import _data_files, recording_reads
    from probflux.data.snapshots import data_root_candidates

    if not any((p / "single_cell" / "deepruot" / "emt_10d.csv").is_file() for p in map(Path, data_root_candidates())):
        pytest.skip("../shared/data not found")
    with recording_reads() as reads:
        load_data(DataConfig(name="emt10"), 0)
    files = _data_files(reads, None)
    assert [f.name for f in files] == ["emt_10d.csv"]


# ------------------------------------------------------------------------------------ 5. degenerate data


def _fit_file(tmp_path, a, capsys, *extra):
    np.save(tmp_path / "d.npy", a)
    code = main(["fit", TINY, "data.name=file", f"data.path={tmp_path / 'd.npy'}", "data.t0=null", "data.t1=null",
                 f"out={tmp_path / 'r'}", *extra, *FAST])
    return code, capsys.readouterr().err


def test_degenerate_data_are_named(tmp_path, capsys):
    rng = np.random.default_rng(0)
    a = np.column_stack([np.linspace(0, 1, 300), rng.normal(size=(300, 2))])
    const = a.copy()
    const[:, 0] = 3.0
    code, err = _fit_file(tmp_path, const, capsys)
    assert code == 2 and "all 300 points have the same time t = 3" in err
    far = a.copy()
    far[17, 0] = 1e30
    code, err = _fit_file(tmp_path, far, capsys)
    assert code == 2 and "extreme outliers" in err and "t = 1e+30" in err and "row" in err
    far = a.copy()
    far[42, 2] = 1e30
    code, err = _fit_file(tmp_path, far, capsys)
    assert code == 2 and "x[:, 1] = 1e+30" in err
    assert not (tmp_path / "r").exists()  # nothing written for refused data


def test_single_point_splits():
    from probflux.data.checks import check_splits
    from probflux.data.points import TemporalPoints

    def pts(n, t0=0.0):
        return TemporalPoints(torch.linspace(t0, 1, n), torch.randn(n, 2, generator=torch.Generator().manual_seed(n)))

    with pytest.warns(UserWarning, match="the val split holds a single point"):
        check_splits(pts(50), pts(1, 1.0), pts(5))
    with pytest.raises(ValueError, match="the training split has 1 point"):
        check_splits(pts(1), pts(5), pts(5))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_splits(pts(50), pts(5), TemporalPoints(torch.zeros(0), torch.zeros(0, 2), _allow_empty=True))


# -------------------------------------------------------------------------- 6. modes and messages


@pytest.mark.parametrize("mask, mode", [(0o027, 0o640), (0o002, 0o664)])
def test_outputs_follow_the_umask(tmp_path, mask, mode, run):
    old = os.umask(mask)
    try:
        atomic_write(tmp_path / "a.bin", lambda f: f.write(b"x"))
        save_checkpoint(tmp_path / "c.pt", {"model": {}})
        assert main(["sample", str(run), "--t", "0.5", "-n", "5", "-o", str(tmp_path / "s.npy")]) == 0
    finally:
        os.umask(old)
    for name in ("a.bin", "c.pt", "s.npy"):
        assert (tmp_path / name).stat().st_mode & 0o777 == mode, name


def test_checkpoint_errors_never_suggest_unsafe_loading(tmp_path, run, capsys):
    import collections

    from probflux.checkpoint import CheckpointError

    rnd = tmp_path / "random.pt"
    rnd.write_bytes(np.random.default_rng(0).bytes(4096))
    evil = tmp_path / "evil.pt"
    torch.save({"cls": collections.OrderedDict, "f": print}, evil)
    for path in (rnd, evil):
        with pytest.raises(CheckpointError, match="corrupt or not a probflux checkpoint") as e:
            load_checkpoint(path)
        assert "weights_only=False" not in str(e.value) and "weights_only=True" in str(e.value)
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    shutil.copy(evil, copy / "checkpoints" / "best.pt")
    assert main(["sample", str(copy), "--t", "0.5", "-o", str(tmp_path / "s.npy")]) == 2
    assert "weights_only=False" not in capsys.readouterr().err


def test_progress_lines_for_logs(capsys):
    import probflux as pf
    from probflux.objectives import NegativeLogLikelihood
    from probflux.train import TrainConfig, fit

    g = torch.Generator().manual_seed(0)
    pts = SimpleNamespace(t=torch.rand(200, generator=g), x=torch.randn(200, 2, generator=g), context=None)
    fit(pf.Dynamics(pf.FactorizedMixture(2, components=2, hidden=8, layers=1)), NegativeLogLikelihood(), pts,
        config=TrainConfig(steps=6, batch_size=32, device="cpu", log_every=2), progress="lines")
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("fit step 2/6  loss ") and err[-1].startswith("fit step 6/6  loss ") and "steps/s" in err[-1]
