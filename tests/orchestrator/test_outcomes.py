"""Outcomes that mean what they say, and provenance in every artifact: workflows run on scripted
services (tests/orchestrator/fake_services.py) and the job's state, error, manifest and report are
checked, failed jobs included."""

from __future__ import annotations

import json

import numpy as np

from likeness.api.v1 import common_pb2
from likeness.api.v1 import orchestrator_pb2 as o
from likeness.core.images import encode_png
from likeness.orchestrator.workflows.storyboard import SEED_STRIDE
from tests.orchestrator.fake_services import FakeServices, face, open_test_store, run_job

NOISE_WARNING = "random weights: these images are noise; validation figures on them mean nothing"


def outputs(store, job) -> tuple[dict, str]:
    assert job.manifest and job.report, "every job writes its manifest and report"
    return json.loads(store.get(job.manifest["uri"])), store.get(job.report["uri"]).decode()


def storyboard(**kw) -> o.JobSpec:
    return o.JobSpec(storyboard=o.StoryboardSpec(model="tiny-sdxl", frame_prompts=["walking", "reading", "sleeping"],
                                                 seed=10, retry_budget=2, **kw))


def no_face_on_frame_2(seed: int) -> list:
    return [] if (seed - 11) % SEED_STRIDE == 0 else [face([1.0, 0.0])]


def test_a_missing_frame_fails_the_storyboard_and_still_writes_its_outputs(tmp_path):
    store = open_test_store(tmp_path)
    services = FakeServices(store, faces=no_face_on_frame_2)
    job = run_job(tmp_path, storyboard(), services)
    assert job.state == "FAILED"
    assert "frame 2 of 3 failed all 3 attempts (last: no_face)" in job.error and "require_all_frames" in job.error
    manifest, report = outputs(store, job)
    assert manifest["outcome"] == {"state": "FAILED", "reason": job.error}
    assert [f["status"] for f in manifest["frames"]] == ["passed", "failed", "not attempted"]
    # retry seeds as documented: the frame's seed + 7919 x attempt, not a running sum
    assert [a["seed"] for a in manifest["attempts"] if a["frame"] == 1] == [11, 11 + SEED_STRIDE, 11 + 2 * SEED_STRIDE]
    assert len(services.generation.sent("Generate")) == 4  # frame 3 is not attempted once the outcome is decided
    # the report leads with the outcome and its reason
    assert report.index("Outcome: FAILED") < report.index("<h2>Summary</h2>")
    assert "frame 2 of 3 failed" in report


def test_without_require_all_frames_the_gap_is_reported_not_hidden(tmp_path):
    store = open_test_store(tmp_path)
    job = run_job(tmp_path, storyboard(require_all_frames=False), FakeServices(store, faces=no_face_on_frame_2))
    assert job.state == "SUCCEEDED", job.error
    assert job.summary["frames_missing"] == "2" and job.summary["frames_passed"] == "2"
    assert "2 of 3 frames passed; missing frames 2" in job.summary["note"]
    manifest, report = outputs(store, job)
    assert [f["status"] for f in manifest["frames"]] == ["passed", "failed", "passed"]
    assert "missing frames 2" in report


def test_models_are_recorded_and_a_stand_in_is_announced_first(tmp_path):
    store = open_test_store(tmp_path)
    job = run_job(tmp_path, storyboard(), FakeServices(store))
    assert job.state == "SUCCEEDED", job.error
    manifest, report = outputs(store, job)
    models = {(m["role"], m["name"]): m for m in manifest["models"]}
    assert models[("generator", "tiny-sdxl")]["stand_in"] == "random weights"
    assert models[("generator", "tiny-sdxl")]["digest"] == "d" * 64
    assert models[("detector", "blazeface")]["stand_in"] == ""
    assert ("identity", "dlib-resnet-128") in models and ("encoder", "open_clip:tiny") in models
    assert NOISE_WARNING in report and report.index(NOISE_WARNING) < report.index("<h2>Summary</h2>")
    # every figure names its model
    assert "model: tiny-sdxl (random weights)" in report
    assert "CLIP score: open_clip:tiny (random weights)" in report
    assert "random weights" in job.summary["stand_in_models"]


def test_identity_comes_from_the_reference_image_which_guides_every_frame(tmp_path):
    store = open_test_store(tmp_path)
    ref = store.put("refs/me.png", encode_png(np.zeros((8, 8, 3), np.uint8)), "image/png").uri
    # the reference face is orthogonal to every generated face: identity fails on every frame,
    # while without a reference frame 1 would have set the identity and passed
    services = FakeServices(store, uploaded={ref: [face([0.0, 1.0])]})
    job = run_job(tmp_path, storyboard(reference_image=common_pb2.ImageInput(uri=ref), reference_scale=0.4,
                                       require_all_frames=False), services)
    assert job.state == "SUCCEEDED", job.error
    manifest, report = outputs(store, job)
    assert {a["failure"] for a in manifest["attempts"]} == {"low_identity"}
    assert manifest["settings"]["reference_image"] == ref
    sent = services.generation.sent("Generate")
    assert sent and all(r.reference_image.uri == ref and abs(r.reference_scale - 0.4) < 1e-6 for r in sent)
    assert "identity similarity to the reference image" in report


def test_curate_with_every_candidate_rejected_writes_manifest_and_report(tmp_path):
    store = open_test_store(tmp_path)
    for i in range(3):
        store.put(f"imports/c/{i}.png", encode_png(np.full((8, 8, 3), i, np.uint8)), "image/png")
    spec = o.JobSpec(curate=o.CurateSpec(import_source=o.ImportSource(uri=store.uri("imports/c/")), target_count=2))
    job = run_job(tmp_path, spec, FakeServices(store))
    assert job.state == "FAILED" and "target_count" in job.error
    manifest, report = outputs(store, job)
    assert manifest["outcome"]["state"] == "FAILED"
    assert [c["reason"] for c in manifest["candidates"]] == ["no_face"] * 3
    assert job.summary["rejected_no_face"] == "3"
    assert "Outcome: FAILED" in report and "no_face" in report


def test_diversity_manifest_has_intervals_parameters_and_na_for_undefined_metrics(tmp_path):
    store = open_test_store(tmp_path)
    for i in range(3):
        store.put(f"ref/{i}.png", encode_png(np.full((8, 8, 3), 40 * i, np.uint8)), "image/png")
    setting = o.DiversitySetting(name="hot", seed_start=5, count=3, guidance_scale=9.0, noise_injection=0.25, steps=2)
    spec = o.JobSpec(diversity=o.DiversitySpec(model="tiny-sdxl", prompt="a face", reference_uri=store.uri("ref/"),
                                               settings=[setting], nearest_k=1))
    one_face_only_for_seed_5 = lambda seed: [face([1.0, 0.0])] if seed == 5 else []  # noqa: E731
    job = run_job(tmp_path, spec, FakeServices(store, faces=one_face_only_for_seed_5))
    assert job.state == "SUCCEEDED", job.error
    manifest, report = outputs(store, job)
    s = manifest["settings"][0]
    assert s["parameters"] == {"seed_start": 5, "count": 3, "steps": 2, "guidance_scale": 9.0, "sampler": "preset",
                               "noise_injection": 0.25}
    assert s["metrics"]["recall"] == {"value": 0.5, "ci_low": 0.25, "ci_high": 0.75}
    assert s["faces"] == 1 and s["metrics"]["yaw_std"]["value"] is None  # one face: pose spread is undefined
    assert "found 1" in s["metrics"]["yaw_std"]["undefined"]
    assert "n/a" in report and "0.000 [0.000, 0.000]" not in report
    assert "embeddings: classical-v1 (classical features)" in report
