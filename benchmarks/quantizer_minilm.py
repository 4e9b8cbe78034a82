"""Smaller and integer-only: the LiteRT quantizer's modes on the fine-tuned MiniLM, against the TFLite converter's.

Files from one model directory at one fixed length (default 64: the longest Rotten Tomatoes review is 78 tokens, few
are cut): float32, dynamic range (converter), int4 blockwise 32 / 64 / 128 and channel-wise, the same with Hadamard-
rotated weights (`int4-hr`), int4 with the attention and head in int8 (`int4-ffn`), weight-only int8 / int4, static
int8, 16x8 (LiteRT quantizer), full int8 (converter). Each is evaluated on the whole test split (accuracy, argmax
agreement with float32, size, gzip, the integer-only check) and timed with tfspeed's profiler, all files
interleaved, 1 thread. Then the accuracy budget with `objective="size"` picks the smallest file within `--max-drop`
on the validation split.

With `--student DIR --qat-file FILE` (the optimize chain's pruned student and its QAT int8 file), the student's
integer-only files are timed against its QAT int8 file and its dynamic-range file in the same interleaved run.

    python benchmarks/quantizer_minilm.py --model runs/demo/00-teacher \\
        [--student runs/demo/03-prune --qat-file runs/demo/04-qat/model_int8.tflite]

Writes benchmarks/results/quantizer_minilm.json.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

from tfspeed import _io
from tfspeed.data import EncodedSplit, Tokenizer, load_dataset
from tfspeed.export import Converter, export_within_budget
from tfspeed.export.ops import integer_report, op_histogram, sizes
from tfspeed.export.parity import TFLiteClassifier, keras_logits

# (name, mode, keyword arguments of Converter.convert)
FILES = (
    ("float32", "float32", {}),
    ("dynamic", "dynamic", {}),
    ("int4-b32", "int4", {"block_size": 32}),
    ("int4-b64", "int4", {"block_size": 64}),
    ("int4-b128", "int4", {"block_size": 128}),
    ("int4-channel", "int4", {"block_size": 0}),
    ("int4-hr-channel", "int4-hr", {"block_size": 0}),
    ("int4-hr-b32", "int4-hr", {"block_size": 32}),
    ("int4-hr-b64", "int4-hr", {"block_size": 64}),
    ("int4-ffn", "int4", {"block_size": 0, "recipe": "attention=int8,head=int8"}),
    ("int8-weights", "int8-weights", {}),
    ("int4-weights", "int4-weights", {}),
    ("int8-static", "int8-static", {}),
    ("16x8", "16x8", {}),
    ("int8 (converter)", "int8", {}),
)
STUDENT_FILES = (("dynamic", "dynamic", {}), ("int8-static", "int8-static", {}), ("16x8", "16x8", {}))


def _build(conv, files, log):
    out = {}
    for name, mode, kw in files:
        t = time.time()
        out[name] = conv.convert(mode, **kw)
        log(f"{name}: {len(out[name]) / 1e6:.2f} MB in {time.time() - t:.1f} s")
    return out


def _latency(models: dict, row: dict, runs: int) -> dict:
    from tfspeed.profile import profile_models

    names = list(models)
    res = profile_models([models[n] for n in names], threads=[1], runs=runs, warmup=5, inputs=row, names=names,
                         isolate=False, progress=False)
    return {r["name"]: r["latency_ms"]["median"] for r in res.models}


def _evaluate(models: dict, split, ref, log) -> dict:
    labels = np.asarray(split.labels)
    out = {}
    for name, data in models.items():
        t = time.time()
        logits = TFLiteClassifier(data, 1).logits(split.features)
        hist = op_histogram(data)
        integer = integer_report(data)
        out[name] = {"accuracy": float(np.mean(logits.argmax(-1) == labels)),
                     "argmax_agreement_with_keras": float(np.mean(logits.argmax(-1) == ref.argmax(-1))),
                     **sizes(data), "fully_integer": integer["fully_integer"], "float_ops": integer["float_ops"],
                     "matmuls": hist["int8"], "eval_seconds": round(time.time() - t, 1)}
        log(f"{name}: accuracy {out[name]['accuracy']:.4f}, {out[name]['size_bytes'] / 1e6:.2f} MB, "
            f"integer-only {integer['fully_integer']} ({out[name]['eval_seconds']} s)")
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="the fine-tuned teacher's model directory")
    p.add_argument("--student", default=None, help="the pruned student's model directory (optional)")
    p.add_argument("--qat-file", default=None, help="the student's QAT int8 .tflite (with --student)")
    p.add_argument("--seq-length", type=int, default=64)
    p.add_argument("--max-drop", type=float, default=0.01)
    p.add_argument("--runs", type=int, default=30)
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "quantizer_minilm.json"))
    p.add_argument("--save-dir", default=None, help="also write the .tflite files here")
    args = p.parse_args(argv)
    from tfspeed.profile.env import environment

    env = environment()
    print(f"CPU: {env['cpu_model']} ({env['cpus_available']} cores), flags: {env['cpu_flags']}", flush=True)
    log = lambda m: print(m, flush=True)  # noqa: E731
    t0 = time.time()
    dataset = load_dataset("rotten_tomatoes")
    conv = Converter(args.model, args.seq_length, dataset)
    tok = Tokenizer(conv.vocab, seq_length=args.seq_length)
    test = EncodedSplit.from_split(dataset.test, tok)
    validation = EncodedSplit.from_split(dataset.validation, tok)
    ref = keras_logits(conv.keras_model, test, args.seq_length)
    keras_acc = float(np.mean(ref.argmax(-1) == test.labels))
    log(f"Keras test accuracy at seq {args.seq_length}: {keras_acc:.4f} ({len(test)} texts)")
    models = _build(conv, FILES, log)
    if args.save_dir:
        for name, data in models.items():
            _io.write_bytes(Path(args.save_dir) / f"teacher-{name.split()[0]}.tflite", data, overwrite=True)
    row = {k: v[:1] for k, v in test.features.items()}
    latency = _latency(models, row, args.runs)
    log("latency (ms, median, 1 thread): " + ", ".join(f"{k} {v:.2f}" for k, v in latency.items()))
    teacher = _evaluate(models, test, ref, log)
    f32, dyn = teacher["float32"], teacher["dynamic"]
    for name, r in teacher.items():
        r.update(latency_ms=latency[name], drop_vs_float32_points=100 * (f32["accuracy"] - r["accuracy"]),
                 size_vs_float32=r["size_bytes"] / f32["size_bytes"],
                 size_vs_dynamic=r["size_bytes"] / dyn["size_bytes"],
                 latency_vs_dynamic=latency[name] / latency["dynamic"])

    t = time.time()
    _, record = export_within_budget(conv, validation, max_drop=args.max_drop, objective="size",
                                     candidates=["dynamic", "int4", "int4-channel", "int4-hr", "int4-ffn",
                                                 "int8-weights",
                                                 "int4-weights", "int8-static", "16x8"], verbose=True)
    log(record.to_table())
    budget = {"record": record.to_dict(), "seconds": round(time.time() - t, 1)}

    student = None
    if args.student:
        sconv = Converter(args.student, args.seq_length, dataset)
        stok = Tokenizer(sconv.vocab, seq_length=args.seq_length)
        stest = EncodedSplit.from_split(dataset.test, stok)
        sref = keras_logits(sconv.keras_model, stest, args.seq_length)
        smodels = _build(sconv, STUDENT_FILES, log)
        if args.qat_file:
            smodels["qat-int8"] = Path(args.qat_file).read_bytes()
        qat_len = TFLiteClassifier(smodels["qat-int8"]).seq_length if args.qat_file else None
        srow = {k: v[:1] for k, v in stest.features.items()}
        slat = _latency({k: v for k, v in smodels.items() if k != "qat-int8" or qat_len == args.seq_length}, srow,
                        args.runs)
        sres = _evaluate(smodels, stest, sref, log)
        for name, r in sres.items():
            r["latency_ms"] = slat.get(name)
        student = {"model": args.student, "qat_file": args.qat_file, "qat_seq_length": qat_len,
                   "keras_test_accuracy": float(np.mean(sref.argmax(-1) == stest.labels)), "files": sres}
        log("student latency: " + ", ".join(f"{k} {v:.2f}" for k, v in slat.items()))

    within = [n for n, r in teacher.items() if r["drop_vs_float32_points"] <= 100 * args.max_drop]
    smallest = min(within, key=lambda n: teacher[n]["size_bytes"])
    integer = [n for n, r in teacher.items() if r["fully_integer"]]
    blockwise = {n: {"size_le_0.6x_dynamic": r["size_vs_dynamic"] <= 0.6, "drop_le_0.5_point":
                     r["drop_vs_float32_points"] <= 0.5} for n, r in teacher.items() if "-b" in n}
    targets = {
        "int4_blockwise": blockwise,
        "smallest_within_1_point": smallest,
        "smallest_within_1_point_size_le_0.15x_float32": teacher[smallest]["size_vs_float32"] <= 0.15,
        "integer_only_files": integer,
        "integer_only_within_1.5_points": {n: teacher[n]["drop_vs_float32_points"] <= 1.5 for n in integer},
    }
    log(f"\n{'file':<18} {'acc':>7} {'drop pt':>8} {'MB':>7} {'x f32':>6} {'x dyn':>6} {'gz MB':>7} {'ms':>7} "
        f"{'x dyn':>6} int-only")
    for name, r in teacher.items():
        log(f"{name:<18} {r['accuracy']:>7.4f} {r['drop_vs_float32_points']:>8.2f} {r['size_bytes'] / 1e6:>7.2f} "
            f"{r['size_vs_float32']:>6.3f} {r['size_vs_dynamic']:>6.3f} {r['gzip_bytes'] / 1e6:>7.2f} "
            f"{r['latency_ms']:>7.2f} {r['latency_vs_dynamic']:>6.2f} {r['fully_integer']}")
    log(str(targets))
    result = {"format_version": 1, "benchmark": "quantizer_minilm", "model": args.model,
              "seq_length": args.seq_length, "test_examples": len(test), "keras_test_accuracy": keras_acc,
              "latency": f"tfspeed.profile, median of {args.runs} interleaved runs, 1 thread, XNNPACK on",
              "teacher": teacher, "budget_size_objective": budget, "student": student, "targets": targets,
              "environment": env, "seconds": round(time.time() - t0, 1), "load_average": os.getloadavg()}
    _io.write_json(args.out, result, overwrite=True)
    log(f"Wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
