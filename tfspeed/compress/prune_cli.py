"""`tfspeed prune`: magnitude pruning scheduled through fit, and/or structured pruning, then a model directory.

    tfspeed prune MODEL_DIR --sparsity 0.5 --schedule polynomial --data rotten_tomatoes --epochs 2 --out DIR
    tfspeed prune MODEL_DIR --m-by-n 2:4 --epochs 1 --out DIR
    tfspeed prune MODEL_DIR --m-by-n 2:4 --gradual --distill --epochs 3 --out DIR   # 1:4 for one epoch, then 2:4
    tfspeed prune MODEL_DIR --structured heads=0.5,ffn=0.5 --epochs 1 --out DIR

`DIR/metrics.json` holds `accuracy` (test), `sparsity` (of the targeted kernels), `dense_accuracy` (before pruning),
`validation_accuracy`, the sparsity report (sizes of weights and .tflite files) and, for structured pruning, the plan.
With `--gradual`, `gradual` is true and `history` holds the epoch at (M-1):N followed by the --epochs at M:N.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tfspeed import _cli

_STRUCTURED_KEYS = ("heads", "ffn", "layers")


def parse_structured(text: str) -> dict:
    """'heads=0.5,ffn=0.5[,layers=0.25 | layers=4+5]' -> {'heads': 0.5, 'ffn': 0.5, 'layers': ...}."""
    out = {}
    for part in filter(None, (p.strip() for p in str(text).split(","))):
        key, sep, value = part.partition("=")
        key = key.strip()
        if not sep or key not in _STRUCTURED_KEYS:
            raise ValueError(f"Received an invalid value for `--structured`, expected comma-separated key=value pairs "
                             f"with keys {_STRUCTURED_KEYS}, e.g. heads=0.5,ffn=0.5. Received: --structured={text!r}")
        try:
            if key == "layers" and ("+" in value or "." not in value):
                out[key] = [int(v) for v in value.split("+")]
            else:
                out[key] = float(value)
        except ValueError:
            raise ValueError(f"Received an invalid value for `--structured` key {key!r}: expected a number (layers: "
                             f"a fraction, or indices joined by '+', e.g. layers=4+5). Received: {value!r}") from None
    if not out:
        raise ValueError(f"Received an invalid value for `--structured`, expected e.g. heads=0.5,ffn=0.5. "
                         f"Received: --structured={text!r}")
    return out


def register(subparsers):
    p = subparsers.add_parser("prune", help="prune a fine-tuned BERT (TFMOT magnitude / 2:4, or structured heads/FFN)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", metavar="MODEL", help="a tfspeed model directory (e.g. written by `tfspeed finetune`)")
    g = p.add_argument_group("unstructured (TFMOT)")
    g.add_argument("--sparsity", type=float, default=None,
                   help="final fraction of zeros in every targeted kernel, in [0, 1) (default: 0.5 unless only "
                        "--structured is given)")
    g.add_argument("--schedule", default="polynomial", choices=["polynomial", "constant"],
                   help="TFMOT PolynomialDecay or ConstantSparsity (default: polynomial)")
    g.add_argument("--m-by-n", default=None, help="m:n structured sparsity, e.g. 2:4 (default: none)")
    g.add_argument("--gradual", action="store_true",
                   help="with --m-by-n M:N, M >= 2: fit one epoch at (M-1):N first, strip, then prune at M:N for "
                        "--epochs, one epoch more in all (default: M:N from the start)")
    g.add_argument("--end-epoch", type=float, default=None,
                   help="epoch at which the final sparsity is reached (default: 0.7 x --epochs)")
    g.add_argument("--include-embeddings", action="store_true", help="also prune word/type embeddings")
    g.add_argument("--embedding-sparsity", type=float, default=None,
                   help="with --include-embeddings: the tables' own sparsity, unstructured even with --m-by-n "
                        "(default: as the kernels)")
    g.add_argument("--include-classifier", action="store_true", help="also prune the classifier Dense")
    g.add_argument("--layers", default=None, type=lambda s: [n for n in s.split(",") if n],
                   help="prune exactly these comma-separated layer names (default: attention, FFN and pooler)")
    g.add_argument("--log-dir", default=None,
                   help="TensorBoard directory for TFMOT's PruningSummaries (needs tensorboard: pip install "
                        "'tfspeed[tensorboard]'); with --gradual, one run per stage (2:4: LOG_DIR/1of4, LOG_DIR/2of4)")
    s = p.add_argument_group("structured")
    s.add_argument("--structured", default=None,
                   help="fractions to remove, e.g. heads=0.5,ffn=0.5 (optionally layers=0.25 or layers=4+5)")
    s.add_argument("--method", default="taylor", choices=["taylor", "magnitude"],
                   help="importance of heads / FFN units (default: taylor, on --score-batches training batches)")
    s.add_argument("--score-batches", type=int, default=16, help="batches for the Taylor score (default: 16)")
    s.add_argument("--ranking", default="global", choices=["global", "layer"],
                   help="rank heads/units across layers or within each layer (default: global)")
    p.add_argument("--distill", action="store_true",
                   help="fine-tune with knowledge distillation from the unpruned MODEL (soft targets, alpha 0.5, T 2): "
                        "recovers more of the accuracy pruning takes (default: labels only)")
    p.add_argument("--hidden-weight", type=float, default=0.0,
                   help="with --distill: weight of a layer-by-layer hidden-state MSE to the unpruned MODEL "
                        "(TinyBERT-style; the teacher then runs at every step; default: 0, logits only)")
    p.add_argument("--seq-length", type=int, default=None, help="tokens per example (default: the model directory's)")
    p.add_argument("--skip-tflite-report", action="store_true",
                   help="do not convert to .tflite to report its sizes (saves a minute on MiniLM)")
    _cli.add_data_args(p)
    _cli.add_train_args(p, epochs=2, lr=3e-5)
    _cli.add_out_args(p, "model directory to write")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    metrics = prune_model_dir(args)
    summary = {k: metrics[k] for k in ("accuracy", "dense_accuracy", "sparsity") if k in metrics}
    if "tflite" in metrics.get("report", {}):
        summary["tflite_dynamic_gzip_bytes"] = metrics["report"]["tflite"]["dynamic"]["gzip_bytes"]
    print(json.dumps(summary, indent=2))
    print(f"Wrote {args.out}")
    return 0


def prune_model_dir(args) -> dict:
    from tfspeed import _io, artifacts
    from tfspeed.compress import prune as P
    from tfspeed.compress import structured as S
    from tfspeed.compress.distill import fit_student
    from tfspeed.data import EncodedDataset, Tokenizer
    from tfspeed.models.bert import is_bert
    from tfspeed.train import accuracy, fit_classifier

    _io.check_writable(args.out, args.overwrite)
    structured = parse_structured(args.structured) if args.structured else {}
    unstructured = args.sparsity is not None or args.m_by_n is not None or not structured
    sparsity = 0.5 if args.sparsity is None else P._check_sparsity(args.sparsity)
    m_by_n = P._check_m_by_n(args.m_by_n)
    gradual_from = None
    if args.gradual:
        if m_by_n is None:
            raise ValueError("Received --gradual without --m-by-n: --gradual is a route to m:n sparsity, expected "
                             "--m-by-n M:N with M >= 2 (e.g. --m-by-n 2:4 --gradual prunes at 1:4 for one epoch, then "
                             "2:4). Received: --m-by-n=None")
        if m_by_n[0] < 2:
            raise ValueError("Received an invalid value for `--m-by-n` with --gradual, expected M:N with M >= 2 (the "
                             "first epoch prunes at (M-1):N, and 0:N would prune nothing). "
                             f"Received: --m-by-n={args.m_by_n!r}")
        gradual_from = (m_by_n[0] - 1, m_by_n[1])
    if not isinstance(args.epochs, int) or args.epochs < 1:
        raise ValueError(f"Received an invalid value for `--epochs`, expected a positive integer (pruning is scheduled "
                         f"through fit). Received: --epochs={args.epochs!r}")
    model, info = artifacts.load_model_dir(args.model)
    if not info.vocab_path:
        raise ValueError(f"The model directory {args.model!r} has no vocab.txt: cannot tokenize --data.")
    seq_length = args.seq_length or info.seq_length
    dataset = _cli.load_data(args)
    encoded = EncodedDataset(dataset, Tokenizer(info.vocab_path, seq_length=seq_length), limit=args.limit,
                             eval_limit=args.eval_limit)
    strategy = _cli.make_strategy(args.strategy)
    verbose = 1 if sys.stdout.isatty() else 2
    metrics = {"dense_accuracy": accuracy(model, encoded.test), "dataset": dataset.name, "model": str(args.model),
               "seq_length": seq_length, "epochs": args.epochs, "batch_size": args.batch_size,
               "learning_rate": args.learning_rate}
    steps = -(-len(encoded.train) // args.batch_size)
    teacher = model if args.distill else None
    if args.hidden_weight and not args.distill:
        raise ValueError(f"Received --hidden-weight={args.hidden_weight!r} without --distill: the hidden-state loss is "
                         f"a distillation term. Add --distill, or drop --hidden-weight.")
    metrics["distill"] = bool(args.distill)
    if args.distill:
        metrics["hidden_weight"] = args.hidden_weight

    def fit(student, callbacks=(), epochs=args.epochs):
        if teacher is None:
            return fit_classifier(student, encoded.train, encoded.validation, epochs=epochs,
                                  batch_size=args.batch_size, learning_rate=args.learning_rate, callbacks=callbacks,
                                  verbose=verbose)
        return fit_student(student, teacher, encoded.train, encoded.validation, epochs=epochs,
                           batch_size=args.batch_size, learning_rate=args.learning_rate,
                           hidden_weight=args.hidden_weight, callbacks=callbacks, verbose=verbose)

    with strategy.scope():
        if structured:
            before = S.parameter_count(model)
            model, chosen = S.prune_structured(model, heads=structured.get("heads", 0.0), ffn=structured.get("ffn", 0.0),
                                               layers=structured.get("layers"), method=args.method, data=encoded.train,
                                               num_batches=args.score_batches, batch_size=args.batch_size,
                                               ranking=args.ranking, return_plan=True)
            metrics["structured"] = {**structured, "method": args.method, "ranking": args.ranking,
                                     "plan": chosen.to_dict(), "params_before": before,
                                     "params_after": S.parameter_count(model),
                                     "accuracy_before_finetuning": accuracy(model, encoded.test)}
        if unstructured:
            schedule = P.schedule_for_epochs(sparsity, args.epochs, steps, args.schedule, end_epoch=args.end_epoch)
            # --gradual: one epoch at (M-1):N, strip, then M:N for --epochs (fresh pruning callbacks in each stage,
            # each writing its own TensorBoard run, LOG_DIR/1of4 then LOG_DIR/2of4: both count steps from 0)
            patterns = iter([gradual_from, m_by_n])

            def fit_stage(student, epochs):
                log_dir, pattern = args.log_dir, next(patterns)
                if log_dir is not None and gradual_from is not None:
                    log_dir = str(Path(log_dir) / f"{pattern[0]}of{pattern[1]}")
                return fit(student, P.pruning_callbacks(log_dir, per_layer=False), epochs)

            pruned, history = P.prune_and_fit(
                model, fit_stage, args.epochs, gradual_from=gradual_from, schedule=schedule, m_by_n=m_by_n,
                include_embeddings=args.include_embeddings, include_classifier=args.include_classifier,
                layers=args.layers, embedding_sparsity=args.embedding_sparsity)
            model = P.strip(pruned)
            metrics.update({"schedule": schedule.get_config(), "m_by_n": list(m_by_n) if m_by_n else None,
                            "embedding_sparsity": args.embedding_sparsity,
                            "gradual": gradual_from is not None,
                            "gradual_from": list(gradual_from) if gradual_from else None,
                            "epochs_trained": max((len(v) for v in history.values()), default=0)})
        else:
            history = fit(model).history
    metrics["accuracy"] = accuracy(model, encoded.test)
    metrics["validation_accuracy"] = accuracy(model, encoded.validation)
    metrics["split"], metrics["num_examples"] = "test", len(encoded.test)
    metrics["history"] = {k: [float(v) for v in vs] for k, vs in history.items()}
    report = P.sparsity_report(model, include_embeddings=args.include_embeddings,
                               include_classifier=args.include_classifier, layers=args.layers,
                               tflite=not args.skip_tflite_report, seq_length=seq_length)
    metrics["sparsity"] = report["sparsity"]
    metrics["report"] = report
    stage = "prune" if not structured else ("prune-structured" if not (args.sparsity or m_by_n) else "prune+structured")
    extra = {"sparsity": sparsity if unstructured else None, "m_by_n": list(m_by_n) if m_by_n else None,
             "structured": structured or None, "hub_layer": not is_bert(model)}
    out_info = artifacts.ModelInfo(seq_length=seq_length, label_names=encoded.label_names, base=str(args.model),
                                   stage=stage, vocab_path=info.vocab_path, extra=extra)
    artifacts.save_model_dir(model, args.out, out_info, metrics, overwrite=args.overwrite)
    return metrics
