"""The export stage: a model directory converted to a .tflite file, optionally within an accuracy budget, with a
parity report (`tfspeed export`)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from tfspeed.export.config import BudgetOrder, EvalSplit, ExportConfig
from tfspeed.stages.base import StageContext


def run(source, config: ExportConfig, out, ctx: StageContext, report: Optional[Path] = None,
        log=print) -> dict:
    """Converts the model directory `source` to the .tflite file `out`; returns the report written to `report`.

    Calibration text for int8 comes from the training split of `ctx.dataset`, tokenized with the model's vocab.txt;
    the parity report is computed on `config.eval_split`.
    """
    from tfspeed import _io, artifacts
    from tfspeed.data import EncodedSplit, Tokenizer
    from tfspeed.export.budget import export_within_budget
    from tfspeed.export.convert import Converter, save_tflite
    from tfspeed.export.ops import check_integer_only, op_histogram
    from tfspeed.export.parity import format_report, parity_report

    _io.check_writable(out, ctx.overwrite, "out")
    if report:
        _io.check_writable(report, ctx.overwrite, "report")
    converter = Converter(source, config.seq_length or ctx.seq_length, None, config.num_calibration_samples)
    dataset = ctx.dataset
    info = artifacts.load_info(source)
    tokenizer = Tokenizer(converter.vocab, seq_length=converter.eval_length, lower_case=info.lower_case)
    # int8 calibrates on the training split (texts are tokenized lower-cased unless given as token ids)
    converter.calibration = dataset if info.lower_case else EncodedSplit.from_split(dataset.train, tokenizer)
    record = None
    if config.buckets:
        return _run_buckets(source, config, out, ctx, report, log, converter, tokenizer, info)
    if config.max_drop is not None:
        validation = EncodedSplit.from_split(dataset.validation, tokenizer, ctx.eval_limit)
        candidates = list(config.candidates) if config.candidates else None
        data, record = export_within_budget(
            converter, validation, max_drop=config.max_drop, candidates=candidates, order=config.order.value,
            num_threads=config.threads, verbose=True, objective=config.objective.value,
            integer_only=config.integer_only)
        log(record.to_table())
        mode = next(t["mode"] for t in record.tried if t["name"] == record.chosen)
    else:
        data = converter.convert(config.mode, config.float_ops, config.float_nodes, config.block_size,
                                 config.recipe)
        mode = config.mode.value
        if config.integer_only:
            check_integer_only(data, f"mode={mode!r}")
    parity = None
    if config.eval_split != EvalSplit.NONE:
        split_name = config.eval_split.value
        split = EncodedSplit.from_split(dataset.split(split_name), tokenizer, ctx.eval_limit)
        parity = parity_report(data, converter.keras_model, split, num_threads=config.threads,
                               name=f"{source} {mode} ({split_name})", latency_runs=20,
                               label_names=list(dataset.label_names))
        log(format_report(parity))
    data, metadata_bytes = _with_metadata(data, source, config, info, log)
    save_tflite(data, out, overwrite=ctx.overwrite)
    log(f"Wrote {out} ({len(data) / 1e6:.2f} MB, mode {mode}"
        f"{f', metadata {metadata_bytes / 1e3:.1f} kB' if metadata_bytes is not None else ', no metadata'})")
    result = {"format_version": 1, "model": str(source), "mode": mode, "out": str(out),
              "seq_length": converter.seq_length, "size_bytes": len(data), "metadata_bytes": metadata_bytes,
              "float_ops": op_histogram(data)["float_ops"], "parity": parity,
              "budget": record.to_dict() if record is not None else None, "config": config.to_dict()}
    if report:
        _io.write_json(report, result, overwrite=ctx.overwrite, argument="report")
        log(f"Wrote {report}")
    return result


def _with_metadata(data: bytes, source, config: ExportConfig, info, log) -> tuple:
    """`(data with TFLite metadata, its bytes)` when asked for and the model can carry it, else `(data, None)`."""
    from tfspeed.export.metadata import metadata_refused

    if not config.metadata:
        return data, None
    refused = metadata_refused(info.text_pair, info.lower_case)
    if refused:
        log(f"No TFLite metadata: the model is {refused}. Run the file with `tfspeed predict FILE --vocab VOCAB "
            "--labels ...`.")
        return data, None
    from tfspeed.export.metadata import add_model_metadata, metadata_bytes

    data = add_model_metadata(data, source)
    return data, metadata_bytes(data)


def _run_buckets(source, config: ExportConfig, out, ctx, report, log, converter, tokenizer, info) -> dict:
    """`--buckets`: one file, a fixed-length signature per bucket; checked on the evaluation split text by text
    (accuracy, agreement with Keras, the largest logit difference). Its metadata (vocabulary, labels, a softmax in
    every signature) is for `tfspeed predict` / `TextClassifier`: MediaPipe's TextClassifier refuses a file of
    several subgraphs."""
    import numpy as np

    from tfspeed import _io
    from tfspeed.data import EncodedSplit
    from tfspeed.export.buckets import BucketRunner, export_buckets
    from tfspeed.export.convert import save_tflite
    from tfspeed.train import predict_logits

    mode = config.mode.value
    data = export_buckets(converter.keras_model, config.buckets, mode)
    parity = None
    if config.eval_split != EvalSplit.NONE:
        split = EncodedSplit.from_split(ctx.dataset.split(config.eval_split.value), tokenizer, ctx.eval_limit)
        logits = BucketRunner(data, num_threads=config.threads).predict(split.features)
        reference = predict_logits(converter.keras_model, split)
        parity = {"split": config.eval_split.value, "num_examples": len(split),
                  "accuracy": float(np.mean(logits.argmax(-1) == split.labels)),
                  "keras_accuracy": float(np.mean(reference.argmax(-1) == split.labels)),
                  "agreement": float(np.mean(logits.argmax(-1) == reference.argmax(-1))),
                  "max_abs_logit_diff": float(np.abs(logits - reference).max())}
        log(f"Buckets {list(config.buckets)} ({mode}) on {len(split)} {parity['split']} texts: accuracy "
            f"{parity['accuracy']:.4f} (Keras {parity['keras_accuracy']:.4f}), agreement {parity['agreement']:.4f}, "
            f"max |Δ logit| {parity['max_abs_logit_diff']:.2e}")
    data, metadata_bytes = _with_metadata(data, source, config, info, log)
    if metadata_bytes is not None:
        log("Metadata for `tfspeed predict` and `TextClassifier` (vocabulary, labels): MediaPipe's TextClassifier "
            "refuses a file of several signatures; for it, export one length (--seq-length) instead.")
    save_tflite(data, out, overwrite=ctx.overwrite)
    log(f"Wrote {out} ({len(data) / 1e6:.2f} MB, mode {mode}, buckets {list(config.buckets)})")
    result = {"format_version": 1, "model": str(source), "mode": mode, "out": str(out), "buckets": list(config.buckets),
              "size_bytes": len(data), "metadata_bytes": metadata_bytes, "parity": parity, "budget": None,
              "config": config.to_dict(), "lower_case": info.lower_case}
    if report:
        _io.write_json(report, result, overwrite=ctx.overwrite, argument="report")
        log(f"Wrote {report}")
    return result


__all__ = ["run", "ExportConfig", "BudgetOrder", "EvalSplit"]
