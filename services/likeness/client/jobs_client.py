"""Client side of the job API, shared by the CLI, the demo and the tests: submit a job, follow its
events with a progress bar, and return the finished job."""

from __future__ import annotations

import grpc
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from likeness.api.v1 import orchestrator_pb2, orchestrator_pb2_grpc
from likeness.core.channels import sync_channel

TERMINAL = (orchestrator_pb2.JOB_STATE_SUCCEEDED, orchestrator_pb2.JOB_STATE_FAILED,
            orchestrator_pb2.JOB_STATE_CANCELLED)


class JobsClient:
    def __init__(self, address: str, token: str = ""):
        self.channel = sync_channel(address)
        self.stub = orchestrator_pb2_grpc.OrchestratorServiceStub(self.channel)
        self.metadata = (("authorization", f"Bearer {token}"),) if token else ()

    def submit(self, spec: orchestrator_pb2.JobSpec, idempotency_key: str = "") -> orchestrator_pb2.Job:
        return self.stub.Submit(orchestrator_pb2.SubmitRequest(spec=spec, idempotency_key=idempotency_key),
                                metadata=self.metadata, timeout=60).job

    def get(self, job_id: str) -> orchestrator_pb2.Job:
        return self.stub.Get(orchestrator_pb2.GetRequest(job_id=job_id), metadata=self.metadata, timeout=30).job

    def list(self, limit: int = 50) -> list[orchestrator_pb2.JobSummary]:
        """The newest `limit` jobs (summaries without specs), following pages as needed."""
        jobs: list[orchestrator_pb2.JobSummary] = []
        token = ""
        while len(jobs) < limit:
            page = self.stub.List(orchestrator_pb2.ListRequest(page_size=min(1000, limit - len(jobs)),
                                                               page_token=token),
                                  metadata=self.metadata, timeout=30)
            jobs.extend(page.jobs)
            token = page.next_page_token
            if not token:
                break
        return jobs

    def cancel(self, job_id: str) -> orchestrator_pb2.Job:
        return self.stub.Cancel(orchestrator_pb2.CancelRequest(job_id=job_id), metadata=self.metadata, timeout=30).job

    def events(self, job_id: str, after_seq: int = 0):
        return self.stub.Watch(orchestrator_pb2.WatchRequest(job_id=job_id, after_seq=after_seq),
                               metadata=self.metadata)

    def follow(self, job_id: str, console: Console | None = None, quiet: bool = False) -> orchestrator_pb2.Job:
        """Streams the job's events (re-attaching after a broken stream) until it ends. The bar
        restarts at each stage and moves with every progress event (per item, frame or training
        step), with the time remaining estimated from the stage's pace so far."""
        console = console or Console(stderr=True)
        seq = 0
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      TextColumn("eta"), TimeRemainingColumn(), TextColumn("{task.fields[detail]}"),
                      console=console, disable=quiet, transient=False) as bar:
            task = bar.add_task("queued", total=None, detail="")
            while True:
                try:
                    for ev in self.events(job_id, seq):
                        seq = ev.seq
                        if ev.type == orchestrator_pb2.EVENT_TYPE_STAGE_STARTED:
                            # a new task, not reset(): reset keeps the last stage's total ("0/70" after validate)
                            bar.remove_task(task)
                            task = bar.add_task(f"[bold]{ev.stage}", total=None, detail="")
                        elif ev.type == orchestrator_pb2.EVENT_TYPE_PROGRESS and ev.progress.total:
                            bar.update(task, completed=ev.progress.done, total=ev.progress.total, detail=ev.message)
                        elif ev.type == orchestrator_pb2.EVENT_TYPE_WARNING and not quiet:
                            bar.console.print(f"[yellow]warning[/]: {ev.message}")
                        if ev.type == orchestrator_pb2.EVENT_TYPE_FINISHED:
                            break
                except grpc.RpcError as exc:
                    if exc.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                        raise
                job = self.get(job_id)
                if job.state in TERMINAL:
                    state = orchestrator_pb2.JobState.Name(job.state).removeprefix("JOB_STATE_").lower()
                    bar.update(task, description=state)
                    if job.state == orchestrator_pb2.JOB_STATE_SUCCEEDED:
                        # a last stage without progress events would end on "0/?": a finished job is whole
                        whole = next(t.total for t in bar.tasks if t.id == task) or 1
                        bar.update(task, total=whole, completed=whole)
                    return job

    def close(self) -> None:
        self.channel.close()
