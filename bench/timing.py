"""What the benchmarks share: timing variants side by side, interleaved round by round, so load
from other processes on a shared machine hits every variant alike, and reporting each figure as a
median with its spread, so a reader sees how far the repetitions agreed."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence

MIN_REPS = 3  # fewer repetitions give no median worth the name and no spread


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


def spread(values: Sequence[float]) -> float:
    """Largest over smallest repetition: 1.0 when every repetition agreed."""
    low = min(values)
    return max(values) / low if low > 0 else float("inf")


def spreads(times: dict[str, list[float]]) -> dict[str, float]:
    return {k: round(spread(v), 3) for k, v in times.items()}


def span(values: Sequence[float], digits: int = 3) -> str:
    """`median (min-max)` of the repetitions."""
    return f"{statistics.median(values):.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})"


def spread_line(found: dict[str, float], reps: int | None, what: str = "") -> str:
    """One line naming every variant's spread (max / min over its `reps` rounds)."""
    rounds = f"{reps} rounds" if reps else "its rounds"
    return (f"spread{' of ' + what if what else ''} (max / min of {rounds}): "
            + ", ".join(f"{k} {v:.2f}" for k, v in found.items()))


def print_spreads(times: dict[str, list[float]], what: str = "") -> dict[str, float]:
    """Prints the spread line of `times`; returns the spreads for the JSON line."""
    found = spreads(times)
    print(spread_line(found, min(len(v) for v in times.values()), what))
    return found
