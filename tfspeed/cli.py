"""The `tfspeed` command line: one subcommand per stage of the pipeline.

Errors a user can fix are printed as `ERROR: ...` with exit code 1 (set TFSPEED_DEBUG=1 for the traceback).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys

from tfspeed import _cli

# Stage modules that add their own subcommand with `register(subparsers)`, in pipeline order.
_STAGE_COMMANDS = [
    "tfspeed.export.cli",
    "tfspeed.profile.cli",
    "tfspeed.compress.prune_cli",
    "tfspeed.compress.qat_cli",
    "tfspeed.compress.distill_cli",
    "tfspeed.recipe.cli",
]


def _finetune(args) -> int:
    from tfspeed.train import finetune

    _, metrics = finetune(args.model, args.data, out=args.out, epochs=args.epochs, batch_size=args.batch_size,
                          learning_rate=args.learning_rate, seq_length=args.seq_length, hub_layer=args.hub_layer,
                          limit=args.limit, eval_limit=args.eval_limit, overwrite=args.overwrite,
                          strategy=_cli.make_strategy(args.strategy), data_kwargs=_cli.data_kwargs(args),
                          verbose=1 if sys.stdout.isatty() else 2)
    summary = {k: metrics[k] for k in ("accuracy", "split", "num_examples", "validation_accuracy", "seconds_per_epoch")}
    print(json.dumps(summary, indent=2))
    print(f"Wrote {args.out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tfspeed", description="Make a TF-Hub BERT fast and small.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("finetune", help="fine-tune a BERT classifier and save it with its TF-Hub export")
    p.add_argument("--model", default="minilm-l6", help="preset, TF-Hub SavedModel directory or URL (default: minilm-l6)")
    p.add_argument("--seq-length", type=int, default=128, help="tokens per example (default: 128)")
    p.add_argument("--hub-layer", action="store_true", help="fine-tune through hub.KerasLayer instead of the native encoder")
    _cli.add_data_args(p)
    _cli.add_train_args(p)
    _cli.add_out_args(p, "model directory to write")
    p.set_defaults(func=_finetune)

    for module in _STAGE_COMMANDS:
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name and module.startswith(e.name):
                continue  # stage not installed in this build
            raise
        mod.register(sub)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, TypeError, FileNotFoundError, FileExistsError, RuntimeError) as e:
        if os.environ.get("TFSPEED_DEBUG"):
            raise
        print(f"ERROR: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
