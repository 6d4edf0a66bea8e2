"""Validation rules on hand-made faces: each rejection reason, their order, and policy checks."""

from __future__ import annotations

import pytest

from likeness.core.errors import InvalidArgument
from likeness.detection.faces import Box, Face, Pose
from likeness.detection.validation import Rejection, ValidationPolicy, validate

POLICY = ValidationPolicy()  # 0.08, 45, 35, 0.6


def face(side=200.0, score=0.9, yaw=0.0, pitch=0.0, x=100.0) -> Face:
    return Face(box=Box(x, 100, x + side, 100 + side), score=score, landmarks={}, pose=Pose(yaw, pitch, 0.0))


@pytest.mark.parametrize("faces,reason,detail", [
    ([], Rejection.NO_FACE, "no face"),
    ([face(score=0.55)], Rejection.LOW_CONFIDENCE, "0.550 < 0.6"),
    ([face(), face(x=500)], Rejection.MULTIPLE_FACES, "2 faces"),
    ([face(side=70)], Rejection.FACE_TOO_SMALL, "0.070 < 0.08"),
    ([face(yaw=-50)], Rejection.TURNED_AWAY, "|yaw| 50.0 > 45"),
    ([face(pitch=40)], Rejection.TURNED_AWAY, "|pitch| 40.0 > 35"),
])
def test_each_rejection_reason(faces, reason, detail):
    verdict = validate(faces, 1500, 1000, POLICY)
    assert not verdict.accepted and verdict.reason is reason
    assert detail in verdict.detail


def test_one_usable_face_is_accepted_and_a_weak_second_face_does_not_count():
    verdict = validate([face(), face(x=500, score=0.52)], 1500, 1000, POLICY)
    assert verdict.accepted and verdict.reason is Rejection.NONE


def test_face_without_pose_skips_the_pose_check():
    f = Face(box=Box(0, 0, 300, 300), score=0.9, landmarks={}, pose=None)
    assert validate([f], 1000, 1000, POLICY).accepted


def test_request_overrides_replace_only_given_fields():
    p = POLICY.overridden(max_yaw=60.0, min_confidence=None)
    assert (p.max_yaw, p.min_confidence, p.max_pitch) == (60.0, 0.6, 35.0)
    assert validate([face(yaw=-50)], 1500, 1000, p).accepted


@pytest.mark.parametrize("field,value", [("min_face_fraction", 0.0), ("min_face_fraction", 1.5),
                                         ("max_yaw", -1.0), ("max_pitch", 91.0),
                                         ("min_confidence", 1.2), ("max_yaw", float("nan"))])
def test_policy_out_of_range_names_the_field(field, value):
    with pytest.raises(InvalidArgument) as exc:
        POLICY.overridden(**{field: value}).checked("policy")
    assert f"policy.{field}" in str(exc.value)
