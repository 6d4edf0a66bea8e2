"""Restore one face inside its region and paste it back, as facexlib's paste-back does.

1. Frame: the classical restorer works on the face box grown by `CONTEXT` at native resolution.
   Network restorers (512x512 input) get the face warped onto the FFHQ template: a similarity
   transform fitted to the landmarks that are given (both eyes required; nose and mouth used when
   present), or, without landmarks, a square of `SQUARE_PER_BOX` x the box's longer side centred
   on the box. The output is warped back with the inverse transform.
2. Restore with the fidelity weight (restorers/base.py).
3. Paste back through `feathered_blend` with the face ellipse (masks.face_mask) as mask, feathered
   by `FEATHER_PER_FACE` x the box's shorter side: pixels outside the ellipse's feather support
   keep the input's exact bytes.
`fidelity == 1` returns the input unchanged without running a restorer that would only blend back to
the input there (classical, GFPGAN); CodeFormer still restores at 1, as upstream.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from likeness.core.errors import InvalidArgument, check_range, require
from likeness.restoration.compositing import feather_support, feathered_blend
from likeness.restoration.masks import FaceGeometry, MaskOptions, Rect, face_mask
from likeness.restoration.restorers.base import FaceRestorer

CONTEXT = 0.3  # crop margin around the face box, per side, as a fraction of the box side
FEATHER_PER_FACE = 0.04  # feather sigma as a fraction of the box's shorter side
SQUARE_PER_BOX = 1.7  # network input square per longer box side when no landmarks are given
MIN_FACE_PX = 16

# facexlib's FFHQ 512 template (image coordinates): the subject's right eye (image left), left eye,
# nose tip, the subject's right mouth corner (image left), left mouth corner.
FFHQ_512 = {
    "right_eye": (192.98138, 239.94708), "left_eye": (318.90277, 240.19360),
    "nose_tip": (256.63416, 314.01935), "mouth_right": (201.26117, 371.41043),
    "mouth_left": (313.08905, 371.15118), "mouth_center": (257.17511, 371.28080),
}


@dataclass(frozen=True)
class FaceToRestore:
    box: tuple[float, float, float, float] | None  # x_min, y_min, x_max, y_max, from Detect
    landmarks: dict[str, tuple[float, float]]  # keys of FFHQ_512


def _check_face(image: np.ndarray, face: FaceToRestore, field: str) -> tuple[float, float, float, float]:
    height, width = image.shape[:2]
    if face.box is None:
        raise InvalidArgument(f"{field}.face_box", "is required: run Detect first; an image in which "
                                                   "Detect finds no face has nothing to restore")
    x0, y0, x1, y1 = face.box
    require(all(math.isfinite(v) for v in face.box), f"{field}.face_box", "has a non-finite coordinate")
    cx0, cy0, cx1, cy1 = max(x0, 0.0), max(y0, 0.0), min(x1, float(width)), min(y1, float(height))
    require(cx1 - cx0 >= MIN_FACE_PX and cy1 - cy0 >= MIN_FACE_PX, f"{field}.face_box",
            f"({x0}, {y0}, {x1}, {y1}) inside the {width}x{height} image is under {MIN_FACE_PX} px a side")
    for kind, (x, y) in face.landmarks.items():
        if not (x0 <= x <= x1 and y0 <= y <= y1):
            raise InvalidArgument(f"{field}.landmarks[{kind.upper()}]",
                                  f"({x}, {y}) lies outside the face box ({x0}, {y0}, {x1}, {y1})")
    return cx0, cy0, cx1, cy1


def _grow(box: tuple[float, float, float, float], by: float, width: int, height: int) -> Rect:
    x0, y0, x1, y1 = box
    return Rect(max(math.floor(x0 - by), 0), max(math.floor(y0 - by), 0),
                min(math.ceil(x1 + by), width), min(math.ceil(y1 + by), height))


def template_transform(face: FaceToRestore, box, size: int) -> np.ndarray:
    """2x3 matrix mapping image pixels onto the `size` x `size` restorer input."""
    scale = size / 512.0
    known = [k for k in FFHQ_512 if k in face.landmarks]
    if "left_eye" in known and "right_eye" in known:
        src = np.array([face.landmarks[k] for k in known], np.float32)
        dst = np.array([FFHQ_512[k] for k in known], np.float32) * scale
        matrix, _ = cv2.estimateAffinePartial2D(src, dst, method=cv2.LMEDS)
        if matrix is not None:
            return matrix
    x0, y0, x1, y1 = box
    side = SQUARE_PER_BOX * max(x1 - x0, y1 - y0)
    s = size / side
    return np.array([[s, 0, size / 2 - s * (x0 + x1) / 2], [0, s, size / 2 - s * (y0 + y1) / 2]], np.float32)


def _restore_crop(crop: np.ndarray, crop_rect: Rect, face: FaceToRestore, box, restorer: FaceRestorer,
                  fidelity: float) -> np.ndarray:
    if restorer.input_size is None:
        return restorer.restore(crop, fidelity)
    size = restorer.input_size
    matrix = template_transform(face, box, size)
    matrix[:, 2] += matrix[:, :2] @ np.array([crop_rect.x0, crop_rect.y0], np.float32)  # crop frame
    aligned = cv2.warpAffine(crop, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    restored = restorer.restore(aligned, fidelity)
    h, w = crop.shape[:2]
    back = cv2.warpAffine(restored, matrix, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_CONSTANT)
    covered = cv2.warpAffine(np.full((size, size), 255, np.uint8), matrix, (w, h),
                             flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP, borderValue=0)
    back[covered == 0] = crop[covered == 0]  # outside the network's square: the input
    return back


def restore_face(image: np.ndarray, face: FaceToRestore, restorer: FaceRestorer, fidelity: float,
                 field: str = "items[0]") -> np.ndarray:
    """A new image with the face restored and pasted back; the input when fidelity is 1 and the
    restorer blends pixels."""
    check_range(fidelity, "fidelity", 0.0, 1.0)
    box = _check_face(image, face, field)
    if fidelity >= 1.0 and restorer.keeps_input_at_full_fidelity:
        return image.copy()
    height, width = image.shape[:2]
    bw, bh = box[2] - box[0], box[3] - box[1]
    sigma = max(1.0, FEATHER_PER_FACE * min(bw, bh))
    support = feather_support(sigma, 0.0)
    crop_rect = _grow(box, max(CONTEXT * max(bw, bh), support + 2), width, height)
    crop = image[crop_rect.slices]
    restored = _restore_crop(crop, crop_rect, face, box, restorer, fidelity)
    geo = FaceGeometry(width, height, face.landmarks.get("left_eye"), face.landmarks.get("right_eye"), box)
    mask = face_mask(geo, MaskOptions(), field)
    return feathered_blend(image, restored, mask, crop_rect, feather_sigma=sigma, dilation_px=0.0, field=field)
