"""The sparsity report of a pruned model with the sizes of its .tflite files (float and dynamic range), raw and gzip.

Unstructured sparsity leaves a .tflite file's raw size unchanged and shrinks its gzip: this report shows both, beside
`tfspeed.compress.pruning.sparsity_report` (sparsity per kernel, gzip of the weights), which it extends.

Example (a tiny random-weight BERT pruned to 50% in one step of fitting, as in `tfspeed.compress.pruning`; a pruned
model is stripped before it is converted):

>>> from tfspeed.compat import keras
>>> from tfspeed.compress.pruning import prune, pruning_callbacks
>>> from tfspeed.data import EncodedSplit
>>> from tfspeed.export.sparsity import sparsity_report
>>> from tfspeed.hub import sample_inputs
>>> from tfspeed.models import BertConfig, build_classifier
>>> config = BertConfig(vocab_size=100, hidden_size=16, num_layers=2, num_heads=2, intermediate_size=32,
...                     max_positions=16)
>>> pruned = prune(build_classifier(config, num_classes=2), sparsity=0.5, schedule="constant", frequency=1)
>>> train = EncodedSplit(sample_inputs(config, batch=8, seq_length=8), [0, 1] * 4)
>>> pruned.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True), run_eagerly=True)
>>> _ = pruned.fit(train.features, train.labels, epochs=1, callbacks=pruning_callbacks(), verbose=0)
>>> report = sparsity_report(pruned, seq_length=8)
>>> report["sparsity"], report["tflite"]["float"]["gzip_bytes"] < report["tflite"]["float"]["bytes"]
(0.5, True)
"""

from __future__ import annotations

from typing import Optional, Sequence

from tfspeed.compat import keras
from tfspeed.compress.pruning.report import _gzip_size, _report
from tfspeed.export.convert import convert

MODES = ("float", "dynamic")


def to_tflite(model: keras.Model, mode: str = "dynamic", seq_length: int = 128) -> bytes:
    """A .tflite of `model` on a fixed [1, seq_length] signature (through `tfspeed.export.convert`).

    Args:
        model: a tf_keras classifier (pruning wrappers are stripped on a copy).
        mode: `"float"` (float32) or `"dynamic"` (dynamic-range int8). Defaults to `"dynamic"`.
        seq_length: fixed sequence length of the signature. Defaults to `128`.
    """
    if mode not in MODES:
        raise ValueError(f"Received an invalid value for `mode`, expected 'float' or 'dynamic'. "
                         f"Received: mode={mode!r}")
    return convert(model, mode="float32" if mode == "float" else "dynamic", seq_length=seq_length, metadata=False)


def sparsity_report(model: keras.Model, include_embeddings: bool = False, include_classifier: bool = False,
                    layers: Optional[Sequence[str]] = None, tflite: bool = True, seq_length: int = 128) -> dict:
    """Sparsity per layer and overall, and sizes: gzip of the weights, raw and gzip of the float / dynamic .tflite.

    Args:
        model: a pruned (wrapped) or stripped model, native or hub.
        include_embeddings, include_classifier, layers: which kernels count, as for `prune`. Defaults to `False`,
            `False` and `None`.
        tflite: convert to float and dynamic-range .tflite and report their sizes (seconds to minutes). Defaults to
            `True`; a pruned model is stripped first. `False` gives `tfspeed.compress.pruning.sparsity_report`.
        seq_length: fixed sequence length of the .tflite signature. Defaults to `128`.

    Returns:
        `{"sparsity", "targeted_params", "layers": {name: {"sparsity", "params"}}, "model_sparsity",
        "weights_bytes", "weights_gzip_bytes", "tflite": {"float": {"bytes", "gzip_bytes"}, "dynamic": {...}},
        "tflite_seq_length"}`.
    """
    report, plain = _report(model, include_embeddings, include_classifier, layers)
    if tflite:
        report["tflite"] = {}
        for mode in MODES:
            content = to_tflite(plain, mode, seq_length)
            report["tflite"][mode] = {"bytes": len(content), "gzip_bytes": _gzip_size(content)}
        report["tflite_seq_length"] = seq_length
    return report


__all__ = ["sparsity_report", "to_tflite"]
