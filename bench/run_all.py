"""Runs the benchmarks one after another, each with the command docs/benchmarks.md gives for it,
saves each one's output (stdout and stderr) in a folder, and prints how long each took.

    PYTHONPATH=services:. .venv/bin/python bench/run_all.py OUT_DIR [--only a,b] [--skip a,b] [--list] [--quick]

For a quiet machine: nothing else should run meanwhile, since every figure is stored with the load
it ran under. The list is ordered by what a re-run is worth: benchmarks with targets first, then the
ones whose outcomes do not depend on load (faces, eyes), then the long ones (the 10-minute soak,
sdxl-shaped generation, which needs ~13 GiB of memory and the model built under /tmp/i13-sdxl).
bench/pipeline.py, bench/scaling.py and bench/open_eyes.py are not in the list: each takes minutes
per run and their targets need several consecutive runs, so they are run on their own.
Writes OUT_DIR/<name>.txt per benchmark and OUT_DIR/durations.tsv (name, exit status, seconds).
`--quick` runs every bench's smoke form instead, these three included (`make bench`): it shows that
each one runs, not what it measures.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Bench:
    name: str
    args: tuple[str, ...]  # after the interpreter, exactly as docs/benchmarks.md writes them; () = not in the list
    minutes: float  # the full form on the quiet machine, 2026-12-03 (load: an earlier niced run); to plan a re-run
    quick: tuple[str, ...] | None = None  # the smoke form (`--quick`, `make bench`); default: args + --quick

    @property
    def command(self) -> str:
        return " ".join(self.args)

    def form(self, quick: bool) -> tuple[str, ...]:
        if not quick:
            return self.args
        return self.quick if self.quick is not None else (*self.args, "--quick")


SDXL_SHAPED = ("bench/generation.py", "--sdxl-shaped", "--models", "/tmp/i13-sdxl", "--threads", "2", "--side", "512",
               "--steps", "2", "--rounds", "3", "--controlnet-rounds", "0")
BENCHES = (
    Bench("detection", ("bench/detection.py",), 0.4),
    Bench("runtime", ("bench/runtime.py",), 1.3),
    Bench("embedding", ("bench/embedding.py",), 1.8),
    Bench("restoration", ("bench/restoration.py",), 0.1),
    Bench("images", ("bench/images.py",), 0.4),
    Bench("store", ("bench/store.py",), 0.1),
    Bench("generation", ("bench/generation.py",), 0.5),
    Bench("controlnet", ("bench/controlnet.py",), 0.2),
    Bench("training", ("bench/training.py",), 2.8),
    Bench("faces", ("bench/faces.py", "--show-wrong", "--calibrate"), 0.3, ("bench/faces.py", "--split", "tune")),
    Bench("eyes", ("bench/eyes.py",), 0.1, ("bench/eyes.py",)),
    Bench("load", ("bench/load.py", "--minutes", "10"), 10.4, ("bench/load.py", "--quick")),
    # needs ~13 GiB of memory and the model built once under /tmp/i13-sdxl (~7 min): no smoke form
    Bench("sdxl-shaped", SDXL_SHAPED, 6.0, ()),
)
# Run on their own in a full re-run (several consecutive runs each); in the smoke run with the rest.
ON_THEIR_OWN = (
    Bench("pipeline", (), 6.0, ("bench/pipeline.py", "--quick")),
    Bench("scaling", (), 6.0, ("bench/scaling.py", "--quick")),
    Bench("open_eyes", (), 8.0, ("bench/open_eyes.py", "--reps", "1", "--variations", "1", "--size", "256")),
)


def chosen(only: str, skip: str, quick: bool) -> list[Bench]:
    names = {b.name for b in BENCHES + ON_THEIR_OWN}
    wanted = [n for n in (only + "," + skip).split(",") if n]
    unknown = sorted(set(wanted) - names)
    if unknown:
        raise SystemExit(f"unknown benchmark(s) {', '.join(unknown)}; known: {', '.join(sorted(names))}")
    keep = set(only.split(",")) if only else names
    return [b for b in BENCHES + ON_THEIR_OWN
            if b.form(quick) and b.name in keep and b.name not in skip.split(",")]


def run(bench: Bench, out: Path, quick: bool) -> tuple[int, float]:
    env = {**os.environ, "PYTHONPATH": f"services{os.pathsep}.", "HF_HUB_OFFLINE": "1"}
    t0 = time.perf_counter()
    with open(out / f"{bench.name}.txt", "w") as log:
        log.write(f"$ PYTHONPATH=services:. .venv/bin/python {' '.join(bench.form(quick))}\n")
        log.flush()
        rc = subprocess.run([sys.executable, "-u", *bench.form(quick)], cwd=ROOT, env=env, stdout=log,
                            stderr=subprocess.STDOUT).returncode
    return rc, time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path, nargs="?", help="folder for the outputs")
    ap.add_argument("--only", default="", help="comma-separated names")
    ap.add_argument("--skip", default="", help="comma-separated names")
    ap.add_argument("--quick", action="store_true",
                    help="every bench's smoke form instead (`make bench`), pipeline, scaling and open_eyes included")
    ap.add_argument("--list", action="store_true", help="print the plan and stop")
    args = ap.parse_args()
    benches = chosen(args.only, args.skip, args.quick)
    if args.list or args.out is None:
        for b in benches:
            print(f"{b.name:<12} {'' if args.quick else f'~{b.minutes:>4.1f} min'}  {' '.join(b.form(args.quick))}")
        if not args.quick:
            print(f"{'total':<12} ~{sum(b.minutes for b in benches):>4.1f} min")
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    failed = 0
    with open(args.out / "durations.tsv", "w") as table:
        table.write("bench\texit\tseconds\tload_after\n")
        for b in benches:
            rc, seconds = run(b, args.out, args.quick)
            load = os.getloadavg()[0]
            failed += rc != 0
            print(f"{b.name:<12} exit {rc:<3} {seconds:7.1f} s  load {load:.2f}  {' '.join(b.form(args.quick))}",
                  flush=True)
            table.write(f"{b.name}\t{rc}\t{seconds:.1f}\t{load:.2f}\n")
            table.flush()
    print(f"outputs in {args.out}; {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
