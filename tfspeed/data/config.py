"""`DataConfig`: which labelled text a stage reads, and how much of it (shared by every command that trains or
evaluates)."""

from __future__ import annotations

import dataclasses
from typing import Optional

from tfspeed.config import StageConfig, check_positive_int, field


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
        limit: use only the first N training examples (quick runs). Defaults to `None` (all).
        eval_limit: use only the first N validation / test examples. Defaults to `None` (all).
    """

    data: str = field("rotten_tomatoes", help="'rotten_tomatoes' or a .csv/.tsv/.jsonl file")
    text_column: str = field("text", help="text column of a CSV/JSONL file")
    label_column: str = field("label", help="label column of a CSV/JSONL file")
    label_names: Optional[tuple] = field(None, parse=_names,
                                         help="comma-separated label names in index order (default: the file's labels, "
                                              "sorted)")
    limit: Optional[int] = field(None, help="use only the first N training examples")
    eval_limit: Optional[int] = field(None, help="use only the first N validation/test examples")

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
        return {"text_column": self.text_column, "label_column": self.label_column, "label_names": names}

    def load(self):
        """The `TextDataset`."""
        from tfspeed.data.datasets import load_dataset

        return load_dataset(self.data, **self.loader_kwargs())
