"""The module paths of the previous release keep working for one release, with a DeprecationWarning, and the new
verbs behind the same names need none."""

import warnings

import harness
import pytest

from tfspeed.models import build_classifier


def test_old_prune_module_forwards_with_a_warning():
    from tfspeed.compress import prune as P  # the old `from tfspeed.compress import prune as P`
    from tfspeed.compress import pruning
    from tfspeed.export import sparsity

    with pytest.warns(DeprecationWarning, match="`tfspeed.compress.prune.strip` is deprecated.*compress.pruning"):
        assert P.strip is pruning.strip
    with pytest.warns(DeprecationWarning, match="use `tfspeed.export.sparsity.sparsity_report`"):
        assert P.sparsity_report is sparsity.sparsity_report  # the old one converted to .tflite by default
    with pytest.warns(DeprecationWarning):
        from tfspeed.compress.prune import schedule_for_epochs
    assert schedule_for_epochs is pruning.schedule_for_epochs


def test_the_verbs_behind_the_old_names_need_no_warning():
    from tfspeed.compress import prune, strip

    model = build_classifier(harness.tiny_config())
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        pruned = prune(model, sparsity=0.5, schedule="constant", frequency=1)
        assert strip(pruned).count_params() == model.count_params()


def test_old_distill_module_keeps_the_stage_function():
    from tfspeed.compress import distill, distillation
    from tfspeed.stages.distill import distill_to_dir

    with pytest.warns(DeprecationWarning, match="use `tfspeed.stages.distill.distill_to_dir`"):
        assert distill.distill is distill_to_dir  # the old `tfspeed.compress.distill.distill(teacher_dir, data, ...)`
    with pytest.warns(DeprecationWarning):
        assert distill.Distiller is distillation.Distiller
    with pytest.raises(AttributeError, match="has no attribute 'nothing_here'"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _ = distill.nothing_here


def test_old_finetune_warns_and_names_the_stage():
    from tfspeed.train import finetune

    with pytest.warns(DeprecationWarning, match="tfspeed.stages.finetune.run"), pytest.raises(ValueError):
        finetune("bert-tiny-random", "rotten_tomatoes", epochs=0)
