"""The allocator settings `import tfspeed` applies: on by default, off with TFSPEED_MALLOC=0, and the user's own
MALLOC_* variables win. Each case runs in a fresh interpreter (the settings are per process)."""

import json
import os
import subprocess
import sys

import pytest

SCRIPT = ("import ctypes, json, tfspeed.runtime as r; "
          "print(json.dumps({'tuned': r.tune_allocator(), 'settings': r.allocator_settings()}))")


def _run(env_extra: dict, script: str = SCRIPT) -> dict:
    """`script` in a fresh interpreter, without this process's allocator variables, plus `env_extra`; its last
    line of output as JSON."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("TFSPEED_MALLOC", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_")}
    env.update(env_extra)
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_allocator_tuned_by_default_and_left_alone_when_asked():
    assert _run({}) == {"tuned": True, "settings": {"tuned_by_tfspeed": True}}
    assert _run({"TFSPEED_MALLOC": "0"})["tuned"] is False
    mine = _run({"MALLOC_TOP_PAD_": "1048576"})  # the user's own setting wins: tfspeed leaves malloc alone
    assert mine == {"tuned": False, "settings": {"tuned_by_tfspeed": False, "env": {"MALLOC_TOP_PAD_": "1048576"}}}


PIPELINE_SCRIPT = """
import ctypes, json, resource, threading
import numpy as np
import tfspeed
from tfspeed.data.pipeline import EncodedSplit

libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
libc.memset.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]

def faults_of_a_reused_buffer(rounds=20, size=20_000_000):
    # in a new thread, as TensorFlow's kernels allocate: its own malloc arena, which asks the kernel for memory
    # (mmap, or its heap) when it runs out
    out = {}
    def run():
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(rounds):
            block = libc.malloc(size)
            libc.memset(block, 1, size)
            libc.free(block)
        out["faults"] = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    return out["faults"]

rng = np.random.default_rng(0)
mask = (np.arange(32)[None, :] < rng.integers(4, 32, 200)[:, None]).astype(np.int32)
split = EncodedSplit({"input_word_ids": mask * 5, "input_mask": mask, "input_type_ids": 0 * mask},
                     rng.integers(0, 2, 200))
for epoch in range(2):
    n = sum(int(y.shape[0]) for _, y in split.dataset(16, shuffle=True))
print(json.dumps({"examples": n, "faults": faults_of_a_reused_buffer()}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
@pytest.mark.parametrize("malloc", ["1", "0"])
def test_training_pipeline_leaves_the_mmap_threshold_alone(malloc):
    # A 20 MB buffer freed and allocated again 20 times in a thread: about 5,000 page faults when glibc keeps it,
    # about 100,000 when each is a fresh mmap. TensorFlow's from_generator pins glibc's mmap threshold to 128 KB
    # for the rest of a Python 3.11 process (tf.data's memory patch): tfspeed's pipeline must not use it, whether
    # tfspeed tunes the allocator (TFSPEED_MALLOC=1) or leaves glibc's dynamic threshold (0).
    result = _run({"TFSPEED_MALLOC": malloc}, PIPELINE_SCRIPT)
    assert result["examples"] == 200
    assert result["faults"] < 30_000, result
