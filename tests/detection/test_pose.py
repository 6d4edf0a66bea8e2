"""Head pose from landmarks: known rotations of the model head projected through the camera
are recovered with the signs common.proto defines."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from likeness.detection.faces import Box, Face, Landmark, mirror_face
from likeness.detection.pose import HEAD_MODEL_MM, angles_from_rotation, camera_matrix, estimate_pose

W, H = 640, 480
BOX = Box(270, 190, 370, 290)  # the face's box sets the camera (pose.camera_matrix)
BLAZEFACE_POINTS = (Landmark.LEFT_EYE, Landmark.RIGHT_EYE, Landmark.NOSE_TIP, Landmark.MOUTH_CENTER,
                    Landmark.LEFT_EAR, Landmark.RIGHT_EAR)
SCRFD_POINTS = (Landmark.LEFT_EYE, Landmark.RIGHT_EYE, Landmark.NOSE_TIP, Landmark.MOUTH_LEFT,
                Landmark.MOUTH_RIGHT)


def rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """Model->camera rotation built independently of pose.py. Camera axes: x right, y down, z
    forward; the frontal head's nose points along -z. Turning to the image's right (yaw > 0) swings
    the nose toward +x, looking up (pitch > 0) toward -y, and roll > 0 turns the ear-to-ear axis
    clockwise on screen; roll is applied first (about the head's own axis), then pitch, then yaw."""
    y, p, r = map(math.radians, (yaw, pitch, roll))
    ry = np.array([[math.cos(y), 0, -math.sin(y)], [0, 1, 0], [math.sin(y), 0, math.cos(y)]])
    rx = np.array([[1, 0, 0], [0, math.cos(p), math.sin(p)], [0, -math.sin(p), math.cos(p)]])
    rz = np.array([[math.cos(r), -math.sin(r), 0], [math.sin(r), math.cos(r), 0], [0, 0, 1]])
    rot = ry @ rx @ rz
    nose = rot @ np.array([0.0, 0.0, -1.0])
    assert np.sign(nose[0]) == np.sign(yaw) or yaw == 0  # nose toward +x when yaw > 0
    assert np.sign(-nose[1]) == np.sign(pitch) or pitch == 0  # toward -y (up) when pitch > 0
    return rot


def project(rot: np.ndarray, kinds, distance_mm: float = 600.0) -> dict[Landmark, tuple[float, float]]:
    rvec, _ = cv2.Rodrigues(rot)
    points = np.array([HEAD_MODEL_MM[k] for k in kinds], dtype=np.float64)
    image, _ = cv2.projectPoints(points, rvec, np.array([10.0, -20.0, distance_mm]), camera_matrix(BOX), None)
    return {k: (float(x), float(y)) for k, (x, y) in zip(kinds, image.reshape(-1, 2), strict=True)}


@pytest.mark.parametrize("kinds", [BLAZEFACE_POINTS, SCRFD_POINTS], ids=["blazeface", "scrfd"])
@pytest.mark.parametrize("yaw,pitch,roll", [(0, 0, 0), (30, 0, 0), (-30, 0, 0), (0, 20, 0), (0, -20, 0),
                                            (0, 0, 15), (0, 0, -15), (25, -10, 8), (-35, 15, -12)])
def test_known_rotations_are_recovered(kinds, yaw, pitch, roll):
    rot = rotation(yaw, pitch, roll)
    truth = angles_from_rotation(rot)
    # the test's own construction agrees with the documented conventions
    assert (truth.yaw, truth.pitch, truth.roll) == pytest.approx((yaw, pitch, roll), abs=1e-6)
    pose = estimate_pose(project(rot, kinds), BOX)
    assert (pose.yaw, pose.pitch, pose.roll) == pytest.approx((yaw, pitch, roll), abs=0.5)


def test_turn_to_image_right_moves_nose_right_of_eye_midpoint():
    marks = project(rotation(30, 0, 0), BLAZEFACE_POINTS)
    eye_mid = (marks[Landmark.LEFT_EYE][0] + marks[Landmark.RIGHT_EYE][0]) / 2
    assert marks[Landmark.NOSE_TIP][0] > eye_mid
    assert estimate_pose(marks, BOX).yaw > 25


def test_mirroring_landmarks_negates_yaw_and_roll_exactly():
    marks = project(rotation(28, 12, -9), BLAZEFACE_POINTS)
    face = Face(box=BOX, score=1.0, landmarks=marks)
    mirror = mirror_face(face, W)
    a, b = estimate_pose(marks, BOX), estimate_pose(mirror.landmarks, mirror.box)
    assert (b.yaw, b.pitch, b.roll) == pytest.approx((-a.yaw, a.pitch, -a.roll), abs=1e-3)


def test_too_few_points_give_no_pose():
    marks = project(rotation(0, 0, 0), (Landmark.LEFT_EYE, Landmark.RIGHT_EYE, Landmark.NOSE_TIP))
    assert estimate_pose(marks, BOX) is None
