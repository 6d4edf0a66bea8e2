"""What the open_eyes job and the storyboard save on the way: a stored image decoded once per job,
report views computed on the eye region only (the same pixels as on the whole frame), and a
storyboard's landmark map built from the faces its frame's Detect already found."""

from __future__ import annotations

import asyncio

import cv2
import numpy as np
import pytest

from likeness.api.v1 import common_pb2, detection_pb2, restoration_pb2
from likeness.core.images import encode_png
from likeness.orchestrator.workflows import eye_views
from likeness.orchestrator.workflows.job_pixels import job_pixels
from likeness.orchestrator.workflows.storyboard import landmark_control
from tests.photos import skimage_photo


class CountingStore:
    def __init__(self, objects: dict[str, bytes]):
        self.objects, self.gets = objects, 0

    def get(self, uri: str) -> bytes:
        self.gets += 1
        return self.objects[uri]


class Ctx:
    def __init__(self, store=None):
        self.store, self.calls, self.warnings = store, [], []
        self.clients = type("Clients", (), {"detection": None, "restoration": None})()

    async def call(self, kind, client, method, request, response_type):
        self.calls.append(kind)
        if kind == "control-detect":
            face = common_pb2.Face(box=common_pb2.Box(x_min=1, y_min=2, x_max=30, y_max=40))
            return detection_pb2.DetectResponse(results=[detection_pb2.DetectResult(faces=[face])])
        self.control_request = request
        return restoration_pb2.ControlImageResponse(
            results=[restoration_pb2.ControlImageResult(image=common_pb2.Artifact(uri="file:///map.png"))])

    async def warn(self, message, stage=""):
        self.warnings.append(message)


def test_a_stored_image_is_decoded_once_per_job_and_shared_read_only():
    photo = skimage_photo("astronaut")
    store = CountingStore({"a": encode_png(photo)})
    ctx, other = Ctx(store), Ctx(store)
    first = job_pixels(ctx, "a")
    assert np.array_equal(first, photo) and job_pixels(ctx, "a") is first and store.gets == 1
    with pytest.raises(ValueError):
        first[0, 0] = 0  # shared between the job's stages: nobody may draw on it
    job_pixels(other, "a")  # another job decodes its own
    assert store.gets == 2


def _whole_frame_views(before, after, mask, box):
    """The views computed over the whole frame, then cut to the box (what they were before)."""
    marked = before.copy()
    marked[eye_views.outline(mask)] = (255, 0, 0)
    left, right = eye_views._panel(marked, box), eye_views._panel(after, box)
    pair = np.concatenate([left, np.full((left.shape[0], 4, 3), 255, np.uint8), right], axis=1)
    a = after.astype(np.int16)
    step = np.zeros(after.shape[:2], np.int16)
    step[:, 1:] = np.abs(np.diff(a, axis=1)).max(axis=2)
    step[1:, :] = np.maximum(step[1:, :], np.abs(np.diff(a, axis=0)).max(axis=2))
    view = np.stack([np.clip(step * 2, 0, 255).astype(np.uint8)] * 3, axis=2)
    view[eye_views.outline(mask)] = (255, 0, 0)
    return pair, eye_views._panel(view, box)


@pytest.mark.parametrize("center", [(200, 190), (6, 250), (505, 505)])  # inside, at the left edge, in a corner
def test_eye_region_views_match_the_whole_frame_computation(center):
    before = skimage_photo("astronaut")
    after = before.copy()
    after[150:230, 150:260] = np.random.default_rng(0).integers(0, 256, (80, 110, 3), dtype=np.uint8)
    mask = np.zeros(before.shape[:2], np.uint8)
    cv2.ellipse(mask, center, (30, 12), 0, 0, 360, 255, -1)
    box = eye_views.eye_box(mask > 0, before.shape[1], before.shape[0])
    pair, seam = _whole_frame_views(before, after, mask > 0, box)
    assert np.array_equal(eye_views.before_after(before, after, mask > 0, box), pair)
    assert np.array_equal(eye_views.seam_map(after, mask > 0, box), seam)


def test_the_storyboard_landmark_map_reuses_the_frames_detected_faces():
    spec = type("Spec", (), {"width": 64, "height": 64})()
    face = common_pb2.Face(box=common_pb2.Box(x_min=5, y_min=6, x_max=50, y_max=60))
    ctx = Ctx()
    assert asyncio.run(landmark_control(ctx, spec, "file:///frame.png", [face])) == "file:///map.png"
    assert ctx.calls == ["control-image"]  # no second Detect of the frame
    assert ctx.control_request.items[0].faces[0].box.x_max == 50
    fresh = Ctx()  # a reference image nobody detected yet: Detect first
    asyncio.run(landmark_control(fresh, spec, "file:///reference.png"))
    assert fresh.calls == ["control-detect", "control-image"] and fresh.control_request.items[0].faces[0].box.y_max == 40
    none = Ctx()
    assert asyncio.run(landmark_control(none, spec, "file:///empty.png", [])) == "" and none.warnings
