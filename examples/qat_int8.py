"""Quantization-aware training of a fine-tuned BERT, then a full int8 .tflite whose every matmul runs in int8.

Shows `qat_fit(model, train, config=QATConfig(...))` (outlier search, range calibration, a distilled QAT
epoch: the caller's float model is not changed) -> `export.convert(qat_model, "int8")` (the converter reads the learnt
ranges, no calibration data) -> `export.int8_fractions` (share of FULLY_CONNECTED / BATCH_MATMUL ops in int8) ->
the accuracy of the .tflite file against the Keras QAT model and the float model.

    python examples/qat_int8.py                      # bert-tiny-random, 256 reviews: under a minute
    python examples/qat_int8.py --model minilm-l6    # pretrained MiniLM, every review, seq 128, 3 + 1 epochs

On x86 the int8 file is the smallest, not the fastest (dynamic range is): see README, Known limits. On random weights
the quick default skips the fine-tuning before QAT (`--epochs N` runs it).
"""

import argparse
import tempfile
from pathlib import Path

import numpy as np

import tfspeed  # noqa: F401  (first: selects Keras 2 before TensorFlow loads)
from tfspeed import export, hub
from tfspeed.compress import QATConfig, qat_fit
from tfspeed.data import EncodedDataset, Tokenizer, load_dataset
from tfspeed.train import accuracy, fit_classifier


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="bert-tiny-random", help="a preset: bert-tiny-random or minilm-l6")
    parser.add_argument("--out", type=Path, help="output folder (default: a new temporary folder)")
    parser.add_argument("--limit", type=int, help="training reviews (default: 256; all with minilm-l6)")
    parser.add_argument("--eval-limit", type=int, help="validation and test reviews (default: 200; all with minilm-l6)")
    parser.add_argument("--epochs", type=int, help="fine-tuning epochs before QAT "
                                                   "(default: 0 on random weights; 3 with minilm-l6)")
    parser.add_argument("--qat-epochs", type=int, default=1, help="QAT epochs (default: 1)")
    parser.add_argument("--seq-length", type=int, help="tokens per review (default: 64; 128 with minilm-l6)")
    args = parser.parse_args()
    real = args.model == "minilm-l6"
    out = args.out or Path(tempfile.mkdtemp(prefix="tfspeed-qat-"))
    seq_length = args.seq_length or (128 if real else 64)
    data = EncodedDataset(load_dataset("rotten_tomatoes"), Tokenizer(hub.vocab_path(args.model), seq_length=seq_length),
                          limit=args.limit or (None if real else 256),
                          eval_limit=args.eval_limit or (None if real else 200))
    model = hub.build_classifier_from(args.model, num_classes=2)
    epochs = args.epochs if args.epochs is not None else (3 if real else 0)
    if epochs:  # random weights learn nothing in a few steps: the quick default skips this fine-tuning
        fit_classifier(model, data.train, data.validation, epochs=epochs, verbose=2)

    qat_model, history = qat_fit(model, data.train, config=QATConfig(epochs=args.qat_epochs), verbose=2)
    path = export.save_tflite(export.convert(qat_model, "int8", seq_length=seq_length), out / "model_int8.tflite",
                              overwrite=True)
    fractions = export.int8_fractions(path)
    file_logits = export.evaluate(path, data.test)  # the LiteRT interpreter on the file, one review at a time
    file_accuracy = float(np.mean(file_logits.argmax(-1) == data.test.labels))

    print(f"int8 file: {path} ({path.stat().st_size / 1e6:.2f} MB)")
    print("int8 fractions: " + ", ".join(f"{op} {f:.2f}" for op, f in fractions.items() if f is not None))
    print(f"accuracy on {len(data.test)} test reviews: float Keras {accuracy(model, data.test):.4f}, "
          f"QAT Keras {accuracy(qat_model, data.test):.4f}, int8 file {file_accuracy:.4f}")


if __name__ == "__main__":
    main()
