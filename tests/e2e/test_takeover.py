"""Two orchestrator replicas on a real PostgreSQL: the one running a curate job is killed (SIGKILL)
mid-job; the other takes the job over when the lease expires and finishes it, redoing no finished
work, and the manifest equals the one of an uninterrupted run."""

from __future__ import annotations

import time

import pytest
import sqlalchemy as sa

from likeness.api.v1 import orchestrator_pb2 as o
from likeness.client.jobs_client import JobsClient
from likeness.core.settings import CommonSettings
from likeness.core.store import open_store
from tests.e2e.conftest import demo_curate_spec
from tests.helpers import ServiceProcess

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


def fresh_database(url: str, name: str) -> str:
    engine = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name}")
        conn.exec_driver_sql(f"CREATE DATABASE {name}")
    engine.dispose()
    return url.rsplit("/", 1)[0] + f"/{name}"


def test_killed_replica_job_finishes_on_the_other(e2e_stack, postgres_url, demo_candidates, jobs_client, tmp_path):
    uri, demo = demo_candidates
    store = open_store(CommonSettings(store_uri=e2e_stack.env["LIKENESS_STORE_URI"]))
    # 1. the uninterrupted run, on the stack's own (SQLite) orchestrator
    baseline = jobs_client.follow(jobs_client.submit(demo_curate_spec(uri, demo, "e2e-takeover/")).job_id, quiet=True)
    assert baseline.state == o.JOB_STATE_SUCCEEDED, baseline.error
    # 2. two replicas sharing one PostgreSQL job store; one service call at a time, so the kill
    #    lands mid-stage
    db = fresh_database(postgres_url, "takeover")
    env = {**e2e_stack.env, "LIKENESS_ORCHESTRATOR_DATABASE_URL": db, "LIKENESS_ORCHESTRATOR_SERVICE_CONCURRENCY": "1"}
    replicas = {name: ServiceProcess("orchestrator", {**env, "LIKENESS_ORCHESTRATOR_REPLICA_ID": name},
                                     log_path=tmp_path / f"{name}.log").wait_serving(120)
                for name in ("replica-a", "replica-b")}
    client = JobsClient(replicas["replica-a"].address)
    try:
        job = client.submit(demo_curate_spec(uri, demo, "e2e-takeover/"))
        owner, validated = None, 0
        deadline = time.monotonic() + 120
        for ev in client.events(job.job_id):
            if "started by" in ev.message:
                owner = ev.message.split("started by ")[1].split(" ")[0]
            if ev.type == o.EVENT_TYPE_ITEM_DONE and ev.stage == "validate":
                validated += 1
            if owner and validated >= len(demo.items) // 3 or time.monotonic() > deadline:
                break
        assert owner in replicas and validated >= len(demo.items) // 3
        replicas[owner].kill()  # SIGKILL: no graceful release of the lease
        survivor = next(n for n in replicas if n != owner)
        client.close()
        client = JobsClient(replicas[survivor].address)
        done = client.follow(job.job_id, quiet=True)
        assert done.state == o.JOB_STATE_SUCCEEDED, done.error
        assert done.attempts == 2
        assert int(done.summary["work_reused"]) >= 1  # finished batches were not sent again
        assert store.get(done.manifest.uri) == store.get(baseline.manifest.uri)
    finally:
        client.close()
        for p in replicas.values():
            p.stop()
