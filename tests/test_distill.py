"""Distillation: the Distiller's loss against a hand computation, frozen teacher, clean metrics, saving, cached teacher
logits, TinyBERT intermediate losses, students built from teacher layers, hub-layer teachers, MirroredStrategy."""

import harness
import numpy as np
import pytest

from tfspeed import hub as th
from tfspeed.compat import keras, tf
from tfspeed.compress.distillation import (
    DistillConfig,
    Distiller,
    distill,
    distillation_loss,
    select_layers,
    student_from_teacher,
    teacher_logits,
)
from tfspeed.data import EncodedSplit
from tfspeed.hub import sample_inputs
from tfspeed.models import build_classifier, config_of, encoder_of, layer_by_name

# 4 layers so that students can take every other one; no dropout so that steps are deterministic.
CONFIG = harness.tiny_config(num_layers=4, dropout=0.0, attention_dropout=0.0)


@pytest.fixture(scope="module")
def teacher():
    keras.utils.set_random_seed(0)
    return build_classifier(CONFIG)


@pytest.fixture(scope="module")
def batch():
    x = sample_inputs(CONFIG, batch=8, seq_length=12, seed=1)
    y = np.array([0, 1, 1, 0, 1, 0, 0, 1], np.int32)
    return x, y


def _ds(x, y, extra=None, batch_size=4):
    return tf.data.Dataset.from_tensor_slices((x, y if extra is None else (y, extra))).batch(batch_size)


# The distillation losses are means of float32 terms of order 1 (log-probabilities times probabilities); two ways of
# computing the same loss differ by a few float32 roundings of those terms, whatever the loss's own size. A student
# copied from its teacher has a loss of ~1e-9, pure rounding noise, so a relative tolerance alone compares noise.
LOSS_ATOL = 8 * float(np.finfo(np.float32).eps)  # ~1e-6


def _weights(model):
    return [w.copy() for w in model.get_weights()]


def test_loss_matches_hand_computation():
    s = np.array([[2.0, -1.0, 0.5], [0.1, 0.2, 3.0]], np.float32)
    t = np.array([[1.0, 0.0, -2.0], [-1.0, 2.5, 0.0]], np.float32)
    y = np.array([0, 2])
    alpha, temp = 0.3, 2.5

    def softmax(z):
        e = np.exp(z - z.max(-1, keepdims=True))
        return e / e.sum(-1, keepdims=True)

    ce = -np.log(softmax(s)[np.arange(2), y]).mean()
    pt, ps = softmax(t / temp), softmax(s / temp)
    kl = (pt * (np.log(pt) - np.log(ps))).sum(-1).mean()
    got = {k: float(v) for k, v in distillation_loss(y, s, t, alpha, temp).items()}
    np.testing.assert_allclose(got["student_loss"], ce, rtol=1e-5, atol=LOSS_ATOL)
    np.testing.assert_allclose(got["distillation_loss"], kl, rtol=1e-5, atol=LOSS_ATOL)
    np.testing.assert_allclose(got["loss"], alpha * ce + (1 - alpha) * temp ** 2 * kl, rtol=1e-5, atol=LOSS_ATOL)


def test_fit_trains_student_only_with_unique_metrics(teacher, batch):
    x, y = batch
    before_teacher = _weights(teacher)
    student = student_from_teacher(teacher, layers=2)
    before_student = _weights(student)
    distiller = Distiller(teacher, student, alpha=0.2, temperature=3.0)
    distiller.compile(optimizer=keras.optimizers.Adam(1e-2))
    history = distiller.fit(_ds(x, y), epochs=2, verbose=0)
    assert sorted(history.history) == ["accuracy", "distillation_loss", "loss", "student_loss"]
    names = [m.name for m in distiller.metrics]
    assert len(names) == len(set(names)) == 4
    for a, b in zip(before_teacher, teacher.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert max(np.abs(a - b).max() for a, b in zip(before_student, student.get_weights())) > 1e-4
    assert not teacher.trainable and {id(v) for v in distiller.trainable_variables} == {
        id(v) for v in student.trainable_variables}
    # The student comes out alone: a plain tfspeed classifier, the same one the Distiller calls.
    assert distiller.student is student and config_of(student).num_layers == 2
    np.testing.assert_allclose(distiller(x), student(x), atol=1e-6)
    evaluated = distiller.evaluate(_ds(x, y), verbose=0, return_dict=True)
    assert sorted(evaluated) == sorted(history.history)


def test_bad_arguments_are_refused(teacher):
    student = student_from_teacher(teacher, layers=2)
    with pytest.raises(ValueError, match=r"`alpha`.*Received: alpha=1.5"):
        Distiller(teacher, student, alpha=1.5)
    with pytest.raises(ValueError, match=r"`temperature`.*Received: temperature=0"):
        Distiller(teacher, student, temperature=0)
    with pytest.raises(ValueError, match=r"`layer_map`.*Received: layer_map=\[0, 4\]"):
        Distiller(teacher, student, hidden_weight=1.0, layer_map=[0, 4])
    with pytest.raises(ValueError, match="computes its own loss"):
        Distiller(teacher, student).compile(optimizer="adam", loss="mse")
    three_classes = build_classifier(CONFIG.replace(num_layers=1), num_classes=3)
    with pytest.raises(ValueError, match="same classes"):
        Distiller(teacher, three_classes)


@pytest.mark.parametrize("name, bad, good", [("alpha", 1.5, 1.0), ("alpha", -0.01, 0.0), ("temperature", 0.0, 1e-3),
                                             ("hidden_weight", -0.1, 0.0), ("attention_weight", -1.0, 0.0)])
def test_distiller_and_config_share_the_loss_checks(teacher, name, bad, good):
    """The Distiller's constructor and DistillConfig run the same check: the same message, the same limit."""
    student = student_from_teacher(teacher, layers=2)
    with pytest.raises(ValueError, match=rf"`{name}`.*Received: {name}={bad!r}") as by_distiller:
        Distiller(teacher, student, **{name: bad})
    with pytest.raises(ValueError) as by_config:
        DistillConfig(**{name: bad})
    assert str(by_config.value) == str(by_distiller.value)
    assert getattr(Distiller(teacher, student, **{name: good}), name) == getattr(DistillConfig(**{name: good}), name)


def test_config_roundtrip_and_keras_file(teacher, batch, tmp_path):
    x, y = batch
    student = student_from_teacher(teacher, layers=2, hidden_size=16, num_heads=2, seed=3)
    distiller = Distiller(teacher, student, alpha=0.7, temperature=4.0, hidden_weight=0.5, attention_weight=2.0,
                          layer_map=[1, 3], name="my_distiller")
    distiller.compile(optimizer=keras.optimizers.Adam(1e-3))
    distiller.fit(_ds(x, y), epochs=1, verbose=0)

    config = distiller.get_config()
    again = Distiller.from_config(config)
    assert again.get_config() == config
    assert (again.alpha, again.temperature, again.hidden_weight, again.attention_weight, list(again.layer_map)) == (
        0.7, 4.0, 0.5, 2.0, [1, 3])

    path = tmp_path / "distiller.keras"
    distiller.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded, Distiller) and loaded.name == "my_distiller"
    assert loaded.get_config() == config and not loaded.teacher.trainable
    np.testing.assert_allclose(loaded(x), distiller(x), atol=1e-5)
    np.testing.assert_allclose(loaded.teacher(x), teacher(x), atol=1e-5)
    np.testing.assert_array_equal(loaded.hidden_projection.kernel.numpy(), distiller.hidden_projection.kernel.numpy())
    # compiled on reload: evaluate gives the same numbers
    a = distiller.evaluate(_ds(x, y), verbose=0, return_dict=True)
    b = loaded.evaluate(_ds(x, y), verbose=0, return_dict=True)
    for key in a:
        np.testing.assert_allclose(a[key], b[key], rtol=1e-4, atol=LOSS_ATOL, err_msg=key)


def test_cached_teacher_logits_give_the_same_loss(teacher, batch, tmp_path):
    x, y = batch
    split = EncodedSplit(x, y)
    cache = tmp_path / "logits.npz"
    logits = teacher_logits(teacher, split, batch_size=3, cache=cache)
    np.testing.assert_allclose(logits, teacher(x, training=False), atol=1e-5)
    assert cache.is_file()
    np.testing.assert_array_equal(teacher_logits(teacher, split, cache=cache), logits)
    other = EncodedSplit({k: v[:4] for k, v in x.items()}, y[:4])  # another split: the cache is not reused
    assert teacher_logits(teacher, other, cache=cache).shape == (4, 2)

    distiller = Distiller(teacher, student_from_teacher(teacher, layers=[0, 3]), alpha=0.4, temperature=2.0)
    distiller.compile(optimizer="adam")
    on_the_fly = distiller.evaluate(_ds(x, y), verbose=0, return_dict=True)
    cached = distiller.evaluate(_ds(x, y, extra=logits), verbose=0, return_dict=True)
    for key in on_the_fly:
        np.testing.assert_allclose(cached[key], on_the_fly[key], rtol=1e-5, atol=LOSS_ATOL, err_msg=key)
    # EncodedSplit.dataset(extra=...) batches feed the Distiller directly
    ds_loss = distiller.evaluate(split.dataset(8, extra=logits), verbose=0, return_dict=True)["loss"]
    np.testing.assert_allclose(ds_loss, on_the_fly["loss"], rtol=1e-5, atol=LOSS_ATOL)


def test_intermediate_losses_zero_for_a_copy_and_projection_learns(teacher, batch):
    x, y = batch
    # A student that IS the teacher (all layers copied, identity map): every distillation term vanishes.
    copy = student_from_teacher(teacher, layers=[0, 1, 2, 3])
    same = Distiller(teacher, copy, hidden_weight=1.0, attention_weight=1.0, layer_map=[0, 1, 2, 3])
    same.compile(optimizer="adam")
    r = same.evaluate(_ds(x, y), verbose=0, return_dict=True)
    assert r["hidden_loss"] < 1e-9 and r["attention_loss"] < 1e-9 and r["distillation_loss"] < 1e-9
    assert same.hidden_projection is None
    # The default map of a 2-layer student of a 4-layer teacher is TinyBERT's uniform one; shifting it makes it nonzero.
    assert Distiller(teacher, student_from_teacher(teacher, layers=2), hidden_weight=1.0).layer_map == [1, 3]
    # Student layers j <- teacher layers [1, 2, 3, 3]: the hidden loss is the masked MSE summed over the pairs.
    shifted = Distiller(teacher, copy, hidden_weight=1.0, layer_map=[1, 2, 3, 3])
    shifted.compile(optimizer="adam")
    hidden = [h.numpy() for h in encoder_of(teacher)(x, training=False)["encoder_outputs"]]
    valid = x["input_mask"].astype(bool)
    expected = sum(np.mean((hidden[j] - hidden[i])[valid] ** 2) for j, i in enumerate([1, 2, 3, 3]))
    got = shifted.evaluate(_ds(x, y, batch_size=8), verbose=0, return_dict=True)["hidden_loss"]
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=LOSS_ATOL)

    # A narrower student (16 wide, 2 heads): a learned 16 -> 32 projection, head-averaged attention maps. The teacher's
    # queries and keys are sharpened so that its attention is far from the uniform maps of random weights.
    sharp = build_classifier(CONFIG)
    sharp.set_weights(teacher.get_weights())
    for i in range(CONFIG.num_layers):
        for part in ("query", "key"):
            kernel, bias = layer_by_name(sharp, f"layer_{i}_{part}").get_weights()
            layer_by_name(sharp, f"layer_{i}_{part}").set_weights([kernel * 10, bias])
    narrow = student_from_teacher(sharp, layers=2, hidden_size=16, num_heads=2, seed=0)
    distiller = Distiller(sharp, narrow, hidden_weight=1.0, attention_weight=1.0)
    assert distiller.hidden_projection.kernel.shape == (16, 32)
    assert any(v is distiller.hidden_projection.kernel for v in distiller.trainable_variables)
    distiller.compile(optimizer=keras.optimizers.Adam(1e-2))
    kernel = distiller.hidden_projection.kernel.numpy().copy()
    history = distiller.fit(_ds(x, y, batch_size=8), epochs=8, verbose=0).history
    assert history["hidden_loss"][-1] < 0.7 * history["hidden_loss"][0]
    assert history["attention_loss"][-1] < 0.8 * history["attention_loss"][0]
    assert np.abs(distiller.hidden_projection.kernel.numpy() - kernel).max() > 1e-3
    assert len({m.name for m in distiller.metrics}) == len(distiller.metrics) == 6


def test_student_from_teacher_copies_the_chosen_layers(teacher):
    assert select_layers(6, 3) == [0, 2, 4] and select_layers(6, 2, "uniform") == [0, 3]
    assert select_layers(6, 2, "last") == [4, 5] and select_layers(4, [3, 1]) == [3, 1]
    with pytest.raises(ValueError, match=r"every other.*Received: layers=3"):
        select_layers(4, 3)
    with pytest.raises(ValueError, match=r"`layers`.*Received: layers=\[0, 9\]"):
        select_layers(4, [0, 9])
    with pytest.raises(ValueError, match=r"`strategy`.*Received: strategy='odd'"):
        select_layers(4, 2, "odd")

    before = _weights(teacher)
    student = student_from_teacher(teacher, layers=[3, 1])
    assert config_of(student) == CONFIG.replace(num_layers=2)
    for j, i in enumerate([3, 1]):
        for part in ("query", "key", "value", "attention_output", "attention_layer_norm", "intermediate", "output",
                     "output_layer_norm"):
            for a, b in zip(layer_by_name(student, f"layer_{j}_{part}").get_weights(),
                            layer_by_name(teacher, f"layer_{i}_{part}").get_weights()):
                np.testing.assert_array_equal(a, b)
    for name in ("word_embeddings", "position_embedding", "type_embeddings", "embeddings_layer_norm", "pooler_dense",
                 "classifier"):
        for a, b in zip(layer_by_name(student, name).get_weights(), layer_by_name(teacher, name).get_weights()):
            np.testing.assert_array_equal(a, b)
    for a, b in zip(before, teacher.get_weights()):  # the teacher is left alone
        np.testing.assert_array_equal(a, b)

    narrow = student_from_teacher(teacher, layers=3, hidden_size=16, seed=0)
    c = config_of(narrow)
    assert (c.num_layers, c.hidden_size, c.num_heads, c.head_size, c.intermediate_size) == (3, 16, 2, 8, 24)
    with pytest.raises(ValueError, match=r"`hidden_size`.*Received: hidden_size=0"):
        student_from_teacher(teacher, layers=2, hidden_size=0)


@pytest.fixture(scope="module")
def hub_teacher(teacher, tmp_path_factory):
    """The same teacher, its encoder behind a hub.KerasLayer (from a tfspeed TF-Hub export)."""
    path = tmp_path_factory.mktemp("hub") / "encoder"
    th.export_encoder(teacher, path)
    model = th.build_hub_classifier(str(path), num_classes=2, dropout=0.0, trainable=True)
    layer_by_name(model, "classifier").set_weights(layer_by_name(teacher, "classifier").get_weights())
    return model


def test_hub_layer_teacher(hub_teacher, teacher, batch):
    x, y = batch
    np.testing.assert_allclose(hub_teacher(x), teacher(x), atol=1e-5)
    # Students copy from the hub layer's variables: a full-depth copy predicts what the teacher does.
    full = student_from_teacher(hub_teacher, layers=[0, 1, 2, 3])
    np.testing.assert_allclose(full(x), teacher(x), atol=1e-5)

    student = student_from_teacher(hub_teacher, layers=2, hidden_size=16, num_heads=2, seed=0)
    distiller = Distiller(hub_teacher, student, hidden_weight=1.0)
    assert distiller.layer_map == [1, 3] and distiller.hidden_projection.kernel.shape == (16, 32)
    before = _weights(hub_teacher)
    distiller.compile(optimizer=keras.optimizers.Adam(1e-2))
    history = distiller.fit(_ds(x, y, batch_size=8), epochs=3, verbose=0).history
    assert history["hidden_loss"][-1] < history["hidden_loss"][0]
    for a, b in zip(before, hub_teacher.get_weights()):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="attention_weight.*native"):
        Distiller(hub_teacher, student, attention_weight=1.0)


def test_fit_under_mirrored_strategy_matches_one_device(teacher, batch, mirrored_strategy):
    """One SGD step on 2 replicas moves the student exactly as on one device (the loss is scaled per replica)."""
    x, y = batch
    logits = teacher(x, training=False).numpy()

    def one_step(strategy):
        with strategy.scope():
            t = build_classifier(CONFIG)
            t.set_weights(teacher.get_weights())
            student = student_from_teacher(t, layers=2)
            distiller = Distiller(t, student, alpha=0.3, temperature=2.0)
            distiller.compile(optimizer=keras.optimizers.SGD(0.5))
        distiller.fit(_ds(x, y, extra=logits, batch_size=8), epochs=1, verbose=0)
        return student.get_weights(), distiller

    single, _ = one_step(tf.distribute.get_strategy())
    mirrored, distiller = one_step(mirrored_strategy)
    assert distiller.distribute_strategy.num_replicas_in_sync == 2
    assert max(np.abs(a - b).max() for a, b in zip(single, mirrored)) < 1e-5
    moved = max(np.abs(a - b).max() for a, b in zip(single, student_from_teacher(teacher, layers=2).get_weights()))
    assert moved > 1e-3


def test_distill_verb_builds_a_student_and_leaves_the_teacher_alone(teacher, batch):
    x, y = batch
    split = EncodedSplit(x, y)
    before, was_trainable = _weights(teacher), teacher.trainable
    student, history = distill(teacher, split, config=DistillConfig(layers=2, epochs=1), verbose=0)
    assert config_of(student).num_layers == 2 and student is not teacher
    assert history.model.student is student and len(history.history["loss"]) == 1
    assert history.teacher_logits_seconds is not None  # cache_teacher_logits is on by default
    start = student_from_teacher(teacher, layers=2)  # where the student started: every other teacher layer
    assert max(np.abs(a - b).max() for a, b in zip(start.get_weights(), student.get_weights())) > 0
    for a, b in zip(before, teacher.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert teacher.trainable == was_trainable

    # Keyword shortcuts are config settings; they reach the student's shape and the Distiller.
    narrow, history = distill(teacher, split, split, layers=2, hidden_size=16, num_heads=2, hidden_weight=1.0,
                              epochs=2, cache_teacher_logits=False, verbose=0)
    c = config_of(narrow)
    assert (c.num_layers, c.hidden_size, c.num_heads) == (2, 16, 2)
    assert history.model.layer_map == [1, 3] and history.model.hidden_projection.kernel.shape == (16, 32)
    assert len(history.history["hidden_loss"]) == 2 and "val_loss" in history.history
    assert history.teacher_logits_seconds is None
    with pytest.raises(TypeError, match=r"Unknown DistillConfig settings \['alfa'\]"):
        distill(teacher, split, alfa=0.3)


def test_fits_with_the_same_teacher_share_its_logits(teacher, batch, tmp_path, monkeypatch):
    """The distill and prune stages of one run distil from the same teacher: its logits are computed once."""
    from tfspeed.compress.distillation import fit_student
    from tfspeed.compress.distillation import teacher as teacher_module

    x, y = batch
    split, cache = EncodedSplit(x, y), tmp_path / "logits.npz"
    calls = []
    real = teacher_module.predict_logits
    monkeypatch.setattr(teacher_module, "predict_logits", lambda *a, **k: calls.append(1) or real(*a, **k))
    for layers in (2, 1):
        fit_student(student_from_teacher(teacher, layers=layers), teacher, split, epochs=1, verbose=0,
                    logits_cache=cache)
    assert len(calls) == 1 and cache.is_file()
