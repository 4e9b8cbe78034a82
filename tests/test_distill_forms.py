"""Two-way distillation (MutualDistiller), multi-stage distillation (distill_chain, `tfspeed distill --stages`) and
distillation on texts the teacher labels (unlabelled files, augmented copies): the losses by hand, both models
learning, the same step on two replicas, each stage saved and resumed, and the bad inputs named."""

import json

import harness
import numpy as np
import pytest

from tfspeed.compat import keras, tf
from tfspeed.compress.distillation import (
    DistillConfig,
    MutualDistiller,
    augment_texts,
    distill_chain,
    distillation_loss,
    num_layers_of,
    student_from_teacher,
)
from tfspeed.compress.distillation.losses import soft_cross_entropy_kl
from tfspeed.data import EncodedSplit
from tfspeed.hub import sample_inputs
from tfspeed.models import build_classifier

CONFIG = harness.tiny_config(num_layers=4, dropout=0.0, attention_dropout=0.0)


@pytest.fixture(scope="module")
def teacher():
    keras.utils.set_random_seed(0)
    return build_classifier(CONFIG)


@pytest.fixture(scope="module")
def batch():
    x = sample_inputs(CONFIG, batch=8, seq_length=12, seed=1)
    return x, np.array([0, 1, 1, 0, 1, 0, 0, 1], np.int32)


def _copy(model):
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy


def _ds(x, y, extra=None, batch_size=8):
    return tf.data.Dataset.from_tensor_slices((x, y if extra is None else (y, extra))).batch(batch_size)


def test_unlabelled_examples_learn_only_the_soft_targets():
    s = tf.constant([[1.0, -0.5], [0.2, 0.3], [2.0, 1.0]])
    t = tf.constant([[0.5, 0.1], [1.0, -1.0], [0.0, 0.4]])
    labels = tf.constant([1, -1, 0])
    got = distillation_loss(labels, s, t, alpha=0.3, temperature=2.0)
    ce = keras.losses.sparse_categorical_crossentropy(tf.constant([1, 0]), tf.gather(s, [0, 2]), from_logits=True)
    kl = soft_cross_entropy_kl(t, s, 2.0)
    np.testing.assert_allclose(got["student_loss"], np.mean(ce), rtol=1e-6)  # the unlabelled row left out
    np.testing.assert_allclose(got["distillation_loss"], np.mean(kl), rtol=1e-6)  # ... but not here
    np.testing.assert_allclose(got["loss"], 0.3 * np.mean(ce) + 0.7 * 4 * np.mean(kl), rtol=1e-6)


def test_mutual_distiller_trains_both_models_on_each_others_outputs(teacher, batch):
    x, y = batch
    t, student = _copy(teacher), student_from_teacher(teacher, layers=2)
    t0, s0 = [w.copy() for w in t.get_weights()], [w.copy() for w in student.get_weights()]
    distiller = MutualDistiller(t, student, alpha=0.3, teacher_alpha=0.6, temperature=2.0)
    # the losses by hand: each model's loss is distillation_loss against the other's (stopped) logits
    result = distiller.compute_losses(x, y)
    sl, tl = student(x).numpy(), t(x).numpy()
    np.testing.assert_allclose(result["loss"], distillation_loss(y, sl, tl, 0.3, 2.0)["loss"], rtol=1e-5)
    np.testing.assert_allclose(result["teacher_loss"], distillation_loss(y, tl, sl, 0.6, 2.0)["loss"], rtol=1e-5)
    distiller.compile(optimizer=keras.optimizers.SGD(0.1), teacher_optimizer=keras.optimizers.SGD(0.05))
    history = distiller.fit(_ds(x, y), epochs=2, verbose=0)
    assert {"loss", "teacher_loss", "accuracy", "teacher_accuracy"} <= set(history.history)
    assert max(np.abs(a - b).max() for a, b in zip(t0, t.get_weights())) > 1e-4  # the teacher learned too
    assert max(np.abs(a - b).max() for a, b in zip(s0, student.get_weights())) > 1e-4
    config = distiller.get_config()
    assert {k: config[k] for k in ("alpha", "teacher_alpha", "temperature", "anchor_weight")} == {
        "alpha": 0.3, "teacher_alpha": 0.6, "temperature": 2.0, "anchor_weight": 0.0}
    again = MutualDistiller.from_config(json.loads(json.dumps(config)))
    assert num_layers_of(again.student) == 2 and num_layers_of(again.teacher) == 4


def test_anchor_keeps_the_teacher_near_its_start(teacher, batch):
    x, y = batch
    start = teacher(x).numpy()

    def drift(anchor_weight):
        t, student = _copy(teacher), student_from_teacher(teacher, layers=1)
        d = MutualDistiller(t, student, anchor_weight=anchor_weight)
        d.compile(optimizer=keras.optimizers.SGD(0.05), teacher_optimizer=keras.optimizers.SGD(0.05))
        d.fit(_ds(x, y, extra=start), epochs=40, verbose=0)  # the anchor's pull grows with the drift: many steps
        return float(np.abs(t(x).numpy() - start).mean())

    assert drift(5.0) < 0.3 * drift(0.0)  # measured: 0.11 against 0.67
    d = MutualDistiller(_copy(teacher), student_from_teacher(teacher, layers=1), anchor_weight=1.0)
    with pytest.raises(ValueError, match="starting logits"):
        d.compute_losses(x, y, training=True)


def test_mutual_step_on_two_replicas_matches_one_device(teacher, batch, mirrored_strategy):
    x, y = batch

    def one_step(strategy):
        with strategy.scope():
            t = _copy(teacher)
            student = student_from_teacher(t, layers=2)
            d = MutualDistiller(t, student)
            d.compile(optimizer=keras.optimizers.SGD(0.5), teacher_optimizer=keras.optimizers.SGD(0.5))
        d.fit(_ds(x, y), epochs=1, verbose=0)
        return t.get_weights() + student.get_weights()

    single, mirrored = one_step(tf.distribute.get_strategy()), one_step(mirrored_strategy)
    assert max(np.abs(a - b).max() for a, b in zip(single, mirrored)) < 1e-5


def test_bad_two_way_and_chain_inputs_are_named(teacher):
    narrow_vocab = build_classifier(CONFIG.replace(vocab_size=CONFIG.vocab_size - 10))
    with pytest.raises(ValueError, match="same token ids"):
        MutualDistiller(teacher, narrow_vocab)
    with pytest.raises(ValueError, match="same classes"):
        MutualDistiller(teacher, build_classifier(CONFIG, num_classes=3))
    with pytest.raises(ValueError, match="teacher_optimizer"):
        MutualDistiller(_copy(teacher), student_from_teacher(teacher, layers=1)).compile("sgd")
    for stages, match in [((6, 8), "smaller than the one before"), ((), "non-empty"), ((2, 2), "smaller")]:
        with pytest.raises(ValueError, match=match):
            DistillConfig(stages=stages)
    x = sample_inputs(CONFIG, batch=4, seq_length=8)
    with pytest.raises(ValueError, match=r"teacher's 4 layers.*stages=\[4, 2\]"):
        distill_chain(teacher, EncodedSplit(x, [0, 1, 0, 1]), stages=(4, 2), epochs=1, verbose=0)
    with pytest.raises(ValueError, match="two-way"):
        DistillConfig(mode="two-way", hidden_weight=1.0)
    with pytest.raises(ValueError, match="augment_rate"):
        DistillConfig(augment=1, augment_rate=1.0)


def test_augmented_copies_change_words_and_stay_reproducible():
    texts = ["a gripping and beautifully acted film", "dull , slow and far too long"]
    copies = augment_texts(texts, copies=3, rate=0.3, seed=4)
    assert len(copies) == 6 and copies == augment_texts(texts, copies=3, rate=0.3, seed=4)
    assert all(c.strip() for c in copies) and any(c not in texts for c in copies)
    pool = {w for t in texts for w in t.split()}
    assert all(set(c.split()) <= pool for c in copies)  # replacements come from the corpus
    with pytest.raises(ValueError, match="rate"):
        augment_texts(texts, rate=0.0)


@pytest.fixture(scope="module")
def deep_teacher_dir(vocab_file, sentiment_csv, tmp_path_factory):
    """A 3-layer tiny classifier fine-tuned on the toy task, saved as a model directory."""
    from tfspeed import artifacts
    from tfspeed.data import EncodedSplit as ES
    from tfspeed.data import Tokenizer, from_file
    from tfspeed.train import fit_classifier

    data = from_file(sentiment_csv)
    keras.utils.set_random_seed(3)
    model = build_classifier(harness.tiny_config(num_layers=3, max_positions=16, type_vocab_size=2))
    fit_classifier(model, ES.from_split(data.train, Tokenizer(vocab_file, seq_length=16)), epochs=4, batch_size=16,
                   learning_rate=1e-3, verbose=0)
    path = tmp_path_factory.mktemp("deep") / "teacher"
    artifacts.save_model_dir(model, path, artifacts.ModelInfo(seq_length=16, label_names=list(data.label_names),
                                                              base="tiny", stage="finetune",
                                                              vocab_path=str(vocab_file)))
    return path


def test_distill_stages_saves_each_model_and_resumes(deep_teacher_dir, sentiment_csv, tmp_path, capsys):
    from tfspeed import artifacts
    from tfspeed.cli import main

    out = tmp_path / "student"
    args = ["distill", "--teacher", str(deep_teacher_dir), "--stages", "2,1", "--epochs", "1", "--data",
            str(sentiment_csv), "--out", str(out)]
    assert main(args) == 0
    assistant = tmp_path / "student-assistant1-2layers"
    model, _ = artifacts.load_model_dir(assistant)
    student, _ = artifacts.load_model_dir(out)
    assert num_layers_of(model) == 2 and num_layers_of(student) == 1
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["stages"] == [2, 1] and metrics["assistants"][0]["dir"] == str(assistant)
    assert metrics["train_seconds"] > metrics["assistants"][0]["train_seconds"] > 0
    # the student started from the assistant: its embeddings are the assistant's before training, not the teacher's
    import shutil

    shutil.rmtree(out)
    capsys.readouterr()
    assert main(args) == 0  # a rerun keeps the finished assistant and trains the last stage only
    log = capsys.readouterr().out
    assert "stage 1/2: 2 layers, done before, kept" in log and "stage 2/2: 1 layers, accuracy" in log
    assert main(["distill", "--teacher", str(deep_teacher_dir), "--stages", "3,1", "--data", str(sentiment_csv),
                 "--out", str(tmp_path / "bad")]) == 1
    assert "teacher's 3 layers" in capsys.readouterr().err


def test_two_way_run_keeps_both_models_and_learns_from_extra_text(deep_teacher_dir, sentiment_csv, tmp_path):
    from tfspeed import artifacts
    from tfspeed.cli import main
    from tfspeed.data import from_file

    unlabelled = tmp_path / "more.txt"
    unlabelled.write_text("a good film\nbad acting , awful plot\nthe movie was great\n")
    out = tmp_path / "mutual"
    assert main(["distill", "--teacher", str(deep_teacher_dir), "--student-layers", "1", "--mode", "two-way",
                 "--anchor-weight", "0.5", "--epochs", "1", "--unlabelled", str(unlabelled), "--augment", "1",
                 "--data", str(sentiment_csv), "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    n_train = len(from_file(sentiment_csv).train)
    assert metrics["mode"] == "two-way" and metrics["extra_texts"] == {"unlabelled": 3, "augmented": n_train}
    assert metrics["distill_examples"] == metrics["train_examples"] + 3 + n_train
    teacher, _ = artifacts.load_model_dir(out / "teacher")
    before, _ = artifacts.load_model_dir(deep_teacher_dir)
    assert num_layers_of(teacher) == 3
    assert max(np.abs(a - b).max() for a, b in zip(teacher.get_weights(), before.get_weights())) > 1e-6
    assert 0 <= metrics["mutual_teacher"]["accuracy"] <= 1
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    assert main(["distill", "--teacher", str(deep_teacher_dir), "--unlabelled", str(empty), "--data",
                 str(sentiment_csv), "--out", str(tmp_path / "bad")]) == 1


def test_a_recipe_carries_the_new_forms(tmp_path):
    """`optimize` recipes name them like any distillation setting; a TOML file round-trips."""
    from tfspeed.recipe import RecipeConfig

    path = tmp_path / "recipe.toml"
    path.write_text('recipe = "distill,prune"\n[distill]\nstages = [4, 2]\naugment = 1\n')
    config = RecipeConfig.from_file(path)
    assert config.distill.stages == (4, 2) and config.distill.augment == 1
    again = RecipeConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again.distill == config.distill
    assert RecipeConfig(distill={"mode": "two-way", "anchor_weight": 1.0}).distill.mode == "two-way"


def test_chain_spreads_the_layers_when_every_other_does_not_fit(teacher):
    """3 of 4 layers cannot be every other one: the stage takes them evenly instead of failing."""
    x = sample_inputs(CONFIG, batch=4, seq_length=8)
    results = distill_chain(teacher, EncodedSplit(x, [0, 1, 0, 1]), stages=(3, 1), epochs=1, batch_size=4,
                            verbose=0)
    assert [num_layers_of(m) for m, _ in results] == [3, 1]
