"""`DistillConfig`: the settings of distillation, shared by `distill`, `fit_student`, `Distiller` and `tfspeed distill`.

The checks of the loss settings (`check_loss_settings`: alpha, temperature, hidden_weight, attention_weight) are the
ones the `Distiller` constructor runs too, so a config and a Distiller accept and refuse the same values with the same
messages. `LayerStrategy` is how an integer number of student layers picks the teacher layers it starts from.

This module imports no TensorFlow: a command line can build its flags from `DistillConfig.add_arguments` cheaply.

Example:

>>> from tfspeed.compress.distillation.config import DistillConfig
>>> DistillConfig(layers=[0, 2], alpha=0.3).to_dict()["layers"]
[0, 2]
>>> DistillConfig(alpha=1.5)
Traceback (most recent call last):
...
ValueError: Received an invalid value for `alpha`, expected a float in [0.0, 1.0]. Received: alpha=1.5
"""

from __future__ import annotations

import argparse
import dataclasses
import numbers
from typing import Optional, Tuple, Union

from tfspeed.config import StageConfig, StrEnum, check_positive_int, field

__all__ = ["DistillConfig", "DistillMode", "LayerStrategy", "check_float", "check_loss_settings",
           "check_optional_positive_int", "check_stages", "parse_layers", "parse_indices", "parse_stages"]


class LayerStrategy(StrEnum):
    """How an integer number of student layers `k` picks teacher layers (of `Lt`)."""

    EVERY_OTHER = "every_other"  # 0, 2, 4, ...: DistilBERT
    UNIFORM = "uniform"  # i * Lt // k
    FIRST = "first"  # 0 .. k-1
    LAST = "last"  # the top k


class DistillMode(StrEnum):
    """Who learns from whom."""

    ONE_WAY = "one-way"  # a frozen teacher, the student learns its softened outputs (Hinton)
    TWO_WAY = "two-way"  # teacher and student learn from each other (deep mutual learning)


# === Checks (shared with the Distiller and the student builders) ===

def check_float(name: str, value, low: float, high: Optional[float] = None, low_open: bool = False) -> float:
    """`value` as a float in [low, high] ((low, high] with `low_open`; no upper bound when `high` is None)."""
    try:
        v = None if isinstance(value, bool) else float(value)
    except (TypeError, ValueError):
        v = None
    ok = v is not None and (v > low if low_open else v >= low) and (high is None or v <= high)
    if not ok:
        interval = f"{'(' if low_open else '['}{float(low)}, {'inf)' if high is None else f'{float(high)}]'}"
        raise ValueError(f"Received an invalid value for `{name}`, expected a float in {interval}. "
                         f"Received: {name}={value!r}")
    return v


def check_loss_settings(alpha, temperature, hidden_weight, attention_weight) -> tuple:
    """The Distiller's loss settings as floats, or a ValueError naming the first bad one.

    alpha in [0, 1]; temperature > 0; hidden_weight and attention_weight >= 0.
    """
    return (check_float("alpha", alpha, 0.0, 1.0),
            check_float("temperature", temperature, 0.0, None, low_open=True),
            check_float("hidden_weight", hidden_weight, 0.0, None),
            check_float("attention_weight", attention_weight, 0.0, None))


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_optional_positive_int(name: str, value):
    """None, or a positive integer (numpy integers accepted) returned as an `int`."""
    if value is None:
        return None
    if not _is_int(value) or value < 1:
        raise ValueError(f"Received an invalid value for `{name}`, expected a positive integer. "
                         f"Received: {name}={value!r}")
    return int(value)


def _check_layers(layers):
    if _is_int(layers):
        if layers >= 1:
            return int(layers)
    elif isinstance(layers, (list, tuple)) and layers and all(_is_int(i) and i >= 0 for i in layers):
        return tuple(int(i) for i in layers)
    shown = list(layers) if isinstance(layers, tuple) else layers
    raise ValueError(f"Received an invalid value for `layers`, expected a positive integer (a number of student "
                     f"layers) or a non-empty list of teacher layer indices. Received: layers={shown!r}")


def _check_layer_map(layer_map):
    if layer_map is None:
        return None
    if isinstance(layer_map, (list, tuple)) and layer_map and all(_is_int(i) and i >= 0 for i in layer_map):
        return tuple(int(i) for i in layer_map)
    shown = list(layer_map) if isinstance(layer_map, tuple) else layer_map
    raise ValueError(f"Received an invalid value for `layer_map`, expected a non-empty list of teacher layer indices "
                     f"(one per student layer) or None. Received: layer_map={shown!r}")


# === Parsers of the command line ===

def parse_layers(text: str):
    """`3` (a number of layers) or `0,2,4` (teacher layers to copy)."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values:
        raise argparse.ArgumentTypeError(f"expected a number of layers (3) or teacher layer indices (0,2,4). "
                                         f"Received: {text!r}")
    return values[0] if "," not in text else tuple(values)


def parse_stages(text: str):
    """`4,2` -> `(4, 2)`: the layers of each model of a multi-stage chain; `none` -> None."""
    if text.strip().lower() in ("", "none"):
        return None
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers of layers, each smaller than the one "
                                         f"before (4,2). Received: {text!r}") from None


def check_stages(stages, teacher_layers: Optional[int] = None):
    """`stages` as a tuple of decreasing positive layer counts (each below `teacher_layers` when given), or None."""
    if stages is None:
        return None
    shown = list(stages) if isinstance(stages, (tuple, list)) else stages
    if (not isinstance(stages, (tuple, list)) or not stages or not all(_is_int(k) and k >= 1 for k in stages)):
        raise ValueError(f"Received an invalid value for `stages`, expected a non-empty list of numbers of layers "
                         f"(e.g. 4,2: teacher -> 4-layer assistant -> 2-layer student). Received: stages={shown!r}")
    chain = ([int(teacher_layers)] if teacher_layers else []) + [int(k) for k in stages]
    if any(b >= a for a, b in zip(chain, chain[1:])):
        what = f"the teacher's {teacher_layers} layers, then " if teacher_layers else ""
        raise ValueError(f"Received an invalid value for `stages`, expected each model smaller than the one before "
                         f"({what}strictly decreasing numbers of layers). Received: stages={shown!r}")
    return tuple(int(k) for k in stages)


def parse_indices(text: str):
    """`1,3` -> `(1, 3)`; `none` -> None."""
    if text.strip().lower() in ("", "none"):
        return None
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated teacher layer indices (1,3). "
                                         f"Received: {text!r}") from None


# === The config ===

@dataclasses.dataclass
class DistillConfig(StageConfig):
    """The settings of distillation: the student's shape, the Distiller's loss and the fit.

    Args:
        layers: number of student layers (picked by `layer_strategy`), or the list of teacher layers to copy
            (`(0, 2, 4)`; `"0,2,4"` on the command line). Defaults to `3`.
        layer_strategy: how a number of layers picks teacher layers: `"every_other"` (DistilBERT), `"uniform"`,
            `"first"` or `"last"`. Defaults to `"every_other"`.
        hidden_size: width of a narrower, random-initialised student. Defaults to `None` (the teacher's width,
            layers copied).
        num_heads: heads of a narrower student. Defaults to `None` (`hidden_size // teacher head size`).
        intermediate_size: FFN width of a narrower student. Defaults to `None` (the teacher's FFN / hidden ratio).
        alpha: weight of the hard-label loss; the soft-target loss gets `1 - alpha`. In [0, 1]. Defaults to `0.5`.
        temperature: softmax temperature, > 0; the soft loss is scaled by T^2. Defaults to `2.0`.
        hidden_weight: weight of TinyBERT's hidden-state loss. Defaults to `0.0` (off).
        attention_weight: weight of TinyBERT's attention-map loss; needs a native teacher. Defaults to `0.0` (off).
        layer_map: teacher layer for each student layer in the intermediate losses. Defaults to `None` (TinyBERT's
            uniform map).
        epochs: Defaults to `3`.
        batch_size: Defaults to `32`.
        learning_rate: peak AdamW rate (warm-up then linear decay). Defaults to `1e-4`.
        cache_teacher_logits: compute the teacher's training logits once before training instead of at every step.
            Defaults to `True`.
        seed: seed of shuffling and of a random student's weights. Defaults to `0`.
        mode: `"one-way"` (a frozen teacher) or `"two-way"` (teacher and student learn from each other: deep mutual
            learning; the teacher starts from the fine-tuned one and is saved too). Defaults to `"one-way"`.
        teacher_learning_rate: peak rate of the teacher in two-way mode. Defaults to `2e-5`.
        teacher_alpha: weight of the teacher's hard-label loss in two-way mode (the student's softened outputs get
            `1 - teacher_alpha`). Defaults to `0.5`.
        anchor_weight: two-way only: weight of a loss keeping the teacher near its starting outputs (KL to the
            fine-tuned teacher's softened logits), so it does not drift to the student. Defaults to `0.0` (off).
        stages: multi-stage distillation: the layers of each model in turn, each distilled from the one before
            (`(4, 2)`: teacher -> 4-layer assistant -> 2-layer student, TAKD); `layers` is then ignored. Defaults to
            `None` (one stage, `layers`).
        unlabelled: a file of texts without labels (one per line, or a .csv / .jsonl `text` column) the teacher
            labels: the student learns its softened outputs on them too. Defaults to `None`.
        augment: augmented copies of each training text (word replacement from the vocabulary, deletion and swaps:
            `tfspeed.compress.distillation.augment`), labelled by the teacher. Defaults to `0` (none).
        augment_rate: share of the words of a text an augmented copy changes, in (0, 1). Defaults to `0.15`.
    """

    # === Student ===
    layers: Union[int, Tuple[int, ...]] = field(
        3, flag="--student-layers", parse=parse_layers, metavar="N|I,J,..",
        help="number of student layers (picked by --layer-strategy) or teacher layers to copy, e.g. 0,2,4")
    layer_strategy: LayerStrategy = field(
        LayerStrategy.EVERY_OTHER, help="how a number of layers picks teacher layers (every_other: as DistilBERT)")
    hidden_size: Optional[int] = field(
        None, help="width of a narrower, random-initialised student (none: the teacher's, layers copied)")
    num_heads: Optional[int] = field(None, help="heads of a narrower student (none: hidden size / teacher head size)")
    intermediate_size: Optional[int] = field(
        None, help="FFN width of a narrower student (none: the teacher's FFN/hidden ratio)")
    # === Loss ===
    alpha: float = field(0.5, help="weight of the hard-label loss; the soft-target loss gets 1 - alpha")
    temperature: float = field(2.0, help="softmax temperature")
    hidden_weight: float = field(0.0, help="weight of TinyBERT's hidden-state loss (0: off)")
    attention_weight: float = field(
        0.0, help="weight of TinyBERT's attention-map loss; needs a native teacher (0: off)")
    layer_map: Optional[Tuple[int, ...]] = field(
        None, parse=parse_indices, metavar="I,J,..",
        help="teacher layer of each student layer in the hidden / attention losses (none: TinyBERT's uniform map)")
    # === Fit ===
    epochs: int = field(3, help="training epochs")
    batch_size: int = field(32, help="training batch size")
    learning_rate: float = field(1e-4, help="peak learning rate (AdamW, warm-up then linear decay)")
    cache_teacher_logits: bool = field(
        True, help="compute the teacher's logits once before training (--no-cache-teacher-logits: at every step)")
    seed: Optional[int] = field(0, help="seed of shuffling and of a random student's weights")
    # === Two-way, multi-stage, more text ===
    mode: DistillMode = field(DistillMode.ONE_WAY, help="one-way (a frozen teacher) or two-way (teacher and student "
                                                        "learn from each other)")
    teacher_learning_rate: float = field(2e-5, help="two-way: peak learning rate of the teacher")
    teacher_alpha: float = field(0.5, help="two-way: weight of the teacher's hard-label loss")
    anchor_weight: float = field(0.0, help="two-way: weight of the loss keeping the teacher near its starting outputs")
    stages: Optional[Tuple[int, ...]] = field(None, parse=parse_stages, metavar="K,J,..",
                                              help="multi-stage: layers of each model in turn (4,2: teacher -> 4-layer "
                                                   "assistant -> 2-layer student); overrides --student-layers")
    unlabelled: Optional[str] = field(None, metavar="FILE", help="texts without labels the teacher labels for the "
                                                                 "student (one per line, or a .csv/.jsonl text column)")
    augment: int = field(0, help="augmented copies of each training text, labelled by the teacher")
    augment_rate: float = field(0.15, help="share of the words an augmented copy changes")

    def validate(self) -> None:
        self.layers = _check_layers(self.layers)
        for name in ("hidden_size", "num_heads", "intermediate_size"):
            setattr(self, name, check_optional_positive_int(name, getattr(self, name)))
        self.alpha, self.temperature, self.hidden_weight, self.attention_weight = check_loss_settings(
            self.alpha, self.temperature, self.hidden_weight, self.attention_weight)
        self.layer_map = _check_layer_map(self.layer_map)
        check_positive_int("epochs", self.epochs)
        check_positive_int("batch_size", self.batch_size)
        self.learning_rate = check_float("learning_rate", self.learning_rate, 0.0, None, low_open=True)
        if not isinstance(self.cache_teacher_logits, bool):
            raise ValueError(f"Received an invalid value for `cache_teacher_logits`, expected a bool. "
                             f"Received: cache_teacher_logits={self.cache_teacher_logits!r}")
        if self.seed is not None and not _is_int(self.seed):
            raise ValueError(f"Received an invalid value for `seed`, expected an integer or None. "
                             f"Received: seed={self.seed!r}")
        self.mode = DistillMode.parse("mode", self.mode)
        self.teacher_learning_rate = check_float("teacher_learning_rate", self.teacher_learning_rate, 0.0, None,
                                                 low_open=True)
        self.teacher_alpha = check_float("teacher_alpha", self.teacher_alpha, 0.0, 1.0)
        self.anchor_weight = check_float("anchor_weight", self.anchor_weight, 0.0, None)
        if self.mode == DistillMode.TWO_WAY and self.intermediate_losses:
            raise ValueError("Two-way distillation learns from the logits only. Received: mode='two-way' with "
                             f"hidden_weight={self.hidden_weight}, attention_weight={self.attention_weight}; set "
                             "both to 0.")
        self.stages = check_stages(tuple(self.stages) if isinstance(self.stages, list) else self.stages)
        if self.unlabelled is not None:
            self.unlabelled = str(self.unlabelled)
        if not _is_int(self.augment) or self.augment < 0:
            raise ValueError(f"Received an invalid value for `augment`, expected a number of copies >= 0. "
                             f"Received: augment={self.augment!r}")
        self.augment_rate = check_float("augment_rate", self.augment_rate, 0.0, 1.0, low_open=True)
        if self.augment_rate >= 1.0:
            raise ValueError(f"Received an invalid value for `augment_rate`, expected a float in (0.0, 1.0). "
                             f"Received: augment_rate={self.augment_rate!r}")

    @property
    def intermediate_losses(self) -> bool:
        """Whether the hidden-state or attention-map loss is on (the teacher then runs at every step)."""
        return self.hidden_weight > 0 or self.attention_weight > 0
