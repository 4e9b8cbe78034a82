"""Early exits: exits added to a native BERT and trained through fit, exit rules and their calibration, and the
segmented .tflite whose runner stops at the first confident exit (outputs compared with Keras within 1e-4)."""

import json

import harness
import numpy as np
import pytest

from tfspeed.compat import keras
from tfspeed.compress import exits as E
from tfspeed.data import EncodedSplit, Tokenizer, from_file
from tfspeed.export import exits as X
from tfspeed.models import build_classifier


@pytest.fixture(scope="module")
def toy(vocab_file, sentiment_csv):
    d = from_file(sentiment_csv)
    tok = Tokenizer(vocab_file, seq_length=16)
    return d, EncodedSplit.from_split(d.train, tok), EncodedSplit.from_split(d.validation, tok), \
        EncodedSplit.from_split(d.test, tok)


@pytest.fixture(scope="module")
def trained(toy):
    """A 3-layer tiny classifier fine-tuned on the toy task, with exits after layers 1 and 2 trained through fit."""
    from tfspeed.train import fit_classifier

    _, train, validation, _ = toy
    keras.utils.set_random_seed(2)
    model = build_classifier(harness.tiny_config(num_layers=3, num_heads=2, intermediate_size=64, max_positions=16,
                                                 type_vocab_size=2, dropout=0.1, attention_dropout=0.1))
    fit_classifier(model, train, epochs=6, batch_size=16, learning_rate=1e-3, verbose=0)
    exits = E.add_exits(model, layers=(1, 2))
    history = E.fit_exits(exits, train, validation, epochs=3, learning_rate=3e-3, verbose=0)
    return model, exits, history


def test_exits_leave_the_final_output_and_the_callers_model_alone(trained, toy):
    model, exits, history = trained
    _, _, _, test = toy
    x, _ = test.batch(np.arange(8))
    out = exits(x, training=False)
    assert sorted(out) == ["exit_1", "exit_2", "final"] and E.exit_layers(exits) == (1, 2)
    np.testing.assert_allclose(out["final"].numpy(), model(x, training=False).numpy(), atol=1e-5)
    assert not any(layer.name.startswith("exit_") for layer in model.layers)  # a new model, the caller's untouched
    # self-distillation: the exits learned the final layer's answers (agreement on validation)
    assert history.history["val_exit_2_agreement"][-1] >= 0.9


def test_exit_model_saves_and_reloads(trained, tmp_path, toy):
    from tfspeed.artifacts import custom_objects

    _, exits, _ = trained
    exits.save(tmp_path / "exits.keras")
    with keras.utils.custom_object_scope(custom_objects()):
        again = keras.models.load_model(tmp_path / "exits.keras", compile=False)
    x, _ = toy[3].batch(np.arange(4))
    for k, v in exits(x, training=False).items():
        np.testing.assert_allclose(again(x, training=False)[k].numpy(), v.numpy(), atol=1e-6)


def test_rules_and_calibration_by_hand():
    # two exits + final; 4 examples, 2 classes
    probs = np.array([[[0.99, 0.01], [0.9, 0.1], [0.8, 0.2]],    # confident at once
                      [[0.6, 0.4], [0.95, 0.05], [0.9, 0.1]],    # confident at exit 2
                      [[0.55, 0.45], [0.4, 0.6], [0.3, 0.7]],    # never confident: final
                      [[0.4, 0.6], [0.3, 0.7], [0.2, 0.8]]])     # same label at every exit
    s = E.simulate(probs, (1, 2), 3, "confidence", 0.9)
    assert s["exit_index"].tolist() == [0, 1, 2, 2] and s["layers_used"].tolist() == [1, 2, 3, 3]
    assert E.simulate(probs, (1, 2), 3, "patience", 2)["exit_index"].tolist() == [1, 1, 2, 1]
    entropy = E.simulate(probs, (1, 2), 3, "entropy", 0.3)["exit_index"].tolist()
    assert entropy == [0, 1, 2, 2]  # H(0.99)=0.056, H(0.95)=0.199 <= 0.3 < H(0.8)=0.5
    labels = np.array([0, 0, 1, 1])
    cal = E.calibrate(probs, labels, (1, 2), 3, rule="confidence", budget=0.0)
    assert cal.accuracy == 1.0 and cal.full_accuracy == 1.0
    assert cal.mean_layers == pytest.approx(min(p["mean_layers"] for p in cal.curve if p["accuracy"] == 1.0))
    assert cal.mean_layers < 3.0


def test_segmented_tflite_stops_early_and_matches_keras(trained, toy):
    _, exits, _ = trained
    _, _, validation, test = toy
    data = X.export_exits(exits, mode="float32", seq_length=16)
    keras_probs = E.exit_probabilities(exits, test)
    # a threshold nobody reaches: every example runs every segment; the final output equals Keras's
    never = X.ExitRunner(data, (1, 2), 3, "confidence", 1.1).predict(test.features)
    assert (never["exit_index"] == 2).all()
    np.testing.assert_allclose(never["probabilities"], keras_probs[:, -1], atol=1e-4)
    # calibrated on validation: the runner stops where the simulation says it does
    cal = E.calibrate(E.exit_probabilities(exits, validation), validation.labels, (1, 2), 3, "entropy", 0.02)
    run = X.ExitRunner(data, (1, 2), 3, cal.rule, cal.threshold).predict(test.features)
    sim = E.simulate(keras_probs, (1, 2), 3, cal.rule, cal.threshold)
    assert np.mean(run["exit_index"] == sim["exit_index"]) >= 0.98  # float32 file vs Keras: ties at the threshold
    assert run["layers_used"].mean() < 3.0  # some examples stopped early
    dynamic = X.export_exits(exits, mode="dynamic", seq_length="dynamic")
    row = {k: v[:1, :int(test.lengths[0])] for k, v in test.features.items()}
    p, _ = X.ExitRunner(dynamic, (1, 2), 3, "confidence", 1.1).run(row)
    assert p.argmax() == keras_probs[0, -1].argmax()


def test_bad_input_is_named(trained, tiny_config):
    model, exits, _ = trained
    for layers, match in [((0, 1), "from 1 to 2"), ((2, 1), "increasing"), ((1, 3), "from 1 to 2"),
                          ((), "layer numbers")]:
        with pytest.raises(ValueError, match=match):
            E.add_exits(model, layers=layers)
    for budget in (1.0, -0.1, "x"):
        with pytest.raises(ValueError, match="budget"):
            E.ExitsConfig(budget=budget)
    with pytest.raises(ValueError, match="rule"):
        E.ExitsConfig(rule="vibes")
    with pytest.raises(ValueError, match="without exits"):
        X.export_exits(model)
    with pytest.raises(ValueError, match="segment_0"):
        plain = __import__("tfspeed.export", fromlist=["convert"]).convert(model, "float32", seq_length=16,
                                                                           metadata=False)
        X.ExitRunner(plain, (1, 2), 3, "entropy", 0.1)
    assert json.dumps(E.ExitsConfig(layers=(1, 2)).to_dict())  # serializable config


def test_exits_command_writes_a_model_directory_with_its_runtime(toy, vocab_file, sentiment_csv, tmp_path, capsys):
    """`tfspeed exits`: trained, calibrated, exported; the directory's runner reproduces its test accuracy."""
    from tfspeed import artifacts
    from tfspeed.artifacts import ModelInfo, save_model_dir
    from tfspeed.cli import main
    from tfspeed.stages import exits as stage
    from tfspeed.train import fit_classifier

    d, train, _, test = toy
    keras.utils.set_random_seed(2)
    model = build_classifier(harness.tiny_config(num_layers=3, num_heads=2, intermediate_size=64, max_positions=16,
                                                 type_vocab_size=2, dropout=0.1, attention_dropout=0.1))
    fit_classifier(model, train, epochs=6, batch_size=16, learning_rate=1e-3, verbose=0)
    source = tmp_path / "model"
    save_model_dir(model, source, ModelInfo(seq_length=16, label_names=list(d.label_names), base="tiny",
                                            stage="finetune", vocab_path=str(vocab_file)))
    out = tmp_path / "exits"
    assert main(["exits", str(source), "--layers", "1,2", "--epochs", "2", "--learning-rate", "0.003", "--budget",
                 "0.02", "--data", str(sentiment_csv), "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["layers"] == [1, 2] and sum(metrics["exit_counts"]) == len(test)
    assert metrics["mean_layers"] <= 3.0 and 0 <= metrics["macro_f1"] <= 1
    loaded, _ = artifacts.load_model_dir(out)
    assert E.exit_layers(loaded) == (1, 2)
    run = stage.runner(out).predict(test.features)
    assert np.mean(run["probabilities"].argmax(-1) == test.labels) == pytest.approx(metrics["accuracy"], abs=0.03)
    # `tfspeed predict` / TextClassifier on the directory run its segmented file, stopping early
    from tfspeed.export import TextClassifier

    texts = list(d.test.texts[:6])
    classifier = TextClassifier(out)
    expected = stage.runner(out).predict(Tokenizer(vocab_file, seq_length=16).encode(texts))["probabilities"]
    np.testing.assert_allclose(classifier.predict_proba(texts), expected, atol=1e-6)
    capsys.readouterr()
    assert main(["predict", str(out), texts[0], "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["label"] in d.label_names
    assert main(["exits", str(source), "--layers", "2,1", "--data", str(sentiment_csv), "--out",
                 str(tmp_path / "bad")]) == 1
    assert "increasing" in capsys.readouterr().err and not (tmp_path / "bad").exists()
    with pytest.raises(ValueError, match="tfspeed exits"):
        stage.runner(source)


def test_optimize_runs_an_early_exit_branch_and_reports_it_on_real_texts(tiny_teacher_dir, sentiment_csv, tmp_path,
                                                                         capsys):
    """`early-exit` in a recipe: a branch (the next stage starts from the teacher), its segmented files (fixed and
    dynamic length) in the report with their real-text latency and mean layers, and no padded figure."""
    from tfspeed.cli import main
    from tfspeed.recipe import RecipeConfig

    assert RecipeConfig(recipe="early-exit,distill").recipe == ("exits", "distill")
    out = tmp_path / "run"
    assert main(["optimize", "--model", str(tiny_teacher_dir), "--data", str(sentiment_csv), "--recipe",
                 "early-exit,distill", "--student-layers", "1", "--distill-epochs", "1", "--seq-length", "16",
                 "--profile-runs", "3", "--eval-limit", "40", "--no-int8-ptq", "--out", str(out)]) == 0
    assert (out / "01-exits" / X.EXITS_JSON).is_file()
    distilled = json.loads((out / "02-distill" / "metrics.json").read_text())
    assert distilled["teacher"] == str(tiny_teacher_dir)  # the branch did not become the chain's source
    report = json.loads((out / "report.json").read_text())
    by_name = {a["name"]: a for a in report["artifacts"]}
    exits_metrics = json.loads((out / "01-exits" / "metrics.json").read_text())
    for name in ("01-exits-dynamic", "01-exits-dynamic-varlen"):
        a = by_name[name]
        assert a["stage"] == "exits" and a["latency_ms_median"] is None and a["speedup"] is None
        assert a["real_text_ms_mean"] > 0 and 1 <= a["mean_layers"] <= 2 and a["layers"] == [1]
    assert by_name["01-exits-dynamic"]["accuracy"] == exits_metrics["accuracy"]
    real = {m["name"]: m for m in json.loads((out / "real_text_profile.json").read_text())["models"]}
    every = real["teacher-dynamic-buckets"]["num_texts_run"]  # early exits run every text, though padded
    assert real["01-exits-dynamic"]["num_texts_run"] == every and real["01-exits-dynamic-varlen"]["length"] == "dynamic"
    assert 1 <= real["01-exits-dynamic-varlen"]["mean_layers"] <= 2
    assert "01-exits-dynamic" not in {m["name"] for m in json.loads((out / "profile.json").read_text())["models"]}
    md = (out / "report.md").read_text()
    assert "Early exits" in md and "| 01-exits-dynamic | 1 |" in md
