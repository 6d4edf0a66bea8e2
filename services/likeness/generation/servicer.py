"""GenerationService: protobuf <-> domain translation only."""

from __future__ import annotations

import asyncio

from likeness.api.v1 import common_pb2, generation_pb2, generation_pb2_grpc
from likeness.core.convert import artifact_pb
from likeness.core.errors import InvalidArgument
from likeness.core.uris import validate_prefix
from likeness.generation.generator import GenerationResult, ImageGenerator
from likeness.generation.region import mask_from_rgb
from likeness.generation.request import AdapterRef, ControlRef, GenerationRequest

TASKS = {generation_pb2.TASK_UNSPECIFIED: "text-to-image", generation_pb2.TASK_TEXT_TO_IMAGE: "text-to-image",
         generation_pb2.TASK_IMAGE_TO_IMAGE: "image-to-image", generation_pb2.TASK_INPAINT: "inpaint"}
SAMPLERS = {generation_pb2.SAMPLER_UNSPECIFIED: "default", generation_pb2.SAMPLER_DDIM: "ddim",
            generation_pb2.SAMPLER_PNDM: "pndm", generation_pb2.SAMPLER_DPM_SOLVER_MULTISTEP: "dpm_solver_multistep",
            generation_pb2.SAMPLER_EULER: "euler", generation_pb2.SAMPLER_EULER_ANCESTRAL: "euler_ancestral",
            generation_pb2.SAMPLER_LCM: "lcm"}
QUALITY = {generation_pb2.QUALITY_MODE_UNSPECIFIED: "standard", generation_pb2.QUALITY_MODE_FAST: "fast",
           generation_pb2.QUALITY_MODE_STANDARD: "standard", generation_pb2.QUALITY_MODE_QUALITY: "quality",
           generation_pb2.QUALITY_MODE_ULTRA: "ultra"}
PASTES = {generation_pb2.PASTE_MODE_UNSPECIFIED: "mask", generation_pb2.PASTE_MODE_MASK: "mask",
          generation_pb2.PASTE_MODE_REGION: "region"}


def _enum(table: dict, value: int, field: str) -> str:
    if value not in table:
        raise InvalidArgument(field, f"unknown enum value {value}")
    return table[value]


class GenerationServicer(generation_pb2_grpc.GenerationServiceServicer):
    def __init__(self, generator: ImageGenerator, images, engine_name: str):
        self._generator, self._images, self._engine_name = generator, images, engine_name

    async def _request(self, pb: generation_pb2.GenerateRequest) -> GenerationRequest:
        validate_prefix(pb.output_prefix, "output_prefix")  # before any image is loaded or model touched

        def opt(name):
            return getattr(pb, name) if pb.HasField(name) else None

        async def image(name):
            return await self._images.load_one(getattr(pb, name), name) if pb.HasField(name) else None

        mask = await image("mask")
        controls = [ControlRef(await self._images.load_one(c.image, f"controls[{i}].image"), c.model,
                               c.scale if c.HasField("scale") else None, c.start if c.HasField("start") else None,
                               c.end if c.HasField("end") else None) for i, c in enumerate(pb.controls)]
        return GenerationRequest(
            model=pb.model, task=_enum(TASKS, pb.task, "task"), prompt=pb.prompt, negative_prompt=pb.negative_prompt,
            seed=pb.seed, count=pb.count or 1, steps=pb.steps, guidance_scale=opt("guidance_scale"),
            width=pb.width, height=pb.height, sampler=_enum(SAMPLERS, pb.sampler, "sampler"),
            quality_mode=_enum(QUALITY, pb.quality_mode, "quality_mode"),
            adapters=[AdapterRef(a.uri, a.scale) for a in pb.adapters], init_image=await image("init_image"),
            strength=opt("strength"), mask=None if mask is None else mask_from_rgb(mask), crop_padding=pb.crop_padding,
            paste=_enum(PASTES, pb.paste, "paste"), controls=controls, refiner=pb.refiner, refiner_fraction=opt("refiner_fraction"),
            reference_image=await image("reference_image"), reference_scale=opt("reference_scale"),
            noise_injection=pb.noise_injection, return_inline=pb.return_inline, output_prefix=pb.output_prefix)

    @staticmethod
    def _response(result: GenerationResult) -> generation_pb2.GenerateResponse:
        t = result.timings
        return generation_pb2.GenerateResponse(
            images=[generation_pb2.GeneratedImage(artifact=artifact_pb(i.stored, i.data), seed=i.seed,
                                                  work_id=i.work_id, cached=i.cached) for i in result.images],
            warnings=result.warnings, model_digest=result.model_digest, lcm_lora=result.lcm_lora,
            timings=generation_pb2.GenerationTimings(
                queue_seconds=t.get("queue", 0.0), text_encoding_seconds=t.get("text_encoding", 0.0),
                denoising_seconds=t.get("denoising", 0.0), decoding_seconds=t.get("decoding", 0.0),
                batch_size=int(t.get("batch_size", 0))))

    async def Generate(self, request, context):
        result = await self._generator.generate(await self._request(request))
        return self._response(result)

    async def GenerateStream(self, request, context):
        loop = asyncio.get_running_loop()
        events: asyncio.Queue = asyncio.Queue()

        def progress(stage: str, done: int, total: int) -> None:  # worker thread
            loop.call_soon_threadsafe(events.put_nowait, common_pb2.Progress(
                stage=stage, done=done, total=total, message=f"{stage} step {done}/{total}"))

        domain = await self._request(request.request)
        task = asyncio.ensure_future(self._generator.generate(domain, progress))
        try:
            while not task.done() or not events.empty():
                getter = asyncio.ensure_future(events.get())
                await asyncio.wait({task, getter}, return_when=asyncio.FIRST_COMPLETED)
                if getter.done():
                    yield generation_pb2.GenerateStreamResponse(progress=getter.result())
                else:
                    getter.cancel()
            yield generation_pb2.GenerateStreamResponse(result=self._response(task.result()))
        finally:
            if not task.done():
                task.cancel()  # the client went away: its waiting images leave the queue

    async def ListModels(self, request, context):
        manager = self._generator.manager
        specs = await asyncio.to_thread(manager.repo.list)
        loaded = manager.loaded()
        return generation_pb2.ListModelsResponse(
            models=[generation_pb2.ModelInfo(name=s.name, kind=s.kind, backend=s.backend, digest=s.digest,
                                             loaded=s.name in loaded,
                                             memory_bytes=loaded[s.name].memory_bytes if s.name in loaded else 0,
                                             stand_in="random weights" if s.config.get("random_weights") else "")
                    for s in sorted(specs, key=lambda s: s.name)],
            engine=self._engine_name)
