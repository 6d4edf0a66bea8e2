"""A service process SIGKILLed mid-job and started again: the job waits (the orchestrator's client
retries UNAVAILABLE for LIKENESS_ORCHESTRATOR_RETRY_SECONDS), then completes in the same attempt,
with no lost and no duplicated artifact and a manifest byte-equal to an uninterrupted run's.

Killing the orchestrator itself is tests/e2e/test_takeover.py (another replica takes the job over).
"""

from __future__ import annotations

import threading
import time

import pytest

from likeness.api.v1 import generation_pb2
from likeness.api.v1 import orchestrator_pb2 as o
from likeness.client.jobs_client import JobsClient
from likeness.client.local import health
from tests.e2e.conftest import demo_curate_spec
from tests.photos import skimage_photo, tom_hanks
from tests.reliability.conftest import clear, fresh_orchestrator, kill, listing, restart, retried

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def client(rel_stack):
    c = JobsClient(rel_stack.address("orchestrator"))
    yield c
    c.close()


@pytest.fixture
def fresh(rel_stack, tmp_path):
    """An orchestrator with an empty job store (so no finished work of an earlier job is reused:
    every call of the faulted run really reaches the service), on the same services and store."""
    with fresh_orchestrator(rel_stack.env, tmp_path, f"sqlite:///{tmp_path}/jobs.db") as client:
        yield client


def kill_when(client, job_id: str, trigger, stack, name: str, down_seconds: float = 1.0) -> threading.Thread:
    """Follows the job's events; at the first event for which trigger(ev) holds, SIGKILLs `name`,
    waits `down_seconds`, and starts it again (in a thread, so the caller can follow the job)."""
    for ev in client.events(job_id):
        if trigger(ev):
            break
        assert ev.type != o.EVENT_TYPE_FINISHED, f"job finished before the trigger for {name}"
    kill(stack, name)
    time.sleep(down_seconds)
    t = threading.Thread(target=restart, args=(stack, name), daemon=True)
    t.start()
    return t


def assert_retries_in_record(client, done, service: str) -> None:
    """The retries are in the job's own record (events and summary), not only in a log."""
    record = [e.message for e in client.events(done.job_id) if e.type == o.EVENT_TYPE_WARNING]
    print(f"{service} kill: attempts {done.attempts}; record:", record)
    assert any(m.startswith(f"service_retry: {service}.") for m in record), record
    assert int(done.summary["faults_service_retry"]) >= 1, dict(done.summary)


@pytest.mark.parametrize("service, stage, after_items", [("detection", "validate", 16), ("embedding", "cluster", 0)])
def test_curate_survives_a_killed_service(service, stage, after_items, fresh, rel_stack, rel_store, rel_demo,
                                          curate_baseline):
    uri, demo = rel_demo
    manifest, files = curate_baseline
    clear(rel_store, "faults/curate/")
    client = fresh
    job = client.submit(demo_curate_spec(uri, demo, "faults/curate/"))
    seen = {"items": 0}

    def trigger(ev):
        if ev.type == o.EVENT_TYPE_ITEM_DONE and ev.stage == stage:
            seen["items"] += 1
        started = ev.type == o.EVENT_TYPE_STAGE_STARTED and ev.stage == stage
        return (started and after_items == 0) or (after_items and seen["items"] >= after_items)

    restarter = kill_when(client, job.job_id, trigger, rel_stack, service)
    done = client.follow(job.job_id, quiet=True)
    restarter.join(300)
    assert done.state == o.JOB_STATE_SUCCEEDED, done.error
    assert done.attempts == 1  # the job waited for the service; it was not restarted
    assert retried(client, service) > 0, dict(done.summary)  # the kill did hit a call of this job
    assert_retries_in_record(client, done, service)
    assert rel_store.get(done.manifest.uri) == manifest
    assert listing(rel_store, "faults/curate/") == files  # nothing lost, nothing extra
    assert health(rel_stack.address(service)) == "SERVING"


def test_diversity_survives_a_killed_generation(client, fresh, rel_stack, rel_store):
    for i, img in enumerate((skimage_photo("astronaut"), tom_hanks(), skimage_photo("camera"))):
        from likeness.core.images import encode_png

        rel_store.put(f"faults/reference/r{i}.png", encode_png(img), "image/png")
    # setting b takes 150 steps (seconds, even on a quiet machine): its Generate call is still
    # running when the kill lands, after setting a's images were stored (the job then needs both
    # the finished and the redone ones)
    settings = [o.DiversitySetting(name="a", seed_start=0, count=4, steps=2),
                o.DiversitySetting(name="b", seed_start=50, count=4, steps=150,
                                   sampler=generation_pb2.SAMPLER_EULER_ANCESTRAL, noise_injection=0.3)]
    spec = o.JobSpec(diversity=o.DiversitySpec(model="tiny-sdxl", prompt="portrait", width=64, height=64,
                                               reference_uri=rel_store.uri("faults/reference/"), settings=settings,
                                               nearest_k=2))
    clear(rel_store, "diversity/")
    baseline = client.follow(client.submit(spec).job_id, quiet=True)
    assert baseline.state == o.JOB_STATE_SUCCEEDED, baseline.error
    generated = listing(rel_store, "diversity/")
    assert len(generated) == 8
    # the same job again with every generated image gone: generation must redo them, and is killed
    clear(rel_store, "diversity/")
    client = fresh
    job = client.submit(spec)
    stages = {"generate": 0}

    def second_generate(ev) -> bool:
        stages["generate"] += ev.type == o.EVENT_TYPE_STAGE_STARTED and ev.stage == "generate"
        return stages["generate"] == 2

    restarter = kill_when(client, job.job_id, second_generate, rel_stack, "generation")
    done = client.follow(job.job_id, quiet=True)
    restarter.join(300)
    assert done.state == o.JOB_STATE_SUCCEEDED, done.error
    assert done.attempts == 1
    assert retried(client, "generation") > 0, dict(done.summary)  # the kill hit a call of this job
    assert_retries_in_record(client, done, "generation")
    assert rel_store.get(done.manifest.uri) == rel_store.get(baseline.manifest.uri)
    assert listing(rel_store, "diversity/") == generated  # same 8 images, byte for byte, no duplicates
    assert health(rel_stack.address("generation")) == "SERVING"


def test_generation_output_does_not_depend_on_request_history(rel_stack):
    """A retried or resumed request must reproduce its artifact byte for byte, whatever ran on the
    replica in between (found by the diversity kill test: "default" sampler once meant "whatever
    the previous batch used")."""
    import uuid

    import grpc

    from likeness.api.v1 import generation_pb2_grpc

    stub = generation_pb2_grpc.GenerationServiceStub(grpc.insecure_channel(rel_stack.address("generation")))

    def pixels(**kw) -> list[bytes]:
        base = dict(model="tiny-sdxl", prompt="portrait", seed=7, count=2, steps=2, width=64, height=64,
                    return_inline=True, output_prefix=f"history/{uuid.uuid4().hex}/")  # a new prefix: never cached
        r = stub.Generate(generation_pb2.GenerateRequest(**{**base, **kw}), timeout=120)
        return [decode(i.artifact.data) for i in r.images]

    first = pixels()
    pixels(sampler=generation_pb2.SAMPLER_EULER_ANCESTRAL, noise_injection=0.3, guidance_scale=9.0, seed=50)
    pixels(sampler=generation_pb2.SAMPLER_DDIM, steps=3)
    assert pixels() == first


def decode(png: bytes) -> bytes:
    import io

    import numpy as np
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).tobytes()
