"""`ProfileResult`: what `profile_models` returns, with its JSON, Markdown, text-table and PNG outputs."""

from __future__ import annotations

import dataclasses
import json

from tfspeed import _io

FORMAT_VERSION = 1


@dataclasses.dataclass
class ProfileResult:
    """The figures of one profiling run.

    Attributes:
        format_version: version of the JSON format (`1`).
        environment: CPU model, cores, library versions, threads and delegates.
        settings: runs, warm-up, inputs, baseline and the other settings of the run.
        models: one `dict` per model and configuration (threads, XNNPACK): `name`, `path`, `format`, `size_bytes`,
            `gzip_bytes`, `init_ms`, `first_inference_ms`, `warmup_ms`, `latency_ms` (`median`, `mean`, `std`,
            `mad`, `min`, `max`, `p90`, `p99`, `n`), `throughput`, `memory`, `ratio_vs_baseline`, optional `per_op`.
    """

    format_version: int
    environment: dict
    settings: dict
    models: list

    def to_dict(self, samples: bool = True) -> dict:
        """The result as plain JSON-ready data. `samples=False` drops the raw per-run times."""
        models = []
        for row in self.models:
            row = dict(row)
            if not samples:
                row.pop("samples_ms", None)
            models.append(row)
        return {"format_version": self.format_version, "tool": "tfspeed.profile", "environment": self.environment,
                "settings": self.settings, "models": models}

    def to_json(self, path=None, overwrite: bool = False, samples: bool = True) -> str:
        """The JSON text; also written atomically to `path` when given (refuses to overwrite unless asked)."""
        data = self.to_dict(samples=samples)
        if path is not None:
            _io.write_json(path, data, overwrite=overwrite, argument="json")
        return json.dumps(data, indent=2, default=_io._json_default)  # noqa: SLF001

    def to_markdown(self, path=None, overwrite: bool = False) -> str:
        """A Markdown report (environment, latency table, per-op tables); also written to `path` when given."""
        from tfspeed.profile import report

        text = report.markdown(self)
        if path is not None:
            _io.write_text(path, text, overwrite=overwrite, argument="markdown")
        return text

    def to_table(self) -> str:
        """A plain-text table for the terminal."""
        from tfspeed.profile import report

        return report.table(self)

    def plot(self, path, overwrite: bool = False):
        """A PNG chart: median latency per model with p90 whiskers, and the per-op breakdown when profiled."""
        from tfspeed.profile import report

        return report.plot(self, path, overwrite=overwrite)

    def row(self, name: str, threads=None, xnnpack=None) -> dict:
        """The first result row of model `name` (optionally for one thread count / XNNPACK setting)."""
        for row in self.models:
            if row["name"] == name and (threads is None or row["threads"] == threads) and (
                    xnnpack is None or row["xnnpack"] in (None, xnnpack)):
                return row
        raise KeyError(f"No result for model {name!r} (threads={threads}, xnnpack={xnnpack}). "
                       f"Models: {sorted({r['name'] for r in self.models})}")

    def __str__(self) -> str:
        return self.to_table()
