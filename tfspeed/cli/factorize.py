"""`tfspeed factorize MODEL --ratio 0.5 --out DIR2`: replace Dense layers by two thinner ones (truncated SVD), then
fine-tune by distillation from the unfactorised model.

The rank of each chosen layer comes from one of `--ratio` (each layer keeps this fraction of its multiply-adds; the
default, 0.5), `--rank`, `--energy` (the smallest rank holding this fraction of the squared singular values) or
`--budget` (the chosen layers together keep this fraction of their multiply-adds, ranks going where they keep the
most energy). `--ffn-rank R` is `--layers ffn --ratio R`. The per-layer report (rank, energy kept, reconstruction
error, multiply-adds before / after) is printed and written to `metrics.json`; `--epochs 0` factorises without
fine-tuning.

Examples:

    tfspeed factorize runs/teacher --ffn-rank 0.5 --data rotten_tomatoes --out runs/lowrank50
    tfspeed factorize runs/teacher --layers all --energy 0.9 --out runs/lowrank-e90
    tfspeed factorize runs/teacher --layers ffn,attention --budget 0.6 --epochs 3 --out runs/lowrank-b60
"""

from __future__ import annotations

import argparse
import json

from tfspeed.cli import common
from tfspeed.compress.lowrank import LowRankConfig


def register(subparsers):
    p = subparsers.add_parser("factorize", help="factorise Dense layers by truncated SVD (low rank), then distil",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", metavar="MODEL", help="a tfspeed model directory (e.g. written by `tfspeed finetune`)")
    g = common.add_config_args(p, LowRankConfig, group="factorisation and fine-tuning")
    g.add_argument("--ffn-rank", type=float, default=None, metavar="RATIO",
                   help="shorthand for --layers ffn --ratio RATIO")
    p.add_argument("--seq-length", type=int, default=None, help="tokens per example (default: the model directory's)")
    common.add_data_args(p)
    common.add_strategy_arg(p)
    common.add_out_args(p, "model directory to write")
    p.set_defaults(func=run)
    return p


def config_from_args(args) -> LowRankConfig:
    if args.ffn_rank is not None:
        if args.ratio is not None:
            raise ValueError(f"Received --ffn-rank={args.ffn_rank} and --ratio={args.ratio}: --ffn-rank R is --layers "
                             "ffn --ratio R, give one of them.")
        return LowRankConfig.from_args(args, layers=("ffn",), ratio=args.ffn_rank)
    return LowRankConfig.from_args(args)


def run(args) -> int:
    from tfspeed import _io
    from tfspeed.stages import get_stage

    config = config_from_args(args)
    _io.check_writable(args.out, args.overwrite)
    metrics = get_stage("lowrank").run(args.model, config, args.out, common.context(args, args.seq_length))
    f = metrics["factorize"]
    summary = {"accuracy": metrics["accuracy"], "accuracy_before_finetuning": metrics["accuracy_before_finetuning"],
               "source_accuracy": metrics["source_accuracy"], "macs_kept": round(f["macs_kept"], 4),
               "encoder_macs_kept": round(f["encoder_macs_kept"], 4), "params": metrics["params"],
               "params_before": metrics["params_before"]}
    print(json.dumps(summary, indent=2))
    print(f"Wrote {args.out}")
    return 0
