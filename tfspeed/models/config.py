"""`BertConfig`: the architecture of a tfspeed BERT, checked when it is made and serializable as a dict."""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Mapping, Optional, Sequence

from tfspeed import _checks

_ACTIVATIONS = ("gelu", "gelu_approximate", "relu")
# The Dense layers of the encoder, by name: what `ranks` may factorise.
FACTORIZABLE = re.compile(r"layer_(\d+)_(query|key|value|attention_output|intermediate|output)|pooler_dense")


@dataclasses.dataclass(frozen=True)
class BertConfig:
    """The shape of a BERT encoder.

    Args:
        vocab_size: WordPiece vocabulary size. Defaults to `30522` (BERT uncased).
        hidden_size: width of every hidden state. Defaults to `384`.
        num_layers: number of transformer layers. Defaults to `6`.
        num_heads: attention heads per layer. Defaults to `12`.
        intermediate_size: FFN inner width. Defaults to `1536`.
        max_positions: longest sequence the position table covers. Defaults to `512`.
        type_vocab_size: number of segment ids. Defaults to `2`.
        dropout: dropout rate on hidden states. Defaults to `0.1`.
        attention_dropout: dropout rate on attention probabilities. Defaults to `0.1`.
        activation: FFN activation, "gelu" (exact, as Hugging Face BERT), "gelu_approximate" (its tanh
            approximation, as Google's BERT and keras-hub) or "relu". Defaults to `"gelu"`.
        layer_norm_epsilon: Defaults to `1e-12`.
        head_size: width of one head. Defaults to `hidden_size // num_heads`.
        layer_num_heads: heads kept in each layer, after structured pruning. Defaults to `num_heads` everywhere.
        layer_intermediate_sizes: FFN width of each layer, after structured pruning. Defaults to `intermediate_size`.
        ranks: low-rank factorisation (`tfspeed.compress.lowrank`): `{Dense name: rank}`; a named Dense (m -> n) is
            built as a Dense `NAME_lowrank` (m -> rank, no bias) followed by the Dense `NAME` (rank -> n, with the
            bias and activation). Names are the encoder's Dense layers (`layer_<i>_query` ... `layer_<i>_output`,
            `pooler_dense`). Defaults to `None` (no layer factorised).

    Example:

    >>> BertConfig(hidden_size=128, num_layers=2, num_heads=2, intermediate_size=512).head_size
    64
    """

    vocab_size: int = 30522
    hidden_size: int = 384
    num_layers: int = 6
    num_heads: int = 12
    intermediate_size: int = 1536
    max_positions: int = 512
    type_vocab_size: int = 2
    dropout: float = 0.1
    attention_dropout: float = 0.1
    activation: str = "gelu"
    layer_norm_epsilon: float = 1e-12
    head_size: Optional[int] = None
    layer_num_heads: Optional[Sequence[int]] = None
    layer_intermediate_sizes: Optional[Sequence[int]] = None
    ranks: Optional[Mapping[str, int]] = None

    def __post_init__(self):
        _checks.fields(self, ("vocab_size", "hidden_size", "num_layers", "num_heads", "intermediate_size",
                              "max_positions", "type_vocab_size"), _checks.positive_int)
        _checks.fields(self, ("dropout", "attention_dropout"), _checks.fraction)
        if self.activation not in _ACTIVATIONS:
            raise ValueError(f"Received an invalid value for `activation`, expected one of {_ACTIVATIONS}. "
                             f"Received: activation={self.activation!r}")
        if self.head_size is None:
            if self.hidden_size % self.num_heads:
                raise ValueError("`hidden_size` must be divisible by `num_heads` when `head_size` is not given. "
                                 f"Received: hidden_size={self.hidden_size}, num_heads={self.num_heads}")
            object.__setattr__(self, "head_size", self.hidden_size // self.num_heads)
        per_layer = (("layer_num_heads", self.num_heads), ("layer_intermediate_sizes", self.intermediate_size))
        for name, default in per_layer:
            value = getattr(self, name)
            value = [default] * self.num_layers if value is None else [int(v) for v in value]
            if len(value) != self.num_layers or any(v < 1 for v in value):
                raise ValueError(f"Received an invalid value for `{name}`, expected {self.num_layers} positive "
                                 f"integers (one per layer). Received: {name}={getattr(self, name)!r}")
            object.__setattr__(self, name, tuple(value))
        object.__setattr__(self, "ranks", self._checked_ranks(self.ranks))

    def _checked_ranks(self, ranks) -> tuple:
        """`ranks` as sorted `((name, rank), ...)` (hashable, as the dataclass is frozen), each one checked."""
        if ranks is None:
            return ()
        items = ranks.items() if isinstance(ranks, Mapping) else ranks
        try:
            items = [(str(name), rank) for name, rank in items]
        except (TypeError, ValueError):
            raise ValueError("Received an invalid value for `ranks`, expected a mapping {Dense name: rank}. "
                             f"Received: ranks={ranks!r}") from None
        for name, rank in items:
            m = FACTORIZABLE.fullmatch(name)
            if m is None or (m.group(1) is not None and int(m.group(1)) >= self.num_layers):
                raise ValueError(f"Received an invalid value for `ranks`: {name!r} is not a Dense layer of this "
                                 f"encoder, expected names like layer_<i>_intermediate (i < {self.num_layers}) or "
                                 f"pooler_dense. Received: ranks={dict(items)!r}")
            if not isinstance(rank, int) or isinstance(rank, bool) or rank < 1:
                raise ValueError(f"Received an invalid value for `ranks[{name!r}]`, expected a positive integer. "
                                 f"Received: {rank!r}")
        return tuple(sorted(items))

    def rank_of(self, name: str) -> Optional[int]:
        """The rank of the Dense `name` when it is factorised, else None."""
        return dict(self.ranks).get(name)

    @property
    def is_uniform(self) -> bool:
        """True when no layer was pruned to another number of heads or FFN units."""
        return (set(self.layer_num_heads) == {self.num_heads}
                and set(self.layer_intermediate_sizes) == {self.intermediate_size})

    def replace(self, **changes) -> "BertConfig":
        """A copy with `changes`; per-layer lists and ranks are reset when `num_layers` changes and they are not
        given."""
        if "num_layers" in changes:
            changes.setdefault("layer_num_heads", None)
            changes.setdefault("layer_intermediate_sizes", None)
            changes.setdefault("ranks", None)
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["layer_num_heads"] = list(self.layer_num_heads)
        d["layer_intermediate_sizes"] = list(self.layer_intermediate_sizes)
        d["ranks"] = dict(self.ranks) or None
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "BertConfig":
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - fields)
        if unknown:
            raise ValueError(f"Unknown BertConfig keys {unknown}. Expected keys among {sorted(fields)}.")
        return cls(**d)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_json(cls, text: str) -> "BertConfig":
        return cls.from_dict(json.loads(text))
