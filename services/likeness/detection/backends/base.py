"""The two interfaces every face model implements.

A `FaceDetector` returns faces with box, confidence and landmarks (no pose, no embedding: the
pipeline adds those). An `IdentityEncoder` turns faces of an image into L2-normalised vectors.
`load()` reads weights and raises `ModelMissing` naming the missing files; it never falls back.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from likeness.detection.faces import Face


class FaceDetector(Protocol):
    name: str
    min_score: float  # confidence floor of `detect` unless the call gives its own
    input_side: int  # the network's input side in pixels (the pipeline shrinks larger images)

    def load(self) -> None: ...

    def detect(self, rgb: np.ndarray, min_score: float | None = None) -> list[Face]:
        """HxWx3 uint8 RGB -> faces scoring >= min_score, in pixel coordinates, any order."""
        ...

    def describe(self) -> dict: ...


class IdentityEncoder(Protocol):
    name: str  # sent as Face.embedding_model, e.g. `dlib-resnet-128`
    dim: int

    def load(self) -> None: ...

    def embed(self, rgb: np.ndarray, faces: list[Face]) -> list[np.ndarray]:
        """One L2-normalised float32 vector per face, in the order given."""
        ...
