"""An honest clock for long runs: the remaining time estimated from the speed measured on this machine.

`RunClock` holds the plan of a run (its steps, each with a cost in *units*: one unit is one training step of the
fine-tuned model at batch 32, what the throughput benchmark calls a fine-tuning step) and the time each finished
step took. Its estimate of the time left is the units left times the seconds per unit measured so far in this run
(finished steps, and the training steps of the current stage), so it starts after the first training steps and
corrects itself as stages finish. The costs of the steps are ratios measured on one machine
(`benchmarks/training_throughput.py` and a timed `tfspeed demo`); another machine changes the seconds per unit far
more than the ratios.

`StageProgress` is the Keras callback a training stage adds to its `fit`: it measures the stage's seconds per step
(after the first steps, which trace and allocate), reports it to the clock, and logs a progress line per epoch
(stage i of n, epoch, the stage's time left and the run's).
"""

from __future__ import annotations

import datetime
import os
import time
from typing import Callable, Optional, Sequence

from tfspeed.compat import keras

# Cost of one training step relative to a fine-tuning step of the 6-layer teacher (same batch, same data), per
# stage kind, for the demo's models; measured on MiniLM / Rotten Tomatoes by benchmarks/training_throughput.py
# (benchmarks/README.md). A stage's own steps replace this guess as soon as it has run a few.
STEP_COST = {"finetune": 1.0, "distill": 0.45, "prune": 0.35, "lowrank": 0.4, "qat": 0.45}
QAT_COST = 1.3  # a QAT step against a float step of the same model
EXITS_COST = 0.4  # a step of the early exits (frozen encoder: forward only, plus the heads) against a float step
# Work around the steps of a stage (test and validation passes, saving, the stage's own conversions), in units.
# Calibrated on a timed `tfspeed demo` (benchmarks/README.md, the demo).
STAGE_OVERHEAD = {"finetune": 40.0, "vocab": 120.0, "distill": 60.0, "prune": 60.0, "lowrank": 60.0, "qat": 150.0,
                  "exits": 80.0}
CONVERSION_COST = 45.0  # one .tflite conversion and its evaluation on the test split, in units
PROFILE_COST = 0.07  # one interleaved latency run of one model, loading included, in units
REAL_TEXT_COST = {"padded": 0.03, "dynamic": 0.004}  # one test text through one model (real-text profile), in units
WARMUP_STEPS = 3  # steps left out of a stage's speed (tracing, first allocations)
# How far the work not yet timed on this machine may exceed its planned share: on a 2-core EPYC with AVX2 only the
# stages after the teacher took 1.5-1.6x the seconds per unit of its fine-tuning (the real-text profile 2.1x), on the
# AVX-512 machine the constants above were calibrated on about 1x (benchmarks/README.md, the demo). The estimate said
# is a range: the planned share, up to this factor on the part extrapolated from other work.
SPREAD = 1.6


def _cpu_seconds() -> tuple:
    """(user, system) CPU seconds of this process so far, every thread included."""
    times = os.times()
    return times.user, times.system


def _minutes(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min"


class RunClock:
    """The plan of a run and the time it has taken so far; `remaining()` estimates the rest.

    Args:
        plan: `(name, units)` for every step of the run, in order.
        log: where progress lines go. Defaults to `print`.
        machine: a short name of this machine (CPU model, cores), said with the estimates. Defaults to `""`.
        now: the clock (seconds). Defaults to `time.monotonic`.
    """

    def __init__(self, plan: Sequence, log: Callable[[str], None] = print, machine: str = "",
                 now: Callable[[], float] = time.monotonic):
        self.names = [name for name, _ in plan]
        if len(set(self.names)) != len(self.names):
            raise ValueError(f"Expected distinct step names in `plan`. Received: {self.names}")
        self.units = {name: float(units) for name, units in plan}
        self.overhead = {}  # name -> units of a training stage's work around its steps
        self.step_units = {}  # name -> units of one training step of that stage
        self.first_said = False
        self.log, self.machine, self.now = log, machine, now
        self.start = now()
        self.finished = {}  # name -> seconds
        self.cpu = {}  # name -> user and system CPU seconds of the process
        self.skipped = set()
        self.current: Optional[str] = None
        self.current_start = None
        self.step_rate = None  # (seconds per step, units per step) of the current stage's training
        self.steps_left = 0
        self.estimates = []  # (elapsed seconds, estimated seconds left) each time one was said

    # --- what happened ---------------------------------------------------------------------------------------------
    def begin(self, name: str):
        self._check(name)
        self.current, self.current_start = name, self.now()
        self._cpu_start = _cpu_seconds()
        self.step_rate, self.steps_left = None, 0

    def end(self, name: str):
        self._check(name)
        self.finished[name] = self.now() - (self.current_start if self.current == name else self.now())
        if self.current == name:
            user, system = (a - b for a, b in zip(_cpu_seconds(), self._cpu_start))
            self.cpu[name] = {"user": round(user, 1), "system": round(system, 1)}
            self.current = None

    def skip(self, name: str):
        """A step done by an earlier run (kept): it costs nothing now."""
        self._check(name)
        self.skipped.add(name)

    def training(self, seconds_per_step: float, units_per_step: float, steps_left: int):
        """The current stage trains at `seconds_per_step`; `steps_left` steps remain in it."""
        self.step_rate, self.steps_left = (float(seconds_per_step), float(units_per_step)), int(steps_left)

    def _check(self, name):
        if name not in self.units:
            raise ValueError(f"Received an invalid value for `name`, expected a step of the plan {self.names}. "
                             f"Received: name={name!r}")

    # --- what is left --------------------------------------------------------------------------------------------
    def seconds_per_unit(self) -> Optional[float]:
        """Seconds per unit on this machine: from the finished steps when some took time, else from the current
        stage's training steps; None before any was measured."""
        done = [n for n in self.finished if n not in self.skipped and self.units[n] > 0 and self.finished[n] > 1]
        if done:
            return sum(self.finished[n] for n in done) / sum(self.units[n] for n in done)
        if self.step_rate is not None:
            seconds, units = self.step_rate
            return seconds / units if units > 0 else None
        return None

    def remaining(self) -> Optional[float]:
        """Estimated seconds until the run ends, or None before anything was measured."""
        parts = self._remaining_parts()
        return None if parts is None else sum(parts)

    def remaining_range(self) -> Optional[tuple]:
        """(shortest, longest) seconds until the run ends: `remaining()`, and the same with the part extrapolated
        from other kinds of work (every step but the current stage's own training steps) times `SPREAD`."""
        parts = self._remaining_parts()
        if parts is None:
            return None
        measured, extrapolated = parts
        return measured + extrapolated, measured + SPREAD * extrapolated

    def _remaining_parts(self) -> Optional[tuple]:
        """(seconds left timed on this stage's own steps, seconds left extrapolated at the seconds per unit)."""
        rate = self.seconds_per_unit()
        if rate is None:
            return None
        measured = extrapolated = 0.0
        for name in self.names:
            if name in self.finished or name in self.skipped:
                continue
            if name == self.current:
                if self.step_rate is not None:  # its steps at its own speed, then the work after them
                    measured += self.steps_left * self.step_rate[0]
                    extrapolated += self._overhead_units(name) * rate
                else:
                    extrapolated += max(0.0, self.units[name] * rate - (self.now() - self.current_start))
            else:
                extrapolated += self.units[name] * rate
        return measured, extrapolated

    def _overhead_units(self, name: str) -> float:
        return self.overhead.get(name, 0.0) / 2  # about half of it comes after the last training step

    def say(self, prefix: str = "") -> Optional[str]:
        """Logs (and returns) the estimate of the time left, with the finish time and the machine."""
        span = self.remaining_range()
        if span is None:
            return None
        left, longest = span
        elapsed = self.now() - self.start
        self.estimates.append((elapsed, left, longest))
        now = datetime.datetime.now()
        finish, latest = ((now + datetime.timedelta(seconds=t)).strftime("%H:%M") for t in (left, longest))
        where = f" on this machine ({self.machine})" if self.machine else " on this machine"
        if _minutes(longest) != _minutes(left):
            line = (f"{prefix}about {_minutes(left)} left in the run{where}, up to {_minutes(longest)}; "
                    f"finishing between {finish} and {latest}")
        else:
            line = f"{prefix}about {_minutes(left)} left in the run{where}, finishing near {finish}"
        self.log(line)
        return line

    def record(self) -> dict:
        """What the clock saw, for the run's report: step times and the estimates said."""
        return {"seconds": {n: round(s, 1) for n, s in self.finished.items()}, "cpu_seconds": dict(self.cpu),
                "planned_units": dict(self.units), "skipped": sorted(self.skipped),
                "seconds_per_unit": self.seconds_per_unit(),
                "estimates": [{"elapsed_s": round(e, 1), "left_s": round(left, 1), "longest_s": round(longest, 1)}
                              for e, left, longest in self.estimates]}


class StageProgress(keras.callbacks.Callback):
    """Measures a training stage's speed and logs one line per epoch: epoch, the stage's time left, the run's.

    Args:
        name: the stage's name in the log (and in the clock's plan).
        kind: the stage kind, for its cost per step (`STEP_COST`). Defaults to `name`.
        clock: the run's `RunClock`, told the stage's speed. Defaults to `None` (the stage's time left only).
        index / total: the stage's place in the run, for "[i/n]". Defaults to `None`.
        log: Defaults to `print`.
        first_estimate_step: after this many steps the run's first estimate is said (once per run). Defaults to
            `20`.
    """

    def __init__(self, name: str, kind: Optional[str] = None, clock: Optional[RunClock] = None,
                 index: Optional[int] = None, total: Optional[int] = None, log: Callable[[str], None] = print,
                 first_estimate_step: int = 20):
        super().__init__()
        self.name, self.kind, self.clock, self.log = name, kind or name, clock, log
        self.tag = f"[{index}/{total}] " if index is not None and total is not None else ""
        self.first_estimate_step = first_estimate_step
        self._step, self._t0, self._t_warm, self._epoch_start = 0, None, None, None
        self.seconds_per_step = None

    def _total_steps(self) -> Optional[int]:
        steps, epochs = self.params.get("steps"), self.params.get("epochs")
        return steps * epochs if steps and epochs else None

    def on_train_begin(self, logs=None):
        self._t0 = time.perf_counter()

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start = time.perf_counter()
        self._epoch = epoch
        if self.params.get("steps"):
            self._step = max(self._step, epoch * self.params["steps"])  # resumed runs start at a later epoch

    def on_train_batch_end(self, batch, logs=None):
        self._step += 1
        if self._step == WARMUP_STEPS:
            self._t_warm, self._warm_step = time.perf_counter(), self._step
        elif self._t_warm is not None and self._step > self._warm_step:
            self.seconds_per_step = (time.perf_counter() - self._t_warm) / (self._step - self._warm_step)
            total = self._total_steps()
            if self.clock is not None and total:
                units = self.clock.step_units.get(self.name, STEP_COST.get(self.kind, 1.0))
                self.clock.training(self.seconds_per_step, units, total - self._step)
                if self._step >= self.first_estimate_step and not self.clock.first_said:
                    self.clock.first_said = True
                    self.clock.say(f"{self.tag}{self.name}: {self.seconds_per_step:.2f} s per training step; ")

    def on_epoch_end(self, epoch, logs=None):
        epochs = self.params.get("epochs")
        seconds = time.perf_counter() - self._epoch_start
        total = self._total_steps()
        parts = [f"{self.tag}{self.name}: epoch {epoch + 1}/{epochs} in {_minutes(seconds)}"]
        if self.seconds_per_step is not None and total:
            parts.append(f"stage about {_minutes(max(0, total - self._step) * self.seconds_per_step)} more")
        line = ", ".join(parts)
        if self.clock is not None and self.clock.remaining() is not None:
            self.clock.say(line + "; ")
        else:
            self.log(line)
