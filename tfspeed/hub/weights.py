"""Weight maps: checkpoints of other layouts turned into `{native layer name: [arrays in layer.weights order]}`.

Three layouts are read: Hugging Face BERT (`encoder.layer.5.intermediate.dense.weight`, Linear weights (out, in)),
Model Garden TF-Hub exports (`transformer/layer_0/self_attention/query/kernel`, 3-D EinsumDense kernels) and tfspeed's
own exports (`layer_0_query/kernel`).
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Optional

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
_HF_LEAF = {"gamma": "weight", "beta": "bias"}
_ORDER = {"kernel": 0, "weight": 0, "gamma": 0, "embeddings": 0, "bias": 1, "beta": 1}


def _collect(pairs) -> dict:
    """[(layer, slot, array)] -> {layer: [arrays by slot]}."""
    out = {}
    for layer, slot, value in pairs:
        out.setdefault(layer, {})[slot] = value
    return {layer: [slots[i] for i in sorted(slots)] for layer, slots in out.items()}


def from_huggingface(tensors: dict, unused: Optional[list] = None) -> dict:
    """Hugging Face BERT tensors (safetensors) -> native weight map.

    Reads `BertModel` names (`encoder.layer.0.attention.self.query.weight`) and the same names under the `bert.`
    prefix of task models (`BertForSequenceClassification`, `BertForMaskedLM`, ...); LayerNorm `gamma`/`beta` (old
    TF-converted checkpoints) are read as `weight`/`bias`. Linear weights (out, in) are transposed to Keras kernels
    (in, out). Task heads (`classifier.*`, `cls.*`) and `position_ids` buffers are not part of the encoder: their
    names are appended to `unused` when a list is given. Defaults to `unused=None`.
    """
    pairs = []
    for name, value in tensors.items():
        key = name[5:] if name.startswith("bert.") else name
        if key.endswith("position_ids") or "." not in key:
            _note(unused, name)
            continue
        base, leaf = key.rsplit(".", 1)
        leaf = _HF_LEAF.get(leaf, leaf)
        m = re.fullmatch(r"encoder\.layer\.(\d+)\.(.+)", base)
        if m and m.group(2) in _HF_LAYER:
            layer = f"layer_{m.group(1)}_{_HF_LAYER[m.group(2)]}"
        elif base in _HF_TOP:
            layer = _HF_TOP[base]
        else:
            _note(unused, name)
            continue
        if leaf not in ("weight", "bias"):
            _note(unused, name)
            continue
        value = np.asarray(value)
        is_linear = leaf == "weight" and value.ndim == 2 and not base.startswith("embeddings.")
        slot = 0 if leaf == "weight" else 1
        pairs.append((layer, slot, np.ascontiguousarray(value.T) if is_linear else value))
    return _collect(pairs)


def _note(unused, name):
    if unused is not None:
        unused.append(name)


def to_huggingface(weight_map: dict, prefix: str = "") -> dict:
    """Native weight map -> Hugging Face BERT tensors (the reverse of `from_huggingface`), float32, contiguous.

    Args:
        weight_map: `{native layer name: [arrays]}` of a plain BERT (no low-rank factors, no classifier).
        prefix: put before every name: `"bert."` for task models such as `BertForSequenceClassification`.
            Defaults to `""` (a `BertModel`).
    """
    top = {v: k for k, v in _HF_TOP.items()}
    per_layer = {v: k for k, v in _HF_LAYER.items()}
    out = {}
    for layer, values in weight_map.items():
        m = re.fullmatch(r"layer_(\d+)_(.+)", layer)
        if layer in top:
            base = top[layer]
        elif m and m.group(2) in per_layer:
            base = f"encoder.layer.{m.group(1)}.{per_layer[m.group(2)]}"
        else:
            raise ValueError(f"Expected the layers of a plain BERT encoder in `weight_map`. Received: a layer "
                             f"{layer!r}, which a Hugging Face BertModel does not have.")
        for leaf, value in zip(("weight", "bias"), values):
            value = np.asarray(value, dtype=np.float32)
            is_linear = leaf == "weight" and value.ndim == 2 and not base.startswith("embeddings.")
            out[f"{prefix}{base}.{leaf}"] = np.ascontiguousarray(value.T if is_linear else value)
    return out


# Hugging Face `hidden_act` -> tfspeed activation: its tanh approximations of GELU are tfspeed's "gelu_approximate".
_HF_ACTIVATIONS = {"gelu": "gelu", "relu": "relu", "gelu_new": "gelu_approximate",
                   "gelu_pytorch_tanh": "gelu_approximate", "gelu_fast": "gelu_approximate"}
_HF_REQUIRED = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                "max_position_embeddings", "type_vocab_size")


def hf_config(hf: dict, source: str = "config.json") -> BertConfig:
    """A `BertConfig` from a Hugging Face BERT `config.json` dict.

    Maps the sizes, `hidden_act` ("gelu", "relu"; the tanh approximations "gelu_new" / "gelu_pytorch_tanh" /
    "gelu_fast" become "gelu_approximate"), `layer_norm_eps`, `max_position_embeddings`,
    `type_vocab_size` and the dropout rates. Refuses what a tfspeed BERT cannot compute: other activations, relative
    position embeddings, decoders.

    Args:
        hf: the parsed `config.json`.
        source: where `hf` was read, for error messages. Defaults to `"config.json"`.
    """
    missing = [k for k in _HF_REQUIRED if not isinstance(hf.get(k), int)]
    if missing:
        raise ValueError(f"Expected a BERT config with the integer fields {list(_HF_REQUIRED)} in {source}. "
                         f"Received: {missing} missing or not integers (fields found: {sorted(hf)}).")
    act = hf.get("hidden_act", "gelu")
    if not isinstance(act, str) or act not in _HF_ACTIVATIONS:
        raise ValueError(f"Expected `hidden_act` to be one of {sorted(_HF_ACTIVATIONS)} in {source} (a tfspeed BERT "
                         f"computes GELU, its tanh approximation or ReLU). Received: hidden_act={act!r}.")
    position = hf.get("position_embedding_type", "absolute")
    if position not in (None, "absolute"):
        raise ValueError(f"Expected position_embedding_type='absolute' in {source} (tfspeed BERTs learn absolute "
                         f"positions). Received: position_embedding_type={position!r}.")
    if hf.get("is_decoder") or hf.get("add_cross_attention"):
        raise ValueError(f"Expected a BERT encoder in {source}. Received: is_decoder={hf.get('is_decoder')!r}, "
                         f"add_cross_attention={hf.get('add_cross_attention')!r} (a decoder, which tfspeed does not "
                         "compute).")
    if hf["hidden_size"] % hf["num_attention_heads"]:
        raise ValueError(f"Expected `hidden_size` divisible by `num_attention_heads` in {source}. Received: "
                         f"hidden_size={hf['hidden_size']}, num_attention_heads={hf['num_attention_heads']}.")
    return BertConfig(vocab_size=hf["vocab_size"], hidden_size=hf["hidden_size"], num_layers=hf["num_hidden_layers"],
                      num_heads=hf["num_attention_heads"], intermediate_size=hf["intermediate_size"],
                      max_positions=hf["max_position_embeddings"], type_vocab_size=hf["type_vocab_size"],
                      dropout=float(hf.get("hidden_dropout_prob", 0.1)),
                      attention_dropout=float(hf.get("attention_probs_dropout_prob", 0.1)),
                      activation=_HF_ACTIVATIONS[act], layer_norm_epsilon=float(hf.get("layer_norm_eps", 1e-12)))


def to_hf_config(config: BertConfig) -> dict:
    """The Hugging Face `config.json` fields of a `BertConfig` (the reverse of `hf_config`); refuses shapes a
    Hugging Face `BertConfig` cannot state (per-layer sizes, heads narrower than hidden_size / num_heads, low-rank
    factors)."""
    c = config
    if not c.is_uniform:
        raise ValueError("Expected the same number of heads and FFN units in every layer: a Hugging Face BertConfig "
                         "has one `num_attention_heads` and one `intermediate_size` for all layers. Received: "
                         f"layer_num_heads={list(c.layer_num_heads)}, "
                         f"layer_intermediate_sizes={list(c.layer_intermediate_sizes)} (structured pruning with "
                         "per-layer choices). Prune with the same heads/units in every layer to export.")
    if c.num_heads * c.head_size != c.hidden_size:
        raise ValueError(f"Expected num_heads * head_size == hidden_size: Hugging Face BERT derives the head width "
                         f"as hidden_size / num_attention_heads. Received: num_heads={c.num_heads}, head_size="
                         f"{c.head_size}, hidden_size={c.hidden_size} (heads removed by structured pruning).")
    if c.ranks:
        raise ValueError(f"Expected no low-rank factorised layers: a Hugging Face BERT has one Linear per projection. "
                         f"Received: ranks={dict(c.ranks)}.")
    return {"model_type": "bert", "vocab_size": c.vocab_size, "hidden_size": c.hidden_size,
            "num_hidden_layers": c.num_layers, "num_attention_heads": c.num_heads,
            "intermediate_size": c.intermediate_size,
            "hidden_act": "gelu_new" if c.activation == "gelu_approximate" else c.activation,
            "hidden_dropout_prob": c.dropout, "attention_probs_dropout_prob": c.attention_dropout,
            "max_position_embeddings": c.max_positions, "type_vocab_size": c.type_vocab_size,
            "initializer_range": 0.02, "layer_norm_eps": c.layer_norm_epsilon, "pad_token_id": 0,
            "position_embedding_type": "absolute", "torch_dtype": "float32"}


@dataclasses.dataclass
class Checkpoint:
    """A BERT read from another format, ready to build: what every foreign-format reader returns.

    Args:
        config: the architecture.
        weight_map: `{native layer name: [arrays in layer.weights order]}` of the encoder.
        vocab_path: the WordPiece vocabulary file.
        lower_case: whether its tokenizer lower-cases (and strips accents). Defaults to `True`.
        classifier: `[kernel (hidden, labels), bias (labels)]` of a sequence-classification head, or `None`.
            Defaults to `None`.
        label_names: the head's label names in index order, or `None` when it has none (or only `LABEL_<i>`).
            Defaults to `None`.
        classifier_dropout: the head's dropout rate, when the checkpoint states one. Defaults to `None`.
        notes: what the reader filled in or left out (a missing pooler, an ignored head). Defaults to `[]`.
    """

    config: BertConfig
    weight_map: dict
    vocab_path: Path
    lower_case: bool = True
    classifier: Optional[list] = None
    label_names: Optional[list] = None
    classifier_dropout: Optional[float] = None
    notes: list = dataclasses.field(default_factory=list)


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
