"""tfspeed's profiler against LiteRT's own benchmark (`litert-benchmark`, ai-edge-litert 2.3.0), on the same .tflite
files, same inputs, 1 thread, interleaved.

`litert-benchmark` cannot run a BERT as shipped: it fills int32 inputs with random values in [-128, 127], so the
embedding GATHER reads out of range (the script records the tool's own error for each file). Its code
(`ai_edge_litert.tools.benchmark_litert_model`) is therefore driven here step for step (`CompiledModel.from_file`
with `CpuOptions(num_threads)`, input buffers by name, `run_by_name` timed with `perf_counter`), with the input
buffers holding real token ids of one Rotten Tomatoes review instead of random ones. tfspeed's `profile_models` gets
the same ids. Blocks alternate (LiteRT, tfspeed, LiteRT, ...) so that machine drift hits both; the ratio of the
medians over all blocks is reported per file (goal: within 0.9-1.1).

A third column times the `Interpreter` API with `invoke()` alone in a bare loop (no profiler around it): if tfspeed
and the bare loop agree but CompiledModel differs, the difference is the runtime API, not the measurement. Each
figure is the median of the block medians.

    python benchmarks/litert_benchmark_check.py --run /work/runs/demo
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from tfspeed import _io
from tfspeed.data import Tokenizer, load_dataset
from tfspeed.export.metadata import read_metadata
from tfspeed.profile.env import environment

FILES = ("teacher-float32", "teacher-dynamic", "03-prune-dynamic", "04-qat-int8")


def _feed(path: Path, vocab_fallback: Path, text: str) -> dict:
    from ai_edge_litert.interpreter import Interpreter

    meta = read_metadata(path)
    vocab = list(meta.vocab) if meta is not None else vocab_fallback
    it = Interpreter(model_path=str(path))
    length = int(it.get_input_details()[0]["shape"][1])
    return Tokenizer(vocab, seq_length=length).encode([text])


def _roles(names) -> dict:
    out = {}
    for name in names:
        key = "input_type_ids" if "type" in name else "input_mask" if "mask" in name else "input_word_ids"
        out[name] = key
    return out


class LiteRTBenchmark:
    """`benchmark_litert_model.run_benchmark`'s setup and timed loop, with given inputs instead of random ones."""

    def __init__(self, path: Path, feed: dict, threads: int):
        from ai_edge_litert.tools import benchmark_litert_model as tool

        cm, ha, env_cls, env_opts, options, cpu_options = tool._import_litert()  # noqa: SLF001 - the tool's own loader
        args = argparse.Namespace(runtime_path="", compiler_plugin_path="", dispatch_library_path="",
                                  num_threads=threads, use_npu=False, use_gpu=False, no_cpu=False,
                                  require_full_delegation=False)
        self.env = tool.create_environment(args, env_cls, env_opts)
        accel = tool.build_hardware_accelerators(args, ha)
        self.model = cm.from_file(str(path), environment=self.env,
                                  options=tool.create_model_options(args, options, cpu_options, accel))
        self.sig = list(self.model.get_signature_list())[0]
        inputs = self.model.get_input_tensor_details(self.sig)
        outputs = self.model.get_output_tensor_details(self.sig)
        self.inputs = {n: self.model.create_input_buffer_by_name(self.sig, n) for n in inputs}
        self.outputs = {n: self.model.create_output_buffer_by_name(self.sig, n) for n in outputs}
        for name, key in _roles(list(inputs)).items():
            self.inputs[name].write(np.ascontiguousarray(feed[key]))

    def run(self, runs: int) -> list:
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            self.model.run_by_name(self.sig, self.inputs, self.outputs)
            times.append((time.perf_counter() - t0) * 1000)
        return times


def bare_interpreter(path: Path, feed: dict, threads: int, runs: int) -> list:
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path), num_threads=threads)
    it.allocate_tensors()
    for d in it.get_input_details():
        key = _roles([d["name"]])[d["name"]]
        it.set_tensor(d["index"], feed[key])
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        it.invoke()
        times.append((time.perf_counter() - t0) * 1000)
    return times


def tool_error(path: Path) -> str:
    done = subprocess.run(["litert-benchmark", "--model", str(path), "--num_runs", "3", "--warmup_runs", "1",
                           "--num_threads", "1"], capture_output=True, text=True)
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    important = [line for line in lines if "rror" in line or "GATHER" in line or "out of bounds" in line]
    return f"exit {done.returncode}: " + " | ".join((important or lines)[-3:])[:600]


def main(argv=None) -> int:
    from tfspeed.profile import profile_models

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", default="runs/demo", help="a tfspeed demo / optimize output directory")
    p.add_argument("--runs", type=int, default=50, help="timed runs per block")
    p.add_argument("--blocks", type=int, default=6, help="alternating blocks per tool")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "litert_benchmark_check.json"))
    args = p.parse_args(argv)
    run = Path(args.run)
    env = environment()
    print(f"CPU: {env['cpu_model']} ({env['cpus_available']} cores); {args.threads} thread(s)", flush=True)
    texts = load_dataset("rotten_tomatoes").test.texts
    text = sorted(texts, key=len)[len(texts) // 2]  # a review of median length
    results = {"environment": env, "threads": args.threads, "runs_per_block": args.runs, "blocks": args.blocks,
               "text": text, "files": {}}
    for name in FILES:
        path = run / "export" / f"{name}.tflite"
        if not path.is_file():
            print(f"{name}: missing, skipped")
            continue
        feed = _feed(path, run / "00-teacher" / "vocab.txt", text)
        error = tool_error(path)
        bench = LiteRTBenchmark(path, feed, args.threads)
        bench.run(5)
        litert, ours, bare = [], [], []
        for _ in range(args.blocks):  # each block's median; the file's figure is the median of its blocks
            litert.append(statistics.median(bench.run(args.runs)))
            result = profile_models([str(path)], threads=(args.threads,), runs=args.runs, warmup=5, inputs=feed,
                                    isolate=False, progress=False)
            ours.append(result.models[0]["latency_ms"]["median"])
            bare.append(statistics.median(bare_interpreter(path, feed, args.threads, args.runs)))
        r = {"litert_benchmark_tool": error, "compiled_model_median_ms": statistics.median(litert),
             "tfspeed_median_ms": statistics.median(ours), "bare_interpreter_median_ms": statistics.median(bare),
             "block_medians_ms": {"compiled_model": litert, "tfspeed": ours, "bare_interpreter": bare}}
        r["ratio_tfspeed_over_compiled_model"] = r["tfspeed_median_ms"] / r["compiled_model_median_ms"]
        r["ratio_bare_interpreter_over_compiled_model"] = (r["bare_interpreter_median_ms"]
                                                           / r["compiled_model_median_ms"])
        results["files"][name] = r
        print(f"{name}: CompiledModel (litert-benchmark's loop) {r['compiled_model_median_ms']:.2f} ms, tfspeed "
              f"{r['tfspeed_median_ms']:.2f} ms, bare Interpreter {r['bare_interpreter_median_ms']:.2f} ms; ratio "
              f"tfspeed/litert {r['ratio_tfspeed_over_compiled_model']:.3f}; litert-benchmark itself: {error}",
              flush=True)
    _io.write_json(args.out, results, overwrite=True)
    print(f"Wrote {args.out}")
    print(json.dumps({k: round(v["ratio_tfspeed_over_compiled_model"], 3) for k, v in results["files"].items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
