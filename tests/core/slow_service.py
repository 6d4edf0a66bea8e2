"""A test-only service for runtime tests: warm-up waits for a file, ListModels sleeps on request.

Run as `python tests/core/slow_service.py` with LIKENESS_* settings in the environment.
`ListModels` sleeps for `LIKENESS_TEST_SLOW_SECONDS` and returns one fake ModelInfo named `slow`;
a real servicer would never do this, it only gives the runtime a call that is in flight.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from likeness.api.v1 import generation_pb2, generation_pb2_grpc
from likeness.core.server import Service, run
from likeness.core.settings import CommonSettings


class SlowServicer(generation_pb2_grpc.GenerationServiceServicer):
    async def ListModels(self, request, context):
        await asyncio.sleep(float(os.environ.get("LIKENESS_TEST_SLOW_SECONDS", "2")))
        return generation_pb2.ListModelsResponse(models=[generation_pb2.ModelInfo(name="slow")])


def create_service() -> Service:
    gate = Path(os.environ["LIKENESS_TEST_WARM_GATE"])

    async def warmup():
        while not gate.exists():  # the test decides when warm-up ends
            await asyncio.sleep(0.05)

    name = generation_pb2.DESCRIPTOR.services_by_name["GenerationService"].full_name
    return Service("generation", [(generation_pb2_grpc.add_GenerationServiceServicer_to_server, SlowServicer())],
                   [name], warmup=warmup)


if __name__ == "__main__":
    run(create_service, CommonSettings())
