"""`tfspeed export MODEL --mode MODE --out FILE.tflite`: convert a model directory, optionally within an accuracy budget.

Examples:

    tfspeed export /work/runs/teacher --mode dynamic --out teacher.tflite --report teacher.json
    tfspeed export /work/runs/teacher --max-drop 0.01 --candidates int8,int8-mixed,int8-mixed+bmm --out t8.tflite
"""

from __future__ import annotations

import argparse
import json

from tfspeed import _cli, _io
from tfspeed.export.modes import DEFAULT_CANDIDATES, DEFAULT_FLOAT_NODES, DEFAULT_FLOAT_OPS, Mode


def register(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "export", help="convert a model directory to .tflite (float32/float16/dynamic/int8), with a parity report",
        description="Convert a tfspeed model directory to a fixed-shape .tflite (signature serving_default). "
                    "Calibration text for int8 comes from the training split of --data, tokenized with the model's "
                    "vocab.txt; the parity report is computed on --eval-split.")
    p.add_argument("model", help="tfspeed model directory (model.keras, vocab.txt, tfspeed.json)")
    p.add_argument("--mode", default=Mode.DYNAMIC.value, choices=Mode.choices(),
                   help="int8-mixed keeps --float-ops float (default: dynamic)")
    p.add_argument("--float-ops", default=None,
                   help=f"comma-separated TFLite op types kept float in int8-mixed (default: {','.join(DEFAULT_FLOAT_OPS)})")
    p.add_argument("--float-nodes", default=None,
                   help="comma-separated regular expressions on op output tensor names kept float in int8-mixed "
                        f"(default: {','.join(DEFAULT_FLOAT_NODES)}: the attention softmax block with its mask)")
    p.add_argument("--seq-length", type=int, default=None, help="fixed sequence length (default: the model directory's)")
    p.add_argument("--num-calibration-samples", type=int, default=200,
                   help="training texts used to calibrate int8 (default: 200)")
    p.add_argument("--max-drop", type=float, default=None,
                   help="accuracy budget as a fraction (0.01 = 1 point): pick the fastest configuration within it on "
                        "the validation split, instead of --mode")
    p.add_argument("--candidates", default=None,
                   help=f"with --max-drop: comma-separated candidates (default: {','.join(c.name for c in DEFAULT_CANDIDATES)})")
    p.add_argument("--order", default="measured", choices=["measured", "known"],
                   help="with --max-drop: try candidates by latency measured here, or in the listed order (default: measured)")
    p.add_argument("--report", default=None, help="write the parity report (and budget record) as JSON here")
    p.add_argument("--eval-split", default="test", choices=["test", "validation", "none"],
                   help="split for the parity report; 'none' skips it (default: test)")
    p.add_argument("--threads", type=int, default=1, help="interpreter threads for evaluation (default: 1)")
    _cli.add_data_args(p)
    _cli.add_out_args(p, "the .tflite file to write")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    from tfspeed.data import EncodedSplit, Tokenizer
    from tfspeed.export.budget import export_within_budget
    from tfspeed.export.convert import Converter, save_tflite
    from tfspeed.export.parity import format_report, parity_report

    _io.check_writable(args.out, args.overwrite, "out")
    if args.report:
        _io.check_writable(args.report, args.overwrite, "report")
    if args.max_drop is None and (args.candidates or args.order != "measured"):
        raise ValueError("`--candidates` and `--order` apply to the accuracy budget: pass --max-drop too.")
    converter = Converter(args.model, args.seq_length, None, args.num_calibration_samples)  # fails fast on a bad MODEL
    dataset = _cli.load_data(args)
    converter.calibration = dataset  # int8 calibrates on its training split
    tokenizer = Tokenizer(converter.vocab, seq_length=converter.seq_length)
    record = None
    if args.max_drop is not None:
        validation = EncodedSplit.from_split(dataset.validation, tokenizer, args.eval_limit)
        data, record = export_within_budget(
            converter, validation, max_drop=args.max_drop, candidates=args.candidates, order=args.order,
            num_threads=args.threads, verbose=True)
        print(record.to_table())
        mode = next(t["mode"] for t in record.tried if t["name"] == record.chosen)
    else:
        mode = Mode.parse(args.mode)
        data = converter.convert(mode, args.float_ops, args.float_nodes)
        mode = mode.value
    report = None
    if args.eval_split != "none":
        split = EncodedSplit.from_split(dataset.split(args.eval_split), tokenizer, args.eval_limit)
        report = parity_report(data, converter.keras_model, split, num_threads=args.threads,
                               name=f"{args.model} {mode} ({args.eval_split})", latency_runs=20)
        print(format_report(report))
    save_tflite(data, args.out, overwrite=args.overwrite)
    print(f"Wrote {args.out} ({len(data) / 1e6:.2f} MB, mode {mode})")
    if args.report:
        out = {"format_version": 1, "model": str(args.model), "mode": mode, "out": str(args.out),
               "seq_length": converter.seq_length, "parity": report,
               "budget": record.to_dict() if record is not None else None}
        _io.write_json(args.report, out, overwrite=args.overwrite, argument="report")
        print(f"Wrote {args.report}")
    elif report is None and record is None:
        print(json.dumps({"mode": mode, "size_bytes": len(data)}))
    return 0
