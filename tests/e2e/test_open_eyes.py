"""The open_eyes job end to end on tiny-sdxl (its inpainting is noise, so eyes never open: the job
must say so). What it must hold whatever the model: one feathered paste with a measured seam far
below a hard paste's, bytes beyond the feather's reach untouched, restoration confined to the
face, true PNG metadata, every face of a group photo, and every quality mode."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from likeness.api.v1 import common_pb2, generation_pb2
from likeness.api.v1 import orchestrator_pb2 as o
from likeness.core.images import decode_image
from likeness.core.pngmeta import read_png_metadata
from likeness.orchestrator.workflows.open_eyes import FEATHER_REACH_PX
from tests.e2e.test_jobs import manifest, put_png, run, store  # noqa: F401 - `store` is a fixture
from tests.photos import group_photo, skimage_photo

pytestmark = pytest.mark.slow


def job_of(jobs_client, src: str, **fields) -> o.Job:
    spec = o.OpenEyesSpec(image=common_pb2.ImageInput(uri=src), model="tiny-sdxl", seed=5, **{"steps": 2, **fields})
    return run(jobs_client, o.JobSpec(open_eyes=spec))


def pixels(artifacts, uri: str) -> np.ndarray:
    return decode_image(artifacts.get(uri), "image")


def in_frame(face: dict, crop_mask: np.ndarray, shape) -> np.ndarray:
    """A face's eye mask (the size of its work crop) placed in the frame."""
    x0, y0, x1, y1 = face["crop_box"]
    mask = np.zeros(shape[:2], bool)
    mask[y0:y1, x0:x1] = crop_mask
    return mask


def beyond_reach(mask: np.ndarray) -> np.ndarray:
    outside = cv2.distanceTransform((~mask).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    return outside > FEATHER_REACH_PX + 1


def test_one_feathered_paste_true_metadata_and_an_honest_verdict(jobs_client, store):  # noqa: F811
    photo = skimage_photo("astronaut")
    src = put_png(store, "e2e-inputs/astronaut.png", photo)
    job = job_of(jobs_client, src, variations=2, restore=False)
    assert job.state == o.JOB_STATE_SUCCEEDED, job.error
    m = manifest(store, job)
    (face,) = m["faces"]
    x0, y0, x1, y1 = face["crop_box"]
    crop = photo[y0:y1, x0:x1]
    mask = pixels(store, face["mask"]["uri"])[..., 0] > 0
    assert mask.shape == crop.shape[:2] and 0 < mask.sum() < mask.size * 0.2
    assert crop.size < photo.size / 2  # the work crop, not the frame, went through the services
    # beyond the feather's reach every byte is the input's (the denoised region reaches further)
    far = beyond_reach(mask)
    outside = cv2.distanceTransform((~mask).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    near = (outside > 0) & (outside <= FEATHER_REACH_PX)
    assert len(m["variations"]) == 2
    for v in m["variations"]:
        out = pixels(store, v["uri"])
        assert v["crop_box"] == face["crop_box"] and out.shape == crop.shape and np.array_equal(out[far], crop[far])
        assert not np.array_equal(out[mask], crop[mask])  # the eyes were repainted
        assert not np.array_equal(out[near], crop[near])  # and blended into their surroundings
        seam = v["seam"]  # noise patches: the hardest case for a seam
        assert seam["boundary_gradient"] <= 0.5 * seam["hard_gradient"], seam
        meta = read_png_metadata(store.get(v["uri"]))
        params = meta["parameters"]
        assert "Steps: 2" in params and "Sampler:" in params and "Face: 0" in params and "Rank:" in params
        assert f"Seed: {v['seed']}" in params and "Quality mode: standard" in params
        assert json.loads(meta["likeness"])["crop_box"] == face["crop_box"]
        # what generation ran, as generation wrote it into its own PNG
        assert params.startswith(read_png_metadata(store.get(v["generated"]))["parameters"])
        assert v["eyes_open"] is not True  # tiny-sdxl paints noise: never a success
    # result.png: the winner's crop put back exactly, every other pixel the input's
    result = pixels(store, m["result"]["uri"])
    winner = pixels(store, next(v["uri"] for v in m["variations"] if v["rank"] == 1))
    assert np.array_equal(result[y0:y1, x0:x1], winner)
    assert np.array_equal(result[beyond_reach(in_frame(face, mask, photo.shape))],
                          photo[beyond_reach(in_frame(face, mask, photo.shape))])
    assert "NOT open" in job.summary["verdict"] or "not measured" in job.summary["verdict"]
    assert [v["rank"] for v in m["variations"]] == [1, 2]
    html = store.get(job.report.uri).decode()
    assert "Ranking" in html and "before (mask outline) | after" in html and job.summary["verdict"] in html


def test_restoration_stays_on_the_face(jobs_client, store):  # noqa: F811
    src = put_png(store, "e2e-inputs/astronaut-restore.png", skimage_photo("astronaut"))
    job = job_of(jobs_client, src, variations=1, restore=True, fidelity=0.3)
    assert job.state == o.JOB_STATE_SUCCEEDED, job.error
    (v,) = manifest(store, job)["variations"]
    assert v["restoration"]["changed_pixels"] > 0 and v["restoration"]["changed_outside_face"] == 0
    # the count the restoration service reported, against one made here
    changed = (pixels(store, v["composite"]) != pixels(store, v["final"])).any(axis=2)
    assert v["restoration"]["changed_pixels"] == int(changed.sum())
    assert "Face restoration: classical" in read_png_metadata(store.get(v["uri"]))["parameters"]


def test_every_face_of_a_group_photo(jobs_client, store):  # noqa: F811
    photo = group_photo()
    src = put_png(store, "e2e-inputs/group.png", photo)
    job = job_of(jobs_client, src, variations=1, restore=False)
    assert job.state == o.JOB_STATE_SUCCEEDED, job.error
    m = manifest(store, job)
    assert int(job.summary["faces"]) >= 4 and len(m["faces"]) == int(job.summary["faces"])
    result = pixels(store, m["result"]["uri"])
    frame = photo.copy()  # each face is cut from the frame holding the faces repaired before it
    for face in m["faces"]:
        x0, y0, x1, y1 = face["crop_box"]
        mask = pixels(store, face["mask"]["uri"])[..., 0] > 0
        (winner,) = [v for v in m["variations"] if v["face"] == face["face"]]
        repaired = pixels(store, winner["uri"])
        far = beyond_reach(mask)
        assert np.array_equal(repaired[far], frame[y0:y1, x0:x1][far]), face
        assert not np.array_equal(repaired[mask], frame[y0:y1, x0:x1][mask]), face
        frame[y0:y1, x0:x1] = repaired
    assert np.array_equal(result, frame)  # the winners placed back exactly, in order, nothing else
    one = job_of(jobs_client, src, variations=1, restore=False, face_index=1)
    assert len(manifest(store, one)["faces"]) == 1 and manifest(store, one)["faces"][0]["face"] == 1
    too_far = jobs_client.submit(o.JobSpec(open_eyes=o.OpenEyesSpec(
        image=common_pb2.ImageInput(uri=src), model="tiny-sdxl", steps=2, face_index=15)))
    failed = jobs_client.follow(too_far.job_id, quiet=True)
    assert failed.state == o.JOB_STATE_FAILED and "face_index" in failed.error


@pytest.mark.parametrize("mode", [generation_pb2.QUALITY_MODE_FAST, generation_pb2.QUALITY_MODE_QUALITY,
                                  generation_pb2.QUALITY_MODE_ULTRA])
def test_every_quality_mode(jobs_client, store, mode):  # noqa: F811
    src = put_png(store, "e2e-inputs/astronaut-modes.png", skimage_photo("astronaut"))
    job = job_of(jobs_client, src, variations=1, restore=False, quality_mode=mode, steps=5)  # refiner: >= 1 step
    assert job.state == o.JOB_STATE_SUCCEEDED, job.error
    (v,) = manifest(store, job)["variations"]
    name = generation_pb2.QualityMode.Name(mode).removeprefix("QUALITY_MODE_").lower()
    assert f"Quality mode: {name}" in read_png_metadata(store.get(v["uri"]))["parameters"]
