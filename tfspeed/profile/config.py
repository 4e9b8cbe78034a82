"""`ProfileConfig`: how `profile_models` and `tfspeed profile` measure (threads, runs, XNNPACK, per-op timing)."""

from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np

from tfspeed.config import StageConfig, StrEnum, field
from tfspeed.profile.errors import ProfileError


class Xnnpack(StrEnum):
    """LiteRT's default XNNPACK delegate: on, off, or both (each model measured both ways)."""

    ON = "on"
    OFF = "off"
    BOTH = "both"

    @property
    def settings(self) -> list:
        return {"on": [True], "off": [False], "both": [True, False]}[self.value]


def check_positive_ints(value, argument, allow_zero=False) -> list:
    """`value` (an int or a list of ints) as a list of positive (or non-negative) ints, else a ProfileError."""
    values = [value] if isinstance(value, (int, np.integer)) and not isinstance(value, bool) else value
    try:
        values = list(values)
    except TypeError:
        values = [value]
    low = 0 if allow_zero else 1
    if not values or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= low
                             for v in values):
        kind = "non-negative integers" if allow_zero else "positive integers"
        raise ProfileError(f"Received an invalid value for `{argument}`, expected {kind}. Received: "
                           f"{argument}={value!r}")
    return [int(v) for v in values]


def _threads(text: str) -> tuple:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = None
    if not values or any(v < 1 for v in values):
        import argparse

        raise argparse.ArgumentTypeError(
            f"Received an invalid value for `threads`, expected positive integers separated by commas (e.g. 1,2,4). "
            f"Received: threads={text!r}")
    return tuple(values)


@dataclasses.dataclass
class ProfileConfig(StageConfig):
    """How models are measured.

    Args:
        threads: thread counts to sweep, e.g. `(1, 2, 4)`. Defaults to `(1,)`.
        xnnpack: `"on"` (LiteRT's default XNNPACK delegate), `"off"` (builtin kernels) or `"both"`; `True` / `False`
            are accepted for on / off. Defaults to `"on"`.
        runs: measured runs per model, after the warm-up. Defaults to `50`.
        warmup: warm-up runs per model, reported apart. Defaults to `5`.
        per_op: also time every operator of each TFLite model. Defaults to `False`.
        per_op_runs: timed runs per operator. Defaults to `None` (`runs`).
        seq_length: tokens per row for text inputs. Defaults to `128`.
        seed: seed of generated inputs. Defaults to `0`.
        isolate: load each .tflite first in a child process (the guard against native crashes). Defaults to `True`.
    """

    threads: tuple = field((1,), parse=_threads, metavar="N[,N...]", help="thread counts to sweep, e.g. 1,2,4")
    xnnpack: Xnnpack = field(Xnnpack.ON, help="LiteRT's default XNNPACK delegate: on, off or both")
    runs: int = field(50, help="measured runs per model")
    warmup: int = field(5, help="warm-up runs per model, reported apart")
    per_op: bool = field(False, help="time every operator of each TFLite model alone")
    per_op_runs: Optional[int] = field(None, help="timed runs per operator (default: --runs)")
    seq_length: int = field(128, help="tokens per row for --text")
    seed: int = field(0, help="seed of generated inputs")
    isolate: bool = field(True, help="load each .tflite first in a child process (the guard against native crashes)")

    def __post_init__(self):
        if self.xnnpack is True or self.xnnpack is False:
            self.xnnpack = Xnnpack.ON if self.xnnpack else Xnnpack.OFF
        self.threads = tuple(check_positive_ints(self.threads, "threads"))  # checked as given, before any conversion
        try:
            super().__post_init__()
        except ProfileError:
            raise
        except ValueError as e:  # an unknown xnnpack value: the profiler's own error type and wording
            raise ProfileError(f"Received an invalid value for `xnnpack`, expected True, False or 'both'. "
                               f"Received: xnnpack={self.xnnpack!r}") from e

    def validate(self):
        self.threads = tuple(check_positive_ints(self.threads, "threads"))
        (runs,) = check_positive_ints(self.runs, "runs")
        if runs < 2:
            raise ProfileError(f"Received an invalid value for `runs`, expected an integer >= 2. Received: runs={runs}")
        check_positive_ints(self.warmup, "warmup", allow_zero=True)
        if self.per_op_runs is not None:
            check_positive_ints(self.per_op_runs, "per_op_runs")
        check_positive_ints(self.seq_length, "seq_length")
