"""Knowledge distillation: a smaller student learns from a fine-tuned teacher, in a Keras `Model` you `fit`.

`Distiller(teacher, student, alpha=..., temperature=...)` trains `student` on

    loss = alpha * CE(labels, student) + (1 - alpha) * T^2 * KL(softmax(teacher / T) || softmax(student / T))
           + hidden_weight * sum_j MSE(W h_student_j, h_teacher_{layer_map[j]})
           + attention_weight * sum_j MSE(A_student_j, A_teacher_{layer_map[j]})   (A: attention scores before softmax)

(the last two are TinyBERT's intermediate losses; `W` is a learned projection, present only when the widths differ).
The teacher is frozen. All hyperparameters are constructor arguments saved by `get_config`, so a `.keras` file of a
Distiller reloads with them. `distiller.student` is a plain tfspeed classifier, to be saved alone.

`student_from_teacher(teacher, layers=3)` builds a shallower student initialised from the teacher's layers (every other
layer, as DistilBERT; or a given list), or with `hidden_size=...` a narrower random-initialised one.
`teacher_logits(teacher, split)` computes the teacher's logits once (optionally cached on disk) for
`split.dataset(..., extra=logits)`, whose `(x, (y, teacher_logits))` batches the Distiller accepts as well as `(x, y)`.
`distill(teacher_dir, data, ...)` does the whole stage and writes a model directory.
"""

from __future__ import annotations

import hashlib
import io
import time
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np

from tfspeed import _checks, _io
from tfspeed.compat import keras, tf
from tfspeed.models.bert import (INPUT_NAMES, _unwrap, build_classifier, config_of, is_bert, layer_by_name,
                                 num_classes_of)

_register = keras.saving.register_keras_serializable(package="tfspeed")

LAYER_STRATEGIES = ("every_other", "uniform", "first", "last")


# ----------------------------------------------------------------------------------------------------------------------
# Losses
# ----------------------------------------------------------------------------------------------------------------------

def soft_cross_entropy_kl(teacher_logits, student_logits, temperature: float):
    """Per-example KL(softmax(teacher / T) || softmax(student / T)), [batch]."""
    t = tf.cast(teacher_logits, tf.float32) / temperature
    s = tf.cast(student_logits, tf.float32) / temperature
    log_pt, log_ps = tf.nn.log_softmax(t, -1), tf.nn.log_softmax(s, -1)
    return tf.reduce_sum(tf.exp(log_pt) * (log_pt - log_ps), axis=-1)


def distillation_loss(labels, student_logits, teacher_logits, alpha: float = 0.5, temperature: float = 2.0,
                      sample_weight=None) -> dict:
    """The logit part of the Distiller's loss, as a dict of scalars.

    `student_loss` = mean cross-entropy of the student on `labels`; `distillation_loss` = mean KL divergence of the
    temperature-softened teacher from the student's; `loss` = alpha * student_loss + (1 - alpha) * T^2 *
    distillation_loss (Hinton et al.'s T^2 keeps the soft gradients' scale independent of T).

    Args:
        labels: int class ids [batch].
        student_logits, teacher_logits: [batch, classes].
        alpha: weight of the hard-label loss, in [0, 1]. Defaults to `0.5`.
        temperature: softening temperature, > 0. Defaults to `2.0`.
        sample_weight: optional per-example weights [batch]. Defaults to `None` (all 1).
    """
    ce = keras.losses.sparse_categorical_crossentropy(labels, tf.cast(student_logits, tf.float32), from_logits=True)
    kl = soft_cross_entropy_kl(teacher_logits, student_logits, temperature)
    student_loss, kd_loss = _weighted_mean(ce, sample_weight), _weighted_mean(kl, sample_weight)
    total = alpha * student_loss + (1.0 - alpha) * temperature ** 2 * kd_loss
    return {"loss": total, "student_loss": student_loss, "distillation_loss": kd_loss}


def _weighted_mean(values, sample_weight=None):
    if sample_weight is None:
        return tf.reduce_mean(values)
    w = tf.cast(tf.reshape(sample_weight, tf.shape(values)), values.dtype)
    return tf.math.divide_no_nan(tf.reduce_sum(values * w), tf.reduce_sum(w))


def _masked_hidden_mse(student, teacher, mask):
    """MSE over valid tokens: [batch, seq, width] pairs, mask [batch, seq]."""
    m = tf.cast(mask, tf.float32)[:, :, tf.newaxis]
    sq = tf.square(tf.cast(student, tf.float32) - tf.cast(teacher, tf.float32)) * m
    return tf.math.divide_no_nan(tf.reduce_sum(sq), tf.reduce_sum(m) * tf.cast(tf.shape(teacher)[-1], tf.float32))


def _masked_attention_mse(student, teacher, mask):
    """MSE of attention logits [batch, heads, seq, seq] over valid (query, key) pairs.

    With different head counts the head-averaged maps are compared.
    """
    student, teacher = tf.cast(student, tf.float32), tf.cast(teacher, tf.float32)
    if student.shape[1] != teacher.shape[1]:
        student = tf.reduce_mean(student, axis=1, keepdims=True)
        teacher = tf.reduce_mean(teacher, axis=1, keepdims=True)
    m = tf.cast(mask, tf.float32)
    pairs = m[:, tf.newaxis, :, tf.newaxis] * m[:, tf.newaxis, tf.newaxis, :]
    sq = tf.square(student - teacher) * pairs
    heads = tf.cast(tf.shape(teacher)[1], tf.float32)
    return tf.math.divide_no_nan(tf.reduce_sum(sq), tf.reduce_sum(pairs) * heads)


# ----------------------------------------------------------------------------------------------------------------------
# Internals of a classifier: logits, hidden states, attention maps
# ----------------------------------------------------------------------------------------------------------------------

def _hub_layer(model):
    try:
        import tensorflow_hub as hub
    except ImportError:  # pragma: no cover
        return None
    for layer in getattr(model, "layers", []):
        if isinstance(_unwrap(layer), hub.KerasLayer):
            return _unwrap(layer)
    return None


def num_layers_of(model) -> int:
    """Transformer layers of a native tfspeed BERT or of a hub-layer classifier (from its `encoder_outputs`)."""
    if is_bert(model):
        return config_of(model).num_layers
    hub_layer = _hub_layer(model)
    if hub_layer is None:
        raise ValueError(f"Expected a tfspeed BERT classifier or a classifier on a `hub.KerasLayer` BERT encoder. "
                         f"Received: a model named {getattr(model, 'name', model)!r} with neither.")
    return len(hub_layer.output["encoder_outputs"])


def _model_inputs(model):
    return model.input if isinstance(model.input, dict) else dict(zip(INPUT_NAMES, model.inputs))


class _Internals:
    """A functional view of a classifier returning `[logits, *hidden_states, *attention_maps]` (shares its layers).

    Kept in a plain (untracked) holder, so its layers are not saved twice.
    """

    def __init__(self, model, layers: Sequence[int], hidden: bool, attention: bool, role: str):
        self.layers, self.hidden, self.attention = list(layers), hidden, attention
        self.score_scales = []
        outputs = [model.output]
        if hidden:
            if is_bert(model):
                outputs += [layer_by_name(model, f"layer_{i}_output_layer_norm").output for i in self.layers]
            else:
                hub_layer = _hub_layer(model)
                if hub_layer is None:
                    raise ValueError(f"`{role}` must be a tfspeed BERT or a hub-layer classifier for hidden-state "
                                     f"losses. Received: a model named {model.name!r}.")
                encoder_outputs = hub_layer.output["encoder_outputs"]
                outputs += [encoder_outputs[i] for i in self.layers]
        if attention:
            if not is_bert(model):
                raise ValueError(f"Attention-map losses (`attention_weight` > 0) need a native tfspeed BERT as "
                                 f"`{role}`: a hub.KerasLayer exposes only hidden states (`encoder_outputs`). "
                                 f"Received: {role} {model.name!r}. Pass attention_weight=0 or a native model.")
            # TinyBERT fits the unnormalised attention matrix (it converges faster than the softmax's): the scores,
            # scaled by 1/sqrt(head_size) as the softmax sees them.
            scores = [_unwrap(layer_by_name(model, f"layer_{i}_scores")) for i in self.layers]
            outputs += [layer.output for layer in scores]
            self.score_scales = [1.0 / float(layer.head_size) ** 0.5 for layer in scores]
        self.model = keras.Model(_model_inputs(model), outputs, name=f"{model.name}_internals")
        self.hidden_widths = [int(o.shape[-1]) for o in outputs[1:1 + len(self.layers)]] if hidden else []

    def __call__(self, x, training):
        out = self.model(x, training=training)
        out = out if isinstance(out, (list, tuple)) else [out]
        n = len(self.layers)
        hidden = list(out[1:1 + n]) if self.hidden else []
        attention = list(out[1 + n if self.hidden else 1:]) if self.attention else []
        attention = [a * scale for a, scale in zip(attention, self.score_scales)]
        return out[0], hidden, attention


def uniform_layer_map(student_layers: int, teacher_layers: int) -> list:
    """TinyBERT's uniform map: student layer j learns from teacher layer (j + 1) * Lt / Ls - 1 (last to last)."""
    return [(j + 1) * teacher_layers // student_layers - 1 for j in range(student_layers)]


# ----------------------------------------------------------------------------------------------------------------------
# The Distiller
# ----------------------------------------------------------------------------------------------------------------------

def _check_float(name, value, low, high=None, low_open=False):
    """`value` as a float in [low, high] ((low, high] with `low_open`; no upper bound when `high` is None)."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        v = None
    ok = v is not None and (v > low if low_open else v >= low) and (high is None or v <= high)
    if not ok:
        interval = f"{'(' if low_open else '['}{low}, {'inf)' if high is None else f'{high}]'}"
        raise ValueError(f"Received an invalid value for `{name}`, expected a float in {interval}. "
                         f"Received: {name}={value!r}")
    return v


@_register
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

    >>> student = student_from_teacher(teacher, layers=3)                       # doctest: +SKIP
    >>> distiller = Distiller(teacher, student, alpha=0.5, temperature=2.0)     # doctest: +SKIP
    >>> distiller.compile(optimizer=keras.optimizers.Adam(1e-4))                # doctest: +SKIP
    >>> distiller.fit(train.dataset(32, shuffle=True), epochs=3)                # doctest: +SKIP
    >>> distiller.student.save("student.keras")                                 # doctest: +SKIP
    """

    def __init__(self, teacher: keras.Model, student: keras.Model, alpha: float = 0.5, temperature: float = 2.0,
                 hidden_weight: float = 0.0, attention_weight: float = 0.0, layer_map: Optional[Sequence[int]] = None,
                 name: str = "distiller", **kwargs):
        super().__init__(name=name, **kwargs)
        # === Config ===
        self.alpha = _check_float("alpha", alpha, 0.0, 1.0)
        self.temperature = _check_float("temperature", temperature, 0.0, None, low_open=True)
        self.hidden_weight = _check_float("hidden_weight", hidden_weight, 0.0, None)
        self.attention_weight = _check_float("attention_weight", attention_weight, 0.0, None)
        for role, model in (("teacher", teacher), ("student", student)):
            if not isinstance(model, keras.Model):
                raise ValueError(f"Expected a tf_keras Model for `{role}`. Received: {role} of type "
                                 f"{type(model).__name__}.")
        t_classes, s_classes = int(teacher.output.shape[-1]), int(student.output.shape[-1])
        if t_classes != s_classes:
            raise ValueError(f"`teacher` and `student` must predict the same classes. Received: teacher with "
                             f"{t_classes} outputs, student with {s_classes}.")
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
        from tfspeed.artifacts import custom_objects as tfspeed_objects

        config = dict(config)
        objects = {**tfspeed_objects(), **(custom_objects or {})}
        for role in ("teacher", "student"):
            if isinstance(config.get(role), dict):
                config[role] = keras.saving.deserialize_keras_object(config[role], custom_objects=objects)
        return cls(**config)

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
            terms = [_masked_hidden_mse(project(s), tf.stop_gradient(t), mask) for s, t in zip(s_hidden, t_hidden)]
            result["hidden_loss"] = tf.add_n(terms)
            result["loss"] += self.hidden_weight * result["hidden_loss"]
        if attention_on:
            terms = [_masked_attention_mse(s, tf.stop_gradient(t), mask) for s, t in zip(s_attention, t_attention)]
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


class _Views:
    """Untracked holder of the teacher's and student's internal views (their layers are already tracked)."""

    teacher: Optional[_Internals] = None
    student: Optional[_Internals] = None


# ----------------------------------------------------------------------------------------------------------------------
# Students
# ----------------------------------------------------------------------------------------------------------------------

def select_layers(num_teacher_layers: int, layers: Union[int, Sequence[int]] = 3,
                  strategy: str = "every_other") -> list:
    """Teacher layer indices a student starts from.

    Args:
        num_teacher_layers: layers of the teacher.
        layers: number of student layers, or the explicit list of teacher layers (any order, each in range).
            Defaults to `3`.
        strategy: for an integer `layers`: `"every_other"` (0, 2, 4, ...: DistilBERT), `"uniform"` (i * Lt // k),
            `"first"` (0..k-1) or `"last"` (the top k). Defaults to `"every_other"`.

    Example:

    >>> select_layers(6, 3), select_layers(6, 2, "uniform"), select_layers(6, [1, 5])
    ([0, 2, 4], [0, 3], [1, 5])
    """
    n = int(num_teacher_layers)
    if isinstance(layers, (list, tuple)) or (hasattr(layers, "__iter__") and not isinstance(layers, str)):
        chosen = [int(i) for i in layers]
        if not chosen or any(not 0 <= i < n for i in chosen):
            raise ValueError(f"Received an invalid value for `layers`, expected a non-empty list of teacher layer "
                             f"indices in [0, {n}). Received: layers={list(layers)!r}")
        return chosen
    if isinstance(layers, bool) or not isinstance(layers, (int, np.integer)) or not 1 <= layers <= n:
        raise ValueError(f"Received an invalid value for `layers`, expected an integer in [1, {n}] (the teacher has "
                         f"{n} layers) or a list of layer indices. Received: layers={layers!r}")
    k = int(layers)
    if strategy == "every_other":
        if 2 * (k - 1) >= n:
            raise ValueError(f"Cannot take {k} of {n} teacher layers every other layer (needs {2 * k - 1}). "
                             f"Received: layers={k}. Pass strategy='uniform' or fewer layers.")
        return list(range(0, 2 * k, 2))
    if strategy == "uniform":
        return [i * n // k for i in range(k)]
    if strategy == "first":
        return list(range(k))
    if strategy == "last":
        return list(range(n - k, n))
    raise ValueError(f"Received an invalid value for `strategy`, expected one of {LAYER_STRATEGIES}. "
                     f"Received: strategy={strategy!r}")


def native_teacher(teacher: keras.Model) -> keras.Model:
    """A native tfspeed classifier with the weights of `teacher` (itself if native; a copy of a hub-layer classifier
    built from the config its tfspeed export records and the hub layer's current, fine-tuned variables)."""
    if is_bert(teacher):
        return teacher
    from tfspeed.hub import export, handles, weights

    hub_layer = _hub_layer(teacher)
    if hub_layer is None or not isinstance(getattr(hub_layer, "_handle", None), str):
        raise ValueError(f"Expected a tfspeed BERT classifier or a classifier on a hub.KerasLayer for `teacher`. "
                         f"Received: a model named {teacher.name!r}.")
    saved = export.saved_config(handles.local_path(hub_layer._handle))
    if saved is None:
        raise ValueError(f"Student layers can be copied only from a native teacher or a hub layer exported by "
                         f"tfspeed (it records its config). Received: a hub layer on {hub_layer._handle!r}. Import "
                         "it first with tfspeed.hub.build_classifier_from(handle) or pass `hidden_size`.")
    from tfspeed.models.config import BertConfig

    config = BertConfig.from_dict(saved)
    native = build_classifier(config, num_classes=int(teacher.output.shape[-1]),
                              classifier_dropout=float(layer_by_name(teacher, "classifier_dropout").rate))
    weight_map = weights.from_native_variables({v.name.rsplit(":", 1)[0]: v.numpy() for v in hub_layer.variables})
    weight_map["classifier"] = layer_by_name(teacher, "classifier").get_weights()
    weights.assign(native, weight_map)
    return native


def student_from_teacher(teacher: keras.Model, layers: Union[int, Sequence[int]] = 3, strategy: str = "every_other",
                         hidden_size: Optional[int] = None, num_heads: Optional[int] = None,
                         intermediate_size: Optional[int] = None, seed: Optional[int] = None,
                         name: str = "student") -> keras.Model:
    """A new, smaller tfspeed classifier for distilling `teacher` (which is left unchanged).

    With `hidden_size=None` (default) the student keeps the teacher's widths and has fewer layers, initialised from the
    teacher's: embeddings, pooler and classifier are copied, and student layer j is teacher layer `selected[j]`
    (`select_layers(Lt, layers, strategy)`). With `hidden_size` set, the student is narrower and random-initialised.

    Args:
        teacher: a native tfspeed BERT classifier, or a classifier on a hub layer exported by tfspeed.
        layers: number of layers, or the list of teacher layers to copy (e.g. `[0, 2, 4]`). Defaults to `3`.
        strategy: how an integer `layers` picks teacher layers (see `select_layers`). Defaults to `"every_other"`.
        hidden_size: width of a narrower random-initialised student. Defaults to `None` (teacher's width, copied).
        num_heads: heads of a narrower student. Defaults to `hidden_size // teacher head size` (at least 1).
        intermediate_size: FFN width of a narrower student. Defaults to the teacher's FFN/hidden ratio * `hidden_size`.
        seed: random seed for a narrower student's initial weights. Defaults to `None`.
        name: Defaults to `"student"`.

    Returns:
        The student, a plain tfspeed classifier.
    """
    native = native_teacher(teacher)
    config = config_of(native)
    num_classes = num_classes_of(native)
    dropout = float(_unwrap(layer_by_name(native, "classifier_dropout")).rate)
    if hidden_size is None:
        chosen = select_layers(config.num_layers, layers, strategy)
        student_config = config.replace(
            num_layers=len(chosen), layer_num_heads=[config.layer_num_heads[i] for i in chosen],
            layer_intermediate_sizes=[config.layer_intermediate_sizes[i] for i in chosen])
        student = build_classifier(student_config, num_classes=num_classes, classifier_dropout=dropout, name=name)
        _copy_student_weights(native, student, chosen)
        return student
    if isinstance(hidden_size, bool) or not isinstance(hidden_size, (int, np.integer)) or hidden_size < 1:
        raise ValueError(f"Received an invalid value for `hidden_size`, expected a positive integer. "
                         f"Received: hidden_size={hidden_size!r}")
    k = layers if isinstance(layers, (int, np.integer)) and not isinstance(layers, bool) else len(select_layers(
        config.num_layers, layers, strategy))
    if not 1 <= int(k) <= 64:
        raise ValueError(f"Received an invalid value for `layers`, expected a positive integer. Received: layers={k!r}")
    heads = num_heads or max(1, int(hidden_size) // config.head_size)
    if hidden_size % heads:
        raise ValueError(f"`hidden_size` must be divisible by `num_heads`. Received: hidden_size={hidden_size}, "
                         f"num_heads={heads}. Pass num_heads explicitly.")
    inner = intermediate_size or max(1, round(config.intermediate_size / config.hidden_size * hidden_size))
    student_config = config.replace(num_layers=int(k), hidden_size=int(hidden_size), num_heads=int(heads),
                                    head_size=None, intermediate_size=int(inner))
    if seed is not None:
        keras.utils.set_random_seed(seed)
    return build_classifier(student_config, num_classes=num_classes, classifier_dropout=dropout, name=name)


def _copy_student_weights(teacher: keras.Model, student: keras.Model, chosen: Sequence[int]) -> None:
    src = {_unwrap(l).name: _unwrap(l) for l in teacher.layers}
    for layer in student.layers:
        layer = _unwrap(layer)
        if not layer.weights:
            continue
        source_name = layer.name
        if layer.name.startswith("layer_"):
            index, suffix = layer.name[len("layer_"):].split("_", 1)
            source_name = f"layer_{chosen[int(index)]}_{suffix}"
        values = src[source_name].get_weights()
        if [v.shape for v in values] != [tuple(w.shape) for w in layer.weights]:  # pragma: no cover - same config
            raise ValueError(f"Shape mismatch copying teacher layer {source_name!r} to student layer {layer.name!r}.")
        layer.set_weights(values)


# ----------------------------------------------------------------------------------------------------------------------
# Cached teacher logits
# ----------------------------------------------------------------------------------------------------------------------

def _fingerprint(teacher, split) -> str:
    h = hashlib.sha1()
    for key in sorted(split.features):
        h.update(np.ascontiguousarray(split.features[key]).tobytes())
    h.update(np.ascontiguousarray(split.labels).tobytes())
    h.update(teacher.name.encode())
    h.update(str(teacher.count_params()).encode())
    h.update(np.float64(sum(float(np.sum(w)) for w in layer_by_name(teacher, "classifier").get_weights())).tobytes())
    return h.hexdigest()


def teacher_logits(teacher: keras.Model, split, batch_size: int = 128, cache=None) -> np.ndarray:
    """The teacher's logits on every example of `split` (an `EncodedSplit`), in its order, float32 [n, classes].

    Computed once (in bucketed batches): pass them as `split.dataset(..., extra=logits)` and the Distiller skips the
    teacher's forward pass (unless intermediate losses need its hidden states).

    Args:
        teacher: the teacher classifier.
        split: an `EncodedSplit`.
        batch_size: Defaults to `128`.
        cache: optional `.npz` path: read when it was written for the same split and teacher, else (re)written.
            Defaults to `None` (no file).
    """
    from tfspeed.train import predict_logits

    fingerprint = _fingerprint(teacher, split) if cache is not None else None
    if cache is not None and Path(cache).is_file():
        with np.load(cache) as saved:
            if str(saved["fingerprint"]) == fingerprint and saved["logits"].shape[0] == len(split):
                return saved["logits"].astype(np.float32)
    logits = predict_logits(teacher, split, batch_size).astype(np.float32)
    if cache is not None:
        buffer = io.BytesIO()
        np.savez(buffer, logits=logits, fingerprint=np.array(fingerprint))
        _io.write_bytes(cache, buffer.getvalue(), overwrite=True, argument="cache")
    return logits


# ----------------------------------------------------------------------------------------------------------------------
# The whole stage
# ----------------------------------------------------------------------------------------------------------------------

def _in_current_scope(model: keras.Model) -> keras.Model:
    """`model`, or a copy of it made here when its variables belong to another strategy than the current one (a
    teacher loaded before `strategy.scope()` was entered: the Distiller would fail with variables outside it)."""
    extended = tf.distribute.get_strategy().extended
    if all(extended.variable_created_in_scope(v) for v in model.weights):
        return model
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy


def fit_student(student: keras.Model, teacher: keras.Model, train, validation=None, epochs: int = 2,
                batch_size: int = 32, learning_rate: float = 3e-5, alpha: float = 0.5, temperature: float = 2.0,
                hidden_weight: float = 0.0, callbacks: Sequence = (), verbose="auto", seed: int = 0):
    """Fits `student` on `train` through a `Distiller` from `teacher` (soft targets from cached teacher logits);
    returns the `History` (with `seconds_per_epoch`). `student` is trained in place; `teacher` is frozen while
    fitting and its `trainable` flag restored afterwards.

    The fine-tuning step of pruning and of other compressions with the uncompressed model as teacher: a pruned model
    from `tfspeed.compress.prune.prune` fits this way with `callbacks=prune.pruning_callbacks()` (TFMOT's
    `UpdatePruningStep` finds the wrappers inside the Distiller). Call it inside `strategy.scope()` to distribute; a
    teacher made outside that scope is copied into it (the caller's teacher is then left as it is).

    Args:
        student, teacher: classifiers with the same inputs and classes (`Distiller`).
        train, validation: `EncodedSplit`s. epochs: Defaults to `2`. batch_size: Defaults to `32`.
        learning_rate: peak AdamW rate (warm-up then linear decay). Defaults to `3e-5`.
        alpha, temperature: see `Distiller`. Default `0.5`, `2.0`.
        hidden_weight: weight of the layer-by-layer hidden-state MSE to the teacher (`Distiller`; student and teacher
            layers mapped uniformly). The teacher then runs at every step. Defaults to `0.0` (logits only).
        callbacks: Keras callbacks. Defaults to `()`.
    """
    _checks.positive_int("epochs", epochs)
    from tfspeed.train import EpochTimer, make_optimizer

    teacher = _in_current_scope(teacher)
    was_trainable = teacher.trainable
    try:
        distiller = Distiller(teacher, student, alpha=alpha, temperature=temperature,  # freezes the teacher
                              hidden_weight=hidden_weight)
        distiller.compile(optimizer=make_optimizer(learning_rate, -(-len(train) // batch_size) * epochs))
        cached = teacher_logits(teacher, train)
        timer = EpochTimer()
        history = distiller.fit(train.dataset(batch_size, shuffle=True, seed=seed, extra=cached), epochs=epochs,
                                validation_data=validation.dataset(128) if validation is not None else None,
                                callbacks=[timer, *callbacks], verbose=verbose)
    finally:
        teacher.trainable = was_trainable  # a model pruned from the teacher later must stay trainable
    history.history["seconds_per_epoch"] = timer.seconds
    return history


def distill(teacher, data="rotten_tomatoes", student=None, layers: Union[int, Sequence[int]] = 3,
            layer_strategy: str = "every_other", hidden_size: Optional[int] = None, alpha: float = 0.5,
            temperature: float = 2.0, hidden_weight: float = 0.0, attention_weight: float = 0.0,
            layer_map: Optional[Sequence[int]] = None, epochs: int = 3, batch_size: int = 32,
            learning_rate: float = 1e-4, seq_length: Optional[int] = None, vocab_path=None,
            cache_teacher_logits: bool = True, limit: Optional[int] = None, eval_limit: Optional[int] = None,
            out=None, overwrite: bool = False, strategy=None, verbose="auto", callbacks: Sequence = (),
            data_kwargs: Optional[dict] = None, seed: int = 0):
    """Distils `teacher` into a smaller student on a labelled dataset; writes a model directory when `out` is given.

    Args:
        teacher: a tfspeed model directory (its seq_length, vocabulary and labels are used) or a Keras classifier
            (then `seq_length` and `vocab_path` are required).
        data: `"rotten_tomatoes"`, a CSV / JSONL path or a `TextDataset`. Defaults to `"rotten_tomatoes"`.
        student: a ready student. Defaults to `None`: `student_from_teacher(teacher, layers, layer_strategy,
            hidden_size)`.
        layers, layer_strategy, hidden_size: see `student_from_teacher`. Defaults to `3`, `"every_other"`, `None`.
        alpha, temperature, hidden_weight, attention_weight, layer_map: see `Distiller`. Defaults to `0.5`, `2.0`,
            `0.0`, `0.0`, `None`.
        epochs: Defaults to `3`. batch_size: Defaults to `32`. learning_rate: peak AdamW rate (warm-up then linear
            decay). Defaults to `1e-4`.
        seq_length: tokens per example. Defaults to the teacher directory's.
        vocab_path: WordPiece vocabulary. Defaults to the teacher directory's.
        cache_teacher_logits: compute the teacher's training logits once before training instead of every step.
            Defaults to `True`.
        limit, eval_limit: use only the first N training / evaluation examples. Defaults to `None` (all).
        out: model directory to write (the student, its TF-Hub export, `metrics.json`). Defaults to `None`.
        overwrite: replace `out` if it exists. Defaults to `False`.
        strategy: a `tf.distribute.Strategy` to load, build and fit under. Defaults to the default strategy.
        seed: seed of shuffling and of a random student. Defaults to `0`.

    Returns:
        `(student, metrics)`: metrics has `accuracy` (student, test), `teacher_accuracy`, `accuracy_ratio`,
        `validation_accuracy`, `teacher_layers`, parameter counts, `seconds_per_epoch` and the `history`.
    """
    from tfspeed import artifacts
    from tfspeed.data import EncodedDataset, TextDataset, Tokenizer, load_dataset
    from tfspeed.train import EpochTimer, accuracy, make_optimizer

    if out is not None:
        _io.check_writable(out, overwrite)
    strategy = strategy or tf.distribute.get_strategy()
    info = None
    with strategy.scope():
        if isinstance(teacher, (str, Path)):
            teacher_path = str(teacher)
            teacher, info = artifacts.load_model_dir(teacher)
        else:
            teacher_path = getattr(teacher, "name", "teacher")
    seq_length = seq_length or (info.seq_length if info else None)
    vocab_path = vocab_path or (info.vocab_path if info else None)
    if seq_length is None or vocab_path is None:
        raise ValueError("Pass `seq_length` and `vocab_path` with a Keras `teacher` (a model directory records both). "
                         f"Received: seq_length={seq_length!r}, vocab_path={vocab_path!r}")
    dataset = data if isinstance(data, TextDataset) else load_dataset(data, **(data_kwargs or {}))
    if info is not None and list(info.label_names) != list(dataset.label_names):
        raise ValueError(f"The teacher was trained on labels {list(info.label_names)}, the data has "
                         f"{list(dataset.label_names)}. Pass label names in the teacher's order (--label-names).")
    encoded = EncodedDataset(dataset, Tokenizer(vocab_path, seq_length=seq_length), limit=limit, eval_limit=eval_limit)

    chosen = []
    if student is None and hidden_size is None:
        chosen = select_layers(num_layers_of(teacher), layers, layer_strategy)
    with strategy.scope():
        if student is None:
            student = student_from_teacher(teacher, layers, layer_strategy, hidden_size=hidden_size, seed=seed)
        distiller = Distiller(teacher, student, alpha=alpha, temperature=temperature, hidden_weight=hidden_weight,
                              attention_weight=attention_weight, layer_map=layer_map)
        steps = -(-len(encoded.train) // batch_size)
        distiller.compile(optimizer=make_optimizer(learning_rate, steps * epochs))
    start = time.perf_counter()
    cached = teacher_logits(teacher, encoded.train) if cache_teacher_logits else None
    cache_seconds = time.perf_counter() - start
    timer = EpochTimer()
    with strategy.scope():
        history = distiller.fit(encoded.train.dataset(batch_size, shuffle=True, seed=seed, extra=cached),
                                epochs=epochs, validation_data=encoded.validation.dataset(128),
                                callbacks=[timer, *callbacks], verbose=verbose)
    student = distiller.student
    student_acc, teacher_acc = accuracy(student, encoded.test), accuracy(teacher, encoded.test)
    metrics = {"accuracy": student_acc, "teacher_accuracy": teacher_acc,
               "accuracy_ratio": student_acc / teacher_acc if teacher_acc else None,
               "validation_accuracy": accuracy(student, encoded.validation), "split": "test",
               "num_examples": len(encoded.test), "dataset": dataset.name, "teacher": teacher_path,
               "teacher_layers": chosen,
               "student_num_layers": num_layers_of(student), "teacher_num_layers": num_layers_of(teacher),
               "student_params": int(student.count_params()), "teacher_params": int(teacher.count_params()),
               "alpha": alpha, "temperature": temperature, "hidden_weight": hidden_weight,
               "attention_weight": attention_weight, "hidden_size": hidden_size,
               "layer_map": None if distiller.layer_map is None else [int(i) for i in distiller.layer_map],
               "seq_length": seq_length, "epochs": epochs, "batch_size": batch_size, "learning_rate": learning_rate,
               "train_examples": len(encoded.train), "cached_teacher_logits": bool(cache_teacher_logits),
               "teacher_logits_seconds": cache_seconds if cache_teacher_logits else None,
               "seconds_per_epoch": timer.seconds,
               "history": {k: [float(v) for v in vs] for k, vs in history.history.items()}}
    if out is not None:
        new_info = artifacts.ModelInfo(
            seq_length=seq_length, label_names=encoded.label_names,
            base=(info.base if info else teacher_path), stage="distill", vocab_path=str(vocab_path),
            extra={"teacher": teacher_path, "teacher_layers": metrics["teacher_layers"], "alpha": alpha,
                   "temperature": temperature})
        artifacts.save_model_dir(student, out, new_info, metrics, overwrite=overwrite)
    return student, metrics
