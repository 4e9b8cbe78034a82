"""The stages: one runner per stage, `run(source, config, out, ctx) -> metrics`, shared by the stage's `tfspeed`
command and `tfspeed optimize`.

| stage | module | config |
|---|---|---|
| `finetune` | `tfspeed.stages.finetune` | `FinetuneConfig` |
| `vocab` | `tfspeed.stages.vocab` | `VocabConfig` |
| `distill` | `tfspeed.stages.distill` | `DistillConfig` |
| `prune` | `tfspeed.stages.prune` | `PruneStageConfig` (`PruneConfig`, `StructuredConfig`) |
| `lowrank` | `tfspeed.stages.lowrank` | `LowRankConfig` |
| `exits` (`early-exit`) | `tfspeed.stages.exits` | `ExitsConfig` |
| `qat` | `tfspeed.stages.qat` | `QATConfig` |
| (export) | `tfspeed.stages.export` | `ExportConfig` |

`register_stage(name, config)` adds a stage; `optimize` recipes can then name it.
"""

from tfspeed.stages.base import Stage, StageContext, get_stage, register_stage, stage_names, timed

__all__ = ["Stage", "StageContext", "get_stage", "register_stage", "stage_names", "timed"]
