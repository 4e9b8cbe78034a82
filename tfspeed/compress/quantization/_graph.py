"""Graph helpers shared by the outlier finders and the rewrites: they read and edit a functional model's config."""

from __future__ import annotations


def _config_of_rewrite(model, argument: str, value, expected: str):
    """`model`'s config and its layers by name, for a rewrite driven by the dict `value` of `argument`."""
    if not isinstance(value, dict):
        raise ValueError(f"Received an invalid value for `{argument}`, expected a dict {expected}. "
                         f"Received: {argument}={value!r}")
    config = model.get_config()
    return config, {l["name"]: l for l in config["layers"]}


def _picked(argument: str, name: str, picked, width: int, what: str) -> list:
    """`picked` as sorted unique indices in [0, width), a non-empty part of them, or a clear error."""
    indices = sorted({int(i) for i in picked})
    if not indices or indices[0] < 0 or indices[-1] >= width or len(indices) == width:
        raise ValueError(f"Received an invalid value for `{argument}[{name!r}]`, expected a non-empty list of {what} "
                         f"in [0, {width}) that leaves some out. Received: {picked!r}")
    return indices


def _consumers(config, name) -> list:
    return [l for l in config["layers"] if any(t[0] == name for node in l["inbound_nodes"] for t in node)]


def _reroute(layer, old, new):
    layer["inbound_nodes"] = [[[new if t[0] == old else t[0], *t[1:]] for t in node] for node in layer["inbound_nodes"]]


def _dense_consumers(config, name):
    """The Dense layers reading `name` (through Dropout layers) and the other readers, as `(dense, others)` where
    `others` are `(layer config, source name)`."""
    dense, others = [], []
    for consumer in _consumers(config, name):
        if consumer["class_name"] == "Dropout":
            d, o = _dense_consumers(config, consumer["name"])
            dense, others = dense + d, others + o
        elif consumer["class_name"] == "Dense":
            dense.append(consumer)
        else:
            others.append((consumer, name))
    return dense, others

