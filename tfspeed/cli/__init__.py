"""The `tfspeed` command line: one subcommand per stage of the pipeline.

Each module of this package maps its flags to the stage's config (flags, defaults and choices come from the config
and its enums) and calls the stage's runner, the same one `tfspeed optimize` uses. Errors a user can fix are printed
as `ERROR: ...` with exit code 1 (set TFSPEED_DEBUG=1 for the traceback).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

# Command modules, in pipeline order; each has `register(subparsers)` setting `func` on its parser.
COMMANDS = ("finetune", "export", "predict", "profile", "prune", "qat", "distill", "optimize")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tfspeed", description="Make a TF-Hub BERT fast and small.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMANDS:
        importlib.import_module(f"tfspeed.cli.{name}").register(sub)
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
