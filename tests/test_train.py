"""Fine-tuning through fit and the `tfspeed finetune` command, on a toy task that a tiny BERT can learn."""

import json

import harness
import pytest

from tfspeed import artifacts, cli
from tfspeed.compat import keras
from tfspeed.data import EncodedSplit, Tokenizer, from_file
from tfspeed.models import build_classifier
from tfspeed.train import WarmupLinearDecay, accuracy, fit_classifier


@pytest.fixture(scope="module")
def toy(vocab_file, sentiment_csv):
    d = from_file(sentiment_csv)
    tok = Tokenizer(vocab_file, seq_length=16)
    return d, EncodedSplit.from_split(d.train, tok), EncodedSplit.from_split(d.test, tok)


def test_fit_learns_a_toy_task(toy):
    _, train, test = toy
    keras.utils.set_random_seed(1)
    model = build_classifier(harness.tiny_config(num_layers=1, num_heads=2, intermediate_size=64, max_positions=16,
                                                 type_vocab_size=2, dropout=0.1, attention_dropout=0.1))
    history = fit_classifier(model, train, epochs=6, batch_size=16, learning_rate=3e-3, verbose=0)
    assert accuracy(model, test) >= 0.9
    assert len(history.history["seconds_per_epoch"]) == 6


def test_schedule_warms_up_then_decays_and_serializes():
    s = WarmupLinearDecay(1e-3, total_steps=100, warmup_steps=10)
    assert float(s(0)) == 0.0 and abs(float(s(10)) - 1e-3) < 1e-9 and float(s(100)) == 0.0
    assert WarmupLinearDecay.from_config(s.get_config()).get_config() == s.get_config()
    with pytest.raises(ValueError, match="warmup_steps"):
        WarmupLinearDecay(1e-3, total_steps=10, warmup_steps=20)


def test_finetune_cli_writes_model_dir(sentiment_csv, tmp_path, capsys):
    out = tmp_path / "run"
    code = cli.main(["finetune", "--model", "bert-tiny-random", "--data", str(sentiment_csv), "--label-names",
                     "neg,pos", "--epochs", "1", "--seq-length", "16", "--out", str(out)])
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["split"] == "test" and metrics["num_examples"] == len(from_file(sentiment_csv).test)
    assert 0.0 <= metrics["accuracy"] <= 1.0
    model, info = artifacts.load_model_dir(out)
    assert info.label_names == ["neg", "pos"] and info.seq_length == 16
    assert (out / "encoder" / "saved_model.pb").is_file() and (out / "vocab.txt").is_file()
    # a second run must not silently replace the first
    assert cli.main(["finetune", "--model", "bert-tiny-random", "--data", str(sentiment_csv), "--out", str(out)]) == 1
    assert "already exists" in capsys.readouterr().err


def test_seq_length_above_max_positions_is_refused(sentiment_csv, tmp_path, capsys):
    code = cli.main(["finetune", "--model", "bert-tiny-random", "--data", str(sentiment_csv), "--seq-length", "600",
                     "--out", str(tmp_path / "x")])
    assert code == 1
    assert "max_positions=512" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
