"""Every runnable example (`examples/*.py`) runs end to end as a script on `bert-tiny-random` with its small defaults
and prints or writes the numbers it promises."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


def _number(pattern, text):
    match = re.search(pattern, text)
    assert match, f"expected a line matching {pattern!r} in the output:\n{text}"
    return float(match.group(1))


def check_finetune_and_export(out, stdout):
    for mode in ("dynamic", "float32"):
        assert (out / f"model_{mode}.tflite").stat().st_size > 1e6
    assert (out / "model.keras").is_file()
    keras_accuracy = _number(r"keras accuracy: (\d\.\d+)", stdout)
    assert _number(r"float32: .* accuracy (\d\.\d+)", stdout) == keras_accuracy  # float32 file == Keras model
    assert abs(_number(r"dynamic: .* accuracy (\d\.\d+)", stdout) - keras_accuracy) <= 0.05


def check_prune_2of4(out, stdout):
    assert "every pruned kernel is 2:4" in stdout
    assert _number(r"sparsity: (\d\.\d+) of", stdout) >= 0.49
    assert (out / "model_2of4.keras").is_file()


def check_qat_int8(out, stdout):
    from tfspeed.export import int8_fractions

    assert int8_fractions(out / "model_int8.tflite") == {"FULLY_CONNECTED": 1.0, "BATCH_MATMUL": 1.0}
    assert "int8 fractions: FULLY_CONNECTED 1.00, BATCH_MATMUL 1.00" in stdout
    assert 0.0 < _number(r"int8 file (\d\.\d+)", stdout) <= 1.0


def check_distill(out, stdout):
    assert "students: 1 of its layers" in stdout  # bert-tiny-random has 2 layers
    for who in ("teacher", r"student \(distill\)", r"student \(Distiller\)"):
        assert 0.0 < _number(who + r" (\d\.\d+)", stdout) <= 1.0
    assert (out / "student.keras").is_file()


def check_profile_tflite(out, stdout):
    data = json.loads((out / "profile.json").read_text())
    assert [m["name"] for m in data["models"]] == ["model_float32.tflite", "model_dynamic.tflite"]
    assert all(m["latency_ms"]["median"] > 0 and m["latency_ms"]["n"] == 20 for m in data["models"])
    assert "model_dynamic.tflite" in (out / "profile.md").read_text()
    assert _number(r"\((\d+\.\d+)x faster\)", stdout) > 0


def check_factorize_ffn(out, stdout):
    assert "layer_1_output" in stdout and (out / "model_lowrank.keras").is_file()  # the per-layer table, the model
    assert _number(r"FFN multiply-adds kept: (\d\.\d+)", stdout) <= 0.5
    for who in ("unfactorised", "factorised", "after distillation"):
        assert 0.0 < _number(who + r" (\d\.\d+)", stdout) <= 1.0
    assert _number(r"factorised / unfactorised = (\d+\.\d+)", stdout) > 0


CHECKS = {"finetune_and_export": check_finetune_and_export, "prune_2of4": check_prune_2of4,
          "qat_int8": check_qat_int8, "distill": check_distill, "profile_tflite": check_profile_tflite,
          "factorize_ffn": check_factorize_ffn}


def test_every_example_is_tested_and_listed():
    scripts = sorted(p.stem for p in EXAMPLES.glob("*.py"))
    assert scripts == sorted(CHECKS)
    readme = (EXAMPLES / "README.md").read_text()
    assert all(f"python examples/{name}.py" in readme for name in scripts)


# finetune_and_export runs by default; the others (20-45 s each) with --run-large, to hold the suite near 20 min.
EXAMPLES_PARAMS = [pytest.param(name, marks=() if name == "finetune_and_export" else pytest.mark.large)
                   for name in sorted(CHECKS)]


@pytest.mark.parametrize("name", EXAMPLES_PARAMS)
def test_example_runs(name, tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run([sys.executable, str(EXAMPLES / f"{name}.py"), "--out", str(out)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{name} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    CHECKS[name](out, proc.stdout)
