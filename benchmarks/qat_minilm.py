"""QAT of the fine-tuned MiniLM-L6 teacher on Rotten Tomatoes: int8 .tflite accuracy and latency against post-training
quantization.

Reads the teacher model directory (default /work/runs/teacher: minilm-l6 fine-tuned on rotten_tomatoes), QAT
fine-tunes it for `--epochs` (default 1) at `--seq-length` (default 64: RT texts are at most 78 tokens, nothing worth
noting is cut), converts to int8, and measures on the test split:

- test accuracy of the Keras float teacher, the QAT Keras model, the QAT .tflite; Keras-vs-.tflite argmax agreement;
- % of FULLY_CONNECTED and BATCH_MATMUL ops int8 in the file;
- naive full-int8 post-training quantization (no float fallback, calibrated on 200 training texts), dynamic range
  and int8-mixed (LayerNorm statistics / softmax / GELU kept float) accuracy;
- latency of QAT int8 vs PTQ int8 vs dynamic range (vs int8-mixed), interleaved with `tfspeed.profile`.

Usage (slow: one QAT epoch is several minutes on 2 shared cores):

    nice -n 5 python benchmarks/qat_minilm.py [--teacher /work/runs/teacher] [--epochs 1] [--seq-length 64]

Prints progress and the results; writes benchmarks/results/qat_minilm.json and the QAT model directory + .tflite files
to `--work` (default /work/runs/qat_minilm).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tfspeed import _io, artifacts, export  # noqa: E402
from tfspeed.compat import keras  # noqa: E402
from tfspeed.compress import quantization as Q  # noqa: E402
from tfspeed.compress.quantization.config import parse_float_outputs  # noqa: E402
from tfspeed.data import EncodedDataset, Tokenizer, load_dataset  # noqa: E402
from tfspeed.export.quantized import int8_fractions, to_tflite  # noqa: E402
from tfspeed.train import predict_logits  # noqa: E402

RESULT = ROOT / "benchmarks" / "results" / "qat_minilm.json"


def log(*args):
    print(f"[{time.strftime('%H:%M:%S')}]", *args, flush=True)


class Progress(keras.callbacks.Callback):
    def __init__(self, every=50):
        super().__init__()
        self.every, self.start = every, time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        if batch % self.every == 0:
            logs = logs or {}
            loss, acc = logs.get("loss", float("nan")), logs.get("accuracy", float("nan"))
            log(f"  batch {batch}: loss {loss:.4f} acc {acc:.4f}"
                f" ({time.perf_counter() - self.start:.0f}s)")


def tflite_eval(name, data, split, keras_logits=None):
    t = time.perf_counter()
    logits = export.evaluate(data, split)
    row = {"accuracy": float(np.mean(logits.argmax(-1) == split.labels)),
           "int8_fraction": int8_fractions(data), **export.sizes(data),
           "float_ops": export.op_histogram(data)["float_ops"], "eval_seconds": time.perf_counter() - t}
    if keras_logits is not None:
        row["argmax_agreement"] = float(np.mean(logits.argmax(-1) == keras_logits.argmax(-1)))
        row["max_abs_logit_diff"] = float(np.abs(logits - keras_logits).max())
    log(f"{name}: accuracy {row['accuracy']:.4f}, int8 {row['int8_fraction']}, {row['size_bytes'] / 1e6:.1f} MB")
    return row


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--teacher", default="/work/runs/teacher")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--seq-length", type=int, default=64)
    p.add_argument("--learning-rate", type=float, default=2e-5)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--calibration-samples", type=int, default=200)
    p.add_argument("--runs", type=int, default=100, help="timed runs per model and thread count")
    p.add_argument("--work", default="/work/runs/qat_minilm", help="where the QAT model and .tflite files go")
    p.add_argument("--limit", type=int, default=None, help="training examples (quick runs)")
    p.add_argument("--float-outputs", default="",
                   help="comma-separated layer-name regexes kept float (`tfspeed qat --float-outputs`); 'outliers' = "
                        "the FFN output projections (default: none, every matmul int8)")
    p.add_argument("--outlier-channels", choices=("auto", "none"), default="auto",
                   help="`tfspeed qat --outlier-channels` (default: auto)")
    p.add_argument("--smooth", choices=("auto", "none"), default="auto",
                   help="`tfspeed qat --smooth` (default: auto)")
    p.add_argument("--calibration-percentile", type=float, default=99.99,
                   help="`tfspeed qat --calibration-percentile`; 0 for min / max (default: 99.99)")
    p.add_argument("--distill", action=argparse.BooleanOptionalAction, default=True,
                   help="`tfspeed qat --distill` (from the float model; default: on)")
    p.add_argument("--freeze-ranges", action=argparse.BooleanOptionalAction, default=True,
                   help="`tfspeed qat --freeze-ranges` (default: on)")
    args = p.parse_args(argv)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()

    teacher, info = artifacts.load_model_dir(args.teacher)
    dataset = load_dataset("rotten_tomatoes")
    encoded = EncodedDataset(dataset, Tokenizer(info.vocab_path, seq_length=args.seq_length), limit=args.limit)
    test = encoded.test
    log(f"teacher {args.teacher}: {len(encoded.train)} train / {len(test)} test examples at seq_length "
        f"{args.seq_length}")
    teacher_logits = predict_logits(teacher, test)
    results = {"teacher": args.teacher, "seq_length": args.seq_length, "epochs": args.epochs,
               "learning_rate": args.learning_rate, "batch_size": args.batch_size, "calibration_batches": 8,
               "calibration_percentile": args.calibration_percentile, "freeze_ranges": args.freeze_ranges,
               "distill": args.distill, "split": "test",
               "num_examples": len(test), "train_examples": len(encoded.train),
               "float_keras_accuracy": float(np.mean(teacher_logits.argmax(-1) == test.labels))}
    log(f"float teacher (Keras) accuracy {results['float_keras_accuracy']:.4f}")

    float_outputs = parse_float_outputs(args.float_outputs)
    results["float_outputs"] = list(float_outputs)
    log(f"QAT fine-tuning: {args.epochs} epoch(s), lr {args.learning_rate}, float outputs {list(float_outputs)}")
    t = time.perf_counter()
    qat_model, history = Q.qat_fit(teacher, encoded.train, encoded.validation, epochs=args.epochs,
                                   batch_size=args.batch_size, learning_rate=args.learning_rate,
                                   callbacks=[Progress()], verbose=0, calibration_batches=8,
                                   float_outputs=float_outputs,
                                   outlier_channels=None if args.outlier_channels == "none" else "auto",
                                   smooth=None if args.smooth == "none" else "auto",
                                   calibration_percentile=args.calibration_percentile or None,
                                   freeze_ranges=args.freeze_ranges, distill=args.distill)
    results["outlier_channels"] = Q.split_of(qat_model)
    results["smoothed_layer_norms"] = Q.smoothed_layer_norms(qat_model)
    results["outlier_heads"] = Q.split_heads_of(qat_model)
    log(f"outlier channels computed apart: {results['outlier_channels']}")
    results["qat_train_seconds"] = time.perf_counter() - t
    results["qat_history"] = {k: [float(v) for v in vs] for k, vs in history.history.items()}
    qat_logits = predict_logits(qat_model, test)
    results["qat_keras_accuracy"] = float(np.mean(qat_logits.argmax(-1) == test.labels))
    log(f"QAT Keras accuracy {results['qat_keras_accuracy']:.4f} ({results['qat_train_seconds']:.0f}s training)")

    files = {}
    t = time.perf_counter()
    files["qat_int8"] = to_tflite(qat_model, args.seq_length)
    results["qat_convert_seconds"] = time.perf_counter() - t
    out_dir = work / "qat_model"
    minfo = artifacts.ModelInfo(seq_length=args.seq_length, label_names=info.label_names, base=str(args.teacher),
                                stage="qat", vocab_path=info.vocab_path, extra={"tflite": "model_int8.tflite"})
    artifacts.save_model_dir(qat_model, out_dir, minfo, {"accuracy": results["qat_keras_accuracy"]}, overwrite=True,
                             extra_files=lambda tmp: (tmp / "model_int8.tflite").write_bytes(files["qat_int8"]))
    rows = {"qat_int8": tflite_eval("QAT int8", files["qat_int8"], test, qat_logits)}

    log("post-training conversions of the float teacher")
    converter = export.Converter(teacher, seq_length=args.seq_length, calibration=encoded.train,
                                 num_calibration_samples=args.calibration_samples)
    for name, mode in (("ptq_int8", "int8"), ("dynamic", "dynamic"), ("ptq_int8_mixed", "int8-mixed")):
        t = time.perf_counter()
        files[name] = converter.convert(mode)
        log(f"{name} converted in {time.perf_counter() - t:.0f}s")
        rows[name] = tflite_eval(name, files[name], test, teacher_logits)
    for name, data in files.items():
        _io.write_bytes(work / f"{name}.tflite", data, overwrite=True)
    results["tflite"] = rows
    results["qat_minus_float_points"] = 100 * (rows["qat_int8"]["accuracy"] - results["float_keras_accuracy"])
    results["qat_minus_ptq_int8_points"] = 100 * (rows["qat_int8"]["accuracy"] - rows["ptq_int8"]["accuracy"])

    log("latency (interleaved, tfspeed.profile)")
    row = {k: v[:1] for k, v in export.calibration.fit_features(test.features, args.seq_length).items()}
    names = ["qat_int8", "ptq_int8", "dynamic", "ptq_int8_mixed"]
    try:
        from tfspeed.profile import profile_models
        _io.write_json(RESULT, results, overwrite=True)  # the accuracy numbers are safe even if profiling fails

        prof = profile_models([files[n] for n in names], names=names, threads=[1, 2], runs=args.runs, warmup=10,
                              inputs=row, progress=False)
        results["latency_source"] = "tfspeed.profile.profile_models (interleaved, XNNPACK on, batch 1)"
        results["latency_ms"] = [{"name": r["name"], "threads": r.get("threads"), "xnnpack": r.get("xnnpack"),
                                  **{k: r["latency_ms"][k] for k in ("median", "mad", "p90") if k in r["latency_ms"]}}
                                 for r in prof.models]
        print(prof.to_table(), flush=True)
        prof.to_json(work / "profile.json", overwrite=True)
    except Exception as e:  # noqa: BLE001 - profiler missing or failing: plain interleaved timer
        log(f"tfspeed.profile failed ({type(e).__name__}: {e}); interleaved perf_counter loop instead")
        runners = {n: export.TFLiteClassifier(files[n]) for n in names}
        times = {n: [] for n in names}
        for _ in range(args.runs):
            for n in names:
                s = time.perf_counter()
                runners[n](row)
                times[n].append((time.perf_counter() - s) * 1e3)
        results["latency_source"] = "interleaved perf_counter loop, 1 thread"
        results["latency_ms"] = [{"name": n, "threads": 1, "median": float(np.median(v))} for n, v in times.items()]
    results["total_seconds"] = time.perf_counter() - t0
    _io.write_json(RESULT, results, overwrite=True)
    print(json.dumps({k: v for k, v in results.items() if k not in ("qat_history",)}, indent=2, default=str))
    log(f"wrote {RESULT}")


if __name__ == "__main__":
    main()
