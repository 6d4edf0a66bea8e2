"""Diversity: generate a batch per setting (seed range, guidance, sampler, noise
injection), embed it, and measure it against a reference set: novelty, precision, recall, density,
coverage, mean pairwise similarity and pose spread, side by side per setting."""

from __future__ import annotations

import asyncio

from likeness.api.v1 import detection_pb2, embedding_pb2, generation_pb2, orchestrator_pb2
from likeness.core.errors import FailedPrecondition
from likeness.orchestrator import report
from likeness.orchestrator.context import JobContext, Outcome
from likeness.orchestrator.specs import diversity_nearest_k
from likeness.orchestrator.workflows.common import IMAGE_SUFFIXES, batched, gather_ordered, uri_input

MAX_PER_CALL = 16
METRICS = ("novelty", "precision", "recall", "density", "coverage", "mean_pairwise_similarity", "yaw_std",
           "pitch_std", "roll_std")


async def _embed(ctx: JobContext, items: list[tuple[str, str]]) -> list:
    """Image embeddings of (uri, sha256) pairs, in order."""
    async def one(batch):
        req = embedding_pb2.EmbedImagesRequest(images=[uri_input(u) for u, _ in batch])
        resp = await ctx.call(ctx.clients.embedding, "EmbedImages", req, work="embed",
                              inputs={"images": [h for _, h in batch]})
        return list(resp.embeddings)

    return [v for chunk in await gather_ordered(lambda b=b: one(b) for b in batched(items, 32)) for v in chunk]


async def _poses(ctx: JobContext, items: list[tuple[str, str]]) -> list:
    async def one(batch):
        req = detection_pb2.DetectRequest(images=[uri_input(u) for u, _ in batch])
        resp = await ctx.call(ctx.clients.detection, "Detect", req, work="detect",
                              inputs={"images": [h for _, h in batch]})
        return [r.faces[0].pose for r in resp.results if len(r.faces) == 1]

    return [p for chunk in await gather_ordered(lambda b=b: one(b) for b in batched(items, 8)) for p in chunk]


async def _generate(ctx: JobContext, spec, s) -> list[tuple[str, str]]:
    calls = []
    for start in range(0, s.count, MAX_PER_CALL):
        req = generation_pb2.GenerateRequest(model=spec.model, prompt=spec.prompt, seed=s.seed_start + start,
                                             count=min(MAX_PER_CALL, s.count - start), steps=s.steps,
                                             sampler=s.sampler, noise_injection=s.noise_injection, width=spec.width,
                                             height=spec.height, output_prefix="diversity/")
        if s.HasField("guidance_scale"):
            req.guidance_scale = s.guidance_scale
        calls.append(req)

    async def one(req):
        resp = await ctx.call(ctx.clients.generation, "Generate", req, work="generate")
        return [(g.artifact.uri, g.artifact.sha256) for g in resp.images]

    return [x for chunk in await gather_ordered(lambda r=r: one(r) for r in calls) for x in chunk]


def _reference(ctx: JobContext, spec) -> list[tuple[str, str]]:
    prefix = ctx.store.key_of(spec.reference_uri, field="spec.diversity.reference_uri")
    keys = [k for k in ctx.store.list(prefix) if k.lower().endswith(IMAGE_SUFFIXES)]
    if len(keys) < 2:
        raise FailedPrecondition("spec.diversity.reference_uri", f"needs at least 2 images, found {len(keys)}")
    return [(ctx.store.uri(k), ctx.store.stat(k).sha256) for k in keys]


async def run(ctx: JobContext, spec: orchestrator_pb2.DiversitySpec) -> Outcome:
    k = diversity_nearest_k(spec)
    async with ctx.stage("reference"):
        ref_items = await asyncio.to_thread(_reference, ctx, spec)
        reference = await _embed(ctx, ref_items)
        if k >= len(reference):
            raise FailedPrecondition("spec.diversity.nearest_k",
                                     f"{k} must be below the reference set size {len(reference)}")
    rows, table = [], []
    for i, s in enumerate(spec.settings):
        ctx.check_cancel()
        async with ctx.stage("generate"):
            items = await _generate(ctx, spec, s)
        async with ctx.stage("measure"):
            generated = await _embed(ctx, items)
            poses = await _poses(ctx, items)
            req = embedding_pb2.DiversityRequest(reference=reference, generated=generated, nearest_k=k,
                                                 generated_poses=poses if len(poses) >= 2 else [], seed=i)
            d = await ctx.call(ctx.clients.embedding, "Diversity", req, work="diversity")
        values = {m: getattr(d, m) for m in METRICS}
        rows.append({"setting": s.name, "images": len(items), "faces": len(poses), "uris": [u for u, _ in items],
                     **{m: round(v.value, 6) for m, v in values.items()}})
        table.append([s.name, len(items), len(poses)] +
                     [f"{v.value:.3f} [{v.ci_low:.3f}, {v.ci_high:.3f}]" for v in values.values()])
        await ctx.progress("settings", i + 1, len(spec.settings))
    best = max(rows, key=lambda r: r["recall"])
    summary = {"settings": len(rows), "reference_images": len(reference), "best_recall_setting": best["setting"],
               "best_recall": best["recall"]}
    manifest = {"reference": [h for _, h in ref_items],
                "settings": [{k2: v for k2, v in r.items() if k2 != "uris"} for r in rows]}
    sections = [
        report.table("Metrics per setting (value [95% CI])", ["setting", "images", "faces", *METRICS], table),
        report.bars("Recall per setting", [[r["setting"], r["recall"]] for r in rows]),
        report.bars("Mean pairwise similarity per setting",
                    [[r["setting"], r["mean_pairwise_similarity"]] for r in rows]),
        report.gallery("Samples per setting", [
            report.group(r["setting"], [report.image(u, r["setting"]) for u in r["uris"][:12]]) for r in rows]),
    ]
    return Outcome(summary, manifest, {"sections": sections})
