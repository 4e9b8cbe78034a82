"""Internals of a classifier for the intermediate losses: its logits, hidden states and attention maps.

`num_layers_of(model)` counts the transformer layers of a native tfspeed BERT or of a classifier on a
`hub.KerasLayer` encoder; `uniform_layer_map` is TinyBERT's student-to-teacher layer map. `_Internals` is a functional
view of a classifier returning `[logits, *hidden_states, *attention_maps]`, sharing its layers.
"""

from __future__ import annotations

from typing import Optional, Sequence

from tfspeed.compat import keras
from tfspeed.models.bert import INPUT_NAMES, _unwrap, config_of, is_bert, layer_by_name

__all__ = ["num_layers_of", "uniform_layer_map"]


def _hub_layer(model):
    """The `hub.KerasLayer` inside `model` (unwrapped), or None."""
    try:
        import tensorflow_hub as hub
    except ImportError:  # pragma: no cover
        return None
    for layer in getattr(model, "layers", []):
        if isinstance(_unwrap(layer), hub.KerasLayer):
            return _unwrap(layer)
    return None


def num_layers_of(model) -> int:
    """Transformer layers of a native tfspeed BERT or of a hub-layer classifier (from its `encoder_outputs`)."""
    if is_bert(model):
        return config_of(model).num_layers
    hub_layer = _hub_layer(model)
    if hub_layer is None:
        raise ValueError(f"Expected a tfspeed BERT classifier or a classifier on a `hub.KerasLayer` BERT encoder. "
                         f"Received: a model named {getattr(model, 'name', model)!r} with neither.")
    return len(hub_layer.output["encoder_outputs"])


def uniform_layer_map(student_layers: int, teacher_layers: int) -> list:
    """TinyBERT's uniform map: student layer j learns from teacher layer (j + 1) * Lt / Ls - 1 (last to last)."""
    return [(j + 1) * teacher_layers // student_layers - 1 for j in range(student_layers)]


def _model_inputs(model):
    return model.input if isinstance(model.input, dict) else dict(zip(INPUT_NAMES, model.inputs))


class _Internals:
    """A functional view of a classifier returning `[logits, *hidden_states, *attention_maps]` (shares its layers).

    Kept in a plain (untracked) holder, so its layers are not saved twice.
    """

    def __init__(self, model, layers: Sequence[int], hidden: bool, attention: bool, role: str):
        self.layers, self.hidden, self.attention = list(layers), hidden, attention
        self.score_scales = []
        outputs = [model.output]
        if hidden:
            if is_bert(model):
                outputs += [layer_by_name(model, f"layer_{i}_output_layer_norm").output for i in self.layers]
            else:
                hub_layer = _hub_layer(model)
                if hub_layer is None:
                    raise ValueError(f"`{role}` must be a tfspeed BERT or a hub-layer classifier for hidden-state "
                                     f"losses. Received: a model named {model.name!r}.")
                encoder_outputs = hub_layer.output["encoder_outputs"]
                outputs += [encoder_outputs[i] for i in self.layers]
        if attention:
            if not is_bert(model):
                raise ValueError(f"Attention-map losses (`attention_weight` > 0) need a native tfspeed BERT as "
                                 f"`{role}`: a hub.KerasLayer exposes only hidden states (`encoder_outputs`). "
                                 f"Received: {role} {model.name!r}. Pass attention_weight=0 or a native model.")
            # TinyBERT fits the unnormalised attention matrix (it converges faster than the softmax's): the scores,
            # scaled by 1/sqrt(head_size) as the softmax sees them.
            scores = [_unwrap(layer_by_name(model, f"layer_{i}_scores")) for i in self.layers]
            outputs += [layer.output for layer in scores]
            self.score_scales = [1.0 / float(layer.head_size) ** 0.5 for layer in scores]
        self.model = keras.Model(_model_inputs(model), outputs, name=f"{model.name}_internals")
        self.hidden_widths = [int(o.shape[-1]) for o in outputs[1:1 + len(self.layers)]] if hidden else []

    def __call__(self, x, training):
        out = self.model(x, training=training)
        out = out if isinstance(out, (list, tuple)) else [out]
        n = len(self.layers)
        hidden = list(out[1:1 + n]) if self.hidden else []
        attention = list(out[1 + n if self.hidden else 1:]) if self.attention else []
        attention = [a * scale for a, scale in zip(attention, self.score_scales)]
        return out[0], hidden, attention


class _Views:
    """Untracked holder of the teacher's and student's internal views (their layers are already tracked)."""

    teacher: Optional[_Internals] = None
    student: Optional[_Internals] = None
