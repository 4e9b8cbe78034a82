"""WordPiece tokenization as TF-Hub's `bert_en_uncased_preprocess` does it, in a module that exports as a SavedModel.

`Tokenizer(vocab_path, seq_length)(texts)` returns the encoder input dict (int32 [batch, seq_length]):
[CLS] tokens [SEP], padded with 0, `input_mask` 1 on real tokens, `input_type_ids` 0. Sentence pairs
(`tokenizer.pairs(texts, second_texts)`, or `encode(texts, pairs=...)`) become [CLS] a [SEP] b [SEP] with type ids 0
on [CLS] a [SEP] and 1 on b [SEP]; when the two do not fit, the longer is cut first (a short one is kept whole, two
long ones keep about half the room each).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import tensorflow_text as text  # noqa: E402  (after compat: needs TensorFlow configured)

from tfspeed.compat import tf


def read_vocab(vocab_path) -> list:
    path = Path(vocab_path)
    if not path.is_file():
        raise FileNotFoundError(f"Expected a WordPiece vocab.txt for `vocab_path`. Received: {str(path)!r}, no such "
                                "file.")
    try:
        tokens = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise ValueError(f"Expected a UTF-8 vocab.txt for `vocab_path`. Received: {str(path)!r}, not UTF-8 (byte "
                         f"{e.start}).") from e
    return check_vocab(tokens, str(path))


def check_vocab(tokens: list, where: str) -> list:
    """`tokens` if it is a BERT WordPiece vocabulary (has [CLS], [SEP], [PAD] and [UNK]), else a ValueError."""
    missing = [t for t in ("[CLS]", "[SEP]", "[PAD]", "[UNK]") if t not in tokens]
    if missing:
        raise ValueError(f"{where} is not a BERT vocabulary: expected the tokens {', '.join(missing)}, not found "
                         f"among its {len(tokens)} tokens.")
    return tokens


class Tokenizer(tf.Module):
    """BERT preprocessing: lower case, WordPiece, [CLS]/[SEP], fixed `seq_length`.

    Args:
        vocab_path: a `vocab.txt` with one WordPiece token per line, or the tokens themselves (a list; e.g. the
            vocabulary packed in a .tflite's metadata).
        seq_length: length of every output row (longer texts are truncated). Defaults to `128`.
        lower_case: Defaults to `True` (uncased BERTs).
    """

    def __init__(self, vocab_path, seq_length: int = 128, lower_case: bool = True, name=None):
        super().__init__(name=name)
        if not isinstance(seq_length, int) or seq_length < 3:
            raise ValueError(f"Received an invalid value for `seq_length`, expected an integer >= 3. "
                             f"Received: seq_length={seq_length!r}")
        from_file = isinstance(vocab_path, (str, Path))
        tokens = read_vocab(vocab_path) if from_file else check_vocab(list(vocab_path), "the token list")
        self.vocab_path = str(vocab_path) if from_file else None
        self.vocab_size = len(tokens)
        self.seq_length = seq_length
        self.cls_id, self.sep_id, self.pad_id = tokens.index("[CLS]"), tokens.index("[SEP]"), tokens.index("[PAD]")
        self.vocab_file = tf.saved_model.Asset(str(vocab_path)) if from_file else None
        # Built from the tokens read here, not from the file path: a table initialised from a file is shared by name
        # with any other table of the same path in the process, which made a tokenizer see another's vocabulary.
        table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(tf.constant(tokens), tf.range(len(tokens), dtype=tf.int64)),
            default_value=-1, experimental_is_anonymous=True)
        self._table = table
        self._wordpiece = text.BertTokenizer(table, lower_case=lower_case, token_out_type=tf.int64,
                                             unknown_token="[UNK]")

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def tokenize(self, texts):
        """Ragged WordPiece ids [batch, (tokens)], no special tokens."""
        return self._wordpiece.tokenize(texts).merge_dims(-2, -1)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def __call__(self, texts):
        tokens = self.tokenize(texts)[:, : self.seq_length - 2]
        return self._model_inputs([tokens])

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string), tf.TensorSpec([None], tf.string)])
    def pairs(self, texts, second_texts):
        """Encoder inputs for sentence pairs: [CLS] a [SEP] b [SEP], type ids 0 then 1, the longer text cut first."""
        segments = text.RoundRobinTrimmer(self.seq_length - 3).trim([self.tokenize(texts),
                                                                     self.tokenize(second_texts)])
        return self._model_inputs(segments)

    def token_counts(self, texts: Sequence[str], pairs: Optional[Sequence[str]] = None) -> np.ndarray:
        """WordPiece tokens per text (with `pairs`: of both texts and the [SEP] between them), before [CLS] / [SEP]
        and before any cut: a text is cut when its count exceeds `seq_length - 2`."""
        count = self.tokenize(tf.constant(list(texts), tf.string)).row_lengths().numpy().astype(np.int64)
        if pairs is not None:
            count += self.tokenize(tf.constant(list(pairs), tf.string)).row_lengths().numpy().astype(np.int64) + 1
        return count

    def _model_inputs(self, segments):
        ids, types = text.combine_segments(segments, start_of_sequence_id=self.cls_id, end_of_segment_id=self.sep_id)
        ids, mask = text.pad_model_inputs(ids, max_seq_length=self.seq_length, pad_value=self.pad_id)
        types, _ = text.pad_model_inputs(types, max_seq_length=self.seq_length, pad_value=0)
        return {"input_word_ids": tf.cast(ids, tf.int32), "input_mask": tf.cast(mask, tf.int32),
                "input_type_ids": tf.cast(types, tf.int32)}

    def encode(self, texts: Sequence[str], pairs: Optional[Sequence[str]] = None, batch_size: int = 1024) -> dict:
        """Tokenizes a list of texts (with `pairs`: sentence pairs, `pairs[i]` the second text of `texts[i]`) into
        numpy int32 arrays [len(texts), seq_length]."""
        for name, value in (("texts", texts), ("pairs", pairs)):
            if isinstance(value, str):
                raise TypeError(f"Expected a list of strings for `{name}`. Received: a single str; wrap it in a list.")
        if pairs is not None and len(pairs) != len(texts):
            raise ValueError(f"Expected one second text per text in `pairs`. Received: {len(texts)} texts and "
                             f"{len(pairs)} pairs.")

        def batch(i):
            first = tf.constant(list(texts[i:i + batch_size]), tf.string)
            if pairs is None:
                return self(first)
            return self.pairs(first, tf.constant(list(pairs[i:i + batch_size]), tf.string))

        parts = [batch(i) for i in range(0, len(texts), batch_size)]
        if not parts:
            names = ("input_word_ids", "input_mask", "input_type_ids")
            return {k: np.zeros((0, self.seq_length), np.int32) for k in names}
        return {k: np.concatenate([p[k].numpy() for p in parts]) for k in parts[0]}
