"""Profile two .tflite files of the same BERT side by side: float32 against dynamic-range int8.

Shows `export.convert` and `export.save_tflite` making the files, then `profile_models(paths, config=...)`:
the models run interleaved (A B A B ...) on the same input, one real Rotten Tomatoes review, warm-up runs apart; the
result prints as a table and is written as JSON and Markdown into `--out`.

    python examples/profile_tflite.py                      # bert-tiny-random, seq 64: under a minute
    python examples/profile_tflite.py --model minilm-l6    # MiniLM's shape and weights, seq 128, 100 runs

Any .tflite works, also files tfspeed did not make: `tfspeed profile A.tflite B.tflite` is the same from the shell.
"""

import argparse
import tempfile
from pathlib import Path

import tfspeed  # noqa: F401  (first: selects Keras 2 before TensorFlow loads)
from tfspeed import export, hub
from tfspeed.data import load_dataset
from tfspeed.profile import ProfileConfig, profile_models


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="bert-tiny-random", help="a preset: bert-tiny-random or minilm-l6")
    parser.add_argument("--out", type=Path, help="output folder (default: a new temporary folder)")
    parser.add_argument("--runs", "--limit", type=int, help="measured runs per model (default: 20; 100 with minilm-l6)")
    parser.add_argument("--threads", type=int, default=1, help="interpreter threads (default: 1)")
    parser.add_argument("--seq-length", type=int, help="tokens per input (default: 64; 128 with minilm-l6)")
    args = parser.parse_args()
    real = args.model == "minilm-l6"
    out = args.out or Path(tempfile.mkdtemp(prefix="tfspeed-profile-"))
    seq_length = args.seq_length or (128 if real else 64)

    model = hub.build_classifier_from(args.model, num_classes=2)  # untrained: latency does not depend on training
    paths = [export.save_tflite(export.convert(model, mode, seq_length=seq_length), out / f"model_{mode}.tflite",
                                overwrite=True) for mode in ("float32", "dynamic")]

    review = load_dataset("rotten_tomatoes").test.texts[0]
    config = ProfileConfig(runs=args.runs or (100 if real else 20), warmup=3, threads=(args.threads,))
    result = profile_models(paths, config=config, text=review, vocab=hub.vocab_path(args.model), seq_length=seq_length)
    print(result.to_table())
    result.to_json(out / "profile.json", overwrite=True)
    result.to_markdown(out / "profile.md", overwrite=True)

    base, dynamic = (result.row(p.name) for p in paths)
    fast, slow = dynamic["latency_ms"]["median"], base["latency_ms"]["median"]
    print(f"median latency: float32 {slow:.3f} ms, dynamic {fast:.3f} ms ({slow / fast:.2f}x faster); size "
          f"{base['size_bytes'] / 1e6:.2f} MB -> {dynamic['size_bytes'] / 1e6:.2f} MB")
    print(f"written: {out / 'profile.json'}, {out / 'profile.md'}")


if __name__ == "__main__":
    main()
