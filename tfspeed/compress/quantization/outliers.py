"""Finding what int8 rounds badly in a float BERT, on a few batches of real data.

- `find_outlier_channels`: Dense output channels (or FFN units) far above the median channel (for `split_channels`,
  `split_units`),
- `find_outlier_heads`: attention heads whose raw scores are far above the median head's (for `split_heads`),
- `layer_norm_scales`: per-channel divisors for LayerNorm outputs with outlier channels (for `smooth_layer_norms`).

They only read the model; the rewrites that act on what they find are in `tfspeed.compress.quantization.rewrites`.
"""

from __future__ import annotations

import re

import numpy as np

from tfspeed import _checks
from tfspeed.compat import keras
from tfspeed.compress.quantization._graph import _dense_consumers
from tfspeed.models import layers as L

__all__ = ["OUTLIER_OUTPUTS", "OUTLIER_UNITS", "find_outlier_channels", "find_outlier_heads", "layer_norm_scales"]

OUTLIER_OUTPUTS = (r"layer_\d+_output",)
"""The FFN output projections (`layer_<i>_output`): `find_outlier_channels`' default layers, and the `float_outputs`
that keep them float for BERTs with outlier channels."""
OUTLIER_UNITS = (r"layer_\d+_intermediate",)
"""`find_outlier_channels` layers for `split_units`: the FFN intermediate (GELU) Dense layers."""
_UNIT_OUTPUTS = (r"layer_\d+_intermediate_outliers_output",)
"""The output projections of the units `split_units` computes apart: they carry the big channels too."""


def _channel_absmax(model, layers, data, num_batches: int, batch_size: int) -> list:
    """Per layer of `layers`, the largest |output| of each channel (last axis) over the real tokens of a few batches
    of `data` (an `EncodedSplit`; padding ignored)."""
    if not hasattr(data, "batch_indices"):
        raise ValueError(f"Expected an `EncodedSplit` for `data`. Received: {type(data).__name__}")
    probe = keras.Model(model.inputs, [l.output for l in layers])
    absmax = [np.zeros(int(l.output.shape[-1])) for l in layers]
    for idx in data.batch_indices(batch_size, shuffle=True, rng=np.random.default_rng(0))[:num_batches]:
        x, _ = data.batch(idx)
        outputs = probe(x, training=False)
        outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
        real = np.asarray(x["input_mask"]).astype(bool)
        for k, out in enumerate(outputs):
            absmax[k] = np.maximum(absmax[k], np.abs(np.asarray(out)[real]).max(axis=0))
    return absmax


def find_outlier_channels(model: keras.Model, data, layers=OUTLIER_OUTPUTS, ratio: float = 6.0, max_channels: int = 16,
                          num_batches: int = 4, batch_size: int = 32) -> dict:
    """`{Dense name: [output channels]}`: the channels whose largest |output| on real tokens is above `ratio` x the
    median channel's, for the Dense layers of `model` whose names match `layers`.

    BERT residual streams carry a few such channels (MiniLM: channel 99 of the FFN output reaches ~200 where the
    median channel stays below 1.5): one per-tensor int8 range for the whole output then rounds every ordinary
    channel to a step of ~1. `quantize(..., outlier_channels=...)` computes them in a FULLY_CONNECTED of their own.

    Args:
        model: a float tfspeed BERT classifier.
        data: an `EncodedSplit` (e.g. the training split); padding tokens are ignored.
        layers: regular expressions (full match) on Dense names. Defaults to `OUTLIER_OUTPUTS` (FFN outputs).
        ratio: Defaults to `6.0`. max_channels: at most this many per layer (largest first). Defaults to `16`.
        num_batches, batch_size: how much data. Default `4` batches of `32`.
    """
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or ratio <= 1:
        raise ValueError(f"Received an invalid value for `ratio`, expected a number > 1. Received: ratio={ratio!r}")
    _checks.positive_int("max_channels", max_channels)
    patterns = [re.compile(p) for p in ([layers] if isinstance(layers, str) else layers)]
    dense = [l for l in model.layers
             if isinstance(l, keras.layers.Dense) and any(p.fullmatch(l.name) for p in patterns)]
    if not dense:
        raise ValueError(f"No Dense layer of `model` matches `layers`={layers!r}.")
    found = {}
    for layer, m in zip(dense, _channel_absmax(model, dense, data, num_batches, batch_size)):
        channels = [int(c) for c in np.argsort(-m)[:max_channels] if m[c] > ratio * np.median(m)]
        if channels:
            found[layer.name] = sorted(channels)
    return found


def find_outlier_heads(model: keras.Model, data, ratio: float = 4.0, num_batches: int = 4,
                       batch_size: int = 32) -> dict:
    """`{scores layer name: [heads]}`: the attention heads whose largest |raw score| between real tokens is above
    `ratio` x the median head's in their layer.

    MiniLM's layer 0 has one head whose scores reach ~250 where the median head's stay below ~25: one per-tensor int8
    range for the layer's scores then has a step of 1.5 (0.26 in softmax logits) for every head, and a one-step
    rounding difference between Keras and TFLite moves a probability by up to 17 of its 256 steps. `split_heads`
    computes such heads in a BATCH_MATMUL of their own.

    Args:
        model: a float tfspeed BERT classifier. data: an `EncodedSplit`; padding tokens are ignored.
        ratio: Defaults to `4.0`. num_batches, batch_size: how much data. Default `4` batches of `32`.
    """
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or ratio <= 1:
        raise ValueError(f"Received an invalid value for `ratio`, expected a number > 1. Received: ratio={ratio!r}")
    if not hasattr(data, "batch_indices"):
        raise ValueError(f"Expected an `EncodedSplit` for `data`. Received: {type(data).__name__}")
    scores = [l for l in model.layers if isinstance(l, L.QueryKeyProduct)]
    probe = keras.Model(model.inputs, [l.output for l in scores])
    absmax = [np.zeros(l.num_heads) for l in scores]
    for idx in data.batch_indices(batch_size, shuffle=True, rng=np.random.default_rng(0))[:num_batches]:
        x, _ = data.batch(idx)
        outputs = probe(x, training=False)
        outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
        real = np.asarray(x["input_mask"]).astype(bool)
        pairs = real[:, None, :, None] & real[:, None, None, :]  # [batch, 1, query, key]
        for k, out in enumerate(outputs):
            out = np.where(pairs, np.abs(np.asarray(out)), 0.0)
            absmax[k] = np.maximum(absmax[k], out.max(axis=(0, 2, 3)))
    found = {}
    for layer, m in zip(scores, absmax):
        heads = [int(h) for h in np.flatnonzero(m > ratio * np.median(m))]
        if heads and len(heads) < layer.num_heads:
            found[layer.name] = heads
    return found


def layer_norm_scales(model: keras.Model, data, ratio: float = 2.0, weight_growth: float = 2.0,
                      num_batches: int = 4, batch_size: int = 32) -> dict:
    """`{LayerNormalization name: per-channel divisors}` that bring the LayerNorm outputs' outlier channels down to
    `ratio` x the median channel's largest |value| (on real tokens of `data`), as far as the Dense layers reading them
    can take the factor into their kernel rows without raising their per-tensor int8 kernel range (SmoothQuant's
    migration, Xiao et al. 2023, capped so that no weight loses resolution). LayerNorms read by no Dense are skipped.

    Args:
        model: a float tfspeed BERT classifier. data: an `EncodedSplit`.
        ratio: Defaults to `2.0`.
        weight_growth: how much a reading Dense's largest |kernel| may grow (its int8 kernel step grows as much).
            Defaults to `2.0` (`1.0`: no weight loses resolution).
        num_batches, batch_size: Default `4` batches of `32`.
    """
    for arg, value, low, expected in (("ratio", ratio, 0.0, "> 0"), ("weight_growth", weight_growth, 1.0, ">= 1")):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < low or value == 0:
            raise ValueError(f"Received an invalid value for `{arg}`, expected a number {expected}. "
                             f"Received: {arg}={value!r}")
    config = model.get_config()
    norms = [l for l in model.layers if isinstance(l, keras.layers.LayerNormalization)
             and _dense_consumers(config, l.name)[0]]
    if not norms:
        return {}
    scales = {}
    for norm, a in zip(norms, _channel_absmax(model, norms, data, num_batches, batch_size)):
        want = a / (ratio * np.median(a))
        cap = np.full_like(a, np.inf)
        for dense in _dense_consumers(config, norm.name)[0]:
            kernel = np.abs(model.get_layer(dense["name"]).get_weights()[0])
            cap = np.minimum(cap, weight_growth * kernel.max() / np.maximum(kernel.max(axis=1), 1e-12))
        s = np.maximum(1.0, np.minimum(want, cap))
        if (s > 1.0).any():
            scales[norm.name] = s.astype(np.float32)
    return scales
