"""TFLite metadata for a BERT text classifier: the file an app runs on raw text with MediaPipe Tasks' `TextClassifier`.

`add_metadata(tflite, vocab, labels)` returns the file MediaPipe (and the TFLite Task Library's `BertNLClassifier`)
expects:

- a float32 `probability` output: a SOFTMAX op is appended after the `logits` output, so the file computes exactly
  what the evaluated one does and then normalises it (argmax unchanged);
- a `TFLITE_METADATA` buffer (the `M001` flatbuffer of `metadata_schema.fbs`, the schema MediaPipe and the TFLite
  Support library share): the three int32 inputs named `ids`, `mask` and `segment_ids` in the subgraph's input
  order, a `BertTokenizer` input process unit whose `VOCABULARY` file is the model's own `vocab.txt`, and the output
  with its `TENSOR_AXIS_LABELS` file `labels.txt`;
- `vocab.txt` and `labels.txt` packed as a zip archive appended to the flatbuffer (TFLite ignores trailing bytes; the
  metadata readers open the file as a zip).

The flatbuffer is written here with `flatbuffers.Builder` rather than with MediaPipe's `metadata_writers`: mediapipe
1.2.x pins absl-py~=2.3 while tensorflow-model-optimization 0.8.1 pins absl-py~=1.2 (pip then resolves TFMOT 0.7.3
and numpy 1.26), and its writer does not import in 1.2.2/1.2.3 (the wheel lacks `_pywrap_metadata_version`). The
fields written are the ones MediaPipe's writer writes (checked field by field against it in
`tests/export/test_metadata.py`), and the files load in MediaPipe's `TextClassifier` (tested on raw strings).

`read_metadata(tflite)` reads it back (`TextMetadata`: vocabulary, labels, input roles), for `TextClassifier` and
`tfspeed predict`.
"""

from __future__ import annotations

import dataclasses
import io
import zipfile
from pathlib import Path
from typing import Optional, Sequence

import flatbuffers
import numpy as np
from flatbuffers import number_types
from flatbuffers.table import Table

from tfspeed.export.ops import read_tflite

METADATA_NAME = "TFLITE_METADATA"
METADATA_IDENTIFIER = b"M001"
# The parser version that reads BertTokenizerOptions (metadata_schema.fbs: "Added in: 1.1.0").
MIN_PARSER_VERSION = "1.1.0"
VOCAB_FILE = "vocab.txt"
LABELS_FILE = "labels.txt"
OUTPUT_NAME = "probability"
# Roles MediaPipe looks the inputs up by (metadata tensor names) and the tfspeed input each one is.
ROLES = {"ids": "input_word_ids", "mask": "input_mask", "segment_ids": "input_type_ids"}
REQUIRED_TOKENS = ("[CLS]", "[SEP]", "[PAD]", "[UNK]")

# metadata_schema.fbs enums.
_FEATURE_PROPERTIES = 1  # ContentProperties.FeatureProperties
_BERT_TOKENIZER = 4  # ProcessUnitOptions.BertTokenizerOptions
_TENSOR_AXIS_LABELS = 2  # AssociatedFileType
_VOCABULARY = 5
# schema.fbs
_SOFTMAX = 25
_SOFTMAX_OPTIONS = 9
_FLOAT32, _INT32, _UINT8 = 0, 2, 3
_TYPE_NAMES = {0: "float32", 1: "float16", 2: "int32", 3: "uint8", 4: "int64", 7: "int16", 9: "int8", 10: "float64"}

_MODEL_NAME = "TextClassifier"
_MODEL_DESCRIPTION = "Classify the input text into a set of known categories."


class MetadataError(ValueError):
    """A file, vocabulary or label list that cannot make (or is not) a text classifier with metadata."""


@dataclasses.dataclass(frozen=True)
class TextMetadata:
    """What the metadata of a text-classifier .tflite says.

    Attributes:
        vocab: the WordPiece vocabulary, in id order.
        labels: the label names, in output order.
        inputs: tensor name of each role (`ids`, `mask`, `segment_ids`).
        output: the output tensor's name.
        name: the model name in the metadata.
        version: the metadata's version string (tfspeed writes its own version).
    """

    vocab: tuple
    labels: tuple
    inputs: dict
    output: str
    name: str = ""
    version: str = ""


def _vocab_tokens(vocab) -> list:
    if isinstance(vocab, (str, Path)):
        path = Path(vocab)
        if not path.is_file():
            raise MetadataError(f"Expected a WordPiece vocab.txt for `vocab`. Received: {str(path)!r}, no such file.")
        try:
            tokens = path.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError as e:
            raise MetadataError(f"Expected a UTF-8 vocab.txt for `vocab`. Received: {str(path)!r}, not UTF-8 "
                                f"(byte {e.start}).") from e
        where = str(path)
    else:
        tokens, where = [str(t) for t in vocab], "the token list"
    missing = [t for t in REQUIRED_TOKENS if t not in tokens]
    if missing:
        raise MetadataError(f"Expected a BERT WordPiece vocabulary with {', '.join(REQUIRED_TOKENS)} for `vocab`. "
                            f"Received: {where} ({len(tokens)} tokens) without {', '.join(missing)}.")
    return tokens


def _check_labels(labels, num_outputs: int) -> list:
    if isinstance(labels, str) or not isinstance(labels, Sequence):
        raise MetadataError(f"Expected a list of label names for `labels`. Received: {labels!r}")
    labels = [str(x) for x in labels]
    bad = [x for x in labels if not x.strip() or "\n" in x or "\r" in x]
    if bad:
        raise MetadataError(f"Expected non-empty, single-line label names for `labels`. Received: {bad!r}")
    if len(set(labels)) != len(labels):
        raise MetadataError(f"Expected distinct label names for `labels`. Received: {labels!r}")
    if len(labels) != num_outputs:
        raise MetadataError(f"Expected {num_outputs} label names for `labels` (the model's output has {num_outputs} "
                            f"classes). Received: {len(labels)}: {labels!r}")
    return labels


# --- writing -------------------------------------------------------------------------------------------------------


def _string_vector(b: flatbuffers.Builder, offsets: list) -> int:
    b.StartVector(4, len(offsets), 4)
    for off in reversed(offsets):
        b.PrependUOffsetTRelative(off)
    return b.EndVector()


def _associated_file(b, name: str, description: str, kind: int) -> int:
    name_off, desc_off = b.CreateString(name), b.CreateString(description)
    b.StartObject(5)
    b.PrependUOffsetTRelativeSlot(0, name_off, 0)
    b.PrependUOffsetTRelativeSlot(1, desc_off, 0)
    b.PrependInt8Slot(2, kind, 0)
    return b.EndObject()


def _feature_content(b) -> int:
    b.StartObject(0)  # FeatureProperties {}
    props = b.EndObject()
    b.StartObject(3)  # Content
    b.PrependUint8Slot(0, _FEATURE_PROPERTIES, 0)
    b.PrependUOffsetTRelativeSlot(1, props, 0)
    return b.EndObject()


def _float_vector(b, values) -> int:
    b.StartVector(4, len(values), 4)
    for v in reversed(values):
        b.PrependFloat32(v)
    return b.EndVector()


def _tensor(b, name: str, description: str, files: Sequence[int] = (), value_range=None) -> int:
    name_off, desc_off = b.CreateString(name), b.CreateString(description)
    content = _feature_content(b)
    bounds = [_float_vector(b, [v]) for v in value_range] if value_range else None
    b.StartObject(2)  # Stats: empty for inputs (as MediaPipe's writer), [0, 1] for probabilities
    if bounds:
        b.PrependUOffsetTRelativeSlot(0, bounds[1], 0)
        b.PrependUOffsetTRelativeSlot(1, bounds[0], 0)
    stats = b.EndObject()
    files_off = _string_vector(b, list(files)) if files else None
    b.StartObject(7)
    b.PrependUOffsetTRelativeSlot(0, name_off, 0)
    b.PrependUOffsetTRelativeSlot(1, desc_off, 0)
    b.PrependUOffsetTRelativeSlot(3, content, 0)
    b.PrependUOffsetTRelativeSlot(5, stats, 0)
    if files_off is not None:
        b.PrependUOffsetTRelativeSlot(6, files_off, 0)
    return b.EndObject()


_INPUT_DESCRIPTIONS = {
    "ids": "Tokenized ids of the input text.",
    "mask": "Mask with 1 for real tokens and 0 for padding tokens.",
    "segment_ids": "0 for the first sequence, 1 for the second sequence if exists.",
}


def metadata_flatbuffer(input_roles: Sequence[str], version: str) -> bytes:
    """The `M001` metadata flatbuffer of a BERT text classifier whose subgraph inputs have `input_roles`, in order."""
    b = flatbuffers.Builder(1024)
    vocab_file = _associated_file(b, VOCAB_FILE, "Vocabulary file to convert natural language words to embedding "
                                  "vectors.", _VOCABULARY)
    vocab_files = _string_vector(b, [vocab_file])
    b.StartObject(1)  # BertTokenizerOptions
    b.PrependUOffsetTRelativeSlot(0, vocab_files, 0)
    tokenizer = b.EndObject()
    b.StartObject(2)  # ProcessUnit
    b.PrependUint8Slot(0, _BERT_TOKENIZER, 0)
    b.PrependUOffsetTRelativeSlot(1, tokenizer, 0)
    process_unit = b.EndObject()
    inputs = [_tensor(b, role, _INPUT_DESCRIPTIONS[role]) for role in input_roles]
    labels_file = _associated_file(b, LABELS_FILE, "Labels for categories that the model can recognize.",
                                   _TENSOR_AXIS_LABELS)
    output = _tensor(b, OUTPUT_NAME, "Score of the labels respectively.", [labels_file], value_range=(0.0, 1.0))
    inputs_off, outputs_off = _string_vector(b, inputs), _string_vector(b, [output])
    units_off = _string_vector(b, [process_unit])
    b.StartObject(10)  # SubGraphMetadata
    b.PrependUOffsetTRelativeSlot(2, inputs_off, 0)
    b.PrependUOffsetTRelativeSlot(3, outputs_off, 0)
    b.PrependUOffsetTRelativeSlot(5, units_off, 0)
    subgraph = b.EndObject()
    name, desc = b.CreateString(_MODEL_NAME), b.CreateString(_MODEL_DESCRIPTION)
    version_off, author = b.CreateString(version), b.CreateString("tfspeed")
    parser = b.CreateString(MIN_PARSER_VERSION)
    subgraphs = _string_vector(b, [subgraph])
    b.StartObject(8)  # ModelMetadata
    b.PrependUOffsetTRelativeSlot(0, name, 0)
    b.PrependUOffsetTRelativeSlot(1, desc, 0)
    b.PrependUOffsetTRelativeSlot(2, version_off, 0)
    b.PrependUOffsetTRelativeSlot(3, subgraphs, 0)
    b.PrependUOffsetTRelativeSlot(4, author, 0)
    b.PrependUOffsetTRelativeSlot(7, parser, 0)
    root = b.EndObject()
    b.Finish(root, file_identifier=METADATA_IDENTIFIER)
    return bytes(b.Output())


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("tfspeed")
    except metadata.PackageNotFoundError:  # a source checkout that is not installed
        return "unknown"


def _role(name: str, roles: dict) -> Optional[str]:
    found = [role for role, key in roles.items() if key in name]
    return found[0] if len(found) == 1 else None


BUCKET_SIGNATURE = "bucket_{}"  # the signature of each length bucket in a file of `tfspeed.export.buckets`


def bucket_length(signature) -> Optional[int]:
    """The length of a bucket signature's name (`"bucket_32"` -> 32), or None for another name."""
    name = signature.decode() if isinstance(signature, bytes) else str(signature)
    prefix = BUCKET_SIGNATURE.format("")
    return int(name[len(prefix):]) if name.startswith(prefix) and name[len(prefix):].isdigit() else None


def _signature_of(model, subgraph: int):
    """The signature def that runs `subgraph`, or None."""
    return next((s for s in model.signatureDefs or [] if s.subgraphIndex == subgraph), None)


def _check_subgraphs(model) -> None:
    """One subgraph, or a bucket file (`tfspeed.export.buckets`) whose first subgraph is its longest bucket: a
    runtime that runs one signature runs the first, so that one must take every text the file is meant for.
    (MediaPipe's TextClassifier refuses a file of several subgraphs; tfspeed's runs each text on its bucket.)"""
    if len(model.subgraphs) == 1:
        return
    sigs = model.signatureDefs or []
    keys = [s.signatureKey.decode() if isinstance(s.signatureKey, bytes) else s.signatureKey for s in sigs]
    lengths = {s.subgraphIndex: bucket_length(k) for s, k in zip(sigs, keys) if bucket_length(k) is not None}
    if len(lengths) != len(model.subgraphs) or lengths.get(0) != max(lengths.values()):
        raise MetadataError(f"Expected a .tflite with one subgraph, or a bucket file whose first subgraph is its "
                            f"longest bucket (`export_buckets`). Received: {len(model.subgraphs)} subgraphs, "
                            f"signatures {keys}.")


def add_metadata(tflite, vocab, labels, roles: Optional[dict] = None, probabilities: bool = True) -> bytes:
    """A .tflite text classifier with a softmax output and MediaPipe metadata (tokenizer, vocabulary, labels).

    Args:
        tflite: .tflite bytes or path of a tfspeed export (or any BERT classifier with 3 int32 inputs of batch 1
            and one float32 / uint8 output of shape [1, num_labels]).
        vocab: the model's WordPiece `vocab.txt` (path) or its tokens; it must hold [CLS], [SEP], [PAD] and [UNK].
        labels: label names in output order (as many as the model has outputs).
        roles: which input tensor is which, as `{"ids": "substring of its name", "mask": ..., "segment_ids": ...}`.
            Defaults to tfspeed's names (`input_word_ids`, `input_mask`, `input_type_ids`).
        probabilities: append a SOFTMAX after the output (MediaPipe applies none; its scores are the output).
            Defaults to `True`; pass `False` for a file whose output already sums to 1.

    Returns:
        The new .tflite bytes (the input is untouched). A file that already has metadata gets it replaced.

    Raises:
        MetadataError: the model has not the inputs/outputs MediaPipe accepts, the vocabulary misses a special token,
            or the labels do not match the output.
    """
    from ai_edge_litert import schema_py_generated as fb
    from ai_edge_litert.tools import flatbuffer_utils

    data = read_tflite(tflite)
    tokens = _vocab_tokens(vocab)
    roles = dict(roles or ROLES)
    if set(roles) != set(ROLES):
        raise MetadataError(f"Expected `roles` with the keys {sorted(ROLES)}. Received: {sorted(roles)}")
    model = flatbuffer_utils.read_model_from_bytearray(bytearray(data))
    _check_subgraphs(model)
    input_roles = labels_checked = None
    for k, graph in enumerate(model.subgraphs):  # a bucket file: every signature gets the same checks and softmax
        roles_k, labels_checked = _prepare_graph(model, k, graph, roles, labels, probabilities, fb)
        input_roles = roles_k if k == 0 else input_roles  # the metadata describes the first (MediaPipe's) subgraph
    meta = metadata_flatbuffer(input_roles, version=f"tfspeed {_version()}")
    _set_metadata_buffer(model, meta, fb)
    packed = bytes(flatbuffer_utils.convert_object_to_bytearray(model))
    stream = io.BytesIO()
    stream.write(packed)
    with zipfile.ZipFile(stream, "a") as archive:  # appended, as MediaPipe's MetadataPopulator does
        archive.writestr(VOCAB_FILE, "\n".join(tokens) + "\n")
        archive.writestr(LABELS_FILE, "\n".join(labels_checked) + "\n")
    return stream.getvalue()


def _prepare_graph(model, k: int, graph, roles: dict, labels, probabilities: bool, fb) -> tuple:
    """Checks one subgraph's inputs and output for MediaPipe and appends the softmax: (input roles, labels)."""
    names = {i: graph.tensors[i].name.decode() if isinstance(graph.tensors[i].name, bytes) else graph.tensors[i].name
             for i in list(graph.inputs) + list(graph.outputs)}
    input_roles = [_role(names[i], roles) for i in graph.inputs]
    if len(graph.inputs) != 3 or sorted(r or "" for r in input_roles) != sorted(ROLES):
        raise MetadataError("Expected a BERT classifier with 3 inputs whose names contain "
                            f"{', '.join(repr(v) for v in roles.values())} (ids, mask, segment ids; pass `roles` for "
                            f"other names). Received inputs: {[names[i] for i in graph.inputs]}")
    for i in graph.inputs:
        t = graph.tensors[i]
        shape = list(t.shape)
        if t.type != _INT32 or len(shape) != 2 or shape[0] != 1:
            raise MetadataError(f"Expected int32 inputs of shape [1, seq_length] (MediaPipe runs batch 1). Received: "
                                f"{names[i]} {_TYPE_NAMES.get(t.type, t.type)} {shape}")
    if len(graph.outputs) != 1:
        raise MetadataError(f"Expected a classifier with one output. Received: {[names[i] for i in graph.outputs]}")
    out = graph.tensors[graph.outputs[0]]
    out_shape = list(out.shape)
    if out.type not in (_FLOAT32, _UINT8) or len(out_shape) != 2 or out_shape[0] != 1:
        raise MetadataError(f"Expected a float32 or uint8 output of shape [1, num_labels] (MediaPipe rejects int8 "
                            f"outputs). Received: {names[graph.outputs[0]]} {_TYPE_NAMES.get(out.type, out.type)} "
                            f"{out_shape}")
    labels = _check_labels(labels, int(out_shape[1]))
    if probabilities:
        if out.type != _FLOAT32:
            raise MetadataError("Expected a float32 output to append a softmax to. Received: "
                                f"{_TYPE_NAMES.get(out.type, out.type)}; pass probabilities=False.")
        _append_softmax(model, k, graph, fb)
    return input_roles, labels


def _append_softmax(model, subgraph: int, graph, fb) -> None:
    """SOFTMAX(beta=1) from the output tensor into a new float32 `probability` tensor, made the graph's output."""
    codes = model.operatorCodes
    index = next((k for k, c in enumerate(codes) if max(c.builtinCode, c.deprecatedBuiltinCode) == _SOFTMAX
                  and c.version == 1), None)
    if index is None:
        code = fb.OperatorCodeT()
        code.builtinCode, code.deprecatedBuiltinCode, code.version = _SOFTMAX, _SOFTMAX, 1
        codes.append(code)
        index = len(codes) - 1
    source = graph.outputs[0]
    old = graph.tensors[source]
    tensor = fb.TensorT()
    tensor.shape = list(old.shape)
    tensor.shapeSignature = list(old.shapeSignature) if old.shapeSignature is not None else None
    tensor.type, tensor.buffer, tensor.name = _FLOAT32, 0, OUTPUT_NAME
    graph.tensors.append(tensor)
    target = len(graph.tensors) - 1
    options = fb.SoftmaxOptionsT()
    options.beta = 1.0
    op = fb.OperatorT()
    op.opcodeIndex, op.inputs, op.outputs = index, [source], [target]
    op.builtinOptionsType, op.builtinOptions = _SOFTMAX_OPTIONS, options
    graph.operators.append(op)
    graph.outputs = [target]
    sig = _signature_of(model, subgraph)
    if sig is not None:
        entry = fb.TensorMapT()
        entry.name, entry.tensorIndex = OUTPUT_NAME, target
        sig.outputs = [entry]


def _set_metadata_buffer(model, meta: bytes, fb) -> None:
    buffer = fb.BufferT()
    buffer.data = np.frombuffer(meta, np.uint8)
    for entry in model.metadata or []:
        name = entry.name.decode() if isinstance(entry.name, bytes) else entry.name
        if name == METADATA_NAME:
            model.buffers[entry.buffer] = buffer
            return
    model.buffers.append(buffer)
    entry = fb.MetadataT()
    entry.name, entry.buffer = METADATA_NAME, len(model.buffers) - 1
    model.metadata = list(model.metadata or []) + [entry]


# --- reading -------------------------------------------------------------------------------------------------------


def _field(tab: Table, slot: int) -> int:
    return tab.Offset(4 + 2 * slot)


def _string(tab: Table, slot: int) -> str:
    o = _field(tab, slot)
    return tab.String(o + tab.Pos).decode("utf-8") if o else ""


def _tables(tab: Table, slot: int) -> list:
    o = _field(tab, slot)
    if not o:
        return []
    start = tab.Vector(o)
    return [Table(tab.Bytes, tab.Indirect(start + 4 * k)) for k in range(tab.VectorLen(o))]


def _child(tab: Table, slot: int) -> Optional[Table]:
    o = _field(tab, slot)
    return Table(tab.Bytes, tab.Indirect(o + tab.Pos)) if o else None


def _uint8(tab: Table, slot: int) -> int:
    o = _field(tab, slot)
    return tab.Get(number_types.Uint8Flags, o + tab.Pos) if o else 0


def metadata_buffer(tflite) -> Optional[bytes]:
    """The raw `TFLITE_METADATA` flatbuffer of a .tflite, or `None` when it has none."""
    from ai_edge_litert import schema_py_generated as fb

    data = read_tflite(tflite)
    try:
        model = fb.Model.GetRootAs(data, 0)
        entries = [model.Metadata(k) for k in range(model.MetadataLength())]
    except Exception as e:  # a truncated or foreign file: flatbuffers raises struct/index errors
        raise MetadataError(f"Expected a .tflite flatbuffer for `tflite`. Received: a file it cannot read "
                            f"({e}).") from e
    for entry in entries:
        if entry.Name() and entry.Name().decode() == METADATA_NAME:
            buf = model.Buffers(entry.Buffer())
            if buf.Offset():
                return data[buf.Offset(): buf.Offset() + buf.Size()]
            return buf.DataAsNumpy().tobytes()
    return None


def read_metadata(tflite) -> Optional[TextMetadata]:
    """The text-classifier metadata of a .tflite (`TextMetadata`), or `None` when the file has no metadata.

    Raises:
        MetadataError: the file has metadata but not a BERT tokenizer, or its packed files are missing.
    """
    data = read_tflite(tflite)
    raw = metadata_buffer(data)
    if raw is None:
        return None
    root = Table(raw, flatbuffers.encode.Get(number_types.UOffsetTFlags.packer_type, raw, 0))
    subgraphs = _tables(root, 3)
    if not subgraphs:
        raise MetadataError("Expected TFLite metadata with a subgraph. Received: metadata without one.")
    graph = subgraphs[0]
    input_names = [_string(t, 0) for t in _tables(graph, 2)]
    vocab_name = None
    for unit in _tables(graph, 5):
        if _uint8(unit, 0) == _BERT_TOKENIZER:
            files = _tables(_child(unit, 1), 0)
            vocab_name = _string(files[0], 0) if files else None
    if vocab_name is None:
        raise MetadataError("Expected metadata with a BertTokenizer input process unit (a BERT text classifier). "
                            f"Received: inputs {input_names} without one.")
    outputs = _tables(graph, 3)
    label_name = None
    for f in _tables(outputs[0], 6) if outputs else []:
        if _uint8(f, 2) == _TENSOR_AXIS_LABELS:
            label_name = _string(f, 0)
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        vocab = archive.read(vocab_name).decode("utf-8").splitlines()
        labels = archive.read(label_name).decode("utf-8").splitlines() if label_name else []
    except (zipfile.BadZipFile, KeyError) as e:
        raise MetadataError(f"Expected the files the metadata names ({vocab_name}, {label_name}) packed in the "
                            f".tflite. Received: {e}") from e
    inputs, output = _model_io(data, input_names)
    return TextMetadata(vocab=tuple(vocab), labels=tuple(labels), inputs=inputs, output=output,
                        name=_string(root, 0), version=_string(root, 2))


def _model_io(data: bytes, roles: list):
    from ai_edge_litert import schema_py_generated as fb

    model = fb.Model.GetRootAs(data, 0)
    graph = model.Subgraphs(0)
    names = [graph.Tensors(graph.Inputs(k)).Name().decode() for k in range(graph.InputsLength())]
    output = graph.Tensors(graph.Outputs(0)).Name().decode()
    return dict(zip(roles, names)), output


def add_model_metadata(tflite, model_dir) -> bytes:
    """`add_metadata` with the vocabulary and label names of the tfspeed model directory the file was made from."""
    from tfspeed import artifacts

    info = artifacts.load_info(model_dir)
    if not info.vocab_path:
        raise MetadataError(f"Expected a model directory with a vocab.txt for the metadata's tokenizer. Received: "
                            f"{str(model_dir)!r} without one.")
    reason = metadata_refused(info.text_pair, info.lower_case)
    if reason is not None:
        raise MetadataError(f"Expected an uncased model of single texts for TFLite metadata. Received: "
                            f"{str(model_dir)!r}, {reason}. Export it without metadata and run it with "
                            "`TextClassifier(file, vocab=..., labels=...)` / `tfspeed predict --vocab --labels`.")
    return add_metadata(tflite, info.vocab_path, info.label_names)


def metadata_refused(text_pair: bool, lower_case: bool):
    """Why a model's file cannot carry the TFLite metadata MediaPipe's TextClassifier reads (None if it can): that
    tokenizer takes one text and lower-cases it, so a sentence-pair or cased model would be fed other token ids than
    it was trained on."""
    if text_pair:
        return "a sentence-pair model (MediaPipe's TextClassifier tokenizes one text)"
    if not lower_case:
        return "a cased model (MediaPipe's BERT tokenizer lower-cases every text)"
    return None


def metadata_bytes(tflite) -> int:
    """Bytes of a file's metadata: the `TFLITE_METADATA` flatbuffer and the appended archive of its files (vocab.txt,
    labels.txt). 0 for a file without metadata. (Not the size difference with the file before `add_metadata`: the
    flatbuffer is re-packed, which drops the empty buffers the converter leaves.)"""
    data = read_tflite(tflite)
    raw = metadata_buffer(data)
    if raw is None:
        return 0
    try:
        infos = zipfile.ZipFile(io.BytesIO(data)).infolist()
    except zipfile.BadZipFile:
        infos = []
    archive = len(data) - min(i.header_offset for i in infos) if infos else 0
    return len(raw) + archive
