"""GenerationService: protobuf <-> domain translation only."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from grpc.aio import ServicerContext

from likeness.api.v1 import common_pb2, generation_pb2, generation_pb2_grpc
from likeness.core.image_loader import ImageLoader
from likeness.generation.convert import generate_response, generation_request, models_response
from likeness.generation.generator import ImageGenerator


class GenerationServicer(generation_pb2_grpc.GenerationServiceServicer):
    def __init__(self, generator: ImageGenerator, images: ImageLoader, engine_name: str):
        self._generator, self._images, self._engine_name = generator, images, engine_name

    async def Generate(self, request: generation_pb2.GenerateRequest,
                       context: ServicerContext) -> generation_pb2.GenerateResponse:
        result = await self._generator.generate(await generation_request(request, self._images))
        return generate_response(result)

    async def GenerateStream(self, request: generation_pb2.GenerateStreamRequest,
                             context: ServicerContext) -> AsyncIterator[generation_pb2.GenerateStreamResponse]:
        loop = asyncio.get_running_loop()
        events: asyncio.Queue = asyncio.Queue()

        def progress(stage: str, done: int, total: int) -> None:  # worker thread
            loop.call_soon_threadsafe(events.put_nowait, common_pb2.Progress(
                stage=stage, done=done, total=total, message=f"{stage} step {done}/{total}"))

        domain = await generation_request(request.request, self._images)
        task = asyncio.ensure_future(self._generator.generate(domain, progress))
        try:
            while not task.done() or not events.empty():
                getter = asyncio.ensure_future(events.get())
                await asyncio.wait({task, getter}, return_when=asyncio.FIRST_COMPLETED)
                if getter.done():
                    yield generation_pb2.GenerateStreamResponse(progress=getter.result())
                else:
                    getter.cancel()
            yield generation_pb2.GenerateStreamResponse(result=generate_response(task.result()))
        finally:
            if not task.done():
                task.cancel()  # the client went away: its waiting images leave the queue

    async def ListModels(self, request: generation_pb2.ListModelsRequest,
                         context: ServicerContext) -> generation_pb2.ListModelsResponse:
        manager = self._generator.manager
        specs = await asyncio.to_thread(manager.repo.list)
        return models_response(specs, manager.loaded(), self._engine_name)
