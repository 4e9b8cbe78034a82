"""Distillation as Python verbs on in-memory models and `EncodedSplit`s.

`distill(teacher, train, config=DistillConfig(layers=2))` builds a student from the teacher's layers and fits it
through a `Distiller`, returning `(student, history)`; `fit_student(student, teacher, train)` fits a student you made
(a pruned or quantize-aware copy of the teacher, a structurally smaller model ...). Both take a `DistillConfig` plus
keyword shortcuts (`epochs=1` is `config=DistillConfig(epochs=1)`), and leave the teacher as it was.
"""

from __future__ import annotations

import time
from typing import Sequence

from tfspeed.compat import keras, tf
from tfspeed.compress.distillation.config import DistillConfig
from tfspeed.compress.distillation.distiller import Distiller
from tfspeed.compress.distillation.students import student_from_teacher
from tfspeed.compress.distillation.teacher import teacher_logits
from tfspeed.train import EpochTimer, make_optimizer

__all__ = ["distill", "distill_chain", "fit_student"]


def _in_current_scope(model: keras.Model) -> keras.Model:
    """`model`, or a copy of it made here when its variables belong to another strategy than the current one (a
    teacher loaded before `strategy.scope()` was entered: the Distiller would fail with variables outside it)."""
    extended = tf.distribute.get_strategy().extended
    if all(extended.variable_created_in_scope(v) for v in model.weights):
        return model
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy


def fit_student(student: keras.Model, teacher: keras.Model, train, validation=None, config=None, *,
                callbacks: Sequence = (), verbose="auto", logits_cache=None, **overrides):
    """Fits `student` on `train` through a `Distiller` from `teacher`; returns the Keras `History`.

    `student` is trained in place; `teacher` is frozen while fitting and its `trainable` flag restored afterwards.
    The history has `seconds_per_epoch` beside the Distiller's losses and metrics; `history.model` is the Distiller
    (its resolved `layer_map`), and `history.teacher_logits_seconds` the time spent computing the cached teacher
    logits (None when `cache_teacher_logits` is off).

    The fine-tuning step of pruning and of other compressions with the uncompressed model as teacher: a pruned model
    from `tfspeed.compress.prune.prune` fits this way with `callbacks=prune.pruning_callbacks()` (TFMOT's
    `UpdatePruningStep` finds the wrappers inside the Distiller). Call it inside `strategy.scope()` to distribute; a
    teacher made outside that scope is copied into it (the caller's teacher is then left as it is).

    Args:
        student, teacher: classifiers with the same inputs and classes (`Distiller`).
        train: the training `EncodedSplit`.
        validation: an `EncodedSplit` evaluated after each epoch. Defaults to `None`.
        config: a `DistillConfig` (or its dict). Defaults to `None`: `DistillConfig()`. Used here: `alpha`,
            `temperature`, `hidden_weight`, `attention_weight`, `layer_map` (see `Distiller`), `epochs` (`3`),
            `batch_size` (`32`), `learning_rate` (peak AdamW rate, warm-up then linear decay: `1e-4`),
            `cache_teacher_logits` (`True`: the teacher's logits are computed once before training) and `seed` (`0`,
            of shuffling). The student's shape settings are ignored.
        callbacks: Keras callbacks. Defaults to `()`.
        verbose: Keras verbosity. Defaults to `"auto"`.
        logits_cache: a `.npz` path for the cached teacher logits, shared by the fits that have the same teacher and
            training split (`teacher_logits(cache=...)`: reused only when written for the same split and teacher).
            Defaults to `None` (computed for this fit only).
        **overrides: `DistillConfig` settings replacing those of `config` (e.g. `epochs=1, hidden_weight=1.0`).
    """
    config = DistillConfig.resolve(config, **overrides)
    teacher = _in_current_scope(teacher)
    was_trainable = teacher.trainable
    try:
        distiller = Distiller(teacher, student, alpha=config.alpha, temperature=config.temperature,  # freezes teacher
                              hidden_weight=config.hidden_weight, attention_weight=config.attention_weight,
                              layer_map=config.layer_map)
        steps = -(-len(train) // config.batch_size)
        distiller.compile(optimizer=make_optimizer(config.learning_rate, steps * config.epochs))
        logits_seconds, cached = None, None
        if config.cache_teacher_logits:
            start = time.perf_counter()
            cached = teacher_logits(teacher, train, cache=logits_cache)
            logits_seconds = time.perf_counter() - start
        timer = EpochTimer()
        history = distiller.fit(train.dataset(config.batch_size, shuffle=True, seed=config.seed, extra=cached),
                                epochs=config.epochs,
                                validation_data=validation.dataset(128) if validation is not None else None,
                                callbacks=[timer, *callbacks], verbose=verbose)
    finally:
        teacher.trainable = was_trainable  # a model pruned from the teacher later must stay trainable
    history.history["seconds_per_epoch"] = timer.seconds
    history.teacher_logits_seconds = logits_seconds
    return history


def distill(teacher: keras.Model, train, validation=None, student=None, config=None, *, callbacks: Sequence = (),
            verbose="auto", logits_cache=None, **overrides):
    """Distils `teacher` into a smaller student on `train`; returns `(student, history)`.

    The teacher is left as it was (weights and `trainable` flag). Call it inside `strategy.scope()` to distribute.

    Args:
        teacher: a trained classifier: a native tfspeed BERT, or a classifier on a `hub.KerasLayer` encoder.
        train: the training `EncodedSplit`.
        validation: an `EncodedSplit` evaluated after each epoch. Defaults to `None`.
        student: a ready student, trained in place and returned. Defaults to `None`: a new one,
            `student_from_teacher(teacher, config.layers, config.layer_strategy, config.hidden_size, ...)`.
        config: a `DistillConfig` (or its dict). Defaults to `None`: `DistillConfig()` (3 student layers, every other
            teacher layer; alpha 0.5, temperature 2.0; 3 epochs of 32 at 1e-4).
        callbacks: Keras callbacks. Defaults to `()`.
        verbose: Keras verbosity. Defaults to `"auto"`.
        logits_cache: `.npz` path of the teacher logits shared between fits (see `fit_student`). Defaults to `None`.
        **overrides: `DistillConfig` settings replacing those of `config` (e.g. `layers=2, epochs=1`).

    Example:

    ```python
    student, history = distill(teacher, train, validation, layers=2, epochs=1)
    student, history = distill(teacher, train, config=DistillConfig(layers=[0, 3]))
    ```
    """
    config = DistillConfig.resolve(config, **overrides)
    if student is None:
        student = student_from_teacher(teacher, config.layers, config.layer_strategy, hidden_size=config.hidden_size,
                                       num_heads=config.num_heads, intermediate_size=config.intermediate_size,
                                       seed=config.seed)
    history = fit_student(student, teacher, train, validation, config, callbacks=callbacks, verbose=verbose,
                          logits_cache=logits_cache)
    return student, history


def distill_chain(teacher: keras.Model, train, validation=None, stages: Sequence[int] = None, config=None, *,
                  callbacks: Sequence = (), verbose="auto", logits_cache=None, on_stage=None, start=None,
                  **overrides):
    """Multi-stage distillation (TAKD): the teacher into an assistant, the assistant into a smaller model, ... .

    Each stage's student starts from the model before it (`student_from_teacher(previous, k, ...)`: its layers picked
    by `config.layer_strategy`, or evenly (`uniform`) when every other layer does not fit, as 4 of 6) and is fitted
    from it as `fit_student` does. Returns `[(model, history), ...]`, one
    per stage, the last being the final student.

    Args:
        teacher: the trained classifier the chain starts from.
        train / validation: `EncodedSplit`s.
        stages: the number of layers of each model in turn, strictly decreasing and below the teacher's (`(4, 2)`).
            Defaults to `config.stages`.
        config: a `DistillConfig`; every stage uses its loss and fit settings.
        callbacks, verbose: as `fit_student`.
        logits_cache: `.npz` path of the first stage's teacher logits (`fit_student`). Defaults to `None`.
        on_stage: called as `on_stage(index, model, history)` after each stage (e.g. to save it). Defaults to `None`.
        start: `(index, model)`: resume after stage `index` (0-based) whose model is given. Defaults to `None`.
        **overrides: `DistillConfig` settings replacing those of `config`.
    """
    from tfspeed.compress.distillation.config import check_stages
    from tfspeed.compress.distillation.internals import num_layers_of

    config = DistillConfig.resolve(config, **overrides)
    stages = check_stages(tuple(stages) if stages is not None else config.stages, num_layers_of(teacher))
    if stages is None:
        raise ValueError("Expected the layers of each stage in `stages` (or `config.stages`). Received: none.")
    results, previous, first = [], teacher, 0
    if start is not None:
        first, previous = start[0] + 1, start[1]
    for i in range(first, len(stages)):
        strategy = config.layer_strategy
        if strategy == "every_other" and 2 * stages[i] - 1 > num_layers_of(previous):
            strategy = "uniform"  # e.g. 4 of 6: every other layer does not fit; spread them evenly instead
        student = student_from_teacher(previous, stages[i], strategy, seed=config.seed)
        history = fit_student(student, previous, train, validation, config, callbacks=callbacks, verbose=verbose,
                              logits_cache=logits_cache if previous is teacher else None)
        results.append((student, history))
        if on_stage is not None:
            on_stage(i, student, history)
        previous = student
    return results
