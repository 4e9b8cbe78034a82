"""TF-Hub handles in and out: resolving presets / directories / URLs, importing SavedModels into native encoders."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Optional

import numpy as np
import tensorflow_hub as hub  # noqa: E402

from tfspeed import _io, _wheels
from tfspeed.compat import keras, tf
from tfspeed.hub import export, presets, weights
from tfspeed.models.bert import INPUT_NAMES, build_classifier, build_encoder, config_of
from tfspeed.models.config import BertConfig

_URL_PREFIXES = ("http://", "https://", "gs://")


def is_url(handle) -> bool:
    return str(handle).startswith(_URL_PREFIXES)


def _check_saved_model(path: Path, argument: str = "handle") -> Path:
    if not path.is_dir():
        raise ValueError(f"Expected a preset name ({', '.join(sorted(presets.PRESETS))}), a SavedModel directory or a "
                         f"TF-Hub URL for `{argument}`. Received: {str(path)!r}, which is none of these.")
    if not (path / "saved_model.pb").is_file():
        raise ValueError(f"Expected a TF-Hub BERT SavedModel directory for `{argument}` (with saved_model.pb). "
                         f"Received: {str(path)!r}, which has no saved_model.pb.")
    return path


def resolve(handle) -> str:
    """A handle that `hub.KerasLayer` accepts: a preset name is exported once into the cache; a directory is checked;
    a URL is passed through (it is fetched by tensorflow-hub when it is loaded).

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
    return str(_check_saved_model(Path(handle)))


def resolve_preprocessor(handle, seq_length: int = 128) -> str:
    """The preprocessing SavedModel matching `handle` (its vocabulary), exported once into the cache."""
    vocab = vocab_path(handle)
    path = _io.cache_dir() / "preprocess" / f"{_slug(str(vocab))}-{seq_length}"
    if not _wheels.verify_tree(path):  # missing, half-written or changed: export again
        _wheels.write_cached(path, lambda p: export.export_preprocessor(vocab, p, seq_length=seq_length,
                                                                        overwrite=True))
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
    """The WordPiece vocabulary for `handle`: the preset's, or `assets/vocab.txt` of a SavedModel."""
    if str(handle) in presets.PRESETS:
        return presets.vocab_path(str(handle))
    path = local_path(handle) / "assets" / "vocab.txt"
    if not path.is_file():
        raise ValueError(f"No vocabulary found for `handle`={str(handle)!r}: expected {path}. "
                         "Pass `vocab_path` explicitly.")
    return path


def _variables(path: Path) -> dict:
    obj = tf.saved_model.load(str(path))
    return {v.name.rsplit(":", 1)[0]: v.numpy() for v in getattr(obj, "variables", ())}, obj


def import_encoder(handle, num_heads: Optional[int] = None, seq_length: Optional[int] = None,
                   verify: bool = True, atol: float = 1e-4) -> keras.Model:
    """Imports a TF-Hub BERT encoder SavedModel into a native tfspeed encoder (TFMOT can then see every Dense).

    Reads tfspeed exports and Model Garden exports (3-D EinsumDense kernels are reshaped). With `verify=True` the
    native encoder's outputs are compared to the SavedModel's own on a random batch, and a mismatch above `atol` is an
    error.

    Args:
        handle: a preset name, a SavedModel directory or a TF-Hub URL.
        num_heads: heads per layer, needed only when the SavedModel neither stores a tfspeed config nor has 3-D kernels.
        seq_length: fixed sequence length of the native encoder's inputs. Defaults to `None` (any length).
        verify: compare outputs after the import. Defaults to `True`.
        atol: tolerance of that comparison. Defaults to `1e-4`.
    """
    if str(handle) in presets.PRESETS:
        return presets.build_preset_encoder(str(handle), seq_length=seq_length)
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
    """A native encoder for a preset, SavedModel directory or TF-Hub URL (see `import_encoder`)."""
    return import_encoder(handle, seq_length=seq_length, **kwargs)


def build_hub_classifier(handle, num_classes: int = 2, dropout: float = 0.1, trainable: bool = True,
                         layer_cls=None, name: str = "hub_classifier") -> keras.Model:
    """A classifier on a `hub.KerasLayer` encoder: inputs dict -> hub layer -> dropout(pooled_output) -> Dense
    logits."""
    layer_cls = layer_cls or hub.KerasLayer
    inputs = {n: keras.Input(shape=(None,), dtype=tf.int32, name=n) for n in INPUT_NAMES}
    encoder = layer_cls(resolve(handle), trainable=trainable, name="encoder")
    pooled = encoder(inputs)["pooled_output"]
    x = keras.layers.Dropout(dropout, name="classifier_dropout")(pooled)
    logits = keras.layers.Dense(num_classes, kernel_initializer=keras.initializers.TruncatedNormal(stddev=0.02),
                                name="classifier")(x)
    return keras.Model(inputs, logits, name=name)


def build_native_classifier(handle, num_classes: int = 2, seq_length: Optional[int] = None,
                            classifier_dropout: Optional[float] = None, **kwargs) -> keras.Model:
    """A flat native classifier whose encoder weights come from `handle` (preset, SavedModel or URL)."""
    encoder = load_encoder(handle, seq_length=seq_length, **kwargs)
    classifier = build_classifier(config_of(encoder), num_classes=num_classes, seq_length=seq_length,
                                  classifier_dropout=classifier_dropout)
    from tfspeed.models.bert import copy_weights

    copy_weights(encoder, classifier)
    return classifier


def build_classifier_from(handle, num_classes: int = 2, hub_layer: bool = False, **kwargs) -> keras.Model:
    """A classifier on `handle`: native (default, TFMOT sees every Dense) or on a `hub.KerasLayer`
    (`hub_layer=True`)."""
    if hub_layer:
        return build_hub_classifier(handle, num_classes=num_classes, **kwargs)
    return build_native_classifier(handle, num_classes=num_classes, **kwargs)
