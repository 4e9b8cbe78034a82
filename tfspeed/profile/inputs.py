"""Model inputs: generated from input details, read from a user `.npz`, or real text through a WordPiece tokenizer.

Inputs are a `dict` from input name to a numpy array. Names are normalized (`serving_default_input_mask:0` ->
`input_mask`) so one set of inputs feeds a TFLite model, a Keras model, a SavedModel and an ONNX file alike.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np

from tfspeed.profile.errors import InputError

BERT_INPUT_NAMES = ("input_word_ids", "input_mask", "input_type_ids")


@dataclasses.dataclass
class InputSpec:
    """One model input: normalized `name`, `shape` (-1 or None for a dynamic dimension), numpy `dtype`.

    `vocab_size` is the number of rows of the embedding the input indexes, when known (token ids are drawn below it).
    """

    name: str
    shape: tuple
    dtype: np.dtype
    vocab_size: int | None = None

    @property
    def is_dynamic(self) -> bool:
        return any(d is None or d < 0 for d in self.shape)


def normalize_name(name: str) -> str:
    """`serving_default_input_mask:0` -> `input_mask`; `input_1` stays `input_1`."""
    name = re.sub(r":\d+$", "", name)
    name = re.sub(r"^serving_default_", "", name)
    return name


# Names of the same BERT input in tfspeed / TF-Hub files and in Hugging Face / ONNX exports: a value or a shape given
# under one name serves a model that calls it by another, so files of both namings run in one interleaved profile.
ROLE_ALIASES = (("input_word_ids", "input_ids"), ("input_mask", "attention_mask"),
                ("input_type_ids", "token_type_ids", "segment_ids"))


def aliases(name: str) -> tuple:
    """The names of the same role as `name` (itself first), e.g. `input_ids` -> (`input_ids`, `input_word_ids`)."""
    for group in ROLE_ALIASES:
        if name in group:
            return (name,) + tuple(n for n in group if n != name)
    return (name,)


def lookup(mapping: dict, name: str):
    """`mapping[name]`, else the value under another name of the same role, else `None`."""
    for candidate in aliases(name):
        if candidate in mapping:
            return mapping[candidate]
    return None


def resolve_shapes(specs: list[InputSpec], shapes: dict | None) -> list[InputSpec]:
    """Fills dynamic dimensions from `shapes` (`{name: [dims]}`; a name of the same role serves too, e.g.
    `input_ids` for `input_word_ids`), or raises a clear error naming what is missing."""
    shapes = dict(shapes or {})
    names = {s.name for s in specs}
    for key in list(shapes):  # a shape given under another name of the same role
        if key not in names:
            match = next((n for n in aliases(key)[1:] if n in names and n not in shapes), None)
            if match is not None:
                shapes[match] = shapes.pop(key)
    token_names = {n for group in ROLE_ALIASES for n in group}
    token_shape = next((shapes[n] for n in shapes if n in token_names), None)
    for spec in specs:  # BERT's token inputs share their length: one shape given serves the others
        if spec.is_dynamic and spec.name in token_names and spec.name not in shapes and token_shape is not None:
            shapes[spec.name] = token_shape
    unknown = sorted(set(shapes) - {s.name for s in specs})
    if unknown:
        raise InputError(
            f"Received an invalid value for `shapes`: the model has no input named {unknown}. "
            f"Expected names among {[s.name for s in specs]}. Received: shapes={shapes}"
        )
    out = []
    for spec in specs:
        if spec.name in shapes:
            shape = tuple(int(d) for d in shapes[spec.name])
            if len(shape) != len(spec.shape) or any(d < 1 for d in shape) or any(
                    s is not None and s >= 0 and s != d for s, d in zip(spec.shape, shape)):
                raise InputError(
                    f"Received an invalid value for `shapes`, expected positive dimensions matching the model's "
                    f"signature {list(spec.shape)} for input {spec.name!r}. Received: shapes={{{spec.name!r}: "
                    f"{list(shape)}}}"
                )
            spec = dataclasses.replace(spec, shape=shape)
        elif spec.is_dynamic:
            raise InputError(
                f"Input {spec.name!r} has a dynamic shape {list(spec.shape)} (-1 = any size) and no shape was given. "
                f"Pass shapes={{{spec.name!r}: [1, 128]}} (--shape {spec.name}=1,128 on the command line) or real "
                f"inputs (--inputs FILE.npz)."
            )
        out.append(spec)
    return out


def generate_inputs(specs: list[InputSpec], seed: int = 0, vocab_size: int | None = None) -> dict:
    """Generates one batch of inputs from the specs.

    Integer inputs named like a mask get ones, like type/segment ids get zeros, others are token ids drawn uniformly
    from `[0, vocab)` (the embedding size found in the model, else `vocab_size`, else 100). Float inputs get
    standard-normal values; quantized (u)int8 inputs get uniform random values over their range; bool inputs True.
    """
    rng = np.random.default_rng(seed)
    feed = {}
    for spec in specs:
        if spec.is_dynamic:
            raise InputError(f"Input {spec.name!r} still has a dynamic shape {list(spec.shape)}: resolve shapes first.")
        dtype = np.dtype(spec.dtype)
        shape = tuple(spec.shape)
        lname = spec.name.lower()
        if dtype == np.bool_:
            value = np.ones(shape, dtype)
        elif dtype.kind in "iu" and dtype.itemsize >= 4 or dtype in (np.int16, np.uint16):
            if "mask" in lname:
                value = np.ones(shape, dtype)
            elif "type" in lname or "segment" in lname:
                value = np.zeros(shape, dtype)
            else:
                vocab = spec.vocab_size or vocab_size or 100
                value = rng.integers(0, max(int(vocab), 1), size=shape).astype(dtype)
                if value.ndim >= 1 and value.size:  # a [CLS]-like first token, like real text
                    value.reshape(-1, shape[-1] if shape else 1)[:, 0] = min(101, int(vocab) - 1)
        elif dtype.kind in "iu":  # (u)int8 quantized activations
            info = np.iinfo(dtype)
            value = rng.integers(info.min, info.max + 1, size=shape).astype(dtype)
        elif dtype.kind == "f":
            value = rng.standard_normal(shape).astype(dtype)
        else:
            raise InputError(
                f"Cannot generate values for input {spec.name!r} of dtype {dtype}. Pass real inputs with an .npz file "
                "(`inputs=`, --inputs)."
            )
        feed[spec.name] = value
    return feed


def load_npz(path, specs: list[InputSpec] | None = None) -> dict:
    """Reads inputs from an `.npz` file, keyed by input name; checks names, dtypes and ranks against `specs`."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"Received an invalid value for `inputs`, expected an existing .npz file. Received: "
                         f"inputs={str(path)!r}")
    try:
        with np.load(path, allow_pickle=False) as npz:
            feed = {normalize_name(k): np.asarray(npz[k]) for k in npz.files}
    except Exception as exc:
        raise InputError(f"Cannot read `inputs` as an .npz file ({type(exc).__name__}: {exc}). Received: "
                         f"inputs={str(path)!r}") from None
    if specs is not None:
        check_feed(feed, specs, source=f"inputs={str(path)!r}")
    return feed


def check_feed(feed: dict, specs: list[InputSpec], source: str = "inputs") -> None:
    """Raises `InputError` when `feed` misses an input, has an unknown one, or has a wrong dtype or shape."""
    expected = {s.name: s for s in specs}
    missing = sorted(set(expected) - set(feed))
    extra = sorted(set(feed) - set(expected))
    if missing or extra:
        raise InputError(
            f"The inputs do not match the model's input names: expected {sorted(expected)}, missing {missing}, "
            f"unexpected {extra}. Received: {source} with names {sorted(feed)}"
        )
    for name, spec in expected.items():
        value = feed[name]
        if np.dtype(value.dtype) != np.dtype(spec.dtype):
            raise InputError(
                f"Input {name!r} has the wrong dtype: expected {np.dtype(spec.dtype).name}, received "
                f"{value.dtype.name} (from {source}). Convert it, e.g. `x.astype(np.{np.dtype(spec.dtype).name})`."
            )
        if len(value.shape) != len(spec.shape) or any(
                s is not None and s >= 0 and s != d for s, d in zip(spec.shape, value.shape)):
            raise InputError(
                f"Input {name!r} has the wrong shape: expected {list(spec.shape)} (-1 = any), received "
                f"{list(value.shape)} (from {source})."
            )


def tokenize(texts, vocab, seq_length: int, lower_case: bool = True) -> dict:
    """Real text to BERT inputs with `tensorflow_text.BertTokenizer`: [CLS] tokens [SEP], padded to `seq_length`.

    Args:
        texts: a string or a list of strings (one batch row each).
        vocab: path to a WordPiece `vocab.txt` (one token a line).
        seq_length: tokens per row, including [CLS] and [SEP]; longer texts are cut.
        lower_case: lower-case and strip accents first (uncased models). Defaults to `True`.

    Returns:
        `{"input_word_ids", "input_mask", "input_type_ids"}` as int32 arrays of shape `[len(texts), seq_length]`.
    """
    if isinstance(texts, str):
        texts = [texts]
    texts = list(texts)
    if not texts or not all(isinstance(t, str) for t in texts):
        raise InputError(f"Received an invalid value for `text`, expected a non-empty string or list of strings. "
                         f"Received: text={texts!r}")
    if not isinstance(seq_length, int) or seq_length < 2:
        raise InputError(f"Received an invalid value for `seq_length`, expected an integer >= 2. "
                         f"Received: seq_length={seq_length!r}")
    vocab = Path(vocab) if vocab is not None else None
    if vocab is None or not vocab.is_file():
        raise InputError(f"Received an invalid value for `vocab`, expected a WordPiece vocab.txt file. "
                         f"Received: vocab={str(vocab) if vocab else None!r}")
    tokens = vocab.read_text(encoding="utf-8").splitlines()
    index = {t: i for i, t in enumerate(tokens)}
    for special in ("[CLS]", "[SEP]", "[PAD]"):
        if special not in index:
            raise InputError(f"`vocab` has no {special} token. Received: vocab={str(vocab)!r}")
    import tensorflow_text as text

    from tfspeed.compat import tf  # noqa: F401 - tensorflow_text needs TensorFlow imported the tfspeed way

    tokenizer = text.BertTokenizer(str(vocab), lower_case=lower_case, token_out_type=tf.int32)
    ragged = tokenizer.tokenize(texts).merge_dims(-2, -1)
    ids = np.full((len(texts), seq_length), index["[PAD]"], np.int32)
    mask = np.zeros((len(texts), seq_length), np.int32)
    for row, pieces in enumerate(ragged.to_list()):
        pieces = [index["[CLS]"]] + pieces[: seq_length - 2] + [index["[SEP]"]]
        ids[row, : len(pieces)] = pieces
        mask[row, : len(pieces)] = 1
    return {"input_word_ids": ids, "input_mask": mask, "input_type_ids": np.zeros_like(ids)}
