"""Low-rank factorisation: Dense kernels replaced by the product of two thinner ones (truncated SVD).

A Dense kernel W of shape (m, n) is W = U Σ Vᵀ; keeping the k largest singular values gives the best rank-k
approximation W_k = U_k Σ_k V_kᵀ (Eckart-Young), computed as two Dense layers: `NAME_lowrank` (m -> k, no bias)
then `NAME` (k -> n, with the original bias and activation). They cost k(m + n) multiply-adds per token instead of
mn, so a layer gets cheaper only below k = mn / (m + n) (307 for MiniLM's 384 x 1536 FFN kernels, 192 for its 384 x
384 attention kernels); a rank at or above that is skipped, as it would cost more than it saves. Both factors are
plain Dense layers: every TFLite runtime runs them without a special kernel, TFMOT prunes and quantizes them, and the
ranks are part of the model's `BertConfig` (`ranks`), so a factorised model saves, reloads, exports to TF-Hub and
converts like any tfspeed BERT.

The rank of each chosen layer comes from one of:

- `ratio`: each layer keeps this fraction of its multiply-adds (k = ratio * mn / (m + n)). The default, 0.5.
- `rank`: the same rank everywhere.
- `energy`: the smallest k whose singular values hold this fraction of the layer's Σ² (its squared Frobenius norm).
- `budget`: the chosen layers together keep this fraction of their multiply-adds; ranks are bought greedily,
  `multiple_of` at a time, for the layer whose next singular values add the most energy (as a fraction of that
  layer's) per multiply-add.

Ranks are rounded to a multiple of `multiple_of` (8: whole SIMD registers in XNNPACK's GEMM kernels). Σ goes to both
factors as √Σ (`sigma="split"`, the default: the two factors have the same scale), to the first (`"first"`: U Σ, then
Vᵀ with orthonormal rows) or to the second. The product is the same; after distillation on MiniLM neither placement
was consistently better (benchmarks/README.md, Low-rank factorisation).

Example (a tiny random-weight BERT: 2 layers, hidden 16, FFN 64: FFN kernels 16 x 64 break even at rank 12.8):

>>> from tfspeed.models import BertConfig, build_classifier, config_of
>>> model = build_classifier(BertConfig(vocab_size=100, hidden_size=16, num_layers=2, num_heads=2,
...                                     intermediate_size=64, max_positions=16), num_classes=2)
>>> small, report = factorize(model, layers="ffn", rank=8, return_report=True)
>>> dict(config_of(small).ranks)
{'layer_0_intermediate': 8, 'layer_0_output': 8, 'layer_1_intermediate': 8, 'layer_1_output': 8}
>>> report.macs_after / report.macs_before
0.625
"""

from __future__ import annotations

import dataclasses
import heapq
import math
import re
from typing import Optional

import numpy as np

from tfspeed.compat import keras, tf
from tfspeed.config import StageConfig, StrEnum, check_positive_int, check_range, field
from tfspeed.models.bert import (
    LOWRANK_SUFFIX,
    _unwrap,
    build_classifier,
    build_encoder,
    check_plain_bert,
    config_of,
    copy_weights,
    is_bert,
    layer_by_name,
    num_classes_of,
)
from tfspeed.models.config import FACTORIZABLE

GROUPS = {
    "ffn": re.compile(r"layer_\d+_(intermediate|output)"),
    "attention": re.compile(r"layer_\d+_(query|key|value|attention_output)"),
    "qkv": re.compile(r"layer_\d+_(query|key|value)"),
    "pooler": re.compile(r"pooler_dense"),
    "all": FACTORIZABLE,
}
"""Named groups of Dense layers for `layers`; any other entry is a regular expression matched against whole names."""


class Sigma(StrEnum):
    """Where the singular values go: √Σ on both factors, or all on the first (m -> k) or second (k -> n)."""

    SPLIT = "split"
    FIRST = "first"
    SECOND = "second"


def _parse_layers(text) -> tuple:
    return tuple(p.strip() for p in str(text).split(",") if p.strip())


@dataclasses.dataclass
class LowRankConfig(StageConfig):
    """Which Dense layers are factorised, at which rank, and how the factorised model is fine-tuned.

    Args:
        layers: groups (`"ffn"`, `"attention"`, `"qkv"`, `"pooler"`, `"all"`) or regular expressions matching whole
            Dense names (e.g. `"layer_[0-2]_intermediate"`). Defaults to `("ffn",)`.
        ratio: each chosen layer keeps this fraction of its multiply-adds, in (0, 1). Used when `rank`, `energy` and
            `budget` are unset; defaults to `0.5` then.
        rank: one rank for every chosen layer. Defaults to `None`.
        energy: per layer, the smallest rank holding this fraction of Σ², in (0, 1]. Defaults to `None`.
        budget: the chosen layers together keep this fraction of their multiply-adds, in (0, 1); ranks are bought
            greedily by energy per multiply-add. Defaults to `None`.
        multiple_of: ranks are rounded to a multiple of this. Defaults to `8`.
        sigma: `"split"` (√Σ on both factors), `"first"` (U Σ, then Vᵀ) or `"second"`. Defaults to `"split"`.
        epochs: fine-tuning epochs after factorisation (0: none). Defaults to `2`.
        learning_rate: peak learning rate of the fine-tuning. Defaults to `5e-5`.
        batch_size: Defaults to `32`.
        distill: fine-tune by distillation from the unfactorised model (or the chain's teacher in `optimize`).
            Defaults to `True`.
        hidden_weight: with `distill`, weight of the layer-by-layer hidden-state MSE. Defaults to `1.0`.
    """

    layers: tuple = field(("ffn",), parse=_parse_layers, metavar="GROUPS|REGEX",
                          help="comma-separated groups (ffn, attention, qkv, pooler, all) or regular expressions "
                               "matching Dense names")
    ratio: Optional[float] = field(None, help="fraction of each layer's multiply-adds kept, in (0, 1) (default: 0.5 "
                                              "when --rank, --energy and --budget are unset)")
    rank: Optional[int] = field(None, help="one rank for every chosen layer")
    energy: Optional[float] = field(None, help="per layer, the smallest rank holding this fraction of the squared "
                                               "singular values, in (0, 1]")
    budget: Optional[float] = field(None, help="fraction of the chosen layers' multiply-adds kept in total, in (0, 1): "
                                               "ranks go where they keep the most energy")
    multiple_of: int = field(8, help="round ranks to a multiple of this")
    sigma: Sigma = field(Sigma.SPLIT, help="where the singular values go: split (sqrt on both factors), first (U S, "
                                           "then V^T), second")
    epochs: int = field(2, help="fine-tuning epochs after factorisation (0: none)")
    learning_rate: float = field(5e-5, help="peak learning rate of the fine-tuning")
    batch_size: int = field(32, help="batch size")
    distill: bool = field(True, help="fine-tune by distillation from the unfactorised model")
    hidden_weight: float = field(1.0, help="with --distill: weight of the hidden-state MSE to the unfactorised model")

    def validate(self):
        if isinstance(self.layers, str):
            self.layers = _parse_layers(self.layers)
        if not self.layers or not all(isinstance(p, str) and p for p in self.layers):
            raise ValueError(f"Received an invalid value for `layers`, expected groups among {sorted(GROUPS)} or "
                             f"regular expressions of Dense names. Received: layers={self.layers!r}")
        for p in self.layers:
            if p not in GROUPS:
                try:
                    re.compile(p)
                except re.error as e:
                    raise ValueError(f"Received an invalid value for `layers`: {p!r} is neither a group "
                                     f"{sorted(GROUPS)} nor a regular expression ({e}).") from None
        chosen = [k for k in ("ratio", "rank", "energy", "budget") if getattr(self, k) is not None]
        if len(chosen) > 1:
            raise ValueError(f"Received {', '.join(f'{k}={getattr(self, k)!r}' for k in chosen)}: expected one way to "
                             "choose ranks, among `ratio`, `rank`, `energy` and `budget`.")
        check_range("ratio", self.ratio, 0, 1, low_open=True, high_open=True, optional=True,
                    what="a fraction of the multiply-adds kept, in (0, 1) (1 or more saves nothing)")
        if self.rank is not None:
            check_positive_int("rank", self.rank)
        check_range("energy", self.energy, 0, 1, low_open=True, optional=True,
                    what="a fraction of the squared singular values kept, in (0, 1]")
        check_range("budget", self.budget, 0, 1, low_open=True, high_open=True, optional=True,
                    what="a fraction of the chosen layers' multiply-adds kept, in (0, 1)")
        check_positive_int("multiple_of", self.multiple_of)
        if not isinstance(self.epochs, int) or isinstance(self.epochs, bool) or self.epochs < 0:
            raise ValueError(f"Received an invalid value for `epochs`, expected an integer >= 0. "
                             f"Received: epochs={self.epochs!r}")
        check_range("learning_rate", self.learning_rate, 0, low_open=True)
        check_positive_int("batch_size", self.batch_size)
        check_range("hidden_weight", self.hidden_weight, 0)

    @property
    def method(self) -> str:
        """How ranks are chosen: "ratio", "rank", "energy" or "budget"."""
        return next((k for k in ("rank", "energy", "budget") if getattr(self, k) is not None), "ratio")

    @property
    def effective_ratio(self) -> float:
        return 0.5 if self.ratio is None else float(self.ratio)


@dataclasses.dataclass
class LayerReport:
    """One chosen Dense: its kernel shape, the rank given (None: skipped), what it keeps and what it costs.

    `energy` is the fraction of Σ² kept, `error` the relative reconstruction error ‖W − W_k‖_F / ‖W‖_F,
    `macs_before` / `macs_after` the multiply-adds per token.
    """

    name: str
    shape: tuple
    rank: Optional[int]
    energy: float
    error: float
    macs_before: int
    macs_after: int
    skipped: Optional[str] = None

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "shape": list(self.shape)}


@dataclasses.dataclass
class FactorizeReport:
    """Per-layer reports, and totals over the chosen layers and over every Dense of the encoder (per token)."""

    method: str
    layers: list
    macs_before: int
    macs_after: int
    encoder_macs_before: int
    encoder_macs_after: int

    @property
    def factorised(self) -> list:
        return [r for r in self.layers if r.rank is not None]

    def to_dict(self) -> dict:
        return {"method": self.method, "macs_before": self.macs_before, "macs_after": self.macs_after,
                "macs_kept": self.macs_after / self.macs_before,
                "encoder_macs_before": self.encoder_macs_before, "encoder_macs_after": self.encoder_macs_after,
                "encoder_macs_kept": self.encoder_macs_after / self.encoder_macs_before,
                "layers": [r.to_dict() for r in self.layers]}

    def format(self) -> str:
        """A text table, one row per chosen layer."""
        rows = [f"{'layer':<28} {'shape':>11} {'rank':>5} {'energy':>7} {'error':>7} {'MACs before':>12} "
                f"{'after':>9}"]
        for r in self.layers:
            rank = str(r.rank) if r.rank is not None else "-"
            rows.append(f"{r.name:<28} {r.shape[0]:>5}x{r.shape[1]:<5} {rank:>5} {r.energy:>7.4f} {r.error:>7.4f} "
                        f"{r.macs_before:>12,} {r.macs_after:>9,}" + (f"  skipped: {r.skipped}" if r.skipped else ""))
        rows.append(f"chosen layers: {self.macs_after:,} of {self.macs_before:,} multiply-adds per token "
                    f"({self.macs_after / self.macs_before:.1%}); encoder Dense layers: "
                    f"{self.encoder_macs_after / self.encoder_macs_before:.1%}")
        return "\n".join(rows)


# ======================================================================================================================
# Choosing layers and ranks
# ======================================================================================================================

def _check_model(model):
    check_plain_bert(model, "has no Dense layers to factorise")


def dense_layers(model) -> list:
    """Names of the encoder Dense layers of a native BERT that factorisation can replace (in model order)."""
    return [l.name for l in model.layers if isinstance(_unwrap(l), keras.layers.Dense)
            and FACTORIZABLE.fullmatch(_unwrap(l).name)]


def select_layers(model, patterns) -> list:
    """The encoder Dense names matched by `patterns` (groups or regular expressions); a pattern matching none is an
    error."""
    names = dense_layers(model)
    chosen = set()
    for p in ([patterns] if isinstance(patterns, str) else patterns):
        regex = GROUPS.get(p) or re.compile(p)
        hits = [n for n in names if regex.fullmatch(n)]
        if not hits:
            raise ValueError(f"Received an invalid value for `layers`: {p!r} matches no Dense layer of the encoder. "
                             f"Expected a group among {sorted(GROUPS)} or a regular expression matching names such as "
                             f"{names[:2] + names[-1:]}. Received: layers={tuple(patterns)!r}")
        chosen.update(hits)
    return [n for n in names if n in chosen]


def _round(k: float, multiple: int) -> int:
    return max(multiple, int(round(k / multiple)) * multiple)


def _energy_rank(s2: np.ndarray, energy: float, multiple: int) -> int:
    cumulative = np.cumsum(s2) / max(float(s2.sum()), 1e-30)
    k = int(np.searchsorted(cumulative, energy - 1e-12) + 1)
    return int(math.ceil(k / multiple) * multiple)


def _budget_ranks(spectra: dict, shapes: dict, budget: float, multiple: int) -> dict:
    """Greedy ranks: start every layer at `multiple`, then add `multiple` at a time where the next singular values add
    the largest fraction of that layer's energy per multiply-add, while the chosen layers stay within `budget` of
    their multiply-adds. A layer never reaches the rank where it would cost as much as its whole kernel; one that
    cannot save even at `multiple` keeps its whole kernel (and is reported as skipped)."""
    total = sum(m * n for m, n in shapes.values())
    target = budget * total
    limit = {name: min(min(m, n), (m * n - 1) // (m + n) // multiple * multiple) for name, (m, n) in shapes.items()}
    ranks = {name: multiple for name in spectra}
    eligible = [name for name in spectra if limit[name] >= multiple]
    cost = sum(multiple * sum(shapes[n]) for n in eligible) + sum(
        shapes[n][0] * shapes[n][1] for n in spectra if n not in eligible)
    if cost > target:
        raise ValueError(f"Received an invalid value for `budget`: even rank {multiple} on every chosen layer keeps "
                         f"{cost / total:.1%} of their multiply-adds, expected a budget at least that. "
                         f"Received: budget={budget!r}")

    def gain(name):
        s2, k = spectra[name], ranks[name]
        return float(s2[k:k + multiple].sum() / max(float(s2.sum()), 1e-30)) / (multiple * sum(shapes[name]))

    heap = [(-gain(n), n) for n in eligible if ranks[n] < limit[n]]
    heapq.heapify(heap)
    while heap:
        _, name = heapq.heappop(heap)
        step = min(multiple, limit[name] - ranks[name])
        extra = step * sum(shapes[name])
        if cost + extra > target:
            continue  # too dear: a cheaper layer may still fit
        ranks[name] += step
        cost += extra
        if ranks[name] < limit[name]:
            heapq.heappush(heap, (-gain(name), name))
    return ranks


def _chosen_ranks(config: LowRankConfig, spectra: dict, shapes: dict) -> dict:
    multiple = config.multiple_of
    if config.method == "budget":
        return _budget_ranks(spectra, shapes, float(config.budget), multiple)
    ranks = {}
    for name, (m, n) in shapes.items():
        if config.method == "rank":
            ranks[name] = int(config.rank)
        elif config.method == "energy":
            ranks[name] = _energy_rank(spectra[name], float(config.energy), multiple)
        else:
            ranks[name] = _round(config.effective_ratio * m * n / (m + n), multiple)
    return ranks


def _factors(kernel: np.ndarray, rank: int, sigma: Sigma):
    u, s, vt = np.linalg.svd(kernel.astype(np.float64), full_matrices=False)
    u, s, vt = u[:, :rank], s[:rank], vt[:rank]
    if sigma == Sigma.SPLIT:
        root = np.sqrt(s)
        return (u * root).astype(np.float32), (root[:, None] * vt).astype(np.float32)
    if sigma == Sigma.FIRST:
        return (u * s).astype(np.float32), vt.astype(np.float32)
    return u.astype(np.float32), (s[:, None] * vt).astype(np.float32)


# ======================================================================================================================
# Factorising
# ======================================================================================================================

def plan(model: keras.Model, config=None, **overrides) -> FactorizeReport:
    """The ranks `factorize` would give, with the energy kept, the reconstruction error and the multiply-adds of every
    chosen layer; the model is not changed. Settings as `factorize`."""
    config = LowRankConfig.resolve(config, **overrides)
    _check_model(model)
    chosen = select_layers(model, config.layers)
    existing = dict(config_of(model).ranks)
    already = [n for n in chosen if n in existing or n.endswith(LOWRANK_SUFFIX)]
    if already:
        raise ValueError(f"Received an invalid value for `layers`: {already[:4]} are already factorised. Choose other "
                         "layers, or factorise the unfactorised model again.")
    kernels = {n: _unwrap(layer_by_name(model, n)).kernel.numpy() for n in chosen}
    shapes = {n: tuple(int(d) for d in k.shape) for n, k in kernels.items()}
    spectra = {n: np.linalg.svd(k.astype(np.float64), compute_uv=False) ** 2 for n, k in kernels.items()}
    ranks = _chosen_ranks(config, spectra, shapes)
    reports = []
    for name in chosen:
        (m, n), s2, k = shapes[name], spectra[name], ranks[name]
        total = max(float(s2.sum()), 1e-30)
        skipped = None
        if k >= min(m, n):
            skipped = f"rank {k} >= min{(m, n)} = {min(m, n)}: a full-rank factorisation saves nothing"
        elif k * (m + n) >= m * n:
            skipped = (f"rank {k} costs {k * (m + n):,} multiply-adds >= {m * n:,} for the whole kernel "
                       f"(saves only below rank {m * n / (m + n):.1f})")
        if skipped:
            reports.append(LayerReport(name, (m, n), None, 1.0, 0.0, m * n, m * n, skipped))
        else:
            kept = float(s2[:k].sum()) / total
            reports.append(LayerReport(name, (m, n), k, kept, math.sqrt(max(0.0, 1.0 - kept)), m * n, k * (m + n)))
    before = sum(r.macs_before for r in reports)
    after = sum(r.macs_after for r in reports)
    encoder_before = dense_macs(model)
    return FactorizeReport(config.method, reports, before, after, encoder_before, encoder_before - before + after)


def factorize(model: keras.Model, config=None, *, return_report: bool = False, **overrides):
    """A new native BERT whose chosen Dense layers are each replaced by two, initialised from the truncated SVD.

    Args:
        model: a native tfspeed BERT classifier or encoder (no TFMOT wrappers). It is not changed.
        config: a `LowRankConfig` (or its dict). Defaults to `None` (`LowRankConfig()`: the FFN layers at half their
            multiply-adds).
        return_report: also return the `FactorizeReport` (rank, energy kept, reconstruction error, multiply-adds of
            every chosen layer). Defaults to `False`.
        **overrides: `LowRankConfig` settings replacing the config's: `layers` (groups `"ffn"`, `"attention"`, `"qkv"`,
            `"pooler"`, `"all"` or regular expressions), one of `ratio` / `rank` / `energy` / `budget`,
            `multiple_of` (`8`), `sigma` (`"split"`).

    Returns:
        The factorised model (its `BertConfig.ranks` records each rank), or `(model, report)`. Layers whose rank would
        not save multiply-adds are left whole and reported as skipped; if every chosen layer is skipped, a ValueError
        says so.
    """
    config = LowRankConfig.resolve(config, **overrides)
    report = plan(model, config)
    if not report.factorised:
        reasons = "; ".join(f"{r.name}: {r.skipped}" for r in report.layers[:3])
        raise ValueError(f"No chosen layer gets cheaper with these settings ({config.method}), so nothing would be "
                         f"factorised: {reasons}. Choose a smaller `ratio` / `rank` / `energy` or `budget`.")
    base = config_of(model)
    ranks = {**dict(base.ranks), **{r.name: r.rank for r in report.factorised}}
    new_config = base.replace(ranks=ranks)
    seq_length = None if model.inputs[0].shape[1] is None else int(model.inputs[0].shape[1])
    with tf.distribute.get_strategy().scope():
        if isinstance(model.output, dict):
            new = build_encoder(new_config, seq_length=seq_length, name=model.name)
        else:
            dropout = float(_unwrap(layer_by_name(model, "classifier_dropout")).rate)
            new = build_classifier(new_config, num_classes=num_classes_of(model), seq_length=seq_length,
                                   classifier_dropout=dropout, name=model.name)
    factorised = {r.name for r in report.factorised}
    copy_weights(model, new, skip=factorised)
    for r in report.factorised:
        kernel, bias = [w.numpy() for w in _unwrap(layer_by_name(model, r.name)).weights]
        first, second = _factors(kernel, r.rank, config.sigma)
        layer_by_name(new, r.name + LOWRANK_SUFFIX).set_weights([first])
        layer_by_name(new, r.name).set_weights([second, bias])
    return (new, report) if return_report else new


def is_factorised(model) -> bool:
    return bool(is_bert(model) and config_of(model).ranks)


def dense_macs(model, group: str = "all") -> int:
    """Multiply-adds per token of the encoder Dense layers of a native BERT in `group` (a key of `GROUPS`; both
    factors of a factorised layer count)."""
    pattern = GROUPS[group]
    return int(sum(np.prod(_unwrap(l).kernel.shape) for l in model.layers
                   if isinstance(_unwrap(l), keras.layers.Dense) and pattern.fullmatch(
                       _unwrap(l).name.removesuffix(LOWRANK_SUFFIX))))


__all__ = ["FactorizeReport", "GROUPS", "LayerReport", "LowRankConfig", "Sigma", "dense_layers", "dense_macs",
           "factorize", "is_factorised", "plan", "select_layers"]
