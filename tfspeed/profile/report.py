"""Renders a `ProfileResult` as a terminal table, Markdown and a PNG chart."""

from __future__ import annotations

from tfspeed import _io


def _size(n):
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024


def _ms(x):
    if x is None:
        return "-"
    return f"{x:.3f}" if x < 10 else f"{x:.1f}" if x < 1000 else f"{x:.0f}"


_COLUMNS = ["model", "format", "threads", "xnnpack", "median ms", "mean", "p90", "p99", "std", "MAD", "min", "max",
            "inf/s", "ratio", "size", "gzip", "init ms", "1st ms", "RSS +"]


def _rows(result):
    out = []
    for r in result.models:
        lat = r["latency_ms"]
        xnn = "-" if r["xnnpack"] is None else ("on" if r["xnnpack"] else "off")
        ratio = "base" if r.get("is_baseline") else f"{r['ratio_vs_baseline']:.2f}x"
        mem = r["memory"].get("peak_rss_increase_bytes")
        if mem is None:
            mem = r["memory"].get("rss_increase_bytes")
        out.append([r["name"], r["format"], str(r["threads"]), xnn, _ms(lat["median"]), _ms(lat["mean"]),
                    _ms(lat["p90"]), _ms(lat["p99"]), _ms(lat["std"]), _ms(lat["mad"]), _ms(lat["min"]),
                    _ms(lat["max"]), f"{r['throughput']['inferences_per_s']:.1f}", ratio, _size(r["size_bytes"]),
                    _size(r["gzip_bytes"]), _ms(r["init_ms"]), _ms(r["first_inference_ms"]), _size(mem)])
    return out


def _env_line(result):
    e, s = result.environment, result.settings
    return (f"{e['cpu_model']}, {e['cpus_available']}/{e['cpu_count']} cores; TensorFlow {e['tensorflow']}, "
            f"LiteRT {e['ai_edge_litert']}; runs={s['runs']} warmup={s['warmup']} inputs={s['inputs']} "
            f"{'interleaved' if s['interleaved'] else 'single model'}; baseline={s['baseline']}")


def table(result) -> str:
    rows = _rows(result)
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(_COLUMNS)]
    lines = [_env_line(result), "  ".join(c.ljust(w) for c, w in zip(_COLUMNS, widths)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(v.rjust(w) if i > 3 else v.ljust(w) for i, (v, w) in enumerate(zip(r, widths)))
              for r in rows]
    notes = sorted({n for r in result.models for n in r.get("notes", [])})
    lines += [f"note: {n}" for n in notes]
    for r in result.models:
        if r.get("per_op"):
            p = r["per_op"]
            lines.append("")
            lines.append(f"per-op {r['name']} ({r['config']}): {p['message']}")
            lines.append("  op types by time: " + ", ".join(
                f"{t} x{v['count']} {v['ms']:.3g} ms ({v['share'] * 100:.1f}%)"
                for t, v in list(p["by_type"].items())[:8]))
            top = sorted((o for o in p["ops"] if o["ms"] is not None), key=lambda o: -o["ms"])[:10]
            for o in top:
                lines.append(f"  #{o['index']:<4} {o['type']:<22} {','.join(o['input_dtypes']):<28} "
                             f"{o['ms']:.4f} ms  {o['share'] * 100:5.1f}%")
            for o in p["ops"]:
                if o["skipped"]:
                    lines.append(f"  #{o['index']:<4} {o['type']:<22} skipped: {o['skipped']}")
    return "\n".join(lines)


def markdown(result) -> str:
    e = result.environment
    rows = _rows(result)
    out = ["# tfspeed profile", "", f"- CPU: {e['cpu_model']} ({e['cpus_available']} of {e['cpu_count']} cores "
           "available)", f"- TensorFlow {e['tensorflow']}, LiteRT {e['ai_edge_litert']}, Python {e['python']}",
           f"- {_env_line(result).split('; ', 2)[2]}", "",
           "| " + " | ".join(_COLUMNS) + " |", "|" + "|".join("---" if i < 4 else "---:" for i in
                                                                range(len(_COLUMNS))) + "|"]
    out += ["| " + " | ".join(v.replace("|", "\\|") for v in r) + " |" for r in rows]
    notes = sorted({n for r in result.models for n in r.get("notes", [])})
    out += [""] + [f"Note: {n}." for n in notes] if notes else []
    for r in result.models:
        p = r.get("per_op")
        if not p:
            continue
        out += ["", f"## Per-op: {r['name']} ({r['config']})", "", p["message"] + ".", "",
                "Per-op `ms`: the op's chunk (consecutive ops run as one sub-model, boundary costs taken off) split "
                "in proportion to the ops timed alone (`alone ms`); see `tfspeed.profile.ops`.", "",
                "| op type | count | ms | share |", "|---|---:|---:|---:|"]
        out += [f"| {t} | {v['count']} | {v['ms']:.4f} | {v['share'] * 100:.1f}% |" for t, v in p["by_type"].items()]
        out += ["", "| # | op | input dtypes | output dtypes | ms | share | alone ms | chunk |",
                "|---:|---|---|---|---:|---:|---:|---:|"]
        for o in p["ops"]:
            ms = "skipped: " + o["skipped"] if o["skipped"] else ("-" if o["ms"] is None else f"{o['ms']:.4f}")
            share = "" if o["share"] is None else f"{o['share'] * 100:.1f}%"
            alone = "" if o.get("alone_ms") is None else f"{o['alone_ms']:.4f}"
            chunk = "" if o.get("chunk") is None else str(o["chunk"])
            out.append(f"| {o['index']} | {o['type']} | {', '.join(o['input_dtypes'])} | "
                       f"{', '.join(o['output_dtypes'])} | {ms} | {share} | {alone} | {chunk} |")
    return "\n".join(out) + "\n"


def plot(result, path, overwrite: bool = False):
    """Bar chart of median latency per model and configuration with p90 whiskers; per-op breakdown below."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    per_op_rows = [r for r in result.models if r.get("per_op")]
    n_panels = 1 + (1 if per_op_rows else 0)
    fig, axes = plt.subplots(n_panels, 1, figsize=(10, 4 + 4 * (n_panels - 1)), squeeze=False)
    ax = axes[0][0]
    labels = [f"{r['name']}\n{r['format']} t={r['threads']}"
              + ("" if r["xnnpack"] is None else f" xnn={'on' if r['xnnpack'] else 'off'}") for r in result.models]
    med = [r["latency_ms"]["median"] for r in result.models]
    p90 = [r["latency_ms"]["p90"] - r["latency_ms"]["median"] for r in result.models]
    ax.bar(range(len(med)), med, yerr=[[0] * len(med), p90], capsize=4, color="#4C72B0")
    ax.set_xticks(range(len(med)))
    ax.set_xticklabels(labels, fontsize=7)
    ax.set_ylabel("latency, ms (median; whisker: p90)")
    ax.set_title("tfspeed profile")
    if per_op_rows:
        ax2 = axes[1][0]
        types = []
        for r in per_op_rows:
            for t in list(r["per_op"]["by_type"])[:8]:
                if t not in types:
                    types.append(t)
        bottom = [0.0] * len(per_op_rows)
        cmap = plt.get_cmap("tab20")
        for k, t in enumerate(types + ["other"]):
            vals = []
            for r in per_op_rows:
                bt = r["per_op"]["by_type"]
                vals.append(sum(v["ms"] for n, v in bt.items() if n not in types) if t == "other"
                            else bt.get(t, {}).get("ms", 0.0))
            ax2.bar(range(len(per_op_rows)), vals, bottom=bottom, label=t, color=cmap(k % 20))
            bottom = [b + v for b, v in zip(bottom, vals)]
        ax2.set_xticks(range(len(per_op_rows)))
        ax2.set_xticklabels([f"{r['name']} ({r['config']})" for r in per_op_rows], fontsize=7)
        ax2.set_ylabel("sum of per-op time, ms")
        ax2.set_title("per-operator breakdown")
        ax2.legend(fontsize=7, ncol=3)
    fig.tight_layout()
    with _io.atomic_path(path, overwrite=overwrite, argument="plot") as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return path
