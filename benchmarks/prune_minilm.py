"""Pruning the fine-tuned MiniLM-L6 (Rotten Tomatoes): accuracy, sparsity, sizes, structured speed-up.

Runs, each from the teacher at /work/runs/teacher (fine-tuned minilm-l6, seq_length 128) evaluated at seq_length 64
(Rotten Tomatoes texts are at most 78 tokens; batches are length-bucketed):

- dense: the teacher itself (test accuracy, gzip of weights and of the float / dynamic-range .tflite).
- TFMOT 50% polynomial, TFMOT 2:4 and TFMOT 80% polynomial, each with pruning fine-tuning (AdamW, lr 3e-5, 1 epoch over
  the first `--limit` training examples), then strip. Targets: attention/FFN/pooler kernels plus the word embeddings
  (the embedding table is half of MiniLM's weights: without it the gzip ratio cannot reach 0.75).
- structured: heads=0.5, ffn=0.5 (Taylor importance on 16 training batches), then fine-tuning; TF-Hub export checked;
  dynamic-range .tflite latency against the dense one, interleaved, with `tfspeed.profile.profile_models`.

Writes benchmarks/results/prune_minilm.json after every run (so a partial run keeps what it measured).

    nice -n 5 python benchmarks/prune_minilm.py [--teacher /work/runs/teacher] [--epochs 1] [--quick]
"""

from __future__ import annotations

import argparse
import gzip
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tfspeed.compat import keras, tf  # noqa: E402,F401

RESULT = ROOT / "benchmarks" / "results" / "prune_minilm.json"


def log(*args):
    print(time.strftime("%H:%M:%S"), *args, flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", default="/work/runs/teacher")
    parser.add_argument("--seq-length", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=1, help="pruning fine-tuning epochs (default: 1)")
    parser.add_argument("--structured-epochs", type=int, default=2, help="(default: 2)")
    parser.add_argument("--learning-rate", type=float, default=3e-5)
    parser.add_argument("--runs", default="dense,structured,p50,m24,p80",
                        help="comma-separated runs, in order (default: all; also p50enc, and m24g: one epoch at 1:4 "
                             "before 2:4)")
    parser.add_argument("--include-embeddings", action=argparse.BooleanOptionalAction, default=True,
                        help="prune the word embeddings too in p50/m24/p80 (default: on; p50enc never does)")
    parser.add_argument("--embedding-sparsity", type=float, default=None,
                        help="the embedding tables' own sparsity, unstructured even in m24/m24g (default: as the "
                             "kernels)")
    parser.add_argument("--distill", action="store_true",
                        help="p50/m24/p80 fine-tune with distillation from the dense model (`tfspeed prune --distill`)")
    parser.add_argument("--hidden-weight", type=float, default=0.0,
                        help="with --distill: weight of the layer-by-layer hidden-state MSE to the dense model "
                             "(default: 0, logits only)")
    parser.add_argument("--frequency", type=int, default=10,
                        help="steps between mask updates (default: 10; each update of the 30522x384 embedding "
                             "mask is costly)")
    parser.add_argument("--limit", type=int, default=4000,
                        help="training examples used for pruning fine-tuning and Taylor scores (default: 4000 of "
                             "10209: the shared machine is slow; 0 = all)")
    parser.add_argument("--quick", action="store_true", help="tiny data subset (smoke test of the script)")
    parser.add_argument("--latency-runs", type=int, default=150)
    parser.add_argument("--latency-repeats", type=int, default=3)
    parser.add_argument("--latency-from", default=None,
                        help="only re-measure latency from DIR/dense_dynamic.tflite and DIR/structured_dynamic.tflite")
    parser.add_argument("--out", default=str(RESULT))
    args = parser.parse_args(argv)
    if args.latency_from:
        return latency_only(args)

    from tfspeed import artifacts
    from tfspeed.compress import pruning as P
    from tfspeed.compress import structured as S
    from tfspeed.data import EncodedDataset, Tokenizer, load_dataset
    from tfspeed.export.sparsity import sparsity_report, to_tflite
    from tfspeed.train import accuracy, fit_classifier

    if not (Path(args.teacher) / "metrics.json").is_file():
        sys.exit(f"{args.teacher}/metrics.json does not exist yet: the teacher is not ready.")
    teacher, info = artifacts.load_model_dir(args.teacher)
    limit = 256 if args.quick else args.limit
    if args.quick:  # 8 steps per epoch: a mask update every 10 steps would never reach the polynomial target
        args.frequency = 1
    limit = limit or None
    encoded = EncodedDataset(load_dataset("rotten_tomatoes"), Tokenizer(info.vocab_path, args.seq_length),
                             limit=limit, eval_limit=128 if args.quick else None)
    steps = -(-len(encoded.train) // 32)
    out = Path(args.out)
    work = Path(tempfile.mkdtemp(prefix="prune_minilm_"))
    result = {"format_version": 1, "tool": "benchmarks/prune_minilm.py", "teacher": args.teacher,
              "teacher_metrics_accuracy_seq128": artifacts.read_metrics(args.teacher).get("accuracy"),
              "seq_length": args.seq_length, "dataset": "rotten_tomatoes", "train_examples": len(encoded.train),
              "test_examples": len(encoded.test), "batch_size": 32, "learning_rate": args.learning_rate,
              "machine": {"cpu": platform.processor() or platform.machine(), "python": platform.python_version(),
                          "tensorflow": tf.__version__, "note": "2 shared cores, other jobs running: timings noisy"},
              "runs": {}}
    tflites = {}

    def save():
        out.parent.mkdir(parents=True, exist_ok=True)
        from tfspeed import _io

        _io.write_json(out, result, overwrite=True)

    def measure(name, model, extra, include_embeddings):
        t = time.perf_counter()
        acc = accuracy(model, encoded.test)
        report = sparsity_report(model, include_embeddings=include_embeddings, tflite=False)
        encoder_only = sparsity_report(model, tflite=False)["sparsity"]
        report["tflite"] = {}
        for mode in ("float", "dynamic"):
            content = to_tflite(model, mode, args.seq_length)
            report["tflite"][mode] = {"bytes": len(content), "gzip_bytes": len(gzip.compress(content, 6))}
        tflites[name] = content
        row = {"accuracy": acc, "sparsity_targeted": report["sparsity"], "sparsity_encoder_kernels": encoder_only,
               "include_embeddings": include_embeddings, "model_sparsity": report["model_sparsity"],
               "weights_gzip_bytes": report["weights_gzip_bytes"], "tflite": report["tflite"],
               "params": S.parameter_count(model), **extra}
        if "dense" in result["runs"]:
            dense = result["runs"]["dense"]
            row["accuracy_delta_vs_dense_points"] = 100 * (acc - dense["accuracy"])
            row["dynamic_gzip_ratio_vs_dense"] = (report["tflite"]["dynamic"]["gzip_bytes"]
                                                  / dense["tflite"]["dynamic"]["gzip_bytes"])
            row["float_gzip_ratio_vs_dense"] = (report["tflite"]["float"]["gzip_bytes"]
                                                / dense["tflite"]["float"]["gzip_bytes"])
        result["runs"][name] = row
        save()
        log(name, json.dumps({k: v for k, v in row.items() if k not in ("tflite", "history")}),
            f"(measured in {time.perf_counter() - t:.0f}s)")
        return row

    def fit_pruned(pruned, epochs):
        callbacks = P.pruning_callbacks(per_layer=False)
        if args.distill:
            from tfspeed.compress.distillation import fit_student

            return fit_student(pruned, teacher, encoded.train, None, epochs=epochs, batch_size=32,
                               learning_rate=args.learning_rate, hidden_weight=args.hidden_weight,
                               callbacks=callbacks, verbose=2)
        return fit_classifier(pruned, encoded.train, None, epochs=epochs, batch_size=32,
                              learning_rate=args.learning_rate, callbacks=callbacks, verbose=2)

    def unstructured(name, sparsity=None, m_by_n=None, include_embeddings=False, gradual_from=None):
        """`gradual_from=(1, 4)`: one epoch at that m_by_n first, then `m_by_n` for --epochs (a gradual route)."""
        log(f"{name}: prune sparsity={sparsity} m_by_n={m_by_n} include_embeddings={include_embeddings}"
            + (f" after one epoch at m_by_n={gradual_from}" if gradual_from else ""))
        kind = "constant" if m_by_n else "polynomial"
        schedule = P.schedule_for_epochs(sparsity or 0.5, args.epochs, steps, kind, frequency=args.frequency)
        t = time.perf_counter()
        pruned, history = P.prune_and_fit(teacher, fit_pruned, args.epochs, gradual_from=gradual_from,
                                          schedule=schedule, m_by_n=m_by_n, include_embeddings=include_embeddings,
                                          embedding_sparsity=args.embedding_sparsity if include_embeddings else None)
        train_s = time.perf_counter() - t
        stripped = P.strip(pruned)
        return measure(name, stripped, {"schedule": schedule.get_config(), "m_by_n": m_by_n,
                                        "gradual_from": gradual_from,
                                        "embedding_sparsity": args.embedding_sparsity if include_embeddings else None,
                                        "epochs": args.epochs + (1 if gradual_from else 0),
                                        "distill": bool(args.distill),
                                        "hidden_weight": args.hidden_weight if args.distill else None,
                                        "train_seconds": train_s, "history": history},
                       include_embeddings)

    for run in args.runs.split(","):
        t0 = time.perf_counter()
        if run == "dense":
            measure("dense", teacher, {}, args.include_embeddings)
        elif run == "p50":
            unstructured("p50", 0.5, include_embeddings=args.include_embeddings)
        elif run == "p50enc":
            unstructured("p50enc", 0.5, include_embeddings=False)
        elif run == "m24":
            unstructured("m24", m_by_n=(2, 4), include_embeddings=args.include_embeddings)
        elif run == "m24g":
            unstructured("m24g", m_by_n=(2, 4), include_embeddings=args.include_embeddings, gradual_from=(1, 4))
        elif run == "p80":
            unstructured("p80", 0.8, include_embeddings=args.include_embeddings)
        elif run == "structured":
            log("structured: Taylor importance, heads=0.5 ffn=0.5")
            small, chosen = S.prune_structured(teacher, heads=0.5, ffn=0.5, method="taylor", data=encoded.train,
                                               num_batches=16, return_plan=True)
            before_ft = accuracy(small, encoded.test)
            log(f"structured: plan {chosen.to_dict()['heads']} ffn {chosen.to_dict()['ffn_sizes']}, "
                f"accuracy before fine-tuning {before_ft:.4f}")
            t = time.perf_counter()
            history = fit_classifier(small, encoded.train, None, epochs=args.structured_epochs, batch_size=32,
                                     learning_rate=args.learning_rate, verbose=2)
            train_s = time.perf_counter() - t
            # TF-Hub export of the smaller model: reload with hub.KerasLayer and compare
            import tensorflow_hub as hub

            from tfspeed.hub import export_encoder, sample_inputs
            from tfspeed.models import config_of, encoder_of

            path = export_encoder(small, work / "structured_encoder", vocab_path=info.vocab_path)
            x = sample_inputs(config_of(small), batch=2, seq_length=args.seq_length)
            hub_diff = float(np.abs(hub.KerasLayer(str(path))(x)["pooled_output"].numpy()
                                    - encoder_of(small)(x)["pooled_output"].numpy()).max())
            measure("structured", small, {"plan": chosen.to_dict(), "accuracy_before_finetuning": before_ft,
                                          "epochs": args.structured_epochs, "train_seconds": train_s,
                                          "params_dense": S.parameter_count(teacher),
                                          "hub_export_max_abs_diff": hub_diff,
                                          "history": {k: [float(v) for v in vs] for k, vs in history.history.items()}},
                    False)
            if "dense" in tflites:
                result["latency"] = latency(tflites["dense"], tflites["structured"], args, work,
                                            repeats=args.latency_repeats)
                save()
                log("latency", json.dumps(result["latency"]))
        else:
            sys.exit(f"unknown run {run!r}")
        log(f"{run} done in {time.perf_counter() - t0:.0f}s")
    log(f"wrote {out}")


def latency(dense: bytes, small: bytes, args, work: Path, repeats: int = 1) -> dict:
    """Dynamic-range .tflite latency, dense vs structured, interleaved, batch 1, seq_length as above, 1 and 2 threads.

    With `repeats` > 1 the interleaved profile is run that many times; each repeat's median ratio is kept and the
    median of them reported (on a shared machine one profile can be disturbed by another job)."""
    (work / "dense_dynamic.tflite").write_bytes(dense)
    (work / "structured_dynamic.tflite").write_bytes(small)
    from tfspeed.profile import profile_models

    rows, ratios = [], {}
    for repeat in range(repeats):
        result = profile_models([str(work / "dense_dynamic.tflite"), str(work / "structured_dynamic.tflite")],
                                baseline=0, threads=[1, 2], runs=args.latency_runs, warmup=10, vocab_size=30522,
                                names=["dense_dynamic", "structured_dynamic"], progress=False)
        for row in result.models:
            ms = row["latency_ms"]
            rows.append({"repeat": repeat, "name": row["name"], "threads": row.get("threads"),
                         "median_ms": ms["median"], "min_ms": ms.get("min"), "mad_ms": ms.get("mad"),
                         "p90_ms": ms.get("p90"), "ratio_vs_baseline": row.get("ratio_vs_baseline"),
                         "size_bytes": row.get("size_bytes"), "gzip_bytes": row.get("gzip_bytes")})
            if row["name"] == "structured_dynamic":
                ratios.setdefault(row.get("threads"), []).append(row.get("ratio_vs_baseline"))
        log("latency repeat", repeat, {t: r[-1] for t, r in ratios.items()})
    return {"tool": "tfspeed.profile.profile_models (interleaved A B A B, warm-up apart)", "runs": args.latency_runs,
            "repeats": repeats, "seq_length": args.seq_length, "batch_size": 1,
            "median_ratio_structured_vs_dense": {str(t): float(np.median(r)) for t, r in ratios.items()},
            "models": rows}


def latency_only(args):
    """Re-measures the latency from the .tflite files a previous run left in `--latency-from`, into the JSON."""
    work = Path(args.latency_from)
    dense = (work / "dense_dynamic.tflite").read_bytes()
    small = (work / "structured_dynamic.tflite").read_bytes()
    result = json.loads(Path(args.out).read_text())
    result["latency"] = latency(dense, small, args, work, repeats=args.latency_repeats)
    from tfspeed import _io

    _io.write_json(args.out, result, overwrite=True)
    log("latency", json.dumps(result["latency"]["median_ratio_structured_vs_dense"]))


if __name__ == "__main__":
    main()
