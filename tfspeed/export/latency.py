"""Latency on real texts: each text fed at its own length to a dynamic-length file, padded to a fixed file's length,
models interleaved text by text.

`profile_texts(models, texts)` is what a user sees on their own inputs, where `tfspeed profile`'s default (random
ids at a fixed length) is what a padded benchmark sees. Each model tokenizes the texts with its own vocabulary (the
one in its metadata, or `vocab`): a dynamic-length .tflite (inputs [1, -1]) runs `[CLS] text [SEP]` at that length (at
most `max_length` tokens: longer texts are cut and counted); a fixed-length one pads or cuts to its length (and says
so); a TF SavedModel or Keras model with a fixed signature likewise. Inputs are matched by role, so files that name
them as Hugging Face does (`input_ids`, `attention_mask`, `token_type_ids`) run beside tfspeed's.

Timed per text: setting the inputs (with the resize and re-allocation a new length needs) and the invoke, which is
what an app pays per text. Reported per model: mean, median, p90, p99 and max over the texts, tokens per second (real
tokens, padding excluded), the length each text ran at, and, for .tflite files, the predicted class per text (to
check that a dynamic file predicts what the padded one does).

Example:

```python
from tfspeed.export.latency import profile_texts, load_texts

texts = load_texts("rotten_tomatoes:test")
result = profile_texts(["model_dynamic_len.tflite", "model_128.tflite"], texts, threads=1)
print(result["models"][0]["latency_ms"]["mean"], result["ratios"]["mean"])
```
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from tfspeed.export.buckets import bucket_signatures
from tfspeed.profile.inputs import ROLE_ALIASES
from tfspeed.profile.runners import Format, TFLiteRunner, make_runner
from tfspeed.profile.stats import summarize

# The three BERT inputs by role: the profiler's names of each (tfspeed / TF-Hub, then Hugging Face), and short forms.
ROLES = {"ids": ROLE_ALIASES[0] + ("ids",), "mask": ROLE_ALIASES[1] + ("mask",), "segments": ROLE_ALIASES[2]}


def load_texts(source, column: str = "text", encoding: str = "utf-8") -> list:
    """Texts from `DATASET:SPLIT` (e.g. `rotten_tomatoes:test`, or `reviews.csv:test`) or a file (one text per
    line, or a column of a .csv / .tsv / .jsonl file)."""
    from tfspeed.data import load_dataset
    from tfspeed.data.texts import read_texts

    source = str(source)
    name, _, split = source.rpartition(":")
    if name and split in ("train", "validation", "test"):
        return list(load_dataset(name).split(split).texts)
    return read_texts(source, column, encoding)


def _role(name: str) -> Optional[str]:
    lowered = name.lower()
    for role, names in ROLES.items():  # exact names first
        if lowered in names:
            return role
    for role in ("segments", "mask", "ids"):  # then as part of a longer name ("serving_default_input_type_ids:0")
        if any(n in lowered for n in ROLES[role][:2]):
            return role
    return None


def _vocab_of(model, vocab):
    if vocab is not None:
        return vocab
    if isinstance(model, (str, Path)) and Path(model).suffix == ".tflite":
        from tfspeed.export.metadata import read_metadata

        meta = read_metadata(model)
        if meta is not None:
            return list(meta.vocab)
    path = Path(str(model))
    for candidate in (path / "vocab.txt", path.parent / "vocab.txt", path.parent.parent / "vocab.txt"):
        if candidate.is_file():
            return candidate
    raise ValueError(f"Expected a .tflite with metadata, a model directory with a vocab.txt, or `vocab` to tokenize "
                     f"the texts for {str(model)!r}. Received: none of them.")


class _Model:
    """One model, its inputs by role, and its tokenized texts."""

    def __init__(self, model, name, vocab, threads, xnnpack, max_length, pad_length, texts, buckets=(), pairs=None):
        from tfspeed.data import Tokenizer

        self.runner = make_runner(model, threads=threads, xnnpack=xnnpack, name=name, isolate=False)
        self.runner.open()
        specs = self.runner.specs()
        self.names = {}
        for spec in specs:
            role = _role(spec.name)
            if role is None or role in self.names:
                raise ValueError(f"Expected the inputs of a BERT classifier (ids, mask, segment ids) in {name}. "
                                 f"Received inputs: {[s.name for s in specs]}")
            self.names[role] = spec.name
        if set(self.names) != set(ROLES):
            raise ValueError(f"Expected ids, mask and segment-id inputs in {name}. Received: "
                             f"{[s.name for s in specs]}")
        length = specs[0].shape[1] if len(specs[0].shape) == 2 else -1
        self.dynamic = length is None or length < 0
        self.length = max_length if self.dynamic else int(length)
        if self.dynamic and not isinstance(self.runner, TFLiteRunner):
            self.length = pad_length  # a Keras model with a None axis: fed padded, as TF serving would be
            self.dynamic = False
        self.buckets = None
        own = bucket_signatures(self.runner.data) if isinstance(self.runner, TFLiteRunner) else ()
        if own:  # a bucket file (`export_buckets`): its own fixed-length signatures, one interpreter
            from tfspeed.export.buckets import BucketRunner

            self.dynamic, self.length = True, min(own[-1], max_length)
            self.buckets = BucketRunner(self.runner.data, num_threads=threads)
        elif self.dynamic and buckets:
            from tfspeed.export.buckets import BucketRunner, check_buckets

            kept = check_buckets(buckets, self.length)  # the last bucket is max_length: no text is cut before it
            kept = kept + (self.length,) if kept[-1] < self.length else kept
            self.buckets = BucketRunner(self.runner.data, kept, threads,
                                        inputs={"input_word_ids": self.names["ids"], "input_mask": self.names["mask"],
                                                "input_type_ids": self.names["segments"]})
            self._row = None
        tokenizer = Tokenizer(_vocab_of(model, vocab), seq_length=self.length)
        self.features = tokenizer.encode(texts, pairs)
        self.token_counts = tokenizer.token_counts(texts, pairs)
        self.truncated = int((self.token_counts > self.length - 2).sum())
        self.lengths = self.features["input_mask"].sum(1).astype(int)

    def run(self, i: int):
        """Runs text `i` (untimed setup excluded); returns the output of a .tflite, else None."""
        if self.buckets is not None:
            n = self.lengths[i]
            f = self.features
            row = {k: f[k][i:i + 1, :n] for k in ("input_word_ids", "input_mask", "input_type_ids")}
            start = time.perf_counter()
            out = self.buckets(row)
            return time.perf_counter() - start, out
        feed = self.feed(i)
        start = time.perf_counter()
        self.runner.allocate(feed)
        self.runner.invoke()
        elapsed = time.perf_counter() - start
        return elapsed, self.output()

    def feed(self, i: int) -> dict:
        n = self.lengths[i] if self.dynamic else self.length
        f = self.features
        return {self.names["ids"]: f["input_word_ids"][i:i + 1, :n], self.names["mask"]: f["input_mask"][i:i + 1, :n],
                self.names["segments"]: f["input_type_ids"][i:i + 1, :n]}

    def output(self):
        if not isinstance(self.runner, TFLiteRunner):
            return None
        it = self.runner.interpreter
        return it.get_tensor(it.get_output_details()[0]["index"])[0]


class _ExitsModel:
    """An early-exit model (`tfspeed.export.exits.ExitRunner`, or an exits model directory): each text runs segment
    by segment until an exit is confident, so its cost depends on the text even at a fixed length."""

    def __init__(self, runner, name, vocab, max_length, texts, buckets=(), pairs=None, lower_case=True):
        from tfspeed.data import Tokenizer

        self.runner, self.format = runner, "tflite (early exits)"
        self.dynamic = runner.dynamic
        self.buckets = None
        if runner.dynamic and buckets and runner.buckets is None:
            raise ValueError(f"Expected the early-exit runner of {name} to be made with its buckets "
                             "(`runner_of(..., buckets=...)`). Received: a runner of exact lengths.")
        self.length = max_length if runner.dynamic else int(
            runner.runners[0].get_input_details()["input_word_ids"]["shape"][-1])
        tokenizer = Tokenizer(vocab, seq_length=self.length, lower_case=lower_case)
        self.features = tokenizer.encode(texts, pairs)
        self.token_counts = tokenizer.token_counts(texts, pairs)
        self.truncated = int((self.token_counts > self.length - 2).sum())
        self.lengths = self.features["input_mask"].sum(1).astype(int)
        self.layers_used = np.zeros(len(texts))
        depth = list(runner.layers) + [runner.num_layers]
        self._depth = np.asarray(depth)

    def run(self, i: int):
        row = {k: v[i:i + 1] for k, v in self.features.items()}
        start = time.perf_counter()
        probs, index = self.runner.run(row)
        elapsed = time.perf_counter() - start
        self.layers_used[i] = self._depth[index]
        return elapsed, probs


def _load(model, name, vocab, threads, xnnpack, max_length, pad_length, texts, buckets, pairs):
    from tfspeed.export.exits import ExitRunner, is_exits_dir, runner_of

    if is_exits_dir(model) or isinstance(model, ExitRunner):
        lower_case = True
        if is_exits_dir(model):
            from tfspeed import artifacts

            info = artifacts.load_info(model)
            vocab, lower_case = vocab or info.vocab_path, info.lower_case
            model = runner_of(model, threads, buckets=buckets or None)
        if vocab is None:
            raise ValueError(f"Expected `vocab` for the early-exit runner {name}. Received: none.")
        return _ExitsModel(model, name, vocab, max_length, texts, buckets, pairs, lower_case)
    return _Model(model, name, vocab, threads, xnnpack, max_length, pad_length, texts, buckets, pairs)


def profile_texts(models: Sequence, texts: Sequence[str], names: Optional[Sequence[str]] = None, vocab=None,
                  threads: int = 1, xnnpack: bool = True, max_length: int = 128, pad_length: int = 128,
                  warmup: int = 10, baseline: int = 0, log=None, samples: bool = False, buckets=(),
                  padded_sample: Optional[int] = None, pairs: Optional[Sequence[str]] = None) -> dict:
    """Latency of each model over `texts`, each text at the length the model takes it, interleaved.

    Args:
        models: .tflite paths (or bytes), SavedModel directories, .keras files or tf_keras models; early-exit
            model directories (`tfspeed exits`) or `ExitRunner`s run segment by segment and stop at their first
            confident exit (their `mean_layers` is reported).
        texts: the texts (non-empty strings).
        names: display names. Defaults to the file names.
        vocab: WordPiece vocabulary for models without metadata, or a list of one per model (`None` entries: that
            model's own). Defaults to each model's own.
        threads: interpreter threads. Defaults to `1`.
        xnnpack: LiteRT's default delegate. Defaults to `True`.
        max_length: the most tokens a dynamic-length file gets, [CLS] and [SEP] included. Defaults to `128`.
        pad_length: the length of models whose length is neither fixed nor a .tflite's. Defaults to `128`.
        warmup: texts run untimed first, per model. Defaults to `10`.
        baseline: index of the model the ratios are against. Defaults to `0`.
        log: a print-like function for progress. Defaults to `None`.
        buckets: for dynamic-length .tflite files, run each text on the smallest of these lengths that holds it, one
            interpreter per length (`tfspeed.export.buckets`), instead of a resize to its exact length; a list of
            one entry per model (`()` or None: exact length) also works. Defaults to `()`.
        samples: also return each model's per-text times (`samples_ms`, in text order) and lengths run
            (`lengths`). Defaults to `False`.
        padded_sample: run the models that pad every text to one length (their cost does not depend on the text)
            on about this many texts only, evenly spread and still interleaved with the others; their statistics
            and agreement are over those texts (`num_texts_run`). Defaults to `None` (every text).
        pairs: for sentence-pair models, the second text of each text (`[CLS] text [SEP] pair [SEP]`). Defaults to
            `None`.

    Returns:
        `{"num_texts", "token_lengths": {mean, p50, p90, p99, max}, "models": [...], "ratios": {stat: [...]},
        "argmax_agreement": [...] (each .tflite's predictions against the baseline's)}`.
    """
    from tfspeed.export.text_classifier import check_texts

    texts = check_texts(texts)
    if not texts:
        raise ValueError("Expected at least one text to profile. Received: texts=[]")
    if pairs is not None:
        pairs = check_texts(pairs, "pairs")
        if len(pairs) != len(texts):
            raise ValueError(f"Expected one second text per text in `pairs` ({len(texts)}). Received: {len(pairs)}")
    if not models:
        raise ValueError("Expected at least one model to profile. Received: models=[]")
    names = list(names) if names else [Path(str(m)).name if isinstance(m, (str, Path)) else f"model{i}"
                                      for i, m in enumerate(models)]
    vocabs = list(vocab) if isinstance(vocab, (list, tuple)) else [vocab] * len(models)
    if len(vocabs) != len(models):
        raise ValueError(f"Expected one vocabulary per model in `vocab` ({len(models)}). Received: {len(vocabs)}")
    per_model = isinstance(buckets, list) and bool(buckets) and not isinstance(buckets[0], (int, np.integer))
    bucket_sets = list(buckets) if per_model else [buckets] * len(models)
    if len(bucket_sets) != len(models):
        raise ValueError(f"Expected one bucket list per model in `buckets` ({len(models)}). Received: "
                         f"{len(bucket_sets)}")
    loaded = [_load(m, n, v, threads, xnnpack, max_length, pad_length, texts, b, pairs)
              for m, n, v, b in zip(models, names, vocabs, bucket_sets)]
    n = len(texts)
    seconds = np.zeros((len(loaded), n))
    predictions = [np.full(n, -1) for _ in loaded]
    ran = np.ones((len(loaded), n), bool)
    if padded_sample is not None and padded_sample < n:
        every = -(-n // max(1, int(padded_sample)))
        for k, m in enumerate(loaded):
            if not m.dynamic and not isinstance(m, _ExitsModel):  # an early exit's cost depends on the text
                ran[k] = np.arange(n) % every == 0
    order = list(range(min(warmup, n))) + list(range(n))
    for step, i in enumerate(order):
        timed = step >= min(warmup, n)
        for k, m in enumerate(loaded):
            if timed and not ran[k, i]:
                continue
            elapsed, out = m.run(i)
            if timed:
                seconds[k, i] = elapsed
                if out is not None:
                    predictions[k][i] = int(np.argmax(out))
        if log and timed and (i + 1) % 250 == 0:
            log(f"  {i + 1}/{n} texts")
    counts = loaded[0].token_counts + 2
    results = []
    for k, m in enumerate(loaded):
        mask = ran[k]
        real = m.lengths[mask].sum()
        took = seconds[k][mask]
        results.append({
            "name": names[k], "path": str(models[k]) if isinstance(models[k], (str, Path)) else None,
            "format": _format_of(m),
            "length": "dynamic" if m.dynamic else m.length, "padded": not m.dynamic,
            "buckets": _buckets_of(m),
            "latency_ms": summarize(took), "tokens_per_second": float(real / took.sum()),
            "texts_per_second": float(len(took) / took.sum()), "truncated": m.truncated,
            "num_texts_run": int(mask.sum()),
            "mean_length_run": float(m.lengths.mean() if m.dynamic else m.length),
            **({"mean_layers": float(m.layers_used[mask].mean())} if isinstance(m, _ExitsModel) else {}),
            **({"samples_ms": (seconds[k] * 1e3).tolist(), "lengths": m.lengths.tolist(),
                "predictions": predictions[k].tolist()} if samples else {}),
        })
    base = results[baseline]["latency_ms"]
    ratios = {stat: [r["latency_ms"][stat] / base[stat] for r in results] for stat in ("mean", "median", "p90")}
    agreement = []
    for p in predictions:  # over the texts both ran (with their predictions)
        both = (p >= 0) & (predictions[baseline] >= 0)
        agreement.append(float(np.mean(p[both] == predictions[baseline][both])) if both.any() else None)
    return {"num_texts": n, "threads": threads, "max_length": max_length,
            "token_lengths": {"mean": float(counts.mean()), "p50": float(np.percentile(counts, 50)),
                              "p90": float(np.percentile(counts, 90)), "p99": float(np.percentile(counts, 99)),
                              "max": int(counts.max())},
            "models": results, "baseline": names[baseline], "ratios": ratios, "argmax_agreement": agreement}


def format_texts_report(result: dict) -> str:
    """A profile_texts result as a Markdown table."""
    t = result["token_lengths"]
    lines = [f"Latency over {result['num_texts']} texts, each at the length the model takes it; "
             f"{result['threads']} thread(s). Tokens per text ([CLS] and [SEP] included): mean {t['mean']:.1f}, "
             f"p50 {t['p50']:.0f}, p90 {t['p90']:.0f}, p99 {t['p99']:.0f}, max {t['max']}.", "",
             "| model | length | mean ms | median ms | p90 ms | p99 ms | tokens/s | x baseline (mean) | agreement "
             "| cut |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r, ratio, agree in zip(result["models"], result["ratios"]["mean"], result["argmax_agreement"]):
        lat = r["latency_ms"]
        length = "own (dynamic)" if r["length"] == "dynamic" else f"padded to {r['length']}"
        if r.get("buckets"):
            length = "buckets " + "/".join(str(b) for b in r["buckets"])
        lines.append(f"| {r['name']} | {length} | {lat['mean']:.2f} | {lat['median']:.2f} | {lat['p90']:.2f} | "
                     f"{lat['p99']:.2f} | {r['tokens_per_second']:.0f} | {ratio:.3f} | "
                     f"{'-' if agree is None else f'{agree:.4f}'} | {r['truncated']} |")
    return "\n".join(lines)


def _format_of(m) -> str:
    if isinstance(m, _ExitsModel):
        return m.format
    return m.runner.format.value if isinstance(m.runner.format, Format) else str(m.runner.format)


def _buckets_of(m) -> Optional[list]:
    if isinstance(m, _ExitsModel):
        return list(m.runner.buckets) if m.runner.buckets is not None else None
    return list(m.buckets.buckets) if m.buckets is not None else None
