"""The shared test harness (keras-hub style): a tiny BERT config, and the checks every model and layer test repeats.

`tiny_config(**overrides)` is the one small random-weight BERT shape of the suite: non-default everywhere, so a
serialization mismatch shows. Module-level constants use it directly; the `tiny_config` fixture is its default.
"""

from __future__ import annotations

import numpy as np

from tfspeed.models import BertConfig

TINY = dict(vocab_size=120, hidden_size=32, num_layers=2, num_heads=4, intermediate_size=48, max_positions=40,
            type_vocab_size=3, dropout=0.05, attention_dropout=0.02)


def tiny_config(**overrides) -> BertConfig:
    """A 2-layer, hidden-32 BERT config; `overrides` change any field (e.g. `num_layers=4, dropout=0.0`)."""
    return BertConfig(**{**TINY, **overrides})


def assert_same_outputs(a, b, atol: float, what: str = "outputs"):
    """Two models' (or two calls') outputs, element by element, within `atol` (dicts compared key by key)."""
    if isinstance(a, dict):
        assert set(a) == set(b), f"{what}: keys differ: {sorted(a)} vs {sorted(b)}"
        for k in a:
            assert_same_outputs(a[k], b[k], atol, f"{what}[{k!r}]")
        return
    if isinstance(a, (list, tuple)):
        assert len(a) == len(b), f"{what}: {len(a)} vs {len(b)} items"
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same_outputs(x, y, atol, f"{what}[{i}]")
        return
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=atol, err_msg=what)


def run_save_reload_test(model, inputs, directory, atol: float = 1e-6):
    """Saves `model` as `.keras`, loads it back with tfspeed's one loading scope (`artifacts.custom_objects()`), and
    checks the reloaded model's outputs on `inputs` within `atol`. Returns the reloaded model."""
    from pathlib import Path

    from tfspeed import artifacts
    from tfspeed.compat import keras

    path = Path(directory) / "model.keras"
    model.save(path)
    with keras.utils.custom_object_scope(artifacts.custom_objects()):
        loaded = keras.models.load_model(path)
    assert_same_outputs(np.asarray(model(inputs, training=False)), np.asarray(loaded(inputs, training=False)), atol,
                        "reloaded outputs")
    return loaded


def run_litert_parity_test(model, inputs, mode: str = "float32", atol: float = 1e-4):
    """Converts `model` to a .tflite in `mode`, runs the file on every row of `inputs` with the LiteRT interpreter, and
    checks its logits within `atol` of the Keras model's. Returns the file's bytes."""
    from tfspeed import export
    from tfspeed.data import EncodedSplit

    rows, seq_length = np.asarray(inputs["input_word_ids"]).shape
    data = export.convert(model, mode, seq_length=seq_length)
    lite = export.evaluate(data, EncodedSplit({k: np.asarray(v) for k, v in inputs.items()}, np.zeros(rows)))
    assert_same_outputs(lite, np.asarray(model(inputs, training=False)), atol, f"{mode} .tflite vs Keras")
    return data
