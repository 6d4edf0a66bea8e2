"""Real photos that ship inside installed packages (skimage, insightface), as HxWx3 uint8 RGB arrays.

One loader for tests and the demo set: `likeness.client.demo_set.photo`.
"""

from __future__ import annotations

import numpy as np

from likeness.client.demo_set import photo


def skimage_photo(name: str) -> np.ndarray:
    """astronaut, camera, coffee, rocket, chelsea, brick, grass, ..."""
    return photo(f"skimage:{name}")


def group_photo() -> np.ndarray:
    """insightface's t1.jpg: six faces."""
    return photo("insightface:t1.jpg")


def tom_hanks() -> np.ndarray:
    return photo("insightface:Tom_Hanks_54745.png")
