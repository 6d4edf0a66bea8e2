"""Generation at real SDXL size on this CPU: sdxl-shaped (the released SDXL architecture with random
weights; its images are noise, its compute and memory are SDXL's).

Measures in one run, at 512x512, CFG 5, a few Euler steps, weights in bf16 (or --dtype):
  1. seconds per denoising step and peak resident memory of the torch engine (through the service);
  2. the same for the onnxruntime engine, when the export fits in this machine's memory (otherwise
     the row says why it did not run: the measured available memory against what the export needs);
  3. one image through the generation service vs the same call on the bare diffusers pipeline
     (the same loaded weights, interleaved rounds; target ratio <= 1.05);
  4. with --int8: the torch engine with the UNet's weights quantised to int8 (weight-only).
Called by `bench/generation.py --sdxl-shaped`. Only one full-size pipeline is in memory at a time.
"""

from __future__ import annotations

import gc
import json
import statistics
import threading
import time
import uuid
from pathlib import Path

CALL_TIMEOUT_S = 3600  # one full-size image on a shared 2-core CPU takes minutes
ONNX_EXPORT_BYTES_PER_PARAM = 8  # fp32 weights in the traced module + their copy in the serialised proto


class PeakRss:
    """Samples this process's resident memory every 20 ms while active; `peak` in GiB."""

    def __init__(self):
        import psutil

        self.process = psutil.Process()
        self.peak = 0.0
        self._stop = threading.Event()
        self._thread = None

    def __enter__(self):
        self.peak = self.process.memory_info().rss
        self._stop.clear()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self.process.memory_info().rss)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss) / 2**30


def run(args) -> None:
    import psutil
    import torch

    from bench.machine import Machine
    from likeness.diffusion.sdxl_shaped import ensure_sdxl_shaped_model
    from likeness.generation.app import create_service
    from likeness.generation.request import GenerationRequest
    from likeness.generation.settings import GenerationSettings
    from tests.helpers import ServiceThread

    machine = Machine()
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[args.dtype]
    side, steps, rounds = 512, args.steps, args.rounds
    root = Path(args.models)
    settings = GenerationSettings(
        store_uri=f"file://{root}/store", model_repository=str(root / "models"), model_cache_dir=str(root / "cache"),
        metrics_enabled=False, port=0, generation_keep_warm="", generation_build_tiny_models=False,
        generation_max_batch=1, generation_max_wait_ms=0, generation_cpu_threads=args.threads,
        generation_engine_cache_dir=str(root / "engines"), generation_idle_unload_seconds=0)
    service = create_service(settings)
    generator = service.servicers[0][1]._generator
    t = time.perf_counter()
    folder = ensure_sdxl_shaped_model(generator.manager.repo, "sdxl-shaped", dtype)
    build_s = time.perf_counter() - t
    engine = generator.manager.engine
    engine.dtype = dtype  # load the weights in the dtype they were built in (no fp32 copy)
    figures = {"model": "sdxl-shaped (random weights)", "side": side, "steps": steps, "dtype": args.dtype,
               "threads": args.threads, "rounds": rounds, "build_or_fetch_s": round(build_s, 1)}
    rows = []

    def request(seed: int) -> GenerationRequest:
        return GenerationRequest(model="sdxl-shaped", prompt=f"portrait {seed}", seed=seed, steps=steps, width=side,
                                 height=side, guidance_scale=5.0, sampler="euler",
                                 output_prefix=f"bench/{uuid.uuid4().hex}/")

    with ServiceThread(service, settings) as thread:
        with PeakRss() as load_mem:
            t = time.perf_counter()
            first = thread.call(generator.generate(request(0)), timeout=CALL_TIMEOUT_S)  # loads the model; warms every path
            figures["load_and_first_image_s"] = round(time.perf_counter() - t, 1)
        pipe = generator.manager.get("sdxl-shaped").pipe

        def bare(seed: int):
            return pipe(prompt=f"portrait {seed}", num_inference_steps=steps, guidance_scale=5.0, width=side,
                        height=side, generator=torch.Generator("cpu").manual_seed(seed), output_type="pil").images

        via_service, on_diffusers, per_step = [], [], [first.timings["denoising"] / steps]
        with PeakRss() as torch_mem:
            for i in range(rounds):
                t = time.perf_counter()
                result = thread.call(generator.generate(request(100 + i)), timeout=CALL_TIMEOUT_S)
                via_service.append(time.perf_counter() - t)
                per_step.append(result.timings["denoising"] / steps)
                t = time.perf_counter()
                bare(200 + i)
                on_diffusers.append(time.perf_counter() - t)
        s, d, step = statistics.median(via_service), statistics.median(on_diffusers), statistics.median(per_step)
        figures.update(torch_step_s=round(step, 2), torch_peak_rss_gib=round(max(torch_mem.peak, load_mem.peak), 2),
                       service_image_s=round(s, 2), diffusers_image_s=round(d, 2), service_vs_diffusers=round(s / d, 3))
        rows.append(("torch engine: seconds per denoising step (CFG, batch 1)", f"{step:.2f} s", None))
        rows.append(("torch engine: peak resident memory (load + run)", f"{figures['torch_peak_rss_gib']:.1f} GiB",
                     None))
        rows.append(("1 image: generation service vs bare diffusers pipeline", f"{s:.2f} s vs {d:.2f} s", s / d))

        if args.int8:
            _int8_rows(pipe, bare, on_diffusers, rounds, steps, rows, figures)
        unet_params = sum(p.numel() for p in pipe.unet.parameters())
        pipe = first = result = None  # free the weights before the onnxruntime part
        generator.manager.unload_all()
        gc.collect()

    # onnxruntime: exporting traces the UNet in fp32 and serialises it; check that it fits first.
    need = unet_params * ONNX_EXPORT_BYTES_PER_PARAM / 2**30
    available = psutil.virtual_memory().available / 2**30
    figures.update(onnx_export_need_gib=round(need, 1), onnx_available_gib=round(available, 1))
    if available < need:
        reason = (f"not run: exporting the {unet_params / 1e9:.2f} B-parameter UNet needs ~{need:.0f} GiB "
                  f"(fp32 trace + serialised copy), {available:.1f} GiB available here")
        figures["onnx_step_s"] = None
        figures["onnx_skipped"] = reason
        rows.append(("onnxruntime engine: seconds per denoising step", reason, None))
    else:
        rows += _onnx_rows(settings, folder, generator, dtype, steps, side, figures)

    print(f"\nsdxl-shaped {side}x{side}, {steps} Euler steps, CFG 5, {args.dtype} weights, "
          f"{args.threads or 'all'} CPU thread(s), medians of {rounds} rounds")
    print("(random weights at SDXL's real size: images are noise; times and memory are SDXL's)\n")
    width = max(len(r[0]) for r in rows)
    print(f"{'what':<{width}}  {'measured':<40} ratio")
    for what, measured, ratio in rows:
        print(f"{what:<{width}}  {measured:<40} {'' if ratio is None else f'{ratio:.3f}'}")
    figures["machine"] = machine.done()
    print(json.dumps({"sdxl_shaped": figures}))


def _onnx_rows(settings, folder, generator, dtype, steps, side, figures) -> list:
    from likeness.generation.adapters import AdapterCache
    from likeness.generation.engines.base import BatchKey, ImageItem
    from likeness.generation.engines.onnx_engine import OnnxEngine
    from likeness.generation.models import LoadedModel

    spec = generator.manager.repo.spec("sdxl-shaped")
    engine = OnnxEngine(settings)
    engine.dtype = dtype
    with PeakRss() as mem:
        model = LoadedModel("sdxl-shaped", spec, engine.load(folder, spec), 0, AdapterCache(1))
        key = BatchKey("sdxl-shaped", "text-to-image", side, side, steps, "euler", 5.0, None, "", 0.2, (), None)
        times = [engine.run(model, None, key, [ImageItem(seed=i, prompt="a", negative_prompt="")], {})[0]
                 .timings["denoising"] / steps for i in range(2)]
    figures.update(onnx_step_s=round(times[-1], 2), onnx_peak_rss_gib=round(mem.peak, 2))
    return [("onnxruntime engine: seconds per denoising step", f"{times[-1]:.2f} s", None),
            ("onnxruntime engine: peak resident memory (export + run)", f"{mem.peak:.1f} GiB", None)]


def _int8_rows(pipe, bare, plain, rounds, steps, rows, figures) -> None:
    """Weight-only int8 UNet (likeness.diffusion.quantize) against the same pipeline unquantised
    (`plain`: the bare-pipeline times measured just before, same calls)."""
    from likeness.diffusion.quantize import quantize_unet_int8, unet_weight_bytes

    before = unet_weight_bytes(pipe.unet)
    quantize_unet_int8(pipe.unet)
    after = unet_weight_bytes(pipe.unet)
    quantised = []
    with PeakRss() as mem:
        for i in range(rounds):
            t = time.perf_counter()
            bare(200 + i)
            quantised.append(time.perf_counter() - t)
    p, q = statistics.median(plain), statistics.median(quantised)
    figures.update(int8_unet_weights_gib=round(after / 2**30, 2), unet_weights_gib=round(before / 2**30, 2),
                   int8_image_s=round(q, 2), plain_image_s=round(p, 2), int8_peak_rss_gib=round(mem.peak, 2))
    rows.append(("UNet weights: int8 weight-only vs unquantised", f"{after / 2**30:.2f} GiB vs {before / 2**30:.2f} GiB",
                 after / before))
    rows.append((f"1 image ({steps} steps): int8 UNet vs unquantised", f"{q:.2f} s vs {p:.2f} s", q / p))

