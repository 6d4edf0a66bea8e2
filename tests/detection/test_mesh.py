"""Face mesh + iris: pose that does not depend on the canvas, eye landmarks and openness, and
how they travel in Detect's protobuf."""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import pytest

from bench.eyes import close_eyes
from likeness.api.v1 import common_pb2
from likeness.detection.faces import Landmark, mirror_face
from likeness.detection.servicer import face_pb
from likeness.detection.validation import Rejection, ValidationPolicy
from likeness.orchestrator.demo_set import TURNED, Portrait, background, pasted
from tests.photos import skimage_photo

ASTRONAUT = Portrait("astronaut", "skimage:astronaut", (174, 69, 106))


def canvases(patch: np.ndarray) -> dict[str, np.ndarray]:
    """The same face pixels alone and on larger canvases, in different places."""
    h, w = patch.shape[:2]
    wide = np.concatenate([background("skimage:coffee", 512), background("skimage:brick", 512)], axis=1)
    big = cv2.resize(skimage_photo("grass"), (1280, 960), interpolation=cv2.INTER_LINEAR)
    return {"alone": patch,
            "beside a photo, 1024x512": pasted(wide, patch, 600, (512 - h) // 2),
            "corner of 1280x960": pasted(big, patch, 40, 30),
            "centre of 1280x960": pasted(big, patch, 640 - w // 2, 480 - h // 2),
            "640x640 gravel": pasted(background("skimage:gravel", 640), patch, 320, 320 - h // 2)}


@pytest.mark.slow  # 10 detections with the mesh on canvases up to 1600x1200
@pytest.mark.parametrize("who", [ASTRONAUT, TURNED[0], TURNED[1]], ids=lambda p: p.name)
def test_same_face_pixels_give_the_same_pose_on_any_canvas(mesh_pipeline, who):
    poses = {}
    for name, image in canvases(who.crop(2.0, 300)).items():
        faces = mesh_pipeline.find_faces(image)
        assert faces and faces[0].left_eye is not None, name
        poses[name] = faces[0].pose
    alone = poses["alone"]
    for name, pose in poses.items():
        diff = [abs(a - b) for a, b in ((pose.yaw, alone.yaw), (pose.pitch, alone.pitch), (pose.roll, alone.roll))]
        assert max(diff) <= 3.0, (who.name, name, pose, alone)
    if who is not ASTRONAUT:  # the turned heads stay turned away on every canvas
        assert all(abs(p.yaw) > 45 for p in poses.values()), poses


def test_open_eyes_measure_open_and_painted_shut_eyes_closed(mesh_pipeline):
    image = ASTRONAUT.crop(2.8, 560)
    f = mesh_pipeline.find_faces(image)[0]
    assert f.left_eye.openness > 0.8 and f.right_eye.openness > 0.8
    # iris centres lie inside their lid contours; the subject's left eye is on the image's right
    for eye in (f.left_eye, f.right_eye):
        poly = np.array(eye.lower_lid + tuple(reversed(eye.upper_lid)), np.float32)
        assert cv2.pointPolygonTest(poly, eye.iris, False) >= 0
        assert len(eye.upper_lid) == 7 and len(eye.lower_lid) == 9
    assert f.left_eye.iris[0] > f.right_eye.iris[0]
    assert f.landmarks[Landmark.LEFT_EYE] == f.left_eye.iris
    shut = close_eyes(image, f)
    g = mesh_pipeline.find_faces(shut)[0]
    assert g.left_eye.openness < 0.25 and g.right_eye.openness < 0.25, (g.left_eye, g.right_eye)
    gate = ValidationPolicy(min_eye_openness=0.35)
    assert mesh_pipeline.detect(image, gate).verdict.accepted
    verdict = mesh_pipeline.detect(shut, gate).verdict
    assert verdict.reason is Rejection.EYES_CLOSED and verdict.detail.endswith("< 0.35")


def test_eyes_travel_in_the_protobuf_and_mirror_with_the_face(mesh_pipeline):
    image = ASTRONAUT.crop(2.8, 320)
    f = mesh_pipeline.find_faces(image)[0]
    pb = face_pb(f)
    kinds = [common_pb2.LandmarkKind.Name(lm.kind).removeprefix("LANDMARK_KIND_") for lm in pb.landmarks]
    for side in ("LEFT", "RIGHT"):
        assert kinds.count(f"{side}_UPPER_LID") == 7 and kinds.count(f"{side}_LOWER_LID") == 9
        assert kinds.count(f"{side}_IRIS") == 1 and kinds.count(f"{side}_EYE") == 1
    assert pb.HasField("left_eye_openness") and pb.left_eye_openness == pytest.approx(f.left_eye.openness)
    bare = face_pb(f.with_(left_eye=None, right_eye=None))
    assert not bare.HasField("left_eye_openness")  # unset, not 0, when not measured
    m = mirror_face(f, image.shape[1])
    assert m.left_eye.iris == pytest.approx((image.shape[1] - f.right_eye.iris[0], f.right_eye.iris[1]))


def test_a_detection_the_mesh_does_not_see_as_a_face_is_dropped(mesh_pipeline):
    from bench.face_set import build

    stars = next(i for i in build("held_out") if i.name == "scene/hubble_deep_field").render()
    without_mesh = dataclasses.replace(mesh_pipeline, mesh=None)
    # BlazeFace (with flip averaging) "finds" a face in the star field; the mesh does not see one
    assert [f.score >= 0.6 for f in without_mesh.find_faces(stars)] == [True]
    assert mesh_pipeline.find_faces(stars) == []
