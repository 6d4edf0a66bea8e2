"""Real photos that ship inside installed packages (FACTS.md), as HxWx3 uint8 RGB arrays."""

from __future__ import annotations

import importlib.util
from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image


def _rgb(a: np.ndarray) -> np.ndarray:
    if a.ndim == 2:
        a = np.stack([a] * 3, axis=-1)
    return np.ascontiguousarray(a[..., :3]).astype(np.uint8)


@cache
def skimage_photo(name: str) -> np.ndarray:
    """astronaut, camera, coffee, rocket, chelsea, brick, grass, ..."""
    from skimage import data

    return _rgb(getattr(data, name)())


def insightface_image_path(name: str) -> Path:
    spec = importlib.util.find_spec("insightface")
    assert spec and spec.origin, "insightface is not installed (tools/install_extras.sh)"
    return Path(spec.origin).parent / "data" / "images" / name


@cache
def group_photo() -> np.ndarray:
    """insightface's t1.jpg: six faces."""
    return _rgb(np.asarray(Image.open(insightface_image_path("t1.jpg")).convert("RGB")))


@cache
def tom_hanks() -> np.ndarray:
    return _rgb(np.asarray(Image.open(insightface_image_path("Tom_Hanks_54745.png")).convert("RGB")))
