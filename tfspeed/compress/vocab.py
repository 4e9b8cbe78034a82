"""Vocabulary trimming: keep only the WordPiece rows a domain uses.

The word-embedding table is most of a small BERT's bytes (MiniLM-L6: 11.7 M of 22.7 M parameters). A model fine-tuned
on one domain never updates the rows of tokens its data does not contain. `trim_vocabulary` keeps the special tokens
and every token seen in the given token ids, in their original order, and writes the matching `vocab.txt`. For any word
whose pieces were all seen, WordPiece's greedy longest match picks the same pieces from the smaller vocabulary, so those
texts get exactly the same ids (remapped) and the same outputs; a word with an unseen piece becomes [UNK].
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from tfspeed import _io
from tfspeed.compat import keras
from tfspeed.config import StageConfig, check_positive_int, field
from tfspeed.data.tokenizer import read_vocab
from tfspeed.models.bert import (
    _unwrap,
    build_classifier,
    config_of,
    copy_weights,
    is_bert,
    layer_by_name,
    num_classes_of,
)

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


@dataclasses.dataclass
class VocabConfig(StageConfig):
    """Vocabulary trimming settings.

    Args:
        min_count: keep a token seen at least this many times in the training split. Defaults to `1`.
    """

    min_count: int = field(1, help="keep a token seen at least this many times in the training split")

    def validate(self):
        check_positive_int("min_count", self.min_count)


def kept_token_ids(token_ids, vocab_path, min_count: int = 1) -> np.ndarray:
    """Sorted ids of the special tokens plus every id appearing at least `min_count` times in `token_ids`."""
    VocabConfig(min_count=min_count)  # checks it
    tokens = read_vocab(vocab_path)
    counts = np.bincount(np.asarray(token_ids).ravel(), minlength=len(tokens))
    if len(counts) > len(tokens):
        raise ValueError(f"`token_ids` hold ids up to {len(counts) - 1}, beyond the vocabulary of {len(tokens)} tokens "
                         f"in {vocab_path}.")
    keep = counts >= min_count
    keep[[tokens.index(t) for t in SPECIAL_TOKENS if t in tokens]] = True
    return np.flatnonzero(keep)


def trim_vocabulary(model: keras.Model, vocab_path, token_ids, out_vocab, min_count: int = 1,
                    overwrite: bool = False):
    """A new classifier whose word embeddings keep only the tokens in `token_ids` (and the special tokens).

    Args:
        model: a native tfspeed BERT classifier (float; trim before QAT or pruning wrappers are added).
        vocab_path: the model's `vocab.txt`.
        token_ids: int array of the ids the domain uses, e.g. the training split's `input_word_ids`.
        out_vocab: where to write the trimmed `vocab.txt` (refused if it exists unless `overwrite=True`).
        min_count: keep tokens seen at least this often. Defaults to `1`.

    Returns:
        `(new_model, kept_ids)`; the caller's model is not changed.
    """
    if not is_bert(model) or any(_unwrap(l) is not l for l in model.layers):
        raise ValueError("Expected a plain native tfspeed BERT classifier for `model` (no pruning or quantization "
                         f"wrappers: trim first). Received: {model.name!r}")
    kept = kept_token_ids(token_ids, vocab_path, min_count)
    tokens = read_vocab(vocab_path)
    config = config_of(model)
    trimmed = build_classifier(config.replace(vocab_size=len(kept)), num_classes=num_classes_of(model),
                               classifier_dropout=float(layer_by_name(model, "classifier_dropout").rate),
                               name=model.name)
    copy_weights(model, trimmed, skip=("word_embeddings",))
    table = layer_by_name(model, "word_embeddings").get_weights()[0]
    layer_by_name(trimmed, "word_embeddings").set_weights([table[kept]])
    _io.write_text(Path(out_vocab), "\n".join(tokens[i] for i in kept) + "\n", overwrite, "out_vocab")
    return trimmed, kept
