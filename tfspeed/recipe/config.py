"""`RecipeConfig`: what `tfspeed optimize` runs, checked when made, readable from a JSON or TOML file."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Optional

from tfspeed import _checks

STAGES = ("vocab", "distill", "prune", "qat")
PRUNE_MODES = ("structured", "unstructured")


@dataclasses.dataclass
class RecipeConfig:
    """The whole optimization run.

    Args:
        model: preset, TF-Hub SavedModel directory or URL to fine-tune as the teacher, or a tfspeed model directory
            used as the teacher as it is. Defaults to `"minilm-l6"`.
        data: `"rotten_tomatoes"` or a CSV / JSONL path. Defaults to `"rotten_tomatoes"`.
        recipe: compression stages chained in order, each starting from the previous one's model; among
            "vocab" (trim the vocabulary to the training data's tokens), "distill", "prune", "qat".
            Defaults to `("distill", "prune", "qat")`.
        seq_length: tokens per example, for training, the .tflite files and profiling. Defaults to `128`.
        teacher_epochs / distill_epochs / prune_epochs / qat_epochs: Defaults to `3` / `3` / `2` / `1`.
        student_layers: layers of the distilled student (DistilBERT-style, every other teacher layer). Defaults to `3`.
        prune: "structured" (remove heads and FFN units: faster) or "unstructured" (TFMOT magnitude pruning: smaller
            gzip). Defaults to `"structured"`.
        heads / ffn: fraction of attention heads / FFN units removed by structured pruning. Defaults to `0.5` / `0.5`.
        sparsity: target sparsity of unstructured pruning. Defaults to `0.5`.
        max_drop: accuracy budget of the post-training int8 export of the teacher. Defaults to `0.01`.
        batch_size: Defaults to `32`.
        threads: interpreter threads when profiling. Defaults to `1` (a phone's big core).
        profile_runs: measured runs per model. Defaults to `50`.
        limit / eval_limit: first N training / evaluation examples only (quick runs). Defaults to `None` (all).
        strategy: "mirrored" or "multi-worker" (from TF_CONFIG) for the training stages. Defaults to `None`.
    """

    model: str = "minilm-l6"
    data: str = "rotten_tomatoes"
    recipe: tuple = ("distill", "prune", "qat")
    seq_length: int = 128
    teacher_epochs: int = 3
    distill_epochs: int = 3
    prune_epochs: int = 2
    qat_epochs: int = 1
    student_layers: int = 3
    prune: str = "structured"
    heads: float = 0.5
    ffn: float = 0.5
    sparsity: float = 0.5
    max_drop: float = 0.01
    batch_size: int = 32
    threads: int = 1
    profile_runs: int = 50
    limit: Optional[int] = None
    eval_limit: Optional[int] = None
    strategy: Optional[str] = None
    teacher_learning_rate: float = 5e-5
    distill_learning_rate: float = 1e-4
    prune_learning_rate: float = 5e-5
    qat_learning_rate: float = 2e-5

    def __post_init__(self):
        if isinstance(self.recipe, str):
            self.recipe = tuple(s.strip() for s in self.recipe.split(",") if s.strip())
        self.recipe = tuple(self.recipe)
        unknown = [s for s in self.recipe if s not in STAGES]
        if unknown:
            raise ValueError(f"Received an invalid value for `recipe`, expected stages among {list(STAGES)}. "
                             f"Received: recipe={','.join(self.recipe)!r} (unknown: {unknown})")
        if len(set(self.recipe)) != len(self.recipe):
            raise ValueError(f"Each stage may appear once in `recipe`. Received: recipe={','.join(self.recipe)!r}")
        if "vocab" in self.recipe and self.recipe[0] != "vocab":
            raise ValueError("`vocab` must be the first stage of `recipe` (the later stages share its vocabulary). "
                             f"Received: recipe={','.join(self.recipe)!r}")
        if "qat" in self.recipe and self.recipe[-1] != "qat":
            raise ValueError("`qat` must be the last stage of `recipe` (its model is the int8 file). "
                             f"Received: recipe={','.join(self.recipe)!r}")
        if self.prune not in PRUNE_MODES:
            raise ValueError(f"Received an invalid value for `prune`, expected one of {list(PRUNE_MODES)}. "
                             f"Received: prune={self.prune!r}")
        _checks.fields(self, ("seq_length", "teacher_epochs", "distill_epochs", "prune_epochs", "qat_epochs",
                              "student_layers", "batch_size", "threads", "profile_runs"), _checks.positive_int)
        _checks.fields(self, ("heads", "ffn", "sparsity"), _checks.fraction)
        _checks.fraction("max_drop", self.max_drop, "a fraction in [0, 1) (0.01 = one point)")
        if self.strategy not in (None, "default", "mirrored", "multi-worker"):
            raise ValueError(f"Received an invalid value for `strategy`, expected 'mirrored' or 'multi-worker'. "
                             f"Received: strategy={self.strategy!r}")

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["recipe"] = list(self.recipe)
        return d

    @classmethod
    def fields(cls) -> dict:
        return {f.name: f for f in dataclasses.fields(cls)}

    @classmethod
    def from_dict(cls, d: dict) -> "RecipeConfig":
        unknown = sorted(set(d) - set(cls.fields()))
        if unknown:
            raise ValueError(f"Unknown recipe settings {unknown}. Expected keys among {sorted(cls.fields())}.")
        return cls(**d)

    @classmethod
    def from_file(cls, path) -> "RecipeConfig":
        """Reads a `.json` or `.toml` recipe file (keys are the constructor arguments)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"Expected a recipe file for `--config`. Received: {str(path)!r}, no such file.")
        if path.suffix == ".toml":
            try:
                import tomllib
            except ImportError as e:  # Python 3.10
                raise ValueError("TOML recipe files need Python 3.11+; use a .json file.") from e
            return cls.from_dict(tomllib.loads(path.read_text()))
        if path.suffix == ".json":
            return cls.from_dict(json.loads(path.read_text()))
        raise ValueError(f"Expected a .json or .toml recipe file for `--config`. Received: {str(path)!r}")


# `tfspeed demo`: the recipe measured on MiniLM / Rotten Tomatoes (README): trim the vocabulary, distil into 3 layers,
# remove a quarter of the heads and FFN units, then QAT for the int8 row of the report.
DEMO = dict(recipe=("vocab", "distill", "prune", "qat"), heads=0.25, ffn=0.25, prune_epochs=1)
