"""The stages of `tfspeed optimize`. Each reads the previous stage's model directory and writes its own.

Every stage takes `(ctx, source_dir, out_dir)`; `ctx` carries the config, the dataset, the strategy, the chain's
teacher directory and the checkpoint directory for `BackupAndRestore`.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Callable

from tfspeed import artifacts
from tfspeed.compat import keras
from tfspeed.data import EncodedDataset, Tokenizer
from tfspeed.recipe.config import RecipeConfig
from tfspeed.train import accuracy, fit_classifier


@dataclasses.dataclass
class Context:
    config: RecipeConfig
    dataset: object
    strategy: object
    teacher_dir: Path
    work_dir: Path
    log: Callable[[str], None] = print
    _encoded: dict = dataclasses.field(default_factory=dict)

    def encoded(self, vocab_path) -> EncodedDataset:
        """The dataset tokenized with `vocab_path` (cached per vocabulary)."""
        key = str(vocab_path)
        if key not in self._encoded:
            tok = Tokenizer(vocab_path, seq_length=self.config.seq_length)
            self._encoded[key] = EncodedDataset(self.dataset, tok, limit=self.config.limit,
                                                eval_limit=self.config.eval_limit)
        return self._encoded[key]

    def backup(self, stage: str) -> list:
        """`BackupAndRestore` for a training stage: an interrupted fit resumes from its last finished epoch."""
        return [keras.callbacks.BackupAndRestore(str(self.work_dir / "backup" / stage))]

    def verbose(self):
        import sys

        return 1 if sys.stdout.isatty() else 2


def _info(source: artifacts.ModelInfo, stage: str, vocab_path=None, **extra) -> artifacts.ModelInfo:
    return artifacts.ModelInfo(seq_length=source.seq_length, label_names=source.label_names, base=source.base,
                               stage=stage, vocab_path=str(vocab_path or source.vocab_path), extra=extra)


def teacher(ctx: Context, out: Path) -> dict:
    """Fine-tunes `config.model` on the data into `out`."""
    from tfspeed.train import finetune

    c = ctx.config
    _, metrics = finetune(c.model, ctx.dataset, out=out, epochs=c.teacher_epochs, batch_size=c.batch_size,
                          learning_rate=c.teacher_learning_rate, seq_length=c.seq_length, limit=c.limit,
                          eval_limit=c.eval_limit, strategy=ctx.strategy, callbacks=ctx.backup("teacher"),
                          verbose=ctx.verbose())
    return metrics


def vocab(ctx: Context, source: Path, out: Path) -> dict:
    """Trims the vocabulary to the tokens of the training split (exact for every word seen in training)."""
    from tfspeed.compress.vocab import trim_vocabulary

    model, info = artifacts.load_model_dir(source)
    encoded = ctx.encoded(info.vocab_path)
    new_vocab = ctx.work_dir / "vocab" / "vocab.txt"
    new_vocab.unlink(missing_ok=True)
    trimmed, kept = trim_vocabulary(model, info.vocab_path, encoded.train.features["input_word_ids"], new_vocab)
    after = ctx.encoded(new_vocab)
    metrics = {"accuracy": accuracy(trimmed, after.test), "accuracy_before": accuracy(model, encoded.test),
               "vocab_size_before": int(model.get_layer("word_embeddings").input_dim), "vocab_size": int(len(kept)),
               "params_before": int(model.count_params()), "params": int(trimmed.count_params()),
               "split": "test", "num_examples": len(after.test)}
    artifacts.save_model_dir(trimmed, out, _info(info, "vocab", new_vocab), metrics)
    return metrics


def distill(ctx: Context, source: Path, out: Path) -> dict:
    """A `student_layers`-layer student (every other layer of the source), distilled from the source."""
    from tfspeed.compress.distill import distill as run_distill

    c = ctx.config
    _, metrics = run_distill(str(source), ctx.dataset, layers=c.student_layers, epochs=c.distill_epochs,
                             batch_size=c.batch_size, learning_rate=c.distill_learning_rate, limit=c.limit,
                             eval_limit=c.eval_limit, out=out, strategy=ctx.strategy, callbacks=ctx.backup("distill"),
                             verbose=ctx.verbose())
    return metrics


def prune(ctx: Context, source: Path, out: Path) -> dict:
    """Structured: removes heads / FFN units by Taylor importance, then recovers by distillation from the chain's
    teacher. Unstructured: TFMOT magnitude pruning to `sparsity` through fit, then strip."""
    c = ctx.config
    model, info = artifacts.load_model_dir(source)
    encoded = ctx.encoded(info.vocab_path)
    if c.prune == "structured":
        from tfspeed.compress import structured
        from tfspeed.compress.distill import distill as run_distill

        before = structured.parameter_count(model)
        with ctx.strategy.scope():
            smaller = structured.prune_structured(model, heads=c.heads, ffn=c.ffn, method="taylor",
                                                  data=encoded.train, batch_size=c.batch_size)
        _, metrics = run_distill(str(ctx.teacher_dir), ctx.dataset, student=smaller, epochs=c.prune_epochs,
                                 batch_size=c.batch_size, learning_rate=c.prune_learning_rate,
                                 vocab_path=info.vocab_path, limit=c.limit, eval_limit=c.eval_limit,
                                 strategy=ctx.strategy, callbacks=ctx.backup("prune"), verbose=ctx.verbose())
        metrics.update({"params_before": before, "params": structured.parameter_count(smaller),
                        "heads": c.heads, "ffn": c.ffn, "recovery": "distillation from " + str(ctx.teacher_dir)})
        artifacts.save_model_dir(smaller, out, _info(info, "prune-structured", heads=c.heads, ffn=c.ffn), metrics)
        return metrics
    from tfspeed.compress import prune as P

    steps = -(-len(encoded.train) // c.batch_size)
    schedule = P.schedule_for_epochs(c.sparsity, c.prune_epochs, steps, "polynomial")
    with ctx.strategy.scope():
        pruned = P.prune(model, schedule=schedule)
        fit_classifier(pruned, encoded.train, encoded.validation, epochs=c.prune_epochs, batch_size=c.batch_size,
                       learning_rate=c.prune_learning_rate, callbacks=[*P.pruning_callbacks(per_layer=False)],
                       verbose=ctx.verbose())
    stripped = P.strip(pruned)
    report = P.sparsity_report(stripped, tflite=False)
    metrics = {"accuracy": accuracy(stripped, encoded.test), "sparsity": report["sparsity"], "split": "test",
               "num_examples": len(encoded.test)}
    artifacts.save_model_dir(stripped, out, _info(info, "prune", sparsity=c.sparsity), metrics)
    return metrics


QAT_TFLITE = "model_int8.tflite"


def qat(ctx: Context, source: Path, out: Path) -> dict:
    """Quantization-aware fine-tuning of the whole BERT; writes the QAT model and its int8 .tflite."""
    import numpy as np

    from tfspeed import export
    from tfspeed.compress import qat as Q
    from tfspeed.train import predict_logits

    c = ctx.config
    model, info = artifacts.load_model_dir(source)
    encoded = ctx.encoded(info.vocab_path)
    preserve = "prune" in c.recipe and c.prune == "unstructured"
    qat_model, _ = Q.qat_fit(model, encoded.train, encoded.validation, epochs=c.qat_epochs, batch_size=c.batch_size,
                             learning_rate=c.qat_learning_rate, preserve_sparsity=preserve, strategy=ctx.strategy,
                             callbacks=ctx.backup("qat"), verbose=ctx.verbose())
    keras_logits = predict_logits(qat_model, encoded.test)
    tflite = Q.to_tflite(qat_model, c.seq_length)
    lite_logits = export.evaluate(tflite, encoded.test)
    labels = encoded.test.labels
    metrics = {"accuracy": float(np.mean(keras_logits.argmax(-1) == labels)),
               "tflite_accuracy": float(np.mean(lite_logits.argmax(-1) == labels)),
               "argmax_agreement": float(np.mean(keras_logits.argmax(-1) == lite_logits.argmax(-1))),
               "int8_fraction": Q.int8_fractions(tflite), "preserve_sparsity": preserve, "split": "test",
               "num_examples": len(labels)}
    artifacts.save_model_dir(qat_model, out, _info(info, "qat", tflite=QAT_TFLITE), metrics,
                             extra_files=lambda tmp: (tmp / QAT_TFLITE).write_bytes(tflite))
    return metrics


CHAIN = {"vocab": vocab, "distill": distill, "prune": prune, "qat": qat}


def timed(fn, *args):
    start = time.perf_counter()
    result = fn(*args)
    return result, time.perf_counter() - start
