"""`tfspeed qat MODEL --data rotten_tomatoes --epochs N --out DIR`: QAT fine-tuning of a whole BERT to an int8 .tflite.

Writes a model directory: the QAT Keras model (`model.keras`; `tfspeed.artifacts.load_model_dir(DIR)` loads it),
`model_int8.tflite` (every FULLY_CONNECTED / BATCH_MATMUL int8 unless `--float-outputs`), `metrics.json`
(`accuracy` of the Keras QAT model and `tflite_accuracy` of the file on the test split, the input model's
`float_accuracy`, `argmax_agreement`, the int8 op counts, sizes), plus `vocab.txt`, `tfspeed.json`, `encoder/`.
"""

from __future__ import annotations

import argparse
import json

from tfspeed.cli import common
from tfspeed.compress.quantization.config import QATConfig


def register(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "qat", help="quantization-aware fine-tuning of a whole BERT; writes the QAT model and an int8 .tflite",
        description="Quantization-aware training: fake quantization on every Dense, LayerNorm output and attention "
                    "matmul, fine-tuned with fit, converted to a .tflite whose FULLY_CONNECTED and BATCH_MATMUL ops "
                    "are all int8.")
    p.add_argument("model", help="a tfspeed model directory (e.g. from `tfspeed finetune`; hub-layer models are "
                                 "imported into the native encoder), or a preset / TF-Hub encoder handle")
    p.add_argument("--seq-length", type=int, default=None,
                   help="tokens per example for training and the .tflite (default: the model directory's, else 128)")
    common.add_config_args(p, QATConfig, group="quantization-aware training")
    common.add_data_args(p)
    common.add_strategy_arg(p)
    common.add_out_args(p, "model directory to write")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    from tfspeed import _io
    from tfspeed.stages import get_stage

    config = QATConfig.from_args(args)
    _io.check_writable(args.out, args.overwrite)
    metrics = get_stage("qat").run(args.model, config, args.out, common.context(args, args.seq_length))
    summary = {k: metrics[k] for k in ("accuracy", "tflite_accuracy", "float_accuracy", "argmax_agreement",
                                       "int8_fraction", "size_bytes")}
    print(json.dumps(summary, indent=2))
    print(f"Wrote {args.out}")
    return 0
