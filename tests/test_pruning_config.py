"""The settings of pruning: `PruneConfig` and `StructuredConfig` round-trip, check every limit from both sides, refuse
unknown keys, and a verb called with a config does exactly what the keyword call does. No training: seconds."""

import argparse
import json
import types

import harness
import pytest
import tensorflow_model_optimization as tfmot

from tfspeed.compat import keras
from tfspeed.compress import pruning as P
from tfspeed.compress import structured as S
from tfspeed.compress.pruning import PruneConfig, Schedule
from tfspeed.compress.structured import Method, Ranking, StructuredConfig
from tfspeed.models import build_classifier, build_encoder, config_of


@pytest.fixture(scope="module")
def classifier():
    keras.utils.set_random_seed(0)
    return build_classifier(harness.tiny_config())


def _wrappers(model) -> dict:
    """{wrapped layer name: (schedule config, m_by_n)} of a pruned model."""
    return {l.layer.name: (l.pruning_schedule.get_config(), l.sparsity_m_by_n) for l in model.layers
            if isinstance(l, P.PruneLowMagnitude)}


# ======================================================================================================================
# PruneConfig
# ======================================================================================================================

NON_DEFAULT_PRUNE = dict(sparsity=0.7, schedule="constant", m_by_n=(2, 4), gradual=True, include_embeddings=True,
                         embedding_sparsity=0.3, include_classifier=True, layers=("layer_0_query", "layer_1_output"),
                         begin_step=5, end_step=50, end_epoch=1.5, frequency=7, steps_per_epoch=11, epochs=3,
                         learning_rate=1e-3, batch_size=8, distill=True, hidden_weight=0.5, log_dir="logs")


def test_prune_config_round_trips_through_json():
    config = PruneConfig(**NON_DEFAULT_PRUNE)
    data = json.loads(json.dumps(config.to_dict()))
    assert data["schedule"] == "constant" and data["m_by_n"] == [2, 4]
    again = PruneConfig.from_dict(data)
    assert again == config and again.schedule is Schedule.CONSTANT and again.m_by_n == (2, 4)
    assert set(data) == set(NON_DEFAULT_PRUNE)  # every setting is saved, none is left at its default here
    assert all(data[k] != v for k, v in PruneConfig().to_dict().items() if k in data)


def test_prune_config_defaults_are_the_old_keyword_defaults():
    config = PruneConfig()
    assert (config.sparsity, config.target_sparsity, config.schedule, config.m_by_n) == (None, 0.5, "polynomial", None)
    assert (config.begin_step, config.end_step, config.frequency, config.layers) == (0, None, None, None)
    assert (config.epochs, config.learning_rate, config.batch_size) == (2, 3e-5, 32)  # `tfspeed prune`'s
    assert not (config.include_embeddings or config.include_classifier or config.gradual or config.distill)


@pytest.mark.parametrize("name, bad, good, match", [
    ("sparsity", 1.0, 0.99, r"`sparsity`, expected a float in \[0, 1\). Received: sparsity=1.0"),
    ("sparsity", -0.1, 0.0, r"Received: sparsity=-0.1"),
    ("embedding_sparsity", 1.0, 0.99, r"`embedding_sparsity`, expected a float in \[0, 1\)"),
    ("m_by_n", (2, 2), (1, 2), r"`m_by_n`, expected two integers \(m, n\) with 0 < m < n.*Received: m_by_n=\(2, 2\)"),
    ("m_by_n", "4:2", "2:4", r"Received: m_by_n=\(4, 2\)"),
    ("schedule", "cubic", "constant", r"`schedule`, expected one of \['polynomial', 'constant'\].*schedule='cubic'"),
    ("begin_step", -1, 0, r"`begin_step`, expected an integer >= 0. Received: begin_step=-1"),
    ("end_step", 10, 11, r"`end_step`, expected an integer > begin_step.*begin_step=10, end_step=10"),
    ("frequency", 0, 1, r"`frequency`, expected a positive integer. Received: frequency=0"),
    ("end_epoch", 0.0, 0.1, r"`end_epoch`, expected a positive number. Received: end_epoch=0.0"),
    ("steps_per_epoch", 0, 1, r"`steps_per_epoch`, expected a positive integer"),
    ("epochs", 0, 1, r"`epochs`, expected a positive number. Received: epochs=0"),
    ("learning_rate", 0.0, 1e-7, r"`learning_rate`, expected a positive number"),
    ("batch_size", 0, 1, r"`batch_size`, expected a positive integer. Received: batch_size=0"),
    ("hidden_weight", -0.5, 0.0, r"`hidden_weight`, expected a number >= 0"),
])
def test_prune_config_limits_from_both_sides(name, bad, good, match):
    base = {"begin_step": 10} if name == "end_step" else {}
    with pytest.raises(ValueError, match=match):
        PruneConfig(**base, **{name: bad})
    assert getattr(PruneConfig(**base, **{name: good}), name) == {"2:4": (2, 4)}.get(good, good)


def test_prune_config_normalises_m_by_n_and_layers():
    assert PruneConfig(m_by_n="2:4").m_by_n == (2, 4) and PruneConfig(m_by_n=[1, 4]).m_by_n == (1, 4)
    assert PruneConfig(layers="layer_0_query").layers == ("layer_0_query",)
    assert PruneConfig(layers=["a", "b"]).layers == ("a", "b")


def test_prune_config_relations():
    with pytest.raises(ValueError, match=r"gradual=True without m_by_n.*Received: m_by_n=None"):
        PruneConfig(gradual=True)
    with pytest.raises(ValueError, match=r"`m_by_n` with gradual=True, expected M:N with M >= 2.*m_by_n=\(1, 4\)"):
        PruneConfig(gradual=True, m_by_n=(1, 4))
    assert PruneConfig(gradual=True, m_by_n=(2, 4)).gradual_from == (1, 4)
    assert PruneConfig(m_by_n=(2, 4)).gradual_from is None
    with pytest.raises(ValueError, match=r"hidden_weight=0.5 without distill=True"):
        PruneConfig(hidden_weight=0.5)
    assert PruneConfig(hidden_weight=0.5, distill=True).hidden_weight == 0.5


def test_prune_config_refuses_unknown_keys(classifier):
    with pytest.raises(ValueError, match=r"Unknown PruneConfig settings \['sparsty'\]"):
        PruneConfig.from_dict({"sparsty": 0.5})
    with pytest.raises(TypeError, match=r"Unknown PruneConfig settings \['sparsty'\]"):
        P.prune(classifier, sparsty=0.5)


def test_prune_config_flags():
    parser = PruneConfig.add_arguments(argparse.ArgumentParser())
    args = parser.parse_args(["--m-by-n", "2:4", "--gradual", "--schedule", "constant", "--layers", "a,b",
                              "--epochs", "3", "--include-embeddings"])
    config = PruneConfig.from_args(args)
    assert config == PruneConfig(m_by_n=(2, 4), gradual=True, schedule="constant", layers=("a", "b"), epochs=3,
                                 include_embeddings=True)
    assert config.sparsity is None  # unset: the command can tell "only --structured" from "--sparsity 0.5"
    with pytest.raises(SystemExit):  # choices come from the enum
        parser.parse_args(["--schedule", "cubic"])


@pytest.mark.parametrize("settings", [
    dict(sparsity=0.6, epochs=2, steps_per_epoch=4),
    dict(sparsity=0.3, schedule="constant", m_by_n=(2, 4), frequency=3, include_embeddings=True,
         include_classifier=True, embedding_sparsity=0.4),
    dict(schedule="polynomial", begin_step=2, end_step=40, layers=["layer_1_intermediate", "pooler_dense"]),
])
def test_prune_with_a_config_is_the_keyword_call(classifier, settings):
    by_keywords = _wrappers(P.prune(classifier, **settings))
    by_config = _wrappers(P.prune(classifier, PruneConfig(**settings)))
    assert by_config == by_keywords and by_keywords
    # a config plus keyword overrides: the overrides win
    mixed = _wrappers(P.prune(classifier, PruneConfig(**{**settings, "frequency": 9}),
                              frequency=settings.get("frequency")))
    assert mixed == by_keywords


def test_prune_schedule_object_is_not_a_setting(classifier):
    schedule = tfmot.sparsity.keras.ConstantSparsity(0.8, begin_step=0, frequency=1)
    pruned = _wrappers(P.prune(classifier, PruneConfig(include_classifier=True), schedule=schedule))
    assert pruned["classifier"][0] == schedule.get_config()
    with pytest.raises(ValueError, match="Pass either a TFMOT schedule object or `sparsity`, not both"):
        P.prune(classifier, PruneConfig(sparsity=0.5), schedule=schedule)


def test_prune_and_fit_takes_the_gradual_route_from_the_config(classifier):
    seen = []

    def fit(pruned, epochs):
        seen.append(({w[1] for w in _wrappers(pruned).values()}, epochs))
        return types.SimpleNamespace(history={"loss": [1.0] * epochs})

    config = PruneConfig(m_by_n=(2, 4), gradual=True, schedule="constant", frequency=1, epochs=2)
    _, history = P.prune_and_fit(classifier, fit, config=config)
    assert seen == [({(1, 4)}, 1), ({(2, 4)}, 2)] and history == {"loss": [1.0] * 3}
    seen.clear()
    P.prune_and_fit(classifier, fit, 1, m_by_n=(2, 4), gradual_from=(1, 4), schedule="constant", frequency=1)
    assert seen == [({(1, 4)}, 1), ({(2, 4)}, 1)]


# ======================================================================================================================
# StructuredConfig
# ======================================================================================================================

def test_structured_config_round_trips_through_json():
    config = StructuredConfig(heads=0.25, ffn=0.1, layers=(0,), method="magnitude", num_batches=4, batch_size=8,
                              ranking="layer")
    data = json.loads(json.dumps(config.to_dict()))
    assert data == {"heads": 0.25, "ffn": 0.1, "layers": [0], "method": "magnitude", "num_batches": 4,
                    "batch_size": 8, "ranking": "layer"}
    again = StructuredConfig.from_dict(data)
    assert again == config and again.method is Method.MAGNITUDE and again.ranking is Ranking.LAYER
    assert StructuredConfig.from_dict({"layers": 0.5}).layers == 0.5


@pytest.mark.parametrize("name, bad, good, match", [
    ("heads", 1.0, 0.99, r"`heads`, expected a fraction to remove in \[0, 1\). Received: heads=1.0"),
    ("ffn", -0.5, 0.0, r"Received: ffn=-0.5"),
    ("layers", 1.0, 0.99, r"`layers`, expected a fraction to remove in \[0, 1\)"),
    ("method", "random", "magnitude", r"`method`, expected one of \('taylor', 'magnitude'\). Received: method='rand"),
    ("ranking", "best", "layer", r"`ranking`, expected one of \('global', 'layer'\)"),
    ("num_batches", 0, 1, r"`num_batches`, expected a positive integer"),
    ("batch_size", 0, 1, r"`batch_size`, expected a positive integer"),
])
def test_structured_config_limits_from_both_sides(name, bad, good, match):
    with pytest.raises(ValueError, match=match):
        StructuredConfig(**{name: bad})
    assert getattr(StructuredConfig(**{name: good}), name) == good


def test_structured_config_refuses_unknown_keys_and_parses_flags():
    with pytest.raises(ValueError, match=r"Unknown StructuredConfig settings \['head'\]"):
        StructuredConfig.from_dict({"head": 0.5})
    with pytest.raises(TypeError, match=r"Unknown StructuredConfig settings \['head'\]"):
        S.prune_structured(None, head=0.5)
    parser = StructuredConfig.add_arguments(argparse.ArgumentParser())
    assert StructuredConfig.from_args(parser.parse_args(["--remove-layers", "4+5"])).layers == (4, 5)
    args = parser.parse_args(["--remove-layers", "0.25", "--score-batches", "3", "--method", "magnitude"])
    assert StructuredConfig.from_args(args) == StructuredConfig(layers=0.25, num_batches=3, method="magnitude")


def test_prune_structured_with_a_config_is_the_keyword_call():
    keras.utils.set_random_seed(1)
    encoder = build_encoder(harness.tiny_config())
    settings = dict(heads=0.5, ffn=0.25, layers=[1], method="magnitude", ranking="layer")
    _, by_keywords = S.prune_structured(encoder, return_plan=True, **settings)
    small, by_config = S.prune_structured(encoder, StructuredConfig(**settings), return_plan=True)
    assert by_config == by_keywords and by_config.layers == [0]  # layer 1 removed
    assert config_of(small).num_layers == 1 and config_of(small).layer_num_heads == (2,)


def test_to_tflite_refuses_an_unknown_mode(classifier):
    from tfspeed.export.sparsity import to_tflite

    with pytest.raises(ValueError, match=r"`mode`, expected 'float' or 'dynamic'. Received: mode='int8'"):
        to_tflite(classifier, "int8")
