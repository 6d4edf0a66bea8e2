"""Curate a LoRA training set: candidates -> exactly one usable face (eyes open: the eye gate is
on by default here) -> quality -> top K -> embed -> remove near-duplicates -> cluster, drop
outliers -> balanced selection under quotas -> dataset + manifest.

Every candidate ends with a decision and a reason in the manifest. Service calls go through
`ctx.cached`, keyed by content (image sha256s, policy, model), so a resumed job redoes nothing.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from likeness.api.v1 import detection_pb2, embedding_pb2, generation_pb2
from likeness.core.errors import FailedPrecondition
from likeness.core.workid import sha256_hex
from likeness.orchestrator import imports
from likeness.orchestrator.context import JobContext, Outcome
from likeness.orchestrator.workflows import image_facts
from likeness.orchestrator.workflows.common import (
    REASONS,
    batched,
    gather_ordered,
    labeled,
    safe_name,
    uri_input,
)
from likeness.orchestrator.workflows.duplicates import find_duplicates

ASSESS_BATCH = 8
EMBED_BATCH = 32
# Eye gate of curation when the spec's policy leaves min_eye_openness unset (mean openness of both
# eyes; synthetic shut eyes measure <= 0.03, open ones >= 0.95; bench/eyes.py).
CURATE_MIN_EYE_OPENNESS = 0.35


def curate_policy(spec) -> detection_pb2.ValidationPolicy:
    """The spec's policy with curation's defaults filled in (the eye gate on)."""
    policy = detection_pb2.ValidationPolicy()
    policy.CopyFrom(spec.policy)
    if not policy.HasField("min_eye_openness"):
        policy.min_eye_openness = CURATE_MIN_EYE_OPENNESS
    return policy


@dataclass
class Candidate:
    id: str
    uri: str
    sha256: str
    seed: str
    image_type: str
    caption: str
    decision: str = "pending"
    reason: str = ""
    quality: float = 0.0
    cluster: int = -1
    silhouette: float = 0.0
    detail: str = ""
    extra: dict = field(default_factory=dict)

    def reject(self, reason: str, detail: str = "") -> None:
        self.decision, self.reason, self.detail = "rejected", reason, detail


async def generated_candidates(ctx: JobContext, spec) -> list[Candidate]:
    g = spec.generate
    trigger = spec.trigger_token
    jobs = []
    for seed in g.seeds:
        for sc in g.scenarios:
            for v in range(g.variants or 1):
                prompt = sc.prompt.replace("{trigger}", trigger)
                req = generation_pb2.GenerateRequest(
                    model=g.model, prompt=prompt, negative_prompt=g.negative_prompt, seed=seed * 1000 + v, count=1,
                    steps=g.steps, width=g.width, height=g.height, output_prefix="candidates/")
                if g.guidance_scale:
                    req.guidance_scale = g.guidance_scale
                jobs.append((seed, sc.name, v, prompt, req))
    done = 0

    async def one(seed, scenario, v, prompt, req) -> Candidate:
        nonlocal done
        resp = await ctx.cached("generate", {"request": req.SerializeToString().hex()},
                                lambda: ctx.clients.generation.call("Generate", req), generation_pb2.GenerateResponse)
        art = resp.images[0].artifact
        done += 1
        await ctx.progress("source", done, len(jobs))
        caption = f"{trigger}, {prompt}" if trigger and trigger not in prompt else prompt
        return Candidate(f"s{seed}-{safe_name(scenario)}-v{v}", art.uri, art.sha256, str(seed), scenario, caption)

    return await gather_ordered(lambda j=j: one(*j) for j in jobs)


def imported_candidates(ctx: JobContext, spec) -> list[Candidate]:
    """Import layout (orchestrator.imports): `<prefix>/<seed>/<image_type>/<name>.<ext>`, or every
    image directly under the prefix. A same-name .txt next to an image is its caption."""
    store = ctx.store
    prefix = store.key_of(spec.import_source.uri, field=imports.FIELD)
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    keys = store.list(prefix)
    texts = {k[: -len(".txt")] for k in keys if k.endswith(".txt")}
    out = []
    for item in imports.layout(spec.import_source.uri, prefix, keys):
        stem = item.key.rsplit(".", 1)[0]
        caption = store.get(stem + ".txt").decode("utf-8", "replace").strip() if stem in texts else item.image_type
        if spec.trigger_token and not caption.startswith(spec.trigger_token):
            caption = f"{spec.trigger_token}, {caption}"
        info = store.stat(item.key)
        out.append(Candidate(item.id, store.uri(item.key), info.sha256, item.seed, item.image_type, caption))
    return out


async def assess(ctx: JobContext, spec, cands: list[Candidate]) -> None:
    batches = batched(cands, ASSESS_BATCH)
    done = 0
    policy = curate_policy(spec)

    async def one(batch) -> None:
        nonlocal done
        req = detection_pb2.AssessRequest(images=[uri_input(c.uri) for c in batch], policy=policy)
        key = {"images": [c.sha256 for c in batch], "policy": policy.SerializeToString().hex()}
        resp = await ctx.cached("assess", key, lambda: ctx.clients.detection.call("Assess", req),
                                detection_pb2.AssessResponse)
        ctx.models.detection(resp)
        finished = []
        for c, r in zip(batch, resp.results, strict=True):
            c.quality = r.quality.score
            c.extra["faces"] = len(r.faces)
            if r.HasField("error") and r.error.code:
                c.reject("unreadable", r.error.message)
            elif not r.verdict.accepted:
                c.reject(REASONS.get(r.verdict.reason, "rejected"), r.verdict.detail)
            elif c.quality < spec.min_quality:
                c.reject("low_quality", f"quality {c.quality:.3f} < min_quality {spec.min_quality:.6g}")
            finished.append((c.reason or "accepted", f"{c.id}: {c.reason or 'accepted'} {c.detail}".strip()))
        await ctx.items_done("validate", finished)
        # hashes and thumbnails of the readable images while the next batches are assessed
        image_facts.start(ctx.store, [c for c in batch if c.reason != "unreadable"])
        done += len(batch)
        await ctx.progress("validate", done, len(cands))

    await gather_ordered(lambda b=b: one(b) for b in batches)


async def embed_and_cluster(ctx: JobContext, spec, kept: list[Candidate]) -> int:
    """Clusters the kept candidates (outliers rejected); returns K."""
    batches = batched(kept, EMBED_BATCH)

    async def embed(batch):
        req = embedding_pb2.EmbedImagesRequest(images=[uri_input(c.uri) for c in batch])
        resp = await ctx.cached("embed", {"images": [c.sha256 for c in batch]},
                                lambda: ctx.clients.embedding.call("EmbedImages", req), embedding_pb2.EmbedImagesResponse)
        ctx.models.embedding(resp)
        return list(zip(batch, resp.embeddings, strict=True))

    pairs = [p for chunk in await gather_ordered(lambda b=b: embed(b) for b in batches) for p in chunk]
    usable = [(c, v) for c, v in pairs if len(v.values)]
    for c, v in pairs:
        if not len(v.values):
            c.reject("unreadable", "embedding failed")
    if not spec.keep_duplicates:
        usable = await remove_duplicates(ctx, spec, usable)
    if len(usable) < 3:
        for c, _ in usable:
            c.cluster = 0
        await ctx.warn(f"only {len(usable)} candidates to cluster: clustering skipped", "cluster")
        return 1 if usable else 0
    req = embedding_pb2.ClusterRequest(items=labeled([c.id for c, _ in usable], [v for _, v in usable]),
                                       k=min(spec.clusters, len(usable) - 1), seed=spec.seed)
    # The ids are part of the key: the response names items by id, and the same images imported
    # under another layout carry other ids.
    resp = await ctx.cached("cluster", {"items": [[c.id, c.sha256] for c, _ in usable], "k": req.k, "seed": req.seed},
                            lambda: ctx.clients.embedding.call("Cluster", req), embedding_pb2.ClusterResponse)
    for (c, _), a in zip(usable, resp.assignments, strict=True):  # one assignment per item, in request order
        c.cluster, c.silhouette = a.cluster, a.silhouette
        if a.outlier:
            c.reject("outlier", a.outlier_reason)
            await ctx.item_done("cluster", "outlier", f"{c.id}: outlier {a.outlier_reason}")
    return resp.k


async def remove_duplicates(ctx: JobContext, spec, usable: list) -> list:
    """Rejects near-duplicates (duplicates.py) as `duplicate`, naming the kept image; returns the rest."""
    hashes = [f.hashes for f in await asyncio.gather(*(image_facts.facts(ctx.store, c) for c, _ in usable))]
    found = find_duplicates([c.id for c, _ in usable], [c.quality for c, _ in usable], hashes,
                            [list(v.values) for _, v in usable], mirrors_count=not spec.mirrors_distinct)
    by_id = {c.id: c for c, _ in usable}
    for d in found:
        c = by_id[d.id]
        c.reject("duplicate", d.detail())
        c.extra["duplicate_of"] = d.of
        await ctx.item_done("dedupe", "duplicate", f"{c.id}: {d.detail()}")
    gone = {d.id for d in found}
    return [(c, v) for c, v in usable if c.id not in gone]


async def select(ctx: JobContext, spec, pool: list[Candidate]) -> list[Candidate]:
    if len(pool) < spec.target_count:
        raise FailedPrecondition("spec.curate.target_count",
                                 f"{spec.target_count} requested but only {len(pool)} candidates survived validation, "
                                 "quality and outlier checks (see the report's rejection table)")
    cands = [embedding_pb2.SelectionCandidate(id=c.id, quality=c.quality,
                                              groups={"seed": c.seed, "cluster": str(c.cluster), "image_type": c.image_type})
             for c in pool]
    req = embedding_pb2.SelectRequest(candidates=cands, count=spec.target_count, quotas=spec.quotas)
    resp = await ctx.cached("select", {"request": req.SerializeToString().hex()},
                            lambda: ctx.clients.embedding.call("Select", req), embedding_pb2.SelectResponse)
    chosen = set(resp.selected_ids)
    for c in pool:
        if c.id in chosen:
            c.decision = "kept"
        else:
            c.reject("not_selected", "outside the balanced selection")
    return [c for c in pool if c.id in chosen]


async def write_dataset(ctx: JobContext, prefix: str, selected: list[Candidate]) -> list[dict]:
    def write(c: Candidate) -> dict:
        data = ctx.store.get(c.uri)
        ext = c.uri.rsplit(".", 1)[-1].lower()
        media = {"png": "image/png", "jpg": "image/jpeg", "jpeg": "image/jpeg", "webp": "image/webp"}.get(ext, "image/png")
        image = ctx.store.put(f"{prefix}{c.id}.{ext}", data, media)
        caption = ctx.store.put(f"{prefix}{c.id}.txt", c.caption.encode(), "text/plain")
        return {"key": f"{c.id}.{ext}", "sha256": image.sha256, "size": image.size,
                "caption_key": f"{c.id}.txt", "caption_sha256": caption.sha256, "candidate": c.id}

    # one thread hop for the whole dataset, not one per image: on a busy machine each hop waits for a core
    return await asyncio.to_thread(lambda: [write(c) for c in sorted(selected, key=lambda c: c.id)])


async def run(ctx: JobContext, spec) -> Outcome:
    prefix = spec.output_prefix or f"datasets/{ctx.job_id}/"
    if not prefix.endswith("/"):
        prefix += "/"
    cands: list[Candidate] = []
    selected: list[Candidate] = []
    dataset: list[dict] = []
    k = 0
    # A job that stops early (every candidate rejected, too few left for target_count) still
    # reports every decision made so far.
    ctx.partial = lambda: outcome(ctx, prefix, cands, selected, dataset, k)
    async with ctx.stage("source"):
        if spec.WhichOneof("source") == "generate":
            await ctx.models.generation_model(ctx.clients, spec.generate.model)
            cands = await generated_candidates(ctx, spec)
        else:
            cands = await asyncio.to_thread(imported_candidates, ctx, spec)
    async with ctx.stage("validate"):
        await assess(ctx, spec, cands)
    accepted = sorted((c for c in cands if c.decision == "pending"), key=lambda c: (-c.quality, c.id))
    if spec.top_k and len(accepted) > spec.top_k:
        for c in accepted[spec.top_k:]:
            c.reject("below_top_k", f"quality {c.quality:.3f} outside the top {spec.top_k}")
        accepted = accepted[: spec.top_k]
    async with ctx.stage("cluster"):
        k = await embed_and_cluster(ctx, spec, accepted)
    pool = [c for c in accepted if c.decision == "pending"]
    async with ctx.stage("select"):
        selected = await select(ctx, spec, pool)
    async with ctx.stage("write"):
        dataset = await write_dataset(ctx, ctx.store.key_of(prefix, field="spec.curate.output_prefix"), selected)
    return outcome(ctx, prefix, cands, selected, dataset, k)


def outcome(ctx: JobContext, prefix: str, cands: list[Candidate], selected: list[Candidate], dataset: list[dict],
            k: int) -> Outcome:
    reasons: dict[str, int] = {}
    for c in cands:
        if c.decision == "rejected":
            reasons[c.reason] = reasons.get(c.reason, 0) + 1
    summary = {"candidates": len(cands), "selected": len(selected), "dataset_uri": ctx.store.uri(prefix) if dataset else "",
               "clusters": k, "selected_quality_mean": round(sum(c.quality for c in selected) / max(len(selected), 1), 4),
               **{f"rejected_{k}": v for k, v in sorted(reasons.items())}}
    manifest = {
        "output_prefix": prefix,
        "dataset": dataset,
        "candidates": [{"id": c.id, "source": c.uri, "sha256": c.sha256, "seed": c.seed, "image_type": c.image_type,
                        "decision": c.decision, "reason": c.reason, "detail": c.detail, "quality": round(c.quality, 6),
                        "cluster": c.cluster, **({"duplicate_of": c.extra["duplicate_of"]}
                                                 if "duplicate_of" in c.extra else {})}
                       for c in sorted(cands, key=lambda c: c.id)],
        "selection_digest": sha256_hex("\n".join(d["sha256"] for d in dataset).encode()),
    }
    return Outcome(summary, manifest, report_sections(ctx, cands, selected, reasons))


def report_sections(ctx: JobContext, cands: list[Candidate], selected: list[Candidate], reasons: dict[str, int]) -> dict:
    clusters: dict[int, list[Candidate]] = {}
    for c in selected:
        clusters.setdefault(c.cluster, []).append(c)
    rejected: dict[str, list[Candidate]] = {}
    for c in cands:
        if c.decision == "rejected":
            rejected.setdefault(c.reason, []).append(c)
    seeds: dict[str, int] = {}
    for c in selected:
        seeds[c.seed] = seeds.get(c.seed, 0) + 1
    item = lambda c: {"uri": c.uri, "caption": f"{c.id} q={c.quality:.2f}", **image_facts.thumbnail(c)}  # noqa: E731
    return {"sections": [
        {"type": "gallery", "title": "Selected set by cluster", "model": f"clusters: {ctx.models.label('encoder')}",
         "groups": [{"name": f"cluster {k}", "items": [item(c) for c in v]} for k, v in sorted(clusters.items())]},
        {"type": "table", "title": "Rejections", "model": f"faces: {ctx.models.label('detector')}",
         "columns": ["reason", "count"],
         "rows": [[k, v] for k, v in sorted(reasons.items())]},
        {"type": "table", "title": "Duplicates removed", "columns": ["removed", "duplicate of", "detail"],
         "rows": [[c.id, c.extra["duplicate_of"], c.detail] for c in sorted(cands, key=lambda c: c.id)
                  if "duplicate_of" in c.extra]},
        {"type": "bars", "title": "Selected per seed", "unit": "images", "data": sorted(seeds.items())},
        {"type": "gallery", "title": "Rejected candidates by reason",
         "groups": [{"name": k, "items": [{"uri": c.uri, "caption": f"{c.id}: {c.detail or k}", **image_facts.thumbnail(c)}
                                          for c in v[:24]]}
                    for k, v in sorted(rejected.items())]},
        {"type": "table", "title": "Every candidate",
         "model": f"faces and quality: {ctx.models.label('detector')}; clusters: {ctx.models.label('encoder')}",
         "columns": ["id", "seed", "type", "decision", "reason", "quality", "cluster"],
         "rows": [[c.id, c.seed, c.image_type, c.decision, c.reason, f"{c.quality:.3f}", c.cluster]
                  for c in sorted(cands, key=lambda c: c.id)]},
    ]}
