"""The QuantizeConfigs that place fake quantization on a tfspeed BERT, and the `ZeroChannels` constraint.

- `DenseQuantizeConfig`: TFMOT's default 8-bit Dense scheme (optionally prune-preserving), kept through `get_config`,
- `OutputQuantizeConfig`: the output only (LayerNormalization, attention scores / softmax / context, [CLS] slice);
  `SOFTMAX_RANGE` is the attention probabilities' fixed range,
- `EmbeddingQuantizeConfig`: the embedding table only (int8 GATHER tables in the file),
- `FloatQuantizeConfig`: nothing (a layer TFMOT must leave float, such as the residual `Add`s),
- `ZeroChannels`: keeps the channels a rewrite computes apart at zero in the original Dense (see `rewrites`).

Each class is registered under the package `tfspeed` (`tfspeed>OutputQuantizeConfig`, ...): saved QAT models refer
to them by these names.
"""

from __future__ import annotations

import numpy as np
import tensorflow_model_optimization as tfmot  # noqa: E402  (after tfspeed.compat)

from tfspeed.compat import keras, tf  # sets TF_USE_LEGACY_KERAS before TFMOT imports TensorFlow
from tfspeed.compress.quantization.quantizers import RangeQuantizer, SparsityPreservingQuantizer

__all__ = ["DenseQuantizeConfig", "EmbeddingQuantizeConfig", "FloatQuantizeConfig", "OutputQuantizeConfig",
           "SOFTMAX_RANGE", "ZeroChannels"]

_register = keras.utils.register_keras_serializable(package="tfspeed")
_qk = tfmot.quantization.keras


def _default_8bit_registry():
    from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import default_8bit_quantize_registry

    return default_8bit_quantize_registry


SOFTMAX_RANGE = (0.0, 255.0 / 256.0)
"""The attention probabilities' int8 range: TFLite's (scale 1/256, zero point -128). A learned [0, ~1] range (scale
1/255) makes the converter quantize the softmax to 1/256 and then requantize to 1/255: a double rounding on every
probability that the Keras model does not simulate."""


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

