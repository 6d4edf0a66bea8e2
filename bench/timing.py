"""What the benchmarks share: timing variants side by side, interleaved round by round, so load
from other processes on a shared machine hits every variant alike."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def interleaved(variants: dict[str, Callable[[], object]], reps: int) -> dict[str, list[float]]:
    """Seconds of every call of every variant, variants run in turn within each round."""
    times: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(reps):
        for name, fn in variants.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return times


def medians(times: dict[str, list[float]], scale: float = 1.0) -> dict[str, float]:
    return {k: statistics.median(v) * scale for k, v in times.items()}
