"""From tokenized arrays to `tf.data` pipelines for `fit`, with length bucketing to spare padded compute."""

from __future__ import annotations

from typing import Optional

import numpy as np

from tfspeed.compat import tf
from tfspeed.data.datasets import TextSplit
from tfspeed.data.tokenizer import Tokenizer

BUCKET_CHUNK = 50  # batches per length-sorted chunk: long enough to group lengths, short enough to keep the mix


class EncodedSplit:
    """A split tokenized once: `features` (dict of int32 [n, seq_length]) and `labels` [n]."""

    def __init__(self, features: dict, labels: np.ndarray):
        self.features, self.labels = features, np.asarray(labels, np.int32)
        if len(self.labels) == 0:
            raise ValueError("Expected a non-empty split. Received: 0 examples.")

    @classmethod
    def from_split(cls, split: TextSplit, tokenizer: Tokenizer, limit: Optional[int] = None) -> "EncodedSplit":
        split = split.take(limit)
        return cls(tokenizer.encode(split.texts, split.pairs), split.labels)

    def __len__(self):
        return len(self.labels)

    @property
    def lengths(self) -> np.ndarray:
        return self.features["input_mask"].sum(axis=1)

    def batch_indices(self, batch_size: int, shuffle: bool = False, rng=None, bucket: bool = True) -> list:
        """Index groups, one per batch. With `bucket`, examples of similar length are grouped (order changes)."""
        n, lengths = len(self), self.lengths
        order = rng.permutation(n) if shuffle else np.arange(n)
        if bucket:
            size = batch_size * BUCKET_CHUNK
            chunks = [order[i:i + size] for i in range(0, n, size)]
            order = np.concatenate([c[np.argsort(lengths[c], kind="stable")] for c in chunks])
        groups = [order[i:i + batch_size] for i in range(0, n, batch_size)]
        if shuffle:
            rng.shuffle(groups)
        return groups

    def batch(self, idx, bucket: bool = True):
        """Features and labels of the examples `idx`, cut to the longest of them when `bucket`."""
        width = int(self.lengths[idx].max()) if bucket else self.features["input_word_ids"].shape[1]
        return {k: v[idx, :width] for k, v in self.features.items()}, self.labels[idx]

    def dataset(self, batch_size: int = 32, shuffle: bool = False, seed: int = 0, bucket: bool = True,
                extra: Optional[np.ndarray] = None, repeat: bool = False) -> tf.data.Dataset:
        """Batches of `(features, labels)` (or `(features, (labels, extra))` when `extra` is given, e.g. teacher
        logits).

        With `bucket=True`, examples of similar length share a batch and each batch is cut to its longest example;
        the model sees the same tokens, with less padding: the examples are taken in chunks of `BUCKET_CHUNK`
        batches, each chunk sorted by length (the groups of `batch_indices`). Each epoch draws a new order when
        `shuffle=True` (examples, then batches). The pipeline is tf.data ops only: no Python runs per batch, and
        no `from_generator` (TensorFlow's generator dataset sets glibc's mmap threshold to 128 KB on Python 3.11,
        undoing `tfspeed.runtime.tune_allocator`: many times more page faults per training step).
        """
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"Received an invalid value for `batch_size`, expected a positive integer. "
                             f"Received: batch_size={batch_size!r}")
        if extra is not None and len(extra) != len(self):
            raise ValueError(f"Expected `extra` with one row per example ({len(self)}). "
                             f"Received: {len(extra)} rows.")
        labels = self.labels if extra is None else (self.labels, np.asarray(extra))
        ds = tf.data.Dataset.from_tensor_slices((dict(self.features), labels))
        num_batches = -(-len(self) // batch_size)
        if shuffle:
            ds = ds.shuffle(len(self), seed=seed, reshuffle_each_iteration=True)
        if bucket:
            def sorted_batches(x, y):
                order = tf.argsort(tf.reduce_sum(x["input_mask"], axis=1), stable=True)
                chunk = tf.nest.map_structure(lambda t: tf.gather(t, order), (x, y))
                return tf.data.Dataset.from_tensor_slices(chunk).batch(batch_size)

            def cut_to_longest(x, y):
                width = tf.reduce_max(tf.reduce_sum(x["input_mask"], axis=1))
                return {k: v[:, :width] for k, v in x.items()}, y

            ds = ds.batch(batch_size * BUCKET_CHUNK).flat_map(sorted_batches)
        else:
            ds = ds.batch(batch_size)
        if shuffle:
            ds = ds.shuffle(num_batches, seed=seed + 1, reshuffle_each_iteration=True)
        if bucket:
            ds = ds.map(cut_to_longest)
        # the number of batches, so `fit` knows the steps of an epoch (progress, time left, schedules)
        ds = ds.apply(tf.data.experimental.assert_cardinality(num_batches))
        if repeat:
            ds = ds.repeat()
        return ds.prefetch(2)


def check_splits(dataset, limit: Optional[int] = None, eval_limit: Optional[int] = None):
    """Refuses splits a classifier cannot be trained or judged on: an empty split, a training split with one class,
    a class the evaluation splits have and training (after `limit`) does not. Errors name the dataset, the split,
    the counts per class and the setting to change."""
    names = list(dataset.label_names)

    def counts(split):
        values, n = np.unique(split.labels, return_counts=True)
        return {names[v] if v < len(names) else int(v): int(c) for v, c in zip(values, n)}

    for split_name in ("train", "validation", "test"):
        if len(dataset.split(split_name)) == 0:
            raise ValueError(f"The {split_name} split of dataset {dataset.name!r} is empty: rows are split by a hash "
                             "of the text (about 80% train, 10% validation, 10% test), so a file of a few rows can "
                             "leave a split empty. Use a larger file.")
    train = dataset.train.take(limit)
    seen = counts(train)
    after = f" (after `limit`={limit}, --limit)" if limit is not None else ""
    if len(seen) < 2:
        raise ValueError(f"The training split of dataset {dataset.name!r} has examples of one class only{after}: "
                         f"{seen}; a classifier needs at least 2. Raise --limit, or check --label-column.")
    for split_name in ("validation", "test"):
        missing = {k: v for k, v in counts(dataset.split(split_name).take(eval_limit)).items() if k not in seen}
        if missing:
            raise ValueError(f"The {split_name} split of dataset {dataset.name!r} has classes the training split has "
                             f"no example of{after}: {missing} (training: {seen}). Raise --limit, or check the data.")


class EncodedDataset:
    """A `TextDataset` tokenized once: `train`, `validation`, `test` as `EncodedSplit`s, plus the tokenizer used."""

    def __init__(self, dataset, tokenizer: Tokenizer, limit: Optional[int] = None, eval_limit: Optional[int] = None):
        self.dataset, self.tokenizer = dataset, tokenizer
        check_splits(dataset, limit, eval_limit)
        self.train = EncodedSplit.from_split(dataset.train, tokenizer, limit)
        self.validation = EncodedSplit.from_split(dataset.validation, tokenizer, eval_limit)
        self.test = EncodedSplit.from_split(dataset.test, tokenizer, eval_limit)

    @property
    def label_names(self):
        return list(self.dataset.label_names)
