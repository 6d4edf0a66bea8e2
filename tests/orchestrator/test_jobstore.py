"""The job store on SQLite and on a real PostgreSQL: idempotent submit, leases that expire and are
taken over, one owner at a time under racing replicas, cancellation, events, cached results."""

import threading
import time

import pytest

from likeness.core.errors import NotFound
from likeness.orchestrator.jobstore import JobStore


@pytest.fixture(params=["sqlite", "postgres"])
def jobs(request, tmp_path):
    if request.param == "sqlite":
        store = JobStore(f"sqlite:///{tmp_path}/jobs.db")
    else:
        url = request.getfixturevalue("postgres_url")
        store = JobStore(url)
        from likeness.orchestrator.db import Base

        with store.engine.begin() as conn:  # a clean slate per test on the shared server
            for table in reversed(Base.metadata.sorted_tables):
                conn.execute(table.delete())
    yield store
    store.close()


def test_submit_is_idempotent_per_key(jobs):
    a, created = jobs.submit("curate", b"spec", "key-1")
    b, created_again = jobs.submit("curate", b"other", "key-1")
    assert created and not created_again and a.job_id == b.job_id
    c, _ = jobs.submit("curate", b"spec", "")
    d, _ = jobs.submit("curate", b"spec", "")
    assert c.job_id != d.job_id  # no key, no deduplication


def test_expired_lease_is_taken_over_and_old_owner_is_fenced(jobs):
    job, _ = jobs.submit("train", b"s")
    first = jobs.lease_next("replica-a", lease_seconds=0.3)
    assert first.job_id == job.job_id and first.attempts == 1
    assert jobs.lease_next("replica-b", 5) is None  # still leased
    time.sleep(0.4)
    second = jobs.lease_next("replica-b", 5)
    assert second.job_id == job.job_id and second.attempts == 2
    assert jobs.heartbeat(job.job_id, "replica-a", 5) == (False, False)  # fenced out
    assert not jobs.finish(job.job_id, "replica-a", "SUCCEEDED")
    assert jobs.finish(job.job_id, "replica-b", "SUCCEEDED", summary={"n": "1"})
    got = jobs.get(job.job_id)
    assert got.state == "SUCCEEDED" and got.summary == {"n": "1"}
    messages = [e.message for e in jobs.events_after(job.job_id, 0)]
    assert any("resumed by replica-b (attempt 2)" in m for m in messages)


def test_racing_replicas_never_share_a_job(jobs):
    ids = {jobs.submit("curate", b"s")[0].job_id for _ in range(12)}
    taken: list[tuple[str, str]] = []
    lock = threading.Lock()

    def replica(name):
        # A lost race returns None too; the winner of that race keeps leasing, so every job is taken.
        while (job := jobs.lease_next(name, 60)) is not None:
            with lock:
                taken.append((job.job_id, name))

    threads = [threading.Thread(target=replica, args=(f"r{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(j for j, _ in taken) == sorted(ids)  # every job once, none twice


def test_cancel_queued_and_running(jobs):
    queued, _ = jobs.submit("curate", b"s")
    assert jobs.request_cancel(queued.job_id).state == "CANCELLED"
    running, _ = jobs.submit("curate", b"s")
    jobs.lease_next("a", 30)
    assert jobs.request_cancel(running.job_id).cancel_requested
    assert jobs.heartbeat(running.job_id, "a", 30) == (True, True)
    with pytest.raises(NotFound):
        jobs.request_cancel("nope")


def test_work_results_are_content_addressed(jobs):
    assert jobs.get_result("w1") is None
    jobs.put_result("w1", "assess", b"abc")
    jobs.put_result("w1", "assess", b"abc")  # a second replica storing the same result is harmless
    assert jobs.get_result("w1") == b"abc"
