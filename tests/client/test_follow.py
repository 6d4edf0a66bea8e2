"""JobsClient.follow draws one bar per stage: a stage without a total does not show the last stage's."""

from __future__ import annotations

import io

from rich.console import Console

from likeness.api.v1 import common_pb2, orchestrator_pb2
from likeness.client.jobs_client import JobsClient

EV = orchestrator_pb2


def _events():
    yield EV.WatchResponse(seq=1, type=EV.EVENT_TYPE_STAGE_STARTED, stage="validate")
    yield EV.WatchResponse(seq=2, type=EV.EVENT_TYPE_PROGRESS, stage="validate",
                      progress=common_pb2.Progress(stage="validate", done=70, total=70))
    yield EV.WatchResponse(seq=3, type=EV.EVENT_TYPE_STAGE_STARTED, stage="cluster")
    yield EV.WatchResponse(seq=4, type=EV.EVENT_TYPE_FINISHED)


def test_a_stage_without_progress_does_not_inherit_the_last_stages_total():
    client = JobsClient.__new__(JobsClient)  # no channel: events and get are the test's
    client.events = lambda job_id, seq: _events()
    client.get = lambda job_id: EV.Job(job_id="j", state=EV.JOB_STATE_SUCCEEDED)
    out = io.StringIO()
    job = client.follow("j", Console(file=out, width=120, force_terminal=False))
    assert job.state == EV.JOB_STATE_SUCCEEDED
    final = out.getvalue().strip().splitlines()[-1]
    assert final.startswith("succeeded") and "0/70" not in final, out.getvalue()
    assert "0/?" not in final and "1/1" in final, final  # a finished job's last bar is whole


def test_a_failed_job_keeps_its_last_stages_count():
    client = JobsClient.__new__(JobsClient)
    client.events = lambda job_id, seq: _events()
    client.get = lambda job_id: EV.Job(job_id="j", state=EV.JOB_STATE_FAILED)
    out = io.StringIO()
    client.follow("j", Console(file=out, width=120, force_terminal=False))
    final = out.getvalue().strip().splitlines()[-1]
    assert final.startswith("failed") and "1/1" not in final, final
