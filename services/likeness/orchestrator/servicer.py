"""OrchestratorService: translates protobuf <-> the job store and spec validation."""

from __future__ import annotations

import asyncio

from google.protobuf.timestamp_pb2 import Timestamp

from likeness.api.v1 import common_pb2, orchestrator_pb2, orchestrator_pb2_grpc
from likeness.core import pages, tracing
from likeness.core.errors import InvalidArgument
from likeness.core.store import ArtifactStore
from likeness.orchestrator import capabilities, imports, specs
from likeness.orchestrator.changes import wait
from likeness.orchestrator.clients import ServiceClients
from likeness.orchestrator.jobstore import TERMINAL, EventRecord, JobRecord, JobStore

KIND_ENUM = {k: orchestrator_pb2.JobKind.Value(f"JOB_KIND_{k.upper()}") for k in specs.KINDS}
KIND_NAME = {v: k for k, v in KIND_ENUM.items()}
SUMMARY_ERROR_CHARS = 1000
# A stored spec is returned whole by Get, so it must fit a response with room to spare (an inline
# open-eyes photo is the only field that can come near this).
MAX_SPEC_BYTES = 16 * 1024 * 1024


def _ts(dt) -> Timestamp:
    ts = Timestamp()
    if dt is not None:
        ts.FromDatetime(dt)
    return ts


def _artifact(d: dict) -> common_pb2.Artifact:
    return common_pb2.Artifact(**d) if d else common_pb2.Artifact()


def job_pb(job: JobRecord) -> orchestrator_pb2.Job:
    p = job.progress or {}
    return orchestrator_pb2.Job(
        job_id=job.job_id, kind=KIND_ENUM[job.kind], state=orchestrator_pb2.JobState.Value(f"JOB_STATE_{job.state}"),
        spec=orchestrator_pb2.JobSpec.FromString(job.spec),
        progress=common_pb2.Progress(stage=p.get("stage", ""), done=p.get("done", 0), total=p.get("total", 0),
                                     message=p.get("message", "")),
        report=_artifact(job.report), manifest=_artifact(job.manifest), summary=job.summary, error=job.error,
        attempts=job.attempts, created_at=_ts(job.created_at), updated_at=_ts(job.updated_at), trace_id=job.trace_id)


def job_summary_pb(job: JobRecord) -> orchestrator_pb2.JobSummary:
    p = job.progress or {}
    return orchestrator_pb2.JobSummary(
        job_id=job.job_id, kind=KIND_ENUM[job.kind], state=orchestrator_pb2.JobState.Value(f"JOB_STATE_{job.state}"),
        progress=common_pb2.Progress(stage=p.get("stage", ""), done=p.get("done", 0), total=p.get("total", 0),
                                     message=p.get("message", "")[:SUMMARY_ERROR_CHARS]),
        report=_artifact(job.report), manifest=_artifact(job.manifest), summary=job.summary,
        error=job.error[:SUMMARY_ERROR_CHARS], attempts=job.attempts, created_at=_ts(job.created_at),
        updated_at=_ts(job.updated_at), trace_id=job.trace_id)


def event_pb(e: EventRecord, trace_id: str = "") -> orchestrator_pb2.WatchResponse:
    p = e.progress or {}
    return orchestrator_pb2.WatchResponse(
        job_id=e.job_id, seq=e.seq, time=_ts(e.time), type=orchestrator_pb2.EventType.Value(f"EVENT_TYPE_{e.type}"),
        stage=e.stage, message=e.message, state=orchestrator_pb2.JobState.Value(f"JOB_STATE_{e.state}"),
        progress=common_pb2.Progress(stage=p.get("stage", ""), done=p.get("done", 0), total=p.get("total", 0)),
        trace_id=trace_id)


class OrchestratorServicer(orchestrator_pb2_grpc.OrchestratorServiceServicer):
    def __init__(self, jobs: JobStore, store: ArtifactStore, clients: ServiceClients, poll_seconds: float = 0.25):
        self.jobs, self.store, self.clients = jobs, store, clients
        self.poll_seconds = poll_seconds

    async def _check_references(self, spec: orchestrator_pb2.JobSpec) -> None:
        field, uri = specs.dataset_of(spec)
        if uri:
            prefix = self.store.key_of(uri, field=field)
            if field == imports.FIELD and prefix and not prefix.endswith("/"):
                prefix += "/"
            keys = await asyncio.to_thread(self.store.list, prefix)
            if field == imports.FIELD:
                imports.layout(uri, prefix, keys)
            elif not keys:
                raise InvalidArgument(field, f"'{uri}' holds no objects")
        await capabilities.check(spec, self.clients)

    async def Submit(self, request, context):
        size = request.spec.ByteSize()
        if size > MAX_SPEC_BYTES:
            raise InvalidArgument("spec", f"{size:,} bytes, over the limit of {MAX_SPEC_BYTES:,}")
        kind = specs.validate(request.spec)
        await self._check_references(request.spec)
        job, _ = await asyncio.to_thread(self.jobs.submit, kind, request.spec.SerializeToString(), request.idempotency_key,
                                         tracing.traceparent())
        return orchestrator_pb2.SubmitResponse(job=job_pb(job))

    async def Get(self, request, context):
        return orchestrator_pb2.GetResponse(job=job_pb(await asyncio.to_thread(self.jobs.get, request.job_id)))

    async def List(self, request, context):
        size = pages.page_size(request.page_size)
        cursor = pages.decode(request.page_token)
        kind = KIND_NAME.get(request.kind, "") if request.kind else ""
        state = orchestrator_pb2.JobState.Name(request.state).removeprefix("JOB_STATE_") if request.state else ""
        jobs = await asyncio.to_thread(self.jobs.list, size + 1, kind, state, cursor)
        summaries, token = pages.fill(jobs, size, job_summary_pb, lambda j: pages.Cursor(j.created_at, j.job_id))
        return orchestrator_pb2.ListResponse(jobs=summaries, next_page_token=token)

    async def Cancel(self, request, context):
        return orchestrator_pb2.CancelResponse(job=job_pb(await asyncio.to_thread(self.jobs.request_cancel, request.job_id)))

    async def Watch(self, request, context):
        trace_id = (await asyncio.to_thread(self.jobs.get, request.job_id)).trace_id  # NOT_FOUND before streaming
        after = request.after_seq
        while True:
            changed = self.jobs.changes.listen(request.job_id)  # before the read: no write is missed
            events = await asyncio.to_thread(self.jobs.events_after, request.job_id, after)
            for e in events:
                after = e.seq
                yield event_pb(e, trace_id)
                if e.type == "FINISHED":
                    return
            if not events:
                job = await asyncio.to_thread(self.jobs.get, request.job_id)
                if job.state in TERMINAL and not await asyncio.to_thread(self.jobs.events_after, request.job_id, after):
                    return
                await wait(changed, self.poll_seconds)  # woken by this replica's writes, else polls

