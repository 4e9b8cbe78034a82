"""Latency on the real Rotten Tomatoes test reviews, each at its own length, against the same model padded to 128.

From a `tfspeed demo` / `optimize` run: the teacher's and the combined model's dynamic-range files at 128 tokens (as
the report has them) and the same models exported with `seq_length="dynamic"`, run three ways: each review at its
exact length (a resize per review), and on length buckets (`BucketRunner`: one interpreter per bucket, each review on
the smallest that holds it) of 16/32/48/64/128 and of 16/24/32/40/48/56/64/96/128 tokens; with the TF float32 teacher
SavedModel (padded to 128, the usual way), all interleaved review by review on 1 thread (`profile_texts`). Reports the
token-length distribution, each model's mean / median / p90 / p99, the ratios to the padded file (goal <= 0.27x), the
fastest variant against the TF float32 teacher (goal >= 50x for the combined model), and the dynamic files'
predictions against the padded ones (argmax agreement, max |Δ probability|). Writes
benchmarks/results/real_text_latency.json.

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

COARSE = (16, 32, 48, 64, 128)
FINE = (16, 24, 32, 40, 48, 56, 64, 96, 128)
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
        vocabs, buckets = [run / "00-teacher" / "vocab.txt"], [()]
        for key, (folder, padded) in MODELS.items():
            dyn = Path(tmp) / f"{key}-dynamic-length.tflite"
            dyn.write_bytes(convert(run / folder, "dynamic", seq_length="dynamic"))
            for label, path, b in (("padded 128", run / "export" / f"{padded}.tflite", ()), ("own length", dyn, ()),
                                   ("buckets " + "/".join(map(str, COARSE)), dyn, COARSE),
                                   ("buckets " + "/".join(map(str, FINE)), dyn, FINE)):
                paths.append(path)
                names.append(f"{key} dynamic-range, {label}")
                vocabs.append(run / folder / "vocab.txt")
                buckets.append(b)
        print(f"{len(paths)} models, {len(texts)} reviews, interleaved ...", flush=True)
        result = profile_texts(paths, texts, names=names, threads=args.threads, vocab=vocabs, baseline=0,
                               buckets=buckets, log=print)
        print(format_texts_report(result), flush=True)
        rows = {r["name"]: r for r in result["models"]}
        tf_mean = rows[names[0]]["latency_ms"]["mean"]
        for key, (folder, _) in MODELS.items():
            full = rows[f"{key} dynamic-range, padded 128"]
            own = rows[f"{key} dynamic-range, own length"]
            variants = {label: rows[f"{key} dynamic-range, {label}"] for label in
                        ("own length", "buckets " + "/".join(map(str, COARSE)), "buckets " + "/".join(map(str, FINE)))}
            fastest = min(variants, key=lambda k: variants[k]["latency_ms"]["mean"])
            split = EncodedSplit.from_split(test, Tokenizer(run / folder / "vocab.txt", seq_length=128))
            if args.limit:
                split = EncodedSplit({k: v[:args.limit] for k, v in split.features.items()}, labels)
            p_fixed = TFLiteClassifier(full["path"]).probabilities(split.features)
            p_dyn = TFLiteClassifier(own["path"]).probabilities(split.features)
            results["models"][key] = {
                "padded_128_mean_ms": full["latency_ms"]["mean"],
                **{f"{label} mean_ms": v["latency_ms"]["mean"] for label, v in variants.items()},
                **{f"{label} over padded (mean)": v["latency_ms"]["mean"] / full["latency_ms"]["mean"]
                   for label, v in variants.items()},
                "fastest": fastest,
                "fastest_over_padded_mean": variants[fastest]["latency_ms"]["mean"] / full["latency_ms"]["mean"],
                "argmax_agreement_with_padded": float(np.mean(p_fixed.argmax(-1) == p_dyn.argmax(-1))),
                "argmax_agreement_in_run": result["argmax_agreement"],
                "max_abs_probability_diff": float(np.abs(p_fixed - p_dyn).max()),
                "accuracy_padded": float(np.mean(p_fixed.argmax(-1) == labels)),
                "accuracy_own_length": float(np.mean(p_dyn.argmax(-1) == labels)),
                "speedup_vs_tf_float32_padded": tf_mean / variants[fastest]["latency_ms"]["mean"],
            }
            m = results["models"][key]
            print(f"{key}: padded {m['padded_128_mean_ms']:.2f} ms; "
                  + "; ".join(f"{label} {m[f'{label} mean_ms']:.2f} ms = {m[f'{label} over padded (mean)']:.3f}x"
                              for label in variants)
                  + f"; agreement {m['argmax_agreement_with_padded']:.4f}, max |Δp| {m['max_abs_probability_diff']:.2e}"
                  f"; fastest ({fastest}) {m['speedup_vs_tf_float32_padded']:.1f}x faster than TF float32 padded",
                  flush=True)
        results["profile"] = result
    _io.write_json(args.out, results, overwrite=True)
    print(f"Wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
