"""Knowledge distillation: a smaller student learns from a fine-tuned teacher.

| module | holds |
|---|---|
| `config` | `DistillConfig` (the settings: student shape, loss, fit), `LayerStrategy`, the shared checks |
| `losses` | `distillation_loss` (Hinton's soft targets), `soft_cross_entropy_kl`, TinyBERT's masked MSEs |
| `internals` | views of a classifier's hidden states and attention maps, `num_layers_of`, `uniform_layer_map` |
| `distiller` | `Distiller`, the Keras `Model` you `compile` and `fit` |
| `students` | `select_layers`, `student_from_teacher`, `native_teacher` |
| `teacher` | `teacher_logits`, computed once and optionally cached on disk |
| `mutual` | `MutualDistiller` and `fit_mutual`: two-way distillation (teacher and student learn from each other) |
| `augment` | more text than the labelled set: `augment_texts` (word replacement, deletion, swaps), `read_unlabelled` |
| `training` | the verbs: `distill` (build a student, fit it), `fit_student` (fit a given one), `distill_chain` (TAKD) |

The whole stage, from a teacher model directory to a student model directory, is `tfspeed.stages.distill.run`
(`tfspeed distill`).

Example:

>>> from tfspeed.compress.distillation import DistillConfig, distill
>>> from tfspeed.data import EncodedSplit
>>> from tfspeed.hub import sample_inputs
>>> from tfspeed.models import BertConfig, build_classifier
>>> config = BertConfig(vocab_size=100, hidden_size=16, num_layers=4, num_heads=2, intermediate_size=32,
...                     max_positions=16)
>>> teacher = build_classifier(config, num_classes=2)
>>> train = EncodedSplit(sample_inputs(config, batch=8, seq_length=8), [0, 1] * 4)
>>> student, history = distill(teacher, train, config=DistillConfig(layers=2, epochs=1), verbose=0)
>>> len([l for l in student.layers if l.name.endswith("_output_layer_norm")])
2
"""

from tfspeed.compress.distillation.augment import augment_texts, read_unlabelled
from tfspeed.compress.distillation.config import DistillConfig, DistillMode, LayerStrategy
from tfspeed.compress.distillation.distiller import Distiller
from tfspeed.compress.distillation.internals import num_layers_of, uniform_layer_map
from tfspeed.compress.distillation.losses import distillation_loss, soft_cross_entropy_kl
from tfspeed.compress.distillation.mutual import MutualDistiller, fit_mutual
from tfspeed.compress.distillation.students import LAYER_STRATEGIES, native_teacher, select_layers, student_from_teacher
from tfspeed.compress.distillation.teacher import teacher_logits
from tfspeed.compress.distillation.training import distill, distill_chain, fit_student

__all__ = ["DistillConfig", "DistillMode", "LayerStrategy", "LAYER_STRATEGIES", "Distiller", "MutualDistiller",
           "augment_texts", "distill", "distill_chain", "distillation_loss", "fit_mutual", "fit_student",
           "read_unlabelled", "native_teacher", "num_layers_of", "select_layers", "soft_cross_entropy_kl",
           "student_from_teacher", "teacher_logits", "uniform_layer_map"]
