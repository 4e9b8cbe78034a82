"""QAT of a whole tiny BERT: every FULLY_CONNECTED and BATCH_MATMUL of the .tflite int8, the file agreeing with the
Keras QAT model, reloads, sparsity kept, two-replica fit, clear errors. Real TFMOT, real converter, real interpreter."""

import json

import harness
import numpy as np
import pytest

from tfspeed import artifacts, cli, export
from tfspeed.compat import keras, tf
from tfspeed.compress import quantization
from tfspeed.compress.quantization.training import _range_quantizers
from tfspeed.data import EncodedSplit, Tokenizer, from_file
from tfspeed.export.quantized import int8_fractions, to_tflite
from tfspeed.models import build_classifier, build_encoder
from tfspeed.train import accuracy, fit_classifier, predict_logits

SEQ = 16
CONFIG = harness.tiny_config(type_vocab_size=2)


@pytest.fixture(scope="module")
def toy(vocab_file, sentiment_csv):
    d = from_file(sentiment_csv)
    tok = Tokenizer(vocab_file, seq_length=SEQ)
    return EncodedSplit.from_split(d.train, tok), EncodedSplit.from_split(d.test, tok)


@pytest.fixture(scope="module")
def float_model(toy):
    keras.utils.set_random_seed(1)
    model = build_classifier(CONFIG)
    fit_classifier(model, toy[0], epochs=4, batch_size=16, learning_rate=3e-3, verbose=0)
    assert accuracy(model, toy[1]) >= 0.9  # the toy task is learnt: QAT below starts from a real model
    return model


@pytest.fixture(scope="module")
def qat_model(float_model, toy):
    model, _ = quantization.qat_fit(float_model, toy[0], epochs=1, batch_size=16, learning_rate=1e-4, verbose=0)
    return model


@pytest.fixture(scope="module")
def qat_tflite(qat_model):
    return to_tflite(qat_model, SEQ)


def _head(split, n):
    return EncodedSplit({k: v[:n] for k, v in split.features.items()}, split.labels[:n])


def _wrapped(model):
    return {l.layer.name: l for l in model.layers if hasattr(l, "quantize_config")}


def _copy(model):
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy


def test_quantize_wraps_every_dense_and_the_attention_layers_only(float_model):
    before = [w.copy() for w in float_model.get_weights()]
    q = quantization.quantize(float_model)
    wrapped = _wrapped(q)
    dense = [l.name for l in float_model.layers if isinstance(l, keras.layers.Dense)]
    assert len(dense) == 6 * CONFIG.num_layers + 2 and set(dense) <= set(wrapped)
    for i in range(CONFIG.num_layers):
        for part in ("scores", "softmax", "context", "attention_layer_norm", "output_layer_norm"):
            assert isinstance(wrapped[f"layer_{i}_{part}"].quantize_config, quantization.OutputQuantizeConfig)
    # int32 paths are never fake-quantized (only the embedding tables are), and the additive mask stays float
    for name in ("position_embedding", "attention_mask"):
        assert name not in wrapped
    for name in ("word_embeddings", "type_embeddings"):
        assert isinstance(wrapped[name].quantize_config, quantization.EmbeddingQuantizeConfig)
    assert not any(type(l).__name__ == "QuantizeLayer" for l in q.layers)
    # the residual stream stays float: TFMOT would otherwise give each Add feeding a LayerNorm its own output range
    adds = [l.name for l in float_model.layers if isinstance(l, keras.layers.Add)]
    assert len(adds) == 2 * CONFIG.num_layers + 1
    assert all(isinstance(wrapped[name].quantize_config, quantization.FloatQuantizeConfig) for name in adds)
    # a new model: the caller's is untouched
    assert not any(hasattr(l, "quantize_config") for l in float_model.layers)
    assert all(np.array_equal(a, b) for a, b in zip(before, float_model.get_weights()))


def test_qat_tflite_is_all_int8_and_agrees_with_keras(qat_model, qat_tflite, toy):
    fractions = int8_fractions(qat_tflite)
    assert fractions == {"FULLY_CONNECTED": 1.0, "BATCH_MATMUL": 1.0}
    counts = export.op_histogram(qat_tflite)["int8"]
    split = quantization.split_of(qat_model)  # qat_fit computes outlier channels apart when the data shows some
    assert counts["FULLY_CONNECTED"]["total"] == 6 * CONFIG.num_layers + 2 + 2 * len(split)
    assert counts["BATCH_MATMUL"]["total"] == 2 * CONFIG.num_layers
    _assert_residual_float_and_tables_int8(qat_tflite)
    test = toy[1]
    keras_logits = predict_logits(qat_model, test)
    lite_logits = export.evaluate(qat_tflite, test)
    assert np.mean(keras_logits.argmax(-1) == lite_logits.argmax(-1)) >= 0.97
    # the file computes what the fake-quant model simulated: logits within a few output quantization steps
    spread = float(keras_logits.max() - keras_logits.min())
    assert np.abs(keras_logits - lite_logits).mean() <= 0.05 * spread
    assert np.mean(lite_logits.argmax(-1) == test.labels) >= 0.9


def _op_tensors(tflite):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=tflite)
    details = {t["index"]: t for t in interpreter.get_tensor_details()}
    return [(op["op_name"], [details[i] for i in op["inputs"] if i >= 0], [details[i] for i in op["outputs"]])
            for op in interpreter._get_ops_details()]  # pylint: disable=protected-access


def _assert_residual_float_and_tables_int8(tflite):
    ops = _op_tensors(tflite)
    # LayerNorm statistics and residual sums in float: an int8 MEAN rounds the mean to the residual's (coarse) step,
    # which the Keras fake-quant graph does not do (MiniLM: Keras-vs-file agreement 0.89)
    assert [op for op, ins, _ in ops if op in ("MEAN", "ADD") and ins[0]["dtype"] != np.float32] == []
    # attention probabilities in TFLite's softmax int8 format (scale 1/256, zero point -128), quantized once: a learned
    # 1/255 range would be requantized after a first 1/256 rounding, which Keras does not simulate
    softmax = [outs[0]["index"] for op, _, outs in ops if op == "SOFTMAX"]
    quantized = [outs[0]["quantization"] for op, ins, outs in ops if op == "QUANTIZE" and ins[0]["index"] in softmax]
    assert quantized and all(abs(s - 1 / 256) < 1e-9 and z == -128 for s, z in quantized)
    assert [op for op, ins, _ in ops if op == "QUANTIZE" and ins[0]["dtype"] == np.int8
            and abs(ins[0]["quantization"][0] - 1 / 256) < 1e-9] == []
    tables = [ins[0] for op, ins, _ in ops if op == "GATHER"]
    assert len(tables) == 2 and all(t["dtype"] == np.int8 for t in tables)  # word and type tables stored int8


def test_agrees_with_keras_on_padded_inputs_with_a_residual_outlier(float_model, toy):
    """A BERT-like outlier dimension in the residual stream (one channel ~25x the others, as MiniLM's FFN outputs);
    the file must compute what Keras simulated, padding included."""
    model = _copy(float_model)
    for i in range(CONFIG.num_layers):
        layer = model.get_layer(f"layer_{i}_output")
        kernel, bias = layer.get_weights()
        bias[3] += 25.0
        layer.set_weights([kernel, bias])
    test = toy[1]
    assert test.features["input_mask"].mean() < 0.8  # real padding in the examples
    q = quantization.quantize(model)
    quantization.calibrate(q, toy[0], num_batches=4, batch_size=16)
    tflite = to_tflite(q, SEQ)
    _assert_residual_float_and_tables_int8(tflite)
    keras_logits, lite_logits = predict_logits(q, test), export.evaluate(tflite, test)
    assert np.mean(keras_logits.argmax(-1) == lite_logits.argmax(-1)) >= 0.97
    spread = float(keras_logits.max() - keras_logits.min())
    assert np.abs(keras_logits - lite_logits).mean() <= 0.02 * spread


def _with_outlier(float_model, channel=3, shift=25.0):
    model = _copy(float_model)
    for i in range(CONFIG.num_layers):
        layer = model.get_layer(f"layer_{i}_output")
        kernel, bias = layer.get_weights()
        bias[channel] += shift
        layer.set_weights([kernel, bias])
    return model


@pytest.mark.large  # slowest tier (kept out of the default suite to hold it near 20 min): pass --run-large
def test_outlier_channels_get_their_own_int8_fully_connected(float_model, toy, tmp_path):
    """MiniLM's FFN outputs carry a channel ~100x the others: split apart, the other channels keep a fine int8 step,
    every FULLY_CONNECTED stays int8 and the file still computes what Keras simulated."""
    model = _with_outlier(float_model)
    found = quantization.find_outlier_channels(model, toy[0], batch_size=16)
    assert found == {f"layer_{i}_output": [3] for i in range(CONFIG.num_layers)}
    split = quantization.split_channels(model, found)
    x, _ = toy[1].batch(np.arange(8))
    np.testing.assert_allclose(split(x).numpy(), model(x).numpy(), atol=1e-5)  # the same function in float
    assert quantization.split_of(split) == found

    q = quantization.quantize(model, outlier_channels=found)
    quantization.calibrate(q, toy[0], num_batches=4, batch_size=16)
    tflite = to_tflite(q, SEQ)
    assert int8_fractions(tflite) == {"FULLY_CONNECTED": 1.0, "BATCH_MATMUL": 1.0}
    assert export.op_histogram(tflite)["int8"]["FULLY_CONNECTED"]["total"] == 8 * CONFIG.num_layers + 2
    fc_scales = {t["name"]: t["quantization"][0] for op, _, outs in _op_tensors(tflite) if op == "FULLY_CONNECTED"
                 for t in outs}
    normal = [v for k, v in fc_scales.items() if "layer_0_output/" in k]
    outlier = [v for k, v in fc_scales.items() if "layer_0_output_outliers/" in k]
    # the ordinary channels are not rounded to the outlier's step
    assert normal and outlier and normal[0] < outlier[0] / 5
    test = toy[1]
    keras_logits, lite_logits = predict_logits(q, test), export.evaluate(tflite, test)
    assert np.mean(keras_logits.argmax(-1) == lite_logits.argmax(-1)) >= 0.97

    # the split-off columns stay zero while fitting, and the split survives a reload
    fit_classifier(q, _head(toy[0], 32), epochs=1, batch_size=16, learning_rate=1e-3, verbose=0)
    kernel = [w for w in q.get_layer("quant_layer_0_output").weights if w.name.split("/")[-1] == "kernel:0"][0].numpy()
    assert np.all(kernel[:, 3] == 0)
    path = tmp_path / "split.keras"
    q.save(path)
    with quantization.quantize_scope():
        reloaded = keras.models.load_model(path)
    assert quantization.split_of(reloaded) == found
    np.testing.assert_allclose(reloaded(x).numpy(), q(x).numpy(), atol=1e-5)


def _with_norm_and_unit_outliers(float_model, channel=5, unit=7):
    """MiniLM-like outliers: one LayerNorm output channel ~10x the others and one FFN intermediate unit ~10x."""
    model = _copy(float_model)
    for i in range(CONFIG.num_layers):
        norm = model.get_layer(f"layer_{i}_attention_layer_norm")
        gamma, beta = norm.get_weights()
        gamma[channel] *= 10.0
        norm.set_weights([gamma, beta])
        inner = model.get_layer(f"layer_{i}_intermediate")
        kernel, bias = inner.get_weights()
        kernel[:, unit] *= 4.0
        bias[unit] += 8.0
        inner.set_weights([kernel, bias])
    return model


@pytest.mark.large  # slowest tier (kept out of the default suite to hold it near 20 min): pass --run-large
def test_smoothing_gives_outlier_norms_and_units_a_finer_int8_step(float_model, toy, tmp_path):
    """LayerNorm outlier channels scaled down into the next kernels, FFN outlier units computed apart: the same
    function in float, every matmul still int8, finer int8 steps on the LayerNorm and GELU outputs."""
    model = _with_norm_and_unit_outliers(float_model)
    scales = quantization.layer_norm_scales(model, toy[0], batch_size=16)
    units = quantization.find_outlier_channels(model, toy[0], quantization.OUTLIER_UNITS, batch_size=16)
    assert units == {f"layer_{i}_intermediate": [7] for i in range(CONFIG.num_layers)}
    for i in range(CONFIG.num_layers):
        s = scales[f"layer_{i}_attention_layer_norm"]
        assert s[5] > 2 and s[5] == s.max()  # the outlier channel is divided the most
    smooth = quantization.split_units(quantization.smooth_layer_norms(model, scales), units)
    x, _ = toy[1].batch(np.arange(8))
    np.testing.assert_allclose(smooth(x).numpy(), model(x).numpy(), atol=1e-4)  # the same function in float
    assert sorted(quantization.smoothed_layer_norms(smooth)) == sorted(scales)
    assert smooth.get_layer("layer_0_intermediate_outliers").units == 1

    def steps(q):
        tflite = to_tflite(q, SEQ)
        scale = {t["name"]: t["quantization"][0] for op, _, outs in _op_tensors(tflite) for t in outs
                 if t["dtype"] == np.int8}
        norm = max(v for k, v in scale.items() if "layer_0_attention_layer_norm/" in k)
        gelu = max(v for k, v in scale.items() if "layer_0_intermediate/" in k and "Gelu" in k)
        return tflite, norm, gelu

    plain = quantization.quantize(model)
    quantization.calibrate(plain, toy[0], num_batches=4, batch_size=16)
    smoothed = quantization.quantize(model, layer_norm_scales=scales, outlier_units=units)
    quantization.calibrate(smoothed, toy[0], num_batches=4, batch_size=16)
    _, plain_norm, plain_gelu = steps(plain)
    tflite, norm, gelu = steps(smoothed)
    assert norm < plain_norm / 2 and gelu < plain_gelu / 2
    assert int8_fractions(tflite) == {"FULLY_CONNECTED": 1.0, "BATCH_MATMUL": 1.0}
    test = toy[1]
    keras_logits, lite_logits = predict_logits(smoothed, test), export.evaluate(tflite, test)
    assert np.mean(keras_logits.argmax(-1) == lite_logits.argmax(-1)) >= 0.97
    assert np.mean(keras_logits.argmax(-1) == test.labels) >= accuracy(model, test) - 0.05

    # the split-off units stay zero while fitting; the smoothing survives a reload
    fit_classifier(smoothed, _head(toy[0], 32), epochs=1, batch_size=16, learning_rate=1e-3, verbose=0)
    kernel = [w for w in smoothed.get_layer("quant_layer_0_intermediate").weights
              if w.name.split("/")[-1] == "kernel:0"][0].numpy()
    assert np.all(kernel[:, 7] == 0)
    path = tmp_path / "smooth.keras"
    smoothed.save(path)
    with quantization.quantize_scope():
        reloaded = keras.models.load_model(path)
    assert sorted(quantization.smoothed_layer_norms(reloaded)) == sorted(scales)
    np.testing.assert_allclose(reloaded(x).numpy(), smoothed(x).numpy(), atol=1e-5)


def test_qat_fit_smooths_by_default(float_model, toy):
    model = _with_norm_and_unit_outliers(float_model)
    q, _ = quantization.qat_fit(model, _head(toy[0], 64), epochs=1, batch_size=16, learning_rate=1e-4, verbose=0)
    assert quantization.smoothed_layer_norms(q)  # the LayerNorm outlier channel was scaled down
    assert all(f"layer_{i}_intermediate" in quantization.split_of(q) for i in range(CONFIG.num_layers))  # unit 7 apart
    plain, _ = quantization.qat_fit(model, _head(toy[0], 64), epochs=1, batch_size=16, learning_rate=1e-4, verbose=0,
                                    smooth=None)
    assert not quantization.smoothed_layer_norms(plain) and "layer_0_intermediate" not in quantization.split_of(plain)


@pytest.mark.large  # slowest tier (kept out of the default suite to hold it near 20 min): pass --run-large
def test_qat_fit_distills_from_the_float_model(float_model, toy):
    before = [w.copy() for w in float_model.get_weights()]
    q, history = quantization.qat_fit(float_model, _head(toy[0], 64), epochs=1, batch_size=16, learning_rate=1e-4,
                                      verbose=0)
    assert "distillation_loss" in history.history and np.isfinite(history.history["distillation_loss"][0])
    assert float_model.trainable and all(np.array_equal(a, b) for a, b in zip(before, float_model.get_weights()))
    assert np.mean(predict_logits(q, toy[1]).argmax(-1) == toy[1].labels) >= accuracy(float_model, toy[1]) - 0.05
    assert int8_fractions(to_tflite(q, SEQ)) == {"FULLY_CONNECTED": 1.0, "BATCH_MATMUL": 1.0}
    _, labels_only = quantization.qat_fit(float_model, _head(toy[0], 32), epochs=1, batch_size=16, verbose=0,
                                          distill=False)
    assert "distillation_loss" not in labels_only.history
    with pytest.raises(ValueError, match="distill='yes'"):
        quantization.qat_fit(float_model, toy[0], distill="yes")


@pytest.mark.large  # slowest tier (kept out of the default suite to hold it near 20 min): pass --run-large
def test_qat_fit_takes_a_config_with_keyword_overrides(float_model, toy):
    """`config=QATConfig(...)` sets the fit; keyword overrides win over it; a dict of outlier channels found
    beforehand is still accepted for `outlier_channels` (split as given, none searched)."""
    from tfspeed.compress.quantization import QATConfig

    model = _with_norm_and_unit_outliers(_with_outlier(float_model))
    config = QATConfig(epochs=2, batch_size=16, smooth="none", outlier_channels="none", calibration_batches=2,
                       freeze_ranges=False, distill=False)
    q, history = quantization.qat_fit(model, _head(toy[0], 32), config=config, learning_rate=1e-4, verbose=0)
    assert len(history.history["loss"]) == 2 and "distillation_loss" not in history.history
    assert quantization.is_quantized(q)
    assert quantization.split_of(q) == {} and quantization.smoothed_layer_norms(q) == []  # nothing searched
    assert all(qq.ema_decay == 0.999 for qq in _range_quantizers(q))  # freeze_ranges=False: the EMA goes on
    assert config.learning_rate == 2e-5  # the override did not change the caller's config
    given = {"layer_0_output": [3]}
    q, _ = quantization.qat_fit(model, _head(toy[0], 32), config=config, epochs=1, outlier_channels=given,
                                freeze_ranges=True, verbose=0)
    assert quantization.split_of(q) == given
    assert all(qq.ema_decay == 1.0 for qq in _range_quantizers(q))


def test_smoothing_refuses_bad_input(float_model, toy):
    with pytest.raises(ValueError, match="'layer_0_output' is not a Dense layer of `model` feeding exactly one Dense"):
        quantization.split_units(float_model, {"layer_0_output": [1]})
    with pytest.raises(ValueError, match=r"units\['layer_0_intermediate'\].*\[0, 48\)"):
        quantization.split_units(float_model, {"layer_0_intermediate": [48]})
    with pytest.raises(ValueError, match="'layer_0_query' is not a LayerNormalization"):
        quantization.smooth_layer_norms(float_model, {"layer_0_query": np.ones(32)})
    with pytest.raises(ValueError, match="weight_growth=0.5"):
        quantization.layer_norm_scales(float_model, toy[0], weight_growth=0.5)
    with pytest.raises(ValueError, match="smooth='yes'"):
        quantization.qat_fit(float_model, toy[0], smooth="yes")


def _with_outlier_head(float_model, head=1, factor=12.0):
    """MiniLM layer 0-like: one attention head whose raw scores are ~10x the others' (its query columns scaled)."""
    model = _copy(float_model)
    size = CONFIG.hidden_size // CONFIG.num_heads
    query = model.get_layer("layer_0_query")
    kernel, bias = query.get_weights()
    kernel[:, head * size:(head + 1) * size] *= factor
    bias[head * size:(head + 1) * size] *= factor
    query.set_weights([kernel, bias])
    return model


@pytest.mark.large  # slowest tier (kept out of the default suite to hold it near 20 min): pass --run-large
def test_outlier_heads_get_their_own_int8_batch_matmul(float_model, toy, tmp_path):
    """A head with outlier scores computed apart: the same function in float (heads reordered exactly), the other
    heads' scores get a finer int8 step, every matmul stays int8, the file agrees, the split survives a reload."""
    from tfspeed.models.bert import config_of

    model = _with_outlier_head(float_model)
    heads = quantization.find_outlier_heads(model, toy[0], batch_size=16)
    assert heads == {"layer_0_scores": [1]}
    assert quantization.find_outlier_heads(float_model, toy[0], batch_size=16) == {}
    split = quantization.split_heads(model, heads)
    x, _ = toy[1].batch(np.arange(8))
    np.testing.assert_allclose(split(x).numpy(), model(x).numpy(), atol=1e-4)
    assert split.get_layer("layer_0_scores").num_heads == CONFIG.num_heads - 1
    assert quantization.split_heads_of(split) == {"layer_0_scores": 1}
    assert config_of(split).layer_num_heads == config_of(model).layer_num_heads  # still 4 heads per layer

    def score_steps(q):
        tflite = to_tflite(q, SEQ)
        steps = [outs[0]["quantization"][0] for op, _, outs in _op_tensors(tflite)
                 if op == "BATCH_MATMUL" and "layer_0_scores" in outs[0]["name"]]
        return tflite, steps

    plain = quantization.quantize(model)
    quantization.calibrate(plain, toy[0], num_batches=4, batch_size=16)
    apart = quantization.quantize(model, outlier_heads=heads)
    quantization.calibrate(apart, toy[0], num_batches=4, batch_size=16)
    _, (plain_step,) = score_steps(plain)
    tflite, steps = score_steps(apart)
    assert len(steps) == 2 and min(steps) < plain_step / 4 and max(steps) >= plain_step / 2
    assert int8_fractions(tflite) == {"FULLY_CONNECTED": 1.0, "BATCH_MATMUL": 1.0}
    test = toy[1]
    keras_logits, lite_logits = predict_logits(apart, test), export.evaluate(tflite, test)
    assert np.mean(keras_logits.argmax(-1) == lite_logits.argmax(-1)) >= 0.97
    path = tmp_path / "heads.keras"
    apart.save(path)
    with quantization.quantize_scope():
        reloaded = keras.models.load_model(path)
    assert quantization.split_heads_of(reloaded) == {"layer_0_scores": 1}
    np.testing.assert_allclose(reloaded(x).numpy(), apart(x).numpy(), atol=1e-5)


def test_split_heads_refuses_bad_heads(float_model, toy):
    with pytest.raises(ValueError, match="'layer_0_query' is not an attention scores layer"):
        quantization.split_heads(float_model, {"layer_0_query": [1]})
    with pytest.raises(ValueError, match=r"heads\['layer_0_scores'\].*\[0, 4\).*\[0, 1, 2, 3\]"):
        quantization.split_heads(float_model, {"layer_0_scores": [0, 1, 2, 3]})
    with pytest.raises(ValueError, match="expected a dict"):
        quantization.split_heads(float_model, [1])
    with pytest.raises(ValueError, match="ratio=1"):
        quantization.find_outlier_heads(float_model, toy[0], ratio=1)


def test_split_channels_refuses_bad_channels(float_model):
    with pytest.raises(ValueError, match="'layer_0_softmax' is not a Dense layer"):
        quantization.split_channels(float_model, {"layer_0_softmax": [1]})
    with pytest.raises(ValueError, match=r"channels\['layer_0_output'\].*\[0, 32\)"):
        quantization.split_channels(float_model, {"layer_0_output": [40]})
    with pytest.raises(ValueError, match="ratio"):
        quantization.find_outlier_channels(float_model, None, ratio=0.5)


def test_float_outputs_keep_the_ffn_output_projections_float(float_model, toy):
    q = quantization.quantize(float_model, float_outputs=quantization.OUTLIER_OUTPUTS)
    wrapped = _wrapped(q)
    for i in range(CONFIG.num_layers):
        assert wrapped[f"layer_{i}_output"].quantize_config.activation_attrs == []  # no output range
        assert wrapped[f"layer_{i}_intermediate"].quantize_config.activation_attrs == ["activation"]
    quantization.calibrate(q, toy[0], num_batches=2, batch_size=16)
    tflite = to_tflite(q, SEQ)
    counts = export.op_histogram(tflite)["int8"]
    assert counts["FULLY_CONNECTED"]["int8"] == counts["FULLY_CONNECTED"]["total"] - CONFIG.num_layers
    assert counts["BATCH_MATMUL"]["int8"] == counts["BATCH_MATMUL"]["total"]
    test = _head(toy[1], 40)
    agree = np.mean(predict_logits(q, test).argmax(-1) == export.evaluate(tflite, test).argmax(-1))
    assert agree >= 0.97
    with pytest.raises(ValueError, match="float_outputs='layer_0_output'"):
        quantization.quantize(float_model, float_outputs="layer_0_output")


def test_calibrate_replaces_tfmot_initial_ranges_with_the_data_ranges(float_model, toy):
    q = quantization.quantize(float_model)
    norm = _wrapped(q)["layer_0_attention_layer_norm"]
    assert [float(v) for v in norm._output_quantizer_vars.values()] == [-6.0, 6.0]  # TFMOT's start
    x, _ = toy[1].batch(np.arange(len(toy[1])))
    before = np.abs(q(x, training=False).numpy() - float_model(x, training=False).numpy()).max()
    assert quantization.calibrate(q, toy[0], num_batches=4, batch_size=16) == 4
    low, high = (float(v) for v in norm._output_quantizer_vars.values())
    assert low < 0 < high and (low, high) != (-6.0, 6.0)
    after = np.abs(q(x, training=False).numpy() - float_model(x, training=False).numpy()).max()
    assert after < before / 3  # measured: 0.006 after vs 0.65 before on this toy model
    assert all(qq.ema_decay == 0.999 for qq in _range_quantizers(q))  # restored for fit
    with pytest.raises(ValueError, match="num_batches=0"):
        quantization.calibrate(q, toy[0], num_batches=0)


def test_percentile_calibration_narrows_ranges_and_freeze_keeps_them_through_fit(float_model, toy):
    ranges = lambda m: {n: [float(v) for v in l._output_quantizer_vars.values()]  # noqa: E731
                        for n, l in _wrapped(m).items() if getattr(l, "_output_quantizer_vars", None)}
    full, clipped = quantization.quantize(float_model), quantization.quantize(float_model)
    quantization.calibrate(full, toy[0], num_batches=4, batch_size=16)
    quantization.calibrate(clipped, toy[0], num_batches=4, batch_size=16, percentile=99.0, freeze=True)
    a, b = ranges(full), ranges(clipped)
    assert a.keys() == b.keys() and a
    width = {n: (a[n][1] - a[n][0], b[n][1] - b[n][0]) for n in a}
    assert all(w_clip <= w_full + 1e-6 for w_full, w_clip in width.values())
    assert any(w_clip < 0.9 * w_full for w_full, w_clip in width.values())  # the extremes were clipped somewhere
    assert all(q.ema_decay == 1.0 for q in _range_quantizers(clipped))
    fit_classifier(clipped, toy[0], epochs=1, batch_size=16, learning_rate=1e-4, verbose=0)
    after = ranges(clipped)  # frozen through fit: an EMA with decay 1.0 keeps old * 1 + new * 0, exact in float32
    assert after.keys() == b.keys()
    for name in b:
        np.testing.assert_allclose(after[name], b[name], rtol=1e-6, atol=0, err_msg=name)
    tflite = to_tflite(clipped, SEQ)
    assert int8_fractions(tflite) == {"FULLY_CONNECTED": 1.0, "BATCH_MATMUL": 1.0}
    agree = np.mean(export.evaluate(tflite, toy[1]).argmax(-1) == predict_logits(clipped, toy[1]).argmax(-1))
    assert agree >= 0.97
    with pytest.raises(ValueError, match=r"`percentile`, expected a number in \(50, 100\).*Received: percentile=100"):
        quantization.calibrate(clipped, toy[0], percentile=100)


def test_to_tflite_refuses_a_float_model_and_a_bad_seq_length(float_model, qat_model):
    with pytest.raises(ValueError, match="Expected a QAT model"):
        to_tflite(float_model, SEQ)
    with pytest.raises(ValueError, match="seq_length=0"):
        to_tflite(qat_model, 0)


def test_save_and_reload_with_quantize_scope(qat_model, toy, tmp_path):
    path = tmp_path / "qat.keras"
    qat_model.save(path)
    with quantization.quantize_scope():
        loaded = keras.models.load_model(path)
    x, _ = toy[1].batch(np.arange(8))
    np.testing.assert_allclose(loaded(x, training=False), qat_model(x, training=False), atol=1e-6)
    assert quantization.is_quantized(loaded)


def test_quantize_configs_round_trip():
    config = quantization.OutputQuantizeConfig(num_bits=7, symmetric=True)
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(config))
    assert isinstance(restored, quantization.OutputQuantizeConfig)
    assert restored.get_config() == {"num_bits": 7, "symmetric": True, "fixed_range": None}
    dense = quantization.DenseQuantizeConfig(preserve_sparsity=True)
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(dense))
    assert restored == dense and isinstance(restored.weight_quantizer, quantization.SparsityPreservingQuantizer)
    assert not isinstance(quantization.DenseQuantizeConfig().weight_quantizer, quantization.SparsityPreservingQuantizer)
    quantizer = quantization.SparsityPreservingQuantizer(num_bits=6, narrow_range=False)
    assert quantization.SparsityPreservingQuantizer.from_config(quantizer.get_config()) == quantizer
    ranges = quantization.RangeQuantizer(num_bits=7, symmetric=True, ema_decay=0.99)
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(ranges))
    assert restored == ranges and restored.ema_decay == 0.99
    with pytest.raises(ValueError, match="ema_decay=1.5"):
        quantization.RangeQuantizer(ema_decay=1.5)
    with pytest.raises(ValueError, match="num_bits=9"):
        quantization.OutputQuantizeConfig(num_bits=9)
    embedding = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(
        quantization.EmbeddingQuantizeConfig(num_bits=6)))
    assert embedding == quantization.EmbeddingQuantizeConfig(num_bits=6)
    float_config = quantization.FloatQuantizeConfig()
    assert keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(float_config)) == \
        quantization.FloatQuantizeConfig()
    with pytest.raises(ValueError, match="num_bits=1"):
        quantization.EmbeddingQuantizeConfig(num_bits=1)
    quantization.OutputQuantizeConfig(num_bits=8)  # the upper limit itself is fine
    fixed = quantization.OutputQuantizeConfig(fixed_range=quantization.SOFTMAX_RANGE)
    assert keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(fixed)) == fixed
    with pytest.raises(ValueError, match=r"fixed_range=\(1, 0\)"):
        quantization.OutputQuantizeConfig(fixed_range=(1, 0))


def _dense_kernels(model):
    """The float kernel variables (inside a QAT wrapper, `layer.kernel` is the fake-quantized tensor)."""
    out = {}
    for layer in model.layers:
        inner = getattr(layer, "layer", layer)
        if isinstance(inner, keras.layers.Dense):
            kernel = layer._weight_vars[0][0] if hasattr(layer, "_weight_vars") else inner.kernel
            out[inner.name] = kernel.numpy()
    return out


def _pruned_copy(model, sparsity=0.5):
    pruned = _copy(model)
    for layer in pruned.layers:
        if isinstance(layer, keras.layers.Dense):
            kernel, bias = layer.get_weights()
            kernel[np.abs(kernel) < np.quantile(np.abs(kernel), sparsity)] = 0.0
            layer.set_weights([kernel, bias])
    return pruned


@pytest.mark.large  # slowest tier (kept out of the default suite to hold it near 20 min): pass --run-large
def test_preserve_sparsity_keeps_zeros_through_fit_reload_and_int8_file(float_model, toy, tmp_path):
    pruned = _pruned_copy(float_model)
    kept, _ = quantization.qat_fit(pruned, toy[0], epochs=1, batch_size=16, learning_rate=1e-3, preserve_sparsity=True,
                                   verbose=0)
    for name, kernel in _dense_kernels(kept).items():
        assert np.mean(kernel == 0) >= 0.5, name
    # without the prune-preserving scheme the same fit fills the zeros back in (the contrast the option exists for)
    lost, _ = quantization.qat_fit(pruned, _head(toy[0], 96), epochs=1, batch_size=16, learning_rate=1e-3, verbose=0)
    assert np.mean([np.mean(k == 0) for k in _dense_kernels(lost).values()]) < 0.1
    # the mask is a saved variable: a reloaded model keeps preserving
    kept.save(tmp_path / "kept.keras")
    with quantization.quantize_scope():
        loaded = keras.models.load_model(tmp_path / "kept.keras")
    masks = [w.numpy() for w in loaded.weights if "sparsity_mask" in w.name]
    assert len(masks) == 6 * CONFIG.num_layers + 2 and all(np.mean(m == 0) >= 0.5 for m in masks)
    # and the zeros are in the int8 file: weights of every FULLY_CONNECTED at least half zeros
    tflite = to_tflite(kept, SEQ)
    assert int8_fractions(tflite)["FULLY_CONNECTED"] == 1.0
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_content=tflite)
    weights = [op["inputs"][1] for op in it._get_ops_details() if op["op_name"] == "FULLY_CONNECTED"]
    zero_fractions = [np.mean(it.get_tensor(i) == 0) for i in weights]
    assert len(zero_fractions) == 6 * CONFIG.num_layers + 2 and min(zero_fractions) >= 0.5


@pytest.mark.large  # slowest tier (kept out of the default suite to hold it near 20 min): pass --run-large
def test_qat_fit_under_mirrored_strategy(float_model, toy, mirrored_strategy):
    model, history = quantization.qat_fit(float_model, _head(toy[0], 96), epochs=1, batch_size=16, learning_rate=1e-4,
                                          strategy=mirrored_strategy, verbose=0)
    kernel = _wrapped(model)["layer_0_query"]._weight_vars[0][0]
    assert isinstance(kernel, tf.distribute.DistributedValues) and len(kernel.values) == 2
    assert np.isfinite(history.history["loss"]).all()
    assert accuracy(model, toy[1]) >= 0.9


def test_unsupported_layers_are_listed_with_what_to_do(float_model):
    doubled = keras.layers.Lambda(lambda x: x * 2.0, name="double_logits")(float_model.output)
    model = keras.Model(float_model.input, doubled)
    with pytest.raises(ValueError, match=r"double_logits \(Lambda\).*Rebuild the model as a native tfspeed BERT"):
        quantization.quantize(model)
    assert quantization.unsupported_layers(model) == [("double_logits", "Lambda")]
    assert quantization.unsupported_layers(float_model) == []
    with pytest.raises(ValueError, match="preserve_sparsity='yes'"):
        quantization.quantize(float_model, preserve_sparsity="yes")
    with pytest.raises(ValueError, match="already wrapped by TFMOT"):
        quantization.quantize(quantization.quantize(float_model))


def test_hub_layer_model_is_imported_into_the_native_encoder(tmp_path, tiny_config):
    from tfspeed.hub import build_hub_classifier, export_encoder, sample_inputs

    keras.utils.set_random_seed(3)
    handle = export_encoder(build_encoder(tiny_config), tmp_path / "encoder")
    hub_model = build_hub_classifier(str(handle), num_classes=3)
    for v in hub_model.get_layer("encoder").trainable_variables:  # as if fine-tuned: the import must keep these
        v.assign(v * 1.1)
    x = sample_inputs(tiny_config, batch=3, seq_length=12)
    native = quantization.to_native(hub_model)
    np.testing.assert_allclose(native(x, training=False), hub_model(x, training=False), atol=1e-4)
    q = quantization.quantize(hub_model)
    assert quantization.is_quantized(q) and "layer_1_query" in _wrapped(q)
    assert q(x, training=False).shape == (3, 3)


def test_cli_writes_qat_model_tflite_and_metrics(float_model, vocab_file, sentiment_csv, tmp_path, capsys):
    src = tmp_path / "float"
    info = artifacts.ModelInfo(seq_length=SEQ, label_names=["neg", "pos"], base="toy", stage="finetune",
                               vocab_path=str(vocab_file))
    artifacts.save_model_dir(float_model, src, info)
    out = tmp_path / "qat"
    argv = ["qat", str(src), "--data", str(sentiment_csv), "--label-names", "neg,pos", "--epochs", "1",
            "--learning-rate", "1e-4", "--batch-size", "16", "--limit", "160", "--out", str(out)]
    assert cli.main(argv) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["distill"] is True and "distillation_loss" in metrics["history"]
    assert metrics["accuracy"] >= 0.9 and metrics["tflite_accuracy"] >= 0.9 and metrics["argmax_agreement"] >= 0.97
    assert metrics["int8_fraction"] == {"FULLY_CONNECTED": 1.0, "BATCH_MATMUL": 1.0}
    assert (out / "model_int8.tflite").read_bytes()[4:8] == b"TFL3"
    from tfspeed.export import TextClassifier, read_metadata

    assert read_metadata(out / "model_int8.tflite").labels == ("neg", "pos") and metrics["metadata_bytes"] > 0
    good, bad = TextClassifier(out / "model_int8.tflite").classify(["the movie was great", "the plot was awful"])
    assert (good.label, bad.label) == ("pos", "neg")  # the learnable toy task, on raw text through the int8 file
    loaded, info = artifacts.load_model_dir(out, scope=quantization.custom_objects())
    assert quantization.is_quantized(loaded) and info.stage == "qat" and info.seq_length == SEQ
    assert cli.main(argv) == 1 and "already exists" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(argv[:-2] + ["--calibration-percentile", "100", "--out", str(tmp_path / "bad")])
    err = capsys.readouterr().err
    assert "--calibration-percentile" in err and "expected a percentile in (50, 100)" in err and "'100'" in err
