"""Head pose (yaw, pitch, roll in degrees) from 2-D landmarks and a generic 3-D face.

Method: `cv2.solvePnP` fits the rotation of a mean adult head model (millimetres, below) to
whichever of its points the detector gave (BlazeFace: eyes, nose tip, mouth centre, ear tragions;
SCRFD: eyes, nose tip, mouth corners; the face mesh: all eight), with a pinhole camera built from
the FACE, not the image: focal length `FOCAL_FACE_SIDES` times the face box's longer side and the
principal point at the box centre. So the same face pixels give the same pose whatever canvas
surrounds them and however large it is (a camera from the image's size made one face yaw -50
degrees alone and -30 degrees pasted beside another photo). The focal length equals that of a
portrait framed ~3 face sides wide seen through a ~53 degree lens, the framing the demo
portraits use; it sets how much perspective the fit expects, not the angles' scale.

Conventions (common.proto `Pose`), camera view, image x right and y down:
- yaw   > 0: the subject turns to the image's right (their left);
- pitch > 0: the subject looks up;
- roll  > 0: the head tilts clockwise as seen in the image.
They are the Euler angles of the fitted rotation R (model frame -> camera frame) factored as
R = Ry(yaw) Rx(pitch) Rz(roll): the head first rolls about its own forward axis, then pitches,
then yaws. So yaw and pitch are the direction the face points to, read off the facing vector
f = R @ (0, 0, -1): yaw = atan2(f_x, -f_z), pitch = atan2(-f_y, hypot(f_x, f_z)); roll is what
remains, Rz = (Ry Rx)^T R, roll = atan2(Rz[1, 0], Rz[0, 0]). The model is mirror-symmetric and
the principal point central, so a horizontal flip (which also swaps left and right landmarks)
negates yaw and roll exactly and keeps pitch.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from likeness.detection.faces import Box, Landmark, Pose

# Generic head in the camera's axes for a frontal face: x toward the image's right (the subject's
# left), y down, z away from the camera; origin at the nose tip. Millimetres, from average adult
# anthropometry (interpupillary distance ~63 mm, bitragion breadth ~145 mm). The ear points'
# height is calibrated to BlazeFace's tragion keypoints, which sit near eye level: with it the six
# faces of the group photo t1.jpg (people facing the camera) average a pitch of ~0 degrees.
HEAD_MODEL_MM: dict[Landmark, tuple[float, float, float]] = {
    Landmark.NOSE_TIP: (0.0, 0.0, 0.0),
    Landmark.LEFT_EYE: (31.5, -33.0, 27.0),
    Landmark.RIGHT_EYE: (-31.5, -33.0, 27.0),
    Landmark.MOUTH_CENTER: (0.0, 30.0, 18.0),
    Landmark.MOUTH_LEFT: (24.0, 30.0, 28.0),
    Landmark.MOUTH_RIGHT: (-24.0, 30.0, 28.0),
    Landmark.LEFT_EAR: (72.0, -34.0, 100.0),
    Landmark.RIGHT_EAR: (-72.0, -34.0, 100.0),
}

# Points that must be present: both eyes and the nose fix yaw/roll, a mouth point fixes pitch.
REQUIRED = (Landmark.LEFT_EYE, Landmark.RIGHT_EYE, Landmark.NOSE_TIP)


FOCAL_FACE_SIDES = 3.0


def camera_matrix(box: Box) -> np.ndarray:
    """Pinhole camera of a face: focal length from the face box's size, principal point at its centre."""
    f = FOCAL_FACE_SIDES * max(box.width, box.height, 1.0)
    cx, cy = (box.x_min + box.x_max) / 2.0, (box.y_min + box.y_max) / 2.0
    return np.array([[f, 0.0, cx], [0.0, f, cy], [0.0, 0.0, 1.0]])


def rotation_from_angles(pose: Pose) -> np.ndarray:
    """R = Ry(yaw) Rx(pitch) Rz(roll) with common.proto's signs (the inverse of the function below)."""
    y, p, r = (math.radians(a) for a in (pose.yaw, pose.pitch, pose.roll))
    ry = np.array([[math.cos(y), 0, -math.sin(y)], [0, 1, 0], [math.sin(y), 0, math.cos(y)]])
    rx = np.array([[1, 0, 0], [0, math.cos(p), math.sin(p)], [0, -math.sin(p), math.cos(p)]])
    rz = np.array([[math.cos(r), -math.sin(r), 0], [math.sin(r), math.cos(r), 0], [0, 0, 1]])
    return ry @ rx @ rz


def angles_from_rotation(rotation: np.ndarray) -> Pose:
    """Yaw, pitch, roll (degrees, common.proto signs) of a model->camera rotation matrix."""
    facing = -rotation[:, 2]
    yaw = math.degrees(math.atan2(facing[0], -facing[2]))
    pitch = math.degrees(math.atan2(-facing[1], math.hypot(facing[0], facing[2])))
    residual = rotation_from_angles(Pose(yaw, pitch, 0.0)).T @ rotation
    roll = math.degrees(math.atan2(residual[1, 0], residual[0, 0]))
    return Pose(yaw=yaw, pitch=pitch, roll=roll)


def estimate_pose(landmarks: dict[Landmark, tuple[float, float]], box: Box) -> Pose | None:
    """Pose of one face (`box`: its box, which sets the camera), or None when fewer than 4 model points (or not both eyes and the nose
    tip) are present."""
    kinds = [k for k in HEAD_MODEL_MM if k in landmarks]
    if len(kinds) < 4 or any(k not in landmarks for k in REQUIRED):
        return None
    model = np.array([HEAD_MODEL_MM[k] for k in kinds], dtype=np.float64)
    image = np.array([landmarks[k] for k in kinds], dtype=np.float64)
    cam = camera_matrix(box)
    # start from a frontal head at a distance that matches the eye spacing, then refine (LM);
    # a good start keeps the iterative solver out of the mirrored (behind-the-camera) solution
    eye_px = math.dist(landmarks[Landmark.LEFT_EYE], landmarks[Landmark.RIGHT_EYE])
    z = cam[0, 0] * 63.0 / max(eye_px, 1.0)
    nose = landmarks[Landmark.NOSE_TIP]
    tvec = np.array([[(nose[0] - cam[0, 2]) * z / cam[0, 0]], [(nose[1] - cam[1, 2]) * z / cam[1, 1]], [z]])
    rvec = np.zeros((3, 1))
    ok, rvec, tvec = cv2.solvePnP(model, image, cam, None, rvec, tvec, useExtrinsicGuess=True,
                                  flags=cv2.SOLVEPNP_ITERATIVE)
    if not ok:
        return None
    rotation, _ = cv2.Rodrigues(rvec)
    pose = angles_from_rotation(rotation)
    if not all(math.isfinite(v) for v in (pose.yaw, pose.pitch, pose.roll)):
        return None
    return pose


# --- pose from the face mesh ------------------------------------------------------------------

# Mirror pairs of the MediaPipe face mesh (subject's right, subject's left): eye corners and
# eyebrows, features that stay visible on a turned head. The face oval and the jaw are left out
# (their far side is guessed on a turned head), so are the mouth corners (they move with a smile).
MESH_PAIRS = ((33, 263), (133, 362), (70, 300), (105, 334))
MESH_FOREHEAD, MESH_SUBNASALE = 10, 2
# The mesh's depth (z) is flatter than a head: a turned head's ear-to-ear axis reads ~2/3 of its
# true depth swing. Scaled so that the tuning faces' yaw matches the landmark model's (turned heads
# of the demo and evaluation sets ~50-60 degrees, frontal ones ~0).
MESH_DEPTH_SCALE = 1.6
# The forehead-to-subnasale line leans back from the face plane; its angle, measured as the mean
# pitch of the six faces of the group photo t1.jpg (people facing the camera), is removed.
MESH_PITCH_OFFSET = -8.4


def pose_from_mesh(points: np.ndarray) -> Pose | None:
    """Yaw, pitch, roll from the face mesh's 468 3-D points (x, y in pixels, z in the same scale,
    away from the camera), with no camera model at all: the head's axes are read off the mesh
    (left-right: the mean direction of its mirror pairs; down: forehead to subnasale, made
    orthogonal), so the result depends on the face's pixels only, not on the canvas or its size."""
    p = np.asarray(points, np.float64).copy()
    p[:, 2] *= MESH_DEPTH_SCALE
    across = [p[left] - p[right] for right, left in MESH_PAIRS]
    x = np.mean([v / max(float(np.linalg.norm(v)), 1e-9) for v in across], axis=0)
    x /= max(float(np.linalg.norm(x)), 1e-9)
    y = p[MESH_SUBNASALE] - p[MESH_FOREHEAD]
    y = y - (y @ x) * x
    if float(np.linalg.norm(y)) < 1e-9:
        return None
    y /= np.linalg.norm(y)
    rotation = np.stack([x, y, np.cross(x, y)], axis=1)
    pose = angles_from_rotation(rotation)
    pitch = pose.pitch - MESH_PITCH_OFFSET
    if not all(math.isfinite(v) for v in (pose.yaw, pitch, pose.roll)):
        return None
    return Pose(pose.yaw, pitch, pose.roll)
