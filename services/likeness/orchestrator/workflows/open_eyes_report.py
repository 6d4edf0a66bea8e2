"""The open_eyes job's outcome: summary, manifest and a report a person would want (the verdict
first, before/after views of the eye region with the mask outline, seam maps, the ranking)."""

from __future__ import annotations

import asyncio

import numpy as np
from PIL import Image

from likeness.api.v1 import orchestrator_pb2
from likeness.core.images import encode_png
from likeness.orchestrator import report
from likeness.orchestrator.context import JobContext, Outcome
from likeness.orchestrator.workflows import eye_views
from likeness.orchestrator.workflows.job_pixels import job_pixels


def verdict(repaired) -> str:
    """One sentence: did every repaired face get open eyes, and how sure can one be."""
    winners = [work.ranked[0] for work in repaired]
    if any(w.eyes_open is None for w in winners):
        return ("eye openness not measured: the detection backend returns no eyelid landmarks, so no "
                "variation can be called a success")
    opened = sum(1 for w in winners if w.eyes_open)
    if opened == len(winners):
        return f"eyes open in the best variation of every face ({opened} of {len(winners)})"
    return (f"eyes NOT open in the best variation of {len(winners) - opened} of {len(winners)} face(s): "
            "no variation of those faces is a success")


def _ranking_table(repaired) -> dict:
    rows = []
    for work in repaired:
        k = work.index
        for rank, v in enumerate(work.ranked):
            open_text = {True: "open", False: "NOT open", None: "not measured"}[v.eyes_open]
            rows.append([k, rank + 1, v.index, v.seed, open_text,
                         "n/a" if v.openness_before is None else f"{v.openness_before:.2f}",
                         "n/a" if v.openness_after is None else f"{v.openness_after:.2f}",
                         "n/a" if v.identity is None else f"{v.identity:.3f}",
                         f"{v.seam.get('boundary_gradient', 0):.1f} / {v.seam.get('hard_gradient', 0):.1f}",
                         f"{v.seam.get('max_step', 0):.0f} / {v.seam.get('reference_step', 0):.0f}",
                         v.restoration.get("changed_pixels", "-"), v.restoration.get("changed_outside_face", "-")])
    return report.table("Ranking (open eyes first, then identity, then the least visible seam)",
                        ["face", "rank", "variation", "seed", "eyes", "openness before", "openness after",
                         "identity to input", "seam: ours / hard paste", "max step / photo's own",
                         "restored px", "restored px outside face"], rows)


async def _views(ctx: JobContext, src: str, repaired, out_prefix: str) -> list[dict]:
    """Per face: before | after at the eye region (mask outline in red), and the winner's seam map,
    on the face's work crop (the winner's pixels were decoded to put it back into the frame)."""
    def build(work):
        k, winner, (x0, y0, x1, y1) = work.index, work.ranked[0], work.crop
        before, after = job_pixels(ctx, src)[y0:y1, x0:x1], job_pixels(ctx, winner.final)
        mask = job_pixels(ctx, work.mask.mask.uri)[..., 0] > 0
        box = eye_views.eye_box(mask, before.shape[1], before.shape[0])
        pair = eye_views.before_after(before, after, mask, box)
        seam = eye_views.seam_map(job_pixels(ctx, winner.composite), mask, box)
        return report.group(f"face {k}", [
            _shown(ctx, f"{out_prefix}views/face-{k:02d}-before-after.png", pair,
                   f"face {k}: before (mask outline) | after, variation {winner.index}"),
            _shown(ctx, f"{out_prefix}views/face-{k:02d}-seam.png", seam,
                   "seam map of the composite (bright = sharp edge)")])

    return [await asyncio.to_thread(build, work) for work in repaired]


def _shown(ctx: JobContext, key: str, rgb: np.ndarray, caption: str) -> dict:
    """A report image stored as PNG, its thumbnail made from the pixels in hand (the report need
    not read and decode it back)."""
    stored = ctx.store.put(key, encode_png(rgb), "image/png")
    return {**report.image(stored.uri, caption), "src": report.thumbnail_of(Image.fromarray(rgb))}


def _thumbnail(uri: str, rgb: np.ndarray, caption: str) -> dict:
    return {**report.image(uri, caption), "src": report.thumbnail_of(Image.fromarray(rgb))}


def _face_entry(work) -> dict:
    """A face of the manifest: its work crop in the source frame (the variations' and the mask's
    rectangle), its eye mask (the crop's size) with the mask's box in the frame, and the winner."""
    b, (x0, y0) = work.mask.crop_box, work.crop[:2]
    return {"face": work.index, "crop_box": list(work.crop),
            "mask": {"uri": work.mask.mask.uri, "sha256": work.mask.mask.sha256},
            "mask_box": [x0 + b.x_min, y0 + b.y_min, x0 + b.x_max, y0 + b.y_max], "winner": work.ranked[0].index}


async def outcome(ctx: JobContext, spec: orchestrator_pb2.OpenEyesSpec, src: str, result, repaired, outputs: dict,
                  out_prefix: str, frame: np.ndarray) -> Outcome:
    """`frame`: the result's pixels (the input's are the job's decoded source)."""
    said = verdict(repaired)
    summary = {"verdict": said, "faces": len(result.faces), "faces_repaired": len(repaired),
               "variations": len(outputs["variations"]),
               "eyes_open": sum(1 for v in outputs["variations"] if v["eyes_open"]),
               "result": outputs["result"]["uri"]}
    manifest = {"source": src, "verdict": said, "result": outputs["result"],
                "faces": [_face_entry(work) for work in repaired],
                "variations": outputs["variations"]}
    sections = [report.text("Outcome", said),
                report.gallery("Eye region before and after, and the seam",
                               await _views(ctx, src, repaired, out_prefix)),
                _ranking_table(repaired),
                report.gallery("Input and result", [report.group("images", await asyncio.gather(
                    asyncio.to_thread(_thumbnail, src, job_pixels(ctx, src), "input"),
                    asyncio.to_thread(_thumbnail, outputs["result"]["uri"], frame, "result")))]),
                report.stage_timings(ctx.timings)]
    return Outcome(summary, manifest, {"sections": sections})
