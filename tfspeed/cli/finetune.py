"""`tfspeed finetune --model minilm-l6 --data rotten_tomatoes --out DIR`: fine-tune a BERT classifier; writes
`model.keras`, the TF-Hub `encoder/`, `vocab.txt` and `metrics.json`."""

from __future__ import annotations

import json

from tfspeed.cli import common
from tfspeed.train import FinetuneConfig


def register(subparsers):
    p = subparsers.add_parser("finetune", help="fine-tune a BERT classifier and save it with its TF-Hub export",
                              description=__doc__)
    p.add_argument("--model", default="minilm-l6",
                   help="preset, TF-Hub SavedModel directory or URL, or a Hugging Face BERT directory (default: "
                        "minilm-l6)")
    common.add_data_args(p)
    common.add_config_args(p, FinetuneConfig, group="training")
    common.add_strategy_arg(p)
    common.add_work_dir_arg(p)
    common.add_out_args(p, "model directory to write")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    from tfspeed.stages import get_stage

    config = FinetuneConfig.from_args(args)
    ctx = common.context(args, config.seq_length)
    with common.output(args.out, ctx) as out:  # multi-worker: the chief writes --out
        metrics = get_stage("finetune").run(args.model, config, out, ctx)
    summary = {k: metrics[k] for k in ("accuracy", "macro_f1", "split", "num_examples", "validation_accuracy",
                                     "seconds_per_epoch")}
    print(json.dumps(summary, indent=2))
    print(common.wrote(args.out, ctx))
    return 0
