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
`tfspeed.export.quantized.to_tflite(model, seq_length)`. `preserve_sparsity=True` is TFMOT's prune-preserving 8-bit
scheme (kernel * mask before the fake quantization, so zeros get no gradient and stay zero), with the mask kept as a
saved variable.

| module | holds |
|---|---|
| `config` | `QATConfig` (the settings of `qat_fit` and `tfspeed qat`), `Detection`, shared checks |
| `quantizers` | `RangeQuantizer` (activations), `SparsityPreservingQuantizer` (pruned kernels) |
| `configs` | the QuantizeConfigs (`Dense...`, `Output...`, `Embedding...`, `FloatQuantizeConfig`), `ZeroChannels` |
| `scheme` | which layer gets which config; `unsupported_layers`, `to_native`, `custom_objects`, `quantize_scope` |
| `outliers` | `find_outlier_channels`, `find_outlier_heads`, `layer_norm_scales` (read the float model on data) |
| `rewrites` | `split_channels`, `split_units`, `split_heads`, `smooth_layer_norms`; `split_of` and the like |
| `training` | the verbs: `quantize`, `calibrate`, `qat_fit`, `is_quantized` |

Example:

>>> from tfspeed.compress.quantization import QATConfig, qat_fit
>>> from tfspeed.export.quantized import int8_fractions, to_tflite
>>> qat_model, history = qat_fit(classifier, encoded.train, config=QATConfig(epochs=1))  # doctest: +SKIP
>>> tflite = to_tflite(qat_model, seq_length=64)  # doctest: +SKIP
>>> int8_fractions(tflite)  # doctest: +SKIP
{'FULLY_CONNECTED': 1.0, 'BATCH_MATMUL': 1.0}
"""

from tfspeed.compress.quantization.config import Detection, QATConfig
from tfspeed.compress.quantization.configs import (
                                                   SOFTMAX_RANGE,
                                                   DenseQuantizeConfig,
                                                   EmbeddingQuantizeConfig,
                                                   FloatQuantizeConfig,
                                                   OutputQuantizeConfig,
                                                   ZeroChannels,
)
from tfspeed.compress.quantization.outliers import (
                                                   OUTLIER_OUTPUTS,
                                                   OUTLIER_UNITS,
                                                   find_outlier_channels,
                                                   find_outlier_heads,
                                                   layer_norm_scales,
)
from tfspeed.compress.quantization.quantizers import RangeQuantizer, SparsityPreservingQuantizer
from tfspeed.compress.quantization.rewrites import (
                                                   smooth_layer_norms,
                                                   smoothed_layer_norms,
                                                   split_channels,
                                                   split_heads,
                                                   split_heads_of,
                                                   split_of,
                                                   split_units,
)
from tfspeed.compress.quantization.scheme import (
                                                   SUPPORTED_LAYERS,
                                                   custom_objects,
                                                   quantize_scope,
                                                   to_native,
                                                   unsupported_layers,
)
from tfspeed.compress.quantization.training import calibrate, is_quantized, qat_fit, quantize

__all__ = [
    "DenseQuantizeConfig",
    "Detection",
    "EmbeddingQuantizeConfig",
    "FloatQuantizeConfig",
    "OUTLIER_OUTPUTS",
    "OUTLIER_UNITS",
    "OutputQuantizeConfig",
    "QATConfig",
    "RangeQuantizer",
    "SOFTMAX_RANGE",
    "SUPPORTED_LAYERS",
    "SparsityPreservingQuantizer",
    "ZeroChannels",
    "calibrate",
    "custom_objects",
    "find_outlier_channels",
    "find_outlier_heads",
    "is_quantized",
    "layer_norm_scales",
    "qat_fit",
    "quantize",
    "quantize_scope",
    "smooth_layer_norms",
    "smoothed_layer_norms",
    "split_channels",
    "split_heads",
    "split_heads_of",
    "split_of",
    "split_units",
    "to_native",
    "unsupported_layers",
]
