"""ControlNet cost: seconds per denoising step with one ControlNet vs none, side by side in one run.

    .venv/bin/python bench/controlnet.py [--quick] [--sdxl-shaped]

tiny-sdxl + tiny-controlnet-sdxl (random weights) at 64 px through the generation service's own
request path (ImageGenerator.generate, torch engine); interleaved rounds, median, spread.
`--sdxl-shaped` adds the full-size SDXL architecture with random weights (diffusion/sdxl_shaped.py)
and a full-size ControlNet built from its UNet (also random), at 512 px, bfloat16, 2 steps: the
compute of real SDXL + ControlNet, images that are noise.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import uuid
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "services")]

import numpy as np  # noqa: E402
from machine import Machine  # noqa: E402


def control_image(side: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    img = np.zeros((side, side, 3), np.uint8)
    for _ in range(40):
        y, x = rng.integers(0, side - 4, 2)
        img[y:y + 4, x:x + 4] = 255
    return img


def measure(generator, thread, model: str, control: str, side: int, steps: int, rounds: int) -> dict[str, list]:
    from likeness.generation.request import ControlRef, GenerationRequest

    def request(seed: int, with_control: bool) -> GenerationRequest:
        controls = [ControlRef(control_image(side), control)] if with_control else []
        return GenerationRequest(model=model, prompt="portrait", seed=seed, steps=steps, width=side, height=side,
                                 controls=controls, output_prefix=f"bench/{uuid.uuid4().hex}/")

    per_step: dict[str, list] = {"none": [], "controlnet": []}
    thread.call(generator.generate(request(0, True)))  # load the ControlNet, warm both paths
    thread.call(generator.generate(request(0, False)))
    for r in range(rounds):
        for name in per_step:
            result = thread.call(generator.generate(request(r + 1, name == "controlnet")))
            per_step[name].append(result.timings["denoising"] / steps)
    return per_step


def service(tmp: Path, dtype: str):
    from likeness.generation.app import create_service
    from likeness.generation.settings import GenerationSettings

    settings = GenerationSettings(
        store_uri=f"file://{tmp}/store", model_repository=str(tmp / "models"), model_cache_dir=str(tmp / "cache"),
        metrics_enabled=False, port=0, generation_keep_warm="", generation_cpu_threads=0, generation_dtype=dtype,
        generation_max_batch=1)
    svc = create_service(settings)
    return svc, settings, svc.servicers[0][1]._generator


def row(label: str, per_step: dict[str, list]) -> dict:
    none, cn = statistics.median(per_step["none"]), statistics.median(per_step["controlnet"])
    print(f"{label:<28}{none:>10.4f}{cn:>12.4f}{cn / none:>8.2f}{max(per_step['controlnet']) / min(per_step['controlnet']):>9.2f}")
    return {"none_step_s": round(none, 5), "controlnet_step_s": round(cn, 5), "ratio": round(cn / none, 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--sdxl-shaped", action="store_true", help="also the full-size architecture (minutes, ~8 GB)")
    args = ap.parse_args()
    machine = Machine()
    from likeness.diffusion.tiny_sdxl import ensure_tiny_model
    from tests.helpers import ServiceThread

    figures: dict = {}
    print(f"\n{'model':<28}{'none s/step':>10}{'ControlNet':>12}{'ratio':>8}{'max/min':>9}")
    with tempfile.TemporaryDirectory(prefix="bench-controlnet-") as tmp:
        svc, settings, generator = service(Path(tmp), "float32")
        for name in ("tiny-sdxl", "tiny-controlnet-sdxl"):
            ensure_tiny_model(generator.manager.repo, name)
        with ServiceThread(svc, settings) as thread:
            figures["tiny_sdxl_64px"] = row("tiny-sdxl, 64 px, fp32",
                                            measure(generator, thread, "tiny-sdxl", "tiny-controlnet-sdxl", 64,
                                                    4, 3 if args.quick else 9))
        if args.sdxl_shaped:
            svc, settings, generator = service(Path(tmp) / "shaped", "bfloat16")
            with ServiceThread(svc, settings) as thread:
                figures["sdxl_shaped_512px"] = row("sdxl-shaped, 512 px, bf16", sdxl_shaped(generator, thread))
    figures["machine"] = machine.done()
    print(json.dumps(figures))


def sdxl_shaped(generator, thread) -> dict[str, list]:
    """Full-size SDXL + a full-size ControlNet from its UNet, both random; bfloat16; 2 steps x 3."""
    import torch

    from likeness.diffusion.controlnet import build_tiny_controlnet
    from likeness.diffusion.sdxl_shaped import ensure_sdxl_shaped_model

    repo = generator.manager.repo
    ensure_sdxl_shaped_model(repo, dtype=torch.bfloat16)
    model = generator.manager.get("sdxl-shaped")
    with tempfile.TemporaryDirectory() as tmp:  # a ControlNet the size of SDXL's: random, like its UNet
        folder = Path(tmp) / "sdxl-shaped-controlnet"
        net = build_tiny_controlnet(model.pipe.unet, 1).to(torch.bfloat16)
        net.save_pretrained(str(folder), safe_serialization=True)
        del net
        repo.register("sdxl-shaped-controlnet", folder, kind="controlnet", backend="diffusers",
                      config={"family": "sdxl", "random_weights": True})
    return measure(generator, thread, "sdxl-shaped", "sdxl-shaped-controlnet", 512, 2, 3)


if __name__ == "__main__":
    main()
