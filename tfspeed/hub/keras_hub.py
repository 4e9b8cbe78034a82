"""keras-hub (Keras 3) BERTs in and out: `BertBackbone` / `BertTextClassifier` <-> tfspeed's native tf_keras BERT.

TFMOT cannot touch Keras 3 models, so a keras-hub BERT is rebuilt as tfspeed's native model (same weights, same
outputs) before it is compressed, and a compressed native model is rebuilt as a keras-hub BERT afterwards:

- `from_keras_hub(model)`: a `keras_hub.models.BertBackbone` -> native encoder, a `BertTextClassifier` -> native
  classifier (its `logits` Dense becomes the native `classifier`).
- `encoder_from_preset_dir(path)`: the same from a keras-hub preset directory on disk (`save_to_preset`), with the
  tokenizer's vocabulary and lowercasing.
- `to_keras_hub(model)` and `save_preset(model, path)`: the way back, for models keras-hub can express (the same
  number of heads and FFN units in every layer, no low-rank factorisation).

Inputs are renamed on the way: keras-hub's `token_ids` / `padding_mask` / `segment_ids` are tfspeed's
`input_word_ids` / `input_mask` / `input_type_ids` (`INPUT_NAMES`). keras-hub is imported only when one of these
functions runs (`pip install "tfspeed[keras-hub]"`); Keras 3 runs beside tf_keras in the same process.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from pathlib import Path
from typing import NamedTuple, Optional

import numpy as np

from tfspeed import _io
from tfspeed.compat import keras
from tfspeed.hub.weights import assign
from tfspeed.models.bert import (
    build_classifier,
    build_encoder,
    check_plain_bert,
    config_of,
    layer_by_name,
)
from tfspeed.models.config import BertConfig

INPUT_NAMES = {"token_ids": "input_word_ids", "padding_mask": "input_mask", "segment_ids": "input_type_ids"}
"""keras-hub input name -> tfspeed input name."""

_APPROXIMATE_GELU = "gelu_approximate"
_LAYER_NORM_EPSILON = 1e-12  # what keras-hub's BertBackbone hard-codes
_VOCABULARY = Path("assets") / "tokenizer" / "vocabulary.txt"

# keras-hub weight path (its tail) -> (native layer name, index in that layer's weights). Arrays are reshaped to the
# target's shape both ways: keras-hub's attention kernels are 3-D EinsumDense kernels ([hidden, heads, head_size],
# output [heads, head_size, hidden]) with 2-D biases, tfspeed's are 2-D Dense kernels with 1-D biases, and the
# row-major reshape between them is exact in both directions.
_WEIGHTS = [
    (r"token_embedding/embeddings", "word_embeddings"),
    (r"position_embedding/embeddings", "position_embedding"),
    (r"segment_embedding/embeddings", "type_embeddings"),
    (r"embeddings_layer_norm/(gamma|beta)", "embeddings_layer_norm"),
    (r"transformer_layer_(\d+)/self_attention_layer/(query|key|value|attention_output)/(kernel|bias)", "layer_{0}_{1}"),
    (r"transformer_layer_(\d+)/self_attention_layer_norm/(gamma|beta)", "layer_{0}_attention_layer_norm"),
    (r"transformer_layer_(\d+)/feedforward_intermediate_dense/(kernel|bias)", "layer_{0}_intermediate"),
    (r"transformer_layer_(\d+)/feedforward_output_dense/(kernel|bias)", "layer_{0}_output"),
    (r"transformer_layer_(\d+)/feedforward_layer_norm/(gamma|beta)", "layer_{0}_output_layer_norm"),
    (r"pooled_dense/(kernel|bias)", "pooler_dense"),
    (r"logits/(kernel|bias)", "classifier"),
]
_SLOT = {"kernel": 0, "gamma": 0, "embeddings": 0, "bias": 1, "beta": 1}


class KerasHubPreset(NamedTuple):
    """What `encoder_from_preset_dir` reads: the native model, the tokenizer's vocabulary file, whether it lowercases,
    and the label names (keras-hub presets record none: always None)."""

    model: keras.Model
    vocab_path: Path
    lower_case: bool
    label_names: Optional[list]


def _keras_hub():
    """Imports keras-hub (Keras 3, TensorFlow backend unless `KERAS_BACKEND` says otherwise)."""
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    try:
        import keras_hub
    except ImportError as e:
        raise ImportError('Converting keras-hub models needs keras-hub: `pip install "tfspeed[keras-hub]"`. '
                          f"Received: {e}") from e
    return keras_hub


def _native_gelu() -> str:
    """The native activation for keras-hub's GELU (the tanh approximation): `"gelu_approximate"` where tfspeed's
    `BertConfig` computes it, else exact `"gelu"` (activations then differ by at most 4.7e-4, at |x| near 2)."""
    try:
        BertConfig(vocab_size=1, hidden_size=1, num_layers=1, num_heads=1, intermediate_size=1,
                   activation=_APPROXIMATE_GELU)
    except ValueError:
        return "gelu"
    return _APPROXIMATE_GELU


def _describe(model) -> str:
    if isinstance(model, keras.Model):
        return f"a tf_keras model {model.name!r} (already Keras 2: pass it to tfspeed as it is if it is a tfspeed BERT)"
    return f"{type(model).__module__}.{type(model).__name__}" + (f" {model.name!r}" if hasattr(model, "name") else "")


def _native_name(path: str):
    """(native layer, slot) for a keras-hub weight path, or None."""
    for pattern, target in _WEIGHTS:
        m = re.search(rf"(?:^|/){pattern}$", path)
        if m:
            groups = [g for g in m.groups() if g not in _SLOT]
            return target.format(*groups), _SLOT[path.rsplit("/", 1)[1]]
    return None


def _pairs(kh_model):
    """[(keras-hub variable, native layer, slot)] for every weight of a keras-hub BERT; refuses unknown weights."""
    out = []
    for variable in kh_model.weights:
        found = _native_name(variable.path)
        if found is None:
            raise ValueError(f"Expected the weights of a keras-hub BertBackbone / BertTextClassifier in `model`. "
                             f"Received: a weight {variable.path!r}, which a keras-hub BERT does not have.")
        out.append((variable, *found))
    return out


def _config_from_backbone(backbone) -> BertConfig:
    c = backbone.get_config()
    position_table = backbone.get_layer("position_embedding").weights[0]
    return BertConfig(vocab_size=int(c["vocabulary_size"]), hidden_size=int(c["hidden_dim"]),
                      num_layers=int(c["num_layers"]), num_heads=int(c["num_heads"]),
                      intermediate_size=int(c["intermediate_dim"]), max_positions=int(position_table.shape[0]),
                      type_vocab_size=int(c["num_segments"]), dropout=float(c["dropout"]),
                      attention_dropout=float(c["dropout"]), activation=_native_gelu(),
                      layer_norm_epsilon=_LAYER_NORM_EPSILON)


def from_keras_hub(model, seq_length: Optional[int] = None) -> keras.Model:
    """A native tfspeed BERT with the weights of a keras-hub BERT, computing the same outputs.

    A `keras_hub.models.BertBackbone` becomes a native encoder (`sequence_output`, `pooled_output`, plus the TF-Hub
    `encoder_outputs` / `default`); a `BertTextClassifier` becomes a native classifier: its backbone, its dropout on
    the pooled output and its `logits` Dense (renamed `classifier`). The native classifier returns logits: a keras-hub
    classifier built with `activation="softmax"` returns the softmax of them. Config mapped: `vocabulary_size`,
    `num_layers`, `num_heads`, `hidden_dim`, `intermediate_dim`, `dropout` (also the attention dropout),
    `max_sequence_length`, `num_segments`; layer-norm epsilon 1e-12 and GELU as keras-hub computes them (its tanh
    approximation, where tfspeed's `BertConfig` has `"gelu_approximate"`; else exact GELU, with a warning).

    Args:
        model: a `keras_hub.models.BertBackbone` or `keras_hub.models.BertTextClassifier` (Keras 3).
        seq_length: fixed sequence length of the native model's inputs. Defaults to `None` (any length).

    Example:

    ```python
    backbone = keras_hub.models.BertBackbone.from_preset("bert_tiny_en_uncased")
    encoder = tfspeed.hub.keras_hub.from_keras_hub(backbone)
    encoder({"input_word_ids": ids, "input_mask": mask, "input_type_ids": segments})["sequence_output"]
    ```
    """
    kh = _keras_hub()
    if isinstance(model, kh.models.BertTextClassifier):
        backbone = model.backbone
    elif isinstance(model, kh.models.BertBackbone):
        backbone = model
    else:
        raise ValueError("Expected a keras_hub.models.BertBackbone or keras_hub.models.BertTextClassifier for `model` "
                         "(tfspeed computes BERT; other keras-hub architectures such as DistilBERT or RoBERTa are not "
                         f"converted). Received: {_describe(model)}.")
    if model is not backbone:
        activation = _activation_name(model.activation)
        if activation not in ("linear", "softmax"):
            raise ValueError("Expected a BertTextClassifier with activation None (logits) or 'softmax' for `model`: "
                             f"a tfspeed classifier gives logits. Received: activation={activation!r}.")
        if int(model.num_classes) < 2:
            raise ValueError("Expected a BertTextClassifier with `num_classes` >= 2 for `model` (tfspeed classifies "
                             f"into 2 or more classes with a softmax). Received: num_classes={model.num_classes}.")
    config = _config_from_backbone(backbone)
    if config.activation != _APPROXIMATE_GELU:
        warnings.warn("keras-hub's BERT computes the tanh approximation of GELU; this tfspeed BertConfig has only "
                      "exact GELU, so the native model's activations differ by at most 4.7e-4 (outputs of random "
                      "weights by ~1e-6, the sequence output of trained all-MiniLM-L6-v2 by 3.8e-3).", UserWarning,
                      stacklevel=2)
    if model is backbone:
        native = build_encoder(config, seq_length=seq_length)
    else:
        native = build_classifier(config, num_classes=int(model.num_classes), seq_length=seq_length,
                                  classifier_dropout=float(model.dropout))
    weight_map = {}
    for variable, layer, slot in _pairs(model):
        weight_map.setdefault(layer, {})[slot] = variable
    targets = {layer: [tuple(w.shape) for w in layer_by_name(native, layer).weights] for layer in weight_map}
    assign(native, {layer: [np.reshape(_numpy(slots[i]), targets[layer][i]) for i in sorted(slots)]
                    for layer, slots in weight_map.items()})
    return native


def _activation_name(activation) -> str:
    """The name of a Keras 3 activation function ("linear" for None)."""
    if activation is None:
        return "linear"
    import keras as keras3

    name = keras3.activations.serialize(activation)
    return name if isinstance(name, str) else str(name.get("config", name))


def _numpy(variable) -> np.ndarray:
    return np.asarray(variable.numpy(), dtype=np.float32)


def is_keras_hub_dir(path) -> bool:
    """True when `path` is a keras-hub preset directory: a `config.json` written by keras-hub's `save_to_preset`."""
    config = Path(path) / "config.json"
    if not config.is_file():
        return False
    try:
        d = json.loads(config.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(d, dict) and (str(d.get("registered_name", "")).startswith("keras_hub>")
                                    or str(d.get("module", "")).startswith("keras_hub."))


def encoder_from_preset_dir(path, seq_length: Optional[int] = None) -> KerasHubPreset:
    """A native tfspeed BERT from a keras-hub preset directory (`save_to_preset`), with its tokenizer.

    The directory's `config.json` must describe a `BertBackbone`. When its `task.json` is a `BertTextClassifier`, the
    native model is a classifier with that head; otherwise (no task, or another task such as `BertMaskedLM`) it is the
    encoder. The vocabulary is the tokenizer asset `assets/tokenizer/vocabulary.txt`, lowercasing is the tokenizer's
    `lowercase` (tfspeed's lowercasing tokenizer also strips accents, as uncased BERT does). A backbone saved alone has
    no tokenizer: save it too, `tokenizer.save_to_preset(path)`.

    Args:
        path: the preset directory.
        seq_length: fixed sequence length of the native model's inputs. Defaults to `None` (any length).

    Returns:
        `KerasHubPreset(model, vocab_path, lower_case, label_names)`; keras-hub records no label names
        (`label_names` is None).
    """
    path = Path(path)
    if not is_keras_hub_dir(path):
        found = "whose config.json is not keras-hub's" if (path / "config.json").is_file() else "without config.json"
        raise ValueError(f"Expected a keras-hub preset directory for `path` (a config.json written by keras-hub's "
                         f"`save_to_preset`). Received: {str(path)!r}, {found}.")
    backbone_class = json.loads((path / "config.json").read_text()).get("class_name")
    if backbone_class != "BertBackbone":
        raise ValueError(f"Expected a keras-hub BertBackbone preset for `path`. Received: {str(path)!r}, whose "
                         f"config.json is a {backbone_class!r} (tfspeed computes BERT only).")
    vocab = path / _VOCABULARY
    if not vocab.is_file():
        raise ValueError(f"Expected the tokenizer's vocabulary at {str(vocab)!r} in the preset `path` (a backbone "
                         "saved alone has none: also run `tokenizer.save_to_preset(path)`). Received: "
                         f"{str(path)!r} without it.")
    lower_case = False  # keras-hub BertTokenizer's default
    if (path / "tokenizer.json").is_file():
        lower_case = bool(json.loads((path / "tokenizer.json").read_text()).get("config", {}).get("lowercase", False))
    kh = _keras_hub()
    task = path / "task.json"
    task_class = json.loads(task.read_text()).get("class_name") if task.is_file() else None
    if task_class == "BertTextClassifier":
        model = kh.models.BertTextClassifier.from_preset(str(path), preprocessor=None)
    else:
        model = kh.models.BertBackbone.from_preset(str(path))
    return KerasHubPreset(from_keras_hub(model, seq_length=seq_length), vocab, lower_case, None)


def to_keras_hub(model: keras.Model, vocab_path=None, lower_case: bool = True, sequence_length: Optional[int] = None):
    """A keras-hub BERT (Keras 3) with the weights of a native tfspeed BERT: the way back after compression.

    A native encoder becomes a `keras_hub.models.BertBackbone`; a native classifier a `BertTextClassifier` (logits,
    `activation=None`) whose dropout is the native `classifier_dropout`. keras-hub's BERT has one width for every
    layer, so a model whose layers were pruned to different head counts or FFN sizes, or factorised into low-rank
    Dense pairs, is refused: export it as .tflite or as a TF-Hub SavedModel instead. keras-hub computes the tanh
    approximation of GELU and layer-norm epsilon 1e-12: a native model with exact GELU or another epsilon is converted
    with a warning (outputs then differ slightly); ReLU is refused.

    Args:
        model: a native tfspeed encoder or classifier, without TFMOT wrappers (strip pruning first).
        vocab_path: a WordPiece vocabulary: a classifier then gets a `BertTextClassifierPreprocessor`, so it takes
            raw strings and `save_to_preset` writes the tokenizer. Defaults to `None` (no preprocessor).
        lower_case: whether that tokenizer lowercases. Defaults to `True`.
        sequence_length: that preprocessor's sequence length. Defaults to the native model's fixed input length, else
            `512`.

    Example:

    ```python
    backbone = tfspeed.hub.keras_hub.to_keras_hub(distilled_encoder)
    backbone.save_to_preset("my_bert")
    ```
    """
    kh = _keras_hub()
    check_plain_bert(model, "cannot be converted to keras-hub")
    config = config_of(model)
    _check_expressible(config)
    is_classifier = any(layer.name == "classifier" for layer in model.layers)
    backbone = kh.models.BertBackbone(
        vocabulary_size=config.vocab_size, num_layers=config.num_layers, num_heads=config.num_heads,
        hidden_dim=config.hidden_size, intermediate_dim=config.intermediate_size, dropout=config.dropout,
        max_sequence_length=config.max_positions, num_segments=config.type_vocab_size)
    out = backbone
    if is_classifier:
        preprocessor = None
        if vocab_path is not None:
            if sequence_length is None:
                sequence_length = model.inputs[0].shape[1] or 512
            tokenizer = _tokenizer(kh, vocab_path, lower_case)
            preprocessor = kh.models.BertTextClassifierPreprocessor(tokenizer, sequence_length=int(sequence_length))
        out = kh.models.BertTextClassifier(
            backbone, num_classes=int(layer_by_name(model, "classifier").units), preprocessor=preprocessor,
            dropout=float(layer_by_name(model, "classifier_dropout").rate))
    elif vocab_path is not None:
        raise ValueError("Expected `vocab_path=None` for an encoder: a keras-hub BertBackbone has no preprocessor. "
                         "Save the tokenizer beside it with `save_preset(model, path, vocab_path=...)`. "
                         f"Received: vocab_path={str(vocab_path)!r}.")
    for variable, layer, slot in _pairs(out):
        value = layer_by_name(model, layer).get_weights()[slot]
        variable.assign(np.reshape(value, tuple(variable.shape)))
    return out


def _tokenizer(kh, vocab_path, lower_case: bool):
    """A keras-hub BertTokenizer splitting text as tfspeed's does: uncased BERT lowercases and strips accents."""
    return kh.models.BertTokenizer(vocabulary=str(vocab_path), lowercase=bool(lower_case),
                                   strip_accents=bool(lower_case))


def _check_expressible(config: BertConfig):
    """Refuses what keras-hub's BertBackbone cannot compute; warns where it computes something slightly different."""
    if not config.is_uniform:
        raise ValueError("Expected the same number of heads and FFN units in every layer for `model`: keras-hub's "
                         "BertBackbone has one `num_heads` and one `intermediate_dim`. Received: heads per layer "
                         f"{list(config.layer_num_heads)}, FFN units per layer {list(config.layer_intermediate_sizes)} "
                         "(structured pruning). Export it as .tflite or as a TF-Hub SavedModel instead.")
    if config.ranks:
        raise ValueError("Expected a model without low-rank factorised Dense layers for `model`: keras-hub's "
                         f"BertBackbone has one Dense per projection. Received: ranks={dict(config.ranks)}. Export it "
                         "as .tflite or as a TF-Hub SavedModel instead.")
    if config.head_size * config.num_heads != config.hidden_size:
        raise ValueError("Expected `num_heads * head_size == hidden_size` for `model` (keras-hub derives the head size "
                         f"from them). Received: num_heads={config.num_heads}, head_size={config.head_size}, "
                         f"hidden_size={config.hidden_size}.")
    if config.activation == "relu":
        raise ValueError("Expected a GELU model for `model`: keras-hub's BertBackbone computes GELU. Received: "
                         "activation='relu'.")
    if config.activation != _APPROXIMATE_GELU:
        warnings.warn("`model` computes exact GELU; keras-hub's BertBackbone computes its tanh approximation: "
                      "activations differ by at most 4.7e-4 (the sequence output of all-MiniLM-L6-v2 by 3.8e-3).",
                      UserWarning, stacklevel=3)
    if config.layer_norm_epsilon != _LAYER_NORM_EPSILON:
        warnings.warn(f"`model` normalizes with layer_norm_epsilon={config.layer_norm_epsilon}; keras-hub's "
                      f"BertBackbone uses {_LAYER_NORM_EPSILON}.", UserWarning, stacklevel=3)
    if config.attention_dropout != config.dropout:
        warnings.warn(f"keras-hub's BertBackbone has one dropout rate: attention_dropout={config.attention_dropout} "
                      f"becomes dropout={config.dropout} (training only).", UserWarning, stacklevel=3)


def save_preset(model: keras.Model, path, vocab_path, lower_case: bool = True,
                sequence_length: Optional[int] = None, overwrite: bool = False) -> Path:
    """Writes a native tfspeed BERT as a keras-hub preset directory (`to_keras_hub` + `save_to_preset`), with its
    tokenizer, so `keras_hub.models.BertBackbone.from_preset(path)` (or `BertTextClassifier.from_preset(path)`) and
    `keras_hub.models.BertTokenizer.from_preset(path)` load it. Written atomically; never silently overwritten.

    Args:
        model: a native tfspeed encoder or classifier (see `to_keras_hub`).
        path: the preset directory to write.
        vocab_path: the model's WordPiece vocabulary (written as the tokenizer asset).
        lower_case: whether the tokenizer lowercases. Defaults to `True`.
        sequence_length: the classifier preprocessor's sequence length. Defaults to the native model's fixed input
            length, else `512`.
        overwrite: replace an existing `path`. Defaults to `False`.

    Returns:
        `path`.
    """
    if vocab_path is None or not Path(vocab_path).is_file():
        raise ValueError(f"Expected a vocabulary file for `vocab_path`. Received: vocab_path={vocab_path!r}.")
    kh = _keras_hub()
    is_classifier = any(layer.name == "classifier" for layer in getattr(model, "layers", []))
    path = Path(path)
    with _io.atomic_path(path, overwrite, "path") as tmp:  # claimed before any work, written whole or not at all
        kh_model = to_keras_hub(model, vocab_path=vocab_path if is_classifier else None, lower_case=lower_case,
                                sequence_length=sequence_length)
        kh_model.save_to_preset(str(tmp))
        if not is_classifier:
            _tokenizer(kh, vocab_path, lower_case).save_to_preset(str(tmp))
    return path


# --- a keras-hub preset directory as a handle (`tfspeed.hub.handles.FOREIGN_FORMATS`) ------------------------------
NAME = "keras-hub"
"""The cache folder of converted preset directories, `<cache>/keras-hub/<fingerprint>/encoder`."""
CONVERTER_VERSION = 1

claims = is_keras_hub_dir


def fingerprint(path) -> str:
    """The cache key of the preset directory `path`: a sha256 over the checksums of its files and the converter
    version."""
    import hashlib

    from tfspeed._wheels import sha256_of

    h = hashlib.sha256(f"{NAME}-{CONVERTER_VERSION}\n".encode())
    for f in sorted(p for p in Path(path).rglob("*") if p.is_file()):
        h.update(f"{f.relative_to(path)} {sha256_of(f)}\n".encode())
    return h.hexdigest()[:16]


def vocab_path(path) -> Path:
    """The tokenizer vocabulary of the preset directory `path`."""
    vocab = Path(path) / _VOCABULARY
    if not vocab.is_file():
        raise ValueError(f"Expected the tokenizer's vocabulary at {str(vocab)!r} in the keras-hub preset (a backbone "
                         "saved alone has none: also run `tokenizer.save_to_preset(path)`). Received: "
                         f"{str(path)!r} without it.")
    return vocab


def lower_case(path) -> bool:
    """Whether the preset's tokenizer lower-cases (`tokenizer.json`'s `lowercase`; keras-hub's default is False)."""
    tokenizer = Path(path) / "tokenizer.json"
    if not tokenizer.is_file():
        return False
    return bool(json.loads(tokenizer.read_text()).get("config", {}).get("lowercase", False))


def read(path):
    """The preset directory `path` as a `tfspeed.hub.weights.Checkpoint` (the encoder's weights, and the
    `BertTextClassifier` head when there is one)."""
    from tfspeed.hub.weights import Checkpoint
    from tfspeed.models.bert import _unwrap, encoder_of

    preset = encoder_from_preset_dir(path)
    model = preset.model
    encoder = model if isinstance(model.output, dict) else encoder_of(model)
    weight_map = {layer.name: layer.get_weights() for layer in (_unwrap(x) for x in encoder.layers) if layer.weights}
    classifier, dropout = None, None
    if encoder is not model:
        classifier = _unwrap(layer_by_name(model, "classifier")).get_weights()
        dropout = float(_unwrap(layer_by_name(model, "classifier_dropout")).rate)
    return Checkpoint(config=config_of(encoder), weight_map=weight_map, vocab_path=preset.vocab_path,
                      lower_case=preset.lower_case, classifier=classifier, label_names=preset.label_names,
                      classifier_dropout=dropout)
