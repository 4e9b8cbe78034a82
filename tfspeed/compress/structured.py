"""Structured pruning: remove attention heads, FFN units and whole layers, giving a physically smaller native BERT.

Unlike magnitude pruning (zeros in kernels of unchanged shape), the result has smaller kernels and fewer heads, so it is
faster everywhere (Keras, SavedModel / TF-Hub export, TFLite). Fine-tune it afterwards to recover accuracy.

Importance of a head or an FFN unit:

- `"magnitude"`: L2 norm of the weights that belong to it: a head's columns of the query, key and value kernels and its
  rows of the attention-output kernel; a unit's column of the intermediate kernel and its row of the output kernel.
- `"taylor"` (first order, Michel et al. 2019, "Are Sixteen Heads Really Better than One?"): for a gate `m` multiplying
  a head's context (or a unit's activation), `|dL/dm|` at `m = 1`. Computed from the gradients of the weights: scaling
  the head's context by `m` is the same as scaling its rows of the attention-output kernel by `m`, so
  `dL/dm = sum(W_o[rows of h] * dL/dW_o[rows of h])`, which is `sum over the batch of (context * gradient)`; likewise
  for unit j with row j of the FFN output kernel. No mask variable is added to the graph. The absolute value is taken
  per batch (mean loss of the batch) and averaged over `num_batches` batches.

Scores are normalised per layer (L2, as Michel et al.) and ranked across all layers (`ranking="global"`) or within
each layer (`ranking="layer"`); at least one head and one unit stay in every layer.

The settings are a `StructuredConfig` (one default and one check each, shared with `tfspeed prune --structured`);
`prune_structured(model, config, data=...)` also takes them as keywords.

Example (a tiny random-weight BERT: 2 layers of 4 heads and 32 FFN units; which heads and units go depends on the
weights, how many does not):

>>> from tfspeed.data import EncodedSplit
>>> from tfspeed.hub import sample_inputs
>>> from tfspeed.models import BertConfig, build_classifier, config_of
>>> config = BertConfig(vocab_size=100, hidden_size=16, num_layers=2, num_heads=4, intermediate_size=32,
...                     max_positions=16)
>>> classifier = build_classifier(config, num_classes=2)
>>> train = EncodedSplit(sample_inputs(config, batch=8, seq_length=8), [0, 1] * 4)
>>> small = prune_structured(classifier, heads=0.5, ffn=0.5, method="taylor", data=train)
>>> sum(config_of(small).layer_num_heads), sum(config_of(small).layer_intermediate_sizes)
(4, 32)
>>> parameter_count(small) < parameter_count(classifier)
True
>>> shallow = prune_structured(classifier, StructuredConfig(heads=0.0, ffn=0.0, layers=(1,), method="magnitude"))
>>> config_of(shallow).num_layers
1
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Union

import numpy as np

from tfspeed.compat import keras, tf
from tfspeed.config import StageConfig, StrEnum, check_positive_int, field
from tfspeed.models.bert import (
    LOWRANK_SUFFIX,
    _unwrap,
    build_classifier,
    build_encoder,
    check_plain_bert,
    config_of,
    layer_by_name,
    num_classes_of,
)
from tfspeed.models.config import FACTORIZABLE


class _Choice(StrEnum):
    """A `StrEnum` whose error lists the choices as a tuple, as the checks of this module always have."""

    @classmethod
    def expected(cls) -> str:
        return f"one of {tuple(cls.choices())}"


class Method(_Choice):
    """How a head's or an FFN unit's importance is scored (see the module docstring)."""

    TAYLOR = "taylor"
    MAGNITUDE = "magnitude"


class Ranking(_Choice):
    """Rank heads / units across all layers after per-layer normalisation, or within each layer."""

    GLOBAL = "global"
    LAYER = "layer"


METHODS = tuple(Method.choices())
RANKINGS = tuple(Ranking.choices())


@dataclasses.dataclass
class Importance:
    """Scores per layer: `heads[i]` has one score per head of layer i, `ffn[i]` one per FFN unit, `layers[i]` one."""

    method: str
    heads: list
    ffn: list
    layers: np.ndarray

    def to_dict(self) -> dict:
        return {"method": self.method, "heads": [h.tolist() for h in self.heads], "ffn": [f.tolist() for f in self.ffn],
                "layers": self.layers.tolist()}


@dataclasses.dataclass
class Plan:
    """What stays: indices of the kept layers (of the original model) and, for each kept layer, its kept heads and
    FFN units (sorted indices into the original layer)."""

    layers: list
    heads: list
    ffn: list

    def to_dict(self) -> dict:
        return {"layers": list(self.layers), "heads": [list(map(int, h)) for h in self.heads],
                "ffn_sizes": [len(f) for f in self.ffn]}


# ======================================================================================================================
# Checks and settings
# ======================================================================================================================

def _check_fraction(value, argument):
    if value is None:
        return 0.0
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)) or not 0.0 <= value < 1.0:
        raise ValueError(f"Received an invalid value for `{argument}`, expected a fraction to remove in [0, 1). "
                         f"Received: {argument}={value!r}")
    return float(value)


def _parse_layers(text: str):
    """'0.25' -> 0.25 (a fraction of the layers); '4+5' or '4' -> (4, 5) / (4,) (layer indices); 'none' -> None."""
    text = str(text).strip()
    if text.lower() in ("", "none"):
        return None
    try:
        if "+" in text or "." not in text:
            return tuple(int(v) for v in text.split("+"))
        return float(text)
    except ValueError:
        return text  # refused by `plan`, which echoes it


@dataclasses.dataclass
class StructuredConfig(StageConfig):
    """Settings of structured pruning: how much of the heads, FFN units and layers goes, and how importance is scored.

    Args:
        heads: fraction of all attention heads to remove, in [0, 1). Defaults to `0.5`.
        ffn: fraction of all FFN intermediate units to remove, in [0, 1). Defaults to `0.5`.
        layers: whole layers to remove: layer indices, or a float fraction (the layers with the lowest importance
            go). Defaults to `None` (keep all layers).
        method: importance, `"taylor"` (needs `data` and a classifier) or `"magnitude"`. Defaults to `"taylor"`.
        num_batches: batches for `"taylor"`. Defaults to `8`.
        batch_size: batch size when `data` is an `EncodedSplit` or arrays. Defaults to `32`.
        ranking: rank heads / units across all layers after per-layer normalisation (`"global"`) or remove the same
            fraction in every layer (`"layer"`). Defaults to `"global"`.
    """

    heads: float = field(0.5, help="fraction of all attention heads to remove, in [0, 1)")
    ffn: float = field(0.5, help="fraction of all FFN intermediate units to remove, in [0, 1)")
    layers: Optional[Union[float, tuple]] = field(
        None, flag="--remove-layers", parse=_parse_layers, metavar="FRACTION|I+J",
        help="whole layers to remove: a fraction (the least important go) or indices joined by '+', e.g. 4+5; unset: "
             "keep all layers")
    method: Method = field(Method.TAYLOR, help="importance of heads / FFN units (taylor: on --score-batches training "
                                                "batches)")
    num_batches: int = field(8, flag="--score-batches", help="batches for the Taylor score")
    batch_size: int = field(32, help="batch size of the Taylor score's batches")
    ranking: Ranking = field(Ranking.GLOBAL, help="rank heads/units across layers or within each layer")

    def validate(self):
        self.heads = _check_fraction(self.heads, "heads")
        self.ffn = _check_fraction(self.ffn, "ffn")
        if isinstance(self.layers, float):
            self.layers = _check_fraction(self.layers, "layers")
        check_positive_int("num_batches", self.num_batches)
        check_positive_int("batch_size", self.batch_size)


def _check_model(model):
    check_plain_bert(model, "cannot be sliced")


def _is_classifier(model) -> bool:
    return not isinstance(model.output, dict)


def _kernel(model, name):
    """The kernel whose columns are `name`'s outputs (of a factorised Dense: its second factor)."""
    return _unwrap(layer_by_name(model, name)).weights[0]


def _input_kernel(model, name):
    """The kernel whose rows are `name`'s inputs (of a factorised Dense: its first factor, `NAME_lowrank`)."""
    factor = name + LOWRANK_SUFFIX
    if any(_unwrap(l).name == factor for l in model.layers):
        return _unwrap(layer_by_name(model, factor)).weights[0]
    return _kernel(model, name)


# ======================================================================================================================
# Importance
# ======================================================================================================================

def _batches(data, batch_size: int, num_batches: int, seed: int = 0):
    """Up to `num_batches` (x, y) batches from an `EncodedSplit`, a `tf.data.Dataset`, an (x, y) pair or an iterable."""
    from tfspeed.data.pipeline import EncodedSplit

    if isinstance(data, EncodedSplit):
        rng = np.random.default_rng(seed)
        for idx in data.batch_indices(batch_size, shuffle=True, rng=rng)[:num_batches]:
            yield data.batch(idx)
        return
    if isinstance(data, tuple) and len(data) == 2 and isinstance(data[0], dict):
        x, y = data
        n = len(np.asarray(y))
        for start in range(0, min(n, batch_size * num_batches), batch_size):
            rows = slice(start, start + batch_size)
            yield {k: np.asarray(v)[rows] for k, v in x.items()}, np.asarray(y)[rows]
        return
    for i, batch in enumerate(data):
        if i >= num_batches:
            return
        if not (isinstance(batch, (tuple, list)) and len(batch) >= 2):
            raise ValueError("Expected `data` to yield (inputs, labels) batches. Received a batch of type "
                             f"{type(batch).__name__}.")
        yield batch[0], batch[1]


def importance(model: keras.Model, method: str = StructuredConfig.method, data=None,
               num_batches: int = StructuredConfig.num_batches, batch_size: int = StructuredConfig.batch_size
               ) -> Importance:
    """Importance of every head, FFN unit and layer of a native BERT.

    Args:
        model: a native tfspeed BERT classifier (`"taylor"` needs its logits) or encoder (`"magnitude"` only).
        method: `"taylor"` or `"magnitude"` (see the module docstring). Defaults to `"taylor"`.
        data: labelled data for `"taylor"`: an `EncodedSplit`, a `tf.data.Dataset` or iterable of `(inputs, labels)`
            batches, or an `(inputs dict, labels)` pair of arrays. Defaults to `None`.
        num_batches: batches used by `"taylor"`. Defaults to `8`.
        batch_size: batch size when `data` is an `EncodedSplit` or arrays. Defaults to `32`.

    Returns:
        An `Importance`. A layer's score is the sum of its head scores over the sum of all head scores of the model,
        plus the same for its FFN units (so heads and units weigh equally).
    """
    _check_model(model)
    method = Method.parse("method", method)
    config = config_of(model)
    hs = config.head_size
    names_o = [f"layer_{i}_attention_output" for i in range(config.num_layers)]
    names_out = [f"layer_{i}_output" for i in range(config.num_layers)]
    if method == Method.MAGNITUDE:
        heads, ffn = [], []
        for i in range(config.num_layers):
            n = config.layer_num_heads[i]
            sq = np.zeros(n)
            for part in ("query", "key", "value"):
                w = _kernel(model, f"layer_{i}_{part}").numpy()
                sq += (w.reshape(w.shape[0], n, hs) ** 2).sum(axis=(0, 2))
            wo = _input_kernel(model, names_o[i]).numpy()
            sq += (wo.reshape(n, hs, -1) ** 2).sum(axis=(1, 2))
            heads.append(np.sqrt(sq))
            wi = _kernel(model, f"layer_{i}_intermediate").numpy()
            wout = _input_kernel(model, names_out[i]).numpy()
            ffn.append(np.sqrt((wi ** 2).sum(axis=0) + (wout ** 2).sum(axis=1)))
    else:
        if not _is_classifier(model):
            raise ValueError("method='taylor' needs a classifier (logits and labels give the loss). Received an "
                             "encoder: use method='magnitude', or pass the classifier.")
        if data is None:
            raise ValueError("method='taylor' needs labelled `data` (e.g. `EncodedDataset(...).train`): the scores are "
                             "gradients of the loss on a few batches. Received: data=None. Or use method='magnitude'.")
        # a head's (a unit's) rows of the attention-output (FFN output) kernel: of its first factor when factorised
        variables = [_input_kernel(model, n) for n in names_o] + [_input_kernel(model, n) for n in names_out]
        loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        heads = [np.zeros(config.layer_num_heads[i]) for i in range(config.num_layers)]
        ffn = [np.zeros(config.layer_intermediate_sizes[i]) for i in range(config.num_layers)]
        count = 0
        for x, y in _batches(data, batch_size, num_batches):
            with tf.GradientTape() as tape:
                loss = loss_fn(y, model(x, training=False))
            grads = tape.gradient(loss, variables)
            for i in range(config.num_layers):
                wo, go = variables[i].numpy(), grads[i].numpy()
                heads[i] += np.abs((wo * go).reshape(config.layer_num_heads[i], hs, -1).sum(axis=(1, 2)))
                j = config.num_layers + i
                ffn[i] += np.abs((variables[j].numpy() * grads[j].numpy()).sum(axis=1))
            count += 1
        if count == 0:
            raise ValueError("`data` gave no batch: method='taylor' needs at least one (inputs, labels) batch.")
        heads = [h / count for h in heads]
        ffn = [f / count for f in ffn]
    total_h = sum(h.sum() for h in heads) or 1.0
    total_f = sum(f.sum() for f in ffn) or 1.0
    layers = np.array([h.sum() / total_h + f.sum() / total_f for h, f in zip(heads, ffn)])
    return Importance(method.value, heads, ffn, layers)


# ======================================================================================================================
# Planning
# ======================================================================================================================

def _select(scores: list, fraction: float, ranking: str) -> list:
    """Sorted indices kept in each group after removing `fraction` of all items with the lowest normalised scores;
    at least one item stays in every group."""
    sizes = [len(s) for s in scores]
    if ranking == Ranking.LAYER:
        kept = []
        for s in scores:
            keep = max(1, len(s) - int(round(fraction * len(s))))
            kept.append(sorted(np.argsort(-s, kind="stable")[:keep].tolist()))
        return kept
    normed = [s / (np.linalg.norm(s) or 1.0) for s in scores]
    remove = int(round(fraction * sum(sizes)))
    flat = sorted(((float(v), g, j) for g, s in enumerate(normed) for j, v in enumerate(s)), key=lambda t: t[0])
    removed = [set() for _ in scores]
    for _, g, j in flat:
        if remove == 0:
            break
        if len(removed[g]) < sizes[g] - 1:
            removed[g].add(j)
            remove -= 1
    return [sorted(set(range(n)) - r) for n, r in zip(sizes, removed)]


def plan(model: keras.Model, config=None, *, data=None, scores: Optional[Importance] = None, **overrides) -> Plan:
    """Which layers, heads and FFN units `prune_structured` keeps (arguments as there; `scores`: an `Importance`
    computed before, instead of scoring again. Defaults to `None`)."""
    settings = StructuredConfig.resolve(config, **overrides)
    _check_model(model)
    heads, ffn, layers, ranking = settings.heads, settings.ffn, settings.layers, settings.ranking
    n = config_of(model).num_layers
    if scores is None:
        scores = importance(model, settings.method, data, settings.num_batches, settings.batch_size)
    if layers is None:
        drop = []
    elif isinstance(layers, float) and not isinstance(layers, bool):
        count = min(int(round(layers * n)), n - 1)
        drop = sorted(np.argsort(scores.layers, kind="stable")[:count].tolist())
    else:
        drop = [layers] if isinstance(layers, int) else list(layers)
        bad = [i for i in drop if isinstance(i, bool) or not isinstance(i, (int, np.integer)) or not 0 <= i < n]
        if bad or len(set(drop)) != len(drop):
            raise ValueError(f"Received an invalid value for `layers`, expected distinct layer indices in [0, {n}) to "
                             f"remove, or a fraction in [0, 1). Received: layers={layers!r}")
        if len(set(drop)) >= n:
            raise ValueError(f"Received an invalid value for `layers`: removing all {n} layers leaves no encoder. "
                             f"Received: layers={layers!r}")
    keep_layers = [i for i in range(n) if i not in set(drop)]
    kept_heads = _select([scores.heads[i] for i in keep_layers], heads, ranking)
    kept_ffn = _select([scores.ffn[i] for i in keep_layers], ffn, ranking)
    return Plan(keep_layers, kept_heads, kept_ffn)


# ======================================================================================================================
# Slicing
# ======================================================================================================================

def _input_length(model):
    shape = model.inputs[0].shape
    return None if shape[1] is None else int(shape[1])


def shrink(model: keras.Model, plan: Plan) -> keras.Model:
    """A new, smaller native BERT keeping exactly what `plan` says; the caller's model is not changed.

    Query/key/value kernels keep the columns of the kept heads (head h owns columns h*head_size:(h+1)*head_size), the
    attention-output kernel the matching rows; the intermediate kernel keeps the kept units' columns, the FFN output
    kernel their rows. Everything else (embeddings, layer norms, output biases, pooler, classifier) is copied.
    """
    _check_model(model)
    config = config_of(model)
    hs = config.head_size
    if len(plan.heads) != len(plan.layers) or len(plan.ffn) != len(plan.layers) or not plan.layers:
        raise ValueError(f"Invalid plan: expected one head list and one FFN list per kept layer. Received: {plan}")
    for j, i in enumerate(plan.layers):
        if not plan.heads[j] or not plan.ffn[j]:
            raise ValueError(f"Invalid plan: layer {i} must keep at least one head and one FFN unit. Received: {plan}")
    ranks = {}  # a factorised layer keeps its rank, under its new index
    for name, rank in config.ranks:
        m = FACTORIZABLE.fullmatch(name)
        if m.group(1) is None:
            ranks[name] = rank
        elif int(m.group(1)) in plan.layers:
            ranks[f"layer_{plan.layers.index(int(m.group(1)))}_{m.group(2)}"] = rank
    new_config = config.replace(num_layers=len(plan.layers), layer_num_heads=[len(h) for h in plan.heads],
                                layer_intermediate_sizes=[len(f) for f in plan.ffn], ranks=ranks or None)
    seq_length = _input_length(model)
    with tf.distribute.get_strategy().scope():
        if _is_classifier(model):
            dropout = float(_unwrap(layer_by_name(model, "classifier_dropout")).rate)
            new = build_classifier(new_config, num_classes=num_classes_of(model), seq_length=seq_length,
                                   classifier_dropout=dropout, name=model.name)
        else:
            new = build_encoder(new_config, seq_length=seq_length, name=model.name)

    def get(name):
        return [w.numpy() for w in _unwrap(layer_by_name(model, name)).weights]

    def put(name, values):
        _unwrap(layer_by_name(new, name)).set_weights(values)

    def factored(name):
        return new_config.rank_of(name) is not None

    for layer in new.layers:
        if layer.weights and not layer.name.startswith("layer_"):
            put(layer.name, get(layer.name))
    for j, i in enumerate(plan.layers):
        cols = np.concatenate([np.arange(h * hs, (h + 1) * hs) for h in plan.heads[j]])
        units = np.asarray(plan.ffn[j])
        src, dst = f"layer_{i}_", f"layer_{j}_"
        # outputs sliced: columns of the (second) kernel; a first factor is copied whole
        for part, kept in (("query", cols), ("key", cols), ("value", cols), ("intermediate", units)):
            k, b = get(src + part)
            put(dst + part, [k[:, kept], b[kept]])
            if factored(dst + part):
                put(dst + part + LOWRANK_SUFFIX, get(src + part + LOWRANK_SUFFIX))
        # inputs sliced: rows of the (first) kernel; a second factor is copied whole
        for part, kept in (("attention_output", cols), ("output", units)):
            if factored(dst + part):
                (k,) = get(src + part + LOWRANK_SUFFIX)
                put(dst + part + LOWRANK_SUFFIX, [k[kept, :]])
                put(dst + part, get(src + part))
            else:
                k, b = get(src + part)
                put(dst + part, [k[kept, :], b])
        for part in ("attention_layer_norm", "output_layer_norm"):
            put(dst + part, get(src + part))
    return new


def prune_structured(model: keras.Model, config=None, *, data=None, return_plan: bool = False, **overrides):
    """A physically smaller native BERT: the least important heads, FFN units (and optionally layers) removed.

    Args:
        model: a native tfspeed BERT classifier or encoder (not wrapped by TFMOT). It is not changed.
        config: a `StructuredConfig` (or its dict). Defaults to `None` (`StructuredConfig()`).
        data: labelled batches for `"taylor"` (see `importance`). Defaults to `None`.
        return_plan: also return the `Plan` (what was kept). Defaults to `False`.
        **overrides: `StructuredConfig` settings that replace the config's: `heads` (fraction of all attention heads
            to remove, default `0.5`), `ffn` (of all FFN units, default `0.5`), `layers` (indices or a fraction of
            whole layers, default `None`: keep all), `method` (`"taylor"`, the default, needs `data` and a
            classifier; or `"magnitude"`), `num_batches` (`8`), `batch_size` (`32`), `ranking` (`"global"` or
            `"layer"`).

    Returns:
        The smaller model (a plain functional tfspeed BERT: `config_of` reads its per-layer heads and FFN widths,
        `tfspeed.hub.export_encoder` exports it), or `(model, plan)` with `return_plan=True`.
    """
    chosen = plan(model, StructuredConfig.resolve(config, **overrides), data=data)
    small = shrink(model, chosen)
    return (small, chosen) if return_plan else small


def parameter_count(model: keras.Model) -> int:
    return int(sum(np.prod(w.shape) for w in model.weights))


__all__ = ["Importance", "METHODS", "Method", "Plan", "RANKINGS", "Ranking", "StructuredConfig", "importance",
           "parameter_count", "plan", "prune_structured", "shrink"]
