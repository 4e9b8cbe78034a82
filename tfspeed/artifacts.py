"""Model directories: what every stage writes and the next one reads.

A model directory holds `model.keras` (the Keras classifier), `encoder/` (its TF-Hub export, for native BERTs),
`vocab.txt`, `tfspeed.json` (seq_length, label names, where it came from) and `metrics.json`. It is written whole into
a temporary directory and renamed into place: a stage that fails leaves nothing half-written.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import zipfile
from pathlib import Path
from typing import Callable, Optional

from tfspeed import _io
from tfspeed.compat import keras
from tfspeed.models.bert import is_bert

FORMAT_VERSION = 1


@dataclasses.dataclass
class ModelInfo:
    """What a model directory says about its model."""

    seq_length: int
    label_names: list
    base: str
    stage: str
    vocab_path: Optional[str] = None
    extra: dict = dataclasses.field(default_factory=dict)
    lower_case: bool = True  # the tokenizer lower-cases and strips accents (uncased BERTs)
    text_pair: bool = False  # the model reads sentence pairs: [CLS] a [SEP] b [SEP]


def custom_objects() -> dict:
    """Every class a tfspeed model directory may hold (`tfspeed.registry.custom_objects`), with every compression
    package imported first so that its classes are registered: pruned, QAT, distiller and hub-layer models load."""
    import tfspeed.compress.distillation  # noqa: F401  (registers Distiller)
    import tfspeed.compress.exits  # noqa: F401  (registers MaskedMean: early-exit models)
    import tfspeed.compress.pruning  # noqa: F401  (registers PrunableKerasLayer, PrunedModel, ...)
    import tfspeed.compress.quantization  # noqa: F401  (registers the quantizers and QuantizeConfigs)
    import tfspeed.train  # noqa: F401  (registers the learning-rate schedule)
    from tfspeed import registry

    return registry.custom_objects()


def save_model_dir(model: keras.Model, out, info: ModelInfo, metrics: Optional[dict] = None,
                   overwrite: bool = False, extra_files: Optional[Callable[[Path], None]] = None) -> Path:
    """Writes a model directory atomically. `extra_files(tmp_dir)` may add stage artifacts (e.g. a .tflite)."""
    from tfspeed.hub.export import export_encoder

    with _io.atomic_path(out, overwrite, "out") as tmp:
        tmp.mkdir()
        model.save(tmp / "model.keras")
        if info.vocab_path:
            shutil.copyfile(info.vocab_path, tmp / "vocab.txt")
        if is_bert(model):
            export_encoder(model, tmp / "encoder", vocab_path=info.vocab_path)
        meta = {"format_version": FORMAT_VERSION, **dataclasses.asdict(info)}
        meta["vocab_path"] = "vocab.txt" if info.vocab_path else None
        (tmp / "tfspeed.json").write_text(json.dumps(meta, indent=2))
        if metrics is not None:
            (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2, default=_io._json_default) + "\n")
        if extra_files is not None:
            extra_files(tmp)
        _write_checksums(tmp)
    return Path(out)


CHECKSUMS = "checksums.json"
_CHECKED = ("model.keras", "tfspeed.json", "vocab.txt")


def _write_checksums(folder: Path):
    from tfspeed._wheels import sha256_of

    sums = {name: sha256_of(folder / name) for name in _CHECKED if (folder / name).is_file()}
    (folder / CHECKSUMS).write_text(json.dumps(sums, indent=2) + "\n")


def verify(path):
    """Checks a model directory's files against the checksums recorded when it was written (directories written
    before checksums were kept pass); a truncated or changed file is a ValueError naming it."""
    from tfspeed._wheels import sha256_of

    path = Path(path)
    record = path / CHECKSUMS
    if not record.is_file():
        return
    try:
        sums = json.loads(record.read_text())
    except ValueError:
        raise ValueError(f"The model directory {str(path)!r} is corrupted: {CHECKSUMS} is not valid JSON. Rerun "
                         "the stage that wrote it.") from None
    for name, digest in sums.items():
        f = path / name
        if not f.is_file() or sha256_of(f) != digest:
            what = "is missing" if not f.is_file() else "does not match the checksum recorded when it was written"
            raise ValueError(f"The model directory {str(path)!r} is corrupted or half-written: {name} {what}. Rerun "
                             "the stage that wrote it (or restore the directory).")


def is_model_dir(path) -> bool:
    path = Path(path)
    return (path / "model.keras").is_file() and (path / "tfspeed.json").is_file()


def load_info(path) -> ModelInfo:
    path = Path(path)
    if not is_model_dir(path):
        raise ValueError(f"Expected a tfspeed model directory (with model.keras and tfspeed.json) for `model`. "
                         f"Received: {str(path)!r}")
    try:
        meta = json.loads((path / "tfspeed.json").read_text())
        meta.pop("format_version", None)
        if meta.get("vocab_path"):
            meta["vocab_path"] = str(path / meta["vocab_path"])
        return ModelInfo(**meta)
    except (ValueError, TypeError, AttributeError) as e:
        raise ValueError(f"The model directory {str(path)!r} has a corrupted tfspeed.json ({e}). Rerun the stage "
                         "that wrote it.") from None


def load_model_dir(path, compile: bool = False, scope: Optional[dict] = None):
    """(model, info) from a model directory, loaded with `custom_objects()` (any tfspeed model: native, hub-layer,
    pruned, QAT); `scope` adds more custom objects."""
    info = load_info(path)
    verify(path)
    objects = {**custom_objects(), **(scope or {})}
    try:
        with keras.utils.custom_object_scope(objects):
            model = keras.models.load_model(Path(path) / "model.keras", compile=compile)
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
        raise ValueError(f"The model directory {str(path)!r} has a model.keras Keras cannot load "
                         f"({type(e).__name__}: {str(e)[:200]}). It is corrupted or was not written by this tfspeed; "
                         "rerun the stage that wrote it.") from None
    return model, info


def read_metrics(path) -> dict:
    f = Path(path) / "metrics.json"
    return json.loads(f.read_text()) if f.is_file() else {}
