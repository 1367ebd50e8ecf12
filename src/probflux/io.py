"""Files written so that a crash never leaves a partial one (:func:`atomic_write`, :func:`write_json`), JSON that every
parser reads (:func:`finite_json`, :func:`json_line`) and the lock of a run directory (:func:`run_lock`)."""
from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Union

__all__ = ["atomic_write", "write_json", "finite_json", "json_line", "run_lock", "RunLocked", "LOCK_NAME"]

PathLike = Union[str, os.PathLike]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: PathLike, write: Any) -> None:
    """Call ``write(file_object)`` on a temporary file next to ``path``, fsync, then ``os.replace``.

    A crash at any point leaves either the old file or the new one, never a partial file. The file gets
    the permissions of an ordinary new file (``0o666`` less the umask), not the temporary file's ``0o600``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def finite_json(v: Any) -> Any:
    """``v`` with every non-finite float (NaN, inf) replaced by ``None`` (JSON ``null``), in nested dicts/lists too."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: finite_json(w) for k, w in v.items()}
    if isinstance(v, (list, tuple)):
        return [finite_json(w) for w in v]
    return v


def json_line(obj: Any) -> str:
    """One line of JSON (no ``NaN``/``Infinity`` tokens: non-finite floats are written as ``null``), with the newline."""
    return json.dumps(finite_json(obj), allow_nan=False) + "\n"


def write_json(path: PathLike, obj: Any) -> None:
    """Atomic JSON write (non-finite floats become null so every JSON parser reads the file)."""
    atomic_write(path, lambda f: f.write((json.dumps(finite_json(obj), indent=2, allow_nan=False) + "\n").encode()))


LOCK_NAME = ".probflux.lock"


class RunLocked(RuntimeError):
    """Another process holds the lock of a run directory."""


_held: dict[str, list[Any]] = {}  # run directory -> [open lock file, depth]: re-entrant within one process


@contextlib.contextmanager
def run_lock(run_dir: PathLike) -> Iterator[Path]:
    """Hold an exclusive ``fcntl.flock`` on ``run_dir/.probflux.lock`` (created; the directory too) while the block runs.

    A second process asking for the same directory fails at once with :class:`RunLocked` naming the holder's pid
    (written into the lock file); the same process may nest the lock. The kernel drops the lock when the process
    ends, however it ends, so a stale lock file never blocks a later run. Where ``fcntl`` is missing (Windows) the
    block runs unlocked.
    """
    run_dir = Path(run_dir)
    key = os.path.realpath(run_dir)
    path = run_dir / LOCK_NAME
    if key not in _held:
        _held[key] = [_acquire(run_dir, path), 0]
    _held[key][1] += 1
    try:
        yield path
    finally:  # nested holders may release in any order: the last one unlocks
        _held[key][1] -= 1
        if _held[key][1] == 0:
            f = _held.pop(key)[0]
            if f is not None:
                import fcntl

                f.seek(0)
                f.truncate()
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)
                f.close()


def _acquire(run_dir: Path, path: Path) -> Any:
    """The open lock file of ``run_dir``, exclusively locked (None without ``fcntl``); :class:`RunLocked` when taken."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        return None
    run_dir.mkdir(parents=True, exist_ok=True)
    f = open(path, "a+")  # noqa: SIM115 - closed by run_lock
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        f.seek(0)
        holder = f.read().strip() or "unknown"
        f.close()
        if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            raise
        raise RunLocked(f"run directory {str(run_dir)!r} is in use by another probflux process (pid {holder}; lock file "
                        f"{str(path)!r}); wait for it to finish or choose another out=") from None
    f.seek(0)
    f.truncate()
    f.write(str(os.getpid()))
    f.flush()
    return f
