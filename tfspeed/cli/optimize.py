"""`tfspeed optimize` and `tfspeed demo`: the whole chain (teacher, compression stages, exports, profile, report)."""

from __future__ import annotations

import argparse
import json

from tfspeed.data.config import DataConfig
from tfspeed.recipe.config import DEMO, PRUNE_MODES, RecipeConfig

_DATA_FLAGS = [f for f in DataConfig.field_names() if f not in ("limit", "eval_limit")]  # the recipe has its own

# The shortcut flags: the settings of the stages that people change most (the nested configs hold the rest; a
# --config file sets any of them).
_SHORTCUT_FLAGS = {  # shortcut -> (type, help)
    "teacher_epochs": (int, "fine-tuning epochs of the teacher"),
    "distill_epochs": (int, "distillation epochs"),
    "prune_epochs": (int, "fine-tuning epochs after pruning"),
    "qat_epochs": (int, "quantization-aware training epochs"),
    "student_layers": (int, "layers of the distilled student"),
    "prune": (str, f"pruning kind: {' or '.join(PRUNE_MODES)}"),
    "heads": (float, "fraction of attention heads removed (structured)"),
    "ffn": (float, "fraction of FFN units removed (structured)"),
    "sparsity": (float, "target sparsity (unstructured)"),
    "batch_size": (int, "training batch size of every stage"),
}


def _shown(config: RecipeConfig, key: str):
    if key == "prune":
        return config.prune_kind
    if key == "batch_size":
        return config.teacher.batch_size
    value = getattr(config, key)
    return 0.5 if value is None and key == "sparsity" else value


def _add_options(parser, defaults: RecipeConfig):
    parser.add_argument("--config", default=None, help="a .json or .toml recipe file (flags override it)")
    shown = {f: getattr(defaults, f) for f in RecipeConfig.field_names()}
    RecipeConfig.add_arguments(parser, defaults=shown)
    DataConfig.add_arguments(parser, only=_DATA_FLAGS, group="data")
    for action in parser._actions:  # flags left unset do not override --config
        if action.dest in shown or action.dest in _DATA_FLAGS:
            action.default = None
    for key, (kind, text) in _SHORTCUT_FLAGS.items():
        choices = list(PRUNE_MODES) if key == "prune" else None
        parser.add_argument("--" + key.replace("_", "-"), dest="shortcut_" + key, type=kind, default=None,
                            choices=choices, help=f"{text} (default: {_shown(defaults, key)})")
    parser.add_argument("--overwrite", action="store_true", help="replace --out, even a run of another recipe")


def _config(args, base: dict) -> RecipeConfig:
    from tfspeed.config import read_config_file

    values = dict(base)
    if args.config:
        values.update(read_config_file(args.config))
    values.update({f: getattr(args, f) for f in RecipeConfig.field_names()
                   if getattr(args, f, None) is not None})
    values.update({k: getattr(args, "shortcut_" + k) for k in _SHORTCUT_FLAGS
                   if getattr(args, "shortcut_" + k) is not None})
    data = {f: getattr(args, f) for f in _DATA_FLAGS if getattr(args, f, None) is not None}
    if data:  # flags over the --config file's [data] table (or its `data = "file"`)
        given = values.get("data", {})
        values["data"] = {**(given if isinstance(given, dict) else {"data": str(given)}), **data}
    return RecipeConfig.from_dict(values)


def _run(args, base: dict) -> int:
    from tfspeed.recipe import optimize

    report = optimize(_config(args, base), args.out, overwrite=args.overwrite)
    print(f"Wrote {args.out}/report.md, report.json, pareto.png")
    combined = report.get("combined")
    if combined:
        print(json.dumps(combined, indent=2))
    return 0


def register(subparsers):
    p = subparsers.add_parser("optimize", help="chain fine-tuning, compression, export and profiling; write a report",
                              formatter_class=argparse.RawDescriptionHelpFormatter, description=__doc__)
    _add_options(p, RecipeConfig())
    p.add_argument("--out", required=True, help="run directory (a rerun resumes it)")
    p.set_defaults(func=lambda a: _run(a, {}))

    demo = RecipeConfig(**DEMO)
    d = subparsers.add_parser("demo", help="the main job on the built-in default: MiniLM on Rotten Tomatoes, "
                                           f"recipe {','.join(demo.recipe)}, about 30 minutes on 2 idle cores")
    _add_options(d, demo)
    d.add_argument("--out", default="runs/demo", help="run directory (default: runs/demo; a rerun resumes it)")
    d.set_defaults(func=lambda a: _run(a, DEMO))
