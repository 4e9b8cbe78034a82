"""Running a .tflite over labelled data, and how far it is from its Keras model."""

from __future__ import annotations

import time
from typing import Optional

import numpy as np

from tfspeed.export import ops as _ops
from tfspeed.export.calibration import fit_features
from tfspeed.models.bert import INPUT_NAMES
from tfspeed.train import scores, softmax  # noqa: F401  (softmax: also read from here)

REPORT_VERSION = 1


class TFLiteClassifier:
    """A .tflite classifier behind `ai_edge_litert`: `logits(features)` over rows, batch 1, fixed seq_length.

    A file with a `probability` output (exported with metadata: softmax in the graph) gives log-probabilities from
    `logits`: they differ from the logits by a constant per row, so argmax and accuracy are the same;
    `probabilities(features)` gives the output itself.

    A dynamic-length file (inputs [1, -1]) runs each row at its own length (the mask's count of real tokens):
    `seq_length` is then `None` and rows of any padded length are accepted.

    Args:
        tflite: .tflite bytes or path.
        num_threads: interpreter threads. Defaults to `1`.
    """

    def __init__(self, tflite, num_threads: int = 1):
        from ai_edge_litert.interpreter import Interpreter

        self.data = _ops.read_tflite(tflite)
        try:
            self.interpreter = Interpreter(model_content=self.data, num_threads=num_threads)
            self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as e:
            raise ValueError(f"Expected a valid .tflite model for `tflite`; the interpreter refused it: {e}") from e
        details = {d["name"]: d for d in self.interpreter.get_input_details()}
        signatures = self.interpreter._get_full_signature_list()  # noqa: SLF001 - tensor indices by input name
        sig = signatures.get("serving_default") or (next(iter(signatures.values())) if signatures else None)
        self.inputs = {}
        for name in INPUT_NAMES:
            index = sig["inputs"].get(name) if sig else None
            if index is None:
                matches = [d["index"] for n, d in details.items() if name in n]
                if len(matches) != 1:
                    raise ValueError(f"Expected a .tflite with inputs {list(INPUT_NAMES)} (a tfspeed export). "
                                     f"Received inputs: {sorted(details)}")
                index = matches[0]
            self.inputs[name] = index
        by_index = {d["index"]: d for d in details.values()}
        shapes = {tuple(by_index[i]["shape_signature"]) for i in self.inputs.values()}
        if len(shapes) != 1 or len(next(iter(shapes))) != 2 or next(iter(shapes))[0] != 1:
            raise ValueError(f"Expected [1, seq_length] or [1, -1] inputs in the .tflite. Received shapes: "
                             f"{sorted(shapes)}")
        length = int(next(iter(shapes))[1])
        self.dynamic = length == -1
        self.seq_length = None if self.dynamic else length
        self._length = int(by_index[self.inputs[INPUT_NAMES[0]]]["shape"][1])
        outputs = sig["outputs"] if sig else {}
        self.returns_probabilities = "probability" in outputs and "logits" not in outputs
        out = outputs.get("logits", outputs.get("probability"))
        self.output = out if out is not None else self.interpreter.get_output_details()[0]["index"]
        detail = next(d for d in self.interpreter.get_output_details() if d["index"] == self.output)
        scale, zero = detail.get("quantization", (0.0, 0))
        # an integer output (a fully quantized file): dequantized, so accuracy and parity compare real values
        self._dequantize = (float(scale), int(zero)) if np.dtype(detail["dtype"]).kind in "iu" and scale else None

    def __call__(self, row: dict) -> np.ndarray:
        if self.dynamic:
            n = max(1, int(np.asarray(row["input_mask"]).sum()))
            row = {k: np.asarray(v)[:, :n] for k, v in row.items()}
            if n != self._length:
                for index in self.inputs.values():
                    self.interpreter.resize_tensor_input(index, [1, n], strict=True)
                self.interpreter.allocate_tensors()
                self._length = n
        for name, index in self.inputs.items():
            self.interpreter.set_tensor(index, row[name])
        self.interpreter.invoke()
        out = self.interpreter.get_tensor(self.output)[0].copy()
        if self._dequantize is not None:
            scale, zero = self._dequantize
            out = (out.astype(np.float32) - zero) * scale
        return out

    def outputs(self, features: dict) -> np.ndarray:
        """The file's output for every row, as it computes it (logits, or probabilities with metadata)."""
        feats = features if self.dynamic else fit_features(features, self.seq_length, argument="split")
        n = len(feats[INPUT_NAMES[0]])
        order = np.arange(n)
        if self.dynamic:  # shortest first: the interpreter is resized (and re-planned) once per length, not per row
            order = np.argsort(np.asarray(feats["input_mask"]).sum(-1), kind="stable")
        out = [None] * n
        for i in order:
            out[i] = self({k: v[i:i + 1] for k, v in feats.items()})
        return np.stack(out)

    def logits(self, features: dict) -> np.ndarray:
        """Logits [n, num_classes] (log-probabilities for a file whose output is `probability`)."""
        out = self.outputs(features)
        return np.log(np.maximum(out, np.finfo(np.float32).tiny)) if self.returns_probabilities else out

    def probabilities(self, features: dict) -> np.ndarray:
        """Class probabilities [n, num_classes]: the output of a `probability` file, else a softmax of the logits."""
        out = self.outputs(features)
        return out if self.returns_probabilities else softmax(out)

    def median_latency_ms(self, row: dict, runs: int = 20, warmup: int = 3) -> float:
        """Median wall time of `runs` invokes on one input after `warmup` untimed ones."""
        for _ in range(warmup):
            self(row)
        times = []
        for _ in range(runs):
            t = time.perf_counter()
            self(row)
            times.append((time.perf_counter() - t) * 1e3)
        return float(np.median(times))


def evaluate(tflite, split, num_threads: int = 1) -> np.ndarray:
    """Logits [n, num_classes] of a .tflite over an `EncodedSplit` (or a dict of token-id arrays), in order.

    Runs the interpreter one example at a time (batch 1); each example is padded or cut to the model's seq_length.
    """
    features = split.features if hasattr(split, "features") else split
    return TFLiteClassifier(tflite, num_threads).logits(features)


def _split_at(split, seq_length):
    from tfspeed.data import EncodedSplit

    return EncodedSplit(fit_features(split.features, seq_length, argument="split"), split.labels)


def keras_logits(keras_model, split, seq_length: int) -> np.ndarray:
    """The Keras model's logits on the same tokens the .tflite sees (cut or padded to `seq_length`)."""
    from tfspeed.train import predict_logits

    return predict_logits(keras_model, _split_at(split, seq_length))


def parity_report(tflite, keras_model, split, num_threads: int = 1, keras_logits_=None, name: Optional[str] = None,
                  latency_runs: int = 0, label_names=None) -> dict:
    """How a .tflite compares with its Keras model on labelled data.

    Args:
        tflite: .tflite bytes or path.
        keras_model: the Keras classifier it came from (or its model directory).
        split: a labelled `EncodedSplit`.
        num_threads: interpreter threads. Defaults to `1`.
        keras_logits_: precomputed Keras logits for `split` (to compare several exports). Defaults to `None`.
        name: a label for the report. Defaults to `None`.
        latency_runs: when > 0, a quick median latency over that many runs (1 example). Defaults to `0`.
        label_names: names of the classes, in index order, for `per_class_accuracy`. Defaults to `None` (`"0"`,
            `"1"`, ...).

    Returns:
        dict with `accuracy`, `macro_f1`, `per_class_accuracy` (see `tfspeed.train.scores`), `keras_accuracy`,
        `accuracy_drop`, `argmax_agreement`, `max_abs_logit_diff`, `mean_abs_logit_diff`, `size_bytes`,
        `gzip_bytes`, `op_histogram` (see `op_histogram`), `fell_back` (float ops other than quantize glue),
        `integer` (see `ops.integer_report`: `fully_integer` and the float ops), `seq_length`, `num_examples`
        and optionally `latency_ms`.
    """
    from tfspeed.export.convert import load_classifier

    runner = TFLiteClassifier(tflite, num_threads)
    lite = runner.logits(split.features)
    length = runner.seq_length or split.features[INPUT_NAMES[0]].shape[1]  # a dynamic file: the split's padding
    if keras_logits_ is None:
        model, _ = load_classifier(keras_model)
        keras_logits_ = keras_logits(model, split, length)
    keras_logits_ = np.asarray(keras_logits_)
    if runner.returns_probabilities:  # compare log-probabilities with log-probabilities
        keras_logits_ = np.log(np.maximum(softmax(keras_logits_), np.finfo(np.float32).tiny))
    if keras_logits_.shape != lite.shape:
        raise ValueError(f"Expected Keras logits of shape {lite.shape}. Received: {keras_logits_.shape}")
    labels = np.asarray(split.labels)
    diff = np.abs(lite.astype(np.float64) - keras_logits_.astype(np.float64))
    hist = _ops.op_histogram(runner.data)
    report = {"format_version": REPORT_VERSION, "name": name,
              "seq_length": "dynamic" if runner.dynamic else runner.seq_length,
              "num_examples": int(len(labels)),
              **scores(lite.argmax(-1), labels, label_names or [str(i) for i in range(lite.shape[-1])]),
              "keras_accuracy": float(np.mean(keras_logits_.argmax(-1) == labels)),
              "argmax_agreement": float(np.mean(lite.argmax(-1) == keras_logits_.argmax(-1))),
              "max_abs_logit_diff": float(diff.max()), "mean_abs_logit_diff": float(diff.mean()),
              **_ops.sizes(runner.data), "op_histogram": hist, "fell_back": _ops.fell_back(hist),
              "integer": _ops.integer_report(runner.data)}
    report["accuracy_drop"] = report["keras_accuracy"] - report["accuracy"]
    if latency_runs:
        row = {k: v[:1] for k, v in fit_features(split.features, length, "split").items()}
        report["latency_ms"] = runner.median_latency_ms(row, runs=latency_runs)
    return report


def _mb(n):
    return f"{n / 1e6:.2f} MB"


def format_report(report: dict) -> str:
    """A parity report as a plain-text table."""
    rows = [("examples", str(report["num_examples"])), ("seq_length", str(report["seq_length"])),
            ("accuracy (tflite)", f"{report['accuracy']:.4f}"), ("accuracy (keras)", f"{report['keras_accuracy']:.4f}"),
            ("accuracy drop", f"{100 * report['accuracy_drop']:+.2f} points"),
            ("argmax agreement", f"{report['argmax_agreement']:.4f}"),
            ("max |logit diff|", f"{report['max_abs_logit_diff']:.4g}"),
            ("mean |logit diff|", f"{report['mean_abs_logit_diff']:.4g}"),
            ("size", _mb(report["size_bytes"])), ("size gzip", _mb(report["gzip_bytes"]))]
    if "latency_ms" in report:
        rows.append(("latency (median)", f"{report['latency_ms']:.2f} ms"))
    for op, c in report["op_histogram"]["int8"].items():
        if c["total"]:
            extra = f", {c['hybrid-int8']} hybrid" if c["hybrid-int8"] else ""
            extra += f", {c['hybrid-int4']} hybrid int4" if c.get("hybrid-int4") else ""
            extra += f", {c['int16']} int16" if c.get("int16") else ""
            rows.append((op, f"{c['int8']}/{c['total']} int8{extra}"))
    fell = report.get("fell_back") or {}
    rows.append(("float ops", ", ".join(f"{k} x{v}" for k, v in fell.items()) or "none"))
    if "integer" in report:
        integer = report["integer"]
        rows.append(("integer-only", "yes" if integer["fully_integer"] else
                     "no: " + ", ".join(f"{k} x{v}" for k, v in integer["float_ops"].items())))
    width = max(len(k) for k, _ in rows)
    title = f"Parity report{': ' + report['name'] if report.get('name') else ''}"
    lines = [title, "-" * len(title)] + [f"{k:<{width}}  {v}" for k, v in rows]
    lines.append("")
    lines.append(f"{'op':<22} {'kind':<12} count")
    for op, kinds in report["op_histogram"]["ops"].items():
        for kind, count in kinds.items():
            lines.append(f"{op:<22} {kind:<12} {count}")
    return "\n".join(lines)
