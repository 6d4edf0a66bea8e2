"""The gates of validation and Assess: their order (size before confidence), the blur gate on the
face normalised to 128x128 and monotonic along blur and contrast ladders, and every gate's limit
printed as it was set."""

from __future__ import annotations

import numpy as np
import pytest

from bench.face_set import FACES, portrait
from likeness.detection.faces import Box, Eye, Face, Pose
from likeness.detection.quality import QualityWeights
from likeness.detection.validation import (
    DEFAULT_MIN_SHARPNESS,
    Rejection,
    ValidationPolicy,
    limit_text,
    validate,
)
from likeness.orchestrator.demo_set import blurred, contrast

WEIGHTS = QualityWeights()
f32 = lambda v: float(np.float32(v))  # noqa: E731 - what a protobuf `float` field hands over


def face(side: float, score: float, x: float = 10, yaw: float = 0.0, openness: float | None = None) -> Face:
    eye = None if openness is None else Eye(((0, 0),) * 7, ((0, 0),) * 9, (0, 0), 0.2, openness)
    return Face(Box(x, 10, x + side, 10 + side), score, {}, Pose(yaw, 0, 0), left_eye=eye, right_eye=eye)


def test_size_is_decided_before_confidence():
    policy = ValidationPolicy()
    # a 30 px face at 0.55 in a 640 px image: too small, not "low confidence"
    v = validate([face(30, 0.55)], 640, 640, policy)
    assert v.reason is Rejection.FACE_TOO_SMALL and v.detail == "face side fraction 0.047 < 0.08"
    # a large face at 0.55 is low confidence; two confident faces are multiple, however small
    assert validate([face(300, 0.55)], 640, 640, policy).reason is Rejection.LOW_CONFIDENCE
    assert validate([face(20, 0.9), face(20, 0.8, x=300)], 640, 640, policy).reason is Rejection.MULTIPLE_FACES
    assert validate([], 640, 640, policy).reason is Rejection.NO_FACE


def test_every_gate_prints_its_limit_as_set():
    policy = ValidationPolicy(f32(0.15), f32(33.3), f32(35), f32(0.65), f32(7.7), f32(0.45))
    cases = [
        ([face(300, 0.9), face(300, 0.7, x=320)], "2 faces with confidence >= 0.65"),
        ([face(40, 0.9)], "face side fraction 0.062 < 0.15"),
        ([face(300, 0.6)], "best face confidence 0.600 < 0.65"),
        ([face(300, 0.9, yaw=40)], "|yaw| 40.0 > 33.3"),
        ([face(300, 0.9, openness=0.2)], "eye openness 0.200 < 0.45"),
    ]
    for faces, detail in cases:
        assert validate(faces, 640, 640, policy).detail == detail
    assert limit_text(f32(0.45)) == "0.45" and limit_text(f32(1e-5)) == "1e-05"


def test_eye_gate_is_off_by_default_and_skipped_without_eye_measures():
    assert validate([face(300, 0.9, openness=0.0)], 640, 640, ValidationPolicy()).accepted
    assert validate([face(300, 0.9)], 640, 640, ValidationPolicy(min_eye_openness=0.5)).accepted


@pytest.fixture(scope="module")
def tune_faces():
    return FACES["tune"]


@pytest.mark.slow  # ~30 assessments
def test_blur_gate_depends_on_blur_relative_to_the_face_not_its_size(mesh_pipeline, tune_faces):
    policy = ValidationPolicy()
    assert policy.min_sharpness == DEFAULT_MIN_SHARPNESS > 0  # on by default
    for p in tune_faces[:2]:
        sharpness = {}
        for side in (90, 230):
            ladder = [blurred(portrait(p, side), rel * side) if rel else portrait(p, side)
                      for rel in (0, 0.004, 0.012, 0.025, 0.04)]
            found = [mesh_pipeline.assess(img, policy, WEIGHTS) for img in ladder]
            values = [a.quality.sharpness_face for a in found]
            # monotonic along the ladder, whatever the face size
            assert all(a > b for a, b in zip(values, values[1:], strict=False)), (p.name, side, values)
            assert found[0].verdict.accepted and found[1].verdict.accepted, (p.name, side)
            assert not found[3].verdict.accepted and not found[4].verdict.accepted, (p.name, side)
            blurry = found[3]
            if blurry.verdict.reason is Rejection.BLURRY:
                assert blurry.verdict.detail == f"face sharpness {values[3]:.1f} < 9"
            sharpness[side] = values
        # the same relative blur measures alike at both sizes (within 2.5x), unlike in face pixels
        # (steps where a face is still found at both sizes)
        pairs = [(a, b) for a, b in zip(sharpness[90], sharpness[230], strict=True) if a > 0 and b > 0]
        assert len(pairs) >= 4
        for small, large in pairs:
            assert 1 / 2.5 < small / large < 2.5, (p.name, sharpness)


def test_combined_score_is_monotonic_along_blur_and_contrast_ladders(mesh_pipeline, tune_faces):
    base = portrait(tune_faces[0], 150)
    ladders = {"blur": [base] + [blurred(base, s) for s in (0.6, 1.2, 2.4, 4.8)],
               "contrast": [base] + [contrast(base, f) for f in (0.8, 0.6, 0.4, 0.2)]}
    no_gate = ValidationPolicy(min_sharpness=0)
    for name, ladder in ladders.items():
        scores = [mesh_pipeline.assess(img, no_gate, WEIGHTS).score for img in ladder]
        assert all(a > b for a, b in zip(scores, scores[1:], strict=False)), (name, scores)


def test_small_face_on_a_scene_is_too_small(mesh_pipeline):
    from bench.face_set import _small

    # a 30 px face on a 640 px scene: found, but under the confidence gate (it would have been
    # LOW_CONFIDENCE before size came first)
    a = mesh_pipeline.assess(_small(FACES["tune"][0], 30, "coffee"), ValidationPolicy(), WEIGHTS)
    assert a.faces and a.faces[0].score < ValidationPolicy().min_confidence
    assert a.verdict.reason is Rejection.FACE_TOO_SMALL, a.verdict
