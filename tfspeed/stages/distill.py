"""The distillation stage: a teacher model directory distilled into a smaller student model directory
(`tfspeed distill`, and the `distill` step of `tfspeed optimize`)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

from tfspeed.compress.distillation import DistillConfig, num_layers_of, select_layers
from tfspeed.compress.distillation import distill as distill_in_memory
from tfspeed.stages.base import StageContext, check_inputs, register_stage


@register_stage("distill", DistillConfig, help="distil the model into a student with fewer layers")
def run(source, config: DistillConfig, out: Optional[Path], ctx: StageContext, student=None, vocab_path=None,
        callbacks: Sequence = (), return_model: bool = False):
    """Distils the teacher `source` (a model directory, or a Keras classifier with `ctx.seq_length` and
    `vocab_path`) into a student; writes a model directory to `out` when given.

    Args:
        source: the teacher: a tfspeed model directory (its seq_length, vocabulary and labels are used) or a Keras
            classifier.
        config: a `DistillConfig` (student layers, loss weights, epochs, learning rate, ...).
        out: the model directory to write (the student, its TF-Hub export, `metrics.json`), or `None`.
        ctx: the data, strategy and checkpoints (`StageContext`).
        student: a ready student, trained in place. Defaults to `None` (`student_from_teacher` per `config`).
        vocab_path: WordPiece vocabulary. Defaults to the teacher directory's.

        return_model: return `(student, metrics)` instead of the metrics alone. Defaults to `False`.

    Returns:
        The metrics (also written to `out/metrics.json`): `accuracy`, `macro_f1` and `per_class_accuracy` (student,
        test), `teacher_accuracy`, `accuracy_ratio`, `validation_accuracy`, `teacher_layers`, parameter counts,
        `seconds_per_epoch` and the `history`.
    """
    from tfspeed import _io, artifacts
    from tfspeed.train import accuracy, evaluate

    if out is not None:
        _io.check_writable(out, ctx.overwrite)
    info = None
    with ctx.strategy.scope():
        if isinstance(source, (str, Path)):
            teacher_path = str(source)
            teacher, info = artifacts.load_model_dir(source)
            check_inputs(source, info, ctx.dataset)
        else:
            teacher, teacher_path = source, getattr(source, "name", "teacher")
    seq_length = ctx.seq_length or (info.seq_length if info else None)
    vocab_path = vocab_path or (info.vocab_path if info else None)
    if seq_length is None or vocab_path is None:
        raise ValueError("Pass `seq_length` and `vocab_path` with a Keras `teacher` (a model directory records both). "
                         f"Received: seq_length={seq_length!r}, vocab_path={vocab_path!r}")
    dataset = ctx.dataset
    if info is not None and list(info.label_names) != list(dataset.label_names):
        raise ValueError(f"The teacher was trained on labels {list(info.label_names)}, the data has "
                         f"{list(dataset.label_names)}. Pass label names in the teacher's order (--label-names).")
    encoded = ctx.encoded(vocab_path, seq_length, info.lower_case if info else True)

    chosen = []
    if student is None and config.hidden_size is None:
        chosen = select_layers(num_layers_of(teacher), config.layers, config.layer_strategy)
    with ctx.strategy.scope():
        student, history = distill_in_memory(teacher, encoded.train, encoded.validation, student=student,
                                             config=config, verbose=ctx.verbose,
                                             callbacks=[*ctx.fit_callbacks("distill"), *callbacks],
                                             logits_cache=ctx.logits_cache(source))
    distiller = history.model
    student_scores = evaluate(student, encoded.test, encoded.label_names)
    student_acc, teacher_acc = student_scores["accuracy"], ctx.known_accuracy(source, teacher, encoded.test)
    c = config
    metrics = {**student_scores, "teacher_accuracy": teacher_acc,
               "accuracy_ratio": student_acc / teacher_acc if teacher_acc else None,
               "validation_accuracy": accuracy(student, encoded.validation), "split": "test",
               "num_examples": len(encoded.test), "dataset": dataset.name, "teacher": teacher_path,
               "teacher_layers": chosen,
               "student_num_layers": num_layers_of(student), "teacher_num_layers": num_layers_of(teacher),
               "student_params": int(student.count_params()), "teacher_params": int(teacher.count_params()),
               "alpha": c.alpha, "temperature": c.temperature, "hidden_weight": c.hidden_weight,
               "attention_weight": c.attention_weight, "hidden_size": c.hidden_size,
               "layer_map": None if distiller.layer_map is None else [int(i) for i in distiller.layer_map],
               "seq_length": seq_length, "epochs": c.epochs, "batch_size": c.batch_size,
               "learning_rate": c.learning_rate, "train_examples": len(encoded.train),
               "cached_teacher_logits": c.cache_teacher_logits,
               "teacher_logits_seconds": history.teacher_logits_seconds,
               "seconds_per_epoch": history.history["seconds_per_epoch"],
               "history": {k: [float(v) for v in vs] for k, vs in history.history.items()
                           if k != "seconds_per_epoch"}}
    if out is not None:
        new_info = artifacts.ModelInfo(
            seq_length=seq_length, label_names=encoded.label_names,
            base=(info.base if info else teacher_path), stage="distill", vocab_path=str(vocab_path),
            extra={"teacher": teacher_path, "teacher_layers": metrics["teacher_layers"], "alpha": c.alpha,
                   "temperature": c.temperature},
            lower_case=info.lower_case if info else True, text_pair=dataset.is_pairs)
        artifacts.save_model_dir(student, out, new_info, metrics, overwrite=ctx.overwrite)
    return (student, metrics) if return_model else metrics


def distill_to_dir(teacher, data="rotten_tomatoes", student=None, layers=None, layer_strategy=None, hidden_size=None,
                   alpha=None, temperature=None, hidden_weight=None, attention_weight=None, layer_map=None,
                   epochs=None, batch_size=None, learning_rate=None, seq_length: Optional[int] = None,
                   vocab_path=None, cache_teacher_logits=None, limit: Optional[int] = None,
                   eval_limit: Optional[int] = None, out=None, overwrite: bool = False, strategy=None,
                   verbose="auto", callbacks: Sequence = (), data_kwargs: Optional[dict] = None, seed=None):
    """The stage with the keyword arguments of the former `tfspeed.compress.distill.distill`: `(student, metrics)`.

    Settings left `None` take `DistillConfig`'s defaults; `data` is `"rotten_tomatoes"`, a CSV / JSONL path or a
    `TextDataset`. Prefer `run(teacher_dir, DistillConfig(...), out, StageContext(dataset))`.
    """
    from tfspeed.data import TextDataset, load_dataset

    settings = dict(layers=layers, layer_strategy=layer_strategy, hidden_size=hidden_size, alpha=alpha,
                    temperature=temperature, hidden_weight=hidden_weight, attention_weight=attention_weight,
                    layer_map=layer_map, epochs=epochs, batch_size=batch_size, learning_rate=learning_rate,
                    cache_teacher_logits=None if cache_teacher_logits is None else bool(cache_teacher_logits),
                    seed=seed)
    config = DistillConfig(**{k: v for k, v in settings.items() if v is not None})
    dataset = data if isinstance(data, TextDataset) else load_dataset(data, **(data_kwargs or {}))
    ctx = StageContext(dataset, seq_length=seq_length, limit=limit, eval_limit=eval_limit, strategy=strategy,
                       overwrite=overwrite)
    return run(teacher, config, out, ctx, student=student, vocab_path=vocab_path, callbacks=callbacks,
               return_model=True)
