"""Generation service process: model repository, engine, batcher; warm-up loads the keep-warm
models (building the tiny random-weight models first when enabled) and runs one generation."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from likeness.api.v1 import generation_pb2, generation_pb2_grpc
from likeness.core.image_loader import ImageLoader
from likeness.core.images import ImageLimits
from likeness.core.modelrepo import ModelRepository
from likeness.core.server import Service, run
from likeness.core.store import open_store
from likeness.generation.engines import create_engine
from likeness.generation.generator import ImageGenerator
from likeness.generation.models import ModelManager
from likeness.generation.request import GenerationRequest, Limits
from likeness.generation.servicer import GenerationServicer
from likeness.generation.settings import GenerationSettings

log = logging.getLogger("likeness.generation")

SERVICE_NAME = generation_pb2.DESCRIPTOR.services_by_name["GenerationService"].full_name


def create_generator(settings: GenerationSettings, store, repo: ModelRepository, engine,
                     keep_warm: list[str]) -> ImageGenerator:
    mb = 1024 * 1024
    manager = ModelManager(repo, engine, keep_warm=keep_warm,
                           idle_unload_seconds=settings.generation_idle_unload_seconds,
                           lora_budget_bytes=int(settings.generation_lora_budget_mb * mb),
                           device=settings.generation_device)
    return ImageGenerator(
        manager, store, limits=Limits(settings.generation_max_size, settings.generation_max_count,
                                      settings.generation_max_steps),
        max_batch=settings.generation_max_batch, max_wait=settings.generation_max_wait_ms / 1000,
        queue_capacity=settings.generation_queue_capacity, max_lora_bytes=int(settings.generation_max_lora_mb * mb),
        lora_budget_bytes=int(settings.generation_lora_budget_mb * mb))


def create_service(settings: GenerationSettings | None = None) -> Service:
    settings = settings or GenerationSettings()
    store = open_store(settings)
    repo = ModelRepository.from_settings(settings, store)
    engine = create_engine(settings)
    keep_warm = [n.strip() for n in settings.generation_keep_warm.split(",") if n.strip()]
    generator = create_generator(settings, store, repo, engine, keep_warm)
    manager = generator.manager
    images = ImageLoader(store, ImageLimits.from_settings(settings))
    servicer = GenerationServicer(generator, images, engine.name)
    reaper: list[asyncio.Task] = []

    async def warmup() -> None:
        if settings.generation_build_tiny_models:
            from likeness.diffusion.tiny_sdxl import TINY_MODELS, ensure_tiny_model

            for name in TINY_MODELS:
                await asyncio.to_thread(ensure_tiny_model, repo, name)
        for name in keep_warm:
            await generator.worker.run(manager.get, name)
        if keep_warm:
            # one real generation: first-call allocations and kernel selection happen before SERVING
            warm = GenerationRequest(model=keep_warm[0], prompt="warm-up", steps=1, width=64, height=64,
                                     output_prefix="warmup/")
            await generator.generate(warm)
        reaper.append(asyncio.ensure_future(_unload_idle_forever(generator, manager)))
        log.info("generation warm", extra={**engine.describe(), "models": keep_warm})

    async def shutdown() -> None:
        for task in reaper:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await generator.batcher.close()
        images.close()

    return Service(
        name="generation",
        servicers=[(generation_pb2_grpc.add_GenerationServiceServicer_to_server, servicer)],
        service_names=[SERVICE_NAME],
        warmup=warmup,
        shutdown=shutdown,
        description={**engine.describe(), "keep_warm": keep_warm, "max_batch": settings.generation_max_batch,
                     "max_wait_ms": settings.generation_max_wait_ms,
                     "queue_capacity": settings.generation_queue_capacity,
                     "model_repository": repo.root},
    )


async def _unload_idle_forever(generator: ImageGenerator, manager: ModelManager) -> None:
    period = max(1.0, min(60.0, manager.idle_unload_seconds / 4)) if manager.idle_unload_seconds else 60.0
    while True:
        await asyncio.sleep(period)
        if manager.idle_unload_seconds:
            await generator.worker.run(manager.unload_idle)


def main() -> None:
    run(create_service, GenerationSettings())


if __name__ == "__main__":
    main()
