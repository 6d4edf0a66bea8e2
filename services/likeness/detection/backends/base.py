"""The two interfaces every face model implements, both `ModelBackend`s (load, warmup, describe).

A `FaceDetector` returns faces with box, confidence and landmarks (no pose, no embedding: the
pipeline adds those). An `IdentityEncoder` turns faces of an image into L2-normalised vectors.
`load()` reads weights and raises `ModelMissing` naming the missing files; it never falls back.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from likeness.core.backend import ModelBackend
from likeness.detection.faces import Box, Face, Landmark


def probe_image() -> np.ndarray:
    """A 256x256 grey image with one skin-toned disc: enough for a real inference at warm-up."""
    import cv2

    image = np.full((256, 256, 3), 128, dtype=np.uint8)
    cv2.circle(image, (128, 128), 60, (200, 170, 150), -1)
    return image


def probe_face() -> Face:
    """A face on `probe_image()` with the four landmarks identity encoders align on."""
    return Face(box=Box(68, 68, 188, 188), score=1.0, landmarks={
        Landmark.RIGHT_EYE: (104.0, 110.0), Landmark.LEFT_EYE: (152.0, 110.0),
        Landmark.NOSE_TIP: (128.0, 138.0), Landmark.MOUTH_CENTER: (128.0, 162.0)})


class FaceDetector(ModelBackend, Protocol):
    name: str
    min_score: float  # confidence floor of `detect` unless the call gives its own
    input_side: int  # the network's input side in pixels (the pipeline shrinks larger images)

    def detect(self, rgb: np.ndarray, min_score: float | None = None) -> list[Face]:
        """HxWx3 uint8 RGB -> faces scoring >= min_score, in pixel coordinates, any order."""
        ...

    def warmup(self) -> None:
        self.detect(probe_image())


class IdentityEncoder(ModelBackend, Protocol):
    name: str  # sent as Face.embedding_model, e.g. `dlib-resnet-128`
    dim: int

    def embed(self, rgb: np.ndarray, faces: list[Face]) -> list[np.ndarray]:
        """One L2-normalised float32 vector per face, in the order given."""
        ...

    def warmup(self) -> None:
        self.embed(probe_image(), [probe_face()])

    def describe(self) -> dict:
        return {"identity_model": self.name, "dimension": self.dim}
