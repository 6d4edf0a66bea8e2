"""Sampling profiles of running processes for benchmarks (`--profile DIR`): py-spy records each
process (CPU samples only, idle threads left out) in its collapsed-stack form, and `summary`
prints where a process spent its samples: by function (self) and by top-level phase (inclusive).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections import Counter
from contextlib import contextmanager
from pathlib import Path


def py_spy() -> str:
    """The py-spy next to this interpreter (the dev extra installs it into the venv), else on PATH."""
    here = Path(sys.executable).parent / "py-spy"
    found = str(here) if here.exists() else shutil.which("py-spy")
    if not found:
        raise SystemExit("--profile needs py-spy (pip install 'likeness[dev]')")
    return found


@contextmanager
def recording(pid: int, out: Path, rate: int = 100):
    """py-spy samples `pid` until the block ends; the collapsed stacks land in `out`."""
    out.parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen([py_spy(), "record", "--pid", str(pid), "--rate", str(rate), "--format", "raw",
                             "--gil", "--threads", "-o", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield out
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process (all its threads) has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def read_stacks(path: Path) -> list[tuple[list[str], int]]:
    stacks = []
    for line in path.read_text(errors="replace").splitlines():
        frames, _, count = line.rpartition(" ")
        if frames and count.isdigit():
            stacks.append((frames.split(";"), int(count)))
    return stacks


def _short(frame: str) -> str:
    """`fn (path/to/file.py:12)` -> `fn (file.py)`; thread frames are kept as they are."""
    name, _, where = frame.partition(" (")
    return f"{name} ({where.rsplit('/', 1)[-1].split(':')[0].rstrip(')')})" if where else name


def summary(path: Path, top: int = 15, marks: tuple[str, ...] = ()) -> str:
    """Seconds of CPU per leaf function and, for each of `marks` (substrings of a frame), the
    inclusive seconds of stacks through it. Samples are converted with the recording rate."""
    stacks = read_stacks(path)
    total = sum(c for _, c in stacks)
    if not total:
        return f"{path.name}: no samples"
    leaf: Counter[str] = Counter()
    through: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    for frames, count in stacks:
        leaf[_short(frames[-1])] += count
        threads[frames[0].split(" (")[0] if frames[0].startswith("thread") else "main"] += count
        for m in marks:
            if any(m in f for f in frames):
                through[m] += count
    lines = [f"{path.stem}: {total} samples"]
    lines += [f"  {c / total:6.1%}  {name}" for name, c in leaf.most_common(top)]
    lines += [f"  through {m}: {through[m] / total:.1%}" for m in marks]
    return "\n".join(lines)
