"""Pruning through fit in one stage, or in two: a gradual route to m:n sparsity through a milder pattern first."""

from __future__ import annotations

import numpy as np

from tfspeed.compat import keras
from tfspeed.compress.pruning.config import PruneConfig
from tfspeed.compress.pruning.magnitude import _split_schedule, prune, strip
from tfspeed.compress.pruning.schedules import _check_m_by_n


def _check_gradual_from(gradual_from, m_by_n):
    if gradual_from is None:
        return None
    if m_by_n is None:
        raise ValueError("`gradual_from` is a first, milder m:n pattern on the way to `m_by_n`, but `m_by_n` is None. "
                         f"Pass `m_by_n` too, e.g. m_by_n=(2, 4), gradual_from=(1, 4). Received: "
                         f"gradual_from={gradual_from!r}, m_by_n=None")
    try:
        first = _check_m_by_n(gradual_from)
    except ValueError:
        first = None
    if first is None or first[1] != m_by_n[1] or first[0] >= m_by_n[0]:
        raise ValueError("Received an invalid value for `gradual_from`, expected (m0, n) with 0 < m0 < m and the n of "
                         f"`m_by_n` (fewer zeros per group, pruned for one epoch before `m_by_n`), e.g. (1, 4) before "
                         f"(2, 4). Received: gradual_from={gradual_from!r}, m_by_n={m_by_n!r}")
    return first


def prune_and_fit(model: keras.Model, fit, epochs=None, gradual_from=None, config=None, **overrides) -> tuple:
    """Prunes a copy of `model` and trains it with `fit`; with a gradual route, through a milder m:n pattern first.

    One stage: `prune(model, config)`, then `fit(pruned, epochs)`. With `gradual_from=(m0, n)` (or `gradual=True`:
    (m-1, n)) and `m_by_n=(m, n)`: pruned at `gradual_from` and fitted for ONE epoch, `strip`ped, then pruned at
    `m_by_n` and fitted for `epochs`. The final mask is then chosen on weights that have already recovered from a
    lighter one, instead of taking all of m:n at once: on fine-tuned MiniLM, 1:4 for one epoch then 2:4 for three
    (distilled) lost 0.49 points of accuracy, where 2:4 at once lost 1.3-1.9 (`benchmarks/prune_minilm.py`, run m24g).

    Args:
        model: as for `prune`; it is not changed.
        fit: `fit(pruned, epochs)` trains a pruned model and returns its Keras `History`; it must pass
            `pruning_callbacks()` (or TFMOT's `UpdatePruningStep`) to `fit`. Called once per stage.
        epochs: epochs at the final pattern (the first stage of a gradual route adds one). Defaults to `None`
            (`config.epochs`, `2`).
        gradual_from: `(m0, n)` with 0 < m0 < m and the n of `m_by_n`, pruned for one epoch first. Defaults to `None`
            (`(m - 1, n)` with `gradual=True`, else one stage).
        config: a `PruneConfig` (or its dict), used by `prune` in every stage. Defaults to `None` (`PruneConfig()`).
        **overrides: `PruneConfig` settings (`m_by_n`, `schedule`, `sparsity`, `include_embeddings`, ...), as for
            `prune`. An `embedding_sparsity` is scaled by m0 / m in the first stage (0.3 then 0.6 for 1:4 then 2:4).

    Returns:
        `(pruned, history)`: the model of the last stage, still wrapped (`strip` it), and `{key: [float per epoch]}`
        with the epochs of both stages concatenated (the keys of the last stage).

    Example (a tiny random-weight BERT: 1:4 for one epoch, then 2:4 for two; `run_eagerly=True` spares tracing a graph
    for the one step of each epoch, leave it out for real training):

    >>> from tfspeed.compat import keras
    >>> from tfspeed.compress.pruning import pruning_callbacks
    >>> from tfspeed.data import EncodedSplit
    >>> from tfspeed.hub import sample_inputs
    >>> from tfspeed.models import BertConfig, build_classifier
    >>> config = BertConfig(vocab_size=100, hidden_size=16, num_layers=2, num_heads=2, intermediate_size=32,
    ...                     max_positions=16)
    >>> model = build_classifier(config, num_classes=2)
    >>> train = EncodedSplit(sample_inputs(config, batch=8, seq_length=8), [0, 1] * 4)
    >>> def fit(pruned, epochs):
    ...     pruned.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True), run_eagerly=True)
    ...     return pruned.fit(train.features, train.labels, epochs=epochs, verbose=0,
    ...                       callbacks=pruning_callbacks(per_layer=False))
    >>> pruned, history = prune_and_fit(model, fit, 2, m_by_n=(2, 4), gradual_from=(1, 4), schedule="constant")
    >>> history["sparsity"]
    [0.25, 0.5, 0.5]
    """
    if epochs is not None:
        if isinstance(epochs, bool) or not isinstance(epochs, (int, np.integer)) or epochs < 1:
            raise ValueError(f"Received an invalid value for `epochs`, expected a positive integer. Received: "
                             f"epochs={epochs!r}")
        overrides["epochs"] = int(epochs)
    schedule, overrides = _split_schedule(overrides)
    schedule = {} if schedule is None else {"schedule": schedule}
    config = PruneConfig.resolve(config, **overrides)
    epochs = config.epochs
    if isinstance(epochs, bool) or not isinstance(epochs, (int, np.integer)):
        raise ValueError(f"Received an invalid value for `epochs`, expected a positive integer. Received: "
                         f"epochs={epochs!r}")
    gradual_from = _check_gradual_from(config.gradual_from if gradual_from is None else gradual_from, config.m_by_n)
    start, histories = model, []
    if gradual_from is not None:
        stage = config.replace(m_by_n=gradual_from, gradual=False)
        if stage.embedding_sparsity is not None:  # the tables take the same milder first step as the kernels
            stage = stage.replace(embedding_sparsity=stage.embedding_sparsity * gradual_from[0] / config.m_by_n[0])
        first = prune(model, stage, **schedule)
        histories.append(fit(first, 1).history)
        start = strip(first)
    pruned = prune(start, config, **schedule)
    histories.append(fit(pruned, int(epochs)).history)
    history = {k: [float(v) for h in histories for v in h.get(k, [])] for k in histories[-1]}
    return pruned, history


__all__ = ["prune_and_fit"]
