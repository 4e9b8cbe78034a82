"""Structured pruning: the slicing is exact (nothing removed -> identical outputs; removing heads / units whose weights
are zero -> identical outputs), Taylor and magnitude scores find dead heads, the smaller model exports to TF-Hub and
TFLite with matching outputs, fine-tunes, and bad input gets clear errors."""

import numpy as np
import pytest

from tfspeed.compat import keras
from tfspeed.compress import structured as S
from tfspeed.hub import export_encoder, sample_inputs
from tfspeed.models import build_classifier, build_encoder, config_of

HS = 8  # head_size of tiny_config: 32 / 4


@pytest.fixture(scope="module")
def batch(tiny_config):
    x = sample_inputs(tiny_config, batch=16, seq_length=12, seed=5)
    return x, (x["input_word_ids"][:, 1] % 2).astype(np.int32)


def _classifier(config, seed=0):
    keras.utils.set_random_seed(seed)
    model = build_classifier(config)
    rng = np.random.default_rng(seed)
    for layer in model.layers:  # non-zero biases and layer norms, so a wrong copy shows
        if layer.weights:
            layer.set_weights([w + rng.normal(0, 0.05, w.shape).astype(w.dtype) for w in layer.get_weights()])
    return model


def _kill(model, dead_heads, dead_units):
    """Zero the weights of heads {(layer, head)} and FFN units {(layer, unit)}: their contribution is exactly zero."""
    for i, h in dead_heads:
        cols = slice(h * HS, (h + 1) * HS)
        for part in ("query", "key", "value"):
            layer = model.get_layer(f"layer_{i}_{part}")
            k, b = layer.get_weights()
            k[:, cols], b[cols] = 0, 0
            layer.set_weights([k, b])
        layer = model.get_layer(f"layer_{i}_attention_output")
        k, b = layer.get_weights()
        k[cols] = 0
        layer.set_weights([k, b])
    for i, u in dead_units:
        for name, axis in (("intermediate", 1), ("output", 0)):
            layer = model.get_layer(f"layer_{i}_{name}")
            k, b = layer.get_weights()
            if axis == 1:
                k[:, u], b[u] = 0, 0
            else:
                k[u] = 0
            layer.set_weights([k, b])


def test_nothing_removed_gives_identical_outputs(tiny_config, batch):
    model = _classifier(tiny_config)
    same = S.prune_structured(model, heads=0.0, ffn=0.0, method="magnitude")
    assert config_of(same) == config_of(model)
    np.testing.assert_array_equal(same(batch[0]).numpy(), model(batch[0]).numpy())


@pytest.mark.parametrize("method", ["taylor", "magnitude"])
def test_dead_heads_and_units_are_found_and_removed_exactly(tiny_config, batch, method):
    model = _classifier(tiny_config, seed=1)
    dead_heads, dead_units = {(0, 2), (1, 1)}, {(0, 5), (0, 7), (1, 40)}
    _kill(model, dead_heads, dead_units)
    scores = S.importance(model, method, data=batch)
    for i, h in dead_heads:
        assert scores.heads[i][h] == 0.0 and scores.heads[i].min() == 0.0
    assert all(scores.ffn[i][u] == 0.0 for i, u in dead_units)
    # 2 of 8 heads, 3 of 96 units: exactly the dead ones go (global ranking)
    small, plan = S.prune_structured(model, heads=0.25, ffn=3 / 96, method=method, data=batch, return_plan=True)
    assert plan.heads == [[0, 1, 3], [0, 2, 3]]
    assert [len(f) for f in plan.ffn] == [46, 47] and 5 not in plan.ffn[0] and 40 not in plan.ffn[1]
    config = config_of(small)
    assert config.layer_num_heads == (3, 3) and config.layer_intermediate_sizes == (46, 47)
    assert small.get_layer("layer_0_query").kernel.shape == (32, 3 * HS)
    assert small.get_layer("layer_0_attention_output").kernel.shape == (3 * HS, 32)
    assert small.get_layer("layer_1_output").kernel.shape == (47, 32)
    np.testing.assert_allclose(small(batch[0]).numpy(), model(batch[0]).numpy(), atol=1e-5)


def test_removing_a_layer_and_per_layer_ranking(tiny_config, batch):
    model = _classifier(tiny_config, seed=2)
    small, plan = S.prune_structured(model, heads=0.5, ffn=0.5, layers=[0], method="magnitude", ranking="layer",
                                     return_plan=True)
    config = config_of(small)
    assert plan.layers == [1] and config.num_layers == 1
    assert config.layer_num_heads == (2,) and config.layer_intermediate_sizes == (24,)
    # layer 1's kept weights moved to layer 0 of the new model
    np.testing.assert_array_equal(small.get_layer("layer_0_output_layer_norm").get_weights()[0],
                                  model.get_layer("layer_1_output_layer_norm").get_weights()[0])
    # a fraction of layers drops the least important one; at least one head / unit stays everywhere
    tiny = S.prune_structured(model, heads=0.99, ffn=0.99, layers=0.5, method="magnitude")
    assert config_of(tiny).num_layers == 1 and config_of(tiny).layer_num_heads == (1,)
    assert config_of(tiny).layer_intermediate_sizes == (1,)


def test_smaller_model_exports_to_hub_and_tflite(tiny_config, batch, tmp_path):
    import tensorflow_hub as hub
    from ai_edge_litert.interpreter import Interpreter

    from tfspeed.export.sparsity import to_tflite

    model = _classifier(tiny_config, seed=3)
    small = S.prune_structured(model, heads=0.5, ffn=0.5, method="taylor", data=batch)
    assert S.parameter_count(small) < S.parameter_count(model)
    path = export_encoder(small, tmp_path / "encoder")
    x = {k: v[:2] for k, v in batch[0].items()}
    from tfspeed.models import encoder_of

    ours = encoder_of(small)(x)["pooled_output"].numpy()
    np.testing.assert_allclose(hub.KerasLayer(str(path))(x)["pooled_output"].numpy(), ours, atol=1e-5)
    from tfspeed.hub import load_encoder

    assert config_of(load_encoder(str(path))) == config_of(encoder_of(small))

    interpreter = Interpreter(model_content=to_tflite(small, "float", seq_length=12))
    runner = interpreter.get_signature_runner()
    one = {k: v[:1] for k, v in batch[0].items()}
    logits = list(runner(**one).values())[0]
    np.testing.assert_allclose(logits, small(one).numpy(), atol=1e-4)


def test_encoder_magnitude_only(tiny_config):
    keras.utils.set_random_seed(4)
    encoder = build_encoder(tiny_config)
    small = S.prune_structured(encoder, heads=0.5, ffn=0.25, method="magnitude")
    assert isinstance(small.output, dict) and sum(config_of(small).layer_num_heads) == 4
    with pytest.raises(ValueError, match="method='taylor' needs a classifier"):
        S.prune_structured(encoder, method="taylor", data=[])


def test_fine_tunes_after_structured_pruning(tiny_config, batch):
    model = _classifier(tiny_config, seed=5)
    small = S.prune_structured(model, heads=0.5, ffn=0.5, method="taylor", data=batch)
    small.compile(keras.optimizers.Adam(3e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    x, y = batch
    history = small.fit(x, y, epochs=25, batch_size=16, verbose=0)
    assert history.history["accuracy"][-1] >= 0.9  # 16 examples: the smaller model still fits them


@pytest.mark.parametrize("kwargs, match", [
    (dict(heads=1.0), r"`heads`, expected a fraction to remove in \[0, 1\). Received: heads=1.0"),
    (dict(ffn=-0.5), r"Received: ffn=-0.5"),
    (dict(method="random"), r"`method`, expected one of \('taylor', 'magnitude'\). Received: method='random'"),
    (dict(method="taylor"), r"needs labelled `data`"),
    (dict(layers=[0, 1], method="magnitude"), r"removing all 2 layers"),
    (dict(layers=[7], method="magnitude"), r"`layers`, expected distinct layer indices in \[0, 2\)"),
    (dict(ranking="best", method="magnitude"), r"`ranking`"),
])
def test_bad_input(tiny_config, kwargs, match):
    model = build_classifier(tiny_config)
    with pytest.raises(ValueError, match=match):
        S.prune_structured(model, **kwargs)


def test_refuses_wrapped_and_foreign_models(tiny_config):
    from tfspeed.compress.pruning import prune

    model = build_classifier(tiny_config)
    with pytest.raises(ValueError, match="has TFMOT wrappers"):
        S.prune_structured(prune(model, schedule="constant"), method="magnitude")
    inputs = keras.Input((4,))
    with pytest.raises(ValueError, match="Expected a native tfspeed BERT"):
        S.prune_structured(keras.Model(inputs, keras.layers.Dense(2)(inputs)), method="magnitude")
