"""The runner without model services: a replica dies mid-job, another takes the job over after the
lease expires and finishes it without redoing finished work; cancellation stops a job."""

import json

from tests.orchestrator.replicas import CALLS, run_alone, take_over, wait_calls


def test_dead_replica_job_is_resumed_without_redoing_work(replica_env):
    done = take_over(replica_env)
    assert done.state == "SUCCEEDED", done.error
    assert done.attempts == 2
    # at most the one unit in flight at the kill is computed twice
    assert len(CALLS) <= 11 and sorted(set(CALLS)) == list(range(10))
    assert int(done.summary["work_reused"]) >= 4
    _, _, store = replica_env
    manifest = json.loads(store.get(done.manifest["uri"]))
    assert manifest["results"] == [i * i for i in range(10)]
    report = store.get(done.report["uri"]).decode()
    assert "<h2>Summary</h2>" in report and "Stage timings" in report


def test_cancel_stops_a_running_job(replica_env):
    _, jobs, _ = replica_env

    async def cancel_after_two_units(job_id):
        await wait_calls(2)
        jobs.request_cancel(job_id)

    done = run_alone(replica_env, cancel_after_two_units)
    assert done.state == "CANCELLED"
    assert len(CALLS) < 10
