"""TrainingService over gRPC: protobuf in, domain calls (runs.TrainingRuns), protobuf out."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from grpc.aio import ServicerContext

from likeness.api.v1 import training_pb2, training_pb2_grpc
from likeness.core import pages
from likeness.training import convert
from likeness.training.runs import TrainingRuns


class TrainingServicer(training_pb2_grpc.TrainingServiceServicer):
    def __init__(self, runs: TrainingRuns):
        self._runs = runs

    @staticmethod
    async def _run_pb(fn, run_id: str) -> training_pb2.Run:
        return convert.run_pb(await asyncio.to_thread(fn, run_id))

    async def StartRun(self, request: training_pb2.StartRunRequest,
                       context: ServicerContext) -> training_pb2.StartRunResponse:
        spec = convert.spec_from_pb(request.spec)
        run = await asyncio.to_thread(self._runs.start, spec, request.resume_from_run_id)
        return training_pb2.StartRunResponse(run=convert.run_pb(run))

    async def WatchRun(self, request: training_pb2.WatchRunRequest,
                       context: ServicerContext) -> AsyncIterator[training_pb2.WatchRunResponse]:
        async for event in self._runs.watch(request.run_id):
            yield convert.watch_pb(event)

    async def GetRun(self, request: training_pb2.GetRunRequest,
                     context: ServicerContext) -> training_pb2.GetRunResponse:
        return training_pb2.GetRunResponse(run=await self._run_pb(self._runs.get, request.run_id))

    async def ListRuns(self, request: training_pb2.ListRunsRequest,
                       context: ServicerContext) -> training_pb2.ListRunsResponse:
        size = pages.page_size(request.page_size)
        runs = await asyncio.to_thread(self._runs.list, size + 1, convert.state_filter(request.state),
                                       pages.decode(request.page_token))
        summaries, token = pages.fill(runs, size, convert.run_summary_pb,
                                      lambda r: pages.Cursor(r.created_at, r.run_id))
        return training_pb2.ListRunsResponse(runs=summaries, next_page_token=token)

    async def CancelRun(self, request: training_pb2.CancelRunRequest,
                        context: ServicerContext) -> training_pb2.CancelRunResponse:
        return training_pb2.CancelRunResponse(run=await self._run_pb(self._runs.cancel, request.run_id))

    async def CompareRuns(self, request: training_pb2.CompareRunsRequest,
                          context: ServicerContext) -> training_pb2.CompareRunsResponse:
        table = await asyncio.to_thread(self._runs.compare, list(request.run_ids))
        return convert.comparison_pb(table)
