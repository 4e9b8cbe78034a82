"""The shape every stage shares: a runner `run(source, config, out, ctx) -> metrics`, a config, and a registry.

A stage reads a source (a model directory, or for fine-tuning a model handle), runs its compression or training with
its config, writes a model directory to `out` atomically and returns its metrics (also in `out/metrics.json`). The
same runner serves the stage's `tfspeed` command and `tfspeed optimize`; `StageContext` carries what differs between
the two (the data, the strategy, the chain's teacher, where checkpoints go, how to log).

Adding a stage is one module with a config and a runner, registered here:

>>> import dataclasses
>>> from tfspeed.config import StageConfig, field
>>> from tfspeed.stages import register_stage, get_stage
>>> @dataclasses.dataclass
... class NoopConfig(StageConfig):
...     note: str = field("hello", help="a note")
>>> @register_stage("noop-doc", NoopConfig, help="copies nothing")
... def run(source, config, out, ctx):
...     return {"note": config.note}
>>> get_stage("noop-doc").run("src", NoopConfig(), "out", None)
{'note': 'hello'}
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path
from typing import Callable, Optional

from tfspeed.config import StageConfig


@dataclasses.dataclass
class StageContext:
    """What a runner needs besides its config: the data, the distribution strategy, the chain's teacher.

    Args:
        dataset: the labelled text (`TextDataset`).
        seq_length: tokens per example. Defaults to `None` (the source model directory's, else 128).
        limit / eval_limit: first N training / evaluation examples only. Defaults to `None` (all).
        strategy: a `tf.distribute.Strategy`. Defaults to `None` (the default strategy).
        teacher_dir: the chain's teacher model directory (`optimize`); a stage's own command uses its source.
        work_dir: where `BackupAndRestore` checkpoints go, so an interrupted fit resumes. Defaults to `None` (none).
        overwrite: replace `out` if it exists. Defaults to `False`.
        log: one-line progress messages. Defaults to `print`.
        clock: the run's `tfspeed.clock.RunClock`, told each training stage's speed (`optimize`). Defaults to
            `None`.
        step: `(index, total)` of the running stage in the run, for its progress lines. Defaults to `None`.
    """

    dataset: object
    seq_length: Optional[int] = None
    limit: Optional[int] = None
    eval_limit: Optional[int] = None
    strategy: object = None
    teacher_dir: Optional[Path] = None
    work_dir: Optional[Path] = None
    overwrite: bool = False
    log: Callable[[str], None] = print
    clock: object = None
    step: Optional[tuple] = None
    _encoded: dict = dataclasses.field(default_factory=dict, repr=False)

    def __post_init__(self):
        if self.strategy is None:
            from tfspeed.compat import tf

            self.strategy = tf.distribute.get_strategy()

    def encoded(self, vocab_path, seq_length: Optional[int] = None, lower_case: bool = True):
        """The dataset tokenized with `vocab_path` at `seq_length`, lower-cased or not as the model was trained
        (cached per vocabulary, length and case)."""
        from tfspeed.data import EncodedDataset, Tokenizer

        seq_length = seq_length or self.seq_length or 128
        key = (str(vocab_path), seq_length, bool(lower_case))
        if key not in self._encoded:
            tok = Tokenizer(vocab_path, seq_length=seq_length, lower_case=bool(lower_case))
            self._encoded[key] = EncodedDataset(self.dataset, tok, limit=self.limit, eval_limit=self.eval_limit)
        return self._encoded[key]

    def backup(self, stage: str) -> list:
        """`BackupAndRestore` for a training stage when the context has a `work_dir` (else no callback)."""
        if self.work_dir is None:
            return []
        from tfspeed.compat import keras

        return [keras.callbacks.BackupAndRestore(str(Path(self.work_dir) / "backup" / stage))]

    def fit_callbacks(self, stage: str) -> list:
        """The callbacks a training stage adds to its `fit`: `BackupAndRestore` (with a `work_dir`) and a
        `StageProgress` line per epoch with the stage's time left (and the run's, with a `clock`)."""
        from tfspeed.clock import StageProgress

        index, total = self.step or (None, None)
        kind = "finetune" if stage == "teacher" else stage
        return [*self.backup(stage), StageProgress(stage, kind=kind, clock=self.clock, index=index, total=total,
                                                   log=self.log)]

    def logits_cache(self, teacher) -> Optional[Path]:
        """Where the teacher logits of `teacher` (a model directory) on the training split are kept between the
        stages of one run that distil from it (`work_dir/teacher-logits`), or `None` without a `work_dir`. The file
        is reused only when its fingerprint (the split's arrays, the teacher's weights) matches."""
        if self.work_dir is None or not isinstance(teacher, (str, Path)):
            return None
        import hashlib

        from tfspeed.distribute import is_chief

        key = hashlib.sha1(f"{Path(teacher).resolve()}|{self.seq_length}|{self.limit}".encode()).hexdigest()[:16]
        # multi-worker: each worker its own file, or two workers sharing the work_dir would write one at once
        worker = "" if is_chief(self.strategy) else f"-worker{self.strategy.cluster_resolver.task_id}"
        return Path(self.work_dir) / "teacher-logits" / f"{Path(teacher).name}-{key}{worker}.npz"

    def known_accuracy(self, model_dir, model, split) -> float:
        """Test accuracy of `model` (loaded from `model_dir`) on `split`: the one the directory's metrics.json
        records when it was measured on the same data (dataset, test split, number of examples, seq_length), else
        measured now."""
        from tfspeed import artifacts
        from tfspeed.train import accuracy

        if isinstance(model_dir, (str, Path)) and artifacts.is_model_dir(model_dir):
            m = artifacts.read_metrics(model_dir)
            seq_length = int(split.features["input_word_ids"].shape[1])
            if (isinstance(m.get("accuracy"), float) and m.get("split") == "test"
                    and m.get("dataset") == self.dataset.name and m.get("num_examples") == len(split)
                    and m.get("seq_length") == seq_length):
                return m["accuracy"]
        return accuracy(model, split)

    @property
    def verbose(self):
        return 1 if sys.stdout.isatty() else 2


@dataclasses.dataclass(frozen=True)
class Stage:
    """A registered stage: its name, its config class, its runner and one line of help."""

    name: str
    config: type
    run: Callable
    help: str = ""
    source: str = "model"  # "model": a model directory; "handle": a preset / TF-Hub handle (fine-tuning)
    branch: bool = False  # in a recipe, the next stage starts from this stage's source, not from its output


_REGISTRY: dict = {}
_ALIASES: dict = {}


def register_stage(name: str, config: type, help: str = "", source: str = "model", branch: bool = False,
                   aliases: tuple = ()):
    """Registers the decorated runner `run(source, config, out, ctx) -> metrics` as stage `name` (also known by
    `aliases`). A `branch` stage's output is a side product of the chain (e.g. an early-exit model): in a recipe, the
    stage after it starts from the model it started from."""
    if not (isinstance(config, type) and issubclass(config, StageConfig)):
        raise ValueError(f"Received an invalid value for `config`, expected a StageConfig subclass. "
                         f"Received: config={config!r}")

    def decorator(run):
        _REGISTRY[name] = Stage(name, config, run, help, source, branch)
        _ALIASES.update({alias: name for alias in aliases})
        return run

    return decorator


def get_stage(name: str) -> Stage:
    """The stage registered as `name` (the built-in stages are registered on first use)."""
    _load_builtin()
    name = _ALIASES.get(name, name)
    if name not in _REGISTRY:
        raise ValueError(f"Received an invalid value for `stage`, expected one of {stage_names()}. "
                         f"Received: stage={name!r}")
    return _REGISTRY[name]


def stage_names() -> list:
    _load_builtin()
    return list(_REGISTRY)


def canonical_stage_name(name: str) -> str:
    """The registered name of stage `name` (its alias resolved), or `name` unchanged when unknown."""
    _load_builtin()
    return _ALIASES.get(name, name)


_BUILTIN = ("finetune", "vocab", "distill", "prune", "lowrank", "exits", "qat")


def _load_builtin():
    import importlib

    for module in _BUILTIN:
        importlib.import_module(f"tfspeed.stages.{module}")


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return result, time.perf_counter() - start


def model_info(source, stage: str, vocab_path=None, **extra):
    """The `ModelInfo` of a stage's output: the source's, with this stage's name and settings."""
    from tfspeed import artifacts

    return artifacts.ModelInfo(seq_length=source.seq_length, label_names=source.label_names, base=source.base,
                               stage=stage, vocab_path=str(vocab_path or source.vocab_path), extra=extra,
                               lower_case=source.lower_case, text_pair=source.text_pair)


def load_teacher(ctx: StageContext, source, info, model, metrics: dict):
    """The teacher for distilling the model directory `source`: the chain's teacher (`ctx.teacher_dir`, recorded in
    `metrics["teacher"]`) when there is one other than `source`, else `model` (the source's own model, loaded).
    Refused when it reads other token ids or predicts other labels than `source`."""
    from tfspeed import artifacts

    if ctx.teacher_dir is None or Path(ctx.teacher_dir).resolve() == Path(source).resolve():
        return model
    teacher_info = artifacts.load_info(ctx.teacher_dir)
    if list(teacher_info.label_names) != list(info.label_names):
        raise ValueError(f"The teacher {str(ctx.teacher_dir)!r} predicts labels {list(teacher_info.label_names)}, the "
                         f"model {str(source)!r} {list(info.label_names)}: distillation needs the same labels in the "
                         "same order.")
    vocab = [Path(p).read_text(encoding="utf-8") if p and Path(p).is_file() else None
             for p in (teacher_info.vocab_path, info.vocab_path)]
    if None not in vocab and vocab[0] != vocab[1]:
        raise ValueError(f"The teacher {str(ctx.teacher_dir)!r} and the model {str(source)!r} have different "
                         f"vocabularies ({len(vocab[0].splitlines())} and {len(vocab[1].splitlines())} tokens): the "
                         "teacher would read other token ids. Distil from a teacher with the model's vocabulary.")
    with ctx.strategy.scope():
        teacher, _ = artifacts.load_model_dir(ctx.teacher_dir)
    metrics["teacher"] = str(ctx.teacher_dir)
    return teacher


def load_source(source, ctx: StageContext):
    """`(model, info, encoded)`: a model directory loaded, and the data tokenized with its vocabulary."""
    from tfspeed import artifacts

    model, info = artifacts.load_model_dir(source)
    if not info.vocab_path:
        raise ValueError(f"The model directory {str(source)!r} has no vocab.txt: cannot tokenize the data.")
    check_inputs(source, info, ctx.dataset)
    seq_length = ctx.seq_length or info.seq_length
    info.seq_length = seq_length
    return model, info, ctx.encoded(info.vocab_path, seq_length, info.lower_case)


def check_inputs(source, info, dataset):
    """Refuses data of the other kind than the model reads: sentence pairs for a single-text model, or the reverse."""
    if bool(info.text_pair) != bool(dataset.is_pairs):
        kinds = {True: "sentence pairs (--text-pair-column)", False: "single texts"}
        raise ValueError(f"The model {str(source)!r} was trained on {kinds[bool(info.text_pair)]}. Received: "
                         f"dataset {dataset.name!r} of {kinds[bool(dataset.is_pairs)]}. Use data of the kind the "
                         "model reads.")
