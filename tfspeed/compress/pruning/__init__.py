"""Magnitude pruning of a BERT with TFMOT, scheduled through `fit`, for native tfspeed BERTs and `hub.KerasLayer` BERTs.

The paired verbs return NEW models and never touch the caller's: `prune(model, config)` wraps every targeted kernel
with TFMOT's `PruneLowMagnitude` (attention q/k/v/output, FFN intermediate/output and pooler; embeddings and classifier
on request), `strip(model)` removes the wrappers and returns the plain model whose kernels hold the zeros.

| module | holds |
|---|---|
| `config` | `PruneConfig`: every setting, its default and its check |
| `schedules` | `Schedule`, `make_schedule`, `schedule_for_epochs` (TFMOT schedules from steps or epochs) |
| `targets` | which kernels are pruned: native layer names, hub variable names |
| `hub_layer` | `PrunableKerasLayer`: a `hub.KerasLayer` BERT TFMOT can prune |
| `magnitude` | `prune`, `strip`, `PrunedModel`, `prune_scope`, `custom_objects` |
| `callbacks` | `pruning_callbacks`, `SparsityLogger` |
| `gradual` | `prune_and_fit`: prune and fit, in one stage or through a milder m:n pattern first |
| `report` | `sparsity_report`, `targeted_weights` (the .tflite sizes: `tfspeed.export.sparsity`) |

Unstructured sparsity makes the gzip of the weights and of the .tflite smaller, not the model faster: for speed see
`tfspeed.compress.structured`.

Example (a tiny random-weight BERT, pruned to 50% in one step of fitting: `frequency=1` updates the masks at every
step, and `run_eagerly=True` spares tracing a graph for that one step; leave it out for real training):

>>> from tfspeed.compat import keras
>>> from tfspeed.compress import pruning
>>> from tfspeed.data import EncodedSplit
>>> from tfspeed.hub import sample_inputs
>>> from tfspeed.models import BertConfig, build_classifier
>>> config = BertConfig(vocab_size=100, hidden_size=16, num_layers=2, num_heads=2, intermediate_size=32,
...                     max_positions=16)
>>> model = build_classifier(config, num_classes=2)
>>> train = EncodedSplit(sample_inputs(config, batch=8, seq_length=8), [0, 1] * 4)
>>> pruned = pruning.prune(model, sparsity=0.5, schedule="constant", frequency=1)
>>> pruned.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True), run_eagerly=True)
>>> _ = pruned.fit(train.features, train.labels, epochs=1, callbacks=pruning.pruning_callbacks(), verbose=0)
>>> small = pruning.strip(pruned)
>>> pruning.sparsity_report(small)["sparsity"]
0.5

On a real model, let the sparsity grow over the fine-tuning instead (`schedule="polynomial"`, the default, with the
schedule's steps from `epochs` and `steps_per_epoch`), e.g.
`pruning.prune(model, sparsity=0.5, epochs=2, steps_per_epoch=300)`.
"""

from tensorflow_model_optimization.python.core.sparsity.keras.pruning_wrapper import PruneLowMagnitude

from tfspeed.compress.pruning.callbacks import SparsityLogger, pruning_callbacks
from tfspeed.compress.pruning.config import PruneConfig
from tfspeed.compress.pruning.gradual import prune_and_fit
from tfspeed.compress.pruning.hub_layer import PrunableKerasLayer
from tfspeed.compress.pruning.magnitude import PrunedModel, custom_objects, prune, prune_scope, strip
from tfspeed.compress.pruning.report import sparsity_report, targeted_weights
from tfspeed.compress.pruning.schedules import SCHEDULES, Schedule, make_schedule, schedule_for_epochs

__all__ = [
    "PrunableKerasLayer",
    "PruneConfig",
    "PruneLowMagnitude",  # TFMOT's wrapper class, for isinstance checks on a pruned model's layers
    "PrunedModel",
    "SCHEDULES",
    "Schedule",
    "SparsityLogger",
    "custom_objects",
    "make_schedule",
    "prune",
    "prune_and_fit",
    "prune_scope",
    "pruning_callbacks",
    "schedule_for_epochs",
    "sparsity_report",
    "strip",
    "targeted_weights",
]
