"""Adding a stage takes a module, a config and a registration: a dummy stage defined here runs through the registry,
a recipe file and `tfspeed optimize`."""

import dataclasses
import json
import shutil

import numpy as np
import pytest

from tfspeed import artifacts, cli
from tfspeed.config import StageConfig, check_range, field
from tfspeed.recipe import RecipeConfig
from tfspeed.stages import StageContext, get_stage, register_stage, stage_names
from tfspeed.stages.base import load_source, model_info


@dataclasses.dataclass
class ScaleConfig(StageConfig):
    """The dummy stage's one setting."""

    factor: float = field(1.0, help="multiply the classifier kernel by this")

    def validate(self):
        check_range("factor", self.factor, 0, low_open=True, what="a positive number")


@register_stage("scale-classifier", ScaleConfig, help="a dummy stage: scales the classifier kernel")
def _run(source, config, out, ctx):
    model, info, encoded = load_source(source, ctx)
    layer = model.get_layer("classifier")
    kernel, bias = layer.get_weights()
    layer.set_weights([kernel * config.factor, bias])
    metrics = {"accuracy": float(np.mean(model.predict(encoded.test.features, verbose=0).argmax(-1)
                                         == encoded.test.labels)), "factor": config.factor}
    artifacts.save_model_dir(model, out, model_info(info, "scale-classifier", factor=config.factor), metrics)
    return metrics


def test_a_registered_stage_is_known_everywhere(tmp_path):
    assert "scale-classifier" in stage_names()
    assert {"finetune", "vocab", "distill", "prune", "qat"} <= set(stage_names())
    assert get_stage("scale-classifier").config is ScaleConfig
    with pytest.raises(ValueError, match="expected one of .*Received: stage='nope'"):
        get_stage("nope")
    recipe = RecipeConfig.from_dict({"recipe": "distill,scale-classifier", "stages": {"scale-classifier":
                                                                                      {"factor": 2.0}}})
    assert recipe.stage_config("scale-classifier") == ScaleConfig(factor=2.0)
    assert RecipeConfig.from_dict(json.loads(json.dumps(recipe.to_dict()))) == recipe
    with pytest.raises(ValueError, match="`factor`, expected a positive number"):
        RecipeConfig(recipe=("scale-classifier",), stages={"scale-classifier": {"factor": 0}})
    with pytest.raises(ValueError, match="unknown: \\['nope'\\]"):
        RecipeConfig(recipe="distill,nope")


def test_the_runner_writes_a_model_directory(tiny_teacher_dir, sentiment_csv, tmp_path):
    from tfspeed.data import load_dataset

    ctx = StageContext(load_dataset(str(sentiment_csv)), eval_limit=20)
    metrics = get_stage("scale-classifier").run(tiny_teacher_dir, ScaleConfig(factor=3.0), tmp_path / "out", ctx)
    model, info = artifacts.load_model_dir(tmp_path / "out")
    before, _ = artifacts.load_model_dir(tiny_teacher_dir)
    np.testing.assert_allclose(model.get_layer("classifier").get_weights()[0],
                               3.0 * before.get_layer("classifier").get_weights()[0], rtol=1e-6)
    assert info.stage == "scale-classifier" and info.extra["factor"] == 3.0
    assert artifacts.read_metrics(tmp_path / "out") == metrics


def test_optimize_runs_a_registered_stage_from_a_recipe_file(tiny_teacher_dir, sentiment_csv, tmp_path, monkeypatch):
    """The chain part of `optimize` (its exports, profile and report are tested in test_recipe.py)."""
    from tfspeed.recipe.runner import Optimizer

    monkeypatch.setattr(Optimizer, "_exports", lambda self, *args: [])
    monkeypatch.setattr(Optimizer, "_profile", lambda self, *args: {})
    monkeypatch.setattr(Optimizer, "_report", lambda self, *args: {})
    recipe = tmp_path / "recipe.toml"
    recipe.write_text('recipe = "scale-classifier"\nseq_length = 16\neval_limit = 40\n'
                      '[stages.scale-classifier]\nfactor = 0.5\n')
    out = tmp_path / "run"
    assert cli.main(["optimize", "--config", str(recipe), "--model", str(tiny_teacher_dir), "--data",
                     str(sentiment_csv), "--out", str(out)]) == 0
    assert artifacts.load_info(out / "01-scale-classifier").extra["factor"] == 0.5
    assert artifacts.read_metrics(out / "01-scale-classifier")["factor"] == 0.5
    assert json.loads((out / "recipe.json").read_text())["stages"] == {"scale-classifier": {"factor": 0.5}}


def test_a_stage_reuses_a_test_accuracy_measured_on_the_same_data(tiny_teacher_dir, sentiment_csv, tmp_path):
    from tfspeed.data import load_dataset
    from tfspeed.train import accuracy

    ctx = StageContext(load_dataset(str(sentiment_csv)), eval_limit=20)
    model, info = artifacts.load_model_dir(tiny_teacher_dir)
    test = ctx.encoded(info.vocab_path, 16).test
    measured = accuracy(model, test)
    same = {"accuracy": 0.123456, "split": "test", "dataset": ctx.dataset.name, "num_examples": len(test),
            "seq_length": 16}
    others = [{**same, "dataset": "other"}, {**same, "num_examples": len(test) + 1}, {**same, "seq_length": 32},
              {**same, "split": "validation"}, {k: v for k, v in same.items() if k != "dataset"}]
    path = shutil.copytree(tiny_teacher_dir, tmp_path / "m")
    for metrics in [same, *others]:
        (path / "metrics.json").write_text(json.dumps(metrics))
        expected = 0.123456 if metrics is same else measured
        assert ctx.known_accuracy(path, model, test) == pytest.approx(expected), metrics
    assert ctx.known_accuracy(model, model, test) == pytest.approx(measured)  # not a directory: measured
