"""Files written so that a crash never leaves a partial one: :func:`atomic_write`, :func:`write_json`."""
from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Union

__all__ = ["atomic_write", "write_json"]

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


def write_json(path: PathLike, obj: Any) -> None:
    """Atomic JSON write (non-finite floats become null so every JSON parser reads the file)."""
    def clean(v: Any) -> Any:
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: clean(w) for k, w in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(w) for w in v]
        return v

    atomic_write(path, lambda f: f.write((json.dumps(clean(obj), indent=2) + "\n").encode()))
