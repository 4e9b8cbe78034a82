"""Do the length-bucket twins `optimize` writes predict what their padded files predict? Every test review through
both files of each model (`TextClassifier`: raw text in, probabilities out), argmax agreement and the largest
probability difference.

    python benchmarks/bucket_parity_minilm.py --run runs/demo
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from tfspeed import _io
from tfspeed.data import load_dataset
from tfspeed.export import TextClassifier
from tfspeed.profile.env import environment

RESULTS = Path(__file__).parent / "results"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", default="runs/demo", help="a tfspeed demo / optimize output directory")
    p.add_argument("--out", default=str(RESULTS / "bucket_parity_minilm.json"))
    args = p.parse_args(argv)
    env = environment()
    print(f"CPU: {env['cpu_model']} ({env['cpus_available']} cores), flags: {env.get('cpu_flags')}", flush=True)
    test = load_dataset("rotten_tomatoes").test
    texts, labels = list(test.texts), np.asarray(test.labels)
    results = {"environment": env, "run": args.run, "num_texts": len(texts), "models": {}}
    for twin in sorted((Path(args.run) / "export").glob("*-buckets.tflite")):
        padded = twin.with_name(twin.name.replace("-buckets", ""))
        a = TextClassifier(padded, num_threads=2).predict_proba(texts)
        b = TextClassifier(twin, num_threads=2).predict_proba(texts)
        row = {"padded": str(padded), "buckets": str(twin),
               "argmax_agreement": float(np.mean(a.argmax(-1) == b.argmax(-1))),
               "max_abs_probability_diff": float(np.abs(a - b).max()),
               "accuracy_padded": float(np.mean(a.argmax(-1) == labels)),
               "accuracy_buckets": float(np.mean(b.argmax(-1) == labels))}
        results["models"][twin.stem] = row
        print(f"{twin.stem:28s} agreement {row['argmax_agreement']:.4f}, "
              f"max |Δp| {row['max_abs_probability_diff']:.4f}, accuracy {row['accuracy_padded']:.4f} padded / "
              f"{row['accuracy_buckets']:.4f} buckets", flush=True)
    _io.write_json(args.out, results, overwrite=True)
    print(f"Wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
