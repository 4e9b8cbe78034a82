"""`RecipeConfig`: what `tfspeed optimize` runs, composed of the stages' own configs, readable from JSON or TOML.

Each stage keeps its settings in its own config (`recipe.qat.epochs`, `recipe.distill.layers`,
`recipe.prune.structured.heads`); a recipe file nests them the same way:

```toml
recipe = "vocab,distill,prune,qat"
[distill]
layers = 3
[prune]
kind = "structured"
structured = { heads = 0.25, ffn = 0.25 }
[qat]
epochs = 1
```

Flat shortcuts name the settings people change most (`teacher_epochs`, `student_layers`, `prune` as the pruning
kind, `heads`, `ffn`, `sparsity`, `batch_size` for every stage ...): `RecipeConfig(heads=0.25)` is
`RecipeConfig(prune=PruneStageConfig(kind="structured", structured=StructuredConfig(heads=0.25, ...)))`; they are also
the `tfspeed optimize` flags.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

from tfspeed.compress.distillation.config import DistillConfig
from tfspeed.compress.pruning.config import PruneConfig
from tfspeed.compress.quantization.config import QATConfig
from tfspeed.compress.structured import StructuredConfig
from tfspeed.compress.vocab import VocabConfig
from tfspeed.config import StageConfig, check_choice, check_positive_int, check_range, field, read_config_file
from tfspeed.data.config import DataConfig
from tfspeed.distribute import STRATEGIES
from tfspeed.stages.prune import PruneKind, PruneStageConfig
from tfspeed.train import FinetuneConfig

STAGES = ("vocab", "distill", "prune", "lowrank", "exits", "qat")
PRUNE_MODES = ("structured", "unstructured")
VARLEN_FORMS = ("buckets", "dynamic")


def _stages(text: str) -> tuple:
    return tuple(s.strip() for s in text.split(",") if s.strip())


def _recipe_prune() -> PruneStageConfig:
    """The recipe's pruning: half the heads and FFN units removed by Taylor importance, recovered in 2 epochs by
    distillation from the chain's teacher."""
    return PruneStageConfig(kind=PruneKind.STRUCTURED,
                            prune=PruneConfig(epochs=2, learning_rate=5e-5, distill=True),
                            structured=StructuredConfig(heads=0.5, ffn=0.5, num_batches=8), tflite_report=False)


# Flat shortcut -> (stage config, *path). `prune` (the kind) and `batch_size` (every stage) are handled apart.
SHORTCUTS = {
    "teacher_epochs": ("teacher", "epochs"),
    "teacher_learning_rate": ("teacher", "learning_rate"),
    "distill_epochs": ("distill", "epochs"),
    "distill_learning_rate": ("distill", "learning_rate"),
    "student_layers": ("distill", "layers"),
    "prune_epochs": ("prune", "prune", "epochs"),
    "prune_learning_rate": ("prune", "prune", "learning_rate"),
    "sparsity": ("prune", "prune", "sparsity"),
    "heads": ("prune", "structured", "heads"),
    "ffn": ("prune", "structured", "ffn"),
    "qat_epochs": ("qat", "epochs"),
    "qat_learning_rate": ("qat", "learning_rate"),
    # the data's settings (`DataConfig`): `RecipeConfig(data="pairs.csv", text_pair_column="b")`
    **{name: ("data", name) for name in ("train", "validation", "test", "text_column", "text_pair_column",
                                         "label_column", "label_names", "on_bad_row", "encoding")},
}
SPECIAL_SHORTCUTS = ("prune", "batch_size")
_TRAINING = ("teacher", "distill", "prune", "qat")


@dataclasses.dataclass(init=False)
class RecipeConfig(StageConfig):
    """The whole optimization run.

    Args:
        model: preset, TF-Hub SavedModel directory or URL to fine-tune as the teacher, or a tfspeed model directory
            used as the teacher as it is. Defaults to `"minilm-l6"`.
        data: the labelled text (`DataConfig`: the built-in `"rotten_tomatoes"` or a CSV / JSONL file, split files,
            columns, sentence pairs); a string is `DataConfig(data=string)`. Defaults to `"rotten_tomatoes"`.
        recipe: compression stages chained in order, each starting from the previous one's model; among "vocab"
            (trim the vocabulary to the training data's tokens), "distill", "prune", "qat", and any stage
            registered with `tfspeed.stages.register_stage`. Defaults to `("distill", "prune", "qat")`.
        seq_length: tokens per example, for training, the .tflite files and profiling. Defaults to `128`.
        max_drop: accuracy budget of the post-training int8 export of the teacher. Defaults to `0.01`.
        int8_ptq: search that export (`teacher-int8-ptq`: the int8 configurations most integer first, the first
            within `max_drop` kept; several conversions and evaluations). Defaults to `True`.
        threads: interpreter threads when profiling. Defaults to `1` (a phone's big core).
        profile_runs: measured runs per model. Defaults to `50`.
        real_text: also export each dynamic-range file in a variable-length form (`varlen`) and time every
            artifact on the test texts (variable-length files on length buckets, the others padded:
            `real_text_profile.json`); the report gives both latencies and picks the combined model by the real-text
            one. Defaults to `True`.
        varlen: the variable-length form: `"buckets"` (`NAME-buckets`: one file with a fixed-length signature per
            length bucket 16/32/48/64/.../seq_length, weights stored once; the faster on CPU: no re-planning per
            length) or `"dynamic"` (`NAME-varlen`: inputs [1, -1]; one subgraph, so MediaPipe's TextClassifier loads
            it, which it refuses for a file of several signatures). Defaults to `"buckets"`.
        metadata: every .tflite carries TFLite metadata (vocabulary, labels, a softmax `probability` output) for
            MediaPipe's `TextClassifier` and `tfspeed predict`. Defaults to `True`.
        extra_modes: also export the teacher and every float stage in these post-training modes (`NAME-MODE`,
            e.g. `("int4", "16x8")`: see `tfspeed.export.Mode`); each file is evaluated, profiled and reported like
            the others. Static modes calibrate on the training split. Defaults to `()`.
        limit / eval_limit: first N training / evaluation examples only (quick runs). Defaults to `None` (all).
        strategy: "mirrored" or "multi-worker" (from TF_CONFIG) for the training stages. Defaults to `None`.
        teacher: fine-tuning of the teacher (`FinetuneConfig`). Defaults to 3 epochs at 5e-5.
        vocab: vocabulary trimming (`VocabConfig`).
        distill: distillation (`DistillConfig`). Defaults to a 3-layer student, 3 epochs at 1e-4.
        prune: pruning (`PruneStageConfig`). Defaults to structured: half the heads and FFN units, 2 epochs at 5e-5
            distilled from the chain's teacher.
        qat: quantization-aware training (`QATConfig`). Defaults to 1 epoch at 2e-5.
        stages: configs of other registered stages, by stage name. Defaults to `{}`.
    """

    model: str = field("minilm-l6", help="preset, TF-Hub SavedModel directory or URL, or Hugging Face BERT "
                                         "directory to fine-tune, or a tfspeed model directory used as the teacher")
    data: DataConfig = field(default_factory=DataConfig, cli=False,
                             help="the labelled text: 'rotten_tomatoes' or a .csv/.jsonl file, split files, columns")
    recipe: tuple = field(("distill", "prune", "qat"), parse=_stages,
                          help=f"comma-separated stages among {','.join(STAGES)} (or registered ones)")
    seq_length: int = field(128, help="tokens per example for training, .tflite files and profiling")
    max_drop: float = field(0.01, help="accuracy budget of the post-training int8 export (0.01 = one point)")
    int8_ptq: bool = field(True, help="search the teacher's post-training int8 export within max_drop "
                                      "(teacher-int8-ptq)")
    threads: int = field(1, help="interpreter threads when profiling")
    profile_runs: int = field(50, help="measured runs per model")
    real_text: bool = field(True, help="also export variable-length twins of the dynamic-range files and time every "
                                       "artifact on the real test texts, each at its own length")
    varlen: str = field("buckets", choices=list(VARLEN_FORMS),
                        help="variable-length twins: one file of length-bucket signatures (faster), or a dynamic "
                             "[1, -1] file (the form MediaPipe's TextClassifier loads)")
    metadata: bool = field(True, help="write TFLite metadata (tokenizer vocabulary, labels, softmax output) into "
                                      "every .tflite, for MediaPipe's TextClassifier and tfspeed predict")
    extra_modes: tuple = field((), parse=_stages, metavar="MODE,...",
                               help="also export the teacher and every float stage in these modes (e.g. int4,16x8), "
                                    "each evaluated, profiled and reported")
    limit: Optional[int] = field(None, help="first N training examples only")
    eval_limit: Optional[int] = field(None, help="first N validation/test examples only")
    strategy: Optional[str] = field(None, choices=list(STRATEGIES),
                                    help="tf.distribute strategy: mirrored, or multi-worker (from TF_CONFIG)")
    teacher: FinetuneConfig = field(default_factory=FinetuneConfig, cli=False, help="the teacher's fine-tuning")
    vocab: VocabConfig = field(default_factory=VocabConfig, cli=False, help="vocabulary trimming")
    distill: DistillConfig = field(default_factory=DistillConfig, cli=False, help="distillation")
    prune: PruneStageConfig = field(default_factory=_recipe_prune, cli=False, help="pruning")
    qat: QATConfig = field(default_factory=QATConfig, cli=False, help="quantization-aware training")
    stages: dict = field(default_factory=dict, cli=False, help="configs of other registered stages")

    def __init__(self, **kwargs):
        shortcuts = {k: kwargs.pop(k) for k in list(kwargs)
                     if k in SHORTCUTS or (k in SPECIAL_SHORTCUTS and not isinstance(kwargs[k], (dict, StageConfig)))}
        names = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(kwargs) - names)
        if unknown:
            raise TypeError(f"Unknown recipe settings {unknown}. Expected keys among "
                            f"{sorted(names | set(SHORTCUTS) | set(SPECIAL_SHORTCUTS))}.")
        for f in dataclasses.fields(self):
            if f.name in kwargs:
                value = kwargs[f.name]
            elif f.default is not dataclasses.MISSING:
                value = f.default
            else:
                value = f.default_factory()
            setattr(self, f.name, value)
        if not isinstance(self.data, (dict, DataConfig)):  # a dataset name or a file
            self.data = DataConfig(data=str(self.data))
        for name, cls in (("teacher", FinetuneConfig), ("vocab", VocabConfig), ("distill", DistillConfig),
                          ("prune", PruneStageConfig), ("qat", QATConfig), ("data", DataConfig)):
            if isinstance(getattr(self, name), dict):
                setattr(self, name, cls.from_dict(getattr(self, name)))
        for key, value in shortcuts.items():
            self._apply_shortcut(key, value)
        self.__post_init__()

    def _apply_shortcut(self, key: str, value):
        try:
            if key == "prune":
                if str(value) not in PRUNE_MODES:
                    raise ValueError(f"Received an invalid value for `prune`, expected one of {list(PRUNE_MODES)}. "
                                     f"Received: prune={value!r}")
                kind = PruneKind(str(value))
                distill = kind == PruneKind.STRUCTURED  # structured recovers from the teacher, unstructured on labels
                self.prune = self.prune.replace(kind=kind, prune=self.prune.prune.replace(distill=distill))
            elif key == "batch_size":
                check_positive_int("batch_size", value)
                for name in _TRAINING:
                    config = getattr(self, name)
                    if name == "prune":
                        self.prune = config.replace(prune=config.prune.replace(batch_size=value))
                    else:
                        setattr(self, name, config.replace(batch_size=value))
            else:
                stage, *path = SHORTCUTS[key]
                setattr(self, stage, _set(getattr(self, stage), path, value))
        except ValueError as e:
            message = str(e)
            if f"`{key}`" not in message:
                message = f"Received an invalid value for `{key}` ({'.'.join(SHORTCUTS.get(key, (key,)))}): {message}"
            raise ValueError(message) from None

    def __getattr__(self, name):  # the flat shortcuts read the nested settings
        if name in SHORTCUTS:
            stage, *path = SHORTCUTS[name]
            value = self.__getattribute__(stage)
            for part in path:
                value = getattr(value, part)
            return value
        raise AttributeError(f"'RecipeConfig' object has no attribute {name!r}")

    @property
    def prune_kind(self) -> str:
        return self.prune.kind.value

    def validate(self):
        from tfspeed.stages import stage_names
        from tfspeed.stages.base import canonical_stage_name

        recipe = _stages(self.recipe) if isinstance(self.recipe, str) else tuple(self.recipe)
        self.recipe = tuple(canonical_stage_name(s) for s in recipe)

        known = [s for s in stage_names() if s != "finetune"]
        unknown = [s for s in self.recipe if s not in known]
        if unknown:
            raise ValueError(f"Received an invalid value for `recipe`, expected stages among {known}. "
                             f"Received: recipe={','.join(self.recipe)!r} (unknown: {unknown})")
        if len(set(self.recipe)) != len(self.recipe):
            raise ValueError(f"Each stage may appear once in `recipe`. Received: recipe={','.join(self.recipe)!r}")
        if "vocab" in self.recipe and self.recipe[0] != "vocab":
            raise ValueError("`vocab` must be the first stage of `recipe` (the later stages share its vocabulary). "
                             f"Received: recipe={','.join(self.recipe)!r}")
        if "qat" in self.recipe and self.recipe[-1] != "qat":
            raise ValueError("`qat` must be the last stage of `recipe` (its model is the int8 file). "
                             f"Received: recipe={','.join(self.recipe)!r}")
        from tfspeed.export.modes import Mode

        modes = _stages(self.extra_modes) if isinstance(self.extra_modes, str) else tuple(self.extra_modes)
        self.extra_modes = tuple(Mode.parse(m, "extra_modes").value for m in modes)
        if len(set(self.extra_modes)) != len(self.extra_modes):
            raise ValueError(f"Each mode may appear once in `extra_modes`. Received: extra_modes={modes!r}")
        for name in ("seq_length", "threads", "profile_runs"):
            check_positive_int(name, getattr(self, name))
        for name in ("limit", "eval_limit"):
            if getattr(self, name) is not None:
                check_positive_int(name, getattr(self, name))
        check_range("max_drop", self.max_drop, 0, 1, high_open=True, what="a fraction in [0, 1) (0.01 = one point)")
        check_choice("varlen", self.varlen, VARLEN_FORMS)
        if self.strategy not in (None, *STRATEGIES):
            raise ValueError(f"Received an invalid value for `strategy`, expected 'mirrored' or 'multi-worker'. "
                             f"Received: strategy={self.strategy!r}")
        from tfspeed.stages import get_stage

        self.stages = {canonical_stage_name(k): v for k, v in self.stages.items()}
        for name, value in list(self.stages.items()):
            stage = get_stage(name)
            if not isinstance(value, stage.config):
                self.stages[name] = stage.config.from_dict(value or {})

    def stage_config(self, name: str) -> StageConfig:
        """The config of stage `name` in this recipe (a registered stage's defaults when the recipe has none)."""
        if name in ("teacher", "finetune"):
            return self.teacher
        if name == "qat" and not self.metadata:  # --no-metadata covers the QAT stage's file too
            return self.qat.replace(metadata=False)
        if name in ("vocab", "distill", "prune", "qat"):
            return getattr(self, name)
        from tfspeed.stages import get_stage

        return self.stages.get(name) or get_stage(name).config()

    @classmethod
    def from_dict(cls, d: dict) -> "RecipeConfig":
        """A recipe from a JSON / TOML table: nested stage tables and flat shortcuts; unknown keys are refused."""
        if isinstance(d, cls):
            return d
        names = {f.name for f in dataclasses.fields(cls)} | set(SHORTCUTS) | set(SPECIAL_SHORTCUTS)
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"Unknown recipe settings {unknown}. Expected keys among {sorted(names)}.")
        return cls(**d)

    @classmethod
    def from_file(cls, path) -> "RecipeConfig":
        """Reads a `.json` or `.toml` recipe file (keys are the constructor arguments and the shortcuts)."""
        return cls.from_dict(read_config_file(path, "`--config`"))

    def to_dict(self) -> dict:
        d = super().to_dict()
        for name in ("teacher", "vocab", "distill", "prune", "qat"):
            d[name] = getattr(self, name).to_dict()
        d["stages"] = {k: v.to_dict() for k, v in self.stages.items()}
        return d


def _set(config: StageConfig, path, value) -> StageConfig:
    head, *rest = path
    if rest:
        return config.replace(**{head: _set(getattr(config, head), rest, value)})
    return config.replace(**{head: value})


# `tfspeed demo`: the recipe measured on MiniLM / Rotten Tomatoes (benchmarks/README.md): fine-tune the teacher for 2
# epochs, trim the vocabulary, distil into 3 layers (2 epochs), remove a quarter of the heads and FFN units, then QAT
# for the int8 row of the report. Two epochs instead of three for the teacher and the student, and no post-training
# int8 search of the teacher (on BERT the fully integer configurations miss a 1-point budget by 8 to 30 points, and
# the one that passes keeps most of the model float: 1.1x smaller, no faster than dynamic range; QAT gives the int8
# row) keep the run near 30 minutes on 2 cores (benchmarks/README.md, the demo).
DEMO = dict(recipe=("vocab", "distill", "prune", "qat"), heads=0.25, ffn=0.25, prune_epochs=1, teacher_epochs=2,
            distill_epochs=2, int8_ptq=False)
