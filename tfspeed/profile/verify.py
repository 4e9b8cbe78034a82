"""Checks a `.tflite` file before the native interpreter sees it.

Three layers, cheapest first, so that a malformed file gives an `InvalidModelError`, never a crashed process:

1. Python checks of the container: size, the `TFL3` file identifier, the root table offset.
2. A Python walk of the flatbuffer with the schema shipped in `ai_edge_litert` (`schema_py_generated`): schema version,
   every operator's opcode index, every tensor index and every buffer index in range, buffer data inside the file.
3. The native load itself (`Interpreter(model_content=...)` runs the flatbuffers `Verifier` before building), its
   errors re-raised as `InvalidModelError`; optionally first in a child process that is allowed to crash
   (`isolate=True`), for files from untrusted sources: a crash there becomes an error here.
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

from tfspeed.profile.errors import InvalidModelError

TFLITE_IDENTIFIER = b"TFL3"
SCHEMA_VERSION = 3
_MAX_FLATBUFFER = 2**31 - 1


def is_tflite_bytes(data: bytes) -> bool:
    """True when `data` carries the TFLite flatbuffer identifier `TFL3` at bytes 4..8."""
    return len(data) >= 8 and bytes(data[4:8]) == TFLITE_IDENTIFIER


def read_model_bytes(path, argument: str = "model") -> bytes:
    """Reads a file, with a clear error when it is missing or a directory."""
    path = Path(path)
    if not path.exists():
        raise InvalidModelError(f"`{argument}` does not exist. Received: {argument}={str(path)!r}")
    if path.is_dir():
        raise InvalidModelError(
            f"`{argument}` is a directory, expected a .tflite file. Received: {argument}={str(path)!r}"
        )
    return path.read_bytes()


def verify_tflite(data: bytes, name: str = "<bytes>") -> dict:
    """Verifies a TFLite flatbuffer in Python, without the native interpreter.

    Args:
        data: the file content.
        name: how to call the file in error messages. Defaults to `"<bytes>"`.

    Returns:
        A small summary: `{"subgraphs", "operators", "tensors", "buffers", "version"}`.

    Raises:
        InvalidModelError: naming what is wrong, e.g. "not a TFLite flatbuffer: the file identifier is b'PK\\x03\\x04'".
    """
    data = bytes(data)
    size = len(data)
    if size < 8:
        raise InvalidModelError(f"{name} is not a TFLite flatbuffer: it has {size} bytes, a model has at least 8.")
    if not is_tflite_bytes(data):
        raise InvalidModelError(
            f"{name} is not a TFLite flatbuffer: expected the file identifier {TFLITE_IDENTIFIER!r} at bytes 4..8. "
            f"Received: {bytes(data[4:8])!r}"
        )
    (root,) = struct.unpack_from("<I", data, 0)
    if root < 8 or root + 4 > size:
        raise InvalidModelError(
            f"{name} is truncated or corrupt: its root table offset {root} lies outside the {size}-byte file."
        )
    try:
        summary = _walk(data, size)
    except InvalidModelError:
        raise
    except Exception as exc:  # any out-of-bounds read in the Python flatbuffers reader
        raise InvalidModelError(
            f"{name} is a malformed TFLite flatbuffer (truncated or corrupt): {type(exc).__name__}: {exc}"
        ) from None
    return summary


def _walk(data: bytes, size: int) -> dict:
    from ai_edge_litert import schema_py_generated as fb

    def check_vec(length, what):
        if length < 0 or length * 4 > size:
            raise InvalidModelError(f"corrupt: {what} claims {length} entries in a {size}-byte file.")
        return length

    model = fb.Model.GetRootAs(data, 0)
    version = model.Version()
    if version != SCHEMA_VERSION:
        raise InvalidModelError(f"unsupported TFLite schema version {version}, expected {SCHEMA_VERSION}.")
    n_codes = check_vec(model.OperatorCodesLength(), "operator_codes")
    n_buffers = check_vec(model.BuffersLength(), "buffers")
    n_subgraphs = check_vec(model.SubgraphsLength(), "subgraphs")
    if n_subgraphs == 0:
        raise InvalidModelError("the model has no subgraph.")
    for b in range(n_buffers):
        buf = model.Buffers(b)
        n = buf.DataLength()
        if n:
            start = buf._tab.Vector(buf._tab.Offset(4))  # noqa: SLF001 - position of the data vector
            if start < 0 or start + n > size:
                raise InvalidModelError(f"corrupt: buffer {b} ({n} bytes) lies outside the file.")
        offset, length = buf.Offset(), buf.Size()
        if offset > 1 and (offset + length > size):
            raise InvalidModelError(f"corrupt or truncated: buffer {b} points to bytes {offset}..{offset + length} "
                                    f"of a {size}-byte file.")
    for k in range(check_vec(model.SignatureDefsLength(), "signature_defs")):
        sig = model.SignatureDefs(k)
        _utf8(sig.SignatureKey(), f"signature {k} has a key that is not UTF-8")
        if not 0 <= sig.SubgraphIndex() < n_subgraphs:
            raise InvalidModelError(f"corrupt: signature {k} uses subgraph {sig.SubgraphIndex()}, the model has "
                                    f"{n_subgraphs}.")
        for kind, length, get in (("input", sig.InputsLength(), sig.Inputs), ("output", sig.OutputsLength(),
                                                                              sig.Outputs)):
            for i in range(check_vec(length, f"signature {k} {kind}s")):
                _utf8(get(i).Name(), f"signature {k} {kind} {i} has a name that is not UTF-8")
    n_ops = n_tensors = 0
    for s in range(n_subgraphs):
        sg = model.Subgraphs(s)
        nt = check_vec(sg.TensorsLength(), f"subgraph {s} tensors")
        n_tensors += nt
        for t in range(nt):
            tensor = sg.Tensors(t)
            _utf8(tensor.Name(), f"tensor {t} of subgraph {s} has a name that is not UTF-8")
            if not 0 <= tensor.Buffer() < max(n_buffers, 1):
                raise InvalidModelError(
                    f"corrupt: tensor {t} of subgraph {s} uses buffer {tensor.Buffer()}, the model has {n_buffers}."
                )
            for d in range(check_vec(tensor.ShapeLength(), "shape")):
                if tensor.Shape(d) < -1:
                    raise InvalidModelError(f"corrupt: tensor {t} of subgraph {s} has dimension {tensor.Shape(d)}.")
        for kind, length, get in (("input", sg.InputsLength(), sg.Inputs), ("output", sg.OutputsLength(), sg.Outputs)):
            for i in range(check_vec(length, f"subgraph {s} {kind}s")):
                if not 0 <= get(i) < nt:
                    raise InvalidModelError(f"corrupt: subgraph {s} {kind} {i} is tensor {get(i)}, it has {nt}.")
        no = check_vec(sg.OperatorsLength(), f"subgraph {s} operators")
        n_ops += no
        for o in range(no):
            op = sg.Operators(o)
            if not 0 <= op.OpcodeIndex() < n_codes:
                raise InvalidModelError(
                    f"corrupt: operator {o} of subgraph {s} uses opcode {op.OpcodeIndex()}, the model has {n_codes}."
                )
            for kind, length, get in (("input", op.InputsLength(), op.Inputs),
                                      ("output", op.OutputsLength(), op.Outputs)):
                for i in range(check_vec(length, "operator tensors")):
                    if not -1 <= get(i) < nt:
                        raise InvalidModelError(
                            f"corrupt: operator {o} of subgraph {s} {kind} {i} is tensor {get(i)}, it has {nt}."
                        )
    return {"version": version, "subgraphs": n_subgraphs, "operators": n_ops, "tensors": n_tensors,
            "buffers": n_buffers}


def _utf8(raw, message):
    if raw is not None:
        try:
            bytes(raw).decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidModelError(f"corrupt: {message}.") from None


# The child process of `probe_tflite`: load, allocate, invoke once on zeros. It may crash; the parent reports it.
PROBE_SCRIPT = r"""
import sys, numpy as np
from ai_edge_litert.interpreter import Interpreter
data = open(sys.argv[1], "rb").read()
it = Interpreter(model_content=data)
it.allocate_tensors()
if all((d["shape_signature"] >= 0).all() for d in it.get_input_details()):
    for d in it.get_input_details():
        it.set_tensor(d["index"], np.zeros(d["shape"], d["dtype"]))
    it.invoke()
"""


def probe_tflite(data: bytes, name: str = "<bytes>", timeout: float = 120.0) -> None:
    """Loads the model once in a child process, so a native abort cannot take this process down.

    Raises:
        InvalidModelError: when the child crashes, times out or reports an error.
    """
    with tempfile.TemporaryDirectory(prefix="tfspeed-probe-") as tmp:
        path = os.path.join(tmp, "model.tflite")
        with open(path, "wb") as f:
            f.write(data)
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
        try:
            proc = subprocess.run([sys.executable, "-c", PROBE_SCRIPT, path], capture_output=True, text=True,
                                  timeout=timeout, env=env)
        except subprocess.TimeoutExpired:
            raise InvalidModelError(f"{name}: loading it in a child process took longer than {timeout:g} s.") from None
    if proc.returncode == 0:
        return
    lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    detail = lines[-1] if lines else "no message"
    if proc.returncode < 0:
        raise InvalidModelError(
            f"{name} crashed the TFLite interpreter (signal {-proc.returncode}) when loaded in a child process: "
            f"the file is malformed or uses an unsupported feature. Last message: {detail}"
        )
    raise InvalidModelError(f"{name} cannot be loaded by the TFLite interpreter: {detail}")
