"""Scale-out: 1 vs 2 replicas of detection and of generation (tiny-sdxl) behind one DNS name.

    .venv/bin/python bench/scaling.py [--quick]

Each replica is a real `likeness serve` process pinned to its own core (`taskset`), bound to its
own loopback address (127.0.0.1, 127.0.0.2) on one port. A DNS server on loopback answers the
service's name with one A record per replica, as a cluster's DNS answers a headless Service, and
callers use the channel every Likeness client uses (`core.channels`: round_robin + retries).
For a fixed concurrent load it reports throughput, p95 and each replica's share of the calls
(from the replicas' own metrics), for 1 and 2 replicas, 3 interleaved repetitions, median and
spread. Then, with 2 replicas under load, one is SIGKILLed: lost calls (target 0) and how long
until the survivor serves every call.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "services")]

from machine import Machine  # noqa: E402

NAME = "likeness-{}-headless.likeness.svc.cluster.local"
# Concurrent callers, the same for 1 and 2 replicas. Generation batches up to 4 requests in a 50 ms
# window (its defaults): 8 callers fill both replicas' batches, where 4 would leave two replicas
# waiting out the window for half-full batches and measure the window, not the replicas.
CALLERS = {"detection": 4, "generation": 8}


class PinnedReplica:
    """`likeness serve NAME` on core `core`, bound to 127.0.0.<core + 1>."""

    def __init__(self, name: str, core: int, port: int, env: dict, log: Path):
        from tests.helpers import ServiceProcess

        self.core = core
        self.process = ServiceProcess(name, env, port, log, host=f"127.0.0.{core + 1}")
        subprocess.run(["taskset", "-a", "-p", "-c", str(core), str(self.process.proc.pid)], check=True,
                       capture_output=True)

    @property
    def host(self) -> str:
        return self.process.host

    def served(self, method: str) -> int:
        from tests.helpers import served_calls

        return served_calls(self.process, method)


def make_call(service: str, stub_channel):
    import numpy as np
    from PIL import Image

    from likeness.api.v1 import (
        common_pb2,
        detection_pb2,
        detection_pb2_grpc,
        generation_pb2,
        generation_pb2_grpc,
    )
    from likeness.core.images import encode_png
    from tests.photos import skimage_photo

    if service == "detection":
        stub = detection_pb2_grpc.DetectionServiceStub(stub_channel)
        image = encode_png(np.asarray(Image.fromarray(skimage_photo("astronaut")).resize((256, 256))))
        request = detection_pb2.DetectRequest(images=[common_pb2.ImageInput(data=image)])
        return "Detect", lambda seed: stub.Detect(request, timeout=60)
    stub = generation_pb2_grpc.GenerationServiceStub(stub_channel)
    # 128 px x 4 steps: at 64 px x 2 steps a call's model work was about what the callers themselves
    # spend per call on the same two cores, so the bench measured its own client
    return "Generate", lambda seed: stub.Generate(generation_pb2.GenerateRequest(
        model="tiny-sdxl", prompt="portrait photo", seed=seed, steps=4, width=128, height=128,
        output_prefix="bench-scaling/"), timeout=120)


def load(call, seconds: float, callers: int, on_tick=None) -> dict:
    """`callers` concurrent callers for `seconds`; latencies, completions over time and failures."""
    latencies, done_at, failures = [], [], []
    lock, seeds = threading.Lock(), iter(range(10**9))
    t0 = time.monotonic()
    stop = t0 + seconds

    def caller():
        while time.monotonic() < stop:
            with lock:
                seed = next(seeds)
            start = time.monotonic()
            try:
                call(seed)
            except Exception as exc:  # noqa: BLE001 - a failed call is a lost call
                failures.append(repr(exc)[:200])
                continue
            with lock:
                latencies.append(time.monotonic() - start)
                done_at.append(time.monotonic() - t0)

    threads = [threading.Thread(target=caller) for _ in range(callers)]
    for t in threads:
        t.start()
    if on_tick:
        on_tick(t0)
    for t in threads:
        t.join()
    latencies.sort()
    return {"calls": len(latencies), "throughput": len(latencies) / seconds, "failures": failures,
            "p95": latencies[int(0.95 * (len(latencies) - 1))] if latencies else float("nan"), "done_at": done_at}


def one_run(service: str, dns, port: int, replicas: list[PinnedReplica], n: int, seconds: float) -> dict:
    from likeness.core import channels

    dns.set(NAME.format(service), [r.host for r in replicas[:n]])
    with channels.sync_channel(dns.target(NAME.format(service), port)) as channel:
        method, call = make_call(service, channel)
        call(0)  # connect to every replica in the answer
        before = [r.served(method) for r in replicas[:n]]
        result = load(call, seconds, CALLERS[service])
        served = [r.served(method) - b for r, b in zip(replicas[:n], before, strict=True)]
    result["shares"] = [s / max(sum(served), 1) for s in served]
    return result


def kill_run(service: str, dns, port: int, replicas: list[PinnedReplica], seconds: float) -> dict:
    """2 replicas under load; replica 2 is SIGKILLed halfway; lost calls and time to full takeover."""
    from likeness.core import channels

    dns.set(NAME.format(service), [r.host for r in replicas])
    samples: list[tuple[float, int]] = []
    with channels.sync_channel(dns.target(NAME.format(service), port)) as channel:
        method, call = make_call(service, channel)
        call(0)
        survivor, victim = replicas
        killed_at = [0.0]

        def on_tick(t0):
            while time.monotonic() - t0 < seconds:
                samples.append((time.monotonic() - t0, survivor.served(method)))
                if not killed_at[0] and time.monotonic() - t0 >= seconds / 2:
                    victim.process.kill()  # SIGKILL: no drain, calls in flight are cut
                    dns.set(NAME.format(service), [survivor.host])  # the endpoint leaves the Service
                    killed_at[0] = time.monotonic() - t0
                time.sleep(0.1)

        result = load(call, seconds, CALLERS[service], on_tick)
    # takeover: from the kill, the first moment after which the survivor's count grows by exactly
    # the calls the client completes (every call lands on it)
    done = result["done_at"]
    takeover = float("nan")
    for i, (t, _) in enumerate(samples):
        if t < killed_at[0]:
            continue
        rest = samples[i:]
        client = [sum(1 for d in done if d <= s[0]) for s in rest]
        steps = zip(client, client[1:], rest, rest[1:], strict=False)
        if all(c2 - c1 == s2[1] - s1[1] for (c1, c2, s1, s2) in steps):
            takeover = t - killed_at[0]
            break
    return {"lost": len(result["failures"]), "calls": result["calls"], "takeover_seconds": takeover,
            "errors": result["failures"][:3]}


def bench_service(service: str, tmp: Path, seconds: float, reps: int) -> dict:
    from tests.cluster_dns import ClusterDns
    from tests.helpers import free_port, model_env

    env = model_env(tmp, LIKENESS_DRAIN_SECONDS="0", OMP_NUM_THREADS="1", LIKENESS_GENERATION_CPU_THREADS="1",
                    LIKENESS_DETECTION_RESULT_CACHE="0", LIKENESS_MAX_CONNECTION_AGE_SECONDS="30")
    port = free_port()
    replicas = [PinnedReplica(service, core, port, env, tmp / f"{service}-{core}.log") for core in (0, 1)]
    try:
        for r in replicas:
            r.process.wait_serving(300)
        runs: dict[int, list[dict]] = {1: [], 2: []}
        with ClusterDns() as dns:
            one_run(service, dns, port, replicas, 2, min(seconds, 3))  # warm both replicas
            for _ in range(reps):
                for n in (1, 2):
                    runs[n].append(one_run(service, dns, port, replicas, n, seconds))
            killed = kill_run(service, dns, port, replicas, seconds)
    finally:
        for r in replicas:
            if r.process.proc.poll() is None:
                r.process.stop()
    tput = {n: [r["throughput"] for r in rs] for n, rs in runs.items()}
    med = {n: statistics.median(v) for n, v in tput.items()}
    shares = [statistics.median(r["shares"][i] for r in runs[2]) for i in (0, 1)]
    return {
        "throughput_1": round(med[1], 3), "throughput_2": round(med[2], 3), "speedup": round(med[2] / med[1], 3),
        "spread_1": round(max(tput[1]) / min(tput[1]), 3), "spread_2": round(max(tput[2]) / min(tput[2]), 3),
        "p95_1": round(statistics.median(r["p95"] for r in runs[1]), 4),
        "p95_2": round(statistics.median(r["p95"] for r in runs[2]), 4),
        "shares_2": [round(s, 3) for s in shares],
        "failures": sum(len(r["failures"]) for rs in runs.values() for r in rs),
        "kill_lost": killed["lost"], "kill_takeover_seconds": round(killed["takeover_seconds"], 2),
        "kill_errors": killed["errors"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="3 s per run, detection only (< 60 s)")
    args = ap.parse_args()
    machine = Machine()
    seconds = 3.0 if args.quick else 10.0
    services = ("detection",) if args.quick else ("detection", "generation")
    figures: dict = {"callers": {s: CALLERS[s] for s in services}, "seconds_per_run": seconds, "repetitions": 3}
    with tempfile.TemporaryDirectory(prefix="bench-scaling-") as tmp:
        for service in services:
            f = bench_service(service, Path(tmp), seconds, 3)
            figures[service] = f
    print(f"\n## {seconds:.0f} s per run, median of 3 interleaved runs")
    print(f"{'service':>11}{'callers':>8}{'1 rep/s':>9}{'2 rep/s':>9}{'speed-up':>10}{'spread 1/2':>12}"
          f"{'p95 1/2 s':>14}{'shares':>14}{'lost':>6}{'takeover s':>12}")
    for service in services:
        f = figures[service]
        print(f"{service:>11}{CALLERS[service]:>8}{f['throughput_1']:>9.2f}{f['throughput_2']:>9.2f}{f['speedup']:>10.2f}"
              f"{f['spread_1']:>6.2f}/{f['spread_2']:<5.2f}{f['p95_1']:>7.3f}/{f['p95_2']:<6.3f}"
              f"{f['shares_2'][0]:>7.2f}/{f['shares_2'][1]:<6.2f}{f['kill_lost'] + f['failures']:>6}"
              f"{f['kill_takeover_seconds']:>12.2f}")
    figures["machine"] = machine.done()
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
