"""The teacher's logits, computed once per split (and optionally cached on disk) so the Distiller need not run it.

`teacher_logits(teacher, split)` gives float32 [n, classes] logits in the split's order, for
`split.dataset(..., extra=logits)`, whose `(x, (y, teacher_logits))` batches the Distiller accepts as well as `(x, y)`.
A `.npz` cache is reused only when its fingerprint (the split's arrays, the teacher's name, size and classifier
weights) matches.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np

from tfspeed import _io
from tfspeed.compat import keras
from tfspeed.models.bert import layer_by_name
from tfspeed.train import predict_logits

__all__ = ["teacher_logits"]


def _fingerprint(teacher, split) -> str:
    h = hashlib.sha1()
    for key in sorted(split.features):
        h.update(np.ascontiguousarray(split.features[key]).tobytes())
    h.update(np.ascontiguousarray(split.labels).tobytes())
    h.update(teacher.name.encode())
    h.update(str(teacher.count_params()).encode())
    h.update(np.float64(sum(float(np.sum(w)) for w in layer_by_name(teacher, "classifier").get_weights())).tobytes())
    return h.hexdigest()


def teacher_logits(teacher: keras.Model, split, batch_size: int = 128, cache=None) -> np.ndarray:
    """The teacher's logits on every example of `split` (an `EncodedSplit`), in its order, float32 [n, classes].

    Computed once (in bucketed batches): pass them as `split.dataset(..., extra=logits)` and the Distiller skips the
    teacher's forward pass (unless intermediate losses need its hidden states).

    Args:
        teacher: the teacher classifier.
        split: an `EncodedSplit`.
        batch_size: Defaults to `128`.
        cache: optional `.npz` path: read when it was written for the same split and teacher, else (re)written.
            Defaults to `None` (no file).
    """
    fingerprint = _fingerprint(teacher, split) if cache is not None else None
    if cache is not None and Path(cache).is_file():
        with np.load(cache) as saved:
            if str(saved["fingerprint"]) == fingerprint and saved["logits"].shape[0] == len(split):
                return saved["logits"].astype(np.float32)
    logits = predict_logits(teacher, split, batch_size).astype(np.float32)
    if cache is not None:
        buffer = io.BytesIO()
        np.savez(buffer, logits=logits, fingerprint=np.array(fingerprint))
        _io.write_bytes(cache, buffer.getvalue(), overwrite=True, argument="cache")
    return logits
