"""Generation benchmark on tiny-sdxl (random weights; its images are noise).

Measures side by side in one run:
  1. 4 concurrent requests with dynamic batching vs the same 4 one after another (throughput);
  2. ONNX Runtime vs torch, seconds per denoising step (batch 1 and batch 4, CFG on);
  3. Generate over gRPC (loopback) vs the same call in-process (service overhead).
CPU only: SDXL latency at 1024x1024 needs a GPU to measure; these ratios describe the mechanics.
`--sdxl-shaped` measures the full-size SDXL architecture instead (bench/sdxl_shaped.py), with the
per-step cost of one ControlNet vs none on tiny-sdxl and on sdxl-shaped side by side.

    .venv/bin/python bench/generation.py [--quick]
    .venv/bin/python bench/generation.py --sdxl-shaped [--side 512] [--steps 2] [--rounds 3]
        [--controlnet-rounds 3] [--int8]
"""

from __future__ import annotations

import argparse
import asyncio
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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="fewer rounds, smaller images (< 30 s)")
    ap.add_argument("--threads", type=int, default=1, help="CPU threads for torch/onnxruntime (default 1)")
    ap.add_argument("--sdxl-shaped", action="store_true",
                    help="full-size SDXL architecture, random weights, 512x512 (bench/sdxl_shaped.py)")
    ap.add_argument("--dtype", choices=("bf16", "fp16", "fp32"), default="bf16", help="sdxl-shaped weights")
    ap.add_argument("--side", type=int, default=512, help="sdxl-shaped image side in pixels")
    ap.add_argument("--steps", type=int, default=2,
                    help="sdxl-shaped denoising steps per image (>= 2: a step is timed end to end)")
    ap.add_argument("--rounds", type=int, default=3, help="sdxl-shaped rounds of service vs bare diffusers")
    ap.add_argument("--controlnet-rounds", type=int, default=3,
                    help="sdxl-shaped: interleaved rounds of one ControlNet vs none (0: leave the ControlNet out)")
    ap.add_argument("--int8", action="store_true", help="sdxl-shaped: also the weight-only int8 UNet")
    ap.add_argument("--models", default="/tmp/likeness-sdxl-shaped",
                    help="sdxl-shaped: folder of its model repository (the ~7 GB build is kept for reruns)")
    args = ap.parse_args()
    if args.sdxl_shaped:
        from bench.sdxl_shaped import run

        run(args)
        return
    from bench.machine import Machine
    from bench.timing import MIN_REPS, print_spreads

    machine = Machine()
    rounds, side, steps = (MIN_REPS, 64, 4) if args.quick else (5, 128, 8)

    import grpc

    from likeness.api.v1 import generation_pb2, generation_pb2_grpc
    from likeness.diffusion.tiny_sdxl import ensure_tiny_model
    from likeness.generation.app import create_service
    from likeness.generation.engines.base import BatchKey, ImageItem
    from likeness.generation.engines.onnx_engine import OnnxEngine
    from likeness.generation.engines.torch_engine import TorchEngine
    from likeness.generation.request import GenerationRequest
    from likeness.generation.settings import GenerationSettings
    from tests.helpers import ServiceThread

    tmp = Path(tempfile.mkdtemp(prefix="bench-generation-"))
    settings = GenerationSettings(
        store_uri=f"file://{tmp}/store", model_repository=str(tmp / "models"), model_cache_dir=str(tmp / "cache"),
        metrics_enabled=False, port=0, generation_keep_warm="tiny-sdxl", generation_build_tiny_models=False,
        generation_max_batch=4, generation_max_wait_ms=100, generation_cpu_threads=args.threads,
        generation_engine_cache_dir=str(tmp / "engines"))
    service = create_service(settings)
    generator = service.servicers[0][1]._generator
    ensure_tiny_model(generator.manager.repo, "tiny-sdxl")

    def request(seed: int) -> GenerationRequest:
        return GenerationRequest(model="tiny-sdxl", prompt=f"portrait {seed}", seed=seed, steps=steps, width=side,
                                 height=side, output_prefix=f"bench/{uuid.uuid4().hex}/")

    rows, figures = [], {"side": side, "steps": steps, "threads": args.threads, "rounds": rounds}
    times: dict[str, list[float]] = {}  # every variant's rounds, for the spreads

    with ServiceThread(service, settings) as thread:
        # 1. batching: 4 concurrent vs 4 sequential, interleaved rounds
        async def concurrent():
            return await asyncio.gather(*(generator.generate(request(s)) for s in range(4)))

        async def sequential():
            return [await generator.generate(request(s)) for s in range(4)]

        thread.call(concurrent())  # warm both paths once
        conc, seq, seq0, sizes = [], [], [], []
        max_wait = generator.batcher.max_wait
        for _ in range(rounds):
            t = time.perf_counter()
            results = thread.call(concurrent())
            conc.append(time.perf_counter() - t)
            sizes.append(max(r.timings["batch_size"] for r in results))
            t = time.perf_counter()
            thread.call(sequential())  # each lone request also waits max_wait for batch-mates
            seq.append(time.perf_counter() - t)
            generator.batcher.max_wait = 0.0  # the same without that wait: compute only
            t = time.perf_counter()
            thread.call(sequential())
            seq0.append(time.perf_counter() - t)
            generator.batcher.max_wait = max_wait
        times.update(concurrent=conc, sequential=seq, sequential_no_wait=seq0)
        c, s, s0 = statistics.median(conc), statistics.median(seq), statistics.median(seq0)
        rows.append((f"4 requests: concurrent (batched) vs sequential, max_wait {max_wait * 1000:.0f} ms",
                     f"{c:.3f} s vs {s:.3f} s", s / c))
        rows.append(("4 requests: concurrent (batched) vs sequential, max_wait 0", f"{c:.3f} s vs {s0:.3f} s", s0 / c))
        figures.update(batched_seconds=c, sequential_seconds=s, sequential_nowait_seconds=s0,
                       batching_speedup=s / c, batching_speedup_nowait=s0 / c, observed_batch=max(sizes))

        # 3. service vs in-process (one request each, interleaved)
        channel = grpc.insecure_channel(thread.address)
        stub = generation_pb2_grpc.GenerationServiceStub(channel)
        generator.batcher.max_wait = 0.0  # a lone request: measure the call, not the batching wait
        via_grpc, direct = [], []
        for i in range(rounds * 3):
            r = request(1000 + i)
            pb = generation_pb2.GenerateRequest(model=r.model, prompt=r.prompt, seed=r.seed, steps=steps, width=side,
                                                height=side, output_prefix=r.output_prefix)
            t = time.perf_counter()
            stub.Generate(pb)
            via_grpc.append(time.perf_counter() - t)
            t = time.perf_counter()
            thread.call(generator.generate(request(2000 + i)))
            direct.append(time.perf_counter() - t)
        times.update(grpc=via_grpc, in_process=direct)
        g, d = statistics.median(via_grpc), statistics.median(direct)
        rows.append(("1 request: over gRPC vs in-process", f"{g:.3f} s vs {d:.3f} s", g / d))
        figures.update(grpc_seconds=g, inprocess_seconds=d, grpc_overhead_ratio=g / d)
        generator.batcher.max_wait = max_wait
        channel.close()

    # 2. ONNX Runtime vs torch per denoising step
    repo = generator.manager.repo
    spec, folder = repo.spec("tiny-sdxl"), repo.fetch("tiny-sdxl")
    from likeness.generation.adapters import AdapterCache
    from likeness.generation.models import LoadedModel

    engines = {}
    for cls in (TorchEngine, OnnxEngine):
        engine = cls(settings)
        engines[cls.name] = (engine, LoadedModel("tiny-sdxl", spec, engine.load_model(folder, spec), 0,
                                                 AdapterCache(1)))
    for batch in (1, 4):
        per_step = {name: [] for name in engines}
        key = BatchKey("tiny-sdxl", "text-to-image", side, side, steps, "default", 5.0, None, "", 0.2, (), None)
        for _ in range(rounds + 1):
            for name, (engine, model) in engines.items():
                items = [ImageItem(seed=i, prompt="a", negative_prompt="") for i in range(batch)]
                per_step[name].append(engine.run(model, None, key, items, {})[0].timings["denoising"] / steps)
        times.update({f"{name}_step_b{batch}": v[1:] for name, v in per_step.items()})
        t, o = statistics.median(per_step["torch"][1:]), statistics.median(per_step["onnxruntime"][1:])
        rows.append((f"denoising step, batch {batch}: torch vs onnxruntime", f"{t * 1000:.1f} ms vs {o * 1000:.1f} ms",
                     t / o))
        figures[f"torch_step_ms_b{batch}"] = t * 1000
        figures[f"onnx_step_ms_b{batch}"] = o * 1000
        figures[f"onnx_speedup_b{batch}"] = t / o

    print(f"\ntiny-sdxl {side}x{side}, {steps} steps, CFG 5, {args.threads} CPU thread(s), medians of {rounds} rounds")
    print("(random weights: images are noise; SDXL at 1024x1024 needs a GPU to measure)\n")
    width = max(len(r[0]) for r in rows)
    print(f"{'what':<{width}}  {'measured':<26} ratio")
    for what, measured, ratio in rows:
        print(f"{what:<{width}}  {measured:<26} {ratio:.2f}")
    figures["spreads"] = print_spreads(times)
    print(json.dumps({**{k: round(v, 4) if isinstance(v, float) else v for k, v in figures.items()},
                      "machine": machine.done()}))


if __name__ == "__main__":
    main()
