"""What every benchmark prints about the machine it ran on: absolute times on these shared
machines differ 1.4-3x between machines of one kind, so a figure means little without its CPU,
core count and load, before and after the run."""

from __future__ import annotations

import os
import platform


def cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def load() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


class Machine:
    """Prints the machine and the load average at the start; `.done()` adds the load at the end and
    returns both for the benchmark's JSON line."""

    def __init__(self):
        self.figures = {"cpu": cpu_model(), "cores": os.cpu_count(), "load_before": load()}
        print(f"# machine: {self.figures['cpu']}, {self.figures['cores']} cores; "
              f"load average (1/5/15 min) before: {self.figures['load_before']}")

    def done(self) -> dict:
        self.figures["load_after"] = load()
        print(f"# load average after: {self.figures['load_after']}")
        return dict(self.figures)
