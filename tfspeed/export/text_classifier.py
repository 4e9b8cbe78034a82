"""`TextClassifier`: raw strings in, label probabilities out, from the same .tflite an app ships.

A .tflite exported with metadata (the default of `tfspeed export`, `optimize` and the QAT stage) carries its
vocabulary and label names; `TextClassifier("model.tflite")` needs nothing else. It tokenizes as tfspeed trains
(lower case, accents stripped, WordPiece, [CLS] text [SEP], cut at the file's length) and runs the file through
ai-edge-litert, one text at a time (batch 1, as the file's signature). A file without metadata works with `vocab=`
and `labels=`; a tfspeed model directory runs its Keras model the same way.

Example:

```python
from tfspeed.export import TextClassifier

classifier = TextClassifier("runs/demo/export/03-prune-dynamic.tflite")
for p in classifier.classify(["A gripping, beautifully shot film.", "Two hours I will not get back."]):
    print(p.label, p.score, p.probabilities)
```
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from tfspeed.export import metadata as _md
from tfspeed.export.buckets import BucketRunner, bucket_signatures, buckets_up_to, check_buckets
from tfspeed.export.ops import read_tflite
from tfspeed.export.parity import softmax
from tfspeed.models.bert import INPUT_NAMES


@dataclasses.dataclass(frozen=True)
class Prediction:
    """One text's result: the top `label` with its `score`, every label's probability, and its length in tokens
    (before [CLS]/[SEP]; `truncated` when that did not fit the model's length)."""

    label: str
    score: float
    probabilities: dict
    tokens: int
    truncated: bool

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def check_texts(texts, argument: str = "texts") -> list:
    """`texts` as a list of non-empty strings, else a clear error naming the first bad one."""
    if isinstance(texts, str):
        raise TypeError(f"Expected a list of strings for `{argument}`. Received: a single str; wrap it in a list.")
    texts = list(texts)
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise TypeError(f"Expected strings in `{argument}`. Received: {argument}[{i}] of type {type(t).__name__}")
        if not t.strip():
            raise ValueError(f"Expected non-empty texts in `{argument}`. Received: {argument}[{i}]={t!r}")
    return texts


def _labels(labels) -> Optional[list]:
    if labels is None:
        return None
    if isinstance(labels, (str, Path)) and Path(labels).is_file():
        return [x for x in Path(labels).read_text(encoding="utf-8").splitlines() if x.strip()]
    if isinstance(labels, str):
        return [x.strip() for x in labels.split(",") if x.strip()]
    return [str(x) for x in labels]


class TextClassifier:
    """A BERT text classifier on raw strings: a .tflite (with metadata, or with `vocab` and `labels`) or a tfspeed
    model directory.

    Args:
        model: a .tflite path or bytes, or a tfspeed model directory.
        vocab: `vocab.txt` (or its tokens) for a .tflite without metadata. Defaults to the metadata's.
        labels: label names (a list, a comma-separated string or a file with one per line) for a .tflite without
            metadata. Defaults to the metadata's (or the model directory's).
        num_threads: interpreter threads. Defaults to `1`.
        max_length: for a .tflite whose length is dynamic (`[1, -1]` inputs), the most tokens a text is given,
            [CLS] and [SEP] included. Defaults to `128`.
        buckets: for a dynamic-length .tflite, the lengths it runs at (one interpreter each, allocated once; each
            text on the smallest that holds it: `tfspeed.export.buckets`), at most `max_length` (which is added as
            the last); `()` runs each text at its exact length (a resize per text, slower on x86). Defaults to
            `None`: 16, 32, 48, 64 and 128, those below `max_length`, then `max_length`.

    Raises:
        MetadataError: a .tflite without metadata and without `vocab` / `labels`; labels that do not match the
            output.
    """

    def __init__(self, model, vocab=None, labels=None, num_threads: int = 1, max_length: int = 128,
                 buckets=None):
        from tfspeed import artifacts

        labels = _labels(labels)
        self.num_threads = num_threads
        self._exits = None
        is_dir = isinstance(model, (str, Path)) and Path(model).is_dir()
        if is_dir:
            if not artifacts.is_model_dir(model):
                raise ValueError(f"Expected a .tflite file or a tfspeed model directory (model.keras, tfspeed.json) "
                                 f"for `model`. Received: directory {str(model)!r} without them.")
            self._init_keras(model, vocab, labels)
            from tfspeed.export.exits import EXITS_JSON, runner_of

            if (Path(model) / EXITS_JSON).is_file():  # an early-exit model: its segmented file stops early
                self._exits = runner_of(model, num_threads)
        else:
            self._init_tflite(model, vocab, labels, max_length, buckets)
        if len(self.labels) != self.num_labels:
            raise _md.MetadataError(f"Expected {self.num_labels} label names (the model's output has "
                                    f"{self.num_labels} classes) for `labels`. Received: {len(self.labels)}: "
                                    f"{list(self.labels)!r}")
        from tfspeed.data import Tokenizer

        self.tokenizer = Tokenizer(self._vocab, seq_length=self.seq_length, lower_case=self.lower_case)

    def _init_keras(self, model_dir, vocab, labels):
        from tfspeed import artifacts

        self.keras_model, info = artifacts.load_model_dir(model_dir)
        self.interpreter = None
        output_shape = self.keras_model.output_shape
        if isinstance(output_shape, dict) and "final" in output_shape:  # early exits: the final classifier's classes
            output_shape = output_shape["final"]
        self._vocab = vocab or info.vocab_path
        self.labels = tuple(labels or info.label_names)
        self.seq_length = info.seq_length
        self.dynamic = False
        self.num_labels = int(output_shape[-1] if not isinstance(output_shape, dict)
                              else next(iter(output_shape.values()))[-1])
        self.returns_probabilities = False
        self.source = str(model_dir)
        self.text_pair, self.lower_case = bool(info.text_pair), bool(info.lower_case)

    def _init_tflite(self, model, vocab, labels, max_length, buckets):
        from ai_edge_litert.interpreter import Interpreter

        data = read_tflite(model)
        meta = _md.read_metadata(data)
        if meta is None and (vocab is None or labels is None):
            where = str(model) if isinstance(model, (str, Path)) else "the .tflite bytes"
            raise _md.MetadataError(
                f"Expected a .tflite with TFLite metadata (tokenizer vocabulary and labels: `tfspeed export` writes "
                f"it unless --no-metadata) for `model`. Received: {where}, without metadata. Pass `vocab` and "
                "`labels` (`--vocab VOCAB.txt --labels neg,pos` on the command line).")
        self._vocab = vocab if vocab is not None else list(meta.vocab)
        self.labels = tuple(labels if labels is not None else meta.labels)
        self.source = str(model) if isinstance(model, (str, Path)) else "<bytes>"
        # metadata is written for single-text models only (MediaPipe tokenizes one text); without it, either
        self.text_pair = False if meta is not None else None
        self.lower_case = True
        try:
            self.interpreter = Interpreter(model_content=data, num_threads=self.num_threads)
        except (ValueError, RuntimeError) as e:
            raise ValueError(f"Expected a valid .tflite model for `model`; the interpreter refused it: {e}") from e
        details = self.interpreter.get_input_details()
        roles = meta.inputs if meta is not None else {}
        self.inputs = {}
        for role, name in zip(("ids", "mask", "segment_ids"), INPUT_NAMES):
            tensor = roles.get(role)
            match = [d for d in details if (d["name"] == tensor if tensor else name in d["name"])]
            if len(match) != 1:
                raise ValueError(f"Expected a .tflite with an input for {name} (a tfspeed export). Received inputs: "
                                 f"{[d['name'] for d in details]}")
            self.inputs[name] = match[0]
        signature = self.inputs["input_word_ids"]["shape_signature"]
        self.dynamic = int(signature[1]) == -1
        self.seq_length = int(max_length) if self.dynamic else int(self.inputs["input_word_ids"]["shape"][1])
        self._buckets = None
        own = bucket_signatures(data)
        if own:  # a bucket file (`export_buckets`): a fixed-length signature per bucket
            self.dynamic, self.seq_length = True, own[-1]
            self._buckets = BucketRunner(data, num_threads=self.num_threads)
        elif not self.dynamic:
            self.interpreter.allocate_tensors()
        elif buckets is None or buckets:  # a dynamic-length file
            if buckets is None:
                kept = buckets_up_to(self.seq_length)
            else:  # the last bucket is max_length: no text is cut before it
                kept = check_buckets(buckets, self.seq_length)
                kept = kept + (self.seq_length,) if kept[-1] < self.seq_length else kept
            self._buckets = BucketRunner(data, kept, self.num_threads,
                                         inputs={name: d["name"] for name, d in self.inputs.items()})
        out = self.interpreter.get_output_details()
        self.output = out[0]["index"]
        self.returns_probabilities = meta is not None or out[0]["name"] == _md.OUTPUT_NAME
        self.num_labels = int(out[0]["shape"][-1])
        self._length = None

    def _run_tflite(self, row: dict) -> np.ndarray:
        if self._buckets is not None:
            return self._buckets(row)
        if self.dynamic:
            n = int(row["input_mask"].sum())
            row = {k: v[:, :n] for k, v in row.items()}
            if n != self._length:
                for d in self.inputs.values():
                    self.interpreter.resize_tensor_input(d["index"], [1, n], strict=True)
                self.interpreter.allocate_tensors()
                self._length = n
        for name, d in self.inputs.items():
            self.interpreter.set_tensor(d["index"], row[name])
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self.output)[0].copy()

    def _check_pairs(self, texts: list, pairs) -> Optional[list]:
        if pairs is None:
            if self.text_pair:
                raise ValueError(f"Expected `pairs` (the second text of each text): {self.source} is a sentence-pair "
                                 "model. Received: pairs=None.")
            return None
        if self.text_pair is False:
            raise ValueError(f"Expected single texts: {self.source} is a model of single texts. Received: `pairs`.")
        pairs = check_texts(pairs, "pairs")
        if len(pairs) != len(texts):
            raise ValueError(f"Expected one second text per text in `pairs` ({len(texts)}). Received: {len(pairs)}")
        return pairs

    def token_lengths(self, texts: Sequence[str], pairs: Optional[Sequence[str]] = None) -> np.ndarray:
        """WordPiece tokens per text (with `pairs`: of both texts plus the middle [SEP]), before [CLS]/[SEP] and
        before any cut."""
        texts = check_texts(texts)
        return self.tokenizer.token_counts(texts, self._check_pairs(texts, pairs))

    def predict_proba(self, texts: Sequence[str], pairs: Optional[Sequence[str]] = None) -> np.ndarray:
        """Probabilities [len(texts), num_labels], in label order. `pairs`: for a sentence-pair model, the second text
        of each text."""
        texts = check_texts(texts)
        pairs = self._check_pairs(texts, pairs)
        if not texts:
            return np.zeros((0, self.num_labels), np.float32)
        feats = self.tokenizer.encode(texts, pairs)
        if self._exits is not None:
            return np.stack([self._exits.run({k: v[i:i + 1] for k, v in feats.items()})[0]
                             for i in range(len(texts))]).astype(np.float32)
        if self.interpreter is None:
            from tfspeed.data import EncodedSplit
            from tfspeed.train import predict_logits

            logits = predict_logits(self.keras_model, EncodedSplit(feats, np.zeros(len(texts), np.int64)))
            return softmax(logits)
        out = np.stack([self._run_tflite({k: v[i:i + 1] for k, v in feats.items()}) for i in range(len(texts))])
        return out.astype(np.float32) if self.returns_probabilities else softmax(out)

    def classify(self, texts: Sequence[str], pairs: Optional[Sequence[str]] = None) -> list:
        """A `Prediction` per text (per sentence pair with `pairs`)."""
        texts = check_texts(texts)
        probs = self.predict_proba(texts, pairs)
        lengths = self.token_lengths(texts, pairs) if texts else np.zeros(0, np.int64)
        room = self.seq_length - 2
        return [Prediction(label=self.labels[int(p.argmax())], score=float(p.max()),
                           probabilities={name: float(v) for name, v in zip(self.labels, p)}, tokens=int(n),
                           truncated=bool(n > room)) for p, n in zip(probs, lengths)]

    def __repr__(self):
        kind = "Keras" if self.interpreter is None else ("dynamic-length .tflite" if self.dynamic else ".tflite")
        return (f"TextClassifier({self.source!r}, {kind}, labels={list(self.labels)}, seq_length={self.seq_length}, "
                f"num_threads={self.num_threads})")
