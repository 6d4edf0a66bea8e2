"""Load and soak: N concurrent callers for a bounded time against a local stack.

    python bench/load.py --quick                 # 10 s of load after start-up (~25 s in all)
    python bench/load.py --minutes 10            # the soak of docs/reliability.md
    python bench/load.py --seconds 45 --callers 4

Starts detection, embedding and generation as real processes on loopback (`likeness.client.local.LocalStack`,
tiny-sdxl for generation), then N caller threads each loop over three calls: detection `Assess`
(one 256x256 photo, inline), embedding `EmbedImages` (same photo) and generation `Generate`
(tiny-sdxl, 64x64, 2 steps, a new seed each call so every call is real work). It reports p50, p95 and
p99 latency per call, errors by gRPC status code, and the RSS of every service process sampled
every second.

Acceptance (printed as PASS/FAIL, and the exit status):
- no error except RESOURCE_EXHAUSTED (explicit backpressure);
- RSS growth of every service at most 10% between the end of the warm-up window and the end;
- p95 of every call in the last window at most 1.5x that of the first window (+20 ms slack, since
  the 2-core machines here are shared and a single scheduling hiccup moves a 5 ms p95).
A window is one minute, or a quarter of the run when the run is shorter than four minutes.
A soak compares the run with itself over time (first window against last), so it is one long run
rather than interleaved repetitions; the machine and its load before and after are printed with it.
The last line is the JSON of every figure.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "services"))
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench.ports import free_base  # noqa: E402

SERVICES = ("detection", "embedding", "generation")
RSS_GROWTH_LIMIT = 0.10
P95_RATIO_LIMIT = 1.5
P95_SLACK_SECONDS = 0.020


def rss_bytes(pid: int) -> int:
    """Resident set size of a process (VmRSS), 0 when it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


def photo_png(side: int = 256) -> bytes:
    from PIL import Image

    from tests.photos import skimage_photo

    buf = io.BytesIO()
    Image.fromarray(skimage_photo("astronaut")).resize((side, side)).save(buf, "PNG")
    return buf.getvalue()


@dataclass
class Sample:
    t: float  # seconds since the load started, at the call's end
    call: str
    seconds: float
    code: str


@dataclass
class Recorder:
    samples: list[Sample] = field(default_factory=list)
    rss: dict[str, list[tuple[float, int]]] = field(default_factory=lambda: defaultdict(list))
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, s: Sample) -> None:
        with self.lock:
            self.samples.append(s)


def make_calls(addresses: dict[str, str], image: bytes):
    """One callable per call kind; each returns nothing and raises grpc.RpcError on failure."""
    import grpc

    from likeness.api.v1 import (
        common_pb2,
        detection_pb2,
        detection_pb2_grpc,
        embedding_pb2,
        embedding_pb2_grpc,
        generation_pb2,
        generation_pb2_grpc,
    )

    opts = [("grpc.max_receive_message_length", 64 << 20), ("grpc.max_send_message_length", 64 << 20)]
    det = detection_pb2_grpc.DetectionServiceStub(grpc.insecure_channel(addresses["detection"], options=opts))
    emb = embedding_pb2_grpc.EmbeddingServiceStub(grpc.insecure_channel(addresses["embedding"], options=opts))
    gen = generation_pb2_grpc.GenerationServiceStub(grpc.insecure_channel(addresses["generation"], options=opts))
    img = common_pb2.ImageInput(data=image)
    seeds = iter(range(1_000_000_000))
    seed_lock = threading.Lock()

    def assess():
        r = det.Assess(detection_pb2.AssessRequest(images=[img]), timeout=60)
        assert len(r.results) == 1 and not r.results[0].HasField("error"), r.results[0].error

    def embed():
        r = emb.EmbedImages(embedding_pb2.EmbedImagesRequest(images=[img]), timeout=60)
        assert len(r.embeddings) == 1 and r.embeddings[0].values, r.errors

    def generate():
        with seed_lock:
            seed = next(seeds)
        r = gen.Generate(generation_pb2.GenerateRequest(model="tiny-sdxl", prompt="portrait photo", seed=seed, steps=2,
                                                         width=64, height=64, output_prefix="load/"), timeout=120)
        assert len(r.images) == 1 and r.images[0].artifact.sha256

    return {"detection.Assess": assess, "embedding.EmbedImages": embed, "generation.Generate": generate}


def caller(calls, rec: Recorder, t0: float, stop_at: float, offset: int) -> None:
    import grpc

    names = list(calls)
    i = offset
    while time.monotonic() < stop_at:
        name = names[i % len(names)]
        i += 1
        start = time.monotonic()
        try:
            calls[name]()
            code = "OK"
        except grpc.RpcError as exc:
            code = exc.code().name
            if code == "RESOURCE_EXHAUSTED":
                time.sleep(0.05)  # honour backpressure rather than hammering
        except AssertionError:
            code = "BAD_RESPONSE"
        end = time.monotonic()
        rec.add(Sample(end - t0, name, end - start, code))


def sample_rss(pids: dict[str, int], rec: Recorder, t0: float, stop: threading.Event, every: float = 1.0) -> None:
    while not stop.is_set():
        now = time.monotonic() - t0
        for name, pid in pids.items():
            rec.rss[name].append((now, rss_bytes(pid)))
        stop.wait(every)


def quantile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    v = sorted(values)
    return v[min(len(v) - 1, int(round(q * (len(v) - 1))))]


def _last_per_window(series: list[tuple[float, int]], window: float) -> list[int]:
    """The last RSS sample of every window (the memory curve over time)."""
    last: dict[int, int] = {}
    for t, b in series:
        last[int(t // window)] = b
    return [last[k] for k in sorted(last)]


def summarise(rec: Recorder, seconds: float) -> dict:
    window = 60.0 if seconds >= 240 else seconds / 4
    by_call: dict[str, dict] = {}
    for name in sorted({s.call for s in rec.samples}):
        ok = [s for s in rec.samples if s.call == name and s.code == "OK"]
        lat = [s.seconds for s in ok]
        first = [s.seconds for s in ok if s.t <= window]
        last = [s.seconds for s in ok if s.t >= seconds - window]
        by_call[name] = {
            "calls": sum(1 for s in rec.samples if s.call == name), "ok": len(ok),
            "per_second": round(len(ok) / seconds, 2),
            "p50_ms": round(quantile(lat, 0.50) * 1000, 1), "p95_ms": round(quantile(lat, 0.95) * 1000, 1),
            "p99_ms": round(quantile(lat, 0.99) * 1000, 1),
            "p95_first_ms": round(quantile(first, 0.95) * 1000, 1),
            "p95_last_ms": round(quantile(last, 0.95) * 1000, 1),
        }
    errors = Counter(s.code for s in rec.samples if s.code != "OK")
    rss = {}
    for name, series in rec.rss.items():
        series = [(t, b) for t, b in series if b > 0]
        after_warm = [b for t, b in series if t <= window] or [series[0][1]]
        end = [b for t, b in series if t >= seconds - window] or [series[-1][1]]
        start_b, end_b = after_warm[-1], end[-1]
        rss[name] = {"start_mb": round(start_b / 2**20, 1), "end_mb": round(end_b / 2**20, 1),
                     "max_mb": round(max(b for _, b in series) / 2**20, 1),
                     "growth": round((end_b - start_b) / start_b, 4),
                     "per_window_mb": [round(b / 2**20, 1) for b in _last_per_window(series, window)]}
    failures = []
    bad = {k: v for k, v in errors.items() if k != "RESOURCE_EXHAUSTED"}
    if bad:
        failures.append(f"errors other than RESOURCE_EXHAUSTED: {dict(bad)}")
    for name, r in rss.items():
        if r["growth"] > RSS_GROWTH_LIMIT:
            failures.append(f"{name} RSS grew {r['growth']:.1%} > {RSS_GROWTH_LIMIT:.0%}")
    for name, c in by_call.items():
        limit = c["p95_first_ms"] * P95_RATIO_LIMIT + P95_SLACK_SECONDS * 1000
        if c["p95_last_ms"] > limit:
            failures.append(f"{name} p95 last window {c['p95_last_ms']} ms > {limit:.1f} ms")
    return {"seconds": seconds, "window_seconds": window, "calls": by_call, "errors": dict(errors), "rss": rss,
            "failures": failures, "passed": not failures}


def run_load(addresses: dict[str, str], pids: dict[str, int], seconds: float, callers: int = 4,
             progress=None) -> dict:
    """Drive `callers` threads against running services for `seconds`; returns `summarise`'s dict."""
    calls = make_calls(addresses, photo_png())
    for fn in calls.values():  # one call each before the clock starts (connections, lazy state)
        fn()
    rec = Recorder()
    t0 = time.monotonic()
    stop_at = t0 + seconds
    stop = threading.Event()
    sampler = threading.Thread(target=sample_rss, args=(pids, rec, t0, stop), daemon=True)
    sampler.start()
    threads = [threading.Thread(target=caller, args=(calls, rec, t0, stop_at, i), daemon=True) for i in range(callers)]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        time.sleep(min(10.0, max(0.5, stop_at - time.monotonic())))
        if progress and time.monotonic() < stop_at:
            progress(time.monotonic() - t0, len(rec.samples))
    for t in threads:
        t.join()
    stop.set()
    sampler.join()
    return summarise(rec, seconds)


def start_stack(state: Path):
    from likeness.client.local import LocalStack

    # One torch thread per service: three services share two cores, oversubscription only adds noise.
    env = {"LIKENESS_DRAIN_SECONDS": "0", "LIKENESS_GENERATION_CPU_THREADS": "1", "OMP_NUM_THREADS": "1"}
    stack = LocalStack(state, services=SERVICES, base_port=free_base(len(SERVICES) + 3), extra_env=env)
    stack.up(timeout=600)
    return stack


def print_report(r: dict) -> None:
    print(f"\nload: {r['seconds']:.0f} s, window {r['window_seconds']:.1f} s")
    print(f"{'call':<24}{'calls':>7}{'ok/s':>7}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'p95 1st':>9}{'p95 last':>9}"
          f"{'last/1st':>9}")
    for name, c in r["calls"].items():
        print(f"{name:<24}{c['calls']:>7}{c['per_second']:>7}{c['p50_ms']:>9}{c['p95_ms']:>9}{c['p99_ms']:>9}"
              f"{c['p95_first_ms']:>9}{c['p95_last_ms']:>9}{c['p95_last_ms'] / c['p95_first_ms']:>9.2f}")
    print(f"errors by status: {r['errors'] or 'none'}")
    print(f"{'service':<12}{'RSS start MB':>14}{'end MB':>9}{'max MB':>9}{'growth':>9}")
    for name, m in r["rss"].items():
        print(f"{name:<12}{m['start_mb']:>14}{m['end_mb']:>9}{m['max_mb']:>9}{m['growth']:>9.1%}")
    print("PASS" if r["passed"] else "FAIL: " + "; ".join(r["failures"]))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="10 s of load (about 25 s with the stack start-up)")
    ap.add_argument("--minutes", type=float, default=0.0)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--callers", type=int, default=4)
    ap.add_argument("--state", type=Path, default=None, help="stack folder (default: a temp folder)")
    a = ap.parse_args()
    from bench.machine import Machine  # here, not at import: tests import this module as bench.load

    machine = Machine()
    seconds = 10.0 if a.quick else (a.minutes * 60 if a.minutes else a.seconds)
    with tempfile.TemporaryDirectory(prefix="likeness-load-") as tmp:
        stack = start_stack(a.state or Path(tmp))
        try:
            addresses = {n: stack.address(n) for n in SERVICES}
            pids = {n: stack.procs[n].pid for n in SERVICES}
            result = run_load(addresses, pids, seconds, a.callers,
                              progress=lambda t, n: print(f"  {t:6.0f} s  {n} calls", flush=True))
        finally:
            stack.down()
    print_report(result)
    print(json.dumps({**result, "machine": machine.done()}))
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
