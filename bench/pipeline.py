"""The curate job on the demo set: through the services (orchestrator -> detection, embedding over
gRPC, artifacts by URI) vs the same stages called in-process, side by side in one run; items per
second; and the share of work redone when the orchestrator running the job is killed at 50%.

    python bench/pipeline.py [--quick]

Each service-path repetition uses a fresh orchestrator job store and a fresh detection process
(whose result cache would otherwise answer repeated images), so nothing is answered from cache. The in-process path does the same work: read each image from the store, decode,
detect + validate + quality, embed the survivors, cluster, select under the same quotas.
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
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "services"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
from machine import Machine  # noqa: E402

from likeness.api.v1 import orchestrator_pb2 as o  # noqa: E402
from likeness.core.images import ImageLimits, decode_image  # noqa: E402
from likeness.core.settings import CommonSettings  # noqa: E402
from likeness.core.store import open_store  # noqa: E402
from likeness.demo import curate_spec  # noqa: E402
from likeness.jobs_client import JobsClient  # noqa: E402
from likeness.local import LocalStack  # noqa: E402
from likeness.orchestrator.demo_set import build_demo_set  # noqa: E402


def in_process(store, keys: list[str], groups: dict[str, tuple[str, str]], spec) -> tuple[float, int]:
    """The curate stages without gRPC: returns (seconds, selected)."""
    from likeness.detection.app import default_policy, default_weights
    from likeness.detection.backends.factory import create_pipeline
    from likeness.detection.settings import DetectionSettings
    from likeness.embedding.clustering import ClusterParams, cluster
    from likeness.embedding.encoders.classical import ClassicalEncoder
    from likeness.embedding.selection import Candidate, Quota, select

    ds = DetectionSettings()
    pipeline = create_pipeline(ds)
    pipeline.load()
    pipeline.warmup()
    policy, weights = default_policy(ds), default_weights(ds)
    limits = ImageLimits.from_settings(ds)
    encoder = ClassicalEncoder()
    c = spec.curate
    t = time.perf_counter()
    kept = []
    for key in keys:
        rgb = decode_image(store.get(key), "image", limits)
        a = pipeline.assess(rgb, policy, weights)
        if a.verdict.accepted and a.score >= c.min_quality:
            kept.append((key, a.score))
    vectors = encoder.embed_images([decode_image(store.get(k), "image", limits) for k, _ in kept])
    clustering = cluster(np.asarray(vectors, dtype=np.float32), ClusterParams(k=c.clusters, seed=c.seed))
    cands = [Candidate(k, q, {"seed": groups[k][0], "image_type": groups[k][1], "cluster": str(int(label))})
             for (k, q), label, out in zip(kept, clustering.labels, clustering.outliers, strict=True) if not out]
    chosen = select(cands, c.target_count, [Quota(q.dimension, q.group, q.min, q.max) for q in c.quotas])
    return time.perf_counter() - t, len(chosen.selected_ids)


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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    machine = Machine()
    reps = 1 if args.quick else 3
    seeds = 3 if args.quick else 6
    work = Path(tempfile.mkdtemp(prefix="bench-pipeline-"))
    demo = build_demo_set(work / "set", seeds=seeds)
    stack = LocalStack(work / "stack", services=("detection", "embedding", "orchestrator"), base_port=43100,
                       extra_env={"LIKENESS_ORCHESTRATOR_LEASE_SECONDS": "2", "LIKENESS_ORCHESTRATOR_HEARTBEAT_SECONDS": "0.5",
                                  "LIKENESS_ORCHESTRATOR_POLL_SECONDS": "0.1", "LIKENESS_DRAIN_SECONDS": "0"})
    store = open_store(CommonSettings(store_uri=stack.env["LIKENESS_STORE_URI"]))
    keys, groups = [], {}
    for item in demo.items:
        key = f"candidates/{item.path}"
        store.put_file(key, work / "set" / item.path, "image/png")
        keys.append(key)
        groups[key] = (str(item.seed), item.image_type)
    spec = curate_spec(store.uri("candidates/"), seeds, demo.min_quality)
    n = len(keys)
    service_times, inproc_times = [], []
    try:
        stack.up(timeout=300, )
        for r in range(reps):
            # fresh job store and fresh detection process per repetition: no cached results
            for name in ("orchestrator", "detection"):
                stack.stop(name)
            stack.env["LIKENESS_ORCHESTRATOR_DATABASE_URL"] = f"sqlite:///{work}/jobs-{r}.db"
            for name in ("detection", "orchestrator"):
                stack.start(name)
            stack.wait_serving(["detection", "orchestrator"])
            client = JobsClient(stack.address("orchestrator"))
            t = time.perf_counter()
            job = client.follow(client.submit(spec).job_id, quiet=True)
            service_times.append(time.perf_counter() - t)
            assert job.state == o.JOB_STATE_SUCCEEDED, job.error
            stages = {k.removeprefix("seconds_"): float(v) for k, v in job.summary.items() if k.startswith("seconds_")}
            client.close()
            seconds, selected = in_process(store, keys, groups, spec)
            inproc_times.append(seconds)
            assert selected == int(job.summary["selected"])
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
    finally:
        stack.down()
        shutil.rmtree(work, ignore_errors=True)
    svc, inp = statistics.median(service_times), statistics.median(inproc_times)
    redone = (computed - n) / n  # model runs beyond one per candidate
    figures = {"candidates": n, "service_s": round(svc, 3), "in_process_s": round(inp, 3), "ratio": round(svc / inp, 3),
               "items_per_s_service": round(n / svc, 2), "items_per_s_in_process": round(n / inp, 2),
               "assessed_with_kill": computed, "answered_from_cache": cached, "redone_share": round(redone, 4), "attempts": done.attempts, "stages_s": stages}
    print(f"{'path':<14}{'seconds':>9}{'items/s':>9}")
    print(f"{'services':<14}{svc:>9.2f}{n / svc:>9.1f}")
    print(f"{'in-process':<14}{inp:>9.2f}{n / inp:>9.1f}")
    print(f"ratio services / in-process: {svc / inp:.3f} (target <= 1.10)")
    print("stages of the last service run (s): " + ", ".join(f"{k} {v:.2f}" for k, v in stages.items()))
    print(f"kill at 50%: the model assessed {computed} images for {n} candidates ({cached} resent images answered "
          f"from the result cache) -> {redone:.1%} redone (target <= 5%)")
    print(json.dumps({"bench": "pipeline", "quick": args.quick, **figures, "machine": machine.done()}))


if __name__ == "__main__":
    main()
