"""The callbacks a pruned model needs in `fit`: TFMOT's `UpdatePruningStep` (mandatory), tfspeed's `SparsityLogger`
(sparsity in the epoch logs, so `History` and TensorBoard keep it) and, on request, TFMOT's `PruningSummaries`."""

from __future__ import annotations

import importlib.util

import numpy as np
import tensorflow_model_optimization as tfmot

from tfspeed.compat import keras
from tfspeed.compress.pruning.targets import _is_hub_layer, _pruned_layers, _variable_layer

_sparsity = tfmot.sparsity.keras


def _wrapper_sparsities(model) -> dict:
    """{name: (zeros, size)} of every prunable weight of every wrapper in `model` (weights times masks)."""
    out = {}
    for wrapper in _pruned_layers(model):
        inner = wrapper.layer
        for weight, mask, _ in wrapper.pruning_vars:
            values = weight.numpy() * mask.numpy()
            if _is_hub_layer(inner):
                name = f"{inner.name}/{_variable_layer(weight.name).split('/')[-1]}"
            else:
                name = inner.name if len(wrapper.pruning_vars) == 1 else f"{inner.name}/{weight.name.split(':')[0]}"
            out[name] = (int(values.size - np.count_nonzero(values)), int(values.size))
    return out


@keras.utils.register_keras_serializable(package="tfspeed")
class SparsityLogger(keras.callbacks.Callback):
    """Writes the current sparsity of every pruned kernel into the epoch logs (so `History` and TensorBoard keep them).

    Keys: `sparsity` (all targeted weights together) and, with `per_layer=True`, `sparsity/<layer>` for each kernel.

    Args:
        per_layer: also log each layer. Defaults to `True`.
    """

    def __init__(self, per_layer: bool = True):
        super().__init__()
        self.per_layer = bool(per_layer)

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        stats = _wrapper_sparsities(self.model)
        if not stats:
            return
        zeros, size = sum(z for z, _ in stats.values()), sum(s for _, s in stats.values())
        logs["sparsity"] = zeros / size
        if self.per_layer:
            for name, (z, s) in stats.items():
                logs[f"sparsity/{name}"] = z / s

    def get_config(self):
        return {"per_layer": self.per_layer}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def _has_tensorboard() -> bool:
    return importlib.util.find_spec("tensorboard") is not None


def pruning_callbacks(log_dir=None, per_layer: bool = True) -> list:
    """The callbacks pruning needs in `fit`: `UpdatePruningStep` (mandatory), `SparsityLogger` and, with `log_dir`,
    TFMOT's `PruningSummaries` (TensorBoard scalars of sparsity and thresholds).

    Args:
        log_dir: TensorBoard directory (`PruneConfig.log_dir`). Defaults to `None` (no summaries).
        per_layer: log the sparsity of each layer too. Defaults to `True`.
    """
    callbacks = [_sparsity.UpdatePruningStep(), SparsityLogger(per_layer=per_layer)]
    if log_dir is not None:
        if not _has_tensorboard():
            raise ValueError("`log_dir` asks for TFMOT's PruningSummaries, which write TensorBoard summaries, but "
                             "TensorBoard is not installed. Run `pip install tensorboard`, or pass log_dir=None (the "
                             f"sparsity still goes into the History logs). Received: log_dir={str(log_dir)!r}")
        callbacks.append(_sparsity.PruningSummaries(log_dir=str(log_dir)))
    return callbacks


__all__ = ["SparsityLogger", "pruning_callbacks"]
