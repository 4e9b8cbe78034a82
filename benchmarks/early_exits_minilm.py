"""Early exits and a cascade on the fine-tuned MiniLM (Rotten Tomatoes): accuracy, layers used and real latency.

From a fine-tuned MiniLM model directory:

- exits after layers 1-5 (the encoder and the final classifier frozen), trained through `fit` for each variant:
  [CLS] or mean pooling, self-distillation from the final classifier or the labels;
- for each rule (confidence, entropy, patience) the threshold calibrated on the validation split for a 0.5-point
  budget, and what it gives on the test split (accuracy drop, mean layers, the distribution of exit layers), with the
  accuracy / mean-layers curve of every threshold;
- the best variant exported as a segmented dynamic-range .tflite (one signature per segment) and run with
  `ExitRunner` on every test review, interleaved review by review with the plain dynamic-range file of the same model
  at the same fixed length, 1 thread: the mean latency ratio (goal <= 0.5x at <= 0.5 point);
- a cascade: a smaller tfspeed model's .tflite answers when its top probability reaches a threshold calibrated on
  validation, else the teacher's; run on every test review the same way.

Writes benchmarks/results/early_exits_minilm.json and early_exits_minilm.png.

    python benchmarks/early_exits_minilm.py --model runs/demo/00-teacher --student runs/demo/02-distill
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from tfspeed import _io, artifacts, export
from tfspeed.compress import exits as E
from tfspeed.data import EncodedDataset, Tokenizer, load_dataset
from tfspeed.export import exits as X
from tfspeed.profile.env import environment

RESULTS = Path(__file__).parent / "results"
RULES = ("confidence", "entropy", "patience")


def _timed_interleaved(runs: dict, n: int, warmup: int = 10) -> dict:
    """Each callable of `runs` on every example i, interleaved example by example; seconds per example."""
    for i in range(min(warmup, n)):
        for fn in runs.values():
            fn(i)
    seconds = {name: np.zeros(n) for name in runs}
    for i in range(n):
        for name, fn in runs.items():
            start = time.perf_counter()
            fn(i)
            seconds[name][i] = time.perf_counter() - start
    return seconds


def _stats(s: np.ndarray) -> dict:
    ms = 1e3 * s
    return {"mean": float(ms.mean()), "p50": float(np.percentile(ms, 50)), "p90": float(np.percentile(ms, 90)),
            "p99": float(np.percentile(ms, 99))}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="fine-tuned MiniLM model directory (the teacher)")
    p.add_argument("--student", default=None, help="a smaller model directory for the cascade (e.g. the distilled "
                                                   "3-layer student)")
    p.add_argument("--seq-length", type=int, default=128, help="fixed length of the timed files")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--budget", type=float, default=0.005)
    p.add_argument("--variants", default="cls-distill,mean-distill,cls-labels",
                   help="POOLING-TARGET with the encoder frozen, or POOLING-joint: the POOLING-distill exits, then "
                        "the encoder, exits and final classifier trained together on the labels")
    p.add_argument("--joint-epochs", type=int, default=1)
    p.add_argument("--joint-learning-rate", type=float, default=3e-5)
    p.add_argument("--work", default="runs/exits")
    p.add_argument("--out", default=str(RESULTS / "early_exits_minilm.json"))
    args = p.parse_args(argv)
    env = environment()
    print(f"CPU: {env['cpu_model']} ({env['cpus_available']} cores), flags: {env.get('cpu_flags')}", flush=True)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    model, info = artifacts.load_model_dir(args.model)
    num_layers = len([la for la in model.layers if la.name.endswith("_output_layer_norm")])
    data = EncodedDataset(load_dataset("rotten_tomatoes"), Tokenizer(info.vocab_path, seq_length=args.seq_length))
    layers = tuple(range(1, num_layers))
    results = {"environment": env, "settings": vars(args), "layers": layers, "num_layers": num_layers,
               "variants": {}}
    best = None
    from tfspeed.train import accuracy

    reference = {"validation": accuracy(model, data.validation), "test": accuracy(model, data.test)}
    results["reference_accuracy"] = reference
    for variant in args.variants.split(","):
        pooling, target = variant.split("-")
        joint = target == "joint"
        saved = work / f"{variant}.keras"
        exits = E.add_exits(model, layers=layers, pooling=pooling, freeze=not joint)
        start = time.perf_counter()
        if saved.is_file():
            exits.load_weights(saved)
            train_seconds = None
        elif joint:  # the frozen-encoder exits first, then everything on the labels at a BERT learning rate
            exits.load_weights(work / f"{pooling}-distill.keras")
            E.fit_exits(exits, data.train, data.validation, epochs=args.joint_epochs, target="labels",
                        learning_rate=args.joint_learning_rate, verbose=2)
            train_seconds = time.perf_counter() - start
            exits.save_weights(saved)
        else:
            E.fit_exits(exits, data.train, data.validation, epochs=args.epochs, target=target, verbose=2)
            train_seconds = time.perf_counter() - start
            exits.save_weights(saved)
        pv, pt = E.exit_probabilities(exits, data.validation), E.exit_probabilities(exits, data.test)
        record = {"train_seconds": train_seconds,
                  "exit_accuracy_test": [float(np.mean(pt[:, j].argmax(-1) == data.test.labels))
                                         for j in range(pt.shape[1])], "rules": {}}
        for rule in RULES:
            cal = E.calibrate(pv, data.validation.labels, layers, num_layers, rule, args.budget,
                              reference_accuracy=reference["validation"])  # the budget: against the input model
            sim = E.simulate(pt, layers, num_layers, rule, cal.threshold)
            test_acc = float(np.mean(sim["predictions"] == data.test.labels))
            full = reference["test"]
            record["rules"][rule] = {
                "threshold": cal.threshold, "validation_accuracy": cal.accuracy,
                "validation_full_accuracy": cal.full_accuracy, "validation_mean_layers": cal.mean_layers,
                "test_accuracy": test_acc, "test_full_accuracy": full, "test_drop_points": 100 * (full - test_acc),
                "test_mean_layers": float(sim["layers_used"].mean()),
                "test_exit_counts": np.bincount(sim["exit_index"], minlength=len(layers) + 1).tolist(),
                "test_curve": E.curve(pt, data.test.labels, layers, num_layers, rule)}
            print(f"{variant} {rule}: threshold {cal.threshold:.4g}, validation {cal.accuracy:.4f} (full "
                  f"{cal.full_accuracy:.4f}), test {test_acc:.4f} (full {full:.4f}), mean layers "
                  f"{sim['layers_used'].mean():.2f}", flush=True)
            if best is None or record["rules"][rule]["validation_mean_layers"] < best[2]["validation_mean_layers"]:
                best = (variant, exits, {**record["rules"][rule], "rule": rule})
        results["variants"][variant] = record
        _io.write_json(args.out, results, overwrite=True)

    # --- the runtime that stops: segmented file vs the plain file, every test review, interleaved -----------------
    variant, exits, chosen = best
    print(f"timing {variant} / {chosen['rule']} at {args.seq_length} tokens ...", flush=True)
    seg = X.export_exits(exits, mode="dynamic", seq_length=args.seq_length)
    plain = export.convert(model, "dynamic", seq_length=args.seq_length, metadata=False)
    runner = X.ExitRunner(seg, layers, num_layers, chosen["rule"], chosen["threshold"])
    from ai_edge_litert.interpreter import Interpreter

    full = Interpreter(model_content=plain, num_threads=1)
    full.allocate_tensors()
    details = full.get_input_details()
    feats = data.test.features
    index_of = {name: next(d["index"] for d in details if name in d["name"]) for name in feats}
    out_index = full.get_output_details()[0]["index"]
    rows = [{k: v[i:i + 1] for k, v in feats.items()} for i in range(len(data.test))]
    found = {}

    def run_full(i):
        for name, value in rows[i].items():
            full.set_tensor(index_of[name], value)
        full.invoke()
        return full.get_tensor(out_index)

    def run_exits(i):
        found[i] = runner.run(rows[i])

    seconds = _timed_interleaved({"plain": run_full, "exits": run_exits}, len(rows))
    index = np.asarray([found[i][1] for i in range(len(rows))])
    preds = np.asarray([found[i][0].argmax() for i in range(len(rows))])
    plain_preds = np.asarray([run_full(i)[0].argmax() for i in range(len(rows))])
    results["runtime"] = {
        "variant": variant, "rule": chosen["rule"], "threshold": chosen["threshold"], "seq_length": args.seq_length,
        "plain_ms": _stats(seconds["plain"]), "exits_ms": _stats(seconds["exits"]),
        "mean_ratio": float(seconds["exits"].mean() / seconds["plain"].mean()),
        "accuracy": float(np.mean(preds == data.test.labels)),
        "plain_accuracy": float(np.mean(plain_preds == data.test.labels)),
        "drop_points": 100 * float(np.mean(plain_preds == data.test.labels) - np.mean(preds == data.test.labels)),
        "exit_counts": np.bincount(index, minlength=len(layers) + 1).tolist(),
        "mean_layers": float(np.mean(np.asarray(list(layers) + [num_layers])[index])),
        "size_bytes": {"plain": len(plain), "segmented": len(seg)}}
    r = results["runtime"]
    print(f"exits: mean {r['exits_ms']['mean']:.2f} ms vs plain {r['plain_ms']['mean']:.2f} ms "
          f"({r['mean_ratio']:.3f}x), accuracy {r['accuracy']:.4f} vs {r['plain_accuracy']:.4f}, exits at "
          f"{r['exit_counts']}", flush=True)
    _io.write_json(args.out, results, overwrite=True)

    # --- the cascade: the student's file first, the teacher's when it is unsure ---------------------------------
    if args.student:
        from tfspeed.export.text_classifier import TextClassifier

        sdir = Path(args.student)
        s_model, s_info = artifacts.load_model_dir(sdir)
        s_file = work / "student-dynamic.tflite"
        t_file = work / "teacher-dynamic.tflite"
        if not s_file.is_file():
            s_file.write_bytes(export.convert(str(sdir), "dynamic", seq_length=args.seq_length))
        if not t_file.is_file():
            t_file.write_bytes(export.convert(str(args.model), "dynamic", seq_length=args.seq_length))
        first, second = TextClassifier(s_file), TextClassifier(t_file)
        dataset = data.dataset
        val_texts, test_texts = list(dataset.validation.texts), list(dataset.test.texts)
        fv, sv = first.predict_proba(val_texts), second.predict_proba(val_texts)
        t0 = time.perf_counter()
        first.predict_proba(test_texts[:200])
        t1 = time.perf_counter()
        second.predict_proba(test_texts[:200])
        cost_ratio = (t1 - t0) / (time.perf_counter() - t1)
        cal = X.calibrate_cascade(fv, sv, dataset.validation.labels, cost_ratio, args.budget)
        cascade = X.CascadeRunner(first, second, cal["threshold"])
        got = {}

        def run_cascade(i):
            got[i] = cascade.classify(test_texts[i])

        def run_teacher(i):
            second.predict_proba([test_texts[i]])

        seconds = _timed_interleaved({"teacher": run_teacher, "cascade": run_cascade}, len(test_texts))
        preds = np.asarray([got[i][0].argmax() for i in range(len(test_texts))])
        which = np.asarray([got[i][1] for i in range(len(test_texts))])
        teacher_preds = second.predict_proba(test_texts).argmax(-1)
        labels = dataset.test.labels
        results["cascade"] = {
            "student": str(sdir), "threshold": cal["threshold"], "cost_ratio": cost_ratio,
            "validation_accuracy": cal["accuracy"], "validation_full_accuracy": cal["full_accuracy"],
            "teacher_ms": _stats(seconds["teacher"]), "cascade_ms": _stats(seconds["cascade"]),
            "mean_ratio": float(seconds["cascade"].mean() / seconds["teacher"].mean()),
            "accuracy": float(np.mean(preds == labels)), "teacher_accuracy": float(np.mean(teacher_preds == labels)),
            "drop_points": 100 * float(np.mean(teacher_preds == labels) - np.mean(preds == labels)),
            "teacher_share": float(which.mean()), "validation_curve": cal["curve"]}
        c = results["cascade"]
        print(f"cascade: mean {c['cascade_ms']['mean']:.2f} ms vs teacher {c['teacher_ms']['mean']:.2f} ms "
              f"({c['mean_ratio']:.3f}x, tokenization included), accuracy {c['accuracy']:.4f} vs "
              f"{c['teacher_accuracy']:.4f}, teacher answers {100 * c['teacher_share']:.1f}%", flush=True)
        _io.write_json(args.out, results, overwrite=True)
    _plot(results, Path(args.out).with_suffix(".png"))
    print(f"Wrote {args.out}")
    return 0


def _plot(results: dict, path: Path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for variant, record in results["variants"].items():
        for rule, r in record["rules"].items():
            pts = r["test_curve"]
            ax.plot([q["mean_layers"] for q in pts], [100 * q["accuracy"] for q in pts], label=f"{variant} {rule}",
                    lw=1)
    ax.set_xlabel("mean layers used (test split)")
    ax.set_ylabel("accuracy (%)")
    ax.set_title("Early exits on the fine-tuned MiniLM: accuracy against layers used")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    raise SystemExit(main())
