"""`tfspeed export`: a model directory in, an atomic .tflite and a JSON parity report out, clear errors."""

import json

import pytest

from tfspeed.cli import main
from tfspeed.compat import keras
from tfspeed.models import build_classifier


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tiny_config, vocab_file):
    from tfspeed.artifacts import ModelInfo, save_model_dir

    keras.utils.set_random_seed(1)
    model = build_classifier(tiny_config)
    out = tmp_path_factory.mktemp("models") / "tiny"
    save_model_dir(model, out, ModelInfo(seq_length=16, label_names=["neg", "pos"], base="random", stage="test",
                                         vocab_path=str(vocab_file)))
    return out


def test_cli_exports_with_a_report_and_refuses_to_overwrite(model_dir, sentiment_csv, tmp_path, capsys):
    out, report = tmp_path / "m.tflite", tmp_path / "r.json"
    argv = ["export", str(model_dir), "--mode", "int8-mixed", "--out", str(out), "--report", str(report),
            "--data", str(sentiment_csv), "--num-calibration-samples", "32", "--eval-limit", "20"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "argmax agreement" in printed and "FULLY_CONNECTED" in printed
    data = json.loads(report.read_text())
    assert data["mode"] == "int8-mixed" and data["seq_length"] == 16
    parity = data["parity"]
    assert parity["num_examples"] == 20
    # the parity report measures the converted model; the file adds the metadata (vocab.txt of 120 tokens, labels)
    from tfspeed.export.metadata import metadata_buffer

    archive = out.stat().st_size - out.read_bytes().index(b"PK\x03\x04")
    assert data["metadata_bytes"] == len(metadata_buffer(out)) + archive and 500 < data["metadata_bytes"] < 5000
    assert data["size_bytes"] == out.stat().st_size and {"SOFTMAX", "GELU"} <= set(data["float_ops"])
    assert parity["op_histogram"]["int8"]["FULLY_CONNECTED"]["int8"] == 14
    assert {"SOFTMAX", "GELU", "MEAN"} <= set(parity["fell_back"])
    assert parity["argmax_agreement"] >= 0.9  # random weights: logits are close together, a few flips allowed

    before = out.read_bytes()
    assert main(argv[:3] + ["float16"] + argv[4:]) == 1  # exists: refused, untouched
    assert "already exists" in capsys.readouterr().err and out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.tflite", "r.json"]


def test_cli_unknown_mode_lists_the_accepted_ones(model_dir, tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["export", str(model_dir), "--mode", "int3", "--out", str(tmp_path / "x.tflite")])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "int3" in err and all(m in err for m in ("float32", "float16", "dynamic", "'int8'", "int8-mixed", "int4",
                                                    "16x8"))


def test_cli_budget_picks_a_candidate(model_dir, sentiment_csv, tmp_path, capsys):
    out, report = tmp_path / "b.tflite", tmp_path / "b.json"
    assert main(["export", str(model_dir), "--max-drop", "0.05", "--candidates", "dynamic,float32", "--order", "known",
                 "--out", str(out), "--report", str(report), "--data", str(sentiment_csv), "--eval-limit", "20",
                 "--eval-split", "none"]) == 0
    data = json.loads(report.read_text())
    assert data["budget"]["chosen"] == "dynamic" and data["mode"] == "dynamic" and data["parity"] is None
    assert data["budget"]["tried"][0]["status"] == "within_budget"
    # the shipped file = the evaluated one re-packed (the converter's empty buffers dropped) + a softmax + metadata
    assert abs(out.stat().st_size - data["budget"]["tried"][0]["size_bytes"] - data["metadata_bytes"]) < 2000
    assert main(["export", str(model_dir), "--max-drop", "1.5", "--out", str(tmp_path / "c.tflite"),
                 "--data", str(sentiment_csv)]) == 1
    assert "max_drop=1.5" in capsys.readouterr().err


def test_cli_missing_model_dir(tmp_path, capsys):
    assert main(["export", str(tmp_path / "nope"), "--out", str(tmp_path / "x.tflite"), "--limit", "5"]) == 1
    assert "model directory" in capsys.readouterr().err
