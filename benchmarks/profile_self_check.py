"""Does the profiler tell the truth? Its median against an independent `time.perf_counter` loop around `invoke()`,
and the sum of its per-op times against the whole model (see `tfspeed.profile.ops`: thread CPU time at 1 thread,
wall clock at 2), repeated `--repeats` times, on a small BERT-like model (2 layers, hidden 256, FFN 1024, 4 heads,
seq 128, vocab 1000, random weights) converted to TFLite.

    nice -n 5 python benchmarks/profile_self_check.py [--out benchmarks/results/profile_self_check.json] [--runs 300]
        [--repeats 3] [--overwrite]
"""

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from tfspeed import _io
from tfspeed.compat import keras, tf
from tfspeed.profile import profile_models

THREADS = (1, 2)  # 2 threads on this 2-core machine share the cores with everything else
NAMES = ("input_word_ids", "input_mask", "input_type_ids")


def build(seq=128, vocab=1000, hidden=256, ffn=1024, layers=2):
    keras.utils.set_random_seed(0)
    ids, mask, types = (keras.Input((seq,), dtype="int32", name=n) for n in NAMES)
    x = keras.layers.Embedding(vocab, hidden)(ids) + keras.layers.Embedding(2, hidden)(types)
    x = x * tf.cast(mask, tf.float32)[..., None]
    for _ in range(layers):
        a = keras.layers.MultiHeadAttention(4, hidden // 4)(x, x)
        x = keras.layers.LayerNormalization()(x + a)
        h = keras.layers.Dense(ffn, activation="gelu")(x)
        x = keras.layers.LayerNormalization()(x + keras.layers.Dense(hidden)(h))
    model = keras.Model(dict(zip(NAMES, (ids, mask, types))), {"logits": keras.layers.Dense(2)(x[:, 0])})
    specs = {n: tf.TensorSpec([1, seq], tf.int32, name=n) for n in NAMES}
    fn = tf.function(lambda **kw: model(kw)).get_concrete_function(**specs)
    return tf.lite.TFLiteConverter.from_concrete_functions([fn], model).convert()


def independent_median(content, feed, runs, threads, xnnpack):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    resolver = OpResolverType.AUTO if xnnpack else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    it = Interpreter(model_content=content, num_threads=threads, experimental_op_resolver_type=resolver)
    it.allocate_tensors()
    for d in it.get_input_details():
        it.set_tensor(d["index"], feed[d["name"].removeprefix("serving_default_").split(":")[0]])
    for _ in range(20):
        it.invoke()
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        it.invoke()
        samples.append(time.perf_counter() - t0)
    return float(np.median(samples)) * 1e3


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results/profile_self_check.json")
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3, help="per-op profiles per configuration")
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args()
    _io.check_writable(args.out, args.overwrite, "out")
    content = build()
    rng = np.random.default_rng(0)
    feed = {"input_word_ids": rng.integers(0, 1000, (1, 128)).astype(np.int32),
            "input_mask": np.ones((1, 128), np.int32), "input_type_ids": np.zeros((1, 128), np.int32)}
    checks = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bert_like.tflite"
        path.write_bytes(content)
        for threads in THREADS:
            for xnnpack in (True, False):
                before = independent_median(content, feed, args.runs, threads, xnnpack)
                result = profile_models(path, threads=threads, xnnpack=xnnpack, runs=args.runs, warmup=20,
                                        inputs=feed, per_op=True, per_op_runs=100, progress=False)
                after = independent_median(content, feed, args.runs, threads, xnnpack)
                row = result.models[0]
                reference = (before + after) / 2
                per_op = [row["per_op"]]
                for _ in range(args.repeats - 1):
                    per_op.append(profile_models(path, threads=threads, xnnpack=xnnpack, runs=20, warmup=5,
                                                 inputs=feed, per_op=True, per_op_runs=100,
                                                 progress=False).models[0]["per_op"])
                p = per_op[0]
                diffs = [q["difference_pct"] for q in per_op]
                check = {"threads": threads, "xnnpack": xnnpack, "profiler_median_ms": row["latency_ms"]["median"],
                         "independent_median_ms_before": before, "independent_median_ms_after": after,
                         "median_difference_pct": (row["latency_ms"]["median"] - reference) / reference * 100,
                         "per_op_clock": p["clock"], "per_op_whole_ms": [q["whole_ms"] for q in per_op],
                         "per_op_sum_ms": [q["sum_ms"] for q in per_op], "per_op_difference_pct": diffs,
                         "per_op_agrees": [q["agrees"] for q in per_op],
                         "ops_alone_difference_pct": [q["alone_difference_pct"] for q in per_op],
                         "chunks": len(p["chunks"]), "per_op_skipped": p["skipped"], "ops": len(p["ops"]),
                         "load_average": list(os.getloadavg())}
                checks.append(check)
                print(f"threads={threads} xnnpack={'on ' if xnnpack else 'off'}  "
                      f"profiler {check['profiler_median_ms']:.3f}"
                      f" ms vs perf_counter loop {reference:.3f} ms ({check['median_difference_pct']:+.1f}%);  "
                      f"per-op sum vs whole ({p['clock']}): {', '.join(f'{d:+.1f}%' for d in diffs)}  "
                      f"(ops timed alone: {', '.join(f'{a:+.1f}%' for a in check['ops_alone_difference_pct'])}; "
                      f"{len(p['ops'])} ops, {len(p['chunks'])} chunks)", flush=True)
    _io.write_json(args.out, {"format_version": 1, "environment": result.environment, "runs": args.runs,
                              "model": "BERT-like L2/H256/FFN1024, seq 128, fp32", "checks": checks},
                   overwrite=args.overwrite, argument="out")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
