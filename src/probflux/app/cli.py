"""``probflux`` command line: a thin layer over :mod:`probflux.app.run`.

    probflux fit CONFIG [key=value ...]          train, evaluate and plot a run
    probflux resume RUN_DIR [key=value ...]      continue a run from its latest checkpoint
    probflux sample RUN_DIR --t 0.5 -n 1000 -o samples.npy
    probflux simulate RUN_DIR -n 500 --steps 200 --diffusion 0.5 -o paths.npz
    probflux evaluate RUN_DIR                    held-out NLL, continuity residual, SDE-vs-model W1
    probflux plot RUN_DIR                        density snapshots, trajectories, loss curves, GIF
    probflux demo                                the main job on built-in data (into $DEMO_OUT or runs/demo)
    probflux control CONFIG [key=value ...]      a control problem: train, Monte Carlo check, figures (docs/control.md)

Times and positions given to and written by the CLI are in the data's coordinates.

`fit` refuses a directory that holds another run unless --overwrite; one process at a time writes a run
directory (a file lock). Exit codes: 0 done, 2 an error (the message says which), 130 interrupted (Ctrl-C,
SIGINT), 143 terminated (SIGTERM); after 130/143 the latest checkpoint is intact and `probflux resume` continues.
A user error is one line on stderr naming the argument, file or config key at fault; PROBFLUX_TRACEBACK=1 shows
the full traceback instead.

Error handling (for developers; not part of --help). Every subcommand runs through one wrapper, :func:`_dispatch`
(subcommands registered with ``set_defaults(func=...)`` need nothing more), which turns a *user error* into
``probflux COMMAND: error: MESSAGE`` (one line) and exit code 2. Arguments are checked while parsing where they
can be (sizes by :func:`positive_int` / :func:`nonnegative_int`, times by :func:`finite_float`, run directories,
output files and input files by :func:`run_dir`, :func:`output_file`, :func:`input_file`), so argparse names the
flag; its messages are one line too (:class:`_Parser`). A user error is:

- ``ValueError`` and its subclasses: every validation in the library raises one naming the argument
  (``ConfigError``, ``OptionError`` incl. ``OptionTypeError``, ``CheckpointError``, ``RunExists``,
  ``DataChanged``, ``UnicodeDecodeError`` of a text file, ...);
- ``FloatingPointError`` (``TrainingDiverged``: the run stopped, the latest checkpoint is finite) and
  ``RunLocked`` (another process writes the run directory);
- ``OSError`` about a path or the machine: ``FileNotFoundError``, ``FileExistsError``, ``NotADirectoryError``,
  ``IsADirectoryError``, ``PermissionError``, and any ``OSError`` whose errno is in ``_ENVIRONMENT_ERRNOS``
  (disk full, quota, read-only file system, name too long, I/O error, ...). The message names the path and the
  argument it came from (``out=``, ``-o``, ``RUN_DIR``, ``data.path=``; :func:`_describe_os_error`).

Everything else keeps its traceback, because it is a bug: ``TypeError`` (from the command line every value is
parsed and checked first, so a wrong type is ours; option type errors are ``OptionTypeError``, a ``ValueError``),
``RuntimeError`` (torch's shape and dtype errors), ``KeyError``, ``AttributeError``, an ``OSError`` with another
errno (EINVAL, EBADF: a wrong call). A new user error belongs in the library as a ``ValueError`` naming its
argument, not in a wider catch here.
"""
from __future__ import annotations

import argparse
import errno
import json
import math
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn, Optional

import numpy as np

# ------------------------------------------------------------------------------ argument types
# argparse reports an ArgumentTypeError as "argument -n: MESSAGE", so these messages need not name the flag


def _int_at_least(low: int, what: str) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be {what}, got {value}")
        return value
    return parse


positive_int = _int_at_least(1, "a positive integer (>= 1)")
"""A count that must be >= 1 (``-n``, ``--steps`` of simulate)."""
nonnegative_int = _int_at_least(0, "an integer >= 0")
"""A count that may be 0 (``evaluate --particles 0``: no simulation) or a seed."""


def finite_float(text: str) -> float:
    """A finite number (times, the diffusion)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def _file_in_the_way(path: Path) -> Optional[Path]:
    """The first of ``path`` and its ancestors that exists and is not a directory (None: a directory can be made)."""
    for p in (path, *path.parents):
        if p.exists() or p.is_symlink():
            return None if p.is_dir() else p
    return None


def run_dir(text: str) -> str:
    """An existing directory with a ``checkpoints/`` folder (the RUN_DIR of sample/simulate/evaluate/plot/resume)."""
    p = Path(text)
    if not p.exists():
        raise argparse.ArgumentTypeError(f"run directory {text!r} does not exist (give a directory written by probflux fit)")
    if not p.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is a file, not a run directory (give the directory probflux fit wrote)")
    if not (p / "checkpoints").is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} holds no checkpoints/ folder: not a run directory written by probflux fit "
                                         "(or one stopped before its first checkpoint)")
    return text


def input_file(text: str) -> str:
    """An existing file to read (``--context``)."""
    p = Path(text)
    if not p.exists():
        raise argparse.ArgumentTypeError(f"file {text!r} does not exist")
    if p.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is a directory, not a file")
    return text


def output_file(*suffixes: str):
    """An argparse type for a file to write with one of ``suffixes``: not a directory, not under a file."""

    def check(text: str) -> str:
        p = Path(text)
        if p.is_dir():
            raise argparse.ArgumentTypeError(f"{text!r} is a directory; give a file name inside it (e.g. {str(p / 'out')}{suffixes[0]})")
        if p.suffix not in suffixes:
            raise argparse.ArgumentTypeError(f"{text!r}: unsupported extension (use {', '.join(suffixes)})")
        blocker = _file_in_the_way(p.parent)
        if blocker is not None:
            raise argparse.ArgumentTypeError(f"{text!r}: {str(blocker)!r} is a file, not a directory")
        return text

    check.__name__ = "output_file"
    return check


def check_directory_target(path: str, label: str) -> None:
    """Raise ``NotADirectoryError`` naming ``label`` (e.g. ``out=``) when ``path`` cannot be a directory."""
    blocker = _file_in_the_way(Path(path))
    if blocker is None:
        return
    if blocker == Path(path):
        raise NotADirectoryError(f"{label}{path!r} is a file, not a directory; choose another {label.rstrip('= ')}")
    raise NotADirectoryError(f"{label}{path!r} is under {str(blocker)!r}, which is a file, not a directory")


def demo_config_path() -> Path:
    """The demo's config, shipped with the package (``configs/demo.yaml`` in the repository links to it)."""
    return Path(__file__).with_name("demo.yaml")


def _overrides(items: Sequence[str]) -> list[str]:
    for item in items:
        if "=" not in item:
            raise ValueError(f"override {item!r} is not of the form key=value (e.g. train.steps=2000)")
    return list(items)


def _load(args: argparse.Namespace):
    from .run import load_run

    return load_run(args.run_dir, args.checkpoint)


def _save(path: str, **arrays: np.ndarray) -> None:
    from ..io import atomic_write

    out = Path(path)
    if out.suffix == ".npy":
        if len(arrays) != 1:
            raise ValueError(f"-o {path}: .npy holds one array; use .npz")
        atomic_write(out, lambda f: np.save(f, next(iter(arrays.values()))))
    elif out.suffix == ".npz":
        atomic_write(out, lambda f: np.savez(f, **arrays))
    elif out.suffix == ".csv" and len(arrays) == 1:
        atomic_write(out, lambda f: np.savetxt(f, next(iter(arrays.values())), delimiter=","))
    else:
        raise ValueError(f"-o {path}: unsupported extension (use .npy, .npz{' or .csv' if len(arrays) == 1 else ''})")


def _context(run, n: int, path: Optional[str]):
    import torch

    if run.dynamics.context_dim == 0:
        if path:
            raise ValueError("--context given but the model takes no context")
        return None
    if not path:
        raise ValueError(f"the model takes a context of {run.dynamics.context_dim} columns: pass --context FILE.npy with shape (n, C)")
    c = torch.as_tensor(np.load(path), dtype=next(run.dynamics.parameters()).dtype)
    if c.shape != (n, run.dynamics.context_dim):
        raise ValueError(f"--context {path}: expected shape ({n}, {run.dynamics.context_dim}); got {tuple(c.shape)}")
    return c


def cmd_fit(args: argparse.Namespace) -> int:
    from .config import load_config

    cfg = load_config(args.config, _overrides(args.overrides))
    _note_paths(args, cfg)
    check_directory_target(cfg.out, "out=")
    return _run_fit(cfg, resume=False, plots=not args.no_plots, overwrite=args.overwrite)


def cmd_resume(args: argparse.Namespace) -> int:
    from ..checkpoint import load_checkpoint
    from .config import load_config

    ckpt = Path(args.run_dir) / "checkpoints" / "latest.pt"
    saved = load_checkpoint(ckpt)["config"]
    extra = _overrides(args.overrides)
    for item in extra:
        if not item.startswith("train."):
            raise ValueError(f"resume: only train.* settings can change when resuming; got {item!r}")
    cfg = load_config(None, extra, base=saved)
    cfg.out = str(args.run_dir)
    _note_paths(args, cfg)
    return _run_fit(cfg, resume=True, plots=not args.no_plots)


def _run_fit(cfg, *, resume: bool, plots: bool, overwrite: bool = False) -> int:
    from .run import fit_config

    start = time.perf_counter()
    # progress=None: a bar on a terminal, plain progress lines in a log file
    result, metrics = fit_config(cfg, resume=resume, plots=plots, overwrite=overwrite, progress=None)
    if int(os.environ.get("RANK", "0")) != 0:  # torchrun: rank 0 reports
        return 0
    print(json.dumps(metrics, indent=2))
    print(f"run directory: {cfg.out}  ({time.perf_counter() - start:.0f} s, {result.step} steps)")
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    run = _load(args)
    run.model_time(args.t, "--t")
    x = run.sample(args.t, args.n, context=_context(run, args.n, args.context), seed=args.seed)
    _save(args.output, samples=x.numpy())
    print(f"wrote {args.n} samples of rho at t={args.t:g} to {args.output}")
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    run = _load(args)
    if args.diffusion is not None and not args.diffusion >= 0:
        raise ValueError(f"--diffusion must be >= 0; got {args.diffusion}")
    for flag, t in (("--t0", args.t0), ("--t1", args.t1)):
        if t is not None:
            run.model_time(t, flag)
    times, path, method = run.simulate(args.n, t0=args.t0, t1=args.t1, steps=args.steps, method=args.method, diffusion=args.diffusion,
                                       context=_context(run, args.n, args.context), seed=args.seed)
    _save(args.output, paths=path.numpy(), times=times)
    print(f"wrote paths of shape {tuple(path.shape)} (steps+1, n, D) with method={method} to {args.output}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from ..io import write_json

    run = _load(args)
    train, val, test = run.data()
    points = {"test": test, "val": val, "train": train}[args.split]
    metrics = run.evaluate(points, particles=args.particles, steps=args.steps, heldout=False)  # None: the run's evaluate section
    metrics["split"] = args.split
    write_json(run.path / f"metrics_{args.split}.json", metrics)
    print(json.dumps(metrics, indent=2))
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from .run import make_plots

    run = _load(args)
    train, val, test = run.data()
    files = make_plots(run, test if len(test) else val, gif=not args.no_gif, train=train)
    print("\n".join(str(f) for f in files))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .config import load_config
    from .provenance import read_manifest
    from .run import fit_config

    out = args.out or os.environ.get("DEMO_OUT") or "runs/demo"
    label = "--out " if args.out else "DEMO_OUT=" if os.environ.get("DEMO_OUT") else "out="
    args.paths.append((label, out, True))
    check_directory_target(out, label)
    cfg = load_config(demo_config_path(), [f"out={out}", *_overrides(args.overrides)])
    out = cfg.out  # an out= override wins
    _note_paths(args, cfg)
    check_directory_target(out, "out=")
    previous = read_manifest(out) if Path(out).is_dir() else None
    overwrite = args.overwrite or (previous is not None and previous.get("command") == "demo")  # a demo replaces its own last run
    start = time.perf_counter()
    if cfg.train.threads is not None:  # the demo's evaluation and figures run on the training's thread count too
        import torch

        torch.set_num_threads(cfg.train.threads)
    m = cfg.model
    model = (f"a coupling flow ({m.transforms} {m.coupling} transforms)" if m.type == "flow"
             else f"a {m.type} mixture (K={m.components})")
    cap = f", at most {cfg.train.max_seconds:g} s" if cfg.train.max_seconds is not None else ""
    print(f"probflux demo: a 2-D pinwheel that grows and rotates over t in [0, 1]; training {cfg.train.steps} steps{cap} "
          f"of {model} by maximum likelihood" + (f" + {cfg.objective.kinetic:g} x kinetic energy" if cfg.objective.kinetic else ""))
    result, metrics = fit_config(cfg, progress=None, overwrite=overwrite, command="demo")
    wall = time.perf_counter() - start
    metrics["demo_wall_seconds"] = wall
    from ..io import write_json

    write_json(Path(out) / "metrics.json", metrics)
    shown = ("test_nll", "continuity_residual_max", "w1_sde_vs_model", "w1_model_vs_model")
    print(json.dumps({k: metrics[k] for k in shown if k in metrics}, indent=2))
    print(f"""
done in {wall:.0f} s. Everything is in {out}/:
  metrics.json        test NLL, continuity residual, W1(SDE particles, model samples) and its noise floor
  density.png         rho_t snapshots with the velocity field      trajectories.png  ODE and SDE paths
  density.gif         the evolving density with particles          loss.png          training curves
  checkpoints/        best.pt (EMA weights), latest.pt (resume)    config.yaml       the resolved config
next (after `source .venv/bin/activate`, or prefix with .venv/bin/):
  probflux sample {out} --t 0.5 -n 1000 -o samples.npy
  probflux simulate {out} -n 500 --steps 200 --diffusion 0.5 -o paths.npz
  probflux evaluate {out}
  probflux fit configs/demo.yaml train.steps=8000 out=runs/longer""")
    return 0


def cmd_control(args: argparse.Namespace) -> int:
    from .control import cmd_control as run

    return run(args)


def build_parser() -> argparse.ArgumentParser:
    from .._version import __version__

    p = _Parser(prog="probflux", description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                epilog=__doc__.split("\n\n", 1)[1].split("\n\nError handling (for developers")[0])
    p.add_argument("--version", action="version", version=f"probflux {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def run_parser(name: str, help: str) -> argparse.ArgumentParser:
        q = sub.add_parser(name, help=help, description=help)
        q.add_argument("run_dir", metavar="RUN_DIR", type=run_dir, help="a run directory written by probflux fit")
        q.add_argument("--checkpoint", default="best", choices=["best", "latest"],
                       help="which checkpoint (default best = EMA weights at the best validation NLL)")
        return q

    q = sub.add_parser("fit", help="train a model from a YAML config",
                       description="Train, evaluate and plot the run a YAML config describes.")
    q.add_argument("config", metavar="CONFIG", help="YAML config (see configs/)")
    q.add_argument("overrides", nargs="*", default=[], metavar="key=value",
                   help="dotted overrides, e.g. model.components=32 train.steps=2000")
    q.add_argument("--no-plots", action="store_true", help="skip the figures")
    q.add_argument("--overwrite", action="store_true",
                   help="replace the run already in the output directory (its run files only; without it fit refuses such a directory)")
    q.set_defaults(func=cmd_fit)

    q = sub.add_parser("resume", help="continue a run from its latest checkpoint",
                       description="Continue a run from RUN_DIR/checkpoints/latest.pt; "
                                   "train.* overrides (e.g. train.steps=8000) extend it.")
    q.add_argument("run_dir", metavar="RUN_DIR", type=run_dir)
    q.add_argument("overrides", nargs="*", default=[], metavar="train.key=value")
    q.add_argument("--no-plots", action="store_true")
    q.set_defaults(func=cmd_resume)

    q = run_parser("sample", "draw exact samples of rho_t")
    q.add_argument("--t", type=finite_float, required=True, help="time (data units)")
    q.add_argument("-n", type=positive_int, default=1000, help="number of samples")
    q.add_argument("-o", "--output", type=output_file(".npy", ".npz", ".csv"), required=True,
                   help="output .npy / .npz / .csv (data coordinates)")
    q.add_argument("--context", type=input_file, help=".npy of shape (n, C) for a model with context")
    q.add_argument("--seed", type=nonnegative_int, default=0)
    q.set_defaults(func=cmd_sample)

    q = run_parser("simulate", "simulate the SDE (or the probability-flow ODE) from samples of rho_t0")
    q.add_argument("-n", type=positive_int, default=500, help="number of particles")
    q.add_argument("--steps", type=positive_int, default=200)
    q.add_argument("--diffusion", type=finite_float, help="g in model coordinates (default: the model's model.diffusion)")
    q.add_argument("--t0", type=finite_float, help="start time, data units (default: start of the data interval)")
    q.add_argument("--t1", type=finite_float, help="end time, data units (default: end of the data interval)")
    q.add_argument("--method", choices=["euler_maruyama", "euler", "midpoint", "rk4", "dopri5"],
                   help="default: euler_maruyama if diffusion > 0 else euler")
    q.add_argument("-o", "--output", type=output_file(".npz"), required=True,
                   help="output .npz with paths (steps+1, n, D) and times (steps+1,)")
    q.add_argument("--context", type=input_file, help=".npy of shape (n, C) for a model with context")
    q.add_argument("--seed", type=nonnegative_int, default=0)
    q.set_defaults(func=cmd_simulate)

    q = run_parser("evaluate", "held-out NLL, continuity residual and SDE-vs-model W1")
    q.add_argument("--split", default="test", choices=["test", "val", "train"])
    q.add_argument("--particles", type=nonnegative_int,
                   help="simulation particles (default: the run's evaluate.particles; 0: no simulation)")
    q.add_argument("--steps", type=nonnegative_int, help="simulation steps (default: the run's evaluate.steps; 0: no simulation)")
    q.set_defaults(func=cmd_evaluate)

    q = run_parser("plot", "density snapshots, trajectories, loss curves and a GIF")
    q.add_argument("--no-gif", action="store_true")
    q.set_defaults(func=cmd_plot)

    q = sub.add_parser("demo", help="the main job: train on built-in moving data, write metrics and figures",
                       description="Train a 2-D model on a growing, rotating pinwheel (at most 85 s of training on 2 CPU cores).")
    q.add_argument("--out", help="output directory (default $DEMO_OUT or runs/demo)")
    q.add_argument("--overwrite", action="store_true", help="replace another command's run there (a previous demo run is replaced anyway)")
    q.add_argument("overrides", nargs="*", default=[], metavar="key=value", help="dotted overrides of the demo config")
    q.set_defaults(func=cmd_demo)

    q = sub.add_parser("control", help="solve a control / mean-field problem from a YAML config (docs/control.md)",
                       description="Train a simulation-free control solver on a YAML problem, then check it by Monte Carlo.")
    q.add_argument("config", metavar="CONFIG", type=input_file, help="YAML control config (see configs/control_*.yaml)")
    q.add_argument("overrides", nargs="*", default=[], metavar="key=value", help="dotted overrides, e.g. train.steps=200")
    q.set_defaults(func=cmd_control)
    return p


class Terminated(KeyboardInterrupt):
    """SIGTERM, turned into an exception so that it unwinds like Ctrl-C (files are written atomically)."""


def _on_sigterm(signum: int, frame: object) -> None:
    raise Terminated()


class _Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line (``probflux sample: error: argument -n: ...``) and exit 2."""

    def error(self, message: str) -> NoReturn:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {_one_line(message)} (see {self.prog} --help)\n")


_PATH_ERRORS = (FileNotFoundError, FileExistsError, NotADirectoryError, IsADirectoryError, PermissionError)
# OSErrors about the machine rather than the program: the disk, quotas, permissions, names, devices
_ENVIRONMENT_ERRNOS = {getattr(errno, name) for name in (
    "ENOSPC", "EDQUOT", "EROFS", "EACCES", "EPERM", "ENAMETOOLONG", "ELOOP", "EMFILE", "ENFILE", "EIO", "EPIPE", "EXDEV",
    "ENOENT", "EEXIST", "ENOTDIR", "EISDIR", "ETXTBSY", "EFBIG") if hasattr(errno, name)}
_REASONS = {
    errno.ENOSPC: "no space left on device (disk full)",
    errno.EEXIST: "a file is there where a directory is needed",
    errno.ENOTDIR: "a part of the path is a file, not a directory",
    errno.EISDIR: "is a directory, not a file",
    errno.ENOENT: "no such file or directory",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EROFS: "read-only file system",
}
if hasattr(errno, "EDQUOT"):
    _REASONS[errno.EDQUOT] = "disk quota exceeded"


def _one_line(message: str) -> str:
    return " ".join(line.strip() for line in str(message).splitlines() if line.strip())


def _note_paths(args: argparse.Namespace, cfg) -> None:
    """Remember where a config's run directory and data file are, so an OSError can name the key that set them."""
    args.paths.append(("out=", str(cfg.out), True))
    if getattr(cfg.data, "path", None):
        args.paths.append(("data.path=", str(cfg.data.path), False))


def _within(path: Path, root: Path) -> bool:
    try:
        path.relative_to(root)
        return True
    except ValueError:
        return False


def _describe_os_error(e: OSError, args: argparse.Namespace) -> str:
    """One line: the argument and path at fault, and what the OS said (with what to do after a full disk)."""
    if e.strerror is None:  # raised by probflux with a message of its own
        return str(e)
    reason = _REASONS.get(e.errno, e.strerror)
    filename = e.filename
    if e.errno == errno.ENOTDIR and filename is not None:
        blocker = _file_in_the_way(Path(filename).parent)
        if blocker is not None:
            reason = f"{str(blocker)!r} is a file, not a directory"
    paths = list(getattr(args, "paths", []))
    named = ""
    if filename is not None:
        f = Path(os.path.abspath(filename))
        hits = [(label, p) for label, p, _ in paths if _within(f, Path(os.path.abspath(p))) or _within(Path(os.path.abspath(p)), f)]
        if hits:
            label, p = max(hits, key=lambda h: len(h[1]))
            named = f"{label}{p!r}: " + ("" if os.path.abspath(p) == str(f) else f"{str(filename)!r}: ")
        else:
            named = f"{str(filename)!r}: "
        text = named + reason
    else:
        outputs = [(label, p) for label, p, out in paths if out]
        where = f" while writing {outputs[-1][0]}{outputs[-1][1]!r}" if outputs else " while writing"
        text = reason + where
    if e.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        text += "; files are written atomically, so nothing is left half-written: free some space and run the command again"
        outputs = [p for label, p, out in paths if out]
        if args.command in ("fit", "resume", "demo") and outputs:
            text += f" (once a checkpoint was written, probflux resume {outputs[-1]} continues from it)"
    return text


def _user_error(e: BaseException, args: argparse.Namespace) -> Optional[str]:
    """The one-line message of a user error (see the module docstring), or None for a bug (keeps its traceback)."""
    from ..io import RunLocked

    if isinstance(e, OSError):
        if isinstance(e, _PATH_ERRORS) or e.errno in _ENVIRONMENT_ERRNOS:
            return _describe_os_error(e, args)
        return None
    if isinstance(e, (ValueError, FloatingPointError, RunLocked)):
        return str(e)
    return None


def _dispatch(args: argparse.Namespace) -> int:
    """Run ``args.func``: the one place where every subcommand's errors are mapped to exit codes."""
    from ..io import RunLocked

    previous = None
    try:
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
    except ValueError:  # not the main thread: leave SIGTERM alone
        pass
    try:
        return args.func(args)
    except KeyboardInterrupt as e:
        how, code = ("terminated (SIGTERM)", 143) if isinstance(e, Terminated) else ("interrupted", 130)
        print(f"probflux {args.command}: {how}; the latest checkpoint is intact (files are written atomically); "
              "continue with probflux resume RUN_DIR", file=sys.stderr)
        return code
    except (ValueError, FloatingPointError, RunLocked, OSError) as e:  # the candidates; _user_error decides
        message = _user_error(e, args)
        if message is None or os.environ.get("PROBFLUX_TRACEBACK", "") not in ("", "0"):
            raise
        print(f"probflux {args.command}: error: {_one_line(message)}", file=sys.stderr)
        return 2
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run one command; returns the exit code (0, 2 error, 130 SIGINT, 143 SIGTERM)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, --version (0) or a bad argument (2, message printed): a code, not an exception
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
    # (label, path, written?) of every path argument, so that an OSError names the one it came from
    flags = {"run_dir": "RUN_DIR ", "output": "-o ", "context": "--context ", "config": "CONFIG ", "out": "--out "}
    args.paths = [(label, str(getattr(args, dest)), dest in ("run_dir", "output", "out"))
                  for dest, label in flags.items() if getattr(args, dest, None) is not None]
    return _dispatch(args)


if __name__ == "__main__":
    sys.exit(main())
