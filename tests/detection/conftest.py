"""Detection fixtures: one real BlazeFace + dlib pipeline per test session (models load once)."""

from __future__ import annotations

import numpy as np
import pytest

from likeness.detection.backends.blazeface import BlazeFaceDetector
from likeness.detection.backends.dlib_identity import DlibIdentityEncoder
from likeness.detection.pipeline import FacePipeline
from tests.photos import group_photo, skimage_photo, tom_hanks


@pytest.fixture(scope="session")
def pipeline() -> FacePipeline:
    p = FacePipeline(BlazeFaceDetector(), DlibIdentityEncoder())
    p.load()
    return p


@pytest.fixture(scope="session")
def mesh_pipeline() -> FacePipeline:
    """The service's default pipeline: BlazeFace + flip averaging + face mesh and iris; no identity."""
    from likeness.detection.backends.factory import create_pipeline
    from likeness.detection.settings import DetectionSettings

    p = create_pipeline(DetectionSettings(detection_identity="none"))
    p.load()
    return p


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    return skimage_photo("astronaut")


@pytest.fixture(scope="session")
def group() -> np.ndarray:
    return group_photo()


@pytest.fixture(scope="session")
def hanks() -> np.ndarray:
    return tom_hanks()


def flipped(rgb: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(rgb[:, ::-1])
