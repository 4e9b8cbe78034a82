"""`ExportConfig`: the settings of a TFLite export (`tfspeed export`, `tfspeed.stages.export.run`)."""

from __future__ import annotations

import dataclasses
from typing import Optional

from tfspeed.config import StageConfig, StrEnum, check_positive_int, check_range, field
from tfspeed.export import calibration as _cal
from tfspeed.export.modes import DEFAULT_CANDIDATES, DEFAULT_FLOAT_NODES, DEFAULT_FLOAT_OPS, Mode


class BudgetOrder(StrEnum):
    """How the accuracy budget orders its candidates: by latency measured here, or as listed."""

    MEASURED = "measured"
    KNOWN = "known"


class Objective(StrEnum):
    """What the accuracy budget minimizes among the configurations within it."""

    LATENCY = "latency"
    SIZE = "size"


class EvalSplit(StrEnum):
    """The split of the parity report (`none` skips it)."""

    TEST = "test"
    VALIDATION = "validation"
    NONE = "none"


def _csv(text: str) -> tuple:
    return tuple(s.strip() for s in text.split(",") if s.strip())


def _buckets(text: str):
    from tfspeed.export.buckets import parse_buckets

    return parse_buckets(text) or None


def _seq_length(text: str):
    if text.strip().lower() == "dynamic":
        return "dynamic"
    try:
        return int(text)
    except ValueError:
        import argparse

        raise argparse.ArgumentTypeError(f"Received an invalid value for `seq_length`, expected a positive integer "
                                         f"or 'dynamic'. Received: seq_length={text!r}") from None


@dataclasses.dataclass
class ExportConfig(StageConfig):
    """How a classifier becomes a .tflite file.

    Args:
        mode: `"float32"`, `"float16"`, `"dynamic"` (int8 weights, float activations), `"int8"` or `"int8-mixed"`
            (see `Mode`). Defaults to `"dynamic"`.
        float_ops: TFLite op types kept float in int8-mixed. Defaults to `None` (`DEFAULT_FLOAT_OPS`).
        float_nodes: regular expressions on op output names kept float in int8-mixed. Defaults to `None`
            (`DEFAULT_FLOAT_NODES`: the attention softmax block with its mask).
        seq_length: fixed sequence length of the file, or `"dynamic"`: inputs [1, -1] run at each text's own
            length. Defaults to `None` (the model directory's, else 128).
        num_calibration_samples: training texts that calibrate int8. Defaults to `200`.
        max_drop: an accuracy budget (0.01 = one point): the fastest configuration within it on the validation split
            is chosen instead of `mode`. Defaults to `None` (no budget).
        candidates: with `max_drop`, the configurations tried. Defaults to `None` (`DEFAULT_CANDIDATES`).
        order: with `max_drop`, `"measured"` (fastest first, measured here) or `"known"` (as listed).
            Defaults to `"measured"`.
        eval_split: split of the parity report, or `"none"`. Defaults to `"test"`.
        threads: interpreter threads for evaluation. Defaults to `1`.
        metadata: write TFLite metadata (vocabulary, labels, a softmax `probability` output) so that MediaPipe
            Tasks' `TextClassifier` and `tfspeed predict` run the file on raw text. Defaults to `True`.
        block_size: LiteRT quantizer int4 modes: weights per scale (32, 64, 128, 256), or 0 for one scale per
            output channel. Defaults to `None` (32).
        recipe: LiteRT quantizer modes: per-part overrides such as `"attention=int8,head=int8"`. Defaults to `None`.
        objective: with `max_drop`, pick the fastest (`"latency"`) or the smallest (`"size"`) configuration within
            the budget. Defaults to `"latency"`.
        integer_only: fail, listing the float ops, unless every op of the file computes in integers (what an NPU,
            DSP or Edge TPU needs). Defaults to `False`.
    """

    mode: Mode = field(Mode.DYNAMIC, help="int8-mixed keeps --float-ops float")
    float_ops: Optional[tuple] = field(None, parse=_csv, help="comma-separated TFLite op types kept float in "
                                       f"int8-mixed (default: {','.join(DEFAULT_FLOAT_OPS)})")
    float_nodes: Optional[tuple] = field(None, parse=_csv, help="comma-separated regular expressions on op output "
                                         f"tensor names kept float in int8-mixed (default: "
                                         f"{','.join(DEFAULT_FLOAT_NODES)}: the attention softmax block with its mask)")
    seq_length: Optional[object] = field(None, parse=_seq_length, metavar="N|dynamic",
                                         help="fixed sequence length, or 'dynamic': inputs [1, -1] that run at each "
                                              "text's own length (default: the model directory's)")
    num_calibration_samples: int = field(_cal.DEFAULT_NUM_SAMPLES, help="training texts used to calibrate int8")
    max_drop: Optional[float] = field(None, help="accuracy budget as a fraction (0.01 = 1 point): pick the fastest "
                                                 "configuration within it on the validation split, instead of --mode")
    candidates: Optional[tuple] = field(None, parse=_csv, help="with --max-drop: comma-separated candidates (default: "
                                        f"{','.join(c.name for c in DEFAULT_CANDIDATES)})")
    order: BudgetOrder = field(BudgetOrder.MEASURED, help="with --max-drop: try candidates by latency measured here, "
                                                          "or in the listed order")
    eval_split: EvalSplit = field(EvalSplit.TEST, help="split for the parity report; 'none' skips it")
    threads: int = field(1, help="interpreter threads for evaluation")
    metadata: bool = field(True, help="write TFLite metadata (tokenizer vocabulary, labels, softmax output) for "
                                      "MediaPipe's TextClassifier and tfspeed predict")
    block_size: Optional[int] = field(None, help="int4 modes (LiteRT quantizer): weights per scale, 32/64/128/256, or "
                                                 "0 for one scale per output channel (default 32)")
    recipe: Optional[str] = field(None, help="LiteRT quantizer modes: per-part overrides, e.g. "
                                             "'attention=int8,head=int8' (parts embedding/attention/ffn/head/all/"
                                             "re:REGEX; schemes int8/int4/int8-weights/int4-weights/int8-static/"
                                             "16x8/float)")
    objective: Objective = field(Objective.LATENCY, help="with --max-drop: the fastest or the smallest configuration "
                                                         "within the budget")
    integer_only: bool = field(False, help="fail, listing the float ops, unless every op computes in integers "
                                           "(for NPUs, DSPs, the Edge TPU)")
    buckets: Optional[tuple] = field(None, parse=_buckets, metavar="N,N,..",
                                     help="one file with a fixed-length signature per bucket (e.g. 16,32,64,128), "
                                          "weights stored once: each text runs on the smallest that holds it "
                                          "(float32, float16 or dynamic)")

    def validate(self):
        if self.buckets is not None:
            from tfspeed.export.buckets import BUCKET_MODES, check_buckets

            self.buckets = check_buckets(self.buckets)
            if self.mode.value not in BUCKET_MODES or self.max_drop is not None or self.seq_length is not None:
                raise ValueError(f"`buckets` makes a file of fixed-length signatures in mode {list(BUCKET_MODES)}, "
                                 "without --max-drop or --seq-length. Received: "
                                 f"buckets={list(self.buckets)}, mode={self.mode.value!r}, max_drop={self.max_drop}, "
                                 f"seq_length={self.seq_length}")
        if self.seq_length is not None and self.seq_length != "dynamic":
            check_positive_int("seq_length", self.seq_length)
        check_positive_int("num_calibration_samples", self.num_calibration_samples)
        check_positive_int("threads", self.threads)
        check_range("max_drop", self.max_drop, 0, 1, high_open=True, optional=True,
                    what="a fraction in [0, 1) (0.01 = one point)")
        if self.max_drop is None and (self.candidates or self.order != BudgetOrder.MEASURED
                                      or self.objective != Objective.LATENCY):
            raise ValueError("`--candidates`, `--order` and `--objective` apply to the accuracy budget: pass "
                             "--max-drop too.")
        if self.max_drop is None:
            from tfspeed.export.modes import resolve_quantizer

            resolve_quantizer(self.mode, self.block_size, self.recipe)
