"""The small custom layers of a tfspeed BERT.

The graph is flat on purpose: every Dense of attention, FFN and pooler is a top-level Keras layer, so TFMOT's pruning
wrappers and quantization annotations reach all of them. What is not a Dense (position table, attention math, the mask)
lives in the few layers below: each does one thing, owns no Dense, and round-trips through `get_config`.
"""

from __future__ import annotations

from tfspeed.compat import keras, tf

_register = keras.saving.register_keras_serializable(package="tfspeed")


@_register
class PositionEmbedding(keras.layers.Layer):
    """Learned absolute position embeddings, sliced to the input's sequence length.

    Args:
        max_positions: rows of the table.
        initializer: Defaults to a truncated normal with stddev 0.02.

    Call: `embeddings` [batch, seq, hidden] -> position embeddings [1, seq, hidden] (broadcast on add).
    """

    def __init__(self, max_positions: int, initializer="truncated_normal", **kwargs):
        super().__init__(**kwargs)
        self.max_positions = int(max_positions)
        self.initializer = keras.initializers.get(
            keras.initializers.TruncatedNormal(stddev=0.02) if initializer == "truncated_normal" else initializer)

    def build(self, input_shape):
        self.embeddings = self.add_weight(
            "embeddings", shape=(self.max_positions, int(input_shape[-1])), initializer=self.initializer)
        super().build(input_shape)

    def call(self, inputs):
        seq_length = tf.shape(inputs)[1]
        return tf.expand_dims(self.embeddings[:seq_length], 0)

    def get_config(self):
        return {**super().get_config(), "max_positions": self.max_positions,
                "initializer": keras.initializers.serialize(self.initializer)}


@_register
class AttentionMask(keras.layers.Layer):
    """Turns an int `input_mask` [batch, seq] (1 = token, 0 = padding) into an additive mask [batch, 1, 1, seq]."""

    def call(self, mask):
        mask = tf.cast(mask, self.compute_dtype)
        return (1.0 - mask[:, tf.newaxis, tf.newaxis, :]) * -10000.0


def _split_heads(x, num_heads: int, head_size: int):
    batch, seq = tf.shape(x)[0], tf.shape(x)[1]
    x = tf.reshape(x, [batch, seq, num_heads, head_size])
    return tf.transpose(x, [0, 2, 1, 3])


@_register
class QueryKeyProduct(keras.layers.Layer):
    """Raw attention scores: `[query, key]` [batch, seq, heads*head_size] -> [batch, heads, seq, seq].

    One BATCH_MATMUL in TFLite; kept apart from the softmax so quantization can observe its output.
    """

    def __init__(self, num_heads: int, head_size: int, **kwargs):
        super().__init__(**kwargs)
        self.num_heads, self.head_size = int(num_heads), int(head_size)

    def call(self, inputs):
        query, key = inputs
        query = _split_heads(query, self.num_heads, self.head_size)
        key = _split_heads(key, self.num_heads, self.head_size)
        return tf.matmul(query, key, transpose_b=True)

    def get_config(self):
        return {**super().get_config(), "num_heads": self.num_heads, "head_size": self.head_size}


@_register
class MaskedSoftmax(keras.layers.Layer):
    """Attention probabilities: `[scores, additive_mask]` -> softmax(scores * scale + mask) over the last axis."""

    def __init__(self, head_size: int, **kwargs):
        super().__init__(**kwargs)
        self.head_size = int(head_size)

    def call(self, inputs):
        scores, mask = inputs
        scores = scores * (1.0 / float(self.head_size) ** 0.5) + mask
        return tf.nn.softmax(scores, axis=-1)

    def get_config(self):
        return {**super().get_config(), "head_size": self.head_size}


@_register
class AttentionContext(keras.layers.Layer):
    """Weighted values: `[probs, value]` -> context [batch, seq, heads*head_size]. One BATCH_MATMUL in TFLite."""

    def __init__(self, num_heads: int, head_size: int, **kwargs):
        super().__init__(**kwargs)
        self.num_heads, self.head_size = int(num_heads), int(head_size)

    def call(self, inputs):
        probs, value = inputs
        value = _split_heads(value, self.num_heads, self.head_size)
        context = tf.matmul(probs, value)
        context = tf.transpose(context, [0, 2, 1, 3])
        batch, seq = tf.shape(context)[0], tf.shape(context)[1]
        return tf.reshape(context, [batch, seq, self.num_heads * self.head_size])

    def get_config(self):
        return {**super().get_config(), "num_heads": self.num_heads, "head_size": self.head_size}


@_register
class FirstToken(keras.layers.Layer):
    """The [CLS] hidden state: [batch, seq, hidden] -> [batch, hidden]."""

    def call(self, inputs):
        return inputs[:, 0, :]


@_register
class ChannelScale(keras.layers.Layer):
    """Multiplies the last axis by fixed per-channel `scales` (no weights). QAT's outlier smoothing puts it where a
    LayerNorm whose outlier channels were scaled down feeds the residual stream, which needs the original values."""

    def __init__(self, scales, **kwargs):
        super().__init__(**kwargs)
        self.scales = [float(v) for v in scales]

    def call(self, inputs):
        return inputs * tf.constant(self.scales, dtype=inputs.dtype)

    def get_config(self):
        return {**super().get_config(), "scales": list(self.scales)}


@keras.saving.register_keras_serializable(package="tfspeed", name="gelu_approximate")
def gelu_approximate(x):
    """The tanh approximation of GELU: Google's original BERT, keras-hub's BERT, Hugging Face's "gelu_new"."""
    return tf.nn.gelu(x, approximate=True)


# TFMOT recognises activations by `__name__` (quantize_aware_activation): "gelu" is quantized as GELU is. The
# registered name above is what `get_config` writes.
gelu_approximate.__name__ = "gelu"

ACTIVATIONS = {"gelu": "gelu", "gelu_approximate": gelu_approximate, "relu": "relu"}
"""`BertConfig.activation` -> the Dense activation of the FFN."""

CUSTOM_OBJECTS = {cls.__name__: cls for cls in
                  (PositionEmbedding, AttentionMask, QueryKeyProduct, MaskedSoftmax, AttentionContext, FirstToken,
                   ChannelScale)}
