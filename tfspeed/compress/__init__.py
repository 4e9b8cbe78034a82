"""Compress a BERT: pruning, structured pruning, low-rank factorisation, quantization-aware training, distillation,
vocabulary trimming.

| package / module | verbs | config |
|---|---|---|
| `pruning` | `prune`, `strip`, `prune_and_fit`, `pruning_callbacks`, `schedule_for_epochs` | `PruneConfig` |
| `structured` | `prune_structured`, `importance`, `plan`, `shrink`, `parameter_count` | `StructuredConfig` |
| `lowrank` | `factorize`, `is_factorised`, `dense_macs` | `LowRankConfig` |
| `quantization` | `quantize`, `calibrate`, `qat_fit`, `quantize_scope` | `QATConfig` |
| `distillation` | `distill`, `fit_student`, `distill_chain`, `Distiller`, `MutualDistiller` | `DistillConfig` |
| `vocab` | `trim_vocabulary`, `kept_token_ids` | `VocabConfig` |

The verbs are TFMOT's shape: `tfspeed.compress.prune(model, config)` / `tfspeed.compress.strip(model)` return new
models and leave the caller's untouched. Names are imported on first use, so `import tfspeed.compress` stays cheap.

The module paths of the previous release, `tfspeed.compress.prune`, `tfspeed.compress.qat` and
`tfspeed.compress.distill`, still work for one release: reading a name through them warns (`DeprecationWarning`) and
forwards to the new package. `tfspeed.compress.prune` and `tfspeed.compress.distill` are also the verbs themselves, so
`prune(model, sparsity=0.5)` and `distill(teacher, train)` need no warning.
"""

import importlib
import sys
import types
import warnings

_EXPORTS = {
    "tfspeed.compress.pruning": ("PruneConfig", "Schedule", "prune", "strip", "prune_and_fit", "prune_scope",
                                 "make_schedule", "schedule_for_epochs", "pruning_callbacks", "SparsityLogger",
                                 "PrunableKerasLayer", "targeted_weights"),
    "tfspeed.compress.structured": ("StructuredConfig", "prune_structured", "importance", "plan", "shrink",
                                    "parameter_count"),
    "tfspeed.compress.quantization": ("QATConfig", "quantize", "calibrate", "qat_fit", "quantize_scope",
                                      "is_quantized"),
    "tfspeed.compress.distillation": ("DistillConfig", "Distiller", "MutualDistiller", "distill", "distill_chain",
                                      "fit_student", "fit_mutual", "distillation_loss", "select_layers",
                                      "student_from_teacher", "teacher_logits", "augment_texts"),
    "tfspeed.compress.lowrank": ("LowRankConfig", "factorize", "is_factorised", "dense_macs"),
    "tfspeed.compress.vocab": ("VocabConfig", "trim_vocabulary", "kept_token_ids"),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_WHERE)


class _DeprecatedModule(types.ModuleType):
    """An old module path kept for one release: names read through it warn and come from the new place; a verb's
    alias (`prune`, `distill`) is also callable as the verb, without a warning."""

    def __init__(self, name: str, target: str, verb=None, moved=None):
        super().__init__(name, f"Deprecated alias of `{target}`.")
        self._target, self._verb, self._moved = target, verb, dict(moved or {})

    def __call__(self, *args, **kwargs):
        if self._verb is None:
            raise TypeError(f"'{self.__name__}' is a module, not a function")
        return _resolve(self._verb)(*args, **kwargs)

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        where = self._moved.get(name, self._target)
        warnings.warn(f"`{self.__name__}.{name}` is deprecated and will be removed in the next release; use "
                      f"`{where.replace(':', '.')}{'' if ':' in where else '.' + name}`.", DeprecationWarning,
                      stacklevel=2)
        if ":" in where:
            return _resolve(where)
        return _find(where, name, self.__name__)


def _resolve(path: str):
    module, _, attr = path.partition(":")
    return getattr(importlib.import_module(module), attr)


def _find(package: str, name: str, alias: str):
    """`name` from `package` or, for the private helpers callers reached into, from one of its modules."""
    import pkgutil

    pkg = importlib.import_module(package)
    if hasattr(pkg, name):
        return getattr(pkg, name)
    for info in pkgutil.iter_modules(getattr(pkg, "__path__", [])):
        module = importlib.import_module(f"{package}.{info.name}")
        if hasattr(module, name):
            return getattr(module, name)
    raise AttributeError(f"module '{alias}' has no attribute {name!r}")


_ALIASES = {
    "prune": _DeprecatedModule(
        "tfspeed.compress.prune", "tfspeed.compress.pruning", verb="tfspeed.compress.pruning:prune",
        moved={"sparsity_report": "tfspeed.export.sparsity:sparsity_report",
               "to_tflite": "tfspeed.export.sparsity:to_tflite"}),
    "qat": _DeprecatedModule(
        "tfspeed.compress.qat", "tfspeed.compress.quantization",
        moved={"to_tflite": "tfspeed.export.quantized:to_tflite",
               "int8_fractions": "tfspeed.export.quantized:int8_fractions"}),
    "distill": _DeprecatedModule(
        "tfspeed.compress.distill", "tfspeed.compress.distillation", verb="tfspeed.compress.distillation:distill",
        moved={"distill": "tfspeed.stages.distill:distill_to_dir"}),
}
for _name, _alias in _ALIASES.items():
    sys.modules[_alias.__name__] = _alias


def __getattr__(name):
    if name in _ALIASES:  # `tfspeed.compress.prune` / `.distill`: the verb (callable) and the old module in one
        return _ALIASES[name]
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'tfspeed.compress' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_WHERE))
