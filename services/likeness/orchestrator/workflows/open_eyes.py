"""Open the eyes: detect -> eye mask -> inpaint N variations in one batched call -> feathered
composite -> restore -> PNG metadata, with per-stage timings in the report."""

from __future__ import annotations

import asyncio

from likeness.api.v1 import common_pb2, detection_pb2, generation_pb2, orchestrator_pb2, restoration_pb2
from likeness.core.errors import FailedPrecondition
from likeness.core.pngmeta import add_png_metadata, format_parameters
from likeness.orchestrator import report
from likeness.orchestrator.context import JobContext, Outcome
from likeness.orchestrator.specs import EYE_MASK_PADDING_IOD, OpenEyesPlan, inpaint_context_px, open_eyes_plan
from likeness.orchestrator.workflows.common import REASONS, uri_input

FIELD = "spec.open_eyes.image"


async def _source_uri(ctx: JobContext, spec: orchestrator_pb2.OpenEyesSpec) -> str:
    """The photo as a store URI (inline bytes are stored once, content-addressed)."""
    if spec.image.WhichOneof("source") == "uri":
        return spec.image.uri
    from likeness.core.workid import sha256_hex

    data = spec.image.data
    obj = await asyncio.to_thread(ctx.store.put, f"inputs/{sha256_hex(data)}", data, "application/octet-stream")
    return obj.uri


async def _detect(ctx: JobContext, source: str) -> detection_pb2.DetectResult:
    """The detection result of the photo, which must show exactly one face."""
    det = await ctx.call(ctx.clients.detection, "Detect", detection_pb2.DetectRequest(images=[uri_input(source)]),
                         work="detect", inputs={"image": source})
    result = det.results[0]
    if result.HasField("error") and result.error.code:
        raise FailedPrecondition(FIELD, result.error.message)
    if len(result.faces) != 1:
        why = REASONS.get(result.verdict.reason, "") or f"{len(result.faces)} faces"
        raise FailedPrecondition(FIELD, f"needs exactly one face, found {len(result.faces)} ({why})")
    return result


async def _eye_mask(ctx: JobContext, found: detection_pb2.DetectResult,
                    prefix: str) -> restoration_pb2.RegionMaskResult:
    face = found.faces[0]
    item = restoration_pb2.RegionMaskItem(width=found.width, height=found.height, landmarks=face.landmarks,
                                          face_box=face.box)
    req = restoration_pb2.RegionMaskRequest(items=[item], region=restoration_pb2.REGION_BOTH_EYES,
                                            padding_iod=EYE_MASK_PADDING_IOD, output_prefix=prefix)
    masks = await ctx.call(ctx.clients.restoration, "RegionMask", req, work="mask")
    mask = masks.results[0]
    if mask.HasField("error") and mask.error.code:
        raise FailedPrecondition(FIELD, f"eye mask: {mask.error.message}")
    return mask


async def _inpaint(ctx: JobContext, spec: orchestrator_pb2.OpenEyesSpec, plan: OpenEyesPlan, source: str,
                   mask: restoration_pb2.RegionMaskResult) -> generation_pb2.GenerateResponse:
    crop = mask.crop_box
    req = generation_pb2.GenerateRequest(
        model=spec.model, task=generation_pb2.TASK_INPAINT, prompt=plan.prompt, seed=spec.seed,
        count=plan.variations, steps=spec.steps, init_image=uri_input(source), mask=uri_input(mask.mask.uri),
        crop_padding=inpaint_context_px(crop.x_max - crop.x_min, crop.y_max - crop.y_min),
        quality_mode=spec.quality_mode, output_prefix=plan.output_prefix)
    if spec.HasField("strength"):
        req.strength = spec.strength
    return await ctx.call(ctx.clients.generation, "Generate", req, work="inpaint")


async def _composite(ctx: JobContext, source: str, mask_uri: str, patches: list[str], prefix: str) -> list[str]:
    items = [restoration_pb2.CompositeItem(base=uri_input(source), patch=uri_input(p), mask=uri_input(mask_uri))
             for p in patches]
    comp = await ctx.call(ctx.clients.restoration, "Composite",
                          restoration_pb2.CompositeRequest(items=items, output_prefix=prefix), work="composite")
    return [c.image.uri for c in comp.results]


async def _restore(ctx: JobContext, face: common_pb2.Face, images: list[str], plan: OpenEyesPlan) -> list[str]:
    items = [restoration_pb2.RestoreItem(image=uri_input(u), face_box=face.box, landmarks=face.landmarks)
             for u in images]
    req = restoration_pb2.RestoreRequest(items=items, fidelity=plan.fidelity, output_prefix=plan.output_prefix)
    rest = await ctx.call(ctx.clients.restoration, "Restore", req, work="restore")
    return [x.image.uri for x in rest.results]


async def _tag_outputs(ctx: JobContext, spec: orchestrator_pb2.OpenEyesSpec, plan: OpenEyesPlan, source: str,
                       found: detection_pb2.DetectResult, mask_uri: str, finals: list[str],
                       gen: generation_pb2.GenerateResponse) -> list[dict]:
    """Each result gets A1111 `parameters` and the job's request in its PNG metadata."""
    def tag(i: int, uri: str, seed: int) -> dict:
        params = format_parameters(plan.prompt, "", spec.steps or 0, "inpaint", 0.0, seed, found.width, found.height,
                                   spec.model, extra={"Likeness job": ctx.job_id, "Variation": i})
        request = {"job": ctx.job_id, "source": source, "mask": mask_uri, "seed": seed, "restore": spec.restore}
        png = add_png_metadata(ctx.store.get(uri), params, request)
        obj = ctx.store.put(f"{plan.output_prefix}result-{i:02d}.png", png, "image/png")
        return {"key": f"result-{i:02d}.png", "uri": obj.uri, "sha256": obj.sha256, "seed": seed}

    return [await asyncio.to_thread(tag, i, uri, g.seed)
            for i, (uri, g) in enumerate(zip(finals, gen.images, strict=True))]


async def run(ctx: JobContext, spec: orchestrator_pb2.OpenEyesSpec) -> Outcome:
    plan = open_eyes_plan(spec, ctx.job_id)
    async with ctx.stage("detect"):
        source = await _source_uri(ctx, spec)
        found = await _detect(ctx, source)
    async with ctx.stage("mask"):
        mask = await _eye_mask(ctx, found, plan.output_prefix)
    async with ctx.stage("inpaint"):
        gen = await _inpaint(ctx, spec, plan, source, mask)
    async with ctx.stage("composite"):
        finals = await _composite(ctx, source, mask.mask.uri, [g.artifact.uri for g in gen.images], plan.output_prefix)
    if spec.restore:
        async with ctx.stage("restore"):
            finals = await _restore(ctx, found.faces[0], finals, plan)
    async with ctx.stage("metadata"):
        outputs = await _tag_outputs(ctx, spec, plan, source, found, mask.mask.uri, finals, gen)
    return _outcome(ctx, source, found.faces[0], mask, outputs)


def _outcome(ctx: JobContext, source: str, face: common_pb2.Face, mask: restoration_pb2.RegionMaskResult,
             outputs: list[dict]) -> Outcome:
    crop = mask.crop_box
    summary = {"variations": len(outputs), "face_score": f"{face.score:.3f}", "mask_area_px": mask.area,
               "first_result": outputs[0]["uri"] if outputs else ""}
    manifest = {"source": source, "mask": {"uri": mask.mask.uri, "sha256": mask.mask.sha256},
                "crop_box": [crop.x_min, crop.y_min, crop.x_max, crop.y_max], "results": outputs}
    sections = [
        report.gallery("Input, mask and results", [
            report.group("input", [report.image(source, "input"), report.image(mask.mask.uri, "eye mask")]),
            report.group("results", [report.image(o["uri"], f"seed {o['seed']}") for o in outputs])]),
        report.stage_timings(ctx.timings),
    ]
    return Outcome(summary, manifest, {"sections": sections})
