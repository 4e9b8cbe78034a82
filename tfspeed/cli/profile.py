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


def _buckets(text):
    from tfspeed.export.buckets import parse_buckets

    return parse_buckets(text)


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
    p.add_argument("--vocab", metavar="VOCAB.txt", help="WordPiece vocabulary for --text (and --texts, for models "
                                                         "without metadata)")
    p.add_argument("--texts", metavar="FILE|DATASET:SPLIT",
                   help="latency on real texts, each fed at its own length to a dynamic-length .tflite (padded to a "
                        "fixed file's length): one text per line, a .csv/.tsv/.jsonl column (--column), or e.g. "
                        "rotten_tomatoes:test; reports mean/median/p90/p99 over the texts and tokens per second")
    p.add_argument("--column", default="text", help="with a .csv/.tsv/.jsonl --texts file: the text column")
    p.add_argument("--buckets", type=_buckets, default=(), metavar="N,N,..",
                   help="with --texts: run dynamic-length files on these lengths, each text on the smallest that "
                        "holds it, one interpreter per length (default: none, each text at its exact length)")
    p.add_argument("--max-length", type=int, default=128,
                   help="with --texts: the most tokens a dynamic-length file gets, [CLS]/[SEP] included "
                        "(default: 128)")
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
        if args.texts:
            return _run_texts(args, config, baseline)
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


def _run_texts(args, config, baseline) -> int:
    from tfspeed import _io
    from tfspeed.export.latency import format_texts_report, load_texts, profile_texts

    if args.text or args.inputs or args.shape:
        raise ProfileError("`--texts` feeds each model its own tokens: it does not combine with --text, --inputs or "
                           "--shape.")
    if args.max_length < 3:
        raise ProfileError(f"Expected an integer >= 3 for `--max-length`. Received: {args.max_length}")
    names = [str(m) for m in args.models]
    index = baseline if isinstance(baseline, int) else next(
        (i for i, m in enumerate(names) if m == baseline or m.endswith("/" + baseline)), None)
    if index is None or index >= len(names):
        raise ProfileError(f"Expected --baseline to name one of the models or its index. Received: {args.baseline}")
    texts = load_texts(args.texts, args.column)
    threads = config.threads[0]
    result = profile_texts(args.models, texts, vocab=args.vocab, threads=threads,
                           xnnpack=config.xnnpack.value != "off", max_length=args.max_length, baseline=index,
                           log=print if args.progress is not False else None, buckets=args.buckets)
    report = format_texts_report(result)
    print(report)
    for r in result["models"]:
        if r["padded"]:
            print(f"note: {r['name']} has a fixed length: every text was padded (or cut) to {r['length']} tokens")
    if args.json:
        _io.write_json(args.json, result, overwrite=args.overwrite, argument="json")
        print(f"wrote {args.json}")
    if args.markdown:
        _io.write_text(args.markdown, report + "\n", overwrite=args.overwrite, argument="markdown")
        print(f"wrote {args.markdown}")
    return 0
