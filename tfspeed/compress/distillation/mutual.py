"""Two-way distillation: teacher and student learn from each other (deep mutual learning, Zhang et al., 2018).

`MutualDistiller` is a Keras `Model` you `compile(optimizer, teacher_optimizer=...)` and `fit`: at every step the
student learns the labels and the teacher's softened outputs, and the teacher learns the labels and the student's
softened outputs, each with its own optimizer (the teacher, already fine-tuned, at a lower rate). With
`anchor_weight`, the teacher also learns to stay near its starting outputs (KL to the fine-tuned teacher's logits,
computed once), so it does not drift towards the smaller model. `fit_mutual` is the verb. Both models are trained in
place: `distiller.teacher` and `distiller.student` are plain tfspeed classifiers, saved alone.
"""

from __future__ import annotations

import time
from typing import Sequence

from tfspeed.compat import keras, tf
from tfspeed.compress.distillation.config import DistillConfig, check_float
from tfspeed.compress.distillation.distiller import check_pair, labelled_weight, with_models
from tfspeed.compress.distillation.losses import _weighted_mean, distillation_loss, soft_cross_entropy_kl

__all__ = ["MutualDistiller", "fit_mutual"]


@keras.saving.register_keras_serializable(package="tfspeed")
class MutualDistiller(keras.Model):
    """Trains `teacher` and `student` together, each on the labels and on the other's softened outputs.

    `compile(optimizer, teacher_optimizer)` then `fit` on batches of `(x, labels)` or, with `anchor_weight`, of
    `(x, (labels, start_logits))` (the teacher's logits before training: `teacher_logits`). Labels `-1` mark texts
    without a label: both models learn only the other's outputs on them. Calling it, `predict` and `evaluate` use the
    student; `evaluate` also reports `teacher_accuracy`.

    Args:
        teacher: the fine-tuned classifier; it is trained (set `trainable`).
        student: the classifier to train; same inputs, same number of classes.
        alpha: weight of the student's hard-label loss; the teacher's softened outputs get `1 - alpha`. Defaults to
            `0.5`.
        teacher_alpha: the same for the teacher (the student's outputs get `1 - teacher_alpha`). Defaults to `0.5`.
        temperature: softening temperature of every soft loss (scaled by T^2). Defaults to `2.0`.
        anchor_weight: weight of KL(start || teacher) at temperature T, the teacher's pull back to its starting
            outputs; needs the starting logits in the batches. Defaults to `0.0` (off).
    """

    def __init__(self, teacher: keras.Model, student: keras.Model, alpha: float = DistillConfig.alpha,
                 teacher_alpha: float = DistillConfig.teacher_alpha, temperature: float = DistillConfig.temperature,
                 anchor_weight: float = DistillConfig.anchor_weight, name: str = "mutual_distiller", **kwargs):
        super().__init__(name=name, **kwargs)
        self.alpha = check_float("alpha", alpha, 0.0, 1.0)
        self.teacher_alpha = check_float("teacher_alpha", teacher_alpha, 0.0, 1.0)
        self.temperature = check_float("temperature", temperature, 0.0, None, low_open=True)
        self.anchor_weight = check_float("anchor_weight", anchor_weight, 0.0, None)
        check_pair(teacher, student)
        if teacher is student:
            raise ValueError("Expected two different models for `teacher` and `student`. Received: the same model.")
        teacher.trainable = student.trainable = True
        self.teacher, self.student = teacher, student
        self.teacher_optimizer = None
        names = ["loss", "student_loss", "distillation_loss", "teacher_loss", "teacher_student_loss",
                 "teacher_distillation_loss"] + (["anchor_loss"] if self.anchor_weight else [])
        self._trackers = {n: keras.metrics.Mean(name=n) for n in names}
        self._accuracy = keras.metrics.SparseCategoricalAccuracy(name="accuracy")
        self._teacher_accuracy = keras.metrics.SparseCategoricalAccuracy(name="teacher_accuracy")
        self.built = True

    def compile(self, optimizer="adam", teacher_optimizer=None, metrics=None, **kwargs):
        """Like `Model.compile`, without `loss`; `optimizer` trains the student, `teacher_optimizer` the teacher."""
        if kwargs.get("loss") is not None:
            raise ValueError("The MutualDistiller computes its own loss (constructor arguments). Received: loss="
                             f"{kwargs['loss']!r}. Remove `loss` from compile().")
        kwargs.pop("loss", None)
        if teacher_optimizer is None:
            raise ValueError("Expected a `teacher_optimizer` (the teacher trains too, usually at a lower rate). "
                             "Received: teacher_optimizer=None.")
        super().compile(optimizer=optimizer, metrics=metrics, **kwargs)
        self.teacher_optimizer = keras.optimizers.get(teacher_optimizer)

    @property
    def metrics(self):
        return [*self._trackers.values(), self._accuracy, self._teacher_accuracy]

    def call(self, inputs, training=None):
        return self.student(inputs, training=training)

    def get_config(self):
        return {"name": self.name, "teacher": keras.saving.serialize_keras_object(self.teacher),
                "student": keras.saving.serialize_keras_object(self.student), "alpha": self.alpha,
                "teacher_alpha": self.teacher_alpha, "temperature": self.temperature,
                "anchor_weight": self.anchor_weight}

    @classmethod
    def from_config(cls, config, custom_objects=None):
        return cls(**with_models(config, custom_objects))

    def compute_losses(self, x, labels, start_logits=None, sample_weight=None, training=False) -> dict:
        """Every loss term on one batch, plus both models' logits (`student_logits`, `teacher_logits`)."""
        s = self.student(x, training=training)
        t = self.teacher(x, training=training)
        student = distillation_loss(labels, s, tf.stop_gradient(t), self.alpha, self.temperature, sample_weight)
        teacher = distillation_loss(labels, t, tf.stop_gradient(s), self.teacher_alpha, self.temperature,
                                    sample_weight)
        result = {**student, "teacher_loss": teacher["loss"], "teacher_student_loss": teacher["student_loss"],
                  "teacher_distillation_loss": teacher["distillation_loss"], "student_logits": s, "teacher_logits": t}
        if self.anchor_weight and start_logits is None and not training:  # evaluation data: no starting logits
            result["anchor_loss"] = tf.constant(0.0)
        elif self.anchor_weight:
            if start_logits is None:
                raise ValueError("`anchor_weight` needs the teacher's starting logits in the batches: "
                                 "`(x, (labels, start_logits))`.")
            kl = soft_cross_entropy_kl(tf.cast(start_logits, tf.float32), t, self.temperature)
            result["anchor_loss"] = _weighted_mean(kl, sample_weight)
            result["teacher_loss"] += self.anchor_weight * self.temperature ** 2 * result["anchor_loss"]
        return result

    @staticmethod
    def _unpack(data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        if isinstance(y, (tuple, list)):
            return x, y[0], y[1], sample_weight
        return x, y, None, sample_weight

    def _update(self, result, labels, sample_weight):
        for name, tracker in self._trackers.items():
            tracker.update_state(result[name])
        weight = labelled_weight(labels, sample_weight)
        labels = tf.maximum(labels, 0)
        self._accuracy.update_state(labels, result["student_logits"], weight)
        self._teacher_accuracy.update_state(labels, result["teacher_logits"], weight)
        return {m.name: m.result() for m in self.metrics}

    def train_step(self, data):
        x, labels, start, sample_weight = self._unpack(data)
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        with tf.GradientTape(persistent=True) as tape:
            result = self.compute_losses(x, labels, start, sample_weight, training=True)
            student_loss, teacher_loss = result["loss"] / replicas, result["teacher_loss"] / replicas
        for loss, model, optimizer in ((student_loss, self.student, self.optimizer),
                                       (teacher_loss, self.teacher, self.teacher_optimizer)):
            variables = model.trainable_variables
            optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        del tape
        return self._update(result, labels, sample_weight)

    def test_step(self, data):
        x, labels, start, sample_weight = self._unpack(data)
        result = self.compute_losses(x, labels, start, sample_weight, training=False)
        return self._update(result, labels, sample_weight)


def fit_mutual(student: keras.Model, teacher: keras.Model, train, validation=None, config=None, *,
               callbacks: Sequence = (), verbose="auto", logits_cache=None, **overrides):
    """Fits `student` and `teacher` together (two-way distillation) on `train`; returns the Keras `History`.

    Both are trained in place (pass a copy of a teacher you want to keep). Used from `config`: `alpha`,
    `teacher_alpha`, `temperature`, `anchor_weight` (the teacher's starting logits are then computed once, cached in
    `logits_cache` like `fit_student`'s), `epochs`, `batch_size`, `learning_rate` (student),
    `teacher_learning_rate`, `seed`. Call it inside `strategy.scope()` to distribute. The history has
    `seconds_per_epoch` and `teacher_accuracy` / `val_teacher_accuracy`.
    """
    from tfspeed.compress.distillation.teacher import teacher_logits
    from tfspeed.train import EpochTimer, make_optimizer

    config = DistillConfig.resolve(config, **overrides)
    start = None
    if config.anchor_weight:
        began = time.perf_counter()
        start = teacher_logits(teacher, train, cache=logits_cache)
        logits_seconds = time.perf_counter() - began
    else:
        logits_seconds = None
    distiller = MutualDistiller(teacher, student, alpha=config.alpha, teacher_alpha=config.teacher_alpha,
                                temperature=config.temperature, anchor_weight=config.anchor_weight)
    steps = -(-len(train) // config.batch_size) * config.epochs
    distiller.compile(optimizer=make_optimizer(config.learning_rate, steps),
                      teacher_optimizer=make_optimizer(config.teacher_learning_rate, steps))
    timer = EpochTimer()
    history = distiller.fit(train.dataset(config.batch_size, shuffle=True, seed=config.seed, extra=start),
                            epochs=config.epochs,
                            validation_data=validation.dataset(128) if validation is not None else None,
                            callbacks=[timer, *callbacks], verbose=verbose)
    history.history["seconds_per_epoch"] = timer.seconds
    history.teacher_logits_seconds = logits_seconds
    return history
