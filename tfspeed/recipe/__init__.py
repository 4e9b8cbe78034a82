"""Orchestrate: `optimize` chains fine-tuning, compression, export and profiling into one resumable run."""

from tfspeed.recipe.config import DEMO, STAGES, RecipeConfig
from tfspeed.recipe.runner import Optimizer


def optimize(config: RecipeConfig, out, overwrite: bool = False, log=print) -> dict:
    """Runs `config` into `out` and returns the report (also written as report.json / report.md / pareto.png)."""
    return Optimizer(config, out, log=log, overwrite=overwrite).run()


__all__ = ["DEMO", "RecipeConfig", "STAGES", "Optimizer", "optimize"]
