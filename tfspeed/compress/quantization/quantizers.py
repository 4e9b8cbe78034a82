"""The tfspeed fake quantizers: `RangeQuantizer` for activations, `SparsityPreservingQuantizer` for pruned kernels.

Both are TFMOT quantizers registered under the package `tfspeed` (`tfspeed>RangeQuantizer`, ...), so a QAT model
that uses them saves and loads with its ranges and masks.
"""

from __future__ import annotations

import tensorflow_model_optimization as tfmot  # noqa: E402  (after tfspeed.compat)

from tfspeed.compat import keras, tf  # sets TF_USE_LEGACY_KERAS before TFMOT imports TensorFlow

__all__ = ["RangeQuantizer", "SparsityPreservingQuantizer"]

_register = keras.utils.register_keras_serializable(package="tfspeed")
_qk = tfmot.quantization.keras


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
