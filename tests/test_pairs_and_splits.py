"""Labelled text beyond one file of single texts: sentence pairs ([CLS] a [SEP] b [SEP]) through training, export and
`predict`; the user's own split files; macro-F1 and per-class accuracy next to accuracy."""

import json

import harness
import numpy as np
import pytest

from tfspeed import artifacts, cli
from tfspeed.compat import keras
from tfspeed.data import DataConfig, EncodedSplit, Tokenizer, from_file, load_splits
from tfspeed.data.datasets import split_of
from tfspeed.models import build_classifier
from tfspeed.train import accuracy, fit_classifier, scores


# --- scores --------------------------------------------------------------------------------------------------------
def test_scores_macro_f1_and_per_class_accuracy_by_hand():
    # 8 negatives, 2 positives; the model says "neg" to all but one positive
    labels = [0] * 8 + [1, 1]
    predicted = [0] * 8 + [1, 0]
    s = scores(predicted, labels, ["neg", "pos"])
    assert s["accuracy"] == pytest.approx(0.9)
    # F1(neg) = 2*8/(8+9) = 0.941..., F1(pos) = 2*1/(2+1) = 0.666...
    assert s["macro_f1"] == pytest.approx((16 / 17 + 2 / 3) / 2)
    assert s["per_class_accuracy"] == {"neg": 1.0, "pos": 0.5}
    # always the majority class: accuracy 0.8, but macro-F1 0.44 and the minority class never right
    majority = scores([0] * 10, labels, ["neg", "pos"])
    assert majority["accuracy"] == pytest.approx(0.8) and majority["macro_f1"] == pytest.approx((16 / 18) / 2)
    assert majority["per_class_accuracy"]["pos"] == 0.0
    # a class absent from the labels has no per-class accuracy
    assert scores([0, 1], [0, 1], ["a", "b", "c"])["per_class_accuracy"]["c"] is None
    with pytest.raises(ValueError, match="as many predictions as labels"):
        scores([0, 1], [0], ["a", "b"])


# --- sentence pairs ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pairs_csv(tmp_path_factory):
    """The label is the sentiment of the SECOND text; the first is neutral filler: a model that does not read the
    pair cannot beat chance."""
    rng = np.random.default_rng(0)
    rows = ["a,b,label"]
    for i in range(400):
        positive = i % 2 == 0
        word = rng.choice(["good", "great"] if positive else ["bad", "awful"])
        first = " ".join(rng.choice(["the movie", "a film", "the plot", "the acting"], size=2))
        first += " " + " ".join(f"w{k}" for k in rng.integers(0, 95, size=2))  # independent of the label
        rows.append(f"\"{first}\",\"the film was {word}\",{'pos' if positive else 'neg'}")
    path = tmp_path_factory.mktemp("pairs") / "pairs.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


def test_pair_tokenization_types_and_longest_first_truncation(vocab_file):
    tok = Tokenizer(vocab_file, seq_length=12)
    x = tok.encode(["good movie", "the plot w1 w2 w3 w4 w5 w6 w7", "the plot w1 w2 w3 w4 w5 w6 w7"],
                   pairs=["bad", "great", "a w8 w9 w10 w11 w12 w13"])
    ids, types, mask = x["input_word_ids"], x["input_type_ids"], x["input_mask"]
    cls, sep = 2, 3  # vocab_file: [PAD] [UNK] [CLS] [SEP]
    # row 0 fits: [CLS] good movie [SEP] bad [SEP], types 0 0 0 0 1 1
    assert list(ids[0, :6]) == [cls, 5, 9, sep, 7, sep] and list(types[0, :6]) == [0, 0, 0, 0, 1, 1]
    assert mask[0].sum() == 6
    # row 1: the long first text is cut, the one-token second text kept whole
    assert mask[1].sum() == 12 and ids[1, 10] == 6 and ids[1, 11] == sep and types[1].sum() == 2
    # row 2: two long texts keep about half the room each (9 tokens: 5 + 4)
    first_sep = list(ids[2]).index(sep)
    assert first_sep == 6 and types[2].sum() == 5 and ids[2, 11] == sep
    with pytest.raises(ValueError, match="one second text per text"):
        tok.encode(["a", "b"], pairs=["c"])


def test_pairs_file_splits_by_both_texts_and_refuses_a_missing_pair_column(pairs_csv, tmp_path):
    d = from_file(pairs_csv, text_column="a", text_pair_column="b")
    assert d.is_pairs and d.summary()["pairs"]
    for split in ("train", "validation", "test"):
        s = d.split(split)
        assert all(split_of(t, p) == split for t, p in zip(s.texts, s.pairs))
    sample = d.train.take(10)
    assert len(sample.pairs) == 10 and all(p in d.train.pairs for p in sample.pairs)
    with pytest.raises(ValueError, match=r"no column \['question'\].*text_pair_column.*Received columns"):
        from_file(pairs_csv, text_column="a", text_pair_column="question")
    empty = tmp_path / "empty_pair.csv"
    empty.write_text('a,b,label\n"x y",,pos\n"z",w,neg\n')
    with pytest.raises(ValueError, match=r"empty_pair.csv:2: empty second text"):
        from_file(empty, text_column="a", text_pair_column="b")
    with pytest.raises(ValueError, match="single texts with the built-in dataset"):
        DataConfig(text_pair_column="b").load()


def test_a_tiny_bert_learns_from_the_second_text(pairs_csv, vocab_file):
    d = from_file(pairs_csv, text_column="a", text_pair_column="b")
    tok = Tokenizer(vocab_file, seq_length=16)
    train, test = EncodedSplit.from_split(d.train, tok), EncodedSplit.from_split(d.test, tok)
    keras.utils.set_random_seed(1)
    model = build_classifier(harness.tiny_config(num_layers=1, num_heads=2, intermediate_size=64, max_positions=16,
                                                 type_vocab_size=2, dropout=0.1, attention_dropout=0.1))
    fit_classifier(model, train, epochs=6, batch_size=16, learning_rate=3e-3, verbose=0)
    assert accuracy(model, test) >= 0.9  # the label is only in the second text
    first_only = EncodedSplit(tok.encode(d.test.texts), d.test.labels)
    assert accuracy(model, first_only) <= 0.75  # without it the model is near chance


def test_pairs_through_finetune_export_and_predict(pairs_csv, vocab_file, tmp_path, capsys):
    out = tmp_path / "pairs-model"
    assert cli.main(["finetune", "--model", "bert-tiny-random", "--data", str(pairs_csv), "--text-column", "a",
                     "--text-pair-column", "b", "--epochs", "1", "--seq-length", "24", "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["per_class_accuracy"]) == {"neg", "pos"} and 0 <= metrics["macro_f1"] <= 1
    info = artifacts.load_info(out)
    assert info.text_pair and info.label_names == ["neg", "pos"]
    # a compression stage reads the pairs too, and its model says so
    student = tmp_path / "student"
    assert cli.main(["distill", "--teacher", str(out), "--data", str(pairs_csv), "--text-column", "a",
                     "--text-pair-column", "b", "--student-layers", "1", "--epochs", "1", "--out", str(student)]) == 0
    assert artifacts.load_info(student).text_pair
    assert "per_class_accuracy" in json.loads((student / "metrics.json").read_text())
    # single-text data on a pair model is refused by every stage that reads the model
    assert cli.main(["distill", "--teacher", str(out), "--data", str(pairs_csv), "--text-column", "a", "--out",
                     str(tmp_path / "d"), "--epochs", "1"]) == 1
    assert "trained on sentence pairs" in capsys.readouterr().err
    lite = tmp_path / "pairs.tflite"
    assert cli.main(["export", str(out), "--out", str(lite), "--data", str(pairs_csv), "--text-column", "a",
                     "--text-pair-column", "b", "--eval-split", "test"]) == 0
    err = capsys.readouterr().out
    assert "No TFLite metadata" in err
    report = json.loads(lite.with_suffix(".json").read_text()) if lite.with_suffix(".json").is_file() else None
    if report is not None and report.get("parity"):
        assert report["parity"]["argmax_agreement"] == 1.0
    # the .tflite (vocab and labels given) and the model directory agree on the pairs
    rows = tmp_path / "rows.csv"
    rows.write_text('a,b\n"the plot w1","the film was good"\n"a film w2","the film was awful"\n')
    assert cli.main(["predict", str(lite), "--vocab", str(vocab_file), "--labels", "neg,pos", "--file", str(rows),
                     "--column", "a", "--pair-column", "b", "--json"]) == 0
    lite_rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["pair"] for r in lite_rows] == ["the film was good", "the film was awful"]
    assert cli.main(["predict", str(out), "the plot w1", "--pair", "the film was good", "a film w2", "--pair",
                     "the film was awful", "--json"]) == 0
    dir_rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    for a, b in zip(lite_rows, dir_rows):
        assert a["probabilities"]["pos"] == pytest.approx(b["probabilities"]["pos"], abs=0.02)
    # a pair model without the pairs, and pairs given to the wrong number of texts: clear errors
    assert cli.main(["predict", str(out), "the plot w1"]) == 1
    assert "sentence-pair model" in capsys.readouterr().err
    assert cli.main(["predict", str(out), "one", "two", "--pair", "only one"]) == 1
    assert "one --pair per TEXT" in capsys.readouterr().err
    from tfspeed.export.metadata import MetadataError, add_model_metadata

    with pytest.raises(MetadataError, match="sentence-pair model"):
        add_model_metadata(lite.read_bytes(), out)


# --- the user's own splits -----------------------------------------------------------------------------------------
def _write(path, rows, header="text,label"):
    path.write_text(header + "\n" + "\n".join(rows) + "\n")
    return path


def test_split_files_are_used_whole_and_the_hash_rule_fills_the_rest(sentiment_csv, tmp_path):
    whole = from_file(sentiment_csv)
    test_rows = ['"a brand new good text",pos', '"a brand new bad text",neg', '"another awful one",neg']
    test = _write(tmp_path / "test.csv", test_rows)
    d = load_splits(train=sentiment_csv, test=test)
    assert d.test.texts == ["a brand new good text", "a brand new bad text", "another awful one"]
    assert list(d.test.labels) == [1, 0, 0] and d.label_names == ("neg", "pos")
    assert d.validation.texts == whole.validation.texts  # the train file's hash share
    # the train file's hash share of the test split goes to training: no row lost
    assert len(d.train) == len(whole.train) + len(whole.test)
    assert d.name == "toy+test"
    # a test row that is also in the training file is dropped from training (counted)
    leak = _write(tmp_path / "leak.csv", [f'"{whole.train.texts[0]}",{whole.label_names[whole.train.labels[0]]}',
                                          '"fresh text",pos', '"stale text",neg'])
    with pytest.warns(RuntimeWarning, match="Dropped 1 training row"):
        leaked = load_splits(train=sentiment_csv, test=leak)
    assert whole.train.texts[0] not in leaked.train.texts
    assert leaked.skipped == {"in training and in validation/test": 1}
    # the same through DataConfig, as every command reads it
    cfg = DataConfig(train=str(sentiment_csv), validation=str(test), test=str(test))
    assert cfg.load().validation.texts == d.test.texts


def test_split_files_bad_input(sentiment_csv, tmp_path):
    test = _write(tmp_path / "test.csv", ['"x good",pos', '"y bad",neg', '"z",meh'])
    with pytest.raises(ValueError, match=r"different label sets.*test.*\['meh', 'neg', 'pos'\].*--label-names"):
        load_splits(train=sentiment_csv, test=test)
    only_pos = _write(tmp_path / "only_pos.csv", ['"x good",pos'])
    with pytest.raises(ValueError, match="different label sets"):
        load_splits(train=sentiment_csv, test=only_pos)
    assert load_splits(train=sentiment_csv, test=only_pos, label_names=["neg", "pos"]).test.texts == ["x good"]
    empty = _write(tmp_path / "empty.csv", [])
    with pytest.raises(ValueError, match=r"Expected labelled rows in the validation file .*empty.csv.*empty file"):
        load_splits(train=sentiment_csv, validation=empty)
    with pytest.raises(FileNotFoundError, match="for `test`"):
        load_splits(train=sentiment_csv, test=tmp_path / "nope.csv")
    with pytest.raises(ValueError, match="either `data` or `train`"):
        load_splits(data=str(test), train=sentiment_csv)
    with pytest.raises(ValueError, match="built-in dataset 'rotten_tomatoes' has labels"):
        load_splits(test=test, label_names=["a", "b"])


def test_optimize_takes_the_same_data_settings(sentiment_csv, tmp_path):
    import argparse

    from tfspeed.cli import optimize as optimize_cli
    from tfspeed.recipe import RecipeConfig

    parser = argparse.ArgumentParser()
    optimize_cli._add_options(parser, RecipeConfig())
    args = parser.parse_args(["--train", str(sentiment_csv), "--text-pair-column", "b", "--label-names", "neg,pos"])
    config = optimize_cli._config(args, {})
    assert config.data.train == str(sentiment_csv) and config.data.text_pair_column == "b"
    assert config.data.label_names == ("neg", "pos") and config.data.data == "rotten_tomatoes"
    # a recipe file's `data = "file"` and a [data] table, flags over the file; the flat shortcuts of the Python API
    recipe = tmp_path / "recipe.json"
    recipe.write_text(json.dumps({"data": str(sentiment_csv)}))
    args = parser.parse_args(["--config", str(recipe), "--text-column", "review"])
    assert optimize_cli._config(args, {}).data.to_dict() == DataConfig(data=str(sentiment_csv),
                                                                       text_column="review").to_dict()
    assert RecipeConfig(data=str(sentiment_csv), test="t.csv").data.test == "t.csv"
    assert RecipeConfig.from_dict(RecipeConfig(data="x.csv").to_dict()).data.data == "x.csv"
