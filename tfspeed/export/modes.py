"""TFLite conversion modes and the configurations the accuracy budget tries.

`Mode` is the one list of modes: the library validates against it and the CLI builds its `--mode` choices from it.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Optional, Sequence

# TFLite op types that hold LayerNormalization's statistics (MEAN, SQUARED_DIFFERENCE, RSQRT), the attention softmax
# and the FFN activation. Kept float, full int8 keeps its accuracy (STACK-NOTES: toy task 0.76 -> 0.895, float 0.900).
DEFAULT_FLOAT_OPS = ("MEAN", "SQUARED_DIFFERENCE", "RSQRT", "SOFTMAX", "GELU")

# Regular expressions on op output tensor names: the attention softmax block (scale, additive mask, softmax), named
# `layer_{i}_softmax/...` in a tfspeed BERT. The additive mask is -10000 on padding: quantized together with the
# scores in one int8 ADD, the scores lose all resolution (measured: MiniLM on Rotten Tomatoes 0.83 -> 0.60, a toy
# model 1.0 -> 0.53; with this block float, within 0.5 point). Op types alone cannot select it: the ADD is an ADD.
DEFAULT_FLOAT_NODES = (r"softmax",)

# `float_ops` wildcard: every op type of the model except FULLY_CONNECTED and pure data movement, i.e. only the
# dense layers run in int8 ("int8 matmuls only").
ALL_BUT_FC = "*"
INT8_KEPT_BY_WILDCARD = ("FULLY_CONNECTED", "RESHAPE", "TRANSPOSE", "STRIDED_SLICE", "CAST", "QUANTIZE", "DEQUANTIZE")
# The FFN dense layers of a tfspeed BERT (`layer_{i}_intermediate`, `layer_{i}_output`): their inputs carry BERT's
# activation outliers, so per-tensor int8 there costs the most accuracy.
FFN_NODES = (r"layer_\d+_(intermediate|output)/",)


class Mode(str, enum.Enum):
    """How the weights and activations of the .tflite are stored and computed.

    - `FLOAT32` (`"float32"`): no quantization; the reference.
    - `FLOAT16` (`"float16"`): float16 weights, dequantized to float32 at load; about half the size.
    - `DYNAMIC` (`"dynamic"`): int8 weights, float activations quantized on the fly (dynamic range); no calibration.
    - `INT8` (`"int8"`): full integer: int8 weights and activations, calibrated on real text. Token inputs stay int32,
      the logits come out float32. A QAT model uses its own fake-quant ranges instead of calibration.
    - `INT8_MIXED` (`"int8-mixed"`): full integer except the op types in `float_ops` (default `DEFAULT_FLOAT_OPS`:
      LayerNorm statistics, softmax, GELU) and the ops whose output tensor names match `float_nodes` (default
      `DEFAULT_FLOAT_NODES`: the attention softmax block with its additive mask), which run in float32 between
      QUANTIZE / DEQUANTIZE ops.

    Through Google's LiteRT quantizer (`litert-quantizer`, the `quantizer` extra), on the float32 file:

    - `INT4` (`"int4"`): int4 weights (blockwise, `block_size` weights per scale, or channel-wise with 0), float
      activations quantized on the fly; the embedding table too. About 0.6x the dynamic-range file.
    - `INT4_HR` (`"int4-hr"`): the same with each weight matrix Hadamard-rotated before rounding (the rotation is
      undone in the graph): 4-bit steps fit outlier weights better.
    - `INT8_WEIGHTS` / `INT4_WEIGHTS` (`"int8-weights"` / `"int4-weights"`): weight-only: integer weights
      dequantized to float32 at run time, float compute. Small files with the float model's accuracy.
    - `INT8_STATIC` (`"int8-static"`): int8 weights and activations, calibrated on real text, for every op the
      quantizer supports (LayerNorm pieces, softmax and GELU included).
    - `INT16X8` (`"16x8"`): int8 weights, int16 activations, calibrated: the integer mode that keeps BERT's
      activation outliers and its attention mask.
    """

    FLOAT32 = "float32"
    FLOAT16 = "float16"
    DYNAMIC = "dynamic"
    INT8 = "int8"
    INT8_MIXED = "int8-mixed"
    INT4 = "int4"
    INT4_HR = "int4-hr"
    INT8_WEIGHTS = "int8-weights"
    INT4_WEIGHTS = "int4-weights"
    INT8_STATIC = "int8-static"
    INT16X8 = "16x8"

    def __str__(self):
        return self.value

    @property
    def needs_calibration(self) -> bool:
        return self in (Mode.INT8, Mode.INT8_MIXED, Mode.INT8_STATIC, Mode.INT16X8)

    @property
    def uses_quantizer(self) -> bool:
        """True for the modes written by the LiteRT quantizer from the float32 file."""
        return self in QUANTIZER_MODES

    @classmethod
    def choices(cls) -> list:
        return [m.value for m in cls]

    @classmethod
    def parse(cls, value, argument: str = "mode") -> "Mode":
        """`value` as a `Mode` (a `Mode` or its string, case-insensitive); unknown values raise a ValueError."""
        if isinstance(value, cls):
            return value
        if isinstance(value, str):
            for m in cls:
                if value.strip().lower() in (m.value, m.name.lower()):
                    return m
        raise ValueError(f"Received an invalid value for `{argument}`, expected one of "
                         f"{', '.join(repr(c) for c in cls.choices())}. Received: {argument}={value!r}")


QUANTIZER_MODES = frozenset({Mode.INT4, Mode.INT4_HR, Mode.INT8_WEIGHTS, Mode.INT4_WEIGHTS, Mode.INT8_STATIC,
                             Mode.INT16X8})


def normalize_ops(ops, argument: str = "float_ops") -> tuple:
    """Op type names upper-cased (`"softmax"` -> `"SOFTMAX"`), checked against the TFLite schema's builtin ops."""
    if ops is None:
        return ()
    if isinstance(ops, str):
        ops = [o for o in ops.split(",") if o.strip()]
    known = builtin_op_names()
    out = []
    for op in ops:
        name = str(op).strip().upper()
        if name != ALL_BUT_FC and name not in known:
            raise ValueError(f"Received an invalid value for `{argument}`, expected TFLite builtin op types such as "
                             f"'SOFTMAX', 'GELU', 'MEAN', 'BATCH_MATMUL'. Received: {argument}={list(ops)!r} "
                             f"({name!r} is not a TFLite op type)")
        if name not in out:
            out.append(name)
    return tuple(out)


def builtin_op_names() -> dict:
    """{TFLite builtin op name: code} from the flatbuffer schema."""
    from ai_edge_litert import schema_py_generated as fb

    return {k: v for k, v in vars(fb.BuiltinOperator).items() if not k.startswith("_") and isinstance(v, int)}


def normalize_nodes(nodes, argument: str = "float_nodes") -> tuple:
    """Regular expressions (a list or a comma-separated string), each checked to compile."""
    import re

    if nodes is None:
        return ()
    if isinstance(nodes, str):
        nodes = [n for n in nodes.split(",") if n.strip()]
    out = []
    for n in nodes:
        try:
            re.compile(n)
        except (re.error, TypeError) as e:
            raise ValueError(f"Received an invalid value for `{argument}`, expected regular expressions matched "
                             f"against op output tensor names. Received: {argument}={list(nodes)!r} ({e})") from e
        out.append(str(n))
    return tuple(out)


def resolve_mixed(mode: "Mode", float_ops=None, float_nodes=None) -> tuple:
    """`(float_ops, float_nodes)` for `mode`: defaults filled in for `int8-mixed` (None = default, () = none);
    a ValueError if either is given for another mode."""
    mode = Mode.parse(mode)
    if mode != Mode.INT8_MIXED:
        if float_ops or float_nodes:
            raise ValueError(f"`float_ops` and `float_nodes` only apply to mode='int8-mixed'. Received: "
                             f"mode={mode.value!r}, float_ops={float_ops!r}, float_nodes={float_nodes!r}")
        return (), ()
    ops = DEFAULT_FLOAT_OPS if float_ops is None else normalize_ops(float_ops)
    nodes = DEFAULT_FLOAT_NODES if float_nodes is None else normalize_nodes(float_nodes)
    return ops, nodes


@dataclasses.dataclass(frozen=True)
class Candidate:
    """One configuration the accuracy budget may pick: a mode and, for `int8-mixed`, what is kept float.

    `float_ops` / `float_nodes` follow `convert`: `None` means the defaults, `()` means none.
    """

    name: str
    mode: Mode
    float_ops: Optional[tuple] = None
    float_nodes: Optional[tuple] = None
    block_size: Optional[int] = None
    recipe: Optional[tuple] = None

    def __post_init__(self):
        mode = Mode.parse(self.mode)
        ops, nodes = resolve_mixed(mode, self.float_ops, self.float_nodes)
        block_size, recipe = resolve_quantizer(mode, self.block_size, self.recipe)
        object.__setattr__(self, "mode", mode)
        object.__setattr__(self, "float_ops", ops)
        object.__setattr__(self, "float_nodes", nodes)
        object.__setattr__(self, "block_size", block_size)
        object.__setattr__(self, "recipe", recipe)

    def to_dict(self) -> dict:
        out = {"name": self.name, "mode": self.mode.value, "float_ops": list(self.float_ops),
               "float_nodes": list(self.float_nodes)}
        if self.mode.uses_quantizer:
            out.update(block_size=self.block_size, recipe=[list(e) for e in self.recipe])
        return out


def resolve_quantizer(mode: "Mode", block_size=None, recipe=None) -> tuple:
    """`(block_size, recipe entries)` for a LiteRT-quantizer mode (block size 32 when not given; the recipe parsed,
    see `quantizer.parse_recipe`); `(None, ())` for other modes, where giving either is a ValueError."""
    from tfspeed.export import quantizer

    mode = Mode.parse(mode)
    if not mode.uses_quantizer:
        if block_size is not None or recipe:
            raise ValueError(f"`block_size` and `recipe` apply to the LiteRT quantizer's modes "
                             f"({', '.join(sorted(m.value for m in QUANTIZER_MODES))}). Received: mode={mode.value!r}, "
                             f"block_size={block_size!r}, recipe={recipe!r}")
        return None, ()
    block = quantizer.DEFAULT_INT4_BLOCK if block_size is None else quantizer.check_block_size(block_size)
    return block, quantizer.parse_recipe(recipe)


# int8-mixed: LayerNorm statistics, softmax, GELU and the attention softmax block float. int8-fc: only the dense
# layers int8. int8-attn-fc: only the attention dense layers (query, key, value, attention output, pooler, classifier)
# int8 (measured on MiniLM / Rotten Tomatoes: the first three lose 14-22 points, int8-attn-fc < 1 point).
# Most aggressive first: the conventional order on mobile (ARM) CPUs, where integer kernels are the fastest.
# On x86 the measured order differs (full int8 BATCH_MATMUL / LayerNorm do not run in XNNPACK): the budget measures.
DEFAULT_CANDIDATES = (
    Candidate("int8", Mode.INT8),
    Candidate("int8-mixed", Mode.INT8_MIXED, DEFAULT_FLOAT_OPS, DEFAULT_FLOAT_NODES),
    Candidate("int8-mixed+bmm", Mode.INT8_MIXED, DEFAULT_FLOAT_OPS + ("BATCH_MATMUL",), DEFAULT_FLOAT_NODES),
    Candidate("int8-fc", Mode.INT8_MIXED, (ALL_BUT_FC,), ()),
    Candidate("int8-attn-fc", Mode.INT8_MIXED, (ALL_BUT_FC,), FFN_NODES),
    Candidate("dynamic", Mode.DYNAMIC),
    Candidate("float16", Mode.FLOAT16),
    Candidate("float32", Mode.FLOAT32),
)

# The LiteRT quantizer's files (the `quantizer` extra), asked for by name (`--candidates int4,int4-ffn,...`): with
# `objective="size"` the budget picks the smallest file within the accuracy drop. `int4-ffn`: the embedding table and
# the FFN in int4, attention and head in int8 (the attention weights are the most sensitive to 4 bits).
QUANTIZER_CANDIDATES = (
    Candidate("int4", Mode.INT4),
    Candidate("int4-channel", Mode.INT4, block_size=0),
    Candidate("int4-hr", Mode.INT4_HR, block_size=0),
    Candidate("int4-ffn", Mode.INT4, recipe=(("attention", "int8"), ("head", "int8"))),
    Candidate("int4-weights", Mode.INT4_WEIGHTS),
    Candidate("int8-weights", Mode.INT8_WEIGHTS),
    Candidate("int8-static", Mode.INT8_STATIC),
    Candidate("16x8", Mode.INT16X8),
)


def candidates_by_name(names: Optional[Sequence] = None) -> tuple:
    """The `DEFAULT_CANDIDATES` called `names` (a list or comma-separated string), in the order given."""
    if names is None:
        return DEFAULT_CANDIDATES
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    table = {c.name: c for c in DEFAULT_CANDIDATES + QUANTIZER_CANDIDATES}
    out = []
    for n in names:
        if isinstance(n, Candidate):
            out.append(n)
        elif n in table:
            out.append(table[n])
        else:
            raise ValueError(f"Received an invalid value for `candidates`, expected names among "
                             f"{', '.join(repr(k) for k in table)} or `Candidate` objects. "
                             f"Received: candidates={names!r}")
    if not out:
        raise ValueError(f"Received an invalid value for `candidates`, expected at least one. "
                         f"Received: candidates={names!r}")
    return tuple(out)
