"""Arguments shared by the `tfspeed` subcommands, so every stage reads data and writes outputs the same way."""

from __future__ import annotations

import argparse


def add_data_args(parser: argparse.ArgumentParser, required: bool = False):
    group = parser.add_argument_group("data")
    group.add_argument("--data", default=None if required else "rotten_tomatoes", required=required,
                       help="'rotten_tomatoes' or a .csv/.tsv/.jsonl file (default: rotten_tomatoes)")
    group.add_argument("--text-column", default="text", help="text column of a CSV/JSONL file (default: text)")
    group.add_argument("--label-column", default="label", help="label column of a CSV/JSONL file (default: label)")
    group.add_argument("--label-names", default=None, type=lambda s: s.split(","),
                       help="comma-separated label names in index order (default: sorted labels of the file)")
    group.add_argument("--limit", type=int, default=None, help="use only the first N training examples")
    group.add_argument("--eval-limit", type=int, default=None,
                       help="use only the first N validation/test examples")


def data_kwargs(args) -> dict:
    if str(args.data) == "rotten_tomatoes":
        return {}
    return {"text_column": args.text_column, "label_column": args.label_column, "label_names": args.label_names}


def load_data(args):
    from tfspeed.data import load_dataset

    return load_dataset(args.data, **data_kwargs(args))


def add_out_args(parser: argparse.ArgumentParser, what: str = "output directory"):
    parser.add_argument("--out", required=True, help=what)
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")


def add_train_args(parser: argparse.ArgumentParser, epochs: int = 3, lr: float = 5e-5, batch_size: int = 32):
    group = parser.add_argument_group("training")
    group.add_argument("--epochs", type=int, default=epochs, help=f"(default: {epochs})")
    group.add_argument("--batch-size", type=int, default=batch_size, help=f"(default: {batch_size})")
    group.add_argument("--learning-rate", type=float, default=lr, help=f"peak learning rate (default: {lr})")
    group.add_argument("--strategy", default=None, choices=["default", "mirrored", "multi-worker"],
                       help="tf.distribute strategy (default: none)")


def make_strategy(name):
    from tfspeed.compat import tf

    if name in (None, "default"):
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return mirrored_strategy()
    if name == "multi-worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ValueError(f"Unknown strategy {name!r}. Expected 'default', 'mirrored' or 'multi-worker'.")


# TF starts the collective keys of every MirroredStrategy at group 1, instance 100. A second strategy in the same
# process reuses them, and the runtime, which caches collective parameters by key, then aborts every collective with
# "Shape mismatch in the collective instance 100". TF's own tests move `_collective_key_base`; so do we.
_COLLECTIVE_KEY_STRIDE = 100_000


def mirrored_strategy(devices=None):
    """A `tf.distribute.MirroredStrategy` whose collective keys collide with no other strategy of this process.

    Strategies made before or after it, by tfspeed or by the caller, keep working: its keys sit between theirs.
    """
    from tfspeed.compat import tf

    cls = tf.distribute.MirroredStrategy
    cls._collective_key_base += _COLLECTIVE_KEY_STRIDE
    try:
        return cls(devices)
    finally:
        cls._collective_key_base += _COLLECTIVE_KEY_STRIDE
