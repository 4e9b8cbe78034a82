"""`QATConfig`: the settings of `qat_fit` and of `tfspeed qat`, each with its one default and its one check.

The checks shared with the lower-level functions live here too: `check_percentile` (also `calibrate(percentile=...)`),
`check_float_outputs` and `check_bool` (also `quantize`), so a config and those functions accept and refuse the same
values with the same messages. `parse_percentile` and `parse_float_outputs` read the command line's strings
(`"none"`, `"outliers,layer_0_output"`).

This module imports no TensorFlow at its top: a command line can build its flags from `QATConfig.add_arguments`.

Example:

>>> from tfspeed.compress.quantization.config import QATConfig
>>> QATConfig(epochs=2, calibration_percentile=None).to_dict()["calibration_percentile"] is None
True
>>> QATConfig(calibration_percentile=100)
Traceback (most recent call last):
...
ValueError: Received an invalid value for `calibration_percentile`, expected a number in (50, 100) such as 99.99, \
or None for the min / max. Received: calibration_percentile=100
"""

from __future__ import annotations

import argparse
import collections.abc
import dataclasses
import re
from typing import Optional

from tfspeed.config import StageConfig, StrEnum, check_positive_int, check_range, field

__all__ = ["Detection", "QATConfig", "check_bool", "check_float_outputs", "check_percentile", "parse_float_outputs",
           "parse_percentile"]


class Detection(StrEnum):
    """Whether `qat_fit` looks for outliers on the training data (`auto`) or leaves the model as it is (`none`)."""

    AUTO = "auto"
    NONE = "none"


# === Checks (shared with `quantize` and `calibrate`) ===

def check_bool(name: str, value) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"Received an invalid value for `{name}`, expected a bool. Received: {name}={value!r}")
    return value


def check_percentile(name: str, value):
    """None (min / max ranges), or a percentile in (50, 100) returned as a float."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 50 < value < 100:
        raise ValueError(f"Received an invalid value for `{name}`, expected a number in (50, 100) such as 99.99, "
                         f"or None for the min / max. Received: {name}={value!r}")
    return float(value)


def check_float_outputs(value, name: str = "float_outputs") -> tuple:
    """A list of regular expressions (str) on layer names, returned as a tuple."""
    ok = not isinstance(value, str) and isinstance(value, collections.abc.Iterable)
    patterns = tuple(value) if ok else ()
    if not ok or not all(isinstance(p, str) for p in patterns):
        raise ValueError(f"Received an invalid value for `{name}`, expected a list of regular expressions "
                         f"(str). Received: {name}={value!r}")
    for p in patterns:
        try:
            re.compile(p)
        except re.error as e:
            raise ValueError(f"Received an invalid value for `{name}`, expected a list of regular expressions: "
                             f"{p!r} is not one ({e}). Received: {name}={value!r}") from None
    return patterns


# === Parsers of the command line ===

def parse_percentile(text: str):
    """`"99.99"` -> `99.99`; `"none"` -> None (min / max)."""
    if text.strip().lower() == "none":
        return None
    try:
        return check_percentile("calibration_percentile", float(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a percentile in (50, 100) such as 99.99, or 'none'; received "
                                         f"{text!r}") from None


def parse_float_outputs(text: str) -> tuple:
    """Comma-separated regular expressions; `outliers` stands for `OUTLIER_OUTPUTS` (the FFN output projections),
    `none` for no pattern."""
    from tfspeed.compress.quantization.outliers import OUTLIER_OUTPUTS

    parts = [p.strip() for p in (text or "").split(",") if p.strip() and p.strip().lower() != "none"]
    return tuple(x for p in parts for x in (OUTLIER_OUTPUTS if p == "outliers" else (p,)))


# === The config ===

@dataclasses.dataclass
class QATConfig(StageConfig):
    """The settings of quantization-aware fine-tuning (`qat_fit`, `tfspeed qat`).

    Args:
        epochs: Defaults to `1`.
        batch_size: of the fit, the outlier search and the calibration batches. Defaults to `32`.
        learning_rate: peak AdamW rate (warm-up then linear decay): QAT starts from trained weights, so keep it low.
            Defaults to `2e-5`.
        distill: fit through a `Distiller` with the float model as the teacher (alpha 0.5, temperature 2), so the
            quantized copy learns the float model's outputs rather than drifting on the labels (MiniLM, 2 epochs:
            file 0.8422 vs float 0.8439; on the labels alone 0.8390 and 0.8358 in two runs). `False` fits on the
            labels alone. Defaults to `True`.
        preserve_sparsity: TFMOT's prune-preserving 8-bit scheme, so the zeros of a pruned (and stripped) model stay
            zero through QAT and in the int8 file. Defaults to `False`.
        float_outputs: regular expressions (full match) on layer names whose outputs are not fake-quantized (their
            FULLY_CONNECTED / BATCH_MATMUL run float in the file); `OUTLIER_OUTPUTS` (`outliers` on the command line)
            keeps the FFN output projections float. Defaults to `()` (every matmul int8).
        outlier_channels: `"auto"` finds the FFN output channels far above the others on the training data
            (`find_outlier_channels`) and computes them in a FULLY_CONNECTED with an int8 range of their own;
            `"none"` (or None) splits nothing. Defaults to `"auto"`.
        smooth: `"auto"` also finds the LayerNorm outlier channels (`layer_norm_scales`), the FFN intermediate
            outlier units (`find_outlier_channels(..., OUTLIER_UNITS)`) and the attention heads with outlier scores
            (`find_outlier_heads`) on the training data and gives them the same treatment: finer int8 steps where a
            rounding difference between Keras and TFLite would otherwise spread through the later layers. `"none"`
            (or None): none of these. Defaults to `"auto"`.
        calibration_batches: training batches that set the activation ranges before fitting (`calibrate`); `0`
            keeps TFMOT's [-6, 6] start. Defaults to `8`.
        calibration_percentile: activation ranges from this percentile of the calibration batches' values
            (`calibrate(percentile=...)`), in (50, 100); `None` takes the min / max. Defaults to `99.99` (on MiniLM:
            file accuracy +0.6 point and Keras-vs-file agreement 0.988 vs 0.984 with min / max).
        freeze_ranges: keep the calibrated ranges through fitting (`calibrate(freeze=True)`): the moving averages
            would otherwise widen them again to the training batches' extremes. Defaults to `True`.
        metadata: the stage's `model_int8.tflite` carries TFLite metadata (vocabulary, labels, a softmax
            `probability` output) for MediaPipe's `TextClassifier` and `tfspeed predict`. Defaults to `True`.
    """

    # === Fit ===
    epochs: int = field(1, help="training epochs")
    batch_size: int = field(32, help="batch size of the fit, the outlier search and the calibration")
    learning_rate: float = field(2e-5, help="peak learning rate (AdamW, warm-up then linear decay); QAT starts from "
                                            "trained weights, so keep it low")
    distill: bool = field(True, help="fine-tune through the Distiller with the float model as teacher (alpha 0.5, "
                                     "temperature 2); --no-distill fits on the labels alone")
    preserve_sparsity: bool = field(False, help="keep the zeros of a pruned model through QAT (prune-preserving "
                                                "8-bit scheme)")
    # === Where int8 goes ===
    float_outputs: tuple = field(
        (), parse=parse_float_outputs, metavar="REGEX,..",
        help="comma-separated regular expressions on layer names whose outputs stay float (their FULLY_CONNECTED / "
             r"BATCH_MATMUL run float); 'outliers' = the FFN output projections (layer_\d+_output), which buys "
             "accuracy on BERTs with outlier channels; empty or 'none': every matmul int8")
    outlier_channels: Detection = field(
        Detection.AUTO,
        help="'auto': the FFN output channels whose range is far above the others' (BERT's outlier dimensions, "
             "found on the training data) get a FULLY_CONNECTED and an int8 range of their own, so the other "
             "channels keep a fine int8 step; 'none': one range per output")
    smooth: Detection = field(
        Detection.AUTO,
        help="'auto': also scale the LayerNorm outputs' outlier channels down into the next Dense kernels "
             "(SmoothQuant-style) and compute the FFN intermediate's outlier units and the attention heads with "
             "outlier scores apart, so those int8 inputs get a finer step and the .tflite follows the Keras model "
             "more closely")
    # === Activation ranges ===
    calibration_batches: int = field(8, help="training batches that set the activation ranges before fitting (0: "
                                             "keep TFMOT's [-6, 6] start)")
    calibration_percentile: Optional[float] = field(
        99.99, parse=parse_percentile, metavar="P|none",
        help="activation ranges from this percentile of the calibration batches' values (e.g. 99.99: the rare "
             "extremes are clipped, the rest get a finer int8 step), or 'none' for min / max")
    freeze_ranges: bool = field(True, help="keep the calibrated activation ranges through fine-tuning; "
                                           "--no-freeze-ranges lets the moving averages follow the training batches")
    # === The file ===
    metadata: bool = field(True, help="write TFLite metadata (tokenizer vocabulary, labels, softmax output) into "
                                      "model_int8.tflite for MediaPipe's TextClassifier and tfspeed predict")

    def __post_init__(self):
        for name in ("outlier_channels", "smooth"):  # Python's None is the command line's "none"
            if getattr(self, name) is None:
                setattr(self, name, Detection.NONE)
        super().__post_init__()

    def validate(self) -> None:
        check_positive_int("epochs", self.epochs)
        check_positive_int("batch_size", self.batch_size)
        check_range("learning_rate", self.learning_rate, 0, low_open=True, what="a positive number")
        for name in ("distill", "preserve_sparsity", "freeze_ranges"):
            check_bool(name, getattr(self, name))
        self.float_outputs = check_float_outputs(self.float_outputs)
        if isinstance(self.calibration_batches, bool) or not isinstance(self.calibration_batches, int) \
                or self.calibration_batches < 0:
            raise ValueError(f"Received an invalid value for `calibration_batches`, expected a non-negative integer "
                             f"(0: no calibration). Received: calibration_batches={self.calibration_batches!r}")
        self.calibration_percentile = check_percentile("calibration_percentile", self.calibration_percentile)
