"""`profile_models`: load each model, warm up, then time them interleaved (A B A B ...) on the same inputs."""

from __future__ import annotations

import dataclasses
import gc
import os
import sys
import time
from pathlib import Path

import numpy as np

from tfspeed.profile import env as _env
from tfspeed.profile import inputs as _inputs
from tfspeed.profile import ops as _ops
from tfspeed.profile import runners as _runners
from tfspeed.profile.config import ProfileConfig
from tfspeed.profile.errors import InputError, ProfileError
from tfspeed.profile.result import FORMAT_VERSION, ProfileResult
from tfspeed.profile.stats import summarize


def _display_names(models, names):
    if names is not None:
        names = list(names)
        if len(names) != len(models) or len(set(names)) != len(names):
            raise ProfileError(f"Received an invalid value for `names`, expected {len(models)} distinct names. "
                               f"Received: names={names!r}")
        return names
    out = []
    for i, m in enumerate(models):
        if isinstance(m, (str, os.PathLike)):
            base = Path(m).name or str(m)
        elif isinstance(m, (bytes, bytearray, memoryview)):
            base = f"model{i}.tflite"
        else:
            base = getattr(m, "name", None) or f"model{i}"
        name, k = base, 2
        while name in out:
            name, k = f"{base}#{k}", k + 1
        out.append(name)
    return out


def _baseline_index(baseline, names):
    if baseline is None:
        return 0
    if isinstance(baseline, (int, np.integer)) and not isinstance(baseline, bool):
        if 0 <= baseline < len(names):
            return int(baseline)
    elif isinstance(baseline, str):
        if baseline in names:
            return names.index(baseline)
        if baseline.isdigit() and int(baseline) < len(names):
            return int(baseline)
        matches = [i for i, n in enumerate(names) if Path(n).stem == baseline or Path(n).name == Path(baseline).name]
        if len(matches) == 1:
            return matches[0]
    raise ProfileError(f"Received an invalid value for `baseline`, expected a model name among {names} or an index "
                       f"below {len(names)}. Received: baseline={baseline!r}")


def _batch_default(specs, shapes):
    """Fills a dynamic leading (batch) dimension with 1 unless `shapes` says otherwise."""
    shapes = dict(shapes or {})
    for spec in specs:
        if spec.name not in shapes and spec.shape and (spec.shape[0] is None or spec.shape[0] < 0) and not any(
                d is None or d < 0 for d in spec.shape[1:]):
            shapes[spec.name] = (1,) + tuple(spec.shape[1:])
    return shapes


class _Progress:
    def __init__(self, total, enabled):
        self.bar = None
        if enabled is None:
            enabled = sys.stderr.isatty()
        if enabled:
            try:
                from tqdm.auto import tqdm

                self.bar = tqdm(total=total, file=sys.stderr, unit="run", leave=False, dynamic_ncols=True)
            except ImportError:  # pragma: no cover - tqdm comes with the TF stack
                self.bar = None

    def set(self, text):
        if self.bar is not None:
            self.bar.set_description(text[:40])

    def update(self, n=1):
        if self.bar is not None:
            self.bar.update(n)

    def add_total(self, n):
        if self.bar is not None:
            self.bar.total += n
            self.bar.refresh()

    def close(self):
        if self.bar is not None:
            self.bar.close()


def profile_models(models, baseline=0, threads=None, xnnpack=None, runs: int | None = None,
                   warmup: int | None = None, per_op: bool | None = None, per_op_runs: int | None = None,
                   inputs=None, shapes=None, text=None, vocab=None, seq_length: int | None = None, tokenizer=None,
                   names=None, vocab_size: int | None = None, seed: int | None = None, isolate: bool | None = None,
                   progress=None, config: ProfileConfig | None = None) -> ProfileResult:
    """Profiles one or more models on the same inputs, interleaved, and returns a `ProfileResult`.

    Args:
        models: a model or a list of models: `.tflite` paths or bytes (any TFLite model), tf_keras models, `.keras`
            / `.h5` files, SavedModel directories, `.onnx` files (with onnxruntime installed).
        baseline: the model the ratios are computed against: index or name. Defaults to `0` (the first).
        threads: thread count or list of counts to sweep, e.g. `[1, 2, 4]`. Defaults to `(1,)`.
        xnnpack: `True` (LiteRT's default XNNPACK delegate), `False` (plain builtin kernels) or `"both"`.
            Defaults to `True`.
        runs: measured runs per model, after the warm-up. Defaults to `50`.
        warmup: warm-up runs per model, reported apart and not in the statistics. Defaults to `5`.
        per_op: also time every operator of each TFLite model, and check that the per-op times add up to the whole
            model's (see `tfspeed.profile.ops`). Defaults to `False`.
        per_op_runs: timed runs of each operator alone, and timed rounds of the chunk sub-models (each round also
            runs the whole model once, for the check). Defaults to `runs`.
        inputs: a `dict` name -> array or an `.npz` path; checked against the first model's inputs. Defaults to
            generated inputs (token ids within the vocabulary, ones for masks, zeros for type ids, random floats).
        shapes: `{input name: shape}` for dynamic dimensions. A dynamic batch dimension defaults to 1.
        text: real text (a string or list of strings, one batch row each), tokenized with `tokenizer` or with a
            WordPiece `vocab` file and `seq_length`.
        vocab: path to the WordPiece `vocab.txt` used with `text`.
        seq_length: tokens per row for `text`. Defaults to `128`.
        tokenizer: a callable `texts -> {name: array}` used instead of `vocab` for `text`.
        names: display names, one per model. Defaults to the file names.
        vocab_size: upper bound of generated token ids when the model does not reveal its embedding size.
        seed: seed of generated inputs. Defaults to `0`.
        isolate: load each `.tflite` file first in a child process, so a malformed file cannot crash this process.
            Defaults to `True`.
        progress: show a progress bar on stderr: `True`, `False`, or `None` (only on a terminal). Defaults to `None`.
        config: a `ProfileConfig` holding the measurement settings (threads, xnnpack, runs, warmup, per_op,
            per_op_runs, seq_length, seed, isolate; the defaults above are its defaults); keyword arguments given
            here override it.

    Returns:
        A `ProfileResult`: `.to_json()`, `.to_markdown()`, `.to_table()`, `.plot(path)`.

    Example (a tiny random-weight BERT as float32 and dynamic-range .tflite files, from one `Converter`, a few runs
    each; the timings vary from run to run):

    >>> from tfspeed.export import Converter, save_tflite
    >>> from tfspeed.models import BertConfig, build_classifier
    >>> model = build_classifier(BertConfig(vocab_size=100, hidden_size=16, num_layers=2, num_heads=2,
    ...                                     intermediate_size=32, max_positions=16), num_classes=2)
    >>> converter = Converter(model, seq_length=8)
    >>> for mode in ("float32", "dynamic"):
    ...     _ = save_tflite(converter.convert(mode), f"bert_{mode}.tflite")
    >>> result = profile_models(["bert_float32.tflite", "bert_dynamic.tflite"], runs=5, warmup=1)
    >>> [(row["name"], row["is_baseline"], row["latency_ms"]["n"]) for row in result.models]
    [('bert_float32.tflite', True, 5), ('bert_dynamic.tflite', False, 5)]
    >>> print(result.to_table().splitlines()[-1])  # the row of the last model  # doctest: +ELLIPSIS
    bert_dynamic.tflite  tflite  1  on ...
    >>> _ = result.to_json("profile.json")

    On real models, sweep threads and measure longer, e.g.
    `profile_models(["bert_fp32.tflite", "bert_int8.tflite"], threads=[1, 2], runs=100)`.
    """
    if not isinstance(models, (list, tuple)):
        models = [models]
    models = list(models)
    if not models:
        raise ProfileError("Received an invalid value for `models`, expected at least one model. Received: models=[]")
    given = dict(threads=threads, xnnpack=xnnpack, runs=runs, warmup=warmup, per_op=per_op, per_op_runs=per_op_runs,
                 seq_length=seq_length, seed=seed, isolate=isolate)
    if isinstance(runs, (list, tuple)):
        raise ProfileError(f"Received an invalid value for `runs`, expected one integer. Received: runs={runs!r}")
    config = ProfileConfig.resolve(config, **{k: v for k, v in given.items() if v is not None})
    thread_list = list(config.threads)
    runs, warmup, per_op, seq_length, seed, isolate = (config.runs, config.warmup, config.per_op, config.seq_length,
                                                      config.seed, config.isolate)
    per_op_runs = config.per_op_runs if config.per_op_runs is not None else runs
    xnn_list = config.xnnpack.settings
    names = _display_names(models, names)
    base = _baseline_index(baseline, names)

    # Read and verify every TFLite model once, before anything native touches it.
    formats = [_runners.detect_format(m) for m in models]
    tflite_data = {}
    for i, (m, fmt) in enumerate(zip(models, formats)):
        if fmt == _runners.Format.TFLITE:
            data = bytes(m) if isinstance(m, (bytes, bytearray, memoryview)) else _runners.verify.read_model_bytes(m)
            _runners.verify.verify_tflite(data, names[i])
            if isolate:
                _runners.verify.probe_tflite(data, names[i])
            tflite_data[i] = data

    # Token ids are drawn below the smallest embedding any model has for that input, so one feed fits all.
    vocab_limits = {}
    for data in tflite_data.values():
        for name, rows in _runners.tflite_vocab_by_name(data).items():
            vocab_limits[name] = min(rows, vocab_limits.get(name, rows))

    # User inputs: .npz / dict / text. Generated inputs are made from the first model's specs once it is open.
    user_feed = None
    source = "generated"
    if inputs is not None and text is not None:
        raise ProfileError("Pass either `inputs` or `text`, not both. Received: inputs and text")
    if inputs is not None:
        if isinstance(inputs, dict):
            user_feed = {_inputs.normalize_name(k): np.asarray(v) for k, v in inputs.items()}
            source = "dict"
        else:
            user_feed = _inputs.load_npz(inputs)
            source = f"npz:{Path(inputs).name}"
    elif text is not None:
        if tokenizer is not None:
            user_feed = {_inputs.normalize_name(k): np.asarray(v) for k, v in tokenizer(text).items()}
        else:
            user_feed = _inputs.tokenize(text, vocab, seq_length)
        source = "text"

    n_models = len(models)
    bar = _Progress(len(thread_list) * len(xnn_list) * n_models * (warmup + runs), progress)
    feed = dict(user_feed) if user_feed is not None else None
    rows = []
    try:
        for n_threads in thread_list:
            for use_xnn in xnn_list:
                config = f"threads={n_threads} xnnpack={'on' if use_xnn else 'off'}"
                bar.set(config)
                loaded = []
                for i, m in enumerate(models):
                    runner = _runners.make_runner(m, threads=n_threads, xnnpack=use_xnn, name=names[i],
                                                  isolate=False, data=tflite_data.get(i))
                    row, feed = _load(runner, feed, user_feed is not None, shapes, vocab_size, seed, i == 0,
                                      vocab_limits)
                    row.update(name=names[i], path=runner.path, format=runner.format.value, config=config,
                               threads=runner.threads,
                               xnnpack=(use_xnn if runner.format == _runners.Format.TFLITE else None),
                               notes=list(runner.notes))
                    loaded.append((runner, row))
                _measure(loaded, runs, warmup, bar)
                if per_op:
                    for runner, row in loaded:
                        if runner.format != _runners.Format.TFLITE:
                            continue
                        n_ops = _count_ops(runner)
                        bar.add_total(n_ops)
                        bar.set(f"per-op {row['name']}")
                        row["per_op"] = _ops.profile_ops(
                            runner.data, runner.feed_by_index, runner.subgraph, n_threads, use_xnn,
                            runs=per_op_runs, warmup=min(max(warmup, 1), 5),
                            whole_ms=row["latency_ms"]["median"], progress=bar.update,
                            whole_invoke=runner.invoke)
                base_row = loaded[base][1]
                for runner, row in loaded:
                    row["is_baseline"] = row is base_row
                    row["ratio_vs_baseline"] = row["latency_ms"]["median"] / base_row["latency_ms"]["median"]
                    row["speedup_vs_baseline"] = base_row["latency_ms"]["median"] / row["latency_ms"]["median"]
                    first = ("name", "path", "format", "config", "threads", "xnnpack", "batch_size", "size_bytes",
                             "gzip_bytes", "latency_ms", "ratio_vs_baseline", "speedup_vs_baseline", "is_baseline",
                             "throughput", "init_ms", "first_inference_ms", "warmup_ms", "memory")
                    rows.append({**{k: row[k] for k in first}, **{k: v for k, v in row.items() if k not in first}})
                    runner.close()
                del loaded
                gc.collect()
    finally:
        bar.close()

    environment = _env.environment()
    environment.update(threads=thread_list, delegate=["xnnpack" if x else "none" for x in xnn_list])
    settings = {"runs": runs, "warmup": warmup, "threads": thread_list, "xnnpack": xnn_list,
                "baseline": names[base], "inputs": source, "per_op": bool(per_op), "per_op_runs": per_op_runs,
                "interleaved": n_models > 1, "seed": seed, "gzip_level": _runners.GZIP_LEVEL,
                "input_shapes": {k: list(v.shape) for k, v in (feed or {}).items()},
                "input_dtypes": {k: v.dtype.name for k, v in (feed or {}).items()}}
    return ProfileResult(format_version=FORMAT_VERSION, environment=environment, settings=settings, models=rows)


def _count_ops(runner):
    from ai_edge_litert import schema_py_generated as fb

    return fb.Model.GetRootAs(runner.data, 0).Subgraphs(runner.subgraph).OperatorsLength()


def _load(runner, feed, user_given, shapes, vocab_size, seed, first, vocab_limits):
    """Opens and allocates one runner, timing init and the first run; returns its row and the (shared) feed."""
    gc.collect()
    rss0 = _env.rss_bytes()
    peak_ok = _env.reset_peak_rss()
    t0 = time.perf_counter()
    runner.open()
    t1 = time.perf_counter()
    specs = [dataclasses.replace(s, vocab_size=min(x for x in (s.vocab_size, vocab_limits.get(s.name)) if x))
             if (s.vocab_size or vocab_limits.get(s.name)) else s for s in runner.specs()]
    if feed is None:
        resolved = _inputs.resolve_shapes(specs, _batch_default(specs, shapes))
        feed = _inputs.generate_inputs(resolved, seed=seed, vocab_size=vocab_size)
    elif user_given and first:
        _inputs.check_feed(feed, specs, source="the given inputs")
    elif not user_given:
        missing = [s for s in specs if _inputs.lookup(feed, s.name) is None]
        if missing:  # another model with other input names: generate its own, same seed
            resolved = _inputs.resolve_shapes(missing, _batch_default(missing, shapes))
            feed = {**feed, **_inputs.generate_inputs(resolved, seed=seed, vocab_size=vocab_size)}
    t2 = time.perf_counter()
    runner.allocate(feed)
    t3 = time.perf_counter()
    try:
        runner.invoke()
    except Exception as exc:
        raise InputError(f"{runner.name}: the first inference failed: {type(exc).__name__}: {exc}") from None
    t4 = time.perf_counter()
    rss1 = _env.rss_bytes()
    peak = _env.peak_rss_bytes() if peak_ok else None
    size, gz = runner.size_bytes()
    batch = next((int(np.asarray(v).shape[0]) for v in feed.values() if np.asarray(v).ndim), 1)
    row = {
        "init_ms": ((t1 - t0) + (t3 - t2)) * 1e3,
        "first_inference_ms": (t4 - t3) * 1e3,
        "batch_size": batch,
        "memory": {
            "rss_increase_bytes": (rss1 - rss0) if rss0 is not None and rss1 is not None else None,
            "peak_rss_increase_bytes": (peak - rss0) if peak is not None and rss0 is not None else None,
        },
        "size_bytes": size,
        "gzip_bytes": gz,
    }
    return row, feed


def _measure(loaded, runs, warmup, bar):
    """Warm-up per model (kept apart), then `runs` rounds of one timed invoke per model, A B A B ..."""
    for runner, row in loaded:
        samples = []
        for _ in range(warmup):
            t0 = time.perf_counter()
            runner.invoke()
            samples.append((time.perf_counter() - t0) * 1e3)
            bar.update()
        row["warmup_ms"] = samples
    invokes = [runner.invoke for runner, _ in loaded]
    times = [[0.0] * runs for _ in loaded]
    gc_was_enabled = gc.isenabled()
    gc.disable()
    perf = time.perf_counter
    try:
        for r in range(runs):
            for k, invoke in enumerate(invokes):
                t0 = perf()
                invoke()
                times[k][r] = perf() - t0
            bar.update(len(invokes))
    finally:
        if gc_was_enabled:
            gc.enable()
    for (_, row), samples in zip(loaded, times):
        stats = summarize(samples)
        row["latency_ms"] = stats
        row["throughput"] = {"inferences_per_s": 1e3 / stats["mean"],
                             "samples_per_s": 1e3 / stats["mean"] * row["batch_size"]}
        row["samples_ms"] = [s * 1e3 for s in samples]
