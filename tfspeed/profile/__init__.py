"""Measure: a TFLite latency profiler that tells the truth.

Any `.tflite` model (also ones tfspeed did not make), with a Keras model, a SavedModel or an `.onnx` file as baselines
on the same inputs; warm-up kept apart, interleaved measured runs, the statistics benchmark_model reports, a per-op
profile checked against the whole-model time, and JSON / Markdown / PNG outputs.

Example (`model.tflite` any TFLite file, `keras_model` a tf_keras model with the same inputs):

```python
from tfspeed.profile import ProfileConfig, profile_models

result = profile_models(["model.tflite", keras_model], baseline=1, config=ProfileConfig(threads=(1, 2), runs=100))
print(result.to_table())
result.to_json("profile.json"); result.to_markdown("profile.md"); result.plot("profile.png")
```
"""

from tfspeed.profile.config import ProfileConfig, Xnnpack
from tfspeed.profile.core import profile_models
from tfspeed.profile.errors import InputError, InvalidModelError, ProfileError
from tfspeed.profile.inputs import InputSpec, generate_inputs, load_npz, tokenize
from tfspeed.profile.ops import profile_ops
from tfspeed.profile.result import FORMAT_VERSION, ProfileResult
from tfspeed.profile.runners import Format, make_runner
from tfspeed.profile.verify import probe_tflite, verify_tflite

__all__ = [
    "FORMAT_VERSION",
    "Format",
    "InputError",
    "InputSpec",
    "InvalidModelError",
    "ProfileConfig",
    "ProfileError",
    "Xnnpack",
    "ProfileResult",
    "generate_inputs",
    "load_npz",
    "make_runner",
    "probe_tflite",
    "profile_models",
    "profile_ops",
    "tokenize",
    "verify_tflite",
]
