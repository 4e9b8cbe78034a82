"""An independent BERT forward pass in numpy, straight from Hugging Face safetensors names (for parity tests)."""

import math

import numpy as np


def _layer_norm(x, gamma, beta, eps):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * gamma + beta


def _gelu(x):
    erf = np.vectorize(math.erf)
    return 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))


def bert_forward(w: dict, ids, mask, types, num_heads: int, eps: float = 1e-12):
    """Returns (sequence_output, pooled_output) in float64 for int arrays [batch, seq]."""
    w = {k: v.astype(np.float64) for k, v in w.items() if v.dtype != np.int64}
    lin = lambda x, name: x @ w[name + ".weight"].T + w[name + ".bias"]  # noqa: E731
    seq = ids.shape[1]
    x = w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][:seq][None] \
        + w["embeddings.token_type_embeddings.weight"][types]
    x = _layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], eps)
    additive = (1.0 - mask[:, None, None, :].astype(np.float64)) * -10000.0
    i = 0
    while f"encoder.layer.{i}.attention.self.query.weight" in w:
        p = f"encoder.layer.{i}."
        b, s, h = x.shape
        d = h // num_heads
        split = lambda t, b=b, s=s, d=d: t.reshape(b, s, num_heads, d).transpose(0, 2, 1, 3)  # noqa: E731
        q, k, v = (split(lin(x, p + f"attention.self.{n}")) for n in ("query", "key", "value"))
        scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(d) + additive
        scores = np.exp(scores - scores.max(-1, keepdims=True))
        probs = scores / scores.sum(-1, keepdims=True)
        ctx = (probs @ v).transpose(0, 2, 1, 3).reshape(b, s, h)
        x = _layer_norm(x + lin(ctx, p + "attention.output.dense"), w[p + "attention.output.LayerNorm.weight"],
                        w[p + "attention.output.LayerNorm.bias"], eps)
        inner = _gelu(lin(x, p + "intermediate.dense"))
        x = _layer_norm(x + lin(inner, p + "output.dense"), w[p + "output.LayerNorm.weight"],
                        w[p + "output.LayerNorm.bias"], eps)
        i += 1
    pooled = np.tanh(lin(x[:, 0], "pooler.dense"))
    return x, pooled
