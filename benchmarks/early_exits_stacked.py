"""Early exits on top of the rest: on the teacher and on the `optimize` chain's combined model, at a fixed length and
with each review at its own length (length buckets), all timed on the real test reviews.

For each model directory (the fine-tuned MiniLM teacher, and the combined model of a `tfspeed demo` /
`tfspeed optimize` run, e.g. the distilled 3-layer student): the `exits` stage as `tfspeed optimize` runs it (exits
after every layer but the last, mean pooling, self-distilled, the threshold calibrated on validation for half a
point); then, interleaved review by review over the whole test split at 1 thread: the plain dynamic-range file padded
to 128, its dynamic-length twin on length buckets, the segmented early-exit file at 128 and its dynamic-length twin
on the same buckets, and the TF float32 teacher as TF serves it (padded to 128): mean latency, accuracy, argmax
agreement with the plain file, mean layers used.

Writes benchmarks/results/early_exits_stacked.json.

    python benchmarks/early_exits_stacked.py --teacher runs/demo/00-teacher --combined runs/demo/02-distill \\
        --tf-teacher runs/demo/export/teacher-tf-float32
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from tfspeed import _io, artifacts, export
from tfspeed.compress.exits import ExitsConfig
from tfspeed.data import load_dataset
from tfspeed.export.buckets import DEFAULT_BUCKETS
from tfspeed.export.exits import export_exits, runner_of
from tfspeed.export.latency import profile_texts
from tfspeed.profile.env import environment
from tfspeed.stages import StageContext
from tfspeed.stages import exits as exits_stage

RESULTS = Path(__file__).parent / "results"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--teacher", required=True, help="the fine-tuned teacher's model directory")
    p.add_argument("--combined", required=True, help="the chain's combined model directory (a float stage)")
    p.add_argument("--tf-teacher", default=None, help="the teacher as a TF SavedModel (optimize's export/"
                                                     "teacher-tf-float32), timed as the reference a user starts from")
    p.add_argument("--budget", type=float, default=0.005)
    p.add_argument("--seq-length", type=int, default=128)
    p.add_argument("--work", default="runs/exits-stacked")
    p.add_argument("--out", default=str(RESULTS / "early_exits_stacked.json"))
    args = p.parse_args(argv)
    env = environment()
    print(f"CPU: {env['cpu_model']} ({env['cpus_available']} cores), flags: {env.get('cpu_flags')}", flush=True)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    dataset = load_dataset("rotten_tomatoes")
    ctx = StageContext(dataset, seq_length=args.seq_length)
    buckets = tuple(b for b in DEFAULT_BUCKETS if b < args.seq_length) + (args.seq_length,)
    results = {"environment": env, "settings": vars(args), "buckets": buckets, "models": {}}
    models, names, vocabs, bucket_sets = [], [], [], []
    if args.tf_teacher:
        models.append(args.tf_teacher), names.append("teacher-tf-float32")
        vocabs.append(str(artifacts.load_info(args.teacher).vocab_path))
        bucket_sets.append(())
    for name, source in (("teacher", args.teacher), ("combined", args.combined)):
        exits_dir = work / f"{name}-exits"
        if not (exits_dir / "metrics.json").is_file():
            start = time.perf_counter()
            exits_stage.run(source, ExitsConfig(budget=args.budget), exits_dir, ctx)
            print(f"{name}: exits trained and calibrated in {time.perf_counter() - start:.0f} s", flush=True)
        metrics = artifacts.read_metrics(exits_dir)
        results["models"][name] = {k: metrics.get(k) for k in (
            "accuracy", "full_accuracy", "drop_points", "mean_layers", "num_layers", "layers", "exit_counts", "rule",
            "threshold", "budget", "validation_accuracy", "validation_full_accuracy", "validation_mean_layers")}
        info = artifacts.load_info(source)
        files = {"dynamic": work / f"{name}-dynamic.tflite", "dynamic-varlen": work / f"{name}-dynamic-varlen.tflite",
                 "exits-varlen": work / f"{name}-exits-varlen.tflite"}
        if not files["dynamic"].is_file():
            files["dynamic"].write_bytes(export.convert(str(source), "dynamic", seq_length=args.seq_length))
        if not files["dynamic-varlen"].is_file():
            files["dynamic-varlen"].write_bytes(export.convert(str(source), "dynamic", seq_length="dynamic"))
        if not files["exits-varlen"].is_file():
            exits_model, _ = artifacts.load_model_dir(exits_dir)
            files["exits-varlen"].write_bytes(export_exits(exits_model, "dynamic", seq_length="dynamic"))
        for kind, model, b in (("dynamic", files["dynamic"], ()), ("dynamic-varlen", files["dynamic-varlen"], buckets),
                               ("exits", runner_of(exits_dir), ()),
                               ("exits-varlen", runner_of(exits_dir, tflite=files["exits-varlen"], buckets=buckets),
                                ())):
            models.append(model), names.append(f"{name}-{kind}"), vocabs.append(str(info.vocab_path))
            bucket_sets.append(b)
    texts = list(dataset.test.texts)
    labels = np.asarray(dataset.test.labels)
    print(f"timing {len(models)} models on {len(texts)} test reviews, interleaved, 1 thread ...", flush=True)
    baseline = names.index("teacher-dynamic")
    profile = profile_texts(models, texts, names=names, vocab=vocabs, threads=1, max_length=args.seq_length,
                            pad_length=args.seq_length, baseline=baseline, buckets=bucket_sets, samples=True,
                            log=print)
    rows = {}
    for m in profile["models"]:
        preds = np.asarray(m.pop("predictions"))
        m.pop("samples_ms"), m.pop("lengths")
        rows[m["name"]] = {**m, "accuracy": float(np.mean(preds == labels)) if (preds >= 0).all() else None,
                           "predictions": preds}
    for name in ("teacher", "combined"):
        plain = rows[f"{name}-dynamic"]["predictions"]
        for kind in ("dynamic-varlen", "exits", "exits-varlen"):
            rows[f"{name}-{kind}"]["agreement_with_plain"] = float(np.mean(rows[f"{name}-{kind}"]["predictions"]
                                                                           == plain))
    reference = rows.get("teacher-tf-float32")
    for r in rows.values():
        r.pop("predictions")
        r["ratio_to_teacher_dynamic"] = r["latency_ms"]["mean"] / rows["teacher-dynamic"]["latency_ms"]["mean"]
        if reference:
            r["speedup_vs_tf_float32"] = reference["latency_ms"]["mean"] / r["latency_ms"]["mean"]
    results["token_lengths"] = profile["token_lengths"]
    results["timed"] = rows
    for name, r in rows.items():
        acc = f"{r['accuracy']:.4f}" if r["accuracy"] is not None else "-"
        print(f"{name:28s} mean {r['latency_ms']['mean']:7.2f} ms  x{r['ratio_to_teacher_dynamic']:.3f} of the "
              f"teacher's dynamic file  accuracy {acc}  layers {r.get('mean_layers', '-')}"
              + (f"  {r['speedup_vs_tf_float32']:.1f}x vs TF float32" if reference else ""), flush=True)
    _io.write_json(args.out, results, overwrite=True)
    print(f"Wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
