"""Vocabulary trimming: same outputs on seen text, smaller embedding table, [UNK] for unseen pieces."""

import numpy as np
import pytest

from tfspeed.compress.vocab import kept_token_ids, trim_vocabulary
from tfspeed.data import Tokenizer
from tfspeed.models import build_classifier, config_of


def test_trimmed_model_gives_the_same_logits_on_seen_text(tiny_config, vocab_file, tmp_path):
    model = build_classifier(tiny_config)
    texts = ["the movie was good", "a film , very bad !", "the plot was awful"]
    ids = Tokenizer(vocab_file, seq_length=12).encode(texts)
    trimmed, kept = trim_vocabulary(model, vocab_file, ids["input_word_ids"], tmp_path / "vocab.txt")
    assert config_of(trimmed).vocab_size == len(kept) < tiny_config.vocab_size
    again = Tokenizer(tmp_path / "vocab.txt", seq_length=12).encode(texts)
    np.testing.assert_array_equal(kept[again["input_word_ids"]], ids["input_word_ids"])
    np.testing.assert_allclose(model(ids, training=False), trimmed(again, training=False), atol=1e-6)
    unseen = Tokenizer(tmp_path / "vocab.txt", seq_length=12).encode(["acting"])["input_word_ids"][0]
    assert unseen[1] == kept.tolist().index(1), "a word with unseen pieces becomes [UNK]"


def test_special_tokens_are_always_kept(vocab_file):
    kept = kept_token_ids(np.array([[5, 6]]), vocab_file)
    assert kept.tolist() == [0, 1, 2, 3, 4, 5, 6]


def test_bad_arguments(tiny_config, vocab_file, tmp_path):
    with pytest.raises(ValueError, match="min_count"):
        kept_token_ids(np.array([1]), vocab_file, min_count=0)
    with pytest.raises(ValueError, match="beyond the vocabulary"):
        kept_token_ids(np.array([500]), vocab_file)
    (tmp_path / "v.txt").write_text("x")
    with pytest.raises(FileExistsError, match="out_vocab"):
        trim_vocabulary(build_classifier(tiny_config), vocab_file, np.array([5]), tmp_path / "v.txt")
