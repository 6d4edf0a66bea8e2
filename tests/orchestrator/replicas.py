"""Runner replicas without model services, over one job store and store (tests/orchestrator/conftest.py
`replica_env`): a workflow of ten content-addressed units, and the scenarios the runner and fault
tests share (a replica dying mid-job and another taking over; one replica running a job)."""

from __future__ import annotations

import asyncio

from likeness.api.v1 import common_pb2, orchestrator_pb2
from likeness.orchestrator import runner as runner_mod
from likeness.orchestrator.clients import ServiceClients
from likeness.orchestrator.context import Outcome

CALLS: list[int] = []  # units computed, in order (a unit computed twice appears twice)


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


def make_runner(settings, jobs, store, name):
    return runner_mod.Runner(settings.model_copy(update={"orchestrator_replica_id": name}), jobs, store,
                             ServiceClients(settings))


def submit(jobs) -> str:
    """A curate job (the tests put their workflow under that kind); its id."""
    spec = orchestrator_pb2.JobSpec(curate=orchestrator_pb2.CurateSpec(target_count=3)).SerializeToString()
    return jobs.submit("curate", spec)[0].job_id


async def wait_while(jobs, job_id: str, states: tuple[str, ...], tries: int = 400):
    for _ in range(tries):
        if jobs.get(job_id).state not in states:
            break
        await asyncio.sleep(0.02)
    return jobs.get(job_id)


async def wait_calls(n: int) -> None:
    while len(CALLS) < n:
        await asyncio.sleep(0.01)


def take_over(env):
    """replica-a runs a job and dies holding the lease after five units (its tasks vanish without
    finishing the job or releasing the lease); replica-b takes the job over once the lease expires
    and finishes it. Returns the job's final record."""
    settings, jobs, store = env

    async def scenario():
        job_id = submit(jobs)
        a = make_runner(settings, jobs, store, "replica-a")
        loop_a = asyncio.create_task(a.run_forever())
        await wait_calls(5)
        loop_a.cancel()
        for t in list(a.tasks.values()):
            t.cancel()
        await asyncio.sleep(0.05)
        assert jobs.get(job_id).state == "RUNNING"
        b = make_runner(settings, jobs, store, "replica-b")
        loop_b = asyncio.create_task(b.run_forever())
        done = await wait_while(jobs, job_id, ("RUNNING",))
        await b.stop()
        loop_b.cancel()
        return done

    return asyncio.run(scenario())


def run_alone(env, while_running=None):
    """One replica runs a job until it ends; `while_running(job_id)` (async) runs beside it first."""
    settings, jobs, store = env

    async def scenario():
        job_id = submit(jobs)
        r = make_runner(settings, jobs, store, "solo")
        loop = asyncio.create_task(r.run_forever())
        if while_running is not None:
            await while_running(job_id)
        done = await wait_while(jobs, job_id, ("QUEUED", "RUNNING"))
        await r.stop()
        loop.cancel()
        return done

    return asyncio.run(scenario())
