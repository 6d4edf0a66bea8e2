"""ControlNet cost: seconds per denoising step with one ControlNet vs none, side by side in one run.

    .venv/bin/python bench/controlnet.py [--quick]

tiny-sdxl + tiny-controlnet-sdxl (random weights) at 64 px through the generation service's own
request path (ImageGenerator.generate, torch engine); interleaved rounds, median, spread. The
full-size figure (sdxl-shaped + a ControlNet built from its UNet, random weights) is measured by
`bench/generation.py --sdxl-shaped`, which calls this module's `measure` and `tiny_sdxl`.

A step's time is read from the service's own progress callback (the time between the ends of two
consecutive denoising steps), so it leaves out text encoding, decoding, set-up and the first step
(which also pays first-call allocations): two steps per image give one clean step.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "services")]

import numpy as np  # noqa: E402

from bench.machine import Machine  # noqa: E402


def control_image(side: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    img = np.zeros((side, side, 3), np.uint8)
    for _ in range(40):
        y, x = rng.integers(0, side - 4, 2)
        img[y:y + 4, x:x + 4] = 255
    return img


class StepClock:
    """A progress callback for ImageGenerator.generate: the time at the end of each denoising step."""

    def __init__(self):
        self.ends: list[float] = []

    def __call__(self, stage: str, done: int, total: int) -> None:
        if stage == "denoise":
            self.ends.append(time.perf_counter())

    def step_seconds(self) -> list[float]:
        """Seconds of steps 2..n (each measured end to end); empty with fewer than two steps."""
        return [b - a for a, b in zip(self.ends, self.ends[1:], strict=False)]


def measure(generator, thread, model: str, control: str, side: int, steps: int, rounds: int,
            timeout: float = 300) -> dict[str, list]:
    """Per-step seconds without and with one ControlNet, `rounds` interleaved images each (the first
    image of each kind also loads what it needs; its first step is left out like every first step)."""
    from likeness.generation.request import ControlRef, GenerationRequest

    if steps < 2:
        raise ValueError("steps must be >= 2: a step is timed from the end of the one before")
    image = control_image(side)

    def one(seed: int, with_control: bool) -> list[float]:
        clock = StepClock()
        req = GenerationRequest(model=model, prompt="portrait", seed=seed, steps=steps, width=side, height=side,
                                guidance_scale=5.0, sampler="euler",
                                controls=[ControlRef(image, control)] if with_control else [],
                                output_prefix=f"bench/{uuid.uuid4().hex}/")
        thread.call(generator.generate(req, progress=clock), timeout=timeout)
        return clock.step_seconds()

    per_step: dict[str, list] = {"none": [], "controlnet": []}
    for r in range(rounds):
        for name in per_step:
            per_step[name] += one(r + 1, name == "controlnet")
            print(f"# {model} round {r} {name}: {per_step[name][-1]:.3f} s/step", flush=True)
    return per_step


def row(label: str, per_step: dict[str, list]) -> dict:
    """Prints one table row; returns its figures (medians, ratio, the ControlNet's max/min spread)."""
    none, cn = statistics.median(per_step["none"]), statistics.median(per_step["controlnet"])
    spread = max(per_step["controlnet"]) / min(per_step["controlnet"])
    print(f"{label:<30}{none:>12.4f}{cn:>12.4f}{cn / none:>8.2f}{spread:>9.2f}{len(per_step['none']):>7}")
    return {"none_step_s": round(none, 5), "controlnet_step_s": round(cn, 5), "ratio": round(cn / none, 3),
            "controlnet_max_over_min": round(spread, 3), "steps_timed": len(per_step["none"])}


def header() -> None:
    print(f"\n{'model':<30}{'none s/step':>12}{'ControlNet':>12}{'ratio':>8}{'max/min':>9}{'steps':>7}")


def service(root: Path, dtype: str, threads: int = 0, **overrides):
    """A generation service (torch engine, batches of one) on the model repository under `root`."""
    from likeness.generation.app import create_service
    from likeness.generation.settings import GenerationSettings

    settings = GenerationSettings(
        store_uri=f"file://{root}/store", model_repository=str(root / "models"), model_cache_dir=str(root / "cache"),
        metrics_enabled=False, port=0, generation_keep_warm="", generation_build_tiny_models=False,
        generation_cpu_threads=threads, generation_dtype=dtype, generation_max_batch=1, generation_max_wait_ms=0,
        generation_idle_unload_seconds=0, **overrides)
    svc = create_service(settings)
    return svc, settings, svc.servicers[0][1]._generator


def tiny_sdxl(rounds: int, threads: int = 0) -> dict:
    """The tiny-sdxl row: 64 px, fp32, 4 steps (3 timed) per image."""
    from likeness.diffusion.tiny_sdxl import ensure_tiny_model
    from tests.helpers import ServiceThread

    with tempfile.TemporaryDirectory(prefix="bench-controlnet-") as tmp:
        svc, settings, generator = service(Path(tmp), "float32", threads)
        for name in ("tiny-sdxl", "tiny-controlnet-sdxl"):
            ensure_tiny_model(generator.manager.repo, name)
        with ServiceThread(svc, settings) as thread:
            return row("tiny-sdxl, 64 px, fp32", measure(generator, thread, "tiny-sdxl", "tiny-controlnet-sdxl",
                                                          64, 4, rounds))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    machine = Machine()
    header()
    figures = {"tiny_sdxl_64px": tiny_sdxl(3 if args.quick else 9), "machine": machine.done()}
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
