"""The pruning stage: TFMOT magnitude / m:n pruning through fit, and structured pruning of heads, FFN units and
layers, recovered by fine-tuning or by distillation from the unpruned model (`tfspeed prune`, and the `prune` step of
`tfspeed optimize`)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Sequence

from tfspeed.compress.pruning import PruneConfig
from tfspeed.compress.structured import StructuredConfig
from tfspeed.config import StageConfig, StrEnum, field
from tfspeed.stages.base import StageContext, check_inputs, load_teacher, register_stage


class PruneKind(StrEnum):
    """What the pruning stage removes: whole heads / FFN units (`structured`: faster), single weights (`unstructured`,
    TFMOT magnitude or m:n: smaller gzip), or `both` (structured first)."""

    STRUCTURED = "structured"
    UNSTRUCTURED = "unstructured"
    BOTH = "both"


@dataclasses.dataclass
class PruneStageConfig(StageConfig):
    """What the pruning stage does.

    Args:
        kind: `"structured"`, `"unstructured"` or `"both"` (structured first). Defaults to `"unstructured"`.
        prune: magnitude-pruning and fine-tuning settings (`PruneConfig`: sparsity, schedule, m:n, epochs, learning
            rate, distillation from the unpruned model ...). Defaults to `PruneConfig()`.
        structured: the heads / FFN units / layers removed by structured pruning (`StructuredConfig`). Defaults to
            `StructuredConfig()`.
        tflite_report: convert the result to float and dynamic-range .tflite to report their sizes. Defaults to
            `True`.
    """

    kind: PruneKind = field(PruneKind.UNSTRUCTURED, help="structured, unstructured or both")
    prune: PruneConfig = field(default_factory=PruneConfig, cli=False, help="magnitude pruning and fine-tuning")
    structured: StructuredConfig = field(default_factory=StructuredConfig, cli=False, help="structured pruning")
    tflite_report: bool = field(True, cli=False, help="report the .tflite sizes")

    def validate(self):
        if isinstance(self.prune, dict):
            self.prune = PruneConfig.from_dict(self.prune)
        if isinstance(self.structured, dict):
            self.structured = StructuredConfig.from_dict(self.structured)

    @property
    def unstructured(self) -> bool:
        return self.kind in (PruneKind.UNSTRUCTURED, PruneKind.BOTH)

    @property
    def is_structured(self) -> bool:
        return self.kind in (PruneKind.STRUCTURED, PruneKind.BOTH)


@register_stage("prune", PruneStageConfig, help="prune (structured heads/FFN units, or TFMOT magnitude / 2:4)")
def run(source, config: PruneStageConfig, out: Path, ctx: StageContext, callbacks: Sequence = ()) -> dict:
    """Prunes the model directory `source` into `out`; the teacher of `prune.distill` is `ctx.teacher_dir` when
    set (the chain's teacher in `optimize`), else the unpruned source model."""
    from tfspeed import _io, artifacts
    from tfspeed.compress import pruning as P
    from tfspeed.compress import structured as S
    from tfspeed.compress.distillation import fit_student
    from tfspeed.export.sparsity import sparsity_report
    from tfspeed.models.bert import is_bert
    from tfspeed.train import accuracy, evaluate, fit_classifier

    _io.check_writable(out, ctx.overwrite)
    p = config.prune
    model, info = artifacts.load_model_dir(source)
    if not info.vocab_path:
        raise ValueError(f"The model directory {str(source)!r} has no vocab.txt: cannot tokenize --data.")
    check_inputs(source, info, ctx.dataset)
    seq_length = ctx.seq_length or info.seq_length
    encoded = ctx.encoded(info.vocab_path, seq_length, info.lower_case)
    metrics = {"dense_accuracy": ctx.known_accuracy(source, model, encoded.test), "dataset": ctx.dataset.name,
               "model": str(source),
               "seq_length": seq_length, "epochs": p.epochs, "batch_size": p.batch_size,
               "learning_rate": p.learning_rate, "distill": bool(p.distill)}
    if p.distill:
        metrics["hidden_weight"] = p.hidden_weight
    teacher = None
    if p.distill:
        teacher = load_teacher(ctx, source, info, model, metrics)
    steps = -(-len(encoded.train) // p.batch_size)
    extra_callbacks = [*ctx.fit_callbacks("prune"), *callbacks]

    def fit(student, stage_callbacks=(), epochs=p.epochs):
        all_callbacks = [*stage_callbacks, *extra_callbacks]
        if teacher is None:
            return fit_classifier(student, encoded.train, encoded.validation, epochs=epochs,
                                  batch_size=p.batch_size, learning_rate=p.learning_rate, callbacks=all_callbacks,
                                  verbose=ctx.verbose)
        return fit_student(student, teacher, encoded.train, encoded.validation, epochs=epochs,
                           batch_size=p.batch_size, learning_rate=p.learning_rate, hidden_weight=p.hidden_weight,
                           callbacks=all_callbacks, verbose=ctx.verbose,
                           logits_cache=ctx.logits_cache(metrics.get("teacher", source)))

    s = config.structured if config.is_structured else None
    with ctx.strategy.scope():
        if s is not None:
            before = S.parameter_count(model)
            model, chosen = S.prune_structured(model, config=s, data=encoded.train, batch_size=p.batch_size,
                                               return_plan=True)
            metrics["structured"] = {**s.to_dict(), "plan": chosen.to_dict(), "params_before": before,
                                     "params_after": S.parameter_count(model),
                                     "accuracy_before_finetuning": accuracy(model, encoded.test)}
        if config.unstructured:
            gradual_from = (p.m_by_n[0] - 1, p.m_by_n[1]) if p.gradual else None
            schedule = P.schedule_for_epochs(p.sparsity if p.sparsity is not None else 0.5, p.epochs, steps,
                                             p.schedule.value, end_epoch=p.end_epoch)
            # gradual: one epoch at (M-1):N, strip, then M:N for `epochs` (fresh pruning callbacks in each stage,
            # each writing its own TensorBoard run, LOG_DIR/1of4 then LOG_DIR/2of4: both count steps from 0)
            patterns = iter([gradual_from, p.m_by_n])

            def fit_stage(student, epochs):
                log_dir, pattern = p.log_dir, next(patterns)
                if log_dir is not None and gradual_from is not None:
                    log_dir = str(Path(log_dir) / f"{pattern[0]}of{pattern[1]}")
                return fit(student, P.pruning_callbacks(log_dir, per_layer=False), epochs)

            pruned, history = P.prune_and_fit(
                model, fit_stage, p.epochs, gradual_from=gradual_from, schedule=schedule, m_by_n=p.m_by_n,
                include_embeddings=p.include_embeddings, include_classifier=p.include_classifier,
                layers=list(p.layers) if p.layers else None, embedding_sparsity=p.embedding_sparsity)
            model = P.strip(pruned)
            metrics.update({"schedule": schedule.get_config(), "m_by_n": list(p.m_by_n) if p.m_by_n else None,
                            "embedding_sparsity": p.embedding_sparsity, "gradual": gradual_from is not None,
                            "gradual_from": list(gradual_from) if gradual_from else None,
                            "epochs_trained": max((len(v) for v in history.values()), default=0)})
        else:
            history = fit(model).history
    metrics.update(evaluate(model, encoded.test, encoded.label_names))
    metrics["validation_accuracy"] = accuracy(model, encoded.validation)
    metrics["split"], metrics["num_examples"] = "test", len(encoded.test)
    metrics["history"] = {k: [float(v) for v in vs] for k, vs in history.items()}
    report = sparsity_report(model, include_embeddings=p.include_embeddings, include_classifier=p.include_classifier,
                             layers=list(p.layers) if p.layers else None, tflite=config.tflite_report,
                             seq_length=seq_length)
    metrics["sparsity"] = report["sparsity"]
    metrics["report"] = report
    metrics["config"] = config.to_dict()
    if s is None:
        stage = "prune"
    else:
        stage = "prune+structured" if config.unstructured else "prune-structured"
    extra = {"sparsity": (p.sparsity if p.sparsity is not None else 0.5) if config.unstructured else None,
             "m_by_n": list(p.m_by_n) if p.m_by_n else None,
             "structured": s.to_dict() if s is not None else None, "hub_layer": not is_bert(model)}
    out_info = artifacts.ModelInfo(seq_length=seq_length, label_names=encoded.label_names, base=str(source),
                                   stage=stage, vocab_path=info.vocab_path, extra=extra,
                                   lower_case=info.lower_case, text_pair=ctx.dataset.is_pairs)
    artifacts.save_model_dir(model, out, out_info, metrics, overwrite=ctx.overwrite)
    return metrics
