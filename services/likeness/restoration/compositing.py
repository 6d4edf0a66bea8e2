"""Feathered paste-back of a patch into a base image, touching only the region around the mask.

The blend weight is `alpha = G_sigma * [dist(p, mask) <= dilation]`: the binary mask is dilated by
`dilation_px`, then blurred by a Gaussian of `feather_sigma` whose kernel is cut at 3 sigma.
Every pixel farther than `dilation_px + 3 * feather_sigma` (Euclidean) from the mask gets alpha
exactly 0, and `out = round(base + alpha * (patch - base))` leaves such pixels byte-identical to
the base. With `feather_sigma = 0` the dilated mask is pasted hard.

Distances come from OpenCV's 5x5 chamfer transform (half the cost of the exact one on a face-sized
region). Its weights (1, 1.4, 2.1969) make it at most 1.75 % shorter than the Euclidean distance,
so alpha is zeroed where the chamfer distance exceeds 0.98 x the support: every pixel beyond the
Euclidean support is covered (the few zeroed just inside it had alpha under 0.002, which rounds
to no change anyway).

Why no seam: a step of height D between patch and base, spread by the Gaussian, has a slope of at
most D / (sigma * sqrt(2 pi)), about D / 15 per pixel at the default sigma 6, instead of D at a
hard edge; tests/restoration/test_compositing.py checks the boundary gradients against the base
photo's own.

Only the mask's bounding box grown by the feather support is read, blended and written; the cost
outside it is one copy of the base (the floor the benchmark shows).
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from likeness.core.errors import InvalidArgument, check_range
from likeness.restoration.masks import Rect, mask_bbox

DEFAULT_FEATHER_SIGMA = 6.0
DEFAULT_DILATION_PX = 4.0
CHAMFER_SAFETY = 0.98  # 1 - the 5x5 chamfer metric's largest shortfall (1.75 %), rounded down


def feather_support(feather_sigma: float, dilation_px: float) -> float:
    """How far (px, Euclidean) outside the mask the blend can reach."""
    return dilation_px + 3.0 * feather_sigma


def feathered_alpha(mask: np.ndarray, feather_sigma: float, dilation_px: float) -> np.ndarray:
    """Blend weights in [0, 1] (float32, same shape) for a binary mask (non-zero = inside).

    The mask must extend at least `feather_support` beyond its content (or be cut by the image
    edge, which is treated as continuing the mask outward, as a caller's crop would)."""
    outside = (mask == 0).view(np.uint8)
    # Distance of every outside pixel to the nearest inside pixel (chamfer 5x5, see module doc).
    dist = cv2.distanceTransform(outside, cv2.DIST_L2, cv2.DIST_MASK_5)
    hard = (dist <= dilation_px).astype(np.float32)
    if feather_sigma <= 0:
        return hard
    radius = math.ceil(3.0 * feather_sigma)
    alpha = cv2.GaussianBlur(hard, (2 * radius + 1, 2 * radius + 1), feather_sigma,
                             borderType=cv2.BORDER_REPLICATE)
    alpha[dist > CHAMFER_SAFETY * feather_support(feather_sigma, dilation_px)] = 0.0
    return alpha


def _grow(rect: Rect, by: int, width: int, height: int) -> Rect:
    return Rect(max(rect.x0 - by, 0), max(rect.y0 - by, 0), min(rect.x1 + by, width), min(rect.y1 + by, height))


def _patch_rect(base: np.ndarray, patch: np.ndarray, patch_box: Rect | None, field: str) -> Rect:
    height, width = base.shape[:2]
    if patch_box is None:
        if patch.shape[:2] != (height, width):
            raise InvalidArgument(f"{field}.patch", f"is {patch.shape[1]}x{patch.shape[0]} but the base is "
                                                    f"{width}x{height}; give patch_box for a crop")
        return Rect(0, 0, width, height)
    box = patch_box
    if not (0 <= box.x0 < box.x1 <= width and 0 <= box.y0 < box.y1 <= height):
        raise InvalidArgument(f"{field}.patch_box", f"({box.x0}, {box.y0}, {box.x1}, {box.y1}) is empty or "
                                                    f"not inside the {width}x{height} base")
    if patch.shape[:2] != (box.height, box.width):
        raise InvalidArgument(f"{field}.patch", f"is {patch.shape[1]}x{patch.shape[0]} but patch_box is "
                                                f"{box.width}x{box.height}")
    return box


def feathered_blend(base: np.ndarray, patch: np.ndarray, mask: np.ndarray, patch_box: Rect | None = None,
                    feather_sigma: float = DEFAULT_FEATHER_SIGMA, dilation_px: float = DEFAULT_DILATION_PX,
                    field: str = "items[0]") -> np.ndarray:
    """A new image: `base` with `patch` shown through the feathered `mask`.

    base: HxWx3 uint8; mask: HxW (non-zero where the patch should show); patch: HxWx3, or the
    size of `patch_box` (a crop of the base's frame, e.g. RegionMask's crop box)."""
    check_range(feather_sigma, "feather_sigma", 0.0, 128.0, unit="px")
    check_range(dilation_px, "dilation_px", 0.0, 256.0, unit="px")
    height, width = base.shape[:2]
    if mask.ndim == 3:
        mask = mask[..., 0]
    if mask.shape != (height, width):
        raise InvalidArgument(f"{field}.mask", f"is {mask.shape[1]}x{mask.shape[0]} but the base is "
                                               f"{width}x{height}; the mask must match the base")
    box = _patch_rect(base, patch, patch_box, field)
    bbox = mask_bbox(mask)
    if bbox is None:
        raise InvalidArgument(f"{field}.mask", "is empty: no non-zero pixel")

    support = feather_support(feather_sigma, dilation_px)
    # One pixel beyond the support (so the Gaussian sees flat zeros at the ROI's inner edges) plus the
    # kernel radius, so the blur near the ROI border is never affected by where the ROI was cut.
    roi = _grow(bbox, math.ceil(support) + math.ceil(3 * feather_sigma) + 1, width, height)
    alpha = feathered_alpha(mask[roi.slices], feather_sigma, dilation_px)
    touched = mask_bbox((alpha > 0).view(np.uint8))  # the blend's exact footprint inside the ROI
    area = Rect(roi.x0 + touched.x0, roi.y0 + touched.y0, roi.x0 + touched.x1, roi.y0 + touched.y1)
    if not (box.x0 <= area.x0 and box.y0 <= area.y0 and area.x1 <= box.x1 and area.y1 <= box.y1):
        raise InvalidArgument(
            f"{field}.patch_box",
            f"({box.x0}, {box.y0}, {box.x1}, {box.y1}) does not cover the feathered mask ({area.x0}, "
            f"{area.y0}, {area.x1}, {area.y1}); the patch must extend dilation_px + 3 * feather_sigma = "
            f"{support:g} px beyond the mask (RegionMask's crop_padding)")

    a = alpha[touched.y0:touched.y1, touched.x0:touched.x1, None]
    b = base[area.slices].astype(np.float32)
    p = patch[area.y0 - box.y0:area.y1 - box.y0, area.x0 - box.x0:area.x1 - box.x0].astype(np.float32)
    out = base.copy()
    out[area.slices] = np.rint(b + a * (p - b)).astype(np.uint8)
    return out
