"""The InsightFace backend around its weights: pack layout in the model repository, the clear
error naming missing files, execution-provider selection, SCRFD decoding, and a full run on a
synthetic pack (tests/detection/synthetic_pack.py: real graph interfaces, made-up weights)."""

from __future__ import annotations

import numpy as np
import pytest

from likeness.core.errors import FailedPrecondition, ModelMissing
from likeness.core.modelrepo import ModelRepository
from likeness.detection.backends.factory import create_pipeline
from likeness.detection.backends.insightface import (
    DETECTOR_FILE,
    RECOGNITION_FILE,
    decode_scrfd,
    select_providers,
)
from likeness.detection.faces import Landmark
from likeness.detection.settings import DetectionSettings
from likeness.detection.validation import ValidationPolicy
from tests.detection import synthetic_pack as sp

ALL = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]


def settings(tmp_path, **kw) -> DetectionSettings:
    # no face mesh by default: the synthetic pack's made-up weights "find" faces in noise, which the
    # real mesh rightly does not see as faces
    return DetectionSettings(detection_backend="insightface", model_repository=str(tmp_path / "models"),
                             model_cache_dir=str(tmp_path / "cache"), detection_det_size=sp.DET_SIZE,
                             detection_flip_tta=False, **{"detection_mesh_faces": 0, **kw})


def test_missing_pack_names_the_model_yaml(tmp_path):
    with pytest.raises(ModelMissing) as exc:
        create_pipeline(settings(tmp_path))
    assert str(tmp_path / "models" / "buffalo_l" / "model.yaml") in str(exc.value)
    assert exc.value.code == "FAILED_PRECONDITION"


def test_pack_without_recognition_model_names_the_missing_file(tmp_path):
    repo = ModelRepository(tmp_path / "models", tmp_path / "cache")
    repo.register("buffalo_l", sp.write_pack(tmp_path / "src", with_recognition=False), "face-pack", "insightface")
    pipeline = create_pipeline(settings(tmp_path))
    with pytest.raises(ModelMissing) as exc:
        pipeline.load()
    assert exc.value.missing == [str(tmp_path / "models" / "buffalo_l" / RECOGNITION_FILE)]
    # with dlib as identity model the detector alone is enough
    create_pipeline(settings(tmp_path, detection_identity="dlib")).load()


def test_deleted_file_of_a_registered_pack_is_named(tmp_path):
    repo = ModelRepository(tmp_path / "models", tmp_path / "cache")
    repo.register("buffalo_l", sp.write_pack(tmp_path / "src"), "face-pack", "insightface")
    (tmp_path / "models" / "buffalo_l" / DETECTOR_FILE).unlink()
    with pytest.raises(ModelMissing, match=DETECTOR_FILE):
        create_pipeline(settings(tmp_path))


@pytest.mark.parametrize("requested,available,chosen", [
    ("auto", ["CPUExecutionProvider"], ["CPUExecutionProvider"]),
    ("auto", ["CUDAExecutionProvider", "CPUExecutionProvider"], ["CUDAExecutionProvider", "CPUExecutionProvider"]),
    ("auto", list(reversed(ALL)), ALL),
    ("auto", ["AzureExecutionProvider", "CPUExecutionProvider"], ["CPUExecutionProvider"]),
    ("CUDAExecutionProvider, CPUExecutionProvider", ALL, ["CUDAExecutionProvider", "CPUExecutionProvider"]),
])
def test_provider_selection(requested, available, chosen):
    assert select_providers(requested, available) == chosen


def test_unavailable_explicit_provider_is_an_error_not_a_fallback():
    with pytest.raises(FailedPrecondition) as exc:
        select_providers("TensorrtExecutionProvider,CPUExecutionProvider", ["CPUExecutionProvider"])
    assert "TensorrtExecutionProvider" in str(exc.value) and "available: CPUExecutionProvider" in str(exc.value)


def test_decode_scrfd_finds_the_planted_face():
    boxes, scores, kps = decode_scrfd(sp.scrfd_outputs(), (sp.DET_SIZE, sp.DET_SIZE), 0.5)
    assert scores.tolist() == pytest.approx([sp.PLANTED_SCORE])
    cx, cy = sp.PLANTED_CENTRE
    left, t, r, b = sp.PLANTED_DISTANCES * sp.PLANTED_STRIDE
    assert boxes[0].tolist() == pytest.approx([cx - left, cy - t, cx + r, cy + b])
    np.testing.assert_allclose(kps[0], sp.PLANTED_KPS * sp.PLANTED_STRIDE + [cx, cy], atol=1e-4)
    batched = [o[None] for o in sp.scrfd_outputs()]  # some exports keep a batch axis
    assert decode_scrfd(batched, (sp.DET_SIZE, sp.DET_SIZE), 0.5)[0].tolist() == boxes.tolist()


def test_full_run_on_a_synthetic_pack(tmp_path):
    repo = ModelRepository(tmp_path / "models", tmp_path / "cache")
    repo.register("buffalo_l", sp.write_pack(tmp_path / "src"), "face-pack", "insightface")
    pipeline = create_pipeline(settings(tmp_path))
    pipeline.load()
    assert pipeline.describe()["providers"] == "CPUExecutionProvider"
    pipeline.warmup()
    image = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)  # det scale 0.5
    found = pipeline.detect(image, ValidationPolicy(), with_embeddings=True)
    assert len(found.faces) == 1
    face = found.faces[0]
    cx, cy = sp.PLANTED_CENTRE
    left, t, r, b = sp.PLANTED_DISTANCES * sp.PLANTED_STRIDE
    assert [face.box.x_min, face.box.y_min, face.box.x_max, face.box.y_max] == pytest.approx(
        [2 * (cx - left), 2 * (cy - t), 2 * (cx + r), 2 * (cy + b)])
    m = face.landmarks
    # SCRFD's first point is the image-left eye: the subject's right eye
    assert m[Landmark.RIGHT_EYE][0] < m[Landmark.LEFT_EYE][0]
    assert m[Landmark.MOUTH_RIGHT][0] < m[Landmark.MOUTH_LEFT][0]
    assert m[Landmark.MOUTH_CENTER] == pytest.approx(((m[Landmark.MOUTH_LEFT][0] + m[Landmark.MOUTH_RIGHT][0]) / 2,
                                                      m[Landmark.MOUTH_LEFT][1]))
    assert face.pose is not None and face.embedding_model == "arcface-w600k-r50"
    assert face.embedding.shape == (512,) and abs(float(np.linalg.norm(face.embedding)) - 1) < 1e-5
