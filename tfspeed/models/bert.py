"""A BERT encoder and classifier in tf_keras, flat so TFMOT reaches every Dense.

Inputs follow the TF-Hub BERT encoder format: a dict of int32 [batch, seq] tensors `input_word_ids`, `input_mask`,
`input_type_ids`. The encoder returns the TF-Hub outputs dict (`pooled_output`, `sequence_output`, `encoder_outputs`,
`default`); the classifier returns logits [batch, num_classes]. Both are plain functional models: the classifier does
not nest the encoder (TFMOT cannot see into nested models), `encoder_of(classifier)` recovers the encoder from it.
"""

from __future__ import annotations

from typing import Optional

from tfspeed.compat import keras, tf
from tfspeed.models import layers as L
from tfspeed.models.config import BertConfig

INPUT_NAMES = ("input_word_ids", "input_mask", "input_type_ids")
LOWRANK_SUFFIX = "_lowrank"
"""A factorised Dense `NAME` is the Dense `NAME + LOWRANK_SUFFIX` (m -> rank) followed by `NAME` (rank -> n)."""


def _initializer():
    return keras.initializers.TruncatedNormal(stddev=0.02)


def encoder_inputs(seq_length: Optional[int] = None, batch_size: Optional[int] = None) -> dict:
    """The TF-Hub input dict: three int32 Inputs of shape [batch, seq_length]."""
    return {name: keras.Input(shape=(seq_length,), batch_size=batch_size, dtype=tf.int32, name=name)
            for name in INPUT_NAMES}


def bert_outputs(config: BertConfig, inputs: dict) -> dict:
    """Builds the layers of `config` on `inputs` and returns the TF-Hub outputs dict of symbolic tensors."""
    c = config
    activation = L.ACTIVATIONS[c.activation]
    word = keras.layers.Embedding(c.vocab_size, c.hidden_size, embeddings_initializer=_initializer(),
                                  name="word_embeddings")(inputs["input_word_ids"])
    position = L.PositionEmbedding(c.max_positions, name="position_embedding")(word)
    types = keras.layers.Embedding(c.type_vocab_size, c.hidden_size, embeddings_initializer=_initializer(),
                                   name="type_embeddings")(inputs["input_type_ids"])
    x = keras.layers.Add(name="embeddings_add")([word, position, types])
    x = keras.layers.LayerNormalization(epsilon=c.layer_norm_epsilon, name="embeddings_layer_norm")(x)
    x = keras.layers.Dropout(c.dropout, name="embeddings_dropout")(x)
    mask = L.AttentionMask(name="attention_mask")(inputs["input_mask"])

    def dense(units, name, act=None):
        layer = keras.layers.Dense(units, activation=act, kernel_initializer=_initializer(), name=name)
        rank = c.rank_of(name)
        if rank is None:
            return layer
        low = keras.layers.Dense(rank, use_bias=False, kernel_initializer=_initializer(), name=name + LOWRANK_SUFFIX)
        return lambda x: layer(low(x))

    encoder_outputs = []
    for i in range(c.num_layers):
        heads, width = c.layer_num_heads[i], c.layer_num_heads[i] * c.head_size
        p = f"layer_{i}_"
        query = dense(width, p + "query")(x)
        key = dense(width, p + "key")(x)
        value = dense(width, p + "value")(x)
        scores = L.QueryKeyProduct(heads, c.head_size, name=p + "scores")([query, key])
        probs = L.MaskedSoftmax(c.head_size, name=p + "softmax")([scores, mask])
        probs = keras.layers.Dropout(c.attention_dropout, name=p + "attention_dropout")(probs)
        context = L.AttentionContext(heads, c.head_size, name=p + "context")([probs, value])
        attention = dense(c.hidden_size, p + "attention_output")(context)
        attention = keras.layers.Dropout(c.dropout, name=p + "attention_output_dropout")(attention)
        x = keras.layers.Add(name=p + "attention_residual")([x, attention])
        x = keras.layers.LayerNormalization(epsilon=c.layer_norm_epsilon, name=p + "attention_layer_norm")(x)
        inner = dense(c.layer_intermediate_sizes[i], p + "intermediate", activation)(x)
        out = dense(c.hidden_size, p + "output")(inner)
        out = keras.layers.Dropout(c.dropout, name=p + "output_dropout")(out)
        x = keras.layers.Add(name=p + "output_residual")([x, out])
        x = keras.layers.LayerNormalization(epsilon=c.layer_norm_epsilon, name=p + "output_layer_norm")(x)
        encoder_outputs.append(x)

    first = L.FirstToken(name="pooler_first_token")(x)
    pooled = dense(c.hidden_size, "pooler_dense", "tanh")(first)
    return {"pooled_output": pooled, "sequence_output": x, "encoder_outputs": encoder_outputs, "default": pooled}


def build_encoder(config: BertConfig, seq_length: Optional[int] = None, name: str = "bert_encoder") -> keras.Model:
    """A BERT encoder with the TF-Hub signature.

    Example:

    >>> enc = build_encoder(BertConfig(vocab_size=100, hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64))
    >>> sorted(enc.output)
    ['default', 'encoder_outputs', 'pooled_output', 'sequence_output']
    """
    inputs = encoder_inputs(seq_length)
    return keras.Model(inputs, bert_outputs(config, inputs), name=name)


def build_classifier(config: BertConfig, num_classes: int = 2, seq_length: Optional[int] = None,
                     classifier_dropout: Optional[float] = None, name: str = "bert_classifier") -> keras.Model:
    """A flat BERT classifier: encoder layers, dropout on `pooled_output`, a Dense `classifier` giving logits."""
    if not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"Received an invalid value for `num_classes`, expected an integer >= 2. "
                         f"Received: num_classes={num_classes!r}")
    inputs = encoder_inputs(seq_length)
    outputs = bert_outputs(config, inputs)
    x = keras.layers.Dropout(config.dropout if classifier_dropout is None else classifier_dropout,
                             name="classifier_dropout")(outputs["pooled_output"])
    logits = keras.layers.Dense(num_classes, kernel_initializer=_initializer(), name="classifier")(x)
    return keras.Model(inputs, logits, name=name)


def _unwrap(layer):
    """The layer inside a TFMOT wrapper (prune / quantize), or the layer itself."""
    while hasattr(layer, "layer") and isinstance(layer.layer, keras.layers.Layer):
        layer = layer.layer
    return layer


def layer_by_name(model: keras.Model, name: str):
    """The layer called `name` in `model`, looking through TFMOT wrappers (prune_low_magnitude_*, quant_*)."""
    for layer in model.layers:
        if _unwrap(layer).name == name:
            return layer
    raise ValueError(f"`model` has no layer named {name!r}. Is it a tfspeed BERT? Layers: "
                     f"{[l.name for l in model.layers][:12]}...")


def check_plain_bert(model, why: str):
    """Refuses anything but a native tfspeed BERT without TFMOT wrappers, saying `why` a hub-layer model does not do.

    The check of the verbs that rebuild a BERT from its config (structured pruning, factorisation)."""
    if not isinstance(model, keras.Model) or not is_bert(model):
        received = getattr(model, "name", type(model).__name__)
        raise ValueError(f"Expected a native tfspeed BERT (encoder or classifier) for `model`. A classifier on a "
                         f"hub.KerasLayer {why}: import the encoder first with `tfspeed.hub.build_classifier_from("
                         f"handle)` (or `tfspeed finetune`). Received: {received!r}")
    if any(_unwrap(l) is not l for l in model.layers):
        raise ValueError(f"`model` {model.name!r} has TFMOT wrappers (pruning or quantization). Pass the plain model "
                         "(prune and quantize after), or strip it first: `tfspeed.compress.pruning.strip(model)`.")


def is_bert(model) -> bool:
    names = {_unwrap(l).name for l in getattr(model, "layers", [])}
    return {"word_embeddings", "position_embedding", "layer_0_query", "pooler_dense"} <= names


def config_of(model: keras.Model) -> BertConfig:
    """Reads the `BertConfig` back from a tfspeed BERT encoder or classifier (wrapped by TFMOT or not)."""
    if not is_bert(model):
        raise ValueError(f"Expected a tfspeed BERT encoder or classifier for `model`. Received: a model named "
                         f"{getattr(model, 'name', model)!r} without the layers "
                         "word_embeddings/layer_0_query/pooler_dense.")
    get = lambda name: _unwrap(layer_by_name(model, name))  # noqa: E731
    names = {_unwrap(l).name for l in model.layers}
    num_layers = sum(1 for n in names if n.startswith("layer_") and n.endswith("_query"))
    word, scores0 = get("word_embeddings"), get("layer_0_scores")
    heads = [get(f"layer_{i}_scores").num_heads for i in range(num_layers)]
    # QAT can compute some heads' scores apart (`tfspeed.compress.qat.split_heads`)
    heads = [h + (get(f"layer_{i}_scores_outliers").num_heads if f"layer_{i}_scores_outliers" in names else 0)
             for i, h in enumerate(heads)]
    inter = [get(f"layer_{i}_intermediate").units for i in range(num_layers)]
    act = keras.activations.serialize(get("layer_0_intermediate").activation)
    if not isinstance(act, str):  # a registered function: {"config": "tfspeed>gelu_approximate", ...}
        config = act.get("config", {})
        act = config if isinstance(config, str) else config.get("name", "gelu")
    act = act.split(">")[-1]
    ranks = {n[:-len(LOWRANK_SUFFIX)]: get(n).units for n in names if n.endswith(LOWRANK_SUFFIX)}
    return BertConfig(
        vocab_size=word.input_dim, hidden_size=word.output_dim, num_layers=num_layers, num_heads=max(heads),
        intermediate_size=max(inter), max_positions=get("position_embedding").max_positions,
        type_vocab_size=get("type_embeddings").input_dim, dropout=float(get("embeddings_dropout").rate),
        attention_dropout=float(get("layer_0_attention_dropout").rate),
        activation=act if act in L.ACTIVATIONS else "gelu",
        layer_norm_epsilon=float(get("embeddings_layer_norm").epsilon), head_size=scores0.head_size,
        layer_num_heads=heads, layer_intermediate_sizes=inter, ranks=ranks or None)


def num_classes_of(model: keras.Model) -> int:
    return int(_unwrap(layer_by_name(model, "classifier")).units)


def encoder_of(model: keras.Model, name: str = "bert_encoder") -> keras.Model:
    """The encoder inside a tfspeed classifier, as a model sharing its layers (and weights)."""
    config = config_of(model)
    get = lambda n: layer_by_name(model, n).output  # noqa: E731
    encoder_outputs = [get(f"layer_{i}_output_layer_norm") for i in range(config.num_layers)]
    pooled = get("pooler_dense")
    outputs = {"pooled_output": pooled, "sequence_output": encoder_outputs[-1], "encoder_outputs": encoder_outputs,
               "default": pooled}
    inputs = model.input if isinstance(model.input, dict) else dict(zip(INPUT_NAMES, model.inputs))
    return keras.Model(inputs, outputs, name=name)


def copy_weights(source: keras.Model, target: keras.Model, skip=()) -> list:
    """Copies weights layer by layer where names and shapes match; returns the names of the layers copied."""
    src = {_unwrap(l).name: _unwrap(l) for l in source.layers}
    copied = []
    for layer in target.layers:
        layer = _unwrap(layer)
        if layer.name in skip or layer.name not in src or not layer.weights:
            continue
        weights = src[layer.name].get_weights()
        if [w.shape for w in weights] == [tuple(w.shape) for w in layer.get_weights()]:
            layer.set_weights(weights)
            copied.append(layer.name)
    return copied


CUSTOM_OBJECTS = dict(L.CUSTOM_OBJECTS)
