"""`tfspeed convert MODEL --to huggingface|keras-hub --out DIR`: a model directory back to another library's format.

Examples:

    tfspeed convert runs/demo/03-prune --to huggingface --out pruned-hf     # transformers' from_pretrained reads it
    tfspeed convert runs/demo/02-distill --to keras-hub --out student-kh    # keras_hub...from_preset reads it
"""

from __future__ import annotations

import argparse

from tfspeed.cli import common

FORMATS = ("huggingface", "keras-hub")


def register(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "convert", help="write a model directory as a Hugging Face BERT directory or a keras-hub preset",
        formatter_class=argparse.RawDescriptionHelpFormatter, description=__doc__)
    p.add_argument("model", help="tfspeed model directory (model.keras, vocab.txt, tfspeed.json)")
    p.add_argument("--to", required=True, choices=FORMATS,
                   help="huggingface: config.json, model.safetensors, vocab.txt, tokenizer_config.json; keras-hub: a "
                        "preset directory with its tokenizer (needs the keras-hub extra)")
    common.add_out_args(p, "the directory to write")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    from tfspeed import _io, artifacts

    _io.check_writable(args.out, args.overwrite)
    model, info = artifacts.load_model_dir(args.model)
    if args.to == "huggingface":
        from tfspeed.hub.huggingface import export_huggingface

        export_huggingface(model, args.out, vocab_path=info.vocab_path, label_names=info.label_names,
                           lower_case=info.lower_case, overwrite=args.overwrite)
    else:
        from tfspeed.hub.keras_hub import save_preset

        save_preset(model, args.out, vocab_path=info.vocab_path, lower_case=info.lower_case,
                    sequence_length=info.seq_length, overwrite=args.overwrite)
    print(f"Wrote {args.out} ({args.to})")
    return 0
