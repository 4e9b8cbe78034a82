"""Prune a fine-tuned BERT to 2:4 sparsity (two zeros in every four weights) with TFMOT, through `fit`.

Shows `prune(model, config=PruneConfig(m_by_n=(2, 4), ...))` -> `fit_classifier(..., callbacks=pruning_callbacks())`
-> `strip`, then `tfspeed.export.sparsity.sparsity_report` (sparsity per kernel, gzip of the weights and of the
.tflite files) and a check that every pruned kernel really is 2:4. The caller's model is never changed.

    python examples/prune_2of4.py                      # bert-tiny-random, 256 reviews: under a minute
    python examples/prune_2of4.py --model minilm-l6    # pretrained MiniLM, every review, seq 128, 3 + 2 epochs

2:4 sparsity shrinks the gzip of the weights, not the latency: LiteRT runs the zeros (see README, Known limits).
On random weights the quick default skips the fine-tuning before pruning (`--epochs N` runs it).
"""

import argparse
import tempfile
from pathlib import Path

import numpy as np

import tfspeed  # noqa: F401  (first: selects Keras 2 before TensorFlow loads)
from tfspeed import hub
from tfspeed.compress import PruneConfig, prune, pruning_callbacks, strip, targeted_weights
from tfspeed.data import EncodedDataset, Tokenizer, load_dataset
from tfspeed.export.sparsity import sparsity_report
from tfspeed.train import accuracy, fit_classifier


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="bert-tiny-random", help="a preset: bert-tiny-random or minilm-l6")
    parser.add_argument("--out", type=Path, help="output folder (default: a new temporary folder)")
    parser.add_argument("--limit", type=int, help="training reviews (default: 256; all with minilm-l6)")
    parser.add_argument("--eval-limit", type=int, help="validation and test reviews (default: 200; all with minilm-l6)")
    parser.add_argument("--epochs", type=int, help="fine-tuning epochs before pruning "
                                                   "(default: 0 on random weights; 3 with minilm-l6)")
    parser.add_argument("--prune-epochs", type=int, help="pruning epochs (default: 1; 2 with minilm-l6)")
    parser.add_argument("--seq-length", type=int, help="tokens per review (default: 64; 128 with minilm-l6)")
    args = parser.parse_args()
    real = args.model == "minilm-l6"
    out = args.out or Path(tempfile.mkdtemp(prefix="tfspeed-prune-"))
    seq_length = args.seq_length or (128 if real else 64)
    data = EncodedDataset(load_dataset("rotten_tomatoes"), Tokenizer(hub.vocab_path(args.model), seq_length=seq_length),
                          limit=args.limit or (None if real else 256),
                          eval_limit=args.eval_limit or (None if real else 200))
    model = hub.build_classifier_from(args.model, num_classes=2)
    epochs = args.epochs if args.epochs is not None else (3 if real else 0)
    if epochs:  # random weights learn nothing in a few steps: the quick default skips this fine-tuning
        fit_classifier(model, data.train, data.validation, epochs=epochs, verbose=2)

    # 2:4 along each kernel's input axis, from the first step (constant schedule); the callbacks move the schedule
    config = PruneConfig(m_by_n=(2, 4), schedule="constant", epochs=args.prune_epochs or (2 if real else 1),
                         steps_per_epoch=-(-len(data.train) // 32), batch_size=32)
    pruned = prune(model, config=config)
    fit_classifier(pruned, data.train, epochs=config.epochs, batch_size=config.batch_size,
                   learning_rate=config.learning_rate, callbacks=pruning_callbacks(per_layer=False), verbose=2)
    sparse = strip(pruned)  # a plain Keras model again, its kernels holding the zeros
    out.mkdir(parents=True, exist_ok=True)
    sparse.save(out / "model_2of4.keras")

    report = sparsity_report(sparse, seq_length=seq_length)
    for name, layer in report["layers"].items():
        print(f"  {name:<28} sparsity {layer['sparsity']:.3f}  ({layer['params']} weights)")
    for name, kernel in targeted_weights(sparse).items():  # [inputs, units]: groups of 4 consecutive inputs
        groups = kernel.T.reshape(kernel.shape[1], -1, 4)
        assert (np.count_nonzero(groups, axis=-1) <= 2).all(), f"{name} is not 2:4"
    dynamic = report["tflite"]["dynamic"]
    print(f"every pruned kernel is 2:4: {len(report['layers'])} kernels")
    print(f"sparsity: {report['sparsity']:.4f} of {report['targeted_params']} targeted weights "
          f"({report['model_sparsity']:.4f} of the whole model)")
    print(f"weights gzip: {report['weights_gzip_bytes'] / 1e6:.2f} MB of {report['weights_bytes'] / 1e6:.2f} MB; "
          f"dynamic .tflite gzip: {dynamic['gzip_bytes'] / 1e6:.2f} MB of {dynamic['bytes'] / 1e6:.2f} MB")
    print(f"accuracy: dense {accuracy(model, data.test):.4f}, 2:4 {accuracy(sparse, data.test):.4f} "
          f"on {len(data.test)} test reviews")
    print(f"saved: {out / 'model_2of4.keras'}")


if __name__ == "__main__":
    main()
