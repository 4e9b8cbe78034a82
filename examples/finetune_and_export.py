"""Fine-tune a BERT on Rotten Tomatoes, export it to .tflite (dynamic range and float32), run the files.

Shows `hub.build_classifier_from` -> `fit_classifier` -> `accuracy`, then `export.convert` / `export.save_tflite`,
`export.evaluate` on the saved file, and `export.parity_report` (the file against its Keras model: accuracy, logit
differences, sizes, op kinds). The Keras model is saved beside its .tflite files.

    python examples/finetune_and_export.py                      # bert-tiny-random, 256 reviews: under a minute
    python examples/finetune_and_export.py --model minilm-l6    # pretrained MiniLM, every review, seq 128, 3 epochs

`bert-tiny-random` has random weights, so its accuracy stays near chance: it shows the mechanics. `minilm-l6` gives
real numbers (about 0.84 on the test reviews).
"""

import argparse
import tempfile
from pathlib import Path

import numpy as np

import tfspeed  # noqa: F401  (first: selects Keras 2 before TensorFlow loads)
from tfspeed import export, hub
from tfspeed.data import EncodedDataset, Tokenizer, load_dataset
from tfspeed.train import FinetuneConfig, accuracy, fit_classifier


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="bert-tiny-random", help="a preset: bert-tiny-random or minilm-l6")
    parser.add_argument("--out", type=Path, help="output folder (default: a new temporary folder)")
    parser.add_argument("--limit", type=int, help="training reviews (default: 256; all with minilm-l6)")
    parser.add_argument("--eval-limit", type=int, help="validation and test reviews (default: 200; all with minilm-l6)")
    parser.add_argument("--epochs", type=int, help="fine-tuning epochs (default: 1; 3 with minilm-l6)")
    parser.add_argument("--seq-length", type=int, help="tokens per review (default: 64; 128 with minilm-l6)")
    args = parser.parse_args()
    real = args.model == "minilm-l6"
    out = args.out or Path(tempfile.mkdtemp(prefix="tfspeed-finetune-"))
    seq_length = args.seq_length or (128 if real else 64)

    data = EncodedDataset(load_dataset("rotten_tomatoes"), Tokenizer(hub.vocab_path(args.model), seq_length=seq_length),
                          limit=args.limit or (None if real else 256),
                          eval_limit=args.eval_limit or (None if real else 200))
    model = hub.build_classifier_from(args.model, num_classes=2)
    fit_classifier(model, data.train, data.validation, config=FinetuneConfig(epochs=args.epochs or (3 if real else 1)),
                   verbose=2)
    keras_accuracy = accuracy(model, data.test)
    out.mkdir(parents=True, exist_ok=True)
    model.save(out / "model.keras")

    for mode in ("dynamic", "float32"):
        path = export.save_tflite(export.convert(model, mode, seq_length=seq_length), out / f"model_{mode}.tflite",
                                  overwrite=True)
        logits = export.evaluate(path, data.test)  # the interpreter on the file, one review at a time
        file_accuracy = float(np.mean(logits.argmax(-1) == data.test.labels))
        print(f"{mode}: {path} ({path.stat().st_size / 1e6:.2f} MB), accuracy {file_accuracy:.4f}")
        print(export.format_report(export.parity_report(path, model, data.test, name=mode)).split("\n\n")[0])

    print(f"keras accuracy: {keras_accuracy:.4f} on {len(data.test)} test reviews")
    print(f"saved: {out / 'model.keras'}")


if __name__ == "__main__":
    main()
