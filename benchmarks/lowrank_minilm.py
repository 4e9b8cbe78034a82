"""Low-rank factorisation of MiniLM's FFN against structured pruning of FFN units, on Rotten Tomatoes.

From a fine-tuned MiniLM teacher (a model directory from `tfspeed finetune minilm-l6 --data rotten_tomatoes`):

- the FFN factorised to 30 / 50 / 70% of its multiply-adds (`ratio`), with √Σ on both factors and with Σ on the
  first, test accuracy before and after fine-tuning by distillation from the teacher (logits + hidden states, the
  `lowrank` stage's default), to see which placement fine-tunes better;
- the same 50% of the FFN's multiply-adds removed by structured pruning of FFN units (Taylor importance, the
  `prune` stage, distilled the same way), and the two combined (25% of the units removed, then the rest factorised
  to 2/3 of its multiply-adds: 0.75 x 2/3 = 50%), with each Σ placement;
- dynamic-range .tflite of each, timed interleaved with the teacher's at the same sequence length (128, the demo's,
  and 64, which holds every Rotten Tomatoes review), 1 thread; per-operator times of the teacher and the two 50% models.

Every model fine-tunes with the same epochs, learning rate and batch size. Writes benchmarks/results/lowrank_minilm.json
and lowrank_minilm.png (accuracy against the FFN's multiply-adds kept).

    tfspeed finetune minilm-l6 --data rotten_tomatoes --out runs/teacher
    python benchmarks/lowrank_minilm.py --teacher runs/teacher --work runs/lowrank
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from tfspeed import _io, artifacts
from tfspeed.compress.lowrank import LowRankConfig
from tfspeed.compress.pruning import PruneConfig
from tfspeed.compress.structured import StructuredConfig
from tfspeed.data import load_dataset
from tfspeed.profile.env import environment
from tfspeed.stages import StageContext, get_stage
from tfspeed.stages.prune import PruneStageConfig

RESULTS = Path(__file__).parent / "results"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--teacher", required=True, help="fine-tuned MiniLM model directory")
    p.add_argument("--work", default="runs/lowrank", help="where the model directories go (a rerun keeps them)")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--learning-rate", type=float, default=5e-5)
    p.add_argument("--seq-length", type=int, default=64, help="training / evaluation length (the longest review: 60)")
    p.add_argument("--latency-lengths", default="128,64",
                   help="sequence lengths of the timed .tflite files (128: the demo's; 64: Rotten Tomatoes' own)")
    p.add_argument("--runs", type=int, default=60)
    p.add_argument("--cases", default=None, help="comma-separated subset of the cases (default: all)")
    p.add_argument("--skip-latency", action="store_true", help="train and evaluate only (time them in a later run)")
    p.add_argument("--out", default=str(RESULTS / "lowrank_minilm.json"))
    args = p.parse_args(argv)
    env = environment()
    print(f"CPU: {env['cpu_model']} ({env['cpus_available']} cores), flags: {env.get('cpu_flags')}", flush=True)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    ctx = StageContext(load_dataset("rotten_tomatoes"), seq_length=args.seq_length, teacher_dir=Path(args.teacher))
    common = dict(epochs=args.epochs, learning_rate=args.learning_rate)

    def lowrank(ratio, sigma="split", source=args.teacher, **settings):
        return "lowrank", source, LowRankConfig(layers=("ffn",), ratio=ratio, sigma=sigma, **{**common, **settings})

    def structured(ffn):
        config = PruneStageConfig(kind="structured", structured=StructuredConfig(heads=0.0, ffn=ffn),
                                  prune=PruneConfig(distill=True, hidden_weight=1.0, **common), tflite_report=False)
        return "prune", args.teacher, config

    cases = {
        "lowrank-70": lowrank(0.7), "lowrank-50": lowrank(0.5), "lowrank-30": lowrank(0.3),
        "lowrank-50-sigma-first": lowrank(0.5, "first"),
        "structured-ffn-50": structured(0.5),
        "structured-ffn-25": structured(0.25),
    }
    cases["structured-25+lowrank-67"] = lowrank(2 / 3, source=work / "structured-ffn-25")
    for r in (70, 30):
        cases[f"lowrank-{r}-sigma-first"] = lowrank(r / 100, "first")
    cases["structured-25+lowrank-67-sigma-first"] = lowrank(2 / 3, "first", source=work / "structured-ffn-25")
    cases["lowrank-50-2-epochs"] = lowrank(0.5, epochs=2)  # the lowrank stage's defaults
    if args.cases:
        cases = {k: v for k, v in cases.items() if k in args.cases.split(",")}
    results = {"environment": env, "settings": vars(args), "models": {}}
    for name, (stage, source, config) in cases.items():
        out = work / name
        if not (out / "metrics.json").is_file():
            start = time.perf_counter()
            get_stage(stage).run(source, config, out, ctx)
            print(f"{name}: {time.perf_counter() - start:.0f} s", flush=True)
        m = artifacts.read_metrics(out)
        record = {"accuracy": m["accuracy"], "seconds_per_epoch": m.get("seconds_per_epoch")
                  or m.get("history", {}).get("seconds_per_epoch"), "params": m.get("params")}
        if stage == "lowrank":
            layers = m["factorize"]["layers"]
            record.update(accuracy_before_finetuning=m["accuracy_before_finetuning"],
                          mean_energy=sum(r["energy"] for r in layers) / len(layers),
                          mean_error=sum(r["error"] for r in layers) / len(layers))
        else:
            record.update(accuracy_before_finetuning=m["structured"]["accuracy_before_finetuning"],
                          params=m["structured"]["params_after"])
        results["models"][name] = record
        print(f"{name}: accuracy {record['accuracy']:.4f} (before fine-tuning "
              f"{record['accuracy_before_finetuning']:.4f})", flush=True)
    # the combined model's FFN multiply-adds: 75% of the units, factorised to 2/3 of what is left
    from tfspeed.compress.lowrank import dense_macs
    from tfspeed.models.bert import config_of

    teacher, info = artifacts.load_model_dir(args.teacher)
    results["teacher"] = {"accuracy": artifacts.read_metrics(args.teacher).get("accuracy")}
    ffn_teacher = dense_macs(teacher, "ffn")
    for name in cases:
        model, _ = artifacts.load_model_dir(work / name)
        results["models"][name]["ffn_macs_kept"] = dense_macs(model, "ffn") / ffn_teacher
        results["models"][name]["encoder_macs_kept"] = dense_macs(model) / dense_macs(teacher)
        results["models"][name]["ranks"] = dict(config_of(model).ranks)
    if args.skip_latency:
        _io.write_json(args.out, results, overwrite=True)
        print(f"Wrote {args.out} (no latency)")
        return 0
    results["latency"], results["per_op"] = {}, {}
    for length in (int(v) for v in args.latency_lengths.split(",")):
        latency, per_op = _latency(args, length, [args.teacher] + [work / n for n in cases], ["teacher"] + list(cases))
        results["latency"][str(length)], results["per_op"][str(length)] = latency, per_op
        for name, row in latency.items():
            print(f"seq {length}: {name}: {row['median_ms']:.2f} ms median ({row['ratio']:.3f}x the teacher)",
                  flush=True)
            if name in results["models"]:
                results["models"][name][f"latency_ratio_{length}"] = row["ratio"]
    _plot(results, Path(args.out).with_suffix(".png"))
    _io.write_json(args.out, results, overwrite=True)
    print(f"Wrote {args.out}")
    return 0


def _latency(args, length, dirs, names) -> tuple:
    """Dynamic-range .tflite of every model at one length, timed interleaved (1 thread, XNNPACK), and the per-operator
    times of three of them."""
    from tfspeed.export import Converter
    from tfspeed.profile import profile_models

    files = []
    for d in dirs:
        files.append(Converter(d, length).convert("dynamic"))
    result = profile_models(files, names=names, threads=1, runs=args.runs, warmup=5)
    base = result.row("teacher")["latency_ms"]["median"]
    latency = {n: {"median_ms": result.row(n)["latency_ms"]["median"],
                   "ratio": result.row(n)["latency_ms"]["median"] / base, "size_bytes": len(f)}
               for n, f in zip(names, files)}
    # where the time goes: per operator type, for the teacher and the two ways of halving the FFN
    chosen = [n for n in ("teacher", "lowrank-50-sigma-first", "structured-ffn-50") if n in names]
    ops = profile_models([files[names.index(n)] for n in chosen], names=chosen, threads=1, runs=args.runs,
                         warmup=5, per_op=True, per_op_runs=20)
    per_op = {}
    for n in chosen:
        table = ops.row(n)["per_op"]
        per_op[n] = {"sum_ms": table["sum_ms"], "by_type": table["by_type"]}
        top = ", ".join(f"{t} {v['ms']:.2f} ms ({v['count']})" for t, v in list(table["by_type"].items())[:6])
        print(f"seq {length}: {n}: per-op sum {table['sum_ms']:.2f} ms: {top}", flush=True)
    return latency, per_op


def _plot(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = results["models"]
    fig, ax = plt.subplots(figsize=(6, 4))
    for suffix, label, style in (("", "√Σ on both", "o-"), ("-sigma-first", "Σ first", "o-")):
        sweep = sorted((models[n]["ffn_macs_kept"], models[n]["accuracy_before_finetuning"], models[n]["accuracy"])
                       for n in (f"lowrank-{r}{suffix}" for r in (30, 50, 70)) if n in models)
        if not suffix:
            ax.plot([s[0] for s in sweep], [s[1] for s in sweep], "o--", label="low rank, before fine-tuning")
        ax.plot([s[0] for s in sweep], [s[2] for s in sweep], style, label=f"low rank, distilled ({label})")
    for name, marker in (("structured-ffn-50", "s"), ("structured-ffn-25", "s"), ("structured-25+lowrank-67", "^"),
                         ("structured-25+lowrank-67-sigma-first", "v")):
        if name not in models:
            continue
        ax.plot(models[name]["ffn_macs_kept"], models[name]["accuracy"], marker, label=name)
    ax.axhline(results["teacher"]["accuracy"], color="gray", lw=0.8, label="teacher")
    ax.set_xlabel("FFN multiply-adds kept")
    ax.set_ylabel("test accuracy")
    ax.set_title("MiniLM on Rotten Tomatoes: FFN compression")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    sys.exit(main())
