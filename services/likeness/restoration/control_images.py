"""Control images for ControlNet, rendered offline from a photo and its faces (from Detect).

- `face_landmark_map`: on black, per face, the style of the public MediaPipe-face ControlNets:
  the face oval (white), each eye (green) and eyebrow line above it (yellow), the nose bridge
  (blue) and the mouth (red). Shapes are drawn from the landmarks Detect returns: eye centres,
  nose tip, mouth centre or corners; contour kinds that a face mesh adds (eyelids, irises) are
  drawn as polylines or dots in the eye colour. Line widths scale with the inter-ocular distance,
  so a face looks the same at any size.
- `canny_map`: OpenCV's Canny edges of the grey image, white on black.

Both return HxWx3 uint8 images the size of the photo, which is what a ControlNet request takes.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from likeness.core.errors import InvalidArgument, check_range

WHITE, GREEN, YELLOW, BLUE, RED = (255, 255, 255), (0, 255, 0), (255, 255, 0), (0, 128, 255), (255, 0, 0)


def _pt(p) -> tuple[int, int]:
    return int(round(p[0])), int(round(p[1]))


def _draw_face(canvas: np.ndarray, box, landmarks: dict, field: str) -> None:
    x0, y0, x1, y1 = box
    if not (x1 > x0 and y1 > y0):
        raise InvalidArgument(f"{field}.box", f"({x0}, {y0}, {x1}, {y1}) is empty")
    left, right = landmarks.get("left_eye"), landmarks.get("right_eye")
    iod = math.dist(left, right) if left and right else 0.4 * (x1 - x0)
    width = max(1, int(round(iod / 20)))
    cv2.ellipse(canvas, _pt(((x0 + x1) / 2, (y0 + y1) / 2)), (int((x1 - x0) / 2), int((y1 - y0) / 2)), 0, 0, 360,
                WHITE, width)
    for eye in (left, right):
        if eye:
            cv2.ellipse(canvas, _pt(eye), (max(int(iod * 0.22), 1), max(int(iod * 0.1), 1)), 0, 0, 360, GREEN, width)
            brow_y = eye[1] - iod * 0.3
            cv2.line(canvas, _pt((eye[0] - iod * 0.25, brow_y)), _pt((eye[0] + iod * 0.25, brow_y)), YELLOW, width)
    nose = landmarks.get("nose_tip")
    if nose and left and right:
        cv2.line(canvas, _pt(((left[0] + right[0]) / 2, (left[1] + right[1]) / 2)), _pt(nose), BLUE, width)
    corners = [landmarks.get("mouth_left"), landmarks.get("mouth_right")]
    if all(corners):
        cv2.line(canvas, _pt(corners[0]), _pt(corners[1]), RED, width * 2)
    elif landmarks.get("mouth_center"):
        cv2.ellipse(canvas, _pt(landmarks["mouth_center"]), (max(int(iod * 0.35), 1), max(int(iod * 0.08), 1)),
                    0, 0, 360, RED, width)
    for points in landmarks.values():
        if isinstance(points, list) and len(points) > 1:  # contours from a face mesh (eyelids ...)
            cv2.polylines(canvas, [np.array([_pt(p) for p in points], np.int32)], True, GREEN, width)


def scale_faces(faces: list[tuple[tuple, dict]], sx: float, sy: float) -> list[tuple[tuple, dict]]:
    """The faces' boxes and landmarks in an image resized by (sx, sy)."""
    def point(p):
        return (p[0] * sx, p[1] * sy)

    return [((box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy),
             {k: [point(q) for q in v] if isinstance(v, list) else point(v) for k, v in landmarks.items()})
            for box, landmarks in faces]


def face_landmark_map(width: int, height: int, faces: list[tuple[tuple, dict]], field: str = "items[0]") -> np.ndarray:
    """`faces`: (box (x0, y0, x1, y1), landmarks {kind: (x, y) or [(x, y), ...]}) per face."""
    if not faces:
        raise InvalidArgument(f"{field}.faces", "is empty: a face-landmark map needs at least one face (from Detect)")
    canvas = np.zeros((height, width, 3), np.uint8)
    for i, (box, landmarks) in enumerate(faces):
        _draw_face(canvas, box, landmarks, f"{field}.faces[{i}]")
    return canvas


def canny_map(rgb: np.ndarray, low: float, high: float) -> np.ndarray:
    check_range(low, "canny_low", 0.0, 1000.0)
    check_range(high, "canny_high", 0.0, 1000.0)
    if high < low:
        raise InvalidArgument("canny_high", f"{high} is below canny_low {low}")
    edges = cv2.Canny(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), low, high)
    return np.repeat(edges[..., None], 3, axis=2)
