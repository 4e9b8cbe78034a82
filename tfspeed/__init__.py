"""tfspeed: make a TF-Hub BERT fast and small with TensorFlow.

The pipeline, in the order of the folders: `models` and `hub` (a BERT in), `data` (text in), `train` (fine-tune),
`compress` (prune, factorise, quantization-aware training, distillation), `export` (TFLite), `profile` (measure),
`stages` (one runner per stage), `recipe` (chain them), `cli`.

The public verbs are here too (imported on first use, so `import tfspeed` stays light):

>>> import tfspeed
>>> tfspeed.PruneConfig(sparsity=0.5, epochs=2).schedule.value
'polynomial'
"""

import importlib

from tfspeed import compat  # noqa: F401  (must come first: it selects Keras 2)

__version__ = "0.1.0"

# public name -> module that defines it
_PUBLIC = {
    # a BERT in
    "BertConfig": "tfspeed.models", "build_classifier": "tfspeed.models", "build_encoder": "tfspeed.models",
    "build_classifier_from": "tfspeed.hub", "export_encoder": "tfspeed.hub", "export_huggingface": "tfspeed.hub",
    # text in, fine-tuning
    "DataConfig": "tfspeed.data", "load_dataset": "tfspeed.data", "Tokenizer": "tfspeed.data",
    "EncodedDataset": "tfspeed.data", "FinetuneConfig": "tfspeed.train", "fit_classifier": "tfspeed.train",
    "accuracy": "tfspeed.train",
    # compress
    "PruneConfig": "tfspeed.compress", "prune": "tfspeed.compress", "strip": "tfspeed.compress",
    "pruning_callbacks": "tfspeed.compress", "StructuredConfig": "tfspeed.compress",
    "prune_structured": "tfspeed.compress", "LowRankConfig": "tfspeed.compress", "factorize": "tfspeed.compress",
    "QATConfig": "tfspeed.compress", "quantize": "tfspeed.compress",
    "calibrate": "tfspeed.compress", "qat_fit": "tfspeed.compress", "DistillConfig": "tfspeed.compress",
    "Distiller": "tfspeed.compress", "distill": "tfspeed.compress", "fit_student": "tfspeed.compress",
    "student_from_teacher": "tfspeed.compress", "trim_vocabulary": "tfspeed.compress",
    # export, measure
    "ExportConfig": "tfspeed.export", "convert": "tfspeed.export", "save_tflite": "tfspeed.export",
    "ProfileConfig": "tfspeed.profile", "profile_models": "tfspeed.profile",
    # orchestrate
    "RecipeConfig": "tfspeed.recipe", "optimize": "tfspeed.recipe", "custom_objects": "tfspeed.artifacts",
    "load_model_dir": "tfspeed.artifacts", "save_model_dir": "tfspeed.artifacts",
}

__all__ = sorted(_PUBLIC) + ["__version__"]


def __getattr__(name):
    if name in _PUBLIC:
        value = getattr(importlib.import_module(_PUBLIC[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'tfspeed' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_PUBLIC))
