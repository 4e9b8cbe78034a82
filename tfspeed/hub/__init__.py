"""BERTs in and out: the TF-Hub format, Hugging Face BERT directories and keras-hub BERTs, each both ways, and named
presets (real pretrained MiniLM, random shapes)."""

from tfspeed.hub.export import export_encoder, export_preprocessor
from tfspeed.hub.handles import (
                                 FOREIGN_FORMATS,
                                 build_classifier_from,
                                 build_hub_classifier,
                                 build_native_classifier,
                                 import_encoder,
                                 load_encoder,
                                 lower_case,
                                 resolve,
                                 resolve_preprocessor,
                                 sample_inputs,
                                 vocab_path,
)
from tfspeed.hub.huggingface import export_huggingface, is_huggingface_dir
from tfspeed.hub.huggingface import read as read_huggingface
from tfspeed.hub.keras_hub import from_keras_hub, save_preset, to_keras_hub
from tfspeed.hub.presets import PRESETS, build_preset_encoder, get_preset

__all__ = ["FOREIGN_FORMATS", "PRESETS", "build_classifier_from", "build_hub_classifier", "build_native_classifier",
           "build_preset_encoder", "export_encoder", "export_huggingface", "export_preprocessor", "from_keras_hub",
           "get_preset", "import_encoder", "is_huggingface_dir", "load_encoder", "lower_case", "read_huggingface",
           "resolve", "resolve_preprocessor", "sample_inputs", "save_preset", "to_keras_hub", "vocab_path"]
