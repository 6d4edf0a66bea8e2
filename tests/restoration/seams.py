"""The seam criterion of issue 10, measured on real photos.

Band: the pixels a paste-back can change, from 3 px inside the mask edge to the default feather
support (dilation 4 + 3 x sigma 6 = 22 px) outside it. Gradient: Sobel / 8 of the channel mean, in
grey levels per pixel. Two statistics over the band:
- `excess_p99`: 99th percentile of |grad result| - |grad base|, pixel by pixel: what the paste-back
  added on top of the photo's own edges (a hard paste of a +40 colour drift adds ~20);
- `ratio_p95`: p95 of |grad result| over p95 of |grad base|: the boundary is no sharper than the
  photo's own texture there.
"""

from __future__ import annotations

import cv2
import numpy as np

BAND_OUTSIDE_PX = 22.0
BAND_INSIDE_PX = 3.0


def gradient(rgb: np.ndarray) -> np.ndarray:
    grey = rgb.astype(np.float32).mean(axis=2)
    gx = cv2.Sobel(grey, cv2.CV_32F, 1, 0, ksize=3) / 8
    gy = cv2.Sobel(grey, cv2.CV_32F, 0, 1, ksize=3) / 8
    return np.hypot(gx, gy)


def boundary_band(mask: np.ndarray) -> np.ndarray:
    inside = (mask > 0).astype(np.uint8)
    outside = cv2.distanceTransform(1 - inside, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    depth = cv2.distanceTransform(inside, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    return ((outside > 0) & (outside <= BAND_OUTSIDE_PX)) | ((depth > 0) & (depth <= BAND_INSIDE_PX))


def seam_stats(base: np.ndarray, result: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    band = boundary_band(mask)
    gb, gr = gradient(base)[band], gradient(result)[band]
    return {"excess_p99": float(np.percentile(gr - gb, 99)),
            "ratio_p95": float(np.percentile(gr, 95) / max(np.percentile(gb, 95), 1e-6))}
