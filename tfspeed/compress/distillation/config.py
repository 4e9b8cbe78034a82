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

__all__ = ["DistillConfig", "LayerStrategy", "check_float", "check_loss_settings", "check_optional_positive_int",
           "parse_layers", "parse_indices"]


class LayerStrategy(StrEnum):
    """How an integer number of student layers `k` picks teacher layers (of `Lt`)."""

    EVERY_OTHER = "every_other"  # 0, 2, 4, ...: DistilBERT
    UNIFORM = "uniform"  # i * Lt // k
    FIRST = "first"  # 0 .. k-1
    LAST = "last"  # the top k


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

    @property
    def intermediate_losses(self) -> bool:
        """Whether the hidden-state or attention-map loss is on (the teacher then runs at every step)."""
        return self.hidden_weight > 0 or self.attention_weight > 0
