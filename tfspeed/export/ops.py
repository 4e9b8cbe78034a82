"""What is inside a .tflite: op types with the dtypes they compute in, read from the flatbuffer schema."""

from __future__ import annotations

import collections
import gzip
from pathlib import Path

# Ops that only move data between integer and float, or cast the int32 token inputs: not "fallbacks".
_GLUE = {"QUANTIZE", "DEQUANTIZE", "CAST"}
# Ops whose speed and accuracy the int8 summary reports.
MATMUL_OPS = ("FULLY_CONNECTED", "BATCH_MATMUL")


def read_tflite(tflite) -> bytes:
    """The bytes of a .tflite given as bytes or a path."""
    if isinstance(tflite, (bytes, bytearray, memoryview)):
        return bytes(tflite)
    path = Path(tflite)
    if not path.is_file():
        raise FileNotFoundError(f"Expected a .tflite file or its bytes for `tflite`. Received: {str(path)!r}, no such "
                                "file.")
    return path.read_bytes()


def _names(enum_cls) -> dict:
    return {v: k for k, v in vars(enum_cls).items() if not k.startswith("_") and isinstance(v, int)}


def op_kind(op_inputs: list, op_outputs: list) -> str:
    """The dtype an op computes in, from its tensors' dtypes.

    The first input's dtype (`"int8"`, `"float32"`, `"int32"` ...), except that a float32 op with int8 (int4)
    constant weights is `"hybrid-int8"` (`"hybrid-int4"`): dynamic-range kernels, integer weights, activations
    quantized on the fly. Ops without inputs take their first output's dtype.
    """
    if not op_inputs:
        return op_outputs[0] if op_outputs else "none"
    first = op_inputs[0]
    if first == "float32":
        for bits in ("int4", "int8"):
            if any(t == bits for t in op_inputs[1:]):
                return f"hybrid-{bits}"
    return first


def list_ops(tflite) -> list:
    """[(op type, kind, output tensor name)] for every operator of the main subgraph, in execution order."""
    from ai_edge_litert import schema_py_generated as fb

    data = read_tflite(tflite)
    model = fb.ModelT.InitFromPackedBuf(data, 0)
    op_names, type_names = _names(fb.BuiltinOperator), _names(fb.TensorType)
    sg = model.subgraphs[0]
    out = []
    for op in sg.operators:
        code = model.operatorCodes[op.opcodeIndex]
        builtin = max(code.builtinCode, code.deprecatedBuiltinCode)
        name = op_names.get(builtin, f"OP_{builtin}")
        if name == "CUSTOM" and code.customCode:
            name = f"CUSTOM:{code.customCode.decode()}"
        ins = [type_names[sg.tensors[i].type].lower() for i in op.inputs if i >= 0]
        outs = [type_names[sg.tensors[i].type].lower() for i in op.outputs if i >= 0]
        tensor = sg.tensors[op.outputs[0]].name.decode() if len(op.outputs) else ""
        kind = op_kind(ins, outs)
        if name == "EMBEDDING_LOOKUP" and len(ins) > 1 and ins[1] in ("int8", "int4") and outs[:1] == ["float32"]:
            kind = f"hybrid-{ins[1]}"  # (ids, table): an integer table read out as float rows
        out.append((name, kind, tensor))
    return out


def op_histogram(tflite) -> dict:
    """How many ops of each type the model has, by the dtype they compute in.

    Returns:
        `{"ops": {op type: {kind: count}}, "total": n, "int8": {"FULLY_CONNECTED": {"int8": a, "total": b}, ...},
        "float_ops": {op type: count}}`. Kinds come from `op_kind` (`int8`, `float32`, `hybrid-int8`, `int32` ...);
        `float_ops` counts the float32 ops other than QUANTIZE / DEQUANTIZE / CAST (in an int8 model: what fell back).

    Example (a tiny random-weight BERT in dynamic range: its 13 encoder and pooler kernels, 32 x 32 and larger, run as
    `hybrid-int8`; the 32 x 2 classifier, below the converter's minimum of 1024 weights, stays float):

    >>> from tfspeed.export import convert
    >>> from tfspeed.models import BertConfig, build_classifier
    >>> model = build_classifier(BertConfig(vocab_size=100, hidden_size=32, num_layers=2, num_heads=2,
    ...                                     intermediate_size=64, max_positions=16), num_classes=2)
    >>> hist = op_histogram(convert(model, "dynamic", seq_length=8))
    >>> hist["int8"]["FULLY_CONNECTED"]
    {'int8': 0, 'hybrid-int8': 13, 'total': 14}
    """
    ops = collections.defaultdict(collections.Counter)
    for name, kind, _ in list_ops(tflite):
        ops[name][kind] += 1
    int8 = {}
    for name in MATMUL_OPS:
        counts = ops.get(name, {})
        int8[name] = {"int8": counts.get("int8", 0), "hybrid-int8": counts.get("hybrid-int8", 0),
                      "total": sum(counts.values())}
        if counts.get("hybrid-int4") or counts.get("int16"):
            int8[name].update({k: counts[k] for k in ("hybrid-int4", "int16") if counts.get(k)})
    float_ops = {name: c["float32"] for name, c in sorted(ops.items()) if name not in _GLUE and c.get("float32")}
    return {"ops": {name: dict(sorted(c.items())) for name, c in sorted(ops.items())},
            "total": sum(sum(c.values()) for c in ops.values()), "int8": int8, "float_ops": float_ops}


def sizes(tflite) -> dict:
    """`{"size_bytes": raw, "gzip_bytes": gzip level 9}`: gzip shows what sparsity and repeated weights save."""
    data = read_tflite(tflite)
    return {"size_bytes": len(data), "gzip_bytes": len(gzip.compress(data, compresslevel=9, mtime=0))}


def is_quantized(histogram: dict) -> bool:
    """True if any op other than QUANTIZE / DEQUANTIZE / CAST computes in int8 (full integer or hybrid)."""
    return any(kind in ("int8", "int16", "hybrid-int8", "hybrid-int4") for name, kinds in histogram["ops"].items()
               if name not in _GLUE for kind in kinds)


def fell_back(histogram: dict) -> dict:
    """The float32 op types (with counts) of a quantized model: what did not run in int8. `{}` for a float model."""
    return dict(histogram["float_ops"]) if is_quantized(histogram) else {}


def weight_shapes(tflite) -> list:
    """[(op type, output tensor name, weight shape)] for every FULLY_CONNECTED / EMBEDDING_LOOKUP / BATCH_MATMUL with a
    constant weight (a tensor that has data), in execution order. The last dimension is what a block divides."""
    from ai_edge_litert import schema_py_generated as fb

    data = read_tflite(tflite)
    model = fb.ModelT.InitFromPackedBuf(data, 0)
    op_names = _names(fb.BuiltinOperator)
    sg = model.subgraphs[0]
    out = []
    for op in sg.operators:
        code = model.operatorCodes[op.opcodeIndex]
        name = op_names.get(max(code.builtinCode, code.deprecatedBuiltinCode), "")
        if name not in ("FULLY_CONNECTED", "EMBEDDING_LOOKUP", "BATCH_MATMUL"):
            continue
        index = op.inputs[1] if len(op.inputs) > 1 else -1
        if index < 0:
            continue
        t = sg.tensors[index]
        buf = model.buffers[t.buffer] if t.buffer < len(model.buffers) else None
        if buf is None or buf.data is None or len(buf.data) == 0:
            continue
        out.append((name, sg.tensors[op.outputs[0]].name.decode(), tuple(int(d) for d in t.shape)))
    return out


# Ops at the edges of an integer model that an integer accelerator leaves to the CPU: the casts and QUANTIZE of the
# int32 token inputs (the attention mask enters as a float), the DEQUANTIZE of the logits and a softmax on them.
_IN_EDGE_OPS = {"CAST", "QUANTIZE", "RESHAPE"}
_OUT_EDGE_OPS = {"DEQUANTIZE", "SOFTMAX"}
_FLOAT_TYPES = {"float32", "float16", "float64"}


def integer_report(tflite) -> dict:
    """Whether every op between the inputs and the output computes in integers (what an NPU, DSP or Edge TPU needs).

    Returns:
        `{"fully_integer": bool, "float_ops": {op type: count}, "examples": {op type: first output tensor name}}`.
        An op is float if any of its tensors is float, except at the graph's edges, which the CPU runs around an
        accelerator: CAST / QUANTIZE / RESHAPE reached from the inputs only, and DEQUANTIZE / SOFTMAX leading to the
        outputs only. Hybrid ops (integer weights, float activations) are float.

    Example (dynamic range keeps float activations, so it is not integer-only):

    >>> from tfspeed.export import convert
    >>> from tfspeed.models import BertConfig, build_classifier
    >>> model = build_classifier(BertConfig(vocab_size=100, hidden_size=32, num_layers=1, num_heads=2,
    ...                                     intermediate_size=64, max_positions=16), num_classes=2)
    >>> report = integer_report(convert(model, "dynamic", seq_length=8))
    >>> report["fully_integer"], report["float_ops"]["FULLY_CONNECTED"]
    (False, 8)
    """
    from ai_edge_litert import schema_py_generated as fb

    data = read_tflite(tflite)
    model = fb.ModelT.InitFromPackedBuf(data, 0)
    op_names, type_names = _names(fb.BuiltinOperator), _names(fb.TensorType)
    sg = model.subgraphs[0]

    def const(i):
        t = sg.tensors[i]
        return t.buffer < len(model.buffers) and model.buffers[t.buffer].data is not None and \
            len(model.buffers[t.buffer].data) > 0

    ops = []
    for op in sg.operators:
        code = model.operatorCodes[op.opcodeIndex]
        ops.append((op_names.get(max(code.builtinCode, code.deprecatedBuiltinCode), "OP"),
                    [i for i in op.inputs if i >= 0], [i for i in op.outputs if i >= 0]))
    edge_in = set(sg.inputs)  # tensors computed from the graph inputs by edge ops only
    exempt = set()
    for k, (name, ins, outs) in enumerate(ops):
        if name in _IN_EDGE_OPS and all(i in edge_in or const(i) for i in ins):
            edge_in.update(outs)
            exempt.add(k)
    edge_out = set(sg.outputs)  # tensors that only edge ops turn into the graph outputs
    consumers = collections.defaultdict(list)
    for k, (_, ins, _) in enumerate(ops):
        for i in ins:
            consumers[i].append(k)
    for k in reversed(range(len(ops))):
        name, ins, outs = ops[k]
        if name in _OUT_EDGE_OPS and all(o in edge_out for o in outs):
            exempt.add(k)
            for i in ins:
                if all(c in exempt for c in consumers[i]):
                    edge_out.add(i)
    floats = collections.Counter()
    examples = {}
    for k, (name, ins, outs) in enumerate(ops):
        if k in exempt or not any(type_names[sg.tensors[i].type].lower() in _FLOAT_TYPES for i in ins + outs):
            continue
        floats[name] += 1
        examples.setdefault(name, sg.tensors[outs[0]].name.decode() if outs else "")
    return {"fully_integer": not floats, "float_ops": dict(sorted(floats.items())), "examples": examples}


# Why an op type stays float in a BERT, for the integer-only error.
_WHY_FLOAT = {
    "FULLY_CONNECTED": "float activations (dynamic range or weight-only: choose int8-static or 16x8)",
    "BATCH_MATMUL": "attention matmuls left float",
    "MEAN": "LayerNorm statistics left float", "SQUARED_DIFFERENCE": "LayerNorm statistics left float",
    "RSQRT": "LayerNorm statistics left float", "SOFTMAX": "attention softmax left float",
    "GELU": "FFN activation left float", "GATHER": "float embedding table",
    "EMBEDDING_LOOKUP": "float embedding table",
}


def check_integer_only(tflite, what: str = "the file") -> dict:
    """`integer_report(tflite)`, or a ValueError listing the float ops and why they are float."""
    report = integer_report(tflite)
    if not report["fully_integer"]:
        found = "; ".join(f"{op} x{n} (e.g. {report['examples'][op]!r}"
                          f"{': ' + _WHY_FLOAT[op] if op in _WHY_FLOAT else ''})"
                          for op, n in report["float_ops"].items())
        raise ValueError(f"Expected an integer-only file (every op between the inputs and the output in integers) for "
                         f"`integer_only`. Received: {what}, whose float ops are: {found}. Modes that can pass: "
                         "'int8-static' and '16x8' (LiteRT quantizer), 'int8' (TFLite converter).")
    return report
