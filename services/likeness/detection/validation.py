"""Face validation: does an image hold exactly one usable face?

Checks, in this order (the first failing one is the reason):
1. NO_FACE         the detector found nothing;
2. LOW_CONFIDENCE  faces were found, but none reaches `min_confidence`;
3. MULTIPLE_FACES  two or more faces reach `min_confidence` (however small: a second face in the
                   background still puts a second identity into a training image);
4. FACE_TOO_SMALL  the face box's shorter side / the image's shorter side < `min_face_fraction`;
5. TURNED_AWAY     |yaw| > `max_yaw` or |pitch| > `max_pitch` (skipped when no pose could be
                   estimated from the landmarks).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from enum import StrEnum

from likeness.core.errors import check_range
from likeness.detection.faces import Face


class Rejection(StrEnum):
    """Values are the suffixes of detection.proto's REJECTION_REASON_* names."""

    NONE = "UNSPECIFIED"
    NO_FACE = "NO_FACE"
    MULTIPLE_FACES = "MULTIPLE_FACES"
    FACE_TOO_SMALL = "FACE_TOO_SMALL"
    TURNED_AWAY = "TURNED_AWAY"
    LOW_CONFIDENCE = "LOW_CONFIDENCE"
    LOW_QUALITY = "LOW_QUALITY"


@dataclass(frozen=True)
class ValidationPolicy:
    min_face_fraction: float = 0.08
    max_yaw: float = 45.0  # degrees
    max_pitch: float = 35.0  # degrees
    min_confidence: float = 0.6

    def checked(self, field: str = "policy") -> ValidationPolicy:
        """Self, or InvalidArgument naming the offending field and its range."""
        if not (0.0 < self.min_face_fraction <= 1.0):
            check_range(self.min_face_fraction, f"{field}.min_face_fraction", 1e-6, 1.0)
        check_range(self.max_yaw, f"{field}.max_yaw", 0.0, 90.0, unit="degrees")
        check_range(self.max_pitch, f"{field}.max_pitch", 0.0, 90.0, unit="degrees")
        check_range(self.min_confidence, f"{field}.min_confidence", 0.0, 1.0)
        return self

    def overridden(self, **values: float | None) -> ValidationPolicy:
        """A copy with the given non-None values (a request's `optional` fields) replaced."""
        known = {f.name for f in fields(self)}
        return replace(self, **{k: v for k, v in values.items() if v is not None and k in known})


@dataclass(frozen=True)
class Verdict:
    accepted: bool
    reason: Rejection = Rejection.NONE
    detail: str = ""


def validate(faces: list[Face], width: int, height: int, policy: ValidationPolicy) -> Verdict:
    if not faces:
        return Verdict(False, Rejection.NO_FACE, "no face found")
    confident = [f for f in faces if f.score >= policy.min_confidence]
    if not confident:
        best = max(f.score for f in faces)
        return Verdict(False, Rejection.LOW_CONFIDENCE,
                       f"best face confidence {best:.3f} < {policy.min_confidence}")
    if len(confident) > 1:
        return Verdict(False, Rejection.MULTIPLE_FACES,
                       f"{len(confident)} faces with confidence >= {policy.min_confidence}")
    face = confident[0]
    fraction = min(face.box.width, face.box.height) / min(width, height)
    if fraction < policy.min_face_fraction:
        return Verdict(False, Rejection.FACE_TOO_SMALL,
                       f"face side fraction {fraction:.3f} < {policy.min_face_fraction}")
    if face.pose is not None:
        if abs(face.pose.yaw) > policy.max_yaw:
            return Verdict(False, Rejection.TURNED_AWAY, f"|yaw| {abs(face.pose.yaw):.1f} > {policy.max_yaw}")
        if abs(face.pose.pitch) > policy.max_pitch:
            return Verdict(False, Rejection.TURNED_AWAY, f"|pitch| {abs(face.pose.pitch):.1f} > {policy.max_pitch}")
    return Verdict(True)
