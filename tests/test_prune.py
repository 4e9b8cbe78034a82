"""TFMOT magnitude pruning through fit: native and hub BERTs, 2:4, strip/save/reload, callbacks, MirroredStrategy,
the sparsity report and clear errors for bad input. Small random-weight BERTs; the targets are exact (TFMOT's masks
reach the schedule's final sparsity up to rounding of one kernel's element count)."""

import numpy as np
import pytest
import tensorflow_model_optimization as tfmot

from tfspeed.compat import keras, tf
from tfspeed.compress import pruning as P
from tfspeed.compress.pruning import callbacks as pruning_callbacks_module
from tfspeed.export.sparsity import sparsity_report as tflite_sparsity_report
from tfspeed.hub import build_hub_classifier, export_encoder, sample_inputs
from tfspeed.models import build_classifier, build_encoder

BATCH, SEQ = 16, 12


@pytest.fixture(scope="module")
def data(tiny_config):
    x = sample_inputs(tiny_config, batch=64, seq_length=SEQ, seed=3)
    y = (x["input_word_ids"][:, 1] % 2).astype(np.int32)
    return x, y


@pytest.fixture(scope="module")
def classifier(tiny_config):
    keras.utils.set_random_seed(0)
    return build_classifier(tiny_config)


@pytest.fixture(scope="module")
def hub_dir(tiny_config, tmp_path_factory):
    keras.utils.set_random_seed(1)
    return str(export_encoder(build_encoder(tiny_config), tmp_path_factory.mktemp("hub") / "encoder"))


def _fit(model, data, epochs=2, callbacks=None):
    x, y = data
    model.compile(keras.optimizers.Adam(1e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model.fit(x, y, batch_size=BATCH, epochs=epochs, verbose=0,
                     callbacks=P.pruning_callbacks() if callbacks is None else callbacks)


def _steps(data):
    return -(-len(data[1]) // BATCH)


def test_native_polynomial_reaches_target_and_leaves_caller_untouched(classifier, data):
    before = [w.copy() for w in classifier.get_weights()]
    pruned = P.prune(classifier, sparsity=0.5, epochs=2, steps_per_epoch=_steps(data))
    wrapped = sorted(l.layer.name for l in pruned.layers if isinstance(l, P.PruneLowMagnitude))
    expected = sorted([f"layer_{i}_{p}" for i in range(2) for p in
                       ("query", "key", "value", "attention_output", "intermediate", "output")] + ["pooler_dense"])
    assert wrapped == expected  # embeddings and classifier untouched by default
    history = _fit(pruned, data)
    assert history.history["sparsity"][-1] >= 0.495
    assert history.history["sparsity"][0] < history.history["sparsity"][-1]  # polynomial: rising
    assert all(history.history[f"sparsity/{n}"][-1] >= 0.495 for n in expected)
    assert all(np.array_equal(a, b) for a, b in zip(before, classifier.get_weights()))

    stripped = P.strip(pruned)
    assert not any(isinstance(l, P.PruneLowMagnitude) for l in stripped.layers)
    report = tflite_sparsity_report(stripped, seq_length=SEQ)
    assert report["sparsity"] >= 0.495 and min(v["sparsity"] for v in report["layers"].values()) >= 0.495
    assert report["layers"].keys() == set(expected)
    x = {k: v[:4] for k, v in data[0].items()}
    np.testing.assert_allclose(stripped(x).numpy(), pruned(x).numpy(), atol=1e-5)
    # The same trained model without the zeros (the random-init classifier has all-zero biases, which the converter
    # folds away, so it is not a fair size reference).
    dense_model = keras.models.clone_model(stripped)
    dense_model.set_weights(stripped.get_weights())
    rng = np.random.default_rng(0)
    for name in expected:
        kernel, bias = dense_model.get_layer(name).get_weights()
        dense_model.get_layer(name).set_weights([rng.normal(0, 0.02, kernel.shape).astype(np.float32), bias])
    dense = tflite_sparsity_report(dense_model, seq_length=SEQ)
    assert dense["sparsity"] < 0.01
    # gzip shrinks with zeros; the raw dynamic-range file does not
    assert report["tflite"]["dynamic"]["gzip_bytes"] < 0.9 * dense["tflite"]["dynamic"]["gzip_bytes"]
    assert abs(report["tflite"]["dynamic"]["bytes"] - dense["tflite"]["dynamic"]["bytes"]) < 64
    assert report["weights_gzip_bytes"] < 0.9 * dense["weights_gzip_bytes"]


def test_m_by_n_2_4_constant(classifier, data):
    pruned = P.prune(classifier, schedule="constant", m_by_n=(2, 4), begin_step=0, frequency=1)
    _fit(pruned, data, epochs=1)
    stripped = P.strip(pruned)
    for name, kernel in P.targeted_weights(stripped).items():
        groups = kernel.T.reshape(kernel.shape[1], -1, 4)  # groups of 4 consecutive weights along the input axis
        assert (np.count_nonzero(groups, axis=-1) <= 2).all(), name


def test_tfmot_schedule_object_and_embeddings_classifier(classifier, data):
    schedule = tfmot.sparsity.keras.ConstantSparsity(0.8, begin_step=0, frequency=1)
    pruned = P.prune(classifier, schedule=schedule, include_embeddings=True, include_classifier=True)
    names = {l.layer.name for l in pruned.layers if isinstance(l, P.PruneLowMagnitude)}
    assert {"word_embeddings", "type_embeddings", "classifier"} <= names
    _fit(pruned, data, epochs=1)
    report = P.sparsity_report(pruned, include_embeddings=True, include_classifier=True)
    assert report["layers"]["word_embeddings"]["sparsity"] >= 0.79 and report["sparsity"] >= 0.79


def test_m_by_n_kernels_with_unstructured_embedding_tables(classifier, data):
    pruned = P.prune(classifier, schedule="constant", m_by_n=(2, 4), frequency=1, include_embeddings=True,
                     embedding_sparsity=0.7)
    _fit(pruned, data, epochs=1)
    stripped = P.strip(pruned)
    report = P.sparsity_report(stripped, include_embeddings=True)
    table = stripped.get_layer("word_embeddings").get_weights()[0]
    assert report["layers"]["word_embeddings"]["sparsity"] == pytest.approx(0.7, abs=0.01)
    assert (np.count_nonzero(table.reshape(-1, 4), axis=-1) < 2).any()  # not 2:4: the table is unstructured
    for name, kernel in P.targeted_weights(stripped).items():  # kernels stay 2:4
        assert (np.count_nonzero(kernel.T.reshape(kernel.shape[1], -1, 4), axis=-1) <= 2).all(), name
    with pytest.raises(ValueError, match=r"`embedding_sparsity`.*include_embeddings=True.*Received: "
                                         r"embedding_sparsity=0.7, include_embeddings=False"):
        P.prune(classifier, schedule="constant", m_by_n=(2, 4), embedding_sparsity=0.7)
    with pytest.raises(ValueError, match=r"`embedding_sparsity`, expected a float in \[0, 1\)"):
        P.prune(classifier, schedule="constant", include_embeddings=True, embedding_sparsity=1.5)


def test_gradual_route_takes_the_embedding_tables_through_a_milder_first_step(classifier, data):
    seen = []

    def fit(pruned, epochs):
        history = _fit(pruned, data, epochs=epochs)
        seen.append(P.sparsity_report(P.strip(pruned), include_embeddings=True)["layers"])
        return history

    pruned, history = P.prune_and_fit(classifier, fit, 1, m_by_n=(2, 4), gradual_from=(1, 4), schedule="constant",
                                      frequency=1, include_embeddings=True, embedding_sparsity=0.6)
    assert [s["word_embeddings"]["sparsity"] for s in seen] == [pytest.approx(0.3, abs=0.01),
                                                                pytest.approx(0.6, abs=0.01)]
    assert [s["layer_0_query"]["sparsity"] for s in seen] == [pytest.approx(0.25), pytest.approx(0.5)]
    assert len(history["loss"]) == 2


def test_layers_argument_prunes_only_those(classifier, data):
    pruned = P.prune(classifier, sparsity=0.5, schedule="constant", layers=["layer_1_intermediate"], frequency=1)
    assert [l.layer.name for l in pruned.layers if isinstance(l, P.PruneLowMagnitude)] == ["layer_1_intermediate"]


def test_hub_layer_prune_strip_save_reload(hub_dir, data, tmp_path):
    model = build_hub_classifier(hub_dir)
    pruned = P.prune(model, sparsity=0.5, epochs=2, steps_per_epoch=_steps(data))
    wrapper = [l for l in pruned.layers if isinstance(l, P.PruneLowMagnitude)]
    assert len(wrapper) == 1 and isinstance(wrapper[0].layer, P.PrunableKerasLayer)
    assert len(wrapper[0].pruning_vars) == 2 * 6 + 1  # 6 kernels per layer + pooler
    history = _fit(pruned, data)
    assert history.history["sparsity"][-1] >= 0.495
    assert "sparsity/encoder/layer_1_intermediate" in history.history

    stripped = P.strip(pruned)
    encoder = stripped.get_layer("encoder")
    assert type(encoder).__name__ == "KerasLayer" and not isinstance(encoder, P.PrunableKerasLayer)
    assert P.sparsity_report(stripped)["sparsity"] >= 0.495
    stripped.save(tmp_path / "stripped.keras")
    from tfspeed.artifacts import custom_objects

    with keras.utils.custom_object_scope(custom_objects()):
        reloaded = keras.models.load_model(tmp_path / "stripped.keras")
    assert P.sparsity_report(reloaded)["sparsity"] >= 0.495
    x = {k: v[:4] for k, v in data[0].items()}
    np.testing.assert_allclose(reloaded(x).numpy(), stripped(x).numpy(), atol=1e-6)

    # an unstripped pruned model reloads inside prune_scope and keeps its masks
    pruned.save(tmp_path / "pruned.keras")
    with P.prune_scope():
        again = keras.models.load_model(tmp_path / "pruned.keras")
    assert isinstance(again, P.PrunedModel)
    np.testing.assert_allclose(again(x).numpy(), pruned(x).numpy(), atol=1e-6)


def test_mirrored_strategy_reaches_target(tiny_config, data, mirrored_strategy):
    with mirrored_strategy.scope():
        keras.utils.set_random_seed(2)
        model = build_classifier(tiny_config)
        pruned = P.prune(model, sparsity=0.6, epochs=2, steps_per_epoch=_steps(data))
        history = _fit(pruned, data)
    assert history.history["sparsity"][-1] >= 0.595
    assert P.sparsity_report(P.strip(pruned))["sparsity"] >= 0.595


def test_missing_update_pruning_step_is_a_clear_error(classifier, data):
    pruned = P.prune(classifier, sparsity=0.5, schedule="constant")
    with pytest.raises(ValueError, match="UpdatePruningStep callback.*In tfspeed: pass `callbacks=tfspeed"):
        _fit(pruned, data, epochs=1, callbacks=[])


def test_schedules_from_epochs():
    s = P.schedule_for_epochs(0.5, epochs=2, steps_per_epoch=300)
    config = s.get_config()["config"]
    assert isinstance(s, tfmot.sparsity.keras.PolynomialDecay)
    assert (config["begin_step"], config["end_step"], config["frequency"]) == (0, 420, 21)  # 0.7 * 600 = 420
    c = P.schedule_for_epochs(0.8, epochs=1, steps_per_epoch=50, schedule="constant", begin_epoch=0.5)
    assert isinstance(c, tfmot.sparsity.keras.ConstantSparsity) and c.get_config()["config"]["begin_step"] == 25


def test_serialization_round_trips(hub_dir):
    logger = P.SparsityLogger(per_layer=False)
    assert P.SparsityLogger.from_config(logger.get_config()).per_layer is False
    layer = P.PrunableKerasLayer(hub_dir, include_embeddings=True, layers=None, trainable=True, name="enc")
    clone = P.PrunableKerasLayer.from_config(layer.get_config())
    assert clone.include_embeddings and [v.name for v in clone.get_prunable_weights()] == \
        [v.name for v in layer.get_prunable_weights()]
    assert "word_embeddings/embeddings:0" in [v.name for v in layer.get_prunable_weights()]
    assert keras.saving.get_registered_name(P.PrunableKerasLayer) == "tfspeed>PrunableKerasLayer"


@pytest.mark.parametrize("kwargs, match", [
    (dict(sparsity=1.0), r"`sparsity`, expected a float in \[0, 1\). Received: sparsity=1.0"),
    (dict(sparsity=-0.1), r"Received: sparsity=-0.1"),
    (dict(m_by_n=(4, 2)), r"`m_by_n`, expected two integers \(m, n\) with 0 < m < n.*Received: m_by_n=\(4, 2\)"),
    (dict(m_by_n=(2, 2)), r"Received: m_by_n=\(2, 2\)"),
    (dict(begin_step=100, end_step=50), r"`end_step`.*Received: begin_step=100, end_step=50"),
    (dict(schedule="cubic"), r"`schedule`, expected one of .*Received: schedule='cubic'"),
    (dict(layers=["layer_9_query"]), r"no layer named \['layer_9_query'\]"),
    (dict(layers=["layer_0_attention_layer_norm"]), r"LayerNormalization, which TFMOT cannot prune"),
    (dict(epochs=2), r"Pass both `epochs` and `steps_per_epoch`"),
])
def test_bad_input(classifier, kwargs, match):
    kwargs = {"end_step": 100, **kwargs}
    with pytest.raises(ValueError, match=match):
        P.prune(classifier, **kwargs)


def test_limits_from_both_sides(classifier):
    P.prune(classifier, sparsity=0.99, schedule="constant")  # 0.99 passes, 1.0 raises (above)
    P.prune(classifier, sparsity=0.0, schedule="constant")


def test_nothing_to_prune_and_double_prune(classifier):
    inputs = keras.Input((4,))
    plain = keras.Model(inputs, keras.layers.Dropout(0.1)(inputs))
    with pytest.raises(ValueError, match="has nothing to prune"):
        P.prune(plain, schedule="constant")
    pruned = P.prune(classifier, schedule="constant")
    with pytest.raises(ValueError, match="already pruned"):
        P.prune(pruned, schedule="constant")
    with pytest.raises(ValueError, match="no pruning wrappers to strip"):
        P.strip(classifier)


def _scalars(log_dir, suffix: str) -> dict:
    """{tag: [(step, value)]} of the TensorBoard scalars whose tag ends with `suffix`, in any event file under
    `log_dir`."""
    out = {}
    for path in sorted(tf.io.gfile.glob(str(log_dir / "**" / "events.out.tfevents.*"))):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                if value.tag.endswith(suffix):
                    out.setdefault(value.tag, []).append((event.step, float(tf.make_ndarray(value.tensor))))
    return out


def test_tensorboard_pruning_summaries_written_through_fit(classifier, data, tmp_path):
    """TFMOT's PruningSummaries log every mask's sparsity at the start of each epoch: 0 before training, the
    schedule's target once it has been reached (polynomial over the first two epochs, read at the third's start)."""
    pruned = P.prune(classifier, sparsity=0.5, epochs=2, steps_per_epoch=_steps(data))
    callbacks = P.pruning_callbacks(tmp_path, per_layer=False)
    assert any(isinstance(c, tfmot.sparsity.keras.PruningSummaries) for c in callbacks)
    _fit(pruned, data, epochs=3, callbacks=callbacks)
    sparsity = _scalars(tmp_path, "/sparsity")
    assert len(sparsity) == 13, sorted(sparsity)  # one mask per targeted kernel: 2 layers x 6 + the pooler
    for tag, points in sparsity.items():
        assert [step for step, _ in points] == [0, _steps(data), 2 * _steps(data)], tag
        assert points[0][1] == 0.0 and points[-1][1] >= 0.495, (tag, points)


def test_tensorboard_missing_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setattr(pruning_callbacks_module, "_has_tensorboard", lambda: False)
    with pytest.raises(ValueError, match="pip install tensorboard.*Received: log_dir="):
        P.pruning_callbacks(tmp_path)


def test_layers_argument_inside_a_hub_layer(hub_dir):
    model = build_hub_classifier(hub_dir)
    pruned = P.prune(model, schedule="constant", layers=["layer_0_query", "layer_1_output"])
    (wrapper,) = [l for l in pruned.layers if isinstance(l, P.PruneLowMagnitude)]
    assert sorted(v.name for v, _, _ in wrapper.pruning_vars) == ["layer_0_query/kernel:0", "layer_1_output/kernel:0"]
    whole = P.prune(model, schedule="constant", layers=["encoder"])
    assert len([l for l in whole.layers if isinstance(l, P.PruneLowMagnitude)][0].pruning_vars) == 13
