"""The early-exit stage: exits added to a model directory's classifier, trained, their threshold calibrated on the
validation split, and the segmented .tflite that stops at the first confident exit (`tfspeed exits`).

The output is a model directory whose `model.keras` has the exits (outputs `exit_I` and `final`), with
`exits.tflite` (one signature per segment: `tfspeed.export.exits`), `exits.json` (layers, rule, threshold, the
validation calibration and the test split's accuracy / mean-layers curve) and `metrics.json`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from tfspeed.compress import exits as E
from tfspeed.export.exits import EXITS_JSON, runner_of
from tfspeed.stages.base import StageContext, load_source, register_stage

TFLITE_NAME = "exits.tflite"


@register_stage("exits", E.ExitsConfig, help="early exits: a classifier after chosen layers, stop at the first "
                                               "confident one (a segmented .tflite)", branch=True,
                aliases=("early-exit",))
def run(source, config: E.ExitsConfig, out: Path, ctx: StageContext, mode: str = "dynamic") -> dict:
    """The `exits` stage (alias `early-exit`; in a recipe a branch: the next stage starts from `source`).

    Adds exits to the classifier of the model directory `source`, trains them (`config`), calibrates the threshold of
    `config.rule` on the validation split for `config.budget`, evaluates it on the test split and writes the model
    directory `out` with the segmented `exits.tflite` (`mode`: `"dynamic"`, `"float16"` or
    `"float32"`, at the source's sequence length). Returns the metrics."""
    from tfspeed import _io, artifacts
    from tfspeed.export.exits import export_exits
    from tfspeed.models.bert import config_of
    from tfspeed.stages.base import model_info
    from tfspeed.train import scores

    _io.check_writable(out, ctx.overwrite)
    model, info, encoded = load_source(source, ctx)
    num_layers = config_of(model).num_layers
    with ctx.strategy.scope():
        exits = E.add_exits(model, layers=config.layers, pooling=config.pooling)
    layers = E.exit_layers(exits)
    history = E.fit_exits(exits, encoded.train, encoded.validation, config=config, verbose=ctx.verbose,
                          callbacks=ctx.fit_callbacks("exits"))
    val = E.exit_probabilities(exits, encoded.validation)
    test = E.exit_probabilities(exits, encoded.test)
    cal = E.calibrate(val, encoded.validation.labels, layers, num_layers, config.rule, config.budget)
    sim = E.simulate(test, layers, num_layers, config.rule, cal.threshold)
    full = scores(test[:, -1].argmax(-1), encoded.test.labels, encoded.label_names)
    with_exits = scores(sim["predictions"], encoded.test.labels, encoded.label_names)
    metrics = {**with_exits, "full_accuracy": full["accuracy"],
               "drop_points": 100 * (full["accuracy"] - with_exits["accuracy"]),
               "mean_layers": float(sim["layers_used"].mean()), "num_layers": num_layers, "layers": list(layers),
               "exit_counts": np.bincount(sim["exit_index"], minlength=len(layers) + 1).tolist(),
               "rule": cal.rule, "threshold": cal.threshold, "budget": cal.budget,
               "validation_accuracy": cal.accuracy, "validation_full_accuracy": cal.full_accuracy,
               "validation_mean_layers": cal.mean_layers, "split": "test", "num_examples": len(encoded.test),
               "dataset": ctx.dataset.name, "seq_length": info.seq_length, "config": config.to_dict(),
               "history": {k: [float(v) for v in vs] for k, vs in history.history.items()}}
    data = export_exits(exits, mode=mode, seq_length=info.seq_length)
    described = {"layers": list(layers), "num_layers": num_layers, "rule": cal.rule, "threshold": cal.threshold,
                 "mode": mode, "seq_length": info.seq_length, "tflite": TFLITE_NAME,
                 "validation": {k: v for k, v in cal.to_dict().items() if k != "curve"},
                 "validation_curve": cal.curve,
                 "test_curve": E.curve(test, encoded.test.labels, layers, num_layers, config.rule)}

    def extra(tmp: Path):
        (tmp / TFLITE_NAME).write_bytes(data)
        (tmp / EXITS_JSON).write_text(json.dumps(described, indent=2) + "\n")

    artifacts.save_model_dir(exits, out, model_info(info, "exits", **{"exits": described["layers"],
                                                                       "rule": cal.rule,
                                                                       "threshold": cal.threshold}),
                             metrics, overwrite=ctx.overwrite, extra_files=extra)
    return metrics


runner = runner_of  # the ExitRunner of an exits model directory
