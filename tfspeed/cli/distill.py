"""`tfspeed distill`: a smaller student from a fine-tuned teacher directory, saved with its TF-Hub export.

Example:

    tfspeed distill --teacher runs/teacher --student-layers 3 --data rotten_tomatoes --out runs/student3
"""

from __future__ import annotations

import json

from tfspeed.cli import common
from tfspeed.compress.distillation.config import DistillConfig


def register(subparsers):
    p = subparsers.add_parser("distill", help="distil a fine-tuned teacher into a smaller student",
                              description="Distil a fine-tuned teacher (a tfspeed model directory) into a student with "
                                          "fewer layers initialised from the teacher's, or a narrower random one. "
                                          "Writes the student, its TF-Hub export and metrics.json "
                                          "(accuracy, teacher_accuracy, accuracy_ratio).")
    p.add_argument("--teacher", required=True, help="teacher model directory (from `tfspeed finetune`)")
    common.add_config_args(p, DistillConfig, group="distillation")
    common.add_data_args(p)
    common.add_strategy_arg(p)
    common.add_work_dir_arg(p)
    common.add_out_args(p, "student model directory to write")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    from tfspeed import _io
    from tfspeed.stages import get_stage

    config = DistillConfig.from_args(args)
    if args.strategy != "multi-worker":  # multi-worker: only the chief claims --out, in the stage
        _io.check_writable(args.out, args.overwrite)
    ctx = common.context(args)
    with common.output(args.out, ctx) as out:
        metrics = get_stage("distill").run(args.teacher, config, out, ctx)
    keys = ("accuracy", "macro_f1", "teacher_accuracy", "accuracy_ratio", "teacher_layers", "student_params",
            "teacher_params", "seconds_per_epoch")
    print(json.dumps({k: metrics[k] for k in keys}, indent=2))
    print(common.wrote(args.out, ctx))
    return 0
