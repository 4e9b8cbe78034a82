"""`tfspeed exits MODEL --layers 1,2,3,4,5 --budget 0.005 --out DIR`: early exits for a model directory.

Adds an exit classifier after each chosen layer (the encoder and the final classifier frozen), trains the exits by
self-distillation from the final classifier (or on the labels), picks the threshold of the exit rule on the validation
split so that the accuracy stays within --budget of the full model's, and writes a model directory with
`exits.tflite`: one signature per segment, so a runtime stops after the first confident exit
(`tfspeed.export.exits.ExitRunner`).

Examples:

    tfspeed exits runs/teacher --out runs/teacher-exits
    tfspeed exits runs/teacher --layers 2,4 --rule patience --budget 0.01 --out runs/teacher-exits-2
"""

from __future__ import annotations

import argparse
import json

from tfspeed.cli import common
from tfspeed.compress.exits import ExitsConfig


def register(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("exits", help="early exits: stop at the first confident layer (a segmented .tflite)",
                              formatter_class=argparse.RawDescriptionHelpFormatter, description=__doc__)
    p.add_argument("model", help="tfspeed model directory (a classifier)")
    common.add_config_args(p, ExitsConfig, group="exits")
    p.add_argument("--mode", default="dynamic", choices=("dynamic", "float16", "float32"),
                   help="the segmented .tflite's weights (default: dynamic)")
    common.add_data_args(p)
    common.add_out_args(p, "model directory to write (with exits.tflite and exits.json)")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    from tfspeed import _io
    from tfspeed.stages import exits as stage

    config = ExitsConfig.from_args(args)
    _io.check_writable(args.out, args.overwrite)
    metrics = stage.run(args.model, config, args.out, common.context(args), mode=args.mode)
    keys = ("accuracy", "full_accuracy", "drop_points", "mean_layers", "num_layers", "exit_counts", "rule",
            "threshold", "validation_accuracy", "validation_full_accuracy")
    print(json.dumps({k: metrics[k] for k in keys}, indent=2))
    print(f"Wrote {args.out}")
    return 0
