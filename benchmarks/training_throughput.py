"""Training throughput of every `fit` tfspeed runs, on MiniLM and Rotten Tomatoes, against plain Keras `fit`.

Each (stage, variant) pair runs in its own process (a variant is environment: allocator settings, oneDNN's ISA, XLA,
thread pools), the pairs interleaved, on the same batches: the first `--examples` training reviews at seq_length 128,
bucketed by length as tfspeed's pipeline does (each batch cut to its longest review), the same shuffle for every
run. The first `--warmup` steps (tracing, first allocations) are left out; the next `--steps` are timed, with the
process's user and system CPU seconds over them.

Stages:
- `keras-padded`: the reference a Keras user writes: the classifier compiled with Adam and fitted on batches padded
  to 128 tokens (`from_tensor_slices(...).batch(32)`), no tfspeed code in the step.
- `keras`: the same plain `compile` / `fit`, on tfspeed's bucketed batches.
- `finetune`: `fit_classifier` (AdamW, warm-up and decay, global clipnorm): the teacher's fine-tuning.
- `distill`: `fit_student` of a 3-layer student from the 6-layer model, teacher logits cached (the distill stage).
- `prune`: the demo's pruning stage: a quarter of the heads and FFN units removed, then `fit_student` from the
  6-layer teacher.
- `prune-tfmot`: TFMOT magnitude pruning (`prune`, 50%) fitted with its callbacks.
- `qat`: `qat_fit` of the 3-layer student (TFMOT QAT wrappers, distilled from the float model).

Variants (`--variants`): `base` (tfspeed as it is: glibc keeps freed memory, `tfspeed.runtime`); `nomalloc`
(`TFSPEED_MALLOC=0`: glibc's defaults); `malloc` (`TFSPEED_MALLOC=1`); `mallocenv` (the same thresholds set by
`MALLOC_*_` variables before the process starts); `bfc` (TensorFlow's BFC allocator for the CPU); `xla` (the plain
Keras stages compiled with `jit_compile=True`); `avx2` (`ONEDNN_MAX_CPU_ISA=AVX2`: oneDNN limited to AVX2, a
stand-in for CPUs without AVX-512); `threads` (intra-op 2, inter-op 1); `generator` (a `from_generator` dataset
iterated before training, as tfspeed's pipeline once used: TensorFlow then pins glibc's mmap threshold to 128 KB);
`eigen` (`TF_ENABLE_ONEDNN_OPTS=0`: TensorFlow's Eigen kernels instead of oneDNN's).
Combine with `+` (`avx2+nomalloc`). Each run also reports the process's system CPU share and minor page faults per
step.

Writes benchmarks/results/training_throughput.json (merged with earlier runs of other pairs):

    python benchmarks/training_throughput.py --stages keras-padded,keras,finetune --variants nomalloc,base
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

STAGES = ("keras-padded", "keras", "finetune", "distill", "prune", "prune-tfmot", "qat")
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "33554432", "MALLOC_TRIM_THRESHOLD_": "17179869184",
              "MALLOC_TOP_PAD_": "536870912"}
VARIANTS = {
    "base": {},
    "malloc": {"TFSPEED_MALLOC": "1"},
    "nomalloc": {"TFSPEED_MALLOC": "0"},
    "mallocenv": dict(MALLOC_ENV),
    "xla": {"TFSPEED_JIT_COMPILE": "1"},
    "avx2": {"ONEDNN_MAX_CPU_ISA": "AVX2"},
    "threads": {"TF_NUM_INTRAOP_THREADS": "2", "TF_NUM_INTEROP_THREADS": "1"},
    "bfc": {"TF_CPU_ALLOCATOR_USE_BFC": "true"},
    "generator": {"TFSPEED_BENCH_GENERATOR": "1"},
    "eigen": {"TF_ENABLE_ONEDNN_OPTS": "0"},
    "frozen": {"TFSPEED_BENCH_FREEZE_EMBEDDINGS": "1"},
}
RESULTS = Path(__file__).parent / "results" / "training_throughput.json"


def _variant_env(name: str) -> dict:
    env = {}
    for part in name.split("+"):
        if part not in VARIANTS:
            raise SystemExit(f"--variants: unknown variant {part!r}; expected among {sorted(VARIANTS)}")
        env.update(VARIANTS[part])
    return env


# --- the child: one stage, timed ---------------------------------------------------------------------------------
def _child(stage: str, examples: int, warmup: int, steps: int, batch_size: int) -> dict:
    import numpy as np

    import tfspeed  # noqa: F401  (Keras 2, allocator settings)
    from tfspeed import hub
    from tfspeed.compat import keras, tf
    from tfspeed.data import EncodedDataset, Tokenizer, load_dataset
    from tfspeed.data.pipeline import EncodedSplit

    if os.environ.get("TFSPEED_BENCH_GENERATOR") == "1":
        # what tfspeed's pipeline did before it was built of tf.data ops: a from_generator dataset, whose kernel pins
        # glibc's mmap threshold to 128 KB for the rest of the process (tf.data's Python 3.11 memory patch)
        for _ in tf.data.Dataset.from_generator(lambda: iter(range(2)), output_signature=tf.TensorSpec([], tf.int64)):
            pass
    if os.environ.get("TF_NUM_INTRAOP_THREADS"):
        tf.config.threading.set_intra_op_parallelism_threads(int(os.environ["TF_NUM_INTRAOP_THREADS"]))
        tf.config.threading.set_inter_op_parallelism_threads(int(os.environ["TF_NUM_INTEROP_THREADS"]))
    data = EncodedDataset(load_dataset("rotten_tomatoes"), Tokenizer(hub.vocab_path("minilm-l6"), seq_length=128))
    train = EncodedSplit({k: v[:examples] for k, v in data.train.features.items()}, data.train.labels[:examples])
    groups = train.batch_indices(batch_size, True, np.random.default_rng(0), stage != "keras-padded")
    if stage == "keras-padded":
        groups = [np.arange(i, min(i + batch_size, len(train))) for i in range(0, len(train), batch_size)]
    timed = groups[warmup:warmup + steps]
    width = 128 if stage == "keras-padded" else None
    real_tokens = int(sum(train.lengths[g].sum() for g in timed))
    padded_tokens = int(sum(len(g) * (width or train.lengths[g].max()) for g in timed))
    n_examples = int(sum(len(g) for g in timed))

    class Clock(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.step, self.marks = 0, {}

        def on_train_batch_end(self, batch, logs=None):
            self.step += 1
            if self.step in (warmup, warmup + steps):
                usage = resource.getrusage(resource.RUSAGE_SELF)
                self.marks[self.step] = (time.perf_counter(), usage.ru_utime, usage.ru_stime, usage.ru_minflt)
            if self.step == warmup + steps:
                self.model.stop_training = True

    clock = Clock()
    model = hub.build_classifier_from("minilm-l6", num_classes=2)
    if os.environ.get("TFSPEED_BENCH_FREEZE_EMBEDDINGS") == "1":
        model.get_layer("word_embeddings").trainable = False
    jit = os.environ.get("TFSPEED_JIT_COMPILE") == "1"
    if stage in ("keras-padded", "keras"):
        model.compile(optimizer=keras.optimizers.Adam(5e-5), jit_compile=jit,
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        if stage == "keras-padded":
            ds = tf.data.Dataset.from_tensor_slices((train.features, train.labels)).batch(batch_size)
        else:
            ds = train.dataset(batch_size, shuffle=True, seed=0)
        model.fit(ds, epochs=1, callbacks=[clock], verbose=0)
    elif stage == "finetune":
        from tfspeed.train import fit_classifier

        fit_classifier(model, train, epochs=1, batch_size=batch_size, callbacks=[clock], verbose=0)
    elif stage in ("distill", "prune", "qat"):
        from tfspeed.compress.distillation import fit_student, student_from_teacher

        if stage == "distill":
            fit_student(student_from_teacher(model, 3), model, train, epochs=1, batch_size=batch_size,
                        callbacks=[clock], verbose=0)
        elif stage == "prune":
            from tfspeed.compress.structured import prune_structured

            small = prune_structured(model, heads=0.25, ffn=0.25, data=train, batch_size=batch_size)
            fit_student(small, model, train, epochs=1, batch_size=batch_size, learning_rate=5e-5,
                        callbacks=[clock], verbose=0)
        else:
            from tfspeed.compress.quantization import qat_fit

            qat_fit(student_from_teacher(model, 3), train, epochs=1, batch_size=batch_size, callbacks=[clock],
                    verbose=0)
    elif stage == "prune-tfmot":
        from tfspeed.compress.pruning import prune, pruning_callbacks
        from tfspeed.train import fit_classifier

        pruned = prune(model, sparsity=0.5, epochs=1, steps_per_epoch=len(groups))
        fit_classifier(pruned, train, epochs=1, batch_size=batch_size, callbacks=[clock, *pruning_callbacks()],
                       verbose=0)
    else:
        raise SystemExit(f"unknown stage {stage!r}")
    (t0, u0, s0, f0), (t1, u1, s1, f1) = clock.marks[warmup], clock.marks[warmup + steps]
    seconds = t1 - t0
    return {"stage": stage, "steps": steps, "warmup": warmup, "batch_size": batch_size, "examples": n_examples,
            "seconds": seconds, "seconds_per_step": seconds / steps, "examples_per_s": n_examples / seconds,
            "real_tokens_per_s": real_tokens / seconds, "padded_tokens_per_s": padded_tokens / seconds,
            "real_tokens": real_tokens, "padded_tokens": padded_tokens, "user_s": u1 - u0, "sys_s": s1 - s0,
            "sys_share": (s1 - s0) / max((u1 - u0) + (s1 - s0), 1e-9), "page_faults_per_step": (f1 - f0) / steps}


# --- the parent: pairs interleaved, each in a fresh process -----------------------------------------------------
def _cpu(env: dict) -> str:
    """The CPU a result file's runs were measured on: model name, family / model, and oneDNN's ISA cap if any."""
    return " ".join(filter(None, (env.get("cpu_model"), env.get("cpu_id"), env.get("onednn_max_cpu_isa"))))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--stages", default=",".join(STAGES))
    p.add_argument("--variants", default="base")
    p.add_argument("--rounds", type=int, default=1, help="repeat the interleaved pairs this many times")
    p.add_argument("--examples", type=int, default=1600)
    p.add_argument("--warmup", type=int, default=6)
    p.add_argument("--steps", type=int, default=24)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--out", default=str(RESULTS))
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        result = _child(args.child, args.examples, args.warmup, args.steps, args.batch_size)
        print("RESULT " + json.dumps(result), flush=True)
        return 0

    from tfspeed.profile.env import environment

    env = environment()
    print(f"CPU: {env['cpu_model']} ({env['cpus_available']} cores), flags: {' '.join(env['cpu_flags'])}", flush=True)
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    for s in stages:
        if s not in STAGES:
            raise SystemExit(f"--stages: unknown stage {s!r}; expected among {list(STAGES)}")
    runs = []
    for round_ in range(args.rounds):
        for stage in stages:
            for variant in variants:
                child_env = {**os.environ, **_variant_env(variant)}
                cmd = [sys.executable, __file__, "--child", stage, "--examples", str(args.examples), "--warmup",
                       str(args.warmup), "--steps", str(args.steps), "--batch-size", str(args.batch_size)]
                start = time.perf_counter()
                proc = subprocess.run(cmd, env=child_env, capture_output=True, text=True)
                line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
                if proc.returncode or not line:
                    print(proc.stderr[-3000:], file=sys.stderr)
                    raise SystemExit(f"{stage} / {variant} failed (exit {proc.returncode})")
                result = {**json.loads(line[0][7:]), "variant": variant, "round": round_,
                          "process_seconds": time.perf_counter() - start}
                runs.append(result)
                print(f"{stage:>13} {variant:>12}: {result['seconds_per_step']:.3f} s/step, "
                      f"{result['examples_per_s']:.1f} examples/s, {result['real_tokens_per_s']:.0f} tokens/s, "
                      f"sys {100 * result['sys_share']:.0f}% of CPU, "
                      f"{result.get('page_faults_per_step', 0):.0f} page faults/step", flush=True)
    out = Path(args.out)
    previous = json.loads(out.read_text()) if out.is_file() else {}
    if previous and _cpu(previous.get("environment", {})) != _cpu(env):
        raise SystemExit(f"--out: {out} holds runs of another CPU ({_cpu(previous.get('environment', {}))}, this one "
                         f"is {_cpu(env)}): ratios are only compared on one machine; give another --out")
    keep = [r for r in previous.get("runs", []) if (r["stage"], r["variant"]) not in
            {(r2["stage"], r2["variant"]) for r2 in runs}]
    merged = {"environment": env, "seq_length": 128, "examples": args.examples, "warmup": args.warmup,
              "steps": args.steps, "batch_size": args.batch_size, "runs": keep + runs}
    # ratios within this invocation: each variant against the first one, each stage against the first stage
    def step(stage, variant):
        times = [r["seconds_per_step"] for r in runs if r["stage"] == stage and r["variant"] == variant]
        return sum(times) / len(times) if times else None

    ratios = {}
    pairs = [(f"{stage}: {v} / {variants[0]}", (stage, variants[0]), (stage, v))
             for stage in stages for v in variants[1:]]
    pairs += [(f"{v}: {stage} / {stages[0]}", (stages[0], v), (stage, v)) for v in variants for stage in stages[1:]]
    for name, first, other in pairs:
        if step(*first) and step(*other):
            ratios[f"{name} time per step"] = step(*other) / step(*first)
    for k, v in ratios.items():
        print(f"{k}: {v:.3f}")
    merged["ratios"] = {**previous.get("ratios", {}), **ratios}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(merged, indent=2))
    tmp.replace(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
