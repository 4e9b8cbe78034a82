"""The run clock: estimates of the time left from the speed measured so far, and the per-epoch progress lines."""

import numpy as np
import pytest

from tfspeed.clock import SPREAD, STEP_COST, RunClock, StageProgress
from tfspeed.compat import keras


class FakeTime:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_estimate_from_the_current_stage_then_from_finished_steps():
    now, lines = FakeTime(), []
    clock = RunClock([("teacher", 100.0), ("distill", 50.0), ("export", 20.0)], log=lines.append, now=now)
    clock.begin("teacher")
    assert clock.remaining() is None and clock.say() is None and lines == []  # nothing measured yet: no guess
    now.t = 10.0
    clock.training(seconds_per_step=0.5, units_per_step=1.0, steps_left=80)
    # the stage's own steps at its speed, then the later steps at 0.5 s per unit
    assert clock.remaining() == pytest.approx(80 * 0.5 + (50 + 20) * 0.5)
    now.t = 60.0
    clock.end("teacher")  # 60 s for 100 units: 0.6 s per unit from now on
    assert clock.seconds_per_unit() == pytest.approx(0.6)
    assert clock.remaining() == pytest.approx(70 * 0.6)
    clock.begin("distill")
    now.t = 75.0  # 15 s into a stage planned at 30 s: 15 s of it left
    assert clock.remaining() == pytest.approx(15 + 20 * 0.6)
    # nothing of the rest is timed on this machine yet: it may take up to SPREAD times as long
    assert clock.remaining_range() == pytest.approx((27.0, 27.0 * SPREAD))
    line = clock.say("[2/3] distill: ")
    assert line.startswith("[2/3] distill: about 27 s left in the run on this machine, up to 43 s; finishing "
                           "between ") and lines == [line]
    record = clock.record()
    assert record["seconds"] == {"teacher": 60.0}
    assert record["estimates"] == [{"elapsed_s": 75.0, "left_s": 27.0, "longest_s": pytest.approx(27.0 * SPREAD)}]
    assert set(record["cpu_seconds"]["teacher"]) == {"user", "system"}  # this process's CPU time in the step


def test_skipped_steps_cost_nothing_and_do_not_set_the_speed():
    now = FakeTime()
    clock = RunClock([("teacher", 100.0), ("distill", 50.0)], log=lambda _: None, now=now)
    clock.skip("teacher")  # done by an earlier run
    clock.begin("distill")
    now.t = 5.0
    clock.training(seconds_per_step=0.2, units_per_step=STEP_COST["distill"], steps_left=10)
    assert clock.remaining() == pytest.approx(10 * 0.2)  # only distill's own steps are left
    assert clock.remaining_range() == pytest.approx((2.0, 2.0))  # all of it timed here: no spread
    assert clock.seconds_per_unit() == pytest.approx(0.2 / STEP_COST["distill"])


def test_bad_plans_and_names_are_refused():
    with pytest.raises(ValueError, match="distinct step names"):
        RunClock([("a", 1), ("a", 2)])
    clock = RunClock([("a", 1)])
    with pytest.raises(ValueError, match=r"expected a step of the plan \['a'\]. Received: name='b'"):
        clock.begin("b")


def test_stage_progress_logs_each_epoch_and_tells_the_clock():
    lines = []
    clock = RunClock([("distill", 100.0), ("export", 10.0)], log=lines.append, machine="test CPU, 2 cores")
    clock.begin("distill")
    model = keras.Sequential([keras.layers.Dense(2, input_shape=(4,))])
    model.compile("sgd", "mse")
    x, y = np.zeros((64, 4), np.float32), np.zeros((64, 2), np.float32)
    progress = StageProgress("distill", clock=clock, index=2, total=5, log=lines.append, first_estimate_step=5)
    model.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[progress])  # 8 steps per epoch
    assert progress.seconds_per_step > 0 and clock.step_rate[1] == STEP_COST["distill"]
    epoch_lines = [ln for ln in lines if "epoch" in ln]
    assert [ln.split(" in ")[0] for ln in epoch_lines] == ["[2/5] distill: epoch 1/2", "[2/5] distill: epoch 2/2"]
    assert "stage about 0 s more" in epoch_lines[-1] and "(test CPU, 2 cores)" in epoch_lines[-1]
    assert sum("s per training step" in ln for ln in lines) == 1  # the first estimate, said once
