"""The embedded detector on real photos that ship in packages (tests/photos.py)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from likeness.detection.faces import Landmark
from likeness.detection.validation import Rejection, ValidationPolicy
from tests.detection.conftest import flipped
from tests.photos import skimage_photo

POLICY = ValidationPolicy()


def test_astronaut_has_exactly_one_accepted_face(pipeline, astronaut):
    found = pipeline.detect(astronaut, POLICY)
    assert len(found.faces) == 1
    assert found.verdict.accepted, found.verdict
    face = found.faces[0]
    assert 0.8 < face.score <= 1.0
    # the face sits in the upper middle of the 512x512 photo
    assert 150 < face.box.x_min < face.box.x_max < 300 and 50 < face.box.y_min < face.box.y_max < 200
    assert (found.width, found.height) == (512, 512)


def test_group_photo_has_six_faces(pipeline, group):
    found = pipeline.detect(group, POLICY)
    assert len(found.faces) == 6
    assert [f.score for f in found.faces] == sorted((f.score for f in found.faces), reverse=True)
    assert found.verdict.reason is Rejection.MULTIPLE_FACES


@pytest.mark.parametrize("name", ["coffee", "rocket"])
def test_photos_without_people_have_no_face(pipeline, name):
    found = pipeline.detect(skimage_photo(name), POLICY)
    assert found.faces == []
    assert found.verdict.reason is Rejection.NO_FACE


def test_composite_of_two_portraits_is_rejected_as_multiple_faces(pipeline, astronaut, hanks):
    right = cv2.resize(hanks, (300, 300))
    canvas = np.full((512, 512 + 300, 3), 255, np.uint8)
    canvas[:, :512] = astronaut
    canvas[100:400, 512:] = right
    found = pipeline.detect(canvas, POLICY)
    assert len(found.faces) == 2
    assert found.verdict.reason is Rejection.MULTIPLE_FACES
    assert "2 faces" in found.verdict.detail


@pytest.mark.parametrize("layout", ["side_by_side", "stacked", "three_in_a_row"])
def test_composites_of_portraits_find_every_face(pipeline, astronaut, hanks, layout):
    camera = skimage_photo("camera")
    big_hanks = cv2.resize(hanks, (512, 512))
    image = {"side_by_side": lambda: np.hstack([astronaut, camera]),
             "stacked": lambda: np.vstack([astronaut, camera]),
             "three_in_a_row": lambda: np.hstack([astronaut, camera, big_hanks])}[layout]()
    faces = pipeline.find_faces(np.ascontiguousarray(image))
    assert len(faces) == (3 if layout == "three_in_a_row" else 2), [f.score for f in faces]
    # each face in its own panel, none duplicated across the overlapping tiles
    axis = 1 if layout != "stacked" else 0
    panels = sorted(int((f.box.x_min if axis else f.box.y_min) // 512) for f in faces)
    assert panels == list(range(len(faces)))


def test_landmarks_lie_in_their_box_with_the_subjects_sides(pipeline, astronaut, group):
    faces = pipeline.find_faces(astronaut) + pipeline.find_faces(group)
    assert len(faces) == 7
    for f in faces:
        m = f.landmarks
        assert set(m) >= {Landmark.LEFT_EYE, Landmark.RIGHT_EYE, Landmark.NOSE_TIP, Landmark.MOUTH_CENTER}
        assert len(m) >= 5
        for kind, point in m.items():  # the ear points too: the box is grown to hold them
            assert f.box.contains(*point), (kind, point, f.box)
        mouth_y = m[Landmark.MOUTH_CENTER][1]
        assert m[Landmark.LEFT_EYE][1] < mouth_y and m[Landmark.RIGHT_EYE][1] < mouth_y
        assert m[Landmark.NOSE_TIP][1] < mouth_y
    # subject's left eye is on the image's right for these (roughly frontal) faces
    a = faces[0].landmarks
    assert a[Landmark.LEFT_EYE][0] > a[Landmark.NOSE_TIP][0] > a[Landmark.RIGHT_EYE][0]


def test_horizontal_flip_negates_yaw_and_roll(pipeline, astronaut, group):
    # faces clearly turned or tilted, so the sign is meaningful: two of the group photo's faces,
    # and the astronaut rotated 12 degrees clockwise
    rotated = cv2.warpAffine(astronaut, cv2.getRotationMatrix2D((256, 256), -12, 1.0), (512, 512))
    cases = [(rotated, 0)] + [(group, i) for i in range(6)]
    turned = tilted = 0
    for image, i in cases:
        original = sorted(pipeline.find_faces(image), key=lambda f: f.box.x_min)[i]
        mirror = sorted(pipeline.find_faces(flipped(image)), key=lambda f: -f.box.x_max)[i]
        if abs(original.pose.yaw) > 10:
            assert np.sign(mirror.pose.yaw) == -np.sign(original.pose.yaw), (original.pose, mirror.pose)
            turned += 1
        if abs(original.pose.roll) > 5:
            assert np.sign(mirror.pose.roll) == -np.sign(original.pose.roll), (original.pose, mirror.pose)
            tilted += 1
    assert turned >= 3 and tilted >= 3  # the check really ran on several faces


def test_clockwise_tilt_gives_positive_roll(pipeline, astronaut):
    for degrees in (-15, 15):  # cv2: positive angle = counter-clockwise
        rotated = cv2.warpAffine(astronaut, cv2.getRotationMatrix2D((256, 256), degrees, 1.0), (512, 512))
        roll = pipeline.find_faces(rotated)[0].pose.roll
        assert np.sign(roll) == -np.sign(degrees) and abs(roll) > 8, (degrees, roll)


def test_face_filling_the_frame_is_still_found(pipeline, astronaut, hanks):
    # an aligned 112x112 face crop: the face fills ~75% of the frame (BlazeFace alone finds nothing)
    found = pipeline.detect(hanks, POLICY)
    assert len(found.faces) == 1 and found.verdict.accepted, found.verdict
    # a tight crop of the astronaut's face (the box fills ~100% of the frame), upscaled
    box = pipeline.find_faces(astronaut)[0].box
    crop = astronaut[int(box.y_min):int(box.y_max), int(box.x_min):int(box.x_max)]
    crop = cv2.resize(crop, (400, 400))
    faces = pipeline.find_faces(crop)
    assert len(faces) == 1
    assert faces[0].box.width > 0.6 * 400 and faces[0].box.contains(*faces[0].landmarks[Landmark.NOSE_TIP])


def test_a_detection_seen_in_one_view_only_is_dropped(pipeline):
    # the coffee photo, centre-cropped and upscaled to 1024: BlazeFace alone reports a 0.54 "face"
    # that its mirror image does not show; flip averaging halves its score below min_score
    coffee = skimage_photo("coffee")[:, 100:500]
    big = np.ascontiguousarray(cv2.resize(coffee, (1024, 1024), interpolation=cv2.INTER_CUBIC))
    single_view = pipeline.detector.detect(big)
    assert len(single_view) == 1 and single_view[0].score < 0.6
    assert pipeline.find_faces(big) == []


def test_merge_sightings_averages_pairs_and_halves_single_views():
    from likeness.detection.faces import Box, Face
    from likeness.detection.pipeline import merge_sightings

    a = Face(Box(0, 0, 10, 10), 0.8, {Landmark.NOSE_TIP: (5, 5)})
    b = Face(Box(2, 0, 12, 10), 0.6, {Landmark.NOSE_TIP: (7, 5)})
    lone = Face(Box(50, 50, 60, 60), 0.9, {})
    merged = merge_sightings([a, lone], [b])
    assert merged[0].box == Box(1, 0, 11, 10) and merged[0].score == pytest.approx(0.7)
    assert merged[0].landmarks[Landmark.NOSE_TIP] == (6, 5)
    assert merged[1].box == lone.box and merged[1].score == pytest.approx(0.45)
