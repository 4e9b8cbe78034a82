"""Early exits: a classifier after some encoder layers, so easy inputs stop early (DeeBERT, FastBERT, PABEE).

`add_exits(model, layers=(1, 2, 3, 4, 5))` returns a new Keras model whose outputs are the logits of each exit and of
the final classifier (`{"exit_1": ..., "final": ...}`); the encoder and the final classifier are frozen, so the full
model's predictions do not change. `fit_exits` trains the exits through `fit`, by self-distillation from the final
classifier (FastBERT: each exit learns the final layer's probabilities) or on the labels.

At inference an exit rule decides, exit by exit, whether to stop:

- `confidence`: stop when the top probability is at least `threshold`;
- `entropy`: stop when the entropy of the probabilities (nats) is at most `threshold`;
- `patience`: stop when `threshold` exits in a row agree on the label (PABEE).

`calibrate` picks the threshold on the validation split: the one that uses the fewest layers on average while the
accuracy stays within `budget` of the full model's. `simulate` and `curve` give the accuracy and the mean layers used
for any threshold. The runtime that really stops after a confident exit is `tfspeed.export.exits`.

Example:

```python
exits = add_exits(model, layers=(1, 2, 3, 4, 5))  # mean-pooled exits
fit_exits(exits, data.train, data.validation, config=ExitsConfig(epochs=2))
probs = exit_probabilities(exits, data.validation)           # [n, exits + 1, classes]
rule = calibrate(probs, data.validation.labels, exit_layers(exits), budget=0.005, rule="entropy")
```
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

import numpy as np

from tfspeed.compat import keras, tf
from tfspeed.config import StageConfig, StrEnum, check_positive_int, field
from tfspeed.models import layers as L
from tfspeed.models.bert import _initializer, check_plain_bert, config_of
from tfspeed.train import softmax

EXIT_PREFIX = "exit_"
FINAL = "final"


class ExitRule(StrEnum):
    """How an exit decides to answer: `confidence` (top probability >= threshold), `entropy` (entropy <= threshold,
    in nats) or `patience` (the same label from `threshold` exits in a row)."""

    CONFIDENCE = "confidence"
    ENTROPY = "entropy"
    PATIENCE = "patience"


class ExitPooling(StrEnum):
    """What an exit reads from its layer: the first ([CLS]) token, or the mean of the valid tokens."""

    CLS = "cls"
    MEAN = "mean"


class ExitTarget(StrEnum):
    """What the exits learn: the final classifier's probabilities (`distill`, FastBERT) or the labels."""

    DISTILL = "distill"
    LABELS = "labels"


def _layers(text) -> tuple:
    return tuple(int(s) for s in str(text).split(",") if s.strip())


@dataclasses.dataclass
class ExitsConfig(StageConfig):
    """Early exits: where they go, how they are trained, and the rule and accuracy budget of the threshold.

    Args:
        layers: after which encoder layers (1-based, increasing, below the last layer) an exit goes. Defaults to
            `None`: after every layer but the last.
        pooling: `"mean"` (the mean of the valid tokens) or `"cls"` (the [CLS] token). Defaults to `"mean"`: on a
            frozen fine-tuned MiniLM the [CLS] state of the first layers does not carry the class yet
            (benchmarks/README.md, "Early exits").
        target: `"distill"` (the final classifier's probabilities) or `"labels"`. Defaults to `"distill"`.
        epochs: training epochs of the exits (the encoder is frozen). Defaults to `2`.
        batch_size: Defaults to `32`.
        learning_rate: Adam learning rate of the exit heads. Defaults to `1e-3`.
        rule: `"confidence"`, `"entropy"` or `"patience"`. Defaults to `"entropy"`.
        budget: the most accuracy the exits may cost on the validation split (0.005 = half a point), in [0, 1).
            Defaults to `0.005`.
    """

    layers: Optional[tuple] = field(None, parse=_layers, metavar="I,J,..",
                                    help="after which layers (1-based, increasing) an exit goes (default: every "
                                         "layer but the last)")
    pooling: ExitPooling = field(ExitPooling.MEAN, help="what an exit reads: the mean of the tokens or the [CLS] token")
    target: ExitTarget = field(ExitTarget.DISTILL, help="what the exits learn: the final layer's probabilities "
                                                        "(distill) or the labels")
    epochs: int = field(2, help="training epochs of the exits (the encoder is frozen)")
    batch_size: int = field(32, help="training batch size")
    learning_rate: float = field(1e-3, help="Adam learning rate of the exit heads")
    rule: ExitRule = field(ExitRule.ENTROPY, help="exit rule: confidence, entropy or patience")
    budget: float = field(0.005, help="the most accuracy the exits may cost on validation (0.005 = half a point)")

    def validate(self):
        self.pooling = ExitPooling.parse("pooling", self.pooling)
        self.target = ExitTarget.parse("target", self.target)
        self.rule = ExitRule.parse("rule", self.rule)
        if self.layers is not None:
            self.layers = tuple(self.layers)
            _check_layers(self.layers, None)
        check_positive_int("epochs", self.epochs)
        check_positive_int("batch_size", self.batch_size)
        if not self.learning_rate > 0:
            raise ValueError(f"Received an invalid value for `learning_rate`, expected a positive number. "
                             f"Received: learning_rate={self.learning_rate!r}")
        check_budget(self.budget)


def check_budget(budget) -> float:
    """`budget` if it is a number in [0, 1), else a clear error."""
    if isinstance(budget, bool) or not isinstance(budget, (int, float)) or not 0 <= budget < 1:
        raise ValueError(f"Received an invalid value for `budget`, expected an accuracy fraction in [0, 1) "
                         f"(0.005 = half a point). Received: budget={budget!r}")
    return float(budget)


def _check_layers(layers, num_layers: Optional[int]) -> tuple:
    layers = tuple(layers)
    if not layers or not all(isinstance(i, (int, np.integer)) and not isinstance(i, bool) for i in layers):
        raise ValueError(f"Received an invalid value for `layers`, expected layer numbers (1-based integers). "
                         f"Received: layers={layers!r}")
    if list(layers) != sorted(set(layers)):
        raise ValueError(f"Received an invalid value for `layers`, expected increasing layer numbers without repeats. "
                         f"Received: layers={list(layers)}")
    top = num_layers - 1 if num_layers is not None else None
    if layers[0] < 1 or (top is not None and layers[-1] > top):
        expected = f"1 to {top} (the last layer is the final classifier's)" if top is not None else ">= 1"
        raise ValueError(f"Received an invalid value for `layers`, expected layer numbers from {expected}. "
                         f"Received: layers={list(layers)}")
    return tuple(int(i) for i in layers)


@keras.saving.register_keras_serializable(package="tfspeed")
class MaskedMean(keras.layers.Layer):
    """The mean of the valid tokens: ([batch, seq, hidden], int mask [batch, seq]) -> [batch, hidden]."""

    def call(self, inputs):
        x, mask = inputs
        mask = tf.cast(mask, x.dtype)[:, :, tf.newaxis]
        return tf.reduce_sum(x * mask, axis=1) / tf.maximum(tf.reduce_sum(mask, axis=1), 1.0)


def hidden_layer_name(layer: int) -> str:
    """The Keras layer whose output is the hidden state after encoder layer `layer` (1-based)."""
    return f"layer_{layer - 1}_output_layer_norm"


def add_exits(model: keras.Model, layers: Optional[Sequence[int]] = None, pooling="mean",
              freeze: bool = True) -> keras.Model:
    """A new model with an exit classifier after each of `layers`: outputs `{"exit_I": logits, ..., "final": logits}`.

    Each exit is a tanh Dense of the hidden size on the pooled hidden state (the [CLS] token, or the mean of the valid
    tokens), then a Dense to the classes, as BERT's own pooler and classifier. The caller's model is not changed: the
    new model holds a copy of its weights. With `freeze=True` the encoder and the final classifier do not train, so
    the final output stays the input model's.

    Args:
        model: a native tfspeed BERT classifier (no TFMOT wrappers).
        layers: 1-based encoder layers, increasing, below the last. Defaults to `None` (every layer but the last).
        pooling: `"mean"` or `"cls"`. Defaults to `"mean"`.
        freeze: freeze the encoder and the final classifier. Defaults to `True`.
    """
    check_plain_bert(model, "early exits read its hidden states by layer name")
    if isinstance(model.output, dict):
        raise ValueError("Expected a BERT classifier (logits output) for `model`. Received: an encoder (dict output); "
                         "build a classifier first (tfspeed.models.build_classifier).")
    config = config_of(model)
    layers = _check_layers(range(1, config.num_layers) if layers is None else layers, config.num_layers)
    pooling = ExitPooling.parse("pooling", pooling)
    from tfspeed.registry import custom_objects

    with keras.utils.custom_object_scope(custom_objects()):  # the native BERT's layers, registered by tfspeed.models
        base = keras.models.clone_model(model)
    base.set_weights(model.get_weights())
    num_classes = int(model.output_shape[-1])
    outputs = {}
    for i in layers:
        hidden = base.get_layer(hidden_layer_name(i)).output
        if pooling == ExitPooling.CLS:
            pooled = L.FirstToken(name=f"{EXIT_PREFIX}{i}_first_token")(hidden)
        else:
            pooled = MaskedMean(name=f"{EXIT_PREFIX}{i}_mean")([hidden, base.input["input_mask"]])
        pooled = keras.layers.Dense(config.hidden_size, activation="tanh", kernel_initializer=_initializer(),
                                    name=f"{EXIT_PREFIX}{i}_pooler")(pooled)
        outputs[f"{EXIT_PREFIX}{i}"] = keras.layers.Dense(num_classes, kernel_initializer=_initializer(),
                                                          name=f"{EXIT_PREFIX}{i}")(pooled)
    outputs[FINAL] = base.output
    exits = keras.Model(base.input, outputs, name=f"{model.name}_exits")
    if freeze:
        for layer in exits.layers:
            if not layer.name.startswith(EXIT_PREFIX):
                layer.trainable = False
    return exits


def exit_layers(exits: keras.Model) -> tuple:
    """The 1-based layers of a model's exits, in order; a clear error for a model without exits."""
    names = [k for k in (exits.output if isinstance(exits.output, dict) else {}) if k.startswith(EXIT_PREFIX)]
    if not names:
        raise ValueError(f"Expected a model with early exits (outputs `exit_I` and `final`: `add_exits`) for "
                         f"`exits`. Received: {getattr(exits, 'name', type(exits).__name__)!r} without exits.")
    return tuple(sorted(int(n[len(EXIT_PREFIX):]) for n in names))


def _stacked_fn(exits: keras.Model):
    names = [f"{EXIT_PREFIX}{i}" for i in exit_layers(exits)] + [FINAL]
    spec = {name: tf.TensorSpec([None, None], tf.int32) for name in exits.input}

    @tf.function(input_signature=[spec])
    def fn(x):
        out = exits(x, training=False)
        return tf.stack([out[n] for n in names], axis=1)

    return fn


def exit_logits(exits: keras.Model, split, batch_size: int = 128) -> np.ndarray:
    """Logits of every exit and of the final classifier over `split` (an `EncodedSplit`), in its order:
    [n, exits + 1, classes] (one forward pass per batch, batches bucketed by length)."""
    fn = _stacked_fn(exits)
    result = None
    for idx in split.batch_indices(batch_size, shuffle=False, bucket=True):
        x, _ = split.batch(idx)
        out = fn({k: tf.constant(v) for k, v in x.items()}).numpy()
        if result is None:
            result = np.zeros((len(split),) + out.shape[1:], out.dtype)
        result[idx] = out
    return result


def exit_probabilities(exits: keras.Model, split, batch_size: int = 128) -> np.ndarray:
    """`exit_logits` as probabilities."""
    return softmax(exit_logits(exits, split, batch_size))


def fit_exits(exits: keras.Model, train, validation=None, config: Optional[ExitsConfig] = None, callbacks=(),
              verbose="auto", **kwargs):
    """Trains the exits of `exits` (from `add_exits`) through `fit` on `train` (an `EncodedSplit`).

    With `target="distill"` each exit learns the final classifier's probabilities on the training texts (computed
    once, before training); with `"labels"`, the labels. When the encoder is trainable (`add_exits(freeze=False)`:
    joint training) the final classifier learns the labels too, so it stays a classifier while the encoder changes.
    Returns the `fit` history.
    """
    config = ExitsConfig.resolve(config, **kwargs)
    names = [f"{EXIT_PREFIX}{i}" for i in exit_layers(exits)]
    num_classes = int(exits.output[FINAL].shape[-1])
    joint = any(layer.trainable and layer.trainable_weights and not layer.name.startswith(EXIT_PREFIX)
                for layer in exits.layers)

    def targets(split):
        if config.target == ExitTarget.DISTILL:
            return softmax(exit_logits(exits, split)[:, -1])
        return np.eye(num_classes, dtype=np.float32)[split.labels]

    def dataset(split, shuffle):
        ds = split.dataset(config.batch_size if shuffle else 128, shuffle=shuffle, extra=targets(split))
        if joint:
            return ds.map(lambda x, y: (x, {**{n: y[1] for n in names},
                                            FINAL: tf.one_hot(y[0], num_classes, dtype=tf.float32)}))
        return ds.map(lambda x, y: (x, {n: y[1] for n in names}))

    loss = keras.losses.CategoricalCrossentropy(from_logits=True)
    losses = {n: loss for n in names + ([FINAL] if joint else [])}
    exits.compile(optimizer=keras.optimizers.Adam(config.learning_rate), loss=losses,
                  metrics={n: [keras.metrics.CategoricalAccuracy(name="agreement" if config.target == ExitTarget.DISTILL
                                                                 else "accuracy")] for n in names})
    return exits.fit(dataset(train, True), epochs=config.epochs, callbacks=list(callbacks), verbose=verbose,
                     validation_data=dataset(validation, False) if validation is not None else None)


# --- exit rules ----------------------------------------------------------------------------------------------------
def _entropy(p: np.ndarray) -> np.ndarray:
    return -np.sum(p * np.log(np.maximum(p, 1e-12)), axis=-1)


def confident(probs: np.ndarray, rule, threshold: float, final: bool = True) -> np.ndarray:
    """[n, exits] booleans: where each exit of each example would answer under `rule` at `threshold`. With
    `final=True` the last column is the final classifier, which always answers."""
    rule = ExitRule.parse("rule", rule)
    probs = np.asarray(probs)
    if rule == ExitRule.CONFIDENCE:
        ok = probs.max(-1) >= threshold
    elif rule == ExitRule.ENTROPY:
        ok = _entropy(probs) <= threshold
    else:
        k = int(threshold)
        if k < 1 or k != threshold:
            raise ValueError(f"Received an invalid value for `threshold` with rule='patience', expected a whole number "
                             f">= 1 of exits that agree in a row. Received: threshold={threshold!r}")
        labels = probs.argmax(-1)
        run = np.ones(labels.shape, int)
        for j in range(1, labels.shape[1]):
            run[:, j] = np.where(labels[:, j] == labels[:, j - 1], run[:, j - 1] + 1, 1)
        ok = run >= k
    ok = ok.copy()
    if final:
        ok[:, -1] = True
    return ok


def simulate(probs: np.ndarray, layers: Sequence[int], num_layers: int, rule, threshold: float) -> dict:
    """What the rule does on `probs` ([n, exits + 1, classes], from `exit_probabilities`): for each example the exit
    it stops at (`exit_index`, the final classifier being `len(layers)`), the layers it computes (`layers_used`) and
    its prediction."""
    ok = confident(probs, rule, threshold)
    index = ok.argmax(1)
    depth = np.asarray(list(layers) + [num_layers])
    chosen = np.asarray(probs)[np.arange(len(index)), index]
    return {"exit_index": index, "layers_used": depth[index], "predictions": chosen.argmax(-1)}


def thresholds(probs: np.ndarray, rule, max_points: int = 400) -> np.ndarray:
    """The thresholds `curve` tries for `rule` on `probs`: the values the rule's measure takes at the exits (at most
    `max_points` of them, evenly spread by rank), between "never exit early" and "always at the first exit"."""
    rule = ExitRule.parse("rule", rule)
    probs = np.asarray(probs)
    if rule == ExitRule.PATIENCE:
        return np.arange(probs.shape[1], 0, -1, dtype=float)
    measure = probs[:, :-1].max(-1) if rule == ExitRule.CONFIDENCE else _entropy(probs[:, :-1])
    values = np.unique(measure)
    if len(values) > max_points:
        values = values[np.linspace(0, len(values) - 1, max_points).round().astype(int)]
    if rule == ExitRule.CONFIDENCE:  # from "never" (above every value) down to "always"
        return np.concatenate([[values.max() + 1e-6], values[::-1], [0.0]])
    return np.concatenate([[-1.0], values, [values.max() + 1e-6]])


def curve(probs: np.ndarray, labels: np.ndarray, layers: Sequence[int], num_layers: int, rule) -> list:
    """Accuracy against mean layers used, for every threshold of `thresholds(probs, rule)`: a list of dicts with
    `threshold`, `accuracy`, `mean_layers`, `speedup_layers` (num_layers / mean_layers) and `exit_counts`."""
    labels = np.asarray(labels)
    points = []
    for t in thresholds(probs, rule):
        s = simulate(probs, layers, num_layers, rule, t)
        mean_layers = float(s["layers_used"].mean())
        points.append({"threshold": float(t), "accuracy": float(np.mean(s["predictions"] == labels)),
                       "mean_layers": mean_layers, "speedup_layers": num_layers / mean_layers,
                       "exit_counts": np.bincount(s["exit_index"], minlength=probs.shape[1]).tolist()})
    return points


@dataclasses.dataclass
class Calibration:
    """A threshold chosen on labelled data: the rule, the threshold, and what it gave there."""

    rule: str
    threshold: float
    budget: float
    layers: tuple
    num_layers: int
    accuracy: float
    full_accuracy: float
    mean_layers: float
    curve: list

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def calibrate(probs: np.ndarray, labels: np.ndarray, layers: Sequence[int], num_layers: int, rule="entropy",
              budget: float = 0.005, reference_accuracy: Optional[float] = None) -> Calibration:
    """The threshold of `rule` that uses the fewest layers on average while the accuracy on (`probs`, `labels`) stays
    at least the full model's minus `budget` (a fraction: 0.005 = half a point). Run it on the validation split.
    `reference_accuracy` replaces the full model's accuracy there (e.g. the model before its exits were jointly
    trained). A threshold that never exits early is always within the budget of the model itself."""
    budget = check_budget(budget)
    points = curve(probs, labels, layers, num_layers, rule)
    full = float(np.mean(np.asarray(probs)[:, -1].argmax(-1) == np.asarray(labels)))
    if reference_accuracy is not None:
        full = float(reference_accuracy)
    within = [p for p in points if p["accuracy"] >= full - budget - 1e-12] or [points[0]]
    best = min(within, key=lambda p: (p["mean_layers"], -p["accuracy"]))
    return Calibration(rule=ExitRule.parse("rule", rule).value, threshold=best["threshold"], budget=budget,
                       layers=tuple(int(i) for i in layers), num_layers=int(num_layers), accuracy=best["accuracy"],
                       full_accuracy=full, mean_layers=best["mean_layers"], curve=points)
