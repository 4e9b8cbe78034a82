"""What every `tfspeed` command shares: the data flags (from `DataConfig`), `--out` / `--overwrite`, `--strategy`,
and the `StageContext` built from them."""

from __future__ import annotations

import argparse

from tfspeed.data.config import DataConfig
from tfspeed.distribute import STRATEGIES, make_strategy


def add_data_args(parser: argparse.ArgumentParser, required: bool = False):
    DataConfig.add_arguments(parser, group="data")
    if required:
        for action in parser._actions:
            if action.dest == "data":
                action.required, action.default = True, None


def add_out_args(parser: argparse.ArgumentParser, what: str = "output directory"):
    parser.add_argument("--out", required=True, help=what)
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")


def add_strategy_arg(parser: argparse.ArgumentParser):
    parser.add_argument("--strategy", default=None, choices=list(STRATEGIES),
                        help="tf.distribute strategy: mirrored (every local GPU, or the CPU), or multi-worker (from "
                             "TF_CONFIG) (default: none)")


def add_config_args(parser: argparse.ArgumentParser, config_cls, group: str = "settings", **kwargs):
    """The flags of a stage config, in a group of their own."""
    return config_cls.add_arguments(parser, group=group, **kwargs)


def data_config(args) -> DataConfig:
    return DataConfig.from_args(args)


def context(args, seq_length=None, **kwargs):
    """The `StageContext` of a command: its data loaded, its strategy made, `--overwrite` passed on."""
    from tfspeed.stages.base import StageContext

    data = data_config(args)
    return StageContext(data.load(), seq_length=seq_length, limit=data.limit, eval_limit=data.eval_limit,
                        strategy=make_strategy(getattr(args, "strategy", None)),
                        overwrite=getattr(args, "overwrite", False), **kwargs)
