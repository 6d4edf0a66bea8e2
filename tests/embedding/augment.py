"""The demo set for clustering tests and the benchmark: real photos, each under the edits a
curation pipeline meets (crop, rescale, brightness, blur, flip, and a combination)."""

from __future__ import annotations

import numpy as np

from tests import photos

SOURCES = ("astronaut", "coffee", "rocket", "chelsea", "camera", "immunohistochemistry",
           "hubble_deep_field", "group")


def source_photo(name: str) -> np.ndarray:
    return photos.group_photo() if name == "group" else photos.skimage_photo(name)


def augmentations(rgb: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
    import cv2

    def crop(img: np.ndarray) -> np.ndarray:
        h, w = img.shape[:2]
        f = rng.uniform(0.75, 0.9)
        ch, cw = int(h * f), int(w * f)
        y, x = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
        return img[y:y + ch, x:x + cw]

    def brightness(img: np.ndarray, gain: float) -> np.ndarray:
        return np.clip(img.astype(np.float32) * gain, 0, 255).astype(np.uint8)

    h, w = rgb.shape[:2]
    return [
        rgb,
        crop(rgb),
        cv2.resize(rgb, (w // 2, h // 2), interpolation=cv2.INTER_AREA),
        brightness(rgb, 1.35),
        cv2.GaussianBlur(rgb, (0, 0), 2.5),
        np.ascontiguousarray(rgb[:, ::-1]),
        brightness(np.ascontiguousarray(crop(rgb)[:, ::-1]), 0.65),
    ]


def demo_set(seed: int = 0) -> tuple[list[np.ndarray], np.ndarray]:
    """Images and the index of the source photo of each."""
    rng = np.random.default_rng(seed)
    images, sources = [], []
    for s, name in enumerate(SOURCES):
        variants = augmentations(source_photo(name), rng)
        images += variants
        sources += [s] * len(variants)
    return images, np.array(sources)
