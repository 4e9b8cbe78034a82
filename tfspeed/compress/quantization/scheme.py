"""Where fake quantization goes in a tfspeed BERT, and what a QAT model needs to load.

- `unsupported_layers` / `SUPPORTED_LAYERS`: the layer classes QAT handles; `to_native` turns a `hub.KerasLayer`
  classifier into a native one first,
- the annotator (which QuantizeConfig each layer gets) and the TFMOT scheme `quantize` applies (TFMOT's default
  8-bit scheme, or its prune-preserving one, without the FakeQuant TFMOT puts after the int32 token inputs),
- `custom_objects()` / `quantize_scope()`: TFMOT's classes, the tfspeed layers and the tfspeed QuantizeConfigs.
"""

from __future__ import annotations

import re

import tensorflow_model_optimization as tfmot  # noqa: E402  (after tfspeed.compat)

from tfspeed import registry
from tfspeed.compat import keras  # sets TF_USE_LEGACY_KERAS before TFMOT imports TensorFlow
from tfspeed.compress.quantization.configs import (
    SOFTMAX_RANGE,
    DenseQuantizeConfig,
    EmbeddingQuantizeConfig,
    FloatQuantizeConfig,
    OutputQuantizeConfig,
)
from tfspeed.models import layers as L
from tfspeed.models.bert import build_classifier, config_of, copy_weights, is_bert

__all__ = ["SUPPORTED_LAYERS", "custom_objects", "quantize_scope", "to_native", "unsupported_layers"]

_qk = tfmot.quantization.keras

# Layers a tfspeed BERT classifier is made of, and what QAT does with each.
_OUTPUT_QUANTIZED = (keras.layers.LayerNormalization, L.QueryKeyProduct, L.MaskedSoftmax, L.AttentionContext,
                     L.FirstToken)
# The residual stream (embedding sum, residual Adds, LayerNorm inputs) stays float: BERT residuals carry a few outlier
# dimensions in the hundreds, so one per-tensor int8 range there has a step of ~1 for values that are mostly ~1, and
# TFLite then also computes the LayerNorm MEAN in int8 (rounded to that step), which the Keras fake-quant graph does
# not do: measured on MiniLM, Keras-vs-.tflite argmax agreement 0.893 with the Adds quantized.
_LEFT_FLOAT = (keras.layers.InputLayer, L.PositionEmbedding, L.AttentionMask, keras.layers.Dropout, keras.layers.Add,
               L.ChannelScale, keras.layers.Concatenate)
SUPPORTED_LAYERS = (keras.layers.Dense, keras.layers.Embedding) + _OUTPUT_QUANTIZED + _LEFT_FLOAT
"""The layer classes `quantize` handles; any other layer is refused with the list of offenders."""


def custom_objects() -> dict:
    """Everything a QAT tfspeed model needs to load: `tfspeed.registry.custom_objects()` (TFMOT's quantization classes,
    the tfspeed layers, quantizers and QuantizeConfigs, registered when this package is imported)."""
    return registry.custom_objects()


def quantize_scope():
    """A scope in which a QAT tfspeed model loads: `with quantize_scope(): keras.models.load_model(path)`.

    For model directories, `tfspeed.artifacts.load_model_dir(path, scope=custom_objects())` does the same.
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


def _annotator(preserve_sparsity: bool, quantize_embeddings: bool = True, float_outputs=()):
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
        from tensorflow_model_optimization.python.core.quantization.keras.graph_transformations import model_transformer

        return model_transformer.ModelTransformer(model, [], set(layer_quantize_map), layer_quantize_map).transform()


def _scheme(preserve_sparsity: bool):
    if preserve_sparsity:
        from tensorflow_model_optimization.python.core.quantization.keras.collab_opts.prune_preserve import (
            default_8bit_prune_preserve_quantize_scheme as pp,
        )

        base = pp.Default8BitPrunePreserveQuantizeScheme
    else:
        base = _qk.default_8bit.Default8BitQuantizeScheme

    class Scheme(base):
        def get_layout_transformer(self):
            return _NoLayoutTransform()

    return Scheme()

