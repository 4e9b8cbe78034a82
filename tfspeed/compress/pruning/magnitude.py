"""The paired verbs of magnitude pruning: `prune` wraps the targeted kernels of a COPY of a model with TFMOT's
`PruneLowMagnitude`, `strip` returns a copy without the wrappers whose kernels hold the zeros.

Native BERT: the graph is flat, so every Dense is a top-level layer and is wrapped on its own. `hub.KerasLayer` BERT:
the hub layer becomes a `PrunableKerasLayer` and is wrapped as a whole.
"""

from __future__ import annotations

import tensorflow_hub as hub
import tensorflow_model_optimization as tfmot
from tensorflow_model_optimization.python.core.sparsity.keras.pruning_wrapper import PruneLowMagnitude

from tfspeed import registry
from tfspeed.compat import keras, tf
from tfspeed.compress.pruning.config import PruneConfig
from tfspeed.compress.pruning.hub_layer import PrunableKerasLayer
from tfspeed.compress.pruning.schedules import _check_sparsity
from tfspeed.compress.pruning.targets import _targets
from tfspeed.models.bert import _unwrap

_sparsity = tfmot.sparsity.keras
_MISSING_STEP_MSG = PruneLowMagnitude._PRUNE_CALLBACK_ERROR_MSG


# ======================================================================================================================
# The pruned model: a functional model whose fit checks for UpdatePruningStep
# ======================================================================================================================

def _missing_step_message() -> str:
    return (f"TFMOT: {_MISSING_STEP_MSG} In tfspeed: pass "
            "`callbacks=tfspeed.compress.pruning.pruning_callbacks()` to `fit` (it holds `UpdatePruningStep` and the "
            "sparsity logger), or add `tfmot.sparsity.keras.UpdatePruningStep()` to your callbacks.")


def _flatten_callbacks(callbacks):
    if callbacks is None:
        return []
    if isinstance(callbacks, keras.callbacks.CallbackList):
        return list(callbacks.callbacks)
    if isinstance(callbacks, keras.callbacks.Callback):
        return [callbacks]
    return list(callbacks)


@keras.utils.register_keras_serializable(package="tfspeed")
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
# Cloning
# ======================================================================================================================

def _fresh(layer):
    """A new layer with `layer`'s config (weights are copied after the clone is built)."""
    return layer.__class__.from_config(layer.get_config())


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


# ======================================================================================================================
# prune / strip
# ======================================================================================================================

def _split_schedule(overrides: dict) -> tuple:
    """(a TFMOT schedule object passed as `schedule=`, or None; the other overrides). The object is a Python object,
    not a setting: it is used as it is and never enters the `PruneConfig`."""
    if isinstance(overrides.get("schedule"), _sparsity.PruningSchedule):
        overrides = dict(overrides)
        return overrides.pop("schedule"), overrides
    return None, overrides


def prune(model: keras.Model, config=None, **overrides) -> keras.Model:
    """A copy of `model` with TFMOT magnitude pruning on its kernels. The caller's model is not changed.

    Targets every Dense kernel of attention (query/key/value/attention_output), FFN (intermediate/output) and pooler,
    in a native tfspeed BERT or inside a `hub.KerasLayer` BERT (which becomes a `PrunableKerasLayer`). Train the result
    with `fit(..., callbacks=pruning_callbacks())`, then `strip` it.

    Args:
        model: a tfspeed BERT (encoder or classifier) or a functional model holding a `hub.KerasLayer` BERT.
        config: a `PruneConfig` (or its dict). Defaults to `None` (`PruneConfig()`).
        **overrides: `PruneConfig` settings that replace the config's, e.g. `sparsity=0.5`, `schedule="constant"`,
            `m_by_n=(2, 4)`, `begin_step`, `end_step`, `frequency`, `epochs` with `steps_per_epoch` (the schedule's
            steps then come from epochs, see `schedule_for_epochs`), `include_embeddings`, `include_classifier`,
            `layers`, `embedding_sparsity`. `schedule` may also be a TFMOT `PruningSchedule`, used as it is (then do
            not set `sparsity`: the schedule carries its own). The defaults are `PruneConfig`'s: sparsity `0.5`,
            schedule `"polynomial"` (which needs `end_step`, or `epochs` and `steps_per_epoch`), no m:n pattern,
            attention, FFN and pooler kernels only.

    Returns:
        A `PrunedModel` (functional) with `PruneLowMagnitude` wrappers. Load a saved one inside `prune_scope()`.

    Example (a tiny random-weight BERT with 2 layers: 6 kernels each, and the pooler):

    >>> from tfspeed.models import BertConfig, build_classifier
    >>> model = build_classifier(BertConfig(vocab_size=100, hidden_size=16, num_layers=2, num_heads=2,
    ...                                     intermediate_size=32, max_positions=16), num_classes=2)
    >>> pruned = prune(model, sparsity=0.5, epochs=2, steps_per_epoch=300)
    >>> wrapped = [l.layer.name for l in pruned.layers if isinstance(l, PruneLowMagnitude)]
    >>> len(wrapped), "layer_0_query" in wrapped, "classifier" in wrapped
    (13, True, False)
    >>> any(isinstance(l, PruneLowMagnitude) for l in model.layers)  # the caller's model is not changed
    False
    >>> same = prune(model, PruneConfig(sparsity=0.5, epochs=2, steps_per_epoch=300))
    """
    schedule_object, overrides = _split_schedule(overrides)
    config = PruneConfig.resolve(config, **overrides)
    if schedule_object is not None:
        if config.sparsity is not None:
            raise ValueError("Pass either a TFMOT schedule object or `sparsity`, not both: the schedule carries its "
                             f"own sparsity. Received: sparsity={config.sparsity!r}, "
                             f"schedule={type(schedule_object).__name__}")
        pruning_schedule = schedule_object
    else:
        if "epochs" in overrides and config.steps_per_epoch is None:  # `epochs` alone would change nothing
            raise ValueError("Pass both `epochs` and `steps_per_epoch` (or `begin_step`/`end_step`). Received: "
                             f"epochs={config.epochs!r}, steps_per_epoch=None")
        pruning_schedule = config.pruning_schedule()
    layers = None if config.layers is None else list(config.layers)
    include_embeddings = config.include_embeddings
    native, hubs = _targets(model, include_embeddings, config.include_classifier, layers)
    params = {"pruning_schedule": pruning_schedule}
    if config.m_by_n is not None:
        params["sparsity_m_by_n"] = config.m_by_n
    table_params = params
    tables = {l.name for l in model.layers if isinstance(_unwrap(l), keras.layers.Embedding)} & set(native)
    if config.embedding_sparsity is not None:
        if not tables or hubs:
            raise ValueError("`embedding_sparsity` sets the sparsity of a native model's embedding tables: pass "
                             "`include_embeddings=True` and a native tfspeed BERT (import a hub.KerasLayer with "
                             "`tfspeed.hub.build_classifier_from`). Received: embedding_sparsity="
                             f"{config.embedding_sparsity!r}, include_embeddings={include_embeddings!r}, hub layers "
                             f"{hubs}")
        table_params = {"pruning_schedule": _with_sparsity(pruning_schedule, config.embedding_sparsity)}

    def clone_layer(layer):
        if layer.name in hubs:
            inner = None if layers is None or layer.name in layers else [n for n in layers if n != layer.name]
            hub_config = {**layer.get_config(), "include_embeddings": include_embeddings, "layers": inner}
            new = PrunableKerasLayer.from_config(hub_config)
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
        raise ValueError(f"`model` {model.name!r} has nothing to prune: no Dense kernel of attention / FFN / pooler "
                         "and no hub.KerasLayer BERT. Pass a tfspeed BERT, a classifier on a hub.KerasLayer, or name "
                         f"the layers with `layers=`. Layers of the model: {[l.name for l in model.layers][:12]}")
    return _clone(model, clone_layer, PrunedModel)


def _with_sparsity(schedule, sparsity: float):
    """`schedule` (TFMOT `ConstantSparsity` / `PolynomialDecay`) with the same steps and another final sparsity."""
    sparsity = _check_sparsity(sparsity, "embedding_sparsity")
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
    """The custom objects to load a pruned (unstripped) tfspeed model: `tfspeed.registry.custom_objects()` (TFMOT's
    wrappers, tfspeed's layers and models, `hub.KerasLayer`)."""
    return registry.custom_objects()


def prune_scope():
    """`with prune_scope(): keras.models.load_model(...)` loads a pruned, unstripped model (TFMOT's `prune_scope` plus
    tfspeed's layers)."""
    return keras.utils.custom_object_scope(custom_objects())


__all__ = ["PrunedModel", "custom_objects", "prune", "prune_scope", "strip"]
