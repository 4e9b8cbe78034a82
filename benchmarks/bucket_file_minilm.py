"""Length buckets as one file (a fixed-length signature per bucket, weights stored once) against a dynamic-length file
run on one interpreter per bucket, and against the padded file: latency over the real test reviews, file size and
the memory each runtime holds.

For each model directory (the fine-tuned MiniLM teacher, the chain's combined model), dynamic range, buckets
16 / 32 / 48 / 64 / 128: the three files timed interleaved review by review at 1 thread (`profile_texts`), each
review on the smallest bucket that holds it; the resident memory a runtime adds is read from /proc (VmRSS) around
building it, one runtime at a time, in this process.

Writes benchmarks/results/bucket_file_minilm.json.

    python benchmarks/bucket_file_minilm.py --teacher runs/demo/00-teacher --combined runs/demo/02-distill
"""

from __future__ import annotations

import argparse
import gc
from pathlib import Path

import numpy as np

from tfspeed import _io, artifacts, export
from tfspeed.data import load_dataset
from tfspeed.export.buckets import DEFAULT_BUCKETS, BucketRunner, export_buckets
from tfspeed.export.latency import profile_texts
from tfspeed.profile.env import environment

RESULTS = Path(__file__).parent / "results"


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--teacher", required=True)
    p.add_argument("--combined", required=True)
    p.add_argument("--work", default="runs/bucket-file")
    p.add_argument("--out", default=str(RESULTS / "bucket_file_minilm.json"))
    args = p.parse_args(argv)
    env = environment()
    print(f"CPU: {env['cpu_model']} ({env['cpus_available']} cores), flags: {env.get('cpu_flags')}", flush=True)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    buckets = DEFAULT_BUCKETS
    results = {"environment": env, "settings": vars(args), "buckets": buckets, "models": {}}
    models, names, vocabs, bucket_sets = [], [], [], []
    for name, source in (("teacher", args.teacher), ("combined", args.combined)):
        files = {"padded": work / f"{name}-dynamic-128.tflite", "varlen": work / f"{name}-dynamic-varlen.tflite",
                 "bucket-file": work / f"{name}-dynamic-buckets.tflite"}
        if not files["padded"].is_file():
            files["padded"].write_bytes(export.convert(str(source), "dynamic", seq_length=128, metadata=False))
        if not files["varlen"].is_file():
            files["varlen"].write_bytes(export.convert(str(source), "dynamic", seq_length="dynamic",
                                                       metadata=False))
        if not files["bucket-file"].is_file():
            files["bucket-file"].write_bytes(export_buckets(str(source), buckets, "dynamic"))
        memory = {}
        for kind, make in (("varlen, an interpreter per bucket", lambda f=files: BucketRunner(f["varlen"], buckets)),
                           ("bucket file, one interpreter", lambda f=files: BucketRunner(f["bucket-file"]))):
            gc.collect()
            before = _rss_mb()
            runner = make()
            row = {k: np.ones((1, 128), np.int32) for k in ("input_word_ids", "input_mask")}
            row["input_type_ids"] = np.zeros((1, 128), np.int32)
            for b in buckets:  # every bucket run once: its arena and packed weights are in memory
                runner({k: v[:, :b] for k, v in row.items()})
            memory[kind] = _rss_mb() - before
            del runner
        results["models"][name] = {"size_bytes": {k: v.stat().st_size for k, v in files.items()},
                                   "rss_added_mb": memory}
        print(name, results["models"][name], flush=True)
        vocab = str(artifacts.load_info(source).vocab_path)
        for kind in ("padded", "varlen", "bucket-file"):
            models.append(str(files[kind])), names.append(f"{name}-{kind}"), vocabs.append(vocab)
            bucket_sets.append(buckets if kind == "varlen" else ())
    texts = list(load_dataset("rotten_tomatoes").test.texts)
    profile = profile_texts(models, texts, names=names, vocab=vocabs, threads=1, max_length=128, pad_length=128,
                            baseline=0, buckets=bucket_sets, log=print)
    results["token_lengths"] = profile["token_lengths"]
    results["timed"] = {}
    for m, agree in zip(profile["models"], profile["argmax_agreement"]):
        m["argmax_agreement_with_teacher_padded"] = agree
        model = m["name"].split("-")[0]
        padded = next(r for r in profile["models"] if r["name"] == f"{model}-padded")
        results["timed"][m["name"]] = {"latency_ms": m["latency_ms"], "buckets": m["buckets"],
                                       "ratio_to_padded": m["latency_ms"]["mean"] / padded["latency_ms"]["mean"]}
        ratio = results["timed"][m["name"]]["ratio_to_padded"]
        print(f"{m['name']:22s} mean {m['latency_ms']['mean']:6.2f} ms  x{ratio:.3f} of its padded file", flush=True)
    _io.write_json(args.out, results, overwrite=True)
    print(f"Wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
