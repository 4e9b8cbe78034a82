"""The fine-tuning stage: a preset or TF-Hub BERT fine-tuned on labelled text into a model directory
(`tfspeed finetune`, and the teacher of `tfspeed optimize`)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

from tfspeed.stages.base import StageContext, register_stage
from tfspeed.train import FinetuneConfig, accuracy, evaluate, fit_classifier


@register_stage("finetune", FinetuneConfig, help="fine-tune a BERT classifier and save it with its TF-Hub export",
                source="handle")
def run(source, config: FinetuneConfig, out: Optional[Path], ctx: StageContext, callbacks: Sequence = (),
        return_model: bool = False):
    """Fine-tunes `source` (a preset such as `"minilm-l6"`, a TF-Hub SavedModel directory or URL) on `ctx.dataset`.

    Writes a model directory to `out` (when given) and returns the metrics: test `accuracy`, `macro_f1` and
    `per_class_accuracy`, `split`,
    `num_examples`, `validation_accuracy`, `seconds_per_epoch` and the `history` (`(model, metrics)` with
    `return_model=True`).
    """
    from tfspeed import _io, artifacts, hub
    from tfspeed.models.bert import config_of, is_bert

    if out is not None:
        _io.check_writable(out, ctx.overwrite)
    dataset = ctx.dataset
    seq_length = ctx.seq_length or config.seq_length
    vocab = hub.vocab_path(source)
    with ctx.strategy.scope():
        model = hub.build_classifier_from(source, num_classes=dataset.num_classes, hub_layer=config.hub_layer,
                                          label_names=list(dataset.label_names))
    if is_bert(model) and seq_length > config_of(model).max_positions:
        raise ValueError(f"Received an invalid value for `seq_length`, expected at most the model's "
                         f"max_positions={config_of(model).max_positions}. Received: seq_length={seq_length}")
    lower_case = hub.lower_case(source)
    encoded = ctx.encoded(vocab, seq_length, lower_case)
    with ctx.strategy.scope():
        history = fit_classifier(model, encoded.train, encoded.validation, config=config, verbose=ctx.verbose,
                                 callbacks=[*ctx.fit_callbacks("teacher"), *callbacks])
    metrics = {**evaluate(model, encoded.test, encoded.label_names), "split": "test", "num_examples": len(encoded.test),
               "validation_accuracy": accuracy(model, encoded.validation), "dataset": dataset.name,
               "model": str(source), "seq_length": seq_length, "epochs": config.epochs,
               "batch_size": config.batch_size, "learning_rate": config.learning_rate,
               "train_examples": len(encoded.train), "skipped_rows": dict(getattr(dataset, "skipped", {})),
               "seconds_per_epoch": history.history["seconds_per_epoch"],
               "history": {k: [float(v) for v in vs] for k, vs in history.history.items()}}
    if out is not None:
        info = artifacts.ModelInfo(seq_length=seq_length, label_names=encoded.label_names, base=str(source),
                                   stage="finetune", vocab_path=str(vocab), extra={"hub_layer": config.hub_layer},
                                   lower_case=lower_case, text_pair=dataset.is_pairs)
        artifacts.save_model_dir(model, out, info, metrics, overwrite=ctx.overwrite)
    return (model, metrics) if return_model else metrics
