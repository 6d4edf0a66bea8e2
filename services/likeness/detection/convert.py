"""Protobuf <-> domain conversion of the detection service."""

from __future__ import annotations

from likeness.api.v1 import common_pb2, detection_pb2
from likeness.detection.faces import Face
from likeness.detection.quality import QualityMeasures
from likeness.detection.validation import Verdict

POLICY_FIELDS = ("min_face_fraction", "max_yaw", "max_pitch", "min_confidence", "min_sharpness", "min_eye_openness")
WEIGHT_FIELDS = ("sharpness", "contrast", "exposure", "face_confidence")


def optional_fields(message, names) -> dict:
    """The fields of `names` that are set in `message` (proto3 `optional`), by name."""
    return {n: getattr(message, n) for n in names if message.HasField(n)}


def face_pb(face: Face) -> common_pb2.Face:
    b = face.box
    pb = common_pb2.Face(box=common_pb2.Box(x_min=b.x_min, y_min=b.y_min, x_max=b.x_max, y_max=b.y_max),
                         score=face.score, embedding_model=face.embedding_model)
    for kind, (x, y) in face.landmarks.items():
        pb.landmarks.add(kind=common_pb2.LandmarkKind.Value(f"LANDMARK_KIND_{kind.value}"),
                         point=common_pb2.Point(x=x, y=y))
    _add_eyes(pb, face)
    if face.pose is not None:
        pb.pose.CopyFrom(common_pb2.Pose(yaw=face.pose.yaw, pitch=face.pose.pitch, roll=face.pose.roll))
    if face.embedding is not None:
        pb.embedding.values.extend(face.embedding.tolist())
    return pb


def _add_eyes(pb: common_pb2.Face, face: Face) -> None:
    """Iris and lid landmarks and the openness of each eye the face mesh measured."""
    for side, eye in (("LEFT", face.left_eye), ("RIGHT", face.right_eye)):
        if eye is None:
            continue
        kind = common_pb2.LandmarkKind.Value
        pb.landmarks.add(kind=kind(f"LANDMARK_KIND_{side}_IRIS"), point=common_pb2.Point(x=eye.iris[0], y=eye.iris[1]))
        for name, contour in (("UPPER_LID", eye.upper_lid), ("LOWER_LID", eye.lower_lid)):
            for x, y in contour:
                pb.landmarks.add(kind=kind(f"LANDMARK_KIND_{side}_{name}"), point=common_pb2.Point(x=x, y=y))
        setattr(pb, f"{side.lower()}_eye_openness", eye.openness)


def verdict_pb(v: Verdict) -> detection_pb2.Verdict:
    return detection_pb2.Verdict(accepted=v.accepted, detail=v.detail,
                                 reason=detection_pb2.RejectionReason.Value(f"REJECTION_REASON_{v.reason.value}"))


def quality_pb(m: QualityMeasures, score: float) -> detection_pb2.Quality:
    return detection_pb2.Quality(
        sharpness_face=m.sharpness_face, sharpness_image=m.sharpness_image, contrast=m.contrast,
        brightness=m.brightness, shadows_clipped=m.shadows_clipped, highlights_clipped=m.highlights_clipped,
        face_confidence=m.face_confidence, score=score)


def outcome_label(v: Verdict) -> str:
    """The `outcome` label of `likeness_items_total` for a verdict."""
    return "accepted" if v.accepted else f"rejected_{v.reason.value.lower()}"


def fill_result(result, out) -> None:
    """Size, faces and verdict of a `Detection` or `Assessment` into a per-image result message."""
    result.width, result.height = out.width, out.height
    result.faces.extend(face_pb(f) for f in out.faces)
    result.verdict.CopyFrom(verdict_pb(out.verdict))
