"""`tfspeed profile MODEL [MODEL ...]`: the command-line face of `profile_models`."""

from __future__ import annotations

import argparse
import sys

from tfspeed.profile.config import ProfileConfig
from tfspeed.profile.errors import ProfileError


def _shape(text):
    name, _, dims = text.partition("=")
    try:
        shape = [int(d) for d in dims.split(",")]
    except ValueError:
        shape = None
    if not name or not shape or any(d < 1 for d in shape):
        raise argparse.ArgumentTypeError(
            f"Received an invalid value for `shape`, expected NAME=D1,D2,... with positive sizes (e.g. "
            f"input_word_ids=1,128). Received: shape={text!r}")
    return name, shape


def register(subparsers) -> argparse.ArgumentParser:
    """Adds the `profile` subcommand to an argparse subparsers object."""
    p = subparsers.add_parser(
        "profile", help="measure the latency of TFLite models (and Keras / SavedModel / ONNX baselines)",
        description="Profile one or more models on the same inputs, interleaved (A B A B ...) so machine drift "
                    "cancels: init time, first run, warm-up, then median/mean/std/MAD/min/max/p90/p99, throughput, "
                    "memory, file size raw and gzip, with ratios against a baseline.")
    p.add_argument("models", nargs="+", metavar="MODEL",
                   help=".tflite files, and as baselines .keras/.h5 files, SavedModel directories or .onnx files")
    p.add_argument("--baseline", default="0", metavar="NAME_OR_INDEX",
                   help="model the ratios are computed against (file name or index) (default: 0, the first)")
    ProfileConfig.add_arguments(p, exclude=("isolate",), group="measurement")
    p.add_argument("--no-xnnpack", dest="xnnpack", action="store_const", const="off", help="same as --xnnpack off")
    p.add_argument("--inputs", metavar="FILE.npz", help="real inputs, one array per input name")
    p.add_argument("--text", action="append", metavar="TEXT",
                   help="real text through a WordPiece tokenizer (repeat for a batch); needs --vocab")
    p.add_argument("--vocab", metavar="VOCAB.txt", help="WordPiece vocabulary for --text")
    p.add_argument("--shape", type=_shape, action="append", metavar="NAME=D1,D2",
                   help="shape of a dynamic input, e.g. input_word_ids=1,128 (repeatable)")
    p.add_argument("--no-isolate", dest="isolate", action="store_false",
                   help="skip loading each .tflite first in a child process (the guard against native crashes)")
    p.add_argument("--json", metavar="FILE", help="write the results as JSON (format_version 1)")
    p.add_argument("--markdown", metavar="FILE", help="write a Markdown report")
    p.add_argument("--plot", metavar="FILE.png", help="write a PNG chart")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    p.set_defaults(func=run, progress=None, isolate=True)
    return p


def run(args) -> int:
    """Runs the `profile` subcommand; prints `ERROR: ...` and returns 1 on a bad model, input or argument."""
    from tfspeed import _io
    from tfspeed.profile.core import profile_models

    try:
        for attr, argument in (("json", "json"), ("markdown", "markdown"), ("plot", "plot")):
            if getattr(args, attr):
                _io.check_writable(getattr(args, attr), args.overwrite, argument)
        if args.text and not args.vocab:
            raise ProfileError("`--text` needs `--vocab VOCAB.txt` (a WordPiece vocabulary). Received: vocab=None")
        baseline = int(args.baseline) if str(args.baseline).isdigit() else args.baseline
        config = ProfileConfig.from_args(args)
        result = profile_models(
            args.models, baseline=baseline, config=config, inputs=args.inputs, shapes=dict(args.shape or []),
            text=args.text, vocab=args.vocab, progress=False if args.progress is False else None)
        print(result.to_table())
        if args.json:
            result.to_json(args.json, overwrite=args.overwrite)
            print(f"wrote {args.json}")
        if args.markdown:
            result.to_markdown(args.markdown, overwrite=args.overwrite)
            print(f"wrote {args.markdown}")
        if args.plot:
            result.plot(args.plot, overwrite=args.overwrite)
            print(f"wrote {args.plot}")
    except (ProfileError, FileExistsError, OSError) as exc:
        print(f"ERROR: {exc}", file=sys.stderr)
        return 1
    return 0
