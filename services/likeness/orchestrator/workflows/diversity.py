"""Diversity (seed doc 002): generate a batch per setting (seed range, guidance, sampler, noise
injection), embed it, and measure it against a reference set: novelty, precision, recall, density,
coverage, mean pairwise similarity and pose spread, side by side per setting."""

from __future__ import annotations

import asyncio

from likeness.api.v1 import detection_pb2, embedding_pb2, generation_pb2
from likeness.core.errors import FailedPrecondition
from likeness.orchestrator.context import JobContext, Outcome
from likeness.orchestrator.workflows.common import IMAGE_SUFFIXES, batched, gather_ordered, uri_input

MAX_PER_CALL = 16
METRICS = ("novelty", "precision", "recall", "density", "coverage", "mean_pairwise_similarity", "yaw_std", "pitch_std", "roll_std")
POSE_METRICS = ("yaw_std", "pitch_std", "roll_std")


async def _embed(ctx: JobContext, items: list[tuple[str, str]]) -> list:
    """Image embeddings of (uri, sha256) pairs, in order."""
    async def one(batch):
        req = embedding_pb2.EmbedImagesRequest(images=[uri_input(u) for u, _ in batch])
        resp = await ctx.cached("embed", {"images": [h for _, h in batch]},
                                lambda: ctx.clients.embedding.call("EmbedImages", req), embedding_pb2.EmbedImagesResponse)
        ctx.models.embedding(resp)
        return list(resp.embeddings)

    return [v for chunk in await gather_ordered(lambda b=b: one(b) for b in batched(items, 32)) for v in chunk]


async def _poses(ctx: JobContext, items: list[tuple[str, str]]) -> list:
    async def one(batch):
        req = detection_pb2.DetectRequest(images=[uri_input(u) for u, _ in batch])
        resp = await ctx.cached("detect", {"images": [h for _, h in batch]},
                                lambda: ctx.clients.detection.call("Detect", req), detection_pb2.DetectResponse)
        ctx.models.detection(resp)
        return [r.faces[0].pose for r in resp.results if len(r.faces) == 1]

    return [p for chunk in await gather_ordered(lambda b=b: one(b) for b in batched(items, 8)) for p in chunk]


async def _generate(ctx: JobContext, spec, s) -> list[tuple[str, str]]:
    calls = []
    for start in range(0, s.count, MAX_PER_CALL):
        req = generation_pb2.GenerateRequest(model=spec.model, prompt=spec.prompt, seed=s.seed_start + start,
                                             count=min(MAX_PER_CALL, s.count - start), steps=s.steps, sampler=s.sampler,
                                             noise_injection=s.noise_injection, width=spec.width, height=spec.height,
                                             output_prefix="diversity/")
        if s.HasField("guidance_scale"):
            req.guidance_scale = s.guidance_scale
        calls.append(req)

    async def one(req):
        resp = await ctx.cached("generate", {"request": req.SerializeToString().hex()},
                                lambda: ctx.clients.generation.call("Generate", req), generation_pb2.GenerateResponse)
        return [(g.artifact.uri, g.artifact.sha256) for g in resp.images]

    return [x for chunk in await gather_ordered(lambda r=r: one(r) for r in calls) for x in chunk]


def _reference(ctx: JobContext, spec) -> list[tuple[str, str]]:
    prefix = ctx.store.key_of(spec.reference_uri, field="spec.diversity.reference_uri")
    keys = [k for k in ctx.store.list(prefix) if k.lower().endswith(IMAGE_SUFFIXES)]
    if len(keys) < 2:
        raise FailedPrecondition("spec.diversity.reference_uri", f"needs at least 2 images, found {len(keys)}")
    return [(ctx.store.uri(k), ctx.store.stat(k).sha256) for k in keys]


def setting_parameters(s) -> dict:
    """What a setting asked the generator for, as the manifest records it."""
    return {"seed_start": s.seed_start, "count": s.count, "steps": s.steps or "preset",
            "guidance_scale": round(s.guidance_scale, 4) if s.HasField("guidance_scale") else "preset",
            "sampler": generation_pb2.Sampler.Name(s.sampler).removeprefix("SAMPLER_").lower() if s.sampler else "preset",
            "noise_injection": round(s.noise_injection, 4)}


def metric_entry(name: str, v, faces: int) -> dict:
    """A metric with its confidence interval, or n/a with the reason when it is undefined (pose spread
    needs at least two detected faces)."""
    if name in POSE_METRICS and faces < 2:
        return {"value": None, "ci_low": None, "ci_high": None,
                "undefined": f"pose spread needs at least 2 single-face images, found {faces}"}
    return {"value": round(v.value, 6), "ci_low": round(v.ci_low, 6), "ci_high": round(v.ci_high, 6)}


def cell(m: dict) -> str:
    return "n/a" if m["value"] is None else f"{m['value']:.3f} [{m['ci_low']:.3f}, {m['ci_high']:.3f}]"


async def run(ctx: JobContext, spec) -> Outcome:
    k = spec.nearest_k or 5
    await ctx.models.generation_model(ctx.clients, spec.model)
    rows: list[dict] = []
    ref_items: list[tuple[str, str]] = []
    ctx.partial = lambda: outcome(ctx, spec, rows, ref_items)
    async with ctx.stage("reference"):
        ref_items = await asyncio.to_thread(_reference, ctx, spec)
        reference = await _embed(ctx, ref_items)
        if k >= len(reference):
            raise FailedPrecondition("spec.diversity.nearest_k", f"{k} must be below the reference set size {len(reference)}")
    for i, s in enumerate(spec.settings):
        ctx.check_cancel()
        async with ctx.stage("generate"):
            items = await _generate(ctx, spec, s)
        async with ctx.stage("measure"):
            generated = await _embed(ctx, items)
            poses = await _poses(ctx, items)
            req = embedding_pb2.DiversityRequest(reference=reference, generated=generated, nearest_k=k,
                                                 generated_poses=poses if len(poses) >= 2 else [], seed=i)
            d = await ctx.cached("diversity", {"req": req.SerializeToString().hex()},
                                 lambda req=req: ctx.clients.embedding.call("Diversity", req), embedding_pb2.DiversityResponse)
        rows.append({"setting": s.name, "parameters": setting_parameters(s), "images": len(items), "faces": len(poses),
                     "uris": [u for u, _ in items], "metrics": {m: metric_entry(m, getattr(d, m), len(poses)) for m in METRICS}})
        await ctx.progress("settings", i + 1, len(spec.settings))
    return outcome(ctx, spec, rows, ref_items)


def outcome(ctx: JobContext, spec, rows: list[dict], ref_items: list[tuple[str, str]]) -> Outcome:
    value = lambda r, m: r["metrics"][m]["value"]  # noqa: E731
    best = max(rows, key=lambda r: value(r, "recall")) if rows else None
    summary = {"settings": len(rows), "reference_images": len(ref_items),
               "best_recall_setting": best["setting"] if best else "n/a",
               "best_recall": value(best, "recall") if best else "n/a"}
    manifest = {"reference_uri": spec.reference_uri, "reference": [h for _, h in ref_items], "nearest_k": spec.nearest_k or 5,
                "settings": [{k2: v for k2, v in r.items() if k2 != "uris"} for r in rows]}
    encoder, detector = ctx.models.label("encoder"), ctx.models.label("detector")
    params = ["seed_start", "count", "steps", "guidance_scale", "sampler", "noise_injection"]
    sections = [
        {"type": "table", "title": "Settings", "model": f"images: {ctx.models.label('generator')}",
         "columns": ["setting", *params], "rows": [[r["setting"], *(r["parameters"][p] for p in params)] for r in rows]},
        {"type": "table", "title": "Metrics per setting (value [95% CI])",
         "model": f"embeddings: {encoder}; poses: {detector}",
         "columns": ["setting", "images", "faces", *METRICS],
         "rows": [[r["setting"], r["images"], r["faces"], *(cell(r["metrics"][m]) for m in METRICS)] for r in rows]},
        {"type": "bars", "title": "Recall per setting", "unit": "", "model": f"embeddings: {encoder}",
         "data": [[r["setting"], value(r, "recall")] for r in rows]},
        {"type": "bars", "title": "Mean pairwise similarity per setting", "unit": "", "model": f"embeddings: {encoder}",
         "data": [[r["setting"], value(r, "mean_pairwise_similarity")] for r in rows]},
        {"type": "gallery", "title": "Samples per setting", "model": ctx.models.label("generator"),
         "groups": [{"name": r["setting"], "items": [{"uri": u, "caption": r["setting"]} for u in r["uris"][:12]]} for r in rows]},
    ]
    return Outcome(summary, manifest, {"sections": sections})
