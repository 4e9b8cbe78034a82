"""`DistillConfig`: JSON round trip with non-default values, each check from both sides of its limit, unknown keys
refused, and the command-line flags built from it (`--student-layers 0,2,4`, `--no-cache-teacher-logits`)."""

import argparse
import dataclasses
import json

import pytest

from tfspeed.compress.distillation import DistillConfig, LayerStrategy, select_layers

NON_DEFAULT = dict(layers=(0, 2), layer_strategy="last", hidden_size=16, num_heads=2, intermediate_size=24, alpha=0.3,
                   temperature=4.0, hidden_weight=0.5, attention_weight=2.0, layer_map=(1, 3), epochs=5, batch_size=8,
                   learning_rate=3e-5, cache_teacher_logits=False, seed=7, teacher_learning_rate=1e-5,
                   teacher_alpha=0.2, anchor_weight=0.5, stages=(4, 2), unlabelled="more.txt", augment=2,
                   augment_rate=0.3)
# `mode="two-way"` refuses the intermediate losses set above: it round-trips in a config of its own
TWO_WAY = dict(mode="two-way", anchor_weight=1.0)


def test_roundtrip_with_non_default_values():
    config = DistillConfig(**NON_DEFAULT)
    defaults = DistillConfig()
    assert set(NON_DEFAULT) | set(TWO_WAY) == set(DistillConfig.field_names())  # every setting is exercised
    for f in dataclasses.fields(DistillConfig):
        if f.name != "mode":
            assert getattr(config, f.name) != getattr(defaults, f.name), f.name
    two_way = DistillConfig(**TWO_WAY)
    assert DistillConfig.from_dict(json.loads(json.dumps(two_way.to_dict()))) == two_way != defaults
    data = json.loads(json.dumps(config.to_dict()))
    assert data["layers"] == [0, 2] and data["layer_strategy"] == "last" and data["layer_map"] == [1, 3]
    again = DistillConfig.from_dict(data)
    assert again == config and again.layer_strategy is LayerStrategy.LAST and again.layers == (0, 2)
    assert DistillConfig.resolve(config, epochs=1) == dataclasses.replace(config, epochs=1)


def test_defaults_are_those_of_the_distill_stage():
    c = DistillConfig()
    assert (c.layers, c.layer_strategy, c.alpha, c.temperature, c.epochs, c.batch_size, c.learning_rate) == (
        3, "every_other", 0.5, 2.0, 3, 32, 1e-4)
    assert c.cache_teacher_logits and c.layer_map is None and c.hidden_size is None and not c.intermediate_losses


@pytest.mark.parametrize("name, bad, good", [
    ("alpha", 1.5, 1.0), ("alpha", -0.01, 0.0), ("temperature", 0.0, 1e-6), ("hidden_weight", -0.1, 0.0),
    ("attention_weight", -1.0, 0.0), ("epochs", 0, 1), ("batch_size", 0, 1), ("learning_rate", 0.0, 1e-9),
    ("layers", 0, 1), ("layers", (), (0,)), ("layers", (-1, 2), (0, 2)), ("layer_map", (-1,), (0,)),
    ("hidden_size", 0, 1), ("num_heads", 0, 1), ("intermediate_size", 0, 1), ("seed", 1.5, 1),
    ("cache_teacher_logits", "yes", False), ("layer_strategy", "odd", "LAST"),
])
def test_checks_from_both_sides(name, bad, good):
    shown = list(bad) if isinstance(bad, tuple) else bad
    with pytest.raises(ValueError, match=rf"Received an invalid value for `{name}`.*Received: {name}=") as info:
        DistillConfig(**{name: bad})
    assert str(info.value).endswith(f"{name}={shown!r}")
    DistillConfig(**{name: good})


def test_unknown_keys_are_refused():
    with pytest.raises(ValueError, match=r"Unknown DistillConfig settings \['alfa'\]"):
        DistillConfig.from_dict({"alpha": 0.3, "alfa": 0.3})
    with pytest.raises(TypeError, match=r"Unknown DistillConfig settings \['student_layers'\]"):
        DistillConfig.resolve(None, student_layers=2)


def test_command_line_flags():
    parser = DistillConfig.add_arguments(argparse.ArgumentParser())
    args = parser.parse_args(["--student-layers", "0,2,4", "--layer-strategy", "uniform", "--alpha", "0.25",
                              "--no-cache-teacher-logits", "--layer-map", "1,2,3"])
    config = DistillConfig.from_args(args)
    assert config == DistillConfig(layers=(0, 2, 4), layer_strategy="uniform", alpha=0.25, layer_map=(1, 2, 3),
                                   cache_teacher_logits=False)
    assert DistillConfig.from_args(parser.parse_args(["--student-layers", "2"])).layers == 2
    assert DistillConfig.from_args(parser.parse_args([])) == DistillConfig()
    with pytest.raises(SystemExit):
        parser.parse_args(["--student-layers", "two"])
    with pytest.raises(SystemExit):
        parser.parse_args(["--layer-strategy", "odd"])


def test_layer_strategy_is_the_choice_of_select_layers():
    assert LayerStrategy.choices() == ["every_other", "uniform", "first", "last"]
    assert [select_layers(6, 2, s) for s in LayerStrategy] == [[0, 2], [0, 3], [0, 1], [4, 5]]
