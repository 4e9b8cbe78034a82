"""Latency side by side on random-weight BERT classifiers (seq 128, batch 1) of shapes L2/H128, L4/H512 and L12/H768:
TFLite float32, dynamic range, full int8, int8-mixed (LayerNorm pieces, softmax and GELU kept float) and float16, the
TF SavedModel float32 baseline, and onnxruntime (float32 and dynamic int8, when onnxruntime and tf2onnx are
installed), with the ratios against TF float32 and the machine it ran on.

    nice -n 5 python benchmarks/perf_bert_shapes.py [--shapes L2/H128,L4/H512,L12/H768] [--threads 1,2]
        [--out benchmarks/results/perf_bert_shapes] [--work DIR [--reuse]] [--calibration-samples 20] [--no-onnx]
        [--overwrite]

Writes `<out>.json` (every profile row, the machine, the load average) and `<out>.md` (the tables).

Each shape's models are profiled interleaved (A B C ... A B C ...) with `tfspeed.profile.profile_models`, once per
thread count, each thread count in a child process: TensorFlow's thread count is process-wide and fixed at start, so
the TF baseline gets the same number of threads as the interpreters (`intra_op` = threads, `inter_op` = 1).

Needs `onnxruntime` and `tf2onnx` for the onnxruntime rows (not tfspeed dependencies: `pip install onnxruntime
tf2onnx`). tf2onnx turns the exact GELU's `Erfc` into an op onnxruntime rejects, so it is rewritten as `1 - Erf`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SEQ = 128
INPUT_NAMES = ("input_word_ids", "input_mask", "input_type_ids")
SHAPES = {  # label -> (preset, measured runs per model)
    "L2/H128": ("bert-tiny-random", 300),
    "L4/H512": ("bert-small-random", 60),
    "L12/H768": ("bert-base-random", 15),
}
TFLITE_MODES = ("float32", "dynamic", "int8", "int8-mixed", "float16")
TF_NAME = "TF SavedModel float32"
DISPLAY = {"float32": "TFLite float32", "dynamic": "TFLite dynamic range", "int8": "TFLite full int8",
           "int8-mixed": "TFLite int8-mixed", "float16": "TFLite float16", "onnx-float32": "onnxruntime float32",
           "onnx-int8": "onnxruntime dynamic int8"}


def _quiet_tf():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def calibration_ids(vocab_size: int, n: int, seed: int = 0) -> dict:
    """Random in-vocabulary int32 token ids (CLS first, SEP last) with a full mask: fine for random weights."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(1000, vocab_size, (n, SEQ)).astype(np.int32)
    ids[:, 0], ids[:, -1] = 101, 102
    return {"input_word_ids": ids, "input_mask": np.ones((n, SEQ), np.int32),
            "input_type_ids": np.zeros((n, SEQ), np.int32)}


def export_onnx(model, folder: Path) -> list:
    """[(name, path)] for onnxruntime float32 and dynamic int8. Raises when tf2onnx / onnxruntime cannot do it."""
    import onnx
    import tf2onnx
    from onnx import helper, numpy_helper
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from tfspeed.compat import tf

    spec = [tf.TensorSpec([1, SEQ], tf.int32, name=n) for n in INPUT_NAMES]

    @tf.function(input_signature=spec)
    def serve(input_word_ids, input_mask, input_type_ids):
        return {"logits": model({"input_word_ids": input_word_ids, "input_mask": input_mask,
                                 "input_type_ids": input_type_ids}, training=False)}

    proto, _ = tf2onnx.convert.from_function(serve, input_signature=spec, opset=17)
    graph = proto.graph
    if any(n.op_type == "Erfc" for n in graph.node):  # exact GELU: onnxruntime has no Erfc; erfc(x) = 1 - erf(x)
        graph.initializer.append(numpy_helper.from_array(np.array(1.0, np.float32), "tfspeed_one"))
        nodes = []
        for n in graph.node:
            if n.op_type == "Erfc":
                mid = n.output[0] + "_erf"
                nodes += [helper.make_node("Erf", [n.input[0]], [mid], name=n.name + "_erf"),
                          helper.make_node("Sub", ["tfspeed_one", mid], [n.output[0]], name=n.name + "_1_minus")]
            else:
                nodes.append(n)
        del graph.node[:]
        graph.node.extend(nodes)
    onnx.checker.check_model(proto)
    fp32 = folder / "onnx-float32.onnx"
    onnx.save(proto, str(fp32))
    int8 = folder / "onnx-int8.onnx"
    quantize_dynamic(str(fp32), str(int8), weight_type=QuantType.QInt8)
    return [(DISPLAY["onnx-float32"], fp32), (DISPLAY["onnx-int8"], int8)]


def export_shape(label: str, folder: Path, calibration_samples: int, with_onnx: bool) -> dict:
    """Builds the random-weight classifier of `label`, saves the SavedModel baseline and converts every variant."""
    from tfspeed.compat import keras, tf
    from tfspeed.export import convert, save_tflite
    from tfspeed.hub.presets import PRESETS
    from tfspeed.models import build_classifier

    preset = SHAPES[label][0]
    config = PRESETS[preset].config
    keras.utils.set_random_seed(0)
    model = build_classifier(config, seq_length=SEQ)
    info = {"label": label, "preset": preset, "config": {k: getattr(config, k) for k in (
        "num_layers", "hidden_size", "num_heads", "intermediate_size", "vocab_size")},
            "parameters": int(model.count_params()), "models": [], "conversion_s": {}, "notes": []}
    t0 = time.perf_counter()
    spec = [tf.TensorSpec([1, SEQ], tf.int32, name=n) for n in INPUT_NAMES]

    @tf.function(input_signature=spec)
    def serving_default(input_word_ids, input_mask, input_type_ids):
        return {"logits": model({"input_word_ids": input_word_ids, "input_mask": input_mask,
                                 "input_type_ids": input_type_ids}, training=False)}

    saved = folder / "savedmodel"
    tf.saved_model.save(model, str(saved), signatures=serving_default.get_concrete_function())
    info["conversion_s"]["savedmodel"] = time.perf_counter() - t0
    info["models"].append((TF_NAME, str(saved)))
    calibration = calibration_ids(config.vocab_size, calibration_samples)
    for mode in TFLITE_MODES:
        t0 = time.perf_counter()
        data = convert(model, mode=mode, seq_length=SEQ,
                       calibration=calibration if mode.startswith("int8") else None,
                       num_calibration_samples=calibration_samples)
        path = folder / f"{mode}.tflite"
        save_tflite(data, path, overwrite=True)
        info["conversion_s"][mode] = time.perf_counter() - t0
        info["models"].append((DISPLAY[mode], str(path)))
        print(f"  {label} {mode}: {len(data) / 2**20:.1f} MiB in {info['conversion_s'][mode]:.0f} s", flush=True)
    if with_onnx:
        add_onnx(info, model, folder)
    return info


def add_onnx(info: dict, model, folder: Path) -> None:
    """Adds the onnxruntime models to `info`, or a note saying why they are left out."""
    t0 = time.perf_counter()
    try:
        info["models"] += [(n, str(p)) for n, p in export_onnx(model, folder)]
        info["conversion_s"]["onnx"] = time.perf_counter() - t0
    except Exception as exc:  # reported, not fatal: onnxruntime is optional
        info["notes"].append(f"onnxruntime rows left out: {type(exc).__name__}: {str(exc)[:300]}")
        print(f"  {info['label']} onnx: {info['notes'][-1]}", flush=True)


def export_child(folder: str, label: str, calibration_samples: int, what: str) -> None:
    """In a child process (memory is freed between shapes): `what` = "tflite" (SavedModel + TFLite) or "onnx"."""
    folder = Path(folder)
    done = folder / "exported.json"
    if what == "tflite":
        info = export_shape(label, folder, calibration_samples, with_onnx=False)
    else:
        from tfspeed.compat import keras
        from tfspeed.hub.presets import PRESETS
        from tfspeed.models import build_classifier

        info = json.loads(done.read_text())
        keras.utils.set_random_seed(0)  # the same random weights as the TFLite models
        add_onnx(info, build_classifier(PRESETS[SHAPES[label][0]].config, seq_length=SEQ), folder)
    done.write_text(json.dumps(info))


def child(spec_path: str) -> None:
    """Profiles one shape at one thread count; TensorFlow's threads are set before it starts."""
    spec = json.loads(Path(spec_path).read_text())
    threads = spec["threads"]
    from tfspeed.compat import tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    from tfspeed.profile import profile_models

    rng = np.random.default_rng(0)
    feed = calibration_ids(spec["vocab_size"], 1, seed=int(rng.integers(1 << 30)))
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    result = profile_models([p for _, p in spec["models"]], names=[n for n, _ in spec["models"]], baseline=TF_NAME,
                            threads=[threads], runs=spec["runs"], warmup=spec["warmup"], inputs=feed,
                            progress=False)
    data = result.to_dict(samples=False)
    data["load_average"] = {"before": list(load_before), "after": list(os.getloadavg())}
    data["elapsed_s"] = time.perf_counter() - t0
    Path(spec["out"]).write_text(json.dumps(data, default=float))


def _ms(x):
    return f"{x:.2f}" if x < 10 else f"{x:.1f}" if x < 100 else f"{x:.0f}"


def markdown(report: dict) -> str:
    env = report["environment"]
    shapes = [s for s in report["shapes"]]
    threads = report["threads"]
    names = []
    for s in shapes:
        for r in s["rows"]:
            if r["name"] not in names:
                names.append(r["name"])

    def cell(s, name, key):
        vals = []
        for t in threads:
            row = next((r for r in s["rows"] if r["name"] == name and r["threads"] == t), None)
            vals.append(None if row is None else row)
        if all(v is None for v in vals):
            return "–"
        if key == "ms":
            return " / ".join("–" if v is None else _ms(v["median_ms"]) for v in vals)
        return " / ".join("–" if v is None else f"{v['ratio_vs_tf']:.2f}x" for v in vals)

    tt = " / ".join(f"{t} thr" for t in threads)
    lines = [
        "# BERT shapes: TFLite, TF and onnxruntime latency side by side",
        "",
        f"Random-weight BERT classifiers, batch 1, seq {SEQ}, median latency in ms ({tt}); ratio = model latency / "
        "TF SavedModel float32 latency at the same thread count (below 1 is faster). Each shape's models were "
        "profiled interleaved with `tfspeed.profile.profile_models` (warm-up apart), each thread count in its own "
        "process with TensorFlow set to that many intra-op threads. TFLite runs with XNNPACK (LiteRT's default).",
        "",
        f"- Machine: {env['cpu_model']}, {env['cpus_available']} of {env['cpu_count']} cores available, "
        f"{env['os']}",
        f"- TensorFlow {env['tensorflow']}, tf_keras {env['tf_keras']}, LiteRT {env['ai_edge_litert']}, "
        f"onnxruntime {env.get('onnxruntime') or 'not installed'}, Python {env['python']}",
        f"- Load average (1 min) while profiling: {report['load_average_range'][0]:.1f} to "
        f"{report['load_average_range'][1]:.1f} on {env['cpu_count']} cores"
        + (" — a shared, overloaded machine: other jobs ran at the same time. Absolute times are inflated (the "
           "process waited for a core), and so are the ratios between models of very different run times: a long "
           "run is interrupted more often than a short one, so slow models look slower still. Interleaving cancels "
           "drift, not this. Re-run on an idle machine for README-grade numbers."
           if report["load_average_range"][1] > env["cpu_count"] else ""),
        f"- Run: {report['started']} (UTC), `nice -n 5 python benchmarks/perf_bert_shapes.py`",
        "",
        "## Median latency, ms (" + tt + ")",
        "",
        "| model | " + " | ".join(s["label"] for s in shapes) + " |",
        "|---|" + "---:|" * len(shapes),
    ]
    lines += [f"| {n} | " + " | ".join(cell(s, n, "ms") for s in shapes) + " |" for n in names]
    lines += ["", "## Ratio vs TF SavedModel float32 (" + tt + "; below 1 is faster)", "",
              "| model | " + " | ".join(s["label"] for s in shapes) + " |", "|---|" + "---:|" * len(shapes)]
    lines += [f"| {n} | " + " | ".join(cell(s, n, "ratio") for s in shapes) + " |" for n in names]
    lines += ["", "## Size on disk, MiB (gzip)", "", "| model | " + " | ".join(s["label"] for s in shapes) + " |",
              "|---|" + "---:|" * len(shapes)]
    for n in names:
        cells = []
        for s in shapes:
            row = next((r for r in s["rows"] if r["name"] == n), None)
            cells.append("–" if row is None else f"{row['size_bytes'] / 2**20:.1f} ({row['gzip_bytes'] / 2**20:.1f})")
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    notes = [f"{s['label']}: {n}" for s in shapes for n in s["notes"]]
    lines += ["", "## Notes", ""]
    lines += [f"- {n}" for n in notes]
    lines += [
        "- Shapes: " + "; ".join(f"{s['label']} = preset `{s['preset']}` ({s['config']['num_layers']} layers, "
                                 f"hidden {s['config']['hidden_size']}, {s['config']['num_heads']} heads, FFN "
                                 f"{s['config']['intermediate_size']}, vocab {s['config']['vocab_size']}, "
                                 f"{s['parameters'] / 1e6:.1f} M parameters), {s['runs']} runs per model"
                                 for s in shapes) + ".",
        "- int8 and int8-mixed calibrate on "
        f"{report['calibration_samples']} rows of random in-vocabulary token ids (random weights: no real text "
        "needed). int8-mixed keeps MEAN, SQUARED_DIFFERENCE, RSQRT, SOFTMAX and GELU float.",
        "- The TF baseline's size is the SavedModel directory (variables included).",
    ]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", default=",".join(SHAPES), help=f"comma-separated among {list(SHAPES)}")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--out", default="benchmarks/results/perf_bert_shapes",
                        help="output path without suffix: <out>.json and <out>.md")
    parser.add_argument("--work", default=None, help="folder for the converted models (default: a temp folder)")
    parser.add_argument("--calibration-samples", type=int, default=20)
    parser.add_argument("--runs-scale", type=float, default=1.0, help="multiplies every shape's number of runs")
    parser.add_argument("--no-onnx", dest="onnx", action="store_false")
    parser.add_argument("--reuse", action="store_true",
                        help="reuse the models a previous run converted into --work (profile only)")
    parser.add_argument("--overwrite", action="store_true")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--export-child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    _quiet_tf()
    if args.child:
        child(args.child)
        return 0
    if args.export_child:
        folder, label, samples, what = args.export_child
        export_child(folder, label, int(samples), what)
        return 0
    from tfspeed import _io
    from tfspeed.profile import env as profile_env

    json_path, md_path = Path(args.out + ".json"), Path(args.out + ".md")
    for p, arg in ((json_path, "out"), (md_path, "out")):
        _io.check_writable(p, args.overwrite, arg)
    labels = [s.strip() for s in args.shapes.split(",") if s.strip()]
    unknown = [s for s in labels if s not in SHAPES]
    if unknown:
        parser.error(f"Received an invalid value for `--shapes`, expected labels among {list(SHAPES)}. "
                     f"Received: {unknown}")
    threads = [int(t) for t in args.threads.split(",")]
    with_onnx = args.onnx
    if with_onnx:
        try:
            import onnxruntime  # noqa: F401
            import tf2onnx  # noqa: F401
        except ImportError as exc:
            with_onnx = False
            onnx_missing = f"onnxruntime rows left out: {exc} (pip install onnxruntime tf2onnx)"
    started = time.strftime("%Y-%m-%d %H:%M", time.gmtime())
    report = {"format_version": 1, "benchmark": "perf_bert_shapes", "started": started, "seq_length": SEQ,
              "batch": 1, "threads": threads, "calibration_samples": args.calibration_samples,
              "environment": profile_env.environment(), "shapes": []}
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="perf_bert_shapes_"))
    loads = []
    for label in labels:
        folder = work / label.replace("/", "_")
        folder.mkdir(parents=True, exist_ok=True)
        done = folder / "exported.json"
        if args.reuse and done.exists():
            info = json.loads(done.read_text())
            print(f"{label}: reusing the models in {folder}", flush=True)
        else:
            print(f"{label}: building and converting", flush=True)
            for what in ("tflite", "onnx") if with_onnx else ("tflite",):
                proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--export-child", str(folder), label,
                                       str(args.calibration_samples), what])
                if proc.returncode != 0 and what == "tflite":
                    raise RuntimeError(f"exporting {label} failed (exit {proc.returncode})")
                if proc.returncode != 0:  # e.g. killed for memory: the TFLite rows stand without onnxruntime
                    info = json.loads(done.read_text())
                    info["notes"].append(f"onnxruntime rows left out: the ONNX export process ended with exit "
                                         f"code {proc.returncode} (-9: killed, e.g. out of memory)")
                    done.write_text(json.dumps(info))
            info = json.loads(done.read_text())
        if args.onnx and not with_onnx:
            info["notes"].append(onnx_missing)
        runs = max(5, int(SHAPES[label][1] * args.runs_scale))
        info.update(runs=runs, rows=[], profiles=[])
        for t in threads:
            out = folder / f"profile_t{t}.json"
            spec = {"threads": t, "models": info["models"], "runs": runs, "warmup": max(3, runs // 10),
                    "out": str(out), "vocab_size": info["config"]["vocab_size"]}
            spec_path = folder / f"spec_t{t}.json"
            spec_path.write_text(json.dumps(spec))
            print(f"{label}: profiling {len(info['models'])} models, {t} thread(s), {runs} runs", flush=True)
            proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", str(spec_path)],
                                  capture_output=True, text=True)
            if proc.returncode != 0:
                raise RuntimeError(f"profiling {label} with {t} threads failed:\n{proc.stderr[-3000:]}")
            data = json.loads(out.read_text())
            loads += [data["load_average"]["before"][0], data["load_average"]["after"][0]]
            info["profiles"].append({"threads": t, "load_average": data["load_average"],
                                     "elapsed_s": data["elapsed_s"], "settings": data["settings"],
                                     "models": data["models"]})
            for r in data["models"]:
                row = {"name": r["name"], "threads": t, "format": r["format"], "median_ms": r["latency_ms"]["median"],
                       "p90_ms": r["latency_ms"]["p90"], "mad_ms": r["latency_ms"]["mad"],
                       "min_ms": r["latency_ms"]["min"],
                       "ratio_vs_tf": r["ratio_vs_baseline"], "speedup_vs_tf": r["speedup_vs_baseline"],
                       "size_bytes": r["size_bytes"], "gzip_bytes": r["gzip_bytes"]}
                info["rows"].append(row)
                print(f"  {r['name']:<28} {t} thr  {row['median_ms']:9.3f} ms  {row['ratio_vs_tf']:.2f}x TF",
                      flush=True)
        info["models"] = [list(m) for m in info["models"]]
        report["shapes"].append(info)
    report["load_average_range"] = [min(loads), max(loads)] if loads else [0.0, 0.0]
    _io.write_json(json_path, report, overwrite=args.overwrite, argument="out")
    text = markdown(report)
    _io.write_text(md_path, text, overwrite=args.overwrite, argument="out")
    print(text)
    print(f"wrote {json_path} and {md_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
