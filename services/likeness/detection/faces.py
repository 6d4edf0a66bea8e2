"""Domain types of a detected face, free of protobuf.

Landmark names follow common.proto's `LandmarkKind`: left and right are the SUBJECT's, so for a
frontal face the subject's left eye lies on the image's right side. Coordinates are pixels of the
source image (x right, y down); boxes are [x_min, x_max) x [y_min, y_max).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum

import numpy as np


class Landmark(StrEnum):
    """Facial points; values are the suffixes of common.proto's LANDMARK_KIND_* names."""

    LEFT_EYE = "LEFT_EYE"
    RIGHT_EYE = "RIGHT_EYE"
    NOSE_TIP = "NOSE_TIP"
    MOUTH_CENTER = "MOUTH_CENTER"
    MOUTH_LEFT = "MOUTH_LEFT"
    MOUTH_RIGHT = "MOUTH_RIGHT"
    LEFT_EAR = "LEFT_EAR"
    RIGHT_EAR = "RIGHT_EAR"


@dataclass(frozen=True)
class Box:
    x_min: float
    y_min: float
    x_max: float
    y_max: float

    @property
    def width(self) -> float:
        return self.x_max - self.x_min

    @property
    def height(self) -> float:
        return self.y_max - self.y_min

    def contains(self, x: float, y: float) -> bool:
        return self.x_min <= x <= self.x_max and self.y_min <= y <= self.y_max

    def clipped(self, width: int, height: int) -> Box:
        return Box(min(max(self.x_min, 0.0), width), min(max(self.y_min, 0.0), height),
                   min(max(self.x_max, 0.0), width), min(max(self.y_max, 0.0), height))

    def pixel_slices(self, width: int, height: int) -> tuple[slice, slice]:
        """Row and column slices of the box clipped to the image (possibly empty)."""
        c = self.clipped(width, height)
        return (slice(int(c.y_min), int(np.ceil(c.y_max))), slice(int(c.x_min), int(np.ceil(c.x_max))))


@dataclass(frozen=True)
class Pose:
    """Degrees; signs as in common.proto: yaw > 0 when the subject turns to the image's right (their
    left), pitch > 0 when they look up, roll > 0 when the head tilts clockwise in the image."""

    yaw: float
    pitch: float
    roll: float


@dataclass(frozen=True)
class Eye:
    """One eye in source pixels (from the iris model): lid contours corner to corner, iris centre,
    eye aspect ratio and the openness in [0, 1] mapped from it (mesh.py)."""

    upper_lid: tuple[tuple[float, float], ...]  # 7 points
    lower_lid: tuple[tuple[float, float], ...]  # 9 points, both corners included
    iris: tuple[float, float]
    aspect_ratio: float
    openness: float

    def mirrored(self, width: int) -> Eye:
        flip = lambda pts: tuple((width - x, y) for x, y in pts)  # noqa: E731
        return replace(self, upper_lid=flip(self.upper_lid), lower_lid=flip(self.lower_lid),
                       iris=(width - self.iris[0], self.iris[1]))


@dataclass(frozen=True)
class Face:
    box: Box
    score: float
    landmarks: dict[Landmark, tuple[float, float]]
    pose: Pose | None = None
    embedding: np.ndarray | None = None  # float32, L2-normalised
    embedding_model: str = ""
    left_eye: Eye | None = None  # the subject's; set when the face mesh and iris models ran
    right_eye: Eye | None = None
    # share of the face mesh's box outside the image (0 = all inside); None when the mesh did not run
    cut_off: float | None = None

    @property
    def measured_by_mesh(self) -> bool:
        """The face mesh measured this face (and found a face there): its pose and cut-off come from the mesh."""
        return self.cut_off is not None

    def with_(self, **changes) -> Face:
        return replace(self, **changes)


MIRRORED: dict[Landmark, Landmark] = {
    Landmark.LEFT_EYE: Landmark.RIGHT_EYE, Landmark.RIGHT_EYE: Landmark.LEFT_EYE,
    Landmark.MOUTH_LEFT: Landmark.MOUTH_RIGHT, Landmark.MOUTH_RIGHT: Landmark.MOUTH_LEFT,
    Landmark.LEFT_EAR: Landmark.RIGHT_EAR, Landmark.RIGHT_EAR: Landmark.LEFT_EAR,
}


def mirror_face(face: Face, width: int) -> Face:
    """The face as it appears in the horizontally flipped image (x -> width - x). The subject's
    left eye of the mirror image is the original's right eye, so sided landmarks swap names."""
    b = face.box
    box = Box(width - b.x_max, b.y_min, width - b.x_min, b.y_max)
    marks = {MIRRORED.get(k, k): (width - x, y) for k, (x, y) in face.landmarks.items()}
    left = face.right_eye.mirrored(width) if face.right_eye else None
    right = face.left_eye.mirrored(width) if face.left_eye else None
    return face.with_(box=box, landmarks=marks, left_eye=left, right_eye=right)


def outside_share(box: Box, width: int, height: int) -> float:
    """The share of a box's area that lies outside a width x height image, in [0, 1]."""
    area = box.width * box.height
    if area <= 0:
        return 0.0
    inside = box.clipped(width, height)
    return float(max(0.0, 1.0 - inside.width * inside.height / area))


def iou(a: Box, b: Box) -> float:
    w = max(0.0, min(a.x_max, b.x_max) - max(a.x_min, b.x_min))
    h = max(0.0, min(a.y_max, b.y_max) - max(a.y_min, b.y_min))
    inter = w * h
    union = a.width * a.height + b.width * b.height - inter
    return inter / union if union > 0 else 0.0


def l2_normalise(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=np.float32).ravel()
    n = float(np.linalg.norm(v))
    if not np.isfinite(n) or n == 0.0:
        raise ValueError("cannot L2-normalise a zero or non-finite vector")
    return v / n
