"""Students for distillation: which teacher layers a student starts from, and the student built from them.

`select_layers(Lt, layers, strategy)` picks teacher layer indices (`LayerStrategy`: every other layer as DistilBERT,
uniform, first or last); `student_from_teacher(teacher, layers=3)` builds a shallower student initialised from those
layers, or with `hidden_size=...` a narrower random-initialised one. `native_teacher` turns a classifier on a
tfspeed-exported hub layer into a native one to copy from.
"""

from __future__ import annotations

from typing import Optional, Sequence, Union

import numpy as np

from tfspeed.compat import keras
from tfspeed.compress.distillation.config import DistillConfig, LayerStrategy, check_optional_positive_int
from tfspeed.compress.distillation.internals import _hub_layer
from tfspeed.models.bert import _unwrap, build_classifier, config_of, is_bert, layer_by_name, num_classes_of

__all__ = ["LayerStrategy", "LAYER_STRATEGIES", "select_layers", "native_teacher", "student_from_teacher"]

LAYER_STRATEGIES = tuple(LayerStrategy.choices())  # ("every_other", "uniform", "first", "last")


def select_layers(num_teacher_layers: int, layers: Union[int, Sequence[int]] = DistillConfig.layers,
                  strategy: Union[str, LayerStrategy] = DistillConfig.layer_strategy) -> list:
    """Teacher layer indices a student starts from.

    Args:
        num_teacher_layers: layers of the teacher.
        layers: number of student layers, or the explicit list of teacher layers (any order, each in range).
            Defaults to `3`.
        strategy: for an integer `layers`: `"every_other"` (0, 2, 4, ...: DistilBERT), `"uniform"` (i * Lt // k),
            `"first"` (0..k-1) or `"last"` (the top k). Defaults to `"every_other"`.

    Example:

    >>> select_layers(6, 3), select_layers(6, 2, "uniform"), select_layers(6, [1, 5])
    ([0, 2, 4], [0, 3], [1, 5])
    """
    n = int(num_teacher_layers)
    if isinstance(layers, (list, tuple)) or (hasattr(layers, "__iter__") and not isinstance(layers, str)):
        chosen = [int(i) for i in layers]
        if not chosen or any(not 0 <= i < n for i in chosen):
            raise ValueError(f"Received an invalid value for `layers`, expected a non-empty list of teacher layer "
                             f"indices in [0, {n}). Received: layers={list(layers)!r}")
        return chosen
    if isinstance(layers, bool) or not isinstance(layers, (int, np.integer)) or not 1 <= layers <= n:
        raise ValueError(f"Received an invalid value for `layers`, expected an integer in [1, {n}] (the teacher has "
                         f"{n} layers) or a list of layer indices. Received: layers={layers!r}")
    k = int(layers)
    strategy = LayerStrategy.parse("strategy", strategy)
    if strategy == LayerStrategy.EVERY_OTHER:
        if 2 * (k - 1) >= n:
            raise ValueError(f"Cannot take {k} of {n} teacher layers every other layer (needs {2 * k - 1}). "
                             f"Received: layers={k}. Pass strategy='uniform' or fewer layers.")
        return list(range(0, 2 * k, 2))
    if strategy == LayerStrategy.UNIFORM:
        return [i * n // k for i in range(k)]
    if strategy == LayerStrategy.FIRST:
        return list(range(k))
    return list(range(n - k, n))  # LayerStrategy.LAST


def native_teacher(teacher: keras.Model) -> keras.Model:
    """A native tfspeed classifier with the weights of `teacher` (itself if native; a copy of a hub-layer classifier
    built from the config its tfspeed export records and the hub layer's current, fine-tuned variables)."""
    if is_bert(teacher):
        return teacher
    from tfspeed.hub import export, handles, weights

    hub_layer = _hub_layer(teacher)
    if hub_layer is None or not isinstance(getattr(hub_layer, "_handle", None), str):
        raise ValueError(f"Expected a tfspeed BERT classifier or a classifier on a hub.KerasLayer for `teacher`. "
                         f"Received: a model named {teacher.name!r}.")
    saved = export.saved_config(handles.local_path(hub_layer._handle))
    if saved is None:
        raise ValueError(f"Student layers can be copied only from a native teacher or a hub layer exported by "
                         f"tfspeed (it records its config). Received: a hub layer on {hub_layer._handle!r}. Import "
                         "it first with tfspeed.hub.build_classifier_from(handle) or pass `hidden_size`.")
    from tfspeed.models.config import BertConfig

    config = BertConfig.from_dict(saved)
    native = build_classifier(config, num_classes=int(teacher.output.shape[-1]),
                              classifier_dropout=float(layer_by_name(teacher, "classifier_dropout").rate))
    weight_map = weights.from_native_variables({v.name.rsplit(":", 1)[0]: v.numpy() for v in hub_layer.variables})
    weight_map["classifier"] = layer_by_name(teacher, "classifier").get_weights()
    weights.assign(native, weight_map)
    return native


def student_from_teacher(teacher: keras.Model, layers: Union[int, Sequence[int]] = DistillConfig.layers,
                         strategy: Union[str, LayerStrategy] = DistillConfig.layer_strategy,
                         hidden_size: Optional[int] = DistillConfig.hidden_size,
                         num_heads: Optional[int] = DistillConfig.num_heads,
                         intermediate_size: Optional[int] = DistillConfig.intermediate_size, seed: Optional[int] = None,
                         name: str = "student") -> keras.Model:
    """A new, smaller tfspeed classifier for distilling `teacher` (which is left unchanged).

    With `hidden_size=None` (default) the student keeps the teacher's widths and has fewer layers, initialised from the
    teacher's: embeddings, pooler and classifier are copied, and student layer j is teacher layer `selected[j]`
    (`select_layers(Lt, layers, strategy)`). With `hidden_size` set, the student is narrower and random-initialised.

    Args:
        teacher: a native tfspeed BERT classifier, or a classifier on a hub layer exported by tfspeed.
        layers: number of layers, or the list of teacher layers to copy (e.g. `[0, 2, 4]`). Defaults to `3`.
        strategy: how an integer `layers` picks teacher layers (see `select_layers`). Defaults to `"every_other"`.
        hidden_size: width of a narrower random-initialised student. Defaults to `None` (teacher's width, copied).
        num_heads: heads of a narrower student. Defaults to `hidden_size // teacher head size` (at least 1).
        intermediate_size: FFN width of a narrower student. Defaults to the teacher's FFN/hidden ratio * `hidden_size`.
        seed: random seed for a narrower student's initial weights. Defaults to `None`.
        name: Defaults to `"student"`.

    Returns:
        The student, a plain tfspeed classifier.
    """
    native = native_teacher(teacher)
    config = config_of(native)
    num_classes = num_classes_of(native)
    dropout = float(_unwrap(layer_by_name(native, "classifier_dropout")).rate)
    if hidden_size is None:
        chosen = select_layers(config.num_layers, layers, strategy)
        student_config = config.replace(
            num_layers=len(chosen), layer_num_heads=[config.layer_num_heads[i] for i in chosen],
            layer_intermediate_sizes=[config.layer_intermediate_sizes[i] for i in chosen])
        student = build_classifier(student_config, num_classes=num_classes, classifier_dropout=dropout, name=name)
        _copy_student_weights(native, student, chosen)
        return student
    hidden_size = check_optional_positive_int("hidden_size", hidden_size)
    k = layers if isinstance(layers, (int, np.integer)) and not isinstance(layers, bool) else len(select_layers(
        config.num_layers, layers, strategy))
    if not 1 <= int(k) <= 64:
        raise ValueError(f"Received an invalid value for `layers`, expected a positive integer. Received: layers={k!r}")
    heads = num_heads or max(1, int(hidden_size) // config.head_size)
    if hidden_size % heads:
        raise ValueError(f"`hidden_size` must be divisible by `num_heads`. Received: hidden_size={hidden_size}, "
                         f"num_heads={heads}. Pass num_heads explicitly.")
    inner = intermediate_size or max(1, round(config.intermediate_size / config.hidden_size * hidden_size))
    student_config = config.replace(num_layers=int(k), hidden_size=int(hidden_size), num_heads=int(heads),
                                    head_size=None, intermediate_size=int(inner))
    if seed is not None:
        keras.utils.set_random_seed(seed)
    return build_classifier(student_config, num_classes=num_classes, classifier_dropout=dropout, name=name)


def _copy_student_weights(teacher: keras.Model, student: keras.Model, chosen: Sequence[int]) -> None:
    src = {_unwrap(layer).name: _unwrap(layer) for layer in teacher.layers}
    for layer in student.layers:
        layer = _unwrap(layer)
        if not layer.weights:
            continue
        source_name = layer.name
        if layer.name.startswith("layer_"):
            index, suffix = layer.name[len("layer_"):].split("_", 1)
            source_name = f"layer_{chosen[int(index)]}_{suffix}"
        values = src[source_name].get_weights()
        if [v.shape for v in values] != [tuple(w.shape) for w in layer.weights]:  # pragma: no cover - same config
            raise ValueError(f"Shape mismatch copying teacher layer {source_name!r} to student layer {layer.name!r}.")
        layer.set_weights(values)
