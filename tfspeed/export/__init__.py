"""Export: BERT classifier -> .tflite, with calibration, an accuracy budget and a parity report.

Example (`runs/teacher` is a model directory written by `tfspeed finetune`; `encoded` an `EncodedDataset`):

```python
from tfspeed.export import ExportConfig, Mode, convert, export_within_budget, format_report, parity_report

data = convert("runs/teacher", mode=Mode.DYNAMIC, seq_length=64)      # .tflite bytes
print(format_report(parity_report(data, "runs/teacher", encoded.test)))
data, record = export_within_budget("runs/teacher", encoded.validation, max_drop=0.01, calibration="rotten_tomatoes")
TextClassifier(convert("runs/teacher")).classify(["A gripping film."])  # metadata: vocab and labels in the file
```
"""

from tfspeed.export.budget import BudgetError, BudgetRecord, export_within_budget, measure_latencies
from tfspeed.export.calibration import calibration_features, fit_features, representative_dataset
from tfspeed.export.config import BudgetOrder, EvalSplit, ExportConfig, Objective
from tfspeed.export.convert import ConversionError, Converter, convert, is_qat, save_tflite, serving_function
from tfspeed.export.metadata import MetadataError, TextMetadata, add_metadata, read_metadata
from tfspeed.export.modes import (
    DEFAULT_CANDIDATES,
    DEFAULT_FLOAT_NODES,
    DEFAULT_FLOAT_OPS,
    QUANTIZER_CANDIDATES,
    Candidate,
    Mode,
)
from tfspeed.export.ops import check_integer_only, integer_report, list_ops, op_histogram, sizes
from tfspeed.export.parity import TFLiteClassifier, evaluate, format_report, parity_report
from tfspeed.export.quantized import int8_fractions
from tfspeed.export.sparsity import sparsity_report
from tfspeed.export.text_classifier import Prediction, TextClassifier

__all__ = [
    "MetadataError",
    "Prediction",
    "TextClassifier",
    "TextMetadata",
    "add_metadata",
    "read_metadata",
    "BudgetError",
    "BudgetOrder",
    "EvalSplit",
    "ExportConfig",
    "int8_fractions",
    "sparsity_report",
    "BudgetRecord",
    "Candidate",
    "ConversionError",
    "Converter",
    "DEFAULT_CANDIDATES",
    "DEFAULT_FLOAT_NODES",
    "DEFAULT_FLOAT_OPS",
    "QUANTIZER_CANDIDATES",
    "Objective",
    "check_integer_only",
    "integer_report",
    "Mode",
    "TFLiteClassifier",
    "calibration_features",
    "convert",
    "evaluate",
    "export_within_budget",
    "fit_features",
    "format_report",
    "is_qat",
    "list_ops",
    "measure_latencies",
    "op_histogram",
    "parity_report",
    "representative_dataset",
    "save_tflite",
    "serving_function",
    "sizes",
]
