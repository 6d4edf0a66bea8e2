"""The open_eyes job's work crop: one rectangle per face, cut once from the frame, on which every
service call for that face works (eye mask, inpaint, composite, restore, verifying Detect), so no
full frame is encoded or decoded per variation.

The crop must hold everything that reads or changes pixels for the face:
- the denoised region (the eye mask's crop box grown by the inpaint context), which also holds the
  composite's feather;
- the restorer's own crop (the face box grown by 0.3 x its longer side) and so its feathered paste;
- context for the verifying Detect to find the face again (the face box grown by `FACE_MARGIN`
  of its longer side per side). Measured with the local stack's detection (BlazeFace, face mesh,
  dlib identity) on the astronaut (512 and 1024 px), Tom Hanks and the six faces of the group
  photo: at margins 0.25 to 0.5 every face was found again on its crop (box IoU 0.69-1.00 with
  the frame's, the spread of the detector's own boxes), eye openness within 0.1 of the frame's
  where the frame measured it (the frame measures only its first faces; on one group face one eye
  read 0.48 at margin 0.5 and 0.98-1.00 at the others), identity similarity to the frame's
  embedding >= 0.99. 0.35 keeps
  a margin beyond the restorer's 0.3 and has 28% fewer pixels than 0.5.
Everything outside the crop keeps the frame's bytes, so the repaired crop goes back with a plain
rectangle copy (`place_back`), after checking that the crop's inner border is unchanged: a change
there would mean the rectangle's edge is a seam.
"""

from __future__ import annotations

import math

import numpy as np

from likeness.api.v1 import common_pb2

FACE_MARGIN = 0.35  # per side, share of the face box's longer side
EYE_REACH_IOD, EYE_REACH_PX = 1.2, 56  # how far the denoised region usually reaches beyond the eyes


class CropEdgeChanged(RuntimeError):
    """A repaired crop changed a pixel on an edge that is not the frame's: its paste would show."""


def face_crop(box: common_pb2.Box, width: int, height: int, margin: float = FACE_MARGIN) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1): the face box grown by `margin` x its longer side per side, on whole pixels,
    clamped to the frame."""
    by = margin * max(box.x_max - box.x_min, box.y_max - box.y_min)
    return (max(math.floor(box.x_min - by), 0), max(math.floor(box.y_min - by), 0),
            min(math.ceil(box.x_max + by), width), min(math.ceil(box.y_max + by), height))


def first_guess(face: common_pb2.Face, width: int, height: int) -> tuple[int, int, int, int]:
    """The face's crop, grown to where the denoised region usually reaches: the eyes' box plus
    EYE_REACH_IOD inter-ocular distances and EYE_REACH_PX (the mask's padding and eye size, its
    32 px crop padding and the 25% inpaint context). Only a first guess that saves a second
    RegionMask call: the job grows the crop again if the mask says so."""
    crop = face_crop(face.box, width, height)
    eyes = [(lm.point.x, lm.point.y) for lm in face.landmarks
            if lm.kind in (common_pb2.LANDMARK_KIND_LEFT_EYE, common_pb2.LANDMARK_KIND_RIGHT_EYE)]
    if len(eyes) != 2:
        return crop
    (lx, ly), (rx, ry) = eyes
    by = EYE_REACH_IOD * math.hypot(lx - rx, ly - ry) + EYE_REACH_PX
    reach = (max(math.floor(min(lx, rx) - by), 0), max(math.floor(min(ly, ry) - by), 0),
             min(math.ceil(max(lx, rx) + by), width), min(math.ceil(max(ly, ry) + by), height))
    return union(crop, reach)


def union(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    return min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3])


def covers(outer: tuple[int, int, int, int], inner: tuple[int, int, int, int]) -> bool:
    return outer[0] <= inner[0] and outer[1] <= inner[1] and inner[2] <= outer[2] and inner[3] <= outer[3]


def shifted_box(box: common_pb2.Box, dx: float, dy: float) -> common_pb2.Box:
    return common_pb2.Box(x_min=box.x_min + dx, y_min=box.y_min + dy, x_max=box.x_max + dx, y_max=box.y_max + dy)


def in_crop(face: common_pb2.Face, crop: tuple[int, int, int, int]) -> common_pb2.Face:
    """A copy of `face` with its box and landmarks in the crop's coordinates."""
    out = common_pb2.Face()
    out.CopyFrom(face)
    out.box.CopyFrom(shifted_box(face.box, -crop[0], -crop[1]))
    for lm in out.landmarks:
        lm.point.x -= crop[0]
        lm.point.y -= crop[1]
    return out


def inner_edges(crop: tuple[int, int, int, int], width: int, height: int) -> list[tuple[slice, slice]]:
    """The crop's one-pixel edges that lie inside the frame (an edge on the frame's border has no
    neighbour outside the crop, so a change there cannot make a seam), as slices of the crop."""
    x0, y0, x1, y1 = crop
    w, h = x1 - x0, y1 - y0
    edges = [(x0 > 0, (slice(0, h), slice(0, 1))), (x1 < width, (slice(0, h), slice(w - 1, w))),
             (y0 > 0, (slice(0, 1), slice(0, w))), (y1 < height, (slice(h - 1, h), slice(0, w)))]
    return [s for inside, s in edges if inside]


def place_back(frame: np.ndarray, crop: tuple[int, int, int, int], repaired: np.ndarray) -> None:
    """Copies the repaired crop into `frame` (in place). Raises CropEdgeChanged when a pixel on an
    inner edge differs from the frame's: every change must lie strictly inside the crop."""
    x0, y0, x1, y1 = crop
    before = frame[y0:y1, x0:x1]
    if repaired.shape != before.shape:
        raise CropEdgeChanged(f"repaired crop is {repaired.shape}, the frame's crop {before.shape}")
    for edge in inner_edges(crop, frame.shape[1], frame.shape[0]):
        if not np.array_equal(repaired[edge], before[edge]):
            raise CropEdgeChanged(f"the repair changed the edge of its work crop {crop}: it would paste a seam")
    before[...] = repaired
