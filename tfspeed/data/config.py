"""`DataConfig`: which labelled text a stage reads, and how much of it (shared by every command that trains or
evaluates)."""

from __future__ import annotations

import dataclasses
from typing import Optional

from tfspeed.config import StageConfig, check_positive_int, field
from tfspeed.data.datasets import BadRows, load_splits


def _names(text: str) -> tuple:
    return tuple(s for s in (p.strip() for p in text.split(",")) if s)


@dataclasses.dataclass
class DataConfig(StageConfig):
    """The labelled text a stage reads.

    Args:
        data: `"rotten_tomatoes"` or a `.csv` / `.tsv` / `.jsonl` file, split by a hash of each text (about 80%
            train, 10% validation, 10% test; no seed). Defaults to `"rotten_tomatoes"`.
        train / validation / test: split files the user already has, each used whole; the splits not given are
            filled by the hash rule from `train` (or `data` when `train` is not given). Defaults to `None`.
        text_column: text column of a CSV / JSONL file. Defaults to `"text"`.
        text_pair_column: second-text column, for sentence pairs (the model reads `[CLS] text [SEP] pair [SEP]`).
            Defaults to `None` (single texts).
        label_column: label column of a CSV / JSONL file. Defaults to `"label"`.
        label_names: label names in index order. Defaults to `None` (the file's sorted labels).
        limit: use N training examples (quick runs): a seeded sample with every class in its share. Defaults to
            `None` (all).
        eval_limit: the same for the validation and test splits. Defaults to `None` (all).
        on_bad_row: a bad row of a file (missing or extra fields, empty text or label, unknown label, a repeated text
            with another label): `"error"` (refused with file and line) or `"skip"` (counted). Defaults to `"error"`.
        encoding: text encoding of a file. Defaults to `"utf-8"`.
    """

    data: str = field("rotten_tomatoes", help="'rotten_tomatoes' or a .csv/.tsv/.jsonl file")
    train: Optional[str] = field(None, help="training split file (.csv/.tsv/.jsonl), used whole; the splits not "
                                            "given are filled from it by the hash rule")
    validation: Optional[str] = field(None, help="validation split file, used whole (default: from --train or --data "
                                                 "by the hash rule)")
    test: Optional[str] = field(None, help="test split file, used whole (default: from --train or --data by the "
                                           "hash rule)")
    text_column: str = field("text", help="text column of a CSV/JSONL file")
    text_pair_column: Optional[str] = field(None, help="second-text column of a CSV/JSONL file, for sentence pairs "
                                                       "([CLS] text [SEP] pair [SEP]; default: single texts)")
    label_column: str = field("label", help="label column of a CSV/JSONL file")
    label_names: Optional[tuple] = field(None, parse=_names,
                                         help="comma-separated label names in index order (default: the file's labels, "
                                              "sorted)")
    limit: Optional[int] = field(None, help="use N training examples: a seeded sample, every class in its share")
    eval_limit: Optional[int] = field(None, help="use N validation/test examples (a seeded sample, every class in its "
                                                 "share)")
    on_bad_row: BadRows = field(BadRows.ERROR, help="a bad row of a file (missing/extra fields, empty text or label, "
                                                    "unknown label, a repeated text with another label): error, or "
                                                    "skip it (counted)")
    encoding: str = field("utf-8", help="text encoding of a .csv/.tsv/.jsonl file")

    def validate(self):
        self.data = str(self.data)
        for name in ("train", "validation", "test"):
            if getattr(self, name) is not None:
                setattr(self, name, str(getattr(self, name)))
        for name in ("limit", "eval_limit"):
            if getattr(self, name) is not None:
                check_positive_int(name, getattr(self, name))

    def loader_kwargs(self) -> dict:
        """Keyword arguments of `load_splits` / `from_file` for the files."""
        names = list(self.label_names) if self.label_names is not None else None
        return {"text_column": self.text_column, "label_column": self.label_column, "label_names": names,
                "on_bad_row": self.on_bad_row.value, "encoding": self.encoding,
                "text_pair_column": self.text_pair_column}

    def load(self):
        """The `TextDataset`."""
        return load_splits(self.data, train=self.train, validation=self.validation, test=self.test,
                           **self.loader_kwargs())
