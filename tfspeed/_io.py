"""Atomic file writing and the user cache: nothing half-written is ever left behind."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path

CACHE_ENV = "TFSPEED_CACHE"


def cache_dir() -> Path:
    """The tfspeed cache: `$TFSPEED_CACHE`, else `$XDG_CACHE_HOME/tfspeed`, else `~/.cache/tfspeed`."""
    if os.environ.get(CACHE_ENV):
        root = Path(os.environ[CACHE_ENV])
    else:
        root = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "tfspeed"
    root.mkdir(parents=True, exist_ok=True)
    return root


def check_writable(path, overwrite: bool = False, argument: str = "out") -> Path:
    """Refuses to replace an existing file or directory unless `overwrite=True`."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(
            f"`{argument}` already exists and would be overwritten. Received: {argument}={str(path)!r}. "
            "Choose another path or pass overwrite=True (--overwrite on the command line)."
        )
    return path


@contextlib.contextmanager
def atomic_path(path, overwrite: bool = False, argument: str = "out"):
    """Yields a temporary path beside `path`; on success it is renamed to `path`, on failure removed.

    Works for files and directories: whatever the body writes at the yielded path replaces `path` in one rename.
    """
    path = check_writable(path, overwrite, argument)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    target = tmp / path.name
    try:
        yield target
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            if old.exists():
                _remove(old)
            os.replace(path, old)
            os.replace(target, path)
            _remove(old)
        else:
            os.replace(target, path)
    finally:
        _remove(tmp)


def _remove(path: Path):
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink()


def write_bytes(path, data: bytes, overwrite: bool = False, argument: str = "out") -> Path:
    with atomic_path(path, overwrite, argument) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path, text: str, overwrite: bool = False, argument: str = "out") -> Path:
    return write_bytes(path, text.encode("utf-8"), overwrite, argument)


def write_json(path, obj, overwrite: bool = False, argument: str = "out") -> Path:
    text = json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n"
    return write_text(path, text, overwrite, argument)


def _json_default(obj):
    import numpy as np

    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")
