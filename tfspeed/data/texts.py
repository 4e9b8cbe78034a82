"""Texts to classify or time, from a file: one per line, or a column of a .csv / .tsv / .jsonl file, with errors that
name the file and line."""

from __future__ import annotations

import csv
import json
from pathlib import Path


def _decode_error(path: Path, data: bytes, encoding: str, e: UnicodeDecodeError) -> ValueError:
    line = data[:e.start].count(b"\n") + 1
    return ValueError(f"{path}: line {line} is not valid {encoding} (byte 0x{data[e.start]:02x} at offset "
                      f"{e.start}). Pass --encoding (e.g. --encoding latin-1) or convert the file to UTF-8.")


def read_texts(path, column: str = "text", encoding: str = "utf-8") -> list:
    """Texts from a file: a column of a .csv / .tsv / .jsonl file, else one text per line. Empty texts are refused
    with their line number."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Expected a text file for `--file`. Received: {str(path)!r}, no such file.")
    data = path.read_bytes()
    try:
        content = data.decode(encoding)
    except UnicodeDecodeError as e:
        raise _decode_error(path, data, encoding, e) from None
    except LookupError:
        raise ValueError(f"Expected a Python codec name for `--encoding`. Received: {encoding!r}") from None
    suffix = path.suffix.lower()
    texts = []
    if suffix in (".csv", ".tsv"):
        reader = csv.DictReader(content.splitlines(), delimiter="\t" if suffix == ".tsv" else ",")
        if column not in (reader.fieldnames or []):
            raise ValueError(f"Expected a column {column!r} (--column) in {path}. Received columns: "
                             f"{reader.fieldnames}")
        for row in reader:
            text = row.get(column)
            if text is None or not text.strip():
                raise ValueError(f"{path}: line {reader.line_num} has an empty {column!r} field.")
            texts.append(text)
    elif suffix == ".jsonl":
        for n, line in enumerate(content.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}: line {n} is not JSON ({e.msg}).") from None
            text = row.get(column) if isinstance(row, dict) else None
            if not isinstance(text, str) or not text.strip():
                raise ValueError(f"{path}: line {n} has no non-empty string {column!r} (--column).")
            texts.append(text)
    else:
        lines = content.splitlines()
        while lines and not lines[-1].strip():  # trailing blank lines
            lines.pop()
        for n, line in enumerate(lines, 1):
            if not line.strip():
                raise ValueError(f"{path}: line {n} is empty (one text per line expected).")
            texts.append(line)
    if not texts:
        raise ValueError(f"Expected at least one text in {path}. Received: an empty file.")
    return texts
