"""`tfspeed predict MODEL [TEXT ...] [--file FILE]`: classify raw text with a .tflite (its metadata holds the vocabulary
and labels) or a model directory.

Examples:

    tfspeed predict model.tflite "A gripping film." "Two hours I will not get back."
    tfspeed predict model.tflite --file reviews.csv --column review --json > predictions.jsonl
    tfspeed predict plain.tflite --vocab vocab.txt --labels neg,pos "No metadata in this one."
    tfspeed predict runs/paraphrase "The cat sat." --pair "A cat was sitting."      # a sentence-pair model
    tfspeed predict runs/paraphrase --file pairs.csv --column a --pair-column b
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from tfspeed.data.texts import read_texts
from tfspeed.export.buckets import DEFAULT_BUCKETS, parse_buckets


def register(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "predict", help="classify texts with a .tflite (metadata: tokenizer and labels inside) or a model directory",
        description="Print the label and every label's probability for each text, one line per text (or a JSON "
                    "object per line with --json). A .tflite exported with metadata needs no other file.")
    p.add_argument("model", help=".tflite file (with metadata, or with --vocab and --labels) or tfspeed model "
                                 "directory")
    p.add_argument("texts", nargs="*", metavar="TEXT", help="texts to classify")
    p.add_argument("--file", default=None, help="read texts from FILE: one per line, or a column of a .csv / .tsv / "
                                                ".jsonl file (--column)")
    p.add_argument("--column", default="text", help="with a .csv / .tsv / .jsonl --file: the text column "
                                                    "(default: text)")
    p.add_argument("--pair", action="append", default=None, metavar="TEXT",
                   help="for a sentence-pair model: the second text of each TEXT, in order (repeat the flag)")
    p.add_argument("--pair-column", default=None, help="for a sentence-pair model, with a .csv / .tsv / .jsonl "
                                                       "--file: the second-text column")
    p.add_argument("--encoding", default="utf-8", help="encoding of --file (default: utf-8)")
    p.add_argument("--json", action="store_true", help="one JSON object per line: text, label, score, "
                                                      "probabilities, tokens, truncated")
    p.add_argument("--vocab", default=None, help="vocab.txt, for a .tflite without metadata")
    p.add_argument("--labels", default=None, help="label names (comma-separated, or a file with one per line), for a "
                                                  ".tflite without metadata")
    p.add_argument("--threads", type=int, default=1, help="interpreter threads (default: 1)")
    p.add_argument("--max-length", type=int, default=128, help="for a dynamic-length .tflite: the most tokens per "
                                                               "text, [CLS] and [SEP] included (default: 128)")
    p.add_argument("--buckets", type=parse_buckets, default=None, metavar="N,N,..|none",
                   help="for a dynamic-length .tflite: the lengths it runs at, each text on the smallest that holds "
                        "it ('none': each text at its exact length) (default: those of "
                        f"{','.join(map(str, DEFAULT_BUCKETS))} below --max-length, then --max-length)")
    p.set_defaults(func=run, positional_rest="texts")
    return p


def _line(p, text: str) -> str:
    probs = " ".join(f"{name}={v:.4f}" for name, v in p.probabilities.items())
    cut = " [truncated]" if p.truncated else ""
    return f"{p.label}\t{p.score:.4f}\t{probs}\t{text}{cut}"


def run(args) -> int:
    from tfspeed.export.text_classifier import TextClassifier

    if args.threads < 1:
        raise ValueError(f"Expected a positive integer for `--threads`. Received: {args.threads}")
    texts = list(args.texts)
    pairs = list(args.pair) if args.pair else None
    if pairs is not None and len(pairs) != len(texts):
        raise ValueError(f"Expected one --pair per TEXT argument ({len(texts)}). Received: {len(pairs)} --pair.")
    if args.pair_column and not args.file:
        raise ValueError("Expected --file with --pair-column (the second texts are a column of that file).")
    if args.file:
        texts += read_texts(args.file, args.column, args.encoding)
        if args.pair_column:
            if Path(args.file).suffix.lower() not in (".csv", ".tsv", ".jsonl"):
                raise ValueError(f"Expected a .csv / .tsv / .jsonl --file with --pair-column. Received: "
                                 f"{args.file!r}")
            pairs = (pairs or []) + read_texts(args.file, args.pair_column, args.encoding)
        elif pairs is not None:
            raise ValueError("Expected --pair-column for the texts of --file, since --pair was given.")
    if not texts:
        raise ValueError("Expected texts to classify: pass them as arguments or with --file FILE.")
    for i, t in enumerate(texts):
        if not t.strip():
            raise ValueError(f"Expected non-empty texts. Received: text {i + 1} is empty.")
    classifier = TextClassifier(args.model, vocab=args.vocab, labels=args.labels, num_threads=args.threads,
                                max_length=args.max_length, buckets=args.buckets)
    start = time.perf_counter()
    predictions = classifier.classify(texts, pairs)
    seconds = time.perf_counter() - start
    for i, (text, p) in enumerate(zip(texts, predictions)):
        pair = {} if pairs is None else {"pair": pairs[i]}
        shown = text if pairs is None else f"{text} [SEP] {pairs[i]}"
        print(json.dumps({"text": text, **pair, **p.to_dict()}) if args.json else _line(p, shown))
    truncated = sum(p.truncated for p in predictions)
    print(f"{len(texts)} texts in {seconds:.2f} s ({len(texts) / seconds:.1f} texts/s, {args.threads} thread(s), "
          f"tokenization included){f'; {truncated} truncated at {classifier.seq_length} tokens' if truncated else ''}",
          file=sys.stderr)
    return 0
