"""`tfspeed distill` on the toy sentiment CSV with a tiny fine-tuned teacher directory."""

import json

import harness
import numpy as np
import pytest

from tfspeed import artifacts, cli
from tfspeed.compat import keras
from tfspeed.data import EncodedSplit, Tokenizer, from_file
from tfspeed.models import build_classifier, config_of, layer_by_name
from tfspeed.train import accuracy, fit_classifier


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory, vocab_file, sentiment_csv):
    data = from_file(sentiment_csv)
    tok = Tokenizer(vocab_file, seq_length=16)
    keras.utils.set_random_seed(1)
    model = build_classifier(harness.tiny_config(num_heads=2, intermediate_size=64, max_positions=16,
                                                 type_vocab_size=2, dropout=0.1, attention_dropout=0.1))
    fit_classifier(model, EncodedSplit.from_split(data.train, tok), epochs=5, batch_size=16, learning_rate=3e-3,
                   verbose=0)
    test = EncodedSplit.from_split(data.test, tok)
    path = tmp_path_factory.mktemp("teacher") / "teacher"
    info = artifacts.ModelInfo(seq_length=16, label_names=data.label_names, base="tiny", stage="finetune",
                               vocab_path=str(vocab_file))
    artifacts.save_model_dir(model, path, info, {"accuracy": accuracy(model, test)})
    return path, model, test


def test_distill_cli_writes_student_dir(teacher_dir, sentiment_csv, tmp_path, capsys):
    path, teacher, test = teacher_dir
    out = tmp_path / "student"
    args = ["distill", "--teacher", str(path), "--student-layers", "1", "--data", str(sentiment_csv), "--epochs", "4",
            "--batch-size", "16", "--learning-rate", "3e-3", "--out", str(out)]
    assert cli.main(args) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    np.testing.assert_allclose(metrics["teacher_accuracy"], accuracy(teacher, test))
    assert metrics["teacher_accuracy"] >= 0.9, "the toy teacher learned the task"
    assert metrics["accuracy"] >= 0.85 and metrics["teacher_layers"] == [0] and metrics["cached_teacher_logits"]
    np.testing.assert_allclose(metrics["accuracy_ratio"], metrics["accuracy"] / metrics["teacher_accuracy"])

    student, info = artifacts.load_model_dir(out)
    assert config_of(student).num_layers == 1 and info.stage == "distill" and info.seq_length == 16
    assert info.label_names == ["neg", "pos"] and (out / "vocab.txt").is_file()
    assert (out / "encoder" / "saved_model.pb").is_file()
    np.testing.assert_allclose(accuracy(student, test), metrics["accuracy"])
    # the word embeddings started from the teacher's: after a few epochs they are still close
    diff = np.abs(layer_by_name(student, "word_embeddings").get_weights()[0]
                  - layer_by_name(teacher, "word_embeddings").get_weights()[0]).mean()
    assert diff < 0.05
    assert "teacher_accuracy" in capsys.readouterr().out

    assert cli.main(args) == 1, "an existing --out is refused"
    assert "already exists" in capsys.readouterr().err


def test_distill_cli_reports_bad_layers(teacher_dir, sentiment_csv, tmp_path, capsys):
    path, _, _ = teacher_dir
    code = cli.main(["distill", "--teacher", str(path), "--student-layers", "0,5", "--data", str(sentiment_csv),
                     "--out", str(tmp_path / "x")])
    assert code == 1
    assert "Received: layers=[0, 5]" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
    with pytest.raises(SystemExit):
        cli.main(["distill", "--teacher", str(path), "--student-layers", "two", "--out", str(tmp_path / "y")])
