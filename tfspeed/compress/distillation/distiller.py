"""The `Distiller`: a Keras `Model` that trains a student to match a frozen teacher, through `compile` and `fit`.

Its loss (see `losses`) is Hinton's soft targets plus TinyBERT's intermediate losses. All hyperparameters are
constructor arguments saved by `get_config`, so a `.keras` file of a Distiller reloads with them (its registered name
stays `tfspeed>Distiller`). `distiller.student` is a plain tfspeed classifier, to be saved alone.
"""

from __future__ import annotations

from typing import Optional, Sequence

from tfspeed import registry
from tfspeed.compat import keras, tf
from tfspeed.compress.distillation.config import DistillConfig, check_loss_settings
from tfspeed.compress.distillation.internals import _Internals, _Views, num_layers_of, uniform_layer_map
from tfspeed.compress.distillation.losses import distillation_loss, masked_attention_mse, masked_hidden_mse

__all__ = ["Distiller"]


def labelled_weight(labels, sample_weight=None):
    """Per-example weights that leave out the examples without a label (`-1`)."""
    weight = tf.cast(tf.reshape(labels, [-1]) >= 0, tf.float32)
    return weight if sample_weight is None else weight * tf.cast(tf.reshape(sample_weight, [-1]), tf.float32)


def _vocab_size(model):
    """The word-embedding rows of a native tfspeed BERT, else None (a hub layer does not say)."""
    from tfspeed.models.bert import _unwrap, is_bert, layer_by_name

    return int(_unwrap(layer_by_name(model, "word_embeddings")).input_dim) if is_bert(model) else None


def with_models(config: dict, custom_objects=None) -> dict:
    """A distiller's config with its serialized `teacher` and `student` deserialized (tfspeed's classes known)."""
    config = dict(config)
    objects = {**registry.custom_objects(), **(custom_objects or {})}
    for role in ("teacher", "student"):
        if isinstance(config.get(role), dict):
            config[role] = keras.saving.deserialize_keras_object(config[role], custom_objects=objects)
    return config


def check_pair(teacher, student):
    """Refuses a teacher and a student that are not Keras models, predict other classes or read other token ids."""
    for role, model in (("teacher", teacher), ("student", student)):
        if not isinstance(model, keras.Model):
            raise ValueError(f"Expected a tf_keras Model for `{role}`. Received: {role} of type "
                             f"{type(model).__name__}.")
    t_classes, s_classes = int(teacher.output.shape[-1]), int(student.output.shape[-1])
    if t_classes != s_classes:
        raise ValueError(f"`teacher` and `student` must predict the same classes. Received: teacher with "
                         f"{t_classes} outputs, student with {s_classes}.")
    vocab = {role: _vocab_size(model) for role, model in (("teacher", teacher), ("student", student))}
    if None not in vocab.values() and vocab["teacher"] != vocab["student"]:
        raise ValueError(f"`teacher` and `student` must read the same token ids. Received: a teacher with a "
                         f"vocabulary of {vocab['teacher']} tokens, a student with {vocab['student']}. Distil from "
                         "a teacher with the student's vocabulary (after `trim_vocabulary`, the trimmed teacher).")


@keras.saving.register_keras_serializable(package="tfspeed")
class Distiller(keras.Model):
    """Trains `student` to match a frozen `teacher` (Hinton's soft targets, plus TinyBERT's intermediate losses).

    `compile(optimizer)` then `fit` on batches of `(x, labels)` (the teacher runs on the fly) or of
    `(x, (labels, teacher_logits))` (cached teacher logits: see `teacher_logits` and `EncodedSplit.dataset(extra=...)`).
    Calling the Distiller, `predict` and `evaluate` use the student. `distiller.student` is the trained student alone.

    Args:
        teacher: a trained classifier (native tfspeed BERT, or a classifier on a `hub.KerasLayer` encoder) returning
            logits. It is frozen: `teacher.trainable` is set to `False`.
        student: the classifier to train; same inputs, same number of classes.
        alpha: weight of the hard-label cross-entropy; the soft-target loss gets `1 - alpha`. In [0, 1]. Defaults to
            `0.5`.
        temperature: softening temperature T of both softmaxes; the soft loss is scaled by T^2. Defaults to `2.0`.
        hidden_weight: weight of the hidden-state MSE summed over the student's layers (TinyBERT). When the widths
            differ, a learned `hidden_projection` (Dense, student width -> teacher width) maps the student's states.
            Defaults to `0.0` (off).
        attention_weight: weight of the attention-map MSE summed over the student's layers: as TinyBERT, the
            unnormalised maps (scores / sqrt(head_size), over valid query-key pairs). Needs native models; different
            head counts compare head-averaged maps. Defaults to `0.0` (off).
        layer_map: teacher layer index for each student layer, used by the intermediate losses. Defaults to `None`:
            TinyBERT's uniform map `(j + 1) * Lt // Ls - 1` (the last student layer learns from the last teacher layer).

    Example:

    ```python
    student = student_from_teacher(teacher, layers=3)
    distiller = Distiller(teacher, student, alpha=0.5, temperature=2.0)
    distiller.compile(optimizer=keras.optimizers.Adam(1e-4))
    distiller.fit(train.dataset(32, shuffle=True), epochs=3)
    distiller.student.save("student.keras")
    ```
    """

    def __init__(self, teacher: keras.Model, student: keras.Model, alpha: float = DistillConfig.alpha,
                 temperature: float = DistillConfig.temperature, hidden_weight: float = DistillConfig.hidden_weight,
                 attention_weight: float = DistillConfig.attention_weight,
                 layer_map: Optional[Sequence[int]] = DistillConfig.layer_map, name: str = "distiller", **kwargs):
        super().__init__(name=name, **kwargs)
        # === Config ===
        self.alpha, self.temperature, self.hidden_weight, self.attention_weight = check_loss_settings(
            alpha, temperature, hidden_weight, attention_weight)  # the checks of DistillConfig
        check_pair(teacher, student)
        intermediate = self.hidden_weight > 0 or self.attention_weight > 0
        self._layer_map_arg = None if layer_map is None else [int(i) for i in layer_map]
        if intermediate or layer_map is not None:
            t_layers, s_layers = num_layers_of(teacher), num_layers_of(student)
            resolved = uniform_layer_map(s_layers, t_layers) if layer_map is None else [int(i) for i in layer_map]
            if len(resolved) != s_layers or any(not 0 <= i < t_layers for i in resolved):
                raise ValueError(f"Received an invalid value for `layer_map`, expected {s_layers} teacher layer "
                                 f"indices in [0, {t_layers}) (one per student layer). "
                                 f"Received: layer_map={layer_map!r}")
            self.layer_map = resolved
        else:
            self.layer_map = None

        # === Layers ===
        teacher.trainable = False
        self.teacher, self.student = teacher, student
        hidden, attention = self.hidden_weight > 0, self.attention_weight > 0
        self._views = _Views()
        self.hidden_projection = None
        if intermediate:
            s_layers = len(self.layer_map)
            self._views.student = _Internals(student, range(s_layers), hidden, attention, "student")
            self._views.teacher = _Internals(teacher, self.layer_map, hidden, attention, "teacher")
            if hidden:
                s_width, t_width = self._views.student.hidden_widths[0], self._views.teacher.hidden_widths[0]
                if s_width != t_width:
                    self.hidden_projection = keras.layers.Dense(
                        t_width, kernel_initializer=keras.initializers.TruncatedNormal(stddev=0.02),
                        name="hidden_projection")
                    self.hidden_projection.build((None, None, s_width))

        # === Metrics ===
        names = ["loss", "student_loss", "distillation_loss"]
        names += ["hidden_loss"] if hidden else []
        names += ["attention_loss"] if attention else []
        self._trackers = {n: keras.metrics.Mean(name=n) for n in names}
        self._accuracy = keras.metrics.SparseCategoricalAccuracy(name="accuracy")
        self.built = True  # teacher, student and projection are built: nothing waits for a first call

    # --- Keras plumbing -----------------------------------------------------------------------------------------------

    def compile(self, optimizer="adam", metrics=None, **kwargs):
        """Like `Model.compile`, without `loss`: the Distiller's loss comes from its constructor arguments.

        `metrics` (optional) are computed on the student's logits, beside the built-in `accuracy`.
        """
        if kwargs.get("loss") is not None:
            raise ValueError("The Distiller computes its own loss from `alpha`, `temperature`, `hidden_weight` and "
                             "`attention_weight` (constructor arguments). Received: loss="
                             f"{kwargs['loss']!r}. Remove `loss` from compile().")
        kwargs.pop("loss", None)
        super().compile(optimizer=optimizer, metrics=metrics, **kwargs)

    def compile_from_config(self, config):
        config = keras.saving.deserialize_keras_object(config)
        config.pop("loss", None)
        self.compile(**config)
        if self.optimizer is not None:
            self.optimizer.build(self.trainable_variables)  # so a saved optimizer state loads into it

    @property
    def metrics(self):
        own = [*self._trackers.values(), self._accuracy]
        extra = [m for m in (self.compiled_metrics.metrics if getattr(self, "compiled_metrics", None) else [])
                 if all(m is not o for o in own)]
        return own + extra

    def call(self, inputs, training=None):
        return self.student(inputs, training=training)

    def get_config(self):
        return {"name": self.name,
                "teacher": keras.saving.serialize_keras_object(self.teacher),
                "student": keras.saving.serialize_keras_object(self.student),
                "alpha": self.alpha, "temperature": self.temperature, "hidden_weight": self.hidden_weight,
                "attention_weight": self.attention_weight,
                "layer_map": None if self._layer_map_arg is None else [int(i) for i in self._layer_map_arg]}

    @classmethod
    def from_config(cls, config, custom_objects=None):
        return cls(**with_models(config, custom_objects))

    # --- Training -----------------------------------------------------------------------------------------------------

    def compute_distillation_losses(self, x, labels, teacher_logits=None, sample_weight=None, training=False):
        """All loss terms on one batch, as a dict of scalars (`loss`, `student_loss`, `distillation_loss`, and
        `hidden_loss` / `attention_loss` when enabled), plus `student_logits`.

        `teacher_logits` are computed by the frozen teacher when not given.
        """
        hidden_on, attention_on = self.hidden_weight > 0, self.attention_weight > 0
        if hidden_on or attention_on:
            t_logits, t_hidden, t_attention = self._views.teacher(x, training=False)
            s_logits, s_hidden, s_attention = self._views.student(x, training=training)
        else:
            t_logits = self.teacher(x, training=False) if teacher_logits is None else None
            s_logits = self.student(x, training=training)
        if teacher_logits is not None:
            t_logits = teacher_logits
        t_logits = tf.stop_gradient(tf.cast(t_logits, tf.float32))
        result = distillation_loss(labels, s_logits, t_logits, self.alpha, self.temperature, sample_weight)
        mask = x["input_mask"]
        if hidden_on:
            project = self.hidden_projection or (lambda h: h)
            terms = [masked_hidden_mse(project(s), tf.stop_gradient(t), mask) for s, t in zip(s_hidden, t_hidden)]
            result["hidden_loss"] = tf.add_n(terms)
            result["loss"] += self.hidden_weight * result["hidden_loss"]
        if attention_on:
            terms = [masked_attention_mse(s, tf.stop_gradient(t), mask) for s, t in zip(s_attention, t_attention)]
            result["attention_loss"] = tf.add_n(terms)
            result["loss"] += self.attention_weight * result["attention_loss"]
        result["student_logits"] = s_logits
        return result

    @staticmethod
    def _unpack(data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        if isinstance(y, (tuple, list)):
            if len(y) != 2:
                raise ValueError("Expected batches of `(x, labels)` or `(x, (labels, teacher_logits))`. Received "
                                 f"targets with {len(y)} parts.")
            return x, y[0], y[1], sample_weight
        return x, y, None, sample_weight

    def _update_metrics(self, result, labels, sample_weight):
        for name, tracker in self._trackers.items():
            tracker.update_state(result[name])
        sample_weight = labelled_weight(labels, sample_weight)  # examples without a label (-1) have no accuracy
        labels = tf.maximum(labels, 0)
        self._accuracy.update_state(labels, result["student_logits"], sample_weight)
        if getattr(self, "compiled_metrics", None) is not None:
            self.compiled_metrics.update_state(labels, result["student_logits"], sample_weight)
        return {m.name: m.result() for m in self.metrics}

    def train_step(self, data):
        x, labels, cached, sample_weight = self._unpack(data)
        with tf.GradientTape() as tape:
            result = self.compute_distillation_losses(x, labels, cached, sample_weight, training=True)
            # Gradients are summed over replicas: scale the per-replica mean so their sum is the global mean.
            scaled = result["loss"] / tf.distribute.get_strategy().num_replicas_in_sync
        variables = self.trainable_variables
        self.optimizer.apply_gradients(zip(tape.gradient(scaled, variables), variables))
        return self._update_metrics(result, labels, sample_weight)

    def test_step(self, data):
        x, labels, cached, sample_weight = self._unpack(data)
        result = self.compute_distillation_losses(x, labels, cached, sample_weight, training=False)
        return self._update_metrics(result, labels, sample_weight)
