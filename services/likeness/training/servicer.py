"""TrainingService over gRPC: protobuf in, domain calls (runs.TrainingRuns), protobuf out."""

from __future__ import annotations

import asyncio

from likeness.api.v1 import training_pb2, training_pb2_grpc
from likeness.core import pages
from likeness.training import convert
from likeness.training.runs import TrainingRuns


class TrainingServicer(training_pb2_grpc.TrainingServiceServicer):
    def __init__(self, runs: TrainingRuns):
        self._runs = runs

    async def StartRun(self, request, context):
        spec = convert.spec_from_pb(request.spec)
        run = await asyncio.to_thread(self._runs.start, spec, request.resume_from_run_id)
        return training_pb2.StartRunResponse(run=convert.run_pb(run))

    async def WatchRun(self, request, context):
        async for event in self._runs.watch(request.run_id):
            yield convert.watch_pb(event)

    async def GetRun(self, request, context):
        run = await asyncio.to_thread(self._runs.get, request.run_id)
        return training_pb2.GetRunResponse(run=convert.run_pb(run))

    async def ListRuns(self, request, context):
        size = pages.page_size(request.page_size)
        cursor = pages.decode(request.page_token)
        runs = await asyncio.to_thread(self._runs.list, size + 1, convert.state_filter(request.state), cursor)
        summaries, token = pages.fill(runs, size, convert.run_summary_pb, lambda r: pages.Cursor(r.created_at, r.run_id))
        return training_pb2.ListRunsResponse(runs=summaries, next_page_token=token)

    async def CancelRun(self, request, context):
        run = await asyncio.to_thread(self._runs.cancel, request.run_id)
        return training_pb2.CancelRunResponse(run=convert.run_pb(run))

    async def CompareRuns(self, request, context):
        table = await asyncio.to_thread(self._runs.compare, list(request.run_ids))
        return convert.comparison_pb(table)
