"""`tfspeed qat MODEL --data rotten_tomatoes --epochs N --out DIR`: QAT fine-tuning of a whole BERT to an int8 .tflite.

Writes a model directory: the QAT Keras model (`model.keras`, load it with `load_model_dir(DIR,
scope=tfspeed.compress.qat.custom_objects())`), `model_int8.tflite` (every FULLY_CONNECTED / BATCH_MATMUL int8
unless `--float-outputs`),
`metrics.json` (`accuracy` of the Keras QAT model and `tflite_accuracy` of the file on the test split, the input
model's `float_accuracy`, `argmax_agreement`, the int8 op counts, sizes), plus `vocab.txt`, `tfspeed.json`, `encoder/`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from tfspeed import _cli

TFLITE_NAME = "model_int8.tflite"


def register(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "qat", help="quantization-aware fine-tuning of a whole BERT; writes the QAT model and an int8 .tflite",
        description="Quantization-aware training: fake quantization on every Dense, LayerNorm output and attention "
                    "matmul, fine-tuned with fit, converted to a .tflite whose FULLY_CONNECTED and BATCH_MATMUL ops "
                    "are all int8.")
    p.add_argument("model", help="a tfspeed model directory (e.g. from `tfspeed finetune`; hub-layer models are imported "
                                 "into the native encoder), or a preset / TF-Hub encoder handle")
    p.add_argument("--seq-length", type=int, default=None,
                   help="tokens per example for training and the .tflite (default: the model directory's, else 128)")
    p.add_argument("--float-outputs", default="",
                   help="comma-separated regular expressions on layer names whose outputs stay float (their "
                        "FULLY_CONNECTED / BATCH_MATMUL run float); 'outliers' = the FFN output projections "
                        r"(layer_\d+_output), which buys accuracy on BERTs with outlier channels (default: none, "
                        "every matmul int8)")
    p.add_argument("--outlier-channels", choices=("auto", "none"), default="auto",
                   help="'auto': the FFN output channels whose range is far above the others' (BERT's outlier "
                        "dimensions, found on the training data) get a FULLY_CONNECTED and an int8 range of their own, "
                        "so the other channels keep a fine int8 step; 'none': one range per output (default: auto)")
    p.add_argument("--smooth", choices=("auto", "none"), default="auto",
                   help="'auto': also scale the LayerNorm outputs' outlier channels down into the next Dense kernels "
                        "(SmoothQuant-style) and compute the FFN intermediate's outlier units and the attention heads "
                        "with outlier scores apart, so those int8 inputs get a finer step and the .tflite follows the "
                        "Keras model more closely (default: auto)")
    p.add_argument("--calibration-percentile", type=_percentile, default=99.99,
                   help="activation ranges from this percentile of the calibration batches' values (e.g. 99.99: the "
                        "rare extremes are clipped, the rest get a finer int8 step), or 'none' for min / max "
                        "(default: 99.99)")
    p.add_argument("--freeze-ranges", action=argparse.BooleanOptionalAction, default=True,
                   help="keep the calibrated activation ranges through fine-tuning; --no-freeze-ranges lets the "
                        "moving averages follow the training batches (default: on)")
    p.add_argument("--distill", action=argparse.BooleanOptionalAction, default=True,
                   help="fine-tune through the Distiller with the float model as teacher (alpha 0.5, temperature 2); "
                        "--no-distill fits on the labels alone (default: on)")
    p.add_argument("--preserve-sparsity", action="store_true",
                   help="keep the zeros of a pruned model through QAT (prune-preserving 8-bit scheme)")
    _cli.add_data_args(p)
    _cli.add_train_args(p, epochs=1, lr=2e-5)
    _cli.add_out_args(p, "model directory to write")
    p.set_defaults(func=run)
    return p


def _load_input(model_arg, num_classes: int):
    """(float model, vocab path, seq_length or None, base name) from a model directory or a hub handle."""
    from tfspeed import artifacts, hub
    from tfspeed.export.convert import load_scope

    if artifacts.is_model_dir(model_arg):
        model, info = artifacts.load_model_dir(model_arg, scope=load_scope())
        if not info.vocab_path:
            raise ValueError(f"The model directory {model_arg!r} has no vocab.txt: cannot tokenize --data.")
        return model, info.vocab_path, info.seq_length, info.base, info.label_names
    model = hub.build_classifier_from(model_arg, num_classes=num_classes)
    return model, str(hub.vocab_path(model_arg)), None, str(model_arg), None


def _percentile(text: str):
    if text.strip().lower() == "none":
        return None
    try:
        value = float(text)
    except ValueError:
        value = None
    if value is None or not 50 < value < 100:
        raise argparse.ArgumentTypeError(f"expected a percentile in (50, 100) such as 99.99, or 'none'; received "
                                         f"{text!r}")
    return value


def _float_outputs(text: str) -> tuple:
    from tfspeed.compress.qat import OUTLIER_OUTPUTS

    parts = [p.strip() for p in (text or "").split(",") if p.strip()]
    return tuple(x for p in parts for x in (OUTLIER_OUTPUTS if p == "outliers" else (p,)))


def run(args) -> int:
    import numpy as np

    from tfspeed import _io, artifacts, export
    from tfspeed.compress import qat
    from tfspeed.data import EncodedDataset, Tokenizer
    from tfspeed.train import accuracy, predict_logits

    _io.check_writable(args.out, args.overwrite)
    dataset = _cli.load_data(args)
    model, vocab, seq_length, base, label_names = _load_input(args.model, dataset.num_classes)
    if label_names is not None and len(label_names) != dataset.num_classes:
        raise ValueError(f"The model has {len(label_names)} classes ({label_names}) but --data has "
                         f"{dataset.num_classes} ({dataset.label_names}).")
    seq_length = args.seq_length or seq_length or 128
    encoded = EncodedDataset(dataset, Tokenizer(vocab, seq_length=seq_length), limit=args.limit,
                             eval_limit=args.eval_limit)
    float_accuracy = accuracy(model, encoded.test) if not qat.is_quantized(model) else None
    verbose = 1 if sys.stdout.isatty() else 2
    start = time.perf_counter()
    qat_model, history = qat.qat_fit(model, encoded.train, encoded.validation, epochs=args.epochs,
                                     batch_size=args.batch_size, learning_rate=args.learning_rate,
                                     preserve_sparsity=args.preserve_sparsity,
                                     float_outputs=_float_outputs(args.float_outputs),
                                     outlier_channels=None if args.outlier_channels == "none" else "auto",
                                     smooth=None if args.smooth == "none" else "auto",
                                     calibration_percentile=args.calibration_percentile,
                                     freeze_ranges=args.freeze_ranges, distill=args.distill,
                                     strategy=_cli.make_strategy(args.strategy), verbose=verbose)
    train_seconds = time.perf_counter() - start
    keras_logits = predict_logits(qat_model, encoded.test)
    tflite = qat.to_tflite(qat_model, seq_length)
    lite_logits = export.evaluate(tflite, encoded.test)
    labels = encoded.test.labels
    hist = export.op_histogram(tflite)
    metrics = {
        "accuracy": float(np.mean(keras_logits.argmax(-1) == labels)),
        "tflite_accuracy": float(np.mean(lite_logits.argmax(-1) == labels)),
        "float_accuracy": float_accuracy,
        "argmax_agreement": float(np.mean(keras_logits.argmax(-1) == lite_logits.argmax(-1))),
        "max_abs_logit_diff": float(np.abs(keras_logits - lite_logits).max()),
        "int8_fraction": qat.int8_fractions(tflite),
        "int8_ops": hist["int8"], "float_ops": hist["float_ops"], **export.sizes(tflite),
        "split": "test", "num_examples": len(labels), "validation_accuracy": accuracy(qat_model, encoded.validation),
        "dataset": dataset.name, "model": str(args.model), "seq_length": seq_length, "epochs": args.epochs,
        "batch_size": args.batch_size, "learning_rate": args.learning_rate,
        "preserve_sparsity": args.preserve_sparsity, "float_outputs": list(_float_outputs(args.float_outputs)),
        "outlier_channels": qat.split_of(qat_model), "smoothed_layer_norms": qat.smoothed_layer_norms(qat_model),
        "outlier_heads": qat.split_heads_of(qat_model),
        "calibration_percentile": args.calibration_percentile, "freeze_ranges": args.freeze_ranges,
        "distill": args.distill, "train_examples": len(encoded.train),
        "train_seconds": train_seconds, "tflite": TFLITE_NAME,
        "history": {k: [float(v) for v in vs] for k, vs in history.history.items()},
    }
    info = artifacts.ModelInfo(seq_length=seq_length, label_names=label_names or encoded.label_names, base=base,
                               stage="qat", vocab_path=str(vocab),
                               extra={"tflite": TFLITE_NAME, "preserve_sparsity": args.preserve_sparsity})
    artifacts.save_model_dir(qat_model, args.out, info, metrics, overwrite=args.overwrite,
                             extra_files=lambda tmp: (tmp / TFLITE_NAME).write_bytes(tflite))
    summary = {k: metrics[k] for k in ("accuracy", "tflite_accuracy", "float_accuracy", "argmax_agreement",
                                       "int8_fraction", "size_bytes")}
    print(json.dumps(summary, indent=2))
    print(f"Wrote {args.out}")
    return 0
