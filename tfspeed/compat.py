"""The one place that decides which Keras tfspeed uses.

TFMOT and tensorflow-hub only work with Keras 2 (`tf_keras`). `TF_USE_LEGACY_KERAS=1` must be set before TensorFlow is
imported anywhere in the process, so every tfspeed module imports `tf` and `keras` from here and nowhere else.
"""

import os

from tfspeed.runtime import tune_allocator

tune_allocator()  # before TensorFlow allocates: freed buffers are kept for the next training step (TFSPEED_MALLOC=0)
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

if os.environ["TF_USE_LEGACY_KERAS"] not in ("1", "true", "True"):  # pragma: no cover - user override
    raise ImportError(
        "tfspeed needs Keras 2 (tf_keras): TF_USE_LEGACY_KERAS must be '1' before TensorFlow is imported. "
        f"Received: TF_USE_LEGACY_KERAS={os.environ['TF_USE_LEGACY_KERAS']!r}"
    )

import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402

if not keras.__version__.startswith("2."):  # pragma: no cover - broken install
    raise ImportError(f"tfspeed needs tf_keras 2.x. Received: tf_keras {keras.__version__}")

__all__ = ["tf", "keras"]
