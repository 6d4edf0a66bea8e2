"""Region masks follow the landmarks of a real portrait; crop boxes are aligned and inside."""

from __future__ import annotations

import math

import numpy as np
import pytest

from likeness.core.errors import InvalidArgument
from likeness.restoration.masks import (
    FaceGeometry,
    MaskOptions,
    Rect,
    Region,
    aligned_crop_box,
    mask_bbox,
    region_mask,
)
from tests.restoration import astronaut as A

GEO = FaceGeometry(512, 512, left_eye=A.LEFT_EYE, right_eye=A.RIGHT_EYE, face_box=A.FACE_BOX)


def at(mask: np.ndarray, point) -> int:
    return int(mask[round(point[1]), round(point[0])])


def test_both_eyes_mask_covers_eye_centres_not_mouth_or_nose():
    built = region_mask(GEO, Region.BOTH_EYES, MaskOptions())
    assert at(built.mask, A.LEFT_EYE) == 255 and at(built.mask, A.RIGHT_EYE) == 255
    assert at(built.mask, A.MOUTH_CENTER) == 0 and at(built.mask, A.NOSE_TIP) == 0
    # two ellipses of semi-axes 0.30 and 0.18 IOD: area pi * a * b each, within 3 %
    expected = 2 * math.pi * (0.30 * A.IOD) * (0.18 * A.IOD)
    assert built.area == pytest.approx(expected, rel=0.03)
    assert built.area == int((built.mask > 0).sum())


def test_single_eye_masks_are_the_subjects_eyes():
    left = region_mask(GEO, Region.LEFT_EYE, MaskOptions()).mask
    right = region_mask(GEO, Region.RIGHT_EYE, MaskOptions()).mask
    assert at(left, A.LEFT_EYE) == 255 and at(left, A.RIGHT_EYE) == 0
    assert at(right, A.RIGHT_EYE) == 255 and at(right, A.LEFT_EYE) == 0
    assert not np.any(left & right)  # eyes 41 px apart, masks 25 px wide each


def test_face_mask_covers_eyes_and_mouth_not_background():
    built = region_mask(GEO, Region.FACE, MaskOptions())
    for point in (A.LEFT_EYE, A.RIGHT_EYE, A.NOSE_TIP, A.MOUTH_CENTER):
        assert at(built.mask, point) == 255
    assert at(built.mask, (20, 20)) == 0 and at(built.mask, (450, 300)) == 0


def test_padding_in_iod_and_pixels_add_up():
    base = region_mask(GEO, Region.LEFT_EYE, MaskOptions()).area
    by_px = region_mask(GEO, Region.LEFT_EYE, MaskOptions(padding_px=0.1 * A.IOD)).area
    by_iod = region_mask(GEO, Region.LEFT_EYE, MaskOptions(padding_iod=0.1)).area
    both = region_mask(GEO, Region.LEFT_EYE, MaskOptions(padding_iod=0.05, padding_px=0.05 * A.IOD)).area
    assert base < by_px
    assert by_px == pytest.approx(by_iod, abs=4) and both == pytest.approx(by_iod, abs=4)


def test_eye_mask_turns_with_head_roll():
    # the same eyes rotated by 30 degrees about their midpoint: the mask rotates with them
    mx, my = 225.0, 102.0
    c, s = math.cos(math.radians(30)), math.sin(math.radians(30))

    def rot(p):
        return (mx + c * (p[0] - mx) - s * (p[1] - my), my + s * (p[0] - mx) + c * (p[1] - my))

    geo = FaceGeometry(512, 512, left_eye=rot(A.LEFT_EYE), right_eye=rot(A.RIGHT_EYE))
    built = region_mask(geo, Region.LEFT_EYE, MaskOptions())
    ys, xs = np.nonzero(built.mask)
    angle = 0.5 * math.degrees(math.atan2(2 * np.cov(xs, ys)[0, 1], np.var(xs) - np.var(ys)))
    tilt = math.degrees(math.atan2(A.LEFT_EYE[1] - A.RIGHT_EYE[1], A.LEFT_EYE[0] - A.RIGHT_EYE[0]))  # 2.8
    assert angle == pytest.approx(30 + tilt, abs=1.5)  # the principal axis follows the eye line
    assert at(built.mask, rot(A.LEFT_EYE)) == 255


@pytest.mark.parametrize("align", [1, 8, 64])
def test_crop_box_is_aligned_padded_and_inside(align):
    built = region_mask(GEO, Region.BOTH_EYES, MaskOptions(align=align, crop_padding=32))
    box, bbox = built.crop, mask_bbox(built.mask)
    assert box.width % align == 0 and box.height % align == 0
    assert box.x0 % align == 0 and box.y0 % align == 0  # 512 is a multiple of every align
    assert box.x0 <= bbox.x0 - 32 and box.y0 <= bbox.y0 - 32 and box.x1 >= bbox.x1 + 32 and box.y1 >= bbox.y1 + 32
    assert 0 <= box.x0 < box.x1 <= 512 and 0 <= box.y0 < box.y1 <= 512


def test_crop_box_invariants_near_edges_and_odd_sizes():
    rng = np.random.default_rng(0)
    for _ in range(300):
        width, height = (int(v) for v in rng.integers(5, 700, 2))
        x0, y0 = int(rng.integers(0, width)), int(rng.integers(0, height))
        bbox = Rect(x0, y0, int(rng.integers(x0 + 1, width + 1)), int(rng.integers(y0 + 1, height + 1)))
        align, pad = int(2 ** rng.integers(0, 7)), int(rng.integers(0, 80))
        box = aligned_crop_box(bbox, width, height, pad, align)
        assert 0 <= box.x0 < box.x1 <= width and 0 <= box.y0 < box.y1 <= height
        for side, size in ((box.width, width), (box.height, height)):
            assert side % align == 0 or side == size < align
        # the mask is covered whenever the image leaves room for an aligned box around it
        if bbox.width <= width - width % align and bbox.height <= height - height % align:
            assert box.x0 <= bbox.x0 and box.x1 >= bbox.x1 and box.y0 <= bbox.y0 and box.y1 >= bbox.y1


@pytest.mark.parametrize("geo, region, field", [
    (FaceGeometry(512, 512, left_eye=(600, 103), right_eye=A.RIGHT_EYE), Region.BOTH_EYES,
     "items[0].landmarks[LEFT_EYE]"),
    (FaceGeometry(512, 512, left_eye=(-1, 103), right_eye=A.RIGHT_EYE), Region.BOTH_EYES,
     "items[0].landmarks[LEFT_EYE]"),
    (FaceGeometry(512, 512, left_eye=(float("nan"), 3), right_eye=A.RIGHT_EYE), Region.BOTH_EYES,
     "items[0].landmarks[LEFT_EYE]"),
    (FaceGeometry(512, 512, right_eye=A.RIGHT_EYE), Region.RIGHT_EYE, "items[0].landmarks"),
    (FaceGeometry(512, 512, left_eye=(10, 10), right_eye=(10.5, 10)), Region.BOTH_EYES, "items[0].landmarks"),
    (FaceGeometry(512, 512, left_eye=A.LEFT_EYE, right_eye=A.RIGHT_EYE), Region.FACE, "items[0].face_box"),
    (FaceGeometry(512, 512, face_box=(100, 100, 90, 200)), Region.FACE, "items[0].face_box"),
    (FaceGeometry(512, 512, face_box=(600, 600, 700, 700)), Region.FACE, "items[0].face_box"),
    (FaceGeometry(0, 512, face_box=(1, 1, 5, 5)), Region.FACE, "items[0].width"),
    (FaceGeometry(512, 20000, face_box=(1, 1, 5, 5)), Region.FACE, "items[0].height"),
    # a box that only grazes the image corner: its inscribed ellipse misses every pixel
    (FaceGeometry(512, 512, face_box=(-100, -100, 2, 2)), Region.FACE, "items[0]"),
])
def test_bad_geometry_is_rejected_naming_the_field(geo, region, field):
    with pytest.raises(InvalidArgument) as err:
        region_mask(geo, region, MaskOptions())
    assert err.value.field == field


@pytest.mark.parametrize("opts, field", [
    (MaskOptions(padding_iod=2.5), "padding_iod"), (MaskOptions(padding_px=-1), "padding_px"),
    (MaskOptions(align=6), "align"), (MaskOptions(align=128), "align"), (MaskOptions(crop_padding=2000), "crop_padding"),
])
def test_bad_options_are_rejected(opts, field):
    with pytest.raises(InvalidArgument) as err:
        region_mask(GEO, Region.BOTH_EYES, opts)
    assert err.value.field == field


def test_masks_follow_the_detection_services_landmarks():
    """The same portrait through the embedded detector (BlazeFace): its landmarks agree with the
    hand-measured ones within 3 px and the masks built from them behave the same."""
    from likeness.detection.backends.factory import create_pipeline
    from likeness.detection.settings import DetectionSettings

    pipeline = create_pipeline(DetectionSettings(detection_identity="none"))
    pipeline.load()
    (face,) = pipeline.detector.detect(A.photo())
    points = {k.value.lower(): v for k, v in face.landmarks.items()}
    for name, measured in (("left_eye", A.LEFT_EYE), ("right_eye", A.RIGHT_EYE), ("mouth_center", A.MOUTH_CENTER)):
        assert math.dist(points[name], measured) < 3.0, name
    b = face.box
    geo = FaceGeometry(512, 512, points["left_eye"], points["right_eye"], (b.x_min, b.y_min, b.x_max, b.y_max))
    eyes = region_mask(geo, Region.BOTH_EYES, MaskOptions()).mask
    assert at(eyes, A.LEFT_EYE) == 255 and at(eyes, A.RIGHT_EYE) == 255 and at(eyes, A.MOUTH_CENTER) == 0
    assert at(region_mask(geo, Region.FACE, MaskOptions()).mask, A.MOUTH_CENTER) == 255


def _lids(cx: float, cy: float, half: float, open_: float, tilt: float = 0.0) -> tuple:
    """An eye's lid contour (lower lid, then upper lid reversed), `open_` px between the lids."""
    t = math.radians(tilt)
    pts = []
    for s, sign in ((np.linspace(-1, 1, 9), 1), (np.linspace(1, -1, 7), -1)):
        for u in s:
            x, y = u * half, sign * open_ / 2 * (1 - u * u)
            pts.append((cx + x * math.cos(t) - y * math.sin(t), cy + x * math.sin(t) + y * math.cos(t)))
    return tuple(pts)


def test_eye_masks_follow_the_lid_contours_when_present():
    base = FaceGeometry(400, 300, left_eye=(250.0, 150.0), right_eye=(150.0, 150.0))  # IOD 100
    # a long, tilted eye whose corners lie outside the generic ellipse (semi-axis 30 px)
    lids = _lids(250, 150, 40, 14, tilt=20)
    with_lids = FaceGeometry(400, 300, left_eye=(250.0, 150.0), right_eye=(150.0, 150.0), left_eye_lids=lids)
    plain = region_mask(base, Region.LEFT_EYE, MaskOptions()).mask
    shaped = region_mask(with_lids, Region.LEFT_EYE, MaskOptions()).mask
    for x, y in (lids[0], lids[8]):  # both corners are inside the contour-built mask, not the ellipse
        assert shaped[int(y), int(x)] == 255 and plain[int(y), int(x)] == 0
    # a shut eye's thin contour still leaves room for an open eye (0.18 IOD across the eye line)
    shut = FaceGeometry(400, 300, left_eye=(250.0, 150.0), right_eye=(150.0, 150.0), left_eye_lids=_lids(250, 150, 25, 1))
    column = region_mask(shut, Region.LEFT_EYE, MaskOptions()).mask[:, 250]
    assert np.count_nonzero(column) >= 2 * 18 - 2
    # the right eye without lids keeps the generic ellipse
    both = region_mask(with_lids, Region.BOTH_EYES, MaskOptions()).mask
    assert np.array_equal(both[:, :200], region_mask(base, Region.BOTH_EYES, MaskOptions()).mask[:, :200])
    bad = FaceGeometry(400, 300, left_eye=(250.0, 150.0), right_eye=(150.0, 150.0), left_eye_lids=((math.nan, 1.0),) * 16)
    with pytest.raises(InvalidArgument, match=r"LEFT_\*_LID"):
        region_mask(bad, Region.LEFT_EYE, MaskOptions())
