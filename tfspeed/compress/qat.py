"""Quantization-aware training of a whole tfspeed BERT, so every matrix product of the TFLite file is int8.

TFMOT's default scheme (`tfmot.quantization.keras.quantize_model`) only knows Dense-like layers: it refuses
LayerNormalization, attention and the int32 token inputs of a BERT. A tfspeed BERT is flat and keeps its attention
math in small weightless layers, so QAT can be placed exactly:

- every `Dense` gets TFMOT's default 8-bit scheme (per-tensor symmetric int8 kernel, output fake-quantized after
  the activation; GELU is fake-quantized before and after, tanh before),
- `OutputQuantizeConfig` fake-quantizes the outputs of LayerNormalization, `QueryKeyProduct` (attention scores),
  `MaskedSoftmax` (probabilities, in TFLite's fixed softmax format `SOFTMAX_RANGE`), `AttentionContext` and
  `FirstToken`. With these ranges every FULLY_CONNECTED and BATCH_MATMUL of the converted file has int8 inputs,
  weights and outputs,
- BERT's outlier channels (MiniLM's FFN outputs: channel 99 reaches ~200 where the median channel stays below 1.5)
  are computed apart (`find_outlier_channels`, `split_channels`, `quantize(outlier_channels=...)`; `qat_fit` finds
  them on the training data by default): a FULLY_CONNECTED with an int8 range of their own, so the other channels are
  not rounded to the outliers' step of ~1 and every matmul stays int8,
- the residual stream stays float (`FloatQuantizeConfig` on the embedding sum and the residual `Add`s, so TFMOT does
  not give them its own output range): BERT residuals carry a few outlier channels in the hundreds, one per-tensor
  int8 range there has a step of ~1, and TFLite then also computes the LayerNorm mean in int8 rounded to that step,
  which the Keras graph does not simulate (MiniLM: Keras-vs-.tflite argmax agreement 0.89),
- the word and type embedding tables are int8 (`EmbeddingQuantizeConfig`: the file stores int8 GATHER tables, ~4x
  smaller); the token ids are never fake-quantized (TFMOT's FakeQuant after an int32 Input is not inserted),
- all activation ranges come from `RangeQuantizer` (TFMOT's moving-average quantizer), and `calibrate` sets them from
  a few batches of real data before fitting: TFMOT's [-6, 6] start barely moves in a short fine-tune (EMA 0.999),
- `AttentionMask` is not annotated and the additive mask stays float: one int8 range for scores + (-10000) would wipe
  out the scores' resolution, so the scale / mask / softmax arithmetic runs in float between a DEQUANTIZE and a
  QUANTIZE,
- `float_outputs` (regular expressions on layer names) leaves chosen outputs float, their FULLY_CONNECTED /
  BATCH_MATMUL then run in float (`OUTLIER_OUTPUTS`: the FFN down-projections), for models where splitting the
  outlier channels is not enough.

`quantize(model)` returns a new QAT classifier. Fit it with `fit` as usual (`qat_fit`, or
`tfspeed.train.fit_classifier`; callbacks and `tf.distribute` work when `quantize` runs inside `strategy.scope()`),
load it back inside `quantize_scope()` (or `load_model_dir(path, scope=custom_objects())`), convert it with
`to_tflite(model, seq_length)`. `preserve_sparsity=True` is TFMOT's prune-preserving 8-bit scheme (kernel * mask before
the fake quantization, so zeros get no gradient and stay zero), with the mask kept as a saved variable.

Example:

>>> from tfspeed.compress import qat
>>> qat_model, history = qat.qat_fit(classifier, encoded.train, epochs=1, learning_rate=2e-5)  # doctest: +SKIP
>>> tflite = qat.to_tflite(qat_model, seq_length=64)  # doctest: +SKIP
>>> qat.int8_fractions(tflite)  # doctest: +SKIP
{'FULLY_CONNECTED': 1.0, 'BATCH_MATMUL': 1.0}
"""

from __future__ import annotations

import numpy as np

from tfspeed import _checks
from tfspeed.compat import keras, tf  # sets TF_USE_LEGACY_KERAS before TFMOT imports TensorFlow
from tfspeed.models import layers as L
from tfspeed.models.bert import build_classifier, config_of, copy_weights, is_bert

import tensorflow_model_optimization as tfmot  # noqa: E402  (after tfspeed.compat)

_register = keras.saving.register_keras_serializable(package="tfspeed")
_qk = tfmot.quantization.keras


def _default_8bit_registry():
    from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import (
        default_8bit_quantize_registry)

    return default_8bit_quantize_registry


# Layers a tfspeed BERT classifier is made of, and what QAT does with each.
_OUTPUT_QUANTIZED = (keras.layers.LayerNormalization, L.QueryKeyProduct, L.MaskedSoftmax, L.AttentionContext,
                     L.FirstToken)
# The residual stream (embedding sum, residual Adds, LayerNorm inputs) stays float: BERT residuals carry a few outlier
# dimensions in the hundreds, so one per-tensor int8 range there has a step of ~1 for values that are mostly ~1, and
# TFLite then also computes the LayerNorm MEAN in int8 (rounded to that step), which the Keras fake-quant graph does
# not do: measured on MiniLM, Keras-vs-.tflite argmax agreement 0.893 with the Adds quantized.
_LEFT_FLOAT = (keras.layers.InputLayer, L.PositionEmbedding, L.AttentionMask, keras.layers.Dropout, keras.layers.Add,
               L.ChannelScale, keras.layers.Concatenate)
SOFTMAX_RANGE = (0.0, 255.0 / 256.0)
"""The attention probabilities' int8 range: TFLite's (scale 1/256, zero point -128). A learned [0, ~1] range (scale
1/255) makes the converter quantize the softmax to 1/256 and then requantize to 1/255: a double rounding on every
probability that the Keras model does not simulate."""
OUTLIER_OUTPUTS = (r"layer_\d+_output",)
OUTLIER_UNITS = (r"layer_\d+_intermediate",)
"""`find_outlier_channels` layers for `split_units`: the FFN intermediate (GELU) Dense layers."""
_UNIT_OUTPUTS = (r"layer_\d+_intermediate_outliers_output",)
"""`float_outputs` for BERTs with outlier channels: the FFN output projections (`layer_<i>_output`) stay float."""
SUPPORTED_LAYERS = (keras.layers.Dense, keras.layers.Embedding) + _OUTPUT_QUANTIZED + _LEFT_FLOAT
"""The layer classes `quantize` handles; any other layer is refused with the list of offenders."""


@_register
class RangeQuantizer(_qk.quantizers.MovingAverageQuantizer):
    """TFMOT's activation quantizer (moving-average min / max, asymmetric int8) with a settable EMA decay.

    TFMOT starts every range at [-6, 6] and moves it with decay 0.999: after the few hundred steps of a BERT
    fine-tune the ranges are still mostly that guess (softmax probabilities in [0, 1] get 1/28 resolution, LayerNorm
    outliers beyond 6 are clipped). `calibrate` sets `ema_decay` per batch to take the data's ranges first.

    Args:
        num_bits: Defaults to `8`. per_axis: Defaults to `False`. symmetric: Defaults to `False`.
        narrow_range: Defaults to `False`. ema_decay: decay of the moving averages while training (`1`: the range
            stays as it is). Defaults to `0.999`.
    """

    def __init__(self, num_bits: int = 8, per_axis: bool = False, symmetric: bool = False, narrow_range: bool = False,
                 ema_decay: float = 0.999):
        super().__init__(num_bits=num_bits, per_axis=per_axis, symmetric=symmetric, narrow_range=narrow_range)
        if isinstance(ema_decay, bool) or not isinstance(ema_decay, (int, float)) or not 0 <= ema_decay <= 1:
            raise ValueError(f"Received an invalid value for `ema_decay`, expected a float in [0, 1] (1: frozen). "
                             f"Received: ema_decay={ema_decay!r}")
        self.ema_decay = float(ema_decay)

    # Set by `calibrate(percentile=...)` while it runs: batch ranges from the percentiles, not the extremes.
    calibration_percentile = None

    def __call__(self, inputs, training, weights, **kwargs):
        from tensorflow_model_optimization.python.core.quantization.keras import quant_ops

        if training and self.calibration_percentile is not None and not self.per_axis:
            flat = tf.reshape(inputs, [-1])
            size = tf.cast(tf.size(flat), tf.float32)
            k = tf.maximum(1, tf.cast(tf.math.ceil(size * (1.0 - self.calibration_percentile / 100.0)), tf.int32))
            high = tf.maximum(tf.reduce_min(tf.math.top_k(flat, k).values), 0.0)
            low = tf.minimum(-tf.reduce_min(tf.math.top_k(-flat, k).values), 0.0)
            # a tensor that is almost all zeros (an outlier channel placed back at full width) keeps its extremes
            extremes = tf.maximum(tf.reduce_max(flat), 0.0) - tf.minimum(tf.reduce_min(flat), 0.0)
            narrow = high - low < extremes / 16.0
            high = tf.where(narrow, tf.maximum(tf.reduce_max(flat), 0.0), high)
            low = tf.where(narrow, tf.minimum(tf.reduce_min(flat), 0.0), low)
            for var, value in ((weights["min_var"], low), (weights["max_var"], high)):
                var.assign(self.ema_decay * var + (1.0 - self.ema_decay) * value)
            training = False
        return quant_ops.MovingAvgQuantize(inputs, weights["min_var"], weights["max_var"], ema_decay=self.ema_decay,
                                           is_training=training, num_bits=self.num_bits, per_channel=self.per_axis,
                                           symmetric=self.symmetric, narrow_range=self.narrow_range)

    def get_config(self):
        return {**super().get_config(), "ema_decay": self.ema_decay}

    def __eq__(self, other):
        return isinstance(other, RangeQuantizer) and self.get_config() == other.get_config()


@_register
class FloatQuantizeConfig(_qk.QuantizeConfig):
    """Quantizes nothing: marks a layer as handled so TFMOT leaves it float.

    Without it, `quantize_apply` gives an unannotated layer feeding an annotated one (a residual `Add` into its
    LayerNormalization) TFMOT's own output quantization.
    """

    def get_weights_and_quantizers(self, layer):
        return []

    def get_activations_and_quantizers(self, layer):
        return []

    def set_quantize_weights(self, layer, quantize_weights):
        pass

    def set_quantize_activations(self, layer, quantize_activations):
        pass

    def get_output_quantizers(self, layer):
        return []

    def get_config(self):
        return {}

    def __eq__(self, other):
        return type(other) is FloatQuantizeConfig


@_register
class OutputQuantizeConfig(FloatQuantizeConfig):
    """Fake-quantizes a layer's output only; its weights (if any) and internal math stay float.

    Used on LayerNormalization and the attention layers of a tfspeed BERT: the converter needs a range on each
    tensor that enters or leaves a FULLY_CONNECTED / BATCH_MATMUL to make that op int8.

    Args:
        num_bits: bits of the output. Defaults to `8`.
        symmetric: symmetric range around 0 instead of a learned [min, max]. Defaults to `False` (TFLite's
            activation scheme: asymmetric int8).
    """

    def __init__(self, num_bits: int = 8, symmetric: bool = False, fixed_range=None):
        if not isinstance(num_bits, int) or not 2 <= num_bits <= 8:
            raise ValueError(f"Received an invalid value for `num_bits`, expected an integer in [2, 8]. "
                             f"Received: num_bits={num_bits!r}")
        if fixed_range is not None and (len(fixed_range) != 2 or not fixed_range[0] < fixed_range[1]):
            raise ValueError(f"Received an invalid value for `fixed_range`, expected (min, max) with min < max. "
                             f"Received: fixed_range={fixed_range!r}")
        self.num_bits, self.symmetric = num_bits, bool(symmetric)
        self.fixed_range = None if fixed_range is None else (float(fixed_range[0]), float(fixed_range[1]))

    def get_output_quantizers(self, layer):
        if self.fixed_range is not None:
            return [_qk.quantizers.FixedQuantizer(self.num_bits, *self.fixed_range, narrow_range=False)]
        return [RangeQuantizer(num_bits=self.num_bits, symmetric=self.symmetric)]

    def get_config(self):
        return {"num_bits": self.num_bits, "symmetric": self.symmetric,
                "fixed_range": None if self.fixed_range is None else list(self.fixed_range)}

    def __eq__(self, other):
        return isinstance(other, OutputQuantizeConfig) and self.get_config() == other.get_config()


@_register
class SparsityPreservingQuantizer(_qk.quantizers.LastValueQuantizer):
    """TFMOT's prune-preserving weight quantizer (`kernel * mask`, then LastValue fake-quant) with the mask kept in a
    non-trainable variable, so it is saved with the model and survives `.keras` reloads and weight copies.

    TFMOT's own `PrunePreserveDefault8BitWeightsQuantizer` computes the mask once from whatever the kernel holds when
    the layer is built; a model rebuilt from its config (every reload) gets a random kernel there, hence an all-ones
    mask, and the zeros are lost at the next training step.

    Args:
        num_bits: Defaults to `8`. per_axis: Defaults to `False`. symmetric: Defaults to `True`.
        narrow_range: Defaults to `True` (int8 weights in [-127, 127], TFLite's scheme).
    """

    def __init__(self, num_bits: int = 8, per_axis: bool = False, symmetric: bool = True, narrow_range: bool = True):
        super().__init__(num_bits=num_bits, per_axis=per_axis, symmetric=symmetric, narrow_range=narrow_range)

    def build(self, tensor_shape, name, layer):
        weights = super().build(tensor_shape, name, layer)
        kernel = getattr(layer.layer, name)

        def nonzero(shape, dtype=None):
            return tf.cast(tf.not_equal(kernel, 0), dtype or tf.float32)

        weights["sparsity_mask"] = layer.add_weight(f"{name}_sparsity_mask", shape=tensor_shape, initializer=nonzero,
                                                    trainable=False)
        return weights

    def __call__(self, inputs, training, weights, **kwargs):
        return super().__call__(inputs * weights["sparsity_mask"], training, weights, **kwargs)


@_register
class EmbeddingQuantizeConfig(_qk.QuantizeConfig):
    """Fake-quantizes an Embedding's table (per-tensor symmetric int8, TFLite's weight scheme), nothing else: the
    converter then stores the table int8 and GATHER dequantizes the rows it looks up (the word table is most of a
    small BERT's file). The int32 token ids and the gathered rows are not fake-quantized.

    Args:
        num_bits: Defaults to `8`.
    """

    def __init__(self, num_bits: int = 8):
        if isinstance(num_bits, bool) or not isinstance(num_bits, int) or not 2 <= num_bits <= 8:
            raise ValueError(f"Received an invalid value for `num_bits`, expected an integer in [2, 8]. "
                             f"Received: num_bits={num_bits!r}")
        self.num_bits = num_bits

    def get_weights_and_quantizers(self, layer):
        return [(layer.embeddings, _qk.quantizers.LastValueQuantizer(num_bits=self.num_bits, per_axis=False,
                                                                      symmetric=True, narrow_range=True))]

    def get_activations_and_quantizers(self, layer):
        return []

    def set_quantize_weights(self, layer, quantize_weights):
        layer.embeddings = quantize_weights[0]

    def set_quantize_activations(self, layer, quantize_activations):
        pass

    def get_output_quantizers(self, layer):
        return []

    def get_config(self):
        return {"num_bits": self.num_bits}

    def __eq__(self, other):
        return isinstance(other, EmbeddingQuantizeConfig) and self.get_config() == other.get_config()


@_register
class DenseQuantizeConfig(_default_8bit_registry().Default8BitQuantizeConfig):
    """TFMOT's default 8-bit Dense config (per-tensor symmetric int8 kernel, output quantized after the activation),
    optionally with TFMOT's prune-preserving kernel quantizer, kept through `get_config` (TFMOT's own config forgets it,
    so a reloaded prune-preserving model would stop preserving zeros).

    Args:
        preserve_sparsity: fake-quantize `kernel * mask`, the mask being the kernel's non-zeros when the layer is
            built, so zeros stay zero while training. Defaults to `False`.
    """

    def __init__(self, preserve_sparsity: bool = False, **kwargs):
        kwargs.setdefault("weight_attrs", ["kernel"])
        kwargs.setdefault("activation_attrs", ["activation"])
        kwargs.setdefault("quantize_output", False)
        super().__init__(**kwargs)
        self.activation_quantizer = RangeQuantizer()
        self.preserve_sparsity = bool(preserve_sparsity)
        if self.preserve_sparsity:
            self.weight_quantizer = SparsityPreservingQuantizer()

    def get_config(self):
        return {**super().get_config(), "preserve_sparsity": self.preserve_sparsity}

    def __eq__(self, other):
        return isinstance(other, DenseQuantizeConfig) and self.get_config() == other.get_config()


def custom_objects() -> dict:
    """Everything a QAT tfspeed model needs to load: TFMOT's quantization classes, tfspeed layers and configs."""
    from tfspeed.artifacts import custom_objects as base_objects
    objects = dict(base_objects())
    objects.update(_tfmot_objects())
    objects.update({"OutputQuantizeConfig": OutputQuantizeConfig, "DenseQuantizeConfig": DenseQuantizeConfig,
                    "EmbeddingQuantizeConfig": EmbeddingQuantizeConfig, "FloatQuantizeConfig": FloatQuantizeConfig,
                    "RangeQuantizer": RangeQuantizer, "ZeroChannels": ZeroChannels,
                    "SparsityPreservingQuantizer": SparsityPreservingQuantizer})
    return objects


def _tfmot_objects() -> dict:
    from tensorflow_model_optimization.python.core.quantization.keras import (
        quantize_annotate, quantize_aware_activation, quantize_config, quantize_layer, quantize_wrapper, quantizers)
    from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import (
        default_8bit_quantize_registry as registry)

    objects = {
        "QuantizeAnnotate": quantize_annotate.QuantizeAnnotate,
        "QuantizeAwareActivation": quantize_aware_activation.QuantizeAwareActivation,
        "NoOpActivation": quantize_aware_activation.NoOpActivation,
        "QuantizeWrapper": quantize_wrapper.QuantizeWrapper,
        "QuantizeWrapperV2": quantize_wrapper.QuantizeWrapperV2,
        "QuantizeLayer": quantize_layer.QuantizeLayer,
        "OutputOnlyConfig": quantize_config.OutputOnlyConfig,
        "FixedQuantizeConfig": quantize_config.FixedQuantizeConfig,
    }
    objects.update(registry._types_dict())  # pylint: disable=protected-access
    objects.update(quantizers._types_dict())  # pylint: disable=protected-access
    return objects


def quantize_scope():
    """A scope in which a QAT tfspeed model loads: `with quantize_scope(): keras.models.load_model(path)`.

    For model directories, `tfspeed.artifacts.load_model_dir(path, scope=qat.custom_objects())` does the same.
    """
    return keras.utils.custom_object_scope(custom_objects())


def unsupported_layers(model: keras.Model) -> list:
    """`[(layer name, class name)]` of the layers of `model` that `quantize` cannot handle (empty when it can)."""
    bad = []
    for layer in model.layers:
        if isinstance(layer, keras.Model) or not isinstance(layer, SUPPORTED_LAYERS) or \
                isinstance(layer, (keras.layers.Lambda,)):
            bad.append((layer.name, type(layer).__name__))
    return bad


def _hub_layers(model) -> list:
    try:
        import tensorflow_hub as hub
    except ImportError:  # pragma: no cover
        return []
    return [layer for layer in getattr(model, "layers", []) if isinstance(layer, hub.KerasLayer)]


def to_native(model: keras.Model) -> keras.Model:
    """A native tfspeed classifier with the weights of a `hub.KerasLayer` classifier (its fine-tuned weights kept).

    The hub layer's SavedModel is imported into the native encoder (`tfspeed.hub.import_encoder`), then the hub
    layer's current variables and the classifier head are copied over. A native model is returned unchanged.
    """
    hub_layers = _hub_layers(model)
    if not hub_layers:
        return model
    from tfspeed.hub import import_encoder
    from tfspeed.hub import weights as W

    if len(hub_layers) != 1:
        raise ValueError(f"Expected at most one `hub.KerasLayer` encoder in `model`. Received: "
                         f"{[l.name for l in hub_layers]}")
    hub_layer = hub_layers[0]
    handle = hub_layer.get_config().get("handle")
    if not isinstance(handle, str):
        raise ValueError(f"Cannot import the hub layer {hub_layer.name!r} into a native encoder: it was not built "
                         f"from a handle (path or URL). Received: handle={handle!r}")
    encoder = import_encoder(handle)
    variables = {v.name.rsplit(":", 1)[0]: v.numpy() for v in hub_layer.variables}
    weight_map = W.from_model_garden(variables) if W.is_model_garden(variables) else W.from_native_variables(variables)
    if not weight_map:
        raise ValueError(f"Cannot map the variables of the hub layer {hub_layer.name!r} to a native encoder (expected "
                         f"tfspeed or Model Garden names). Received: {sorted(variables)[:6]}...")
    W.assign(encoder, weight_map)  # the hub layer's current (fine-tuned) weights, not the SavedModel's

    head = [l for l in model.layers if isinstance(l, keras.layers.Dense)]
    if len(head) != 1:
        raise ValueError(f"Expected one Dense head on the hub encoder of `model`. Received Dense layers: "
                         f"{[l.name for l in head]}")
    dropout = [l for l in model.layers if isinstance(l, keras.layers.Dropout)]
    native = build_classifier(config_of(encoder), num_classes=int(head[0].units),
                              classifier_dropout=float(dropout[0].rate) if dropout else None)
    copy_weights(encoder, native)
    native.get_layer("classifier").set_weights(head[0].get_weights())
    return native


def _check_model(model):
    if not isinstance(model, keras.Model) or not getattr(model, "_is_graph_network", False):
        raise ValueError(f"Expected a functional tf_keras tfspeed BERT classifier for `model`. "
                         f"Received: {type(model).__name__}")
    if any(type(l).__name__.startswith(("QuantizeWrapper", "QuantizeAnnotate", "PruneLowMagnitude"))
           for l in model.layers):
        raise ValueError("`model` is already wrapped by TFMOT (quantized or still pruning). Pass the float model; "
                         "strip pruning first with `tfmot.sparsity.keras.strip_pruning`.")
    bad = unsupported_layers(model)
    if bad:
        listed = ", ".join(f"{name} ({cls})" for name, cls in bad)
        raise ValueError(
            f"`model` has layers quantization-aware training cannot handle: {listed}. "
            "tfspeed QAT supports Dense, LayerNormalization, Embedding, Add, Dropout and the tfspeed BERT layers "
            f"({', '.join(sorted(L.CUSTOM_OBJECTS))}). Rebuild the model as a native tfspeed BERT "
            "(`tfspeed.hub.build_classifier_from(handle)`; a `hub.KerasLayer` model is converted by `quantize` "
            "itself), replace Lambda / raw tf ops by a registered custom layer, or annotate such a layer yourself with "
            "`tfmot.quantization.keras.quantize_annotate_layer(layer, quantize_config)`.")
    if not is_bert(model):
        raise ValueError(f"Expected a tfspeed BERT classifier for `model` (layers word_embeddings, layer_0_query, "
                         f"pooler_dense). Received: a model named {model.name!r}")


# === Outlier channels ===

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
    import re

    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or ratio <= 1:
        raise ValueError(f"Received an invalid value for `ratio`, expected a number > 1. Received: ratio={ratio!r}")
    _checks.positive_int("max_channels", max_channels)
    patterns = [re.compile(p) for p in ([layers] if isinstance(layers, str) else layers)]
    dense = [l for l in model.layers if isinstance(l, keras.layers.Dense) and any(p.fullmatch(l.name) for p in patterns)]
    if not dense:
        raise ValueError(f"No Dense layer of `model` matches `layers`={layers!r}.")
    found = {}
    for layer, m in zip(dense, _channel_absmax(model, dense, data, num_batches, batch_size)):
        channels = [int(c) for c in np.argsort(-m)[:max_channels] if m[c] > ratio * np.median(m)]
        if channels:
            found[layer.name] = sorted(channels)
    return found


@_register
class ZeroChannels(keras.constraints.Constraint):
    """Keeps the given channels (last axis) of a weight at zero through training."""

    def __init__(self, channels):
        self.channels = sorted(int(c) for c in channels)

    def __call__(self, w):
        keep = np.ones(int(w.shape[-1]), dtype=np.float32)
        keep[self.channels] = 0.0
        return w * tf.constant(keep, dtype=w.dtype)

    def get_config(self):
        return {"channels": list(self.channels)}


def _config_of_rewrite(model, argument: str, value, expected: str):
    """`model`'s config and its layers by name, for a rewrite driven by the dict `value` of `argument`."""
    if not isinstance(value, dict):
        raise ValueError(f"Received an invalid value for `{argument}`, expected a dict {expected}. "
                         f"Received: {argument}={value!r}")
    config = model.get_config()
    return config, {l["name"]: l for l in config["layers"]}


def _picked(argument: str, name: str, picked, width: int, what: str) -> list:
    """`picked` as sorted unique indices in [0, width), a non-empty part of them, or a clear error."""
    indices = sorted({int(i) for i in picked})
    if not indices or indices[0] < 0 or indices[-1] >= width or len(indices) == width:
        raise ValueError(f"Received an invalid value for `{argument}[{name!r}]`, expected a non-empty list of {what} "
                         f"in [0, {width}) that leaves some out. Received: {picked!r}")
    return indices


def split_channels(model: keras.Model, channels: dict) -> keras.Model:
    """A copy of `model` in which the given output channels of a Dense are computed apart, so that once quantized
    they get an int8 range of their own and the other channels keep theirs (the same function in float).

    Each Dense `<name>` named in `channels` becomes three Dense and an Add, all FULLY_CONNECTED / ADD in TFLite:
    `<name>` (the same kernel with the picked columns held at zero by `ZeroChannels`), `<name>_outliers` (the picked
    columns only), `<name>_place` (a fixed one-hot [k, units] kernel, exact in int8, putting them back in place) and
    `<name>_merge` (float Add of the two). A CONCATENATION / GATHER merge would not do: the converter gives those ops one
    int8 scale for all channels again.

    Args:
        model: a float functional model (a tfspeed BERT classifier).
        channels: `{Dense name: [output channel indices]}`, e.g. from `find_outlier_channels`.
    """
    config, by_name = _config_of_rewrite(model, "channels", channels, "{Dense name: [channels]}")
    renamed, added = {}, {}
    for name, picked in channels.items():
        layer = by_name.get(name)
        if layer is None or layer["class_name"] != "Dense":
            dense = [l["name"] for l in config["layers"] if l["class_name"] == "Dense"]
            raise ValueError(f"Received an invalid value for `channels`: {name!r} is not a Dense layer of `model`. "
                             f"Dense layers: {dense[:6]}...")
        units = int(layer["config"]["units"])
        picked = _picked("channels", name, picked, units, "channels")
        base = {k: v for k, v in layer["config"].items() if k != "name"}
        dtype = base.get("dtype", "float32")
        outliers = {"class_name": "Dense", "name": f"{name}_outliers", "inbound_nodes": layer["inbound_nodes"],
                    "config": {**base, "name": f"{name}_outliers", "units": len(picked)}}
        place = {"class_name": "Dense", "name": f"{name}_place", "inbound_nodes": [[[f"{name}_outliers", 0, 0, {}]]],
                 "config": {"name": f"{name}_place", "units": units, "use_bias": False, "trainable": False,
                            "dtype": dtype}}
        merge = {"class_name": "Add", "name": f"{name}_merge",
                 "inbound_nodes": [[[name, 0, 0, {}], [f"{name}_place", 0, 0, {}]]],
                 "config": {"name": f"{name}_merge", "trainable": True, "dtype": dtype}}
        zero = keras.constraints.serialize(ZeroChannels(picked))
        layer["config"] = {**layer["config"], "kernel_constraint": zero,
                           "bias_constraint": zero if base.get("use_bias", True) else None}
        renamed[name], added[name] = f"{name}_merge", ([outliers, place, merge], picked)

    for layer in config["layers"]:
        if layer["name"] not in renamed:
            layer["inbound_nodes"] = [[[renamed.get(t[0], t[0]), *t[1:]] for t in node]
                                      for node in layer["inbound_nodes"]]
    config["layers"] = [new for layer in config["layers"]
                        for new in [layer, *(added[layer["name"]][0] if layer["name"] in added else [])]]
    config["output_layers"] = [[renamed.get(t[0], t[0]), *t[1:]] for t in config["output_layers"]]
    weights = {}
    for name, (_, picked) in added.items():
        kernel_and_bias = model.get_layer(name).get_weights()
        weights[f"{name}_outliers"] = [w[..., picked] for w in kernel_and_bias]
        for w in kernel_and_bias:
            w[..., picked] = 0.0
        weights[name] = kernel_and_bias
        weights[f"{name}_place"] = [np.eye(kernel_and_bias[0].shape[-1], dtype=np.float32)[picked]]
    return _rebuild(config, model, weights)


def split_of(model: keras.Model) -> dict:
    """`{Dense name: [channels]}` computed apart in `model` (by `split_channels` / `quantize(outlier_channels=...)`)."""
    found = {}
    for layer in model.layers:
        inner = getattr(layer, "layer", layer)
        if isinstance(inner, keras.layers.Dense) and isinstance(inner.kernel_constraint, ZeroChannels):
            found[inner.name] = list(inner.kernel_constraint.channels)
    return found


def _consumers(config, name) -> list:
    return [l for l in config["layers"] if any(t[0] == name for node in l["inbound_nodes"] for t in node)]


def _reroute(layer, old, new):
    layer["inbound_nodes"] = [[[new if t[0] == old else t[0], *t[1:]] for t in node] for node in layer["inbound_nodes"]]


def _rebuild(config, source: keras.Model, weights: dict) -> keras.Model:
    """The model of a rewritten `config`: the layers in `weights` ({name: weight list}) get those, which the rewrite
    computed; every other layer with weights gets those of `source`'s layer of the same name."""
    with keras.utils.custom_object_scope(custom_objects()):
        rebuilt = keras.Model.from_config(config)
    for layer in rebuilt.layers:
        if layer.name in weights:
            layer.set_weights(weights[layer.name])
        elif layer.weights:
            layer.set_weights(source.get_layer(layer.name).get_weights())
    return rebuilt


def split_units(model: keras.Model, units: dict) -> keras.Model:
    """A copy of `model` in which the given units of an FFN intermediate Dense are computed apart (the same function
    in float), so the int8 range of the intermediate output is set by the ordinary units.

    MiniLM's FFN intermediates have one unit whose GELU output reaches ~25 where the others stay below ~6: one
    per-tensor int8 range has a step of ~0.13 for activations mostly below 1, and a rounding difference there spreads
    through every later layer (see `smooth`). Each Dense `<name>` in `units` becomes: `<name>` (the picked columns held
    at zero by `ZeroChannels`: GELU(0) = 0), `<name>_outliers` (the picked units, same activation),
    `<name>_outliers_output` (their rows of the next Dense, no bias) and `<name>_outliers_merge` (float Add onto the
    next Dense's output). All FULLY_CONNECTED int8 in TFLite.

    Args:
        model: a float tfspeed BERT classifier.
        units: `{intermediate Dense name: [units]}`, e.g. `find_outlier_channels(model, data, OUTLIER_UNITS)`.
    """
    config, by_name = _config_of_rewrite(model, "units", units, "{Dense name: [units]}")
    plan = {}
    for name, picked in units.items():
        layer = by_name.get(name)
        nxt = _consumers(config, name) if layer else []
        if layer is None or layer["class_name"] != "Dense" or len(nxt) != 1 or nxt[0]["class_name"] != "Dense":
            raise ValueError(f"Received an invalid value for `units`: {name!r} is not a Dense layer of `model` feeding "
                             f"exactly one Dense (an FFN intermediate).")
        picked = _picked("units", name, picked, int(layer["config"]["units"]), "units")
        out = nxt[0]
        base = {k: v for k, v in layer["config"].items() if k != "name"}
        dtype = base.get("dtype", "float32")
        new = [{"class_name": "Dense", "name": f"{name}_outliers", "inbound_nodes": layer["inbound_nodes"],
                "config": {**base, "name": f"{name}_outliers", "units": len(picked)}},
               {"class_name": "Dense", "name": f"{name}_outliers_output",
                "inbound_nodes": [[[f"{name}_outliers", 0, 0, {}]]],
                "config": {"name": f"{name}_outliers_output", "units": int(out["config"]["units"]),
                           "use_bias": False, "trainable": True, "dtype": dtype}},
               {"class_name": "Add", "name": f"{name}_outliers_merge",
                "inbound_nodes": [[[out["name"], 0, 0, {}], [f"{name}_outliers_output", 0, 0, {}]]],
                "config": {"name": f"{name}_outliers_merge", "trainable": True, "dtype": dtype}}]
        for consumer in _consumers(config, out["name"]):
            _reroute(consumer, out["name"], f"{name}_outliers_merge")
        zero = keras.constraints.serialize(ZeroChannels(picked))
        layer["config"] = {**layer["config"], "kernel_constraint": zero,
                           "bias_constraint": zero if base.get("use_bias", True) else None}
        at = config["layers"].index(out)
        config["layers"][at + 1:at + 1] = new
        plan[name] = (picked, out["name"])
    weights = {}
    for name, (picked, out_name) in plan.items():
        kernel, *bias = model.get_layer(name).get_weights()
        weights[f"{name}_outliers"] = [kernel[:, picked], *[b[picked] for b in bias]]
        kernel[:, picked] = 0.0
        weights[name] = [kernel, *[np.where(np.isin(np.arange(b.size), picked), 0.0, b) for b in bias]]
        out_kernel, *out_bias = model.get_layer(out_name).get_weights()
        weights[f"{name}_outliers_output"] = [out_kernel[picked]]
        out_kernel[picked] = 0.0  # their input is now GELU(0) = 0; zero rows also keep them out of the int8 kernel range
        weights[out_name] = [out_kernel, *out_bias]
    return _rebuild(config, model, weights)


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


def split_heads(model: keras.Model, heads: dict) -> keras.Model:
    """A copy of `model` in which the given heads' attention scores are computed apart (the same function in float),
    so each group gets its own int8 range once quantized.

    For each `<p>scores` in `heads`, the heads are reordered so the picked ones come last (the value columns and the
    attention output rows follow, an exact permutation); `<p>query` / `<p>key` keep the other heads' columns and
    `<p>query_outliers` / `<p>key_outliers` take the picked ones; `<p>scores` / `<p>scores_outliers` are two
    BATCH_MATMULs with their own ranges, each with its softmax (`<p>softmax`, `<p>softmax_outliers`), and
    `<p>softmax_merge` joins the probabilities on the heads axis. The join comes after the softmax because an int8
    CONCATENATION gives its inputs one scale: joined before, the scores would share one range again; the
    probabilities already share TFLite's (1/256), so the join is exact.

    Args:
        model: a float tfspeed BERT classifier.
        heads: `{scores layer name: [heads]}`, e.g. `find_outlier_heads(model, data)`.
    """
    import copy

    config, by_name = _config_of_rewrite(model, "heads", heads, "{scores layer name: [heads]}")
    plan = {}
    for name, picked in heads.items():
        layer = by_name.get(name)
        inner = model.get_layer(name) if layer else None
        if not isinstance(inner, L.QueryKeyProduct) or not name.endswith("scores"):
            raise ValueError(f"Received an invalid value for `heads`: {name!r} is not an attention scores layer "
                             f"(QueryKeyProduct) of `model`.")
        n = inner.num_heads
        picked = _picked("heads", name, picked, n, "heads")
        p = name[:-len("scores")]
        (query, _, _, _), (key, _, _, _) = layer["inbound_nodes"][0]
        keep = [h for h in range(n) if h not in picked]
        new = []
        for dense in (query, key):
            extra = copy.deepcopy(by_name[dense])
            extra["name"] = extra["config"]["name"] = f"{dense}_outliers"
            extra["config"]["units"] = len(picked) * inner.head_size
            by_name[dense]["config"]["units"] = len(keep) * inner.head_size
            new.append(extra)
        outliers = copy.deepcopy(layer)
        outliers["name"] = outliers["config"]["name"] = f"{name}_outliers"
        outliers["config"]["num_heads"] = len(picked)
        outliers["inbound_nodes"] = [[[f"{query}_outliers", 0, 0, {}], [f"{key}_outliers", 0, 0, {}]]]
        layer["config"]["num_heads"] = len(keep)
        softmax = _consumers(config, name)
        if len(softmax) != 1 or "MaskedSoftmax" not in softmax[0]["class_name"]:
            raise ValueError(f"Received an invalid value for `heads`: {name!r} does not feed one MaskedSoftmax.")
        softmax = softmax[0]
        probs = copy.deepcopy(softmax)
        probs["name"] = probs["config"]["name"] = f"{softmax['name']}_outliers"
        _reroute(probs, name, f"{name}_outliers")
        merge = {"class_name": "Concatenate", "name": f"{softmax['name']}_merge",
                 "inbound_nodes": [[[softmax["name"], 0, 0, {}], [probs["name"], 0, 0, {}]]],
                 "config": {"name": f"{softmax['name']}_merge", "axis": 1, "trainable": True,
                            "dtype": layer["config"].get("dtype", "float32")}}
        for consumer in _consumers(config, softmax["name"]):
            _reroute(consumer, softmax["name"], merge["name"])
        at = config["layers"].index(layer)
        config["layers"][at + 1:at + 1] = new + [outliers]
        at = config["layers"].index(softmax)
        config["layers"][at + 1:at + 1] = [probs, merge]
        plan[name] = (p, query, key, keep, picked, inner.head_size)
    weights = {}
    for name, (p, query, key, keep, picked, size) in plan.items():
        kept, apart = (np.concatenate([np.arange(h * size, (h + 1) * size) for h in hs]) for hs in (keep, picked))
        for dense in (query, key):
            kernel, *bias = model.get_layer(dense).get_weights()
            weights[dense] = [kernel[:, kept], *[b[kept] for b in bias]]
            weights[f"{dense}_outliers"] = [kernel[:, apart], *[b[apart] for b in bias]]
        order = np.concatenate([kept, apart])
        value = model.get_layer(f"{p}value").get_weights()
        weights[f"{p}value"] = [value[0][:, order], *[b[order] for b in value[1:]]]
        out = model.get_layer(f"{p}attention_output").get_weights()
        weights[f"{p}attention_output"] = [out[0][order], *out[1:]]
    return _rebuild(config, model, weights)


def split_heads_of(model: keras.Model) -> dict:
    """`{scores layer name: number of heads computed apart}` in `model` (by `split_heads`)."""
    inner = [getattr(l, "layer", l) for l in model.layers]
    return {l.name[:-len("_outliers")]: l.num_heads for l in inner
            if isinstance(l, L.QueryKeyProduct) and l.name.endswith("_outliers")}


def _dense_consumers(config, name):
    """The Dense layers reading `name` (through Dropout layers) and the other readers, as `(dense, others)` where
    `others` are `(layer config, source name)`."""
    dense, others = [], []
    for consumer in _consumers(config, name):
        if consumer["class_name"] == "Dropout":
            d, o = _dense_consumers(config, consumer["name"])
            dense, others = dense + d, others + o
        elif consumer["class_name"] == "Dense":
            dense.append(consumer)
        else:
            others.append((consumer, name))
    return dense, others


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


def smooth_layer_norms(model: keras.Model, scales: dict) -> keras.Model:
    """A copy of `model` whose LayerNorm outputs are divided per channel by `scales` (`layer_norm_scales`): gamma and
    beta divided, the kernel rows of the Dense layers reading them multiplied, and a float `ChannelScale` giving the
    residual stream (and any other reader) its original values back. The same function in float; once quantized, the
    LayerNorm outputs get a finer int8 step.
    """
    config, by_name = _config_of_rewrite(model, "scales", scales, "{LayerNorm name: divisors}")
    rows = {}
    for name, s in scales.items():
        if name not in by_name or by_name[name]["class_name"] != "LayerNormalization":
            raise ValueError(f"Received an invalid value for `scales`: {name!r} is not a LayerNormalization of `model`.")
        dense, others = _dense_consumers(config, name)
        for d in dense:
            rows[d["name"]] = np.asarray(s, np.float32)
        for reader, source in others:
            restore = f"{name}_restore"
            if restore not in by_name:
                layer = {"class_name": "ChannelScale", "name": restore, "inbound_nodes": [[[source, 0, 0, {}]]],
                         "config": {"name": restore, "trainable": False, "dtype": "float32",
                                    "scales": [float(v) for v in s]}}
                config["layers"].insert(config["layers"].index(by_name[source]) + 1, layer)
                by_name[restore] = layer
            _reroute(reader, source, restore)
    weights = {name: [w / scales[name] for w in model.get_layer(name).get_weights()] for name in scales}  # gamma, beta
    for name, row in rows.items():
        kernel, *rest = model.get_layer(name).get_weights()
        weights[name] = [kernel * row[:, None], *rest]
    return _rebuild(config, model, weights)


def smoothed_layer_norms(model: keras.Model) -> list:
    """Names of the LayerNorms whose outputs `smooth_layer_norms` scaled down in `model` (each has a `<name>_restore`)."""
    return [l.name[:-len("_restore")] for l in model.layers
            if isinstance(getattr(l, "layer", l), L.ChannelScale) and l.name.endswith("_restore")]


def _annotator(preserve_sparsity: bool, quantize_embeddings: bool = True, float_outputs=()):
    import re

    patterns = [re.compile(p) for p in float_outputs]

    def annotate(layer):
        if isinstance(layer, keras.layers.Dense):
            if any(p.fullmatch(layer.name) for p in patterns):
                config = DenseQuantizeConfig(preserve_sparsity=preserve_sparsity, activation_attrs=[])
            else:
                config = DenseQuantizeConfig(preserve_sparsity=preserve_sparsity)
            return _qk.quantize_annotate_layer(layer, config)
        if isinstance(layer, _OUTPUT_QUANTIZED):
            if any(p.fullmatch(layer.name) for p in patterns):
                return _qk.quantize_annotate_layer(layer, FloatQuantizeConfig())
            if isinstance(layer, L.MaskedSoftmax):
                return _qk.quantize_annotate_layer(layer, OutputQuantizeConfig(fixed_range=SOFTMAX_RANGE))
            return _qk.quantize_annotate_layer(layer, OutputQuantizeConfig())
        if isinstance(layer, keras.layers.Add):
            return _qk.quantize_annotate_layer(layer, FloatQuantizeConfig())
        if isinstance(layer, keras.layers.Embedding) and quantize_embeddings:
            return _qk.quantize_annotate_layer(layer, EmbeddingQuantizeConfig())
        return layer

    return annotate


class _NoLayoutTransform:
    """TFMOT's default 8-bit layout transform minus its first step, which puts a FakeQuant after every InputLayer
    feeding an annotated layer (the int32 token ids into the quantized word Embedding: "FakeQuantWithMinMaxVars ...
    int32"). Its other steps fuse Conv / BatchNorm / ReLU patterns a BERT does not have."""

    def apply(self, model, layer_quantize_map):
        from tensorflow_model_optimization.python.core.quantization.keras.graph_transformations import (
            model_transformer)

        return model_transformer.ModelTransformer(model, [], set(layer_quantize_map), layer_quantize_map).transform()


def _scheme(preserve_sparsity: bool):
    if preserve_sparsity:
        from tensorflow_model_optimization.python.core.quantization.keras.collab_opts.prune_preserve import (
            default_8bit_prune_preserve_quantize_scheme as pp)

        base = pp.Default8BitPrunePreserveQuantizeScheme
    else:
        base = _qk.default_8bit.Default8BitQuantizeScheme

    class Scheme(base):
        def get_layout_transformer(self):
            return _NoLayoutTransform()

    return Scheme()


def quantize(model: keras.Model, preserve_sparsity: bool = False, float_outputs=(),
             outlier_channels=None, outlier_units=None, layer_norm_scales=None, outlier_heads=None) -> keras.Model:
    """A quantization-aware copy of a tfspeed BERT classifier (the caller's model is not changed).

    Every Dense is fake-quantized with TFMOT's default 8-bit config; the outputs of LayerNormalization, attention
    scores, softmax, attention context and the [CLS] slice get `OutputQuantizeConfig`. Token and mask inputs stay int32
    and unquantized. Call it inside `strategy.scope()` to fit under a `tf.distribute` strategy.

    Args:
        model: a native tfspeed BERT classifier (`tfspeed.models.build_classifier`, `tfspeed.hub.build_classifier_from`),
            or a classifier on a `hub.KerasLayer` encoder, which is first imported into the native encoder.
        preserve_sparsity: use TFMOT's prune-preserving 8-bit scheme, so the zeros of a pruned (and stripped) model
            stay zero through QAT and in the int8 file. Defaults to `False`.
        float_outputs: regular expressions (full match) on layer names whose outputs are not fake-quantized: a Dense
            keeps its int8 kernel simulation but its FULLY_CONNECTED runs float in the file; an attention layer's
            BATCH_MATMUL likewise. `OUTLIER_OUTPUTS` keeps the FFN output projections float. Defaults to `()`
            (every FULLY_CONNECTED and BATCH_MATMUL int8).
        outlier_channels: `{Dense name: [output channels]}` (`find_outlier_channels`) computed by a Dense of their own
            with its own int8 range (`split_channels`): every FULLY_CONNECTED stays int8 and the ordinary channels
            keep their resolution. Defaults to `None` (no split).
        outlier_units: `{FFN intermediate Dense name: [units]}` computed apart (`split_units`). Defaults to `None`.
        layer_norm_scales: `{LayerNorm name: per-channel divisors}` (`layer_norm_scales`) applied first
            (`smooth_layer_norms`). Defaults to `None`.
        outlier_heads: `{scores layer name: [heads]}` whose attention scores get a BATCH_MATMUL and an int8 range of
            their own (`split_heads`, `find_outlier_heads`). Defaults to `None`.

    Returns:
        A new functional model whose layers are `quant_*` wrappers; weights copied from `model`.

    Raises:
        ValueError: for layers QAT cannot handle (listed, with what to do), or a model already wrapped by TFMOT.
    """
    if not isinstance(preserve_sparsity, bool):
        raise ValueError(f"Received an invalid value for `preserve_sparsity`, expected a bool. "
                         f"Received: preserve_sparsity={preserve_sparsity!r}")
    if isinstance(float_outputs, str) or not all(isinstance(p, str) for p in float_outputs):
        raise ValueError(f"Received an invalid value for `float_outputs`, expected a list of regular expressions "
                         f"(str). Received: float_outputs={float_outputs!r}")
    model = to_native(model) if _hub_layers(model) else model
    _check_model(model)
    if layer_norm_scales:
        model = smooth_layer_norms(model, layer_norm_scales)
    if outlier_units:
        model = split_units(model, outlier_units)
    if outlier_heads:
        model = split_heads(model, outlier_heads)
    if outlier_channels:
        model = split_channels(model, outlier_channels)
    with quantize_scope():
        annotate = _annotator(preserve_sparsity, True, tuple(float_outputs))
        annotated = keras.models.clone_model(model, clone_function=annotate)
        annotated.set_weights(model.get_weights())
        applied = _qk.quantize_apply(annotated, _scheme(preserve_sparsity))
        # `quantize_apply` builds the wrapped layers inside the wrappers' calls, so some inner weights are tracked by
        # the wrapper; a reloaded model tracks them on the inner layer and `.keras` loading fails ("expected 3
        # variables, received 5"). Rebuilding from the config gives the structure that loading produces.
        qat_model = keras.Model.from_config(applied.get_config())
    _copy_weights_in_order(applied, qat_model)
    return qat_model


def _copy_weights_in_order(source, target):
    src, dst = source.weights, target.weights
    short = lambda w: w.name.split("/")[-1]  # noqa: E731
    if [(short(w), tuple(w.shape)) for w in src] != [(short(w), tuple(w.shape)) for w in dst]:  # pragma: no cover
        raise RuntimeError("Internal error: the rebuilt QAT model's weights do not line up with quantize_apply's.")
    target.set_weights(source.get_weights())


def _range_quantizers(model) -> list:
    found = {}
    for layer in model.layers:
        candidates = list(getattr(layer, "_output_quantizers", None) or [])
        candidates += [a.quantizer for a in getattr(layer, "_quantize_activations", None) or []]
        for q in candidates:
            if isinstance(q, RangeQuantizer):
                found[id(q)] = q
    return list(found.values())


def calibrate(qat_model: keras.Model, data, num_batches: int = 8, batch_size: int = 32, seed: int = 0,
              percentile=None, freeze: bool = False) -> int:
    """Sets the activation ranges of a QAT model from real data: the mean of the per-batch min / max (or percentiles).

    Runs `num_batches` training-mode forward passes (no weight update, dropout off) with each `RangeQuantizer`'s decay
    set to k / (k + 1) at batch k, so the first batch replaces TFMOT's [-6, 6] start and later ones average in.
    `qat_fit` does this before fitting.

    Args:
        qat_model: a model from `quantize`.
        data: an `EncodedSplit` (e.g. the training split).
        num_batches: Defaults to `8`. batch_size: Defaults to `32`. seed: which batches. Defaults to `0`.
        percentile: take each batch's range from the `percentile`-th and (100 - `percentile`)-th percentiles of the
            values instead of their extremes (e.g. `99.99`): the rare extremes are clipped and every other value gets
            a finer int8 step. Fixed ranges (the softmax's) are not changed. Defaults to `None` (min / max).
        freeze: keep the ranges as calibrated through training (decay 1): the moving average would otherwise pull
            them back out to the training batches' extremes, dropout-inflated. Defaults to `False`.

    Returns:
        The number of batches used.
    """
    if isinstance(num_batches, bool) or not isinstance(num_batches, int) or num_batches < 1:
        raise ValueError(f"Received an invalid value for `num_batches`, expected a positive integer. "
                         f"Received: num_batches={num_batches!r}")
    if percentile is not None and (isinstance(percentile, bool) or not isinstance(percentile, (int, float))
                                   or not 50 < percentile < 100):
        raise ValueError(f"Received an invalid value for `percentile`, expected a number in (50, 100) such as 99.99, "
                         f"or None for the min / max. Received: percentile={percentile!r}")
    if not hasattr(data, "batch_indices"):
        raise ValueError(f"Expected an `EncodedSplit` for `data`. Received: {type(data).__name__}")
    quantizers = _range_quantizers(qat_model)
    if not quantizers:
        raise ValueError("`qat_model` has no tfspeed activation quantizers: pass a model made by "
                         "`tfspeed.compress.qat.quantize`.")
    batches = data.batch_indices(batch_size, shuffle=True, rng=np.random.default_rng(seed))[:num_batches]
    decays = [q.ema_decay for q in quantizers]
    dropouts = [l for l in qat_model.layers if isinstance(getattr(l, "layer", l), keras.layers.Dropout)]
    rates = [getattr(l, "layer", l).rate for l in dropouts]
    try:
        for l in dropouts:
            getattr(l, "layer", l).rate = 0.0
        for k, idx in enumerate(batches):
            for q in quantizers:
                q.ema_decay = k / (k + 1)
                q.calibration_percentile = None if percentile is None else float(percentile)
            x, _ = data.batch(idx)
            qat_model(x, training=True)
    finally:
        for q, decay in zip(quantizers, decays):
            q.ema_decay = 1.0 if freeze else decay
            q.calibration_percentile = None
        for l, rate in zip(dropouts, rates):
            getattr(l, "layer", l).rate = rate
    return len(batches)


def qat_fit(model: keras.Model, train, validation=None, epochs: int = 1, batch_size: int = 32,
            learning_rate: float = 2e-5, preserve_sparsity: bool = False, strategy=None, callbacks=(),
            verbose="auto", calibration_batches: int = 8, float_outputs=(), outlier_channels="auto",
            smooth="auto", calibration_percentile=99.99, freeze_ranges: bool = True, distill: bool = True):
    """Quantizes `model` and fine-tunes the QAT copy with `fit`; returns `(qat_model, history)`.

    The copy is made inside `strategy.scope()`, so its variables (fake-quant ranges included) are distributed; its
    activation ranges are calibrated on `calibration_batches` training batches first.

    Args:
        model: a tfspeed BERT classifier, float (see `quantize`).
        train: an `EncodedSplit` to fit on. validation: an `EncodedSplit`. Defaults to `None`.
        epochs: Defaults to `1`. batch_size: Defaults to `32`.
        learning_rate: peak AdamW rate (warm-up then linear decay): QAT starts from trained weights, so keep it low.
            Defaults to `2e-5`.
        preserve_sparsity: see `quantize`. Defaults to `False`.
        float_outputs: see `quantize`. Defaults to `()`.
        outlier_channels: see `quantize`; `"auto"` finds them on `train` (`find_outlier_channels` on the FFN outputs),
            `None` splits nothing. Defaults to `"auto"`.
        smooth: `"auto"` also finds the LayerNorm outlier channels (`layer_norm_scales`) and the FFN intermediate
            outlier units (`find_outlier_channels(..., OUTLIER_UNITS)`) and the attention heads with outlier scores
            (`find_outlier_heads`) on `train` and gives them the same treatment
            (`quantize(layer_norm_scales=..., outlier_units=..., outlier_heads=...)`): finer int8 steps where a
            rounding difference between Keras and TFLite would otherwise spread through the later layers. `None`:
            none of these.
            Defaults to `"auto"`.
        strategy: a `tf.distribute.Strategy`. Defaults to the current (default) strategy.
        callbacks: Keras callbacks for `fit`. Defaults to `()`.
        calibration_batches: training batches that set the activation ranges before fitting (`calibrate`); `0`
            keeps TFMOT's [-6, 6] start. Defaults to `8`.
        calibration_percentile: see `calibrate(percentile=...)`; `None` takes the min / max. Defaults to `99.99`
            (on MiniLM: file accuracy +0.6 point and Keras-vs-file agreement 0.988 vs 0.984 with min / max).
        freeze_ranges: keep the calibrated ranges through fitting (`calibrate(freeze=True)`): the moving averages
            would otherwise widen them again to the training batches' extremes. Defaults to `True`.
        distill: fit through a `Distiller` with `model` (float) as the teacher (`distill.fit_student`, alpha 0.5,
            temperature 2), so the quantized copy learns the float model's outputs rather than drifting on the
            labels (MiniLM, 2 epochs: file 0.8422 vs float 0.8439; on the labels alone 0.8390 and 0.8358 in two
            runs). `False` fits on the labels alone. Defaults to `True`.
    """
    from tfspeed.train import fit_classifier

    strategy = strategy or tf.distribute.get_strategy()
    with strategy.scope():
        if smooth not in ("auto", None):
            raise ValueError(f"Received an invalid value for `smooth`, expected 'auto' or None. "
                             f"Received: smooth={smooth!r}")
        if isinstance(outlier_channels, str) and outlier_channels != "auto":
            raise ValueError(f"Received an invalid value for `outlier_channels`, expected 'auto', None or a dict "
                             f"{{Dense name: [channels]}}. Received: outlier_channels={outlier_channels!r}")
        if not isinstance(distill, bool):
            raise ValueError(f"Received an invalid value for `distill`, expected a bool. Received: distill={distill!r}")
        model = to_native(model) if _hub_layers(model) else model
        _check_model(model)
        teacher = model  # the float model, before the rewrites below
        if smooth == "auto":  # on the float model first: the outlier channels are then found on what is left
            scales = layer_norm_scales(model, train, batch_size=batch_size)
            model = smooth_layer_norms(model, scales) if scales else model
            units = find_outlier_channels(model, train, OUTLIER_UNITS, batch_size=batch_size)
            model = split_units(model, units) if units else model
            heads = find_outlier_heads(model, train, batch_size=batch_size)
            model = split_heads(model, heads) if heads else model
        if outlier_channels == "auto":
            # the split-off units' own output projection carries the big channels too: split it the same way
            outlier_channels = find_outlier_channels(model, train, OUTLIER_OUTPUTS + _UNIT_OUTPUTS,
                                                     batch_size=batch_size)
        qat_model = quantize(model, preserve_sparsity=preserve_sparsity, float_outputs=float_outputs,
                             outlier_channels=outlier_channels)
        if calibration_batches:
            calibrate(qat_model, train, num_batches=calibration_batches, batch_size=batch_size,
                      percentile=calibration_percentile, freeze=freeze_ranges)
        if distill:
            from tfspeed.compress.distill import fit_student

            history = fit_student(qat_model, teacher, train, validation, epochs=epochs, batch_size=batch_size,
                                  learning_rate=learning_rate, callbacks=callbacks, verbose=verbose)
        else:
            history = fit_classifier(qat_model, train, validation, epochs=epochs, batch_size=batch_size,
                                     learning_rate=learning_rate, callbacks=callbacks, verbose=verbose)
    return qat_model, history


def is_quantized(model) -> bool:
    """Whether `model` is a QAT model (has TFMOT quantize wrappers)."""
    from tensorflow_model_optimization.python.core.quantization.keras.quantize_wrapper import QuantizeWrapper

    return any(isinstance(l, QuantizeWrapper) for l in getattr(model, "layers", []))


# === Conversion ===

def to_tflite(qat_model: keras.Model, seq_length: int) -> bytes:
    """The int8 .tflite of a QAT model: `tfspeed.export.convert(qat_model, mode="int8", seq_length=seq_length)`.

    The converter reads the trained fake-quant ranges (no calibration) from a fixed [1, seq_length] signature; inputs
    `input_word_ids`, `input_mask`, `input_type_ids` stay int32, the logits come out float32.

    Args:
        qat_model: a model returned by `quantize` (fitted or not), or a model directory holding one.
        seq_length: tokens per example of the file's fixed signature.
    """
    from tfspeed import export

    if isinstance(seq_length, bool) or not isinstance(seq_length, (int, np.integer)) or seq_length < 1:
        raise ValueError(f"Received an invalid value for `seq_length`, expected a positive integer. "
                         f"Received: seq_length={seq_length!r}")
    if isinstance(qat_model, keras.Model) and not is_quantized(qat_model):
        raise ValueError("Expected a QAT model for `qat_model` (from `tfspeed.compress.qat.quantize`). Received a float "
                         f"model {qat_model.name!r}: quantize it first, or use `tfspeed.export.convert` for "
                         "post-training quantization.")
    return export.convert(qat_model, mode="int8", seq_length=int(seq_length))


def int8_fractions(tflite) -> dict:
    """`{"FULLY_CONNECTED": f, "BATCH_MATMUL": f}`: the fraction of those ops that compute in int8 (None if absent)."""
    from tfspeed.export import op_histogram

    counts = op_histogram(tflite)["int8"]
    return {op: (c["int8"] / c["total"] if c["total"] else None) for op, c in counts.items()}
