"""The one loading scope: every class a tfspeed model file may hold, for `keras.models.load_model`.

Every tfspeed Layer, Model, schedule, quantizer, QuantizeConfig and constraint is registered with Keras under the
package `tfspeed` (`@register`, i.e. `keras.utils.register_keras_serializable(package="tfspeed")`). `custom_objects()`
gathers them, by registered name (`"tfspeed>RangeQuantizer"`) and by class name, with TFMOT's prune and quantize
wrappers and `hub.KerasLayer`. A class is registered when its module is imported; `tfspeed.artifacts.custom_objects`
imports every compression package first, so any model directory loads.
"""

from __future__ import annotations

from tfspeed.compat import keras

PACKAGE = "tfspeed"


def register(cls):
    """`keras.utils.register_keras_serializable(package="tfspeed")`, for every tfspeed class that Keras saves."""
    return keras.utils.register_keras_serializable(package=PACKAGE)(cls)


def registered() -> dict:
    """`{registered name: class}` of every tfspeed class registered so far (`"tfspeed>Name"`)."""
    return {k: v for k, v in keras.utils.get_custom_objects().items() if k.startswith(PACKAGE + ">")}


def custom_objects() -> dict:
    """The classes `load_model` needs for any tfspeed model: tfspeed's own, TFMOT's wrappers, `hub.KerasLayer`."""
    import tensorflow_hub as hub
    import tensorflow_model_optimization as tfmot
    from tensorflow_model_optimization.python.core.quantization.keras import quantizers
    from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import (
        default_8bit_quantize_registry as default_8bit,
    )

    objects = {}
    for scope in (tfmot.quantization.keras.quantize_scope(), tfmot.sparsity.keras.prune_scope()):
        for part in scope.custom_objects:
            objects.update(part)
    objects.update(default_8bit._types_dict())  # the 8-bit scheme's QuantizeConfigs, as saved in QAT models
    objects.update(quantizers._types_dict())
    objects["KerasLayer"] = hub.KerasLayer
    for name, cls in registered().items():
        objects[name] = cls
        objects[name.split(">", 1)[1]] = cls
    return objects
