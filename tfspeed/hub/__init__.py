"""The TF-Hub BERT format, both ways, and named presets (real pretrained MiniLM, random shapes)."""

from tfspeed.hub.export import export_encoder, export_preprocessor
from tfspeed.hub.handles import (
                                 build_classifier_from,
                                 build_hub_classifier,
                                 build_native_classifier,
                                 import_encoder,
                                 load_encoder,
                                 resolve,
                                 resolve_preprocessor,
                                 sample_inputs,
                                 vocab_path,
)
from tfspeed.hub.presets import PRESETS, build_preset_encoder, get_preset

__all__ = ["PRESETS", "build_classifier_from", "build_hub_classifier", "build_native_classifier",
           "build_preset_encoder", "export_encoder", "export_preprocessor", "get_preset", "import_encoder",
           "load_encoder", "resolve", "resolve_preprocessor", "sample_inputs", "vocab_path"]
