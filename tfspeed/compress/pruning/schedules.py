"""Pruning schedules: when the masks are updated and how sparse they get, as TFMOT `PruningSchedule`s.

`make_schedule` builds one from steps, `schedule_for_epochs` from epochs (the steps of a fine-tuning run); the checks
of sparsity, m:n patterns and steps live here so that `PruneConfig` and the schedule builders share them.

Example:

>>> schedule_for_epochs(0.5, epochs=2, steps_per_epoch=300).get_config()["config"]["end_step"]
420
"""

from __future__ import annotations

import re
from typing import Optional

import numpy as np
import tensorflow_model_optimization as tfmot

from tfspeed.config import StrEnum

_sparsity = tfmot.sparsity.keras

DEFAULT_SPARSITY = 0.5


class Schedule(StrEnum):
    """How sparsity grows: TFMOT `PolynomialDecay` (from `initial_sparsity` to the target) or `ConstantSparsity`."""

    POLYNOMIAL = "polynomial"
    CONSTANT = "constant"

    @classmethod
    def expected(cls) -> str:
        return f"one of {cls.choices()} or a `tfmot.sparsity.keras.PruningSchedule`"


SCHEDULES = tuple(Schedule.choices())


# ======================================================================================================================
# Checks
# ======================================================================================================================

def _check_sparsity(sparsity, argument="sparsity"):
    if isinstance(sparsity, bool) or not isinstance(sparsity, (int, float, np.floating)) or not 0.0 <= sparsity < 1.0:
        raise ValueError(f"Received an invalid value for `{argument}`, expected a float in [0, 1). "
                         f"Received: {argument}={sparsity!r}")
    return float(sparsity)


def _parse_m_by_n(text):
    """'2:4' (or '2,4', '2x4', '2/4') -> (2, 4); text that is not two integers is returned as it is (and refused by
    `_check_m_by_n`, which echoes it); 'none' -> None."""
    if not isinstance(text, str):
        return text
    if text.strip().lower() in ("", "none"):
        return None
    try:
        return tuple(int(p) for p in re.split(r"[:,x/ ]", text.strip()))
    except ValueError:
        return text


def _check_m_by_n(m_by_n):
    if m_by_n is None:
        return None
    if isinstance(m_by_n, str):
        m_by_n = _parse_m_by_n(m_by_n)
        if isinstance(m_by_n, str):
            m_by_n = (m_by_n,)
    ok = (isinstance(m_by_n, (tuple, list)) and len(m_by_n) == 2
          and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in m_by_n)
          and 0 < m_by_n[0] < m_by_n[1])
    if not ok:
        raise ValueError("Received an invalid value for `m_by_n`, expected two integers (m, n) with 0 < m < n: m zeros "
                         f"in every n consecutive weights, e.g. (2, 4). Received: m_by_n={m_by_n!r}")
    return int(m_by_n[0]), int(m_by_n[1])


def _check_steps(begin_step, end_step, frequency=None):
    """`begin_step` >= 0, `end_step` None / -1 (no end) or > `begin_step`, `frequency` a positive integer (or None: not
    checked, chosen later)."""
    if isinstance(begin_step, bool) or not isinstance(begin_step, (int, np.integer)) or begin_step < 0:
        raise ValueError(f"Received an invalid value for `begin_step`, expected an integer >= 0. "
                         f"Received: begin_step={begin_step!r}")
    if end_step is not None and end_step != -1 and (isinstance(end_step, bool)
                                                    or not isinstance(end_step, (int, np.integer))
                                                    or end_step <= begin_step):
        raise ValueError(f"Received an invalid value for `end_step`, expected an integer > begin_step (pruning must "
                         f"begin before it ends). Received: begin_step={begin_step!r}, end_step={end_step!r}")
    if frequency is not None and (isinstance(frequency, bool) or not isinstance(frequency, (int, np.integer))
                                  or frequency < 1):
        raise ValueError(f"Received an invalid value for `frequency`, expected a positive integer. "
                         f"Received: frequency={frequency!r}")


# ======================================================================================================================
# Schedules
# ======================================================================================================================

def make_schedule(schedule="polynomial", sparsity: float = DEFAULT_SPARSITY, begin_step: int = 0,
                  end_step: Optional[int] = None, frequency: int = 100, initial_sparsity: float = 0.0, power: int = 3):
    """A TFMOT pruning schedule.

    Args:
        schedule: `"polynomial"` (TFMOT `PolynomialDecay` from `initial_sparsity` to `sparsity` between `begin_step`
            and `end_step`), `"constant"` (`ConstantSparsity(sparsity)` from `begin_step`), a `Schedule`, or a TFMOT
            `PruningSchedule`, returned as it is. Defaults to `"polynomial"`.
        sparsity: final fraction of zeros, in [0, 1). Defaults to `0.5`.
        begin_step: first step at which masks are updated. Defaults to `0`.
        end_step: last step of mask updates; required by `"polynomial"`. Defaults to `None` (`-1`, no end, for
            `"constant"`).
        frequency: steps between mask updates. Defaults to `100`.
        initial_sparsity: sparsity at `begin_step` of the polynomial schedule. Defaults to `0.0`.
        power: exponent of the polynomial schedule. Defaults to `3`.
    """
    if isinstance(schedule, _sparsity.PruningSchedule):
        return schedule
    schedule = Schedule.parse("schedule", schedule)
    sparsity = _check_sparsity(sparsity)
    _check_steps(begin_step, end_step, frequency)
    if schedule == Schedule.CONSTANT:
        return _sparsity.ConstantSparsity(sparsity, begin_step=int(begin_step),
                                          end_step=-1 if end_step is None else int(end_step), frequency=int(frequency))
    if end_step is None or end_step == -1:
        raise ValueError("The polynomial schedule needs `end_step` (the step at which `sparsity` is reached). Pass "
                         "`end_step`, or `epochs` and `steps_per_epoch` to `prune` / `schedule_for_epochs`. "
                         f"Received: end_step={end_step!r}")
    initial_sparsity = _check_sparsity(initial_sparsity, "initial_sparsity")
    if initial_sparsity > sparsity:
        raise ValueError(f"Expected `initial_sparsity` <= `sparsity`. Received: initial_sparsity={initial_sparsity}, "
                         f"sparsity={sparsity}")
    return _sparsity.PolynomialDecay(initial_sparsity=initial_sparsity, final_sparsity=sparsity,
                                     begin_step=int(begin_step), end_step=int(end_step), power=power,
                                     frequency=int(frequency))


def schedule_for_epochs(sparsity: float = DEFAULT_SPARSITY, epochs: float = 1, steps_per_epoch: int = 100,
                        schedule="polynomial", begin_epoch: float = 0.0, end_epoch: Optional[float] = None,
                        frequency: Optional[int] = None, **kwargs):
    """A TFMOT schedule whose steps are derived from epochs.

    Args:
        sparsity: final fraction of zeros, in [0, 1). Defaults to `0.5`.
        epochs: epochs of pruning fine-tuning. Defaults to `1`.
        steps_per_epoch: optimizer steps per epoch (`ceil(train examples / batch size)`). Defaults to `100`.
        schedule: `"polynomial"` or `"constant"`. Defaults to `"polynomial"`.
        begin_epoch: epoch (may be fractional) at which pruning begins. Defaults to `0.0`.
        end_epoch: epoch at which the final sparsity is reached (polynomial). Defaults to `0.7 * epochs`, leaving the
            last 30% of the steps to recover at the final sparsity.
        frequency: steps between mask updates. Defaults to about 20 updates between begin and end (at most 100 steps).
        **kwargs: `initial_sparsity`, `power` for `make_schedule`.

    Example:

    >>> schedule_for_epochs(0.5, epochs=2, steps_per_epoch=300).get_config()["config"]["end_step"]
    420
    """
    if isinstance(steps_per_epoch, bool) or not isinstance(steps_per_epoch, (int, np.integer)) or steps_per_epoch < 1:
        raise ValueError(f"Received an invalid value for `steps_per_epoch`, expected a positive integer. "
                         f"Received: steps_per_epoch={steps_per_epoch!r}")
    if isinstance(epochs, bool) or not isinstance(epochs, (int, float)) or epochs <= 0:
        raise ValueError(f"Received an invalid value for `epochs`, expected a positive number. "
                         f"Received: epochs={epochs!r}")
    schedule = Schedule.parse("schedule", schedule)
    end_epoch = 0.7 * epochs if end_epoch is None else end_epoch
    if not 0 <= begin_epoch < end_epoch:
        raise ValueError(f"Expected 0 <= begin_epoch < end_epoch (pruning must begin before it ends). "
                         f"Received: begin_epoch={begin_epoch!r}, end_epoch={end_epoch!r}")
    begin, end = int(round(begin_epoch * steps_per_epoch)), max(int(round(end_epoch * steps_per_epoch)), 1)
    end = max(end, begin + 1)
    if frequency is None:
        frequency = int(min(100, max(1, (end - begin) // 20)))
    return make_schedule(schedule, sparsity, begin_step=begin,
                         end_step=end if schedule == Schedule.POLYNOMIAL else None, frequency=frequency, **kwargs)


__all__ = ["DEFAULT_SPARSITY", "SCHEDULES", "Schedule", "make_schedule", "schedule_for_epochs"]
