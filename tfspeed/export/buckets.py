"""Length buckets for a dynamic-length .tflite: one interpreter per bucket length, each allocated once.

A dynamic-length file (`seq_length="dynamic"`) can run a text at its exact length, but every new length means a
resize and a re-allocation, and XNNPACK re-plans its kernels for the new shape: on MiniLM that costs more than the
tokens it saves (benchmarks/README.md, "Latency on real texts"). `BucketRunner` keeps one interpreter of the same file
per bucket (e.g. 16 / 32 / 48 / 64 / 128 tokens), each allocated once at its length, and runs each text on the
smallest bucket that holds it, padded with a zero mask: the padded positions change nothing but the time. Memory is
one packed copy of the weights per bucket; the file is one.

`export_buckets` writes the other form: one file with a fixed-length signature per bucket (`bucket_16`, `bucket_32`,
...) sharing one copy of the weights (the converter stores identical weight buffers once), for runtimes that want
static shapes; `BucketRunner` runs it too, with one interpreter and a signature runner per bucket.

Example:

```python
from tfspeed.export.buckets import BucketRunner

runner = BucketRunner("model_varlen.tflite", buckets=(16, 32, 64, 128))
logits = runner({"input_word_ids": ids, "input_mask": mask, "input_type_ids": types})  # [1, n] each, any n <= 128
```
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from tfspeed.export.metadata import BUCKET_SIGNATURE, bucket_length
from tfspeed.models.bert import INPUT_NAMES

DEFAULT_BUCKETS = (16, 32, 48, 64, 128)
SIGNATURE = BUCKET_SIGNATURE
BUCKET_MODES = ("float32", "float16", "dynamic")


def export_buckets(model, buckets: Sequence[int] = DEFAULT_BUCKETS, mode: str = "dynamic",
                   metadata: bool = False) -> bytes:
    """A classifier as one .tflite with a fixed-length signature per bucket (`bucket_16`, ...), weights stored once.

    The longest bucket is the first subgraph, the one a runtime that runs a single signature runs (every text padded
    to it); `BucketRunner` / `TextClassifier` / `tfspeed predict` run each text on the smallest bucket that holds it.
    MediaPipe's `TextClassifier` refuses a file of several subgraphs: for it, export one length.

    Args:
        model: a tf_keras classifier or a tfspeed model directory (as `tfspeed.export.convert`).
        buckets: increasing lengths, at most the model's positions. Defaults to `DEFAULT_BUCKETS`.
        mode: `"float32"`, `"float16"` or `"dynamic"`. Defaults to `"dynamic"`.
        metadata: add TFLite metadata (vocabulary, labels, a softmax `probability` output in every signature) from
            the model directory. Defaults to `False`.
    """
    from tfspeed.compat import tf
    from tfspeed.export.convert import Converter, convert_signatures, max_positions, serving_function

    if mode not in BUCKET_MODES:
        raise ValueError(f"Received an invalid value for `mode`, expected one of {list(BUCKET_MODES)} for a bucket "
                         f"file. Received: mode={mode!r}")
    converter = Converter(model, seq_length="dynamic")  # loads and prepares the model; no length of its own
    buckets = check_buckets(buckets, max_positions(converter.keras_model))
    module = tf.Module()
    module.model = converter._model  # noqa: SLF001 (the prepared copy: wrappers stripped)
    # the longest bucket first: a runtime that runs only the first subgraph takes any text
    signatures = {SIGNATURE.format(b): serving_function(module.model, b) for b in reversed(buckets)}
    data = convert_signatures(module, signatures, mode, f"mode={mode!r}, buckets={list(buckets)}")
    if metadata:
        from tfspeed.export.metadata import add_model_metadata

        if not isinstance(model, (str, Path)):
            raise ValueError("Expected a tfspeed model directory for `model` when `metadata=True` (its vocab.txt and "
                             f"labels go into the file). Received: a {type(model).__name__}; pass metadata=False.")
        data = add_model_metadata(data, model)
    return data


def bucket_signatures(tflite) -> tuple:
    """The bucket lengths of a file written by `export_buckets`, or `()` for another file."""
    from ai_edge_litert.interpreter import Interpreter

    from tfspeed.export.ops import read_tflite

    lengths = [bucket_length(n) for n in Interpreter(model_content=read_tflite(tflite)).get_signature_list()]
    if not lengths or None in lengths:
        return ()
    return tuple(sorted(lengths))


def check_buckets(buckets, max_length=None, argument: str = "buckets") -> tuple:
    """`buckets` as an increasing tuple of positive ints (at most `max_length`), else a ValueError naming them."""
    try:
        values = tuple(int(b) for b in buckets)
    except (TypeError, ValueError):
        raise ValueError(f"Expected increasing positive token lengths for `{argument}` (e.g. 16,32,64,128). "
                         f"Received: {argument}={buckets!r}") from None
    if not values or any(b < 3 for b in values) or any(b >= c for b, c in zip(values, values[1:])):
        raise ValueError(f"Expected increasing token lengths >= 3 for `{argument}` (e.g. 16,32,64,128). Received: "
                         f"{argument}={list(values)}")
    if max_length is not None and values[-1] > max_length:
        raise ValueError(f"Expected buckets of at most {max_length} tokens (the model's positions or --max-length) "
                         f"for `{argument}`. Received: {argument}={list(values)}")
    return values


def parse_buckets(text: str) -> tuple:
    """`"16,32,64,128"` -> (16, 32, 64, 128); `"none"` -> ()."""
    if text.strip().lower() in ("none", "off", ""):
        return ()
    import argparse

    try:
        return check_buckets([t for t in text.split(",") if t.strip()])
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


class BucketRunner:
    """Runs a dynamic-length .tflite on one interpreter per bucket length.

    Args:
        tflite: .tflite path or bytes whose token inputs are [1, -1].
        buckets: increasing bucket lengths; a text longer than the last is cut to it. Defaults to
            `DEFAULT_BUCKETS`.
        num_threads: interpreter threads. Defaults to `1`.
        inputs: input tensor name of each tfspeed input (`input_word_ids`, `input_mask`, `input_type_ids`).
            Defaults to the names that contain them.
    """

    def __init__(self, tflite, buckets: Sequence[int] = DEFAULT_BUCKETS, num_threads: int = 1, inputs=None):
        from ai_edge_litert.interpreter import Interpreter

        from tfspeed.export.ops import read_tflite
        from tfspeed.profile.inputs import normalize_name

        data = read_tflite(tflite)
        self.interpreters = {}
        self.signatures = None
        own = bucket_signatures(data)
        if own:  # a bucket file (`export_buckets`): its own lengths, one interpreter, a runner per signature
            self.buckets = own
            it = Interpreter(model_content=data, num_threads=num_threads)
            self.signatures = {b: it.get_signature_runner(SIGNATURE.format(b)) for b in own}
            self.interpreter = it
            return
        self.buckets = check_buckets(buckets)
        for b in self.buckets:
            it = Interpreter(model_content=data, num_threads=num_threads)
            details = it.get_input_details()
            if any(int(d["shape_signature"][-1]) != -1 for d in details):
                raise ValueError("Expected a dynamic-length .tflite (inputs [1, -1], `seq_length='dynamic'`) or a "
                                 "bucket file (`export_buckets`) for `tflite`. Received inputs of shape "
                                 f"{[list(d['shape_signature']) for d in details]}")
            index = {}
            for name in INPUT_NAMES:
                tensor = (inputs or {}).get(name)
                match = [d["index"] for d in details
                         if (tensor in (d["name"], normalize_name(d["name"])) if tensor else name in d["name"])]
                if len(match) != 1:
                    raise ValueError(f"Expected an input for {name} in the .tflite. Received inputs: "
                                     f"{[d['name'] for d in details]}")
                index[name] = match[0]
                it.resize_tensor_input(match[0], [1, b], strict=True)
            it.allocate_tensors()
            self.interpreters[b] = (it, index, it.get_output_details()[0]["index"])

    def bucket(self, n: int) -> int:
        """The smallest bucket holding `n` tokens (the last one if none does)."""
        return smallest_bucket(self.buckets, n)

    def predict(self, features: dict) -> np.ndarray:
        """The outputs [n, classes] for every example of `features` (int32 arrays [n, seq]), each on its bucket."""
        n = len(features["input_word_ids"])
        return np.stack([self({name: v[i:i + 1] for name, v in features.items()}) for i in range(n)])

    def __call__(self, row: dict) -> np.ndarray:
        """The output for one row ([1, length] arrays; its real tokens are the mask's count)."""
        padded, b = pad_to_bucket(row, self.buckets)
        if self.signatures is not None:
            out = self.signatures[b](**padded)  # one output: logits, or `probability` in a file with metadata
            return np.asarray(next(iter(out.values())))[0].copy()
        it, index, out = self.interpreters[b]
        for name, i in index.items():
            it.set_tensor(i, padded[name])
        it.invoke()
        return it.get_tensor(out)[0].copy()


def buckets_up_to(length: int, buckets: Sequence[int] = DEFAULT_BUCKETS) -> tuple:
    """`buckets` below `length`, then `length`: every text up to `length` tokens has a bucket, none is cut."""
    return tuple(b for b in buckets if b < length) + (int(length),)


def smallest_bucket(buckets: Sequence[int], n: int) -> int:
    """The smallest of the increasing `buckets` holding `n` tokens (the last one if none does)."""
    return next((b for b in buckets if n <= b), buckets[-1])


def pad_to_bucket(row: dict, buckets: Sequence[int]) -> tuple:
    """`(row padded with zeros, or cut, to its bucket, the bucket)` for one row of [1, length] arrays whose real
    tokens are the mask's count."""
    n = max(1, int(np.asarray(row["input_mask"]).sum()))
    b = smallest_bucket(buckets, n)
    take = min(n, b)
    padded = {}
    for name, v in row.items():
        value = np.zeros((1, b), np.int32)
        value[:, :take] = np.asarray(v)[:, :take]
        padded[name] = value
    return padded, b
