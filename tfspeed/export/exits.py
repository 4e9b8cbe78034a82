"""A runtime that really stops: an early-exit BERT as one .tflite with one signature per segment.

A single graph computes every layer whatever its exits say. `export_exits` cuts the model at its exits instead:
signature `segment_0` runs the embeddings, the layers up to the first exit and that exit's head; `segment_j` runs the
layers from exit j to exit j+1 and its head, on the hidden state the previous segment returned; the last segment runs
the remaining layers and the final classifier. Every layer's weights are in exactly one segment, so the file is the
size of the plain one plus the exit heads. `ExitRunner` runs segment after segment and stops at the first exit whose
rule is met; an app does the same with the LiteRT signature runners:

```
outputs = runner("segment_0", input_word_ids=ids, input_mask=mask, input_type_ids=types)
for j in range(1, num_segments):
    if confident(softmax(outputs["logits"])): break
    outputs = runner(f"segment_{j}", hidden=outputs["hidden"], input_mask=mask)
```

A cascade of two files (a small model first, a large one when it is unsure) is `CascadeRunner`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from tfspeed.compat import tf
from tfspeed.compress import exits as E
from tfspeed.export.convert import convert_signatures
from tfspeed.models.bert import INPUT_NAMES, LOWRANK_SUFFIX, config_of
from tfspeed.train import softmax

SEGMENT = "segment_{}"
EXITS_JSON = "exits.json"
"""What an exits model directory (`tfspeed exits`) says of its file: layers, rule, threshold, curves."""


def _get(model, name):
    return model.get_layer(name)


def _dense(model, name):
    layer = _get(model, name)
    try:
        low = _get(model, name + LOWRANK_SUFFIX)
    except ValueError:
        return layer
    return lambda x: layer(low(x))


def _embed(model, x: dict):
    word = _get(model, "word_embeddings")(x["input_word_ids"])
    position = _get(model, "position_embedding")(word)
    types = _get(model, "type_embeddings")(x["input_type_ids"])
    hidden = _get(model, "embeddings_add")([word, position, types])
    return _get(model, "embeddings_layer_norm")(hidden)


def _layer(model, i: int, x, mask):
    """Encoder layer `i` (0-based) at inference, as `tfspeed.models.bert.bert_outputs` wires it (no dropout)."""
    p = f"layer_{i}_"
    query, key, value = (_dense(model, p + n)(x) for n in ("query", "key", "value"))
    scores = _get(model, p + "scores")([query, key])
    probs = _get(model, p + "softmax")([scores, mask])
    context = _get(model, p + "context")([probs, value])
    x = _get(model, p + "attention_residual")([x, _dense(model, p + "attention_output")(context)])
    x = _get(model, p + "attention_layer_norm")(x)
    out = _dense(model, p + "output")(_dense(model, p + "intermediate")(x))
    x = _get(model, p + "output_residual")([x, out])
    return _get(model, p + "output_layer_norm")(x)


def _exit_head(model, layer: int, hidden, input_mask):
    prefix = f"{E.EXIT_PREFIX}{layer}"
    names = {lay.name for lay in model.layers}
    if f"{prefix}_mean" in names:
        pooled = _get(model, f"{prefix}_mean")([hidden, input_mask])
    else:
        pooled = _get(model, f"{prefix}_first_token")(hidden)
    return _get(model, prefix)(_get(model, f"{prefix}_pooler")(pooled))


def _final_head(model, hidden):
    pooled = _dense(model, "pooler_dense")(_get(model, "pooler_first_token")(hidden))
    return _get(model, "classifier")(pooled)


class _Segments(tf.Module):
    """The exits model as one tf.function per segment."""

    def __init__(self, model, seq_length: Optional[int]):
        super().__init__()
        self.model = model
        config = config_of(model)
        layers = E.exit_layers(model)
        bounds = [0, *layers, config.num_layers]
        ids = {n: tf.TensorSpec([1, seq_length], tf.int32, name=n) for n in INPUT_NAMES}
        hidden_spec = tf.TensorSpec([1, seq_length, config.hidden_size], tf.float32, name="hidden")
        mask_spec = tf.TensorSpec([1, seq_length], tf.int32, name="input_mask")
        self.functions = {SEGMENT.format(j): self._segment(bounds[j], bounds[j + 1], j == 0,
                                                          j == len(bounds) - 2, ids, hidden_spec, mask_spec)
                          for j in range(len(bounds) - 1)}

    def _segment(self, start: int, stop: int, first: bool, last: bool, ids, hidden_spec, mask_spec):
        model = self.model

        def run(hidden, input_mask):
            mask = _get(model, "attention_mask")(input_mask)
            for i in range(start, stop):
                hidden = _layer(model, i, hidden, mask)
            if last:
                return {"logits": _final_head(model, hidden)}
            return {"hidden": hidden, "logits": _exit_head(model, stop, hidden, input_mask)}

        # plain Python loops only: no autograph (it also mixed up two local functions of one name)
        if first:
            def first_segment(x):
                return run(_embed(model, x), x["input_mask"])

            return tf.function(first_segment, input_signature=[ids], autograph=False)

        def next_segment(hidden, input_mask):
            return run(hidden, input_mask)

        return tf.function(next_segment, input_signature=[hidden_spec, mask_spec], autograph=False)


def export_exits(exits, mode: str = "dynamic", seq_length=128) -> bytes:
    """The early-exit model `exits` (from `tfspeed.compress.exits.add_exits`) as one .tflite with a signature per
    segment (module docstring).

    Args:
        exits: a model with exits.
        mode: `"float32"`, `"float16"` or `"dynamic"` (dynamic-range int8 weights). Defaults to `"dynamic"`.
        seq_length: the fixed length of the inputs, or `"dynamic"` ([1, -1]: each text at its own length).
            Defaults to `128`.
    """
    E.exit_layers(exits)  # a clear error for a model without exits
    if mode not in ("float32", "float16", "dynamic"):
        raise ValueError(f"Received an invalid value for `mode`, expected 'float32', 'float16' or 'dynamic' for an "
                         f"early-exit file. Received: mode={mode!r}")
    if seq_length == "dynamic":
        length = None
    elif isinstance(seq_length, int) and seq_length >= 3:
        length = seq_length
    else:
        raise ValueError(f"Received an invalid value for `seq_length`, expected an integer >= 3 or 'dynamic'. "
                         f"Received: seq_length={seq_length!r}")
    module = _Segments(exits, length)
    signatures = {name: fn.get_concrete_function() for name, fn in module.functions.items()}
    return convert_signatures(module, signatures, mode, f"early exits, mode={mode!r}")


class ExitRunner:
    """Runs a segmented early-exit .tflite on one text at a time, stopping at the first confident exit.

    Args:
        model: the .tflite path or bytes (`export_exits`).
        layers: the exits' layers (1-based), in order, and `num_layers`: the encoder's depth (for `layers_used`).
        rule / threshold: the exit rule (`tfspeed.compress.exits.ExitRule`) and its threshold (`calibrate`).
        num_threads: interpreter threads. Defaults to `1`.
        buckets: for a dynamic-length file (`export_exits(..., seq_length="dynamic")`), run each text on the
            smallest of these lengths that holds it, one interpreter per length (as `tfspeed.export.buckets` does for
            plain files); `None` runs each text at its exact length (the interpreter re-plans on every new length).
            Ignored for a fixed-length file. Defaults to `None`.
    """

    def __init__(self, model, layers: Sequence[int], num_layers: int, rule, threshold: float, num_threads: int = 1,
                 buckets: Optional[Sequence[int]] = None):
        from ai_edge_litert.interpreter import Interpreter

        data = Path(model).read_bytes() if isinstance(model, (str, Path)) else bytes(model)
        interpreter = Interpreter(model_content=data, num_threads=num_threads)
        found = list(interpreter.get_signature_list())
        names = [SEGMENT.format(j) for j in range(len(found)) if SEGMENT.format(j) in found]
        if not names or len(names) != len(found):
            raise ValueError(f"Expected an early-exit .tflite with signatures segment_0, segment_1, ... for `model` "
                             f"(tfspeed.export.exits.export_exits). Received signatures: {found}")
        if len(names) != len(layers) + 1:
            raise ValueError(f"Expected {len(layers) + 1} segments for exits after layers {list(layers)}. Received: "
                             f"a file with {len(names)} segments.")
        first = interpreter.get_signature_runner(names[0]).get_input_details()
        self.dynamic = any(-1 in list(d["shape_signature"]) for d in first.values())
        self.buckets = None
        if self.dynamic and buckets:
            from tfspeed.export.buckets import check_buckets

            self.buckets = check_buckets(buckets)
            self._runners = {b: [it.get_signature_runner(n) for n in names]
                             for b, it in ((b, Interpreter(model_content=data, num_threads=num_threads))
                                           for b in self.buckets)}
        else:
            self._runners = {None: [interpreter.get_signature_runner(n) for n in names]}
        self.interpreter = interpreter
        self.layers, self.num_layers = tuple(layers), int(num_layers)
        self.rule, self.threshold = E.ExitRule.parse("rule", rule), float(threshold)
        self.size_bytes = len(data)

    @property
    def runners(self) -> list:
        """The signature runners of the segments (of the longest bucket's interpreter with buckets)."""
        return self._runners[max(self._runners, key=lambda b: b or 0)]

    def _prepare(self, row: dict) -> tuple:
        """(row cut or padded to the length it runs at, the segment runners for that length)."""
        if not self.dynamic:
            return row, self._runners[None]
        if self.buckets is None:
            n = max(1, int(np.asarray(row["input_mask"]).sum()))
            return {k: np.asarray(v)[:, :n] for k, v in row.items()}, self._runners[None]
        from tfspeed.export.buckets import pad_to_bucket

        padded, b = pad_to_bucket(row, self.buckets)
        return padded, self._runners[b]

    def run(self, row: dict) -> tuple:
        """(probabilities, exit index) of one example (`row`: int32 [1, seq] arrays by input name); the final
        classifier is exit `len(layers)`."""
        row, runners = self._prepare(row)
        mask = row["input_mask"]
        out = runners[0](**row)
        probs = []
        for j in range(1, len(runners)):
            p = softmax(out["logits"])[0]
            probs.append(p)
            if E.confident(np.asarray(probs)[None], self.rule, self.threshold, final=False)[0, -1]:
                return p, j - 1
            out = runners[j](hidden=out["hidden"], input_mask=mask)
        return softmax(out["logits"])[0], len(runners) - 1

    def predict(self, features: dict) -> dict:
        """Every example of `features` (int32 arrays [n, seq]): `probabilities`, `exit_index`, `layers_used`."""
        n = len(features["input_word_ids"])
        probs, index = [], []
        for i in range(n):
            p, k = self.run({name: v[i:i + 1] for name, v in features.items()})
            probs.append(p)
            index.append(k)
        depth = np.asarray(list(self.layers) + [self.num_layers])
        index = np.asarray(index)
        return {"probabilities": np.asarray(probs), "exit_index": index, "layers_used": depth[index]}


def runner_of(model_dir, num_threads: int = 1, tflite=None, buckets=None) -> ExitRunner:
    """The `ExitRunner` of an exits model directory (`tfspeed exits`): its `exits.tflite` (or `tflite`, another export
    of the same exits model, e.g. a dynamic-length one) with the calibrated rule and threshold of its `exits.json`;
    `buckets` as in `ExitRunner`."""
    import json

    path = Path(model_dir)
    if not (path / EXITS_JSON).is_file():
        raise ValueError(f"Expected a model directory written by `tfspeed exits` (with {EXITS_JSON}) for `model`. "
                         f"Received: {str(path)!r} without it.")
    d = json.loads((path / EXITS_JSON).read_text())
    return ExitRunner(tflite if tflite is not None else path / d["tflite"], d["layers"], d["num_layers"], d["rule"],
                      d["threshold"], num_threads=num_threads, buckets=buckets)


def is_exits_dir(path) -> bool:
    """Whether `path` is an early-exit model directory (`tfspeed exits`)."""
    return isinstance(path, (str, Path)) and (Path(path) / EXITS_JSON).is_file()


class CascadeRunner:
    """Two classifiers in a cascade: the first (small) answers when its top probability is at least `threshold`,
    else the second (large) does. Each is a `tfspeed.export.TextClassifier` (its own vocabulary and length).

    Args:
        first / second: `TextClassifier`s (or anything with `predict_proba(texts)`).
        threshold: the first model's confidence needed to answer (`calibrate_cascade`).
    """

    def __init__(self, first, second, threshold: float):
        self.first, self.second, self.threshold = first, second, float(threshold)

    def classify(self, text: str) -> tuple:
        """(probabilities, 0 if the first model answered else 1) of one text."""
        p = self.first.predict_proba([text])[0]
        if p.max() >= self.threshold:
            return p, 0
        return self.second.predict_proba([text])[0], 1


def calibrate_cascade(first_probs: np.ndarray, second_probs: np.ndarray, labels: np.ndarray, cost_ratio: float,
                      budget: float = 0.005) -> dict:
    """The confidence threshold of the first model that costs least (mean cost, the first model costing `cost_ratio`
    of the second) while the accuracy stays within `budget` of the second model's, on labelled data (validation).
    Returns the threshold, its accuracy, the share the second model answers, the mean cost and the curve."""
    budget = E.check_budget(budget)
    labels = np.asarray(labels)
    full = float(np.mean(second_probs.argmax(-1) == labels))
    points = []
    confidence = first_probs.max(-1)
    for t in np.concatenate([[1.0 + 1e-9], np.unique(confidence)[::-1], [0.0]]):
        second = confidence < t
        pred = np.where(second, second_probs.argmax(-1), first_probs.argmax(-1))
        points.append({"threshold": float(t), "accuracy": float(np.mean(pred == labels)),
                       "second_share": float(second.mean()), "mean_cost": float(cost_ratio + second.mean())})
    within = [p for p in points if p["accuracy"] >= full - budget - 1e-12]
    best = min(within, key=lambda p: (p["mean_cost"], -p["accuracy"]))
    return {**best, "budget": budget, "full_accuracy": full, "cost_ratio": cost_ratio, "curve": points}
