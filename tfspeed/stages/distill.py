"""The distillation stage: a teacher model directory distilled into a smaller student model directory
(`tfspeed distill`, and the `distill` step of `tfspeed optimize`)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

from tfspeed.compress.distillation import DistillConfig, DistillMode, num_layers_of, select_layers
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
    lower_case = info.lower_case if info else True
    encoded = ctx.encoded(vocab_path, seq_length, lower_case)
    train, extra_texts = training_split(encoded.train, dataset, config, vocab_path, seq_length, lower_case)
    teacher_before = ctx.known_accuracy(source, teacher, encoded.test)  # before a two-way fit changes the teacher

    chosen, assistants, mutual_teacher = [], [], None
    fit_callbacks = [*ctx.fit_callbacks("distill"), *callbacks]
    if config.stages:
        if student is not None or config.mode == DistillMode.TWO_WAY or config.hidden_size is not None:
            other = ("a ready student" if student is not None
                     else "mode='two-way'" if config.mode == DistillMode.TWO_WAY else "hidden_size")
            raise ValueError("Multi-stage distillation builds each student from the model before it, one way. "
                             f"Received: stages={list(config.stages)} with {other}; use one or the other.")
        student, history, assistants = _chain(teacher, train, encoded, config, ctx, out, fit_callbacks, source,
                                              info, dataset, vocab_path, seq_length, teacher_path)
    elif config.mode == DistillMode.TWO_WAY:
        from tfspeed.compress.distillation import fit_mutual, student_from_teacher

        with ctx.strategy.scope():
            if student is None:
                chosen = select_layers(num_layers_of(teacher), config.layers, config.layer_strategy)
                student = student_from_teacher(teacher, config.layers, config.layer_strategy,
                                               hidden_size=config.hidden_size, num_heads=config.num_heads,
                                               intermediate_size=config.intermediate_size, seed=config.seed)
            history = fit_mutual(student, teacher, train, encoded.validation, config, verbose=ctx.verbose,
                                 callbacks=fit_callbacks, logits_cache=ctx.logits_cache(source))
        mutual_teacher = teacher
    else:
        if student is None and config.hidden_size is None:
            chosen = select_layers(num_layers_of(teacher), config.layers, config.layer_strategy)
        with ctx.strategy.scope():
            student, history = distill_in_memory(teacher, train, encoded.validation, student=student,
                                                 config=config, verbose=ctx.verbose, callbacks=fit_callbacks,
                                                 logits_cache=ctx.logits_cache(source))
    distiller = history.model
    student_scores = evaluate(student, encoded.test, encoded.label_names)
    student_acc, teacher_acc = student_scores["accuracy"], teacher_before
    c = config
    layer_map = getattr(distiller, "layer_map", None)
    metrics = {**student_scores, "teacher_accuracy": teacher_acc,
               "accuracy_ratio": student_acc / teacher_acc if teacher_acc else None,
               "validation_accuracy": accuracy(student, encoded.validation), "split": "test",
               "num_examples": len(encoded.test), "dataset": dataset.name, "teacher": teacher_path,
               "teacher_layers": chosen,
               "student_num_layers": num_layers_of(student), "teacher_num_layers": num_layers_of(teacher),
               "student_params": int(student.count_params()), "teacher_params": int(teacher.count_params()),
               "alpha": c.alpha, "temperature": c.temperature, "hidden_weight": c.hidden_weight,
               "attention_weight": c.attention_weight, "hidden_size": c.hidden_size,
               "layer_map": None if layer_map is None else [int(i) for i in layer_map],
               "mode": str(c.mode), "stages": None if c.stages is None else list(c.stages), "assistants": assistants,
               "extra_texts": extra_texts, "train_seconds": float(sum(history.history["seconds_per_epoch"]))
               + sum(a.get("train_seconds", 0.0) for a in assistants),
               "seq_length": seq_length, "epochs": c.epochs, "batch_size": c.batch_size,
               "learning_rate": c.learning_rate, "train_examples": len(encoded.train),
               "distill_examples": len(train),
               "cached_teacher_logits": c.cache_teacher_logits,
               "teacher_logits_seconds": getattr(history, "teacher_logits_seconds", None),
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
        extra = None
        if mutual_teacher is not None:  # two-way: the teacher learned too; it is kept beside the student
            teacher_scores = evaluate(mutual_teacher, encoded.test, encoded.label_names)
            metrics["mutual_teacher"] = {"accuracy": teacher_scores["accuracy"], "accuracy_before": teacher_before,
                                         "macro_f1": teacher_scores["macro_f1"], "dir": MUTUAL_TEACHER}
            teacher_info = artifacts.ModelInfo(
                seq_length=seq_length, label_names=encoded.label_names, base=(info.base if info else teacher_path),
                stage="distill-two-way-teacher", vocab_path=str(vocab_path),
                extra={"student": str(out), "teacher": teacher_path}, lower_case=lower_case,
                text_pair=dataset.is_pairs)
            teacher_metrics = {**teacher_scores, "split": "test", "num_examples": len(encoded.test),
                               "dataset": dataset.name, "seq_length": seq_length, "accuracy_before": teacher_before}

            def extra(tmp):
                artifacts.save_model_dir(mutual_teacher, Path(tmp) / MUTUAL_TEACHER, teacher_info, teacher_metrics)
        artifacts.save_model_dir(student, out, new_info, metrics, overwrite=ctx.overwrite, extra_files=extra)
    return (student, metrics) if return_model else metrics


MUTUAL_TEACHER = "teacher"
"""Where a two-way run keeps its trained teacher: a model directory inside the student's."""


def training_split(train, dataset, config: DistillConfig, vocab_path, seq_length: int, lower_case: bool):
    """The training split, with the texts the teacher labels appended (label -1): the file `config.unlabelled` and
    `config.augment` changed copies of each training text. Returns `(split, counts)`."""
    import numpy as np

    from tfspeed.compress.distillation.augment import UNLABELLED, augment_texts, read_unlabelled
    from tfspeed.data import EncodedSplit, Tokenizer

    counts = {"unlabelled": 0, "augmented": 0}
    if not config.unlabelled and not config.augment:
        return train, counts
    texts, pairs = [], []
    source = dataset.train
    limit = len(train)  # the training examples used (a `limit` keeps the first N)
    if config.unlabelled:
        if dataset.is_pairs:
            raise ValueError("`unlabelled` texts are single texts; the data is sentence pairs. Received: "
                             f"unlabelled={config.unlabelled!r} with a sentence-pair dataset.")
        extra = read_unlabelled(config.unlabelled)
        texts += extra
        pairs += [None] * len(extra)
        counts["unlabelled"] = len(extra)
    if config.augment:
        base = list(source.texts)[:limit]
        changed = augment_texts(base, config.augment, config.augment_rate, seed=config.seed or 0)
        texts += changed
        if dataset.is_pairs:
            pairs += augment_texts(list(source.pairs)[:limit], config.augment, config.augment_rate,
                                   seed=(config.seed or 0) + 1)
        else:
            pairs += [None] * len(changed)
        counts["augmented"] = len(changed)
    tokenizer = Tokenizer(vocab_path, seq_length=seq_length, lower_case=lower_case)
    features = tokenizer.encode(texts, pairs if dataset.is_pairs else None)
    merged = {k: np.concatenate([train.features[k], features[k]]) for k in train.features}
    labels = np.concatenate([train.labels, np.full(len(texts), UNLABELLED, np.int32)])
    return EncodedSplit(merged, labels), counts


def _chain(teacher, train, encoded, config, ctx, out, callbacks, source, info, dataset, vocab_path, seq_length,
           teacher_path):
    """Multi-stage distillation: each assistant saved as a model directory beside `out`
    (`OUT-assistant1-4layers`), a rerun resuming after the last one saved. Returns `(student, history, records)`."""
    from tfspeed import artifacts
    from tfspeed.compress.distillation import distill_chain
    from tfspeed.compress.distillation.config import check_stages
    from tfspeed.train import evaluate

    stages = check_stages(config.stages, num_layers_of(teacher))
    dirs = [None if out is None else Path(out).with_name(f"{Path(out).name}-assistant{i + 1}-{k}layers")
            for i, k in enumerate(stages[:-1])]
    records, start = [], None
    for i, d in enumerate(dirs):
        if d is None or not (d / "metrics.json").is_file():
            break
        m = artifacts.read_metrics(d)
        if m.get("chain_teacher") != teacher_path or m.get("layers") != stages[i]:
            raise ValueError(f"{d} holds another distillation (teacher {m.get('chain_teacher')!r}, "
                             f"{m.get('layers')} layers). Remove it or choose another --out.")
        with ctx.strategy.scope():
            model, _ = artifacts.load_model_dir(d)
        start = (i, model)
        records.append({k: m.get(k) for k in ("layers", "accuracy", "train_seconds")} | {"dir": str(d),
                                                                                          "resumed": True})
        ctx.log(f"  stage {i + 1}/{len(stages)}: {stages[i]} layers, done before, kept ({d})")

    def on_stage(i, model, history):
        seconds = float(sum(history.history["seconds_per_epoch"]))
        scores = evaluate(model, encoded.test, encoded.label_names)
        ctx.log(f"  stage {i + 1}/{len(stages)}: {stages[i]} layers, accuracy {scores['accuracy']:.4f} in "
                f"{seconds:.0f} s")
        if i == len(stages) - 1:
            return
        record = {"layers": stages[i], "accuracy": scores["accuracy"], "train_seconds": seconds,
                  "dir": None if dirs[i] is None else str(dirs[i])}
        records.append(record)
        if dirs[i] is not None:
            assistant_info = artifacts.ModelInfo(
                seq_length=seq_length, label_names=encoded.label_names, base=(info.base if info else teacher_path),
                stage="distill-assistant", vocab_path=str(vocab_path), extra={"teacher": teacher_path},
                lower_case=info.lower_case if info else True, text_pair=dataset.is_pairs)
            artifacts.save_model_dir(model, dirs[i], assistant_info,
                                     {**scores, "split": "test", "num_examples": len(encoded.test),
                                      "dataset": dataset.name, "seq_length": seq_length, "layers": stages[i],
                                      "chain_teacher": teacher_path, "train_seconds": seconds},
                                     overwrite=True)

    with ctx.strategy.scope():
        results = distill_chain(teacher, train, encoded.validation, stages, config, callbacks=callbacks,
                                verbose=ctx.verbose, logits_cache=ctx.logits_cache(source), on_stage=on_stage,
                                start=start)
    student, history = results[-1]
    return student, history, records


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
