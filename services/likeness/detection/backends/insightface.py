"""InsightFace backend: SCRFD detection and ArcFace identity from a `buffalo_l`-style model pack,
run with ONNX Runtime directly (the `insightface` package would download packs at run time).

Pack layout (a folder of the model repository, `<repository>/<pack>/`):
    model.yaml          kind: face-pack, backend: insightface, files: [...], digest
    det_10g.onnx        SCRFD-10GF detector with 5 keypoints (input 1x3xHxW, RGB, (x-127.5)/128)
    w600k_r50.onnx      ArcFace ResNet-50 trained on WebFace600K (input 1x3x112x112, RGB,
                        (x-127.5)/127.5, output 512-d)
Other files of the original pack (1k3d68, 2d106det, genderage) are not used and may be absent.
The InsightFace packs' weights are licensed for non-commercial research only: a deployment brings
its own licensed pack; nothing here downloads one.

Execution providers: `auto` picks TensorRT, then CUDA, then CPU, keeping those this onnxruntime
build offers; an explicit list must be available as given (no silent fallback).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from likeness.core.errors import FailedPrecondition, ModelMissing
from likeness.detection.faces import Box, Face, Landmark, l2_normalise

DETECTOR_FILE = "det_10g.onnx"
RECOGNITION_FILE = "w600k_r50.onnx"
PREFERRED_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")

STRIDES = (8, 16, 32)
ANCHORS_PER_CELL = 2
NMS_IOU = 0.4

# SCRFD's keypoint order is by image side: the image-left eye is the subject's right eye.
SCRFD_KEYPOINTS = (Landmark.RIGHT_EYE, Landmark.LEFT_EYE, Landmark.NOSE_TIP,
                   Landmark.MOUTH_RIGHT, Landmark.MOUTH_LEFT)

# ArcFace's 112x112 alignment template (insightface.utils.face_align.arcface_dst), same order.
ARCFACE_TEMPLATE = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                             [41.5493, 92.3655], [70.7299, 92.2041]], dtype=np.float32)


@dataclass(frozen=True)
class PackPaths:
    folder: Path
    detector: Path
    recognition: Path


def resolve_pack(folder: Path, pack: str, need_recognition: bool = True) -> PackPaths:
    """The pack's model files, or ModelMissing naming every missing one."""
    folder = Path(folder)
    paths = PackPaths(folder, folder / DETECTOR_FILE, folder / RECOGNITION_FILE)
    wanted = [paths.detector] + ([paths.recognition] if need_recognition else [])
    missing = [str(p) for p in wanted if not p.is_file()]
    if missing:
        raise ModelMissing(pack, missing, f"put an InsightFace '{pack}' pack ({DETECTOR_FILE}, "
                                          f"{RECOGNITION_FILE}) into the model repository")
    return paths


def select_providers(requested: str, available: list[str], device: str = "auto") -> list[str]:
    """ONNX Runtime providers to use, best first. `auto`: the preferred ones that are available.
    `device` (LIKENESS_DETECTION_DEVICE): `cpu` drops the GPU providers; `cuda[:N]` requires one
    (a GPU pod that would silently run on its CPU fails instead); `auto` takes what is there."""
    if requested.strip().lower() == "auto":
        chosen = [p for p in PREFERRED_PROVIDERS if p in available] or list(available)
    else:
        chosen = [p.strip() for p in requested.split(",") if p.strip()]
        missing = [p for p in chosen if p not in available]
        if not chosen or missing:
            raise FailedPrecondition("LIKENESS_DETECTION_PROVIDERS",
                                     f"provider(s) {', '.join(missing) or '(none)'} not available in this "
                                     f"onnxruntime build; available: {', '.join(available)}")
    if device == "cpu":
        return [p for p in chosen if p not in GPU_PROVIDERS] or ["CPUExecutionProvider"]
    if device.startswith("cuda") and not any(p in GPU_PROVIDERS for p in chosen):
        raise FailedPrecondition("LIKENESS_DETECTION_DEVICE",
                                 f"{device} needs CUDAExecutionProvider or TensorrtExecutionProvider; the providers "
                                 f"are {', '.join(chosen)} (this onnxruntime build has {', '.join(available)})")
    return chosen


def _session(path: Path, providers: list[str], threads: int, device: str = "auto"):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    index = int(device.split(":")[1]) if device.startswith("cuda:") else 0
    placed = [(p, {"device_id": index}) if p in GPU_PROVIDERS else p for p in providers]
    return ort.InferenceSession(str(path), sess_options=options, providers=placed)


def anchor_centres(height: int, width: int, stride: int) -> np.ndarray:
    """(H/s * W/s * 2, 2) anchor centres in input pixels, row-major, two anchors per cell (SCRFD)."""
    ys, xs = np.mgrid[: height // stride, : width // stride]
    centres = np.stack([xs, ys], axis=-1).reshape(-1, 2).astype(np.float32) * stride
    return np.repeat(centres, ANCHORS_PER_CELL, axis=0)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> list[int]:
    order = np.argsort(-scores)
    keep: list[int] = []
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    while order.size:
        i = order[0]
        keep.append(int(i))
        rest = order[1:]
        w = np.clip(np.minimum(boxes[i, 2], boxes[rest, 2]) - np.maximum(boxes[i, 0], boxes[rest, 0]), 0, None)
        h = np.clip(np.minimum(boxes[i, 3], boxes[rest, 3]) - np.maximum(boxes[i, 1], boxes[rest, 1]), 0, None)
        inter = w * h
        iou = inter / np.maximum(areas[i] + areas[rest] - inter, 1e-12)
        order = rest[iou <= iou_threshold]
    return keep


def decode_scrfd(outputs: list[np.ndarray], input_hw: tuple[int, int], threshold: float
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """SCRFD's 9 outputs (scores, box distances, keypoint offsets for strides 8, 16, 32; with or
    without a leading batch axis) -> boxes (N, 4), scores (N,), keypoints (N, 5, 2) in input
    pixels after NMS."""
    n = len(STRIDES)
    if len(outputs) != 3 * n:
        raise FailedPrecondition("model", f"SCRFD model has {len(outputs)} outputs; expected {3 * n} "
                                          "(scores, boxes and keypoints for strides 8, 16, 32)")
    outputs = [o[0] if o.ndim == 3 else o for o in outputs]
    all_boxes, all_scores, all_kps = [], [], []
    for k, stride in enumerate(STRIDES):
        scores = outputs[k].reshape(-1)
        dist = outputs[k + n].reshape(-1, 4) * stride
        kps = outputs[k + 2 * n].reshape(-1, 10) * stride
        centres = anchor_centres(input_hw[0], input_hw[1], stride)
        keep = np.flatnonzero(scores >= threshold)
        if keep.size == 0:
            continue
        c = centres[keep]
        all_boxes.append(np.concatenate([c - dist[keep, :2], c + dist[keep, 2:]], axis=1))
        all_scores.append(scores[keep])
        all_kps.append(kps[keep].reshape(-1, 5, 2) + c[:, None, :])
    if not all_scores:
        return np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0, 5, 2), np.float32)
    boxes, scores, kps = np.concatenate(all_boxes), np.concatenate(all_scores), np.concatenate(all_kps)
    keep = nms(boxes, scores, NMS_IOU)
    return boxes[keep], scores[keep], kps[keep]


class ScrfdDetector:
    name = "insightface"

    def __init__(self, pack_dir: Path, pack: str = "buffalo_l", providers: str = "auto",
                 det_size: int = 640, min_score: float = 0.5, threads: int = 1, need_recognition: bool = True,
                 device: str = "auto"):
        self.pack_dir, self.pack, self.requested, self.device = Path(pack_dir), pack, providers, device
        self.det_size, self.min_score, self.threads = det_size, min_score, threads
        self.input_side = det_size
        self.need_recognition = need_recognition
        self.providers: list[str] = []
        self._session = None

    def load(self) -> None:
        import onnxruntime as ort

        paths = resolve_pack(self.pack_dir, self.pack, self.need_recognition)
        self.providers = select_providers(self.requested, ort.get_available_providers(), self.device)
        self._session = _session(paths.detector, self.providers, self.threads, self.device)
        self._input = self._session.get_inputs()[0].name

    def describe(self) -> dict:
        return {"detector": self.name, "detector_model": str(self.pack_dir / DETECTOR_FILE),
                "providers": ",".join(self.providers), "det_size": self.det_size, "min_score": self.min_score}

    def detect(self, rgb: np.ndarray, min_score: float | None = None) -> list[Face]:
        if self._session is None:
            self.load()
        height, width = rgb.shape[:2]
        size = self.det_size
        # keep the aspect ratio; the image sits in the top-left corner of a black square
        scale = size / max(height, width)
        new_w, new_h = max(1, int(width * scale)), max(1, int(height * scale))
        canvas = np.zeros((size, size, 3), dtype=np.uint8)
        canvas[:new_h, :new_w] = cv2.resize(rgb, (new_w, new_h))
        blob = ((canvas.astype(np.float32) - 127.5) / 128.0).transpose(2, 0, 1)[None]
        outputs = self._session.run(None, {self._input: blob})
        threshold = self.min_score if min_score is None else min_score
        boxes, scores, kps = decode_scrfd(outputs, (size, size), threshold)
        faces = []
        for box, score, points in zip(boxes / scale, scores, kps / scale, strict=True):
            marks = {kind: (float(x), float(y)) for kind, (x, y) in zip(SCRFD_KEYPOINTS, points, strict=True)}
            left, right = marks[Landmark.MOUTH_LEFT], marks[Landmark.MOUTH_RIGHT]
            marks[Landmark.MOUTH_CENTER] = ((left[0] + right[0]) / 2, (left[1] + right[1]) / 2)
            faces.append(Face(box=Box(*map(float, box)).clipped(width, height), score=float(score), landmarks=marks))
        return faces


def alignment_points(face: Face) -> tuple[np.ndarray, np.ndarray]:
    """(source points, template points) for the ArcFace similarity alignment. Uses the mouth
    corners when the detector gave them (SCRFD), else the mouth centre (BlazeFace)."""
    m = face.landmarks
    kinds = [Landmark.RIGHT_EYE, Landmark.LEFT_EYE, Landmark.NOSE_TIP]
    template = [ARCFACE_TEMPLATE[0], ARCFACE_TEMPLATE[1], ARCFACE_TEMPLATE[2]]
    if Landmark.MOUTH_RIGHT in m and Landmark.MOUTH_LEFT in m:
        kinds += [Landmark.MOUTH_RIGHT, Landmark.MOUTH_LEFT]
        template += [ARCFACE_TEMPLATE[3], ARCFACE_TEMPLATE[4]]
    elif Landmark.MOUTH_CENTER in m:
        kinds.append(Landmark.MOUTH_CENTER)
        template.append((ARCFACE_TEMPLATE[3] + ARCFACE_TEMPLATE[4]) / 2)
    missing = [k.value for k in kinds if k not in m]
    if missing:
        raise FailedPrecondition("landmarks", f"ArcFace alignment needs {', '.join(missing)}")
    return np.array([m[k] for k in kinds], np.float32), np.array(template, np.float32)


def align_face(rgb: np.ndarray, face: Face, size: int = 112) -> np.ndarray:
    src, dst = alignment_points(face)
    matrix, _ = cv2.estimateAffinePartial2D(src, dst, method=cv2.LMEDS)
    if matrix is None:
        raise FailedPrecondition("landmarks", "degenerate landmarks: no similarity transform to the template")
    return cv2.warpAffine(rgb, matrix, (size, size), borderValue=0.0)


class ArcFaceEncoder:
    name = "arcface-w600k-r50"
    dim = 512

    def __init__(self, pack_dir: Path, pack: str = "buffalo_l", providers: str = "auto", threads: int = 1,
                 device: str = "auto"):
        self.pack_dir, self.pack, self.requested, self.threads = Path(pack_dir), pack, providers, threads
        self.device = device
        self._session = None

    def load(self) -> None:
        import onnxruntime as ort

        paths = resolve_pack(self.pack_dir, self.pack, need_recognition=True)
        providers = select_providers(self.requested, ort.get_available_providers(), self.device)
        self._session = _session(paths.recognition, providers, self.threads, self.device)
        self._input = self._session.get_inputs()[0].name

    def embed(self, rgb: np.ndarray, faces: list[Face]) -> list[np.ndarray]:
        if self._session is None:
            self.load()
        if not faces:
            return []
        chips = np.stack([align_face(rgb, f) for f in faces]).astype(np.float32)
        blob = ((chips - 127.5) / 127.5).transpose(0, 3, 1, 2)
        vectors = np.concatenate([self._session.run(None, {self._input: blob[i:i + 1]})[0]
                                  for i in range(len(faces))])
        return [l2_normalise(v) for v in vectors]
