"""tfspeed: make a TF-Hub BERT fast and small with TensorFlow.

The pipeline, in the order of the folders: `models` and `hub` (a BERT in), `data` (text in), `train` (fine-tune),
`compress` (prune, quantize-aware training, distill), `export` (TFLite), `profile` (measure), `recipe` (chain them).
"""

from tfspeed import compat  # noqa: F401  (must come first: it selects Keras 2)
from tfspeed.models import BertConfig, build_classifier, build_encoder

__version__ = "0.1.0"

__all__ = ["BertConfig", "build_classifier", "build_encoder", "__version__"]
