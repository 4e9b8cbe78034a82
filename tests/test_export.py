"""TFLite export: modes, signature, calibration checks, parity, the accuracy budget, bad input.

A tiny BERT is trained for a few seconds on the toy sentiment set (it reaches 1.0 validation accuracy), converted once
per mode (module fixture), and every .tflite is compared with it. Tolerances: float32 matches Keras to 1e-4 in the
logits (same float math, different kernels); float16 weights to 2e-2; int8 modes are judged by argmax agreement and
accuracy, since their logits move by design.
"""

import json

import numpy as np
import pytest

from tfspeed.compat import keras, tf
from tfspeed.data import EncodedSplit, Tokenizer, load_dataset
from tfspeed.export import (
    BudgetError,
    ConversionError,
    Converter,
    Mode,
    calibration_features,
    convert,
    evaluate,
    export_within_budget,
    format_report,
    list_ops,
    op_histogram,
    parity_report,
    save_tflite,
)
from tfspeed.models import INPUT_NAMES, build_classifier

SEQ = 16


@pytest.fixture(scope="module")
def toy(sentiment_csv, vocab_file):
    dataset = load_dataset(str(sentiment_csv))
    tok = Tokenizer(vocab_file, seq_length=SEQ)
    return dataset, EncodedSplit.from_split(dataset.train, tok), EncodedSplit.from_split(dataset.validation, tok)


@pytest.fixture(scope="module")
def trained(tiny_config, toy):
    from tfspeed.train import accuracy, fit_classifier

    _, train, validation = toy
    keras.utils.set_random_seed(0)
    model = build_classifier(tiny_config)
    fit_classifier(model, train, epochs=6, batch_size=16, learning_rate=2e-3, verbose=0)
    assert accuracy(model, validation) >= 0.9  # learnable toy task: the references below mean something
    return model


@pytest.fixture(scope="module")
def converter(trained, toy, vocab_file):
    dataset = toy[0]
    return Converter(trained, seq_length=SEQ, calibration=dataset, num_calibration_samples=64, vocab=vocab_file)


@pytest.fixture(scope="module")
def exported(converter):
    # every mode; int4 channel-wise (the tiny FFN's 48 inputs hold no block of 32); needs the LiteRT quantizer
    import importlib.util

    have_quantizer = importlib.util.find_spec("litert_quantizer") is not None
    return {mode: converter.convert(mode, block_size=0 if mode in (Mode.INT4, Mode.INT4_HR) else None)
            for mode in Mode if have_quantizer or not mode.uses_quantizer}


# === Modes and signature ===

def test_mode_enum_parses_and_lists_accepted_values():
    assert Mode.parse("INT8-mixed") is Mode.INT8_MIXED and Mode("float16") is Mode.FLOAT16
    with pytest.raises(ValueError, match=r"`mode`.*'float32', 'float16', 'dynamic', 'int8', 'int8-mixed'.*mode='int3'"):
        convert(keras.Sequential(), mode="int3")


def test_cli_choices_come_from_the_enum():
    import argparse

    from tfspeed.cli import export as cli

    parser = argparse.ArgumentParser()
    action = next(a for a in cli.register(parser.add_subparsers())._actions if a.dest == "mode")
    assert action.choices == Mode.choices() == [m.value for m in Mode]


def test_every_mode_has_the_fixed_serving_signature(exported):
    from ai_edge_litert.interpreter import Interpreter

    for mode, data in exported.items():
        it = Interpreter(model_content=data)
        sig = it.get_signature_list()
        assert sig == {"serving_default": {"inputs": sorted(INPUT_NAMES), "outputs": ["logits"]}}, mode
        for d in it.get_input_details():
            assert d["dtype"] == np.int32 and list(d["shape"]) == [1, SEQ], (mode, d)  # token inputs stay int32
        assert it.get_output_details()[0]["dtype"] == np.float32


# === Parity per mode ===

def test_parity_float_modes_match_keras(exported, trained, toy):
    validation = toy[2]
    f32 = parity_report(exported[Mode.FLOAT32], trained, validation)
    assert f32["max_abs_logit_diff"] < 1e-4 and f32["argmax_agreement"] == 1.0
    assert f32["fell_back"] == {} and f32["op_histogram"]["int8"]["FULLY_CONNECTED"]["total"] == 14
    f16 = parity_report(exported[Mode.FLOAT16], trained, validation)
    assert f16["max_abs_logit_diff"] < 2e-2 and f16["argmax_agreement"] == 1.0
    assert f16["size_bytes"] < 0.75 * f32["size_bytes"]
    assert {"accuracy", "keras_accuracy", "mean_abs_logit_diff", "gzip_bytes", "op_histogram"} <= set(f32)
    json.dumps(f32)  # JSON-ready
    assert "FULLY_CONNECTED" in format_report(f16)


def test_quantized_modes_keep_accuracy_and_report_int8_ops(exported, trained, toy):
    validation = toy[2]
    dyn = parity_report(exported[Mode.DYNAMIC], trained, validation)
    assert dyn["op_histogram"]["int8"]["FULLY_CONNECTED"]["hybrid-int8"] >= 13  # the 2-unit classifier may stay float
    assert dyn["argmax_agreement"] >= 0.95
    full = parity_report(exported[Mode.INT8], trained, validation)
    assert full["op_histogram"]["int8"]["FULLY_CONNECTED"] == {"int8": 14, "hybrid-int8": 0, "total": 14}
    assert full["op_histogram"]["int8"]["BATCH_MATMUL"]["int8"] == 4
    assert full["fell_back"] == {}
    mixed = parity_report(exported[Mode.INT8_MIXED], trained, validation)
    assert mixed["op_histogram"]["int8"]["FULLY_CONNECTED"]["int8"] == 14
    assert set(mixed["fell_back"]) >= {"MEAN", "SQUARED_DIFFERENCE", "RSQRT", "SOFTMAX", "GELU"}
    # the additive mask stays float with the softmax block: int8 there loses ~half the accuracy on this model
    assert mixed["accuracy"] >= mixed["keras_accuracy"] - 0.05 and mixed["argmax_agreement"] >= 0.9


def test_int8_mixed_with_chosen_float_ops(converter):
    hist = op_histogram(converter.convert("int8-mixed", float_ops=["batch_matmul", "softmax"]))
    assert hist["ops"]["BATCH_MATMUL"] == {"float32": 4} and hist["ops"]["SOFTMAX"] == {"float32": 2}
    assert hist["ops"]["GELU"] == {"int8": 2}
    with pytest.raises(ValueError, match="`float_ops`.*'NOT_AN_OP'"):
        converter.convert("int8-mixed", float_ops=["not_an_op"])
    with pytest.raises(ValueError, match="only apply to mode='int8-mixed'"):
        converter.convert("dynamic", float_ops=["SOFTMAX"])
    with pytest.raises(ValueError, match="`float_nodes`.*regular expressions"):
        converter.convert("int8-mixed", float_nodes=["softmax("])


def test_budget_ladder_fc_only_and_attention_fc_only(converter):
    from tfspeed.export import DEFAULT_CANDIDATES

    ladder = {c.name: c for c in DEFAULT_CANDIDATES}
    fc_only = op_histogram(converter.convert(ladder["int8-fc"]))
    assert fc_only["int8"]["FULLY_CONNECTED"]["int8"] == 14
    assert fc_only["ops"]["BATCH_MATMUL"] == {"float32": 4} and fc_only["ops"]["GELU"] == {"float32": 2}
    attn = op_histogram(converter.convert(ladder["int8-attn-fc"]))
    assert attn["int8"]["FULLY_CONNECTED"]["int8"] == 14 - 2 * 2  # each layer's intermediate and output stay float


def test_float_nodes_keep_the_attention_softmax_block_float(converter, trained, toy):
    attn = converter.convert("int8-mixed", float_ops=(), float_nodes=["softmax"])
    ops = {name: kind for name, kind, tensor in list_ops(attn) if "softmax" in tensor and name != "QUANTIZE"}
    assert ops == {"MUL": "float32", "ADD": "float32", "SOFTMAX": "float32"}
    hist = op_histogram(attn)
    assert hist["int8"]["FULLY_CONNECTED"]["int8"] == 14 and hist["ops"]["GELU"] == {"int8": 2}
    report = parity_report(attn, trained, toy[2])
    assert report["argmax_agreement"] >= 0.9


def test_evaluate_pads_and_cuts_to_the_model_length(exported, toy):
    validation = toy[2]
    data = exported[Mode.FLOAT32]
    base = evaluate(data, validation)
    padded = {k: np.pad(v, [(0, 0), (0, 6)]) for k, v in validation.features.items()}  # 22 tokens: cut back to 16
    np.testing.assert_allclose(evaluate(data, padded), base, atol=1e-6)
    short = int(validation.lengths.max())
    cut = {k: v[:, :short] for k, v in validation.features.items()}  # shorter: padded to 16
    np.testing.assert_allclose(evaluate(data, cut), base, atol=1e-6)


# === Calibration ===

def test_calibration_from_text_is_int32_ids_of_the_requested_count(vocab_file, toy):
    dataset = toy[0]
    feats = calibration_features(dataset, SEQ, num_samples=10, vocab=vocab_file)
    assert all(v.dtype == np.int32 and v.shape == (10, SEQ) for v in feats.values())
    assert (feats["input_word_ids"][:, 0] == 2).all()  # [CLS]
    with pytest.raises(ValueError, match="pass `vocab`"):
        calibration_features(["a good movie"], SEQ)


@pytest.mark.parametrize("bad, match", [
    ({n: np.zeros((4, SEQ), np.float32) for n in INPUT_NAMES}, "expected int32 token ids.*dtype=float32"),
    ({n: np.zeros((4, SEQ, 1), np.int32) for n in INPUT_NAMES}, r"shape.*\[num_samples, seq_length\].*\(4, 16, 1\)"),
    ({"input_word_ids": np.zeros((4, SEQ), np.int32), "input_mask": np.zeros((3, SEQ), np.int32),
      "input_type_ids": np.zeros((4, SEQ), np.int32)}, "same number of rows"),
    ({"input_word_ids": np.zeros((4, SEQ), np.int32)}, "missing the inputs"),
])
def test_bad_calibration_data_is_refused(trained, bad, match):
    with pytest.raises(ValueError, match=match):
        convert(trained, "int8", seq_length=SEQ, calibration=bad)


def test_int8_needs_calibration_and_a_valid_sample_count(trained):
    with pytest.raises(ValueError, match="needs `calibration`"):
        convert(trained, "int8", seq_length=SEQ)
    with pytest.raises(ValueError, match="num_calibration_samples=0"):
        convert(trained, "int8", seq_length=SEQ, calibration=["good"], num_calibration_samples=0)


# === Accuracy budget ===

def test_budget_takes_the_first_candidate_within_budget_and_records_the_rest(converter, toy):
    validation = toy[2]
    data, record = export_within_budget(converter, validation, max_drop=0.05, candidates=["int8-mixed", "float32"],
                                        order="known")
    assert record.chosen == "int8-mixed" and data == converter.convert("int8-mixed")
    first, second = record.tried
    assert first["status"] == "within_budget" and first["drop"] <= 0.05 and first["latency_ms"] > 0
    assert set(first["fell_back"]) >= {"SOFTMAX", "GELU"} and first["size_bytes"] > 0
    assert second["status"] == "not_evaluated"
    assert "int8-mixed" in record.to_table()
    json.dumps(record.to_dict())


def test_budget_screens_out_a_candidate_far_over_budget_on_a_sample(converter, toy, monkeypatch):
    """A file that gets most answers wrong is rejected on the screening sample, without the full evaluation; one
    within the budget is then evaluated in full."""
    from tfspeed.export import budget as budget_module

    validation = toy[2]
    broken = converter.convert("dynamic")
    calls = []
    real_logits = budget_module.TFLiteClassifier.logits

    def logits(self, features):  # the dynamic file answers the opposite class: 100 points below on any sample
        out = real_logits(self, features)
        calls.append(len(next(iter(features.values()))))
        return -out if self.data == broken else out

    monkeypatch.setattr(budget_module.TFLiteClassifier, "logits", logits)
    screen = len(validation) // 3
    _, record = export_within_budget(converter, validation, max_drop=0.05, candidates=["dynamic", "float32"],
                                     order="known", screen=screen)
    first, second = record.tried
    assert first["status"] == "screened_out" and first["accuracy"] is None and first["screen_drop"] > 0.5
    assert first["screen_examples"] == screen and second["status"] == "within_budget"
    assert calls == [screen, screen, len(validation)]  # dynamic: the sample only; float32: sample, then in full
    assert "screened_out" in record.to_table()


def test_budget_orders_by_measured_latency(converter, toy):
    validation = toy[2]
    _, record = export_within_budget(converter, validation, max_drop=0.5, candidates=["int8", "dynamic", "float32"],
                                     evaluate_all=True, latency_runs=5)
    latencies = [t["latency_ms"] for t in record.tried]
    assert latencies == sorted(latencies) and record.chosen == record.tried[0]["name"]
    assert record.latency_source in ("tfspeed.profile", "quick-median")


def test_budget_skips_failed_candidates_and_rejects_bad_arguments(trained, toy):
    validation = toy[2]
    data, record = export_within_budget(trained, validation, max_drop=0.01, candidates=["int8", "float16"],
                                        seq_length=SEQ, order="known")  # no calibration: int8 cannot be built
    assert record.tried[0]["status"] == "failed" and "calibration" in record.tried[0]["error"]
    assert record.chosen == "float16"
    with pytest.raises(ValueError, match=r"max_drop=1.0"):
        export_within_budget(trained, validation, max_drop=1.0)
    with pytest.raises(ValueError, match="candidates"):
        export_within_budget(trained, validation, candidates=["int3"])
    with pytest.raises(BudgetError, match="No candidate") as info:  # nothing buildable: int8 without calibration
        export_within_budget(trained, validation, candidates=["int8"], seq_length=SEQ)
    assert info.value.record.chosen is None and info.value.record.tried[0]["status"] == "failed"


# === Bad input and other model kinds ===

def test_converter_failure_names_the_ops():
    inputs = {n: keras.Input((SEQ,), dtype=tf.int32, name=n) for n in INPUT_NAMES}
    x = keras.layers.Embedding(50, 4)(inputs["input_word_ids"])[:, :4, :]
    x = keras.layers.Lambda(lambda t: tf.linalg.det(t[:, :, :4])[:, None])(x)  # MatrixDeterminant: no TFLite kernel
    model = keras.Model(inputs, keras.layers.Dense(2)(x))
    with pytest.raises(ConversionError, match="MatrixDeterminant") as info:
        convert(model, "float32", seq_length=SEQ)
    assert any("MatrixDeterminant" in op for op in info.value.failed_ops)


def test_existing_output_is_refused_unless_overwrite(tmp_path, exported):
    out = tmp_path / "m.tflite"
    save_tflite(exported[Mode.DYNAMIC], out)
    with pytest.raises(FileExistsError, match="overwrite"):
        save_tflite(exported[Mode.FLOAT32], out)
    save_tflite(exported[Mode.FLOAT32], out, overwrite=True)
    assert out.read_bytes() == exported[Mode.FLOAT32]
    assert [p.name for p in tmp_path.iterdir()] == ["m.tflite"]  # no temporary left behind


def _flat_classifier(seq=SEQ):
    inputs = {n: keras.Input((seq,), dtype=tf.int32, name=n) for n in INPUT_NAMES}
    x = keras.layers.Embedding(60, 16, name="emb")(inputs["input_word_ids"])
    x = keras.layers.GlobalAveragePooling1D()(x)
    x = keras.layers.Dense(32, activation="relu", name="hidden")(x)
    return keras.Model(inputs, keras.layers.Dense(2, name="logits")(x))


def test_qat_model_converts_to_int8_with_its_own_ranges(toy):
    import tensorflow_model_optimization as tfmot

    q = tfmot.quantization.keras
    model = _flat_classifier()
    annotated = keras.models.clone_model(
        model, clone_function=lambda l: q.quantize_annotate_layer(l) if isinstance(l, keras.layers.Dense) else l)
    qat = q.quantize_apply(annotated)
    rng = np.random.default_rng(0)
    feats = {"input_word_ids": rng.integers(1, 60, (64, SEQ)).astype(np.int32),
             "input_mask": np.ones((64, SEQ), np.int32), "input_type_ids": np.zeros((64, SEQ), np.int32)}
    qat.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    qat.fit(feats, rng.integers(0, 2, 64), epochs=1, verbose=0)  # sets the fake-quant ranges
    data = convert(qat, "int8", seq_length=SEQ)  # no calibration needed
    hist = op_histogram(data)
    assert hist["int8"]["FULLY_CONNECTED"]["int8"] == 2
    lite = evaluate(data, feats)
    ref = qat.predict(feats, verbose=0)
    assert np.mean(lite.argmax(-1) == ref.argmax(-1)) >= 0.9 and np.abs(lite - ref).max() < 0.1
    with pytest.raises(ValueError, match="QAT model"):
        convert(qat, "int8-mixed", seq_length=SEQ)


def test_pruned_model_with_wrappers_is_stripped_on_a_copy():
    import tensorflow_model_optimization as tfmot

    s = tfmot.sparsity.keras
    model = _flat_classifier()
    pruned = keras.models.clone_model(
        model, clone_function=lambda l: s.prune_low_magnitude(l, s.ConstantSparsity(0.5, 0))
        if isinstance(l, keras.layers.Dense) else l)
    pruned.compile("adam", "mse")
    rng = np.random.default_rng(1)
    feats = {"input_word_ids": rng.integers(1, 60, (8, SEQ)).astype(np.int32),
             "input_mask": np.ones((8, SEQ), np.int32), "input_type_ids": np.zeros((8, SEQ), np.int32)}
    pruned.fit(feats, np.zeros((8, 2)), epochs=1, verbose=0, callbacks=[s.UpdatePruningStep()])
    data = convert(pruned, "float32", seq_length=SEQ)
    stripped = s.strip_pruning(pruned)
    np.testing.assert_allclose(evaluate(data, feats), stripped.predict(feats, verbose=0), atol=1e-5)
    assert any(type(l).__name__ == "PruneLowMagnitude" for l in pruned.layers)  # the caller's model is untouched


def test_hub_layer_classifier_converts(tiny_config, tmp_path):
    from tfspeed.hub import build_hub_classifier, export_encoder, sample_inputs
    from tfspeed.models import build_encoder

    export_encoder(build_encoder(tiny_config), tmp_path / "enc")
    model = build_hub_classifier(str(tmp_path / "enc"))
    feats = sample_inputs(tiny_config, batch=4, seq_length=SEQ)
    data = convert(model, "dynamic", seq_length=SEQ)
    assert op_histogram(data)["int8"]["FULLY_CONNECTED"]["hybrid-int8"] >= 13
    lite = evaluate(data, {k: np.asarray(v) for k, v in feats.items()})
    np.testing.assert_allclose(lite, model(feats, training=False).numpy(), atol=5e-2)
