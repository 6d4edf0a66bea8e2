"""OrchestratorService: translates protobuf <-> the job store and spec validation."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from grpc.aio import ServicerContext

from likeness.api.v1 import orchestrator_pb2, orchestrator_pb2_grpc
from likeness.core import pages, tracing
from likeness.core.errors import InvalidArgument
from likeness.core.store import ArtifactStore
from likeness.orchestrator import capabilities, imports, specs
from likeness.orchestrator.changes import wait
from likeness.orchestrator.clients import ServiceClients
from likeness.orchestrator.convert import KIND_NAME, event_pb, job_pb, job_summary_pb
from likeness.orchestrator.jobstore import TERMINAL, JobStore

# A stored spec is returned whole by Get, so it must fit a response with room to spare (an inline
# open-eyes photo is the only field that can come near this).
MAX_SPEC_BYTES = 16 * 1024 * 1024


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

    async def Submit(self, request: orchestrator_pb2.SubmitRequest,
                     context: ServicerContext) -> orchestrator_pb2.SubmitResponse:
        size = request.spec.ByteSize()
        if size > MAX_SPEC_BYTES:
            raise InvalidArgument("spec", f"{size:,} bytes, over the limit of {MAX_SPEC_BYTES:,}")
        kind = specs.validate(request.spec)
        await self._check_references(request.spec)
        job, _ = await asyncio.to_thread(self.jobs.submit, kind, request.spec.SerializeToString(),
                                         request.idempotency_key, tracing.traceparent())
        return orchestrator_pb2.SubmitResponse(job=job_pb(job))

    async def Get(self, request: orchestrator_pb2.GetRequest, context: ServicerContext) -> orchestrator_pb2.GetResponse:
        return orchestrator_pb2.GetResponse(job=job_pb(await asyncio.to_thread(self.jobs.get, request.job_id)))

    async def List(self, request: orchestrator_pb2.ListRequest,
                   context: ServicerContext) -> orchestrator_pb2.ListResponse:
        size = pages.page_size(request.page_size)
        cursor = pages.decode(request.page_token)
        kind = KIND_NAME.get(request.kind, "") if request.kind else ""
        state = orchestrator_pb2.JobState.Name(request.state).removeprefix("JOB_STATE_") if request.state else ""
        jobs = await asyncio.to_thread(self.jobs.list, size + 1, kind, state, cursor)
        summaries, token = pages.fill(jobs, size, job_summary_pb, lambda j: pages.Cursor(j.created_at, j.job_id))
        return orchestrator_pb2.ListResponse(jobs=summaries, next_page_token=token)

    async def Cancel(self, request: orchestrator_pb2.CancelRequest,
                     context: ServicerContext) -> orchestrator_pb2.CancelResponse:
        job = await asyncio.to_thread(self.jobs.request_cancel, request.job_id)
        return orchestrator_pb2.CancelResponse(job=job_pb(job))

    async def Watch(self, request: orchestrator_pb2.WatchRequest,
                    context: ServicerContext) -> AsyncIterator[orchestrator_pb2.WatchResponse]:
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

