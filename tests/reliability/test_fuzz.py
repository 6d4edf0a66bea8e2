"""Property-based fuzzing (hypothesis) of request messages, per service, against live processes:
whatever the field values (NaN, infinities, huge and negative numbers, unknown enum values, odd
text, random bytes as images), the answer is OK or a documented client-error status, never
INTERNAL or UNKNOWN, and the service is SERVING afterwards.

Strategies keep a *valid* request cheap (tiny sizes, few steps, missing datasets), so 25 examples
per service run in seconds."""

from __future__ import annotations

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from likeness.api.v1 import common_pb2 as c
from likeness.api.v1 import detection_pb2 as d
from likeness.api.v1 import embedding_pb2 as e
from likeness.api.v1 import generation_pb2 as g
from likeness.api.v1 import orchestrator_pb2 as o
from likeness.api.v1 import restoration_pb2 as r
from likeness.api.v1 import training_pb2 as t
from likeness.client.local import health
from tests.reliability import corpus

pytestmark = pytest.mark.slow

# Statuses a client error may get (docs/reliability.md); anything else is a server bug.
CLIENT_ERRORS = {"OK", "INVALID_ARGUMENT", "NOT_FOUND", "FAILED_PRECONDITION", "OUT_OF_RANGE", "RESOURCE_EXHAUSTED",
                 "ALREADY_EXISTS"}
FUZZ = settings(max_examples=25, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

floats = st.floats(width=32, allow_nan=True, allow_infinity=True)
small_floats = st.one_of(st.floats(-2, 2, width=32), floats)
int32 = st.integers(-(2**31), 2**31 - 1)
small_ints = st.one_of(st.integers(-3, 5), int32)
enum_ints = st.integers(-3, 12)
text = st.text(max_size=40)
ids = st.one_of(st.text(max_size=12), st.sampled_from(["", "a", "../../etc/passwd", "x" * 600]))


@pytest.fixture(scope="module")
def live(rel_stack, rel_store):
    good = rel_store.put("fuzz/good.png", corpus.photo(), "image/png").uri
    opts = [("grpc.max_receive_message_length", 64 << 20), ("grpc.max_send_message_length", 64 << 20)]
    chans = {n: grpc.insecure_channel(rel_stack.address(n), options=opts) for n in corpus.STUBS}
    stubs = {n: corpus.stub(n, ch) for n, ch in chans.items()}
    yield rel_stack, good, stubs
    for ch in chans.values():
        ch.close()


def call(stubs, service: str, method: str, request) -> str:
    try:
        if method in corpus.STREAMS:
            for _ in getattr(stubs[service], method)(request, timeout=120):
                pass
        else:
            getattr(stubs[service], method)(request, timeout=120)
        return "OK"
    except grpc.RpcError as exc:
        assert exc.code().name in CLIENT_ERRORS, (
            f"{service}.{method}: {exc.code().name}: {exc.details()}\n{request}"[:3000])
        return exc.code().name


def images(good: str):
    return st.lists(st.one_of(st.just(c.ImageInput(uri=good)),
                              st.binary(max_size=64).map(lambda b: c.ImageInput(data=b)),
                              ids.map(lambda u: c.ImageInput(uri=u))), max_size=3)


def optional(field_strategy):
    return st.one_of(st.none(), field_strategy)


def build(cls, **fields):
    """cls(**fields) without the None ones (unset optional fields)."""
    return cls(**{k: v for k, v in fields.items() if v is not None})


def test_detection(live):
    stack, good, stubs = live

    @FUZZ
    @given(imgs=images(good), frac=optional(small_floats), yaw=optional(floats), conf=optional(small_floats),
           sharp=optional(small_floats), minq=optional(small_floats), emb=st.booleans(),
           method=st.sampled_from(["Assess", "Detect"]))
    def fuzz(imgs, frac, yaw, conf, sharp, minq, emb, method):
        policy = build(d.ValidationPolicy, min_face_fraction=frac, max_yaw=yaw, min_confidence=conf)
        if method == "Assess":
            req = build(d.AssessRequest, images=imgs, policy=policy, with_embeddings=emb, min_quality=minq,
                        weights=build(d.QualityWeights, sharpness=sharp))
        else:
            req = d.DetectRequest(images=imgs, policy=policy, with_embeddings=emb)
        call(stubs, "detection", method, req)

    fuzz()
    assert health(stack.address("detection")) == "SERVING"


def test_embedding(live):
    stack, good, stubs = live
    vectors = st.lists(st.lists(small_floats, min_size=0, max_size=4), max_size=6)

    @FUZZ
    @given(vs=vectors, k=small_ints, kmin=small_ints, kmax=small_ints, z=optional(floats), nk=small_ints,
           boot=optional(st.integers(-5, 50)), conf=optional(small_floats), count=small_ints, method=enum_ints,
           quality=floats, names=st.lists(ids, max_size=4), imgs=images(good))
    def fuzz(vs, k, kmin, kmax, z, nk, boot, conf, count, method, quality, names, imgs):
        items = [e.LabeledVector(id=names[i % len(names)] if names else str(i), vector=c.Vector(values=v)) for i,
                 v in enumerate(vs)]
        call(stubs, "embedding", "Cluster",
             build(e.ClusterRequest, items=items, k=k, k_min=kmin, k_max=kmax, outlier_z=z, seed=1))
        cands = [e.SelectionCandidate(id=str(i), quality=quality if i == 0 else 1.0, groups={"seed": n}) for i,
                 n in enumerate(names)]
        quotas = [c.Quota(dimension="seed", group="*", min=kmin % 4, max=kmax % 4)]
        call(stubs, "embedding", "Select", e.SelectRequest(candidates=cands, count=count, method=method, quotas=quotas))
        vecs = [c.Vector(values=v) for v in vs]
        call(stubs, "embedding", "Diversity",
             build(e.DiversityRequest, reference=vecs, generated=vecs[::-1], nearest_k=nk,
                                                    bootstrap=boot, confidence=conf, seed=1))
        call(stubs, "embedding", "EmbedImages", e.EmbedImagesRequest(images=imgs))

    fuzz()
    assert health(stack.address("embedding")) == "SERVING"


def test_generation(live):
    stack, good, stubs = live

    @FUZZ
    @given(model=st.sampled_from(["tiny-sdxl", "", "nope", "../x", "a" * 300]), task=enum_ints, sampler=enum_ints,
           mode=st.sampled_from([0, 1, 2, 17, -1]), side=st.sampled_from([0, 64, 63, -8, 4096, 10**6]),
           steps=st.one_of(st.integers(-2, 2), st.just(10**6)), count=st.one_of(st.integers(-1, 2), st.just(10**5)),
           seed=st.integers(-(2**63), 2**63 - 1), guidance=optional(floats), strength=optional(floats),
           noise=small_floats, prompt=text, prefix=st.sampled_from(["", "fuzz/", "../up/", "/abs/", "a//b/"]),
           scale=floats, adapter=st.booleans(), stream=st.booleans())
    def fuzz(model, task, sampler, mode, side, steps, count, seed, guidance, strength, noise, prompt, prefix, scale,
             adapter, stream):
        req = build(g.GenerateRequest, model=model, task=task, sampler=sampler, quality_mode=mode, width=side,
                    height=side,
                    steps=steps, count=count, seed=seed, guidance_scale=guidance, strength=strength,
                    noise_injection=noise,
                    prompt=prompt, output_prefix=prefix, init_image=c.ImageInput(uri=good) if task in (2, 3) else None,
                    adapters=[g.LoraAdapter(uri=good, scale=scale)] if adapter else None)
        if stream:
            call(stubs, "generation", "GenerateStream", g.GenerateStreamRequest(request=req))
        else:
            call(stubs, "generation", "Generate", req)

    fuzz()
    call(stubs, "generation", "ListModels", g.ListModelsRequest())
    assert health(stack.address("generation")) == "SERVING"


def test_restoration(live):
    stack, good, stubs = live
    point = st.builds(c.Point, x=floats, y=floats)
    landmark = st.builds(c.Landmark, kind=enum_ints, point=point)
    boxes = st.builds(c.Box, x_min=small_floats, y_min=small_floats, x_max=floats, y_max=floats)

    @FUZZ
    @given(w=small_ints, h=small_ints, lms=st.lists(landmark, max_size=5), face=boxes, region=enum_ints,
           pad=small_floats,
           padpx=floats, align=small_ints, crop=small_ints, feather=floats, dil=floats, fid=optional(floats),
           model=st.sampled_from(["", "classical", "codeformer", "nope"]),
           prefix=st.sampled_from(["", "fuzz/", "../x/"]))
    def fuzz(w, h, lms, face, region, pad, padpx, align, crop, feather, dil, fid, model, prefix):
        item = r.RegionMaskItem(width=w, height=h, landmarks=lms, face_box=face)
        call(stubs, "restoration", "RegionMask", r.RegionMaskRequest(items=[item], region=region, padding_iod=pad,
                                                                      padding_px=padpx, align=align, crop_padding=crop,
                                                                      output_prefix=prefix))
        img = c.ImageInput(uri=good)
        call(stubs, "restoration", "Composite",
             r.CompositeRequest(items=[r.CompositeItem(base=img, patch=img, mask=img, patch_box=face)],
                                feather_sigma=feather, dilation_px=dil, output_prefix=prefix))
        call(stubs, "restoration", "Restore",
             build(r.RestoreRequest, items=[r.RestoreItem(image=img, face_box=face, landmarks=lms)],
                   fidelity=fid, model=model, output_prefix=prefix))

    fuzz()
    assert health(stack.address("restoration")) == "SERVING"


def test_training(live):
    stack, good, stubs = live

    @FUZZ
    @given(name=ids, base=st.sampled_from(["tiny-sdxl", "", "nope", "../x"]), rank=small_ints, alpha=floats,
           lr=st.floats(allow_nan=True, allow_infinity=True), epochs=small_ints, res=small_ints, bs=small_ints,
           precision=enum_ints, executor=enum_ints, policy=enum_ints, dropout=floats, run_id=ids, limit=small_ints,
           state=enum_ints, run_ids=st.lists(ids, max_size=3))
    def fuzz(name, base, rank, alpha, lr, epochs, res, bs, precision, executor, policy, dropout, run_id, limit, state,
             run_ids):
        # the dataset never exists, so no example can start a real training run
        spec = t.RunSpec(name=name, base_model=base, dataset_uri=good.rsplit("/", 2)[0] + "/fuzz-no-dataset/",
                         rank=rank,
                         alpha=alpha, unet_lr=lr, epochs=epochs, resolution=res, batch_size=bs, precision=precision,
                         executor=executor, missing_caption_policy=policy, caption_dropout=dropout)
        assert call(stubs, "training", "StartRun", t.StartRunRequest(spec=spec)) != "OK"
        call(stubs, "training", "GetRun", t.GetRunRequest(run_id=run_id))
        call(stubs, "training", "ListRuns", t.ListRunsRequest(page_size=limit, state=state))
        call(stubs, "training", "CompareRuns", t.CompareRunsRequest(run_ids=run_ids))

    fuzz()
    assert health(stack.address("training")) == "SERVING"


def test_orchestrator(live):
    stack, good, stubs = live
    missing = good.rsplit("/", 2)[0] + "/fuzz-no-candidates/"

    @FUZZ
    @given(target=small_ints, clusters=small_ints, top_k=small_ints, minq=floats,
           prefix=st.sampled_from(["", "fuzz/", "../x/", "/etc/"]),
           qmin=small_ints, qmax=small_ints, dim=st.sampled_from(["seed", "cluster", "", "nope"]), job_id=ids,
           limit=small_ints,
           frames=st.lists(text, max_size=3), guidance=optional(floats), sampler=enum_ints, count=small_ints)
    def fuzz(target, clusters, top_k, minq, prefix, qmin, qmax, dim, job_id, limit, frames, guidance, sampler, count):
        # sources that do not exist, so an accepted spec would still be refused at Submit
        cur = o.CurateSpec(import_source=o.ImportSource(uri=missing), target_count=target, clusters=clusters,
                           top_k=top_k,
                           min_quality=minq, output_prefix=prefix,
                           quotas=[c.Quota(dimension=dim, group="*", min=qmin, max=qmax)])
        assert call(stubs, "orchestrator", "Submit", o.SubmitRequest(spec=o.JobSpec(curate=cur))) != "OK"
        div = o.DiversitySpec(model="tiny-sdxl", prompt="p", reference_uri=missing,
                              settings=[build(o.DiversitySetting, name="a", count=count, sampler=sampler,
                                              guidance_scale=guidance)])
        assert call(stubs, "orchestrator", "Submit", o.SubmitRequest(spec=o.JobSpec(diversity=div))) != "OK"
        sb = build(o.StoryboardSpec, model="no-such-model", character="c", frame_prompts=frames,
                   guidance_scale=guidance)
        assert call(stubs, "orchestrator", "Submit", o.SubmitRequest(spec=o.JobSpec(storyboard=sb))) != "OK"
        call(stubs, "orchestrator", "Get", o.GetRequest(job_id=job_id))
        call(stubs, "orchestrator", "Cancel", o.CancelRequest(job_id=job_id))
        call(stubs, "orchestrator", "List", o.ListRequest(page_size=limit))

    fuzz()
    assert health(stack.address("orchestrator")) == "SERVING"
