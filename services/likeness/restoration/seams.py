"""How visible the edge of a pasted patch is, measured on pixels.

A seam shows as steps between neighbouring pixels on the two sides of the mask's edge. For every
pair of 4-neighbours with one pixel inside the (binary) mask and one outside, the step is the
largest absolute difference over the three channels. Reported:

- `boundary_gradient`: the mean step across the edge in the result;
- `hard_gradient`: the same for a hard paste of the same patch through the same mask (what the
  result would show without feathering), so `boundary_gradient / hard_gradient` says how much of
  the seam the blend removed;
- `max_step`: the largest step across the edge in the result;
- `reference_step`: the largest step between neighbours within `BAND_PX` of the edge in the two
  images that are blended (the base and the patch). A seam is invisible when `max_step` is no
  larger: the step is one the images already have there, not a new edge made by the paste.

Only the mask's bounding box grown by the band is read, so the cost is that of the face region.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from likeness.restoration.masks import Rect, mask_bbox

BAND_PX = 8


@dataclass(frozen=True)
class Seam:
    boundary_gradient: float
    hard_gradient: float
    max_step: float
    reference_step: float

    @property
    def invisible(self) -> bool:
        return self.max_step <= self.reference_step

    def to_dict(self) -> dict:
        return {"boundary_gradient": round(self.boundary_gradient, 3), "hard_gradient": round(self.hard_gradient, 3),
                "max_step": round(self.max_step, 3), "reference_step": round(self.reference_step, 3),
                "invisible": self.invisible}


def _steps(img: np.ndarray, axis: int) -> np.ndarray:
    """|img[p + 1] - img[p]| along `axis`, max over channels (float32)."""
    a = img.astype(np.int16)
    d = np.abs(np.diff(a, axis=axis)).max(axis=2)
    return d.astype(np.float32)


def _crossing(inside: np.ndarray, axis: int) -> np.ndarray:
    """Neighbour pairs along `axis` with one pixel inside and one outside."""
    return np.diff(inside.astype(np.int8), axis=axis) != 0


def _near(inside: np.ndarray, band: int) -> np.ndarray:
    """Pixels within `band` (Chebyshev) of the mask's edge, on either side."""
    import cv2

    kernel = np.ones((2 * band + 1, 2 * band + 1), np.uint8)
    grown = cv2.dilate(inside.view(np.uint8), kernel)
    shrunk = cv2.erode(inside.view(np.uint8), kernel)
    return grown != shrunk


def seam_measure(base: np.ndarray, patch: np.ndarray, result: np.ndarray, mask: np.ndarray) -> Seam:
    """`patch` is full size (the base's frame); `mask` HxW, non-zero = the patch's region."""
    box = mask_bbox(mask.astype(np.uint8))
    if box is None:
        return Seam(0.0, 0.0, 0.0, 0.0)
    h, w = mask.shape
    roi = Rect(max(box.x0 - BAND_PX - 1, 0), max(box.y0 - BAND_PX - 1, 0),
               min(box.x1 + BAND_PX + 1, w), min(box.y1 + BAND_PX + 1, h))
    inside = np.ascontiguousarray(mask[roi.slices] != 0)
    b, p, r = (np.ascontiguousarray(x[roi.slices]) for x in (base, patch, result))
    hard = np.where(inside[..., None], p, b)
    near = _near(inside, BAND_PX)
    ours, theirs, reference = [], [], []
    for axis in (0, 1):
        cross = _crossing(inside, axis)
        ours.append(_steps(r, axis)[cross])
        theirs.append(_steps(hard, axis)[cross])
        both_near = _pair_mask(near, axis)
        reference.append(np.maximum(_steps(b, axis), _steps(p, axis))[both_near])
    ours_all, theirs_all, ref_all = (np.concatenate(x) for x in (ours, theirs, reference))
    return Seam(float(ours_all.mean()) if ours_all.size else 0.0,
                float(theirs_all.mean()) if theirs_all.size else 0.0,
                float(ours_all.max()) if ours_all.size else 0.0,
                float(ref_all.max()) if ref_all.size else 0.0)


def _pair_mask(near: np.ndarray, axis: int) -> np.ndarray:
    """Neighbour pairs along `axis` whose both pixels are in `near`."""
    if axis == 0:
        return near[:-1, :] & near[1:, :]
    return near[:, :-1] & near[:, 1:]
