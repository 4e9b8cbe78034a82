"""The QAT stage: quantization-aware fine-tuning of a whole BERT into a QAT model directory with its int8 .tflite
(`tfspeed qat`, and the last step of a `tfspeed optimize` recipe).

The directory holds the QAT Keras model (`model.keras`; `tfspeed.artifacts.load_model_dir` loads it),
`model_int8.tflite` (every FULLY_CONNECTED / BATCH_MATMUL int8 unless `float_outputs`), and `metrics.json`: `accuracy`
of the Keras QAT model and `tflite_accuracy` of the file on the test split, the input model's `float_accuracy`,
`argmax_agreement`, the int8 op counts and sizes.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Sequence

import numpy as np

from tfspeed.compress.quantization import QATConfig
from tfspeed.stages.base import StageContext, check_inputs, register_stage

TFLITE_NAME = "model_int8.tflite"


def load_input(source, ctx: StageContext):
    """`(float model, vocab path, seq_length or None, base name, label names, lower_case)` from a model directory or a
    handle."""
    from tfspeed import artifacts, hub

    if artifacts.is_model_dir(source):
        model, info = artifacts.load_model_dir(source)
        if not info.vocab_path:
            raise ValueError(f"The model directory {str(source)!r} has no vocab.txt: cannot tokenize --data.")
        check_inputs(source, info, ctx.dataset)
        return model, info.vocab_path, info.seq_length, info.base, info.label_names, info.lower_case
    model = hub.build_classifier_from(source, num_classes=ctx.dataset.num_classes,
                                      label_names=list(ctx.dataset.label_names))
    return model, str(hub.vocab_path(source)), None, str(source), None, hub.lower_case(source)


@register_stage("qat", QATConfig, help="quantization-aware training of the whole BERT; an all-int8 .tflite")
def run(source, config: QATConfig, out: Path, ctx: StageContext, callbacks: Sequence = ()) -> dict:
    """Quantization-aware fine-tuning of `source` (a model directory, or a preset / TF-Hub handle) into `out`."""
    from tfspeed import _io, artifacts, export
    from tfspeed.compress import quantization as Q
    from tfspeed.export.quantized import int8_fractions, to_tflite
    from tfspeed.profile.env import usable_cores
    from tfspeed.train import accuracy, predict_logits, scores

    _io.check_writable(out, ctx.overwrite)
    dataset = ctx.dataset
    model, vocab, seq_length, base, label_names, lower_case = load_input(source, ctx)
    if label_names is not None and len(label_names) != dataset.num_classes:
        raise ValueError(f"The model has {len(label_names)} classes ({label_names}) but --data has "
                         f"{dataset.num_classes} ({dataset.label_names}).")
    seq_length = ctx.seq_length or seq_length or 128
    encoded = ctx.encoded(vocab, seq_length, lower_case)
    float_accuracy = ctx.known_accuracy(source, model, encoded.test) if not Q.is_quantized(model) else None
    start = time.perf_counter()
    qat_model, history = Q.qat_fit(model, encoded.train, encoded.validation, config=config, strategy=ctx.strategy,
                                   callbacks=[*ctx.fit_callbacks("qat"), *callbacks], verbose=ctx.verbose)
    train_seconds = time.perf_counter() - start
    keras_logits = predict_logits(qat_model, encoded.test)
    tflite = to_tflite(qat_model, seq_length)
    lite_logits = export.evaluate(tflite, encoded.test, num_threads=usable_cores())
    labels = encoded.test.labels
    hist = export.op_histogram(tflite)
    metrics = {
        **scores(keras_logits.argmax(-1), labels, label_names or encoded.label_names),
        **{f"tflite_{k}": v for k, v in scores(lite_logits.argmax(-1), labels,
                                               label_names or encoded.label_names).items()},
        "float_accuracy": float_accuracy,
        "argmax_agreement": float(np.mean(keras_logits.argmax(-1) == lite_logits.argmax(-1))),
        "max_abs_logit_diff": float(np.abs(keras_logits - lite_logits).max()),
        "int8_fraction": int8_fractions(tflite),
        "int8_ops": hist["int8"], "float_ops": hist["float_ops"], **export.sizes(tflite),
        "split": "test", "num_examples": len(labels), "validation_accuracy": accuracy(qat_model, encoded.validation),
        "dataset": dataset.name, "model": str(source), "seq_length": seq_length, "epochs": config.epochs,
        "batch_size": config.batch_size, "learning_rate": config.learning_rate,
        "preserve_sparsity": config.preserve_sparsity, "float_outputs": list(config.float_outputs),
        "outlier_channels": Q.split_of(qat_model), "smoothed_layer_norms": Q.smoothed_layer_norms(qat_model),
        "outlier_heads": Q.split_heads_of(qat_model),
        "calibration_percentile": config.calibration_percentile, "freeze_ranges": config.freeze_ranges,
        "distill": config.distill, "train_examples": len(encoded.train),
        "train_seconds": train_seconds, "tflite": TFLITE_NAME, "metadata_bytes": None,
        "history": {k: [float(v) for v in vs] for k, vs in history.history.items()},
        "config": config.to_dict(),
    }
    label_names = label_names or encoded.label_names
    from tfspeed.export.metadata import metadata_refused

    if config.metadata and metadata_refused(dataset.is_pairs, lower_case) is None:
        from tfspeed.export.metadata import add_metadata, metadata_bytes

        tflite = add_metadata(tflite, vocab, label_names)
        metrics["metadata_bytes"] = metadata_bytes(tflite)
    info = artifacts.ModelInfo(seq_length=seq_length, label_names=label_names, base=base,
                               stage="qat", vocab_path=str(vocab),
                               extra={"tflite": TFLITE_NAME, "preserve_sparsity": config.preserve_sparsity},
                               lower_case=lower_case, text_pair=dataset.is_pairs)
    artifacts.save_model_dir(qat_model, out, info, metrics, overwrite=ctx.overwrite,
                             extra_files=lambda tmp: (tmp / TFLITE_NAME).write_bytes(tflite))
    return metrics
