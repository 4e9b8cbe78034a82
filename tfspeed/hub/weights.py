"""Weight maps: checkpoints of other layouts turned into `{native layer name: [arrays in layer.weights order]}`.

Three layouts are read: Hugging Face BERT (`encoder.layer.5.intermediate.dense.weight`, Linear weights (out, in)),
Model Garden TF-Hub exports (`transformer/layer_0/self_attention/query/kernel`, 3-D EinsumDense kernels) and tfspeed's
own exports (`layer_0_query/kernel`).
"""

from __future__ import annotations

import re

import numpy as np

from tfspeed.compat import keras
from tfspeed.models.bert import _unwrap
from tfspeed.models.config import BertConfig

_HF_LAYER = {
    "attention.self.query": "query", "attention.self.key": "key", "attention.self.value": "value",
    "attention.output.dense": "attention_output", "attention.output.LayerNorm": "attention_layer_norm",
    "intermediate.dense": "intermediate", "output.dense": "output", "output.LayerNorm": "output_layer_norm",
}
_HF_TOP = {"embeddings.word_embeddings": "word_embeddings", "embeddings.position_embeddings": "position_embedding",
           "embeddings.token_type_embeddings": "type_embeddings", "embeddings.LayerNorm": "embeddings_layer_norm",
           "pooler.dense": "pooler_dense"}
_ORDER = {"kernel": 0, "weight": 0, "gamma": 0, "embeddings": 0, "bias": 1, "beta": 1}


def _collect(pairs) -> dict:
    """[(layer, slot, array)] -> {layer: [arrays by slot]}."""
    out = {}
    for layer, slot, value in pairs:
        out.setdefault(layer, {})[slot] = value
    return {layer: [slots[i] for i in sorted(slots)] for layer, slots in out.items()}


def from_huggingface(tensors: dict) -> dict:
    """Hugging Face `BertModel` tensors (safetensors) -> native weight map."""
    pairs = []
    for name, value in tensors.items():
        name = name[5:] if name.startswith("bert.") else name
        if name.endswith("position_ids"):
            continue
        base, leaf = name.rsplit(".", 1)
        m = re.fullmatch(r"encoder\.layer\.(\d+)\.(.+)", base)
        if m and m.group(2) in _HF_LAYER:
            layer = f"layer_{m.group(1)}_{_HF_LAYER[m.group(2)]}"
        elif base in _HF_TOP:
            layer = _HF_TOP[base]
        else:
            continue
        is_linear = leaf == "weight" and value.ndim == 2 and not base.startswith("embeddings.")
        slot = 0 if leaf == "weight" else 1
        pairs.append((layer, slot, np.ascontiguousarray(value.T) if is_linear else value))
    return _collect(pairs)


def hf_config(hf: dict) -> BertConfig:
    """A `BertConfig` from a Hugging Face `config.json` dict."""
    return BertConfig(vocab_size=hf["vocab_size"], hidden_size=hf["hidden_size"], num_layers=hf["num_hidden_layers"],
                      num_heads=hf["num_attention_heads"], intermediate_size=hf["intermediate_size"],
                      max_positions=hf["max_position_embeddings"], type_vocab_size=hf["type_vocab_size"],
                      dropout=hf.get("hidden_dropout_prob", 0.1),
                      attention_dropout=hf.get("attention_probs_dropout_prob", 0.1),
                      activation="gelu" if hf.get("hidden_act", "gelu") == "gelu" else hf["hidden_act"],
                      layer_norm_epsilon=hf.get("layer_norm_eps", 1e-12))


_GARDEN = [
    (r"word_embeddings/embeddings", "word_embeddings"),
    (r"position_embedding/embeddings", "position_embedding"),
    (r"type_embeddings/embeddings", "type_embeddings"),
    (r"embeddings/layer_norm/(gamma|beta)", "embeddings_layer_norm"),
    (r"transformer/layer_(\d+)/self_attention/(query|key|value)/(kernel|bias)", "layer_{0}_{1}"),
    (r"transformer/layer_(\d+)/self_attention/attention_output/(kernel|bias)", "layer_{0}_attention_output"),
    (r"transformer/layer_(\d+)/self_attention_layer_norm/(gamma|beta)", "layer_{0}_attention_layer_norm"),
    (r"transformer/layer_(\d+)/intermediate/(kernel|bias)", "layer_{0}_intermediate"),
    (r"transformer/layer_(\d+)/output/(kernel|bias)", "layer_{0}_output"),
    (r"transformer/layer_(\d+)/output_layer_norm/(gamma|beta)", "layer_{0}_output_layer_norm"),
    (r"pooler_transform/(kernel|bias)", "pooler_dense"),
]


def is_model_garden(names) -> bool:
    return any(n.startswith("transformer/layer_0/self_attention/") for n in names)


def from_model_garden(variables: dict) -> dict:
    """Model Garden BERT encoder variables -> native weight map (3-D EinsumDense kernels and 2-D biases reshaped)."""
    pairs = []
    for name, value in variables.items():
        for pattern, target in _GARDEN:
            m = re.fullmatch(pattern, name)
            if not m:
                continue
            groups = m.groups()
            leaf = name.rsplit("/", 1)[1]
            layer = target.format(*groups)
            if layer.endswith("attention_output") and leaf == "kernel":
                value = value.reshape(-1, value.shape[-1])  # [heads, head_size, hidden] -> [heads*head_size, hidden]
            elif value.ndim == 3:
                value = value.reshape(value.shape[0], -1)  # [hidden, heads, head_size] -> [hidden, heads*head_size]
            elif value.ndim == 2 and leaf == "bias":
                value = value.reshape(-1)
            pairs.append((layer, _ORDER[leaf], value))
            break
    return _collect(pairs)


def garden_config(variables: dict) -> BertConfig:
    v = variables
    num_layers = len({n.split("/")[1] for n in v if n.startswith("transformer/layer_")})
    q = v["transformer/layer_0/self_attention/query/kernel"]
    return BertConfig(vocab_size=v["word_embeddings/embeddings"].shape[0], hidden_size=q.shape[0],
                      num_layers=num_layers, num_heads=q.shape[1], head_size=q.shape[2],
                      intermediate_size=v["transformer/layer_0/intermediate/kernel"].shape[1],
                      max_positions=v["position_embedding/embeddings"].shape[0],
                      type_vocab_size=v["type_embeddings/embeddings"].shape[0])


def from_native_variables(variables: dict) -> dict:
    """tfspeed export variables (`layer_0_query/kernel`) -> native weight map."""
    pairs = []
    for name, value in variables.items():
        if "/" not in name:
            continue
        layer, leaf = name.rsplit("/", 1)
        layer = layer.split("/")[-1]
        if leaf in _ORDER:
            pairs.append((layer, _ORDER[leaf], value))
    return _collect(pairs)


def assign(model: keras.Model, weight_map: dict) -> None:
    """Sets every weighted layer of `model` from `weight_map`; a missing layer or a shape mismatch is an error."""
    for layer in model.layers:
        layer = _unwrap(layer)
        if not layer.weights:
            continue
        if layer.name not in weight_map:
            if layer.name.startswith("classifier"):
                continue
            raise ValueError(f"The checkpoint has no weights for layer {layer.name!r}. "
                             f"Received weights for: {sorted(weight_map)[:8]}...")
        values = weight_map[layer.name]
        expected = [tuple(w.shape) for w in layer.weights]
        received = [tuple(v.shape) for v in values]
        if expected != received:
            raise ValueError(f"Shape mismatch for layer {layer.name!r}: expected {expected}, received {received}.")
        layer.set_weights(values)
