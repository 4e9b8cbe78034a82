"""One runner per format, all with the same small surface: `open()`, `specs()`, `allocate(feed)`, `invoke()`.

- `TFLiteRunner`: any `.tflite` file or bytes, run with `ai_edge_litert.interpreter.Interpreter`; threads and XNNPACK
  on/off are set per runner.
- `TFRunner`: a tf_keras model (object, `.keras` or `.h5` file) or a TF SavedModel directory, run through one traced
  `tf.function` / the `serving_default` signature. Threads are TensorFlow's process-wide setting.
- `OnnxRunner`: an `.onnx` file through onnxruntime (optional extra `tfspeed[onnx]`).
"""

from __future__ import annotations

import enum
import os
import zlib
from pathlib import Path

import numpy as np

from tfspeed.profile import verify
from tfspeed.profile.errors import InputError, InvalidModelError
from tfspeed.profile.inputs import InputSpec, lookup, normalize_name

GZIP_LEVEL = 6


class Format(str, enum.Enum):
    """Model formats the profiler runs. The CLI's choices come from here."""

    TFLITE = "tflite"
    KERAS = "keras"
    SAVED_MODEL = "savedmodel"
    ONNX = "onnx"


def detect_format(model) -> Format:
    """Tells the format of a path, bytes or model object; raises `InvalidModelError` when it is none of ours."""
    if isinstance(model, (bytes, bytearray, memoryview)):
        return Format.TFLITE
    if not isinstance(model, (str, os.PathLike)):
        from tfspeed.compat import keras

        if isinstance(model, keras.Model):
            return Format.KERAS
        raise InvalidModelError(
            "Received an invalid value for `models`, expected paths (.tflite, .onnx, .keras, .h5, a SavedModel "
            f"directory), tflite bytes or tf_keras models. Received: model={type(model).__name__}"
        )
    path = Path(model)
    if not path.exists():
        raise InvalidModelError(f"Received an invalid value for `models`: the path does not exist. "
                                f"Received: model={str(path)!r}")
    if path.is_dir():
        if (path / "saved_model.pb").exists() or (path / "saved_model.pbtxt").exists():
            return Format.SAVED_MODEL
        raise InvalidModelError(f"`model` is a directory without saved_model.pb, so not a SavedModel. "
                                f"Received: model={str(path)!r}")
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        return Format.ONNX
    if suffix in (".keras", ".h5", ".hdf5"):
        return Format.KERAS
    if suffix == ".tflite":
        return Format.TFLITE
    with open(path, "rb") as f:
        head = f.read(8)
    if verify.is_tflite_bytes(head):
        return Format.TFLITE
    raise InvalidModelError(
        f"Cannot tell the format of `model`: expected a .tflite flatbuffer (identifier b'TFL3'), .onnx, .keras, .h5 "
        f"or a SavedModel directory. Received: model={str(path)!r} starting with {head!r}"
    )


def gzip_size(chunks) -> int:
    """Bytes of the gzip (deflate level 6, gzip header) of the concatenated chunks, computed streaming."""
    comp = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)
    total = 0
    for chunk in chunks:
        for i in range(0, len(chunk), 1 << 24):
            total += len(comp.compress(chunk[i:i + (1 << 24)]))
    return total + len(comp.flush())


def _file_chunks(path: Path):
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for p in files:
        with open(p, "rb") as f:
            while chunk := f.read(1 << 24):
                yield chunk


def _path_size(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


class Runner:
    """Base class. Subclasses set `format`, and fill `name`, `path`, `threads`, `xnnpack`."""

    format: Format

    def __init__(self, model, name: str | None = None):
        self.model = model
        self.path = str(model) if isinstance(model, (str, os.PathLike)) else None
        self.name = name or (Path(self.path).name if self.path else f"<{type(model).__name__}>")
        self.threads = None
        self.xnnpack = None
        self.notes: list[str] = []

    # Overridden by subclasses.
    def open(self) -> None:  # construct / load: the first part of initialisation
        raise NotImplementedError

    def specs(self) -> list[InputSpec]:
        raise NotImplementedError

    def allocate(self, feed: dict) -> None:  # the second part of initialisation; sets the inputs too
        raise NotImplementedError

    def invoke(self) -> None:
        raise NotImplementedError

    def size_bytes(self) -> tuple[int, int]:
        path = Path(self.path)
        return _path_size(path), gzip_size(_file_chunks(path))

    def close(self) -> None:
        pass

    # Shared helper: the values this runner gets from the shared feed, by name.
    def _match(self, feed: dict) -> dict:
        out = {}
        for spec in self.specs():
            value = lookup(feed, spec.name)  # by name, else by role (input_ids for input_word_ids, ...)
            if value is None:
                raise InputError(
                    f"{self.name} expects inputs {[s.name for s in self.specs()]}; the inputs have "
                    f"{sorted(feed)}: no value for {spec.name!r}."
                )
            value = np.asarray(value)
            want = np.dtype(spec.dtype)
            if value.dtype != want:
                if value.dtype.kind in "iu" and want.kind in "iu" or value.dtype.kind == want.kind == "f":
                    value = value.astype(want)  # e.g. int32 ids for an int64 ONNX input: same values
                else:
                    raise InputError(f"{self.name} expects {spec.name!r} as {want.name}, the inputs have "
                                     f"{value.dtype.name}.")
            if len(value.shape) != len(spec.shape) or any(
                    s is not None and s >= 0 and s != d for s, d in zip(spec.shape, value.shape)):
                raise InputError(f"{self.name} expects {spec.name!r} of shape {list(spec.shape)} (-1 = any), the "
                                 f"inputs have {list(value.shape)}.")
            out[spec.name] = value
        return out


class TFLiteRunner(Runner):
    """Runs a `.tflite` model with LiteRT. `xnnpack=False` uses `BUILTIN_WITHOUT_DEFAULT_DELEGATES`."""

    format = Format.TFLITE

    def __init__(self, model, threads: int = 1, xnnpack: bool = True, name: str | None = None,
                 data: bytes | None = None):
        super().__init__(model, name)
        self.threads = int(threads)
        self.xnnpack = bool(xnnpack)
        if data is None:
            data = bytes(model) if self.path is None else verify.read_model_bytes(self.path)
        self.data = data
        self.interpreter = None

    def open(self) -> None:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        resolver = OpResolverType.AUTO if self.xnnpack else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        try:
            self.interpreter = Interpreter(model_content=self.data, num_threads=self.threads,
                                           experimental_op_resolver_type=resolver)
        except Exception as exc:
            raise InvalidModelError(f"{self.name} cannot be loaded by the TFLite interpreter: {exc}") from None
        try:
            self._read_signature()
        except Exception as exc:  # e.g. undecodable names in a corrupt file
            raise InvalidModelError(
                f"{self.name}: cannot read its inputs and signatures: {type(exc).__name__}: {exc}") from None

    def _read_signature(self) -> None:
        it = self.interpreter
        wrapper = it._interpreter  # noqa: SLF001 - the signature's subgraph needs the wrapper calls; never keep it
        signatures = it.get_signature_list()
        self.signature_key = None
        self.subgraph = 0
        if signatures:
            key = "serving_default" if "serving_default" in signatures else next(iter(signatures))
            runner = it.get_signature_runner(key)
            self.signature_key = key
            self.subgraph = wrapper.GetSubgraphIndexFromSignature(key)
            details = {name: d for name, d in runner.get_input_details().items()}
        else:
            details = {normalize_name(d["name"]): d for d in it.get_input_details()}
        self.input_index = {name: int(d["index"]) for name, d in details.items()}
        vocab = self._vocab_sizes()
        self._specs = [
            InputSpec(name, tuple(int(x) for x in d["shape_signature"]), np.dtype(d["dtype"]),
                      vocab.get(int(d["index"])))
            for name, d in details.items()
        ]

    def _vocab_sizes(self) -> dict:
        return tflite_vocab_sizes(self.data, self.subgraph)

    def specs(self) -> list[InputSpec]:
        return list(self._specs)

    def allocate(self, feed: dict) -> None:
        values = self._match(feed)
        w, sg = self.interpreter._interpreter, self.subgraph  # noqa: SLF001
        try:
            for spec in self._specs:
                if spec.is_dynamic or tuple(values[spec.name].shape) != tuple(spec.shape):
                    w.ResizeInputTensor(self.input_index[spec.name], np.array(values[spec.name].shape, np.int32),
                                        False, sg)
            w.AllocateTensors(sg)
            for name, value in values.items():
                w.SetTensor(self.input_index[name], np.ascontiguousarray(value), sg)
        except Exception as exc:
            raise InvalidModelError(f"{self.name}: allocating tensors or setting inputs failed: {exc}") from None
        self.feed_by_index = {self.input_index[name]: value for name, value in values.items()}
        del w  # holding the wrapper makes `Interpreter.invoke()` refuse to run (its reference count check)
        if sg == 0:
            self._invoke = self.interpreter.invoke
        else:
            it = self.interpreter
            self._invoke = lambda: it._interpreter.Invoke(sg)  # noqa: SLF001

    def invoke(self) -> None:
        self._invoke()

    def size_bytes(self) -> tuple[int, int]:
        return len(self.data), gzip_size([self.data])

    def close(self) -> None:
        self.interpreter = None
        self._invoke = None


def tflite_vocab_sizes(data: bytes, subgraph: int = 0) -> dict:
    """{input tensor index: rows of the embedding table it indexes}, found by following CAST into GATHER."""
    from ai_edge_litert import schema_py_generated as fb

    try:
        model = fb.Model.GetRootAs(data, 0)
        sg = model.Subgraphs(subgraph)
        source = {sg.Inputs(i): sg.Inputs(i) for i in range(sg.InputsLength())}
        found = {}
        for o in range(sg.OperatorsLength()):
            op = sg.Operators(o)
            code = model.OperatorCodes(op.OpcodeIndex())
            builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
            ins = [op.Inputs(i) for i in range(op.InputsLength())]
            ids, table = None, None
            if builtin == fb.BuiltinOperator.CAST and ins and ins[0] in source:
                source[op.Outputs(0)] = source[ins[0]]
            elif builtin == fb.BuiltinOperator.GATHER and len(ins) >= 2:
                ids, table = ins[1], ins[0]
            elif builtin == fb.BuiltinOperator.EMBEDDING_LOOKUP and len(ins) >= 2:
                ids, table = ins[0], ins[1]
            if ids in source and table is not None and sg.Tensors(table).ShapeLength():
                rows = sg.Tensors(table).Shape(0)
                if rows > 0:
                    found[source[ids]] = min(found.get(source[ids], rows), rows)
        return found
    except Exception:  # a best-effort hint only
        return {}


def tflite_vocab_by_name(data: bytes) -> dict:
    """{normalized input name: embedding rows} of a TFLite model, without loading it in the interpreter."""
    from ai_edge_litert import schema_py_generated as fb

    try:
        model = fb.Model.GetRootAs(data, 0)
        names, subgraph = {}, 0
        if model.SignatureDefsLength():
            sig = model.SignatureDefs(0)
            for k in range(model.SignatureDefsLength()):
                if (model.SignatureDefs(k).SignatureKey() or b"") == b"serving_default":
                    sig = model.SignatureDefs(k)
            subgraph = sig.SubgraphIndex()
            for i in range(sig.InputsLength()):
                names[sig.Inputs(i).TensorIndex()] = sig.Inputs(i).Name().decode("utf-8", "replace")
        else:
            sg = model.Subgraphs(0)
            for i in range(sg.InputsLength()):
                t = sg.Inputs(i)
                names[t] = normalize_name(sg.Tensors(t).Name().decode("utf-8", "replace"))
        return {names[t]: rows for t, rows in tflite_vocab_sizes(data, subgraph).items() if t in names}
    except Exception:
        return {}


class TFRunner(Runner):
    """Runs a tf_keras model or a SavedModel through a traced `tf.function` with a fixed input signature."""

    def __init__(self, model, name: str | None = None):
        super().__init__(model, name)
        self.format = Format.KERAS if not isinstance(model, (str, os.PathLike)) else detect_format(model)

    def open(self) -> None:
        from tfspeed.compat import keras, tf

        self._tf = tf
        try:
            if self.path is None:
                self._keras = self.model
            elif self.format == Format.KERAS:
                self._keras = keras.models.load_model(self.path, compile=False)
            else:
                self._keras = None
                self._loaded = tf.saved_model.load(self.path)
        except Exception as exc:
            raise InvalidModelError(f"{self.name} cannot be loaded by TensorFlow: {type(exc).__name__}: "
                                    f"{exc}") from None
        self.threads = tf.config.threading.get_intra_op_parallelism_threads() or os.cpu_count()
        self.notes.append("threads: TensorFlow's process-wide intra-op setting, not the --threads value")
        if self._keras is not None:
            model = self._keras
            self._dict_input = isinstance(model.input, dict)
            names = list(model.input.keys()) if self._dict_input else list(model.input_names)
            tensors = list(model.input.values()) if self._dict_input else list(model.inputs)
            vocab = max((layer.input_dim for layer in _all_layers(model) if isinstance(layer, keras.layers.Embedding)),
                        default=None)
            self._names = [normalize_name(n) for n in names]
            self._specs = [InputSpec(n, tuple(-1 if d is None else int(d) for d in t.shape),
                                     np.dtype(t.dtype.as_numpy_dtype), vocab)
                           for n, t in zip(self._names, tensors)]
        else:
            if "serving_default" not in getattr(self._loaded, "signatures", {}):
                raise InvalidModelError(f"{self.name} is a SavedModel without a `serving_default` signature; "
                                        "export one with tf.saved_model.save(..., signatures=...).")
            self._fn = self._loaded.signatures["serving_default"]
            sig = self._fn.structured_input_signature[1]
            self._names = list(sig)
            self._specs = [InputSpec(normalize_name(n), tuple(-1 if d is None else int(d) for d in s.shape),
                                     np.dtype(s.dtype.as_numpy_dtype)) for n, s in sig.items()]

    def specs(self) -> list[InputSpec]:
        return list(self._specs)

    def allocate(self, feed: dict) -> None:
        tf = self._tf
        values = self._match(feed)
        try:
            if self._keras is not None:
                model, names, as_dict = self._keras, self._names, self._dict_input
                spec = [tf.TensorSpec(values[n].shape, values[n].dtype, name=n) for n in names]

                def call(*args):
                    x = dict(zip(names, args)) if as_dict else (args[0] if len(args) == 1 else list(args))
                    return model(x, training=False)

                self._fn = tf.function(call, input_signature=spec).get_concrete_function()
                self._args = [tf.constant(values[n]) for n in names]
                self._kwargs = {}
            else:
                self._args = []
                self._kwargs = {raw: tf.constant(values[normalize_name(raw)]) for raw in self._names}
        except Exception as exc:
            raise InvalidModelError(f"{self.name}: tracing the model failed: {type(exc).__name__}: {exc}") from None

    def invoke(self) -> None:
        self._fn(*self._args, **self._kwargs)

    def size_bytes(self) -> tuple[int, int]:
        if self.path is not None:
            return super().size_bytes()
        chunks = [np.ascontiguousarray(w).tobytes() for w in self._keras.get_weights()]
        return sum(len(c) for c in chunks), gzip_size(chunks)

    def close(self) -> None:
        self._fn = self._keras = self._loaded = None


def _all_layers(model):
    for layer in model.layers:
        yield layer
        if hasattr(layer, "layers"):
            yield from _all_layers(layer)


_ONNX_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
                "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(int8)": np.int8,
                "tensor(uint8)": np.uint8, "tensor(bool)": np.bool_}


class OnnxRunner(Runner):
    """Runs an `.onnx` file with onnxruntime on the CPU, `intra_op_num_threads=threads`."""

    format = Format.ONNX

    def __init__(self, model, threads: int = 1, name: str | None = None):
        super().__init__(model, name)
        self.threads = int(threads)

    def open(self) -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise InvalidModelError(
                f"{self.name} is an ONNX model and onnxruntime is not installed. Install the optional extra: "
                "pip install 'tfspeed[onnx]' (or pip install onnxruntime)."
            ) from None
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        try:
            self._session = ort.InferenceSession(self.path, options, providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise InvalidModelError(f"{self.name} cannot be loaded by onnxruntime: {exc}") from None
        self._raw = [i.name for i in self._session.get_inputs()]
        self._specs = [InputSpec(normalize_name(i.name),
                                 tuple(d if isinstance(d, int) else -1 for d in i.shape),
                                 np.dtype(_ONNX_DTYPES.get(i.type, np.float32)))
                       for i in self._session.get_inputs()]

    def specs(self) -> list[InputSpec]:
        return list(self._specs)

    def allocate(self, feed: dict) -> None:
        values = self._match(feed)
        self._feed = {raw: values[normalize_name(raw)] for raw in self._raw}

    def invoke(self) -> None:
        self._session.run(None, self._feed)

    def close(self) -> None:
        self._session = None


def make_runner(model, threads: int = 1, xnnpack: bool = True, name: str | None = None,
                isolate: bool = True, data: bytes | None = None) -> Runner:
    """The runner for `model` (path, tflite bytes or tf_keras model). TFLite files are verified before loading."""
    fmt = detect_format(model)
    if fmt == Format.TFLITE:
        if data is None:
            data = bytes(model) if isinstance(model, (bytes, bytearray, memoryview)) else verify.read_model_bytes(model)
            label = name or (Path(model).name if isinstance(model, (str, os.PathLike)) else "<bytes>")
            verify.verify_tflite(data, label)
            if isolate:
                verify.probe_tflite(data, label)
        return TFLiteRunner(model, threads=threads, xnnpack=xnnpack, name=name, data=data)
    if fmt == Format.ONNX:
        return OnnxRunner(model, threads=threads, name=name)
    return TFRunner(model, name=name)
