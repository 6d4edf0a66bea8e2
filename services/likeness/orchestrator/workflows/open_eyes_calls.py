"""The open_eyes job's service calls for one face, all on its work crop (work_crop.py): eye mask,
inpaint, feathered composite, restore, and the verifying Detect; and what each variation measured."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import numpy as np

from likeness.api.v1 import common_pb2, detection_pb2, generation_pb2, orchestrator_pb2, restoration_pb2
from likeness.core.errors import FailedPrecondition
from likeness.detection.faces import Box, iou
from likeness.orchestrator.context import JobContext
from likeness.orchestrator.specs import (
    OPEN_EYES_FIDELITY,
    OPEN_EYES_MASK_PADDING_IOD,
    OPEN_EYES_PROMPT,
    inpaint_context_px,
)
from likeness.orchestrator.workflows import eye_views
from likeness.orchestrator.workflows.common import uri_input
from likeness.orchestrator.workflows.job_pixels import job_pixels
from likeness.orchestrator.workflows.work_crop import covers, in_crop

# Composite's default feather reaches dilation 4 + 3 x sigma 6 = 22 px beyond the mask; the
# denoised region must cover it, or the blend would meet the region's rectangular edge.
FEATHER_REACH_PX = 22
MIN_OPENNESS = 0.5  # eye openness (0 shut, 1 wide open) from which an eye counts as open


@dataclass
class FaceWork:
    """One face's work crop: `crop` (x0, y0, x1, y1) in the frame, its stored pixels, the face in
    its coordinates (`local`), its eye mask and, once repaired, the ranked variations."""
    index: int
    face: common_pb2.Face  # as the source's Detect found it, frame coordinates
    crop: tuple[int, int, int, int]
    local: common_pb2.Face
    mask: restoration_pb2.RegionMaskResult
    crop_uri: str = ""
    ranked: list = field(default_factory=list)

    @property
    def context_px(self) -> int:
        """Pixels of context denoised around the eye mask (the feather must stay inside them)."""
        b = self.mask.crop_box
        return inpaint_context_px(b.x_max - b.x_min, b.y_max - b.y_min, FEATHER_REACH_PX + 8)

    def needed(self, width: int, height: int) -> tuple[int, int, int, int]:
        """The denoised region in the frame (the mask's crop box grown by the context), clamped."""
        b, c, (x0, y0) = self.mask.crop_box, self.context_px, self.crop[:2]
        return (max(int(x0 + b.x_min) - c, 0), max(int(y0 + b.y_min) - c, 0), min(int(x0 + b.x_max) + c, width),
                min(int(y0 + b.y_max) + c, height))

    def fits(self, width: int, height: int) -> bool:
        return covers(self.crop, self.needed(width, height))


@dataclass
class Variation:
    face: int
    index: int
    seed: int
    generated: str
    parameters: str = ""  # what generation ran, its A1111 text
    composite: str = ""
    final: str = ""
    seam: dict = field(default_factory=dict)
    identity: float | None = None
    openness_before: float | None = None
    openness_after: float | None = None
    restoration: dict = field(default_factory=dict)

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
    """The lesser eye openness of a detected face, when its backend measures it (the face mesh's
    lids): eyes are open when both are. (A mean would call a noise patch open: measured on tiny-sdxl
    inpaints of the astronaut, one eye often reads 0.8-1.0 and the other 0-0.3.)"""
    values = [getattr(face, n) for n in ("left_eye_openness", "right_eye_openness") if face.HasField(n)]
    return float(min(values)) if values else None


async def detect(ctx: JobContext, uris: list[str], kind: str) -> detection_pb2.DetectResponse:
    req = detection_pb2.DetectRequest(images=[uri_input(u) for u in uris], with_embeddings=True)
    resp = await ctx.call(ctx.clients.detection, "Detect", req, work=kind)
    ctx.models.detection(resp)
    return resp


async def eye_mask(ctx: JobContext, face, crop: tuple[int, int, int, int], out_prefix: str) -> FaceWork:
    """The eye mask of `face` on the crop `crop` of the frame (RegionMask needs no pixels)."""
    local = in_crop(face, crop)
    req = restoration_pb2.RegionMaskRequest(
        items=[restoration_pb2.RegionMaskItem(width=crop[2] - crop[0], height=crop[3] - crop[1],
                                              landmarks=local.landmarks, face_box=local.box)],
        region=restoration_pb2.REGION_BOTH_EYES, padding_iod=OPEN_EYES_MASK_PADDING_IOD, output_prefix=out_prefix)
    resp = await ctx.call(ctx.clients.restoration, "RegionMask", req, work="mask")
    m = resp.results[0]
    if m.HasField("error") and m.error.code:
        raise FailedPrecondition("spec.open_eyes.image", f"eye mask: {m.error.message}")
    return FaceWork(-1, face, crop, local, m)


async def inpaint(ctx: JobContext, spec: orchestrator_pb2.OpenEyesSpec, work: FaceWork, seed: int,
                  out_prefix: str) -> list[Variation]:
    """N variations of the work crop, the denoised region put back unmasked (the crop's size)."""
    req = generation_pb2.GenerateRequest(
        model=spec.model, task=generation_pb2.TASK_INPAINT, prompt=spec.prompt or OPEN_EYES_PROMPT,
        negative_prompt=spec.negative_prompt, seed=seed, count=spec.variations or 1, steps=spec.steps,
        init_image=uri_input(work.crop_uri), mask=uri_input(work.mask.mask.uri), crop_padding=work.context_px,
        paste=generation_pb2.PASTE_MODE_REGION, quality_mode=spec.quality_mode, output_prefix=out_prefix)
    if spec.HasField("strength"):
        req.strength = spec.strength
    gen = await ctx.call(ctx.clients.generation, "Generate", req, work="inpaint")
    return [Variation(work.index, i, g.seed, g.artifact.uri, g.parameters) for i, g in enumerate(gen.images)]


async def composite(ctx: JobContext, work: FaceWork, variations: list[Variation], out_prefix: str) -> None:
    req = restoration_pb2.CompositeRequest(
        items=[restoration_pb2.CompositeItem(base=uri_input(work.crop_uri), patch=uri_input(v.generated),
                                             mask=uri_input(work.mask.mask.uri)) for v in variations],
        output_prefix=out_prefix)
    resp = await ctx.call(ctx.clients.restoration, "Composite", req, work="composite")
    for v, r in zip(variations, resp.results, strict=True):
        s = r.seam
        v.composite = v.final = r.image.uri
        v.seam = {"boundary_gradient": round(s.boundary_gradient, 3), "hard_gradient": round(s.hard_gradient, 3),
                  "max_step": round(s.max_step, 3), "reference_step": round(s.reference_step, 3),
                  "invisible": s.max_step <= s.reference_step}


def _outside_face(ctx: JobContext, v: Variation, result: restoration_pb2.RestoreResult, box, size) -> int:
    """Restored pixels outside the face and its feather: 0 when the service's changed box lies inside
    it; otherwise counted on the two images (never seen: the restorer's paste is confined)."""
    if not result.HasField("changed_box"):
        return 0
    c = result.changed_box
    if covers(eye_views.grown_box(box, *size), (int(c.x_min), int(c.y_min), int(c.x_max), int(c.y_max))):
        return 0
    return eye_views.changes(job_pixels(ctx, v.composite), job_pixels(ctx, v.final), box)["changed_outside_face"]


async def restore(ctx: JobContext, spec: orchestrator_pb2.OpenEyesSpec, work: FaceWork, variations: list[Variation],
                  out_prefix: str) -> None:
    fidelity = spec.fidelity if spec.HasField("fidelity") else OPEN_EYES_FIDELITY
    face = work.local
    req = restoration_pb2.RestoreRequest(
        items=[restoration_pb2.RestoreItem(image=uri_input(v.composite), face_box=face.box, landmarks=face.landmarks)
               for v in variations], fidelity=fidelity, output_prefix=out_prefix)
    resp = await ctx.call(ctx.clients.restoration, "Restore", req, work="restore")
    ctx.models.restoration(resp)
    box = (face.box.x_min, face.box.y_min, face.box.x_max, face.box.y_max)
    size = (work.crop[2] - work.crop[0], work.crop[3] - work.crop[1])
    for v, r in zip(variations, resp.results, strict=True):
        v.final = r.image.uri
        outside = await asyncio.to_thread(_outside_face, ctx, v, r, box, size)
        v.restoration = {"model": resp.model, "fidelity": fidelity, "changed_pixels": int(r.changed_pixels),
                         "changed_outside_face": outside}


def _domain_box(b: common_pb2.Box) -> Box:
    return Box(b.x_min, b.y_min, b.x_max, b.y_max)


def best_match(faces, box: common_pb2.Box) -> object | None:
    """The detected face whose box overlaps `box` most (IoU), if any overlaps by more than 0.3."""
    target = _domain_box(box)
    scored = [(iou(_domain_box(f.box), target), f) for f in faces]
    best = max(scored, key=lambda s: s[0], default=(0.0, None))
    return best[1] if best[0] > 0.3 else None


async def verify(ctx: JobContext, work: FaceWork, variations: list[Variation]) -> None:
    """Eye openness and identity of the repaired face in every variation (Detect on the crops)."""
    resp = await detect(ctx, [v.final for v in variations], "verify")
    source = np.asarray(work.face.embedding.values, np.float32)
    for v, r in zip(variations, resp.results, strict=True):
        v.openness_before = openness(work.face)
        match = best_match(r.faces, work.local.box)
        if match is None:
            continue  # the face is no longer found: identity and openness stay unmeasured
        v.openness_after = openness(match)
        emb = np.asarray(match.embedding.values, np.float32)
        if source.size and emb.size == source.size:
            v.identity = round(float(source @ emb), 4)
