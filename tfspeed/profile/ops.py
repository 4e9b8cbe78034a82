"""Per-operator latency of a TFLite model, measured on sub-models cut out of it and checked against the whole.

The LiteRT Python interpreter has no per-op profiler. So:

1. run the model once with every intermediate tensor kept (`experimental_preserve_all_tensors=True`, no delegate),
   capturing the value of every tensor;
2. cut each operator into a model of its own (its constant inputs keep their buffers; the other inputs become model
   inputs, fed the captured values) and time it alone in a loop: its *alone* time (`alone_ms`), minus the fixed cost
   of one `invoke()` measured on a trivial model;
3. cut the model into `chunks` runs of consecutive operators (multi-op sub-models, each with its own XNNPACK delegate
   when XNNPACK is on, so ops fuse inside a chunk as they do in the whole model), and each pair of neighbouring chunks
   into one sub-model, and time them all in rounds: each round runs the whole model once, then every chunk and every
   pair in model order, each sub-model's inputs written just before its run (so they are in cache, as the output of
   the previous op is in the whole model);
4. a cut costs something the whole model does not pay (a fusion or an in-place buffer lost at the boundary, outputs
   written to a buffer of their own): 20-160 us per cut on a BERT-like L2/H256 model with XNNPACK. It is measured,
   boundary(k) = chunk(k) + chunk(k+1) - pair(k, k+1), and half of it is taken off each side. A chunk's net time is
   split over its operators in proportion to their alone times: an op's `ms`;
5. the check: the sum of the net chunk times (median over rounds) against the median of the whole-model runs of the
   same rounds, on the same clock: `difference_pct`, `agrees` (within ±10%).

Why not simply add up the ops timed alone: measured on a BERT-like L2/H256 model (seq 128, fp32, 1 thread), the
one-op models timed each in its own loop add up to 6-37% less than the whole model (their weights and inputs stay
in cache); timed one after the other they add up to 5-30% more; 8 chunks without the boundary correction 7-15% more.
With it: within ±6% with XNNPACK on and off (`benchmarks/profile_self_check.py`).

Clock: with 1 thread the times are the calling thread's CPU time (`time.thread_time`): on a shared machine a wall
clock also counts the time the process waits for a core, which a 10 ms whole-model run suffers far more often than a
50 µs op, and no sum of parts agrees with such a whole. With more threads (the interpreter's worker threads do part of
the work) the times are wall-clock. The latency table itself is always wall-clock.

Operators with subgraphs (WHILE, IF, CALL_ONCE, ...), custom operators and ops reading variables are not timed: they
are listed with `"skipped"` and a reason, and the check then says it does not hold.
"""

from __future__ import annotations

import copy
import gc
import time

import numpy as np

_SUBGRAPH_OPS = {"WHILE", "IF", "CALL", "CALL_ONCE", "STABLEHLO_WHILE", "STABLEHLO_CASE", "STABLEHLO_COMPOSITE",
                 "STABLEHLO_REDUCE", "STABLEHLO_REDUCE_WINDOW", "STABLEHLO_SCATTER", "STABLEHLO_SORT"}
_VARIABLE_OPS = {"VAR_HANDLE", "READ_VARIABLE", "ASSIGN_VARIABLE", "HASHTABLE", "HASHTABLE_FIND",
                 "HASHTABLE_IMPORT", "HASHTABLE_SIZE"}
AGREEMENT_TOLERANCE = 0.10
DEFAULT_CHUNKS = 8


def _op_names():
    from ai_edge_litert import schema_py_generated as fb

    return {v: k for k, v in vars(fb.BuiltinOperator).items() if not k.startswith("_")}


def _interpreter(content, threads, xnnpack, preserve=False):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    resolver = OpResolverType.AUTO if xnnpack else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    if preserve:
        resolver = OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    return Interpreter(model_content=bytes(content), num_threads=threads, experimental_op_resolver_type=resolver,
                       experimental_preserve_all_tensors=preserve)


def clock_for(threads: int):
    """`(name, clock)`: the calling thread's CPU time with 1 thread, the wall clock with more."""
    if threads == 1:
        return "thread_cpu", time.thread_time
    return "wall", time.perf_counter


def _timer_cost(clock, n=2000):
    """Median cost of reading `clock` twice around nothing, in seconds (subtracted from every sample)."""
    samples = []
    for _ in range(n):
        t0 = clock()
        samples.append(clock() - t0)
    return float(np.median(samples))


def _time(invoke, runs, warmup, clock=time.perf_counter, timer_cost=0.0):
    """Median of `runs` timed calls of `invoke` after `warmup` untimed ones, in ms."""
    for _ in range(warmup):
        invoke()
    samples = []
    for _ in range(runs):
        t0 = clock()
        invoke()
        samples.append(clock() - t0)
    return max(float(np.median(samples)) - timer_cost, 0.0) * 1e3


def _trivial_model():
    """A model with one ADD of two 1-element float tensors: its invoke time is the fixed per-invoke cost."""
    from ai_edge_litert.tools import flatbuffer_utils as fu

    fb = fu.schema_fb
    code = fb.OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = fb.BuiltinOperator.ADD
    code.version = 1
    tensors = []
    for i in range(3):
        t = fb.TensorT()
        t.shape, t.type, t.buffer, t.name = [1], fb.TensorType.FLOAT32, 0, f"t{i}"
        tensors.append(t)
    op = fb.OperatorT()
    op.opcodeIndex, op.inputs, op.outputs = 0, [0, 1], [2]
    op.builtinOptionsType = fb.BuiltinOptions.AddOptions
    op.builtinOptions = fb.AddOptionsT()
    sg = fb.SubGraphT()
    sg.tensors, sg.inputs, sg.outputs, sg.operators = tensors, [0, 1], [2], [op]
    model = fb.ModelT()
    model.version, model.operatorCodes, model.subgraphs, model.buffers = 3, [code], [sg], [fb.BufferT()]
    model.description = "tfspeed per-invoke overhead probe"
    return bytes(fu.convert_object_to_bytearray(model))


def invoke_overhead_ms(threads: int = 1, xnnpack: bool = True, runs: int = 200) -> float:
    """Median time of one `invoke()` of a trivial one-op model (on `clock_for(threads)`): the fixed cost of a call."""
    it = _interpreter(_trivial_model(), threads, xnnpack)
    it.allocate_tensors()
    for d in it.get_input_details():
        it.set_tensor(d["index"], np.ones(d["shape"], np.float32))
    _, clock = clock_for(threads)
    return _time(it.invoke, runs, warmup=20, clock=clock, timer_cost=_timer_cost(clock))


def cut_operators(model, subgraph_index: int, op_indices):
    """A `ModelT` holding operators `op_indices` (consecutive, in order) of a subgraph, and its input tensors.

    Constant inputs keep their buffers. Inputs produced outside the cut become model inputs; the returned list gives
    the original tensor index of each, in the order of the new model's inputs. Outputs are the tensors that later
    operators (or the subgraph's outputs) read, else the last operator's outputs.
    """
    from ai_edge_litert.tools import flatbuffer_utils as fu

    fb = fu.schema_fb
    sg = model.subgraphs[subgraph_index]
    op_indices = list(op_indices)
    ops = [sg.operators[i] for i in op_indices]
    produced = {t for op in ops for t in op.outputs if t >= 0}
    inside = set(op_indices)
    read_after = {t for j, op in enumerate(sg.operators) if j not in inside for t in op.inputs if t >= 0}
    read_after |= set(sg.outputs)
    used = [t for op in ops for t in list(op.inputs) + list(op.outputs) + list(op.intermediates or []) if t >= 0]
    order = list(dict.fromkeys(used))
    remap = {t: i for i, t in enumerate(order)}
    inputs_set = {t for op in ops for t in op.inputs if t >= 0}
    buffers = [fb.BufferT()]
    tensors, inputs = [], []
    for t in order:
        src = sg.tensors[t]
        tensor = copy.copy(src)
        buf = model.buffers[src.buffer] if 0 <= src.buffer < len(model.buffers) else None
        if buf is not None and buf.data is not None and len(buf.data):
            tensor.buffer = len(buffers)
            buffers.append(buf)
        else:
            tensor.buffer = 0
            if t in inputs_set and t not in produced:
                inputs.append(t)
        tensors.append(tensor)
    codes, code_index, new_ops = [], {}, []
    for op in ops:
        new_op = copy.copy(op)
        if op.opcodeIndex not in code_index:
            code_index[op.opcodeIndex] = len(codes)
            codes.append(model.operatorCodes[op.opcodeIndex])
        new_op.opcodeIndex = code_index[op.opcodeIndex]
        new_op.inputs = [remap[t] if t >= 0 else -1 for t in op.inputs]
        new_op.outputs = [remap[t] if t >= 0 else -1 for t in op.outputs]
        if op.intermediates is not None:
            new_op.intermediates = [remap[t] for t in op.intermediates]
        new_ops.append(new_op)
    outputs = [t for t in order if t in produced and t in read_after] or [t for t in ops[-1].outputs if t >= 0]
    new_sg = fb.SubGraphT()
    new_sg.tensors = tensors
    new_sg.inputs = [remap[t] for t in inputs]
    new_sg.outputs = [remap[t] for t in outputs]
    new_sg.operators = new_ops
    new_sg.name = f"ops{op_indices[0]}-{op_indices[-1]}"
    cut = fb.ModelT()
    cut.version = 3
    cut.operatorCodes = codes
    cut.subgraphs = [new_sg]
    cut.buffers = buffers
    cut.description = f"tfspeed cut of operators {op_indices[0]}..{op_indices[-1]}"
    return cut, inputs


def cut_operator(model, subgraph_index: int, op_index: int):
    """A one-operator `ModelT` of operator `op_index`, and the original tensor index of each of its inputs."""
    return cut_operators(model, subgraph_index, [op_index])


class _Cut:
    """An interpreter over a cut, fed the captured values of its inputs. `feed()` rewrites them (puts them in cache)."""

    def __init__(self, model, inputs, captured, threads, xnnpack):
        from ai_edge_litert.tools import flatbuffer_utils as fu

        values = [captured(t) for t in inputs]
        if any(v is None for v in values):
            raise ValueError("an input value was not captured")
        sg = model.subgraphs[0]
        for k, t in enumerate(sg.inputs):
            sg.tensors[t].shape = list(values[k].shape)
            sg.tensors[t].shapeSignature = None
        self.interpreter = _interpreter(fu.convert_object_to_bytearray(model), threads, xnnpack)
        self.interpreter.allocate_tensors()
        details = sorted(self.interpreter.get_input_details(), key=lambda d: d["index"])
        self.inputs = [(d["index"], np.ascontiguousarray(v)) for d, v in zip(details, values)]
        self.feed()
        self.invoke = self.interpreter.invoke
        self.invoke()

    def feed(self):
        set_tensor = self.interpreter.set_tensor
        for index, value in self.inputs:
            set_tensor(index, value)

    def output_shapes(self):
        return [[int(x) for x in d["shape"]] for d in self.interpreter.get_output_details()]


def plan_chunks(alone_ms, timed, chunks):
    """Splits the op indices into runs of consecutive timed ops: about `chunks` runs of about equal alone time.

    A skipped (untimed) op ends a run. Returns a list of lists of op indices.
    """
    runs, current = [], []
    for i in range(len(alone_ms)):
        if i in timed:
            current.append(i)
        elif current:
            runs.append(current)
            current = []
    if current:
        runs.append(current)
    total = sum(alone_ms[i] for run in runs for i in run)
    n_ops = sum(len(run) for run in runs)
    if not runs:
        return []
    target = total / max(1, min(chunks, n_ops)) if total > 0 else None
    out = []
    for run in runs:
        group, acc = [], 0.0
        for i in run:
            group.append(i)
            acc += alone_ms[i] if target else 1.0
            if (target and acc >= target * 0.999) or (not target and acc >= max(1, n_ops // chunks)):
                out.append(group)
                group, acc = [], 0.0
        if group:
            out.append(group)
    return out


def profile_ops(data: bytes, feed_by_index: dict, subgraph_index: int = 0, threads: int = 1, xnnpack: bool = True,
                runs: int = 50, warmup: int = 5, whole_ms: float | None = None, progress=None, whole_invoke=None,
                chunks: int = DEFAULT_CHUNKS) -> dict:
    """Times every operator of a TFLite model and checks their sum against the whole model. See the module docstring.

    Args:
        data: the `.tflite` content.
        feed_by_index: `{input tensor index: value}` of the subgraph.
        subgraph_index: the subgraph to profile (the signature's). Defaults to 0.
        threads: interpreter threads. With 1 the clock is the thread's CPU time, else the wall clock. Defaults to 1.
        xnnpack: apply the default XNNPACK delegate to the sub-models. Defaults to `True`.
        runs: timed invokes per operator alone, and timed rounds of the chunks. Defaults to 50.
        warmup: untimed invokes per operator, and untimed rounds, first. Defaults to 5.
        whole_ms: the latency table's (wall-clock) median of the whole model, reported beside the check.
        progress: an optional callable called once per operator.
        whole_invoke: a callable running the whole model on the same inputs, threads and delegate setting (the
            profiler's own runner). Defaults to an interpreter made here from `data`.
        chunks: number of consecutive-op sub-models the sum is measured on. Defaults to `8`.

    Returns:
        `{"ops": [...], "by_type": {...}, "chunks": [...], "sum_ms", "sum_alone_ms", "sum_raw_ms", "whole_ms",
        "table_whole_ms", "clock", "invoke_overhead_ms", "difference_pct", "alone_difference_pct", "agrees",
        "tolerance_pct", "skipped", "message"}`. Each op: `index`, `type`, `input_dtypes`, `output_dtypes`,
        `output_shapes`, `ms`, `share` (of `sum_ms`), `alone_ms`, `raw_ms` (alone, before the per-invoke cost is
        taken off), `chunk`, `skipped`.
    """
    from ai_edge_litert.tools import flatbuffer_utils as fu

    names = _op_names()
    model = fu.read_model_from_bytearray(bytearray(data))
    sg = model.subgraphs[subgraph_index]
    clock_name, clock = clock_for(threads)
    timer_cost = _timer_cost(clock)

    # 1. Capture every tensor of one run (no delegate, so intermediates are real).
    cap = _interpreter(data, threads, False, preserve=True)
    w = cap._interpreter  # noqa: SLF001
    for index, value in feed_by_index.items():
        w.ResizeInputTensor(index, np.array(value.shape, np.int32), False, subgraph_index)
    w.AllocateTensors(subgraph_index)
    for index, value in feed_by_index.items():
        w.SetTensor(index, value, subgraph_index)
    w.Invoke(subgraph_index)

    def captured(t, w=w):  # bound now: `w` is deleted below once the capture is done
        try:
            return np.array(w.GetTensor(t, subgraph_index))
        except Exception:
            return None

    overhead = invoke_overhead_ms(threads, xnnpack)

    # 2. Every op alone, in its own loop.
    ops = []
    for i, op in enumerate(sg.operators):
        code = model.operatorCodes[op.opcodeIndex]
        builtin = fu.get_builtin_code_from_operator_code(code)
        op_type = names.get(builtin, f"BUILTIN_{builtin}")
        if op_type == "CUSTOM":
            custom = code.customCode
            op_type = f"CUSTOM:{custom.decode('utf-8', 'replace') if isinstance(custom, bytes) else custom}"
        row = {
            "index": i,
            "type": op_type,
            "input_dtypes": [fu.type_to_name(sg.tensors[t].type).lower() for t in op.inputs if t >= 0],
            "output_dtypes": [fu.type_to_name(sg.tensors[t].type).lower() for t in op.outputs if t >= 0],
            "output_shapes": [],
            "ms": None,
            "share": None,
            "alone_ms": None,
            "raw_ms": None,
            "chunk": None,
            "skipped": None,
        }
        reason = None
        if op_type in _SUBGRAPH_OPS:
            reason = "has subgraphs: not timed alone"
        elif op_type.startswith("CUSTOM"):
            reason = "custom operator: not timed alone"
        elif op_type in _VARIABLE_OPS or any(t >= 0 and sg.tensors[t].isVariable for t in op.inputs):
            reason = "reads or writes a variable: not timed alone"
        if reason is None:
            try:
                one = _Cut(*cut_operator(model, subgraph_index, i), captured, threads, xnnpack)
                row["output_shapes"] = one.output_shapes()
                raw = _time(one.invoke, runs, warmup, clock, timer_cost)
                row["raw_ms"] = raw
                row["alone_ms"] = max(raw - overhead, 0.0)
                del one
            except Exception as exc:
                reason = f"could not be timed alone: {type(exc).__name__}: {str(exc)[:200]}"
        row["skipped"] = reason
        ops.append(row)
        if progress is not None:
            progress()

    # 3. Chunks of consecutive ops, and each pair of neighbouring chunks merged, timed in rounds interleaved with
    # the whole model.
    timed = {r["index"] for r in ops if r["skipped"] is None}
    plan = plan_chunks([r["alone_ms"] or 0.0 for r in ops], timed, max(1, int(chunks)))
    singles, notes = [], []
    for group in plan:
        try:
            singles.append((group, _Cut(*cut_operators(model, subgraph_index, group), captured, threads, xnnpack)))
        except Exception as exc:  # fall back to one-op chunks for this group
            notes.append(f"ops {group[0]}..{group[-1]} could not run as one sub-model ({type(exc).__name__}); "
                         "timed as single-op chunks")
            for i in group:
                singles.append(([i], _Cut(*cut_operator(model, subgraph_index, i), captured, threads, xnnpack)))
    pairs = []  # (k, cut of chunks k and k+1)
    for k in range(len(singles) - 1):
        a, b = singles[k][0], singles[k + 1][0]
        if a[-1] + 1 != b[0]:
            continue  # a skipped op between them: no boundary to measure
        try:
            pairs.append((k, _Cut(*cut_operators(model, subgraph_index, a + b), captured, threads, xnnpack)))
        except Exception as exc:
            notes.append(f"ops {a[0]}..{b[-1]} could not run as one sub-model ({type(exc).__name__}); the boundary "
                         f"cost between op {a[-1]} and op {b[0]} is not taken off")
    del cap, w
    gc.collect()
    if whole_invoke is None:
        whole = _interpreter(data, threads, xnnpack)
        ww = whole._interpreter  # noqa: SLF001
        for index, value in feed_by_index.items():
            ww.ResizeInputTensor(index, np.array(value.shape, np.int32), False, subgraph_index)
        ww.AllocateTensors(subgraph_index)
        for index, value in feed_by_index.items():
            ww.SetTensor(index, value, subgraph_index)
        whole_invoke = (lambda: ww.Invoke(subgraph_index))
    whole_samples, samples = _rounds(whole_invoke, [c for _, c in singles] + [c for _, c in pairs], runs, warmup,
                                     clock)
    samples = samples - timer_cost
    n = len(singles)
    single_s, pair_s = samples[:, :n], samples[:, n:]
    # Boundary cost between chunks k and k+1: time(k) + time(k+1) - time(k and k+1 as one sub-model). A chunk's net
    # time takes off half of the cost at each of its ends; the net times add up to the whole model's estimate.
    boundary = np.zeros((runs, max(n - 1, 0)))
    for j, (k, _) in enumerate(pairs):
        boundary[:, k] = single_s[:, k] + single_s[:, k + 1] - pair_s[:, j]
    net = single_s.copy()
    if n > 1:
        net[:, :-1] -= boundary / 2
        net[:, 1:] -= boundary / 2
    whole_here = max(float(np.median(whole_samples)) - timer_cost, 0.0) * 1e3
    sum_ms = max(float(np.median(net.sum(axis=1))), 0.0) * 1e3 if n else 0.0
    medians = np.maximum(np.median(net, axis=0), 0.0) * 1e3 if n else np.zeros(0)
    scale = sum_ms / float(medians.sum()) if medians.sum() > 0 else 0.0
    boundary_ms = np.median(boundary, axis=0) * 1e3 if n > 1 else np.zeros(0)
    chunk_rows = []
    for c, (group, _) in enumerate(singles):
        chunk_ms = float(medians[c]) * scale
        alone = [ops[i]["alone_ms"] for i in group]
        total = sum(alone)
        for i, a in zip(group, alone):
            ops[i]["ms"] = chunk_ms * (a / total if total > 0 else 1.0 / len(group))
            ops[i]["chunk"] = c
        chunk_rows.append({"ops": [group[0], group[-1]], "count": len(group), "ms": chunk_ms,
                           "measured_ms": float(np.median(single_s[:, c])) * 1e3, "alone_ms": total,
                           "boundary_to_next_ms": float(boundary_ms[c]) if c < n - 1 else None})
    singles.clear()
    pairs.clear()
    gc.collect()

    timed_rows = [r for r in ops if r["ms"] is not None]
    for r in timed_rows:
        r["share"] = r["ms"] / sum_ms if sum_ms > 0 else 0.0
    by_type = {}
    for r in timed_rows:
        entry = by_type.setdefault(r["type"], {"count": 0, "ms": 0.0, "share": 0.0})
        entry["count"] += 1
        entry["ms"] += r["ms"]
        entry["share"] += r["share"]
    by_type = dict(sorted(by_type.items(), key=lambda kv: -kv[1]["ms"]))
    skipped = [r for r in ops if r["skipped"]]
    sum_alone = sum(r["alone_ms"] for r in timed_rows)
    diff = (sum_ms - whole_here) / whole_here if whole_here > 0 else None
    alone_diff = (sum_alone - whole_here) / whole_here if whole_here > 0 else None
    agrees = diff is not None and abs(diff) <= AGREEMENT_TOLERANCE and not skipped
    clock_text = "thread CPU time" if clock_name == "thread_cpu" else "wall clock"
    if diff is None:
        message = f"sum of per-op times {sum_ms:.4g} ms; the whole model's time could not be resolved"
    else:
        verdict = "agrees with" if abs(diff) <= AGREEMENT_TOLERANCE else "DOES NOT agree with"
        message = (f"sum of per-op times {sum_ms:.4g} ms {verdict} the whole-model {whole_here:.4g} ms "
                   f"({diff * 100:+.1f}%, tolerance ±{AGREEMENT_TOLERANCE * 100:.0f}%; {clock_text}, "
                   f"{len(chunk_rows)} chunks and their neighbour pairs timed in {runs} rounds interleaved with the "
                   "whole model)")
        if skipped:
            message += f"; {len(skipped)} op(s) not timed, so the sum misses them"
        if whole_here < 0.05 and abs(diff) > AGREEMENT_TOLERANCE:
            message += "; below ~0.05 ms per inference the fixed cost of each sub-model is not resolved"
    if whole_ms and clock_name == "thread_cpu":
        message += (f"; the table's wall-clock median is {whole_ms:.4g} ms"
                    + (" (the process waited for a core: the machine is busy)" if whole_ms > 1.3 * whole_here
                       else ""))
    return {
        "ops": ops,
        "by_type": by_type,
        "chunks": chunk_rows,
        "sum_ms": sum_ms,
        "sum_alone_ms": sum_alone,
        "sum_raw_ms": sum(r["raw_ms"] for r in timed_rows),
        "invoke_overhead_ms": overhead,
        "whole_ms": whole_here,
        "table_whole_ms": whole_ms,
        "clock": clock_name,
        "difference_pct": None if diff is None else diff * 100,
        "alone_difference_pct": None if alone_diff is None else alone_diff * 100,
        "agrees": agrees,
        "tolerance_pct": AGREEMENT_TOLERANCE * 100,
        "skipped": len(skipped),
        "notes": notes,
        "message": message,
    }


def _rounds(whole_invoke, cuts, runs, warmup, clock):
    """`runs` rounds of: the whole model once, then each cut in order (its inputs rewritten first, untimed).

    Returns `(whole seconds [runs], chunk seconds [runs, len(cuts)])`.
    """
    whole = np.zeros(runs)
    parts = np.zeros((runs, len(cuts)))
    invokes = [(c.feed, c.invoke) for c in cuts]
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for r in range(-warmup, runs):
            t0 = clock()
            whole_invoke()
            t1 = clock()
            if r >= 0:
                whole[r] = t1 - t0
            for k, (feed, invoke) in enumerate(invokes):
                feed()
                t0 = clock()
                invoke()
                t1 = clock()
                if r >= 0:
                    parts[r, k] = t1 - t0
    finally:
        if gc_was_enabled:
            gc.enable()
    return whole, parts
