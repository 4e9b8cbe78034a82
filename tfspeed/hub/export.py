"""Writing the TF-Hub BERT format: an encoder SavedModel and its preprocessing SavedModel."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Optional

from tfspeed import _io
from tfspeed.compat import keras, tf
from tfspeed.data.tokenizer import Tokenizer
from tfspeed.models.bert import INPUT_NAMES, config_of, encoder_of, is_bert

CONFIG_ASSET = "tfspeed_bert_config.json"


def _as_encoder(model: keras.Model) -> keras.Model:
    if not is_bert(model):
        raise ValueError(f"Expected a tfspeed BERT encoder or classifier for `model`. Received: {model.name!r}")
    if isinstance(model.output, dict) and "sequence_output" in model.output:
        return model
    return encoder_of(model)  # a classifier (also one with early exits: its encoder, without them)


def export_encoder(model: keras.Model, path, vocab_path=None, overwrite: bool = False) -> Path:
    """Saves a BERT encoder (or the encoder of a classifier) as a TF-Hub encoder SavedModel.

    Callable as `hub.KerasLayer(path)` on the inputs dict; a `serving_default` signature takes int32 [batch, seq]
    inputs.
    The config is stored as `assets/tfspeed_bert_config.json` and the vocabulary (when given) as `assets/vocab.txt`,
    so the export can be imported back into a native encoder without guessing.
    """
    encoder = _as_encoder(model)
    config = config_of(encoder)
    with _io.atomic_path(path, overwrite, "path") as tmp:
        tmp.mkdir()
        spec = {name: tf.TensorSpec([None, None], tf.int32, name=name) for name in INPUT_NAMES}

        @tf.function(input_signature=[spec])
        def serving_default(inputs):
            out = encoder(inputs, training=False)
            result = {"pooled_output": out["pooled_output"], "sequence_output": out["sequence_output"],
                      "default": out["pooled_output"]}
            for i, x in enumerate(out["encoder_outputs"]):
                result[f"encoder_outputs_{i}"] = x
            return result

        sample = [tf.zeros([1, 4], tf.int32), tf.ones([1, 4], tf.int32), tf.zeros([1, 4], tf.int32)]
        encoder(dict(zip(INPUT_NAMES, sample)))
        tf.saved_model.save(encoder, str(tmp), signatures={"serving_default": serving_default})
        (tmp / "assets").mkdir(exist_ok=True)
        (tmp / "assets" / CONFIG_ASSET).write_text(config.to_json())
        if vocab_path is not None:
            shutil.copyfile(vocab_path, tmp / "assets" / "vocab.txt")
    return Path(path)


def export_preprocessor(vocab_path, path, seq_length: int = 128, lower_case: bool = True,
                        overwrite: bool = False) -> Path:
    """Saves the matching preprocessing SavedModel: strings [batch] -> encoder inputs dict, int32 [batch, seq_length].

    Like TF-Hub's `bert_en_uncased_preprocess`: callable with `hub.KerasLayer(path)` on a string tensor, and it also
    exposes `tokenize` (ragged WordPiece ids).
    """
    tokenizer = Tokenizer(vocab_path, seq_length=seq_length, lower_case=lower_case)
    with _io.atomic_path(path, overwrite, "path") as tmp:
        tf.saved_model.save(tokenizer, str(tmp), signatures={"serving_default": tokenizer.__call__})
        (tmp / "assets" / "tfspeed_preprocess.json").write_text(
            json.dumps({"seq_length": seq_length, "lower_case": lower_case}))
    return Path(path)


def saved_config(path) -> Optional[dict]:
    """The tfspeed config stored in an export, or None for SavedModels tfspeed did not write."""
    asset = Path(path) / "assets" / CONFIG_ASSET
    return json.loads(asset.read_text()) if asset.is_file() else None
