"""Distilling the fine-tuned MiniLM-L6 teacher (Rotten Tomatoes) into 3- and 2-layer students.

Stages (each adds its figures to benchmarks/results/distill_minilm.json as soon as it ends, so a long run can be
followed and resumed with --stages):

- teacher:   the teacher's test / validation accuracy, its training logits computed once (cached on disk);
- distill3:  3-layer student (teacher layers 0, 2, 4, as DistilBERT), distilled from the cached logits;
- finetune3: the same 3-layer student fine-tuned on the labels alone (same epochs, rate, batches): the control;
- distill2:  2-layer student (teacher layers 0, 2), distilled;
- latency:   dynamic-range TFLite of teacher and students, timed interleaved with `tfspeed.profile` (batch 1).

Training and accuracy use the teacher's seq_length (128; batches are length-bucketed, so the padding costs nothing and
no Rotten Tomatoes review, at most 78 tokens, is cut). Latency is measured on fixed [1, seq] signatures at 64 and 128.

    nice -n 5 python benchmarks/distill_minilm.py [--teacher /work/runs/teacher] [--epochs 3] [--stages ...]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from tfspeed import _io, artifacts  # noqa: E402
from tfspeed.compat import keras, tf  # noqa: E402
from tfspeed.compress.distillation import Distiller, student_from_teacher, teacher_logits  # noqa: E402
from tfspeed.data import EncodedDataset, Tokenizer, load_dataset  # noqa: E402
from tfspeed.train import EpochTimer, accuracy, fit_classifier, make_optimizer  # noqa: E402

RESULT = HERE / "results" / "distill_minilm.json"
STAGES = ("teacher", "distill3", "finetune3", "distill2", "latency")


def log(*parts):
    print(time.strftime("%H:%M:%S"), *parts, flush=True)


class Progress(keras.callbacks.Callback):
    def __init__(self, what, every=50):
        super().__init__()
        self.what, self.every = what, every

    def on_train_batch_end(self, batch, logs=None):
        if batch % self.every == 0:
            log(f"  {self.what} step {batch}: " + ", ".join(f"{k}={float(v):.4f}" for k, v in (logs or {}).items()))

    def on_epoch_end(self, epoch, logs=None):
        values = ", ".join(f"{k}={float(v):.4f}" for k, v in (logs or {}).items())
        log(f"  {self.what} epoch {epoch + 1} done: {values}")


def load_results() -> dict:
    return json.loads(RESULT.read_text()) if RESULT.is_file() else {}


def save_results(results: dict):
    _io.write_json(RESULT, results, overwrite=True, argument="result")


def student_metrics(model, encoded, teacher_acc, timer, history, extra):
    acc = accuracy(model, encoded.test)
    return {"accuracy": acc, "validation_accuracy": accuracy(model, encoded.validation),
            "accuracy_ratio_vs_teacher": acc / teacher_acc, "params": int(model.count_params()),
            "seconds_per_epoch": timer.seconds,
            "history": {k: [float(v) for v in vs] for k, vs in history.history.items() if k != "seconds_per_epoch"},
            **extra}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teacher", default="/work/runs/teacher")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--learning-rate", type=float, default=1e-4)
    p.add_argument("--alpha", type=float, default=0.5)
    p.add_argument("--temperature", type=float, default=2.0)
    p.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated among {STAGES}")
    p.add_argument("--save-dir", default="/work/runs/distill", help="where the students' model directories go")
    p.add_argument("--runs", type=int, default=100, help="timed runs per model and setting (latency)")
    args = p.parse_args(argv)
    stages = args.stages.split(",")
    if not (Path(args.teacher) / "metrics.json").is_file():
        raise SystemExit(f"ERROR: no teacher at {args.teacher} (metrics.json missing)")

    results = load_results()
    results.update({"benchmark": "distill_minilm", "format_version": 1, "teacher_dir": args.teacher,
                    "machine": {"platform": platform.platform(), "processor": platform.processor(),
                                "cpu_count": __import__("os").cpu_count(), "tensorflow": tf.__version__},
                    "settings": {"epochs": args.epochs, "batch_size": args.batch_size,
                                 "learning_rate": args.learning_rate, "alpha": args.alpha,
                                 "temperature": args.temperature, "schedule": "AdamW, 10% warm-up, linear decay",
                                 "cached_teacher_logits": True}})
    teacher, info = artifacts.load_model_dir(args.teacher)
    seq = info.seq_length
    results["settings"]["train_seq_length"] = seq
    log(f"teacher {args.teacher}: seq_length {seq}, labels {info.label_names}")
    encoded = EncodedDataset(load_dataset("rotten_tomatoes"), Tokenizer(info.vocab_path, seq_length=seq))
    log(f"data: train {len(encoded.train)}, validation {len(encoded.validation)}, test {len(encoded.test)}")

    if "teacher" in stages or "teacher" not in results:
        start = time.perf_counter()
        results["teacher"] = {"accuracy": accuracy(teacher, encoded.test),
                              "validation_accuracy": accuracy(teacher, encoded.validation),
                              "params": int(teacher.count_params()), "num_layers": 6,
                              "recorded_accuracy": artifacts.read_metrics(args.teacher).get("accuracy")}
        log(f"teacher test accuracy {results['teacher']['accuracy']:.4f} ({time.perf_counter() - start:.0f} s)")
        save_results(results)
    teacher_acc = results["teacher"]["accuracy"]

    start = time.perf_counter()
    cache = _io.cache_dir() / "distill" / "minilm_rt_teacher_train_logits.npz"
    cache.parent.mkdir(parents=True, exist_ok=True)
    logits = teacher_logits(teacher, encoded.train, cache=cache)
    results["teacher"]["train_logits_seconds"] = time.perf_counter() - start
    log(f"teacher train logits {logits.shape} in {results['teacher']['train_logits_seconds']:.0f} s (cache {cache})")
    steps = -(-len(encoded.train) // args.batch_size)

    def distilled(layers, key):
        keras.utils.set_random_seed(0)
        student = student_from_teacher(teacher, layers=layers)
        distiller = Distiller(teacher, student, alpha=args.alpha, temperature=args.temperature)
        distiller.compile(optimizer=make_optimizer(args.learning_rate, steps * args.epochs))
        timer = EpochTimer()
        log(f"{key}: distilling a {layers}-layer student (teacher layers {list(range(0, 2 * layers, 2))})")
        history = distiller.fit(encoded.train.dataset(args.batch_size, shuffle=True, seed=0, extra=logits),
                                epochs=args.epochs, callbacks=[timer, Progress(key)], verbose=0)
        results[key] = student_metrics(student, encoded, teacher_acc, timer, history,
                                       {"num_layers": layers, "teacher_layers": list(range(0, 2 * layers, 2)),
                                        "method": f"distilled (alpha {args.alpha}, T {args.temperature})"})
        return student

    def finetuned(layers, key):
        keras.utils.set_random_seed(0)
        student = student_from_teacher(teacher, layers=layers)
        timer = EpochTimer()
        log(f"{key}: fine-tuning a {layers}-layer student on labels only")
        history = fit_classifier(student, encoded.train, epochs=args.epochs, batch_size=args.batch_size,
                                 learning_rate=args.learning_rate, callbacks=[timer, Progress(key)], verbose=0)
        results[key] = student_metrics(student, encoded, teacher_acc, timer, history,
                                       {"num_layers": layers, "teacher_layers": list(range(0, 2 * layers, 2)),
                                        "method": "fine-tuned without distillation (same init, epochs, rate)"})
        return student

    jobs = {"distill3": lambda: distilled(3, "distill3"), "finetune3": lambda: finetuned(3, "finetune3"),
            "distill2": lambda: distilled(2, "distill2")}
    for key, job in jobs.items():
        if key not in stages:
            continue
        student = job()
        r = results[key]
        log(f"{key}: test accuracy {r['accuracy']:.4f} = {r['accuracy_ratio_vs_teacher']:.3f} x teacher "
            f"({teacher_acc:.4f}); {sum(r['seconds_per_epoch']):.0f} s training")
        out = Path(args.save_dir) / key
        new_info = artifacts.ModelInfo(seq_length=seq, label_names=info.label_names, base=info.base,
                                       stage="distill" if key.startswith("distill") else "finetune",
                                       vocab_path=info.vocab_path, extra={"teacher": args.teacher, "benchmark": key})
        artifacts.save_model_dir(student, out, new_info, {**r, "teacher_accuracy": teacher_acc}, overwrite=True)
        r["model_dir"] = str(out)
        save_results(results)

    if "latency" in stages:
        results["latency"] = latency(teacher, args, results)
        save_results(results)
    summary(results)


def latency(teacher, args, results) -> dict:
    """Dynamic-range TFLite of teacher and students, timed interleaved (A B C A B C ...) on the same inputs."""
    from tfspeed.export.convert import convert
    from tfspeed.profile import profile_models

    models = {"teacher": teacher}
    for key in ("distill3", "distill2"):
        if key in results and Path(results[key].get("model_dir", "")).is_dir():
            models[key] = artifacts.load_model_dir(results[key]["model_dir"])[0]
    out = {"mode": "dynamic", "batch": 1, "tool": "tfspeed.profile.profile_models (interleaved, XNNPACK)",
           "runs": args.runs}
    for seq in (64, 128):
        flat = {}
        for name, model in models.items():
            start = time.perf_counter()
            flat[name] = convert(model, mode="dynamic", seq_length=seq)
            log(f"latency: converted {name} at seq {seq} ({len(flat[name]) / 1e6:.1f} MB, "
                f"{time.perf_counter() - start:.0f} s)")
        result = profile_models(list(flat.values()), names=list(flat), baseline="teacher", threads=[1, 2],
                                runs=args.runs, warmup=10, progress=False)
        print(result.to_table(), flush=True)
        rows = {}
        for row in result.models:
            rows.setdefault(row["name"], {})[f"threads_{row['threads']}"] = {
                "median_ms": row["latency_ms"]["median"], "mad_ms": row["latency_ms"]["mad"],
                "p90_ms": row["latency_ms"]["p90"], "min_ms": row["latency_ms"]["min"],
                "ratio_vs_teacher": row.get("ratio_vs_baseline"),
                "size_bytes": row.get("size_bytes")}
        out[f"seq_{seq}"] = rows
        for rows_ in rows.values():  # min-latency ratio: less sensitive to other processes on shared cores
            for key, r in rows_.items():
                r["min_ratio_vs_teacher"] = r["min_ms"] / rows["teacher"][key]["min_ms"]
        out["environment"] = result.environment
        out["load_average_1min"] = __import__("os").getloadavg()[0]
    return out


def summary(results):
    t = results.get("teacher", {})
    print("\n| model | test accuracy | vs teacher | params |")
    print("|---|---|---|---|")
    print(f"| teacher (MiniLM-L6, fine-tuned) | {t.get('accuracy', 0):.4f} | 1.000 | {t.get('params', 0):,} |")
    for key in ("distill3", "finetune3", "distill2"):
        if key in results:
            r = results[key]
            print(f"| {key}: {r['method']} | {r['accuracy']:.4f} | {r['accuracy_ratio_vs_teacher']:.3f} | "
                  f"{r['params']:,} |")
    lat = results.get("latency")
    if lat:
        for seq in (64, 128):
            for threads in (1, 2):
                cells = []
                for name, rows in lat.get(f"seq_{seq}", {}).items():
                    r = rows.get(f"threads_{threads}")
                    if r:
                        ratio = r["ratio_vs_teacher"]
                        cells.append(f"{name} {r['median_ms']:.2f} ms"
                                     + (f" ({ratio:.2f}x)" if isinstance(ratio, (int, float)) else "")
                                     + (f" [min {r['min_ms']:.2f} ms, {r['min_ratio_vs_teacher']:.2f}x]"
                                        if "min_ms" in r else ""))
                print(f"latency seq {seq}, {threads} thread(s): " + "; ".join(cells))
    print(f"\nWrote {RESULT}")


if __name__ == "__main__":
    main()
