"""dlib identity embeddings: L2-normalised, stable for one person under augmentation, apart for
different people."""

from __future__ import annotations

import cv2
import numpy as np

from likeness.detection.validation import ValidationPolicy


def embedding(pipeline, rgb):
    faces = pipeline.find_faces(np.ascontiguousarray(rgb), with_embeddings=True)
    assert faces, "no face found"
    return faces[0].embedding, faces[0].embedding_model


def test_embeddings_are_unit_vectors_of_the_named_model(pipeline, astronaut):
    v, model = embedding(pipeline, astronaut)
    assert model == "dlib-resnet-128" and v.shape == (128,) and v.dtype == np.float32
    assert abs(float(np.linalg.norm(v)) - 1.0) < 1e-5


def test_same_person_under_augmentation_is_closer_than_different_people(pipeline, astronaut, hanks, group):
    base, _ = embedding(pipeline, astronaut)
    augmented = {
        "crop": astronaut[30:400, 80:430],
        "scale": cv2.resize(astronaut, (300, 300), interpolation=cv2.INTER_AREA),
        "brightness": np.clip(astronaut.astype(np.int16) * 1.3 + 20, 0, 255).astype(np.uint8),
    }
    same = {k: float(np.linalg.norm(embedding(pipeline, v)[0] - base)) for k, v in augmented.items()}
    others = [embedding(pipeline, hanks)[0]]
    others += [f.embedding for f in pipeline.find_faces(group, with_embeddings=True)]
    different = [float(np.linalg.norm(v - base)) for v in others]
    assert len(different) == 7
    assert max(same.values()) < min(different), (same, different)
    # dlib's own rule of thumb: same person under 0.6 (on unnormalised vectors, which are ~unit)
    assert max(same.values()) < 0.4 < min(different)


def test_detect_reports_embeddings_only_when_asked(pipeline, astronaut):
    assert pipeline.detect(astronaut, ValidationPolicy()).faces[0].embedding is None
    assert pipeline.detect(astronaut, ValidationPolicy(), with_embeddings=True).faces[0].embedding is not None
