"""`tfspeed prune MODEL --sparsity 0.5 --out DIR2`: prune a fine-tuned BERT model directory.

Unstructured (TFMOT magnitude pruning through fit): `--sparsity S` with a PolynomialDecay or ConstantSparsity schedule,
or `--m-by-n 2:4` (`--gradual`: one epoch at 1:4 first). Structured: `--structured heads=0.5,ffn=0.5` removes the
least important attention heads and FFN units (Taylor or magnitude importance): a physically smaller, faster model.
Both fine-tune with fit (`--distill`: from the unpruned MODEL) and write a model directory with `metrics.json`
(accuracy, the dense model's accuracy, sparsity, sizes of the float / dynamic-range .tflite).

Examples:

    tfspeed prune runs/teacher --sparsity 0.5 --data rotten_tomatoes --out runs/pruned50
    tfspeed prune runs/teacher --m-by-n 2:4 --gradual --distill --out runs/pruned24
    tfspeed prune runs/teacher --structured heads=0.5,ffn=0.5 --distill --out runs/smaller
"""

from __future__ import annotations

import argparse
import json

from tfspeed.cli import common
from tfspeed.compress.pruning.config import PruneConfig
from tfspeed.compress.structured import StructuredConfig

_STRUCTURED_KEYS = ("heads", "ffn", "layers")


def parse_structured(text: str) -> dict:
    """'heads=0.5,ffn=0.5[,layers=0.25 | layers=4+5]' -> {'heads': 0.5, 'ffn': 0.5, 'layers': ...}."""
    out = {}
    for part in filter(None, (p.strip() for p in str(text).split(","))):
        key, sep, value = part.partition("=")
        key = key.strip()
        if not sep or key not in _STRUCTURED_KEYS:
            raise ValueError(f"Received an invalid value for `--structured`, expected comma-separated key=value pairs "
                             f"with keys {_STRUCTURED_KEYS}, e.g. heads=0.5,ffn=0.5. Received: --structured={text!r}")
        try:
            if key == "layers" and ("+" in value or "." not in value):
                out[key] = [int(v) for v in value.split("+")]
            else:
                out[key] = float(value)
        except ValueError:
            raise ValueError(f"Received an invalid value for `--structured` key {key!r}: expected a number (layers: "
                             f"a fraction, or indices joined by '+', e.g. layers=4+5). Received: {value!r}") from None
    if not out:
        raise ValueError(f"Received an invalid value for `--structured`, expected e.g. heads=0.5,ffn=0.5. "
                         f"Received: --structured={text!r}")
    return out


def register(subparsers):
    p = subparsers.add_parser("prune", help="prune a fine-tuned BERT (TFMOT magnitude / 2:4, or structured heads/FFN)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", metavar="MODEL", help="a tfspeed model directory (e.g. written by `tfspeed finetune`)")
    PruneConfig.add_arguments(p, group="unstructured (TFMOT) and fine-tuning",
                              defaults={"sparsity": None})
    s = p.add_argument_group("structured")
    s.add_argument("--structured", default=None,
                   help="fractions to remove, e.g. heads=0.5,ffn=0.5 (optionally layers=0.25 or layers=4+5)")
    StructuredConfig.add_arguments(s, only=("method", "num_batches", "ranking"), defaults={"num_batches": 16})
    p.add_argument("--seq-length", type=int, default=None, help="tokens per example (default: the model directory's)")
    p.add_argument("--skip-tflite-report", action="store_true",
                   help="do not convert to .tflite to report its sizes (saves a minute on MiniLM)")
    common.add_data_args(p)
    common.add_strategy_arg(p)
    common.add_out_args(p, "model directory to write")
    p.set_defaults(func=run)
    return p


def _check_flags(args):
    """The flag combinations, worded as flags (the configs check each setting again)."""
    if args.gradual:
        if args.m_by_n is None:
            raise ValueError("Received --gradual without --m-by-n: --gradual is a route to m:n sparsity, expected "
                             "--m-by-n M:N with M >= 2 (e.g. --m-by-n 2:4 --gradual prunes at 1:4 for one epoch, then "
                             "2:4). Received: --m-by-n=None")
        if isinstance(args.m_by_n, tuple) and args.m_by_n[0] < 2:
            raise ValueError("Received an invalid value for `--m-by-n` with --gradual, expected M:N with M >= 2 (the "
                             "first epoch prunes at (M-1):N, and 0:N would prune nothing). "
                             f"Received: --m-by-n='{args.m_by_n[0]}:{args.m_by_n[1]}'")
    if not isinstance(args.epochs, int) or args.epochs < 1:
        raise ValueError(f"Received an invalid value for `--epochs`, expected a positive integer (pruning is scheduled "
                         f"through fit). Received: --epochs={args.epochs!r}")
    if args.hidden_weight and not args.distill:
        raise ValueError(f"Received --hidden-weight={args.hidden_weight!r} without --distill: the hidden-state loss is "
                         f"a distillation term. Add --distill, or drop --hidden-weight.")


def config_from_args(args):
    """The `PruneStageConfig` of the flags."""
    from tfspeed.stages.prune import PruneKind, PruneStageConfig

    _check_flags(args)
    structured = parse_structured(args.structured) if args.structured else {}
    unstructured = args.sparsity is not None or args.m_by_n is not None or not structured
    kind = PruneKind.BOTH if structured and unstructured else (PruneKind.STRUCTURED if structured
                                                               else PruneKind.UNSTRUCTURED)
    prune = PruneConfig.from_args(args)
    shape = StructuredConfig(heads=structured.get("heads", 0.0), ffn=structured.get("ffn", 0.0),
                             layers=structured.get("layers"), method=args.method, num_batches=args.num_batches,
                             ranking=args.ranking, batch_size=prune.batch_size)
    return PruneStageConfig(kind=kind, prune=prune, structured=shape, tflite_report=not args.skip_tflite_report)


def run(args) -> int:
    from tfspeed import _io
    from tfspeed.stages import get_stage

    _io.check_writable(args.out, args.overwrite)
    config = config_from_args(args)
    metrics = get_stage("prune").run(args.model, config, args.out, common.context(args, args.seq_length))
    summary = {k: metrics[k] for k in ("accuracy", "macro_f1", "dense_accuracy", "sparsity") if k in metrics}
    if "tflite" in metrics.get("report", {}):
        summary["tflite_dynamic_gzip_bytes"] = metrics["report"]["tflite"]["dynamic"]["gzip_bytes"]
    print(json.dumps(summary, indent=2))
    print(f"Wrote {args.out}")
    return 0
