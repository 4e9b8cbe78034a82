"""Hugging Face BERT directories, both ways: read one as a tfspeed handle, write a tfspeed BERT back as one.

In: a directory with `config.json` (model_type "bert"), the weights as safetensors (`model.safetensors`, or shards
listed in `model.safetensors.index.json`), `vocab.txt`, and optionally `tokenizer_config.json` (`do_lower_case`).
`BertModel`, `BertForSequenceClassification` (its head is returned too), `BertForMaskedLM` / `BertForPreTraining`
(their heads are ignored), with or without `bert.` prefixes and pooler, and sentence-transformers folders (the BERT in
the root or in the `Transformer` module's folder, e.g. `0_Transformer/`) are read. PyTorch pickles are never loaded.

`tfspeed.hub.resolve`, `vocab_path`, `import_encoder`, `build_classifier_from` and the CLI's `--model DIR` accept such a
directory through `tfspeed.hub.handles.FOREIGN_FORMATS`, which calls `claims`, `fingerprint`, `read`, `vocab_path` and
`lower_case` of this module.

Out: `export_huggingface(model, out, vocab_path=...)` writes `config.json`, `model.safetensors`, `vocab.txt` and
`tokenizer_config.json` that `transformers.AutoModel` / `AutoTokenizer` read.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import warnings
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from tfspeed import _io, _wheels
from tfspeed.compat import keras
from tfspeed.hub import weights
from tfspeed.models.bert import _unwrap, build_classifier, build_encoder, config_of, is_bert

NAME = "huggingface"
"""The cache folder of converted directories, `<cache>/huggingface/<fingerprint>/encoder`."""
CONVERTER_VERSION = 1
"""Part of every fingerprint: a change of the conversion makes new cache entries."""

CONFIG = "config.json"
WEIGHTS = "model.safetensors"
INDEX = "model.safetensors.index.json"
VOCAB = "vocab.txt"
TOKENIZER_CONFIG = "tokenizer_config.json"
# Weight files of other formats, never read: what each is, for the error message.
_OTHER_WEIGHTS = {"pytorch_model.bin": "a PyTorch pickle", "pytorch_model.bin.index.json": "sharded PyTorch pickles",
                  "tf_model.h5": "a Keras h5 file", "tf_model.h5.index.json": "sharded Keras h5 files",
                  "flax_model.msgpack": "a Flax checkpoint", "model.ckpt.index": "a TF1 checkpoint"}
_SAFETENSORS_HOWTO = ("Convert it once where torch is installed: `from transformers import AutoModel; "
                      "AutoModel.from_pretrained(DIR).save_pretrained(DIR, safe_serialization=True)` (use "
                      "AutoModelForSequenceClassification to keep a classification head).")
_DEFAULT_LABEL = "LABEL_{}"


# ----------------------------------------------------------------------------------------------------------------------
# Finding the files
# ----------------------------------------------------------------------------------------------------------------------

def bert_folder(path) -> Optional[Path]:
    """The folder holding the model's `config.json`: `path` itself, or the sentence-transformers `Transformer` module
    folder named in `path/modules.json` (or `path/0_Transformer`); None when there is none."""
    path = Path(path)
    if not path.is_dir():
        return None
    if (path / CONFIG).is_file():
        return path
    modules = path / "modules.json"
    if modules.is_file():
        try:
            entries = json.loads(modules.read_text())
        except (ValueError, UnicodeDecodeError):
            entries = []
        for entry in entries if isinstance(entries, list) else []:
            if isinstance(entry, dict) and str(entry.get("type", "")).endswith(".Transformer"):
                folder = path / str(entry.get("path", ""))
                if (folder / CONFIG).is_file():
                    return folder
    if (path / "0_Transformer" / CONFIG).is_file():
        return path / "0_Transformer"
    return None


def claims(path) -> bool:
    """True when `path` is a directory laid out like a Hugging Face checkpoint (a `config.json`, whatever its model
    type) and is not a SavedModel: the directories this module answers for, with a clear error when it cannot read
    them."""
    path = Path(path)
    return path.is_dir() and not (path / "saved_model.pb").is_file() and bert_folder(path) is not None


def _read_json(path: Path, argument: str = "handle") -> dict:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"Expected a JSON object in {str(path)!r} for `{argument}`. Received: a file that is not "
                         f"valid JSON ({e}).") from None
    if not isinstance(value, dict):
        raise ValueError(f"Expected a JSON object in {str(path)!r} for `{argument}`. Received: a JSON "
                         f"{type(value).__name__}.")
    return value


def _names_bert(config: dict) -> bool:
    model_type = config.get("model_type")
    architectures = config.get("architectures") or []
    if model_type is not None:
        return model_type == "bert"
    return any(str(a).startswith("Bert") for a in architectures)


def is_huggingface_dir(path) -> bool:
    """True when `path` is a Hugging Face directory whose `config.json` names a BERT (`model_type` "bert", or, without
    a model type, an architecture `Bert...`). Other checks (weights, vocabulary) come when it is read.

    Example:

    >>> is_huggingface_dir("no/such/dir")
    False
    """
    folder = bert_folder(path)
    if folder is None or (Path(path) / "saved_model.pb").is_file():
        return False
    try:
        return _names_bert(_read_json(folder / CONFIG))
    except ValueError:
        return False


class _Layout:
    """The checked files of a Hugging Face BERT directory (no weights read yet)."""

    def __init__(self, path):
        self.root = Path(path)
        folder = bert_folder(self.root)
        if folder is None:
            raise ValueError(f"Expected a Hugging Face model directory (with config.json) for `handle`. Received: "
                             f"{str(path)!r}, which has no config.json (nor a sentence-transformers Transformer "
                             "module folder with one).")
        self.folder = folder
        self.config_file = folder / CONFIG
        self.config = _read_json(self.config_file)
        if not _names_bert(self.config):
            raise ValueError(_other_architecture_message(self.config, self.config_file))
        self.vocab = next((d / VOCAB for d in (folder, self.root) if (d / VOCAB).is_file()), None)
        if self.vocab is None:
            raise ValueError(f"Expected the WordPiece vocabulary {VOCAB} in {str(folder)!r} for `handle` (BERT token "
                             f"ids are its line numbers). Received: no {VOCAB}; files found: {_listing(folder)}. Save "
                             "it with `AutoTokenizer.from_pretrained(DIR).save_pretrained(DIR)` where transformers "
                             "is installed.")
        self.weights = self._weight_files()

    def _weight_files(self) -> list:
        folder = self.folder
        if (folder / WEIGHTS).is_file():
            return [folder / WEIGHTS]
        if (folder / INDEX).is_file():
            index = _read_json(folder / INDEX)
            weight_map = index.get("weight_map")
            if not isinstance(weight_map, dict) or not weight_map:
                raise ValueError(f"Expected a `weight_map` of tensor names to shard files in {str(folder / INDEX)!r}. "
                                 f"Received: fields {sorted(index)}.")
            shards = sorted({folder / str(f) for f in weight_map.values()})
            missing = [s.name for s in shards if not s.is_file()]
            if missing:
                raise ValueError(f"Expected every shard listed in {str(folder / INDEX)!r}. Received: {missing} "
                                 "missing (an interrupted download?).")
            return shards
        others = [f"{name} ({what})" for name, what in _OTHER_WEIGHTS.items() if (folder / name).exists()]
        others += [p.name for p in sorted(folder.glob("pytorch_model-*.bin"))][:3]
        if others:
            raise ValueError(f"Expected the weights as safetensors ({WEIGHTS} or {INDEX}) in {str(folder)!r} for "
                             f"`handle`. Received: only {', '.join(others)}, which tfspeed does not load (unpickling "
                             f"PyTorch files can run arbitrary code). {_SAFETENSORS_HOWTO}")
        raise ValueError(f"Expected the weights as safetensors ({WEIGHTS} or {INDEX}) in {str(folder)!r} for "
                         f"`handle`. Received: no weight file; files found: {_listing(folder)}.")


def _listing(folder: Path, limit: int = 12) -> list:
    names = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
    return names[:limit] + (["..."] if len(names) > limit else [])


def _other_architecture_message(config: dict, path: Path) -> str:
    model_type, architectures = config.get("model_type"), config.get("architectures")
    fields = sorted(config)
    shown = fields[:30] + (["..."] if len(fields) > 30 else [])
    return (f"Expected a BERT checkpoint (config.json with model_type 'bert') for `handle`. Received: "
            f"{str(path)!r} with model_type={model_type!r}, architectures={architectures!r} (fields found: {shown}). "
            "tfspeed converts BERT-architecture checkpoints only: RoBERTa, DistilBERT, ALBERT, ELECTRA and others "
            "differ in weights, embeddings or tokenizer.")


# ----------------------------------------------------------------------------------------------------------------------
# The FOREIGN_FORMATS protocol: claims (above), fingerprint, vocab_path, lower_case, read
# ----------------------------------------------------------------------------------------------------------------------

_DIGESTS: dict = {}  # (path, size, mtime_ns) -> sha256, so a resolve in the same process hashes a file once


def _sha256(path: Path) -> str:
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _DIGESTS:
        _DIGESTS[key] = _wheels.sha256_of(path)
    return _DIGESTS[key]


def fingerprint(path) -> str:
    """The cache key of the directory `path`: a sha256 over the checksums of the files the conversion reads (config,
    vocabulary, tokenizer config, weights) and the converter version."""
    layout = _Layout(path)
    files = [layout.config_file, layout.vocab, *layout.weights]
    files += [d / TOKENIZER_CONFIG for d in (layout.folder,) if (d / TOKENIZER_CONFIG).is_file()]
    h = hashlib.sha256(f"{NAME}-{CONVERTER_VERSION}\n".encode())
    for f in files:
        h.update(f"{f.name}:{_sha256(f)}\n".encode())
    return h.hexdigest()[:24]


def vocab_path(path) -> Path:
    """The `vocab.txt` of the Hugging Face BERT directory `path` (the directory is checked first)."""
    return _Layout(path).vocab


def lower_case(path) -> bool:
    """Whether the tokenizer of the directory `path` lower-cases: `do_lower_case` of `tokenizer_config.json`, else the
    `lowercase` of `tokenizer.json`'s normalizer, else `True` (BERT uncased); a sentence-transformers
    `sentence_bert_config.json` with `do_lower_case: true` lower-cases too."""
    layout = _Layout(path)
    value = None
    for folder in (layout.folder, layout.root):
        tok = folder / TOKENIZER_CONFIG
        if value is None and tok.is_file() and isinstance(_read_json(tok).get("do_lower_case"), bool):
            value = _read_json(tok)["do_lower_case"]
        fast = folder / "tokenizer.json"
        if value is None and fast.is_file():
            normalizer = _read_json(fast).get("normalizer") or {}
            if isinstance(normalizer, dict) and isinstance(normalizer.get("lowercase"), bool):
                value = normalizer["lowercase"]
    st = layout.root / "sentence_bert_config.json"
    forced = st.is_file() and _read_json(st).get("do_lower_case") is True
    return True if value is None else bool(value or forced)


def label_names(config: dict) -> Optional[list]:
    """The label names of a config's `id2label` in index order, or None when it has none or only `LABEL_<i>`."""
    id2label = config.get("id2label")
    if not isinstance(id2label, dict) or not id2label:
        return None
    try:
        by_index = {int(k): str(v) for k, v in id2label.items()}
    except (TypeError, ValueError):
        return None
    if sorted(by_index) != list(range(len(by_index))):
        return None
    names = [by_index[i] for i in range(len(by_index))]
    return None if names == [_DEFAULT_LABEL.format(i) for i in range(len(names))] else names


def _load_tensors(files: Sequence[Path]) -> dict:
    from safetensors.numpy import load_file

    tensors = {}
    for f in files:
        try:
            if _has_bfloat16(f):
                tensors.update(_load_bfloat16_file(f))
            else:
                tensors.update(load_file(str(f)))
        except Exception as e:  # noqa: BLE001 - safetensors raises its own error types for truncated/corrupted files
            raise ValueError(f"Expected a safetensors file at {str(f)!r}. Received: a file safetensors cannot read "
                             f"({type(e).__name__}: {str(e)[:200]}); truncated or corrupted?") from None
    return tensors


def _header(path: Path) -> tuple:
    """(the JSON header of a safetensors file, the offset where its data starts)."""
    with open(path, "rb") as f:
        size = int.from_bytes(f.read(8), "little")
        if size <= 0 or size > 100_000_000:
            raise ValueError(f"implausible header length {size}")
        return json.loads(f.read(size)), 8 + size


def _has_bfloat16(path: Path) -> bool:
    return any(isinstance(v, dict) and v.get("dtype") == "BF16" for v in _header(path)[0].values())


_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32,
           "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_, "BF16": np.uint16}


def _load_bfloat16_file(path: Path) -> dict:
    """A safetensors file with bfloat16 tensors (numpy has no bfloat16): those are widened to float32."""
    header, offset = _header(path)
    data = np.memmap(path, dtype=np.uint8, mode="r")
    out = {}
    for name, spec in header.items():
        if name == "__metadata__":
            continue
        start, end = spec["data_offsets"]
        raw = np.frombuffer(data[offset + start:offset + end].tobytes(), dtype=_DTYPES[spec["dtype"]])
        if spec["dtype"] == "BF16":
            raw = (raw.astype(np.uint32) << 16).view(np.float32)
        out[name] = raw.reshape(spec["shape"])
    return out


def _expected_layers(config) -> set:
    names = {"word_embeddings", "position_embedding", "type_embeddings", "embeddings_layer_norm", "pooler_dense"}
    for i in range(config.num_layers):
        names |= {f"layer_{i}_{n}" for n in ("query", "key", "value", "attention_output", "attention_layer_norm",
                                            "intermediate", "output", "output_layer_norm")}
    return names


def _fresh_pooler(hidden: int, seed: int = 0) -> list:
    """A pooler initialised as a fresh BERT's (truncated normal, stddev 0.02, cut at 2 stddev; zero bias), drawn from a
    fixed seed so that every conversion of one directory gives the same weights."""
    rng = np.random.default_rng(seed)
    kernel = rng.standard_normal((hidden, hidden))
    outside = np.abs(kernel) > 2.0
    while outside.any():
        kernel[outside] = rng.standard_normal(int(outside.sum()))
        outside = np.abs(kernel) > 2.0
    return [(kernel * 0.02).astype(np.float32), np.zeros(hidden, np.float32)]


def read(path) -> weights.Checkpoint:
    """Reads the Hugging Face BERT directory `path` into a `weights.Checkpoint` (config, native weight map,
    vocabulary, lower-casing, classification head and label names).

    A checkpoint without pooler (`BertForMaskedLM`, many sentence encoders) gets a pooler initialised like a fresh
    BERT's from a fixed seed, with a warning: `pooled_output` means nothing until it is fine-tuned (what a classifier
    does anyway). The head of `BertForSequenceClassification` is returned (`classifier`, `label_names`); the heads of
    other task models are ignored (listed in `notes`).
    """
    layout = _Layout(path)
    config = weights.hf_config(layout.config, source=str(layout.config_file))
    vocab_lines = sum(1 for _ in layout.vocab.open(encoding="utf-8"))
    if vocab_lines > config.vocab_size:
        raise ValueError(f"Expected at most vocab_size={config.vocab_size} tokens (config.json) in "
                         f"{str(layout.vocab)!r}. Received: {vocab_lines} lines: ids past the embedding table.")
    tensors = _load_tensors(layout.weights)
    tensors = {k: (v.astype(np.float32) if np.issubdtype(v.dtype, np.floating) else v) for k, v in tensors.items()}
    unused = []
    weight_map = weights.from_huggingface(tensors, unused)
    expected = _expected_layers(config)
    missing = sorted(expected - set(weight_map) - {"pooler_dense"})
    extra = sorted(set(weight_map) - expected)
    files = [f.name for f in layout.weights]
    if missing or extra:
        sample = sorted(tensors)[:4]
        raise ValueError(f"Expected the tensors of a {config.num_layers}-layer BERT (num_hidden_layers in config.json) "
                         f"in {files}. Received: " + (f"no tensors for {missing[:6]}; " if missing else "")
                         + (f"tensors for layers {extra[:6]} beyond num_hidden_layers; " if extra else "")
                         + f"names look like {sample}.")
    notes = []
    if "pooler_dense" not in weight_map:
        weight_map["pooler_dense"] = _fresh_pooler(config.hidden_size)
        notes.append("no pooler in the checkpoint: pooler_dense initialised like a fresh BERT's (seed 0)")
        warnings.warn(f"{str(layout.folder)!r} has no pooler weights (pooler.dense): `pooler_dense` is initialised "
                      "like a fresh BERT's (truncated normal, stddev 0.02, seed 0), so `pooled_output` is meaningful "
                      "only after fine-tuning.", UserWarning, stacklevel=2)
    classifier, names, dropout = None, None, None
    architectures = layout.config.get("architectures") or []
    if "classifier.weight" in tensors and "classifier.bias" in tensors:
        problem = layout.config.get("problem_type")
        if "BertForSequenceClassification" not in architectures:
            notes.append(f"the `classifier` tensors of {architectures} are not a sequence-classification head: "
                         "ignored")
        elif problem not in (None, "single_label_classification"):
            notes.append(f"the classification head is for problem_type={problem!r} (tfspeed trains single-label "
                         "softmax classifiers): ignored")
        else:
            kernel, bias = tensors["classifier.weight"], tensors["classifier.bias"]
            if kernel.ndim != 2 or kernel.shape[1] != config.hidden_size or bias.shape != (kernel.shape[0],):
                raise ValueError(f"Expected classifier.weight of shape (labels, {config.hidden_size}) and "
                                 f"classifier.bias of shape (labels,) in {files}. Received: {kernel.shape} and "
                                 f"{bias.shape}.")
            classifier = [np.ascontiguousarray(kernel.T), bias]
            names = label_names(layout.config)
            if names is not None and len(names) != bias.shape[0]:
                names = None
            rate = layout.config.get("classifier_dropout")
            dropout = float(rate) if isinstance(rate, (int, float)) else None
    ignored = [n for n in unused if not n.startswith(("cls.", "classifier.")) and not n.endswith("position_ids")]
    if ignored:
        notes.append(f"{len(ignored)} tensors not part of a BERT encoder ignored: {ignored[:5]}")
    return weights.Checkpoint(config=config, weight_map=weight_map, vocab_path=layout.vocab,
                              lower_case=lower_case(path), classifier=classifier, label_names=names,
                              classifier_dropout=dropout, notes=notes)


# ----------------------------------------------------------------------------------------------------------------------
# Out: a tfspeed BERT as a Hugging Face directory
# ----------------------------------------------------------------------------------------------------------------------

_SPECIAL_TOKENS = {"unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]", "cls_token": "[CLS]",
                   "mask_token": "[MASK]"}


def _sample_inputs(config, batch: int = 2, seq_length: int = 16) -> dict:
    rng = np.random.default_rng(0)
    seq_length = min(seq_length, config.max_positions)
    ids = rng.integers(1, config.vocab_size, size=(batch, seq_length)).astype(np.int32)
    mask = np.ones_like(ids)
    mask[0, seq_length * 3 // 4:] = 0
    return {"input_word_ids": ids * mask, "input_mask": mask, "input_type_ids": np.zeros_like(ids)}


def _check_exportable(model) -> None:
    if not isinstance(model, keras.Model):
        raise ValueError(f"Expected a tfspeed BERT (a keras.Model: encoder or classifier) for `model`. Received: "
                         f"{type(model).__name__}. For a model directory, load it first: "
                         "`model, info = tfspeed.load_model_dir(path)`.")
    if not is_bert(model):
        raise ValueError(f"Expected a native tfspeed BERT (encoder or classifier) for `model`. Received: a model "
                         f"named {model.name!r} without the layers word_embeddings/layer_0_query/pooler_dense (a "
                         "classifier on a hub.KerasLayer? Convert it with "
                         "`tfspeed.compress.distillation.students.native_teacher(model)` first).")
    wrapped = sorted(layer.name for layer in model.layers if _unwrap(layer) is not layer)
    if wrapped:
        raise ValueError(f"Expected a plain tfspeed BERT for `model`. Received: TFMOT wrappers on {wrapped[:4]}: a "
                         "pruned model must be stripped first (`tfspeed.strip(model)`); a quantization-aware (QAT) "
                         "model holds fake-quantization ranges a Hugging Face BERT cannot carry: export the float "
                         "model, or the QAT model as a .tflite (`tfspeed export`).")


def export_huggingface(model: keras.Model, out, vocab_path, label_names: Optional[Sequence[str]] = None,
                       lower_case: bool = True, overwrite: bool = False, verify: bool = True,
                       atol: float = 1e-5) -> Path:
    """Writes a tfspeed BERT (encoder or classifier) as a Hugging Face BERT directory, atomically.

    The directory holds `config.json` (model_type "bert"; architectures `BertForSequenceClassification` with
    `id2label` / `label2id` for a classifier, `BertModel` for an encoder), `model.safetensors` (Hugging Face names,
    Linear weights (out, in), float32), `vocab.txt` and `tokenizer_config.json` (`do_lower_case`). Only what a plain
    Hugging Face `BertConfig` can state is accepted: the same heads and FFN width in every layer, heads of width
    hidden_size / num_heads, no low-rank factors, no TFMOT wrappers; anything else is refused with the reason. With
    `verify=True` a BERT rebuilt from the written tensors is compared to `model` on a random batch before anything
    is written.

    Args:
        model: a native tfspeed encoder or classifier (for a model directory: `tfspeed.load_model_dir(path)[0]`).
        out: the directory to write.
        vocab_path: the model's WordPiece vocabulary (a model directory's `vocab.txt`).
        label_names: a classifier's label names in index order. Defaults to `None` (`LABEL_<i>`).
        lower_case: whether the tokenizer lower-cases. Defaults to `True`.
        overwrite: replace `out` if it exists. Defaults to `False`.
        verify: compare the rebuilt BERT with `model` before writing. Defaults to `True`.
        atol: tolerance of that comparison (max |difference| of the outputs). Defaults to `1e-5`.

    Example:

    ```python
    model, info = tfspeed.load_model_dir("runs/pruned")
    export_huggingface(model, "runs/pruned-hf", vocab_path=info.vocab_path, label_names=info.label_names,
                       lower_case=info.lower_case)
    # then, where transformers is installed: AutoModelForSequenceClassification.from_pretrained("runs/pruned-hf")
    ```
    """
    out = Path(out)
    _io.check_writable(out, overwrite, "out")  # before any work
    try:
        return _export(model, out, vocab_path, label_names, lower_case, overwrite, verify, atol)
    finally:
        _io.release(out)  # refused or written: the claim ends here


def _export(model, out: Path, vocab_path, label_names, lower_case: bool, overwrite: bool, verify: bool,
            atol: float) -> Path:
    from safetensors.numpy import save_file

    _check_exportable(model)
    if vocab_path is None or not Path(vocab_path).is_file():
        raise ValueError(f"Expected the model's WordPiece vocabulary file for `vocab_path`. Received: "
                         f"vocab_path={None if vocab_path is None else str(vocab_path)!r}, which is not a file.")
    config = config_of(model)
    hf = weights.to_hf_config(config)
    vocab_lines = sum(1 for _ in Path(vocab_path).open(encoding="utf-8"))
    if vocab_lines > config.vocab_size:
        raise ValueError(f"Expected at most {config.vocab_size} tokens (the model's vocab_size) in `vocab_path`. "
                         f"Received: {vocab_lines} lines in {str(vocab_path)!r}: is it this model's vocabulary?")
    weight_map = {}
    for layer in model.layers:
        layer = _unwrap(layer)
        if layer.weights:
            weight_map[layer.name] = layer.get_weights()
    head = weight_map.pop("classifier", None)
    extra = sorted(set(weight_map) - _expected_layers(config))
    if extra:
        raise ValueError(f"Expected only the layers of a plain BERT in `model`. Received: layers {extra[:6]}, which a "
                         "Hugging Face BERT does not have.")
    tensors = weights.to_huggingface(weight_map, prefix="bert." if head is not None else "")
    if head is not None:
        num_labels = int(head[1].shape[0])
        names = [str(n) for n in label_names] if label_names is not None else [
            _DEFAULT_LABEL.format(i) for i in range(num_labels)]
        if len(names) != num_labels or len(set(names)) != num_labels:
            raise ValueError(f"Expected {num_labels} distinct label names (the classifier's outputs) for "
                             f"`label_names`. Received: label_names={list(label_names)!r}")
        tensors["classifier.weight"] = np.ascontiguousarray(np.asarray(head[0], np.float32).T)
        tensors["classifier.bias"] = np.asarray(head[1], np.float32)
        dropout = next((float(_unwrap(l).rate) for l in model.layers if _unwrap(l).name == "classifier_dropout"),
                       None)
        hf = {"architectures": ["BertForSequenceClassification"], **hf, "classifier_dropout": dropout,
              "id2label": {str(i): n for i, n in enumerate(names)}, "label2id": {n: i for i, n in enumerate(names)}}
    else:
        hf = {"architectures": ["BertModel"], **hf}
    if verify:
        _verify_export(model, config, tensors, head, atol)
    tokenizer = {"tokenizer_class": "BertTokenizer", "do_lower_case": bool(lower_case), "strip_accents": None,
                 "tokenize_chinese_chars": True, "model_max_length": config.max_positions, **_SPECIAL_TOKENS}
    with _io.atomic_path(out, overwrite, "out") as tmp:
        tmp.mkdir()
        (tmp / CONFIG).write_text(json.dumps(hf, indent=2) + "\n")
        save_file(tensors, str(tmp / WEIGHTS), metadata={"format": "pt"})
        shutil.copyfile(vocab_path, tmp / VOCAB)
        (tmp / TOKENIZER_CONFIG).write_text(json.dumps(tokenizer, indent=2) + "\n")
    return out


def _verify_export(model, config, tensors: dict, head, atol: float) -> None:
    """Rebuilds a plain BERT from the tensors about to be written and compares it with `model`: catches any layer of
    `model` that changes the computation without weights (a plain BERT cannot hold it)."""
    weight_map = weights.from_huggingface(tensors)
    if head is not None:
        weight_map["classifier"] = [np.asarray(h) for h in head]
        rebuilt = build_classifier(config, num_classes=int(head[1].shape[0]))
    else:
        rebuilt = build_encoder(config)
    weights.assign(rebuilt, weight_map)
    x = _sample_inputs(config)
    ours, theirs = model(x, training=False), rebuilt(x, training=False)
    if isinstance(ours, dict):
        valid = x["input_mask"].astype(bool)
        diff = float(np.abs(ours["sequence_output"].numpy() - theirs["sequence_output"].numpy())[valid].max())
    else:
        diff = float(np.abs(np.asarray(ours) - np.asarray(theirs)).max())
    if not diff <= atol:
        raise ValueError(f"Expected a model a plain Hugging Face BERT reproduces (within atol={atol}) for `model`. "
                         f"Received: a model whose rebuilt BERT differs by max |difference| {diff:.3g}: it computes "
                         "something a BERT does not (e.g. QAT outlier scaling); nothing was written.")
