"""Every export mode with a dynamic sequence length: what the converter keeps int8, and whether the predictions match
the fixed-length file's.

For the fine-tuned MiniLM teacher (float32, float16, dynamic range, int8-mixed calibrated on 200 training reviews)
and the demo's QAT model (int8 with its trained ranges): the file at 128 tokens and the same model with
`seq_length="dynamic"`; op kinds of FULLY_CONNECTED / BATCH_MATMUL, test accuracy of both, argmax agreement and max
|Δ logit| over the 1,236 test reviews (the dynamic file runs each at its own length). Writes
benchmarks/results/dynamic_length_modes.json.

    python benchmarks/dynamic_length_modes.py --run /work/runs/demo
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from tfspeed import _io
from tfspeed.data import EncodedSplit, Tokenizer, load_dataset
from tfspeed.export import Converter
from tfspeed.export.ops import op_histogram
from tfspeed.export.parity import TFLiteClassifier
from tfspeed.profile.env import environment


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", default="runs/demo")
    p.add_argument("--modes", default="float32,float16,dynamic,int8-mixed", help="teacher modes to convert")
    p.add_argument("--limit", type=int, default=None, help="first N test reviews only")
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "dynamic_length_modes.json"))
    args = p.parse_args(argv)
    run = Path(args.run)
    env = environment()
    print(f"CPU: {env['cpu_model']} ({env['cpus_available']} cores)", flush=True)
    dataset = load_dataset("rotten_tomatoes")
    results = {"environment": env, "modes": {}}
    cases = [("00-teacher", m) for m in args.modes.split(",") if m] + [("04-qat", "int8")]
    for folder, mode in cases:
        fixed_conv = Converter(run / folder, 128, dataset)
        dyn_conv = Converter(run / folder, "dynamic", dataset)
        fixed, dyn = fixed_conv.convert(mode), dyn_conv.convert(mode)
        split = EncodedSplit.from_split(dataset.test, Tokenizer(fixed_conv.vocab, seq_length=128), args.limit)
        a, b = TFLiteClassifier(fixed).logits(split.features), TFLiteClassifier(dyn).logits(split.features)
        hf, hd = op_histogram(fixed)["int8"], op_histogram(dyn)["int8"]
        key = f"{folder} {mode}"
        results["modes"][key] = {"num_examples": len(split.labels),
            "fixed_accuracy": float(np.mean(a.argmax(-1) == split.labels)),
            "dynamic_accuracy": float(np.mean(b.argmax(-1) == split.labels)),
            "argmax_agreement": float(np.mean(a.argmax(-1) == b.argmax(-1))),
            "max_abs_logit_diff": float(np.abs(a - b).max()),
            "fixed_matmuls": hf, "dynamic_matmuls": hd, "fixed_bytes": len(fixed), "dynamic_bytes": len(dyn)}
        r = results["modes"][key]
        print(f"{key}: accuracy fixed {r['fixed_accuracy']:.4f} / dynamic {r['dynamic_accuracy']:.4f}, agreement "
              f"{r['argmax_agreement']:.4f}, max |Δ logit| {r['max_abs_logit_diff']:.3g}; FULLY_CONNECTED "
              f"fixed {hf['FULLY_CONNECTED']} dynamic {hd['FULLY_CONNECTED']}; BATCH_MATMUL fixed "
              f"{hf['BATCH_MATMUL']} dynamic {hd['BATCH_MATMUL']}", flush=True)
    _io.write_json(args.out, results, overwrite=True)
    print(f"Wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
