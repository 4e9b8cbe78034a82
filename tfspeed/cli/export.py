"""`tfspeed export MODEL --mode MODE --out FILE.tflite`: convert a model directory, optionally within an accuracy
budget.

Examples:

    tfspeed export runs/teacher --mode dynamic --out teacher.tflite --report teacher.json
    tfspeed export runs/teacher --max-drop 0.01 --candidates int8,int8-mixed,int8-mixed+bmm --out t8.tflite
"""

from __future__ import annotations

import argparse
import json

from tfspeed.cli import common
from tfspeed.export.config import ExportConfig


def register(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "export", help="convert a model directory to .tflite (float32/float16/dynamic/int8), with a parity report",
        description="Convert a tfspeed model directory to a fixed-shape .tflite (signature serving_default). "
                    "Calibration text for int8 comes from the training split of --data, tokenized with the model's "
                    "vocab.txt; the parity report is computed on --eval-split.")
    p.add_argument("model", help="tfspeed model directory (model.keras, vocab.txt, tfspeed.json)")
    common.add_config_args(p, ExportConfig, group="conversion")
    p.add_argument("--report", default=None, help="write the parity report (and budget record) as JSON here")
    common.add_data_args(p)
    common.add_out_args(p, "the .tflite file to write")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    from tfspeed import _io
    from tfspeed.stages import export as stage

    config = ExportConfig.from_args(args)
    _io.check_writable(args.out, args.overwrite, "out")  # before loading data or model
    if args.report:
        _io.check_writable(args.report, args.overwrite, "report")
    result = stage.run(args.model, config, args.out, common.context(args), report=args.report)
    if not args.report and result["parity"] is None and result["budget"] is None:
        print(json.dumps({"mode": result["mode"], "size_bytes": result["size_bytes"]}))
    return 0
