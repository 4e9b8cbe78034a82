"""Fine-tunes the real all-MiniLM-L6-v2 on Rotten Tomatoes and records test accuracy and time per epoch.

Usage: python benchmarks/finetune_minilm.py [--out DIR] [--epochs 3] [--seq-length 128]
Writes the model directory (default runs/teacher) and benchmarks/results/finetune_minilm.json.
"""

import argparse
import json
import os
import platform
import sys
from pathlib import Path

from tfspeed import _io
from tfspeed.data import load_dataset
from tfspeed.stages import StageContext
from tfspeed.stages import finetune as finetune_stage
from tfspeed.train import FinetuneConfig


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="runs/teacher")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--seq-length", type=int, default=128)
    parser.add_argument("--learning-rate", type=float, default=5e-5)
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args()
    config = FinetuneConfig(epochs=args.epochs, learning_rate=args.learning_rate, seq_length=args.seq_length)
    ctx = StageContext(load_dataset("rotten_tomatoes"), seq_length=args.seq_length, overwrite=args.overwrite)
    metrics = finetune_stage.run("minilm-l6", config, args.out, ctx)
    result = {k: v for k, v in metrics.items() if k != "history"}
    result["machine"] = {"cpu": _cpu(), "cores": os.cpu_count(), "python": platform.python_version(),
                         "load_average": os.getloadavg()}
    print(json.dumps(result, indent=2))
    _io.write_json(Path(__file__).parent / "results" / "finetune_minilm.json", result, overwrite=True)


def _cpu():
    try:
        return next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor()


if __name__ == "__main__":
    sys.exit(main())
