"""The LiteRT quantizer's modes (int4, weight-only, static int8, 16x8), the integer-only check, and the budget's size
objective: real conversions, real quantizer, real interpreter runs on a tiny random-weight BERT."""

import json
import re

import numpy as np
import pytest

from tfspeed.compat import keras
from tfspeed.export import Converter, convert, export_within_budget
from tfspeed.export import quantizer as qz
from tfspeed.export.ops import check_integer_only, integer_report, list_ops, op_histogram, weight_shapes
from tfspeed.export.parity import TFLiteClassifier
from tfspeed.hub import sample_inputs
from tfspeed.models import build_classifier

pytest.importorskip("litert_quantizer")


@pytest.fixture(scope="module")
def setup():
    """A tiny BERT whose every weight's input dimension (32, 64) is a multiple of 32, its inputs and Keras logits."""
    import harness

    keras.utils.set_random_seed(5)
    config = harness.tiny_config(intermediate_size=64, max_positions=16, dropout=0.0, attention_dropout=0.0)
    model = build_classifier(config, num_classes=2)
    dense = model.get_layer("classifier")
    dense.set_weights([w * 20.0 for w in dense.get_weights()])  # logits that spread, so argmax flips would show
    feats = sample_inputs(config, batch=24, seq_length=12)
    feats["input_mask"][::2, 8:] = 0  # padded rows too
    feats["input_word_ids"] *= feats["input_mask"]
    ref = model.predict(feats, verbose=0)
    return model, feats, ref, Converter(model, 12, calibration=feats)  # traced once, float32 converted once


def _logits(data, feats):
    return TFLiteClassifier(data).logits(feats)


def test_embedding_lookup_rewrite_keeps_the_outputs(setup):
    model, feats, _, conv = setup
    plain = conv.convert("float32")
    rewritten = qz.embedding_lookups(plain)
    ops = [name for name, _, _ in list_ops(rewritten)]
    assert ops.count("EMBEDDING_LOOKUP") == 1 and ops.count("GATHER") == 1  # the word table; the 3-row type table
    np.testing.assert_array_equal(_logits(rewritten, feats), _logits(plain, feats))
    dynamic = convert(model, "float32", seq_length="dynamic")
    np.testing.assert_allclose(_logits(qz.embedding_lookups(dynamic), feats), _logits(dynamic, feats), atol=1e-6)


def test_squared_difference_rewrite_keeps_the_outputs(setup):
    model, feats, _, conv = setup
    plain = conv.convert("float32")
    rewritten = qz.squared_differences(plain)
    assert "SQUARED_DIFFERENCE" not in {name for name, _, _ in list_ops(rewritten)}
    np.testing.assert_allclose(_logits(rewritten, feats), _logits(plain, feats), atol=1e-5)


def test_int4_blockwise_quantizes_the_embedding_and_the_dense_layers(setup):
    model, feats, ref, conv = setup
    int4 = conv.convert("int4")
    dynamic = conv.convert("dynamic")
    channel = conv.convert("int4", block_size=0)
    assert len(int4) < 0.8 * len(dynamic) and len(channel) < 0.85 * len(dynamic)  # a tiny file: headers count
    assert len(channel) != len(int4)  # one scale per channel vs one per 32 weights
    fc = op_histogram(int4)["int8"]["FULLY_CONNECTED"]
    assert fc["hybrid-int4"] == fc["total"] == 14  # the classifier too: the quantizer has no minimum size
    assert ("EMBEDDING_LOOKUP", "hybrid-int4") in {(n, k) for n, k, _ in list_ops(int4)}
    out = _logits(int4, feats)
    assert (out.argmax(-1) == ref.argmax(-1)).mean() >= 0.9
    np.testing.assert_allclose(out, ref, atol=0.25 * np.abs(ref).max())  # 4-bit weights: a coarse bound


def test_hadamard_rotated_int4_undoes_its_rotation_in_the_graph(setup):
    """The rotation helps trained weights with outliers (MiniLM: benchmarks); on random weights it must only keep
    the function: the rotated weights with the inverse rotation in the graph give the model's outputs."""
    model, feats, ref, conv = setup
    rotated = conv.convert("int4-hr", block_size=0)
    plain = conv.convert("int4", block_size=0)
    assert len(list_ops(rotated)) > len(list_ops(plain))  # the rotation of each int4 layer's input
    out = _logits(rotated, feats)
    assert (out.argmax(-1) == ref.argmax(-1)).mean() >= 0.8
    np.testing.assert_allclose(out, ref, atol=0.25 * np.abs(ref).max())


def test_a_recipe_keeps_the_attention_in_int8(setup):
    model, feats, ref, conv = setup
    mixed = conv.convert("int4", recipe="attention=int8,head=int8")
    kinds = {re.search(r"layer_\d_[a-z_]+", t).group(): k for n, k, t in list_ops(mixed)
             if n == "FULLY_CONNECTED" and "layer_" in t}
    assert kinds["layer_0_query"] == kinds["layer_1_attention_output"] == "hybrid-int8"
    assert kinds["layer_0_intermediate"] == kinds["layer_1_output"] == "hybrid-int4"
    assert len(conv.convert("int4")) < len(mixed)
    assert (_logits(mixed, feats).argmax(-1) == ref.argmax(-1)).mean() >= 0.9


def test_weight_only_files_compute_in_float(setup):
    model, feats, ref, conv = setup
    for mode, tol in (("int8-weights", 0.02), ("int4-weights", 0.25)):
        data = conv.convert(mode)
        hist = op_histogram(data)
        assert hist["ops"]["DEQUANTIZE"] and hist["int8"]["FULLY_CONNECTED"]["hybrid-int8"] == 0, mode
        assert len(data) < 0.5 * len(conv.convert("float32")), mode
        np.testing.assert_allclose(_logits(data, feats), ref, atol=tol * np.abs(ref).max(), err_msg=mode)


@pytest.mark.parametrize("mode", ["int8-static", "16x8"])
def test_static_modes_are_integer_only_at_a_fixed_length(setup, mode):
    model, feats, ref, conv = setup
    data = conv.convert(mode)
    report = check_integer_only(data, mode)  # raises if any op between the inputs and the logits is float
    assert report == {"fully_integer": True, "float_ops": {}, "examples": {}}
    kinds = {k for n, k, _ in list_ops(data) if n in ("FULLY_CONNECTED", "SOFTMAX", "MEAN", "GELU")}
    assert kinds == ({"int16"} if mode == "16x8" else {"int8"})
    out = _logits(data, feats)  # the int output dequantized by the runner
    assert (out.argmax(-1) == ref.argmax(-1)).mean() >= 0.9
    np.testing.assert_allclose(out, ref, atol=0.1 * np.abs(ref).max())


def test_integer_only_names_the_float_ops_and_why(setup):
    model, _, _, conv = setup
    report = integer_report(conv.convert("dynamic"))
    assert not report["fully_integer"] and {"FULLY_CONNECTED", "SOFTMAX", "MEAN", "GELU"} <= set(report["float_ops"])
    with pytest.raises(ValueError, match=r"integer_only.*FULLY_CONNECTED x\d+ .*float activations"):
        check_integer_only(conv.convert("dynamic"), "mode='dynamic'")


def test_bad_block_sizes_and_recipes_are_named(setup, tiny_config):
    model, _, _, conv = setup
    with pytest.raises(ValueError, match=r"`block_size`.*0 .*\(32, 64, 128, 256\).*block_size=48"):
        conv.convert("int4", block_size=48)
    odd = build_classifier(tiny_config.replace(max_positions=16), num_classes=2)  # intermediate size 48
    with pytest.raises(ValueError, match=r"block_size=32; FULLY_CONNECTED '.*layer_0_output.*' has weights \[32, 48\]"):
        convert(odd, "int4", seq_length=12)
    with pytest.raises(ValueError, match=r"expected parts among .*'embedding'.*Received: part 'encoder'"):
        conv.convert("int4", recipe="encoder=int4")
    with pytest.raises(ValueError, match=r"expected schemes among .*Received: ffn='int3'"):
        conv.convert("int4", recipe="ffn=int3")
    with pytest.raises(ValueError, match=r"part=scheme.*'ffn' has no '='"):
        conv.convert("int4", recipe="ffn")
    with pytest.raises(ValueError, match=r"apply to the LiteRT quantizer's modes.*mode='dynamic'"):
        conv.convert("dynamic", block_size=32)
    with pytest.raises(ValueError, match=r"needs `calibration`"):
        convert(model, "16x8", seq_length=12)


def test_a_missing_quantizer_says_how_to_install_it(setup, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "litert_quantizer", None)
    with pytest.raises(ImportError, match=r"pip install 'tfspeed\[quantizer\]'"):
        setup[3].convert("int8-weights", recipe="ffn=float")  # not converted before: no cached file


def test_weight_shapes_list_the_dense_and_embedding_weights(setup):
    shapes = weight_shapes(qz.embedding_lookups(setup[3].convert("float32")))
    assert ("EMBEDDING_LOOKUP", (120, 32)) in {(op, shape) for op, _, shape in shapes}
    assert sum(op == "FULLY_CONNECTED" for op, _, _ in shapes) == 14


def test_the_budget_picks_the_smallest_file_within_it(setup):
    from tfspeed.data import EncodedSplit

    model, feats, ref, conv = setup
    validation = EncodedSplit(feats, ref.argmax(-1))  # the Keras model is right on every row
    data, record = export_within_budget(conv, validation, max_drop=0.2, objective="size",
                                        candidates=["float32", "dynamic", "int4", "int8-weights"], latency_runs=3,
                                        screen=None)
    sizes = [t["size_bytes"] for t in record.tried]
    assert sizes == sorted(sizes) and record.objective == "size"
    assert record.tried[0]["name"] == "int4" and record.chosen == "int4" and len(data) == sizes[0]
    assert "smallest" in record.to_table()
    _, record = export_within_budget(conv, validation, max_drop=0.2,
                                     candidates=["dynamic", "16x8"], integer_only=True, latency_runs=3, screen=None)
    status = {t["name"]: t["status"] for t in record.tried}
    assert status == {"dynamic": "not_integer", "16x8": "within_budget"} and record.chosen == "16x8"


def test_cli_writes_an_integer_only_file_with_metadata(tiny_teacher_dir, sentiment_csv, tmp_path, capsys):
    from tfspeed.cli import main
    from tfspeed.export.metadata import read_metadata

    out, report = tmp_path / "int.tflite", tmp_path / "int.json"
    argv = ["export", str(tiny_teacher_dir), "--mode", "16x8", "--integer-only", "--out", str(out), "--report",
            str(report), "--data", str(sentiment_csv), "--num-calibration-samples", "16", "--eval-limit", "20"]
    assert main(argv) == 0
    assert re.search(r"integer-only +yes", capsys.readouterr().out)
    data = json.loads(report.read_text())
    assert data["parity"]["integer"]["fully_integer"] and data["parity"]["argmax_agreement"] >= 0.9
    assert read_metadata(out).labels == ("neg", "pos")
    assert integer_report(out)["fully_integer"]  # the metadata's softmax on the dequantized logits is an edge op

    bad = ["export", str(tiny_teacher_dir), "--mode", "dynamic", "--integer-only", "--out", str(tmp_path / "d.tflite"),
           "--data", str(sentiment_csv), "--eval-split", "none"]
    assert main(bad) == 1
    err = capsys.readouterr().err
    assert "integer_only" in err and "FULLY_CONNECTED" in err and not (tmp_path / "d.tflite").exists()
    assert main(["export", str(tiny_teacher_dir), "--mode", "int4", "--block-size", "24", "--out",
                 str(tmp_path / "x.tflite")]) == 1  # refused before loading the model
    assert "block_size=24" in capsys.readouterr().err
