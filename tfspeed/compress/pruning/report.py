"""How sparse a pruned model is: sparsity per targeted kernel and overall, and the gzip size of its weights.

Unstructured sparsity shrinks the gzip of the weights (and of a .tflite file), not the raw size nor the latency. The
.tflite sizes are reported by `tfspeed.export.sparsity.sparsity_report`, which adds them to this report.
"""

from __future__ import annotations

import gzip
from typing import Optional, Sequence

import numpy as np

from tfspeed.compat import keras
from tfspeed.compress.pruning.magnitude import strip
from tfspeed.compress.pruning.targets import (
    _hub_variable_targeted,
    _is_hub_layer,
    _native_targeted,
    _pruned_layers,
    _variable_layer,
)
from tfspeed.models.bert import _unwrap


def targeted_weights(model, include_embeddings: bool = False, include_classifier: bool = False,
                     layers: Optional[Sequence[str]] = None) -> dict:
    """{name: array} of the kernels `prune` targets with the same arguments, read from a pruned (masked) or plain
    model: native layers by layer name, hub variables as `<hub layer>/<variable layer>`.

    Args:
        model: a pruned (wrapped) or stripped model, native or hub.
        include_embeddings, include_classifier, layers: which kernels count, as for `prune` (`PruneConfig.targets()`
            gives them). Defaults to `False`, `False` and `None` (attention, FFN and pooler kernels).
    """
    out = {}
    wrapped = {id(w.layer): w for w in _pruned_layers(model)}
    for layer in model.layers:
        inner = _unwrap(layer)
        wrapper = wrapped.get(id(inner))
        masks = {id(w): m.numpy() for w, m, _ in wrapper.pruning_vars} if wrapper is not None else {}
        if _is_hub_layer(inner):
            chosen = None if layers is None or inner.name in layers else list(layers)
            for v in inner.trainable_weights:
                if _hub_variable_targeted(v.name, include_embeddings, chosen):
                    out[f"{inner.name}/{_variable_layer(v.name).split('/')[-1]}"] = v.numpy() * masks.get(id(v), 1.0)
            continue
        if layers is not None:
            chosen = inner.name in layers
        else:
            chosen = _native_targeted(inner, include_embeddings, include_classifier)
        if chosen and inner.weights:
            weight = inner.weights[0]
            out[inner.name] = weight.numpy() * masks.get(id(weight), 1.0)
    return out


def _gzip_size(data: bytes) -> int:
    """gzip size at level 6 (gzip's default: level 9 is minutes on 90 MB of weights and barely smaller)."""
    return len(gzip.compress(data, compresslevel=6))


def _plain(model):
    """`model` without pruning wrappers (stripped on a copy if it has some)."""
    return strip(model) if _pruned_layers(model) else model


def sparsity_report(model: keras.Model, include_embeddings: bool = False, include_classifier: bool = False,
                    layers: Optional[Sequence[str]] = None) -> dict:
    """Sparsity per targeted kernel and overall, and the size of all weights, raw and gzipped.

    Args:
        model: a pruned (wrapped) or stripped model, native or hub.
        include_embeddings, include_classifier, layers: which kernels count, as for `prune`. Defaults to `False`,
            `False` and `None`.

    Returns:
        `{"sparsity", "targeted_params", "layers": {name: {"sparsity", "params"}}, "model_sparsity",
        "weights_bytes", "weights_gzip_bytes"}`. For the sizes of the .tflite files too, see
        `tfspeed.export.sparsity.sparsity_report`.
    """
    return _report(model, include_embeddings, include_classifier, layers)[0]


def _report(model, include_embeddings, include_classifier, layers) -> tuple:
    """(the report, the model without wrappers)."""
    weights = targeted_weights(model, include_embeddings, include_classifier, layers)
    if not weights:
        raise ValueError(f"`model` {model.name!r} has no kernel that `prune` targets with these arguments: nothing to "
                         "report. Pass `layers=` to choose them.")
    per_layer = {n: {"sparsity": float(1.0 - np.count_nonzero(w) / w.size), "params": int(w.size)}
                 for n, w in weights.items()}
    total = sum(w.size for w in weights.values())
    zeros = sum(w.size - np.count_nonzero(w) for w in weights.values())
    plain = _plain(model)
    all_weights = [np.asarray(w) for w in plain.get_weights()]
    blob = b"".join(np.ascontiguousarray(w).tobytes() for w in all_weights)
    model_params = sum(w.size for w in all_weights if w.dtype.kind == "f")
    model_zeros = sum(w.size - np.count_nonzero(w) for w in all_weights if w.dtype.kind == "f")
    report = {"sparsity": float(zeros / total), "targeted_params": int(total), "layers": per_layer,
              "model_sparsity": float(model_zeros / max(model_params, 1)), "weights_bytes": len(blob),
              "weights_gzip_bytes": _gzip_size(blob)}
    return report, plain


__all__ = ["sparsity_report", "targeted_weights"]
