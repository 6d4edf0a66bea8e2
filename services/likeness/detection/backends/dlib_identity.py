"""dlib's 128-d face descriptor (ResNet, "dlib_face_recognition_resnet_model_v1"), the embedded
default identity model. Its weights and the 5-point shape predictor it aligns with ship in the
`face_recognition_models` wheel (CC0). The 68-point predictor in the same wheel is never used: its
training data (iBUG 300-W) is licensed for non-commercial use only.

The package's own __init__ imports pkg_resources (gone from recent setuptools), so the .dat files
are located with importlib instead of importing it.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from likeness.core.errors import ModelMissing
from likeness.detection.backends.base import IdentityEncoder
from likeness.detection.faces import Face, l2_normalise

SHAPE_PREDICTOR = "shape_predictor_5_face_landmarks.dat"
DESCRIPTOR_MODEL = "dlib_face_recognition_resnet_model_v1.dat"


def model_dir() -> Path:
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise ModelMissing("dlib-resnet-128", f"face_recognition_models/models/{DESCRIPTOR_MODEL}",
                           "install face_recognition_models==0.3.0")
    return Path(next(iter(spec.submodule_search_locations))) / "models"


class DlibIdentityEncoder(IdentityEncoder):
    name = "dlib-resnet-128"
    dim = 128

    def __init__(self, jitter: int = 0):
        self.jitter = jitter  # dlib's num_jitters: >0 averages over random crops, ~jitter x slower
        self._shape = None
        self._net = None

    def load(self) -> None:
        import dlib

        folder = model_dir()
        missing = [str(folder / f) for f in (SHAPE_PREDICTOR, DESCRIPTOR_MODEL) if not (folder / f).is_file()]
        if missing:
            raise ModelMissing(self.name, missing)
        self._shape = dlib.shape_predictor(str(folder / SHAPE_PREDICTOR))
        self._net = dlib.face_recognition_model_v1(str(folder / DESCRIPTOR_MODEL))

    def embed(self, rgb: np.ndarray, faces: list[Face]) -> list[np.ndarray]:
        import dlib

        if self._net is None:
            self.load()
        if not faces:
            return []
        image = np.ascontiguousarray(rgb)
        shapes = dlib.full_object_detections()
        for face in faces:
            b = face.box
            rect = dlib.rectangle(int(round(b.x_min)), int(round(b.y_min)),
                                  int(round(b.x_max)) - 1, int(round(b.y_max)) - 1)
            # the 5-point model aligns the 150x150 chip the ResNet was trained on
            shapes.append(self._shape(image, rect))
        vectors = self._net.compute_face_descriptor(image, shapes, num_jitters=self.jitter)
        return [l2_normalise(np.asarray(v, dtype=np.float32)) for v in vectors]
