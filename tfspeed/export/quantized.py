"""The int8 .tflite of a QAT model, and how much of it computes in int8.

`to_tflite(qat_model, seq_length)` converts a model from `tfspeed.compress.quantization.quantize` (fitted or not)
with the ranges it learnt; `int8_fractions(tflite)` is the share of FULLY_CONNECTED and BATCH_MATMUL ops that run int8.

Example:

>>> from tfspeed.export.quantized import int8_fractions, to_tflite
>>> int8_fractions(to_tflite(qat_model, seq_length=64))  # doctest: +SKIP
{'FULLY_CONNECTED': 1.0, 'BATCH_MATMUL': 1.0}
"""

from __future__ import annotations

import numpy as np

from tfspeed.compat import keras
from tfspeed.compress.quantization import is_quantized
from tfspeed.export.convert import convert
from tfspeed.export.ops import op_histogram

__all__ = ["int8_fractions", "to_tflite"]


def to_tflite(qat_model: keras.Model, seq_length: int) -> bytes:
    """The int8 .tflite of a QAT model: `tfspeed.export.convert(qat_model, mode="int8", seq_length=seq_length)`.

    The converter reads the trained fake-quant ranges (no calibration) from a fixed [1, seq_length] signature; inputs
    `input_word_ids`, `input_mask`, `input_type_ids` stay int32, the logits come out float32.

    Args:
        qat_model: a model returned by `quantize` (fitted or not), or a model directory holding one.
        seq_length: tokens per example of the file's fixed signature.
    """
    if isinstance(seq_length, bool) or not isinstance(seq_length, (int, np.integer)) or seq_length < 1:
        raise ValueError(f"Received an invalid value for `seq_length`, expected a positive integer. "
                         f"Received: seq_length={seq_length!r}")
    if isinstance(qat_model, keras.Model) and not is_quantized(qat_model):
        raise ValueError("Expected a QAT model for `qat_model` (from `tfspeed.compress.quantization.quantize`). "
                         f"Received a float model {qat_model.name!r}: quantize it first, or use "
                         "`tfspeed.export.convert` for post-training quantization.")
    return convert(qat_model, mode="int8", seq_length=int(seq_length), metadata=False)


def int8_fractions(tflite) -> dict:
    """`{"FULLY_CONNECTED": f, "BATCH_MATMUL": f}`: the fraction of those ops that compute in int8 (None if absent)."""
    counts = op_histogram(tflite)["int8"]
    return {op: (c["int8"] / c["total"] if c["total"] else None) for op, c in counts.items()}
