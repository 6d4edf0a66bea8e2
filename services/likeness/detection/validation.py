"""Face validation: does an image hold exactly one usable face?

Gates, in this order (the first failing one is the reason):
1. NO_FACE         the detector found nothing (at its floor, `min_score`);
2. MULTIPLE_FACES  two or more faces reach `min_confidence` (however small: a second face in the
                   background still puts a second identity into a training image);
3. FACE_TOO_SMALL  the face (the confident one, else the best-scoring one) has a box whose shorter
                   side / the image's shorter side < `min_face_fraction`. Size comes BEFORE
                   confidence: small faces score low, and a 40 px face that scores 0.55 is too
                   small, not "maybe no face";
4. FACE_CUT_OFF    over `max_cut_off` of the face lies outside the image: the share of the face
                   mesh's box (the mesh places every point of a face, also those beyond the frame)
                   that the image does not hold (skipped when the mesh did not measure the face).
                   Before confidence for the same reason as size: a face cut by the frame scores
                   low, and it is cut, not "maybe no face";
5. LOW_CONFIDENCE  no face reaches `min_confidence`;
6. TURNED_AWAY     |yaw| > `max_yaw` or |pitch| > `max_pitch` (skipped when no pose could be
                   estimated from the landmarks);
7. EYES_CLOSED     `min_eye_openness` > 0 and the mean openness of the face's two eyes is under it
                   (skipped when the eyes were not measured: no face mesh);
then, in Assess only (pipeline.py), on the measured quality:
8. BLURRY          face sharpness (on the face normalised to 128x128) < `min_sharpness` (0: off);
9. LOW_QUALITY     combined score < the request's `min_quality` (when set).

Every detail prints the measured value and the limit as it was set (`limit_text`).
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
    BLURRY = "BLURRY"
    EYES_CLOSED = "EYES_CLOSED"
    FACE_CUT_OFF = "FACE_CUT_OFF"


# Calibrated on the tuning part of bench/face_set.py (bench/faces.py --calibrate): sharp faces
# (no blur up to sigma 0.004 face sides, contrast down to x0.35) measure >= 13.3, faces blurred by
# sigma >= 0.025 face sides <= 6.0 wherever a face is still found; 9 is about their geometric mean.
DEFAULT_MIN_SHARPNESS = 9.0
# Crops that keep ~45% of a face's width have 51-64% of its mesh box outside the image; every other
# face of bench/face_set.py has 0% (its tuning part has no faces between). 0.2: a face missing a
# fifth of itself (a chin or a cheek cut by the frame) is not a usable face, a forehead grazing the
# top edge is. A check, not a calibration: the six people of the set cropped to 1.1 face sides (the
# frame hugging the face) measure up to 0.14 and are all kept.
DEFAULT_MAX_CUT_OFF = 0.2


def limit_text(value: float) -> str:
    """A limit as the caller set it: a float32 from protobuf (0.44999998807907104) prints as 0.45."""
    return f"{float(value):.6g}"


@dataclass(frozen=True)
class ValidationPolicy:
    min_face_fraction: float = 0.08
    max_yaw: float = 45.0  # degrees
    max_pitch: float = 35.0  # degrees
    min_confidence: float = 0.6
    min_sharpness: float = DEFAULT_MIN_SHARPNESS  # Assess only; 0 disables
    min_eye_openness: float = 0.0  # 0 disables
    max_cut_off: float = DEFAULT_MAX_CUT_OFF  # 1 disables

    def checked(self, field: str = "policy") -> ValidationPolicy:
        """Self, or InvalidArgument naming the offending field and its range."""
        if not (0.0 < self.min_face_fraction <= 1.0):
            check_range(self.min_face_fraction, f"{field}.min_face_fraction", 1e-6, 1.0)
        check_range(self.max_yaw, f"{field}.max_yaw", 0.0, 90.0, unit="degrees")
        check_range(self.max_pitch, f"{field}.max_pitch", 0.0, 90.0, unit="degrees")
        check_range(self.min_confidence, f"{field}.min_confidence", 0.0, 1.0)
        check_range(self.min_sharpness, f"{field}.min_sharpness", 0.0, 1e6)
        check_range(self.min_eye_openness, f"{field}.min_eye_openness", 0.0, 1.0)
        check_range(self.max_cut_off, f"{field}.max_cut_off", 0.0, 1.0)
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


def eye_openness(face: Face) -> float | None:
    """Mean openness of the face's two eyes, or None when they were not measured."""
    if face.left_eye is None or face.right_eye is None:
        return None
    return (face.left_eye.openness + face.right_eye.openness) / 2


def validate(faces: list[Face], width: int, height: int, policy: ValidationPolicy) -> Verdict:
    if not faces:
        return Verdict(False, Rejection.NO_FACE, "no face found")
    confident = [f for f in faces if f.score >= policy.min_confidence]
    if len(confident) > 1:
        return Verdict(False, Rejection.MULTIPLE_FACES,
                       f"{len(confident)} faces with confidence >= {limit_text(policy.min_confidence)}")
    face = confident[0] if confident else max(faces, key=lambda f: f.score)
    fraction = min(face.box.width, face.box.height) / min(width, height)
    if fraction < policy.min_face_fraction:
        return Verdict(False, Rejection.FACE_TOO_SMALL,
                       f"face side fraction {fraction:.3f} < {limit_text(policy.min_face_fraction)}")
    if face.cut_off is not None and face.cut_off > policy.max_cut_off:
        return Verdict(False, Rejection.FACE_CUT_OFF,
                       f"face share outside the image {face.cut_off:.3f} > {limit_text(policy.max_cut_off)}")
    turned = _turned_away(face, policy)
    if turned and face.measured_by_mesh:
        return turned
    if not confident:
        return Verdict(False, Rejection.LOW_CONFIDENCE,
                       f"best face confidence {face.score:.3f} < {limit_text(policy.min_confidence)}")
    if turned:
        return turned
    openness = eye_openness(face)
    if policy.min_eye_openness > 0 and openness is not None and openness < policy.min_eye_openness:
        return Verdict(False, Rejection.EYES_CLOSED,
                       f"eye openness {openness:.3f} < {limit_text(policy.min_eye_openness)}")
    return Verdict(True)


def _turned_away(face: Face, policy: ValidationPolicy) -> Verdict | None:
    if face.pose is None:
        return None
    if abs(face.pose.yaw) > policy.max_yaw:
        return Verdict(False, Rejection.TURNED_AWAY, f"|yaw| {abs(face.pose.yaw):.1f} > {limit_text(policy.max_yaw)}")
    if abs(face.pose.pitch) > policy.max_pitch:
        return Verdict(False, Rejection.TURNED_AWAY,
                       f"|pitch| {abs(face.pose.pitch):.1f} > {limit_text(policy.max_pitch)}")
    return None
