"""Image-task geometry: which region is denoised, at what size, and how it goes back.

IMAGE_TO_IMAGE: the init image is resized to the request's size; the output has that size.
INPAINT: the region (the whole image, or the mask's bounding box grown by `crop_padding`) is
resized to the request's size and denoised, resized back, and composited into the init image
through the hard mask: every pixel outside the mask is the init image's pixel, unchanged. With
PASTE_MODE_REGION the whole region replaces the init image's pixels there instead, so a caller
that blends with a feathered mask has the generated pixels around the mask to blend with (a hard
paste followed by a feathered blend of two identical images would leave the hard seam).
"""

from __future__ import annotations

import numpy as np
from PIL import Image


def mask_region(mask: np.ndarray, padding: int) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) of the mask's bounding box grown by `padding`, clamped; whole image if 0."""
    h, w = mask.shape
    if padding <= 0:
        return 0, 0, w, h
    ys, xs = np.nonzero(mask)
    return (max(0, int(xs.min()) - padding), max(0, int(ys.min()) - padding),
            min(w, int(xs.max()) + 1 + padding), min(h, int(ys.max()) + 1 + padding))


def resize_rgb(rgb: np.ndarray, width: int, height: int) -> np.ndarray:
    if rgb.shape[1] == width and rgb.shape[0] == height:
        return rgb
    return np.asarray(Image.fromarray(rgb, "RGB").resize((width, height), Image.Resampling.LANCZOS))


def resize_mask(mask: np.ndarray, width: int, height: int) -> np.ndarray:
    if mask.shape[1] == width and mask.shape[0] == height:
        return mask
    img = Image.fromarray(mask.astype(np.uint8) * 255, "L").resize((width, height), Image.Resampling.NEAREST)
    return np.asarray(img) > 127


def crop_for_denoising(init: np.ndarray, mask: np.ndarray | None, region, width: int, height: int):
    """The init image (and mask) cut to `region` and resized to the denoising size."""
    x0, y0, x1, y1 = region
    image = resize_rgb(np.ascontiguousarray(init[y0:y1, x0:x1]), width, height)
    small_mask = None if mask is None else resize_mask(np.ascontiguousarray(mask[y0:y1, x0:x1]), width, height)
    return image, small_mask


def paste_back(init: np.ndarray, generated: np.ndarray, mask: np.ndarray, region) -> np.ndarray:
    """Composite: generated pixels inside the mask, the init image's pixels everywhere else."""
    x0, y0, x1, y1 = region
    patch = resize_rgb(generated, x1 - x0, y1 - y0)
    out = init.copy()
    inside = mask[y0:y1, x0:x1]
    out[y0:y1, x0:x1][inside] = patch[inside]
    return out


def paste_region(init: np.ndarray, generated: np.ndarray, region) -> np.ndarray:
    """The whole denoised region put back in place, unmasked; the rest is the init image."""
    x0, y0, x1, y1 = region
    out = init.copy()
    out[y0:y1, x0:x1] = resize_rgb(generated, x1 - x0, y1 - y0)
    return out


def mask_from_rgb(rgb: np.ndarray) -> np.ndarray:
    """A decoded mask image -> HxW bool (white = repaint; threshold at mid grey on the brightest channel)."""
    return rgb.max(axis=2) > 127
