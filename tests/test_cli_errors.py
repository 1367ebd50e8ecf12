"""Every CLI command turns a user error into one line on stderr naming the argument, and exit code 2 (never a
traceback); a bug still raises. The table below is the list of bad invocations (issue 14, bullet 4)."""
from __future__ import annotations

import errno
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from probflux.app import cli
from probflux.app.cli import main

ROOT = Path(__file__).resolve().parents[1]
TINY = str(ROOT / "configs" / "tiny.yaml")
# a run of seconds: 4 steps, a checkpoint every 2, no simulation in the evaluation, no figures
FAST = ["train.steps=4", "train.eval_every=2", "train.checkpoint_every=2", "data.n=200", "evaluate.particles=0",
        "evaluate.residual_points=16"]


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict[str, str]:
    tmp = tmp_path_factory.mktemp("cli_errors")
    run = tmp / "run"
    assert main(["fit", TINY, f"out={run}", *FAST, "--no-plots"]) == 0
    corrupt = tmp / "corrupt"
    shutil.copytree(run, corrupt)
    for name in ("best.pt", "latest.pt"):
        (corrupt / "checkpoints" / name).write_bytes(b"not a checkpoint")
    (tmp / "file").write_text("a file where a directory is wanted\n")
    (tmp / "empty").mkdir()
    (tmp / "bad.yaml").write_text("model: [\n")
    (tmp / "bad.npz").write_bytes(b"garbage")
    return {"run": str(run), "corrupt": str(corrupt), "file": str(tmp / "file"), "empty": str(tmp / "empty"),
            "tmp": str(tmp), "tiny": TINY, "yaml": str(tmp / "bad.yaml"), "npz": str(tmp / "bad.npz")}


# (argv, what the one line must contain: the argument, key or path at fault)
TABLE = [
    # fit: config file, overrides, run directory, data file
    ("fit {tmp}/no/such.yaml", "no/such.yaml"),
    ("fit {empty}", "{empty}"),  # a directory as CONFIG
    ("fit {yaml}", "invalid YAML at line 2"),
    ("fit {tiny} model.components=0", "model.components"),
    ("fit {tiny} train.steps=-1", "train.steps"),
    ("fit {tiny} train.lr=abc", "train.lr"),
    ("fit {tiny} model.componets=4", "did you mean 'model.components'"),
    ("fit {tiny} train.steps", "key=value"),
    ("fit {tiny} out={file}", "out='{file}' is a file"),
    ("fit {tiny} out={file}/sub", "out='{file}/sub' is under '{file}'"),
    ("fit {tiny} out={run}", "already holds a run"),
    ("fit {tiny} data.name=file data.path={tmp}/missing.csv out={tmp}/r", "missing.csv"),
    ("fit {tiny} data.name=file data.path={empty} out={tmp}/r", "{empty}"),
    ("fit {tiny} data.name=file data.path={npz} out={tmp}/r", "bad.npz"),
    ("fit", "CONFIG"),
    # resume
    ("resume {file}", "argument RUN_DIR: '{file}' is a file, not a run directory"),
    ("resume {tmp}/missing", "argument RUN_DIR: run directory '{tmp}/missing' does not exist"),
    ("resume {empty}", "argument RUN_DIR: '{empty}' holds no checkpoints/"),
    ("resume {corrupt}", "corrupt"),
    ("resume {run} model.components=5", "only train.* settings"),
    ("resume {run} train.steps=0", "train.steps"),
    # sample
    ("sample {run} --t 0.5 -n -5 -o {tmp}/s.npy", "argument -n: must be a positive integer"),
    ("sample {run} --t 0.5 -n 0 -o {tmp}/s.npy", "argument -n: must be a positive integer"),
    ("sample {run} --t 0.5 -n ten -o {tmp}/s.npy", "argument -n"),
    ("sample {run} --t nan -o {tmp}/s.npy", "argument --t: must be a finite number"),
    ("sample {run} --t 5 -o {tmp}/s.npy", "--t 5 is outside the model's time interval"),
    ("sample {run} --t 0.5 -o {tmp}/s.txt", "argument -o/--output: '{tmp}/s.txt': unsupported extension"),
    ("sample {run} --t 0.5 -o {file}/s.npy", "argument -o/--output: '{file}/s.npy': '{file}' is a file"),
    ("sample {run} --t 0.5 -o {empty}", "argument -o/--output: '{empty}' is a directory"),
    ("sample {run} --t 0.5 -o {tmp}/s.npy --context {tmp}/missing.npy", "argument --context: file '{tmp}/missing.npy'"),
    ("sample {run} --t 0.5 -o {tmp}/s.npy --seed -1", "argument --seed"),
    ("sample {file} --t 0.5 -o {tmp}/s.npy", "argument RUN_DIR: '{file}' is a file"),
    ("sample {corrupt} --t 0.5 -o {tmp}/s.npy", "corrupt"),
    ("sample {run} -o {tmp}/s.npy", "--t"),
    # simulate
    ("simulate {run} -n -1 -o {tmp}/p.npz", "argument -n: must be a positive integer"),
    ("simulate {run} --steps 0 -o {tmp}/p.npz", "argument --steps: must be a positive integer"),
    ("simulate {run} --diffusion -1 -o {tmp}/p.npz", "--diffusion must be >= 0"),
    ("simulate {run} --diffusion inf -o {tmp}/p.npz", "argument --diffusion"),
    ("simulate {run} --t0 7 -o {tmp}/p.npz", "--t0 7 is outside"),
    ("simulate {run} -o {tmp}/p.npy", "argument -o/--output: '{tmp}/p.npy': unsupported extension (use .npz)"),
    ("simulate {run} -o {file}/p.npz", "'{file}' is a file"),
    ("simulate {empty} -o {tmp}/p.npz", "argument RUN_DIR: '{empty}' holds no checkpoints/"),
    # evaluate
    ("evaluate {run} --particles -1", "argument --particles: must be an integer >= 0, got -1"),
    ("evaluate {run} --steps -3", "argument --steps: must be an integer >= 0, got -3"),
    ("evaluate {run} --split holdout", "argument --split"),
    ("evaluate {tmp}/missing", "argument RUN_DIR: run directory '{tmp}/missing' does not exist"),
    ("evaluate {corrupt}", "corrupt"),
    # plot
    ("plot {file}", "argument RUN_DIR: '{file}' is a file"),
    ("plot {tmp}/missing", "does not exist"),
    ("plot {run} --checkpoint newest", "argument --checkpoint"),
    # demo (each fails before training)
    ("demo --out {file}", "--out '{file}' is a file"),
    ("demo --out {file}/x", "--out '{file}/x' is under '{file}'"),
    ("demo --out {tmp}/demo model.components=0", "model.components"),
    ("demo --out {tmp}/demo out={file}", "out='{file}' is a file"),
    ("demo --out {tmp}/demo train.steps", "key=value"),
]


def _argv(template: str, env: dict[str, str]) -> list[str]:
    return [part.format(**env) for part in template.split()]


def _one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err, err
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{err}"
    return lines[0]


@pytest.mark.parametrize("template, expected", TABLE, ids=[t for t, _ in TABLE])
def test_bad_invocation_is_one_line_and_exit_2(template, expected, env, capsys):
    assert main(_argv(template, env)) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert expected.format(**env) in line
    assert line.startswith(f"probflux {template.split()[0]}: error: ") or line.startswith("probflux: error: ")


def _subparsers() -> dict:
    return cli.build_parser()._subparsers._group_actions[0].choices


def _commands() -> list[str]:
    return sorted(_subparsers())


def test_table_covers_every_command():
    """Every registered subcommand has rows above; a new one (e.g. ``control``) is covered by the generic rows below."""
    covered = {t.split()[0] for t, _ in TABLE}
    assert {"fit", "resume", "sample", "simulate", "evaluate", "plot", "demo"} <= covered
    assert covered <= set(_commands())


@pytest.mark.parametrize("command", _commands())
def test_every_command_rejects_an_unknown_flag_in_one_line(command, env, capsys):
    assert main([command, "--no-such-flag"]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "--no-such-flag" in line or "the following arguments are required" in line


@pytest.mark.parametrize("command", [c for c, q in sorted(_subparsers().items()) if "run_dir" in {a.dest for a in q._actions}])
def test_every_run_command_rejects_a_file_as_run_dir(command, env, capsys):
    assert main([command, env["file"]]) == 2
    assert f"'{env['file']}' is a file" in _one_error_line(capsys.readouterr().err)


def _disk_full(monkeypatch) -> None:
    """Every atomic write (checkpoints, JSON, config, -o files) fails as on a full disk."""
    from probflux import io

    original = io.atomic_write

    def full(path, write):
        raise OSError(errno.ENOSPC, "No space left on device")

    for name, module in list(sys.modules.items()):
        if name.startswith("probflux") and getattr(module, "atomic_write", None) is original:
            monkeypatch.setattr(module, "atomic_write", full)


@pytest.mark.parametrize("template, expected", [
    ("sample {run} --t 0.5 -o {tmp}/full.npy", "while writing -o '{tmp}/full.npy'"),
    ("evaluate {run}", "while writing RUN_DIR '{run}'"),
    ("fit {tiny} out={tmp}/full " + " ".join(FAST) + " --no-plots", "while writing out='{tmp}/full'"),
])
def test_disk_full_is_one_line(template, expected, env, monkeypatch, capsys):
    _disk_full(monkeypatch)
    assert main(_argv(template, env)) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "no space left on device (disk full)" in line and expected.format(**env) in line
    assert not (Path(env["tmp"]) / "full.npy").exists()


def test_disk_full_while_checkpointing_names_the_run(env, monkeypatch, capsys):
    from probflux import checkpoint

    def full(path, write):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint, "atomic_write", full)
    out = Path(env["tmp"]) / "ckpt_full"
    assert main(["fit", TINY, f"out={out}", *FAST, "--no-plots"]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert f"out='{out}'" in line and "disk full" in line and f"probflux resume {out}" in line


def test_os_error_names_the_path_and_argument(env, monkeypatch, capsys):
    """A permission error while writing -o (simulated: the tests may run as root) names -o and the file."""
    from probflux import io

    target = f"{env['tmp']}/denied.npy"

    def denied(path, write):
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr(io, "atomic_write", denied)
    assert main(["sample", env["run"], "--t", "0.5", "-n", "5", "-o", target]) == 2
    assert _one_error_line(capsys.readouterr().err) == f"probflux sample: error: -o {target!r}: permission denied"


def test_the_issues_cases_that_are_not_errors(env, capsys):
    """``evaluate --particles 0`` switches the simulation off (it used to fail with 'a is empty')."""
    assert main(["evaluate", env["run"], "--particles", "0", "--split", "val"]) == 0
    assert "w1_sde_vs_model" not in capsys.readouterr().out


def test_bugs_keep_their_traceback(env, monkeypatch):
    """Only user errors are mapped: a RuntimeError, TypeError or KeyError from inside a command propagates."""
    from probflux.app import run as run_module

    for exc in (RuntimeError("negative dimension"), TypeError("bad call"), KeyError("x"), OSError(errno.EINVAL, "Invalid argument")):
        def boom(*a, _exc=exc, **k):
            raise _exc

        monkeypatch.setattr(run_module, "load_run", boom)
        with pytest.raises(type(exc)):
            main(["plot", env["run"]])


def test_traceback_on_request(env, monkeypatch):
    monkeypatch.setenv("PROBFLUX_TRACEBACK", "1")
    with pytest.raises(ValueError, match="outside the model's time interval"):
        main(["sample", env["run"], "--t", "5", "-o", f"{env['tmp']}/s.npy"])


def test_console_entry_point_has_no_traceback(env):
    """The real entry point (``python -m probflux``), two cases run side by side (both fail while parsing: cheap)."""
    cases = [(["sample", env["run"], "--t", "0.5", "-n", "-5", "-o", f"{env['tmp']}/s.npy"], "argument -n"),
             (["resume", env["file"]], f"argument RUN_DIR: '{env['file']}' is a file")]
    procs = [subprocess.Popen([sys.executable, "-m", "probflux", *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for argv, _ in cases]
    for proc, (_, expected) in zip(procs, cases):
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 2, err
        assert expected in _one_error_line(err)
