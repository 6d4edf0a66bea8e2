"""Scale-out: 1 vs 2 replicas of detection and of generation (tiny-sdxl) behind one DNS name.

    PYTHONPATH=services:. .venv/bin/python bench/scaling.py [--quick] [--service NAME] [--seconds S] [--reps N]

Each replica is a real `likeness serve` process pinned to its own core (`taskset`), bound to its
own loopback address (127.0.0.1, 127.0.0.2) on one port. A DNS server on loopback answers the
service's name with one A record per replica, as a cluster's DNS answers a headless Service, and
callers use the channel every Likeness client uses (`core.channels`: round_robin + retries).
For a fixed concurrent load it reports throughput, p95 and each replica's share of the calls
(from the replicas' own metrics), for 1 and 2 replicas, 3 interleaved repetitions, median and
spread. Then, with 2 replicas under load, one is SIGKILLed: lost calls (target 0) and the takeover,
the time until every call the callers have outstanding is on the survivor (the cut calls re-sent
there; its share is then 100%), against the retry policy's bound (the sum of its backoff ceilings).
A full run takes about 4 minutes.

Wall-clock throughput on a shared machine measures the scheduler as much as the replicas, so each
run also splits CPU by process (each replica, the callers, the DNS server, everyone else) and
reports per replica: CPU ms per call, images per pipeline call, how long its model worker had no
work, and how long it held a partial batch for batch-mates. The speed-up is then the product of two
factors printed apart: the cores the replicas got (2 vs 1; the machine's) and the replicas' CPU per
call (1 vs 2; their own efficiency, which holds up under load).
"""

from __future__ import annotations

import argparse
import itertools
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

import profiling  # noqa: E402
from machine import Machine  # noqa: E402

NAME = "likeness-{}-headless.likeness.svc.cluster.local"
# Concurrent callers, the same for 1 and 2 replicas: enough to keep 2 replicas saturated. Generation
# batches up to 4 requests (its default max_batch), and an image costs less in a full batch (per-batch
# work: text encoders, VAE set-up, Python dispatch). 24 callers keep three batches' worth of calls at
# each of 2 replicas (one running, one queued, one on its way back through the callers); with 8,
# each replica ran half-full batches whose images cost more, so the ratio measured batch fill.
CALLERS = {"detection": 4, "generation": 24}
# Every call of the whole bench gets its own seed: generation stores each finished image under a work id
# made from its inputs, and a call whose image is already in the store is answered from it (no model
# work). Seeds that restarted at 0 in each run made every run after the first mostly cached calls.
SEEDS = itertools.count(1)
# Seconds per run: a generation call is ~8x a detection call, so its runs are longer for as many batches.
SECONDS = {"detection": 10.0, "generation": 15.0}


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

    def intake(self, method: str) -> tuple[int, int]:
        """(calls of `method` answered, calls being served now) by this replica, from one scrape of its
        /metrics. A call queued for the model worker is in flight: its handler already runs."""
        import urllib.request

        from prometheus_client.parser import text_string_to_metric_families

        url = f"http://{self.host}:{self.process.metrics_port}/metrics"
        text = urllib.request.urlopen(url, timeout=5).read().decode()
        answered = in_flight = 0.0
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.labels.get("method") == method:
                    if sample.name == "likeness_rpc_duration_seconds_count":
                        answered += sample.value
                    elif sample.name == "likeness_rpc_in_flight":
                        in_flight += sample.value
        return int(answered), int(in_flight)

    def batches(self) -> tuple[float, float, float, float]:
        """(pipeline calls, images in them, seconds the worker stood free while requests waited for
        batch-mates, images answered from the store) so far, from this replica's /metrics (generation)."""
        import urllib.request

        from prometheus_client.parser import text_string_to_metric_families

        url = f"http://{self.host}:{self.process.metrics_port}/metrics"
        text = urllib.request.urlopen(url, timeout=5).read().decode()
        families = {f.name: f.samples for f in text_string_to_metric_families(text)}
        sizes, hold = families.get("likeness_batch_size", []), families.get("likeness_batch_hold_seconds", [])
        items = families.get("likeness_items", [])
        return (sum(s.value for s in sizes if s.name.endswith("_count")),
                sum(s.value for s in sizes if s.name.endswith("_sum")),
                sum(s.value for s in hold if s.name.endswith("_total")),
                sum(s.value for s in items if s.name.endswith("_total") and s.labels.get("outcome") == "cached"))


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
    # 256 px x 4 steps, about 130 ms of model work per image on one core: a real call is seconds of
    # model work, and at 128 px half of a call's cost was per-batch overhead (text encoders, VAE set-up,
    # Python dispatch), so batch fill, not the replicas, set the figure
    return "Generate", lambda seed: stub.Generate(generation_pb2.GenerateRequest(
        model="tiny-sdxl", prompt="portrait photo", seed=seed, steps=4, width=256, height=256,
        output_prefix="bench-scaling/"), timeout=120)


def load(call, seconds: float, callers: int, on_tick=None) -> dict:
    """`callers` concurrent callers for `seconds`; latencies, completions over time and failures."""
    latencies, done_at, started_at, failures = [], [], [], []
    live = {"started": 0, "finished": 0}  # calls started and ended (answered or failed) so far
    lock = threading.Lock()
    t0 = time.monotonic()
    stop = t0 + seconds

    def caller():
        while time.monotonic() < stop:
            with lock:
                seed = next(SEEDS)
                start = time.monotonic()
                started_at.append(start - t0)
                live["started"] += 1
            try:
                call(seed)
            except Exception as exc:  # noqa: BLE001 - a failed call is a lost call
                with lock:
                    failures.append(repr(exc)[:200])
                    live["finished"] += 1
                continue
            with lock:
                latencies.append(time.monotonic() - start)
                done_at.append(time.monotonic() - t0)
                live["finished"] += 1

    threads = [threading.Thread(target=caller) for _ in range(callers)]
    for t in threads:
        t.start()
    if on_tick:
        on_tick(t0, live)
    for t in threads:
        t.join()
    elapsed = time.monotonic() - t0  # the last calls end after `seconds`: CPU is counted until they do
    latencies.sort()
    return {"calls": len(latencies), "elapsed": elapsed, "failures": failures,
            "throughput": sum(1 for d in done_at if d <= seconds) / seconds,
            "p95": latencies[int(0.95 * (len(latencies) - 1))] if latencies else float("nan"), "done_at": done_at,
            "started_at": started_at}


def cpu_now(dns, replicas: list[PinnedReplica]) -> dict[str, float]:
    """CPU seconds so far of each replica, the callers (this process: its threads and gRPC's) and the
    DNS server, and of the whole machine (/proc/stat), from which the rest is everyone else's."""
    cpu = {f"replica {i + 1}": profiling.cpu_seconds(r.process.proc.pid) for i, r in enumerate(replicas)}
    cpu["callers"] = profiling.cpu_seconds(os.getpid())
    cpu["dns"] = profiling.cpu_seconds(dns.pid)
    cpu["machine"] = machine_cpu_seconds()
    return cpu


def thread_times(pid: int) -> dict[str, tuple[int, int]]:
    """Per thread: (ns on a core, ns runnable but waiting for one), from schedstat."""
    times = {}
    for stat in Path(f"/proc/{pid}/task").glob("*/schedstat"):
        try:
            on_core, waiting = stat.read_text().split()[:2]
        except (OSError, ValueError):  # a thread that ended meanwhile
            continue
        times[stat.parent.name] = (int(on_core), int(waiting))
    return times


def worker_idle(before: dict, after: dict, wall: float) -> float:
    """Share of the run that a replica's busiest thread (its model worker) neither ran nor waited for a
    core: it had no work. Load-independent, unlike its CPU share: others on the machine turn idle into
    waiting, never the reverse, so a worker idle near 0 means the callers kept the replica saturated."""
    deltas = {tid: (a[0] - before.get(tid, (0, 0))[0], a[1] - before.get(tid, (0, 0))[1]) for tid, a in after.items()}
    on_core, waiting = max(deltas.values(), default=(0, 0))
    return max(0.0, 1 - (on_core + waiting) / 1e9 / wall)


def machine_cpu_seconds() -> float:
    """Busy CPU seconds of all cores since boot (every state but idle and iowait)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def cpu_split(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """CPU seconds per process between two `cpu_now`s; `others` is the machine's busy time that no
    process of this bench used (other users of a shared machine)."""
    split = {k: after[k] - before[k] for k in before if k != "machine"}
    split["others"] = max(0.0, after["machine"] - before["machine"] - sum(split.values()))
    return split


def one_run(service: str, dns, port: int, replicas: list[PinnedReplica], n: int, seconds: float) -> dict:
    from likeness.core import channels

    dns.set(NAME.format(service), [r.host for r in replicas[:n]])
    with channels.sync_channel(dns.target(NAME.format(service), port)) as channel:
        method, call = make_call(service, channel)
        call(next(SEEDS))  # connect to every replica in the answer
        before = [r.served(method) for r in replicas[:n]]
        batches_before = [r.batches() for r in replicas[:n]]
        cpu_before, threads_before = cpu_now(dns, replicas), [thread_times(r.process.proc.pid) for r in replicas[:n]]
        result = load(call, seconds, CALLERS[service])
        result["cpu"] = cpu_split(cpu_before, cpu_now(dns, replicas))
        result["idle"] = [worker_idle(b, thread_times(r.process.proc.pid), result["elapsed"])
                          for r, b in zip(replicas[:n], threads_before, strict=True)]
        served = [r.served(method) - b for r, b in zip(replicas[:n], before, strict=True)]
        batches = [[x - y for x, y in zip(a, b, strict=True)]
                   for a, b in zip((r.batches() for r in replicas[:n]), batches_before, strict=True)]
    result["shares"] = [s / max(sum(served), 1) for s in served]
    result["cached"] = sum(b[3] for b in batches)  # must stay 0: a cached call does no model work
    result["hold"] = [b[2] / result["elapsed"] for b in batches]  # share of the run each worker held a partial batch
    # images per pipeline call: batching saves compute per image, so fuller batches are cheaper
    result["batch"] = sum(b[1] for b in batches) / sum(b[0] for b in batches) if sum(b[0] for b in batches) else 1.0
    return result


def retry_bound_seconds() -> float:
    """The longest a call cut by a replica's death can wait in the client's retry policy before its
    last attempt: the sum of the backoff ceilings of every retry (gRPC draws each backoff at random
    below its ceiling)."""
    from likeness.core import channels

    policy = json.loads(channels.service_config())["methodConfig"][0]["retryPolicy"]
    initial, ceiling = (float(policy[k].rstrip("s")) for k in ("initialBackoff", "maxBackoff"))
    return sum(min(initial * policy["backoffMultiplier"] ** i, ceiling) for i in range(policy["maxAttempts"] - 1))


def kill_run(service: str, dns, port: int, replicas: list[PinnedReplica], seconds: float) -> dict:
    """2 replicas under load; replica 2 is SIGKILLed halfway. Lost calls, and the takeover: the time from
    the kill until every call the callers have outstanding is on the survivor (the calls the kill cut
    have been re-sent there, and new calls go nowhere else), against the retry policy's bound."""
    dns.set(NAME.format(service), [r.host for r in replicas])
    samples: list[tuple[float, int, int]] = []  # (seconds into the run, on the survivor, outstanding)
    with channels_sync(service, dns, port) as channel:
        method, call = make_call(service, channel)
        call(next(SEEDS))
        survivor, victim = replicas
        at_kill: dict = {}

        def on_tick(t0, live):
            while time.monotonic() - t0 < seconds:
                if not at_kill and time.monotonic() - t0 >= seconds / 2:
                    at_kill["held"] = victim.intake(method)[1]  # calls the victim was serving or queueing
                    victim.process.kill()  # SIGKILL: no drain, calls in flight are cut
                    at_kill["t"] = time.monotonic() - t0
                    dns.set(NAME.format(service), [survivor.host])  # the endpoint leaves the Service
                # Ended calls are read before the scrape and started ones after it, so a call that
                # starts or ends meanwhile counts as outstanding: the comparison can only err late.
                finished = live["finished"]
                on_survivor = survivor.intake(method)[1]
                samples.append((time.monotonic() - t0, on_survivor, live["started"] - finished))
                time.sleep(0.1)

        result = load(call, seconds, CALLERS[service], on_tick)
    kill = at_kill["t"]
    takeover = next((t - kill for t, on, out in samples if t > kill and on >= out), float("nan"))
    return {"lost": len(result["failures"]), "calls": result["calls"], "errors": result["failures"][:3],
            "takeover_seconds": takeover, "retry_bound_seconds": retry_bound_seconds(),
            "held_at_kill": at_kill["held"]}


def channels_sync(service: str, dns, port: int):
    from likeness.core import channels

    return channels.sync_channel(dns.target(NAME.format(service), port))


def bench_service(service: str, tmp: Path, seconds: float, reps: int) -> dict:
    from tests.cluster_dns import ClusterDnsProcess
    from tests.helpers import free_port, model_env

    env = model_env(tmp, LIKENESS_DRAIN_SECONDS="0", OMP_NUM_THREADS="1", LIKENESS_GENERATION_CPU_THREADS="1",
                    LIKENESS_DETECTION_RESULT_CACHE="0", LIKENESS_MAX_CONNECTION_AGE_SECONDS="30")
    port = free_port()
    replicas = [PinnedReplica(service, core, port, env, tmp / f"{service}-{core}.log") for core in (0, 1)]
    try:
        for r in replicas:
            r.process.wait_serving(300)
        runs: dict[int, list[dict]] = {1: [], 2: []}
        with ClusterDnsProcess() as dns:
            one_run(service, dns, port, replicas, 2, min(seconds, 3))  # warm both replicas
            for _ in range(reps):
                for n in (1, 2):
                    runs[n].append(one_run(service, dns, port, replicas, n, seconds))
            killed = kill_run(service, dns, port, replicas, seconds)
    finally:
        for r in replicas:
            if r.process.proc.poll() is None:
                r.process.stop()
    return summarize(runs, seconds, killed)


def summarize(runs: dict[int, list[dict]], seconds: float, killed: dict) -> dict:
    tput = {n: [r["throughput"] for r in rs] for n, rs in runs.items()}
    med = {n: statistics.median(v) for n, v in tput.items()}
    shares = [statistics.median(r["shares"][i] for r in runs[2]) for i in (0, 1)]
    # cores busy (CPU seconds per second of the run) and CPU milliseconds per completed call, by process
    busy = {str(n): {k: round(statistics.median(r["cpu"][k] / r["elapsed"] for r in rs), 3) for k in rs[0]["cpu"]}
            for n, rs in runs.items()}
    ms_per_call = {str(n): {k: round(statistics.median(1000 * r["cpu"][k] / max(r["calls"], 1) for r in rs), 2)
                            for k in ("replica 1", "replica 2", "callers", "dns")} for n, rs in runs.items()}
    return {
        "runs_1": [round(t, 2) for t in tput[1]], "runs_2": [round(t, 2) for t in tput[2]],
        "cached_calls": sum(r["cached"] for rs in runs.values() for r in rs),
        "throughput_1": round(med[1], 3), "throughput_2": round(med[2], 3), "speedup": round(med[2] / med[1], 3),
        "spread_1": round(max(tput[1]) / min(tput[1]), 3), "spread_2": round(max(tput[2]) / min(tput[2]), 3),
        "p95_1": round(statistics.median(r["p95"] for r in runs[1]), 4),
        "p95_2": round(statistics.median(r["p95"] for r in runs[2]), 4),
        "shares_2": [round(s, 3) for s in shares],
        "failures": sum(len(r["failures"]) for rs in runs.values() for r in rs),
        "kill_lost": killed["lost"], "kill_takeover_seconds": round(killed["takeover_seconds"], 2),
        "kill_retry_bound_seconds": round(killed["retry_bound_seconds"], 2), "kill_held": killed["held_at_kill"],
        "kill_errors": killed["errors"], "cores_busy": busy, "cpu_ms_per_call": ms_per_call,
        "worker_idle": {str(n): [round(statistics.median(r["idle"][i] for r in rs), 3) for i in range(n)]
                        for n, rs in runs.items()},
        "batch_hold": {str(n): [round(statistics.median(r["hold"][i] for r in rs), 3) for i in range(n)]
                       for n, rs in runs.items()},
        "pooled": decompose(runs),
        "mean_batch": {str(n): round(statistics.median(r["batch"] for r in rs), 2) for n, rs in runs.items()},
    }


def print_tables(figures: dict, services: tuple[str, ...], seconds: dict[str, float], reps: int) -> None:
    per_run = ", ".join(f"{s} {seconds[s]:.0f} s" for s in services)
    print(f"\n## {per_run} per run, median of {reps} interleaved runs")
    print(f"{'service':>11}{'callers':>8}{'1 rep/s':>9}{'2 rep/s':>9}{'speed-up':>10}{'spread 1/2':>12}"
          f"{'p95 1/2 s':>14}{'shares':>14}{'lost':>6}{'held':>6}{'takeover s':>12}{'bound s':>9}")
    for service in services:
        f = figures[service]
        print(f"{service:>11}{CALLERS[service]:>8}{f['throughput_1']:>9.2f}{f['throughput_2']:>9.2f}{f['speedup']:>10.2f}"
              f"{f['spread_1']:>6.2f}/{f['spread_2']:<5.2f}{f['p95_1']:>7.3f}/{f['p95_2']:<6.3f}"
              f"{f['shares_2'][0]:>7.2f}/{f['shares_2'][1]:<6.2f}{f['kill_lost'] + f['failures']:>6}"
              f"{f['kill_held']:>6}{f['kill_takeover_seconds']:>12.2f}{f['kill_retry_bound_seconds']:>9.2f}")
    procs = ("replica 1", "replica 2", "callers", "dns", "others")
    print("\n## CPU by process: cores busy (CPU s per s of the run) | CPU ms per completed call (median); "
          "images per pipeline call")
    print(f"{'service':>11}{'replicas':>9}" + "".join(f"{p:>11}" for p in procs) + " |"
          + "".join(f"{p:>11}" for p in procs[:4]) + f"{'batch':>7}{'worker idle':>14}{'held':>12}")
    for service in services:
        f = figures[service]
        for n in (1, 2):
            busy, per_call = f["cores_busy"][str(n)], f["cpu_ms_per_call"][str(n)]
            print(f"{service:>11}{n:>9}" + "".join(f"{busy[p]:>11.2f}" for p in procs) + " |"
                  + "".join(f"{per_call[p]:>11.2f}" for p in procs[:4]) + f"{f['mean_batch'][str(n)]:>7.2f}"
                  + f"{'/'.join(f'{x:.2f}' for x in f['worker_idle'][str(n)]):>14}"
                  + f"{'/'.join(f'{x:.2f}' for x in f['batch_hold'][str(n)]):>12}")


def decompose(runs: dict[int, list[dict]]) -> dict:
    """Throughput over all repetitions (calls / seconds, tails included), 2 vs 1, as the product of the
    cores the replicas got (2 vs 1: the machine's part, near 2 on an otherwise idle 2-core machine) and
    the replicas' CPU per call (1 vs 2: their own efficiency, batch fill and per-call overhead, which
    holds up under load). Pooled, so that the product equals the ratio exactly."""
    pooled = {}
    for n, rs in runs.items():
        elapsed, calls = sum(r["elapsed"] for r in rs), sum(r["calls"] for r in rs)
        cpu = {k: sum(r["cpu"][k] for r in rs) for k in rs[0]["cpu"]}
        replicas = cpu["replica 1"] + cpu["replica 2"]
        pooled[n] = {"cores": replicas / elapsed, "ms_per_call": 1000 * replicas / calls,
                     "callers_dns_cores": (cpu["callers"] + cpu["dns"]) / elapsed,
                     "others_cores": cpu["others"] / elapsed}
    cores, efficiency = pooled[2]["cores"] / pooled[1]["cores"], pooled[1]["ms_per_call"] / pooled[2]["ms_per_call"]
    return {"replica_cores": [round(pooled[n]["cores"], 3) for n in (1, 2)],
            "replica_ms_per_call": [round(pooled[n]["ms_per_call"], 2) for n in (1, 2)],
            "cores_ratio": round(cores, 3), "efficiency": round(efficiency, 3),
            "pooled_speedup": round(cores * efficiency, 3),
            "callers_dns_cores_2": round(pooled[2]["callers_dns_cores"], 3),
            "others_cores": [round(pooled[n]["others_cores"], 3) for n in (1, 2)]}


def print_decomposition(figures: dict, services: tuple[str, ...]) -> None:
    print("\n## all repetitions pooled: speed-up = replica cores (2 vs 1) x replica CPU per call (1 vs 2)")
    for service in services:
        d = figures[service]["pooled"]
        print(f"{service:>11}: {d['replica_cores'][1]:.2f} / {d['replica_cores'][0]:.2f} cores = {d['cores_ratio']:.2f}"
              f" x {d['replica_ms_per_call'][0]:.1f} / {d['replica_ms_per_call'][1]:.1f} ms per call = "
              f"{d['efficiency']:.2f} -> {d['pooled_speedup']:.2f}; callers + DNS {d['callers_dns_cores_2']:.2f} cores "
              f"with 2 replicas; others {d['others_cores'][0]:.2f} / {d['others_cores'][1]:.2f} cores (1 / 2 replicas)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="3 s per run, detection only (< 60 s)")
    ap.add_argument("--service", choices=("detection", "generation"), action="append",
                    help="only this service (repeatable); both by default")
    ap.add_argument("--seconds", type=float,
                    help="seconds per run (default: detection 10, generation 15; 3 with --quick)")
    ap.add_argument("--reps", type=int, default=3, help="interleaved 1- and 2-replica runs (default 3)")
    args = ap.parse_args()
    machine = Machine()
    services = tuple(args.service or (("detection",) if args.quick else ("detection", "generation")))
    seconds = {s: args.seconds or (3.0 if args.quick else SECONDS[s]) for s in services}
    figures: dict = {"callers": {s: CALLERS[s] for s in services}, "seconds_per_run": seconds,
                     "repetitions": args.reps}
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-scaling-") as tmp:
        for service in services:
            figures[service] = bench_service(service, Path(tmp), seconds[service], args.reps)
    figures["wall_seconds"] = round(time.monotonic() - started, 1)
    print_tables(figures, services, seconds, args.reps)
    print_decomposition(figures, services)
    figures["machine"] = machine.done()
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
