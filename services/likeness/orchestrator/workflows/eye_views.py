"""Pixels the open_eyes job measures and shows: what restoration changed, and the report's views of
the eye region (before and after side by side with the mask outline, and a seam map)."""

from __future__ import annotations

import numpy as np
from PIL import Image

# Restoration may change the face and its paste-back feather; "outside the face" is the box
# grown by this share of its shorter side (the restorer's feather is 4% of it, 3 sigma = 12%).
FACE_FEATHER_SHARE = 0.15
VIEW_SIDE = 256  # px of each panel in the report


def grown_box(box, width: int, height: int, share: float = FACE_FEATHER_SHARE) -> tuple[int, int, int, int]:
    x0, y0, x1, y1 = box
    by = share * min(x1 - x0, y1 - y0)
    return (max(int(x0 - by), 0), max(int(y0 - by), 0), min(int(np.ceil(x1 + by)), width),
            min(int(np.ceil(y1 + by)), height))


def changes(before: np.ndarray, after: np.ndarray, face_box) -> dict:
    """Pixels the restoration changed, and how many of them lie outside the face (should be 0)."""
    changed = (before != after).any(axis=2)
    x0, y0, x1, y1 = grown_box(face_box, before.shape[1], before.shape[0])
    inside = np.zeros_like(changed)
    inside[y0:y1, x0:x1] = True
    return {"changed_pixels": int(changed.sum()), "changed_outside_face": int((changed & ~inside).sum())}


def _panel(rgb: np.ndarray, box) -> np.ndarray:
    x0, y0, x1, y1 = box
    crop = Image.fromarray(np.ascontiguousarray(rgb[y0:y1, x0:x1]))
    scale = VIEW_SIDE / max(x1 - x0, y1 - y0)
    size = (max(int((x1 - x0) * scale), 1), max(int((y1 - y0) * scale), 1))
    return np.asarray(crop.resize(size, Image.Resampling.NEAREST if scale > 1 else Image.Resampling.LANCZOS))


def outline(mask: np.ndarray) -> np.ndarray:
    """The mask's edge pixels (inside pixels with an outside 4-neighbour)."""
    inside = mask > 0
    edge = np.zeros_like(inside)
    edge[1:, :] |= inside[1:, :] & ~inside[:-1, :]
    edge[:-1, :] |= inside[:-1, :] & ~inside[1:, :]
    edge[:, 1:] |= inside[:, 1:] & ~inside[:, :-1]
    edge[:, :-1] |= inside[:, :-1] & ~inside[:, 1:]
    return edge


def _around(box, width: int, height: int) -> tuple[tuple[slice, slice], tuple[int, int, int, int]]:
    """The slices of `box` grown by 1 px (what a neighbour step at its edge reads), and `box` in
    that crop's frame: the views touch only the eye region, not the whole frame."""
    x0, y0, x1, y1 = box
    cx0, cy0, cx1, cy1 = max(x0 - 1, 0), max(y0 - 1, 0), min(x1 + 1, width), min(y1 + 1, height)
    return (slice(cy0, cy1), slice(cx0, cx1)), (x0 - cx0, y0 - cy0, x1 - cx0, y1 - cy0)


def before_after(before: np.ndarray, after: np.ndarray, mask: np.ndarray, box) -> np.ndarray:
    """Eye region before (mask outline in red) | after, side by side."""
    crop, inner = _around(box, before.shape[1], before.shape[0])
    marked = before[crop].copy()
    marked[outline(mask[crop])] = (255, 0, 0)
    left, right = _panel(marked, inner), _panel(after[crop], inner)
    gap = np.full((left.shape[0], 4, 3), 255, np.uint8)
    return np.concatenate([left, gap, right], axis=1)


def seam_map(result: np.ndarray, mask: np.ndarray, box) -> np.ndarray:
    """Steps between neighbouring pixels of the result (bright = a sharp edge), mask outline in red:
    a seam shows as a bright line along the outline."""
    crop, inner = _around(box, result.shape[1], result.shape[0])
    a = result[crop].astype(np.int16)
    step = np.zeros(a.shape[:2], np.int16)
    step[:, 1:] = np.abs(np.diff(a, axis=1)).max(axis=2)
    step[1:, :] = np.maximum(step[1:, :], np.abs(np.diff(a, axis=0)).max(axis=2))
    grey = np.clip(step * 2, 0, 255).astype(np.uint8)
    view = np.stack([grey] * 3, axis=2)
    view[outline(mask[crop])] = (255, 0, 0)
    return _panel(view, inner)


def eye_box(mask: np.ndarray, width: int, height: int) -> tuple[int, int, int, int]:
    """The mask's bounding box with a margin of half its height: the region the report shows."""
    ys, xs = np.nonzero(mask)
    margin = max(int((ys.max() - ys.min()) * 0.5), 8)
    return (max(int(xs.min()) - margin, 0), max(int(ys.min()) - margin, 0), min(int(xs.max()) + margin + 1, width),
            min(int(ys.max()) + margin + 1, height))
