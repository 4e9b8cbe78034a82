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

    The first input's dtype (`"int8"`, `"float32"`, `"int32"` ...), except that a float32 op with int8 constant
    weights is `"hybrid-int8"` (dynamic-range kernels: int8 weights, activations quantized on the fly). Ops without
    inputs take their first output's dtype.
    """
    if not op_inputs:
        return op_outputs[0] if op_outputs else "none"
    first = op_inputs[0]
    if first == "float32" and any(t == "int8" for t in op_inputs[1:]):
        return "hybrid-int8"
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
        out.append((name, op_kind(ins, outs), tensor))
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
    float_ops = {name: c["float32"] for name, c in sorted(ops.items()) if name not in _GLUE and c.get("float32")}
    return {"ops": {name: dict(sorted(c.items())) for name, c in sorted(ops.items())},
            "total": sum(sum(c.values()) for c in ops.values()), "int8": int8, "float_ops": float_ops}


def sizes(tflite) -> dict:
    """`{"size_bytes": raw, "gzip_bytes": gzip level 9}`: gzip shows what sparsity and repeated weights save."""
    data = read_tflite(tflite)
    return {"size_bytes": len(data), "gzip_bytes": len(gzip.compress(data, compresslevel=9, mtime=0))}


def is_quantized(histogram: dict) -> bool:
    """True if any op other than QUANTIZE / DEQUANTIZE / CAST computes in int8 (full integer or hybrid)."""
    return any(kind in ("int8", "hybrid-int8") for name, kinds in histogram["ops"].items() if name not in _GLUE
               for kind in kinds)


def fell_back(histogram: dict) -> dict:
    """The float32 op types (with counts) of a quantized model: what did not run in int8. `{}` for a float model."""
    return dict(histogram["float_ops"]) if is_quantized(histogram) else {}
