"""Process settings that make CPU training faster: glibc's allocator keeps the memory TensorFlow frees.

A training step allocates and frees the same large activation and gradient buffers every step. glibc's `malloc`
serves blocks above its mmap threshold with a fresh `mmap` and returns them with `munmap`, and trims the heap top
back to the kernel: every step then pays for new zeroed pages (page faults, kernel time) that the previous step
gave back. On a 2-core CPU that shows as a large share of system CPU time in `fit`. `tune_allocator()` raises the
thresholds (what `MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=... MALLOC_TOP_PAD_=536870912` do when set
before a process starts), so freed buffers stay in the process and the next step reuses them. The cost is memory
that is not returned to the system until the process ends (the peak of one step, already needed once).

`import tfspeed` calls it (before TensorFlow allocates anything); set `TFSPEED_MALLOC=0` to leave the allocator as
it is. Effect measured by `benchmarks/training_throughput.py` (benchmarks/README.md).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

# mallopt parameters (glibc malloc.h)
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
MMAP_THRESHOLD = 32 * 1024 * 1024  # glibc's largest accepted value on 64-bit (HEAP_MAX_SIZE / 2)
TRIM_THRESHOLD = 2 ** 31 - 1  # mallopt takes an int: 2 GiB of free heap top is kept before trimming
TOP_PAD = 512 * 1024 * 1024

_state = {"tuned": None}


def tune_allocator(force: bool = False) -> bool:
    """Sets glibc's mmap threshold, trim threshold and top pad so freed buffers are reused, not unmapped.

    Does nothing (returns False) when `TFSPEED_MALLOC=0`, when the C library is not glibc, or when the process was
    started with the `MALLOC_*_` variables already set (the user's choice wins). Returns True when applied. Called
    once per process unless `force`.
    """
    if _state["tuned"] is not None and not force:
        return _state["tuned"]
    _state["tuned"] = False
    if os.environ.get("TFSPEED_MALLOC", "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    if any(k in os.environ for k in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_")):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
        libc.gnu_get_libc_version  # glibc only: musl and others have no such symbol  # noqa: B018
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    ok = all(mallopt(param, value) == 1 for param, value in ((_M_MMAP_THRESHOLD, MMAP_THRESHOLD),
                                                             (_M_TRIM_THRESHOLD, TRIM_THRESHOLD),
                                                             (_M_TOP_PAD, TOP_PAD)))
    _state["tuned"] = ok
    return ok


def allocator_settings() -> dict:
    """What the allocator runs with, for the environment record of a benchmark or report."""
    env = {k: os.environ[k] for k in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_")
           if k in os.environ}
    return {"tuned_by_tfspeed": bool(_state["tuned"]), **({"env": env} if env else {})}
