"""`DataConfig`: which labelled text a stage reads, and how much of it (shared by every command that trains or
evaluates)."""

from __future__ import annotations

import dataclasses
from typing import Optional

from tfspeed.config import StageConfig, check_positive_int, field
from tfspeed.data.datasets import BadRows, load_dataset


def _names(text: str) -> tuple:
    return tuple(s for s in (p.strip() for p in text.split(",")) if s)


@dataclasses.dataclass
class DataConfig(StageConfig):
    """The labelled text a stage reads.

    Args:
        data: `"rotten_tomatoes"` or a `.csv` / `.tsv` / `.jsonl` file. Defaults to `"rotten_tomatoes"`.
        text_column: text column of a CSV / JSONL file. Defaults to `"text"`.
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
    text_column: str = field("text", help="text column of a CSV/JSONL file")
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
        for name in ("limit", "eval_limit"):
            if getattr(self, name) is not None:
                check_positive_int(name, getattr(self, name))

    def loader_kwargs(self) -> dict:
        """Keyword arguments of `load_dataset` for a file (none for a built-in dataset)."""
        if self.data == "rotten_tomatoes":
            return {}
        names = list(self.label_names) if self.label_names is not None else None
        return {"text_column": self.text_column, "label_column": self.label_column, "label_names": names,
                "on_bad_row": self.on_bad_row.value, "encoding": self.encoding}

    def load(self):
        """The `TextDataset`."""
        return load_dataset(self.data, **self.loader_kwargs())
