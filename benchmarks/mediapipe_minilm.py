"""MediaPipe Tasks' TextClassifier against tfspeed's own evaluation, on the same .tflite files, over the whole Rotten
Tomatoes test split; and `tfspeed predict` throughput.

For each file of a `tfspeed demo` / `optimize` run (the teacher's dynamic-range file, the combined model with its
trimmed vocabulary, the QAT int8 file), MediaPipe reads the tokenizer vocabulary and the labels from the file's
metadata and classifies each raw review; tfspeed tokenizes the same reviews with `tfspeed.data.Tokenizer` (as every
accuracy in its reports) and runs the file through ai-edge-litert. Files written before metadata existed get it here
with `add_model_metadata` (what `optimize` does now). Reports both accuracies (goal: within 0.2 point), the argmax
agreement, max |Δ probability|, what the reviews the two disagree on have in common (accents and other non-ASCII
characters, unknown tokens, truncation), and the metadata's size. Then runs `tfspeed predict` on 1,000 test reviews
with the combined model on 1 thread (texts per second, tokenization included). Writes
benchmarks/results/mediapipe_minilm.json.

    python benchmarks/mediapipe_minilm.py --run /work/runs/demo
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
import unicodedata
from pathlib import Path

import numpy as np

from tfspeed import _io
from tfspeed.data import EncodedSplit, Tokenizer, load_dataset
from tfspeed.export import TextClassifier, read_metadata
from tfspeed.export.metadata import add_model_metadata, metadata_buffer, metadata_bytes
from tfspeed.export.parity import TFLiteClassifier
from tfspeed.profile.env import environment

FILES = {"teacher-dynamic": "00-teacher", "03-prune-dynamic": "03-prune", "04-qat-int8": "04-qat"}


def _packaged(run: Path, name: str, folder: str, work: Path) -> Path:
    path = run / "export" / f"{name}.tflite"
    if metadata_buffer(path) is not None:
        return path
    out = work / f"{name}.tflite"
    out.write_bytes(add_model_metadata(path, run / folder))
    return out


def _why(text: str, ids: np.ndarray, unk: int, room: int, length: int) -> str:
    if length > room:
        return "truncated"
    if any(ord(c) > 127 for c in text):
        accents = any(unicodedata.combining(c) for c in unicodedata.normalize("NFD", text))
        return "accents" if accents else "other non-ASCII"
    if unk in ids:
        return "unknown token"
    return "none of these"


def strip_accents(text: str) -> str:
    """What BERT's uncased preprocessing does and MediaPipe's tokenizer does not: NFD, combining marks dropped (one
    line in an app, e.g. Kotlin `Normalizer.normalize(s, NFD).replace(Regex("\\p{Mn}+"), "")`)."""
    return "".join(c for c in unicodedata.normalize("NFD", text) if not unicodedata.combining(c))


def _mediapipe(path: Path, texts: list, labels: tuple) -> np.ndarray:
    from mediapipe.tasks.python.text import TextClassifier as MediaPipeClassifier

    out = np.zeros((len(texts), len(labels)), np.float32)
    mp = MediaPipeClassifier.create_from_model_path(str(path))
    try:
        for i, text in enumerate(texts):
            for c in mp.classify(text).classifications[0].categories:
                out[i, labels.index(c.category_name)] = c.score
    finally:
        mp.close()
    return out


def compare(path: Path, texts: list, labels: np.ndarray, seq_length: int) -> dict:
    meta = read_metadata(path)
    tokenizer = Tokenizer(list(meta.vocab), seq_length=seq_length)
    split = EncodedSplit(tokenizer.encode(texts), labels)
    ours = TFLiteClassifier(path).probabilities(split.features)
    lengths = TextClassifier(path).token_lengths(texts)
    start = time.perf_counter()
    theirs = _mediapipe(path, texts, meta.labels)
    mp_seconds = time.perf_counter() - start
    stripped = _mediapipe(path, [strip_accents(t) for t in texts], meta.labels)
    ascii_rows = np.array([all(ord(c) < 128 for c in t) for t in texts])
    agree = ours.argmax(-1) == theirs.argmax(-1)
    unk = list(meta.vocab).index("[UNK]")
    reasons = {}
    for i in np.flatnonzero(~agree):
        why = _why(texts[i], split.features["input_word_ids"][i], unk, seq_length - 2, int(lengths[i]))
        reasons.setdefault(why, []).append(texts[i][:120])
    diff = np.abs(ours - theirs)
    return {"file": str(path), "size_bytes": path.stat().st_size, "vocab_size": len(meta.vocab),
            "tfspeed_accuracy": float(np.mean(ours.argmax(-1) == labels)),
            "mediapipe_accuracy": float(np.mean(theirs.argmax(-1) == labels)),
            "argmax_agreement": float(agree.mean()), "disagreements": int((~agree).sum()),
            "max_abs_probability_diff": float(diff.max()), "mean_abs_probability_diff": float(diff.mean()),
            "max_abs_probability_diff_ascii_texts": float(diff[ascii_rows].max()),
            "mediapipe_accuracy_accents_stripped": float(np.mean(stripped.argmax(-1) == labels)),
            "argmax_agreement_accents_stripped": float(np.mean(stripped.argmax(-1) == ours.argmax(-1))),
            "max_abs_probability_diff_accents_stripped": float(np.abs(stripped - ours).max()),
            "texts_with_probability_diff_above_1e-3": int((diff.max(-1) > 1e-3).sum()),
            "disagreement_reasons": {k: {"count": len(v), "examples": v[:5]} for k, v in reasons.items()},
            "texts_over_length": int((lengths > seq_length - 2).sum()),
            "texts_with_non_ascii": int(sum(any(ord(c) > 127 for c in t) for t in texts)),
            "mediapipe_seconds": mp_seconds}


def predict_throughput(path: Path, texts: list) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        f = Path(tmp) / "reviews.txt"
        f.write_text("\n".join(t.replace("\n", " ") for t in texts) + "\n", encoding="utf-8")
        start = time.perf_counter()
        command = [sys.executable, "-c", "import sys; from tfspeed.cli import main; sys.exit(main())", "predict",
                   str(path), "--file", str(f), "--threads", "1"]
        done = subprocess.run(command, capture_output=True, text=True, check=True)
        wall = time.perf_counter() - start
    summary = [line for line in done.stderr.splitlines() if " texts in " in line][-1]
    seconds = float(summary.split(" texts in ")[1].split(" s ")[0])
    return {"texts": len(texts), "threads": 1, "seconds": seconds, "texts_per_second": len(texts) / seconds,
            "command_wall_seconds": wall, "lines": len(done.stdout.splitlines()), "summary": summary}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", default="runs/demo", help="a tfspeed demo / optimize output directory")
    p.add_argument("--seq-length", type=int, default=128)
    p.add_argument("--limit", type=int, default=None, help="first N test reviews only")
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "mediapipe_minilm.json"))
    args = p.parse_args(argv)
    run = Path(args.run)
    env = environment()
    print(f"CPU: {env['cpu_model']} ({env['cpus_available']} cores)", flush=True)
    test = load_dataset("rotten_tomatoes").test
    texts, labels = list(test.texts[:args.limit]), np.asarray(test.labels[:args.limit])
    results = {"environment": env, "num_texts": len(texts), "seq_length": args.seq_length, "files": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name, folder in FILES.items():
            path = _packaged(run, name, folder, Path(tmp))
            r = compare(path, texts, labels, args.seq_length)
            r["metadata_bytes"] = metadata_bytes(path)
            results["files"][name] = r
            print(f"{name}: tfspeed {r['tfspeed_accuracy']:.4f}, MediaPipe {r['mediapipe_accuracy']:.4f} "
                  f"(Δ {100 * (r['mediapipe_accuracy'] - r['tfspeed_accuracy']):+.2f} points), agreement "
                  f"{r['argmax_agreement']:.4f}, max |Δp| {r['max_abs_probability_diff']:.2e}, metadata "
                  f"{(r['metadata_bytes'] or 0) / 1e3:.1f} kB, disagreements by cause "
                  f"{ {k: v['count'] for k, v in r['disagreement_reasons'].items()} }; max |Δp| on ASCII-only "
                  f"texts {r['max_abs_probability_diff_ascii_texts']:.2e}; accents stripped before MediaPipe: "
                  f"{r['mediapipe_accuracy_accents_stripped']:.4f}, agreement "
                  f"{r['argmax_agreement_accents_stripped']:.4f}, max |Δp| "
                  f"{r['max_abs_probability_diff_accents_stripped']:.2e}", flush=True)
        combined = _packaged(run, "03-prune-dynamic", "03-prune", Path(tmp))
        reviews = (list(test.texts) * 2)[:1000]
        results["predict"] = predict_throughput(combined, reviews)
        print(f"tfspeed predict, combined model, 1 thread: {results['predict']['summary']}; whole command "
              f"{results['predict']['command_wall_seconds']:.1f} s", flush=True)
    _io.write_json(args.out, results, overwrite=True)
    print(f"Wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
