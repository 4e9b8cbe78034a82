"""Low-rank factorisation: ranks by ratio / rank / energy / budget, exactness on low-rank kernels, the report's numbers
against numpy, the factorised shape through get_config, model directories, TF-Hub and TFLite, TFMOT pruning and QAT
after it, structured pruning before and after it, the stage and `tfspeed factorize`, and bad input."""

import json

import numpy as np
import pytest
from harness import assert_same_outputs, run_litert_parity_test, run_save_reload_test

from tfspeed import artifacts
from tfspeed.cli import main
from tfspeed.compat import keras
from tfspeed.compress import lowrank as LR
from tfspeed.models import build_classifier, build_encoder, config_of
from tfspeed.models.bert import LOWRANK_SUFFIX, layer_by_name


def _classifier(config, seed=0):
    keras.utils.set_random_seed(seed)
    return build_classifier(config, num_classes=2)


def _product(model, name):
    first = layer_by_name(model, name + LOWRANK_SUFFIX).kernel.numpy()
    return first @ layer_by_name(model, name).kernel.numpy()


@pytest.fixture(scope="module")
def config():
    from harness import tiny_config

    # FFN kernels 32 x 96: break even at rank 24; attention 32 x 32 at 16
    return tiny_config(intermediate_size=96, dropout=0.0, attention_dropout=0.0)


@pytest.fixture(scope="module")
def inputs(config):
    from tfspeed.hub import sample_inputs

    return sample_inputs(config, batch=3, seq_length=12)


def test_low_rank_kernels_are_reproduced_exactly(config, inputs):
    model = _classifier(config)
    rng = np.random.default_rng(0)
    for name in LR.select_layers(model, "ffn"):
        layer = layer_by_name(model, name)
        m, n = layer.kernel.shape
        low = (rng.normal(size=(m, 8)) @ rng.normal(size=(8, n)) / 8).astype(np.float32)  # rank 8 exactly
        layer.set_weights([low, layer.bias.numpy()])
    small, report = LR.factorize(model, layers="ffn", energy=0.999999, return_report=True)
    assert {r.rank for r in report.layers} == {8} and all(r.energy > 0.999999 for r in report.layers)
    assert all(r.error < 1e-5 for r in report.layers)
    assert_same_outputs(model(inputs), small(inputs), atol=1e-5, what="rank-8 kernels at rank 8")


def test_ranks_by_ratio_rank_energy_and_budget(config):
    model = _classifier(config, seed=1)
    ffn = LR.select_layers(model, "ffn")
    assert ffn == [f"layer_{i}_{p}" for i in range(2) for p in ("intermediate", "output")]
    # ratio: half the multiply-adds of a 32 x 96 kernel is rank 12 -> 16 at a multiple of 8, 8 at a multiple of 4
    assert {r.rank for r in LR.plan(model, ratio=0.5).layers} == {16}
    assert {r.rank for r in LR.plan(model, ratio=0.5, multiple_of=4).layers} == {12}
    # energy: the smallest multiple of 8 whose singular values hold the energy, checked against numpy
    report = LR.plan(model, layers="all", energy=0.6)
    for r in report.factorised:
        s2 = np.linalg.svd(layer_by_name(model, r.name).kernel.numpy(), compute_uv=False) ** 2
        kept = np.cumsum(s2) / s2.sum()
        assert kept[r.rank - 1] >= 0.6 and (r.rank == 8 or kept[r.rank - 9] < 0.6), r.name
        assert r.energy == pytest.approx(kept[r.rank - 1], abs=1e-6)
    # budget: the chosen layers together within the budget, every factorised layer cheaper than its whole kernel
    report = LR.plan(model, layers="ffn,attention", budget=0.6)
    assert report.macs_after <= 0.6 * report.macs_before
    assert all(r.rank * sum(r.shape) < r.shape[0] * r.shape[1] for r in report.factorised)
    assert report.method == "budget" and report.encoder_macs_after < report.encoder_macs_before
    # a rank with no saving is skipped and said so
    report = LR.plan(model, layers="all", rank=16)
    skipped = {r.name: r.skipped for r in report.layers if r.skipped}
    assert "layer_0_query" in skipped and "saves only below rank 16.0" in skipped["layer_0_query"]
    assert all(r.rank == 16 for r in report.layers if r.name in ffn)


@pytest.mark.parametrize("sigma", ["split", "first", "second"])
def test_report_matches_the_factorised_weights(config, sigma):
    model = _classifier(config, seed=2)
    before = [w.copy() for w in model.get_weights()]
    small, report = LR.factorize(model, layers="ffn,pooler", ratio=0.4, sigma=sigma, return_report=True)
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights())), "the caller's model changed"
    for r in report.factorised:
        w = layer_by_name(model, r.name).kernel.numpy()
        error = np.linalg.norm(w - _product(small, r.name)) / np.linalg.norm(w)
        assert error == pytest.approx(r.error, abs=1e-4), r.name
        np.testing.assert_array_equal(layer_by_name(small, r.name).bias.numpy(), layer_by_name(model, r.name).bias)
    first = layer_by_name(small, "layer_0_intermediate" + LOWRANK_SUFFIX).kernel.numpy()
    second = layer_by_name(small, "layer_0_intermediate").kernel.numpy()
    if sigma == "split":  # sqrt(sigma) on both sides: the factors have the same column / row norms
        np.testing.assert_allclose(np.linalg.norm(first, axis=0), np.linalg.norm(second, axis=1), rtol=1e-4)
    elif sigma == "first":  # V^T has orthonormal rows
        np.testing.assert_allclose(second @ second.T, np.eye(second.shape[0]), atol=1e-5)
    else:
        np.testing.assert_allclose(first.T @ first, np.eye(first.shape[1]), atol=1e-5)


def test_factorised_shape_round_trips_everywhere(config, inputs, vocab_file, tmp_path):
    import tensorflow_hub as hub

    from tfspeed.hub import export_encoder, load_encoder
    from tfspeed.models import encoder_of

    model = _classifier(config, seed=3)
    small = LR.factorize(model, layers="all", ratio=0.5)
    ranks = dict(config_of(small).ranks)
    assert len(ranks) == 13 and ranks["layer_0_query"] == 8 and ranks["layer_0_intermediate"] == 16
    again = keras.Model.from_config(small.get_config(), custom_objects=artifacts.custom_objects())
    assert config_of(again) == config_of(small)
    run_save_reload_test(small, inputs, tmp_path)
    # a model directory, and its TF-Hub encoder within 1e-5 of the native one
    out = tmp_path / "dir"
    artifacts.save_model_dir(small, out, artifacts.ModelInfo(seq_length=12, label_names=["a", "b"], base="tiny",
                                                             stage="lowrank", vocab_path=str(vocab_file)))
    loaded, _ = artifacts.load_model_dir(out)
    assert config_of(loaded) == config_of(small)
    path = export_encoder(small, tmp_path / "encoder")
    theirs = hub.KerasLayer(str(path))(inputs)
    ours = encoder_of(small)(inputs, training=False)
    for key in ("pooled_output", "sequence_output"):
        np.testing.assert_allclose(theirs[key], ours[key], atol=1e-5)
    assert config_of(load_encoder(str(path))) == config_of(encoder_of(small))
    # the TFLite modes convert: float32 matches Keras, dynamic range stays close, int8 keeps every matmul int8
    run_litert_parity_test(small, inputs, "float32", atol=1e-4)
    run_litert_parity_test(small, inputs, "dynamic", atol=0.05)
    from tfspeed import export
    from tfspeed.export.ops import op_histogram

    int8 = export.convert(small, "int8", seq_length=12, calibration=inputs)
    matmuls = op_histogram(int8)["int8"]["FULLY_CONNECTED"]  # both factors of every factorised Dense
    assert matmuls["int8"] == matmuls["total"] >= 2 * 13 + 1, matmuls


def test_encoder_factorises_too(config, inputs):
    keras.utils.set_random_seed(5)
    encoder = build_encoder(config)
    small = LR.factorize(encoder, layers="qkv", rank=8)
    assert isinstance(small.output, dict) and len(config_of(small).ranks) == 6
    assert small(inputs)["sequence_output"].shape == encoder(inputs)["sequence_output"].shape


def test_tfmot_prunes_and_quantizes_every_dense_after_it(config, inputs):
    from tfspeed.compress.pruning import prune, pruning_callbacks, strip
    from tfspeed.compress.quantization import quantize
    from tfspeed.export.sparsity import sparsity_report

    small = LR.factorize(_classifier(config, seed=6), layers="ffn", ratio=0.5)
    pruned = prune(small, sparsity=0.5, schedule="constant", frequency=1)
    wrapped = {l.layer.name for l in pruned.layers if type(l).__name__ == "PruneLowMagnitude"}
    assert "layer_0_intermediate" + LOWRANK_SUFFIX in wrapped and "layer_0_intermediate" in wrapped
    pruned.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    pruned.fit(inputs, np.array([0, 1, 0]), epochs=2, callbacks=pruning_callbacks(), verbose=0)
    stripped = strip(pruned)
    factor = layer_by_name(stripped, "layer_1_output" + LOWRANK_SUFFIX).kernel.numpy()
    assert (factor == 0).mean() == pytest.approx(0.5, abs=0.01)
    assert sparsity_report(stripped, tflite=False)["sparsity"] >= 0.49
    quantized = quantize(small)
    annotated = [l for l in quantized.layers if type(l).__name__ == "QuantizeWrapperV2"]
    assert {"quant_layer_0_intermediate" + LOWRANK_SUFFIX, "quant_layer_0_intermediate"} <= {
        l.name for l in annotated}
    assert quantized(inputs).shape == (3, 2)


def test_structured_pruning_before_and_after_factorisation(config, inputs):
    from tfspeed.compress.structured import prune_structured

    model = _classifier(config, seed=7)
    small = LR.factorize(model, layers="all", rank=8)
    assert_same_outputs(small(inputs), prune_structured(small, heads=0.0, ffn=0.0, method="magnitude")(inputs),
                        atol=0.0, what="nothing removed from a factorised model")
    thinner = prune_structured(small, heads=0.5, ffn=0.5, layers=(0,), method="magnitude")
    c = config_of(thinner)
    assert c.num_layers == 1 and c.layer_num_heads == (2,) and c.layer_intermediate_sizes == (48,)
    assert dict(c.ranks)["layer_0_output"] == 8 and "pooler_dense" in dict(c.ranks)
    # keep-all shrink of layer 1 alone: the slices of factor kernels land where the outputs expect them
    kept = prune_structured(small, heads=0.0, ffn=0.0, layers=(0,), method="magnitude")
    for part in ("attention_output", "output", "query"):
        np.testing.assert_array_equal(_product(kept, f"layer_0_{part}"), _product(small, f"layer_1_{part}"))
    # and the other order: prune, then factorise the thinner model
    pruned = prune_structured(model, heads=0.5, ffn=0.5, method="magnitude")
    assert LR.factorize(pruned, layers="ffn", rank=8)(inputs).shape == (3, 2)


@pytest.mark.parametrize("kwargs, match", [
    (dict(rank=0), "`rank`, expected a positive integer"),
    (dict(ratio=1.0), "`ratio`, expected a fraction of the multiply-adds kept, in \\(0, 1\\)"),
    (dict(energy=0.0), "`energy`, expected a fraction of the squared singular values kept, in \\(0, 1\\]"),
    (dict(energy=1.5), "`energy`"),
    (dict(budget=1.0), "`budget`, expected a fraction of the chosen layers' multiply-adds kept"),
    (dict(budget=0.01), "even rank 8 on every chosen layer keeps"),
    (dict(ratio=0.5, energy=0.9), "expected one way to choose ranks"),
    (dict(layers="layer_9_query"), "'layer_9_query' matches no Dense layer"),
    (dict(layers="ffn,(unclosed"), "neither a group .* nor a regular expression"),
    (dict(layers="attention", rank=16), "No chosen layer gets cheaper"),
    (dict(multiple_of=0), "`multiple_of`, expected a positive integer"),
])
def test_bad_input(config, kwargs, match):
    with pytest.raises(ValueError, match=match):
        LR.factorize(_classifier(config, seed=8), **kwargs)


def test_refuses_foreign_wrapped_and_already_factorised_models(config):
    from tfspeed.compress.pruning import prune

    model = _classifier(config, seed=9)
    with pytest.raises(ValueError, match="native tfspeed BERT .* import the encoder first"):
        LR.factorize(keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)]))
    with pytest.raises(ValueError, match="TFMOT wrappers"):
        LR.factorize(prune(model, sparsity=0.5, schedule="constant"))
    small = LR.factorize(model, layers="ffn", rank=8)
    with pytest.raises(ValueError, match="already factorised"):
        LR.factorize(small, layers="ffn", rank=8)
    assert len(config_of(LR.factorize(small, layers="qkv", rank=8)).ranks) == 10  # other layers still can be
    with pytest.raises(ValueError, match="ranks\\['layer_0_query'\\]`, expected a positive integer"):
        config_of(small).replace(ranks={"layer_0_query": 0})
    with pytest.raises(ValueError, match="'layer_5_query' is not a Dense layer of this encoder"):
        config_of(small).replace(ranks={"layer_5_query": 8})


@pytest.fixture(scope="module")
def model_dir(vocab_file, sentiment_csv, tmp_path_factory):
    from harness import tiny_config

    from tfspeed.data import EncodedSplit, Tokenizer, from_file
    from tfspeed.train import accuracy, fit_classifier

    data = from_file(sentiment_csv)
    tokenizer = Tokenizer(vocab_file, seq_length=16)
    train, test = (EncodedSplit.from_split(s, tokenizer) for s in (data.train, data.test))
    model = _classifier(tiny_config(intermediate_size=96), seed=1)
    fit_classifier(model, train, epochs=6, batch_size=16, learning_rate=3e-3, verbose=0)
    assert accuracy(model, test) >= 0.9
    out = tmp_path_factory.mktemp("lowrank_cli") / "finetuned"
    artifacts.save_model_dir(model, out, artifacts.ModelInfo(seq_length=16, label_names=list(data.label_names),
                                                             base="tiny", stage="finetune", vocab_path=str(vocab_file)))
    return out


def test_factorize_cli_distils_and_reports(model_dir, sentiment_csv, tmp_path, capsys):
    out = tmp_path / "lowrank"
    code = main(["factorize", str(model_dir), "--ffn-rank", "0.5", "--epochs", "2", "--learning-rate", "1e-3",
                 "--data", str(sentiment_csv), "--out", str(out)])
    stdout = capsys.readouterr().out
    assert code == 0 and "Wrote" in stdout and "layer_0_intermediate" in stdout  # the per-layer table
    metrics = json.loads((out / "metrics.json").read_text())
    f = metrics["factorize"]
    assert [r["rank"] for r in f["layers"]] == [16] * 4 and f["macs_kept"] == pytest.approx(16 * 128 / (32 * 96))
    assert metrics["distill"] and len(metrics["history"]["seconds_per_epoch"]) == 2
    assert metrics["accuracy"] >= metrics["source_accuracy"] - 0.05
    model, info = artifacts.load_model_dir(out)
    assert info.stage == "lowrank" and info.extra["ranks"]["layer_1_output"] == 16
    assert dict(config_of(model).ranks) == info.extra["ranks"] and (out / "encoder" / "saved_model.pb").is_file()
    # bad input through the CLI: a clear ERROR line, nothing written
    bad = tmp_path / "bad"
    for args, match in ((["--ffn-rank", "0.5", "--ratio", "0.3"], "give one of them"),
                        (["--energy", "2"], "`energy`"),
                        (["--layers", "nothing_like_this"], "matches no Dense layer")):
        assert main(["factorize", str(model_dir), *args, "--epochs", "0", "--data", str(sentiment_csv),
                     "--out", str(bad)]) == 1
        assert match in capsys.readouterr().err and not bad.exists()


def test_lowrank_stage_in_a_recipe(model_dir, sentiment_csv, tmp_path):
    from tfspeed.data import load_dataset
    from tfspeed.recipe import RecipeConfig
    from tfspeed.stages import StageContext, get_stage

    (tmp_path / "r.toml").write_text('recipe = "distill,lowrank,prune,qat"\n[stages.lowrank]\n'
                                     'layers = "ffn,pooler"\nbudget = 0.5\nepochs = 1\n')
    from tfspeed.config import read_config_file

    recipe = RecipeConfig.from_dict(read_config_file(tmp_path / "r.toml"))
    config = recipe.stage_config("lowrank")
    assert isinstance(config, LR.LowRankConfig) and config.budget == 0.5 and config.layers == ("ffn", "pooler")
    ctx = StageContext(load_dataset(str(sentiment_csv)), teacher_dir=model_dir, eval_limit=40)
    metrics = get_stage("lowrank").run(model_dir, config.replace(learning_rate=1e-3), tmp_path / "out", ctx)
    assert metrics["factorize"]["macs_kept"] <= 0.5 and metrics["accuracy"] >= 0.85
