"""The machine and software a profile ran on, and process memory readings."""

from __future__ import annotations

import importlib.metadata
import os
import platform


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_id() -> str:
    """`"family F model M"` from /proc/cpuinfo, or `""`: it tells CPU generations apart where the model name does not
    (a cloud VM's "AMD EPYC" is family 23 model 49, Zen 2, on one host and family 25, Zen 3, on another)."""
    fields = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                key = line.split(":", 1)[0].strip().lower()
                if key in ("cpu family", "model") and key not in fields:
                    fields[key] = line.split(":", 1)[1].strip()
                if not line.strip() and fields:
                    break
    except OSError:
        pass
    if "cpu family" not in fields:
        return ""
    return f"family {fields['cpu family']} model {fields.get('model', '?')}"


def machine_words(model, family_model, cores) -> str:
    """"AMD EPYC, family 25 model 17, 2 cores": how the run clock and the optimize report name the machine (the
    family and model tell CPU generations apart where one model name covers several); empty parts are left out."""
    return ", ".join(filter(None, (model, family_model, f"{cores} cores")))


def usable_cores() -> int:
    """The cores this process may run on (its affinity), else the machine's count."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


_SIMD = ("avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile",
         "amx_int8", "amx_bf16", "asimd", "asimddp", "sve")


def cpu_flags() -> list:
    """The CPU's SIMD features that decide TensorFlow's and XNNPACK's kernels (AVX2, AVX-512, VNNI, AMX; NEON / SVE
    on Arm), from /proc/cpuinfo; empty where it is missing."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.lower().startswith(("flags", "features")):
                    have = set(line.split(":", 1)[1].split())
                    return [flag for flag in _SIMD if flag in have]
    except OSError:
        pass
    return []


def _version(dist: str):
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def environment() -> dict:
    """CPU model, cores, OS, Python and the versions of TensorFlow, tf_keras, LiteRT, onnxruntime, numpy."""
    from tfspeed.compat import tf
    from tfspeed.runtime import allocator_settings

    return {
        "cpu_model": cpu_model(),
        "cpu_id": cpu_id(),
        "cpu_flags": cpu_flags(),
        "cpu_count": os.cpu_count(),
        "cpus_available": usable_cores(),
        "machine": platform.machine(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "tf_keras": _version("tf-keras") or _version("tf_keras"),
        "ai_edge_litert": _version("ai-edge-litert"),
        "onnxruntime": _version("onnxruntime"),
        "numpy": _version("numpy"),
        "allocator": allocator_settings(),
        **({"onednn_max_cpu_isa": os.environ["ONEDNN_MAX_CPU_ISA"]} if os.environ.get("ONEDNN_MAX_CPU_ISA") else {}),
    }


def _status(field: str) -> int | None:
    """A /proc/self/status memory field (VmRSS, VmHWM) in bytes, or None where /proc is missing."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def rss_bytes() -> int | None:
    return _status("VmRSS")


def reset_peak_rss() -> bool:
    """Resets the process's peak RSS (VmHWM) to the current RSS (Linux >= 4.0). False when not possible."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_bytes() -> int | None:
    value = _status("VmHWM")
    if value is None:
        import resource

        value = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return value
