"""The bad-input suite: through the real CLI, each kind of bad data, bad argument, bad model directory and bad pair of
models gets one `ERROR:` line (exit 1) naming what is wrong and where (file and line, argument, split and flag) and
never a traceback; `--on-bad-row skip` leaves bad rows out with a count. Fast: it fails before training, on tiny
models and files."""

import csv
import json

import numpy as np
import pytest

from tfspeed.cli import main
from tfspeed.data.datasets import split_of

GOOD = [(f"the film w{i} was {'good' if i % 2 else 'bad'}", "pos" if i % 2 else "neg") for i in range(80)]


def _csv(path, rows, header=("text", "label")):
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def _lines(path, lines):
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _run(capsys, *args):
    code = main(list(map(str, args)))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _finetune(capsys, tmp_path, data, *extra):
    return _run(capsys, "finetune", "--model", "bert-tiny-random", "--data", data, "--epochs", "1", "--seq-length",
                "16", *extra, "--out", tmp_path / "out")


def _test_text(label_hint=""):
    """A text the hash split puts in the test split."""
    return next(t for t in (f"only {label_hint} here {i}" for i in range(1000)) if split_of(t) == "test")


# (name, file builder, expected message): each refused with file and line, or split and flag
DATA_CASES = {
    "csv row missing its last field": (
        lambda p: _lines(p / "d.csv", ["text,label", *[f"{t},{lbl}" for t, lbl in GOOD[:30]], "a lonely text",
                                       *[f"{t},{lbl}" for t, lbl in GOOD[30:]]]),
        "d.csv:32: 1 field(s), expected the 2 columns of the header"),
    "csv row with an extra field": (
        lambda p: _lines(p / "d.csv", ["text,label", *[f"{t},{lbl}" for t, lbl in GOOD[:5]], "a text,pos,surplus",
                                       *[f"{t},{lbl}" for t, lbl in GOOD[5:]]]),
        "d.csv:7: 1 more field(s) than the 2 columns"),
    "empty text": (lambda p: _csv(p / "d.csv", GOOD[:3] + [("  ", "pos")] + GOOD[3:]), "d.csv:5: empty text"),
    "empty label": (lambda p: _csv(p / "d.csv", GOOD[:3] + [("a text", "")] + GOOD[3:]), "d.csv:5: empty label"),
    "same text, another label": (
        lambda p: _csv(p / "d.csv", GOOD + [(GOOD[4][0], "pos" if GOOD[4][1] == "neg" else "neg")]),
        "d.csv:82: the same text as line 6 with another label"),
    "malformed jsonl (line counted with blank lines)": (
        lambda p: _lines(p / "d.jsonl", [json.dumps({"text": t, "label": lbl}) for t, lbl in GOOD[:3]] + ["", "",
                         '{"text": "broken, "label": "pos"}'] + [json.dumps({"text": t, "label": lbl})
                                                                  for t, lbl in GOOD[3:]]),
        "d.jsonl:6: not a JSON object"),
    "jsonl row without the label field": (
        lambda p: _lines(p / "d.jsonl", [json.dumps({"text": t, "label": lbl}) for t, lbl in GOOD[:3]]
                         + [json.dumps({"text": "x", "stars": 4})]),
        "d.jsonl:4: no field ['label'] (the row has ['stars', 'text']"),
    "not utf-8": (
        lambda p: (p / "d.csv").write_bytes("text,label\n".encode() + b"caf\xe9 society,pos\n") and p / "d.csv",
        "d.csv:2: the file is not valid utf-8 (byte 0xe9"),
    "a field over the size limit": (
        lambda p: _lines(p / "d.csv", ["text,label", '"' + "x" * (16 * 1024 * 1024 + 10) + '",pos']),
        "d.csv:2: field larger than field limit"),
    "no such column": (lambda p: _csv(p / "d.csv", GOOD, header=("review", "label")),
                       "has no column ['text']: expected `text_column`='text'"),
    "one class": (lambda p: _csv(p / "d.csv", [(t, "pos") for t, _ in GOOD]),
                  "has 1 label(s) ['pos'] in `label_column`='label': a classifier needs at least 2"),
    "a class only the test split has": (
        lambda p: _csv(p / "d.csv", GOOD + [(_test_text(), "rare")]),
        "The test split of dataset 'd' has classes the training split has no example of: {'rare': 1}"),
}


@pytest.mark.parametrize("case", list(DATA_CASES))
def test_bad_data_is_refused_with_file_and_line(case, tmp_path, capsys):
    build, message = DATA_CASES[case]
    path = build(tmp_path)
    code, _, err = _finetune(capsys, tmp_path, path)
    assert code == 1 and err.startswith("ERROR: ") and message in err, err
    assert "Traceback" not in err and not (tmp_path / "out").exists()


def test_encoding_flag_reads_a_latin1_file(tmp_path, capsys):
    path = tmp_path / "d.csv"
    path.write_bytes(("text,label\n" + "".join(f"{t} caf\xe9,{lbl}\n" for t, lbl in GOOD)).encode("latin-1"))
    from tfspeed.data import load_dataset

    data = load_dataset(path, encoding="latin-1")
    assert any("café" in t for t in data.train.texts)
    code, _, err = _run(capsys, "finetune", "--data", path, "--encoding", "no-such-codec", "--out", tmp_path / "o")
    assert code == 1 and "`encoding`: 'no-such-codec' is not a text encoding" in err


def test_skip_mode_leaves_bad_rows_out_with_a_count(tmp_path, capsys):
    rows = GOOD[:40] + [("", "pos"), ("text without label", ""), (GOOD[0][0], "pos" if GOOD[0][1] == "neg" else "neg")]
    path = _csv(tmp_path / "d.csv", rows + GOOD[40:])
    with pytest.warns(RuntimeWarning, match="Skipped 4 bad row"):
        code, _, err = _finetune(capsys, tmp_path, path, "--on-bad-row", "skip")
    assert code == 0, err
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    # the conflicting pair goes entirely (which label is right is unknown): the repeat and its first occurrence
    assert metrics["skipped_rows"] == {"empty text": 1, "empty label": 1, "same text, another label": 2}
    from tfspeed.data import load_dataset

    with pytest.warns(RuntimeWarning, match="Skipped 4 bad row"):
        data = load_dataset(path, on_bad_row="skip")
    assert sum(map(len, (data.train, data.validation, data.test))) == len(GOOD) - 1
    assert GOOD[0][0] not in data.train.texts + data.validation.texts + data.test.texts


def test_limit_takes_every_class_of_a_sorted_file(tmp_path):
    """A CSV sorted by label, as labelling tools export: `--limit` keeps every class in its share."""
    from tfspeed.data import load_dataset
    from tfspeed.data.pipeline import check_splits

    rows = sorted([(f"text {i} {lbl}", lbl) for lbl in ("a", "b", "c") for i in range(300)], key=lambda r: r[1])
    data = load_dataset(_csv(tmp_path / "sorted.csv", rows))
    sample = data.train.take(90)
    assert len(sample) == 90 and sorted(np.bincount(sample.labels).tolist()) == [30, 30, 30]
    assert sample.texts == [t for t in data.train.texts if t in set(sample.texts)]  # file order kept
    assert data.train.take(90).texts == sample.texts  # seeded
    check_splits(data, limit=3)  # one example of each class still trains


@pytest.mark.parametrize("args, message", [
    (("--batch-size", "0"), "`batch_size`, expected a positive integer"),
    (("--epochs", "0"), "`epochs`"),
    (("--limit", "0"), "`limit`, expected a positive integer"),
    (("--learning-rate", "-1"), "`learning_rate`"),
    (("--seq-length", "4096"), "expected at most the model's max_positions=512"),
])
def test_bad_training_arguments(args, message, tmp_path, capsys):
    path = _csv(tmp_path / "d.csv", GOOD)
    code, _, err = _finetune(capsys, tmp_path, path, *args)
    assert code == 1 and message in err, err
    assert "Traceback" not in err


@pytest.fixture()
def model_dir(tiny_teacher_dir, tmp_path):
    import shutil

    copy = tmp_path / "model"
    shutil.copytree(tiny_teacher_dir, copy)
    return copy


@pytest.mark.parametrize("damage, message", [
    (lambda d: (d / "model.keras").write_bytes((d / "model.keras").read_bytes()[:5000]),
     "is corrupted or half-written: model.keras does not match the checksum"),
    (lambda d: (d / "vocab.txt").write_text("[PAD]\n"), "vocab.txt does not match the checksum"),
    (lambda d: (d / "tfspeed.json").write_text("{not json"), "has a corrupted tfspeed.json"),
    (lambda d: (d / "model.keras").unlink(), "tfspeed model directory (with model.keras and tfspeed.json)"),
])
def test_damaged_model_directory(damage, message, model_dir, sentiment_csv, tmp_path, capsys):
    damage(model_dir)
    code, _, err = _run(capsys, "export", model_dir, "--mode", "float32", "--data", sentiment_csv,
                        "--out", tmp_path / "m.tflite")
    assert code == 1 and message in err, err
    assert "Traceback" not in err


def test_model_directory_without_checksums_still_loads_and_keras_errors_are_named(model_dir):
    from tfspeed import artifacts

    (model_dir / "checksums.json").unlink()  # written before checksums were kept
    artifacts.load_model_dir(model_dir)
    (model_dir / "model.keras").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(ValueError, match="has a model.keras Keras cannot load"):
        artifacts.load_model_dir(model_dir)


def test_export_length_beyond_positions(model_dir, sentiment_csv, tmp_path, capsys):
    code, _, err = _run(capsys, "export", model_dir, "--mode", "float32", "--seq-length", "64", "--data",
                        sentiment_csv, "--out", tmp_path / "m.tflite")
    assert code == 1 and "`seq_length`: the model has 16 positions. Received: seq_length=64" in err, err


def test_teacher_and_student_of_other_vocabularies(tiny_config):
    from tfspeed.compress import Distiller
    from tfspeed.models import build_classifier

    teacher = build_classifier(tiny_config)
    student = build_classifier(tiny_config.replace(vocab_size=60, num_layers=1))
    with pytest.raises(ValueError, match="must read the same token ids. Received: a teacher with a vocabulary of 120 "
                                         "tokens, a student with 60"):
        Distiller(teacher, student)


def test_stage_teacher_with_another_vocabulary_is_refused(model_dir, tmp_path, sentiment_csv):
    from tfspeed.compress.lowrank import LowRankConfig
    from tfspeed.data import load_dataset
    from tfspeed.stages import StageContext, get_stage

    other = tmp_path / "other"
    import shutil

    shutil.copytree(model_dir, other)
    vocab = other / "vocab.txt"
    vocab.write_text(vocab.read_text().replace("movie", "cinema"))
    (other / "checksums.json").unlink()
    ctx = StageContext(load_dataset(str(sentiment_csv)), teacher_dir=other)
    with pytest.raises(ValueError, match="have different vocabularies"):
        get_stage("lowrank").run(model_dir, LowRankConfig(rank=8, epochs=1), tmp_path / "out", ctx)


def test_unexpected_errors_are_one_line_with_a_log(monkeypatch, tmp_path, capsys):
    from tfspeed.cli import export as export_cli

    def boom(args):
        raise KeyError("some_internal_name")

    monkeypatch.setenv("TFSPEED_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(export_cli, "run", boom)
    code, _, err = _run(capsys, "export", tmp_path, "--out", tmp_path / "x.tflite")
    assert code == 1 and err.startswith("ERROR: unexpected KeyError: 'some_internal_name'")
    log = err.split("The full traceback is in ")[1].split(" (TFSPEED_DEBUG")[0]
    assert "Traceback (most recent call last)" in open(log).read() and len(err.splitlines()) == 1
