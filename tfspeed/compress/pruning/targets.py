"""Which weights pruning targets: the kernel names of native tfspeed BERTs and the variable names of hub BERTs.

Native layers (and tfspeed TF-Hub exports, whose variables carry the same names): attention `layer_<i>_query`, `_key`,
`_value`, `_attention_output`, FFN `layer_<i>_intermediate`, `_output` and `pooler_dense` (with the first
factor `NAME_lowrank` of a factorised one, `tfspeed.compress.lowrank`); on request the
`word_embeddings` / `type_embeddings` tables and the `classifier`. Model Garden TF-Hub BERTs: the same kernels under
`transformer/layer_<i>/...` (3-D EinsumDense kernels) and `pooler_transform`.
"""

from __future__ import annotations

import re

import tensorflow_hub as hub
from tensorflow_model_optimization.python.core.sparsity.keras.pruning_wrapper import PruneLowMagnitude

from tfspeed.compat import keras
from tfspeed.models.bert import _unwrap

# Names of the targeted kernels. Native layers (and tfspeed TF-Hub exports, whose variables carry the same names):
_NATIVE_ENCODER = re.compile(r"(layer_\d+_(query|key|value|attention_output|intermediate|output)|pooler_dense)"
                             r"(_lowrank)?")
_NATIVE_EMBEDDINGS = ("word_embeddings", "type_embeddings")
_NATIVE_CLASSIFIER = ("classifier",)
# Model Garden TF-Hub BERT variables (3-D EinsumDense kernels):
_GARDEN_ENCODER = re.compile(r"transformer/layer_\d+/(self_attention/(query|key|value|attention_output)|intermediate|"
                             r"output)/kernel|pooler_transform/kernel")
_GARDEN_EMBEDDINGS = re.compile(r"(word_embeddings|type_embeddings)/embeddings")


def _is_hub_layer(layer) -> bool:
    return isinstance(layer, hub.KerasLayer)


def _variable_layer(name: str) -> str:
    """'layer_0_query/kernel:0' -> 'layer_0_query'; 'transformer/layer_0/intermediate/kernel:0' -> '...intermediate'."""
    return name.split(":")[0].rsplit("/", 1)[0]


def _hub_variable_targeted(name: str, include_embeddings: bool, layers) -> bool:
    name = name.split(":")[0]
    layer = _variable_layer(name)
    if layers is not None:
        return name.endswith(("/kernel", "/embeddings")) and (layer in layers or layer.split("/")[-1] in layers)
    if name.endswith("/kernel") and (_NATIVE_ENCODER.fullmatch(layer.split("/")[-1])
                                     or _GARDEN_ENCODER.fullmatch(name)):
        return True
    if include_embeddings and (layer.split("/")[-1] in _NATIVE_EMBEDDINGS and name.endswith("/embeddings")
                               or _GARDEN_EMBEDDINGS.fullmatch(name)):
        return True
    return False


def _hub_prunable_layer_names(layer) -> list:
    kernels = [v for v in layer.trainable_weights if v.name.split(":")[0].endswith("/kernel")]
    return sorted({_variable_layer(v.name) for v in kernels})


def _native_targeted(layer, include_embeddings: bool, include_classifier: bool) -> bool:
    """True for a native Dense / Embedding that `prune` wraps by default (with these options)."""
    name = layer.name
    return bool(isinstance(layer, keras.layers.Dense) and (_NATIVE_ENCODER.fullmatch(name)
                                                           or include_classifier and name in _NATIVE_CLASSIFIER)
                or include_embeddings and isinstance(layer, keras.layers.Embedding) and name in _NATIVE_EMBEDDINGS)


def _prunable_names(model) -> list:
    names = []
    for l in model.layers:
        l = _unwrap(l)
        if isinstance(l, (keras.layers.Dense, keras.layers.Embedding)):
            names.append(l.name)
        elif _is_hub_layer(l):
            names += [n.split("/")[-1] for n in _hub_prunable_layer_names(l)]
    return names


def _targets(model, include_embeddings: bool, include_classifier: bool, layers) -> tuple:
    """(names of native layers to wrap, names of hub layers to wrap)."""
    flat = [_unwrap(l) for l in model.layers]
    if any(isinstance(l, PruneLowMagnitude) for l in model.layers):
        raise ValueError(f"`model` {model.name!r} is already pruned (it has PruneLowMagnitude wrappers). Pass the "
                         "model you started from, or `strip(model)` first.")
    hub_layers = [l for l in flat if _is_hub_layer(l)]
    hub_names = {l.name for l in hub_layers}
    if layers is not None:
        if isinstance(layers, str):
            layers = [layers]
        layers = [str(n) for n in layers]
        known = {l.name for l in flat}
        inner = {n for h in hub_layers for n in _hub_prunable_layer_names(h)}
        inner |= {n.split("/")[-1] for n in inner}
        unknown = [n for n in layers if n not in known and n not in inner]
        if unknown:
            raise ValueError(f"Received an invalid value for `layers`: no layer named {unknown} in `model` "
                             f"{model.name!r}. Prunable layers: {_prunable_names(model)[:16]}...")
        native = [n for n in layers if n in known and n not in hub_names]
        for n in native:
            layer = next(l for l in flat if l.name == n)
            if not isinstance(layer, (keras.layers.Dense, keras.layers.Embedding)):
                raise ValueError(f"Received an invalid value for `layers`: {n!r} is a {layer.__class__.__name__}, "
                                 "which TFMOT cannot prune. Pass Dense / Embedding layer names.")
        hubs = [h.name for h in hub_layers if h.name in layers or any(n in inner and n not in known for n in layers)]
        return native, hubs
    native = [l.name for l in flat if _native_targeted(l, include_embeddings, include_classifier)]
    return native, [h.name for h in hub_layers]


def _pruned_layers(model):
    """The pruning wrappers of `model`, nested models included (a pruned student inside a `Distiller`)."""
    from tensorflow_model_optimization.python.core.sparsity.keras.pruning_wrapper import collect_prunable_layers

    return collect_prunable_layers(model)
