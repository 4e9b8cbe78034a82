"""One-way, two-way and multi-stage distillation of the fine-tuned MiniLM (Rotten Tomatoes), with and without
augmented text, into 3-, 2- and 1-layer students: test accuracy as a share of the teacher's, and training time.

Every run is the `distill` stage as `tfspeed distill` runs it (same epochs, rate, batch, alpha and temperature for
all), each in its own model directory under --work, so an interrupted benchmark resumes where it stopped:

- one-way:     `tfspeed distill --student-layers K` (the frozen teacher's softened outputs, cached logits);
- two-way:     `--mode two-way` (the teacher trains too, at 2e-5; `--anchor-weight` keeps it near its start);
- multi-stage: `--stages 4,K`: teacher -> 4-layer assistant -> K layers (the assistant is distilled once, by the
               first multi-stage run, and the other rows distil from it: the chain's second stage);
- augmented:   `--augment N`: N changed copies of each training review, labelled by the teacher, added to the
               training set of the row's given form (one-way unless --augment-form says otherwise);
- multi-stage-augmented: both (from the shared assistant, with the augmented copies).

Writes benchmarks/results/distill_forms_minilm.json after every run.

    python benchmarks/distill_forms_minilm.py --teacher runs/demo/00-teacher --work runs/distill-forms \\
        --runs 2:one-way,2:multi-stage,2:two-way,2:augmented,3:one-way,...
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tfspeed import _io, artifacts
from tfspeed.compress.distillation import DistillConfig
from tfspeed.data import load_dataset
from tfspeed.profile.env import environment
from tfspeed.stages import StageContext, get_stage

RESULTS = Path(__file__).parent / "results"
FORMS = ("one-way", "two-way", "two-way-anchor", "multi-stage", "augmented", "multi-stage-augmented")
ASSISTANT = 4


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--teacher", required=True, help="the fine-tuned teacher's model directory")
    p.add_argument("--work", default="runs/distill-forms")
    p.add_argument("--runs", default="2:one-way,2:multi-stage,2:two-way,2:augmented,3:one-way,3:multi-stage,"
                                     "1:one-way,1:multi-stage,3:two-way,3:augmented,1:two-way,1:augmented",
                   help="LAYERS:FORM,... in the order to run (forms: " + ", ".join(FORMS) + ")")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--augment", type=int, default=1, help="augmented copies per review in the augmented runs")
    p.add_argument("--augment-form", default="one-way", choices=("one-way", "multi-stage"),
                   help="the form the augmented runs use")
    p.add_argument("--anchor-weight", type=float, default=1.0, help="anchor of the two-way-anchor runs")
    p.add_argument("--hidden-weight", type=float, default=0.0, help="TinyBERT's hidden-state loss in every run")
    p.add_argument("--attention-weight", type=float, default=0.0, help="TinyBERT's attention loss in every run")
    p.add_argument("--seed", type=int, default=0, help="seed of shuffling and of the augmented copies")
    p.add_argument("--tag", default="", help="names these runs apart from the default ones (e.g. e3-a4 for "
                                              "--epochs 3 --augment 4): directories FORM-K-TAG, rows K:FORM@TAG")
    p.add_argument("--out", default=str(RESULTS / "distill_forms_minilm.json"))
    args = p.parse_args(argv)
    env = environment()
    print(f"CPU: {env['cpu_model']} ({env['cpus_available']} cores), flags: {env.get('cpu_flags')}", flush=True)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    dataset = load_dataset("rotten_tomatoes")
    ctx = StageContext(dataset, work_dir=work / ".work")
    stage = get_stage("distill")
    teacher_metrics = artifacts.read_metrics(args.teacher)
    results = {"environment": env, "settings": vars(args), "teacher": args.teacher,
               "teacher_accuracy": teacher_metrics.get("accuracy"), "runs": {}}
    if Path(args.out).is_file():
        previous = _io_read(args.out)
        results["runs"] = previous.get("runs", {})
        results["settings_by_tag"] = previous.get("settings_by_tag", {"": previous.get("settings")})
    results.setdefault("settings_by_tag", {})[args.tag] = vars(args)
    base = DistillConfig(epochs=args.epochs, hidden_weight=args.hidden_weight, attention_weight=args.attention_weight,
                         seed=args.seed)
    tag = f"-{args.tag}" if args.tag else ""
    assistant = work / "multi-stage-2-assistant1-4layers"  # written by the first multi-stage run (--stages 4,K)
    for item in args.runs.split(","):
        layers, form = item.split(":")
        layers = int(layers)
        if form not in FORMS:
            raise SystemExit(f"unknown form {form!r}: expected one of {FORMS}")
        out = work / f"{form}-{layers}{tag}"
        teacher, config = args.teacher, base.replace(layers=layers)
        if form == "two-way":
            config = config.replace(mode="two-way")
        elif form == "two-way-anchor":
            config = config.replace(mode="two-way", anchor_weight=args.anchor_weight)
        elif form in ("multi-stage", "multi-stage-augmented") or (form == "augmented"
                                                                    and args.augment_form == "multi-stage"):
            if (assistant / "metrics.json").is_file():  # the chain's second stage, from the assistant made once
                teacher = str(assistant)
                if 2 * layers - 1 > ASSISTANT:  # as distill_chain does: every other layer does not fit
                    config = config.replace(layer_strategy="uniform")
            else:
                out = work / f"multi-stage-{layers}{tag}" if form == "multi-stage" else out
                assistant = out.with_name(f"{out.name}-assistant1-{ASSISTANT}layers")
                config = config.replace(stages=(ASSISTANT, layers))
        if form in ("augmented", "multi-stage-augmented"):
            config = config.replace(augment=args.augment)
        if not (out / "metrics.json").is_file():
            print(f"== {layers} layers, {form} ({teacher}) ...", flush=True)
            stage.run(teacher, config, out, ctx)
        m = artifacts.read_metrics(out)
        assistant_seconds = 0.0
        if teacher != args.teacher:  # from the shared assistant: its distillation is part of this row's cost
            assistant_seconds = float(artifacts.read_metrics(teacher).get("train_seconds") or 0.0)
        record = {"layers": layers, "form": form, "accuracy": m["accuracy"], "macro_f1": m.get("macro_f1"),
                  "share_of_teacher": m["accuracy"] / results["teacher_accuracy"],
                  "train_seconds": m.get("train_seconds"), "assistant_seconds": assistant_seconds,
                  "teacher_logits_seconds": m.get("teacher_logits_seconds"),
                  "distill_examples": m.get("distill_examples"), "assistants": m.get("assistants"),
                  "mutual_teacher": m.get("mutual_teacher"), "dir": str(out), "from": teacher,
                  "epochs": config.epochs, "augment": config.augment, "hidden_weight": config.hidden_weight,
                  "attention_weight": config.attention_weight, "seed": config.seed}
        if form.startswith("multi-stage") and m.get("assistants"):
            record["assistant_seconds"] = sum(a.get("train_seconds") or 0.0 for a in m["assistants"])
            record["train_seconds"] = m["train_seconds"] - record["assistant_seconds"]
        results["runs"][f"{layers}:{form}" + (f"@{args.tag}" if args.tag else "")] = record
        print(f"{layers} layers {form + tag:15s} accuracy {m['accuracy']:.4f} = "
              f"{100 * record['share_of_teacher']:.1f}% of the teacher, {record['train_seconds']:.0f} s "
              f"(+{record['assistant_seconds']:.0f} s assistant)",
              flush=True)
        _io.write_json(args.out, results, overwrite=True)
    print(f"Wrote {args.out}")
    return 0


def _io_read(path):
    import json

    return json.loads(Path(path).read_text())


if __name__ == "__main__":
    raise SystemExit(main())
