"""Wake-ups on job store writes: a Watch stream and the job loop of the replica that wrote hear it
at once, long before their poll interval (here 30 s); other writers are still found by polling."""

import asyncio
import threading
import time

from likeness.api.v1 import orchestrator_pb2
from likeness.core.settings import CommonSettings
from likeness.core.store import open_store
from likeness.orchestrator import runner as runner_mod
from likeness.orchestrator.changes import Changes, wait
from likeness.orchestrator.clients import ServiceClients
from likeness.orchestrator.jobstore import JobStore
from likeness.orchestrator.servicer import OrchestratorServicer
from likeness.orchestrator.settings import OrchestratorSettings
from tests.orchestrator.replicas import counting_workflow, submit

POLL = 30.0


def test_notify_from_another_thread_wakes_a_listener_and_silence_times_out():
    changes = Changes()

    async def scenario():
        event = changes.listen("job-1")
        changes.notify("job-2")  # another key: no wake-up
        assert not await wait(event, 0.2)
        threading.Timer(0.05, changes.notify, args=("job-1",)).start()
        start = time.monotonic()
        assert await wait(event, POLL)
        return time.monotonic() - start

    assert asyncio.run(scenario()) < 5


def test_a_write_between_listen_and_wait_is_not_missed():
    changes = Changes()

    async def scenario():
        event = changes.listen("job-1")
        await asyncio.to_thread(changes.notify, "job-1")  # lands before anyone waits
        return await wait(event, 0.5)

    assert asyncio.run(scenario())


def test_watch_streams_events_as_written_and_the_job_loop_takes_a_submit_at_once(tmp_path, monkeypatch):
    monkeypatch.setitem(runner_mod.WORKFLOWS, "curate", counting_workflow)
    settings = OrchestratorSettings(orchestrator_database_url=f"sqlite:///{tmp_path}/jobs.db",
                                    store_uri=f"file://{tmp_path}/store", orchestrator_poll_seconds=POLL,
                                    orchestrator_heartbeat_seconds=POLL, orchestrator_lease_seconds=2 * POLL)
    jobs = JobStore(settings.orchestrator_database_url)
    store = open_store(CommonSettings(store_uri=settings.store_uri))
    servicer = OrchestratorServicer(jobs, store, ServiceClients(settings), poll_seconds=POLL)

    async def scenario():
        runner = runner_mod.Runner(settings, jobs, store, ServiceClients(settings))
        loop = asyncio.create_task(runner.run_forever())
        await asyncio.sleep(0.2)  # the loop polled once and now sleeps for POLL seconds
        start = time.monotonic()
        job_id = await asyncio.to_thread(submit, jobs)
        types = [e.type async for e in servicer.Watch(orchestrator_pb2.WatchRequest(job_id=job_id), None)]
        took = time.monotonic() - start
        await runner.stop()
        loop.cancel()
        return types, took

    try:
        types, took = asyncio.run(scenario())
    finally:
        jobs.close()
    assert types[-1] == orchestrator_pb2.EVENT_TYPE_FINISHED
    assert orchestrator_pb2.EVENT_TYPE_STAGE_STARTED in types
    assert took < POLL / 3, f"took {took:.1f}s: the job loop or the stream waited for a poll"
