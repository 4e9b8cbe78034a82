"""How much of the gzip gap between 2:4 and 50% unstructured is the mask's, not the training's.

Applies masks in ONE shot (no fine-tuning) to the dense fine-tuned MiniLM: 50% unstructured by magnitude per kernel
(what TFMOT's schedules end at) and 2:4 (the two largest of every four consecutive input weights, TFMOT's m_by_n
groups), on the same kernels as `benchmarks/prune_minilm.py` (attention, FFN, pooler and the embedding tables),
converts each to a dynamic-range .tflite with the real converter and compares gzip sizes with the dense file's.
Both masks zero half of the same weights; 2:4 keeps the two largest of each group even where they are small, so its
surviving int8 values spread over more levels and the file compresses less.

    python benchmarks/sparsity_gzip_bound.py [--teacher /work/runs/teacher]

Prints the ratios and writes benchmarks/results/sparsity_gzip_bound.json.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tfspeed import _io, artifacts  # noqa: E402
from tfspeed.compat import keras  # noqa: E402
from tfspeed.compress import pruning as P  # noqa: E402
from tfspeed.compress.pruning.report import _gzip_size  # noqa: E402
from tfspeed.export.sparsity import to_tflite  # noqa: E402

RESULT = ROOT / "benchmarks" / "results" / "sparsity_gzip_bound.json"


def unstructured(w, sparsity=0.5):
    keep = np.abs(w) >= np.quantile(np.abs(w), sparsity)
    return w * keep


def two_of_four(w):
    """2:4 along the input axis (axis 0 of a Dense kernel [in, out]; the embedding dimension of a table)."""
    t = w.T if w.shape[0] % 4 else w  # embedding tables [vocab, dim]: group along dim
    g = np.moveaxis(t, 0, -1).reshape(t.shape[1], -1, 4).copy()
    np.put_along_axis(g, np.argsort(np.abs(g), axis=-1)[..., :2], 0.0, axis=-1)
    t = np.moveaxis(g.reshape(t.shape[1], t.shape[0]), -1, 0)
    return t.T if w.shape[0] % 4 else t


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teacher", default="/work/runs/teacher")
    p.add_argument("--seq-length", type=int, default=64)
    p.add_argument("--out", default=str(RESULT))
    args = p.parse_args(argv)
    dense, _ = artifacts.load_model_dir(args.teacher)
    names = sorted(P.targeted_weights(dense, include_embeddings=True))
    result = {"format_version": 1, "tool": "benchmarks/sparsity_gzip_bound.py", "teacher": args.teacher,
              "seq_length": args.seq_length, "kernels": len(names), "runs": {}}
    base = None
    for name, mask in (("dense", None), ("p50_one_shot", unstructured), ("m24_one_shot", two_of_four)):
        t = time.perf_counter()
        model = keras.models.clone_model(dense)
        model.set_weights(dense.get_weights())
        if mask is not None:
            for layer_name in names:
                layer = model.get_layer(layer_name)
                weights = layer.get_weights()
                weights[0] = mask(weights[0])
                layer.set_weights(weights)
        sparsity = float(np.mean([np.mean(model.get_layer(n).get_weights()[0] == 0) for n in names]))
        data = to_tflite(model, "dynamic", args.seq_length)
        row = {"gzip_bytes": _gzip_size(data), "bytes": len(data), "mean_kernel_sparsity": sparsity}
        base = base or row["gzip_bytes"]
        row["dynamic_gzip_ratio_vs_dense"] = row["gzip_bytes"] / base
        result["runs"][name] = row
        print(name, json.dumps(row), f"({time.perf_counter() - t:.0f}s)", flush=True)
    _io.write_json(args.out, result, overwrite=True)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
