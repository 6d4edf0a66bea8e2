"""Open the eyes (seed doc 003): detect -> eye mask -> inpaint N variations in one batched call ->
feathered composite -> restore -> PNG metadata, with per-stage timings in the report."""

from __future__ import annotations

import asyncio

from likeness.api.v1 import detection_pb2, generation_pb2, restoration_pb2
from likeness.core.errors import FailedPrecondition
from likeness.core.pngmeta import add_png_metadata, format_parameters
from likeness.orchestrator.context import JobContext, Outcome
from likeness.orchestrator.workflows.common import REASONS, stored_image_uri, uri_input

DEFAULT_PROMPT = "open eyes, detailed iris, natural eyelids"


async def run(ctx: JobContext, spec) -> Outcome:
    prompt = spec.prompt or DEFAULT_PROMPT
    variations = spec.variations or 1
    out_prefix = f"jobs/{ctx.job_id}/open_eyes/"
    async with ctx.stage("detect"):
        src = await stored_image_uri(ctx, spec.image)
        det_req = detection_pb2.DetectRequest(images=[uri_input(src)])
        det = await ctx.cached("detect", {"image": src}, lambda: ctx.clients.detection.call("Detect", det_req),
                               detection_pb2.DetectResponse)
        ctx.models.detection(det)
        await ctx.models.generation_model(ctx.clients, spec.model)
        r = det.results[0]
        if r.HasField("error") and r.error.code:
            raise FailedPrecondition("spec.open_eyes.image", r.error.message)
        if len(r.faces) != 1:
            why = REASONS.get(r.verdict.reason, "") or f"{len(r.faces)} faces"
            raise FailedPrecondition("spec.open_eyes.image", f"needs exactly one face, found {len(r.faces)} ({why})")
        face = r.faces[0]
    async with ctx.stage("mask"):
        mask_req = restoration_pb2.RegionMaskRequest(
            items=[restoration_pb2.RegionMaskItem(width=r.width, height=r.height, landmarks=face.landmarks, face_box=face.box)],
            region=restoration_pb2.REGION_BOTH_EYES, padding_iod=0.25, output_prefix=out_prefix)
        masks = await ctx.cached("mask", {"req": mask_req.SerializeToString().hex()},
                                 lambda: ctx.clients.restoration.call("RegionMask", mask_req), restoration_pb2.RegionMaskResponse)
        m = masks.results[0]
        if m.HasField("error") and m.error.code:
            raise FailedPrecondition("spec.open_eyes.image", f"eye mask: {m.error.message}")
        crop = m.crop_box
        pad = int(max(crop.x_max - crop.x_min, crop.y_max - crop.y_min) * 0.25)
    async with ctx.stage("inpaint"):
        gen_req = generation_pb2.GenerateRequest(
            model=spec.model, task=generation_pb2.TASK_INPAINT, prompt=prompt, seed=spec.seed, count=variations,
            steps=spec.steps, init_image=uri_input(src), mask=uri_input(m.mask.uri), crop_padding=max(pad, 8),
            quality_mode=spec.quality_mode, output_prefix=out_prefix)
        if spec.HasField("strength"):
            gen_req.strength = spec.strength
        gen = await ctx.cached("inpaint", {"req": gen_req.SerializeToString().hex()},
                               lambda: ctx.clients.generation.call("Generate", gen_req), generation_pb2.GenerateResponse)
    async with ctx.stage("composite"):
        comp_req = restoration_pb2.CompositeRequest(
            items=[restoration_pb2.CompositeItem(base=uri_input(src), patch=uri_input(g.artifact.uri), mask=uri_input(m.mask.uri))
                   for g in gen.images], output_prefix=out_prefix)
        comp = await ctx.cached("composite", {"req": comp_req.SerializeToString().hex()},
                                lambda: ctx.clients.restoration.call("Composite", comp_req), restoration_pb2.CompositeResponse)
        finals = [c.image.uri for c in comp.results]
    if spec.restore:
        async with ctx.stage("restore"):
            fidelity = spec.fidelity if spec.HasField("fidelity") else 0.7
            rest_req = restoration_pb2.RestoreRequest(
                items=[restoration_pb2.RestoreItem(image=uri_input(u), face_box=face.box, landmarks=face.landmarks) for u in finals],
                fidelity=fidelity, output_prefix=out_prefix)
            rest = await ctx.cached("restore", {"req": rest_req.SerializeToString().hex()},
                                    lambda: ctx.clients.restoration.call("Restore", rest_req), restoration_pb2.RestoreResponse)
            ctx.models.restoration(rest)
            finals = [x.image.uri for x in rest.results]
    async with ctx.stage("metadata"):
        outputs = []
        models = ctx.models.as_list()
        stand_ins = "; ".join(f"{e['name']}: {e['stand_in']}" for e in models if e["stand_in"])
        for i, (uri, g) in enumerate(zip(finals, gen.images, strict=True)):
            extra = {"Likeness job": ctx.job_id, "Variation": i, "Models": ", ".join(f"{e['role']}={e['name']}" for e in models)}
            if stand_ins:
                extra["Stand-in models"] = stand_ins
            params = format_parameters(prompt, "", spec.steps or 0, "inpaint", 0.0, g.seed, r.width, r.height, spec.model,
                                       extra=extra)
            request = {"job": ctx.job_id, "source": src, "mask": m.mask.uri, "seed": g.seed, "restore": spec.restore,
                       "models": models}

            def tag(uri=uri, params=params, request=request, i=i):
                png = add_png_metadata(ctx.store.get(uri), params, request)
                return ctx.store.put(f"{out_prefix}result-{i:02d}.png", png, "image/png")

            obj = await asyncio.to_thread(tag)
            outputs.append({"key": f"result-{i:02d}.png", "uri": obj.uri, "sha256": obj.sha256, "seed": g.seed})
    summary = {"variations": len(outputs), "face_score": f"{face.score:.3f}", "mask_area_px": m.area,
               "first_result": outputs[0]["uri"] if outputs else ""}
    manifest = {"source": src, "mask": {"uri": m.mask.uri, "sha256": m.mask.sha256},
                "crop_box": [crop.x_min, crop.y_min, crop.x_max, crop.y_max], "results": outputs}
    sections = [
        {"type": "gallery", "title": "Input, mask and results",
         "model": f"inpainting: {ctx.models.label('generator')}; faces: {ctx.models.label('detector')}; "
                  f"restoration: {ctx.models.label('restorer') if spec.restore else 'off'}",
         "groups": [{"name": "input", "items": [{"uri": src, "caption": "input"}, {"uri": m.mask.uri, "caption": "eye mask"}]},
                    {"name": "results", "items": [{"uri": o["uri"], "caption": f"seed {o['seed']}"} for o in outputs]}]},
        {"type": "bars", "title": "Stage timings", "unit": "s", "data": [[k, round(v, 4)] for k, v in ctx.timings.items()]},
    ]
    return Outcome(summary, manifest, {"sections": sections})
