"""Region masks from facial landmarks, and the aligned crop box around them.

Geometry (all in pixels of the source image; IOD = inter-ocular distance, eye centre to eye centre):
- eye region: an ellipse centred on the eye, rotated with the eye line (head roll), semi-axes
  `0.30 * IOD + pad` along the eye line and `0.18 * IOD + pad` across it. An adult eye opening is
  about 0.5 IOD wide and the lids about 0.3 IOD tall, so the bare ellipse covers lids, lashes and
  the eye corners; `pad = padding_iod * IOD + padding_px`.
  With eyelid contours (Detect's LANDMARK_KIND_*_UPPER_LID / *_LOWER_LID, from the iris model) an
  eye's region is built from them instead: the lid polygon grown by `LID_MARGIN_IOD * IOD + pad`
  (lashes and lid creases), united with an ellipse along the corner line whose semi-axes are half
  the corner distance + that margin and `0.18 * IOD + pad`: a closed eye's thin contour still
  leaves room for an open eye to be painted, and the mask follows the real eye's corners and
  tilt rather than a generic ellipse around the iris.
- face region: the ellipse inscribed in the face box, grown by `pad`, rotated with the eye line
  when eyes are given. Without eyes, IOD (for `padding_iod`) is estimated as 0.4 x the box width,
  the ratio of a frontal face.
- crop box: the mask's bounding box grown by `crop_padding`, with width and height rounded up to
  multiples of `align` (diffusion models need sides divisible by 8) and its origin snapped down to
  `align`, then moved (never shrunk) to lie inside the image. Only when the image side itself is
  shorter than the aligned size is the side cut to the largest multiple of `align` that fits (or to
  the image side when that is under `align`).

A pixel is inside when its centre (i + 0.5, j + 0.5) is; the whole mask costs one zeroed allocation
plus an evaluation over the ellipse's own bounding box.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

import cv2
import numpy as np

from likeness.core.errors import InvalidArgument, check_range, require

MAX_SIDE = 16384
EYE_HALF_LENGTH_IOD = 0.30  # semi-axis along the eye line, in IOD
EYE_HALF_HEIGHT_IOD = 0.18  # semi-axis across it
IOD_PER_FACE_WIDTH = 0.40  # IOD estimate when only a face box is known
LID_MARGIN_IOD = 0.08  # growth of a lid polygon, in IOD


class Region(StrEnum):
    LEFT_EYE = "left_eye"  # the subject's left eye (the image's right for a frontal face)
    RIGHT_EYE = "right_eye"
    BOTH_EYES = "both_eyes"
    FACE = "face"


@dataclass(frozen=True)
class Rect:
    """Integer pixel rectangle, `x1`/`y1` exclusive."""

    x0: int
    y0: int
    x1: int
    y1: int

    @property
    def width(self) -> int:
        return self.x1 - self.x0

    @property
    def height(self) -> int:
        return self.y1 - self.y0

    @property
    def slices(self) -> tuple[slice, slice]:
        return slice(self.y0, self.y1), slice(self.x0, self.x1)


@dataclass(frozen=True)
class FaceGeometry:
    """What RegionMask needs of one detected face; points are (x, y) floats."""

    width: int
    height: int
    left_eye: tuple[float, float] | None = None  # the SUBJECT's left eye
    right_eye: tuple[float, float] | None = None
    face_box: tuple[float, float, float, float] | None = None  # x_min, y_min, x_max, y_max
    # eyelid contours, lower lid (corner to corner) then upper lid: (x, y) points, or None
    left_eye_lids: tuple[tuple[float, float], ...] | None = None
    right_eye_lids: tuple[tuple[float, float], ...] | None = None


@dataclass(frozen=True)
class MaskOptions:
    padding_iod: float = 0.0
    padding_px: float = 0.0
    align: int = 8
    crop_padding: int = 32


@dataclass
class RegionMask:
    mask: np.ndarray  # HxW uint8, 255 inside the region
    crop: Rect  # aligned crop box inside the image
    area: int  # pixels inside the region


def check_options(opts: MaskOptions) -> None:
    check_range(opts.padding_iod, "padding_iod", 0.0, 2.0)
    check_range(opts.padding_px, "padding_px", 0.0, 512.0, unit="px")
    check_range(opts.crop_padding, "crop_padding", 0, 1024, unit="px")
    require(1 <= opts.align <= 64 and opts.align & (opts.align - 1) == 0, "align",
            f"{opts.align} is not a power of two in [1, 64]")


def _check_point(p: tuple[float, float] | None, field: str, geo: FaceGeometry) -> None:
    if p is None:
        return
    x, y = p
    if not (0 <= x < geo.width and 0 <= y < geo.height):  # NaN fails too
        raise InvalidArgument(field, f"({x}, {y}) is outside the {geo.width}x{geo.height} image")


def check_geometry(geo: FaceGeometry, field: str = "items[0]", max_pixels: int | None = None) -> None:
    for name, side in (("width", geo.width), ("height", geo.height)):
        require(1 <= side <= MAX_SIDE, f"{field}.{name}", f"{side} is outside [1, {MAX_SIDE}] px")
    if max_pixels is not None and geo.width * geo.height > max_pixels:
        raise InvalidArgument(field, f"a {geo.width}x{geo.height} mask is {geo.width * geo.height / 1e6:.1f} MP, "
                                     f"over the limit of {max_pixels / 1e6:.1f} MP (LIKENESS_MAX_IMAGE_PIXELS)")
    _check_point(geo.left_eye, f"{field}.landmarks[LEFT_EYE]", geo)
    _check_point(geo.right_eye, f"{field}.landmarks[RIGHT_EYE]", geo)
    for side, lids in (("LEFT", geo.left_eye_lids), ("RIGHT", geo.right_eye_lids)):
        if lids is not None and not all(math.isfinite(v) and abs(v) <= 4 * MAX_SIDE for p in lids for v in p):
            raise InvalidArgument(f"{field}.landmarks[{side}_*_LID]", "holds a non-finite or far-off point")
    if geo.face_box is not None:
        x0, y0, x1, y1 = geo.face_box
        box_field = f"{field}.face_box"
        require(x1 > x0 and y1 > y0, box_field, f"({x0}, {y0}, {x1}, {y1}) is empty: x_max must exceed "
                                                "x_min and y_max exceed y_min")
        require(x0 < geo.width and y0 < geo.height and x1 > 0 and y1 > 0, box_field,
                f"({x0}, {y0}, {x1}, {y1}) lies outside the {geo.width}x{geo.height} image")


def inter_ocular(geo: FaceGeometry, field: str) -> tuple[float, float]:
    """(IOD in px, eye-line angle in degrees) from both eye centres."""
    if geo.left_eye is None or geo.right_eye is None:
        missing = [n for n, p in (("LEFT_EYE", geo.left_eye), ("RIGHT_EYE", geo.right_eye)) if p is None]
        raise InvalidArgument(f"{field}.landmarks", f"missing {' and '.join(missing)}: eye regions "
                                                    "need both eye centres")
    (lx, ly), (rx, ry) = geo.left_eye, geo.right_eye
    iod = math.hypot(lx - rx, ly - ry)
    require(iod >= 2.0, f"{field}.landmarks", f"eye centres are {iod:.2f} px apart; at least 2 px needed")
    # Angle of the line from the subject's right eye (image left) to their left eye (image right).
    return iod, math.degrees(math.atan2(ly - ry, lx - rx))


def _draw_ellipse(mask: np.ndarray, centre: tuple[float, float], axes: tuple[float, float],
                  angle: float) -> None:
    """Sets to 255 every pixel whose centre (i + 0.5, j + 0.5) lies inside the rotated ellipse, so
    the area matches pi * a * b (a rasteriser that includes boundary pixels overshoots small eye
    ellipses by ~10 %). Only the ellipse's bounding box is evaluated."""
    (cx, cy), (a, b), t = centre, axes, math.radians(angle)
    cos, sin = math.cos(t), math.sin(t)
    hx, hy = math.hypot(a * cos, b * sin), math.hypot(a * sin, b * cos)
    height, width = mask.shape
    x0, x1 = max(math.floor(cx - hx), 0), min(math.ceil(cx + hx) + 1, width)
    y0, y1 = max(math.floor(cy - hy), 0), min(math.ceil(cy + hy) + 1, height)
    if x0 >= x1 or y0 >= y1:
        return
    dx = np.arange(x0, x1, dtype=np.float32)[None, :] + (0.5 - cx)
    dy = np.arange(y0, y1, dtype=np.float32)[:, None] + (0.5 - cy)
    u = (dx * cos + dy * sin) / a
    v = (dy * cos - dx * sin) / b
    mask[y0:y1, x0:x1][u * u + v * v <= 1.0] = 255


def eye_mask(geo: FaceGeometry, region: Region, opts: MaskOptions, field: str = "items[0]") -> np.ndarray:
    iod, angle = inter_ocular(geo, field)
    pad = opts.padding_iod * iod + opts.padding_px
    axes = (EYE_HALF_LENGTH_IOD * iod + pad, EYE_HALF_HEIGHT_IOD * iod + pad)
    mask = np.zeros((geo.height, geo.width), np.uint8)
    left, right = (geo.left_eye, geo.left_eye_lids), (geo.right_eye, geo.right_eye_lids)
    eyes = {Region.LEFT_EYE: [left], Region.RIGHT_EYE: [right], Region.BOTH_EYES: [left, right]}[region]
    for centre, lids in eyes:
        if lids is not None and len(lids) >= 3:
            _draw_lids(mask, lids, iod, pad)
        else:
            _draw_ellipse(mask, centre, axes, angle)
    return mask


def _draw_lids(mask: np.ndarray, lids: tuple[tuple[float, float], ...], iod: float, pad: float) -> None:
    """The lid polygon grown by the lid margin, united with an ellipse along its corner line."""
    points = np.asarray(lids, np.float64)
    # the corners: the two contour points farthest apart
    d = np.linalg.norm(points[:, None] - points[None], axis=2)
    a, b = np.unravel_index(int(np.argmax(d)), d.shape)
    (ax, ay), (bx, by) = points[a], points[b]
    if ax > bx:
        (ax, ay), (bx, by) = (bx, by), (ax, ay)
    margin = LID_MARGIN_IOD * iod + pad
    angle = math.degrees(math.atan2(by - ay, bx - ax))
    _draw_ellipse(mask, ((ax + bx) / 2, (ay + by) / 2), (math.hypot(bx - ax, by - ay) / 2 + margin,
                                                          EYE_HALF_HEIGHT_IOD * iod + pad), angle)
    lid = np.zeros_like(mask)
    cv2.fillPoly(lid, [np.round(points).astype(np.int32)], 255)
    if margin >= 0.5:
        k = int(2 * round(margin) + 1)
        lid = cv2.dilate(lid, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
    np.maximum(mask, lid, out=mask)


def face_mask(geo: FaceGeometry, opts: MaskOptions, field: str = "items[0]") -> np.ndarray:
    if geo.face_box is None:
        raise InvalidArgument(f"{field}.face_box", "is required for the face region")
    x0, y0, x1, y1 = geo.face_box
    if geo.left_eye is not None and geo.right_eye is not None:
        iod, angle = inter_ocular(geo, field)
    else:
        iod, angle = IOD_PER_FACE_WIDTH * (x1 - x0), 0.0
    pad = opts.padding_iod * iod + opts.padding_px
    mask = np.zeros((geo.height, geo.width), np.uint8)
    _draw_ellipse(mask, ((x0 + x1) / 2, (y0 + y1) / 2), ((x1 - x0) / 2 + pad, (y1 - y0) / 2 + pad), angle)
    return mask


def _aligned_span(lo: int, hi: int, pad: int, size: int, align: int) -> tuple[int, int]:
    """The mask span [lo, hi) grown by `pad`, ends snapped outward to multiples of `align`, moved
    inside [0, size). When the image is too small for that, the span is centred on the mask."""
    cap = size if size < align else size - size % align
    start = (max(lo - pad, 0) // align) * align
    length = min(-(-min(hi + pad, size) // align) * align - start, cap)
    if start + length < min(hi + pad, size):  # capped by the image side
        start = (lo + hi - length) // 2
    start = min(max(start, 0), size - length)
    return start, start + length


def aligned_crop_box(mask_bbox: Rect, width: int, height: int, padding: int, align: int) -> Rect:
    x0, x1 = _aligned_span(mask_bbox.x0, mask_bbox.x1, padding, width, align)
    y0, y1 = _aligned_span(mask_bbox.y0, mask_bbox.y1, padding, height, align)
    return Rect(x0, y0, x1, y1)


def mask_bbox(mask: np.ndarray) -> Rect | None:
    """Bounding box of the non-zero pixels, or None for an empty mask."""
    x, y, w, h = cv2.boundingRect(mask)
    return None if w == 0 or h == 0 else Rect(x, y, x + w, y + h)


def region_mask(geo: FaceGeometry, region: Region, opts: MaskOptions, field: str = "items[0]",
                max_pixels: int | None = None) -> RegionMask:
    """The mask of `region`, its pixel area and the aligned crop box around it."""
    check_options(opts)
    check_geometry(geo, field, max_pixels)
    mask = face_mask(geo, opts, field) if region is Region.FACE else eye_mask(geo, region, opts, field)
    bbox = mask_bbox(mask)
    if bbox is None:
        raise InvalidArgument(field, f"the {region.value} mask is empty inside the {geo.width}x{geo.height} image")
    area = int(cv2.countNonZero(mask[bbox.slices]))
    return RegionMask(mask, aligned_crop_box(bbox, geo.width, geo.height, opts.crop_padding, opts.align), area)
