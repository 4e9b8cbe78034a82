"""The `tfspeed` command line: one subcommand per stage of the pipeline.

Each module of this package maps its flags to the stage's config (flags, defaults and choices come from the config
and its enums) and calls the stage's runner, the same one `tfspeed optimize` uses. Errors a user can fix are printed
as `ERROR: ...` with exit code 1 (set TFSPEED_DEBUG=1 for the traceback).
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
import threading

# Command modules, in pipeline order; each has `register(subparsers)` setting `func` on its parser.
COMMANDS = ("finetune", "export", "predict", "profile", "prune", "factorize", "qat", "distill", "exits", "optimize",
            "convert")


# Commands registered by another command's module.
_REGISTERED_BY = {"demo": "optimize"}


def build_parser(command=None) -> argparse.ArgumentParser:
    """The `tfspeed` parser; with `command`, only that command's module is imported (each module imports its
    stage's config and so TensorFlow, TFMOT, tensorflow-hub: importing all of them costs seconds that `tfspeed
    predict` or `tfspeed profile` do not need)."""
    parser = argparse.ArgumentParser(prog="tfspeed", description="Make a TF-Hub BERT fast and small.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    wanted = _REGISTERED_BY.get(command, command)
    for name in COMMANDS:
        if wanted is None or name == wanted:
            importlib.import_module(f"tfspeed.cli.{name}").register(sub)
    return parser


def _write_traceback(argv) -> str:
    """Writes the current exception's traceback (and the command line) to a log file; returns its path."""
    import time
    import traceback

    from tfspeed import _io

    folder = _io.cache_dir() / "logs"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"tfspeed-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    path.write_text(f"tfspeed {' '.join(argv)}\n\n{traceback.format_exc()}", encoding="utf-8")
    return str(path)


def _exit_on_sigterm(signum, frame):
    raise SystemExit(128 + signum)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    first = next((a for a in argv if not a.startswith("-")), None)
    known = first in COMMANDS or first in _REGISTERED_BY
    parser = build_parser(first if known else None)
    args, extra = parser.parse_known_args(argv)
    # `tfspeed predict MODEL --vocab V "text"`: argparse gives a `*` positional only the words before the first
    # option; a command that takes texts (`positional_rest`) gets the words after it too.
    rest = getattr(args, "positional_rest", None)
    if rest and extra and not any(e.startswith("-") for e in extra):
        setattr(args, rest, list(getattr(args, rest)) + extra)
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    previous = None
    if hasattr(sys.stdout, "reconfigure") and not sys.stdout.isatty():
        sys.stdout.reconfigure(line_buffering=True)  # progress lines reach a pipe or a log file when printed
    if threading.current_thread() is threading.main_thread():
        # a polite kill (SIGTERM, e.g. a CI timeout) unwinds like Ctrl-C: temporary outputs removed, claims released
        previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        return int(args.func(args) or 0)
    except (ValueError, TypeError, FileNotFoundError, FileExistsError, RuntimeError) as e:
        if os.environ.get("TFSPEED_DEBUG"):
            raise
        print(f"ERROR: {e}", file=sys.stderr)
        return 1
    except OSError as e:  # the machine's: permissions, a full disk, a folder where a file was expected
        if os.environ.get("TFSPEED_DEBUG"):
            raise
        where = f" ({e.filename})" if e.filename else ""
        print(f"ERROR: {e.strerror or e}{where}", file=sys.stderr)
        return 1
    except Exception as e:  # noqa: BLE001 - anything else: one line here, the traceback in a log file
        if os.environ.get("TFSPEED_DEBUG"):
            raise
        log = _write_traceback(argv)
        print(f"ERROR: unexpected {type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''} -- tfspeed "
              f"does not check this case yet. The full traceback is in {log} (TFSPEED_DEBUG=1 shows it here).",
              file=sys.stderr)
        return 1
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        from tfspeed import _io

        _io.release_all()  # the command is over: what it claimed and did not write is free again


if __name__ == "__main__":
    sys.exit(main())
