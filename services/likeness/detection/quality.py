"""Image quality measures and the combined quality score.

Measures (luminance Y = 0.299 R + 0.587 G + 0.114 B on the 0-255 scale, OpenCV's RGB2GRAY):
- sharpness_face: variance of the 3x3 Laplacian ([0 1 0; 1 -4 1; 0 1 0]) of Y on the best face
  NORMALISED TO `FACE_SIDE` x `FACE_SIDE` px: the square around the box centre whose side is the
  box's longer side (edge-replicated beyond the image), resized (area averaging down, bicubic up).
  Measured in the face's own pixels, a Laplacian variance falls with the face's size for the same
  blur (a Gaussian of sigma 2 ruins a 90 px face and barely touches a 234 px one), so no single
  threshold separated sharp from blurred; on the fixed-size face it does (the blur gate,
  validation.py). 0 when there is no face;
- sharpness_image: the same Laplacian variance over the whole image, at its own size;
- contrast: standard deviation of Y; brightness: mean of Y;
- shadows_clipped / highlights_clipped: share of pixels with Y <= 5 / Y >= 250;
- face_confidence: the best face's detector confidence, 0 when none.

Combined score in [0, 1], a weighted mean of four components, each in [0, 1] and increasing in
what it measures (so blurring or flattening a photo lowers it):
    sharp    = L(s) / (L(s) + L(S)), L = log(1 + .), s = sharpness_face (sharpness_image when
               there is no face). On a log scale because blur divides the Laplacian variance by a
               power of sigma: equal steps of blur give comparable steps of score at every level,
               so a strongly blurred photo blurred further still scores lower even when the
               detector's confidence wobbles by a few hundredths.
    contrast = c / (c + C)   with c = contrast
    exposure = (1 - |brightness - 127.5| / 127.5) * (1 - min(1, shadows + highlights))
    score    = (w_s sharp + w_c contrast + w_e exposure + w_f face_confidence) / (w_s + w_c + w_e + w_f)
S (default 100) and C (default 48) are the half-saturation points: a component is 0.5 there. They
and the weights (defaults 0.6, 0.2, 0.1, 0.1) are settings; requests may override the weights.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace

import cv2
import numpy as np

from likeness.core.errors import InvalidArgument, check_range
from likeness.detection.faces import Box

SHADOW_LEVEL = 5
HIGHLIGHT_LEVEL = 250
FACE_SIDE = 128


@dataclass(frozen=True)
class QualityWeights:
    # sharpness leads: blur is the commonest defect of generated and scaled images; confidence is
    # also a validation gate (min_confidence), so it only breaks ties here
    sharpness: float = 0.6
    contrast: float = 0.2
    exposure: float = 0.1
    face_confidence: float = 0.1

    def checked(self, field: str = "weights") -> QualityWeights:
        for f in fields(self):
            check_range(getattr(self, f.name), f"{field}.{f.name}", 0.0, 1.0)
        if self.total() <= 0:
            raise InvalidArgument(field, "weights sum to 0; at least one must be positive")
        return self

    def total(self) -> float:
        return self.sharpness + self.contrast + self.exposure + self.face_confidence

    def overridden(self, **values: float | None) -> QualityWeights:
        return replace(self, **{k: v for k, v in values.items() if v is not None})


@dataclass(frozen=True)
class QualityScales:
    sharpness_half: float = 100.0  # Laplacian variance at which the sharpness component is 0.5
    contrast_half: float = 48.0  # luminance std at which the contrast component is 0.5


@dataclass(frozen=True)
class QualityMeasures:
    sharpness_face: float
    sharpness_image: float
    contrast: float
    brightness: float
    shadows_clipped: float
    highlights_clipped: float
    face_confidence: float
    has_face: bool


def luminance(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)


def laplacian_variance(grey: np.ndarray) -> float:
    if grey.shape[0] < 3 or grey.shape[1] < 3:
        return 0.0
    lap = cv2.Laplacian(grey, cv2.CV_32F, ksize=1)
    _, std = cv2.meanStdDev(lap)
    return float(std[0, 0]) ** 2


def normalised_face(grey: np.ndarray, box: Box, side: int = FACE_SIDE) -> np.ndarray:
    """The face's square (side = the box's longer side, around its centre) resized to side x side."""
    height, width = grey.shape[:2]
    s = max(2, int(round(max(box.width, box.height))))
    x0 = int(round((box.x_min + box.x_max) / 2 - s / 2))
    y0 = int(round((box.y_min + box.y_max) / 2 - s / 2))
    pad = ((max(0, -y0), max(0, y0 + s - height)), (max(0, -x0), max(0, x0 + s - width)))
    window = grey[max(0, y0):min(height, y0 + s), max(0, x0):min(width, x0 + s)]
    if window.size == 0:
        return np.zeros((side, side), dtype=grey.dtype)
    if any(p for pair in pad for p in pair):
        window = np.pad(window, pad, mode="edge")
    return cv2.resize(window, (side, side), interpolation=cv2.INTER_AREA if s > side else cv2.INTER_CUBIC)


def measure(rgb: np.ndarray, face_box: Box | None, face_confidence: float) -> QualityMeasures:
    grey = luminance(rgb)
    height, width = grey.shape
    mean, std = cv2.meanStdDev(grey)
    # one 256-bin histogram gives both clipping shares
    hist = cv2.calcHist([grey], [0], None, [256], [0, 256]).ravel()
    total = float(grey.size)
    face_sharpness = 0.0
    if face_box is not None:
        face_sharpness = laplacian_variance(normalised_face(grey, face_box))
    return QualityMeasures(
        sharpness_face=face_sharpness,
        sharpness_image=laplacian_variance(grey),
        contrast=float(std[0, 0]),
        brightness=float(mean[0, 0]),
        shadows_clipped=float(hist[:SHADOW_LEVEL + 1].sum()) / total,
        highlights_clipped=float(hist[HIGHLIGHT_LEVEL:].sum()) / total,
        face_confidence=float(face_confidence) if face_box is not None else 0.0,
        has_face=face_box is not None,
    )


def components(m: QualityMeasures, scales: QualityScales = QualityScales()) -> dict[str, float]:
    s = math.log1p(m.sharpness_face if m.has_face else m.sharpness_image)
    return {
        "sharpness": s / (s + math.log1p(scales.sharpness_half)),
        "contrast": m.contrast / (m.contrast + scales.contrast_half),
        "exposure": (1.0 - abs(m.brightness - 127.5) / 127.5)
        * (1.0 - min(1.0, m.shadows_clipped + m.highlights_clipped)),
        "face_confidence": m.face_confidence,
    }


def combined_score(m: QualityMeasures, weights: QualityWeights = QualityWeights(),
                   scales: QualityScales = QualityScales()) -> float:
    c = components(m, scales)
    total = sum(getattr(weights, k) * v for k, v in c.items()) / weights.total()
    return float(min(1.0, max(0.0, total)))
