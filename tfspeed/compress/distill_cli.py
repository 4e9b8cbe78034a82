"""`tfspeed distill`: a smaller student from a fine-tuned teacher directory, saved with its TF-Hub export.

Example:

    tfspeed distill --teacher runs/teacher --student-layers 3 --data rotten_tomatoes --out runs/student3
"""

from __future__ import annotations

import argparse
import json
import sys

from tfspeed import _cli


def _layers(text: str):
    """`3` (a number of layers) or `0,2,4` (teacher layers to copy)."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values:
        raise argparse.ArgumentTypeError(f"expected a number of layers (3) or teacher layer indices (0,2,4). "
                                         f"Received: {text!r}")
    return values[0] if "," not in text else values


def register(subparsers):
    from tfspeed.compress.distill import LAYER_STRATEGIES

    p = subparsers.add_parser("distill", help="distil a fine-tuned teacher into a smaller student",
                              description="Distil a fine-tuned teacher (a tfspeed model directory) into a student with "
                                          "fewer layers initialised from the teacher's, or a narrower random one. "
                                          "Writes the student, its TF-Hub export and metrics.json "
                                          "(accuracy, teacher_accuracy, accuracy_ratio).")
    p.add_argument("--teacher", required=True, help="teacher model directory (from `tfspeed finetune`)")
    p.add_argument("--student-layers", type=_layers, default=3,
                   help="number of student layers (picked by --layer-strategy) or teacher layers to copy, e.g. 0,2,4 "
                        "(default: 3)")
    p.add_argument("--layer-strategy", default="every_other", choices=LAYER_STRATEGIES,
                   help="how a number of layers picks teacher layers (default: every_other, as DistilBERT)")
    p.add_argument("--hidden-size", type=int, default=None,
                   help="width of a narrower, random-initialised student (default: the teacher's, layers copied)")
    p.add_argument("--alpha", type=float, default=0.5,
                   help="weight of the hard-label loss; the soft-target loss gets 1 - alpha (default: 0.5)")
    p.add_argument("--temperature", type=float, default=2.0, help="softmax temperature (default: 2.0)")
    p.add_argument("--hidden-weight", type=float, default=0.0,
                   help="weight of TinyBERT's hidden-state loss (default: 0, off)")
    p.add_argument("--attention-weight", type=float, default=0.0,
                   help="weight of TinyBERT's attention-map loss; needs a native teacher (default: 0, off)")
    p.add_argument("--no-cache-teacher-logits", action="store_true",
                   help="run the teacher at every step instead of computing its logits once before training")
    _cli.add_data_args(p)
    _cli.add_train_args(p, epochs=3, lr=1e-4, batch_size=32)
    _cli.add_out_args(p, "student model directory to write")
    p.set_defaults(func=run)


def run(args) -> int:
    from tfspeed.compress.distill import distill

    _, metrics = distill(
        args.teacher, args.data, layers=args.student_layers, layer_strategy=args.layer_strategy,
        hidden_size=args.hidden_size, alpha=args.alpha, temperature=args.temperature,
        hidden_weight=args.hidden_weight, attention_weight=args.attention_weight, epochs=args.epochs,
        batch_size=args.batch_size, learning_rate=args.learning_rate,
        cache_teacher_logits=not args.no_cache_teacher_logits, limit=args.limit, eval_limit=args.eval_limit,
        out=args.out, overwrite=args.overwrite, strategy=_cli.make_strategy(args.strategy),
        data_kwargs=_cli.data_kwargs(args), verbose=1 if sys.stdout.isatty() else 2)
    keys = ("accuracy", "teacher_accuracy", "accuracy_ratio", "teacher_layers", "student_params", "teacher_params",
            "seconds_per_epoch")
    print(json.dumps({k: metrics[k] for k in keys}, indent=2))
    print(f"Wrote {args.out}")
    return 0
