"""`tfspeed predict`: raw text in, a label and its probabilities out, from a .tflite with metadata (no other file), a
.tflite with --vocab / --labels, or a model directory; clear errors for what it cannot read."""

import json

import pytest

from tfspeed.cli import main
from tfspeed.compat import keras
from tfspeed.models import build_classifier


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny_config, vocab_file):
    """A model directory and its `tfspeed export` .tflite (metadata on) and a --no-metadata one."""
    from tfspeed.artifacts import ModelInfo, save_model_dir

    keras.utils.set_random_seed(5)
    root = tmp_path_factory.mktemp("predict")
    model_dir = root / "tiny"
    save_model_dir(build_classifier(tiny_config), model_dir, ModelInfo(
        seq_length=16, label_names=["neg", "pos"], base="random", stage="test", vocab_path=str(vocab_file)))
    with_md, without = root / "m.tflite", root / "plain.tflite"
    assert main(["export", str(model_dir), "--out", str(with_md), "--eval-split", "none"]) == 0
    assert main(["export", str(model_dir), "--out", str(without), "--eval-split", "none", "--no-metadata"]) == 0
    return model_dir, with_md, without


def test_predict_prints_a_label_and_probabilities_per_text(exported, capsys):
    _, path, _ = exported
    capsys.readouterr()
    assert main(["predict", str(path), "the movie was good", "awful plot"]) == 0
    out = capsys.readouterr()
    lines = out.out.strip().splitlines()
    assert len(lines) == 2
    for line, text in zip(lines, ["the movie was good", "awful plot"]):
        label, score, probs, shown = line.split("\t")
        values = dict(kv.split("=") for kv in probs.split())
        assert label in ("neg", "pos") and set(values) == {"neg", "pos"} and shown == text
        assert float(score) == pytest.approx(float(values[label]), abs=1e-4)
        assert sum(float(v) for v in values.values()) == pytest.approx(1.0, abs=1e-3)
    assert "2 texts in" in out.err and "texts/s" in out.err


def test_predict_json_from_a_csv_column_matches_the_model_directory(exported, tmp_path, capsys):
    model_dir, path, _ = exported
    csv = tmp_path / "reviews.csv"
    csv.write_text('id,review\n1,"good, very good"\n2,the plot was awful\n3,"a film, not great"\n')
    capsys.readouterr()
    assert main(["predict", str(path), "--file", str(csv), "--column", "review", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["text"] for r in rows] == ["good, very good", "the plot was awful", "a film, not great"]
    assert all(set(r) == {"text", "label", "score", "probabilities", "tokens", "truncated"} for r in rows)
    assert main(["predict", str(model_dir), "--file", str(csv), "--column", "review", "--json"]) == 0
    keras_rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    for a, b in zip(rows, keras_rows):
        assert a["probabilities"]["pos"] == pytest.approx(b["probabilities"]["pos"], abs=0.02)


def test_predict_reads_one_text_per_line_and_jsonl(exported, tmp_path, capsys):
    _, path, _ = exported
    lines = tmp_path / "texts.txt"
    lines.write_text("good\nbad\n\n")  # trailing blank lines are not texts
    jsonl = tmp_path / "texts.jsonl"
    jsonl.write_text('{"text": "good"}\n{"text": "bad"}\n')
    capsys.readouterr()
    assert main(["predict", str(path), "--file", str(lines)]) == 0
    first = capsys.readouterr().out
    assert main(["predict", str(path), "--file", str(jsonl)]) == 0
    assert capsys.readouterr().out == first and len(first.splitlines()) == 2


def test_a_file_without_metadata_needs_vocab_and_labels(exported, vocab_file, capsys):
    _, with_md, plain = exported
    capsys.readouterr()
    assert main(["predict", str(plain), "good"]) == 1
    err = capsys.readouterr().err
    assert "without metadata" in err and "--vocab" in err and "--labels" in err and str(plain) in err
    assert main(["predict", str(plain), "good", "--vocab", str(vocab_file), "--labels", "neg,pos"]) == 0
    assert main(["predict", str(with_md), "good"]) == 0
    a, b = capsys.readouterr().out.splitlines()
    assert a.split("\t")[2] == b.split("\t")[2]  # the same probabilities, softmax in Python or in the graph
    assert main(["predict", str(plain), "good", "--vocab", str(vocab_file), "--labels", "a,b,c"]) == 1
    assert "Expected 2 label names" in capsys.readouterr().err


@pytest.mark.parametrize("content, args, match", [
    (b"good\n\nbad\n", [], "line 2 is empty"),
    (b"good\ncaf\xe9 bad\n", [], "line 2 is not valid utf-8.*--encoding"),
    (b"text,label\ngood,pos\n,neg\n", [], "line 3 has an empty 'text' field"),
    (b"review,label\ngood,pos\n", [], r"Expected a column 'text' \(--column\).*\['review', 'label'\]"),
    (b'{"text": "good"}\n{"text": \n', [], "line 2 is not JSON"),
    (b"", [], "empty file"),
    (b"good\n", ["--encoding", "klingon"], "codec name for `--encoding`"),
])
def test_predict_bad_files_name_the_file_and_line(exported, tmp_path, capsys, content, args, match):
    _, path, _ = exported
    suffix = ".csv" if content.startswith((b"text,", b"review,")) else ".jsonl" if content.startswith(b"{") else ".txt"
    bad = tmp_path / f"bad{suffix}"
    bad.write_bytes(content)
    capsys.readouterr()
    assert main(["predict", str(path), "--file", str(bad), *args]) == 1
    err = capsys.readouterr().err
    assert err.startswith("ERROR: ")
    import re

    assert re.search(match, err), err


def test_predict_refuses_empty_texts_and_no_texts(exported, capsys):
    _, path, _ = exported
    assert main(["predict", str(path), "good", " "]) == 1
    assert "text 2 is empty" in capsys.readouterr().err
    assert main(["predict", str(path)]) == 1
    assert "--file" in capsys.readouterr().err


def test_predict_latin1_file_with_encoding(exported, tmp_path, capsys):
    _, path, _ = exported
    f = tmp_path / "latin.txt"
    f.write_bytes("café good\n".encode("latin-1"))
    capsys.readouterr()
    assert main(["predict", str(path), "--file", str(f), "--encoding", "latin-1"]) == 0
    assert capsys.readouterr().out.split("\t")[3].strip() == "café good"


def test_export_with_a_vocabulary_missing_sep_writes_nothing(tiny_config, vocab_file, tmp_path, capsys):
    from tfspeed.artifacts import ModelInfo, save_model_dir

    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(t for t in vocab_file.read_text().splitlines() if t != "[SEP]"))
    model_dir = tmp_path / "m"
    save_model_dir(build_classifier(tiny_config), model_dir, ModelInfo(
        seq_length=16, label_names=["neg", "pos"], base="random", stage="test", vocab_path=str(vocab)))
    out = tmp_path / "out.tflite"
    assert main(["export", str(model_dir), "--out", str(out), "--eval-split", "none"]) == 1
    assert "[SEP]" in capsys.readouterr().err
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["m", "vocab.txt"]


def test_texts_after_the_options_are_texts_too(exported, vocab_file, capsys):
    _, _, plain = exported
    capsys.readouterr()
    assert main(["predict", str(plain), "--vocab", str(vocab_file), "--labels", "neg,pos", "good", "awful plot"]) == 0
    assert [line.split("\t")[3] for line in capsys.readouterr().out.splitlines()] == ["good", "awful plot"]
    with pytest.raises(SystemExit):
        main(["predict", str(plain), "good", "--no-such-flag"])
    assert "unrecognized arguments: --no-such-flag" in capsys.readouterr().err
