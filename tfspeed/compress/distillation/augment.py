"""More text for distillation than the labelled set: the teacher labels what has no label.

A small student sees more of the input distribution when the teacher labels extra text (TinyBERT's data
augmentation). Two sources: the user's own unlabelled texts (`read_unlabelled`), and copies of the training texts
changed word by word (`augment_texts`): each word is, with probability `rate`, replaced by a word drawn from the
corpus (by frequency, so the copy stays in the domain), deleted, or swapped with its neighbour. This is the masked-LM-
free variant: TinyBERT draws replacements from BERT's masked-LM and GloVe neighbours, which needs a second model.
The copies are not expected to keep their label: the teacher's softened outputs on them are the target, and they
carry the label `-1` (no hard-label loss).

Example:

>>> augment_texts(["a fine and moving film"], copies=2, rate=0.5, seed=0)
['a a and moving film', 'a fine and film moving']
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

__all__ = ["augment_texts", "read_unlabelled", "UNLABELLED"]

UNLABELLED = -1
"""The label of a text the teacher labels (only the soft-target loss learns from it)."""


def augment_texts(texts: Sequence[str], copies: int = 1, rate: float = 0.15, seed: int = 0,
                  pool: Optional[Sequence[str]] = None) -> list:
    """`copies` changed copies of each text (all copies of text 0, then of text 1, ...).

    Args:
        texts: the texts (whitespace-separated words).
        copies: copies per text. Defaults to `1`.
        rate: probability that a word is changed, in (0, 1). Defaults to `0.15`.
        seed: seed of the changes. Defaults to `0`.
        pool: the words replacements are drawn from (uniformly, so repeated words are drawn by frequency).
            Defaults to the words of `texts`.
    """
    if not 0 < rate < 1:
        raise ValueError(f"Received an invalid value for `rate`, expected a float in (0, 1). Received: rate={rate!r}")
    if isinstance(copies, bool) or not isinstance(copies, (int, np.integer)) or copies < 0:
        raise ValueError(f"Received an invalid value for `copies`, expected an integer >= 0. Received: "
                         f"copies={copies!r}")
    rng = np.random.default_rng(seed)
    words = [str(t).split() for t in texts]
    pool = list(pool) if pool is not None else [w for ws in words for w in ws]
    if not pool:
        raise ValueError("Expected texts with words to augment. Received: only empty texts.")
    out = []
    for ws in words:
        for _ in range(copies):
            out.append(_change(ws, rate, rng, pool))
    return out


def _change(words: list, rate: float, rng, pool: list) -> str:
    new = []
    for w in words:
        if rng.random() >= rate:
            new.append(w)
            continue
        op = rng.random()
        if op < 0.6:  # replaced by a corpus word
            new.append(pool[int(rng.integers(len(pool)))])
        elif op < 0.8 or not new:  # deleted (the first word cannot swap back)
            continue
        else:  # swapped with the word before it
            new.insert(len(new) - 1, w)
    if not new:  # never empty: a text is at least one word
        new = [words[0] if words else pool[int(rng.integers(len(pool)))]]
    return " ".join(new)


def read_unlabelled(path, column: str = "text") -> list:
    """Texts without labels from a file (one per line, or a column of a .csv / .tsv / .jsonl file); an empty file
    is refused."""
    from pathlib import Path

    from tfspeed.data.texts import read_texts

    if not Path(path).is_file():
        raise FileNotFoundError(f"Expected a file of texts for `unlabelled`. Received: {str(path)!r}, no such file.")
    texts = read_texts(path, column)
    if not texts:
        raise ValueError(f"Expected at least one text in the file given as `unlabelled`. Received: {str(path)!r} "
                         "with no text.")
    return texts
