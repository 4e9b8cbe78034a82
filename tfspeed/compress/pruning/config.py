"""`PruneConfig`: the settings of unstructured (TFMOT magnitude) pruning and of the fine-tuning that carries it out.

One default and one check per setting, shared by `prune`, `prune_and_fit`, the `tfspeed prune` command and
`tfspeed optimize` recipes.

Example:

>>> config = PruneConfig(m_by_n="2:4", schedule="constant", epochs=3)
>>> config.m_by_n, config.schedule, PruneConfig.from_dict(config.to_dict()) == config
((2, 4), <Schedule.CONSTANT: 'constant'>, True)
>>> PruneConfig(sparsity=1.0)
Traceback (most recent call last):
...
ValueError: Received an invalid value for `sparsity`, expected a float in [0, 1). Received: sparsity=1.0
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional

from tfspeed.compress.pruning.schedules import (
    DEFAULT_SPARSITY,
    Schedule,
    _check_m_by_n,
    _check_sparsity,
    _check_steps,
    _parse_m_by_n,
    make_schedule,
    schedule_for_epochs,
)
from tfspeed.config import StageConfig, check_positive_int, check_range, field


def _parse_layers(text: str):
    """'layer_0_query,layer_1_output' -> ('layer_0_query', 'layer_1_output'); '' or 'none' -> None."""
    names = tuple(n.strip() for n in str(text).split(",") if n.strip())
    return None if not names or names == ("none",) else names


@dataclasses.dataclass
class PruneConfig(StageConfig):
    """Settings of magnitude pruning (which kernels, how sparse, on which schedule) and of its fine-tuning.

    Args:
        sparsity: final fraction of zeros in every targeted kernel, in [0, 1). Defaults to `None` (0.5; ignored with
            `m_by_n` and with a TFMOT schedule object, which carries its own).
        schedule: `"polynomial"` (TFMOT `PolynomialDecay`) or `"constant"` (`ConstantSparsity`).
            Defaults to `"polynomial"`.
        m_by_n: m:n structured sparsity, `(2, 4)` or `"2:4"`: m zeros in every n consecutive weights along the input
            axis. Defaults to `None`.
        gradual: with `m_by_n` (m, n), m >= 2: fit one epoch at (m-1):n first, strip, then prune at m:n.
            Defaults to `False`.
        begin_step, end_step: steps of the schedule when `steps_per_epoch` is not given. Defaults to `0` and `None`
            (the polynomial schedule then needs `end_step`).
        end_epoch: with `steps_per_epoch`, the epoch at which the final sparsity is reached. Defaults to `None`
            (0.7 x `epochs`).
        frequency: steps between mask updates. Defaults to `None` (about 20 updates between begin and end, at most
            100 steps apart).
        steps_per_epoch: optimizer steps per epoch; when given, the schedule's steps come from `epochs` and
            `end_epoch`. Defaults to `None`.
        include_embeddings: also prune the word and type embeddings. Defaults to `False`.
        embedding_sparsity: with `include_embeddings`, the tables' own sparsity, unstructured even with `m_by_n`.
            Defaults to `None` (as the kernels).
        include_classifier: also prune the `classifier` Dense. Defaults to `False`.
        layers: prune exactly these layer names. Defaults to `None` (attention, FFN and pooler).
        epochs: epochs of fine-tuning at the final pattern (the schedule spans them). Defaults to `2`.
        learning_rate: peak learning rate of the fine-tuning. Defaults to `3e-5`.
        batch_size: batch size of the fine-tuning. Defaults to `32`.
        distill: fine-tune by knowledge distillation from the unpruned model. Defaults to `False`.
        hidden_weight: with `distill`, weight of a layer-by-layer hidden-state MSE. Defaults to `0.0`.
        log_dir: TensorBoard directory for TFMOT's `PruningSummaries`. Defaults to `None`.
    """

    # --- what and how sparse ---
    sparsity: Optional[float] = field(
        None, help="final fraction of zeros in every targeted kernel, in [0, 1); unset: 0.5, ignored with --m-by-n")
    schedule: Schedule = field(Schedule.POLYNOMIAL, help="TFMOT PolynomialDecay or ConstantSparsity")
    m_by_n: Optional[tuple] = field(None, parse=_parse_m_by_n, metavar="M:N",
                                    help="m:n structured sparsity, e.g. 2:4")
    gradual: bool = field(
        False, help="with --m-by-n M:N, M >= 2: fit one epoch at (M-1):N first, strip, then prune at M:N for "
                    "--epochs, one epoch more in all")
    include_embeddings: bool = field(False, help="also prune word/type embeddings")
    embedding_sparsity: Optional[float] = field(
        None, help="with --include-embeddings: the tables' own sparsity, unstructured even with --m-by-n; unset: as "
                   "the kernels")
    include_classifier: bool = field(False, help="also prune the classifier Dense")
    layers: Optional[tuple] = field(None, parse=_parse_layers, metavar="NAMES",
                                    help="prune exactly these comma-separated layer names; unset: attention, FFN "
                                         "and pooler")
    # --- when ---
    begin_step: int = field(0, cli=False, help="first step at which masks are updated")
    end_step: Optional[int] = field(None, cli=False, help="step at which the final sparsity is reached (polynomial)")
    end_epoch: Optional[float] = field(None, help="epoch at which the final sparsity is reached; unset: 0.7 x --epochs")
    frequency: Optional[int] = field(
        None, help="steps between mask updates; unset: about 20 updates between begin and end, at most 100 apart")
    steps_per_epoch: Optional[int] = field(
        None, cli=False, help="optimizer steps per epoch: the schedule's steps then come from epochs")
    # --- fine-tuning ---
    epochs: int = field(2, help="fine-tuning epochs at the final pattern (the schedule spans them)")
    learning_rate: float = field(3e-5, help="peak learning rate")
    batch_size: int = field(32, help="batch size")
    distill: bool = field(
        False, help="fine-tune with knowledge distillation from the unpruned model (soft targets, alpha 0.5, T 2): "
                    "recovers more of the accuracy pruning takes")
    hidden_weight: float = field(
        0.0, help="with --distill: weight of a layer-by-layer hidden-state MSE to the unpruned model (TinyBERT-style; "
                  "0: logits only)")
    log_dir: Optional[str] = field(
        None, help="TensorBoard directory for TFMOT's PruningSummaries (needs tensorboard: pip install "
                   "'tfspeed[tensorboard]'); with --gradual, one run per stage (2:4: LOG_DIR/1of4, LOG_DIR/2of4)")

    def validate(self):
        if self.sparsity is not None:
            self.sparsity = _check_sparsity(self.sparsity)
        self.m_by_n = _check_m_by_n(self.m_by_n)
        _check_steps(self.begin_step, self.end_step, self.frequency)
        check_range("end_epoch", self.end_epoch, 0, low_open=True, what="a positive number", optional=True)
        if self.steps_per_epoch is not None:
            check_positive_int("steps_per_epoch", self.steps_per_epoch)
        if self.embedding_sparsity is not None:
            self.embedding_sparsity = _check_sparsity(self.embedding_sparsity, "embedding_sparsity")
        if isinstance(self.layers, str):
            self.layers = (self.layers,)
        elif self.layers is not None:
            self.layers = tuple(str(n) for n in self.layers)
        check_range("epochs", self.epochs, 0, low_open=True, what="a positive number")
        check_range("learning_rate", self.learning_rate, 0, low_open=True, what="a positive number")
        check_positive_int("batch_size", self.batch_size)
        check_range("hidden_weight", self.hidden_weight, 0, what="a number >= 0")
        if self.hidden_weight and not self.distill:
            raise ValueError(f"Received hidden_weight={self.hidden_weight!r} without distill=True: the hidden-state "
                             "loss is a distillation term. Pass distill=True, or drop hidden_weight.")
        if self.gradual:
            if self.m_by_n is None:
                raise ValueError("Received gradual=True without m_by_n: gradual is a route to m:n sparsity, expected "
                                 "m_by_n M:N with M >= 2 (e.g. m_by_n=(2, 4) with gradual=True prunes at 1:4 for one "
                                 "epoch, then 2:4). Received: m_by_n=None")
            if self.m_by_n[0] < 2:
                raise ValueError("Received an invalid value for `m_by_n` with gradual=True, expected M:N with M >= 2 "
                                 "(the first epoch prunes at (M-1):N, and 0:N would prune nothing). "
                                 f"Received: m_by_n={self.m_by_n!r}")
        if isinstance(self.log_dir, Path):
            self.log_dir = str(self.log_dir)

    @property
    def target_sparsity(self) -> float:
        """`sparsity`, or `0.5` when it is not set."""
        return DEFAULT_SPARSITY if self.sparsity is None else self.sparsity

    @property
    def gradual_from(self) -> Optional[tuple]:
        """The first, milder pattern of a gradual route: (m - 1, n) with `gradual`, else `None`."""
        return (self.m_by_n[0] - 1, self.m_by_n[1]) if self.gradual else None

    def targets(self) -> dict:
        """The settings that choose the pruned kernels, as keywords of `targeted_weights` / `sparsity_report`."""
        return {"include_embeddings": self.include_embeddings, "include_classifier": self.include_classifier,
                "layers": None if self.layers is None else list(self.layers)}

    def pruning_schedule(self):
        """The TFMOT `PruningSchedule` these settings describe: from `epochs` and `end_epoch` when `steps_per_epoch`
        is set, else from `begin_step` / `end_step`."""
        if self.steps_per_epoch is not None:
            return schedule_for_epochs(self.target_sparsity, self.epochs, self.steps_per_epoch, self.schedule,
                                       end_epoch=self.end_epoch, frequency=self.frequency)
        frequency = self.frequency
        if frequency is None:
            frequency = (100 if self.end_step in (None, -1)
                         else int(min(100, max(1, (self.end_step - self.begin_step) // 20))))
        return make_schedule(self.schedule, self.target_sparsity, self.begin_step, self.end_step, frequency)


__all__ = ["PruneConfig"]
