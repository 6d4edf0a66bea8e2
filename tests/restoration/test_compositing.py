"""Feathered paste-back: exact bytes outside the support, no visible seam on real photos."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from likeness.core.errors import InvalidArgument
from likeness.restoration.compositing import feather_support, feathered_blend
from likeness.restoration.masks import FaceGeometry, MaskOptions, Rect, Region, region_mask
from likeness.restoration.seams import seam_measure
from tests.photos import skimage_photo
from tests.restoration import astronaut as A

ASTRONAUT = FaceGeometry(512, 512, A.LEFT_EYE, A.RIGHT_EYE, A.FACE_BOX)
CASES = {  # real photo, face geometry, region
    "astronaut-eyes": ("astronaut", ASTRONAUT, Region.BOTH_EYES),
    "astronaut-face": ("astronaut", ASTRONAUT, Region.FACE),
    "chelsea-face": ("chelsea", FaceGeometry(451, 300, face_box=(130, 40, 320, 200)), Region.FACE),
    "camera-face": ("camera", FaceGeometry(512, 512, face_box=(250, 60, 330, 150)), Region.FACE),
}


def distance_outside(mask: np.ndarray) -> np.ndarray:
    inside = (mask > 0).astype(np.uint8)
    return cv2.distanceTransform(1 - inside, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)


def case(name: str, crop_padding: int = 32):
    photo, geo, region = CASES[name]
    base = skimage_photo(photo)
    built = region_mask(geo, region, MaskOptions(crop_padding=crop_padding))
    return base, built.mask, built.crop


def drifted(base: np.ndarray, crop: Rect, by: int = 40) -> np.ndarray:
    return np.clip(base[crop.slices].astype(np.int16) + by, 0, 255).astype(np.uint8)


def foreign(crop: Rect) -> np.ndarray:
    return cv2.resize(skimage_photo("coffee"), (crop.width, crop.height), interpolation=cv2.INTER_AREA)


@pytest.mark.parametrize("sigma, dilation", [(6.0, 4.0), (2.5, 0.0), (0.0, 3.0), (10.0, 7.5)])
def test_pixels_outside_the_support_are_byte_identical(sigma, dilation):
    base, mask, crop = case("astronaut-face", crop_padding=40)
    patch = foreign(crop)
    out = feathered_blend(base, patch, mask, crop, sigma, dilation)
    far = distance_outside(mask) > feather_support(sigma, dilation)
    assert np.array_equal(out[far], base[far])
    assert not np.array_equal(out, base)
    # deeper than the feather inside the mask, the patch shows as is
    core = cv2.distanceTransform((mask > 0).astype(np.uint8), cv2.DIST_L2, 5) > 3 * sigma + 1
    ys, xs = np.nonzero(core)
    assert len(ys) > 1000
    assert np.array_equal(out[ys, xs], patch[ys - crop.y0, xs - crop.x0])


def test_full_size_patch_and_crop_patch_give_the_same_result():
    base, mask, crop = case("astronaut-face")
    full = base.copy()
    full[crop.slices] = drifted(base, crop)
    assert np.array_equal(feathered_blend(base, full, mask), feathered_blend(base, full[crop.slices], mask, crop))


def seams(base: np.ndarray, patch: np.ndarray, mask: np.ndarray, crop: Rect):
    """The service's seam measure of our feathered blend and of a hard paste of the same patch."""
    full = base.copy()
    full[crop.slices] = patch
    soft = seam_measure(base, full, feathered_blend(base, patch, mask, crop), mask)
    hard = seam_measure(base, full, feathered_blend(base, patch, mask, crop, feather_sigma=0.0, dilation_px=0.0), mask)
    return soft, hard


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("patch_kind", ["colour drift", "other content"])
def test_no_seam_on_real_photos(name, patch_kind):
    """Across the mask's edge our blend's mean step is at most half a hard paste's, and no step is
    larger than the photo's own steps nearby; the measure does see the hard paste's seam."""
    base, mask, crop = case(name)
    patch = drifted(base, crop) if patch_kind == "colour drift" else foreign(crop)
    soft, hard = seams(base, patch, mask, crop)
    assert soft.boundary_gradient <= 0.5 * soft.hard_gradient, soft
    assert soft.max_step <= soft.reference_step, soft
    assert hard.boundary_gradient == pytest.approx(hard.hard_gradient)  # a hard paste is its own reference


def test_blending_an_already_pasted_patch_keeps_its_seam():
    """Why generation must hand over the region unpasted: feathering a patch that was already
    pasted through the hard mask blends two identical images around the edge, and the seam stays."""
    base, mask, crop = case("astronaut-eyes")
    pasted = np.where((mask[crop.slices] > 0)[..., None], drifted(base, crop), base[crop.slices])
    soft, _ = seams(base, pasted, mask, crop)
    assert soft.boundary_gradient > 0.5 * soft.hard_gradient  # fails the criterion our blend meets


def test_mask_at_the_image_edge_is_blended_inside_the_image():
    base = skimage_photo("astronaut")
    mask = np.zeros(base.shape[:2], np.uint8)
    mask[:40, :60] = 255
    out = feathered_blend(base, np.zeros_like(base), mask)
    assert out[0, 0].tolist() == [0, 0, 0]
    assert np.array_equal(out[100:], base[100:])


def test_bad_inputs_name_the_field():
    base, mask, crop = case("astronaut-eyes")
    patch = base[crop.slices]
    with pytest.raises(InvalidArgument, match="must match the base") as err:
        feathered_blend(base, patch, mask[:-1], crop)
    assert err.value.field == "items[0].mask"
    with pytest.raises(InvalidArgument, match="is empty") as err:
        feathered_blend(base, patch, np.zeros_like(mask), crop)
    assert err.value.field == "items[0].mask"
    with pytest.raises(InvalidArgument, match="patch_box is") as err:
        feathered_blend(base, patch[:-8], mask, crop)
    assert err.value.field == "items[0].patch"
    with pytest.raises(InvalidArgument, match="give patch_box") as err:
        feathered_blend(base, patch, mask)
    assert err.value.field == "items[0].patch"
    with pytest.raises(InvalidArgument, match="not inside") as err:
        feathered_blend(base, patch, mask, Rect(500, 500, 500 + crop.width, 500 + crop.height))
    assert err.value.field == "items[0].patch_box"
    tight = Rect(crop.x0 + 24, crop.y0 + 24, crop.x1 - 24, crop.y1 - 24)  # mask + 8 px only
    with pytest.raises(InvalidArgument, match="crop_padding") as err:
        feathered_blend(base, base[tight.slices], mask, tight)
    assert err.value.field == "items[0].patch_box"
    with pytest.raises(InvalidArgument) as err:
        feathered_blend(base, patch, mask, crop, feather_sigma=200)
    assert err.value.field == "feather_sigma"
    with pytest.raises(InvalidArgument) as err:
        feathered_blend(base, patch, mask, crop, dilation_px=float("nan"))
    assert err.value.field == "dilation_px"
