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
POSE_METRICS = ("yaw_std", "pitch_std", "roll_std")


async def _per_batch(ctx: JobContext, items: list[tuple[str, str]], size: int, client, method: str, request,
                     work: str) -> list:
    """`method` over the images `items` ((uri, sha256) pairs) in batches of `size`, concurrently, each
    call keyed by the images' content; the responses in order. `request(images)` builds a request."""
    async def one(batch):
        return await ctx.call(client, method, request([uri_input(u) for u, _ in batch]), work=work,
                              inputs={"images": [h for _, h in batch]})

    return await gather_ordered(lambda b=b: one(b) for b in batched(items, size))


async def _embed(ctx: JobContext, items: list[tuple[str, str]]) -> list:
    """Image embeddings of (uri, sha256) pairs, in order."""
    responses = await _per_batch(ctx, items, 32, ctx.clients.embedding, "EmbedImages",
                                 lambda images: embedding_pb2.EmbedImagesRequest(images=images), "embed")
    for resp in responses:
        ctx.models.embedding(resp)
    return [v for resp in responses for v in resp.embeddings]


async def _poses(ctx: JobContext, items: list[tuple[str, str]]) -> list:
    """Head poses of the images that show exactly one face."""
    responses = await _per_batch(ctx, items, 8, ctx.clients.detection, "Detect",
                                 lambda images: detection_pb2.DetectRequest(images=images), "detect")
    for resp in responses:
        ctx.models.detection(resp)
    return [r.faces[0].pose for resp in responses for r in resp.results if len(r.faces) == 1]


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


def setting_parameters(s: orchestrator_pb2.DiversitySetting) -> dict:
    """What a setting asked the generator for, as the manifest records it."""
    sampler = generation_pb2.Sampler.Name(s.sampler).removeprefix("SAMPLER_").lower() if s.sampler else "preset"
    return {"seed_start": s.seed_start, "count": s.count, "steps": s.steps or "preset",
            "guidance_scale": round(s.guidance_scale, 4) if s.HasField("guidance_scale") else "preset",
            "sampler": sampler, "noise_injection": round(s.noise_injection, 4)}


def metric_entry(name: str, v, faces: int) -> dict:
    """A metric with its confidence interval, or n/a with the reason when it is undefined (pose spread
    needs at least two detected faces)."""
    if name in POSE_METRICS and faces < 2:
        return {"value": None, "ci_low": None, "ci_high": None,
                "undefined": f"pose spread needs at least 2 single-face images, found {faces}"}
    return {"value": round(v.value, 6), "ci_low": round(v.ci_low, 6), "ci_high": round(v.ci_high, 6)}


def cell(m: dict) -> str:
    return "n/a" if m["value"] is None else f"{m['value']:.3f} [{m['ci_low']:.3f}, {m['ci_high']:.3f}]"


async def _setting(ctx: JobContext, spec: orchestrator_pb2.DiversitySpec, i: int, reference: list, k: int) -> dict:
    """Generates setting `i`, measures it against `reference`: its manifest row."""
    s = spec.settings[i]
    async with ctx.stage("generate"):
        items = await _generate(ctx, spec, s)
    async with ctx.stage("measure"):
        generated = await _embed(ctx, items)
        poses = await _poses(ctx, items)
        req = embedding_pb2.DiversityRequest(reference=reference, generated=generated, nearest_k=k,
                                             generated_poses=poses if len(poses) >= 2 else [], seed=i)
        d = await ctx.call(ctx.clients.embedding, "Diversity", req, work="diversity")
    return {"setting": s.name, "parameters": setting_parameters(s), "images": len(items), "faces": len(poses),
            "uris": [u for u, _ in items],
            "metrics": {m: metric_entry(m, getattr(d, m), len(poses)) for m in METRICS}}


async def run(ctx: JobContext, spec: orchestrator_pb2.DiversitySpec) -> Outcome:
    k = diversity_nearest_k(spec)
    await ctx.models.generation_model(ctx.clients, spec.model)
    rows: list[dict] = []
    ref_items: list[tuple[str, str]] = []
    ctx.partial = lambda: outcome(ctx, spec, rows, ref_items)
    async with ctx.stage("reference"):
        ref_items = await asyncio.to_thread(_reference, ctx, spec)
        reference = await _embed(ctx, ref_items)
        if k >= len(reference):
            raise FailedPrecondition("spec.diversity.nearest_k",
                                     f"{k} must be below the reference set size {len(reference)}")
    for i in range(len(spec.settings)):
        ctx.check_cancel()
        rows.append(await _setting(ctx, spec, i, reference, k))
        await ctx.progress("settings", i + 1, len(spec.settings))
    return outcome(ctx, spec, rows, ref_items)


def outcome(ctx: JobContext, spec: orchestrator_pb2.DiversitySpec, rows: list[dict],
            ref_items: list[tuple[str, str]]) -> Outcome:
    value = lambda r, m: r["metrics"][m]["value"]  # noqa: E731
    best = max(rows, key=lambda r: value(r, "recall")) if rows else None
    summary = {"settings": len(rows), "reference_images": len(ref_items),
               "best_recall_setting": best["setting"] if best else "n/a",
               "best_recall": value(best, "recall") if best else "n/a"}
    manifest = {"reference_uri": spec.reference_uri, "reference": [h for _, h in ref_items],
                "nearest_k": diversity_nearest_k(spec),
                "settings": [{k2: v for k2, v in r.items() if k2 != "uris"} for r in rows]}
    encoder, detector = ctx.models.label("encoder"), ctx.models.label("detector")
    params = ["seed_start", "count", "steps", "guidance_scale", "sampler", "noise_injection"]
    sections = [
        report.table("Settings", ["setting", *params], [[r["setting"], *(r["parameters"][p] for p in params)]
                                                        for r in rows],
                     model=f"images: {ctx.models.label('generator')}"),
        report.table("Metrics per setting (value [95% CI])", ["setting", "images", "faces", *METRICS],
                     [[r["setting"], r["images"], r["faces"], *(cell(r["metrics"][m]) for m in METRICS)] for r in rows],
                     model=f"embeddings: {encoder}; poses: {detector}"),
        report.bars("Recall per setting", [[r["setting"], value(r, "recall")] for r in rows],
                    model=f"embeddings: {encoder}"),
        report.bars("Mean pairwise similarity per setting",
                    [[r["setting"], value(r, "mean_pairwise_similarity")] for r in rows],
                    model=f"embeddings: {encoder}"),
        report.gallery("Samples per setting", [
            report.group(r["setting"], [report.image(u, r["setting"]) for u in r["uris"][:12]]) for r in rows],
            model=ctx.models.label("generator")),
    ]
    return Outcome(summary, manifest, {"sections": sections})
