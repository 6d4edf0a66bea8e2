"""Round trip through our server runtime (interceptor, metrics, JSON logging, health, reflection)
vs a bare grpcio asyncio server with the same servicer, and the same runtime with tracing on
(OpenTelemetry, sampling ratio 1.0, every span exported over OTLP/gRPC to a receiver process),
all measured side by side in one run.

    python bench/runtime.py [--quick]

Calls: an empty unary call (ListModels) and a call carrying a 1 MB image (Detect with inline bytes;
the servicer only counts bytes) on three servers (the empty call also on two with sampling ratio 0:
spans not recorded, and recorded for the keep-failed-and-slow rules); and a real `Detect` (the embedded detection
service: BlazeFace + pose on a 512x512 photo, result cache off) with tracing off and on. After warm-up
calls, each call kind runs in rounds (--rounds, 5): within a round the servers take turns call by call, so
load and drift hit all of them alike; a ratio is the median of the rounds' ratios of median calls. What tracing costs when it is off
(one call per RPC that returns at once) is timed on its own before tracing is configured.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import grpc

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "services"))

from machine import Machine  # noqa: E402

from likeness.api.v1 import common_pb2, detection_pb2, detection_pb2_grpc, generation_pb2, generation_pb2_grpc  # noqa: E402
from likeness.core.logging import configure  # noqa: E402
from likeness.core.server import Service, ServiceRuntime  # noqa: E402
from likeness.core.settings import CommonSettings  # noqa: E402


class EchoGeneration(generation_pb2_grpc.GenerationServiceServicer):
    async def ListModels(self, request, context):
        return generation_pb2.ListModelsResponse()


class CountingDetection(detection_pb2_grpc.DetectionServiceServicer):
    async def Detect(self, request, context):
        return detection_pb2.DetectResponse(backend=str(sum(len(i.data) for i in request.images)))


def servicers():
    return [(generation_pb2_grpc.add_GenerationServiceServicer_to_server, EchoGeneration()),
            (detection_pb2_grpc.add_DetectionServiceServicer_to_server, CountingDetection())]


class Loop:
    def __init__(self):
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()

    def run(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()


async def start_bare(settings: CommonSettings):
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", settings.max_message_bytes)])
    for add, servicer in servicers():
        add(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, port


async def start_ours(settings: CommonSettings):
    names = [generation_pb2.DESCRIPTOR.services_by_name["GenerationService"].full_name,
             detection_pb2.DESCRIPTOR.services_by_name["DetectionService"].full_name]
    runtime = ServiceRuntime(Service("bench", servicers(), names), settings, drain_seconds=0)
    port = await runtime.start()
    await runtime.warm()
    return runtime, port


async def start_sampled_out(settings: CommonSettings, keep_rules: bool, endpoint: str):
    """Our runtime with server spans from a provider of its own at sampling ratio 0: spans are not
    recorded, or (with the keep rules for failed and slow calls) recorded and then dropped."""
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    from likeness.core.tracing_grpc import ServerSpanInterceptor
    from likeness.core.tracing_sampling import KeepSlowAndFailed, sampler_for

    provider = TracerProvider(sampler=sampler_for(0.0, record_unsampled=keep_rules))
    batch = BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint, insecure=True))
    provider.add_span_processor(KeepSlowAndFailed(batch, True, 5.0) if keep_rules else batch)
    names = [generation_pb2.DESCRIPTOR.services_by_name["GenerationService"].full_name]
    runtime = ServiceRuntime(Service("bench", servicers(), names), settings, drain_seconds=0,
                             interceptors=[ServerSpanInterceptor(provider.get_tracer("bench"))])
    port = await runtime.start()
    await runtime.warm()
    return runtime, port


async def start_detection(settings):
    from likeness.detection.app import create_service

    runtime = ServiceRuntime(create_service(settings), settings, drain_seconds=0)
    port = await runtime.start()
    await runtime.warm()
    return runtime, port


def start_receiver() -> tuple[subprocess.Popen, int]:
    """The OTLP/gRPC receiver of tests/tracing in its own process (a collector is never in-process)."""
    proc = subprocess.Popen([sys.executable, "-m", "tests.tracing.otlp_receiver"], cwd=ROOT, stdout=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONPATH": f"{ROOT / 'services'}:{ROOT}"})
    return proc, int(proc.stdout.readline())


def off_cost_us(reps: int = 200_000) -> float:
    """Microseconds per call of what every RPC runs when tracing is off (the exemplar look-up)."""
    from likeness.core import tracing

    assert not tracing.enabled()
    t = time.perf_counter()
    for _ in range(reps):
        tracing.exemplar(False, 0.001)
    return (time.perf_counter() - t) / reps * 1e6


def photo_png() -> bytes:
    import io

    import numpy as np
    from PIL import Image
    from skimage import data

    pixels = np.ascontiguousarray(data.astronaut()[:, :, :3])
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


def timed_rounds(calls: dict[str, dict[str, object]], counts: dict[str, int],
                 rounds: int) -> dict[str, dict[str, list[list[float]]]]:
    """calls[call][server] -> fn; each call kind `counts[call]` calls per server in `rounds` rounds; within a
    round the servers take turns call by call (the first server changes every call), so load and drift hit
    every server alike. Returns the seconds of every call, per round."""
    results = {call: {name: [[] for _ in range(rounds)] for name in fns} for call, fns in calls.items()}
    for call, fns in calls.items():
        names = list(fns)
        for r in range(rounds):
            for i in range(counts[call] // rounds):
                k = i % len(names)
                for name in names[k:] + names[:k]:
                    t = time.perf_counter()
                    fns[name]()
                    results[call][name][r].append(time.perf_counter() - t)
    return results


def round_ratios(by_server: dict[str, list[list[float]]], name: str, base: str) -> list[float]:
    """Per round, the median call of `name` over the median call of `base` (calls of one round ran interleaved)."""
    return [statistics.median(a) / statistics.median(b) for a, b in zip(by_server[name], by_server[base], strict=True)]


def ratio_line(figures: dict, call: str, name: str, base: str, by_server, what: str) -> None:
    ratios = round_ratios(by_server, name, base)
    ratio = statistics.median(ratios)
    figures[f"{call}_{name}_vs_{base}"] = round(ratio, 3)
    figures[f"{call}_{name}_vs_{base}_rounds"] = [round(x, 3) for x in ratios]
    print(f"{call:<8}{'ratio':<8}{ratio:>11.3f}   ({what}; median of {len(ratios)} rounds, "
          f"{min(ratios):.3f}-{max(ratios):.3f})")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rounds", type=int, default=5, help="rounds per call kind; ratios are their median")
    args = parser.parse_args()
    machine = Machine()
    counts = {"empty": 2000, "1mb": 300, "detect": 60} if args.quick else {"empty": 10000, "1mb": 1500, "detect": 400}
    # Logs go where a pod's logs go (stdout) in production; here to /dev/null so the table stays readable,
    # but the JSON formatting work is still done for every call.
    configure("bench", os.environ.get("BENCH_LOG_LEVEL", "INFO"))
    logging.getLogger().handlers[0].stream = open(os.devnull, "w")
    off_us = off_cost_us()
    receiver, receiver_port = start_receiver()
    from likeness.detection.settings import DetectionSettings

    common = {"port": 0, "metrics_port": 0, "host": "127.0.0.1"}
    tracing_on = {"tracing_enabled": True, "tracing_sample_ratio": 1.0,
                  "tracing_endpoint": f"http://127.0.0.1:{receiver_port}"}
    store = tempfile.mkdtemp(prefix="bench-runtime-")
    detection = {**common, "store_uri": f"file://{store}", "detection_result_cache": 0}
    loop = Loop()
    servers = {"bare": loop.run(start_bare(CommonSettings(**common))),
               "ours": loop.run(start_ours(CommonSettings(**common))),
               "traced": loop.run(start_ours(CommonSettings(**common, **tracing_on))),
               "r0": loop.run(start_sampled_out(CommonSettings(**common), False, tracing_on["tracing_endpoint"])),
               "r0_keep": loop.run(start_sampled_out(CommonSettings(**common), True, tracing_on["tracing_endpoint"])),
               "det_ours": loop.run(start_detection(DetectionSettings(**detection))),
               "det_traced": loop.run(start_detection(DetectionSettings(**detection, **tracing_on)))}
    opts = [("grpc.max_send_message_length", 64 << 20)]
    channels = {name: grpc.insecure_channel(f"127.0.0.1:{port}", options=opts) for name, (_, port) in servers.items()}
    gen = {name: generation_pb2_grpc.GenerationServiceStub(ch) for name, ch in channels.items()}
    det = {name: detection_pb2_grpc.DetectionServiceStub(ch) for name, ch in channels.items()}
    empty_req = generation_pb2.ListModelsRequest()
    big_req = detection_pb2.DetectRequest(images=[common_pb2.ImageInput(data=os.urandom(1 << 20))])
    photo_req = detection_pb2.DetectRequest(images=[common_pb2.ImageInput(data=photo_png())])
    for name in ("bare", "ours", "traced", "r0", "r0_keep"):  # warm every connection
        gen[name].ListModels(empty_req)
    for name in ("det_ours", "det_traced"):
        assert det[name].Detect(photo_req).results[0].faces, "the bench photo must have a face"
    calls = {
        "empty": {n: (lambda n=n: gen[n].ListModels(empty_req)) for n in ("bare", "ours", "traced", "r0", "r0_keep")},
        "1mb": {n: (lambda n=n: det[n].Detect(big_req)) for n in ("bare", "ours", "traced")},
        "detect": {n: (lambda n=n: det["det_" + n].Detect(photo_req)) for n in ("ours", "traced")},
    }
    warm = {"empty": 200, "1mb": 20, "detect": 5}
    for call, fns in calls.items():  # first calls build per-method state (wrapped handlers, metric children)
        for fn in fns.values():
            for _ in range(warm[call]):
                fn()
    results = timed_rounds(calls, counts, args.rounds)
    figures = {"tracing_off_cost_us_per_call": round(off_us, 3), "rounds": args.rounds}
    print(f"{'call':<8}{'server':<8}{'median ms':>11}{'p95 ms':>9}{'calls/s':>9}")
    for call, by_server in results.items():
        for name, per_round in by_server.items():
            xs = sorted(x for r in per_round for x in r)
            med, p95 = statistics.median(xs), xs[int(0.95 * (len(xs) - 1))]
            figures[f"{call}_{name}_median_ms"] = round(med * 1000, 4)
            figures[f"{call}_{name}_p95_ms"] = round(p95 * 1000, 4)
            print(f"{call:<8}{name:<8}{med * 1000:>11.3f}{p95 * 1000:>9.3f}{1 / med:>9.0f}")
        if "bare" in by_server:
            ratio_line(figures, call, "ours", "bare", by_server, "ours / bare, target <= 1.10")
        target = {"empty": "<= 1.10", "detect": "<= 1.03"}.get(call, "no target")
        ratio_line(figures, call, "traced", "ours", by_server, f"tracing on, ratio 1.0 / tracing off, target {target}")
        for name, what in (("r0", "ratio 0"), ("r0_keep", "ratio 0 + keep failed/slow")):
            if name in by_server:
                ratio_line(figures, call, name, "ours", by_server, f"tracing on, {what}, nothing exported / tracing off")
    empty_ms = figures["empty_ours_median_ms"]
    print(f"tracing off: {off_us:.3f} us per call, {off_us / (empty_ms * 1000):.2%} of an empty call")
    for ch in channels.values():
        ch.close()
    for runtime, _ in servers.values():
        loop.run(runtime.stop(0))
    receiver.terminate()
    exported = int(receiver.communicate(timeout=30)[0].split()[-1])
    figures["spans_exported"] = exported
    print(f"spans received by the OTLP receiver: {exported}")
    print(json.dumps({"bench": "runtime", "quick": args.quick, **figures, "machine": machine.done()}))


if __name__ == "__main__":
    main()
