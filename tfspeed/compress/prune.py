"""Magnitude pruning of a BERT with TFMOT, scheduled through `fit`, for native tfspeed BERTs and `hub.KerasLayer` BERTs.

The paired verbs return NEW models and never touch the caller's: `prune(model)` wraps every targeted kernel with TFMOT's
`PruneLowMagnitude` (attention q/k/v/output, FFN intermediate/output and pooler; embeddings and classifier on request),
`strip(model)` removes the wrappers and returns the plain model whose kernels hold the zeros.

Native BERT: the graph is flat, so every Dense is a top-level layer and is wrapped on its own. `hub.KerasLayer` BERT: the
hub layer becomes a `PrunableKerasLayer` (a `hub.KerasLayer` that implements TFMOT's `PrunableLayer`, returning the
kernel variables of the SavedModel) and is wrapped as a whole.

Unstructured sparsity makes the gzip of the weights and of the .tflite smaller, not the model faster: for speed see
`tfspeed.compress.structured`.

Example:

>>> from tfspeed.compress import prune
>>> pruned = prune.prune(model, sparsity=0.5, epochs=2, steps_per_epoch=300)
>>> pruned.compile(...); pruned.fit(data, epochs=2, callbacks=prune.pruning_callbacks())
>>> small = prune.strip(pruned)
>>> prune.sparsity_report(small, seq_length=64)["sparsity"]
0.5
"""

from __future__ import annotations

import gzip
import re
from typing import Optional, Sequence

import numpy as np
import tensorflow_model_optimization as tfmot

from tfspeed.compat import keras, tf
from tfspeed.models.bert import CUSTOM_OBJECTS, INPUT_NAMES, _unwrap

import tensorflow_hub as hub  # noqa: E402  (after compat: Keras 2)

_register = keras.saving.register_keras_serializable(package="tfspeed")
from tensorflow_model_optimization.python.core.sparsity.keras.pruning_wrapper import PruneLowMagnitude  # noqa: E402

_sparsity = tfmot.sparsity.keras

SCHEDULES = ("polynomial", "constant")
_MISSING_STEP_MSG = PruneLowMagnitude._PRUNE_CALLBACK_ERROR_MSG

# Names of the targeted kernels. Native layers (and tfspeed TF-Hub exports, whose variables carry the same names):
_NATIVE_ENCODER = re.compile(r"layer_\d+_(query|key|value|attention_output|intermediate|output)|pooler_dense")
_NATIVE_EMBEDDINGS = ("word_embeddings", "type_embeddings")
_NATIVE_CLASSIFIER = ("classifier",)
# Model Garden TF-Hub BERT variables (3-D EinsumDense kernels):
_GARDEN_ENCODER = re.compile(r"transformer/layer_\d+/(self_attention/(query|key|value|attention_output)|intermediate|"
                             r"output)/kernel|pooler_transform/kernel")
_GARDEN_EMBEDDINGS = re.compile(r"(word_embeddings|type_embeddings)/embeddings")


# ======================================================================================================================
# Validation
# ======================================================================================================================

def _check_sparsity(sparsity, argument="sparsity"):
    if isinstance(sparsity, bool) or not isinstance(sparsity, (int, float, np.floating)) or not 0.0 <= sparsity < 1.0:
        raise ValueError(f"Received an invalid value for `{argument}`, expected a float in [0, 1). "
                         f"Received: {argument}={sparsity!r}")
    return float(sparsity)


def _check_m_by_n(m_by_n):
    if m_by_n is None:
        return None
    if isinstance(m_by_n, str):
        parts = re.split(r"[:,x/ ]", m_by_n.strip())
        try:
            m_by_n = tuple(int(p) for p in parts)
        except ValueError:
            m_by_n = (m_by_n,)
    ok = (isinstance(m_by_n, (tuple, list)) and len(m_by_n) == 2
          and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in m_by_n)
          and 0 < m_by_n[0] < m_by_n[1])
    if not ok:
        raise ValueError("Received an invalid value for `m_by_n`, expected two integers (m, n) with 0 < m < n: m zeros "
                         f"in every n consecutive weights, e.g. (2, 4). Received: m_by_n={m_by_n!r}")
    return int(m_by_n[0]), int(m_by_n[1])


def _check_steps(begin_step, end_step, frequency):
    if isinstance(begin_step, bool) or not isinstance(begin_step, (int, np.integer)) or begin_step < 0:
        raise ValueError(f"Received an invalid value for `begin_step`, expected an integer >= 0. "
                         f"Received: begin_step={begin_step!r}")
    if end_step is not None and end_step != -1 and (not isinstance(end_step, (int, np.integer)) or end_step <= begin_step):
        raise ValueError(f"Received an invalid value for `end_step`, expected an integer > begin_step (pruning must begin "
                         f"before it ends). Received: begin_step={begin_step!r}, end_step={end_step!r}")
    if isinstance(frequency, bool) or not isinstance(frequency, (int, np.integer)) or frequency < 1:
        raise ValueError(f"Received an invalid value for `frequency`, expected a positive integer. "
                         f"Received: frequency={frequency!r}")


# ======================================================================================================================
# Schedules
# ======================================================================================================================

def make_schedule(schedule="polynomial", sparsity: float = 0.5, begin_step: int = 0, end_step: Optional[int] = None,
                  frequency: int = 100, initial_sparsity: float = 0.0, power: int = 3):
    """A TFMOT pruning schedule.

    Args:
        schedule: `"polynomial"` (TFMOT `PolynomialDecay` from `initial_sparsity` to `sparsity` between `begin_step`
            and `end_step`), `"constant"` (`ConstantSparsity(sparsity)` from `begin_step`) or a TFMOT
            `PruningSchedule`, returned as it is. Defaults to `"polynomial"`.
        sparsity: final fraction of zeros, in [0, 1). Defaults to `0.5`.
        begin_step: first step at which masks are updated. Defaults to `0`.
        end_step: last step of mask updates; required by `"polynomial"`. Defaults to `None` (`-1`, no end, for
            `"constant"`).
        frequency: steps between mask updates. Defaults to `100`.
        initial_sparsity: sparsity at `begin_step` of the polynomial schedule. Defaults to `0.0`.
        power: exponent of the polynomial schedule. Defaults to `3`.
    """
    if isinstance(schedule, _sparsity.PruningSchedule):
        return schedule
    if schedule not in SCHEDULES:
        raise ValueError(f"Received an invalid value for `schedule`, expected one of {SCHEDULES} or a "
                         f"`tfmot.sparsity.keras.PruningSchedule`. Received: schedule={schedule!r}")
    sparsity = _check_sparsity(sparsity)
    _check_steps(begin_step, end_step, frequency)
    if schedule == "constant":
        return _sparsity.ConstantSparsity(sparsity, begin_step=int(begin_step),
                                          end_step=-1 if end_step is None else int(end_step), frequency=int(frequency))
    if end_step is None or end_step == -1:
        raise ValueError("The polynomial schedule needs `end_step` (the step at which `sparsity` is reached). Pass "
                         "`end_step`, or `epochs` and `steps_per_epoch` to `prune` / `schedule_for_epochs`. "
                         f"Received: end_step={end_step!r}")
    initial_sparsity = _check_sparsity(initial_sparsity, "initial_sparsity")
    if initial_sparsity > sparsity:
        raise ValueError(f"Expected `initial_sparsity` <= `sparsity`. Received: initial_sparsity={initial_sparsity}, "
                         f"sparsity={sparsity}")
    return _sparsity.PolynomialDecay(initial_sparsity=initial_sparsity, final_sparsity=sparsity,
                                     begin_step=int(begin_step), end_step=int(end_step), power=power,
                                     frequency=int(frequency))


def schedule_for_epochs(sparsity: float = 0.5, epochs: float = 1, steps_per_epoch: int = 100,
                        schedule: str = "polynomial", begin_epoch: float = 0.0, end_epoch: Optional[float] = None,
                        frequency: Optional[int] = None, **kwargs):
    """A TFMOT schedule whose steps are derived from epochs.

    Args:
        sparsity: final fraction of zeros, in [0, 1). Defaults to `0.5`.
        epochs: epochs of pruning fine-tuning. Defaults to `1`.
        steps_per_epoch: optimizer steps per epoch (`ceil(train examples / batch size)`). Defaults to `100`.
        schedule: `"polynomial"` or `"constant"`. Defaults to `"polynomial"`.
        begin_epoch: epoch (may be fractional) at which pruning begins. Defaults to `0.0`.
        end_epoch: epoch at which the final sparsity is reached (polynomial). Defaults to `0.7 * epochs`, leaving the
            last 30% of the steps to recover at the final sparsity.
        frequency: steps between mask updates. Defaults to about 20 updates between begin and end (at most 100 steps).
        **kwargs: `initial_sparsity`, `power` for `make_schedule`.

    Example:

    >>> schedule_for_epochs(0.5, epochs=2, steps_per_epoch=300).get_config()["config"]["end_step"]
    420
    """
    if isinstance(steps_per_epoch, bool) or not isinstance(steps_per_epoch, (int, np.integer)) or steps_per_epoch < 1:
        raise ValueError(f"Received an invalid value for `steps_per_epoch`, expected a positive integer. "
                         f"Received: steps_per_epoch={steps_per_epoch!r}")
    if not isinstance(epochs, (int, float)) or epochs <= 0:
        raise ValueError(f"Received an invalid value for `epochs`, expected a positive number. "
                         f"Received: epochs={epochs!r}")
    end_epoch = 0.7 * epochs if end_epoch is None else end_epoch
    if not 0 <= begin_epoch < end_epoch:
        raise ValueError(f"Expected 0 <= begin_epoch < end_epoch (pruning must begin before it ends). "
                         f"Received: begin_epoch={begin_epoch!r}, end_epoch={end_epoch!r}")
    begin, end = int(round(begin_epoch * steps_per_epoch)), max(int(round(end_epoch * steps_per_epoch)), 1)
    end = max(end, begin + 1)
    if frequency is None:
        frequency = int(min(100, max(1, (end - begin) // 20)))
    return make_schedule(schedule, sparsity, begin_step=begin, end_step=end if schedule == "polynomial" else None,
                         frequency=frequency, **kwargs)


# ======================================================================================================================
# The hub layer TFMOT can prune
# ======================================================================================================================

@_register
class PrunableKerasLayer(hub.KerasLayer, _sparsity.PrunableLayer):
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


def _variable_layer(name: str) -> str:
    """'layer_0_query/kernel:0' -> 'layer_0_query'; 'transformer/layer_0/intermediate/kernel:0' -> '...intermediate'."""
    return name.split(":")[0].rsplit("/", 1)[0]


def _hub_variable_targeted(name: str, include_embeddings: bool, layers) -> bool:
    name = name.split(":")[0]
    layer = _variable_layer(name)
    if layers is not None:
        return name.endswith(("/kernel", "/embeddings")) and (layer in layers or layer.split("/")[-1] in layers)
    if name.endswith("/kernel") and (_NATIVE_ENCODER.fullmatch(layer.split("/")[-1]) or _GARDEN_ENCODER.fullmatch(name)):
        return True
    if include_embeddings and (layer.split("/")[-1] in _NATIVE_EMBEDDINGS and name.endswith("/embeddings")
                               or _GARDEN_EMBEDDINGS.fullmatch(name)):
        return True
    return False


def _hub_prunable_layer_names(layer) -> list:
    return sorted({_variable_layer(v.name) for v in layer.trainable_weights if v.name.split(":")[0].endswith("/kernel")})


# ======================================================================================================================
# The pruned model: a functional model whose fit checks for UpdatePruningStep
# ======================================================================================================================

def _missing_step_message() -> str:
    return (f"TFMOT: {_MISSING_STEP_MSG} In tfspeed: pass "
            "`callbacks=tfspeed.compress.prune.pruning_callbacks()` to `fit` (it holds `UpdatePruningStep` and the "
            "sparsity logger), or add `tfmot.sparsity.keras.UpdatePruningStep()` to your callbacks.")


def _flatten_callbacks(callbacks):
    if callbacks is None:
        return []
    if isinstance(callbacks, keras.callbacks.CallbackList):
        return list(callbacks.callbacks)
    if isinstance(callbacks, keras.callbacks.Callback):
        return [callbacks]
    return list(callbacks)


@_register
class PrunedModel(keras.Model):
    """The functional model `prune` returns: a plain Keras model whose `fit` refuses to run without
    `UpdatePruningStep` (TFMOT's wrapper would fail inside the first step with a less helpful message)."""

    def fit(self, *args, **kwargs):
        callbacks = _flatten_callbacks(kwargs.get("callbacks"))
        if not any(isinstance(c, _sparsity.UpdatePruningStep) for c in callbacks):
            raise ValueError(_missing_step_message())
        try:
            return super().fit(*args, **kwargs)
        except tf.errors.InvalidArgumentError as e:
            if _MISSING_STEP_MSG in str(e):
                raise RuntimeError(_missing_step_message()) from e
            raise


# ======================================================================================================================
# prune / strip
# ======================================================================================================================

def _is_hub_layer(layer) -> bool:
    return isinstance(layer, hub.KerasLayer)


def _fresh(layer):
    """A new layer with `layer`'s config (weights are copied after the clone is built)."""
    return layer.__class__.from_config(layer.get_config())


def _targets(model, include_embeddings: bool, include_classifier: bool, layers) -> tuple:
    """(names of native layers to wrap, names of hub layers to wrap)."""
    flat = [_unwrap(l) for l in model.layers]
    if any(isinstance(l, PruneLowMagnitude) for l in model.layers):
        raise ValueError(f"`model` {model.name!r} is already pruned (it has PruneLowMagnitude wrappers). Pass the "
                         "model you started from, or `strip(model)` first.")
    hub_layers = [l for l in flat if _is_hub_layer(l)]
    hub_names = {l.name for l in hub_layers}
    if layers is not None:
        if isinstance(layers, str):
            layers = [layers]
        layers = [str(n) for n in layers]
        known = {l.name for l in flat}
        inner = {n for h in hub_layers for n in _hub_prunable_layer_names(h)}
        inner |= {n.split("/")[-1] for n in inner}
        unknown = [n for n in layers if n not in known and n not in inner]
        if unknown:
            raise ValueError(f"Received an invalid value for `layers`: no layer named {unknown} in `model` "
                             f"{model.name!r}. Prunable layers: {_prunable_names(model)[:16]}...")
        native = [n for n in layers if n in known and n not in hub_names]
        for n in native:
            layer = next(l for l in flat if l.name == n)
            if not isinstance(layer, (keras.layers.Dense, keras.layers.Embedding)):
                raise ValueError(f"Received an invalid value for `layers`: {n!r} is a {layer.__class__.__name__}, "
                                 "which TFMOT cannot prune. Pass Dense / Embedding layer names.")
        hubs = [h.name for h in hub_layers if h.name in layers or any(n in inner and n not in known for n in layers)]
        return native, hubs
    native = []
    for l in flat:
        name = l.name
        if isinstance(l, keras.layers.Dense) and (_NATIVE_ENCODER.fullmatch(name)
                                                  or include_classifier and name in _NATIVE_CLASSIFIER):
            native.append(name)
        elif include_embeddings and isinstance(l, keras.layers.Embedding) and name in _NATIVE_EMBEDDINGS:
            native.append(name)
    return native, [h.name for h in hub_layers]


def _prunable_names(model) -> list:
    names = []
    for l in model.layers:
        l = _unwrap(l)
        if isinstance(l, (keras.layers.Dense, keras.layers.Embedding)):
            names.append(l.name)
        elif _is_hub_layer(l):
            names += [n.split("/")[-1] for n in _hub_prunable_layer_names(l)]
    return names


def _copy_into(new, old):
    """Copies `old`'s weights (masked, if it is a pruning wrapper) into `new` (plain or wrapped)."""
    src = _unwrap(old)
    values = src.get_weights()
    if isinstance(old, PruneLowMagnitude):
        index = {id(v): i for i, v in enumerate(src.weights)}
        for weight, mask, _ in old.pruning_vars:
            i = index[id(weight)]
            values[i] = values[i] * mask.numpy()
    dst = _unwrap(new)
    if values:
        dst.set_weights(values)


def _clone(model, clone_layer, model_cls):
    """A clone of functional `model` made of the layers `clone_layer(layer)` returns, with all weights copied."""
    if not isinstance(model, keras.Model) or not getattr(model, "_is_graph_network", False):
        raise ValueError("Expected a functional tf_keras model for `model` (a tfspeed BERT or a classifier on a "
                         f"hub.KerasLayer). Received: {type(model).__name__}")
    pairs = []

    def fn(layer):
        if isinstance(layer, keras.layers.InputLayer):
            return layer.__class__.from_config(layer.get_config())
        new = clone_layer(layer)
        pairs.append((new, layer))
        return new

    strategy = tf.distribute.get_strategy()
    with strategy.scope():
        cloned = keras.models.clone_model(model, clone_function=fn)
        out = model_cls(inputs=cloned.input, outputs=cloned.output, name=model.name)
    for new, old in pairs:
        _copy_into(new, old)
    return out


def prune(model: keras.Model, sparsity: Optional[float] = None, schedule="polynomial", m_by_n=None,
          begin_step: int = 0, end_step: Optional[int] = None, frequency: Optional[int] = None,
          epochs: Optional[float] = None, steps_per_epoch: Optional[int] = None, include_embeddings: bool = False,
          include_classifier: bool = False, layers: Optional[Sequence[str]] = None,
          embedding_sparsity: Optional[float] = None) -> keras.Model:
    """A copy of `model` with TFMOT magnitude pruning on its kernels. The caller's model is not changed.

    Targets every Dense kernel of attention (query/key/value/attention_output), FFN (intermediate/output) and pooler,
    in a native tfspeed BERT or inside a `hub.KerasLayer` BERT (which becomes a `PrunableKerasLayer`). Train the result
    with `fit(..., callbacks=pruning_callbacks())`, then `strip` it.

    Args:
        model: a tfspeed BERT (encoder or classifier) or a functional model holding a `hub.KerasLayer` BERT.
        sparsity: final fraction of zeros in each targeted kernel, in [0, 1). Defaults to `0.5` (ignored with `m_by_n`
            and with a TFMOT schedule object, which carries its own).
        schedule: `"polynomial"`, `"constant"` or a TFMOT `PruningSchedule` used as it is. Defaults to `"polynomial"`.
        m_by_n: structured m:n sparsity, e.g. `(2, 4)`: 2 zeros in every 4 consecutive weights along the input axis
            (then the schedule only decides when masks are updated). Defaults to `None`.
        begin_step, end_step, frequency: steps of the schedule. Defaults to `0`, `None` and about 20 updates.
        epochs, steps_per_epoch: derive the steps from epochs instead (see `schedule_for_epochs`). Defaults to `None`.
        include_embeddings: also prune word and type embeddings. Defaults to `False`.
        include_classifier: also prune the `classifier` Dense. Defaults to `False`.
        layers: prune exactly these layer names instead (native layer names, also inside a tfspeed hub export).
            Defaults to `None`.
        embedding_sparsity: with `include_embeddings`, the embedding tables' own final sparsity in [0, 1), pruned
            unstructured on the same schedule even with `m_by_n` (a lookup table has no m:n matmul to speed up). Native
            models only. Defaults to `None` (the tables are pruned like the kernels).

    Returns:
        A `PrunedModel` (functional) with `PruneLowMagnitude` wrappers. Load a saved one inside `prune_scope()`.
    """
    m_by_n = _check_m_by_n(m_by_n)
    if isinstance(schedule, _sparsity.PruningSchedule):
        if sparsity is not None:
            raise ValueError("Pass either a TFMOT schedule object or `sparsity`, not both: the schedule carries its own "
                             f"sparsity. Received: sparsity={sparsity!r}, schedule={type(schedule).__name__}")
        pruning_schedule = schedule
    else:
        sparsity = 0.5 if sparsity is None else _check_sparsity(sparsity)
        if epochs is not None or steps_per_epoch is not None:
            if epochs is None or steps_per_epoch is None:
                raise ValueError("Pass both `epochs` and `steps_per_epoch` (or `begin_step`/`end_step`). Received: "
                                 f"epochs={epochs!r}, steps_per_epoch={steps_per_epoch!r}")
            pruning_schedule = schedule_for_epochs(sparsity, epochs, steps_per_epoch, schedule,
                                                   frequency=frequency)
        else:
            if frequency is None:
                frequency = 100 if end_step in (None, -1) else int(min(100, max(1, (end_step - begin_step) // 20)))
            pruning_schedule = make_schedule(schedule, sparsity, begin_step, end_step, frequency)
    native, hubs = _targets(model, include_embeddings, include_classifier, layers)
    params = {"pruning_schedule": pruning_schedule}
    if m_by_n is not None:
        params["sparsity_m_by_n"] = m_by_n
    table_params = params
    tables = {l.name for l in model.layers if isinstance(_unwrap(l), keras.layers.Embedding)} & set(native)
    if embedding_sparsity is not None:
        if not tables or hubs:
            raise ValueError("`embedding_sparsity` sets the sparsity of a native model's embedding tables: pass "
                             "`include_embeddings=True` and a native tfspeed BERT (import a hub.KerasLayer with "
                             "`tfspeed.hub.build_classifier_from`). Received: embedding_sparsity="
                             f"{embedding_sparsity!r}, include_embeddings={include_embeddings!r}, hub layers {hubs}")
        table_params = {"pruning_schedule": _with_sparsity(pruning_schedule,
                                                           _check_sparsity(embedding_sparsity, "embedding_sparsity"))}

    def clone_layer(layer):
        if layer.name in hubs:
            inner = None if layers is None or layer.name in layers else [n for n in layers if n != layer.name]
            config = {**layer.get_config(), "include_embeddings": include_embeddings, "layers": inner}
            new = PrunableKerasLayer.from_config(config)
            if not new.get_prunable_weights():
                raise ValueError(f"The hub layer {layer.name!r} has no kernel TFMOT can prune: expected BERT variables "
                                 "named like `layer_0_query/kernel` (tfspeed) or `transformer/layer_0/self_attention/"
                                 f"query/kernel` (Model Garden). Received: {[v.name for v in layer.weights][:6]}...")
            return _wrap(new, params)
        new = _fresh(layer)
        if layer.name not in native:
            return new
        return _wrap(new, table_params if layer.name in tables else params)

    if not native and not hubs:
        raise ValueError(f"`model` {model.name!r} has nothing to prune: no Dense kernel of attention / FFN / pooler and "
                         "no hub.KerasLayer BERT. Pass a tfspeed BERT, a classifier on a hub.KerasLayer, or name the "
                         f"layers with `layers=`. Layers of the model: {[l.name for l in model.layers][:12]}")
    return _clone(model, clone_layer, PrunedModel)


def _with_sparsity(schedule, sparsity: float):
    """`schedule` (TFMOT `ConstantSparsity` / `PolynomialDecay`) with the same steps and another final sparsity."""
    config = schedule.get_config()["config"]
    if isinstance(schedule, _sparsity.ConstantSparsity):
        return _sparsity.ConstantSparsity(**{**config, "target_sparsity": sparsity})
    if isinstance(schedule, _sparsity.PolynomialDecay):
        return _sparsity.PolynomialDecay(**{**config, "final_sparsity": sparsity,
                                            "initial_sparsity": min(config["initial_sparsity"], sparsity)})
    raise ValueError("`embedding_sparsity` derives the tables' schedule from a TFMOT ConstantSparsity or "
                     f"PolynomialDecay. Received: schedule={type(schedule).__name__}; pass one of those, or prune the "
                     "tables with their own `prune(..., layers=[...])` call.")


def _wrap(layer, params):
    try:
        return _sparsity.prune_low_magnitude(layer, **params)
    except ValueError as e:
        raise ValueError(f"TFMOT could not prune layer {layer.name!r}: {e} In tfspeed: prune Dense / Embedding layers "
                         "or a hub BERT; for m_by_n the kernel's input size must be a multiple of n.") from e


def strip(model: keras.Model) -> keras.Model:
    """A copy of a pruned `model` without the pruning wrappers, its kernels holding the zeros.

    Native layers come back as the original Keras layers; a `PrunableKerasLayer` comes back as a plain
    `hub.KerasLayer` whose variables hold the zeros. The result saves and reloads without `prune_scope`.
    """
    if not any(isinstance(l, PruneLowMagnitude) for l in getattr(model, "layers", [])):
        raise ValueError(f"`model` {getattr(model, 'name', model)!r} has no pruning wrappers to strip. Pass the model "
                         "`prune` returned (after fitting it).")

    def clone_layer(layer):
        inner = _unwrap(layer)
        if isinstance(inner, PrunableKerasLayer):
            config = inner.get_config()
            config.pop("include_embeddings", None)
            config.pop("layers", None)
            return hub.KerasLayer.from_config(config)
        return _fresh(inner)

    return _clone(model, clone_layer, keras.Model)


def custom_objects() -> dict:
    """The custom objects to load a pruned (unstripped) tfspeed model: TFMOT's, tfspeed's layers and models."""
    objects = dict(CUSTOM_OBJECTS)
    objects.update({"PruneLowMagnitude": PruneLowMagnitude, "PrunableKerasLayer": PrunableKerasLayer,
                    "tfspeed>PrunableKerasLayer": PrunableKerasLayer, "PrunedModel": PrunedModel,
                    "tfspeed>PrunedModel": PrunedModel, "KerasLayer": hub.KerasLayer})
    return objects


def prune_scope():
    """`with prune_scope(): keras.models.load_model(...)` loads a pruned, unstripped model (TFMOT's `prune_scope` plus
    tfspeed's layers)."""
    return keras.utils.custom_object_scope(custom_objects())


# ======================================================================================================================
# Fit hooks
# ======================================================================================================================

def _pruned_layers(model):
    """The pruning wrappers of `model`, nested models included (a pruned student inside a `Distiller`)."""
    from tensorflow_model_optimization.python.core.sparsity.keras.pruning_wrapper import collect_prunable_layers

    return collect_prunable_layers(model)


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


@_register
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
    import importlib.util

    return importlib.util.find_spec("tensorboard") is not None


def pruning_callbacks(log_dir=None, per_layer: bool = True) -> list:
    """The callbacks pruning needs in `fit`: `UpdatePruningStep` (mandatory), `SparsityLogger` and, with `log_dir`,
    TFMOT's `PruningSummaries` (TensorBoard scalars of sparsity and thresholds).

    Args:
        log_dir: TensorBoard directory. Defaults to `None` (no summaries).
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


# ======================================================================================================================
# Pruning through fit, in one stage or two (a gradual route to m:n)
# ======================================================================================================================

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


def prune_and_fit(model: keras.Model, fit, epochs: int, gradual_from=None, **kwargs) -> tuple:
    """Prunes a copy of `model` and trains it with `fit`; with `gradual_from`, through a milder m:n pattern first.

    One stage: `prune(model, **kwargs)`, then `fit(pruned, epochs)`. With `gradual_from=(m0, n)` and `m_by_n=(m, n)`:
    `prune(model, m_by_n=gradual_from, ...)` fitted for ONE epoch, `strip`ped, then pruned at `m_by_n` and fitted for
    `epochs`. The final mask is then chosen on weights that have already recovered from a lighter one, instead of
    taking all of m:n at once: on fine-tuned MiniLM, 1:4 for one epoch then 2:4 for three (distilled) lost 0.49 points
    of accuracy, where 2:4 at once lost 1.3-1.9 (`benchmarks/prune_minilm.py`, run m24g).

    Args:
        model: as for `prune`; it is not changed.
        fit: `fit(pruned, epochs)` trains a pruned model and returns its Keras `History`; it must pass
            `pruning_callbacks()` (or TFMOT's `UpdatePruningStep`) to `fit`. Called once per stage.
        epochs: epochs at the final pattern (the first stage of a gradual route adds one).
        gradual_from: `(m0, n)` with 0 < m0 < m and the n of `m_by_n`, pruned for one epoch first. Defaults to `None`
            (one stage).
        **kwargs: passed to `prune` in every stage: `m_by_n`, `schedule`, `sparsity`, `include_embeddings`, ...
            An `embedding_sparsity` is scaled by m0 / m in the first stage (0.3 then 0.6 for 1:4 then 2:4).

    Returns:
        `(pruned, history)`: the model of the last stage, still wrapped (`strip` it), and `{key: [float per epoch]}`
        with the epochs of both stages concatenated (the keys of the last stage).

    Example:

    >>> def fit(pruned, epochs):
    ...     return fit_classifier(pruned, train, epochs=epochs, callbacks=pruning_callbacks(per_layer=False))
    >>> pruned, history = prune_and_fit(model, fit, 2, m_by_n=(2, 4), gradual_from=(1, 4), schedule="constant")
    >>> len(history["sparsity"])
    3
    """
    if isinstance(epochs, bool) or not isinstance(epochs, (int, np.integer)) or epochs < 1:
        raise ValueError(f"Received an invalid value for `epochs`, expected a positive integer. Received: "
                         f"epochs={epochs!r}")
    m_by_n = _check_m_by_n(kwargs.pop("m_by_n", None))
    gradual_from = _check_gradual_from(gradual_from, m_by_n)
    start, histories = model, []
    if gradual_from is not None:
        stage = dict(kwargs)
        if stage.get("embedding_sparsity") is not None:  # the tables take the same milder first step as the kernels
            stage["embedding_sparsity"] = stage["embedding_sparsity"] * gradual_from[0] / m_by_n[0]
        first = prune(model, m_by_n=gradual_from, **stage)
        histories.append(fit(first, 1).history)
        start = strip(first)
    pruned = prune(start, m_by_n=m_by_n, **kwargs)
    histories.append(fit(pruned, int(epochs)).history)
    history = {k: [float(v) for h in histories for v in h.get(k, [])] for k in histories[-1]}
    return pruned, history


# ======================================================================================================================
# Report
# ======================================================================================================================

def targeted_weights(model, include_embeddings: bool = False, include_classifier: bool = False,
                     layers: Optional[Sequence[str]] = None) -> dict:
    """{name: array} of the kernels `prune` targets with the same arguments, read from a pruned (masked) or plain
    model: native layers by layer name, hub variables as `<hub layer>/<variable layer>`."""
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
        name = inner.name
        if layers is not None:
            chosen = name in layers
        else:
            chosen = (isinstance(inner, keras.layers.Dense) and (_NATIVE_ENCODER.fullmatch(name) is not None
                                                                 or include_classifier and name in _NATIVE_CLASSIFIER)
                      or include_embeddings and isinstance(inner, keras.layers.Embedding) and name in _NATIVE_EMBEDDINGS)
        if chosen and inner.weights:
            weight = inner.weights[0]
            out[name] = weight.numpy() * masks.get(id(weight), 1.0)
    return out


def _gzip_size(data: bytes) -> int:
    """gzip size at level 6 (gzip's default: level 9 is minutes on 90 MB of weights and barely smaller)."""
    return len(gzip.compress(data, compresslevel=6))


def to_tflite(model: keras.Model, mode: str = "dynamic", seq_length: int = 128) -> bytes:
    """A .tflite of `model` on a fixed [1, seq_length] signature: `mode` `"float"` or `"dynamic"` (dynamic-range int8).

    Uses `tfspeed.export.convert` when it is installed, else `TFLiteConverter.from_concrete_functions`.
    """
    if mode not in ("float", "dynamic"):
        raise ValueError(f"Received an invalid value for `mode`, expected 'float' or 'dynamic'. Received: mode={mode!r}")
    try:
        from tfspeed.export.convert import convert
    except ImportError:  # pragma: no cover - export stage not installed
        convert = None
    if convert is not None:
        return convert(model, mode="float32" if mode == "float" else "dynamic", seq_length=seq_length)
    spec = {n: tf.TensorSpec([1, seq_length], tf.int32, name=n) for n in INPUT_NAMES}
    fn = tf.function(lambda inputs: model(inputs, training=False), input_signature=[spec])
    concrete = fn.get_concrete_function()
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], model)
    if mode == "dynamic":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    return converter.convert()


def sparsity_report(model: keras.Model, include_embeddings: bool = False, include_classifier: bool = False,
                    layers: Optional[Sequence[str]] = None, tflite: bool = True, seq_length: int = 128) -> dict:
    """Sparsity per layer and overall, and sizes: gzip of the weights, raw and gzip of the float / dynamic .tflite.

    Args:
        model: a pruned (wrapped) or stripped model, native or hub.
        include_embeddings, include_classifier, layers: which kernels count, as for `prune`. Defaults as `prune`.
        tflite: convert to float and dynamic-range .tflite and report their sizes (seconds to minutes). Defaults to
            `True`; a pruned model is stripped first.
        seq_length: fixed sequence length of the .tflite signature. Defaults to `128`.

    Returns:
        `{"sparsity", "targeted_params", "layers": {name: {"sparsity", "params"}}, "model_sparsity",
        "weights_bytes", "weights_gzip_bytes", "tflite": {"float": {"bytes", "gzip_bytes"}, "dynamic": {...}}}`.
    """
    weights = targeted_weights(model, include_embeddings, include_classifier, layers)
    if not weights:
        raise ValueError(f"`model` {model.name!r} has no kernel that `prune` targets with these arguments: nothing to "
                         "report. Pass `layers=` to choose them.")
    per_layer = {n: {"sparsity": float(1.0 - np.count_nonzero(w) / w.size), "params": int(w.size)}
                 for n, w in weights.items()}
    total = sum(w.size for w in weights.values())
    zeros = sum(w.size - np.count_nonzero(w) for w in weights.values())
    plain = strip(model) if _pruned_layers(model) else model
    all_weights = [np.asarray(w) for w in plain.get_weights()]
    blob = b"".join(np.ascontiguousarray(w).tobytes() for w in all_weights)
    model_params = sum(w.size for w in all_weights if w.dtype.kind == "f")
    model_zeros = sum(w.size - np.count_nonzero(w) for w in all_weights if w.dtype.kind == "f")
    report = {"sparsity": float(zeros / total), "targeted_params": int(total), "layers": per_layer,
              "model_sparsity": float(model_zeros / max(model_params, 1)), "weights_bytes": len(blob),
              "weights_gzip_bytes": _gzip_size(blob)}
    if tflite:
        report["tflite"] = {}
        for mode in ("float", "dynamic"):
            content = to_tflite(plain, mode, seq_length)
            report["tflite"][mode] = {"bytes": len(content), "gzip_bytes": _gzip_size(content)}
        report["tflite_seq_length"] = seq_length
    return report


__all__ = ["PrunableKerasLayer", "PrunedModel", "SCHEDULES", "SparsityLogger", "custom_objects", "make_schedule",
           "prune", "prune_and_fit", "prune_scope", "pruning_callbacks", "schedule_for_epochs", "sparsity_report",
           "strip", "targeted_weights", "to_tflite"]
