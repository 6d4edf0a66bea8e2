"""The runner without model services: a replica dies mid-job, another takes the job over after the
lease expires and finishes it without redoing finished work; cancellation stops a job."""

import asyncio
import json

import pytest

from likeness.api.v1 import common_pb2, orchestrator_pb2
from likeness.core.settings import CommonSettings
from likeness.core.store import open_store
from likeness.orchestrator import runner as runner_mod
from likeness.orchestrator.clients import ServiceClients
from likeness.orchestrator.context import Outcome
from likeness.orchestrator.jobstore import JobStore
from likeness.orchestrator.settings import OrchestratorSettings

CALLS: list[int] = []


async def counting_workflow(ctx, spec):
    """Ten units of work, each content-addressed; the manifest depends only on their results."""
    results = []
    async with ctx.stage("steps"):
        for i in range(10):
            async def call(i=i):
                CALLS.append(i)
                await asyncio.sleep(0.05)
                return common_pb2.Progress(stage="step", done=i * i)

            r = await ctx.cached("step", {"i": i, "target": spec.target_count}, call, common_pb2.Progress)
            results.append(r.done)
            await ctx.progress("steps", i + 1, 10)
    return Outcome({"sum": sum(results)}, {"results": results},
                   {"sections": [{"type": "text", "title": "t", "body": "ok"}]})


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setitem(runner_mod.WORKFLOWS, "curate", counting_workflow)
    CALLS.clear()
    settings = OrchestratorSettings(orchestrator_database_url=f"sqlite:///{tmp_path}/jobs.db",
                                    store_uri=f"file://{tmp_path}/store", orchestrator_lease_seconds=0.6,
                                    orchestrator_heartbeat_seconds=0.1, orchestrator_poll_seconds=0.05)
    jobs = JobStore(settings.orchestrator_database_url)
    yield settings, jobs, open_store(CommonSettings(store_uri=settings.store_uri))
    jobs.close()


def make_runner(settings, jobs, store, name):
    return runner_mod.Runner(settings.model_copy(update={"orchestrator_replica_id": name}), jobs, store,
                             ServiceClients(settings))


def spec_bytes():
    return orchestrator_pb2.JobSpec(curate=orchestrator_pb2.CurateSpec(target_count=3)).SerializeToString()


def test_dead_replica_job_is_resumed_without_redoing_work(env):
    settings, jobs, store = env

    async def scenario():
        job, _ = jobs.submit("curate", spec_bytes())
        a = make_runner(settings, jobs, store, "replica-a")
        loop_a = asyncio.create_task(a.run_forever())
        while len(CALLS) < 5:
            await asyncio.sleep(0.01)
        # replica-a dies: its tasks vanish without finishing the job or releasing the lease
        loop_a.cancel()
        for t in list(a.tasks.values()):
            t.cancel()
        await asyncio.sleep(0.05)
        assert jobs.get(job.job_id).state == "RUNNING"
        b = make_runner(settings, jobs, store, "replica-b")
        loop_b = asyncio.create_task(b.run_forever())
        for _ in range(400):
            if jobs.get(job.job_id).state != "RUNNING":
                break
            await asyncio.sleep(0.02)
        await b.stop()
        loop_b.cancel()
        return jobs.get(job.job_id)

    done = asyncio.run(scenario())
    assert done.state == "SUCCEEDED", done.error
    assert done.attempts == 2
    # at most the one unit in flight at the kill is computed twice
    assert len(CALLS) <= 11 and sorted(set(CALLS)) == list(range(10))
    assert int(done.summary["work_reused"]) >= 4
    manifest = json.loads(store.get(done.manifest["uri"]))
    assert manifest["results"] == [i * i for i in range(10)]
    report = store.get(done.report["uri"]).decode()
    assert "<h2>Summary</h2>" in report and "Stage timings" in report


def test_cancel_stops_a_running_job(env):
    settings, jobs, store = env

    async def scenario():
        job, _ = jobs.submit("curate", spec_bytes())
        r = make_runner(settings, jobs, store, "solo")
        loop = asyncio.create_task(r.run_forever())
        while len(CALLS) < 2:
            await asyncio.sleep(0.01)
        jobs.request_cancel(job.job_id)
        for _ in range(200):
            if jobs.get(job.job_id).state != "RUNNING":
                break
            await asyncio.sleep(0.02)
        await r.stop()
        loop.cancel()
        return jobs.get(job.job_id)

    done = asyncio.run(scenario())
    assert done.state == "CANCELLED"
    assert len(CALLS) < 10
