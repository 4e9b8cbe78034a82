"""`tf.distribute` strategies by name, for the training commands' `--strategy` and `optimize` recipes."""

from __future__ import annotations

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
