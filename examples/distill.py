"""Distil a fine-tuned BERT teacher into a shallower student, two ways: the `distill` verb and the `Distiller` model.

Shows `distill(teacher, train, validation, config=DistillConfig(layers=2, ...))` (builds the student from the
teacher's layers and fits it on Hinton's soft targets, the teacher's logits cached once), then the same by hand:
`Distiller(teacher, student_from_teacher(teacher, layers=2))` is a Keras Model you `compile` and `fit`. Prints the
teacher's and both students' accuracy and size. The teacher is left unchanged.

    python examples/distill.py                      # bert-tiny-random (2 layers -> 1), 256 reviews: under a minute
    python examples/distill.py --model minilm-l6    # pretrained MiniLM (6 layers -> 2), every review, seq 128

Fewer layers is what cuts latency; see benchmarks/README.md, Distillation. On random weights the quick default skips
the teacher's fine-tuning (`--epochs N` runs it).
"""

import argparse
import tempfile
from pathlib import Path

import tfspeed  # noqa: F401  (first: selects Keras 2 before TensorFlow loads)
from tfspeed import hub
from tfspeed.compat import keras
from tfspeed.compress import DistillConfig, Distiller, distill, student_from_teacher
from tfspeed.compress.distillation import num_layers_of
from tfspeed.data import EncodedDataset, Tokenizer, load_dataset
from tfspeed.train import accuracy, fit_classifier


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="bert-tiny-random", help="a preset: bert-tiny-random or minilm-l6")
    parser.add_argument("--out", type=Path, help="output folder (default: a new temporary folder)")
    parser.add_argument("--limit", type=int, help="training reviews (default: 256; all with minilm-l6)")
    parser.add_argument("--eval-limit", type=int, help="validation and test reviews (default: 200; all with minilm-l6)")
    parser.add_argument("--epochs", type=int, help="teacher fine-tuning epochs "
                                                   "(default: 0 on random weights; 3 with minilm-l6)")
    parser.add_argument("--student-epochs", type=int, help="distillation epochs (default: 1; 3 with minilm-l6)")
    parser.add_argument("--layers", type=int, help="student layers (default: 2, or 1 for a 2-layer teacher)")
    parser.add_argument("--seq-length", type=int, help="tokens per review (default: 64; 128 with minilm-l6)")
    args = parser.parse_args()
    real = args.model == "minilm-l6"
    out = args.out or Path(tempfile.mkdtemp(prefix="tfspeed-distill-"))
    seq_length = args.seq_length or (128 if real else 64)
    data = EncodedDataset(load_dataset("rotten_tomatoes"), Tokenizer(hub.vocab_path(args.model), seq_length=seq_length),
                          limit=args.limit or (None if real else 256),
                          eval_limit=args.eval_limit or (None if real else 200))
    teacher = hub.build_classifier_from(args.model, num_classes=2)
    epochs = args.epochs if args.epochs is not None else (3 if real else 0)
    if epochs:  # random weights learn nothing in a few steps: the quick default skips this fine-tuning
        fit_classifier(teacher, data.train, data.validation, epochs=epochs, verbose=2)
    layers, epochs = args.layers or min(2, num_layers_of(teacher) - 1), args.student_epochs or (3 if real else 1)

    # 1. the verb: a student from every other teacher layer, fitted on soft targets (alpha 0.5, temperature 2)
    student, history = distill(teacher, data.train, config=DistillConfig(layers=layers, epochs=epochs), verbose=2)

    # 2. by hand: the Distiller is a Keras Model (the teacher runs on the fly); `.student` is the trained student
    distiller = Distiller(teacher, student_from_teacher(teacher, layers=layers), alpha=0.5, temperature=2.0)
    distiller.compile(optimizer=keras.optimizers.Adam(1e-4))
    distiller.fit(data.train.dataset(32, shuffle=True), epochs=epochs, verbose=2)
    out.mkdir(parents=True, exist_ok=True)
    distiller.student.save(out / "student.keras")

    print(f"teacher: {num_layers_of(teacher)} layers, {teacher.count_params() / 1e6:.2f} M parameters; "
          f"students: {layers} of its layers, {student.count_params() / 1e6:.2f} M parameters")
    print(f"accuracy on {len(data.test)} test reviews: teacher {accuracy(teacher, data.test):.4f}, "
          f"student (distill) {accuracy(student, data.test):.4f}, "
          f"student (Distiller) {accuracy(distiller.student, data.test):.4f}")
    print(f"saved: {out / 'student.keras'}")


if __name__ == "__main__":
    main()
