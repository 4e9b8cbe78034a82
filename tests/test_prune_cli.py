"""`tfspeed prune` end to end on a tiny BERT fine-tuned on the toy sentiment set: metrics.json with accuracy and
sparsity, a model directory that loads, structured pruning through the CLI, and `ERROR:` exits for bad input."""

import json

import numpy as np
import pytest

from tfspeed import artifacts
from tfspeed.cli import main
from tfspeed.cli.prune import parse_structured
from tfspeed.compat import keras


@pytest.fixture(scope="module")
def model_dir(tiny_config, vocab_file, sentiment_csv, tmp_path_factory):
    from tfspeed.data import EncodedSplit, Tokenizer, from_file
    from tfspeed.models import build_classifier
    from tfspeed.train import accuracy, fit_classifier

    data = from_file(sentiment_csv)
    tokenizer = Tokenizer(vocab_file, seq_length=16)
    train, test = (EncodedSplit.from_split(s, tokenizer) for s in (data.train, data.test))
    keras.utils.set_random_seed(1)
    model = build_classifier(tiny_config)
    fit_classifier(model, train, epochs=6, batch_size=16, learning_rate=3e-3, verbose=0)
    assert accuracy(model, test) >= 0.9  # the toy set is learnable; the pruning checks below need a real model
    out = tmp_path_factory.mktemp("prune_cli") / "finetuned"
    artifacts.save_model_dir(model, out, artifacts.ModelInfo(seq_length=16, label_names=list(data.label_names),
                                                             base="tiny", stage="finetune", vocab_path=str(vocab_file)))
    return out


def _run(args, capsys):
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_prune_unstructured(model_dir, sentiment_csv, tmp_path, capsys):
    out = tmp_path / "pruned"
    code, stdout, _ = _run(["prune", str(model_dir), "--sparsity", "0.5", "--schedule", "polynomial", "--data",
                            str(sentiment_csv), "--epochs", "2", "--learning-rate", "1e-3", "--out", str(out)], capsys)
    assert code == 0 and "Wrote" in stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["sparsity"] >= 0.495
    assert metrics["accuracy"] >= metrics["dense_accuracy"] - 0.05
    assert metrics["report"]["tflite"]["dynamic"]["gzip_bytes"] > 0
    model, info = artifacts.load_model_dir(out)  # stripped: loads without prune_scope
    assert info.stage == "prune" and (out / "encoder" / "saved_model.pb").is_file()
    from tfspeed.export.sparsity import sparsity_report

    assert sparsity_report(model, tflite=False)["sparsity"] >= 0.495


@pytest.mark.large  # slowest tier; test_prune_2_4_gradually_through_1_4 also prunes 2:4 through the Distiller
def test_prune_2_4_with_distillation_from_the_dense_model(model_dir, sentiment_csv, tmp_path, capsys):
    out = tmp_path / "pruned_kd"
    code, _, _ = _run(["prune", str(model_dir), "--m-by-n", "2:4", "--schedule", "constant", "--distill", "--data",
                       str(sentiment_csv), "--epochs", "2", "--learning-rate", "1e-3", "--skip-tflite-report",
                       "--out", str(out)], capsys)
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["distill"] is True and metrics["m_by_n"] == [2, 4]
    history = metrics["history"]
    assert {"student_loss", "distillation_loss"} <= set(history)  # fitted through the Distiller
    assert history["sparsity"][-1] >= 0.495  # the sparsity logger finds the wrappers inside the Distiller
    assert metrics["accuracy"] >= metrics["dense_accuracy"] - 0.05
    model, _ = artifacts.load_model_dir(out)
    from tfspeed.compress.pruning import targeted_weights

    for name, kernel in targeted_weights(model).items():
        groups = kernel.T.reshape(kernel.shape[1], -1, 4)
        assert (np.count_nonzero(groups, axis=-1) <= 2).all(), name


@pytest.mark.large  # slowest tier (kept out of the default suite to hold it near 20 min): pass --run-large
def test_prune_distill_under_mirrored_strategy(model_dir, sentiment_csv, tmp_path, capsys):
    """The dense teacher is loaded outside the strategy: the Distiller needs a copy made inside its scope."""
    out = tmp_path / "pruned_kd_mirrored"
    code, _, err = _run(["prune", str(model_dir), "--sparsity", "0.5", "--distill", "--strategy", "mirrored", "--data",
                         str(sentiment_csv), "--epochs", "1", "--limit", "96", "--skip-tflite-report", "--out",
                         str(out)], capsys)
    assert code == 0, err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["distill"] is True and "distillation_loss" in metrics["history"]


def test_mirrored_strategies_in_one_process_keep_distinct_collective_keys(mirrored_strategy):
    """TF starts every MirroredStrategy at the same collective keys; a second one in the process then aborted all
    collectives ("Shape mismatch in the collective instance 100"). Ours each get keys of their own."""
    from tfspeed import distribute
    from tfspeed.compat import tf

    def all_reduce(strategy, width):
        @tf.function
        def step():
            return strategy.run(lambda: tf.distribute.get_replica_context().all_reduce("SUM", tf.ones([width])))

        return [t.numpy() for t in strategy.experimental_local_results(step())]

    strategies = [mirrored_strategy, distribute.mirrored_strategy(["/cpu:0", "/cpu:1"]),
                  distribute.make_strategy("mirrored"),
                  distribute.mirrored_strategy(["/cpu:0", "/cpu:1"])]
    for width, strategy in enumerate(strategies, start=3):
        for replica in all_reduce(strategy, width):
            np.testing.assert_array_equal(replica, np.full([width], strategy.num_replicas_in_sync, np.float32))


def test_prune_2_4_gradually_through_1_4(model_dir, sentiment_csv, tmp_path, capsys):
    """--gradual: one epoch at 1:4, strip, then 2:4 for --epochs; the history holds both stages."""
    out, logs = tmp_path / "pruned_gradual", tmp_path / "logs"
    code, _, _ = _run(["prune", str(model_dir), "--m-by-n", "2:4", "--gradual", "--schedule", "constant", "--distill",
                       "--data", str(sentiment_csv), "--epochs", "1", "--learning-rate", "1e-3",
                       "--skip-tflite-report", "--log-dir", str(logs), "--out", str(out)], capsys)
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["gradual"] is True and metrics["gradual_from"] == [1, 4] and metrics["m_by_n"] == [2, 4]
    assert metrics["epochs_trained"] == 2
    # each stage's PruningSummaries in a TensorBoard run of its own (both count steps from 0)
    assert sorted(p.name for p in logs.iterdir()) == ["1of4", "2of4"]
    assert all(list((logs / stage).glob("**/events.out.tfevents.*")) for stage in ("1of4", "2of4"))
    history = metrics["history"]
    assert len(history["loss"]) == 2 and len(history["sparsity"]) == 2  # 1 epoch at 1:4, then 1 at 2:4
    assert 0.245 <= history["sparsity"][0] < 0.3 and history["sparsity"][1] >= 0.495
    assert {"student_loss", "distillation_loss"} <= set(history)  # fitted through the Distiller (--distill)
    assert metrics["distill"] is True and metrics["sparsity"] >= 0.495
    assert metrics["accuracy"] >= metrics["dense_accuracy"] - 0.05
    model, _ = artifacts.load_model_dir(out)
    from tfspeed.compress.pruning import targeted_weights

    for name, kernel in targeted_weights(model).items():
        groups = kernel.T.reshape(kernel.shape[1], -1, 4)
        assert (np.count_nonzero(groups, axis=-1) <= 2).all(), name


def test_prune_and_fit_checks_gradual_from(model_dir):
    from tfspeed.compress import pruning as P

    model, _ = artifacts.load_model_dir(model_dir)
    with pytest.raises(ValueError, match=r"expected \(m0, n\) with 0 < m0 < m.*Received: gradual_from=\(2, 4\)"):
        P.prune_and_fit(model, None, 1, m_by_n=(2, 4), gradual_from=(2, 4))
    with pytest.raises(ValueError, match="but `m_by_n` is None"):
        P.prune_and_fit(model, None, 1, gradual_from=(1, 4))


def test_fit_student_leaves_the_teacher_trainable_for_the_next_pruning(model_dir, vocab_file, sentiment_csv):
    """A pruned copy made from a teacher after a distillation fit must still train (the Distiller freezes its teacher
    while fitting)."""
    from tfspeed.compress import pruning as P
    from tfspeed.compress.distillation import fit_student
    from tfspeed.data import EncodedSplit, Tokenizer, from_file

    model, _ = artifacts.load_model_dir(model_dir)
    train = EncodedSplit.from_split(from_file(sentiment_csv).train, Tokenizer(vocab_file, seq_length=16))
    first = P.prune(model, sparsity=0.5, schedule="constant", begin_step=0, frequency=1)
    history = fit_student(first, model, train, epochs=1, batch_size=16, learning_rate=1e-3,
                          callbacks=P.pruning_callbacks(per_layer=False), verbose=0)
    assert history.history["sparsity"][-1] >= 0.495
    assert model.trainable
    second = P.prune(model, sparsity=0.5, schedule="constant", begin_step=0, frequency=1)
    before = [w.numpy().copy() for w in second.trainable_weights]
    assert before  # trainable, unlike a copy of a frozen teacher
    fit_student(second, model, train, epochs=1, batch_size=16, learning_rate=1e-3,
                callbacks=P.pruning_callbacks(per_layer=False), verbose=0)
    assert any(not np.array_equal(b, w.numpy()) for b, w in zip(before, second.trainable_weights))


def test_fit_student_with_hidden_states_trains_a_pruned_model(model_dir, vocab_file, sentiment_csv):
    """Layer-by-layer hidden-state distillation reaches the states of a pruned (wrapped) student."""
    from tfspeed.compress import pruning as P
    from tfspeed.compress.distillation import fit_student
    from tfspeed.data import EncodedSplit, Tokenizer, from_file

    model, _ = artifacts.load_model_dir(model_dir)
    train = EncodedSplit.from_split(from_file(sentiment_csv).train, Tokenizer(vocab_file, seq_length=16))
    pruned = P.prune(model, m_by_n=(2, 4), schedule="constant", begin_step=0, frequency=1)
    history = fit_student(pruned, model, train, epochs=2, batch_size=16, learning_rate=1e-3, hidden_weight=1.0,
                          callbacks=P.pruning_callbacks(per_layer=False), verbose=0).history
    assert history["hidden_loss"][0] > 0  # the 2:4 mask moves the states away from the dense teacher's
    assert history["hidden_loss"][-1] < history["hidden_loss"][0]  # and training pulls them back
    assert history["sparsity"][-1] >= 0.495


def test_prune_structured(model_dir, sentiment_csv, tmp_path, capsys):
    out = tmp_path / "structured"
    code, _, _ = _run(["prune", str(model_dir), "--structured", "heads=0.5,ffn=0.5", "--data", str(sentiment_csv),
                       "--epochs", "1", "--learning-rate", "1e-3", "--skip-tflite-report", "--out", str(out)], capsys)
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"accuracy", "sparsity"} <= set(metrics)
    assert metrics["structured"]["params_after"] < metrics["structured"]["params_before"]
    assert metrics["accuracy"] >= metrics["dense_accuracy"] - 0.1
    model, info = artifacts.load_model_dir(out)
    from tfspeed.models import config_of

    assert sum(config_of(model).layer_num_heads) == 4 and info.stage == "prune-structured"


@pytest.mark.parametrize("extra, message", [
    (["--sparsity", "1.0"], "Received: sparsity=1.0"),
    (["--m-by-n", "4:2"], "Received: m_by_n=(4, 2)"),
    (["--layers", "layer_7_query", "--sparsity", "0.5"], "no layer named ['layer_7_query']"),
    (["--gradual"], "Received --gradual without --m-by-n"),
    (["--gradual", "--sparsity", "0.5"], "expected --m-by-n M:N with M >= 2"),
    (["--gradual", "--m-by-n", "1:4"], "invalid value for `--m-by-n` with --gradual, expected M:N with M >= 2"),
    (["--gradual", "--m-by-n", "1:4"], "Received: --m-by-n='1:4'"),
])
def test_bad_input_exits_with_error(model_dir, sentiment_csv, tmp_path, capsys, extra, message):
    code, _, err = _run(["prune", str(model_dir), "--data", str(sentiment_csv), "--epochs", "1",
                         "--skip-tflite-report", "--out", str(tmp_path / "x"), *extra], capsys)
    assert code == 1 and err.startswith("ERROR:") and message in err
    assert not (tmp_path / "x").exists()


def test_parse_structured():
    assert parse_structured("heads=0.5,ffn=0.25") == {"heads": 0.5, "ffn": 0.25}
    assert parse_structured("layers=4+5") == {"layers": [4, 5]}
    assert parse_structured("layers=0.5") == {"layers": 0.5}
    with pytest.raises(ValueError, match="keys \\('heads', 'ffn', 'layers'\\)"):
        parse_structured("attention=0.5")
