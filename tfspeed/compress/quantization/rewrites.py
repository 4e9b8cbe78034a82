"""Rewrites of a float tfspeed BERT that compute the same function with int8-friendlier tensors.

Each returns a new model (the caller's is not changed) whose float outputs match the original's, and each leaves a
trace that a reloaded model still shows (`split_of`, `split_heads_of`, `smoothed_layer_norms`):

- `split_channels`: a Dense's outlier output channels in a Dense (and an int8 range) of their own,
- `split_units`: an FFN intermediate's outlier units computed apart, with their rows of the next Dense,
- `split_heads`: attention heads with outlier scores in a BATCH_MATMUL of their own,
- `smooth_layer_norms`: LayerNorm outlier channels scaled down into the Dense kernels that read them.

`quantize(..., outlier_channels=..., outlier_units=..., outlier_heads=..., layer_norm_scales=...)` applies them
before fake quantization; `tfspeed.compress.quantization.outliers` finds what to pass.
"""

from __future__ import annotations

import copy

import numpy as np

from tfspeed.compat import keras
from tfspeed.compress.quantization._graph import _config_of_rewrite, _consumers, _dense_consumers, _picked, _reroute
from tfspeed.compress.quantization.configs import ZeroChannels
from tfspeed.compress.quantization.scheme import custom_objects
from tfspeed.models import layers as L

__all__ = ["smooth_layer_norms", "smoothed_layer_norms", "split_channels", "split_heads", "split_heads_of",
           "split_of", "split_units"]


def split_channels(model: keras.Model, channels: dict) -> keras.Model:
    """A copy of `model` in which the given output channels of a Dense are computed apart, so that once quantized
    they get an int8 range of their own and the other channels keep theirs (the same function in float).

    Each Dense `<name>` named in `channels` becomes three Dense and an Add, all FULLY_CONNECTED / ADD in TFLite:
    `<name>` (the same kernel with the picked columns held at zero by `ZeroChannels`), `<name>_outliers` (the picked
    columns only), `<name>_place` (a fixed one-hot [k, units] kernel, exact in int8, putting them back in place) and
    `<name>_merge` (float Add of the two). A CONCATENATION / GATHER merge would not do: the converter gives those ops
    one int8 scale for all channels again.

    Args:
        model: a float functional model (a tfspeed BERT classifier).
        channels: `{Dense name: [output channel indices]}`, e.g. from `find_outlier_channels`.
    """
    config, by_name = _config_of_rewrite(model, "channels", channels, "{Dense name: [channels]}")
    renamed, added = {}, {}
    for name, picked in channels.items():
        layer = by_name.get(name)
        if layer is None or layer["class_name"] != "Dense":
            dense = [l["name"] for l in config["layers"] if l["class_name"] == "Dense"]
            raise ValueError(f"Received an invalid value for `channels`: {name!r} is not a Dense layer of `model`. "
                             f"Dense layers: {dense[:6]}...")
        units = int(layer["config"]["units"])
        picked = _picked("channels", name, picked, units, "channels")
        base = {k: v for k, v in layer["config"].items() if k != "name"}
        dtype = base.get("dtype", "float32")
        outliers = {"class_name": "Dense", "name": f"{name}_outliers", "inbound_nodes": layer["inbound_nodes"],
                    "config": {**base, "name": f"{name}_outliers", "units": len(picked)}}
        place = {"class_name": "Dense", "name": f"{name}_place", "inbound_nodes": [[[f"{name}_outliers", 0, 0, {}]]],
                 "config": {"name": f"{name}_place", "units": units, "use_bias": False, "trainable": False,
                            "dtype": dtype}}
        merge = {"class_name": "Add", "name": f"{name}_merge",
                 "inbound_nodes": [[[name, 0, 0, {}], [f"{name}_place", 0, 0, {}]]],
                 "config": {"name": f"{name}_merge", "trainable": True, "dtype": dtype}}
        zero = keras.constraints.serialize(ZeroChannels(picked))
        layer["config"] = {**layer["config"], "kernel_constraint": zero,
                           "bias_constraint": zero if base.get("use_bias", True) else None}
        renamed[name], added[name] = f"{name}_merge", ([outliers, place, merge], picked)

    for layer in config["layers"]:
        if layer["name"] not in renamed:
            layer["inbound_nodes"] = [[[renamed.get(t[0], t[0]), *t[1:]] for t in node]
                                      for node in layer["inbound_nodes"]]
    config["layers"] = [new for layer in config["layers"]
                        for new in [layer, *(added[layer["name"]][0] if layer["name"] in added else [])]]
    config["output_layers"] = [[renamed.get(t[0], t[0]), *t[1:]] for t in config["output_layers"]]
    weights = {}
    for name, (_, picked) in added.items():
        kernel_and_bias = model.get_layer(name).get_weights()
        weights[f"{name}_outliers"] = [w[..., picked] for w in kernel_and_bias]
        for w in kernel_and_bias:
            w[..., picked] = 0.0
        weights[name] = kernel_and_bias
        weights[f"{name}_place"] = [np.eye(kernel_and_bias[0].shape[-1], dtype=np.float32)[picked]]
    return _rebuild(config, model, weights)


def split_of(model: keras.Model) -> dict:
    """`{Dense name: [channels]}` computed apart in `model` (by `split_channels` / `quantize(outlier_channels=...)`)."""
    found = {}
    for layer in model.layers:
        inner = getattr(layer, "layer", layer)
        if isinstance(inner, keras.layers.Dense) and isinstance(inner.kernel_constraint, ZeroChannels):
            found[inner.name] = list(inner.kernel_constraint.channels)
    return found


def _rebuild(config, source: keras.Model, weights: dict) -> keras.Model:
    """The model of a rewritten `config`: the layers in `weights` ({name: weight list}) get those, which the rewrite
    computed; every other layer with weights gets those of `source`'s layer of the same name."""
    with keras.utils.custom_object_scope(custom_objects()):
        rebuilt = keras.Model.from_config(config)
    for layer in rebuilt.layers:
        if layer.name in weights:
            layer.set_weights(weights[layer.name])
        elif layer.weights:
            layer.set_weights(source.get_layer(layer.name).get_weights())
    return rebuilt


def split_units(model: keras.Model, units: dict) -> keras.Model:
    """A copy of `model` in which the given units of an FFN intermediate Dense are computed apart (the same function
    in float), so the int8 range of the intermediate output is set by the ordinary units.

    MiniLM's FFN intermediates have one unit whose GELU output reaches ~25 where the others stay below ~6: one
    per-tensor int8 range has a step of ~0.13 for activations mostly below 1, and a rounding difference there spreads
    through every later layer (see `smooth`). Each Dense `<name>` in `units` becomes: `<name>` (the picked columns held
    at zero by `ZeroChannels`: GELU(0) = 0), `<name>_outliers` (the picked units, same activation),
    `<name>_outliers_output` (their rows of the next Dense, no bias) and `<name>_outliers_merge` (float Add onto the
    next Dense's output). All FULLY_CONNECTED int8 in TFLite.

    Args:
        model: a float tfspeed BERT classifier.
        units: `{intermediate Dense name: [units]}`, e.g. `find_outlier_channels(model, data, OUTLIER_UNITS)`.
    """
    config, by_name = _config_of_rewrite(model, "units", units, "{Dense name: [units]}")
    plan = {}
    for name, picked in units.items():
        layer = by_name.get(name)
        nxt = _consumers(config, name) if layer else []
        if layer is None or layer["class_name"] != "Dense" or len(nxt) != 1 or nxt[0]["class_name"] != "Dense":
            raise ValueError(f"Received an invalid value for `units`: {name!r} is not a Dense layer of `model` feeding "
                             f"exactly one Dense (an FFN intermediate).")
        picked = _picked("units", name, picked, int(layer["config"]["units"]), "units")
        out = nxt[0]
        base = {k: v for k, v in layer["config"].items() if k != "name"}
        dtype = base.get("dtype", "float32")
        new = [{"class_name": "Dense", "name": f"{name}_outliers", "inbound_nodes": layer["inbound_nodes"],
                "config": {**base, "name": f"{name}_outliers", "units": len(picked)}},
               {"class_name": "Dense", "name": f"{name}_outliers_output",
                "inbound_nodes": [[[f"{name}_outliers", 0, 0, {}]]],
                "config": {"name": f"{name}_outliers_output", "units": int(out["config"]["units"]),
                           "use_bias": False, "trainable": True, "dtype": dtype}},
               {"class_name": "Add", "name": f"{name}_outliers_merge",
                "inbound_nodes": [[[out["name"], 0, 0, {}], [f"{name}_outliers_output", 0, 0, {}]]],
                "config": {"name": f"{name}_outliers_merge", "trainable": True, "dtype": dtype}}]
        for consumer in _consumers(config, out["name"]):
            _reroute(consumer, out["name"], f"{name}_outliers_merge")
        zero = keras.constraints.serialize(ZeroChannels(picked))
        layer["config"] = {**layer["config"], "kernel_constraint": zero,
                           "bias_constraint": zero if base.get("use_bias", True) else None}
        at = config["layers"].index(out)
        config["layers"][at + 1:at + 1] = new
        plan[name] = (picked, out["name"])
    weights = {}
    for name, (picked, out_name) in plan.items():
        kernel, *bias = model.get_layer(name).get_weights()
        weights[f"{name}_outliers"] = [kernel[:, picked], *[b[picked] for b in bias]]
        kernel[:, picked] = 0.0
        weights[name] = [kernel, *[np.where(np.isin(np.arange(b.size), picked), 0.0, b) for b in bias]]
        out_kernel, *out_bias = model.get_layer(out_name).get_weights()
        weights[f"{name}_outliers_output"] = [out_kernel[picked]]
        # their input is now GELU(0) = 0; zero rows also keep them out of the int8 kernel range
        out_kernel[picked] = 0.0
        weights[out_name] = [out_kernel, *out_bias]
    return _rebuild(config, model, weights)


def split_heads(model: keras.Model, heads: dict) -> keras.Model:
    """A copy of `model` in which the given heads' attention scores are computed apart (the same function in float),
    so each group gets its own int8 range once quantized.

    For each `<p>scores` in `heads`, the heads are reordered so the picked ones come last (the value columns and the
    attention output rows follow, an exact permutation); `<p>query` / `<p>key` keep the other heads' columns and
    `<p>query_outliers` / `<p>key_outliers` take the picked ones; `<p>scores` / `<p>scores_outliers` are two
    BATCH_MATMULs with their own ranges, each with its softmax (`<p>softmax`, `<p>softmax_outliers`), and
    `<p>softmax_merge` joins the probabilities on the heads axis. The join comes after the softmax because an int8
    CONCATENATION gives its inputs one scale: joined before, the scores would share one range again; the
    probabilities already share TFLite's (1/256), so the join is exact.

    Args:
        model: a float tfspeed BERT classifier.
        heads: `{scores layer name: [heads]}`, e.g. `find_outlier_heads(model, data)`.
    """
    config, by_name = _config_of_rewrite(model, "heads", heads, "{scores layer name: [heads]}")
    plan = {}
    for name, picked in heads.items():
        layer = by_name.get(name)
        inner = model.get_layer(name) if layer else None
        if not isinstance(inner, L.QueryKeyProduct) or not name.endswith("scores"):
            raise ValueError(f"Received an invalid value for `heads`: {name!r} is not an attention scores layer "
                             f"(QueryKeyProduct) of `model`.")
        n = inner.num_heads
        picked = _picked("heads", name, picked, n, "heads")
        p = name[:-len("scores")]
        (query, _, _, _), (key, _, _, _) = layer["inbound_nodes"][0]
        keep = [h for h in range(n) if h not in picked]
        new = []
        for dense in (query, key):
            extra = copy.deepcopy(by_name[dense])
            extra["name"] = extra["config"]["name"] = f"{dense}_outliers"
            extra["config"]["units"] = len(picked) * inner.head_size
            by_name[dense]["config"]["units"] = len(keep) * inner.head_size
            new.append(extra)
        outliers = copy.deepcopy(layer)
        outliers["name"] = outliers["config"]["name"] = f"{name}_outliers"
        outliers["config"]["num_heads"] = len(picked)
        outliers["inbound_nodes"] = [[[f"{query}_outliers", 0, 0, {}], [f"{key}_outliers", 0, 0, {}]]]
        layer["config"]["num_heads"] = len(keep)
        softmax = _consumers(config, name)
        if len(softmax) != 1 or "MaskedSoftmax" not in softmax[0]["class_name"]:
            raise ValueError(f"Received an invalid value for `heads`: {name!r} does not feed one MaskedSoftmax.")
        softmax = softmax[0]
        probs = copy.deepcopy(softmax)
        probs["name"] = probs["config"]["name"] = f"{softmax['name']}_outliers"
        _reroute(probs, name, f"{name}_outliers")
        merge = {"class_name": "Concatenate", "name": f"{softmax['name']}_merge",
                 "inbound_nodes": [[[softmax["name"], 0, 0, {}], [probs["name"], 0, 0, {}]]],
                 "config": {"name": f"{softmax['name']}_merge", "axis": 1, "trainable": True,
                            "dtype": layer["config"].get("dtype", "float32")}}
        for consumer in _consumers(config, softmax["name"]):
            _reroute(consumer, softmax["name"], merge["name"])
        at = config["layers"].index(layer)
        config["layers"][at + 1:at + 1] = new + [outliers]
        at = config["layers"].index(softmax)
        config["layers"][at + 1:at + 1] = [probs, merge]
        plan[name] = (p, query, key, keep, picked, inner.head_size)
    weights = {}
    for p, query, key, keep, picked, size in plan.values():
        kept, apart = (np.concatenate([np.arange(h * size, (h + 1) * size) for h in hs]) for hs in (keep, picked))
        for dense in (query, key):
            kernel, *bias = model.get_layer(dense).get_weights()
            weights[dense] = [kernel[:, kept], *[b[kept] for b in bias]]
            weights[f"{dense}_outliers"] = [kernel[:, apart], *[b[apart] for b in bias]]
        order = np.concatenate([kept, apart])
        value = model.get_layer(f"{p}value").get_weights()
        weights[f"{p}value"] = [value[0][:, order], *[b[order] for b in value[1:]]]
        out = model.get_layer(f"{p}attention_output").get_weights()
        weights[f"{p}attention_output"] = [out[0][order], *out[1:]]
    return _rebuild(config, model, weights)


def split_heads_of(model: keras.Model) -> dict:
    """`{scores layer name: number of heads computed apart}` in `model` (by `split_heads`)."""
    inner = [getattr(l, "layer", l) for l in model.layers]
    return {l.name[:-len("_outliers")]: l.num_heads for l in inner
            if isinstance(l, L.QueryKeyProduct) and l.name.endswith("_outliers")}


def smooth_layer_norms(model: keras.Model, scales: dict) -> keras.Model:
    """A copy of `model` whose LayerNorm outputs are divided per channel by `scales` (`layer_norm_scales`): gamma and
    beta divided, the kernel rows of the Dense layers reading them multiplied, and a float `ChannelScale` giving the
    residual stream (and any other reader) its original values back. The same function in float; once quantized, the
    LayerNorm outputs get a finer int8 step.
    """
    config, by_name = _config_of_rewrite(model, "scales", scales, "{LayerNorm name: divisors}")
    rows = {}
    for name, s in scales.items():
        if name not in by_name or by_name[name]["class_name"] != "LayerNormalization":
            raise ValueError(f"Received an invalid value for `scales`: {name!r} is not a LayerNormalization of "
                             f"`model`.")
        dense, others = _dense_consumers(config, name)
        for d in dense:
            rows[d["name"]] = np.asarray(s, np.float32)
        for reader, source in others:
            restore = f"{name}_restore"
            if restore not in by_name:
                layer = {"class_name": "ChannelScale", "name": restore, "inbound_nodes": [[[source, 0, 0, {}]]],
                         "config": {"name": restore, "trainable": False, "dtype": "float32",
                                    "scales": [float(v) for v in s]}}
                config["layers"].insert(config["layers"].index(by_name[source]) + 1, layer)
                by_name[restore] = layer
            _reroute(reader, source, restore)
    weights = {name: [w / scales[name] for w in model.get_layer(name).get_weights()] for name in scales}  # gamma, beta
    for name, row in rows.items():
        kernel, *rest = model.get_layer(name).get_weights()
        weights[name] = [kernel * row[:, None], *rest]
    return _rebuild(config, model, weights)


def smoothed_layer_norms(model: keras.Model) -> list:
    """Names of the LayerNorms whose outputs `smooth_layer_norms` scaled down in `model` (each has a
    `<name>_restore`)."""
    return [l.name[:-len("_restore")] for l in model.layers
            if isinstance(getattr(l, "layer", l), L.ChannelScale) and l.name.endswith("_restore")]
