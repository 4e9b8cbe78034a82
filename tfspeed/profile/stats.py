"""Summary statistics of latency samples, as benchmark_model and pyperf report them."""

from __future__ import annotations

import numpy as np


def summarize(seconds) -> dict:
    """Summarizes latency samples given in seconds; every figure in the result is in milliseconds.

    Returns:
        `{"n", "median", "mean", "std", "mad", "min", "max", "p90", "p99"}`. `mad` is the median absolute deviation
        (not scaled); percentiles use linear interpolation.
    """
    ms = np.asarray(seconds, dtype=np.float64) * 1e3
    if ms.size == 0:
        raise ValueError("Received no latency samples to summarize. Received: samples=[]")
    median = float(np.median(ms))
    return {
        "n": int(ms.size),
        "median": median,
        "mean": float(ms.mean()),
        "std": float(ms.std(ddof=1)) if ms.size > 1 else 0.0,
        "mad": float(np.median(np.abs(ms - median))),
        "min": float(ms.min()),
        "max": float(ms.max()),
        "p90": float(np.percentile(ms, 90)),
        "p99": float(np.percentile(ms, 99)),
    }
