"""Generation at real SDXL size on this CPU: sdxl-shaped (the released SDXL architecture with random
weights; its images are noise, its compute and memory are SDXL's).

Measures in one run, at 512x512 (or --side), CFG 5, a few Euler steps, weights in bf16 (or --dtype):
  0. one ControlNet vs none, seconds per denoising step, on tiny-sdxl (64 px; bench/controlnet.py);
  1. seconds per denoising step and peak resident memory of the torch engine (through the service;
     a step is timed between the ends of two consecutive steps, from the service's progress callback);
  2. the same for the onnxruntime engine, when the export fits in this machine's memory (otherwise
     the row says why it did not run: the measured available memory against what the export needs);
  3. one image through the generation service vs the same call on the bare diffusers pipeline
     (the same loaded weights, interleaved rounds; target ratio <= 1.05);
  4. one full-size ControlNet (built from the sdxl-shaped UNet, random weights) vs none, seconds per
     denoising step, interleaved (--controlnet-rounds 0 leaves 0 and 4 out);
  5. with --int8: the torch engine with the UNet's weights quantised to int8 (weight-only).
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

    from bench import controlnet
    from bench.machine import Machine
    from likeness.diffusion.sdxl_shaped import ensure_sdxl_shaped_model
    from tests.helpers import ServiceThread

    machine = Machine()
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[args.dtype]
    side, steps, rounds = args.side, args.steps, args.rounds
    figures = {"model": "sdxl-shaped (random weights)", "side": side, "steps": steps, "dtype": args.dtype,
               "threads": args.threads, "rounds": rounds}
    rows = []
    if args.controlnet_rounds:  # the toy row first: seconds, before the full-size model takes the memory
        controlnet.header()
        figures["controlnet_tiny_sdxl_64px"] = controlnet.tiny_sdxl(args.controlnet_rounds, args.threads)
    root = Path(args.models)
    service, settings, generator = controlnet.service(root, str(dtype).removeprefix("torch."), args.threads,
                                                      generation_engine_cache_dir=str(root / "engines"))
    t = time.perf_counter()
    folder = ensure_sdxl_shaped_model(generator.manager.repo, "sdxl-shaped", dtype)
    figures["build_or_fetch_s"] = round(time.perf_counter() - t, 1)

    with ServiceThread(service, settings) as thread:
        pipe, bare, plain = _service_vs_diffusers(generator, thread, side, steps, rounds, rows, figures)
        if args.controlnet_rounds:
            figures["controlnet_sdxl_shaped"] = _controlnet_row(generator, thread, side, steps,
                                                                args.controlnet_rounds, rows)
        if args.int8:
            _int8_rows(pipe, bare, plain, rounds, steps, rows, figures)
        unet_params = sum(p.numel() for p in pipe.unet.parameters())
        pipe = bare = None  # free the weights before the onnxruntime part
        thread.call(generator.worker.run(generator.manager.unload_all))
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
    _print(args, side, steps, rounds, rows)
    figures["machine"] = machine.done()
    print(json.dumps({"sdxl_shaped": figures}))


def _print(args, side, steps, rounds, rows) -> None:
    print(f"\nsdxl-shaped {side}x{side}, {steps} Euler steps, CFG 5, {args.dtype} weights, "
          f"{args.threads or 'all'} CPU thread(s), medians of {rounds} interleaved rounds")
    print("(random weights at SDXL's real size: images are noise; times and memory are SDXL's)\n")
    width = max(len(r[0]) for r in rows)
    print(f"{'what':<{width}}  {'measured':<40} ratio")
    for what, measured, ratio in rows:
        print(f"{what:<{width}}  {measured:<40} {'' if ratio is None else f'{ratio:.3f}'}")


def _majflt() -> int:
    """Major page faults of this process so far: weights re-read from disk (their pages are
    file-backed safetensors mappings, which the kernel may drop under memory pressure)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_majflt


def _service_vs_diffusers(generator, thread, side, steps, rounds, rows, figures):
    """One image through the service vs the same call on a bare diffusers pipeline sharing the loaded
    weights, in interleaved rounds (the order alternates each round). Returns the loaded pipeline,
    the bare call and its times."""
    import os

    import torch
    from diffusers import EulerDiscreteScheduler

    from bench.controlnet import StepClock
    from likeness.generation.request import GenerationRequest

    with PeakRss() as load_mem:
        t = time.perf_counter()
        model = thread.call(generator.worker.run(generator.manager.get, "sdxl-shaped"), timeout=CALL_TIMEOUT_S)
        figures["load_s"] = round(time.perf_counter() - t, 1)
    pipe = model.pipe
    bare_pipe = type(pipe).from_pipe(pipe, scheduler=EulerDiscreteScheduler.from_config(model.default_scheduler_config),
                                     dtype=pipe.dtype)  # from_pipe's default would cast the shared weights to fp32
    bare_pipe.set_progress_bar_config(disable=True)
    clocks: list[StepClock] = []
    timings: list[dict] = []

    def via_service(seed: int, n: int = steps) -> None:
        clocks.append(StepClock())
        req = GenerationRequest(model="sdxl-shaped", prompt=f"portrait {seed}", seed=seed, steps=n, width=side,
                                height=side, guidance_scale=5.0, sampler="euler",
                                output_prefix=f"bench/{uuid.uuid4().hex}/")
        timings.append(thread.call(generator.generate(req, progress=clocks[-1]), timeout=CALL_TIMEOUT_S).timings)

    def on_diffusers(seed: int, n: int = steps) -> None:
        bare_pipe(prompt=f"portrait {seed}", num_inference_steps=n, guidance_scale=5.0, width=side, height=side,
                  generator=torch.Generator("cpu").manual_seed(seed), output_type="pil")

    t = time.perf_counter()
    via_service(0, 1)  # one step of each path first: first-call allocations and kernel choices at this size
    on_diffusers(0, 1)
    figures["warm_up_s"] = round(time.perf_counter() - t, 1)
    print(f"# loaded in {figures['load_s']} s; one-step warm-up of both paths {figures['warm_up_s']} s", flush=True)
    clocks.clear()
    timings.clear()
    times: dict[str, list] = {"service": [], "diffusers": []}
    faults: dict[str, list] = {"service": [], "diffusers": []}
    loads = []
    with PeakRss() as run_mem:
        for i in range(rounds):
            loads.append(round(os.getloadavg()[0], 2))
            order = (("service", via_service), ("diffusers", on_diffusers))
            for name, fn in order if i % 2 == 0 else order[::-1]:
                f, t = _majflt(), time.perf_counter()
                fn(100 + i)
                times[name].append(time.perf_counter() - t)
                faults[name].append(_majflt() - f)
                print(f"# round {i} {name}: {times[name][-1]:.1f} s, {faults[name][-1]} major page faults, "
                      f"load {loads[-1]}", flush=True)  # a run cut short still leaves its figures
    ratios = [s / d for s, d in zip(times["service"], times["diffusers"], strict=True)]
    steps_s = [x for c in clocks for x in c.step_seconds()]
    outside = [w - sum(tm[k] for k in ("queue", "text_encoding", "denoising", "decoding"))
               for w, tm in zip(times["service"], timings, strict=True)]
    s, d, r = (statistics.median(v) for v in (times["service"], times["diffusers"], ratios))
    step = statistics.median(steps_s) if steps_s else None
    figures.update(
        torch_step_s=None if step is None else round(step, 2),
        torch_peak_rss_gib=round(max(run_mem.peak, load_mem.peak), 2),
        service_image_s=[round(x, 2) for x in times["service"]],
        diffusers_image_s=[round(x, 2) for x in times["diffusers"]],
        service_vs_diffusers=round(r, 3), service_vs_diffusers_min=round(min(ratios), 3),
        service_vs_diffusers_total=round(sum(times["service"]) / sum(times["diffusers"]), 3),  # order-neutral
        service_vs_diffusers_max=round(max(ratios), 3), load_1min_per_round=loads,
        service_text_encoding_s=round(statistics.median(t["text_encoding"] for t in timings), 2),
        service_decoding_s=round(statistics.median(t["decoding"] for t in timings), 2),
        service_outside_pipeline_s=round(statistics.median(outside), 2),
        major_page_faults=faults)
    if step is not None:
        rows.append(("torch engine: seconds per denoising step (CFG, batch 1)", f"{step:.2f} s", None))
    rows.append(("torch engine: peak resident memory (load + run)", f"{figures['torch_peak_rss_gib']:.1f} GiB", None))
    rows.append((f"1 image: generation service vs bare diffusers (median of {rounds} per-round ratios)",
                 f"{s:.2f} s vs {d:.2f} s (ratios {min(ratios):.3f}-{max(ratios):.3f})", r))
    rows.append(("service time outside the diffusers pipeline (PNG, store, request)",
                 f"{figures['service_outside_pipeline_s']:.2f} s", None))
    return pipe, on_diffusers, times["diffusers"]


def _controlnet_row(generator, thread, side, steps, rounds, rows) -> dict:
    """Per-step cost of one full-size ControlNet (built from the loaded UNet, random) vs none."""
    from bench import controlnet
    from likeness.diffusion.sdxl_shaped import ensure_sdxl_shaped_controlnet

    model = thread.call(generator.worker.run(generator.manager.get, "sdxl-shaped"), timeout=CALL_TIMEOUT_S)
    thread.call(generator.worker.run(ensure_sdxl_shaped_controlnet, generator.manager.repo, model.pipe.unet),
                timeout=CALL_TIMEOUT_S)
    with PeakRss() as mem:
        per_step = controlnet.measure(generator, thread, "sdxl-shaped", "sdxl-shaped-controlnet", side, steps, rounds,
                                      timeout=CALL_TIMEOUT_S)
    figures = controlnet.row(f"sdxl-shaped, {side} px", per_step)
    figures["peak_rss_gib"] = round(mem.peak, 2)
    rows.append(("one full-size ControlNet vs none: seconds per denoising step",
                 f"{figures['controlnet_step_s']:.2f} s vs {figures['none_step_s']:.2f} s", figures["ratio"]))
    return figures


def _onnx_rows(settings, folder, generator, dtype, steps, side, figures) -> list:
    from likeness.generation.adapters import AdapterCache
    from likeness.generation.engines.base import BatchKey, ImageItem
    from likeness.generation.engines.onnx_engine import OnnxEngine
    from likeness.generation.models import LoadedModel

    spec = generator.manager.repo.spec("sdxl-shaped")
    engine = OnnxEngine(settings)
    engine.dtype = dtype
    with PeakRss() as mem:
        model = LoadedModel("sdxl-shaped", spec, engine.load_model(folder, spec), 0, AdapterCache(1))
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
    rows.append(("UNet weights: int8 weight-only vs unquantised",
                 f"{after / 2**30:.2f} GiB vs {before / 2**30:.2f} GiB", after / before))
    rows.append((f"1 image ({steps} steps): int8 UNet vs unquantised", f"{q:.2f} s vs {p:.2f} s", q / p))

