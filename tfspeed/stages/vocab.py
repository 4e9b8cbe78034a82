"""The vocabulary stage: the word-embedding table trimmed to the tokens of the training split."""

from __future__ import annotations

import tempfile
from pathlib import Path

from tfspeed.compress.vocab import VocabConfig, trim_vocabulary
from tfspeed.stages.base import StageContext, load_source, model_info, register_stage
from tfspeed.train import evaluate


@register_stage("vocab", VocabConfig, help="trim the vocabulary to the training data's tokens")
def run(source, config: VocabConfig, out: Path, ctx: StageContext) -> dict:
    """Trims the vocabulary to the tokens of the training split (exact for every word seen in training)."""
    from tfspeed import _io, artifacts

    _io.check_writable(out, ctx.overwrite)
    model, info, encoded = load_source(source, ctx)
    with tempfile.TemporaryDirectory(prefix="tfspeed-vocab-") as tmp:
        new_vocab = Path(tmp) / "vocab.txt"
        trimmed, kept = trim_vocabulary(model, info.vocab_path, encoded.train.features["input_word_ids"], new_vocab,
                                        min_count=config.min_count)
        after = ctx.encoded(new_vocab, info.seq_length, info.lower_case)
        metrics = {**evaluate(trimmed, after.test, after.label_names),
                   "accuracy_before": ctx.known_accuracy(source, model, encoded.test),
                   "vocab_size_before": int(model.get_layer("word_embeddings").input_dim),
                   "vocab_size": int(len(kept)), "params_before": int(model.count_params()),
                   "params": int(trimmed.count_params()), "split": "test", "num_examples": len(after.test),
                   "dataset": ctx.dataset.name, "seq_length": int(after.test.features["input_word_ids"].shape[1])}
        artifacts.save_model_dir(trimmed, out, model_info(info, "vocab", new_vocab), metrics,
                                 overwrite=ctx.overwrite)
    return metrics
