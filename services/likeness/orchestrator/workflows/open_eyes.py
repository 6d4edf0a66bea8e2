"""Open the eyes: for each face (or the chosen one), one after another on the image holding the
faces repaired before it:

    eye mask -> inpaint N variations (the whole denoised region, unpasted) -> feathered composite
    (the only paste; its seam measured) -> restore the face (optional; confined to the face)
    -> measure each variation (eye openness before/after, identity to the input face, seam)
    -> rank; the winner is the base of the next face.

Every figure, the ranking and the winner go to the manifest and the report; a variation whose eyes
are not open is marked so and never called a success. PNG metadata is what generation ran (its own
A1111 `parameters`), plus the job's fields.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import numpy as np

from likeness.api.v1 import detection_pb2, generation_pb2, restoration_pb2
from likeness.core.errors import FailedPrecondition
from likeness.core.pngmeta import add_png_metadata, read_png_metadata
from likeness.orchestrator.context import JobContext, Outcome
from likeness.orchestrator.specs import OPEN_EYES_FIDELITY, OPEN_EYES_MASK_PADDING_IOD, OPEN_EYES_PROMPT
from likeness.orchestrator.workflows import eye_views
from likeness.orchestrator.workflows.common import stored_uri, uri_input
from likeness.orchestrator.workflows.job_pixels import job_pixels
from likeness.orchestrator.workflows.open_eyes_report import outcome

# Composite's default feather reaches dilation 4 + 3 x sigma 6 = 22 px beyond the mask; the
# denoised region must cover it, or the blend would meet the region's rectangular edge.
FEATHER_REACH_PX = 22
MIN_OPENNESS = 0.5  # eye openness (0 shut, 1 wide open) from which an eye counts as open
QUALITY_NAMES = {0: "standard", 1: "fast", 2: "standard", 3: "quality", 4: "ultra"}


@dataclass
class Variation:
    face: int
    index: int
    seed: int
    generated: str
    composite: str = ""
    final: str = ""
    seam: dict = field(default_factory=dict)
    identity: float | None = None
    openness_before: float | None = None
    openness_after: float | None = None
    restoration: dict = field(default_factory=dict)
    parameters: str = ""

    @property
    def eyes_open(self) -> bool | None:
        return None if self.openness_after is None else self.openness_after >= MIN_OPENNESS

    def rank_key(self) -> tuple:
        """Open eyes first, then identity kept, then the least visible seam."""
        seam = self.seam.get("boundary_gradient", 0.0) / max(self.seam.get("hard_gradient", 1.0), 1e-6)
        return (self.eyes_open is not True, -(self.identity if self.identity is not None else -1.0), seam)

    def to_dict(self) -> dict:
        return {"face": self.face, "variation": self.index, "seed": self.seed, "generated": self.generated,
                "composite": self.composite, "final": self.final, "seam": self.seam,
                "identity_similarity": self.identity, "eye_openness_before": self.openness_before,
                "eye_openness_after": self.openness_after, "eyes_open": self.eyes_open,
                "restoration": self.restoration}


def openness(face) -> float | None:
    """Mean eye openness of a detected face, when its backend measures it (the face mesh's lids)."""
    values = [getattr(face, n) for n in ("left_eye_openness", "right_eye_openness") if face.HasField(n)]
    return float(np.mean(values)) if values else None


async def _detect(ctx: JobContext, uris: list[str], kind: str) -> detection_pb2.DetectResponse:
    req = detection_pb2.DetectRequest(images=[uri_input(u) for u in uris], with_embeddings=True)
    resp = await ctx.call(kind, ctx.clients.detection, "Detect", req, detection_pb2.DetectResponse)
    ctx.models.detection(resp)
    return resp


async def _mask(ctx: JobContext, result, face, out_prefix: str):
    req = restoration_pb2.RegionMaskRequest(
        items=[restoration_pb2.RegionMaskItem(width=result.width, height=result.height, landmarks=face.landmarks,
                                              face_box=face.box)],
        region=restoration_pb2.REGION_BOTH_EYES, padding_iod=OPEN_EYES_MASK_PADDING_IOD, output_prefix=out_prefix)
    resp = await ctx.call("mask", ctx.clients.restoration, "RegionMask", req, restoration_pb2.RegionMaskResponse)
    m = resp.results[0]
    if m.HasField("error") and m.error.code:
        raise FailedPrecondition("spec.open_eyes.image", f"eye mask: {m.error.message}")
    return m


async def _inpaint(ctx: JobContext, spec, base: str, mask, seed: int, out_prefix: str):
    crop = mask.crop_box
    pad = int(max(crop.x_max - crop.x_min, crop.y_max - crop.y_min) * 0.25)
    req = generation_pb2.GenerateRequest(
        model=spec.model, task=generation_pb2.TASK_INPAINT, prompt=spec.prompt or OPEN_EYES_PROMPT,
        negative_prompt=spec.negative_prompt, seed=seed, count=spec.variations or 1, steps=spec.steps,
        init_image=uri_input(base), mask=uri_input(mask.mask.uri), crop_padding=max(pad, FEATHER_REACH_PX + 8),
        paste=generation_pb2.PASTE_MODE_REGION, quality_mode=spec.quality_mode, output_prefix=out_prefix)
    if spec.HasField("strength"):
        req.strength = spec.strength
    return await ctx.call("inpaint", ctx.clients.generation, "Generate", req, generation_pb2.GenerateResponse)


async def _composite(ctx: JobContext, base: str, mask, variations: list[Variation], out_prefix: str) -> None:
    req = restoration_pb2.CompositeRequest(
        items=[restoration_pb2.CompositeItem(base=uri_input(base), patch=uri_input(v.generated),
                                             mask=uri_input(mask.mask.uri)) for v in variations],
        output_prefix=out_prefix)
    resp = await ctx.call("composite", ctx.clients.restoration, "Composite", req, restoration_pb2.CompositeResponse)
    for v, r in zip(variations, resp.results, strict=True):
        s = r.seam
        v.composite = v.final = r.image.uri
        v.seam = {"boundary_gradient": round(s.boundary_gradient, 3), "hard_gradient": round(s.hard_gradient, 3),
                  "max_step": round(s.max_step, 3), "reference_step": round(s.reference_step, 3),
                  "invisible": s.max_step <= s.reference_step}


async def _restore(ctx: JobContext, spec, face, variations: list[Variation], out_prefix: str) -> None:
    fidelity = spec.fidelity if spec.HasField("fidelity") else OPEN_EYES_FIDELITY
    req = restoration_pb2.RestoreRequest(
        items=[restoration_pb2.RestoreItem(image=uri_input(v.composite), face_box=face.box, landmarks=face.landmarks)
               for v in variations], fidelity=fidelity, output_prefix=out_prefix)
    resp = await ctx.call("restore", ctx.clients.restoration, "Restore", req, restoration_pb2.RestoreResponse)
    ctx.models.restoration(resp)
    box = (face.box.x_min, face.box.y_min, face.box.x_max, face.box.y_max)
    for v, r in zip(variations, resp.results, strict=True):
        v.final = r.image.uri
        before, after = await asyncio.gather(*(asyncio.to_thread(job_pixels, ctx, u) for u in (v.composite, v.final)))
        v.restoration = {"model": resp.model, "fidelity": fidelity, **eye_views.changes(before, after, box)}


def _best_match(faces, box) -> object | None:
    """The detected face whose box overlaps `box` most (IoU), if any overlaps."""
    def iou(b):
        ix = max(0.0, min(b.x_max, box.x_max) - max(b.x_min, box.x_min))
        iy = max(0.0, min(b.y_max, box.y_max) - max(b.y_min, box.y_min))
        inter = ix * iy
        union = (b.x_max - b.x_min) * (b.y_max - b.y_min) + (box.x_max - box.x_min) * (box.y_max - box.y_min) - inter
        return inter / union if union > 0 else 0.0

    scored = [(iou(f.box), f) for f in faces]
    best = max(scored, key=lambda s: s[0], default=(0.0, None))
    return best[1] if best[0] > 0.3 else None


async def _verify(ctx: JobContext, face, variations: list[Variation]) -> None:
    """Eye openness and identity of the repaired face in every variation."""
    resp = await _detect(ctx, [v.final for v in variations], "verify")
    source = np.asarray(face.embedding.values, np.float32)
    for v, r in zip(variations, resp.results, strict=True):
        v.openness_before = openness(face)
        match = _best_match(r.faces, face.box)
        if match is None:
            continue  # the face is no longer found: identity and openness stay unmeasured
        v.openness_after = openness(match)
        emb = np.asarray(match.embedding.values, np.float32)
        if source.size and emb.size == source.size:
            v.identity = round(float(source @ emb), 4)


async def _parameters(ctx: JobContext, variations: list[Variation]) -> None:
    """What generation ran, from the A1111 `parameters` it wrote into each generated PNG."""
    for v in variations:
        png = await asyncio.to_thread(ctx.store.get, v.generated)
        v.parameters = read_png_metadata(png).get("parameters", "")


async def _repair_face(ctx: JobContext, spec, base: str, result, k: int, out_prefix: str):
    face = result.faces[k]
    async with ctx.stage("mask"):
        mask = await _mask(ctx, result, face, out_prefix)
    async with ctx.stage("inpaint"):
        seed = spec.seed + k * max(spec.variations, 1)  # each face its own seeds
        gen = await _inpaint(ctx, spec, base, mask, seed, out_prefix)
        variations = [Variation(k, i, g.seed, g.artifact.uri) for i, g in enumerate(gen.images)]
        await _parameters(ctx, variations)
    async with ctx.stage("composite"):
        await _composite(ctx, base, mask, variations, out_prefix)
    if spec.restore:
        async with ctx.stage("restore"):
            await _restore(ctx, spec, face, variations, out_prefix)
    async with ctx.stage("verify"):
        await _verify(ctx, face, variations)
    return mask, sorted(variations, key=Variation.rank_key)


def _chosen_faces(spec, result) -> list[int]:
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


async def run(ctx: JobContext, spec) -> Outcome:
    out_prefix = f"jobs/{ctx.job_id}/open_eyes/"
    await ctx.models.generation_model(ctx.clients, spec.model)
    async with ctx.stage("detect"):
        src = await stored_uri(ctx, spec.image)
        result = (await _detect(ctx, [src], "detect")).results[0]
        chosen = _chosen_faces(spec, result)
    base, repaired = src, []
    for k in chosen:
        mask, ranked = await _repair_face(ctx, spec, base, result, k, out_prefix)
        repaired.append((k, mask, ranked))
        base = ranked[0].final  # the next face is repaired on this face's winner
    async with ctx.stage("metadata"):
        outputs = await _write_results(ctx, spec, src, repaired, base, out_prefix)
    done = await outcome(ctx, spec, src, result, repaired, outputs, out_prefix)
    label = (f"inpainting: {ctx.models.label('generator')}; faces: {ctx.models.label('detector')}; "
             f"restoration: {ctx.models.label('restorer') if spec.restore else 'off'}")
    for section in done.report.get("sections", []):
        if section["type"] in ("gallery", "table"):
            section.setdefault("model", label)
    return done


async def _write_results(ctx: JobContext, spec, src: str, repaired, final: str, out_prefix: str) -> dict:
    """Every variation and the final image, with true PNG metadata."""
    models = ctx.models.as_list()
    job = {"job": ctx.job_id, "source": src, "quality_mode": QUALITY_NAMES.get(spec.quality_mode, "standard"),
           "restore": spec.restore, "models": models}
    # provenance in the A1111 text too: which models were stand-ins (no ':' or ',' in the value)
    stand_ins = "; ".join(f"{e['name']} ({e['stand_in']})" for e in models if e["stand_in"])

    def tag(uri: str, parameters: str, extra: dict, key: str):
        text = parameters + "".join(f", {k}: {v}" for k, v in extra.items()) if parameters else ""
        png = add_png_metadata(ctx.store.get(uri), text or None, {**job, **extra})
        return ctx.store.put(f"{out_prefix}{key}", png, "image/png")

    variations = []
    for k, _, ranked in repaired:
        for rank, v in enumerate(ranked):
            extra = {"Likeness job": ctx.job_id, "Face": k, "Variation": v.index, "Rank": rank + 1,
                     "Quality mode": job["quality_mode"], **({"Stand-in models": stand_ins} if stand_ins else {})}
            if v.restoration:
                extra.update({"Face restoration": v.restoration["model"], "Restore fidelity": v.restoration["fidelity"]})
            obj = await asyncio.to_thread(tag, v.final, v.parameters, extra, f"face-{k:02d}-variation-{v.index:02d}.png")
            variations.append({**v.to_dict(), "rank": rank + 1, "uri": obj.uri, "sha256": obj.sha256})
    winners = [ranked[0] for _, _, ranked in repaired]
    final_extra = {"Likeness job": ctx.job_id, "Faces repaired": len(winners), "Quality mode": job["quality_mode"],
                   **({"Stand-in models": stand_ins} if stand_ins else {})}
    final_obj = await asyncio.to_thread(tag, final, winners[-1].parameters, final_extra, "result.png")
    return {"variations": variations, "result": {"uri": final_obj.uri, "sha256": final_obj.sha256}}

