"""`tf.distribute` strategies by name, for the training commands' `--strategy` and `optimize` recipes."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from pathlib import Path

from tfspeed.compat import tf

STRATEGIES = ("default", "mirrored", "multi-worker")


def make_strategy(name):
    """`None` / `"default"`: the default strategy; `"mirrored"`: every local GPU, or the CPU; `"multi-worker"`:
    `MultiWorkerMirroredStrategy` from `TF_CONFIG`."""
    if name in (None, "default"):
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return mirrored_strategy()
    if name == "multi-worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ValueError(f"Received an invalid value for `strategy`, expected one of {list(STRATEGIES)}. "
                     f"Received: strategy={name!r}")


def is_chief(strategy=None) -> bool:
    """Whether this process writes the artifacts: always, except on the workers other than the chief of a
    `MultiWorkerMirroredStrategy` (the chief is TF_CONFIG's `chief` task, else worker 0).

    Args:
        strategy: a `tf.distribute.Strategy`. Defaults to `None` (the current one).
    """
    strategy = strategy or tf.distribute.get_strategy()
    return not is_multi_worker(strategy) or bool(strategy.extended.should_checkpoint)


def is_multi_worker(strategy=None) -> bool:
    """Whether `strategy` trains across several processes (a `MultiWorkerMirroredStrategy` with more than one
    worker in TF_CONFIG). Defaults to `None` (the current strategy)."""
    multi_worker = getattr((strategy or tf.distribute.get_strategy()).extended, "_in_multi_worker_mode", None)
    return bool(multi_worker is not None and multi_worker())


@contextlib.contextmanager
def worker_output(out, strategy=None):
    """Yields where this process writes the output directory `out` of a training command: `out` itself on the chief
    (and without multi-worker training); a path in a temporary folder, removed when the block ends, on the other
    workers of a `MultiWorkerMirroredStrategy`.

    Every worker must save all the same, at the same point: saving reads the variables synchronised across workers
    (TF's multi-worker Keras guide), so a worker that skipped it would leave the others waiting. Only the chief's
    copy is kept, and only the chief claims `out`: the workers of one machine do not fight over it.

    Args:
        out: the output directory, or `None` (nothing is written: `None` is yielded).
        strategy: a `tf.distribute.Strategy`. Defaults to `None` (the current one).
    """
    strategy = strategy or tf.distribute.get_strategy()
    if out is None or is_chief(strategy):
        yield out
        return
    folder = tempfile.mkdtemp(prefix=f"tfspeed-worker{strategy.cluster_resolver.task_id}-")
    try:
        yield Path(folder) / Path(out).name
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# TF starts the collective keys of every MirroredStrategy at group 1, instance 100. A second strategy in the same
# process reuses them, and the runtime, which caches collective parameters by key, then aborts every collective with
# "Shape mismatch in the collective instance 100". TF's own tests move `_collective_key_base`; so do we.
_COLLECTIVE_KEY_STRIDE = 100_000


def mirrored_strategy(devices=None):
    """A `tf.distribute.MirroredStrategy` whose collective keys collide with no other strategy of this process.

    Strategies made before or after it, by tfspeed or by the caller, keep working: its keys sit between theirs.
    """
    cls = tf.distribute.MirroredStrategy
    cls._collective_key_base += _COLLECTIVE_KEY_STRIDE
    try:
        return cls(devices)
    finally:
        cls._collective_key_base += _COLLECTIVE_KEY_STRIDE
