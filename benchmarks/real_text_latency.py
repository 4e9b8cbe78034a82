"""Latency on the real Rotten Tomatoes test reviews, each at its own length, against the same model padded to 128.

From a `tfspeed demo` / `optimize` run: the teacher's and the combined model's dynamic-range files at 128 tokens (as
the report has them), the same models exported with `seq_length="dynamic"`, fixed files of 16 / 32 / 48 / 64 tokens
(what length buckets would run: each review on the smallest bucket that holds it), and the TF float32 teacher
SavedModel (padded to 128, the usual way), all interleaved review by review on 1 thread (`profile_texts`). Reports the
token-length distribution, each model's mean / median / p90 / p99, the ratios (goals: dynamic <= 0.27x padded; the
combined model's real-text mean >= 50x faster than the TF float32 teacher), the bucket policy's mean computed from
the same per-review times, and the dynamic files' predictions against the padded ones (argmax agreement, max |Δ
probability|). Writes benchmarks/results/real_text_latency.json.

    python benchmarks/real_text_latency.py --run /work/runs/demo
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

from tfspeed import _io
from tfspeed.data import EncodedSplit, Tokenizer, load_dataset
from tfspeed.export import convert
from tfspeed.export.latency import format_texts_report, profile_texts
from tfspeed.export.parity import TFLiteClassifier
from tfspeed.profile.env import environment

BUCKETS = (16, 32, 48, 64)
MODELS = {"teacher": ("00-teacher", "teacher-dynamic"), "combined": ("03-prune", "03-prune-dynamic")}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", default="runs/demo")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "real_text_latency.json"))
    args = p.parse_args(argv)
    run = Path(args.run)
    env = environment()
    print(f"CPU: {env['cpu_model']} ({env['cpus_available']} cores), {args.threads} thread(s)", flush=True)
    test = load_dataset("rotten_tomatoes").test
    texts, labels = list(test.texts[:args.limit]), np.asarray(test.labels[:args.limit])
    results = {"environment": env, "threads": args.threads, "num_texts": len(texts), "models": {}}
    with tempfile.TemporaryDirectory() as tmp:
        paths, names = [run / "export" / "teacher-tf-float32"], ["teacher-tf-float32 (padded 128)"]
        vocabs = [run / "00-teacher" / "vocab.txt"]
        for key, (folder, padded) in MODELS.items():
            paths.append(run / "export" / f"{padded}.tflite")
            names.append(f"{key} dynamic-range, padded 128")
            vocabs += [run / folder / "vocab.txt"] * (2 + len(BUCKETS))
            dyn = Path(tmp) / f"{key}-dynamic-length.tflite"
            dyn.write_bytes(convert(run / folder, "dynamic", seq_length="dynamic"))
            paths.append(dyn)
            names.append(f"{key} dynamic-range, own length")
            for b in BUCKETS:
                f = Path(tmp) / f"{key}-{b}.tflite"
                f.write_bytes(convert(run / folder, "dynamic", seq_length=b))
                paths.append(f)
                names.append(f"{key} dynamic-range, padded {b}")
        print(f"{len(paths)} models, {len(texts)} reviews, interleaved ...", flush=True)
        result = profile_texts(paths, texts, names=names, threads=args.threads, vocab=vocabs, baseline=0,
                               samples=True, log=print)
        print(format_texts_report(result), flush=True)
        rows = {r["name"]: r for r in result["models"]}
        tf_mean = rows[names[0]]["latency_ms"]["mean"]
        for key, (folder, _) in MODELS.items():
            full = rows[f"{key} dynamic-range, padded 128"]
            own = rows[f"{key} dynamic-range, own length"]
            lengths = np.asarray(own["lengths"])
            bucket_ms = np.zeros(len(texts))
            for i, n in enumerate(lengths):
                size = next((b for b in BUCKETS if n <= b), 128)
                source = full if size == 128 else rows[f"{key} dynamic-range, padded {size}"]
                bucket_ms[i] = source["samples_ms"][i]
            # predictions of the dynamic file against the padded one, as probabilities
            meta_vocab = run / folder / "vocab.txt"
            split = EncodedSplit.from_split(test, Tokenizer(meta_vocab, seq_length=128))
            if args.limit:
                split = EncodedSplit({k: v[:args.limit] for k, v in split.features.items()}, labels)
            p_fixed = TFLiteClassifier(full["path"]).probabilities(split.features)
            p_dyn = TFLiteClassifier(own["path"]).probabilities(split.features)
            results["models"][key] = {
                "padded_128_mean_ms": full["latency_ms"]["mean"], "own_length_mean_ms": own["latency_ms"]["mean"],
                "own_over_padded_mean": own["latency_ms"]["mean"] / full["latency_ms"]["mean"],
                "own_over_padded_median": own["latency_ms"]["median"] / full["latency_ms"]["median"],
                "buckets_mean_ms": float(bucket_ms.mean()),
                "buckets_over_padded_mean": float(bucket_ms.mean() / full["latency_ms"]["mean"]),
                "own_length_p90_ms": own["latency_ms"]["p90"], "own_length_p99_ms": own["latency_ms"]["p99"],
                "argmax_agreement_with_padded": float(np.mean(p_fixed.argmax(-1) == p_dyn.argmax(-1))),
                "max_abs_probability_diff": float(np.abs(p_fixed - p_dyn).max()),
                "accuracy_padded": float(np.mean(p_fixed.argmax(-1) == labels)),
                "accuracy_own_length": float(np.mean(p_dyn.argmax(-1) == labels)),
                "speedup_vs_tf_float32_padded": tf_mean / own["latency_ms"]["mean"],
            }
            m = results["models"][key]
            print(f"{key}: own length {m['own_length_mean_ms']:.2f} ms vs padded {m['padded_128_mean_ms']:.2f} ms = "
                  f"{m['own_over_padded_mean']:.3f}x (buckets {m['buckets_over_padded_mean']:.3f}x); agreement "
                  f"{m['argmax_agreement_with_padded']:.4f}, max |Δp| {m['max_abs_probability_diff']:.2e}; "
                  f"{m['speedup_vs_tf_float32_padded']:.1f}x faster than TF float32 padded", flush=True)
        for r in result["models"]:
            r.pop("samples_ms", None), r.pop("predictions", None), r.pop("lengths", None)
        results["profile"] = result
    _io.write_json(args.out, results, overwrite=True)
    print(f"Wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
