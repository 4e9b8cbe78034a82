"""TF-Hub format both ways: export, hub.KerasLayer, import (tfspeed and Model Garden layouts), presets, bad handles."""

import numpy as np
import pytest
import tensorflow_hub as hub

from tfspeed import hub as th
from tfspeed.compat import tf
from tfspeed.hub import weights
from tfspeed.models import build_encoder, config_of


@pytest.fixture(scope="module")
def exported(tiny_config, tmp_path_factory, vocab_file):
    enc = build_encoder(tiny_config)
    path = tmp_path_factory.mktemp("hub") / "encoder"
    th.export_encoder(enc, path, vocab_path=vocab_file)
    return enc, path


def test_export_reloads_as_hub_keras_layer_within_1e5(exported, tiny_inputs):
    enc, path = exported
    ours = enc(tiny_inputs, training=False)
    layer = hub.KerasLayer(str(path), trainable=True)
    theirs = layer(tiny_inputs)
    for key in ("pooled_output", "sequence_output", "default"):
        np.testing.assert_allclose(ours[key], theirs[key], atol=1e-5)
    assert len(theirs["encoder_outputs"]) == 2
    assert layer.trainable_weights, "a fine-tunable hub layer has trainable weights"


def test_export_has_serving_signature(exported, tiny_inputs):
    _, path = exported
    fn = tf.saved_model.load(str(path)).signatures["serving_default"]
    out = fn(**{k: tf.constant(v) for k, v in tiny_inputs.items()})
    assert {"pooled_output", "sequence_output", "default", "encoder_outputs_0", "encoder_outputs_1"} <= set(out)


def test_import_roundtrip(exported, tiny_inputs, tiny_config):
    enc, path = exported
    again = th.import_encoder(str(path))
    assert config_of(again) == tiny_config
    np.testing.assert_allclose(enc(tiny_inputs)["sequence_output"], again(tiny_inputs)["sequence_output"], atol=1e-6)


def test_export_refuses_to_overwrite(exported):
    enc, path = exported
    with pytest.raises(FileExistsError, match="overwrite"):
        th.export_encoder(enc, path)


def _to_garden(weight_map, config):
    """Native weights written the Model Garden way (3-D EinsumDense kernels), to test the reverse mapping."""
    h, n, d = config.hidden_size, config.num_heads, config.head_size
    out = {"word_embeddings/embeddings": weight_map["word_embeddings"][0],
           "position_embedding/embeddings": weight_map["position_embedding"][0],
           "type_embeddings/embeddings": weight_map["type_embeddings"][0],
           "embeddings/layer_norm/gamma": weight_map["embeddings_layer_norm"][0],
           "embeddings/layer_norm/beta": weight_map["embeddings_layer_norm"][1],
           "pooler_transform/kernel": weight_map["pooler_dense"][0],
           "pooler_transform/bias": weight_map["pooler_dense"][1]}
    for i in range(config.num_layers):
        t = f"transformer/layer_{i}/"
        for name in ("query", "key", "value"):
            k, b = weight_map[f"layer_{i}_{name}"]
            out[t + f"self_attention/{name}/kernel"] = k.reshape(h, n, d)
            out[t + f"self_attention/{name}/bias"] = b.reshape(n, d)
        k, b = weight_map[f"layer_{i}_attention_output"]
        out[t + "self_attention/attention_output/kernel"] = k.reshape(n, d, h)
        out[t + "self_attention/attention_output/bias"] = b
        for src, dst in (("attention_layer_norm", "self_attention_layer_norm"),
                         ("output_layer_norm", "output_layer_norm")):
            out[t + dst + "/gamma"], out[t + dst + "/beta"] = weight_map[f"layer_{i}_{src}"]
        for name in ("intermediate", "output"):
            out[t + name + "/kernel"], out[t + name + "/bias"] = weight_map[f"layer_{i}_{name}"]
    return out


def test_model_garden_layout_maps_back_exactly(tiny_config, tiny_inputs):
    enc = build_encoder(tiny_config)
    native = {l.name: l.get_weights() for l in enc.layers if l.weights}
    garden = _to_garden(native, tiny_config)
    assert weights.is_model_garden(garden)
    cfg = weights.garden_config(garden)
    assert (cfg.num_heads, cfg.head_size, cfg.num_layers, cfg.intermediate_size) == (4, 8, 2, 48)
    again = build_encoder(cfg.replace(max_positions=tiny_config.max_positions, type_vocab_size=3))
    weights.assign(again, weights.from_model_garden(garden))
    np.testing.assert_allclose(enc(tiny_inputs)["sequence_output"], again(tiny_inputs)["sequence_output"], atol=1e-6)


def test_preprocessor_export_matches_tokenizer(vocab_file, tmp_path):
    from tfspeed.data import Tokenizer

    path = th.export_preprocessor(vocab_file, tmp_path / "pre", seq_length=10)
    texts = np.array(["The movie was good!", "unable bad film , very very very very very very very long"])
    out = hub.KerasLayer(str(path))(tf.constant(texts))
    ref = Tokenizer(vocab_file, seq_length=10).encode(list(texts))
    for key in ("input_word_ids", "input_mask", "input_type_ids"):
        np.testing.assert_array_equal(out[key].numpy(), ref[key])
    assert out["input_word_ids"].shape == (2, 10)


def test_hub_classifier_fits(exported, tiny_inputs):
    _, path = exported
    model = th.build_hub_classifier(str(path), num_classes=2)
    model.compile(optimizer="adam", loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    before = [w.numpy().copy() for w in model.trainable_weights]
    model.fit(tiny_inputs, np.array([0, 1, 0]), epochs=1, verbose=0)
    changed = sum(not np.allclose(a, w.numpy()) for a, w in zip(before, model.trainable_weights))
    assert changed > 10, "the hub encoder's weights are trained, not only the head"


@pytest.mark.parametrize("handle, match", [
    ("no-such-preset", "preset name"),
    (".", "saved_model.pb"),
])
def test_bad_handles_are_named(handle, match):
    with pytest.raises(ValueError, match=match):
        th.resolve(handle)


def test_import_of_a_non_bert_saved_model_is_refused(tmp_path):
    module = tf.Module()
    module.v = tf.Variable(tf.zeros([3]), name="something")
    module.f = tf.function(lambda x: x + module.v, input_signature=[tf.TensorSpec([3], tf.float32)])
    tf.saved_model.save(module, str(tmp_path / "m"))
    with pytest.raises(ValueError, match="not a BERT encoder"):
        th.import_encoder(str(tmp_path / "m"))


def test_minilm_preset_resolves_to_a_hub_handle_matching_native():
    path = th.resolve("minilm-l6")
    enc = th.load_encoder("minilm-l6")
    x = th.sample_inputs(config_of(enc), seq_length=16)
    diff = np.abs(hub.KerasLayer(path)(x)["sequence_output"].numpy() - enc(x)["sequence_output"].numpy()).max()
    assert diff <= 1e-5, diff
