"""`tfspeed optimize`: recipe checks, the report, resuming, and one small end-to-end run."""

import json

import pytest

from tfspeed import cli
from tfspeed.export import read_metadata
from tfspeed.export.buckets import bucket_signatures
from tfspeed.recipe import RecipeConfig
from tfspeed.recipe.report import build, markdown, pick_combined
from tfspeed.recipe.runner import Optimizer


@pytest.mark.parametrize("kwargs, match", [
    ({"recipe": "distill,shrink"}, "unknown: \\['shrink'\\]"),
    ({"recipe": "distill,vocab"}, "`vocab` must be the first"),
    ({"recipe": "qat,prune"}, "`qat` must be the last"),
    ({"recipe": "prune,prune"}, "once"),
    ({"heads": 1.0}, "heads"),
    ({"prune": "random"}, "structured"),
    ({"student_layers": 0}, "student_layers"),
    ({"max_drop": 2}, "max_drop"),
    ({"varlen": "ragged"}, r"`varlen`, expected one of \['buckets', 'dynamic'\].*varlen='ragged'"),
])
def test_bad_recipes_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        RecipeConfig(**kwargs)


def test_config_files_json_and_toml(tmp_path):
    (tmp_path / "r.json").write_text(json.dumps({"recipe": ["distill", "qat"], "student_layers": 2}))
    (tmp_path / "r.toml").write_text('recipe = "vocab,prune"\nprune = "unstructured"\nsparsity = 0.8\n')
    assert RecipeConfig.from_file(tmp_path / "r.json").recipe == ("distill", "qat")
    toml = RecipeConfig.from_file(tmp_path / "r.toml")
    assert toml.recipe == ("vocab", "prune") and toml.sparsity == 0.8
    (tmp_path / "bad.json").write_text('{"epochs": 3}')
    with pytest.raises(ValueError, match="Unknown recipe settings \\['epochs'\\]"):
        RecipeConfig.from_file(tmp_path / "bad.json")


def _fake(name, stage, accuracy, latency, size):
    return ({"name": name, "path": f"/x/{name}", "accuracy": accuracy, "size_bytes": size, "gzip_bytes": size // 2,
             "stage": stage},
            {"name": name, "format": "tflite", "latency_ms": {"median": latency, "p90": latency * 1.1}})


def test_report_ratios_and_combined_choice():
    rows = [_fake("teacher-tf-float32", "teacher", 0.85, 40.0, 90_000_000),
            _fake("teacher-dynamic", "teacher", 0.85, 10.0, 23_000_000),
            _fake("02-distill-dynamic", "distill", 0.84, 5.0, 15_000_000),
            _fake("03-prune-dynamic", "prune", 0.835, 3.0, 8_000_000),
            _fake("04-qat-int8", "qat", 0.80, 2.0, 7_000_000)]
    report = build(RecipeConfig(), [r for r, _ in rows], {"models": [p for _, p in rows]}, 10.0)
    by = {a["name"]: a for a in report["artifacts"]}
    assert by["teacher-dynamic"]["speedup"] == pytest.approx(4.0)
    assert by["03-prune-dynamic"]["gzip_ratio"] == pytest.approx(90 / 8)
    # qat-int8 is faster but 5 points worse: the combined pick is the fastest within 2 points
    assert report["combined"]["artifact"] == "03-prune-dynamic"
    assert report["combined"]["speedup"] == pytest.approx(40 / 3)
    assert report["combined"]["meets_targets"] is True  # 13.3x faster, 11.25x smaller (gzip), 1.5 points less
    rows[3][0]["accuracy"] = 0.82  # now only the distilled model is within 2 points: 8x faster but 6x smaller
    report = build(RecipeConfig(), [r for r, _ in rows], {"models": [p for _, p in rows]}, 10.0)
    assert report["combined"]["artifact"] == "02-distill-dynamic" and report["combined"]["meets_targets"] is False
    assert "meets_targets_real_text" not in report["combined"]  # no real-text profile, no verdict on it
    assert pick_combined([a for a in report["artifacts"] if a["stage"] == "teacher"]) is None
    # with a real-text profile the targets are judged on both: the padded figure misses 8x, the real texts meet it
    real = {"models": [{"name": n, "length": "dynamic", "latency_ms": {"mean": ms, "p90": ms}}
                       for n, ms in [("teacher-tf-float32", 20.0), ("02-distill-dynamic", 2.0)]]}
    rows[2][0]["gzip_bytes"] = 4_000_000  # 11.25x smaller after gzip
    rows[2][1]["latency_ms"]["median"] = 6.0  # 6.7x at 128 padded tokens, 10x on the real texts
    report = build(RecipeConfig(), [r for r, _ in rows], {"models": [p for _, p in rows], "real_text": real}, 10.0)
    verdict = report["combined"]
    assert verdict["artifact"] == "02-distill-dynamic" and verdict["real_text_speedup"] == pytest.approx(10.0)
    assert verdict["meets_targets"] is False and verdict["meets_targets_real_text"] is True
    assert "does NOT meet the targets (>= 8x, >= 10x, <= 2 points) at 128 padded tokens. On the real test texts it " \
           "is 10.0x faster than the baseline: there it meets them." in markdown(report)
    # the machine's vector units and the time of each step are part of the report
    env = {"cpu_model": "AMD EPYC", "cpu_id": "family 25 model 17", "cpu_count": 2,
           "cpu_flags": ["avx2", "avx512f", "avx512_vnni"], "onednn_max_cpu_isa": "AVX2"}
    report = build(RecipeConfig(), [r for r, _ in rows], {"models": [p for _, p in rows], "environment": env}, 600.0,
                   step_seconds={"teacher": 300.0, "distill": 120.0})
    text = markdown(report)
    assert "Machine: AMD EPYC, family 25 model 17, 2 cores (AVX-512, VNNI, oneDNN limited to AVX2)." in text
    assert "Time per step: teacher 5.0 min, distill 2.0 min." in text and report["step_seconds"]["teacher"] == 300


def test_out_dir_of_another_recipe_is_refused(tmp_path):
    Optimizer(RecipeConfig(recipe="distill"), tmp_path / "run")
    with pytest.raises(ValueError, match="another recipe.*recipe"):
        Optimizer(RecipeConfig(recipe="prune"), tmp_path / "run")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "file.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not a tfspeed optimize run"):
        Optimizer(RecipeConfig(), tmp_path / "other")
    assert (tmp_path / "other" / "file.txt").read_text() == "keep me"


def test_optimize_end_to_end_and_resume(tiny_teacher_dir, sentiment_csv, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["optimize", "--model", str(tiny_teacher_dir), "--data", str(sentiment_csv), "--recipe", "vocab,distill",
            "--student-layers", "1", "--distill-epochs", "1", "--seq-length", "16", "--profile-runs", "3",
            "--eval-limit", "40", "--out", str(out)]
    assert cli.main(args) == 0
    log = capsys.readouterr().out
    # the clock: a progress line per training epoch, estimates of the time left from the speed measured here
    assert "[3/6] distill: epoch 1/1 in" in log and "left in the run on this machine" in log
    clock = json.loads((out / "clock.json").read_text())
    assert list(clock["planned_units"]) == ["teacher", "vocab", "distill", "export", "profile", "real-text profile",
                                            "report"]
    assert clock["planned_units"]["teacher"] == 0 and clock["seconds_per_unit"] > 0 and clock["estimates"]
    assert set(clock["seconds"]) == set(clock["planned_units"]) - {"teacher"}
    report = json.loads((out / "report.json").read_text())
    names = [a["name"] for a in report["artifacts"]]
    assert names[0] == report["baseline"] == "teacher-tf-float32"
    assert {"teacher-float32", "teacher-float16", "teacher-dynamic", "01-vocab-dynamic",
            "02-distill-dynamic"} <= set(names)
    # the int8 artifact exists when some int8 configuration kept the accuracy; otherwise what was tried is kept
    assert "teacher-int8-ptq" in names or (out / "export" / "teacher-int8-ptq.budget.json").is_file()
    for a in report["artifacts"]:
        assert {"name", "path", "accuracy", "size_bytes", "gzip_bytes", "latency_ms_median"} <= set(a)
        assert 0.0 <= a["accuracy"] <= 1.0 and a["latency_ms_median"] > 0
        if a["path"].endswith(".tflite"):  # every file runs on raw text: its own vocabulary and the labels inside
            meta = read_metadata(a["path"])
            source = out / "-".join(a["name"].split("-")[:2]) if a["name"][:2].isdigit() else tiny_teacher_dir
            assert list(meta.vocab) == (source / "vocab.txt").read_text().splitlines(), a["name"]
            assert meta.labels == ("neg", "pos") and a["metadata_bytes"] > 0 and "SOFTMAX" in a["float_ops"]
    # variable-length twins (one file of length-bucket signatures), and every artifact timed on the real texts too
    by_name = {a["name"]: a for a in report["artifacts"]}
    assert {"teacher-dynamic-buckets", "01-vocab-dynamic-buckets", "02-distill-dynamic-buckets"} <= set(by_name)
    for name in ("teacher-dynamic", "02-distill-dynamic"):
        assert by_name[name + "-buckets"]["length"] == "dynamic" and by_name[name]["length"] == 16
        assert bucket_signatures(by_name[name + "-buckets"]["path"]) == (16,)  # 16/32/.. below seq_length, then it
        assert abs(by_name[name + "-buckets"]["accuracy"] - by_name[name]["accuracy"]) <= 0.05  # 40 texts, random
    assert all(a["real_text_ms_mean"] > 0 and a["real_text_speedup"] > 0 for a in report["artifacts"])
    assert report["combined"]["real_text_speedup"] == by_name[report["combined"]["artifact"]]["real_text_speedup"]
    assert "real texts: mean ms" in (out / "report.md").read_text()
    trimmed = read_metadata(out / "export" / "01-vocab-dynamic.tflite").vocab
    assert len(trimmed) < len(read_metadata(out / "export" / "teacher-dynamic.tflite").vocab)
    assert (out / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| artifact |" in (out / "report.md").read_text()
    capsys.readouterr()
    assert cli.main(args) == 0  # a rerun skips every finished stage
    log = capsys.readouterr().out
    assert "distill: done before, kept" in log and "vocab: done before, kept" in log
    assert "real-text profile: done before, kept" in log


class _Interrupted(BaseException):
    """Stands for a killed job (like KeyboardInterrupt, not an error `tfspeed` turns into an `ERROR:` line)."""


def test_interrupted_training_stage_resumes_from_its_last_epoch(tiny_teacher_dir, sentiment_csv, tmp_path, capsys,
                                                                 monkeypatch):
    """A distillation stage stopped after its first of two epochs: the rerun restores the BackupAndRestore checkpoint
    and trains the second epoch only, then finishes the run."""
    from tfspeed.compat import keras
    from tfspeed.stages.base import StageContext

    class StopAfterFirstEpoch(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 0:
                raise _Interrupted("killed after epoch 1")

    backup = StageContext.backup
    monkeypatch.setattr(StageContext, "backup", lambda self, stage: [*backup(self, stage), StopAfterFirstEpoch()])
    out = tmp_path / "run"
    args = ["optimize", "--model", str(tiny_teacher_dir), "--data", str(sentiment_csv), "--recipe", "distill",
            "--student-layers", "1", "--distill-epochs", "2", "--seq-length", "16", "--profile-runs", "3",
            "--eval-limit", "40", "--no-int8-ptq", "--no-real-text", "--extra-modes", "int8-weights",
            "--out", str(out)]  # the usual exports: end_to_end above
    with pytest.raises(_Interrupted):
        cli.main(args)
    assert not (out / "01-distill" / "metrics.json").exists()  # nothing half-written in the stage's place
    assert any((out / ".work" / "backup" / "distill").iterdir())
    capsys.readouterr()

    monkeypatch.setattr(StageContext, "backup", backup)
    assert cli.main(args) == 0
    log = capsys.readouterr().out
    assert "Epoch 2/2" in log and "Epoch 1/2" not in log  # resumed: only the second epoch ran
    metrics = json.loads((out / "01-distill" / "metrics.json").read_text())
    assert 0.0 <= metrics["accuracy"] <= 1.0
    # the asked-for extra mode (the LiteRT quantizer's weight-only int8): teacher and student, evaluated and profiled
    report = {a["name"]: a for a in json.loads((out / "report.json").read_text())["artifacts"]}
    for name in ("teacher-int8-weights", "01-distill-int8-weights"):
        assert report[name]["mode"] == "int8-weights" and report[name]["latency_ms_median"] > 0, name
        assert abs(report[name]["accuracy"] - report[name.replace("int8-weights", "dynamic")]["accuracy"]) <= 0.1
        assert read_metadata(report[name]["path"]).labels == ("neg", "pos"), name
