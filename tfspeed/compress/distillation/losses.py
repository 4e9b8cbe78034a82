"""The distillation losses: Hinton's soft targets and TinyBERT's masked hidden-state and attention-map MSEs.

    loss = alpha * CE(labels, student) + (1 - alpha) * T^2 * KL(softmax(teacher / T) || softmax(student / T))
           + hidden_weight * sum_j MSE(W h_student_j, h_teacher_{layer_map[j]})
           + attention_weight * sum_j MSE(A_student_j, A_teacher_{layer_map[j]})   (A: attention scores before softmax)

`distillation_loss` is the logit part; the `Distiller` adds the intermediate terms with `masked_hidden_mse` and
`masked_attention_mse`.
"""

from __future__ import annotations

from tfspeed.compat import keras, tf
from tfspeed.compress.distillation.config import DistillConfig

__all__ = ["soft_cross_entropy_kl", "distillation_loss", "masked_hidden_mse", "masked_attention_mse"]


def soft_cross_entropy_kl(teacher_logits, student_logits, temperature: float):
    """Per-example KL(softmax(teacher / T) || softmax(student / T)), [batch]."""
    t = tf.cast(teacher_logits, tf.float32) / temperature
    s = tf.cast(student_logits, tf.float32) / temperature
    log_pt, log_ps = tf.nn.log_softmax(t, -1), tf.nn.log_softmax(s, -1)
    return tf.reduce_sum(tf.exp(log_pt) * (log_pt - log_ps), axis=-1)


def distillation_loss(labels, student_logits, teacher_logits, alpha: float = DistillConfig.alpha,
                      temperature: float = DistillConfig.temperature, sample_weight=None) -> dict:
    """The logit part of the Distiller's loss, as a dict of scalars.

    `student_loss` = mean cross-entropy of the student on `labels`; `distillation_loss` = mean KL divergence of the
    temperature-softened teacher from the student's; `loss` = alpha * student_loss + (1 - alpha) * T^2 *
    distillation_loss (Hinton et al.'s T^2 keeps the soft gradients' scale independent of T).

    Args:
        labels: int class ids [batch]; `-1` marks an example without a label (text the teacher labelled: only
            the soft-target loss learns from it).
        student_logits, teacher_logits: [batch, classes].
        alpha: weight of the hard-label loss, in [0, 1]. Defaults to `0.5`.
        temperature: softening temperature, > 0. Defaults to `2.0`.
        sample_weight: optional per-example weights [batch]. Defaults to `None` (all 1).
    """
    labels = tf.reshape(tf.cast(labels, tf.int32), [-1])
    labelled = tf.cast(labels >= 0, tf.float32)
    ce = keras.losses.sparse_categorical_crossentropy(tf.maximum(labels, 0), tf.cast(student_logits, tf.float32),
                                                      from_logits=True)
    kl = soft_cross_entropy_kl(teacher_logits, student_logits, temperature)
    hard_weight = labelled if sample_weight is None else labelled * tf.cast(tf.reshape(sample_weight, [-1]),
                                                                            tf.float32)
    student_loss, kd_loss = _weighted_mean(ce, hard_weight), _weighted_mean(kl, sample_weight)
    total = alpha * student_loss + (1.0 - alpha) * temperature ** 2 * kd_loss
    return {"loss": total, "student_loss": student_loss, "distillation_loss": kd_loss}


def _weighted_mean(values, sample_weight=None):
    if sample_weight is None:
        return tf.reduce_mean(values)
    w = tf.cast(tf.reshape(sample_weight, tf.shape(values)), values.dtype)
    return tf.math.divide_no_nan(tf.reduce_sum(values * w), tf.reduce_sum(w))


def masked_hidden_mse(student, teacher, mask):
    """MSE over valid tokens: [batch, seq, width] pairs, mask [batch, seq]."""
    m = tf.cast(mask, tf.float32)[:, :, tf.newaxis]
    sq = tf.square(tf.cast(student, tf.float32) - tf.cast(teacher, tf.float32)) * m
    return tf.math.divide_no_nan(tf.reduce_sum(sq), tf.reduce_sum(m) * tf.cast(tf.shape(teacher)[-1], tf.float32))


def masked_attention_mse(student, teacher, mask):
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
