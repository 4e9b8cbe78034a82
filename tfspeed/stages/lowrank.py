"""The low-rank stage: chosen Dense layers factorised by truncated SVD, then fine-tuned by distillation from the
unfactorised model (`tfspeed factorize`, and the `lowrank` step of `tfspeed optimize`)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from tfspeed.compress.lowrank import LowRankConfig
from tfspeed.stages.base import StageContext, load_source, load_teacher, model_info, register_stage


@register_stage("lowrank", LowRankConfig, help="factorise Dense layers into two thinner ones (truncated SVD)")
def run(source, config: LowRankConfig, out: Path, ctx: StageContext, callbacks: Sequence = ()) -> dict:
    """Factorises the model directory `source` into `out` and fine-tunes it (`config.epochs`).

    With `config.distill`, the teacher is `ctx.teacher_dir` when set (the chain's teacher in `optimize`), else the
    unfactorised source model. Returns the metrics (also in `out/metrics.json`): `accuracy` (test, after
    fine-tuning), `accuracy_before_finetuning`, `source_accuracy`, `validation_accuracy`, the per-layer `factorize`
    report (rank, energy kept, reconstruction error, multiply-adds before / after), parameter counts,
    `seconds_per_epoch` and the `history`.
    """
    from tfspeed import _io, artifacts
    from tfspeed.compress.distillation import fit_student
    from tfspeed.compress.lowrank import factorize
    from tfspeed.train import accuracy, evaluate, fit_classifier

    _io.check_writable(out, ctx.overwrite)
    model, info, encoded = load_source(source, ctx)
    with ctx.strategy.scope():
        factorised, report = factorize(model, config, return_report=True)
    ctx.log(report.format())
    metrics = {"source_accuracy": accuracy(model, encoded.test),
               "accuracy_before_finetuning": accuracy(factorised, encoded.test),
               "dataset": ctx.dataset.name, "model": str(source), "seq_length": info.seq_length,
               "params_before": int(model.count_params()), "params": int(factorised.count_params()),
               "factorize": report.to_dict(), "distill": bool(config.distill and config.epochs)}
    history = {}
    if config.epochs:
        fit_callbacks = [*ctx.fit_callbacks("lowrank"), *callbacks]
        with ctx.strategy.scope():
            if config.distill:
                teacher = load_teacher(ctx, source, info, model, metrics)
                result = fit_student(factorised, teacher, encoded.train, encoded.validation, epochs=config.epochs,
                                     batch_size=config.batch_size, learning_rate=config.learning_rate,
                                     hidden_weight=config.hidden_weight, callbacks=fit_callbacks,
                                     verbose=ctx.verbose,
                                     logits_cache=ctx.logits_cache(metrics.get("teacher", source)))
            else:
                result = fit_classifier(factorised, encoded.train, encoded.validation, epochs=config.epochs,
                                        batch_size=config.batch_size, learning_rate=config.learning_rate,
                                        callbacks=fit_callbacks, verbose=ctx.verbose)
        history = {k: [float(v) for v in vs] for k, vs in result.history.items()}
        metrics["seconds_per_epoch"] = history.get("seconds_per_epoch")
    metrics.update(evaluate(factorised, encoded.test, encoded.label_names))
    metrics["validation_accuracy"] = accuracy(factorised, encoded.validation)
    metrics["split"], metrics["num_examples"] = "test", len(encoded.test)
    metrics["history"] = history
    metrics["config"] = config.to_dict()
    ranks = {r.name: r.rank for r in report.factorised}
    artifacts.save_model_dir(factorised, out, model_info(info, "lowrank", ranks=ranks,
                                                         macs_kept=report.to_dict()["macs_kept"]),
                             metrics, overwrite=ctx.overwrite)
    return metrics
