"""Protobuf <-> domain conversion of the generation service."""

from __future__ import annotations

from likeness.api.v1 import generation_pb2 as pb
from likeness.core.convert import artifact_pb
from likeness.core.errors import InvalidArgument
from likeness.core.image_loader import ImageLoader
from likeness.core.uris import validate_prefix
from likeness.generation.generator import GenerationResult
from likeness.generation.presets import MODE_NAMES
from likeness.generation.region import mask_from_rgb
from likeness.generation.request import AdapterRef, ControlRef, GenerationRequest

TASKS = {pb.TASK_UNSPECIFIED: "text-to-image", pb.TASK_TEXT_TO_IMAGE: "text-to-image",
         pb.TASK_IMAGE_TO_IMAGE: "image-to-image", pb.TASK_INPAINT: "inpaint"}
SAMPLERS = {pb.SAMPLER_UNSPECIFIED: "default", pb.SAMPLER_DDIM: "ddim", pb.SAMPLER_PNDM: "pndm",
            pb.SAMPLER_DPM_SOLVER_MULTISTEP: "dpm_solver_multistep", pb.SAMPLER_EULER: "euler",
            pb.SAMPLER_EULER_ANCESTRAL: "euler_ancestral", pb.SAMPLER_LCM: "lcm"}
PASTES = {pb.PASTE_MODE_UNSPECIFIED: "mask", pb.PASTE_MODE_MASK: "mask", pb.PASTE_MODE_REGION: "region"}


def _enum(table: dict, value: int, field: str) -> str:
    if value not in table:
        raise InvalidArgument(field, f"unknown enum value {value}")
    return table[value]


async def generation_request(request: pb.GenerateRequest, images: ImageLoader) -> GenerationRequest:
    """The domain request; image fields are decoded (and checked) by `images`."""
    validate_prefix(request.output_prefix, "output_prefix")  # before any image is loaded or model touched

    def opt(name):
        return getattr(request, name) if request.HasField(name) else None

    async def image(name):
        return await images.load_one(getattr(request, name), name) if request.HasField(name) else None

    mask = await image("mask")
    controls = [ControlRef(await images.load_one(c.image, f"controls[{i}].image"), c.model,
                           c.scale if c.HasField("scale") else None, c.start if c.HasField("start") else None,
                           c.end if c.HasField("end") else None) for i, c in enumerate(request.controls)]
    return GenerationRequest(
        model=request.model, task=_enum(TASKS, request.task, "task"), prompt=request.prompt,
        negative_prompt=request.negative_prompt, seed=request.seed, count=request.count or 1, steps=request.steps,
        guidance_scale=opt("guidance_scale"), width=request.width, height=request.height,
        sampler=_enum(SAMPLERS, request.sampler, "sampler"),
        quality_mode=_enum(MODE_NAMES, request.quality_mode, "quality_mode"),
        adapters=[AdapterRef(a.uri, a.scale) for a in request.adapters], init_image=await image("init_image"),
        strength=opt("strength"), mask=None if mask is None else mask_from_rgb(mask),
        crop_padding=request.crop_padding, paste=_enum(PASTES, request.paste, "paste"), controls=controls,
        refiner=request.refiner,
        refiner_fraction=opt("refiner_fraction"),
        reference_image=await image("reference_image"), reference_scale=opt("reference_scale"),
        noise_injection=request.noise_injection, return_inline=request.return_inline,
        output_prefix=request.output_prefix)


def generate_response(result: GenerationResult) -> pb.GenerateResponse:
    t = result.timings
    return pb.GenerateResponse(
        images=[pb.GeneratedImage(artifact=artifact_pb(i.stored, i.data), seed=i.seed, work_id=i.work_id,
                                  cached=i.cached, parameters=i.parameters) for i in result.images],
        warnings=result.warnings, model_digest=result.model_digest, lcm_lora=result.lcm_lora,
        timings=pb.GenerationTimings(
            queue_seconds=t.get("queue", 0.0), text_encoding_seconds=t.get("text_encoding", 0.0),
            denoising_seconds=t.get("denoising", 0.0), decoding_seconds=t.get("decoding", 0.0),
            batch_size=int(t.get("batch_size", 0))))


def models_response(specs, loaded: dict, engine: str) -> pb.ListModelsResponse:
    """`specs` of the repository; `loaded` maps names of loaded models to their `LoadedModel`."""
    return pb.ListModelsResponse(
        models=[pb.ModelInfo(name=s.name, kind=s.kind, backend=s.backend, digest=s.digest, loaded=s.name in loaded,
                             memory_bytes=loaded[s.name].memory_bytes if s.name in loaded else 0,
                             stand_in="random weights" if s.config.get("random_weights") else "")
                for s in sorted(specs, key=lambda s: s.name)],
        engine=engine)
