"""`tfspeed optimize` and `tfspeed demo`."""

from __future__ import annotations

import argparse
import json

from tfspeed.recipe.config import DEMO, PRUNE_MODES, STAGES, RecipeConfig

_FLAGS = {  # config field -> (flag, type, help)
    "model": ("--model", str, "preset, TF-Hub SavedModel directory or URL to fine-tune, or a tfspeed model directory"),
    "data": ("--data", str, "'rotten_tomatoes' or a .csv/.jsonl file"),
    "recipe": ("--recipe", str, f"comma-separated stages among {','.join(STAGES)}"),
    "seq_length": ("--seq-length", int, "tokens per example for training, .tflite files and profiling"),
    "teacher_epochs": ("--teacher-epochs", int, "fine-tuning epochs of the teacher"),
    "distill_epochs": ("--distill-epochs", int, "distillation epochs"),
    "prune_epochs": ("--prune-epochs", int, "fine-tuning epochs after pruning"),
    "qat_epochs": ("--qat-epochs", int, "quantization-aware training epochs"),
    "student_layers": ("--student-layers", int, "layers of the distilled student"),
    "prune": ("--prune", str, f"pruning kind: {' or '.join(PRUNE_MODES)}"),
    "heads": ("--heads", float, "fraction of attention heads removed (structured)"),
    "ffn": ("--ffn", float, "fraction of FFN units removed (structured)"),
    "sparsity": ("--sparsity", float, "target sparsity (unstructured)"),
    "max_drop": ("--max-drop", float, "accuracy budget of the post-training int8 export (0.01 = one point)"),
    "batch_size": ("--batch-size", int, "training batch size"),
    "threads": ("--threads", int, "interpreter threads when profiling"),
    "profile_runs": ("--profile-runs", int, "measured runs per model"),
    "limit": ("--limit", int, "first N training examples only"),
    "eval_limit": ("--eval-limit", int, "first N validation/test examples only"),
    "strategy": ("--strategy", str, "tf.distribute strategy: mirrored, or multi-worker (from TF_CONFIG)"),
}


def _add_options(parser, defaults: RecipeConfig):
    parser.add_argument("--config", default=None, help="a .json or .toml recipe file (flags override it)")
    for field, (flag, kind, text) in _FLAGS.items():
        default = getattr(defaults, field)
        shown = ",".join(default) if isinstance(default, tuple) else default
        parser.add_argument(flag, dest=field, type=kind, default=None, help=f"{text} (default: {shown})")
    parser.add_argument("--overwrite", action="store_true", help="replace --out, even a run of another recipe")


def _config(args, base: dict) -> RecipeConfig:
    values = dict(base)
    if args.config:
        values.update(RecipeConfig.from_file(args.config).to_dict())
    values.update({f: getattr(args, f) for f in _FLAGS if getattr(args, f) is not None})
    return RecipeConfig.from_dict(values)


def _run(args, base: dict) -> int:
    from tfspeed.recipe import optimize

    report = optimize(_config(args, base), args.out, overwrite=args.overwrite)
    print(f"Wrote {args.out}/report.md, report.json, pareto.png")
    combined = report.get("combined")
    if combined:
        print(json.dumps(combined, indent=2))
    return 0


def register(subparsers):
    p = subparsers.add_parser("optimize", help="chain fine-tuning, compression, export and profiling; write a report",
                              formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    _add_options(p, RecipeConfig())
    p.add_argument("--out", required=True, help="run directory (a rerun resumes it)")
    p.set_defaults(func=lambda a: _run(a, {}))

    demo = RecipeConfig(**DEMO)
    d = subparsers.add_parser("demo", help="the main job on the built-in default: MiniLM on Rotten Tomatoes, "
                                           f"recipe {','.join(demo.recipe)}, about 30 minutes on 2 idle cores")
    _add_options(d, demo)
    d.add_argument("--out", default="runs/demo", help="run directory (default: runs/demo; a rerun resumes it)")
    d.set_defaults(func=lambda a: _run(a, DEMO))
