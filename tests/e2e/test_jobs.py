"""End to end: each of the five job kinds through real service processes (tiny-sdxl where weights
are needed), asserting what the job promises."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from likeness.api.v1 import common_pb2, generation_pb2, training_pb2
from likeness.api.v1 import orchestrator_pb2 as o
from likeness.core.images import decode_image, encode_png
from likeness.core.settings import CommonSettings
from likeness.core.store import open_store
from likeness.core.workid import sha256_hex
from tests.photos import group_photo, skimage_photo, tom_hanks

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def store(e2e_stack):
    return open_store(CommonSettings(store_uri=e2e_stack.env["LIKENESS_STORE_URI"]))


def manifest(store, job) -> dict:
    return json.loads(store.get(job.manifest.uri))


def run(client, spec) -> o.Job:
    job = client.submit(spec)
    return client.follow(job.job_id, quiet=True)


def put_png(store, key: str, rgb: np.ndarray) -> str:
    return store.put(key, encode_png(rgb), "image/png").uri


@pytest.fixture(scope="module")
def small_candidates(store):
    """Two identities x 4 variants (scaled, flipped), a no-face photo per seed, a group photo."""
    sources = {"1": skimage_photo("astronaut"), "2": tom_hanks()}
    for seed, img in sources.items():
        for i, scale in enumerate((1.0, 0.85, 0.7, 0.9)):
            im = Image.fromarray(img)
            im = im.resize((int(im.width * scale), int(im.height * scale)))
            if i == 3:
                im = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            put_png(store, f"e2e-candidates/{seed}/{'original' if i == 0 else 'scenario'}/v{i}.png", np.asarray(im))
        put_png(store, f"e2e-candidates/{seed}/scenario/coffee.png", skimage_photo("coffee"))
    put_png(store, "e2e-candidates/3/original/group.png", group_photo())
    return store.uri("e2e-candidates/")


def test_curate_rejects_what_it_must_and_meets_quotas(jobs_client, store, small_candidates):
    # the candidates are rescaled and mirrored copies of one photo per person: duplicate removal
    # (tests/orchestrator/test_duplicates.py) would keep one of each, so it is off here
    spec = o.JobSpec(curate=o.CurateSpec(import_source=o.ImportSource(uri=small_candidates), target_count=4,
                                         quotas=[common_pb2.Quota(dimension="seed", group="*", min=2, max=2)],
                                         trigger_token="ohwx person", output_prefix="e2e-datasets/small/",
                                         keep_duplicates=True))
    job = run(jobs_client, spec)
    assert job.state == o.JOB_STATE_SUCCEEDED, job.error
    m = manifest(store, job)
    decisions = {c["id"]: (c["decision"], c["reason"]) for c in m["candidates"]}
    assert decisions["1-scenario-coffee"] == ("rejected", "no_face")
    assert decisions["2-scenario-coffee"] == ("rejected", "no_face")
    assert decisions["3-original-group"] == ("rejected", "multiple_faces")
    kept = [c for c in m["candidates"] if c["decision"] == "kept"]
    assert len(kept) == 4 and sorted(c["seed"] for c in kept) == ["1", "1", "2", "2"]  # quota: exactly 2 per seed
    # the dataset holds the images and captions the manifest lists, byte for byte
    for d in m["dataset"]:
        data = store.get(f"e2e-datasets/small/{d['key']}")
        assert sha256_hex(data) == d["sha256"]
        assert store.get(f"e2e-datasets/small/{d['caption_key']}").decode().startswith("ohwx person")
    html = store.get(job.report.uri).decode()
    assert "Selected set by cluster" in html and "no_face" in html and "data:image/jpeg;base64," in html


def test_train_on_a_curated_set(jobs_client, store, small_candidates):
    curated = run(jobs_client, o.JobSpec(curate=o.CurateSpec(
        import_source=o.ImportSource(uri=small_candidates), target_count=4, trigger_token="ohwx person",
        output_prefix="e2e-datasets/train/", keep_duplicates=True)))
    assert curated.state == o.JOB_STATE_SUCCEEDED, curated.error
    run_spec = training_pb2.RunSpec(name="e2e", base_model="tiny-sdxl", dataset_uri=curated.summary["dataset_uri"],
                                    trigger_token="ohwx person", rank=4, epochs=2, resolution=64, seed=1,
                                    sample_prompts=["ohwx person"], sample_seeds=[0], sample_steps=2)
    job = run(jobs_client, o.JobSpec(train=o.TrainSpec(run=run_spec)))
    assert job.state == o.JOB_STATE_SUCCEEDED, job.error
    assert int(job.summary["checkpoints"]) == 2 and int(job.summary["steps"]) > 0
    m = manifest(store, job)
    for c in m["checkpoints"]:
        assert store.stat(c["diffusers"]["uri"]).sha256 == c["diffusers"]["sha256"]
        assert store.exists(c["kohya"]["uri"])


def test_storyboard_retries_and_records_every_attempt(clip_jobs_client, e2e_stack):
    spec = o.StoryboardSpec(model="tiny-sdxl", character="a woman with red hair", frame_prompts=["walking", "reading"],
                            seed=3, retry_budget=2, width=64, height=64, steps=2, require_all_frames=False,
                            clip_threshold=0.99)  # a random-weight CLIP never reaches 0.99: the validator must fail
    job = run(clip_jobs_client, o.JobSpec(storyboard=spec))
    # every frame fails, and with require_all_frames off the job says so instead of failing
    assert job.state == o.JOB_STATE_SUCCEEDED, job.error
    assert job.summary["frames_missing"] == "1,2" and "0 of 2 frames passed" in job.summary["note"]
    store = open_store(CommonSettings(store_uri=e2e_stack.env["LIKENESS_STORE_URI"]))
    m = manifest(store, job)
    attempts = m["attempts"]
    # every attempt fails one validator (no face, several faces, or the CLIP score), so each frame
    # uses its whole budget, with the documented fix between attempts
    assert len(attempts) == 2 * 3
    assert all(a["failure"] in ("no_face", "multiple_faces", "low_clip_score") for a in attempts)
    for frame in (0, 1):
        tries = [a for a in attempts if a["frame"] == frame]
        assert len({a["seed"] for a in tries}) == 3  # every retry changes the seed
        for before, after in zip(tries, tries[1:], strict=False):
            if before["failure"] == "no_face":
                assert after["guidance"] < before["guidance"]
            elif before["failure"] == "multiple_faces":
                assert after["guidance"] > before["guidance"]
    assert job.summary["retries"] == "4"
    html = store.get(job.report.uri).decode()
    assert "Attempts" in html and "CLIP score" in html
    # provenance: tiny-sdxl and tiny-clip are random weights, and the report says so first
    models = {m["name"]: m for m in m["models"]}
    assert models["tiny-sdxl"]["stand_in"] == "random weights" and models["tiny-sdxl"]["digest"]
    assert any(e["role"] == "encoder" and e["stand_in"] == "random weights" for e in models.values())
    assert (html.index("these images are noise; validation figures on them mean nothing")
            < html.index("<h2>Summary</h2>"))


def test_storyboard_conditions_frames_on_a_face_landmark_map(jobs_client, store):
    photo = skimage_photo("astronaut")
    src = put_png(store, "e2e-inputs/astronaut-control.png", photo)
    common = dict(model="tiny-sdxl", character="an astronaut", frame_prompts=["smiling", "looking left"], seed=4,
                  retry_budget=0, width=64, height=64, steps=2, skip_clip_check=True,
                  require_all_frames=False)  # tiny-sdxl frames hold no face: every frame "fails"
    plain = run(jobs_client, o.JobSpec(storyboard=o.StoryboardSpec(**common)))
    steered = run(jobs_client, o.JobSpec(storyboard=o.StoryboardSpec(
        **common, control_model="tiny-controlnet-sdxl", control_scale=1.0,
        control_reference=common_pb2.ImageInput(uri=src))))
    assert steered.state == o.JOB_STATE_SUCCEEDED, steered.error
    tries, plain_tries = manifest(store, steered)["attempts"], manifest(store, plain)["attempts"]
    controls = {a["control"] for a in tries}
    assert len(controls) == 1 and "" not in controls  # every frame on the reference's map
    landmarks = decode_image(store.get(controls.pop()), "image")
    assert landmarks.shape == (64, 64, 3) and landmarks.max() == 255 and (landmarks == 0).mean() > 0.5
    assert [a["uri"] for a in tries] != [a["uri"] for a in plain_tries]  # the control changed the frames
    assert "control: face-landmark map" in store.get(steered.report.uri).decode()


def test_diversity_tabulates_settings(jobs_client, store):
    for i, img in enumerate((skimage_photo("astronaut"), tom_hanks(), skimage_photo("camera"),
                             skimage_photo("coffee"))):
        put_png(store, f"e2e-reference/r{i}.png", img)
    settings = [o.DiversitySetting(name="base", seed_start=0, count=4, steps=2),
                o.DiversitySetting(name="euler-a-noise", seed_start=100, count=4, steps=2, guidance_scale=9.0,
                                   sampler=generation_pb2.SAMPLER_EULER_ANCESTRAL, noise_injection=0.3)]
    job = run(jobs_client,
              o.JobSpec(diversity=o.DiversitySpec(model="tiny-sdxl", prompt="portrait", width=64, height=64,
                                                               reference_uri=store.uri("e2e-reference/"),
                                                               settings=settings, nearest_k=2)))
    assert job.state == o.JOB_STATE_SUCCEEDED, job.error
    m = manifest(store, job)
    assert [s["setting"] for s in m["settings"]] == ["base", "euler-a-noise"]
    for s in m["settings"]:
        assert s["images"] == 4
        for metric in ("precision", "recall", "coverage", "novelty"):
            v = s["metrics"][metric]  # a bootstrap interval need not contain the point estimate
            assert 0.0 <= v["value"] <= 1.0 and 0.0 <= v["ci_low"] <= v["ci_high"] <= 1.0, (metric, v)
        assert -1.0 <= s["metrics"]["mean_pairwise_similarity"]["value"] <= 1.0
        if s["faces"] < 2:  # pose spread is undefined: n/a, never a made-up 0
            assert s["metrics"]["yaw_std"]["value"] is None
    assert [s["parameters"]["sampler"] for s in m["settings"]] == ["preset", "euler_ancestral"]
    assert "Metrics per setting" in store.get(job.report.uri).decode()
