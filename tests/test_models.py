"""The native BERT: config checks, serialization, TFMOT reachability, parity with an independent numpy BERT."""

import json

import numpy as np
import pytest

from tfspeed.compat import keras
from tfspeed.models import BertConfig, build_classifier, build_encoder, config_of, encoder_of


def test_config_roundtrip_and_defaults(tiny_config):
    assert BertConfig.from_json(tiny_config.to_json()) == tiny_config
    assert tiny_config.head_size == 8
    assert tiny_config.layer_num_heads == (4, 4) and tiny_config.is_uniform
    pruned = tiny_config.replace(layer_num_heads=[2, 3], layer_intermediate_sizes=[10, 48])
    assert not pruned.is_uniform and BertConfig.from_dict(json.loads(pruned.to_json())) == pruned


@pytest.mark.parametrize("kwargs, match", [
    ({"hidden_size": 0}, "hidden_size"),
    ({"num_heads": 5}, "divisible"),
    ({"dropout": 1.0}, "dropout"),
    ({"activation": "swish"}, "activation"),
    ({"num_layers": 2, "layer_num_heads": [1]}, "layer_num_heads"),
])
def test_config_rejects_bad_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        BertConfig(**kwargs)


def test_unknown_config_key_is_named():
    with pytest.raises(ValueError, match="hidden"):
        BertConfig.from_dict({"hidden": 3})


def test_every_dense_is_top_level(tiny_config):
    """TFMOT's clone_function only sees top-level layers: all attention, FFN, pooler and classifier Dense must be."""
    model = build_classifier(tiny_config)
    dense = [l.name for l in model.layers if isinstance(l, keras.layers.Dense)]
    assert len(dense) == 6 * tiny_config.num_layers + 2
    assert not any(isinstance(l, keras.Model) for l in model.layers)
    assert not any(type(l).__name__ in ("Lambda", "TFOpLambda") for l in model.layers)


def test_config_of_reads_back_non_default_config(tiny_config):
    assert config_of(build_classifier(tiny_config)) == tiny_config
    pruned = tiny_config.replace(layer_num_heads=[1, 3], layer_intermediate_sizes=[7, 20])
    read = config_of(build_encoder(pruned))
    assert (read.layer_num_heads, read.layer_intermediate_sizes, read.head_size) == ((1, 3), (7, 20), 8)


def test_encoder_outputs_follow_tf_hub_format(tiny_config, tiny_inputs):
    out = build_encoder(tiny_config)(tiny_inputs)
    assert sorted(out) == ["default", "encoder_outputs", "pooled_output", "sequence_output"]
    assert out["sequence_output"].shape == (3, 12, 32) and out["pooled_output"].shape == (3, 32)
    assert len(out["encoder_outputs"]) == tiny_config.num_layers
    np.testing.assert_array_equal(out["default"], out["pooled_output"])


def test_padding_does_not_change_valid_tokens(tiny_config, tiny_inputs):
    enc = build_encoder(tiny_config)
    x = {k: v[:1] for k, v in tiny_inputs.items()}
    valid = int(x["input_mask"].sum())
    short = {k: v[:, :valid] for k, v in x.items()}
    a = enc(x, training=False)["sequence_output"].numpy()[0, :valid]
    b = enc(short, training=False)["sequence_output"].numpy()[0]
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_keras_save_and_reload_keeps_outputs(tiny_config, tiny_inputs, tmp_path):
    model = build_classifier(tiny_config, num_classes=3)
    path = tmp_path / "m.keras"
    model.save(path)
    again = keras.models.load_model(path)
    np.testing.assert_allclose(model(tiny_inputs, training=False), again(tiny_inputs, training=False), atol=1e-6)
    assert config_of(again) == tiny_config


def test_encoder_of_classifier_shares_weights(tiny_config, tiny_inputs):
    model = build_classifier(tiny_config)
    enc = encoder_of(model)
    assert {id(w) for w in enc.weights} <= {id(w) for w in model.weights}
    assert len(enc.weights) == len(model.weights) - 2


def test_num_classes_is_checked(tiny_config):
    with pytest.raises(ValueError, match="num_classes"):
        build_classifier(tiny_config, num_classes=1)


def test_native_minilm_matches_numpy_reference():
    """Real all-MiniLM-L6-v2 weights: native encoder vs an independent float64 numpy forward pass."""
    from numpy_bert import bert_forward
    from safetensors.numpy import load_file

    from tfspeed.hub import load_encoder, sample_inputs
    from tfspeed.hub.presets import minilm_files

    encoder = load_encoder("minilm-l6")
    x = sample_inputs(config_of(encoder), batch=2, seq_length=24, seed=3)
    ours = encoder(x, training=False)
    ref_seq, ref_pooled = bert_forward(load_file(str(minilm_files() / "model.safetensors")),
                                       x["input_word_ids"], x["input_mask"], x["input_type_ids"], num_heads=12)
    valid = x["input_mask"].astype(bool)
    diff = np.abs(ours["sequence_output"].numpy() - ref_seq)[valid].max()
    assert diff <= 1e-4, diff
    np.testing.assert_allclose(ours["pooled_output"].numpy(), ref_pooled, atol=1e-4)


@pytest.mark.parametrize("mode, atol", [("float32", 1e-4), ("dynamic", 0.05)])
def test_classifier_reloads_and_its_tflite_follows_keras(tiny_config, tiny_inputs, tmp_path, mode, atol):
    """The shared harness checks: `.keras` round trip (outputs equal to 1e-6) and the LiteRT file against Keras
    (float32 within 1e-4: float rounding only; dynamic range within 0.05 on logits of order 1: int8 weights)."""
    import harness

    model = build_classifier(tiny_config, num_classes=3)
    harness.run_save_reload_test(model, tiny_inputs, tmp_path)
    harness.run_litert_parity_test(model, tiny_inputs, mode, atol)
