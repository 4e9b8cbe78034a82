"""Calibration data for full-int8 conversion: real text through the model's tokenizer, int32 token ids.

Everything that feeds a fixed-shape model goes through `fit_features`: three int32 [n, seq_length] arrays, padded
with 0 or cut to the model's sequence length.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from tfspeed.models.bert import INPUT_NAMES

DEFAULT_NUM_SAMPLES = 200


def fit_features(features: dict, seq_length: int, argument: str = "calibration") -> dict:
    """The three BERT inputs as int32 [n, seq_length] arrays (padded with 0 or cut), after checking dtype and shape.

    Raises a ValueError naming `argument` for missing inputs, non-integer dtypes, arrays that are not 2-D or rows that
    disagree between inputs.
    """
    if not isinstance(features, dict):
        raise ValueError(f"Expected a dict of token-id arrays {list(INPUT_NAMES)} for `{argument}`. "
                         f"Received: {type(features).__name__}")
    missing = [n for n in INPUT_NAMES if n not in features]
    if missing:
        raise ValueError(f"`{argument}` is missing the inputs {missing}; expected the keys {list(INPUT_NAMES)}. "
                         f"Received keys: {sorted(features)}")
    out, rows = {}, None
    for name in INPUT_NAMES:
        arr = np.asarray(features[name])
        if not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(f"Received an invalid dtype in `{argument}`: expected int32 token ids for {name!r} "
                             f"(the model's inputs stay int32, also in full-int8 models). Received: dtype={arr.dtype}")
        if arr.ndim != 2:
            raise ValueError(f"Received an invalid shape in `{argument}`: expected [num_samples, seq_length] for "
                             f"{name!r}. Received: shape={tuple(arr.shape)}")
        if rows is not None and arr.shape[0] != rows:
            raise ValueError(f"Received an invalid shape in `{argument}`: every input needs the same number of rows. "
                             f"Received: {INPUT_NAMES[0]} has {rows}, {name} has {arr.shape[0]}")
        if arr.size and (arr.min() < np.iinfo(np.int32).min or arr.max() > np.iinfo(np.int32).max):
            raise ValueError(f"Received token ids outside int32 in `{argument}` for {name!r}.")
        rows = arr.shape[0]
        arr = arr.astype(np.int32, copy=False)
        if arr.shape[1] >= seq_length:
            arr = arr[:, :seq_length]
        else:
            arr = np.pad(arr, [(0, 0), (0, seq_length - arr.shape[1])])
        out[name] = np.ascontiguousarray(arr)
    if rows == 0:
        raise ValueError(f"`{argument}` has no rows. Expected at least one sample.")
    return out


def sample_rows(features: dict, num_samples: Optional[int], seed: int = 0) -> dict:
    """`num_samples` rows drawn without replacement (seeded), or all rows when there are fewer or it is None."""
    n = len(next(iter(features.values())))
    if num_samples is None or num_samples >= n:
        return features
    idx = np.sort(np.random.default_rng(seed).choice(n, size=num_samples, replace=False))
    return {k: v[idx] for k, v in features.items()}


def _check_num_samples(num_samples):
    if num_samples is not None and (not isinstance(num_samples, (int, np.integer)) or isinstance(num_samples, bool)
                                    or num_samples < 1):
        raise ValueError(f"Received an invalid value for `num_calibration_samples`, expected a positive integer. "
                         f"Received: num_calibration_samples={num_samples!r}")


def calibration_features(calibration, seq_length: int, num_samples: Optional[int] = DEFAULT_NUM_SAMPLES,
                         vocab=None, seed: int = 0) -> dict:
    """Token-id arrays to calibrate a full-int8 model on.

    Args:
        calibration: one of
            - an `EncodedSplit` (already tokenized),
            - a dict of integer arrays `input_word_ids`, `input_mask`, `input_type_ids` [n, length],
            - a list of strings, a `TextSplit` (its texts) or a `TextDataset` (its train split), tokenized with `vocab`,
            - `"rotten_tomatoes"` or a CSV / JSONL path: the training split of that dataset, tokenized with `vocab`.
        seq_length: the model's fixed sequence length; ids are padded or cut to it.
        num_samples: rows to use, drawn at random (seeded) when more are given. Defaults to `200`; `None` = all.
        vocab: the WordPiece `vocab.txt` used to tokenize text (e.g. the model directory's). Defaults to `None`.
        seed: Defaults to `0`.

    Returns:
        dict of int32 [num_samples, seq_length] arrays.
    """
    _check_num_samples(num_samples)
    from tfspeed.data import EncodedSplit, TextDataset, TextSplit

    if isinstance(calibration, EncodedSplit):
        return sample_rows(fit_features(calibration.features, seq_length), num_samples, seed)
    if isinstance(calibration, dict):
        return sample_rows(fit_features(calibration, seq_length), num_samples, seed)
    texts, pairs = None, None
    if isinstance(calibration, str):
        from tfspeed.data import load_dataset

        calibration = load_dataset(calibration)
    if isinstance(calibration, TextDataset):
        calibration = calibration.train
    if isinstance(calibration, TextSplit):
        texts, pairs = list(calibration.texts), calibration.pairs
    elif isinstance(calibration, (list, tuple)) and calibration and all(isinstance(t, str) for t in calibration):
        texts = list(calibration)
    if texts is None:
        raise ValueError("Received an invalid value for `calibration`, expected an EncodedSplit, a dict of int32 "
                         "token-id arrays, a list of texts, a TextDataset / TextSplit, or a dataset name or path. "
                         f"Received: calibration of type {type(calibration).__name__}")
    if not texts:
        raise ValueError("`calibration` holds no text. Expected at least one sample.")
    if vocab is None:
        raise ValueError("Calibration text needs a tokenizer: pass `vocab` (a WordPiece vocab.txt), or pass a model "
                         "directory, whose vocab.txt is used. Received: vocab=None")
    if num_samples is not None and num_samples < len(texts):
        idx = np.sort(np.random.default_rng(seed).choice(len(texts), size=num_samples, replace=False))
        texts = [texts[i] for i in idx]
        pairs = None if pairs is None else [pairs[i] for i in idx]
    from tfspeed.data import Tokenizer

    return fit_features(Tokenizer(vocab, seq_length=int(seq_length)).encode(texts, pairs), seq_length)


def representative_dataset(features: dict):
    """A `TFLiteConverter.representative_dataset`: one batch-1 dict of int32 ids per row of `features`."""
    n = len(features[INPUT_NAMES[0]])

    def gen():
        for i in range(n):
            yield {name: features[name][i:i + 1] for name in INPUT_NAMES}

    return gen
