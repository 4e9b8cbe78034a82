"""`optimize`: the teacher, the chain of stages, the .tflite files, the side-by-side profile and the report.

Each step writes its output atomically under `out`; a rerun skips what is there, and an interrupted training stage
resumes from its `BackupAndRestore` checkpoint (`out/.work/backup/<stage>`).
"""

from __future__ import annotations

import functools
import gzip
import json
import time
from pathlib import Path
from typing import Callable

from tfspeed import _io, artifacts
from tfspeed.profile.env import usable_cores
from tfspeed.recipe.config import RecipeConfig
from tfspeed.stages import StageContext, get_stage, timed
from tfspeed.stages.qat import TFLITE_NAME as QAT_TFLITE

CONFIG_FILE = "recipe.json"
# The post-training int8 artifact: the int8 family only, most integer first, the first within the budget is kept.
# Files that pad every text to one length cost the same on any text: the real-text profile runs them on this many
# of the test texts (the dynamic-length files run on all of them).
PADDED_SAMPLE = 100
TEACHER_LAYERS = 6  # the clock's guess of the teacher's depth (MiniLM); only the time estimates use it
INT8_CANDIDATES = ("int8", "int8-mixed", "int8-mixed+bmm", "int8-fc", "int8-attn-fc")


def _tree_sizes(path: Path) -> tuple:
    """(bytes, gzip bytes) of every file under `path`, concatenated in name order."""
    files = sorted(p for p in Path(path).rglob("*") if p.is_file())
    data = b"".join(p.read_bytes() for p in files)
    return len(data), len(gzip.compress(data, 6))


class Optimizer:
    """Runs a `RecipeConfig` into the directory `out`."""

    def __init__(self, config: RecipeConfig, out, log: Callable[[str], None] = print, overwrite: bool = False):
        self.config, self.out, self.log = config, Path(out), log
        # one run per output folder: a second `optimize` on it stops here (a rerun after this one resumes it)
        _io.claim(self.out, overwrite=True, argument="out")
        self._check_out(overwrite)

    def _check_out(self, overwrite: bool):
        saved = self.out / CONFIG_FILE
        if saved.is_file() and not overwrite:
            previous = json.loads(saved.read_text())
            try:  # the saved recipe with today's defaults filled in (also reads a recipe.json of flat settings)
                previous = RecipeConfig.from_dict(previous).to_dict()
            except (ValueError, TypeError):
                pass
            if previous != self.config.to_dict():
                changed = sorted(k for k in set(previous) | set(self.config.to_dict())
                                 if previous.get(k) != self.config.to_dict().get(k))
                raise ValueError(f"{self.out} holds a run of another recipe (settings differ: {changed}). "
                                 "Pass another --out, or --overwrite to replace it.")
        elif self.out.exists() and any(self.out.iterdir()) and not saved.is_file() and not overwrite:
            raise FileExistsError(f"`out` exists and is not a tfspeed optimize run. Received: out={str(self.out)!r}. "
                                  "Choose another directory or pass --overwrite.")
        if overwrite and self.out.exists():
            import shutil

            shutil.rmtree(self.out)
        self.out.mkdir(parents=True, exist_ok=True)
        _io.write_json(saved, self.config.to_dict(), overwrite=True)

    # --- steps ---------------------------------------------------------------------------------------------------
    def run(self) -> dict:
        from tfspeed.distribute import make_strategy

        c = self.config
        start = time.perf_counter()
        steps = 1 + len(c.recipe) + 3
        dataset = c.data.load()
        teacher_dir = self._teacher_dir()
        self.clock = self._clock(dataset)
        ctx = StageContext(dataset, seq_length=c.seq_length, limit=c.limit, eval_limit=c.eval_limit,
                           strategy=make_strategy(c.strategy), teacher_dir=teacher_dir, work_dir=self.out / ".work",
                           log=self.log, clock=self.clock)
        self._step(1, steps, "teacher", teacher_dir,
                   lambda: get_stage("finetune").run(c.model, c.teacher, teacher_dir, ctx), ctx)
        source = teacher_dir
        chain = []
        for i, name in enumerate(c.recipe, 1):
            target = self.out / f"{i:02d}-{name}"
            stage, config = get_stage(name), self._config_of(name)
            self._step(1 + i, steps, name, target, functools.partial(stage.run, source, config, target, ctx), ctx)
            if name == "vocab":
                ctx.teacher_dir = target  # later stages distil from the teacher with the same vocabulary
            chain.append((name, target))
            if not stage.branch:  # a branch (early exits) is a side product: the chain goes on from its source
                source = target
        exports = self._timed("export", lambda: self._exports(ctx, teacher_dir, chain, steps - 2, steps))
        profile = self._timed("profile", lambda: self._profile(exports, steps - 1, steps))
        if c.real_text:
            profile["real_text"] = self._timed("real-text profile",
                                               lambda: self._real_text_profile(ctx, exports, steps - 1, steps))
        self.clock.begin("report")
        report = self._report(exports, profile, steps, steps, time.perf_counter() - start)
        self.clock.end("report")
        _io.write_json(self.out / "clock.json", self.clock.record(), overwrite=True)
        _io.release(self.out)
        return report

    def _clock(self, dataset):
        """The run's plan in units of teacher fine-tuning steps (`tfspeed.clock`), for its estimates of the time
        left. A stage's cost per step follows the size of the model it trains: a student of k of the teacher's
        layers costs about k / L, structured pruning removes a third of a layer's work per head fraction and two
        thirds per FFN fraction, QAT costs 1.3x its model."""
        from tfspeed.clock import (
            CONVERSION_COST,
            EXITS_COST,
            PROFILE_COST,
            QAT_COST,
            REAL_TEXT_COST,
            STAGE_OVERHEAD,
            RunClock,
        )
        from tfspeed.profile.env import cpu_id, cpu_model, machine_words, usable_cores

        c = self.config
        n_train = min(len(dataset.train), c.limit or len(dataset.train))
        n_eval = min(len(dataset.test), c.eval_limit or len(dataset.test))
        eval_scale = n_eval / 1236  # the overheads below were measured on the Rotten Tomatoes test split
        plan, overhead, step_units = [], {}, {}
        size = 1.0  # cost of a training step of the current model, relative to the teacher's

        def training(name, config, step_cost):
            if name == "prune":
                epochs, batch = config.prune.epochs, config.prune.batch_size
            else:
                epochs, batch = getattr(config, "epochs", 0) or 0, getattr(config, "batch_size", 32) or 32
            extra = STAGE_OVERHEAD.get(name if name != "teacher" else "finetune", 0.0) * eval_scale
            overhead[name], step_units[name] = extra, step_cost
            plan.append((name, -(-n_train // batch) * epochs * step_cost + extra))

        if artifacts.is_model_dir(self.config.model):
            plan.append(("teacher", 0.0))
        else:
            training("teacher", c.teacher, 1.0)
        for name in c.recipe:
            config = self._config_of(name)
            extra_cost = 1.0
            if name == "distill":
                layers = config.layers if isinstance(config.layers, int) else len(config.layers)
                if config.stages:  # every stage trains: the assistants' steps are part of the cost
                    layers = config.stages[-1]
                    extra_cost = sum(config.stages) / layers
                size = min(1.0, layers / TEACHER_LAYERS)
                if str(config.mode) == "two-way":  # the teacher trains too
                    extra_cost += 1.0 / size
                extra_cost *= 1 + config.augment  # augmented copies are more steps
            elif name == "prune" and config.is_structured:
                size *= max(0.1, 1 - config.structured.heads / 3 - 2 * config.structured.ffn / 3)
            elif name == "lowrank":
                size *= 0.85
            cost = size * extra_cost * (QAT_COST if name == "qat" else EXITS_COST if name == "exits" else 1.0)
            if name == "prune" and config.unstructured:
                cost *= 2.0  # TFMOT's wrappers (benchmarks/README.md, training throughput)
            training(name, config, cost if name != "vocab" else 0.0)
        # teacher float32, float16, dynamic (+ varlen), the int8 budget search (about 3), one per stage (+ varlen)
        floats = sum(name not in ("qat", "exits") for name in c.recipe)  # stages whose model exports as usual
        has_exits = "exits" in c.recipe  # its file is copied; its -varlen twin converted and evaluated
        extra = len(c.extra_modes) * (1 + floats)  # asked-for modes, float models
        conversions = (3 + 3 * c.int8_ptq + c.real_text + extra + floats * (1 + c.real_text)
                       + 0.1 * ("qat" in c.recipe) + has_exits * (0.1 + c.real_text))
        varlen = c.real_text * (1 + floats)  # -varlen twins: teacher, float stages
        models = 4 + c.int8_ptq + floats + ("qat" in c.recipe) + varlen + extra
        plan.append(("export", conversions * CONVERSION_COST * eval_scale))
        plan.append(("profile", PROFILE_COST * c.profile_runs * models))
        if c.real_text:
            dynamic = varlen  # the -varlen twins run every text, the rest a sample; early exits every text
            plan.append(("real-text profile", REAL_TEXT_COST["dynamic"] * n_eval * (dynamic + has_exits)
                         + REAL_TEXT_COST["padded"] * min(n_eval, PADDED_SAMPLE) * (models - dynamic)
                         + REAL_TEXT_COST["padded"] * 0.5 * n_eval * has_exits))
        plan.append(("report", 2.0))
        machine = machine_words(cpu_model(), cpu_id(), usable_cores())
        clock = RunClock(plan, log=self.log, machine=machine)
        clock.overhead.update(overhead)
        clock.step_units.update(step_units)
        return clock

    def _timed(self, name, fn):
        self.clock.begin(name)
        result = fn()
        self.clock.end(name)
        return result

    def _config_of(self, name: str):
        c = self.config
        config = c.stage_config(name)
        if name == "qat" and "prune" in c.recipe and c.prune.unstructured:
            config = config.replace(preserve_sparsity=True)  # the zeros of the pruned model survive into int8
        return config

    def _teacher_dir(self) -> Path:
        if artifacts.is_model_dir(self.config.model):
            return Path(self.config.model)
        return self.out / "00-teacher"

    def _step(self, i, n, name, target: Path, fn, ctx=None):
        done = (target / "metrics.json").is_file()
        if done:
            self.log(f"[{i}/{n}] {name}: done before, kept ({target})")
            self.clock.skip(name)
            return artifacts.read_metrics(target)
        self.log(f"[{i}/{n}] {name} ...")
        if ctx is not None:
            ctx.step = (i, n)
        self.clock.begin(name)
        metrics, seconds = timed(fn)
        self.clock.end(name)
        line = f"[{i}/{n}] {name}: accuracy {metrics.get('accuracy', float('nan')):.4f} in {seconds:.0f} s -> {target}"
        if self.clock.say(line + "; ") is None:
            self.log(line)
        return metrics

    def _exports(self, ctx, teacher_dir: Path, chain, i, n) -> list:
        """Every artifact of the run as a .tflite (plus the TF float32 teacher), with its test accuracy."""
        from tfspeed import export

        c = self.config
        folder = self.out / "export"
        folder.mkdir(exist_ok=True)
        self.log(f"[{i}/{n}] export and evaluate ...")
        model, info = artifacts.load_model_dir(teacher_dir)
        records = []

        def record(name, path, accuracy_, kind, **extra):
            size, gz = _tree_sizes(path) if Path(path).is_dir() else _file_sizes(path)
            records.append({"name": name, "path": str(path), "accuracy": accuracy_, "size_bytes": size,
                            "gzip_bytes": gz, "kind": kind, **extra})

        # The float teacher as TF runs it: a SavedModel of the classifier with a fixed [1, seq] signature.
        tf_dir = folder / "teacher-tf-float32"
        if not tf_dir.exists():
            _save_classifier_saved_model(model, tf_dir, c.seq_length)
        teacher_metrics = artifacts.read_metrics(teacher_dir)
        record("teacher-tf-float32", tf_dir, teacher_metrics.get("accuracy"), "tf-savedmodel",
               stage="teacher", vocab=str(info.vocab_path), macro_f1=teacher_metrics.get("macro_f1"),
               per_class_accuracy=teacher_metrics.get("per_class_accuracy"))

        def tflite(name, make, source_dir, metadata=True, **extra):
            path = folder / f"{name}.tflite"
            meta = folder / f"{name}.json"
            source_info = artifacts.load_info(source_dir)
            if not meta.is_file():
                began = time.perf_counter()
                made = make()
                if made is None:
                    return
                data, more = made
                more.setdefault("metadata_bytes", None)
                from tfspeed.export.metadata import metadata_refused

                if (metadata and c.metadata
                        and metadata_refused(source_info.text_pair, source_info.lower_case) is None):
                    from tfspeed.export.metadata import add_model_metadata, metadata_buffer, metadata_bytes

                    if metadata_buffer(data) is None:
                        data = add_model_metadata(data, source_dir)
                        more["metadata_bytes"] = metadata_bytes(data)
                more["float_ops"] = export.op_histogram(data)["float_ops"]
                _io.write_bytes(path, data, overwrite=True)
                acc = more.pop("accuracy", None)  # a stage that evaluated its own file says so
                if acc is None:
                    from tfspeed.train import scores

                    split = ctx.encoded(source_info.vocab_path, lower_case=source_info.lower_case).test
                    logits = export.evaluate(data, split, num_threads=usable_cores())  # accuracy: every core
                    scored = scores(logits.argmax(-1), split.labels, ctx.dataset.label_names)
                    acc = scored.pop("accuracy")
                    more.update(scored)
                _io.write_json(meta, {"accuracy": acc, **more, **extra,
                                      "export_seconds": round(time.perf_counter() - began, 1)})
                self.log(f"    {name}.tflite: accuracy {acc:.4f}, {len(data) / 1e6:.1f} MB, "
                         f"{time.perf_counter() - began:.0f} s")
            saved = json.loads(meta.read_text())
            saved.setdefault("vocab", str(source_info.vocab_path))
            record(name, path, saved.pop("accuracy"), "tflite", **saved)

        def bucket_twin(m, source_dir):
            """The model as one file of length-bucket signatures, evaluated as it runs: each test text on its
            bucket."""
            from tfspeed.export.buckets import BucketRunner, buckets_up_to, export_buckets
            from tfspeed.train import scores

            data = export_buckets(m, buckets_up_to(c.seq_length), "dynamic")
            source_info = artifacts.load_info(source_dir)
            split = ctx.encoded(source_info.vocab_path, lower_case=source_info.lower_case).test
            logits = BucketRunner(data, num_threads=usable_cores()).predict(split.features)
            return data, scores(logits.argmax(-1), split.labels, ctx.dataset.label_names)

        def dynamic(name, m, source_dir, stage):
            tflite(name, lambda: (export.convert(m, "dynamic", c.seq_length), {}), source_dir, stage=stage,
                   mode="dynamic")
            if c.real_text and c.varlen == "buckets":  # one file, a signature per length bucket
                tflite(f"{name}-buckets", lambda: bucket_twin(m, source_dir), source_dir, stage=stage,
                       mode="dynamic, length buckets")
            elif c.real_text:  # the same file with inputs [1, -1]: each text runs at its own length
                tflite(f"{name}-varlen", lambda: (export.convert(m, "dynamic", "dynamic"), {}), source_dir,
                       stage=stage, mode="dynamic, dynamic length")
            for mode in c.extra_modes:  # asked for: e.g. int4 or 16x8 beside the dynamic-range file
                base = name[:-len("-dynamic")] if name.endswith("-dynamic") else name

                def make(mode=mode):
                    calibration = None
                    if export.Mode.parse(mode).needs_calibration:
                        source_info = artifacts.load_info(source_dir)
                        calibration = ctx.encoded(source_info.vocab_path,
                                                  lower_case=source_info.lower_case).train.features
                    return export.convert(m, mode, c.seq_length, calibration=calibration, metadata=False), {}

                tflite(f"{base}-{mode}", make, source_dir, stage=stage, mode=mode)

        tflite("teacher-float32", lambda: (export.convert(model, "float32", c.seq_length), {}), teacher_dir,
               stage="teacher", mode="float32")
        tflite("teacher-float16", lambda: (export.convert(model, "float16", c.seq_length), {}), teacher_dir,
               stage="teacher", mode="float16")
        dynamic("teacher-dynamic", model, teacher_dir, "teacher")

        def budget():
            encoded = ctx.encoded(info.vocab_path, lower_case=info.lower_case)
            try:
                data, rec = export.export_within_budget(model, encoded.validation, max_drop=c.max_drop,
                                                        calibration=encoded.train.features,
                                                        candidates=INT8_CANDIDATES, order="known",
                                                        seq_length=c.seq_length, num_threads=usable_cores())
            except export.BudgetError as e:
                self.log(f"    no int8 configuration within {100 * c.max_drop:.1f} points: {e}")
                _io.write_json(folder / "teacher-int8-ptq.budget.json", e.record.to_dict(), overwrite=True)
                return None
            self.log(rec.to_table())
            return data, {"budget": _brief_budget(rec.to_dict())}

        if c.int8_ptq:
            tflite("teacher-int8-ptq", budget, teacher_dir, stage="teacher", mode="int8 within budget")
        def exits(folder_):
            """The exits stage's segmented file (fixed length) and, with the real-text profile, its dynamic-length
            twin: timed text by text with `ExitRunner` (no metadata: an app runs the segments itself)."""
            from tfspeed.export.exits import EXITS_JSON, export_exits, runner_of

            described = json.loads((folder_ / EXITS_JSON).read_text())
            stage_metrics = artifacts.read_metrics(folder_)
            more = {k: stage_metrics.get(k) for k in ("accuracy", "macro_f1", "per_class_accuracy", "mean_layers")}
            common = dict(stage="exits", exits=str(folder_), layers=described["layers"], rule=described["rule"],
                          threshold=described["threshold"], metadata=False)
            tflite(f"{folder_.name}-dynamic", lambda: ((folder_ / described["tflite"]).read_bytes(), dict(more)),
                   folder_, mode="dynamic, early exits", **common)
            if not c.real_text:
                return

            def varlen():
                from tfspeed.export.buckets import buckets_up_to
                from tfspeed.train import scores

                exits_model, exits_info = artifacts.load_model_dir(folder_)
                data = export_exits(exits_model, mode=described["mode"], seq_length="dynamic")
                buckets = buckets_up_to(c.seq_length)
                split = ctx.encoded(exits_info.vocab_path, lower_case=exits_info.lower_case).test
                found = runner_of(folder_, tflite=data, buckets=buckets).predict(split.features)
                scored = scores(found["probabilities"].argmax(-1), split.labels, ctx.dataset.label_names)
                return data, {**scored, "mean_layers": float(found["layers_used"].mean())}

            tflite(f"{folder_.name}-dynamic-varlen", varlen, folder_, mode="dynamic, dynamic length, early exits",
                   **common)

        for name, folder_ in chain:
            if name == "exits":
                exits(folder_)
            elif name == "qat":
                path = folder_ / QAT_TFLITE
                stage_metrics = artifacts.read_metrics(folder_)
                # the stage evaluated this file on the same test split (its metadata adds a softmax: same argmax)
                more = {"metadata_bytes": stage_metrics.get("metadata_bytes"),
                        "accuracy": stage_metrics.get("tflite_accuracy"),
                        "macro_f1": stage_metrics.get("tflite_macro_f1"),
                        "per_class_accuracy": stage_metrics.get("tflite_per_class_accuracy")}
                tflite(f"{folder_.name}-int8", lambda path=path, more=more: (path.read_bytes(), dict(more)),
                       folder_, stage=name, mode="qat int8")
            else:
                stage_model, _ = artifacts.load_model_dir(folder_)
                dynamic(f"{folder_.name}-dynamic", stage_model, folder_, name)
        return records

    def _profile(self, records: list, i, n) -> dict:
        from tfspeed.profile import profile_models

        records = [r for r in records if not r.get("exits")]  # an early exit's cost depends on the text: real ones
        path = self.out / "profile.json"
        if path.is_file():
            self.log(f"[{i}/{n}] profile: done before, kept ({path})")
            return json.loads(path.read_text())
        self.log(f"[{i}/{n}] profile {len(records)} models side by side (interleaved, {self.config.profile_runs} "
                 f"runs each, {self.config.threads} thread(s)) ...")
        result = profile_models([r["path"] for r in records], names=[r["name"] for r in records], baseline=0,
                                threads=(self.config.threads,), runs=self.config.profile_runs, warmup=5,
                                seq_length=self.config.seq_length, progress=None)
        result.to_markdown(self.out / "profile.md", overwrite=True)
        result.to_json(path, overwrite=True)
        return json.loads(path.read_text())

    def _real_text_profile(self, ctx, records: list, i, n) -> dict:
        """Every artifact timed on the test texts (at most `eval_limit`), each at the length it takes them."""
        from tfspeed.export.buckets import buckets_up_to
        from tfspeed.export.latency import profile_texts

        path = self.out / "real_text_profile.json"
        if not records:
            return {}
        if path.is_file():
            self.log(f"[{i}/{n}] real-text profile: done before, kept ({path})")
            return json.loads(path.read_text())
        test = ctx.dataset.test
        texts = list(test.texts)[:self.config.eval_limit]
        pairs = None if test.pairs is None else list(test.pairs)[:self.config.eval_limit]
        length = self.config.seq_length  # dynamic-length files run on buckets up to it, as TextClassifier does
        buckets = buckets_up_to(length)
        self.log(f"[{i}/{n}] real-text profile: {len(records)} models on {len(texts)} test texts, dynamic-length "
                 f"files on length buckets {'/'.join(map(str, buckets))}, the others padded to {length} (on "
                 f"{min(PADDED_SAMPLE, len(texts))} of the texts: their cost does not depend on the text), "
                 "interleaved ...")
        from tfspeed.export.exits import runner_of

        models = [runner_of(r["exits"], self.config.threads, tflite=r["path"],
                            buckets=buckets if "dynamic length" in r.get("mode", "") else None)
                  if r.get("exits") else r["path"] for r in records]
        result = profile_texts(models, texts, names=[r["name"] for r in records],
                               vocab=[r.get("vocab") for r in records], threads=self.config.threads,
                               max_length=self.config.seq_length, pad_length=self.config.seq_length, baseline=0,
                               warmup=min(10, len(texts)), buckets=buckets, padded_sample=PADDED_SAMPLE,
                               pairs=pairs)
        _io.write_json(path, result, overwrite=True)
        return result

    def _report(self, records, profile, i, n, seconds) -> dict:
        from tfspeed.recipe.report import write_report

        self.log(f"[{i}/{n}] report ...")
        return write_report(self.out, self.config, records, profile, seconds, self.log,
                            step_seconds=dict(self.clock.finished))


def _file_sizes(path) -> tuple:
    data = Path(path).read_bytes()
    return len(data), len(gzip.compress(data, 6))


def _brief_budget(record: dict) -> dict:
    """What the accuracy budget tried, without the per-candidate details the export report keeps."""
    brief = {k: record.get(k) for k in ("chosen", "baseline_accuracy", "max_drop", "order")}
    brief["tried"] = [{k: t.get(k) for k in ("name", "status", "accuracy", "drop", "size_bytes", "fell_back")}
                      for t in record.get("tried", [])]
    return brief


def _save_classifier_saved_model(model, path: Path, seq_length: int):
    """The classifier as a TF SavedModel with a fixed-shape `serving_default` (what TF serving would run)."""
    from tfspeed.compat import tf
    from tfspeed.models.bert import INPUT_NAMES

    spec = {name: tf.TensorSpec([1, seq_length], tf.int32, name=name) for name in INPUT_NAMES}

    @tf.function(input_signature=[spec])
    def serve(inputs):
        return {"logits": model(inputs, training=False)}

    with _io.atomic_path(path, overwrite=True) as tmp:
        tf.saved_model.save(model, str(tmp), signatures={"serving_default": serve})
