"""The open_eyes job's work crop: its rectangle, the face moved into its coordinates, and the
repaired crop put back with a plain copy that refuses a crop whose inner edge changed (that edge
would be a seam)."""

from __future__ import annotations

import numpy as np
import pytest

from likeness.api.v1 import common_pb2
from likeness.orchestrator.workflows.work_crop import CropEdgeChanged, face_crop, in_crop, place_back

LM = common_pb2.LandmarkKind


def test_the_crop_is_the_face_box_grown_per_side_and_clamped_to_the_frame():
    box = common_pb2.Box(x_min=100.4, y_min=50.0, x_max=200.0, y_max=170.0)  # longer side 120
    assert face_crop(box, 1000, 1000, 0.5) == (40, 0, 260, 230)  # 60 px a side; the top clamped at 0
    assert face_crop(box, 240, 200, 0.5) == (40, 0, 240, 200)
    assert face_crop(box, 1000, 1000) == (58, 8, 242, 212)  # the default margin, 0.35: 42 px a side


def test_the_face_moves_into_crop_coordinates_and_the_source_face_stays():
    face = common_pb2.Face(box=common_pb2.Box(x_min=110, y_min=60, x_max=190, y_max=160), left_eye_openness=0.3)
    face.landmarks.add(kind=LM.LANDMARK_KIND_LEFT_EYE, point=common_pb2.Point(x=170, y=100))
    local = in_crop(face, (40, 20, 260, 230))
    assert (local.box.x_min, local.box.y_min, local.box.x_max, local.box.y_max) == (70, 40, 150, 140)
    assert (local.landmarks[0].point.x, local.landmarks[0].point.y) == (130, 80)
    assert local.left_eye_openness == pytest.approx(0.3) and face.box.x_min == 110  # a copy


def frame_and_crop():
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)
    crop = (30, 20, 110, 90)
    repaired = frame[20:90, 30:110].copy()
    repaired[10:60, 10:70] = 7  # changed strictly inside the crop
    return frame, crop, repaired


def test_the_repaired_crop_goes_back_exactly_and_nothing_else_changes():
    frame, crop, repaired = frame_and_crop()
    before = frame.copy()
    place_back(frame, crop, repaired)
    assert np.array_equal(frame[20:90, 30:110], repaired)
    outside = np.ones(frame.shape[:2], bool)
    outside[20:90, 30:110] = False
    assert np.array_equal(frame[outside], before[outside])


@pytest.mark.parametrize("edge", [(slice(None), 0), (slice(None), -1), (0, slice(None)), (-1, slice(None))])
def test_a_change_on_an_inner_edge_of_the_crop_is_refused(edge):
    frame, crop, repaired = frame_and_crop()
    before = frame.copy()
    repaired[edge] = 255 - repaired[edge]
    with pytest.raises(CropEdgeChanged):
        place_back(frame, crop, repaired)
    assert np.array_equal(frame, before)  # nothing was written


def test_an_edge_on_the_frames_border_may_change():
    frame, _, _ = frame_and_crop()
    repaired = frame[0:90, 0:110].copy()
    repaired[0, :-1] = 0  # the frame's top row and left column: no neighbour outside the crop
    repaired[:-1, 0] = 0
    place_back(frame, (0, 0, 110, 90), repaired)
    assert (frame[0, :109] == 0).all() and (frame[:89, 0] == 0).all()
    with pytest.raises(CropEdgeChanged):  # its right edge is inside the frame
        bad = frame[0:90, 0:110].copy()
        bad[:, -1] = 255 - bad[:, -1]
        place_back(frame, (0, 0, 110, 90), bad)


def test_the_first_guess_reaches_past_the_eyes_by_the_inpaint_regions_usual_reach():
    from likeness.orchestrator.workflows.work_crop import EYE_REACH_IOD, EYE_REACH_PX, first_guess

    face = common_pb2.Face(box=common_pb2.Box(x_min=400, y_min=300, x_max=600, y_max=520))
    assert first_guess(face, 1000, 1000) == face_crop(face.box, 1000, 1000)  # no eyes: the face's crop
    face.landmarks.add(kind=LM.LANDMARK_KIND_LEFT_EYE, point=common_pb2.Point(x=550, y=380))
    face.landmarks.add(kind=LM.LANDMARK_KIND_RIGHT_EYE, point=common_pb2.Point(x=450, y=380))
    reach = EYE_REACH_IOD * 100 + EYE_REACH_PX
    x0, y0, x1, y1 = first_guess(face, 1000, 1000)
    assert (x0, x1) == (int(450 - reach), int(550 + reach)) and y0 == min(int(380 - reach), 223) and y1 == 597
    assert first_guess(face, 600, 600)[2:] == (600, 597)  # clamped to the frame
