"""The allocator settings `import tfspeed` applies: on by default, off with TFSPEED_MALLOC=0, and the user's own
MALLOC_* variables win. Each case runs in a fresh interpreter (the settings are per process)."""

import json
import os
import subprocess
import sys

import pytest

SCRIPT = ("import ctypes, json, tfspeed.runtime as r; "
          "print(json.dumps({'tuned': r.tune_allocator(), 'settings': r.allocator_settings()}))")


def _run(env_extra: dict) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("TFSPEED_MALLOC", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_")}
    env.update(env_extra)
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_allocator_tuned_by_default_and_left_alone_when_asked():
    assert _run({}) == {"tuned": True, "settings": {"tuned_by_tfspeed": True}}
    assert _run({"TFSPEED_MALLOC": "0"})["tuned"] is False
    mine = _run({"MALLOC_TOP_PAD_": "1048576"})  # the user's own setting wins: tfspeed leaves malloc alone
    assert mine == {"tuned": False, "settings": {"tuned_by_tfspeed": False, "env": {"MALLOC_TOP_PAD_": "1048576"}}}
