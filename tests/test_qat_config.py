"""`QATConfig`: one default and one check per setting, JSON round trips, the command line's strings, and the old
`tfspeed.compress.qat` names still reaching the new package. No model is trained here (see test_qat.py)."""

import argparse
import json

import pytest

from tfspeed.compat import keras
from tfspeed.compress import quantization
from tfspeed.compress.quantization import OUTLIER_OUTPUTS, Detection, QATConfig
from tfspeed.compress.quantization.config import parse_float_outputs, parse_percentile


def test_defaults_are_those_of_the_old_qat_fit_keywords():
    c = QATConfig()
    assert (c.epochs, c.batch_size, c.learning_rate) == (1, 32, 2e-5)
    assert (c.distill, c.preserve_sparsity, c.freeze_ranges) == (True, False, True)
    assert c.float_outputs == () and c.calibration_batches == 8 and c.calibration_percentile == 99.99
    assert c.outlier_channels == Detection.AUTO == "auto" and c.smooth == "auto"


def test_round_trip_through_json_with_non_default_values():
    c = QATConfig(epochs=3, batch_size=8, learning_rate=1e-4, distill=False, preserve_sparsity=True,
                  float_outputs=["layer_0_output", r"layer_\d+_intermediate"], outlier_channels="none", smooth=None,
                  calibration_batches=0, calibration_percentile=None, freeze_ranges=False, metadata=False)
    d = json.loads(json.dumps(c.to_dict()))
    assert d == {"epochs": 3, "batch_size": 8, "learning_rate": 1e-4, "distill": False, "preserve_sparsity": True,
                 "float_outputs": ["layer_0_output", r"layer_\d+_intermediate"], "outlier_channels": "none",
                 "smooth": "none", "calibration_batches": 0, "calibration_percentile": None, "freeze_ranges": False,
                 "metadata": False}
    back = QATConfig.from_dict(d)
    assert back == c and back.smooth is Detection.NONE and back.float_outputs == c.float_outputs
    assert QATConfig.from_dict({"calibration_percentile": 99.5}).calibration_percentile == 99.5


@pytest.mark.parametrize("bad, match", [
    (dict(calibration_percentile=100), r"`calibration_percentile`, expected a number in \(50, 100\).*"
                                       r"Received: calibration_percentile=100"),
    (dict(calibration_percentile=50), "calibration_percentile=50"),
    (dict(calibration_percentile=True), "calibration_percentile=True"),
    (dict(smooth="yes"), "smooth='yes'"),
    (dict(outlier_channels="some"), r"expected one of \['auto', 'none'\]. Received: outlier_channels='some'"),
    (dict(distill="yes"), "distill='yes'"),
    (dict(preserve_sparsity=1), "preserve_sparsity=1"),
    (dict(freeze_ranges=None), "freeze_ranges=None"),
    (dict(float_outputs="layer_0_output"), "float_outputs='layer_0_output'"),
    (dict(float_outputs=["("]), "'\\(' is not one"),
    (dict(epochs=0), "epochs=0"),
    (dict(batch_size=2.5), "batch_size=2.5"),
    (dict(learning_rate=0), "learning_rate=0"),
    (dict(calibration_batches=-1), "calibration_batches=-1"),
])
def test_checks_refuse_bad_values(bad, match):
    with pytest.raises(ValueError, match=match):
        QATConfig(**bad)


def test_limits_from_both_sides():
    with pytest.raises(ValueError, match="calibration_percentile=100"):
        QATConfig(calibration_percentile=100)
    assert QATConfig(calibration_percentile=99.9).calibration_percentile == 99.9
    assert QATConfig(calibration_percentile=50.01).calibration_percentile == 50.01
    assert QATConfig(calibration_percentile=99).calibration_percentile == 99.0
    assert QATConfig(calibration_batches=0).calibration_batches == 0  # 0: no calibration
    # calibrate runs the same check under its own name, before it looks at the model or the data
    with pytest.raises(ValueError, match=r"`percentile`, expected a number in \(50, 100\).*Received: percentile=100"):
        quantization.calibrate(None, None, percentile=100)
    with pytest.raises(ValueError, match="num_batches=0"):
        quantization.calibrate(None, None, num_batches=0)


def test_unknown_keys_are_refused():
    with pytest.raises(ValueError, match=r"Unknown QATConfig settings \['epoch'\]"):
        QATConfig.from_dict({"epoch": 2})
    with pytest.raises(TypeError, match=r"Unknown QATConfig settings \['epoch'\]"):
        QATConfig.resolve(None, epoch=2)
    with pytest.raises(TypeError, match="epoch"):  # refused before the model is looked at
        quantization.qat_fit(None, None, epoch=2)
    with pytest.raises(ValueError, match="smooth='yes'"):
        quantization.qat_fit(None, None, smooth="yes")


def test_resolve_applies_keyword_overrides_on_a_config():
    base = QATConfig(epochs=2, smooth="none")
    c = QATConfig.resolve(base, learning_rate=1e-4)
    assert (c.epochs, c.smooth, c.learning_rate) == (2, Detection.NONE, 1e-4) and base.learning_rate == 2e-5
    assert QATConfig.resolve({"epochs": 4}).epochs == 4


def test_command_line_flags_and_strings():
    assert parse_percentile("none") is None and parse_percentile("NONE ") is None
    assert parse_percentile("99.5") == 99.5
    with pytest.raises(argparse.ArgumentTypeError, match=r"expected a percentile in \(50, 100\).*'100'"):
        parse_percentile("100")
    with pytest.raises(argparse.ArgumentTypeError, match="'x'"):
        parse_percentile("x")
    assert parse_float_outputs("outliers, layer_0_query") == OUTLIER_OUTPUTS + ("layer_0_query",)
    assert parse_float_outputs("") == () and parse_float_outputs("none") == ()

    parser = QATConfig.add_arguments(argparse.ArgumentParser())
    assert QATConfig.from_args(parser.parse_args([])) == QATConfig()
    args = parser.parse_args(["--epochs", "2", "--calibration-percentile", "none", "--float-outputs", "outliers",
                              "--smooth", "none", "--no-distill", "--preserve-sparsity", "--no-freeze-ranges",
                              "--calibration-batches", "0"])
    assert QATConfig.from_args(args) == QATConfig(epochs=2, calibration_percentile=None, float_outputs=OUTLIER_OUTPUTS,
                                                  smooth="none", distill=False, preserve_sparsity=True,
                                                  freeze_ranges=False, calibration_batches=0)
    with pytest.raises(SystemExit):
        parser.parse_args(["--outlier-channels", "some"])


def test_old_qat_module_names_reach_the_new_package():
    """`tfspeed.compress.qat` is a deprecated alias for one release: each of its old names warns and is the new one."""
    from tfspeed.compress import qat
    from tfspeed.compress.quantization.training import _range_quantizers
    from tfspeed.export import quantized

    old = {"DenseQuantizeConfig", "EmbeddingQuantizeConfig", "FloatQuantizeConfig", "OUTLIER_OUTPUTS", "OUTLIER_UNITS",
           "OutputQuantizeConfig", "RangeQuantizer", "SOFTMAX_RANGE", "SUPPORTED_LAYERS", "SparsityPreservingQuantizer",
           "ZeroChannels", "calibrate", "custom_objects", "find_outlier_channels", "find_outlier_heads",
           "int8_fractions", "is_quantized", "layer_norm_scales", "qat_fit", "quantize", "quantize_scope",
           "smooth_layer_norms", "smoothed_layer_norms", "split_channels", "split_heads", "split_heads_of",
           "split_of", "split_units", "to_native", "to_tflite", "unsupported_layers"}  # the old module's public names
    for name in sorted(old - {"to_tflite", "int8_fractions"}):
        with pytest.warns(DeprecationWarning, match=f"tfspeed.compress.qat.{name}` is deprecated"):
            assert getattr(qat, name) is getattr(quantization, name), name
    with pytest.warns(DeprecationWarning, match="use `tfspeed.export.quantized.to_tflite`"):
        assert qat.to_tflite is quantized.to_tflite
    with pytest.warns(DeprecationWarning):
        assert qat.int8_fractions is quantized.int8_fractions and qat._range_quantizers is _range_quantizers


@pytest.mark.parametrize("obj", [
    quantization.RangeQuantizer(num_bits=7, symmetric=True, ema_decay=0.9),
    quantization.SparsityPreservingQuantizer(num_bits=6, narrow_range=False),
    quantization.OutputQuantizeConfig(num_bits=7, fixed_range=(0.0, 1.0)),
    quantization.EmbeddingQuantizeConfig(num_bits=6),
    quantization.FloatQuantizeConfig(),
    quantization.DenseQuantizeConfig(preserve_sparsity=True),
    quantization.ZeroChannels([3, 1]),
], ids=lambda o: type(o).__name__)
def test_registered_names_are_unchanged_and_configs_round_trip(obj):
    """Saved QAT models name these classes `tfspeed>ClassName`: the names they had in `tfspeed.compress.qat`."""
    cls = type(obj)
    assert keras.utils.get_registered_name(cls) == f"tfspeed>{cls.__name__}"
    assert keras.utils.get_registered_object(f"tfspeed>{cls.__name__}") is cls
    restored = cls.from_config(obj.get_config())
    assert type(restored) is cls and restored.get_config() == obj.get_config()
