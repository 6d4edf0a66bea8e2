"""The open_eyes job's outcome: summary, manifest and a report a person would want (the verdict
first, before/after views of the eye region with the mask outline, seam maps, the ranking)."""

from __future__ import annotations

import asyncio

from likeness.core.images import encode_png
from likeness.orchestrator.context import JobContext, Outcome
from likeness.orchestrator.workflows import eye_views
from likeness.orchestrator.workflows.job_pixels import job_pixels


def verdict(repaired) -> str:
    """One sentence: did every repaired face get open eyes, and how sure can one be."""
    winners = [ranked[0] for _, _, ranked in repaired]
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
    for k, _, ranked in repaired:
        for rank, v in enumerate(ranked):
            open_text = {True: "open", False: "NOT open", None: "not measured"}[v.eyes_open]
            rows.append([k, rank + 1, v.index, v.seed, open_text,
                         "n/a" if v.openness_before is None else f"{v.openness_before:.2f}",
                         "n/a" if v.openness_after is None else f"{v.openness_after:.2f}",
                         "n/a" if v.identity is None else f"{v.identity:.3f}",
                         f"{v.seam.get('boundary_gradient', 0):.1f} / {v.seam.get('hard_gradient', 0):.1f}",
                         f"{v.seam.get('max_step', 0):.0f} / {v.seam.get('reference_step', 0):.0f}",
                         v.restoration.get("changed_pixels", "-"), v.restoration.get("changed_outside_face", "-")])
    return {"type": "table", "title": "Ranking (open eyes first, then identity, then the least visible seam)",
            "columns": ["face", "rank", "variation", "seed", "eyes", "openness before", "openness after",
                        "identity to input", "seam: ours / hard paste", "max step / photo's own",
                        "restored px", "restored px outside face"], "rows": rows}


async def _views(ctx: JobContext, src: str, repaired, out_prefix: str) -> list[dict]:
    """Per face: before | after at the eye region (mask outline in red), and the winner's seam map."""
    def build(k, mask_uri, winner):  # the winner's pixels were decoded by the restore stage's measure
        before, after = job_pixels(ctx, src), job_pixels(ctx, winner.final)
        mask = job_pixels(ctx, mask_uri)[..., 0] > 0
        box = eye_views.eye_box(mask, before.shape[1], before.shape[0])
        pair = ctx.store.put(f"{out_prefix}views/face-{k:02d}-before-after.png",
                             encode_png(eye_views.before_after(before, after, mask, box)), "image/png")
        seam = ctx.store.put(f"{out_prefix}views/face-{k:02d}-seam.png",
                             encode_png(eye_views.seam_map(job_pixels(ctx, winner.composite), mask, box)), "image/png")
        return {"name": f"face {k}", "items": [
            {"uri": pair.uri, "caption": f"face {k}: before (mask outline) | after, variation {winner.index}"},
            {"uri": seam.uri, "caption": "seam map of the composite (bright = sharp edge)"}]}

    return [await asyncio.to_thread(build, k, mask.mask.uri, ranked[0]) for k, mask, ranked in repaired]


async def outcome(ctx: JobContext, spec, src: str, result, repaired, outputs: dict, out_prefix: str) -> Outcome:
    said = verdict(repaired)
    summary = {"verdict": said, "faces": len(result.faces), "faces_repaired": len(repaired),
               "variations": len(outputs["variations"]),
               "eyes_open": sum(1 for v in outputs["variations"] if v["eyes_open"]),
               "result": outputs["result"]["uri"]}
    manifest = {"source": src, "verdict": said, "result": outputs["result"],
                "faces": [{"face": k, "mask": {"uri": m.mask.uri, "sha256": m.mask.sha256},
                           "crop_box": [m.crop_box.x_min, m.crop_box.y_min, m.crop_box.x_max, m.crop_box.y_max],
                           "winner": ranked[0].index} for k, m, ranked in repaired],
                "variations": outputs["variations"]}
    sections = [{"type": "text", "title": "Outcome", "body": said},
                {"type": "gallery", "title": "Eye region before and after, and the seam",
                 "groups": await _views(ctx, src, repaired, out_prefix)},
                _ranking_table(repaired),
                {"type": "gallery", "title": "Input and result",
                 "groups": [{"name": "images", "items": [{"uri": src, "caption": "input"},
                                                         {"uri": outputs["result"]["uri"], "caption": "result"}]}]},
                {"type": "bars", "title": "Stage timings", "unit": "s",
                 "data": [[k, round(v, 4)] for k, v in ctx.timings.items()]}]
    return Outcome(summary, manifest, {"sections": sections})
