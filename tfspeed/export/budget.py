"""Accuracy-driven choice of a TFLite configuration: the fastest one within a maximum accuracy drop.

Candidates (`modes.DEFAULT_CANDIDATES`): full int8, int8 with LayerNorm statistics / softmax / GELU float, the same
with BATCH_MATMUL float too, dynamic range, float16, float32. With `order="measured"` (the default) every candidate
is converted and its latency measured on this machine, then they are evaluated fastest first; with `order="known"`
they are evaluated in the listed order (the usual one on mobile ARM CPUs, where integer kernels are fastest) and
only as many are converted as needed. Validation accuracy is compared with the Keras model's.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Optional, Sequence

import numpy as np

from tfspeed.export import calibration as _cal
from tfspeed.export import ops as _ops
from tfspeed.export.convert import ConversionError, Converter
from tfspeed.export.modes import Mode, candidates_by_name
from tfspeed.export.parity import TFLiteClassifier, keras_logits

ORDERS = ("measured", "known")
OBJECTIVES = ("latency", "size")


@dataclasses.dataclass
class BudgetRecord:
    """What `export_within_budget` tried and what it chose.

    Attributes:
        max_drop: the accuracy budget (a fraction: 0.01 = 1 point).
        baseline_accuracy: the Keras model's validation accuracy.
        order: `"measured"` (by latency measured here) or `"known"` (the candidates' listed order).
        latency_source: what measured latency (`"tfspeed.profile"` or `"quick-median"`), or `None`.
        seq_length, num_examples: of the validation run.
        chosen: name of the chosen candidate, `None` if none was within budget.
        tried: one dict per candidate, in the order tried: `name`, `mode`, `float_ops`, `status`
            (`"within_budget"`, `"over_budget"`, `"screened_out"`, `"failed"`, `"not_evaluated"`), `accuracy`, `drop`,
            `size_bytes`, `gzip_bytes`, `latency_ms`, `fell_back` (float op types with counts), `int8` (FC/BMM
            counts), `error`. With `integer_only`, a candidate with float ops is `"not_integer"`.
        objective: `"latency"` or `"size"`: what the choice minimized.
    """

    max_drop: float
    baseline_accuracy: float
    order: str
    latency_source: Optional[str]
    seq_length: int
    num_examples: int
    chosen: Optional[str] = None
    objective: str = "latency"
    tried: list = dataclasses.field(default_factory=list)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_table(self) -> str:
        head = (f"Accuracy budget: max drop {100 * self.max_drop:.2f} points from Keras {self.baseline_accuracy:.4f} "
                f"({self.num_examples} validation examples, seq {self.seq_length}, "
                f"{'smallest' if self.objective == 'size' else 'order: ' + self.order}"
                f"{', latency: ' + self.latency_source if self.latency_source else ''})")
        lines = [head, f"{'candidate':<16} {'status':<14} {'accuracy':>8} {'drop':>7} {'size MB':>8} {'gzip MB':>8} "
                       f"{'ms':>7}  fell back"]
        for t in self.tried:
            acc = f"{t['accuracy']:.4f}" if t.get("accuracy") is not None else "-"
            drop = f"{100 * t['drop']:+.2f}" if t.get("drop") is not None else "-"
            if t.get("screen_drop") is not None:  # screened out: its drop on the sample
                drop = f"~{100 * t['screen_drop']:+.1f}"
            size = f"{t['size_bytes'] / 1e6:.2f}" if t.get("size_bytes") else "-"
            gz = f"{t['gzip_bytes'] / 1e6:.2f}" if t.get("gzip_bytes") else "-"
            ms = f"{t['latency_ms']:.2f}" if t.get("latency_ms") is not None else "-"
            fell = ", ".join(f"{k} x{v}" for k, v in (t.get("fell_back") or {}).items()) or "-"
            if t.get("error"):
                fell = "ERROR: " + t["error"][:80]
            mark = "*" if t["name"] == self.chosen else " "
            lines.append(f"{mark}{t['name']:<15} {t['status']:<14} {acc:>8} {drop:>7} {size:>8} {gz:>8} {ms:>7}  "
                         f"{fell}")
        lines.append(f"chosen: {self.chosen or 'none within budget'}")
        return "\n".join(lines)


class BudgetError(RuntimeError):
    """No candidate met the budget; `.record` holds what was tried."""

    def __init__(self, message, record: BudgetRecord):
        super().__init__(message)
        self.record = record


SCREEN_MARGIN = 0.05  # a candidate this far past the budget on the screening sample is not evaluated in full

def _check_max_drop(max_drop):
    if isinstance(max_drop, bool) or not isinstance(max_drop, (int, float)) or not 0 <= max_drop < 1:
        raise ValueError(f"Received an invalid value for `max_drop`, expected a fraction in [0, 1) (0.01 = 1 accuracy "
                         f"point). Received: max_drop={max_drop!r}")
    return float(max_drop)


def measure_latencies(models: dict, row: dict, runs: int = 20, num_threads: int = 1):
    """`({name: median ms}, source)`: through `tfspeed.profile.profile_models` (interleaved runs) when it works, else
    a quick median over `runs` interpreter invokes of each model."""
    try:
        from tfspeed.profile import profile_models

        names = list(models)
        result = profile_models([models[n] for n in names], threads=[num_threads], runs=max(runs, 2), warmup=3,
                                inputs=dict(row), names=names, isolate=False, progress=False)
        out = {r["name"]: float(r["latency_ms"]["median"]) for r in result.models}
        if set(out) == set(names):
            return out, "tfspeed.profile"
    except Exception:  # noqa: BLE001 - the profiler is optional here; fall back to a plain timer
        pass
    latencies = {n: TFLiteClassifier(d, num_threads).median_latency_ms(row, runs=runs) for n, d in models.items()}
    return latencies, "quick-median"


def export_within_budget(model, validation_split, max_drop: float = 0.01, calibration=None,
                         candidates: Optional[Sequence] = None, order: str = "measured",
                         seq_length: Optional[int] = None,
                         num_calibration_samples: Optional[int] = _cal.DEFAULT_NUM_SAMPLES, vocab=None,
                         latency_runs: int = 20, num_threads: int = 1, evaluate_all: bool = False, seed: int = 0,
                         verbose: bool = False, screen: Optional[int] = 300, objective: str = "latency",
                         integer_only: bool = False):
    """The fastest (or smallest) TFLite configuration whose validation accuracy is within `max_drop` of the Keras
    model's.

    Args:
        model: a tf_keras classifier or a tfspeed model directory (see `convert`), or a `Converter` (then
            `calibration`, `seq_length`, `num_calibration_samples`, `vocab` and `seed` are the Converter's).
        validation_split: a labelled `EncodedSplit` the accuracy is measured on.
        max_drop: largest accepted accuracy drop, as a fraction (0.01 = 1 point). Defaults to `0.01`.
        calibration: calibration data for the int8 candidates (see `convert`). Defaults to `None`, which skips the
            int8 candidates (recorded as failed) unless the model is QAT.
        candidates: names from `DEFAULT_CANDIDATES` (`"int8"`, `"int8-mixed"`, `"int8-mixed+bmm"`, `"dynamic"`,
            `"float16"`, `"float32"`) or `Candidate`s. Defaults to all of them.
        order: `"measured"`: convert all, order by latency measured on this machine (median of `latency_runs`),
            evaluate fastest first. `"known"`: evaluate in the listed order, converting lazily. Defaults to
            `"measured"`.
        seq_length: see `convert`. num_calibration_samples: Defaults to `200`. vocab: see `convert`.
        latency_runs: timed runs per candidate. Defaults to `20`.
        num_threads: interpreter threads for evaluation and timing. Defaults to `1`.
        evaluate_all: evaluate every candidate, not only up to the first within budget. Defaults to `False`.
        seed: calibration sample seed (and of the screening sample). Defaults to `0`.
        verbose: print progress. Defaults to `False`.
        screen: each candidate is first run on this many validation examples (a seeded sample); one that loses
            more than `max_drop` + 5 points there is `"screened_out"` without the full evaluation (on 300 examples
            a candidate within the budget is that far below with a probability under 1%). `None` evaluates every
            candidate in full; so does `evaluate_all`. Defaults to `300`.
        objective: `"latency"` (the fastest within the budget) or `"size"` (the smallest file within it: every
            candidate is converted and they are evaluated smallest first). Defaults to `"latency"`.
        integer_only: only candidates whose every op computes in integers (`ops.integer_report`) may be chosen;
            the others are recorded as `"not_integer"`. Defaults to `False`.

    Returns:
        `(tflite_bytes, BudgetRecord)`.

    Raises:
        BudgetError: no candidate was within budget (`.record` says what was tried).

    Example (a tiny random-weight BERT and a single float32 candidate, which keeps the Keras accuracy):

    >>> from tfspeed.data import EncodedSplit
    >>> from tfspeed.hub import sample_inputs
    >>> from tfspeed.models import BertConfig, build_classifier
    >>> config = BertConfig(vocab_size=100, hidden_size=16, num_layers=2, num_heads=2, intermediate_size=32,
    ...                     max_positions=16)
    >>> model = build_classifier(config, num_classes=2)
    >>> validation = EncodedSplit(sample_inputs(config, batch=8, seq_length=8), [0, 1] * 4)
    >>> data, record = export_within_budget(model, validation, max_drop=0.01, candidates=["float32"], order="known",
    ...                                     seq_length=8, latency_runs=3)
    >>> record.chosen, record.tried[0]["status"]
    ('float32', 'within_budget')

    The real use, on a fine-tuned model directory with the int8 candidates calibrated on real text (each candidate
    is converted, timed and evaluated: minutes):

    ```python
    data, record = export_within_budget("runs/teacher", encoded.validation, max_drop=0.01,
                                        calibration="rotten_tomatoes", candidates=["int8", "int8-mixed", "dynamic"])
    print(record.to_table())
    save_tflite(data, "bert_budget.tflite")
    ```
    """
    max_drop = _check_max_drop(max_drop)
    if order not in ORDERS:
        raise ValueError(f"Received an invalid value for `order`, expected one of {ORDERS}. Received: order={order!r}")
    if objective not in OBJECTIVES:
        raise ValueError(f"Received an invalid value for `objective`, expected one of {OBJECTIVES}. "
                         f"Received: objective={objective!r}")
    cands = candidates_by_name(candidates)
    log = print if verbose else (lambda *a, **k: None)
    conv = model if isinstance(model, Converter) else Converter(model, seq_length, calibration,
                                                                  num_calibration_samples, vocab, seed)
    if conv.qat:  # a QAT model quantizes with its own ranges; int8-mixed does not apply
        cands = tuple(c for c in cands if c.mode != Mode.INT8_MIXED) or cands
    ref = keras_logits(conv.keras_model, validation_split, conv.eval_length)
    labels = np.asarray(validation_split.labels)
    baseline = float(np.mean(ref.argmax(-1) == labels))
    record = BudgetRecord(max_drop=max_drop, baseline_accuracy=baseline, order=order, latency_source=None,
                          seq_length=conv.seq_length, num_examples=int(len(labels)), objective=objective)
    log(f"[budget] Keras validation accuracy {baseline:.4f}; max drop {100 * max_drop:.2f} points")
    entries = {c.name: {**c.to_dict(), "status": "not_evaluated", "accuracy": None, "drop": None, "size_bytes": None,
                        "gzip_bytes": None, "latency_ms": None, "fell_back": None, "int8": None, "error": None}
               for c in cands}
    models = {}

    def build(c):
        if c.name in models or entries[c.name]["error"]:
            return models.get(c.name)
        t = time.perf_counter()
        try:
            if c.mode.needs_calibration and conv.calibration is None and not conv.qat:
                raise ValueError("needs `calibration` (real text) for full int8")
            data = conv.convert(c)
        except (ConversionError, ValueError, ImportError) as e:
            entries[c.name].update(status="failed", error=str(e))
            log(f"[budget] {c.name}: failed: {e}")
            return None
        hist = _ops.op_histogram(data)
        entries[c.name].update(**_ops.sizes(data), fell_back=_ops.fell_back(hist), int8=hist["int8"],
                               convert_seconds=round(time.perf_counter() - t, 2))
        if integer_only:
            integer = _ops.integer_report(data)
            if not integer["fully_integer"]:
                entries[c.name].update(status="not_integer", error="float ops: " + ", ".join(
                    f"{k} x{v}" for k, v in integer["float_ops"].items()))
                log(f"[budget] {c.name}: not integer-only ({entries[c.name]['error']})")
                return None
        models[c.name] = data
        log(f"[budget] {c.name}: converted, {len(data) / 1e6:.2f} MB")
        return data

    from tfspeed.export.calibration import fit_features

    row = {k: v[:1] for k, v in fit_features(validation_split.features, conv.eval_length,
                                             "validation_split").items()}
    if order == "measured" or objective == "size":
        for c in cands:
            build(c)
        if models:
            latencies, record.latency_source = measure_latencies(models, row, latency_runs, num_threads)
            for name, ms in latencies.items():
                entries[name]["latency_ms"] = ms
        key = "size_bytes" if objective == "size" else "latency_ms"
        ranked = sorted((c for c in cands if c.name in models), key=lambda c: entries[c.name][key])
        sequence = ranked + [c for c in cands if c.name not in models]
    else:
        sequence = list(cands)

    screen_idx = None
    if screen and not evaluate_all and len(labels) > 2 * screen:
        screen_idx = np.sort(np.random.default_rng(seed).choice(len(labels), screen, replace=False))
    chosen = None
    for c in sequence:
        data = build(c)
        if data is None:
            continue
        e = entries[c.name]
        runner = TFLiteClassifier(data, num_threads)
        if e["latency_ms"] is None:
            e["latency_ms"] = runner.median_latency_ms(row, runs=latency_runs)
            record.latency_source = "quick-median"
        if screen_idx is not None:  # a sample first: a candidate far over the budget is not evaluated in full
            sample = runner.logits({k: v[screen_idx] for k, v in validation_split.features.items()})
            drop = float(np.mean(ref[screen_idx].argmax(-1) == labels[screen_idx])
                         - np.mean(sample.argmax(-1) == labels[screen_idx]))
            if drop > max_drop + SCREEN_MARGIN:
                e.update(status="screened_out", screen_drop=drop, screen_examples=int(len(screen_idx)))
                log(f"[budget] {c.name}: {100 * drop:.1f} points below on {len(screen_idx)} examples: screened out")
                continue
        logits = runner.logits(validation_split.features)
        acc = float(np.mean(logits.argmax(-1) == labels))
        e.update(accuracy=acc, drop=baseline - acc,
                 status="within_budget" if baseline - acc <= max_drop + 1e-12 else "over_budget")
        log(f"[budget] {c.name}: accuracy {acc:.4f} (drop {100 * (baseline - acc):+.2f} points), "
            f"{e['latency_ms']:.2f} ms: {e['status']}")
        if e["status"] == "within_budget" and chosen is None:
            chosen = c.name
            if not evaluate_all:
                break
    record.tried = [entries[c.name] for c in sequence] + [entries[c.name] for c in cands if c not in sequence]
    record.chosen = chosen
    if chosen is None:
        raise BudgetError(f"No candidate kept the accuracy within {100 * max_drop:.2f} points of "
                          f"{baseline:.4f}.\n{record.to_table()}", record)
    return models[chosen], record
