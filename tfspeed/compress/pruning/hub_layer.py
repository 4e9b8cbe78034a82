"""`PrunableKerasLayer`: a `hub.KerasLayer` BERT that TFMOT can prune as a whole.

TFMOT's `prune_low_magnitude` only wraps layers it knows; a `hub.KerasLayer` holding a SavedModel is not one. This
subclass also implements TFMOT's `PrunableLayer`, returning the kernel variables of the BERT inside (recognised by their
names, see `targets`), so the wrapper masks them, `strip` gives back a plain `hub.KerasLayer` holding the zeros, and the
model saves and reloads.
"""

from __future__ import annotations

from typing import Optional, Sequence

import tensorflow_hub as hub
import tensorflow_model_optimization as tfmot

from tfspeed.compat import keras
from tfspeed.compress.pruning.targets import _hub_variable_targeted


@keras.utils.register_keras_serializable(package="tfspeed")
class PrunableKerasLayer(hub.KerasLayer, tfmot.sparsity.keras.PrunableLayer):
    """A `hub.KerasLayer` that TFMOT can prune: `get_prunable_weights()` returns the kernels of a BERT SavedModel.

    Kernels are recognised by variable name: tfspeed exports (`layer_0_query/kernel`, ..., `pooler_dense/kernel`) and
    Model Garden exports (`transformer/layer_0/self_attention/query/kernel`, ..., `pooler_transform/kernel`).

    Args:
        handle: as for `hub.KerasLayer`.
        include_embeddings: also prune the word and type embedding tables. Defaults to `False`.
        layers: prune only the kernels of these layer names (e.g. `["layer_0_query"]`). Defaults to `None` (all
            attention, FFN and pooler kernels).
        **kwargs: passed to `hub.KerasLayer` (`trainable`, `name`, ...).
    """

    def __init__(self, handle, include_embeddings: bool = False, layers: Optional[Sequence[str]] = None, **kwargs):
        super().__init__(handle, **kwargs)
        self.include_embeddings = bool(include_embeddings)
        self.prune_layers = None if layers is None else [str(n) for n in layers]

    def get_prunable_weights(self):
        return [v for v in self.trainable_weights if _hub_variable_targeted(v.name, self.include_embeddings,
                                                                             self.prune_layers)]

    def get_config(self):
        return {**super().get_config(), "include_embeddings": self.include_embeddings, "layers": self.prune_layers}


__all__ = ["PrunableKerasLayer"]
