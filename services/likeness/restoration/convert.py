"""Protobuf <-> domain conversion of the restoration service.

A numeric option left at 0 takes its documented default (docs/api/restoration.md).
"""

from __future__ import annotations

import math

import numpy as np

from likeness.api.v1 import common_pb2, restoration_pb2
from likeness.core.errors import InvalidArgument, check_range
from likeness.restoration.compositing import DEFAULT_DILATION_PX, DEFAULT_FEATHER_SIGMA
from likeness.restoration.face_restore import FaceToRestore
from likeness.restoration.masks import FaceGeometry, MaskOptions, Rect, Region
from likeness.restoration.seams import seam_measure

DEFAULT_ALIGN = 8
DEFAULT_CROP_PADDING = 32
DEFAULT_FIDELITY = 0.5
REGIONS = {restoration_pb2.REGION_LEFT_EYE: Region.LEFT_EYE, restoration_pb2.REGION_RIGHT_EYE: Region.RIGHT_EYE,
           restoration_pb2.REGION_BOTH_EYES: Region.BOTH_EYES, restoration_pb2.REGION_FACE: Region.FACE}


def landmarks_of(pbs) -> dict[str, tuple[float, float]]:
    """`LANDMARK_KIND_LEFT_EYE` -> `left_eye`; unspecified kinds are ignored."""
    out = {}
    for lm in pbs:
        if lm.kind != common_pb2.LANDMARK_KIND_UNSPECIFIED:
            if lm.kind not in common_pb2.LandmarkKind.values():  # proto3 enums accept any int on the wire
                raise InvalidArgument("landmarks", f"kind {lm.kind} is not a known LandmarkKind")
            name = common_pb2.LandmarkKind.Name(lm.kind).removeprefix("LANDMARK_KIND_").lower()
            out[name] = (lm.point.x, lm.point.y)
    return out


def lids_of(pbs, side: str) -> tuple[tuple[float, float], ...] | None:
    """The closed lid contour of the subject's `side` eye (`left`/`right`): its lower lid then its
    upper lid reversed, from the repeated LANDMARK_KIND_<SIDE>_LOWER_LID / _UPPER_LID points in the
    order sent; None unless both lids have 2 or more points."""
    lower_kind = common_pb2.LandmarkKind.Value(f"LANDMARK_KIND_{side.upper()}_LOWER_LID")
    upper_kind = common_pb2.LandmarkKind.Value(f"LANDMARK_KIND_{side.upper()}_UPPER_LID")
    lower = [(lm.point.x, lm.point.y) for lm in pbs if lm.kind == lower_kind]
    upper = [(lm.point.x, lm.point.y) for lm in pbs if lm.kind == upper_kind]
    if len(lower) < 2 or len(upper) < 2:
        return None
    return tuple(lower + upper[::-1])


def box_of(msg, name: str) -> tuple[float, float, float, float] | None:
    if not msg.HasField(name):
        return None
    b = getattr(msg, name)
    return b.x_min, b.y_min, b.x_max, b.y_max


def rect_pb(r: Rect) -> common_pb2.Box:
    return common_pb2.Box(x_min=r.x0, y_min=r.y0, x_max=r.x1, y_max=r.y1)


def pixel_rect(box: tuple[float, float, float, float] | None, field: str) -> Rect | None:
    """A Box that must sit on whole pixels (RegionMask's crop boxes do)."""
    if box is None:
        return None
    if not all(math.isfinite(v) and abs(v - round(v)) < 1e-3 for v in box):
        raise InvalidArgument(field, f"{box} must have whole-pixel coordinates")
    return Rect(*(round(v) for v in box))


def seam_pb(base: np.ndarray, patch: np.ndarray, out: np.ndarray, mask: np.ndarray,
            box: Rect | None) -> restoration_pb2.Seam:
    """The composite's seam, with a crop patch placed in the base's frame first."""
    if box is not None:
        full = base.copy()
        full[box.slices] = patch
        patch = full
    s = seam_measure(base, patch, out, mask)
    return restoration_pb2.Seam(boundary_gradient=s.boundary_gradient, hard_gradient=s.hard_gradient,
                                max_step=s.max_step, reference_step=s.reference_step)


def feather_of(request: restoration_pb2.CompositeRequest) -> tuple[float, float]:
    """(feather_sigma, dilation_px) of a Composite call, defaults applied, checked."""
    sigma = request.feather_sigma or DEFAULT_FEATHER_SIGMA
    dilation = request.dilation_px or DEFAULT_DILATION_PX
    check_range(sigma, "feather_sigma", 0.0, 128.0, unit="px")
    check_range(dilation, "dilation_px", 0.0, 256.0, unit="px")
    return sigma, dilation


def restore_result_pb(index: int, done: tuple) -> restoration_pb2.RestoreResult:
    """(artifact, changed pixel count, their bounding box or None) -> RestoreResult."""
    artifact, count, box = done
    out = restoration_pb2.RestoreResult(index=index, image=artifact, changed_pixels=count)
    if box is not None:
        out.changed_box.CopyFrom(rect_pb(box))
    return out


def region_of(value: int) -> Region:
    if value not in REGIONS:
        raise InvalidArgument("region", f"{value} is not set or unknown; one of REGION_LEFT_EYE, "
                                        "REGION_RIGHT_EYE, REGION_BOTH_EYES, REGION_FACE")
    return REGIONS[value]


def mask_options(request: restoration_pb2.RegionMaskRequest) -> MaskOptions:
    return MaskOptions(padding_iod=request.padding_iod, padding_px=request.padding_px,
                       align=request.align or DEFAULT_ALIGN, crop_padding=request.crop_padding or DEFAULT_CROP_PADDING)


def geometry_of(item) -> FaceGeometry:
    eyes = landmarks_of(item.landmarks)
    return FaceGeometry(item.width, item.height, eyes.get("left_eye"), eyes.get("right_eye"),
                        face_box=box_of(item, "face_box"), left_eye_lids=lids_of(item.landmarks, "left"),
                        right_eye_lids=lids_of(item.landmarks, "right"))


def face_of(item) -> FaceToRestore:
    return FaceToRestore(box_of(item, "face_box"), landmarks_of(item.landmarks))


def fidelity_of(request: restoration_pb2.RestoreRequest) -> float:
    return request.fidelity if request.HasField("fidelity") else DEFAULT_FIDELITY


CONTROL_KINDS = {restoration_pb2.CONTROL_KIND_FACE_LANDMARKS: "face_landmarks",
                 restoration_pb2.CONTROL_KIND_CANNY: "canny"}
MAX_CONTROL_FACES = 32


def control_options(request: restoration_pb2.ControlImageRequest) -> dict:
    """kind, output size (0 keeps the photo's) and Canny thresholds of a ControlImage call, checked."""
    if request.kind not in CONTROL_KINDS:
        raise InvalidArgument("kind", f"{request.kind} is not set or unknown; CONTROL_KIND_FACE_LANDMARKS or "
                                      "CONTROL_KIND_CANNY")
    for name in ("width", "height"):
        value = getattr(request, name)
        if value and not 64 <= value <= 4096:
            raise InvalidArgument(name, f"{value} is outside [64, 4096] px (0 keeps the photo's size)")
    return {"kind": CONTROL_KINDS[request.kind], "width": request.width, "height": request.height,
            "low": request.canny_low if request.HasField("canny_low") else 100.0,
            "high": request.canny_high if request.HasField("canny_high") else 200.0}


def control_faces(item, field: str) -> list:
    """(box, landmarks) of each face of a ControlImage item."""
    if len(item.faces) > MAX_CONTROL_FACES:
        raise InvalidArgument(f"{field}.faces", f"{len(item.faces)} faces, over the limit of {MAX_CONTROL_FACES}")
    return [(box_of(f, "box"), landmarks_of(f.landmarks)) for f in item.faces]
