"""The QAT verbs: `quantize` (a fake-quantized copy of a float BERT), `calibrate` (its activation ranges from real
data) and `qat_fit` (rewrites, quantize, calibrate and fine-tune in one call, set by a `QATConfig`)."""

from __future__ import annotations

import numpy as np
import tensorflow_model_optimization as tfmot  # noqa: E402  (after tfspeed.compat)

from tfspeed.compat import keras, tf  # sets TF_USE_LEGACY_KERAS before TFMOT imports TensorFlow
from tfspeed.compress.distillation import fit_student
from tfspeed.compress.quantization.config import Detection, QATConfig, check_bool, check_float_outputs, check_percentile
from tfspeed.compress.quantization.outliers import (
    _UNIT_OUTPUTS,
    OUTLIER_OUTPUTS,
    OUTLIER_UNITS,
    find_outlier_channels,
    find_outlier_heads,
    layer_norm_scales,
)
from tfspeed.compress.quantization.quantizers import RangeQuantizer
from tfspeed.compress.quantization.rewrites import smooth_layer_norms, split_channels, split_heads, split_units
from tfspeed.compress.quantization.scheme import (
    _annotator,
    _check_model,
    _hub_layers,
    _scheme,
    quantize_scope,
    to_native,
)
from tfspeed.config import check_positive_int
from tfspeed.train import fit_classifier

__all__ = ["calibrate", "is_quantized", "qat_fit", "quantize"]

_qk = tfmot.quantization.keras


def quantize(model: keras.Model, preserve_sparsity: bool = False, float_outputs=(),
             outlier_channels=None, outlier_units=None, layer_norm_scales=None, outlier_heads=None) -> keras.Model:
    """A quantization-aware copy of a tfspeed BERT classifier (the caller's model is not changed).

    Every Dense is fake-quantized with TFMOT's default 8-bit config; the outputs of LayerNormalization, attention
    scores, softmax, attention context and the [CLS] slice get `OutputQuantizeConfig`. Token and mask inputs stay int32
    and unquantized. Call it inside `strategy.scope()` to fit under a `tf.distribute` strategy.

    Args:
        model: a native tfspeed BERT classifier (`tfspeed.models.build_classifier`,
            `tfspeed.hub.build_classifier_from`), or a classifier on a `hub.KerasLayer` encoder, which is first
            imported into the native encoder.
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
    check_bool("preserve_sparsity", preserve_sparsity)
    float_outputs = check_float_outputs(float_outputs)
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
        annotate = _annotator(preserve_sparsity, True, float_outputs)
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
    check_positive_int("num_batches", num_batches)
    percentile = check_percentile("percentile", percentile)
    if not hasattr(data, "batch_indices"):
        raise ValueError(f"Expected an `EncodedSplit` for `data`. Received: {type(data).__name__}")
    quantizers = _range_quantizers(qat_model)
    if not quantizers:
        raise ValueError("`qat_model` has no tfspeed activation quantizers: pass a model made by "
                         "`tfspeed.compress.quantization.quantize`.")
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
                q.calibration_percentile = percentile
            x, _ = data.batch(idx)
            qat_model(x, training=True)
    finally:
        for q, decay in zip(quantizers, decays):
            q.ema_decay = 1.0 if freeze else decay
            q.calibration_percentile = None
        for l, rate in zip(dropouts, rates):
            getattr(l, "layer", l).rate = rate
    return len(batches)


def qat_fit(model: keras.Model, train, validation=None, config=None, *, strategy=None, callbacks=(), verbose="auto",
            **overrides):
    """Quantizes `model` and fine-tunes the QAT copy with `fit`; returns `(qat_model, history)`.

    With `smooth="auto"` the LayerNorm outlier channels, the FFN intermediate outlier units and the attention heads
    with outlier scores are found on `train` and rewritten first (`smooth_layer_norms`, `split_units`, `split_heads`),
    then with `outlier_channels="auto"` the FFN output channels (`split_channels`); the copy is made by `quantize`
    inside `strategy.scope()`, so its variables (fake-quant ranges included) are distributed; its activation ranges
    are calibrated on `calibration_batches` training batches (`calibrate`), then it is fitted, through a `Distiller`
    from the float `model` when `distill` is on. The caller's model is not changed.

    Args:
        model: a tfspeed BERT classifier, float (see `quantize`).
        train: an `EncodedSplit` to fit on.
        validation: an `EncodedSplit` evaluated after each epoch. Defaults to `None`.
        config: a `QATConfig` (or its dict). Defaults to `None`: `QATConfig()` (`epochs` `1`, `batch_size` `32`,
            `learning_rate` `2e-5`, `distill` `True`, `preserve_sparsity` `False`, `float_outputs` `()`,
            `outlier_channels` and `smooth` `"auto"`, `calibration_batches` `8`, `calibration_percentile` `99.99`,
            `freeze_ranges` `True`; see `QATConfig`).
        strategy: a `tf.distribute.Strategy`. Defaults to the current (default) strategy.
        callbacks: Keras callbacks for `fit`. Defaults to `()`.
        verbose: Keras verbosity. Defaults to `"auto"`.
        **overrides: `QATConfig` settings replacing those of `config` (e.g. `epochs=2, smooth=None`).
            `outlier_channels` may also be a dict `{Dense name: [channels]}` found beforehand
            (`find_outlier_channels`): those are split, none are searched.

    Example:

    ```python
    qat_model, history = qat_fit(classifier, encoded.train, epochs=1, learning_rate=2e-5)
    ```
    """
    channels = overrides.get("outlier_channels")
    if isinstance(channels, dict):  # given, not searched: the config keeps settings, the dict is data
        overrides["outlier_channels"] = Detection.NONE
    else:
        channels = None
    config = QATConfig.resolve(config, **overrides)
    batch_size = config.batch_size
    strategy = strategy or tf.distribute.get_strategy()
    with strategy.scope():
        model = to_native(model) if _hub_layers(model) else model
        _check_model(model)
        teacher = model  # the float model, before the rewrites below
        if config.smooth == Detection.AUTO:  # on the float model first: the outlier channels are then found on the rest
            scales = layer_norm_scales(model, train, batch_size=batch_size)
            model = smooth_layer_norms(model, scales) if scales else model
            units = find_outlier_channels(model, train, OUTLIER_UNITS, batch_size=batch_size)
            model = split_units(model, units) if units else model
            heads = find_outlier_heads(model, train, batch_size=batch_size)
            model = split_heads(model, heads) if heads else model
        if config.outlier_channels == Detection.AUTO:
            # the split-off units' own output projection carries the big channels too: split it the same way
            channels = find_outlier_channels(model, train, OUTLIER_OUTPUTS + _UNIT_OUTPUTS, batch_size=batch_size)
        qat_model = quantize(model, preserve_sparsity=config.preserve_sparsity, float_outputs=config.float_outputs,
                             outlier_channels=channels)
        if config.calibration_batches:
            calibrate(qat_model, train, num_batches=config.calibration_batches, batch_size=batch_size,
                      percentile=config.calibration_percentile, freeze=config.freeze_ranges)
        fit = dict(epochs=config.epochs, batch_size=batch_size, learning_rate=config.learning_rate,
                   callbacks=callbacks, verbose=verbose)
        if config.distill:
            history = fit_student(qat_model, teacher, train, validation, **fit)
        else:
            history = fit_classifier(qat_model, train, validation, **fit)
    return qat_model, history


def is_quantized(model) -> bool:
    """Whether `model` is a QAT model (has TFMOT quantize wrappers)."""
    from tensorflow_model_optimization.python.core.quantization.keras.quantize_wrapper import QuantizeWrapper

    return any(isinstance(l, QuantizeWrapper) for l in getattr(model, "layers", []))
