"""The bad-input corpus: one row per case (service, method, request, expected status, words the
message must hold), run against live services by test_bad_inputs.py.

`status` is the gRPC status of the call, or `item:<STATUS>` when the documented answer is an OK
response whose item 0 carries an ItemError (a bad image in a batch fails alone; docs/api/*.md).
Requests are built lazily from a `Ctx` (the stack's store root and a few real images), so the
corpus can be listed without a stack.
"""

from __future__ import annotations

import io
import math
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

import numpy as np
from PIL import Image

from likeness.api.v1 import common_pb2 as c
from likeness.api.v1 import detection_pb2 as d
from likeness.api.v1 import embedding_pb2 as e
from likeness.api.v1 import generation_pb2 as g
from likeness.api.v1 import orchestrator_pb2 as o
from likeness.api.v1 import restoration_pb2 as r
from likeness.api.v1 import training_pb2 as t

NAN = math.nan
INF = math.inf


@dataclass(frozen=True)
class Ctx:
    store_root: str  # file:///.../store (no trailing slash)
    good_uri: str  # a stored 256x256 photo inside the store
    orchestrator: str = ""  # address, for cases that need a job to exist

    def uri(self, key: str) -> str:
        return f"{self.store_root}/{key}"


@dataclass(frozen=True)
class Case:
    id: str
    service: str
    method: str
    request: Callable[[Ctx], object]
    status: str
    words: tuple[str, ...] = ()
    # `call`; `raw`: the request is bytes sent as the body as they are (a truncated or foreign
    # message); `cancel`: a server stream the client cancels after its first message.
    mode: str = "call"


# -- images ---------------------------------------------------------------------------------------

def png(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "PNG")
    return buf.getvalue()


@cache
def photo() -> bytes:
    from tests.photos import skimage_photo

    return png(np.asarray(Image.fromarray(skimage_photo("astronaut")).resize((256, 256))))


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


@cache
def header_bomb() -> bytes:
    """A 100,000 x 100,000 PNG header (10 gigapixels) with a few bytes of data: must be refused
    from the header, before any pixel is decoded."""
    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(b"\0" * 1000))
            + _chunk(b"IEND", b""))


@cache
def real_bomb() -> bytes:
    """A real 8,000 x 6,000 (48 MP) all-black PNG: ~50 KB on the wire, 144 MB decoded as RGB."""
    row = b"\0" + b"\0" * 8000
    ihdr = struct.pack(">IIBBBBB", 8000, 6000, 8, 0, 0, 0, 0)
    data = zlib.compress(row * 6000, 9)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", data) + _chunk(b"IEND", b"")


def truncated_png() -> bytes:
    p = photo()
    return p[: len(p) // 2]


def bad_crc_png() -> bytes:
    p = bytearray(photo())
    p[29] ^= 0xFF  # inside IHDR's CRC
    return bytes(p)


def tiny_png() -> bytes:
    return png(np.zeros((4, 4, 3), np.uint8))


def gif() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (32, 32)).save(buf, "GIF")
    return buf.getvalue()


def img(data: bytes) -> c.ImageInput:
    return c.ImageInput(data=data)


def uri(u: str) -> c.ImageInput:
    return c.ImageInput(uri=u)


# -- per-service request builders ----------------------------------------------------------------

def assess(*images, **kw):
    return lambda ctx: d.AssessRequest(images=[i(ctx) if callable(i) else i for i in images], **kw)


def detect(*images, **kw):
    return lambda ctx: d.DetectRequest(images=[i(ctx) if callable(i) else i for i in images], **kw)


def good(ctx: Ctx) -> c.ImageInput:
    return uri(ctx.good_uri)


def embed(*images):
    return lambda ctx: e.EmbedImagesRequest(images=[i(ctx) if callable(i) else i for i in images])


def vec(*values) -> c.Vector:
    return c.Vector(values=list(values))


def lv(i, *values) -> e.LabeledVector:
    return e.LabeledVector(id=str(i), vector=vec(*values))


def square_vectors(n: int = 6, dim: int = 4) -> list[c.Vector]:
    rng = np.random.default_rng(0)
    return [vec(*rng.normal(size=dim).tolist()) for _ in range(n)]


def gen(**kw):
    kw.setdefault("model", "tiny-sdxl")
    kw.setdefault("steps", 1)
    kw.setdefault("width", 64)
    kw.setdefault("height", 64)
    return lambda ctx: g.GenerateRequest(**kw)


def run_spec(**kw) -> t.RunSpec:
    base = dict(name="bad", base_model="tiny-sdxl", dataset_uri="", trigger_token="ohwx", rank=4, epochs=1,
                resolution=64)
    base.update(kw)
    return t.RunSpec(**base)


def start_run(**kw):
    return lambda ctx: t.StartRunRequest(spec=run_spec(**{"dataset_uri": ctx.uri("datasets/none/"), **kw}))


def box(x0, y0, x1, y1) -> c.Box:
    return c.Box(x_min=x0, y_min=y0, x_max=x1, y_max=y1)


EYES = [c.Landmark(kind=c.LANDMARK_KIND_LEFT_EYE, point=c.Point(x=150, y=100)),
        c.Landmark(kind=c.LANDMARK_KIND_RIGHT_EYE, point=c.Point(x=100, y=100)),
        c.Landmark(kind=c.LANDMARK_KIND_NOSE_TIP, point=c.Point(x=125, y=130)),
        c.Landmark(kind=c.LANDMARK_KIND_MOUTH_CENTER, point=c.Point(x=125, y=160))]


def mask_item(**kw) -> r.RegionMaskItem:
    base = dict(width=256, height=256, landmarks=EYES, face_box=box(80, 60, 180, 200))
    base.update(kw)
    return r.RegionMaskItem(**base)


OVERSIZED = 33 * 1024 * 1024


def truncated(message) -> bytes:
    """The message's bytes cut inside its last length-delimited field."""
    raw = message.SerializeToString()
    return raw[: len(raw) - 7]


def gen_stream(**kw):
    return lambda ctx: g.GenerateStreamRequest(request=gen(**kw)(ctx))


def watch_new_job(ctx: Ctx):
    """Submits a small curate job and returns the request that watches it."""
    import grpc

    from likeness.api.v1 import orchestrator_pb2_grpc

    with grpc.insecure_channel(ctx.orchestrator) as ch:
        job = orchestrator_pb2_grpc.OrchestratorServiceStub(ch).Submit(
            o.SubmitRequest(spec=curate(output_prefix="corpus/watched/")(ctx)), timeout=30).job
    return o.WatchRequest(job_id=job.job_id)


def with_repeated(message, field: str, element, n: int):
    """`message` with `n` copies of `element` appended to its repeated `field`, decoded in C from
    the wire form (building millions of Python messages would take the client seconds)."""
    holder = type(message)()
    items = getattr(holder, field)
    items.add().CopyFrom(element) if hasattr(items, "add") else items.append(element)
    message.MergeFromString(holder.SerializeToString() * n)
    return message


def curate_with_quotas(n: int):
    def build(ctx):
        spec = curate()(ctx)
        with_repeated(spec.curate, "quotas", c.Quota(dimension="seed", group="*", max=1), n)
        return o.SubmitRequest(spec=spec)
    return build


def many_sample_prompts(ctx):
    request = start_run()(ctx)
    with_repeated(request.spec, "sample_prompts", "p", 5_000_000)
    return request


def submit(spec_fn):
    return lambda ctx: o.SubmitRequest(spec=spec_fn(ctx))


def curate(**kw):
    def build(ctx):
        base = dict(import_source=o.ImportSource(uri=ctx.uri("demo-candidates/")), target_count=4)
        base.update({k: (v(ctx) if callable(v) else v) for k, v in kw.items()})
        return o.JobSpec(curate=o.CurateSpec(**base))
    return build


IA, NF, FP, RE, OK = "INVALID_ARGUMENT", "NOT_FOUND", "FAILED_PRECONDITION", "RESOURCE_EXHAUSTED", "OK"
ITEM_IA = "item:INVALID_ARGUMENT"

CASES: list[Case] = [
    # ---- detection: images (corrupt, bombs, wrong types, traversal), batch and policy limits
    Case("det-random-bytes", "detection", "Assess", assess(img(b"\x00\x01garbage" * 50)), IA,
         ("images[0]", "unsupported image format")),
    Case("det-empty-bytes", "detection", "Assess", assess(img(b"")), IA, ("images[0]", "empty")),
    Case("det-truncated-png", "detection", "Assess", assess(lambda ctx: img(truncated_png())), IA, ("images[0]",)),
    Case("det-bad-crc-png", "detection", "Detect", detect(lambda ctx: img(bad_crc_png())), IA, ("images[0]",)),
    Case("det-header-bomb", "detection", "Assess", assess(lambda ctx: img(header_bomb())), IA,
         ("images[0]", "over the limit")),
    Case("det-real-bomb-48mp", "detection", "Detect", detect(lambda ctx: img(real_bomb())), IA,
         ("images[0]", "over the limit")),
    Case("det-image-too-small", "detection", "Assess", assess(lambda ctx: img(tiny_png())), IA,
         ("images[0]", "minimum")),
    Case("det-gif-format", "detection", "Assess", assess(lambda ctx: img(gif())), IA, ("images[0]", "PNG, JPEG, WebP")),
    Case("det-json-as-image", "detection", "Detect", detect(img(b'{"image": "not really"}')), IA,
         ("images[0]", "unsupported")),
    Case("det-bad-item-isolated", "detection", "Assess", assess(img(b"junk"), good), ITEM_IA, ("images[0]",)),
    Case("det-uri-etc-passwd", "detection", "Assess", assess(uri("file:///etc/passwd")), IA, ("images[0]",)),
    Case("det-uri-dotdot", "detection", "Detect", detect(lambda ctx: uri(ctx.uri("../../../../etc/passwd"))), IA,
         ("images[0]",)),
    Case("det-uri-other-bucket", "detection", "Assess", assess(uri("s3://someone-elses-bucket/a.png")), IA,
         ("images[0]",)),
    Case("det-uri-http", "detection", "Assess", assess(uri("http://169.254.169.254/latest/meta-data")), IA,
         ("images[0]",)),
    Case("det-uri-missing", "detection", "Assess", assess(lambda ctx: uri(ctx.uri("nope/missing.png"))), NF,
         ("images[0]",)),
    Case("det-no-images", "detection", "Assess", assess(), IA, ("images",)),
    Case("det-batch-over-limit", "detection", "Detect", detect(*[img(b"x")] * 65), IA, ("images", "64")),
    Case("det-policy-nan", "detection", "Assess", assess(good, policy=d.ValidationPolicy(min_face_fraction=NAN)), IA,
         ("min_face_fraction",)),
    Case("det-policy-fraction-2", "detection", "Detect", detect(good, policy=d.ValidationPolicy(min_face_fraction=2.0)),
         IA, ("min_face_fraction",)),
    Case("det-weights-negative", "detection", "Assess", assess(good, weights=d.QualityWeights(sharpness=-1)), IA,
         ("sharpness",)),
    Case("det-weights-all-zero", "detection", "Assess",
         assess(good, weights=d.QualityWeights(sharpness=0, contrast=0, exposure=0, face_confidence=0)), IA,
         ("weights",)),
    Case("det-min-quality-inf", "detection", "Assess", assess(good, min_quality=INF), IA, ("min_quality",)),
    # ---- embedding
    Case("emb-corrupt-image", "embedding", "EmbedImages", embed(img(b"\xff\xd8\xff garbage jpeg")), IA, ("images[0]",)),
    Case("emb-header-bomb", "embedding", "EmbedImages", embed(lambda ctx: img(header_bomb())), IA,
         ("images[0]", "over the limit")),
    Case("emb-uri-traversal", "embedding", "EmbedImages", embed(lambda ctx: uri(ctx.uri("../outside.png"))), IA,
         ("images[0]",)),
    Case("emb-no-images", "embedding", "EmbedImages", embed(), IA, ("images",)),
    Case("emb-texts-no-tower", "embedding", "EmbedTexts", lambda ctx: e.EmbedTextsRequest(texts=["a"]), FP, ("text",)),
    Case("emb-score-no-tower", "embedding", "Score", lambda ctx: e.ScoreRequest(images=[good(ctx)], texts=["a"]), FP,
         ("text",)),
    Case("emb-cluster-nan", "embedding", "Cluster",
         lambda ctx: e.ClusterRequest(items=[lv(0, 1, 0), lv(1, NAN, 1), lv(2, 0, 1)], k=2), IA, ("items[1]",)),
    Case("emb-cluster-one-item", "embedding", "Cluster", lambda ctx: e.ClusterRequest(items=[lv(0, 1, 0)], k=1), IA,
         ("items",)),
    Case("emb-cluster-dims-differ", "embedding", "Cluster",
         lambda ctx: e.ClusterRequest(items=[lv(0, 1, 0), lv(1, 1, 0, 0), lv(2, 0, 1)], k=2), IA,
         ("items[1]", "dimension")),
    Case("emb-cluster-dup-ids", "embedding", "Cluster",
         lambda ctx: e.ClusterRequest(items=[lv(0, 1, 0), lv(0, 0, 1), lv(2, 1, 1)], k=2), IA, ("id",)),
    Case("emb-cluster-k-absurd", "embedding", "Cluster",
         lambda ctx: e.ClusterRequest(items=[lv(0, 1, 0), lv(1, 0, 1), lv(2, 1, 1)], k=1_000_000), IA, ("k",)),
    Case("emb-cluster-empty-vector", "embedding", "Cluster", lambda ctx: e.ClusterRequest(items=[lv(0), lv(1)], k=2),
         IA, ("vector",)),
    Case("emb-select-nan-quality", "embedding", "Select",
         lambda ctx: e.SelectRequest(candidates=[e.SelectionCandidate(id="a", quality=NAN)], count=1), IA,
         ("quality",)),
    Case("emb-select-count-over", "embedding", "Select",
         lambda ctx: e.SelectRequest(candidates=[e.SelectionCandidate(id="a", quality=1)], count=5), IA, ("count",)),
    Case("emb-select-bad-method", "embedding", "Select",
         lambda ctx: e.SelectRequest(candidates=[e.SelectionCandidate(id="a", quality=1)], count=1, method=99), IA,
         ("method",)),
    Case("emb-select-quota-min-gt-max", "embedding", "Select",
         lambda ctx: e.SelectRequest(candidates=[e.SelectionCandidate(id="a", quality=1, groups={"seed": "1"})],
                                     count=1, quotas=[c.Quota(dimension="seed", group="*", min=3, max=1)]),
         IA, ("quotas[0]",)),
    Case("emb-diversity-nan", "embedding", "Diversity",
         lambda ctx: e.DiversityRequest(reference=square_vectors(),
                                        generated=[vec(NAN, 0, 0, 0)] + square_vectors()[:3]),
         IA, ("generated",)),
    Case("emb-diversity-k-too-big", "embedding", "Diversity",
         lambda ctx: e.DiversityRequest(reference=square_vectors(), generated=square_vectors(), nearest_k=50), IA,
         ("nearest_k",)),
    Case("emb-diversity-bootstrap-absurd", "embedding", "Diversity",
         lambda ctx: e.DiversityRequest(reference=square_vectors(), generated=square_vectors(), bootstrap=10_000_000),
         IA, ("bootstrap",)),
    Case("emb-diversity-confidence-1", "embedding", "Diversity",
         lambda ctx: e.DiversityRequest(reference=square_vectors(), generated=square_vectors(), confidence=1.0), IA,
         ("confidence",)),
    # ---- generation
    Case("gen-unknown-model", "generation", "Generate", gen(model="no-such-model"), NF, ("no-such-model",)),
    Case("gen-model-traversal", "generation", "Generate", gen(model="../../etc"), IA, ("model",)),
    Case("gen-unknown-adapter", "generation", "Generate",
         lambda ctx: g.GenerateRequest(model="tiny-sdxl", steps=1,
                                       adapters=[g.LoraAdapter(uri=ctx.uri("loras/missing.safetensors"), scale=1)]),
         NF, ("adapters[0]",)),
    Case("gen-adapter-not-safetensors", "generation", "Generate",
         lambda ctx: g.GenerateRequest(model="tiny-sdxl", steps=1, adapters=[g.LoraAdapter(uri=ctx.good_uri, scale=1)]),
         IA, ("adapters[0]",)),
    Case("gen-adapter-scale-nan", "generation", "Generate",
         lambda ctx: g.GenerateRequest(model="tiny-sdxl", steps=1,
                                       adapters=[g.LoraAdapter(uri=ctx.good_uri, scale=NAN)]),
         IA, ("scale",)),
    Case("gen-width-absurd", "generation", "Generate", gen(width=100_000), IA, ("width",)),
    Case("gen-width-not-multiple-8", "generation", "Generate", gen(width=100), IA, ("width", "8")),
    Case("gen-count-absurd", "generation", "Generate", gen(count=10_000), IA, ("count",)),
    Case("gen-steps-absurd", "generation", "Generate", gen(steps=1_000_000), IA, ("steps",)),
    Case("gen-negative-seed", "generation", "Generate", gen(seed=-5), IA, ("seed",)),
    Case("gen-guidance-nan", "generation", "Generate", gen(guidance_scale=NAN), IA, ("guidance_scale",)),
    Case("gen-strength-inf", "generation", "Generate",
         lambda ctx: g.GenerateRequest(model="tiny-sdxl", task=g.TASK_IMAGE_TO_IMAGE, steps=1, init_image=good(ctx),
                                       strength=INF),
         IA, ("strength",)),
    Case("gen-noise-negative", "generation", "Generate", gen(noise_injection=-1), IA, ("noise_injection",)),
    Case("gen-bad-sampler", "generation", "Generate", gen(sampler=99), IA, ("sampler",)),
    Case("gen-bad-task", "generation", "Generate", gen(task=42), IA, ("task",)),
    Case("gen-bad-quality-mode", "generation", "Generate", gen(quality_mode=17), IA, ("quality_mode",)),
    Case("gen-img2img-no-init", "generation", "Generate", gen(task=g.TASK_IMAGE_TO_IMAGE), IA, ("init_image",)),
    Case("gen-img2img-corrupt-init", "generation", "Generate",
         gen(task=g.TASK_IMAGE_TO_IMAGE, init_image=img(b"not a png")), IA, ("init_image",)),
    Case("gen-inpaint-bomb-mask", "generation", "Generate",
         lambda ctx: g.GenerateRequest(model="tiny-sdxl", task=g.TASK_INPAINT, steps=1, init_image=good(ctx),
                                       mask=img(header_bomb())),
         IA, ("mask", "over the limit")),
    Case("gen-output-prefix-traversal", "generation", "Generate", gen(output_prefix="../../escape/"), IA,
         ("output_prefix",)),
    Case("gen-too-many-adapters", "generation", "Generate",
         lambda ctx: g.GenerateRequest(model="tiny-sdxl", steps=1,
                                       adapters=[g.LoraAdapter(uri=ctx.good_uri, scale=1)] * 9),
         IA, ("adapters", "8")),
    Case("gen-stream-unknown-model", "generation", "GenerateStream",
         lambda ctx: g.GenerateStreamRequest(request=g.GenerateRequest(model="nope", steps=1)), NF, ("nope",)),
    # ---- restoration
    Case("res-mask-no-items", "restoration", "RegionMask", lambda ctx: r.RegionMaskRequest(region=r.REGION_BOTH_EYES),
         IA, ("items",)),
    Case("res-mask-bad-region", "restoration", "RegionMask",
         lambda ctx: r.RegionMaskRequest(items=[mask_item()], region=77), IA, ("region",)),
    Case("res-mask-absurd-size", "restoration", "RegionMask",
         lambda ctx: r.RegionMaskRequest(items=[mask_item(width=1_000_000_000, height=1_000_000_000)],
                                         region=r.REGION_BOTH_EYES),
         IA, ("items[0]",)),
    Case("res-mask-nan-landmark", "restoration", "RegionMask",
         lambda ctx: r.RegionMaskRequest(items=[mask_item(landmarks=[
             c.Landmark(kind=c.LANDMARK_KIND_LEFT_EYE, point=c.Point(x=NAN, y=1))] + EYES[1:])],
                                         region=r.REGION_LEFT_EYE),
         IA, ("items[0]",)),
    Case("res-mask-bad-landmark-kind", "restoration", "RegionMask",
         lambda ctx: r.RegionMaskRequest(
             items=[mask_item(landmarks=[c.Landmark(kind=999, point=c.Point(x=1, y=1))] + EYES)],
                                         region=r.REGION_BOTH_EYES),
         IA, ("landmarks", "LandmarkKind")),
    Case("res-restore-bad-landmark-kind", "restoration", "Restore",
         lambda ctx: r.RestoreRequest(items=[r.RestoreItem(image=good(ctx), face_box=box(80, 60, 180, 200),
                                                           landmarks=[c.Landmark(kind=-1)])]),
         IA, ("landmarks", "LandmarkKind")),
    Case("res-mask-padding-nan", "restoration", "RegionMask",
         lambda ctx: r.RegionMaskRequest(items=[mask_item()], region=r.REGION_BOTH_EYES, padding_iod=NAN), IA,
         ("padding_iod",)),
    Case("res-mask-prefix-traversal", "restoration", "RegionMask",
         lambda ctx: r.RegionMaskRequest(items=[mask_item()], region=r.REGION_BOTH_EYES, output_prefix="/../../etc/"),
         IA, ("output_prefix",)),
    Case("res-composite-corrupt-patch", "restoration", "Composite",
         lambda ctx: r.CompositeRequest(items=[r.CompositeItem(base=good(ctx), patch=img(b"junk"), mask=good(ctx))]),
         IA, ("items[0]",)),
    Case("res-composite-feather-nan", "restoration", "Composite",
         lambda ctx: r.CompositeRequest(items=[r.CompositeItem(base=good(ctx), patch=good(ctx), mask=good(ctx))],
                                        feather_sigma=NAN),
         IA, ("feather_sigma",)),
    Case("res-restore-unknown-model", "restoration", "Restore",
         lambda ctx: r.RestoreRequest(items=[r.RestoreItem(image=good(ctx), face_box=box(80, 60, 180, 200))],
                                      model="no-such-restorer"),
         IA, ("no-such-restorer",)),
    Case("res-restore-fidelity-2", "restoration", "Restore",
         lambda ctx: r.RestoreRequest(items=[r.RestoreItem(image=good(ctx), face_box=box(80, 60, 180, 200))],
                                      fidelity=2.0),
         IA, ("fidelity",)),
    Case("res-restore-too-many", "restoration", "Restore",
         lambda ctx: r.RestoreRequest(items=[r.RestoreItem(image=good(ctx), face_box=box(80, 60, 180, 200))] * 33), IA,
         ("items", "32")),
    Case("res-restore-box-outside", "restoration", "Restore",
         lambda ctx: r.RestoreRequest(items=[r.RestoreItem(image=good(ctx), face_box=box(5000, 5000, 6000, 6000))]), IA,
         ("items[0]",)),
    Case("res-restore-bomb", "restoration", "Restore",
         lambda ctx: r.RestoreRequest(items=[r.RestoreItem(image=img(header_bomb()), face_box=box(0, 0, 10, 10))]), IA,
         ("over the limit",)),
    # ---- training
    Case("trn-unknown-base-model", "training", "StartRun", start_run(base_model="no-such-base"), IA,
         ("base_model", "no-such-base")),
    Case("trn-dataset-traversal", "training", "StartRun", start_run(dataset_uri="file:///etc/"), IA, ("dataset_uri",)),
    Case("trn-rank-absurd", "training", "StartRun", start_run(rank=1_000_000), IA, ("rank",)),
    Case("trn-lr-nan", "training", "StartRun", start_run(unet_lr=NAN), IA, ("unet_lr",)),
    Case("trn-caption-dropout-2", "training", "StartRun", start_run(caption_dropout=2.0), IA, ("caption_dropout",)),
    Case("trn-resolution-absurd", "training", "StartRun", start_run(resolution=1_000_000), IA, ("resolution",)),
    Case("trn-bad-precision", "training", "StartRun", start_run(precision=77), IA, ("precision",)),
    Case("trn-bad-executor", "training", "StartRun", start_run(executor=9), IA, ("executor",)),
    Case("trn-get-unknown-run", "training", "GetRun", lambda ctx: t.GetRunRequest(run_id="no-such-run"), NF,
         ("no-such-run",)),
    Case("trn-cancel-unknown-run", "training", "CancelRun", lambda ctx: t.CancelRunRequest(run_id="no-such-run"), NF,
         ("no-such-run",)),
    Case("trn-compare-one-run", "training", "CompareRuns", lambda ctx: t.CompareRunsRequest(run_ids=["a"]), IA,
         ("run_ids",)),
    Case("trn-list-bad-state", "training", "ListRuns", lambda ctx: t.ListRunsRequest(state=99), IA, ("state",)),
    Case("trn-watch-unknown-run", "training", "WatchRun", lambda ctx: t.WatchRunRequest(run_id="no-such-run"), NF,
         ("no-such-run",)),
    # ---- orchestrator
    Case("orc-empty-spec", "orchestrator", "Submit", lambda ctx: o.SubmitRequest(spec=o.JobSpec()), IA, ("spec",)),
    Case("orc-import-traversal", "orchestrator", "Submit",
         submit(curate(import_source=lambda ctx: o.ImportSource(uri="file:///etc/"))), IA, ("import_source",)),
    Case("orc-target-negative", "orchestrator", "Submit", submit(curate(target_count=-3)), IA, ("target_count",)),
    Case("orc-min-quality-nan", "orchestrator", "Submit", submit(curate(min_quality=NAN)), IA, ("min_quality",)),
    Case("orc-prefix-traversal", "orchestrator", "Submit", submit(curate(output_prefix="../../outside/")), IA,
         ("output_prefix",)),
    Case("orc-storyboard-huge", "orchestrator", "Submit",
         submit(lambda ctx: o.JobSpec(storyboard=o.StoryboardSpec(
             model="tiny-sdxl", character="x", frame_prompts=["a"] * 100_000))),
         IA, ("frame_prompts",)),
    Case("orc-diversity-bad-sampler", "orchestrator", "Submit",
         submit(lambda ctx: o.JobSpec(diversity=o.DiversitySpec(
             model="tiny-sdxl", prompt="p", reference_uri=ctx.uri("demo-candidates/"),
             settings=[o.DiversitySetting(name="a", count=2, sampler=99)]))),
         IA, ("sampler",)),
    Case("orc-get-unknown", "orchestrator", "Get", lambda ctx: o.GetRequest(job_id="no-such-job"), NF,
         ("no-such-job",)),
    Case("orc-get-huge-id", "orchestrator", "Get", lambda ctx: o.GetRequest(job_id="x" * 100_000), IA,
         ("job_id", "100,000", "limit of 64")),
    Case("orc-cancel-unknown", "orchestrator", "Cancel", lambda ctx: o.CancelRequest(job_id="no-such-job"), NF,
         ("no-such-job",)),
    Case("orc-list-absurd-limit", "orchestrator", "List", lambda ctx: o.ListRequest(page_size=-1), IA, ("page_size",)),
    Case("orc-watch-unknown", "orchestrator", "Watch", lambda ctx: o.WatchRequest(job_id="no-such-job"), NF,
         ("no-such-job",)),
    Case("orc-import-one-level-above", "orchestrator", "Submit",
         submit(curate(import_source=lambda ctx: o.ImportSource(uri=ctx.store_root + "/"))), IA,
         ("import_source", "<seed>/<image_type>/<name>.png")),
    Case("gen-output-prefix-uri", "generation", "Generate",
         gen(model="no-such-model", output_prefix="s3://likeness/out/"), IA, ("output_prefix", "is a URI")),
    # ---- every service: fields over their limit (core/limits.py), inside the message size limit
    Case("orc-quotas-2m", "orchestrator", "Submit", curate_with_quotas(2_000_000), IA,
         ("spec.curate.quotas", "2,000,000 items", "limit of 1,000")),
    Case("orc-trigger-31mib", "orchestrator", "Submit", submit(curate(trigger_token="t" * (31 * 1024 * 1024))), IA,
         ("spec.curate.trigger_token", "limit of 128")),
    Case("det-images-over", "detection", "Detect",
         lambda ctx: d.DetectRequest(images=[c.ImageInput(uri=ctx.good_uri)] * 1025), IA,
         ("images", "1,025 items", "limit of 1,024")),
    Case("emb-cluster-ids-long", "embedding", "Cluster",
         lambda ctx: e.ClusterRequest(items=[e.LabeledVector(id="i" * 5_000_000, vector=c.Vector(values=[1, 0]))] * 2),
         IA, ("items[0].id", "limit of 256")),
    Case("emb-select-quotas-over", "embedding", "Select",
         lambda ctx: with_repeated(e.SelectRequest(candidates=[e.SelectionCandidate(id="a", quality=1)], count=1),
                                   "quotas", c.Quota(dimension="seed", group="*"), 3_000_000),
         IA, ("quotas", "limit of 1,000")),
    Case("gen-prompt-over", "generation", "Generate", gen(prompt="p" * 20_000_000), IA, ("prompt", "limit of 2,000")),
    Case("res-landmarks-over", "restoration", "RegionMask",
         lambda ctx: r.RegionMaskRequest(items=[with_repeated(r.RegionMaskItem(width=8, height=8), "landmarks",
                                                              c.Landmark(), 3_000_000)], region=r.REGION_BOTH_EYES),
         IA, ("items[0].landmarks", "limit of 64")),
    Case("trn-sample-prompts-over", "training", "StartRun", many_sample_prompts, IA,
         ("spec.sample_prompts", "limit of 64")),
    # ---- every service: oversized messages (over LIKENESS_MAX_MESSAGE_BYTES, 32 MiB by default)
    Case("det-oversized", "detection", "Assess", lambda ctx: d.AssessRequest(images=[img(b"\0" * OVERSIZED)]), RE,
         ("larger than max",)),
    Case("emb-oversized", "embedding", "EmbedTexts", lambda ctx: e.EmbedTextsRequest(texts=["a" * OVERSIZED]), RE,
         ("larger than max",)),
    Case("gen-oversized", "generation", "Generate", gen(prompt="p" * OVERSIZED), RE, ("larger than max",)),
    Case("res-oversized", "restoration", "Composite",
         lambda ctx: r.CompositeRequest(items=[r.CompositeItem(base=img(b"\0" * OVERSIZED))]), RE,
         ("larger than max",)),
    Case("trn-oversized", "training", "StartRun", start_run(name="n" * OVERSIZED), RE, ("larger than max",)),
    Case("orc-oversized", "orchestrator", "Submit",
         submit(lambda ctx: o.JobSpec(storyboard=o.StoryboardSpec(character="c" * OVERSIZED))), RE,
         ("larger than max",)),
    # ---- every service: a truncated or foreign request body (not valid protobuf)
    Case("det-truncated-body", "detection", "Assess", lambda ctx: truncated(d.AssessRequest(images=[img(photo())])), IA,
         ("request", "AssessRequest"), mode="raw"),
    Case("emb-truncated-body", "embedding", "EmbedImages",
         lambda ctx: truncated(e.EmbedImagesRequest(images=[img(photo())])), IA, ("request", "EmbedImagesRequest"),
         mode="raw"),
    Case("gen-garbage-body", "generation", "Generate", lambda ctx: b"\xff\xff\xff\xff\xff", IA,
         ("request", "GenerateRequest"), mode="raw"),
    Case("res-truncated-body", "restoration", "Restore",
         lambda ctx: truncated(r.RestoreRequest(items=[r.RestoreItem(image=img(photo()))])), IA,
         ("request", "RestoreRequest"), mode="raw"),
    Case("trn-truncated-body", "training", "StartRun",
         lambda ctx: truncated(t.StartRunRequest(spec=run_spec(name="x" * 200))), IA, ("request", "StartRunRequest"),
         mode="raw"),
    Case("orc-truncated-body", "orchestrator", "Submit", lambda ctx: truncated(o.SubmitRequest(spec=curate()(ctx))), IA,
         ("request", "SubmitRequest"), mode="raw"),
    # ---- cancelled streams: the client goes away mid-stream; the server logs CANCELLED, not INTERNAL
    Case("gen-stream-cancelled", "generation", "GenerateStream", gen_stream(steps=30), "CANCELLED", (), mode="cancel"),
    Case("orc-watch-cancelled", "orchestrator", "Watch", lambda ctx: watch_new_job(ctx), "CANCELLED", (),
         mode="cancel"),
]


# -- running a case -------------------------------------------------------------------------------

STUBS = {
    "detection": ("likeness.api.v1.detection_pb2_grpc", "DetectionServiceStub"),
    "embedding": ("likeness.api.v1.embedding_pb2_grpc", "EmbeddingServiceStub"),
    "generation": ("likeness.api.v1.generation_pb2_grpc", "GenerationServiceStub"),
    "restoration": ("likeness.api.v1.restoration_pb2_grpc", "RestorationServiceStub"),
    "training": ("likeness.api.v1.training_pb2_grpc", "TrainingServiceStub"),
    "orchestrator": ("likeness.api.v1.orchestrator_pb2_grpc", "OrchestratorServiceStub"),
}
STREAMS = {"GenerateStream", "Watch", "WatchRun"}


def stub(service: str, channel):
    import importlib

    module, name = STUBS[service]
    return getattr(importlib.import_module(module), name)(channel)


def item_error(response):
    """ItemError of item 0 of a batch response, or None."""
    if hasattr(response, "results") and len(response.results):
        first = response.results[0]
        return first.error if first.HasField("error") and first.error.code else None
    for err in getattr(response, "errors", ()):
        if err.index == 0:
            return err
    return None


def method_path(service: str, method: str) -> str:
    return f"/likeness.v1.{STUBS[service][1].removesuffix('Stub')}/{method}"


def outcome(channel, case: Case, ctx: Ctx, timeout: float = 60.0) -> tuple[str, str]:
    """(status, message) of a case: the gRPC status and details, or `item:<code>` and the item's
    message when an OK response carries an error for item 0."""
    import grpc

    request = case.request(ctx)
    try:
        if case.mode == "raw":
            call = channel.unary_unary(method_path(case.service, case.method), request_serializer=None,
                                       response_deserializer=None)
            call(request, timeout=timeout)
            return "OK", ""
        s = stub(case.service, channel)
        if case.mode == "cancel":
            stream = getattr(s, case.method)(request, timeout=timeout)
            next(stream)
            stream.cancel()
            for _ in stream:
                pass
            return "OK", "stream ended before the cancel"
        if case.method in STREAMS:
            responses = list(getattr(s, case.method)(request, timeout=timeout))
            response = responses[-1] if responses else None
        else:
            response = getattr(s, case.method)(request, timeout=timeout)
    except grpc.RpcError as exc:
        return exc.code().name, exc.details() or ""
    err = item_error(response) if response is not None else None
    if err is not None:
        return f"item:{err.code}", f"{err.field} {err.message}"
    return "OK", ""
