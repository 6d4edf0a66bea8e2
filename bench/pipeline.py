"""The curate job on the demo set: through the services (orchestrator -> detection, embedding over
gRPC, artifacts by URI) vs the same stages called in-process, side by side in one run; items per
second; CPU seconds of every process by stage; and the share of work redone when the orchestrator
running the job is killed at 50%.

    python bench/pipeline.py [--quick] [--reps N] [--no-kill] [--profile DIR]

Each service-path repetition uses a fresh orchestrator job store and a fresh detection process
(whose result cache would otherwise answer repeated images), so nothing is answered from cache. The
in-process path does the same work (see `in_process`). Rounds alternate which side goes first, so
the load of a shared machine falls on both alike; the ratio is the median of the rounds' ratios.
CPU seconds (all threads of each process) say what the work costs whatever the load; wall seconds
on a busy machine mostly say how long each side waited for a core. `--profile DIR` records every
process with py-spy (samples holding the GIL) and prints where each spent them.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import urllib.request
from contextlib import ExitStack, contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "services"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import profiling  # noqa: E402
from machine import Machine  # noqa: E402
from ports import free_base  # noqa: E402

from likeness.api.v1 import orchestrator_pb2 as o  # noqa: E402
from likeness.core.images import ImageLimits, decode_image  # noqa: E402
from likeness.core.settings import CommonSettings  # noqa: E402
from likeness.core.store import open_store  # noqa: E402
from likeness.demo import curate_spec  # noqa: E402
from likeness.jobs_client import JobsClient  # noqa: E402
from likeness.local import LocalStack  # noqa: E402
from likeness.orchestrator.demo_set import build_demo_set  # noqa: E402

# frames whose inclusive share the profile summary prints
PHASES = ("decode_image", "FacePipeline.assess", "embed_images", "image_hashes", "cluster (likeness",
          "SerializeToString", "add_events", "put_result", "get_result", "stat (store", "_read_bounded")


def in_process(store, keys: list[str], groups: dict[str, tuple[str, str]], spec) -> tuple[float, int, dict]:
    """The curate job's work without gRPC, as the workflow does it: read and decode each image,
    detect + validate + quality, embed the survivors, remove near-duplicates (the same perceptual
    hashes and embedding check), cluster under the embedding service's thread bound, select under
    the same quotas, copy the selected images and captions into a dataset. Returns (seconds,
    selected, seconds per stage). Not done here: the job's manifest, report and events."""
    from threadpoolctl import threadpool_limits

    from likeness.detection.app import default_policy, default_weights
    from likeness.detection.backends.factory import create_pipeline
    from likeness.detection.settings import DetectionSettings
    from likeness.embedding.app import warm_up_cluster
    from likeness.embedding.clustering import ClusterParams, cluster
    from likeness.embedding.encoders.classical import ClassicalEncoder
    from likeness.embedding.selection import Candidate, Quota, select
    from likeness.embedding.settings import EmbeddingSettings
    from likeness.orchestrator.workflows.duplicates import find_duplicates, image_hashes

    ds, threads = DetectionSettings(), EmbeddingSettings().embedding_compute_threads
    pipeline = create_pipeline(ds)
    pipeline.load()
    pipeline.warmup()
    warm_up_cluster(threads)  # as the embedding service does at start-up
    policy, weights = default_policy(ds), default_weights(ds)
    limits = ImageLimits.from_settings(ds)
    encoder = ClassicalEncoder()
    c = spec.curate
    stages = {}
    cpu = time.process_time()
    t = time.perf_counter()
    kept = []
    for key in keys:
        a = pipeline.assess(decode_image(store.get(key), "image", limits), policy, weights)
        if a.verdict.accepted and a.score >= c.min_quality:
            kept.append((key, a.score))
    kept.sort(key=lambda kq: (-kq[1], kq[0]))
    stages["validate"] = time.perf_counter() - t
    stages["cpu_validate"] = time.process_time() - cpu
    vectors = encoder.embed_images([decode_image(store.get(k), "image", limits) for k, _ in kept])
    found = {d.id for d in find_duplicates([k for k, _ in kept], [q for _, q in kept],
                                           [image_hashes(store.get(k)) for k, _ in kept], list(vectors))}
    vectors = np.asarray([v for (k, _), v in zip(kept, vectors, strict=True) if k not in found], dtype=np.float32)
    kept = [kq for kq in kept if kq[0] not in found]
    stages["embed+dedupe"] = time.perf_counter() - t - stages["validate"]
    with threadpool_limits(threads or None):
        clustering = cluster(vectors, ClusterParams(k=c.clusters, seed=c.seed))
    cands = [Candidate(k, q, {"seed": groups[k][0], "image_type": groups[k][1], "cluster": str(int(label))})
             for (k, q), label, out in zip(kept, clustering.labels, clustering.outliers, strict=True) if not out]
    chosen = select(cands, c.target_count, [Quota(q.dimension, q.group, q.min, q.max) for q in c.quotas])
    for i, key in enumerate(sorted(chosen.selected_ids)):
        store.put(f"datasets/in-process/{i}.png", store.get(key), "image/png")
        store.put(f"datasets/in-process/{i}.txt", key.encode(), "text/plain")
    stages["cluster+select+write"] = time.perf_counter() - t - stages["validate"] - stages["embed+dedupe"]
    stages["cpu"] = time.process_time() - cpu
    return time.perf_counter() - t, len(chosen.selected_ids), stages


def service_run(stack, work: Path, spec, r: int, prof: Path | None):
    """One curate job through the services, on a fresh job store and a fresh detection process (no
    cached results); returns (seconds, job, seconds per stage)."""
    for name in ("orchestrator", "detection"):
        stack.stop(name)
    stack.env["LIKENESS_ORCHESTRATOR_DATABASE_URL"] = f"sqlite:///{work}/jobs-{r}.db"
    for name in ("detection", "orchestrator"):
        stack.start(name)
    stack.wait_serving(["detection", "orchestrator"])
    client = JobsClient(stack.address("orchestrator"))
    pids = {name: stack.procs[name].pid for name in ("orchestrator", "detection", "embedding")}
    pids["client"] = os.getpid()
    with ExitStack() as spies:
        for name in ("orchestrator", "detection", "embedding"):
            spies.enter_context(spy(pids[name], prof, name))
        t = time.perf_counter()
        marks = [("submit", cpu_now(pids))]
        job_id = client.submit(spec).job_id
        for ev in client.events(job_id):  # CPU of every process at each stage start: CPU per stage
            if ev.type == o.EVENT_TYPE_STAGE_STARTED:
                marks.append((ev.stage, cpu_now(pids)))
            if ev.type == o.EVENT_TYPE_FINISHED:
                break
        marks.append(("end", cpu_now(pids)))
        job = client.get(job_id)
        seconds = time.perf_counter() - t
    client.close()
    assert job.state == o.JOB_STATE_SUCCEEDED, job.error
    stages = {k.removeprefix("seconds_"): float(v) for k, v in job.summary.items() if k.startswith("seconds_")}
    for (stage, before), (_, after) in zip(marks, marks[1:], strict=False):
        for name in pids:
            stages[f"cpu_{stage}_{name}"] = after[name] - before[name]
    return seconds, job, stages


def cpu_now(pids: dict[str, int]) -> dict[str, float]:
    return {name: profiling.cpu_seconds(pid) for name, pid in pids.items()}


@contextmanager
def spy(pid: int, folder: Path | None, name: str):
    """py-spy records `pid` into `folder/name.txt` for the block (nothing when not profiling)."""
    if folder is None:
        yield
        return
    with profiling.recording(pid, folder / f"{name}.txt"):
        yield


def assessed(metrics_port: int) -> tuple[int, int]:
    """(images the detection model assessed, images answered from its result cache) so far."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()
    out = {"computed": 0, "cached": 0}
    for line in text.splitlines():
        if line.startswith("likeness_items_total") and 'stage="assess_model"' in line:
            for k in out:
                if f'outcome="{k}"' in line:
                    out[k] += int(float(line.rsplit(" ", 1)[1]))
    return out["computed"], out["cached"]


def kill_at_half(stack, work: Path, spec, n: int) -> dict:
    """The orchestrator is SIGKILLed once half the candidates are assessed; a restarted one takes the
    job over. Returns how many images the detection model assessed in all, and from its cache."""
    # kill at 50%: the orchestrator dies (SIGKILL) once half the candidates are assessed
    stack.stop("orchestrator")
    stack.env["LIKENESS_ORCHESTRATOR_DATABASE_URL"] = f"sqlite:///{work}/jobs-kill.db"
    stack.start("orchestrator")
    stack.wait_serving(["orchestrator"])
    # a fresh detection process: its result cache holds nothing of the timed runs above
    stack.stop("detection")
    stack.start("detection")
    stack.wait_serving(["detection"])
    client = JobsClient(stack.address("orchestrator"))
    job = client.submit(spec)
    validated = 0
    for ev in client.events(job.job_id):
        if ev.type == o.EVENT_TYPE_ITEM_DONE and ev.stage == "validate":
            validated += 1
            if validated >= n // 2:
                break
    client.close()
    os.kill(stack.procs["orchestrator"].pid, 9)
    stack.procs.pop("orchestrator")
    stack.start("orchestrator")  # same job store: the restarted replica takes the job over
    stack.wait_serving(["orchestrator"])
    client = JobsClient(stack.address("orchestrator"))
    done = client.follow(job.job_id, quiet=True)
    client.close()
    assert done.state == o.JOB_STATE_SUCCEEDED, done.error
    computed, cached = assessed(stack.ports["detection"] + 1000)
    return {"assessed": computed, "cached": cached, "attempts": done.attempts}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--reps", type=int, default=0, help="rounds (default 3, 1 with --quick)")
    parser.add_argument("--no-kill", action="store_true", help="skip the kill-at-50% run")
    parser.add_argument("--profile", default="", help="folder for py-spy profiles of every process, per round")
    args = parser.parse_args()
    machine = Machine()
    reps = args.reps or (1 if args.quick else 3)
    seeds = 3 if args.quick else 5  # the demo set has five people
    work = Path(tempfile.mkdtemp(prefix="bench-pipeline-"))
    demo = build_demo_set(work / "set", seeds=seeds)
    stack = LocalStack(work / "stack", services=("detection", "embedding", "orchestrator"), base_port=free_base(3),
                       # short leases for the kill run; the job store poll keeps its default: Submit
                       # and the job's events wake this replica's job loop and Watch streams at once
                       extra_env={"LIKENESS_ORCHESTRATOR_LEASE_SECONDS": "2", "LIKENESS_ORCHESTRATOR_HEARTBEAT_SECONDS": "0.5",
                                  "LIKENESS_DRAIN_SECONDS": "0"})
    store = open_store(CommonSettings(store_uri=stack.env["LIKENESS_STORE_URI"]))
    keys, groups = [], {}
    for item in demo.items:
        key = f"candidates/{item.path}"
        store.put_file(key, work / "set" / item.path, "image/png")
        keys.append(key)
        groups[key] = (str(item.seed), item.image_type)
    spec = curate_spec(store.uri("candidates/"), seeds, demo.min_quality)
    n = len(keys)
    service_times, inproc_times, service_stages, inproc_stages = [], [], [], []
    profile = Path(args.profile).resolve() if args.profile else None
    try:
        stack.up(timeout=300)
        for r in range(reps):
            # the two sides alternate which goes first, so a change of load on the shared machine
            # falls on both alike
            sides = ("services", "in-process") if r % 2 == 0 else ("in-process", "services")
            for side in sides:
                prof = profile / f"round{r}" if profile else None
                if side == "services":
                    seconds, job, stages = service_run(stack, work, spec, r, prof)
                    service_times.append(seconds)
                    service_stages.append(stages)
                else:
                    with spy(os.getpid(), prof, "in_process"):
                        seconds, selected, stages = in_process(store, keys, groups, spec)
                    inproc_times.append(seconds)
                    inproc_stages.append(stages)
            assert selected == int(job.summary["selected"])
        kill = kill_at_half(stack, work, spec, n) if not args.no_kill else None
    finally:
        stack.down()
        shutil.rmtree(work, ignore_errors=True)
    report(args, machine, n, service_times, inproc_times, service_stages, inproc_stages, kill)
    if profile:
        for path in sorted(profile.glob("round*/*.txt")):
            print(profiling.summary(path, marks=PHASES))


def spread(xs: list[float]) -> str:
    return f"{min(xs):.2f}-{max(xs):.2f}"


def report(args, machine, n, service_times, inproc_times, service_stages, inproc_stages, kill) -> None:
    svc, inp = statistics.median(service_times), statistics.median(inproc_times)
    ratios = [a / b for a, b in zip(service_times, inproc_times, strict=True)]
    print(f"{'path':<14}{'median s':>9}{'spread s':>12}{'items/s':>9}")
    print(f"{'services':<14}{svc:>9.2f}{spread(service_times):>12}{n / svc:>9.1f}")
    print(f"{'in-process':<14}{inp:>9.2f}{spread(inproc_times):>12}{n / inp:>9.1f}")
    print(f"ratio services / in-process: median of rounds {statistics.median(ratios):.3f} "
          f"(rounds: {', '.join(f'{x:.3f}' for x in ratios)}; target <= 1.05)")
    med = lambda rows: {k: round(statistics.median(r[k] for r in rows), 3) for k in rows[0]}  # noqa: E731
    svc_med, inp_med = med(service_stages), med(inproc_stages)
    print("wall seconds by stage (median): services " + ", ".join(f"{k} {v:.2f}" for k, v in svc_med.items()
                                                                 if not k.startswith("cpu_"))
          + " | in-process " + ", ".join(f"{k} {v:.2f}" for k, v in inp_med.items() if not k.startswith("cpu")))
    procs = ("orchestrator", "detection", "embedding", "client")
    print(f"CPU seconds by stage (median){'':<4}" + "".join(f"{p:>14}" for p in procs))
    for stage in dict.fromkeys(k.split("_")[1] for k in svc_med if k.startswith("cpu_")):
        print(f"  services {stage:<22}" + "".join(f"{svc_med.get(f'cpu_{stage}_{p}', 0):>14.2f}" for p in procs))
    cpu_services = sum(v for k, v in svc_med.items() if k.startswith("cpu_"))
    print(f"CPU seconds in all: services {cpu_services:.2f}, in-process {inp_med['cpu']:.2f} "
          f"(validate {inp_med['cpu_validate']:.2f}); ratio {cpu_services / inp_med['cpu']:.3f}")
    figures = {"candidates": n, "rounds": len(ratios), "service_s": round(svc, 3), "in_process_s": round(inp, 3),
               "ratio": round(statistics.median(ratios), 3), "ratios": [round(x, 3) for x in ratios],
               "service_s_all": [round(x, 3) for x in service_times],
               "in_process_s_all": [round(x, 3) for x in inproc_times],
               "items_per_s_service": round(n / svc, 2), "items_per_s_in_process": round(n / inp, 2),
               "stages_s": svc_med, "in_process_stages_s": inp_med, "cpu_s": round(cpu_services, 3),
               "in_process_cpu_s": round(inp_med["cpu"], 3)}
    if kill:
        redone = (kill["assessed"] - n) / n  # model runs beyond one per candidate
        figures.update(assessed_with_kill=kill["assessed"], answered_from_cache=kill["cached"],
                       redone_share=round(redone, 4), attempts=kill["attempts"])
        print(f"kill at 50%: the model assessed {kill['assessed']} images for {n} candidates ({kill['cached']} resent "
              f"images answered from the result cache) -> {redone:.1%} redone (target <= 5%)")
    print(json.dumps({"bench": "pipeline", "quick": args.quick, **figures, "machine": machine.done()}))


if __name__ == "__main__":
    main()
