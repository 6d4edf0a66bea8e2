"""Eye-openness calibration on open eyes and SYNTHETICALLY CLOSED eyes.

    python bench/eyes.py

No package ships photos of people with closed eyes, so closed eyes are built offline from the open
ones (a stand-in, named as one wherever its numbers appear): the eye opening (the iris model's lid
contours, grown by 2 px) is painted over with the surrounding skin (OpenCV Telea inpainting) and a
dark lash line is drawn where the lids meet (along the lower lid, 1/14 of the eye's width thick).
Each face of the set is measured open (as photographed, 200 px face) and closed; the printed
table gives the eye aspect ratio (EAR) of both and the openness the calibrated mapping gives
(mesh.EAR_CLOSED / EAR_OPEN). Faces are split like bench/face_set.py (tune / held_out people).
Nothing is timed and the measures are deterministic, so the faces are measured once.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "services"))
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def close_eyes(rgb: np.ndarray, face) -> np.ndarray:
    """The photo with both of the face's eyes painted shut (needs face.left_eye / right_eye)."""
    out = np.ascontiguousarray(rgb.copy())
    mask = np.zeros(out.shape[:2], np.uint8)
    lines = []
    for eye in (face.left_eye, face.right_eye):
        contour = np.array(eye.lower_lid + tuple(reversed(eye.upper_lid)), np.float64)
        width = float(np.linalg.norm(np.subtract(eye.lower_lid[0], eye.lower_lid[-1])))
        cv2.fillPoly(mask, [np.round(contour).astype(np.int32)], 255)
        lines.append((np.round(np.array(eye.lower_lid)).astype(np.int32), max(1, round(width / 14))))
    mask = cv2.dilate(mask, np.ones((5, 5), np.uint8))
    out = cv2.inpaint(out, mask, 5, cv2.INPAINT_TELEA)
    for points, thickness in lines:
        cv2.polylines(out, [points], False, (45, 35, 30), thickness, cv2.LINE_AA)
    return out


def main() -> None:
    from bench.face_set import FACES, portrait
    from bench.machine import Machine
    from likeness.client.demo_set import PARTNER
    from likeness.detection.backends.factory import create_pipeline
    from likeness.detection.mesh import EAR_CLOSED, EAR_OPEN
    from likeness.detection.settings import DetectionSettings

    machine = Machine()  # no timings here, but the machine stays with every figure
    pipeline = create_pipeline(DetectionSettings(detection_identity="none"))
    pipeline.load()
    people = [(split, p) for split, ps in FACES.items() for p in ps]
    rows = []
    print(f"EAR_CLOSED {EAR_CLOSED}, EAR_OPEN {EAR_OPEN}; closed = synthetic (painted shut)\n")
    print(f"{'face':<20}{'split':<10}{'EAR open (L/R)':>18}{'EAR shut (L/R)':>18}{'openness open':>16}{'shut':>12}")
    for split, p in people:
        image = portrait(p, 200) if p is not PARTNER else p.crop(1.4, 300)  # a tight 112 px source
        face = pipeline.find_faces(image)[0]
        shut = pipeline.find_faces(close_eyes(image, face))[0]
        row = {"face": p.name, "split": split,
               "ear_open": [face.left_eye.aspect_ratio, face.right_eye.aspect_ratio],
               "ear_shut": [shut.left_eye.aspect_ratio, shut.right_eye.aspect_ratio],
               "open": (face.left_eye.openness + face.right_eye.openness) / 2,
               "shut": (shut.left_eye.openness + shut.right_eye.openness) / 2}
        rows.append(row)
        pair = lambda v: f"{v[0]:.3f} / {v[1]:.3f}"  # noqa: E731
        print(f"{p.name:<20}{split:<10}{pair(row['ear_open']):>18}{pair(row['ear_shut']):>18}"
              f"{row['open']:>16.2f}{row['shut']:>12.2f}")
    print(json.dumps({"bench": "eyes", "rows": rows, "machine": machine.done()}))


if __name__ == "__main__":
    main()
