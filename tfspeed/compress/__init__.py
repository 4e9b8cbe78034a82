"""Compress a BERT: TFMOT pruning and structured pruning, quantization-aware training, distillation, vocabulary trimming.

| module | public surface |
|---|---|
| `prune` | `prune`, `strip`, `prune_and_fit`, `make_schedule`, `schedule_for_epochs`, `pruning_callbacks`, `SparsityLogger`, `sparsity_report`, `PrunableKerasLayer`, `prune_scope` |
| `structured` | `prune_structured`, `importance`, `plan`, `shrink`, `parameter_count` |
| `qat` | `quantize`, `qat_fit`, `calibrate`, `to_tflite`, `quantize_scope` |
| `distill` | `Distiller`, `distill`, `distillation_loss`, `select_layers`, `student_from_teacher`, `teacher_logits` |
| `vocab` | `trim_vocabulary`, `kept_token_ids` |

Names are imported on first use, so `import tfspeed.compress` stays cheap. The verbs named like their module
(`prune.prune`, `distill.distill`) are reached through the module: `from tfspeed.compress.prune import prune`.
"""

import importlib

_EXPORTS = {
    "prune": ("strip", "prune_and_fit", "make_schedule", "schedule_for_epochs", "pruning_callbacks", "SparsityLogger",
              "sparsity_report", "PrunableKerasLayer", "prune_scope"),
    "structured": ("prune_structured", "importance", "plan", "shrink", "parameter_count"),
    "qat": ("quantize", "qat_fit", "calibrate", "to_tflite", "quantize_scope"),
    "distill": ("Distiller", "distillation_loss", "select_layers", "student_from_teacher", "teacher_logits"),
    "vocab": ("trim_vocabulary", "kept_token_ids"),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_WHERE)


def __getattr__(name):
    if name in _WHERE:
        return getattr(importlib.import_module(f"tfspeed.compress.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'tfspeed.compress' has no attribute {name!r}")
