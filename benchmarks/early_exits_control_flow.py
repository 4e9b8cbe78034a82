"""Early exits in one graph with control flow (nested `tf.cond`, TFLite IF ops) against the segmented file
(one signature per segment, the runner deciding between them) and the plain file, on the real test reviews.

The issue left the design open: "one .tflite with one signature per segment ... or a graph with control flow if the
converter keeps it fast". This builds the control-flow graph from an exits model directory (`tfspeed exits`, its
calibrated entropy threshold baked in), checks it answers what `ExitRunner` answers, and times the three files
interleaved review by review at 1 thread and the same fixed length.

Writes benchmarks/results/early_exits_control_flow.json.

    python benchmarks/early_exits_control_flow.py --exits runs/exits-stacked/teacher-exits --source runs/demo/00-teacher
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from tfspeed import _io, artifacts, export
from tfspeed.compat import tf
from tfspeed.compress import exits as E
from tfspeed.data import Tokenizer, load_dataset
from tfspeed.export import exits as X
from tfspeed.models.bert import INPUT_NAMES, config_of
from tfspeed.profile.env import environment
from tfspeed.profile.stats import summarize

RESULTS = Path(__file__).parent / "results"


def control_flow_tflite(model, threshold: float, seq_length: int) -> bytes:
    """The exits model as one signature: after each exit, `tf.cond(entropy <= threshold, answer, go on)`."""
    layers = E.exit_layers(model)
    bounds = [0, *layers, config_of(model).num_layers]
    spec = {n: tf.TensorSpec([1, seq_length], tf.int32, name=n) for n in INPUT_NAMES}

    class Module(tf.Module):
        @tf.function(input_signature=[spec], autograph=False)
        def serve(self, x):
            mask_in = x["input_mask"]
            mask = X._get(model, "attention_mask")(mask_in)

            def run_from(j, hidden):
                for i in range(bounds[j], bounds[j + 1]):
                    hidden = X._layer(model, i, hidden, mask)
                if j == len(bounds) - 2:
                    return X._final_head(model, hidden)
                logits = X._exit_head(model, bounds[j + 1], hidden, mask_in)
                p = tf.nn.softmax(logits)
                entropy = -tf.reduce_sum(p * tf.math.log(tf.maximum(p, 1e-12)))
                return tf.cond(entropy <= threshold, lambda: logits, lambda: run_from(j + 1, hidden))

            return {"logits": run_from(0, X._embed(model, x))}

    module = Module()
    module.model = model  # the variables the function captures
    with tempfile.TemporaryDirectory() as tmp:
        tf.saved_model.save(module, tmp, signatures={"serving_default": module.serve.get_concrete_function()})
        converter = tf.lite.TFLiteConverter.from_saved_model(tmp)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        return converter.convert()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--exits", required=True, help="an exits model directory (tfspeed exits)")
    p.add_argument("--source", required=True, help="the model directory the exits were added to")
    p.add_argument("--seq-length", type=int, default=128)
    p.add_argument("--out", default=str(RESULTS / "early_exits_control_flow.json"))
    args = p.parse_args(argv)
    env = environment()
    print(f"CPU: {env['cpu_model']} ({env['cpus_available']} cores), flags: {env.get('cpu_flags')}", flush=True)
    described = json.loads((Path(args.exits) / X.EXITS_JSON).read_text())
    if described["rule"] != "entropy":
        raise SystemExit(f"this comparison bakes in the entropy rule; the directory's rule is {described['rule']}")
    model, info = artifacts.load_model_dir(args.exits)
    cond = control_flow_tflite(model, described["threshold"], args.seq_length)
    segmented = (Path(args.exits) / described["tflite"]).read_bytes()
    plain = export.convert(str(args.source), "dynamic", seq_length=args.seq_length, metadata=False)
    ops = export.op_histogram(cond)
    print(f"control-flow file: {len(cond) / 1e6:.1f} MB, op types {sorted(ops['ops'])}", flush=True)
    from ai_edge_litert.interpreter import Interpreter

    runner = X.runner_of(args.exits)

    def plain_runner(data):
        it = Interpreter(model_content=data, num_threads=1)
        it.allocate_tensors()
        index = {d["name"]: d["index"] for d in it.get_input_details()}
        by_name = {n: next(i for k, i in index.items() if n in k) for n in INPUT_NAMES}
        out = it.get_output_details()[0]["index"]

        def run(row):
            for n, i in by_name.items():
                it.set_tensor(i, row[n])
            it.invoke()
            return it.get_tensor(out)[0]

        return run

    run_cond, run_plain = plain_runner(cond), plain_runner(plain)
    test = load_dataset("rotten_tomatoes").test
    feats = Tokenizer(info.vocab_path, seq_length=args.seq_length).encode(list(test.texts))
    rows = [{k: v[i:i + 1] for k, v in feats.items()} for i in range(len(test))]
    fns = {"plain": run_plain, "segmented": lambda r: runner.run(r)[0], "control-flow": run_cond}
    for r in rows[:10]:
        for fn in fns.values():
            fn(r)
    seconds = {k: np.zeros(len(rows)) for k in fns}
    answers = {k: np.zeros(len(rows), int) for k in fns}
    for i, r in enumerate(rows):
        for k, fn in fns.items():
            start = time.perf_counter()
            out = fn(r)
            seconds[k][i] = time.perf_counter() - start
            answers[k][i] = int(np.argmax(out))
    labels = np.asarray(test.labels)
    result = {"environment": env, "settings": vars(args), "threshold": described["threshold"],
              "layers": described["layers"], "size_bytes": {"plain": len(plain), "segmented": len(segmented),
                                                            "control-flow": len(cond)},
              "ops": ops, "files": {}}
    for k in fns:
        result["files"][k] = {"latency_ms": summarize(seconds[k]),
                              "ratio_to_plain": float(seconds[k].mean() / seconds["plain"].mean()),
                              "accuracy": float(np.mean(answers[k] == labels)),
                              "agreement_with_segmented": float(np.mean(answers[k] == answers["segmented"]))}
        r = result["files"][k]
        print(f"{k:13s} mean {r['latency_ms']['mean']:6.2f} ms  x{r['ratio_to_plain']:.3f} of plain  accuracy "
              f"{r['accuracy']:.4f}  agreement with segmented {r['agreement_with_segmented']:.4f}", flush=True)
    _io.write_json(args.out, result, overwrite=True)
    print(f"Wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
