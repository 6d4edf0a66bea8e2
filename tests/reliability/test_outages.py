"""Infrastructure outages under a running curate job of the demo set:

- the S3 store (real SeaweedFS) stopped for 10 seconds: every store call retries with backoff
  (LIKENESS_STORE_RETRY_SECONDS, 30 s by default) and the orchestrator retries the services'
  UNAVAILABLE answers, so the job succeeds with the manifest of an uninterrupted run;
- PostgreSQL (the orchestrator's job store) restarted mid-job: connections are re-established
  (pool pre-ping), the lease loop keeps polling, and a job whose database call failed is left
  RUNNING (never marked FAILED for it), so its lease expires and it resumes with its finished work
  reused; the manifest is that of an uninterrupted run.

The store credentials test rides on the S3 stack: its services got the secret key from the
environment only, and after the outage (error paths included) no log line holds it.
"""

from __future__ import annotations

import threading
import time

import pytest

from likeness.api.v1 import orchestrator_pb2 as o
from likeness.client.local import LocalStack, health
from likeness.core.store import open_store
from tests.e2e.conftest import _free_block, demo_curate_spec, upload_demo_set
from tests.reliability.conftest import FAULT_ENV, clear, fresh_orchestrator, listing, log_records

pytestmark = [pytest.mark.slow]
BUCKET = "rel-outage"


@pytest.fixture(scope="module")
def s3_stack(seaweed, tmp_path_factory):
    """detection, embedding and an orchestrator whose store is s3://rel-outage on SeaweedFS; the
    secret key reaches them only through LIKENESS_S3_SECRET_KEY."""
    client = seaweed.client()
    if not client.bucket_exists(BUCKET):
        client.make_bucket(BUCKET)
    env = {**FAULT_ENV, "LIKENESS_STORE_URI": f"s3://{BUCKET}", "LIKENESS_S3_ENDPOINT": seaweed.endpoint,
           "LIKENESS_S3_ACCESS_KEY": seaweed.access_key, "LIKENESS_S3_SECRET_KEY": seaweed.secret_key,
           "LIKENESS_S3_SECURE": "false", "LIKENESS_LOG_CALLS": "all", "LIKENESS_LOG_LEVEL": "DEBUG"}
    stack = LocalStack(tmp_path_factory.mktemp("s3stack"), services=("detection", "embedding", "orchestrator"),
                       base_port=_free_block(), extra_env=env)
    try:
        stack.up(timeout=600)
        yield stack
    finally:
        stack.down()


@pytest.fixture(scope="module")
def s3_store(s3_stack, seaweed):
    return open_store(seaweed.settings(BUCKET))


@pytest.mark.s3
def test_s3_store_down_for_10_seconds(s3_stack, s3_store, seaweed, tmp_path_factory):
    uri, demo = upload_demo_set(s3_store, tmp_path_factory.mktemp("s3demo") / "set", "demo-candidates/")
    spec = demo_curate_spec(uri, demo, "outage/curate/")
    base_dir, fault_dir = tmp_path_factory.mktemp("s3base"), tmp_path_factory.mktemp("s3fault")
    with fresh_orchestrator(s3_stack.env, base_dir, f"sqlite:///{base_dir}/jobs.db") as client:
        baseline = client.follow(client.submit(spec).job_id, quiet=True)
    assert baseline.state == o.JOB_STATE_SUCCEEDED, baseline.error
    manifest, files = s3_store.get(baseline.manifest.uri), listing(s3_store, "outage/curate/")
    clear(s3_store, "outage/curate/")

    with fresh_orchestrator(s3_stack.env, fault_dir, f"sqlite:///{fault_dir}/jobs.db") as client:
        job = client.submit(spec)
        validated = 0
        for ev in client.events(job.job_id):
            validated += ev.type == o.EVENT_TYPE_ITEM_DONE and ev.stage == "validate"
            if validated >= 16:
                break
            assert ev.type != o.EVENT_TYPE_FINISHED
        seaweed.stop()
        down_at = time.monotonic()
        restarter = threading.Timer(10.0, seaweed.start)
        restarter.start()
        done = client.follow(job.job_id, quiet=True)
        restarter.join()
        fault_events = list(client.events(job.job_id))
    assert done.state == o.JOB_STATE_SUCCEEDED, done.error
    assert done.attempts == 1
    assert time.monotonic() - down_at >= 10.0
    assert s3_store.get(done.manifest.uri) == manifest
    assert listing(s3_store, "outage/curate/") == files
    # the outage was seen and waited out (by the store's retries in a service, the orchestrator's, or both)
    retries = [r for p in (s3_stack.state / "logs").glob("*.log") for r in log_records(p)
               if "retrying" in str(r.get("msg", "")) and r["ts"] >= _iso(down_at)]
    retries += [r for r in log_records(fault_dir / "orchestrator.log") if "retrying" in str(r.get("msg", ""))]
    assert retries, "no retry was logged during the outage"
    record = [e.message for e in fault_events if e.type == o.EVENT_TYPE_WARNING]
    print("S3 down 10 s: record:", record)
    assert any(m.startswith(("store_stall:", "service_retry:")) for m in record), record
    for name in s3_stack.services:
        assert health(s3_stack.address(name)) == "SERVING"


def _iso(monotonic_at: float) -> str:
    wall = time.time() - (time.monotonic() - monotonic_at)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(wall))


@pytest.mark.s3
def test_store_secret_never_logged(s3_stack, s3_store, seaweed, tmp_path):
    """After start-up, a job, an outage and failing calls (DEBUG logs, every call logged), the
    secret key appears in no service's log; the access key id (not a secret) may."""
    import grpc

    from likeness.api.v1 import common_pb2, detection_pb2, detection_pb2_grpc

    with grpc.insecure_channel(s3_stack.address("detection")) as ch:  # store errors: missing, foreign bucket
        stub = detection_pb2_grpc.DetectionServiceStub(ch)
        for u in (f"s3://{BUCKET}/missing.png", "s3://other-bucket/x.png"):
            with pytest.raises(grpc.RpcError):
                stub.Assess(detection_pb2.AssessRequest(images=[common_pb2.ImageInput(uri=u)]), timeout=30)
    secret = seaweed.secret_key
    assert s3_stack.env["LIKENESS_S3_SECRET_KEY"] == secret
    logs = {p.name: p.read_text(errors="replace") for p in (s3_stack.state / "logs").glob("*.log")}
    logs.update({f"{p.parent.name}/{p.name}": p.read_text(errors="replace")
                 for p in tmp_path.parent.glob("s3*/orchestrator.log")})
    assert sum(len(v) for v in logs.values()) > 10_000  # the services did log plenty
    leaked = [name for name, text in logs.items() if secret in text]
    assert not leaked, f"secret key found in {leaked}"


@pytest.mark.postgres
def test_postgres_restart_mid_job(rel_stack, rel_store, rel_demo, curate_baseline, restartable_postgres, tmp_path):
    uri, demo = rel_demo
    manifest, files = curate_baseline
    clear(rel_store, "faults/curate/")
    with fresh_orchestrator(rel_stack.env, tmp_path, restartable_postgres.url) as client:
        job = client.submit(demo_curate_spec(uri, demo, "faults/curate/"))
        validated = 0
        for ev in client.events(job.job_id):
            validated += ev.type == o.EVENT_TYPE_ITEM_DONE and ev.stage == "validate"
            if validated >= 16:
                break
            assert ev.type != o.EVENT_TYPE_FINISHED
        restartable_postgres.restart(down_seconds=3.0)
        done = client.follow(job.job_id, quiet=True)
        assert done.state == o.JOB_STATE_SUCCEEDED, done.error
        # A database call of the job failed while PostgreSQL was down: the job was left RUNNING,
        # its lease expired and it was resumed with its finished work reused (not redone). If no
        # call fell in the gap, it simply went on.
        assert done.attempts in (1, 2)
        record = [e.message for e in client.events(job.job_id) if e.type == o.EVENT_TYPE_WARNING]
        print(f"PostgreSQL restart: attempts {done.attempts}; record:", record)
        if done.attempts == 2:
            assert int(done.summary["work_reused"]) >= 1
            assert any(m.startswith("takeover: resumed by") and "(attempt 2)" in m for m in record), record
            assert any(m.startswith("takeover: attempt 2 reused") for m in record), record
        assert rel_store.get(done.manifest.uri) == manifest
        assert listing(rel_store, "faults/curate/") == files
        assert health(client.address) == "SERVING"
