"""Open the eyes: for each face (or the chosen one), one after another on the frame holding the
faces repaired before it, on the face's work crop (work_crop.py):

    eye mask -> cut the work crop -> inpaint N variations (the whole denoised region, unpasted)
    -> feathered composite (the only paste; its seam measured) -> restore the face (optional;
    confined to the face) -> measure each variation (eye openness before/after, identity to the
    input face, seam) -> rank; the winner's crop goes back into the frame, the next face is cut
    from it.

The source is decoded once; every service call of a face works on its crop, so no full frame is
encoded or decoded per variation; result.png is the one full-frame encode. Every figure, the
ranking and the winner go to the manifest and the report; a variation whose eyes are not open is
marked so and never called a success. Variation PNGs are the repaired crops, with their
`crop_box` in the source frame. PNG metadata is what generation ran (its own A1111 `parameters`),
plus the job's fields.
"""

from __future__ import annotations

import asyncio

import numpy as np

from likeness.api.v1 import orchestrator_pb2
from likeness.core.errors import FailedPrecondition
from likeness.core.images import encode_png
from likeness.core.pngmeta import add_png_metadata
from likeness.generation.presets import MODE_NAMES
from likeness.orchestrator.context import JobContext, Outcome
from likeness.orchestrator.workflows import open_eyes_calls as calls
from likeness.orchestrator.workflows.common import stored_uri
from likeness.orchestrator.workflows.job_pixels import job_pixels
from likeness.orchestrator.workflows.open_eyes_calls import FEATHER_REACH_PX, FaceWork, Variation
from likeness.orchestrator.workflows.open_eyes_report import outcome
from likeness.orchestrator.workflows.work_crop import first_guess, place_back, union

__all__ = ["FEATHER_REACH_PX", "run"]
MAX_CROP_GROWTHS = 3


async def _work_crop(ctx: JobContext, frame: np.ndarray, face, k: int, out_prefix: str) -> FaceWork:
    """The face's eye mask on its work crop, the crop grown while the denoised region (mask box plus
    inpaint context) reaches past it (a mask box cut by the smaller crop can grow once more); the
    crop's pixels cut from `frame` and stored."""
    height, width = frame.shape[:2]
    async with ctx.stage("mask"):
        work = await calls.eye_mask(ctx, face, first_guess(face, width, height), out_prefix)
        for _ in range(MAX_CROP_GROWTHS):
            if work.fits(width, height):
                break
            work = await calls.eye_mask(ctx, face, union(work.crop, work.needed(width, height)), out_prefix)
        if not work.fits(width, height):
            raise FailedPrecondition("spec.open_eyes.image", f"face {k}: the eye mask's denoised region "
                                     f"{work.needed(width, height)} does not settle inside a work crop")
    async with ctx.stage("crop"):
        x0, y0, x1, y1 = work.crop
        png = await asyncio.to_thread(encode_png, np.ascontiguousarray(frame[y0:y1, x0:x1]))
        stored = await asyncio.to_thread(ctx.store.put, f"{out_prefix}crops/face-{k:02d}.png", png, "image/png")
    work.index, work.crop_uri = k, stored.uri
    return work


async def _repair_face(ctx: JobContext, spec: orchestrator_pb2.OpenEyesSpec, frame: np.ndarray, face, k: int,
                       out_prefix: str) -> FaceWork:
    work = await _work_crop(ctx, frame, face, k, out_prefix)
    async with ctx.stage("inpaint"):
        seed = spec.seed + k * max(spec.variations, 1)  # each face its own seeds
        variations = await calls.inpaint(ctx, spec, work, seed, out_prefix)
    async with ctx.stage("composite"):
        await calls.composite(ctx, work, variations, out_prefix)
    if spec.restore:
        async with ctx.stage("restore"):
            await calls.restore(ctx, spec, work, variations, out_prefix)
    async with ctx.stage("verify"):
        await calls.verify(ctx, work, variations)
    work.ranked = sorted(variations, key=Variation.rank_key)
    async with ctx.stage("crop"):  # the winner back into the frame: the next face is cut from it
        winner = await asyncio.to_thread(job_pixels, ctx, work.ranked[0].final)
        place_back(frame, work.crop, winner)
    return work


def _chosen_faces(spec: orchestrator_pb2.OpenEyesSpec, result) -> list[int]:
    if result.HasField("error") and result.error.code:
        raise FailedPrecondition("spec.open_eyes.image", result.error.message)
    if not result.faces:
        raise FailedPrecondition("spec.open_eyes.image", "no face found: nothing to repair")
    if spec.HasField("face_index"):
        if spec.face_index >= len(result.faces):
            raise FailedPrecondition("spec.open_eyes.face_index", f"{spec.face_index} but the image has "
                                     f"{len(result.faces)} face(s) (0 to {len(result.faces) - 1})")
        return [spec.face_index]
    return list(range(len(result.faces)))


async def run(ctx: JobContext, spec: orchestrator_pb2.OpenEyesSpec) -> Outcome:
    out_prefix = f"jobs/{ctx.job_id}/open_eyes/"
    await ctx.models.generation_model(ctx.clients, spec.model)
    async with ctx.stage("detect"):
        src = await stored_uri(ctx, spec.image)
        result = (await calls.detect(ctx, [src], "detect")).results[0]
        chosen = _chosen_faces(spec, result)
    async with ctx.stage("crop"):
        frame = np.array(await asyncio.to_thread(job_pixels, ctx, src))  # the job's own, writable copy
    repaired = [await _repair_face(ctx, spec, frame, result.faces[k], k, out_prefix) for k in chosen]
    async with ctx.stage("metadata"):
        outputs = await _write_results(ctx, spec, src, repaired, frame, out_prefix)
    done = await outcome(ctx, spec, src, result, repaired, outputs, out_prefix, frame)
    label = (f"inpainting: {ctx.models.label('generator')}; faces: {ctx.models.label('detector')}; "
             f"restoration: {ctx.models.label('restorer') if spec.restore else 'off'}")
    for section in done.report.get("sections", []):
        if section["type"] in ("gallery", "table"):
            section.setdefault("model", label)
    return done


async def _write_results(ctx: JobContext, spec: orchestrator_pb2.OpenEyesSpec, src: str, repaired: list[FaceWork],
                         frame: np.ndarray, out_prefix: str) -> dict:
    """Every variation (its repaired work crop) and the final image, with true PNG metadata."""
    models = ctx.models.as_list()
    job = {"job": ctx.job_id, "source": src, "quality_mode": MODE_NAMES.get(spec.quality_mode, "standard"),
           "restore": spec.restore, "models": models}
    # provenance in the A1111 text too: which models were stand-ins (no ':' or ',' in the value)
    stand_ins = "; ".join(f"{e['name']} ({e['stand_in']})" for e in models if e["stand_in"])

    def text(parameters: str, extra: dict) -> str | None:
        return parameters + "".join(f", {k}: {v}" for k, v in extra.items()) if parameters else None

    def tag(uri: str, parameters: str, extra: dict, record: dict, key: str):
        png = add_png_metadata(ctx.store.get(uri), text(parameters, extra), {**job, **extra, **record})
        return ctx.store.put(f"{out_prefix}{key}", png, "image/png")

    variations = []
    for work in repaired:
        for rank, v in enumerate(work.ranked):
            extra = {"Likeness job": ctx.job_id, "Face": work.index, "Variation": v.index, "Rank": rank + 1,
                     "Quality mode": job["quality_mode"], **({"Stand-in models": stand_ins} if stand_ins else {})}
            if v.restoration:
                extra.update({"Face restoration": v.restoration["model"],
                              "Restore fidelity": v.restoration["fidelity"]})
            obj = await asyncio.to_thread(tag, v.final, v.parameters, extra, {"crop_box": list(work.crop)},
                                          f"face-{work.index:02d}-variation-{v.index:02d}.png")
            variations.append({**v.to_dict(), "crop_box": list(work.crop), "rank": rank + 1, "uri": obj.uri,
                               "sha256": obj.sha256})
    final_extra = {"Likeness job": ctx.job_id, "Faces repaired": len(repaired), "Quality mode": job["quality_mode"],
                   **({"Stand-in models": stand_ins} if stand_ins else {})}
    png = await asyncio.to_thread(encode_png, frame, text(repaired[-1].ranked[0].parameters, final_extra),
                                  {**job, **final_extra})
    final_obj = await asyncio.to_thread(ctx.store.put, f"{out_prefix}result.png", png, "image/png")
    return {"variations": variations, "result": {"uri": final_obj.uri, "sha256": final_obj.sha256}}
