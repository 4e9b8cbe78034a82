"""Keras classifier -> .tflite bytes, from a fixed-shape `serving_default` signature.

Every mode converts the same concrete function: batch 1, `seq_length` tokens, inputs `input_word_ids`, `input_mask`,
`input_type_ids` (int32), output `logits` (float32). A fixed shape matters: with a `None` batch most FULLY_CONNECTED
ops stay float in int8 models (STACK-NOTES).

Full int8 is done in two steps so that several int8 configurations share one calibration: the converter calibrates
(`_experimental_calibrate_only`), then `mlir_quantize` quantizes with the op types to keep float (`denylisted_ops`).
That is what `tf.lite.experimental.QuantizationDebugger(...).get_nondebug_quantized_model()` does inside, without the
instrumented debug model it also builds.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Optional

from tfspeed import _io
from tfspeed.compat import keras, tf
from tfspeed.export import calibration as _cal
from tfspeed.export.modes import ALL_BUT_FC, INT8_KEPT_BY_WILDCARD, Candidate, Mode, resolve_mixed, resolve_quantizer
from tfspeed.models.bert import INPUT_NAMES

DEFAULT_SEQ_LENGTH = 128
# `seq_length=DYNAMIC`: token inputs of shape [1, -1] (`shape_signature`), run at each text's own length.
DYNAMIC = "dynamic"
_QAT_LAYERS = {"QuantizeWrapper", "QuantizeWrapperV2", "QuantizeLayer"}
_PRUNE_LAYERS = {"PruneLowMagnitude"}


class ConversionError(RuntimeError):
    """The TFLite converter failed. `failed_ops` lists the TensorFlow ops it named (e.g. `['tf.MatrixDeterminant']`)."""

    def __init__(self, message: str, failed_ops=()):
        super().__init__(message)
        self.failed_ops = list(failed_ops)


def _all_layers(model):
    stack = list(getattr(model, "layers", []))
    while stack:
        layer = stack.pop()
        yield layer
        stack.extend(getattr(layer, "layers", []) or [])
        inner = getattr(layer, "layer", None)
        if isinstance(inner, keras.layers.Layer):
            stack.append(inner)


def is_qat(model) -> bool:
    """True if `model` holds TFMOT quantization wrappers (`QuantizeWrapperV2`, `QuantizeLayer`)."""
    return any(type(layer).__name__ in _QAT_LAYERS for layer in _all_layers(model))


def _has_pruning_wrappers(model) -> bool:
    return any(type(layer).__name__ in _PRUNE_LAYERS for layer in _all_layers(model))


def load_scope() -> dict:
    """Custom objects for loading any tfspeed model directory: `tfspeed.artifacts.custom_objects()`."""
    from tfspeed import artifacts

    return artifacts.custom_objects()


def load_classifier(model):
    """`(keras_model, info)`: a Keras classifier passes through (info `None`); a model directory is loaded."""
    if isinstance(model, keras.Model):
        return model, None
    if isinstance(model, (str, Path)):
        from tfspeed import artifacts

        path = Path(model)
        if not artifacts.is_model_dir(path):
            raise ValueError(f"Expected a tf_keras classifier or a tfspeed model directory (with model.keras and "
                             f"tfspeed.json) for `model`. Received: model={str(model)!r}")
        return artifacts.load_model_dir(path, scope=load_scope())
    raise ValueError(f"Expected a tf_keras classifier or a tfspeed model directory for `model`. "
                     f"Received: model of type {type(model).__name__}")


def max_positions(model) -> Optional[int]:
    """Rows of the model's position table (the longest input it can take), `None` if it has no visible one."""
    from tfspeed.models.layers import PositionEmbedding

    found = [layer.max_positions for layer in _all_layers(model) if isinstance(layer, PositionEmbedding)]
    return found[0] if found else None


def resolve_seq_length(model, seq_length, info=None):
    """`seq_length` if given, else the model directory's, else the model's static input length, else 128.
    `"dynamic"` passes through (after checking that the model's inputs are not fixed)."""
    static = None
    try:
        inputs = model.input if isinstance(model.input, dict) else dict(zip(INPUT_NAMES, model.inputs))
        dims = {int(t.shape[1]) for t in inputs.values() if t.shape.rank == 2 and t.shape[1] is not None}
        static = dims.pop() if len(dims) == 1 else None
    except (AttributeError, TypeError, ValueError):
        pass
    if seq_length == DYNAMIC:
        if static is not None:
            raise ValueError(f"Received an invalid value for `seq_length`: the model's inputs are fixed at {static} "
                             f"tokens, it cannot take any length. Received: seq_length={seq_length!r}")
        return DYNAMIC
    if seq_length is None:
        seq_length = info.seq_length if info is not None else static or DEFAULT_SEQ_LENGTH
    if not isinstance(seq_length, int) or isinstance(seq_length, bool) or seq_length < 1:
        raise ValueError(f"Received an invalid value for `seq_length`, expected a positive integer or 'dynamic'. "
                         f"Received: seq_length={seq_length!r}")
    positions = max_positions(model)
    if positions is not None and seq_length > positions:
        raise ValueError(f"Received an invalid value for `seq_length`: the model has {positions} positions. "
                         f"Received: seq_length={seq_length}. Pass at most {positions}, or 'dynamic'.")
    if static is not None and static != seq_length:
        raise ValueError(f"Received an invalid value for `seq_length`: the model's inputs are fixed at {static} "
                         "tokens. "
                         f"Received: seq_length={seq_length}. Pass seq_length={static}.")
    return seq_length


def prepare_model(model):
    """A model ready to trace: pruning wrappers stripped (a new model; the caller's is untouched)."""
    if _has_pruning_wrappers(model):
        import tensorflow_model_optimization as tfmot

        model = tfmot.sparsity.keras.strip_pruning(model)
    return model


def serving_function(model, seq_length):
    """The concrete function converted: `serving_default(input_word_ids, input_mask, input_type_ids)` -> `logits`.

    With `seq_length="dynamic"` the inputs are [1, None] and the graph keeps at most the model's positions (a longer
    input is cut, as a tokenizer would, instead of indexing past the position table)."""
    dynamic = seq_length == DYNAMIC
    specs = [tf.TensorSpec([1, None if dynamic else seq_length], tf.int32, name=name) for name in INPUT_NAMES]
    limit = max_positions(model) if dynamic else None

    @tf.function(input_signature=specs)
    def serving_default(input_word_ids, input_mask, input_type_ids):
        if limit is not None:
            input_word_ids, input_mask, input_type_ids = (t[:, :limit] for t in (input_word_ids, input_mask,
                                                                                 input_type_ids))
        out = model({"input_word_ids": input_word_ids, "input_mask": input_mask, "input_type_ids": input_type_ids},
                    training=False)
        if isinstance(out, dict):
            out = out["logits"] if "logits" in out else next(iter(out.values()))
        return {"logits": tf.cast(out, tf.float32)}

    return serving_default.get_concrete_function()


def convert_signatures(module, signatures: dict, mode: str, what: str) -> bytes:
    """A tf.Module's concrete functions `signatures` (`{name: function}`) as one multi-signature .tflite, in mode
    `"float32"`, `"float16"` or `"dynamic"` (the converter stores identical weight buffers once)."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="tfspeed-signatures-") as tmp:
        tf.saved_model.save(module, tmp, signatures=signatures)
        converter = tf.lite.TFLiteConverter.from_saved_model(tmp, signature_keys=list(signatures))
        if mode != "float32":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if mode == "float16":
            converter.target_spec.supported_types = [tf.float16]
        return _run_converter(converter, what)


_OP_PATTERNS = (re.compile(r"'(tf\.[A-Za-z0-9_]+)'"), re.compile(r"\b(tf\.[A-Z][A-Za-z0-9_]+)"),
                re.compile(r"\b(tfl\.[a-z_0-9]+)'? op"), re.compile(r"Flex([A-Z][A-Za-z0-9_]+)"))


def failed_ops(message: str) -> list:
    """The op names a converter error message mentions, in order (`tf.X` for TensorFlow ops, `tfl.x` for TFLite)."""
    found = []
    for pattern in _OP_PATTERNS:
        for m in pattern.findall(message):
            name = m if "." in m else f"tf.{m}"
            if name not in found:
                found.append(name)
    return found


def _run_converter(converter, what: str) -> bytes:
    try:
        return converter.convert()
    except Exception as e:  # ConverterError and friends: say which ops failed
        ops = failed_ops(str(e))
        first = str(e).strip().splitlines()
        detail = " ".join(first[-3:])[:600] if first else type(e).__name__
        raise ConversionError(f"The TFLite converter failed for {what}. Ops it could not convert: "
                              f"{', '.join(ops) if ops else 'none named'}. Converter said: {detail}", ops) from e


class Converter:
    """One model, traced once, converted to any mode; full-int8 variants share a single calibration.

    Args:
        model: a tf_keras classifier (inputs dict -> logits) or a tfspeed model directory.
        seq_length: fixed sequence length. Defaults to the model directory's, else the model's, else 128.
        calibration: what full int8 calibrates on (see `calibration.calibration_features`). Defaults to `None`.
        num_calibration_samples: Defaults to `200`.
        vocab: WordPiece vocab for calibration text. Defaults to the model directory's `vocab.txt`.
        seed: seed of the calibration sample. Defaults to `0`.
    """

    def __init__(self, model, seq_length: Optional[int] = None, calibration=None,
                 num_calibration_samples: Optional[int] = _cal.DEFAULT_NUM_SAMPLES, vocab=None, seed: int = 0):
        self.keras_model, self.info = load_classifier(model)
        self.seq_length = resolve_seq_length(self.keras_model, seq_length, self.info)
        self.vocab = vocab or (self.info.vocab_path if self.info is not None else None)
        _cal._check_num_samples(num_calibration_samples)
        self.calibration, self.num_calibration_samples, self.seed = calibration, num_calibration_samples, seed
        self.qat = is_qat(self.keras_model)
        self._model = prepare_model(self.keras_model)
        self._fn = None
        self._features = None
        self._calibrated = None
        self._cache = {}

    @property
    def dynamic(self) -> bool:
        """True when the file's length is dynamic ([1, -1] inputs)."""
        return self.seq_length == DYNAMIC

    @property
    def eval_length(self) -> int:
        """The length text is tokenized to for evaluation and calibration: the fixed length, or for a dynamic file
        the model directory's (else the model's positions, at most 128)."""
        if not self.dynamic:
            return self.seq_length
        if self.info is not None and self.info.seq_length:
            return int(self.info.seq_length)
        return min(DEFAULT_SEQ_LENGTH, max_positions(self.keras_model) or DEFAULT_SEQ_LENGTH)

    @property
    def function(self):
        if self._fn is None:
            self._fn = serving_function(self._model, self.seq_length)
        return self._fn

    def _converter(self):
        return tf.lite.TFLiteConverter.from_concrete_functions([self.function], self._model)

    def calibration_features(self) -> dict:
        if self._features is None:
            if self.calibration is None:
                raise ValueError("Full-int8 conversion needs `calibration`: real text (a list of texts, a dataset name "
                                 "such as 'rotten_tomatoes', an EncodedSplit or a dict of int32 token ids). "
                                 "Received: calibration=None")
            if callable(self.calibration) and not isinstance(self.calibration, (str, dict, list, tuple)):
                raise ValueError("Received an invalid value for `calibration`: pass the data itself (texts, an "
                                 "EncodedSplit or a dict of int32 arrays), not a generator function.")
            self._features = _cal.calibration_features(self.calibration, self.eval_length,
                                                       self.num_calibration_samples, self.vocab, self.seed)
        return self._features

    def calibrated_model(self) -> bytes:
        """The float model with calibration statistics, made once."""
        if self._calibrated is None:
            converter = self._converter()
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.representative_dataset = _cal.representative_dataset(self.calibration_features())
            converter.experimental_mlir_quantizer = True
            converter._experimental_calibrate_only = True  # noqa: SLF001 (as QuantizationDebugger does)
            with warnings.catch_warnings():  # calibration runs TF's own deprecated tf.lite.Interpreter
                warnings.filterwarnings("ignore", message=".*tf.lite.Interpreter is deprecated.*")
                self._calibrated = _run_converter(converter, "calibration")
        return self._calibrated

    def convert(self, mode="dynamic", float_ops=None, float_nodes=None, block_size=None, recipe=None) -> bytes:
        """.tflite bytes in `mode` (a `Mode`, its string or a `Candidate`); each configuration is converted once.

        `block_size` and `recipe` apply to the LiteRT quantizer's modes (see `quantizer.quantize`)."""
        if isinstance(mode, Candidate):
            c = mode
            mode, float_ops, float_nodes, block_size, recipe = (c.mode, c.float_ops, c.float_nodes, c.block_size,
                                                                c.recipe)
        mode = Mode.parse(mode)
        float_ops, float_nodes = resolve_mixed(mode, float_ops, float_nodes)
        block_size, recipe = resolve_quantizer(mode, block_size, recipe)
        key = (mode, tuple(sorted(float_ops)), tuple(float_nodes), block_size, recipe)
        if key not in self._cache:
            if mode.uses_quantizer:
                self._cache[key] = self._quantizer(mode, block_size, recipe)
            else:
                self._cache[key] = self._convert(mode, float_ops, float_nodes)
        return self._cache[key]

    def _quantizer(self, mode: Mode, block_size: int, recipe: tuple) -> bytes:
        from tfspeed.export import quantizer

        quantizer.require()  # before any conversion
        if self.qat:
            raise ValueError("A QAT model carries its own quantization ranges: convert it with mode='int8'. "
                             f"Received: mode={mode.value!r}")
        entries = (("all", mode.value),) + tuple(recipe)
        calibration = self.calibration_features() if quantizer.needs_calibration(entries) else None
        try:
            return quantizer.quantize(self.convert(Mode.FLOAT32), entries, block_size, calibration,
                                      dynamic=self.dynamic)
        except (ValueError, ImportError):
            raise
        except Exception as e:  # noqa: BLE001 - the quantizer raises many kinds; name the configuration
            raise ConversionError(f"The LiteRT quantizer failed on mode={mode.value!r}, block_size={block_size}, "
                                  f"recipe={list(recipe)}: {str(e)[:600]}", failed_ops(str(e))) from e

    def _convert(self, mode: Mode, float_ops: tuple, float_nodes: tuple) -> bytes:
        what = f"mode={mode.value!r}"
        if mode == Mode.FLOAT32:
            return _run_converter(self._converter(), what)
        if mode in (Mode.FLOAT16, Mode.DYNAMIC) or (mode == Mode.INT8 and self.qat):
            converter = self._converter()
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            if mode == Mode.FLOAT16:
                converter.target_spec.supported_types = [tf.float16]
            return _run_converter(converter, what + (" (QAT ranges)" if self.qat and mode == Mode.INT8 else ""))
        if self.qat:
            raise ValueError("A QAT model carries its own quantization ranges: convert it with mode='int8' (all ops "
                             f"as trained). Received: mode={mode.value!r}")
        return self.quantize(float_ops, float_nodes)

    def quantize(self, float_ops=(), float_nodes=()) -> bytes:
        """Full int8 from the shared calibration; op types `float_ops` and ops whose output tensor name matches a
        regular expression of `float_nodes` are kept float (the converter's `denylisted_ops` / `denylisted_nodes`)."""
        from tensorflow.lite.python import convert as _convert

        from tfspeed.export.ops import list_ops

        calibrated = self.calibrated_model()
        ops = list(float_ops)
        if ALL_BUT_FC in ops:
            present = sorted({name for name, _, _ in list_ops(calibrated)})
            ops = [o for o in ops if o != ALL_BUT_FC] + [o for o in present if o not in INT8_KEPT_BY_WILDCARD
                                                         and o not in ops]
        patterns = [re.compile(p) for p in float_nodes]
        nodes = [t for _, _, t in list_ops(calibrated) if t and any(p.search(t) for p in patterns)]
        try:
            return _convert.mlir_quantize(calibrated, disable_per_channel=False, fully_quantize=False,
                                          denylisted_ops=ops or None, denylisted_nodes=nodes or None)
        except Exception as e:
            found = failed_ops(str(e))
            raise ConversionError(f"Full-int8 quantization failed (float_ops={ops}, float_nodes={list(float_nodes)}). "
                                  "Ops named: "
                                  f"{', '.join(found) if found else 'none'}. Quantizer said: {str(e)[:600]}",
                                  found) from e


def convert(model, mode="dynamic", seq_length: Optional[int] = None, calibration=None,
            num_calibration_samples: Optional[int] = _cal.DEFAULT_NUM_SAMPLES, float_ops=None, vocab=None,
            seed: int = 0, float_nodes=None, metadata: Optional[bool] = None, labels=None, block_size=None,
            recipe=None) -> bytes:
    """Converts a BERT classifier to .tflite bytes.

    Args:
        model: a tf_keras classifier (dict of int32 inputs -> logits), or a tfspeed model directory (its `vocab.txt`
            tokenizes calibration text and its `tfspeed.json` gives `seq_length`). Native, hub-layer, pruned (wrappers
            are stripped on a copy), distilled and QAT models all work.
        mode: a `Mode` or its string: `"float32"`, `"float16"`, `"dynamic"`, `"int8"`, `"int8-mixed"`, and through
            the LiteRT quantizer `"int4"`, `"int8-weights"`, `"int4-weights"`, `"int8-static"`, `"16x8"`.
            Defaults to `"dynamic"`.
        seq_length: the fixed sequence length of the signature (batch is fixed at 1), or `"dynamic"`: inputs of
            shape [1, -1] that run at each text's own length (a short text costs a short run); the graph keeps at most
            the model's positions. Defaults to the model directory's, else the model's static input length, else
            `128`.
        calibration: the data full int8 calibrates on, not needed for other modes nor for QAT models: texts, a
            dataset name (`"rotten_tomatoes"`: its training split), a `TextDataset`, an `EncodedSplit`, or a dict of
            int32 token-id arrays. Defaults to `None`.
        num_calibration_samples: calibration rows, drawn at random (seeded) when more are given. Defaults to `200`.
        float_ops: for `"int8-mixed"`, the TFLite op types kept float. Defaults to `DEFAULT_FLOAT_OPS`
            (MEAN, SQUARED_DIFFERENCE, RSQRT, SOFTMAX, GELU); `()` keeps no op type float; `"*"` keeps every op type
            float except FULLY_CONNECTED and data movement (only the dense layers in int8).
        vocab: WordPiece vocab for calibration text. Defaults to the model directory's.
        seed: seed of the calibration sample. Defaults to `0`.
        float_nodes: for `"int8-mixed"`, regular expressions on op output tensor names whose ops stay float.
            Defaults to `DEFAULT_FLOAT_NODES` (the attention softmax block: scale, additive mask, softmax; int8
            there costs ~20 points on MiniLM); `()` keeps none.
        metadata: add TFLite metadata for MediaPipe Tasks' `TextClassifier` (`tfspeed.export.metadata`): the
            vocabulary, the label names and a softmax `probability` output. `None` adds it when both are known (a
            model directory, or `vocab` and `labels` given); `True` requires it; `False` leaves it out. Defaults to
            `None`.
        labels: label names in output order, for the metadata. Defaults to the model directory's.
        block_size: for the LiteRT quantizer's int4 modes, weights per scale (32, 64, 128, 256), or 0 for one scale
            per output channel. Defaults to `None` (32).
        recipe: for the LiteRT quantizer's modes, per-part overrides of `mode`: `"attention=int8,head=int8"`
            (parts embedding / attention / ffn / head / all / re:<regex>; schemes int8, int4, int8-weights,
            int4-weights, int8-static, 16x8, float). Defaults to `None`.

    Returns:
        The .tflite flatbuffer: signature `serving_default`, inputs `input_word_ids`, `input_mask`, `input_type_ids`
        (int32 [1, seq_length]), output `logits` (float32 [1, num_classes]), or, with metadata, `probability`.

    Raises:
        ValueError: an unknown mode (the message lists the accepted ones), bad calibration data.
        ConversionError: the converter failed; `.failed_ops` names the ops.

    Example (a tiny random-weight BERT, dynamic range, written to the current directory):

    >>> from tfspeed.models import BertConfig, build_classifier
    >>> model = build_classifier(BertConfig(vocab_size=100, hidden_size=16, num_layers=2, num_heads=2,
    ...                                     intermediate_size=32, max_positions=16), num_classes=2)
    >>> data = convert(model, "dynamic", seq_length=8)
    >>> data[4:8]  # the TFLite flatbuffer identifier
    b'TFL3'
    >>> save_tflite(data, "bert_dynamic.tflite")
    PosixPath('bert_dynamic.tflite')

    Full int8 of a fine-tuned model directory, calibrated on real text (its `vocab.txt` tokenizes it; the dataset
    is downloaded, and calibration takes a minute or more):

    ```python
    data = convert("runs/teacher", mode="int8-mixed", calibration="rotten_tomatoes", seq_length=64)
    ```
    """
    mode = Mode.parse(mode)
    if metadata not in (None, True, False):
        raise ValueError(f"Expected None, True or False for `metadata`. Received: metadata={metadata!r}")
    converter = Converter(model, seq_length, calibration, num_calibration_samples, vocab, seed)
    data = converter.convert(mode, float_ops, float_nodes, block_size, recipe)
    labels = labels if labels is not None else (converter.info.label_names if converter.info is not None else None)
    if metadata is False or (metadata is None and (converter.vocab is None or labels is None)):
        return data
    if converter.vocab is None or labels is None:
        raise ValueError("Expected `vocab` and `labels` (or a model directory, which has both) for metadata=True. "
                         f"Received: vocab={converter.vocab!r}, labels={labels!r}")
    from tfspeed.export.metadata import add_metadata

    return add_metadata(data, converter.vocab, labels)


def save_tflite(data: bytes, path, overwrite: bool = False) -> Path:
    """Writes .tflite bytes atomically; refuses an existing `path` unless `overwrite=True`."""
    return _io.write_bytes(path, data, overwrite=overwrite, argument="out")
