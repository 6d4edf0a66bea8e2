"""OrchestratorService: translates protobuf <-> the job store and spec validation."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
from grpc.aio import ServicerContext

from likeness.api.v1 import generation_pb2, orchestrator_pb2, orchestrator_pb2_grpc
from likeness.core import tracing
from likeness.core.errors import InvalidArgument
from likeness.core.store import ArtifactStore
from likeness.orchestrator import specs
from likeness.orchestrator.clients import ServiceClients
from likeness.orchestrator.convert import KIND_NAME, event_pb, job_pb
from likeness.orchestrator.jobstore import TERMINAL, JobStore


class OrchestratorServicer(orchestrator_pb2_grpc.OrchestratorServiceServicer):
    def __init__(self, jobs: JobStore, store: ArtifactStore, clients: ServiceClients, poll_seconds: float = 0.25):
        self.jobs, self.store, self.clients = jobs, store, clients
        self.poll_seconds = poll_seconds

    async def _check_references(self, spec: orchestrator_pb2.JobSpec) -> None:
        field, uri = specs.dataset_of(spec)
        if uri:
            keys = await asyncio.to_thread(self.store.list, self.store.key_of(uri, field=field))
            if not keys:
                raise InvalidArgument(field, f"'{uri}' holds no objects")
        model = specs.model_of(spec)
        if model:
            try:
                listed = await self.clients.generation.stub.ListModels(generation_pb2.ListModelsRequest(), timeout=5)
            except grpc.aio.AioRpcError:
                return  # generation unreachable now: the job retries it when it runs
            names = sorted(m.name for m in listed.models)
            if model not in names:
                raise InvalidArgument("model", f"unknown model '{model}'; the model repository has: "
                                               f"{', '.join(names) or 'none'}")

    async def Submit(self, request: orchestrator_pb2.SubmitRequest,
                     context: ServicerContext) -> orchestrator_pb2.SubmitResponse:
        if len(request.idempotency_key) > 128:
            raise InvalidArgument("idempotency_key",
                                  f"{len(request.idempotency_key)} characters is over the limit of 128")
        kind = specs.validate(request.spec)
        await self._check_references(request.spec)
        job, _ = await asyncio.to_thread(self.jobs.submit, kind, request.spec.SerializeToString(),
                                         request.idempotency_key, tracing.traceparent())
        return orchestrator_pb2.SubmitResponse(job=job_pb(job))

    async def Get(self, request: orchestrator_pb2.GetRequest, context: ServicerContext) -> orchestrator_pb2.GetResponse:
        return orchestrator_pb2.GetResponse(job=job_pb(await asyncio.to_thread(self.jobs.get, request.job_id)))

    async def List(self, request: orchestrator_pb2.ListRequest,
                   context: ServicerContext) -> orchestrator_pb2.ListResponse:
        limit = request.limit or 100
        if not 1 <= limit <= 1000:
            raise InvalidArgument("limit", f"{limit} is outside [1, 1000]")
        kind = KIND_NAME.get(request.kind, "") if request.kind else ""
        state = orchestrator_pb2.JobState.Name(request.state).removeprefix("JOB_STATE_") if request.state else ""
        jobs = await asyncio.to_thread(self.jobs.list, limit, kind, state)
        return orchestrator_pb2.ListResponse(jobs=[job_pb(j) for j in jobs])

    async def Cancel(self, request: orchestrator_pb2.CancelRequest,
                     context: ServicerContext) -> orchestrator_pb2.CancelResponse:
        job = await asyncio.to_thread(self.jobs.request_cancel, request.job_id)
        return orchestrator_pb2.CancelResponse(job=job_pb(job))

    async def Watch(self, request: orchestrator_pb2.WatchRequest,
                    context: ServicerContext) -> AsyncIterator[orchestrator_pb2.WatchResponse]:
        trace_id = (await asyncio.to_thread(self.jobs.get, request.job_id)).trace_id  # NOT_FOUND before streaming
        after = request.after_seq
        while True:
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
                await asyncio.sleep(self.poll_seconds)

