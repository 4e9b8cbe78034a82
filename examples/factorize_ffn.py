"""Factorise a fine-tuned BERT's FFN to half its multiply-adds (truncated SVD), recover by distillation, and time it.

Shows `factorize(model, layers="ffn", ratio=0.5, return_report=True)` (the per-layer report: rank, energy kept,
reconstruction error, multiply-adds) -> `fit_student(small, model, ...)` (distillation from the unfactorised model,
through fit) -> dynamic-range .tflite files of both, profiled side by side. The caller's model is never changed.

    python examples/factorize_ffn.py                      # bert-tiny-random, 256 reviews: under a minute
    python examples/factorize_ffn.py --model minilm-l6    # pretrained MiniLM, every review, seq 128, 3 + 2 epochs

On random weights the quick default skips the fine-tuning before factorising (`--epochs N` runs it).
"""

import argparse
import tempfile
from pathlib import Path

import tfspeed  # noqa: F401  (first: selects Keras 2 before TensorFlow loads)
from tfspeed import export, hub
from tfspeed.compress import factorize, fit_student
from tfspeed.data import EncodedDataset, Tokenizer, load_dataset
from tfspeed.profile import profile_models
from tfspeed.train import accuracy, fit_classifier


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="bert-tiny-random", help="a preset: bert-tiny-random or minilm-l6")
    parser.add_argument("--out", type=Path, help="output folder (default: a new temporary folder)")
    parser.add_argument("--limit", type=int, help="training reviews (default: 256; all with minilm-l6)")
    parser.add_argument("--eval-limit", type=int, help="validation and test reviews (default: 200; all with minilm-l6)")
    parser.add_argument("--epochs", type=int, help="fine-tuning epochs before factorising "
                                                   "(default: 0 on random weights; 3 with minilm-l6)")
    parser.add_argument("--distill-epochs", type=int, help="distillation epochs after (default: 1; 2 with minilm-l6)")
    parser.add_argument("--ratio", type=float, default=0.5, help="fraction of the FFN's multiply-adds kept")
    parser.add_argument("--seq-length", type=int, help="tokens per review (default: 64; 128 with minilm-l6)")
    args = parser.parse_args()
    real = args.model == "minilm-l6"
    out = args.out or Path(tempfile.mkdtemp(prefix="tfspeed-lowrank-"))
    seq_length = args.seq_length or (128 if real else 64)
    data = EncodedDataset(load_dataset("rotten_tomatoes"), Tokenizer(hub.vocab_path(args.model), seq_length=seq_length),
                          limit=args.limit or (None if real else 256),
                          eval_limit=args.eval_limit or (None if real else 200))
    model = hub.build_classifier_from(args.model, num_classes=2)
    epochs = args.epochs if args.epochs is not None else (3 if real else 0)
    if epochs:  # random weights learn nothing in a few steps: the quick default skips this fine-tuning
        fit_classifier(model, data.train, data.validation, epochs=epochs, verbose=2)

    small, report = factorize(model, layers="ffn", ratio=args.ratio, return_report=True)
    print(report.format())
    before = accuracy(small, data.test)
    fit_student(small, model, data.train, data.validation, epochs=args.distill_epochs or (2 if real else 1),
                learning_rate=5e-5, hidden_weight=1.0, verbose=2)
    out.mkdir(parents=True, exist_ok=True)
    small.save(out / "model_lowrank.keras")

    files = {}
    for name, m in (("model_dynamic.tflite", model), ("model_lowrank_dynamic.tflite", small)):
        files[name] = export.save_tflite(export.convert(m, "dynamic", seq_length=seq_length), out / name)
    result = profile_models(list(files.values()), threads=1, runs=30)
    ratio = result.row("model_lowrank_dynamic.tflite")["latency_ms"]["median"] / result.row(
        "model_dynamic.tflite")["latency_ms"]["median"]
    print(f"FFN multiply-adds kept: {report.macs_after / report.macs_before:.3f} "
          f"(every encoder Dense: {report.encoder_macs_after / report.encoder_macs_before:.3f})")
    print(f"accuracy: unfactorised {accuracy(model, data.test):.4f}, factorised {before:.4f}, after distillation "
          f"{accuracy(small, data.test):.4f} on {len(data.test)} test reviews")
    print(f"dynamic-range .tflite latency, 1 thread: factorised / unfactorised = {ratio:.3f}")
    print(f"saved: {out}")


if __name__ == "__main__":
    main()
