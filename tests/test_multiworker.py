"""Two real workers on localhost: `tfspeed finetune` and `tfspeed distill` with `--strategy multi-worker`
(`MultiWorkerMirroredStrategy` from TF_CONFIG).

Each worker is its own process running the command line (`tfspeed.cli.main`), with one test hook: just before the
model directory is saved, the worker dumps the weights it saves to `worker<i>.npz`, so the two workers' weights can be
compared (only the chief keeps its model directory). A run is killed (SIGKILL, the whole process group) when it
outlives its timeout, so a hung collective fails the test instead of hanging CI.

The fine-tuning run is interrupted: worker 1 is killed (SIGKILL) during epoch 2, the chief must then stop by itself
with an error saying what to do, and both are started again with the same command: they resume from the chief's
`BackupAndRestore` checkpoint of epoch 1. The distillation run then distils the fine-tuned model on two workers.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
RUN_TIMEOUT = 300  # seconds for one run of both workers (about 40 s on an idle 2-core machine)
MAX_DIFF = 1e-6  # the workers' weights after training: identical up to this (measured: 0.0)

# The worker: the real command line, with the weights it saves dumped beside.
WORKER = r"""
import json, os, sys
import numpy as np
from tfspeed import artifacts, cli

index = json.loads(os.environ["TF_CONFIG"])["task"]["index"]
save = artifacts.save_model_dir


def dump_then_save(model, out, *args, **kwargs):
    np.savez(os.path.join(os.environ["TFSPEED_TEST_DUMP"], f"worker{index}.npz"), *model.get_weights())
    return save(model, out, *args, **kwargs)


artifacts.save_model_dir = dump_then_save
sys.exit(cli.main(sys.argv[1:]))
"""


def _free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("localhost", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class Cluster:
    """Two workers of one command: started together, waited for with a timeout, killed as process groups."""

    started = []  # every cluster of this module, killed at its end

    def __init__(self, tmp_path: Path, name: str, argv: list):
        self.dir = tmp_path / name
        self.dir.mkdir()
        script = self.dir / "worker.py"
        script.write_text(WORKER)
        ports = _free_ports(2)
        self.logs = [self.dir / f"worker{i}.log" for i in range(2)]
        self.procs = []
        for i in range(2):
            tf_config = {"cluster": {"worker": [f"localhost:{p}" for p in ports]},
                         "task": {"type": "worker", "index": i}}
            env = {**os.environ, "TF_CONFIG": json.dumps(tf_config), "TFSPEED_TEST_DUMP": str(self.dir),
                   "TMPDIR": str(self.dir),
                   "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
                   # two processes on a 2-core machine: one thread each, or they fight over the cores
                   "TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
            with open(self.logs[i], "wb") as log:
                self.procs.append(subprocess.Popen([sys.executable, str(script), *argv], env=env, stdout=log,
                                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                                   start_new_session=True))
        self.start = time.monotonic()
        Cluster.started.append(self)

    def log(self, i: int) -> str:
        return self.logs[i].read_text(errors="replace")

    def kill(self, i: int):
        if self.procs[i].poll() is None:  # a reaped worker's pid may belong to another process by now
            try:
                os.killpg(self.procs[i].pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.procs[i].wait()

    def kill_all(self):
        for i in range(2):
            self.kill(i)

    def tails(self) -> str:
        return "\n".join(f"--- worker {i} (rc {p.poll()}):\n" + "\n".join(self.log(i).splitlines()[-25:])
                         for i, p in enumerate(self.procs))

    def wait_for(self, i: int, text: str, timeout: float = RUN_TIMEOUT):
        """Waits until worker `i` printed `text`; fails (and kills both) when it exits or the time runs out."""
        while text not in self.log(i):
            if self.procs[i].poll() is not None or time.monotonic() - self.start > timeout:
                self.kill_all()
                pytest.fail(f"worker {i} never printed {text!r}\n{self.tails()}")
            time.sleep(0.1)

    def exit_code(self, i: int, timeout: float) -> int:
        """Worker `i`'s exit code; fails (and kills both) when it still runs after `timeout` seconds."""
        try:
            return self.procs[i].wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill_all()
            pytest.fail(f"worker {i} still ran {timeout} s after the other one died\n{self.tails()}")

    def wait(self, timeout: float = RUN_TIMEOUT) -> float:
        """Waits for both workers to exit 0; returns the run's seconds."""
        try:
            for p in self.procs:
                p.wait(timeout=max(1.0, timeout - (time.monotonic() - self.start)))
        except subprocess.TimeoutExpired:
            self.kill_all()
            pytest.fail(f"the workers did not finish in {timeout} s (a hung collective?)\n{self.tails()}")
        assert [p.returncode for p in self.procs] == [0, 0], self.tails()
        return time.monotonic() - self.start

    def weights(self) -> list:
        """The weights each worker saved."""
        result = []
        for i in range(2):
            with np.load(self.dir / f"worker{i}.npz") as f:
                result.append([f[f"arr_{k}"] for k in range(len(f.files))])
        return result


def max_diff(a: list, b: list) -> float:
    assert [x.shape for x in a] == [y.shape for y in b]
    return max(float(np.max(np.abs(x - y))) if x.size else 0.0 for x, y in zip(a, b))


@pytest.fixture(scope="module", autouse=True)
def _no_worker_left():
    """Whatever happens in a test, no worker outlives this module."""
    yield
    for run in Cluster.started:
        run.kill_all()


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory, sentiment_csv):
    """`tfspeed finetune` on two workers, interrupted in epoch 2 and restarted: `(out, first, second, seconds)`."""
    tmp = tmp_path_factory.mktemp("multiworker")
    out, work = tmp / "teacher", tmp / "work"
    # 20 steps of 16 examples (8 per worker) per epoch
    argv = ["finetune", "--model", "bert-tiny-random", "--data", str(sentiment_csv), "--eval-limit", "40",
            "--seq-length", "16", "--epochs", "2", "--batch-size", "16", "--learning-rate", "1e-3",
            "--strategy", "multi-worker", "--work-dir", str(work), "--out", str(out)]
    start = time.monotonic()
    first = Cluster(tmp, "first", argv)
    # BackupAndRestore writes the checkpoint of epoch 1 before Keras prints "Epoch 2/2" (epoch 2 starting): kill
    # worker 1 a moment into epoch 2 (its 20 steps take 2-5 s here). The chief notices (a broken connection, or TF's
    # coordination service missing worker 1's heartbeats: at most about 10 s) and stops.
    first.wait_for(0, "Epoch 2/2")
    time.sleep(0.3)
    first.kill(1)
    first.chief_code = first.exit_code(0, timeout=90)
    first.wrote_out = out.exists()
    second = Cluster(tmp, "second", argv)
    second.wait()
    return out, first, second, time.monotonic() - start


def test_finetune_on_two_workers_resumes_and_agrees(finetuned):
    from tfspeed import artifacts
    from tfspeed.hub.presets import build_preset_encoder
    from tfspeed.models import layer_by_name

    out, first, second, seconds = finetuned
    # the first run was killed in epoch 2: epoch 1 finished and was backed up, epoch 2 did not finish; the chief
    # stopped by itself, saying what to do
    assert "teacher: epoch 1/2" in first.log(0) and "teacher: epoch 2/2" not in first.log(0), first.tails()
    assert first.chief_code == 1 and "ERROR: Another worker of this multi-worker run stopped" in first.log(0)
    assert not first.wrote_out
    # the restart resumed at epoch 2 on both workers: it ran epoch 2 only
    for i in range(2):
        epochs = [line for line in second.log(i).splitlines() if line.startswith("Epoch ")]
        assert epochs == ["Epoch 2/2"], second.tails()
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(metrics["history"]["loss"]) == 1 and len(metrics["seconds_per_epoch"]) == 1
    assert "the chief writes" in second.log(1) and f"Wrote {out}" in second.log(0)

    w0, w1 = second.weights()
    diff = max_diff(w0, w1)
    print(f"\nfine-tune on 2 workers, killed and resumed: {seconds:.1f} s, max |diff| of weights across workers "
          f"{diff:.2e}")
    assert diff <= MAX_DIFF
    # the chief's model directory holds those weights; training moved them away from the preset's
    model, _ = artifacts.load_model_dir(out)
    assert max_diff(model.get_weights(), w0) == 0.0
    fresh = build_preset_encoder("bert-tiny-random")
    moved = max(max_diff(layer_by_name(model, layer.name).get_weights(), layer.get_weights())
                for layer in fresh.layers if layer.weights)
    print(f"largest change of an encoder weight from the preset's: {moved:.2e}")
    assert moved > 1e-3
    # the checkpoints are removed once fit finished; the worker's temporary output with them
    assert not list((out.parent / "work").rglob("checkpoint"))
    assert not list(second.dir.glob("tfspeed-worker*"))


@pytest.mark.large  # about 30 s: two more worker processes
def test_distill_on_two_workers_agrees(finetuned, sentiment_csv, tmp_path):
    teacher, _, _, _ = finetuned
    out = tmp_path / "student"
    argv = ["distill", "--teacher", str(teacher), "--student-layers", "1", "--data", str(sentiment_csv), "--limit",
            "96", "--eval-limit", "40", "--epochs", "1", "--batch-size", "16", "--learning-rate", "1e-3",
            "--strategy", "multi-worker", "--work-dir", str(tmp_path / "work"), "--out", str(out)]
    run = Cluster(tmp_path, "distill", argv)
    seconds = run.wait()
    w0, w1 = run.weights()
    diff = max_diff(w0, w1)
    print(f"\ndistill on 2 workers: {seconds:.1f} s, max |diff| of weights across workers {diff:.2e}")
    assert diff <= MAX_DIFF
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["student_num_layers"] == 1 and len(metrics["history"]["loss"]) == 1
    # each worker cached the teacher's logits in a file of its own (one file would be written by both at once)
    names = sorted(p.name for p in (tmp_path / "work" / "teacher-logits").iterdir())
    assert metrics["cached_teacher_logits"] and len(names) == 2 and sum(n.endswith("-worker1.npz") for n in names) == 1
    assert not list(run.dir.glob("tfspeed-worker*"))
