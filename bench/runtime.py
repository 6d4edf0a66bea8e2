"""Round trip through our server runtime (interceptor, metrics, JSON logging, health, reflection)
vs a bare grpcio asyncio server with the same servicer, measured side by side in one run.

    python bench/runtime.py [--quick]

Calls: an empty unary call (ListModels) and a call carrying a 1 MB image (Detect with inline bytes;
the servicer only counts bytes). Calls alternate between the two servers so drift hits both.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import statistics
import sys
import threading
import time
from pathlib import Path

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "services"))

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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    n_empty, n_big = (2000, 300) if args.quick else (10000, 1500)
    # Logs go where a pod's logs go (stdout) in production; here to /dev/null so the table stays readable,
    # but the JSON formatting work is still done for every call.
    configure("bench", os.environ.get("BENCH_LOG_LEVEL", "INFO"))
    logging.getLogger().handlers[0].stream = open(os.devnull, "w")
    settings = CommonSettings(port=0, metrics_port=0, host="127.0.0.1")
    loop = Loop()
    bare, bare_port = loop.run(start_bare(settings))
    ours, ours_port = loop.run(start_ours(settings))
    payload = os.urandom(1 << 20)
    big_req = detection_pb2.DetectRequest(images=[common_pb2.ImageInput(data=payload)])
    results = {"bare": {"empty": [], "1mb": []}, "ours": {"empty": [], "1mb": []}}
    opts = [("grpc.max_send_message_length", 64 << 20)]
    channels = {name: grpc.insecure_channel(f"127.0.0.1:{port}", options=opts)
                for name, port in (("bare", bare_port), ("ours", ours_port))}
    for ch in channels.values():  # warm both connections
        generation_pb2_grpc.GenerationServiceStub(ch).ListModels(generation_pb2.ListModelsRequest())
    stubs = {name: (generation_pb2_grpc.GenerationServiceStub(ch), detection_pb2_grpc.DetectionServiceStub(ch))
             for name, ch in channels.items()}
    empty_req = generation_pb2.ListModelsRequest()
    # Calls alternate one by one (order flipped every call), so load from other processes on this
    # shared machine hits both servers alike.
    for i in range(n_empty + n_big):
        call = "empty" if i < n_empty else "1mb"
        for name in (("bare", "ours") if i % 2 else ("ours", "bare")):
            gen, det = stubs[name]
            t = time.perf_counter()
            if call == "empty":
                gen.ListModels(empty_req)
            else:
                det.Detect(big_req)
            results[name][call].append(time.perf_counter() - t)
    figures = {}
    print(f"{'call':<8}{'server':<8}{'median ms':>11}{'p95 ms':>9}{'calls/s':>9}")
    for call in ("empty", "1mb"):
        for name in ("bare", "ours"):
            xs = sorted(results[name][call])
            med, p95 = statistics.median(xs), xs[int(0.95 * (len(xs) - 1))]
            figures[f"{call}_{name}_median_ms"] = round(med * 1000, 4)
            figures[f"{call}_{name}_p95_ms"] = round(p95 * 1000, 4)
            print(f"{call:<8}{name:<8}{med * 1000:>11.3f}{p95 * 1000:>9.3f}{1 / med:>9.0f}")
        ratio = figures[f"{call}_ours_median_ms"] / figures[f"{call}_bare_median_ms"]
        figures[f"{call}_ratio"] = round(ratio, 3)
        print(f"{call:<8}{'ratio':<8}{ratio:>11.3f}   (ours / bare, target <= 1.10)")
    for ch in channels.values():
        ch.close()
    loop.run(bare.stop(0))
    loop.run(ours.stop(0))
    print(json.dumps({"bench": "runtime", "quick": args.quick, **figures}))


if __name__ == "__main__":
    main()
