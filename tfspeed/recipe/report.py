"""The report of an optimize run: `report.json`, `report.md` and `pareto.png` (accuracy against latency)."""

from __future__ import annotations

import datetime
from pathlib import Path

from tfspeed import _io
from tfspeed.profile.env import machine_words

FORMAT_VERSION = 1
BASELINE = "teacher-tf-float32"
TARGETS = {"speedup": 8.0, "gzip_ratio": 10.0, "max_accuracy_drop_points": 2.0}


def build(config, records: list, profile: dict, seconds: float, step_seconds: dict = None) -> dict:
    rows = {r["name"]: r for r in profile["models"]}
    base = next(r for r in records if r["name"] == BASELINE)
    base_latency = rows[BASELINE]["latency_ms"]["median"]
    real = {m["name"]: m for m in (profile.get("real_text") or {}).get("models", [])}
    base_real = real[BASELINE]["latency_ms"]["mean"] if BASELINE in real else None
    artifacts = []
    for r in records:
        # early exits have no padded figure (their cost depends on the text): the real-text columns only
        padded = rows.get(r["name"])
        lat = padded["latency_ms"] if padded else {"median": None}
        artifacts.append({
            **{k: r[k] for k in ("name", "path", "accuracy", "size_bytes", "gzip_bytes")},
            "macro_f1": r.get("macro_f1"), "per_class_accuracy": r.get("per_class_accuracy"),
            "latency_ms_median": lat["median"], "latency_ms_p90": lat.get("p90"),
            "format": padded["format"] if padded else real.get(r["name"], {}).get("format"),
            "stage": r.get("stage"), "mode": r.get("mode"), "combined": False,
            "speedup": base_latency / lat["median"] if lat["median"] else None,
            "size_ratio": base["size_bytes"] / r["size_bytes"],
            "gzip_ratio": base["gzip_bytes"] / r["gzip_bytes"],
            "accuracy_drop_points": 100.0 * (base["accuracy"] - r["accuracy"]),
            **({"budget": r["budget"]} if "budget" in r else {}),
            **{k: r[k] for k in ("metadata_bytes", "float_ops", "mean_layers", "layers", "rule", "threshold")
               if k in r},
        })
        if r["name"] in real and base_real:  # the same model on the real test texts, each at the length it takes
            row = real[r["name"]]
            artifacts[-1].update(real_text_ms_mean=row["latency_ms"]["mean"], real_text_ms_p90=row["latency_ms"]["p90"],
                                 real_text_speedup=base_real / row["latency_ms"]["mean"], length=row["length"])
    combined = pick_combined(artifacts)
    if combined is not None:
        combined["combined"] = True
    verdict = None
    if combined is not None:
        verdict = {"artifact": combined["name"], "speedup": combined["speedup"], "gzip_ratio": combined["gzip_ratio"],
                   "real_text_speedup": combined.get("real_text_speedup"),
                   "accuracy_drop_points": combined["accuracy_drop_points"], "targets": TARGETS,
                   "meets_targets": _meets(combined["speedup"], combined)}
        if combined.get("real_text_speedup"):  # the same targets with the speed-up measured on the real test texts
            verdict["meets_targets_real_text"] = _meets(combined["real_text_speedup"], combined)
    return {"format_version": FORMAT_VERSION, "created": datetime.datetime.now(datetime.timezone.utc).isoformat(),
            "baseline": BASELINE, "config": config.to_dict(), "environment": profile.get("environment"),
            "seconds": seconds, "step_seconds": dict(step_seconds or {}), "artifacts": artifacts, "combined": verdict}


def _data_name(data) -> str:
    """The data of a run as the report names it: the dataset or file, and the split files given."""
    if not isinstance(data, dict):
        return str(data)
    files = [f"{name} {data[name]}" for name in ("train", "validation", "test") if data.get(name)]
    pair = f", pairs ({data['text_column']}, {data['text_pair_column']})" if data.get("text_pair_column") else ""
    return (", ".join(files) if files else str(data.get("data"))) + pair


def _meets(speedup, artifact: dict) -> bool:
    return bool(speedup is not None and speedup >= TARGETS["speedup"]
                and artifact["gzip_ratio"] >= TARGETS["gzip_ratio"]
                and artifact["accuracy_drop_points"] <= TARGETS["max_accuracy_drop_points"])


def pick_combined(artifacts: list):
    """The best model of the compression chain: the fastest within the accuracy target (on the real texts when they
    were timed, else on padded inputs), else the most accurate."""
    chain = [a for a in artifacts if a["stage"] not in (None, "teacher")
             and (a.get("real_text_ms_mean") or a["latency_ms_median"]) is not None]
    if not chain:
        return None
    within = [a for a in chain if a["accuracy_drop_points"] <= TARGETS["max_accuracy_drop_points"]]
    if within:
        return min(within, key=lambda a: (a.get("real_text_ms_mean", a["latency_ms_median"]), a["gzip_bytes"]))
    return max(chain, key=lambda a: a["accuracy"])


def markdown(report: dict) -> str:
    env = report.get("environment") or {}
    real = any("real_text_ms_mean" in a for a in report["artifacts"])
    lines = ["# tfspeed optimize report", "",
             f"Recipe `{','.join(report['config']['recipe'])}` on `{report['config']['model']}` / "
             f"`{_data_name(report['config']['data'])}`, seq_length {report['config']['seq_length']}, "
             f"{report['config']['threads']} thread(s). Run time {report['seconds'] / 60:.1f} min.", "",
             f"Machine: {machine_words(env.get('cpu_model', '?'), env.get('cpu_id'), env.get('cpu_count', '?'))}"
             f"{_isa(env)}. "
             "Latency: median of interleaved runs, batch 1. "
             f"Ratios against `{report['baseline']}`."
             + (" Real texts: the mean over the test texts, interleaved text by text; variable-length files "
                "(`-buckets`: a signature per length bucket; `-varlen`: inputs [1, -1]) run each text on the smallest "
                "length bucket that holds it, the others padded. The padded latency of a `-buckets` file is its "
                "longest bucket's." if real else ""), "",
             "| artifact | accuracy | macro-F1 | per-class accuracy | Δ points | latency ms (median) | speed-up | "
             "size MB | gzip MB | gzip ratio |" + (" real texts: mean ms | speed-up |" if real else ""),
             "|---|---|---|---|---|---|---|---|---|---|" + ("---|---|" if real else "")]
    lines[6:6] = _step_times(report)
    for a in report["artifacts"]:
        star = " **(combined)**" if a["combined"] else ""
        extra = ""
        if real:
            extra = (f" {a['real_text_ms_mean']:.2f} | {a['real_text_speedup']:.1f}x |" if "real_text_ms_mean" in a
                     else " - | - |")
        f1 = f"{a['macro_f1']:.4f}" if a.get("macro_f1") is not None else "-"
        per_class = ", ".join(f"{k} {v:.3f}" for k, v in (a.get("per_class_accuracy") or {}).items()
                              if v is not None) or "-"
        padded = (f"{a['latency_ms_median']:.2f} | {a['speedup']:.1f}x" if a["latency_ms_median"] is not None
                  else "- | -")
        lines.append(f"| {a['name']}{star} | {a['accuracy']:.4f} | {f1} | {per_class} | "
                     f"{-a['accuracy_drop_points']:+.2f} | "
                     f"{padded} | {a['size_bytes'] / 1e6:.1f} | "
                     f"{a['gzip_bytes'] / 1e6:.1f} | {a['gzip_ratio']:.1f}x |{extra}")
    exits = [a for a in report["artifacts"] if a.get("mean_layers") is not None]
    if exits:
        lines += ["", "Early exits (`-exits` files, one signature per segment, run by `ExitRunner`): each text stops "
                      "at the first exit whose rule is met, so their cost depends on the text; they are timed on the "
                      "real test texts only.", "",
                  "| file | exits after layers | rule | threshold | mean layers used |", "|---|---|---|---|---|"]
        lines += [f"| {a['name']} | {', '.join(map(str, a.get('layers') or []))} | {a.get('rule')} | "
                  f"{a.get('threshold', float('nan')):.4g} | {a['mean_layers']:.2f} |" for a in exits]
    c = report.get("combined")
    if c:
        ok = "meets" if c["meets_targets"] else "does NOT meet"
        speed = (f"{c['speedup']:.1f}x faster" if c["speedup"] is not None
                 else "no padded-length figure (early exits)")
        lines += ["", f"Best combined model `{c['artifact']}`: {speed}, {c['gzip_ratio']:.1f}x "
                      f"smaller (gzip), {c['accuracy_drop_points']:.2f} points less accurate: it {ok} the targets "
                      f"(>= {TARGETS['speedup']:.0f}x, >= {TARGETS['gzip_ratio']:.0f}x, <= "
                      f"{TARGETS['max_accuracy_drop_points']:.0f} points) at {report['config']['seq_length']} "
                      "padded tokens."
                      + (f" On the real test texts it is {c['real_text_speedup']:.1f}x faster than the baseline: "
                         f"there it {'meets' if c.get('meets_targets_real_text') else 'does NOT meet'} them."
                         if c.get("real_text_speedup") else "")]
    files = [a for a in report["artifacts"] if "float_ops" in a]
    if files:
        lines += ["", "What each .tflite holds besides its weights: the TFLite metadata MediaPipe's TextClassifier and "
                      "`tfspeed predict` read (vocabulary, labels, softmax output), and the op types it computes in "
                      "float32 (what an integer-only accelerator could not run).", "",
                  "| file | metadata kB | float32 op types |", "|---|---|---|"]
        for a in files:
            md = f"{a['metadata_bytes'] / 1e3:.1f}" if a.get("metadata_bytes") else "none"
            ops = ", ".join(f"{k} x{v}" for k, v in a["float_ops"].items()) or "none"
            lines.append(f"| {a['name']} | {md} | {ops} |")
    lines += ["", "![accuracy against latency](pareto.png)", ""]
    return "\n".join(lines)


def pareto_png(report: dict, path: Path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5), dpi=120)
    arts = report["artifacts"]
    biggest = max(a["size_bytes"] for a in arts)
    for a in arts:
        if a["latency_ms_median"] is None:  # early exits: no padded figure
            continue
        color = "tab:red" if a["combined"] else "tab:gray" if a["name"] == report["baseline"] else "tab:blue"
        ax.scatter(a["latency_ms_median"], 100 * a["accuracy"], s=30 + 900 * a["size_bytes"] / biggest, color=color,
                   alpha=0.6, edgecolors="black")
        ax.annotate(a["name"], (a["latency_ms_median"], 100 * a["accuracy"]), fontsize=7, xytext=(5, 4),
                    textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel("median latency, ms (batch 1, log scale)")
    ax.set_ylabel("test accuracy, %")
    ax.set_title("accuracy against latency (marker area = file size)")
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    with _io.atomic_path(path, overwrite=True) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def _isa(env: dict) -> str:
    """The vector units that decide CPU training and int8 inference speed, as a few words ("AVX-512, VNNI",
    "AVX2, no AVX-512, no VNNI")."""
    flags = set(env.get("cpu_flags") or ())
    if not flags:
        return ""
    words = "AVX-512" if "avx512f" in flags else ("AVX2, no AVX-512" if "avx2" in flags else "no AVX2")
    if "avx2" in flags or "avx512f" in flags:  # x86: VNNI decides how fast dynamic-range and int8 files run
        words += ", VNNI" if flags & {"avx512_vnni", "avx_vnni"} else ", no VNNI"
    if env.get("onednn_max_cpu_isa"):
        words += f", oneDNN limited to {env['onednn_max_cpu_isa']}"
    return f" ({words})"


def _step_times(report: dict) -> list:
    times = report.get("step_seconds") or {}
    if not times:
        return []
    return ["Time per step: " + ", ".join(f"{name} {seconds / 60:.1f} min" for name, seconds in times.items())
            + ".", ""]


def write_report(out: Path, config, records, profile, seconds, log=print, step_seconds: dict = None) -> dict:
    report = build(config, records, profile, seconds, step_seconds)
    _io.write_json(out / "report.json", report, overwrite=True)
    _io.write_text(out / "report.md", markdown(report), overwrite=True)
    pareto_png(report, out / "pareto.png")
    log(markdown(report))
    return report
