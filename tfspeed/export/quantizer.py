"""Post-training quantization through Google's LiteRT quantizer (`litert-quantizer`), on tfspeed's float32 .tflite.

The TFLite converter (`convert.py`) writes float16, dynamic-range int8 and full int8 files. The LiteRT quantizer
works on the float32 file and adds what the converter cannot write: int4 weights (channel-wise, or blockwise with
one scale per 32 / 64 / 128 / 256 weights), weight-only int8 / int4 (weights dequantized at load, float compute),
static int8 and int16 activations with int8 weights ("16x8"), and a per-part recipe (say the embedding table and the
FFN in int4, the attention in int8).

Two things are done to the float32 file first:
- the token-embedding `GATHER` becomes `EMBEDDING_LOOKUP` (with a RESHAPE on each side): the quantizer's int4 and
  weight-only recipes quantize an embedding table only behind `EMBEDDING_LOOKUP`, and the table is most of a BERT
  file (MiniLM: 47 of 90 MB);
- static modes calibrate on real text, each text at its own length when the file is variable-length.

Example (a tiny random-weight BERT; the real use passes a model directory and `calibration="rotten_tomatoes"`):

>>> from tfspeed.export import convert
>>> from tfspeed.models import BertConfig, build_classifier
>>> model = build_classifier(BertConfig(vocab_size=128, hidden_size=64, num_layers=1, num_heads=2,
...                                     intermediate_size=128, max_positions=16), num_classes=2)
>>> small = convert(model, "int4", seq_length=8)
>>> len(small) < len(convert(model, "dynamic", seq_length=8))
True
"""

from __future__ import annotations

import dataclasses
import re
from typing import Optional

import numpy as np

# Parts of a tfspeed BERT a recipe can name, as regular expressions on op output tensor names.
PARTS = {
    "embedding": r"(^|/)(word|type|position)_embeddings?/",
    "attention": r"(^|/)layer_\d+_(query|key|value|scores|softmax|context|attention_output)/",
    "ffn": r"(^|/)layer_\d+_(intermediate|output)/",
    "head": r"(^|/)(pooler_dense|classifier)/",
    "all": r".*",
}
BLOCK_SIZES = (32, 64, 128, 256)
# int4 weights: the block size when none is given (measured on MiniLM / Rotten Tomatoes, docs/guides/quantization.md).
DEFAULT_INT4_BLOCK = 32


@dataclasses.dataclass(frozen=True)
class Scheme:
    """How one part is quantized: `kind` is "dynamic" (integer weights, activations quantized on the fly),
    "weight_only" (integer weights dequantized for float compute), "static" (integer weights and activations,
    calibrated) or "float" (left alone)."""

    kind: str
    weight_bits: int = 8
    activation_bits: Optional[int] = None
    blockwise: bool = False  # int4: one scale per block of weights instead of per output channel
    # the quantizer's algorithm: min/max, or a Hadamard rotation of each weight matrix before rounding (spreads
    # outlier weights over the row, so 4-bit steps fit them better; the rotation is undone in the graph)
    algorithm: str = "min_max_uniform_quantize"


# Recipe scheme names. `int4` uses the block size given (`block_size`, 0 = channel-wise).
SCHEMES = {
    "int8": Scheme("dynamic", 8),
    "int4": Scheme("dynamic", 4, blockwise=True),
    "int4-hr": Scheme("dynamic", 4, blockwise=True, algorithm="DECOMPOSED_HADAMARD_ROTATION"),
    "int8-weights": Scheme("weight_only", 8),
    "int4-weights": Scheme("weight_only", 4),  # the quantizer's weight-only int4 is channel-wise only
    "int8-static": Scheme("static", 8, 8),
    "16x8": Scheme("static", 8, 16),
    "float": Scheme("float"),
}


def require():
    """The `litert_quantizer` module, or an ImportError that says how to install it."""
    try:
        import litert_quantizer  # noqa: F401
        from litert_quantizer import quantizer
    except ImportError as e:
        raise ImportError("This mode quantizes with Google's LiteRT quantizer, which is not installed: "
                          "pip install 'tfspeed[quantizer]' (litert-quantizer)") from e
    return quantizer


def parse_recipe(recipe) -> tuple:
    """`((part, scheme name), ...)` from `"embedding=int4,attention=int8"`, a list of pairs, or a dict.

    Parts: `embedding`, `attention`, `ffn`, `head`, `all`, or `re:<regular expression>` on op output tensor names.
    Schemes: the keys of `SCHEMES`. Later entries win where two match the same op.
    """
    if recipe is None or recipe == "":
        return ()
    if isinstance(recipe, dict):
        items = list(recipe.items())
    elif isinstance(recipe, str):
        items = []
        for entry in (e.strip() for e in recipe.split(",") if e.strip()):
            part, sep, scheme = entry.partition("=")
            if not sep:
                raise ValueError(f"Received an invalid value for `recipe`, expected comma-separated part=scheme "
                                 f"entries such as 'embedding=int4,attention=int8'. Received: recipe={recipe!r} "
                                 f"({entry!r} has no '=')")
            items.append((part.strip(), scheme.strip()))
    else:
        items = [tuple(p) for p in recipe]
    out = []
    for part, scheme in items:
        if part not in PARTS and not str(part).startswith("re:"):
            raise ValueError(f"Received an invalid value for `recipe`, expected parts among "
                             f"{', '.join(repr(p) for p in PARTS)} or 're:<regex>'. Received: part {part!r}")
        if part.startswith("re:"):
            try:
                re.compile(part[3:])
            except re.error as e:
                raise ValueError(f"Received an invalid value for `recipe`: {part!r} is not a regular expression "
                                 f"({e})") from e
        if scheme not in SCHEMES:
            raise ValueError(f"Received an invalid value for `recipe`, expected schemes among "
                             f"{', '.join(repr(s) for s in SCHEMES)}. Received: {part}={scheme!r}")
        out.append((part, scheme))
    return tuple(out)


def check_block_size(block_size) -> int:
    """0 (channel-wise) or one of `BLOCK_SIZES`."""
    if isinstance(block_size, bool) or not isinstance(block_size, (int, np.integer)) or \
            int(block_size) not in (0,) + BLOCK_SIZES:
        raise ValueError(f"Received an invalid value for `block_size`, expected 0 (one scale per output channel) or "
                         f"one of {BLOCK_SIZES} (one scale per block of that many weights). "
                         f"Received: block_size={block_size!r}")
    return int(block_size)


def _regex(part: str) -> str:
    return part[3:] if part.startswith("re:") else PARTS[part]


def build_recipe(entries, block_size: int = DEFAULT_INT4_BLOCK) -> list:
    """A litert-quantizer recipe (list of dicts) for `((part, scheme), ...)`, later entries winning."""
    return _recipe_manager(entries, block_size).get_quantization_recipe()


def _recipe_manager(entries, block_size: int):
    require()
    from litert_quantizer import qtyping
    from litert_quantizer.recipe_manager import RecipeManager

    block_size = check_block_size(block_size)
    granularity = (qtyping.QuantGranularity.CHANNELWISE if block_size == 0
                   else qtyping.QuantGranularity(f"BLOCKWISE_{block_size}"))
    op = qtyping.TFLOperationName.ALL_SUPPORTED
    manager = RecipeManager()
    for part, name in entries:
        s = SCHEMES[name]
        regex = _regex(part)
        gran = granularity if s.blockwise else qtyping.QuantGranularity.CHANNELWISE
        if s.kind == "float":
            manager.add_quantization_config(regex, op, algorithm_key="no_quantize")
        elif s.kind == "dynamic":
            manager.add_dynamic_config(regex, op, s.weight_bits, gran, s.algorithm)
        elif s.kind == "weight_only":
            manager.add_weight_only_config(regex, op, s.weight_bits, gran)
        else:
            manager.add_static_config(regex, op, s.activation_bits, s.weight_bits, gran)
    if any(SCHEMES[name].kind == "static" for _, name in entries):
        # the logits leave the graph as float32 (a DEQUANTIZE at the end): MediaPipe rejects an int8 output, and a
        # softmax `probability` output is appended to them
        manager.add_quantization_config(".*", qtyping.TFLOperationName.OUTPUT, algorithm_key="no_quantize")
    return manager


def needs_calibration(entries) -> bool:
    return any(SCHEMES[name].kind == "static" for _, name in entries)


# --- GATHER -> EMBEDDING_LOOKUP -------------------------------------------------------------------------------------

def _opcode(model, fb, builtin: int) -> int:
    for i, code in enumerate(model.operatorCodes):
        if max(code.builtinCode, code.deprecatedBuiltinCode) == builtin:
            return i
    code = fb.OperatorCodeT()
    code.builtinCode, code.deprecatedBuiltinCode, code.version = builtin, min(builtin, 127), 1
    model.operatorCodes.append(code)
    return len(model.operatorCodes) - 1


def _const_int32(model, sg, fb, values, name) -> int:
    buf = fb.BufferT()
    buf.data = np.frombuffer(np.asarray(values, "<i4").tobytes(), np.uint8)
    model.buffers.append(buf)
    t = fb.TensorT()
    t.shape, t.type, t.buffer, t.name = [len(values)], fb.TensorType.INT32, len(model.buffers) - 1, name
    sg.tensors.append(t)
    return len(sg.tensors) - 1


def _tensor(sg, fb, shape, signature, dtype, name) -> int:
    t = fb.TensorT()
    t.shape, t.shapeSignature, t.type, t.buffer, t.name = list(shape), list(signature), dtype, 0, name
    sg.tensors.append(t)
    return len(sg.tensors) - 1


def embedding_lookups(float_model: bytes, min_elements: int = 1024) -> bytes:
    """`float_model` with each GATHER of a constant float table (axis 0, at least `min_elements` values) turned into
    RESHAPE [-1] -> EMBEDDING_LOOKUP -> RESHAPE back: the same values, an op the LiteRT quantizer quantizes.

    Example:

    >>> from tfspeed.export import convert
    >>> from tfspeed.export.ops import list_ops
    >>> from tfspeed.models import BertConfig, build_classifier
    >>> model = build_classifier(BertConfig(vocab_size=128, hidden_size=32, num_layers=1, num_heads=2,
    ...                                     intermediate_size=64, max_positions=16), num_classes=2)
    >>> ops = [name for name, _, _ in list_ops(embedding_lookups(convert(model, "float32", seq_length=8)))]
    >>> ops.count("EMBEDDING_LOOKUP"), ops.count("GATHER")
    (1, 1)
    """
    from ai_edge_litert import schema_py_generated as fb

    def replace(model, sg, op):
        if len(op.inputs) != 2:
            return None
        table, ids = sg.tensors[op.inputs[0]], sg.tensors[op.inputs[1]]
        data = model.buffers[table.buffer].data if table.buffer < len(model.buffers) else None
        axis = getattr(op.builtinOptions, "axis", 0) if op.builtinOptions is not None else 0
        batch_dims = getattr(op.builtinOptions, "batchDims", 0) if op.builtinOptions is not None else 0
        if (data is None or len(data) == 0 or table.type != fb.TensorType.FLOAT32 or len(table.shape) != 2
                or int(np.prod(table.shape)) < min_elements or axis != 0 or batch_dims != 0
                or ids.type != fb.TensorType.INT32):
            return None
        out = sg.tensors[op.outputs[0]]
        out_sig = list(out.shapeSignature) if out.shapeSignature is not None and len(out.shapeSignature) \
            else list(out.shape)
        dim, n, name = int(table.shape[1]), int(np.prod(ids.shape)), out.name.decode()
        rows_sig = -1 if -1 in out_sig else n
        flat_ids = _tensor(sg, fb, [n], [rows_sig], fb.TensorType.INT32, name + "/ids")
        rows = _tensor(sg, fb, [n, dim], [rows_sig, dim], fb.TensorType.FLOAT32, name + "/lookup")
        shape_in = _const_int32(model, sg, fb, [-1], name + "/ids_shape")
        shape_out = _const_int32(model, sg, fb, out_sig, name + "/rows_shape")
        reshape = _opcode(model, fb, fb.BuiltinOperator.RESHAPE)
        lookup = _opcode(model, fb, fb.BuiltinOperator.EMBEDDING_LOOKUP)
        return [_op(reshape, [op.inputs[1], shape_in], [flat_ids]), _op(lookup, [flat_ids, op.inputs[0]], [rows]),
                _op(reshape, [rows, shape_out], list(op.outputs))]

    return _rewrite(float_model, fb.BuiltinOperator.GATHER, replace)


def squared_differences(float_model: bytes) -> bytes:
    """`float_model` with each SQUARED_DIFFERENCE(a, b) (LayerNorm's variance) written as d = SUB(a, b), MUL(d, d):
    the same values, in ops that have int16 kernels (SQUARED_DIFFERENCE has none, so 16x8 would leave it float)."""
    from ai_edge_litert import schema_py_generated as fb

    def replace(model, sg, op):
        out = sg.tensors[op.outputs[0]]
        diff = _tensor(sg, fb, out.shape, out.shapeSignature if out.shapeSignature is not None else out.shape,
                       out.type, out.name.decode() + "/diff")
        sub, mul = _opcode(model, fb, fb.BuiltinOperator.SUB), _opcode(model, fb, fb.BuiltinOperator.MUL)
        return [_op(sub, list(op.inputs), [diff], fb.BuiltinOptions.SubOptions, fb.SubOptionsT()),
                _op(mul, [diff, diff], list(op.outputs), fb.BuiltinOptions.MulOptions, fb.MulOptionsT())]

    return _rewrite(float_model, fb.BuiltinOperator.SQUARED_DIFFERENCE, replace)


def _op(opcode: int, inputs: list, outputs: list, options_type: int = 0, options=None):
    from ai_edge_litert import schema_py_generated as fb

    op = fb.OperatorT()
    op.opcodeIndex, op.inputs, op.outputs = opcode, inputs, outputs
    op.builtinOptionsType, op.builtinOptions = options_type, options
    return op


def _rewrite(float_model: bytes, builtin: int, replace) -> bytes:
    """`float_model` with each op of type `builtin` replaced by `replace(model, subgraph, op)` (a list of new ops,
    or None to keep it); the bytes unchanged when nothing was replaced."""
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(float_model))
    changed = False
    for sg in model.subgraphs:
        operators = []
        for op in sg.operators:
            code = model.operatorCodes[op.opcodeIndex]
            new = replace(model, sg, op) if max(code.builtinCode, code.deprecatedBuiltinCode) == builtin else None
            operators.extend(new if new is not None else [op])
            changed |= new is not None
        sg.operators = operators
    if not changed:
        return bytes(float_model)
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


# --- quantize ---------------------------------------------------------------------------------------------------------

def _calibration_rows(features: dict, dynamic: bool) -> list:
    """One dict of [1, L] int32 arrays per text; at each text's own length for a variable-length file."""
    n = len(next(iter(features.values())))
    rows = []
    for i in range(n):
        row = {k: np.asarray(v[i:i + 1], np.int32) for k, v in features.items()}
        if dynamic:
            length = max(1, int(row["input_mask"].sum()))
            row = {k: v[:, :length] for k, v in row.items()}
        rows.append(row)
    return rows


def check_blocks(float_model: bytes, entries, block_size: int):
    """A ValueError naming the first weight whose input dimension `block_size` does not divide."""
    if not block_size or not any(SCHEMES[s].blockwise for _, s in entries):
        return
    from tfspeed.export.ops import weight_shapes

    for op, name, shape in weight_shapes(float_model):
        width = shape[-1]
        if width % block_size:
            raise ValueError(f"Received an invalid value for `block_size`: it must divide the input dimension of "
                             f"every quantized weight. Received: block_size={block_size}; {op} {name!r} has weights "
                             f"{list(shape)} (input dimension {width}). Use 0 (channel-wise) or a divisor of {width}.")


def quantize(float_model: bytes, entries, block_size: int = DEFAULT_INT4_BLOCK, calibration: Optional[dict] = None,
             dynamic: bool = False, num_threads: int = 2) -> bytes:
    """The float32 .tflite `float_model` quantized by the LiteRT quantizer per `entries` (see `parse_recipe`).

    Args:
        float_model: float32 .tflite bytes (a tfspeed export).
        entries: `((part, scheme), ...)`; see `parse_recipe`.
        block_size: int4 block size, 0 for one scale per output channel. Defaults to `32`.
        calibration: a dict of int32 token-id arrays [n, L] (static schemes need it).
        dynamic: the file is variable-length: calibrate each text at its own length.
        num_threads: calibration threads.
    """
    qz = require()
    entries = parse_recipe(entries) if not isinstance(entries, tuple) else entries
    block_size = check_block_size(block_size)
    kinds = {SCHEMES[name].kind for _, name in entries}
    model = float_model
    if kinds & {"dynamic", "weight_only"}:  # their embedding tables are quantized behind EMBEDDING_LOOKUP only
        model = embedding_lookups(model)
    if "static" in kinds:  # static schemes quantize GATHER; SQUARED_DIFFERENCE has no int16 kernel
        model = squared_differences(model)
    check_blocks(model, entries, block_size)
    manager = _recipe_manager(entries, block_size)
    q = qz.Quantizer(bytearray(model), manager.get_quantization_recipe())
    result = None
    if q.need_calibration:
        if calibration is None:
            raise ValueError("Static quantization (int8-static, 16x8) needs `calibration`: real text (a dataset "
                             "name, texts or token ids). Received: calibration=None")
        from litert_quantizer import calibrator
        from litert_quantizer.utils import qsv_utils

        rows = _calibration_rows(calibration, dynamic)
        # Each range is the min / max over every calibration text (as the TFLite converter calibrates). The
        # quantizer's default, a moving average weighted 0.95 to the past, keeps about the first text's range and
        # clips the others (a tiny BERT's logits: argmax agreement 0.6).
        calib = calibrator.Calibrator(bytes(model), num_threads=num_threads,
                                      qsv_update_func=qsv_utils.min_max_update)
        with _quiet():
            calib.calibrate({"serving_default": rows}, manager)
        result = calib.get_model_qsvs()
    with _quiet():
        out = q.quantize(result, enable_progress_bar=False, enable_progress_report=False)
    return bytes(out.quantized_model)


def _quiet():
    """The quantizer's progress bars and reports (stdout and stderr) silenced."""
    import contextlib
    import io

    stack = contextlib.ExitStack()
    stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
    stack.enter_context(contextlib.redirect_stderr(io.StringIO()))
    return stack

