"""TF-Hub handles in and out: resolving presets / directories / URLs, importing SavedModels into native encoders.

A handle is a preset name, a TF-Hub SavedModel directory, a TF-Hub URL, or a checkpoint directory of another library
that one of `FOREIGN_FORMATS` reads (a Hugging Face BERT directory): that one is converted once into the cache as a
TF-Hub SavedModel (keyed by its files' checksums), so every stage takes it like a SavedModel.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import tensorflow_hub as hub  # noqa: E402

from tfspeed import _io, _wheels
from tfspeed.compat import keras, tf
from tfspeed.hub import export, huggingface, keras_hub, presets, weights
from tfspeed.models.bert import INPUT_NAMES, build_classifier, build_encoder, config_of
from tfspeed.models.config import BertConfig

_URL_PREFIXES = ("http://", "https://", "gs://")

# Checkpoint directories of other libraries that are handles too, tried in order. Each entry (a module or any object)
# has `NAME` (its cache folder), `claims(path) -> bool` (the directory is of this format, readable or not: it then
# answers with a clear error), `fingerprint(path) -> str` (the cache key: checksums of the files it reads),
# `read(path) -> weights.Checkpoint`, `vocab_path(path) -> Path` and `lower_case(path) -> bool`.
# A new format is one more entry.
FOREIGN_FORMATS = [
    keras_hub,  # first: a keras-hub preset has a config.json too
    huggingface,
]


def is_url(handle) -> bool:
    return str(handle).startswith(_URL_PREFIXES)


def _check_saved_model(path: Path, argument: str = "handle") -> Path:
    if not path.is_dir():
        raise ValueError(f"Expected a preset name ({', '.join(sorted(presets.PRESETS))}), a SavedModel directory, a "
                         f"Hugging Face BERT directory or a TF-Hub URL for `{argument}`. Received: {str(path)!r}, "
                         "which is none of these.")
    if not (path / "saved_model.pb").is_file():
        raise ValueError(f"Expected a TF-Hub BERT SavedModel directory (with saved_model.pb) or a Hugging Face BERT "
                         f"directory (with config.json) for `{argument}`. Received: {str(path)!r}, which has neither "
                         "saved_model.pb nor config.json.")
    return path


def foreign_format(handle):
    """The entry of `FOREIGN_FORMATS` that reads the directory `handle`, or None (a preset, URL, SavedModel...)."""
    if str(handle) in presets.PRESETS or is_url(handle):
        return None
    path = Path(handle)
    if not path.is_dir() or (path / "saved_model.pb").is_file():
        return None
    return next((f for f in FOREIGN_FORMATS if f.claims(path)), None)


def _convert_foreign(fmt, path: Path) -> Path:
    """The cached TF-Hub export of the foreign directory `path`, converted on first use (or when the cache entry does
    not match its recorded checksums)."""
    target = _io.cache_dir() / fmt.NAME / fmt.fingerprint(path) / "encoder"
    if not _wheels.verify_tree(target):
        if target.exists():
            warnings.warn(f"The cached conversion {target} does not match the checksums recorded when it was written: "
                          "converting it again.", RuntimeWarning, stacklevel=3)
        checkpoint = fmt.read(path)  # every error comes here, before anything is written
        encoder = _encoder_from(checkpoint)
        _wheels.write_cached(target, lambda p: export.export_encoder(encoder, p, vocab_path=checkpoint.vocab_path,
                                                                     overwrite=True))
        _wheels.record_tree(target)
    return target


def _encoder_from(checkpoint: weights.Checkpoint, seq_length: Optional[int] = None) -> keras.Model:
    encoder = build_encoder(checkpoint.config, seq_length=seq_length)
    weights.assign(encoder, checkpoint.weight_map)
    return encoder


def resolve(handle) -> str:
    """A handle that `hub.KerasLayer` accepts: a preset name is exported once into the cache; a foreign checkpoint
    directory (`FOREIGN_FORMATS`: a Hugging Face BERT directory) is converted once into the cache, keyed by its files'
    checksums; a SavedModel directory is checked; a URL is passed through (it is fetched by tensorflow-hub when it is
    loaded).

    Example:

    ```python
    layer = hub.KerasLayer(tfspeed.hub.resolve("minilm-l6"), trainable=True)
    ```
    """
    handle = str(handle)
    if handle in presets.PRESETS:
        path = _io.cache_dir() / "presets" / handle / "encoder"
        if not _wheels.verify_tree(path):  # missing, half-written or changed since it was exported: export again
            if path.exists():
                warnings.warn(f"The cached preset export {path} does not match the checksums recorded when it was "
                              "written: exporting it again.", RuntimeWarning, stacklevel=2)
            encoder = presets.build_preset_encoder(handle)
            vocab = presets.vocab_path(handle)
            _wheels.write_cached(path, lambda p: export.export_encoder(encoder, p, vocab_path=vocab, overwrite=True))
            _wheels.record_tree(path)
        return str(path)
    if is_url(handle):
        return handle
    fmt = foreign_format(handle)
    if fmt is not None:
        return str(_convert_foreign(fmt, Path(handle)))
    return str(_check_saved_model(Path(handle)))


def resolve_preprocessor(handle, seq_length: int = 128) -> str:
    """The preprocessing SavedModel matching `handle` (its vocabulary and lower-casing), exported once into the
    cache."""
    vocab = vocab_path(handle)
    lower = lower_case(handle)
    path = _io.cache_dir() / "preprocess" / f"{_slug(str(vocab))}-{seq_length}{'' if lower else '-cased'}"
    if not _wheels.verify_tree(path):  # missing, half-written or changed: export again
        _wheels.write_cached(path, lambda p: export.export_preprocessor(vocab, p, seq_length=seq_length,
                                                                        lower_case=lower, overwrite=True))
        _wheels.record_tree(path)
    return str(path)


def _slug(text: str) -> str:
    import hashlib

    return hashlib.sha1(text.encode()).hexdigest()[:12]


def local_path(handle) -> Path:
    """A local directory for `handle`, downloading URLs through tensorflow-hub's cache."""
    resolved = resolve(handle)
    return Path(hub.resolve(resolved)) if is_url(resolved) else Path(resolved)


def vocab_path(handle) -> Path:
    """The WordPiece vocabulary for `handle`: the preset's, a foreign directory's (`vocab.txt` of a Hugging Face
    directory), or `assets/vocab.txt` of a SavedModel."""
    if str(handle) in presets.PRESETS:
        return presets.vocab_path(str(handle))
    fmt = foreign_format(handle)
    if fmt is not None:
        return Path(fmt.vocab_path(Path(handle)))
    path = local_path(handle) / "assets" / "vocab.txt"
    if not path.is_file():
        raise ValueError(f"No vocabulary found for `handle`={str(handle)!r}: expected {path}. "
                         "Pass `vocab_path` explicitly.")
    return path


def lower_case(handle) -> bool:
    """Whether the tokenizer of `handle` lower-cases (and strips accents): a foreign directory says so
    (`do_lower_case` of a Hugging Face `tokenizer_config.json`, `True` when absent); `True` for every other handle
    (the presets and TF-Hub BERTs tfspeed reads are uncased)."""
    fmt = foreign_format(handle)
    return bool(fmt.lower_case(Path(handle))) if fmt is not None else True


def _variables(path: Path) -> dict:
    obj = tf.saved_model.load(str(path))
    return {v.name.rsplit(":", 1)[0]: v.numpy() for v in getattr(obj, "variables", ())}, obj


def import_encoder(handle, num_heads: Optional[int] = None, seq_length: Optional[int] = None,
                   verify: bool = True, atol: float = 1e-4) -> keras.Model:
    """Imports a TF-Hub BERT encoder SavedModel into a native tfspeed encoder (TFMOT can then see every Dense).

    Reads tfspeed exports and Model Garden exports (3-D EinsumDense kernels are reshaped). With `verify=True` the
    native encoder's outputs are compared to the SavedModel's own on a random batch, and a mismatch above `atol` is an
    error. A foreign directory (a Hugging Face BERT directory) is read straight from its weights (`num_heads`,
    `verify` and `atol` do not apply).

    Args:
        handle: a preset name, a SavedModel directory, a Hugging Face BERT directory or a TF-Hub URL.
        num_heads: heads per layer, needed only when the SavedModel neither stores a tfspeed config nor has 3-D kernels.
        seq_length: fixed sequence length of the native encoder's inputs. Defaults to `None` (any length).
        verify: compare outputs after the import. Defaults to `True`.
        atol: tolerance of that comparison. Defaults to `1e-4`.
    """
    if str(handle) in presets.PRESETS:
        return presets.build_preset_encoder(str(handle), seq_length=seq_length)
    fmt = foreign_format(handle)
    if fmt is not None:
        return _encoder_from(fmt.read(Path(handle)), seq_length=seq_length)
    path = local_path(handle)
    variables, obj = _variables(path)
    if weights.is_model_garden(variables):
        config, weight_map = weights.garden_config(variables), weights.from_model_garden(variables)
    else:
        saved = export.saved_config(path)
        weight_map = weights.from_native_variables(variables)
        if saved is not None:
            config = BertConfig.from_dict(saved)
        elif "word_embeddings" in weight_map and "layer_0_query" in weight_map:
            if num_heads is None:
                raise ValueError(f"{path} does not record its number of attention heads: pass `num_heads`.")
            config = _infer_native_config(weight_map, num_heads)
        else:
            raise ValueError(f"{path} is not a BERT encoder tfspeed can import: expected variables named like "
                             "`layer_0_query/kernel` (tfspeed) or `transformer/layer_0/self_attention/query/kernel` "
                             f"(Model Garden). Received: {sorted(variables)[:6]}...")
    encoder = build_encoder(config, seq_length=seq_length)
    weights.assign(encoder, weight_map)
    if verify:
        diff = compare_with_saved_model(encoder, obj, config)
        if diff > atol:
            raise ValueError(f"Imported encoder differs from the SavedModel {path}: max |difference| of "
                             f"sequence_output {diff:.3g}, expected <= {atol}.")
    return encoder


def _infer_native_config(weight_map: dict, num_heads: int) -> BertConfig:
    num_layers = len([k for k in weight_map if k.startswith("layer_") and k.endswith("_query")])
    hidden = weight_map["word_embeddings"][0].shape[1]
    return BertConfig(vocab_size=weight_map["word_embeddings"][0].shape[0], hidden_size=hidden, num_layers=num_layers,
                      num_heads=num_heads, intermediate_size=weight_map["layer_0_intermediate"][0].shape[1],
                      max_positions=weight_map["position_embedding"][0].shape[0],
                      type_vocab_size=weight_map["type_embeddings"][0].shape[0])


def sample_inputs(config: BertConfig, batch: int = 2, seq_length: int = 16, seed: int = 0) -> dict:
    """Random token ids within the vocabulary, a mask with some padding, zero type ids (int32)."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, config.vocab_size, size=(batch, seq_length)).astype(np.int32)
    mask = np.ones((batch, seq_length), np.int32)
    mask[0, seq_length * 3 // 4:] = 0
    return {"input_word_ids": ids * mask, "input_mask": mask, "input_type_ids": np.zeros_like(ids)}


def compare_with_saved_model(encoder: keras.Model, obj, config: BertConfig) -> float:
    """Max |difference| of `sequence_output` (valid tokens) between a native encoder and a loaded SavedModel."""
    x = sample_inputs(config)
    ours = encoder(x, training=False)["sequence_output"].numpy()
    theirs = hub.KerasLayer(obj, trainable=False)(x)["sequence_output"].numpy()
    valid = x["input_mask"].astype(bool)
    return float(np.abs(ours - theirs)[valid].max())


def load_encoder(handle, seq_length: Optional[int] = None, **kwargs) -> keras.Model:
    """A native encoder for a preset, SavedModel directory, Hugging Face BERT directory or TF-Hub URL (see
    `import_encoder`)."""
    return import_encoder(handle, seq_length=seq_length, **kwargs)


def build_hub_classifier(handle, num_classes: int = 2, dropout: float = 0.1, trainable: bool = True,
                         layer_cls=None, name: str = "hub_classifier",
                         label_names: Optional[Sequence[str]] = None) -> keras.Model:
    """A classifier on a `hub.KerasLayer` encoder: inputs dict -> hub layer -> dropout(pooled_output) -> Dense
    logits. The classification head of a foreign checkpoint is kept when it fits (see `build_classifier_from`)."""
    layer_cls = layer_cls or hub.KerasLayer
    inputs = {n: keras.Input(shape=(None,), dtype=tf.int32, name=n) for n in INPUT_NAMES}
    encoder = layer_cls(resolve(handle), trainable=trainable, name="encoder")
    pooled = encoder(inputs)["pooled_output"]
    x = keras.layers.Dropout(dropout, name="classifier_dropout")(pooled)
    logits = keras.layers.Dense(num_classes, kernel_initializer=keras.initializers.TruncatedNormal(stddev=0.02),
                                name="classifier")(x)
    model = keras.Model(inputs, logits, name=name)
    fmt = foreign_format(handle)
    if fmt is not None:
        head = _fitting_head(fmt.read(Path(handle)), num_classes, label_names)
        if head is not None:
            model.get_layer("classifier").set_weights(head)
    return model


def build_native_classifier(handle, num_classes: int = 2, seq_length: Optional[int] = None,
                            classifier_dropout: Optional[float] = None, label_names: Optional[Sequence[str]] = None,
                            **kwargs) -> keras.Model:
    """A flat native classifier whose encoder weights come from `handle` (preset, SavedModel, Hugging Face BERT
    directory or URL); the classification head of a foreign checkpoint is kept when it fits (see
    `build_classifier_from`)."""
    fmt = foreign_format(handle)
    if fmt is not None:
        checkpoint = fmt.read(Path(handle))
        if classifier_dropout is None:
            classifier_dropout = checkpoint.classifier_dropout
        classifier = build_classifier(checkpoint.config, num_classes=num_classes, seq_length=seq_length,
                                      classifier_dropout=classifier_dropout)
        weight_map = dict(checkpoint.weight_map)
        head = _fitting_head(checkpoint, num_classes, label_names)
        if head is not None:
            weight_map["classifier"] = head
        weights.assign(classifier, weight_map)
        return classifier
    encoder = load_encoder(handle, seq_length=seq_length, **kwargs)
    classifier = build_classifier(config_of(encoder), num_classes=num_classes, seq_length=seq_length,
                                  classifier_dropout=classifier_dropout)
    from tfspeed.models.bert import copy_weights

    copy_weights(encoder, classifier)
    return classifier


def build_classifier_from(handle, num_classes: int = 2, hub_layer: bool = False,
                          label_names: Optional[Sequence[str]] = None, **kwargs) -> keras.Model:
    """A classifier on `handle`: native (default, TFMOT sees every Dense) or on a `hub.KerasLayer`
    (`hub_layer=True`).

    A Hugging Face `BertForSequenceClassification` directory keeps its classification head when it fits: it has
    `num_classes` outputs and, when both the checkpoint (`id2label`) and `label_names` name the labels, the same
    names (its outputs are then reordered to follow `label_names`). Otherwise the head is new, with a warning.

    Args:
        handle: a preset name, a SavedModel directory, a Hugging Face BERT directory or a TF-Hub URL.
        num_classes: outputs of the classifier. Defaults to `2`.
        hub_layer: build on a `hub.KerasLayer` instead of native layers. Defaults to `False`.
        label_names: the task's label names in index order, to match a checkpoint's head. Defaults to `None`
            (a head with `num_classes` outputs is kept as it is).
        **kwargs: passed to `build_native_classifier` / `build_hub_classifier`.
    """
    if hub_layer:
        return build_hub_classifier(handle, num_classes=num_classes, label_names=label_names, **kwargs)
    return build_native_classifier(handle, num_classes=num_classes, label_names=label_names, **kwargs)


def _fitting_head(checkpoint: weights.Checkpoint, num_classes: int, label_names: Optional[Sequence[str]]):
    """The checkpoint's `[kernel, bias]` classification head for a task of `num_classes` labels named `label_names`
    (reordered to their order), or None (no head, or one that does not fit: a warning says why)."""
    if checkpoint.classifier is None:
        return None
    kernel, bias = checkpoint.classifier
    theirs = checkpoint.label_names
    described = f"{bias.shape[0]} labels" + (f" {theirs}" if theirs else "")
    if bias.shape[0] != num_classes:
        warnings.warn(f"The checkpoint's classification head has {described}, the task {num_classes}: a new head is "
                      "initialised.", UserWarning, stacklevel=3)
        return None
    if theirs is None:
        return [kernel, bias]
    if label_names is None:
        warnings.warn(f"The checkpoint's classification head is kept with its label order {theirs}: pass "
                      "`label_names` (the task's labels in index order) to have it matched and reordered.",
                      UserWarning, stacklevel=3)
        return [kernel, bias]
    ours = [str(n) for n in label_names]
    if sorted(ours) != sorted(theirs):
        warnings.warn(f"The checkpoint's classification head has {described}, the task's labels are {ours}: a new "
                      "head is initialised.", UserWarning, stacklevel=3)
        return None
    order = [theirs.index(n) for n in ours]
    return [np.ascontiguousarray(kernel[:, order]), bias[order]]
