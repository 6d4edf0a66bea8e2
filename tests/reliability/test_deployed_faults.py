"""The fault tests again in the deployed shape: the chart's settings (detection result cache on,
default leases, heartbeats and service concurrency), an S3 store (SeaweedFS) and a PostgreSQL job
store, as a cluster runs them. Each fault hits a curate job as it starts reading its candidates:

- detection SIGKILLed and restarted,
- the S3 server frozen (SIGSTOP) for 10 seconds, then resumed,
- PostgreSQL restarted (fast shutdown, 3 s down).

Every job must succeed with the manifest of an uninterrupted run, and the fault must be in the job's
own record (its events and summary), not only in a log. docs/reliability.md keeps the matrix.
"""

from __future__ import annotations

import threading
import time

import pytest
import sqlalchemy as sa

from likeness.api.v1 import orchestrator_pb2 as o
from likeness.client.jobs_client import JobsClient
from likeness.client.local import LocalStack, health
from likeness.core.store import open_store
from tests.e2e.conftest import _free_block, demo_curate_spec
from tests.reliability.conftest import clear, kill, listing, restart

pytestmark = [pytest.mark.slow, pytest.mark.s3, pytest.mark.postgres]
BUCKET = "rel-deployed"
OUT = "deployed/curate/"
SEEDS = 3  # a smaller demo set than the other fault tests: same stages, less time


@pytest.fixture(scope="module")
def deployed(seaweed, restartable_postgres, tmp_path_factory):
    """detection, embedding and orchestrator with nothing but the store and database settings set:
    every other setting is the default the chart deploys."""
    client = seaweed.client()
    if not client.bucket_exists(BUCKET):
        client.make_bucket(BUCKET)
    env = {"LIKENESS_STORE_URI": f"s3://{BUCKET}", "LIKENESS_S3_ENDPOINT": seaweed.endpoint,
           "LIKENESS_S3_ACCESS_KEY": seaweed.access_key, "LIKENESS_S3_SECRET_KEY": seaweed.secret_key,
           "LIKENESS_S3_SECURE": "false", "LIKENESS_ORCHESTRATOR_DATABASE_URL": restartable_postgres.url,
           "LIKENESS_DRAIN_SECONDS": "0"}  # only how fast the stack stops at the end
    stack = LocalStack(tmp_path_factory.mktemp("deployed"), services=("detection", "embedding", "orchestrator"),
                       base_port=_free_block(), extra_env=env)
    store = open_store(seaweed.settings(BUCKET))
    client = None
    try:
        stack.up(timeout=600)
        client = JobsClient(stack.address("orchestrator"))
        yield stack, store, client
    finally:
        if client is not None:
            client.close()
        stack.down()


def forget_finished_work(database_url: str) -> None:
    """Each run must really call the services, not reuse the previous run's stored results."""
    engine = sa.create_engine(database_url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("DELETE FROM work_results"))
    finally:
        engine.dispose()


@pytest.fixture(scope="module")
def baseline(deployed, restartable_postgres, tmp_path_factory):
    from likeness.client.demo_set import build_demo_set

    stack, store, client = deployed
    root = tmp_path_factory.mktemp("deployed-demo") / "set"
    demo = build_demo_set(root, seeds=SEEDS)
    for item in demo.items:
        store.put_file(f"demo/{item.path}", root / item.path, "image/png")
    spec = demo_curate_spec(store.uri("demo/"), demo, OUT)
    job = client.follow(client.submit(spec).job_id, quiet=True)
    assert job.state == o.JOB_STATE_SUCCEEDED, job.error
    return spec, store.get(job.manifest.uri), listing(store, OUT)


def run_with_fault(deployed, baseline, database_url: str, fault) -> tuple[o.Job, list[o.WatchResponse]]:
    """Runs the curate job, calls `fault()` when its source stage starts (with the detection cache on,
    validation itself is over in milliseconds on a warm service, too soon to aim at), returns the
    finished job and every event of it; checks the outcome equals the uninterrupted run's."""
    stack, store, client = deployed
    spec, manifest, files = baseline
    clear(store, OUT)
    forget_finished_work(database_url)
    job = client.submit(spec)
    for ev in client.events(job.job_id):
        if ev.type == o.EVENT_TYPE_STAGE_STARTED and ev.stage == "source":
            break
        assert ev.type != o.EVENT_TYPE_FINISHED, "the job ended before the fault"
    fault()
    done = client.follow(job.job_id, quiet=True)
    assert done.state == o.JOB_STATE_SUCCEEDED, done.error
    assert store.get(done.manifest.uri) == manifest
    assert listing(store, OUT) == files
    events = list(client.events(job.job_id))
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    for name in stack.services:
        assert health(stack.address(name)) == "SERVING"
    print(f"attempts {done.attempts}; record:", [e.message for e in events if e.type == o.EVENT_TYPE_WARNING])
    return done, events


def faults_of(events, kind: str) -> list[str]:
    return [e.message for e in events if e.type == o.EVENT_TYPE_WARNING and e.message.startswith(kind + ":")]


def test_detection_killed(deployed, baseline, restartable_postgres):
    stack = deployed[0]

    def fault():
        kill(stack, "detection")
        time.sleep(1.0)
        restart(stack, "detection")

    done, events = run_with_fault(deployed, baseline, restartable_postgres.url, fault)
    retries = faults_of(events, "service_retry")
    assert any(m.startswith("service_retry: detection.") and "last status UNAVAILABLE" in m for m in retries), retries
    assert done.attempts == 1 and int(done.summary["faults_service_retry"]) >= 1


def test_s3_frozen_for_10_seconds(deployed, baseline, restartable_postgres, seaweed):
    def fault():
        seaweed.pause()
        threading.Timer(10.0, seaweed.resume).start()

    done, events = run_with_fault(deployed, baseline, restartable_postgres.url, fault)
    stalls = faults_of(events, "store_stall")
    assert stalls and all("stalled" in m for m in stalls), [e.message for e in events if e.type == o.EVENT_TYPE_WARNING]
    assert max(float(m.split("stalled ")[1].split("s,")[0]) for m in stalls) >= 5.0
    assert done.attempts == 1


def test_postgres_restarted(deployed, baseline, restartable_postgres):
    done, events = run_with_fault(deployed, baseline, restartable_postgres.url,
                                  lambda: restartable_postgres.restart(down_seconds=3.0))
    # A job-store call of the job failed while PostgreSQL was down: the job was left RUNNING and
    # taken over when its lease (default 15 s) expired, its finished work reused. If no call fell
    # into the gap, it went on in attempt 1 and the record has no takeover.
    takeovers = faults_of(events, "takeover")
    if done.attempts == 2:
        assert any("resumed by" in m and "(attempt 2)" in m for m in takeovers), takeovers
        assert any("attempt 2 reused" in m for m in takeovers), takeovers
    else:
        assert done.attempts == 1 and not takeovers
