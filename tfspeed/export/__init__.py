"""Export: BERT classifier -> .tflite, with calibration, an accuracy budget and a parity report.

Example:

>>> from tfspeed.export import Mode, convert, export_within_budget, parity_report, format_report
>>> data = convert("/work/runs/teacher", mode=Mode.DYNAMIC, seq_length=64)
>>> report = parity_report(data, "/work/runs/teacher", encoded.test)
>>> print(format_report(report))
>>> data, record = export_within_budget("/work/runs/teacher", encoded.validation, max_drop=0.01,
...                                     calibration="rotten_tomatoes")
"""

from tfspeed.export.budget import BudgetError, BudgetRecord, export_within_budget, measure_latencies
from tfspeed.export.calibration import calibration_features, fit_features, representative_dataset
from tfspeed.export.convert import ConversionError, Converter, convert, is_qat, save_tflite, serving_function
from tfspeed.export.modes import DEFAULT_CANDIDATES, DEFAULT_FLOAT_NODES, DEFAULT_FLOAT_OPS, Candidate, Mode
from tfspeed.export.ops import list_ops, op_histogram, sizes
from tfspeed.export.parity import TFLiteClassifier, evaluate, format_report, parity_report

__all__ = [
    "BudgetError",
    "BudgetRecord",
    "Candidate",
    "ConversionError",
    "Converter",
    "DEFAULT_CANDIDATES",
    "DEFAULT_FLOAT_NODES",
    "DEFAULT_FLOAT_OPS",
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
