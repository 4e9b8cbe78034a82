"""What every `tfspeed` command shares: the data flags (from `DataConfig`), `--out` / `--overwrite`, `--strategy`,
and the `StageContext` built from them."""

from __future__ import annotations

import argparse
import contextlib

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


def add_work_dir_arg(parser: argparse.ArgumentParser):
    parser.add_argument("--work-dir", default=None,
                        help="folder of BackupAndRestore checkpoints: rerun the same command after an interruption "
                             "and training resumes at the last finished epoch; with --strategy multi-worker, the same "
                             "folder for every worker, on storage they share (default: none, no checkpoints)")


def add_config_args(parser: argparse.ArgumentParser, config_cls, group: str = "settings", **kwargs):
    """The flags of a stage config, in a group of their own."""
    return config_cls.add_arguments(parser, group=group, **kwargs)


def data_config(args) -> DataConfig:
    return DataConfig.from_args(args)


def context(args, seq_length=None, **kwargs):
    """The `StageContext` of a command: its data loaded, its strategy made, `--overwrite` passed on."""
    from tfspeed.stages.base import StageContext

    data = data_config(args)
    strategy = make_strategy(getattr(args, "strategy", None))  # first: multi-worker wants no TF op before it
    return StageContext(data.load(), seq_length=seq_length, limit=data.limit, eval_limit=data.eval_limit,
                        strategy=strategy, work_dir=getattr(args, "work_dir", None),
                        overwrite=getattr(args, "overwrite", False), **kwargs)


@contextlib.contextmanager
def output(out, ctx):
    """Yields where this process writes the command's output `out`: `out` itself, except on the workers other than the
    chief of a multi-worker run (a temporary copy, removed after: `tfspeed.distribute.worker_output`). A worker that
    stops because another worker stopped fails with what to do."""
    from tfspeed.compat import tf
    from tfspeed.distribute import is_multi_worker, worker_output

    try:
        with worker_output(out, ctx.strategy) as path:
            yield path
    except tf.errors.UnavailableError as e:
        if not is_multi_worker(ctx.strategy):
            raise
        lines = [line.strip() for line in str(e.message).splitlines() if line.strip()] or [""]
        at = next((i for i, line in enumerate(lines) if "/job:" in line), 0)
        why = " ".join(lines[at:at + 2] if lines[at].endswith(":") else lines[at:at + 1])  # the worker named next
        raise RuntimeError(f"Another worker of this multi-worker run stopped ({why[:300]}). Stop every worker "
                           "and start them all again with the same command: with --work-dir, training resumes at "
                           "the last finished epoch.") from None


def wrote(out, ctx) -> str:
    """The last line of a command that wrote `out`: on a worker other than the chief, that the chief writes it."""
    from tfspeed.distribute import is_chief

    if is_chief(ctx.strategy):
        return f"Wrote {out}"
    return f"Worker {ctx.strategy.cluster_resolver.task_id} done; the chief writes {out}"
