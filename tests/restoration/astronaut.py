"""Hand-measured landmarks of skimage's `astronaut` (512x512 portrait of Eileen Collins).

Read off an 8x nearest-neighbour enlargement with a 5 px grid: iris centres and the gap between
the lips; the face box runs from hairline to chin and cheek to cheek. Left/right are the SUBJECT's:
her left eye is on the image's right. Error about +-1.5 px; the embedded BlazeFace detector agrees
within 3 px (test_masks.py::test_masks_follow_the_detection_services_landmarks).
"""

from __future__ import annotations

from tests.photos import skimage_photo

LEFT_EYE = (246.0, 103.0)  # subject's left eye, image right
RIGHT_EYE = (205.0, 101.0)  # subject's right eye, image left
NOSE_TIP = (224.0, 127.0)
MOUTH_CENTER = (224.0, 146.0)
FACE_BOX = (160.0, 55.0, 290.0, 190.0)  # hairline to chin, cheek to cheek
IOD = 41.05


def photo():
    return skimage_photo("astronaut")
