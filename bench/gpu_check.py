"""The GPU check (run by bench/gpu_check.sh): the generation service's torch engine on an NVIDIA GPU.

1. tiny-sdxl parity: the same requests through the engine in fp16 and in fp32 (max pixel difference,
   PSNR), on the device;
2. sdxl-shaped (the released SDXL architecture, random weights, built directly on the GPU in fp16):
   latency per image at batch 1 and 4, 1024x1024, 30 Euler steps, CFG 5, and peak GPU memory,
   with the engine's eager settings and then with its fast settings (channels-last, torch.compile
   of the UNet; `--compile reduce-overhead` adds CUDA graphs).
Prints a table and one JSON line. `--device cpu --tiny` runs the same code at toy size on a CPU (what
the test suite runs: nothing here needs a GPU to be exercised, only to be measured).

    python bench/gpu_check.py [--device cuda] [--compile default|reduce-overhead|max-autotune|none] [--tiny]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "services")]


def _settings(device: str, **fast):
    values = dict(generation_device=device, generation_cpu_threads=0, generation_unet_quantization="none",
                  generation_channels_last=False, generation_torch_compile="none")
    return SimpleNamespace(**{**values, **fast})


def _engine(device: str, dtype, **fast):
    from likeness.generation.engines.torch_engine import TorchEngine

    engine = TorchEngine(_settings(device, **fast))
    engine.dtype = dtype
    return engine


def _run(engine, model, side: int, steps: int, batch: int, seed: int = 0):
    from likeness.generation.engines.base import BatchKey, ImageItem

    key = BatchKey(model.name, "text-to-image", side, side, steps, "euler", 5.0, None, "", 0.2, (), None)
    items = [ImageItem(seed=seed + i, prompt="a portrait photo", negative_prompt="") for i in range(batch)]
    return engine.run(model, None, key, items, {})


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def tiny_parity(device: str, side: int, steps: int) -> dict:
    """tiny-sdxl through the engine in fp16 vs fp32: how far half precision moves the pixels."""
    import numpy as np
    import torch

    from likeness.core.modelrepo import ModelRepository
    from likeness.diffusion.tiny_sdxl import ensure_tiny_model
    from likeness.generation.adapters import AdapterCache
    from likeness.generation.models import LoadedModel

    with tempfile.TemporaryDirectory() as tmp:
        repo = ModelRepository(Path(tmp) / "models", Path(tmp) / "cache")
        folder = ensure_tiny_model(repo, "tiny-sdxl")
        spec = repo.spec("tiny-sdxl")
        images = {}
        for name, dtype in (("fp32", torch.float32), ("fp16", torch.float16)):
            engine = _engine(device, dtype)
            model = LoadedModel("tiny-sdxl", spec, engine.load_model(folder, spec), 0, AdapterCache(1))
            images[name] = np.stack([r.rgb for r in _run(engine, model, side, steps, 2)]).astype(np.float64)
    diff = np.abs(images["fp16"] - images["fp32"])
    mse = float((diff**2).mean())
    return {"tiny_fp16_vs_fp32_max_abs": int(diff.max()), "tiny_fp16_vs_fp32_mean_abs": round(float(diff.mean()), 3),
            "tiny_fp16_vs_fp32_psnr_db": round(10 * np.log10(255**2 / mse), 2) if mse else float("inf")}


def sdxl_shaped_latency(device: str, side: int, steps: int, batches: list[int], compile_mode: str, tiny: bool) -> dict:
    """Per-image latency and peak memory of the engine on sdxl-shaped (eager, then fast settings)."""
    import gc

    import torch

    from likeness.diffusion.sdxl_shaped import build_pipeline
    from likeness.generation.adapters import AdapterCache
    from likeness.generation.models import LoadedModel

    dtype = torch.float16 if device.startswith("cuda") else torch.float32
    t = time.perf_counter()
    if tiny:  # the toy-size stand-in, for a CPU dry run of this code
        from likeness.core.modelrepo import ModelRepository
        from likeness.diffusion.pipelines import load_pipeline
        from likeness.diffusion.tiny_sdxl import ensure_tiny_model

        with tempfile.TemporaryDirectory() as tmp:
            folder = ensure_tiny_model(ModelRepository(Path(tmp) / "models", Path(tmp) / "cache"))
            pipe = load_pipeline(folder, "sdxl", dtype=dtype, device=device)
    else:
        pipe = build_pipeline("sdxl", dtype, device)
    out = {"build_s": round(time.perf_counter() - t, 1)}
    spec = SimpleNamespace(name="sdxl-shaped", kind="sdxl", config={})
    variants = [("eager", {})]
    variants.append(("fast", {"generation_channels_last": True, "generation_torch_compile": compile_mode}))
    for label, fast in variants:
        engine = _engine(device, dtype, **fast)
        if fast:
            engine.speed_up(pipe)
        model = LoadedModel("sdxl-shaped", spec, pipe, 0, AdapterCache(1))
        for batch in batches:
            if device.startswith("cuda"):
                torch.cuda.reset_peak_memory_stats()
            _run(engine, model, side, steps, batch)  # warm-up: cuDNN autotuning, compilation, graphs
            _sync(device)
            times = []
            for round_ in range(2):
                t = time.perf_counter()
                _run(engine, model, side, steps, batch, seed=100 * round_)
                _sync(device)
                times.append(time.perf_counter() - t)
            out[f"{label}_b{batch}_s_per_image"] = round(min(times) / batch, 3)
            if device.startswith("cuda"):
                out[f"{label}_b{batch}_peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        if fast:
            out[f"{label}_settings"] = fast
    del pipe, model
    gc.collect()
    return out


def main() -> None:
    import torch

    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--compile", default="default", choices=("none", "default", "reduce-overhead", "max-autotune"),
                    help="torch.compile mode of the fast variant (reduce-overhead records CUDA graphs)")
    ap.add_argument("--tiny", action="store_true", help="toy-size stand-in instead of sdxl-shaped (CPU dry run)")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--side", type=int, default=1024)
    ap.add_argument("--batches", default="1,4")
    args = ap.parse_args()
    from bench.machine import Machine

    machine = Machine()  # the host; the GPU's name is in the figures
    if args.tiny:
        args.side, args.steps = 64, 2
    batches = [int(b) for b in args.batches.split(",")]
    figures = {"device": args.device, "torch": torch.__version__, "side": args.side, "steps": args.steps,
               "model": "tiny-sdxl stand-in" if args.tiny else "sdxl-shaped (random weights)"}
    if args.device.startswith("cuda"):
        figures["gpu"] = torch.cuda.get_device_name(0)
        torch.backends.cudnn.benchmark = True
    figures.update(tiny_parity(args.device, 64, 4))
    figures.update(sdxl_shaped_latency(args.device, args.side, args.steps, batches, args.compile, args.tiny))
    print(f"\n{figures['model']} {args.side}x{args.side}, {args.steps} Euler steps, CFG 5, "
          f"on {figures.get('gpu', args.device)}")
    for key, value in figures.items():
        print(f"  {key:<34} {value}")
    figures["machine"] = machine.done()
    print(json.dumps({"gpu_check": figures}))


if __name__ == "__main__":
    main()
