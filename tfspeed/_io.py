"""Atomic file writing and the user cache: nothing half-written is ever left behind."""

from __future__ import annotations

import atexit
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
    """Claims `path` for this run before any work starts (see `claim`): refuses to replace an existing file or
    directory unless `overwrite=True`, refuses a path another live tfspeed run is writing, and fails now, not after
    the training, when the folder it goes in cannot be written."""
    return claim(path, overwrite, argument)


# ----------------------------------------------------------------------------------------------------------------------
# Claims: one run per output. A claim is a file `.NAME.lock` beside the output holding the owner's pid, made with
# O_EXCL, removed when the output is written or the process exits; one whose owner is gone is stale and replaced.
# Temporary outputs are `.NAME.<pid>.<random>.tmp`: one whose pid is gone was left by a killed run and is removed.
# ----------------------------------------------------------------------------------------------------------------------

_CLAIMS: dict = {}  # resolved output path -> its lock file, for the claims this process holds


def _lock_file(path: Path) -> Path:
    return path.with_name(f".{path.name}.lock")


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def _owner(lock: Path):
    try:
        return int(lock.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _check_parent(path: Path, argument: str):
    parent = path.parent
    existing = next((p for p in (parent, *parent.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise ValueError(f"Cannot write `{argument}`: {str(existing)!r} is a file, not a folder. "
                         f"Received: {argument}={str(path)!r}")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ValueError(f"Cannot create the folder of `{argument}` ({e.strerror}). "
                         f"Received: {argument}={str(path)!r}. Choose a folder you can write.") from None


def clean_stale(path) -> list:
    """Removes what killed runs left beside `path` (temporary outputs and claims whose pid is gone); returns them."""
    path = Path(path)
    removed = []
    if not path.parent.is_dir():
        return removed
    for tmp in path.parent.glob(f".{path.name}.*.tmp"):
        parts = tmp.name[len(path.name) + 2:].split(".")
        if parts and parts[0].isdigit() and not _alive(int(parts[0])):
            _remove(tmp)
            removed.append(tmp)
    lock = _lock_file(path)
    owner = _owner(lock) if lock.exists() else None
    if lock.exists() and (owner is None or not _alive(owner)):
        lock.unlink(missing_ok=True)
        removed.append(lock)
    if removed:
        import warnings

        warnings.warn(f"Removed {len(removed)} file(s) left beside {str(path)!r} by a run that was killed: "
                      f"{[p.name for p in removed]}", RuntimeWarning, stacklevel=3)
    return removed


def claim(path, overwrite: bool = False, argument: str = "out") -> Path:
    """Reserves the output `path` for this process until it is written (or the process exits).

    Refuses an existing `path` unless `overwrite=True`, and a path another live tfspeed run has claimed (whatever
    `overwrite` says: two runs must not write one output). Creates the folder `path` goes in, so an output that cannot
    be written fails before any work. Leftovers of killed runs beside `path` are removed (`clean_stale`).
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(
            f"`{argument}` already exists and would be overwritten. Received: {argument}={str(path)!r}. "
            "Choose another path or pass overwrite=True (--overwrite on the command line)."
        )
    key = str(path.resolve())
    if key in _CLAIMS:
        return path
    _check_parent(path, argument)
    clean_stale(path)
    lock = _lock_file(path)
    try:
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        owner = _owner(lock)
        raise FileExistsError(
            f"`{argument}` is being written by another tfspeed run (pid {owner}). Received: {argument}={str(path)!r}. "
            f"Wait for it, or choose another path (if no such run exists, delete {str(lock)!r})."
        ) from None
    except OSError as e:
        raise ValueError(f"Cannot write in the folder of `{argument}` ({e.strerror}). "
                         f"Received: {argument}={str(path)!r}. Choose a folder you can write.") from None
    with os.fdopen(fd, "w") as f:
        f.write(f"{os.getpid()}\n")
    _CLAIMS[key] = lock
    return path


def release(path):
    """Gives up this process's claim on `path` (nothing if it holds none)."""
    lock = _CLAIMS.pop(str(Path(path).resolve()), None)
    if lock is not None and _owner(lock) == os.getpid():
        lock.unlink(missing_ok=True)


@atexit.register
def release_all():
    """Gives up every claim this process holds (at exit, and when a `tfspeed` command returns)."""
    for key in list(_CLAIMS):
        release(key)


@contextlib.contextmanager
def atomic_path(path, overwrite: bool = False, argument: str = "out"):
    """Yields a temporary path beside `path`; on success it is renamed to `path`, on failure removed.

    Works for files and directories: whatever the body writes at the yielded path replaces `path` in one rename. The
    path is claimed first (`claim`) and released after; if `path` appeared meanwhile and `overwrite` is off, the new
    output is kept beside it as `NAME.<pid>` and a FileExistsError says so (nothing is lost, nothing replaced). With
    `overwrite`, the old output is moved aside only once the new one is complete.
    """
    path = claim(path, overwrite, argument)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent))
    target = tmp / path.name
    try:
        yield target
        if path.exists() and not overwrite:
            kept = path.with_name(f"{path.name}.{os.getpid()}")
            os.replace(target, kept)
            raise FileExistsError(f"`{argument}` was created by something else while this run worked, and is left as "
                                  f"it is; this run's output is at {str(kept)!r}. Received: {argument}={str(path)!r}.")
        if path.exists():
            old = path.with_name(f".{path.name}.{os.getpid()}.old.tmp")
            os.replace(path, old)
            os.replace(target, path)
            _remove(old)
        else:
            os.replace(target, path)
    finally:
        _remove(tmp)
        release(path)  # written (or failed): the output is no longer this run's to claim


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
