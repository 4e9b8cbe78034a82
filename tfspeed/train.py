"""Fine-tuning a BERT classifier with `fit`: optimizer, schedule, evaluation."""

from __future__ import annotations

import time
from typing import Optional, Sequence

import numpy as np

from tfspeed.compat import keras, tf
from tfspeed.data.pipeline import EncodedSplit


@keras.saving.register_keras_serializable(package="tfspeed")
class WarmupLinearDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up from 0 to `peak` over `warmup_steps`, then linear decay to 0 at `total_steps` (BERT's schedule).

    Args:
        peak: the learning rate reached after warm-up.
        total_steps: steps until the rate reaches 0.
        warmup_steps: Defaults to `0`.
    """

    def __init__(self, peak: float, total_steps: int, warmup_steps: int = 0):
        if peak <= 0:
            raise ValueError(f"Received an invalid value for `peak`, expected a positive float. Received: peak={peak}")
        if total_steps < 1 or not 0 <= warmup_steps <= total_steps:
            raise ValueError("Expected 0 <= warmup_steps <= total_steps and total_steps >= 1. "
                             f"Received: warmup_steps={warmup_steps}, total_steps={total_steps}")
        self.peak, self.total_steps, self.warmup_steps = float(peak), int(total_steps), int(warmup_steps)

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        warm = self.peak * step / max(self.warmup_steps, 1)
        decay = self.peak * tf.maximum(0.0, (self.total_steps - step) / max(self.total_steps - self.warmup_steps, 1))
        return tf.where(step < self.warmup_steps, warm, decay)

    def get_config(self):
        return {"peak": self.peak, "total_steps": self.total_steps, "warmup_steps": self.warmup_steps}


def make_optimizer(learning_rate: float, total_steps: int, warmup_fraction: float = 0.1, weight_decay: float = 0.01):
    """AdamW with BERT's warm-up and linear decay."""
    schedule = WarmupLinearDecay(learning_rate, total_steps, int(total_steps * warmup_fraction))
    return keras.optimizers.AdamW(learning_rate=schedule, weight_decay=weight_decay, epsilon=1e-6,
                                  global_clipnorm=1.0)


def compile_classifier(model: keras.Model, learning_rate: float = 5e-5, total_steps: int = 1000,
                       warmup_fraction: float = 0.1, weight_decay: float = 0.01) -> keras.Model:
    model.compile(optimizer=make_optimizer(learning_rate, total_steps, warmup_fraction, weight_decay),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")])
    return model


def fit_classifier(model: keras.Model, train: EncodedSplit, validation: Optional[EncodedSplit] = None,
                   epochs: int = 3, batch_size: int = 32, learning_rate: float = 5e-5, warmup_fraction: float = 0.1,
                   callbacks: Sequence = (), verbose="auto", seed: int = 0, compile: bool = True):
    """Compiles (unless `compile=False`) and fits `model`; returns the `History`, with `seconds_per_epoch` added."""
    if not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"Received an invalid value for `epochs`, expected a positive integer. Received: epochs={epochs!r}")
    steps = -(-len(train) // batch_size)
    if compile:
        compile_classifier(model, learning_rate, steps * epochs, warmup_fraction)
    timer = EpochTimer()
    history = model.fit(train.dataset(batch_size, shuffle=True, seed=seed), epochs=epochs,
                        validation_data=validation.dataset(128) if validation is not None else None,
                        callbacks=[timer, *callbacks], verbose=verbose)
    history.history["seconds_per_epoch"] = timer.seconds
    return history


class EpochTimer(keras.callbacks.Callback):
    """Records the wall time of each epoch in `self.seconds`."""

    def __init__(self):
        super().__init__()
        self.seconds = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._start)


def predict_logits(model, split: EncodedSplit, batch_size: int = 128) -> np.ndarray:
    """Logits of `model` (a Keras model or any callable on the inputs dict) over a split, in the split's order.

    Batches are bucketed by length (less padding) and the outputs put back in order.
    """
    result = None
    for idx in split.batch_indices(batch_size, shuffle=False, bucket=True):
        x, _ = split.batch(idx)
        out = np.asarray(model(x, training=False) if isinstance(model, keras.Model) else model(x))
        if result is None:
            result = np.zeros((len(split),) + out.shape[1:], out.dtype)
        result[idx] = out
    return result


def accuracy(model, split: EncodedSplit, batch_size: int = 128) -> float:
    """Accuracy of `model` on `split` (bucketed batches keep the order, so labels line up)."""
    return float(np.mean(np.argmax(predict_logits(model, split, batch_size), -1) == split.labels))


def finetune(handle, data, out=None, epochs: int = 3, batch_size: int = 32, learning_rate: float = 5e-5,
             seq_length: int = 128, hub_layer: bool = False, limit: Optional[int] = None,
             eval_limit: Optional[int] = None, overwrite: bool = False, verbose="auto", strategy=None,
             callbacks: Sequence = (), data_kwargs: Optional[dict] = None):
    """Fine-tunes a BERT classifier on a labelled dataset; writes a model directory when `out` is given.

    Args:
        handle: a preset (`"minilm-l6"`), a TF-Hub SavedModel directory or URL.
        data: `"rotten_tomatoes"`, a CSV / JSONL path, or a `TextDataset`.
        out: the model directory to write (refused if it exists unless `overwrite=True`). Defaults to `None`.
        epochs: Defaults to `3`. batch_size: Defaults to `32`. learning_rate: peak AdamW rate. Defaults to `5e-5`.
        seq_length: tokens per example, [CLS] and [SEP] included; must not exceed the model's positions. Defaults to `128`.
        hub_layer: fine-tune through a `hub.KerasLayer` instead of the native encoder. Defaults to `False`.
        limit: use only the first `limit` training examples (quick runs). Defaults to `None` (all).
        strategy: a `tf.distribute.Strategy` to build and fit under. Defaults to the default strategy.

    Returns:
        `(model, metrics)`: metrics has `accuracy` (test), `split`, `num_examples`, `validation_accuracy`,
        `seconds_per_epoch` and the `history`.
    """
    from tfspeed import artifacts, hub
    from tfspeed.data import EncodedDataset, Tokenizer, TextDataset, load_dataset

    if out is not None:
        from tfspeed import _io

        _io.check_writable(out, overwrite)
    dataset = data if isinstance(data, TextDataset) else load_dataset(data, **(data_kwargs or {}))
    vocab = hub.vocab_path(handle)
    strategy = strategy or tf.distribute.get_strategy()
    with strategy.scope():
        model = hub.build_classifier_from(handle, num_classes=dataset.num_classes, hub_layer=hub_layer)
    _check_seq_length(model, seq_length)
    encoded = EncodedDataset(dataset, Tokenizer(vocab, seq_length=seq_length), limit=limit, eval_limit=eval_limit)
    with strategy.scope():
        history = fit_classifier(model, encoded.train, encoded.validation, epochs=epochs, batch_size=batch_size,
                                 learning_rate=learning_rate, verbose=verbose, callbacks=callbacks)
    metrics = {"accuracy": accuracy(model, encoded.test), "split": "test", "num_examples": len(encoded.test),
               "validation_accuracy": accuracy(model, encoded.validation), "dataset": dataset.name,
               "model": str(handle), "seq_length": seq_length, "epochs": epochs, "batch_size": batch_size,
               "learning_rate": learning_rate, "train_examples": len(encoded.train),
               "seconds_per_epoch": history.history["seconds_per_epoch"],
               "history": {k: [float(v) for v in vs] for k, vs in history.history.items()}}
    if out is not None:
        info = artifacts.ModelInfo(seq_length=seq_length, label_names=encoded.label_names, base=str(handle),
                                   stage="finetune", vocab_path=str(vocab), extra={"hub_layer": hub_layer})
        artifacts.save_model_dir(model, out, info, metrics, overwrite=overwrite)
    return model, metrics


def _check_seq_length(model, seq_length: int):
    from tfspeed.models.bert import config_of, is_bert

    if is_bert(model):
        limit = config_of(model).max_positions
        if seq_length > limit:
            raise ValueError(f"Received an invalid value for `seq_length`, expected at most the model's "
                             f"max_positions={limit}. Received: seq_length={seq_length}")
